"""The one parameter accounting: stored, trainable, frozen and non-zero numbers, and their bytes.

Every count in the study goes through here, so a number means the same thing in every table:

* **stored**: entries of the parameters a model holds, each tensor once however many modules use
  it (ALBERT's shared layer, tied embeddings, the decoder an offline group shares). Buffers
  (pruning masks, position ids) are not parameters and are not counted.
* **trainable** / **frozen**: the stored entries with / without ``requires_grad``.
* **nonzero**: stored entries that are not zero; a tensor pruned with ``torch.nn.utils.prune``
  (``weight = weight_orig * weight_mask``) is read through its mask, so magnitude pruning shows
  here and not in ``stored`` (its dense ``weight_orig`` is still stored).
* **bytes**: what the stored entries take in memory, per dtype (:func:`count_bytes`).

A dynamically quantized Linear (torch's ``torch.ao.nn.quantized.dynamic.Linear``, and
:class:`~mpstudy.layers.int8.Int8Linear`, the ``int8`` method's) holds no ``nn.Parameter``: its
weight sits packed for fbgemm. It is counted as what it stores
(:func:`~mpstudy.layers.int8.quantized_tensors`): its weight entries and bias are stored,
frozen parameters (they do not train); its quantization scales and zero points are not
parameters but are bytes. A bfloat16 weight counts as the same parameters in half the bytes.

What is counted is said by explicit arguments, never guessed from the caller:

* ``names``: count only these submodules (a shared tensor still counts once across all of them);
* ``include_bias=False``: leave out the biases (parameters named ``bias``, also ``bias_orig``
  when pruned), which every method keeps dense; the biases inside the module an offline group
  shares (:class:`~mpstudy.layers.decoded.GroupMemberLayer`, e.g. a row autoencoder's decoder)
  are numbers the method stores, so they are counted.

:func:`budget_count` is the number a compression budget counts: stored entries, except that a
tensor under a pruning mask counts its non-zeros (the mask is the compression).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as nnqd

from .layers.decoded import GroupMemberLayer
from .layers.int8 import quantized_tensors

__all__ = ["count_parameters", "budget_count", "count_bytes"]

_PRUNED = "_orig"  # torch.nn.utils.prune renames a pruned parameter ``name`` to ``name_orig``


def _roots(model: nn.Module, names: str | Iterable[str] | None) -> list[nn.Module]:
    if names is None:
        return [model]
    names = [names] if isinstance(names, str) else list(names)
    roots = []
    for name in names:
        try:
            roots.append(model.get_submodule(name))
        except AttributeError:
            raise ValueError(f"{type(model).__name__} has no submodule {name!r}; names must be module names "
                             "as in model.named_modules()") from None
    return roots


def _shared_ids(roots: list[nn.Module]) -> set[int]:
    """Parameters of the modules offline groups share: numbers the method stores, biases included."""
    return {id(p) for root in roots for m in root.modules() if isinstance(m, GroupMemberLayer)
            for p in m.shared_module.parameters()}


#: what a quantized Linear stores besides its parameters (bytes, not parameters)
_QUANT_METADATA = ("weight_scale", "weight_zero_point")


def _stored(module: nn.Module):
    """``(leaf name, tensor)`` of what ``module`` itself stores: its parameters, or a quantized Linear's
    plain tensors (:func:`~mpstudy.layers.int8.quantized_tensors`, unpacked afresh: identity by module)."""
    if isinstance(module, nnqd.Linear):
        return list(quantized_tensors(module).items())
    return list(module.named_parameters(recurse=False))


def _tensors(model: nn.Module, names: str | Iterable[str] | None, include_bias: bool, metadata: bool = False):
    """``(owner module, leaf name, tensor)`` of every counted parameter, each tensor once; with ``metadata``,
    also the quantization scales and zero points of quantized Linears (bytes, not parameters)."""
    roots = _roots(model, names)
    shared = set() if include_bias else _shared_ids(roots)
    seen: set[int] = set()
    for root in roots:
        for module in root.modules():
            quantized = isinstance(module, nnqd.Linear)
            if quantized:  # its tensors are unpacked afresh (their ids mean nothing): count the module once
                if id(module) in seen:
                    continue
                seen.add(id(module))
            for leaf, p in _stored(module):
                if leaf in _QUANT_METADATA and not metadata:
                    continue
                if not quantized:
                    if id(p) in seen:
                        continue
                    seen.add(id(p))
                if not include_bias and leaf.removesuffix(_PRUNED) == "bias" and id(p) not in shared:
                    continue
                yield module, leaf, p


def _masked(module: nn.Module, leaf: str, p: torch.Tensor) -> torch.Tensor | None:
    """``p * mask`` when ``p`` is the ``*_orig`` of a ``torch.nn.utils.prune`` re-parametrisation, else ``None``.

    The mask buffer is read rather than the derived ``weight`` attribute, which only a forward refreshes.
    """
    if not leaf.endswith(_PRUNED):
        return None
    mask = getattr(module, leaf.removesuffix(_PRUNED) + "_mask", None)
    return p.detach() * mask if isinstance(mask, torch.Tensor) else None


def _nonzero(module: nn.Module, leaf: str, p: torch.Tensor) -> int:
    if isinstance(module, nnqd.Linear) and leaf == "weight":  # a quantized zero is the zero point, not 0
        weight = module._weight_bias()[0]
        return int(torch.count_nonzero(weight.dequantize() if weight.is_quantized else weight))
    masked = _masked(module, leaf, p)
    return int(torch.count_nonzero(p.detach() if masked is None else masked))


def count_parameters(model: nn.Module, names: str | Iterable[str] | None = None, *, include_bias: bool = True,
                     nonzero: bool = True) -> dict[str, int]:
    """The parameter accounting used in every table of the study.

    Args:
        model: any module (a whole model, a layer).
        names: count only these submodules of ``model`` (module names); ``None``: all of it.
        include_bias: count the biases (see the module docstring for which parameters are biases).
        nonzero: also count the non-zero entries (reads every value; ``False`` for a model on the
            ``meta`` device, or when only sizes matter).

    Returns:
        ``stored``, ``trainable``, ``frozen`` and, with ``nonzero``, ``nonzero`` (see the module
        docstring), each shared tensor counted once.
    """
    counts = {"stored": 0, "trainable": 0, "frozen": 0}
    if nonzero:
        counts["nonzero"] = 0
    for module, leaf, p in _tensors(model, names, include_bias):
        counts["stored"] += p.numel()
        counts["trainable" if p.requires_grad else "frozen"] += p.numel()
        if nonzero:
            counts["nonzero"] += _nonzero(module, leaf, p)
    return counts


def budget_count(model: nn.Module, names: str | Iterable[str] | None = None, *, include_bias: bool = False) -> int:
    """The numbers a compression budget counts: each tensor's stored entries, except a tensor under a
    ``torch.nn.utils.prune`` mask, whose non-zero entries count (its masked entries are still stored,
    but the mask is what the method compresses: magnitude pruning's budget is its non-zeros).

    Biases are left out by default: every method keeps them dense.
    """
    total = 0
    for module, leaf, p in _tensors(model, names, include_bias):
        total += p.numel() if _masked(module, leaf, p) is None else _nonzero(module, leaf, p)
    return total


def count_bytes(model: nn.Module, names: str | Iterable[str] | None = None, *, include_bias: bool = True,
                buffers: bool = False) -> dict[str, int | dict[str, int]]:
    """Bytes of the stored parameters (and, with ``buffers``, of the buffers: pruning masks, decoded
    weight caches that are buffers, position ids), each tensor once.

    A quantized Linear counts what it stores (:func:`~mpstudy.layers.int8.quantized_tensors`, what
    ``save_compressed`` writes): 1 byte per int8 weight entry, a float32 scale and an int32 zero
    point per tensor (or per output row when quantized per channel), and its float32 bias. fbgemm's
    in-memory packing of that weight (blocked and padded, with one int32 column offset per output
    row) is derived from it when the layer is built or loaded, like a cache, and is not counted.

    Returns:
        ``{"total": bytes, "by_dtype": {"float32": bytes, ...}}``.
    """
    by_dtype: dict[str, int] = {}
    tensors = [p for _, _, p in _tensors(model, names, include_bias, metadata=True)]
    if buffers:
        seen = {id(t) for t in tensors}
        for root in _roots(model, names):
            for b in root.buffers():
                if id(b) not in seen:
                    seen.add(id(b))
                    tensors.append(b)
    for t in tensors:
        key = str(t.dtype).removeprefix("torch.")
        by_dtype[key] = by_dtype.get(key, 0) + t.numel() * t.element_size()
    return {"total": sum(by_dtype.values()), "by_dtype": by_dtype}
