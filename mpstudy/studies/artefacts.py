"""The models behind campaign records: kept beside the cache, identified by the record, checked by hash.

A campaign record (:mod:`mpstudy.campaign`) is identified by its spec and *states* the code version
that produced it. The model a record describes (a dense baseline that later studies compress, the
scratch T5 that the seq2seq tracks start from) is an artefact of that record, so it is kept under the
record's identity too, ``<cache>/units/<unit>-<spec key>/``, not under the code-versioned key of
the training cache (:func:`mpstudy.cache.cache_key`): that key changes with any edit to mpstudy, and
every edit would then retrain every starting model (about 2.5 CPU-hours for the cpu profile). What
keeps this honest is the weights hash: the record holds it, the artefact's marker holds it, and a
model loaded or retrained for a record must hash to it, or it is refused (the record's predictions
would no longer describe the model the studies compress).

    model, tokenizer, info = unit_model(name, spec, train, load, weights=recorded_hash)
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..cache import default_cache_dir, weights_hash
from ..campaign import spec_key
from ..records import atomic_directory

__all__ = ["MARKER", "unit_model_dir", "unit_model", "store_unit_model"]

#: the file that marks a complete artefact directory, holding the unit, its weights hash and its training info
MARKER = "unit-model.json"


def unit_model_dir(name: str, spec: Any, cache_dir: str | Path | None = None) -> Path:
    """Where the model of unit ``name`` with ``spec`` is kept: ``<cache>/units/<name>-<spec key>``."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "units" / f"{name}-{spec_key(spec)}"


def store_unit_model(path: Path, name: str, model, tokenizer, info: dict[str, Any] | None = None) -> str:
    """Write ``model`` and ``tokenizer`` to ``path`` atomically with the marker; returns the weights hash."""
    weights = weights_hash(model)
    with atomic_directory(path, marker=MARKER, kind="a campaign unit's model") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps({"unit": name, "weights": weights, "info": info or {}}, default=str))
    return weights


def unit_model(name: str, spec: Any, train: Callable[[], tuple[Any, Any, dict[str, Any]]],
               load: Callable[[Path], tuple[Any, Any]], *, weights: str | None = None,
               cache_dir: str | Path | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """The model of unit ``name``: its kept artefact, else ``train()`` (kept from now on).

    Args:
        name, spec: the unit's name and spec (:func:`mpstudy.campaign.unit`).
        train: returns ``(model, tokenizer, info)``; called only when no artefact is kept. ``info`` is
            what the unit's record needs from the training (steps, seconds...), kept in the marker.
        load: ``path -> (model, tokenizer)``, reads a kept artefact.
        weights: the record's weights hash, when the unit is recorded: the model must hash to it.
        cache_dir: the cache root (default :func:`mpstudy.cache.default_cache_dir`).

    Returns:
        ``(model, tokenizer, info)``.

    Raises:
        ValueError: the kept or retrained model does not hash to the record's (or the marker's) weights.
    """
    path = unit_model_dir(name, spec, cache_dir)
    marker = path / MARKER
    if marker.is_file():
        held = json.loads(marker.read_text())
        model, tokenizer = load(path)
        found = weights_hash(model)
        if found != held["weights"] or (weights is not None and found != weights):
            raise ValueError(f"{path}: the kept model hashes to {found}, not to its record's weights "
                             f"{weights or held['weights']}; delete the directory to rebuild it")
        return model, tokenizer, held.get("info", {})
    model, tokenizer, info = train()
    found = weights_hash(model)
    if weights is not None and found != weights:
        raise ValueError(f"unit {name}: the model trained now hashes to {found}, not to the recorded weights "
                         f"{weights} (the training code changed since it was recorded); re-record the unit with "
                         f"MPSTUDY_RERUN_STALE=1 and re-run the studies that start from it")
    store_unit_model(path, name, model, tokenizer, info)
    return model, tokenizer, info
