"""The training loop: it learns, it is seeded, it keeps the best checkpoint, it trains only what it is told."""
import pytest
import torch

from mpstudy import TrainConfig, evaluate, load_model, load_task, train
from mpstudy.baselines import finetuned_baseline
from mpstudy.train import evaluate_loss, task_evaluation

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


@pytest.mark.parametrize("bad", [dict(lr=0), dict(batch_size=0), dict(warmup_ratio=1.0), dict(max_steps=0), dict(device="tpu"),
                                 dict(patience=0), dict(patience=True), dict(select_metric="loss"),
                                 dict(higher_is_better=False), dict(precision="fp16"), dict(bucket_batches=0),
                                 dict(bucket_batches=True)])
def test_bad_config(bad):
    with pytest.raises(ValueError, match=list(bad)[0]):
        TrainConfig(**bad)


def _scripted(scores: dict[int, dict[str, float]], states: dict[int, dict]):
    """An evaluation callback returning fixed metrics per step and keeping the model's state at each."""

    def run(model, step):
        states[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return dict(scores[step])

    return run


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_early_stopping_after_patience_evaluations_without_improvement(task):
    """Scores 0.1, 0.3, 0.5, 0.4, 0.5 (a tie is no improvement), then higher ones that must never
    be seen: with patience 2 the run stops at step 5 and ends in its step-3 state."""
    scores = {s: {"score": v} for s, v in enumerate([0.1, 0.3, 0.5, 0.4, 0.5, 0.9, 0.95, 0.99, 1.0], start=1)}
    config = TrainConfig(**FAST, max_steps=9, eval_every=1, select_metric="score", higher_is_better=True, patience=2)
    model, tok = load_model("tiny-bert", task=task)
    states: dict[int, dict] = {}
    result = train(model, tok, task, config, eval_fn=_scripted(scores, states))
    assert result.stopped_early and result.steps == 5 and sorted(states) == [1, 2, 3, 4, 5]
    assert result.best_step == 3 and result.best_metrics == {"score": 0.5}
    assert [h["step"] for h in result.history] == [1, 2, 3, 4, 5] and result.history[3]["dev_score"] == 0.4
    assert _same(model.state_dict(), states[3]) and not _same(model.state_dict(), states[5])
    # without patience the same scores run the whole budget and keep the last, best, state
    model, tok = load_model("tiny-bert", task=task)
    result = train(model, tok, task, TrainConfig(**{**vars(config), "patience": None}), eval_fn=_scripted(scores, states))
    assert not result.stopped_early and result.steps == 9 and result.best_step == 9


def test_evaluation_at_start_can_be_the_best(task):
    """With eval_at_start the untrained model (step 0) is a candidate: when nothing beats it the
    run stops after `patience` evaluations and ends in the initial weights."""
    model, tok = load_model("tiny-bert", task=task)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    scores = {s: {"loss": v} for s, v in enumerate([1.0, 1.5, 1.2, 0.1, 0.1])}
    config = TrainConfig(**FAST, max_steps=4, eval_every=1, select_metric="loss", higher_is_better=False, patience=2,
                         eval_at_start=True)
    result = train(model, tok, task, config, eval_fn=_scripted(scores, {}))
    assert result.stopped_early and result.steps == 2 and result.best_step == 0
    assert result.history[0] == {"step": 0, "dev_loss": 1.0, "elapsed_s": result.history[0]["elapsed_s"],
                                 "train_s": result.history[0]["train_s"]}
    assert _same(model.state_dict(), initial)


def test_selection_by_validation_loss_lower_is_better(task):
    """Selecting on a loss takes its minimum, not the maximum nor the best accuracy: scripted
    losses/accuracies where the three disagree."""
    scores = {1: {"accuracy": 0.9, "loss": 0.8}, 2: {"accuracy": 0.6, "loss": 0.3},
              3: {"accuracy": 0.7, "loss": 0.5}, 4: {"accuracy": 0.8, "loss": 0.9}}
    states: dict[int, dict] = {}
    model, tok = load_model("tiny-bert", task=task)
    by_loss = TrainConfig(**FAST, max_steps=4, eval_every=1, select_metric="loss", higher_is_better=False)
    result = train(model, tok, task, by_loss, eval_fn=_scripted(scores, states))
    assert result.best_step == 2 and result.best_metrics == scores[2] and _same(model.state_dict(), states[2])
    model, tok = load_model("tiny-bert", task=task)
    assert train(model, tok, task, TrainConfig(**FAST, max_steps=4, eval_every=1), eval_fn=_scripted(scores, {})).best_step == 1
    # the real dev loss: the model ends at the evaluation with the lowest one
    model, tok = load_model("tiny-bert", task=task)
    config = TrainConfig(**{**FAST, "lr": 3e-3}, max_steps=12, eval_every=2, select_metric="loss", higher_is_better=False)
    result = train(model, tok, task, config, eval_fn=task_evaluation(tok, task, config, loss=True))
    losses = {h["step"]: h["dev_loss"] for h in result.history if "dev_loss" in h}
    assert set(losses) == {2, 4, 6, 8, 10, 12} and {"accuracy", "loss"} <= set(result.best_metrics)
    assert result.best_step == min(losses, key=losses.get)
    assert evaluate_loss(model, tok, task, max_length=32) == pytest.approx(losses[result.best_step], rel=1e-5)
    with pytest.raises(ValueError, match="select_metric 'f1' is not among"):
        train(model, tok, task, TrainConfig(**FAST, max_steps=1, select_metric="f1", higher_is_better=True))


def test_new_config_fields_keep_old_cache_keys():
    """Fields added to TrainConfig leave the cache key of a run that does not use them unchanged."""
    from dataclasses import asdict

    from mpstudy.train import bf16_supported

    config = TrainConfig(**FAST, max_steps=2)
    later = ("select_metric", "higher_is_better", "patience", "eval_at_start", "precision", "bucket_batches")
    old_fields = {k: v for k, v in asdict(config).items() if k not in ("progress", "device", *later)}
    assert config.key_fields() == old_fields
    assert TrainConfig(**FAST, max_steps=2, patience=3).key_fields() == {**old_fields, "patience": 3}
    assert TrainConfig(**FAST, max_steps=2, precision="bf16").key_fields() == {**old_fields, "precision": "bf16"}
    assert TrainConfig(**FAST, max_steps=2, bucket_batches=4).key_fields() == {**old_fields, "bucket_batches": 4}
    # "auto" is keyed by what it resolves to on the config's device: the same run, the same key
    auto = TrainConfig(**FAST, max_steps=2, precision="auto", device="cpu").key_fields()
    assert auto == ({**old_fields, "precision": "bf16"} if bf16_supported("cpu") else old_fields)


def test_baseline_is_cached(task, tmp_path):
    config = TrainConfig(**FAST, max_steps=2)
    model, tok, info = finetuned_baseline("tiny-bert", task, config, cache_dir=tmp_path)
    assert info["cached"] is False
    again, _, info2 = finetuned_baseline("tiny-bert", task, config, cache_dir=tmp_path)
    assert info2["cached"] is True and info2["cache_key"] == info["cache_key"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    other = finetuned_baseline("tiny-bert", task, TrainConfig(**FAST, max_steps=3), cache_dir=tmp_path)[2]
    assert other["cache_key"] != info["cache_key"]
