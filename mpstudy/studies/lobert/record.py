"""The typed results record of study 02 (LoBERT): the decomposition of every student, its measured
cost, and one row per training run (part of the study x mode x budget x loss x start x fit x seed).

The labels of each field are the constants below (the modes are the registered ones,
:data:`mpstudy.methods.lobert.LOBERT_MODES`, plus ``dense``); a row with any other label is refused
when the record is built. Budgets are free text (``"keep=0.25"``, ``"k=2"``) except
:data:`DEFAULT_BUDGET`, LoBERT's own (the one the claim on the default compression rate reads).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...methods.lobert import LOBERT_MODES
from ..record_base import Row, StudyRecord

__all__ = ["LOBERT_STUDY", "MAIN", "SWEEP", "LOSS_ABLATION", "INIT_ABLATION", "SGD_ABLATION", "PARTS", "CE", "KD",
           "KD_PKD", "LOSSES", "PRETRAINED", "FROM_TEACHER", "INITS", "SVD_FIT", "SGD_FIT", "FITS", "DENSE",
           "STUDENT_MODES", "FAMILIES", "DEFAULT_BUDGET", "LobertRun", "Decomposition", "StudentCost", "LobertRecord"]

LOBERT_STUDY = "02_lobert"

MAIN, SWEEP, LOSS_ABLATION, INIT_ABLATION, SGD_ABLATION = "main", "sweep", "loss", "init", "sgd"
PARTS = (MAIN, SWEEP, LOSS_ABLATION, INIT_ABLATION, SGD_ABLATION)  #: the parts of the study a run belongs to
CE, KD, KD_PKD = "ce", "kd", "kd+pkd"
LOSSES = (CE, KD, KD_PKD)  #: cross-entropy alone, + KD, + KD and PKD's patience loss
PRETRAINED, FROM_TEACHER = "pretrained", "teacher"
INITS = (PRETRAINED, FROM_TEACHER)  #: what the student is factorized from
SVD_FIT, SGD_FIT = "svd", "sgd"
FITS = (SVD_FIT, SGD_FIT)  #: closed-form factors, or FALCON's SGD fit
DENSE = "dense"
STUDENT_MODES = (DENSE, *LOBERT_MODES)  #: the dense student and every registered LoBERT mode
FAMILIES = (DENSE, "svd", "tucker", "falcon")
DEFAULT_BUDGET = "default"  #: LoBERT's own budget of a mode (its other budgets are labelled by their keywords)


@dataclass
class LobertRun(Row):
    """One student trained: where it sits in the study, its mode and budget, loss, start and fit, seed
    and dev score."""

    LABELS: ClassVar[dict[str, tuple]] = {"part": PARTS, "mode": STUDENT_MODES, "loss": LOSSES, "init": INITS, "fit": FITS}
    part: str
    mode: str
    budget: str
    loss: str
    init: str
    fit: str
    seed: int
    score: float
    family: str | None = None
    steps: int | None = None
    train_seconds: float | None = None
    predictions: list | None = None  #: dev predictions in the record's ``references`` order (None before the campaign)
    collapsed: bool | None = None  #: score within the majority-class predictor's interval


@dataclass
class Decomposition(Row):
    """One student's factorization: the kept fraction of the weights it replaces (``kept``) and of the
    whole model's stored parameters (``param_ratio``), errors and time."""

    LABELS: ClassVar[dict[str, tuple]] = {"mode": STUDENT_MODES, "fit": FITS}
    mode: str
    budget: str
    kept: float
    param_ratio: float
    fit: str = SVD_FIT
    family: str | None = None
    rel_error: float | None = None
    worst_error: float | None = None
    lost: int | None = None
    matrices: int | None = None
    seconds: float | None = None
    sgd_mse_first: float | None = None
    sgd_mse_last: float | None = None


@dataclass
class StudentCost(Row):
    """A closed-form student's size and latency ratio to the dense model (decode cache on and off)."""

    LABELS: ClassVar[dict[str, tuple]] = {"mode": STUDENT_MODES}
    mode: str
    budget: str
    family: str | None = None
    kept: float | None = None
    param_ratio: float | None = None
    latency_cached: float | None = None
    latency_rebuilt: float | None = None


@dataclass
class LobertRecord(StudyRecord):
    """Study 02's record: ``runs`` (every student trained), ``decompositions``, ``cost``, the ``teacher``
    and the dev ``references``.

    Since the campaign the teacher is the shared dense baseline of each seed: ``teacher`` holds
    ``predictions`` (seed, as a string key in JSON -> dev predictions), ``scores`` and ``units``; every run
    holds its dev ``predictions``, so the claims decide by paired intervals. Records from before (one
    teacher trained by the study, scores only) still load; their claims read "not testable"."""

    STUDY = LOBERT_STUDY
    ROWS: ClassVar[dict[str, type]] = {"runs": LobertRun, "decompositions": Decomposition, "cost": StudentCost}
    runs: list[LobertRun]
    decompositions: list[Decomposition] = field(default_factory=list)
    cost: list[StudentCost] = field(default_factory=list)
    teacher: dict[str, Any] | None = None
    references: list | None = None

    def main_runs(self) -> list[LobertRun]:
        """The main grid: each mode at its main budget (LoBERT's unless the run chose another), KD + PKD,
        factorized in closed form from the pre-trained model."""
        return [r for r in self.runs
                if r.part == MAIN and r.loss == KD_PKD and r.init == PRETRAINED and r.fit == SVD_FIT]

    def teacher_predictions(self) -> dict[int, list] | None:
        """seed -> the teacher's dev predictions, or None (a record from before the campaign)."""
        preds = (self.teacher or {}).get("predictions")
        if not preds or self.references is None:
            return None
        return {int(s): p for s, p in preds.items()}

    @staticmethod
    def run_predictions(runs: list[LobertRun]) -> dict[int, list] | None:
        """seed -> dev predictions of ``runs`` (one cell of the grid), or None when one of them has none."""
        if not runs or any(r.predictions is None for r in runs):
            return None
        return {int(r.seed): r.predictions for r in runs}

    @property
    def task(self) -> str:
        """The task the scores are of (the record's ``task`` parameter)."""
        return str(self.parameters.get("task", self.provenance.get("task", "")))
