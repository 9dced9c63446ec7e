"""Matrix product operators (MPOP): every targeted Linear or Embedding becomes an MPO.

The budget is a bond cap (``max_bond``), a relative error (``rel_tol``) or a kept fraction
(``keep``): :func:`mpo_bond_for_budget` finds the one bond cap for all targets whose MPOs store
closest to ``keep`` of their weights, from the shapes alone.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..factorize.mpo import mpo_num_params
from ..layers.mpo import MPOEmbedding, MPOLinear, mpo_shapes
from ..targets import Target
from .registry import Method, check_keep, register_method

__all__ = ["mpo_bond_for_budget"]


def mpo_bond_for_budget(shapes: Sequence[tuple[int, int]], keep: float, num_cores: int = 5) -> tuple[int, float]:
    """The one bond cap whose MPOs of weights shaped ``shapes`` store closest to ``keep`` of their entries.

    Counts come from the shapes alone (:func:`mpstudy.factorize.mpo.mpo_num_params` with the
    default :func:`mpstudy.layers.mpo.mpo_shapes` factorization into ``num_cores`` cores), so
    no decomposition runs during the search. Ties go to the smaller cap.

    Args:
        shapes: ``(rows, cols)`` of each weight (a Linear's ``(out, in)``, an Embedding's ``(num, dim)``).
        keep: the fraction of the weights' entries kept, in (0, 1].
        num_cores: cores of every MPO.

    Returns:
        ``(max_bond, kept_fraction)``.
    """
    keep = check_keep(keep)
    shapes = [(int(r), int(c)) for r, c in shapes]
    if not shapes:
        raise ValueError("mpo_bond_for_budget needs at least one weight shape, got none")
    dims = [mpo_shapes(rows, cols, num_cores) for rows, cols in shapes]
    dense = sum(rows * cols for rows, cols in shapes)

    def kept(bond: int) -> float:
        return sum(mpo_num_params(r, c, bond) for r, c in dims) / dense

    # kept(bond) never decreases with the cap and stops growing at the largest full bond: bisect
    # for the first cap that reaches the budget, then take it or the one below, whichever is closer.
    lo, hi = 1, max(max(min(math.prod(r[:i]) * math.prod(c[:i]), math.prod(r[i:]) * math.prod(c[i:]))
                        for i in range(1, num_cores)) for r, c in dims)
    while lo < hi:
        mid = (lo + hi) // 2
        if kept(mid) >= keep:
            hi = mid
        else:
            lo = mid + 1
    best = min({max(1, lo - 1), lo}, key=lambda b: (abs(kept(b) - keep), b))
    return best, kept(best)


def _search(targets: list[Target], keep: float, budget: dict[str, Any]) -> dict[str, Any]:
    given = [k for k in ("max_bond", "rel_tol", "row_dims", "col_dims") if budget.get(k) is not None]
    if given:
        raise ValueError(f"method 'mpo': give keep= or {given}, not both (keep chooses the bond cap from the default shapes)")
    bond, _ = mpo_bond_for_budget([tuple(t.module.weight.shape) for t in targets], keep, budget.get("num_cores") or 5)
    return {"max_bond": bond}


def _compress_group(group: list[Target], budget: dict[str, Any]) -> dict[str, nn.Module]:
    layer_cls = {nn.Linear: MPOLinear, nn.Embedding: MPOEmbedding}
    return {t.name: layer_cls[type(t.module)].from_dense(t.module, **budget) for t in group}


register_method(
    Method(
        name="mpo",
        description="matrix product operator: W -> n cores (d_{k-1}, i_k, j_k, d_k), bonds capped by max_bond / rel_tol / keep",
        budget_keys=("keep", "max_bond", "rel_tol", "row_dims", "col_dims", "num_cores"),
        dense_types=(nn.Linear, nn.Embedding),
        compress_group=_compress_group,
        search=_search,
    )
)
