"""Every registered compressed layer class, checked the same way (tltorch's test against ``nn.Linear``,
PEFT's common tester).

One table, ``ROWS``, holds at least one row per class in ``mpstudy.layers.LAYER_CLASSES``
(``test_every_layer_class_has_a_row`` fails when a registered class has none: adding a layer
means adding its row here). A row builds its layers from the dense modules of a minimal BERT
(``tiny_model``: hidden 12, FFN 8, 2 layers, vocabulary 11) through the class's own builder
(``from_dense`` for one matrix, the group builder for layers that share factors) and says:

* ``counts``: the exact ``num_params()`` of each member, written out by hand from the shapes.
  In a group the first member (the *owner*) counts the shared tensors, the others only their
  own, so the group's total counts every stored tensor once;
* ``lossless``: how to get the original weight back from ``to_dense()``. Either a budget at
  which the format holds any weight (full rank, full bond dimension, full ``k``), or ``REFIT``:
  methods that take a kept fraction (< 1) cannot hold an arbitrary weight, so they are
  checked on a weight the format already holds at that budget (the layer's own ``to_dense()``),
  which they must reproduce; or a string saying why there is no such setting.

The checks, for every row: forward equals ``F.linear(x, to_dense(), bias)`` (an embedding:
``F.embedding(ids, to_dense())``) in training and evaluation mode; the counts; a state dict
round trip ``cls(**init_kwargs())`` + ``load_state_dict`` that reproduces the layer exactly; the
lossless setting; ``save_compressed`` / ``load_compressed`` of the model with the layers in place,
bit for bit (the group reconnected to one shared module). Magnitude pruning stores its dense
weight (``num_params()``); its budget, the non-zeros, is checked through ``mpstudy.count_parameters``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
import transformers
from torch import nn

import mpstudy  # noqa: F401 - imports every module that registers a layer class
from mpstudy import count_parameters, load_compressed, save_compressed
from mpstudy.layers import (
    LAYER_CLASSES,
    AutoencoderLayer,
    FalconLayer,
    KroneckerLayer,
    LowRankLinear,
    MagnitudePrunedLayer,
    MPOEmbedding,
    MPOLinear,
    RowBasisLowRank,
    TuckerRowsLayer,
    TuckerStackLayer,
)
from mpstudy.layers.autoencoder import autoencoder_group
from mpstudy.layers.decoded import GroupMemberLayer
from mpstudy.layers.kronecker import kronecker_group
from mpstudy.layers.lowrank_rows import svd_rows_group
from mpstudy.layers.magnitude import prune_group
from mpstudy.layers.stacked import falcon_group, tucker_stack_group
from mpstudy.layers.tucker_rows import tucker_group
from mpstudy.targets import set_submodule

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The minimal model's shapes: every FFN-in weight is (FFN, HIDDEN) = (8, 12), the word embedding
# (VOCAB, HIDDEN) = (11, 12), every query/key/value (12, 12).
HIDDEN, FFN, VOCAB, LAYERS = 12, 8, 11, 2
FFN_IN = [f"bert.encoder.layer.{l}.intermediate.dense" for l in range(LAYERS)]
WORD = ["bert.embeddings.word_embeddings"]
QKV = [f"bert.encoder.layer.{l}.attention.self.{role}" for role in ("query", "key", "value") for l in range(LAYERS)]

#: ``lossless`` value of rows whose method takes a kept fraction: refit the layer's own reconstruction
REFIT = "refit"


def tiny_model(dtype: torch.dtype = torch.float32) -> nn.Module:
    """A 2-layer BERT classifier with every parameter drawn from N(0, 1) (nonzero biases, so a
    dropped or swapped bias shows), in eval mode."""
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                     num_attention_heads=2, intermediate_size=FFN, max_position_embeddings=16,
                                     num_labels=2)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model.to(dtype).eval()


Build = Callable[[list[nn.Module]], list[nn.Module]]


def each(build_one: Callable[[nn.Module], nn.Module]) -> Build:
    """A builder of one layer per module (classes that share nothing)."""
    return lambda modules: [build_one(m) for m in modules]


@dataclass
class Row:
    """One way to build a layer class, and what it must satisfy (see the module docstring)."""

    id: str
    cls: type
    targets: list[str]
    build: Build
    counts: Callable[[list[nn.Module]], list[int]]
    lossless: Build | str
    #: magnitude pruning: the non-zero weights plus bias entries of the whole group (its budget;
    #: ``num_params()`` is the stored count, dense weight and bias, the mask being a buffer)
    nonzero: int | None = None
    #: False: the target Linears lose their bias first (T5, Marian's layers have none)
    bias: bool = True


def _structure(cls: type, counts: list[int], **expected) -> Callable[[list[nn.Module]], list[int]]:
    """``counts`` for layers whose builder chooses a structure from the budget: the structure derived
    by hand (``expected`` attribute values) is checked first, so the counts are of a known shape."""

    def check(layers):
        for layer in layers:
            assert {k: getattr(layer, k) for k in expected} == expected, f"{cls.__name__} structure"
        return counts

    return check


def _tucker_rows_counts(layers):
    """The ranks follow the tensor's spectra (the smallest error bound within 5 % of the budget), so they
    are read off the layer; the count is then, from the shapes:"""
    # owner: first (blocks, r1) + core (r1, r2, r3) + second (block, r2) + third (cols, r3) + bias; other: first + bias
    l0 = layers[0]
    r1, r2, r3 = l0.ranks
    own = [math.ceil(l.rows / l.block) * r1 + l.rows for l in layers]
    return [own[0] + r1 * r2 * r3 + l0.block * r2 + l0.cols * r3, *own[1:]]


# Budgets: the methods driven by a kept fraction take keep = stored numbers / dense entries. Two
# (8, 12) FFN weights hold 192 entries; the word embedding 132.
ROWS: list[Row] = [
    Row("lowrank", LowRankLinear, FFN_IN, each(lambda m: LowRankLinear.from_dense(m, rank=2)),
        counts=lambda _: [2 * (12 + 8) + 8] * 2,  # A (8, 2) + B (2, 12) + bias
        lossless=each(lambda m: LowRankLinear.from_dense(m, rank=8, allow_no_saving=True))),
    Row("lowrank-nobias", LowRankLinear, FFN_IN, each(lambda m: LowRankLinear.from_dense(m, rank=2)),
        counts=lambda _: [2 * (12 + 8)] * 2,
        lossless=each(lambda m: LowRankLinear.from_dense(m, rank=8, allow_no_saving=True)), bias=False),
    Row("mpo-linear", MPOLinear, FFN_IN,
        # 12 columns padded to 2 * 2 * 4 = 16; full bonds [1, min(4, 32), min(16, 8), 1] = [1, 4, 8, 1], capped
        # at 3: cores (1,2,2,3) (3,2,2,3) (3,2,4,1) + bias
        each(lambda m: MPOLinear.from_dense(m, max_bond=3, row_dims=[2, 2, 2], col_dims=[2, 2, 4])),
        counts=lambda _: [1 * 2 * 2 * 3 + 3 * 2 * 2 * 3 + 3 * 2 * 4 * 1 + 8] * 2,
        lossless=each(lambda m: MPOLinear.from_dense(m, row_dims=[2, 2, 2], col_dims=[2, 2, 4]))),
    Row("mpo-linear-nobias", MPOLinear, FFN_IN,
        each(lambda m: MPOLinear.from_dense(m, max_bond=3, row_dims=[2, 2, 2], col_dims=[2, 2, 4])),
        counts=lambda _: [1 * 2 * 2 * 3 + 3 * 2 * 2 * 3 + 3 * 2 * 4 * 1] * 2,
        lossless=each(lambda m: MPOLinear.from_dense(m, row_dims=[2, 2, 2], col_dims=[2, 2, 4])), bias=False),
    Row("mpo-embedding", MPOEmbedding, WORD,
        # 11 rows padded to 3 * 4 = 12; full bond min(9, 16) = 9, capped at 3: cores (1,3,3,3) (3,4,4,1)
        each(lambda m: MPOEmbedding.from_dense(m, max_bond=3, row_dims=[3, 4], col_dims=[3, 4])),
        counts=lambda _: [1 * 3 * 3 * 3 + 3 * 4 * 4 * 1],
        lossless=each(lambda m: MPOEmbedding.from_dense(m, row_dims=[3, 4], col_dims=[3, 4]))),
    Row("magnitude-linear", MagnitudePrunedLayer, FFN_IN, lambda ms: prune_group(ms, keep=0.25)[0],
        counts=lambda _: [8 * 12 + 8] * 2, lossless=REFIT,  # the dense weight and the bias stay stored
        nonzero=round(0.25 * 2 * 96) + 2 * 8),  # 48 weights kept over the pair + 16 bias entries
    Row("magnitude-embedding", MagnitudePrunedLayer, WORD, lambda ms: prune_group(ms, keep=0.25)[0],
        counts=lambda _: [11 * 12], lossless=REFIT, nonzero=round(0.25 * 132)),
    Row("rowbasis-linear-pair", RowBasisLowRank, FFN_IN,
        # rank 2 of the (16, 12) stack stores 2 * (16 + 12) = 56 numbers
        lambda ms: svd_rows_group(ms, keep=56 / 192, shared_key="table:rowbasis")[0],
        counts=lambda _: [8 * 2 + 2 * 12 + 8, 8 * 2 + 8],  # owner: coeffs (8, 2) + basis (2, 12) + bias; other: coeffs + bias
        lossless=REFIT),
    Row("rowbasis-embedding", RowBasisLowRank, WORD,
        lambda ms: svd_rows_group(ms, keep=46 / 132, shared_key="table:rowbasis-emb")[0],
        counts=lambda _: [11 * 2 + 2 * 12], lossless=REFIT),  # rank 2: coeffs (11, 2) + basis (2, 12)
    Row("kronecker-pair", KroneckerLayer, FFN_IN,
        # the plan for 96 numbers: splits nearest sqrt (8 = 2*4 or 4*2, 12 = 3*4 or 4*3), then the least miss:
        # 3 terms of (4x3) ⊗ (2x4) store 3 * (2*4*3 + 2*4) = 96 exactly (the other splits miss by >= 12 %)
        lambda ms: kronecker_group(ms, keep=0.5, shared_key="table:kronecker")[0],
        counts=_structure(KroneckerLayer, rank=3, p=4, q=3, s=2, t=4,  # owner: outer (3, 4, 3) + inner (3, 2, 4) + bias
                          counts=[3 * 4 * 3 + 3 * 2 * 4 + 8, 3 * 4 * 3 + 8]),
        lossless=REFIT),
    Row("tucker-rows-pair", TuckerRowsLayer, FFN_IN,
        lambda ms: tucker_group(ms, keep=0.5, shared_key="table:tucker-rows", block=4)[0],
        counts=_tucker_rows_counts, lossless=REFIT),
    Row("autoencoder-pair", AutoencoderLayer, FFN_IN,
        # 16 rows at keep 0.5 (96 numbers): latent 1, decoder 1 -> 2 -> 3 -> 12 (93 numbers); owner: latents (8, 1) +
        # norms (8) + decoder (1*2 + 2) + (2*3 + 3) + (3*12 + 12) + bias; other: latents + norms + bias
        lambda ms: autoencoder_group(ms, keep=0.5, shared_key="table:ae", epochs=1)[0],
        counts=_structure(AutoencoderLayer, latent=1, h1=2, h2=3,
                          counts=[8 * 1 + 8 + (1 * 2 + 2) + (2 * 3 + 3) + (3 * 12 + 12) + 8, 8 * 1 + 8 + 8]),
        lossless="a trained decoder's output: no budget rebuilds arbitrary rows (only the row norms are stored exactly)"),
    Row("autoencoder-embedding", AutoencoderLayer, WORD,
        # 11 rows at keep 0.5 (66 numbers): latent 1, decoder 1 -> 2 -> 2 -> 12 (68 numbers), no bias
        lambda ms: autoencoder_group(ms, keep=0.5, shared_key="table:ae-emb", epochs=1)[0],
        counts=_structure(AutoencoderLayer, latent=1, h1=2, h2=2,
                          counts=[11 * 1 + 11 + (1 * 2 + 2) + (2 * 2 + 2) + (2 * 12 + 12)]),
        lossless="a trained decoder's output: no budget rebuilds arbitrary rows (only the row norms are stored exactly)"),
    Row("tucker-stack-pair", TuckerStackLayer, FFN_IN,
        lambda ms: tucker_stack_group(ms, [[0], [1]], [2], ranks=[2, 4, 5], shared_key="table:tstack")[0],
        # owner: core (2, 4, 5) + factors (2, 2) (8, 4) (12, 5) + bias; other: bias only
        counts=lambda _: [2 * 4 * 5 + 2 * 2 + 8 * 4 + 12 * 5 + 8, 8],
        lossless=lambda ms: tucker_stack_group(ms, [[0], [1]], [2], ranks=[2, 8, 12], shared_key="table:tstack-full")[0]),
    Row("tucker-stack-4d", TuckerStackLayer, QKV,
        # QKV is ordered (role, layer): position [role, layer] in a (3, 2, 12, 12) tensor
        lambda ms: tucker_stack_group(ms, [[t, l] for t in range(3) for l in range(2)], [3, 2], ranks=[2, 2, 4, 4],
                                      shared_key="table:t4d")[0],
        counts=lambda _: [2 * 2 * 4 * 4 + 3 * 2 + 2 * 2 + 12 * 4 + 12 * 4 + 12] + [12] * 5,
        lossless=lambda ms: tucker_stack_group(ms, [[t, l] for t in range(3) for l in range(2)], [3, 2],
                                               ranks=[3, 2, 12, 12], shared_key="table:t4d-full")[0]),
    Row("falcon-rows-pair", FalconLayer, FFN_IN,
        lambda ms: falcon_group(ms, "rows", k=1, shared_key="table:falcon-rows")[0],
        counts=lambda _: [8 * 1 + 8 * 1 * 12 + 8, 8 * 1 + 8],  # owner: scale (8, 1) + basis (8, 1, 12) + bias
        lossless=lambda ms: falcon_group(ms, "rows", k=2, shared_key="table:falcon-rows-full")[0]),
    Row("falcon-matrix-pair", FalconLayer, FFN_IN,
        lambda ms: falcon_group(ms, "matrix", k=1, shared_key="table:falcon-matrix")[0],
        counts=lambda _: [1 + 1 * 8 * 12 + 8, 1 + 8],  # owner: scale (1,) + basis (1, 8, 12) + bias
        lossless=lambda ms: falcon_group(ms, "matrix", k=2, shared_key="table:falcon-matrix-full")[0]),
]


def _build(row: Row, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, list[nn.Module], list[nn.Module]]:
    """``(model, dense modules, layers)``: the row's layers built from the minimal model's modules."""
    model = tiny_model(dtype)
    dense = [model.get_submodule(name) for name in row.targets]
    if not row.bias:
        for module in dense:
            module.bias = None
    with torch.no_grad():  # as compress() builds them
        layers = row.build(dense)
    assert [type(l) for l in layers] == [row.cls] * len(dense)
    return model, dense, layers


def _reference(layer: nn.Module, dense: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the layer must compute: the dense op with ``to_dense()`` in place of the weight."""
    if isinstance(dense, nn.Embedding):
        return F.embedding(x, layer.to_dense(), dense.padding_idx)
    return F.linear(x, layer.to_dense(), dense.bias)


def _input(dense: nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if isinstance(dense, nn.Embedding):
        return torch.tensor([[0, 3, 10, 0], [5, 5, 1, 7]])  # the padding row and the last row included
    return torch.randn(3, 5, dense.in_features, generator=g)


def test_every_layer_class_has_a_row():
    missing = sorted(name for name, cls in LAYER_CLASSES.items() if cls not in {row.cls for row in ROWS})
    assert not missing, f"registered layer classes without a row in ROWS ({__file__}): {missing}"


def _rows():
    return [pytest.param(row, id=row.id) for row in ROWS]


@pytest.mark.parametrize("row", _rows())
def test_forward_equals_the_dense_op_with_to_dense(row):
    _, dense, layers = _build(row)
    for module, layer in zip(dense, layers):
        assert layer.to_dense().shape == module.weight.shape
        x = _input(module)
        for training in (True, False):  # decoding layers take another path (a cache, looked-up rows) in eval
            layer.train(training)
            with torch.set_grad_enabled(training):
                torch.testing.assert_close(layer(x), _reference(layer, module, x), rtol=1e-5, atol=1e-5)


#: bf16 tolerance, normwise: ``||y_bf16 - y_fp32|| / ||y_fp32||``. bf16 keeps 8 significant bits, so one
#: rounding has a relative error of at most u = 2^-8 (0.0039). A layer's forward under autocast rounds the
#: input, each factor and each intermediate product to bf16 (at most ~5 roundings along its chain; products
#: accumulate in fp32) and the output once more; with errors of random sign these add in quadrature to
#: about sqrt(5) u = 2.2 u normwise (measured here: 0.6 u to 1.4 u). 4 u leaves room for that and stays two
#: orders of magnitude below what a wrong path gives (a dropped bias or factor: errors of order 1).
BF16_RTOL = 4 * 2.0**-8


@pytest.mark.parametrize("row", _rows())
def test_forward_and_backward_under_bf16_autocast(row):
    """The layers train and evaluate under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (the
    ``precision="bf16"`` of :func:`mpstudy.train`): the forward is the fp32 forward within bf16's
    rounding, and a backward gives every parameter a finite gradient in the parameter's own fp32."""
    _, dense, layers = _build(row)
    for module, layer in zip(dense, layers):
        x = _input(module)
        for training in (True, False):
            layer.train(training)
            with torch.no_grad():
                exact = layer(x)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    low = layer(x)
            error = float((low.float() - exact).norm() / exact.norm())
            assert error <= BF16_RTOL, f"{row.id} (training={training}): relative error {error:.2e} > {BF16_RTOL:.2e}"
        # evaluation under autocast first, then in fp32: a weight cached in the first call stays fp32
        layer.train()
        layer.eval()
        with torch.no_grad():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                layer(x)
            after = layer(x)
        assert after.dtype == exact.dtype and torch.allclose(after, exact, rtol=1e-5, atol=1e-6), \
            f"{row.id}: an fp32 forward after a bf16 one differs (a bf16 cache left behind)"
    params = list({id(p): p for layer in layers for p in layer.parameters() if p.requires_grad}.values())
    for layer in layers:
        layer.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = sum(layer(_input(module)).float().square().mean() for module, layer in zip(dense, layers))
    loss.backward()
    assert params and all(p.grad is not None for p in params), f"{row.id}: a parameter got no gradient"
    assert all(p.grad.dtype == p.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in params)


@pytest.mark.parametrize("row", _rows())
def test_num_params_is_the_count_by_hand(row):
    _, _, layers = _build(row)
    expected = row.counts(layers)
    assert [l.num_params() for l in layers] == expected
    # and the hand count is what is really stored: every parameter of the group once
    stored = {id(p): p.numel() for l in layers for p in l.parameters()}
    assert sum(stored.values()) == sum(expected)


@pytest.mark.parametrize("row", [r for r in _rows() if r.values[0].nonzero is not None])
def test_nonzero_count_is_the_pruning_budget(row):
    """Pruning's budget is its non-zeros, read by the one accounting through the mask."""
    _, _, layers = _build(row)
    assert count_parameters(nn.ModuleList(layers))["nonzero"] == row.nonzero


@pytest.mark.parametrize("row", _rows())
def test_state_dict_round_trip_rebuilds_the_layer(row):
    """``cls(**init_kwargs())`` + ``load_state_dict`` (what load_compressed does), members in group order."""
    _, dense, layers = _build(row)
    rebuilt = [type(l)(**l.init_kwargs()) for l in layers]
    for new, old in zip(rebuilt, layers):
        new.load_state_dict(old.state_dict())  # strict: the same keys and shapes
        new.eval(), old.eval()
    if isinstance(layers[0], GroupMemberLayer):
        assert all(new.shared_module is rebuilt[0].shared_module for new in rebuilt)
    for module, new, old in zip(dense, rebuilt, layers):
        assert torch.equal(new.to_dense(), old.to_dense())
        x = _input(module)
        with torch.no_grad():
            assert torch.equal(new(x), old(x))


def _lossless_rows():
    out = []
    for row in ROWS:
        marks = [pytest.mark.skip(reason=f"{row.cls.__name__} has no lossless setting: {row.lossless}")] \
            if isinstance(row.lossless, str) and row.lossless != REFIT else []
        out.append(pytest.param(row, id=row.id, marks=marks))
    return out


@pytest.mark.parametrize("row", _lossless_rows())
def test_to_dense_is_the_original_at_a_lossless_budget(row):
    _, dense, layers = _build(row, torch.float64)
    if row.lossless == REFIT:  # the weights the format holds at this budget must come back exactly
        with torch.no_grad():
            for module, layer in zip(dense, layers):
                module.weight.copy_(layer.to_dense())
        build = row.build
    else:
        build = row.lossless
    with torch.no_grad():
        exact = build(dense)
    for module, layer in zip(dense, exact):
        torch.testing.assert_close(layer.to_dense(), module.weight, rtol=0, atol=1e-9)


@pytest.mark.parametrize("row", _rows())
def test_save_load_round_trip_is_bit_for_bit(tmp_path, row):
    model, _, layers = _build(row)
    for name, layer in zip(row.targets, layers):
        set_submodule(model, name, layer)
    model.eval()
    batch = {"input_ids": torch.tensor([[2, 3, 10, 4, 0, 0], [5, 5, 1, 7, 9, 6]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])}
    with torch.no_grad():
        expected = model(**batch).logits
    save_compressed(model, tmp_path / "m")
    reloaded = load_compressed(tmp_path / "m")
    assert [type(reloaded.get_submodule(n)) for n in row.targets] == [row.cls] * len(row.targets)
    if isinstance(layers[0], GroupMemberLayer):  # the reloaded group shares one module again
        shared = {id(reloaded.get_submodule(n).shared_module) for n in row.targets}
        assert len(shared) == 1
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, expected)
