"""The offline methods end to end on tiny-bert: CR within 5 % for methods x modules x modes,
clear errors, shared tensors counted once, decoded weights cached in eval, pruning's non-zeros."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from mpstudy import compress, count_parameters, load_model
from mpstudy.factorize.budget import BUDGET_TOLERANCE
from mpstudy.layers import (
    AutoencoderLayer,
    KroneckerLayer,
    MagnitudePrunedLayer,
    RowBasisLowRank,
)
from mpstudy.methods.offline import OFFLINE_METHODS
from mpstudy.studies.offline import (
    achieved_cr,
    compression_info,
    encoder_states,
    reconstruction_quality,
    state_drift,
)

ROLES = ["word_embeddings", "query", "key", "value", "attention_output", "ffn_in", "ffn_out"]
FAST = {"offline-ae": {"epochs": 0}, "offline-tucker": {"block": 16}}  # tiny-bert: 4 heads of 16


@pytest.fixture(scope="module")
def tiny():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is faster on 2 shared cores
    yield load_model("tiny-bert", task="synthetic-cls")
    torch.set_num_threads(previous)


def _batch(tokenizer):
    return tokenizer(["a quiet film", "the best and worst of times"], padding=True, return_tensors="pt")


@pytest.mark.parametrize("mode", ["separated", "concatenated"])
@pytest.mark.parametrize("method", OFFLINE_METHODS)
def test_every_method_hits_the_ratio_on_every_module(tiny, method, mode):
    """Methods x the 7 module types x modes at keep 1/3 (CR 3); the report's and the model's counts agree."""
    model, tokenizer = tiny
    batch = _batch(tokenizer)
    with torch.no_grad():
        dense_logits = model(**batch).logits
    for role in ROLES:
        student = copy.deepcopy(model)
        before = count_parameters(student)
        report = compress(student, method, targets=role, keep=1 / 3, mode=mode, **FAST.get(method, {}))
        cr = achieved_cr(report, student)
        assert abs(cr - 3) / 3 <= BUDGET_TOLERANCE / (1 - BUDGET_TOLERANCE), (role, cr)
        after = count_parameters(student)
        if method == "offline-prune":  # the budget is non-zeros; the dense tensors stay stored
            assert after["stored"] == before["stored"] and report.params_after == report.params_before
            kept = sum(int(torch.count_nonzero(student.get_submodule(m["name"]).to_dense())) for m in report.modules)
            assert cr == sum(math.prod(m["shape"]) for m in report.modules) / kept  # the non-zero weights
            dense = sum(int(torch.count_nonzero(model.get_submodule(m["name"]).weight)) for m in report.modules)
            assert before["nonzero"] - after["nonzero"] == dense - kept
            biases = [getattr(model.get_submodule(m["name"]), "bias", None) for m in report.modules]
            assert report.nonzero_after == kept + sum(int(torch.count_nonzero(b)) for b in biases if b is not None)
        else:  # shared tensors counted once by both the report and count_parameters
            assert after["stored"] == report.model_params_after == before["stored"] - report.params_before + report.params_after
        expected_groups = 1 if (mode == "concatenated" or role == "word_embeddings") else 2
        assert len(compression_info(student)) == expected_groups
        with torch.no_grad():
            logits = student(**batch).logits
        assert torch.isfinite(logits).all()
        # the replacement really runs (the original's SVD attention output was attached to an unused attribute)
        assert not torch.allclose(logits, dense_logits, rtol=0, atol=1e-7), role


def test_concatenated_shares_one_module(tiny):
    model, _ = tiny
    student = copy.deepcopy(model)
    compress(student, "offline-kronecker", targets="key", keep=1 / 3, mode="concatenated")
    keys = [layer.attention.self.key for layer in student.bert.encoder.layer]
    assert all(isinstance(k, KroneckerLayer) for k in keys)
    assert keys[0].shared_module is keys[1].shared_module
    assert "shared.inner" in dict(keys[0].named_parameters()) and "shared.inner" not in dict(keys[1].named_parameters())
    # deepcopy of the model keeps the sharing
    again = copy.deepcopy(student)
    k0, k1 = (layer.attention.self.key for layer in again.bert.encoder.layer)
    assert k0.shared_module is k1.shared_module and k0.shared_module is not keys[0].shared_module


@pytest.mark.parametrize("method,kwargs,match", [
    ("offline-svd", {"keep": 0.04}, r"svd cannot keep 0.04 \(CR 25\) of a 64x64 weight"),
    ("offline-ae", {"keep": 0.04, "epochs": 0}, r"autoencoder cannot keep 0.04 \(CR 25\)"),
    ("offline-kronecker", {"keep": 0.04, "mode": "concatenated"}, r"kronecker cannot keep 0.04 \(CR 25\) of 2 stacked 64x64"),
    ("offline-svd", {"keep": 1}, r"must be a number in \(0, 1\), got 1"),
    ("offline-prune", {"keep": 2}, r"got 2"),
    ("offline-tucker", {}, r"needs keep="),
    ("offline-svd", {"keep": 1 / 3, "mode": "joint"}, r"mode must be one of \['separated', 'concatenated'\], got 'joint'"),
    ("offline-svd", {"keep": 1 / 3, "rank": 4}, r"does not take \['rank'\]"),
    ("offline-svd", {"cr": 3}, r"does not take \['cr'\]; allowed: \['keep', 'mode'\]"),
])
def test_impossible_requests_are_clear_errors_and_leave_the_model(tiny, method, kwargs, match):
    model, _ = tiny
    student = copy.deepcopy(model)
    state = {k: v.clone() for k, v in student.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        compress(student, method, targets="key", **kwargs)
    assert all(torch.equal(state[k], v) for k, v in student.state_dict().items())


def test_decoded_weight_is_cached_in_eval_and_refreshed_after_a_change(tiny):
    model, tokenizer = tiny
    student = copy.deepcopy(model).eval()
    compress(student, "offline-tucker", targets="key", keep=1 / 3, mode="concatenated", block=16)
    key = student.bert.encoder.layer[1].attention.self.key  # a member without the shared module
    batch = _batch(tokenizer)
    with torch.no_grad():
        first = student(**batch).logits
        cached = key._cache
        assert cached is not None
        student(**batch)
        assert key._cache is cached  # reused, not decoded again
        key.shared_module.core.mul_(0.5)  # a shared parameter changes in place
        second = student(**batch).logits
    assert key._cache is not cached and not torch.equal(first, second)
    student.train()
    assert key._cache is None  # training decodes every forward


def test_training_reaches_shared_and_own_factors(tiny):
    model, tokenizer = tiny
    student = copy.deepcopy(model)
    compress(student, "offline-ae", targets="key,word_embeddings", keep=1 / 3, mode="concatenated", epochs=1, batch_size=64)
    student.train()
    student(**_batch(tokenizer), labels=torch.tensor([0, 1])).loss.backward()
    key0, key1 = (layer.attention.self.key for layer in student.bert.encoder.layer)
    emb = student.bert.embeddings.word_embeddings
    assert isinstance(emb, AutoencoderLayer) and isinstance(key1, AutoencoderLayer)
    assert key1.latents.grad is not None and key0.shared_module.net[0].weight.grad is not None
    used = emb.latents.grad.abs().sum(1) > 0
    assert 0 < int(used.sum()) < emb.rows  # only the looked-up rows get gradient (padding row excluded)
    assert not bool(used[emb.padding_idx])


def test_autoencoder_training_lowers_the_loss_and_keeps_the_best_epoch(tiny):
    model, _ = tiny
    student = copy.deepcopy(model)
    compress(student, "offline-ae", targets="key", keep=1 / 3, mode="concatenated", epochs=4, batch_size=16, lr=3e-3)
    info = compression_info(student)[0]
    assert info["losses"][info["best_epoch"]] == min(info["losses"]) == info["loss"]
    assert min(info["losses"][1:]) < info["losses"][0]


def test_pruning_is_global_within_the_group_and_stays_zero(tiny):
    model, tokenizer = tiny
    student = copy.deepcopy(model)
    dense = [layer.intermediate.dense.weight.detach().clone() for layer in student.bert.encoder.layer]
    report = compress(student, "offline-prune", targets="ffn_in", keep=0.25, mode="concatenated")
    layers = [layer.intermediate.dense for layer in student.bert.encoder.layer]
    assert all(isinstance(l, MagnitudePrunedLayer) for l in layers)
    kept = sum(int(torch.count_nonzero(l.to_dense())) for l in layers)
    assert kept == round(2 * 128 * 64 / 4)
    # global: every kept weight is at least as large as every pruned one, across both layers
    threshold = min(float(d[l.to_dense() != 0].abs().min()) for d, l in zip(dense, layers))
    assert all(float(d[l.to_dense() == 0].abs().max()) <= threshold for d, l in zip(dense, layers))
    assert achieved_cr(report, student) == pytest.approx(4, rel=1e-3)
    # a training step leaves pruned weights at zero
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    student.train()
    student(**_batch(tokenizer), labels=torch.tensor([0, 1])).loss.backward()
    opt.step()
    assert sum(int(torch.count_nonzero(l.to_dense())) for l in layers) <= kept


def test_svd_uses_lowrank_linear_alone_and_shared_basis_when_concatenated(tiny):
    model, _ = tiny
    from mpstudy.layers import LowRankLinear

    sep, cat = copy.deepcopy(model), copy.deepcopy(model)
    compress(sep, "offline-svd", targets="key,word_embeddings", keep=0.25)
    compress(cat, "offline-svd", targets="key", keep=0.25, mode="concatenated")
    assert isinstance(sep.bert.encoder.layer[0].attention.self.key, LowRankLinear)
    assert isinstance(sep.bert.embeddings.word_embeddings, RowBasisLowRank)
    k0, k1 = (layer.attention.self.key for layer in cat.bert.encoder.layer)
    # concatenated: the best rank-r approximation of the stacked keys (Eckart-Young on the stack)
    W = torch.cat([layer.attention.self.key.weight for layer in model.bert.encoder.layer]).double().detach()
    s = torch.linalg.svdvals(W)
    err = torch.linalg.norm(W - torch.cat([k0.to_dense(), k1.to_dense()]).double()).detach()
    assert float(err) == pytest.approx(float(s[k0.rank:].norm()), rel=1e-4)


def test_quality_and_drift_helpers(tiny):
    model, tokenizer = tiny
    student = copy.deepcopy(model)
    names = ["bert.encoder.layer.0.attention.self.key", "bert.encoder.layer.1.attention.self.key"]
    dense = {n: model.get_submodule(n).weight.detach().clone() for n in names}
    compress(student, "offline-prune", targets="key", keep=1 / 3)
    quality = reconstruction_quality(dense, student)
    assert [q["name"] for q in quality] == names and all(0 < q["rel_error"] < 1 and 0 < q["row_cosine"] <= 1 for q in quality)
    sentences = ["a quiet film", "the best and worst of times", "it rains"]
    ref = encoder_states(model, tokenizer, sentences, batch_size=2)
    same = state_drift(ref, encoder_states(model, tokenizer, sentences, batch_size=2))
    assert same["hidden_rel_error"] == pytest.approx(0, abs=1e-6) and same["sentence_cosine"] == pytest.approx(1, abs=1e-6)
    compress(student, "offline-prune", targets="all-linear", keep=0.1)
    moved = state_drift(ref, encoder_states(student, tokenizer, sentences, batch_size=2))
    assert moved["hidden_rel_error"] > 0.01 and moved["sentence_cosine"] < 0.9999
