"""The grid's machinery (``mpstudy.grid``): one lock per unit shared by processes (one computes, the
other gets its result; a dead holder's lock is broken, a live one's never), units on an executor
(in order, cached, one failure stops the grid, a unit another grid holds is waited for), tensors as
files checked against their hash, and the device each worker picks."""
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest
import torch

from mpstudy import grid
from mpstudy.grid import (UnitLock, cached_unit, check_device, load_tensor_file, run_units, tensor_file,
                          worker_device, worker_index)


def gated_square(spec):
    """A unit that marks its start, waits for the test's go (a file), and logs each call."""
    Path(spec["started"]).touch()
    deadline = time.monotonic() + 60
    while not Path(spec["go"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(spec["calls"], "a") as f:
        f.write(f"{os.getpid()}\n")
    return {"square": spec["x"] ** 2, "pid": os.getpid()}


def announced_unit(fn, spec, path, mark):
    """``cached_unit`` after marking that it was asked (so the test knows the unit was not cached yet)."""
    Path(mark).touch()
    return cached_unit(fn, spec, path)


def square(spec):
    if spec.get("fail"):
        raise RuntimeError(f"unit {spec['x']} failed")
    if spec.get("calls"):
        with open(spec["calls"], "a") as f:
            f.write(f"{spec['x']}\n")
    return {"square": spec["x"] ** 2}


def _wait_for(path: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _lock_of(path: Path, host: str, pid: int, since: float | None = None) -> Path:
    lock = path.with_name(path.name + ".lock")
    lock.write_text(json.dumps({"host": host, "pid": pid, "token": "theirs", "since": since or time.time()}))
    return lock


def test_two_processes_asking_for_one_unit_compute_it_once(tmp_path):
    spec = {"x": 7, "started": str(tmp_path / "started"), "go": str(tmp_path / "go"), "calls": str(tmp_path / "calls")}
    path = tmp_path / "unit.json"
    # forked (the children only do file work): two processes in a second, not two fresh imports of torch
    with ProcessPoolExecutor(2, mp_context=get_context("fork")) as pool:
        first = pool.submit(cached_unit, gated_square, spec, str(path))
        _wait_for(tmp_path / "started")  # the first process holds the unit's lock and is computing
        second = pool.submit(announced_unit, gated_square, spec, str(path), str(tmp_path / "asked"))
        _wait_for(tmp_path / "asked")  # the second asked while the unit was not cached: it must wait
        time.sleep(0.3)
        (tmp_path / "go").touch()
        a, b = first.result(timeout=120), second.result(timeout=120)
    assert a == b == {"square": 49, "pid": a["pid"]}
    assert (tmp_path / "calls").read_text().split() == [str(a["pid"])]  # computed once, by the first
    assert json.loads(path.read_text()) == a
    assert not path.with_name("unit.json.lock").exists()


def test_a_dead_holders_lock_is_broken(tmp_path):
    path = tmp_path / "unit.json"
    lock = _lock_of(path, socket.gethostname(), _dead_pid())
    assert cached_unit(square, {"x": 3}, path, wait=False) == {"square": 9}  # not skipped: the holder is dead
    assert not lock.exists()
    # a killed run whose pid is this process's (containers reuse pids): dead too, since this process holds no such lock
    path2 = tmp_path / "unit2.json"
    _lock_of(path2, socket.gethostname(), os.getpid())
    assert cached_unit(square, {"x": 4}, path2, wait=False) == {"square": 16}


def test_a_live_holders_lock_is_never_broken(tmp_path):
    path = tmp_path / "unit.json"
    lock = _lock_of(path, socket.gethostname(), os.getppid())  # alive: it runs this test
    assert cached_unit(square, {"x": 3}, path, wait=False) is None  # skipped
    with pytest.raises(TimeoutError, match=f"held by pid {os.getppid()} on .*gave up after 0.3 s"):
        UnitLock(path, timeout=0.3, poll=0.05).acquire()
    assert lock.exists() and not path.exists()
    # another machine's holder: its pid means nothing here; trusted unless older than stale_after
    elsewhere = tmp_path / "elsewhere.json"
    _lock_of(elsewhere, "another-host", _dead_pid(), since=time.time() - 100)
    assert cached_unit(square, {"x": 5}, elsewhere, wait=False) is None
    assert cached_unit(square, {"x": 5}, elsewhere, wait=False, stale_after=50) == {"square": 25}


def test_a_lock_is_exclusive_and_released(tmp_path):
    path = tmp_path / "unit.json"
    with UnitLock(path) as mine:
        assert mine.held
        other = UnitLock(path, wait=False)
        assert not other.acquire()  # this very process holds it: alive
        holder = json.loads(mine.path.read_text())
        assert (holder["host"], holder["pid"]) == (socket.gethostname(), os.getpid())
    assert not mine.path.exists() and not list(tmp_path.iterdir())  # no lock, no leftover
    with UnitLock(path) as again:
        assert again.held


def test_run_units_in_order_cached_and_once_per_key(tmp_path):
    calls = tmp_path / "calls"
    specs = [{"x": x, "calls": str(calls)} for x in (3, 1, 2, 3)]
    keys = ["k3", "k1", "k2", "k3"]  # the last one is the first one again
    with ThreadPoolExecutor(2) as pool:
        out = run_units(square, specs, keys, tmp_path / "units", executor=pool, progress=False)
    assert out == [{"square": 9}, {"square": 1}, {"square": 4}, {"square": 9}]
    assert sorted(calls.read_text().split()) == ["1", "2", "3"]
    assert sorted(p.name for p in (tmp_path / "units").iterdir()) == ["k1.json", "k2.json", "k3.json"]
    assert run_units(square, [{"x": 5, "fail": True}], ["k1"], tmp_path / "units", progress=False) == [{"square": 1}]


def test_run_units_stops_at_a_failure(tmp_path):
    specs = [{"x": 1}, {"x": 2, "fail": True}, {"x": 3}]
    with pytest.raises(RuntimeError, match="unit 2 failed"):
        run_units(square, specs, ["a", "b", "c"], tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # nothing after the failure ran
    with pytest.raises(ValueError, match="2 specs but 1 keys"):
        run_units(square, specs[:2], ["a"], tmp_path, progress=False)
    with pytest.raises(ValueError, match="workers=2 or an executor, not both"):
        with ThreadPoolExecutor(1) as pool:
            run_units(square, specs, "abc", tmp_path, executor=pool, workers=2, progress=False)
    with pytest.raises(ValueError, match="executor must be a concurrent.futures.Executor or have a submit\\(\\) "
                                         "returning jobs with result\\(\\) \\(submitit\\), got str"):
        run_units(square, specs, "abc", tmp_path, executor="tcp://scheduler:8786", progress=False)


class _Job:
    def __init__(self, value=None, error=None):
        self.value, self.error, self.job_id = value, error, "42"

    def result(self):
        if self.error:
            raise self.error
        return self.value


class _JobQueue:
    """Like submitit's executors: ``submit`` runs nothing here and returns a job whose ``result()`` blocks."""

    def __init__(self):
        self.jobs = []

    def submit(self, fn, *args):
        try:
            job = _Job(value=fn(*args))
        except Exception as err:  # noqa: BLE001
            job = _Job(error=err)
        self.jobs.append(job)
        return job


def test_run_units_on_a_job_queue(tmp_path):
    """An executor in submitit's style (jobs, not futures) runs the grid too, failures included."""
    queue = _JobQueue()
    assert run_units(square, [{"x": 2}, {"x": 3}], "ab", tmp_path, executor=queue, progress=False) == [{"square": 4},
                                                                                                    {"square": 9}]
    assert len(queue.jobs) == 2
    with pytest.raises(RuntimeError, match="unit 5 failed"):
        run_units(square, [{"x": 5, "fail": True}], "c", tmp_path, executor=queue, progress=False)


def test_a_unit_another_grid_holds_is_waited_for(tmp_path):
    """Another grid (a live process sharing the cache) computes unit b: this one runs a and c, then reads b."""
    calls = tmp_path / "calls"
    path = tmp_path / "b.json"
    lock = _lock_of(path, socket.gethostname(), os.getppid())

    def other_grid_finishes():
        path.write_text(json.dumps({"square": "from the other grid"}))
        lock.unlink()

    timer = threading.Timer(0.5, other_grid_finishes)
    timer.start()
    try:
        out = run_units(square, [{"x": x, "calls": str(calls)} for x in (1, 2, 3)], "abc", tmp_path, progress=False)
    finally:
        timer.cancel()
    assert out == [{"square": 1}, {"square": "from the other grid"}, {"square": 9}]
    assert calls.read_text().split() == ["1", "3"]


def test_local_pool_numbers_its_workers(monkeypatch):
    monkeypatch.delenv(grid.WORKER_INDEX_ENV, raising=False)
    counter = get_context("spawn").Value("i", 0)
    threads = torch.get_num_threads()
    try:
        slots = []
        for _ in range(3):
            grid._init_local_worker(1, counter)
            slots.append(worker_index())
    finally:
        torch.set_num_threads(threads)
    assert slots == [0, 1, 2]


def test_tensor_file_round_trip_and_hash_check(tmp_path):
    tensors = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.tensor([1, 2], dtype=torch.int64)}
    ref = tensor_file(tensors, tmp_path, metadata={"kind": "test", "z": "1"})
    assert ref == tensor_file({"a": tensors["a"], "b": tensors["b"]}, tmp_path, metadata={"z": "1", "kind": "test"})
    assert len(list(tmp_path.iterdir())) == 1  # stored once
    back, meta = load_tensor_file(ref)
    assert meta == {"kind": "test", "z": "1"}
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in tensors)
    assert tensor_file({**tensors, "a": tensors["a"] + 1}, tmp_path)["sha256"] != ref["sha256"]
    from safetensors.torch import save_file

    save_file({"a": tensors["a"], "b": tensors["b"] * 2}, ref["path"], metadata={"kind": "test", "z": "1"})
    with pytest.raises(ValueError, match="the file changed since the reference was made"):
        load_tensor_file(ref)
    with pytest.raises(ValueError, match="a tensor file reference is .*got 'x.safetensors'"):
        load_tensor_file("x.safetensors")
    with pytest.raises(ValueError, match="metadata takes strings only"):
        tensor_file(tensors, tmp_path, metadata={"examples": 3})


class _FakeCuda:
    def __init__(self, count):
        self.count, self.current = count, None

    def is_available(self):
        return self.count > 0

    def device_count(self):
        return self.count

    def set_device(self, i):
        self.current = i


@pytest.mark.parametrize("count, slot, expected", [(0, "1", "cpu"), (1, "3", "cuda"), (2, None, "cuda"),
                                                   (2, "0", "cuda:0"), (2, "3", "cuda:1"), (4, "2", "cuda:2")])
def test_worker_device(monkeypatch, count, slot, expected):
    for name in (grid.WORKER_INDEX_ENV, "LOCAL_RANK", "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    if slot is not None:
        monkeypatch.setenv(grid.WORKER_INDEX_ENV, slot)
    fake = _FakeCuda(count)
    monkeypatch.setattr(torch, "cuda", fake)
    assert worker_device("auto") == expected
    assert fake.current == (int(expected[5:]) if expected.startswith("cuda:") else None)  # made current
    assert worker_device("cpu") == "cpu" and worker_device("cuda:3") == "cuda:3"  # asked for: kept


def test_worker_index_sources(monkeypatch):
    for name in (grid.WORKER_INDEX_ENV, "LOCAL_RANK", "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    assert worker_index() is None
    monkeypatch.setenv("SLURM_LOCALID", "2")
    assert worker_index() == 2
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun / accelerate before SLURM's task id
    assert worker_index() == 1
    monkeypatch.setenv(grid.WORKER_INDEX_ENV, "3")  # the local pool's slot before both
    assert worker_index() == 3


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:x", None, 0])
def test_bad_device_names_are_refused(bad):
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got"):
        check_device(bad)
    with pytest.raises(ValueError, match="device must be"):
        worker_device(bad)
