"""Compression-ratio (CR) budgets shared by the offline methods (Banaei et al., 2023).

The compression ratio of a group of weight matrices is

    CR = (dense weight entries) / (numbers stored in their place),

biases excluded on both sides: every method keeps biases dense and unchanged, so they say
nothing about the method. Shared tensors (a decoder or a factor set used by all layers of a
concatenated group) count once; pruning counts its non-zero weights. A method turns a requested
CR into a discrete structure (a rank, a latent size, a number of Kronecker terms...), so it can
only approximate the request: every method here must land within ``CR_TOLERANCE`` (5 %) of the
stored-number target ``entries / CR`` or refuse with a ``ValueError`` that names the CR.
"""
from __future__ import annotations

import math

__all__ = ["CR_TOLERANCE", "cr_target", "check_cr", "relative_miss"]

#: largest accepted relative miss ``|stored - target| / target`` of a method's structure
CR_TOLERANCE = 0.05


def cr_target(entries: int, cr: float) -> float:
    """Numbers a method may store in place of ``entries`` dense weights at compression ratio ``cr`` (> 1)."""
    if isinstance(cr, bool) or not isinstance(cr, (int, float)) or not math.isfinite(cr) or cr <= 1:
        raise ValueError(f"cr (compression ratio = dense weights / stored numbers) must be a number > 1, got {cr!r}")
    if entries < 1:
        raise ValueError(f"nothing to compress: {entries} weight entries")
    return entries / cr


def relative_miss(stored: int, target: float) -> float:
    """``|stored - target| / target``."""
    return abs(stored - target) / target


def check_cr(method: str, what: str, entries: int, cr: float, stored: int, hint: str = "") -> None:
    """Raise a ValueError naming ``cr`` when ``stored`` numbers miss ``entries / cr`` by more than 5 %.

    Args:
        method: the method's name, for the message.
        what: the compressed group, e.g. ``"2304x384 rows (6 stacked 384x384 matrices)"``.
        entries: dense weight entries of the group.
        cr: the requested compression ratio.
        stored: numbers the chosen structure stores.
        hint: the nearest structures the method could build, appended to the message.
    """
    target = cr_target(entries, cr)
    if relative_miss(stored, target) > CR_TOLERANCE:
        achieved = entries / stored if stored else math.inf
        raise ValueError(
            f"{method} cannot reach cr={cr:g} on {what} within {CR_TOLERANCE:.0%}: the nearest structure "
            f"stores {stored:,} numbers (cr {achieved:.3g}) for a target of {target:,.0f}{hint}"
        )
