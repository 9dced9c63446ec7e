"""Execute study notebooks with papermill, skip the ones already up to date, build the book."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .profiles import get_profile
from .records import provenance, write_json_atomic

__all__ = ["project_root", "study_fingerprint", "run_study", "store_smoke_outputs", "reproduce", "build_book",
           "notebook_parameters"]


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
    if not force and output.exists() and stamp_path.exists():
        stamp = json.loads(stamp_path.read_text())
        if stamp.get("fingerprint") == fingerprint and stamp.get("output") == str(output):
            log(f"{notebook.name} [{profile}]: up to date, skipped")
            return {**stamp, "status": "skipped"}

    log(f"{notebook.name} [{profile}]: running with {json.dumps(params, default=str)}")
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.stem}.", suffix=".ipynb", dir=output.parent)
    os.close(fd)
    start = time.perf_counter()
    try:
        # The notebook's own output (progress bars of long runs) streams to this terminal's stderr.
        papermill.execute_notebook(str(notebook), tmp, parameters=params, kernel_name="python3", progress_bar=False,
                                   cwd=str(Path.cwd()), log_output=True, stdout_file=sys.stderr, stderr_file=sys.stderr)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
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
    fd, tmp_path = tempfile.mkstemp(prefix=f".{notebook.stem}.", suffix=".ipynb", dir=notebook.parent)
    os.close(fd)
    nbformat.write(nb, tmp_path)
    os.chmod(tmp_path, 0o644)  # mkstemp creates 0600 files
    os.replace(tmp_path, notebook)
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
