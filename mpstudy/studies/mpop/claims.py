"""MPOP's headline claims (Liu et al., ACL 2021) and the rules that judge them on study 01's records.

Each rule reads the last of the typed records it is given (:class:`~mpstudy.studies.mpop.record.MpopRecord`) and the
variant constants of :mod:`~mpstudy.studies.mpop.record`; the thresholds are written in the rule, next to its claim.
The quality claims decide by intervals (:func:`mpstudy.stats.band` through :func:`~mpstudy.studies.verdicts.from_band`):
paired differences on the record's dev predictions, seed by seed, so "holds" means the whole 95 % interval
is on the claim's side, one seed is always inconclusive, and a record without predictions (written before
the campaign) is "not testable". The share of trained parameters is a count and stays one.
"""
from __future__ import annotations

from typing import Any

from ...stats import band, paired_difference, score_interval
from ..verdicts import (
    COMPARABLE,
    FAILS,
    HOLDS,
    NOT_RUN,
    NO_PREDICTIONS,
    UNTESTABLE,
    Claim,
    Finding,
    diff_text,
    from_band,
    mean,
    pts,
    seeds_or_one,
)
from .record import DENSE, MPO_FULL, MPO_LIGHTWEIGHT, MPOP_STUDY, MpopRecord

__all__ = ["fewer_trained", "light_matches_full", "squeeze_removes", "on_par_with_dense", "albert_numbers",
           "MPOP_ALBERT_DEV", "RESAMPLES", "CLAIMS"]

PAPER = "liu2021mpop"

#: the paper's dev scores of MPOP on ALBERT-base-v2 that the digest could find (secondary sources, unverified)
MPOP_ALBERT_DEV = {"sst2": 0.930}

#: the bootstrap resamples of every interval a rule computes, seeded, so the same record gives the same verdict
RESAMPLES = 2000


def fewer_trained(records: list[MpopRecord]) -> Finding:
    rule = "holds if the lightweight variant trains no more than 11 % of the dense model's parameters (claim: 9 %, +2 points)"
    record = records[-1]
    dense, light = record.runs_of(DENSE)[0], record.runs_of(MPO_LIGHTWEIGHT)[0]
    share = light.trainable / dense.stored
    verdict = HOLDS if share <= 0.11 else FAILS
    return Finding(verdict, f"lightweight MPO trains {light.trainable:,} of {dense.stored:,} parameters "
                            f"({share:.1%}; {1 - share:.1%} fewer)", rule, record.scale)


def _paired(record: MpopRecord, a: str, b: str, rule: str, what: str) -> Finding:
    """The verdict on "``a`` is within 1 point of ``b``, or above": the paired difference a - b over the
    seeds both have (seed by seed) and the dev examples, against -1 point."""
    pa, pb = record.predictions(a), record.predictions(b)
    if pa is None or pb is None:
        return Finding(UNTESTABLE, f"mean {what} {mean(record.scores(a)) - mean(record.scores(b)):+.3f} over "
                                   f"{len(record.scores(a))} seed(s), but {NO_PREDICTIONS}", rule, record.scale)
    seeds = sorted(set(pa) & set(pb))
    if not seeds:
        return Finding(UNTESTABLE, f"{a} and {b} share no seed: nothing to pair", rule, record.scale)
    diff = paired_difference(record.task, seeds_or_one({s: pa[s] for s in seeds}),
                             seeds_or_one({s: pb[s] for s in seeds}), record.references, resamples=RESAMPLES)
    return from_band(band(diff, -COMPARABLE, "at least"),
                     f"{what} = {diff_text(diff)} over {len(seeds)} seed(s) (paired by {diff.paired_by})",
                     rule, record.scale)


def light_matches_full(records: list[MpopRecord]) -> Finding:
    rule = ("holds if the whole 95 % interval of the paired dev-score difference lightweight - full fine-tuning of "
            "the same MPO model (seed by seed, same examples) is above -1 point; does not hold if the whole interval "
            "is below; inconclusive otherwise or from one seed")
    return _paired(records[-1], MPO_LIGHTWEIGHT, MPO_FULL, rule, "lightweight - full MPO")


def squeeze_removes(records: list[MpopRecord]) -> Finding:
    rule = ("holds if dimension squeezing accepts at least one cut that removes parameters (a cut is accepted only if "
            "the score on held-out training rows after its short fine-tune stays within the run's tolerance) and "
            "the whole 95 % interval of the paired dev-score difference squeezed - unsqueezed (seed by seed) is above "
            "-1 point; does not hold if no cut is accepted or the whole interval is below -1 point")
    record = records[-1]
    steps = [s for s in record.squeeze if s.cut > 0]  # cut 0 is the starting point
    if not steps:
        return Finding(NOT_RUN, "no squeezing trajectory in the record", rule, record.scale)
    accepted = [s for s in steps if s.accepted]
    if not record.squeezed:  # a record from before the campaign: one trajectory, no predictions
        start = record.runs_of(MPO_LIGHTWEIGHT)[0].stored
        end = int(accepted[-1].stored) if accepted else start
        counts = f"{len(accepted)} of {len(steps)} cuts accepted; stored parameters {start:,} -> {end:,}"
        if not accepted:
            return Finding(FAILS, counts + " (nothing removed)", rule, record.scale)
        return Finding(UNTESTABLE, f"{counts}, but {NO_PREDICTIONS}", rule, record.scale)
    runs = record.squeezed
    start, end = mean([r.start_stored for r in runs]), mean([r.stored for r in runs])
    counts = (f"{sum(r.accepted for r in runs)} of {sum(r.tried for r in runs)} cuts accepted over {len(runs)} "
              f"seed(s); stored parameters {start:,.0f} -> {end:,.0f} (mean)")
    if not any(r.accepted for r in runs) or end >= start:
        return Finding(FAILS, counts + " (nothing removed)", rule, record.scale)
    if record.references is None or any(r.predictions is None or r.start_predictions is None for r in runs):
        return Finding(UNTESTABLE, f"{counts}, but {NO_PREDICTIONS}", rule, record.scale)
    diff = paired_difference(record.task, seeds_or_one({r.seed: r.predictions for r in runs}),
                             seeds_or_one({r.seed: r.start_predictions for r in runs}), record.references,
                             resamples=RESAMPLES)
    return from_band(band(diff, -COMPARABLE, "at least"), f"{counts}; squeezed - unsqueezed = {diff_text(diff)}",
                     rule, record.scale)


def on_par_with_dense(records: list[MpopRecord]) -> Finding:
    rule = ("holds if the whole 95 % interval of the paired dev-score difference MPO with lightweight fine-tuning - "
            "the fine-tuned dense model (the shared dense baselines, seed by seed, same examples) is above -1 point; "
            "does not hold if the whole interval is below; inconclusive otherwise or from one seed")
    return _paired(records[-1], MPO_LIGHTWEIGHT, DENSE, rule, "lightweight MPO - dense")


def albert_numbers(records: list[MpopRecord]) -> Finding:
    rule = ("testable only on albert-base-v2 with the full training split of a task whose paper score is known "
            f"({', '.join(f'{t} {v:.3f}' for t, v in MPOP_ALBERT_DEV.items())}); holds if the whole 95 % interval of "
            "the lightweight MPO model's dev score over seeds is above the paper's score - 1 point, does not hold if "
            "the whole interval is below")
    record = records[-1]
    params = record.parameters
    model, task = str(params.get("model")), params.get("task")
    light = record.scores(MPO_LIGHTWEIGHT)
    if "albert" not in model or params.get("max_train") is not None or task not in MPOP_ALBERT_DEV:
        return Finding(UNTESTABLE,
                       f"this record is {model} on {params.get('max_train') or 'all'} training rows of {task} "
                       f"(lightweight MPO {mean(light):.3f}); the paper's numbers need albert-base-v2 on the full "
                       "GLUE training split (the gpu profile)", rule, record.scale)
    preds = record.predictions(MPO_LIGHTWEIGHT)
    if preds is None:
        return Finding(UNTESTABLE, f"lightweight MPO {mean(light):.3f}, but {NO_PREDICTIONS}", rule, record.scale)
    score = score_interval(record.task, seeds_or_one(preds), record.references, resamples=RESAMPLES)
    paper = MPOP_ALBERT_DEV[task]
    return from_band(band(score, paper - COMPARABLE, "at least"),
                     f"lightweight MPO {score} vs the paper's {paper:.3f} on {task} ({pts(score.estimate - paper)})",
                     rule, record.scale)


def _claim(text: str, source: str, check) -> Claim:
    return Claim(PAPER, text, source, MPOP_STUDY, check, MpopRecord)


CLAIMS: list[Claim] = [
    _claim("Lightweight fine-tuning reduces the fine-tuned parameters by 91 % on average.", "abstract", fewer_trained),
    _claim("Fine-tuning only the auxiliary tensors performs comparably to fine-tuning the whole MPO model.", "abstract",
           light_matches_full),
    _claim("Dimension squeezing reduces the parameters further at little cost in quality.", "abstract",
           squeeze_removes),
    _claim("The MPO-compressed model with lightweight fine-tuning performs on par with the fine-tuned original.",
           "abstract, Tables 2-3", on_par_with_dense),
    _claim("On ALBERT-base-v2, MPOP reaches GLUE dev scores like SST-2 93.0.",
           "Tables 2-3 as quoted by secondary sources (unverified)", albert_numbers),
]
