"""The typed results record of study 06 (the comparison): one row per (task, method, budget, regime,
seed) run, one per (task, method, budget, regime) cell with its intervals, the accounting of every
compressed model, the ranking of the methods per regime and the deployment table (bytes, speed-up and
retained score, each with its interval).

Methods and regimes are the study's own (``method``: a compared method or ``dense``, ``precision``:
``fp32`` or a precision method applied after it, ``variant``: the label the tables show, ``svd+int8``;
and :data:`~mpstudy.studies.comparison.recipe.REGIMES`); a row with any other label is refused when the record
is built. Tasks are GLUE task names, free text. The per-example predictions stay in the unit records
(``results/06_comparison/units/``); this record keeps what the tables and claims read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..record_base import Row, StudyRecord
from .recipe import COMPARED_METHODS, PRECISIONS, REGIMES

#: a row's ``method``: a compared method, or ``dense`` (a precision method alone); ``precision``: what ran after it
ROW_METHODS = (*COMPARED_METHODS, "dense")
ROW_PRECISIONS = ("fp32", *PRECISIONS, None)  # None: fp32 (rows written before the precision methods)

__all__ = ["COMPARISON_STUDY", "NO_RECOVERY", "SVD", "FWSVD", "TUCKER", "KRONECKER", "AUTOENCODER", "ComparisonRun",
           "CellRow", "AccountingRow", "RankingRow", "DeploymentRow", "PairRow", "ComparisonRecord"]

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

    LABELS: ClassVar[dict[str, tuple]] = {"method": ROW_METHODS, "regime": REGIMES, "precision": ROW_PRECISIONS}
    task: str
    method: str
    keep: float
    regime: str
    score: float
    precision: str | None = None
    variant: str | None = None
    seed: float | None = None
    dense: float | None = None
    retained: float | None = None
    seconds: float | None = None
    trainable: float | None = None
    metrics: dict[str, float] | None = None


@dataclass
class CellRow(Row):
    """One (task, method, budget, regime) cell over its seeds: the score with its 95 % interval, the paired
    difference to the dense models with its interval, and the verdict on "loses at most one point"."""

    LABELS: ClassVar[dict[str, tuple]] = {"method": ROW_METHODS, "regime": REGIMES, "precision": ROW_PRECISIONS}
    task: str
    method: str
    keep: float
    regime: str
    score: float
    score_low: float | None = None
    score_high: float | None = None
    seeds: int | None = None
    dense: float | None = None
    retained: float | None = None
    vs_dense: float | None = None
    vs_dense_low: float | None = None
    vs_dense_high: float | None = None
    within_1pt: str | None = None
    precision: str | None = None
    variant: str | None = None
    stored: int | None = None
    bytes: int | None = None


@dataclass
class DeploymentRow(Row):
    """One variant as deployed on one task: bytes, measured speed-up over dense fp32 with its interval, and
    the retained score with its interval."""

    LABELS: ClassVar[dict[str, tuple]] = {"method": ROW_METHODS, "regime": REGIMES, "precision": ROW_PRECISIONS}
    task: str
    method: str
    keep: float
    regime: str
    precision: str | None = None
    variant: str | None = None
    bytes: int | None = None
    bytes_ratio: float | None = None
    speedup: float | None = None
    speedup_low: float | None = None
    speedup_high: float | None = None
    latency_ms: float | None = None
    dense_ms: float | None = None
    score: float | None = None
    score_low: float | None = None
    score_high: float | None = None
    vs_dense: float | None = None
    vs_dense_low: float | None = None
    vs_dense_high: float | None = None
    within_1pt: str | None = None
    seeds: int | None = None


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
    tied_with_best: int | None = None
    vs_dense: float | None = None
    vs_dense_low: float | None = None
    vs_dense_high: float | None = None


@dataclass
class PairRow(Row):
    """One (task, budget) cell of a claim: ``method`` minus its best ``rival`` before any recovery, paired by
    seed and dev example, with the 95 % interval (``low``, ``high``) over ``seeds`` seeds."""

    LABELS: ClassVar[dict[str, tuple]] = {"method": COMPARED_METHODS, "rival": COMPARED_METHODS}

    task: str
    keep: float
    method: str
    rival: str
    diff: float
    low: float | None = None
    high: float | None = None
    seeds: int | None = None


@dataclass
class ComparisonRecord(StudyRecord):
    """Study 06's record: ``runs``, ``cells``, ``accounting``, ``ranking``, ``deployment`` and ``dense``
    (task -> the dense models' score with its interval and the guard)."""

    STUDY = COMPARISON_STUDY
    ROWS: ClassVar[dict[str, type]] = {"runs": ComparisonRun, "cells": CellRow, "accounting": AccountingRow,
                                       "ranking": RankingRow, "deployment": DeploymentRow, "pairs": PairRow}
    runs: list[ComparisonRun]
    cells: list[CellRow] | None = None
    accounting: list[AccountingRow] = field(default_factory=list)
    ranking: list[RankingRow] = field(default_factory=list)
    deployment: list[DeploymentRow] | None = None
    dense: dict[str, Any] = field(default_factory=dict)
    pairs: list[PairRow] | None = None  #: the claims' paired cells (records written before them have none)

    @property
    def scale(self) -> str:
        params = self.parameters
        return (f"{self.profile} profile: {params.get('model', '?')} on {', '.join(params.get('tasks', []))}, "
                f"dense seeds {params.get('seeds')}, budgets {params.get('keeps')}, no recovery")

    def untrained_cells(self) -> dict[tuple[str, float], dict[str, float]]:
        """(task, keep) -> method -> dev score of the compressed model before any recovery (the mean over
        its seeds' runs)."""
        scores: dict[tuple[str, float], dict[str, list[float]]] = {}
        for run in self.runs:
            if run.regime == NO_RECOVERY and run.precision in (None, "fp32"):
                scores.setdefault((run.task, run.keep), {}).setdefault(run.method, []).append(run.score)
        return {cell: {m: sum(v) / len(v) for m, v in by.items()} for cell, by in scores.items()}
