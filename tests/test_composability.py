"""Module-level fine-tuning (hooks feed variants the original's exact inputs; best states are
restored), time to target, the whole workflow on a tiny model, the cost table, test splits."""
import pytest
import torch

from mpstudy import TrainConfig, count_parameters, load_model, load_task
from mpstudy.distill import forward_inputs
from mpstudy.measure import dummy_batch
from mpstudy.prune import (
    clone_module,
    generate_configs,
    prunable_modules,
    prune_variants,
    pruning_scheme,
)
from mpstudy.studies.composability import (
    run_composability,
    sparsity_latency,
    time_to_target,
    tune_modules,
    variant_key,
)
from mpstudy.tasks import load_test_split, with_source_prefix

FAST = dict(batch_size=32, max_length=32, eval_batch_size=64, progress=False, max_new_tokens=6)


@pytest.fixture(scope="module")
def cls():
    task = load_task("synthetic-cls", max_train=96, max_eval=32)
    model, tok = load_model("tiny-bert", task=task)
    return model, tok, task


@pytest.fixture(scope="module")
def s2s():
    task = load_task("synthetic-seq2seq", max_train=64, max_eval=16)
    model, tok = load_model("tiny-t5", task=task)
    return model, tok, task


def test_identical_variants_match_exactly(cls, s2s):
    """A 'variant' that is a copy of the original module gets MSE 0: the hooks feed it exactly the
    original's inputs (hidden states, masks, T5's position bias and cross-attention states)."""
    for model, tok, task in (cls, s2s):
        names = [m.name for m in prunable_modules(model)]
        copies = {name: {1.0: clone_module(model.get_submodule(name))} for name in names}
        _, result = tune_modules(model, tok, task, copies, TrainConfig(lr=1e-3, max_steps=1, **FAST))
        assert len(result.val_before) == len(names)
        assert max(result.val_before.values()) < 1e-10


def test_tuning_lowers_each_variants_error_and_leaves_the_original(s2s):
    model, tok, task = s2s
    before = {k: v.clone() for k, v in model.state_dict().items()}
    configs = generate_configs(model, [0.5], [0.3])
    variants = prune_variants(model, pruning_scheme(configs))
    untouched = {k: v.clone() for k, v in variants["encoder.block.1.layer.0.SelfAttention"][0.5].state_dict().items()}
    tuned, result = tune_modules(model, tok, task, variants, TrainConfig(lr=3e-3, max_steps=4, eval_every=2, **FAST))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    assert all(torch.equal(untouched[k], v) for k, v in variants["encoder.block.1.layer.0.SelfAttention"][0.5].state_dict().items())
    assert [h["step"] for h in result.history] == [0, 2, 4] and result.steps == 4
    for key, after in result.val_after.items():
        assert after <= result.val_before[key]
    assert sum(result.val_after.values()) < 0.9 * sum(result.val_before.values())
    # the masks survive: tuned Linear variants have exactly the pruned weights' zeros
    wi = "encoder.block.0.layer.1.DenseReluDense.wi"
    assert torch.equal(tuned[wi][0.3].weight_mask, variants[wi][0.3].weight_mask)
    assert torch.all(tuned[wi][0.3].weight[tuned[wi][0.3].weight_mask == 0] == 0)
    assert set(result.to_frame().columns) >= {"module", "keep_ratio", "val_mse_before", "val_mse_after", "best_step"}


def test_early_stopping_restores_the_best_state(cls):
    model, tok, task = cls
    variants = prune_variants(model, {"bert.encoder.layer.0.attention": [0.5], "bert.encoder.layer.1.output.dense": [0.3]})
    tuned, result = tune_modules(model, tok, task, variants, TrainConfig(lr=5.0, max_steps=9, eval_every=1, warmup_ratio=0.0, **FAST),
                                 patience=2)
    assert result.stopped_early and result.steps < 9
    key = variant_key("bert.encoder.layer.0.attention", 0.5)
    assert result.best_step[key] == 0 and result.val_after[key] == result.val_before[key]  # untuned was best
    original = variants["bert.encoder.layer.0.attention"][0.5].state_dict()
    assert all(torch.equal(original[k], v) for k, v in tuned["bert.encoder.layer.0.attention"][0.5].state_dict().items())


def test_each_variant_ends_in_its_own_best_state(cls):
    """At this learning rate the attention variant is best untuned (step 0), the Linears after a few
    steps and the summed loss at the end: every variant is restored to its own best validation,
    not to the step where the sum was lowest."""
    from torch import nn

    from mpstudy.distill import ModuleMatchObjective
    from mpstudy.tasks import make_collate
    from mpstudy.train import iterate_batches

    model, tok, task = cls
    variants = prune_variants(model, {"bert.encoder.layer.0.attention": [0.5], "bert.encoder.layer.1.output.dense": [0.3],
                                      "bert.encoder.layer.1.intermediate.dense": [0.3]})
    tuned, result = tune_modules(model, tok, task, variants,
                                 TrainConfig(lr=1e-2, max_steps=6, eval_every=1, warmup_ratio=0.0, **FAST), patience=None)
    assert [h["step"] for h in result.history] == list(range(7)) and not result.stopped_early
    sum_best = min(result.history, key=lambda h: h["val_loss"])["step"]
    for key in result.val_after:
        curve = {h["step"]: h[f"val/{key}"] for h in result.history}
        assert result.best_step[key] == min(curve, key=curve.get) and result.val_after[key] == min(curve.values())
    assert len(set(result.best_step.values())) > 1 and any(s != sum_best for s in result.best_step.values())
    # measured afresh, each returned variant has the error of its own best validation
    flat = {f"s{i}": (name, keep) for i, (name, by_keep) in enumerate(tuned.items()) for keep in by_keep}
    students = nn.ModuleDict({slot: tuned[name][keep] for slot, (name, keep) in flat.items()})
    batches = [b for _, b in iterate_batches(task.dev, make_collate(task, tok, max_length=32), 64)]
    again = ModuleMatchObjective(model, {slot: name for slot, (name, _) in flat.items()}).validation_losses(students, batches)
    for slot, (name, keep) in flat.items():
        assert again[slot] == pytest.approx(result.val_after[variant_key(name, keep)], rel=1e-5)


def test_forward_inputs_shift_labels_without_padding_ids(s2s):
    model, tok, task = s2s
    from mpstudy.tasks import make_collate

    batch = make_collate(task, tok, max_length=32)(task.train[:4])
    assert (batch["labels"] == -100).any()  # padding is masked in the labels
    inputs = forward_inputs(model, batch)
    assert "labels" not in inputs and inputs["use_cache"] is False
    assert not (inputs["decoder_input_ids"] == -100).any()
    assert torch.all(inputs["decoder_input_ids"][:, 0] == model.config.decoder_start_token_id)


@pytest.mark.parametrize("history,start,target,expected", [
    ([{"step": 1, "train_s": 1.0}, {"step": 2, "train_s": 2.0, "dev_accuracy": 0.7}, {"step": 4, "train_s": 4.5, "dev_accuracy": 0.9}],
     0.5, 0.8, {"step": 4, "seconds": 4.5, "score": 0.9}),
    ([{"step": 2, "train_s": 2.0, "dev_accuracy": 0.7}], 0.85, 0.8, {"step": 0, "seconds": 0.0, "score": 0.85}),
    ([{"step": 2, "train_s": 2.0, "dev_accuracy": 0.7}], 0.5, 0.8, None),
])
def test_time_to_target(history, start, target, expected):
    assert time_to_target(history, "accuracy", target, start) == expected


def test_whole_workflow_on_a_tiny_classifier(cls):
    model, tok, task = cls
    configs = generate_configs(model, [0.25, 0.5], [0.3, 0.3])
    study, variants, tuned = run_composability(
        model, tok, task, configs, TrainConfig(lr=1e-3, max_steps=2, **FAST),
        TrainConfig(lr=1e-3, max_steps=2, eval_every=1, **FAST))
    runs = study.runs_frame(target=0.0)
    assert list(zip(runs.config, runs.arm)) == [(0, "composability"), (0, "baseline"), (1, "composability"), (1, "baseline")]
    assert (runs.steps_to_target == 0).all()  # any start reaches 0
    assert (runs.tune_share_s[runs.arm == "composability"] == study.tune.seconds / 2).all()
    assert runs.stored_params.iloc[0] < count_parameters(model)["stored"]
    curves = study.curves_frame()
    assert {"dev_accuracy", "dev_loss", "loss", "train_s"} <= set(curves.columns)
    assert set(curves.step[curves.config == 0]) == {0, 1, 2}
    assert study.num_variants == 2 * 2 + 4 * 1  # 2 attention blocks x {0.25, 0.5}; 4 Linears x {0.3}


def test_sparsity_latency_table(cls):
    model, tok, task = cls
    configs = generate_configs(model, [0.5], [0.3])
    variants = prune_variants(model, pruning_scheme(configs))
    table = sparsity_latency(model, configs, variants, dummy_batch(tok, 2, 8), repeats=1, warmup=0).set_index("form")
    dense = table.loc["dense"]
    for form in ("unstructured 0.3 (masks)", "unstructured 0.3 (zeros)"):  # zeros are stored and multiplied
        assert table.loc[form, "stored_params"] == dense.stored_params
        assert table.loc[form, "gflops"] == dense.gflops
        assert table.loc[form, "nonzero_params"] < dense.nonzero_params
    heads = table.loc["heads removed 0.5"]
    assert heads.stored_params == dense.stored_params - 2 * 2 * (3 * (64 * 16 + 16) + 64 * 16)
    assert heads.gflops < dense.gflops
    assert table.loc["config 0", "nonzero_params"] < heads.nonzero_params


def test_test_split(tmp_path, s2s):
    _, _, task = s2s
    assert load_test_split(load_task("synthetic-cls", max_train=4, max_eval=4)) is None
    folder = tmp_path / "multi30k"
    folder.mkdir()
    (folder / "test_2016_flickr.en").write_text("A dog runs.\nTwo men sit.\n")
    (folder / "test_2016_flickr.de").write_text("Ein Hund rennt.\nZwei Männer sitzen.\n")
    import dataclasses


    m30k = with_source_prefix(dataclasses.replace(task, name="multi30k"), "translate English to German: ")
    test = load_test_split(m30k, data_dir=tmp_path)
    assert test.dev == [{"source": "translate English to German: A dog runs.", "target": "Ein Hund rennt."},
                        {"source": "translate English to German: Two men sit.", "target": "Zwei Männer sitzen."}]
    with pytest.raises(FileNotFoundError, match="test_2016_flickr"):
        load_test_split(m30k, data_dir=tmp_path / "nowhere")


def test_command_line_workflow(tmp_path, capsys):
    """Each step of the original's scripts, as `mpstudy prune STEP`, on a tiny classifier."""
    import json

    from mpstudy.cli import main

    def run(*argv):
        assert main(["prune", *map(str, argv)]) == 0
        return json.loads(capsys.readouterr().out)

    common = ["--task", "synthetic-cls"]
    training = [*common, "--max-train", 64, "--max-eval", 16, "--batch-size", 32, "--max-length", 32, "--quiet"]
    assert run("configs", "tiny-bert", *common, "--attention-keep", 0.5, 0.25, "--linear-keep", 0.3, 0.5,
               "--out", tmp_path / "conf.json")["configs"] == 2
    assert run("scheme", tmp_path / "conf.json", "--out", tmp_path / "scheme.json")["variants"] == 2 * 2 + 4 * 2
    run("prune", "tiny-bert", *common, "--scheme", tmp_path / "scheme.json", "--out", tmp_path / "pruned.pt")
    tuned = run("tune-modules", "tiny-bert", *training, "--lr", 1e-3, "--epochs", 1, "--variants", tmp_path / "pruned.pt",
                "--out", tmp_path / "tuned.pt", "--stats", tmp_path / "tune.json")
    assert tuned["val_loss_after"] <= tuned["val_loss_before"]
    composed = run("compose", "tiny-bert", *common, "--variants", tmp_path / "tuned.pt", "--configs", tmp_path / "conf.json",
                   "--index", 1, "--out", tmp_path / "composed")
    assert composed["nonzero"] < composed["stored"]
    run("finetune", tmp_path / "composed", *training, "--lr", 1e-3, "--epochs", 1, "--out", tmp_path / "tuned-model",
        "--stats", tmp_path / "finetune.json")
    scores = run("evaluate", tmp_path / "tuned-model", *common, "--max-eval", 16, "--max-length", 32)
    assert 0 <= scores["accuracy"] <= 1 and scores["params"]["stored"] == composed["stored"]
    assert run("plot", tmp_path / "finetune.json", "--out", tmp_path / "loss.png")["points"] == 2
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert main(["prune", "compose", "tiny-bert", *common, "--variants", str(tmp_path / "tuned.pt"), "--configs",
                 str(tmp_path / "conf.json"), "--index", "5", "--out", str(tmp_path / "x")]) == 2
    assert "--index 5 is out of range" in capsys.readouterr().err
