"""Structured pruning as a method (``compress(model, "prune-heads", targets, keep=...)``).

The lowest-scoring attention heads and FFN intermediate neurons go, the same kept fraction of
each (:func:`mpstudy.prune.prune_heads_and_neurons`), and are physically removed: Q, K, V lose
rows, the output projection and the FFN output lose columns, so the matrices shrink and the model
runs faster. Nothing is swapped for a compressed layer, so this method edits the model itself
(``Method.apply``); the targets must hold whole attention blocks and whole FFNs.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ..prune import prune_heads_and_neurons
from ..targets import Target
from .registry import Method, register_method

__all__: list[str] = []


def _apply(model: nn.Module, targets: list[Target], budget: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if budget.get("keep") is None:
        raise ValueError("method 'prune-heads' needs keep= (the fraction of heads and FFN neurons kept, in (0, 1])")
    return prune_heads_and_neurons(model, budget["keep"], names=[t.name for t in targets])["shrunk"]


register_method(
    Method(
        name="prune-heads",
        description="structured pruning: the lowest-scoring attention heads and FFN neurons (l1), the same kept "
                    "fraction of each, physically removed",
        budget_keys=("keep",),
        dense_types=(nn.Linear,),
        apply=_apply,
    )
)
