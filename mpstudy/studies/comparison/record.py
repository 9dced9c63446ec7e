"""The typed results record of study 06 (the comparison): one row per (task, method, budget, regime,
seed) run, the accounting of every compressed model, and the ranking of the methods per regime.

Methods and regimes are the study's own (:data:`~mpstudy.studies.comparison.recipe.COMPARED_METHODS`, :data:`~mpstudy.studies.comparison.recipe.REGIMES`);
a row with any other label is refused when the record is built. Tasks are GLUE task names, free text.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..record_base import Row, StudyRecord
from .recipe import COMPARED_METHODS, REGIMES

__all__ = ["COMPARISON_STUDY", "NO_RECOVERY", "SVD", "FWSVD", "TUCKER", "KRONECKER", "AUTOENCODER", "ComparisonRun",
           "AccountingRow", "RankingRow", "ComparisonRecord"]

COMPARISON_STUDY = "06_comparison"
NO_RECOVERY = "none"  #: the regime of the compressed model before any training
SVD, FWSVD, TUCKER, KRONECKER, AUTOENCODER = "svd", "fwsvd", "tucker", "kronecker", "autoencoder"
if NO_RECOVERY not in REGIMES or not {SVD, FWSVD, TUCKER, KRONECKER, AUTOENCODER} <= set(COMPARED_METHODS):
    # the claims read these names: a study that stops running them must say so here, not judge nothing
    raise ImportError(f"{__name__} names a method or regime the comparison no longer runs: "
                      f"regimes {REGIMES}, methods {COMPARED_METHODS}")


@dataclass
class ComparisonRun(Row):
    """One compressed model on one task: method, budget (``keep``), regime, seed (NaN without
    training), dev score (the task's main metric), its share of the dense score, and every metric."""

    LABELS: ClassVar[dict[str, tuple]] = {"method": COMPARED_METHODS, "regime": REGIMES}
    task: str
    method: str
    keep: float
    regime: str
    score: float
    seed: float | None = None
    dense: float | None = None
    retained: float | None = None
    seconds: float | None = None
    trainable: float | None = None
    metrics: dict[str, float] | None = None


@dataclass
class AccountingRow(Row):
    """One compressed model's parameters (stored, non-zero, trainable), FLOPs and latency against the dense model."""

    LABELS: ClassVar[dict[str, tuple]] = {"method": COMPARED_METHODS}
    method: str
    task: str
    keep: float
    kept: float | None = None
    stored: int | None = None
    nonzero: int | None = None
    trainable: int | None = None
    dense_stored: int | None = None
    flops_ratio: float | None = None
    latency_ms: float | None = None
    dense_ms: float | None = None
    speedup: float | None = None
    compress_s: float | None = None
    structure: str | None = None


@dataclass
class RankingRow(Row):
    """One method's standing in one regime over every (task, budget) cell."""

    LABELS: ClassVar[dict[str, tuple]] = {"method": COMPARED_METHODS, "regime": REGIMES}
    KEYS: ClassVar[dict[str, str]] = {"best_in_cells": "best in cells", "mean_rank": "mean rank", "sd_over_seeds": "sd over seeds"}
    method: str
    regime: str
    best_in_cells: int | None = None
    cells: int | None = None
    mean_rank: float | None = None
    retained: float | None = None
    sd_over_seeds: float | None = None


@dataclass
class ComparisonRecord(StudyRecord):
    """Study 06's record: ``runs``, ``accounting``, ``ranking`` and ``dense`` (task -> the dense model's scores)."""

    STUDY = COMPARISON_STUDY
    ROWS: ClassVar[dict[str, type]] = {"runs": ComparisonRun, "accounting": AccountingRow, "ranking": RankingRow}
    runs: list[ComparisonRun]
    accounting: list[AccountingRow] = field(default_factory=list)
    ranking: list[RankingRow] = field(default_factory=list)
    dense: dict[str, Any] = field(default_factory=dict)

    @property
    def scale(self) -> str:
        params = self.parameters
        return (f"{self.profile} profile: {params.get('model', '?')} on {', '.join(params.get('tasks', []))}, "
                f"{params.get('max_train')} training rows per task, budgets {params.get('keeps')}, no recovery")

    def untrained_cells(self) -> dict[tuple[str, float], dict[str, float]]:
        """(task, keep) -> method -> dev score of the compressed model before any recovery."""
        cells: dict[tuple[str, float], dict[str, float]] = {}
        for run in self.runs:
            if run.regime == NO_RECOVERY:
                cells.setdefault((run.task, run.keep), {})[run.method] = run.score
        return cells
