"""The claims ledger: each paper's headline claims, the measurement of this study that tests each,
and a verdict computed from the results records (never typed by hand).

Each study package holds its paper's claims (``mpstudy/studies/<paper>/claims.py``): a
:class:`Claim` names its paper, quotes (or closely paraphrases) the claim, says where it is made,
and names the study's typed record (``<paper>/record.py``); its ``check`` reads those typed records
and returns a :class:`Finding`: the verdict, the measured numbers in one line, and the rule that
turned those numbers into the verdict. This module gathers the claims and reads each study's JSON
records through its record type, so a record whose labels its study does not know is refused, never
silently judged. The shared vocabulary lives in :mod:`mpstudy.studies.verdicts`.

Verdicts: ``holds``, ``does not hold here``, ``not testable at this scale`` (the record exists but
cannot speak to the claim, e.g. too few seeds, or the claim is about a model or data set the
record's profile does not use) and ``not run`` (no record of that study yet).

Each study is judged on the records of one profile: the one asked for, else the largest present
(gpu over cpu over smoke). A smoke record (tiny random-init models on synthetic data) says nothing
about any claim: its checks still run (so a broken record still fails loudly), but ``holds`` and
``does not hold here`` become ``not testable at this scale`` (:func:`~mpstudy.studies.verdicts.judge`,
which the study notebooks call too).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .comparison import claims as comparison_claims
from .composability import claims as composability_claims
from .lobert import claims as lobert_claims
from .mpop import claims as mpop_claims
from .offline import claims as offline_claims
from .svd_distillation import claims as svd_distillation_claims
from .verdicts import NOT_RUN, PROFILE_ORDER, VERDICTS, Claim, Finding, judge

__all__ = ["Claim", "Finding", "CLAIMS", "VERDICTS", "PROFILE_ORDER", "PAPERS", "ledger", "verdict_counts", "judge"]

#: the sources of the claims, in the order of the studies — BibTeX key (book/references.bib) -> name
PAPERS = {
    "liu2021mpop": "MPOP (Liu et al., 2021)",
    "park2021lobert": "LoBERT (Park et al., 2021; code only)",
    "noach2020": "SVD + distillation (Noach & Goldberg, 2020)",
    "hsu2022fwsvd": "Fisher-weighted SVD (Hsu et al., 2022)",
    "banaei2023": "Offline compression (Banaei et al., 2023)",
    "composability2023": "Composable pruning (UMass Amherst thesis, 2023)",
}

#: every claim, in the order of the studies (two claims are judged twice — on their study and on the comparison)
CLAIMS: list[Claim] = [
    *mpop_claims.CLAIMS,
    *lobert_claims.CLAIMS,
    *svd_distillation_claims.CLAIMS,
    *offline_claims.CLAIMS,
    *composability_claims.CLAIMS,
    *comparison_claims.CLAIMS,
]


def _of_profile(records: list[Any], profile: str | None) -> list[Any]:
    """The records of ``profile``, else those of the most telling profile present (gpu, cpu, smoke)."""
    if profile is not None:
        return [r for r in records if r.profile == profile]
    rank = {p: i for i, p in enumerate(PROFILE_ORDER)}
    best = max((rank.get(r.profile, -1) for r in records), default=None)
    return [r for r in records if rank.get(r.profile, -1) == best]


def ledger(results_dir: str | os.PathLike | None = None, claims: Sequence[Claim] = CLAIMS,
           profile: str | None = None):
    """One row per claim: paper, claim, source, study, verdict, measured, rule, scale (a DataFrame).

    ``results_dir`` defaults to ``$MPSTUDY_RESULTS``, else ``results``. Each study's records are read
    through its claims' record type (an unknown label raises ValueError) and judged on the records of
    ``profile`` (None: the most telling profile it has, gpu over cpu over smoke). A study without such
    records gives ``not run``; a check that cannot read its record fails loudly (a broken record is a
    bug). On a smoke record, ``holds`` and ``does not hold here`` become ``not testable at this scale``.
    """
    import pandas as pd

    if profile is not None and profile not in PROFILE_ORDER:
        raise ValueError(f"profile must be one of {PROFILE_ORDER} or None, got {profile!r}")
    root = Path(results_dir or os.environ.get("MPSTUDY_RESULTS", "results"))
    typed: dict[type, list[Any]] = {}  # each study's records are read (and checked) once
    rows = []
    for claim in claims:
        if claim.record not in typed:
            typed[claim.record] = claim.record.read(root)
        records = _of_profile(typed[claim.record], profile)
        if not records:
            finding = Finding(NOT_RUN, "no record" + (f" of the {profile} profile" if profile else ""), "", "")
        else:
            finding = judge(claim.check, records)
        rows.append({"paper": claim.paper, "claim": claim.claim, "source": claim.source, "study": claim.study,
                     "verdict": finding.verdict, "measured": finding.measured, "rule": finding.rule,
                     "scale": finding.scale})
    return pd.DataFrame(rows)


def verdict_counts(table) -> Any:
    """How many claims of each paper got each verdict: one row per paper (in :data:`PAPERS` order), one column per
    verdict (in ``VERDICTS`` order), and the total."""
    import pandas as pd

    counts = pd.crosstab(table["paper"], table["verdict"]).reindex(columns=list(VERDICTS), fill_value=0)
    counts = counts.reindex([p for p in PAPERS if p in counts.index] + [p for p in counts.index if p not in PAPERS])
    counts["claims"] = counts.sum(axis=1)
    counts.index = [PAPERS.get(p, p) for p in counts.index]
    counts.index.name = "paper"
    counts.columns.name = None
    return counts
