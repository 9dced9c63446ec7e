"""The claims of Banaei et al. (2023, offline compression) and the rules that judge them on study 04's
typed records (:class:`~mpstudy.studies.offline.record.OfflineRecord`).

Offline claims (the grid, no training). The cell counts take the measure as an argument: the ledger
judges on function (:data:`FUNCTION_METRIC`, the sentence-embedding cosine), and the study's page shows
the same counts on reconstruction beside it, read by the same code with the same tie threshold.
:func:`ae_wins` / :func:`joint_wins` count cells by their means; the verdicts read :func:`ae_tally` /
:func:`joint_tally`, which decide a cell only when the 95 % t interval over the autoencoder's seeds
(the one seeded method; the others are deterministic) is on one side of the tie threshold. With fewer
than two autoencoder seeds behind the cells, those verdicts are inconclusive.

Fine-tuned claims: the paired dev-score difference (seed by seed, the same dev examples,
:func:`mpstudy.stats.paired_difference`) against 0, judged by :func:`mpstudy.stats.band`; a record
without predictions (written before the campaign) is "not testable".
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.special import stdtrit

from ...stats import band, paired_difference
from ..verdicts import FAILS, HOLDS, INCONCLUSIVE, UNTESTABLE, Claim, Finding, from_band, mean, pts
from .record import (
    AE,
    CONCATENATED,
    DENSE,
    FACTORIZATIONS,
    OFFLINE_STUDY,
    RANDOMIZED,
    SEPARATED,
    OfflineRecord,
)

__all__ = ["FUNCTION_METRIC", "MEASURES", "TIE", "RESAMPLES", "Tally", "ae_wins", "joint_wins", "ae_tally",
           "joint_tally", "ae_beats", "joint_helps", "ae_finetuned", "joint_finetuned", "ae_perplexity", "AE_BEATS",
           "JOINT_HELPS", "AE_FINETUNED", "JOINT_FINETUNED", "AE_PERPLEXITY", "CLAIMS"]

PAPER = "banaei2023"
FUNCTION_METRIC = "sentence_cosine"  #: the measure the ledger judges the offline claims on
#: grid measure -> (what it is, in a rule; its short name; whether higher is better)
MEASURES = {
    "row_cosine": ("mean row cosine to the original matrices", "mean row cosine", True),
    "rel_error": ("relative Frobenius error", "relative Frobenius error", False),
    "sentence_cosine": ("sentence-embedding cosine to the uncompressed model", "sentence-embedding cosine", True),
    "hidden_rel_error": ("relative error of the token states", "token-state error", False),
}
TIE = 0.001  #: a difference of at most this much counts as neither winning
#: the bootstrap resamples of every interval a rule computes, seeded, so the same record gives the same verdict
RESAMPLES = 2000
_NAMES = {"ae": "AE", "kronecker": "Kronecker", "tucker": "Tucker", "svd": "SVD", "prune": "pruning"}


def _measure(metric: str) -> tuple[str, str, bool]:
    if metric not in MEASURES:
        raise ValueError(f"metric must be one of {list(MEASURES)}, got {metric!r}")
    return MEASURES[metric]


def _means(record: OfflineRecord, metric: str, by: list[str]):
    """Mean of ``metric`` over the feasible cells' seeds, indexed by ``by`` (a pandas Series)."""
    import pandas as pd

    grid = pd.DataFrame([r.to_dict() for r in record.grid])
    grid = grid[grid.feasible.astype(bool)]
    return grid.assign(**{metric: grid[metric].astype(float)}).groupby(by)[metric].mean()


def ae_wins(record: OfflineRecord, metric: str = FUNCTION_METRIC,
            rivals: Sequence[str] = FACTORIZATIONS) -> tuple[int, int]:
    """(module, CR, mode) cells where the autoencoder beats the best of ``rivals`` on ``metric`` by more
    than :data:`TIE`, and the cells holding the autoencoder and every rival the grid ran."""
    higher = _measure(metric)[2]
    means = _means(record, metric, ["module", "cr", "mode", "method"]).unstack("method")
    present = [m for m in rivals if m in means.columns]
    if AE not in means.columns or not present:
        return 0, 0
    cells = means.dropna(subset=[AE, *present])
    if higher:
        wins = cells[AE] > cells[present].max(axis=1) + TIE
    else:
        wins = cells[AE] < cells[present].min(axis=1) - TIE
    return int(wins.sum()), len(cells)


def joint_wins(record: OfflineRecord, metric: str = FUNCTION_METRIC,
               methods: Sequence[str] | None = None) -> tuple[int, int]:
    """(module, CR, method) cells where compressing all layers together (concatenated) beats compressing
    each layer separately on ``metric`` by more than :data:`TIE`, and the cells run both ways
    (``methods``: only these methods; None: every method)."""
    higher = _measure(metric)[2]
    means = _means(record, metric, ["module", "cr", "method", "mode"]).unstack("mode")
    if methods is not None:
        means = means[means.index.get_level_values("method").isin(list(methods))]
    cells = means.dropna(subset=[SEPARATED, CONCATENATED]) if CONCATENATED in means else means.iloc[:0]
    if not len(cells):
        return 0, 0
    if higher:
        wins = cells[CONCATENATED] > cells[SEPARATED] + TIE
    else:
        wins = cells[CONCATENATED] < cells[SEPARATED] - TIE
    return int(wins.sum()), len(cells)


@dataclass(frozen=True)
class Tally:
    """Cells decided by their 95 % interval over seeds: ``wins`` (the whole interval of the difference above
    the tie threshold), ``losses`` (the whole interval at or below it), ``open`` (neither), of ``cells``;
    ``seeds``: the fewest seeds of a seeded method behind a cell (None when no seeded method is involved)."""

    wins: int
    losses: int
    open: int
    cells: int
    seeds: int | None

    def verdict(self) -> str:
        """Holds if most cells are wins, does not hold if they cannot be (wins + open at most half), inconclusive
        otherwise, and always when a seeded method stands on fewer than two seeds."""
        if self.seeds is not None and self.seeds < 2:
            return INCONCLUSIVE
        if self.wins > self.cells / 2:
            return HOLDS
        return FAILS if self.wins + self.open <= self.cells / 2 else INCONCLUSIVE

    def says(self) -> str:
        seeds = ("" if self.seeds is None else f"; {self.seeds} autoencoder seed(s) per cell" +
                 (" (one seed: no interval, so no verdict)" if self.seeds < 2 else ""))
        return f"{self.losses} lost, {self.open} undecided by the 95 % interval over seeds{seeds}"


def _half_width(values: list[float], method: str) -> float:
    """Half-width of the 95 % t interval of the mean over seeds; 0 for a deterministic method (its seeds
    repeat one number), infinite for a seeded method with one seed."""
    if method not in RANDOMIZED:
        return 0.0
    n = len(values)
    if n < 2:
        return math.inf
    sd = math.sqrt(sum((v - mean(values)) ** 2 for v in values) / (n - 1))
    return float(stdtrit(n - 1, 0.975)) * sd / math.sqrt(n)


def _outcome(a: list[float], a_method: str, b: list[float], b_method: str, higher: bool) -> str:
    """``win``, ``loss`` or ``open`` for "a beats b by more than :data:`TIE`"."""
    d = mean(a) - mean(b)
    d = d if higher else -d
    h = math.hypot(_half_width(a, a_method), _half_width(b, b_method))
    return "win" if d - h > TIE else "loss" if d + h <= TIE else "open"


def _values(record: OfflineRecord, metric: str, by: list[str]):
    """The feasible cells' values of ``metric`` over seeds, as lists indexed by ``by`` (a pandas Series)."""
    import pandas as pd

    grid = pd.DataFrame([r.to_dict() for r in record.grid])
    grid = grid[grid.feasible.astype(bool)]
    return grid.assign(**{metric: grid[metric].astype(float)}).groupby(by)[metric].agg(list)


def _tally(outcomes: list[str], seeds: list[int]) -> Tally:
    return Tally(outcomes.count("win"), outcomes.count("loss"), outcomes.count("open"), len(outcomes),
                 min(seeds) if seeds else None)


def ae_tally(record: OfflineRecord, metric: str = FUNCTION_METRIC, rivals: Sequence[str] = FACTORIZATIONS) -> Tally:
    """The (module, CR, mode) cells holding the autoencoder and every rival the grid ran, each decided by
    the interval of "the autoencoder beats the best of ``rivals`` (by mean) on ``metric`` by more than
    :data:`TIE`"."""
    higher = _measure(metric)[2]
    values = _values(record, metric, ["module", "cr", "mode", "method"]).unstack("method")
    present = [m for m in rivals if m in values.columns]
    if AE not in values.columns or not present:
        return Tally(0, 0, 0, 0, None)
    outcomes, seeds = [], []
    for _, cell in values.dropna(subset=[AE, *present]).iterrows():
        pick = max if higher else min
        best = pick(present, key=lambda m: mean(cell[m]))
        outcomes.append(_outcome(cell[AE], AE, cell[best], best, higher))
        seeds += [len(cell[m]) for m in (AE, best) if m in RANDOMIZED]
    return _tally(outcomes, seeds)


def joint_tally(record: OfflineRecord, metric: str = FUNCTION_METRIC, methods: Sequence[str] | None = None) -> Tally:
    """The (module, CR, method) cells run in both modes, each decided by the interval of "concatenated beats
    separated on ``metric`` by more than :data:`TIE`" (``methods``: only these; None: every method)."""
    higher = _measure(metric)[2]
    values = _values(record, metric, ["module", "cr", "method", "mode"]).unstack("mode")
    if CONCATENATED not in values or SEPARATED not in values:
        return Tally(0, 0, 0, 0, None)
    outcomes, seeds = [], []
    for (module, cr, method), cell in values.dropna(subset=[SEPARATED, CONCATENATED]).iterrows():
        if methods is not None and method not in methods:
            continue
        outcomes.append(_outcome(cell[CONCATENATED], method, cell[SEPARATED], method, higher))
        seeds += [len(cell[m]) for m in (CONCATENATED, SEPARATED)] if method in RANDOMIZED else []
    return _tally(outcomes, seeds)


def ae_beats(records: list[OfflineRecord], metric: str = FUNCTION_METRIC,
             rivals: Sequence[str] = FACTORIZATIONS) -> Finding:
    """The autoencoder beats the factorizations offline: judged on ``metric`` (the ledger: function)."""
    what, name, higher = _measure(metric)
    against = ", ".join(_NAMES.get(m, m) for m in rivals[:-1]) + (" and " if len(rivals) > 1 else "") + \
        _NAMES.get(rivals[-1], rivals[-1])
    rule = (f"a cell is won if the 95 % t interval over the autoencoder's seeds of its {what} minus the best of "
            f"{against} (deterministic) is {'above' if higher else 'below'} {'+' if higher else '-'}{TIE:g}, lost if the "
            "whole interval is on the other side, undecided otherwise; holds if most (module, CR, mode) cells are won, "
            "does not hold if they cannot be, inconclusive otherwise or with fewer than 2 autoencoder seeds")
    tally = ae_tally(records[-1], metric, rivals)
    if not tally.cells:
        return Finding(UNTESTABLE, "no cell holds the autoencoder and a rival", rule, records[-1].scale)
    return Finding(tally.verdict(), f"the autoencoder wins {tally.wins} of {tally.cells} cells on {name} "
                                    f"({tally.says()})", rule, records[-1].scale)


def joint_helps(records: list[OfflineRecord], metric: str = FUNCTION_METRIC,
                methods: Sequence[str] | None = None) -> Finding:
    """Compressing a module type of all layers jointly helps: judged on ``metric`` (the ledger: function,
    every method)."""
    name = _measure(metric)[1]
    only = f" (methods: {', '.join(methods)})" if methods is not None else ""
    rule = ("a (module, CR, method) cell of the per-layer module types is won if concatenated beats separated on "
            f"{name} by more than {TIE:g} over the whole 95 % t interval over seeds (the autoencoder's seeds; the "
            "other methods are deterministic); holds if most cells are won, does not hold if they cannot be, "
            f"inconclusive otherwise or with fewer than 2 autoencoder seeds{only}")
    tally = joint_tally(records[-1], metric, methods)
    if not tally.cells:
        return Finding(UNTESTABLE, "no cell was run in both modes", rule, records[-1].scale)
    return Finding(tally.verdict(), f"concatenated beats separated in {tally.wins} of {tally.cells} cells "
                                    f"({tally.says()})", rule, records[-1].scale)


def _one(preds: dict[int, list]):
    """What :mod:`mpstudy.stats` takes: the seed mapping with 2+ seeds, the one list with one."""
    return preds if len(preds) > 1 else next(iter(preds.values()))


def _judge_pairs(record: OfflineRecord, pairs: list[tuple[str, tuple, tuple]], rule: str) -> Finding:
    """Each ``(label, a, b)`` (``a``, ``b``: ``(module, cr, mode, method)``) judged by the paired difference
    a - b against 0 over the seeds both have; one pair: its band; several: most pairs."""
    parts, verdicts, bands = [], [], []
    for label, a, b in pairs:
        pa, pb = record.finetuned_predictions(*a), record.finetuned_predictions(*b)
        if pa is None or pb is None:
            means = [mean([r.score for r in record.finetuned if (r.module, float(r.cr), r.mode, r.method) ==
                           (x[0], float(x[1]), x[2], x[3])]) for x in (a, b)]
            parts.append(f"{label}: {means[0] - means[1]:+.3f} (means)")
            continue
        seeds = sorted(set(pa) & set(pb))
        diff = paired_difference(record.task, _one({s: pa[s] for s in seeds}), _one({s: pb[s] for s in seeds}),
                                 record.references, resamples=RESAMPLES)
        judged = band(diff, 0.0, "at least")
        bands.append(judged)
        verdicts.append(judged.verdict)
        parts.append(f"{label}: {pts(diff.estimate)} [{pts(diff.low)}, {pts(diff.high)}] over {len(seeds)} seed(s)")
    if not verdicts:
        return Finding(UNTESTABLE, "; ".join(parts) + " -- but this record holds no dev predictions (written before "
                       "the campaign), so the differences have no interval; re-run the cpu profile", rule, record.scale)
    if len(bands) == 1:
        return from_band(bands[0], parts[0], rule, record.scale)
    held, failed = verdicts.count(HOLDS), verdicts.count(FAILS)
    verdict = HOLDS if held > len(verdicts) / 2 else FAILS if failed > len(verdicts) / 2 else INCONCLUSIVE
    return Finding(verdict, "; ".join(parts) + f" ({held} hold, {failed} do not)", rule, record.scale)


def ae_finetuned(records: list[OfflineRecord]) -> Finding:
    rule = ("in each fine-tuned (module, CR, mode) cell with the autoencoder and a factorization (Kronecker, Tucker, "
            "SVD), the paired dev-score difference autoencoder - the factorization of highest mean dev score (seed by "
            "seed, same examples): holds if its whole 95 % interval is at or above 0, does not hold if it is below, "
            "inconclusive otherwise or from one seed (several cells: most of them)")
    record = records[-1]
    rows = [r for r in record.finetuned if r.method != DENSE]
    pairs = []
    for cell in dict.fromkeys((r.module, float(r.cr), r.mode) for r in rows):
        scores = {m: mean([r.score for r in rows if (r.module, float(r.cr), r.mode, r.method) == (*cell, m)])
                  for m in {r.method for r in rows if (r.module, float(r.cr), r.mode) == cell}}
        factor = [m for m in FACTORIZATIONS if m in scores]
        if AE in scores and factor:
            best = max(factor, key=scores.get)
            pairs.append((f"{cell[0]} CR {cell[1]:g} {cell[2]}: AE - {_NAMES[best]}", (*cell, AE), (*cell, best)))
    if not pairs:
        return Finding(UNTESTABLE, "no fine-tuned cell with the autoencoder and a factorization", rule, record.scale)
    return _judge_pairs(record, pairs, rule)


def joint_finetuned(records: list[OfflineRecord]) -> Finding:
    rule = ("for each (module, CR, method) fine-tuned in both modes, the paired dev-score difference concatenated - "
            "separated (seed by seed, same examples): holds if its whole 95 % interval is at or above 0, does not hold "
            "if it is below, inconclusive otherwise or from one seed (several: most of them)")
    record = records[-1]
    rows = [r for r in record.finetuned if r.method != DENSE]
    have = {(r.module, float(r.cr), r.mode, r.method) for r in rows}
    pairs = [(f"{module} CR {cr:g} {_NAMES.get(method, method)}: concatenated - separated",
              (module, cr, CONCATENATED, method), (module, cr, SEPARATED, method))
             for module, cr, mode, method in sorted(have) if mode == CONCATENATED
             and (module, cr, SEPARATED, method) in have]
    if not pairs:
        return Finding(UNTESTABLE, "no configuration was fine-tuned in both modes", rule, record.scale)
    return _judge_pairs(record, pairs, rule)


def ae_perplexity(records: list[OfflineRecord]) -> Finding:
    rule = ("testable only if the record has a masked-LM perplexity per cell; holds if the autoencoder's perplexity is "
            "below the best of Kronecker, Tucker and SVD in most (module, CR, mode) cells")
    record = records[-1]
    scored = [r for r in record.feasible() if r.perplexity is not None]
    if not scored:
        return Finding(UNTESTABLE,
                       f"no perplexity in the record: {record.parameters.get('model')} is scored by the cosine of its "
                       "sentence embeddings instead; the claim needs an MLM-headed model (bert-base-uncased) and "
                       "WikiText-103", rule, record.scale)
    cells = dict.fromkeys((r.module, r.cr, r.mode) for r in scored)
    wins = total = 0
    for cell in cells:
        ppl: dict[str, list[float]] = {}
        for r in scored:
            if (r.module, r.cr, r.mode) == cell:
                ppl.setdefault(r.method, []).append(r.perplexity)
        factor = [mean(ppl[m]) for m in FACTORIZATIONS if m in ppl]
        if AE in ppl and factor:
            total += 1
            wins += mean(ppl[AE]) < min(factor)
    verdict = HOLDS if total and wins > total / 2 else FAILS
    return Finding(verdict, f"the autoencoder has the lowest perplexity in {wins} of {total} cells", rule, record.scale)


def _claim(text: str, source: str, check) -> Claim:
    return Claim(PAPER, text, source, OFFLINE_STUDY, check, OfflineRecord)


AE_BEATS = _claim("The autoencoder significantly outperforms the factorizations offline.", "abstract", ae_beats)
JOINT_HELPS = _claim("Compressing a module type of all layers jointly helps.", "abstract", joint_helps)
AE_FINETUNED = _claim("The autoencoder's advantage carries over to downstream tasks after fine-tuning.", "abstract",
                      ae_finetuned)
JOINT_FINETUNED = _claim("Joint (concatenated) compression still helps once the compressed model is fine-tuned.",
                         "abstract (joint compression), GLUE protocol", joint_finetuned)
AE_PERPLEXITY = _claim("The autoencoder gives a lower masked-LM perplexity than the factorizations.",
                       "Tables (BERT-base, WikiText-103)", ae_perplexity)
CLAIMS: list[Claim] = [AE_BEATS, JOINT_HELPS, AE_FINETUNED, JOINT_FINETUNED, AE_PERPLEXITY]
