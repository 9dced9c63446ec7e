"""LoRA through PEFT: the parameter-efficient fine-tuning baseline users would reach for instead."""
from __future__ import annotations

from torch import nn

from .targets import resolve_targets

__all__ = ["apply_lora"]


def apply_lora(model: nn.Module, rank: int = 8, alpha: int = 16, dropout: float = 0.1, targets: str = "query,value") -> nn.Module:
    """Wrap ``model`` with PEFT LoRA adapters on ``targets`` (mpstudy roles or ``re:`` regexes).

    The modules are resolved with the architecture presets, so the same call works for BERT,
    ALBERT, T5... The classifier head trains too (PEFT's ``SEQ_CLS`` task type keeps it in
    ``modules_to_save``). Returns the PEFT model: only the adapters and the head require grad.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LoRA rank must be a positive int, got {rank!r}")
    names = [t.name for t in resolve_targets(model, targets, module_types=(nn.Linear,))]
    task_type = TaskType.SEQ_2_SEQ_LM if getattr(model.config, "is_encoder_decoder", False) else TaskType.SEQ_CLS
    config = LoraConfig(task_type=task_type, r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=names)
    return get_peft_model(model, config)
