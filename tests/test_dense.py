"""The dense baselines as campaign units (mpstudy.studies.dense), on the smoke profile (tiny-bert, synthetic)."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from mpstudy.cache import weights_hash
from mpstudy.campaign import coverage, unit_path
from mpstudy.profiles import DENSE, dense_settings
from mpstudy.studies import dense as dense_mod
from mpstudy.studies.artefacts import unit_model_dir
from mpstudy.studies.dense import dense_baseline, dense_interval, dense_unit_name, main


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    monkeypatch.delenv("MPSTUDY_DEADLINE", raising=False)
    return {"results_dir": str(tmp_path / "results"), "cache_dir": str(tmp_path / "cache")}


def test_a_dense_unit_records_scores_interval_guard_and_predictions_then_reads_them(dirs, monkeypatch):
    base = dense_baseline("synthetic-cls", seed=0, profile="smoke", resamples=200, **dirs)
    result = base.record["result"]
    assert result["dev_rows"] == len(result["predictions"]) == len(result["references"]) == 64
    # the recorded metrics are the metrics of the recorded predictions (no number without its source)
    acc = sum(p == r for p, r in zip(result["predictions"], result["references"])) / 64
    assert math.isclose(result["metrics"]["accuracy"], acc) and math.isclose(base.score, acc)
    assert base.interval.low <= acc <= base.interval.high and base.interval.seeds == 1
    assert result["learned"] == (base.interval.low > result["trivial"])
    assert result["steps"] > 0 and result["weights"] and result["precision"] == "fp32"
    assert base.model.made  # trained to compute the unit
    path = unit_path("dense", dense_unit_name("smoke", "synthetic-cls", "tiny-bert", 0), dirs["results_dir"])
    assert path.is_file()

    # recorded: a second call trains nothing until someone asks for the model
    monkeypatch.setattr(dense_mod, "finetuned_baseline", lambda *a, **k: pytest.fail("retrained a recorded unit"))
    again = dense_baseline("synthetic-cls", seed=0, profile="smoke", resamples=200, **dirs)
    assert again.record == base.record and not again.model.made

    # the model follows the record, not the code version: loaded from the unit's artefact, same weights
    model, _ = again.model()
    assert weights_hash(model) == result["weights"]
    home = unit_model_dir(base.record["unit"], base.record["spec"], dirs["cache_dir"])
    marker = home / "unit-model.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "weights": "0" * 16}))
    with pytest.raises(ValueError, match="kept model hashes to .* not to its record's weights"):
        dense_baseline("synthetic-cls", seed=0, profile="smoke", resamples=200, **dirs).model()


def test_a_retrained_dense_model_that_differs_from_its_record_is_refused(dirs, monkeypatch):
    base = dense_baseline("synthetic-cls", seed=1, profile="smoke", resamples=200, **dirs)
    shutil.rmtree(unit_model_dir(base.record["unit"], base.record["spec"], dirs["cache_dir"]))
    model, tokenizer = base.model()
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # what a change in the training code would do
    info = {"result": {"steps": 1, "best_step": 1, "train_seconds": 0.0, "history": []}}
    monkeypatch.setattr(dense_mod, "finetuned_baseline", lambda *a, **k: (model, tokenizer, info))
    with pytest.raises(ValueError, match="trained now hashes to .* not to the recorded weights .* MPSTUDY_RERUN_STALE=1"):
        dense_baseline("synthetic-cls", seed=1, profile="smoke", resamples=200, **dirs).model()


def test_the_dense_cli_runs_the_missing_units_and_combines_seeds(dirs, capsys):
    assert main(["--profile", "smoke", "--results-dir", dirs["results_dir"]]) == 0
    err = capsys.readouterr().err
    assert "dense units: 2 of 2 recorded" in err and "seed1" in err
    cov = coverage("dense", dirs["results_dir"])
    assert cov["complete"] and cov["planned"] == len(DENSE["smoke"]["seeds"])
    both = dense_interval("synthetic-cls", [0, 1], profile="smoke", results_dir=dirs["results_dir"])
    assert both.seeds == 2 and both.low <= both.estimate <= both.high
    with pytest.raises(ValueError, match="no dense record for synthetic-cls seed 5"):
        dense_interval("synthetic-cls", [0, 5], profile="smoke", results_dir=dirs["results_dir"])


def test_dense_settings_name_what_is_defined():
    assert dense_settings("cpu", "sst2")["train"]["lr"] == DENSE["cpu"]["tasks"]["sst2"]["lr"]
    with pytest.raises(ValueError, match="no dense baseline is defined for task 'qnli'"):
        dense_settings("cpu", "qnli")
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        dense_settings("fast", "sst2")
