"""Fisher-weighted SVD against its oracles: plain SVD at uniform importances, a weighted-least-squares
fit, the tail of the weighted spectrum; the Fisher estimate against gradients computed by hand."""
import pytest
import torch
from torch import nn

from mpstudy import (
    compress,
    count_parameters,
    load_model,
    load_task,
)
from mpstudy.factorize import (
    normalize_importance,
    row_weighted_error,
    truncated_svd,
    weighted_truncated_svd,
)
from mpstudy.fisher import estimate_fisher
from mpstudy.layers import LowRankLinear
from mpstudy.methods.fwsvd import FisherImportance, fwsvd_linear
from mpstudy.tasks import make_collate


def _problem(m=24, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(m, n, generator=g, dtype=torch.float64)
    imp = torch.rand(m, generator=g, dtype=torch.float64) ** 3 * 10  # strongly uneven rows
    return W, imp


def _wls_oracle(W, imp, rank, iters=500):
    """Alternating weighted least squares for min sum_i imp_i ||W_i - (A B)_i||^2, without any SVD:
    for fixed B each row of A is an ordinary least-squares fit; for fixed A, B is the weighted fit
    solved through the normal equations (A^T D A) B = A^T D W."""
    g = torch.Generator().manual_seed(1)
    B = torch.randn(rank, W.shape[1], generator=g, dtype=W.dtype)
    D = torch.diag(imp)
    for _ in range(iters):
        A = torch.linalg.lstsq(B.T, W.T).solution.T  # rows are independent: weights cancel
        B = torch.linalg.solve(A.T @ D @ A, A.T @ D @ W)
    return A @ B


def test_uniform_importances_give_plain_svd():
    W, _ = _problem()
    A0, B0 = truncated_svd(W, 5)
    A1, B1 = weighted_truncated_svd(W, torch.ones(W.shape[0]), 5)
    assert torch.allclose(A0, A1) and torch.allclose(B0, B1)
    # any constant importance: the same problem (importances are normalized to mean 1)
    A2, B2 = weighted_truncated_svd(W, torch.full((W.shape[0],), 7.5), 5)
    assert torch.allclose(A0, A2) and torch.allclose(B0, B2)


@pytest.mark.parametrize("rank", [1, 3, 8])
def test_fwsvd_minimizes_the_row_weighted_error(rank):
    W, imp = _problem()
    A, B = weighted_truncated_svd(W, imp, rank)
    assert A.shape == (24, rank) and B.shape == (rank, 16)
    ours = row_weighted_error(W, A @ B, imp)
    # the weighted-least-squares oracle reaches the same optimum (and not a better one)
    oracle = row_weighted_error(W, _wls_oracle(W, imp, rank), imp)
    assert ours <= oracle * (1 + 1e-9)
    assert ours == pytest.approx(float(oracle), rel=1e-6)
    # closed form: the tail of the spectrum of D W
    S = torch.linalg.svdvals(imp.sqrt()[:, None] * W)
    assert float(ours) == pytest.approx(float(S[rank:].pow(2).sum().sqrt()), rel=1e-9)
    # plain SVD is worse in the weighted error (strictly, for these uneven weights) ...
    A0, B0 = truncated_svd(W, rank)
    assert row_weighted_error(W, A0 @ B0, imp) > ours * (1 + 1e-6)
    # ... and no random perturbation of the optimum does better
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        dA = 1e-2 * torch.randn(A.shape, generator=g, dtype=A.dtype)
        assert row_weighted_error(W, (A + dA) @ B, imp) >= ours
    # while in the unweighted error plain SVD wins (Eckart-Young)
    assert torch.linalg.norm(W - A0 @ B0) <= torch.linalg.norm(W - A @ B)


def test_full_rank_is_exact_and_zero_rows_are_floored():
    W, imp = _problem(8, 6)
    A, B = weighted_truncated_svd(W, imp, 6)
    assert torch.allclose(A @ B, W)
    imp[2] = 0.0  # a row nobody cares about: still a finite, invertible problem
    A, B = weighted_truncated_svd(W, imp, 2)
    assert torch.isfinite(A).all() and torch.isfinite(B).all()
    assert normalize_importance(imp, 8).min() > 0


@pytest.mark.parametrize("bad, match", [
    (torch.ones(5), "length 8"), (torch.ones(8, 1), "length 8"), (-torch.ones(8), ">= 0"),
    (torch.full((8,), float("nan")), "finite"), (torch.zeros(8), "all zero"),
])
def test_bad_importances_are_refused(bad, match):
    W, _ = _problem(8, 6)
    with pytest.raises(ValueError, match=match):
        weighted_truncated_svd(W, bad, 2)


def test_fwsvd_linear_keeps_the_rank_rule_and_bias():
    dense = nn.Linear(128, 64)
    imp = torch.rand(64)
    layer = fwsvd_linear(dense, imp, rank=42)  # 64 * 128 / 192 = 42.67: 42 still saves
    assert isinstance(layer, LowRankLinear) and layer.rank == 42
    assert torch.equal(layer.second.bias, dense.bias)
    assert layer.num_params() == 42 * (64 + 128) + 64
    with pytest.raises(ValueError, match="saves nothing"):
        fwsvd_linear(dense, imp, rank=43)
    assert fwsvd_linear(dense, imp, keep=0.5).rank == 21


@pytest.fixture(scope="module")
def setup():
    task = load_task("synthetic-cls", max_train=48, max_eval=16)
    model, tok = load_model("tiny-bert", task=task, seed=0)
    return task, model, tok


def test_estimate_fisher_is_the_sum_of_squared_batch_gradients(setup):
    task, model, tok = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    fisher = estimate_fisher(model, tok, task, targets="query,ffn_in", max_examples=None, batch_size=16, max_length=32)
    assert isinstance(fisher, FisherImportance) and len(fisher) == 4  # 2 layers x (query, ffn_in)
    assert fisher.examples == 48 and fisher.batches == 3
    # by hand: three batches of 16 rows in order, eval mode, squared gradient summed over inputs
    name = "bert.encoder.layer.1.intermediate.dense"
    weight = model.get_submodule(name).weight
    collate = make_collate(task, tok, max_length=32)
    model.eval()
    expected = torch.zeros(weight.shape[0], dtype=torch.float64)
    for start in range(0, 48, 16):
        grad, = torch.autograd.grad(model(**collate(task.train[start:start + 16])).loss, weight)
        expected += grad.double().pow(2).sum(1)
    assert torch.allclose(fisher[name].double(), expected, rtol=1e-4)
    # nothing changed: weights, flags, gradients
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert fisher.to_dict()["modules"] == 4


def test_fwsvd_method_compresses(setup):
    """(Its save/load round trip is test_roundtrip_all_methods.py's fwsvd row.)"""
    import copy

    task, model, tok = setup
    fisher = estimate_fisher(model, tok, task, targets="all-linear", max_examples=32, batch_size=8, max_length=32)
    student = copy.deepcopy(model)
    with pytest.raises(ValueError, match="needs fisher"):
        compress(student, "fwsvd", keep=0.5)
    partial = FisherImportance({k: v for k, v in list(fisher.items())[:2]}, 32, 4, 8)
    with pytest.raises(ValueError, match="no importances"):
        compress(student, "fwsvd", keep=0.5, fisher=partial)
    assert count_parameters(student) == count_parameters(model)  # refused before anything changed
    report = compress(student, "fwsvd", keep=0.5, fisher=fisher)
    assert report.to_dict()["budget"]["fisher"].to_dict()["modules"] == 12
    svd_student = copy.deepcopy(model)
    svd_report = compress(svd_student, "svd", keep=0.5)
    assert report.params_after == svd_report.params_after  # the same layers, other factors
    # per matrix: FWSVD has the smaller weighted error, plain SVD the smaller plain error
    for rec, svd_rec in zip(report.modules, svd_report.modules):
        W = model.get_submodule(rec["name"]).weight
        ours = student.get_submodule(rec["name"]).to_dense()
        theirs = svd_student.get_submodule(rec["name"]).to_dense()
        imp = fisher[rec["name"]]
        assert row_weighted_error(W, ours, imp) <= row_weighted_error(W, theirs, imp) * (1 + 1e-6)
        assert svd_rec["rel_error"] <= rec["rel_error"] + 1e-6
