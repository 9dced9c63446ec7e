"""Independent units of work on any executor, sharing one on-disk cache: a grid.

A *unit* is a spec and a function. The spec is plain, picklable data (JSON-able values: no tensors,
no models; large inputs such as Fisher weights are files in the cache, named in the spec by path and
sha256, see :func:`tensor_file`); the function is a module-level one (importable on the worker) that
turns a spec into a JSON-able result. :func:`run_units` sends the units not yet cached to any
``concurrent.futures.Executor``:

* a local process pool (the default with ``workers > 1``, :func:`local_pool`);
* a Dask cluster: ``distributed.Client(address).get_executor()``;
* SLURM through ``submitit.AutoExecutor(folder)`` (one job per unit; :func:`as_executor`), or any other.

The worker itself reads and writes the unit's cache file (:func:`cached_unit`), under one lock per
unit (:class:`UnitLock`, a lock file beside the cache file), so workers on several machines that
share a file system compute every unit once, and an interrupted grid resumes where it stopped.
Each worker picks its own device (:func:`worker_device`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, Future, as_completed
from pathlib import Path
from typing import Any

from .records import atomic_file, pid_alive, write_text_atomic

__all__ = ["UnitLock", "cached_unit", "run_units", "as_executor", "local_pool", "worker_index", "check_device",
           "worker_device", "tensor_file", "load_tensor_file", "WORKER_INDEX_ENV"]

#: set in each process of :func:`local_pool` to its slot (0, 1, ...): the GPU it takes when there are several
WORKER_INDEX_ENV = "MPSTUDY_WORKER_INDEX"
#: this machine, as lock files name it (a holder on another machine is never judged by its pid)
_HOST = socket.gethostname()
#: tokens of the locks this process holds now (a lock naming this pid but no held token is a dead
#: run's: in a container, the pid of a killed run is often the pid of the next one)
_HELD: set[str] = set()
_HELD_LOCK = threading.Lock()
#: seconds an unreadable lock file is trusted (only a hand-made or non-atomic one is unreadable)
_UNREADABLE_GRACE = 30.0


# --------------------------------------------------------------------------- one lock per unit


class UnitLock:
    """An exclusive lock on one unit of a shared cache: the file ``<unit file>.lock`` beside it.

    Taken by hard-linking a fully written file that names the holder (``host``, ``pid``, a random
    ``token``, ``since``) to the lock's name: ``link`` fails when the name exists, atomically (also
    on NFS), and a reader never sees a half-written holder. A dead holder's lock is broken: a
    process of this machine that no longer exists, or this very process when it does not hold that
    lock (a killed run whose pid came back). A holder on another machine is trusted, unless
    ``stale_after`` seconds have passed since it took the lock. Breaking renames the lock aside and
    checks it moved the holder it judged dead; in the worst race two workers compute the same unit,
    and its cache file, written atomically, is whole either way.

    Args:
        target: the unit's cache file (the lock is ``<target>.lock``).
        wait: block until the lock is free (polling every ``poll`` seconds); ``False``: give up at
            once when a live holder has it (then ``held`` is False).
        timeout: with ``wait``, raise ``TimeoutError`` after this many seconds (``None``: never).
        stale_after: seconds after which another machine's holder is judged dead (``None``: never).

    ``with UnitLock(path) as lock: if lock.held: ...``
    """

    def __init__(self, target: str | os.PathLike, wait: bool = True, poll: float = 0.2, timeout: float | None = None,
                 stale_after: float | None = None) -> None:
        self.target = Path(target)
        self.path = self.target.with_name(self.target.name + ".lock")
        self.wait, self.poll, self.timeout, self.stale_after = wait, poll, timeout, stale_after
        self.token = secrets.token_hex(8)
        self.held = False

    # the holder's record, as written into the lock file
    def _holder(self) -> dict[str, Any]:
        return {"host": _HOST, "pid": os.getpid(), "token": self.token, "since": time.time()}

    def _read(self, path: Path | None = None) -> dict[str, Any] | None:
        """The holder named by the lock file; ``{}`` if unreadable; ``None`` if there is no lock."""
        try:
            text = (path or self.path).read_text()
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(text)
            return holder if isinstance(holder, dict) and {"host", "pid", "token"} <= set(holder) else {}
        except ValueError:
            return {}

    def _try(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mine = self.path.with_name(f"{self.path.name}.{self.token}")
        mine.write_text(json.dumps(self._holder()))
        try:
            with _HELD_LOCK:  # registered before the link: a lock naming this pid is never judged dead while taken
                _HELD.add(self.token)
            os.link(mine, self.path)
            return True
        except FileExistsError:
            with _HELD_LOCK:
                _HELD.discard(self.token)
            return False
        finally:
            mine.unlink(missing_ok=True)

    def _dead(self, holder: dict[str, Any]) -> bool:
        if not holder:  # unreadable: only a lock not made here; trusted for a grace period
            try:
                return time.time() - self.path.stat().st_mtime > _UNREADABLE_GRACE
            except FileNotFoundError:
                return False
        if holder["host"] == _HOST:
            if holder["pid"] == os.getpid():
                with _HELD_LOCK:
                    return holder["token"] not in _HELD
            return not pid_alive(int(holder["pid"]))
        return self.stale_after is not None and time.time() - float(holder.get("since", 0)) > self.stale_after

    def _break(self, holder: dict[str, Any]) -> None:
        aside = self.path.with_name(f"{self.path.name}.broken-{self.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # released (or broken by another waiter) meanwhile
        moved = self._read(aside)
        if (moved or {}).get("token") != holder.get("token"):
            # a new holder took the lock between our reading and the rename: give it back
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
        aside.unlink(missing_ok=True)

    def acquire(self) -> bool:
        """Take the lock (see the class); returns ``held``."""
        start = time.monotonic()
        while not self._try():
            holder = self._read()
            if holder is None:
                continue  # released between our attempt and the read
            if self._dead(holder):
                self._break(holder)
                continue
            if not self.wait:
                return False
            if self.timeout is not None and time.monotonic() - start > self.timeout:
                raise TimeoutError(f"{self.path} is held by pid {holder.get('pid')} on {holder.get('host')!r}; "
                                   f"gave up after {self.timeout:g} s")
            time.sleep(self.poll)
        self.held = True
        return True

    def release(self) -> None:
        """Give the lock back (only if this object holds it: a lock broken and retaken is left alone)."""
        if self.held and (self._read() or {}).get("token") == self.token:
            self.path.unlink(missing_ok=True)
        with _HELD_LOCK:
            _HELD.discard(self.token)
        self.held = False

    def __enter__(self) -> "UnitLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# --------------------------------------------------------------------------- one unit, on a worker


def _read_result(path: Path) -> Any:
    return json.loads(path.read_text())


def cached_unit(fn: Callable[[Any], Any], spec: Any, path: str | os.PathLike, wait: bool = True,
                stale_after: float | None = None) -> Any:
    """``fn(spec)`` through the cache file ``path``: what a worker runs for one unit.

    A cached result is read back; otherwise the unit's :class:`UnitLock` is taken, the cache looked
    at again (another worker may have finished it meanwhile), ``fn(spec)`` computed and written
    atomically. The result comes back as a cached read gives it (through JSON: tuples become lists,
    numpy scalars floats; dict keys keep their order, so a resumed grid shows what a fresh one
    does). With ``wait=False`` a unit another live worker holds is skipped: ``None`` comes back
    (``fn`` must never return ``None``).
    """
    path = Path(path)
    if path.exists():
        return _read_result(path)
    with UnitLock(path, wait=wait, stale_after=stale_after) as lock:
        if not lock.held:
            return None
        if path.exists():
            return _read_result(path)
        result = fn(spec)
        if result is None:
            raise ValueError(f"{getattr(fn, '__qualname__', fn)} returned None for a unit; a unit's result is JSON "
                             "data, never None")
        text = json.dumps(result, default=float, indent=1)  # numpy scalars -> floats; key order kept
        write_text_atomic(path, text + "\n")
        return json.loads(text)  # what a cached read gives back


# --------------------------------------------------------------------------- devices and local workers


def worker_index() -> int | None:
    """This worker's slot among its machine's workers, if anything says: :data:`WORKER_INDEX_ENV` (set by
    :func:`local_pool`), a Dask worker's integer name (``LocalCluster`` names them 0, 1, ...),
    ``LOCAL_RANK`` (torchrun, accelerate) or ``SLURM_LOCALID`` (srun, submitit), in that order; else ``None``."""
    value = os.environ.get(WORKER_INDEX_ENV, "")
    if value.isdigit():
        return int(value)
    if "distributed" in sys.modules:  # only look if Dask is already running this process
        try:
            from distributed import get_worker

            name = get_worker().name
        except (ImportError, ValueError):  # not inside a Dask worker
            name = None
        if isinstance(name, int) or (isinstance(name, str) and name.isdigit()):
            return int(name)
    for var in ("LOCAL_RANK", "SLURM_LOCALID"):
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return None


def check_device(requested: Any) -> str:
    """``requested`` if it names a device a unit may ask for: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.

    Raises:
        ValueError: anything else.
    """
    if not isinstance(requested, str) or not (requested in ("auto", "cpu", "cuda")
                                              or (requested.startswith("cuda:") and requested[5:].isdigit())):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {requested!r}")
    return requested


def worker_device(requested: str = "auto") -> str:
    """The device this worker runs a unit on: ``requested`` unless it is ``"auto"``; then the CPU
    without CUDA, the only GPU when one is visible (a cluster that gives each worker its own GPU
    through ``CUDA_VISIBLE_DEVICES``, as ``dask cuda worker`` and SLURM's ``--gpus-per-task`` do),
    and with several GPUs the one of this worker's slot (:func:`worker_index`, modulo the count),
    made the current CUDA device so libraries that say ``"cuda"`` use it too.

    Raises:
        ValueError: ``requested`` is not ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    """
    if check_device(requested) != "auto":
        return requested
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    count, slot = torch.cuda.device_count(), worker_index()
    if count > 1 and slot is not None:
        torch.cuda.set_device(slot % count)
        return f"cuda:{slot % count}"
    return "cuda"


def _init_local_worker(threads: int, counter) -> None:
    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    os.environ[WORKER_INDEX_ENV] = str(slot)
    import torch

    torch.set_num_threads(threads)


def local_pool(workers: int, threads: int = 1) -> Executor:
    """A pool of ``workers`` spawned processes (``threads`` torch threads each), each told its slot
    (:data:`WORKER_INDEX_ENV`, 0 to ``workers - 1``) so that :func:`worker_device` spreads them over GPUs."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    context = get_context("spawn")  # no fork of a process that holds torch threads or CUDA
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_local_worker,
                               initargs=(threads, context.Value("i", 0)))


# --------------------------------------------------------------------------- the grid


class _JobExecutor(Executor):
    """A ``concurrent.futures.Executor`` over an object whose ``submit`` returns jobs with a blocking
    ``result()`` (submitit's executors, a Dask ``Client``): one thread waits on each job."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def submit(self, fn, /, *args, **kwargs) -> Future:
        job = self.inner.submit(fn, *args, **kwargs)
        future: Future = Future()
        future.set_running_or_notify_cancel()  # the job is queued elsewhere: it cannot be taken back from here

        def wait() -> None:
            try:
                future.set_result(job.result())
            except BaseException as err:  # noqa: BLE001  (handed to whoever reads the future)
                future.set_exception(err)

        threading.Thread(target=wait, name=f"job-{getattr(job, 'job_id', id(job))}", daemon=True).start()
        return future


def as_executor(executor: Any) -> Executor:
    """``executor`` as a ``concurrent.futures.Executor``: itself if it is one; an object whose ``submit``
    returns jobs with ``result()`` (``submitit.AutoExecutor``) wrapped (``_JobExecutor``).

    Raises:
        ValueError: anything else.
    """
    if isinstance(executor, Executor):
        return executor
    if callable(getattr(executor, "submit", None)):
        return _JobExecutor(executor)
    raise ValueError(f"executor must be a concurrent.futures.Executor or have a submit() returning jobs with "
                     f"result() (submitit), got {type(executor).__name__}")


def run_units(fn: Callable[[Any], Any], specs: Iterable[Any], keys: Iterable[str], folder: str | os.PathLike,
              executor: Executor | None = None, workers: int = 1, progress: bool = True, desc: str = "units",
              describe: Callable[[Any], str] | None = None, stale_after: float | None = None) -> list[Any]:
    """Every unit's result, in ``specs`` order: cached ones read from ``folder/<key>.json``, the rest run.

    Args:
        fn: a module-level function (workers import it by name) from a spec to a JSON-able result.
        specs: picklable specs, one per unit.
        keys: one cache key per spec (units with equal keys are one unit, computed once).
        folder: the cache folder, on a file system every worker sees.
        executor: any ``concurrent.futures.Executor``, or an object whose ``submit`` returns jobs with
            ``result()`` (``submitit.AutoExecutor``: one SLURM job per unit; see :func:`as_executor`);
            ``None``: ``workers == 1`` runs the units here, one after the other; more start a
            :func:`local_pool` (shut down at the end).
        workers: size of that default pool (refused together with an ``executor``).
        progress: show a progress bar (``desc``; ``describe(spec)`` labels the unit just finished).
        stale_after: see :class:`UnitLock` (another machine's lock older than this is broken).

    A unit another worker is computing (its lock held: another grid sharing the cache) is skipped
    while the others run, then waited for here; if its holder died meanwhile it is computed here.
    The first unit that fails stops the grid: units not started are cancelled, the error is raised.
    """
    from tqdm.auto import tqdm

    specs, keys = list(specs), [str(k) for k in keys]
    if len(specs) != len(keys):
        raise ValueError(f"{len(specs)} specs but {len(keys)} keys; give one key per spec")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    if executor is not None and workers != 1:
        raise ValueError(f"give workers={workers} or an executor, not both: an executor brings its own workers")
    if executor is not None:
        executor = as_executor(executor)
    folder = Path(folder)
    paths = [folder / f"{key}.json" for key in keys]
    results: list[Any] = [None] * len(specs)
    todo = [i for i, path in enumerate(paths) if not path.exists()]
    for i in set(range(len(specs))) - set(todo):
        results[i] = _read_result(paths[i])
    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc=desc, disable=not progress)

    def done(i: int, result: Any) -> None:
        results[i] = result
        bar.update(1)
        if describe is not None:
            bar.set_postfix_str(describe(specs[i]))

    skipped: list[int] = []
    if executor is None and (workers == 1 or len(todo) <= 1):
        for i in todo:
            result = cached_unit(fn, specs[i], paths[i], wait=False, stale_after=stale_after)
            if result is None:
                skipped.append(i)
            else:
                done(i, result)
    else:
        pool = executor if executor is not None else local_pool(workers)
        futures = {pool.submit(cached_unit, fn, specs[i], str(paths[i]), False, stale_after): i for i in todo}
        try:
            for future in as_completed(futures):
                result = future.result()
                if result is None:
                    skipped.append(futures[future])
                else:
                    done(futures[future], result)
        finally:
            for future in futures:
                future.cancel()  # after a failure: what has not started does not start
            if executor is None:
                pool.shutdown(wait=True, cancel_futures=True)
    for i in sorted(skipped):  # held by another grid: wait for its result (or compute it if that grid died)
        done(i, cached_unit(fn, specs[i], paths[i], wait=True, stale_after=stale_after))
    bar.close()
    return results


# --------------------------------------------------------------------------- tensors as files


def _content_sha256(tensors: Mapping[str, Any], metadata: Mapping[str, str]) -> str:
    """sha256 of named tensors (by name: dtype, shape, bytes) and their metadata, independent of how a
    file lays them out (safetensors writes its metadata in no fixed order)."""
    import torch

    h = hashlib.sha256(json.dumps(dict(metadata), sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def tensor_file(tensors: Mapping[str, Any], folder: str | os.PathLike, metadata: Mapping[str, str] | None = None
                ) -> dict[str, str]:
    """Store named tensors as one safetensors file named by its content; returns ``{"path", "sha256"}``.

    ``sha256`` hashes the content (every tensor's name, dtype, shape and bytes, and the metadata), so
    the same tensors and metadata give the same reference and are stored once. The reference is plain
    data a unit spec can carry to any worker (on a file system it shares). ``metadata``: strings only.
    """
    from safetensors.torch import save_file

    metadata = dict(metadata or {})
    bad = {k: v for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)}
    if bad:
        raise ValueError(f"tensor_file metadata takes strings only, got {bad!r}")
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    sha = _content_sha256(tensors, metadata)
    path = Path(folder) / f"{sha[:16]}.safetensors"
    if not path.exists():
        with atomic_file(path) as tmp:
            save_file(tensors, tmp, metadata=metadata)
    return {"path": str(path), "sha256": sha}


def load_tensor_file(ref: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """``(tensors, metadata)`` of a :func:`tensor_file` reference, on the CPU, checked against its ``sha256``.

    Raises:
        ValueError: ``ref`` is not ``{"path", "sha256"}``, or the file's content no longer hashes to ``sha256``.
    """
    from safetensors import safe_open

    if not isinstance(ref, Mapping) or not {"path", "sha256"} <= set(ref):
        raise ValueError(f"a tensor file reference is {{'path': ..., 'sha256': ...}} (from tensor_file), got {ref!r}")
    with safe_open(ref["path"], framework="pt") as f:
        metadata = dict(f.metadata() or {})
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    sha = _content_sha256(tensors, metadata)
    if sha != ref["sha256"]:
        raise ValueError(f"{ref['path']} holds content hashing to {sha[:16]}..., the reference says "
                         f"{ref['sha256'][:16]}...: the file changed since the reference was made")
    return tensors, metadata
