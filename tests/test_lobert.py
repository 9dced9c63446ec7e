"""LoBERT's nine modes end to end on tiny-bert: counts, exactness at full rank, own biases,
shared factors counted once, decoding cached in eval, clear errors.

Save/load of every mode is in test_roundtrip_all_methods.py; the layers' own checks (forward,
counts, state dict, save/load with the group reconnected) in test_layers_common.py."""
from __future__ import annotations

import copy

import pytest
import torch

from mpstudy import compress, count_parameters, load_compressed, load_model, save_compressed
from mpstudy.layers import FalconLayer, LowRankLinear, TuckerStackLayer
from mpstudy.layers.stacked import set_decode_cache
from mpstudy.studies.lobert import (
    LOBERT_MODES,
    beta_from_lobert,
    copy_uncompressed,
    lobert_compress,
    lobert_objective,
    mode_budget,
    mode_plan,
)
from mpstudy.studies.offline import compression_info

# tiny-bert: hidden 64, FFN 128, 2 layers (4 heads)
L, H, F = 2, 64, 128


@pytest.fixture(scope="module")
def tiny():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model("tiny-bert", task="synthetic-cls")
    torch.set_num_threads(previous)


def _batch(tokenizer):
    return tokenizer(["a quiet film", "the best and worst of times"], padding=True, return_tensors="pt")


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


FULL = {  # budgets at which each mode is exact (and stores more than the dense weights)
    "self_svd": {"ranks": H, "allow_no_saving": True},
    "ffn_svd": {"ranks": H, "allow_no_saving": True},
    "self_tuckerlayer": {"ranks": [3, H, H]},
    "self_tuckervertical": {"ranks": [L, H, H]},
    "self_tucker_4d": {"ranks": [3, L, H, H]},
    "ffn_tuckervertical": {"ranks": {"ffn_in": [L, F, H], "ffn_out": [L, H, F]}},
    "self_falconlayer": {"k": 3},
    "self_falconvertical": {"k": L},
    "self_falcon_4d": {"k": 3},
}


@pytest.mark.parametrize("mode", list(LOBERT_MODES))
def test_default_budget_counts_match_the_plan_and_the_model(tiny, mode):
    model, tokenizer = tiny
    student = copy.deepcopy(model)
    before = count_parameters(student)["stored"]
    report = lobert_compress(student, mode)
    plan = mode_plan(mode, L, H, F)
    biases = sum(m["params_before"] - m["shape"][0] * m["shape"][1] for m in report.modules)
    assert report.params_before - biases == plan["dense"]
    assert report.params_after - biases == plan["stored"]  # shared tensors once, own biases kept
    assert count_parameters(student)["stored"] == before - report.params_before + report.params_after
    expected_roles = {"query", "key", "value"} if mode.startswith("self") else {"ffn_in", "ffn_out"}
    assert {m["role"] for m in report.modules} == expected_roles and len(report.modules) == L * len(expected_roles)
    logits = _logits(student, _batch(tokenizer))
    assert torch.isfinite(logits).all()
    assert not torch.allclose(logits, _logits(model, _batch(tokenizer)), rtol=0, atol=1e-7)  # the replacement runs


@pytest.mark.parametrize("mode", list(LOBERT_MODES))
def test_exact_at_full_rank(tiny, mode):
    model, tokenizer = tiny
    student = copy.deepcopy(model)
    budget = dict(FULL[mode])
    report = lobert_compress(student, mode, **budget)
    assert max(m["rel_error"] for m in report.modules) < 1e-5
    assert torch.allclose(_logits(student, _batch(tokenizer)), _logits(model, _batch(tokenizer)), atol=1e-5)


@pytest.mark.parametrize("mode", ["self_svd", "self_tuckerlayer", "self_falconlayer", "self_falcon_4d"])
def test_every_key_keeps_its_own_bias(tiny, mode):
    """LoBERT's self_svd copied the value's bias into the key; here each matrix keeps its own."""
    model, _ = tiny
    model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # BERT initialises biases to zero: make them differ, or the test could not fail
        for p in model.bert.encoder.parameters():
            if p.dim() == 1:
                p.normal_(generator=g)
    student = copy.deepcopy(model)
    lobert_compress(student, mode)
    for dense, new in zip(model.bert.encoder.layer, student.bert.encoder.layer):
        for role in ("query", "key", "value"):
            layer = getattr(new.attention.self, role)
            bias = layer.second.bias if isinstance(layer, LowRankLinear) else layer.bias
            assert torch.equal(bias, getattr(dense.attention.self, role).bias)


def test_structures_share_what_lobert_shares(tiny):
    model, _ = tiny
    layer_mode = copy.deepcopy(model)
    lobert_compress(layer_mode, "self_tuckerlayer")
    att = [l.attention.self for l in layer_mode.bert.encoder.layer]
    assert att[0].query.shared_module is att[0].value.shared_module is not att[1].query.shared_module
    assert [att[0].query.position, att[0].key.position, att[0].value.position] == [[0], [1], [2]]
    four = copy.deepcopy(model)
    lobert_compress(four, "self_tucker_4d")
    att = [l.attention.self for l in four.bert.encoder.layer]
    assert att[0].query.shared_module is att[1].value.shared_module
    assert att[1].key.position == [1, 1] and att[0].value.stack_shape == [3, L]
    vertical = copy.deepcopy(model)
    lobert_compress(vertical, "self_falconvertical")
    att = [l.attention.self for l in vertical.bert.encoder.layer]
    assert att[0].key.shared_module is att[1].key.shared_module is not att[0].query.shared_module
    # k = 1, rows layout: W_l = diag(d_l) P with one P per type
    P = att[0].key.shared_module.basis[:, 0, :]
    assert torch.allclose(att[1].key.to_dense(), att[1].key.scale[:, 0:1] * P)
    f4d = copy.deepcopy(model)
    lobert_compress(f4d, "self_falcon_4d")
    q, k = f4d.bert.encoder.layer[0].attention.self.query, f4d.bert.encoder.layer[0].attention.self.key
    ratio = k.to_dense() / q.to_dense()  # Q and K of a layer are scalar multiples of one matrix
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), rtol=1e-4)


def test_decoding_cached_in_eval_and_optional(tiny):
    model, tokenizer = tiny
    student = copy.deepcopy(model)
    lobert_compress(student, "self_tuckervertical")
    key = student.bert.encoder.layer[1].attention.self.key
    batch = _batch(tokenizer)
    first = _logits(student, batch)
    cached = key._cache
    assert cached is not None
    _logits(student, batch)
    assert key._cache is cached
    set_decode_cache(student, False)  # LoBERT's behaviour: rebuild on every forward
    calls = []
    original = key.decode
    key.decode = lambda: calls.append(1) or original()
    assert torch.equal(_logits(student, batch), first)
    _logits(student, batch)
    assert len(calls) == 2
    set_decode_cache(student, True)


def test_training_reaches_own_and_shared_factors(tiny):
    model, tokenizer = tiny
    for mode, own, shared in [("self_falconlayer", "scale", "basis"), ("self_tucker_4d", None, "core")]:
        student = copy.deepcopy(model).train()
        lobert_compress(student, mode)
        student(**_batch(tokenizer), labels=torch.tensor([0, 1])).loss.backward()
        key1 = student.bert.encoder.layer[1].attention.self.key
        assert getattr(key1.shared_module, shared).grad is not None
        if own:
            assert getattr(key1, own).grad is not None
        assert key1.bias.grad is not None


def test_lobert_sgd_fit_is_an_ablation_that_starts_far_off(tiny):
    model, _ = tiny
    closed, sgd = copy.deepcopy(model), copy.deepcopy(model)
    err_closed = lobert_compress(closed, "self_falconlayer").modules
    report = lobert_compress(sgd, "self_falconlayer", fit="sgd", sgd_steps=20)
    assert min(m["rel_error"] for m in report.modules) > 10 * max(m["rel_error"] for m in err_closed)
    info = compression_info(sgd)[0]
    assert info["fit"] == "sgd" and info["sgd_losses"][0][0] == 0


def test_bad_requests_are_clear_and_leave_the_model(tiny):
    model, _ = tiny
    student = copy.deepcopy(model)
    state = {k: v.clone() for k, v in student.state_dict().items()}
    cases = [
        (lambda: compress(student, "lobert-self_tuckerlayer"), r"replaces \['query', 'key', 'value'\] .* got role\(s\) \['attention_output', 'ffn_in', 'ffn_out'\]"),
        (lambda: lobert_compress(student, "self_tuckerlayer", ranks=[4, 8, 8]), r"ranks must be 3 integers"),
        (lambda: lobert_compress(student, "self_tuckerlayer", keep=0.0001), r"no Tucker ranks keep 0.0001"),
        (lambda: lobert_compress(student, "ffn_tuckervertical", ranks={"ffn_in": [2, 8, 8]}), r"no entry for role 'ffn_out'"),
        (lambda: lobert_compress(student, "self_falconlayer", k=4), r"k \(products per slice\) must be an integer in \[1, 3\]"),
        (lambda: lobert_compress(student, "self_falconlayer", k=0), r"must be an integer in \[1, 3\] .* got 0"),
        (lambda: lobert_compress(student, "self_falconlayer", keep=0.5), r"no FALCON k keeps 0.5 of"),
        (lambda: lobert_compress(student, "self_falconlayer", fit="adam"), r"fit must be 'svd' .* got 'adam'"),
        (lambda: lobert_compress(student, "self_svd", rank=70), r"rank must be an integer in \[1, 64\]"),
        (lambda: lobert_compress(student, "self_svd", k=2), r"k= is FALCON's"),
        (lambda: lobert_compress(student, "self_tucker", keep=0.5), r"unknown LoBERT mode 'self_tucker'"),
        (lambda: lobert_compress(student, "self_svd", keep=0.5, ranks=8), r"at most one of"),
        (lambda: compress(student, "lobert-self_falconlayer", targets="qkv", ranks=[1, 2]), r"does not take \['ranks'\]"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
    assert all(torch.equal(state[k], v) for k, v in student.state_dict().items())
    assert not any(isinstance(m, (TuckerStackLayer, FalconLayer, LowRankLinear)) for m in student.modules())


def test_seed_students_from_one_decomposition(tiny):
    """A student compressed from seed 0's model takes seed 1's fresh head: equal to compressing seed 1's model."""
    model, tokenizer = tiny
    other, _ = load_model("tiny-bert", task="synthetic-cls", seed=1)
    a = copy.deepcopy(model)
    lobert_compress(a, "self_tuckerlayer", n_iter=0)
    copied = copy_uncompressed(a, other)
    assert "classifier.weight" in copied and not any("self.query.shared" in n for n in copied)
    b = copy.deepcopy(other)
    lobert_compress(b, "self_tuckerlayer", n_iter=0)
    # the encoders of the two tiny models differ (random init), so compare the head only, plus a same-encoder case
    assert torch.equal(a.classifier.weight, other.classifier.weight)
    same = copy.deepcopy(model)
    lobert_compress(same, "self_falconlayer")
    donor = copy.deepcopy(model)
    with torch.no_grad():
        donor.classifier.weight.mul_(2)
    copy_uncompressed(same, donor)
    assert torch.equal(same.classifier.weight, donor.classifier.weight)


def test_objective_and_budget_helpers(tiny):
    from mpstudy.distill import TeacherOutputs

    model, tokenizer = tiny
    assert beta_from_lobert(100, 768) == pytest.approx(100 / 768)
    with pytest.raises(ValueError, match="need beta >= 0"):
        beta_from_lobert(-1, 768)
    assert mode_budget("self_svd", ranks=8) == {"rank": 8}
    assert mode_budget("self_tuckerlayer") == {}
    with pytest.raises(ValueError, match="is FALCON: its budget is k="):
        mode_budget("self_falconlayer", ranks=[1])
    with pytest.raises(ValueError, match=r"k \(products per slice\) must be an integer in \[1, 3\] .* got 0"):
        mode_plan("self_falconlayer", 2, 64, 128, k=0)
    with pytest.raises(ValueError, match=r"rank must be an integer in \[1, 64\] for a 64x64 weight, got 0"):
        mode_plan("self_svd", 2, 64, 128, ranks=0)
    student = copy.deepcopy(model).train()
    lobert_compress(student, "self_falconlayer")
    batch = _batch(tokenizer)
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    teacher = TeacherOutputs(out.logits.float(), torch.stack([h[:, 0] for h in out.hidden_states]).float())
    objective = lobert_objective(teacher, alpha=0.5, temperature=20.0, beta=0.5)
    loss, logs = objective(student, {**batch, "labels": torch.tensor([0, 1])}, [0, 1])
    loss.backward()
    assert set(logs) == {"ce", "kd", "pkd", "loss"} and torch.isfinite(loss)
    assert logs["loss"] == pytest.approx(0.5 * logs["ce"] + 0.5 * logs["kd"] + 0.5 * logs["pkd"], rel=1e-5)


def test_encoder_decoder_stacks_and_single_matrix_layers(tmp_path):
    """T5: no biases, two attentions per decoder block; the 4-D stack is a grid of 6 types x 2 layers there."""
    model, tokenizer = load_model("tiny-t5", task="synthetic-seq2seq")
    student = copy.deepcopy(model)
    report = lobert_compress(student, "self_tucker_4d", n_iter=0)
    assert len(report.modules) == 2 * 3 + 2 * 6
    shapes = sorted({tuple(m.stack_shape) for m in student.modules() if isinstance(m, TuckerStackLayer)})
    assert shapes == [(3, 2), (6, 2)]
    save_compressed(student, tmp_path / "t5", tokenizer=tokenizer)
    reloaded = load_compressed(tmp_path / "t5")
    batch = _batch(tokenizer)
    batch["decoder_input_ids"] = torch.tensor([[0, 5, 7], [0, 9, 11]])
    assert torch.equal(_logits(student, batch), _logits(reloaded, batch))
    dense = torch.nn.Linear(12, 8)
    tucker = TuckerStackLayer.from_dense(dense, ranks=[1, 8, 8])  # a stack of one, full rank: exact
    assert torch.allclose(tucker.to_dense(), dense.weight, atol=1e-5) and torch.equal(tucker.bias, dense.bias)
    falcon = FalconLayer.from_dense(dense, k=1)  # one matrix, rows layout: row r = scale[r] * basis[r], exact
    assert torch.allclose(falcon.to_dense(), dense.weight, atol=1e-5)
    with pytest.raises(ValueError, match=r"with ranks= given, put them there"):
        lobert_compress(copy.deepcopy(model), "self_tuckerlayer", ranks=[2, 8, 8], stack_ranks=[2])


def test_bert_base_counts_match_the_digest_table():
    """The methods digest's table (section 2.2), on a random-init BertConfig() built locally: every mode's
    stored count from the shapes, and the 4-D FALCON mode (cheap closed form, the most shared structure) really
    compressed (plan and model agree for every mode on tiny-bert, above; one BERT-base mode keeps this test short)."""
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=64)  # BERT-base encoder sizes; a tiny vocabulary keeps the model quick to build
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (12, 768, 3072)
    table = {  # stored numbers per mode at LoBERT's budget, from the digest's per-block counts
        "self_svd": 36 * 294_912, "ffn_svd": 24 * 306 * 3840, "self_tuckerlayer": 12 * 884_742,
        "self_tuckervertical": 3 * 3_539_040, "self_tucker_4d": 6_193_254, "ffn_tuckervertical": 2 * 14_169_696,
        "self_falconlayer": 12 * 592_128, "self_falconvertical": 3 * 599_040, "self_falcon_4d": 7_077_924,
    }
    for mode, stored in table.items():
        plan = mode_plan(mode, 12, 768, 3072, **({"ranks": 306} if mode == "ffn_svd" else {}))
        assert plan["stored"] == stored, mode
        assert plan["dense"] == (21_233_664 if mode.startswith("self") else 56_623_104)
    torch.manual_seed(0)
    model = BertModel(cfg)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = lobert_compress(model, "self_falcon_4d")
        biases = sum(m["params_before"] - m["shape"][0] * m["shape"][1] for m in report.modules)
        assert report.params_after - biases == table["self_falcon_4d"]
    finally:
        torch.set_num_threads(previous)
