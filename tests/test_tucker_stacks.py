"""Tucker decompositions of weight stacks (LoBERT), mpstudy.factorize.stacks.

Oracles: TensorLy's own ``tucker`` and ``tucker_to_tensor``, exactness at full rank, the HOSVD
error bound, and LoBERT's ranks and parameter counts on BERT-base shapes derived by hand.
"""
from __future__ import annotations

import pytest
import torch

from mpstudy.factorize.stacks import (
    check_ranks,
    default_stack_ranks,
    stack_matrix,
    tucker_stack,
    tucker_stack_num_params,
    tucker_stack_ranks,
    tucker_to_tensor,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tensor(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape", [(3, 10, 8), (2, 3, 6, 5)])
@pytest.mark.parametrize("n_iter", [0, 5])
def test_exact_at_full_rank(shape, n_iter):
    X = _tensor(*shape)
    core, factors = tucker_stack(X, list(shape), n_iter=n_iter)
    assert torch.allclose(tucker_to_tensor(core, factors), X, atol=1e-10)


@pytest.mark.parametrize("shape,ranks", [((3, 12, 10), [2, 6, 5]), ((2, 3, 9, 8), [2, 2, 4, 4])])
def test_hooi_matches_tensorly(shape, ranks):
    """Our call is TensorLy's HOOI: the same reconstruction as tensorly.decomposition.tucker, and no worse than HOSVD."""
    import tensorly as tl
    from tensorly.decomposition import tucker

    X = _tensor(*shape, seed=1)
    core, factors = tucker_stack(X, ranks, n_iter=50, tol=1e-10)
    ours = tucker_to_tensor(core, factors)
    with tl.backend_context("pytorch"):
        ref = tl.tucker_to_tensor(tucker(X, rank=ranks, n_iter_max=50, tol=1e-10, init="svd"))
        assert torch.allclose(ours, tl.tucker_to_tensor((core, factors)), atol=1e-12)
    assert torch.allclose(ours, ref, atol=1e-8)
    hosvd_err = torch.linalg.norm(X - tucker_to_tensor(*tucker_stack(X, ranks, n_iter=0)))
    assert torch.linalg.norm(X - ours) <= hosvd_err + 1e-12
    # orthonormal factors
    for U in factors:
        assert torch.allclose(U.T @ U, torch.eye(U.shape[1], dtype=U.dtype), atol=1e-10)


def test_stack_matrix_is_the_slice_of_the_full_tensor():
    X = _tensor(3, 4, 7, 6, seed=2)
    core, factors = tucker_stack(X, [2, 3, 5, 4], n_iter=0)
    full = tucker_to_tensor(core, factors)
    for t in range(3):
        for l in range(4):
            assert torch.allclose(stack_matrix(core, factors, [t, l]), full[t, l], atol=1e-12)
    with pytest.raises(ValueError, match=r"position needs 2 stack indices, got \[1\]"):
        stack_matrix(core, factors, [1])


def test_lobert_ranks_and_counts_on_bert_base_shapes():
    """keep=0.5 (and 7/24 for the 4-D stack) gives LoBERT's own ranks; counts as in the digest's table."""
    d, f = 768, 3072
    assert default_stack_ranks([3, 12]) == [2, 8]
    cases = [((3, d, d), 1, 0.5, [2, 384, 384], 884_742),
             ((12, d, d), 1, 0.5, [8, 576, 576], 3_539_040),
             ((3, 12, d, d), 2, 7 / 24, [2, 8, 576, 576], 6_193_254),
             ((12, f, d), 1, 0.5, [8, 1968, 492], None),
             ((12, d, f), 1, 0.5, [8, 492, 1968], None)]
    for shape, n_stack, ratio, ranks, count in cases:
        assert tucker_stack_ranks(shape, ratio, n_stack) == ranks
        stored = tucker_stack_num_params(shape, ranks)
        by_hand = __import__("math").prod(ranks) + sum(n * r for n, r in zip(shape, ranks))
        assert stored == by_hand
        if count is not None:
            assert stored == count
    # the FFN stack: 8*1968*492 + 12*8 + 3072*1968 + 768*492 of 12*3072*768 = 50.05 %
    assert tucker_stack_num_params((12, f, d), [8, 1968, 492]) == 14_169_696


def test_ranks_never_exceed_the_product_of_the_others():
    # 2 layers of 16x8: stack rank 1, so the 16-row mode can use at most r_cols ranks
    ranks = tucker_stack_ranks((2, 16, 8), 0.9, 1)
    assert ranks[1] <= ranks[0] * ranks[2]
    with pytest.raises(ValueError, match=r"rank of mode\(s\) \[1\] exceeds the product of the other ranks"):
        check_ranks((2, 16, 8), [1, 16, 8])


def test_bad_ranks_and_ratios_are_named():
    X = _tensor(3, 8, 8)
    with pytest.raises(ValueError, match=r"ranks must be 3 integers, each in \[1, I_k\], for a tensor shaped \(3, 8, 8\), got \[4, 8, 8\]"):
        tucker_stack(X, [4, 8, 8])
    with pytest.raises(ValueError, match=r"got \[2, 8\]"):
        tucker_stack(X, [2, 8])
    with pytest.raises(ValueError, match=r"n_iter .* got -1"):
        tucker_stack(X, [2, 4, 4], n_iter=-1)
    with pytest.raises(ValueError, match=r"keep .* must be a number in \(0, 1\], got 1.5"):
        tucker_stack_ranks((3, 8, 8), 1.5, 1)
    with pytest.raises(ValueError, match=r"no Tucker ranks keep 0.001 of a stack shaped \(3, 8, 8\)"):
        tucker_stack_ranks((3, 8, 8), 0.001, 1)
