"""Magnitude masks: which weights survive when the smallest ``|w|`` are pruned.

The one selection rule behind every magnitude pruning in mpstudy (per matrix in composable
pruning, global over a group of matrices in offline compression). The ranking is
``torch.nn.utils.prune.L1Unstructured`` (``torch.topk`` of ``|w|``, smallest first) applied to the
concatenation of the flattened matrices, exactly what ``torch.nn.utils.prune.global_unstructured``
does, so a one-matrix group gives ``l1_unstructured``'s mask. Pure tensor math: applying a mask
to a module is :func:`mpstudy.layers.magnitude.magnitude_prune`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.utils import prune as torch_prune

__all__ = ["magnitude_masks"]


def magnitude_masks(scores: Sequence[torch.Tensor], n_keep: int,
                    current: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Masks keeping the ``n_keep`` entries of largest ``|score|`` over all ``scores`` together.

    Args:
        scores: the matrices ranked together (usually the weights), any shapes; one matrix gives
            per-matrix pruning, several give global pruning over the group.
        n_keep: how many entries survive, over the whole group, in ``[0, surviving entries]``.
        current: masks already in force (1 = alive), shaped like ``scores``; only their surviving
            entries compete and pruned ones stay pruned (``torch.nn.utils.prune``'s rule for
            pruning a pruned tensor again). Default: everything alive.

    Returns:
        One mask per score, shaped like it, 1 where the entry is kept and 0 where pruned, in the
        dtype of ``current`` (of ``scores`` when ``current`` is None). Ties in ``|score|`` are
        broken by ``torch.topk``.
    """
    scores = list(scores)
    if not scores:
        raise ValueError("magnitude_masks needs at least one score tensor, got none")
    if current is None:
        current = [torch.ones_like(s) for s in scores]
    current = list(current)
    if len(current) != len(scores) or any(c.shape != s.shape for c, s in zip(current, scores)):
        raise ValueError(f"current masks {[tuple(c.shape) for c in current]} must match the scores' shapes "
                         f"{[tuple(s.shape) for s in scores]}")
    flat = torch.cat([s.detach().reshape(-1) for s in scores])
    mask = torch.cat([c.detach().reshape(-1) for c in current]).clone()
    alive = mask == 1
    survivors = int(alive.sum())
    if isinstance(n_keep, bool) or not isinstance(n_keep, int) or not 0 <= n_keep <= survivors:
        raise ValueError(f"n_keep must be an int in [0, {survivors}] (the surviving entries), got {n_keep!r}")
    # L1Unstructured ranks |t| with torch.topk and zeroes the `amount` smallest; run on the alive
    # entries only, as torch's PruningContainer does when a pruned tensor is pruned again
    ranked = torch_prune.L1Unstructured(amount=survivors - n_keep)
    mask[alive] = ranked.compute_mask(flat[alive], default_mask=mask[alive])
    return [part.view_as(s) for part, s in zip(mask.split([s.numel() for s in scores]), scores)]
