"""The typed results record of study 05 (composable pruning): per track (classification, seq2seq),
the pruning configurations, the module-level tuning, and one row per configuration and arm (composed
from tuned modules, or from untuned pruned modules); and the cost of each pruned form.

Tracks and arms are named by the constants below; a record with any other label is refused when it
is built.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..record_base import Row, StudyRecord, check_label

__all__ = ["COMPOSABILITY_STUDY", "COMPOSABILITY", "BASELINE", "ARMS", "CLS", "S2S", "TRACKS", "ConfigurationRow",
           "Track", "PrunedCost", "ComposabilityRecord"]

COMPOSABILITY_STUDY = "05_composability"
COMPOSABILITY, BASELINE = "composability", "baseline"
ARMS = (COMPOSABILITY, BASELINE)  #: composed from tuned modules, or from untuned pruned modules
CLS, S2S = "cls", "s2s"
TRACKS = (CLS, S2S)  #: sequence classification, sequence-to-sequence


def _none_if_nan(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


@dataclass
class ConfigurationRow(Row):
    """One configuration fine-tuned from one arm's starting point (with one ``seed``; None in records from
    before the campaign, which held one seed and no predictions): its score before and at the end, the steps
    and seconds to the target (None: not reached; NaN from a DataFrame is read as None), ``censored_s`` (the
    time to the target with the tuning share, or the whole budget's time when it was not reached: a lower
    bound) and the dev predictions as composed and after fine-tuning (``test_predictions``: on the test split)."""

    LABELS: ClassVar[dict[str, tuple]] = {"arm": ARMS}
    config: int
    arm: str
    start_score: float
    total_seconds_to_target: float | None = None  #: fine-tuning time to the target plus this arm's share of tuning
    seconds_to_target: float | None = None
    steps_to_target: int | None = None
    best_score: float | None = None
    best_step: int | None = None
    steps: int | None = None
    target: float | None = None
    attention_keep: float | None = None
    linear_keep: float | None = None
    stored_params: int | None = None
    nonzero_params: int | None = None
    train_s: float | None = None
    tune_share_s: float | None = None
    seed: int | None = None
    reached: bool | None = None
    censored_s: float | None = None
    final_score: float | None = None
    start_predictions: list | None = None
    predictions: list | None = None
    test_predictions: list | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("total_seconds_to_target", "seconds_to_target", "steps_to_target"):
            setattr(self, name, _none_if_nan(getattr(self, name)))


@dataclass
class Track(Row):
    """One track: model and task, the dense model's score and the target, the configurations (module
    -> keep ratio), the module-level tuning, the runs and their histories."""

    NESTED: ClassVar[dict[str, type]] = {"runs": ConfigurationRow}
    runs: list[ConfigurationRow]
    model: str | None = None
    task: str | None = None
    data: dict[str, Any] | None = None
    dense: dict[str, Any] | None = None  #: ``score``, ``params``, ``cache_key``
    target: float | None = None
    configs: list[dict[str, float]] = field(default_factory=list)
    scheme: dict[str, Any] | None = None
    module_tuning: dict[str, Any] | None = None
    histories: list[dict[str, Any]] = field(default_factory=list)
    references: list | None = None  #: dev references, in the order of the runs' predictions
    test_references: list | None = None
    #: the teacher's dev predictions by seed (a string), one dense model per seed on the cls track and one
    #: teacher on the s2s track, and for s2s its ``test`` predictions
    teacher_predictions: dict[str, list] | None = None
    trivial: float | None = None  #: the trivial predictor's dev score (a run at or below it collapsed)


@dataclass
class PrunedCost(Row):
    """The measured cost of one pruned form (``form``: ``dense``, ``config 0``, ``heads removed 0.25``,
    ``unstructured 0.3 (zeros)``, ...)."""

    form: str
    attention_keep: float | None = None
    linear_keep: float | None = None
    stored_params: int | None = None
    nonzero_params: int | None = None
    nonzero_share: float | None = None
    gflops: float | None = None
    flop_share: float | None = None
    latency_ms: float | None = None
    speedup: float | None = None


@dataclass
class ComposabilityRecord(StudyRecord):
    """Study 05's record: ``tracks`` (:data:`TRACKS` -> :class:`Track`) and ``cost`` (one row per pruned form)."""

    STUDY = COMPOSABILITY_STUDY
    ROWS: ClassVar[dict[str, type]] = {"cost": PrunedCost}
    tracks: dict[str, Track]
    cost: list[PrunedCost] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in self.tracks:
            check_label(type(self).__name__, "tracks", name, TRACKS)
        self.tracks = {name: Track.from_dict(t) for name, t in self.tracks.items()}
