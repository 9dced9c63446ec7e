"""Truncated SVD and LowRankLinear against their oracles: Eckart–Young, full-rank exactness, counts.

The layer-level checks every layer shares (forward, count, full rank, save/load) are in
test_layers_common.py.
"""
import pytest
import torch
from torch import nn

from mpstudy.factorize import max_saving_rank, rank_for_keep, svd_num_params, truncated_svd
from mpstudy.layers import LowRankLinear

SHAPES = [(8, 8), (12, 5), (5, 12), (64, 256)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("rank_fraction", [0.25, 0.5, 1.0])
def test_error_equals_tail_singular_values(shape, rank_fraction):
    """Eckart–Young: ||W - A B||_F^2 is the sum of the squared discarded singular values."""
    torch.manual_seed(0)
    W = torch.randn(*shape, dtype=torch.float64)
    rank = max(1, int(rank_fraction * min(shape)))
    A, B = truncated_svd(W, rank)
    assert A.shape == (shape[0], rank) and B.shape == (rank, shape[1])
    tail = torch.linalg.svdvals(W)[rank:]
    assert torch.allclose(torch.linalg.norm(W - A @ B), tail.norm(), atol=1e-10)
    # and the spectral norm of the error is the first discarded singular value
    spectral = torch.linalg.matrix_norm(W - A @ B, ord=2)
    assert torch.allclose(spectral, tail[0] if len(tail) else torch.tensor(0.0, dtype=W.dtype), atol=1e-10)



@pytest.mark.parametrize("shape", [(40, 40), (96, 160), (160, 96)])
def test_gram_path_matches_the_full_svd_oracle(shape):
    """The default (Gram) path's factors against LAPACK's full SVD in float64: same product, same
    singular values on each side, for square, wide and tall matrices, and the fallback for a matrix
    of lower rank than asked (the Gram eigenvalues of its null space are rounding noise)."""
    torch.manual_seed(4)
    W = torch.randn(*shape, dtype=torch.float64) @ torch.diag(torch.logspace(0, -3, shape[1], dtype=torch.float64))
    for rank in (1, 17, min(shape)):
        A, B = truncated_svd(W, rank)
        A0, B0 = truncated_svd(W, rank, method="gesdd")
        assert torch.allclose(A @ B, A0 @ B0, atol=1e-12)
        assert torch.allclose(A.norm(dim=0), A0.norm(dim=0), rtol=1e-10)
    low = torch.randn(shape[0], 3, dtype=torch.float64) @ torch.randn(3, shape[1], dtype=torch.float64)
    A, B = truncated_svd(low, 10)
    assert torch.isfinite(A).all() and torch.allclose(A @ B, low, atol=1e-10)
    with pytest.raises(ValueError, match="method must be 'gram' or 'gesdd', got 'qr'"):
        truncated_svd(W, 2, method="qr")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_working_precision_path_matches_the_float64_oracle(dtype):
    """The float32 path (bf16 inputs too) reaches the optimal error to float32 precision, and its
    product matches the float64 oracle's (the default)."""
    torch.manual_seed(3)
    W = torch.randn(96, 160, dtype=torch.float64)
    Wd = W.to(dtype)
    A, B = truncated_svd(Wd, 24, compute_dtype=torch.float32)
    A64, B64 = truncated_svd(Wd, 24)
    assert A.dtype == B.dtype == dtype
    optimal = torch.linalg.svdvals(Wd.double())[24:].norm()
    error = torch.linalg.norm(Wd.double() - A.double() @ B.double())
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2  # bf16 rounding of the returned factors
    assert abs(error - optimal) <= tolerance * torch.linalg.norm(Wd.double())
    assert torch.allclose(A.double() @ B.double(), A64.double() @ B64.double(), atol=tolerance * 10)

def test_no_other_rank_r_matrix_does_better():
    torch.manual_seed(1)
    W = torch.randn(20, 30)
    A, B = truncated_svd(W, 5)
    best = torch.linalg.norm(W - A @ B)
    for _ in range(20):  # random rank-5 competitors, and perturbations of the optimum
        C = torch.randn(20, 5) @ torch.randn(5, 30)
        assert torch.linalg.norm(W - C) >= best
        assert torch.linalg.norm(W - (A + 1e-2 * torch.randn_like(A)) @ B) >= best


def test_factors_are_balanced_and_keep_dtype():
    W = torch.randn(16, 24, dtype=torch.float32)
    A, B = truncated_svd(W, 4)
    assert A.dtype == B.dtype == torch.float32
    assert torch.allclose(A.norm(dim=0), B.norm(dim=1), rtol=1e-4)  # sqrt(S) on each side


@pytest.mark.parametrize("rank", [0, -1, 9, 2.5, True])
def test_bad_rank_is_refused(rank):
    with pytest.raises(ValueError, match="rank must be an integer in \\[1, 8\\]"):
        truncated_svd(torch.randn(8, 10), rank)


def test_rank_arithmetic():
    # r < mn / (m + n): 768x768 -> 383 (384 would store exactly as much); 768x3072 -> 614
    assert max_saving_rank(768, 768) == 383
    assert max_saving_rank(3072, 768) == 614
    assert max_saving_rank(512, 512) == 255
    assert svd_num_params(768, 768, 245) == 245 * 1536
    assert rank_for_keep(384, 1536, 0.5) == int(0.5 * 384 * 1536 / 1920)
    assert rank_for_keep(4, 4, 0.01) == 1  # never below 1
    with pytest.raises(ValueError, match=r"keep .* must be a number in \(0, 1\], got 1.5"):
        rank_for_keep(4, 4, 1.5)


def test_low_rank_linear_holds_the_truncated_svd():
    """The layer's factors are truncated_svd's (its forward, counts, exactness at full rank and
    save/load are checked with every other layer in test_layers_common.py)."""
    dense = nn.Linear(384, 1536)
    layer = LowRankLinear.from_dense(dense, rank=32)
    A, B = truncated_svd(dense.weight, 32)
    assert torch.allclose(layer.to_dense(), A @ B, atol=1e-6)


def test_low_rank_linear_keep_and_refusals():
    dense = nn.Linear(64, 64)
    assert LowRankLinear.from_dense(dense, keep=0.5).rank == 16
    with pytest.raises(ValueError, match="saves nothing"):
        LowRankLinear.from_dense(dense, rank=32)  # 32 * 128 = 64 * 64: no saving
    assert LowRankLinear.from_dense(dense, rank=32, allow_no_saving=True).rank == 32
    with pytest.raises(ValueError, match="exactly one of rank= or keep="):
        LowRankLinear.from_dense(dense)
    with pytest.raises(ValueError, match="exactly one of rank= or keep="):
        LowRankLinear.from_dense(dense, rank=4, keep=0.5)
    with pytest.raises(ValueError, match="got 0"):
        LowRankLinear.from_dense(dense, rank=0)
    with pytest.raises(ValueError, match="got 65"):
        LowRankLinear.from_dense(dense, rank=65, allow_no_saving=True)
    with pytest.raises(TypeError, match="Embedding"):
        LowRankLinear.from_dense(nn.Embedding(10, 4), rank=2)
