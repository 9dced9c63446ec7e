"""LoBERT's modes: decomposition time of the weight stacks, and forward / training-step time against dense.

Two measurements, each a ratio against a baseline run in the same process:

1. **Decomposition.** For each stack LoBERT factorizes (per layer ``[Q; K; V]``, the queries of all
   layers, all Q/K/V as a 4-D tensor, the FFN input weights of all layers), at LoBERT's default
   ranks: the truncated HOSVD (``mpstudy.factorize.tucker.hosvd``) against TensorLy's own
   ``tucker`` (HOOI to convergence, LoBERT's algorithm, which ``mpstudy`` calls), both in float64,
   with their relative errors; and FALCON's closed form against a few hundred steps of LoBERT's SGD
   fit (its per-step time times 10,000 steps is the original's cost).
2. **Latency.** For every mode at its default budget, the whole model's forward time relative to
   the dense model on a fixed batch, in evaluation with the decoded weights cached (the library's
   default) and rebuilt on every forward (LoBERT's behaviour); and a training step's time
   (forward + backward) relative to the dense model's. Dense and student runs are interleaved, so
   load on the machine hits both.

Usage:

    python bench/lobert_bench.py                               # MiniLM (real weights), 1 thread
    python bench/lobert_bench.py --model bert-base-random --skip-decomposition
    python bench/lobert_bench.py --out results/bench/lobert.json

BERT-base shapes come from a random-init ``BertConfig()`` built locally (no download).
"""
from __future__ import annotations

import argparse
import copy

import torch

from mpstudy.factorize.falcon import falcon_fit, falcon_sgd_fit, falcon_to_stack
from mpstudy.factorize.stacks import tucker_stack, tucker_stack_ranks, tucker_to_tensor
from mpstudy.factorize.tucker import hosvd
from mpstudy.layers.stacked import set_decode_cache
from mpstudy.measure import dummy_batch, time_interleaved
from mpstudy.studies.lobert import DEFAULT_KEEP, LOBERT_MODES, lobert_compress
from mpstudy.records import provenance, write_json_atomic


def load(model: str):
    if model == "bert-base-random":
        import transformers

        from mpstudy.models import minilm_path

        torch.manual_seed(0)
        config = transformers.BertConfig(num_labels=2)
        return (transformers.BertForSequenceClassification(config).eval(),
                transformers.AutoTokenizer.from_pretrained(minilm_path()))
    from mpstudy import load_model

    return load_model(model)


def _rel(X: torch.Tensor, Y: torch.Tensor) -> float:
    return float(torch.linalg.norm(X - Y) / torch.linalg.norm(X))


def decomposition(model, sgd_steps: int) -> list[dict]:
    layers = model.bert.encoder.layer
    qkv = torch.stack([torch.stack([getattr(l.attention.self, r).weight.detach() for l in layers])
                       for r in ("query", "key", "value")]).double()  # (3, L, d, d)
    ffn_in = torch.stack([l.intermediate.dense.weight.detach() for l in layers]).double()
    stacks = {"layer (Q;K;V of layer 0)": (qkv[:, 0], 1, DEFAULT_KEEP["self_tuckerlayer"]),
              "vertical (queries)": (qkv[0], 1, DEFAULT_KEEP["self_tuckervertical"]),
              "4d (all Q/K/V)": (qkv, 2, DEFAULT_KEEP["self_tucker_4d"]),
              "vertical (FFN in)": (ffn_in, 1, DEFAULT_KEEP["ffn_tuckervertical"])}
    rows = []
    for name, (X, n_stack, ratio) in stacks.items():
        ranks = tucker_stack_ranks(tuple(X.shape), ratio, n_stack)
        timing = time_interleaved({"hosvd": lambda: hosvd(X, ranks),
                                   # tensorly.decomposition.tucker (HOOI)
                                   "hooi": lambda: tucker_stack(X, ranks, n_iter=100, tol=1e-4)},
                                  repeats=1, warmup=0, keep_outputs=True)
        t_hosvd, t_hooi = timing.median("hosvd"), timing.median("hooi")
        err_hosvd = _rel(X, tucker_to_tensor(*timing.outputs["hosvd"]))
        rows.append({"stack": name, "shape": list(X.shape), "ranks": ranks, "hosvd_s": t_hosvd, "tensorly_hooi_s": t_hooi,
                     "hooi_over_hosvd": t_hooi / t_hosvd, "hosvd_rel_error": err_hosvd,
                     "hooi_rel_error": _rel(X, tucker_to_tensor(*timing.outputs["hooi"])), "threads": timing.threads})
        print(f"tucker {name:>26} {str(list(X.shape)):>20} ranks {str(ranks):>18}: HOSVD {t_hosvd:7.2f} s "
              f"(err {err_hosvd:.4f}), TensorLy HOOI {t_hooi:7.2f} s (err {rows[-1]['hooi_rel_error']:.4f})", flush=True)
    X = qkv[:, 0].float()  # one layer's Q;K;V, self_falconlayer
    timing = time_interleaved({"closed": lambda: falcon_fit(X, 1, "rows"),
                               "sgd": lambda: falcon_sgd_fit(X, 1, "rows", steps=sgd_steps, log_every=max(1, sgd_steps))},
                              repeats=1, warmup=0, keep_outputs=True)
    (scale, basis), (s_sgd, b_sgd, _) = timing.outputs["closed"], timing.outputs["sgd"]
    t_closed, t_step = timing.median("closed"), timing.median("sgd") / max(1, sgd_steps)
    rows.append({"stack": "falcon layer (Q;K;V of layer 0)", "shape": list(X.shape), "closed_form_s": t_closed,
                 "sgd_step_s": t_step, "sgd_10000_steps_s": 10_000 * t_step,
                 "sgd_over_closed_form": 10_000 * t_step / t_closed,
                 "closed_rel_error": _rel(X, falcon_to_stack(scale, basis)),
                 f"sgd_rel_error_after_{sgd_steps}": _rel(X, falcon_to_stack(s_sgd, b_sgd))})
    print(f"falcon layer: closed form {t_closed:.3f} s (err {rows[-1]['closed_rel_error']:.4f}); SGD {t_step * 1e3:.2f} ms/step, "
          f"10,000 steps ~ {10_000 * t_step:.0f} s (err after {sgd_steps}: {rows[-1][f'sgd_rel_error_after_{sgd_steps}']:.3f})",
          flush=True)
    return rows


def _interleaved(fa, fb, repeats: int) -> tuple[float, float]:
    """Median seconds of ``fa`` and ``fb``, alternated after two warm-up rounds."""
    timing = time_interleaved({"a": fa, "b": fb}, repeats=repeats, warmup=2)
    return timing.median("a"), timing.median("b")


def latency(model, tokenizer, batch_size: int, seq_len: int, repeats: int, n_iter: int) -> list[dict]:
    batch = dummy_batch(tokenizer, batch_size=batch_size, seq_len=seq_len)
    labels = torch.zeros(batch_size, dtype=torch.long)
    dense = model.eval()

    def forward(m):
        return lambda: m(**batch)

    def step(m):
        def run():
            m.zero_grad(set_to_none=True)
            m(**batch, labels=labels).loss.backward()
        return run

    rows = []
    for mode in LOBERT_MODES:
        student = copy.deepcopy(dense)
        lobert_compress(student, mode, **({"n_iter": n_iter} if LOBERT_MODES[mode]["family"] == "tucker" else {}))
        student.eval()
        with torch.inference_mode():
            d, s = _interleaved(forward(dense), forward(student), repeats)
            row = {"mode": mode, "dense_ms": d * 1e3, "cached_ratio": s / d}
            if set_decode_cache(student, False):
                d, s = _interleaved(forward(dense), forward(student), repeats)
                set_decode_cache(student, True)
            row["rebuilt_ratio"] = s / d
        dense.train(), student.train()
        d, s = _interleaved(step(dense), step(student), max(3, repeats // 2))
        dense.eval()
        row.update({"train_step_ratio": s / d, "dense_step_ms": d * 1e3})
        row["threads"] = torch.get_num_threads()
        rows.append(row)
        print(f"{mode:>20}: forward cached {row['cached_ratio']:.3f}, rebuilt {row['rebuilt_ratio']:.3f}, "
              f"train step {row['train_step_ratio']:.3f}  (dense forward {row['dense_ms']:.1f} ms)", flush=True)
        del student
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="minilm, tiny-bert, bert-base-random, or a local dir")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-iter", type=int, default=100, help="HOOI sweeps of the Tucker students (0: HOSVD)")
    parser.add_argument("--sgd-steps", type=int, default=200, help="SGD steps timed for FALCON's original fit")
    parser.add_argument("--skip-decomposition", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--out", default=None, help="write the rows and provenance as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load(args.model)
    out = {"args": vars(args), "provenance": provenance()}
    if not args.skip_decomposition:
        out["decomposition"] = decomposition(model, args.sgd_steps)
    if not args.skip_latency:
        out["latency"] = latency(model, tokenizer, args.batch_size, args.seq_len, args.repeats, args.n_iter)
    if args.out:
        write_json_atomic(args.out, out)
        print("wrote", args.out)


if __name__ == "__main__":
    main()
