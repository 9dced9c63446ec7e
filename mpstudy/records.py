"""Results records: one JSON file per run, written atomically, with provenance; and the one way
mpstudy writes any artefact atomically (:func:`atomic_file`, :func:`atomic_directory`).

Every save format of the library goes through the two context managers here: the saved compressed
and pruned models, the module variants, the fine-tuned baseline and teacher-output caches, the
comparison's unit cache, the executed notebooks, stamps and records.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["atomic_file", "atomic_directory", "remove_leftovers", "write_text_atomic", "write_json_atomic",
           "write_json_and_markdown",
           "write_record", "read_records", "provenance", "file_sha256", "git_commit"]


# --------------------------------------------------------------------------- atomic writes

#: this machine, as it appears in temporary names (a run on another machine sharing the folder is never judged dead)
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40] or "host"
#: temporary paths the atomic writers of this process are using now (its pid alone does not say:
#: in a container, a killed run's pid is often the pid of the next run)
_ACTIVE: set[str] = set()
_ACTIVE_LOCK = threading.Lock()


def _sibling(path: Path, kind: str) -> Path:
    """A hidden sibling of ``path`` naming its writer: ``.<name>.<kind>-<host>-<pid>-<random><suffix>``.

    ``kind`` is ``tmp`` (the new artefact being written, or the old one being deleted) or ``old``
    (the old artefact moved aside, only where atomic exchange is unavailable). The name keeps the
    target's suffix so tools that look at it (papermill: ``.ipynb``) are content.
    """
    return path.with_name(f".{path.name}.{kind}-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")


def _leftover_pattern(path: Path) -> re.Pattern:
    return re.compile(re.escape(f".{path.name}.") + r"(tmp|old)-([A-Za-z0-9]+)-(\d+)-[0-9a-f]+" + re.escape(path.suffix) + "$")


def _writer_alive(host: str, pid: int, sibling: Path) -> bool:
    """Whether the run that made ``sibling`` may still be writing it (when unsure: yes)."""
    if host != _HOST or os.name != "posix":
        return True  # another machine's process: its pid means nothing here (Windows: os.kill would kill it)
    if pid == os.getpid():
        with _ACTIVE_LOCK:
            return str(sibling) in _ACTIVE
    return pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine exists (when unsure, e.g. not POSIX: yes)."""
    if os.name != "posix":
        return True  # os.kill(pid, 0) would kill it on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def _registered(*paths: Path) -> Iterator[None]:
    with _ACTIVE_LOCK:
        _ACTIVE.update(map(str, paths))
    try:
        yield
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.difference_update(map(str, paths))


def remove_leftovers(path: str | os.PathLike) -> list[Path]:
    """Clean what killed writes of ``path`` left beside it; returns the siblings removed or restored.

    Only siblings named by :func:`atomic_file` / :func:`atomic_directory` for this very target are
    considered, and only those whose writer is dead: a process of this machine that no longer
    exists (or this process, when it is not using the path). A live run's temporaries, and any
    written from another machine, are left alone. A ``tmp`` sibling is a half-written new artefact
    or an old one being deleted: it is removed. An ``old`` sibling is the old artefact moved aside
    by the non-exchanging fallback: if the target is missing (the writer died between the two
    renames) the newest such sibling is renamed back into place, the rest are removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = _leftover_pattern(path)
    dead: list[tuple[str, Path]] = []
    with os.scandir(path.parent) as entries:
        for entry in entries:
            match = pattern.match(entry.name)
            if match and not _writer_alive(match.group(2), int(match.group(3)), Path(entry.path)):
                dead.append((match.group(1), Path(entry.path)))
    olds = sorted((p for kind, p in dead if kind == "old"), key=lambda p: p.lstat().st_mtime, reverse=True)
    if olds and not os.path.lexists(path):
        with contextlib.suppress(OSError):  # a live writer may have put a new one in place meanwhile
            os.rename(olds[0], path)
    for _, sibling in dead:
        _remove(sibling)
    return [p for _, p in dead]


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where
    the system or the file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:  # glibc < 2.28
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):  # not supported here
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap_in(new: Path, target: Path) -> None:
    """Put directory ``new`` at ``target``; whatever was at ``target`` ends up at ``new`` or is removed."""
    if not os.path.lexists(target):
        try:
            os.rename(new, target)
            return
        except OSError as err:  # another writer put one in place meanwhile: replace it like any other
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    if _exchange(new, target):
        return
    old = _sibling(target, "old")
    with _registered(old):
        os.rename(target, old)  # from here until the next rename, target is missing: see remove_leftovers
        try:
            os.rename(new, target)
        except BaseException:
            os.rename(old, target)
            raise
        _remove(old)


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (``/proc/self/status``);
    elsewhere set and restored at once (``os.umask`` has no read-only form)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _publish_modes(root: Path) -> None:
    """Give ``root`` (and, for a directory, everything in it) the modes the user's umask gives new files
    and folders (0644 / 0755 under umask 022), before the rename publishes it: some writers make private
    files (safetensors writes 0600; ``tempfile`` makes 0600 files and 0700 folders) that other users of a
    shared results or cache folder could not read. Executable files stay executable."""
    mask = _umask()
    for p in [root, *(root.rglob("*") if root.is_dir() else ())]:
        if p.is_symlink():
            continue
        mode = p.stat().st_mode
        want = (0o777 if p.is_dir() or mode & 0o111 else 0o666) & ~mask
        if mode & 0o777 != want:
            os.chmod(p, want)


def _refuse_foreign(path: Path, marker: str | None, kind: str) -> None:
    if path.is_symlink():
        raise FileExistsError(f"{path} is a symbolic link, not {kind}; refusing to overwrite it")
    if path.exists() and (not path.is_dir() or (marker is not None and any(path.iterdir())
                                                 and not (path / marker).exists())):
        raise FileExistsError(f"{path} exists and is not {kind}; refusing to overwrite it")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, marker: str | None = None,
                     kind: str = "a directory mpstudy wrote") -> Iterator[Path]:
    """Write a directory at ``path`` all at once: yields an empty hidden sibling to fill; on a clean
    exit it replaces ``path``; on an exception nothing at ``path`` changes.

    What holds: a process killed at any moment (SIGKILL included) leaves ``path`` holding the old
    directory (or nothing, if there was none) or the complete new one, never a mix. Why: the new
    directory is written under another name in the same folder, then swapped in by a single
    ``renameat2(RENAME_EXCHANGE)`` (Linux), which exchanges the two names atomically; the old one
    then sits under the temporary name and is deleted. Where exchange is unavailable (another OS,
    a file system without it), the old directory is renamed aside (``.<name>.old-...``) and the new
    one renamed in: a kill between those two renames leaves ``path`` missing with the complete old
    directory beside it, which :func:`remove_leftovers` (run on entry here, and so by the next save
    of the same target) renames back. What does not hold: durability across a power loss (nothing
    is fsynced), and exclusion of a concurrent writer (the last one to finish wins, each complete).

    Leftovers of killed earlier writes of the same target are removed on entry
    (:func:`remove_leftovers`); a live run's temporaries are never touched.

    Args:
        path: the directory to (re)place; its parent is created.
        marker: a file name that marks a directory of the expected kind: an existing non-empty
            ``path`` without it is refused (``FileExistsError``, before anything is written), and
            the new directory must contain it (so it can be replaced next time).
        kind: what such a directory is, for the refusal (``"a saved mpstudy model"``).

    Yields:
        The temporary directory (``Path``) to write into.
    """
    path = Path(path)
    _refuse_foreign(path, marker, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    tmp = _sibling(path, "tmp")
    with _registered(tmp):
        try:
            tmp.mkdir()
            yield tmp
            if marker is not None and not (tmp / marker).is_file():
                raise FileNotFoundError(f"the new {path.name} has no {marker}, so it would not be {kind}; "
                                        f"{path} is left as it was")
            _refuse_foreign(path, marker, kind)  # again: something may have appeared meanwhile
            _publish_modes(tmp)
            _swap_in(tmp, path)
        finally:
            _remove(tmp)  # the half-written new directory, or (after an exchange) the old one


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Write a file at ``path`` all at once: yields a hidden sibling path to write (not yet created);
    on a clean exit it is renamed over ``path`` (``os.replace``, atomic on POSIX for files), on an
    exception it is removed and ``path`` is unchanged.

    A kill at any moment leaves the old file or the new one at ``path`` (readers never see half a
    file); leftovers of killed writes of the same target are removed on entry
    (:func:`remove_leftovers`), never a live run's. Not durable across a power loss (no fsync).
    An existing directory at ``path`` is refused (``IsADirectoryError``).
    """
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        raise IsADirectoryError(f"{path} is a directory; refusing to overwrite it with a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    tmp = _sibling(path, "tmp")
    with _registered(tmp):
        try:
            yield tmp
            if not tmp.is_file():
                raise FileNotFoundError(f"nothing was written to {tmp.name}; {path} is left as it was")
            _publish_modes(tmp)
            os.replace(tmp, path)
        finally:
            _remove(tmp)


# --------------------------------------------------------------------------- records


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_file`: readers never see half a file."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return path


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON to ``path`` atomically (:func:`write_text_atomic`). The text is built before the
    file is opened, so data that cannot be serialized leaves no file behind."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")


def write_json_and_markdown(path: str | os.PathLike, record: Any, markdown: str) -> Path:
    """A record as ``path`` (JSON) and its rendered table beside it (``path`` with ``.md``), each
    written atomically. Render the markdown before calling, so a record that cannot be rendered
    writes nothing."""
    path = Path(path)
    write_json_atomic(path, record)
    write_text_atomic(path.with_suffix(".md"), markdown)
    return path


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
