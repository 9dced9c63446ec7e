"""Bad input, table-driven, across the API and the command line.

Every case must fail with an error that names the bad value (``match``) on one line, a non-zero
exit status on the command line, and no partial output: the workspace's files are unchanged
(nothing written, nothing clobbered) and, for ``compress``, the model is untouched.

The workspace (built once) holds a saved compressed model and damaged copies of it, a model
with a NaN weight, data dirs (empty, malformed) and a tiny study notebook.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import nbformat
import pytest
import torch

import mpstudy
from mpstudy import compress, load_compressed, load_model, load_task, save_compressed
from mpstudy.cli import main
from mpstudy.factorize import factorize_dim, mpo_decompose, truncated_svd
from mpstudy.profiles import get_profile
from mpstudy.runner import run_study
from mpstudy.tasks import DataDirError, DataFormatError

QUERY = "bert.encoder.layer.0.attention.self.query"


# --------------------------------------------------------------------------- the workspace


def _copy_saved(ws: Path, name: str) -> Path:
    shutil.copytree(ws / "good", ws / name)
    return ws / name


def _edit_manifest(path: Path, edit: Callable[[dict], None]) -> None:
    manifest = json.loads((path / "mpstudy_compressed.json").read_text())
    edit(manifest)
    (path / "mpstudy_compressed.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    from safetensors.torch import load_file, save_file

    ws = tmp_path_factory.mktemp("bad-input")
    model, tokenizer = load_model("tiny-bert", task="synthetic-cls")
    compress(model, "svd", rank=4)
    save_compressed(model, ws / "good", tokenizer=tokenizer)

    weights = (ws / "good" / "model.safetensors").read_bytes()
    (_copy_saved(ws, "truncated") / "model.safetensors").write_bytes(weights[: len(weights) // 2])

    def rank8(m):
        m["modules"][QUERY]["kwargs"]["rank"] = 8

    _edit_manifest(_copy_saved(ws, "mismatched"), rank8)
    (_copy_saved(ws, "badjson") / "mpstudy_compressed.json").write_text("{not json")

    def unknown_layer(m):
        m["modules"][QUERY]["class"] = "NoSuchLayer"

    _edit_manifest(_copy_saved(ws, "unknown_layer"), unknown_layer)
    (_copy_saved(ws, "no_weights") / "model.safetensors").unlink()
    state = load_file(ws / "good" / "model.safetensors")
    state[f"{QUERY}.first.weight"][0, 0] = math.nan
    save_file(state, _copy_saved(ws, "nan_saved") / "model.safetensors", metadata={"format": "pt"})

    nan_model, _ = load_model("tiny-bert", task="synthetic-cls")
    with torch.no_grad():
        nan_model.get_submodule(QUERY).weight[0, 0] = math.nan
    nan_model.save_pretrained(ws / "nan_model")
    tokenizer.save_pretrained(ws / "nan_model")

    (ws / "empty_data").mkdir()
    sst2 = ws / "bad_data" / "glue" / "SST-2"
    sst2.mkdir(parents=True)
    (sst2 / "train.tsv").write_text("sentence\tlabel\na fine film\t1\n")
    (sst2 / "dev.tsv").write_text("sentence\tlabel\nno label here\n")
    (ws / "occupied").mkdir()
    (ws / "occupied" / "keep.txt").write_text("precious")
    (ws / "no_notebooks").mkdir()

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "smoke"\nseed = 0\nx = 1')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print(x)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (ws / "nb").mkdir()
    nbformat.write(nb, ws / "nb" / "99_tiny.ipynb")
    return ws


def _snapshot(root: Path) -> dict[str, str]:
    """Every file (and folder) under ``root`` with a hash of its content."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def _tiny() -> torch.nn.Module:
    return load_model("tiny-bert", task="synthetic-cls")[0]


def _nan_model(name: str = QUERY, value: float = math.nan) -> torch.nn.Module:
    model = _tiny()
    with torch.no_grad():
        model.get_submodule(name).weight[0, 0] = value
    return model


# --------------------------------------------------------------------------- API cases


@dataclass
class ApiCase:
    id: str
    call: Callable[[Path], Any]  # gets the workspace
    match: str  # must appear in the message: the bad value (and what is allowed)
    error: type[BaseException] = ValueError
    model: Callable[[], torch.nn.Module] | None = None  # compress cases: the model, checked untouched
    multiline_ok: bool = False  # DataDirError lists the expected files, one per line (the CLI folds it)


def _compress(method: str, **kwargs) -> Callable:
    return lambda ws, model: compress(model, method, **kwargs)


API_CASES = [
    # impossible ranks, bond caps and ratios
    ApiCase("svd-rank-0", _compress("svd", rank=0), "rank must be an integer in [1, 64] for a 64x64 weight, got 0", model=_tiny),
    ApiCase("svd-rank-too-large", _compress("svd", rank=1000), "got 1000", model=_tiny),
    ApiCase("svd-rank-float", _compress("svd", rank=2.5), "got 2.5", model=_tiny),
    ApiCase("svd-keep-above-1", _compress("svd", keep=1.5), "must be a number in (0, 1], got 1.5", model=_tiny),
    ApiCase("svd-ratio-alias-above-1", _compress("svd", ratio=1.5), "must be a number in (0, 1], got 1.5", model=_tiny),
    ApiCase("svd-no-budget", _compress("svd"), "give exactly one of rank= or keep=", model=_tiny),
    ApiCase("mpo-bond-0", _compress("mpo", max_bond=0), "max_bond must be an int >= 1 (or one per bond), got 0", model=_tiny),
    ApiCase("mpo-bond-list-length", _compress("mpo", max_bond=[2, 2]), "one cap per internal bond (4), got [2, 2]", model=_tiny),
    ApiCase("mpo-rel-tol", _compress("mpo", rel_tol=1.5), "rel_tol must be a float in [0, 1), got 1.5", model=_tiny),
    ApiCase("kronecker-keep-1", _compress("offline-kronecker", keep=1), "must be a number in (0, 1), got 1", model=_tiny),
    ApiCase("tucker-keep-unreachable", _compress("offline-tucker", keep=0.001), "cannot keep 0.001 (CR 1e+03)", model=_tiny),
    ApiCase("tucker-block", _compress("offline-tucker", keep=0.5, block=1000), "must be an integer in [1, 64], got 1000", model=_tiny),
    ApiCase("offline-mode", _compress("offline-svd", keep=0.5, mode="diagonal"), "got 'diagonal'", model=_tiny),
    ApiCase("mpo-keep-and-bond", _compress("mpo", keep=0.5, max_bond=4), "give keep= or ['max_bond'], not both", model=_tiny),
    ApiCase("falcon-unreachable", _compress("falcon", keep=0.25), "falcon cannot keep 0.25", model=_tiny),
    ApiCase("heads-part-of-a-block", _compress("prune-heads", targets="qkv", keep=0.5), "targeted only in part", model=_tiny),
    # dimensions that cannot be factorized
    ApiCase("mpo-dims-too-small", _compress("mpo", row_dims=[7, 9], col_dims=[8, 8]), "row_dims [7, 9]", model=_tiny),
    ApiCase("mpo-dims-lengths", _compress("mpo", row_dims=[8, 8], col_dims=[4, 4, 4]), "must have the same length", model=_tiny),
    ApiCase("factorize-prime", lambda ws: factorize_dim(30522, 5), "30522 has no factorization into 5 factors"),
    ApiCase("mpo-decompose-shape", lambda ws: mpo_decompose(torch.randn(6, 6), [2, 3], [5, 2]), "col_dims [5, 2] to 10"),
    # unknown methods, targets, budget keywords, tasks, profiles, models
    ApiCase("unknown-method", _compress("nope", keep=0.5), "unknown method 'nope'", model=_tiny),
    ApiCase("unknown-target", _compress("svd", targets="nothing", keep=0.5), "unknown target 'nothing'", model=_tiny),
    ApiCase("regex-target-matches-nothing", _compress("svd", targets="re:nomatch", keep=0.5), "['re:nomatch'] matched no", model=_tiny),
    ApiCase("unknown-budget-key", _compress("svd", max_bond=4), "does not take ['max_bond']", model=_tiny),
    ApiCase("unknown-task", lambda ws: load_task("imdb"), "'imdb'"),
    ApiCase("bad-max-train", lambda ws: load_task("synthetic-cls", max_train=0), "max_train must be a positive int or None (all rows), got 0"),
    ApiCase("unknown-profile", lambda ws: get_profile("fast", "00_offline_svd"), "unknown profile 'fast'"),
    ApiCase("unknown-model", lambda ws: load_model("no-such-model"), "'no-such-model'", error=OSError),
    ApiCase("bad-train-config", lambda ws: mpstudy.TrainConfig(lr=-1.0), "lr=-1.0"),
    ApiCase("unknown-study-parameter", lambda ws: run_study(ws / "nb" / "99_tiny.ipynb", overrides={"nope": 1},
                                                            output_dir=ws / "out", results_dir=ws / "res", log=lambda m: None),
            "has no parameter(s) ['nope']"),
    ApiCase("missing-notebook", lambda ws: run_study(ws / "nb" / "00_missing.ipynb", output_dir=ws / "out",
                                                     results_dir=ws / "res", log=lambda m: None), "00_missing.ipynb", error=FileNotFoundError),
    # missing or malformed data files
    ApiCase("missing-data-files", lambda ws: load_task("sst2", data_dir=ws / "empty_data"), "glue/SST-2/train.tsv",
            error=DataDirError, multiline_ok=True),
    ApiCase("malformed-data-file", lambda ws: load_task("sst2", data_dir=ws / "bad_data"), "dev.tsv, line 2", error=DataFormatError),
    # NaN or inf weights
    ApiCase("nan-weight", _compress("svd", keep=0.5), f"{QUERY}.weight has 1 NaN or inf entries (of 4096)", model=_nan_model),
    ApiCase("inf-weight-mpo", _compress("mpo", targets="word_embeddings", max_bond=4), "word_embeddings.weight has 1 NaN or inf",
            model=lambda: _nan_model("bert.embeddings.word_embeddings", math.inf)),
    ApiCase("nan-weight-offline", _compress("offline-tucker", keep=0.5), f"{QUERY}.weight has 1 NaN", model=_nan_model),
    ApiCase("nan-matrix-svd", lambda ws: truncated_svd(torch.full((4, 4), math.nan), 2), "W has 16 NaN or inf entries"),
    # corrupted or mismatched saved compressed models
    ApiCase("load-not-a-model", lambda ws: load_compressed(ws / "occupied"), "mpstudy_compressed.json is missing", error=FileNotFoundError),
    ApiCase("load-missing-weights", lambda ws: load_compressed(ws / "no_weights"), "model.safetensors is missing", error=FileNotFoundError),
    ApiCase("load-truncated-weights", lambda ws: load_compressed(ws / "truncated"), "model.safetensors is corrupted"),
    ApiCase("load-mismatched-manifest", lambda ws: load_compressed(ws / "mismatched"), "does not match mpstudy_compressed.json"),
    ApiCase("load-bad-json", lambda ws: load_compressed(ws / "badjson"), "mpstudy_compressed.json is corrupted"),
    ApiCase("load-unknown-layer", lambda ws: load_compressed(ws / "unknown_layer"), "unknown compressed layer 'NoSuchLayer'"),
    ApiCase("load-nan-weights", lambda ws: load_compressed(ws / "nan_saved"), "holds NaN or inf values"),
    ApiCase("save-over-foreign-dir", lambda ws: save_compressed(_tiny(), ws / "occupied"), "occupied exists and is not a saved mpstudy model",
            error=FileExistsError),
    ApiCase("save-not-a-hf-model", lambda ws: save_compressed(torch.nn.Linear(2, 2), ws / "linear"), "got Linear", error=TypeError),
]


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api_bad_input(ws, case):
    before = _snapshot(ws)
    model = case.model() if case.model else None
    if model is not None:
        state = {k: v.clone() for k, v in model.state_dict().items()}
        types = [type(m) for m in model.modules()]
    with pytest.raises(case.error) as info:
        case.call(ws, model) if model is not None else case.call(ws)
    message = str(info.value)
    assert case.match in message, message
    assert case.multiline_ok or "\n" not in message.strip(), message
    assert _snapshot(ws) == before, "a failed call left files behind"
    if model is not None:  # compress builds every replacement before swapping any in
        assert [type(m) for m in model.modules()] == types
        after = model.state_dict()
        assert state.keys() == after.keys()
        assert all(torch.allclose(state[k], after[k], rtol=0, atol=0, equal_nan=True) for k in state)


# --------------------------------------------------------------------------- command-line cases


COMPRESS = ["compress", "tiny-bert", "--out", "{ws}/new"]

CLI_CASES = [
    ("cli-rank-0", COMPRESS + ["--method", "svd", "--rank", "0"], "got 0"),
    ("cli-keep-2", COMPRESS + ["--method", "svd", "--keep", "2"], "must be a number in (0, 1], got 2.0"),
    ("cli-ratio-alias-2", COMPRESS + ["--method", "svd", "--ratio", "2"], "must be a number in (0, 1], got 2.0"),
    ("cli-bond-0", COMPRESS + ["--method", "mpo", "--max-bond", "0"], "max_bond must be an int >= 1"),
    ("cli-keep-1-offline", COMPRESS + ["--method", "offline-kronecker", "--keep", "1"], "must be a number in (0, 1), got 1.0"),
    ("cli-cr-gone", COMPRESS + ["--method", "offline-kronecker", "--cr", "2"], "unrecognized arguments: --cr 2"),
    ("cli-rank-not-int", COMPRESS + ["--method", "svd", "--rank", "two"], "invalid int value: 'two'"),
    ("cli-unknown-method", COMPRESS + ["--method", "nope", "--keep", "0.5"], "invalid choice: 'nope'"),
    ("cli-unknown-target", COMPRESS + ["--method", "svd", "--keep", "0.5", "--targets", "nothing"], "unknown target 'nothing'"),
    ("cli-budget-not-taken", COMPRESS + ["--method", "svd", "--max-bond", "4"], "does not take ['max_bond']"),
    ("cli-unknown-task", COMPRESS + ["--method", "svd", "--keep", "0.5", "--task", "imdb"], "'imdb'"),
    ("cli-unknown-model", ["compress", "no-such-model", "--method", "svd", "--keep", "0.5", "--out", "{ws}/new"], "'no-such-model'"),
    ("cli-nan-weights", ["compress", "{ws}/nan_model", "--method", "svd", "--keep", "0.5", "--out", "{ws}/new"], "1 NaN or inf entries"),
    ("cli-out-occupied", ["compress", "tiny-bert", "--method", "svd", "--keep", "0.5", "--out", "{ws}/occupied"],
     "occupied exists and is not a saved mpstudy model"),
    ("cli-missing-data", ["evaluate", "tiny-bert", "--task", "sst2", "--data-dir", "{ws}/empty_data"], "glue/SST-2/train.tsv  (MISSING)"),
    ("cli-malformed-data", ["evaluate", "tiny-bert", "--task", "sst2", "--data-dir", "{ws}/bad_data"], "dev.tsv, line 2"),
    ("cli-bad-max-eval", ["evaluate", "tiny-bert", "--task", "synthetic-cls", "--max-eval", "0"], "max_eval must be a positive int"),
    ("cli-truncated-model", ["evaluate", "{ws}/truncated", "--task", "synthetic-cls"], "model.safetensors is corrupted"),
    ("cli-mismatched-model", ["evaluate", "{ws}/mismatched", "--task", "synthetic-cls"], "does not match mpstudy_compressed.json"),
    ("cli-nan-saved-model", ["evaluate", "{ws}/nan_saved", "--task", "synthetic-cls"], "holds NaN or inf values"),
    ("cli-missing-notebook", ["run", "{ws}/nb/00_missing.ipynb"], "no notebook at"),
    ("cli-unknown-profile", ["run", "{ws}/nb/99_tiny.ipynb", "--profile", "fast"], "invalid choice: 'fast'"),
    ("cli-unknown-parameter", ["run", "{ws}/nb/99_tiny.ipynb", "-p", "nope", "1", "--output-dir", "{ws}/out",
                               "--results-dir", "{ws}/res"], "has no parameter(s) ['nope']"),
    ("cli-no-notebooks", ["reproduce", "--notebooks-dir", "{ws}/no_notebooks", "--output-dir", "{ws}/out",
                          "--results-dir", "{ws}/res"], "no study notebooks"),
    ("cli-unknown-command", ["squeeze"], "invalid choice: 'squeeze'"),
]


@pytest.mark.parametrize("case_id,argv,match", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(ws, capsys, case_id, argv, match):
    before = _snapshot(ws)
    try:
        code = main([a.format(ws=ws) for a in argv])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert match in lines[0], lines[0]
    assert not out.strip()
    assert _snapshot(ws) == before, "a failed command left files behind"


def test_suite_is_large_enough():
    assert len(API_CASES) + len(CLI_CASES) >= 25


def test_the_good_saved_model_loads(ws):
    """The damaged copies fail because of the damage: the original reloads fine."""
    model = load_compressed(ws / "good")
    assert type(model.get_submodule(QUERY)).__name__ == "LowRankLinear"


# --------------------------------------------------------------------------- the benchmark's command line


ROOT = Path(__file__).resolve().parent.parent

BENCH_CASES = [
    ("bench-layers-13", ["decomposition", "--layers", "13"], "layers must be an int in [1, 12] (BERT-base has 12), got 13"),
    ("bench-unknown-decomposition", ["decomposition", "--methods", "cp"], "invalid choice: 'cp'"),
    ("bench-unknown-method", ["inference", "--model", "tiny-bert", "--methods", "nope"], "unknown method(s) ['nope']"),
    ("bench-batch-0", ["inference", "--batch-sizes", "0"], "must be >= 1, got 0"),
    ("bench-too-long", ["inference", "--model", "tiny-bert", "--seq-lens", "1000"], "exceed the model's 128 positions"),
    ("bench-device", ["inference", "--device", "tpu"], "device must be 'auto', 'cpu' or 'cuda[:N]', got 'tpu'"),
    ("bench-dtype", ["inference", "--dtype", "float8"], "dtype must be one of"),
    ("bench-missing-record", ["goals", "--inference", "{ws}/none.json"], "no benchmark record at"),
    ("bench-not-json", ["report", "{ws}/occupied/keep.txt"], "is not a JSON record"),
    ("bench-not-a-record", ["report", "{ws}/good/mpstudy_compressed.json"], "not a bench/perf record"),
]


@pytest.fixture(scope="module")
def bench_main():
    import importlib
    import sys

    if str(ROOT) not in sys.path:  # bench/ is a folder of the checkout, not part of the installed package
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("bench.__main__").main


@pytest.mark.parametrize("case_id,argv,match", BENCH_CASES, ids=[c[0] for c in BENCH_CASES])
def test_bench_bad_input(ws, capsys, bench_main, case_id, argv, match):
    before = _snapshot(ws)
    try:
        code = bench_main([a.format(ws=ws) for a in argv] + ["--out-dir", str(ws / "bench")] if argv[0] not in ("report",)
                          else [a.format(ws=ws) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], err
    assert _snapshot(ws) == before


def test_bench_good_input_writes_record_and_table(tmp_path, bench_main, capsys):
    """The same command line with good input: a JSON record and the markdown rendered from it."""
    argv = ["inference", "--model", "tiny-bert", "--methods", "svd", "mpo", "--batch-sizes", "2", "--seq-lens", "8",
            "--repeats", "1", "--device", "cpu", "--out-dir", str(tmp_path)]
    assert bench_main(argv) == 0
    record = json.loads((tmp_path / "inference-cpu.json").read_text())
    assert {m["label"] for m in record["models"]} == {"svd keep=0.5", "svd keep=0.25", "mpo max_bond=64"}
    assert {r["model"] for r in record["rows"]} == {"dense", "svd keep=0.5", "svd keep=0.25", "mpo max_bond=64"}
    assert "| svd keep=0.5 |" in (tmp_path / "inference-cpu.md").read_text()
    assert bench_main(["goals", "--device", "cpu", "--out-dir", str(tmp_path)]) == 0
    goals = json.loads((tmp_path / "goals-cpu.json").read_text())
    assert {g["goal"] for g in goals["rows"]} == {"svd_efficiency", "mpo_eval_ratio"}
