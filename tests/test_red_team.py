"""Red team: what a new user gets from bad input, faults and interruptions, table-driven.

Each row of ``CASES`` is one thing a user could do, with the outcome they should get:

* an error case: a non-zero exit (command line) or the named exception (library), exactly ONE line
  that names the bad value or file (``match``), nothing on stdout, and no partial output: the
  workspace and the case's scratch folder are as they were (no file written, none replaced, no
  leftover), so a previous artefact is intact;
* a success case: the right result, checked against an oracle (a hand-rolled forward pass, the
  Eckart-Young optimum, the tokenizer's own ids, the file modes the umask gives...).

Classes (the ``cls`` field; counted by ``test_the_table_is_large_enough``): ``cli`` (the ``mpstudy``
command, called in-process), ``library``, ``data`` (data dirs), ``saved`` (saved model directories),
``interruption`` (Ctrl-C, SIGKILL, exceptions mid-save; three real signals to child processes, started
together when the workspace is built so their imports overlap) and ``concurrency`` (threads writing one
artefact). Fault injection the machine cannot do is skipped: we run as root, so a read-only path is
made with a file in the way (ENOTDIR), not with chmod; a full disk is an ``OSError(ENOSPC)`` raised by
the writer, not a tmpfs.
"""
from __future__ import annotations

import copy
import errno
import json
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import nbformat
import pytest
import torch

from mpstudy import compress, load_compressed, load_model, load_task, save_compressed
from mpstudy import records
from mpstudy.cli import main
from mpstudy.tasks import DataDirError, DataFormatError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUERY = "bert.encoder.layer.0.attention.self.query"
WORDS = "good bad film plot actor scene great awful boring funny long story music dull sharp warm".split()
DE = "gut schlecht Hund Katze Mann Frau Haus Auto rennt spielt".split()


# --------------------------------------------------------------------------- the workspace


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()  # a hard-linked copy: never write through the link into the original
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _variant(ws: Path, source: str, name: str, edits: dict[str, str | bytes | None]) -> Path:
    """A copy of ``ws/source`` (hard links: cheap) with some files replaced (bytes/str) or removed (None)."""
    shutil.copytree(ws / source, ws / name, copy_function=os.link)
    for rel, data in edits.items():
        if data is None:
            (ws / name / rel).unlink()
        else:
            _write(ws / name / rel, data)
    return ws / name


def _data(root: Path, rows: int = 12) -> Path:
    """SST-2, STS-B and Multi30K in their real file layouts, ``rows`` rows per split."""
    for split in ("train", "dev"):
        _write(root / f"glue/SST-2/{split}.tsv", "sentence\tlabel\n" + "".join(
            f"{WORDS[i % 16]} {WORDS[(3 * i) % 16]} film\t{i % 2}\n" for i in range(rows)))
        _write(root / f"glue/STS-B/{split}.tsv",
               "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n" + "".join(
                   f"{i}\tmain\tx\t2012\t{i}\tnone\tnone\t{WORDS[i % 16]} film\t{WORDS[(i + 1) % 16]} plot\t{i % 6}.0\n"
                   for i in range(rows)))
    for split in ("train", "val", "test_2016_flickr"):
        _write(root / f"multi30k/{split}.en", "".join(f"{WORDS[i % 16]} {WORDS[(i + 5) % 16]}\n" for i in range(rows)))
        _write(root / f"multi30k/{split}.de", "".join(f"{DE[i % 10]} {DE[(i + 3) % 10]}\n" for i in range(rows)))
    return root


def _data_variant(ws: Path, name: str, edits: dict[str, str | bytes | None]) -> Path:
    root = _data(ws / name)
    for rel, data in edits.items():
        if data is None:
            (root / rel).unlink()
        else:
            _write(root / rel, data)
    return root


# Interruptions by real signals: a child runs `mpstudy` with the save (or the evaluation) blocked after
# it has written its new files, says "ready" in a file, and waits for the signal.
CHILD = r"""
import pathlib, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # even where the runner's shell ignores SIGINT
ready, argv = pathlib.Path(sys.argv[1]), sys.argv[2:]
import safetensors.torch, mpstudy.train
from mpstudy import cli

def block(*args, **kwargs):
    ready.write_text("ready")
    time.sleep(120)

if argv[0] == "compress":
    original = safetensors.torch.save_model
    def save_then_block(*args, **kwargs):
        original(*args, **kwargs)
        block()
    safetensors.torch.save_model = save_then_block
else:
    sys.modules["mpstudy.train"].evaluate = block  # (the package's name `train` is the function)
sys.exit(cli.main(argv))
"""


class _Child:
    """One ``mpstudy`` child process, interrupted by ``sig`` once it is ready."""

    def __init__(self, root: Path, name: str, sig: int, argv: list[str]):
        self.name, self.sig, self.ready = name, sig, root / f"{name}.ready"
        self.out, self.err = open(root / f"{name}.out", "w+"), open(root / f"{name}.err", "w+")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(self.ready), *argv], stdout=self.out,
                                     stderr=self.err, env=env, start_new_session=True)
        self.result: tuple[int, str, str] | None = None

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) after the signal."""
        if self.result is None:
            deadline = time.monotonic() + timeout
            while not self.ready.exists() and self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.proc.poll() is None:
                if self.ready.exists():
                    self.proc.send_signal(self.sig)
                else:  # never got there: fail the case, do not hang
                    self.proc.kill()
            code = self.proc.wait(timeout=60)
            self.out.seek(0)
            self.err.seek(0)
            self.result = (code, self.out.read(), self.err.read())
            self.close()
        return self.result

    def close(self) -> None:
        if self.proc.poll() is None:  # a run of some cases only: do not leave it sleeping
            self.proc.kill()
            self.proc.wait()
        self.out.close()
        self.err.close()


_CHILDREN: dict[str, _Child] = {}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Every file the cases read: saved models (good and damaged), checkpoints with other heads, data
    dirs (good, damaged, linked out), pruning files, a tiny notebook, and things in the way."""
    ws = tmp_path_factory.mktemp("red-team")
    model, tokenizer = load_model("tiny-bert", task="synthetic-cls")
    compress(model, "svd", rank=4)
    save_compressed(model, ws / "good")  # no tokenizer= : the one load_model used is saved by default

    # the interrupted saves replace these; the children start now, their imports overlap the rest
    victims = tmp_path_factory.mktemp("victims")
    for name in ("int", "kill"):  # each in a folder of its own: a killed save leaves its temporary beside it
        (victims / f"{name}-dir").mkdir()
        shutil.copytree(ws / "good", victims / f"{name}-dir" / name, copy_function=os.link)
    compress_argv = ["compress", "tiny-bert", "--method", "svd", "--keep", "0.5"]
    _CHILDREN.clear()
    _CHILDREN["sigint-save"] = _Child(victims, "int", signal.SIGINT, compress_argv + ["--out", str(victims / "int-dir" / "int")])
    _CHILDREN["sigkill-save"] = _Child(victims, "kill", signal.SIGKILL, compress_argv + ["--out", str(victims / "kill-dir" / "kill")])
    _CHILDREN["sigint-evaluate"] = _Child(victims, "eval", signal.SIGINT,
                                          ["evaluate", "tiny-bert", "--task", "synthetic-cls", "--max-eval", "8"])
    (ws / "victims").symlink_to(victims)
    try:
        _build_workspace(ws, tokenizer)
    except BaseException:
        for child in _CHILDREN.values():
            child.close()
        raise
    yield ws
    for child in _CHILDREN.values():
        child.close()


def _build_workspace(ws: Path, tokenizer) -> None:
    manifest = json.loads((ws / "good" / "mpstudy_compressed.json").read_text())
    weights = (ws / "good" / "model.safetensors").read_bytes()
    _variant(ws, "good", "truncated", {"model.safetensors": weights[: len(weights) // 2]})
    _variant(ws, "good", "badmanifest", {"mpstudy_compressed.json": "{not json"})
    _variant(ws, "good", "mismatched", {"mpstudy_compressed.json": json.dumps(
        {**manifest, "modules": {**manifest["modules"], QUERY: {**manifest["modules"][QUERY],
                                                                 "kwargs": {**manifest["modules"][QUERY]["kwargs"], "rank": 8}}}})})
    _variant(ws, "good", "unknownlayer", {"mpstudy_compressed.json": json.dumps(
        {**manifest, "modules": {**manifest["modules"], QUERY: {**manifest["modules"][QUERY], "class": "NoSuchLayer"}}})})
    _variant(ws, "good", "format99", {"mpstudy_compressed.json": json.dumps({**manifest, "format": 99})})
    _variant(ws, "good", "bf16manifest", {"mpstudy_compressed.json": json.dumps({**manifest, "dtype": "bfloat16"})})
    _variant(ws, "good", "noweights", {"model.safetensors": None})
    _variant(ws, "good", "noconfig", {"config.json": None})
    _variant(ws, "good", "badconfig", {"config.json": "{oops"})
    _variant(ws, "good", "badtok", {"tokenizer.json": "{oops"})
    _variant(ws, "good", "badtokcfg", {"tokenizer_config.json": "{oops"})
    _variant(ws, "good", "specialsonly", {"tokenizer.json": None})  # a BertTokenizer of 5 special tokens
    _variant(ws, "good", "notok", {"tokenizer.json": None, "tokenizer_config.json": None})
    from safetensors.torch import load_file, save_file

    state = load_file(ws / "good" / "model.safetensors")
    state[f"{QUERY}.first.weight"][0, 0] = math.nan
    (ws / "nansaved").mkdir()
    for f in (ws / "good").iterdir():
        if f.name != "model.safetensors":
            os.link(f, ws / "nansaved" / f.name)
    save_file(state, ws / "nansaved" / "model.safetensors", metadata={"format": "pt"})

    for task, name in (("stsb", "hf_reg"), ("sst2", "hf_cls2")):
        m, _ = load_model("tiny-bert", task=task)
        m.save_pretrained(ws / name)
        tokenizer.save_pretrained(ws / name)
    cfg = json.loads((ws / "hf_cls2" / "config.json").read_text())
    _variant(ws, "hf_cls2", "hf_cls3", {"config.json": json.dumps(
        {**cfg, "id2label": {str(i): f"L{i}" for i in range(3)}, "label2id": {f"L{i}": i for i in range(3)}})})
    for name, value in (("nan_model", math.nan), ("zero_model", 0.0)):
        m, _ = load_model("tiny-bert", task="synthetic-cls")
        with torch.no_grad():
            if value == 0.0:
                m.get_submodule(QUERY).weight.zero_()
            else:
                m.get_submodule(QUERY).weight[0, 0] = value
        m.save_pretrained(ws / name)
        tokenizer.save_pretrained(ws / name)
    reg, _ = load_model("tiny-bert", task="stsb")
    compress(reg, "svd", rank=4)
    save_compressed(reg, ws / "comp_reg")

    data = _data(ws / "data")
    outside = _write(ws / "outside" / "dev.tsv", (data / "glue/SST-2/dev.tsv").read_text())
    _data_variant(ws, "data_link_out", {})
    (ws / "data_link_out/glue/SST-2/dev.tsv").unlink()
    (ws / "data_link_out/glue/SST-2/dev.tsv").symlink_to(outside)
    _data_variant(ws, "data_link_in", {})
    (ws / "data_link_in/glue/SST-2/dev.tsv").unlink()
    (ws / "data_link_in/glue/SST-2/dev.tsv").symlink_to(ws / "data_link_in/glue/SST-2/train.tsv")
    _data_variant(ws, "data_bad_line", {"glue/SST-2/dev.tsv": "sentence\tlabel\nno label here\n"})
    _data_variant(ws, "data_not_utf8", {"glue/SST-2/dev.tsv": b"sentence\tlabel\n\xff\xfe bad\t1\n"})
    _data_variant(ws, "data_empty_file", {"glue/SST-2/dev.tsv": ""})
    _data_variant(ws, "data_bad_header", {"glue/SST-2/dev.tsv": "text\tlabel\na film\t1\n"})
    _data_variant(ws, "data_bad_label", {"glue/SST-2/dev.tsv": "sentence\tlabel\na film\t2\n"})
    _data_variant(ws, "data_bad_score", {"glue/STS-B/dev.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\t"
                                         "source2\tsentence1\tsentence2\tscore\n0\tm\tx\t2012\t0\tn\tn\ta\tb\tabc\n"})
    _data_variant(ws, "data_m30k_uneven", {"multi30k/train.de": "nur eine Zeile\n"})
    _data_variant(ws, "data_no_dev", {"glue/SST-2/dev.tsv": None})
    (ws / "empty").mkdir()
    (ws / "occupied").mkdir()
    (ws / "occupied" / "keep.txt").write_text("precious")
    (ws / "file.txt").write_text("a file in the way")
    (ws / "garbled.json").write_text("{oops")

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "smoke"\nseed = 0\nx = 1')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print(x)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (ws / "nb").mkdir()
    nbformat.write(nb, ws / "nb" / "99_tiny.ipynb")
    (ws / "no_notebooks").mkdir()

    for argv in (["configs", "tiny-bert", "--out", str(ws / "conf.json")],
                 ["scheme", str(ws / "conf.json"), "--out", str(ws / "scheme.json")],
                 ["prune", "tiny-bert", "--task", "synthetic-cls", "--scheme", str(ws / "scheme.json"), "--out", str(ws / "v.pt")],
                 ["compose", "tiny-bert", "--task", "synthetic-cls", "--variants", str(ws / "v.pt"), "--configs",
                  str(ws / "conf.json"), "--index", "0", "--out", str(ws / "composed")]):
        assert main(["prune", *argv]) == 0
    _variant(ws, "composed", "composed_badmeta", {"pruned.json": "{oops"})


def _snapshot(*roots: Path) -> dict[str, tuple]:
    """Every path under ``roots`` (hidden leftovers included) with its kind, size and modification time."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.name.endswith((".ready", ".out", ".err")) or "victims" in p.parts:
                continue  # the interruption children write these meanwhile
            st = p.lstat()
            out[str(p)] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns)
    return out


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _logits(model, tokenizer, text=("a fine film", "the worst plot")):
    batch = tokenizer(list(text), padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


# --------------------------------------------------------------------------- the table


@dataclass
class Case:
    id: str
    cls: str  # cli | library | data | saved | interruption | concurrency
    argv: list[str] | None = None  # a command line ({ws}, {tmp} filled in), run by mpstudy.cli.main in-process
    call: Callable[[Path, Path], Any] | None = None  # a library call (ws, tmp)
    match: str | None = None  # error cases: what the one line must say
    error: type[BaseException] = Exception  # library error cases: the exception type
    check: Callable[..., None] | None = None  # success cases: check(ws, tmp, result) against an oracle
    patch: Callable[[pytest.MonkeyPatch, Path, Path], None] | None = None  # a fault injected first
    setup: Callable[[Path, Path], None] | None = None  # files the case starts from (in tmp)
    exit_code: int | None = None  # the exact status a CLI error case must have (default: any non-zero)
    not_in: tuple[str, ...] = field(default_factory=tuple)  # what the message must not say
    multiline: bool = False  # a library message that is a list by design (DataDirError)


def cli(id, argv, match, **kw):
    return Case(id, kw.pop("cls", "cli"), argv=argv, match=match, **kw)


def lib(id, call, match, error=Exception, cls="library", **kw):
    return Case(id, cls, call=call, match=match, error=error, **kw)


def ok(id, cls, check, argv=None, call=None, **kw):
    return Case(id, cls, argv=argv, call=call, check=check, **kw)


COMPRESS = ["compress", "tiny-bert", "--out", "{tmp}/out"]
EVAL = ["evaluate", "tiny-bert", "--task", "synthetic-cls", "--max-eval", "8"]
RUN = ["run", "{ws}/nb/99_tiny.ipynb", "--output-dir", "{tmp}/out", "--results-dir", "{tmp}/res"]
REPRO = ["reproduce", "--notebooks-dir", "{ws}/nb", "--output-dir", "{tmp}/out", "--results-dir", "{tmp}/res"]
TUNE = ["prune", "tune-modules", "tiny-bert", "--task", "synthetic-cls", "--variants", "{ws}/v.pt", "--lr", "1e-3",
        "--epochs", "0.01", "--quiet", "--out", "{tmp}/vt.pt"]
FINETUNE = ["prune", "finetune", "{ws}/composed", "--task", "synthetic-cls", "--lr", "1e-3", "--epochs", "0.01",
            "--quiet", "--out", "{tmp}/ft"]


def _tiny(task="synthetic-cls"):
    return load_model("tiny-bert", task=task)[0]


def _with_weight(name, fill):
    def build():
        model = _tiny()
        with torch.no_grad():
            fill(model.get_submodule(name).weight)
        return model
    return build


def _compress(method, build=_tiny, targets="all-linear", **budget):
    return lambda ws, tmp: compress(build(), method, targets=targets, **budget)


# ---- oracles of the success cases


def _accuracy_by_hand(model_dir: str, n: int = 8) -> float:
    """The dev accuracy of a saved model, by a plain forward pass per row (no mpstudy.train)."""
    model, tokenizer = load_model(model_dir, task="synthetic-cls")
    dev = load_task("synthetic-cls", max_eval=n, max_train=1).dev
    right = 0
    for ex in dev:
        with torch.no_grad():
            logits = model(**tokenizer(ex["text_a"], return_tensors="pt")).logits
        right += int(logits.argmax(-1).item() == ex["label"])
    return right / len(dev)


def _check_evaluate(ws, tmp, out):
    assert out["n"] == 8 and out["accuracy"] == _accuracy_by_hand(str(ws / "good"))


def _check_compressed(keep, method="svd", targets=None):
    def check(ws, tmp, report):
        assert report["method"] == method and abs(report["kept_fraction"] - keep) / keep <= 0.05
        if targets:
            assert report["targets"] == targets
        model, tokenizer = load_model(tmp / "out", task="synthetic-cls")
        oracle = _tiny()  # the same compression in this process: the saved model reloads to its logits
        compress(oracle, method, targets=report["targets"], keep=keep)
        assert torch.allclose(_logits(model, tokenizer), _logits(oracle, tokenizer), atol=1e-5, rtol=0)
        assert len(tokenizer) == 30522  # the tokenizer was saved with it
    return check


def _check_fwsvd(ws, tmp, report):
    """Eckart-Young: plain SVD has the least Frobenius error at a rank, so Fisher weighting can only add to it."""
    plain = compress(_tiny(), "svd", keep=0.5)
    errors = {m["name"]: m["rel_error"] for m in plain.modules}
    assert [m["rank"] for m in report["modules"]] == [m["rank"] for m in plain.modules]
    assert all(m["rel_error"] >= errors[m["name"]] - 1e-6 for m in report["modules"])
    assert any(m["rel_error"] > errors[m["name"]] + 1e-4 for m in report["modules"])


def _check_default_budget(kept, method):
    def check(ws, tmp, report):
        assert report["method"] == method and report["kept_fraction"] < 1
        assert abs(report["kept_fraction"] - kept) < 0.01
    return check


def _check_tokenizer_saved(ws, tmp, _):
    saved_model, saved = load_model(ws / "good", task="synthetic-cls")
    _, original = load_model("tiny-bert")
    text = "a surprisingly sharp and funny film"
    assert saved(text)["input_ids"] == original(text)["input_ids"] and len(saved) == len(original) == 30522
    assert saved.unk_token_id not in saved(text)["input_ids"]


def _save_roundtrip_keeps_tokenizer(ws, tmp):
    model = load_compressed(ws / "good")  # records where its tokenizer is
    save_compressed(copy.deepcopy(model), tmp / "again")  # a copy keeps it too
    return tmp / "again"


def _check_has_tokenizer(ws, tmp, path):
    assert (path / "tokenizer.json").is_file() and len(load_model(path)[1]) == 30522


def _save_by_hand_model(ws, tmp):
    import transformers

    config = transformers.AutoConfig.from_pretrained(ws / "hf_cls2")
    with pytest.warns(UserWarning, match="none is saved; load_model will refuse the directory"):
        save_compressed(transformers.AutoModelForSequenceClassification.from_config(config), tmp / "bare")
    return tmp / "bare"


def _check_bare_refused(ws, tmp, path):
    assert load_compressed(path) is not None  # the weights alone reload
    with pytest.raises(FileNotFoundError, match="holds no tokenizer"):
        load_model(path)


def _modes(root: Path) -> set[tuple[str, str]]:
    return {("dir" if p.is_dir() else "file", oct(p.stat().st_mode & 0o777)) for p in [root, *root.rglob("*")]}


def _save_under_umask(mask):
    def call(ws, tmp):
        old = os.umask(mask)
        try:
            save_compressed(load_compressed(ws / "good"), tmp / "m")
            records.write_json_atomic(tmp / "r.json", {"a": 1})
        finally:
            os.umask(old)
        return mask
    return call


def _check_modes(ws, tmp, mask):
    want = {("dir", oct(0o777 & ~mask)), ("file", oct(0o666 & ~mask))}
    assert _modes(tmp / "m") == want  # safetensors alone writes 0600
    assert oct((tmp / "r.json").stat().st_mode & 0o777) == oct(0o666 & ~mask)


def _no_unsafe_torch_load(ws, tmp):
    import re

    root = Path(__file__).resolve().parent.parent / "mpstudy"
    unsafe = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
              if re.search(r"torch\.load\(", line) and "weights_only=True" not in line]
    return unsafe


def _teacher_cache_is_not_unpickled(ws, tmp):
    """A teacher-output cache file replaced by a pickle that runs code: refused, the code never runs."""
    from mpstudy.distill import teacher_outputs

    teacher, tokenizer = load_model("tiny-bert", task="synthetic-cls")
    task = load_task("synthetic-cls", max_train=8, max_eval=8)
    teacher_outputs(teacher, tokenizer, task, cache_dir=tmp)
    (entry,) = (tmp / "teachers").glob("*.pt")
    marker = tmp / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "ran"))

    torch.save({"logits": Payload(), "cls": Payload()}, entry)
    try:
        teacher_outputs(teacher, tokenizer, task, cache_dir=tmp)
    except Exception as err:  # noqa: BLE001 - torch's UnpicklingError: the refusal is the point
        return type(err).__name__, marker.exists()
    return "loaded", marker.exists()


def _link_out_followed_loudly(ws, tmp):
    with pytest.warns(UserWarning, match="symbolic link out of the data dir"):
        return load_task("sst2", data_dir=ws / "data_link_out")


def _check_link_out(ws, tmp, task):
    assert task.source["links"] == {"glue/SST-2/dev.tsv": str((ws / "outside" / "dev.tsv").resolve())}
    assert len(task.dev) == 12


def _check_link_in(ws, tmp, task):
    assert "links" not in task.source and [e["label"] for e in task.dev] == [e["label"] for e in task.train]


# ---- interruptions


def _child(name):
    return lambda ws, tmp: _CHILDREN[name].finish()


def _tree_digest(path: Path) -> dict[str, int]:
    return {p.name: hash(p.read_bytes()) for p in sorted(path.iterdir())}


def _check_sigint_save(ws, tmp, result):
    code, out, err = result
    lines = err.strip().splitlines()
    assert code == 130 and len(lines) == 1 and "interrupted" in lines[0] and not out.strip(), err
    victim = ws / "victims" / "int-dir" / "int"
    assert _tree_digest(victim) == _tree_digest(ws / "good") and _hidden(victim.parent) == []


def _check_sigint_evaluate(ws, tmp, result):
    code, out, err = result
    lines = err.strip().splitlines()
    assert code == 130 and lines == ["mpstudy evaluate: interrupted (Ctrl-C); files being written were left as they were"], err


def _check_sigkill_save(ws, tmp, result):
    code, _, _ = result
    victim = ws / "victims" / "kill-dir" / "kill"
    assert code == -signal.SIGKILL
    assert _tree_digest(victim) == _tree_digest(ws / "good")  # the old model, whole
    assert _hidden(victim.parent), "the killed save left its temporary (the next save removes it)"
    model, tokenizer = load_model("tiny-bert", task="synthetic-cls")
    compress(model, "svd", keep=0.5)
    save_compressed(model, victim, tokenizer=tokenizer)
    assert _hidden(victim.parent) == []
    assert torch.equal(_logits(load_compressed(victim), tokenizer), _logits(model, tokenizer))


def _interrupt(exc):
    def patch(mp, ws, tmp):
        def boom(*args, **kwargs):
            raise exc
        mp.setattr("safetensors.torch.save_model", boom)
    return patch


def _old_model(ws, tmp):
    shutil.copytree(ws / "good", tmp / "out", copy_function=os.link)


def _ctrl_c_in_library_save(ws, tmp):
    _old_model(ws, tmp)
    with pytest.MonkeyPatch.context() as mp:
        _interrupt(KeyboardInterrupt())(mp, ws, tmp)
        with pytest.raises(KeyboardInterrupt):
            save_compressed(_tiny(), tmp / "out")
    return tmp


def _check_old_model_intact(ws, tmp, _):
    assert _tree_digest(tmp / "out") == _tree_digest(ws / "good") and _hidden(tmp) == []


def _json_write_interrupted(ws, tmp):
    records.write_json_atomic(tmp / "r.json", {"v": 1})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(records.os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            records.write_json_atomic(tmp / "r.json", {"v": 2})
    return json.loads((tmp / "r.json").read_text()), _hidden(tmp)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _dead_writers_leftover_is_removed(ws, tmp):
    target = tmp / "m"
    leftover = tmp / f".m.tmp-{records._HOST}-{_dead_pid()}-0123abcd"
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_text("half")
    save_compressed(load_compressed(ws / "good"), target)
    return _hidden(tmp)


def _live_writers_temporary_is_kept(ws, tmp):
    live = tmp / f".m.tmp-{records._HOST}-{os.getpid()}-0123abcd"
    live.mkdir(parents=True)
    with records._registered(live):
        save_compressed(load_compressed(ws / "good"), tmp / "m")
        return _hidden(tmp)


# ---- concurrency


def _threads(fns):
    errors = []

    def run(fn):
        try:
            fn()
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors


def _two_saves_one_target(ws, tmp):
    base = load_compressed(ws / "good")
    models = [copy.deepcopy(base) for _ in range(2)]
    with torch.no_grad():
        for i, m in enumerate(models):
            m.classifier.bias.fill_(float(i + 1))
    _threads([lambda m=m: save_compressed(m, tmp / "m") for m in models])
    return models


def _check_one_whole_model(ws, tmp, models):
    _, tokenizer = load_model(ws / "good")
    got = _logits(load_compressed(tmp / "m"), tokenizer)
    assert any(torch.equal(got, _logits(m, tokenizer)) for m in models) and _hidden(tmp) == []


def _json_writers_and_a_reader(ws, tmp):
    path = tmp / "r.json"
    records.write_json_atomic(path, {"writer": -1, "pad": "x" * 10000})
    stop, seen = threading.Event(), []

    def read():
        while not stop.is_set():
            seen.append(json.loads(path.read_text())["writer"])  # a half-written file would not parse

    reader = threading.Thread(target=read)
    reader.start()
    try:
        _threads([lambda i=i: [records.write_json_atomic(path, {"writer": i, "pad": "x" * 10000}) for _ in range(5)]
                  for i in range(6)])
    finally:
        stop.set()
        reader.join()
    return json.loads(path.read_text())["writer"], len(seen), _hidden(tmp)


def _saves_to_two_targets(ws, tmp):
    models = [load_compressed(ws / "good") for _ in range(2)]
    _threads([lambda i=i: save_compressed(models[i], tmp / f"m{i}") for i in range(2)])
    return [sorted(p.name for p in (tmp / f"m{i}").iterdir()) for i in range(2)]


def _compress_in_threads(ws, tmp):
    models = [_tiny() for _ in range(3)]
    reports = [None] * 3

    def work(i):
        reports[i] = compress(models[i], "svd", keep=0.5).to_dict()

    _threads([lambda i=i: work(i) for i in range(3)])
    return reports


# ---- the table

CASES: list[Case] = [
    # ======================================================================= command line: compress
    cli("re-paren", COMPRESS + ["--method", "svd", "--keep", "0.5", "--targets", "re:("], "--targets 're:(' is not a valid regular expression"),
    cli("target-unknown", COMPRESS + ["--method", "svd", "--keep", "0.5", "--targets", "nothing"], "unknown target 'nothing'"),
    cli("target-empty", COMPRESS + ["--method", "svd", "--keep", "0.5", "--targets", ","], "targets is empty"),
    cli("target-regex-no-match", COMPRESS + ["--method", "svd", "--keep", "0.5", "--targets", "re:nomatch"], "['re:nomatch'] matched no"),
    cli("model-empty-dir", ["compress", "{ws}/empty", "--method", "svd", "--keep", "0.5", "--out", "{tmp}/out"], "empty has no config.json"),
    cli("model-is-a-file", ["compress", "{ws}/file.txt", "--method", "svd", "--keep", "0.5", "--out", "{tmp}/out"], "file.txt is a file"),
    cli("model-unknown", ["compress", "no-such-model", "--method", "svd", "--keep", "0.5", "--out", "{tmp}/out"], "'no-such-model'"),
    cli("keep-0", COMPRESS + ["--method", "svd", "--keep", "0"], "--keep (the fraction of the weights kept) must be a number in (0, 1], got 0.0"),
    cli("keep-negative", COMPRESS + ["--method", "svd", "--keep", "-0.5"], "got -0.5"),
    cli("keep-nan", COMPRESS + ["--method", "svd", "--keep", "nan"], "got nan"),
    cli("keep-inf", COMPRESS + ["--method", "mpo", "--keep", "inf"], "got inf"),
    cli("keep-2", COMPRESS + ["--method", "offline-tucker", "--keep", "2"], "got 2.0"),
    cli("ratio-2", COMPRESS + ["--method", "svd", "--ratio", "2"], "--ratio (the fraction of the weights kept)"),
    cli("ratio-1-svd", COMPRESS + ["--method", "svd", "--ratio", "1"], "saves nothing (ranks that save are <= 31); give a smaller --keep",
        not_in=("allow_no_saving",)),
    cli("rank-32-saves-nothing", COMPRESS + ["--method", "svd", "--rank", "32"], "give a smaller --keep", not_in=("allow_no_saving",)),
    cli("rank-0", COMPRESS + ["--method", "svd", "--rank", "0"], "rank must be an integer in [1, 64]"),
    cli("rank-1000", COMPRESS + ["--method", "svd", "--rank", "1000"], "got 1000"),
    cli("rank-not-int", COMPRESS + ["--method", "svd", "--rank", "two"], "invalid int value: 'two'"),
    cli("max-bond-0", COMPRESS + ["--method", "mpo", "--max-bond", "0"], "max_bond must be an int >= 1"),
    cli("max-bond-1e8", COMPRESS + ["--method", "mpo", "--max-bond", "100000000"], "(1.58x): the compressed model would be bigger"),
    cli("mpo-exact-grows", COMPRESS + ["--method", "mpo"], "the compressed model would be bigger"),
    cli("tucker-cr-1.0000001", COMPRESS + ["--method", "offline-tucker", "--keep", "0.9999999"], "(1.03x): it saves nothing"),
    cli("kronecker-keep-1", COMPRESS + ["--method", "offline-kronecker", "--keep", "1"], "must be a number in (0, 1), got 1.0"),
    cli("tucker-unreachable", COMPRESS + ["--method", "offline-tucker", "--keep", "0.001"], "cannot keep 0.001"),
    cli("falcon-unreachable", COMPRESS + ["--method", "falcon", "--keep", "0.25"], "falcon cannot keep 0.25"),
    cli("lobert-falcon-keep-unreachable", COMPRESS + ["--method", "lobert-self_falconlayer", "--keep", "0.5"], "no FALCON k keeps 0.5"),
    cli("lobert-wrong-targets", COMPRESS + ["--method", "lobert-self_svd", "--keep", "0.5", "--targets", "ffn"],
        "lobert-self_svd replaces ['query', 'key', 'value']"),
    cli("fwsvd-without-task", COMPRESS + ["--method", "fwsvd", "--keep", "0.5"], "--method fwsvd weighs each row by its Fisher importance"),
    cli("fwsvd-missing-data", COMPRESS + ["--method", "fwsvd", "--keep", "0.5", "--task", "sst2", "--data-dir", "{ws}/empty"],
        "glue/SST-2/train.tsv  (MISSING)"),
    cli("fisher-examples-0", COMPRESS + ["--method", "fwsvd", "--keep", "0.5", "--task", "synthetic-cls", "--fisher-examples", "0"],
        "--fisher-examples: fisher_examples must be a positive int, got 0"),
    cli("budget-not-taken", COMPRESS + ["--method", "svd", "--max-bond", "4"], "does not take ['max_bond']"),
    cli("precision-with-budget", COMPRESS + ["--method", "bf16", "--keep", "0.5"], "method 'bf16' takes no budget keywords"),
    cli("no-budget-svd", COMPRESS + ["--method", "svd"], "give exactly one of rank= or keep="),
    cli("heads-in-part", COMPRESS + ["--method", "prune-heads", "--keep", "0.5", "--targets", "qkv"], "targeted only in part"),
    cli("out-under-a-file", ["compress", "tiny-bert", "--method", "svd", "--keep", "0.5", "--out", "{ws}/file.txt/out"],
        "--out {ws}/file.txt/out: {ws}/file.txt is a file, so nothing can be written under it"),
    cli("out-is-a-file", ["compress", "tiny-bert", "--method", "svd", "--keep", "0.5", "--out", "{ws}/file.txt"], "--out {ws}/file.txt is a file, not a directory"),
    cli("out-foreign-dir", ["compress", "tiny-bert", "--method", "svd", "--keep", "0.5", "--out", "{ws}/occupied"],
        "occupied exists and is not a saved mpstudy model"),
    cli("task-unknown", COMPRESS + ["--method", "svd", "--keep", "0.5", "--task", "imdb"], "'imdb'"),
    cli("t5-classifier", ["compress", "tiny-t5", "--method", "svd", "--keep", "0.5", "--out", "{tmp}/out"], "tiny-t5 is an encoder-decoder"),
    cli("nan-model", ["compress", "{ws}/nan_model", "--method", "svd", "--keep", "0.5", "--out", "{tmp}/out"], "1 NaN or inf entries"),
    cli("zero-model", ["compress", "{ws}/zero_model", "--method", "offline-prune", "--keep", "0.5", "--out", "{tmp}/out"],
        f"{QUERY}.weight is all zeros"),
    cli("head-mismatch-compress", ["compress", "{ws}/hf_reg", "--method", "svd", "--keep", "0.5", "--task", "sst2", "--out", "{tmp}/out"],
        "hf_reg has a 1-output regression head; task 'sst2' needs a 2-label classification head"),
    cli("method-unknown", COMPRESS + ["--method", "nope", "--keep", "0.5"], "invalid choice: 'nope'"),
    cli("command-unknown", ["squeeze"], "invalid choice: 'squeeze'"),
    cli("disk-full-on-save", ["compress", "tiny-bert", "--method", "svd", "--keep", "0.5", "--out", "{tmp}/out"],
        "No space left on device", setup=_old_model, patch=_interrupt(OSError(errno.ENOSPC, "No space left on device"))),
    ok("compress-svd-then-reload", "cli", _check_compressed(0.5), argv=COMPRESS + ["--method", "svd", "--keep", "0.5"]),
    ok("compress-lobert-default-targets", "cli", _check_compressed(0.5, "lobert-self_svd", "qkv"),
       argv=COMPRESS + ["--method", "lobert-self_svd", "--keep", "0.5"]),
    ok("compress-lobert-ffn-default-targets", "cli", _check_compressed(0.5, "lobert-ffn_svd", "ffn"),
       argv=COMPRESS + ["--method", "lobert-ffn_svd", "--keep", "0.5"]),
    ok("compress-lobert-falcon-default-budget", "cli", _check_default_budget(0.359, "lobert-self_falconlayer"),
       argv=COMPRESS + ["--method", "lobert-self_falconlayer"]),
    ok("compress-falcon-default-budget", "cli", _check_default_budget(0.520, "falcon"), argv=COMPRESS + ["--method", "falcon"]),
    ok("compress-fwsvd-from-task", "cli", _check_fwsvd,
       argv=COMPRESS + ["--method", "fwsvd", "--keep", "0.5", "--task", "synthetic-cls", "--fisher-examples", "16"]),
    ok("compress-over-own-saved-model", "cli", _check_compressed(0.5), setup=_old_model,
       argv=COMPRESS + ["--method", "svd", "--keep", "0.5"]),
    # ======================================================================= command line: evaluate
    cli("batch-size-0", EVAL + ["--batch-size", "0"], "--batch-size: batch_size must be a positive int, got 0"),
    cli("seed-negative", EVAL + ["--seed", "-1"], "--seed must be an integer in [0, 2**32 - 1], got -1"),
    cli("seed-2-32", EVAL + ["--seed", str(2**32)], "got 4294967296"),
    cli("max-length-above-positions", EVAL + ["--max-length", "1000"], "--max-length 1000 exceeds the 128 token positions of tiny-bert"),
    cli("max-length-above-saved-positions", ["evaluate", "{ws}/good", "--task", "synthetic-cls", "--max-length", "129"],
        "exceeds the 128 token positions"),
    cli("max-length-0", EVAL + ["--max-length", "0"], "--max-length: max_length must be a positive int, got 0"),
    cli("max-eval-0", EVAL[:-2] + ["--max-eval", "0"], "max_eval must be a positive int"),
    cli("data-dir-missing", EVAL + ["--data-dir", "{ws}/nowhere"], "--data-dir {ws}/nowhere is not a directory"),
    cli("data-dir-is-a-file", EVAL + ["--data-dir", "{ws}/file.txt"], "--data-dir {ws}/file.txt is not a directory"),
    cli("task-missing-files", ["evaluate", "tiny-bert", "--task", "sst2", "--data-dir", "{ws}/empty"], "glue/SST-2/train.tsv  (MISSING)"),
    cli("eval-empty-dir", ["evaluate", "{ws}/empty", "--task", "synthetic-cls"], "has no config.json: not a saved model"),
    cli("eval-regression-on-cls", ["evaluate", "{ws}/hf_reg", "--task", "synthetic-cls"],
        "hf_reg has a 1-output regression head; task 'synthetic-cls' needs a 2-label classification head"),
    cli("eval-2-label-on-stsb", ["evaluate", "{ws}/hf_cls2", "--task", "stsb", "--data-dir", "{ws}/data"],
        "hf_cls2 has a 2-label classification head; task 'stsb' needs a 1-output regression head"),
    cli("eval-3-label-on-sst2", ["evaluate", "{ws}/hf_cls3", "--task", "sst2", "--data-dir", "{ws}/data"],
        "hf_cls3 has a 3-label classification head; task 'sst2' needs a 2-label"),
    cli("eval-saved-regression-on-cls", ["evaluate", "{ws}/comp_reg", "--task", "synthetic-cls"], "comp_reg has a 1-output regression head"),
    cli("eval-classifier-on-multi30k", ["evaluate", "{ws}/hf_cls2", "--task", "multi30k", "--data-dir", "{ws}/data"],
        "task 'multi30k' is seq2seq and needs an encoder-decoder LM"),
    cli("eval-saved-classifier-on-seq2seq", ["evaluate", "{ws}/good", "--task", "synthetic-seq2seq"], "good has a 2-label classification head"),
    cli("eval-encoder-on-seq2seq", ["evaluate", "tiny-bert", "--task", "synthetic-seq2seq"], "tiny-bert is an encoder"),
    cli("eval-t5-on-cls", ["evaluate", "tiny-t5", "--task", "synthetic-cls"], "tiny-t5 is an encoder-decoder"),
    cli("eval-unknown-task", ["evaluate", "tiny-bert", "--task", "imdb"], "unknown task"),
    ok("evaluate-saved-model", "cli", _check_evaluate, argv=["evaluate", "{ws}/good", "--task", "synthetic-cls", "--max-eval", "8"]),
    ok("evaluate-at-the-position-limit", "cli", lambda ws, tmp, out: None if out["n"] == 8 else pytest.fail(str(out)),
       argv=EVAL + ["--max-length", "128"]),
    # ======================================================================= command line: run / reproduce
    cli("run-results-under-a-file", ["run", "{ws}/nb/99_tiny.ipynb", "--results-dir", "{ws}/file.txt/res", "--output-dir", "{tmp}/out"],
        "--results-dir {ws}/file.txt/res: {ws}/file.txt is a file"),
    cli("run-results-is-a-file", ["run", "{ws}/nb/99_tiny.ipynb", "--results-dir", "{ws}/file.txt", "--output-dir", "{tmp}/out"],
        "--results-dir {ws}/file.txt is a file, not a directory"),
    cli("run-output-under-a-file", ["run", "{ws}/nb/99_tiny.ipynb", "--output-dir", "{ws}/file.txt/o", "--results-dir", "{tmp}/res"],
        "--output-dir {ws}/file.txt/o: {ws}/file.txt is a file"),
    cli("run-output-is-a-file", ["run", "{ws}/nb/99_tiny.ipynb", "--output-dir", "{ws}/file.txt", "--results-dir", "{tmp}/res"],
        "--output-dir {ws}/file.txt is a file, not a directory"),
    cli("run-data-dir-missing", RUN + ["--data-dir", "{ws}/nowhere"], "--data-dir {ws}/nowhere is not a directory"),
    cli("run-missing-notebook", ["run", "{ws}/nb/00_missing.ipynb"], "no notebook at"),
    cli("run-not-a-notebook", ["run", "{ws}/file.txt"], "no notebook at {ws}/file.txt"),
    cli("run-unknown-parameter", RUN + ["-p", "nope", "1"], "has no parameter(s) ['nope']"),
    cli("run-p-without-value", RUN + ["-p", "x"], "argument -p/--param: expected 2 arguments"),
    cli("run-unknown-profile", RUN + ["--profile", "fast"], "invalid choice: 'fast'"),
    cli("run-in-place-with-p", ["run", "{ws}/nb/99_tiny.ipynb", "--in-place", "-p", "x", "2"], "--in-place stores the template's own"),
    cli("reproduce-results-is-a-file", ["reproduce", "--notebooks-dir", "{ws}/nb", "--results-dir", "{ws}/file.txt", "--output-dir", "{tmp}/out"],
        "--results-dir {ws}/file.txt is a file"),
    cli("reproduce-output-under-a-file", ["reproduce", "--notebooks-dir", "{ws}/nb", "--output-dir", "{ws}/file.txt/o", "--results-dir", "{tmp}/r"],
        "--output-dir {ws}/file.txt/o: {ws}/file.txt is a file"),
    cli("reproduce-data-dir-missing", REPRO + ["--data-dir", "{ws}/nowhere"], "--data-dir {ws}/nowhere is not a directory"),
    cli("reproduce-no-notebooks", ["reproduce", "--notebooks-dir", "{ws}/no_notebooks", "--output-dir", "{tmp}/out", "--results-dir", "{tmp}/r"],
        "no study notebooks"),
    # ======================================================================= command line: prune
    cli("prune-scheme-garbled", ["prune", "scheme", "{ws}/garbled.json", "--out", "{tmp}/s.json"], "CONFIGS {ws}/garbled.json is not valid JSON"),
    cli("prune-scheme-missing", ["prune", "scheme", "{ws}/none.json", "--out", "{tmp}/s.json"], "CONFIGS {ws}/none.json does not exist"),
    cli("prune-prune-garbled-scheme", ["prune", "prune", "tiny-bert", "--scheme", "{ws}/garbled.json", "--out", "{tmp}/v.pt"],
        "--scheme {ws}/garbled.json is not valid JSON"),
    cli("prune-compose-garbled-configs", ["prune", "compose", "tiny-bert", "--variants", "{ws}/v.pt", "--configs", "{ws}/garbled.json",
                                          "--index", "0", "--out", "{tmp}/c"], "--configs {ws}/garbled.json is not valid JSON"),
    cli("prune-compose-index", ["prune", "compose", "tiny-bert", "--variants", "{ws}/v.pt", "--configs", "{ws}/conf.json", "--index", "7",
                                "--out", "{tmp}/c"], "--index 7 is out of range"),
    cli("prune-compose-out-is-a-file", ["prune", "compose", "tiny-bert", "--variants", "{ws}/v.pt", "--configs", "{ws}/conf.json",
                                        "--index", "0", "--out", "{ws}/file.txt"], "--out {ws}/file.txt is a file, not a directory"),
    cli("prune-tune-stats-under-a-file", TUNE + ["--stats", "{ws}/file.txt/s.json"], "--stats {ws}/file.txt/s.json: {ws}/file.txt is a file"),
    cli("prune-tune-stats-is-a-dir", TUNE + ["--stats", "{ws}/empty"], "--stats {ws}/empty is a directory"),
    cli("prune-tune-batch-size-0", TUNE + ["--batch-size", "0"], "--batch-size: batch_size must be a positive int"),
    cli("prune-tune-lr-negative", TUNE + ["--lr", "-1"], "--lr must be a positive number, got -1.0"),
    cli("prune-tune-epochs-0", TUNE + ["--epochs", "0"], "--epochs must be a positive number, got 0.0"),
    cli("prune-tune-patience-0", TUNE + ["--patience", "0"], "--patience: patience must be a positive int"),
    cli("prune-tune-variants-garbled", [a if a != "{ws}/v.pt" else "{ws}/garbled.json" for a in TUNE],
        "--variants {ws}/garbled.json is not a file mpstudy wrote"),
    cli("prune-tune-variants-missing", [a if a != "{ws}/v.pt" else "{ws}/none.pt" for a in TUNE], "--variants {ws}/none.pt does not exist"),
    cli("prune-configs-out-is-a-dir", ["prune", "configs", "tiny-bert", "--out", "{ws}/empty"], "--out {ws}/empty is a directory"),
    cli("prune-configs-out-under-a-file", ["prune", "configs", "tiny-bert", "--out", "{ws}/file.txt/c.json"], "{ws}/file.txt is a file"),
    cli("prune-configs-keep-0", ["prune", "configs", "tiny-bert", "--attention-keep", "0", "0", "0", "--out", "{tmp}/c.json"],
        "attention_keep[0] (the fraction of the weights kept) must be a number in (0, 1], got 0.0"),
    cli("prune-configs-n-0", ["prune", "configs", "tiny-bert", "-n", "0", "--out", "{tmp}/c.json"], "--num-configs: num_configs must be a positive int"),
    cli("prune-finetune-out-under-a-file", FINETUNE[:-1] + ["{ws}/file.txt/ft"], "{ws}/file.txt is a file"),
    cli("prune-finetune-stats-is-a-dir", FINETUNE + ["--stats", "{ws}/empty"], "--stats {ws}/empty is a directory"),
    cli("prune-finetune-other-task", [a if a != "synthetic-cls" else "sst2" for a in FINETUNE], "differs from the task 'synthetic-cls'"),
    cli("prune-evaluate-head-mismatch", ["prune", "evaluate", "{ws}/composed", "--task", "stsb", "--data-dir", "{ws}/data"],
        "composed has a 2-label classification head (composed for task 'synthetic-cls'); --task 'stsb' needs a 1-output regression head"),
    cli("prune-evaluate-not-pruned", ["prune", "evaluate", "{ws}/good", "--task", "synthetic-cls"], "pruned.json is missing"),
    cli("prune-evaluate-garbled-meta", ["prune", "evaluate", "{ws}/composed_badmeta", "--task", "synthetic-cls"],
        "composed_badmeta/pruned.json is not valid JSON"),
    cli("prune-plot-garbled", ["prune", "plot", "{ws}/garbled.json", "--out", "{tmp}/l.png"], "STATS {ws}/garbled.json is not valid JSON"),
    cli("prune-plot-missing", ["prune", "plot", "{ws}/none.json", "--out", "{tmp}/l.png"], "STATS {ws}/none.json does not exist"),
    # ======================================================================= library
    lib("lib-re-paren", _compress("svd", targets="re:(", keep=0.5), "targets 're:(' is not a valid regular expression", ValueError),
    lib("lib-all-zero-svd", _compress("svd", _with_weight(QUERY, torch.Tensor.zero_), keep=0.5), f"{QUERY}.weight is all zeros", ValueError),
    lib("lib-all-zero-prune", _compress("offline-prune", _with_weight(QUERY, torch.Tensor.zero_), keep=0.5), "is all zeros", ValueError),
    lib("lib-all-zero-mpo", _compress("mpo", _with_weight(QUERY, torch.Tensor.zero_), max_bond=4), "is all zeros", ValueError),
    lib("lib-inf-weight", _compress("svd", _with_weight(QUERY, lambda w: w.__setitem__((0, 0), math.inf)), keep=0.5),
        f"{QUERY}.weight has 1 NaN or inf entries", ValueError),
    lib("lib-tucker-grows", _compress("offline-tucker", keep=0.9999999), "offline-tucker at keep=0.9999999 stores 67,628 numbers", ValueError),
    lib("lib-svd-keep-1", _compress("svd", keep=1.0), "saves nothing", ValueError),
    lib("lib-offline-svd-grows", _compress("offline-svd", keep=0.999), "it saves nothing", ValueError),
    lib("lib-ae-keep-grows", _compress("offline-ae", keep=0.9999, epochs=1), "it saves nothing", ValueError),
    lib("lib-mpo-keep-and-tolerance", _compress("mpo", keep=0.5, rel_tol=0.1), "give keep= or ['rel_tol'], not both", ValueError),
    lib("lib-t5-on-cls", lambda ws, tmp: load_model("tiny-t5", task="sst2"), "tiny-t5 is an encoder-decoder", ValueError),
    lib("lib-head-regression-on-cls", lambda ws, tmp: load_model(ws / "hf_reg", task="sst2"), "1-output regression head; task 'sst2'", ValueError),
    lib("lib-head-saved-on-seq2seq", lambda ws, tmp: load_model(ws / "good", task="multi30k"), "is seq2seq", ValueError),
    lib("lib-save-not-hf", lambda ws, tmp: save_compressed(torch.nn.Linear(2, 2), tmp / "x"), "got Linear", TypeError),
    lib("lib-save-over-foreign", lambda ws, tmp: save_compressed(_tiny(), ws / "occupied"), "occupied exists and is not a saved mpstudy model",
        FileExistsError),
    lib("lib-save-over-file", lambda ws, tmp: save_compressed(_tiny(), ws / "file.txt"), "file.txt exists and is not a saved mpstudy model",
        FileExistsError),
    ok("lib-tucker-allowed-when-asked", "library", lambda ws, tmp, r: None if r.params_after > r.params_before else pytest.fail("shrank"),
       call=_compress("offline-tucker", keep=0.9999999, allow_no_saving=True)),
    ok("lib-mpo-cap-is-a-structure", "library", lambda ws, tmp, r: None if r.model_params_after > r.model_params_before else pytest.fail(),
       call=_compress("mpo", max_bond=10**8)),  # kept as it is: MPOP's exact MPO (see surgery._refuse_growth)
    ok("lib-falcon-default-k", "library", lambda ws, tmp, r: None if r.modules[0]["k"] == 1 else pytest.fail(str(r.modules[0])),
       call=_compress("falcon")),
    ok("lib-tokenizer-saved-by-default", "library", _check_tokenizer_saved, call=lambda ws, tmp: None),
    ok("lib-reloaded-model-keeps-its-tokenizer", "library", _check_has_tokenizer, call=_save_roundtrip_keeps_tokenizer),
    ok("lib-model-without-tokenizer", "library", _check_bare_refused, call=_save_by_hand_model),
    ok("lib-head-right-task", "library", lambda ws, tmp, mt: None if mt[0].config.num_labels == 1 else pytest.fail(),
       call=lambda ws, tmp: load_model(ws / "comp_reg", task="stsb")),
    ok("lib-base-checkpoint-gets-new-head", "library", lambda ws, tmp, mt: None if mt[0].config.num_labels == 3 else pytest.fail(),
       call=lambda ws, tmp: load_model("minilm", task=_three_label_task())),
    ok("lib-umask-022", "library", _check_modes, call=_save_under_umask(0o022)),
    ok("lib-umask-077", "library", _check_modes, call=_save_under_umask(0o077)),
    ok("lib-no-torch-load-without-weights-only", "library", lambda ws, tmp, unsafe: None if unsafe == [] else pytest.fail(str(unsafe)),
       call=_no_unsafe_torch_load),
    ok("lib-teacher-cache-not-unpickled", "library", lambda ws, tmp, r: None if r == ("UnpicklingError", False) else pytest.fail(str(r)),
       call=_teacher_cache_is_not_unpickled),
    # ======================================================================= data dirs
    lib("data-missing-files", lambda ws, tmp: load_task("sst2", data_dir=ws / "empty"), "glue/SST-2/train.tsv", DataDirError, cls="data",
        multiline=True),  # the library lists every expected file, one a line; the command line folds them
    cli("data-missing-dev", ["evaluate", "tiny-bert", "--task", "sst2", "--data-dir", "{ws}/data_no_dev"], "glue/SST-2/dev.tsv  (MISSING)",
        cls="data"),
    lib("data-bad-line", lambda ws, tmp: load_task("sst2", data_dir=ws / "data_bad_line"), "dev.tsv, line 2: expected 2 tab-separated columns",
        DataFormatError, cls="data"),
    lib("data-not-utf8", lambda ws, tmp: load_task("sst2", data_dir=ws / "data_not_utf8"), "dev.tsv: not valid UTF-8", DataFormatError, cls="data"),
    lib("data-empty-file", lambda ws, tmp: load_task("sst2", data_dir=ws / "data_empty_file"), "dev.tsv: file is empty", DataFormatError, cls="data"),
    lib("data-bad-header", lambda ws, tmp: load_task("sst2", data_dir=ws / "data_bad_header"), "line 1: expected header", DataFormatError, cls="data"),
    lib("data-bad-label", lambda ws, tmp: load_task("sst2", data_dir=ws / "data_bad_label"), "expected label 0 or 1, found '2'", DataFormatError,
        cls="data"),
    lib("data-bad-score", lambda ws, tmp: load_task("stsb", data_dir=ws / "data_bad_score"), "expected a similarity score in [0, 5], found 'abc'",
        DataFormatError, cls="data"),
    lib("data-uneven-parallel", lambda ws, tmp: load_task("multi30k", data_dir=ws / "data_m30k_uneven"), "train.en has 12 lines but",
        DataFormatError, cls="data"),
    lib("data-max-train-0", lambda ws, tmp: load_task("sst2", data_dir=ws / "data", max_train=0), "max_train must be a positive int", ValueError,
        cls="data"),
    lib("data-unknown-task", lambda ws, tmp: load_task("imdb", data_dir=ws / "data"), "'imdb'", ValueError, cls="data"),
    cli("data-cli-malformed", ["evaluate", "tiny-bert", "--task", "sst2", "--data-dir", "{ws}/data_bad_line"], "dev.tsv, line 2", cls="data"),
    cli("data-cli-not-utf8", ["evaluate", "tiny-bert", "--task", "sst2", "--data-dir", "{ws}/data_not_utf8"], "not valid UTF-8", cls="data"),
    ok("data-link-out-followed-loudly", "data", _check_link_out, call=_link_out_followed_loudly),
    ok("data-link-inside-followed", "data", _check_link_in, call=lambda ws, tmp: load_task("sst2", data_dir=ws / "data_link_in")),
    ok("data-good", "data", lambda ws, tmp, t: None if (len(t.train), len(t.dev), t.num_labels) == (12, 12, 1) else pytest.fail(),
       call=lambda ws, tmp: load_task("stsb", data_dir=ws / "data")),
    # ======================================================================= saved directories
    lib("saved-truncated-weights", lambda ws, tmp: load_compressed(ws / "truncated"), "truncated/model.safetensors is corrupted", ValueError, cls="saved"),
    lib("saved-garbled-manifest", lambda ws, tmp: load_compressed(ws / "badmanifest"), "badmanifest/mpstudy_compressed.json is corrupted",
        ValueError, cls="saved"),
    lib("saved-mismatched-manifest", lambda ws, tmp: load_compressed(ws / "mismatched"), "does not match mpstudy_compressed.json", ValueError,
        cls="saved"),
    lib("saved-unknown-layer", lambda ws, tmp: load_compressed(ws / "unknownlayer"), "unknown compressed layer 'NoSuchLayer'", ValueError, cls="saved"),
    lib("saved-format-99", lambda ws, tmp: load_compressed(ws / "format99"), "has format 99", ValueError, cls="saved"),
    lib("saved-dtype-mismatch", lambda ws, tmp: load_compressed(ws / "bf16manifest"), "is stored as F32, the manifest makes it BF16", ValueError,
        cls="saved"),
    lib("saved-nan-weights", lambda ws, tmp: load_compressed(ws / "nansaved"), "holds NaN or inf values", ValueError, cls="saved"),
    lib("saved-no-weights", lambda ws, tmp: load_compressed(ws / "noweights"), "model.safetensors is missing", FileNotFoundError, cls="saved"),
    lib("saved-no-config", lambda ws, tmp: load_compressed(ws / "noconfig"), "config.json is missing", FileNotFoundError, cls="saved"),
    lib("saved-not-a-model", lambda ws, tmp: load_compressed(ws / "occupied"), "mpstudy_compressed.json is missing", FileNotFoundError, cls="saved"),
    lib("saved-garbled-config", lambda ws, tmp: load_model(ws / "badconfig"), "badconfig/config.json is not valid JSON", ValueError, cls="saved"),
    lib("saved-garbled-tokenizer", lambda ws, tmp: load_model(ws / "badtok"), "badtok/tokenizer.json is not valid JSON", ValueError, cls="saved"),
    lib("saved-garbled-tokenizer-config", lambda ws, tmp: load_model(ws / "badtokcfg"), "badtokcfg/tokenizer_config.json is not valid JSON",
        ValueError, cls="saved"),
    lib("saved-no-tokenizer", lambda ws, tmp: load_model(ws / "notok"), "notok holds no tokenizer", FileNotFoundError, cls="saved"),
    lib("saved-specials-only-tokenizer", lambda ws, tmp: load_model(ws / "specialsonly"), "holds only its 5 special tokens", ValueError, cls="saved"),
    cli("saved-cli-no-tokenizer", ["evaluate", "{ws}/notok", "--task", "synthetic-cls"], "notok holds no tokenizer", cls="saved"),
    cli("saved-cli-truncated", ["evaluate", "{ws}/truncated", "--task", "synthetic-cls"], "model.safetensors is corrupted", cls="saved"),
    cli("saved-cli-garbled-config", ["evaluate", "{ws}/badconfig", "--task", "synthetic-cls"], "badconfig/config.json is not valid JSON",
        cls="saved", not_in=("model.safetensors",)),
    cli("saved-cli-garbled-tokenizer", ["evaluate", "{ws}/badtok", "--task", "synthetic-cls"], "badtok/tokenizer.json is not valid JSON", cls="saved"),
    cli("saved-cli-garbled-manifest", ["evaluate", "{ws}/badmanifest", "--task", "synthetic-cls"], "mpstudy_compressed.json is corrupted",
        cls="saved", not_in=("model.safetensors",)),
    cli("saved-cli-unknown-layer", ["evaluate", "{ws}/unknownlayer", "--task", "synthetic-cls"], "unknown compressed layer", cls="saved",
        not_in=("model.safetensors",)),
    cli("saved-cli-nan", ["evaluate", "{ws}/nansaved", "--task", "synthetic-cls"], "holds NaN or inf values", cls="saved"),
    cli("saved-cli-specials-only", ["evaluate", "{ws}/specialsonly", "--task", "synthetic-cls"], "holds only its 5 special tokens", cls="saved"),
    # ======================================================================= interruptions
    ok("ctrl-c-during-save", "interruption", _check_sigint_save, call=_child("sigint-save")),
    ok("kill-9-during-save", "interruption", _check_sigkill_save, call=_child("sigkill-save")),
    ok("ctrl-c-during-evaluate", "interruption", _check_sigint_evaluate, call=_child("sigint-evaluate")),
    cli("ctrl-c-in-process", EVAL, "mpstudy evaluate: interrupted (Ctrl-C)", cls="interruption", exit_code=130,
        patch=lambda mp, ws, tmp: mp.setattr(sys.modules["mpstudy.train"], "evaluate",
                                             lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))),
    cli("ctrl-c-mid-save-cli", COMPRESS + ["--method", "svd", "--keep", "0.5"], "interrupted (Ctrl-C)", cls="interruption", exit_code=130,
        setup=_old_model, patch=_interrupt(KeyboardInterrupt())),
    ok("ctrl-c-mid-save-library", "interruption", _check_old_model_intact, call=_ctrl_c_in_library_save),
    ok("json-record-interrupted", "interruption", lambda ws, tmp, r: None if r == ({"v": 1}, []) else pytest.fail(str(r)),
       call=_json_write_interrupted),
    ok("dead-writers-leftover-removed", "interruption", lambda ws, tmp, hidden: None if hidden == [] else pytest.fail(str(hidden)),
       call=_dead_writers_leftover_is_removed),
    # ======================================================================= concurrency
    ok("two-saves-one-target", "concurrency", _check_one_whole_model, call=_two_saves_one_target),
    ok("json-writers-and-a-reader", "concurrency",
       lambda ws, tmp, r: None if r[0] in range(6) and r[1] > 0 and r[2] == [] else pytest.fail(str(r)), call=_json_writers_and_a_reader),
    ok("saves-to-two-targets", "concurrency",
       lambda ws, tmp, r: None if r[0] == r[1] and "tokenizer.json" in r[0] else pytest.fail(str(r)), call=_saves_to_two_targets),
    ok("live-writers-temporary-kept", "concurrency", lambda ws, tmp, hidden: None if len(hidden) == 1 else pytest.fail(str(hidden)),
       call=_live_writers_temporary_is_kept),
    ok("compress-in-threads", "concurrency",
       lambda ws, tmp, r: None if r[0] == r[1] == r[2] == compress(_tiny(), "svd", keep=0.5).to_dict() else pytest.fail(),
       call=_compress_in_threads),
]


def _three_label_task():
    from mpstudy.tasks import Task

    return Task(name="three-way", kind="classification", num_labels=3, train=[], dev=[], main_metric="accuracy", source={})


def _fill(arg: str, ws: Path, tmp: Path) -> str:
    return arg.replace("{ws}", str(ws)).replace("{tmp}", str(tmp))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_red_team(ws, tmp_path, capsys, case):
    tmp = tmp_path / "scratch"
    tmp.mkdir()
    if case.setup:
        case.setup(ws, tmp)
    before = _snapshot(ws, tmp)
    with pytest.MonkeyPatch.context() as mp:
        if case.patch:
            case.patch(mp, ws, tmp)
        if case.argv is not None:
            try:
                code = main([_fill(a, ws, tmp) for a in case.argv])
            except SystemExit as exc:  # argparse's own usage errors
                code = exc.code
            out, err = capsys.readouterr()
            if case.match is None:
                assert code == 0, err
                result = json.loads(out)
            else:
                lines = err.strip().splitlines()
                assert code != 0 and (case.exit_code is None or code == case.exit_code), (code, err)
                assert len(lines) == 1, err
                assert _fill(case.match, ws, tmp) in lines[0], lines[0]
                assert not any(s in lines[0] for s in case.not_in), lines[0]
                assert not out.strip(), out
        elif case.match is None:
            result = case.call(ws, tmp)
        else:
            with pytest.raises(case.error) as info:
                case.call(ws, tmp)
            message = str(info.value)
            assert _fill(case.match, ws, tmp) in message and (case.multiline or "\n" not in message.strip()), message
    if case.match is not None:  # no partial output: nothing written, replaced or left behind
        assert _snapshot(ws, tmp) == before
    else:
        case.check(ws, tmp, result)


def test_the_table_is_large_enough():
    counts: dict[str, int] = {}
    for case in CASES:
        counts[case.cls] = counts.get(case.cls, 0) + 1
    assert len({c.id for c in CASES}) == len(CASES)
    assert len(CASES) >= 120 and set(counts) == {"cli", "library", "data", "saved", "interruption", "concurrency"}, counts
