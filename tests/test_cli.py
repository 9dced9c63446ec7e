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
