"""The budget of every method: ``keep``, the fraction of the targeted weights kept.

A budget is ``keep`` in (0, 1]: a method may store ``keep * entries`` numbers in place of
``entries`` dense weights. The compression ratio of the offline study (Banaei et al., 2023),
``CR = dense weights / stored numbers``, is ``1 / keep``: a display, never a parameter.

Biases are excluded on both sides: every method keeps biases dense and unchanged, so they say
nothing about the method. Shared tensors (a decoder or a factor set used by all layers of a
concatenated group) count once; pruning counts its non-zero weights. A method turns a requested
``keep`` into a discrete structure (a rank, a latent size, a number of Kronecker terms...), so it
can only approximate the request: every method must land within ``BUDGET_TOLERANCE`` (5 %) of the
stored-number target ``keep * entries`` or refuse with a ``ValueError`` that names ``keep``.
"""
from __future__ import annotations

import math
from typing import Any

__all__ = ["BUDGET_TOLERANCE", "check_keep", "keep_target", "check_kept", "relative_miss"]

#: largest accepted relative miss ``|stored - target| / target`` of a method's structure
BUDGET_TOLERANCE = 0.05


def check_keep(keep: Any, what: str = "keep", full: bool = True) -> float:
    """``keep`` as a float in (0, 1] (``full=False``: in (0, 1), a budget that must compress), else a
    one-line ValueError naming the value."""
    top = 1 if full else 1 - 1e-12
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not math.isfinite(keep) or not 0 < keep <= top:
        raise ValueError(f"{what} (the fraction of the weights kept) must be a number in (0, 1{']' if full else ')'}, "
                         f"got {keep!r}")
    return float(keep)


def keep_target(entries: int, keep: float) -> float:
    """Numbers a method may store in place of ``entries`` dense weights at ``keep`` (in (0, 1): it must compress)."""
    keep = check_keep(keep, full=False)
    if entries < 1:
        raise ValueError(f"nothing to compress: {entries} weight entries")
    return entries * keep


def relative_miss(stored: int, target: float) -> float:
    """``|stored - target| / target``."""
    return abs(stored - target) / target


def check_kept(method: str, what: str, entries: int, keep: float, stored: int, hint: str = "") -> None:
    """Raise a ValueError naming ``keep`` when ``stored`` numbers miss ``keep * entries`` by more than 5 %.

    Args:
        method: the method's name, for the message.
        what: the compressed group, e.g. ``"2304x384 rows (6 stacked 384x384 matrices)"``.
        entries: dense weight entries of the group.
        keep: the requested kept fraction.
        stored: numbers the chosen structure stores.
        hint: the nearest structures the method could build, appended to the message.
    """
    target = keep_target(entries, keep)
    if relative_miss(stored, target) > BUDGET_TOLERANCE:
        raise ValueError(
            f"{method} cannot keep {keep:.4g} (CR {1 / keep:.3g}) of {what} within {BUDGET_TOLERANCE:.0%}: the "
            f"nearest structure stores {stored:,} numbers (keeps {stored / entries:.4g}) for a target of {target:,.0f}{hint}"
        )
