"""Fisher row importances of a model's Linear weights, estimated from squared task gradients.

This is the training-side half of FWSVD (Hsu et al., ICLR 2022): it runs a model on task data,
so it sits beside the training loop rather than in the method registry
(:mod:`mpstudy.methods.fwsvd`, which only consumes the importances).
"""
from __future__ import annotations

import torch
from torch import nn

from .methods.fwsvd import FisherImportance
from .targets import resolve_targets
from .tasks import make_collate
from .train import iterate_batches

__all__ = ["estimate_fisher"]


def estimate_fisher(model: nn.Module, tokenizer, task, targets: str | list[str] = "all-linear",
                    max_examples: int | None = 256, batch_size: int = 8, max_length: int = 128,
                    seed: int = 0, device: str | torch.device | None = None) -> FisherImportance:
    """Row importances of the targeted ``nn.Linear`` weights from squared gradients of the task loss.

    The model runs in eval mode (no dropout: the Fisher of the model as it will be compressed) on
    ``max_examples`` rows of ``task.train`` (a seeded subset; ``None``: all), ``batch_size`` rows per
    backward pass, with its own task loss (cross-entropy, MSE for regression, token cross-entropy
    for seq2seq). Weights are not changed; gradients and ``requires_grad`` flags are restored.

    Returns:
        :class:`~mpstudy.methods.fwsvd.FisherImportance` with one ``(out_features,)`` vector per targeted module.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if max_examples is not None and (isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1):
        raise ValueError(f"max_examples must be a positive int or None (all rows), got {max_examples!r}")
    chosen = resolve_targets(model, targets, module_types=(nn.Linear,))
    rows_all = task.train
    if max_examples is not None and max_examples < len(rows_all):
        keep = torch.randperm(len(rows_all), generator=torch.Generator().manual_seed(seed))[:max_examples]
        rows_all = [rows_all[i] for i in sorted(keep.tolist())]
    device = next(model.parameters()).device if device is None else torch.device(device)

    flags = {id(p): p.requires_grad for p in model.parameters()}
    was_training = model.training
    model.eval()
    for p in model.parameters():  # only the targeted weights need gradients
        p.requires_grad_(False)
    for t in chosen:
        t.module.weight.requires_grad_(True)
        t.module.weight.grad = None
    sums = {t.name: torch.zeros(t.module.out_features, dtype=torch.float64) for t in chosen}
    batches = 0
    collate = make_collate(task, tokenizer, max_length=max_length)
    try:
        for _, batch in iterate_batches(rows_all, collate, batch_size):
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
            loss.backward()
            for t in chosen:
                sums[t.name] += t.module.weight.grad.detach().double().pow(2).sum(1).cpu()
                t.module.weight.grad = None
            batches += 1
    finally:
        for p in model.parameters():
            p.requires_grad_(flags[id(p)])
            p.grad = None
        model.train(was_training)
    return FisherImportance({k: v.float() for k, v in sums.items()}, examples=len(rows_all), batches=batches,
                            batch_size=batch_size, task=getattr(task, "name", ""))
