"""Execute study notebooks with papermill, skip the ones already up to date, build the book."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .profiles import get_profile
from .records import atomic_file, provenance, write_json_atomic

__all__ = ["project_root", "study_fingerprint", "run_study", "store_smoke_outputs", "reproduce", "build_book",
           "notebook_parameters", "VOLATILE_KEY", "stable_view"]

#: Keys of results records whose values legitimately differ between two runs of the same study with
#: the same parameters on the same machine: wall-clock durations (``seconds``, ``*_seconds``, ``*_s``,
#: ``*_ms``), rates and ratios of durations (``*_per_s``, ``speedup``, ``time_ratio``) and the time of
#: the run (``time_utc``). Nothing else may differ: a rerun reproduces every other field exactly
#: (tests/test_determinism.py runs a smoke study twice). Name new timing fields accordingly.
VOLATILE_KEY = re.compile(r"^(time_utc|seconds|speedup|time_ratio)$|_(seconds|s|ms|per_s)$")


def stable_view(record: Any) -> Any:
    """``record`` without its volatile fields (:data:`VOLATILE_KEY`, at any depth), NaN as the string
    ``"nan"`` (so two records compare equal with ``==`` when they agree)."""
    if isinstance(record, dict):
        return {k: stable_view(v) for k, v in record.items() if not VOLATILE_KEY.search(str(k))}
    if isinstance(record, list):
        return [stable_view(v) for v in record]
    if isinstance(record, float) and record != record:
        return "nan"
    return record


def project_root() -> Path:
    """The checkout holding ``_config.yml`` (the current directory if it has one, else the package's parent)."""
    cwd = Path.cwd()
    return cwd if (cwd / "_config.yml").exists() else Path(__file__).resolve().parent.parent


def notebook_parameters(notebook: Path) -> dict[str, Any]:
    """Names and defaults of a notebook's ``parameters`` cell (as papermill reads them)."""
    import papermill

    return {name: info["default"] for name, info in papermill.inspect_notebook(str(notebook)).items()}


def study_fingerprint(notebook: Path, params: dict[str, Any]) -> str:
    """Hash of what a study's output depends on: its parameters, the notebook, the library's code."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    h.update(notebook.read_bytes())
    for source in sorted(Path(__file__).resolve().parent.rglob("*.py")):
        h.update(source.name.encode())
        h.update(source.read_bytes())
    return h.hexdigest()


def _remove_leftovers(stem: str, output_dir: Path, results_dir: Path) -> list[Path]:
    """Delete the hidden temporary files a killed run of study ``stem`` left behind.

    Everything a run writes goes to a hidden temporary file first and is renamed into place when
    complete (:func:`mpstudy.records.atomic_file`: the executed notebook here, records and stamps
    by ``write_json_atomic``), so a run killed midway leaves only such files (``.<name>.<...>``),
    never a half-written visible one. ``atomic_file`` itself removes a dead writer's temporaries of
    the file it writes; this also removes those of files the next run may not write again (a
    record the notebook no longer makes), and any hidden file of these names, holding the study's
    lock (:func:`_study_lock`), so no live run's files are touched.
    """
    patterns = [(output_dir, f".{stem}.*.ipynb"), (results_dir / "runs", f".{stem}-*.json.*"), (results_dir / stem, ".*.json.*")]
    removed = [p for folder, pattern in patterns if folder.is_dir() for p in folder.glob(pattern) if p.is_file()]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def _study_lock(output_dir: Path, stem: str):
    """An exclusive, non-blocking ``flock`` on ``<output_dir>/.<stem>.lock`` for the duration of a run."""
    import contextlib
    import fcntl

    @contextlib.contextmanager
    def hold():
        output_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(output_dir / f".{stem}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(f"another run of {stem} is writing to {output_dir}; wait for it to finish "
                                   "or give another --output-dir") from None
            yield
        finally:
            os.close(fd)  # closing releases the lock

    return hold()


def run_study(
    notebook: str | os.PathLike,
    profile: str = "smoke",
    overrides: dict[str, Any] | None = None,
    output_dir: str | os.PathLike = "book/studies",
    results_dir: str | os.PathLike = "results",
    force: bool = False,
    log=print,
) -> dict[str, Any]:
    """Execute ``notebook`` under ``profile`` into ``output_dir/<name>.ipynb``.

    Parameters are the profile's values for this study updated with ``overrides``; every name
    must be one the notebook's ``parameters`` cell declares. A stamp in
    ``results_dir/runs/<name>-<profile>.json`` records the fingerprint of parameters, notebook
    and library code: when nothing changed and the output exists, the study is skipped
    (``force=True`` runs it anyway). The executed notebook is written atomically.

    Returns the stamp (with ``status``: ``"ran"`` or ``"skipped"``).
    """
    import papermill

    notebook = Path(notebook)
    if notebook.suffix != ".ipynb" or not notebook.is_file():
        raise FileNotFoundError(f"no notebook at {notebook} (expected an existing .ipynb file)")
    declared = notebook_parameters(notebook)
    params = get_profile(profile, notebook.stem)
    params.update(overrides or {})
    if "results_dir" in declared:
        params["results_dir"] = str(results_dir)  # relative to the kernel's cwd, which is ours
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ValueError(f"{notebook.name} has no parameter(s) {unknown}; its parameters are {sorted(declared)}")

    output = Path(output_dir) / notebook.name
    stamp_path = Path(results_dir) / "runs" / f"{notebook.stem}-{profile}.json"
    fingerprint = study_fingerprint(notebook, params)
    # One run of a study per output folder at a time: the lock (released by the OS even on SIGKILL) makes
    # removing a killed run's leftovers safe, and refuses a second run that would race on the same files.
    with _study_lock(output.parent, notebook.stem):
        _remove_leftovers(notebook.stem, output.parent, Path(results_dir))  # of a killed earlier run
        if not force and output.exists() and stamp_path.exists():
            stamp = json.loads(stamp_path.read_text())
            if stamp.get("fingerprint") == fingerprint and stamp.get("output") == str(output):
                log(f"{notebook.name} [{profile}]: up to date, skipped")
                return {**stamp, "status": "skipped"}

        log(f"{notebook.name} [{profile}]: running with {json.dumps(params, default=str)}")
        start = time.perf_counter()
        with atomic_file(output) as tmp:
            # The notebook's own output (progress bars of long runs) streams to this terminal's stderr.
            papermill.execute_notebook(str(notebook), str(tmp), parameters=params, kernel_name="python3", progress_bar=False,
                                       cwd=str(Path.cwd()), log_output=True, stdout_file=sys.stderr, stderr_file=sys.stderr)
        stamp = {"notebook": str(notebook), "profile": profile, "parameters": params, "fingerprint": fingerprint,
                 "output": str(output), "seconds": round(time.perf_counter() - start, 1), **provenance()}
        write_json_atomic(stamp_path, stamp)
        log(f"{notebook.name} [{profile}]: done in {stamp['seconds']} s -> {output}")
        return {**stamp, "status": "ran"}


def store_smoke_outputs(notebook: str | os.PathLike, timeout: int = 600) -> Path:
    """Execute a template in place with its own (smoke) defaults and store the outputs nbval compares.

    Runs as the test suite does: offline, with a fresh temporary cache and results folder and no
    data dir, so the stored outputs are the ones a clean CI machine reproduces.
    """
    import nbformat
    from nbclient import NotebookClient

    notebook = Path(notebook)
    if notebook.suffix != ".ipynb" or not notebook.is_file():
        raise FileNotFoundError(f"no notebook at {notebook} (expected an existing .ipynb file)")
    nb = nbformat.read(notebook, as_version=4)
    saved_env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="mpstudy-smoke-") as tmp:
        os.environ.pop("MPSTUDY_DATA", None)
        os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
                           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
                           "TOKENIZERS_PARALLELISM": "false", "MPSTUDY_CACHE": f"{tmp}/cache",
                           "MPSTUDY_RESULTS": f"{tmp}/results"})
        try:
            NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}}).execute()
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
    with atomic_file(notebook) as tmp:
        nbformat.write(nb, str(tmp))
    return notebook


def reproduce(profile: str = "smoke", notebooks_dir: str | os.PathLike = "notebooks", **kwargs: Any) -> list[dict[str, Any]]:
    """Run every study notebook (in name order); up-to-date studies are skipped."""
    notebooks = sorted(Path(notebooks_dir).glob("[0-9]*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no study notebooks (NN_*.ipynb) in {notebooks_dir}")
    return [run_study(nb, profile=profile, **kwargs) for nb in notebooks]


def build_book(root: str | os.PathLike | None = None, strict: bool = True) -> Path:
    """Build the HTML book into ``<root>/_build/html`` from the committed notebooks (no execution)."""
    root = Path(root) if root is not None else project_root()
    if not (root / "_config.yml").exists():
        raise FileNotFoundError(f"no _config.yml in {root}: run from the project checkout")
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", "--all", str(root)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    subprocess.run(cmd, check=True)
    return root / "_build" / "html"
