"""Forward latency of pruned models against the dense model they come from: unstructured masks
(as trained, and baked into dense weights) versus physically removed attention heads.

Unstructured sparsity zeroes weights inside dense matrices, so dense kernels do the same work;
head removal shrinks the matrices. This script measures both in one process, timed round-robin
(every form runs once per round, so drifts in machine load hit all of them), and reports each
form's time as a ratio to the dense model's. Usage:

    python bench/prune_latency.py                                   # tiny-bert, seconds
    python bench/prune_latency.py --model minilm --batch 32 --seq 64 --repeats 30 --out results/bench/prune_latency.json

Prints one row per form: keep ratios, stored and non-zero parameters, GFLOPs, median latency,
and the time ratio (pruned / dense).
"""
from __future__ import annotations

import argparse

from mpstudy import load_model
from mpstudy.studies.composability import sparsity_latency
from mpstudy.measure import dummy_batch
from mpstudy.prune import generate_configs, prune_variants, pruning_scheme
from mpstudy.records import provenance, write_json_atomic


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-bert", help="load_model spec (tiny-bert, minilm, a hub id...)")
    parser.add_argument("--task", default="sst2", help="task whose head the model gets (seq2seq task for T5)")
    parser.add_argument("--attention-keep", type=float, nargs="+", default=[0.25, 0.5, 0.25])
    parser.add_argument("--linear-keep", type=float, nargs="+", default=[0.3, 0.3, 0.5])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch threads while timing (default: torch's choice)")
    parser.add_argument("--out", default=None, help="also write the rows and provenance as JSON here")
    args = parser.parse_args(argv)
    model, tokenizer = load_model(args.model, task=args.task)
    configs = generate_configs(model, args.attention_keep, args.linear_keep)
    variants = prune_variants(model, pruning_scheme(configs))
    batch = dummy_batch(tokenizer, batch_size=args.batch, seq_len=args.seq)
    table = sparsity_latency(model, configs, variants, batch, repeats=args.repeats, warmup=3, threads=args.threads)
    table["time_ratio"] = 1 / table["speedup"]
    print(f"{args.model}, batch {args.batch} x {args.seq} tokens, {args.repeats} rounds, {table.threads.iloc[0]} threads")
    print(table.drop(columns=["speedup", "threads"]).round(4).to_string(index=False))
    rows = table.to_dict(orient="records")
    if args.out:
        write_json_atomic(args.out, {"args": vars(args), "provenance": provenance(), "rows": rows})
    return rows


if __name__ == "__main__":
    main()
