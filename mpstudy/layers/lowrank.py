"""``LowRankLinear``: a dense ``nn.Linear`` replaced by two thin ones (truncated SVD).

``y = x W^T + b`` with ``W ≈ A B`` becomes ``y = (x B^T) A^T + b``: two matrix products of
widths ``rank``, so, unlike most tensor formats, this layer saves FLOPs as well as storage
whenever ``rank < mn / (m + n)``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..factorize.svd import max_saving_rank, rank_for_keep, svd_num_params, truncated_svd
from .base import CompressedLayer, register_layer

__all__ = ["LowRankLinear"]


@register_layer
class LowRankLinear(CompressedLayer):
    """A linear map ``in_features -> rank -> out_features``.

    Attributes:
        first: ``nn.Linear(in_features, rank, bias=False)``, weight ``B`` of shape ``(rank, in_features)``.
        second: ``nn.Linear(rank, out_features)``, weight ``A`` of shape ``(out_features, rank)``,
            carrying the original bias.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__()
        if not 1 <= rank <= min(in_features, out_features):
            raise ValueError(
                f"rank must be in [1, {min(in_features, out_features)}] for a "
                f"{out_features}x{in_features} weight, got {rank}"
            )
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.first = nn.Linear(in_features, rank, bias=False)
        self.second = nn.Linear(rank, out_features, bias=bias)

    @classmethod
    def from_dense(
        cls,
        dense: nn.Linear,
        rank: int | None = None,
        keep: float | None = None,
        allow_no_saving: bool = False,
    ) -> "LowRankLinear":
        """Best rank-``rank`` factorization of ``dense.weight`` (bias copied unchanged).

        Args:
            dense: the layer to replace; its weight has shape ``(out_features, in_features)``.
            rank: kept rank; give exactly one of ``rank`` and ``keep``.
            keep: kept fraction of the weight's parameters, in ``(0, 1]``; the rank is
                ``floor(keep * m n / (m + n))``.
            allow_no_saving: accept a rank whose factors store as many weights as the dense
                matrix or more (``rank >= m n / (m + n)``); refused by default because such a
                "compression" only adds error.
        """
        if not isinstance(dense, nn.Linear):
            raise TypeError(f"LowRankLinear replaces nn.Linear, got {type(dense).__name__}")
        m, n = dense.out_features, dense.in_features
        rank = resolve_rank(m, n, rank=rank, keep=keep, allow_no_saving=allow_no_saving)
        A, B = truncated_svd(dense.weight, rank)
        return cls.from_factors(A, B, dense.bias)

    @classmethod
    def from_factors(cls, A: torch.Tensor, B: torch.Tensor, bias: torch.Tensor | None = None) -> "LowRankLinear":
        """The layer computing ``x @ (A @ B).T + bias`` from ``A`` ``(out, rank)`` and ``B`` ``(rank, in)``
        (copied; the layer takes ``A``'s device and dtype)."""
        (m, rank), n = A.shape, B.shape[1]
        if B.shape[0] != rank:
            raise ValueError(f"A {tuple(A.shape)} and B {tuple(B.shape)} do not chain: A's columns must equal B's rows")
        layer = cls(n, m, rank, bias=bias is not None).to(A.device, A.dtype)
        with torch.no_grad():
            layer.second.weight.copy_(A)
            layer.first.weight.copy_(B)
            if bias is not None:
                layer.second.bias.copy_(bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    def to_dense(self) -> torch.Tensor:
        """``A @ B``, shape ``(out_features, in_features)``."""
        return self.second.weight @ self.first.weight

    def num_params(self) -> int:
        """``rank * (in + out)`` factor weights plus ``out`` bias entries when there is a bias."""
        bias = self.out_features if self.second.bias is not None else 0
        return svd_num_params(self.out_features, self.in_features, self.rank) + bias

    def init_kwargs(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "rank": self.rank,
            "bias": self.second.bias is not None,
        }

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def resolve_rank(
    m: int, n: int, rank: int | None = None, keep: float | None = None, allow_no_saving: bool = False
) -> int:
    """The rank of an ``m x n`` factorization from exactly one of ``rank=`` or ``keep=``.

    Raises ValueError for a missing or doubled budget, a rank outside ``[1, min(m, n)]`` and,
    unless ``allow_no_saving``, a rank that stores no fewer weights than the dense matrix.
    """
    if (rank is None) == (keep is None):
        raise ValueError(f"give exactly one of rank= or keep= (got rank={rank!r}, keep={keep!r})")
    if keep is not None:
        rank = rank_for_keep(m, n, keep)
    if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= min(m, n):
        raise ValueError(f"rank must be an integer in [1, {min(m, n)}] for a {m}x{n} weight, got {rank!r}")
    if not allow_no_saving and rank > max_saving_rank(m, n):
        raise ValueError(
            f"rank {rank} stores {svd_num_params(m, n, rank):,} weights for a {m}x{n} matrix of "
            f"{m * n:,}: it saves nothing (ranks that save are <= {max_saving_rank(m, n)}); "
            "pass allow_no_saving=True to accept it"
        )
    return rank
