"""Quality parity of bf16 training: MiniLM fine-tuned on SST-2 in bf16 and in fp32, same everything else.

For each seed, two runs start from the same weights (``load_model("minilm", seed=s)``: the same
classifier head) and see the same batches in the same order (``TrainConfig.seed = s``); one trains in
fp32, the other with ``precision="bf16"`` (bf16 autocast, fp32 master weights). Each is scored on the
full SST-2 dev set (872 sentences) in its own precision; the bf16 model is also scored in fp32, so a
gap can be told apart from evaluation precision. The claim checked: the mean over seeds of bf16's dev
accuracy is within 0.5 point of fp32's, i.e. the paired difference ``bf16 - fp32`` (paired by seed and
by dev example, :func:`mpstudy.stats.paired_difference`) is at least -0.5 point, judged by its whole
95 % interval (:func:`mpstudy.stats.band`).

The record is written after every run (``<out-dir>/bf16-parity-<device>.json`` and ``.md``); a
rerun with the same settings skips the runs already in it, so an interrupted campaign resumes.

    OMP_NUM_THREADS=1 python -m bench bf16-parity                 # 3 seeds x 2 precisions, 1 thread
    python -m bench bf16-parity --rows 1000 --epochs 1 --seeds 0   # a quick look
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

#: the claim: bf16's mean dev accuracy is at most this many points below fp32's
TOLERANCE_POINTS = 0.5


def settings(rows: int, epochs: float, seeds: list[int], lr: float, batch_size: int, max_length: int,
             bucket_batches: int | None, threads: int, data_dir: str) -> dict[str, Any]:
    return {"model": "minilm", "task": "sst2", "rows": rows, "epochs": epochs, "seeds": list(seeds), "lr": lr,
            "batch_size": batch_size, "max_length": max_length, "bucket_batches": bucket_batches,
            "threads": threads, "data_dir": data_dir, "warmup_ratio": 0.1, "weight_decay": 0.01,
            "eval_batch_size": 64, "subset_seed": 0}


def _one_run(s: dict[str, Any], seed: int, precision: str, log: Callable[[str], None]) -> tuple[dict[str, Any], list]:
    import torch

    from mpstudy import TrainConfig, load_model, load_task, train
    from mpstudy.train import predict

    task = load_task("sst2", data_dir=s["data_dir"], max_train=s["rows"], seed=s["subset_seed"])
    model, tokenizer = load_model("minilm", task=task, seed=seed)
    config = TrainConfig(lr=s["lr"], epochs=s["epochs"], batch_size=s["batch_size"], max_length=s["max_length"],
                         eval_batch_size=s["eval_batch_size"], warmup_ratio=s["warmup_ratio"],
                         weight_decay=s["weight_decay"], seed=seed, device="cpu", precision=precision,
                         bucket_batches=s["bucket_batches"], progress=False, keep_best=False,
                         eval_every=10**9)  # evaluated once, after the last step: no selection on dev
    torch.set_num_threads(s["threads"])
    start = time.perf_counter()
    result = train(model, tokenizer, task, config)
    seconds = time.perf_counter() - start
    run: dict[str, Any] = {"seed": seed, "precision": precision, "steps": result.steps,
                           "train_s": result.history[-1]["train_s"], "wall_s": seconds,
                           "final_loss": result.history[-1].get("loss"),
                           "dev_accuracy": result.best_metrics["accuracy"]}
    kwargs = dict(batch_size=s["eval_batch_size"], max_length=s["max_length"])
    preds, refs = predict(model, tokenizer, task, precision=precision, **kwargs)
    run["predictions"] = preds
    if precision != "fp32":  # the same bf16-trained weights, scored in fp32
        fp32_preds, _ = predict(model, tokenizer, task, precision="fp32", **kwargs)
        run["dev_accuracy_fp32_eval"] = sum(p == r for p, r in zip(fp32_preds, refs)) / len(refs)
    log(f"seed {seed} {precision}: dev accuracy {run['dev_accuracy']:.4f} after {result.steps} steps "
        f"({run['train_s'] / result.steps:.2f} s/step, {seconds:.0f} s in all)")
    return run, refs


def summarize(record: dict[str, Any]) -> dict[str, Any]:
    """Means, per-seed paired differences, the paired interval of ``bf16 - fp32`` and the verdict."""
    from mpstudy.stats import band, paired_difference

    runs = {(r["seed"], r["precision"]): r for r in record["runs"]}
    seeds = [s for s in record["settings"]["seeds"] if (s, "fp32") in runs and (s, "bf16") in runs]
    out: dict[str, Any] = {"paired_seeds": seeds}
    for p in ("fp32", "bf16"):
        accs = [r["dev_accuracy"] for (s, q), r in runs.items() if q == p]
        out[f"mean_{p}"] = sum(accs) / len(accs) if accs else None
    out["per_seed_difference_points"] = {s: 100 * (runs[s, "bf16"]["dev_accuracy"] - runs[s, "fp32"]["dev_accuracy"])
                                         for s in seeds}
    if not seeds:
        return out
    refs = record["references"]
    a = {s: runs[s, "bf16"]["predictions"] for s in seeds}
    b = {s: runs[s, "fp32"]["predictions"] for s in seeds}
    diff = paired_difference("sst2", a if len(seeds) > 1 else a[seeds[0]], b if len(seeds) > 1 else b[seeds[0]], refs)
    verdict = band(diff, -TOLERANCE_POINTS / 100, "at least")
    out["difference"] = {"estimate_points": 100 * diff.estimate, "low_points": 100 * diff.low,
                         "high_points": 100 * diff.high, "level": diff.level, "seeds": diff.seeds,
                         "method": diff.method, "paired_by": diff.paired_by}
    out["verdict"] = {"claim": f"bf16 mean dev accuracy >= fp32's - {TOLERANCE_POINTS} point",
                      "verdict": verdict.verdict, "reason": verdict.reason,
                      "mean_within_tolerance": 100 * diff.estimate >= -TOLERANCE_POINTS}
    return out


def render_markdown(record: dict[str, Any]) -> str:
    s, summary = record["settings"], record.get("summary", {})
    lines = [f"bf16 against fp32 training: MiniLM on SST-2 ({s['rows']} training rows, full dev set of "
             f"{len(record.get('references', []))}), lr {s['lr']}, {s['epochs']} epoch(s), batch {s['batch_size']}, "
             f"max_length {s['max_length']}, length buckets of {s['bucket_batches']} batches, {s['threads']} thread(s); "
             f"dev accuracy after the last step, each model scored in its own precision.", "",
             "| seed | fp32 | bf16 | bf16 - fp32 (points) | bf16 model scored in fp32 | fp32 s/step | bf16 s/step |",
             "|---|---|---|---|---|---|---|"]
    runs = {(r["seed"], r["precision"]): r for r in record["runs"]}
    for seed in s["seeds"]:
        f, b = runs.get((seed, "fp32")), runs.get((seed, "bf16"))
        cell = lambda r, k, fmt="{:.4f}": "-" if r is None or r.get(k) is None else fmt.format(r[k])  # noqa: E731
        d = "-" if f is None or b is None else f"{100 * (b['dev_accuracy'] - f['dev_accuracy']):+.2f}"
        speed = lambda r: "-" if r is None else f"{r['train_s'] / r['steps']:.2f}"  # noqa: E731
        lines.append(f"| {seed} | {cell(f, 'dev_accuracy')} | {cell(b, 'dev_accuracy')} | {d} | "
                     f"{cell(b, 'dev_accuracy_fp32_eval')} | {speed(f)} | {speed(b)} |")
    if summary.get("mean_fp32") is not None and summary.get("mean_bf16") is not None:
        lines.append(f"| mean | {summary['mean_fp32']:.4f} | {summary['mean_bf16']:.4f} | "
                     f"{100 * (summary['mean_bf16'] - summary['mean_fp32']):+.2f} | | | |")
    if "difference" in summary:
        d, v = summary["difference"], summary["verdict"]
        lines += ["", f"Paired difference bf16 - fp32: {d['estimate_points']:+.2f} points, {d['level']:.0%} interval "
                      f"[{d['low_points']:+.2f}, {d['high_points']:+.2f}] ({d['method']}).",
                  f"Claim \"{v['claim']}\": **{v['verdict']}** -- {v['reason']}."]
    if record.get("note"):
        lines += ["", record["note"]]
    return "\n".join(lines) + "\n"


def write(record: dict[str, Any], path: Path) -> None:
    from mpstudy.records import provenance, write_json_and_markdown

    markdown = render_markdown(record)  # render first: a bad record writes nothing
    write_json_and_markdown(path, {**record, "provenance": provenance()}, markdown)


def run_parity(out: Path, rows: int = 3000, epochs: float = 3.0, seeds: tuple[int, ...] = (0, 1, 2), lr: float = 5e-5,
               batch_size: int = 32, max_length: int = 64, bucket_batches: int | None = 8, threads: int = 1,
               data_dir: str = "/work/shared/data", note: str = "",
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the campaign, writing the record to ``out`` after every run."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    s = settings(rows, epochs, list(seeds), lr, batch_size, max_length, bucket_batches, threads, data_dir)
    record: dict[str, Any] = {"bench": "bf16-parity", "settings": s, "runs": [], "note": note}
    if out.exists():
        old = json.loads(out.read_text())
        if old.get("settings") == s:
            record["runs"], record["references"] = old["runs"], old.get("references")
            log(f"resuming: {len(record['runs'])} run(s) already in {out}")
    done = {(r["seed"], r["precision"]) for r in record["runs"]}
    for seed in seeds:  # fp32 then bf16 for each seed: a partial record is still paired
        for precision in ("fp32", "bf16"):
            if (seed, precision) in done:
                continue
            run, refs = _one_run(s, seed, precision, log)
            record["runs"].append(run)
            record["references"] = refs
            record["summary"] = summarize(record)
            write(record, out)
    record["summary"] = summarize(record)
    write(record, out)
    return record


if __name__ == "__main__":  # python bench/bf16_parity.py [...] is python -m bench bf16-parity [...]
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.__main__ import main

    sys.exit(main(["bf16-parity", *sys.argv[1:]]))
