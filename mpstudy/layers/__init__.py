"""nn.Modules holding factors: each built ``from_dense`` and able to rebuild ``to_dense``."""
from .base import LAYER_CLASSES, CompressedLayer, register_layer
from .lowrank import LowRankLinear
from .mpo import MPOEmbedding, MPOLinear, mpo_layers
from .autoencoder import AutoencoderLayer, RowDecoder
from .kronecker import KroneckerLayer
from .lowrank_rows import RowBasisLowRank
from .magnitude import MagnitudePrunedLayer
from .tucker_rows import TuckerRowsLayer
from .stacked import FalconLayer, TuckerStackLayer

__all__ = ["CompressedLayer", "LAYER_CLASSES", "register_layer", "LowRankLinear", "MPOLinear", "MPOEmbedding",
           "mpo_layers",
           "AutoencoderLayer", "RowDecoder", "KroneckerLayer", "RowBasisLowRank", "MagnitudePrunedLayer", "TuckerRowsLayer",
           "FalconLayer", "TuckerStackLayer"]
