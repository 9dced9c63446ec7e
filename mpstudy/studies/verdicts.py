"""The vocabulary every study's claims share: verdicts, findings, claims, the shared thresholds and
:func:`judge`, which turns one claim's rule and a study's typed records into a finding.

This module imports no study package: each ``studies/<paper>/claims.py`` imports it, and
:mod:`mpstudy.studies.ledger` gathers those claims, so the import graph stays a tree
(``ledger -> <paper>.claims -> verdicts``).

Verdicts: ``holds``, ``does not hold here``, ``inconclusive`` (the measured quantity's 95 % interval
reaches both sides of the claim's threshold, or rests on one seed: :func:`mpstudy.stats.band`),
``not testable at this scale`` (the record exists but cannot speak to the claim, e.g. the claim is
about a model or data set the record's profile does not use) and ``not run`` (no record of that
study yet). A rule that has an interval decides through :func:`from_band`, so "holds" and "does not
hold" always mean the whole interval is on one side of the threshold.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["HOLDS", "FAILS", "INCONCLUSIVE", "UNTESTABLE", "NOT_RUN", "VERDICTS", "PROFILE_ORDER", "COMPARABLE",
           "MINIMAL_LOSS", "BEATS", "NO_PREDICTIONS", "Finding", "Claim", "judge", "from_band", "mean", "pts",
           "seeds_or_one", "diff_text"]

HOLDS = "holds"
FAILS = "does not hold here"
INCONCLUSIVE = "inconclusive"
UNTESTABLE = "not testable at this scale"
NOT_RUN = "not run"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, UNTESTABLE, NOT_RUN)
PROFILE_ORDER = ("smoke", "cpu", "gpu")  #: from least to most telling

#: thresholds shared by several rules (dev-score points are fractions — 0.01 = 1 point)
COMPARABLE = 0.01  #: "comparable", "on par" — a mean within 1 point
MINIMAL_LOSS = 0.02  #: "minimal loss", "keeps the quality" — a mean within 2 points
BEATS = 0.005  #: "beats", "helps" — a mean higher by more than half a point


@dataclass(frozen=True)
class Finding:
    """What the records say about one claim: the verdict, the measured numbers in one line, the rule
    that turned those numbers into the verdict, and the scale of the record it was read from."""

    verdict: str
    measured: str
    rule: str
    scale: str = ""
    #: the measured quantity's interval as ``[low, high]`` and the smallest effect the study could have
    #: detected (:func:`mpstudy.stats.detectable_effect`), when the rule decided by an interval
    interval: tuple[float, float] | None = None
    detectable: float | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclass(frozen=True)
class Claim:
    """One headline claim and how the study tests it.

    ``check`` takes the study's typed records (instances of ``record``, oldest first; the rules read
    the last) and returns a :class:`Finding`. ``record`` is the study's record type: the ledger reads
    the study's JSON through it, so a record whose labels the study does not know is refused before
    any rule runs.
    """

    paper: str  #: BibTeX key of the source (book/references.bib), a paper, a thesis or a repository
    claim: str  #: the claim, quoted or closely paraphrased
    source: str  #: where the claim is made
    study: str  #: the study (results folder) whose records test it
    check: Callable[[list[Any]], Finding]
    record: type  #: the study's typed record (a ``StudyRecord`` subclass with ``STUDY == study``)

    def __post_init__(self) -> None:
        if getattr(self.record, "STUDY", None) != self.study:
            raise ValueError(f"claim of study {self.study!r} reads {getattr(self.record, '__name__', self.record)!r}, "
                             f"a record of study {getattr(self.record, 'STUDY', None)!r}")


def judge(check: Callable[..., Finding], records: Sequence[Any], **options: Any) -> Finding:
    """``check(records, **options)``, read as the ledger reads it: on a smoke record (tiny random-init
    models on synthetic data) ``holds`` and ``does not hold here`` become ``not testable at this
    scale``, the would-be verdict kept in ``measured``. Notebooks print this, so a page and the
    ledger say the same about their study.

    ``records``: the study's typed records of one profile (the rules read the last).
    """
    if not records:
        raise ValueError("judge needs at least one record; the ledger says 'not run' for a study without records")
    finding = check(list(records), **options)
    if records[-1].profile == "smoke" and finding.verdict in (HOLDS, FAILS, INCONCLUSIVE):
        return Finding(UNTESTABLE, f"{finding.measured} (would read: {finding.verdict})",
                       "smoke profile: tiny random-init models on synthetic data test the code, not the claim; run "
                       f"the cpu or gpu profile. The rule: {finding.rule}", finding.scale, finding.interval,
                       finding.detectable)
    return finding


def from_band(band: Any, measured: str, rule: str, scale: str = "") -> Finding:
    """The finding of a rule that judged its claim by an interval (:func:`mpstudy.stats.band`): the
    band's verdict, ``measured`` followed by the band's reason, the interval and the detectable effect."""
    return Finding(band.verdict, f"{measured}; {band.reason}", rule, scale,
                   (float(band.interval.low), float(band.interval.high)), float(band.detectable))


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean (raises on an empty sequence: a rule never averages nothing)."""
    return statistics.fmean(values)


def pts(x: float) -> str:
    """A difference of scores in points (0.01 -> ``+1.0 pts``)."""
    return f"{100 * x:+.1f} pts"


#: why a rule cannot judge a record written before the campaign recorded predictions
NO_PREDICTIONS = ("this record holds no dev predictions (written before the campaign recorded them), so the "
                  "difference has no interval; re-run the cpu profile")


def seeds_or_one(preds: dict[int, list]) -> Any:
    """What :mod:`mpstudy.stats` takes: the seed mapping with 2+ seeds, the one list with one seed."""
    return preds if len(preds) > 1 else next(iter(preds.values()))


def diff_text(diff: Any) -> str:
    """A difference's estimate and interval in points: ``+1.0 pts [-0.5 pts, +2.4 pts]``."""
    return f"{pts(diff.estimate)} [{pts(diff.low)}, {pts(diff.high)}]"
