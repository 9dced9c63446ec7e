"""The math of the offline methods (mpstudy.factorize.{autoencoder,kronecker,tucker,budget}).

Oracles: parameter counts derived by hand, exactness at full rank, the Van Loan–Pitsianis
closed form checked against torch.kron and a brute-force search on tiny matrices, TensorLy's
HOSVD, the HOSVD error bound, and budget arithmetic on MiniLM's shapes at the paper's CRs (keep = 1 / CR;
every method within 5 %).
"""
from __future__ import annotations


import pytest
import torch

from mpstudy.factorize.autoencoder import ae_num_params, ae_sizes_for_keep, rescale_rows, row_loss
from mpstudy.factorize.budget import BUDGET_TOLERANCE, check_kept, keep_target
from mpstudy.factorize.kronecker import (
    kron_rearrange,
    kron_unrearrange,
    kronecker_plan_for_keep,
    kronecker_sum_to_dense,
    nearest_kronecker_sum,
    refine_kronecker_sum,
)
from mpstudy.factorize.tucker import hosvd, mode_spectra, tucker_decompose, tucker_num_params, tucker_plan_for_keep, tucker_to_tensor
from mpstudy.layers.lowrank_rows import svd_rank_for_keep


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- budgets


def test_keep_target_and_errors():
    assert keep_target(1000, 0.25) == 250
    for bad in (1, 0, 1.5, -3, float("nan"), float("inf"), "0.3", True, None):
        with pytest.raises(ValueError, match=r"must be a number in \(0, 1\)"):
            keep_target(1000, bad)
    check_kept("m", "w", 1000, 0.25, 262)  # 4.8 % off: accepted
    with pytest.raises(ValueError, match=r"cannot keep 0.25 \(CR 4\) of w within 5%.*keeps 0\.265"):
        check_kept("m", "w", 1000, 0.25, 265)


# ----------------------------------------------------------------------------- autoencoder


def test_ae_sizes_hand_derived():
    # 6 stacked MiniLM keys (2304 x 384) at keep 0.1 (CR 10): target 88,473.6 numbers. x solves
    # 10 x^2 + (2304 + 6 + 4*384) x + 2304 + 384 = 88,473.6 -> x = 21.14 -> latent 21, h1 42;
    # fixed = 2304*21 latents + 2304 norms + 21*42 + 42 + 384 (first layer, last bias) = 51,996;
    # h2 = round((88,473.6 - 51,996) / (42 + 1 + 384)) = round(85.4) = 85;
    # stored = 51,996 + 85 * 427 = 88,291 (CR 10.02).
    s = ae_sizes_for_keep(2304, 384, 0.1)
    assert (s.latent, s.h1, s.h2, s.enc1, s.enc2) == (21, 42, 85, 168, 84)
    assert s.stored == 88_291 == 2304 * 21 + 2304 + (21 * 42 + 42) + (42 * 85 + 85) + (85 * 384 + 384)
    assert s.decoder_params == (21 * 42 + 42) + (42 * 85 + 85) + (85 * 384 + 384)
    # the methods digest's examples: word embeddings 30522 x 384 at CR 10 -> latent 35
    assert ae_sizes_for_keep(30522, 384, 0.1).latent == 35
    assert ae_num_params(3, 2, 1, 2, 1) == 3 + 3 + (2 + 2) + (2 + 1) + (2 + 2)


def test_ae_impossible_ratio_names_it():
    with pytest.raises(ValueError, match=r"autoencoder cannot keep 0.04 \(CR 25\) of a 64x64 weight.*smallest autoencoder"):
        ae_sizes_for_keep(64, 64, 0.04)


def test_row_loss_and_rescale():
    W = torch.randn(5, 7)
    assert float(row_loss(W, W)) == pytest.approx(0, abs=1e-6)
    directions = torch.randn(5, 7)
    out = rescale_rows(directions, W.norm(dim=1))
    assert torch.allclose(out.norm(dim=1), W.norm(dim=1), atol=1e-5)
    assert torch.allclose(torch.nn.functional.cosine_similarity(out, directions, dim=1), torch.ones(5), atol=1e-6)
    # opposite rows: cos term 2 per row, RMSE of 2W
    expected = (10 / 11) * 2 + (1 / 11) * float(torch.sqrt(torch.mean((2 * W) ** 2)))
    assert float(row_loss(-W, W)) == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- Kronecker


def test_kronecker_sum_matches_torch_kron_and_rearrangement_round_trips():
    A, B = torch.randn(3, 2, 5), torch.randn(3, 4, 3)
    expected = sum(torch.kron(A[k], B[k]) for k in range(3))
    assert torch.allclose(kronecker_sum_to_dense(A, B), expected, atol=1e-5)
    assert torch.equal(kronecker_sum_to_dense(A, B, 7, 14), expected[:7, :14])
    W = torch.randn(8, 15)
    R = kron_rearrange(W, 2, 5)
    assert R.shape == (10, 12)
    assert torch.equal(kron_unrearrange(R, 2, 5, 4, 3), W)
    # one Kronecker product is one rank-one rearranged matrix: R = vec(A) vec(B)^T
    assert torch.allclose(kron_rearrange(torch.kron(A[0], B[0]), 2, 5), A[0].reshape(-1, 1) @ B[0].reshape(1, -1), atol=1e-6)


def test_nearest_kronecker_sum_exact_at_full_rank_and_tail_error():
    W = torch.randn(6, 6, dtype=torch.float64)
    A, B = nearest_kronecker_sum(W, 4, 2, 2, 3, 3)  # min(p*q, s*t) = 4 terms reproduce W
    assert torch.allclose(kronecker_sum_to_dense(A, B), W, atol=1e-10)
    s = torch.linalg.svdvals(kron_rearrange(W, 2, 2))
    for r in (1, 2, 3):
        A, B = nearest_kronecker_sum(W, r, 2, 2, 3, 3)
        assert float(torch.linalg.norm(W - kronecker_sum_to_dense(A, B))) == pytest.approx(float(s[r:].norm()), rel=1e-9)


def test_nearest_kronecker_product_beats_brute_force():
    """Closed form vs a brute-force search over (A, B) on a 4x4 matrix: nothing found does better."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(4, 4, generator=g, dtype=torch.float64)
    A, B = nearest_kronecker_sum(W, 1, 2, 2, 2, 2)
    best = float(torch.linalg.norm(W - torch.kron(A[0], B[0])))
    # random B, then the optimal A for that B (least squares, closed form), many times
    R = kron_rearrange(W, 2, 2)
    for _ in range(2000):
        b = torch.randn(4, generator=g, dtype=torch.float64)
        a = R @ b / (b @ b)
        err = float(torch.linalg.norm(W - torch.kron(a.reshape(2, 2), b.reshape(2, 2))))
        assert err >= best - 1e-12
    # and it is tight: a tiny perturbation of the optimum never improves it
    for _ in range(200):
        a = A[0] + 1e-3 * torch.randn(2, 2, generator=g, dtype=torch.float64)
        assert float(torch.linalg.norm(W - torch.kron(a, B[0]))) >= best - 1e-12


def test_padded_kronecker_crops_back():
    W = torch.randn(7, 5, dtype=torch.float64)  # padded to 8 x 6 = (2*4) x (2*3)
    A, B = nearest_kronecker_sum(W, 4, 2, 2, 4, 3)  # full rank of the 4 x 12 rearrangement: exact
    assert torch.allclose(kronecker_sum_to_dense(A, B, 7, 5), W, atol=1e-10)


def test_kronecker_refinement_lowers_the_row_loss():
    W = [torch.randn(16, 16), torch.randn(16, 16)]
    stacked = torch.cat(W)
    A, B = nearest_kronecker_sum(stacked, 3, 8, 4, 4, 4)
    A2, B2, losses = refine_kronecker_sum(W, A, B, steps=10, lr=1e-2)
    assert losses[-1] < losses[0]
    assert A2.shape == A.shape and B2.shape == B.shape


def test_kronecker_plan_counts():
    p = kronecker_plan_for_keep(384, 384, 0.1)
    assert (p.p * p.s, p.q * p.t) == (384, 384) and {p.p, p.s} == {16, 24}  # square-root splits of 384
    assert p.stored == p.rank * (p.p * p.q + p.s * p.t)
    c = kronecker_plan_for_keep(384, 384, 0.1, stack=6)
    assert c.stored == c.rank * (6 * c.p * c.q + c.s * c.t)
    w = kronecker_plan_for_keep(30522, 384, 0.1)
    assert w.p * w.s >= 30522 and w.p * w.s - 30522 <= 0.01 * 30522


# ----------------------------------------------------------------------------- Tucker


def test_hosvd_matches_tensorly_and_is_exact_at_full_rank():
    import tensorly as tl
    from tensorly.decomposition import tucker

    g = torch.Generator().manual_seed(0)
    X = torch.randn(6, 5, 8, generator=g, dtype=torch.float64)
    core, factors = hosvd(X, (6, 5, 8))
    assert torch.allclose(tucker_to_tensor(core, factors), X, atol=1e-10)
    ranks = [3, 2, 4]
    core, factors = hosvd(X, ranks)
    with tl.backend_context("pytorch"):
        tl_core, tl_factors = tucker(X, rank=ranks, n_iter_max=0, init="svd")  # TensorLy's HOSVD initialisation
        tl_rec = tl.tucker_to_tensor((tl_core, tl_factors))
    assert torch.allclose(tucker_to_tensor(core, factors), tl_rec, atol=1e-8)
    # HOSVD error bound: ||X - X_hat||^2 <= sum of the discarded mode spectra
    spectra = mode_spectra(X)
    bound = sum(float(s[r:].sum()) for s, r in zip(spectra, ranks))
    assert float(torch.linalg.norm(X - tucker_to_tensor(core, factors)) ** 2) <= bound + 1e-9
    # HOOI sweeps do not make it worse
    core2, factors2 = tucker_decompose(X, ranks, n_iter=2)
    assert torch.linalg.norm(X - tucker_to_tensor(core2, factors2)) <= torch.linalg.norm(X - tucker_to_tensor(core, factors)) + 1e-9


def test_hosvd_rejects_ranks_beyond_mode_sizes():
    with pytest.raises(ValueError, match=r"ranks must give one value in \[1, I_k\]"):
        hosvd(torch.randn(4, 64, 8), (4, 200, 8))  # the original's rank 200 on a 64-sized mode


def test_tucker_plan_counts_and_clamping():
    assert tucker_num_params((72, 32, 384), (10, 20, 30)) == 10 * 20 * 30 + 72 * 10 + 32 * 20 + 384 * 30
    plan = tucker_plan_for_keep(384, 384, 0.1, block=32, stack=6)
    assert plan.shape == (72, 32, 384)
    assert all(1 <= r <= n for r, n in zip(plan.ranks, plan.shape))
    assert plan.stored == plan.shared + 6 * plan.owned_per_matrix
    emb = tucker_plan_for_keep(30522, 384, 0.1, block=384)
    assert emb.shape == (80, 384, 384)  # 30522 rows zero-padded to 80 blocks of 384
    with pytest.raises(ValueError, match="block .* must be an integer"):
        tucker_plan_for_keep(384, 384, 0.1, block=0)


# ----------------------------------------------------------------------------- the CR table (MiniLM shapes)

MINILM = {"word_embeddings": (30522, 384, 1), "key": (384, 384, 6), "ffn_out": (384, 1536, 6)}


def _stored(method: str, rows: int, cols: int, stack: int, cr: float) -> int:
    keep = 1 / cr
    if method == "ae":
        return ae_sizes_for_keep(stack * rows, cols, keep).stored
    if method == "kronecker":
        return kronecker_plan_for_keep(rows, cols, keep, stack=stack).stored
    if method == "tucker":
        return tucker_plan_for_keep(rows, cols, keep, block=cols if rows == 30522 else 32, stack=stack).stored
    if method == "svd":
        return svd_rank_for_keep(rows, cols, keep, stack=stack) * (stack * rows + cols)
    if method == "prune":
        return round(stack * rows * cols / cr)
    raise AssertionError(method)


@pytest.mark.parametrize("cr", [3, 10, 25])
@pytest.mark.parametrize("module", list(MINILM))
@pytest.mark.parametrize("mode", ["separated", "concatenated"])
@pytest.mark.parametrize("method", ["ae", "kronecker", "tucker", "svd", "prune"])
def test_every_method_hits_the_ratio_on_minilm_shapes(method, module, mode, cr):
    rows, cols, layers = MINILM[module]
    if mode == "separated":
        stored, entries = _stored(method, rows, cols, 1, cr), rows * cols
    else:
        stored, entries = _stored(method, rows, cols, layers, cr), layers * rows * cols
    assert abs(entries / stored - cr) / cr <= BUDGET_TOLERANCE / (1 - BUDGET_TOLERANCE)
    assert abs(stored - entries / cr) <= BUDGET_TOLERANCE * entries / cr


def test_svd_rank_rounds_instead_of_flooring():
    # 384 x 384 at keep 0.04 (CR 25): 147,456 / 25 = 5,898.24 numbers, 768 per rank -> 7.68: floor 7 stores
    # 5,376 (CR 27.4, 9.7 % off: refused by the 5 % rule), rounding to 8 stores 6,144 (CR 24.0)
    assert svd_rank_for_keep(384, 384, 0.04) == 8
    assert 384 * 384 / (7 * 768) == pytest.approx(27.43, abs=0.01)
    with pytest.raises(ValueError, match=r"svd cannot keep 0.04 \(CR 25\) of a 64x64 weight.*rank 1 is the nearest"):
        svd_rank_for_keep(64, 64, 0.04)  # 163.8 numbers: rank 1 stores 128 (CR 32), rank 2 256 (CR 16)
