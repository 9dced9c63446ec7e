"""Replace modules in place, count parameters honestly, save and reload compressed models."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .layers.base import LAYER_CLASSES, CompressedLayer
from .methods import get_method
from .targets import group_targets, resolve_targets, set_submodule

__all__ = [
    "CompressionReport",
    "compress",
    "count_parameters",
    "save_compressed",
    "load_compressed",
    "set_submodule",
    "MANIFEST",
]

MANIFEST = "mpstudy_compressed.json"


def _unique_params(module: nn.Module) -> list[nn.Parameter]:
    # Shared tensors (ALBERT's layer, tied embeddings) are stored once, so they count once.
    return list({id(p): p for p in module.parameters()}.values())


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter accounting used in every table of the study.

    Returns:
        ``stored``: weights held in memory, each shared tensor counted once (pruning masks,
        buffers and position ids are not parameters and are not counted);
        ``trainable``: those with ``requires_grad``; ``frozen``: the rest;
        ``nonzero``: stored weights that are not zero, read through the effective weight
        when a module is pruned with ``torch.nn.utils.prune`` (``weight = weight_orig * mask``).
    """
    params = _unique_params(model)
    stored = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    nonzero, seen = 0, set()
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            pruned_name = pname[: -len("_orig")] if pname.endswith("_orig") else None
            effective = getattr(module, pruned_name) if pruned_name and hasattr(module, pruned_name) else p
            nonzero += int(torch.count_nonzero(effective))
    return {"stored": stored, "trainable": trainable, "frozen": stored - trainable, "nonzero": nonzero}


@dataclass
class CompressionReport:
    """What ``compress`` did.

    Attributes:
        method, budget, targets: the request.
        params_before / params_after: stored parameters of the targeted modules (weights and
            biases) before and after.
        model_params_before / model_params_after: stored parameters of the whole model.
        modules: one record per replaced module: ``name``, ``role``, ``layer``, ``method``,
            ``params_before``, ``params_after``, ``rel_error`` (``||W - W'||_F / ||W||_F``) and the
            layer's structure (e.g. ``rank``).
    """

    method: str
    budget: dict[str, Any]
    targets: str | list[str]
    params_before: int
    params_after: int
    model_params_before: int
    model_params_after: int
    modules: list[dict[str, Any]] = field(default_factory=list)

    @property
    def kept_fraction(self) -> float:
        """``params_after / params_before`` over the targeted modules."""
        return self.params_after / self.params_before

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"kept_fraction": self.kept_fraction}

    def to_frame(self):
        """The per-module records as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.modules)


def _weight(module: nn.Module) -> torch.Tensor:
    return module.weight


@torch.no_grad()
def compress(model: nn.Module, method: str, targets: str | list[str] = "all-linear", **budget: Any) -> CompressionReport:
    """Compress ``model`` in place with a registered method.

    Every replacement is built (and every budget checked) before the first module is swapped,
    so a bad request leaves the model untouched.

    Args:
        model: a Hugging Face model (or any module, with ``targets='re:...'``).
        method: a name in ``mpstudy.methods.METHODS`` (``"svd"``...).
        targets: see ``mpstudy.targets.resolve_targets`` (roles, groups, or ``re:`` regexes).
        **budget: the method's budget, e.g. ``rank=64`` or ``ratio=0.5`` for ``"svd"``.

    Returns:
        A ``CompressionReport``.
    """
    spec = get_method(method)
    budget = spec.check_budget(budget)
    chosen = resolve_targets(model, targets, module_types=spec.dense_types)
    for t in chosen:  # a NaN would surface as a LAPACK failure (or a silently NaN factor) deep in a method
        finite = torch.isfinite(_weight(t.module))
        if not finite.all():
            raise ValueError(f"{t.name}.weight has {int((~finite).sum())} NaN or inf entries (of {finite.numel()}); "
                             "compression needs finite weights")
    model_before = count_parameters(model)["stored"]

    replacements: dict[str, nn.Module] = {}
    for group in group_targets(chosen, spec.grouping):
        replacements.update(spec.compress_group(group, budget))

    records = []
    for t in chosen:
        new = replacements[t.name]
        dense_w = _weight(t.module)
        before = sum(p.numel() for p in t.module.parameters())
        error = torch.linalg.norm(dense_w - new.to_dense()) / torch.linalg.norm(dense_w)
        structure = new.init_kwargs() if isinstance(new, CompressedLayer) else {}
        records.append(
            {"name": t.name, "role": t.role, "layer": t.layer, "stack": t.stack, "method": method,
             "shape": list(dense_w.shape), "params_before": before, "params_after": new.num_params(),
             "rel_error": float(error), **{k: v for k, v in structure.items() if k not in ("in_features", "out_features", "bias")}}
        )
    for name, new in replacements.items():
        set_submodule(model, name, new)

    return CompressionReport(
        method=method,
        budget=budget,
        targets=targets,
        params_before=sum(r["params_before"] for r in records),
        params_after=sum(r["params_after"] for r in records),
        model_params_before=model_before,
        model_params_after=count_parameters(model)["stored"],
        modules=records,
    )


def _compressed_modules(model: nn.Module) -> dict[str, CompressedLayer]:
    """Outermost compressed layers of ``model`` by name."""
    found: dict[str, CompressedLayer] = {}
    for name, module in model.named_modules():
        if isinstance(module, CompressedLayer) and not any(name.startswith(p + ".") for p in found):
            found[name] = module
    return found


def save_compressed(model: nn.Module, path: str | os.PathLike, tokenizer=None) -> Path:
    """Write a compressed model to directory ``path``; ``load_compressed(path)`` rebuilds it exactly.

    The directory holds the Hugging Face ``config.json``, ``mpstudy_compressed.json`` (the model
    class and, for each replaced module, its layer class and constructor arguments), the weights
    as ``model.safetensors`` and, if given, the tokenizer. It is written to a temporary sibling
    and renamed, so an interrupted save never leaves a half-written model. An existing directory
    is replaced only if it is itself a saved compressed model.
    """
    from safetensors.torch import save_model

    path = Path(path)
    if not hasattr(getattr(model, "config", None), "save_pretrained"):
        raise TypeError(f"save_compressed needs a Hugging Face model (with a .config), got {type(model).__name__}")
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / MANIFEST).exists())):
        raise FileExistsError(f"{path} exists and is not a saved mpstudy model; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": 1,
        "model_class": type(model).__name__,
        "modules": {
            name: {"class": type(m).__name__, "kwargs": m.init_kwargs()} for name, m in _compressed_modules(model).items()
        },
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        model.config.save_pretrained(tmp)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        save_model(model, str(tmp / "model.safetensors"))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_compressed(path: str | os.PathLike) -> nn.Module:
    """Rebuild a model written by ``save_compressed``, in eval mode.

    A directory that is incomplete, corrupted (unreadable manifest or weights, NaN or inf values)
    or inconsistent (weights that do not fit the manifest's layers) raises a one-line
    ``ValueError`` (``FileNotFoundError`` for a missing file) naming the file.
    """
    import transformers
    from safetensors.torch import load_model

    path = Path(path)
    weights = path / "model.safetensors"
    if not (path / MANIFEST).is_file():
        raise FileNotFoundError(f"{path} is not a saved mpstudy model: {MANIFEST} is missing")
    for required in (path / "config.json", weights):
        if not required.is_file():
            raise FileNotFoundError(f"{path} is an incomplete saved mpstudy model: {required.name} is missing")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        model_class, modules = manifest["model_class"], dict(manifest["modules"])
    except (ValueError, KeyError, TypeError) as err:  # bad JSON, bad UTF-8, missing keys
        raise ValueError(f"{path / MANIFEST} is corrupted ({type(err).__name__}: {_first_line(err)})") from err
    try:
        config = transformers.AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path / 'config.json'} is corrupted ({_first_line(err)})") from err
    model_cls = getattr(transformers, str(model_class), None)
    if model_cls is None:
        raise ValueError(f"transformers has no model class {model_class!r} (saved in {path / MANIFEST})")
    model = model_cls(config)
    for name, entry in modules.items():
        layer_class = entry.get("class") if isinstance(entry, dict) else None
        if layer_class not in LAYER_CLASSES:
            raise ValueError(f"unknown compressed layer {layer_class!r} for {name} in {path / MANIFEST}; known: {sorted(LAYER_CLASSES)}")
        try:
            set_submodule(model, name, LAYER_CLASSES[layer_class](**entry.get("kwargs", {})))
        except (TypeError, ValueError, AttributeError) as err:  # edited or mismatched manifest
            raise ValueError(f"{path / MANIFEST}: cannot rebuild {name} as {layer_class} ({_first_line(err)})") from err
    try:
        load_model(model, str(weights), strict=True)
    except Exception as err:  # noqa: BLE001 - safetensors' SafetensorError, torch's size-mismatch RuntimeError
        raise ValueError(f"{weights} is corrupted or does not match {MANIFEST} ({_first_line(err)})") from err
    bad = [k for k, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"{weights} holds NaN or inf values in {len(bad)} tensor(s), e.g. {bad[0]}; the saved model is corrupted")
    return model.eval()


def _first_line(err: BaseException) -> str:
    """An exception's message on one line (torch's state-dict errors span many), at most 300 characters."""
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."
