"""The precision methods ``bf16`` and ``int8`` (``mpstudy.methods.precision``, ``mpstudy.layers.int8``).

* ``Int8Linear`` is torch's dynamic quantization: the same outputs, bit for bit, as the module
  ``torch.ao.quantization.quantize_dynamic`` builds, per tensor and per output row; its state dict
  is plain tensors that rebuild it exactly.
* Accuracy, with stated tolerances: every weight entry within half a quantization step (int8) or
  within bfloat16's unit roundoff 2^-8 relative (bf16), as the report's errors say; the logits
  within 2 % of their largest magnitude of the float32 model's (measured on this tiny BERT: at most
  0.8 % for bf16, 0.1 % for int8), alone and after svd and prune-heads.
* Composition after every registered method: bf16 always; int8 wherever a Linear does the
  multiplying, and a one-line refusal naming the layer where a layer rebuilds its dense weight.
* Counts by hand: parameters unchanged (an int8 weight is a stored, frozen parameter), bytes of
  int8 weights (1 byte per entry), their float32 scales and int32 zero points (one per tensor or
  per output row), float32 biases; bfloat16 at 2 bytes per entry.
* ``save_compressed``/``load_compressed``: the same logits bit for bit and the same dtypes.
* Refusals, each in one line.
"""
from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
import transformers
from torch import nn

from mpstudy import (
    compress,
    count_parameters,
    load_compressed,
    load_model,
    save_compressed,
)
from mpstudy.accounting import count_bytes
from mpstudy.layers import (
    LAYER_CLASSES,
    LowRankLinear,
    MagnitudePrunedLayer,
    MPOEmbedding,
)
from mpstudy.layers.int8 import Int8Linear
from mpstudy.measure import dummy_batch
from mpstudy.methods import METHODS, get_method
from mpstudy.methods.precision import PRECISION_METHODS
from mpstudy.surgery import MANIFEST

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HIDDEN, FFN, VOCAB, LAYERS = 12, 8, 11, 2
#: (out, in) of the six Linears of one layer: query, key, value, attention output, FFN in, FFN out
SHAPES = [(HIDDEN, HIDDEN)] * 4 + [(FFN, HIDDEN), (HIDDEN, FFN)]
LOGIT_TOL = 0.02  # of the largest logit magnitude


def tiny_bert() -> nn.Module:
    """A 2-layer BERT classifier (hidden 12, FFN 8, vocabulary 11), weights N(0, 0.02) as BERT's init, eval mode."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                     num_attention_heads=2, intermediate_size=FFN, max_position_embeddings=16,
                                     num_labels=2)
    return transformers.BertForSequenceClassification(config).eval()


def _ids(vocab: int = VOCAB, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (3, 7), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@torch.no_grad()
def _logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).logits


def _close(got: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest logit difference as a fraction of the largest reference logit."""
    return float((got.float() - ref).abs().max() / ref.abs().max())


@pytest.fixture(scope="module")
def bert():
    model, tok = load_model("tiny-bert", task="synthetic-cls", seed=0)
    return model.eval(), dummy_batch(tok, batch_size=4, seq_len=16)


# --------------------------------------------------------------------------- the int8 layer


@pytest.mark.parametrize("per_channel", [False, True])
def test_int8_linear_is_torchs_dynamic_quantization(per_channel):
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    torch.manual_seed(0)
    dense = nn.Linear(16, 8)
    layer = Int8Linear.from_dense(dense, per_channel=per_channel)
    with warnings.catch_warnings():  # torch's deprecation notices of its eager quantization, the oracle here
        warnings.simplefilter("ignore")
        qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
        oracle = quantize_dynamic(nn.Sequential(copy.deepcopy(dense)), {nn.Linear: qconfig}, dtype=torch.qint8)[0]
    x = torch.randn(5, 16)
    with torch.no_grad():
        assert torch.equal(layer(x), oracle(x))
        assert not torch.equal(layer(x), dense(x))
    assert isinstance(layer, torch.ao.nn.quantized.dynamic.Linear) and list(layer.parameters()) == []
    assert layer.init_kwargs() == {"in_features": 16, "out_features": 8, "bias": True, "per_channel": per_channel}
    rows = 8 if per_channel else 1
    state = layer.state_dict()
    assert {k: (v.dtype, tuple(v.shape)) for k, v in state.items()} == {
        "weight": (torch.int8, (8, 16)), "weight_scale": (torch.float32, (rows,)),
        "weight_zero_point": (torch.int32, (rows,)), "bias": (torch.float32, (8,))}
    assert not state["weight_zero_point"].any()  # symmetric: zero stays zero
    # the weight reads as the dequantized matrix, each entry within half a step of the original
    step = state["weight_scale"].view(-1, 1)
    assert torch.equal(layer.weight, (state["weight"].float() * step))
    assert ((layer.weight - dense.weight).abs() <= step / 2 + 1e-7).all()
    assert torch.equal(layer.bias, dense.bias)
    rebuilt = Int8Linear(**layer.init_kwargs())
    rebuilt.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), layer(x)) and torch.equal(copy.deepcopy(layer)(x), layer(x))
    with torch.no_grad():  # the layer packed a copy of the bias: editing the float Linear cannot reach it
        dense.bias.add_(1)
        assert torch.equal(layer(x), rebuilt(x))


def test_int8_linear_refuses_a_state_dict_of_the_wrong_scheme():
    layer = Int8Linear(4, 3, bias=False, per_channel=True)
    per_tensor = Int8Linear(4, 3, bias=False).state_dict()
    with pytest.raises(RuntimeError, match=r"weight_scale: expected float32 \(3,\), got float32 \(1,\)"):
        layer.load_state_dict(per_tensor)
    with pytest.raises(TypeError, match="Int8Linear replaces a plain nn.Linear, got NonDynamicallyQuantizableLinear"):
        Int8Linear.from_dense(nn.modules.linear.NonDynamicallyQuantizableLinear(4, 3))
    with pytest.raises(ValueError, match="Int8Linear quantizes float32 weights, got a bfloat16 one"):
        Int8Linear.from_dense(nn.Linear(4, 3).to(torch.bfloat16))


# --------------------------------------------------------------------------- accuracy, alone and composed


@pytest.mark.parametrize("before", [None, ("svd", {"rank": 4}), ("prune-heads", {"keep": 0.5})])
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_logits_close_to_float32(bert, before, precision):
    model = copy.deepcopy(bert[0])
    if before is not None:
        compress(model, before[0], **before[1])
    ref = _logits(model, bert[1])
    report = compress(model, precision)
    got = _logits(model, bert[1])
    assert got.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
    assert 0 < _close(got, ref) <= LOGIT_TOL, _close(got, ref)
    assert report.params_after == report.params_before and report.model_params_after == report.model_params_before
    errors = [r["rel_error"] for r in report.modules]
    if precision == "bf16":
        # each entry rounded to 8 significant bits: relative error <= u = 2^-8; a factorized layer's product
        # of two rounded factors, itself rounded, <= 3u
        assert all(0 < e <= (3 if before and before[0] == "svd" else 1) * 2 ** -8 for e in errors), errors
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    else:
        # half a step (max|W| / 254) of uniform rounding error against N(0, 0.02) weights whose largest entry
        # is 4-5 standard deviations: about 1 %
        assert all(0 < e <= 0.02 for e in errors), errors
        linears = [m for name, m in model.named_modules() if type(m) is nn.Linear and "encoder" in name]
        assert linears == []  # every encoder Linear, the factors' too, now int8


def _composition_budgets():
    """The tiny budgets of the save/load test, one per registered method (it lives beside this file)."""
    from test_roundtrip_all_methods import _compress

    return _compress


#: layer classes whose weight is decoded from factors: int8 refuses them (every other class has a Linear inside)
DECODING = {"MPOLinear", "MPOEmbedding", "AutoencoderLayer", "KroneckerLayer", "RowBasisLowRank", "TuckerRowsLayer",
            "TuckerStackLayer", "FalconLayer"}


def test_the_decoding_table_covers_every_layer_class():
    assert DECODING | {"LowRankLinear", "MagnitudePrunedLayer"} == set(LAYER_CLASSES)


@pytest.mark.parametrize("method", sorted(set(METHODS) - set(PRECISION_METHODS)))
def test_precision_composes_after_every_method(bert, method):
    """bf16 after any method; int8 after any method whose layers multiply with Linears, else a one-line refusal
    naming a layer that decodes its weight."""
    compressed = copy.deepcopy(bert[0])
    _composition_budgets()(compressed, method)
    compressed.eval()
    ref = _logits(compressed, bert[1])
    model = copy.deepcopy(compressed)
    compress(model, "bf16")
    assert _close(_logits(model, bert[1]), ref) <= LOGIT_TOL
    model = copy.deepcopy(compressed)
    decoding = {type(m).__name__ for m in model.modules()} & DECODING
    if decoding:
        refusal = r"^int8 cannot quantize \S+ \((\w+)\): it rebuilds its dense weight"
        with pytest.raises(ValueError, match=refusal) as err:
            compress(model, "int8")
        assert err.value.args[0].split("(")[1].split(")")[0] in decoding and "\n" not in str(err.value)
        assert torch.equal(_logits(model, bert[1]), ref)  # refused before the first edit
    else:
        compress(model, "int8")
        assert any(isinstance(m, Int8Linear) for m in model.modules())
        assert _close(_logits(model, bert[1]), ref) <= LOGIT_TOL


def test_int8_of_a_magnitude_pruned_layer_keeps_its_zeros(bert):
    model = copy.deepcopy(bert[0])
    compress(model, "offline-prune", keep=0.5)
    name = "bert.encoder.layer.0.attention.self.query"
    masked = model.get_submodule(name)
    assert isinstance(masked, MagnitudePrunedLayer)
    zeros = masked.to_dense() == 0
    nonzero = count_parameters(model, name)["nonzero"]
    compress(model, "int8")
    layer = model.get_submodule(name)
    assert isinstance(layer, Int8Linear) and (layer.weight[zeros] == 0).all()
    assert count_parameters(model, name)["nonzero"] <= nonzero  # a tiny weight may round to zero too


# --------------------------------------------------------------------------- counted by hand


def _dense_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@pytest.mark.parametrize("per_channel", [False, True])
def test_int8_counts_by_hand(per_channel):
    model = tiny_bert()
    before = count_parameters(model)
    total = _dense_bytes(model)
    compress(model, "int8", per_channel=per_channel)
    weights = LAYERS * sum(o * i for o, i in SHAPES)  # 2 * (4 * 144 + 96 + 96) = 1536
    biases = LAYERS * sum(o for o, _ in SHAPES)  # 2 * (4 * 12 + 8 + 12) = 136
    scales = LAYERS * (sum(o for o, _ in SHAPES) if per_channel else len(SHAPES))  # one per row, or per Linear
    after = count_parameters(model)
    assert after["stored"] == before["stored"]  # the same numbers, stored smaller
    assert after["frozen"] == weights + biases and after["trainable"] == before["stored"] - weights - biases
    got = count_bytes(model)
    assert got["by_dtype"] == {"float32": total - 4 * weights + 4 * scales, "int8": weights, "int32": 4 * scales}
    assert got["total"] == total - 3 * weights + 8 * scales
    # without biases: the int8 layers' float32 biases go, and the float ones of the LayerNorms (the embeddings'
    # and two a layer), the pooler and the 2-label classifier
    other_biases = HIDDEN + LAYERS * 2 * HIDDEN + HIDDEN + 2
    assert count_bytes(model, include_bias=False)["total"] == got["total"] - 4 * (biases + other_biases)
    # one layer alone: 144 int8 entries, its scales and zero points, 12 float32 biases
    one = "bert.encoder.layer.0.attention.self.query"
    rows = HIDDEN if per_channel else 1
    assert count_bytes(model, one) == {"total": 144 + 8 * rows + 48,
                                       "by_dtype": {"int8": 144, "float32": 4 * rows + 48, "int32": 4 * rows}}
    assert count_parameters(model, [one, one])["stored"] == 144 + 12  # a module named twice counts once


def test_int8_of_factors_counts_by_hand():
    model = tiny_bert()
    total = _dense_bytes(model)
    compress(model, "svd", rank=2)
    compress(model, "int8")
    one = model.get_submodule("bert.encoder.layer.0.attention.self.query")
    assert isinstance(one, LowRankLinear) and isinstance(one.first, Int8Linear) and isinstance(one.second, Int8Linear)
    factors = LAYERS * sum(2 * (o + i) for o, i in SHAPES)  # rank 2: (out + in) * 2 entries per Linear
    dense = LAYERS * sum(o * i for o, i in SHAPES)
    scales = LAYERS * 2 * len(SHAPES)  # two inner Linears per layer, one scale each
    assert count_bytes(model)["by_dtype"] == {"float32": total - 4 * dense + 4 * scales, "int8": factors,
                                              "int32": 4 * scales}


def test_bf16_counts_by_hand():
    model = tiny_bert()
    before = count_parameters(model)
    compress(model, "bf16")
    assert count_parameters(model) == before  # the same numbers, all still trainable
    assert count_bytes(model) == {"total": 2 * before["stored"], "by_dtype": {"bfloat16": 2 * before["stored"]}}


# --------------------------------------------------------------------------- save and load


CHAINS = {
    "int8": [("int8", {})],
    "int8-per-channel": [("int8", {"per_channel": True})],
    "bf16": [("bf16", {})],
    "svd+int8": [("svd", {"rank": 4}), ("int8", {})],
    "svd+bf16": [("svd", {"rank": 4}), ("bf16", {})],
    "prune-heads+int8": [("prune-heads", {"keep": 0.5}), ("int8", {})],
    "prune-heads+bf16": [("prune-heads", {"keep": 0.5}), ("bf16", {})],
    "mpo+bf16": [("mpo", {"max_bond": 4}), ("bf16", {})],
}


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_save_load_bit_for_bit_with_dtypes(bert, tmp_path, chain):
    model = copy.deepcopy(bert[0])
    for method, budget in CHAINS[chain]:
        compress(model, method, **budget)
    expected = _logits(model, bert[1])
    save_compressed(model, tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / MANIFEST).read_text())
    assert manifest["format"] == 2 and manifest["dtype"] == ("bfloat16" if "bf16" in chain else "float32")
    assert manifest["dtypes"] == {}
    back = load_compressed(tmp_path / "m")
    got = _logits(back, bert[1])
    assert got.dtype == expected.dtype and torch.equal(got, expected)
    state, again = model.state_dict(), back.state_dict()
    assert {k: v.dtype for k, v in again.items()} == {k: v.dtype for k, v in state.items()}
    assert all(torch.equal(state[k], again[k]) for k in state)
    assert [type(m).__name__ for m in back.modules()] == [type(m).__name__ for m in model.modules()]
    assert count_bytes(back) == count_bytes(model) and count_parameters(back) == count_parameters(model)


def test_mixed_dtypes_are_kept(bert, tmp_path):
    model = copy.deepcopy(bert[0])
    model.classifier.to(torch.float64)  # one module in another dtype: recorded by name
    batch = bert[1]
    with torch.no_grad():
        hidden = model.bert(**batch).pooler_output
        expected = model.classifier(hidden.double())
    save_compressed(model, tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / MANIFEST).read_text())
    assert manifest["dtype"] == "float32"
    assert manifest["dtypes"] == {"classifier.weight": "float64", "classifier.bias": "float64"}
    back = load_compressed(tmp_path / "m")
    assert back.classifier.weight.dtype == torch.float64
    with torch.no_grad():
        assert torch.equal(back.classifier(back.bert(**batch).pooler_output.double()), expected)


def test_a_weights_file_in_another_dtype_is_refused(bert, tmp_path):
    model = copy.deepcopy(bert[0])
    compress(model, "bf16")
    save_compressed(model, tmp_path / "m")
    manifest_path = tmp_path / "m" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["dtype"] = "float32"  # a manifest that no longer matches the bfloat16 weights
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"model\.safetensors is corrupted or does not match .*is stored as BF16, "
                                         r"the manifest makes it F32\)$"):
        load_compressed(tmp_path / "m")


def test_torchs_own_quantized_model_is_refused_before_writing(bert, tmp_path):
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch's deprecation notice of quantize_dynamic, called here on purpose
        warnings.simplefilter("ignore")
        model = quantize_dynamic(copy.deepcopy(bert[0]), {nn.Linear}, dtype=torch.qint8)
    with pytest.raises(TypeError, match=r"^save_compressed saves the int8 layers of compress\(model, 'int8'\) "
                                        r"\(Int8Linear\); bert\.encoder\.layer\.0\.attention\.self\.query is torch's "
                                        r"DynamicQuantizedLinear"):
        save_compressed(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()


# --------------------------------------------------------------------------- refusals


def _refuses(model: nn.Module, match: str, method: str, **kwargs) -> None:
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=match) as err:
        compress(model, method, **kwargs)
    assert "\n" not in str(err.value)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in after)


def test_refusals_in_one_line(bert):
    model = copy.deepcopy(bert[0])
    _refuses(model, r"^method 'bf16' takes no budget keywords, got \['keep'\]$", "bf16", keep=0.5)
    _refuses(model, r"^method 'int8' does not take \['keep'\]; allowed: \['per_channel'\]$", "int8", keep=0.5)
    _refuses(model, r"^per_channel must be True or False, got 1$", "int8", per_channel=1)
    for name in PRECISION_METHODS:
        with pytest.raises(ValueError, match=f"^method '{name}' cannot be asked for a kept fraction"):
            get_method(name).for_budget(model, 0.5)
    mpo = copy.deepcopy(bert[0])
    compress(mpo, "mpo", max_bond=4)
    _refuses(mpo, r"^int8 cannot quantize bert\.encoder\.layer\.0\.attention\.self\.query \(MPOLinear\): it "
                  r"rebuilds its dense weight from factors, there is no Linear inside to quantize; leave it out of "
                  r"targets, or use bf16$", "int8")
    embedding = copy.deepcopy(bert[0])
    compress(embedding, "mpo", targets="word_embeddings", max_bond=4)
    assert isinstance(embedding.bert.embeddings.word_embeddings, MPOEmbedding)
    _refuses(embedding, r"^int8 quantizes Linear layers; bert\.embeddings\.word_embeddings \(MPOEmbedding\) is an "
                        r"embedding$", "int8", targets="word_embeddings")
    low_rank = copy.deepcopy(bert[0])
    compress(low_rank, "svd", rank=4)
    _refuses(low_rank, r"^int8 targets overlap: bert\.encoder\.layer\.0\.attention\.self\.query\.first lies "
                       r"inside bert\.encoder\.layer\.0\.attention\.self\.query; target the layer or its inner "
                       r"Linears, not both$", "int8", targets=r"re:attention\.self\.query")
    half = copy.deepcopy(bert[0])
    compress(half, "bf16")
    _refuses(half, r"^int8 quantizes float32 weights; bert\.encoder\.layer\.0\.attention\.self\.query holds bfloat16 "
                   r"\(bf16 applied\?\): apply int8 to the float32 model, not after bf16$", "int8")
    int8 = copy.deepcopy(bert[0])
    compress(int8, "int8")
    _refuses(int8, r"^bf16 casts the whole model, but bert\.encoder\.layer\.0\.attention\.self\.query \(of 12 int8 "
                   r"layers\) is int8 and torch's int8 kernels take float32 activations; apply bf16 or int8, not both$",
             "bf16")
    _refuses(int8, r"^bert\.encoder\.layer\.0\.attention\.self\.query is already int8 \(an Int8Linear\)$", "int8")
