"""Execute study notebooks with papermill, skip the ones already up to date, build the book.

A run is "up to date" only when its output page, its stamp and its records all say they came from
the same fingerprint (:func:`study_fingerprint`): the notebook's code, the parameters after the
profile is applied, the profile name, the checksums of the data files it reads, the library's code
and the torch/transformers versions. A page holding another profile's or another data set's results
never counts as up to date, and is not overwritten by another profile's run without
``replace_profile`` (``--replace-profile``). Smoke runs go to a scratch folder (:data:`SCRATCH`) by
default, never over the committed pages of ``book/studies/``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache import code_version, file_checksums, library_versions
from .campaign import coverage, remaining_seconds
from .pages import dress_page, run_box
from .parameters import check_parameters, declared_parameters
from .profiles import READS_RECORDS, get_profile
from .records import atomic_file, file_sha256, provenance, write_json_atomic

__all__ = ["project_root", "study_fingerprint", "run_study", "plan_study", "StudyPlan", "store_smoke_outputs",
           "reproduce", "execute_plan", "build_book", "notebook_parameters", "study_data", "page_profile", "page_fingerprint",
           "default_dirs", "SCRATCH", "VOLATILE_KEY", "stable_view", "time_box",
           "REPRODUCIBLE_FLOAT_ENV"]

#: where smoke runs go unless told otherwise — ``<SCRATCH>/studies`` (pages) and ``<SCRATCH>/results``
#: (records, stamps). Under ``_build/``: ignored by git and by the book's sources.
SCRATCH = Path("_build") / "smoke"

#: The environment under which smoke outputs are stored and checked, set by tests/conftest.py too, for the
#: same floats on every x86 CPU with AVX2 -- MKL's conditional numerical reproducibility and ATen's
#: AVX2 kernels rather than each CPU's fastest path (AVX512/AMX products differ in the last bits).
REPRODUCIBLE_FLOAT_ENV = {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}

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
    """Names and defaults (source text) of a notebook's ``parameters`` cell (as papermill reads them)."""
    return {name: d.default for name, d in declared_parameters(notebook).items()}


def default_dirs(profile: str) -> tuple[Path, Path]:
    """``(output_dir, results_dir)`` of a profile's runs: the scratch folders for smoke, else
    ``book/studies`` and ``results`` (the committed pages and records)."""
    if profile == "smoke":
        return SCRATCH / "studies", SCRATCH / "results"
    return Path("book/studies"), Path("results")


# --------------------------------------------------------------------------- what a run depends on


def _notebook_digest(notebook: Path) -> str:
    """sha256 of the notebook's cells (type and source), not its stored outputs or metadata: storing
    a template's smoke outputs (``--in-place``) does not make the other profiles' pages stale."""
    nb = json.loads(notebook.read_text())
    cells = [(c.get("cell_type"), "".join(c.get("source", "")) if isinstance(c.get("source"), list) else c.get("source", ""))
             for c in nb.get("cells", [])]
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


#: labelled test splits a study may read besides train/dev (``mpstudy.tasks.load_test_split``)
_TEST_FILES = {"multi30k": ["multi30k/test_2016_flickr.en", "multi30k/test_2016_flickr.de"]}


def study_data(params: dict[str, Any]) -> dict[str, Any]:
    """The data a study with ``params`` reads: for each task named by ``task_name``, ``*_task_name``
    or ``tasks``, the sha256 of each file it reads from the data dir (``data_dir``, else
    ``$MPSTUDY_DATA``; its train and dev files, and a labelled test split's where the task has one;
    ``None`` for a missing file), ``"synthetic"`` for a generated task, and
    ``"hub"`` for one that would come from the Hugging Face Hub (whose version is not known
    before loading it; the records' provenance then holds the Hub fingerprints).
    """
    from .tasks import canonical_task_name, expected_files

    names: list[str] = []
    for key, value in params.items():
        if key == "task_name" or key.endswith("_task_name"):
            names += [value] if isinstance(value, str) else []
        elif key == "tasks" and isinstance(value, (list, tuple)):
            names += [v for v in value if isinstance(v, str)]
    data_dir = params.get("data_dir") or os.environ.get("MPSTUDY_DATA")
    out: dict[str, Any] = {}
    for name in sorted(set(names)):
        key = canonical_task_name(name)
        files = expected_files(key) + _TEST_FILES.get(key, [])
        if not files:
            out[key] = "synthetic"
        elif data_dir:
            out[key] = file_checksums(data_dir, files)
        else:
            out[key] = "hub"
    return out


def study_fingerprint(notebook: Path, params: dict[str, Any], profile: str | None = None,
                      data: dict[str, Any] | None = None) -> str:
    """Hash of what a study's output depends on: the notebook's cells, ``params`` (after the profile
    is applied), the profile name (default ``params["profile"]``), the data files' checksums
    (default :func:`study_data` of ``params``), the library's code (:func:`mpstudy.cache.code_version`)
    and the torch/transformers/Python versions."""
    return hashlib.sha256(json.dumps(_fingerprint_parts(Path(notebook), params, profile, data), sort_keys=True,
                                     default=str).encode()).hexdigest()


def _fingerprint_parts(notebook: Path, params: dict[str, Any], profile: str | None, data: dict[str, Any] | None):
    return {"notebook": _notebook_digest(notebook), "parameters": params,
            "profile": profile if profile is not None else params.get("profile"),
            "data": data if data is not None else study_data(params), "code": code_version(),
            "versions": library_versions()}


def _read_page(page: Path) -> dict[str, Any]:
    try:
        return json.loads(page.read_text())
    except (OSError, ValueError):
        return {}


def page_fingerprint(page: str | os.PathLike) -> str | None:
    """The fingerprint an executed page records (``metadata.mpstudy.fingerprint``), if any."""
    return ((_read_page(Path(page)).get("metadata") or {}).get("mpstudy") or {}).get("fingerprint")


def page_profile(page: str | os.PathLike, results_dir: str | os.PathLike | None = None) -> str | None:
    """The profile whose results an executed page holds: its papermill parameters
    (``metadata.papermill.parameters.profile``), else its ``metadata.mpstudy.profile``, else the newest
    run stamp in ``results_dir/runs`` whose output is this page; None if nothing says."""
    page = Path(page)
    metadata = _read_page(page).get("metadata") or {}
    profile = ((metadata.get("papermill") or {}).get("parameters") or {}).get("profile")
    profile = profile or (metadata.get("mpstudy") or {}).get("profile")
    if profile or results_dir is None:
        return profile
    stamps = []
    for path in (Path(results_dir) / "runs").glob(f"{page.stem}-*.json"):
        stamp = _read_page(path)
        if stamp.get("output") == str(page) and stamp.get("profile"):
            stamps.append((stamp.get("time_utc") or "", stamp["profile"]))
    return max(stamps)[1] if stamps else None


def _record_checksums(results_dir: Path, stem: str, since: float | None = None) -> dict[str, str]:
    """``{file name: sha256}`` of the study's records (those modified at or after ``since``, if given)."""
    folder = results_dir / stem
    if not folder.is_dir():
        return {}
    return {p.name: file_sha256(p) for p in sorted(folder.glob("*.json"))
            if not p.name.startswith(".") and (since is None or p.stat().st_mtime >= since)}


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


@dataclass
class StudyPlan:
    """One study run, checked and ready: what :func:`plan_study` returns and :func:`execute_plan` runs.

    ``params`` are the profile's values with the overrides, checked against the notebook's declared
    names and types; ``data`` the checksums of the data files they read (:func:`study_data`).
    """

    notebook: Path
    profile: str
    params: dict[str, Any]
    output: Path
    results_dir: Path
    data: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    parts: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)  # the notebook's own values, where they are literals

    @property
    def stamp_path(self) -> Path:
        return self.results_dir / "runs" / f"{self.notebook.stem}-{self.profile}.json"


def plan_study(
    notebook: str | os.PathLike,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    output_dir: str | os.PathLike | None = None,
    results_dir: str | os.PathLike | None = None,
    replace_profile: bool = False,
) -> StudyPlan:
    """Check everything about a run of ``notebook`` that can be checked before it starts.

    ``profile`` None is smoke. ``output_dir`` / ``results_dir`` None are the profile's
    :func:`default_dirs` (smoke: the scratch folder). Raises one ``ValueError`` line for an unknown
    parameter, a value of the wrong type (the notebook's annotations), or an output page that holds
    another profile's results (unless ``replace_profile``); ``FileNotFoundError`` for no notebook.
    """
    notebook = Path(notebook)
    if notebook.suffix != ".ipynb" or not notebook.is_file():
        raise FileNotFoundError(f"no notebook at {notebook} (expected an existing .ipynb file)")
    profile = profile or "smoke"
    default_out, default_results = default_dirs(profile)
    output_dir = Path(output_dir) if output_dir is not None else default_out
    results_dir = Path(results_dir) if results_dir is not None else default_results
    declared = declared_parameters(notebook)
    params = get_profile(profile, notebook.stem)
    params.update(overrides or {})
    if "results_dir" in declared:
        params["results_dir"] = str(results_dir)  # relative to the kernel's cwd, which is ours
    params = check_parameters(notebook.name, declared, params)

    output = output_dir / notebook.name
    held = page_profile(output, results_dir) if output.exists() else None
    if held is not None and held != profile and not replace_profile:
        raise ValueError(f"{output} holds the {held} profile's results; writing the {profile} profile's over it "
                         f"needs --replace-profile (or another --output-dir)")
    plan = StudyPlan(notebook, profile, params, output, results_dir, defaults=_literal_defaults(declared))
    _fingerprint_plan(plan)  # fails early on an unknown task name; computed again just before running
    return plan


def _fingerprint_plan(plan: StudyPlan) -> None:
    """Fill ``plan.data``, ``plan.parts`` and ``plan.fingerprint`` from the files as they are now.

    A study of :data:`mpstudy.profiles.READS_RECORDS` (the ledger) reads the other studies' records:
    their checksums are its data, so it is stale as soon as any study it judges re-ran.
    """
    data = study_data({**plan.defaults, **plan.params})  # a task the notebook names by default is read too
    if plan.notebook.stem in READS_RECORDS:
        folders = sorted(p.name for p in plan.results_dir.glob("[0-9]*") if p.is_dir() and p.name != plan.notebook.stem)
        data["records"] = {name: _record_checksums(plan.results_dir, name) for name in folders}
    plan.data = data
    plan.parts = _fingerprint_parts(plan.notebook, plan.params, plan.profile, data)
    plan.fingerprint = hashlib.sha256(json.dumps(plan.parts, sort_keys=True, default=str).encode()).hexdigest()


def _literal_defaults(declared) -> dict[str, Any]:
    """The declared parameters' default values that are Python literals (the others are left out)."""
    import ast

    out = {}
    for name, d in declared.items():
        try:
            out[name] = ast.literal_eval(d.default)
        except (ValueError, SyntaxError):
            continue
    return out


def _up_to_date(plan: StudyPlan) -> str | None:
    """Why ``plan`` must run (None: its page, stamp and records all come from this fingerprint)."""
    if not plan.output.exists():
        return "no output page"
    if not plan.stamp_path.exists():
        return "no run stamp"
    stamp = _read_page(plan.stamp_path)
    if stamp.get("fingerprint") != plan.fingerprint or stamp.get("output") != str(plan.output):
        return "parameters, data, code or versions changed"
    if page_fingerprint(plan.output) != plan.fingerprint or page_profile(plan.output) not in (None, plan.profile):
        return "the page holds another run's results"
    if any(_record_checksums(plan.results_dir, plan.notebook.stem).get(name) != sha
           for name, sha in (stamp.get("records") or {}).items()):
        return "its records changed"
    return None


def execute_plan(plan: StudyPlan, force: bool = False, log=print) -> dict[str, Any]:
    """Run a checked :class:`StudyPlan` (or skip it when up to date, unless ``force``); see :func:`run_study`."""
    import nbformat
    import papermill

    notebook, output, results_dir, stem = plan.notebook, plan.output, plan.results_dir, plan.notebook.stem
    # One run of a study per output folder at a time: the lock (released by the OS even on SIGKILL) makes
    # removing a killed run's leftovers safe, and refuses a second run that would race on the same files.
    with _study_lock(output.parent, stem):
        _remove_leftovers(stem, output.parent, results_dir)  # of a killed earlier run
        _fingerprint_plan(plan)  # now: data files or earlier studies' records may have changed since planning
        reason = "forced" if force else _up_to_date(plan)
        if reason is None:
            log(f"{notebook.name} [{plan.profile}]: up to date, skipped")
            return {**_read_page(plan.stamp_path), "status": "skipped"}

        log(f"{notebook.name} [{plan.profile}]: running ({reason}) with {json.dumps(plan.params, default=str)}")
        start, since = time.perf_counter(), time.time() - 2.0
        try:
            with atomic_file(output) as tmp:
                # The notebook's own output (progress bars of long runs) streams to this terminal's stderr.
                papermill.execute_notebook(str(notebook), str(tmp), parameters=plan.params, kernel_name="python3",
                                           progress_bar=False, cwd=str(Path.cwd()), log_output=True,
                                           stdout_file=sys.stderr, stderr_file=sys.stderr)
                page = nbformat.read(str(tmp), as_version=4)  # the page says which run it holds
                page.metadata["mpstudy"] = {"profile": plan.profile, "fingerprint": plan.fingerprint, "data": plan.data}
                if plan.profile != "smoke":  # a page for the book: the "what ran" box, the smoke defaults removed
                    units = coverage(stem, results_dir)
                    dress_page(page, run_box(stem, plan.profile, plan.params, provenance(), time.perf_counter() - start,
                                             units if units["planned"] else None))
                nbformat.write(page, str(tmp))
        except papermill.PapermillExecutionError as err:
            if err.ename != "TimeUp":
                raise
            # the campaign's time box (mpstudy.campaign): finished units are recorded, the page is not replaced
            seconds = round(time.perf_counter() - start, 1)
            log(f"{notebook.name} [{plan.profile}]: stopped by the time box after {seconds} s ({err.evalue}); "
                f"{output} kept as it was")
            return {"notebook": str(notebook), "profile": plan.profile, "status": "time-up", "seconds": seconds}
        stamp = {"notebook": str(notebook), "profile": plan.profile, "parameters": plan.params,
                 "fingerprint": plan.fingerprint, "fingerprint_parts": {k: v for k, v in plan.parts.items() if k != "parameters"},
                 "output": str(output), "records": _record_checksums(results_dir, stem, since),
                 "seconds": round(time.perf_counter() - start, 1), **provenance()}
        write_json_atomic(plan.stamp_path, stamp)
        log(f"{notebook.name} [{plan.profile}]: done in {stamp['seconds']} s -> {output}")
        return {**stamp, "status": "ran"}


def run_study(
    notebook: str | os.PathLike,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    output_dir: str | os.PathLike | None = None,
    results_dir: str | os.PathLike | None = None,
    force: bool = False,
    replace_profile: bool = False,
    log=print,
) -> dict[str, Any]:
    """Execute ``notebook`` under ``profile`` (None: smoke) into ``output_dir/<name>.ipynb``.

    Parameters are the profile's values for this study updated with ``overrides``; every name
    must be one the notebook's ``parameters`` cell declares, and every value of its declared type
    (:mod:`mpstudy.parameters`). ``output_dir``/``results_dir`` default to :func:`default_dirs`: a
    scratch folder for smoke, ``book/studies`` and ``results`` otherwise. A page holding another
    profile's results is not overwritten unless ``replace_profile``.

    A stamp in ``results_dir/runs/<name>-<profile>.json`` records the fingerprint
    (:func:`study_fingerprint`), which the page also carries (``metadata.mpstudy``), and the
    checksums of the records the run wrote. When page, stamp and records all match the current
    fingerprint, the study is skipped (``force=True`` runs it anyway). The page is written atomically.

    Returns the stamp (with ``status``: ``"ran"`` or ``"skipped"``).
    """
    plan = plan_study(notebook, profile, overrides, output_dir, results_dir, replace_profile)
    return execute_plan(plan, force=force, log=log)


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
                           "MPSTUDY_RESULTS": f"{tmp}/results", **REPRODUCIBLE_FLOAT_ENV})
        try:
            NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}}).execute()
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
    with atomic_file(notebook) as tmp:
        nbformat.write(nb, str(tmp))
    return notebook


def reproduce(profile: str | None = None, notebooks_dir: str | os.PathLike = "notebooks", overrides: dict[str, Any] | None = None,
              output_dir: str | os.PathLike | None = None, results_dir: str | os.PathLike | None = None, force: bool = False,
              replace_profile: bool = False, log=print, hours: float | None = None) -> list[dict[str, Any]]:
    """Run every study notebook (``NN_*.ipynb``, in name order); up-to-date studies are skipped.

    ``hours``: a time box for the campaign (:func:`mpstudy.runner.time_box`): no unit starts after it, and a study
    stopped by it keeps its finished unit records and its old page (status ``"time-up"``); the
    studies after it are ``"not started"``. A later call continues from the records.

    Every study is planned first (:func:`plan_study`: names and types of its parameters, the page it
    would replace), so a bad parameter of the last study stops the run before the first one starts.
    ``overrides`` go to every study that declares them (``data_dir``).
    """
    notebooks = sorted(Path(notebooks_dir).glob("[0-9]*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no study notebooks (NN_*.ipynb) in {notebooks_dir}")
    plans = []
    for nb in notebooks:
        declared = declared_parameters(nb)
        given = {k: v for k, v in (overrides or {}).items() if k in declared}
        plans.append(plan_study(nb, profile, given, output_dir, results_dir, replace_profile))
    with time_box(hours):
        stamps = []
        for plan in plans:
            left = remaining_seconds()
            if left is not None and left <= 0:
                log(f"{plan.notebook.name} [{plan.profile}]: not started, the time box is spent")
                stamps.append({"notebook": str(plan.notebook), "profile": plan.profile, "status": "not started", "seconds": 0.0})
                continue
            stamps.append(execute_plan(plan, force=force, log=log))
        return stamps


@contextlib.contextmanager
def time_box(hours: float | None):
    """Within the block, ``$MPSTUDY_DEADLINE`` is now + ``hours`` (inherited by the notebooks' kernels), so
    :func:`mpstudy.campaign.unit` starts no unit after it; ``None``: no time box (an outer one is kept)."""
    if hours is None:
        yield
        return
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not hours > 0 or hours != hours:
        raise ValueError(f"hours must be a positive number of hours, got {hours!r}")
    before = os.environ.get("MPSTUDY_DEADLINE")
    os.environ["MPSTUDY_DEADLINE"] = f"{time.time() + hours * 3600:.0f}"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MPSTUDY_DEADLINE", None)
        else:
            os.environ["MPSTUDY_DEADLINE"] = before


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
