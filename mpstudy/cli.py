"""The ``mpstudy`` command: compress, merge, evaluate, run a study, reproduce all, build the book.

Every command fails with a one-line reason on stderr and exit status 2 on bad input; what the
arguments alone show (numbers out of range, output paths of the wrong kind or under a file, garbled
JSON inputs, budgets, targets) is refused before a model is loaded or anything written. Ctrl-C
prints one line and exits 130.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main"]


# --------------------------------------------------------------------------- checks before any work
# What can be checked from the command line alone is checked before a model is loaded or a study
# starts, so a typo costs a second, not a training run (and leaves nothing behind).

#: integer options that must be positive
_POSITIVE = ("batch_size", "max_length", "max_eval", "max_train", "eval_every", "patience", "num_configs", "fisher_examples")
#: output options: what each must be ("dir" or "file"); per command where it differs
_OUTPUTS = {"results_dir": "dir", "output_dir": "dir", "stats": "file"}
_OUT_KIND = {"compress": "dir", "merge": "dir", "compose": "dir", "finetune": "dir"}  # else a file (prune steps)
#: JSON inputs of the prune steps: option (attribute) -> its name on the command line
_JSON_INPUTS = {"configs": "--configs", "scheme": "--scheme", "stats": "STATS"}


def _option(attr: str) -> str:
    return "--" + attr.replace("_", "-")


def _check_output(option: str, path: str, kind: str) -> None:
    """``path`` can be written as a ``kind`` ("dir" or "file"): not the other kind, under a directory
    that is writable (``ENOTDIR``: a file on the way)."""
    import os

    target = Path(path)
    if kind == "dir" and target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{option} {path} is a file, not a directory")
    if kind == "file" and target.is_dir():
        raise IsADirectoryError(f"{option} {path} is a directory; give a file name")
    parent = next((q for q in [target.parent, *target.parent.parents] if q.exists() or q.is_symlink()), Path("."))
    if not parent.is_dir():
        raise NotADirectoryError(f"{option} {path}: {parent} is a file, so nothing can be written under it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{option} {path}: {parent} is not writable")


def _max_positions(spec: str) -> int | None:
    """Token positions the model ``spec`` has, from its configuration alone (None: unknown or unbounded, e.g. T5)."""
    from .models import TINY_CONFIGS, minilm_path

    if spec in TINY_CONFIGS:
        return TINY_CONFIGS[spec][1].get("max_position_embeddings")
    config = (minilm_path() if spec == "minilm" else Path(spec)) / "config.json"
    try:
        return int(json.loads(config.read_text())["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not a local model, no such key: the loader's own checks speak


def _preflight(args: argparse.Namespace) -> None:
    """One-line errors, before any model is loaded or anything written, for what the arguments alone show."""
    import math

    for attr in _POSITIVE:
        value = getattr(args, attr, None)
        if value is not None and value < 1:
            raise ValueError(f"{_option(attr)}: {attr} must be a positive int, got {value}")
    seed = getattr(args, "seed", None)
    if seed is not None and not 0 <= seed < 2**32:
        raise ValueError(f"--seed must be an integer in [0, 2**32 - 1], got {seed}")
    for attr in ("lr", "epochs"):
        value = getattr(args, attr, None)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{_option(attr)} must be a positive number, got {value}")
    data_dir = getattr(args, "data_dir", None)
    if data_dir is not None and not Path(data_dir).is_dir():
        raise FileNotFoundError(f"--data-dir {data_dir} is not a directory (expected a folder holding glue/ and multi30k/)")
    step = getattr(args, "step", None)
    for attr, option in _JSON_INPUTS.items():  # a garbled input names its file, not just a JSONDecodeError
        value = getattr(args, attr, None)
        if value is None or (attr == "stats" and step != "plot"):
            continue
        option = "CONFIGS" if step == "scheme" else option  # 'prune scheme' takes them as its positional argument
        if not Path(value).is_file():
            raise FileNotFoundError(f"{option} {value} does not exist (or is not a file)")
        try:
            json.loads(Path(value).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{option} {value} is not valid JSON ({' '.join(str(err).split())})") from err
    variants = getattr(args, "variants", None)
    if variants is not None and not Path(variants).is_file():
        raise FileNotFoundError(f"--variants {variants} does not exist (or is not a file)")
    for attr, kind in _OUTPUTS.items():
        value = getattr(args, attr, None)
        if value is not None and not (attr == "stats" and step == "plot"):  # plot's STATS is its input
            _check_output(_option(attr), value, kind)
    if getattr(args, "out", None) is not None:
        _check_output("--out", args.out, _OUT_KIND.get(step or args.command, "file"))
    model = getattr(args, "model", None)
    max_length = getattr(args, "max_length", None)
    limit = _max_positions(model) if model is not None and max_length is not None else None
    if limit is not None and max_length > limit:
        raise ValueError(f"--max-length {max_length} exceeds the {limit} token positions of {model} "
                         f"(max_position_embeddings); give at most {limit}")


def _default_targets(method: str) -> str:
    """What ``compress`` targets when ``--targets`` is not given: a LoBERT mode's own (qkv or ffn), else all-linear."""
    from .methods.lobert import LOBERT_MODES

    mode = method.removeprefix("lobert-")
    return LOBERT_MODES[mode]["targets"] if method.startswith("lobert-") and mode in LOBERT_MODES else "all-linear"


def _check_compress_request(args: argparse.Namespace, budget: dict) -> None:
    """The method's budget keywords, ``--keep``'s range and the targets' syntax, before the model is loaded."""
    import re

    from .factorize.budget import check_keep
    from .methods import get_method
    from .targets import PRESETS, ROLE_GROUPS

    spec = get_method(args.method)
    spec.check_budget(dict(budget))
    if budget.get("keep") is not None:
        check_keep(budget["keep"], what="--keep" if args.keep is not None else "--ratio")
    if args.method == "fwsvd" and args.task is None:
        raise ValueError("--method fwsvd weighs each row by its Fisher importance, estimated from a task's training "
                         "rows: give --task (and --data-dir for a GLUE task)")
    items = [args.targets] if args.targets.startswith("re:") else [t.strip() for t in args.targets.split(",") if t.strip()]
    known = set(ROLE_GROUPS).union(*PRESETS.values())
    for item in items:
        if item.startswith("re:"):
            try:
                re.compile(item[3:])
            except re.error as err:
                raise ValueError(f"--targets {item!r} is not a valid regular expression ({err})") from err
        elif item not in known:
            raise ValueError(f"unknown target {item!r} in --targets; allowed: {sorted(known)} or 're:<regex>'")


def _cmd_compress(args: argparse.Namespace) -> None:
    from .export import MERGED_MARKER, save_merged
    from .models import load_model
    from .surgery import MANIFEST, compress, save_compressed

    out = Path(args.out)
    marker = MERGED_MARKER if args.merge else MANIFEST  # --merge writes a plain checkpoint (mpstudy.export)
    # Refuse a bad destination before loading anything.
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / marker).exists())):
        raise FileExistsError(f"--out {out} exists and is not a saved mpstudy model; choose another directory")
    # --ratio: the Contract's old name of --keep, kept working (deprecated in --help; stderr stays one line on errors)
    keep = args.keep if args.keep is not None else args.ratio
    budget = {k: v for k, v in {"keep": keep, "rank": args.rank, "max_bond": args.max_bond}.items() if v is not None}
    args.targets = args.targets or _default_targets(args.method)
    _check_compress_request(args, budget)  # before the model load (seconds for a real model)
    task = args.task
    if args.method == "fwsvd":  # its row weights: squared task-loss gradients on --fisher-examples training rows
        from .tasks import load_task

        task = load_task(args.task, data_dir=args.data_dir, max_train=args.fisher_examples, max_eval=1)
    model, tokenizer = load_model(args.model, task=task)
    if args.method == "fwsvd":
        from .fisher import estimate_fisher

        budget["fisher"] = estimate_fisher(model, tokenizer, task, targets=args.targets, max_examples=None)
    try:
        report = compress(model, args.method, targets=args.targets, **budget)
    except ValueError as err:  # the library's escape hatch is a Python keyword this command does not take
        raise ValueError(str(err).replace("; pass allow_no_saving=True to accept it", "; give a smaller --keep, "
                                          "--rank or --max-bond")) from err
    if "fisher" in report.budget:  # the row weights themselves are not JSON: their summary is
        report.budget["fisher"] = report.budget["fisher"].to_dict()
    if report.params_after > report.params_before:  # e.g. an MPO whose caps truncate yet store more than the matrices
        raise ValueError(f"{args.method} with {report.budget} stores {report.params_after:,} numbers for the "
                         f"{report.params_before:,} targeted ones ({report.params_after / report.params_before:.3g}x): "
                         f"the compressed model would be bigger; give a smaller --keep, --rank or --max-bond")
    if args.merge:
        save_merged(model, out, tokenizer=tokenizer, source={"model": args.model, "method": args.method,
                                                             "targets": args.targets, "budget": report.budget})
    else:
        save_compressed(model, out, tokenizer=tokenizer)
    print(json.dumps(report.to_dict(), indent=2))


def _cmd_merge(args: argparse.Namespace) -> None:
    from .export import check_destination, save_merged
    from .surgery import MANIFEST, load_compressed

    source = Path(args.dir)
    out = check_destination(args.out)  # before loading anything
    if not (source / MANIFEST).is_file():
        raise FileNotFoundError(f"{source} is not a saved mpstudy model ({MANIFEST} is missing); merge reads directories "
                                "written by 'mpstudy compress' or mpstudy.save_compressed")
    tokenizer = None
    if (source / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source)
    save_merged(load_compressed(source), out, tokenizer=tokenizer, dequantize=args.dequantize,
                source={"compressed": str(source.resolve())})
    print(json.dumps({"merged": str(source), "out": str(out)}, indent=2))


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from .models import load_model
    from .tasks import load_task
    from .train import evaluate

    task = load_task(args.task, data_dir=args.data_dir, max_eval=args.max_eval, max_train=1, seed=args.seed)
    embedding = task.kind == "embedding"  # stsb-embed: the encoder's mean-pooled embeddings, any head ignored
    model, tokenizer = load_model(args.model, task=None if embedding else task, seed=args.seed)
    limit = getattr(model.config, "max_position_embeddings", None)  # T5: relative positions, no limit
    if limit is not None and args.max_length > limit:
        raise ValueError(f"--max-length {args.max_length} exceeds the {limit} token positions of {args.model} "
                         f"(max_position_embeddings); give at most {limit}")
    if embedding:
        from .embeddings import evaluate_embeddings

        metrics = evaluate_embeddings(model, tokenizer, task, batch_size=args.batch_size, max_length=args.max_length)
    else:
        metrics = evaluate(model, tokenizer, task, split="dev", batch_size=args.batch_size, max_length=args.max_length)
    print(json.dumps({"model": args.model, "task": task.name, "split": "dev", "n": len(task.dev), **metrics}, indent=2))


class Terminated(BaseException):
    """SIGTERM arrived: raised in the main thread like Ctrl-C's KeyboardInterrupt (a BaseException, so
    ``except Exception`` handlers do not swallow it), so ``finally`` blocks remove temporary files and
    shut notebook kernels down, and :func:`main` prints one line."""


def _terminate_cleanly() -> None:
    """SIGTERM (``kill``, a CI timeout) -> :class:`Terminated`, so a killed run still removes its temporary
    files and shuts its notebook kernel down. SIGKILL cannot be caught: the next run of the kind cleans up."""
    import signal

    def handler(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)


def _cmd_run(args: argparse.Namespace) -> None:
    from .parameters import declared_parameters, parse_overrides
    from .runner import run_study, store_smoke_outputs

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

    overrides = {"data_dir": str(Path(args.data_dir).resolve())} if args.data_dir else {}
    stamps = reproduce(profile=args.profile, notebooks_dir=args.notebooks_dir, overrides=overrides,
                       output_dir=args.output_dir, results_dir=args.results_dir, force=args.force,
                       replace_profile=args.replace_profile, log=lambda m: print(m, file=sys.stderr), hours=args.hours)
    print(json.dumps([{k: s[k] for k in ("notebook", "status", "seconds")} for s in stamps], indent=2))


def _positive_hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of hours, got {text!r}")
    return value


def _pruned_head_fits(args: argparse.Namespace) -> None:
    """A saved pruned model (its ``pruned.json``) got the head of the task it was composed for: refuse
    another ``--task`` whose head differs (a 2-label classifier scored on STS-B would print a number)."""
    from .tasks import task_head

    meta_file = Path(args.model, "pruned.json")
    if not meta_file.is_file():
        return  # load_pruned says what is missing
    try:
        composed_for = json.loads(meta_file.read_text(encoding="utf-8")).get("task")
    except (ValueError, UnicodeDecodeError, AttributeError) as err:
        raise ValueError(f"{meta_file} is not valid JSON ({' '.join(str(err).split())}): the file is corrupted") from err
    def head(kind_labels: tuple[str, int]) -> str:
        kind, labels = kind_labels
        return "a seq2seq LM" if kind == "seq2seq" else "a 1-output regression head" if kind == "regression" else \
            f"a {labels}-label classification head"

    have = task_head(composed_for) if composed_for else ("classification", 2)
    need = task_head(args.task)
    if have != need:
        raise ValueError(f"{args.model} has {head(have)} (composed for task {composed_for!r}); --task {args.task!r} "
                         f"needs {head(need)}")


def _cmd_prune(args: argparse.Namespace) -> None:
    import pickle

    from .studies.composability import run_prune_step

    if args.step in ("finetune", "evaluate"):
        _pruned_head_fits(args)
    try:
        run_prune_step(args)
    except pickle.UnpicklingError as err:  # torch.load(weights_only=True) of a file that is no tensor file
        culprit = f"--variants {args.variants}" if getattr(args, "variants", None) else f"{Path(args.model, 'model.pt')}"
        raise ValueError(f"{culprit} is not a file mpstudy wrote: torch.load(weights_only=True) cannot read it") from err


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
    p.add_argument("--targets", default=None, help="roles (query,key,...), a group (all-linear, attention, ffn) or re:<regex> "
                   "(default: all-linear; a LoBERT mode's own, qkv or ffn)")
    budget = p.add_mutually_exclusive_group()  # optional: bf16 and int8 take no budget; a method that needs one says so
    budget.add_argument("--keep", type=float, help="kept fraction of the targeted weights, in (0, 1] (every method; "
                        "the compression ratio is 1 / keep)")
    budget.add_argument("--ratio", type=float, help="deprecated: the old name of --keep")
    budget.add_argument("--rank", type=int, help="rank of each factorization")
    budget.add_argument("--max-bond", type=int, help="bond dimension cap (MPO)")
    p.add_argument("--task", default=None, help="task whose head the model gets (default: 2-label classifier); "
                   "fwsvd estimates its Fisher weights on its training rows")
    p.add_argument("--data-dir", default=None, help="folder with glue/ and multi30k/ for fwsvd's --task (default: $MPSTUDY_DATA, else the hub)")
    p.add_argument("--fisher-examples", type=int, default=256, help="fwsvd: training rows the Fisher weights are estimated on")
    p.add_argument("--out", required=True, help="directory to write the compressed model to")
    p.add_argument("--merge", action="store_true", help="write a plain Hugging Face checkpoint (mpstudy.merge: dense "
                   "weights, loadable by from_pretrained) instead of the compressed format")
    p.set_defaults(func=_cmd_compress)

    p = sub.add_parser("merge", help="turn a saved compressed model into a plain Hugging Face checkpoint",
                       description="Load DIR (written by 'mpstudy compress' / save_compressed), replace every compressed "
                       "layer by a dense one (mpstudy.merge) and write a checkpoint from_pretrained loads to --out.")
    p.add_argument("dir", metavar="DIR", help="a directory written by 'mpstudy compress' or mpstudy.save_compressed")
    p.add_argument("--out", required=True, help="directory for the plain checkpoint")
    p.add_argument("--dequantize", action="store_true", help="turn int8 layers into float32 ones (refused otherwise)")
    p.set_defaults(func=_cmd_merge)

    p = sub.add_parser("evaluate", help="evaluate a model on a task's dev split", description="Print the task's dev metrics of a model as JSON.")
    p.add_argument("model", metavar="DIR_OR_MODEL")
    p.add_argument("--task", required=True, help="a task name (sst2, mrpc, stsb...), or stsb-embed: STS-B dev scored by the cosine similarity of mean-pooled embeddings, no head")
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
            p.add_argument("--hours", type=_positive_hours, default=None,
                           help="time box: start no unit after this many hours; finished units stay recorded in "
                                "results/<study>/units/ and the next call continues from them")
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
        _terminate_cleanly()
        _preflight(args)
        args.func(args)
    except KeyboardInterrupt:  # Ctrl-C: one line, the shell's status for SIGINT; every artefact is written atomically
        print(f"mpstudy {args.command}: interrupted (Ctrl-C); files being written were left as they were", file=sys.stderr)
        return 130
    except Terminated:  # kill: the same, with the shell's status for SIGTERM
        print(f"mpstudy {args.command}: terminated (SIGTERM); files being written were left as they were", file=sys.stderr)
        return 143
    except (ValueError, TypeError, OSError, KeyError) as err:
        print(f"mpstudy {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # papermill / subprocess failures: still one line, non-zero
        print(f"mpstudy {args.command}: failed: {type(err).__name__}: {_one_line(err)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
