"""Matrix product operators (MPOP): every targeted Linear or Embedding becomes an MPO."""
from typing import Any

from torch import nn

from ..layers.mpo import MPOEmbedding, MPOLinear
from ..targets import Target
from .registry import Method, register_method


def _compress_group(group: list[Target], budget: dict[str, Any]) -> dict[str, nn.Module]:
    layer_cls = {nn.Linear: MPOLinear, nn.Embedding: MPOEmbedding}
    return {t.name: layer_cls[type(t.module)].from_dense(t.module, **budget) for t in group}


register_method(
    Method(
        name="mpo",
        description="matrix product operator: W -> n cores (d_{k-1}, i_k, j_k, d_k), bonds capped by max_bond / rel_tol",
        budget_keys=("max_bond", "rel_tol", "row_dims", "col_dims", "num_cores"),
        dense_types=(nn.Linear, nn.Embedding),
        compress_group=_compress_group,
    )
)
