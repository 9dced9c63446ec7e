"""A `mpstudy reproduce` killed midway, then re-run, finishes only the missing studies and leaves no half-written record.

Three tiny studies (01_a, 02_b, 03_c) each write a results record. On the first run 02_b starts
writing a record the way ``write_json_atomic`` does (a hidden temporary file, half the JSON) and
then waits; the runner is killed there, by SIGKILL (nothing can clean up: the next run must) or by
SIGTERM (the runner exits cleanly). Then: every visible record is complete JSON, 02_b and 03_c
have neither output nor stamp, and a second `reproduce` skips 01_a, runs 02_b and 03_c and leaves
no temporary file behind.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent

BODY = """
import os, time, pathlib
from mpstudy.records import write_record
folder = pathlib.Path(results_dir) / STUDY
if STUDY == "02_b" and pathlib.Path(os.environ["MPSTUDY_TEST_HOLD"]).exists():
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".r.json.killed").write_text('{"study": "02_b", "value": ')  # as write_json_atomic, mid-write
    pathlib.Path(os.environ["MPSTUDY_TEST_STARTED"]).write_text(str(os.getpid()))
    time.sleep(120)
write_record(results_dir, STUDY, "r", {"value": len(STUDY)})
"""


def _study(folder: Path, stem: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "smoke"\nseed = 0\nresults_dir = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(f'STUDY = "{stem}"\n' + BODY)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / f"{stem}.ipynb")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def project(tmp_path):
    (tmp_path / "notebooks").mkdir()
    for stem in ("01_a", "02_b", "03_c"):
        _study(tmp_path / "notebooks", stem)
    # A snapshot of the library: the fingerprint that decides "up to date" covers its code, which must
    # not change between the two runs (in a shared checkout, someone may be editing it meanwhile).
    shutil.copytree(ROOT / "mpstudy", tmp_path / "lib" / "mpstudy", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPSTUDY_TEST_HOLD": str(tmp_path / "hold"),
           "MPSTUDY_TEST_STARTED": str(tmp_path / "started"), "PYTHONPATH": str(tmp_path / "lib")}
    cmd = [sys.executable, "-m", "mpstudy", "reproduce", "--notebooks-dir", str(tmp_path / "notebooks"),
           "--output-dir", str(tmp_path / "out"), "--results-dir", str(tmp_path / "res")]
    return tmp_path, env, cmd


def _interrupt(tmp_path: Path, env: dict, cmd: list[str], sig: int) -> int:
    """Start reproduce, wait until 02_b is mid-record, send ``sig`` to the runner; return the kernel's pid."""
    (tmp_path / "hold").touch()
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not (tmp_path / "started").exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "02_b never started"
        time.sleep(0.2)
    kernel = int((tmp_path / "started").read_text())
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    deadline = time.monotonic() + 30  # an orphaned kernel notices its parent is gone and exits
    while _alive(kernel) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(kernel):  # pragma: no cover - do not leave it sleeping
        os.kill(kernel, signal.SIGKILL)
    (tmp_path / "hold").unlink()
    return kernel


def _visible_records(res: Path) -> dict[str, dict]:
    return {str(p.relative_to(res)): json.loads(p.read_text()) for p in sorted(res.rglob("*.json")) if not p.name.startswith(".")}


def _hidden(*folders: Path) -> list[str]:
    return sorted(str(p) for f in folders if f.exists() for p in f.rglob(".*") if p.is_file() and not p.name.endswith(".lock"))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_killed_reproduce_resumes_with_the_missing_studies(project, sig):
    tmp_path, env, cmd = project
    out, res = tmp_path / "out", tmp_path / "res"
    _interrupt(tmp_path, env, cmd, sig)

    records = _visible_records(res)  # every visible record is complete JSON (json.loads would fail otherwise)
    assert set(records) == {"01_a/r.json", "runs/01_a-smoke.json"}
    assert records["01_a/r.json"]["value"] == 4
    assert sorted(p.name for p in out.glob("*.ipynb") if not p.name.startswith(".")) == ["01_a.ipynb"]
    if sig == signal.SIGTERM:  # the runner shut down cleanly: its own temporary notebook is gone
        assert not list(out.glob(".02_b.*.ipynb"))
    else:  # nothing could clean up after SIGKILL: only hidden temporaries remain
        assert list(out.glob(".02_b.*.ipynb")) and (res / "02_b" / ".r.json.killed").exists()

    first_stamp = (res / "runs" / "01_a-smoke.json").read_text()
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    statuses = {Path(s["notebook"]).stem: s["status"] for s in json.loads(proc.stdout)}
    assert statuses == {"01_a": "skipped", "02_b": "ran", "03_c": "ran"}
    assert (res / "runs" / "01_a-smoke.json").read_text() == first_stamp

    records = _visible_records(res)
    assert {k for k in records if not k.startswith("runs/")} == {"01_a/r.json", "02_b/r.json", "03_c/r.json"}
    assert sorted(p.name for p in out.glob("*.ipynb") if not p.name.startswith(".")) == ["01_a.ipynb", "02_b.ipynb", "03_c.ipynb"]
    assert _hidden(out, res) == []  # the killed run's temporaries were removed


def test_a_second_live_run_of_a_study_is_refused(project):
    """The lock that makes removing leftovers safe: a concurrent run of the same study is refused."""
    from mpstudy.runner import _study_lock

    tmp_path, _, _ = project
    with _study_lock(tmp_path / "out", "02_b"):
        with pytest.raises(RuntimeError, match="another run of 02_b is writing to"):
            with _study_lock(tmp_path / "out", "02_b"):
                pass
    with _study_lock(tmp_path / "out", "02_b"):  # released when the first run ends
        pass
