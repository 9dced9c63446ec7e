"""Evaluation metrics for the study's tasks.

Every number comes from a library implementation (scikit-learn, SciPy, sacrebleu);
nothing here is hand-rolled. This module only validates inputs, picks the metrics
that belong to each task and turns the results into plain Python floats so that
they can go straight into JSON, pandas or a notebook table.

The *batched* forms at the end (``confusion_counts`` and the ``*_from_confusion`` functions,
``pearson_spearman_batched``, ``bleu_statistics``/``bleu_from_statistics``) compute the same
whole-corpus metrics on thousands of resamples at once for :mod:`mpstudy.stats`' bootstrap: the
classification ones from confusion counts by the formulas scikit-learn uses, the correlations on
SciPy's average ranks, BLEU through sacrebleu's own sufficient statistics. ``tests/test_stats.py``
checks every one against the single-call function above on random resamples.

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
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import pearsonr, rankdata, spearmanr

# scikit-learn and sacrebleu are imported where they are used: they belong to the study's install
# (``pip install "mpstudy[study]"``), and importing this module (``import mpstudy``) must not need them
if TYPE_CHECKING:
    import sacrebleu

__all__ = [
    "TASK_METRICS",
    "TASK_NAMES",
    "MetricSpec",
    "accuracy",
    "accuracy_from_confusion",
    "bleu",
    "bleu_from_statistics",
    "bleu_statistics",
    "canonical_task_name",
    "compute_metrics",
    "confusion_counts",
    "f1",
    "f1_from_confusion",
    "main_metric",
    "matthews",
    "matthews_from_confusion",
    "pearson_spearman",
    "pearson_spearman_batched",
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
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(y, p))


def f1(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Binary F1 of the positive class 1, in [0, 1] (0.0 when there is no true or predicted positive)."""
    p, y = _check_class_pair(preds, labels)
    from sklearn.metrics import f1_score

    return float(f1_score(y, p, pos_label=1, average="binary", zero_division=0.0))


def matthews(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation coefficient, in [-1, 1]; 0.0 when either side is constant (sklearn's convention)."""
    p, y = _check_class_pair(preds, labels)
    from sklearn.metrics import matthews_corrcoef

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


def _check_sentences(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[str]]:
    """Hypotheses and references as equally long, non-empty lists of strings."""
    hyps, refs = list(hypotheses), list(references)
    if len(hyps) != len(refs):
        raise ValueError(f"length mismatch: {len(hyps)} hypotheses vs {len(refs)} references")
    if not hyps:
        raise ValueError("empty input: 0 hypotheses and 0 references; BLEU needs at least one sentence")
    for what, seq in (("hypotheses", hyps), ("references", refs)):
        bad = next((i for i, s in enumerate(seq) if not isinstance(s, str)), None)
        if bad is not None:
            raise ValueError(f"{what}[{bad}] must be a decoded string, got {type(seq[bad]).__name__}")
    return hyps, refs


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (0-100, default 13a tokenisation), one reference per hypothesis."""
    hyps, refs = _check_sentences(hypotheses, references)
    # sacrebleu takes a list of reference *streams*; we have exactly one stream.
    import sacrebleu

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


# --------------------------------------------------------------------------- batched forms (for the bootstrap)


def confusion_counts(preds: Any, labels: Any, num_classes: int) -> np.ndarray:
    """Confusion matrices of many prediction sets at once.

    ``preds``, ``labels``: integer class ids in ``[0, num_classes)``, broadcastable, shaped ``(..., N)``
    (one row per resample). Returns int64 counts ``(..., num_classes, num_classes)``, indexed
    ``[gold, predicted]``.
    """
    p, y = np.broadcast_arrays(np.asarray(preds), np.asarray(labels))
    if p.ndim == 0 or p.shape[-1] == 0:
        raise ValueError(f"confusion_counts needs at least one example on the last axis, got shape {p.shape}")
    c = int(num_classes)
    for what, arr in (("predictions", p), ("labels", y)):
        if arr.dtype.kind not in "iub" or arr.min() < 0 or arr.max() >= c:
            raise ValueError(f"{what} must be integer class ids in [0, {c}), got dtype {arr.dtype}, "
                             f"range [{arr.min()}, {arr.max()}]")
    lead, n = p.shape[:-1], p.shape[-1]
    code = (y.astype(np.int64) * c + p).reshape(-1, n)
    rows = code.shape[0]
    # one bincount for every row: offset row r's codes by r * c * c
    flat = (code + (np.arange(rows, dtype=np.int64) * c * c)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * c * c).reshape(*lead, c, c)


def accuracy_from_confusion(conf: np.ndarray) -> np.ndarray:
    """Accuracy of each confusion matrix ``(..., C, C)`` -> ``(...)`` floats (trace over total)."""
    conf = np.asarray(conf, dtype=np.float64)
    return np.trace(conf, axis1=-2, axis2=-1) / conf.sum(axis=(-2, -1))


def f1_from_confusion(conf: np.ndarray) -> np.ndarray:
    """Binary F1 of class 1 (as :func:`f1`) of each confusion matrix ``(..., C, C)`` -> ``(...)``:
    2 TP / (2 TP + FP + FN), 0.0 when there is no true and no predicted positive."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = conf[..., 1, 1]
    fp = conf[..., :, 1].sum(axis=-1) - tp
    fn = conf[..., 1, :].sum(axis=-1) - tp
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0)


def matthews_from_confusion(conf: np.ndarray) -> np.ndarray:
    """Matthews correlation (as :func:`matthews`, scikit-learn's multiclass formula) of each confusion
    matrix ``(..., C, C)`` -> ``(...)``; 0.0 when either side is constant."""
    conf = np.asarray(conf, dtype=np.float64)
    t_sum, p_sum = conf.sum(axis=-1), conf.sum(axis=-2)  # per gold class, per predicted class
    correct = np.trace(conf, axis1=-2, axis2=-1)
    n = conf.sum(axis=(-2, -1))
    cov_tp = correct * n - (t_sum * p_sum).sum(axis=-1)
    cov_pp = n**2 - (p_sum * p_sum).sum(axis=-1)
    cov_tt = n**2 - (t_sum * t_sum).sum(axis=-1)
    denom = np.sqrt(cov_tt * cov_pp)
    return np.divide(cov_tp, denom, out=np.zeros_like(denom), where=denom > 0)


def _pearson_along(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r along the last axis (NaN where either side is constant)."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((xc * xc).sum(axis=-1) * (yc * yc).sum(axis=-1))
    num = (xc * yc).sum(axis=-1)
    r = np.divide(num, den, out=np.full_like(den, np.nan), where=den > 0)
    return np.clip(r, -1.0, 1.0)


def pearson_spearman_batched(preds: Any, labels: Any, which: Sequence[str] = ("pearson", "spearman")
                             ) -> dict[str, np.ndarray]:
    """Pearson and/or Spearman correlations along the last axis of ``(..., N)`` float arrays.

    Returns ``{name: (...)}`` for each name in ``which``; Spearman is Pearson on SciPy's average ranks
    (ties share their mean rank, as ``scipy.stats.spearmanr``). NaN where either side of a row
    is constant, as :func:`pearson_spearman`.
    """
    unknown = sorted(set(which) - {"pearson", "spearman"})
    if unknown:
        raise ValueError(f"unknown correlations {unknown}; allowed: pearson, spearman")
    p, y = np.broadcast_arrays(np.asarray(preds, dtype=np.float64), np.asarray(labels, dtype=np.float64))
    if p.ndim == 0 or p.shape[-1] < 2:
        raise ValueError(f"correlations need at least 2 examples on the last axis, got shape {p.shape}")
    constant = (np.ptp(p, axis=-1) == 0) | (np.ptp(y, axis=-1) == 0)
    out = {}
    if "pearson" in which:
        out["pearson"] = np.where(constant, np.nan, _pearson_along(p, y))
    if "spearman" in which:
        out["spearman"] = np.where(constant, np.nan, _pearson_along(rankdata(p, axis=-1), rankdata(y, axis=-1)))
    return out


def _bleu_scorer() -> sacrebleu.metrics.BLEU:
    """A sacrebleu BLEU configured as :func:`sacrebleu.corpus_bleu`'s defaults (what :func:`bleu` uses)."""
    import sacrebleu

    return sacrebleu.metrics.BLEU(tokenize="13a", smooth_method="exp")


def bleu_statistics(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """sacrebleu's sufficient statistics of each sentence pair: int64 ``(N, 10)`` (hypothesis length,
    reference length, matched 1..4-grams, total 1..4-grams). Corpus BLEU of any subset or resample
    is :func:`bleu_from_statistics` of the sum of its rows: the same number as :func:`bleu` on it."""
    hyps, refs = _check_sentences(hypotheses, references)
    return np.asarray(_bleu_scorer()._extract_corpus_statistics(hyps, [refs]), dtype=np.int64)


def bleu_from_statistics(stats: np.ndarray) -> np.ndarray:
    """Corpus BLEU (0-100) from summed statistics ``(..., 10)`` (see :func:`bleu_statistics`) -> ``(...)``,
    each computed by sacrebleu's own scorer."""
    stats = np.asarray(stats)
    if stats.ndim == 0 or stats.shape[-1] != 10:
        raise ValueError(f"BLEU statistics must end in an axis of 10 (lengths, matches, totals), got shape {stats.shape}")
    scorer = _bleu_scorer()
    rows = stats.reshape(-1, 10)
    out = np.fromiter((scorer._compute_score_from_stats(list(row)).score for row in rows), dtype=np.float64,
                      count=len(rows))
    return out.reshape(stats.shape[:-1])
