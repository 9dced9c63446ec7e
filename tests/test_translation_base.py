"""The scratch T5 as a campaign unit (mpstudy.studies.translation_base) on the smoke profile: the record
holds BLEU, its interval and the test predictions; a recorded unit is read back without training; the model
is its record's artefact (kept under the unit's spec, refused if it no longer hashes to the record)."""
from __future__ import annotations

import json

import pytest

from mpstudy.cache import weights_hash
from mpstudy.metrics import bleu
from mpstudy.studies import translation_base as tb
from mpstudy.studies.artefacts import unit_model_dir


def test_the_t5_unit_records_bleu_and_predictions_and_keeps_its_model(tmp_path, monkeypatch):
    monkeypatch.delenv("MPSTUDY_DEADLINE", raising=False)
    dirs = {"results_dir": str(tmp_path / "results"), "cache_dir": str(tmp_path / "cache")}
    base = tb.translation_baseline(0, "smoke", resamples=100, **dirs)
    r = base.record["result"]
    assert base.record["unit"] == "smoke-synthetic-seq2seq-t5-tiny-seed0"
    assert len(r["predictions"]) == len(r["references"]) == len(r["sources"]) == r["test_rows"] == 16
    assert r["metrics"]["bleu"] == pytest.approx(bleu(r["predictions"], r["references"]))
    assert base.interval.low <= r["metrics"]["bleu"] <= base.interval.high
    assert r["steps"] == 8 and r["weights"]  # 2 epochs of 64 rows at batch 16

    monkeypatch.setattr(tb, "scratch_translation_model", lambda *a, **k: pytest.fail("retrained a recorded unit"))
    again = tb.translation_baseline(0, "smoke", resamples=100, **dirs)
    assert again.record == base.record and not again.model.made
    model, _ = again.model()  # the kept artefact
    assert weights_hash(model) == r["weights"]
    marker = unit_model_dir(base.record["unit"], base.record["spec"], dirs["cache_dir"]) / "unit-model.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "weights": "f" * 16}))
    with pytest.raises(ValueError, match="kept model hashes to"):
        tb.translation_baseline(0, "smoke", resamples=100, **dirs).model()


def test_unknown_profile_is_named():
    with pytest.raises(ValueError, match="no scratch translation model is defined for profile 'gpu'"):
        tb.translation_unit_name("gpu", 0)
