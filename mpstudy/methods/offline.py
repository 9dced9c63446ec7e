"""Offline compression (Banaei et al., 2023): autoencoder, Kronecker, Tucker, SVD and pruning at a budget.

Every method here takes the budget ``keep`` (the fraction of the weights kept, biases excluded;
the paper's compression ratio is ``CR = 1 / keep``; see :mod:`mpstudy.factorize.budget`) and a ``mode``:

* ``"separated"``: each targeted matrix is compressed alone, keeping ``keep`` of it;
* ``"concatenated"``: one module type of all layers together (``group_targets(..., "role")``):
  one shared decoder / factor set, each layer keeping its own slice, the whole group at ``keep``.

Methods (``mpstudy.compress(model, name, targets=..., keep=..., mode=...)``):

=====================  ==========================================================================
``offline-ae``         row autoencoder; latents + row norms + decoder; trained on the rows
``offline-kronecker``  nearest sum of Kronecker products (closed form), optional refinement
``offline-tucker``     Tucker (HOSVD, optional HOOI sweeps) of the rows cut into heads
``offline-svd``        truncated SVD (a shared row basis in the concatenated mode)
``offline-prune``      global magnitude pruning (non-zeros are the budget)
=====================  ==========================================================================

The helpers the offline study uses to measure a compressed model (achieved ratio,
reconstruction quality, function drift) live in :mod:`mpstudy.studies.offline`.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ..layers.autoencoder import autoencoder_group
from ..layers.kronecker import kronecker_group
from ..layers.lowrank import LowRankLinear
from ..layers.lowrank_rows import svd_rank_for_keep, svd_rows_group
from ..layers.magnitude import prune_group
from ..layers.tucker_rows import tucker_group
from ..targets import Target
from .registry import Method, register_method

__all__ = ["MODES", "OFFLINE_METHODS"]

MODES = ("separated", "concatenated")

#: GroupBuilder — (modules, budget, shared_key) -> (layers, info)
GroupBuilder = Callable[[list[nn.Module], dict[str, Any], str], tuple[list[nn.Module], dict[str, Any]]]


def _svd_builder(modules, budget, key):
    if len(modules) == 1 and isinstance(modules[0], nn.Linear):  # the spine's LowRankLinear, same factorization
        m = modules[0]
        rank = svd_rank_for_keep(m.out_features, m.in_features, budget["keep"])
        return [LowRankLinear.from_dense(m, rank=rank, allow_no_saving=True)], {"rank": rank}
    return svd_rows_group(modules, keep=budget["keep"], shared_key=key)


_BUILDERS: dict[str, GroupBuilder] = {
    "offline-ae": lambda modules, b, key: autoencoder_group(
        modules, keep=b["keep"], shared_key=key, epochs=b["epochs"], batch_size=b["batch_size"], lr=b["lr"],
        seed=b["seed"], device=b["device"]),
    "offline-kronecker": lambda modules, b, key: kronecker_group(
        modules, keep=b["keep"], shared_key=key, refine_steps=b["refine_steps"], refine_lr=b["refine_lr"]),
    "offline-tucker": lambda modules, b, key: tucker_group(
        modules, keep=b["keep"], shared_key=key, block=b["block"], n_iter=b["n_iter"]),
    "offline-svd": _svd_builder,
    "offline-prune": lambda modules, b, key: prune_group(modules, keep=b["keep"]),
}


def _group_compressor(method: str) -> Callable[[list[Target], dict[str, Any]], dict[str, nn.Module]]:
    build = _BUILDERS[method]

    def compress_group(group: list[Target], budget: dict[str, Any]) -> dict[str, nn.Module]:
        if budget.get("keep") is None:
            raise ValueError(f"method {method!r} needs keep= (the fraction of the weights kept, in (0, 1); CR = 1 / keep)")
        mode = budget.get("mode", "separated")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        parts = [group] if mode == "concatenated" else [[t] for t in group]
        out: dict[str, nn.Module] = {}
        for part in parts:
            key = f"{method}:{part[0].name}:{len(part)}"
            layers, info = build([t.module for t in part], budget, key)
            info = {"method": method, "mode": mode, "keep": budget["keep"], "group": [t.name for t in part], **info}
            for t, layer in zip(part, layers):
                layer.train(t.module.training)  # the replacement starts in the mode of what it replaces
                layer.compress_info = info  # a plain attribute: read by compression_info(), never saved
                out[t.name] = layer
        return out

    return compress_group


_COMMON = ("keep", "mode")
_SPECS = {
    "offline-ae": ("row autoencoder (Banaei et al. 2023): latent codes + row norms + a (shared) decoder, trained on the rows",
                   _COMMON + ("epochs", "batch_size", "lr", "seed", "device"),
                   {"epochs": 30, "batch_size": 16, "lr": 1e-3, "seed": 0, "device": "cpu"}),
    "offline-kronecker": ("nearest sum of Kronecker products (Van Loan-Pitsianis closed form), shared inner factors",
                          _COMMON + ("refine_steps", "refine_lr"), {"refine_steps": 0, "refine_lr": 1e-3}),
    "offline-tucker": ("Tucker decomposition of the rows cut into heads (HOSVD + optional HOOI), shared core",
                       _COMMON + ("block", "n_iter"), {"block": None, "n_iter": 0}),
    "offline-svd": ("truncated SVD at a kept fraction (a shared row basis when concatenated)", _COMMON, {}),
    "offline-prune": ("global magnitude pruning at a kept fraction of non-zeros (torch.nn.utils.prune)", _COMMON, {}),
}
for _name, (_description, _keys, _defaults) in _SPECS.items():
    register_method(Method(name=_name, description=_description, budget_keys=_keys,
                           dense_types=(nn.Linear, nn.Embedding), compress_group=_group_compressor(_name),
                           grouping="role", defaults={"mode": "separated", **_defaults}))

#: the offline methods, in the order the study shows them
OFFLINE_METHODS = tuple(_SPECS)
