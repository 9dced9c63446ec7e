"""The claims of the composable-pruning thesis (UMass Amherst, 2023) and the rules that judge them on
study 05's typed records (:class:`~mpstudy.studies.composability.record.ComposabilityRecord`).

The rules decide by intervals: the time to the target is compared paired by seed (composability minus
baseline, module-level tuning share counted; :func:`seed_difference`, the t interval over seeds) in each
configuration, the starting scores paired by seed and dev example (:func:`mpstudy.stats.paired_difference`
on the recorded predictions), each configuration judged by :func:`mpstudy.stats.band`; a claim holds when
most configurations hold, does not hold when most do not, and is inconclusive otherwise. A record from
before the campaign (one seed, no predictions) is "not testable".
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any

from scipy.special import stdtrit

from ...stats import Interval, band, paired_difference
from ..verdicts import COMPARABLE, FAILS, HOLDS, INCONCLUSIVE, UNTESTABLE, Claim, Finding, pts
from .record import (
    BASELINE,
    CLS,
    COMPOSABILITY,
    COMPOSABILITY_STUDY,
    S2S,
    ComposabilityRecord,
    ConfigurationRow,
)

__all__ = ["seed_difference", "time_verdicts", "start_verdicts", "faster", "better_start", "t5_faster", "FASTER",
           "BETTER_START", "T5_FASTER", "CLAIMS", "RESAMPLES"]

PAPER = "composability2023"
#: bootstrap resamples of every interval a rule computes (seeded, so the same record gives the same verdict)
RESAMPLES = 2000
_OLD = ("this record holds one run per configuration and arm without seeds or predictions (written before the "
        "campaign), so the comparison has no interval; re-run the cpu profile")


def seed_difference(values: Mapping[Any, float], level: float = 0.95) -> Interval:
    """The mean of per-seed paired differences (``seed -> a_s - b_s``) with its t interval over the seeds
    (k - 1 degrees of freedom); one seed gives an unbounded interval with ``seeds=1`` (no verdict)."""
    xs = [float(v) for v in values.values()]
    if not xs:
        raise ValueError("seed_difference needs at least one seed's difference")
    k, estimate = len(xs), statistics.fmean(xs)
    if k == 1:
        return Interval(estimate, -math.inf, math.inf, level, 1, 1, math.nan, math.inf, "one seed: no spread")
    se = statistics.stdev(xs) / math.sqrt(k)
    half = float(stdtrit(k - 1, 0.5 + level / 2)) * se
    return Interval(estimate, estimate - half, estimate + half, level, k, k, se, float(k - 1),
                    f"t interval of {k} per-seed paired differences (df {k - 1})")


def _seeded(runs: list[ConfigurationRow]) -> bool:
    return bool(runs) and all(r.seed is not None for r in runs)


def _arms(runs: list[ConfigurationRow], config: int) -> tuple[dict[int, ConfigurationRow], dict[int, ConfigurationRow]]:
    comp = {r.seed: r for r in runs if r.config == config and r.arm == COMPOSABILITY}
    base = {r.seed: r for r in runs if r.config == config and r.arm == BASELINE}
    return comp, base


def time_verdicts(runs: list[ConfigurationRow]) -> list[dict[str, Any]]:
    """Per configuration: the paired difference composability - baseline of the seconds to the target, tuning
    share counted (``censored_s``: a run that did not reach the target counts its whole budget, a lower bound
    of its time), its interval over seeds, and the verdict on "composability is sooner" (the whole interval
    below 0). A censored composability run makes "holds" unsafe and a censored baseline "does not hold":
    those read inconclusive, as does a configuration where neither arm reached the target.

    Returns ``[{"config", "seeds", "comp_reached", "base_reached", "diff" (Interval), "diff_steps" (mean
    per-seed difference of steps, a non-reached run counting its budget), "verdict", "reason"}]``.
    """
    out = []
    for c in sorted({r.config for r in runs}):
        comp, base = _arms(runs, c)
        seeds = sorted(set(comp) & set(base))
        diff = seed_difference({s: comp[s].censored_s - base[s].censored_s for s in seeds})
        steps = [(comp[s].steps_to_target if comp[s].reached else comp[s].steps)
                 - (base[s].steps_to_target if base[s].reached else base[s].steps) for s in seeds]
        judged = band(diff, 0.0, "at most")
        verdict, reason = judged.verdict, judged.reason
        comp_hit, base_hit = sum(bool(comp[s].reached) for s in seeds), sum(bool(base[s].reached) for s in seeds)
        if comp_hit == 0 and base_hit == 0:
            verdict, reason = INCONCLUSIVE, "neither arm reached the target within the budget"
        elif verdict == HOLDS and comp_hit < len(seeds):
            verdict, reason = INCONCLUSIVE, "composability missed the target in some seed: its time is a lower bound"
        elif verdict == FAILS and base_hit < len(seeds):
            verdict, reason = INCONCLUSIVE, "the baseline missed the target in some seed: its time is a lower bound"
        out.append({"config": c, "seeds": len(seeds), "comp_reached": comp_hit, "base_reached": base_hit,
                    "diff": diff, "diff_steps": statistics.fmean(steps) if steps else math.nan,
                    "verdict": verdict, "reason": reason})
    return out


def start_verdicts(runs: list[ConfigurationRow], task: str, references: list,
                   resamples: int = RESAMPLES) -> list[dict[str, Any]]:
    """Per configuration: the paired difference (seed by seed, same dev examples) of the score as composed,
    tuned minus untuned modules, and the verdict on "more than 1 point above" (:func:`mpstudy.stats.band`)."""
    out = []
    for c in sorted({r.config for r in runs}):
        comp, base = _arms(runs, c)
        seeds = sorted(set(comp) & set(base))
        a = {s: comp[s].start_predictions for s in seeds}
        b = {s: base[s].start_predictions for s in seeds}
        diff = paired_difference(task, a if len(seeds) > 1 else a[seeds[0]], b if len(seeds) > 1 else b[seeds[0]],
                                 references, resamples=resamples)
        judged = band(diff, COMPARABLE, "at least")
        out.append({"config": c, "seeds": len(seeds), "diff": diff, "verdict": judged.verdict, "reason": judged.reason})
    return out


def _majority(verdicts: list[str]) -> str:
    n = len(verdicts)
    if sum(v == HOLDS for v in verdicts) > n / 2:
        return HOLDS
    if sum(v == FAILS for v in verdicts) > n / 2:
        return FAILS
    return INCONCLUSIVE


def _interval(x: Interval) -> str:
    return f"{x.estimate:+.0f} s [{x.low:+.0f}, {x.high:+.0f}]"


def _faster_on(record: ComposabilityRecord, track: str, rule: str, what: str) -> Finding:
    runs = record.tracks[track].runs
    if not _seeded(runs) or any(r.censored_s is None for r in runs):
        return Finding(UNTESTABLE, _OLD, rule, record.scale)
    per = time_verdicts(runs)
    verdict = _majority([p["verdict"] for p in per])
    measured = "; ".join(f"config {p['config']}: composability - baseline {_interval(p['diff'])} over {p['seeds']} "
                         f"seed(s), {p['diff_steps']:+.0f} steps ({p['verdict']})" for p in per)
    return Finding(verdict, f"{what}: {measured}", rule, record.scale)


def faster(records: list[ComposabilityRecord]) -> Finding:
    rule = ("per configuration, the paired (by seed) difference composability - baseline of the training seconds to "
            "the target dev score, composability's share of the module-level tuning counted: the configuration holds "
            "if its whole 95 % interval is below 0, does not hold if the whole interval is above; the claim holds if "
            "most configurations hold, does not hold if most do not, inconclusive otherwise or from one seed")
    return _faster_on(records[-1], CLS, rule, "time to the target")


def better_start(records: list[ComposabilityRecord]) -> Finding:
    rule = ("per configuration, the paired (by seed and dev example) difference of the dev score as composed, "
            "tuned minus untuned modules: the configuration holds if its whole 95 % interval is above +1 point, does "
            "not hold if the whole interval is below; the claim holds if most configurations hold, does not hold if "
            "most do not, inconclusive otherwise or from one seed")
    record = records[-1]
    track = record.tracks[CLS]
    runs = track.runs
    if not _seeded(runs) or track.references is None or any(r.start_predictions is None for r in runs):
        return Finding(UNTESTABLE, _OLD, rule, record.scale)
    per = start_verdicts(runs, track.task, track.references)
    verdict = _majority([p["verdict"] for p in per])
    measured = "; ".join(f"config {p['config']}: {pts(p['diff'].estimate)} [{pts(p['diff'].low)}, "
                         f"{pts(p['diff'].high)}] over {p['seeds']} seed(s) ({p['verdict']})" for p in per)
    return Finding(verdict, f"starting dev score, tuned minus untuned modules: {measured}", rule, record.scale)


def t5_faster(records: list[ComposabilityRecord]) -> Finding:
    rule = ("testable on the seq2seq track with a T5 translating Multi30K (the thesis: t5-small; here also the T5 "
            "trained from scratch on it); judged as the classification claim, on the dev BLEU along the way")
    record = records[-1]
    track = record.tracks.get(S2S)
    if not track:
        return Finding(UNTESTABLE, "the record has no seq2seq track; needs a T5 on Multi30K (t5-small, or the T5 "
                                   "trained from scratch)", rule, record.scale)
    if track.task != "multi30k" or "t5" not in str(track.model):
        score = (track.dense or {}).get("score")
        return Finding(UNTESTABLE,
                       f"the seq2seq track ran {track.model} on {track.task}"
                       + (f" (teacher BLEU {score:.1f})" if score is not None else "")
                       + "; needs a T5 on Multi30K (t5-small, or the T5 trained from scratch)", rule, record.scale)
    return _faster_on(record, S2S, rule, "time to the target BLEU")


def _claim(text: str, source: str, check) -> Claim:
    return Claim(PAPER, text, source, COMPOSABILITY_STUDY, check, ComposabilityRecord)


FASTER = _claim("Module-level fine-tuning done once per shared module speeds up reaching the quality of each pruning "
                "configuration.", "README / thesis abstract", faster)
BETTER_START = _claim("Pre-tuned modules give each composed configuration a better starting point than untuned pruned "
                      "modules.", "README (block-level fine-tuning)", better_start)
T5_FASTER = _claim("On T5-small and Multi30K, composability reaches the target BLEU sooner.", "thesis abstract, README",
                   t5_faster)
CLAIMS: list[Claim] = [FASTER, BETTER_START, T5_FASTER]
