"""MPOP's headline claims (Liu et al., ACL 2021) and the rules that judge them on study 01's records.

Each rule reads the last of the typed records it is given (:class:`~mpstudy.studies.mpop.record.MpopRecord`) and the
variant constants of :mod:`~mpstudy.studies.mpop.record`; the thresholds are written in the rule, next to its claim.
"""
from __future__ import annotations

import statistics

from ..verdicts import (
    COMPARABLE,
    FAILS,
    HOLDS,
    NOT_RUN,
    UNTESTABLE,
    Claim,
    Finding,
    mean,
    pts,
)
from .record import DENSE, MPO_FULL, MPO_LIGHTWEIGHT, MPOP_STUDY, MpopRecord

__all__ = ["fewer_trained", "light_matches_full", "squeeze_removes", "on_par_with_dense", "albert_numbers",
           "MPOP_ALBERT_DEV", "CLAIMS"]

PAPER = "liu2021mpop"

#: the paper's dev scores of MPOP on ALBERT-base-v2 that the digest could find (secondary sources, unverified)
MPOP_ALBERT_DEV = {"sst2": 0.930}


def fewer_trained(records: list[MpopRecord]) -> Finding:
    rule = "holds if the lightweight variant trains no more than 11 % of the dense model's parameters (claim: 9 %, +2 points)"
    record = records[-1]
    dense, light = record.runs_of(DENSE)[0], record.runs_of(MPO_LIGHTWEIGHT)[0]
    share = light.trainable / dense.stored
    verdict = HOLDS if share <= 0.11 else FAILS
    return Finding(verdict, f"lightweight MPO trains {light.trainable:,} of {dense.stored:,} parameters "
                            f"({share:.1%}; {1 - share:.1%} fewer)", rule, record.scale)


def light_matches_full(records: list[MpopRecord]) -> Finding:
    rule = ("holds if the mean dev score of lightweight fine-tuning is within 1 point of full fine-tuning of the same "
            "MPO model, or above it; needs 2+ seeds")
    record = records[-1]
    light, full, dense = record.scores(MPO_LIGHTWEIGHT), record.scores(MPO_FULL), record.scores(DENSE)
    if len(light) < 2:
        return Finding(UNTESTABLE, f"one seed: lightweight {light[0]:.3f}, full {full[0]:.3f}", rule, record.scale)
    verdict = HOLDS if mean(light) >= mean(full) - 0.01 else FAILS
    return Finding(verdict, f"lightweight {mean(light):.3f} (sd {statistics.stdev(light):.3f}) vs full {mean(full):.3f}, "
                            f"dense {mean(dense):.3f}, over {len(light)} seeds", rule, record.scale)


def squeeze_removes(records: list[MpopRecord]) -> Finding:
    rule = ("holds if dimension squeezing accepts at least one cut that removes parameters (a cut is accepted only "
            "if the dev score after its short fine-tune stays within the run's tolerance of the score before)")
    record = records[-1]
    steps = [s for s in record.squeeze if s.cut > 0]  # cut 0 is the starting point
    accepted = [s for s in steps if s.accepted]
    if not steps:
        return Finding(NOT_RUN, "no squeezing trajectory in the record", rule, record.scale)
    start = record.runs_of(MPO_LIGHTWEIGHT)[0].stored
    end = int(accepted[-1].stored) if accepted else start
    verdict = HOLDS if accepted and end < start else FAILS
    return Finding(verdict, f"{len(accepted)} of {len(steps)} cuts accepted; stored parameters {start:,} -> {end:,} "
                            f"({start - end:,} fewer)", rule, record.scale)


def on_par_with_dense(records: list[MpopRecord]) -> Finding:
    rule = ("holds if the mean dev score of the MPO model with lightweight fine-tuning is within 1 point of the dense "
            "model fine-tuned by the same recipe, or above it; needs 2+ seeds")
    record = records[-1]
    light, dense = record.scores(MPO_LIGHTWEIGHT), record.scores(DENSE)
    if len(light) < 2:
        return Finding(UNTESTABLE, f"one seed: lightweight {light[0]:.3f}, dense {dense[0]:.3f}", rule, record.scale)
    gap = mean(light) - mean(dense)
    verdict = HOLDS if gap >= -COMPARABLE else FAILS
    return Finding(verdict, f"lightweight MPO {mean(light):.3f} vs dense {mean(dense):.3f} ({pts(gap)}) over "
                            f"{len(light)} seeds", rule, record.scale)


def albert_numbers(records: list[MpopRecord]) -> Finding:
    rule = ("testable only on albert-base-v2 with the full training split of a task whose paper score is known "
            f"({', '.join(f'{t} {v:.3f}' for t, v in MPOP_ALBERT_DEV.items())}); holds if the lightweight MPO model's "
            "mean dev score is within 1 point of it")
    record = records[-1]
    params = record.parameters
    model, task = str(params.get("model")), params.get("task")
    light = record.scores(MPO_LIGHTWEIGHT)
    if "albert" not in model or params.get("max_train") is not None or task not in MPOP_ALBERT_DEV:
        return Finding(UNTESTABLE,
                       f"this record is {model} on {params.get('max_train') or 'all'} training rows of {task} "
                       f"(lightweight MPO {mean(light):.3f}); the paper's numbers need albert-base-v2 on the full "
                       "GLUE training split (the gpu profile)", rule, record.scale)
    gap = mean(light) - MPOP_ALBERT_DEV[task]
    verdict = HOLDS if gap >= -COMPARABLE else FAILS
    return Finding(verdict, f"lightweight MPO {mean(light):.3f} vs the paper's {MPOP_ALBERT_DEV[task]:.3f} on {task} "
                            f"({pts(gap)})", rule, record.scale)


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
