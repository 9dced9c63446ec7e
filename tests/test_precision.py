"""Mixed precision in the loop and in evaluation: bf16 autocast over fp32 master weights, per call.

``precision="bf16"`` must (1) run the objective's forward under bf16 autocast and nothing else of the
loop, (2) keep the weights, their gradients and the optimizer's state in fp32, (3) leave no autocast
behind, (4) be chosen per call (fp32 and bf16 runs alternate in one process), and (5) give the same
predictions as fp32 up to bf16 rounding. ``"auto"`` is bf16 exactly where the device has native bf16.
"""
import pytest
import torch

from mpstudy import TrainConfig, evaluate, load_model, load_task, train
from mpstudy.train import (
    TaskLoss,
    bf16_supported,
    evaluate_loss,
    precision_context,
    predict,
    resolve_precision,
    task_evaluation,
)

FAST = dict(lr=1e-3, batch_size=32, max_length=32, progress=False, device="cpu")


@pytest.fixture(scope="module")
def task():
    return load_task("synthetic-cls", max_train=256, max_eval=64)


class Spy(TaskLoss):
    """The task loss, recording the autocast state and the logits' dtype at every call."""

    def __init__(self):
        self.seen: list[tuple[bool, torch.dtype]] = []

    def __call__(self, model, batch, indices):
        out = model(**batch)
        self.seen.append((torch.is_autocast_enabled("cpu"), out.logits.dtype))
        return out.loss, {"loss": out.loss.item()}


def test_resolve_precision():
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"  # honoured on any CPU (emulated where not native)
    assert resolve_precision("auto", "cpu") == ("bf16" if bf16_supported("cpu") else "fp32")
    with pytest.raises(ValueError, match="precision must be one of.*'fp16'"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="half")


def test_auto_follows_the_cpu_probe(monkeypatch):
    """"auto" is bf16 only where torch's cpuinfo reports native bf16 (AVX512-BF16 or AMX)."""
    for name, value in (("_is_avx512_bf16_supported", False), ("_is_amx_tile_supported", False)):
        monkeypatch.setattr(torch.cpu, name, lambda v=value: v, raising=False)
    assert not bf16_supported("cpu") and resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert bf16_supported("cpu") and resolve_precision("auto", "cpu") == "bf16"


def test_precision_context_is_autocast_only_for_bf16():
    with precision_context("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with precision_context("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")


def test_bf16_training_keeps_fp32_master_weights(task):
    """The objective runs under bf16 autocast (bf16 logits); weights and gradients stay fp32 and move;
    nothing outside the objective is autocast."""
    model, tok = load_model("tiny-bert", task=task)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads: list[torch.dtype] = []
    for p in model.parameters():
        p.register_hook(lambda g: grads.append(g.dtype))
    spy = Spy()
    train(model, tok, task, TrainConfig(**FAST, max_steps=3, precision="bf16"), objective=spy)
    assert spy.seen == [(True, torch.bfloat16)] * 3
    assert not torch.is_autocast_enabled("cpu")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert grads and set(grads) == {torch.float32}
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) > 10


def test_precision_is_chosen_per_run_in_one_process(task):
    """fp32, bf16 and fp32 again in one process, each as asked (accelerate would pin one per process)."""
    for precision, expected in (("fp32", (False, torch.float32)), ("bf16", (True, torch.bfloat16)),
                                ("fp32", (False, torch.float32))):
        model, tok = load_model("tiny-bert", task=task)
        spy = Spy()
        train(model, tok, task, TrainConfig(**FAST, max_steps=1, precision=precision), objective=spy)
        assert spy.seen == [expected], precision


def test_bf16_training_learns_like_fp32(task):
    """Same seed, same batches: bf16 learns the synthetic task as fp32 does, and its per-step
    losses stay within bf16 rounding of fp32's at the start (they diverge slowly, not at once)."""
    results = {}
    for precision in ("fp32", "bf16"):
        model, tok = load_model("tiny-bert", task=task, seed=0)
        config = TrainConfig(**{**FAST, "lr": 3e-3}, epochs=4, precision=precision)  # 32 steps, one evaluation
        results[precision] = train(model, tok, task, config)
    fp32, bf16 = results["fp32"], results["bf16"]
    assert bf16.best_metrics["accuracy"] > 0.8 and fp32.best_metrics["accuracy"] > 0.8
    first = [(a["loss"], b["loss"]) for a, b in zip(fp32.history[:3], bf16.history[:3])]
    assert all(b == pytest.approx(a, rel=2e-2) for a, b in first)


def test_bf16_evaluation_matches_fp32(task):
    """Predictions in bf16 equal fp32's up to rounding (nearly every row), the loss within bf16's
    precision; the model is not cast and no autocast is left behind."""
    model, tok = load_model("tiny-bert", task=task)
    train(model, tok, task, TrainConfig(**FAST, max_steps=16))
    fp32, refs = predict(model, tok, task, max_length=32)
    bf16, _ = predict(model, tok, task, max_length=32, precision="bf16")
    assert sum(a == b for a, b in zip(fp32, bf16)) >= 0.95 * len(refs)
    assert evaluate_loss(model, tok, task, max_length=32, precision="bf16") == pytest.approx(
        evaluate_loss(model, tok, task, max_length=32), rel=2e-2)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        evaluate(model, tok, task, precision="int8")


def test_default_evaluation_runs_in_the_configs_precision(task):
    """``task_evaluation`` (what train evaluates with) forwards under the config's precision."""
    model, tok = load_model("tiny-bert", task=task)
    states: list[bool] = []
    model.register_forward_pre_hook(lambda m, args: states.append(torch.is_autocast_enabled("cpu")))
    for precision in ("bf16", "fp32"):
        states.clear()
        task_evaluation(tok, task, TrainConfig(**FAST, precision=precision), loss=True)(model, 0)
        assert states and set(states) == {precision == "bf16"}
