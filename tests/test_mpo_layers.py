"""MPO layers: counts and error bound under a bond cap, eval cache, the lightweight protocol,
ALBERT-base's "91 % fewer fine-tuned parameters", optimizer groups, dimension squeezing.

Exactness at full bond dimension, the forward against ``to_dense()``, exact counts and save/load
are checked with every other layer in test_layers_common.py.
"""
import pytest
import torch
import transformers
from torch import nn

from mpstudy import (
    TrainConfig,
    compress,
    count_parameters,
    load_model,
    load_task,
)
from mpstudy.factorize import mpo_num_params
from mpstudy.factorize.mpo import mpo_bond_dims
from mpstudy.factorize.shapes import MPOP_MATRIX_SHAPES
from mpstudy.layers import MPOEmbedding, MPOLinear, mpo_layers
from mpstudy.layers.mpo import mpo_shapes
from mpstudy.studies.mpop import (
    cheapest_cut,
    dimension_squeeze,
    mpo_param_groups,
    set_lightweight,
)
from mpstudy.surgery import set_submodule
from mpstudy.targets import resolve_targets


def test_cap_counts_and_error_bound():
    torch.manual_seed(0)
    dense = nn.Linear(64, 64, bias=False)
    rows, cols = mpo_shapes(64, 64)
    assert rows == sorted(rows) and cols == sorted(cols, reverse=True)
    layer = MPOLinear.from_dense(dense, max_bond=4)
    assert max(layer.bond_dims) == 4
    assert layer.num_params() == mpo_num_params(rows, cols, max_bond=4)
    full = MPOLinear.from_dense(dense)
    err = torch.linalg.norm(dense.weight - layer.to_dense())
    bound = full.decompose().truncate(4).error_bound()
    assert err <= bound * (1 + 1e-4)


def test_eval_path_caches_the_dense_weight(monkeypatch):
    import mpstudy.layers.mpo as mpo_module

    layer = MPOLinear.from_dense(nn.Linear(16, 16))
    calls = []
    real = mpo_module.mpo_to_dense
    monkeypatch.setattr(mpo_module, "mpo_to_dense", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(2, 16)
    layer.eval()
    with torch.no_grad():
        outs = [layer(x) for _ in range(3)]
    assert len(calls) == 1 and all(torch.equal(outs[0], o) for o in outs)
    layer.train()
    layer(x), layer(x)
    assert len(calls) == 3  # training rebuilds every forward (gradients flow to the cores)
    layer.eval()
    with torch.no_grad():
        layer(x)
        layer.load_state_dict({k: v + 1 for k, v in layer.state_dict().items()})
        after = layer(x)
    assert not torch.equal(after, outs[0])  # loading weights dropped the stale cache


def test_lightweight_only_auxiliary_tensors_and_non_mpo_params_get_gradients():
    model, tok = load_model("tiny-bert", task="synthetic-cls")
    compress(model, "mpo", targets="all-linear")
    compress(model, "mpo", targets="word_embeddings")
    counts = set_lightweight(model)
    centrals = {id(layer.central_tensor()) for layer in mpo_layers(model).values()}
    adapters = {id(p) for layer in mpo_layers(model).values() for p in layer.adapter_params()}
    batch = tok(["a good film", "bad"], padding=True, return_tensors="pt")
    model.train()
    model(**batch, labels=torch.tensor([1, 0])).loss.backward()
    got_grad = {id(p) for p in model.parameters() if p.grad is not None}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert got_grad == trainable  # nothing outside the trainable set receives a gradient
    assert not centrals & got_grad and adapters <= got_grad
    assert counts["frozen"] == sum(layer.central_tensor().numel() for layer in mpo_layers(model).values())
    groups = mpo_param_groups(model, mpo_lr=1e-5)
    assert groups[-1]["lr"] == 1e-5 and {id(p) for p in groups[-1]["params"]} == adapters - {
        id(layer.bias) for layer in mpo_layers(model).values() if getattr(layer, "bias", None) is not None}
    assert {id(p) for g in groups for p in g["params"]} == trainable
    set_lightweight(model, central_trainable=True)
    assert count_parameters(model)["frozen"] == 0


def test_albert_base_lightweight_trains_about_a_tenth():
    """MPOP's set-up on a random-init albert-base-v2-sized model: word embeddings, Q/K/V/O, FFN and
    pooler in MPO (caps 240 / attention 256 / linear 384, attention output uncapped), central
    tensors frozen: about 1.1M of about 11.7M parameters train ("91 % fewer" in the abstract).

    The layers are built empty with the bond dimensions the caps give (the decomposition itself is
    tested elsewhere): this test is about the structure and the accounting.
    """
    config = transformers.AlbertConfig(vocab_size=30000, embedding_size=128, hidden_size=768, num_attention_heads=12,
                                       intermediate_size=3072, num_labels=2)
    model = transformers.AlbertForSequenceClassification(config)
    dense_total = count_parameters(model)["stored"]
    assert 11_600_000 < dense_total < 11_750_000
    plan = [("word_embeddings", "albert_word_embeddings", 240), ("qkv", "attention", 256),
            ("attention_output", "attention", None), ("ffn_in", "ffn_in", 384), ("ffn_out", "ffn_out", 384),
            ("pooler", "attention", 256)]
    replaced = 0
    for role, shape_key, cap in plan:
        _, rows, cols = MPOP_MATRIX_SHAPES[shape_key]
        for t in resolve_targets(model, role):
            bonds = mpo_bond_dims(rows, cols, cap)
            if isinstance(t.module, nn.Embedding):
                new = MPOEmbedding(t.module.num_embeddings, t.module.embedding_dim, rows, cols, bonds)
            else:
                new = MPOLinear(t.module.in_features, t.module.out_features, rows, cols, bonds)
            set_submodule(model, t.name, new)
            replaced += 1
    assert replaced == 8  # the shared ALBERT layer is decomposed once, not 12 times
    counts = set_lightweight(model)
    # digest 1.3/1.5: aux tensors 155,444 (emb) + 2 x 184,720 (FFN) + 3 x 86,609 (QKV) + 86,609 (O) + 86,609 (pooler)
    aux = 155_444 + 2 * 184_720 + 5 * 86_609
    mpo_biases = 4 * 768 + 3072 + 768 + 768
    assert sum(p.numel() for layer in mpo_layers(model).values() for p in layer.auxiliary_tensors()) == aux
    other = sum(p.numel() for n, p in model.named_parameters() if ".cores." not in n) - mpo_biases
    assert counts["trainable"] == aux + mpo_biases + other
    assert 1_050_000 < counts["trainable"] < 1_200_000
    assert 0.89 < 1 - counts["trainable"] / dense_total < 0.92


def test_albert_shared_layer_is_compressed_once():
    model, _ = load_model("tiny-albert", task="synthetic-cls")
    report = compress(model, "mpo", targets="all-linear")
    assert len(report.modules) == 6


def test_cheapest_cut_and_squeeze_trajectory():
    task = load_task("synthetic-cls", max_train=64, max_eval=32)
    model, tok = load_model("tiny-bert", task=task)
    compress(model, "mpo", targets="ffn")
    cut = cheapest_cut(model, step=2)
    layer = mpo_layers(model)[cut.layer]
    spectrum = layer.decompose().bond_singular_values[cut.bond - 1]
    assert cut.new_dim == cut.old_dim - 2
    assert cut.rel_error == pytest.approx(float(spectrum[cut.new_dim:].norm() / torch.linalg.norm(layer.to_dense().detach())), rel=1e-4)
    before = count_parameters(model)["stored"]
    trajectory = dimension_squeeze(model, tok, task, TrainConfig(lr=1e-3, max_steps=1, batch_size=32, max_length=16, progress=False),
                                   tolerance=1.0, max_cuts=3, step=2, progress=False)
    assert [t["cut"] for t in trajectory] == [0, 1, 2, 3] and all(t["accepted"] for t in trajectory)
    assert trajectory[-1]["stored"] < before
    assert count_parameters(model)["stored"] == trajectory[-1]["stored"]
    with pytest.raises(ValueError, match="needs a model with MPO layers"):
        dimension_squeeze(load_model("tiny-bert", task=task)[0], tok, task, TrainConfig(max_steps=1))


def test_mpop_set_up_and_lora_baseline():
    from mpstudy.lora import apply_lora
    from mpstudy.studies.mpop import mpop_compress, mpop_variant

    model, _ = load_model("tiny-bert", task="synthetic-cls")
    with pytest.raises(ValueError, match=r"unknown MPOP layer group\(s\) \['FFN_1'\]"):
        mpop_compress(model, layers=("FFN_1",))
    reports = mpop_compress(model, layers=("attention", "FFN", "pooler"), attention_cap=4)
    assert [len(r.modules) for r in reports] == [6, 4, 1]
    assert all(max(m["bond_dims"]) <= 4 for m in reports[0].modules)
    groups = mpop_variant(model, "lightweight", mpo_lr=1e-4)
    assert groups[-1]["lr"] == 1e-4 and count_parameters(model)["frozen"] > 0
    with pytest.raises(ValueError, match="variant must be"):
        mpop_variant(model, "half")

    base, _ = load_model("tiny-bert", task="synthetic-cls")
    peft_model = apply_lora(base, rank=2)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "classifier" in n or "pooler" in n for n in trainable)
    # LoRA on query and value of 2 layers: rank 2 x (64 + 64) each, the 64x2+2 classifier, the 64x64+64 pooler
    assert count_parameters(peft_model)["trainable"] == 4 * 2 * 128 + 130 + 64 * 64 + 64
    no_pooler = apply_lora(load_model("tiny-bert", task="synthetic-cls")[0], rank=2, train_pooler=False)
    assert count_parameters(no_pooler)["trainable"] == 4 * 2 * 128 + 130
