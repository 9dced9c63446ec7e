"""Feature distillation on activations: the losses by hand, what the hooks capture, gradients that
reach the student (the Marian port's terms were floats), encoder-decoders, and a run that learns."""
import copy

import pytest
import torch

from mpstudy import TrainConfig, compress, load_model, load_task, train
from mpstudy.distill import (FeatureDistillObjective, attention_loss, context_modules, eager_attention,
                             hidden_state_loss, kd_loss)
from mpstudy.tasks import make_collate


def test_hidden_state_loss_by_hand_with_mask():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 3, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    per = ((s - t) ** 2).mean(-1)
    assert torch.allclose(hidden_state_loss(s, t, mask), (per * mask).sum() / 8)
    assert torch.allclose(hidden_state_loss(s, t), per.mean())
    # padding positions do not count: changing them changes nothing
    s2 = s.clone()
    s2[0, 3:] += 100
    assert torch.allclose(hidden_state_loss(s2, t, mask), hidden_state_loss(s, t, mask))
    with pytest.raises(ValueError, match="differ in shape"):
        hidden_state_loss(s, t[:, :4])


def test_attention_loss_by_hand():
    g = torch.Generator().manual_seed(0)
    key_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    scores_s, scores_t = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    fill = ~key_mask[:, None, None, :]
    p_s = scores_s.masked_fill(fill, -1e9).softmax(-1)
    p_t = scores_t.masked_fill(fill, -1e9).softmax(-1)
    assert float(p_s[0, :, :, 3].max()) == 0.0  # masked key: zero probability
    kl = (p_t * (p_t.clamp_min(1e-30).log() - p_s.clamp_min(1e-30).log())).sum(-1)  # [B, heads, L_q]
    q_mask = key_mask  # queries at padding positions are ignored too
    expected = (kl.mean(1) * q_mask).sum() / q_mask.sum()
    assert torch.allclose(attention_loss(p_s, p_t, q_mask, "kl"), expected, atol=1e-6)
    mse = ((p_s - p_t) ** 2).sum(-1).mean(1)
    assert torch.allclose(attention_loss(p_s, p_t, q_mask, "mse"), (mse * q_mask).sum() / q_mask.sum())
    assert float(attention_loss(p_t, p_t, q_mask)) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="'kl' or 'mse'"):
        attention_loss(p_s, p_t, kind="l1")


@pytest.fixture(scope="module")
def cls_setup():
    task = load_task("synthetic-cls", max_train=64, max_eval=16)
    teacher, tok = load_model("tiny-bert", task=task, seed=0)
    batch = make_collate(task, tok, max_length=32)(task.train[:6])
    return task, teacher, tok, batch


def test_objective_is_zero_for_the_teacher_itself_and_refuses_sdpa(cls_setup):
    task, teacher, tok, batch = cls_setup
    objective = FeatureDistillObjective(teacher, ["hidden", "attention", "context"])
    student = copy.deepcopy(teacher)
    with pytest.raises(ValueError, match="eager_attention"):
        objective(student, batch, [])
    impl = student.config._attn_implementation
    with eager_attention(student, teacher):
        loss, logs = objective(student, batch, [])
    assert student.config._attn_implementation == impl == teacher.config._attn_implementation  # restored
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    assert {"fd_hidden", "fd_attention", "fd_context", "loss"} <= set(logs)


def test_objective_matches_the_losses_by_hand_and_trains_only_the_student(cls_setup):
    task, teacher, tok, batch = cls_setup
    student = copy.deepcopy(teacher)
    compress(student, "svd", keep=0.3)
    objective = FeatureDistillObjective(teacher, ["hidden", "attention", "context"], weights={"attention": 0.5},
                                        kd_weight=2.0, temperature=3.0)
    with eager_attention(student, teacher):
        loss, logs = objective(student, batch, [])
        loss.backward()
        with torch.no_grad():
            s_out = student(**batch, output_hidden_states=True, output_attentions=True)
            t_out = teacher(**batch, output_hidden_states=True, output_attentions=True)
    mask = batch["attention_mask"]
    hidden = torch.stack([hidden_state_loss(s, t, mask) for s, t in zip(s_out.hidden_states, t_out.hidden_states)]).mean()
    att = torch.stack([attention_loss(s, t, mask) for s, t in zip(s_out.attentions, t_out.attentions)]).mean()
    kd = kd_loss(s_out.logits, t_out.logits, 3.0)
    assert logs["fd_hidden"] == pytest.approx(float(hidden), rel=1e-5)
    assert logs["fd_attention"] == pytest.approx(float(att), rel=1e-5)
    assert logs["kd"] == pytest.approx(float(kd), rel=1e-4, abs=1e-8)
    assert logs["loss"] == pytest.approx(float(hidden + 0.5 * att + logs["fd_context"] + 2.0 * kd), rel=1e-5)
    assert logs["fd_hidden"] > 0 and logs["fd_attention"] > 0 and logs["fd_context"] > 0
    # gradients reach the factorized student, never the teacher
    assert all(p.grad is not None for n, p in student.named_parameters() if ".first." in n)
    assert all(p.grad is None for p in teacher.parameters())


def test_context_is_the_input_of_the_attention_output_projection(cls_setup):
    task, teacher, tok, batch = cls_setup
    names = context_modules(teacher)
    assert names == [f"bert.encoder.layer.{i}.attention.output.dense" for i in range(2)]
    student = copy.deepcopy(teacher)
    with torch.no_grad():  # changes the contexts of layer 1 and nothing before it
        student.get_submodule("bert.encoder.layer.1.attention.self.value").weight.mul_(1.1)
    seen = {}
    handle = student.get_submodule(names[1]).register_forward_pre_hook(lambda m, a: seen.update(x=a[0]))
    objective = FeatureDistillObjective(teacher, [f"context:{names[1]}"])
    loss, logs = objective(student, batch, [])
    handle.remove()
    assert seen["x"].shape == (6, batch["input_ids"].shape[1], teacher.config.hidden_size)
    with torch.no_grad():
        seen_t = {}
        h = teacher.get_submodule(names[1]).register_forward_pre_hook(lambda m, a: seen_t.update(x=a[0]))
        teacher(**batch)
        h.remove()
    assert logs["fd_context"] == pytest.approx(hidden_state_loss(seen["x"], seen_t["x"], batch["attention_mask"]).item(), rel=1e-5)
    assert loss.item() > 0
    assert FeatureDistillObjective(teacher, [f"context:{names[0]}"])(student, batch, [])[0].item() == 0.0


def test_feature_layers_by_parameter_name_and_bad_names(cls_setup):
    task, teacher, tok, batch = cls_setup
    name = "bert.encoder.layer.0.intermediate.dense"
    objective = FeatureDistillObjective(teacher, [name + ".weight", "hidden.2"])
    assert objective.modules == [name] and objective.patterns == ["hidden.2"] and not objective.needs_attentions
    student = copy.deepcopy(teacher)
    compress(student, "svd", targets="ffn_in", keep=0.3)
    loss, logs = objective(student, batch, [])
    assert logs["fd_module"] > 0 and "fd_hidden" in logs
    with pytest.raises(ValueError, match="no module of the teacher"):
        FeatureDistillObjective(teacher, ["bert.encoder.layer.9.output.dense"])
    with pytest.raises(ValueError, match="unknown feature weight"):
        FeatureDistillObjective(teacher, ["hidden"], weights={"logits": 1.0})
    with pytest.raises(ValueError, match="no activation matched"):
        FeatureDistillObjective(teacher, ["hidden.9"])(student, batch, [])


@pytest.mark.parametrize("spec", ["tiny-marian", "tiny-t5"])
def test_encoder_decoder_features(spec):
    task = load_task("synthetic-seq2seq", max_train=16, max_eval=8)
    teacher, tok = load_model(spec, task=task, seed=0)
    batch = make_collate(task, tok, max_length=32)(task.train[:4])
    student = copy.deepcopy(teacher)
    compress(student, "svd", keep=0.5)
    objective = FeatureDistillObjective(teacher, ["hidden", "attention", "context"], kd_weight=1.0)
    assert len(objective.context) == 6  # 2 encoder self, 2 decoder self, 2 cross attentions
    with eager_attention(student, teacher):
        loss, logs = objective(student, batch, [])
        loss.backward()
        s = student(**batch, output_hidden_states=True)
        t = teacher(**batch, output_hidden_states=True)
    assert torch.isfinite(loss) and logs["fd_attention"] > 0
    # decoder features count only the target positions (labels != -100); KD is over the vocabulary there
    dec_mask = batch["labels"] != -100
    assert logs["kd"] == pytest.approx(kd_loss(s.logits, t.logits, 1.0, mask=dec_mask).item(), rel=1e-4)
    only_decoder = FeatureDistillObjective(teacher, ["decoder.hidden.*"])
    assert not only_decoder.needs_attentions
    value = only_decoder(student, batch, [])[0]
    expected = torch.stack([hidden_state_loss(a, b, dec_mask) for a, b in
                            zip(s.decoder_hidden_states, t.decoder_hidden_states)]).mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def test_feature_distillation_brings_the_student_closer(cls_setup):
    task, teacher, tok, batch = cls_setup
    student = copy.deepcopy(teacher)
    compress(student, "svd", keep=0.2)
    objective = FeatureDistillObjective(teacher, ["hidden", "attention"])
    with eager_attention(student, teacher):
        before = objective(student, batch, [])[0].item()
        train(student, tok, task, TrainConfig(lr=3e-3, max_steps=30, batch_size=16, max_length=32, progress=False,
                                              keep_best=False), objective=objective)
        after = objective(student, batch, [])[0].item()
    assert after < 0.5 * before
