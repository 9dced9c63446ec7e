"""Leaving mpstudy: a compressed model turned back into a plain Hugging Face model.

``merge(model)`` is to a compressed model what PEFT's ``merge_and_unload`` is to an adapted one:

* every compressed layer (:class:`~mpstudy.layers.base.CompressedLayer`: SVD, MPO, Tucker, FALCON,
  Kronecker, autoencoder, magnitude-pruned...) becomes a plain ``nn.Linear`` / ``nn.Embedding``
  holding ``to_dense()`` (the matrix it computes with) and its bias;
* pruning re-parametrizations on plain modules (``torch.nn.utils.prune``'s ``weight_orig`` /
  ``weight_mask``, ``torch.nn.utils.parametrize``) are made permanent: the zeros stay, the masks go;
* a PEFT model is merged first (``merge_and_unload``), so "compress, then recover with LoRA" ends
  as one plain model;
* FFN neurons pruned by the same count in every layer become the config's new FFN width
  (``intermediate_size``, ``d_ff``...).

The result is the same Hugging Face model object (edited in place), whose ``save_pretrained``
directory plain ``from_pretrained`` reloads with the same logits (``tests/test_export.py`` checks
every registered method). Where plain transformers cannot hold the structure (attention heads
removed, FFN widths that differ between layers: its classes build every layer from one config),
``merge`` refuses in one line before touching the model, naming ``mpstudy.save_compressed``, the
format that can. int8 layers compute with int8 activations, which plain transformers has no layer
for: they are refused unless ``dequantize=True`` (float32 weights ``(int8 - zero) * scale``, so the
logits change by the activation quantization's error).

Merging keeps the compressed model's *values*, not its savings: a rank-64 SVD layer becomes a
full matrix again. It is the way out for people who need a standard checkpoint (serving stacks,
the hub, sentence-transformers); keep the ``save_compressed`` directory for the small one.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as nnqd
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune

from .layers.base import CompressedLayer
from .layers.int8 import Int8Linear, quiet_quantization
from .records import _refuse_foreign, atomic_directory  # the refusal atomic_directory makes, checked before merging
from .targets import set_submodule

__all__ = ["merge", "save_merged", "save_sentence_transformer", "check_destination", "MERGED_MARKER", "FFN_SIZE_ATTRS"]

#: the file ``save_merged`` adds next to the plain checkpoint: what it was merged from (and the
#: marker that lets a later ``save_merged`` replace the directory)
MERGED_MARKER = "mpstudy_merged.json"

#: config attributes that set the FFN width, tried when FFN neurons were pruned by the same count in every layer
FFN_SIZE_ATTRS = ("intermediate_size", "d_ff", "ffn_dim", "encoder_ffn_dim", "decoder_ffn_dim", "hidden_dim")

_SAVE_HINT = "save it with mpstudy.save_compressed(model, path) instead (reloaded by mpstudy.load_compressed)"


def _outermost(model: nn.Module, kinds: tuple[type, ...]) -> dict[str, nn.Module]:
    """Modules of ``kinds`` by name, leaving out those inside another one found."""
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if isinstance(module, kinds) and not any(name.startswith(p + ".") for p in found):
            found[name] = module
    return found


def _kind(layer: nn.Module) -> str:
    """``"linear"`` or ``"embedding"``: what dense module ``layer`` stands in for."""
    kind = getattr(layer, "kind", None)
    if kind in ("linear", "embedding"):
        return kind
    return "embedding" if getattr(layer, "dense_type", nn.Linear) is nn.Embedding else "linear"


_MISSING = object()


def _bias(layer: nn.Module) -> torch.Tensor | None:
    """A compressed Linear's bias, wherever its class keeps it (own ``bias``, ``second.bias`` of
    :class:`~mpstudy.layers.lowrank.LowRankLinear`, ``inner.bias`` of a magnitude-pruned layer)."""
    for path in ("bias", "second.bias", "inner.bias"):
        obj: Any = layer
        for part in path.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                obj = _MISSING
                break
        if obj is not _MISSING:
            return obj
    return None


@torch.no_grad()
def _dense_module(name: str, layer: nn.Module, check: bool) -> nn.Module:
    """The plain ``nn.Linear`` / ``nn.Embedding`` computing what ``layer`` computes.

    With ``check``, both run on a seeded probe (3 random inputs for a Linear, up to 64 rows for an
    Embedding) and must agree to 1e-4 of the output's scale (2e-2 in 16-bit floats): a layer
    whose ``to_dense()`` or bias were not what its forward uses is caught here, not after saving.
    """
    weight = layer.to_dense().detach()
    if _kind(layer) == "embedding":
        dense: nn.Module = nn.Embedding(weight.shape[0], weight.shape[1], padding_idx=getattr(layer, "padding_idx", None),
                                        device=weight.device, dtype=weight.dtype)
        dense.weight.copy_(weight)
        probe = torch.arange(min(64, weight.shape[0]), device=weight.device)
    else:
        bias = _bias(layer)
        dense = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
        dense.weight.copy_(weight)
        if bias is not None:
            dense.bias.copy_(bias.detach().to(weight.dtype))
        generator = torch.Generator(device="cpu").manual_seed(0)
        probe = torch.randn(3, weight.shape[1], generator=generator).to(weight.device, weight.dtype)
    dense.train(layer.training)
    if check and not isinstance(layer, nnqd.Linear) and not any(isinstance(m, nnqd.Linear) for m in layer.modules()):
        was_training = layer.training
        layer.eval()
        try:
            want, got = layer(probe), dense(probe)
        finally:
            layer.train(was_training)
        tol = 1e-4 if weight.dtype in (torch.float32, torch.float64) else 2e-2
        err, scale = float((want - got).abs().max()), float(want.abs().max())
        if not err <= tol * (scale + 1e-6):
            raise ValueError(f"merge: the dense {_kind(layer)} for {name} ({type(layer).__name__}) does not compute what "
                             f"the layer computes (max |diff| {err:.3g} against outputs up to {scale:.3g}); its "
                             "to_dense() or bias is wrong")
    return dense


def _state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The model's state-dict entries and shapes as they will be once pruning masks and
    parametrizations are made permanent (``x.weight_orig`` + ``x.weight_mask`` -> ``x.weight``)."""
    state = model.state_dict(keep_vars=True)
    out: dict[str, tuple[int, ...]] = {}
    for key, tensor in state.items():
        if key.endswith("_mask") and key[:-5] + "_orig" in state:
            continue
        if key.endswith("_orig") and key[:-5] + "_mask" in state:
            key = key[:-5]
        para = re.match(r"(.*?)\.?parametrizations\.(\w+)\.original\d*$", key)
        if para:
            owner, leaf = para.groups()
            key = f"{owner}.{leaf}" if owner else leaf
            tensor = getattr(model.get_submodule(owner), leaf)
        out[key] = tuple(tensor.shape)
    return out


def _reference(model: nn.Module, config) -> nn.Module:
    """A fresh model of ``model``'s class built from ``config`` on the meta device (no memory)."""
    with torch.device("meta"):
        return type(model)(config)


def _mismatches(model: nn.Module, reference: nn.Module) -> list[str]:
    """Where ``model`` differs from what its class builds from its config: state-dict keys,
    shapes and module classes, each as one phrase (empty when plain transformers can hold it)."""
    got, ref = _state_shapes(model), {k: tuple(t.shape) for k, t in reference.state_dict().items()}
    problems = []
    for key in sorted(set(got) | set(ref)):
        if key not in ref:
            problems.append(f"{key} (a tensor {type(model).__name__} does not have)")
        elif key not in got:
            problems.append(f"{key} (missing; {type(model).__name__} has it)")
        elif got[key] != ref[key]:
            problems.append(f"{key} is {got[key]} where {type(model).__name__} built from its config holds {ref[key]}")
    ref_modules = dict(reference.named_modules())
    for name, module in model.named_modules():
        if ".parametrizations" in f".{name}" or name not in ref_modules:
            continue
        cls = type(module).__bases__[0] if parametrize.is_parametrized(module) else type(module)  # torch's ParametrizedLinear
        if cls is not type(ref_modules[name]):
            problems.append(f"{name} is a {cls.__name__}, not the {type(ref_modules[name]).__name__} its class builds")
    return problems


def _config_for(model: nn.Module) -> tuple[Any, list[str]]:
    """The config plain transformers needs to rebuild ``model`` (a copy, an FFN width changed when
    FFN neurons were pruned by the same count in every layer) and the mismatches left (empty: fits)."""
    import copy

    config = copy.deepcopy(model.config)
    problems = _mismatches(model, _reference(model, config))
    if not problems:
        return config, []
    got, ref = _state_shapes(model), {k: tuple(t.shape) for k, t in _reference(model, config).state_dict().items()}
    changes = {(r, g) for k in got.keys() & ref.keys() if got[k] != ref[k] and len(got[k]) == len(ref[k])
               for r, g in zip(ref[k], got[k]) if r != g}
    if len(changes) == 1:  # one width changed everywhere: an FFN pruned evenly?
        (old, new), = changes
        for attr in FFN_SIZE_ATTRS:
            if getattr(config, attr, None) == old:
                trial = copy.deepcopy(config)
                setattr(trial, attr, new)
                if not _mismatches(model, _reference(model, trial)):
                    return trial, []
    return config, problems


def _removed_heads(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Attention blocks that structured pruning left with fewer heads: ``{name: (heads left, heads before)}``."""
    from .prune import full_num_heads

    out = {}
    for name, module in model.named_modules():
        kept = getattr(module, "mpstudy_kept_heads", None)
        if kept is not None:
            full = int(getattr(module, "full_num_heads", None) or full_num_heads(model))
            if len(kept) < full:
                out[name] = (len(kept), full)
    return out


def _sentence_transformer_encoders(model: nn.Module) -> list[nn.Module]:
    """The Hugging Face models inside a sentence-transformers model (its ``Transformer`` modules'
    ``auto_model``); empty for anything else."""
    if not any(c.__name__ == "SentenceTransformer" for c in type(model).__mro__):
        return []
    return [m.auto_model for m in model.children() if isinstance(getattr(m, "auto_model", None), nn.Module)]


def _peft_merged(model: nn.Module) -> nn.Module:
    """A PEFT model with its adapters merged into the layers they wrap (``merge_and_unload``)."""
    if hasattr(model, "peft_config") and hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def merge(model: nn.Module, dequantize: bool = False, check: bool = True) -> nn.Module:
    """Turn a compressed Hugging Face model into a plain one, in place; returns it (in the mode it was in).

    Args:
        model: a Hugging Face model compressed by :func:`mpstudy.compress` (any registered method),
            loaded by :func:`mpstudy.load_compressed`, or a PEFT model over one (its adapters are
            merged first; the returned object is then the base model), or a sentence-transformers
            model whose encoder was compressed (``compress(st[0].auto_model, ...)``; the model inside
            each Transformer module is merged, the SentenceTransformer returned).
        dequantize: turn int8 layers into float32 Linears holding ``(int8 - zero_point) * scale``
            (refused by default: the int8 model quantizes its activations too, so the float model
            computes something slightly different).
        check: run each new dense module against the layer it replaces on a seeded probe.

    Returns:
        ``model`` with only plain ``nn.Linear`` / ``nn.Embedding`` weights, no pruning masks, no
        parametrizations, its config's FFN width updated when FFN neurons were pruned evenly.
        ``model.save_pretrained(path)`` then writes a checkpoint plain ``from_pretrained`` reloads.

    Raises:
        TypeError: not a Hugging Face model (no ``.config``), or torch's own quantized Linears.
        ValueError: int8 layers without ``dequantize=True``; a structure plain transformers cannot
            hold (heads removed, uneven FFN widths, a compressed embedding its config ties to a dense
            output layer), naming ``mpstudy.save_compressed``. Raised before
            the model is changed (a PEFT model's adapters are merged first, which is lossless).
    """
    encoders = _sentence_transformer_encoders(model)
    if encoders:  # a SentenceTransformer: merge the Hugging Face model inside each Transformer module
        for encoder in encoders:
            merge(encoder, dequantize=dequantize, check=check)
        return model
    model = _peft_merged(model)
    if not hasattr(getattr(model, "config", None), "save_pretrained"):
        raise TypeError(f"merge needs a Hugging Face model (with a .config), got {type(model).__name__}")
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, nnqd.Linear)}
    foreign = [n for n, m in quantized.items() if not isinstance(m, Int8Linear)]
    if foreign:
        raise TypeError(f"merge: {foreign[0]} is torch's {quantized[foreign[0]]._get_name()}, not an mpstudy Int8Linear; "
                        "quantize with compress(model, 'int8')")
    if quantized and not dequantize:
        first = next(iter(quantized))
        raise ValueError(f"merge: {first} (of {len(quantized)} int8 layers) computes in int8, with activations quantized "
                         "per batch, which plain transformers has no layer for; pass dequantize=True for float32 "
                         f"weights (the logits change by the activation quantization's error), or {_SAVE_HINT}")

    with quiet_quantization():
        targets = _outermost(model, (CompressedLayer, Int8Linear))
        replacements = {name: _dense_module(name, layer, check) for name, layer in targets.items()}
    for name, new in replacements.items():
        set_submodule(model, name, new)
    config, problems = _config_for(model)
    tie = _tie_problem(model, config)
    if problems or tie:
        for name, old in targets.items():  # put the compressed layers back: the model is as it came
            set_submodule(model, name, old)
        if tie:
            raise ValueError(tie)
        heads = _removed_heads(model)
        if heads:
            name, (left, full) = next(iter(heads.items()))
            raise ValueError(f"merge: {name} has {left} of its {full} attention heads left (structured pruning, "
                             f"{len(heads)} blocks pruned); plain {type(model).__name__} builds every block with the "
                             f"config's head count, so it cannot represent this model; {_SAVE_HINT}")
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValueError(f"merge: plain transformers cannot represent this model: {problems[0]}{more} (FFN widths "
                         f"that differ between layers, or another structure its config cannot describe); {_SAVE_HINT}")

    for module in list(model.modules()):
        for leaf in [k[:-5] for k in list(module._parameters) if k.endswith("_orig") and hasattr(module, k[:-5] + "_mask")]:
            torch_prune.remove(module, leaf)
        if parametrize.is_parametrized(module):
            for leaf in list(module.parametrizations):
                parametrize.remove_parametrizations(module, leaf, leave_parametrized=True)
    for attr in FFN_SIZE_ATTRS:
        if getattr(config, attr, None) != getattr(model.config, attr, None):
            setattr(model.config, attr, getattr(config, attr))
    if hasattr(model.config, "transformers_weights"):  # save_compressed's guard against plain loading, see surgery
        delattr(model.config, "transformers_weights")
    return model


def _tie_problem(model: nn.Module, config) -> str | None:
    """Why a plain reload would change the logits through tied embeddings (the config ties the output
    layer to the input embeddings while the two hold different values: a compressed embedding with
    its dense LM head kept, as on T5), or ``None``."""
    if not getattr(config, "tie_word_embeddings", False):
        return None
    try:
        inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    except (NotImplementedError, AttributeError):
        return None
    if inp is None or out is None or getattr(out, "weight", None) is None or inp.weight is out.weight:
        return None
    if inp.weight.shape != out.weight.shape or not torch.equal(inp.weight, out.weight):
        return ("merge: the config ties the output layer to the input embeddings, but they hold different values (the "
                f"embeddings were compressed, the output layer not), and a plain reload would tie them; {_SAVE_HINT}")
    return None


def check_destination(path: str | os.PathLike) -> Path:
    """Refuse (``FileExistsError``) a ``save_merged`` destination that exists and is not a merged model
    (no :data:`MERGED_MARKER`), before anything is loaded or written; returns ``path`` as a ``Path``."""
    path = Path(path)
    _refuse_foreign(path, MERGED_MARKER, "a merged mpstudy model")
    return path


def save_merged(model: nn.Module, path: str | os.PathLike, tokenizer=None, dequantize: bool = False,
                source: dict[str, Any] | None = None) -> Path:
    """``merge(model)`` and write it with ``save_pretrained`` (and the tokenizer) to ``path``, atomically.

    The directory is a plain Hugging Face checkpoint (``config.json``, ``model.safetensors``) plus
    :data:`MERGED_MARKER`, a JSON note of where it came from (``source``: e.g. the compressed
    directory and its method) that lets a later ``save_merged`` replace it; an existing directory
    without that note is refused before anything is written. Returns ``path``.
    """
    path = check_destination(path)
    model = merge(model, dequantize=dequantize)
    import transformers

    note = {"format": 1, "what": "a plain Hugging Face checkpoint merged by mpstudy.merge; load it with "
                                 "transformers' from_pretrained", "transformers": transformers.__version__,
            "source": source or {}}
    with atomic_directory(path, marker=MERGED_MARKER, kind="a merged mpstudy model") as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / MERGED_MARKER).write_text(json.dumps(note, indent=2, default=str))
    return path


def save_sentence_transformer(model: nn.Module, path: str | os.PathLike, dequantize: bool = False) -> Path:
    """Write a sentence-transformers model whose encoder was compressed as a plain sentence-transformers
    directory, atomically; ``SentenceTransformer(path)`` reloads it with the same embeddings.

    The route is merge, then ``model.save``: the compressed encoder becomes a plain Hugging Face
    encoder (:func:`mpstudy.merge`, the savings are not kept), and sentence-transformers writes its own
    layout (``modules.json``, pooling, normalization, tokenizer) around it, so any
    sentence-transformers install loads it with no mpstudy. A bare ``model.save`` of the unmerged
    model would write factor tensors that ``SentenceTransformer(path)`` silently replaces by
    random weights. :data:`MERGED_MARKER` is added (it lets a later save replace the directory).
    """
    if not _sentence_transformer_encoders(model):
        raise TypeError(f"save_sentence_transformer takes a sentence_transformers.SentenceTransformer, got "
                        f"{type(model).__name__}; for a Hugging Face model use save_merged")
    path = check_destination(path)
    merge(model, dequantize=dequantize)
    note = {"format": 1, "what": "a sentence-transformers model whose encoder mpstudy compressed, merged to plain "
                                 "weights; load it with SentenceTransformer(path)", "source": {}}
    with atomic_directory(path, marker=MERGED_MARKER, kind="a merged mpstudy model") as tmp:
        model.save(str(tmp))
        (tmp / MERGED_MARKER).write_text(json.dumps(note, indent=2))
    return path
