"""Lower precision as methods: ``bf16`` and ``int8``, alone or after any factorization or pruning.

``compress(model, "bf16")`` puts the **whole model** in bfloat16, weights and compute: every
floating-point parameter and buffer is cast (``model.to(torch.bfloat16)``), so activations,
attention and LayerNorm run in bfloat16 too and the logits come out in bfloat16. That is how
bf16 inference is run in practice (a model with bfloat16 Linears between float32 LayerNorms
would need a cast around every product); ``targets`` only choose which modules the report lists
(default: the encoder's Linears, the factorized layers in their place after another method).

``compress(model, "int8")`` replaces each targeted ``nn.Linear`` by an
:class:`~mpstudy.layers.int8.Int8Linear`: torch's dynamic quantization (int8 weights, symmetric,
one scale per tensor or, with ``per_channel=True``, per output row; activations quantized per
batch at run time), the very module ``torch.ao.quantization.quantize_dynamic`` builds. Embeddings,
LayerNorm and attention stay float32. After another method, int8 quantizes what really multiplies:

* a :class:`~mpstudy.layers.lowrank.LowRankLinear` (``svd``, ``fwsvd``, LoBERT's SVD modes) keeps its
  rank and gets its two inner Linears quantized;
* a :class:`~mpstudy.layers.magnitude.MagnitudePrunedLayer` (``offline-prune``) becomes an ``Int8Linear``
  of its masked weight: the zeros stay exactly zero (symmetric quantization's zero point is 0),
  stored densely as int8 like every other entry; the mask is gone, so fine-tuning afterwards
  would not keep them, but an int8 layer does not train anyway;
* structured pruning (``prune-heads``) leaves plain, smaller Linears: quantized as such;
* a layer that rebuilds its dense weight from factors (MPO, Tucker, Kronecker, FALCON, the row
  autoencoder) has no Linear inside to quantize: int8 refuses it, naming it (bf16 takes it).

Neither method takes a budget: they keep every weight (``Method.for_budget`` refuses them) and
change what a weight costs, which :func:`mpstudy.accounting.count_bytes` counts (bfloat16: 2
bytes per entry; int8: 1 byte per entry plus a float32 scale and an int32 zero point per tensor
or per row). They do not stack on each other: torch's int8 kernels take float32 activations.
Both are for inference: an int8 layer has no gradient, and bfloat16 weights trained further would
need float32 master copies (bf16 in training is autocast over float32 weights, another thing).

**Why torch's own dynamic quantization, not torchao.** torchao is the maintained library, but
on this CPU its eager int8 path is slower than float32. Measured with
:func:`mpstudy.measure.forward_latency` (all models interleaved round by round, medians of the
per-round speed-ups against dense float32) on all-MiniLM-L6-v2, batch 32 x 64, 2 threads, no
``torch.compile``, in three runs (10, 15 and 15 rounds) while the load average was 2-3 on the 2
cores:

=====================================================================  ==================
model                                                                  speed-up
=====================================================================  ==================
torchao ``quantize_(model, Int8DynamicActivationInt8WeightConfig())``  0.38, 0.47, 0.59x
``int8`` (torch's ``quantize_dynamic``, encoder Linears, per tensor)   2.09, 2.28, 1.92x
``int8``, ``per_channel=True``                                         2.26, 2.24, 1.82x
``int8`` of every Linear (``targets="re:."``: pooler, classifier too)  2.25x (first run)
``bf16``                                                               2.01, 2.14, 2.79x
=====================================================================  ==================

The per-round spread was wide (interquartile range of the int8 speed-ups 1.5x-3.5x in the busier
runs, 1.7x-2.3x in the quietest), so only the ordering is firm: torchao below float32, torch's
int8 about twice as fast, bf16 two to three times. The lead measured
0.36x and 1.72x under heavier load; issue 18 quotes 2.90x for torch's int8 and 3.19x for bf16 on a
quiet machine. torchao is therefore not used (nor a dependency). Torch marks its eager
quantization as deprecated; its notices are silenced where this package calls it
(:func:`~mpstudy.layers.int8.quiet_quantization`).

**What int8 costs in accuracy.** Dynamic int8 quantizes each Linear's input with one scale per
batch, so a few large activations cost every other entry its resolution. On MiniLM the last
hidden state moves by 0.48 (relative Frobenius; random token ids, 32 x 64) or 0.39 (32 real
sentences) with per-tensor weights, 0.35 or 0.41 per channel, against 0.015 or 0.011 for bf16.
Almost all of it comes from the two FFN Linears, whose inputs reach 24-28 in magnitude against a
mean of 0.1-0.4 (per-tensor int8 of the FFN output Linears alone: 0.33 on the sentences; of the
queries alone: 0.03). Per channel is no better on real sentences, so per tensor, torch's default,
is the default here. Whether the task score survives is the comparison study's question.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..layers.base import CompressedLayer
from ..layers.int8 import Int8Linear
from ..layers.lowrank import LowRankLinear
from ..layers.magnitude import MagnitudePrunedLayer
from ..targets import Target, set_submodule
from .registry import Method, register_method

__all__ = ["PRECISION_METHODS"]

#: the registered precision methods
PRECISION_METHODS = ("bf16", "int8")


def _int8_layers(model: nn.Module) -> list[str]:
    from torch.ao.nn.quantized import dynamic as nnqd

    return [name for name, m in model.named_modules() if isinstance(m, nnqd.Linear)]


def _apply_bf16(model: nn.Module, targets: list[Target], budget: dict[str, Any]) -> dict[str, dict[str, Any]]:
    int8 = _int8_layers(model)
    if int8:
        raise ValueError(f"bf16 casts the whole model, but {int8[0]} (of {len(int8)} int8 layers) is int8 and "
                         "torch's int8 kernels take float32 activations; apply bf16 or int8, not both")
    model.to(torch.bfloat16)
    return {t.name: {"dtype": "bfloat16"} for t in targets}


def _float32_on_cpu(name: str, module: nn.Module) -> None:
    """Refuse a target whose weights are not float32 on the CPU (torch's int8 kernels are fbgemm's, CPU only)."""
    devices = {p.device.type for p in module.parameters()} - {"cpu"}
    if devices:
        raise ValueError(f"int8 runs on the CPU only (torch's fbgemm kernels); {name} is on {sorted(devices)[0]}: "
                         "move the model to the CPU first")
    dtypes = {p.dtype for p in module.parameters()}
    if dtypes - {torch.float32}:
        found = ", ".join(sorted(str(d).removeprefix("torch.") for d in dtypes))
        raise ValueError(f"int8 quantizes float32 weights; {name} holds {found} (bf16 applied?): apply int8 to the "
                         "float32 model, not after bf16")


def _int8_plan(target: Target) -> list[tuple[str, nn.Module]]:
    """``(module name, float nn.Linear)`` pairs to replace for one target: what int8 quantizes there."""
    name, module = target.name, target.module
    if isinstance(module, Int8Linear):
        raise ValueError(f"{name} is already int8 (an Int8Linear)")
    _float32_on_cpu(name, module)
    if type(module) is nn.Linear:
        return [(name, module)]
    if isinstance(module, LowRankLinear):
        inner = [(f"{name}.{child}", getattr(module, child)) for child in ("first", "second")]
        done = [n for n, m in inner if isinstance(m, Int8Linear)]
        if done:
            raise ValueError(f"{done[0]} is already int8 (an Int8Linear)")
        return inner
    if isinstance(module, MagnitudePrunedLayer) and module.kind == "linear":
        dense = nn.Linear(module.cols, module.rows, bias=module.inner.bias is not None)
        with torch.no_grad():
            dense.weight.copy_(module.to_dense())
            if module.inner.bias is not None:
                dense.bias.copy_(module.inner.bias)
        return [(name, dense)]
    if getattr(module, "dense_type", None) is nn.Embedding or getattr(module, "kind", None) == "embedding":
        raise ValueError(f"int8 quantizes Linear layers; {name} ({type(module).__name__}) is an embedding")
    if isinstance(module, CompressedLayer):
        raise ValueError(f"int8 cannot quantize {name} ({type(module).__name__}): it rebuilds its dense weight from "
                         "factors, there is no Linear inside to quantize; leave it out of targets, or use bf16")
    raise ValueError(f"int8 quantizes plain nn.Linear layers; {name} is {type(module).__name__}")


def _apply_int8(model: nn.Module, targets: list[Target], budget: dict[str, Any]) -> dict[str, dict[str, Any]]:
    per_channel = budget["per_channel"]
    if not isinstance(per_channel, bool):
        raise ValueError(f"per_channel must be True or False, got {per_channel!r}")
    names = [t.name for t in targets]
    for name in names:  # a factorized layer and its own inner Linears: say which, do not count them twice
        inside = next((n for n in names if name.startswith(n + ".")), None)
        if inside is not None:
            raise ValueError(f"int8 targets overlap: {name} lies inside {inside}; target the layer or its inner "
                             "Linears, not both")
    plans = {t.name: _int8_plan(t) for t in targets}  # every refusal before the first edit
    swaps = [(name, Int8Linear.from_dense(dense, per_channel=per_channel))
             for plan in plans.values() for name, dense in plan]
    for name, layer in swaps:
        set_submodule(model, name, layer)
    return {t.name: {"precision": "int8", "per_channel": per_channel} for t in targets}


register_method(
    Method(
        name="bf16",
        description="the whole model in bfloat16, weights and compute (after any other method)",
        budget_keys=(),
        dense_types=(nn.Linear, nn.Embedding, CompressedLayer, Int8Linear),
        apply=_apply_bf16,
    )
)

register_method(
    Method(
        name="int8",
        description="torch's dynamic int8 quantization of the targeted Linears (a factorized layer's inner ones)",
        budget_keys=("per_channel",),
        dense_types=(nn.Linear, CompressedLayer, Int8Linear),
        defaults={"per_channel": False},
        apply=_apply_int8,
    )
)
