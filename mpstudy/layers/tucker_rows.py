"""``TuckerRowsLayer``: a weight's rows cut into head-sized blocks, as one slice of a Tucker tensor.

A ``(rows, cols)`` weight is read as a ``(blocks, block, cols)`` tensor (``blocks =
ceil(rows / block)``, zero-padded rows); a group of such weights (the concatenated mode) is
stacked along the first mode and Tucker-decomposed (:mod:`mpstudy.factorize.tucker`). Each
matrix owns its ``blocks`` rows of the first factor; the core and the other two factors are
shared. The weight is decoded for every training forward and cached in evaluation.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..factorize.tucker import mode_eigh, tucker_decompose, tucker_plan_for_keep
from .base import register_layer
from .decoded import GroupMemberLayer, SharedFactors, dense_spec

__all__ = ["TuckerRowsLayer", "tucker_group", "rows_to_blocks"]


def rows_to_blocks(W: torch.Tensor, block: int) -> torch.Tensor:
    """``(rows, cols)`` -> ``(ceil(rows / block), block, cols)``, zero-padding the last block."""
    rows, cols = W.shape
    blocks = -(-rows // block)
    return torch.nn.functional.pad(W, (0, 0, 0, blocks * block - rows)).reshape(blocks, block, cols)


@register_layer
class TuckerRowsLayer(GroupMemberLayer):
    """One matrix ``(rows, cols)`` = ``first x_1 (core x_2 second x_3 third)`` reshaped and cropped.

    Attributes:
        first: ``(blocks, r1)``, this matrix's own rows of the first factor.
        ``shared_module``: ``core`` ``(r1, r2, r3)``, ``second`` ``(block, r2)``, ``third`` ``(cols, r3)``.
    """

    def __init__(self, kind: str, rows: int, cols: int, block: int, ranks: list[int], bias: bool = False,
                 padding_idx: int | None = None, shared_key: str = "", group_size: int = 1, group_index: int = 0,
                 shared: nn.Module | None = None) -> None:
        super().__init__(kind, rows, cols, bias, padding_idx, shared_key, group_size, group_index)
        self.block, self.ranks = block, [int(r) for r in ranks]
        self.blocks = -(-rows // block)
        self.first = nn.Parameter(torch.zeros(self.blocks, self.ranks[0]))
        self.attach_shared(shared)

    def build_shared(self) -> nn.Module:
        r1, r2, r3 = self.ranks
        return SharedFactors(core=(r1, r2, r3), second=(self.block, r2), third=(self.cols, r3))

    def structure(self) -> dict[str, Any]:
        return {"block": self.block, "ranks": list(self.ranks)}

    def decode(self) -> torch.Tensor:
        sh = self.shared_module
        inner = torch.einsum("abc,jb,kc->ajk", sh.core, sh.second, sh.third)  # (r1, block, cols)
        W = (self.first @ inner.reshape(self.ranks[0], -1)).reshape(self.blocks * self.block, self.cols)
        return W[: self.rows]

    @classmethod
    def from_dense(cls, dense: nn.Module, keep: float | None = None, block: int | None = None, n_iter: int = 0) -> "TuckerRowsLayer":
        """A single matrix keeping the fraction ``keep`` (a group of one)."""
        layers, _ = tucker_group([dense], keep=keep, shared_key="single", block=block, n_iter=n_iter)
        return layers[0]


def default_block(module: nn.Module) -> int:
    """Rows per slice when none is given: an embedding's width; else 64 (BERT-base's head size) or
    the largest divisor of the row count below it."""
    spec = dense_spec(module)
    if spec["kind"] == "embedding":
        return spec["cols"]
    return max(d for d in range(1, min(64, spec["rows"]) + 1) if spec["rows"] % d == 0)


def tucker_group(modules: list[nn.Module], keep: float | None, shared_key: str, block: int | None = None,
                 n_iter: int = 0) -> tuple[list[TuckerRowsLayer], dict[str, Any]]:
    """Tucker decomposition of the stacked row blocks of same-shaped weights; one layer per module.

    Ranks come from :func:`~mpstudy.factorize.tucker.tucker_plan_for_keep` using the tensor's own
    mode spectra (the ranks minimising the HOSVD error bound within the budget ``keep``, in (0, 1)). ``block`` is the
    head size for attention weights (``hidden / heads``); ``None`` uses ``default_block``.
    """
    if keep is None:
        raise ValueError("tucker needs keep= (the fraction of the weights kept, in (0, 1))")
    specs = [dense_spec(m) for m in modules]
    weights = [m.weight.detach() for m in modules]
    if len({tuple(w.shape) for w in weights}) != 1 or len({s["kind"] for s in specs}) != 1:
        raise ValueError(f"tucker stacks weights of one shape and kind, got shapes {[tuple(w.shape) for w in weights]}")
    rows, cols = weights[0].shape
    block = default_block(modules[0]) if block is None else block
    X = torch.cat([rows_to_blocks(w.double(), block) for w in weights]) if 1 <= block <= rows else None
    eig = mode_eigh(X) if X is not None else None
    plan = tucker_plan_for_keep(rows, cols, keep, block=block, stack=len(weights),
                              spectra=[vals for vals, _ in eig] if eig is not None else None)
    core, factors = tucker_decompose(X, list(plan.ranks), n_iter=n_iter, eig=eig)
    dtype, device = weights[0].dtype, weights[0].device
    r1, r2, r3 = plan.ranks
    shared = SharedFactors(core=(r1, r2, r3), second=(block, r2), third=(cols, r3)).to(device, dtype)
    with torch.no_grad():
        shared.core.copy_(core)
        shared.second.copy_(factors[1])
        shared.third.copy_(factors[2])
    layers = []
    for i, (module, spec) in enumerate(zip(modules, specs)):
        layer = TuckerRowsLayer(**spec, block=block, ranks=list(plan.ranks), shared_key=shared_key,
                                group_size=len(modules), group_index=i, shared=shared).to(device, dtype)
        with torch.no_grad():
            layer.first.copy_(factors[0][i * plan.blocks:(i + 1) * plan.blocks])
            if layer.bias is not None:
                layer.bias.copy_(module.bias)
        layers.append(layer)
    return layers, {"block": block, "ranks": list(plan.ranks), "tensor_shape": list(plan.shape), "stored": plan.stored,
                    "n_iter": n_iter}
