"""``RowBasisLowRank``: truncated SVD of one matrix or of a stack of them, for Linears and Embeddings.

``W ≈ coeffs @ basis`` with this matrix's own ``coeffs`` ``(rows, rank)`` and a ``basis``
``(rank, cols)`` shared by the group: the SVD of the row-stacked weights of all layers (the
concatenated mode) gives one row basis and, per layer, its block of the left factor. A Linear
computes ``(x basis^T) coeffs^T + b`` (two thin products: FLOPs drop as well as storage), an
Embedding looks up rows of ``coeffs`` and multiplies them by ``basis``. For one Linear alone
the study uses :class:`~mpstudy.layers.LowRankLinear`, the same factorization.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..factorize.budget import check_cr, cr_target
from ..factorize.svd import truncated_svd
from .base import register_layer
from .decoded import GroupMemberLayer, SharedFactors, dense_spec

__all__ = ["RowBasisLowRank", "svd_rank_for_cr", "svd_rows_group"]


def svd_rank_for_cr(rows: int, cols: int, cr: float, stack: int = 1, what: str | None = None) -> int:
    """Rank ``round(stack*rows*cols / (cr * (stack*rows + cols)))`` of a stacked truncated SVD, checked within 5 %.

    (The original floored it; rounding halves the worst miss, which flooring pushes past 5 % at
    high ratios: a 384x384 key at cr 25 floors to rank 7, cr 27.4.)
    """
    what = what or (f"a {rows}x{cols} weight" if stack == 1 else f"{stack} stacked {rows}x{cols} weights")
    entries = stack * rows * cols
    target = cr_target(entries, cr)
    rank = max(1, round(target / (stack * rows + cols)))
    check_cr("svd", what, entries, cr, rank * (stack * rows + cols),
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
    def from_dense(cls, dense: nn.Module, cr: float | None = None) -> "RowBasisLowRank":
        layers, _ = svd_rows_group([dense], cr=cr, shared_key="single")
        return layers[0]


def svd_rows_group(modules: list[nn.Module], cr: float | None, shared_key: str) -> tuple[list[RowBasisLowRank], dict[str, Any]]:
    """Truncated SVD of the row-stacked weights (same width); one layer per module, sharing the row basis."""
    if cr is None:
        raise ValueError("svd needs cr= (the compression ratio, > 1)")
    specs = [dense_spec(m) for m in modules]
    weights = [m.weight.detach() for m in modules]
    if len({(s["kind"], s["cols"]) for s in specs}) != 1:
        raise ValueError(f"a concatenated group needs one kind and one row width, got shapes {[tuple(w.shape) for w in weights]}")
    stacked = torch.cat(weights)
    total, cols = stacked.shape
    if len({w.shape[0] for w in weights}) == 1:
        rank = svd_rank_for_cr(total // len(weights), cols, cr, stack=len(weights))
    else:  # stacked matrices of different heights: the same rule on the stack
        rank = max(1, round(cr_target(total * cols, cr) / (total + cols)))
        check_cr("svd", f"{len(weights)} stacked weights ({total}x{cols} rows)", total * cols, cr, rank * (total + cols))
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
