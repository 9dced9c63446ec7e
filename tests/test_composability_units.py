"""Study 05's campaign units: a recorded unit is read back, not recomputed; its predictions are in dev order;
the tables' intervals and the time verdicts against hand computation."""
import math

import pytest

from mpstudy import load_model, load_task
from mpstudy.campaign import Lazy
from mpstudy.stats import score_interval
from mpstudy.studies.composability import (CLS, COMPOSABILITY, CompSettings, ConfigurationRow, Teacher, pruned_variants,
                                           run_unit, score_table, seed_difference, selection_split, time_table,
                                           tune_unit, tuned_variants)
from mpstudy.studies.composability.claims import time_verdicts
from mpstudy.train import predict


@pytest.fixture(scope="module")
def setup():
    task = load_task("synthetic-cls", max_train=64, max_eval=24)
    model, tok = load_model("tiny-bert", task=task)
    settings = CompSettings(track=CLS, attention_keep=(0.5,), linear_keep=(0.3,), batch_size=16, max_length=32,
                            precision="fp32", module_lr=1e-3, module_steps=2, module_eval_every=1, module_patience=None,
                            module_select_share=0.25, lr=1e-3, steps=2, eval_every=1, warmup_ratio=0.0)
    teacher = Teacher(Lazy(lambda: (model, tok)), {"model": "tiny-bert", "test": True})
    return task, model, tok, settings, teacher


def test_units_record_dev_order_and_are_read_back(setup, tmp_path):
    task, model, tok, settings, teacher = setup
    pruned = pruned_variants(settings, teacher)
    tuned = tuned_variants(settings, teacher, pruned, task, 0)
    tune = tune_unit(settings, teacher, task, 0, "test", pruned=pruned, tuned=tuned, results_dir=tmp_path)
    run = run_unit(settings, teacher, task, 0, COMPOSABILITY, 0, "test", pruned=pruned, tuned=tuned, results_dir=tmp_path)
    res = run["result"]
    assert len(res["predictions"]) == len(task.dev) == len(res["start_predictions"])
    assert [h["step"] for h in res["history"]] == [0, 1, 2] and res["steps"] == 2
    assert tune["result"]["steps"] == 2 and set(tune["result"]["val_after"]) == set(tune["result"]["val_before"])
    # the start predictions are those of the composed model, in dev order
    from mpstudy.prune import compose
    composed = compose(model, pruned()["configs"][0], tuned()["tuned"])
    preds, _ = predict(composed, tok, task, max_length=32)
    assert res["start_predictions"] == [int(p) for p in preds]
    # read back: a compute that would fail is never called
    never = Teacher(Lazy(lambda: 1 / 0), teacher.identity)
    again = run_unit(settings, never, task, 0, COMPOSABILITY, 0, "test", pruned=Lazy(lambda: 1 / 0),
                     tuned=Lazy(lambda: 1 / 0), results_dir=tmp_path)
    assert again["result"] == res


def test_selection_split_holds_out_training_rows(setup):
    task = setup[0]
    split = selection_split(task, 0.25)
    assert len(split.dev) == 16 and len(split.train) == 48
    assert sorted(map(str, split.dev + split.train)) == sorted(map(str, task.train))
    with pytest.raises(ValueError, match="module_select_share"):
        selection_split(task, 1.5)


def test_seed_difference_is_the_t_interval():
    d = seed_difference({0: -3.0, 1: -5.0, 2: -4.0})
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) x sd 1 / sqrt(3)
    assert d.estimate == pytest.approx(-4.0) and d.high == pytest.approx(-4.0 + half) and d.seeds == 3
    assert seed_difference({0: 1.0}).seeds == 1


def _fake(history, steps=4):
    return {"result": {"history": history, "steps": steps, "stored": 1, "nonzero": 1,
                       "start_predictions": [1, 0], "predictions": [1, 0]}}


def test_time_table_and_verdicts_count_the_tuning_share_and_censoring():
    hist_fast = [{"step": 0, "train_s": 0.0, "dev_accuracy": 0.5}, {"step": 2, "train_s": 2.0, "dev_accuracy": 0.9}]
    hist_slow = [{"step": 0, "train_s": 0.0, "dev_accuracy": 0.5}, {"step": 2, "train_s": 2.0, "dev_accuracy": 0.6},
                 {"step": 4, "train_s": 4.0, "dev_accuracy": 0.7}]
    runs = {}
    for s in range(3):
        runs[(0, COMPOSABILITY, s)] = _fake(hist_fast)
        runs[(0, "baseline", s)] = _fake(hist_slow)
    tunes = {s: {"result": {"seconds": 0.3 * (1 + s)}} for s in range(3)}
    table = time_table(CLS, "accuracy", runs, tunes, {s: 0.8 for s in range(3)}, n_configs=3)
    comp = table[table.arm == COMPOSABILITY].set_index("seed")
    assert list(comp.total_s) == pytest.approx([2.1, 2.2, 2.3])  # 2 s to the target + a third of the tuning
    base = table[table.arm == "baseline"].set_index("seed")
    assert not base.reached.any() and list(base.censored_s) == [4.0] * 3  # the budget: a lower bound
    rows = [ConfigurationRow.from_dict({**r, "total_seconds_to_target": r["total_s"]}) for r in table.to_dict("records")]
    (verdict,) = time_verdicts(rows)
    assert verdict["diff"].estimate == pytest.approx(2.2 - 4.0)
    assert verdict["verdict"] == "holds"  # the whole interval is below 0 (the baseline's time is only a lower bound)
    rows_late = [r if r.arm == "baseline" else ConfigurationRow.from_dict({**r.to_dict(), "censored_s": 9.0, "reached": False})
                 for r in rows]
    assert time_verdicts(rows_late)[0]["verdict"] == "inconclusive"  # neither arm reached it


def test_score_table_intervals_match_score_interval():
    refs = [0, 1] * 10
    runs = {}
    for s in range(2):
        good = [y if i > s else 1 - y for i, y in enumerate(refs)]
        runs[(0, COMPOSABILITY, s)] = {"result": {"predictions": good, "start_predictions": good, "stored": 1, "nonzero": 1}}
        runs[(0, "baseline", s)] = {"result": {"predictions": [1] * 20, "start_predictions": [1] * 20, "stored": 1,
                                               "nonzero": 1}}
    table = score_table(CLS, "sst2", runs, refs, {0: refs, 1: refs}, trivial=0.5, resamples=200).set_index(["config", "arm"])
    expected = score_interval("sst2", {s: runs[(0, COMPOSABILITY, s)]["result"]["predictions"] for s in range(2)}, refs,
                              resamples=200)
    row = table.loc[(0, COMPOSABILITY)]
    assert (row.score, row.score_low, row.score_high) == pytest.approx((expected.estimate, expected.low, expected.high))
    assert bool(table.loc[(0, "baseline"), "collapse"]) and not bool(row.collapse)  # constant 1 = the trivial 0.5
    assert row.final_gain == pytest.approx(expected.estimate - 0.5)
