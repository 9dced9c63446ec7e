"""compress(): reports, accounting, all-or-nothing replacement; save/load reproduces logits bit for bit."""
import json

import pytest
import torch

from mpstudy import compress, count_parameters, load_compressed, load_model, save_compressed
from mpstudy.layers import LowRankLinear
from mpstudy.surgery import MANIFEST


@pytest.fixture
def tiny_bert():
    return load_model("tiny-bert", task="synthetic-cls")


def _batch(tokenizer):
    return tokenizer(["a quiet film", "the best and worst of times"], padding=True, return_tensors="pt")


def test_report_accounting(tiny_bert):
    model, _ = tiny_bert
    before = count_parameters(model)["stored"]
    report = compress(model, "svd", targets="all-linear", keep=0.5)
    # tiny-bert: hidden 64, FFN 128, 2 layers. Square 64x64: r = floor(0.5*64*64/128) = 16;
    # 128x64 and 64x128: r = floor(0.5*128*64/192) = 21.
    square, rect = 16 * 128 + 64, 21 * 192  # factor weights + bias (ffn_in bias 128, ffn_out bias 64)
    per_layer_after = 4 * square + (rect + 128) + (rect + 64)
    per_layer_before = 4 * (64 * 64 + 64) + (128 * 64 + 128) + (64 * 128 + 64)
    assert report.params_before == 2 * per_layer_before
    assert report.params_after == 2 * per_layer_after
    assert report.model_params_before == before
    assert report.model_params_after == before - report.params_before + report.params_after
    assert report.model_params_after == count_parameters(model)["stored"]
    assert len(report.modules) == 12
    ranks = {m["role"]: m["rank"] for m in report.modules}
    assert ranks == {"query": 16, "key": 16, "value": 16, "attention_output": 16, "ffn_in": 21, "ffn_out": 21}
    assert all(0 < m["rel_error"] < 1 for m in report.modules)
    json.dumps(report.to_dict())  # the report is JSON-serialisable as it is


def test_rel_error_matches_tail_singular_values(tiny_bert):
    model, _ = tiny_bert
    W = model.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    report = compress(model, "svd", targets="query", rank=8)
    s = torch.linalg.svdvals(W.double())
    expected = float(s[8:].norm() / s.norm())
    assert report.modules[0]["rel_error"] == pytest.approx(expected, rel=1e-4)


def test_ratio_is_a_deprecated_alias_of_keep(tiny_bert, monkeypatch):
    """``compress(..., ratio=)`` (the Contract's old keyword) builds what ``keep=`` builds and warns once."""
    import copy
    import warnings

    import mpstudy.surgery

    monkeypatch.setattr(mpstudy.surgery, "_WARNED", set())
    model, _ = tiny_bert
    new, old, again = copy.deepcopy(model), copy.deepcopy(model), copy.deepcopy(model)
    by_keep = compress(new, "svd", keep=0.5)
    with pytest.warns(DeprecationWarning, match=r"ratio=\) is deprecated: the budget is keep="):
        by_ratio = compress(old, "svd", ratio=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second use is silent
        compress(again, "svd", ratio=0.5)
    assert by_ratio.budget == by_keep.budget == {"keep": 0.5} and by_ratio.modules == by_keep.modules
    with pytest.raises(ValueError, match="give keep= only"):
        compress(copy.deepcopy(model), "svd", keep=0.5, ratio=0.4)


def test_bad_requests_leave_model_untouched(tiny_bert):
    model, _ = tiny_bert
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="unknown method 'svdd'"):
        compress(model, "svdd", keep=0.5)
    with pytest.raises(ValueError, match=r"does not take \['max_bond'\]"):
        compress(model, "svd", max_bond=4)
    with pytest.raises(ValueError, match="got 0"):
        compress(model, "svd", rank=0)
    with pytest.raises(ValueError, match="saves nothing"):
        compress(model, "svd", rank=40)  # fine for the FFN (128x64), not for the 64x64 ones
    with pytest.raises(ValueError, match="matched no"):
        compress(model, "svd", targets="word_embeddings", rank=4)  # an Embedding, not a Linear
    with pytest.raises(ValueError, match="matched no"):
        compress(model, "svd", targets="re:nothing_like_this", rank=4)
    assert not any(isinstance(m, LowRankLinear) for m in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("spec,task", [("tiny-bert", "synthetic-cls"), ("tiny-albert", "synthetic-cls"),
                                       ("tiny-t5", "synthetic-seq2seq"), ("tiny-marian", "synthetic-seq2seq")])
def test_save_load_gives_identical_logits(tmp_path, spec, task):
    model, tokenizer = load_model(spec, task=task)
    compress(model, "svd", targets="all-linear", keep=0.4)
    save_compressed(model, tmp_path / "m", tokenizer=tokenizer)
    reloaded = load_compressed(tmp_path / "m")
    batch = _batch(tokenizer)
    if model.config.is_encoder_decoder:
        batch["decoder_input_ids"] = torch.tensor([[0, 5, 7], [0, 9, 11]])
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, reloaded(**batch).logits)
    assert count_parameters(reloaded) == count_parameters(model)
    # load_model recognises a saved compressed directory too
    again, tok = load_model(tmp_path / "m", task=task)
    assert sum(isinstance(m, LowRankLinear) for m in again.modules()) == sum(isinstance(m, LowRankLinear) for m in model.modules())


def test_save_refuses_to_clobber(tmp_path, tiny_bert):
    model, _ = tiny_bert
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        save_compressed(model, tmp_path / "precious")
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"
    save_compressed(model, tmp_path / "m")
    save_compressed(model, tmp_path / "m")  # a saved model may be replaced
    assert (tmp_path / "m" / MANIFEST).exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left
    with pytest.raises(FileNotFoundError, match="is not a saved mpstudy model"):
        load_compressed(tmp_path / "precious")


def test_count_parameters_shared_frozen_and_pruned():
    model, _ = load_model("tiny-albert", task="synthetic-cls")
    counts = count_parameters(model)
    assert counts["stored"] == sum(p.numel() for p in model.parameters())  # parameters() dedups shared ones
    for p in model.albert.embeddings.parameters():
        p.requires_grad_(False)
    frozen = sum(p.numel() for p in model.albert.embeddings.parameters())
    counts = count_parameters(model)
    assert counts["frozen"] == frozen and counts["trainable"] == counts["stored"] - frozen
    # torch.nn.utils.prune: stored counts weight_orig; nonzero reads the masked weight
    from torch.nn.utils import prune

    layer = model.albert.encoder.albert_layer_groups[0].albert_layers[0].ffn
    before = count_parameters(model)
    prune.l1_unstructured(layer, "weight", amount=0.5)
    after = count_parameters(model)
    assert after["stored"] == before["stored"]
    assert before["nonzero"] - after["nonzero"] == layer.weight.numel() // 2


@pytest.mark.parametrize("method,budget", [
    ("offline-ae", {"epochs": 0}),  # untrained: the round trip is what is tested
    ("offline-kronecker", {}),
    ("offline-tucker", {"block": 16}),
    ("offline-svd", {}),
    ("offline-prune", {}),
])
@pytest.mark.parametrize("mode", ["separated", "concatenated"])
def test_offline_layers_save_load_identical_logits(tmp_path, method, budget, mode):
    """The offline layers (issue 6) round-trip, shared decoders / factor sets included."""
    from mpstudy.layers.decoded import GroupMemberLayer

    model, tokenizer = load_model("tiny-bert", task="synthetic-cls")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small decompositions: on 2 shared cores one thread is many times faster
    try:
        compress(model, method, targets="key,ffn_out,word_embeddings", keep=1 / 3, mode=mode, **budget)
    finally:
        torch.set_num_threads(threads)
    save_compressed(model, tmp_path / "m", tokenizer=tokenizer)
    reloaded = load_compressed(tmp_path / "m")
    batch = _batch(tokenizer)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, reloaded(**batch).logits)
    assert count_parameters(reloaded) == count_parameters(model)
    keys = [layer.attention.self.key for layer in reloaded.bert.encoder.layer]
    if mode == "concatenated" and isinstance(keys[0], GroupMemberLayer):  # the reloaded group shares again
        assert keys[0].shared_module is keys[1].shared_module
    twice = load_compressed(tmp_path / "m")  # a second load shares nothing with the first
    if isinstance(keys[0], GroupMemberLayer):
        assert twice.bert.encoder.layer[1].attention.self.key.shared_module is not keys[1].shared_module


@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers' cache-argument deprecation inside T5Attention
def test_head_pruned_t5_and_pruned_ffn_reload_bit_for_bit(tmp_path):
    """Physically removed heads (T5's relative bias included) and FFN neurons are in the manifest."""
    from mpstudy.prune import prunable_modules, prune_attention, prune_ffn_neurons

    model, _ = load_model("tiny-t5", task="multi30k")
    for pm in prunable_modules(model):
        if pm.kind == "attention":
            prune_attention(pm.module, 0.5)
    ffn = model.encoder.block[0].layer[1].DenseReluDense
    ffn.wi, ffn.wo, _ = prune_ffn_neurons(ffn.wi, ffn.wo, 0.5)
    ids = torch.randint(5, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids, decoder_input_ids=ids).logits
    save_compressed(model, tmp_path / "t5")
    manifest = json.loads((tmp_path / "t5" / MANIFEST).read_text())
    assert manifest["resized_linears"] == {"encoder.block.0.layer.1.DenseReluDense.wi": [ffn.wi.out_features, ffn.wi.in_features, False],
                                           "encoder.block.0.layer.1.DenseReluDense.wo": [ffn.wo.out_features, ffn.wo.in_features, False]}
    assert len(manifest["pruned_heads"]) == sum(pm.kind == "attention" for pm in prunable_modules(model))
    again = load_compressed(tmp_path / "t5")
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids, decoder_input_ids=ids).logits, before)
