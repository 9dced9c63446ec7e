"""Truncated singular value decomposition, the oracle every low-rank method is measured against.

Pure tensor math: no ``nn.Module`` and no Hugging Face here.
"""
from __future__ import annotations

import torch

from .budget import check_keep

__all__ = ["truncated_svd", "svd_num_params", "max_saving_rank", "rank_for_keep"]


def truncated_svd(W: torch.Tensor, rank: int, compute_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` factorization of a matrix (Eckart–Young).

    Args:
        W: matrix of shape ``(m, n)``.
        rank: kept rank, ``1 <= rank <= min(m, n)``.
        compute_dtype: the dtype the SVD runs in. ``None`` (default): float64, the oracle path the
            tests check the other methods against, and the one whose results do not depend on the
            thread count at the digits the study pages print. ``torch.float32`` is about twice as
            fast (TensorLy's choice); its error (about 1e-6 of ``||W||``) is far below any
            truncation error a budget allows, but its 4th printed digit varies with the threads.

    Returns:
        ``(A, B)`` with ``A`` of shape ``(m, rank)`` and ``B`` of shape ``(rank, n)`` such that
        ``A @ B`` is the best rank-``rank`` approximation of ``W`` in Frobenius and spectral norm.
        The singular values are split evenly (``A = U sqrt(S)``, ``B = sqrt(S) Vh``) so both
        factors have the same scale, which keeps later fine-tuning well conditioned.
        Returned in ``W``'s dtype and device.
    """
    if W.dim() != 2:
        raise ValueError(f"truncated_svd expects a 2-D matrix, got shape {tuple(W.shape)}")
    m, n = W.shape
    if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= min(m, n):
        raise ValueError(f"rank must be an integer in [1, {min(m, n)}] for a {m}x{n} matrix, got {rank!r}")
    if not torch.isfinite(W).all():  # LAPACK would fail with a RuntimeError that does not say which input
        raise ValueError(f"W has {int((~torch.isfinite(W)).sum())} NaN or inf entries; truncated_svd needs a finite matrix")
    if compute_dtype is None:
        compute_dtype = torch.float64
    U, S, Vh = torch.linalg.svd(W.detach().to(compute_dtype), full_matrices=False)
    root = S[:rank].sqrt()
    A = U[:, :rank] * root
    B = root[:, None] * Vh[:rank]
    return A.to(W.dtype), B.to(W.dtype)


def svd_num_params(m: int, n: int, rank: int) -> int:
    """Weights stored by a rank-``rank`` factorization of an ``m x n`` matrix: ``rank * (m + n)``."""
    return rank * (m + n)


def max_saving_rank(m: int, n: int) -> int:
    """Largest rank that stores fewer weights than the dense matrix: the largest ``r < mn/(m+n)``."""
    return (m * n - 1) // (m + n)


def rank_for_keep(m: int, n: int, keep: float) -> int:
    """Rank whose factors keep at most ``keep`` of the ``m x n`` matrix's weights (at least 1).

    ``keep`` is the kept fraction of parameters, in ``(0, 1]``: ``rank = floor(keep * mn / (m+n))``.
    """
    keep = check_keep(keep)
    return max(1, int(keep * m * n // (m + n)))
