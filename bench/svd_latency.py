"""Forward latency of a truncated-SVD layer against the dense nn.Linear it replaces, across ranks.

SVD is the one factorization whose FLOPs really drop (r(m+n) instead of mn multiply-adds per
token); this script measures whether time drops with them. Dense and factorized layers are timed
in the same process on the same input, interleaved, and reported as ratios, so machine speed
cancels out. Usage:

    python bench/svd_latency.py                         # MiniLM (384/1536) and BERT-base (768/3072) shapes
    python bench/svd_latency.py --tokens 2048 --repeats 30 --out results/bench/svd_latency.json

Prints one row per (shape, kept ratio): rank, FLOP ratio, measured time ratio (factorized/dense).
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

from mpstudy.layers import LowRankLinear
from mpstudy.measure import time_interleaved
from mpstudy.records import provenance, write_json_atomic

SHAPES = {"minilm-attn": (384, 384), "minilm-ffn": (384, 1536), "bert-attn": (768, 768), "bert-ffn": (768, 3072)}


@torch.inference_mode()
def bench(in_f: int, out_f: int, ratios: list[float], tokens: int, repeats: int, device: str,
          threads: int | None = None) -> list[dict]:
    torch.manual_seed(0)
    dense = nn.Linear(in_f, out_f).to(device)
    x = torch.randn(tokens, in_f, device=device)
    rows = []
    for ratio in ratios:
        low = LowRankLinear.from_dense(dense, keep=ratio)
        # interleaved, so drifts in machine load hit both equally
        timing = time_interleaved({"dense": lambda: dense(x), "lowrank": lambda: low(x)}, repeats=repeats, warmup=3,
                                  threads=threads, device=device)
        d, l = timing.median("dense"), timing.median("lowrank")
        rows.append({"in": in_f, "out": out_f, "ratio": ratio, "rank": low.rank,
                     "flop_ratio": low.rank * (in_f + out_f) / (in_f * out_f),
                     "dense_ms": d * 1e3, "lowrank_ms": l * 1e3, "time_ratio": l / d, "threads": timing.threads})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048, help="rows of the input (batch x sequence length)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.9, 0.7, 0.5, 0.3, 0.1])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads while timing (default: torch's choice)")
    parser.add_argument("--out", default=None, help="write the rows and provenance as JSON here")
    args = parser.parse_args()

    rows = []
    print(f"{'shape':>12} {'ratio':>5} {'rank':>5} {'FLOPs':>6} {'time':>6}   dense ms  low-rank ms")
    for name in args.shapes:
        in_f, out_f = SHAPES[name]
        for row in bench(in_f, out_f, args.ratios, args.tokens, args.repeats, args.device, args.threads):
            rows.append({"shape": name, **row})
            print(f"{name:>12} {row['ratio']:>5} {row['rank']:>5} {row['flop_ratio']:>6.3f} {row['time_ratio']:>6.3f}"
                  f"   {row['dense_ms']:>8.3f}  {row['lowrank_ms']:>11.3f}")
    if args.out:
        write_json_atomic(args.out, {"bench": "svd_latency", "args": vars(args), "rows": rows,
                                     "provenance": provenance(device=args.device)})


if __name__ == "__main__":
    main()
