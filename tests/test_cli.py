"""The mpstudy command: compress -> evaluate round trip; one-line errors and exit status 2 on bad input."""
import json
import subprocess
import sys

import nbformat
import pytest

from mpstudy.cli import main
from mpstudy.runner import run_study, study_fingerprint


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_compress_then_evaluate(tmp_path, capsys):
    out_dir = tmp_path / "svd"
    code, out, err = run(capsys, "compress", "tiny-bert", "--method", "svd", "--ratio", "0.5", "--task", "synthetic-cls", "--out", str(out_dir))
    assert code == 0, err
    report = json.loads(out)
    assert report["method"] == "svd" and report["params_after"] < report["params_before"]
    assert report["model_params_after"] < report["model_params_before"] and len(report["modules"]) == 12
    code, out, err = run(capsys, "evaluate", str(out_dir), "--task", "synthetic-cls", "--max-eval", "32")
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["n"] == 32 and 0 <= metrics["accuracy"] <= 1


def test_ratio_is_the_deprecated_name_of_keep(tmp_path, capsys):
    """``--ratio`` (named by the Contract) still works and compresses exactly as ``--keep``."""
    reports = {}
    for flag in ("--keep", "--ratio"):
        code, out, err = run(capsys, "compress", "tiny-bert", "--method", "svd", flag, "0.5", "--out", str(tmp_path / flag))
        assert code == 0, err
        reports[flag] = json.loads(out)
    assert reports["--keep"] == reports["--ratio"]
    assert reports["--keep"]["budget"] == {"keep": 0.5} and reports["--keep"]["keep"] == 0.5


@pytest.mark.parametrize("argv,message", [
    (["compress", "tiny-bert", "--method", "svd", "--rank", "0", "--out", "{tmp}/a"], "rank must be an integer in [1, 64]"),
    (["compress", "tiny-bert", "--method", "svd", "--keep", "0.5", "--targets", "nothing", "--out", "{tmp}/a"], "unknown target 'nothing'"),
    (["compress", "tiny-bert", "--method", "svd", "--max-bond", "4", "--out", "{tmp}/a"], "does not take ['max_bond']"),
    (["compress", "tiny-bert", "--method", "svd", "--keep", "0.5", "--out", "{tmp}/occupied"], "exists and is not a saved mpstudy model"),
    (["evaluate", "tiny-bert", "--task", "sst2", "--data-dir", "{tmp}/empty"], "glue/SST-2/train.tsv"),
    (["evaluate", "tiny-bert", "--task", "imdb"], "unknown task"),
    (["run", "{tmp}/missing.ipynb"], "no notebook at"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "keep.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    code, out, err = run(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists()  # nothing written on bad input
    assert (tmp_path / "occupied" / "keep.txt").read_text() == "x"


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compress", "tiny-bert", "--method", "nope", "--keep", "0.5", "--out", "x"])
    assert exc.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "mpstudy", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("compress", "evaluate", "run", "reproduce", "book"):
        assert command in out


def _tiny_notebook(path, body="print(x * 2)"):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "smoke"\nseed = 0\nx = 1')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_run_skips_unchanged_studies(tmp_path):
    nb = _tiny_notebook(tmp_path / "99_tiny.ipynb")
    kwargs = dict(output_dir=tmp_path / "out", results_dir=tmp_path / "res", log=lambda m: None)
    first = run_study(nb, overrides={"x": 21}, **kwargs)
    assert first["status"] == "ran"
    executed = nbformat.read(tmp_path / "out" / "99_tiny.ipynb", as_version=4)
    assert "42" in executed.cells[-1].outputs[0]["text"]
    assert run_study(nb, overrides={"x": 21}, **kwargs)["status"] == "skipped"
    assert run_study(nb, overrides={"x": 22}, **kwargs)["status"] == "ran"  # parameters changed
    with pytest.raises(ValueError, match=r"has no parameter\(s\) \['y'\]; its parameters are \['profile', 'seed', 'x'\]"):
        run_study(nb, overrides={"y": 1}, **kwargs)


def test_fingerprint_tracks_notebook_and_parameters(tmp_path):
    nb = _tiny_notebook(tmp_path / "99_tiny.ipynb")
    base = study_fingerprint(nb, {"x": 1})
    assert study_fingerprint(nb, {"x": 1}) == base
    assert study_fingerprint(nb, {"x": 2}) != base
    _tiny_notebook(nb, body="print(x * 3)")
    assert study_fingerprint(nb, {"x": 1}) != base


TYPED = 'from typing import Optional\nprofile: str = "smoke"\nseed: int = 0\nlr: float = 0.1\nname: str = "a"\nn: Optional[int] = None'


def _typed_notebook(path, body="print(lr, repr(name), n)"):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(TYPED)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def _committed_page(path, profile="cpu"):
    """A page of book/studies as papermill leaves it: its parameters in the metadata."""
    page = nbformat.v4.new_notebook()
    page.metadata["papermill"] = {"parameters": {"profile": profile}}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(page, path)
    return path.read_bytes()


def test_smoke_run_goes_to_scratch_and_p_values_are_typed_by_the_notebook(tmp_path, capsys, monkeypatch):
    """`mpstudy run NB` without --profile: smoke, into _build/smoke/, never over a committed page;
    -p values typed by the parameters cell (YAML alone reads 1e-3 as a string and yes as True)."""
    monkeypatch.chdir(tmp_path)
    nb = _typed_notebook(tmp_path / "99_typed.ipynb")
    committed = _committed_page(tmp_path / "book" / "studies" / "99_typed.ipynb")
    code, out, err = run(capsys, "run", str(nb), "-p", "lr", "1e-3", "-p", "name", "yes", "-p", "n", "null")
    assert code == 0, err
    assert (tmp_path / "book" / "studies" / "99_typed.ipynb").read_bytes() == committed
    page = nbformat.read(tmp_path / "_build" / "smoke" / "studies" / "99_typed.ipynb", as_version=4)
    assert page.metadata["papermill"]["parameters"] == {"profile": "smoke", "seed": 0, "lr": 0.001, "name": "yes", "n": None}
    assert page.cells[-1].outputs[0]["text"] == "0.001 'yes' None\n"
    assert (tmp_path / "_build" / "smoke" / "results" / "runs" / "99_typed-smoke.json").exists()
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("argv,message", [
    (["-p", "lr", "abc"], "99_typed.ipynb: -p lr 'abc' is not of type float"),
    (["-p", "n", "1.5"], "99_typed.ipynb: -p n '1.5' is not of type Optional[int]"),
    (["-p", "seed", "true"], "99_typed.ipynb: -p seed 'true' is not of type int"),
    (["-p", "nope", "1"], "99_typed.ipynb has no parameter(s) ['nope']"),
    (["--profile", "smoke", "--output-dir", "book/studies"],
     "book/studies/99_typed.ipynb holds the cpu profile's results; writing the smoke profile's over it needs --replace-profile"),
])
def test_run_refuses_bad_parameters_and_foreign_pages_before_anything_runs(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    nb = _typed_notebook(tmp_path / "99_typed.ipynb")
    committed = _committed_page(tmp_path / "book" / "studies" / "99_typed.ipynb")
    code, out, err = run(capsys, "run", str(nb), *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "book" / "studies" / "99_typed.ipynb").read_bytes() == committed
    assert not (tmp_path / "_build").exists()


def test_in_place_keeps_working_and_takes_no_profile(tmp_path, capsys):
    nb = _typed_notebook(tmp_path / "99_typed.ipynb")
    code, out, err = run(capsys, "run", str(nb), "--in-place", "--profile", "cpu")
    assert code == 2 and "--in-place stores the template's own smoke outputs" in err
    code, out, err = run(capsys, "run", str(nb), "--in-place")
    assert code == 0, err
    stored = nbformat.read(nb, as_version=4)
    assert stored.cells[-1].outputs[0]["text"] == "0.1 'a' None\n"  # the template's own values
    assert not (tmp_path / "_build").exists()


def test_reproduce_checks_every_study_before_running_any(tmp_path, capsys, monkeypatch):
    from mpstudy import profiles

    (tmp_path / "nb").mkdir()
    _typed_notebook(tmp_path / "nb" / "01_a.ipynb")
    _typed_notebook(tmp_path / "nb" / "02_b.ipynb")
    monkeypatch.setitem(profiles.STUDIES, "02_b", {"smoke": {"lr": "fast"}})
    code, out, err = run(capsys, "reproduce", "--notebooks-dir", str(tmp_path / "nb"), "--output-dir", str(tmp_path / "out"),
                         "--results-dir", str(tmp_path / "res"))
    assert code == 2 and "02_b.ipynb: parameter lr must be of type float, got 'fast' (str)" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "res").exists()  # 01_a did not run either


def test_precision_methods_need_no_budget_on_the_command_line(tmp_path, capsys):
    """`--method int8` runs without --keep/--rank; a method that needs a budget says so in one line."""
    from mpstudy import load_compressed

    assert main(["compress", "tiny-bert", "--method", "int8", "--out", str(tmp_path / "q")]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "int8"
    load_compressed(tmp_path / "q")
    assert main(["compress", "tiny-bert", "--method", "svd", "--out", str(tmp_path / "s")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "keep" in err[0] and not (tmp_path / "s").exists()


@pytest.mark.parametrize("command", [["compress", "tiny-bert", "--method", "svd", "--ratio", "0.5", "--out", "x"],
                                     ["evaluate", "tiny-bert", "--task", "synthetic-cls"]])
def test_sigterm_during_any_command_is_one_line_and_status_143(command, monkeypatch, capsys, tmp_path):
    """kill (SIGTERM) while a command works: the handler main installs turns it into one line and the shell's
    status for SIGTERM, for every command (it used to be installed for `run` and `reproduce` only)."""
    import os
    import signal

    import mpstudy.cli as cli

    monkeypatch.chdir(tmp_path)
    previous = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(cli, "_preflight", lambda args: os.kill(os.getpid(), signal.SIGTERM))
    try:
        assert main(command) == 143
    finally:
        signal.signal(signal.SIGTERM, previous)
    err = capsys.readouterr().err.strip()
    assert err == f"mpstudy {command[0]}: terminated (SIGTERM); files being written were left as they were"
    assert not (tmp_path / "x").exists()
