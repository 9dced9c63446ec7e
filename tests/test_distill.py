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


class _TwoLayers(torch.nn.Module):
    """A plain (non-Hugging Face) teacher: the module-matching objective needs only named modules."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)

    def forward(self, input_ids):
        return self.b(torch.relu(self.a(input_ids)))


def _perturbed(module: torch.nn.Module, scale: float) -> torch.nn.Module:
    import copy

    out = copy.deepcopy(module)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale)
    return out


def test_module_match_objective_feeds_students_the_teachers_inputs():
    from mpstudy.distill import ModuleMatchObjective

    torch.manual_seed(0)
    teacher = _TwoLayers()
    students = torch.nn.ModuleDict({"exact": _perturbed(teacher.b, 0.0), "off": _perturbed(teacher.b, 0.1),
                                    "first": _perturbed(teacher.a, 0.2)})
    objective = ModuleMatchObjective(teacher, {"exact": "b", "off": "b", "first": "a"})
    x = torch.randn(5, 4)
    losses = objective.losses(students, {"input_ids": x})
    hidden = torch.relu(teacher.a(x)).detach()  # the input the teacher's `b` sees
    assert float(losses["exact"].detach()) == 0.0
    assert torch.allclose(losses["off"], F.mse_loss(students["off"](hidden), teacher.b(hidden)))
    assert torch.allclose(losses["first"], F.mse_loss(students["first"](x), teacher.a(x)))
    loss, logs = objective(students, {"input_ids": x}, [0, 1, 2, 3, 4])
    loss.backward()
    assert logs["loss"] == pytest.approx(sum(v.item() for v in losses.values()))
    assert students["off"].weight.grad.abs().sum() > 0 and students["first"].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())  # the teacher runs without gradient
    for targets, word in [({}, "empty"), ({"s": "c"}, "not modules"), ({"s.1": "a"}, "not allowed"),
                          ({"loss": "a"}, "not allowed")]:
        with pytest.raises(ValueError, match=word):
            ModuleMatchObjective(teacher, targets)


def test_module_match_validation_keeps_each_students_own_best_state():
    """Two students whose errors move in opposite directions between two validations: each keeps
    the state of its own best validation, which no single checkpoint of both holds."""
    from mpstudy.distill import ModuleMatchObjective, ModuleMatchValidation

    torch.manual_seed(1)
    teacher = _TwoLayers()
    students = torch.nn.ModuleDict({"s0": _perturbed(teacher.b, 0.0), "s1": _perturbed(teacher.b, 0.3)})
    validation = ModuleMatchValidation(ModuleMatchObjective(teacher, {"s0": "b", "s1": "b"}),
                                       [{"input_ids": torch.randn(3, 4)}, {"input_ids": torch.randn(5, 4)}])
    first = validation(students, 0)
    assert first["s0"] == 0.0 and first["s1"] > 0 and first["loss"] == pytest.approx(first["s0"] + first["s1"])
    s0_at_0 = {k: v.clone() for k, v in students["s0"].state_dict().items()}
    students["s0"].load_state_dict(_perturbed(teacher.b, 0.5).state_dict())  # s0 gets worse
    students["s1"].load_state_dict(_perturbed(teacher.b, 0.01).state_dict())  # s1 gets better
    s1_at_7 = {k: v.clone() for k, v in students["s1"].state_dict().items()}
    second = validation(students, 7)
    assert second["s0"] > first["s0"] and second["s1"] < first["s1"]
    assert validation.first == {"s0": first["s0"], "s1": first["s1"]}
    assert validation.best == {"s0": (first["s0"], 0), "s1": (second["s1"], 7)}
    students["s1"].load_state_dict(_perturbed(teacher.b, 1.0).state_dict())
    validation.restore(students)
    assert all(torch.equal(v, s0_at_0[k]) for k, v in students["s0"].state_dict().items())
    assert all(torch.equal(v, s1_at_7[k]) for k, v in students["s1"].state_dict().items())
