"""Two claims re-tested on the comparison (study 06): FWSVD over SVD (Hsu et al., 2022) and the
autoencoder over the factorizations (Banaei et al., 2023), each on every task and budget of the
comparison, the whole encoder compressed, before any recovery. The rules read the typed records
(:class:`~mpstudy.studies.comparison.record.ComparisonRecord`)."""
from __future__ import annotations

from collections.abc import Sequence

from ..verdicts import BEATS, FAILS, HOLDS, Claim, Finding
from .record import (
    AUTOENCODER,
    COMPARISON_STUDY,
    FWSVD,
    KRONECKER,
    SVD,
    TUCKER,
    ComparisonRecord,
)

__all__ = ["wins_over", "ae_beats", "fwsvd_beats", "FWSVD_BEATS", "AE_BEATS", "CLAIMS"]


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


def ae_beats(records: list[ComparisonRecord]) -> Finding:
    rule = ("holds if, untrained, the autoencoder beats the best of SVD, Tucker and Kronecker by more than half a point "
            "in most informative (task, budget) cells of the comparison (cells where all tie within 0.001 are left out)")
    wins, informative, total = wins_over(records[-1], AUTOENCODER, (SVD, TUCKER, KRONECKER))
    verdict = HOLDS if informative and wins > informative / 2 else FAILS
    return Finding(verdict, f"the autoencoder wins {wins} of {informative} informative cells ({total} in all), "
                            "whole encoder compressed, every GLUE task of the comparison", rule, records[-1].scale)


def fwsvd_beats(records: list[ComparisonRecord]) -> Finding:
    rule = ("holds if, untrained, Fisher-weighted SVD beats plain SVD at the same ranks by more than half a point in "
            "most informative (task, budget) cells of the comparison (cells where both tie within 0.001 are left out)")
    wins, informative, total = wins_over(records[-1], FWSVD, (SVD,))
    verdict = HOLDS if informative and wins > informative / 2 else FAILS
    return Finding(verdict, f"FWSVD wins {wins} of {informative} informative cells ({total} in all), every GLUE task "
                            "of the comparison", rule, records[-1].scale)


FWSVD_BEATS = Claim("hsu2022fwsvd", "Fisher-weighted SVD keeps the task accuracy much closer to the original than plain "
                    "SVD.", "abstract; re-tested on every task and budget of the comparison", COMPARISON_STUDY,
                    fwsvd_beats, ComparisonRecord)
AE_BEATS = Claim("banaei2023", "The autoencoder significantly outperforms the factorizations offline.",
                 "abstract; re-tested on the whole encoder, every task and budget of the comparison", COMPARISON_STUDY,
                 ae_beats, ComparisonRecord)
CLAIMS: list[Claim] = [FWSVD_BEATS, AE_BEATS]
