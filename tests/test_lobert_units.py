"""Study 02's campaign units (mpstudy.studies.lobert.units): what a student unit records, that a recorded unit
is read back instead of retrained (its teacher never loaded), that each loss trains the terms it names, the
decompositions' counts against the shape-only plan, the collapse test and the tables' intervals against
hand-computed scores. Tiny-bert on the synthetic task, 2 steps per student: ~10 s."""
import math
from types import SimpleNamespace

import pytest

from mpstudy import load_model
from mpstudy.campaign import Lazy
from mpstudy.studies.lobert import (CE, DENSE, FROM_TEACHER, KD, LOSS_ABLATION, MAIN, SGD_ABLATION, SGD_FIT,
                                    LobertSettings, Student, collapsed, decompose_unit, draw_rows, mode_plan,
                                    pkd_table, student_table, student_unit, student_unit_name,
                                    trivial_interval)
from mpstudy.tasks import load_task

SETTINGS = LobertSettings(model_name="tiny-bert", batch_size=16, max_length=16, precision="fp32", train_rows=48,
                          epochs=1, max_steps=2, warmup_ratio=0.0, lr=1e-3, temperature=2.0, alpha=0.5, pkd_beta=10.0,
                          n_iter=2, sgd_steps=3)


@pytest.fixture(scope="module")
def task():
    return load_task("synthetic-cls", max_train=64, max_eval=24, seed=0)


def _teacher(task, model=None):
    """A stand-in for a dense baseline: its task, record (spec key, dev references) and lazily made model."""
    refs = [ex["label"] for ex in task.dev]
    make = model or (lambda: load_model("tiny-bert", task=task, seed=7))
    return SimpleNamespace(task=task, model=Lazy(make),
                           record={"spec_key": "teacher0", "result": {"references": refs, "predictions": refs}})


def test_students_name_their_cell_and_refuse_unknown_labels():
    cell = Student(MAIN, "self_tuckerlayer", {"keep": 0.5, "stack_ranks": [3]})
    assert cell.label == "keep=0.5, stack_ranks=[3]" and cell.budget_dict == {"keep": 0.5, "stack_ranks": [3]}
    assert student_unit_name("cpu", "sst2", cell, 2) == "cpu-sst2-self-tuckerlayer-keep=0.5+stack-ranks=3-kd+pkd-seed2"
    sgd = Student(SGD_ABLATION, "self_falconlayer", fit=SGD_FIT, init=FROM_TEACHER)
    assert student_unit_name("smoke", "t", sgd, 0) == "smoke-t-self-falconlayer-default-kd+pkd-teacher-sgd-seed0"
    assert hash(cell) == hash(Student(MAIN, "self_tuckerlayer", {"keep": 0.5, "stack_ranks": [3]}))
    for bad, match in [(dict(part="grid", mode="self_svd"), "part must be one of"),
                       (dict(part=MAIN, mode="self-svd"), "mode must be one of"),
                       (dict(part=MAIN, mode="self_svd", loss="kd + pkd"), "loss must be one of"),
                       (dict(part=MAIN, mode=DENSE, budget={"keep": 0.5}), "the dense student has no budget")]:
        with pytest.raises(ValueError, match=match):
            Student(**bad)


def test_rows_are_drawn_by_seed(task):
    a, b = draw_rows(task, 20, 0), draw_rows(task, 20, 1)
    assert len(a.train) == 20 and a.train == draw_rows(task, 20, 0).train and a.train != b.train
    assert all(ex in task.train for ex in a.train) and a.dev == task.dev
    assert draw_rows(task, None, 0) is task and draw_rows(task, 1000, 0) is task


def test_a_student_records_dev_predictions_and_is_read_back(task, tmp_path):
    teacher = _teacher(task)
    cell = Student(MAIN, "self_svd")
    record = student_unit(SETTINGS, teacher, cell, 0, "smoke", results_dir=tmp_path, cache_dir=tmp_path / "cache")
    result = record["result"]
    refs = teacher.record["result"]["references"]
    assert record["unit"] == "smoke-synthetic-cls-self-svd-default-kd+pkd-seed0"
    assert len(result["predictions"]) == len(task.dev) == 24
    assert result["metrics"]["accuracy"] == pytest.approx(sum(p == r for p, r in zip(result["predictions"], refs)) / 24)
    assert result["steps"] == 2 and result["train_rows"] == 48 and result["kept"] == pytest.approx(0.5)
    assert result["matrices"] == 6 and result["stored"] < result["dense_stored"]
    assert set(result["last_losses"]) == {"loss", "ce", "kd", "pkd"}

    def never():
        raise AssertionError("a recorded unit must not load its teacher again")

    again = student_unit(SETTINGS, _teacher(task, never), cell, 0, "smoke", results_dir=tmp_path)
    assert again == record
    other = student_unit(SETTINGS, teacher, Student(LOSS_ABLATION, "self_svd", loss=KD), 0, "smoke",
                         results_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert set(other["result"]["last_losses"]) == {"loss", "ce", "kd"}  # no patience term without PKD


def test_ce_dense_and_teacher_start(task, tmp_path):
    teacher = _teacher(task)
    dense = student_unit(SETTINGS, teacher, Student(MAIN, DENSE, loss=CE), 1, "smoke", results_dir=tmp_path,
                         cache_dir=tmp_path / "cache")["result"]
    assert set(dense["last_losses"]) == {"loss", "ce"} and dense["kept"] == 1.0
    assert dense["stored"] == dense["dense_stored"]
    start = student_unit(SETTINGS, teacher, Student(MAIN, "self_falconlayer", init=FROM_TEACHER), 1, "smoke",
                         results_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert start["spec"]["init"] == FROM_TEACHER and start["result"]["kept"] < 0.5


def test_decompositions_match_the_plan(task, tmp_path):
    cells = [Student(MAIN, "self_svd"), Student(MAIN, "self_tuckerlayer"), Student(MAIN, DENSE),
             Student(SGD_ABLATION, "self_falconlayer", fit=SGD_FIT), Student(MAIN, "self_svd")]
    result = decompose_unit(SETTINGS, task, cells, "smoke", latency={"batch_size": 2, "seq_len": 8, "repeats": 1},
                            results_dir=tmp_path)["result"]
    rows = {(r["mode"], r["fit"]): r for r in result["decompositions"]}
    assert list(rows) == [("self_svd", "svd"), ("self_tuckerlayer", "svd"), ("self_falconlayer", "sgd")]
    for mode in ("self_svd", "self_tuckerlayer"):
        assert rows[(mode, "svd")]["kept"] == pytest.approx(mode_plan(mode, 2, 64, 128)["kept"])
    sgd = rows[("self_falconlayer", "sgd")]
    assert sgd["rel_error"] > 1 and sgd["sgd_mse_first"] > 0 and sgd["lost"] == 6  # LoBERT's fit: random attention
    assert {r["mode"] for r in result["cost"]} == {"self_svd", "self_tuckerlayer"}  # closed-form ones are timed
    assert {r["role"] for r in result["per_role"]} == {"query", "key", "value"}


def test_collapse_is_the_majority_interval_or_a_constant():
    refs = [1] * 450 + [0] * 422
    trivial = trivial_interval("sst2", refs, resamples=400)
    p = 450 / 872
    half = 1.96 * math.sqrt(p * (1 - p) / 872)  # the binomial spread of the majority share
    assert trivial.estimate == pytest.approx(p)
    assert trivial.low == pytest.approx(p - half, abs=0.006) and trivial.high == pytest.approx(p + half, abs=0.006)
    assert collapsed(0.52, trivial) and not collapsed(0.60, trivial)
    assert collapsed(0.484, trivial, {0: [0] * 872})  # the minority class, constant: a collapse too
    assert not collapsed(0.60, trivial, {0: [0] * 871 + [1], 1: [0] * 872})


def _right(n_right, refs):
    return [r if i < n_right else 1 - r for i, r in enumerate(refs)]


def test_tables_score_and_pair_against_hand_counts():
    refs = [i % 2 for i in range(400)]
    fake = SimpleNamespace(name="sst2")
    teachers = {s: SimpleNamespace(task=fake, record={"result": {"predictions": _right(360, refs), "references": refs}})
                for s in (0, 1, 2)}  # 0.90
    shape = {"kept": 0.5, "param_ratio": 0.9, "rel_error": 0.4}
    svd, tucker = Student(MAIN, "self_svd"), Student(MAIN, "self_tuckerlayer")
    kd = Student(LOSS_ABLATION, "self_svd", loss=KD)
    records = {}
    for s in (0, 1, 2):
        records[(svd, s)] = {"result": {"predictions": _right(356 + s, refs), **shape}}  # 0.89, 0.8925, 0.895
        records[(tucker, s)] = {"result": {"predictions": [0] * 400, **shape}}  # constant: 0.5, a collapse
        records[(kd, s)] = {"result": {"predictions": _right(340, refs), **shape}}  # 0.85
    table = student_table(teachers, records, resamples=200).set_index("mode")
    assert list(table.index) == ["teacher", "self_svd", "self_tuckerlayer", "self_svd"]
    row = table.iloc[1]
    assert row.score == pytest.approx((356 + 357 + 358) / 1200) and row.vs_teacher == pytest.approx(row.score - 0.90)
    assert row.vs_teacher_low <= row.vs_teacher <= row.vs_teacher_high and row.keeps == "holds" and not row.collapsed
    assert table.iloc[2].collapsed and table.iloc[2].keeps == "does not hold here"
    assert not table.iloc[0].collapsed and table.iloc[0].score == pytest.approx(0.90)
    pkd = pkd_table(records, refs, "sst2", resamples=200).iloc[0]
    assert pkd["mode"] == "self_svd" and pkd.seeds == 3 and pkd.kd == pytest.approx(0.85)
    assert pkd.pkd_minus_kd == pytest.approx((356 + 357 + 358) / 1200 - 0.85)
    assert pkd.pkd_minus_kd_low > 0  # every seed gains 4+ points on the same examples
    with pytest.raises(ValueError, match="no teacher record"):
        student_table({0: teachers[0]}, records, resamples=200)
