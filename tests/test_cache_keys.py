"""Every cache is keyed on what produced it: spec, data, starting weights (not their path), library
code, torch/transformers versions. Each is changed in turn and the cache misses; nothing else misses.

Covers :func:`mpstudy.cache.cache_key` itself and the caches built on it here: fine-tuned baselines
(:func:`mpstudy.baselines.finetuned_baseline`) and teacher outputs (:func:`mpstudy.distill.teacher_outputs`).
"""
from __future__ import annotations

import pytest
import torch

from mpstudy import cache
from mpstudy.baselines import finetuned_baseline
from mpstudy.cache import cache_key, code_version, file_checksums, tokenizer_hash, weights_hash
from mpstudy.distill import teacher_outputs
from mpstudy.models import load_model
from mpstudy.tasks import load_task
from mpstudy.train import TrainConfig

CONFIG = TrainConfig(lr=1e-3, max_steps=1, batch_size=16, max_length=16, progress=False)


@pytest.fixture(scope="module")
def task():
    return load_task("synthetic-cls", max_train=32, max_eval=16)


def _changes(monkeypatch):
    """The library-side changes, each as a context that applies it: code, torch, transformers."""
    def code(m):
        m.setattr(cache, "code_version", lambda package=None: "0123456789abcdef")

    def version(module):
        return lambda m: m.setattr(__import__(module), "__version__", "0.0.1")

    return {"code": code, "torch version": version("torch"), "transformers version": version("transformers")}


def test_cache_key_changes_with_each_input(monkeypatch):
    base = dict(kind="baseline", spec={"model": "tiny-bert", "lr": 1e-3}, data="d" * 16, weights="w" * 16)
    key = cache_key(base.pop("kind"), **base)
    assert cache_key("baseline", **base) == key
    keys = {key}
    for what, value in [("kind", "teacher-outputs"), ("spec", {"model": "tiny-bert", "lr": 2e-3}),
                        ("data", "e" * 16), ("weights", "v" * 16)]:
        args = {"kind": "baseline", **base, what: value}
        other = cache_key(args.pop("kind"), **args)
        assert other not in keys, f"changing {what} did not change the key"
        keys.add(other)
    for what, apply in _changes(monkeypatch).items():
        with monkeypatch.context() as m:
            apply(m)
            other = cache_key("baseline", **base)
        assert other not in keys, f"changing the {what} did not change the key"
        keys.add(other)
    assert cache_key("baseline", **base) == key
    with pytest.raises(ValueError, match="cache kind must be a non-empty string"):
        cache_key("", {})


def test_code_version_follows_code_not_comments(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    module = package / "m.py"
    module.write_text('"""Doc."""\n\ndef f(x):\n    return x + 1  # one\n')
    base = code_version(package)
    module.write_text('"""Another doc."""\n\ndef f(x):\n    """Says what f does."""\n    return x + 1  # a comment\n')
    assert code_version(package) == base  # docstrings and comments do not change what the code computes
    module.write_text('"""Doc."""\n\ndef f(x):\n    return x + 2\n')
    assert code_version(package) != base
    assert len(code_version()) == 16


def test_hashes_of_weights_tokenizers_and_files(tmp_path):
    model, tok = load_model("tiny-bert", seed=0)
    same, _ = load_model("tiny-bert", seed=0)
    other, _ = load_model("tiny-bert", seed=1)
    assert weights_hash(model) == weights_hash(same) != weights_hash(other)
    with torch.no_grad():
        same.bert.encoder.layer[0].attention.self.query.weight[0, 0] += 1e-6
    assert weights_hash(same) != weights_hash(model)
    tok.save_pretrained(tmp_path / "tok")
    from transformers import AutoTokenizer

    assert tokenizer_hash(AutoTokenizer.from_pretrained(tmp_path / "tok")) == tokenizer_hash(tok)  # not the path
    (tmp_path / "a.txt").write_text("x")
    assert file_checksums(tmp_path, ["a.txt", "missing.txt"]) == {
        "a.txt": "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881", "missing.txt": None}


def test_baseline_cache_misses_on_each_change(task, tmp_path, monkeypatch):
    """Trained once; the same call hits; spec, data, weights at the same path, code and versions each miss."""
    saved = tmp_path / "start"
    load_model("tiny-bert", task=task, seed=0)[0].save_pretrained(saved)
    load_model("tiny-bert", task=task, seed=0)[1].save_pretrained(saved)
    cache_dir = tmp_path / "cache"

    def baseline(spec=str(saved), t=task, config=CONFIG):
        return finetuned_baseline(spec, t, config, cache_dir=cache_dir)[2]

    first = baseline()
    assert first["cached"] is False
    again = baseline()
    assert again["cached"] is True and again["cache_key"] == first["cache_key"]
    assert again["key_payload"]["weights"]["model"] == first["key_payload"]["weights"]["model"]
    keys = {first["cache_key"]}

    def assert_miss(info, what):
        assert info["cached"] is False and info["cache_key"] not in keys, f"changing the {what} hit the cache"
        keys.add(info["cache_key"])

    assert_miss(baseline(config=TrainConfig(**{**CONFIG.__dict__, "lr": 2e-3})), "spec")
    assert_miss(baseline(t=load_task("synthetic-cls", max_train=31, max_eval=16)), "data")
    for what, apply in _changes(monkeypatch).items():
        with monkeypatch.context() as m:
            apply(m)
            assert_miss(baseline(), what)
    # the same path, other weights: a directory is not its content
    other, _ = load_model("tiny-bert", task=task, seed=1)
    other.save_pretrained(saved)
    assert_miss(baseline(), "weights behind the same path")
    assert baseline()["cached"] is True


def test_teacher_outputs_cache_misses_on_each_change(task, tmp_path, monkeypatch):
    teacher, tok = load_model("tiny-bert", task=task, seed=0)
    kwargs = dict(max_length=16, batch_size=16, cache_dir=tmp_path, progress=False)
    first = teacher_outputs(teacher, tok, task, **kwargs)
    assert teacher_outputs(teacher, tok, task, **kwargs).key == first.key
    keys = {first.key}

    def assert_miss(out, what):
        assert out.key not in keys, f"changing the {what} hit the cache"
        keys.add(out.key)

    assert_miss(teacher_outputs(teacher, tok, task, **{**kwargs, "max_length": 17}), "spec (max_length)")
    assert_miss(teacher_outputs(teacher, tok, load_task("synthetic-cls", max_train=31, max_eval=16), **kwargs), "data")
    with torch.no_grad():  # the same model object, other weights
        teacher.bert.encoder.layer[0].output.dense.bias.add_(0.5)
    assert_miss(teacher_outputs(teacher, tok, task, **kwargs), "weights")
    for what, apply in _changes(monkeypatch).items():
        with monkeypatch.context() as m:
            apply(m)
            assert_miss(teacher_outputs(teacher, tok, task, **kwargs), what)
    assert len(list((tmp_path / "teachers").glob("*.pt"))) == len(keys)


def test_teacher_outputs_wait_for_another_worker_and_compute_once(task, tmp_path, monkeypatch):
    """Workers sharing a cache compute a teacher's outputs once: while another live process holds the
    entry's lock, teacher_outputs waits, then reads the file that process wrote (no second computation)."""
    import json as _json
    import subprocess
    import sys
    import threading

    import mpstudy.distill as distill
    from mpstudy.grid import _HOST

    teacher, tok = load_model("tiny-bert", task=task, seed=0)
    kwargs = dict(max_length=16, batch_size=16, cache_dir=tmp_path, progress=False)
    expected = teacher_outputs(teacher, tok, task, **kwargs)  # computes and stores the entry
    entry = next((tmp_path / "teachers").glob("*.pt"))
    stored = entry.read_bytes()
    entry.unlink()

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # a live holder's pid
    try:
        lock = entry.with_name(entry.name + ".lock")
        lock.write_text(_json.dumps({"host": _HOST, "pid": other.pid, "token": "other", "since": 0}))
        calls = []
        monkeypatch.setattr(distill, "_compute_teacher_outputs", lambda *a, **k: calls.append(1))

        def the_other_worker_finishes():
            entry.write_bytes(stored)
            lock.unlink()

        threading.Timer(0.6, the_other_worker_finishes).start()
        got = teacher_outputs(teacher, tok, task, **kwargs)
    finally:
        other.kill()
    assert calls == [], "computed the outputs although another worker held the entry's lock"
    assert got.key == expected.key and torch.equal(got.logits, expected.logits)
