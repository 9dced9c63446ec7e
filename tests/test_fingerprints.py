"""A study's run fingerprint covers what produced its page, and a page of another run is never "up to date".

The fingerprint (``mpstudy.runner.study_fingerprint``) hashes the notebook's cells, the parameters after
the profile is applied, the profile name, the checksums of the data files the study reads, the library's
code and the torch/transformers versions; each is changed in turn here. Then, with tiny notebooks run by
papermill: a page holding another profile's results, another data set's, or records changed since, is
re-run; a page of one profile is not overwritten by another profile's run without ``replace_profile``.
"""
from __future__ import annotations

import json

import nbformat
import pytest

from mpstudy import runner
from mpstudy.runner import page_profile, run_study, study_data, study_fingerprint

PARAMS = 'profile: str = "smoke"\nseed: int = 0\nx: int = 1\ntask_name: str = "sst2"\ndata_dir: Optional[str] = None\nresults_dir: Optional[str] = None'
# a results record as write_record makes it, without importing mpstudy (seconds per kernel)
BODY = ("import json, pathlib\nfolder = pathlib.Path(results_dir) / STUDY\nfolder.mkdir(parents=True, exist_ok=True)\n"
        "(folder / f'{profile}-r.json').write_text(json.dumps({'x': x}))\nprint(x * 2)")


def tiny_notebook(path, params=PARAMS, body=BODY):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("from typing import Optional\n" + params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(f'STUDY = "{path.stem}"\n' + body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def glue_sst2(root, dev_label="0"):
    (root / "glue" / "SST-2").mkdir(parents=True, exist_ok=True)
    (root / "glue" / "SST-2" / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\n")
    (root / "glue" / "SST-2" / "dev.tsv").write_text(f"sentence\tlabel\nfine\t{dev_label}\n")
    return root


# --------------------------------------------------------------------------- what the fingerprint covers


def test_each_input_of_the_fingerprint_changes_it(tmp_path, monkeypatch):
    nb = tiny_notebook(tmp_path / "99_tiny.ipynb")
    data = glue_sst2(tmp_path / "data")
    params = {"profile": "cpu", "seed": 0, "x": 1, "task_name": "sst2", "data_dir": str(data)}
    base = study_fingerprint(nb, params)
    assert study_fingerprint(nb, dict(params)) == base  # deterministic
    changed = {
        "parameters": lambda: study_fingerprint(nb, {**params, "x": 2}),
        "profile": lambda: study_fingerprint(nb, params, profile="gpu"),
        "data file": lambda: (glue_sst2(data, dev_label="1"), study_fingerprint(nb, params))[1],
    }
    seen = {base}
    for what, fingerprint in changed.items():
        value = fingerprint()
        assert value not in seen, f"changing the {what} left the fingerprint as it was"
        seen.add(value)
    glue_sst2(data)  # back to the first data
    assert study_fingerprint(nb, params) == base
    monkeypatch.setattr(runner, "code_version", lambda: "another version of mpstudy")
    assert study_fingerprint(nb, params) not in seen
    monkeypatch.undo()
    for module in ("torch", "transformers"):
        with monkeypatch.context() as m:
            m.setattr(__import__(module), "__version__", "0.0.1")
            assert study_fingerprint(nb, params) not in seen, f"the {module} version is not in the fingerprint"
    assert study_fingerprint(nb, params) == base


def test_notebook_code_counts_its_stored_outputs_do_not(tmp_path):
    nb = tiny_notebook(tmp_path / "99_tiny.ipynb")
    params = {"profile": "smoke", "x": 1}
    base = study_fingerprint(nb, params)
    stored = nbformat.read(nb, as_version=4)
    stored.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="2\n")]
    stored.cells[1].execution_count = 1
    nbformat.write(stored, nb)
    assert study_fingerprint(nb, params) == base  # --in-place re-stores outputs: no page goes stale
    tiny_notebook(nb, body=BODY.replace("x * 2", "x * 3"))
    assert study_fingerprint(nb, params) != base


def test_study_data_names_the_files_each_task_reads(tmp_path, monkeypatch):
    data = glue_sst2(tmp_path / "data")
    monkeypatch.delenv("MPSTUDY_DATA", raising=False)
    read = study_data({"task_name": "SST-2", "s2s_task_name": "synthetic-seq2seq", "data_dir": str(data)})
    assert read["synthetic-seq2seq"] == "synthetic"
    assert set(read["sst2"]) == {"glue/SST-2/train.tsv", "glue/SST-2/dev.tsv"}
    assert all(len(sha) == 64 for sha in read["sst2"].values())
    assert study_data({"tasks": ["mrpc"], "data_dir": str(data)}) == {"mrpc": {"glue/MRPC/dev.tsv": None, "glue/MRPC/train.tsv": None}}
    assert study_data({"tasks": ["mrpc"]}) == {"mrpc": "hub"}
    monkeypatch.setenv("MPSTUDY_DATA", str(data))  # what the notebook's load_task would read
    assert study_data({"task_name": "sst2"}) == {"sst2": read["sst2"]}
    with pytest.raises(ValueError, match="imdb"):
        study_data({"task_name": "imdb"})


# --------------------------------------------------------------------------- runs that are not up to date


@pytest.fixture
def study(tmp_path):
    nb = tiny_notebook(tmp_path / "99_tiny.ipynb")
    data = glue_sst2(tmp_path / "data")
    kwargs = dict(output_dir=tmp_path / "out", results_dir=tmp_path / "res", log=lambda m: None)
    return nb, data, kwargs


def test_a_page_of_another_profile_is_never_up_to_date(study, tmp_path):
    nb, data, kwargs = study
    page = tmp_path / "out" / "99_tiny.ipynb"
    assert run_study(nb, "smoke", {"data_dir": str(data)}, **kwargs)["status"] == "ran"
    assert page_profile(page) == "smoke"
    with pytest.raises(ValueError, match=r"99_tiny.ipynb holds the smoke profile's results; writing the cpu profile's "
                                          r"over it needs --replace-profile"):
        run_study(nb, "cpu", {"data_dir": str(data)}, **kwargs)
    assert page_profile(page) == "smoke"  # refused before anything ran
    assert run_study(nb, "cpu", {"data_dir": str(data)}, replace_profile=True, **kwargs)["status"] == "ran"
    assert page_profile(page) == "cpu" and nbformat.read(page, as_version=4).metadata["mpstudy"]["profile"] == "cpu"
    # the smoke stamp still matches its fingerprint, but the page now holds cpu results
    assert (tmp_path / "res" / "runs" / "99_tiny-smoke.json").exists()
    assert run_study(nb, "smoke", {"data_dir": str(data)}, replace_profile=True, **kwargs)["status"] == "ran"
    assert run_study(nb, "smoke", {"data_dir": str(data)}, **kwargs)["status"] == "skipped"


def test_a_page_of_another_data_set_or_changed_records_is_never_up_to_date(study, tmp_path):
    nb, data, kwargs = study
    assert run_study(nb, "smoke", {"data_dir": str(data)}, **kwargs)["status"] == "ran"
    assert run_study(nb, "smoke", {"data_dir": str(data)}, **kwargs)["status"] == "skipped"
    glue_sst2(data, dev_label="1")  # same folder, other data
    stamp = run_study(nb, "smoke", {"data_dir": str(data)}, **kwargs)
    assert stamp["status"] == "ran"
    assert stamp["records"] and set(stamp["records"]) == {"smoke-r.json"}
    assert stamp["fingerprint_parts"]["data"]["sst2"]["glue/SST-2/dev.tsv"] == runner.file_sha256(data / "glue/SST-2/dev.tsv")
    record = tmp_path / "res" / "99_tiny" / "smoke-r.json"
    record.write_text(json.dumps({"x": "edited by hand"}))
    assert run_study(nb, "smoke", {"data_dir": str(data)}, **kwargs)["status"] == "ran"
    assert json.loads(record.read_text())["x"] == 1


def test_a_study_reading_records_goes_stale_when_they_change(tmp_path, monkeypatch):
    """The ledger's data are the other studies' records: re-running one of them makes it stale."""
    monkeypatch.setattr(runner, "READS_RECORDS", frozenset({"99_tiny"}))
    nb = tiny_notebook(tmp_path / "99_tiny.ipynb", params='profile: str = "smoke"\nseed: int = 0\nresults_dir: Optional[str] = None',
                       body="print(1)")
    kwargs = dict(output_dir=tmp_path / "out", results_dir=tmp_path / "res", log=lambda m: None)
    (tmp_path / "res" / "00_other").mkdir(parents=True)
    (tmp_path / "res" / "00_other" / "smoke-r.json").write_text("{}")
    assert run_study(nb, **kwargs)["status"] == "ran"
    assert run_study(nb, **kwargs)["status"] == "skipped"
    (tmp_path / "res" / "00_other" / "smoke-r.json").write_text('{"value": 1}')
    assert run_study(nb, **kwargs)["status"] == "ran"
