"""The campaign: studies at credible scale, run unit by unit over many sessions and machines.

A study at the ``cpu`` profile takes hours, more than one working session. Its expensive steps
(one dense fine-tuning, one compressed model's recovery for one seed...) are **units**: a notebook
asks for a unit's result with :func:`unit`, which returns the unit's committed record from
``results/<study>/units/<name>.json`` when one exists for the same spec, and otherwise computes it,
stamps it (code version, commit, versions, CPU and wall seconds) and writes it atomically. The
records are small JSON files reviewed and committed like code, so an interrupted campaign, another
session or another machine continues where the last one stopped, and a page re-executed later reads
the records instead of recomputing them.

Records versus caches: a cache entry (:mod:`mpstudy.cache`) is keyed on everything that produced it,
the library's code included, and is thrown away when anything changes. A unit record is a result
under review; it is identified by its **spec** (what the unit computes: model, task rows, method,
budget, seed, training settings), and it *states* the code version that produced it rather than
being keyed on it, so a comment or a refactoring elsewhere in the library does not throw away
CPU-hours of results. :func:`coverage` reports the code versions behind a study's records, and
``MPSTUDY_RERUN_STALE=1`` recomputes every record whose code version differs from today's.

The time box: ``mpstudy reproduce --hours H`` sets ``MPSTUDY_DEADLINE`` (Unix time) for the studies
it runs; :func:`unit` starts no unit once the deadline has passed, or when the unit's estimated
duration (``estimate_s``) does not fit before it, and raises :class:`TimeUp`, which ends the notebook
without writing its page (the committed page stays) while every finished unit is kept.

Planned units: a notebook declares the units it will ask for (:func:`declare`) before it runs any, so
:func:`coverage` can say "units done of units planned" for a study whose run was cut short; a page
whose grid is incomplete shows :func:`coverage_note` instead of a finding.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .cache import code_version, library_versions
from .records import provenance, write_json_atomic

__all__ = ["TimeUp", "deadline", "remaining_seconds", "spec_key", "unit_path", "unit", "read_unit", "declare",
           "coverage", "coverage_note", "coverage_table", "is_stale", "Lazy"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,150}$")


class TimeUp(RuntimeError):
    """The campaign's time box (``MPSTUDY_DEADLINE``) leaves no room for the next unit; finished units are kept."""


# --------------------------------------------------------------------------- the time box


def deadline() -> float | None:
    """The campaign's deadline (Unix time) from ``$MPSTUDY_DEADLINE``, or None (no time box)."""
    text = os.environ.get("MPSTUDY_DEADLINE")
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"MPSTUDY_DEADLINE must be a Unix time in seconds, got {text!r}") from None


def remaining_seconds() -> float | None:
    """Seconds left before the deadline (negative once passed), or None without a time box."""
    end = deadline()
    return None if end is None else end - time.time()


# --------------------------------------------------------------------------- records


def _results_root(results_dir: str | os.PathLike | None) -> Path:
    return Path(results_dir or os.environ.get("MPSTUDY_RESULTS", "results"))


def spec_key(spec: Any) -> str:
    """16 hex digits of sha256 over the spec as canonical JSON (sorted keys): a record's identity."""
    blob = json.dumps(spec, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_names(study: str, name: str) -> None:
    for what, value in (("study", study), ("unit name", name)):
        if not isinstance(value, str) or not _NAME.match(value):
            raise ValueError(f"{what} must be a plain file name of letters, digits and ._=+- (at most 151 characters), "
                             f"got {value!r}")


def unit_path(study: str, name: str, results_dir: str | os.PathLike | None = None) -> Path:
    """``<results_dir>/<study>/units/<name>.json`` (results_dir: ``$MPSTUDY_RESULTS``, else ``results``)."""
    _check_names(study, name)
    return _results_root(results_dir) / study / "units" / f"{name}.json"


def read_unit(study: str, name: str, spec: Any = None, results_dir: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The unit's record if one exists (and, when ``spec`` is given, holds that spec), else None.

    A record of another spec under the same name is not this unit's result: it is ignored here and
    replaced when the unit runs. A record that does not parse raises, naming the file.
    """
    path = unit_path(study, name, results_dir)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not a unit record ({err}); delete it to recompute the unit") from None
    if spec is not None and record.get("spec_key") != spec_key(spec):
        return None
    return record


def is_stale(record: Mapping[str, Any]) -> bool:
    """Whether a record is to be recomputed: ``MPSTUDY_RERUN_STALE=1`` and another code version made it."""
    return os.environ.get("MPSTUDY_RERUN_STALE") == "1" and record.get("code_version") != code_version()


def _cpu_seconds() -> float:
    t = os.times()  # this process and its waited-for children (worker processes of a pool)
    return t.user + t.system + t.children_user + t.children_system


def unit(study: str, name: str, spec: Any, compute: Callable[[], Mapping[str, Any]], *,
         results_dir: str | os.PathLike | None = None, estimate_s: float | None = None) -> dict[str, Any]:
    """The result of one campaign unit: its committed record, or computed now and recorded.

    Args:
        study: the study's name (the notebook stem, e.g. ``"00_offline_svd"``).
        name: the unit's file name within the study (``"dense-sst2-seed0"``).
        spec: what the unit computes, as JSON-able data; a record is reused only for the same spec.
        compute: called with no argument when there is no record; returns the unit's result, a
            JSON-able mapping (scores, counts, per-example predictions for intervals...).
        results_dir: where records live (default ``$MPSTUDY_RESULTS``, else ``results``).
        estimate_s: the unit's expected wall time; under a time box (``MPSTUDY_DEADLINE``) a unit
            that would not finish before the deadline is not started.

    Returns:
        The record, a dict of ``result`` (what ``compute`` returned) and ``study``, ``unit``, ``spec``,
        ``spec_key``, ``code_version``, ``versions``, ``wall_seconds``, ``cpu_seconds`` and
        ``provenance`` (commit, machine, threads, time).

    Raises:
        TimeUp: no record, and the time box leaves no room to compute one.
    """
    path = unit_path(study, name, results_dir)
    record = read_unit(study, name, spec, results_dir)
    if record is not None and not is_stale(record):
        return record
    left = remaining_seconds()
    if left is not None and (left <= 0 or (estimate_s is not None and estimate_s > left)):
        need = f" (needs about {estimate_s:.0f} s)" if estimate_s is not None else ""
        raise TimeUp(f"the campaign's time box ends in {max(left, 0):.0f} s: unit {study}/{name} not started{need}; "
                     "re-run to continue from the recorded units")
    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    result = compute()
    if not isinstance(result, Mapping):
        raise TypeError(f"unit {study}/{name}: compute() must return a mapping (the record's result), "
                        f"got {type(result).__name__}")
    record = {"study": study, "unit": name, "spec": spec, "spec_key": spec_key(spec), "result": dict(result),
              "code_version": code_version(), "versions": library_versions(),
              "wall_seconds": round(time.perf_counter() - wall0, 2), "cpu_seconds": round(_cpu_seconds() - cpu0, 2),
              "provenance": provenance()}
    write_json_atomic(path, record)
    return json.loads(path.read_text())  # exactly what a later run will read (JSON types, not tuples)


class Lazy:
    """A value computed on first use only: the dense model a study's units start from is trained (or
    loaded from the cache) only if some unit has no record yet. ``dense = Lazy(lambda: ...); dense()``."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make, self._done, self._value = make, False, None

    def __call__(self) -> Any:
        if not self._done:
            self._value, self._done = self._make(), True
        return self._value

    @property
    def made(self) -> bool:
        """Whether the value has been computed."""
        return self._done


# --------------------------------------------------------------------------- the plan and its coverage


def _plan_path(study: str, results_dir: str | os.PathLike | None) -> Path:
    return unit_path(study, "plan", results_dir).with_name("_plan.json")


def declare(study: str, names: Iterable[str], results_dir: str | os.PathLike | None = None,
            profile: str | None = None) -> Path:
    """Record the units a study's run will ask for (before it runs any), for :func:`coverage`."""
    names = list(dict.fromkeys(names))
    for n in names:
        _check_names(study, n)
    return write_json_atomic(_plan_path(study, results_dir), {"study": study, "profile": profile, "units": names})


def coverage(study: str, results_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Units done of units planned for a study, with the CPU and wall seconds of the done ones and
    the code versions that produced them.

    Returns ``{"study", "planned", "done", "missing" (names), "complete", "cpu_hours",
    "wall_hours", "code_versions" ({version: count})}``; ``planned`` is None when the study never
    declared its plan (not started).
    """
    plan_file = _plan_path(study, results_dir)
    planned = json.loads(plan_file.read_text())["units"] if plan_file.is_file() else None
    folder = plan_file.parent
    records = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name == plan_file.name:
            continue
        try:
            records[path.stem] = json.loads(path.read_text())
        except ValueError as err:
            raise ValueError(f"{path}: not a unit record ({err})") from None
    names = planned if planned is not None else sorted(records)
    done = [n for n in names if n in records]
    versions: dict[str, int] = {}
    for n in done:
        v = records[n].get("code_version", "?")
        versions[v] = versions.get(v, 0) + 1
    return {"study": study, "planned": None if planned is None else len(planned), "done": len(done),
            "missing": [n for n in names if n not in records],
            "complete": planned is not None and len(done) == len(planned),
            "cpu_hours": round(sum(records[n].get("cpu_seconds", 0.0) for n in done) / 3600, 3),
            "wall_hours": round(sum(records[n].get("wall_seconds", 0.0) for n in done) / 3600, 3),
            "code_versions": versions}


def coverage_note(study: str, results_dir: str | os.PathLike | None = None) -> str | None:
    """None when the study's planned units are all recorded; else one sentence for the page saying
    how much of the grid exists, so a partial grid is never presented as the finding."""
    cov = coverage(study, results_dir)
    if cov["complete"]:
        return None
    if cov["planned"] is None:
        return f"Study {study} has not started at this scale: no unit is recorded yet."
    return (f"Incomplete: {cov['done']} of {cov['planned']} units of study {study} are recorded "
            f"({cov['cpu_hours']:.2f} CPU-hours so far). The tables below show what exists; "
            "no finding is drawn until the grid is complete.")


def coverage_table(results_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """:func:`coverage` of every study that has a ``units/`` folder under ``results_dir``, by study name."""
    root = _results_root(results_dir)
    studies = sorted(p.parent.name for p in root.glob("*/units") if p.is_dir()) if root.is_dir() else []
    return [coverage(s, results_dir) for s in studies]
