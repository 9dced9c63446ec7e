"""Study 03's campaign units (mpstudy.studies.svd_distillation.units): what a unit records, that a recorded
unit is read back instead of retrained, that the plans of a seed train on the same seeded rows, and the
tables' intervals against hand-computed scores. Tiny-bert (random init) on the synthetic task, 1 step."""
from types import SimpleNamespace

import pytest

from mpstudy.campaign import Lazy
from mpstudy.models import load_model
from mpstudy.studies.svd_distillation import (DistillSettings, bleu_table, paired_table, recovery_rows, recovery_table,
                                              recovery_unit, unit_names, untrained_table, untrained_unit)
from mpstudy.tasks import load_task

SETTINGS = DistillSettings(keep=0.5, steps=1, batch_size=8, max_length=16, precision="fp32", fd_lr=1e-3, kd_lr=1e-3,
                           fisher_examples=8, fisher_batch_size=4)


@pytest.fixture(scope="module")
def dense():
    task = load_task("synthetic-cls", max_train=32, max_eval=12, seed=0)
    refs = [ex["label"] for ex in task.dev]
    record = {"spec": {"seed": 0}, "spec_key": "tiny-random", "result": {"references": refs, "predictions": refs}}
    return SimpleNamespace(task=task, record=record, model=Lazy(lambda: load_model("tiny-bert", task=task, seed=0)))


def test_recovery_rows_are_seeded_and_drawn_from_training():
    task = load_task("synthetic-cls", max_train=40, max_eval=12, seed=0)
    rows = recovery_rows(task, 16, seed=3)
    assert len(rows.train) == 16 and all(r in task.train for r in rows.train) and len(rows.dev) == 8
    assert rows.train == recovery_rows(task, 16, seed=3).train != recovery_rows(task, 16, seed=4).train
    assert len(recovery_rows(task, 100, seed=0).train) == 40  # at most the whole split
    with pytest.raises(ValueError, match="recovery rows"):
        recovery_rows(task, 0, seed=0)


def test_units_record_predictions_in_dev_order_and_are_reused(dense, tmp_path):
    refs = dense.record["result"]["references"]
    untrained = untrained_unit(dense, SETTINGS, [0.3], "smoke", results_dir=tmp_path)["result"]
    assert sorted({(r["method"], r["keep"]) for r in untrained["rows"]}) == [
        ("fwsvd", 0.3), ("fwsvd", 0.5), ("svd", 0.3), ("svd", 0.5)]
    row = next(r for r in untrained["rows"] if (r["method"], r["keep"]) == ("svd", 0.5))
    assert len(row["predictions"]) == 12
    assert row["metrics"]["accuracy"] == pytest.approx(sum(p == r for p, r in zip(row["predictions"], refs)) / 12)
    assert untrained["budget"]["rank"] == row["rank"] and untrained["latency"] is None

    record = recovery_unit(dense, SETTINGS, "svd", "fd+kd", "smoke", cache_dir=tmp_path, results_dir=tmp_path)
    result = record["result"]
    assert record["unit"] == "smoke-synthetic-cls-svd-fdkd-seed0"
    assert set(result["predictions"]) == {"none", "fd", "fd+kd"} and result["recovery_rows"] == 8
    assert result["predictions"]["none"] == row["predictions"]  # the same factorization as the untrained unit's
    assert result["stages"]["fd"]["steps"] == result["stages"]["kd"]["steps"] == 1
    assert result["model_params"] < result["dense_params"]

    def never():
        raise AssertionError("a recorded unit must not be trained again")

    again = SimpleNamespace(task=dense.task, record=dense.record, model=Lazy(never))
    assert recovery_unit(again, SETTINGS, "svd", "fd+kd", "smoke", results_dir=tmp_path) == record
    with pytest.raises(ValueError, match="plan must be one of"):
        recovery_unit(again, SETTINGS, "svd", "fd", "smoke", results_dir=tmp_path)
    assert unit_names("smoke", "synthetic-cls", [0], [("svd", "kd")]) == [
        "smoke-synthetic-cls-untrained-seed0", "smoke-synthetic-cls-svd-kd-seed0"]


def _right(n_right, refs):
    return [r if i < n_right else 1 - r for i, r in enumerate(refs)]


def test_tables_score_and_pair_against_hand_counts():
    refs = [i % 2 for i in range(400)]
    task = SimpleNamespace(name="sst2")
    dense = {s: SimpleNamespace(task=task, record={"result": {"references": refs, "predictions": _right(360, refs)}})
             for s in (0, 1, 2)}  # 0.90
    untrained = {s: {"result": {"dense_params": 1000, "rows": [
        {"method": m, "keep": k, "rank": 4, "kept_fraction": k, "model_params": 800, "predictions": _right(n, refs)}
        for m, k, n in (("svd", 0.6, 280), ("fwsvd", 0.6, 300), ("svd", 0.3, 200), ("fwsvd", 0.3, 200))]}}
        for s in (0, 1, 2)}
    recovered = {}
    for s in (0, 1, 2):
        recovered[("svd", "kd", s)] = {"result": {"predictions": {"none": [], "kd": _right(340, refs)}}}
        recovered[("svd", "fd+kd", s)] = {"result": {"predictions": {"none": [], "fd": _right(330, refs),
                                                                     "fd+kd": _right(352 + s, refs)}}}
    table = recovery_table(dense, untrained, recovered, 0.6, resamples=200).set_index(["method", "plan"])
    assert table.loc[("svd", "kd"), "score"] == pytest.approx(0.85)
    fdkd = table.loc[("svd", "fd+kd")]
    assert fdkd.score == pytest.approx((352 + 353 + 354) / 1200) and fdkd.vs_dense == pytest.approx(fdkd.score - 0.9)
    assert fdkd.vs_dense_low <= fdkd.vs_dense <= fdkd.vs_dense_high and fdkd.minimal_loss == "inconclusive"
    assert table.loc[("svd", "kd"), "minimal_loss"] == "does not hold here"  # 5 points below in every seed
    assert table.loc[("svd", "none"), "collapse"] == False  # noqa: E712 -- 0.70 is far above 0.5
    pairs = paired_table(dense, untrained, recovered, 0.6, [(("svd", "fd+kd"), ("svd", "kd")),
                                                            (("svd", "fd+kd"), ("fwsvd", "fd+kd"))], resamples=200)
    assert len(pairs) == 1 and pairs.difference[0] == pytest.approx(fdkd.score - 0.85) and pairs.a_beats_b[0] == "holds"
    sweep = untrained_table(dense, untrained, resamples=200).set_index("keep")
    assert sweep.loc[0.6, "fwsvd_minus_svd"] == pytest.approx(0.05) and sweep.loc[0.6, "fwsvd_beats"] == "holds"
    assert sweep.loc[0.3, "fwsvd_minus_svd"] == 0 and sweep.loc[0.3, "fwsvd_beats"] == "does not hold here"


def test_bleu_table_pairs_every_recovery_seed_with_the_one_teacher():
    refs = [f"ein mann mit {i} hunden geht nach hause" for i in range(100)]
    teacher = {"result": {"task": "multi30k", "references": refs, "model_params": {"original": 10, "none": 6},
                          "predictions": {"original": refs, "none": refs[:50] + ["katze"] * 50}}}
    recovered = {s: {"result": {"model_params": 6, "predictions": {"fd+kd": refs}}} for s in (0, 1)}
    table = bleu_table(teacher, recovered, resamples=200).set_index("plan")
    assert table.loc["original", "bleu"] == pytest.approx(100) and table.loc["fd+kd", "vs_original"] == pytest.approx(0)
    assert table.loc["fd+kd", "within_1_bleu"] == "holds"  # two seeds, both exactly the teacher
    assert table.loc["none", "vs_original_high"] < -1 and table.loc["none", "within_1_bleu"] == "inconclusive"  # 1 model
    assert table.loc["fd+kd", "seeds"] == 2
