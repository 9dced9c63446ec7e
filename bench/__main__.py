"""``python -m bench``: the benchmark entry point (run from the project checkout).

    python -m bench all                         # the three records the book's Performance chapter shows
    python -m bench decomposition [--layers 12] [--methods svd mpo tucker kronecker] [--repeats 1]
    python -m bench inference [--model minilm] [--batch-sizes 1 8 32] [--seq-lens 32 128] [--methods svd mpo ...]
    python -m bench goals [--decomposition F.json] [--inference F.json]
    python -m bench train-speed [--repeats 10] [--threads 2]   # bf16 vs fp32 train()/evaluate(), loop overhead
    python -m bench bf16-parity [--rows 3000] [--epochs 3] [--seeds 0 1 2]   # bf16 training's dev accuracy vs fp32
    python -m bench deployment [--repeats 30]   # the >= 4x goal: variants timed against dense fp32
    python -m bench report F.json [...]         # re-render the markdown of existing records

Each measurement writes ``<out-dir>/<name>-<device>.json`` (the record, with provenance) and the
markdown table rendered from it beside it (``.md``), both atomically. ``--device auto`` uses
CUDA in bfloat16 when available, else the CPU in float32. Bad arguments give a one-line error
and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _write(record: dict[str, Any], path: Path) -> Path:
    from mpstudy.records import provenance, write_json_and_markdown

    from .perf import render_markdown

    markdown = render_markdown(record)  # render first: a bad record writes nothing
    write_json_and_markdown(path, {**record, "provenance": provenance()}, markdown)
    print(f"wrote {path} and {path.with_suffix('.md')}", file=sys.stderr)
    return path


def _tag(device: str) -> str:
    from .perf import resolve_device

    dev, _ = resolve_device(device)
    return dev.type


def _decomposition(args) -> Path:
    from .perf import run_decomposition

    record = run_decomposition(layers=args.layers, methods=tuple(args.methods), repeats=args.repeats, device=args.device,
                               log=lambda m: print(m, file=sys.stderr, flush=True))
    return _write(record, Path(args.out_dir) / f"decomposition-{_tag(args.device)}.json")


def _inference(args) -> Path:
    from .perf import run_inference

    record = run_inference(model_spec=args.model, batch_sizes=tuple(args.batch_sizes), seq_lens=tuple(args.seq_lens),
                           methods=args.methods, repeats=args.repeats, device=args.device, dtype=args.dtype,
                           log=lambda m: print(m, file=sys.stderr, flush=True))
    return _write(record, Path(args.out_dir) / f"inference-{_tag(args.device)}.json")


def _read(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no benchmark record at {p}")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{p} is not a JSON record: {err}") from err


def _goals(args, decomposition: str | None = None, inference: str | None = None) -> Path:
    from .perf import evaluate_goals

    tag = _tag(args.device)
    default = {k: Path(args.out_dir) / f"{k}-{tag}.json" for k in ("decomposition", "inference")}
    dec = decomposition or args.decomposition or (str(default["decomposition"]) if default["decomposition"].exists() else None)
    inf = inference or args.inference or (str(default["inference"]) if default["inference"].exists() else None)
    if dec is None and inf is None:
        raise FileNotFoundError(f"no decomposition or inference record in {args.out_dir} for device {tag!r}; run those first")
    record = evaluate_goals(_read(dec), _read(inf))
    record["sources"] = [p for p in (dec, inf) if p]
    return _write(record, Path(args.out_dir) / f"goals-{tag}.json")


def _train_speed(args) -> Path:
    from . import train_speed

    record = train_speed.run_train_speed(rows=args.rows, eval_rows=args.eval_rows, steps=args.steps,
                                         repeats=args.repeats, warmup=args.warmup, threads=args.threads,
                                         data_dir=args.data_dir, baseline_commit=args.baseline_commit,
                                         log=lambda m: print(m, file=sys.stderr, flush=True))
    path = Path(args.out_dir) / "train-speed-cpu.json"
    train_speed.write(record, path)
    print(f"wrote {path} and {path.with_suffix('.md')}", file=sys.stderr)
    return path


def _bf16_parity(args) -> Path:
    from . import bf16_parity

    path = Path(args.out_dir) / "bf16-parity-cpu.json"
    bf16_parity.run_parity(path, rows=args.rows, epochs=args.epochs, seeds=tuple(args.seeds), lr=args.lr,
                           batch_size=args.batch_size, max_length=args.max_length,
                           bucket_batches=args.bucket_batches or None, threads=args.threads,
                           data_dir=args.data_dir, note=args.note,
                           log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"wrote {path} and {path.with_suffix('.md')}", file=sys.stderr)
    return path


def _deployment(args) -> Path:
    from . import deployment

    return deployment.main_run(args)


def _renderer(record: dict[str, Any]):
    """The markdown renderer of a record, by its ``bench`` kind."""
    kind = record.get("bench")
    if kind == "train-speed":
        from .train_speed import render_markdown
    elif kind == "bf16-parity":
        from .bf16_parity import render_markdown
    elif kind == "deployment":
        from .deployment import render_markdown
    else:
        from .perf import render_markdown
    return render_markdown


def _report(args) -> None:
    for path in args.records:
        record = _read(path)
        markdown = _renderer(record)(record)
        Path(path).with_suffix(".md").write_text(markdown)
        print(markdown)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse would print the usage too)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .perf import DECOMPOSITION_METHODS

    parser = _Parser(prog="python -m bench", description="mpstudy benchmarks: decomposition time against peers, "
                                                           "inference cost against the dense model, goals.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p, device=True):
        p.add_argument("--out-dir", default="results/bench", help="where records go (default: results/bench)")
        if device:
            p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda[:N]")

    def decomposition_args(p):
        p.add_argument("--layers", type=int, default=12, help="encoder layers of the BERT-base-sized model (1-12)")
        p.add_argument("--methods", nargs="+", default=list(DECOMPOSITION_METHODS), choices=list(DECOMPOSITION_METHODS))
        p.add_argument("--repeats", type=_positive, default=1, help="alternated timings per matrix and implementation")

    def inference_args(p, repeats=True):
        p.add_argument("--model", default="minilm", help="load_model spec (minilm, tiny-bert, a hub id, a local dir)")
        p.add_argument("--batch-sizes", type=_positive, nargs="+", default=[1, 8, 32])
        p.add_argument("--seq-lens", type=_positive, nargs="+", default=[32, 128])
        p.add_argument("--methods", nargs="+", default=None, help="registered methods to include (default: all)")
        p.add_argument("--dtype", default=None, help="float32 (CPU default), bfloat16 (CUDA default), float16")
        if repeats:
            p.add_argument("--repeats", type=_positive, default=5, help="round-robin rounds per grid cell")

    p = sub.add_parser("decomposition", help="decomposition time per method against TensorLy / TensorLy-Torch")
    decomposition_args(p)
    common(p)
    p.set_defaults(func=_decomposition)

    p = sub.add_parser("inference", help="latency, throughput, peak memory and FLOP ratio against dense")
    inference_args(p)
    common(p)
    p.set_defaults(func=_inference)

    p = sub.add_parser("goals", help="check the goals against existing records")
    p.add_argument("--decomposition", default=None, help="record (default: <out-dir>/decomposition-<device>.json)")
    p.add_argument("--inference", default=None, help="record (default: <out-dir>/inference-<device>.json)")
    common(p)
    p.set_defaults(func=_goals)

    p = sub.add_parser("all", help="decomposition, inference and goals")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--repeats", type=_positive, default=None, help="(default: 1 per matrix, 5 rounds per grid cell)")
    inference_args(p, repeats=False)
    common(p)
    p.set_defaults(func=None)  # handled in main(): it chains the three

    p = sub.add_parser("train-speed", help="bf16 vs fp32 training step and evaluation, and the loop's overhead (MiniLM, SST-2)")
    p.add_argument("--rows", type=_positive, default=256, help="SST-2 training rows the steps draw their batches from")
    p.add_argument("--eval-rows", type=_positive, default=256, help="SST-2 dev rows of the evaluation timing")
    p.add_argument("--steps", type=_positive, default=4, help="optimizer steps per timed train() call")
    p.add_argument("--repeats", type=_positive, default=10, help="timed round-robin rounds")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--threads", type=_positive, default=2, help="torch threads")
    p.add_argument("--data-dir", default=os.environ.get("MPSTUDY_DATA", "/work/shared/data"))
    p.add_argument("--baseline-commit", default="f57282e",
                   help="git commit whose mpstudy/train.py is 'today's fp32 loop' (the loop before issue 15)")
    common(p, device=False)
    p.set_defaults(func=_train_speed)

    p = sub.add_parser("bf16-parity", help="bf16 vs fp32 training: SST-2 dev accuracy over seeds (long: run in the background)")
    p.add_argument("--rows", type=_positive, default=3000, help="SST-2 training rows (a seeded subset)")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=_positive, default=32)
    p.add_argument("--max-length", type=_positive, default=64)
    p.add_argument("--bucket-batches", type=int, default=8, help="length-bucket chunks in batches (0: no bucketing)")
    p.add_argument("--threads", type=_positive, default=1, help="torch threads")
    p.add_argument("--data-dir", default=os.environ.get("MPSTUDY_DATA", "/work/shared/data"))
    p.add_argument("--note", default="", help="a sentence the markdown ends with (why the rows were reduced...)")
    common(p, device=False)
    p.set_defaults(func=_bf16_parity)

    p = sub.add_parser("deployment", help="the deployment goal: precision and factorized variants timed against dense fp32")
    p.add_argument("--model", default="minilm", help="load_model spec (the cpu profile's model: minilm)")
    p.add_argument("--batch", type=_positive, default=32)
    p.add_argument("--seq", type=_positive, default=64)
    p.add_argument("--repeats", type=_positive, default=30, help="timed round-robin rounds")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    p.add_argument("--threads", type=_positive, default=1, help="torch threads")
    p.add_argument("--comparison", default="results/06_comparison/cpu-minilm.json",
                   help="study 06's record, which decides which variants lose at most one point")
    common(p, device=False)
    p.set_defaults(func=_deployment)

    p = sub.add_parser("report", help="re-render the markdown of existing records")
    p.add_argument("records", nargs="+", metavar="RECORD")
    p.set_defaults(func=_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "all":
        from .perf import DECOMPOSITION_METHODS

        methods = args.methods
        args.methods = list(DECOMPOSITION_METHODS)
        all_repeats = args.repeats
        args.repeats = all_repeats or 1
        try:
            dec = _decomposition(args)
            args.methods, args.repeats = methods, all_repeats or 5
            inf = _inference(args)
            _goals(argparse.Namespace(out_dir=args.out_dir, device=args.device, decomposition=None, inference=None),
                   str(dec), str(inf))
        except (ValueError, TypeError, OSError, KeyError) as err:
            print(f"python -m bench all: error: {' '.join(str(err).split())}", file=sys.stderr)
            return 2
        return 0
    try:
        args.func(args)
    except (ValueError, TypeError, OSError, KeyError) as err:
        print(f"python -m bench {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
