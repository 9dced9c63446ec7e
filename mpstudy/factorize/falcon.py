"""FALCON-style generalized elementwise products (LoBERT), fitted in closed form slice by slice.

LoBERT reuses the *generalized elementwise product* of FALCON (Jang et al., 2019): a stack of
weight matrices is written as the broadcast product of a small "scale" tensor and a shared
"basis" tensor. Every LoBERT variant is, read the right way, a **rank-1 fit per slice**:

* ``"rows"`` layout (``self_falconlayer``, ``self_falconvertical``): a stack ``X`` ``(T, R, C)``
  (``T`` matrices ``R x C``: Q/K/V of one layer, or one type across layers) becomes, for each row
  ``r``, the ``T x C`` matrix ``M_r = X[:, r, :]``; LoBERT stores ``X[t, r, c] = d[t, r] * P[r, c]``,
  i.e. ``M_r ≈ d[:, r] P[r]`` (one shared ``P``, rows rescaled per matrix: ``W_t = diag(d_t) P``).
* ``"matrix"`` layout (``self_falcon_4d``, per layer): the ``T`` matrices of one layer become one
  ``T x (R C)`` matrix ``[vec W_1; ...; vec W_T]``; LoBERT stores ``W_t = a[t] * B`` (Q, K and V
  are scalar multiples of one matrix).

The best such fit in Frobenius norm is the leading singular triplet of each slice matrix
(Eckart–Young), so no iterative fit is needed; keeping ``k`` triplets per slice ("rank-k
FALCON", a sum of ``k`` products) gives a budget knob LoBERT lacks, and ``k = min(T, C)``
(rows) or ``k = T`` (matrix) is exact. LoBERT itself fitted the factors by SGD from a standard
normal initialisation; :func:`falcon_sgd_fit` reproduces that fit, for the ablation only (with
a mean-reduced MSE over millions of entries it barely moves, see the methods digest, 2.6).
Pure tensor math: no ``nn.Module``.
"""
from __future__ import annotations

import math

import torch
from .budget import BUDGET_TOLERANCE, check_keep

__all__ = ["LAYOUTS", "falcon_slices", "falcon_fit", "falcon_to_stack", "falcon_num_params", "falcon_max_k", "falcon_k_for_keep",
           "falcon_sgd_fit"]

LAYOUTS = ("rows", "matrix")


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")


def falcon_slices(X: torch.Tensor, layout: str) -> torch.Tensor:
    """The slice matrices of a stack ``X`` ``(T, R, C)``: ``(R, T, C)`` for ``"rows"``, ``(1, T, R C)`` for ``"matrix"``."""
    _check_layout(layout)
    if X.dim() != 3:
        raise ValueError(f"a FALCON stack is (matrices, rows, cols), got shape {tuple(X.shape)}")
    T, R, C = X.shape
    return X.permute(1, 0, 2) if layout == "rows" else X.reshape(1, T, R * C)


def falcon_max_k(shape: tuple[int, int, int], layout: str) -> int:
    """The ``k`` at which the fit is exact: the slice matrices' full rank, ``min(T, C)`` or ``min(T, R C)``."""
    _check_layout(layout)
    T, R, C = shape
    return min(T, C) if layout == "rows" else min(T, R * C)


def falcon_fit(X: torch.Tensor, k: int = 1, layout: str = "rows") -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form rank-``k`` FALCON fit of a stack of matrices.

    Args:
        X: ``(T, R, C)``, ``T`` stacked matrices of shape ``R x C`` (``nn.Linear`` weights, out x in).
        k: products kept per slice, ``1 <= k <=`` :func:`falcon_max_k` (``k = 1`` is LoBERT's structure).
        layout: ``"rows"`` (one slice per row ``r``) or ``"matrix"`` (one slice for the whole stack).

    Returns:
        ``(scale, basis)``. ``"rows"``: ``scale`` ``(T, R, k)``, ``basis`` ``(R, k, C)``, with
        ``X[t, r, :] ≈ sum_j scale[t, r, j] basis[r, j, :]``. ``"matrix"``: ``scale`` ``(T, k)``,
        ``basis`` ``(k, R, C)``, with ``X[t] ≈ sum_j scale[t, j] basis[j]``. Each slice is its best
        rank-``k`` approximation (Eckart–Young); the singular values are split evenly between the
        two factors (``sqrt(sigma)`` each) so both train at the same scale. Computed in float64,
        returned in ``X``'s dtype and device.
    """
    _check_layout(layout)
    if X.dim() != 3:
        raise ValueError(f"a FALCON stack is (matrices, rows, cols), got shape {tuple(X.shape)}")
    kmax = falcon_max_k(tuple(X.shape), layout)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= kmax:
        raise ValueError(f"k (products per slice) must be an integer in [1, {kmax}] for a {layout!r} FALCON fit "
                         f"of a stack shaped {tuple(X.shape)}, got {k!r}")
    T, R, C = X.shape
    M = falcon_slices(X.detach().double(), layout)  # (S, T, N)
    U, s, Vh = torch.linalg.svd(M, full_matrices=False)
    root = s[:, :k].sqrt()
    left = U[:, :, :k] * root[:, None, :]  # (S, T, k)
    right = root[:, :, None] * Vh[:, :k, :]  # (S, k, N)
    if layout == "rows":
        scale, basis = left.permute(1, 0, 2), right  # (T, R, k), (R, k, C)
    else:
        scale, basis = left[0], right[0].reshape(k, R, C)  # (T, k), (k, R, C)
    return scale.contiguous().to(X.dtype), basis.contiguous().to(X.dtype)


def falcon_to_stack(scale: torch.Tensor, basis: torch.Tensor, layout: str = "rows") -> torch.Tensor:
    """The stack ``(T, R, C)`` a fit stands for (the inverse of :func:`falcon_fit`'s factorization)."""
    _check_layout(layout)
    if layout == "rows":
        return torch.einsum("trk,rkc->trc", scale, basis)
    return torch.einsum("tk,krc->trc", scale, basis)


def falcon_num_params(shape: tuple[int, int, int], k: int, layout: str = "rows") -> int:
    """Numbers stored by a rank-``k`` fit of a ``(T, R, C)`` stack: ``k (T R + R C)`` (rows) or ``k (T + R C)`` (matrix)."""
    _check_layout(layout)
    T, R, C = shape
    return k * (T * R + R * C) if layout == "rows" else k * (T + R * C)


def falcon_sgd_fit(X: torch.Tensor, k: int = 1, layout: str = "rows", steps: int = 10_000, lr: float = 0.01,
                   milestones: tuple[int, ...] = (4000, 7000), gamma: float = 0.1, seed: int = 0,
                   log_every: int = 1000) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, float]]]:
    """LoBERT's own fit, for the ablation: both factors ``N(0, 1)``, plain SGD on the mean-reduced MSE.

    The original (``utils/decompose.py``) draws ``dw`` and ``pw`` with ``torch.randn``, runs
    ``SGD(lr=0.01)`` for 10,000 steps on ``MSELoss()(pw * dw, W)`` and divides the learning rate
    by 10 at steps 4,000 and 7,000; these are the defaults. Same shapes and layouts as
    :func:`falcon_fit`; runs on ``X``'s device, in float32.

    Returns:
        ``(scale, basis, losses)``: the factors after ``steps`` steps and ``(step, mse)`` every
        ``log_every`` steps (step 0 = the random initialisation).
    """
    _check_layout(layout)
    if X.dim() != 3:
        raise ValueError(f"a FALCON stack is (matrices, rows, cols), got shape {tuple(X.shape)}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    T, R, C = X.shape
    kmax = falcon_max_k(tuple(X.shape), layout)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= kmax:
        raise ValueError(f"k must be an integer in [1, {kmax}], got {k!r}")
    target = X.detach().float()
    g = torch.Generator(device="cpu").manual_seed(seed)
    shapes = ((T, R, k), (R, k, C)) if layout == "rows" else ((T, k), (k, R, C))
    scale, basis = (torch.randn(*s, generator=g).to(target.device).requires_grad_(True) for s in shapes)
    opt = torch.optim.SGD([scale, basis], lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=gamma)
    losses: list[tuple[int, float]] = []
    with torch.enable_grad():
        for step in range(steps + 1):
            loss = torch.nn.functional.mse_loss(falcon_to_stack(scale, basis, layout), target)
            if step % log_every == 0 or step == steps:
                losses.append((step, float(loss.detach())))
            if step == steps:
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    if not all(math.isfinite(v) for _, v in losses):
        raise FloatingPointError(f"the SGD fit diverged (losses {losses[-3:]}); lower lr (got {lr})")
    return scale.detach().to(X.dtype), basis.detach().to(X.dtype), losses


def falcon_k_for_keep(shape: tuple[int, int, int], keep: float, layout: str = "rows") -> int:
    """The ``k`` whose fit of a ``(T, R, C)`` stack keeps the fraction ``keep`` of its weights (within 5 %).

    Each product adds ``falcon_num_params(shape, 1, layout)`` numbers, so ``k`` is the nearest
    multiple; a fraction no ``k`` reaches within 5 % is refused with the nearest achievable one.
    """

    _check_layout(layout)
    keep = check_keep(keep)
    dense = math.prod(shape)
    per_k = falcon_num_params(shape, 1, layout)
    kmax = falcon_max_k(shape, layout)
    k = min(max(1, round(keep * dense / per_k)), kmax)
    if abs(k * per_k - keep * dense) / (keep * dense) > BUDGET_TOLERANCE:
        raise ValueError(f"no FALCON k keeps {keep:g} of a {layout!r} stack shaped {tuple(shape)} within "
                         f"{BUDGET_TOLERANCE:.0%}: each product keeps {per_k / dense:.3f}, k={k} keeps {k * per_k / dense:.3f}")
    return k
