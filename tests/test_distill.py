"""Distillation losses against their definitions, and the cached teacher outputs staying aligned."""
import math

import pytest
import torch
import torch.nn.functional as F

from mpstudy import TrainConfig, load_model, load_task, train
from mpstudy.distill import DistillObjective, TeacherOutputs, kd_loss, pkd_loss, teacher_outputs


@pytest.mark.parametrize("temperature", [1.0, 2.0, 20.0])
def test_kd_loss_is_batchmean_kl_times_t_squared(temperature):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    # float64 reference; at T = 20 the T**2 factor magnifies float32 rounding to ~1e-5 relative
    expected = F.kl_div(F.log_softmax(s.double() / temperature, -1), F.softmax(t.double() / temperature, -1),
                        reduction="batchmean") * temperature**2
    assert float(kd_loss(s, t, temperature)) == pytest.approx(float(expected), rel=1e-4)
    # by hand for one row: sum_c p_t (log p_t - log p_s)
    p_t, p_s = F.softmax(t[0] / temperature, -1), F.softmax(s[0] / temperature, -1)
    row = float((p_t * (p_t.log() - p_s.log())).sum()) * temperature**2
    assert math.isclose(float(kd_loss(s[:1], t[:1], temperature)), row, rel_tol=1e-4)


def test_kd_loss_is_zero_for_identical_logits_and_carries_gradient():
    s = torch.randn(4, 3, requires_grad=True)
    assert float(kd_loss(s, s.detach().clone(), 3.0).detach()) == pytest.approx(0.0, abs=1e-6)
    loss = kd_loss(s, torch.randn(4, 3), 3.0)
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_kd_loss_seq2seq_runs_over_the_vocabulary_and_skips_masked_positions():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 4, 7, generator=g), torch.randn(2, 4, 7, generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    per_pos = F.kl_div(F.log_softmax(s, -1), F.softmax(t, -1), reduction="none").sum(-1)
    assert torch.allclose(kd_loss(s, t, mask=mask), per_pos[mask].mean(), atol=1e-6)
    # changing a masked position's logits changes nothing
    s2 = s.clone()
    s2[1, 3] += 5.0
    assert torch.allclose(kd_loss(s2, t, mask=mask), kd_loss(s, t, mask=mask))


def test_kd_loss_regression_is_mse_and_bad_input_is_refused():
    s, t = torch.randn(6, 1), torch.randn(6, 1)
    assert torch.allclose(kd_loss(s, t, 5.0), F.mse_loss(s, t))
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(s, t, 0.0)
    with pytest.raises(ValueError, match="shape"):
        kd_loss(torch.randn(2, 3), torch.randn(2, 4))


def test_pkd_loss_by_hand():
    g = torch.Generator().manual_seed(2)
    s = [torch.randn(3, 6, generator=g) for _ in range(2)]
    t = [torch.randn(3, 6, generator=g) for _ in range(2)]
    raw = sum(((a - b) ** 2).sum(-1).mean() for a, b in zip(s, t)) / 2
    assert torch.allclose(pkd_loss(s, t, normalize=False), raw)
    norm = sum(((F.normalize(a, dim=-1) - F.normalize(b, dim=-1)) ** 2).sum(-1).mean() for a, b in zip(s, t)) / 2
    assert torch.allclose(pkd_loss(s, t, normalize=True), norm)
    # normalized states: scale invariant, and at most 4 (opposite unit vectors)
    assert torch.allclose(pkd_loss([x * 7 for x in s], t), pkd_loss(s, t))
    assert float(pkd_loss(s, [-x for x in s])) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="same non-zero number"):
        pkd_loss(s, t[:1])


@pytest.fixture(scope="module")
def task():
    return load_task("synthetic-cls", max_train=96, max_eval=32)


def test_teacher_outputs_are_cached_and_aligned_with_rows(task, tmp_path):
    teacher, tok = load_model("tiny-bert", task=task, seed=0)
    out = teacher_outputs(teacher, tok, task, max_length=32, batch_size=16, cache_dir=tmp_path, progress=False)
    n_layers = teacher.config.num_hidden_layers
    assert out.logits.shape == (96, 2) and out.cls.shape == (n_layers + 1, 96, teacher.config.hidden_size)
    assert len(list((tmp_path / "teachers").glob("*.pt"))) == 1
    # row 37 alone gives the cached row (dynamic padding does not change a row's logits)
    from mpstudy.tasks import make_collate

    batch = make_collate(task, tok, max_length=32)([task.train[37]])
    batch.pop("labels")
    with torch.no_grad():
        logits = teacher.eval()(**batch).logits[0]
    assert torch.allclose(out.logits[37], logits, atol=1e-5)
    again = teacher_outputs(teacher, tok, task, max_length=32, cache_dir=tmp_path, progress=False)
    assert again.key == out.key and torch.equal(again.logits, out.logits)
    # another teacher, another key
    other, _ = load_model("tiny-bert", task=task, seed=1)
    assert teacher_outputs(other, tok, task, max_length=32, cache_dir=tmp_path, progress=False).key != out.key


def test_distill_objective_trains_and_matches_ce_at_alpha_zero(task, tmp_path):
    teacher, tok = load_model("tiny-bert", task=task, seed=0)
    cached = teacher_outputs(teacher, tok, task, max_length=32, cache_dir=tmp_path, progress=False)
    assert isinstance(cached, TeacherOutputs)
    config = TrainConfig(lr=1e-3, max_steps=3, batch_size=16, max_length=32, progress=False)
    student, _ = load_model("tiny-bert", task=task, seed=1)
    result = train(student, tok, task, config, objective=DistillObjective(cached, alpha=0.5, temperature=2.0, beta=1.0))
    assert {"loss", "ce", "kd", "pkd"} <= set(result.history[0])
    # alpha = 0, beta = 0 is the plain task loss: the same run as the default objective
    runs = []
    for objective in (DistillObjective(cached, alpha=0.0), None):
        student, _ = load_model("tiny-bert", task=task, seed=1)
        runs.append(train(student, tok, task, config, objective=objective).history)
    assert [h["loss"] for h in runs[0]] == pytest.approx([h["loss"] for h in runs[1]], rel=1e-6)
    # cached outputs and a live teacher give the same loss
    student, _ = load_model("tiny-bert", task=task, seed=1)
    from mpstudy.tasks import make_collate

    idx = [5, 3, 9]
    batch = make_collate(task, tok, max_length=32)([task.train[i] for i in idx])
    a = DistillObjective(cached, alpha=0.7, temperature=3.0, beta=2.0)(student, batch, idx)[0]
    b = DistillObjective(teacher, alpha=0.7, temperature=3.0, beta=2.0)(student, batch, idx)[0]
    assert torch.allclose(a, b, atol=1e-5)


def test_distill_objective_refuses_bad_weights():
    cached = TeacherOutputs(torch.zeros(2, 2), torch.zeros(3, 2, 4))
    for kwargs, word in [({"alpha": 1.5}, "alpha"), ({"beta": -1}, "beta"), ({"temperature": 0}, "temperature"),
                         ({"student_layers": [1]}, "both"), ({"student_layers": [1], "teacher_layers": [1, 2]}, "same length")]:
        with pytest.raises(ValueError, match=word):
            DistillObjective(cached, **kwargs)
