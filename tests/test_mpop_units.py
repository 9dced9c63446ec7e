"""Study 01's campaign units (mpstudy.studies.mpop.units): what a unit records, that a recorded unit is
read back instead of retrained, that squeezing starts from the very model its fine-tuning unit scored,
that the cuts are chosen on held-out training rows, and the tables' intervals against hand-computed
scores. Tiny-bert on the synthetic task, a few steps: ~10 s."""
from types import SimpleNamespace

import pytest

from mpstudy.campaign import Lazy
from mpstudy.studies.mpop import (DENSE, LORA, MPO_FULL, MPO_LIGHTWEIGHT, MpopSettings, SqueezeSettings,
                                  finetune_unit, selection_task, squeeze_table, squeeze_unit, trained_model,
                                  unit_names, variant_table)
from mpstudy.tasks import load_task

SETTINGS = MpopSettings(model_name="tiny-bert", batch_size=16, max_length=16, precision="fp32", epochs=1, max_steps=2,
                        warmup_ratio=0.0, lr=1e-3, mpo_lr=1e-3, light_lr=1e-3, lora_lr=1e-3, lora_rank=2,
                        mpo_groups=("attention",), caps={"emb_cap": None, "attention_cap": None, "linear_cap": None})


@pytest.fixture(scope="module")
def task():
    return load_task("synthetic-cls", max_train=64, max_eval=24, seed=0)


def test_selection_rows_are_held_out_of_training(task):
    select = selection_task(task, 0.25, seed=0)
    key = lambda ex: (ex["text"], ex["label"]) if "text" in ex else tuple(sorted(ex.items()))  # noqa: E731
    held, rest = [key(e) for e in select.dev], [key(e) for e in select.train]
    assert len(held) == 16 and len(rest) == 48 and sorted(held + rest) == sorted(key(e) for e in task.train)
    assert select.dev == selection_task(task, 0.25, seed=0).dev  # seeded
    for bad in (0, 1.0, True, "0.1"):
        with pytest.raises(ValueError, match="select_share"):
            selection_task(task, bad)


def test_units_record_predictions_are_reused_and_squeeze_starts_from_the_scored_model(task, tmp_path):
    light = trained_model(SETTINGS, task, MPO_LIGHTWEIGHT, 0)
    record = finetune_unit(SETTINGS, task, MPO_LIGHTWEIGHT, 0, "smoke", trained=light, results_dir=tmp_path)
    result = record["result"]
    refs = [ex["label"] for ex in task.dev]
    assert len(result["predictions"]) == len(task.dev) == 24
    assert result["metrics"]["accuracy"] == pytest.approx(sum(p == r for p, r in zip(result["predictions"], refs)) / 24)
    assert result["trainable"] < result["stored"] and result["steps"] == 2
    assert record["unit"] == "smoke-synthetic-cls-mpo-light-seed0"

    def never():
        raise AssertionError("a recorded unit must not be trained again")

    again = finetune_unit(SETTINGS, task, MPO_LIGHTWEIGHT, 0, "smoke", trained=Lazy(never), results_dir=tmp_path)
    assert again == record

    squeeze = SqueezeSettings(cuts=1, step=0.5, steps=1, tolerance=1.0, select_share=0.25, lr=1e-3)
    squeezed = squeeze_unit(SETTINGS, squeeze, task, 0, "smoke", trained=light, results_dir=tmp_path)["result"]
    # the squeeze starts from the model the fine-tuning unit scored (shared, not retrained) and leaves it unchanged
    assert squeezed["start_predictions"] == result["predictions"]
    assert squeezed["tried"] == 1 and squeezed["accepted"] == 1  # tolerance 1.0 accepts any cut
    assert squeezed["stored"] < squeezed["start_stored"] == result["stored"]
    assert squeezed["select_rows"] == 16 and squeezed["trajectory"][0]["cut"] == 0
    assert finetune_unit(SETTINGS, task, MPO_LIGHTWEIGHT, 0, "smoke", trained=Lazy(never),
                         results_dir=tmp_path)["result"]["predictions"] == result["predictions"]
    assert unit_names("smoke", "synthetic-cls", [0])[-1] == "smoke-synthetic-cls-squeeze-seed0"


def _dense(preds_by_seed, refs):
    fake_task = SimpleNamespace(name="sst2")
    return {s: SimpleNamespace(task=fake_task, record={"result": {"predictions": p, "references": refs}})
            for s, p in preds_by_seed.items()}


def _right(n_right, refs):
    return [r if i < n_right else 1 - r for i, r in enumerate(refs)]


def test_tables_score_and_pair_against_hand_counts():
    refs = [i % 2 for i in range(400)]
    dense = _dense({s: _right(360, refs) for s in (0, 1, 2)}, refs)  # 0.90
    result = lambda n, stored, trainable: {"result": {"predictions": _right(n, refs), "stored": stored,  # noqa: E731
                                                       "trainable": trainable, "dense_stored": 1000}}
    records = {}
    for s in (0, 1, 2):
        records[(MPO_FULL, s)] = result(359, 800, 800)
        records[(MPO_LIGHTWEIGHT, s)] = result(356 + s, 800, 90)  # 0.89, 0.8925, 0.895
        records[(LORA, s)] = result(300, 1010, 10)  # 0.75: 15 points below dense
    table = variant_table(dense, records, resamples=200).set_index("variant")
    assert list(table.index) == [DENSE, MPO_FULL, MPO_LIGHTWEIGHT, LORA]
    assert table.loc[DENSE, "score"] == pytest.approx(0.90) and table.loc[LORA, "score"] == pytest.approx(0.75)
    light = table.loc[MPO_LIGHTWEIGHT]
    assert light.score == pytest.approx((356 + 357 + 358) / 1200) and light.trainable_share == pytest.approx(0.09)
    assert light.vs_dense == pytest.approx(light.score - 0.90) and light.vs_dense_low <= light.vs_dense <= light.vs_dense_high
    assert table.loc[LORA, "on_par"] == "does not hold here"
    assert table.loc[MPO_FULL, "on_par"] == "holds"  # a quarter point below in every seed, on the same examples
    with pytest.raises(ValueError, match="seeds"):
        variant_table(dense, {k: v for k, v in records.items() if k != (LORA, 2)}, resamples=200)

    squeezed = {s: {"result": {"predictions": _right(350, refs), "start_predictions": _right(356, refs),
                               "start_stored": 800, "stored": 700, "accepted": 2, "tried": 3}} for s in (0, 1)}
    rows = squeeze_table(squeezed, refs, "sst2", resamples=200).set_index("seed")
    assert list(rows.index) == [0, 1, "all"] and rows.loc["all", "accepted"] == 4 and rows.loc["all", "tried"] == 6
    assert rows.loc["all", "vs_start"] == pytest.approx(-6 / 400) and rows.loc[0, "start_score"] == pytest.approx(0.89)
