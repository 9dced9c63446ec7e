"""Study 04's campaign units (mpstudy.studies.offline.units): what a grid unit and a fine-tuning unit record,
that a recorded unit is read back instead of recomputed, that only the seeded method reruns for a second
seed, and the tables' intervals and collapse flags against hand-computed scores. Tiny-bert on the
synthetic task, two training steps: ~5 s."""
from types import SimpleNamespace

import pytest

from mpstudy.campaign import Lazy
from mpstudy.stats import score_interval
from mpstudy.studies.offline import (DENSE, FinetuneSettings, GridSettings, finetune_plan, finetune_table,
                                     finetune_unit, grid_frame, grid_unit, paired_table, pretrained, unit_names)
from mpstudy.tasks import load_task

GRID = GridSettings(model_name="tiny-bert", crs=(3,), methods=("offline-ae", "offline-svd"),
                    modes=("separated", "concatenated"), ae_epochs={"key": 1, "word_embeddings": 1}, ae_batch_size=64,
                    ae_lr=3e-3, drift_sentences=8, max_length=16)
FT = FinetuneSettings(batch_size=16, max_length=16, precision="fp32", lr=1e-3, epochs=1, max_steps=2, warmup_ratio=0.0)
KEY = ("key", 3, "concatenated")


def never():
    raise AssertionError("a recorded unit must not be computed again")


@pytest.fixture(scope="module")
def task():
    return load_task("synthetic-cls", max_train=64, max_eval=24, seed=0)


@pytest.fixture(scope="module")
def base(task):
    return pretrained(GRID.model_name, task, GRID.drift_sentences, GRID.max_length)


def test_grid_units_run_the_seeded_method_only_after_the_first_seed_and_are_reused(task, base, tmp_path):
    first = grid_unit(GRID, task, "key", 0, "smoke", base=base, results_dir=tmp_path)
    second = grid_unit(GRID, task, "key", 1, "smoke", base=base, results_dir=tmp_path)
    assert first["unit"] == "smoke-synthetic-cls-grid-key-seed0"
    assert [(r["method"], r["mode"]) for r in first["result"]["rows"]] == [
        ("offline-ae", "separated"), ("offline-svd", "separated"), ("offline-ae", "concatenated"),
        ("offline-svd", "concatenated")]
    assert {r["method"] for r in second["result"]["rows"]} == {"offline-ae"} and len(second["result"]["rows"]) == 2
    assert grid_unit(GRID, task, "key", 1, "smoke", base=Lazy(never), results_dir=tmp_path) == second
    frame = grid_frame([first, second])
    assert sorted(frame.method.unique()) == ["ae", "svd"] and frame.feasible.all()
    assert frame[frame.method == "ae"].groupby("mode").seed.nunique().to_dict() == {"concatenated": 2, "separated": 2}
    # two seeds of the autoencoder are two different autoencoders; the deterministic SVD ran once
    ae = frame[(frame.method == "ae") & (frame["mode"] == "separated")].sort_values("seed")
    assert ae.row_cosine.iloc[0] != ae.row_cosine.iloc[1]
    # word embeddings are one matrix: one mode only (not run here: tiny-bert's table is 30,522 rows)
    assert GRID.modes_of("word_embeddings") == ("separated",) and GRID.modes_of("key") == GRID.modes


def test_finetune_units_record_dev_predictions_and_are_reused(task, base, tmp_path):
    refs = [ex["label"] for ex in task.dev]
    records = {}
    for cell, method in ((None, DENSE), (KEY, "offline-ae")):
        record = finetune_unit(GRID, FT, task, cell, method, 0, "smoke", base=base, results_dir=tmp_path)
        result = records[method] = record["result"]
        assert len(result["predictions"]) == len(task.dev) == 24 and result["steps"] == 2
        assert result["metrics"]["accuracy"] == pytest.approx(sum(p == r for p, r in zip(result["predictions"], refs)) / 24)
    assert records[DENSE]["offline"] is None
    offline = records["offline-ae"]["offline"]
    assert offline["feasible"] and abs(offline["achieved_cr"] - 3) < 0.2 and 0 < offline["sentence_cosine"] <= 1
    assert records["offline-ae"]["stored"] < records[DENSE]["stored"]  # the compressed model stores fewer numbers
    again = finetune_unit(GRID, FT, task, KEY, "offline-ae", 0, "smoke", base=Lazy(never), results_dir=tmp_path)
    assert again["result"] == records["offline-ae"] and again["unit"] == "smoke-synthetic-cls-ft-ae-key-cr3-concatenated-seed0"
    # a ratio the method cannot meet is recorded as refused, without training
    refused = finetune_unit(GRID, FT, task, ("key", 25, "separated"), "offline-svd", 0, "smoke", base=base,
                            results_dir=tmp_path)["result"]
    assert refused["feasible"] is False and "CR 25" in refused["error"] and "predictions" not in refused


def test_the_plan_names_every_unit_and_refuses_bad_cells():
    plan = finetune_plan([["key", 10, "concatenated"], ["key", 10, "separated", ["offline-ae"]]],
                         ["offline-ae", "offline-svd"])
    assert plan == [(None, DENSE), (("key", 10, "concatenated"), "offline-ae"), (("key", 10, "concatenated"), "offline-svd"),
                    (("key", 10, "separated"), "offline-ae")]
    names = unit_names("cpu", "sst2", ["key"], [0, 1], plan, [0, 1, 2])
    assert len(names) == 2 + 4 * 3 and names[0] == "cpu-sst2-grid-key-seed0" and "cpu-sst2-ft-dense-seed2" in names
    assert "cpu-sst2-ft-svd-key-cr10-concatenated-seed1" in names
    with pytest.raises(ValueError, match="mode in"):
        finetune_plan([["key", 10, "joint"]], ["offline-ae"])
    with pytest.raises(ValueError, match="fine-tuned method must be one of"):
        finetune_plan([["key", 10, "separated"]], ["ae"])


def _right(n_right, refs):
    return [r if i < n_right else 1 - r for i, r in enumerate(refs)]


def test_tables_score_pair_and_flag_collapses_against_hand_counts():
    refs = [i % 2 for i in range(400)]
    fake_task = SimpleNamespace(name="sst2")
    dense = {s: SimpleNamespace(task=fake_task, record={"result": {"predictions": _right(360, refs), "references": refs,
                                                                   "trivial": 0.5}}) for s in (0, 1, 2)}  # 0.90
    record = lambda n: {"result": {"feasible": True, "predictions": _right(n, refs)}}  # noqa: E731
    records = {}
    for s in (0, 1, 2):
        records[(None, DENSE, s)] = record(340)  # 0.85
        records[(KEY, "offline-ae", s)] = record(318 + s)  # 0.795, 0.7975, 0.80
        records[(KEY, "offline-svd", s)] = {"result": {"feasible": True, "predictions": [1] * 400}}  # the majority class
        records[(("key", 3, "separated"), "offline-ae", s)] = {"result": {"feasible": False, "error": "CR"}}
    table = finetune_table(dense, records, resamples=200).set_index("model")
    assert list(table.index) == ["dense (shared baseline)", "dense (same budget)", "ae key CR 3 concatenated",
                                 "svd key CR 3 concatenated"]  # the refused configuration is left out
    assert table.loc["dense (shared baseline)", "score"] == pytest.approx(0.90)
    ae = table.loc["ae key CR 3 concatenated"]
    assert ae.score == pytest.approx((318 + 319 + 320) / 1200) and ae.vs_dense == pytest.approx(ae.score - 0.85)
    assert ae.vs_dense_low < ae.vs_dense < ae.vs_dense_high < 0 and not ae.collapse
    expected = score_interval("sst2", {s: records[(KEY, "offline-ae", s)]["result"]["predictions"] for s in (0, 1, 2)},
                              refs, resamples=200)
    assert (ae.score_low, ae.score_high) == pytest.approx((expected.low, expected.high))
    assert table.loc["svd key CR 3 concatenated", "collapse"] and not table.loc["dense (same budget)", "collapse"]
    pairs = [((KEY, "offline-ae"), (KEY, "offline-svd")), ((KEY, "offline-ae"), (("key", 3, "separated"), "offline-ae"))]
    diffs = paired_table(records, pairs, "sst2", refs, resamples=200)
    assert len(diffs) == 1 and diffs.difference.iloc[0] == pytest.approx(ae.score - 0.5)
    assert diffs.seeds.iloc[0] == 3 and diffs.low.iloc[0] > 0
    with pytest.raises(ValueError, match="seeds"):
        finetune_table(dense, {k: v for k, v in records.items() if k != (KEY, "offline-svd", 2)}, resamples=200)
