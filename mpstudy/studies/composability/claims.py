"""The claims of the composable-pruning thesis (UMass Amherst, 2023) and the rules that judge them on
study 05's typed records (:class:`~mpstudy.studies.composability.record.ComposabilityRecord`)."""
from __future__ import annotations

from ..verdicts import COMPARABLE, FAILS, HOLDS, UNTESTABLE, Claim, Finding, pts
from .record import (
    BASELINE,
    CLS,
    COMPOSABILITY,
    COMPOSABILITY_STUDY,
    S2S,
    ComposabilityRecord,
    ConfigurationRow,
)

__all__ = ["faster_configs", "start_gains", "faster", "better_start", "t5_faster", "FASTER", "BETTER_START",
           "T5_FASTER", "CLAIMS"]

PAPER = "composability2023"


def _pair(runs: list[ConfigurationRow], config: int) -> tuple[ConfigurationRow, ConfigurationRow]:
    comp = next(r for r in runs if r.config == config and r.arm == COMPOSABILITY)
    base = next(r for r in runs if r.config == config and r.arm == BASELINE)
    return comp, base


def faster_configs(runs: list[ConfigurationRow]) -> tuple[int, int]:
    """Configurations where composability reaches the target first (module tuning share counted; a
    baseline that never reaches it is beaten by any arm that does), and their number."""
    configs = sorted({r.config for r in runs})
    faster = 0
    for c in configs:
        comp, base = _pair(runs, c)
        t_comp, t_base = comp.total_seconds_to_target, base.total_seconds_to_target
        if t_comp is not None and (t_base is None or t_comp < t_base):
            faster += 1
    return faster, len(configs)


def start_gains(runs: list[ConfigurationRow]) -> list[float]:
    """Per configuration (in config order): the starting dev score composed from tuned modules minus untuned."""
    gains = []
    for c in sorted({r.config for r in runs}):
        comp, base = _pair(runs, c)
        gains.append(comp.start_score - base.start_score)
    return gains


def faster(records: list[ComposabilityRecord]) -> Finding:
    rule = ("holds if, in most configurations, composing from tuned modules reaches the target dev score in less "
            "training time than the baseline, counting its share of the module-level tuning")
    record = records[-1]
    wins, n = faster_configs(record.tracks[CLS].runs)
    verdict = HOLDS if wins > n / 2 else FAILS
    return Finding(verdict, f"composability reaches the target first in {wins} of {n} configurations", rule,
                   record.scale)


def better_start(records: list[ComposabilityRecord]) -> Finding:
    rule = ("holds if, in most configurations, the model composed from tuned modules starts model-level fine-tuning "
            "more than 1 point above the one composed from untuned pruned modules")
    record = records[-1]
    gains = start_gains(record.tracks[CLS].runs)
    wins = sum(g > COMPARABLE for g in gains)
    verdict = HOLDS if wins > len(gains) / 2 else FAILS
    return Finding(verdict, f"starting dev score, tuned minus untuned modules: {', '.join(pts(g) for g in gains)}",
                   rule, record.scale)


def t5_faster(records: list[ComposabilityRecord]) -> Finding:
    rule = ("testable only on the seq2seq track with t5-small on Multi30K (the thesis' setting); holds if, in most "
            "configurations, composability reaches the target BLEU in less training time, tuning share counted")
    record = records[-1]
    track = record.tracks.get(S2S)
    if not track:
        return Finding(UNTESTABLE, "the record has no seq2seq track; needs the gpu profile (t5-small on Multi30K)",
                       rule, record.scale)
    if "t5-small" not in str(track.model) or track.task != "multi30k":
        return Finding(UNTESTABLE,
                       f"the seq2seq track ran {track.model} on {track.task} (dense BLEU {track.dense['score']:.1f}); "
                       "needs the gpu profile (t5-small on Multi30K)", rule, record.scale)
    wins, n = faster_configs(track.runs)
    verdict = HOLDS if wins > n / 2 else FAILS
    return Finding(verdict, f"composability reaches the target BLEU first in {wins} of {n} configurations", rule,
                   record.scale)


def _claim(text: str, source: str, check) -> Claim:
    return Claim(PAPER, text, source, COMPOSABILITY_STUDY, check, ComposabilityRecord)


FASTER = _claim("Module-level fine-tuning done once per shared module speeds up reaching the quality of each pruning "
                "configuration.", "README / thesis abstract", faster)
BETTER_START = _claim("Pre-tuned modules give each composed configuration a better starting point than untuned pruned "
                      "modules.", "README (block-level fine-tuning)", better_start)
T5_FASTER = _claim("On T5-small and Multi30K, composability reaches the target BLEU sooner.", "thesis abstract, README",
                   t5_faster)
CLAIMS: list[Claim] = [FASTER, BETTER_START, T5_FASTER]
