"""Offline compression on MiniLM: compression time per method and module, autoencoder training
time, and forward latency of the compressed models against dense.

For each module type (word embeddings, keys, FFN outputs), mode and method, the pre-trained
all-MiniLM-L6-v2 is compressed at one ratio (default CR 10) and timed; the autoencoder uses the
cpu profile's training budget of ``notebooks/04_offline.ipynb`` unless told otherwise. Then the
compressed and the dense model are timed on the same batch, interleaved, in the same process, and
reported as a ratio (compressed / dense), so machine speed and load cancel out:

* ``eval_ratio``: forward latency in evaluation (decoded weights are cached: Kronecker, Tucker and
  autoencoder layers then compute like dense ones; SVD computes two thin products; pruned layers
  are dense matrices with zeros);
* ``decode_ms``: the time to decode the replaced weights once, which every *training* forward pays
  (autoencoder, Kronecker, Tucker; an autoencoder embedding decodes only the looked-up rows, so
  for it this is an upper bound).

Usage:

    python bench/offline_compress.py                       # CR 10, all methods, modules and modes
    python bench/offline_compress.py --cr 3 --modules key --threads 2 --out results/bench/offline_cr3.json
"""
from __future__ import annotations

import argparse
import copy
import os
import time

import torch

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from mpstudy import compress, load_model  # noqa: E402
from mpstudy.layers import RowBasisLowRank  # noqa: E402
from mpstudy.layers.decoded import GroupMemberLayer  # noqa: E402
from mpstudy.measure import compare_latency, dummy_batch, time_interleaved  # noqa: E402
from mpstudy.methods.offline import OFFLINE_METHODS  # noqa: E402
from mpstudy.studies.offline import compression_info, method_budget  # noqa: E402
from mpstudy.profiles import get_profile  # noqa: E402
from mpstudy.records import provenance, write_json_atomic  # noqa: E402


def latency_ratio(dense, student, batch, repeats: int) -> tuple[float, float, float]:
    """Median forward time of dense and student (interleaved, ``mpstudy.measure.compare_latency``) and their ratio."""
    timing = compare_latency(dense, student, batch, repeats=repeats, warmup=2)
    return timing["baseline_ms"], timing["candidate_ms"], timing["candidate_ms"] / timing["baseline_ms"]


@torch.no_grad()
def decode_ms(student, repeats: int = 3) -> float:
    """Time to rebuild the dense weights of the layers whose training forward does so (best of ``repeats``).

    SVD layers multiply by their factors instead, and pruned layers hold their dense matrix: 0.
    """
    layers = [m for m in student.modules() if isinstance(m, GroupMemberLayer) and not isinstance(m, RowBasisLowRank)]
    if not layers:
        return 0.0

    def decode_all() -> None:
        for layer in layers:
            layer.decode()

    timing = time_interleaved({"decode": decode_all}, repeats=repeats, warmup=0)
    return min(timing.seconds["decode"]) * 1e3


def main() -> None:
    cpu = get_profile("cpu", "04_offline")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cr", type=float, default=10, help="the paper's compression ratio (keep = 1 / cr)")
    parser.add_argument("--modules", nargs="+", default=["word_embeddings", "key", "ffn_out"])
    parser.add_argument("--methods", nargs="+", default=list(OFFLINE_METHODS), choices=list(OFFLINE_METHODS))
    parser.add_argument("--modes", nargs="+", default=["separated", "concatenated"])
    parser.add_argument("--ae-epochs", type=int, default=None, help="autoencoder epochs (default: the cpu profile's, per module)")
    parser.add_argument("--ae-batch-size", type=int, default=cpu["ae_batch_size"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32, help="sequences in the latency batch")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=None, help="write the rows and provenance as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dense, tokenizer = load_model("minilm", task="sst2")
    batch = dummy_batch(tokenizer, batch_size=args.batch_size, seq_len=args.seq_len)
    rows = []
    print(f"{'module':>16} {'mode':>12} {'method':>18} {'compress s':>10} {'ae s':>6} {'s/epoch':>7} "
          f"{'eval x dense':>12} {'decode ms':>9}")
    for module in args.modules:
        for mode in (["separated"] if module == "word_embeddings" else args.modes):
            for method in args.methods:
                ae = {"epochs": args.ae_epochs or cpu["ae_epochs"][module], "batch_size": args.ae_batch_size,
                      "lr": cpu["ae_lr"], "seed": 0}
                budget = method_budget(method, module, dense, ae if method == "offline-ae" else None)
                student = copy.deepcopy(dense)
                t0 = time.perf_counter()
                compress(student, method, targets=module, keep=1 / args.cr, mode=mode, **budget)
                seconds = time.perf_counter() - t0
                info = compression_info(student)
                ae_s = sum(i.get("seconds", 0) for i in info) if method == "offline-ae" else None
                epochs = info[0].get("epochs") if method == "offline-ae" else None
                dense_ms, student_ms, ratio = latency_ratio(dense, student, batch, args.repeats)
                row = {"module": module, "mode": mode, "method": method, "cr": args.cr, "compress_seconds": seconds,
                       "ae_seconds": ae_s, "ae_epochs": epochs, "ae_seconds_per_epoch": ae_s / epochs if epochs else None,
                       "dense_ms": dense_ms, "compressed_ms": student_ms, "eval_ratio": ratio,
                       "decode_ms": decode_ms(student)}
                rows.append(row)
                ae_text = f"{ae_s:.1f}" if ae_s is not None else "-"
                epoch_text = f"{ae_s / epochs:.2f}" if epochs else "-"
                print(f"{module:>16} {mode:>12} {method:>18} {seconds:>10.1f} {ae_text:>6} {epoch_text:>7} "
                      f"{ratio:>12.2f} {row['decode_ms']:>9.1f}", flush=True)
                del student
    if args.out:
        write_json_atomic(args.out, {"bench": "offline_compress", "args": vars(args), "rows": rows,
                                     "provenance": provenance(threads=args.threads)})


if __name__ == "__main__":
    main()
