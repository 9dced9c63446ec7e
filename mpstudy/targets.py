"""Which weights of which architecture a compression method targets.

A *preset* maps role names (``query``, ``key``, ``value``, ``attention_output``, ``ffn_in``,
``ffn_out``, ``word_embeddings``, ``pooler``) to regular expressions over module names, per
Hugging Face ``model_type``. ``resolve_targets`` turns a user's ``targets=`` into the concrete
modules, and ``group_targets`` groups them (per matrix, per layer, or per role across layers)
for methods that factorize stacks of weights jointly.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

from torch import nn

__all__ = ["Target", "PRESETS", "ROLE_GROUPS", "resolve_targets", "group_targets", "preset_for", "set_submodule"]

_L = r"(?P<layer>\d+)"

#: model_type -> role -> regex matched (with re.search) against the module's full name.
#: ``(?P<layer>...)`` captures the layer index, ``(?P<stack>...)`` the encoder/decoder stack.
PRESETS: dict[str, dict[str, str]] = {
    "bert": {
        "query": rf"encoder\.layer\.{_L}\.attention\.self\.query$",
        "key": rf"encoder\.layer\.{_L}\.attention\.self\.key$",
        "value": rf"encoder\.layer\.{_L}\.attention\.self\.value$",
        "attention_output": rf"encoder\.layer\.{_L}\.attention\.output\.dense$",
        "ffn_in": rf"encoder\.layer\.{_L}\.intermediate\.dense$",
        "ffn_out": rf"encoder\.layer\.{_L}\.output\.dense$",
        "word_embeddings": r"embeddings\.word_embeddings$",
        "pooler": r"pooler\.dense$",
    },
    # ALBERT shares one layer's weights across depths: the shared module appears once.
    "albert": {
        "query": rf"albert_layer_groups\.\d+\.albert_layers\.{_L}\.attention\.query$",
        "key": rf"albert_layer_groups\.\d+\.albert_layers\.{_L}\.attention\.key$",
        "value": rf"albert_layer_groups\.\d+\.albert_layers\.{_L}\.attention\.value$",
        "attention_output": rf"albert_layer_groups\.\d+\.albert_layers\.{_L}\.attention\.dense$",
        "ffn_in": rf"albert_layer_groups\.\d+\.albert_layers\.{_L}\.ffn$",
        "ffn_out": rf"albert_layer_groups\.\d+\.albert_layers\.{_L}\.ffn_output$",
        "word_embeddings": r"embeddings\.word_embeddings$",
        "embedding_projection": r"encoder\.embedding_hidden_mapping_in$",
        "pooler": r"albert\.pooler$",
    },
    "distilbert": {
        "query": rf"transformer\.layer\.{_L}\.attention\.q_lin$",
        "key": rf"transformer\.layer\.{_L}\.attention\.k_lin$",
        "value": rf"transformer\.layer\.{_L}\.attention\.v_lin$",
        "attention_output": rf"transformer\.layer\.{_L}\.attention\.out_lin$",
        "ffn_in": rf"transformer\.layer\.{_L}\.ffn\.lin1$",
        "ffn_out": rf"transformer\.layer\.{_L}\.ffn\.lin2$",
        "word_embeddings": r"embeddings\.word_embeddings$",
    },
    "t5": {
        "query": rf"(?P<stack>encoder|decoder)\.block\.{_L}\.layer\.\d+\.(SelfAttention|EncDecAttention)\.q$",
        "key": rf"(?P<stack>encoder|decoder)\.block\.{_L}\.layer\.\d+\.(SelfAttention|EncDecAttention)\.k$",
        "value": rf"(?P<stack>encoder|decoder)\.block\.{_L}\.layer\.\d+\.(SelfAttention|EncDecAttention)\.v$",
        "attention_output": rf"(?P<stack>encoder|decoder)\.block\.{_L}\.layer\.\d+\.(SelfAttention|EncDecAttention)\.o$",
        "ffn_in": rf"(?P<stack>encoder|decoder)\.block\.{_L}\.layer\.\d+\.DenseReluDense\.wi(_0|_1)?$",
        "ffn_out": rf"(?P<stack>encoder|decoder)\.block\.{_L}\.layer\.\d+\.DenseReluDense\.wo$",
        "word_embeddings": r"^shared$",
    },
    "marian": {
        "query": rf"(?P<stack>encoder|decoder)\.layers\.{_L}\.(self_attn|encoder_attn)\.q_proj$",
        "key": rf"(?P<stack>encoder|decoder)\.layers\.{_L}\.(self_attn|encoder_attn)\.k_proj$",
        "value": rf"(?P<stack>encoder|decoder)\.layers\.{_L}\.(self_attn|encoder_attn)\.v_proj$",
        "attention_output": rf"(?P<stack>encoder|decoder)\.layers\.{_L}\.(self_attn|encoder_attn)\.out_proj$",
        "ffn_in": rf"(?P<stack>encoder|decoder)\.layers\.{_L}\.fc1$",
        "ffn_out": rf"(?P<stack>encoder|decoder)\.layers\.{_L}\.fc2$",
        "word_embeddings": r"model\.shared$",
    },
}
# Architectures whose module names match an existing preset.
for _alias, _base in {"roberta": "bert", "xlm-roberta": "bert", "electra": "bert", "camembert": "bert",
                      "mt5": "t5", "bart": "marian", "mbart": "marian"}.items():
    PRESETS[_alias] = PRESETS[_base]

#: names usable in ``targets=`` that stand for several roles
ROLE_GROUPS: dict[str, tuple[str, ...]] = {
    "all-linear": ("query", "key", "value", "attention_output", "ffn_in", "ffn_out"),
    "attention": ("query", "key", "value", "attention_output"),
    "qkv": ("query", "key", "value"),
    "ffn": ("ffn_in", "ffn_out"),
}


@dataclass(frozen=True)
class Target:
    """One weight-holding module chosen for compression.

    Attributes:
        name: full module name in the model (``"bert.encoder.layer.3.attention.self.query"``).
        role: preset role (``"query"``), or ``"custom"`` when chosen by a regex.
        layer: layer index within its stack, or ``None`` (embeddings, pooler).
        stack: ``"encoder"``/``"decoder"`` for encoder-decoders, else ``""``.
        module: the module itself.
    """

    name: str
    role: str
    layer: int | None
    stack: str
    module: nn.Module


def preset_for(model: nn.Module) -> dict[str, str]:
    """The role -> regex preset of ``model``'s architecture (by ``model.config.model_type``)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in PRESETS:
        raise ValueError(
            f"no target preset for model_type {model_type!r}; known: {sorted(PRESETS)}. "
            "Pass regular expressions over module names instead (targets='re:...')."
        )
    return PRESETS[model_type]


def _parse_targets(targets: str | Iterable[str]) -> list[str]:
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",")] if not targets.startswith("re:") else [targets]
    items = [t for t in targets if t]
    if not items:
        raise ValueError("targets is empty; give roles (e.g. 'query,key'), a group (e.g. 'all-linear') or 're:<regex>'")
    return items


def resolve_targets(
    model: nn.Module, targets: str | Iterable[str] = "all-linear", module_types: tuple[type, ...] = (nn.Linear, nn.Embedding)
) -> list[Target]:
    """The modules of ``model`` named by ``targets``, in model order.

    Args:
        model: a Hugging Face model (its ``config.model_type`` picks the preset).
        targets: comma-separated string or list of role names (``"query"``), role groups
            (``"all-linear"``, ``"attention"``, ``"qkv"``, ``"ffn"``), or regular expressions
            over module names prefixed by ``"re:"`` (``"re:encoder\\.layer\\.0\\..*"``).
        module_types: only modules of these types are returned (other matches are skipped).

    Raises:
        ValueError: an unknown role, or an entry that matches no module of ``model``.
    """
    items = _parse_targets(targets)
    patterns: list[tuple[str, str, str]] = []  # (entry, role, regex)
    preset = None
    for item in items:
        if item.startswith("re:"):
            patterns.append((item, "custom", item[3:]))
            continue
        preset = preset if preset is not None else preset_for(model)
        roles = ROLE_GROUPS.get(item, (item,))
        for role in roles:
            if role not in preset:
                allowed = sorted(set(preset) | set(ROLE_GROUPS))
                raise ValueError(f"unknown target {item!r} for {model.config.model_type}; allowed: {allowed} or 're:<regex>'")
            patterns.append((item, role, preset[role]))

    found: dict[str, Target] = {}
    matched_entries: set[str] = set()
    for name, module in model.named_modules():
        if not isinstance(module, module_types):
            continue
        for entry, role, regex in patterns:
            match = re.search(regex, name)
            if match and name not in found:
                groups = match.groupdict()
                layer = groups.get("layer")
                found[name] = Target(name, role, int(layer) if layer is not None else None, groups.get("stack") or "", module)
                matched_entries.add(entry)
    missing = [entry for entry in items if entry not in matched_entries]
    if missing:
        raise ValueError(
            f"target(s) {missing} matched no {'/'.join(t.__name__ for t in module_types)} module of this "
            f"{type(model).__name__}; module names look like {_example_names(model, module_types)}"
        )
    return list(found.values())


def _example_names(model: nn.Module, module_types: tuple[type, ...], k: int = 3) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, module_types)][:k]


def group_targets(targets: list[Target], grouping: str = "matrix") -> list[list[Target]]:
    """Group targets for joint factorization.

    ``"matrix"``: each weight alone. ``"layer"``: the targets of one layer together (e.g. a
    layer's Q, K and V). ``"role"``: one role across all layers (e.g. all queries: "vertical"
    or "concatenated" compression). ``"all"``: everything in one group.
    """
    if grouping == "matrix":
        return [[t] for t in targets]
    keys = {"layer": lambda t: (t.stack, t.layer), "role": lambda t: (t.stack, t.role), "all": lambda t: 0}
    if grouping not in keys:
        raise ValueError(f"grouping must be one of ['matrix', {', '.join(map(repr, keys))}], got {grouping!r}")
    groups: dict = defaultdict(list)
    for t in targets:
        groups[keys[grouping](t)].append(t)
    return list(groups.values())


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at dotted path ``name`` in ``model`` (the parent must exist)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
