"""The typed results record of study 01 (MPOP): one row per fine-tuning run (variant x seed), the
dimension-squeezing trajectories, one row per squeezed seed and the latency of the squeezed model.

Since the campaign (issue 19) every run row and squeezed row carries its dev ``predictions`` and the
record its dev ``references``, so the claims (:mod:`~mpstudy.studies.mpop.claims`) decide by paired
intervals. Records written before that (the first cpu record) lack them; they still load, and the
rules that need predictions say "not testable" for them.

The variant labels are the constants below; a run with any other label is refused when the record
is built, so the claims (:mod:`~mpstudy.studies.mpop.claims`) never meet a label they do not know.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..record_base import Row, StudyRecord

__all__ = ["MPOP_STUDY", "DENSE", "MPO_FULL", "MPO_LIGHTWEIGHT", "LORA", "VARIANTS", "MpopRun", "SqueezeStep",
           "SqueezeRun", "MpopRecord"]

MPOP_STUDY = "01_mpop"
DENSE = "dense"  #: the original, every parameter fine-tuned
MPO_FULL = "MPO full"  #: the MPO model, every tensor fine-tuned
MPO_LIGHTWEIGHT = "MPO lightweight"  #: the MPO model, only the auxiliary tensors (and biases, norms, head)
LORA = "LoRA"  #: the original with LoRA adapters
VARIANTS = (DENSE, MPO_FULL, MPO_LIGHTWEIGHT, LORA)


@dataclass
class MpopRun(Row):
    """One fine-tuning run: the variant, its seed, the dev score (the task's main metric; every metric
    is kept in ``extra``), the stored and trained parameter counts and the dev ``predictions`` (row
    order of the record's ``references``; None in records from before the campaign)."""

    LABELS: ClassVar[dict[str, tuple]] = {"variant": VARIANTS}
    variant: str
    seed: int
    score: float
    stored: int
    trainable: int
    train_seconds: float | None = None
    predictions: list | None = None


@dataclass
class SqueezeStep(Row):
    """One step of dimension squeezing (cut 0: the starting point) of the model of ``seed``; the metric
    that accepted or refused the cut is in ``extra`` (on the held-out selection rows since the campaign,
    on dev before)."""

    cut: int
    stored: int
    accepted: bool
    trainable: int | None = None
    layer: str | float | None = None  #: the cut module (NaN at cut 0)
    bond: float | None = None
    old_dim: float | None = None
    new_dim: float | None = None
    rel_error: float | None = None
    seed: int | None = None


@dataclass
class SqueezeRun(Row):
    """One seed's squeeze as a whole: stored parameters before and after, cuts accepted of cuts tried,
    and the dev predictions of the model before its first cut and after its last accepted one."""

    seed: int
    start_stored: int
    stored: int
    accepted: int
    tried: int
    start_predictions: list | None = None
    predictions: list | None = None


@dataclass
class MpopRecord(StudyRecord):
    """Study 01's record: ``runs`` (every variant x seed), ``squeeze`` (the trajectories of the
    lightweight models, each row with its ``seed``; the first seed's only in records from before the
    campaign), ``squeezed`` (one row per squeezed seed), ``references`` (the dev labels the predictions
    are scored against) and ``latency`` (dense vs squeezed, :func:`mpstudy.measure.compare_latency`)."""

    STUDY = MPOP_STUDY
    ROWS: ClassVar[dict[str, type]] = {"runs": MpopRun, "squeeze": SqueezeStep, "squeezed": SqueezeRun}
    runs: list[MpopRun]
    squeeze: list[SqueezeStep] = field(default_factory=list)
    latency: dict[str, Any] | None = None
    squeezed: list[SqueezeRun] | None = None
    references: list | None = None

    def runs_of(self, variant: str) -> list[MpopRun]:
        """The runs of one variant (one of ``VARIANTS``), in record order."""
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
        return [r for r in self.runs if r.variant == variant]

    def scores(self, variant: str) -> list[float]:
        """The dev scores of one variant over its seeds."""
        return [r.score for r in self.runs_of(variant)]

    def predictions(self, variant: str) -> dict[int, list] | None:
        """seed -> dev predictions of one variant, or None when a run of it has none (an old record)
        or the record has no ``references``."""
        runs = self.runs_of(variant)
        if not runs or self.references is None or any(r.predictions is None for r in runs):
            return None
        return {int(r.seed): r.predictions for r in runs}

    @property
    def task(self) -> str:
        """The task the scores are of (the record's ``task`` parameter)."""
        return str(self.parameters.get("task", self.provenance.get("task", "")))
