"""The claims ledger turns records into verdicts by its stated rules, and says 'not run' without records."""
import pytest

from mpstudy.ledger import CLAIMS, VERDICTS, Finding, ledger
from mpstudy.records import write_record


def _mpop_record(light_trainable, light_scores, full_scores):
    runs = [{"variant": "dense", "seed": s, "score": 0.8, "stored": 1000, "trainable": 1000} for s in range(len(light_scores))]
    runs += [{"variant": "MPO lightweight", "seed": s, "score": v, "stored": 900, "trainable": light_trainable}
             for s, v in enumerate(light_scores)]
    runs += [{"variant": "MPO full", "seed": s, "score": v, "stored": 900, "trainable": 900} for s, v in enumerate(full_scores)]
    squeeze = [{"cut": 1, "stored": 880, "accepted": True}, {"cut": 2, "stored": 860, "accepted": False}]
    return {"parameters": {"model": "m", "task": "t", "seeds": list(range(len(light_scores)))}, "provenance": {"profile": "cpu"},
            "runs": runs, "squeeze": squeeze}


def test_no_records_means_not_run(tmp_path):
    table = ledger(tmp_path)
    assert len(table) == len(CLAIMS) and set(table.verdict) == {"not run"}


@pytest.mark.parametrize("trainable,light,full,expected", [
    (90, [0.70, 0.72], [0.70, 0.71], ["holds", "holds", "holds"]),
    (200, [0.60, 0.62], [0.70, 0.71], ["does not hold here", "does not hold here", "holds"]),
    (90, [0.70], [0.60], ["holds", "not testable at this scale", "holds"]),
])
def test_mpop_claims_follow_their_rules(tmp_path, trainable, light, full, expected):
    write_record(tmp_path, "01_mpop", "cpu-t-m", _mpop_record(trainable, light, full))
    table = ledger(tmp_path)
    assert list(table[table.study == "01_mpop"].verdict) == expected
    assert "880" in table[table.study == "01_mpop"].measured.iloc[2]  # the last accepted cut's count


def test_offline_claims_count_cells(tmp_path):
    grid = []
    for cr in (3, 10):
        for mode in ("separated", "concatenated"):
            for method, cos in (("ae", 0.9), ("kronecker", 0.5), ("tucker", 0.6), ("svd", 0.6), ("prune", 0.8)):
                bonus = 0.05 if mode == "concatenated" else 0.0
                grid.append({"module": "key", "cr": cr, "mode": mode, "method": method, "feasible": True,
                             "sentence_cosine": cos + bonus})
    write_record(tmp_path, "04_offline", "cpu", {"parameters": {}, "provenance": {}, "grid": grid})
    table = ledger(tmp_path).set_index("study")
    assert list(table.loc["04_offline"].verdict) == ["holds", "holds"]
    assert "4 of 4" in table.loc["04_offline"].measured.iloc[0]


def test_findings_refuse_unknown_verdicts():
    assert "holds" in VERDICTS
    with pytest.raises(ValueError, match="verdict"):
        Finding("probably", "", "")
