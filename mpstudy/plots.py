"""Seaborn figures shared by the study notebooks."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

__all__ = ["score_vs_params", "error_by_role", "speedup_vs_flops", "bond_spectra", "squeeze_trajectory", "mpo_diagram",
           "scores_with_intervals", "points_with_intervals"]


def score_vs_params(df: pd.DataFrame, x: str = "model_params", y: str = "score", hue: str | None = "method",
                    baseline: float | None = None, ylabel: str = "dev score", title: str | None = None, ax=None):
    """Task score against stored parameters, one line per ``hue``; the dense score as a dashed line."""
    ax = ax or plt.subplots(figsize=(6.4, 4))[1]
    sns.lineplot(data=df, x=x, y=y, hue=hue, marker="o", ax=ax)
    if baseline is not None:
        ax.axhline(baseline, ls="--", c="0.4", lw=1, label="dense (fine-tuned)")
    ax.set_xlabel("stored parameters (millions)" if x == "model_params_m" else x.replace("_", " "))
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(frameon=False)
    return ax


def error_by_role(df: pd.DataFrame, x: str = "keep", y: str = "rel_error", hue: str = "role", title: str | None = None, ax=None):
    """Relative reconstruction error ``||W - W'||_F / ||W||_F`` per module type (mean over layers, with range)."""
    ax = ax or plt.subplots(figsize=(6.4, 4))[1]
    sns.lineplot(data=df, x=x, y=y, hue=hue, marker="o", errorbar=("pi", 100), ax=ax)
    ax.set_xlabel("kept fraction of the targeted parameters" if x == "keep" else x)
    ax.set_ylabel("relative Frobenius error")
    if title:
        ax.set_title(title)
    ax.legend(title=None, frameon=False)
    return ax


def speedup_vs_flops(cost: pd.DataFrame, title: str | None = None, ax=None):
    """Measured speed-up (dense time / compressed time) against the FLOP reduction (dense / compressed FLOPs).

    ``cost`` needs columns ``flop_ratio`` (compressed / dense FLOPs) and ``speedup``. Points on
    the dashed diagonal turn every saved FLOP into saved time.
    """
    ax = ax or plt.subplots(figsize=(6.4, 4))[1]
    flop_gain = 1 / cost["flop_ratio"]
    ax.plot(flop_gain, cost["speedup"], "o-", label="measured")
    top = max(flop_gain.max(), cost["speedup"].max()) * 1.05
    ax.plot([1, top], [1, top], ls="--", c="0.4", lw=1, label="speed-up = FLOP reduction")
    ax.set_xlabel("FLOP reduction (dense / compressed)")
    ax.set_ylabel("measured speed-up (dense / compressed time)")
    if title:
        ax.set_title(title)
    ax.legend(frameon=False)
    return ax


def bond_spectra(mpos: dict, title: str | None = None, axes=None):
    """Singular values across each internal bond of some MPOs, normalised by ``||W||_F``.

    ``mpos`` maps a label (e.g. ``"layer 0 query"``) to an ``mpstudy.factorize.MPO``; one panel
    per MPO, one line per bond (log scale). Where a curve drops, cutting that bond is cheap.
    """
    import numpy as np

    if axes is None:
        _, axes = plt.subplots(1, len(mpos), figsize=(4.2 * len(mpos), 3.4), squeeze=False)
        axes = axes[0]
    for ax, (label, mpo) in zip(axes, mpos.items()):
        for k, s in enumerate(mpo.bond_singular_values, start=1):
            values = (s / mpo.frobenius_norm).cpu().numpy()
            ax.plot(np.arange(1, len(values) + 1), values, label=f"bond {k} (d={len(values)})")
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xlabel("index along the bond")
        ax.set_title(label, fontsize=10)
        ax.legend(frameon=False, fontsize=8)
    axes[0].set_ylabel("singular value / ||W||_F")
    if title:
        plt.suptitle(title)
    plt.tight_layout()
    return axes


def squeeze_trajectory(trajectory: pd.DataFrame, metric: str, title: str | None = None, ax=None):
    """Dev metric against stored parameters along a dimension-squeezing run (rejected cut marked x)."""
    ax = ax or plt.subplots(figsize=(6.4, 4))[1]
    kept = trajectory[trajectory.accepted]
    ax.plot(kept.stored / 1e6, kept[metric], "o-", label="accepted cuts")
    rejected = trajectory[~trajectory.accepted]
    if len(rejected):
        ax.plot(rejected.stored / 1e6, rejected[metric], "x", ms=10, c="C3", label="rejected (stop)")
    ax.invert_xaxis()
    ax.set_xlabel("stored parameters (millions), squeezing left to right")
    ax.set_ylabel(f"dev {metric}")
    if title:
        ax.set_title(title)
    ax.legend(frameon=False)
    return ax


def mpo_diagram(row_dims, col_dims, bond_dims, central_index: int | None = None, title: str | None = None, ax=None):
    """Tensor-network picture of an MPO: one box per core ``(d_{k-1}, i_k, j_k, d_k)``.

    Legs up are the row (output) indices ``i_k``, legs down the column (input) indices ``j_k``,
    horizontal links the bonds ``d_k``; the central tensor is shaded.
    """
    from matplotlib.patches import FancyBboxPatch

    n = len(row_dims)
    central_index = (n - 1) // 2 if central_index is None else central_index
    ax = ax or plt.subplots(figsize=(1.9 * n + 1, 2.6))[1]
    for k in range(n):
        x = 2.0 * k
        shade = "#f4a261" if k == central_index else "#a8dadc"
        ax.add_patch(FancyBboxPatch((x - 0.45, -0.45), 0.9, 0.9, boxstyle="round,pad=0.05", fc=shade, ec="0.2"))
        label = "C" if k == central_index else f"A{k + 1 if k < central_index else k}"
        ax.text(x, 0, label, ha="center", va="center", fontsize=12, weight="bold")
        ax.plot([x, x], [0.5, 1.1], c="0.2")
        ax.text(x, 1.2, f"i={row_dims[k]}", ha="center", va="bottom", fontsize=9)
        ax.plot([x, x], [-0.5, -1.1], c="0.2")
        ax.text(x, -1.2, f"j={col_dims[k]}", ha="center", va="top", fontsize=9)
        if k < n - 1:
            ax.plot([x + 0.5, x + 1.5], [0, 0], c="0.2", lw=2)
            ax.text(x + 1.0, 0.12, f"d={bond_dims[k + 1]}", ha="center", va="bottom", fontsize=9)
    ax.set_xlim(-1, 2.0 * n - 1)
    ax.set_ylim(-1.8, 1.8)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def scores_with_intervals(df: pd.DataFrame, x: str, y: str = "score", low: str = "score_low", high: str = "score_high",
                          hue: str | None = None, baseline=None, xlabel: str | None = None, ylabel: str = "dev score",
                          title: str | None = None, ax=None):
    """Scores with their 95 % intervals as error bars, one line per ``hue``.

    ``baseline``: the dense model's score, a number (dashed line) or an object with ``estimate``,
    ``low`` and ``high`` (:class:`mpstudy.stats.Interval`: dashed line and a shaded band).
    """
    ax = ax or plt.subplots(figsize=(6.4, 4))[1]
    groups = [(None, df)] if hue is None else list(df.groupby(hue, sort=False))
    for name, part in groups:
        part = part.sort_values(x)
        err = [part[y] - part[low], part[high] - part[y]]
        ax.errorbar(part[x], part[y], yerr=err, marker="o", capsize=3, label=name if name is not None else y)
    if baseline is not None:
        est = getattr(baseline, "estimate", baseline)
        ax.axhline(est, ls="--", c="0.4", lw=1, label="dense (fine-tuned)")
        if hasattr(baseline, "low"):
            ax.axhspan(baseline.low, baseline.high, color="0.4", alpha=0.12, lw=0)
    ax.set_xlabel(xlabel or x.replace("_", " "))
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(frameon=False)
    return ax


def points_with_intervals(df: pd.DataFrame, x: str, y: str = "score", low: str = "score_low", high: str = "score_high",
                          hue: str = "method", xlow: str | None = None, xhigh: str | None = None, front=None,
                          baseline=None, baseline_x: float | None = None, xlabel: str | None = None,
                          ylabel: str = "dev score", title: str | None = None, log_x: bool = False, ax=None):
    """One point per row, its 95 % interval as a vertical error bar (``low``/``high``) and, when ``xlow``/``xhigh``
    are given, a horizontal one (a measured speed-up's interval); one colour and marker per ``hue``.

    ``front``: rows to join with a grey line (a Pareto front, sorted by ``x``). ``baseline``: the dense
    model's score, a number or an :class:`mpstudy.stats.Interval` (a star at ``baseline_x`` with its
    interval, and a dashed line). Unbounded interval ends (an interval from too few rounds) are drawn
    to the axis' edge.
    """
    import math

    ax = ax or plt.subplots(figsize=(6.4, 4))[1]
    markers = "osD^vPX*hp<>"
    for i, (name, part) in enumerate(df.groupby(hue, sort=False, observed=True)):
        yerr = [(part[y] - part[low]).clip(lower=0), (part[high] - part[y]).clip(lower=0)]
        xerr = None
        if xlow is not None and xhigh is not None:
            lo = part[x] - part[xlow].where(part[xlow].map(math.isfinite), part[x])
            hi = part[xhigh].where(part[xhigh].map(math.isfinite), part[x]) - part[x]
            xerr = [lo.clip(lower=0), hi.clip(lower=0)]
        ax.errorbar(part[x], part[y], yerr=yerr, xerr=xerr, fmt=markers[i % len(markers)], capsize=2, ms=5,
                    elinewidth=0.8, label=str(name))
    if front is not None and len(front):
        f = front.sort_values(x)
        ax.plot(f[x], f[y], color="0.4", lw=1, zorder=0)
    if baseline is not None:
        est = getattr(baseline, "estimate", baseline)
        ax.axhline(est, ls="--", c="0.4", lw=1)
        if baseline_x is not None:
            err = [[est - baseline.low], [baseline.high - est]] if hasattr(baseline, "low") else None
            ax.errorbar([baseline_x], [est], yerr=err, fmt="*", ms=12, color="k", capsize=2, label="dense")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel or x.replace("_", " "))
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False)
    return ax
