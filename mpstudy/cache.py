"""Where mpstudy keeps what it can recompute, and the keys that say what produced each entry.

Fine-tuned baselines (:mod:`mpstudy.baselines`), teacher outputs (:func:`mpstudy.distill.teacher_outputs`),
comparison units (:mod:`mpstudy.studies.comparison`) and tokenized data are stored or memoized under a
key from :func:`cache_key`. The key hashes everything that produced the entry, so nothing is "up to
date" by path or name alone:

* ``spec``: the recipe (model spec string, training config, max_length...), any JSON-able value;
* ``data``: checksums of the data (``tasks.task_fingerprint(task)``, which covers the files' sha256
  and the selected rows, or :func:`file_checksums` of the files);
* ``weights``: the starting weights' hash (:func:`weights_hash` of the loaded model, plus
  :func:`tokenizer_hash`), never the model's path: a directory rewritten with other weights misses;
* the library code (:func:`code_version`) and the torch / transformers / Python versions
  (:func:`library_versions`), looked up at call time (tests monkeypatch them).

The run fingerprint of a study (:func:`mpstudy.runner.study_fingerprint`) uses the same pieces.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Iterable

__all__ = ["default_cache_dir", "cache_key", "cache_key_payload", "code_version", "library_versions",
           "weights_hash", "tokenizer_hash", "file_checksums"]

_PACKAGE = Path(__file__).resolve().parent


def default_cache_dir() -> Path:
    """``$MPSTUDY_CACHE``, else ``~/.cache/mpstudy``."""
    return Path(os.environ.get("MPSTUDY_CACHE", Path.home() / ".cache" / "mpstudy"))


# --------------------------------------------------------------------------- the pieces of a key

#: (path, size, mtime_ns) -> digest: a file is re-read only when it changed (a campaign asks often)
_FILE_MEMO: dict[tuple[str, int, int, str], str] = {}


def _memoized(path: Path, kind: str, compute) -> str:
    """``compute(path)``, remembered while the file's size and mtime stay the same. A file modified in
    the last 2 s is not remembered: its mtime may not change on a second write within the clock's tick
    (git's "racy" files), and remembering it could return the digest of its previous content."""
    st = path.stat()
    memo_key = (str(path), st.st_size, st.st_mtime_ns, kind)
    if memo_key in _FILE_MEMO:
        return _FILE_MEMO[memo_key]
    digest = compute(path)
    if time.time() - st.st_mtime > 2.0:
        _FILE_MEMO[memo_key] = digest
    return digest


def _code_digest(path: Path) -> str:
    """sha256 of a module's syntax tree without docstrings: comments and docstrings do not change what
    the code computes, so editing them invalidates no cache; any other change does."""
    source = path.read_bytes()
    try:
        tree = ast.parse(source)
    except SyntaxError:  # still a version of the code: hash its bytes
        return hashlib.sha256(source).hexdigest()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()


def code_version(package: str | os.PathLike | None = None) -> str:
    """A 16-hex-digit hash of the library's code: every ``*.py`` under ``package`` (default: mpstudy),
    by relative path and syntax tree (docstrings and comments excluded, see ``_code_digest``)."""
    root = Path(package).resolve() if package is not None else _PACKAGE
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        h.update(str(path.relative_to(root)).encode())
        h.update(_memoized(path, "code", _code_digest).encode())
    return h.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    """The versions a result depends on besides mpstudy's own code: torch, transformers, Python (major.minor)."""
    import torch
    import transformers

    return {"torch": str(torch.__version__), "transformers": str(transformers.__version__),
            "python": ".".join(platform.python_version_tuple()[:2])}


def weights_hash(model) -> str:
    """A 16-hex-digit sha256 of a model's state: every parameter and buffer, by name, dtype, shape and
    exact bytes (shapes ``[...]`` of any dtype; tensors on any device are read through the CPU)."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        flat = t.cpu().contiguous().reshape(-1)
        if flat.numel():
            h.update(memoryview(flat.view(torch.uint8).numpy()))
    return h.hexdigest()[:16]


def tokenizer_hash(tokenizer) -> str:
    """A 16-hex-digit hash of what a tokenizer does: its class, vocabulary, special tokens and options
    (paths excluded: the same tokenizer loaded from another folder hashes the same)."""
    options = {k: v for k, v in getattr(tokenizer, "init_kwargs", {}).items()
               if not any(word in k for word in ("path", "file", "dir"))}
    payload = {"class": type(tokenizer).__name__, "vocab": sorted(tokenizer.get_vocab().items()),
               "special": list(getattr(tokenizer, "all_special_tokens", [])), "options": options}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_checksums(root: str | os.PathLike, relpaths: Iterable[str]) -> dict[str, str | None]:
    """``{relpath: sha256 hex}`` of files under ``root``; ``None`` for a missing file (memoized by size and mtime)."""
    root = Path(root)

    def sha256(path: Path) -> str:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    return {rel: _memoized((root / rel).resolve(), "sha256", sha256) if (root / rel).is_file() else None
            for rel in sorted(relpaths)}


# --------------------------------------------------------------------------- the key


def cache_key_payload(kind: str, spec: Any, *, data: Any = None, weights: Any = None) -> dict[str, Any]:
    """What :func:`cache_key` hashes, as a JSON-able dict (store it beside an entry to see why it missed)."""
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"cache kind must be a non-empty string such as 'baseline', got {kind!r}")
    return {"kind": kind, "spec": spec, "data": data, "weights": weights, "code": code_version(),
            "versions": library_versions()}


def cache_key(kind: str, spec: Any, *, data: Any = None, weights: Any = None) -> str:
    """The 16-hex-digit key of a cache entry of ``kind`` (``"baseline"``, ``"teacher-outputs"``,
    ``"comparison-unit"``, ``"tokenized"``...).

    Args:
        kind: what the entry is; two kinds never share a key.
        spec: the recipe that produced it: any JSON-able value (dicts are hashed with sorted keys;
            other objects by ``str``), e.g. ``{"model": "minilm", "train": config.key_fields()}``.
        data: checksums of the data it was computed from: ``tasks.task_fingerprint(task)`` (covers the
            data files' sha256 and the selected rows), :func:`file_checksums`, or a list/dict of them.
        weights: the starting weights' hash, :func:`weights_hash` of the loaded model (and
            :func:`tokenizer_hash`), or the key of the cached entry the weights came from.

    The library's :func:`code_version` and :func:`library_versions` are added here, so every cache
    misses after a code change or an upgrade of torch / transformers.
    """
    payload = cache_key_payload(kind, spec, data=data, weights=weights)
    blob = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
