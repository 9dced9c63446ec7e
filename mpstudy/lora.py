"""LoRA through PEFT: the parameter-efficient fine-tuning baseline users would reach for instead."""
from __future__ import annotations

import re

from torch import nn

from .targets import resolve_targets

__all__ = ["apply_lora"]


def apply_lora(model: nn.Module, rank: int = 8, alpha: int = 16, dropout: float = 0.1, targets: str = "query,value",
               train_pooler: bool = True) -> nn.Module:
    """Wrap ``model`` with PEFT LoRA adapters on ``targets`` (mpstudy roles or ``re:`` regexes).

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
    names = [t.name for t in resolve_targets(model, targets, module_types=(nn.Linear,))]
    task_type = TaskType.SEQ_2_SEQ_LM if getattr(model.config, "is_encoder_decoder", False) else TaskType.SEQ_CLS
    pooler = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and re.search(r"pooler(\.dense)?$", n)]
    pooler = pooler if train_pooler else []
    config = LoraConfig(task_type=task_type, r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=names,
                        modules_to_save=pooler or None)
    return get_peft_model(model, config)
