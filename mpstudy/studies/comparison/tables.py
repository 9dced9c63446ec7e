"""The comparison's tables, computed from the unit records alone (their dev predictions) and the dense
baselines' records: every score with its interval over dev examples and seeds, every comparison with
the dense model paired on the same examples and seeds (:mod:`mpstudy.stats`), the ranking with the
cells where a method cannot be told from the best, and the deployment table (bytes, measured speed-up
with its interval, retained score with its interval) with the fastest variant that loses at most one
point, judged by the interval (:func:`mpstudy.stats.band`), never by the mean.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ...stats import HOLDS, Interval, band, paired_difference, ratio_interval, score_interval
from .recipe import COMPARED_METHODS, LABELS, NO_RECOVERY, PRECISIONS

__all__ = ["LOSS_POINT", "runs_frame", "cell_table", "ranking_table", "deployment_table", "best_deployment",
           "accounting_frame", "claim_pairs", "record_rows"]

#: the threshold of "at most one point lost", compressed - dense >= -0.01 over the whole interval (scores are fractions)
LOSS_POINT = 0.01


def _records(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The units' results (``record["result"]``), from campaign records or results."""
    return [r["result"] if "result" in r else r for r in records]


def _dense_result(base: Any) -> Mapping[str, Any]:
    """A dense unit's result: from a :class:`~mpstudy.studies.dense.DenseBaseline`, its record, or the result."""
    record = getattr(base, "record", base)
    return record["result"] if "result" in record else record


def _split(label: str) -> tuple[str | None, str | None]:
    """``svd+int8`` -> (``svd``, ``int8``); ``int8`` -> (None, ``int8``); ``svd`` -> (``svd``, None)."""
    if "+" in label:
        method, precision = label.split("+", 1)
        return method, precision
    return (None, label) if label in PRECISIONS else (label, None)


def runs_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run of every unit: ``task``, ``method`` (the label), ``base`` (the compression method,
    ``dense`` for the precision methods alone), ``precision`` (``fp32`` or the precision method), ``keep``,
    ``regime``, ``seed``, ``score``, ``stored``, ``bytes``, ``trainable`` and ``predictions``."""
    rows = []
    for res in _records(records):
        for run in res["runs"]:
            base, precision = _split(run["method"])
            rows.append({"task": res["task"], "method": run["method"], "base": base or "dense",
                         "precision": precision or "fp32", "keep": float(res["keep"]), "regime": run["regime"],
                         "seed": run["seed"], "score": run["score"], "stored": run["stored"], "bytes": run["bytes"],
                         "trainable": run.get("trainable"), "predictions": run["predictions"]})
    return pd.DataFrame(rows)


def _one_or_many(preds: Mapping[int, list]) -> Any:
    return preds if len(preds) > 1 else next(iter(preds.values()))


def cell_table(records: Sequence[Mapping[str, Any]], dense: Mapping[str, Mapping[int, Any]], resamples: int = 2000,
               seed: int = 0) -> pd.DataFrame:
    """Per (task, label, keep, regime): the score over the seeds with its interval, and the paired difference
    to the dense models of the same seeds (compressed - dense, the same dev examples) with its interval and
    ``within_1pt``, the verdict on "loses at most one point" (:data:`LOSS_POINT`; :func:`mpstudy.stats.band`:
    *holds* only when the whole interval is above -0.01; always *inconclusive* from one seed).

    ``dense``: task -> seed -> dense baseline (or its record), for every seed the units used.
    Columns: ``task``, ``method``, ``base``, ``precision``, ``keep``, ``regime``, ``seeds``, ``score``,
    ``score_low``, ``score_high``, ``dense``, ``retained`` (score / dense), ``vs_dense``, ``vs_dense_low``,
    ``vs_dense_high``, ``within_1pt``, ``stored``, ``bytes``.
    """
    runs = runs_frame(records)
    out = []
    if runs.empty:
        return pd.DataFrame(out)
    for (task, label, keep, regime), part in runs.groupby(["task", "method", "keep", "regime"], sort=False):
        seeds = sorted(int(s) for s in part.seed)
        preds = {int(s): p for s, p in zip(part.seed, part.predictions)}
        bases = {s: _dense_result(dense[task][s]) for s in seeds}
        refs = bases[seeds[0]]["references"]
        dense_preds = {s: bases[s]["predictions"] for s in seeds}
        score = score_interval(task, _one_or_many(preds), refs, resamples=resamples, seed=seed)
        dense_score = score_interval(task, _one_or_many(dense_preds), refs, resamples=resamples, seed=seed)
        diff = paired_difference(task, _one_or_many(preds), _one_or_many(dense_preds), refs, resamples=resamples,
                                 seed=seed)
        verdict = band(diff, -LOSS_POINT, "at least").verdict
        out.append({"task": task, "method": label, "base": part.base.iloc[0], "precision": part.precision.iloc[0],
                    "keep": keep, "regime": regime, "seeds": len(seeds), "score": score.estimate,
                    "score_low": score.low, "score_high": score.high, "dense": dense_score.estimate,
                    "retained": score.estimate / dense_score.estimate if dense_score.estimate else math.nan,
                    "vs_dense": diff.estimate, "vs_dense_low": diff.low, "vs_dense_high": diff.high,
                    "within_1pt": verdict, "stored": int(part.stored.iloc[0]), "bytes": int(part.bytes.iloc[0])})
    table = pd.DataFrame(out)
    order = {m: i for i, m in enumerate(LABELS)}
    regimes = {"none": 0, "finetune": 1, "kd": 2}
    return table.sort_values(["task", "regime", "keep", "method"], key=lambda s: s.map(regimes) if s.name == "regime"
                             else s.map(order) if s.name == "method" else s, ascending=[True, True, False, True],
                             ignore_index=True)


def ranking_table(records: Sequence[Mapping[str, Any]], cells: pd.DataFrame, dense: Mapping[str, Mapping[int, Any]],
                  methods: Sequence[str] = COMPARED_METHODS, resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The compared methods (fp32, no precision method) ranked in every (task, keep) cell of each regime.

    Per (regime, method): ``mean_rank`` (1 = best, by the score over seeds), ``best_in_cells`` (cells where
    it has the best score), ``tied_with_best`` (cells where it is best or the paired difference best - it
    has an interval reaching 0: the data cannot tell it from the best), ``cells``, and ``vs_dense`` with
    ``vs_dense_low``/``vs_dense_high``: the mean over cells of the paired difference to the dense model and
    the mean of the cells' interval ends (conservative: it treats the cells' errors as perfectly
    correlated, as cells of one task share dev examples and dense models; independent cells would give a
    narrower interval). ``dense``: as for :func:`cell_table` (it gives each task's dev references).
    """
    runs = runs_frame(records)
    part = cells[cells.method.isin(methods)]
    tied: dict[tuple[str, str], int] = {}
    ranked = []
    for (regime, task, keep), cell in part.groupby(["regime", "task", "keep"], sort=False):
        cell = cell.assign(rank=cell.score.rank(ascending=False, method="min"))
        ranked.append(cell)
        best = cell.sort_values("score", ascending=False).iloc[0]
        sub = runs[(runs.task == task) & (runs.keep == keep) & (runs.regime == regime)]

        def preds(label: str) -> Any:
            rows = sub[sub.method == label]
            return _one_or_many({int(s): p for s, p in zip(rows.seed, rows.predictions)})

        refs = _dense_result(next(iter(dense[task].values())))["references"]
        for label in cell.method:
            if label == best.method:
                same = True
            else:
                d = paired_difference(task, preds(best.method), preds(label), refs, resamples=resamples, seed=seed)
                same = bool(d.low <= 0)
            tied[(regime, label)] = tied.get((regime, label), 0) + same
    if not ranked:
        return pd.DataFrame()
    allcells = pd.concat(ranked)
    rows = []
    for (regime, label), g in allcells.groupby(["regime", "method"], sort=False):
        rows.append({"regime": regime, "method": label, "mean_rank": g["rank"].mean(),
                     "best_in_cells": int((g["rank"] == 1).sum()), "tied_with_best": tied.get((regime, label), 0),
                     "cells": len(g), "vs_dense": g.vs_dense.mean(), "vs_dense_low": g.vs_dense_low.mean(),
                     "vs_dense_high": g.vs_dense_high.mean(), "retained": g.retained.mean()})
    order = {"none": 0, "finetune": 1, "kd": 2}
    return pd.DataFrame(rows).sort_values(["regime", "mean_rank"], key=lambda s: s.map(order) if s.name == "regime"
                                          else s, ignore_index=True)


class _Rounds:
    """What :func:`mpstudy.stats.ratio_interval` reads: ``seconds`` (name -> seconds per round)."""

    def __init__(self, seconds: Mapping[str, list]) -> None:
        self.seconds = dict(seconds)


def _timings(records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, float], tuple[Mapping[str, Any], str]]:
    """(label, keep) -> (the unit's latency record, label) for every timed model."""
    out = {}
    for res in _records(records):
        lat = res.get("latency")
        if not lat:
            continue
        for label in lat["seconds"]:
            if label != "dense":
                out[(label, float(res["keep"]))] = lat
    return out


def deployment_table(records: Sequence[Mapping[str, Any]], cells: pd.DataFrame, task: str,
                     regime: str = "kd") -> pd.DataFrame:
    """For one task, each variant (method, precision method or both, at each budget) as deployed: the models
    of ``regime`` (the precision methods alone, and methods the grid did not recover: as they are), with ``bytes`` stored and ``bytes_ratio`` against the dense fp32 model,
    the measured ``speedup`` over the dense fp32 model with its interval (``speedup_low``/``speedup_high``:
    :func:`mpstudy.stats.ratio_interval` over the timing rounds, each round timing every model once) and
    ``latency_ms``, and the score, the paired difference to dense and ``within_1pt`` from :func:`cell_table`.
    Sorted by speed-up (fastest first); variants never timed have NaN speed-ups.
    """
    part = cells[cells.task == task]
    # each variant after ``regime`` where it ran, else as it is (a precision method alone, a method not recovered)
    have = set(zip(part.method, part.keep, part.regime))
    part = part[[r == regime or (r == NO_RECOVERY and (m, k, regime) not in have)
                 for m, k, r in zip(part.method, part.keep, part.regime)]]
    timings = _timings(records)
    dense_bytes = next((r["dense_bytes"] for r in _records(records) if r["task"] == task), math.nan)
    rows = []
    for _, c in part.iterrows():
        lat = timings.get((c.method, float(c.keep)))
        if lat is not None:
            speed = ratio_interval(_Rounds(lat["seconds"]), "dense", c.method)
            extra = {"speedup": speed.estimate, "speedup_low": speed.low, "speedup_high": speed.high,
                     "latency_ms": lat["median_ms"][c.method], "dense_ms": lat["median_ms"]["dense"]}
        else:
            extra = {"speedup": math.nan, "speedup_low": math.nan, "speedup_high": math.nan, "latency_ms": math.nan,
                     "dense_ms": math.nan}
        rows.append({"method": c.method, "keep": c.keep, "regime": c.regime, "bytes": c["bytes"],
                     "bytes_ratio": c["bytes"] / dense_bytes, **extra, "score": c.score, "score_low": c.score_low,
                     "score_high": c.score_high, "vs_dense": c.vs_dense, "vs_dense_low": c.vs_dense_low,
                     "vs_dense_high": c.vs_dense_high, "within_1pt": c.within_1pt, "seeds": c.seeds})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values(["speedup", "vs_dense"], ascending=False, na_position="last", ignore_index=True)


def best_deployment(table: pd.DataFrame) -> dict[str, Any] | None:
    """The fastest row of :func:`deployment_table` whose "loses at most one point" verdict *holds* (the whole
    interval of compressed - dense above -0.01), with its speed-up and that speed-up's interval; None when
    no timed variant holds."""
    if table.empty:
        return None
    ok = table[(table.within_1pt == HOLDS) & table.speedup.notna()]
    if ok.empty:
        return None
    row = ok.sort_values("speedup", ascending=False).iloc[0]
    return {"method": row.method, "keep": float(row.keep), "regime": row.regime, "speedup": float(row.speedup),
            "speedup_interval": Interval(float(row.speedup), float(row.speedup_low), float(row.speedup_high),
                                         seeds=None), "vs_dense": float(row.vs_dense),
            "vs_dense_low": float(row.vs_dense_low), "vs_dense_high": float(row.vs_dense_high)}


def accounting_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per compressed model (first seed of each task, method and budget): ``kept`` (the budget as
    counted), whole-model ``stored``, ``nonzero``, ``dense_stored``, ``bytes``, ``dense_bytes``,
    ``flops_ratio``, ``compress_s``, ``structure`` and ``trainable``."""
    rows, seen = [], set()
    for res in _records(records):
        key = (res["task"], res["method"], float(res["keep"]))
        if res["compression"] is None or key in seen:
            continue
        seen.add(key)
        comp = res["compression"]
        trainable = next((r.get("trainable") for r in res["runs"] if r.get("trainable") is not None), None)
        rows.append({"task": res["task"], "method": res["method"], "keep": float(res["keep"]), "kept": comp["kept"],
                     "stored": res["params"]["stored"], "nonzero": res["params"]["nonzero"],
                     "dense_stored": res["dense_params"]["stored"], "bytes": res["bytes"],
                     "dense_bytes": res["dense_bytes"], "flops_ratio": res["flops"] / res["dense_flops"],
                     "compress_s": comp["seconds"], "structure": str(comp["structure"]), "trainable": trainable})
    return pd.DataFrame(rows)


def claim_pairs(records: Sequence[Mapping[str, Any]], references: Mapping[str, Sequence], method: str,
                rivals: Sequence[str], resamples: int = 2000) -> pd.DataFrame:
    """For each (task, budget) where ``method`` and a rival ran, before any recovery (fp32): ``method`` minus
    the rival with the best mean score, paired by seed and dev example (:func:`mpstudy.stats.paired_difference`
    on the units' predictions), with its interval: the rows the comparison's claims decide by.

    Args:
        records: the comparison's unit records (or their results).
        references: task -> the dev references, in the units' row order (the dense units').
        method, rivals: compression methods of the comparison (``fwsvd`` and ``[svd]``...).
        resamples: bootstrap resamples of each interval (seeded).

    Returns:
        A frame of one row per cell with ``task``, ``keep``, ``method``, ``rival``, ``diff``, ``low``,
        ``high`` and ``seeds``.
    """
    runs = runs_frame(records)
    if runs.empty:
        return pd.DataFrame(columns=["task", "keep", "method", "rival", "diff", "low", "high", "seeds"])
    runs = runs[(runs.regime == NO_RECOVERY) & (runs.precision == "fp32")]
    rows = []
    for (task, keep), cell in runs.groupby(["task", "keep"], sort=True):
        ours = cell[cell.base == method]
        present = [r for r in rivals if (cell.base == r).any()]
        if ours.empty or not present:
            continue
        rival = max(present, key=lambda r: cell[cell.base == r].score.mean())
        theirs = cell[cell.base == rival]
        seeds = sorted(set(ours.seed) & set(theirs.seed))
        a = {s: ours[ours.seed == s].predictions.iloc[0] for s in seeds}
        b = {s: theirs[theirs.seed == s].predictions.iloc[0] for s in seeds}
        pick = (lambda d: d) if len(seeds) > 1 else (lambda d: next(iter(d.values())))
        diff = paired_difference(task, pick(a), pick(b), references[task], resamples=resamples)
        rows.append({"task": task, "keep": float(keep), "method": method, "rival": rival, "diff": diff.estimate,
                     "low": diff.low, "high": diff.high, "seeds": len(seeds)})
    return pd.DataFrame(rows, columns=["task", "keep", "method", "rival", "diff", "low", "high", "seeds"])


def record_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A table's rows for the typed record: ``method`` the compression method (``dense`` for a precision
    method alone), ``precision`` what ran after it (``fp32``, ``bf16``, ``int8``), ``variant`` the label the
    tables show (``svd+int8``); NaN as None."""
    rows = []
    for row in frame.to_dict(orient="records"):
        base, precision = _split(row["method"])
        row = {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items() if k != "base"}
        rows.append({**row, "method": base or "dense", "precision": precision or "fp32", "variant": row["method"]})
    return rows
