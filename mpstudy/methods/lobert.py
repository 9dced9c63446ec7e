"""LoBERT's nine student modes, each a registered method ``lobert-<mode>``.

``compress(model, "lobert-self_tuckerlayer", targets="qkv")`` (or, with the targets filled in,
:func:`mpstudy.studies.lobert.recipe.lobert_compress`). The modes (methods digest, section 2.2):

=========================  ======================================================  ==================
mode                       what is factorized                                      budget
=========================  ======================================================  ==================
``self_svd``               each Q, K, V: truncated SVD (two thin Linears)          ``rank`` / ``keep``
``ffn_svd``                each FFN weight: truncated SVD                          ``rank`` / ``keep``
``self_tuckerlayer``       per layer ``[Q; K; V]`` ``(3, d, d)``: Tucker            ``ranks`` / ``keep``
``self_tuckervertical``    per type, all layers ``(L, d, d)``: Tucker               ``ranks`` / ``keep``
``self_tucker_4d``         all Q/K/V ``(3, L, d, d)``: Tucker                       ``ranks`` / ``keep``
``ffn_tuckervertical``     per FFN weight, all layers ``(L, 4d, d)``: Tucker        ``ranks`` / ``keep``
``self_falconlayer``       per layer: ``W_t = diag(d_t) P``, one ``P`` per layer       ``k`` / ``keep``
``self_falconvertical``    per type: ``W_l = diag(d_l) P``, one ``P`` per type         ``k`` / ``keep``
``self_falcon_4d``         per layer: ``W_t = a_t B``, one ``B`` per layer             ``k`` / ``keep``
=========================  ======================================================  ==================

Without a budget each mode gets LoBERT's (:data:`DEFAULT_KEEP`: half of the replaced weights, the
4-D Tucker's 7/24, FALCON's ``k = 1``). Budgets count weights only: every matrix keeps its own
bias, dense (LoBERT's ``self_svd`` copied the value's bias into the key). Targets are grouped
into stacks here, whatever ``compress``'s default grouping: per layer, per type (a target's
module name with its layer index removed) or all together, ordered by role (query, key, value)
and layer.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from torch import nn

from ..factorize.falcon import falcon_k_for_keep
from ..factorize.stacks import tucker_stack_ranks
from ..layers.lowrank import LowRankLinear
from ..layers.stacked import falcon_group, tucker_stack_group
from ..targets import Target
from .registry import Method, register_method

__all__ = ["LOBERT_MODES", "DEFAULT_KEEP", "stack_groups", "type_key"]

QKV = ("query", "key", "value")
FFN = ("ffn_in", "ffn_out")

#: mode -> family, stacking, the roles it may replace, the targets it replaces by default
LOBERT_MODES: dict[str, dict[str, Any]] = {
    "self_svd": {"family": "svd", "stack": None, "roles": QKV, "targets": "qkv"},
    "ffn_svd": {"family": "svd", "stack": None, "roles": FFN, "targets": "ffn"},
    "self_tuckerlayer": {"family": "tucker", "stack": "layer", "roles": QKV, "targets": "qkv"},
    "self_tuckervertical": {"family": "tucker", "stack": "vertical", "roles": QKV, "targets": "qkv"},
    "self_tucker_4d": {"family": "tucker", "stack": "4d", "roles": QKV, "targets": "qkv"},
    "ffn_tuckervertical": {"family": "tucker", "stack": "vertical", "roles": FFN, "targets": "ffn"},
    "self_falconlayer": {"family": "falcon", "stack": "layer", "layout": "rows", "roles": QKV, "targets": "qkv"},
    "self_falconvertical": {"family": "falcon", "stack": "vertical", "layout": "rows", "roles": QKV, "targets": "qkv"},
    "self_falcon_4d": {"family": "falcon", "stack": "layer", "layout": "matrix", "roles": QKV, "targets": "qkv"},
}

#: LoBERT's budgets as kept fractions of the replaced weights (its ranks on BERT-base; FALCON — k = 1)
DEFAULT_KEEP: dict[str, float | None] = {
    "self_svd": 0.5, "ffn_svd": 0.5, "self_tuckerlayer": 0.5, "self_tuckervertical": 0.5,
    "self_tucker_4d": 7 / 24,  # LoBERT's [2, 8, 576, 576] on (3, 12, 768, 768): 6,193,254 of 21,233,664
    "ffn_tuckervertical": 0.5, "self_falconlayer": None, "self_falconvertical": None, "self_falcon_4d": None,
}

_ROLE_ORDER = {role: i for i, role in enumerate(QKV + FFN)}


def type_key(t: Target) -> str:
    """A target's module name with its layer index replaced by ``*`` (one "type" across layers)."""
    if t.layer is None:
        return t.name
    return re.sub(rf"\.{t.layer}\.", ".*.", t.name, count=1)


def _order(t: Target) -> tuple:
    return (_ROLE_ORDER.get(t.role, len(_ROLE_ORDER)), type_key(t), t.layer)


def stack_groups(targets: list[Target], stack: str) -> list[tuple[list[Target], list[list[int]], list[int]]]:
    """Partition targets into stacks: ``[(members, positions, stack_shape)]``.

    ``"layer"``: the targets of one layer (Q, K, V in this order), positions ``[i]``;
    ``"vertical"``: one type across layers, by layer; ``"4d"``: all targets of an encoder (or
    decoder) stack, a full grid of types x layers, positions ``[type, layer]``.
    """
    if any(t.layer is None for t in targets):
        raise ValueError(f"stacking needs layer indices; {[t.name for t in targets if t.layer is None]} have none")
    key = {"layer": lambda t: (t.stack, t.layer), "vertical": lambda t: (t.stack, type_key(t)),
           "4d": lambda t: t.stack}[stack]
    buckets: dict[Any, list[Target]] = defaultdict(list)
    for t in targets:
        buckets[key(t)].append(t)
    out = []
    for members in buckets.values():
        members = sorted(members, key=_order)
        if stack in ("layer", "vertical"):
            out.append((members, [[i] for i in range(len(members))], [len(members)]))
            continue
        types = sorted({type_key(t) for t in members}, key=lambda k: _order(next(t for t in members if type_key(t) == k)))
        layers = sorted({t.layer for t in members})
        if len(members) != len(types) * len(layers):
            raise ValueError(f"a 4-D stack needs every type in every layer; got {len(members)} matrices for "
                             f"{len(types)} types x {len(layers)} layers")
        out.append((members, [[types.index(type_key(t)), layers.index(t.layer)] for t in members],
                    [len(types), len(layers)]))
    return out


def _ranks_for(ranks: Any, role: str) -> Any:
    return ranks.get(role) if isinstance(ranks, dict) else ranks


def _compressor(mode: str):
    spec = LOBERT_MODES[mode]
    method = f"lobert-{mode}"

    def compress_group(group: list[Target], budget: dict[str, Any]) -> dict[str, nn.Module]:
        bad = sorted({t.role for t in group if t.role not in spec["roles"]})
        if bad:
            raise ValueError(f"{method} replaces {list(spec['roles'])} (targets={spec['targets']!r}), got role(s) {bad}")
        family = spec["family"]
        out: dict[str, nn.Module] = {}
        if family == "svd":
            rank, keep = budget.get("rank"), budget.get("keep")
            if rank is None and keep is None:
                keep = DEFAULT_KEEP[mode]
            for t in group:
                layer = LowRankLinear.from_dense(t.module, rank=rank, keep=keep,
                                                 allow_no_saving=budget.get("allow_no_saving", False))
                layer.compress_info = {"method": method, "family": "svd", "group": [t.name], "rank": layer.rank,
                                       "stored": layer.rank * (layer.in_features + layer.out_features),
                                       "dense": layer.in_features * layer.out_features}
                out[t.name] = layer
            return out
        ranks, keep, k = budget.get("ranks"), budget.get("keep"), budget.get("k")
        given = [name for name, v in (("ranks", ranks), ("keep", keep), ("k", k)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"{method}: give at most one of {'ranks' if family == 'tucker' else 'k'}= or keep=, got {given}")
        if ranks is not None and budget.get("stack_ranks") is not None:
            raise ValueError(f"{method}: stack_ranks= shapes ranks derived from keep=; with ranks= given, put them there")
        for members, positions, stack_shape in stack_groups(group, spec["stack"]):
            key = f"{method}:{members[0].name}:{len(members)}"
            modules = [t.module for t in members]
            rows, cols = modules[0].weight.shape
            if family == "tucker":
                shape = [*stack_shape, rows, cols]
                r = _ranks_for(ranks, members[0].role)
                if r is None:
                    if ranks is not None:
                        raise ValueError(f"{method}: ranks has no entry for role {members[0].role!r}: {ranks!r}")
                    r = tucker_stack_ranks(shape, keep if keep is not None else DEFAULT_KEEP[mode], len(stack_shape),
                                           budget.get("stack_ranks"))
                layers, info = tucker_stack_group(modules, positions, stack_shape, r, key, n_iter=budget["n_iter"],
                                                  tol=budget["tol"])
            else:
                shape = (len(members), rows, cols)
                kk = falcon_k_for_keep(shape, keep, spec["layout"]) if keep is not None else (1 if k is None else k)
                sgd = {"steps": budget["sgd_steps"], "lr": budget["sgd_lr"], "seed": budget["seed"]}
                layers, info = falcon_group(modules, spec["layout"], kk, key, fit=budget["fit"], sgd=sgd)
            info = {"method": method, "group": [t.name for t in members], **info}
            for t, layer in zip(members, layers):
                layer.train(t.module.training)  # the replacement starts in the mode of what it replaces
                layer.compress_info = info  # a plain attribute: read by compression_info(), never saved
                out[t.name] = layer
        return out

    return compress_group


_BUDGETS = {
    "svd": (("keep", "rank", "allow_no_saving"), {}),
    "tucker": (("keep", "ranks", "stack_ranks", "n_iter", "tol"), {"n_iter": 100, "tol": 1e-4}),
    "falcon": (("keep", "k", "fit", "sgd_steps", "sgd_lr", "seed"),
               {"fit": "svd", "sgd_steps": 10_000, "sgd_lr": 0.01, "seed": 0}),
}
_DESCRIPTIONS = {
    "svd": "LoBERT {mode}: truncated SVD of each {what} weight (two thin Linears, own bias)",
    "tucker": "LoBERT {mode}: Tucker (TensorLy HOOI) of the {stack} stack of {what} weights, shared core and factors",
    "falcon": "LoBERT {mode}: closed-form rank-k FALCON of the {stack} group of {what} weights (shared basis)",
}

for _mode, _spec in LOBERT_MODES.items():
    _keys, _defaults = _BUDGETS[_spec["family"]]
    register_method(Method(
        name=f"lobert-{_mode}",
        description=_DESCRIPTIONS[_spec["family"]].format(mode=_mode, stack=_spec["stack"],
                                                          what="Q/K/V" if _spec["roles"] == QKV else "FFN"),
        budget_keys=_keys, dense_types=(nn.Linear,), compress_group=_compressor(_mode), grouping="all",
        defaults=_defaults))
