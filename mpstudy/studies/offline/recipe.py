"""The offline-compression study (Banaei et al., 2023; ``notebooks/04_offline.ipynb``): measuring
a compressed model without any training.

The methods themselves are registered in :mod:`mpstudy.methods.offline`; this module holds what
the study does with them: one grid cell (:func:`compress_and_measure`), the achieved ratio, the
reconstruction quality of each matrix and the drift of the encoder's outputs.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...accounting import budget_count
from ...factorize.budget import check_keep
from ...layers.base import CompressedLayer
from ...surgery import compress

__all__ = [
    "achieved_cr",
    "compression_info",
    "reconstruction_quality",
    "encoder_states",
    "state_drift",
    "method_budget",
    "compress_and_measure",
]



def achieved_cr(report, model: nn.Module) -> float:
    """Compression ratio ``compress`` achieved on ``model``: dense weight entries / numbers kept, biases excluded.

    Args:
        report: the ``CompressionReport`` of the compression.
        model: the compressed model (the replaced modules are read by the report's names).

    The numbers kept are ``mpstudy.accounting.budget_count`` of the replaced modules: their stored
    numbers, shared tensors once, without the biases every method keeps unchanged; for magnitude
    pruning the non-zero weights (its masked weights are still stored).
    """
    entries = sum(math.prod(m["shape"]) for m in report.modules)
    return entries / budget_count(model, [m["name"] for m in report.modules])


def compression_info(model: nn.Module) -> list[dict[str, Any]]:
    """The build information of every offline group in ``model`` (training time and losses of an
    autoencoder, plans...), one entry per group."""
    seen, out = set(), []
    for module in model.modules():
        info = getattr(module, "compress_info", None)
        if info is not None and id(info) not in seen:
            seen.add(id(info))
            out.append(info)
    return out


@torch.no_grad()
def reconstruction_quality(dense: dict[str, torch.Tensor], model: nn.Module) -> list[dict[str, Any]]:
    """Per replaced module: relative Frobenius error and mean / min row cosine against the dense weight.

    Args:
        dense: module name -> original weight ``(rows, cols)`` (take them before compressing).
        model: the compressed model (its ``CompressedLayer`` at each of those names).
    """
    out = []
    for name, W in dense.items():
        layer = model.get_submodule(name)
        if not isinstance(layer, CompressedLayer):
            raise ValueError(f"{name} is not a compressed layer in this model ({type(layer).__name__})")
        W_hat = layer.to_dense().to(W.dtype)
        cos = F.cosine_similarity(W_hat, W, dim=1)
        valid = W.norm(dim=1) > 0  # an all-zero row (e.g. a padding embedding) has no direction
        out.append({"name": name, "rel_error": float(torch.linalg.norm(W - W_hat) / torch.linalg.norm(W)),
                    "row_cosine": float(cos[valid].mean()), "row_cosine_min": float(cos[valid].min())})
    return out


@torch.no_grad()
def encoder_states(model: nn.Module, tokenizer, sentences: list[str], max_length: int = 64,
                   batch_size: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Last hidden states and attention masks of ``model``'s base encoder on ``sentences`` (eval mode).

    Returns a list of ``(hidden (batch, seq, dim), mask (batch, seq))`` per batch, to compare
    models on the same tokens with :func:`state_drift`.
    """
    encoder = getattr(model, "base_model", model)
    was_training = encoder.training
    encoder.eval()
    out = []
    for i in range(0, len(sentences), batch_size):
        batch = tokenizer(sentences[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        out.append((hidden.float(), batch["attention_mask"]))
    encoder.train(was_training)
    return out


def state_drift(reference: list[tuple[torch.Tensor, torch.Tensor]], states: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """How far a compressed encoder's outputs moved from the reference's, on the same sentences.

    Returns:
        ``hidden_rel_error``: ``||H - H_ref||_F / ||H_ref||_F`` over all non-padding tokens;
        ``token_cosine``: mean cosine of token states; ``sentence_cosine`` / ``sentence_cosine_min``:
        mean / smallest cosine between mean-pooled sentence embeddings (the sentence-transformers
        pooling of all-MiniLM-L6-v2).
    """
    diff = ref = 0.0
    tok_cos, sent_cos = [], []
    for (h_ref, mask), (h, _) in zip(reference, states):
        m = mask.bool()
        diff += float(((h - h_ref)[m] ** 2).sum())
        ref += float((h_ref[m] ** 2).sum())
        tok_cos.append(F.cosine_similarity(h[m], h_ref[m], dim=-1))
        w = mask.unsqueeze(-1).float()
        pooled, pooled_ref = (h * w).sum(1) / w.sum(1), (h_ref * w).sum(1) / w.sum(1)
        sent_cos.append(F.cosine_similarity(pooled, pooled_ref, dim=-1))
    sent = torch.cat(sent_cos)
    return {"hidden_rel_error": (diff / ref) ** 0.5, "token_cosine": float(torch.cat(tok_cos).mean()),
            "sentence_cosine": float(sent.mean()), "sentence_cosine_min": float(sent.min())}


def method_budget(method: str, module: str, model: nn.Module, ae: dict[str, Any] | None = None) -> dict[str, Any]:
    """The extra budget keywords the offline study passes to ``method`` for target ``module``.

    Tucker cuts attention-shaped rows into heads (``block = hidden / heads`` from the model's
    config) and embeddings into blocks of their width; the autoencoder gets ``ae`` (``epochs``,
    ``batch_size`` and ``lr``, each a number or a dict per module type, and ``seed``).
    """
    if method == "offline-tucker":
        cfg = getattr(model, "config", None)
        heads = getattr(cfg, "num_attention_heads", None)
        return {"block": None if module == "word_embeddings" or not heads else cfg.hidden_size // heads}
    if method == "offline-ae":
        ae = dict(ae or {})
        for key in ("epochs", "lr", "batch_size"):  # a number, or a dict per module type
            if isinstance(ae.get(key), dict):
                ae[key] = ae[key][module]
        return ae
    return {}


def compress_and_measure(base: nn.Module, method: str, module: str, keep: float, mode: str,
                         reference: list[tuple[torch.Tensor, torch.Tensor]], tokenizer, sentences: list[str],
                         max_length: int = 64, **budget: Any) -> tuple[nn.Module | None, dict[str, Any]]:
    """Compress a copy of ``base`` and measure it offline (no training): one cell of the study's grid.

    Args:
        base: the model to copy (left untouched).
        method, module, keep, mode: the cell (``module`` is a target role such as ``"key"``; ``keep`` the
            kept fraction of its weights, shown as the paper's compression ratio ``cr = 1 / keep``).
        reference: :func:`encoder_states` of ``base`` on ``sentences``.
        **budget: extra method keywords (see :func:`method_budget`).

    Returns:
        ``(student, row)``: the compressed copy (``None`` if the budget is impossible) and a flat
        record: the cell (its budget as ``cr``), ``feasible`` (and ``error``), ``achieved_cr``, parameter counts, mean
        ``rel_error`` / ``row_cosine`` over the replaced matrices, the drift of
        :func:`state_drift`, ``compress_seconds`` and, for the autoencoder, its training time,
        best epoch and loss.
    """
    keep = check_keep(keep, full=False)
    cr = 1 / keep  # the paper's label of the cell; an integer when it is one (keep = 1/3 is CR 3, not 3.0000000000000004)
    cr = round(cr) if abs(cr - round(cr)) < 1e-9 else cr
    row: dict[str, Any] = {"method": method, "module": module, "cr": cr, "mode": mode, "seed": budget.get("seed", 0)}
    student = copy.deepcopy(base)
    start = time.perf_counter()
    try:
        report = compress(student, method, targets=module, keep=keep, mode=mode, **budget)
    except ValueError as err:
        return None, {**row, "feasible": False, "error": str(err)}
    row["compress_seconds"] = time.perf_counter() - start
    dense = {m["name"]: base.get_submodule(m["name"]).weight.detach() for m in report.modules}
    quality = reconstruction_quality(dense, student)
    drift = state_drift(reference, encoder_states(student, tokenizer, sentences, max_length=max_length))
    infos = compression_info(student)
    row.update({"feasible": True, "achieved_cr": achieved_cr(report, student), "params_before": report.params_before,
                "params_after": report.params_after, "nonzero_after": report.nonzero_after, "groups": len(infos),
                "rel_error": sum(q["rel_error"] for q in quality) / len(quality),
                "row_cosine": sum(q["row_cosine"] for q in quality) / len(quality), **drift})
    if method == "offline-ae":
        row.update({"ae_seconds": sum(i["seconds"] for i in infos), "ae_best_epoch": max(i["best_epoch"] for i in infos),
                    "ae_epochs": infos[0]["epochs"], "ae_loss": sum(i["loss"] for i in infos) / len(infos),
                    "ae_latent": infos[0]["latent"]})
    return student, row
