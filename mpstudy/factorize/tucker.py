"""Tucker decompositions of 3-way tensors: HOSVD, optional HOOI sweeps (TensorLy), ranks from a budget.

A tensor ``X`` of shape ``(I1, I2, I3)`` is approximated by a core ``G`` ``(r1, r2, r3)`` and
factor matrices ``U_k`` ``(I_k, r_k)`` with orthonormal columns:

    X ≈ G x_1 U_1 x_2 U_2 x_3 U_3,   X̂[a, b, c] = sum_{ijk} G[i, j, k] U_1[a, i] U_2[b, j] U_3[c, k].

HOSVD takes ``U_k`` = the leading left singular vectors of the mode-``k`` unfolding and
``G = X x_k U_k^T``; its error obeys ``||X - X̂||_F^2 <= sum_k sum_{i > r_k} sigma_{k,i}^2``
(the discarded mode spectra, De Lathauwer et al., 2000), which is what the rank search below
minimises. HOOI sweeps (``tensorly.decomposition.tucker``) then improve it; on CPU they are slow
for large tensors (a 12x3x768x768 tucker takes tens of seconds per sweep), so the default is HOSVD
only, computed here from the Gram matrix of each unfolding (an ``I_k x I_k`` eigenproblem).

For weight matrices (Banaei et al., 2023), the rows are cut into blocks of ``block`` rows ("heads"):
a ``(n, m)`` weight becomes ``(ceil(n / block), block, m)`` (zero-padded rows), and the
"concatenated" mode stacks the blocks of every layer along the first mode. Pure tensor math.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .budget import BUDGET_TOLERANCE, check_kept, keep_target

__all__ = [
    "hosvd",
    "mode_eigh",
    "mode_spectra",
    "tucker_decompose",
    "tucker_to_tensor",
    "tucker_num_params",
    "TuckerPlan",
    "tucker_plan_for_keep",
]


def _unfold(X: torch.Tensor, mode: int) -> torch.Tensor:
    return torch.movedim(X, mode, 0).reshape(X.shape[mode], -1)


def mode_eigh(X: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per mode, the eigen-decomposition of the unfolding's Gram matrix ``M M^T`` (float64),
    descending: ``(squared singular values (I_k,), left singular vectors (I_k, c_k))`` with
    ``c_k = min(I_k, P_k)``, ``P_k`` the product of the other modes (the unfolding's rank bound:
    the other ``I_k - c_k`` eigenvalues are zero; :func:`hosvd` completes the basis if asked for more).
    """
    out = []
    for mode in range(X.dim()):
        M = _unfold(X.detach().double(), mode)
        if M.shape[0] > M.shape[1]:
            # A tall unfolding (the 3072 columns of a 768 x 3072 FFN output cut into 64-row heads:
            # 3072 x 768): the thin SVD costs I_k P_k^2, where eigh of the I_k x I_k Gram matrix costs
            # I_k^3 (19 s against 0.6 s on one CPU thread, bench/perf.py).
            U, S, _ = torch.linalg.svd(M, full_matrices=False)
            out.append((torch.cat([S**2, S.new_zeros(M.shape[0] - S.shape[0])]), U))
            continue
        vals, vecs = torch.linalg.eigh(M @ M.T)
        out.append((vals.flip(0).clamp_min(0), vecs.flip(1)))
    return out


def _leading_vectors(vecs: torch.Tensor, r: int) -> torch.Tensor:
    """The first ``r`` columns of an orthonormal basis starting with ``vecs`` (completed by QR if short)."""
    if r > vecs.shape[1]:  # directions of zero singular value: any orthonormal completion is exact
        Q, _ = torch.linalg.qr(vecs, mode="complete")
        vecs = torch.cat([vecs, Q[:, vecs.shape[1]:]], dim=1)
    return vecs[:, :r].contiguous()


def mode_spectra(X: torch.Tensor) -> list[torch.Tensor]:
    """Squared singular values of each mode unfolding of ``X``, descending (float64)."""
    return [vals for vals, _ in mode_eigh(X)]


def hosvd(X: torch.Tensor, ranks: tuple[int, ...] | list[int],
          eig: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Truncated higher-order SVD.

    Args:
        X: tensor of shape ``(I_1, ..., I_N)``.
        ranks: ``(r_1, ..., r_N)``, ``1 <= r_k <= I_k``.
        eig: :func:`mode_eigh` of ``X`` if already computed.

    Returns:
        ``(core, factors)``: core ``(r_1, ..., r_N)`` and factors ``U_k`` ``(I_k, r_k)``
        (orthonormal columns), computed in float64 and returned in ``X``'s dtype.
    """
    ranks = list(ranks)
    if len(ranks) != X.dim() or any(not 1 <= r <= n for r, n in zip(ranks, X.shape)):
        raise ValueError(f"ranks must give one value in [1, I_k] per mode of a tensor shaped {tuple(X.shape)}, got {ranks}")
    Xd = X.detach().double()
    eig = eig if eig is not None else mode_eigh(Xd)
    factors = [_leading_vectors(vecs, r) for (_, vecs), r in zip(eig, ranks)]
    core = Xd
    for mode, U in enumerate(factors):
        core = torch.movedim(torch.tensordot(core, U, dims=([mode], [0])), -1, mode)
    return core.to(X.dtype), [U.to(X.dtype) for U in factors]


def tucker_to_tensor(core: torch.Tensor, factors: list[torch.Tensor]) -> torch.Tensor:
    """``core x_1 U_1 ... x_N U_N``, shape ``(I_1, ..., I_N)``."""
    X = core
    for mode, U in enumerate(factors):
        X = torch.movedim(torch.tensordot(X, U, dims=([mode], [1])), -1, mode)
    return X


def tucker_decompose(X: torch.Tensor, ranks: list[int], n_iter: int = 0,
                     eig: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """HOSVD of ``X`` followed by ``n_iter`` HOOI sweeps of ``tensorly.decomposition.tucker``.

    ``n_iter=0`` returns the HOSVD. Ranks must not exceed the mode sizes (TensorLy does not
    check this for every SVD back end; the original's ranks 200 on a 64-sized mode were invalid).
    """
    core, factors = hosvd(X, ranks, eig=eig)
    if n_iter > 0:
        import tensorly as tl
        from tensorly.decomposition import tucker
        from tensorly.tucker_tensor import TuckerTensor

        with tl.backend_context("pytorch"):
            core, factors = tucker(X.detach().double(), rank=list(ranks), n_iter_max=n_iter, tol=0,
                                   init=TuckerTensor((core.double(), [U.double() for U in factors])))
        core, factors = core.to(X.dtype), [U.to(X.dtype) for U in factors]
    return core, factors


def tucker_num_params(shape: tuple[int, ...], ranks: tuple[int, ...]) -> int:
    """Core entries plus factor entries: ``prod(r_k) + sum_k I_k r_k``."""
    return math.prod(ranks) + sum(n * r for n, r in zip(shape, ranks))


@dataclass(frozen=True)
class TuckerPlan:
    """Tucker structure of ``stack`` matrices ``(rows, cols)`` cut into blocks of ``block`` rows.

    The tensor is ``(stack * blocks, block, cols)`` with ``blocks = ceil(rows / block)``; every
    matrix owns its ``blocks`` rows of the first factor, and the core and the other two factors
    are shared.
    """

    rows: int
    cols: int
    stack: int
    block: int
    ranks: tuple[int, int, int]

    @property
    def blocks(self) -> int:
        return math.ceil(self.rows / self.block)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.stack * self.blocks, self.block, self.cols)

    @property
    def stored(self) -> int:
        return tucker_num_params(self.shape, self.ranks)

    @property
    def shared(self) -> int:
        r1, r2, r3 = self.ranks
        return r1 * r2 * r3 + self.block * r2 + self.cols * r3

    @property
    def owned_per_matrix(self) -> int:
        return self.blocks * self.ranks[0]


def _tails(spectrum: np.ndarray) -> np.ndarray:
    """``tails[r] = sum_{i >= r} spectrum[i]`` for r = 0..len."""
    return np.concatenate([np.cumsum(spectrum[::-1])[::-1], [0.0]])


def tucker_plan_for_keep(rows: int, cols: int, keep: float, block: int, stack: int = 1,
                         spectra: list[torch.Tensor] | None = None, what: str | None = None) -> TuckerPlan:
    """Ranks within 5 % of ``keep * stack * rows * cols`` stored numbers, minimising the HOSVD error bound.

    Every ``(r2, r3)`` is tried with the ``r1`` that best hits the budget; ranks are clamped to the
    mode sizes and to the product of the other two (a larger rank adds nothing). Among the
    combinations within 5 %, the one with the smallest discarded mode energy
    ``sum_k sum_{i > r_k} sigma_{k,i}^2`` (from ``spectra``, the output of :func:`mode_spectra` on
    the tensor) wins; without spectra every singular value counts the same (relative truncation
    of each mode).

    Raises:
        ValueError: ``keep`` not in (0, 1), a bad ``block``, or no ranks within 5 % (names ``keep``).
    """
    if not isinstance(block, int) or not 1 <= block <= rows:
        raise ValueError(f"block (rows per head slice) must be an integer in [1, {rows}], got {block!r}")
    what = what or (f"a {rows}x{cols} weight" if stack == 1 else f"{stack} stacked {rows}x{cols} weights")
    entries = stack * rows * cols
    target = keep_target(entries, keep)
    shape = TuckerPlan(rows, cols, stack, block, (1, 1, 1)).shape
    S, d, m = shape
    if spectra is None:
        spectra = [torch.ones(n, dtype=torch.float64) / n for n in shape]
    tails = [_tails(np.asarray(s.double().cpu().numpy(), dtype=np.float64)) for s in spectra]
    tails = [np.pad(t, (0, max(0, n + 1 - len(t)))) for t, n in zip(tails, shape)]  # ranks beyond the data rank lose nothing
    r2, r3 = np.meshgrid(np.arange(1, d + 1), np.arange(1, m + 1), indexing="ij")
    r2, r3 = r2.ravel(), r3.ravel()
    r1 = np.clip(np.rint((target - d * r2 - m * r3) / (S + r2 * r3)), 1, S).astype(np.int64)
    r1 = np.minimum(r1, r2 * r3)
    valid = (r2 <= r1 * r3) & (r3 <= r1 * r2)
    stored = r1 * r2 * r3 + S * r1 + d * r2 + m * r3
    miss = np.abs(stored - target) / target
    bound = tails[0][r1] + tails[1][r2] + tails[2][r3]
    ok = valid & (miss <= BUDGET_TOLERANCE)
    if not ok.any():
        i = int(np.argmin(np.where(valid, miss, np.inf)))
        check_kept("tucker", what, entries, keep, int(stored[i]),
                 f"; the closest ranks are ({r1[i]}, {r2[i]}, {r3[i]}) of a {S}x{d}x{m} tensor")
    idx = np.flatnonzero(ok)
    i = int(idx[np.lexsort((miss[idx], bound[idx]))[0]])
    return TuckerPlan(rows, cols, stack, block, (int(r1[i]), int(r2[i]), int(r3[i])))
