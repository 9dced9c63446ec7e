"""Replace modules in place, save and reload compressed models (counts come from ``mpstudy.accounting``)."""
from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as nnqd

from .accounting import budget_count, count_parameters
from .layers.base import LAYER_CLASSES, CompressedLayer
from .layers.int8 import Int8Linear
from .methods import get_method
from .prune import full_num_heads, prune_heads, removed_heads
from .records import atomic_directory
from .targets import group_targets, resolve_targets, set_submodule

__all__ = [
    "CompressionReport",
    "compress",
    "save_compressed",
    "load_compressed",
    "set_submodule",
    "MANIFEST",
    "TOKENIZER_SOURCE",
    "has_tokenizer",
]

MANIFEST = "mpstudy_compressed.json"
#: 2: the manifest also records int8 layers and floating-point dtypes (format 1, without them: all float32)
MANIFEST_FORMAT = 2

_WARNED: set[str] = set()  # deprecated keywords already warned about in this process


def _budget_aliases(budget: dict[str, Any]) -> dict[str, Any]:
    """``ratio=`` (the old name of ``keep``) as ``keep=``, with a DeprecationWarning the first time."""
    if "ratio" not in budget:
        return budget
    budget = dict(budget)
    ratio = budget.pop("ratio")
    if budget.get("keep") is not None and ratio is not None:
        raise ValueError(f"give keep= only (ratio= is its deprecated name), got keep={budget['keep']!r} and ratio={ratio!r}")
    if "ratio" not in _WARNED:
        _WARNED.add("ratio")
        warnings.warn("compress(..., ratio=) is deprecated: the budget is keep= (the fraction of the targeted weights "
                      "kept)", DeprecationWarning, stacklevel=4)
    if budget.get("keep") is None:
        budget["keep"] = ratio
    return budget


@dataclass
class CompressionReport:
    """What ``compress`` did.

    Attributes:
        method, budget, targets: the request.
        params_before / params_after: stored parameters of the targeted modules (weights and
            biases) before and after (``mpstudy.accounting.count_parameters``: a pruned weight is
            still stored, so pruning leaves ``params_after`` unchanged).
        model_params_before / model_params_after: stored parameters of the whole model.
        modules: one record per replaced module: ``name``, ``role``, ``layer``, ``method``,
            ``params_before``, ``params_after``, ``nonzero_after`` (its non-zero stored numbers,
            pruned weights read through their masks), ``rel_error`` (``||W - W'||_F / ||W||_F``;
            ``None`` for a matrix that structured pruning shrank) and the layer's structure
            (e.g. ``rank``; ``heads`` or ``neurons`` left for structured pruning).
        nonzero_after: non-zero numbers of the targeted modules after (what magnitude pruning's
            budget counts, with the biases).
        keep: the requested kept fraction, when the budget was given as ``keep``.
    """

    method: str
    budget: dict[str, Any]
    targets: str | list[str]
    params_before: int
    params_after: int
    model_params_before: int
    model_params_after: int
    modules: list[dict[str, Any]] = field(default_factory=list)
    nonzero_after: int | None = None
    keep: float | None = None

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
    so a bad request leaves the model untouched. A method that edits the model itself
    (``Method.apply``: structured pruning shrinks attention blocks) checks everything before
    its first edit.

    Args:
        model: a Hugging Face model (or any module, with ``targets='re:...'``).
        method: a name in ``mpstudy.methods.METHODS`` (``"svd"``...).
        targets: see ``mpstudy.targets.resolve_targets`` (roles, groups, or ``re:`` regexes).
        **budget: the method's budget: ``keep=0.5`` (the fraction of the targeted weights kept,
            which every registered method takes but the precision methods ``bf16`` and ``int8``; a
            method with a discrete structure searches for it, see ``Method.for_budget``) or the
            method's own keywords, e.g. ``rank=64`` for ``"svd"``.
            ``ratio=`` is a deprecated name of ``keep=`` (it warns once). A ``keep`` whose result
            stores no fewer numbers than the targeted dense weights is refused (a ``ValueError``
            naming the growth), for every method; ``allow_no_saving=True`` accepts it.

    Targets whose weight holds NaN or inf, or is all zeros (its relative error is undefined), and
    a ``re:`` target that is no valid regular expression are refused before anything is built.

    Returns:
        A ``CompressionReport``; its ``budget`` holds the keywords the method used (``keep``
        resolved, e.g. ``{"max_bond": 7}`` for ``"mpo"``) and ``keep`` the requested fraction.
    """
    spec = get_method(method)
    budget = _budget_aliases(budget)
    # allow_no_saving=True accepts a result that stores no fewer numbers than the dense weights, for every
    # method (the svd family also reads it per matrix); without it such a result is refused below
    allow_no_saving = bool(budget.get("allow_no_saving", False))
    if "allow_no_saving" not in spec.budget_keys:
        budget.pop("allow_no_saving", None)
    budget = spec.check_budget(budget)
    keep = budget.get("keep")
    try:
        chosen = resolve_targets(model, targets, module_types=spec.dense_types)
    except re.error as err:  # a bad re:<regex>: the regex module's message names no option
        raise ValueError(f"targets {targets!r} is not a valid regular expression ({err})") from err
    # an ``apply`` method may edit a target in place (bf16 casts it, int8 swaps a factorized layer's inner
    # Linears): the weights the report's errors compare against are copied before it runs
    originals: dict[str, torch.Tensor] = {}
    for t in chosen:  # a NaN would surface as a LAPACK failure (or a silently NaN factor) deep in a method
        weight = _weight(t.module)
        finite = torch.isfinite(weight)
        if not finite.all():
            raise ValueError(f"{t.name}.weight has {int((~finite).sum())} NaN or inf entries (of {finite.numel()}); "
                             "compression needs finite weights")
        if not weight.any():  # its relative error would be 0/0 (NaN in the report), magnitude pruning has no order
            raise ValueError(f"{t.name}.weight is all zeros ({weight.numel()} entries): nothing to compress and no "
                             "relative error to report; leave it out of targets")
        if spec.apply is not None:
            originals[t.name] = weight.detach().clone()
    budget = spec.resolve_keep(chosen, budget)
    model_before = count_parameters(model, nonzero=False)["stored"]

    structures: dict[str, dict[str, Any]] = {}
    if spec.apply is not None:  # the method edits the model; what sits at each target's name afterwards is its result
        structures = spec.apply(model, chosen, budget)
        replacements = {t.name: model.get_submodule(t.name) for t in chosen}
    else:
        replacements = {}
        for group in group_targets(chosen, spec.grouping):
            replacements.update(spec.compress_group(group, budget))
        if keep is not None and not allow_no_saving:
            _refuse_growth(method, keep, chosen, replacements)

    records = []
    for t in chosen:
        new = replacements[t.name]
        dense_w = originals[t.name] if t.name in originals else _weight(t.module)
        before = count_parameters(t.module, nonzero=False)["stored"]
        after = count_parameters(new)
        new_w = new.to_dense() if isinstance(new, CompressedLayer) else _weight(new)
        # a shrunk matrix (structured pruning) has no entry-by-entry error against the dense one
        error = (float(torch.linalg.norm(dense_w - new_w) / torch.linalg.norm(dense_w))
                 if new_w.shape == dense_w.shape else None)
        structure = new.init_kwargs() if isinstance(new, CompressedLayer) else structures.get(t.name, {})
        records.append(
            {"name": t.name, "role": t.role, "layer": t.layer, "stack": t.stack, "method": method,
             "shape": list(dense_w.shape), "params_before": before, "params_after": after["stored"],
             "nonzero_after": after["nonzero"],
             "rel_error": error, **{k: v for k, v in structure.items() if k not in ("in_features", "out_features", "bias")}}
        )
    if spec.apply is None:
        for name, new in replacements.items():
            set_submodule(model, name, new)

    return CompressionReport(
        method=method,
        budget=budget,
        targets=targets,
        params_before=sum(r["params_before"] for r in records),
        params_after=sum(r["params_after"] for r in records),
        model_params_before=model_before,
        model_params_after=count_parameters(model, nonzero=False)["stored"],
        modules=records,
        nonzero_after=sum(r["nonzero_after"] for r in records),
        keep=keep,
    )


def _refuse_growth(method: str, keep: float, chosen: list, replacements: dict[str, nn.Module]) -> None:
    """Refuse replacements asked for as a kept fraction ``keep`` that store at least as many numbers as the
    dense weights they replace (counted as budgets count, :func:`mpstudy.accounting.budget_count`: biases
    out, shared factors once). A structure given as a count (``rank``, ``ranks``, ``max_bond``, ``k``) is
    the caller's: the exact decompositions the tests and MPOP (Gao et al., 2022: its MPOs may store more
    than the matrices, only their small auxiliary tensors train) build are larger on purpose, and the
    report says what they store; ``mpstudy compress``, asked to make a model smaller, refuses them too.
    """
    before = budget_count(nn.ModuleList([t.module for t in chosen]))
    after = budget_count(nn.ModuleList(list(replacements.values())))
    if after >= before:
        raise ValueError(f"{method} at keep={keep} stores {after:,} numbers for the {before:,} targeted weights "
                         f"({after / before:.3g}x): it saves nothing (a keep below {min(1.0, before / after * keep):.3g} "
                         "would); pass allow_no_saving=True to accept it")


def _compressed_modules(model: nn.Module) -> dict[str, CompressedLayer]:
    """Outermost compressed layers of ``model`` by name."""
    found: dict[str, CompressedLayer] = {}
    for name, module in model.named_modules():
        if isinstance(module, CompressedLayer) and not any(name.startswith(p + ".") for p in found):
            found[name] = module
    return found


#: the attribute ``load_model`` and ``load_compressed`` set on a model: where its tokenizer loads from
#: (a string, so ``copy.deepcopy`` and pickling carry it); ``save_compressed`` saves that tokenizer when
#: it is given none
TOKENIZER_SOURCE = "mpstudy_tokenizer_source"
#: files of which at least one makes a directory hold a tokenizer
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "source.spm", "tokenizer.model")


def has_tokenizer(path: str | os.PathLike) -> bool:
    """Whether directory ``path`` holds tokenizer files (``tokenizer.json``, ``vocab.txt``, ``spiece.model``...)."""
    return any((Path(path) / name).is_file() for name in TOKENIZER_FILES)


def _default_tokenizer(model: nn.Module):
    """The tokenizer the model was loaded with (see :data:`TOKENIZER_SOURCE`); ``None``, with a warning, when
    it has none (a model built by hand): its directory is then refused by ``load_model``, never read with a
    vocabulary-less tokenizer."""
    source = getattr(model, TOKENIZER_SOURCE, None)
    if not source:
        warnings.warn("save_compressed: no tokenizer given and none known for this model, so none is saved; "
                      "load_model will refuse the directory (pass tokenizer=, or tokenizer=False to silence this)",
                      UserWarning, stacklevel=3)
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ValueError(f"could not reload the model's tokenizer from {source} ({_first_line(err)}); pass tokenizer=") from err


def save_compressed(model: nn.Module, path: str | os.PathLike, tokenizer=None) -> Path:
    """Write a compressed model to directory ``path``; ``load_compressed(path)`` rebuilds it exactly.

    The directory holds the Hugging Face ``config.json``, ``mpstudy_compressed.json`` (the model
    class; for each replaced module, its layer class and constructor arguments; the structure
    pruning left; the int8 layers' shapes and schemes; the floating-point dtype of the weights),
    the weights as ``model.safetensors`` and the tokenizer: ``tokenizer`` if given, else the one the
    model was loaded with (``load_model`` / ``load_compressed`` record where it came from);
    ``tokenizer=False`` saves the weights alone, as does a model with neither (with a warning):
    ``load_model`` refuses such a directory, ``load_compressed`` reads it. An int8 layer
    (:class:`~mpstudy.layers.int8.Int8Linear`) is written as plain tensors (its int8 weight,
    float32 scales, int32 zero points and float32 bias), which safetensors holds, and packed again
    on load; a bfloat16 model stays bfloat16. It is written through
    :func:`mpstudy.records.atomic_directory`, so a save killed at any moment leaves the old model
    or the new one, never a mix. An existing directory is replaced only if it is itself a saved
    compressed model (``FileExistsError`` otherwise, before anything is written).
    """
    from safetensors.torch import save_model

    path = Path(path)
    if not hasattr(getattr(model, "config", None), "save_pretrained"):
        raise TypeError(f"save_compressed needs a Hugging Face model (with a .config), got {type(model).__name__}")
    tokenizer = None if tokenizer is False else tokenizer if tokenizer is not None else _default_tokenizer(model)
    manifest = {
        "format": MANIFEST_FORMAT,
        "model_class": type(model).__name__,
        "modules": {
            name: {"class": type(m).__name__, "kwargs": m.init_kwargs()} for name, m in _compressed_modules(model).items()
        },
        **_pruned_structure(model),
        "int8": _int8_structure(model),
        **_float_dtypes(model),
    }
    with atomic_directory(path, marker=MANIFEST, kind="a saved mpstudy model") as tmp:
        model.config.save_pretrained(tmp)
        _guard_plain_loading(tmp / "config.json")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        save_model(model, str(tmp / "model.safetensors"))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return path


#: what a saved model's ``config.json`` gives as ``transformers_weights``, the file transformers'
#: ``from_pretrained`` is to load the weights from: a name that is not a ``.safetensors`` file, which
#: transformers (5.x) refuses quoting it, so plain loading fails with this text instead of silently
#: building random compressed layers (``tests/test_export.py`` checks it on the installed transformers)
PLAIN_LOAD_GUARD = ("a model saved by mpstudy.save_compressed: transformers cannot load it, use "
                    "mpstudy.load_compressed(path), or mpstudy.merge for a plain checkpoint")


def _guard_plain_loading(config_file: Path) -> None:
    """Add :data:`PLAIN_LOAD_GUARD` to a written ``config.json`` (``save_pretrained`` drops the key on save)."""
    config = json.loads(config_file.read_text())
    config["transformers_weights"] = PLAIN_LOAD_GUARD
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _hub_snapshot(spec: str | os.PathLike) -> Path:
    """``spec`` itself when it is an existing directory; otherwise a Hugging Face hub id (``org/name``)
    fetched by ``huggingface_hub.snapshot_download`` (from the local cache only when offline:
    ``HF_HUB_OFFLINE=1``), returning the snapshot's directory. Anything else is returned as given."""
    path = Path(spec)
    text = os.fspath(spec)
    if path.exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", text) or text.startswith((".", "/")):
        return path
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    offline = bool(constants.HF_HUB_OFFLINE)
    try:
        return Path(snapshot_download(text, local_files_only=offline))
    except (LocalEntryNotFoundError, HFValidationError, OSError) as err:
        where = f"offline, and not in the hub cache {constants.HF_HUB_CACHE}" if offline else _first_line(err)
        raise FileNotFoundError(f"{text!r} is neither a local directory nor a hub repository that could be fetched "
                                f"({where})") from err


def load_compressed(path: str | os.PathLike) -> nn.Module:
    """Rebuild a model written by ``save_compressed``, in eval mode.

    ``path``: the directory, or a Hugging Face hub id (``org/name``) of a repository holding one,
    fetched through ``huggingface_hub`` (from the local cache only, when ``HF_HUB_OFFLINE=1``).
    A directory that is incomplete, corrupted (unreadable manifest or weights, NaN or inf values)
    or inconsistent (weights that do not fit the manifest's layers) raises a one-line
    ``ValueError`` (``FileNotFoundError`` for a missing file) naming the file.
    """
    import transformers
    from safetensors.torch import load_model

    path = _hub_snapshot(path)
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
    if manifest.get("format", 1) not in (1, MANIFEST_FORMAT):
        raise ValueError(f"{path / MANIFEST} has format {manifest.get('format')!r}; this mpstudy reads formats 1 and "
                         f"{MANIFEST_FORMAT}")
    try:
        config = transformers.AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path / 'config.json'} is corrupted ({_first_line(err)})") from err
    if hasattr(config, "transformers_weights"):  # the guard against plain loading (see _guard_plain_loading)
        delattr(config, "transformers_weights")
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
        _apply_pruned_structure(model, manifest)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as err:  # edited or mismatched manifest
        raise ValueError(f"{path / MANIFEST}: cannot rebuild the pruned structure ({_first_line(err)})") from err
    try:
        _apply_float_dtypes(model, manifest)
        _apply_int8_structure(model, manifest)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as err:  # edited or mismatched manifest
        raise ValueError(f"{path / MANIFEST}: cannot rebuild the dtypes or int8 layers ({_first_line(err)})") from err
    try:
        _check_file_dtypes(model, weights)  # loading would cast silently: a bfloat16 file into float32 weights
        load_model(model, str(weights), strict=True)
    except Exception as err:  # noqa: BLE001 - safetensors' SafetensorError, torch's size-mismatch RuntimeError
        raise ValueError(f"{weights} is corrupted or does not match {MANIFEST} ({_first_line(err)})") from err
    bad = [k for k, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"{weights} holds NaN or inf values in {len(bad)} tensor(s), e.g. {bad[0]}; the saved model is corrupted")
    if has_tokenizer(path):  # a later save_compressed(model, ...) saves this tokenizer again
        setattr(model, TOKENIZER_SOURCE, str(path.resolve()))
    return model.eval()


def _pruned_structure(model: nn.Module) -> dict[str, Any]:
    """What structured pruning changed, for the manifest: removed heads per attention block and the
    shapes of plain Linears that no longer have the size the config builds (pruned FFN neurons).

    The reference sizes come from the same model class built from the config on the meta device
    (no memory), with the same heads removed.
    """
    attention = {n: m for n, m in model.named_modules() if getattr(m, "mpstudy_kept_heads", None) is not None}
    if not attention:
        heads: dict[str, list[int]] = {}
    else:
        full = full_num_heads(model)
        heads = {n: removed_heads(m, full) for n, m in attention.items()}
    with torch.device("meta"):
        reference = type(model)(model.config)
    for name, removed in heads.items():
        prune_heads(reference.get_submodule(name), removed)
    inside = tuple(f"{n}." for n in _compressed_modules(model))
    resized = {}
    for name, module in model.named_modules():
        if type(module) is nn.Linear and not name.startswith(inside):
            ref = reference.get_submodule(name)
            if tuple(ref.weight.shape) != tuple(module.weight.shape):
                resized[name] = [module.out_features, module.in_features, module.bias is not None]
    return {"pruned_heads": {n: h for n, h in heads.items() if h}, "resized_linears": resized}


def _apply_pruned_structure(model: nn.Module, manifest: dict[str, Any]) -> None:
    """Give a freshly built model the pruned structure a manifest records (see :func:`_pruned_structure`)."""
    for name, removed in dict(manifest.get("pruned_heads", {})).items():
        prune_heads(model.get_submodule(name), [int(h) for h in removed])
    for name, (out_features, in_features, bias) in dict(manifest.get("resized_linears", {})).items():
        old = model.get_submodule(name)
        if type(old) is not nn.Linear:
            raise ValueError(f"{name} is a {type(old).__name__}, not a Linear")
        set_submodule(model, name, nn.Linear(int(in_features), int(out_features), bias=bool(bias)))


def _int8_structure(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The int8 layers, for the manifest: ``{name: Int8Linear.init_kwargs()}`` (shape, bias, per channel).

    Raises:
        TypeError: a dynamically quantized Linear that is not an ``Int8Linear`` (one made by torch's
            ``quantize_dynamic`` stores a packed tuple safetensors cannot hold).
    """
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, Int8Linear):
            out[name] = module.init_kwargs()
        elif isinstance(module, nnqd.Linear):
            raise TypeError(f"save_compressed saves the int8 layers of compress(model, 'int8') (Int8Linear); {name} is "
                            f"torch's {module._get_name()}: quantize with compress(model, 'int8') instead")
    return out


def _apply_int8_structure(model: nn.Module, manifest: dict[str, Any]) -> None:
    """Put an empty ``Int8Linear`` at each name the manifest's ``int8`` lists (the weights fill them)."""
    for name, kwargs in dict(manifest.get("int8", {})).items():
        model.get_submodule(name)  # the place must exist (a pruned or factorized model rebuilt first)
        set_submodule(model, name, Int8Linear(**kwargs))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _float_dtypes(model: nn.Module) -> dict[str, Any]:
    """The floating-point dtype of the model's parameters and buffers, for the manifest: ``dtype`` (the
    most common one) and ``dtypes`` (the names of the tensors that differ from it)."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    names = {name: _dtype_name(t.dtype) for name, t in tensors if t.is_floating_point()}
    counts: dict[str, int] = {}
    for dtype in names.values():
        counts[dtype] = counts.get(dtype, 0) + 1
    common = max(counts, key=counts.get) if counts else "float32"
    return {"dtype": common, "dtypes": {n: d for n, d in names.items() if d != common}}


def _apply_float_dtypes(model: nn.Module, manifest: dict[str, Any]) -> None:
    """Cast a freshly built (float32) model to the dtypes a manifest records (format 1: float32)."""
    common = getattr(torch, str(manifest.get("dtype", "float32")), None)
    if not isinstance(common, torch.dtype) or not common.is_floating_point:
        raise ValueError(f"dtype {manifest.get('dtype')!r} is not a floating-point torch dtype")
    if common != torch.float32:
        model.to(common)
    for name, dtype_name in dict(manifest.get("dtypes", {})).items():
        dtype = getattr(torch, str(dtype_name), None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype {dtype_name!r} of {name} is not a floating-point torch dtype")
        owner, _, leaf = name.rpartition(".")
        module = model.get_submodule(owner)
        if leaf in module._parameters:
            module._parameters[leaf].data = module._parameters[leaf].data.to(dtype)  # in place: ties survive
        elif leaf in module._buffers:
            module._buffers[leaf] = module._buffers[leaf].to(dtype)
        else:
            raise ValueError(f"{name} is neither a parameter nor a buffer")


#: safetensors' dtype codes of the dtypes a saved model holds
_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64",
                       torch.int8: "I8", torch.uint8: "U8", torch.int32: "I32", torch.int64: "I64", torch.bool: "BOOL"}


def _check_file_dtypes(model: nn.Module, weights: Path) -> None:
    """Refuse a weights file whose tensors' dtypes differ from the rebuilt model's (torch would cast them)."""
    from safetensors import safe_open

    expected = {k: _SAFETENSORS_DTYPES.get(t.dtype) for k, t in model.state_dict().items()}
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():
            stored, want = f.get_slice(key).get_dtype(), expected.get(key)
            if want is not None and stored != want:
                raise ValueError(f"{key} is stored as {stored}, the manifest makes it {want}")


def _first_line(err: BaseException) -> str:
    """An exception's message on one line (torch's state-dict errors span many), at most 300 characters."""
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."
