"""Tucker decompositions of *stacks* of weight matrices (LoBERT), through TensorLy.

LoBERT stacks same-shaped weight matrices along one or two extra modes and Tucker-decomposes
the stack, so the matrices share one core and two matrix-mode factors:

============  ========================================  ===========================  ====
stack         tensor                                    LoBERT ranks (BERT-base)     kept
============  ========================================  ===========================  ====
``layer``     per layer ``[Q; K; V]``: ``(3, d, d)``    ``[2, 384, 384]``            50 %
``vertical``  one type over ``L`` layers ``(L, m, n)``  ``[8, 576, 576]`` (Q/K/V);   50 %
                                                        ``[8, 1968, 492]`` (FFN in)
``4d``        all Q/K/V: ``(3, L, d, d)``               ``[2, 8, 576, 576]``         29 %
============  ========================================  ===========================  ====

A Tucker decomposition ``X ≈ G x_1 U_1 ... x_N U_N`` of a tensor ``(I_1, ..., I_N)`` stores the core
``prod(r_k)`` and the factors ``sum_k I_k r_k``. The matrix ``(s_1, ..., s_m)`` of the stack (the
"stack modes" come first, then rows and columns) is

    W = U_rows (G x_1 U_1[s_1] ... x_m U_m[s_m]) U_cols^T,

so every matrix is served from the shared factors without rebuilding the whole tensor.

The decomposition is TensorLy's ``tucker`` (HOOI, HOSVD initialisation; LoBERT's algorithm, with
its defaults ``n_iter_max=100, tol=1e-4``), in float64; ``n_iter=0`` stops at the HOSVD
(:func:`mpstudy.factorize.tucker.hosvd`). Ranks are given directly, or derived from a
kept fraction ``keep`` (:func:`tucker_stack_ranks`). Pure tensor math: no ``nn.Module``.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .budget import BUDGET_TOLERANCE, check_keep
from .tucker import hosvd, tucker_num_params, tucker_to_tensor

__all__ = ["STACKS", "default_stack_ranks", "tucker_stack", "tucker_stack_ranks", "tucker_stack_num_params",
           "stack_matrix", "check_ranks", "tucker_to_tensor"]

#: how LoBERT stacks matrices — per layer (Q/K/V), per type across layers, all Q/K/V across layers
STACKS = ("layer", "vertical", "4d")


def check_ranks(shape: tuple[int, ...], ranks: list[int] | tuple[int, ...], useful: bool = True) -> list[int]:
    """``ranks`` as a list of ints, or a ValueError naming them and the allowed range per mode.

    With ``useful``, a rank above the product of the other ranks is refused too: the mode-``k``
    unfolding of the core has at most that rank, so the extra columns store numbers that add nothing.
    """
    ranks = list(ranks) if isinstance(ranks, (list, tuple)) else ranks
    if (not isinstance(ranks, list) or len(ranks) != len(shape)
            or any(not isinstance(r, (int, np.integer)) or isinstance(r, bool) or not 1 <= r <= n
                   for r, n in zip(ranks, shape))):
        raise ValueError(f"ranks must be {len(shape)} integers, each in [1, I_k], for a tensor shaped "
                         f"{tuple(shape)}, got {ranks!r}")
    ranks = [int(r) for r in ranks]
    if not useful:
        return ranks
    total = math.prod(ranks)
    wasted = [k for k, r in enumerate(ranks) if r * r > total]  # r_k > prod of the other ranks
    if wasted:
        raise ValueError(f"ranks {ranks} for a tensor shaped {tuple(shape)}: rank of mode(s) {wasted} exceeds the "
                         "product of the other ranks, which stores numbers that can add nothing; lower it")
    return ranks


def tucker_stack_num_params(shape: tuple[int, ...], ranks: list[int] | tuple[int, ...]) -> int:
    """Stored numbers of a Tucker decomposition: ``prod(r_k) + sum_k I_k r_k``."""
    return tucker_num_params(tuple(shape), tuple(ranks))


def tucker_stack(X: torch.Tensor, ranks: list[int] | tuple[int, ...], n_iter: int = 100,
                 tol: float = 1e-4) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Tucker decomposition of a stack of matrices.

    Args:
        X: ``(I_1, ..., I_N)``: the stack modes, then the rows and columns of the matrices.
        ranks: ``(r_1, ..., r_N)``, ``1 <= r_k <= I_k``.
        n_iter: HOOI sweeps at most (TensorLy's ``n_iter_max``); 0 returns the truncated HOSVD.
        tol: TensorLy's stopping tolerance on the change of the reconstruction error.

    Returns:
        ``(core, factors)``: core ``(r_1, ..., r_N)``, factors ``U_k`` ``(I_k, r_k)`` with
        orthonormal columns, in ``X``'s dtype and device.
    """
    ranks = check_ranks(tuple(X.shape), ranks)
    if not isinstance(n_iter, int) or n_iter < 0:
        raise ValueError(f"n_iter (HOOI sweeps) must be a non-negative integer, got {n_iter!r}")
    if n_iter == 0:
        return hosvd(X, ranks)
    import tensorly as tl
    from tensorly.decomposition import tucker

    with tl.backend_context("pytorch"):
        core, factors = tucker(X.detach().double(), rank=ranks, n_iter_max=n_iter, tol=tol, init="svd")
    return core.to(X.dtype), [U.to(X.dtype) for U in factors]


def stack_matrix(core: torch.Tensor, factors: list[torch.Tensor], position: list[int] | tuple[int, ...]) -> torch.Tensor:
    """The matrix at stack index ``position`` of the Tucker tensor ``(core, factors)``, shape ``(I_rows, I_cols)``.

    Contracts the core's stack modes with the rows ``U_k[position_k]`` first (cheap), then forms
    ``U_rows G U_cols^T``; never builds the whole tensor.
    """
    if len(position) != len(factors) - 2:
        raise ValueError(f"position needs {len(factors) - 2} stack indices, got {list(position)}")
    G = core
    for U, p in zip(factors[:-2], position):
        # a matmul, not tensordot: under bf16 autocast the first contraction returns bf16, and tensordot
        # refuses the mixed dtypes of the next one, while autocast casts both operands of a matmul
        G = (U[p] @ G.reshape(G.shape[0], -1)).reshape(G.shape[1:])
    return factors[-2] @ G @ factors[-1].T


def default_stack_ranks(stack_shape: tuple[int, ...] | list[int]) -> list[int]:
    """LoBERT's ranks of the stack modes as a fraction of their size: two thirds (3 -> 2, 12 -> 8; 6 -> 4)."""
    return [max(1, round(2 * n / 3)) for n in stack_shape]


def tucker_stack_ranks(shape: tuple[int, ...], keep: float, n_stack: int,
                       stack_ranks: list[int] | None = None) -> list[int]:
    """Ranks whose Tucker decomposition of a stack keeps the fraction ``keep`` of its weights (within 5 %).

    The first ``n_stack`` modes are stack modes; their ranks are ``stack_ranks`` (default
    :func:`default_stack_ranks`, LoBERT's two thirds). The two matrix modes get ranks in
    proportion to their sizes (LoBERT's ``[4r, r]`` on a 3072 x 768 FFN weight, ``[r, r]`` on a
    square one), ``r`` chosen so the stored count is the nearest to ``keep * prod(shape)``.
    On BERT-base, ``keep=0.5`` gives LoBERT's own ranks for the ``layer``, ``vertical`` and FFN
    stacks.

    Raises:
        ValueError: ``keep`` not in (0, 1], bad stack ranks, or no ranks within 5 % of the
            target (the message names ``keep`` and the nearest count).
    """
    keep = check_keep(keep)
    shape = tuple(int(n) for n in shape)
    if len(shape) != n_stack + 2:
        raise ValueError(f"a stack with {n_stack} stack mode(s) has {n_stack + 2} modes, got shape {shape}")
    stack_ranks = default_stack_ranks(shape[:n_stack]) if stack_ranks is None else list(stack_ranks)
    check_ranks(shape[:n_stack], stack_ranks, useful=False)
    rows, cols = shape[-2:]
    small, large = min(rows, cols), max(rows, cols)
    r_small = np.arange(1, small + 1)
    fixed = math.prod(stack_ranks)
    # proportional to the mode sizes, and never above the product of the other ranks (that would add nothing)
    r_large = np.minimum(np.minimum(np.rint(r_small * large / small), large), fixed * r_small).astype(np.int64)
    r_rows, r_cols = (r_large, r_small) if rows >= cols else (r_small, r_large)
    stored = fixed * r_rows * r_cols + sum(n * r for n, r in zip(shape, stack_ranks)) + rows * r_rows + cols * r_cols
    target = keep * math.prod(shape)
    i = int(np.argmin(np.abs(stored - target)))
    if abs(stored[i] - target) / target > BUDGET_TOLERANCE:
        raise ValueError(
            f"no Tucker ranks keep {keep:g} of a stack shaped {shape} within {BUDGET_TOLERANCE:.0%} "
            f"(stack ranks {stack_ranks}): the nearest, {[*stack_ranks, int(r_rows[i]), int(r_cols[i])]}, "
            f"keeps {stored[i] / math.prod(shape):.3f}")
    return [*stack_ranks, int(r_rows[i]), int(r_cols[i])]
