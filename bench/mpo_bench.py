"""MPO decomposition time against TensorLy, and MPO inference latency against the dense model.

1. Every weight matrix of a BERT-base-sized model (random init: the timing does not depend on the
   values) is decomposed by ``mpstudy.factorize.mpo_decompose`` and by TensorLy's
   ``tensor_train_matrix`` (pytorch backend) with the same factorization and the same ranks;
   the two are timed alternately, matrix by matrix, and reported as a ratio (goal: no slower).
2. The model with every Linear in MPO form, in evaluation mode (cached dense weights), is timed
   alternately with the dense model on the same batch (goal: within 10 %).

    python bench/mpo_bench.py [--layers 12] [--out results/bench/mpo.json]

With ``--out``, a markdown summary goes next to the JSON (``mpo.md``); the MPO chapter of the book
includes it. ``--summarize results/bench/mpo.json`` rewrites that summary from a stored record.
"""
from __future__ import annotations

import argparse
import copy

import tensorly as tl
import torch
import transformers
from tensorly.decomposition import tensor_train_matrix

from mpstudy import compress
from mpstudy.factorize import mpo_decompose
from mpstudy.layers.mpo import mpo_shapes
from mpstudy.measure import compare_latency, time_interleaved
from mpstudy.records import provenance, write_json_atomic
from mpstudy.targets import resolve_targets


def decomposition_times(model: torch.nn.Module, repeats: int) -> list[dict]:
    rows = []
    for t in resolve_targets(model, "all-linear"):
        W = t.module.weight.detach()
        row_dims, col_dims = mpo_shapes(*W.shape)
        ours = mpo_decompose(W, row_dims, col_dims)
        ranks = ours.bond_dims
        tensor = W.reshape(*row_dims, *col_dims)
        with tl.backend_context("pytorch"):  # alternated, so machine load hits both alike
            timing = time_interleaved({"mpstudy": lambda: mpo_decompose(W, row_dims, col_dims),
                                       "tensorly": lambda: tensor_train_matrix(tensor, rank=ranks)},
                                      repeats=repeats, warmup=0)
        rows.append({"name": t.name, "shape": list(W.shape), "bonds": ranks,
                     "mpstudy_s": timing.median("mpstudy"), "tensorly_s": timing.median("tensorly"),
                     "threads": timing.threads})
        print(f"{t.name:55s} {str(tuple(W.shape)):>12} mpstudy {rows[-1]['mpstudy_s']:.3f} s  tensorly {rows[-1]['tensorly_s']:.3f} s")
    return rows


def summary_markdown(record: dict) -> str:
    """The record's two ratios as a markdown table (included by the book's MPO chapter)."""
    totals, latency, args = record["totals"], record["latency"], record["args"]
    prov = record.get("provenance", {})
    ratio = totals["mpstudy_s"] / totals["tensorly_s"]
    lat = latency["candidate_ms"] / latency["baseline_ms"]
    return "\n".join([
        "| measurement | mpstudy | peer | ratio | goal |",
        "|---|---|---|---|---|",
        f"| decomposition of {len(record['decomposition'])} BERT-base weight matrices (s, median of {args['repeats']}) "
        f"| {totals['mpstudy_s']:.1f} | TensorLy `tensor_train_matrix`: {totals['tensorly_s']:.1f} | {ratio:.2f} "
        f"| <= 1: {'met' if ratio <= 1 else 'missed'} |",
        f"| forward, batch {args['batch']} x {args['seq_len']}, evaluation mode (ms) | MPO: {latency['candidate_ms']:.0f} "
        f"| dense: {latency['baseline_ms']:.0f} | {lat:.3f} | <= 1.10: {'met' if lat <= 1.10 else 'missed'} |",
        "",
        f"Measured by `bench/mpo_bench.py` on {prov.get('machine', '?')}, torch {prov.get('torch', '?')}, "
        f"{prov.get('time_utc', '?')}; the two sides timed alternately in one process.",
        "",
    ])


def write_summary(json_path: str) -> str:
    import json
    from pathlib import Path

    md_path = str(Path(json_path).with_suffix(".md"))
    Path(md_path).write_text(summary_markdown(json.loads(Path(json_path).read_text())))
    return md_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12, help="encoder layers of the BERT-base-sized model")
    parser.add_argument("--repeats", type=int, default=1, help="timings per matrix and library")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--out", default=None)
    parser.add_argument("--summarize", default=None, metavar="JSON", help="only rewrite the markdown summary of a stored record")
    args = parser.parse_args()
    if args.summarize:
        print("wrote", write_summary(args.summarize))
        return

    torch.manual_seed(0)
    config = transformers.BertConfig(num_hidden_layers=args.layers)  # hidden 768, FFN 3072, vocab 30522
    dense = transformers.BertForSequenceClassification(config).eval()

    rows = decomposition_times(dense, args.repeats)
    total_ours, total_tl = sum(r["mpstudy_s"] for r in rows), sum(r["tensorly_s"] for r in rows)
    print(f"decomposition, {len(rows)} matrices: mpstudy {total_ours:.1f} s, tensorly {total_tl:.1f} s, "
          f"ratio mpstudy/tensorly {total_ours / total_tl:.2f}")

    mpo_model = copy.deepcopy(dense)
    compress(mpo_model, "mpo", targets="all-linear")
    ids = torch.randint(1000, config.vocab_size, (args.batch, args.seq_len), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    timing = compare_latency(dense, mpo_model, batch, repeats=10)
    print(f"inference, batch {args.batch} x {args.seq_len}: dense {timing['baseline_ms']:.1f} ms, "
          f"MPO (eval, cached) {timing['candidate_ms']:.1f} ms, ratio {timing['candidate_ms'] / timing['baseline_ms']:.3f}")
    if args.out:
        write_json_atomic(args.out, {"bench": "mpo", "args": vars(args), "decomposition": rows,
                                     "totals": {"mpstudy_s": total_ours, "tensorly_s": total_tl},
                                     "latency": timing, "provenance": provenance()})
        print("wrote", args.out, "and", write_summary(args.out))


if __name__ == "__main__":
    main()
