"""Train the scratch T5 on Multi30K en->de and score it on test2016: the seq2seq studies' dense model.

    OMP_NUM_THREADS=1 python -m bench.train_translation --data-dir ../shared/data            # the full run
    OMP_NUM_THREADS=1 python -m bench.train_translation --data-dir ../shared/data --epochs 0.05 \\
        --max-train 2000 --test-rows 100 --name smoke                                       # minutes

One call of :func:`mpstudy.translation.scratch_translation_model` (the model is cached: a second run
with the same recipe only re-scores it), then greedy decoding of test2016 (1,000 pairs, never seen
in training or checkpoint selection), sacrebleu corpus BLEU with its example-bootstrap interval
(:func:`mpstudy.stats.score_interval`, BCa, one seed) and the copy-the-source floor
(:func:`mpstudy.stats.trivial_score`). The record goes atomically to
``<out-dir>/translation/<name>.json`` (:func:`mpstudy.records.write_record`, with provenance): the
recipe, steps and epochs, the validation BLEU trajectory, test BLEU and interval, wall time and
CPU-hours (this process's CPU time, all threads: the issue's budget is BLEU >= 25 in <= 2 CPU-hours),
the cache key and a few sample translations.

Bad arguments give a one-line error and exit status 2, before any data or model is loaded.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: the issue's goal for the seq2seq model
GOAL_BLEU, GOAL_CPU_HOURS = 25.0, 2.0


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from mpstudy.translation import T5_SIZES, TRANSLATION_CONFIG as C

    p = argparse.ArgumentParser(prog="python -m bench.train_translation", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("MPSTUDY_DATA"),
                   help="folder holding multi30k/ (default $MPSTUDY_DATA)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=sorted(T5_SIZES), default="small")
    p.add_argument("--vocab-size", type=_positive(int), default=8000)
    p.add_argument("--epochs", type=_positive(float), default=C.epochs)
    p.add_argument("--max-steps", type=_positive(int), default=None, help="overrides --epochs")
    p.add_argument("--lr", type=_positive(float), default=C.lr)
    p.add_argument("--batch-size", type=_positive(int), default=C.batch_size)
    p.add_argument("--warmup-ratio", type=float, default=C.warmup_ratio)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--embedding-lr-scale", type=_positive(float), default=80.0,
                   help="the shared embedding's learning rate over --lr (mpstudy.translation.t5_param_groups)")
    p.add_argument("--eval-every", type=_positive(int), default=None,
                   help="steps between validation-BLEU evaluations (default: once per epoch)")
    p.add_argument("--max-new-tokens", type=_positive(int), default=C.max_new_tokens)
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default=C.precision)
    p.add_argument("--max-train", type=_positive(int), default=None, help="train on a seeded subset (smoke runs)")
    p.add_argument("--max-eval", type=_positive(int), default=None, help="validation rows used to pick the checkpoint")
    p.add_argument("--test-rows", type=_positive(int), default=None, help="score on a seeded subset of test2016")
    p.add_argument("--threads", type=_positive(int), default=1, help="torch intra-op threads")
    p.add_argument("--resamples", type=_positive(int), default=2000, help="bootstrap resamples of the interval")
    p.add_argument("--cache-dir", default=None, help="default $MPSTUDY_CACHE or ~/.cache/mpstudy")
    p.add_argument("--out-dir", default="results", help="the record goes to <out-dir>/translation/<name>.json")
    p.add_argument("--name", default=None, help="record name (default t5-<size>-seed<seed>)")
    p.add_argument("--progress", action="store_true", help="show the training progress bar")
    args = p.parse_args(argv)
    if not 0 <= args.warmup_ratio < 1:
        p.error(f"--warmup-ratio must be in [0, 1), got {args.warmup_ratio}")
    if not 0 <= args.label_smoothing < 1 or not 0 <= args.dropout < 1:
        p.error(f"--label-smoothing and --dropout must be in [0, 1), got {args.label_smoothing} and {args.dropout}")
    if args.data_dir is None or not Path(args.data_dir, "multi30k").is_dir():
        p.error(f"--data-dir must be a folder holding multi30k/ (or set MPSTUDY_DATA), got {args.data_dir!r}")
    args.name = args.name or f"t5-{args.size}-seed{args.seed}"
    if "/" in args.name or args.name.startswith("."):
        p.error(f"--name must be a plain file name, got {args.name!r}")
    return args


def run(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    import torch

    from mpstudy.metrics import bleu
    from mpstudy.records import provenance, write_record
    from mpstudy.stats import score_interval, trivial_score
    from mpstudy.tasks import load_task, load_test_split
    from mpstudy.train import predict
    from mpstudy.translation import TRANSLATION_CONFIG, scratch_translation_model

    torch.set_num_threads(args.threads)
    wall, cpu = time.perf_counter(), time.process_time()
    task = load_task("multi30k", data_dir=args.data_dir, max_train=args.max_train, max_eval=args.max_eval,
                     seed=args.seed)
    config = replace(TRANSLATION_CONFIG, lr=args.lr, epochs=args.epochs, max_steps=args.max_steps,
                     batch_size=args.batch_size, warmup_ratio=args.warmup_ratio, eval_every=args.eval_every,
                     max_new_tokens=args.max_new_tokens, precision=args.precision, progress=args.progress)
    model, tokenizer, info = scratch_translation_model(seed=args.seed, size=args.size, config=config,
                                                       cache_dir=args.cache_dir, task=task, vocab_size=args.vocab_size,
                                                       label_smoothing=args.label_smoothing, dropout=args.dropout,
                                                       embedding_lr_scale=args.embedding_lr_scale)
    print(f"{'loaded' if info['cached'] else 'trained'} {info['path']}: validation BLEU {info['dev_metrics']}",
          file=sys.stderr, flush=True)

    test = load_test_split(task, data_dir=args.data_dir, max_rows=args.test_rows, seed=args.seed)
    decode_start = time.perf_counter()
    preds, refs = predict(model, tokenizer, test, split="dev", batch_size=config.eval_batch_size,
                          max_length=config.max_length, max_new_tokens=config.max_new_tokens, precision=config.precision)
    decode_s = time.perf_counter() - decode_start
    interval = score_interval("multi30k", preds, refs, resamples=args.resamples, seed=args.seed)
    sources = [r["source"] for r in test.dev]
    result = info["result"]
    steps_per_epoch = -(-len(task.train) // config.batch_size)
    # this run's cost: the training's (from the cache entry when it was loaded) plus this scoring
    score_cpu = time.process_time() - cpu - (0.0 if info["cached"] else info["cpu_seconds"])
    train_cpu = info["cpu_seconds"]
    record = {
        "model": {"architecture": "t5", "size": args.size, "vocab_size": info["vocab_size"], "params": info["params"],
                  "cache_key": info["cache_key"], "path": info["path"], "cached": info["cached"]},
        "recipe": {"train_config": info["train_config"], "label_smoothing": info["label_smoothing"],
                   "dropout": info["dropout"], "embedding_lr_scale": info["embedding_lr_scale"],
                   "param_groups": "AdamW rates relative to each weight's T5 init std (t5_param_groups)",
                   "tokenizer": "BPE on the training split (source + target), T5 specials",
                   "decoding": f"greedy, max_new_tokens {config.max_new_tokens}"},
        "seed": args.seed,
        "data": {"train_rows": len(task.train), "validation_rows": len(task.dev), "test_rows": len(test.dev),
                 "files": task.source.get("files")},
        "steps": result["steps"], "epochs": result["steps"] / steps_per_epoch, "best_step": result["best_step"],
        "stopped_early": result["stopped_early"],
        "validation_bleu": info["dev_metrics"].get("bleu"),
        "validation_trajectory": [{k: h[k] for k in ("step", "dev_bleu", "elapsed_s", "train_s") if k in h}
                                  for h in result["history"] if "dev_bleu" in h],
        "train_loss_trajectory": [{k: h.get(k) for k in ("step", "loss", "nll")} for h in result["history"]
                                  if h["step"] % 200 == 0 or h["step"] == result["steps"]],
        "test2016": {"bleu": bleu(preds, refs), "interval": interval.as_dict(), "copy_source_bleu": trivial_score(
                     "multi30k", refs, sources=sources), "decode_seconds": decode_s},
        "train_wall_seconds": info["wall_seconds"], "train_cpu_seconds": train_cpu,
        "cpu_hours": train_cpu / 3600, "torch_threads": info["torch_threads"],
        "score_cpu_seconds": score_cpu,
        "goal": {"bleu_at_least": GOAL_BLEU, "cpu_hours_at_most": GOAL_CPU_HOURS,
                 "bleu_met": bleu(preds, refs) >= GOAL_BLEU, "interval_low_met": interval.low >= GOAL_BLEU,
                 "cpu_hours_met": train_cpu / 3600 <= GOAL_CPU_HOURS},
        "samples": [{"source": s, "reference": r, "prediction": p} for s, r, p in list(zip(sources, refs, preds))[:5]],
        "wall_seconds": time.perf_counter() - wall,
    }
    path = write_record(args.out_dir, "translation", args.name, {**record, "provenance": provenance()})
    return path, record


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    path, record = run(args)
    test = record["test2016"]
    print(f"wrote {path}: test2016 BLEU {test['bleu']:.2f} [{test['interval']['low']:.2f}, "
          f"{test['interval']['high']:.2f}] (copy-source {test['copy_source_bleu']:.2f}), {record['steps']} steps "
          f"({record['epochs']:.1f} epochs), {record['cpu_hours']:.2f} CPU-hours", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
