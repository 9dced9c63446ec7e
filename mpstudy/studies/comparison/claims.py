"""Two claims re-tested on the comparison (study 06): FWSVD over SVD (Hsu et al., 2022) and the
autoencoder over the factorizations (Banaei et al., 2023), each on every task and budget of the
comparison, the whole encoder compressed, before any recovery. The rules read the typed records
(:class:`~mpstudy.studies.comparison.record.ComparisonRecord`): each (task, budget) cell is decided by
the interval of the paired difference the record holds (``pairs``:
:func:`~mpstudy.studies.comparison.tables.claim_pairs`, method minus its best rival, paired by seed
and dev example) against half a point (:data:`~mpstudy.studies.verdicts.BEATS`); the claim holds when
most cells hold, does not hold when most do not, and is inconclusive otherwise. A record without
paired cells (written before them) is not testable; :func:`wins_over` still counts mean wins for the
page."""
from __future__ import annotations

from collections.abc import Sequence

from ...stats import Interval, band
from ..verdicts import BEATS, FAILS, HOLDS, INCONCLUSIVE, UNTESTABLE, Claim, Finding, pts
from .record import (
    AUTOENCODER,
    COMPARISON_STUDY,
    FWSVD,
    KRONECKER,
    SVD,
    TUCKER,
    ComparisonRecord,
)

__all__ = ["wins_over", "paired_cells", "ae_beats", "fwsvd_beats", "FWSVD_BEATS", "AE_BEATS", "CLAIMS"]


def wins_over(record: ComparisonRecord, method: str, rivals: Sequence[str]) -> tuple[int, int, int]:
    """Cells where ``method`` beats the best rival by more than :data:`~mpstudy.studies.verdicts.BEATS`,
    informative cells (all scores not tied within 0.001), and all cells holding ``method`` and a rival."""
    wins = informative = total = 0
    for scores in record.untrained_cells().values():
        present = [scores[r] for r in rivals if r in scores]
        if method not in scores or not present:
            continue
        total += 1
        if max(present + [scores[method]]) - min(present + [scores[method]]) <= 0.001:
            continue  # everything at the same score (e.g. the majority class): says nothing
        informative += 1
        wins += scores[method] > max(present) + BEATS
    return wins, informative, total


def paired_cells(record: ComparisonRecord, method: str, rule: str, what: str) -> Finding:
    """The verdict from the record's paired cells of ``method`` (see the module docstring)."""
    cells = [c for c in (record.pairs or []) if c.method == method]
    if not cells:
        return Finding(UNTESTABLE, f"this record holds no paired cells of {method} (written before the campaign "
                                   "recorded them); re-run the page", rule, record.scale)
    bands = [band(Interval(c.diff, c.low, c.high, seeds=c.seeds), BEATS, "at least") for c in cells]
    verdicts = [b.verdict for b in bands]
    holds, fails = verdicts.count(HOLDS), verdicts.count(FAILS)
    verdict = HOLDS if holds > len(cells) / 2 else FAILS if fails > len(cells) / 2 else INCONCLUSIVE
    detail = "; ".join(f"{c.task} keep {c.keep:g} vs {c.rival}: {pts(c.diff)} [{pts(c.low)}, {pts(c.high)}] "
                       f"({v})" for c, v in zip(cells, verdicts))
    # the ledger's interval and detectable effect: those of the median cell (by its difference)
    middle = sorted(range(len(cells)), key=lambda i: cells[i].diff)[len(cells) // 2]
    return Finding(verdict, f"{what} holds in {holds}, does not hold in {fails} of {len(cells)} cells, paired over "
                            f"{max(c.seeds or 0 for c in cells)} seed(s): {detail}", rule, record.scale,
                   (float(cells[middle].low), float(cells[middle].high)), float(bands[middle].detectable))


def ae_beats(records: list[ComparisonRecord]) -> Finding:
    rule = ("holds if, untrained, the autoencoder is above the best of SVD, Tucker and Kronecker by more than half a "
            "point over the whole 95 % interval of the paired difference in most (task, budget) cells; does not "
            "hold if the whole interval is below that in most cells")
    return paired_cells(records[-1], AUTOENCODER, rule, "autoencoder minus the best factorization")


def fwsvd_beats(records: list[ComparisonRecord]) -> Finding:
    rule = ("holds if, untrained, Fisher-weighted SVD is above plain SVD at the same ranks by more than half a point "
            "over the whole 95 % interval of the paired difference in most (task, budget) cells; does not hold if "
            "the whole interval is below that in most cells")
    return paired_cells(records[-1], FWSVD, rule, "FWSVD minus SVD")


FWSVD_BEATS = Claim("hsu2022fwsvd", "Fisher-weighted SVD keeps the task accuracy much closer to the original than plain "
                    "SVD.", "abstract; re-tested on every task and budget of the comparison", COMPARISON_STUDY,
                    fwsvd_beats, ComparisonRecord)
AE_BEATS = Claim("banaei2023", "The autoencoder significantly outperforms the factorizations offline.",
                 "abstract; re-tested on the whole encoder, every task and budget of the comparison", COMPARISON_STUDY,
                 ae_beats, ComparisonRecord)
CLAIMS: list[Claim] = [FWSVD_BEATS, AE_BEATS]
