"""Base of the offline-compression layers: one matrix of a group, shared tensors, decoded weights.

The offline methods (Banaei et al., 2023) compress a module type either per layer
("separated") or across all layers at once ("concatenated"). In the concatenated mode the
replacement of every layer owns its own slice (latent codes, outer Kronecker factors, its rows
of a Tucker factor...) and all of them use one shared module (the decoder, the inner factors,
the core). This base class handles what that needs:

* **Sharing.** The shared module is registered as a submodule of the group's first layer (the
  *owner*, ``group_index == 0``) only; the other layers hold a plain reference. So
  ``state_dict`` stores it once, ``count_parameters`` and ``num_params()`` count it once (in the
  owner), and ``copy.deepcopy`` of a model keeps the sharing.
* **Reloading.** ``load_compressed`` rebuilds each layer from ``init_kwargs()`` one by one; the
  layers of one group find each other through ``shared_key`` (a registry that hands every
  member of a group the same freshly built module, then forgets it), so the reloaded model
  shares exactly as the saved one did.
* **Linear or embedding.** ``kind="linear"`` computes ``F.linear(x, W, bias)`` with ``W``
  ``(out_features, in_features)``; ``kind="embedding"`` looks up rows of ``W``
  ``(num_embeddings, embedding_dim)``.
* **Decoded weight cached in evaluation.** Layers that decode a dense weight from their factors
  (``decode()``) do it on every training forward, so gradients reach the factors; in eval mode
  with no gradient needed they decode once and reuse it until a parameter changes (tracked by
  the tensors' version counters). This saves time, not memory: an evaluating model holds one
  dense copy of each decoded weight.
"""
from __future__ import annotations

import abc
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .base import CompressedLayer

__all__ = ["GroupMemberLayer", "SharedFactors", "KINDS", "dense_spec"]

KINDS = ("linear", "embedding")

# shared_key -> (module, group indices that have not taken it yet); see GroupMemberLayer.
_PENDING: dict[str, tuple[nn.Module, set[int]]] = {}


def _take_shared(key: str, group_size: int, index: int, build: Callable[[], nn.Module]) -> nn.Module:
    """The shared module of group ``key`` for member ``index``; built by the first member to ask.

    A member asking twice (a new load of the same saved model after an interrupted one) starts
    a fresh module, so two models never share by accident.
    """
    if group_size == 1:
        return build()
    entry = _PENDING.get(key)
    if entry is None or index not in entry[1]:
        module = build()
        _PENDING[key] = (module, set(range(group_size)) - {index})
        return module
    module, remaining = entry
    remaining.discard(index)
    if not remaining:
        del _PENDING[key]
    return module


def dense_spec(module: nn.Module) -> dict[str, Any]:
    """``kind``, ``rows``, ``cols``, ``bias`` (bool) and ``padding_idx`` of a dense Linear or Embedding."""
    if isinstance(module, nn.Linear):
        return {"kind": "linear", "rows": module.out_features, "cols": module.in_features,
                "bias": module.bias is not None, "padding_idx": None}
    if isinstance(module, nn.Embedding):
        return {"kind": "embedding", "rows": module.num_embeddings, "cols": module.embedding_dim,
                "bias": False, "padding_idx": module.padding_idx}
    raise TypeError(f"offline methods replace nn.Linear or nn.Embedding, got {type(module).__name__}")


class SharedFactors(nn.Module):
    """A bag of named parameters shared by the layers of a group (inner factors, a core...).

    Args:
        **shapes: parameter name -> shape; parameters start at zero (filled by the method or a
            state dict).
    """

    def __init__(self, **shapes: tuple[int, ...]) -> None:
        super().__init__()
        for name, shape in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.zeros(*shape)))


class GroupMemberLayer(CompressedLayer):
    """One matrix of a (possibly concatenated) group, compressed by an offline method.

    Args:
        kind: ``"linear"`` or ``"embedding"``.
        rows, cols: the dense weight's shape (``out x in`` for a Linear, ``vocab x dim`` for an Embedding).
        bias: a Linear's bias (kept dense).
        padding_idx: an Embedding's padding row (its gradient is zero, as in ``nn.Embedding``).
        shared_key: names the group, so reloading reconnects its members.
        group_size, group_index: the group's size and this member's position; member 0 owns
            (registers, and counts) the shared module.

    Subclasses call this constructor, set their structure and own parameters, then call
    ``attach_shared(shared)`` with the group's shared module (``None`` when loading: it is then
    built by ``build_shared()`` or found among the already rebuilt members of the group).
    """

    def __init__(self, kind: str, rows: int, cols: int, bias: bool = False, padding_idx: int | None = None,
                 shared_key: str = "", group_size: int = 1, group_index: int = 0) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not 0 <= group_index < group_size:
            raise ValueError(f"group_index must be in [0, {group_size}), got {group_index!r}")
        if kind == "embedding" and bias:
            raise ValueError("an embedding has no bias")
        self.kind, self.rows, self.cols = kind, rows, cols
        self.padding_idx = padding_idx
        self.shared_key, self.group_size, self.group_index = shared_key, group_size, group_index
        if kind == "linear":
            self.in_features, self.out_features = cols, rows
        else:
            self.num_embeddings, self.embedding_dim = rows, cols
        self.bias = nn.Parameter(torch.zeros(rows)) if bias else None
        self._cache: torch.Tensor | None = None
        self._cache_key: tuple | None = None

    def attach_shared(self, shared: nn.Module | None = None) -> None:
        """Connect the group's shared module (``None``: build it, or take the group's from the registry)."""
        if shared is None:
            shared = _take_shared(self.shared_key, self.group_size, self.group_index, self.build_shared)
        if self.group_index == 0:
            self.shared = shared
        else:  # a plain reference: not a submodule, so stored and counted once (in the owner)
            object.__setattr__(self, "_shared_ref", shared)

    # ----------------------------------------------------------------- what subclasses provide

    @abc.abstractmethod
    def build_shared(self) -> nn.Module:
        """An empty shared module of this group's shapes (filled by the method or a state dict)."""

    @abc.abstractmethod
    def decode(self) -> torch.Tensor:
        """The dense weight ``(rows, cols)`` from this member's factors and the shared ones."""

    def structure(self) -> dict[str, Any]:
        """Constructor arguments besides the common ones (ranks, shapes...)."""
        return {}

    # ----------------------------------------------------------------- common machinery

    @property
    def shared_module(self) -> nn.Module:
        """The group's shared module (registered here only if this is the owner)."""
        return self.shared if self.group_index == 0 else self._shared_ref

    def all_params(self) -> list[nn.Parameter]:
        """This member's parameters and the shared ones (each once)."""
        params = {id(p): p for p in self.parameters()}
        params.update({id(p): p for p in self.shared_module.parameters()})
        return list(params.values())

    def init_kwargs(self) -> dict[str, Any]:
        return {"kind": self.kind, "rows": self.rows, "cols": self.cols, "bias": self.bias is not None,
                "padding_idx": self.padding_idx, "shared_key": self.shared_key, "group_size": self.group_size,
                "group_index": self.group_index, **self.structure()}

    def to_dense(self) -> torch.Tensor:
        """The dense weight this layer computes with, ``(rows, cols)``."""
        return self.decode()

    def train(self, mode: bool = True):
        if mode:
            self._cache = self._cache_key = None
        return super().train(mode)

    def dense_weight(self) -> torch.Tensor:
        """``decode()``, or its cached value in eval mode when no gradient is needed."""
        params = self.all_params()
        if self.training or (torch.is_grad_enabled() and any(p.requires_grad for p in params)):
            return self.decode()
        key = tuple((id(p), p._version, p.device, p.dtype) for p in params)
        if self._cache is None or self._cache_key != key:
            # a normal tensor, usable outside inference mode, decoded in the factors' own dtype even under
            # autocast (a bf16 cache would outlive the autocast region and break a later fp32 forward)
            with torch.inference_mode(False), torch.no_grad(), torch.autocast(params[0].device.type, enabled=False):
                self._cache = self.decode()
            self._cache_key = key
        return self._cache

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            return F.linear(x, self.dense_weight(), self.bias)
        return F.embedding(x, self.dense_weight(), self.padding_idx)

    def extra_repr(self) -> str:
        group = f", member {self.group_index + 1}/{self.group_size}" if self.group_size > 1 else ""
        extra = ", ".join(f"{k}={v}" for k, v in self.structure().items())
        return f"{self.kind} {self.rows}x{self.cols}{', ' + extra if extra else ''}{group}"

    def adapter_params(self) -> Iterator[nn.Parameter]:
        return iter(self.all_params())
