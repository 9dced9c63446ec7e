"""The claims of Banaei et al. (2023, offline compression) and the rules that judge them on study 04's
typed records (:class:`~mpstudy.studies.offline.record.OfflineRecord`).

The cell counts behind the first two claims (:func:`ae_wins`, :func:`joint_wins`) take the measure
as an argument: the ledger judges on function (:data:`FUNCTION_METRIC`, the sentence-embedding
cosine), and the study's page shows the same counts on reconstruction beside it, read by the same
code with the same tie threshold.
"""
from __future__ import annotations

from collections.abc import Sequence

from ..verdicts import FAILS, HOLDS, UNTESTABLE, Claim, Finding, mean
from .record import (
    AE,
    CONCATENATED,
    DENSE,
    FACTORIZATIONS,
    OFFLINE_STUDY,
    SEPARATED,
    OfflineRecord,
)

__all__ = ["FUNCTION_METRIC", "MEASURES", "TIE", "ae_wins", "joint_wins", "ae_beats", "joint_helps", "ae_finetuned",
           "ae_perplexity", "AE_BEATS", "JOINT_HELPS", "AE_FINETUNED", "AE_PERPLEXITY", "CLAIMS"]

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
_NAMES = {"kronecker": "Kronecker", "tucker": "Tucker", "svd": "SVD", "prune": "pruning"}


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


def ae_beats(records: list[OfflineRecord], metric: str = FUNCTION_METRIC,
             rivals: Sequence[str] = FACTORIZATIONS) -> Finding:
    """The autoencoder beats the factorizations offline: judged on ``metric`` (the ledger: function)."""
    what, name, higher = _measure(metric)
    against = ", ".join(_NAMES.get(m, m) for m in rivals[:-1]) + (" and " if len(rivals) > 1 else "") + \
        _NAMES.get(rivals[-1], rivals[-1])
    rule = (f"holds if, in most (module, CR, mode) cells, the autoencoder's {what} "
            f"{'exceeds' if higher else 'is below'} the best of {against} by more than {TIE:g}")
    wins, cells = ae_wins(records[-1], metric, rivals)
    verdict = HOLDS if wins > cells / 2 else FAILS
    return Finding(verdict, f"the autoencoder wins {wins} of {cells} cells on {name}", rule, records[-1].scale)


def joint_helps(records: list[OfflineRecord], metric: str = FUNCTION_METRIC,
                methods: Sequence[str] | None = None) -> Finding:
    """Compressing a module type of all layers jointly helps: judged on ``metric`` (the ledger: function,
    every method)."""
    name = _measure(metric)[1]
    only = f" (methods: {', '.join(methods)})" if methods is not None else ""
    rule = ("holds if, in most (module, CR, method) cells of the per-layer module types, compressing all layers "
            f"together beats compressing each layer separately on {name} by more than {TIE:g}{only}")
    wins, cells = joint_wins(records[-1], metric, methods)
    verdict = HOLDS if cells and wins > cells / 2 else FAILS
    return Finding(verdict, f"concatenated beats separated in {wins} of {cells} cells", rule, records[-1].scale)


def ae_finetuned(records: list[OfflineRecord]) -> Finding:
    rule = ("holds if, in most fine-tuned (module, CR, mode) cells, the autoencoder-compressed model's mean dev score "
            "after fine-tuning exceeds the best of Kronecker, Tucker and SVD (means over 2+ seeds)")
    record = records[-1]
    rows = [r for r in record.finetuned if r.method != DENSE]
    cells = dict.fromkeys((r.module, r.cr, r.mode) for r in rows)
    seeds = len({r.seed for r in rows})
    parts, wins = [], 0
    for cell in cells:
        in_cell = [r for r in rows if (r.module, r.cr, r.mode) == cell]
        means = {m: mean([r.score for r in in_cell if r.method == m]) for m in {r.method for r in in_cell}}
        factor = [means[m] for m in FACTORIZATIONS if m in means]
        if AE not in means or not factor:
            continue
        wins += means[AE] > max(factor)
        parts.append(f"{cell[0]} CR {cell[1]} {cell[2]}: AE {means[AE]:.3f} vs best factorization {max(factor):.3f}")
    if not parts:
        return Finding(UNTESTABLE, "no fine-tuned cell with the autoencoder and a factorization", rule, record.scale)
    if seeds < 2:
        return Finding(UNTESTABLE, f"one seed; {'; '.join(parts)}", rule, record.scale)
    verdict = HOLDS if wins > len(parts) / 2 else FAILS
    return Finding(verdict, f"AE wins {wins} of {len(parts)} cells ({'; '.join(parts)}), {seeds} seeds", rule,
                   record.scale)


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
AE_PERPLEXITY = _claim("The autoencoder gives a lower masked-LM perplexity than the factorizations.",
                       "Tables (BERT-base, WikiText-103)", ae_perplexity)
CLAIMS: list[Claim] = [AE_BEATS, JOINT_HELPS, AE_FINETUNED, AE_PERPLEXITY]
