"""Fine-tuned dense baselines, cached on disk so every study (and every re-run) reuses them.

On CPU, fine-tuning MiniLM on a task takes minutes; the compressed models of a study all start
from the same fine-tuned model, so it is trained once per (starting weights, task rows, training
config, library code and versions) and stored under the cache directory with its dev metrics.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .cache import cache_key, cache_key_payload, default_cache_dir, tokenizer_hash, weights_hash
from .models import load_model
from .records import atomic_directory
from .tasks import task_fingerprint
from .train import TrainConfig, train

__all__ = ["finetuned_baseline", "baseline_key"]


def baseline_key(model_spec: str, model, tokenizer, task, config: TrainConfig) -> tuple[str, dict[str, Any]]:
    """``(key, payload)`` of the baseline ``model`` (freshly loaded from ``model_spec``, not yet trained)
    becomes after training on ``task`` with ``config``: see :func:`mpstudy.cache.cache_key`.

    The starting weights are hashed (head initialisation included), not named: a local directory
    rewritten with other weights, or a hub id whose snapshot changed, gives another key. The spec
    string stays in the key only as a label; ``progress`` and ``device`` are left out (they do not
    change what is trained).
    """
    spec = {"model": str(model_spec), "train": config.key_fields()}
    data = task_fingerprint(task)
    weights = {"model": weights_hash(model), "tokenizer": tokenizer_hash(tokenizer)}
    return (cache_key("baseline", spec, data=data, weights=weights),
            cache_key_payload("baseline", spec, data=data, weights=weights))


def finetuned_baseline(model_spec: str, task, config: TrainConfig, cache_dir: str | os.PathLike | None = None):
    """The dense model fine-tuned on ``task``, trained once and then loaded from the cache.

    Args:
        model_spec: anything ``load_model`` accepts (``"minilm"``, ``"tiny-bert"``, a hub id...).
        task: a loaded ``Task`` (its exact rows and data files' sha256 are part of the cache key).
        config: the training configuration (its seed seeds the head and the data order).
        cache_dir: where baselines live (default ``default_cache_dir()``).

    Returns:
        ``(model, tokenizer, info)``; ``info`` holds ``cache_key``, ``key_payload`` (what the key
        hashes), ``path``, ``cached`` (True if loaded rather than trained), ``dev_metrics`` and the
        training ``result``.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    # The key hashes the starting weights, so they are loaded (seconds) even when the cache has the result.
    model, tokenizer = load_model(model_spec, task=task, seed=config.seed)
    key, payload = baseline_key(model_spec, model, tokenizer, task, config)
    path = cache_dir / "baselines" / f"{task.name}-{Path(str(model_spec)).name}-{key}"
    meta_file = path / "baseline.json"
    if meta_file.exists():
        del model
        meta = json.loads(meta_file.read_text())
        model, tokenizer = load_model(path, task=task, seed=config.seed)
        return model, tokenizer, {**meta, "path": str(path), "cached": True}

    result = train(model, tokenizer, task, config)
    meta: dict[str, Any] = {"cache_key": key, "key_payload": payload, "model": str(model_spec), "task": task.name,
                            "dev_metrics": result.best_metrics, "result": result.to_dict(), "train_config": asdict(config)}
    text = json.dumps(meta, indent=2, default=str)
    # an interrupted run never leaves a half-saved baseline (baseline.json marks a complete one)
    with atomic_directory(path, marker="baseline.json", kind="a cached fine-tuned baseline") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "baseline.json").write_text(text)
    return model.cpu().eval(), tokenizer, {**meta, "path": str(path), "cached": False}
