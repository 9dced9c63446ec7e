"""Fisher-weighted truncated SVD (FWSVD, Hsu et al., ICLR 2022): a row-weighted low-rank fit.

Plain truncated SVD minimizes ``||W - A B||_F`` and so treats every weight alike. FWSVD gives each
row ``i`` of ``W`` (one output neuron of an ``nn.Linear``, whose weight is ``(out, in)``) an
importance ``I_i >= 0`` (the row sum of the empirical Fisher information of its weights, estimated
from squared gradients on task data) and minimizes the weighted error

    ``sum_i I_i * ||W_i - (A B)_i||^2  =  || D (W - A B) ||_F^2``,  ``D = diag(sqrt(I))``.

Because ``D`` only scales rows, the problem has a closed form: with ``D W = U S V^T``, the best
rank-``r`` solution is ``A B = D^{-1} [D W]_r`` (Eckart-Young applied to ``D W``; multiplying by
the invertible ``D^{-1}`` does not change the rank). Its weighted error is the tail of the
spectrum of ``D W``. Pure tensor math: no ``nn.Module`` and no Hugging Face here.
"""
from __future__ import annotations

import torch

from .svd import truncated_svd

__all__ = ["normalize_importance", "weighted_truncated_svd", "row_weighted_error"]

#: rows with (numerically) zero importance get this fraction of the mean importance, so that
#: ``D`` stays invertible; their fit then barely matters, which is what a zero weight asks for.
ZERO_FLOOR = 1e-6


def normalize_importance(importance: torch.Tensor, rows: int) -> torch.Tensor:
    """Check row importances and scale them to mean 1 (float64).

    The weighted problem does not change when all importances are multiplied by a constant, so
    normalizing loses nothing and makes uniform importances exactly the all-ones vector (then
    FWSVD returns the same factors as plain SVD). Rows below ``ZERO_FLOOR`` of the mean are raised
    to it, so that ``D = diag(sqrt(I))`` can be inverted.

    Args:
        importance: shape ``(rows,)``, finite and ``>= 0``, not all zero.
        rows: the number of rows of the matrix it weighs.

    Returns:
        ``(rows,)`` float64 tensor with mean (about) 1 and every entry ``> 0``.
    """
    if not isinstance(importance, torch.Tensor) or importance.dim() != 1 or importance.numel() != rows:
        shape = tuple(importance.shape) if isinstance(importance, torch.Tensor) else type(importance).__name__
        raise ValueError(f"row importances must be a 1-D tensor of length {rows} (one per row), got {shape}")
    imp = importance.detach().double()
    if not torch.isfinite(imp).all() or (imp < 0).any():
        raise ValueError(f"row importances must be finite and >= 0, got min {imp.min().item()!r}, max {imp.max().item()!r}")
    mean = imp.mean()
    if mean <= 0:
        raise ValueError("row importances are all zero: no row would be fitted (did the Fisher estimate see any data?)")
    imp = imp / mean
    return imp.clamp_min(ZERO_FLOOR)


def weighted_truncated_svd(W: torch.Tensor, importance: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` factorization of ``W`` under row importances (FWSVD).

    Args:
        W: matrix of shape ``(m, n)`` (an ``nn.Linear`` weight: ``m`` outputs, ``n`` inputs).
        importance: ``(m,)`` row importances ``I_i >= 0`` (see :func:`normalize_importance`).
        rank: kept rank, ``1 <= rank <= min(m, n)``.

    Returns:
        ``(A, B)`` with ``A`` of shape ``(m, rank)`` and ``B`` of shape ``(rank, n)`` minimizing
        ``sum_i I_i ||W_i - (A B)_i||^2`` over all rank-``rank`` products:
        ``A = D^{-1} U_r S_r^{1/2}``, ``B = S_r^{1/2} V_r^T`` with ``D W = U S V^T``, ``D = diag(sqrt(I))``.
        With all-equal importances this is exactly :func:`~mpstudy.factorize.svd.truncated_svd`.
        Computed in float64 and returned in ``W``'s dtype and device.
    """
    if W.dim() != 2:
        raise ValueError(f"weighted_truncated_svd expects a 2-D matrix, got shape {tuple(W.shape)}")
    m, n = W.shape
    if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= min(m, n):
        raise ValueError(f"rank must be an integer in [1, {min(m, n)}] for a {m}x{n} matrix, got {rank!r}")
    d = normalize_importance(importance.to(W.device), m).sqrt()
    # the plain truncated SVD of D W (its Gram path and fallback), then the row weights undone on A
    A, B = truncated_svd(d[:, None] * W.detach().double(), rank)
    return (A / d[:, None]).to(W.dtype), B.to(W.dtype)


def row_weighted_error(W: torch.Tensor, approx: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """``sqrt(sum_i I_i ||W_i - approx_i||^2)`` with the raw (not normalized) importances ``I``.

    Args:
        W, approx: ``(m, n)`` matrices.
        importance: ``(m,)`` row importances.

    Returns:
        A float64 scalar tensor.
    """
    if W.shape != approx.shape:
        raise ValueError(f"W {tuple(W.shape)} and approx {tuple(approx.shape)} differ in shape")
    if importance.dim() != 1 or importance.numel() != W.shape[0]:
        raise ValueError(f"importance must have shape ({W.shape[0]},), got {tuple(importance.shape)}")
    diff = (W.detach().double() - approx.detach().double()).pow(2).sum(1)
    return (importance.detach().double().to(diff.device) * diff).sum().sqrt()
