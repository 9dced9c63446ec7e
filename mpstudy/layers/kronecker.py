"""``KroneckerLayer``: a weight as a sum of Kronecker products, its inner factors shared by a group.

``W ≈ crop(sum_k A_k ⊗ B_k)`` with per-matrix outer factors ``A`` ``(rank, p, q)`` and inner
factors ``B`` ``(rank, s, t)`` shared by all matrices of a concatenated group (see
:mod:`mpstudy.factorize.kronecker`). The dense weight is rebuilt for every training forward and
cached in evaluation, so it saves storage, not time.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..factorize.kronecker import kronecker_plan_for_keep, kronecker_sum_to_dense, nearest_kronecker_sum, refine_kronecker_sum
from .base import register_layer
from .decoded import GroupMemberLayer, SharedFactors, dense_spec

__all__ = ["KroneckerLayer", "kronecker_group"]


@register_layer
class KroneckerLayer(GroupMemberLayer):
    """One matrix ``(rows, cols)`` ≈ ``crop(sum_k outer[k] ⊗ inner[k])``.

    Attributes:
        outer: ``(rank, p, q)``, this matrix's own factors.
        ``shared_module.inner``: ``(rank, s, t)``, shared by the group.
    """

    def __init__(self, kind: str, rows: int, cols: int, rank: int, p: int, q: int, s: int, t: int, bias: bool = False,
                 padding_idx: int | None = None, shared_key: str = "", group_size: int = 1, group_index: int = 0,
                 shared: nn.Module | None = None) -> None:
        super().__init__(kind, rows, cols, bias, padding_idx, shared_key, group_size, group_index)
        if p * s < rows or q * t < cols:
            raise ValueError(f"factors ({p}x{q}) ⊗ ({s}x{t}) do not cover a {rows}x{cols} weight")
        self.rank, self.p, self.q, self.s, self.t = rank, p, q, s, t
        self.outer = nn.Parameter(torch.zeros(rank, p, q))
        self.attach_shared(shared)

    def build_shared(self) -> nn.Module:
        return SharedFactors(inner=(self.rank, self.s, self.t))

    def structure(self) -> dict[str, Any]:
        return {"rank": self.rank, "p": self.p, "q": self.q, "s": self.s, "t": self.t}

    def decode(self) -> torch.Tensor:
        return kronecker_sum_to_dense(self.outer, self.shared_module.inner, self.rows, self.cols)

    @classmethod
    def from_dense(cls, dense: nn.Module, keep: float | None = None, refine_steps: int = 0) -> "KroneckerLayer":
        """A single matrix keeping the fraction ``keep`` (a group of one)."""
        layers, _ = kronecker_group([dense], keep=keep, shared_key="single", refine_steps=refine_steps)
        return layers[0]


def kronecker_group(modules: list[nn.Module], keep: float | None, shared_key: str, refine_steps: int = 0,
                    refine_lr: float = 1e-3) -> tuple[list[KroneckerLayer], dict[str, Any]]:
    """Nearest Kronecker sum of the stacked weights (closed form), optionally refined; one layer per module.

    All modules must have the same weight shape; ``keep`` (in (0, 1)) is the kept fraction of their
    weights. Returns ``(layers, info)`` with the plan and,
    when refined, the refinement losses.
    """
    if keep is None:
        raise ValueError("kronecker needs keep= (the fraction of the weights kept, in (0, 1))")
    specs = [dense_spec(m) for m in modules]
    weights = [m.weight.detach() for m in modules]
    if len({tuple(w.shape) for w in weights}) != 1 or len({s["kind"] for s in specs}) != 1:
        raise ValueError(f"kronecker stacks weights of one shape and kind, got shapes {[tuple(w.shape) for w in weights]}")
    rows, cols = weights[0].shape
    L = len(weights)
    plan = kronecker_plan_for_keep(rows, cols, keep, stack=L)
    # pad every matrix to p*s rows, stack: the stacked matrix's outer factors are (L*p, q)
    stacked = torch.cat([torch.nn.functional.pad(w.double(), (0, 0, 0, plan.p * plan.s - rows)) for w in weights])
    A, B = nearest_kronecker_sum(stacked, plan.rank, L * plan.p, plan.q, plan.s, plan.t)
    info: dict[str, Any] = {"rank": plan.rank, "p": plan.p, "q": plan.q, "s": plan.s, "t": plan.t, "stored": plan.stored}
    if refine_steps:
        A, B, losses = refine_kronecker_sum(weights, A, B, refine_steps, lr=refine_lr)
        info["refine_losses"] = losses
    dtype, device = weights[0].dtype, weights[0].device
    shared = SharedFactors(inner=(plan.rank, plan.s, plan.t)).to(device, dtype)
    with torch.no_grad():
        shared.inner.copy_(B)
    layers = []
    for i, (module, spec) in enumerate(zip(modules, specs)):
        layer = KroneckerLayer(**spec, rank=plan.rank, p=plan.p, q=plan.q, s=plan.s, t=plan.t, shared_key=shared_key,
                               group_size=L, group_index=i, shared=shared).to(device, dtype)
        with torch.no_grad():
            layer.outer.copy_(A[:, i * plan.p:(i + 1) * plan.p])
            if layer.bias is not None:
                layer.bias.copy_(module.bias)
        layers.append(layer)
    return layers, info
