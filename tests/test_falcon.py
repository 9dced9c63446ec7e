"""FALCON (LoBERT's generalized elementwise product), mpstudy.factorize.falcon.

Oracles: exactness at full k, Eckart–Young per slice (the error is the tail of each slice's
singular values), parameter counts derived by hand (the methods digest's table on BERT-base),
and LoBERT's own random-init SGD fit, which the closed form must beat by far.
"""
from __future__ import annotations

import pytest
import torch

from mpstudy.factorize.falcon import (
    falcon_fit,
    falcon_k_for_keep,
    falcon_max_k,
    falcon_num_params,
    falcon_sgd_fit,
    falcon_slices,
    falcon_to_stack,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _stack(T=3, R=12, C=10, seed=0):
    return torch.randn(T, R, C, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("layout", ["rows", "matrix"])
def test_exact_at_full_k_and_shapes(layout):
    X = _stack()
    k = falcon_max_k(tuple(X.shape), layout)
    assert k == (3 if layout == "rows" else 3)
    scale, basis = falcon_fit(X, k, layout)
    assert scale.shape == ((3, 12, k) if layout == "rows" else (3, k))
    assert basis.shape == ((12, k, 10) if layout == "rows" else (k, 12, 10))
    assert torch.allclose(falcon_to_stack(scale, basis, layout), X, atol=1e-10)


@pytest.mark.parametrize("layout", ["rows", "matrix"])
@pytest.mark.parametrize("k", [1, 2])
def test_error_is_the_tail_of_each_slice_spectrum(layout, k):
    """Eckart–Young per slice: the squared error is the sum of the discarded squared singular values."""
    X = _stack(seed=1)
    scale, basis = falcon_fit(X, k, layout)
    err = float((falcon_to_stack(scale, basis, layout) - X).pow(2).sum())
    s = torch.linalg.svdvals(falcon_slices(X, layout))  # (slices, min(T, N))
    assert err == pytest.approx(float(s[:, k:].pow(2).sum()), rel=1e-9)


def test_rank_one_rows_is_lobert_structure():
    """k = 1 in the rows layout: W_t = diag(d_t) P, one P shared by the T matrices."""
    X = _stack(seed=2)
    scale, basis = falcon_fit(X, 1, "rows")
    P = basis[:, 0, :]  # (R, C)
    for t in range(3):
        assert torch.allclose(falcon_to_stack(scale, basis)[t], torch.diag(scale[t, :, 0]) @ P)
    # and the per-row fit is the best rank-1 fit of M_r = X[:, r, :]
    r = 5
    U, S, Vh = torch.linalg.svd(X[:, r, :])
    best = S[0] * torch.outer(U[:, 0], Vh[0])
    assert torch.allclose(scale[:, r, 0][:, None] * P[r][None], best, atol=1e-12)


def test_matrix_layout_makes_scalar_multiples():
    X = _stack(seed=3)
    scale, basis = falcon_fit(X, 1, "matrix")
    W = falcon_to_stack(scale, basis, "matrix")
    ratio = W[1] / W[0]
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio))


def test_parameter_counts_match_lobert_table():
    """The methods digest's table (BERT-base, d = 768, 12 layers), derived by hand."""
    d = 768
    assert falcon_num_params((3, d, d), 1, "rows") == 3 * d + d * d == 592_128  # self_falconlayer, per layer
    assert falcon_num_params((12, d, d), 1, "rows") == 12 * d + d * d == 599_040  # self_falconvertical, per type
    assert 12 * falcon_num_params((3, d, d), 1, "matrix") == 36 + 12 * d * d == 7_077_924  # self_falcon_4d
    assert falcon_num_params((3, d, d), 2, "rows") == 2 * 592_128


def test_k_for_keep_and_bad_input():
    assert falcon_k_for_keep((6, 384, 384), 0.5) == 3  # each product keeps 6*384 + 384^2 of 6*384^2: 0.169
    with pytest.raises(ValueError, match=r"no FALCON k keeps 0.5 .* each product keeps 0.335"):
        falcon_k_for_keep((3, 768, 768), 0.5)
    with pytest.raises(ValueError, match=r"keep .* must be a number in \(0, 1\], got 0"):
        falcon_k_for_keep((3, 8, 8), 0)
    with pytest.raises(ValueError, match=r"k \(products per slice\) must be an integer in \[1, 3\] .* got 4"):
        falcon_fit(_stack(), 4)
    with pytest.raises(ValueError, match=r"layout must be one of \['rows', 'matrix'\], got 'cols'"):
        falcon_fit(_stack(), 1, "cols")
    with pytest.raises(ValueError, match=r"\(matrices, rows, cols\), got shape \(3, 4\)"):
        falcon_fit(torch.zeros(3, 4), 1)


def test_lobert_sgd_fit_barely_moves_and_closed_form_wins():
    """LoBERT's fit (N(0,1) init, SGD lr 0.01 on the mean MSE) on a BERT-scaled stand-in: the loss
    hardly falls, and stays orders of magnitude above the closed form's."""
    X = _stack(3, 64, 64, seed=4).float() * 0.04
    scale, basis, losses = falcon_sgd_fit(X, 1, "rows", steps=300, log_every=100)
    assert [s for s, _ in losses] == [0, 100, 200, 300]
    values = [v for _, v in losses]
    assert all(b <= a for a, b in zip(values, values[1:]))  # it descends...
    assert values[-1] > 0.5 * values[0]  # ...but barely: the product of two N(0,1) factors stays far from X
    closed = float((falcon_to_stack(*falcon_fit(X, 1, "rows")) - X).pow(2).mean())
    assert closed < values[-1] / 100
    assert float((falcon_to_stack(scale, basis) - X).pow(2).mean()) == pytest.approx(values[-1], rel=1e-5)
    again = falcon_sgd_fit(X, 1, "rows", steps=300, log_every=100)[2]
    assert again == losses  # seeded
