"""Study 0's experiment: each dense seed compressed by truncated SVD at a sweep of budgets, scored as it is.

One campaign unit per dense seed (:func:`sweep_unit`): the seed's dense model, compressed at every
``keep``, each compressed model's dev predictions (so scores get intervals over dev examples and
seeds, and differences to the dense model are paired), its counts, FLOPs, per-matrix errors and, for
the first seed, its latency against the dense model. :func:`sweep_table` turns the records into the
page's table: per budget, the score over seeds with its interval and the paired difference to dense.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ...campaign import unit
from ...measure import compare_latency, count_flops, dummy_batch
from ...stats import band, paired_difference, score_interval
from ...surgery import compress
from ...train import predict
from ..dense import DenseBaseline

__all__ = ["STUDY", "sweep_unit_name", "sweep_unit", "sweep_table"]

STUDY = "00_offline_svd"


def sweep_unit_name(profile: str, task_name: str, seed: int) -> str:
    """``<profile>-<task>-svd-seed<k>``."""
    return f"{profile}-{task_name}-svd-seed{seed}"


def sweep_unit(dense: DenseBaseline, keeps: Sequence[float], targets: str, profile: str, *,
               latency: Mapping[str, int] | None = None, results_dir: str | None = None) -> dict[str, Any]:
    """The unit of one dense seed: its record (``result["rows"]``: one row per ``keep``).

    Args:
        dense: the seed's dense baseline (:func:`mpstudy.studies.dense.dense_baseline`); its model is
            loaded (or trained) only if this unit has no record.
        keeps: kept fractions of the targeted matrices.
        targets: which weights to factorize (``compress``'s ``targets``).
        latency: ``{"batch": B, "seq": T, "repeats": R}`` to time each compressed model against the
            dense one (interleaved, :func:`mpstudy.measure.compare_latency`); None: not timed.

    Each row: ``keep``, ``kept_fraction``, ``params_after`` (targeted), ``model_params``,
    ``predictions`` (dev, row order), ``metrics``, ``gflops`` (one forward of the latency batch,
    or of 8 x max_length), ``modules`` (per-matrix relative errors) and, when timed,
    ``dense_ms``, ``latency_ms``, ``speedup``. The record's ``result`` also holds the dense ``gflops``.
    """
    task, spec_dense = dense.task, dense.record["spec"]
    max_length = spec_dense["train"]["max_length"]
    precision = dense.record["result"]["precision"]
    spec = {"dense": dense.record["spec_key"], "keeps": [float(k) for k in keeps], "targets": targets,
            "latency": dict(latency) if latency else None, "precision": precision, "max_length": max_length}
    name = sweep_unit_name(profile, task.name, spec_dense["seed"])

    def compute() -> dict[str, Any]:
        model, tokenizer = dense.model()
        batch = dummy_batch(tokenizer, batch_size=(latency or {}).get("batch", 8),
                            seq_len=(latency or {}).get("seq", max_length))
        rows = []
        for keep in keeps:
            student = copy.deepcopy(model)
            report = compress(student, "svd", targets=targets, keep=keep)
            preds, _ = predict(student, tokenizer, task, max_length=max_length, precision=precision)
            preds = [float(p) if task.kind == "regression" else int(p) for p in preds]
            row = {"keep": float(keep), "kept_fraction": report.kept_fraction, "params_after": report.params_after,
                   "model_params": report.model_params_after, "predictions": preds,
                   "metrics": task.compute_metrics(preds, dense.record["result"]["references"]),
                   "gflops": count_flops(student, batch) / 1e9,
                   "modules": [{k: m[k] for k in ("name", "role", "layer", "rel_error") if k in m} for m in report.modules]}
            if latency:
                t = compare_latency(model, student, batch, repeats=latency.get("repeats", 10))
                row.update(dense_ms=t["baseline_ms"], latency_ms=t["candidate_ms"], speedup=t["speedup"])
            rows.append(row)
        return {"rows": rows, "dense_gflops": count_flops(model, batch) / 1e9, "dense_params": sum(
            p.numel() for p in model.parameters())}

    return unit(STUDY, name, spec, compute, results_dir=results_dir)


def sweep_table(dense: Mapping[int, DenseBaseline], records: Mapping[int, Mapping[str, Any]],
                resamples: int = 2000) -> pd.DataFrame:
    """Per ``keep``: the score over seeds with its interval (dev examples and seeds), the paired
    difference compressed - dense with its interval (same dev examples, same seed's dense model), and
    ``keeps_99``: the verdict (:func:`mpstudy.stats.band`) on "keeps at least 99 % of the dense score".

    ``dense``/``records``: seed -> dense baseline / :func:`sweep_unit` record, for the same seeds.
    """
    seeds = sorted(records)
    first = dense[seeds[0]]
    task_name, refs = first.task.name, first.record["result"]["references"]
    dense_preds = {s: dense[s].record["result"]["predictions"] for s in seeds}
    by_keep: dict[float, dict[int, Any]] = {}
    for s in seeds:
        for row in records[s]["result"]["rows"]:
            by_keep.setdefault(row["keep"], {})[s] = row
    out = []
    for keep, rows in sorted(by_keep.items(), reverse=True):
        preds = {s: rows[s]["predictions"] for s in seeds}
        one = preds if len(seeds) > 1 else preds[seeds[0]]
        score = score_interval(task_name, one, refs, resamples=resamples)
        base = dense_preds if len(seeds) > 1 else dense_preds[seeds[0]]
        diff = paired_difference(task_name, one, base, refs, resamples=resamples)
        # "keeps at least 99 % of the dense score": compressed - 0.99 x dense >= 0 over the whole interval
        keeps_99 = band(paired_difference(task_name, one, base, refs, b_factor=0.99, resamples=resamples), 0.0)
        any_row = rows[seeds[0]]
        out.append({"keep": keep, "kept_fraction": any_row["kept_fraction"], "model_params": any_row["model_params"],
                    "score": score.estimate, "score_low": score.low, "score_high": score.high,
                    "vs_dense": diff.estimate, "vs_dense_low": diff.low, "vs_dense_high": diff.high,
                    "keeps_99": keeps_99.verdict, "seeds": len(seeds), "gflops": any_row["gflops"],
                    **({"speedup": any_row["speedup"]} if "speedup" in any_row else {})})
    return pd.DataFrame(out)
