"""Seaborn figures shared by the study notebooks."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

__all__ = ["score_vs_params", "error_by_role", "speedup_vs_flops"]


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


def error_by_role(df: pd.DataFrame, x: str = "ratio", y: str = "rel_error", hue: str = "role", title: str | None = None, ax=None):
    """Relative reconstruction error ``||W - W'||_F / ||W||_F`` per module type (mean over layers, with range)."""
    ax = ax or plt.subplots(figsize=(6.4, 4))[1]
    sns.lineplot(data=df, x=x, y=y, hue=hue, marker="o", errorbar=("pi", 100), ax=ax)
    ax.set_xlabel("kept fraction of the targeted parameters" if x == "ratio" else x)
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
