"""The typed results record of study 03 (SVD + distillation, Noach & Goldberg 2020; FWSVD, Hsu et al.
2022): the recovery grid at the study's budget, the budget sweep, the budget table (this model's and
the paper's), the latency curve, per-matrix errors and the seq2seq rows.

Methods, recovery plans and the paper's budget row are named by the constants below; a row with any
other label is refused when the record is built.

Since the campaign (issue 19) every grid row and sweep row carries its dev ``predictions``, the record
its dev ``references`` and the dense models' rows (``dense``), and the seq2seq rows their test
hypotheses and references, so the claims (:mod:`~mpstudy.studies.svd_distillation.claims`) decide by
paired intervals. Records written before that lack them; they still load, and the rules that need
predictions say "not testable" for them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..record_base import Row, StudyRecord
from .recipe import STAGE_PLANS

__all__ = ["SVD_STUDY", "SVD", "FWSVD", "SVD_METHODS", "NO_RECOVERY", "KD_ONLY", "FD_ONLY", "FD_KD", "PLANS",
           "ORIGINAL", "S2S_PLANS", "PAPER_BUDGET", "RecoveryRun", "DenseRun", "BudgetRow", "LatencyPoint", "ModuleError",
           "BleuRow", "Seq2seqRows", "SvdDistillRecord"]

SVD_STUDY = "03_svd_distillation"
SVD, FWSVD = "svd", "fwsvd"
SVD_METHODS = (SVD, FWSVD)  #: plain and Fisher-weighted SVD
NO_RECOVERY, KD_ONLY, FD_ONLY, FD_KD = "none", "kd", "fd", "fd+kd"
PLANS = tuple(STAGE_PLANS)  #: the recovery plans, keys of :data:`~mpstudy.studies.svd_distillation.recipe.STAGE_PLANS`
if set(PLANS) != {NO_RECOVERY, KD_ONLY, FD_ONLY, FD_KD}:  # the claims below name these four
    raise ImportError(f"STAGE_PLANS changed to {PLANS}; update the plan constants of {__name__}")
ORIGINAL = "original"  #: the uncompressed model in the seq2seq rows
S2S_PLANS = (ORIGINAL, *PLANS)
PAPER_BUDGET = "bert-base (paper)"  #: the ``model`` of the budget row holding the paper's setting (BERT-base, r = 245)


@dataclass
class RecoveryRun(Row):
    """One compressed model, recovered by one plan (or not): method, plan, seed, rank and dev score
    (the task's main metric; every metric is kept in ``extra``) and its dev ``predictions`` (row order
    of the record's ``references``; None in records from before the campaign). Rows of the grid and of
    the sweep (the sweep's rows also name their ``keep``)."""

    LABELS: ClassVar[dict[str, tuple]] = {"method": SVD_METHODS, "plan": PLANS}
    method: str
    plan: str
    seed: int
    score: float
    rank: int | None = None
    kept_fraction: float | None = None
    model_params: int | None = None
    train_seconds: float | None = None
    keep: float | None = None
    predictions: list | None = None


@dataclass
class DenseRun(Row):
    """One dense model (the shared baseline of ``seed``): its dev score and dev predictions."""

    seed: int
    score: float
    predictions: list | None = None


@dataclass
class BudgetRow(Row):
    """What a rank keeps: of the targeted matrices, of the encoder and of the whole model."""

    KEYS: ClassVar[dict[str, str]] = {"targeted_kept": "targeted matrices kept", "encoder_kept": "encoder kept",
            "whole_kept": "whole model kept"}
    model: str
    rank: int
    targeted_kept: float
    whole_kept: float
    encoder_kept: float | None = None


@dataclass
class LatencyPoint(Row):
    """Forward latency of the factorized model at one rank, and its speed-up over the original."""

    rank: int
    kept_fraction: float
    speedup: float
    dense_ms: float | None = None
    lowrank_ms: float | None = None
    flop_ratio: float | None = None
    model_params: int | None = None


@dataclass
class ModuleError(Row):
    """One factorized matrix's relative error (and, with Fisher importances, its row-weighted error)."""

    LABELS: ClassVar[dict[str, tuple]] = {"method": SVD_METHODS}
    method: str
    name: str | None = None
    role: str | None = None
    layer: int | None = None
    stack: str | None = None
    rank: int | None = None
    rel_error: float | None = None
    weighted_rel_error: float | None = None


@dataclass
class BleuRow(Row):
    """The seq2seq model's BLEU after one plan (or the original's), with its test hypotheses (one row per
    recovery seed for a trained plan; ``seed`` None for the original and the untrained factorization)."""

    LABELS: ClassVar[dict[str, tuple]] = {"plan": S2S_PLANS}
    plan: str
    bleu: float
    model_params: int | None = None
    seed: int | None = None
    predictions: list | None = None


@dataclass
class Seq2seqRows(Row):
    """The seq2seq part: BLEU rows with the test ``references`` (and the ``task`` they are of), and/or the
    timing probe of records from before the campaign."""

    NESTED: ClassVar[dict[str, type]] = {"rows": BleuRow}
    rows: list[BleuRow] = field(default_factory=list)
    probe: dict[str, Any] | None = None
    references: list | None = None
    task: str | None = None

    def predictions(self, plan: str) -> dict[int, list] | list | None:
        """The hypotheses of ``plan``: seed -> list for a trained plan, one list for the original or the
        untrained factorization; None when a row lacks them (an old record) or there are no references."""
        rows = [r for r in self.rows if r.plan == plan]
        if not rows or self.references is None or any(r.predictions is None for r in rows):
            return None
        if len(rows) == 1 and rows[0].seed is None:
            return rows[0].predictions
        return {int(r.seed): r.predictions for r in rows}


@dataclass
class SvdDistillRecord(StudyRecord):
    """Study 03's record. ``baseline``: the fine-tuned original (``metrics``, ``params``, ``cache_key``);
    ``grid``: every method x plan x seed at the budget; ``sweep``: methods x plans over budgets (first
    seed); ``budget``: this model's row first, then the paper's (:data:`PAPER_BUDGET`)."""

    STUDY = SVD_STUDY
    ROWS: ClassVar[dict[str, type]] = {"grid": RecoveryRun, "sweep": RecoveryRun, "budget": BudgetRow, "latency": LatencyPoint,
            "module_errors": ModuleError, "dense": DenseRun}
    baseline: dict[str, Any]
    grid: list[RecoveryRun]
    sweep: list[RecoveryRun] = field(default_factory=list)
    budget: list[BudgetRow] = field(default_factory=list)
    latency: list[LatencyPoint] = field(default_factory=list)
    module_errors: list[ModuleError] = field(default_factory=list)
    fisher: dict[str, Any] | None = None
    seq2seq: Seq2seqRows = field(default_factory=Seq2seqRows)
    dense: list[DenseRun] | None = None
    references: list | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.seq2seq is None:
            self.seq2seq = Seq2seqRows()
        self.seq2seq = Seq2seqRows.from_dict(self.seq2seq)
        papers = [b for b in self.budget if b.model == PAPER_BUDGET]
        if self.budget and len(papers) != 1:
            raise ValueError(f"SvdDistillRecord.budget needs one row with model {PAPER_BUDGET!r} (the paper's setting), "
                             f"got models {[b.model for b in self.budget]}")

    @property
    def our_budget(self) -> BudgetRow:
        """The budget row of this record's model (the first row that is not the paper's)."""
        return next(b for b in self.budget if b.model != PAPER_BUDGET)

    @property
    def paper_budget(self) -> BudgetRow:
        """The paper's budget row (BERT-base at r = 245)."""
        return next(b for b in self.budget if b.model == PAPER_BUDGET)

    def original_score(self) -> float:
        """The fine-tuned original's score in the grid's metric (the one whose value equals ``score`` in a grid row)."""
        metrics = self.baseline["metrics"]
        if len(metrics) == 1:
            return next(iter(metrics.values()))
        row = self.grid[0]
        return metrics[next(k for k in metrics if row.extra.get(k) == row.score)]

    def predictions(self, method: str, plan: str) -> dict[int, list] | None:
        """seed -> dev predictions of the grid's (``method``, ``plan``) cell, or None when a row of it has
        none (an old record), the cell is empty or the record has no ``references``."""
        rows = [r for r in self.grid if (r.method, r.plan) == (method, plan)]
        if not rows or self.references is None or any(r.predictions is None for r in rows):
            return None
        return {int(r.seed): r.predictions for r in rows}

    def dense_predictions(self) -> dict[int, list] | None:
        """seed -> dev predictions of the dense models, or None (an old record)."""
        if not self.dense or self.references is None or any(r.predictions is None for r in self.dense):
            return None
        return {int(r.seed): r.predictions for r in self.dense}

    @property
    def task(self) -> str:
        """The task the scores are of (the record's ``task`` parameter)."""
        return str(self.parameters.get("task_name", self.parameters.get("task", "")))
