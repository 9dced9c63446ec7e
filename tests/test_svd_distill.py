"""The Noach & Goldberg pipeline: rank rule and budgets by hand, layer selection in the seed's config
style, the stages on an encoder and on encoder-decoders, FLOPs by hand, the parallel-CSV reader."""
import copy
import json

import pytest
import torch
from torch import nn

from mpstudy import TrainConfig, compress, count_parameters, load_model, load_task
from mpstudy.distill import model_fingerprint
from mpstudy.factorize import max_saving_rank
from mpstudy.measure import count_flops, dummy_batch
from mpstudy.studies.svd_distillation import (SvdDistillConfig, compress_and_distill, decompose, decompose_targets, module_errors,
                                 rank_for_budget, rank_latency_curve)
from mpstudy.tasks import DataFormatError, load_parallel_csv, read_parallel_csv

# tiny-bert: hidden 64, FFN 128, 2 layers: per layer 4 (64 x 64) + 2 (64 x 128) weights
PER_LAYER_WEIGHTS = 4 * 64 * 64 + 2 * 64 * 128  # 32,768
PER_LAYER_WIDTH = 4 * (64 + 64) + 2 * (64 + 128)  # 896: a global rank r stores r * 896 per layer


@pytest.fixture(scope="module")
def cls_task():
    return load_task("synthetic-cls", max_train=64, max_eval=32)


@pytest.fixture(scope="module")
def tiny_bert(cls_task):
    return load_model("tiny-bert", task=cls_task, seed=0)


def test_rank_rule_r_below_nd_over_n_plus_d():
    # r < mn / (m + n): 384 x 384 -> 191, 384 x 1536 -> 307 (307.2), Marian 512 x 512 -> 255, BERT 768 x 3072 -> 614
    assert [max_saving_rank(m, n) for m, n in [(384, 384), (1536, 384), (512, 512), (3072, 768)]] == [191, 307, 255, 614]
    lin = nn.Linear(384, 1536)
    model = nn.Sequential(lin)
    with pytest.raises(ValueError, match="saves nothing"):
        compress(model, "svd", targets=r"re:^0$", rank=308)
    assert compress(model, "svd", targets=r"re:^0$", rank=307).params_after == 307 * (384 + 1536) + 1536


def test_rank_for_budget_by_hand(tiny_bert):
    model, _ = tiny_bert
    # r = floor(keep * sum mn / sum (m + n)), the same for both layers
    assert rank_for_budget(model, "all-linear", 0.5) == int(0.5 * PER_LAYER_WEIGHTS // PER_LAYER_WIDTH) == 18
    assert rank_for_budget(model, "ffn", 0.5) == int(0.5 * 2 * 64 * 128 // (2 * 192)) == 21
    with pytest.raises(ValueError, match="saves nothing on a 64x64 matrix"):
        rank_for_budget(model, "all-linear", 0.9)  # r = 32 >= 64 * 64 / 128
    with pytest.raises(ValueError, match=r"keep .* must be a number in \(0, 1\), got 1.5"):
        rank_for_budget(model, "all-linear", 1.5)


def test_config_validation_and_the_seed_config(tiny_bert):
    with pytest.raises(ValueError, match="exactly one of rank= or keep="):
        SvdDistillConfig(rank=8, keep=0.5)
    with pytest.raises(ValueError, match="per_matrix=True chooses a rank per matrix from keep="):
        SvdDistillConfig(rank=8, per_matrix=True)
    with pytest.raises(ValueError, match=r"keep .* must be a number in \(0, 1\), got 1"):
        SvdDistillConfig(keep=1)
    with pytest.raises(ValueError, match="exactly one"):
        SvdDistillConfig()
    with pytest.raises(ValueError, match="method must be one of"):
        SvdDistillConfig(rank=8, method="tucker")
    with pytest.raises(ValueError, match="plan must be one of"):
        SvdDistillConfig(rank=8, plan="kd+fd")
    model, _ = tiny_bert
    seed = {"teacher_model_path": "t.pt", "student_model_path": "s.pt", "dataset_path": "d.csv", "epoch": 2,
            "batch_size": 8, "k_info": 12, "output_path": "out",
            "decompose_layers": ["bert.encoder.layer.0.attention.self.query.weight", "bert.encoder.layer.1.output.dense.weight"],
            "feature_layers": []}
    config = SvdDistillConfig.from_seed_config(seed)
    assert config.rank == 12 and config.fd_epochs == config.kd_epochs == 2.0
    assert config.feature_layers == ["hidden", "attention"]  # the seed's empty list: our default
    assert config.run["dataset_path"] == "d.csv"
    with pytest.raises(ValueError, match="unknown key"):
        SvdDistillConfig.from_seed_config({**seed, "k": 3})
    student = copy.deepcopy(model)
    report = decompose(student, config)
    assert [m["name"] for m in report.modules] == ["bert.encoder.layer.0.attention.self.query",
                                                   "bert.encoder.layer.1.output.dense"]
    assert all(m["rank"] == 12 for m in report.modules)


def test_decompose_targets(tiny_bert):
    model, _ = tiny_bert
    with pytest.raises(ValueError, match="is a LayerNorm"):
        decompose_targets(model, ["bert.encoder.layer.0.output.LayerNorm.weight"])
    with pytest.raises(ValueError, match="names no module"):
        decompose_targets(model, ["bert.encoder.layer.7.output.dense.weight"])
    with pytest.raises(ValueError, match="unknown target 'querry'"):
        decompose_targets(model, ["querry"])
    assert decompose_targets(model, "qkv") == ["qkv"]
    marian, _ = load_model("tiny-marian", task="synthetic-seq2seq")
    encoder_only = decompose_targets(marian, [])  # the seed's default: the encoder's linear weights
    assert len(encoder_only) == 12 and all("encoder" in t for t in encoder_only)


def test_pipeline_on_a_classifier(tiny_bert, cls_task, tmp_path):
    model, tok = tiny_bert
    fingerprint = model_fingerprint(model)
    config = SvdDistillConfig(keep=0.5, plan="fd+kd", fd_lr=1e-3, kd_lr=1e-3, fd_epochs=1, kd_epochs=1,
                              feature_layers=["hidden", "attention", "context"], method="fwsvd", fisher_examples=32)
    train_config = TrainConfig(batch_size=32, max_length=32, progress=False)
    student, record = compress_and_distill(model, tok, cls_task, config, train_config, cache_dir=tmp_path)
    assert model_fingerprint(model) == fingerprint  # the teacher is not touched
    assert record["rank"] == 18 and set(record["stages"]) == {"fd", "kd"}
    assert record["stages"]["fd"]["steps"] == record["stages"]["kd"]["steps"] == 2  # 64 rows / 32
    # stored parameters by hand: every block matrix m x n -> r (m + n), biases kept
    dense = count_parameters(model)["stored"]
    assert record["params"]["stored"] == dense - 2 * (PER_LAYER_WEIGHTS - 18 * PER_LAYER_WIDTH)
    biases = 4 * 64 + 128 + 64  # per layer: Q, K, V, attention output, FFN in, FFN out
    assert record["kept_fraction"] == pytest.approx((18 * PER_LAYER_WIDTH + biases) / (PER_LAYER_WEIGHTS + biases))
    assert record["score"] == record["final"]["accuracy"]
    assert student.config._attn_implementation == model.config._attn_implementation  # eager only while distilling
    json.dumps(record)  # goes into a results record as it is


@pytest.mark.parametrize("spec", ["tiny-marian", "tiny-t5"])
def test_pipeline_on_encoder_decoders(spec, tmp_path):
    task = load_task("synthetic-seq2seq", max_train=32, max_eval=8)
    model, tok = load_model(spec, task=task, seed=0)
    config = SvdDistillConfig(keep=0.5, per_matrix=True, plan="fd+kd", fd_lr=1e-3, kd_lr=1e-3, alpha=0.5, temperature=2.0)
    train_config = TrainConfig(batch_size=16, max_length=32, max_new_tokens=8, progress=False)
    student, record = compress_and_distill(model, tok, task, config, train_config, cache_dir=tmp_path)
    assert "bleu" in record["offline"] and "bleu" in record["final"]
    assert record["model_params_after"] < record["model_params_before"]
    assert {m for m in record["stages"]} == {"fd", "kd"}


def test_module_errors_and_flops_by_hand(tiny_bert, cls_task):
    model, tok = tiny_bert
    from mpstudy.fisher import estimate_fisher

    fisher = estimate_fisher(model, tok, cls_task, max_examples=32, max_length=32)
    student = copy.deepcopy(model)
    report = decompose(student, SvdDistillConfig(rank=8, method="fwsvd"), fisher=fisher)
    svd_student = copy.deepcopy(model)
    svd_report = decompose(svd_student, SvdDistillConfig(rank=8))
    ours, plain = module_errors(model, report, student, fisher), module_errors(model, svd_report, svd_student, fisher)
    assert len(ours) == 12
    for a, b in zip(ours, plain):
        assert a["weighted_rel_error"] <= b["weighted_rel_error"] + 1e-6 and b["rel_error"] <= a["rel_error"] + 1e-6
    # a forward's matrix-product FLOPs drop by exactly 2 T (mn - r (m + n)) per factorized matrix
    batch = dummy_batch(tok, batch_size=2, seq_len=16)
    saved = 2 * 32 * 2 * (PER_LAYER_WEIGHTS - 8 * PER_LAYER_WIDTH)
    assert count_flops(model, batch) - count_flops(svd_student, batch) == saved
    threads = torch.get_num_threads()
    rows = rank_latency_curve(model, batch, ranks=[8, 16], repeats=2, warmup=1, threads=1)
    assert [r["rank"] for r in rows] == [8, 16]
    assert rows[0]["flop_ratio"] == pytest.approx(1 - saved / count_flops(model, batch))
    assert all(r["threads"] == 1 for r in rows) and torch.get_num_threads() == threads


def test_parallel_csv(tmp_path):
    good = tmp_path / "train.csv"
    good.write_text('source_text,target_text,extra\n"A man, smiling.","Ein Mann, lächelnd.",x\n'
                    'Two dogs run.,Zwei Hunde rennen.,y\n"He said ""hi"".","Er sagte ""hallo"".",z\n'
                    + "".join(f"row {i},zeile {i},\n" for i in range(17)))
    rows = read_parallel_csv(good)
    assert rows[0] == {"source": "A man, smiling.", "target": "Ein Mann, lächelnd."}
    assert rows[2]["target"] == 'Er sagte "hallo".' and len(rows) == 20
    task = load_parallel_csv(good, dev_fraction=0.25, seed=3)
    assert task.is_seq2seq and task.main_metric == "bleu" and (len(task.train), len(task.dev)) == (15, 5)
    assert not {r["source"] for r in task.train} & {r["source"] for r in task.dev}
    assert task.source["kind"] == "csv" and str(good) in task.source["files"]
    assert task.compute_metrics(["ein mann mit einem hund"], ["ein mann mit einem hund"])["bleu"] == pytest.approx(100)
    bad = tmp_path / "bad.csv"
    bad.write_text("source,target\na,b\n")
    with pytest.raises(DataFormatError, match=r"no column\(s\) \['source_text', 'target_text'\]"):
        read_parallel_csv(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("source_text,target_text\na,b\n,c\n")
    with pytest.raises(DataFormatError, match="line 3: empty"):
        read_parallel_csv(empty)
    with pytest.raises(ValueError, match="seq2seq task"):
        load_parallel_csv(good, name="sst2")


def test_recovery_grid_reuses_the_fd_stage(tiny_bert, cls_task, tmp_path):
    from mpstudy.studies.svd_distillation import recovery_grid

    model, tok = tiny_bert
    config = SvdDistillConfig(rank=8, fd_lr=1e-3, kd_lr=1e-3)
    train_config = TrainConfig(batch_size=32, max_length=32, progress=False)
    rows = recovery_grid(model, tok, cls_task, config, train_config, methods=("svd",), seeds=(0, 1), cache_dir=tmp_path)
    assert sorted((r["plan"], r["seed"]) for r in rows) == [
        ("fd", 0), ("fd", 1), ("fd+kd", 0), ("fd+kd", 1), ("kd", 0), ("kd", 1), ("none", 0)]
    # the "fd" row is what plan "fd" alone gives (same seed, deterministic run)
    _, alone = compress_and_distill(model, tok, cls_task, SvdDistillConfig(rank=8, fd_lr=1e-3, plan="fd"),
                                    TrainConfig(batch_size=32, max_length=32, progress=False, seed=1), cache_dir=tmp_path)
    fd1 = next(r for r in rows if r["plan"] == "fd" and r["seed"] == 1)
    assert fd1["score"] == alone["score"]
    assert all(r["rank"] == 8 for r in rows)


def test_train_step_seconds_leaves_the_model_alone(tiny_bert, cls_task):
    from mpstudy.studies.svd_distillation import train_step_seconds

    model, tok = tiny_bert
    fingerprint = model_fingerprint(model)
    probe = train_step_seconds(model, tok, cls_task, steps=2, batch_size=16, max_length=32)
    assert probe["steps_measured"] == 2 and probe["steps_per_epoch"] == 4
    assert probe["epoch_seconds"] == pytest.approx(4 * probe["step_seconds"])
    assert model_fingerprint(model) == fingerprint
    with pytest.raises(ValueError, match="steps must be a positive int"):
        train_step_seconds(model, tok, cls_task, steps=0)
