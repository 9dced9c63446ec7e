"""The campaign's unit records (mpstudy.campaign): computed once, reused by spec, time-boxed, covered."""
from __future__ import annotations

import json
import time

import pytest

import mpstudy.campaign as campaign
from mpstudy.campaign import Lazy, TimeUp, coverage, coverage_note, declare, read_unit, spec_key, unit, unit_path


@pytest.fixture(autouse=True)
def _no_time_box(monkeypatch):
    monkeypatch.delenv("MPSTUDY_DEADLINE", raising=False)
    monkeypatch.delenv("MPSTUDY_RERUN_STALE", raising=False)


def counter(value):
    calls = []

    def compute():
        calls.append(1)
        return {"score": value}
    return compute, calls


def test_a_unit_is_computed_once_and_then_read_from_its_record(tmp_path):
    spec = {"task": "sst2", "seed": 0, "keep": 0.5}
    compute, calls = counter(0.9)
    first = unit("00_x", "svd-keep0.5-seed0", spec, compute, results_dir=tmp_path)
    again = unit("00_x", "svd-keep0.5-seed0", dict(reversed(list(spec.items()))), compute, results_dir=tmp_path)
    assert calls == [1], "the second call recomputed a recorded unit (key order must not matter)"
    assert first == again and first["result"] == {"score": 0.9}
    path = unit_path("00_x", "svd-keep0.5-seed0", tmp_path)
    assert path == tmp_path / "00_x" / "units" / "svd-keep0.5-seed0.json"
    stored = json.loads(path.read_text())
    assert stored["spec_key"] == spec_key(spec) and stored["spec"] == spec
    assert set(stored) >= {"code_version", "versions", "wall_seconds", "cpu_seconds", "provenance"}
    assert stored["cpu_seconds"] >= 0 and stored["wall_seconds"] >= 0


def test_another_spec_under_the_same_name_is_recomputed_and_replaces_the_record(tmp_path):
    compute, calls = counter(1.0)
    unit("s", "u", {"seed": 0}, compute, results_dir=tmp_path)
    assert read_unit("s", "u", {"seed": 1}, tmp_path) is None
    other, other_calls = counter(2.0)
    assert unit("s", "u", {"seed": 1}, other, results_dir=tmp_path)["result"] == {"score": 2.0}
    assert other_calls == [1] and read_unit("s", "u", {"seed": 1}, tmp_path)["result"] == {"score": 2.0}


def test_the_time_box_starts_no_unit_after_the_deadline_but_reads_records(tmp_path, monkeypatch):
    compute, calls = counter(1.0)
    unit("s", "done", {"a": 1}, compute, results_dir=tmp_path)
    monkeypatch.setenv("MPSTUDY_DEADLINE", str(time.time() - 1))
    assert unit("s", "done", {"a": 1}, compute, results_dir=tmp_path)["result"] == {"score": 1.0}
    with pytest.raises(TimeUp, match="s/todo not started"):
        unit("s", "todo", {"a": 2}, compute, results_dir=tmp_path)
    assert calls == [1] and not unit_path("s", "todo", tmp_path).exists()
    # a unit that would not finish in the time left is not started either
    monkeypatch.setenv("MPSTUDY_DEADLINE", str(time.time() + 60))
    with pytest.raises(TimeUp, match="needs about 600 s"):
        unit("s", "todo", {"a": 2}, compute, results_dir=tmp_path, estimate_s=600)
    assert unit("s", "todo", {"a": 2}, compute, results_dir=tmp_path, estimate_s=5)["result"] == {"score": 1.0}
    monkeypatch.setenv("MPSTUDY_DEADLINE", "tomorrow")
    with pytest.raises(ValueError, match="MPSTUDY_DEADLINE must be a Unix time"):
        unit("s", "other", {"a": 3}, compute, results_dir=tmp_path)


def test_records_of_other_code_are_kept_unless_stale_ones_are_asked_to_rerun(tmp_path, monkeypatch):
    compute, calls = counter(1.0)
    unit("s", "u", {"a": 1}, compute, results_dir=tmp_path)
    monkeypatch.setattr(campaign, "code_version", lambda: "0123456789abcdef")
    unit("s", "u", {"a": 1}, compute, results_dir=tmp_path)
    assert calls == [1], "a code change elsewhere threw a committed record away"
    monkeypatch.setenv("MPSTUDY_RERUN_STALE", "1")
    assert unit("s", "u", {"a": 1}, compute, results_dir=tmp_path)["code_version"] == "0123456789abcdef"
    assert calls == [1, 1]
    unit("s", "u", {"a": 1}, compute, results_dir=tmp_path)
    assert calls == [1, 1], "a record of today's code was recomputed"


def test_coverage_counts_declared_units_and_a_partial_grid_says_so(tmp_path):
    assert coverage("s", tmp_path)["planned"] is None
    assert "has not started" in coverage_note("s", tmp_path)
    declare("s", ["a", "b", "c"], tmp_path, profile="cpu")
    compute, _ = counter(1.0)
    unit("s", "a", {"x": 1}, compute, results_dir=tmp_path)
    unit("s", "b", {"x": 2}, compute, results_dir=tmp_path)
    cov = coverage("s", tmp_path)
    assert (cov["planned"], cov["done"], cov["missing"], cov["complete"]) == (3, 2, ["c"], False)
    assert sum(cov["code_versions"].values()) == 2
    assert coverage_note("s", tmp_path).startswith("Incomplete: 2 of 3 units")
    unit("s", "c", {"x": 3}, compute, results_dir=tmp_path)
    assert coverage("s", tmp_path)["complete"] and coverage_note("s", tmp_path) is None


@pytest.mark.parametrize("study, name", [("s", "../escape"), ("s", ""), ("s", ".hidden"), ("a/b", "u"), ("s", "x" * 200)])
def test_bad_names_are_refused_before_anything_is_written(tmp_path, study, name):
    compute, calls = counter(1.0)
    with pytest.raises(ValueError, match="must be a plain file name"):
        unit(study, name, {}, compute, results_dir=tmp_path)
    assert calls == [] and not any(tmp_path.iterdir())


def test_a_garbled_record_names_its_file_and_a_non_mapping_result_is_refused(tmp_path):
    path = unit_path("s", "u", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"u\.json: not a unit record"):
        unit("s", "u", {}, counter(1.0)[0], results_dir=tmp_path)
    with pytest.raises(TypeError, match="must return a mapping"):
        unit("s", "v", {}, lambda: 0.5, results_dir=tmp_path)
    assert not unit_path("s", "v", tmp_path).exists()


def test_lazy_makes_its_value_once_and_only_when_asked():
    made = []
    lazy = Lazy(lambda: made.append(1) or "model")
    assert not lazy.made and made == []
    assert lazy() == "model" and lazy() == "model" and made == [1] and lazy.made


def test_reproduce_time_box_keeps_finished_units_and_the_old_page_then_resumes(tmp_path, monkeypatch):
    """A study stopped by `reproduce --hours` keeps its recorded units and writes no page; the next call
    reads the recorded unit (not recomputed) and finishes. Studies after a spent time box do not start."""
    from test_fingerprints import tiny_notebook

    from mpstudy import runner

    body = ("from mpstudy.campaign import unit\n"
            "r1 = unit(STUDY, 'u1', {'x': x}, lambda: {'v': 1}, results_dir=results_dir)\n"
            "r2 = unit(STUDY, 'u2', {'x': x}, lambda: {'v': 2}, results_dir=results_dir, estimate_s=3600)\n"
            "print(r1['result']['v'] + r2['result']['v'])")
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    tiny_notebook(notebooks / "01_a.ipynb", params='profile: str = "smoke"\nseed: int = 0\nx: int = 1\n'
                  'results_dir: Optional[str] = None', body=body)
    dirs = dict(notebooks_dir=notebooks, output_dir=tmp_path / "pages", results_dir=tmp_path / "results", log=lambda m: None)
    page, u1 = tmp_path / "pages" / "01_a.ipynb", unit_path("01_a", "u1", tmp_path / "results")

    [stamp] = runner.reproduce(hours=0.5, **dirs)  # u2 needs an hour: it does not fit in half of one
    assert stamp["status"] == "time-up" and u1.is_file() and not page.exists()
    assert not unit_path("01_a", "u2", tmp_path / "results").exists()
    recorded = u1.read_bytes()

    [stamp] = runner.reproduce(**dirs)
    assert stamp["status"] == "ran" and page.is_file() and u1.read_bytes() == recorded
    assert "3" in json.dumps(json.loads(page.read_text())["cells"][-1]["outputs"])

    monkeypatch.setattr(runner, "remaining_seconds", lambda: -1.0)
    assert [s["status"] for s in runner.reproduce(hours=1, force=True, **dirs)] == ["not started"]
    with pytest.raises(ValueError, match="hours must be a positive number"):
        runner.reproduce(hours=-2, **dirs)


def test_the_reproducibility_page_tabulates_the_campaign_coverage(tmp_path):
    from mpstudy.campaign import coverage_table
    from mpstudy.reproducibility import render_markdown

    (tmp_path / "runs").mkdir()
    assert "No campaign unit is recorded yet" in render_markdown(tmp_path / "runs", tmp_path)
    declare("s1", ["a", "b"], tmp_path)
    unit("s1", "a", {"x": 1}, counter(1.0)[0], results_dir=tmp_path)
    unit("s2", "z", {"x": 1}, counter(1.0)[0], results_dir=tmp_path)  # no plan declared
    assert [(c["study"], c["done"], c["planned"]) for c in coverage_table(tmp_path)] == [("s1", 1, 2), ("s2", 1, None)]
    text = render_markdown(tmp_path / "runs", tmp_path)
    assert "| `s1` | 1 | 2 | no |" in text and "| `s2` | 1 | not declared | no |" in text
    assert "Campaign so far:" in text
