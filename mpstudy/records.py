"""Results records: one JSON file per run, written atomically, with provenance."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["write_text_atomic", "write_json_atomic", "write_record", "read_records", "provenance", "file_sha256", "git_commit"]


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON to ``path`` atomically (:func:`write_text_atomic`). The text is built before the
    file is opened, so data that cannot be serialized leaves no file behind."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def git_commit(root: str | os.PathLike | None = None) -> str | None:
    """The checkout's commit (with ``-dirty`` if it has uncommitted changes), or None outside git."""
    root = Path(root or Path(__file__).resolve().parent.parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def provenance(**extra: Any) -> dict[str, Any]:
    """Who/what/when of a result: git commit, library versions, machine, time (UTC), plus ``extra``."""
    import torch
    import transformers

    return {
        "git_commit": git_commit(),
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus" + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
        "torch_threads": torch.get_num_threads(),
        **extra,
    }


def write_record(results_dir: str | os.PathLike, study: str, name: str, record: dict[str, Any]) -> Path:
    """Store one run's record as ``<results_dir>/<study>/<name>.json`` (atomically)."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"record name must be a plain file name, got {name!r}")
    return write_json_atomic(Path(results_dir) / study / f"{name}.json", {"study": study, "name": name, **record})


def read_records(results_dir: str | os.PathLike, study: str) -> list[dict[str, Any]]:
    """All records of a study, sorted by name."""
    folder = Path(results_dir) / study
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
