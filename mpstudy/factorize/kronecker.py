"""Nearest sums of Kronecker products (Van Loan & Pitsianis, 1993), with padding and stacking.

A matrix ``W`` of shape ``(p*s, q*t)`` is approximated by ``sum_{k<r} A_k ⊗ B_k`` with
``A_k`` of shape ``(p, q)`` and ``B_k`` of shape ``(s, t)``; ``(A ⊗ B)[i*s + k, j*t + l] =
A[i, j] B[k, l]``. Rearranging ``W`` so that each ``s x t`` block becomes one row,

    R = rearrange(W)  of shape (p*q, s*t),   R[i*q + j, k*t + l] = W[i*s + k, j*t + l],

turns every Kronecker product into a rank-one matrix ``vec(A) vec(B)^T``, so the Frobenius-nearest
sum of ``r`` Kronecker products is the truncated SVD of ``R`` (Eckart–Young), in closed form. A
matrix whose sides do not factor is zero-padded to ``(p*s, q*t)`` first and the product cropped.

Stacking ``L`` matrices of the same shape along rows (the "concatenated" mode: one module type
of all layers), each padded to ``p*s`` rows, gives a ``(L*p*s, q*t)`` matrix whose nearest
Kronecker sum has ``A_k`` of shape ``(L*p, q)``: layer ``l`` owns rows ``l*p .. (l+1)*p`` of every
``A_k`` and all layers share the ``B_k``. Pure tensor math: no ``nn.Module`` here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .autoencoder import row_loss
from .budget import BUDGET_TOLERANCE, check_kept, keep_target

__all__ = [
    "KroneckerPlan",
    "kron_rearrange",
    "kron_unrearrange",
    "kronecker_sum_to_dense",
    "nearest_kronecker_sum",
    "kronecker_plan_for_keep",
    "refine_kronecker_sum",
]


def kron_rearrange(W: torch.Tensor, p: int, q: int) -> torch.Tensor:
    """``W`` ``(p*s, q*t)`` -> ``R`` ``(p*q, s*t)`` with ``R[i*q + j] = vec(block (i, j) of W)``."""
    if W.dim() != 2 or W.shape[0] % p or W.shape[1] % q:
        raise ValueError(f"kron_rearrange needs a 2-D matrix whose sides divide by (p, q) = ({p}, {q}), got {tuple(W.shape)}")
    s, t = W.shape[0] // p, W.shape[1] // q
    return W.reshape(p, s, q, t).permute(0, 2, 1, 3).reshape(p * q, s * t)


def kron_unrearrange(R: torch.Tensor, p: int, q: int, s: int, t: int) -> torch.Tensor:
    """Inverse of :func:`kron_rearrange`: ``R`` ``(p*q, s*t)`` -> ``W`` ``(p*s, q*t)``."""
    return R.reshape(p, q, s, t).permute(0, 2, 1, 3).reshape(p * s, q * t)


def kronecker_sum_to_dense(A: torch.Tensor, B: torch.Tensor, rows: int | None = None, cols: int | None = None) -> torch.Tensor:
    """``sum_k kron(A[k], B[k])`` cropped to ``(rows, cols)``.

    Args:
        A: ``(r, p, q)``; B: ``(r, s, t)``.
        rows, cols: crop of the ``(p*s, q*t)`` result (default: no crop).
    """
    r, p, q = A.shape
    _, s, t = B.shape
    W = torch.einsum("kpq,kst->psqt", A, B).reshape(p * s, q * t)
    return W[: rows or p * s, : cols or q * t]


def nearest_kronecker_sum(W: torch.Tensor, rank: int, p: int, q: int, s: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frobenius-nearest ``sum_{k<rank} A_k ⊗ B_k`` to ``W`` zero-padded to ``(p*s, q*t)``.

    Args:
        W: ``(rows, cols)`` with ``rows <= p*s`` and ``cols <= q*t``.
        rank: number of Kronecker terms, ``1 <= rank <= min(p*q, s*t)``.

    Returns:
        ``(A, B)`` shaped ``(rank, p, q)`` and ``(rank, s, t)``, each term's singular value split
        evenly between its two factors; computed in float64 and returned in ``W``'s dtype.
    """
    rows, cols = W.shape
    if rows > p * s or cols > q * t:
        raise ValueError(f"a {rows}x{cols} matrix does not fit Kronecker factors ({p}x{q}) ⊗ ({s}x{t})")
    if not isinstance(rank, int) or not 1 <= rank <= min(p * q, s * t):
        raise ValueError(f"rank must be an integer in [1, {min(p * q, s * t)}] for ({p}x{q}) ⊗ ({s}x{t}) terms, got {rank!r}")
    padded = torch.nn.functional.pad(W.detach().double(), (0, q * t - cols, 0, p * s - rows))
    U, S, Vh = torch.linalg.svd(kron_rearrange(padded, p, q), full_matrices=False)
    root = S[:rank].sqrt()
    A = (U[:, :rank] * root).T.reshape(rank, p, q)
    B = (root[:, None] * Vh[:rank]).reshape(rank, s, t)
    return A.to(W.dtype), B.to(W.dtype)


@dataclass(frozen=True)
class KroneckerPlan:
    """The structure of a (stacked) Kronecker-sum representation.

    ``stack`` matrices of ``rows x cols`` each, each padded to ``(p*s, q*t)``; ``rank`` terms with
    per-matrix outer factors ``(p, q)`` (owned by each matrix) and shared inner factors ``(s, t)``.
    """

    rows: int
    cols: int
    stack: int
    p: int
    q: int
    s: int
    t: int
    rank: int

    @property
    def stored(self) -> int:
        """``rank * (stack*p*q + s*t)``: every matrix's outer factors plus the shared inner ones."""
        return self.rank * (self.stack * self.p * self.q + self.s * self.t)

    @property
    def owned_per_matrix(self) -> int:
        return self.rank * self.p * self.q

    @property
    def shared(self) -> int:
        return self.rank * self.s * self.t


def _side_splits(n: int, max_pad: float) -> np.ndarray:
    """Rows ``(outer, inner)`` with ``outer * inner >= n`` and padding ``<= max_pad * n`` (all exact splits included)."""
    inner = np.arange(1, n + 1)
    outer = -(-n // inner)
    keep = outer * inner - n <= max_pad * n
    return np.stack([outer[keep], inner[keep]], axis=1)


def kronecker_plan_for_keep(rows: int, cols: int, keep: float, stack: int = 1, max_pad: float = 0.01,
                            what: str | None = None) -> KroneckerPlan:
    """Factor shapes and number of terms within 5 % of ``keep * stack * rows * cols`` stored numbers.

    Among all splits ``rows <= p*s`` and ``cols <= q*t`` (at most ``max_pad`` zero padding per
    side), each with the rank that best hits the target, it keeps those within 5 % and picks the
    one closest to square-root splits (``p ≈ s ≈ sqrt(rows)``, ``q ≈ t ≈ sqrt(cols)``, the
    original's ``ceil(sqrt(n)) x ceil(sqrt(m))`` factors), then the least padding, then the
    closest count. (Extreme splits such as ``(1 x cols) ⊗ (rows x 1)`` would make every term a
    rank-one matrix, i.e. plain truncated SVD.) The original fixed 50 terms whatever the budget.

    Raises:
        ValueError: ``keep`` not in (0, 1), or no split and rank within 5 % (message names ``keep``).
    """
    what = what or (f"a {rows}x{cols} weight" if stack == 1 else f"{stack} stacked {rows}x{cols} weights")
    entries = stack * rows * cols
    target = keep_target(entries, keep)
    row_splits, col_splits = _side_splits(rows, max_pad), _side_splits(cols, max_pad)
    p, s = (a.reshape(-1, 1) for a in row_splits.T)
    q, t = (a.reshape(1, -1) for a in col_splits.T)
    outer, inner = stack * p * q, s * t
    rank = np.minimum(np.maximum(1, np.rint(target / (outer + inner))), np.minimum(outer, inner))
    stored = rank * (outer + inner)
    miss = np.abs(stored - target) / target
    balance = np.round(np.abs(np.log(p / s)) + np.abs(np.log(q / t)), 9)
    padding = p * s * q * t - rows * cols
    ok = miss <= BUDGET_TOLERANCE
    if not ok.any():
        i, j = np.unravel_index(np.argmin(miss), miss.shape)
        check_kept("kronecker", what, entries, keep, int(stored[i, j]),
                 f"; the closest plan is {int(rank[i, j])} terms of ({p[i, 0]}x{q[0, j]}) ⊗ ({s[i, 0]}x{t[0, j]})")
    cand = np.argwhere(ok)
    keys = np.lexsort((miss[ok], padding[ok], balance[ok]))
    i, j = cand[keys[0]]
    return KroneckerPlan(rows, cols, stack, int(p[i, 0]), int(q[0, j]), int(s[i, 0]), int(t[0, j]), int(rank[i, j]))


def refine_kronecker_sum(weights: list[torch.Tensor], A: torch.Tensor, B: torch.Tensor, steps: int,
                         lr: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Gradient refinement of a stacked Kronecker sum under the autoencoder's row loss (cos + RMSE).

    The closed form is already Frobenius-optimal; refining changes the objective to the one the
    original trained its Kronecker factors with (:func:`~mpstudy.factorize.autoencoder.row_loss`).

    Args:
        weights: the ``stack`` matrices, each ``(rows, cols)``.
        A: ``(rank, stack*p, q)`` outer factors; B: ``(rank, s, t)`` shared inner factors.
        steps: Adam steps on the full stack (full batch).

    Returns:
        ``(A, B, losses)`` (new tensors, no grad) and the loss before each step and after the last.
    """
    rows, cols = weights[0].shape
    L = len(weights)
    p = A.shape[1] // L
    target = torch.cat([w.detach().float() for w in weights])
    A = A.detach().clone().float().requires_grad_(True)
    B = B.detach().clone().float().requires_grad_(True)
    opt = torch.optim.Adam([A, B], lr=lr)
    losses = []

    def loss_fn():
        parts = [kronecker_sum_to_dense(A[:, l * p:(l + 1) * p], B, rows, cols) for l in range(L)]
        return row_loss(torch.cat(parts), target)

    with torch.enable_grad():  # callers such as compress() run under no_grad
        for _ in range(steps):
            loss = loss_fn()
            losses.append(float(loss.detach()))
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        losses.append(float(loss_fn()))
    return A.detach(), B.detach(), losses
