"""Whole-model forward latency of SVD-factorized models against the dense one, across global ranks.

Every transformer-block matrix of the model (``--targets``, default all six per layer) is factorized
at one global rank ``r``; the copy is timed alternately with the dense model on the same batch, in
this process (``mpstudy.measure.compare_latency``), so the speed-up is a ratio and the machine's speed
cancels out. The FLOP ratio of the whole forward (``torch.utils.flop_counter``) is printed beside it:
SVD is the one factorization whose FLOPs really drop, and this checks whether time follows.
Noach & Goldberg report a 1.45x faster BERT-base at r = 245 (their budget); the last column is
this machine's answer for the given model. Usage:

    python bench/svd_rank_curve.py                                  # all-MiniLM-L6-v2, batch 32 x 64
    python bench/svd_rank_curve.py --model tiny-bert --ranks 4 8 16 --repeats 5
    python bench/svd_rank_curve.py --batch-size 1 --seq-len 128 --out results/bench/svd_rank_curve_b1.json

``--threads`` fixes torch's thread count while timing (it is recorded in each row); without it,
torch's own choice (``OMP_NUM_THREADS``) is used.
"""
from __future__ import annotations

import argparse
import os

import torch

from mpstudy import load_model
from mpstudy.measure import dummy_batch
from mpstudy.records import provenance, write_json_atomic
from mpstudy.studies.svd_distillation import rank_latency_curve, rank_for_budget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="anything mpstudy.load_model accepts (an encoder classifier)")
    parser.add_argument("--ranks", type=int, nargs="+", default=None,
                        help="global ranks (default: the ranks keeping 20, 40, 60 and 70 %% of the targeted weights)")
    parser.add_argument("--targets", default="all-linear")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads while timing (default: torch's choice)")
    parser.add_argument("--out", default=None, help="write the rows and provenance as JSON here")
    args = parser.parse_args()
    if args.batch_size < 1 or args.seq_len < 2 or args.repeats < 1:
        parser.error(f"--batch-size, --seq-len and --repeats must be positive (got {args.batch_size}, {args.seq_len}, {args.repeats})")

    model, tokenizer = load_model(args.model, device=args.device)
    ranks = args.ranks or [rank_for_budget(model, args.targets, b) for b in (0.2, 0.4, 0.6, 0.7)]
    batch = dummy_batch(tokenizer, batch_size=args.batch_size, seq_len=args.seq_len, device=args.device)
    rows = rank_latency_curve(model, batch, ranks, targets=args.targets, repeats=args.repeats, threads=args.threads)
    print(f"{args.model}, batch {args.batch_size} x {args.seq_len}, {rows[0]['threads']} thread(s), {args.device}")
    print(f"{'rank':>5} {'kept':>6} {'FLOPs':>6} {'time':>6} {'speed-up':>8}   dense ms  low-rank ms")
    for r in rows:
        print(f"{r['rank']:>5} {r['kept_fraction']:>6.3f} {r['flop_ratio']:>6.3f} {1 / r['speedup']:>6.3f} {r['speedup']:>8.2f}"
              f"   {r['dense_ms']:>8.2f}  {r['lowrank_ms']:>11.2f}")
    if args.out:
        write_json_atomic(args.out, {"bench": "svd_rank_curve", "args": vars(args), "rows": rows,
                                     "provenance": provenance(device=args.device, omp_threads=os.environ.get("OMP_NUM_THREADS"))})


if __name__ == "__main__":
    main()
