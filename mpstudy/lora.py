"""LoRA through PEFT: the parameter-efficient fine-tuning baseline users would reach for instead."""
from __future__ import annotations

import re

from torch import nn

from .layers.base import CompressedLayer
from .targets import resolve_targets

__all__ = ["apply_lora", "lora_target_names"]


def lora_target_names(model: nn.Module, targets: str = "query,value") -> list[str]:
    """The ``nn.Linear`` modules LoRA adapts for ``targets``: each plain Linear named, and inside a
    compressed layer its inner Linears (``first`` and ``second`` of an SVD layer).

    An adapter on an SVD layer's inner Linears trains ``(A + dA)(B + dB)``: the update stays within
    the layer's rank, and ``mpstudy.merge`` after PEFT's merge gives a plain model (the recover-with-LoRA
    path). A compressed layer with no trainable Linear inside (MPO, Tucker, FALCON, Kronecker and the
    autoencoder rebuild their weight from factors; a magnitude-pruned Linear would lose a merged
    update to its mask; int8 does not train) is refused in one line naming it.
    """
    names = []
    for t in resolve_targets(model, targets, module_types=(nn.Linear, CompressedLayer)):
        if type(t.module) is nn.Linear and not hasattr(t.module, "weight_mask"):
            names.append(t.name)
            continue
        inner = [f"{t.name}.{n}" for n, m in t.module.named_modules()
                 if n and type(m) is nn.Linear and not hasattr(m, "weight_mask")]
        if not inner:
            raise ValueError(f"LoRA adapts nn.Linear modules; {t.name} ({type(t.module).__name__}) has none inside that can "
                             "take a merged update (its weight is rebuilt from factors, masked or int8): target plain or "
                             "SVD-factorized layers, or mpstudy.merge the model first")
        names.extend(inner)
    return names


def apply_lora(model: nn.Module, rank: int = 8, alpha: int = 16, dropout: float = 0.1, targets: str = "query,value",
               train_pooler: bool = True) -> nn.Module:
    """Wrap ``model`` with PEFT LoRA adapters on ``targets`` (mpstudy roles or ``re:`` regexes; in a
    compressed model, the Linears inside its factorized layers: :func:`lora_target_names`).

    The modules are resolved with the architecture presets, so the same call works for BERT,
    ALBERT, T5... The classifier head trains too (PEFT's ``SEQ_CLS`` task type keeps it in
    ``modules_to_save``), and so does the pooler with ``train_pooler`` (the default): checkpoints
    such as all-MiniLM-L6-v2 ship no trained pooler, and a frozen random one in front of the
    classifier would block learning. Returns the PEFT model: only adapters, head (and pooler)
    require grad.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LoRA rank must be a positive int, got {rank!r}")
    names = lora_target_names(model, targets)
    task_type = TaskType.SEQ_2_SEQ_LM if getattr(model.config, "is_encoder_decoder", False) else TaskType.SEQ_CLS
    pooler = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and re.search(r"pooler(\.dense)?$", n)]
    pooler = pooler if train_pooler else []
    config = LoraConfig(task_type=task_type, r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=names,
                        modules_to_save=pooler or None)
    return get_peft_model(model, config)
