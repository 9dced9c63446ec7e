"""LoBERT's claims (Park et al., 2021; a code release without published results) and the rules that
judge them on study 02's typed records (:class:`~mpstudy.studies.lobert.record.LobertRecord`).

The quality claims decide by intervals (:func:`mpstudy.stats.band` through
:func:`~mpstudy.studies.verdicts.from_band`) on the record's dev predictions: each student against its
teacher (the dense baseline of the same seed), KD + PKD against KD alone (same mode, paired by seed), so
"holds" means the whole 95 % interval is on the claim's side, one seed is always inconclusive, and a
record without predictions (written before the campaign) is "not testable". The kept fraction is a count.
"""
from __future__ import annotations

from typing import Any

from ...stats import band, paired_difference
from ..verdicts import (
    BEATS,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    MINIMAL_LOSS,
    NO_PREDICTIONS,
    UNTESTABLE,
    Claim,
    Finding,
    diff_text,
    pts,
    seeds_or_one,
)
from .record import (
    DEFAULT_BUDGET,
    DENSE,
    KD,
    KD_PKD,
    LOBERT_STUDY,
    LOSS_ABLATION,
    MAIN,
    SVD_FIT,
    LobertRecord,
)

__all__ = ["half_kept", "keeps_quality", "pkd_helps", "RESAMPLES", "CLAIMS"]

PAPER = "park2021lobert"
DEMO_MODE = "self_svd"  #: the mode of LoBERT's README demo
#: the bootstrap resamples of every interval a rule computes, seeded, so the same record gives the same verdict
RESAMPLES = 2000


def _tally(verdicts: dict[str, str], half: bool = False) -> str:
    """Most cells hold (``half``: at least half): holds; most do not hold: does not hold; otherwise inconclusive."""
    n = len(verdicts)
    holding = sum(v == HOLDS for v in verdicts.values())
    if holding > n / 2 or (half and holding >= n / 2):
        return HOLDS
    if sum(v == FAILS for v in verdicts.values()) > n / 2:
        return FAILS
    return INCONCLUSIVE


def half_kept(records: list[LobertRecord]) -> Finding:
    rule = ("holds if the demo's student (self_svd at its default budget) keeps between 45 % and 55 % of the weights "
            "it replaces (the claim: 'compression rate is 50 % by default'); the whole model's ratio is reported "
            "beside")
    record = records[-1]
    rows = [d for d in record.decompositions if d.mode == DEMO_MODE and d.budget == DEFAULT_BUDGET and d.fit == SVD_FIT]
    if not rows:
        return Finding(UNTESTABLE, "the record has no self_svd student at the default budget", rule, record.scale)
    kept, whole = rows[0].kept, rows[0].param_ratio
    verdict = HOLDS if 0.45 <= kept <= 0.55 else FAILS
    return Finding(verdict, f"self_svd keeps {kept:.1%} of the query/key/value weights, {whole:.1%} of the whole "
                            "model's stored parameters", rule, record.scale)


def keeps_quality(records: list[LobertRecord]) -> Finding:
    rule = ("per student mode of the main grid (KD + PKD, factorized from the pre-trained model): the 95 % interval "
            "of the paired dev-score difference student - teacher (the dense baseline of each seed, same examples) "
            "against -2 points; holds if at least half of the modes hold (whole interval above), does not hold if most "
            "do not (whole interval below; a collapsed student does not hold), inconclusive otherwise or from one seed")
    record = records[-1]
    main = [r for r in record.main_runs() if r.mode != DENSE]
    if not main:
        return Finding(UNTESTABLE, "the record has no factorized student in its main grid", rule, record.scale)
    teacher = record.teacher_predictions()
    cells = {}
    for r in main:
        cells.setdefault((r.mode, r.budget), []).append(r)
    preds = {cell: record.run_predictions(runs) for cell, runs in cells.items()}
    if teacher is None or any(p is None for p in preds.values()):
        return Finding(UNTESTABLE, NO_PREDICTIONS, rule, record.scale)
    verdicts, parts = {}, []
    for (mode, budget), p in preds.items():
        seeds = sorted(set(p) & set(teacher))
        if not seeds:
            return Finding(UNTESTABLE, f"{mode} shares no seed with the teacher: nothing to pair", rule, record.scale)
        diff = paired_difference(record.task, seeds_or_one({s: p[s] for s in seeds}),
                                 seeds_or_one({s: teacher[s] for s in seeds}), record.references, resamples=RESAMPLES)
        verdicts[mode] = band(diff, -MINIMAL_LOSS, "at least").verdict
        label = f"{mode}" + ("" if budget == DEFAULT_BUDGET else f" ({budget})")
        down = " (collapsed)" if any(r.collapsed for r in cells[(mode, budget)]) else ""
        parts.append(f"{label}{down} {diff_text(diff)} over {len(seeds)} seed(s): {verdicts[mode]}")
    measured = "student - teacher: " + "; ".join(parts)
    return Finding(_tally(verdicts, half=True), measured, rule, record.scale)


def pkd_helps(records: list[LobertRecord]) -> Finding:
    rule = ("per ablation mode: the 95 % interval of the paired dev-score difference KD + PKD - KD alone (same mode, "
            "budget and start, seed by seed, same examples) against +0.5 points; holds if most modes hold (whole "
            "interval above), does not hold if most do not (whole interval below), inconclusive otherwise or from "
            "one seed")
    record = records[-1]
    kd = [r for r in record.runs if r.part == LOSS_ABLATION and r.loss == KD]
    if not kd:
        return Finding(UNTESTABLE, "the record has no KD-only student (the PKD ablation was not run)", rule,
                       record.scale)
    verdicts, parts = {}, []
    for mode, budget in dict.fromkeys((r.mode, r.budget) for r in kd):
        alone = record.run_predictions([r for r in kd if (r.mode, r.budget) == (mode, budget)])
        with_pkd = record.run_predictions([r for r in record.runs if r.part == MAIN and r.loss == KD_PKD
                                           and (r.mode, r.budget) == (mode, budget) and r.fit == SVD_FIT])
        if alone is None or with_pkd is None or record.references is None:
            return Finding(UNTESTABLE, NO_PREDICTIONS, rule, record.scale)
        seeds = sorted(set(alone) & set(with_pkd))
        if not seeds:
            return Finding(UNTESTABLE, f"{mode}: KD and KD + PKD share no seed", rule, record.scale)
        diff = paired_difference(record.task, seeds_or_one({s: with_pkd[s] for s in seeds}),
                                 seeds_or_one({s: alone[s] for s in seeds}), record.references, resamples=RESAMPLES)
        verdicts[mode] = band(diff, BEATS, "at least").verdict
        parts.append(f"{mode} {diff_text(diff)} over {len(seeds)} seed(s): {verdicts[mode]}")
    return Finding(_tally(verdicts), "KD + PKD - KD: " + "; ".join(parts), rule, record.scale)


def _claim(text: str, source: str, check) -> Claim:
    return Claim(PAPER, text, source, LOBERT_STUDY, check, LobertRecord)


CLAIMS: list[Claim] = [
    _claim("The default compression rate is 50 %.", "README (demo)", half_kept),
    _claim("Low-rank factorized students (SVD, Tucker, FALCON) trained with KD + PKD keep their teacher's quality.",
           "README (the project's premise; no results published)", keeps_quality),
    _claim("The patience loss (PKD) helps the factorized student beyond KD.",
           "code (PKD-based training; no results published)", pkd_helps),
]
