"""Property-based tests (hypothesis) of the factorizations over random shapes and ranks.

Each property is an oracle that holds for every input, not a recorded number: Eckart–Young for
SVD (the error is exactly the discarded singular values), exactness at full rank, parameter
counts from the shapes alone, orthonormal factors, the TT-SVD and HOSVD error bounds, the Van
Loan–Pitsianis closed form, and integer factorizations whose products are exact. Small shapes
and 25 examples per property keep the file at a few seconds.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpstudy.factorize import factorize_dim, mpo_decompose, mpo_num_params, padded_factorization, truncated_svd
from mpstudy.factorize.kronecker import kron_rearrange, kronecker_sum_to_dense, nearest_kronecker_sum
from mpstudy.factorize.svd import max_saving_rank, rank_for_keep, svd_num_params
from mpstudy.factorize.tucker import hosvd, mode_eigh, tucker_num_params, tucker_to_tensor
from mpstudy.layers import LowRankLinear
from mpstudy.layers.mpo import MPOLinear

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


def _matrix(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@st.composite
def matrices_and_ranks(draw):
    m, n = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    return _matrix(draw(st.integers(0, 2**16)), m, n), draw(st.integers(1, min(m, n)))


# ----------------------------------------------------------------------------- SVD


@SETTINGS
@given(matrices_and_ranks())
def test_svd_is_eckart_young(case):
    W, r = case
    A, B = truncated_svd(W, r)
    assert A.shape == (W.shape[0], r) and B.shape == (r, W.shape[1])
    S = torch.linalg.svdvals(W)
    error = torch.linalg.norm(W - A @ B)
    assert math.isclose(float(error), float(S[r:].norm()), rel_tol=1e-9, abs_tol=1e-9)
    # the singular values are split evenly between the factors
    assert torch.allclose(torch.linalg.norm(A, dim=0), torch.linalg.norm(B, dim=1), atol=1e-9)


@SETTINGS
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**16))
def test_svd_full_rank_is_exact(m, n, seed):
    W = _matrix(seed, m, n)
    A, B = truncated_svd(W, min(m, n))
    assert torch.allclose(A @ B, W, atol=1e-10)


@SETTINGS
@given(st.integers(1, 40), st.integers(1, 40), st.floats(0.01, 1.0))
def test_svd_keep_rank_and_counts(m, n, keep):
    r = rank_for_keep(m, n, keep)
    assert r >= 1 and (r == 1 or svd_num_params(m, n, r) <= keep * m * n)
    assert svd_num_params(m, n, max_saving_rank(m, n)) < m * n <= svd_num_params(m, n, max_saving_rank(m, n) + 1)


@SETTINGS
@given(st.integers(2, 10), st.integers(2, 10), st.booleans(), st.integers(0, 2**16))
def test_lowrank_layer_counts_its_parameters(m, n, bias, seed):
    torch.manual_seed(seed)
    rank = max(1, max_saving_rank(m, n))
    layer = LowRankLinear.from_dense(torch.nn.Linear(n, m, bias=bias), rank=rank, allow_no_saving=True)
    assert layer.num_params() == sum(p.numel() for p in layer.parameters()) == rank * (m + n) + (m if bias else 0)


# ----------------------------------------------------------------------------- MPO


@st.composite
def mpo_cases(draw):
    cores = draw(st.integers(1, 4))
    rows = draw(st.lists(st.integers(1, 4), min_size=cores, max_size=cores))
    cols = draw(st.lists(st.integers(1, 4), min_size=cores, max_size=cores))
    W = _matrix(draw(st.integers(0, 2**16)), math.prod(rows), math.prod(cols))
    cap = draw(st.integers(1, 8))
    return W, rows, cols, cap


@SETTINGS
@given(mpo_cases())
def test_mpo_full_bonds_are_exact_and_counted(case):
    W, rows, cols, _ = case
    mpo = mpo_decompose(W, rows, cols)
    assert torch.allclose(mpo.to_dense(), W, atol=1e-9)
    assert mpo.num_params == mpo_num_params(rows, cols) == sum(c.numel() for c in mpo.cores)
    for k, core in enumerate(mpo.cores):
        assert core.shape == (mpo.bond_dims[k], rows[k], cols[k], mpo.bond_dims[k + 1])


@SETTINGS
@given(mpo_cases())
def test_mpo_truncation_obeys_the_tt_svd_bound(case):
    W, rows, cols, cap = case
    full = mpo_decompose(W, rows, cols)
    cut = full.truncate(cap)
    assert max(cut.bond_dims) <= max(cap, 1)
    assert cut.num_params == mpo_num_params(rows, cols, cap)
    error = float(torch.linalg.norm(W - cut.to_dense()))
    assert error <= cut.error_bound() * (1 + 1e-9) + 1e-9
    # cutting straight from W gives the same cores as slicing the full decomposition
    direct = mpo_decompose(W, rows, cols, max_bond=cap)
    assert torch.allclose(direct.to_dense(), cut.to_dense(), atol=1e-9)


@SETTINGS
@given(mpo_cases())
def test_mpo_single_bond_cut_matches_eckart_young(case):
    """Cutting one bond is the best approximation of that unfolding's rank (exactly the tail)."""
    W, rows, cols, cap = case
    if len(rows) < 2:
        return
    full = mpo_decompose(W, rows, cols)
    bond = 1 + cap % (len(rows) - 1)  # one internal bond
    caps = [max(d, 1) for d in full.bond_dims[1:-1]]
    caps[bond - 1] = cap
    cut = full.truncate(caps)
    assert math.isclose(float(torch.linalg.norm(W - cut.to_dense())), full.bond_cut_error(bond, cap), rel_tol=1e-7, abs_tol=1e-9)


@SETTINGS
@given(st.integers(2, 24), st.integers(2, 24), st.integers(1, 6), st.integers(0, 2**16))
def test_mpo_layer_counts_its_parameters(out_f, in_f, cap, seed):
    torch.manual_seed(seed)
    layer = MPOLinear.from_dense(torch.nn.Linear(in_f, out_f), max_bond=cap, num_cores=3)
    cores = sum(c.numel() for c in layer.cores)
    assert cores == mpo_num_params(layer.row_dims, layer.col_dims, cap)
    assert layer.num_params() == sum(p.numel() for p in layer.parameters()) == cores + out_f


# ----------------------------------------------------------------------------- Tucker


@st.composite
def tensors_and_ranks(draw):
    shape = [draw(st.integers(1, 7)) for _ in range(3)]
    ranks = [draw(st.integers(1, s)) for s in shape]
    return _matrix(draw(st.integers(0, 2**16)), *shape), ranks


@SETTINGS
@given(tensors_and_ranks())
def test_hosvd_shapes_orthonormality_and_bound(case):
    X, ranks = case
    core, factors = hosvd(X, ranks)
    assert list(core.shape) == ranks
    for U, n, r in zip(factors, X.shape, ranks):
        assert U.shape == (n, r)
        assert torch.allclose(U.T @ U, torch.eye(r, dtype=U.dtype), atol=1e-9)
    assert tucker_num_params(tuple(X.shape), tuple(ranks)) == core.numel() + sum(U.numel() for U in factors)
    discarded = sum(float(vals[r:].sum()) for (vals, _), r in zip(mode_eigh(X), ranks))
    error2 = float(torch.linalg.norm(X - tucker_to_tensor(core, factors)) ** 2)
    assert error2 <= discarded * (1 + 1e-9) + 1e-9  # De Lathauwer et al.'s HOSVD bound


@SETTINGS
@given(tensors_and_ranks())
def test_hosvd_full_ranks_are_exact(case):
    X, _ = case
    core, factors = hosvd(X, list(X.shape))  # ranks beyond an unfolding's rank complete the basis
    assert torch.allclose(tucker_to_tensor(core, factors), X, atol=1e-9)


@SETTINGS
@given(tensors_and_ranks())
def test_mode_spectra_are_the_unfoldings_singular_values(case):
    X, _ = case
    for mode, (vals, vecs) in enumerate(mode_eigh(X)):
        M = torch.movedim(X, mode, 0).reshape(X.shape[mode], -1)
        S = torch.linalg.svdvals(M)
        assert vals.shape == (X.shape[mode],)
        assert torch.allclose(vals[: S.numel()], S**2, atol=1e-9) and bool((vals[S.numel():] == 0).all())
        assert vecs.shape == (X.shape[mode], min(M.shape))


# ----------------------------------------------------------------------------- Kronecker


@st.composite
def kronecker_cases(draw):
    p, q, s, t = (draw(st.integers(1, 4)) for _ in range(4))
    W = _matrix(draw(st.integers(0, 2**16)), p * s, q * t)
    return W, p, q, s, t, draw(st.integers(1, min(p * q, s * t)))


@SETTINGS
@given(kronecker_cases())
def test_nearest_kronecker_sum_is_the_rearranged_svd(case):
    W, p, q, s, t, rank = case
    A, B = nearest_kronecker_sum(W, rank, p, q, s, t)
    assert A.shape == (rank, p, q) and B.shape == (rank, s, t)
    approx = kronecker_sum_to_dense(A, B)
    assert torch.allclose(approx, sum(torch.kron(A[k], B[k]) for k in range(rank)), atol=1e-10)
    tail = torch.linalg.svdvals(kron_rearrange(W, p, q))[rank:].norm()
    assert math.isclose(float(torch.linalg.norm(W - approx)), float(tail), rel_tol=1e-9, abs_tol=1e-9)
    if rank == min(p * q, s * t):
        assert torch.allclose(approx, W, atol=1e-9)


# ----------------------------------------------------------------------------- integer factorizations


@SETTINGS
@given(st.integers(1, 5000), st.integers(1, 5))
def test_factorize_dim_is_exact_or_refuses(n, k):
    try:
        factors = factorize_dim(n, k)
    except ValueError as err:
        assert str(n) in str(err)
        return
    assert len(factors) == k and math.prod(factors) == n
    assert factors == sorted(factors) and max(factors) <= 16


@SETTINGS
@given(st.integers(1, 40000), st.integers(3, 5))
def test_padded_factorization_covers_n(n, k):
    try:
        padded, factors = padded_factorization(n, k)
    except ValueError:
        assert n > 16**k // 2  # only sizes near the limit of k factors <= 16 can fail
        return
    assert padded >= n and math.prod(factors) == padded and len(factors) == k
    assert max(factors) <= 2 * min(factors)


def test_strategies_reject_bad_inputs():
    """The property tests' inputs stay in range: the functions themselves refuse what is outside."""
    with pytest.raises(ValueError):
        truncated_svd(torch.ones(3, 3), 4)
    with pytest.raises(ValueError):
        hosvd(torch.ones(2, 2, 2), [3, 1, 1])
