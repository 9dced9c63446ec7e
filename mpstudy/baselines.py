"""Fine-tuned dense baselines, cached on disk so every study (and every re-run) reuses them.

On CPU, fine-tuning MiniLM on a task takes minutes; the compressed models of a study all start
from the same fine-tuned model, so it is trained once per (model, task subset, training config)
and stored under the cache directory with its dev metrics.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .cache import default_cache_dir
from .models import load_model
from .records import atomic_directory
from .tasks import task_fingerprint
from .train import TrainConfig, train

__all__ = ["finetuned_baseline"]


def _cache_key(model_spec: str, task, config: TrainConfig) -> str:
    relevant = config.key_fields()  # progress/device do not change the trained weights' meaning
    blob = json.dumps({"model": str(model_spec), "task": task_fingerprint(task), "train": relevant}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def finetuned_baseline(model_spec: str, task, config: TrainConfig, cache_dir: str | os.PathLike | None = None):
    """The dense model fine-tuned on ``task``, trained once and then loaded from the cache.

    Args:
        model_spec: anything ``load_model`` accepts (``"minilm"``, ``"tiny-bert"``, a hub id...).
        task: a loaded ``Task`` (its exact rows are part of the cache key).
        config: the training configuration (its seed seeds the head and the data order).
        cache_dir: where baselines live (default ``default_cache_dir()``).

    Returns:
        ``(model, tokenizer, info)``; ``info`` holds ``cache_key``, ``path``, ``cached`` (True if
        loaded rather than trained), ``dev_metrics`` and the training ``result``.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = _cache_key(model_spec, task, config)
    path = cache_dir / "baselines" / f"{task.name}-{Path(str(model_spec)).name}-{key}"
    meta_file = path / "baseline.json"
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        model, tokenizer = load_model(path, task=task, seed=config.seed)
        return model, tokenizer, {**meta, "path": str(path), "cached": True}

    model, tokenizer = load_model(model_spec, task=task, seed=config.seed)
    result = train(model, tokenizer, task, config)
    meta: dict[str, Any] = {"cache_key": key, "model": str(model_spec), "task": task.name,
                            "dev_metrics": result.best_metrics, "result": result.to_dict(), "train_config": asdict(config)}
    text = json.dumps(meta, indent=2)
    # an interrupted run never leaves a half-saved baseline (baseline.json marks a complete one)
    with atomic_directory(path, marker="baseline.json", kind="a cached fine-tuned baseline") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "baseline.json").write_text(text)
    return model.cpu().eval(), tokenizer, {**meta, "path": str(path), "cached": False}
