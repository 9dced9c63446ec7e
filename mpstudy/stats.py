"""How sure each number is: intervals of dev scores over examples and seeds, paired comparisons of two
methods, the verdict bands a claim is judged by, the trivial-predictor guard and timing margins.

One question, one function:

* How sure is a score?  :func:`score_interval` (one model, or one model per seed) -> :class:`Interval`.
* Is A better than B on the same dev examples?  :func:`paired_difference` -> :class:`Difference`
  (with :func:`mcnemar`'s exact p for accuracy).
* Does a claim hold?  :func:`band` (an interval against a threshold) -> :class:`Band` with
  ``HOLDS``, :data:`FAILS` or ``INCONCLUSIVE``, and :func:`detectable_effect`.
* Did the dense baseline learn anything?  :func:`trivial_score`, :func:`baseline_learned` -> :class:`Guard`.
* Is a speed-up real?  :func:`ratio_interval`, :func:`timing_band`.

How, and why:

* **Examples** (one model): the bootstrap over dev examples, recomputing the *whole-corpus* metric on
  each resample (F1 and MCC from the resample's confusion counts, correlations on the resample's
  pairs, BLEU from the resample's summed sacrebleu statistics -- never an average of per-example
  scores), through the batched forms in :mod:`mpstudy.metrics`. Classification resamples within each
  gold class (a stratified bootstrap: GLUE dev sets have a fixed label balance, and F1 and MCC move
  with it); correlations and BLEU resample (prediction, reference) pairs. The interval is SciPy's
  BCa (``scipy.stats.bootstrap``, every stratum a sample, vectorized over resamples): it corrects
  the bias and skew of bounded metrics (F1, MCC, correlations near 1) that the plain percentile
  interval keeps, and it is second-order accurate. Where BCa is undefined (every resample gives the
  same value: identical predictions, a perfect score) the percentile interval of the same resamples
  is used and the interval's ``method`` says so.
* **Seeds** (one model per seed, all scored on the same dev set): the interval around the mean over
  seeds whose half-width is ``sqrt(t^2 S + z^2 C)``: ``S = s^2 / k``, the seed-to-seed variance of the
  k seeds' scores (it already holds each model's own example noise), charged Student's t with k - 1
  degrees of freedom (t(1) = 12.7 for two seeds); ``C``, the part of the dev-sampling error every
  seed shares (the mean covariance of *different* seeds' scores over joint example resamples: one
  resample of the examples applied to every seed), charged the normal quantile. A seed spread of
  zero gives the example interval of the mean; a shared part of zero gives the plain t interval.
  Why not the hierarchical bootstrap (resample seeds, then examples)? It counts each model's own
  example noise twice (in the spread of the resampled seeds, and again in the example resampling)
  while shrinking the seed variance by (k-1)/k and seeing at most C(2k-1, k) seed sets (10 for
  k = 3): two errors of opposite sign whose balance depends on the data. Measured on simulations
  like those of ``tests/test_stats.py`` (k = 2, 3, 5; seed spread or shared example difficulty
  dominant), it covered a nominal 95 % between 0.89 and 0.99; this interval between 0.94 and 0.98.
* **Paired comparisons** resample the example indices once and apply them to both methods (and every
  seed): the difference of whole-corpus metrics, with its interval as above. Seeds on both sides with
  the same seed ids are paired seed by seed (the t interval of the per-seed differences); other seed
  sets are independent samples (the Welch t interval of the two means, plus their shared
  dev-sampling part). Accuracy also gets McNemar's exact test on the discordant pairs.
* **Verdicts** (:func:`band`): holds only if the whole interval is on the claim's side of the threshold,
  does not hold only if the whole interval is on the other side, inconclusive otherwise -- and always
  inconclusive from a single seed (the spread over seeds is then unmeasured). The smallest effect the
  study could have detected is the minimal detectable effect at 80 % power,
  ``(q_(1-alpha/2) + q_power) * se`` with the interval's own reference distribution (t or normal):
  a true distance from the threshold at least that large is called (holds or does not hold) at least
  80 % of the time; smaller ones mostly read inconclusive.
* **Timings** (:func:`ratio_interval`): the distribution-free interval of the median per-round ratio
  from order statistics of a :class:`mpstudy.measure.Timing`'s rounds (exact for any distribution of
  the rounds; no resampling), judged by the same bands.

The verdict words live here, below the studies: :mod:`mpstudy.studies.verdicts` may import them; this
module imports nothing above :mod:`mpstudy.metrics` (no torch, no model).
"""
from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from scipy import stats as sps
from scipy.optimize import brentq
from scipy.special import ndtri, stdtrit

from .metrics import (
    TASK_METRICS,
    accuracy,
    accuracy_from_confusion,
    bleu,
    bleu_from_statistics,
    bleu_statistics,
    canonical_task_name,
    compute_metrics,
    confusion_counts,
    f1,
    f1_from_confusion,
    matthews,
    matthews_from_confusion,
    pearson_spearman_batched,
)

__all__ = [
    "DIRECTIONS",
    "FAILS",
    "HOLDS",
    "INCONCLUSIVE",
    "VERDICTS",
    "Band",
    "Difference",
    "Guard",
    "Interval",
    "band",
    "baseline_learned",
    "detectable_effect",
    "mcnemar",
    "paired_difference",
    "ratio_interval",
    "score_interval",
    "timing_band",
    "trivial_score",
]

HOLDS = "holds"
FAILS = "does not hold here"  #: the words of :mod:`mpstudy.studies.verdicts`
INCONCLUSIVE = "inconclusive"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)
DIRECTIONS = ("at least", "at most", "within")

#: the range of each metric (a t interval over seeds is clipped to it)
_BOUNDS = {"accuracy": (0.0, 1.0), "f1": (0.0, 1.0), "matthews": (-1.0, 1.0), "pearson": (-1.0, 1.0),
           "spearman": (-1.0, 1.0), "bleu": (0.0, 100.0)}
#: the classification metrics by themselves (compute_metrics would score every metric of the task)
_SINGLE = {"accuracy": accuracy, "f1": f1, "matthews": matthews}
#: the most array elements one vectorized batch of resamples gathers (keeps memory near 100 MB)
_BATCH_ELEMENTS = 4_000_000


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Interval:
    """A measured quantity with its confidence interval.

    Attributes:
        estimate: the quantity on the whole dev set (the mean over seeds with several seeds).
        low, high: the interval's ends (``-inf``/``inf`` when the data cannot bound it, NaN when undefined).
        level: its confidence level (0.95 by default).
        seeds: how many trained models (seeds) it combines; 1 means the spread over seeds is unmeasured
            and :func:`band` never concludes from it; ``None`` for a quantity that has no seeds (a timing).
        n: dev examples (timing rounds for a timing).
        se: its standard error (the bootstrap's, or the combined one over seeds); NaN if none.
        df: degrees of freedom of its reference distribution (``inf``: normal or bootstrap).
        method: how it was computed, in words.
    """

    estimate: float
    low: float
    high: float
    level: float = 0.95
    seeds: int | None = 1
    n: int = 0
    se: float = math.nan
    df: float = math.inf
    method: str = ""

    def __post_init__(self) -> None:
        _check_level(self.level)
        if self.seeds is not None and (isinstance(self.seeds, bool) or not isinstance(self.seeds, int)
                                       or self.seeds < 1):
            raise ValueError(f"seeds must be an int >= 1 or None (no seeds: a timing), got {self.seeds!r}")
        if self.low > self.high:
            raise ValueError(f"interval low {self.low!r} is above high {self.high!r}")

    @property
    def half_width(self) -> float:
        """Half the interval's width."""
        return (self.high - self.low) / 2

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the closed interval."""
        return bool(self.low <= value <= self.high)

    def as_dict(self) -> dict[str, Any]:
        """The fields as plain Python values (for a results record)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Interval:
        """The inverse of :meth:`as_dict` (unknown keys are refused)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; allowed: {sorted(names)}")
        return cls(**data)

    def __str__(self) -> str:
        return f"{self.estimate:.4g} [{self.low:.4g}, {self.high:.4g}]"


@dataclass(frozen=True)
class Difference(Interval):
    """A paired difference ``a - b_factor * b`` of a metric on the same dev examples, with its interval.

    Attributes, besides those of :class:`Interval`:
        mcnemar_p: McNemar's exact two-sided p for accuracy with one model on each side, else ``None``.
        b_factor: the factor on ``b`` (1: the plain difference; 0.99: "a keeps 99 % of b" holds iff > 0).
        paired_by: what was paired (examples; seeds and examples when seed ids match; or examples with seeds independent).
    """

    mcnemar_p: float | None = None
    b_factor: float = 1.0
    paired_by: str = "examples"


@dataclass(frozen=True)
class Band:
    """A claim judged by an interval: the verdict, why in one line, and what the study could have seen.

    ``detectable`` is the minimal detectable effect at 80 % power (:func:`detectable_effect`): the
    smallest true distance from the threshold that this study calls at least 80 % of the time.
    """

    verdict: str
    reason: str
    interval: Interval
    threshold: float
    direction: str
    detectable: float
    center: float = 0.0

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclass(frozen=True)
class Guard:
    """Whether a dense baseline learned the task (true in an ``if``), and why in one line.

    Unpacks as ``learned, reason = baseline_learned(...)``.
    """

    learned: bool
    reason: str

    def __bool__(self) -> bool:
        return self.learned

    def __iter__(self):
        return iter((self.learned, self.reason))


# --------------------------------------------------------------------------- checks


def _check_level(level: Any) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level must be a confidence level in (0, 1) such as 0.95, got {level!r}")
    return float(level)


def _check_options(level: Any, resamples: Any, seed: Any, method: Any) -> str:
    _check_level(level)
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 10:
        raise ValueError(f"resamples must be an int >= 10 (2000 for reporting), got {resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    allowed = {"bca": "BCa", "percentile": "percentile", "basic": "basic"}
    if not isinstance(method, str) or method.lower() not in allowed:
        raise ValueError(f"method must be one of {', '.join(allowed.values())}, got {method!r}")
    return allowed[method.lower()]


def _array(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, without importing torch
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _runs(predictions: Any, what: str) -> list[tuple[Any, Any]]:
    """``[(seed, predictions), ...]``: a mapping seed -> predictions, or one model's predictions (seed ``None``)."""
    if isinstance(predictions, Mapping):
        if not predictions:
            raise ValueError(f"{what} is an empty mapping; give seed -> predictions for at least one seed")
        return list(predictions.items())
    return [(None, predictions)]


# --------------------------------------------------------------------------- a metric ready for resampling


@dataclass(frozen=True)
class _Scored:
    """One task metric of several models (same dev set), ready for the vectorized bootstrap.

    ``score(j, idx)`` is model ``j``'s whole-corpus metric on each resample ``idx`` (int ``(..., m)``
    example indices) -> ``(...)``; ``strata`` are the example indices resampled separately.
    """

    metric: str
    n: int
    strata: tuple[np.ndarray, ...]
    stratified: bool
    whole: tuple[float, ...]
    score: Callable[[int, np.ndarray], np.ndarray]
    width: int  #: array elements gathered per model and example (memory per resample)


def _prepare(task: str, metric: str | None, models: Sequence[Any], references: Any) -> _Scored:
    name = canonical_task_name(task)
    spec = TASK_METRICS[name]
    metric = spec.main if metric is None else metric
    if metric not in spec.names:
        raise ValueError(f"metric {metric!r} is not reported for task {name!r}; allowed: {', '.join(spec.names)}")
    # every model's score on the whole dev set, by the task's own metric (this validates the inputs too)
    if metric in _SINGLE:
        whole = tuple(_SINGLE[metric](p, references) for p in models)
    else:
        whole = tuple(compute_metrics(name, p, references)[metric] for p in models)
    if metric == "bleu":
        refs = list(references)
        n = len(refs)
        stats = [bleu_statistics(list(p), refs) for p in models]

        def score(j: int, idx: np.ndarray) -> np.ndarray:
            return bleu_from_statistics(stats[j][idx].sum(axis=-2))

        return _Scored(metric, n, (np.arange(n),), False, whole, score, 10)
    if metric == "pearson":
        y = _array(references).astype(np.float64)
        preds = [_array(p).astype(np.float64) for p in models]

        def score(j: int, idx: np.ndarray) -> np.ndarray:
            return pearson_spearman_batched(preds[j][idx], y[idx], which=("pearson",))["pearson"]

        return _Scored(metric, len(y), (np.arange(len(y)),), False, whole, score, 4)
    if metric == "spearman":
        # Spearman = Pearson on average ranks; a resample's ranks come from the original values' order
        # by counting (_average_ranks), not by sorting every resample again
        y_codes, y_levels = _order_codes(references)
        codes = [_order_codes(p) for p in models]

        def score(j: int, idx: np.ndarray) -> np.ndarray:
            p_codes, p_levels = codes[j]
            ranks_p, ranks_y = _average_ranks(p_codes[idx], p_levels), _average_ranks(y_codes[idx], y_levels)
            return pearson_spearman_batched(ranks_p, ranks_y, which=("pearson",))["pearson"]

        return _Scored(metric, len(y_codes), (np.arange(len(y_codes)),), False, whole, score, 8)
    y = _array(references).astype(np.int64)  # compute_metrics has checked they are class ids
    preds = [_array(p).astype(np.int64) for p in models]
    n = len(y)
    num_classes = max(2, int(y.max()) + 1, *(int(p.max()) + 1 for p in preds))
    strata = tuple(np.flatnonzero(y == c) for c in np.unique(y))
    stratified = len(strata) > 1 and all(len(s) >= 2 for s in strata)
    if not stratified:  # one class, or a class with a single example: nothing to stratify by
        strata = (np.arange(n),)
    from_confusion = {"accuracy": accuracy_from_confusion, "f1": f1_from_confusion,
                      "matthews": matthews_from_confusion}[metric]

    def score(j: int, idx: np.ndarray) -> np.ndarray:
        return from_confusion(confusion_counts(preds[j][idx], y[idx], num_classes))

    return _Scored(metric, n, strata, stratified, whole, score, 3)


def _order_codes(values: Any) -> tuple[np.ndarray, int]:
    """Each value's position among the distinct values (equal values, equal codes), and how many there are."""
    distinct, codes = np.unique(_array(values).astype(np.float64), return_inverse=True)
    return codes.reshape(-1), len(distinct)


def _average_ranks(codes: np.ndarray, levels: int) -> np.ndarray:
    """Average ranks along the last axis (1-based, ties share their mean rank: SciPy's ``rankdata``),
    of ``(..., m)`` codes in ``[0, levels)`` ordered as the values: counts per code, then cumulative sums."""
    lead, m = codes.shape[:-1], codes.shape[-1]
    flat = codes.reshape(-1, m)
    rows = flat.shape[0]
    counts = np.bincount((flat + (np.arange(rows) * levels)[:, None]).ravel(), minlength=rows * levels)
    counts = counts.reshape(rows, levels)
    average = np.cumsum(counts, axis=-1) - (counts - 1) / 2  # the last rank of each tied block, less half the tie
    return np.take_along_axis(average, flat, axis=-1).reshape(*lead, m)


def _bootstrap(scored: _Scored, statistic: Callable[[np.ndarray], np.ndarray], models: int, *, level: float,
               resamples: int, seed: int, method: str):
    """``scipy.stats.bootstrap`` of ``statistic(idx)`` over the example indices, one sample per stratum."""
    if scored.n < 2:
        raise ValueError(f"an interval needs at least 2 dev examples, got {scored.n}")

    def stat(*idx: np.ndarray, axis: int = -1) -> np.ndarray:
        # scipy has broadcast the leading axes; the strata's resampled indices make one resample
        return statistic(idx[0] if len(idx) == 1 else np.concatenate(idx, axis=-1))

    batch = max(1, min(resamples, _BATCH_ELEMENTS // (scored.n * scored.width * models)))
    with warnings.catch_warnings():
        # BCa is undefined when every resample gives the same value; _ends falls back to percentiles
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return sps.bootstrap(scored.strata, stat, n_resamples=resamples, batch=batch, vectorized=True,
                             paired=False, axis=-1, confidence_level=level, method=method,
                             rng=np.random.default_rng(seed))


def _ends(result, level: float, method: str) -> tuple[float, float, float, str]:
    """``(low, high, se, method used)`` of a scalar bootstrap result."""
    dist = np.asarray(result.bootstrap_distribution, dtype=np.float64)
    finite = dist[np.isfinite(dist)]
    if finite.size < 2:
        return math.nan, math.nan, math.nan, f"undefined: {finite.size} resamples have a defined metric"
    se = float(np.std(finite, ddof=1))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if finite.size == dist.size and math.isfinite(low) and math.isfinite(high):
        return low, high, se, method
    alpha = (1 - level) / 2
    low, high = (float(v) for v in np.quantile(finite, [alpha, 1 - alpha]))
    why = "every resample gives the same value" if np.ptp(finite) == 0 else f"{method} undefined here"
    return low, high, se, f"percentile ({why})"


def _covariance(result) -> np.ndarray:
    """Covariance of the models' scores over the joint resamples (resamples where all are defined)."""
    dist = np.asarray(result.bootstrap_distribution, dtype=np.float64)
    dist = dist[:, np.isfinite(dist).all(axis=0)]
    if dist.shape[1] < 2:
        return np.full((dist.shape[0],) * 2, np.nan)
    return np.atleast_2d(np.cov(dist))


def _combine(groups: Sequence[np.ndarray], weights: Sequence[float], cov: np.ndarray,
             level: float) -> tuple[float, float, float, float, float]:
    """The interval of ``sum_g w_g * mean(groups[g])`` over seeds and examples.

    ``groups[g]``: the whole-dev scores of group ``g``'s seeds (>= 2 each); ``cov``: the bootstrap
    covariance of every model's score over joint example resamples, models in group order.
    Two measured parts of the variance:

    * seeds, ``S = sum_g w_g^2 s_g^2 / k_g``: the seed-to-seed variance, which holds each model's
      own example noise too (when the k scores are exactly equal, ``s_g^2 = 0`` says nothing and is
      replaced by ``u_g``, a model's bootstrap variance minus its covariance with the group's other
      models: the example noise the seeds do not share); estimated from few values, so it is charged Student's t quantile with
      ``k - 1`` degrees of freedom for one group (exact for normal seed scores, however small s^2 came
      out), Welch's degrees of freedom for two independent groups;
    * shared, ``C = sum_{g,h} w_g w_h C_gh``, ``C_gh`` the mean bootstrap covariance of *different*
      models of groups g and h: the dev-sampling error the models share (one dev set for all), known
      from thousands of resamples, so charged the normal quantile.

    The half-width is ``sqrt(t^2 S + z^2 C)``. (Welch-Satterthwaite degrees of freedom pooled over S
    and C were tried first: they grow when s^2 comes out small by chance, and covered 0.86 at k = 2
    on the simulation of ``tests/test_stats.py``.) Returns ``(estimate, low, high, se, df)`` with
    ``se = sqrt(S + C)`` and ``df`` the degrees of freedom whose t quantile times ``se`` is the
    half-width (``inf`` when that is the normal quantile).
    """
    sizes = [len(g) for g in groups]
    starts = np.cumsum([0, *sizes])
    estimate = float(sum(w * np.mean(g) for w, g in zip(weights, groups)))
    # Seeds with exactly equal scores (discrete scores on few dev rows: two seeds each losing a
    # different row) carry no information on the spread, and s^2 = 0 would give a zero-width
    # interval: their seed part is then the example-sampling variance each model does not share with
    # the other seeds (its bootstrap variance minus its covariance with them), the least the spread
    # over seeds can be.
    parts = []
    for g, (w, values) in enumerate(zip(weights, groups)):
        var = float(np.var(values, ddof=1))
        if var == 0.0:
            block = cov[starts[g]:starts[g + 1], starts[g]:starts[g + 1]]
            var = max(float(np.mean(np.diag(block))) - float(np.mean(block[~np.eye(sizes[g], dtype=bool)])), 0.0)
        parts.append(w * w * var / len(values))
    shared = 0.0
    for g, wg in enumerate(weights):
        for h, wh in enumerate(weights):
            block = cov[starts[g]:starts[g + 1], starts[h]:starts[h + 1]]
            if g == h:
                block = block[~np.eye(sizes[g], dtype=bool)]
            shared += wg * wh * float(np.mean(block))
    shared = max(shared, 0.0)  # a shared variance below 0 is sampling noise around 0
    seeds = sum(parts)
    welch = sum(part * part / (k - 1) for part, k in zip(parts, sizes))
    df_seeds = seeds * seeds / welch if welch > 0 else math.inf
    z = float(ndtri(0.5 + level / 2))
    t = float(stdtrit(df_seeds, 0.5 + level / 2)) if math.isfinite(df_seeds) else z
    half = math.sqrt(t * t * seeds + z * z * shared)
    se = math.sqrt(seeds + shared)
    return estimate, estimate - half, estimate + half, se, _df_of(half / se if se > 0 else z, level)


def _df_of(quantile: float, level: float) -> float:
    """The degrees of freedom whose two-sided ``level`` t quantile is ``quantile`` (``inf`` at the normal's)."""
    target = 0.5 + level / 2
    if not math.isfinite(quantile) or quantile <= float(ndtri(target)) * (1 + 1e-9):
        return math.inf
    return float(brentq(lambda df: stdtrit(df, target) - quantile, 0.05, 1e9, rtol=1e-10))


def _undefined(scored: _Scored, level: float, seeds: int, cls: type = Interval, **extra: Any) -> Interval:
    return cls(math.nan, math.nan, math.nan, level, seeds, scored.n,
               method="undefined: the metric is undefined on the dev set (e.g. a constant prediction's correlation)",
               **extra)


def _describe(scored: _Scored, resamples: int, how: str) -> str:
    strata = f", resampled within each of {len(scored.strata)} gold classes" if scored.stratified else ""
    return f"{how} bootstrap, {resamples} resamples of {scored.n} dev examples{strata}"


# --------------------------------------------------------------------------- scores


def score_interval(task: str, predictions: Any, references: Any, metric: str | None = None, *, level: float = 0.95,
                   resamples: int = 2000, seed: int = 0, method: str = "BCa") -> Interval:
    """A dev score with its confidence interval, over dev examples and, with several seeds, over seeds.

    Args:
        task: the task name (picks the metric family and its conventions, :mod:`mpstudy.metrics`).
        predictions: one model's predictions (1-D, length N: class ids, floats for stsb, decoded
            strings for seq2seq), or a mapping ``seed -> predictions`` of one model per seed.
        references: the N gold labels / reference strings, the same for every seed.
        metric: one of the task's metrics (default: its main metric).
        level: confidence level.
        resamples: bootstrap resamples (2000 for reporting; tests use fewer).
        seed: the resampling seed (same seed, same interval).
        method: ``"BCa"`` (default), ``"percentile"`` or ``"basic"`` for the one-model interval.

    Returns:
        An :class:`Interval`: with one model, the example bootstrap (``seeds=1``); with k >= 2 seeds,
        the t interval of the mean over seeds whose variance adds the seed-to-seed spread and the
        dev-sampling error the seeds share (see the module docstring), clipped to the metric's range.
    """
    method = _check_options(level, resamples, seed, method)
    runs = _runs(predictions, "predictions")
    scored = _prepare(task, metric, [p for _, p in runs], references)
    k = len(runs)
    if not all(math.isfinite(v) for v in scored.whole):
        return _undefined(scored, level, k)
    if k == 1:
        result = _bootstrap(scored, lambda idx: scored.score(0, idx), 1, level=level, resamples=resamples, seed=seed,
                            method=method)
        low, high, se, how = _ends(result, level, method)
        return Interval(scored.whole[0], low, high, level, 1, scored.n, se, math.inf,
                        _describe(scored, resamples, how) + "; one seed")
    result = _bootstrap(scored, lambda idx: np.stack([scored.score(j, idx) for j in range(k)]), k, level=level,
                        resamples=resamples, seed=seed, method="percentile")
    estimate, low, high, se, df = _combine([np.asarray(scored.whole)], [1.0], _covariance(result), level)
    lo_bound, hi_bound = _BOUNDS[scored.metric]
    return Interval(estimate, max(low, lo_bound), min(high, hi_bound), level, k, scored.n, se, df,
                    f"t interval over {k} seeds (df {df:.3g}) + the dev-sampling error they share, from a "
                    + _describe(scored, resamples, "joint"))


# --------------------------------------------------------------------------- paired comparisons


def mcnemar(preds_a: Any, preds_b: Any, labels: Any) -> float:
    """McNemar's exact two-sided p of "a and b are equally accurate" on the same examples.

    ``preds_a``, ``preds_b``, ``labels``: 1-D class ids of length N. The test is the binomial test
    (p = 1/2) on the discordant pairs (one right, the other wrong); 1.0 when there are none.
    """
    a, b, y = (_array(v) for v in (preds_a, preds_b, labels))
    if not (a.ndim == b.ndim == y.ndim == 1) or not (len(a) == len(b) == len(y)) or len(y) == 0:
        raise ValueError(f"mcnemar needs three 1-D sequences of the same non-zero length, got shapes "
                         f"{a.shape}, {b.shape}, {y.shape}")
    right_a, right_b = a == y, b == y
    only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
    if only_a + only_b == 0:
        return 1.0
    return float(sps.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def paired_difference(task: str, a: Any, b: Any, references: Any, metric: str | None = None, *,
                      b_factor: float = 1.0, level: float = 0.95, resamples: int = 2000, seed: int = 0,
                      method: str = "BCa") -> Difference:
    """The difference ``a - b_factor * b`` of a task metric between two methods on the same dev examples.

    Args:
        task, references, metric, level, resamples, seed, method: as :func:`score_interval`.
        a, b: each one model's predictions, or a mapping ``seed -> predictions``.
        b_factor: the factor on ``b``: 1 for the plain difference; ``0.99`` turns "a keeps at least 99 %
            of b" into "the difference is at least 0".

    Returns:
        A :class:`Difference`. Each resample of the examples is applied to both methods (and every
        seed). One model on a side (or on both): the example bootstrap of the difference of the
        per-side means over seeds, ``seeds=1``, and for accuracy with one model per side McNemar's
        exact p. Both sides with the same seed ids (>= 2): the t interval of the per-seed
        differences. Otherwise: the Welch t interval of the two means over independent seed sets.
        Both add the dev-sampling error the models share (module docstring).
    """
    method = _check_options(level, resamples, seed, method)
    if isinstance(b_factor, bool) or not isinstance(b_factor, (int, float)) or not math.isfinite(b_factor):
        raise ValueError(f"b_factor must be a finite number (1 for the plain difference), got {b_factor!r}")
    f = float(b_factor)
    runs_a, runs_b = _runs(a, "a"), _runs(b, "b")
    ka, kb = len(runs_a), len(runs_b)
    matched = ka >= 2 and isinstance(a, Mapping) and isinstance(b, Mapping) and set(a) == set(b)
    if matched:
        runs_b = [(s, b[s]) for s, _ in runs_a]
    scored = _prepare(task, metric, [p for _, p in runs_a] + [p for _, p in runs_b], references)
    whole_a, whole_b = np.asarray(scored.whole[:ka]), np.asarray(scored.whole[ka:])
    if not np.isfinite(scored.whole).all():
        return _undefined(scored, level, min(ka, kb), Difference, b_factor=f)
    estimate = float(whole_a.mean() - f * whole_b.mean())
    models = ka + kb

    if min(ka, kb) == 1:
        def statistic(idx: np.ndarray) -> np.ndarray:
            side_a = sum(scored.score(j, idx) for j in range(ka)) / ka
            return side_a - f * sum(scored.score(ka + j, idx) for j in range(kb)) / kb

        result = _bootstrap(scored, statistic, models, level=level, resamples=resamples, seed=seed, method=method)
        low, high, se, how = _ends(result, level, method)
        p = None
        if scored.metric == "accuracy" and ka == kb == 1:
            p = mcnemar(runs_a[0][1], runs_b[0][1], references)
        note = "; one seed" if ka == kb == 1 else f"; {ka} vs {kb} seeds: the seed spread is not included"
        return Difference(estimate, low, high, level, 1, scored.n, se, math.inf,
                          "paired " + _describe(scored, resamples, how) + note, p, f, "examples")

    if matched:
        result = _bootstrap(scored, lambda idx: np.stack([scored.score(j, idx) - f * scored.score(ka + j, idx)
                                                          for j in range(ka)]),
                            models, level=level, resamples=resamples, seed=seed, method="percentile")
        est, low, high, se, df = _combine([whole_a - f * whole_b], [1.0], _covariance(result), level)
        how, seeds, paired_by = f"t interval of {ka} per-seed differences", ka, "seeds and examples"
    else:
        result = _bootstrap(scored, lambda idx: np.stack([scored.score(j, idx) for j in range(models)]), models,
                            level=level, resamples=resamples, seed=seed, method="percentile")
        est, low, high, se, df = _combine([whole_a, whole_b], [1.0, -f], _covariance(result), level)
        how, seeds, paired_by = f"Welch t interval of {ka} vs {kb} independent seeds", min(ka, kb), \
            "examples (seeds independent)"
    return Difference(est, low, high, level, seeds, scored.n, se, df,
                      f"{how} (df {df:.3g}) + the shared dev-sampling error, from a paired "
                      + _describe(scored, resamples, "joint"), None, f, paired_by)


# --------------------------------------------------------------------------- verdicts


def _direction(direction: Any) -> str:
    spelled = {"at least": "at least", ">=": "at least", "at most": "at most", "<=": "at most", "within": "within",
               "within ±": "within", "within +-": "within", "±": "within"}
    key = direction.strip().lower() if isinstance(direction, str) else None
    if key not in spelled:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)} (or >=, <=, within ±), got {direction!r}")
    return spelled[key]


def detectable_effect(interval: Interval, power: float = 0.8) -> float:
    """The minimal detectable effect at ``power``: ``(q_(1 - alpha/2) + q_power) * se``.

    ``q`` are quantiles of the interval's reference distribution (t with ``interval.df`` degrees of
    freedom, normal when infinite) and ``alpha = 1 - interval.level``: a true distance from a claim's
    threshold at least this large puts the whole interval on one side with probability >= ``power``.
    Without a standard error (a timing's order-statistics interval) the se is read off the half-width
    as ``half_width / q_(1 - alpha/2)``. ``inf`` when the interval is unbounded, NaN when undefined.
    """
    if isinstance(power, bool) or not isinstance(power, (int, float)) or not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1) such as 0.8, got {power!r}")
    if math.isfinite(interval.df):
        q_level, q_power = float(stdtrit(interval.df, 0.5 + interval.level / 2)), float(stdtrit(interval.df, power))
    else:
        q_level, q_power = float(ndtri(0.5 + interval.level / 2)), float(ndtri(power))
    se = interval.se
    if not math.isfinite(se):
        se = interval.half_width / q_level
    return (q_level + q_power) * se


def band(interval: Interval, threshold: float, direction: str = "at least", *, center: float = 0.0,
         power: float = 0.8) -> Band:
    """Judge the claim "the quantity is ``direction`` ``threshold``" by ``interval``.

    Args:
        interval: the measured quantity's interval (a score, a difference, a speed-up).
        threshold: for ``"at least"``/``"at most"`` the bound; for ``"within"`` the tolerance (>= 0)
            around ``center`` (the claim "``|quantity - center|`` <= threshold", e.g. a difference within
            1 point of 0).
        direction: ``"at least"``, ``"at most"`` or ``"within"``.
        power: for :func:`detectable_effect`.

    Returns:
        A :class:`Band`: ``HOLDS`` if the whole interval satisfies the claim, :data:`FAILS` if the whole
        interval violates it, ``INCONCLUSIVE`` otherwise, and always with ``interval.seeds == 1``
        (the reason keeps what the interval alone would read).
    """
    direction = _direction(direction)
    for name, value in (("threshold", threshold), ("center", center)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if direction == "within" and threshold < 0:
        raise ValueError(f"a 'within' tolerance must be >= 0, got {threshold!r}")
    low, high = interval.low, interval.high
    if direction == "at least":
        claim = f"at least {threshold:g}"
        holds, fails = low >= threshold, high < threshold
    elif direction == "at most":
        claim = f"at most {threshold:g}"
        holds, fails = high <= threshold, low > threshold
    else:
        claim = f"within ±{threshold:g} of {center:g}"
        holds = center - threshold <= low and high <= center + threshold
        fails = low > center + threshold or high < center - threshold
    would = HOLDS if holds else FAILS if fails else INCONCLUSIVE
    shown = f"{interval.level:.0%} interval {interval}"
    if math.isnan(low) or math.isnan(high):
        verdict, reason = INCONCLUSIVE, f"the interval is undefined ({interval.method}); nothing to judge"
    elif interval.seeds == 1:
        verdict, reason = INCONCLUSIVE, (f"one seed: the spread over seeds is unmeasured, so no verdict (the "
                                         f"{shown} alone would read: {would})")
    elif would == HOLDS:
        verdict, reason = HOLDS, f"the whole {shown} is {claim}"
    elif would == FAILS:
        verdict, reason = FAILS, f"the whole {shown} is outside '{claim}'"
    else:
        verdict, reason = INCONCLUSIVE, f"the {shown} reaches both sides of '{claim}'"
    return Band(verdict, reason, interval, float(threshold), direction, detectable_effect(interval, power),
                float(center))


# --------------------------------------------------------------------------- the trivial-predictor guard


def trivial_score(task: str, references: Any, metric: str | None = None, *, sources: Sequence[str] | None = None
                  ) -> float:
    """What a predictor that learned nothing scores on this dev set, with the task's own metric.

    * classification: the best constant prediction (every class id from 0 to the largest seen, at
      least {0, 1}), scored by the metric: the majority class for accuracy; for F1 always predicting
      the positive class whenever the dev set has positives (MRPC: 0.81) -- the best constant, not
      only the majority one, so the guard is never weaker than the cheapest trick; MCC: 0.
    * correlations (stsb): 0.0 -- a constant prediction (the dev mean) has no defined correlation
      (:func:`mpstudy.metrics.pearson_spearman` gives NaN); "no correlation" is its honest value.
    * BLEU: copying the source, when ``sources`` (the N source sentences) are given -- what a model
      that learned only to echo its input scores (names and numbers often survive translation);
      0.0 without sources (the empty translation), which makes the guard weaker: pass them.
    """
    name = canonical_task_name(task)
    spec = TASK_METRICS[name]
    metric = spec.main if metric is None else metric
    if metric not in spec.names:
        raise ValueError(f"metric {metric!r} is not reported for task {name!r}; allowed: {', '.join(spec.names)}")
    if metric == "bleu":
        if sources is None:
            return 0.0
        return bleu(list(sources), list(references))
    if metric in ("pearson", "spearman"):
        compute_metrics(name, np.zeros(len(_array(references))), references)  # validates the references
        return 0.0
    y = _array(references)
    compute_metrics(name, y, y)  # validates the class ids
    classes = range(max(2, int(y.max()) + 1))
    return max(compute_metrics(name, np.full(len(y), c), y)[metric] for c in classes)


def baseline_learned(dense_interval: Interval, trivial_score: float) -> Guard:
    """Whether the dense baseline scores above the trivial predictor by more than its interval.

    ``dense_interval``: the dense model's score interval (:func:`score_interval`); ``trivial_score``:
    :func:`trivial_score` of the same metric on the same dev set (NaN counts as 0). A baseline that does
    not clear it learned nothing the study could retain, so the study makes no retained-quality
    statement. The number of seeds does not matter here: a chance-level model is chance-level.
    """
    trivial = 0.0 if trivial_score is None or math.isnan(trivial_score) else float(trivial_score)
    if math.isnan(dense_interval.low):
        return Guard(False, f"the dense baseline's interval is undefined ({dense_interval.method}): no "
                            "retained-quality statement")
    if dense_interval.low > trivial:
        return Guard(True, f"the dense baseline {dense_interval} is above the trivial predictor's {trivial:.4g} "
                           f"by more than its {dense_interval.level:.0%} interval")
    return Guard(False, f"the dense baseline {dense_interval} does not clear the trivial predictor's {trivial:.4g} "
                        f"(its {dense_interval.level:.0%} interval reaches {dense_interval.low:.4g}): it has not "
                        "learned the task, so no retained-quality statement")


# --------------------------------------------------------------------------- timing margins


def ratio_interval(timing: Any, numerator: str, denominator: str, level: float = 0.95) -> Interval:
    """The median over rounds of ``numerator``'s time / ``denominator``'s in the same round, with its interval.

    ``timing``: a :class:`mpstudy.measure.Timing` (anything with ``seconds: {name: [seconds per round]}``),
    or a sequence of them (their rounds pooled). The estimate is ``Timing.ratio``'s. The interval
    is the distribution-free interval of the median from order statistics: ``[r_(j), r_(n+1-j)]`` of
    the n sorted per-round ratios, with the largest j whose exact binomial coverage
    ``1 - 2 P(Bin(n, 1/2) <= j - 1)`` is at least ``level``. Fewer rounds than that needs (6 for 95 %)
    give an unbounded interval. ``seeds`` is ``None``: a timing has rounds, not seeds.
    """
    _check_level(level)
    timings = [timing] if hasattr(timing, "seconds") else list(timing)
    if not timings:
        raise ValueError("ratio_interval needs a Timing or a non-empty sequence of them, got an empty sequence")
    ratios: list[float] = []
    for t in timings:
        for name in (numerator, denominator):
            if name not in t.seconds:
                raise ValueError(f"no timing named {name!r}; timed: {', '.join(map(repr, t.seconds))}")
        ratios += [a / b for a, b in zip(t.seconds[numerator], t.seconds[denominator])]
    n = len(ratios)
    if n == 0:
        raise ValueError(f"no timed rounds of {numerator!r} and {denominator!r}")
    estimate = float(statistics.median(ratios))
    ordered = [float(r) for r in sorted(ratios)]
    j = 0
    while j + 1 <= (n + 1) // 2 and 1 - 2 * sps.binom.cdf(j, n, 0.5) >= level:
        j += 1  # j order statistics in from each end still cover the median with probability >= level
    if j == 0:
        need = next(m for m in range(1, 64) if 1 - 2 * 0.5**m >= level)
        return Interval(estimate, -math.inf, math.inf, level, None, n,
                        method=f"{n} rounds cannot bound the median at {level:.0%} (needs >= {need} rounds)")
    coverage = 1 - 2 * sps.binom.cdf(j - 1, n, 0.5)
    return Interval(estimate, ordered[j - 1], ordered[n - j], level, None, n,
                    method=f"order statistics {j} and {n + 1 - j} of {n} per-round ratios (distribution-free "
                           f"interval of the median, coverage {coverage:.3f})")


def timing_band(timing: Any, baseline: str, candidate: str, threshold: float, direction: str = "at least",
                level: float = 0.95) -> Band:
    """Judge "``candidate`` is ``direction`` ``threshold`` times faster than ``baseline``" by the rounds of ``timing``.

    The speed-up is ``baseline``'s time over ``candidate``'s, round by round (:func:`ratio_interval`);
    a margin inside the run-to-run spread reads inconclusive.
    """
    return band(ratio_interval(timing, baseline, candidate, level), threshold, direction)
