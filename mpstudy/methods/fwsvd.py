"""Fisher-weighted SVD (Hsu et al., ICLR 2022): truncated SVD whose error is weighted by row importance.

Two steps: :func:`mpstudy.fisher.estimate_fisher` runs the (fine-tuned) model on task data and accumulates the
squared gradients of every targeted weight, summed per row (output neuron); ``compress(model,
"fwsvd", fisher=..., rank=... | keep=...)`` then replaces each targeted ``nn.Linear`` by a
:class:`~mpstudy.layers.lowrank.LowRankLinear` holding the row-weighted optimum
(:func:`mpstudy.factorize.fwsvd.weighted_truncated_svd`). The layer is the same as plain SVD's, so the
parameter count, speed and save/load are identical; only the factors differ.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ..factorize.fwsvd import weighted_truncated_svd
from ..layers.lowrank import LowRankLinear, resolve_rank
from ..targets import Target
from .registry import Method, register_method

__all__ = ["FisherImportance", "fwsvd_linear"]


class FisherImportance(Mapping):
    """Row importances per module: ``name -> (out_features,)`` float32 tensor (on the CPU).

    Entry ``i`` of a module's vector is ``sum over batches and inputs j of (dL/dW_ij)**2``, the
    row sum of the empirical Fisher information of that module's weight (Hsu et al.'s ``I_i``).

    Attributes:
        rows: the importances by module name.
        examples: training rows the estimate saw.
        batches: backward passes it took.
        batch_size: rows per backward pass (1 = per-example squared gradients, the exact empirical
            Fisher; larger batches square the batch-mean gradient, a cheaper approximation).
        task: the task's name.
    """

    def __init__(self, rows: dict[str, torch.Tensor], examples: int, batches: int, batch_size: int, task: str = "") -> None:
        self.rows, self.examples, self.batches, self.batch_size, self.task = rows, examples, batches, batch_size, task

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.rows[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def to_dict(self) -> dict[str, Any]:
        """A JSON summary (the vectors themselves are not written into results records)."""
        return {"modules": len(self.rows), "examples": self.examples, "batches": self.batches,
                "batch_size": self.batch_size, "task": self.task}

    def __repr__(self) -> str:
        return f"FisherImportance({self.to_dict()})"


def fwsvd_linear(dense: nn.Linear, importance: torch.Tensor, rank: int | None = None, keep: float | None = None,
                 allow_no_saving: bool = False) -> LowRankLinear:
    """A :class:`~mpstudy.layers.lowrank.LowRankLinear` holding the row-weighted best rank-r fit of ``dense``.

    ``importance`` has shape ``(out_features,)``; ``rank``/``keep``/``allow_no_saving`` as for
    :meth:`~mpstudy.layers.lowrank.LowRankLinear.from_dense` (the same rule ``r < mn/(m+n)`` applies). The bias is copied.
    """
    if not isinstance(dense, nn.Linear):
        raise TypeError(f"fwsvd replaces nn.Linear, got {type(dense).__name__}")
    m, n = dense.out_features, dense.in_features
    rank = resolve_rank(m, n, rank=rank, keep=keep, allow_no_saving=allow_no_saving)
    A, B = weighted_truncated_svd(dense.weight, importance, rank)
    return LowRankLinear.from_factors(A, B, dense.bias)


def _compress_group(group: list[Target], budget: dict[str, Any]) -> dict[str, nn.Module]:
    budget = dict(budget)
    fisher = budget.pop("fisher", None)
    if fisher is None:
        raise ValueError("method 'fwsvd' needs fisher=<row importances>; estimate them with "
                         "mpstudy.fisher.estimate_fisher(model, tokenizer, task, targets=...)")
    missing = [t.name for t in group if t.name not in fisher]
    if missing:
        raise ValueError(f"fisher has no importances for {missing[:3]}{' ...' if len(missing) > 3 else ''}; "
                         f"it covers {len(fisher)} modules: estimate it with the same targets")
    return {t.name: fwsvd_linear(t.module, fisher[t.name], **budget) for t in group}


register_method(
    Method(
        name="fwsvd",
        description="Fisher-weighted SVD: rows weighted by squared-gradient importance, then two thin Linears",
        budget_keys=("keep", "rank", "allow_no_saving", "fisher"),
        dense_types=(nn.Linear,),
        compress_group=_compress_group,
    )
)
