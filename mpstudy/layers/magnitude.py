"""``MagnitudePrunedLayer``: a dense Linear or Embedding under a ``torch.nn.utils.prune`` mask, and
:func:`magnitude_prune`, the one way mpstudy applies magnitude pruning to modules.

Offline magnitude pruning at a kept fraction ``keep`` keeps the ``round(keep * entries)`` weights of
largest magnitude, globally over a group (one matrix, or one module type across all layers in
the concatenated mode): :func:`prune_group` ranks them with
:func:`mpstudy.factorize.magnitude.magnitude_masks` and attaches the masks with
``torch.nn.utils.prune.custom_from_mask``. The pruning re-parametrisation stays on
(``weight = weight_orig * weight_mask``), so pruned weights stay zero through fine-tuning. The
budget of pruning is its **non-zero** weights: the dense ``weight_orig`` and the mask are still
stored (``count_parameters`` shows both numbers).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from ..factorize.budget import check_kept, keep_target
from ..factorize.magnitude import magnitude_masks
from .base import CompressedLayer, register_layer
from .decoded import KINDS, dense_spec

__all__ = ["MagnitudePrunedLayer", "magnitude_prune", "prune_group"]


@register_layer
class MagnitudePrunedLayer(CompressedLayer):
    """Wraps ``inner`` (``nn.Linear`` or ``nn.Embedding``) whose ``weight`` is pruned in place.

    ``num_params()`` counts what is stored (the dense ``weight_orig`` and the bias), like every
    layer; the non-zeros (pruning's budget) come from ``mpstudy.accounting``.
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
    def from_dense(cls, dense: nn.Module, keep: float | None = None) -> "MagnitudePrunedLayer":
        layers, _ = prune_group([dense], keep=keep)
        return layers[0]


def magnitude_prune(modules: Sequence[nn.Module], n_keep: int, scores: Sequence[torch.Tensor] | None = None,
                    name: str = "weight") -> list[torch.Tensor]:
    """Mask ``module.<name>`` of every module in place, keeping the ``n_keep`` largest-magnitude entries
    over the whole group (one module: per-matrix pruning; several: global pruning).

    The entries are ranked by :func:`mpstudy.factorize.magnitude.magnitude_masks` and the masks
    attached with ``torch.nn.utils.prune.custom_from_mask``: each module keeps ``<name>_orig``
    (the dense parameter) and ``<name>_mask`` (a buffer), and ``<name> = <name>_orig * <name>_mask``
    is recomputed before every forward, so the zeros survive fine-tuning. A module that is already
    pruned keeps its zeros; only its surviving entries compete.

    Args:
        modules: the modules pruned together (``nn.Linear``, ``nn.Embedding``, or the ``inner``
            module of a :class:`MagnitudePrunedLayer`).
        n_keep: how many entries of the group survive (after this call, pruned ones included).
        scores: the magnitudes to rank, one tensor shaped like each module's ``<name>``
            (default: the weights themselves, ``<name>_orig`` for a module already pruned).
        name: the parameter to prune.

    Returns:
        The masks, one per module, as attached.
    """
    modules = list(modules)
    if scores is None:
        scores = [getattr(m, name + "_orig", None) if hasattr(m, name + "_mask") else getattr(m, name) for m in modules]
    scores = list(scores)
    current = [getattr(m, name + "_mask", None) for m in modules]
    current = None if all(c is None for c in current) else [
        torch.ones_like(s) if c is None else c for c, s in zip(current, scores)]
    masks = magnitude_masks(scores, n_keep, current)
    # without autograd: the masked weight set now is a plain tensor (the forward pre-hook rebuilds
    # it with gradients), so the module can be deep-copied before its first forward
    with torch.no_grad():
        for module, mask in zip(modules, masks):
            prune.custom_from_mask(module, name, mask)
    return masks


def prune_group(modules: list[nn.Module], keep: float | None) -> tuple[list[MagnitudePrunedLayer], dict[str, Any]]:
    """Keep the ``round(keep * entries)`` largest-magnitude weights over all ``modules`` together (``keep`` in (0, 1)).

    Returns one ``MagnitudePrunedLayer`` per module (copies; the originals are untouched) and
    ``info`` with the kept count and the magnitude threshold.
    """
    if keep is None:
        raise ValueError("pruning needs keep= (the fraction of the weights kept, in (0, 1))")
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
    n_keep = round(keep_target(entries, keep))
    what = f"{len(modules)} weights of {entries:,} entries" if len(modules) > 1 else f"a {tuple(modules[0].weight.shape)} weight"
    check_kept("magnitude pruning", what, entries, keep, max(n_keep, 1), "")
    if n_keep < 1:
        raise ValueError(f"magnitude pruning at keep={keep:g} keeps no weight of {what}")
    magnitude_prune([layer.inner for layer in layers], n_keep, scores=[module.weight for module in modules])
    kept = torch.cat([layer.to_dense().detach().abs().flatten() for layer in layers])
    threshold = float(kept[kept > 0].min()) if n_keep else float("inf")
    return layers, {"kept": n_keep, "threshold": threshold}
