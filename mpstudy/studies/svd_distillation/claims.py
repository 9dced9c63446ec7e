"""The claims of Noach & Goldberg (2020, SVD + feature distillation + KD) and of Hsu et al. (2022,
Fisher-weighted SVD), and the rules that judge them on study 03's typed records
(:class:`~mpstudy.studies.svd_distillation.record.SvdDistillRecord`)."""
from __future__ import annotations

from ..verdicts import (
    BEATS,
    COMPARABLE,
    FAILS,
    HOLDS,
    MINIMAL_LOSS,
    UNTESTABLE,
    Claim,
    Finding,
    mean,
    pts,
)
from .record import (
    FD_KD,
    FD_ONLY,
    FWSVD,
    KD_ONLY,
    NO_RECOVERY,
    ORIGINAL,
    SVD,
    SVD_STUDY,
    SvdDistillRecord,
)

__all__ = ["recovery_means", "minimal_loss", "speedup", "fd_then_kd", "seq2seq_bleu", "fwsvd_untrained",
           "fwsvd_after_recovery", "fwsvd_compact", "COMPACT_PARAMS", "CLAIMS"]

NOACH, HSU = "noach2020", "hsu2022fwsvd"
COMPACT_PARAMS = 30_000_000  #: a model below this many stored parameters counts as "already compact" (BERT-base — 110M)


def recovery_means(record: SvdDistillRecord) -> tuple[dict[tuple[str, str], float], int]:
    """Mean score per (method, plan) of the recovery grid at the budget, and the number of seeds."""
    cells = dict.fromkeys((r.method, r.plan) for r in record.grid)
    means = {c: mean([r.score for r in record.grid if (r.method, r.plan) == c]) for c in cells}
    trained = [r for r in record.grid if r.plan != NO_RECOVERY]
    return means, len({r.seed for r in trained})


def minimal_loss(records: list[SvdDistillRecord]) -> Finding:
    rule = ("holds if SVD followed by feature distillation then KD (the paper's recipe) scores within 2 points of the "
            "fine-tuned original, at the study's budget (means over 2+ seeds)")
    record = records[-1]
    means, seeds = recovery_means(record)
    original, ours, paper = record.original_score(), record.our_budget, record.paper_budget
    gap = means[(SVD, FD_KD)] - original
    measured = (f"SVD + FD + KD {means[(SVD, FD_KD)]:.3f} vs original {original:.3f} ({pts(gap)}); rank "
                f"{ours.rank} keeps {ours.targeted_kept:.1%} of the factorized weights, "
                f"{ours.whole_kept:.1%} of the model (the paper's r = {paper.rank}: "
                f"{paper.targeted_kept:.1%} and {paper.whole_kept:.1%} of BERT-base)")
    if seeds < 2:
        return Finding(UNTESTABLE, f"one seed; {measured}", rule, record.scale)
    verdict = HOLDS if gap >= -MINIMAL_LOSS else FAILS
    return Finding(verdict, f"{measured}; {seeds} seeds", rule, record.scale)


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
    rule = ("holds if, for plain SVD at the budget, FD then KD beats KD alone by more than 0.5 points (means over "
            "2+ seeds; FD then KD trains twice the steps)")
    record = records[-1]
    means, seeds = recovery_means(record)
    gain = means[(SVD, FD_KD)] - means[(SVD, KD_ONLY)]
    measured = (f"FD then KD {means[(SVD, FD_KD)]:.3f} vs KD {means[(SVD, KD_ONLY)]:.3f} ({pts(gain)}); FD "
                f"alone {means[(SVD, FD_ONLY)]:.3f}")
    if seeds < 2:
        return Finding(UNTESTABLE, f"one seed; {measured}", rule, record.scale)
    verdict = HOLDS if gain > BEATS else FAILS
    return Finding(verdict, f"{measured}; {seeds} seeds", rule, record.scale)


def seq2seq_bleu(records: list[SvdDistillRecord]) -> Finding:
    rule = ("testable only with BLEU rows of a pre-trained encoder-decoder (not a tiny random-init model); holds if "
            "FD then KD is within 1 BLEU point of the original")
    record = records[-1]
    params, s2s = record.parameters, record.seq2seq
    model, task, rows = str(params.get("s2s_model")), params.get("s2s_task"), s2s.rows
    if not rows or model.startswith("tiny-"):
        probe = s2s.probe or {}
        timing = (f"; one training epoch would take {probe['epoch_seconds']:.0f} s here" if probe.get("epoch_seconds")
                  else "")
        return Finding(UNTESTABLE,
                       f"seq2seq {params.get('s2s_mode')} on {model} / {task}: {len(rows)} BLEU rows{timing}; needs "
                       "the gpu profile (Helsinki-NLP/opus-mt-en-de on Multi30K)", rule, record.scale)
    bleu = {r.plan: r.bleu for r in rows}
    gap = bleu[FD_KD] - bleu[ORIGINAL]
    verdict = HOLDS if gap >= -1.0 else FAILS
    return Finding(verdict, f"{model} on {task}: BLEU {bleu[ORIGINAL]:.1f} -> {bleu[NO_RECOVERY]:.1f} factorized -> "
                            f"{bleu[FD_KD]:.1f} after FD then KD", rule, record.scale)


def fwsvd_untrained(records: list[SvdDistillRecord]) -> Finding:
    rule = ("holds if, without any training, FWSVD scores more than 0.5 points above plain SVD at the same rank at most "
            "of the budgets swept (no recovery is deterministic: one run per budget)")
    record = records[-1]
    sweep = [r for r in record.sweep if r.plan == NO_RECOVERY]
    ranks = sorted({r.rank for r in sweep})
    score = {(r.method, r.rank): r.score for r in sweep}
    diffs = {k: score[(FWSVD, k)] - score[(SVD, k)] for k in ranks if (FWSVD, k) in score and (SVD, k) in score}
    wins = sum(d > BEATS for d in diffs.values())
    verdict = HOLDS if diffs and wins > len(diffs) / 2 else FAILS
    return Finding(verdict, f"FWSVD minus SVD, untrained, at ranks {', '.join(map(str, diffs))}: "
                            f"{', '.join(pts(d) for d in diffs.values())}", rule, record.scale)


def fwsvd_after_recovery(records: list[SvdDistillRecord]) -> Finding:
    rule = "holds if, after FD then KD at the budget, FWSVD's mean score exceeds plain SVD's (means over 2+ seeds)"
    record = records[-1]
    means, seeds = recovery_means(record)
    gap = means[(FWSVD, FD_KD)] - means[(SVD, FD_KD)]
    measured = f"FWSVD {means[(FWSVD, FD_KD)]:.3f} vs SVD {means[(SVD, FD_KD)]:.3f} ({pts(gap)})"
    if seeds < 2:
        return Finding(UNTESTABLE, f"one seed; {measured}", rule, record.scale)
    verdict = HOLDS if gap > 0 else FAILS
    return Finding(verdict, f"{measured}; {seeds} seeds", rule, record.scale)


def fwsvd_compact(records: list[SvdDistillRecord]) -> Finding:
    rule = ("testable on an already compact model (< 30M stored parameters); holds if some budget of FWSVD + FD + KD "
            "removes at least 9 % of the model's parameters within 1 point of the original (the sweep: first seed)")
    record = records[-1]
    dense = record.baseline["params"]["stored"]
    original = record.original_score()
    if dense >= COMPACT_PARAMS:
        return Finding(UNTESTABLE, f"{record.parameters.get('model')} has {dense / 1e6:.0f}M parameters: not a compact "
                       "model (the cpu profile's all-MiniLM-L6-v2, 23M, is)", rule, record.scale)
    rows = sorted((r for r in record.sweep if r.method == FWSVD and r.plan == FD_KD), key=lambda r: r.model_params)
    points = [(1 - r.model_params / dense, r.score - original) for r in rows]
    good = [cut for cut, gap in points if gap >= -COMPARABLE]
    verdict = HOLDS if good and max(good) >= 0.09 else FAILS
    return Finding(verdict, f"original {original:.3f}, {dense / 1e6:.1f}M parameters; FWSVD + FD + KD: "
                            + ", ".join(f"{cut:.0%} fewer {pts(gap)}" for cut, gap in points), rule, record.scale)


def _claim(paper: str, text: str, source: str, check) -> Claim:
    return Claim(paper, text, source, SVD_STUDY, check, SvdDistillRecord)


CLAIMS: list[Claim] = [
    _claim(NOACH, "SVD followed by feature distillation and KD shrinks the model (0.4x fewer parameters) with "
           "minimal loss in metric performance.", "abstract", minimal_loss),
    _claim(NOACH, "The factorized model is 1.45x faster at inference.", "abstract", speedup),
    _claim(NOACH, "Feature distillation before KD recovers more than KD alone.", "abstract (the two-stage recipe)",
           fd_then_kd),
    _claim(NOACH, "The recipe compresses a MarianMT translation model with little BLEU loss.",
           "the kene111/matrix-decomposition port (not the paper)", seq2seq_bleu),
    _claim(HSU, "Fisher-weighted SVD keeps the task accuracy much closer to the original than plain SVD.",
           "abstract (before fine-tuning)", fwsvd_untrained),
    _claim(HSU, "FWSVD's advantage over SVD persists after recovery training.", "abstract", fwsvd_after_recovery),
    _claim(HSU, "An already compact model loses 9 % to 30 % of its parameters with an insignificant impact "
           "on accuracy.", "abstract", fwsvd_compact),
]
