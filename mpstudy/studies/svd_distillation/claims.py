"""The claims of Noach & Goldberg (2020, SVD + feature distillation + KD) and of Hsu et al. (2022,
Fisher-weighted SVD), and the rules that judge them on study 03's typed records
(:class:`~mpstudy.studies.svd_distillation.record.SvdDistillRecord`).

Since the campaign (issue 19) every rule that compares scores decides by the 95 % interval of a paired
difference on the record's predictions (:func:`mpstudy.stats.paired_difference`, seed by seed, same dev
examples; BLEU as a whole-corpus metric of each resample of test sentences) through
:func:`mpstudy.stats.band`; a record without predictions (written before the campaign) is "not testable".
The speed-up is read from the latency curve as before."""
from __future__ import annotations

from typing import Any

from ...stats import band, paired_difference
from ..verdicts import (
    BEATS,
    COMPARABLE,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    MINIMAL_LOSS,
    UNTESTABLE,
    Claim,
    Finding,
    from_band,
    mean,
    pts,
)
from .record import (
    FD_KD,
    FWSVD,
    KD_ONLY,
    NO_RECOVERY,
    ORIGINAL,
    SVD,
    SVD_STUDY,
    SvdDistillRecord,
)

__all__ = ["recovery_means", "minimal_loss", "speedup", "fd_then_kd", "seq2seq_bleu", "fwsvd_untrained",
           "fwsvd_after_recovery", "fwsvd_compact", "COMPACT_PARAMS", "RESAMPLES", "CLAIMS"]

NOACH, HSU = "noach2020", "hsu2022fwsvd"
COMPACT_PARAMS = 30_000_000  #: a model below this many stored parameters counts as "already compact" (BERT-base — 110M)


def recovery_means(record: SvdDistillRecord) -> tuple[dict[tuple[str, str], float], int]:
    """Mean score per (method, plan) of the recovery grid at the budget, and the number of seeds."""
    cells = dict.fromkeys((r.method, r.plan) for r in record.grid)
    means = {c: mean([r.score for r in record.grid if (r.method, r.plan) == c]) for c in cells}
    trained = [r for r in record.grid if r.plan != NO_RECOVERY]
    return means, len({r.seed for r in trained})


RESAMPLES = 2000  #: the bootstrap resamples of every interval a rule computes (seeded, so the same record gives the same verdict)

_NO_PREDICTIONS = ("this record holds no predictions (written before the campaign recorded them), so the "
                   "difference has no interval; re-run the cpu profile")


def _one(preds: dict) -> Any:
    """What :mod:`mpstudy.stats` takes: the seed mapping with 2+ seeds, the one list with one seed."""
    return preds if len(preds) > 1 else next(iter(preds.values()))


def _interval(diff, scale: float = 100.0, unit: str = "pts") -> str:
    return f"{scale * diff.estimate:+.1f} [{scale * diff.low:+.1f}, {scale * diff.high:+.1f}] {unit}"


def _paired(record: SvdDistillRecord, a: dict | None, b: dict | None, threshold: float, rule: str, what: str,
            fallback: str) -> Finding:
    """The verdict on ``a - b >= threshold`` from the paired difference over the seeds both have (seed by
    seed) and the dev examples; "not testable" when either side has no predictions."""
    if a is None or b is None:
        return Finding(UNTESTABLE, f"{fallback}, but {_NO_PREDICTIONS}", rule, record.scale)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return Finding(UNTESTABLE, f"{what}: the two sides share no seed", rule, record.scale)
    diff = paired_difference(record.task, _one({s: a[s] for s in seeds}), _one({s: b[s] for s in seeds}),
                             record.references, resamples=RESAMPLES)
    return from_band(band(diff, threshold, "at least"),
                     f"{what} = {_interval(diff)} over {len(seeds)} seed(s) (paired by {diff.paired_by})",
                     rule, record.scale)


def minimal_loss(records: list[SvdDistillRecord]) -> Finding:
    rule = ("holds if the whole 95 % interval of the paired dev-score difference SVD + FD + KD - the dense original "
            "(its own dense model seed by seed, same examples) is above -2 points; does not hold if the whole "
            "interval is below; inconclusive otherwise or from one seed")
    record = records[-1]
    means, _ = recovery_means(record)
    ours, paper = record.our_budget, record.paper_budget
    budget = (f"rank {ours.rank} keeps {ours.targeted_kept:.1%} of the factorized weights, {ours.whole_kept:.1%} of "
              f"the model (the paper's r = {paper.rank}: {paper.targeted_kept:.1%} and {paper.whole_kept:.1%} of "
              "BERT-base)")
    fallback = (f"mean SVD + FD + KD {means.get((SVD, FD_KD), float('nan')):.3f} vs original "
                f"{record.original_score():.3f}; {budget}")
    finding = _paired(record, record.predictions(SVD, FD_KD), record.dense_predictions(), -MINIMAL_LOSS, rule,
                      "SVD + FD + KD - dense", fallback)
    if finding.verdict == UNTESTABLE:
        return finding
    return Finding(finding.verdict, f"{finding.measured}; {budget}", rule, record.scale, finding.interval,
                   finding.detectable)


def speedup(records: list[SvdDistillRecord]) -> Finding:
    rule = ("holds if the factorized model, at the paper's kept fraction of the factorized weights (linearly "
            "interpolated between the measured ranks), runs at least 1.3x as fast as the original (the claimed 1.45x "
            "less 10 % for timing noise)")
    record = records[-1]
    target = record.paper_budget.targeted_kept
    curve = sorted(record.latency, key=lambda r: r.kept_fraction)
    kept = [r.kept_fraction for r in curve]
    if len(curve) < 2 or not kept[0] <= target <= kept[-1]:
        span = f"{kept[0]:.2f}..{kept[-1]:.2f}" if curve else "nothing"
        return Finding(UNTESTABLE, f"the latency curve spans kept fractions {span}, not the paper's {target:.2f}", rule,
                       record.scale)
    i = next(k for k in range(1, len(curve)) if kept[k] >= target) if target > kept[0] else 1
    lo, hi = curve[i - 1], curve[i]
    w = (target - lo.kept_fraction) / (hi.kept_fraction - lo.kept_fraction)
    ratio = lo.speedup + w * (hi.speedup - lo.speedup)
    verdict = HOLDS if ratio >= 1.45 * 0.9 else FAILS
    return Finding(verdict, f"{ratio:.2f}x at kept {target:.2f} (between rank {lo.rank}: {lo.speedup:.2f}x and "
                            f"rank {hi.rank}: {hi.speedup:.2f}x); claimed 1.45x", rule, record.scale)


def fd_then_kd(records: list[SvdDistillRecord]) -> Finding:
    rule = ("holds if, for plain SVD at the budget, the whole 95 % interval of the paired dev-score difference FD then "
            "KD - KD alone (same seed: same factorized model, same training rows; same examples) is above 0; does not "
            "hold if it is below; inconclusive otherwise or from one seed (FD then KD trains twice the steps)")
    record = records[-1]
    means, _ = recovery_means(record)
    fallback = (f"means FD then KD {means.get((SVD, FD_KD), float('nan')):.3f} vs KD "
                f"{means.get((SVD, KD_ONLY), float('nan')):.3f}")
    return _paired(record, record.predictions(SVD, FD_KD), record.predictions(SVD, KD_ONLY), BEATS, rule,
                   "SVD: FD then KD - KD alone", fallback)


def seq2seq_bleu(records: list[SvdDistillRecord]) -> Finding:
    rule = ("testable only with test-set translations of a trained encoder-decoder (not a tiny random-init model); "
            "holds if the whole 95 % interval of the paired BLEU difference FD then KD - the original (whole-corpus "
            "BLEU of each resample of sentences, each recovery seed paired with the one teacher) is above -1 BLEU "
            "point; does not hold if the whole interval is below; inconclusive otherwise or from one seed")
    record = records[-1]
    params, s2s = record.parameters, record.seq2seq
    model, task = str(params.get("s2s_model", params.get("s2s_model_name"))), params.get("s2s_task",
                                                                                          params.get("s2s_task_name"))
    rows = s2s.rows
    if not rows or model.startswith("tiny-"):
        probe = s2s.probe or {}
        timing = (f"; one training epoch would take {probe['epoch_seconds']:.0f} s here" if probe.get("epoch_seconds")
                  else "")
        return Finding(UNTESTABLE, f"seq2seq on {model} / {task}: {len(rows)} BLEU rows{timing}; needs a trained "
                                   "encoder-decoder", rule, record.scale)
    bleu = {}
    for r in rows:
        bleu.setdefault(r.plan, []).append(r.bleu)
    summary = ", ".join(f"{p} {mean(v):.1f}" for p, v in bleu.items())
    original, recovered = s2s.predictions(ORIGINAL), s2s.predictions(FD_KD)
    if original is None or recovered is None or not isinstance(recovered, dict):
        return Finding(UNTESTABLE, f"{model} on {task}: BLEU {summary}, but {_NO_PREDICTIONS}", rule, record.scale)
    seeds = sorted(recovered)
    diff = paired_difference(s2s.task or str(task), _one(recovered), _one({s: original for s in seeds}),
                             s2s.references, metric="bleu", resamples=RESAMPLES)
    return from_band(band(diff, -1.0, "at least"), f"{model} on {task}: BLEU {summary}; FD then KD - original = "
                     f"{_interval(diff, 1.0, 'BLEU')} over {len(seeds)} recovery seed(s)", rule, record.scale)


def fwsvd_untrained(records: list[SvdDistillRecord]) -> Finding:
    rule = ("holds if, without any training, the whole 95 % interval of the paired dev-score difference FWSVD - plain "
            "SVD at the same rank (seed by seed, same examples) is above +0.5 points at most of the budgets swept; does "
            "not hold if it is below at most of them; inconclusive otherwise")
    record = records[-1]
    sweep = [r for r in record.sweep if r.plan == NO_RECOVERY]
    keys = sorted({(r.keep, r.rank) for r in sweep}, key=lambda k: -(k[1] or 0))
    if record.references is None or any(r.predictions is None for r in sweep) or not sweep:
        score = {(r.method, r.rank): r.score for r in sweep}
        diffs = [score.get((FWSVD, k), float("nan")) - score.get((SVD, k), float("nan")) for _, k in keys]
        return Finding(UNTESTABLE, f"FWSVD minus SVD, untrained, at ranks {', '.join(str(k) for _, k in keys)}: "
                                   f"{', '.join(pts(d) for d in diffs)}, but {_NO_PREDICTIONS}", rule, record.scale)
    verdicts, parts = [], []
    for keep, rank in keys:
        side = {m: {int(r.seed): r.predictions for r in sweep if (r.method, r.keep, r.rank) == (m, keep, rank)}
                for m in (FWSVD, SVD)}
        seeds = sorted(set(side[FWSVD]) & set(side[SVD]))
        if not seeds:
            continue
        diff = paired_difference(record.task, _one({s: side[FWSVD][s] for s in seeds}),
                                 _one({s: side[SVD][s] for s in seeds}), record.references, resamples=RESAMPLES)
        verdicts.append(band(diff, BEATS, "at least").verdict)
        parts.append(f"rank {rank}: {_interval(diff)}")
    n = len(verdicts)
    verdict = (HOLDS if verdicts.count(HOLDS) > n / 2 else FAILS if verdicts.count(FAILS) > n / 2 else INCONCLUSIVE)
    return Finding(verdict, f"FWSVD - SVD, untrained: {'; '.join(parts)} ({verdicts.count(HOLDS)} of {n} above +0.5 pts, "
                            f"{verdicts.count(FAILS)} below)", rule, record.scale)


def fwsvd_after_recovery(records: list[SvdDistillRecord]) -> Finding:
    rule = ("holds if, after FD then KD at the budget, the whole 95 % interval of the paired dev-score difference "
            "FWSVD - plain SVD (seed by seed, same examples) is above +0.5 points; does not hold if it is below; "
            "inconclusive otherwise or from one seed")
    record = records[-1]
    means, _ = recovery_means(record)
    fallback = (f"means FWSVD {means.get((FWSVD, FD_KD), float('nan')):.3f} vs SVD "
                f"{means.get((SVD, FD_KD), float('nan')):.3f}")
    return _paired(record, record.predictions(FWSVD, FD_KD), record.predictions(SVD, FD_KD), BEATS, rule,
                   "FD then KD: FWSVD - SVD", fallback)


def fwsvd_compact(records: list[SvdDistillRecord]) -> Finding:
    rule = ("testable on an already compact model (< 30M stored parameters) whose FWSVD + FD + KD cell removes at "
            "least 9 % of its parameters; holds if the whole 95 % interval of the paired dev-score difference "
            "FWSVD + FD + KD - dense (seed by seed, same examples) is above -1 point; does not hold if it is below; "
            "inconclusive otherwise or from one seed")
    record = records[-1]
    dense = record.baseline["params"]["stored"]
    if dense >= COMPACT_PARAMS:
        return Finding(UNTESTABLE, f"{record.parameters.get('model')} has {dense / 1e6:.0f}M parameters: not a compact "
                       "model (the cpu profile's all-MiniLM-L6-v2, 23M, is)", rule, record.scale)
    rows = [r for r in record.grid if (r.method, r.plan) == (FWSVD, FD_KD)]
    if not rows or rows[0].model_params is None:
        return Finding(UNTESTABLE, "no FWSVD + FD + KD cell in the record", rule, record.scale)
    cut = 1 - rows[0].model_params / dense
    if cut < 0.09:
        return Finding(UNTESTABLE, f"the FWSVD + FD + KD cell removes {cut:.1%} of the parameters, less than the "
                                   "claim's 9 %", rule, record.scale)
    fallback = f"FWSVD + FD + KD {mean([r.score for r in rows]):.3f} vs original {record.original_score():.3f}"
    finding = _paired(record, record.predictions(FWSVD, FD_KD), record.dense_predictions(), -COMPARABLE, rule,
                      f"{cut:.0%} fewer parameters ({dense / 1e6:.1f}M dense): FWSVD + FD + KD - dense", fallback)
    return finding


def _claim(paper: str, text: str, source: str, check) -> Claim:
    return Claim(paper, text, source, SVD_STUDY, check, SvdDistillRecord)


CLAIMS: list[Claim] = [
    _claim(NOACH, "SVD followed by feature distillation and KD shrinks the model (0.4x fewer parameters) with "
           "minimal loss in metric performance.", "abstract", minimal_loss),
    _claim(NOACH, "The factorized model is 1.45x faster at inference.", "abstract", speedup),
    _claim(NOACH, "Feature distillation before KD recovers more than KD alone.", "abstract (the two-stage recipe)",
           fd_then_kd),
    _claim(NOACH, "The recipe compresses an encoder-decoder translation model (the port's MarianMT) with little "
           "BLEU loss.", "the kene111/matrix-decomposition port (not the paper)", seq2seq_bleu),
    _claim(HSU, "Fisher-weighted SVD keeps the task accuracy much closer to the original than plain SVD.",
           "abstract (before fine-tuning)", fwsvd_untrained),
    _claim(HSU, "FWSVD's advantage over SVD persists after recovery training.", "abstract", fwsvd_after_recovery),
    _claim(HSU, "An already compact model loses 9 % to 30 % of its parameters with an insignificant impact "
           "on accuracy.", "abstract", fwsvd_compact),
]
