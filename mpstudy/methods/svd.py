"""Truncated SVD (Eckart–Young): every targeted Linear becomes two thin ones."""
from torch import nn

from ..layers.lowrank import LowRankLinear
from .registry import Method, per_matrix, register_method

register_method(
    Method(
        name="svd",
        description="truncated SVD: W (m x n) -> A (m x r) B (r x n), two thin Linears (Eckart-Young optimal)",
        budget_keys=("keep", "rank", "allow_no_saving"),
        dense_types=(nn.Linear,),
        compress_group=per_matrix(LowRankLinear),
    )
)
