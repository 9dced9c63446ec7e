"""LoBERT's claims (Park et al., 2021; a code release without published results) and the rules that
judge them on study 02's typed records (:class:`~mpstudy.studies.lobert.record.LobertRecord`)."""
from __future__ import annotations

from ..verdicts import (
    BEATS,
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
    DEFAULT_BUDGET,
    DENSE,
    KD,
    LOBERT_STUDY,
    LOSS_ABLATION,
    MAIN,
    SVD_FIT,
    LobertRecord,
)

__all__ = ["main_means", "half_kept", "keeps_quality", "pkd_helps", "CLAIMS"]

PAPER = "park2021lobert"
DEMO_MODE = "self_svd"  #: the mode of LoBERT's README demo


def main_means(record: LobertRecord) -> tuple[dict[str, float], int]:
    """Mean score per mode of the main grid (default budget, KD + PKD, pre-trained start), and the seed count."""
    main = record.main_runs()
    modes = dict.fromkeys(r.mode for r in main)
    means = {m: mean([r.score for r in main if r.mode == m]) for m in modes}
    return means, len({r.seed for r in main})


def half_kept(records: list[LobertRecord]) -> Finding:
    rule = ("holds if the demo's student (self_svd at its default budget) keeps between 45 % and 55 % of the weights "
            "it replaces (the claim: 'compression rate is 50 % by default'); the whole model's ratio is reported beside")
    record = records[-1]
    rows = [d for d in record.decompositions if d.mode == DEMO_MODE and d.budget == DEFAULT_BUDGET and d.fit == SVD_FIT]
    if not rows:
        return Finding(UNTESTABLE, "the record has no self_svd student at the default budget", rule, record.scale)
    kept, whole = rows[0].kept, rows[0].param_ratio
    verdict = HOLDS if 0.45 <= kept <= 0.55 else FAILS
    return Finding(verdict, f"self_svd keeps {kept:.1%} of the query/key/value weights, {whole:.1%} of the whole "
                            "model's stored parameters", rule, record.scale)


def keeps_quality(records: list[LobertRecord]) -> Finding:
    rule = ("holds if at least half of the student modes, each at its default budget and trained with KD + PKD, score "
            "within 2 points of the dense student trained by the same recipe (means over 2+ seeds)")
    record = records[-1]
    means, seeds = main_means(record)
    dense = means.pop(DENSE)
    kept = [m for m, v in means.items() if v >= dense - MINIMAL_LOSS]
    worst = min(means, key=means.get)
    measured = (f"{len(kept)} of {len(means)} modes within 2 points of the dense student ({dense:.3f}): "
                f"{', '.join(f'{m} {pts(means[m] - dense)}' for m in kept) or 'none'}; worst {worst} "
                f"{pts(means[worst] - dense)}")
    if seeds < 2:
        return Finding(UNTESTABLE, f"one seed; {measured}", rule, record.scale)
    verdict = HOLDS if len(kept) >= len(means) / 2 else FAILS
    return Finding(verdict, measured + f"; {seeds} seeds", rule, record.scale)


def pkd_helps(records: list[LobertRecord]) -> Finding:
    rule = ("holds if, for most ablation modes, KD + PKD beats KD alone by more than 0.5 points (means over 2+ "
            "ablation seeds, students factorized from the pre-trained model)")
    record = records[-1]
    kd = [r for r in record.runs if r.part == LOSS_ABLATION and r.loss == KD]
    seeds = sorted({r.seed for r in kd})
    diffs = {}
    for mode in dict.fromkeys(r.mode for r in kd):
        with_pkd = [r.score for r in record.runs if r.part == MAIN and r.mode == mode and r.seed in seeds]
        diffs[mode] = mean(with_pkd) - mean([r.score for r in kd if r.mode == mode])
    measured = "KD + PKD minus KD: " + ", ".join(f"{m} {pts(d)}" for m, d in diffs.items())
    if len(seeds) < 2:
        return Finding(UNTESTABLE, f"{measured}, over {len(seeds)} ablation seed(s); needs 2+ (the gpu profile runs 3)",
                       rule, record.scale)
    wins = sum(d > BEATS for d in diffs.values())
    verdict = HOLDS if wins > len(diffs) / 2 else FAILS
    return Finding(verdict, f"{measured}, over {len(seeds)} seeds", rule, record.scale)


def _claim(text: str, source: str, check) -> Claim:
    return Claim(PAPER, text, source, LOBERT_STUDY, check, LobertRecord)


CLAIMS: list[Claim] = [
    _claim("The default compression rate is 50 %.", "README (demo)", half_kept),
    _claim("Low-rank factorized students (SVD, Tucker, FALCON) trained with KD + PKD keep BERT's quality.",
           "README (the project's premise; no results published)", keeps_quality),
    _claim("The patience loss (PKD) helps the factorized student beyond KD.",
           "code (PKD-based training; no results published)", pkd_helps),
]
