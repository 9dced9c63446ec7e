"""Evaluation metrics for the study's tasks.

Every number comes from a library implementation (scikit-learn, SciPy, sacrebleu);
nothing here is hand-rolled. This module only validates inputs, picks the metrics
that belong to each task and turns the results into plain Python floats so that
they can go straight into JSON, pandas or a notebook table.

Conventions (GLUE, as in the GLUE paper and the Hugging Face ``glue`` metric):

* sst2, qnli, rte, synthetic-cls: accuracy.
* mrpc: accuracy and F1 of the positive class (1 = paraphrase); main metric F1.
* stsb: Pearson and Spearman correlation; main metric Spearman.
* cola: Matthews correlation (and accuracy); main metric Matthews.
* multi30k, synthetic-seq2seq: corpus BLEU (sacrebleu, 13a tokenisation).

The *main* metric is the one used to pick the best checkpoint; higher is better for all of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sacrebleu
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

__all__ = [
    "MetricSpec",
    "TASK_METRICS",
    "TASK_NAMES",
    "accuracy",
    "bleu",
    "canonical_task_name",
    "compute_metrics",
    "f1",
    "main_metric",
    "matthews",
    "pearson_spearman",
]


@dataclass(frozen=True)
class MetricSpec:
    """Which metrics a task reports (``names``) and which one selects checkpoints (``main``)."""

    names: tuple[str, ...]
    main: str


TASK_METRICS: dict[str, MetricSpec] = {
    "sst2": MetricSpec(("accuracy",), "accuracy"),
    "mrpc": MetricSpec(("accuracy", "f1"), "f1"),
    "stsb": MetricSpec(("pearson", "spearman"), "spearman"),
    "qnli": MetricSpec(("accuracy",), "accuracy"),
    "rte": MetricSpec(("accuracy",), "accuracy"),
    "cola": MetricSpec(("matthews", "accuracy"), "matthews"),
    "multi30k": MetricSpec(("bleu",), "bleu"),
    "synthetic-cls": MetricSpec(("accuracy",), "accuracy"),
    "synthetic-seq2seq": MetricSpec(("bleu",), "bleu"),
}

#: Canonical task names, in the order the study lists them.
TASK_NAMES: tuple[str, ...] = tuple(TASK_METRICS)

# Spellings used by the GLUE download folders and by people, mapped to canonical names.
_ALIASES: dict[str, str] = {
    "sst-2": "sst2",
    "sts-b": "stsb",
    "multi30k-en-de": "multi30k",
    "synthetic_cls": "synthetic-cls",
    "synthetic_seq2seq": "synthetic-seq2seq",
}


def canonical_task_name(name: str) -> str:
    """Map a task name to its canonical spelling, case-insensitively.

    ``"SST-2"`` -> ``"sst2"``, ``"STS-B"`` -> ``"stsb"``, ``"CoLA"`` -> ``"cola"``.
    Raises ``ValueError`` naming the bad value and the allowed names.
    """
    if not isinstance(name, str):
        raise ValueError(f"task name must be a string, got {name!r}; allowed: {', '.join(TASK_NAMES)}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in TASK_METRICS:
        raise ValueError(
            f"unknown task {name!r}; allowed names: {', '.join(TASK_NAMES)} "
            "(case-insensitive; GLUE folder spellings such as 'SST-2' and 'STS-B' also work)"
        )
    return key


def main_metric(task_name: str) -> str:
    """Name of the metric used to pick the best checkpoint for ``task_name``."""
    return TASK_METRICS[canonical_task_name(task_name)].main


# --------------------------------------------------------------------------- validation


def _as_1d(values: Any, what: str) -> np.ndarray:
    """Turn a list / numpy array / torch tensor into a 1-D numpy array."""
    if hasattr(values, "detach"):  # torch.Tensor without importing torch here
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(
            f"{what} must be 1-D (one value per example), got shape {arr.shape}; "
            "for classification pass class ids (e.g. logits.argmax(-1)), not logits"
        )
    return arr


def _check_pair(preds: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate that predictions and labels are non-empty 1-D sequences of equal length."""
    p = _as_1d(preds, "predictions")
    y = _as_1d(labels, "labels")
    if len(p) != len(y):
        raise ValueError(f"length mismatch: {len(p)} predictions vs {len(y)} labels")
    if len(p) == 0:
        raise ValueError("empty input: 0 predictions and 0 labels; metrics need at least one example")
    return p, y


def _check_class_ids(arr: np.ndarray, what: str) -> np.ndarray:
    """Class ids must be integers (floats like 1.0 are accepted and cast)."""
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        return arr.astype(np.int64)
    raise ValueError(f"{what} must be integer class ids, got dtype {arr.dtype} (first value {arr[0]!r})")


def _check_class_pair(preds: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p, y = _check_pair(preds, labels)
    return _check_class_ids(p, "predictions"), _check_class_ids(y, "labels")


# --------------------------------------------------------------------------- metrics


def accuracy(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Fraction of exact matches, in [0, 1]. ``preds``/``labels``: 1-D int class ids, length N."""
    p, y = _check_class_pair(preds, labels)
    return float(accuracy_score(y, p))


def f1(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Binary F1 of the positive class 1, in [0, 1] (0.0 when there is no true or predicted positive)."""
    p, y = _check_class_pair(preds, labels)
    return float(f1_score(y, p, pos_label=1, average="binary", zero_division=0.0))


def matthews(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation coefficient, in [-1, 1]; 0.0 when either side is constant (sklearn's convention)."""
    p, y = _check_class_pair(preds, labels)
    return float(matthews_corrcoef(y, p))


def pearson_spearman(preds: Sequence[float], labels: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman correlation of float predictions with float labels.

    Returns ``{"pearson": r, "spearman": rho}``. A correlation is undefined when either side
    is constant (e.g. a freshly initialised regression head); it is then reported as NaN,
    which is also what SciPy returns, rather than a made-up 0.
    """
    p, y = _check_pair(preds, labels)
    p, y = p.astype(np.float64), y.astype(np.float64)
    if len(p) < 2 or np.ptp(p) == 0 or np.ptp(y) == 0:
        return {"pearson": math.nan, "spearman": math.nan}
    return {"pearson": float(pearsonr(p, y)[0]), "spearman": float(spearmanr(p, y)[0])}


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (0-100, default 13a tokenisation), one reference per hypothesis."""
    hyps, refs = list(hypotheses), list(references)
    if len(hyps) != len(refs):
        raise ValueError(f"length mismatch: {len(hyps)} hypotheses vs {len(refs)} references")
    if not hyps:
        raise ValueError("empty input: 0 hypotheses and 0 references; BLEU needs at least one sentence")
    for what, seq in (("hypotheses", hyps), ("references", refs)):
        bad = next((i for i, s in enumerate(seq) if not isinstance(s, str)), None)
        if bad is not None:
            raise ValueError(f"{what}[{bad}] must be a decoded string, got {type(seq[bad]).__name__}")
    # sacrebleu takes a list of reference *streams*; we have exactly one stream.
    return float(sacrebleu.corpus_bleu(hyps, [refs]).score)


# --------------------------------------------------------------------------- per task


def compute_metrics(task_name: str, predictions: Any, references: Any) -> dict[str, float]:
    """Every metric of ``task_name`` as ``{metric_name: float}``.

    ``predictions``/``references`` are 1-D and of equal length N >= 1:
    int class ids for classification tasks, floats for ``stsb``, decoded strings for seq2seq.
    """
    name = canonical_task_name(task_name)
    spec = TASK_METRICS[name]
    if "bleu" in spec.names:
        return {"bleu": bleu(predictions, references)}
    if "pearson" in spec.names:
        return pearson_spearman(predictions, references)
    p, y = _check_class_pair(predictions, references)
    funcs = {"accuracy": accuracy, "f1": f1, "matthews": matthews}
    return {metric: funcs[metric](p, y) for metric in spec.names}
