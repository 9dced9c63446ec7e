"""FALCON across layers (``compress(model, "falcon", targets, keep=...)``): one stack per module type.

Each module type (a role of one encoder or decoder stack: all queries, all FFN inputs...) is
stacked across layers as ``(L, rows, cols)`` and fitted in the ``"rows"`` layout, ``W_l = sum_j
diag(d_lj) P_j`` with ``P_j`` shared by the type (:func:`mpstudy.factorize.falcon.falcon_fit`,
closed form). The number of products ``k`` is chosen per type: ``k=`` gives it (one integer, or
``{type: k}``), ``keep=`` searches for the allocation with the least total squared error among
those storing within 5 % of ``keep`` of the weights (:func:`falcon_allocation`); with neither, ``k = 1``
(:data:`DEFAULT_K`, LoBERT's FALCON budget). LoBERT's own
per-layer and Q/K/V-only variants are the ``lobert-self_falcon*`` methods.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..factorize.budget import BUDGET_TOLERANCE, relative_miss
from ..factorize.falcon import falcon_max_k, falcon_num_params, falcon_slices
from ..layers.stacked import falcon_group
from ..targets import Target
from .registry import Method, check_keep, register_method

__all__ = ["falcon_allocation", "falcon_type", "LAYOUT", "DEFAULT_K"]

#: the layout of every stack this method fits
LAYOUT = "rows"
#: products per slice when no budget is given (LoBERT's FALCON modes use k = 1)
DEFAULT_K = 1


def falcon_type(t: Target) -> str:
    """The stack a target belongs to: its role, prefixed by its encoder/decoder stack when it has one."""
    return f"{t.stack}.{t.role}" if t.stack else t.role


@torch.no_grad()
def falcon_allocation(stacks: Mapping[str, torch.Tensor], keep: float, layout: str = LAYOUT) -> dict[str, Any]:
    """Products per slice ``k`` for each stack of weights, at a kept fraction ``keep`` of all their entries.

    Each stack ``(L, R, C)`` is fitted slice by slice; the error of keeping ``k`` products is the
    sum of the squared singular values past ``k`` of every slice matrix (Eckart–Young), so every
    allocation's total error is known before fitting. Among the allocations whose stored numbers
    land within 5 % of ``keep`` (and save something on every stack), the one with the least total
    squared error wins (ties: fewer stored numbers): an exhaustive search over the product of each
    stack's useful ``k`` (at most ``min(L, C)`` each).

    Args:
        stacks: ``{type: (L, R, C) tensor}``, the weights of one type stacked across layers.
        keep: the fraction of all stacks' entries kept, in (0, 1].
        layout: ``"rows"`` or ``"matrix"``.

    Returns:
        ``{"k": {type: k}, "kept": fraction, "sq_error": float}``.

    Raises:
        ValueError: no allocation within 5 % (the message names ``keep`` and the nearest fractions).
    """
    keep = check_keep(keep)
    options: dict[str, list[tuple[int, int, float]]] = {}  # type -> [(k, stored, squared error)]
    dense = 0
    for key, X in stacks.items():
        X = X.detach().double()
        dense += X.numel()
        s2 = torch.linalg.svdvals(falcon_slices(X, layout)).pow(2)  # (slices, min(T, C))
        tail = s2.flip(-1).cumsum(-1).flip(-1)  # tail[:, i] = sum of s2[:, i:]
        choices = []
        for k in range(1, falcon_max_k(tuple(X.shape), layout) + 1):
            stored = falcon_num_params(tuple(X.shape), k, layout)
            err = float(tail[:, k].sum()) if k < tail.shape[1] else 0.0
            if stored < X.numel():
                choices.append((k, stored, err))
        options[key] = choices
    target = keep * dense
    best = None
    for combo in itertools.product(*options.values()):
        stored = sum(c[1] for c in combo)
        if relative_miss(stored, target) > BUDGET_TOLERANCE:
            continue
        err = sum(c[2] for c in combo)
        if best is None or (err, stored) < (best[0], best[1]):
            best = (err, stored, combo)
    if best is None:
        nearest = sorted({sum(c[1] for c in combo) / dense for combo in itertools.product(*options.values())},
                         key=lambda f: abs(f - keep))[:3]
        raise ValueError(f"falcon cannot keep {keep:g} of the targeted weights within {BUDGET_TOLERANCE:.0%}; "
                         f"nearest allocations keep {[round(f, 3) for f in nearest]}")
    return {"k": {key: c[0] for key, c in zip(options, best[2])}, "kept": best[1] / dense, "sq_error": best[0]}


def _stacks(targets: list[Target]) -> dict[str, list[Target]]:
    """Targets by type, each type ordered by layer."""
    out: dict[str, list[Target]] = {}
    for t in targets:
        out.setdefault(falcon_type(t), []).append(t)
    for members in out.values():
        if any(t.layer is None for t in members):
            raise ValueError(f"falcon stacks a type across layers; {[t.name for t in members if t.layer is None]} "
                             "have no layer index")
        members.sort(key=lambda t: t.layer)
    return out


def _search(targets: list[Target], keep: float, budget: dict[str, Any]) -> dict[str, Any]:
    if budget.get("k") is not None:
        raise ValueError(f"method 'falcon': give keep= or k=, not both (got k={budget['k']!r})")
    stacks = {key: torch.stack([t.module.weight for t in members]) for key, members in _stacks(targets).items()}
    return {"k": falcon_allocation(stacks, keep)["k"]}


def _compress_group(group: list[Target], budget: dict[str, Any]) -> dict[str, nn.Module]:
    k = budget.get("k")
    if k is None:  # no budget: LoBERT's own FALCON default, one product per slice (a fraction the user cannot guess)
        k = DEFAULT_K
    out: dict[str, nn.Module] = {}
    for key, members in _stacks(group).items():
        kk = k.get(key) if isinstance(k, Mapping) else k
        if kk is None:
            raise ValueError(f"method 'falcon': k has no entry for type {key!r}; it names {sorted(k)}")
        shared_key = f"falcon:{members[0].name}:{len(members)}"
        layers, info = falcon_group([t.module for t in members], LAYOUT, kk, shared_key)
        info = {"method": "falcon", "group": [t.name for t in members], **info}
        for t, layer in zip(members, layers):
            layer.train(t.module.training)  # the replacement starts in the mode of what it replaces
            layer.compress_info = info  # a plain attribute: read by compression_info(), never saved
            out[t.name] = layer
    return out


register_method(
    Method(
        name="falcon",
        description="FALCON rows layout, each module type stacked across layers, k per type (keep= picks the "
                    "allocation with the least squared error)",
        budget_keys=("keep", "k"),
        dense_types=(nn.Linear,),
        compress_group=_compress_group,
        grouping="role",
        search=_search,
    )
)
