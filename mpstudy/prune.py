"""Pruning: magnitude (l1-unstructured) pruning of Linear weights, physical removal of attention
heads (BERT-style encoders, DistilBERT and T5, including T5's relative attention bias),
pruning configurations and schemes, and composition of a model from pruned module variants.

Every budget in this module is a ``keep``: the fraction of a module that *survives*
(``keep=1.0`` leaves a module untouched, ``keep=0.3`` keeps 30 % of a Linear's
weights or of an attention module's heads). The original code called these numbers "pruning
rates" in its documentation while using them as kept fractions; here the name says it.

The two kinds of prunable module (``kind``):

* ``"linear"``: the feed-forward ``nn.Linear`` weights (roles ``ffn_in`` and ``ffn_out`` of the
  architecture preset: BERT ``intermediate.dense``/``output.dense``, T5 ``wi``/``wo``).
  Pruned by magnitude per matrix (``l1_unstructured``'s masks, through
  :func:`mpstudy.layers.magnitude.magnitude_prune`): the smallest-magnitude weights are
  zeroed by a mask (``weight = weight_orig * weight_mask``), which stays attached so the zeros
  persist through fine-tuning. The stored tensor stays dense: this saves non-zeros, not storage
  or time, until a sparse kernel is used.
* ``"attention"``: a whole multi-head attention block (BERT ``attention`` = self-attention plus
  output projection, DistilBERT ``attention``, T5 ``SelfAttention``/``EncDecAttention``). Heads
  are scored by the l1 norm of their rows of the query, key and value weights together, and the
  lowest-scoring heads are **physically removed**: their rows of Q, K, V and their columns of
  the output projection are deleted, so the matrices shrink and the layer runs faster.

The API the workflow uses (and that other studies may reuse):

>>> model, tok = load_model("tiny-t5", task="synthetic-seq2seq")          # doctest: +SKIP
>>> configs = generate_configs(model, attention_keep=[0.25, 0.5], linear_keep=[0.3, 0.3])  # doctest: +SKIP
>>> scheme = pruning_scheme(configs)            # {module name: [distinct keeps < 1]}  # doctest: +SKIP
>>> variants = prune_variants(model, scheme)    # {module name: {keep: pruned copy}}   # doctest: +SKIP
>>> pruned = compose(model, configs[0], variants)                                          # doctest: +SKIP

For a single matrix at a kept fraction (e.g. offline compression baselines), use
:func:`prune_linear` on a copy of the ``nn.Linear``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune
from transformers.models.t5.modeling_t5 import T5Attention

from .layers.magnitude import magnitude_prune
from .factorize.budget import check_keep
from .targets import PRESETS, preset_for, resolve_targets, set_submodule

__all__ = [
    "KINDS",
    "PrunableModule",
    "PrunedT5Attention",
    "prunable_modules",
    "generate_configs",
    "pruning_scheme",
    "scheme_size",
    "num_heads_to_prune",
    "attention_num_heads",
    "head_scores",
    "select_heads_to_prune",
    "prune_heads",
    "mask_heads",
    "prune_attention",
    "prune_ffn_neurons",
    "prune_heads_and_neurons",
    "prune_linear",
    "prune_module",
    "clone_module",
    "prune_variants",
    "compose",
    "finalize_pruning",
    "pruning_summary",
    "full_num_heads",
    "removed_heads",
]

#: the kinds of prunable module
KINDS = ("attention", "linear")


# --------------------------------------------------------------------------- architectures


@dataclass(frozen=True)
class _HeadLayout:
    """Where the Q/K/V/O projections and the head bookkeeping of one attention block live
    (dotted attribute paths relative to the attention module)."""

    q: str
    k: str
    v: str
    o: str
    num_heads: str  # attribute holding the current head count
    head_dim: str  # attribute holding the per-head width
    inner_dim: str | None  # attribute holding num_heads * head_dim, if the class keeps one
    query_suffix: str  # attention module name = query module name minus this suffix


_LAYOUTS: dict[str, _HeadLayout] = {
    "bert": _HeadLayout("self.query", "self.key", "self.value", "output.dense", "self.num_attention_heads",
                        "self.attention_head_size", "self.all_head_size", ".self.query"),
    "distilbert": _HeadLayout("q_lin", "k_lin", "v_lin", "out_lin", "n_heads", "attention_head_size", None, ".q_lin"),
    "t5": _HeadLayout("q", "k", "v", "o", "n_heads", "key_value_proj_dim", "inner_dim", ".q"),
}


def _family(model: nn.Module) -> str:
    """The head layout family of ``model`` (``bert`` for BERT/RoBERTa/MiniLM..., ``distilbert``, ``t5``)."""
    preset = preset_for(model)
    for family in _LAYOUTS:
        if preset is PRESETS[family]:
            return family
    raise ValueError(
        f"head pruning supports model types whose preset is one of {sorted(_LAYOUTS)} "
        f"(BERT, RoBERTa, MiniLM, ELECTRA, DistilBERT, T5, mT5); got model_type {model.config.model_type!r}"
    )


def _layout_of(attention: nn.Module) -> _HeadLayout:
    """The layout of an attention module, recognised by its attributes."""
    if isinstance(attention, T5Attention):
        return _LAYOUTS["t5"]
    if hasattr(attention, "self") and hasattr(attention.self, "num_attention_heads") and hasattr(attention, "output"):
        return _LAYOUTS["bert"]
    if hasattr(attention, "q_lin") and hasattr(attention, "n_heads"):
        return _LAYOUTS["distilbert"]
    raise ValueError(
        f"{type(attention).__name__} is not an attention block this module can prune; expected a BERT-style "
        "attention (with .self and .output), a DistilBERT attention (q_lin...) or a T5Attention"
    )


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _set(obj: Any, path: str, value: Any) -> None:
    parent, _, last = path.rpartition(".")
    setattr(_get(obj, parent) if parent else obj, last, value)


# --------------------------------------------------------------------------- which modules


@dataclass(frozen=True)
class PrunableModule:
    """One module a pruning configuration can name.

    Attributes:
        name: full module name (``"bert.encoder.layer.0.attention"``, ``"encoder.block.0.layer.1.DenseReluDense.wi"``).
        kind: ``"attention"`` (heads are removed) or ``"linear"`` (weights are masked).
        size: number of heads (attention) or of weights (linear).
        module: the module itself.
    """

    name: str
    kind: str
    size: int
    module: nn.Module


def prunable_modules(model: nn.Module) -> list[PrunableModule]:
    """The attention blocks and feed-forward Linears of ``model``, attention first, each in model order.

    Attention blocks are found from the preset's ``query`` role (the block holding Q, K, V and
    the output projection); Linears are the preset's ``ffn_in`` and ``ffn_out`` roles.
    """
    family = _family(model)
    layout = _LAYOUTS[family]
    found: list[PrunableModule] = []
    for target in resolve_targets(model, "query", module_types=(nn.Linear,)):
        if not target.name.endswith(layout.query_suffix):
            raise ValueError(f"query module {target.name!r} does not end with {layout.query_suffix!r}")
        name = target.name[: -len(layout.query_suffix)]
        attention = model.get_submodule(name)
        found.append(PrunableModule(name, "attention", attention_num_heads(attention), attention))
    for target in resolve_targets(model, "ffn", module_types=(nn.Linear,)):
        found.append(PrunableModule(target.name, "linear", target.module.weight.numel(), target.module))
    return found


# --------------------------------------------------------------------------- configurations


def generate_configs(
    model: nn.Module, attention_keep: Sequence[float], linear_keep: Sequence[float], num_configs: int | None = None
) -> list[dict[str, float]]:
    """Pruning configurations: configuration ``i`` keeps ``attention_keep[i]`` of every attention
    block's heads and ``linear_keep[i]`` of every feed-forward Linear's weights.

    Args:
        model: the model the configurations apply to (its module names are the keys).
        attention_keep: the kept fraction of attention heads, one per configuration, each in (0, 1].
        linear_keep: the kept fraction of Linear weights, one per configuration, each in (0, 1].
        num_configs: the number of configurations; must equal both lists' lengths if given.

    Returns:
        A list of ``num_configs`` dicts ``{module name: keep}`` over every module of
        :func:`prunable_modules` (a keep of 1 leaves that module untouched). The paper's
        default is ``attention_keep=[0.25, 0.5, 0.25]``, ``linear_keep=[0.3, 0.3, 0.5]``.
    """
    attention_keep, linear_keep = list(attention_keep), list(linear_keep)
    n = len(attention_keep)
    if n == 0 or len(linear_keep) != n or (num_configs is not None and num_configs != n):
        raise ValueError(
            f"attention_keep ({attention_keep!r}) and linear_keep ({linear_keep!r}) must be non-empty lists of the "
            f"same length{'' if num_configs is None else f' equal to num_configs={num_configs!r}'}: one entry per configuration"
        )
    attention_keep = [check_keep(r, f"attention_keep[{i}]") for i, r in enumerate(attention_keep)]
    linear_keep = [check_keep(r, f"linear_keep[{i}]") for i, r in enumerate(linear_keep)]
    modules = prunable_modules(model)
    for i, keep in enumerate(attention_keep):
        for m in modules:
            if m.kind == "attention":
                num_heads_to_prune(m.size, keep)  # fails early if a ratio would remove every head
    return [{m.name: (attention_keep[i] if m.kind == "attention" else linear_keep[i]) for m in modules} for i in range(n)]


def pruning_scheme(configs: Sequence[Mapping[str, float]]) -> dict[str, list[float]]:
    """Each distinct (module, keep) variant the configurations need, listed once.

    Returns:
        ``{module name: sorted distinct keeps < 1}`` in order of first appearance;
        modules that every configuration keeps whole are left out. With the paper's defaults
        every module gets two variants, where pruning each configuration separately would
        build three.
    """
    if not configs:
        raise ValueError("configs is empty: give at least one {module name: keep} configuration")
    scheme: dict[str, set[float]] = {}
    for i, config in enumerate(configs):
        for name, keep in config.items():
            keep = check_keep(keep, f"configs[{i}][{name!r}]")
            if keep < 1:
                scheme.setdefault(name, set()).add(keep)
    return {name: sorted(ratios) for name, ratios in scheme.items()}


def scheme_size(scheme: Mapping[str, Sequence[float]]) -> int:
    """Number of pruned module variants a scheme asks for."""
    return sum(len(r) for r in scheme.values())


# --------------------------------------------------------------------------- head pruning


def num_heads_to_prune(num_heads: int, keep: float) -> int:
    """How many of ``num_heads`` heads ``keep`` removes: ``floor(num_heads * (1 - keep) + 0.5)``
    (the original's rounding: 0.25 of 8 heads prunes 6, of 12 heads prunes 9; 0.5 of 4 prunes 2).

    Raises ValueError if that would remove every head.
    """
    keep = check_keep(keep)
    n = int(math.floor(num_heads * (1 - keep) + 0.5 + 1e-9))
    if n >= num_heads:
        raise ValueError(f"keep={keep!r} would remove all {num_heads} heads; keep at least one")
    return n


def attention_num_heads(attention: nn.Module) -> int:
    """Current number of heads of an attention block."""
    return int(_get(attention, _layout_of(attention).num_heads))


def _qkvo(attention: nn.Module) -> tuple[nn.Linear, nn.Linear, nn.Linear, nn.Linear]:
    layout = _layout_of(attention)
    return tuple(_get(attention, p) for p in (layout.q, layout.k, layout.v, layout.o))  # type: ignore[return-value]


@torch.no_grad()
def head_scores(attention: nn.Module) -> torch.Tensor:
    """The l1 norm of each head's rows of the Q, K and V weights together.

    Returns:
        ``[num_heads]`` float tensor: ``score[h] = sum |W_q[rows_h]| + |W_k[rows_h]| + |W_v[rows_h]|``
        with ``rows_h = h*d_head ... (h+1)*d_head - 1`` (weights only; biases and the output
        projection are not scored, as in the original).
    """
    heads = attention_num_heads(attention)
    q, k, v, _ = _qkvo(attention)
    return sum(lin.weight.detach().abs().reshape(heads, -1).sum(1) for lin in (q, k, v))


def select_heads_to_prune(attention: nn.Module, keep: float) -> list[int]:
    """The (current) indices of the lowest-scoring heads that ``keep`` removes, sorted."""
    scores = head_scores(attention)
    n = num_heads_to_prune(len(scores), keep)
    order = sorted(range(len(scores)), key=lambda h: (float(scores[h]), h))  # ties: lower index first
    return sorted(order[:n])


def _check_heads(attention: nn.Module, heads: Iterable[int]) -> list[int]:
    total = attention_num_heads(attention)
    heads = sorted(set(int(h) for h in heads))
    bad = [h for h in heads if not 0 <= h < total]
    if bad:
        raise ValueError(f"head indices {bad} out of range for an attention block with {total} heads")
    if len(heads) >= total:
        raise ValueError(f"cannot remove all {total} heads (asked to remove {heads})")
    return heads


def _original_kept(attention: nn.Module) -> list[int]:
    """Original indices of the heads still present (all of them if never pruned)."""
    kept = getattr(attention, "mpstudy_kept_heads", None)
    return list(kept) if kept is not None else list(range(attention_num_heads(attention)))


def select_linear(layer: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping ``index`` along ``dim`` of the weight (0: output rows, 1: input columns)."""
    weight = layer.weight.detach().index_select(dim, index.to(layer.weight.device)).clone()
    bias = None
    if layer.bias is not None:
        bias = layer.bias.detach()[index].clone() if dim == 0 else layer.bias.detach().clone()
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    new.weight.data.copy_(weight)
    new.weight.requires_grad_(layer.weight.requires_grad)
    if bias is not None:
        new.bias.data.copy_(bias)
        new.bias.requires_grad_(layer.bias.requires_grad)
    return new


class PrunedT5Attention(T5Attention):
    """A ``T5Attention`` with some heads physically removed.

    Upstream ``transformers`` (issues #19625, #17886; PRs #19097, #20106) pruned Q/K/V/O but
    left the relative position bias with every head: the first layer computes a bias of
    shape ``[1, H, q, k]`` from its ``relative_attention_bias`` embedding and passes it on to
    every later layer, so a layer with fewer heads fails with a shape mismatch (or, with
    equal counts, adds the wrong heads' biases). Here the bias that travels between layers
    always keeps all ``full_num_heads`` heads, and each pruned layer slices out its own
    ``kept_heads`` before adding it to its scores. The ``relative_attention_bias``
    embedding (``num_buckets x H``, tiny) is kept whole because later layers need it.

    Attributes:
        kept_heads: ``[n_heads]`` int64 buffer, the original indices of the remaining heads.
        full_num_heads: the head count of the unpruned layer (``config.num_heads``).
    """

    def compute_bias(self, query_length, key_length, device=None, past_seen_tokens=0):
        full = super().compute_bias(query_length, key_length, device=device, past_seen_tokens=past_seen_tokens)
        self._full_bias = full  # [1, full_num_heads, q, k]
        return full.index_select(1, self.kept_heads.to(full.device))

    def forward(self, hidden_states, mask=None, key_value_states=None, position_bias=None, past_key_values=None, **kwargs):
        given = position_bias
        if given is not None:
            if given.shape[1] != self.full_num_heads:
                raise ValueError(f"position_bias has {given.shape[1]} heads; a pruned T5 layer expects the full "
                                 f"bias of {self.full_num_heads} heads (shape [1, {self.full_num_heads}, q, k])")
            position_bias = given.index_select(1, self.kept_heads.to(given.device))
        self._full_bias = None
        output, used_bias, weights = super().forward(hidden_states, mask=mask, key_value_states=key_value_states,
                                                     position_bias=position_bias, past_key_values=past_key_values,
                                                     **kwargs)
        if given is not None:
            full = given
        elif self._full_bias is not None:
            full = self._full_bias
        else:  # no relative bias in this layer: the bias is zero for every head
            full = used_bias.new_zeros((used_bias.shape[0], self.full_num_heads, *used_bias.shape[2:]))
        self._full_bias = None
        return output, full, weights


@torch.no_grad()
def prune_heads(attention: nn.Module, heads: Iterable[int]) -> nn.Module:
    """Physically remove ``heads`` (current indices) from an attention block, in place.

    Q, K and V lose the heads' output rows (and bias entries), the output projection loses the
    heads' input columns (its bias is kept), and the block's head count and inner width shrink.
    A T5 block becomes a :class:`PrunedT5Attention` so its relative position bias stays
    consistent (see there). The original indices of the remaining heads are kept in
    ``attention.mpstudy_kept_heads``, so pruning twice composes.

    Args:
        attention: a BERT-style attention block, a DistilBERT attention or a ``T5Attention``.
        heads: indices in ``range(current number of heads)``; not all of them.

    Returns:
        ``attention`` (modified).
    """
    layout = _layout_of(attention)
    heads = _check_heads(attention, heads)
    total = attention_num_heads(attention)
    original = _original_kept(attention)
    if not heads:
        attention.mpstudy_kept_heads = original
        return attention
    head_dim = int(_get(attention, layout.head_dim))
    keep = [h for h in range(total) if h not in heads]
    index = torch.tensor([h * head_dim + i for h in keep for i in range(head_dim)], dtype=torch.long)
    for path in (layout.q, layout.k, layout.v):
        _set(attention, path, select_linear(_get(attention, path), index, dim=0))
    _set(attention, layout.o, select_linear(_get(attention, layout.o), index, dim=1))
    _set(attention, layout.num_heads, len(keep))
    if layout.inner_dim is not None:
        _set(attention, layout.inner_dim, len(keep) * head_dim)
    kept_original = [original[h] for h in keep]
    attention.mpstudy_kept_heads = kept_original
    if isinstance(attention, T5Attention):
        if not isinstance(attention, PrunedT5Attention):
            attention.__class__ = PrunedT5Attention
            attention.full_num_heads = int(attention.config.num_heads)
            attention._full_bias = None
        device = attention.q.weight.device
        if "kept_heads" in attention._buffers:
            del attention._buffers["kept_heads"]
        attention.register_buffer("kept_heads", torch.tensor(kept_original, dtype=torch.long, device=device), persistent=False)
    return attention


@torch.no_grad()
def mask_heads(attention: nn.Module, heads: Iterable[int]) -> nn.Module:
    """Silence ``heads`` without removing them: zero their input columns of the output projection, in place.

    The block then computes exactly what the block with those heads removed computes (the
    heads' attention outputs are multiplied by zero), which makes it the oracle the tests
    compare :func:`prune_heads` against.
    """
    layout = _layout_of(attention)
    heads = _check_heads(attention, heads)
    head_dim = int(_get(attention, layout.head_dim))
    o = _get(attention, layout.o)
    for h in heads:
        o.weight[:, h * head_dim : (h + 1) * head_dim] = 0
    return attention


def prune_attention(attention: nn.Module, keep: float) -> list[int]:
    """Score the heads (:func:`head_scores`), remove the lowest ones in place; returns the removed (current) indices."""
    heads = select_heads_to_prune(attention, keep)
    prune_heads(attention, heads)
    return heads


# --------------------------------------------------------------------------- FFN neurons, whole models


@torch.no_grad()
def prune_ffn_neurons(ffn_in: nn.Linear, ffn_out: nn.Linear, keep: float) -> tuple[nn.Linear, nn.Linear, list[int]]:
    """Remove the FFN's lowest-scoring intermediate neurons; returns new ``(ffn_in, ffn_out, kept)``.

    A neuron ``j`` is row ``j`` of ``ffn_in`` (``(d_ff, d)``, and its bias entry) and column ``j``
    of ``ffn_out`` (``(d, d_ff)``); its score is the l1 norm of both (the weight-magnitude
    criterion of :func:`head_scores`). ``round(keep * d_ff)`` neurons stay (at least one); ``kept``
    lists their indices, ascending. The inputs are not changed.
    """
    keep = check_keep(keep)
    if ffn_in.out_features != ffn_out.in_features:
        raise ValueError(f"ffn_in has {ffn_in.out_features} outputs but ffn_out takes {ffn_out.in_features} inputs")
    score = ffn_in.weight.detach().abs().sum(1) + ffn_out.weight.detach().abs().sum(0)
    n_keep = max(1, round(keep * ffn_in.out_features))
    kept = sorted(torch.topk(score, n_keep).indices.tolist())
    index = torch.tensor(kept, dtype=torch.long)
    return select_linear(ffn_in, index, dim=0), select_linear(ffn_out, index, dim=1), kept


def _structured_units(model: nn.Module) -> list[tuple[str, str, list[str]]]:
    """``[(kind, name, member Linear names)]``: every attention block (Q, K, V, output) and every FFN (in, out)."""
    layout = _LAYOUTS[_family(model)]
    units = [("attention", pm.name, [f"{pm.name}.{p}" for p in (layout.q, layout.k, layout.v, layout.o)])
             for pm in prunable_modules(model) if pm.kind == "attention"]
    by_layer: dict[tuple[str, int | None], dict[str, list[str]]] = {}
    for t in resolve_targets(model, "ffn", module_types=(nn.Linear,)):
        by_layer.setdefault((t.stack, t.layer), {}).setdefault(t.role, []).append(t.name)
    for roles in by_layer.values():
        ins, outs = roles.get("ffn_in", []), roles.get("ffn_out", [])
        if len(ins) != 1 or len(outs) != 1:
            raise ValueError(f"neuron pruning needs one FFN input and one output per layer, got {ins + outs} "
                             "(a gated FFN has two inputs)")
        units.append(("ffn", ins[0], [ins[0], outs[0]]))
    return units


def prune_heads_and_neurons(model: nn.Module, keep: float, names: Iterable[str] | None = None) -> dict[str, Any]:
    """Structured pruning in place: keep ``keep`` of every attention block's heads and every FFN's neurons.

    Heads go by :func:`prune_attention` (rounded to whole heads, at least one kept), neurons by
    :func:`prune_ffn_neurons`; both are physically removed, so the Linears shrink. Everything is
    checked before the first module changes.

    Args:
        model: a BERT-style, DistilBERT or T5 model (non-gated FFN).
        keep: the fraction of heads and of neurons kept, in (0, 1].
        names: the Linears allowed to shrink (default all): an attention block is pruned when its
            Q, K, V and output projection are all named, an FFN when its input and output are; a
            name outside these units, or a unit named only in part, is refused.

    Returns:
        ``removed_heads`` (attention block -> removed head indices), ``kept_heads`` (block ->
        heads left), ``kept_neurons`` (FFN input name -> neurons left) and ``shrunk`` (Linear
        name -> ``{"heads": n}`` or ``{"neurons": n}``).
    """
    keep = check_keep(keep)
    units = _structured_units(model)
    if names is not None:
        names = set(names)
        partial = [(name, sorted(set(members) - names)) for _, name, members in units
                   if names & set(members) and not set(members) <= names]
        if partial:
            raise ValueError(f"structured pruning removes whole heads and neurons: {partial[0][0]} is targeted only in "
                             f"part ({partial[0][1]} missing); target every Q, K, V, output and both FFN weights")
        stray = sorted(names - {m for _, _, members in units for m in members})
        if stray:
            raise ValueError(f"structured pruning shrinks attention blocks and FFNs only; {stray[:3]} belong to neither")
        units = [u for u in units if set(u[2]) <= names]
    for kind, name, _ in units:  # would a block lose every head? refuse before anything changes
        if kind == "attention":
            num_heads_to_prune(attention_num_heads(model.get_submodule(name)), keep)
    removed, kept_heads, kept_neurons, shrunk = {}, {}, {}, {}
    for kind, name, members in units:
        if kind == "attention":
            attention = model.get_submodule(name)
            removed[name] = prune_attention(attention, keep)
            kept_heads[name] = attention_num_heads(attention)
            shrunk.update({m: {"heads": kept_heads[name]} for m in members})
        else:
            new_in, new_out, kept = prune_ffn_neurons(model.get_submodule(members[0]), model.get_submodule(members[1]), keep)
            for member, new in zip(members, (new_in, new_out)):
                new.train(model.get_submodule(member).training)
                set_submodule(model, member, new)
            kept_neurons[name] = len(kept)
            shrunk.update({m: {"neurons": len(kept)} for m in members})
    return {"removed_heads": removed, "kept_heads": kept_heads, "kept_neurons": kept_neurons, "shrunk": shrunk}


# --------------------------------------------------------------------------- unstructured pruning


def prune_linear(linear: nn.Linear, keep: float) -> nn.Linear:
    """l1-unstructured pruning of ``linear.weight`` in place (:func:`mpstudy.layers.magnitude.magnitude_prune`
    on this one matrix).

    The ``round((1 - keep) * weight.numel())`` weights of smallest magnitude are masked
    (the count ``torch.nn.utils.prune.l1_unstructured(amount=1 - keep)`` prunes; a weight
    already pruned loses that many more among its surviving entries). The module keeps
    ``weight_orig`` (a parameter, dense) and ``weight_mask`` (a buffer), and
    ``weight = weight_orig * weight_mask`` is recomputed before every forward, so the zeros
    survive fine-tuning. The bias is not pruned.

    Returns:
        ``linear`` (modified).
    """
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"prune_linear needs an nn.Linear, got {type(linear).__name__}")
    keep = check_keep(keep)
    n_prune = int(round((1 - keep) * linear.weight.numel()))
    if n_prune > 0:
        alive = int(linear.weight_mask.sum()) if hasattr(linear, "weight_mask") else linear.weight.numel()
        if n_prune > alive:
            raise ValueError(f"keep={keep!r} prunes {n_prune} weights of this {tuple(linear.weight.shape)} "
                             f"Linear but only {alive} weights survive its earlier pruning")
        magnitude_prune([linear], alive - n_prune)
    return linear


def clone_module(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` that also works when it holds ``torch.nn.utils.prune`` masks.

    A masked Linear's ``weight`` is the product ``weight_orig * weight_mask``, a non-leaf tensor
    that ``copy.deepcopy`` refuses; it is recomputed before every forward anyway, so it is
    detached first.
    """
    with torch.no_grad():
        for sub in module.modules():
            for hook in sub._forward_pre_hooks.values():
                if isinstance(hook, torch_prune.BasePruningMethod):
                    name = hook._tensor_name
                    setattr(sub, name, getattr(sub, name + "_orig") * getattr(sub, name + "_mask"))
    return copy.deepcopy(module)


def prune_module(module: nn.Module, kind: str, keep: float) -> nn.Module:
    """A pruned deep copy of ``module`` (``kind`` ``"attention"`` or ``"linear"``); the original is untouched."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    keep = check_keep(keep)
    variant = clone_module(module)
    if kind == "attention":
        prune_attention(variant, keep)
    else:
        prune_linear(variant, keep)
    return variant


def prune_variants(model: nn.Module, scheme: Mapping[str, Sequence[float]]) -> dict[str, dict[float, nn.Module]]:
    """Build every variant of a pruning scheme from ``model`` (which is not changed).

    Args:
        model: the (fine-tuned) model to prune.
        scheme: ``{module name: keeps}`` as returned by :func:`pruning_scheme`.

    Returns:
        ``{module name: {keep: pruned copy of the module}}``.
    """
    kinds = {m.name: m.kind for m in prunable_modules(model)}
    unknown = [name for name in scheme if name not in kinds]
    if unknown:
        raise ValueError(f"scheme names {unknown[:3]}{'...' if len(unknown) > 3 else ''} that are not prunable modules "
                         f"of this {type(model).__name__}; prunable modules look like {list(kinds)[:2]}")
    return {name: {float(k): prune_module(model.get_submodule(name), kinds[name], k) for k in ratios}
            for name, ratios in scheme.items()}


def compose(model: nn.Module, config: Mapping[str, float], variants: Mapping[str, Mapping[float, nn.Module]]) -> nn.Module:
    """A copy of ``model`` with each module of ``config`` replaced by (a copy of) its variant.

    Args:
        model: the original model (not changed).
        config: ``{module name: keep}``; keep 1 leaves the original module.
        variants: ``{module name: {keep: module}}``, pruned (baseline) or module-level
            fine-tuned (composability) variants.

    Returns:
        The composed model (in the mode ``model`` was in).
    """
    missing = [(name, keep) for name, keep in config.items() if keep < 1 and float(keep) not in variants.get(name, {})]
    if missing:
        name, keep = missing[0]
        raise ValueError(f"no variant for {len(missing)} (module, keep) pair(s) of the configuration, e.g. "
                         f"({name!r}, {keep!r}); variants of that module: {sorted(variants.get(name, {}))}")
    composed = clone_module(model)
    for name, keep in config.items():
        if keep < 1:
            set_submodule(composed, name, clone_module(variants[name][float(keep)]))
    return composed


def finalize_pruning(model: nn.Module) -> nn.Module:
    """Make masks permanent in place (``torch.nn.utils.prune.remove``): ``weight`` becomes a plain
    dense parameter holding the zeros, and the per-forward ``weight_orig * weight_mask`` is gone."""
    for module in model.modules():
        if isinstance(module, nn.Linear) and torch_prune.is_pruned(module) and hasattr(module, "weight_mask"):
            torch_prune.remove(module, "weight")
    return model


def pruning_summary(model: nn.Module) -> dict[str, Any]:
    """What is pruned in ``model``: heads per attention block and masked Linears.

    Returns:
        A dict with ``heads`` (name -> kept head count), ``pruned_heads`` (name -> removed
        original indices) and ``masked_linears`` (name -> kept fraction of weights), for the
        modules that are pruned.
    """
    heads, removed, masked = {}, {}, {}
    for name, module in model.named_modules():
        kept = getattr(module, "mpstudy_kept_heads", None)
        if kept is not None:
            full = getattr(module, "full_num_heads", None) or full_num_heads(model)
            heads[name] = len(kept)
            removed[name] = [h for h in range(full) if h not in kept]
        if isinstance(module, nn.Linear) and hasattr(module, "weight_mask"):
            masked[name] = float(module.weight_mask.float().mean())
    return {"heads": heads, "pruned_heads": removed, "masked_linears": masked}


def full_num_heads(model: nn.Module) -> int:
    cfg = model.config
    for attr in ("num_attention_heads", "n_heads", "num_heads"):
        if hasattr(cfg, attr):
            return int(getattr(cfg, attr))
    raise ValueError(f"cannot tell the head count of {type(model).__name__}")


def removed_heads(attention: nn.Module, full: int) -> list[int]:
    """Original indices of the heads :func:`prune_heads` removed from ``attention`` (of ``full``)."""
    kept = getattr(attention, "mpstudy_kept_heads", None)
    return [] if kept is None else [h for h in range(full) if h not in kept]
