"""The same smoke study run twice gives identical results records, except the volatile fields.

Volatile fields are defined once, in ``mpstudy.runner.VOLATILE_KEY``: wall-clock durations
(``seconds``, ``*_seconds``, ``*_s``, ``*_ms``), rates and ratios of durations (``*_per_s``,
``speedup``, ``time_ratio``) and the time of the run (``time_utc``). Everything else (metrics,
losses, parameter counts, errors, provenance) must be equal, NaN included.

Each run is a fresh process with its own cache (nothing is reused between the two), on a snapshot
of the library and the notebook, so a concurrent edit of the checkout cannot make them differ.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mpstudy.runner import VOLATILE_KEY, stable_view

ROOT = Path(__file__).resolve().parent.parent
STUDY = "04_offline"  # the quickest smoke study that trains (autoencoders) and times (compression)


def _volatile_paths(record, path: str = "") -> set[str]:
    if isinstance(record, dict):
        out = {f"{path}.{k}" for k in record if VOLATILE_KEY.search(k)}
        for k, v in record.items():
            out |= _volatile_paths(v, f"{path}.{k}")
        return out
    if isinstance(record, list):
        return set().union(*(_volatile_paths(v, f"{path}[]") for v in record)) if record else set()
    return set()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("determinism")
    shutil.copytree(ROOT / "mpstudy", base / "lib" / "mpstudy", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "notebooks" / f"{STUDY}.ipynb", base / f"{STUDY}.ipynb")
    procs = {}
    for name in ("first", "second"):  # side by side (one thread each): independent processes, 2 cores
        env = {k: v for k, v in os.environ.items() if k != "MPSTUDY_DATA"}
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(base / "lib"),
                   MPSTUDY_CACHE=str(base / name / "cache"), MPSTUDY_RESULTS=str(base / name / "results"))
        cmd = [sys.executable, "-m", "mpstudy", "run", str(base / f"{STUDY}.ipynb"), "--profile", "smoke",
               "--output-dir", str(base / name / "out"), "--results-dir", str(base / name / "results")]
        procs[name] = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    runs = []
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        folder = base / name / "results" / STUDY
        runs.append({p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))})
    return runs


def test_records_are_identical_except_volatile_fields(two_runs):
    first, second = two_runs
    assert first and first.keys() == second.keys()
    for name in first:
        assert stable_view(first[name]) == stable_view(second[name]), name


def test_the_comparison_is_not_vacuous(two_runs):
    first, second = two_runs
    record = next(iter(first.values()))
    volatile = _volatile_paths(record)
    assert ".provenance.time_utc" in volatile and any(p.endswith("compress_seconds") for p in volatile)
    kept = json.dumps(stable_view(record))
    assert "achieved_cr" in kept and "rel_error" in kept and len(kept) > 5000
    # the timings really do vary from run to run, which is why they are volatile
    times = lambda r: [row.get("compress_seconds") for row in r["grid"]]  # noqa: E731
    assert times(record) != times(next(iter(second.values())))


@pytest.mark.parametrize("key,volatile", [
    ("time_utc", True), ("seconds", True), ("train_seconds", True), ("elapsed_s", True), ("dense_ms", True),
    ("tokens_per_s", True), ("speedup", True), ("time_ratio", True),
    ("accuracy", False), ("params", False), ("rel_error", False), ("gflops", False), ("ratios", False), ("loss", False),
])
def test_volatile_key_definition(key, volatile):
    assert bool(VOLATILE_KEY.search(key)) is volatile
