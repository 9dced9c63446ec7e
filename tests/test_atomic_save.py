"""``atomic_directory`` / ``atomic_file``: a save interrupted at any moment leaves the old artefact.

Interruptions are simulated by an exception inside the ``with`` block and by a real SIGKILL of a
child process mid-write; leftovers of the killed write are removed by the next save of the same
target, never those of a live writer.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mpstudy import records
from mpstudy.records import (
    atomic_directory,
    atomic_file,
    remove_leftovers,
    write_json_atomic,
)


def _save(path: Path, version: str, files: int = 3) -> None:
    with atomic_directory(path, marker="meta.json", kind="a test artefact") as tmp:
        for i in range(files):
            (tmp / f"part{i}.txt").write_text(f"{version} {i}")
        (tmp / "meta.json").write_text(json.dumps({"version": version}))


def _contents(path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(path.iterdir())}


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(proc.stdout)


def test_a_directory_is_replaced_whole(tmp_path):
    target = tmp_path / "art"
    _save(target, "v1", files=4)
    _save(target, "v2", files=2)  # fewer files: nothing of v1 may survive
    assert _contents(target) == {"meta.json": '{"version": "v2"}', "part0.txt": "v2 0", "part1.txt": "v2 1"}
    assert _hidden(tmp_path) == []


def test_an_exception_inside_the_save_leaves_the_old_directory(tmp_path):
    target = tmp_path / "art"
    _save(target, "v1")
    before = _contents(target)
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_directory(target, marker="meta.json") as tmp:
            (tmp / "part0.txt").write_text("v2 0")
            raise RuntimeError("disk full")
    assert _contents(target) == before and _hidden(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="has no meta.json"):  # an incomplete new directory is not swapped in
        with atomic_directory(target, marker="meta.json") as tmp:
            (tmp / "part0.txt").write_text("v2 0")
    assert _contents(target) == before and _hidden(tmp_path) == []


def test_a_foreign_directory_or_file_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    (tmp_path / "file").write_text("keep me too")
    for target in (tmp_path / "precious", tmp_path / "file"):
        with pytest.raises(FileExistsError, match=f"{target.name} exists and is not a test artefact; refusing"):
            with atomic_directory(target, marker="meta.json", kind="a test artefact"):
                pytest.fail("the body must not run")
    (tmp_path / "link").symlink_to(tmp_path / "precious")
    with pytest.raises(FileExistsError, match="symbolic link"):
        _save(tmp_path / "link", "v1")
    with pytest.raises(IsADirectoryError, match="refusing to overwrite it with a file"):
        with atomic_file(tmp_path / "precious"):
            pass
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"
    assert (tmp_path / "file").read_text() == "keep me too"
    assert _hidden(tmp_path) == []
    (tmp_path / "empty").mkdir()  # an empty directory holds nothing to lose: it may be replaced
    _save(tmp_path / "empty", "v1")
    assert json.loads((tmp_path / "empty" / "meta.json").read_text()) == {"version": "v1"}


def test_a_file_interrupted_by_an_exception_is_left_as_it_was(tmp_path):
    target = tmp_path / "r.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(ValueError), atomic_file(target) as tmp:
        tmp.write_text('{"v": ')
        raise ValueError("boom")
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_file(target):
            pass
    assert json.loads(target.read_text()) == {"v": 1} and _hidden(tmp_path) == []


# --------------------------------------------------------------------------- killed writers, live writers

WRITER = textwrap.dedent("""
    import importlib.util, json, pathlib, sys, time
    # mpstudy/records.py alone (it imports nothing of mpstudy): the package would import torch, slowly
    spec = importlib.util.spec_from_file_location("records", sys.argv[4])
    records = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(records)
    atomic_directory, atomic_file = records.atomic_directory, records.atomic_file
    target, started, what = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
    if what == "dir":
        with atomic_directory(target, marker="meta.json", kind="a test artefact") as tmp:
            (tmp / "part0.txt").write_text("v2 0")  # half the new artefact
            started.write_text(str(tmp))
            time.sleep(120)
            (tmp / "meta.json").write_text(json.dumps({"version": "v2"}))
    else:
        with atomic_file(target) as tmp:
            tmp.write_text('{"version": ')
            started.write_text(str(tmp))
            time.sleep(120)
""")


def _start_writer(tmp_path: Path, target: Path, what: str) -> tuple[subprocess.Popen, Path]:
    started = tmp_path / f"started-{what}"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(started), what, records.__file__],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not started.exists() or not started.read_text():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the writer never started"
        time.sleep(0.05)
    return proc, Path(started.read_text())


@pytest.mark.parametrize("what", ["dir", "file"])
def test_a_writer_killed_mid_save_leaves_the_old_artefact_and_the_next_save_cleans_up(tmp_path, what):
    target = tmp_path / ("art" if what == "dir" else "r.json")
    if what == "dir":
        _save(target, "v1")
    else:
        write_json_atomic(target, {"version": "v1"})
    before = _contents(target) if what == "dir" else target.read_text()

    proc, temp = _start_writer(tmp_path, target, what)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    assert (_contents(target) if what == "dir" else target.read_text()) == before
    assert temp.exists() and _hidden(tmp_path) == [temp.name]  # nothing could clean up after SIGKILL
    if what == "dir":
        _save(target, "v3")
        assert json.loads((target / "meta.json").read_text()) == {"version": "v3"}
    else:
        write_json_atomic(target, {"version": "v3"})
        assert json.loads(target.read_text()) == {"version": "v3"}
    assert _hidden(tmp_path) == []  # the killed writer's temporary went with the next save


def test_a_live_writers_temporary_is_not_removed(tmp_path):
    target = tmp_path / "art"
    _save(target, "v1")
    proc, temp = _start_writer(tmp_path, target, "dir")
    try:
        _save(target, "v3")  # another save of the same target, while the first is still writing
        assert remove_leftovers(target) == []
        assert temp.is_dir() and (temp / "part0.txt").read_text() == "v2 0"
        assert json.loads((target / "meta.json").read_text()) == {"version": "v3"}
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert remove_leftovers(target) == [temp] and not temp.exists()


def test_leftovers_of_this_process_are_removed_only_when_not_in_use(tmp_path):
    """A killed run's pid may be this process's pid (containers reuse small pids): in use decides."""
    target = tmp_path / "r.json"
    stale = records._sibling(target, "tmp")
    stale.write_text("half")
    with atomic_file(target) as tmp:
        assert not stale.exists()  # removed on entry: not in use by this process
        tmp.write_text("{}")
        assert remove_leftovers(target) == [] and tmp.exists()  # the live one is in use
    assert target.read_text() == "{}"


def test_other_machines_and_other_targets_are_left_alone(tmp_path):
    target = tmp_path / "art"
    pid = _dead_pid()
    other_host = tmp_path / f".art.tmp-someotherhost-{pid}-0a1b2c3d"
    other_target = tmp_path / f".artx.tmp-{records._HOST}-{pid}-0a1b2c3d"
    dead = tmp_path / f".art.tmp-{records._HOST}-{pid}-0a1b2c3d"
    for p in (other_host, other_target, dead):
        p.mkdir()
    assert remove_leftovers(target) == [dead]
    assert other_host.is_dir() and other_target.is_dir() and not dead.exists()


# --------------------------------------------------------------------------- without atomic exchange


def test_without_exchange_a_failed_rename_puts_the_old_directory_back(tmp_path, monkeypatch):
    target = tmp_path / "art"
    _save(target, "v1")
    before = _contents(target)
    monkeypatch.setattr(records, "_exchange", lambda a, b: False)
    real_rename = os.rename

    def rename(src, dst):
        if ".tmp-" in str(src):  # the new directory moving in
            raise OSError("simulated failure between the two renames")
        real_rename(src, dst)

    monkeypatch.setattr(records.os, "rename", rename)
    with pytest.raises(OSError, match="simulated"):
        _save(target, "v2")
    monkeypatch.setattr(records.os, "rename", real_rename)
    assert _contents(target) == before and _hidden(tmp_path) == []
    _save(target, "v2")  # the fallback path itself works
    assert json.loads((target / "meta.json").read_text()) == {"version": "v2"} and _hidden(tmp_path) == []


def test_a_writer_killed_between_the_two_renames_is_repaired_by_the_next_save(tmp_path):
    """The fallback's window: the target is missing and the old directory sits aside; it comes back."""
    target = tmp_path / "art"
    _save(target, "v1")
    before = _contents(target)
    aside = tmp_path / f".art.old-{records._HOST}-{_dead_pid()}-0a1b2c3d"
    os.rename(target, aside)
    half = tmp_path / f".art.tmp-{records._HOST}-{_dead_pid()}-4e5f6a7b"
    half.mkdir()
    assert sorted(remove_leftovers(target)) == sorted([aside, half])
    assert _contents(target) == before and _hidden(tmp_path) == []


def test_exchange_swaps_two_directories_in_one_step(tmp_path):
    """The primitive the guarantee rests on (where the platform has it)."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("from a")
    if not records._exchange(a, b):
        pytest.skip("no renameat2(RENAME_EXCHANGE) on this platform or file system")
    assert (b / "x").read_text() == "from a" and list(a.iterdir()) == []


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "rename-aside"])
def test_a_kill_while_the_old_directory_is_deleted_leaves_the_new_one_whole(tmp_path, monkeypatch, exchange):
    """Deleting the replaced directory takes time; a kill then must not cost the target anything
    (a delete-then-rename save would leave it half deleted). The kill is simulated inside the
    delete: one file goes, then the process 'dies' (a BaseException nothing catches)."""
    target = tmp_path / "art"
    _save(target, "v1")
    if not exchange:
        monkeypatch.setattr(records, "_exchange", lambda a, b: False)

    class Killed(BaseException):
        pass

    def dying_rmtree(path, ignore_errors=False):
        next(p for p in Path(path).iterdir()).unlink()
        raise Killed

    monkeypatch.setattr(records.shutil, "rmtree", dying_rmtree)
    with pytest.raises(Killed):
        _save(target, "v2")
    monkeypatch.undo()
    assert _contents(target) == {"meta.json": '{"version": "v2"}', "part0.txt": "v2 0", "part1.txt": "v2 1",
                                 "part2.txt": "v2 2"}
    assert len(_hidden(tmp_path)) == 1  # the half-deleted old one
    _save(target, "v3")
    assert _hidden(tmp_path) == []


# --------------------------------------------------------------------------- the library's save formats


class _ExplodingTokenizer:
    """Writes one file of the tokenizer, then fails: a save interrupted after the weights."""

    def save_pretrained(self, folder):
        (Path(folder) / "tokenizer_config.json").write_text("{")
        raise OSError("disk full while writing the tokenizer")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", ["compressed", "pruned"])
def test_an_interrupted_model_save_leaves_the_saved_model(tmp_path, fmt):
    import torch

    from mpstudy import load_model
    from mpstudy.prune import compose, generate_configs, prune_variants, pruning_scheme
    from mpstudy.prune_io import load_pruned, save_pruned
    from mpstudy.surgery import load_compressed, save_compressed

    torch.manual_seed(0)
    model, tokenizer = load_model("tiny-bert", task="synthetic-cls")
    if fmt == "pruned":
        configs = generate_configs(model, [0.5], [0.3])
        model = compose(model, configs[0], prune_variants(model, pruning_scheme(configs)))
        save = lambda m, tok=None: save_pruned(m, tmp_path / "m", base="tiny-bert", task="synthetic-cls", tokenizer=tok)
        load = lambda: load_pruned(tmp_path / "m")[0]
    else:
        save = lambda m, tok=None: save_compressed(m, tmp_path / "m", tokenizer=tok)
        load = lambda: load_compressed(tmp_path / "m")
    save(model, tokenizer)
    before = _snapshot(tmp_path / "m")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # a different model, whose save fails halfway
    with pytest.raises(OSError, match="disk full"):
        save(model, _ExplodingTokenizer())
    assert _snapshot(tmp_path / "m") == before and _hidden(tmp_path) == []
    load()  # still a complete saved model
