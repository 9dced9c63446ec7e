"""Saving and loading pruned models and module variants (the composable-pruning artefacts).

Kept apart from :mod:`mpstudy.prune` (the pruning operations), because rebuilding a saved
pruned model loads its base model (:func:`mpstudy.load_model`), which sits above the method
registry that :mod:`mpstudy.prune` serves.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .models import load_model
from .prune import clone_module, full_num_heads, prunable_modules, prune_heads, removed_heads
from .records import atomic_directory, atomic_file

__all__ = ["save_variants", "load_variants", "save_pruned", "load_pruned"]


def _apply_structure(module: nn.Module, kind: str, pruned_heads: Sequence[int] | None, mask: torch.Tensor | None) -> None:
    """Give a fresh (unpruned) module the structure of a saved pruned one."""
    if kind == "attention":
        prune_heads(module, pruned_heads or [])
    elif mask is not None:
        torch_prune.custom_from_mask(module, "weight", mask=mask)


def save_variants(variants: Mapping[str, Mapping[float, nn.Module]], path: str | os.PathLike, model: nn.Module) -> Path:
    """Write module variants to one file (``torch.save`` of plain tensors and lists; no pickled classes).

    Each entry stores the module name, kind, keep ratio, the removed original head indices
    (attention) and the module's ``state_dict`` (``weight_orig``/``weight_mask`` for masked
    Linears). :func:`load_variants` rebuilds them from the same original model.
    """
    kinds = {m.name: m.kind for m in prunable_modules(model)}
    full = full_num_heads(model)
    entries = []
    for name, by_ratio in variants.items():
        if name not in kinds:
            raise ValueError(f"{name!r} is not a prunable module of this {type(model).__name__}")
        for keep, module in by_ratio.items():
            entries.append({"name": name, "kind": kinds[name], "keep_ratio": float(keep),
                            "pruned_heads": removed_heads(module, full),
                            "state": {k: v.detach().cpu() for k, v in module.state_dict().items()}})
    path = Path(path)
    with atomic_file(path) as tmp:
        torch.save({"format": 1, "variants": entries}, tmp)
    return path


def load_variants(model: nn.Module, path: str | os.PathLike) -> dict[str, dict[float, nn.Module]]:
    """Rebuild the variants written by :func:`save_variants` from the same original ``model``."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != 1:
        raise ValueError(f"{path} is not a variants file written by mpstudy.prune.save_variants")
    variants: dict[str, dict[float, nn.Module]] = {}
    for entry in data["variants"]:
        module = clone_module(model.get_submodule(entry["name"]))
        state = entry["state"]
        _apply_structure(module, entry["kind"], entry["pruned_heads"], state.get("weight_mask"))
        module.load_state_dict(state, strict=True)
        variants.setdefault(entry["name"], {})[entry["keep_ratio"]] = module
    return variants


def save_pruned(model: nn.Module, path: str | os.PathLike, base: str, task: str | None = None,
                tokenizer=None, extra: Mapping[str, Any] | None = None) -> Path:
    """Write a pruned (composed) model to directory ``path``: ``pruned.json`` (the base model
    spec, the task, the removed heads and masked Linears) and ``model.pt`` (its ``state_dict``).

    Args:
        model: the pruned model.
        path: output directory, written through :func:`mpstudy.records.atomic_directory` (a save killed
            at any moment leaves the old model or the new one); an existing one must be a saved
            pruned model, else ``FileExistsError`` before anything is written.
        base: the ``load_model`` spec the model was pruned from (a hub id, ``"minilm"``, a local dir).
        task: the task name whose head the model has.
        tokenizer: saved beside it if given.
        extra: more JSON-able metadata (the configuration, training history...).
    """
    path = Path(path)
    full = full_num_heads(model)
    meta = {
        "format": 1, "base": str(base), "task": task,
        "pruned_heads": {n: removed_heads(m, full) for n, m in model.named_modules()
                         if getattr(m, "mpstudy_kept_heads", None) is not None},
        "masked_linears": [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and hasattr(m, "weight_mask")],
        **(dict(extra) if extra else {}),
    }
    text = json.dumps(meta, indent=2, default=str)  # before anything is written: unserialisable extra fails here
    with atomic_directory(path, marker="pruned.json", kind="a saved pruned model") as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp / "model.pt")
        (tmp / "pruned.json").write_text(text)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return path


def load_pruned(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild a model written by :func:`save_pruned`.

    Returns:
        ``(model, tokenizer, meta)``; the model in eval mode.
    """
    path = Path(path)
    if not (path / "pruned.json").exists():
        raise FileNotFoundError(f"{path} is not a saved pruned model: pruned.json is missing")
    meta = json.loads((path / "pruned.json").read_text())
    model, tokenizer = load_model(meta["base"], task=meta.get("task"))
    state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    for name, heads in meta["pruned_heads"].items():
        prune_heads(model.get_submodule(name), heads)
    for name in meta["masked_linears"]:
        torch_prune.custom_from_mask(model.get_submodule(name), "weight", mask=state[f"{name}.weight_mask"])
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), tokenizer, meta
