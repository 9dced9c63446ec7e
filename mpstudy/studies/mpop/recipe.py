"""MPOP's set-up as one call: which weights go into MPO, with which bond caps, and how they train.

MPOP (Liu et al., ACL 2021) decomposes the *pre-trained* weights of the word embeddings, the
attention projections, the FFN and the pooler into MPOs, then fine-tunes either every tensor
("full") or only the auxiliary tensors ("lightweight", central tensors frozen), with the MPO
tensors in their own optimizer group. The original ALBERT runs cap the embedding bonds at 240
and the linear/attention bonds at 384/256, which for 768-wide matrices cuts nothing.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ...accounting import count_parameters
from ...layers.mpo import mpo_layers
from ...surgery import CompressionReport, compress
from ...train import default_param_groups

__all__ = ["MPOP_ROLES", "mpop_compress", "mpop_variant", "set_lightweight", "mpo_param_groups"]

#: role groups of MPOP's ``--mpo_layers`` and the cap each uses — (mpstudy targets, cap key)
MPOP_ROLES: dict[str, tuple[str, str]] = {
    "word_embed": ("word_embeddings", "emb_cap"),
    "attention": ("qkv", "attention_cap"),
    "attention_output": ("attention_output", "attention_output_cap"),  # the original never truncated it
    "FFN": ("ffn", "linear_cap"),
    "pooler": ("pooler", "attention_cap"),
}


def mpop_compress(model: nn.Module, layers: tuple[str, ...] = tuple(MPOP_ROLES), emb_cap: int | None = None,
                  attention_cap: int | None = None, linear_cap: int | None = None,
                  attention_output_cap: int | None = None) -> list[CompressionReport]:
    """Put the chosen MPOP layer groups of ``model`` into MPO form, in place.

    Args:
        layers: groups among ``MPOP_ROLES`` (``word_embed``, ``attention``, ``attention_output``,
            ``FFN``, ``pooler``); a group the architecture lacks (no pooler) is an error.
        emb_cap, attention_cap, linear_cap, attention_output_cap: bond caps (``None``: untruncated).

    Returns one ``CompressionReport`` per group.
    """
    unknown = sorted(set(layers) - set(MPOP_ROLES))
    if unknown:
        raise ValueError(f"unknown MPOP layer group(s) {unknown}; allowed: {list(MPOP_ROLES)}")
    caps = {"emb_cap": emb_cap, "attention_cap": attention_cap, "linear_cap": linear_cap,
            "attention_output_cap": attention_output_cap}
    return [compress(model, "mpo", targets=MPOP_ROLES[g][0], max_bond=caps[MPOP_ROLES[g][1]]) for g in layers]


def mpop_variant(model: nn.Module, variant: str, mpo_lr: float | None = None, weight_decay: float = 0.0) -> list[dict[str, Any]] | None:
    """Set which tensors of an MPO model train; returns the optimizer groups to pass to ``train``.

    ``"full"``: every tensor trains (MPO cores at ``mpo_lr`` if given). ``"lightweight"``: central
    tensors frozen, auxiliary tensors at ``mpo_lr``, everything outside the MPO layers at the
    run's main learning rate (MPOP's ``--tensor_learn``).
    """
    if variant not in ("full", "lightweight"):
        raise ValueError(f"variant must be 'full' or 'lightweight', got {variant!r}")
    set_lightweight(model, central_trainable=variant == "full")
    return mpo_param_groups(model, mpo_lr, weight_decay) if mpo_lr is not None else None


def set_lightweight(model: nn.Module, central_trainable: bool = False) -> dict[str, int]:
    """MPOP's lightweight fine-tuning: freeze every MPO layer's central tensor.

    Everything outside the MPO layers (other embeddings, LayerNorms, biases, the classifier) and
    the auxiliary tensors stay trainable, as in the original. ``central_trainable=True`` undoes it
    (all tensors train: "MPOP_full"). Returns ``mpstudy.count_parameters(model)``.
    """
    layers = mpo_layers(model)
    if not layers:
        raise ValueError("the model has no MPO layers; compress it with method 'mpo' first")
    for layer in layers.values():
        layer.central_tensor().requires_grad_(central_trainable)
    return count_parameters(model)


def mpo_param_groups(model: nn.Module, mpo_lr: float, weight_decay: float = 0.0) -> list[dict[str, Any]]:
    """AdamW groups as in MPOP's trainer: the MPO cores at their own learning rate ``mpo_lr``.

    The other trainable parameters keep the run's main learning rate (``TrainConfig.lr``), with
    weight decay except on biases and norms. Only parameters with ``requires_grad`` are included,
    so a frozen central tensor is never handed to the optimizer.
    """
    cores = [c for layer in mpo_layers(model).values() for c in layer.cores if c.requires_grad]
    core_ids = {id(c) for c in cores}
    groups = default_param_groups(model, weight_decay)
    for group in groups:
        group["params"] = [p for p in group["params"] if id(p) not in core_ids]
    return [g for g in groups if g["params"]] + [{"params": cores, "lr": mpo_lr, "weight_decay": 0.0}]
