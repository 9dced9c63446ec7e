"""The deployment goal's verdict (bench/deployment.py): study 06 decides which variants lose at most one
point, this bench's interleaved timing decides the speed-up; met / not met / inconclusive by the interval
against 4x. Pure data, no timing."""
from bench.deployment import GOAL_SPEEDUP, VARIANTS, judge, label, render_markdown


def _timed(speedups):
    rows = [{"variant": "dense", "method": "dense", "keep": 1.0, "median_ms": 10.0, "speedup": 1.0, "speedup_low": 1.0,
             "speedup_high": 1.0, "stored": 10, "bytes": 40}]
    for (method, keep), (est, low, high) in speedups.items():
        rows.append({"variant": label(method, keep), "method": method, "keep": keep, "median_ms": 10 / est, "speedup": est,
                     "speedup_low": low, "speedup_high": high, "stored": 5, "bytes": 10})
    return {"bench": "deployment", "model": "minilm", "batch": 32, "seq": 64, "threads": 1, "repeats": 30, "rows": rows,
            "goal_speedup": GOAL_SPEEDUP}


def _deploy(task, method, keep, within):
    """A row of study 06's typed record: ``method`` the base method (``dense`` for a precision method alone),
    ``variant`` the table's label."""
    base = method.split("+")[0] if method not in ("bf16", "int8") else "dense"
    return {"task": task, "method": base, "variant": method, "keep": keep, "regime": "kd", "within_1pt": within,
            "vs_dense": -0.002, "vs_dense_low": -0.008, "vs_dense_high": 0.004}


def test_the_fastest_qualifying_variant_is_judged_by_its_interval():
    record = _timed({("svd+int8", 0.5): (4.6, 4.2, 4.9), ("int8", 1.0): (2.9, 2.7, 3.1), ("heads+int8", 0.5): (5.5, 3.5, 6.0)})
    comparison = {"deployment": [_deploy("sst2", "svd+int8", 0.5, "holds"), _deploy("sst2", "int8", 1.0, "holds"),
                                 _deploy("sst2", "heads+int8", 0.5, "inconclusive"),  # fastest, but not qualifying
                                 _deploy("mrpc", "int8", 1.0, "holds"), _deploy("mrpc", "heads+int8", 0.5, "holds"),
                                 _deploy("stsb", "svd+int8", 0.5, "does not hold")]}
    goals = {g["task"]: g for g in judge(record, comparison)}
    assert goals["sst2"]["variant"] == "svd+int8 at 0.5" and goals["sst2"]["verdict"] == "met"
    assert goals["mrpc"]["variant"] == "heads+int8 at 0.5" and goals["mrpc"]["verdict"] == "inconclusive"  # [3.5, 6.0]
    assert goals["stsb"]["verdict"] == "not judged" and goals["stsb"]["variant"] is None
    slow = judge(_timed({("int8", 1.0): (2.9, 2.7, 3.1)}), {"deployment": [_deploy("sst2", "int8", 1.0, "holds")]})
    assert slow[0]["verdict"] == "not met" and slow[0]["variant"] == "int8"  # never the dense row itself
    assert judge(record, None)[0]["verdict"] == "not judged"
    text = render_markdown({**record, "goal": judge(record, comparison)})
    assert "| svd+int8 at 0.5 | 2.2 | 4.60x | [4.20, 4.90] |" in text and "sst2: **met**" in text


def test_every_variant_is_labelled_as_study_06_labels_it():
    assert ("svd+int8", 0.5) in VARIANTS and ("bf16", 1.0) in VARIANTS
    assert label("svd+int8", 0.5) == "svd+int8 at 0.5" and label("int8", 1.0) == "int8"
