"""``mpstudy.accounting``, every count written out by hand from the shapes and values: a tiny Linear,
a tied tensor counted once, the bias flag, a ``torch.nn.utils.prune`` weight read through its mask,
a ``MagnitudePrunedLayer`` stored against non-zero, a shared group decoder, bytes in fp32 and bf16."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import mpstudy
from mpstudy.accounting import budget_count, count_bytes, count_parameters
from mpstudy.layers import MagnitudePrunedLayer
from mpstudy.layers.autoencoder import AutoencoderLayer, RowDecoder


def _linear(out_f: int = 3, in_f: int = 4, bias=(1.0, 0.0, 2.0)) -> nn.Linear:
    """Weights 1 .. out*in (none zero); the given bias (one zero entry by default)."""
    layer = nn.Linear(in_f, out_f, bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(1, out_f * in_f + 1, dtype=torch.float32).reshape(out_f, in_f))
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias))
    return layer


def test_a_tiny_linear():
    layer = _linear()  # 12 weights, 3 bias entries of which one is zero
    assert count_parameters(layer) == {"stored": 15, "trainable": 15, "frozen": 0, "nonzero": 14}
    assert count_parameters(layer, include_bias=False) == {"stored": 12, "trainable": 12, "frozen": 0, "nonzero": 12}
    layer.bias.requires_grad_(False)
    assert count_parameters(layer) == {"stored": 15, "trainable": 12, "frozen": 3, "nonzero": 14}
    assert count_parameters(layer, nonzero=False) == {"stored": 15, "trainable": 12, "frozen": 3}
    assert budget_count(layer) == 12 and budget_count(layer, include_bias=True) == 15


def test_a_tied_tensor_counts_once_across_modules_and_names():
    embed = nn.Embedding(10, 4)  # 40
    head = nn.Linear(4, 10)  # 40 + 10 bias
    head.weight = embed.weight  # tied, as a language model's output layer
    model = nn.ModuleDict({"embed": embed, "head": head})
    assert count_parameters(model)["stored"] == 50
    assert count_parameters(model, ["embed", "head"])["stored"] == 50  # once across the names too
    assert count_parameters(model, "head")["stored"] == 50
    assert count_parameters(model, "head", include_bias=False)["stored"] == 40
    assert count_parameters(model, "embed")["stored"] == 40


def test_the_bias_flag_reaches_nested_biases():
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 5)))
    # weights: 12 + 3 (LayerNorm's weight) + 6 + 10; biases: 3 + 3 (LayerNorm's) + 5
    assert count_parameters(model, nonzero=False)["stored"] == 31 + 11
    assert count_parameters(model, include_bias=False, nonzero=False)["stored"] == 31
    assert count_parameters(model, ["2.0", "2.1"], include_bias=False, nonzero=False)["stored"] == 16


def test_a_pruned_weight_is_read_through_its_mask():
    layer = _linear()
    prune.l1_unstructured(layer, "weight", amount=0.5)  # the 6 smallest of 1 .. 12 are masked
    counts = count_parameters(layer)
    assert counts["stored"] == 15  # weight_orig and the bias; the mask is a buffer
    assert counts["nonzero"] == 6 + 2
    assert budget_count(layer) == 6 and budget_count(layer, include_bias=True) == 6 + 3
    with torch.no_grad():  # an optimizer step moves weight_orig; `weight` is stale until the next forward
        layer.weight_orig.fill_(5.0)
    assert count_parameters(layer)["nonzero"] == 6 + 2  # still the mask's 6, not weight_orig's 12


def test_magnitude_pruned_layer_stores_dense_and_keeps_its_nonzeros():
    dense = _linear()
    layer = MagnitudePrunedLayer.from_dense(dense, keep=0.25)  # round(0.25 * 12) = 3 weights kept: 10, 11, 12
    assert layer.num_params() == 15  # stored, like every layer: the dense weight_orig and the bias
    assert count_parameters(layer) == {"stored": 15, "trainable": 15, "frozen": 0, "nonzero": 3 + 2}
    assert budget_count(layer) == 3  # the pruning budget: non-zero weights, biases left out
    assert sorted(layer.to_dense()[layer.to_dense() != 0].tolist()) == [10.0, 11.0, 12.0]


def test_a_group_decoder_counts_once_with_its_biases():
    decoder = RowDecoder(latent=2, h1=3, h2=4, cols=5)  # (2*3 + 3) + (3*4 + 4) + (4*5 + 5) = 50, 12 of them biases
    kw = dict(kind="linear", rows=6, cols=5, latent=2, h1=3, h2=4, bias=True, shared_key="t", group_size=2, shared=decoder)
    owner, member = AutoencoderLayer(**kw, group_index=0), AutoencoderLayer(**kw, group_index=1)
    model = nn.ModuleDict({"a": owner, "b": member})
    own = 6 * 2 + 6  # latents and norms of one member
    assert count_parameters(model, nonzero=False)["stored"] == 2 * (own + 6) + 50
    # without biases: each member's own bias goes, the decoder's stay (numbers the method stores)
    assert count_parameters(model, ["a", "b"], include_bias=False, nonzero=False)["stored"] == 2 * own + 50
    assert count_parameters(model, "b", include_bias=False, nonzero=False)["stored"] == own  # the owner holds the decoder
    assert owner.num_params() == own + 6 + 50 and member.num_params() == own + 6


def test_bytes_by_dtype():
    layer = _linear()
    assert count_bytes(layer) == {"total": 15 * 4, "by_dtype": {"float32": 15 * 4}}
    assert count_bytes(layer.to(torch.bfloat16)) == {"total": 15 * 2, "by_dtype": {"bfloat16": 15 * 2}}
    mixed = nn.ModuleList([_linear(), _linear().to(torch.bfloat16)])
    assert count_bytes(mixed) == {"total": 15 * 6, "by_dtype": {"float32": 60, "bfloat16": 30}}
    assert count_bytes(mixed, include_bias=False)["total"] == 12 * 6
    pruned = _linear()
    prune.l1_unstructured(pruned, "weight", amount=0.5)
    assert count_bytes(pruned)["total"] == 15 * 4
    assert count_bytes(pruned, buffers=True)["total"] == 15 * 4 + 12 * 4  # the float mask is a buffer


def test_sizes_of_a_meta_model_and_bad_names():
    with torch.device("meta"):
        big = nn.Linear(1000, 1000)
    assert count_parameters(big, nonzero=False)["stored"] == 1_001_000
    with pytest.raises(ValueError, match="has no submodule 'nope'"):
        count_parameters(nn.Sequential(nn.Linear(2, 2)), ["0", "nope"])


def test_the_public_name_is_this_one():
    assert mpstudy.count_parameters is count_parameters
