"""The deployment goal: the fastest variant that loses at most one point is >= 4x faster than dense fp32.

    python -m bench deployment [--batch 32] [--seq 64] [--repeats 30] [--threads 1]

Quality and speed are measured apart, on purpose. Which variants lose at most one point is decided
by study 06 on the campaign's trained models (its deployment table, with intervals); latency
depends only on a model's structure, so this bench builds every candidate variant of study 06's
deployment table from the packaged all-MiniLM-L6-v2 (the cpu profile's model, fresh 2-label head)
and times them against dense fp32 **in the same invocation, round-robin** (``mpstudy.measure``'s
one latency primitive): each round runs every variant once, so load from other work hits all of
them alike, and each speed-up is the median of per-round ratios with its distribution-free 95 %
interval (:func:`mpstudy.stats.ratio_interval`).

The goal's verdict reads study 06's record when one exists (``results/06_comparison/cpu-minilm.json``:
its ``best_deployment`` names the qualifying variant) and judges that variant's measured speed-up
interval against 4x: *met* if the whole interval is at or above 4, *not met* if it is below,
*inconclusive* if it straddles. Without a record the table is printed and the verdict says so.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

#: the goal of the uncertainty/precision issue: the best variant >= 4x faster than dense fp32 on this CPU
GOAL_SPEEDUP = 4.0

#: the variants timed, labelled as study 06's deployment table labels them: (method, keep) -> (the comparison's
#: method compressed to ``keep`` or None, then the precision method or None); a precision method alone has keep 1.0
VARIANTS: dict[tuple[str, float], tuple[str | None, str | None]] = {
    ("bf16", 1.0): (None, "bf16"),
    ("int8", 1.0): (None, "int8"),
    **{(f"{m}{'+' + p if p else ''}", k): (m, p or None)
       for m in ("svd", "heads") for k in (0.5, 0.25) for p in ("", "int8", "bf16")},
}


def label(method: str, keep: float) -> str:
    """``"svd+int8 at 0.5"``, ``"bf16"``: a variant's name in the tables."""
    return method if method in ("bf16", "int8") else f"{method} at {keep:g}"


def build(model_spec: str = "minilm", variants: Sequence[tuple[str, float]] | None = None, seed: int = 0):
    """``(models, tokenizer)``: ``models`` maps ``"dense"`` and each variant's :func:`label` to an eval-mode model."""
    from mpstudy import compress, load_model
    from mpstudy.studies.comparison.recipe import ENCODER_LINEAR, compress_to_budget

    dense, tokenizer = load_model(model_spec, task="sst2", seed=seed)
    models = {"dense": dense.eval()}
    for key in variants or list(VARIANTS):
        if key not in VARIANTS:
            raise ValueError(f"unknown variant {key!r}; known: {', '.join(map(str, VARIANTS))}")
        model = copy.deepcopy(dense)
        method, precision = VARIANTS[key]
        if method is not None:  # study 06's own path: the method's budget search, the achieved keep checked
            compress_to_budget(model, method, key[1], seed=seed)
        if precision is not None:
            compress(model, precision, targets=ENCODER_LINEAR)
        models[label(*key)] = model.eval()
    return models, tokenizer


def run(batch: int = 32, seq: int = 64, repeats: int = 30, warmup: int = 3, threads: int = 1,
        model_spec: str = "minilm", variants: Sequence[tuple[str, float]] | None = None,
        log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Time dense fp32 and every variant round-robin; the record with each speed-up's interval."""
    from mpstudy.accounting import count_bytes, count_parameters
    from mpstudy.measure import dummy_batch, forward_latency
    from mpstudy.stats import ratio_interval

    models, tokenizer = build(model_spec, variants)
    inputs = dummy_batch(tokenizer, batch_size=batch, seq_len=seq)
    log(f"timing {len(models)} models round-robin: {repeats} rounds of batch {batch} x {seq}, {threads} thread(s)")
    start = time.perf_counter()
    timing = forward_latency(models, inputs, repeats=repeats, warmup=warmup, threads=threads)
    rows = []
    keys = {label(*key): key for key in VARIANTS}
    for name, model in models.items():
        speed = ratio_interval(timing, "dense", name)  # dense time / variant time, per round
        method, keep = keys.get(name, ("dense", 1.0))
        rows.append({"variant": name, "method": method, "keep": keep, "median_ms": timing.median(name) * 1e3,
                     "speedup": speed.estimate,
                     "speedup_low": speed.low, "speedup_high": speed.high,
                     "stored": count_parameters(model, nonzero=False)["stored"], "bytes": count_bytes(model)["total"]})
    return {"bench": "deployment", "model": model_spec, "batch": batch, "seq": seq, "repeats": repeats,
            "warmup": warmup, "threads": timing.threads, "seconds": time.perf_counter() - start, "rows": rows,
            "goal_speedup": GOAL_SPEEDUP}


def judge(record: dict[str, Any], comparison: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The goal's verdict per task of study 06's record: the fastest variant of its deployment table whose
    "loses at most one point" verdict holds, its speed-up as timed here against ``GOAL_SPEEDUP``."""
    if comparison is None:
        return [{"task": None, "variant": None, "verdict": "not judged", "why": "no study 06 record"}]
    rows = comparison.get("deployment") or []
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    if not tasks:
        return [{"task": None, "variant": None, "verdict": "not judged", "why": "study 06's record has no deployment table"}]
    timed = {(r["method"], float(r["keep"])): r for r in record["rows"] if r["variant"] != "dense"}

    def key(row):  # the typed record keeps the table's label as ``variant`` (``method`` is then the base method)
        return (row.get("variant") or row["method"], float(row["keep"]))

    out = []
    for task in tasks:
        ok = [r for r in rows if r["task"] == task and r["within_1pt"] == "holds" and key(r) in timed]
        if not ok:
            out.append({"task": task, "variant": None, "verdict": "not judged",
                        "why": "no variant timed here loses at most one point over its whole interval in study 06"})
            continue
        best = max(ok, key=lambda r: timed[key(r)]["speedup"])
        row = timed[key(best)]
        verdict = ("met" if row["speedup_low"] >= GOAL_SPEEDUP else
                   "not met" if row["speedup_high"] < GOAL_SPEEDUP else "inconclusive")
        out.append({"task": task, "variant": row["variant"], "verdict": verdict, "speedup": row["speedup"],
                    "interval": [row["speedup_low"], row["speedup_high"]], "regime": best.get("regime"),
                    "vs_dense": [best.get("vs_dense"), best.get("vs_dense_low"), best.get("vs_dense_high")]})
    return out


def render_markdown(record: dict[str, Any]) -> str:
    """The record's table and the goal's verdict, as markdown."""
    out = [f"Forward latency of {record['model']} variants against dense fp32 (batch {record['batch']} x "
           f"{record['seq']} tokens, {record['threads']} thread(s), {record['repeats']} interleaved rounds; speed-up = "
           "median of per-round dense/variant time ratios, 95 % distribution-free interval).", "",
           "| variant | median ms | speed-up | 95 % interval | stored parameters | bytes |",
           "|---|---:|---:|---|---:|---:|"]
    for r in record["rows"]:
        out.append(f"| {r['variant']} | {r['median_ms']:.1f} | {r['speedup']:.2f}x | [{r['speedup_low']:.2f}, "
                   f"{r['speedup_high']:.2f}] | {r['stored']:,} | {r['bytes']:,} |")
    out += ["", f"Goal: the fastest variant that loses at most one point (decided by study 06 on trained models) is "
                f">= {record['goal_speedup']:g}x faster than dense fp32 (met only if the whole interval is):", ""]
    for g in record.get("goal", []):
        where = f"{g['task']}: " if g["task"] else ""
        if g.get("speedup") is None:
            out.append(f"- {where}**{g['verdict']}** ({g['why']})")
        else:
            out.append(f"- {where}**{g['verdict']}**: {g['variant']}, {g['speedup']:.2f}x "
                       f"[{g['interval'][0]:.2f}, {g['interval'][1]:.2f}]")
    return "\n".join(out) + "\n"


def main_run(args) -> Path:
    """``python -m bench deployment``: time, judge against study 06's record, write json + md."""
    import sys

    from mpstudy.records import provenance, write_json_and_markdown

    record = run(batch=args.batch, seq=args.seq, repeats=args.repeats, warmup=args.warmup, threads=args.threads,
                 model_spec=args.model, log=lambda m: print(m, file=sys.stderr, flush=True))
    comparison_path = Path(args.comparison)
    comparison = json.loads(comparison_path.read_text()) if comparison_path.is_file() else None
    record["goal"] = judge(record, comparison)
    record["comparison_record"] = str(comparison_path) if comparison is not None else None
    path = Path(args.out_dir) / "deployment-cpu.json"
    write_json_and_markdown(path, {**record, "provenance": provenance()}, render_markdown(record))
    print(f"wrote {path} and {path.with_suffix('.md')}", file=sys.stderr)
    return path
