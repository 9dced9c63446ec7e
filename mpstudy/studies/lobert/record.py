"""The typed results record of study 02 (LoBERT): the decomposition of every student, its measured
cost, and one row per training run (part of the study x mode x budget x loss x start x fit x seed).

The labels of each field are the constants below (the modes are the registered ones,
:data:`mpstudy.methods.lobert.LOBERT_MODES`, plus ``dense``); a row with any other label is refused
when the record is built. Budgets are free text (``"keep=0.25"``, ``"k=2"``) except
:data:`DEFAULT_BUDGET`, the one the claims read.
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
    """Study 02's record: ``runs`` (every student trained), ``decompositions``, ``cost`` and the teacher."""

    STUDY = LOBERT_STUDY
    ROWS: ClassVar[dict[str, type]] = {"runs": LobertRun, "decompositions": Decomposition, "cost": StudentCost}
    runs: list[LobertRun]
    decompositions: list[Decomposition] = field(default_factory=list)
    cost: list[StudentCost] = field(default_factory=list)
    teacher: dict[str, Any] | None = None

    def main_runs(self) -> list[LobertRun]:
        """The main grid: each mode at its default budget, KD + PKD, factorized from the pre-trained model."""
        return [r for r in self.runs if r.part == MAIN and r.budget == DEFAULT_BUDGET and r.loss == KD_PKD
                and r.init == PRETRAINED and r.fit == SVD_FIT]
