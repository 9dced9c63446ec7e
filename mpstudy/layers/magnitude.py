"""``MagnitudePrunedLayer``: a dense Linear or Embedding under a ``torch.nn.utils.prune`` mask.

Offline magnitude pruning at a compression ratio keeps the ``round(entries / cr)`` weights of
largest magnitude, globally over a group (one matrix, or one module type across all layers in
the concatenated mode), through ``torch.nn.utils.prune.global_unstructured`` with L1 importance.
The pruning re-parametrisation stays on (``weight = weight_orig * weight_mask``), so pruned
weights stay zero through fine-tuning. The budget of pruning is its **non-zero** weights: the
dense ``weight_orig`` and the mask are still stored (``count_parameters`` shows both numbers).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from ..factorize.budget import check_cr, cr_target
from .base import CompressedLayer, register_layer
from .decoded import KINDS, dense_spec

__all__ = ["MagnitudePrunedLayer", "prune_group"]


@register_layer
class MagnitudePrunedLayer(CompressedLayer):
    """Wraps ``inner`` (``nn.Linear`` or ``nn.Embedding``) whose ``weight`` is pruned in place.

    ``num_params()`` counts the **non-zero** weights plus the bias (pruning's budget), not the
    stored dense tensor.
    """

    def __init__(self, kind: str, rows: int, cols: int, bias: bool = False, padding_idx: int | None = None) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind, self.rows, self.cols = kind, rows, cols
        self.inner = nn.Linear(cols, rows, bias=bias) if kind == "linear" else nn.Embedding(rows, cols, padding_idx=padding_idx)
        prune.identity(self.inner, "weight")  # creates weight_orig and weight_mask, as a loaded state dict expects

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)

    def to_dense(self) -> torch.Tensor:
        """The masked weight ``weight_orig * weight_mask``, ``(rows, cols)``."""
        return self.inner.weight_orig * self.inner.weight_mask

    def num_params(self) -> int:
        """Non-zero weights plus the bias entries."""
        bias = self.inner.bias.numel() if getattr(self.inner, "bias", None) is not None else 0
        return int(torch.count_nonzero(self.to_dense())) + bias

    def init_kwargs(self) -> dict[str, Any]:
        return {"kind": self.kind, "rows": self.rows, "cols": self.cols,
                "bias": getattr(self.inner, "bias", None) is not None,
                "padding_idx": getattr(self.inner, "padding_idx", None)}

    @property
    def padding_idx(self):
        return getattr(self.inner, "padding_idx", None)

    def extra_repr(self) -> str:
        return f"{self.kind} {self.rows}x{self.cols}"

    @classmethod
    def from_dense(cls, dense: nn.Module, cr: float | None = None) -> "MagnitudePrunedLayer":
        layers, _ = prune_group([dense], cr=cr)
        return layers[0]


def prune_group(modules: list[nn.Module], cr: float | None) -> tuple[list[MagnitudePrunedLayer], dict[str, Any]]:
    """Keep the ``round(entries / cr)`` largest-magnitude weights over all ``modules`` together.

    Returns one ``MagnitudePrunedLayer`` per module (copies; the originals are untouched) and
    ``info`` with the kept count and the magnitude threshold.
    """
    if cr is None:
        raise ValueError("pruning needs cr= (the compression ratio, > 1)")
    layers = []
    for module in modules:
        spec = dense_spec(module)
        layer = MagnitudePrunedLayer(**spec).to(module.weight.device, module.weight.dtype)
        with torch.no_grad():
            layer.inner.weight_orig.copy_(module.weight)
            if spec["bias"]:
                layer.inner.bias.copy_(module.bias)
        layers.append(layer)
    entries = sum(m.weight.numel() for m in modules)
    keep = round(cr_target(entries, cr))
    what = f"{len(modules)} weights of {entries:,} entries" if len(modules) > 1 else f"a {tuple(modules[0].weight.shape)} weight"
    check_cr("magnitude pruning", what, entries, cr, max(keep, 1), "")
    if keep < 1:
        raise ValueError(f"magnitude pruning at cr={cr:g} keeps no weight of {what}")
    pairs = [(layer.inner, "weight") for layer in layers]
    # importance = the dense weights themselves (the layers' derived ``weight`` attribute is only
    # refreshed by a forward, so it still holds the placeholder values here)
    scores = {pair: module.weight.detach() for pair, module in zip(pairs, modules)}
    prune.global_unstructured(pairs, pruning_method=prune.L1Unstructured, importance_scores=scores, amount=entries - keep)
    with torch.no_grad():
        for layer in layers:  # what the forward pre-hook would compute
            layer.inner.weight = layer.inner.weight_orig * layer.inner.weight_mask
    kept = torch.cat([layer.to_dense().abs().flatten() for layer in layers])
    threshold = float(kept[kept > 0].min()) if keep else float("inf")
    return layers, {"kept": keep, "threshold": threshold}
