"""Metrics against values derived by hand (see the comment beside each case)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import math

import numpy as np
import pytest

from mpstudy import metrics
from mpstudy.metrics import TASK_METRICS, TASK_NAMES, canonical_task_name, compute_metrics

P, Y = [1, 0, 1, 1], [1, 1, 1, 0]  # TP=2 (0, 2), FN=1 (1), FP=1 (3), TN=0

CLASSIFICATION_CASES = [
    # (function, preds, labels, expected, why)
    (metrics.accuracy, P, Y, 0.5, "2 of 4 match"),
    (metrics.accuracy, [0, 1, 1], [0, 1, 1], 1.0, "all match"),
    (metrics.accuracy, [1, 1, 1], [0, 0, 0], 0.0, "none match"),
    (metrics.f1, P, Y, 2 / 3, "precision 2/3, recall 2/3"),
    (metrics.f1, [1, 1, 1, 1], [1, 0, 0, 0], 0.4, "precision 1/4, recall 1 -> 2*(1/4)/(5/4)"),
    (metrics.f1, [0, 0, 0], [1, 1, 0], 0.0, "no predicted positive"),
    (metrics.f1, [0, 1], [0, 1], 1.0, "perfect"),
    (metrics.matthews, [0, 1, 0, 1], [0, 1, 0, 1], 1.0, "perfect"),
    (metrics.matthews, [1, 0, 1, 0], [0, 1, 0, 1], -1.0, "inverted"),
    (metrics.matthews, P, Y, -1 / 3, "(TP*TN - FP*FN)/sqrt(3*3*1*1) = -1/3"),
    (metrics.matthews, [1, 1, 1, 1], [0, 1, 0, 1], 0.0, "constant prediction"),
]


@pytest.mark.parametrize("func, preds, labels, expected, why", CLASSIFICATION_CASES)
def test_classification_metrics(func, preds, labels, expected, why):
    value = func(preds, labels)
    assert type(value) is float
    assert value == pytest.approx(expected), why


x = [0.0, 1.0, 2.0, 3.5, 4.0]

CORRELATION_CASES = [
    # (preds, labels, pearson, spearman, why)
    ([2 * v + 1 for v in x], x, 1.0, 1.0, "linear map"),
    ([-v for v in x], x, -1.0, -1.0, "negated"),
    ([v**3 for v in x], x, None, 1.0, "monotone but not linear: spearman 1, pearson < 1"),
    ([1.0, 2.0, 3.0], [1.0, 3.0, 2.0], 0.5, 0.5, "one swap: r = 1/2 for both"),
]


@pytest.mark.parametrize("preds, labels, pearson, spearman, why", CORRELATION_CASES)
def test_pearson_spearman(preds, labels, pearson, spearman, why):
    out = metrics.pearson_spearman(preds, labels)
    assert set(out) == {"pearson", "spearman"}
    assert all(type(v) is float for v in out.values())
    assert out["spearman"] == pytest.approx(spearman), why
    if pearson is None:
        assert out["pearson"] < 0.99, why
    else:
        assert out["pearson"] == pytest.approx(pearson), why


def test_correlation_of_constant_predictions_is_nan():
    out = metrics.pearson_spearman([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    assert math.isnan(out["pearson"]) and math.isnan(out["spearman"])


BLEU_CASES = [
    (["the cat sat on the mat today"], ["the cat sat on the mat today"], 100.0, "identical"),
    (["a small dog runs in the park"] * 2, ["a small dog runs in the park"] * 2, 100.0, "identical corpus"),
    (["completely different words here"], ["nothing shared with hypothesis"], 0.0, "disjoint"),
]


@pytest.mark.parametrize("hyps, refs, expected, why", BLEU_CASES)
def test_bleu(hyps, refs, expected, why):
    value = metrics.bleu(hyps, refs)
    assert type(value) is float
    assert value == pytest.approx(expected), why


def test_bleu_partial_overlap_is_between_0_and_100():
    value = metrics.bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert 0.0 < value < 100.0


@pytest.mark.parametrize(
    "func, a, b",
    [
        (metrics.accuracy, [1, 0, 1], [1, 0]),
        (metrics.f1, [1], [1, 0]),
        (metrics.matthews, [1, 0, 1], [1, 0]),
        (metrics.pearson_spearman, [1.0, 2.0, 3.0], [1.0, 2.0]),
        (metrics.bleu, ["a b c", "d e f", "g"], ["a b c", "d e f"]),
    ],
)
def test_length_mismatch_raises_with_sizes(func, a, b):
    with pytest.raises(ValueError, match=rf"{len(a)}.*{len(b)}"):
        func(a, b)


@pytest.mark.parametrize("func", [metrics.accuracy, metrics.f1, metrics.pearson_spearman, metrics.bleu])
def test_empty_input_raises(func):
    with pytest.raises(ValueError, match="empty"):
        func([], [])


def test_logits_instead_of_class_ids_raise():
    with pytest.raises(ValueError, match="1-D"):
        metrics.accuracy(np.zeros((4, 2)), [0, 1, 0, 1])


def test_non_integer_class_ids_raise():
    with pytest.raises(ValueError, match="integer class ids"):
        metrics.accuracy([0.2, 0.9], [0, 1])


def test_numpy_and_torch_inputs():
    torch = pytest.importorskip("torch")
    assert metrics.accuracy(np.array(P), np.array(Y)) == 0.5
    assert metrics.accuracy(torch.tensor(P), torch.tensor(Y)) == 0.5


def test_task_metrics_table():
    assert set(TASK_NAMES) == set(TASK_METRICS)
    for name, spec in TASK_METRICS.items():
        assert spec.main in spec.names, name
    assert TASK_METRICS["mrpc"].main == "f1"
    assert TASK_METRICS["stsb"].main == "spearman"
    assert TASK_METRICS["cola"].main == "matthews"
    assert TASK_METRICS["multi30k"].main == "bleu"


@pytest.mark.parametrize(
    "task, preds, refs, expected",
    [
        ("sst2", P, Y, {"accuracy": 0.5}),
        ("mrpc", P, Y, {"accuracy": 0.5, "f1": 2 / 3}),
        ("cola", P, Y, {"matthews": -1 / 3, "accuracy": 0.5}),
        ("qnli", P, Y, {"accuracy": 0.5}),
        ("rte", P, Y, {"accuracy": 0.5}),
        ("synthetic-cls", P, Y, {"accuracy": 0.5}),
        ("stsb", [1.0, 2.0, 3.0], [2.0, 4.0, 6.0], {"pearson": 1.0, "spearman": 1.0}),
        ("multi30k", ["ein hund rennt im park"], ["ein hund rennt im park"], {"bleu": 100.0}),
        ("synthetic-seq2seq", ["der hund"], ["die katze"], {"bleu": 0.0}),
        ("SST-2", P, Y, {"accuracy": 0.5}),
        ("STS-B", [1.0, 2.0, 3.0], [2.0, 4.0, 6.0], {"pearson": 1.0, "spearman": 1.0}),
    ],
)
def test_compute_metrics_per_task(task, preds, refs, expected):
    out = compute_metrics(task, preds, refs)
    assert set(out) == set(expected)
    assert all(type(v) is float for v in out.values())
    for key, value in expected.items():
        assert out[key] == pytest.approx(value), key


def test_compute_metrics_length_mismatch_and_unknown_task():
    with pytest.raises(ValueError, match="3 predictions vs 2 labels"):
        compute_metrics("mrpc", [1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="'mnli'.*sst2"):
        compute_metrics("mnli", [1], [1])


@pytest.mark.parametrize(
    "alias, name",
    [("SST-2", "sst2"), ("sst2", "sst2"), ("STS-B", "stsb"), ("CoLA", "cola"), ("MRPC", "mrpc"),
     ("QNLI", "qnli"), ("RTE", "rte"), ("Multi30k", "multi30k"), ("Synthetic-CLS", "synthetic-cls")],
)
def test_canonical_task_name(alias, name):
    assert canonical_task_name(alias) == name
