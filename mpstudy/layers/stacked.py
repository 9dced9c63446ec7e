"""LoBERT's stacked layers: each layer's matrix served from factors shared by a stack of matrices.

Two layer classes, both members of a group that shares tensors (:mod:`mpstudy.layers.decoded`:
the group's first member owns and counts the shared module, the others refer to it, and
``load_compressed`` reconnects them):

* :class:`TuckerStackLayer`: one matrix of a Tucker-decomposed stack (per layer ``[Q; K; V]``, one
  type across layers, all Q/K/V, or the FFN weights across layers). The core and every factor are
  shared; the member only knows its index in the stack modes (``position``).
* :class:`FalconLayer`: one matrix of a FALCON (generalized elementwise product) group. In the
  ``"rows"`` layout the member owns ``scale`` ``(rows, k)`` and the group shares ``basis``
  ``(rows, k, cols)``: ``W[r] = sum_j scale[r, j] basis[r, j]`` (``k = 1``: ``W = diag(d) P``). In the
  ``"matrix"`` layout the member owns ``scale`` ``(k,)`` and the group shares ``basis``
  ``(k, rows, cols)``: ``W = sum_j scale[j] basis[j]``.

Each member keeps its own bias, dense and unchanged (LoBERT's SVD mode copied the value's bias into
the key). Both rebuild their matrix from the factors on every training forward (so the gradient
reaches the factors) and cache it in evaluation (``GroupMemberLayer.dense_weight``); after that
the forward is a dense ``F.linear``: these layers save storage, not time. Setting
``cache_decoded = False`` on a layer makes it decode on every forward, as LoBERT's modules did
(the benchmarks measure both).
"""
from __future__ import annotations

import itertools
import time
from typing import Any

import torch
from torch import nn

from ..factorize.falcon import LAYOUTS, falcon_fit, falcon_max_k, falcon_num_params, falcon_sgd_fit
from ..factorize.stacks import check_ranks, stack_matrix, tucker_stack, tucker_stack_num_params
from .base import register_layer
from .decoded import GroupMemberLayer, SharedFactors, dense_spec

__all__ = ["TuckerStackLayer", "FalconLayer", "tucker_stack_group", "falcon_group", "set_decode_cache"]


class _StackMember(GroupMemberLayer):
    """A linear group member that can be told not to cache its decoded weight."""

    #: decode once in evaluation and reuse (False — decode on every forward, as LoBERT did)
    cache_decoded: bool = True

    def dense_weight(self) -> torch.Tensor:
        if not self.cache_decoded:
            return self.decode()
        return super().dense_weight()


@register_layer
class TuckerStackLayer(_StackMember):
    """The matrix at ``position`` of a Tucker-decomposed stack of ``rows x cols`` matrices.

    Args:
        rows, cols: the dense weight's shape (out x in).
        stack_shape: sizes of the stack modes, e.g. ``[3]`` (Q/K/V of one layer), ``[L]`` (one type
            across ``L`` layers) or ``[3, L]``.
        ranks: Tucker ranks of the stack modes, then rows and columns (``len(stack_shape) + 2``).
        position: this matrix's index in each stack mode.
        bias, shared_key, group_size, group_index: see :class:`~mpstudy.layers.decoded.GroupMemberLayer`.

    Shared (``shared_module``): ``core`` ``ranks``, ``factor0 .. factor{N-1}`` ``(I_k, r_k)``.
    """

    def __init__(self, rows: int, cols: int, stack_shape: list[int], ranks: list[int], position: list[int],
                 bias: bool = True, shared_key: str = "", group_size: int = 1, group_index: int = 0,
                 kind: str = "linear", padding_idx: int | None = None, shared: nn.Module | None = None) -> None:
        if kind != "linear":
            raise ValueError(f"TuckerStackLayer replaces nn.Linear weights, got kind={kind!r}")
        super().__init__("linear", rows, cols, bias, None, shared_key, group_size, group_index)
        self.stack_shape = [int(n) for n in stack_shape]
        self.shape = [*self.stack_shape, rows, cols]
        self.ranks = check_ranks(tuple(self.shape), ranks)
        self.position = [int(p) for p in position]
        if len(self.position) != len(self.stack_shape) or any(not 0 <= p < n for p, n in zip(self.position, self.stack_shape)):
            raise ValueError(f"position must give one index per stack mode of {self.stack_shape}, got {position!r}")
        self.attach_shared(shared)

    def build_shared(self) -> nn.Module:
        return SharedFactors(core=tuple(self.ranks), **{f"factor{k}": (n, r) for k, (n, r) in enumerate(zip(self.shape, self.ranks))})

    def factors(self) -> list[torch.Tensor]:
        sh = self.shared_module
        return [getattr(sh, f"factor{k}") for k in range(len(self.shape))]

    def structure(self) -> dict[str, Any]:
        return {"stack_shape": list(self.stack_shape), "ranks": list(self.ranks), "position": list(self.position)}

    def decode(self) -> torch.Tensor:
        """``U_rows (G x_k U_k[position_k]) U_cols^T``, shape ``(rows, cols)``."""
        return stack_matrix(self.shared_module.core, self.factors(), self.position)

    @classmethod
    def from_dense(cls, dense: nn.Module, ranks: list[int] | None = None, n_iter: int = 100) -> "TuckerStackLayer":
        """A single matrix as a stack of one (a 2-way Tucker: ``U_rows G U_cols^T``); ranks ``[1, r_rows, r_cols]``."""
        if ranks is None:
            raise ValueError("TuckerStackLayer.from_dense needs ranks=[1, r_rows, r_cols]")
        layers, _ = tucker_stack_group([dense], [[0]], [1], ranks=ranks, shared_key="single", n_iter=n_iter)
        return layers[0]


@register_layer
class FalconLayer(_StackMember):
    """One matrix of a FALCON group: ``W = sum_j scale_j * basis_j`` (broadcast per row or whole).

    Args:
        rows, cols: the dense weight's shape (out x in).
        k: products kept (``1`` = LoBERT).
        layout: ``"rows"``: ``scale`` ``(rows, k)`` own, ``basis`` ``(rows, k, cols)`` shared;
            ``"matrix"``: ``scale`` ``(k,)`` own, ``basis`` ``(k, rows, cols)`` shared.
        bias, shared_key, group_size, group_index: as for every group member.
    """

    def __init__(self, rows: int, cols: int, k: int, layout: str, bias: bool = True, shared_key: str = "",
                 group_size: int = 1, group_index: int = 0, kind: str = "linear", padding_idx: int | None = None,
                 shared: nn.Module | None = None) -> None:
        if kind != "linear":
            raise ValueError(f"FalconLayer replaces nn.Linear weights, got kind={kind!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
        super().__init__("linear", rows, cols, bias, None, shared_key, group_size, group_index)
        self.k, self.layout = int(k), layout
        self.scale = nn.Parameter(torch.zeros(rows, self.k) if layout == "rows" else torch.zeros(self.k))
        self.attach_shared(shared)

    def build_shared(self) -> nn.Module:
        shape = (self.rows, self.k, self.cols) if self.layout == "rows" else (self.k, self.rows, self.cols)
        return SharedFactors(basis=shape)

    def structure(self) -> dict[str, Any]:
        return {"k": self.k, "layout": self.layout}

    def decode(self) -> torch.Tensor:
        basis = self.shared_module.basis
        if self.layout == "rows":
            return torch.einsum("rk,rkc->rc", self.scale, basis)
        return torch.einsum("k,krc->rc", self.scale, basis)

    @classmethod
    def from_dense(cls, dense: nn.Module, k: int = 1) -> "FalconLayer":
        """A single matrix as a group of one (``"rows"`` layout: row ``r`` = ``scale[r] basis[r]``)."""
        layers, _ = falcon_group([dense], layout="rows", k=k, shared_key="single")
        return layers[0]


def _linear_specs(modules: list[nn.Module], what: str) -> tuple[list[dict[str, Any]], int, int]:
    specs = [dense_spec(m) for m in modules]
    if any(s["kind"] != "linear" for s in specs):
        raise ValueError(f"{what} replaces nn.Linear modules, got {[type(m).__name__ for m in modules]}")
    shapes = {(s["rows"], s["cols"]) for s in specs}
    if len(shapes) != 1:
        raise ValueError(f"{what} stacks matrices of one shape, got {sorted(shapes)}")
    rows, cols = shapes.pop()
    return specs, rows, cols


def tucker_stack_group(modules: list[nn.Module], positions: list[list[int]], stack_shape: list[int],
                       ranks: list[int], shared_key: str, n_iter: int = 100,
                       tol: float = 1e-4) -> tuple[list[TuckerStackLayer], dict[str, Any]]:
    """Tucker-decompose the stack of ``modules``' weights; one :class:`TuckerStackLayer` per module.

    Args:
        modules: same-shaped ``nn.Linear`` modules.
        positions: each module's index in the stack modes (a full grid of ``stack_shape``).
        stack_shape: sizes of the stack modes.
        ranks: Tucker ranks (stack modes, rows, cols).
        shared_key: names the group (so a reloaded model shares again).
        n_iter, tol: HOOI sweeps (0: HOSVD) and tolerance (:func:`~mpstudy.factorize.stacks.tucker_stack`).

    Returns:
        ``(layers, info)``; ``info`` holds the tensor shape, ranks, stored numbers and seconds.
    """
    specs, rows, cols = _linear_specs(modules, "a Tucker stack")
    stack_shape = [int(n) for n in stack_shape]
    if sorted(tuple(int(i) for i in p) for p in positions) != list(itertools.product(*(range(n) for n in stack_shape))):
        raise ValueError(f"positions {positions} do not fill the stack grid {stack_shape} exactly once")
    shape = [*stack_shape, rows, cols]
    ranks = check_ranks(tuple(shape), ranks)
    weight0 = modules[0].weight
    X = torch.zeros(shape, dtype=torch.float64, device=weight0.device)
    for m, pos in zip(modules, positions):
        X[tuple(pos)] = m.weight.detach().double()
    start = time.perf_counter()
    core, factors = tucker_stack(X, ranks, n_iter=n_iter, tol=tol)
    seconds = time.perf_counter() - start
    shared = SharedFactors(core=tuple(ranks), **{f"factor{k}": (n, r) for k, (n, r) in enumerate(zip(shape, ranks))})
    shared = shared.to(weight0.device, weight0.dtype)
    with torch.no_grad():
        shared.core.copy_(core)
        for k, U in enumerate(factors):
            getattr(shared, f"factor{k}").copy_(U)
    layers = []
    for i, (module, spec, pos) in enumerate(zip(modules, specs, positions)):
        layer = TuckerStackLayer(rows, cols, stack_shape, ranks, pos, bias=spec["bias"], shared_key=shared_key,
                                 group_size=len(modules), group_index=i, shared=shared).to(weight0.device, weight0.dtype)
        with torch.no_grad():
            if layer.bias is not None:
                layer.bias.copy_(module.bias)  # every matrix keeps its own bias
        layers.append(layer)
    return layers, {"family": "tucker", "tensor_shape": shape, "ranks": ranks, "n_iter": n_iter,
                    "stored": tucker_stack_num_params(tuple(shape), ranks), "dense": int(X.numel()), "seconds": seconds}


def falcon_group(modules: list[nn.Module], layout: str, k: int, shared_key: str, fit: str = "svd",
                 sgd: dict[str, Any] | None = None) -> tuple[list[FalconLayer], dict[str, Any]]:
    """FALCON fit of the stack of ``modules``' weights (in this order); one :class:`FalconLayer` per module.

    Args:
        modules: same-shaped ``nn.Linear`` modules, stacked as ``(T, rows, cols)``.
        layout: ``"rows"`` (shared per-row basis) or ``"matrix"`` (one shared matrix basis).
        k: products per slice.
        shared_key: names the group.
        fit: ``"svd"`` (closed form, :func:`~mpstudy.factorize.falcon.falcon_fit`) or ``"sgd"``
            (LoBERT's random-init SGD, :func:`~mpstudy.factorize.falcon.falcon_sgd_fit`; the ablation).
        sgd: keyword arguments of the SGD fit (``steps``, ``lr``, ``seed``...).

    Returns:
        ``(layers, info)``; ``info`` holds the shape, stored numbers, seconds and, for SGD, its losses.
    """
    if fit not in ("svd", "sgd"):
        raise ValueError(f"fit must be 'svd' (closed form) or 'sgd' (LoBERT's random-init SGD), got {fit!r}")
    specs, rows, cols = _linear_specs(modules, "a FALCON group")
    weight0 = modules[0].weight
    X = torch.stack([m.weight.detach() for m in modules])
    kmax = falcon_max_k(tuple(X.shape), layout)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= kmax:
        raise ValueError(f"k (products per slice) must be an integer in [1, {kmax}] for {len(modules)} stacked "
                         f"{rows}x{cols} matrices in the {layout!r} layout, got {k!r}")
    start = time.perf_counter()
    losses = None
    if fit == "svd":
        scale, basis = falcon_fit(X, k, layout)
    else:
        scale, basis, losses = falcon_sgd_fit(X, k, layout, **(sgd or {}))
    seconds = time.perf_counter() - start
    shared = SharedFactors(basis=tuple(basis.shape)).to(weight0.device, weight0.dtype)
    with torch.no_grad():
        shared.basis.copy_(basis)
    layers = []
    for i, (module, spec) in enumerate(zip(modules, specs)):
        layer = FalconLayer(rows, cols, k, layout, bias=spec["bias"], shared_key=shared_key, group_size=len(modules),
                            group_index=i, shared=shared).to(weight0.device, weight0.dtype)
        with torch.no_grad():
            layer.scale.copy_(scale[i])
            if layer.bias is not None:
                layer.bias.copy_(module.bias)
        layers.append(layer)
    info = {"family": "falcon", "tensor_shape": list(X.shape), "k": k, "layout": layout, "fit": fit,
            "stored": falcon_num_params(tuple(X.shape), k, layout), "dense": int(X.numel()), "seconds": seconds}
    if losses is not None:
        info["sgd_losses"] = losses
    return layers, info


def set_decode_cache(model: nn.Module, enabled: bool) -> int:
    """Turn the evaluation-time cache of decoded weights on or off for every stacked layer of ``model``.

    Off, each forward rebuilds the weight from its factors, as LoBERT's modules did; the latency
    benchmark measures both. Returns the number of layers changed.
    """
    layers = [m for m in model.modules() if isinstance(m, _StackMember)]
    for layer in layers:
        layer.cache_decoded = enabled
        layer._cache = layer._cache_key = None
    return len(layers)
