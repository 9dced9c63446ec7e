"""The comparison's budgets and accounting: every method lands on the requested budget (counted
by hand), the MPO bond search against brute force, the FALCON allocation's predicted error against
the compressed weights, structured pruning against masking, bad input, and the grid's cache."""
import copy
import itertools

import pytest
import torch
import transformers
from torch import nn

from mpstudy import load_model
from mpstudy.studies.comparison import (COMPARED_METHODS, compress_to_budget, encoder_linear_names, falcon_allocation, pareto_front,
                             linear_weight_counts, mpo_bond_for_budget, prune_ffn_neurons, prune_heads_and_neurons,
                             recovery_task, run_grid)
from mpstudy.factorize.falcon import falcon_fit, falcon_num_params, falcon_to_stack
from mpstudy.factorize.mpo import mpo_num_params
from mpstudy.layers.mpo import mpo_shapes
from mpstudy.methods.fwsvd import FisherImportance
from mpstudy.prune import mask_heads, prunable_modules, select_heads_to_prune
from mpstudy.targets import resolve_targets
from mpstudy.tasks import load_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bert():
    model, tok = load_model("tiny-bert", task="synthetic-cls")
    return model.eval(), tok


@pytest.fixture(scope="module")
def deep_bert():
    """A 4-layer BERT (hidden 64, 4 heads): enough layers for FALCON stacks to save at k >= 1."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                                     intermediate_size=128, num_labels=2)
    return transformers.BertForSequenceClassification(config).eval()


def _batch(seed=0, vocab=100):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (3, 11), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _fisher(model):
    g = torch.Generator().manual_seed(1)
    return FisherImportance({n: torch.rand(model.get_submodule(n).out_features, generator=g) + 0.5
                             for n in encoder_linear_names(model)}, examples=1, batches=1, batch_size=1, task="t")


def _dense_weights(model):
    return sum(model.get_submodule(n).weight.numel() for n in encoder_linear_names(model))


@pytest.mark.parametrize("method", COMPARED_METHODS)
def test_every_method_meets_the_budget(bert, method):
    model = copy.deepcopy(bert[0])
    info = compress_to_budget(model, method, 0.5, fisher=_fisher(model), ae_epochs=1)
    dense = _dense_weights(bert[0])
    counted = info["nonzero"] if method == "magnitude" else info["stored"]
    assert info["dense"] == dense
    assert info["kept"] == pytest.approx(counted / dense)
    assert abs(info["kept"] - 0.5) / 0.5 <= 0.05
    out = model(**_batch(vocab=1000)).logits
    assert out.shape == (3, 2) and torch.isfinite(out).all()


def test_counts_by_hand(bert):
    dense = copy.deepcopy(bert[0])
    names = encoder_linear_names(dense)
    assert linear_weight_counts(dense, names) == {"stored": _dense_weights(dense), "nonzero": _dense_weights(dense)}
    svd = copy.deepcopy(bert[0])
    compress_to_budget(svd, "svd", 0.5)
    by_hand = 0
    for n in names:  # rank floor(0.5 m n / (m + n)), stored r (m + n)
        m, k = bert[0].get_submodule(n).weight.shape
        r = int(0.5 * m * k / (m + k))
        by_hand += r * (m + k)
    assert linear_weight_counts(svd, names)["stored"] == by_hand
    pruned = copy.deepcopy(bert[0])
    compress_to_budget(pruned, "magnitude", 0.25)
    counts = linear_weight_counts(pruned, names)
    assert counts["stored"] == _dense_weights(dense)  # masked weights are stored dense
    assert counts["nonzero"] == pytest.approx(0.25 * _dense_weights(dense), rel=1e-3)


def test_mpo_bond_search_matches_brute_force(bert):
    model = bert[0]
    names = encoder_linear_names(model)
    dims = [mpo_shapes(*model.get_submodule(n).weight.shape) for n in names]
    dense = _dense_weights(model)
    for keep in (0.2, 0.5, 0.8):
        bond, kept = mpo_bond_for_budget(model, keep)
        brute = min(range(1, 300), key=lambda b: (abs(sum(mpo_num_params(r, c, b) for r, c in dims) / dense - keep), b))
        assert bond == brute
        assert kept == pytest.approx(sum(mpo_num_params(r, c, bond) for r, c in dims) / dense)


@pytest.mark.parametrize("keep", [0.3, 0.5])
def test_falcon_allocation_predicts_the_error_and_is_optimal(deep_bert, keep):
    model = copy.deepcopy(deep_bert)
    names = encoder_linear_names(model)
    before = {n: model.get_submodule(n).weight.detach().double().clone() for n in names}
    plan = falcon_allocation(model, keep)
    compress_to_budget(model, "falcon", keep)
    actual = sum(float((before[n] - model.get_submodule(n).to_dense().detach().double()).pow(2).sum()) for n in names)
    assert plan["sq_error"] == pytest.approx(actual, rel=1e-4)  # Eckart-Young tail = measured error
    # brute force with measured errors: fit every type at every k, reconstruct, try every allocation
    stacks = {}
    for t in resolve_targets(deep_bert, "all-linear", module_types=(nn.Linear,)):
        stacks.setdefault(t.role, []).append(deep_bert.get_submodule(t.name).weight.detach().double())
    options = {}
    for role, ws in stacks.items():
        X = torch.stack(ws)
        options[role] = [(falcon_num_params(tuple(X.shape), k), float((X - falcon_to_stack(*falcon_fit(X, k))).pow(2).sum()))
                         for k in range(1, 5) if falcon_num_params(tuple(X.shape), k) < X.numel()]
    dense = _dense_weights(deep_bert)
    feasible = [sum(e for _, e in combo) for combo in itertools.product(*options.values())
                if abs(sum(s for s, _ in combo) - keep * dense) / (keep * dense) <= 0.05]
    assert plan["sq_error"] == pytest.approx(min(feasible), rel=1e-4)
    assert abs(plan["kept"] - keep) / keep <= 0.05


def test_falcon_refuses_an_unreachable_budget(bert):
    with pytest.raises(ValueError, match="falcon cannot keep 0.25"):
        falcon_allocation(bert[0], 0.25)  # 2 layers: k = 1 already keeps more than half


def test_ffn_neuron_pruning_equals_masking(bert):
    model = bert[0]
    layer = model.bert.encoder.layer[0]
    x = torch.randn(2, 5, layer.intermediate.dense.in_features)
    new_in, new_out, kept = prune_ffn_neurons(layer.intermediate.dense, layer.output.dense, 0.25)
    pruned = new_out(layer.intermediate.intermediate_act_fn(new_in(x)))
    mask = torch.zeros(layer.intermediate.dense.out_features)
    mask[kept] = 1
    masked = layer.output.dense(layer.intermediate.intermediate_act_fn(layer.intermediate.dense(x)) * mask)
    assert torch.allclose(pruned, masked, atol=1e-5)
    assert len(kept) == round(0.25 * layer.intermediate.dense.out_features)


def test_heads_and_neurons_equal_masking_the_whole_model(bert):
    pruned = copy.deepcopy(bert[0])
    masked = copy.deepcopy(bert[0])
    info = prune_heads_and_neurons(pruned, 0.5)
    for pm in prunable_modules(masked):
        if pm.kind == "attention":
            mask_heads(pm.module, select_heads_to_prune(pm.module, 0.5))
    for i, layer in enumerate(masked.bert.encoder.layer):
        name = f"bert.encoder.layer.{i}.intermediate.dense"
        kept = torch.zeros(layer.intermediate.dense.out_features, dtype=torch.bool)
        _, _, idx = prune_ffn_neurons(bert[0].bert.encoder.layer[i].intermediate.dense,
                                      bert[0].bert.encoder.layer[i].output.dense, 0.5)
        kept[idx] = True
        with torch.no_grad():
            layer.output.dense.weight[:, ~kept] = 0
        assert info["kept_neurons"][name] == int(kept.sum())
    batch = _batch(vocab=1000)
    assert torch.allclose(pruned(**batch).logits, masked(**batch).logits, atol=1e-5)


@pytest.mark.parametrize("keep", [0, 1, 1.5, -0.2, True, "0.5", None])
def test_bad_keep_is_refused_before_anything_changes(bert, keep):
    model = copy.deepcopy(bert[0])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="keep .*must be a number in \\(0, 1\\)"):
        compress_to_budget(model, "svd", keep)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_unknown_method_and_missing_fisher(bert):
    model = copy.deepcopy(bert[0])
    with pytest.raises(ValueError, match="unknown method 'pca'.*compared methods"):
        compress_to_budget(model, "pca", 0.5)
    with pytest.raises(ValueError, match="fwsvd' needs fisher"):
        compress_to_budget(model, "fwsvd", 0.5)


def test_recovery_task_draws_seeded_subsets():
    task = load_task("synthetic-cls", max_train=100, max_eval=10)
    a, b, c = recovery_task(task, 20, 0), recovery_task(task, 20, 0), recovery_task(task, 20, 1)
    assert len(a.train) == 20 and a.train == b.train and a.train != c.train
    assert a.dev == task.dev
    assert recovery_task(task, None, 0) is task


def _spec(path, **kw):
    spec = {"task": "synthetic-cls", "task_kwargs": {"max_train": 64, "max_eval": 16, "seed": 0}, "baseline": str(path),
            "method": "svd", "keep": 0.5, "seeds": [0], "recovery_rows": 16, "alpha": 0.5, "temperature": 2.0,
            "ae_epochs": 1, "train": {"lr": 1e-3, "epochs": 1, "batch_size": 8, "max_length": 32}, "fisher": None,
            "latency": None}
    return spec | kw


def test_grid_runs_caches_and_resumes(bert, tmp_path, monkeypatch):
    model, tok = bert
    path = tmp_path / "dense"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    specs = [_spec(path), _spec(path, method="heads")]
    first = run_grid(specs, cache_dir=tmp_path, progress=False)
    assert [u["method"] for u in first] == ["svd", "heads"]
    for unit in first:
        assert [r["regime"] for r in unit["runs"]] == ["none", "finetune", "kd"]
        assert all(0 <= r["score"] <= 1 for r in unit["runs"])
    assert len(list((tmp_path / "comparison").glob("*.json"))) == 2

    import mpstudy.studies.comparison as compare

    def fail(spec):
        raise AssertionError("a cached unit ran again")

    monkeypatch.setattr(compare, "run_unit", fail)
    assert run_grid(specs, cache_dir=tmp_path, progress=False) == first
    with pytest.raises(AssertionError, match="ran again"):  # a changed spec is a new unit
        run_grid([_spec(path, keep=0.75)], cache_dir=tmp_path, progress=False)


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_grid_rejects_bad_workers(workers, tmp_path):
    with pytest.raises(ValueError, match="workers must be a positive int"):
        run_grid([], workers=workers, cache_dir=tmp_path)


def test_pareto_front_against_brute_force():
    import pandas as pd

    g = torch.Generator().manual_seed(3)  # few distinct costs and scores: ties on both axes occur
    points = pd.DataFrame({"cost": torch.randint(0, 8, (40,), generator=g).tolist(),
                           "score": torch.rand(40, generator=g).round(decimals=2).tolist()})
    front = pareto_front(points, "cost", "score")
    dominated = [any(o.cost <= p.cost and o.score >= p.score and (o.cost < p.cost or o.score > p.score)
                     for o in points.itertuples()) for p in points.itertuples()]
    undominated = {(p.cost, p.score) for p, d in zip(points.itertuples(), dominated) if not d}
    assert set(zip(front.cost, front.score)) == undominated
    assert list(front.cost) == sorted(front.cost) and list(front.score) == sorted(front.score)
