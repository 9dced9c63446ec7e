"""The training loop: it learns, it is seeded, it keeps the best checkpoint, it trains only what it is told."""
import pytest
import torch

from mpstudy import TrainConfig, evaluate, load_model, load_task, train
from mpstudy.baselines import finetuned_baseline

FAST = dict(lr=1e-3, epochs=2, batch_size=32, max_length=32, progress=False)


@pytest.fixture(scope="module")
def task():
    return load_task("synthetic-cls", max_train=256, max_eval=64)


def test_learns_the_synthetic_task(task):
    model, tok = load_model("tiny-bert", task=task)
    before = evaluate(model, tok, task)["accuracy"]
    # a random-init model needs ~40 steps to break the symmetry of this task
    result = train(model, tok, task, TrainConfig(**{**FAST, "epochs": 8}, eval_every=16))
    assert result.steps == 64  # 256 rows / 32 per batch * 8 epochs
    assert result.best_metrics["accuracy"] > max(0.8, before)
    assert [h["step"] for h in result.history if "dev_accuracy" in h] == [16, 32, 48, 64]
    # the model ends at its best checkpoint: re-evaluating gives the best score
    assert evaluate(model, tok, task)["accuracy"] == result.best_metrics["accuracy"]
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-8:]) < sum(losses[:8])


def test_same_seed_same_run_different_seed_different_run(task):
    runs = []
    for seed in (0, 0, 1):
        model, tok = load_model("tiny-bert", task=task, seed=seed)
        train(model, tok, task, TrainConfig(**FAST, max_steps=3, seed=seed))
        runs.append(model.classifier.weight.detach().clone())
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_only_trainable_parameters_change(task):
    model, tok = load_model("tiny-bert", task=task)
    for p in model.bert.parameters():
        p.requires_grad_(False)
    frozen = {n: p.clone() for n, p in model.bert.named_parameters()}
    head = model.classifier.weight.detach().clone()
    train(model, tok, task, TrainConfig(**FAST, max_steps=3))
    assert all(torch.equal(frozen[n], p) for n, p in model.bert.named_parameters())
    assert not torch.equal(head, model.classifier.weight)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        train(model, tok, task, TrainConfig(**FAST, max_steps=1))


def test_custom_objective_and_param_groups(task):
    """Later methods plug in their own loss and learning-rate groups without copying the loop."""
    model, tok = load_model("tiny-bert", task=task)
    seen = []

    def objective(model, batch, indices):
        seen.extend(indices)
        loss = model(**batch).loss * 0.5
        return loss, {"loss": loss.item(), "half": True}

    groups = [{"params": list(model.classifier.parameters()), "lr": 1e-2},
              {"params": [p for n, p in model.named_parameters() if not n.startswith("classifier")], "lr": 1e-4}]
    result = train(model, tok, task, TrainConfig(**FAST, max_steps=8), objective=objective, param_groups=groups)
    assert sorted(seen) == list(range(len(task.train)))  # 8 steps x 32 = one shuffled epoch, indices aligned
    assert seen != sorted(seen)
    assert result.history[0]["half"] is True


def test_seq2seq_task_trains_and_reports_bleu():
    task = load_task("synthetic-seq2seq", max_train=64, max_eval=8)
    model, tok = load_model("tiny-t5", task=task)
    result = train(model, tok, task, TrainConfig(lr=3e-3, max_steps=2, batch_size=32, max_length=24, max_new_tokens=6, progress=False))
    assert set(result.best_metrics) == {"bleu"} and 0 <= result.best_metrics["bleu"] <= 100


@pytest.mark.parametrize("bad", [dict(lr=0), dict(batch_size=0), dict(warmup_ratio=1.0), dict(max_steps=0), dict(device="tpu")])
def test_bad_config(bad):
    with pytest.raises(ValueError, match=list(bad)[0]):
        TrainConfig(**bad)


def test_baseline_is_cached(task, tmp_path):
    config = TrainConfig(**FAST, max_steps=2)
    model, tok, info = finetuned_baseline("tiny-bert", task, config, cache_dir=tmp_path)
    assert info["cached"] is False
    again, _, info2 = finetuned_baseline("tiny-bert", task, config, cache_dir=tmp_path)
    assert info2["cached"] is True and info2["cache_key"] == info["cache_key"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    other = finetuned_baseline("tiny-bert", task, TrainConfig(**FAST, max_steps=3), cache_dir=tmp_path)[2]
    assert other["cache_key"] != info["cache_key"]
