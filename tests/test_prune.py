"""Pruning: keep ratios, configurations and schemes, l1-unstructured masks (against torch and by
hand), head scores, physical head removal (against masking the same heads), T5's relative
attention bias, composition and saving."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune
from transformers.models.t5.modeling_t5 import T5Attention

from mpstudy import count_parameters, load_model
from mpstudy.factorize.budget import check_keep
from mpstudy.prune import (
    PrunedT5Attention,
    attention_num_heads,
    clone_module,
    compose,
    finalize_pruning,
    generate_configs,
    head_scores,
    mask_heads,
    num_heads_to_prune,
    prunable_modules,
    prune_heads,
    prune_linear,
    prune_variants,
    pruning_scheme,
    pruning_summary,
    scheme_size,
    select_heads_to_prune,
)
from mpstudy.prune_io import load_pruned, load_variants, save_pruned, save_variants

PAPER = dict(attention_keep=[0.25, 0.5, 0.25], linear_keep=[0.3, 0.3, 0.5])


@pytest.fixture(scope="module")
def t5():
    torch.manual_seed(0)
    model, tok = load_model("tiny-t5", task="synthetic-seq2seq")
    return model, tok


@pytest.fixture(scope="module")
def bert():
    model, tok = load_model("tiny-bert", task="synthetic-cls")
    return model, tok


def _t5_batch(tok):
    enc = tok(["a man runs with the dog today", "the cat"], return_tensors="pt", padding=True)
    dec = torch.tensor([[0, 2001, 2002, 2003, 2004], [0, 3001, 3002, 102, 0]])
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "decoder_input_ids": dec}


def _bert_batch(tok):
    return dict(tok(["a good film with a bad ending", "awful"], return_tensors="pt", padding=True))


# --------------------------------------------------------------------------- ratios, configs, schemes


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.5, "0.5", True, None])
def test_keep_errors_name_the_value(bad):
    with pytest.raises(ValueError, match="the fraction of the weights kept") as err:
        check_keep(bad)
    assert repr(bad) in str(err.value)


@pytest.mark.parametrize("heads,keep,expected", [(8, 0.25, 6), (8, 0.5, 4), (12, 0.25, 9), (12, 0.5, 6), (4, 0.25, 3),
                                                 (4, 0.5, 2), (8, 1.0, 0), (3, 0.5, 2)])
def test_heads_to_prune_follow_the_original_rounding(heads, keep, expected):
    assert num_heads_to_prune(heads, keep) == expected  # floor(H * (1 - keep) + 0.5)


def test_a_keep_that_removes_every_head_is_refused():
    with pytest.raises(ValueError, match="remove all 4 heads"):
        num_heads_to_prune(4, 0.1)


def test_prunable_modules_of_t5_and_bert(t5, bert):
    t5_modules = prunable_modules(t5[0])
    # 2 encoder blocks (self-attention) + 2 decoder blocks (self + cross attention); wi and wo in each of the 4 blocks
    assert [m.kind for m in t5_modules].count("attention") == 6
    assert [m.kind for m in t5_modules].count("linear") == 8
    assert all(isinstance(m.module, T5Attention) for m in t5_modules if m.kind == "attention")
    assert {m.name.rsplit(".", 1)[1] for m in t5_modules if m.kind == "linear"} == {"wi", "wo"}
    bert_modules = prunable_modules(bert[0])
    assert [m.name for m in bert_modules] == [
        "bert.encoder.layer.0.attention", "bert.encoder.layer.1.attention",
        "bert.encoder.layer.0.intermediate.dense", "bert.encoder.layer.0.output.dense",
        "bert.encoder.layer.1.intermediate.dense", "bert.encoder.layer.1.output.dense"]
    assert [m.size for m in bert_modules] == [4, 4, 64 * 128, 128 * 64, 64 * 128, 128 * 64]


def test_configs_and_scheme_with_the_papers_defaults(t5):
    configs = generate_configs(t5[0], **PAPER)
    assert len(configs) == 3
    kinds = {m.name: m.kind for m in prunable_modules(t5[0])}
    for config, att, lin in zip(configs, PAPER["attention_keep"], PAPER["linear_keep"]):
        assert set(config) == set(kinds)
        assert all(k == (att if kinds[n] == "attention" else lin) for n, k in config.items())
    scheme = pruning_scheme(configs)
    assert all(scheme[n] == ([0.25, 0.5] if kinds[n] == "attention" else [0.3, 0.5]) for n in kinds)
    assert scheme_size(scheme) == 2 * 14  # two variants per module instead of three pruned models


def test_scheme_skips_unpruned_modules_and_lists_each_variant_once():
    configs = [{"a": 0.5, "b": 1.0}, {"a": 0.5, "b": 0.3}, {"a": 0.25, "b": 1}]
    assert pruning_scheme(configs) == {"a": [0.25, 0.5], "b": [0.3]}
    with pytest.raises(ValueError, match=r"configs\[1\]\['b'\].*got 2"):
        pruning_scheme([{"a": 0.5}, {"b": 2}])


@pytest.mark.parametrize("kwargs,match", [
    (dict(attention_keep=[0.5, 0.5], linear_keep=[0.3]), "same length"),
    (dict(attention_keep=[0.5], linear_keep=[0.3], num_configs=2), "num_configs=2"),
    (dict(attention_keep=[], linear_keep=[]), "non-empty"),
    (dict(attention_keep=[0.5], linear_keep=[0.0]), r"linear_keep\[0\].*got 0.0"),
    (dict(attention_keep=[0.05], linear_keep=[0.5]), "remove all 4 heads"),
])
def test_generate_configs_errors(bert, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_configs(bert[0], **kwargs)


# --------------------------------------------------------------------------- unstructured pruning


@pytest.mark.parametrize("keep", [0.3, 0.5, 0.77, 1.0])
def test_l1_unstructured_equals_torch_and_the_count_by_hand(keep):
    torch.manual_seed(1)
    linear = nn.Linear(24, 16)
    reference = copy.deepcopy(linear)
    prune_linear(linear, keep)
    n = 24 * 16
    kept = round(keep * n)  # no weight of a random matrix is exactly zero
    assert int(torch.count_nonzero(linear.weight)) == kept
    if keep < 1:
        torch_prune.l1_unstructured(reference, "weight", amount=1 - keep)  # torch's own fraction form
        assert torch.equal(linear.weight_mask, reference.weight_mask)
        # the survivors are the largest magnitudes
        magnitudes = linear.weight_orig.detach().abs().flatten()
        threshold = magnitudes.sort(descending=True).values[kept - 1]
        assert torch.equal(linear.weight_mask.flatten().bool(), magnitudes >= threshold)
        assert torch.count_nonzero(linear.bias) == 16  # the bias is not pruned
    stats = count_parameters(linear)
    assert stats["stored"] == n + 16 and stats["nonzero"] == kept + 16


def test_masks_survive_training_and_finalize_keeps_the_function():
    torch.manual_seed(2)
    linear = prune_linear(nn.Linear(8, 8), 0.25)
    zeros = linear.weight_mask == 0
    opt = torch.optim.SGD(linear.parameters(), lr=0.1)
    x = torch.randn(5, 8)
    linear(x).pow(2).sum().backward()
    opt.step()
    assert torch.all(linear(x).isfinite()) and torch.all(linear.weight[zeros] == 0)
    copied = clone_module(linear)  # the non-leaf masked weight does not stop deepcopy
    before = linear(x)
    finalize_pruning(linear)
    assert isinstance(linear.weight, nn.Parameter) and not hasattr(linear, "weight_mask")
    assert torch.allclose(linear(x), before) and torch.allclose(copied(x), before)


def test_prune_linear_rejects_other_modules():
    with pytest.raises(ValueError, match="nn.Linear, got Embedding"):
        prune_linear(nn.Embedding(3, 4), 0.5)


# --------------------------------------------------------------------------- head pruning


def test_head_scores_are_the_l1_norm_of_q_k_v_rows(t5, bert):
    for attention, (q, k, v), d in [
        (t5[0].encoder.block[0].layer[0].SelfAttention, ("q", "k", "v"), 16),
        (bert[0].bert.encoder.layer[0].attention, ("self.query", "self.key", "self.value"), 16),
    ]:
        weights = [attention.get_submodule(name).weight.detach() for name in (q, k, v)]
        expected = torch.tensor([sum(float(w[h * d:(h + 1) * d].abs().sum()) for w in weights) for h in range(4)])
        assert torch.allclose(head_scores(attention), expected, rtol=1e-5)
        lowest = sorted(range(4), key=lambda h: float(expected[h]))[:2]
        assert select_heads_to_prune(attention, 0.5) == sorted(lowest)


@pytest.mark.parametrize("seed", [0, 1])
def test_pruned_bert_equals_masked_bert(bert, seed):
    model, tok = bert
    g = torch.Generator().manual_seed(seed)
    pruned, masked = clone_module(model), clone_module(model)
    removed = 0
    for layer in range(2):
        heads = torch.randperm(4, generator=g)[: layer + 1].tolist()  # a different number of heads per layer
        prune_heads(pruned.bert.encoder.layer[layer].attention, heads)
        mask_heads(masked.bert.encoder.layer[layer].attention, heads)
        removed += len(heads)
    batch = _bert_batch(tok)
    with torch.no_grad():
        assert torch.allclose(pruned(**batch).logits, masked(**batch).logits, atol=1e-5)
    d, dh = 64, 16  # per removed head: Q, K, V rows with their biases, and O's input columns
    assert count_parameters(pruned)["stored"] == count_parameters(model)["stored"] - removed * (3 * (d * dh + dh) + d * dh)
    assert attention_num_heads(pruned.bert.encoder.layer[1].attention) == 2
    assert pruned.bert.encoder.layer[1].attention.self.all_head_size == 2 * dh


def _prune_t5_unevenly(model, seed=0):
    """Remove a different set (and number) of heads from every attention block; mask the same in a copy."""
    pruned, masked = clone_module(model), clone_module(model)
    g = torch.Generator().manual_seed(seed)
    removed = 0
    for m in prunable_modules(model):
        if m.kind == "attention":
            heads = torch.randperm(4, generator=g)[: int(torch.randint(0, 4, (1,), generator=g))].tolist()
            prune_heads(pruned.get_submodule(m.name), heads)
            mask_heads(masked.get_submodule(m.name), heads)
            removed += len(heads)
    return pruned, masked, removed


@pytest.mark.parametrize("seed", [0, 1])
def test_pruned_t5_equals_masked_t5_and_still_generates(t5, seed):
    model, tok = t5
    pruned, masked, removed = _prune_t5_unevenly(model, seed)
    batch = _t5_batch(tok)
    with torch.no_grad():
        assert torch.allclose(pruned(**batch).logits, masked(**batch).logits, atol=1e-5)
        source = {k: batch[k] for k in ("input_ids", "attention_mask")}
        out_pruned = pruned.generate(**source, max_new_tokens=8, do_sample=False, num_beams=1)
        out_masked = masked.generate(**source, max_new_tokens=8, do_sample=False, num_beams=1)
    assert out_pruned.shape[1] > 1 and torch.equal(out_pruned, out_masked)
    d, dkv = 64, 16  # T5 has no biases: per removed head, d_kv rows of Q, K, V and d_kv columns of O
    assert count_parameters(pruned)["stored"] == count_parameters(model)["stored"] - removed * 4 * d * dkv


def test_t5_relative_bias_is_sliced_per_layer(t5):
    """The first layer's bias embedding keeps every head; each layer adds only its kept heads' biases."""
    model, tok = t5
    pruned = clone_module(model)
    first = pruned.encoder.block[0].layer[0].SelfAttention
    prune_heads(first, [1, 3])
    second = pruned.encoder.block[1].layer[0].SelfAttention
    prune_heads(second, [0])
    assert isinstance(first, PrunedT5Attention) and first.kept_heads.tolist() == [0, 2]
    assert second.kept_heads.tolist() == [1, 2, 3]
    assert first.relative_attention_bias.weight.shape == (8, 4)  # num_buckets x all heads
    hidden = torch.randn(1, 5, 64)
    _, bias, _ = first(hidden)
    assert bias.shape == (1, 4, 5, 5)  # what travels to the next layers has every head
    assert torch.equal(bias, model.encoder.block[0].layer[0].SelfAttention.compute_bias(5, 5))


def test_upstream_style_head_removal_breaks_t5(t5):
    """Removing heads without slicing the shared position bias (the upstream bug) fails in the next layer."""
    model, tok = t5
    broken = clone_module(model)
    prune_heads(broken.encoder.block[1].layer[0].SelfAttention, [0, 1])
    broken.encoder.block[1].layer[0].SelfAttention.__class__ = T5Attention  # undo the fix
    with pytest.raises(RuntimeError):
        with torch.no_grad():
            broken(**_t5_batch(tok))


def test_pruning_twice_composes(t5):
    model, _ = t5
    once = clone_module(model.decoder.block[1].layer[1].EncDecAttention)
    twice = clone_module(once)
    prune_heads(once, [0, 2])
    prune_heads(twice, [2])
    prune_heads(twice, [0])
    assert once.kept_heads.tolist() == twice.kept_heads.tolist() == [1, 3]
    assert torch.equal(once.q.weight, twice.q.weight) and torch.equal(once.o.weight, twice.o.weight)


@pytest.mark.parametrize("heads,match", [([4], r"\[4\] out of range"), ([0, 1, 2, 3], "cannot remove all 4")])
def test_prune_heads_errors(bert, heads, match):
    with pytest.raises(ValueError, match=match):
        prune_heads(clone_module(bert[0].bert.encoder.layer[0].attention), heads)


def test_not_an_attention_block():
    with pytest.raises(ValueError, match="Linear is not an attention block"):
        head_scores(nn.Linear(4, 4))


# --------------------------------------------------------------------------- variants, composition, saving


def test_compose_swaps_in_variants_and_leaves_the_original(t5):
    model, tok = t5
    before = {k: v.clone() for k, v in model.state_dict().items()}
    configs = generate_configs(model, **PAPER)
    variants = prune_variants(model, pruning_scheme(configs))
    composed = compose(model, configs[0], variants)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    summary = pruning_summary(composed)
    assert set(summary["heads"].values()) == {1}  # 0.25 of 4 heads: 3 removed
    assert set(round(v, 2) for v in summary["masked_linears"].values()) == {0.3}
    stats = count_parameters(composed)
    linear = sum(m.size for m in prunable_modules(model) if m.kind == "linear")
    assert stats["nonzero"] == count_parameters(model)["nonzero"] - 6 * 3 * 4 * 64 * 16 - (linear - round(0.3 * 8192) * 8)
    with torch.no_grad():
        assert composed.generate(input_ids=_t5_batch(tok)["input_ids"], max_new_tokens=4).shape[1] > 1
    with pytest.raises(ValueError, match=r"no variant .*'encoder.block.0.layer.0.SelfAttention', 0.75\)"):
        compose(model, {**configs[0], "encoder.block.0.layer.0.SelfAttention": 0.75}, variants)
    with pytest.raises(ValueError, match="not prunable modules"):
        prune_variants(model, {"encoder.block.0.layer.0.layer_norm": [0.5]})


def test_variants_and_pruned_models_round_trip(tmp_path, bert):
    model, tok = bert
    configs = generate_configs(model, [0.5], [0.3])
    variants = prune_variants(model, pruning_scheme(configs))
    with torch.no_grad():  # make the variants differ from a fresh pruning
        for by_keep in variants.values():
            for module in by_keep.values():
                for p in module.parameters():
                    p.add_(0.01)
    save_variants(variants, tmp_path / "variants.pt", model)
    loaded = load_variants(model, tmp_path / "variants.pt")
    batch = _bert_batch(tok)
    composed, reloaded = compose(model, configs[0], variants), compose(model, configs[0], loaded)
    with torch.no_grad():
        assert torch.equal(composed.eval()(**batch).logits, reloaded.eval()(**batch).logits)
    save_pruned(composed, tmp_path / "model", base="tiny-bert", task="synthetic-cls", extra={"config": 0})
    again, _, meta = load_pruned(tmp_path / "model")
    with torch.no_grad():
        assert torch.equal(composed(**batch).logits, again(**batch).logits)
    assert meta["config"] == 0 and len(meta["masked_linears"]) == 4
    with pytest.raises(FileExistsError, match="not a saved pruned model"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "x").write_text("x")
        save_pruned(composed, tmp_path / "other", base="tiny-bert")


def test_pruned_distilbert_equals_masked_distilbert():
    """The original's second model family: DistilBERT (q_lin/k_lin/v_lin/out_lin), tiny random config."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=16)
    model = DistilBertForSequenceClassification(config).eval()
    names = [m.name for m in prunable_modules(model)]
    assert names[:2] == ["distilbert.transformer.layer.0.attention", "distilbert.transformer.layer.1.attention"]
    assert names[2:] == [f"distilbert.transformer.layer.{i}.ffn.{n}" for i in range(2) for n in ("lin1", "lin2")]
    pruned, masked = clone_module(model), clone_module(model)
    for name in names[:2]:
        heads = select_heads_to_prune(model.get_submodule(name), 0.5)
        prune_heads(pruned.get_submodule(name), heads)
        mask_heads(masked.get_submodule(name), heads)
    ids = torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        assert torch.allclose(pruned(input_ids=ids).logits, masked(input_ids=ids).logits, atol=1e-5)
    assert count_parameters(pruned)["stored"] == count_parameters(model)["stored"] - 2 * 2 * (3 * (32 * 8 + 8) + 32 * 8)
