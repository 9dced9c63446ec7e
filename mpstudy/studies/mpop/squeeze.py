"""Dimension squeezing (MPOP): shrink the bonds of a whole MPO model, one greedy cut at a time.

Each step re-reads the bond spectra of every MPO layer (the current, possibly fine-tuned weights
re-decomposed in canonical form), and cuts the bond whose dropped singular values are smallest
relative to that layer's weight: the cheapest cut in reconstruction error across the whole model
(MPOP's "fast reconstruction-error estimation"). A short fine-tune follows each cut, then a dev
evaluation ("fast performance-gap computation"); the loop stops, undoing the last cut, as soon
as the dev metric falls more than ``tolerance`` below the starting model's.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from ...accounting import count_parameters
from ...layers.mpo import mpo_layers
from ...surgery import set_submodule
from ...train import TrainConfig, evaluate, train

__all__ = ["BondCut", "cheapest_cut", "dimension_squeeze"]


@dataclass(frozen=True)
class BondCut:
    """Cutting internal bond ``bond`` (1-based) of layer ``layer`` from ``old_dim`` to ``new_dim``.

    ``rel_error`` is the norm of the dropped singular values over ``||W||_F`` of that layer:
    exactly the relative error the cut alone adds.
    """

    layer: str
    bond: int
    old_dim: int
    new_dim: int
    rel_error: float
    params_saved: int


def _saved(bond_dims: list[int], row_dims: list[int], col_dims: list[int], bond: int, new_dim: int) -> int:
    """Core weights freed by cutting ``bond`` to ``new_dim`` (the two cores it joins shrink)."""
    d_left, d, d_right = bond_dims[bond - 1], bond_dims[bond], bond_dims[bond + 1]
    drop = d - new_dim
    return drop * (d_left * row_dims[bond - 1] * col_dims[bond - 1] + row_dims[bond] * col_dims[bond] * d_right)


def cheapest_cut(model: nn.Module, step: int | float = 0.1, min_dim: int = 1) -> BondCut | None:
    """The cut that adds the least relative error anywhere in the model, or None if nothing can shrink.

    ``step``: an int cuts that many indices from a bond; a float in (0, 1) cuts that fraction of
    the bond's current size (at least one index).
    """
    best: BondCut | None = None
    for name, layer in mpo_layers(model).items():
        mpo = layer.decompose()
        norm = max(mpo.frobenius_norm, 1e-30)
        dims = mpo.bond_dims
        for bond in range(1, len(dims) - 1):
            d = dims[bond]
            cut = step if isinstance(step, int) else max(1, math.floor(step * d))
            new = max(min_dim, d - cut)
            if new >= d:
                continue
            s = mpo.bond_singular_values[bond - 1][new:d]
            rel = float(s.norm()) / norm
            if best is None or rel < best.rel_error:
                best = BondCut(name, bond, d, new, rel, _saved(dims, layer.row_dims, layer.col_dims, bond, new))
    return best


def dimension_squeeze(
    model: nn.Module,
    tokenizer,
    task,
    finetune: TrainConfig,
    tolerance: float = 0.01,
    max_cuts: int = 20,
    step: int | float = 0.1,
    param_groups: Callable[[nn.Module], list[dict[str, Any]]] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Greedily squeeze the model's bonds; returns the trajectory, one record per accepted or rejected cut.

    Args:
        model: a model with MPO layers (changed in place; it ends at the last accepted cut).
        tokenizer, task: for the short fine-tunes (``task.train``) and the evaluations that accept or
            refuse each cut (``task.dev``; a held-out slice of the training rows keeps the dev set out
            of the choice: :func:`mpstudy.studies.mpop.units.selection_task`).
        finetune: the short fine-tune after each cut (e.g. ``TrainConfig(max_steps=20, ...)``).
        tolerance: stop when the dev main metric falls more than this below the starting metric.
        max_cuts: at most this many cuts.
        step: how much each cut removes (see ``cheapest_cut``).
        param_groups: optimizer groups for the fine-tunes, rebuilt after every cut because the
            cores change shape (e.g. ``lambda m: mpo_param_groups(m, mpo_lr)``); default: all
            trainable parameters at ``finetune.lr``.
        progress: a tqdm bar over the cuts.

    Each trajectory record holds the cut, the stored and trainable parameters after it, the dev
    metrics, and ``accepted``. Record 0 is the starting point.
    """
    if not mpo_layers(model):
        raise ValueError("dimension_squeeze needs a model with MPO layers; compress it with method 'mpo' first")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    metric = task.main_metric
    # the evaluations run at the fine-tunes' precision (bf16 where the profile trains in bf16)
    eval_kwargs = dict(batch_size=finetune.eval_batch_size, max_length=finetune.max_length, precision=finetune.precision)
    start = evaluate(model, tokenizer, task, **eval_kwargs)
    counts = count_parameters(model)
    trajectory: list[dict[str, Any]] = [{"cut": 0, "layer": None, "bond": None, "old_dim": None, "new_dim": None,
                                         "rel_error": 0.0, "stored": counts["stored"], "trainable": counts["trainable"],
                                         "accepted": True, **start}]
    floor = start[metric] - tolerance
    bar = tqdm(range(1, max_cuts + 1), desc="squeeze", disable=not progress, leave=False)
    for i in bar:
        cut = cheapest_cut(model, step)
        if cut is None:
            break
        saved_state = copy.deepcopy(model)
        mpo_layers(model)[cut.layer].truncate_([*model_bond_caps(model, cut)])
        train(model, tokenizer, task, finetune, param_groups=param_groups(model) if param_groups else None)
        metrics = evaluate(model, tokenizer, task, **eval_kwargs)
        counts = count_parameters(model)
        accepted = metrics[metric] >= floor
        trajectory.append({"cut": i, "layer": cut.layer, "bond": cut.bond, "old_dim": cut.old_dim, "new_dim": cut.new_dim,
                           "rel_error": cut.rel_error, "stored": counts["stored"], "trainable": counts["trainable"],
                           "accepted": accepted, **metrics})
        bar.set_postfix({metric: f"{metrics[metric]:.4f}", "params": counts["stored"]})
        if not accepted:
            _restore(model, saved_state)
            break
    bar.close()
    return trajectory


def model_bond_caps(model: nn.Module, cut: BondCut) -> list[int]:
    """The per-bond caps of ``cut.layer`` after applying ``cut`` (other bonds unchanged)."""
    dims = mpo_layers(model)[cut.layer].bond_dims[1:-1]
    dims[cut.bond - 1] = cut.new_dim
    return dims


@torch.no_grad()
def _restore(model: nn.Module, saved: nn.Module) -> None:
    """Put ``saved``'s MPO layers (shapes included) and weights back into ``model``."""

    for name, layer in mpo_layers(saved).items():
        set_submodule(model, name, layer)
    model.load_state_dict(saved.state_dict())
