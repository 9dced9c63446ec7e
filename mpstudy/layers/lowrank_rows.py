"""``RowBasisLowRank``: truncated SVD of one matrix or of a stack of them, for Linears and Embeddings.

``W ≈ coeffs @ basis`` with this matrix's own ``coeffs`` ``(rows, rank)`` and a ``basis``
``(rank, cols)`` shared by the group: the SVD of the row-stacked weights of all layers (the
concatenated mode) gives one row basis and, per layer, its block of the left factor. A Linear
computes ``(x basis^T) coeffs^T + b`` (two thin products: FLOPs drop as well as storage), an
Embedding looks up rows of ``coeffs`` and multiplies them by ``basis``. For one Linear alone
the study uses :class:`~mpstudy.layers.lowrank.LowRankLinear`, the same factorization.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..factorize.budget import check_kept, keep_target
from ..factorize.svd import truncated_svd
from .base import register_layer
from .decoded import GroupMemberLayer, SharedFactors, dense_spec

__all__ = ["RowBasisLowRank", "svd_rank_for_keep", "svd_rows_group"]


def svd_rank_for_keep(rows: int, cols: int, keep: float, stack: int = 1, what: str | None = None) -> int:
    """Rank ``round(keep * stack*rows*cols / (stack*rows + cols))`` of a stacked truncated SVD, checked within 5 %.

    (The original floored it; rounding halves the worst miss, which flooring pushes past 5 % at
    small ``keep``: a 384x384 key at keep 0.04 (CR 25) floors to rank 7, keeping 0.0365.)
    """
    what = what or (f"a {rows}x{cols} weight" if stack == 1 else f"{stack} stacked {rows}x{cols} weights")
    entries = stack * rows * cols
    target = keep_target(entries, keep)
    rank = max(1, round(target / (stack * rows + cols)))
    check_kept("svd", what, entries, keep, rank * (stack * rows + cols),
             f"; rank {rank} is the nearest (each rank stores {stack * rows + cols:,} numbers)")
    return rank


@register_layer
class RowBasisLowRank(GroupMemberLayer):
    """One matrix ``(rows, cols)`` = ``coeffs @ shared basis``.

    Attributes:
        coeffs: ``(rows, rank)``; ``shared_module.basis``: ``(rank, cols)``.
    """

    def __init__(self, kind: str, rows: int, cols: int, rank: int, bias: bool = False, padding_idx: int | None = None,
                 shared_key: str = "", group_size: int = 1, group_index: int = 0, shared: nn.Module | None = None) -> None:
        super().__init__(kind, rows, cols, bias, padding_idx, shared_key, group_size, group_index)
        self.rank = rank
        self.coeffs = nn.Parameter(torch.zeros(rows, rank))
        self.attach_shared(shared)

    def build_shared(self) -> nn.Module:
        return SharedFactors(basis=(self.rank, self.cols))

    def structure(self) -> dict[str, Any]:
        return {"rank": self.rank}

    def decode(self) -> torch.Tensor:
        return self.coeffs @ self.shared_module.basis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        basis = self.shared_module.basis
        if self.kind == "linear":
            return F.linear(F.linear(x, basis), self.coeffs, self.bias)
        return F.embedding(x, self.coeffs, self.padding_idx) @ basis

    @classmethod
    def from_dense(cls, dense: nn.Module, keep: float | None = None) -> "RowBasisLowRank":
        layers, _ = svd_rows_group([dense], keep=keep, shared_key="single")
        return layers[0]


def svd_rows_group(modules: list[nn.Module], keep: float | None, shared_key: str) -> tuple[list[RowBasisLowRank], dict[str, Any]]:
    """Truncated SVD of the row-stacked weights (same width) keeping ``keep`` of them; one layer per module,
    sharing the row basis."""
    if keep is None:
        raise ValueError("svd needs keep= (the fraction of the weights kept, in (0, 1))")
    specs = [dense_spec(m) for m in modules]
    weights = [m.weight.detach() for m in modules]
    if len({(s["kind"], s["cols"]) for s in specs}) != 1:
        raise ValueError(f"a concatenated group needs one kind and one row width, got shapes {[tuple(w.shape) for w in weights]}")
    stacked = torch.cat(weights)
    total, cols = stacked.shape
    if len({w.shape[0] for w in weights}) == 1:
        rank = svd_rank_for_keep(total // len(weights), cols, keep, stack=len(weights))
    else:  # stacked matrices of different heights: the same rule on the stack
        rank = max(1, round(keep_target(total * cols, keep) / (total + cols)))
        check_kept("svd", f"{len(weights)} stacked weights ({total}x{cols} rows)", total * cols, keep, rank * (total + cols))
    A, B = truncated_svd(stacked, rank)
    dtype, device = weights[0].dtype, weights[0].device
    shared = SharedFactors(basis=(rank, cols)).to(device, dtype)
    with torch.no_grad():
        shared.basis.copy_(B)
    layers, start = [], 0
    for i, (module, spec) in enumerate(zip(modules, specs)):
        layer = RowBasisLowRank(**spec, rank=rank, shared_key=shared_key, group_size=len(modules), group_index=i,
                                shared=shared).to(device, dtype)
        with torch.no_grad():
            layer.coeffs.copy_(A[start:start + spec["rows"]])
            if layer.bias is not None:
                layer.bias.copy_(module.bias)
        start += spec["rows"]
        layers.append(layer)
    return layers, {"rank": rank, "stored": rank * (total + cols)}
