"""nn.Modules holding factors: each built ``from_dense`` and able to rebuild ``to_dense``."""
from .base import LAYER_CLASSES, CompressedLayer, register_layer
from .lowrank import LowRankLinear
from .mpo import MPOEmbedding, MPOLinear, mpo_layers, set_lightweight

__all__ = ["CompressedLayer", "LAYER_CLASSES", "register_layer", "LowRankLinear", "MPOLinear", "MPOEmbedding",
           "mpo_layers", "set_lightweight"]
