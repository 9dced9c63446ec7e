"""Sentence embeddings from any encoder (compressed or not), and the embedding tasks scored on them.

all-MiniLM-L6-v2 is a sentence-transformers model: its sentence embedding is the mean of the
encoder's last hidden states over the real (unpadded) tokens, L2-normalized (its ``modules.json``:
Transformer, mean Pooling, Normalize). :func:`embed` computes exactly that from a Hugging Face
encoder, so a compressed encoder is scored with no head and no training: :func:`evaluate_embeddings`
on ``stsb-embed`` (``load_task("stsb-embed")``, the STS-B dev pairs) is the Spearman correlation of
the pairs' cosine similarities with the gold scores, the evaluation of the Sentence-BERT paper. It
is deterministic and cheap (one forward per distinct sentence), the measure of an offline-compressed
encoder. ``tests/test_sentence_embeddings.py`` checks :func:`embed` against sentence-transformers'
own ``encode`` on MiniLM.

From the shell: ``mpstudy evaluate DIR_OR_MODEL --task stsb-embed``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["encoder_of", "embed", "evaluate_embeddings"]


def encoder_of(model: nn.Module) -> nn.Module:
    """The encoder inside a Hugging Face model (``model.base_model``: ``BertModel`` inside a
    ``BertForSequenceClassification``; the model itself when it is one)."""
    base = getattr(model, "base_model", None)
    return model if base is None else base


@torch.no_grad()
def embed(model: nn.Module, tokenizer: Any, sentences: Sequence[str], batch_size: int = 64, max_length: int = 128,
          normalize: bool = True) -> torch.Tensor:
    """Mean-pooled sentence embeddings, shape ``(len(sentences), hidden_size)``, float32 on the CPU.

    Each distinct sentence is encoded once; sentences are batched by length (less padding), and
    the mean runs over the attention mask, so the padding never counts. ``normalize``: unit L2
    norm (sentence-transformers' ``Normalize``; cosine similarity is then a dot product).
    """
    if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
        raise ValueError("sentences must be a sequence of strings")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    encoder = encoder_of(model)
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    distinct = sorted(set(sentences), key=lambda s: (len(s), s))
    out: dict[str, torch.Tensor] = {}
    try:
        for start in range(0, len(distinct), batch_size):
            chunk = distinct[start:start + batch_size]
            batch = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            hidden = encoder(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out.update(zip(chunk, pooled.cpu()))
    finally:
        encoder.train(was_training)
    if not sentences:
        return torch.zeros(0, getattr(encoder.config, "hidden_size", 0))
    return torch.stack([out[s] for s in sentences])


def evaluate_embeddings(model: nn.Module, tokenizer: Any, task, batch_size: int = 64, max_length: int = 128) -> dict[str, float]:
    """An embedding task's metrics (``pearson`` and ``spearman`` of cosine similarities against the gold scores).

    Args:
        model: any Hugging Face encoder, or a model holding one (its ``base_model`` is used; a task head is ignored).
        tokenizer: its tokenizer.
        task: a task of kind ``"embedding"`` (``load_task("stsb-embed", ...)``): its dev pairs are scored.
    """
    if getattr(task, "kind", None) != "embedding":
        raise ValueError(f"evaluate_embeddings scores embedding tasks (stsb-embed); {getattr(task, 'name', task)!r} is "
                         f"a {getattr(task, 'kind', type(task).__name__)} task: use mpstudy.evaluate")
    a = embed(model, tokenizer, [ex["text_a"] for ex in task.dev], batch_size, max_length)
    b = embed(model, tokenizer, [ex["text_b"] for ex in task.dev], batch_size, max_length)
    cosine = (a * b).sum(-1)
    return task.compute_metrics(cosine.tolist(), [float(ex["label"]) for ex in task.dev])
