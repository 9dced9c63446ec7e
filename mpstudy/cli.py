"""The ``mpstudy`` command: compress, evaluate, run a study, reproduce all, build the book.

Every command fails with a one-line reason on stderr and exit status 2 on bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main"]


def _cmd_compress(args: argparse.Namespace) -> None:
    from .models import load_model
    from .surgery import MANIFEST, compress, save_compressed

    out = Path(args.out)
    # Refuse a bad destination before loading anything.
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).exists())):
        raise FileExistsError(f"--out {out} exists and is not a saved mpstudy model; choose another directory")
    # --ratio: the Contract's old name of --keep, kept working (deprecated in --help; stderr stays one line on errors)
    keep = args.keep if args.keep is not None else args.ratio
    budget = {k: v for k, v in {"keep": keep, "rank": args.rank, "max_bond": args.max_bond}.items() if v is not None}
    model, tokenizer = load_model(args.model, task=args.task)
    report = compress(model, args.method, targets=args.targets, **budget)
    save_compressed(model, out, tokenizer=tokenizer)
    print(json.dumps(report.to_dict(), indent=2))


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from .models import load_model
    from .tasks import load_task
    from .train import evaluate

    task = load_task(args.task, data_dir=args.data_dir, max_eval=args.max_eval, max_train=1, seed=args.seed)
    model, tokenizer = load_model(args.model, task=task, seed=args.seed)
    metrics = evaluate(model, tokenizer, task, split="dev", batch_size=args.batch_size, max_length=args.max_length)
    print(json.dumps({"model": args.model, "task": task.name, "split": "dev", "n": len(task.dev), **metrics}, indent=2))


def _terminate_cleanly() -> None:
    """SIGTERM (``kill``, a CI timeout) -> SystemExit, so a killed run still removes its temporary files
    and shuts its notebook kernel down. SIGKILL cannot be caught: the study's next run cleans up."""
    import signal

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _cmd_run(args: argparse.Namespace) -> None:
    from .parameters import declared_parameters, parse_overrides
    from .runner import run_study, store_smoke_outputs

    _terminate_cleanly()

    if args.in_place:
        if args.param or args.profile not in (None, "smoke") or args.data_dir or args.replace_profile:
            raise ValueError("--in-place stores the template's own smoke outputs; it takes no -p, --profile, --data-dir "
                             "or --replace-profile")
        print(f"stored smoke outputs in {store_smoke_outputs(args.notebook)}", file=sys.stderr)
        return

    notebook = Path(args.notebook)
    if notebook.suffix != ".ipynb" or not notebook.is_file():
        raise FileNotFoundError(f"no notebook at {notebook} (expected an existing .ipynb file)")
    # -p values are typed by the notebook's parameters cell: -p lr 1e-3 is a float, -p task_name yes a string
    overrides = parse_overrides(notebook.name, declared_parameters(notebook), args.param)
    if args.data_dir:
        overrides["data_dir"] = str(Path(args.data_dir).resolve())
    run_study(notebook, profile=args.profile, overrides=overrides, output_dir=args.output_dir,
              results_dir=args.results_dir, force=args.force, replace_profile=args.replace_profile,
              log=lambda m: print(m, file=sys.stderr))


def _cmd_reproduce(args: argparse.Namespace) -> None:
    from .runner import reproduce

    _terminate_cleanly()

    overrides = {"data_dir": str(Path(args.data_dir).resolve())} if args.data_dir else {}
    stamps = reproduce(profile=args.profile, notebooks_dir=args.notebooks_dir, overrides=overrides,
                       output_dir=args.output_dir, results_dir=args.results_dir, force=args.force,
                       replace_profile=args.replace_profile, log=lambda m: print(m, file=sys.stderr))
    print(json.dumps([{k: s[k] for k in ("notebook", "status", "seconds")} for s in stamps], indent=2))


def _cmd_prune(args: argparse.Namespace) -> None:
    from .studies.composability import run_prune_step

    run_prune_step(args)


def _add_prune_parser(sub) -> None:
    """``mpstudy prune STEP``: the composable-pruning workflow, one step per script of the original."""
    p = sub.add_parser("prune", help="composable pruning: configs, scheme, prune, tune-modules, compose, finetune, evaluate, plot",
                       description="Composable pruning, step by step (every keep is the fraction KEPT, in (0, 1]).")
    steps = p.add_subparsers(dest="step", required=True, metavar="STEP")

    def step(name: str, helptext: str, model: bool = True, task: bool = True, data: bool = False, training: bool = False):
        s = steps.add_parser(name, help=helptext, description=helptext)
        if model:
            s.add_argument("model", metavar="MODEL", help="the fine-tuned original (load_model spec or directory)"
                           if name not in ("finetune", "evaluate") else "a directory written by 'prune compose' or 'prune finetune'")
        if task:
            s.add_argument("--task", required=name in ("tune-modules", "finetune", "evaluate"), default=None,
                           help="task whose head the model has / whose data is used")
        if data or training:
            s.add_argument("--data-dir", default=None, help="folder with glue/ and multi30k/ (default: $MPSTUDY_DATA, else the hub)")
            s.add_argument("--max-eval", type=int, default=None, help="seeded subset of the dev split")
        if training:
            s.add_argument("--max-train", type=int, default=None, help="seeded subset of the training split")
            s.add_argument("--lr", type=float, required=True, help="peak learning rate (original: 1e-2 module-level; 5e-3 T5, 1e-6 DistilBERT model-level)")
            s.add_argument("--epochs", type=float, default=1.0)
            s.add_argument("--batch-size", type=int, default=32)
            s.add_argument("--eval-every", type=int, default=None, help="validate every N steps (default: once per epoch)")
            s.add_argument("--stats", default=None, help="write the training history (JSON) here, for 'prune plot'")
            s.add_argument("--quiet", action="store_true", help="no progress bar")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--max-length", type=int, default=128, help="tokenizer truncation length")
        return s

    s = step("configs", "write N pruning configurations (JSON list of {module: keep})")
    s.add_argument("--attention-keep", type=float, nargs="+", default=[0.25, 0.5, 0.25], help="kept fraction of heads, one per configuration")
    s.add_argument("--linear-keep", type=float, nargs="+", default=[0.3, 0.3, 0.5], help="kept fraction of FFN weights, one per configuration")
    s.add_argument("-n", "--num-configs", type=int, default=None)
    s.add_argument("--out", default="conf.json")
    s = step("scheme", "list each distinct (module, keep) variant once", model=False, task=False)
    s.add_argument("configs", metavar="CONFIGS", help="the JSON written by 'prune configs'")
    s.add_argument("--out", default="conf_prune.json")
    s = step("prune", "prune every variant of a scheme once")
    s.add_argument("--scheme", required=True, help="the JSON written by 'prune scheme'")
    s.add_argument("--out", default="module_pruned.pt")
    s = step("tune-modules", "module-level fine-tuning: each variant learns its original module's output (MSE)", training=True)
    s.add_argument("--variants", required=True, help="the file written by 'prune prune'")
    s.add_argument("--patience", type=int, default=5, help="validations without improvement before stopping")
    s.add_argument("--out", default="module_finetuned.pt")
    s = step("compose", "compose one configuration from (tuned or untuned) variants")
    s.add_argument("--variants", required=True, help="'prune tune-modules' output (composability) or 'prune prune' output (baseline)")
    s.add_argument("--configs", required=True)
    s.add_argument("--index", type=int, required=True, help="which configuration (0-based)")
    s.add_argument("--out", required=True, help="directory for the composed model")
    s = step("finetune", "model-level fine-tuning of a composed model (masks and removed heads stay)", training=True)
    s.add_argument("--out", required=True, help="directory for the fine-tuned model")
    s = step("evaluate", "task metrics and parameter counts (total, non-zero) of a pruned model", data=True)
    s.add_argument("--test", action="store_true", help="score the labelled test split (Multi30K test_2016_flickr)")
    s = step("plot", "plot training and validation loss from a --stats file", model=False, task=False)
    s.add_argument("stats", metavar="STATS")
    s.add_argument("--out", default="loss.png")
    p.set_defaults(func=_cmd_prune)


def _cmd_book(args: argparse.Namespace) -> None:
    from .runner import build_book

    html = build_book(args.root, strict=not args.no_strict)
    print(f"book built: {html / 'index.html'}")


class _OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors on one line, exit status 2 (the usage is one ``--help`` away).

    Sub-command parsers are of the same class (argparse builds them with ``type(parent)``).
    """

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .methods import METHODS
    from .profiles import PROFILES

    parser = _OneLineParser(prog="mpstudy", description="Compress pre-trained transformers; run the study.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("compress", help="compress a model and save it", description="Compress MODEL in place and save it to --out; prints the report as JSON.")
    p.add_argument("model", metavar="MODEL", help="minilm, tiny-bert, tiny-albert, tiny-t5, tiny-marian, a hub id or a local dir")
    p.add_argument("--method", required=True, choices=sorted(METHODS), help="compression method")
    p.add_argument("--targets", default="all-linear", help="roles (query,key,...), a group (all-linear, attention, ffn) or re:<regex>")
    budget = p.add_mutually_exclusive_group()  # optional: bf16 and int8 take no budget; a method that needs one says so
    budget.add_argument("--keep", type=float, help="kept fraction of the targeted weights, in (0, 1] (every method; "
                        "the compression ratio is 1 / keep)")
    budget.add_argument("--ratio", type=float, help="deprecated: the old name of --keep")
    budget.add_argument("--rank", type=int, help="rank of each factorization")
    budget.add_argument("--max-bond", type=int, help="bond dimension cap (MPO)")
    p.add_argument("--task", default=None, help="task whose head the model gets (default: 2-label classifier)")
    p.add_argument("--out", required=True, help="directory to write the compressed model to")
    p.set_defaults(func=_cmd_compress)

    p = sub.add_parser("evaluate", help="evaluate a model on a task's dev split", description="Print the task's dev metrics of a model as JSON.")
    p.add_argument("model", metavar="DIR_OR_MODEL")
    p.add_argument("--task", required=True)
    p.add_argument("--data-dir", default=None, help="folder with glue/ and multi30k/ (default: $MPSTUDY_DATA, else the hub)")
    p.add_argument("--max-eval", type=int, default=None, help="evaluate on a seeded subset of this many rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=128)
    p.set_defaults(func=_cmd_evaluate)

    for name, helptext in (("run", "execute one study notebook with papermill"), ("reproduce", "run every study (skipping up-to-date ones)")):
        p = sub.add_parser(name, help=helptext, description=helptext + ". Without --profile: the smoke profile, "
                           "into the scratch folder _build/smoke/ (never over the committed pages of book/studies/).")
        if name == "run":
            p.add_argument("notebook", metavar="NOTEBOOK", help="a study template, e.g. notebooks/00_offline_svd.ipynb")
            p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                           help="override a parameter; VALUE is read as the type the notebook declares "
                                "(papermill --help-notebook NOTEBOOK lists them): -p lr 1e-3, -p keeps '[0.5, 0.3]'")
            p.add_argument("--in-place", action="store_true", help="execute the template itself with its smoke defaults and store the outputs nbval compares")
        else:
            p.add_argument("--notebooks-dir", default="notebooks")
        p.add_argument("--profile", default=None, choices=sorted(PROFILES), help="parameter set (default: smoke)")
        p.add_argument("--data-dir", default=None, help="folder with glue/ and multi30k/ (default: $MPSTUDY_DATA)")
        p.add_argument("--output-dir", default=None, help="where executed notebooks go (default: book/studies; "
                       "smoke: _build/smoke/studies)")
        p.add_argument("--results-dir", default=None, help="where results records and run stamps go (default: results; "
                       "smoke: _build/smoke/results)")
        p.add_argument("--force", action="store_true", help="run even if notebook, parameters, data, code and versions are unchanged")
        p.add_argument("--replace-profile", action="store_true",
                       help="allow writing over a page that holds another profile's results")
        p.set_defaults(func=_cmd_run if name == "run" else _cmd_reproduce)

    _add_prune_parser(sub)

    p = sub.add_parser("book", help="build the HTML book into _build/html (offline, from committed notebooks)")
    p.add_argument("--root", default=None, help="project checkout (default: the current directory)")
    p.add_argument("--no-strict", action="store_true", help="do not turn Sphinx warnings into errors")
    p.set_defaults(func=_cmd_book)
    return parser


def _one_line(err: BaseException) -> str:
    """The error's message folded onto one line (multi-line messages, e.g. file lists, joined by '; ')."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, TypeError, OSError, KeyError) as err:
        print(f"mpstudy {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # papermill / subprocess failures: still one line, non-zero
        print(f"mpstudy {args.command}: failed: {type(err).__name__}: {_one_line(err)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
