"""Speed of the one loop: bf16 against fp32 training and evaluation, and the loop's own overhead.

Three measurements on MiniLM (``load_model("minilm", task="sst2")``) and SST-2 rows, each a set of
callables timed round-robin by :func:`mpstudy.measure.time_interleaved` (every round runs each once,
so load on the shared machine hits all alike; ratios are medians of per-round ratios, with the
distribution-free interval of :func:`mpstudy.stats.ratio_interval`):

1. **Training** -- ``train()`` for ``steps`` optimizer steps on batches of 32 rows (max_length 64),
   evaluation replaced by a constant so only the steps are timed. All contenders draw the same batches
   (the same seed; no length bucketing, which would change them):

   * ``fp32, issue-14 loop``: the loop before this work, ``mpstudy/train.py`` at ``baseline_commit``
     loaded from git ("today's fp32 train()");
   * ``fp32`` and ``bf16``: this ``train()`` with ``precision="fp32"`` / ``"bf16"``;
   * ``raw fp32`` and ``raw bf16``: a hand-written PyTorch loop doing the same steps (same model,
     AdamW groups and implementation (fused), schedule, clipping, the same batches already collated,
     the same autocast).

   Goals: ``bf16`` at least 1.9x faster than the issue-14 loop; ``bf16`` (and ``fp32``) within 5 % of
   the raw loop (the overhead).
2. **Evaluation** -- ``evaluate()`` over ``eval_rows`` SST-2 dev rows (batch 64, max_length 64): the
   issue-14 ``evaluate`` (fp32, rows in file order, tokenized per call) against this ``evaluate`` in
   fp32 and in bf16 (length-bucketed, cached tokens). Goal: bf16 at least 2.5x faster than the
   issue-14 evaluation.

The same model object serves every contender (weights change from call to call; the time of a step
does not depend on their values).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent

#: the issue's goals: key -> (statement, baseline, candidate, threshold, direction); a speed-up is the
#: baseline's time over the candidate's, an overhead the candidate's over the raw loop's
GOALS = {
    "train_speedup": ("bf16 train() step >= 1.9x faster than the issue-14 fp32 train()",
                      "fp32, issue-14 loop", "bf16", 1.9, "at least"),
    "eval_speedup": ("bf16 evaluate() >= 2.5x faster than the issue-14 fp32 evaluate()",
                     "fp32, issue-14 evaluate", "bf16", 2.5, "at least"),
    "overhead_bf16": ("the loop's time over a raw PyTorch loop's, bf16: <= 1.05 (overhead <= 5 %)",
                      "raw bf16", "bf16", 1.05, "at most"),
    "overhead_fp32": ("the loop's time over a raw PyTorch loop's, fp32: <= 1.05 (overhead <= 5 %)",
                      "raw fp32", "fp32", 1.05, "at most"),
}


def baseline_module(commit: str) -> types.ModuleType:
    """``mpstudy/train.py`` as it was at ``commit`` (read with git), loaded as a module of the
    ``mpstudy`` package, so its relative imports use today's other modules."""
    source = subprocess.run(["git", "show", f"{commit}:mpstudy/train.py"], cwd=ROOT, capture_output=True, text=True)
    if source.returncode != 0:
        raise ValueError(f"cannot read mpstudy/train.py at commit {commit!r} with git: {source.stderr.strip()[:200]}")
    name = f"mpstudy._train_at_{commit}"
    module = types.ModuleType(name)
    module.__package__, module.__file__ = "mpstudy", f"<git {commit}:mpstudy/train.py>"
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(source.stdout, module.__file__, "exec"), module.__dict__)
    return module


def _raw_loop(model, batches: list[dict], precision: str, lr: float, weight_decay: float, max_grad_norm: float,
              warmup_ratio: float) -> Callable[[], None]:
    """A hand-written loop over ``batches``: what ``train()`` does per step, nothing else."""
    import torch

    from mpstudy.train import default_param_groups, linear_schedule

    def run() -> None:
        model.train()
        groups = default_param_groups(model, weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=lr, fused=True)  # as train() builds it (mpstudy.train._adamw)
        total = len(batches)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(total, int(warmup_ratio * total)))
        params = [p for g in groups for p in g["params"]]
        for batch in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        model.eval()

    return run


def _ratio(timing, numerator: str, denominator: str) -> dict[str, Any]:
    from mpstudy.stats import ratio_interval

    iv = ratio_interval(timing, numerator, denominator)
    return {"numerator": numerator, "denominator": denominator, "median": iv.estimate, "low": iv.low,
            "high": iv.high, "level": iv.level, "rounds": iv.n, "method": iv.method}


def _timing_dict(timing) -> dict[str, Any]:
    return {"seconds": timing.seconds, "order": timing.order, "threads": timing.threads, "repeats": timing.repeats,
            "warmup": timing.warmup, "median_s": {k: timing.median(k) for k in timing.seconds},
            "iqr_s": {k: timing.iqr(k) for k in timing.seconds}}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_train_speed(rows: int = 256, eval_rows: int = 256, steps: int = 4, repeats: int = 10, warmup: int = 1,
                    threads: int = 2, data_dir: str = "/work/shared/data", baseline_commit: str = "f57282e",
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Time the three measurements (module docstring); returns the record."""
    import torch

    from mpstudy import TrainConfig, load_model, load_task, train
    from mpstudy.measure import time_interleaved
    from mpstudy.stats import band
    from mpstudy.tasks import make_collate
    from mpstudy.train import batch_plan, bf16_supported, evaluate

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    old = baseline_module(baseline_commit)
    task = load_task("sst2", data_dir=data_dir, max_train=rows, max_eval=eval_rows, seed=0)
    model, tokenizer = load_model("minilm", task="sst2")
    batch_size, max_length, seed = 32, 64, 0
    base = dict(lr=5e-5, batch_size=batch_size, max_length=max_length, max_steps=steps, progress=False,
                keep_best=False, device="cpu", seed=seed)
    constant = lambda m, s: {"accuracy": 0.0}  # noqa: E731 - evaluation is timed separately

    # the batches every contender steps through: the loop's seeded shuffle, collated once for the raw loop
    collate = make_collate(task, tokenizer, max_length=max_length)
    plan = batch_plan(len(task.train), batch_size, torch.Generator().manual_seed(seed))[:steps]
    if len(plan) < steps:
        raise ValueError(f"{rows} rows give {len(plan)} batches of {batch_size}; need --rows >= {steps * batch_size}")
    batches = [collate([task.train[i] for i in idx]) for idx in plan]
    raw = dict(lr=5e-5, weight_decay=0.01, max_grad_norm=1.0, warmup_ratio=0.1)
    calls = {
        "fp32, issue-14 loop": lambda: old.train(model, tokenizer, task, old.TrainConfig(**base), eval_fn=constant),
        "fp32": lambda: train(model, tokenizer, task, TrainConfig(**base, precision="fp32"), eval_fn=constant),
        "bf16": lambda: train(model, tokenizer, task, TrainConfig(**base, precision="bf16"), eval_fn=constant),
        "raw fp32": _raw_loop(model, batches, "fp32", **raw),
        "raw bf16": _raw_loop(model, batches, "bf16", **raw),
    }
    load_before = _load()
    log(f"training: {len(calls)} contenders x {repeats} rounds of {steps} steps, {threads} threads, load {load_before}")
    start = time.perf_counter()
    training = time_interleaved(calls, repeats=repeats, warmup=warmup, threads=threads)
    log(f"training timed in {time.perf_counter() - start:.0f} s; medians per step: "
        + ", ".join(f"{k} {training.median(k) / steps:.3f} s" for k in calls))

    eval_kwargs = dict(batch_size=64, max_length=max_length)
    eval_calls = {
        "fp32, issue-14 evaluate": lambda: old.evaluate(model, tokenizer, task, **eval_kwargs),
        "fp32": lambda: evaluate(model, tokenizer, task, precision="fp32", **eval_kwargs),
        "bf16": lambda: evaluate(model, tokenizer, task, precision="bf16", **eval_kwargs),
        "bf16, file order": lambda: evaluate(model, tokenizer, task, precision="bf16", bucket=False, **eval_kwargs),
    }
    start = time.perf_counter()
    evaluation = time_interleaved(eval_calls, repeats=repeats, warmup=warmup, threads=threads)
    log(f"evaluation timed in {time.perf_counter() - start:.0f} s; medians: "
        + ", ".join(f"{k} {evaluation.median(k):.3f} s" for k in eval_calls))
    load_after = _load()

    ratios = {
        "train bf16 speed-up over issue-14 fp32": _ratio(training, "fp32, issue-14 loop", "bf16"),
        "train bf16 speed-up over fp32": _ratio(training, "fp32", "bf16"),
        "train fp32: issue-14 loop / this loop": _ratio(training, "fp32, issue-14 loop", "fp32"),
        "overhead bf16 (loop / raw)": _ratio(training, "bf16", "raw bf16"),
        "overhead fp32 (loop / raw)": _ratio(training, "fp32", "raw fp32"),
        "raw bf16 speed-up over raw fp32": _ratio(training, "raw fp32", "raw bf16"),
        "eval bf16 speed-up over issue-14 fp32": _ratio(evaluation, "fp32, issue-14 evaluate", "bf16"),
        "eval bf16 speed-up over fp32 (both bucketed)": _ratio(evaluation, "fp32", "bf16"),
        "eval bucketing speed-up (bf16)": _ratio(evaluation, "bf16, file order", "bf16"),
    }
    goals = []
    for key, (statement, baseline, candidate, threshold, direction) in GOALS.items():
        from mpstudy.stats import ratio_interval

        timing = evaluation if key == "eval_speedup" else training
        # a speed-up is baseline / candidate; an overhead candidate / raw
        iv = ratio_interval(timing, baseline, candidate) if direction == "at least" else \
            ratio_interval(timing, candidate, baseline)
        verdict = band(iv, threshold, direction)
        goals.append({"goal": key, "statement": statement, "measured": iv.estimate, "low": iv.low, "high": iv.high,
                      "threshold": threshold, "direction": direction, "verdict": verdict.verdict,
                      "met": (iv.estimate >= threshold) if direction == "at least" else (iv.estimate <= threshold),
                      "reason": verdict.reason})
    return {
        "bench": "train-speed",
        "settings": {"model": "minilm", "task": "sst2", "rows": rows, "eval_rows": eval_rows, "steps": steps,
                     "batch_size": batch_size, "max_length": max_length, "eval_batch_size": 64, "threads": threads,
                     "repeats": repeats, "warmup": warmup, "baseline_commit": baseline_commit,
                     "cpu_native_bf16": bf16_supported("cpu")},
        "load_average": {"before": load_before, "after": load_after},
        "training": _timing_dict(training),
        "evaluation": _timing_dict(evaluation),
        "ratios": ratios,
        "goals": goals,
    }


def render_markdown(record: dict[str, Any]) -> str:
    s = record["settings"]
    load = record["load_average"]
    out = [f"MiniLM on SST-2 rows, batch {s['batch_size']} x max_length {s['max_length']}, {s['threads']} torch threads, "
           f"{s['repeats']} interleaved rounds (after {s['warmup']} untimed), CPU with native bf16: "
           f"{s['cpu_native_bf16']}; load average (1/5/15 min) {load['before']} before, {load['after']} after. "
           f"Training: {s['steps']} steps per timed train() call; evaluation: {s['eval_rows']} dev rows, batch "
           f"{s['eval_batch_size']}. \"issue-14\" is the loop of commit {s['baseline_commit']}.", ""]
    out += ["| training, per step | median s | IQR s |", "|---|---|---|"]
    t = record["training"]
    out += [f"| {k} | {t['median_s'][k] / s['steps']:.3f} | {t['iqr_s'][k] / s['steps']:.3f} |" for k in t["order"]]
    out += ["", "| evaluation, per call | median s | IQR s |", "|---|---|---|"]
    e = record["evaluation"]
    out += [f"| {k} | {e['median_s'][k]:.3f} | {e['iqr_s'][k]:.3f} |" for k in e["order"]]
    out += ["", "| ratio (median of per-round ratios) | value | 95 % interval |", "|---|---|---|"]
    out += [f"| {k} | {r['median']:.3f} | [{r['low']:.3f}, {r['high']:.3f}] |" for k, r in record["ratios"].items()]
    out += ["", "| goal | measured | 95 % interval | threshold | met (median) | verdict (interval) |", "|---|---|---|---|---|---|"]
    out += [f"| {g['statement']} | {g['measured']:.3f} | [{g['low']:.3f}, {g['high']:.3f}] | {g['threshold']} | "
            f"{'met' if g['met'] else '**missed**'} | {g['verdict']} |" for g in record["goals"]]
    return "\n".join(out) + "\n"


def write(record: dict[str, Any], path: Path) -> None:
    from mpstudy.records import provenance, write_json_and_markdown

    markdown = render_markdown(record)  # render first: a bad record writes nothing
    write_json_and_markdown(path, {**record, "provenance": provenance()}, markdown)


if __name__ == "__main__":  # python bench/train_speed.py [...] is python -m bench train-speed [...]
    sys.path.insert(0, str(ROOT))
    from bench.__main__ import main

    sys.exit(main(["train-speed", *sys.argv[1:]]))
