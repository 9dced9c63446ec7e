"""The typed results record of study 01 (MPOP): one row per fine-tuning run (variant x seed), the
dimension-squeezing trajectory and the latency of the squeezed model.

The variant labels are the constants below; a run with any other label is refused when the record
is built, so the claims (:mod:`~mpstudy.studies.mpop.claims`) never meet a label they do not know.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..record_base import Row, StudyRecord

__all__ = ["MPOP_STUDY", "DENSE", "MPO_FULL", "MPO_LIGHTWEIGHT", "LORA", "VARIANTS", "MpopRun", "SqueezeStep",
           "MpopRecord"]

MPOP_STUDY = "01_mpop"
DENSE = "dense"  #: the original, every parameter fine-tuned
MPO_FULL = "MPO full"  #: the MPO model, every tensor fine-tuned
MPO_LIGHTWEIGHT = "MPO lightweight"  #: the MPO model, only the auxiliary tensors (and biases, norms, head)
LORA = "LoRA"  #: the original with LoRA adapters
VARIANTS = (DENSE, MPO_FULL, MPO_LIGHTWEIGHT, LORA)


@dataclass
class MpopRun(Row):
    """One fine-tuning run: the variant, its seed, the dev score (the task's main metric; every metric
    is kept in ``extra``) and the stored and trained parameter counts."""

    LABELS: ClassVar[dict[str, tuple]] = {"variant": VARIANTS}
    variant: str
    seed: int
    score: float
    stored: int
    trainable: int
    train_seconds: float | None = None


@dataclass
class SqueezeStep(Row):
    """One step of dimension squeezing (cut 0: the starting point); the dev metric is in ``extra``."""

    cut: int
    stored: int
    accepted: bool
    trainable: int | None = None
    layer: str | float | None = None  #: the cut module (NaN at cut 0)
    bond: float | None = None
    old_dim: float | None = None
    new_dim: float | None = None
    rel_error: float | None = None


@dataclass
class MpopRecord(StudyRecord):
    """Study 01's record: ``runs`` (every variant x seed), ``squeeze`` (the trajectory of the
    lightweight model of the first seed), ``latency`` (dense vs squeezed, :func:`mpstudy.measure.compare_latency`)."""

    STUDY = MPOP_STUDY
    ROWS: ClassVar[dict[str, type]] = {"runs": MpopRun, "squeeze": SqueezeStep}
    runs: list[MpopRun]
    squeeze: list[SqueezeStep] = field(default_factory=list)
    latency: dict[str, Any] | None = None

    def runs_of(self, variant: str) -> list[MpopRun]:
        """The runs of one variant (one of ``VARIANTS``), in record order."""
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
        return [r for r in self.runs if r.variant == variant]

    def scores(self, variant: str) -> list[float]:
        """The dev scores of one variant over its seeds."""
        return [r.score for r in self.runs_of(variant)]
