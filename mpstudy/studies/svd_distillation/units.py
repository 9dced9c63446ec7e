"""Study 03's campaign units: SVD below ``nd/(n+d)``, then feature distillation and KD, one unit per
(factorization, recovery plan, seed), and the tables computed from their records.

Every unit starts from the shared dense baseline of its seed (:mod:`mpstudy.studies.dense`): that model
is both the one factorized and the teacher, as in Noach & Goldberg. Each unit records its dev
predictions in the dense units' row order, so every score gets an interval over dev examples and seeds
and every comparison (FD then KD vs KD alone, FWSVD vs SVD, compressed vs dense) is paired on the same
examples and seeds without the models (:mod:`mpstudy.stats`).

* :func:`untrained_unit` -- one seed's dense model factorized by SVD and FWSVD at each budget, scored as
  it is (no training: seconds per budget), its per-role errors at the study's budget and, when asked, the
  latency curve;
* :func:`recovery_unit` -- one (method, plan, seed): factorize at the budget, then ``kd`` (KD alone) or
  ``fd+kd`` (FD, then KD: the paper's recipe), each stage ``steps`` optimizer steps on training rows
  drawn with the seed; ``fd+kd`` also records the predictions after its FD stage;
* :func:`s2s_teacher_unit`, :func:`s2s_recovery_unit` -- the encoder-decoder track: the teacher's and
  the factorized model's test translations, and FD then KD from that teacher per recovery seed;
* :func:`recovery_table`, :func:`paired_table`, :func:`bleu_table` -- the page's tables with intervals.
"""
from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ...accounting import count_parameters
from ...campaign import Lazy, unit
from ...fisher import estimate_fisher
from ...stats import band, paired_difference, score_interval, trivial_score
from ...tasks import task_fingerprint
from ...train import TrainConfig, predict, resolve_precision, set_seed
from ..verdicts import BEATS
from .recipe import STAGE_PLANS, SvdDistillConfig, decompose, decompose_targets, module_errors, rank_latency_curve, \
    run_stage
from .record import FD_KD, FD_ONLY, FWSVD, KD_ONLY, NO_RECOVERY, ORIGINAL, SVD, SVD_METHODS, SVD_STUDY

__all__ = ["STUDY", "TRAINED_PLANS", "SECONDS_PER_STEP", "DistillSettings", "Seq2seqSettings", "recovery_rows",
           "untrained_unit_name", "recovery_unit_name", "s2s_unit_name", "unit_names", "s2s_unit_names",
           "untrained_unit", "recovery_unit", "s2s_teacher_unit", "s2s_recovery_unit", "untrained_table", "recovery_table",
           "paired_table", "bleu_table", "is_collapse"]

STUDY = SVD_STUDY
#: the recovery plans that train (``none`` is the factorized model as it is, in every unit)
TRAINED_PLANS = (KD_ONLY, FD_KD)
#: wall seconds per optimizer step of all-MiniLM-L6-v2 at batch 32 x 64 tokens, bf16, one thread, on the study's
#: 2-core machine under other jobs' load: KD (cached teacher logits) as a plain step, FD with the teacher's
#: forward and eager attention (probabilities returned) on top; the time box's estimate of a unit, an upper bound
SECONDS_PER_STEP = {KD_ONLY: 0.5, FD_ONLY: 0.8}


@dataclass(frozen=True)
class DistillSettings:
    """How every classification unit factorizes and recovers (the notebook's parameters, gathered).

    ``keep``: kept fraction of the targeted matrices' weights, met by one global rank (the paper's one
    ``r``); ``steps``: optimizer steps of each recovery stage at ``batch_size``, on ``steps * batch_size``
    training rows drawn with the unit's seed (:func:`recovery_rows`); ``max_length``/``precision`` are the
    dense block's (the units see the data as the dense models did). Every stage is scored once, at its
    last step, and never selected on dev (the recorded predictions are those of the model as trained).
    """

    keep: float
    targets: str | list[str] = "all-linear"
    feature_layers: tuple[str, ...] = ("hidden", "attention")
    steps: int = 300
    batch_size: int = 32
    max_length: int = 64
    precision: str = "auto"
    fd_lr: float = 2e-4
    kd_lr: float = 1e-4
    alpha: float = 0.5
    temperature: float = 2.0
    fisher_examples: int = 256
    fisher_batch_size: int = 8

    def config(self, method: str, plan: str) -> SvdDistillConfig:
        """The recipe's config of ``method`` and ``plan`` (one stage = ``steps`` steps: epochs are moot)."""
        return SvdDistillConfig(decompose_layers=self.targets, feature_layers=list(self.feature_layers), method=method,
                                keep=self.keep, plan=plan, fd_lr=self.fd_lr, kd_lr=self.kd_lr, alpha=self.alpha,
                                temperature=self.temperature, fisher_examples=self.fisher_examples,
                                fisher_batch_size=self.fisher_batch_size)

    def train_config(self, seed: int) -> TrainConfig:
        """The stages' ``TrainConfig``: ``steps`` steps, no warm-up beyond 6 %, one evaluation at the end, no
        checkpoint selection (``keep_best=False``)."""
        return TrainConfig(max_steps=self.steps, batch_size=self.batch_size, max_length=self.max_length, seed=seed,
                           precision=self.precision, warmup_ratio=0.06, bucket_batches=8, keep_best=False,
                           eval_every=self.steps, progress=False, device="auto")

    def spec(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["feature_layers"] = list(self.feature_layers)
        return out


@dataclass(frozen=True)
class Seq2seqSettings:
    """The encoder-decoder track: ``keep`` of each factorized matrix (its own rank per matrix: the encoder,
    decoder and cross-attention matrices differ in shape), ``steps`` per stage at ``batch_size`` on
    ``steps * batch_size`` training pairs drawn with the seed, greedy decoding of ``max_new_tokens``."""

    keep: float = 0.5
    steps: int = 300
    batch_size: int = 32
    max_length: int = 128
    max_new_tokens: int = 64
    precision: str = "auto"
    fd_lr: float = 1e-4
    kd_lr: float = 1e-4
    alpha: float = 0.5
    temperature: float = 2.0
    feature_layers: tuple[str, ...] = ("hidden", "attention")

    def config(self) -> SvdDistillConfig:
        return SvdDistillConfig(keep=self.keep, per_matrix=True, plan=FD_KD, fd_lr=self.fd_lr, kd_lr=self.kd_lr,
                                alpha=self.alpha, temperature=self.temperature,
                                feature_layers=list(self.feature_layers))

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(max_steps=self.steps, batch_size=self.batch_size, max_length=self.max_length,
                           max_new_tokens=self.max_new_tokens, seed=seed, precision=self.precision, warmup_ratio=0.06,
                           bucket_batches=8, keep_best=False, eval_every=self.steps, progress=False, device="auto")

    def spec(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["feature_layers"] = list(self.feature_layers)
        return out


def recovery_rows(task, rows: int, seed: int, eval_rows: int = 8):
    """A copy of ``task`` whose training split is ``min(rows, n)`` of its ``n`` training rows drawn with
    ``seed`` (row order kept), and whose dev split is its first ``eval_rows`` dev rows: the stage's own
    end-of-training evaluation is not what the unit scores (it predicts the whole dev/test split itself),
    so it is kept to a few rows (a BLEU pass over a whole dev split costs a minute)."""
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"recovery rows must be a positive int, got {rows!r}")
    n = len(task.train)
    picked = sorted(random.Random(seed).sample(range(n), min(rows, n)))
    return dataclasses.replace(task, train=[task.train[i] for i in picked], dev=list(task.dev[:eval_rows]),
                               source={**task.source, "recovery_rows": {"rows": len(picked), "seed": seed}})


def untrained_unit_name(profile: str, task_name: str, seed: int) -> str:
    """``<profile>-<task>-untrained-seed<k>``."""
    return f"{profile}-{task_name}-untrained-seed{seed}"


def recovery_unit_name(profile: str, task_name: str, method: str, plan: str, seed: int) -> str:
    """``<profile>-<task>-<svd|fwsvd>-<kd|fdkd>-seed<k>``."""
    _check(method, plan)
    return f"{profile}-{task_name}-{method}-{plan.replace('+', '')}-seed{seed}"


def s2s_unit_name(profile: str, task_name: str, seed: int | None = None) -> str:
    """``<profile>-<task>-s2s-teacher`` (seed None) or ``<profile>-<task>-s2s-fdkd-seed<k>``."""
    return f"{profile}-{task_name}-s2s-teacher" if seed is None else f"{profile}-{task_name}-s2s-fdkd-seed{seed}"


def _check(method: str, plan: str) -> None:
    if method not in SVD_METHODS:
        raise ValueError(f"method must be one of {list(SVD_METHODS)}, got {method!r}")
    if plan not in TRAINED_PLANS:
        raise ValueError(f"plan must be one of {list(TRAINED_PLANS)}, got {plan!r}")


def unit_names(profile: str, task_name: str, seeds: Sequence[int], cells: Sequence[tuple[str, str]]) -> list[str]:
    """Every classification unit a run asks for, in the order it asks: the untrained units, then ``cells``
    ((method, plan) pairs) per seed."""
    names = [untrained_unit_name(profile, task_name, s) for s in seeds]
    return names + [recovery_unit_name(profile, task_name, m, p, s) for s in seeds for m, p in cells]


def s2s_unit_names(profile: str, task_name: str, seeds: Sequence[int]) -> list[str]:
    """The encoder-decoder units: the teacher's, then one per recovery seed."""
    return [s2s_unit_name(profile, task_name)] + [s2s_unit_name(profile, task_name, s) for s in seeds]


def _predictions(model, tokenizer, task, max_length: int, precision: str, **kw) -> list:
    preds, _ = predict(model, tokenizer, task, max_length=max_length, precision=precision, **kw)
    if task.is_seq2seq:
        return [str(p) for p in preds]
    return [float(p) if task.kind == "regression" else int(p) for p in preds]


def _resolved(precision: str, model) -> str:
    return resolve_precision(precision, next(model.parameters()).device)


# --------------------------------------------------------------------------- classification units


def untrained_unit(dense, settings: DistillSettings, keeps: Sequence[float], profile: str, *,
                   latency: Mapping[str, Any] | None = None, results_dir: str | None = None) -> dict[str, Any]:
    """One seed's dense model factorized by plain SVD and FWSVD at ``settings.keep`` and each of ``keeps``,
    scored without training.

    ``dense``: the seed's :class:`~mpstudy.studies.dense.DenseBaseline` (its model is loaded only when this
    unit has no record). ``latency``: ``{"ranks": [...], "repeats": R}`` to time the factorized models
    against the dense one on a ``batch_size x max_length`` batch (:func:`~mpstudy.studies.svd_distillation.recipe.rank_latency_curve`); None: not timed.

    The record's ``result``: ``rows`` (per method and keep: ``rank``, ``kept_fraction``, ``model_params``,
    ``predictions`` in dev order, ``metrics``), ``errors`` (per method and role at the budget: mean plain and
    row-weighted relative error), ``dense_params``, ``budget`` (rank and kept fractions at the budget:
    targeted matrices, encoder, whole model), ``latency`` (rows of :func:`~mpstudy.studies.svd_distillation.recipe.rank_latency_curve`, or None),
    ``fisher`` (its summary) and the resolved ``precision``.
    """
    task, seed = dense.task, int(dense.record["spec"]["seed"])
    all_keeps = sorted({float(settings.keep), *map(float, keeps)}, reverse=True)
    spec = {"dense": dense.record["spec_key"], "settings": settings.spec(), "keeps": all_keeps,
            "latency": dict(latency) if latency else None}

    def compute() -> dict[str, Any]:
        from ...measure import dummy_batch

        model, tokenizer = dense.model()
        refs = dense.record["result"]["references"]
        precision = _resolved(settings.precision, model)
        chosen = decompose_targets(model, settings.targets)
        fisher = estimate_fisher(model, tokenizer, task, targets=chosen, max_examples=settings.fisher_examples,
                                 batch_size=settings.fisher_batch_size, max_length=settings.max_length, seed=seed)
        rows, errors, budget = [], [], None
        for method in SVD_METHODS:
            for keep in all_keeps:
                student = copy.deepcopy(model)
                cfg = dataclasses.replace(settings, keep=keep).config(method, NO_RECOVERY)
                report = decompose(student, cfg, fisher=fisher if method == FWSVD else None)
                preds = _predictions(student, tokenizer, task, settings.max_length, precision)
                rows.append({"method": method, "keep": keep, "rank": report.modules[0]["rank"],
                             "kept_fraction": report.kept_fraction, "model_params": report.model_params_after,
                             "predictions": preds, "metrics": task.compute_metrics(preds, refs)})
                if keep == float(settings.keep):
                    frame = pd.DataFrame(module_errors(model, report, student, fisher))
                    by_role = frame.groupby("role")[["rel_error", "weighted_rel_error"]].mean()
                    errors += [{"method": method, "role": role, **vals} for role, vals in by_role.to_dict("index").items()]
                    if budget is None:
                        encoder = model.base_model.encoder
                        budget = {"rank": report.modules[0]["rank"], "targeted_kept": report.kept_fraction,
                                  "encoder_kept": count_parameters(student.base_model.encoder)["stored"]
                                  / count_parameters(encoder)["stored"],
                                  "whole_kept": report.model_params_after / report.model_params_before}
                del student
        curve = None
        if latency:
            batch = dummy_batch(tokenizer, batch_size=settings.batch_size, seq_len=settings.max_length)
            ranks = sorted({*map(int, latency["ranks"]), budget["rank"]})
            curve = rank_latency_curve(model, batch, ranks, targets=chosen, repeats=int(latency.get("repeats", 10)))
        return {"rows": rows, "errors": errors, "budget": budget, "latency": curve,
                "dense_params": count_parameters(model)["stored"], "fisher": fisher.to_dict(), "precision": precision}

    return unit(STUDY, untrained_unit_name(profile, task.name, seed), spec, compute, results_dir=results_dir,
                estimate_s=60 + 10 * len(all_keeps) + (120 if latency else 0))


def recovery_unit(dense, settings: DistillSettings, method: str, plan: str, profile: str, *,
                  cache_dir: str | None = None, results_dir: str | None = None) -> dict[str, Any]:
    """One factorized model of ``dense``'s seed recovered by ``plan`` (``kd`` or ``fd+kd``) from ``dense``.

    The student is the dense model factorized by ``method`` at ``settings.keep`` (FWSVD estimates its Fisher
    importances on the training rows with the seed, as :func:`untrained_unit` does); the teacher is the dense
    model itself. Each stage trains ``settings.steps`` steps on :func:`recovery_rows` (drawn with the seed,
    the same rows for both plans of a seed, so the plans are paired on data as well as on dev examples).

    The record's ``result``: ``predictions`` (plan -> dev predictions: ``none``, then ``fd`` and ``fd+kd``
    or ``kd``), ``metrics`` (plan -> dev metrics), ``rank``, ``kept_fraction``, ``model_params``,
    ``dense_params``, ``steps`` and ``train_seconds`` per stage, ``recovery_rows`` and ``precision``.
    """
    _check(method, plan)
    task, seed = dense.task, int(dense.record["spec"]["seed"])
    spec = {"dense": dense.record["spec_key"], "method": method, "plan": plan, "settings": settings.spec()}

    def compute() -> dict[str, Any]:
        teacher, tokenizer = dense.model()
        refs = dense.record["result"]["references"]
        precision = _resolved(settings.precision, teacher)
        cfg = settings.config(method, plan)
        fisher = None
        if method == FWSVD:
            fisher = estimate_fisher(teacher, tokenizer, task, targets=decompose_targets(teacher, settings.targets),
                                     max_examples=settings.fisher_examples, batch_size=settings.fisher_batch_size,
                                     max_length=settings.max_length, seed=seed)
        student = copy.deepcopy(teacher)
        report = decompose(student, cfg, fisher=fisher)
        rows = recovery_rows(task, settings.steps * settings.batch_size, seed)
        preds = {NO_RECOVERY: _predictions(student, tokenizer, task, settings.max_length, precision)}
        stages: dict[str, Any] = {}
        done: list[str] = []
        for stage in STAGE_PLANS[plan]:
            set_seed(seed)
            result = run_stage(stage, student, teacher, tokenizer, rows, cfg, settings.train_config(seed),
                               cache_dir=cache_dir)
            done.append(stage)
            stages[stage] = {"steps": result.steps, "train_seconds": result.train_seconds}
            label = FD_ONLY if done == ["fd"] else plan
            preds[label] = _predictions(student.eval(), tokenizer, task, settings.max_length, precision)
        return {"predictions": preds, "metrics": {k: task.compute_metrics(v, refs) for k, v in preds.items()},
                "main_metric": task.main_metric, "rank": report.modules[0]["rank"],
                "kept_fraction": report.kept_fraction, "model_params": report.model_params_after,
                "dense_params": report.model_params_before, "stages": stages, "recovery_rows": len(rows.train),
                "precision": precision}

    steps = settings.steps * sum(SECONDS_PER_STEP[KD_ONLY if s == "kd" else FD_ONLY] for s in STAGE_PLANS[plan])
    return unit(STUDY, recovery_unit_name(profile, task.name, method, plan, seed), spec, compute,
                results_dir=results_dir, estimate_s=steps + 60)


# --------------------------------------------------------------------------- encoder-decoder units


def s2s_teacher_unit(teacher: Lazy, teacher_spec: Mapping[str, Any], test, settings: Seq2seqSettings, profile: str, *,
                     results_dir: str | None = None) -> dict[str, Any]:
    """The teacher's translations of ``test`` and those of its factorization (SVD at ``settings.keep`` per
    matrix, no training: deterministic, so one unit for every recovery seed).

    ``teacher``: ``Lazy`` of ``(model, tokenizer)``; ``teacher_spec``: what identifies it (recipe, seed, data).
    The record's ``result``: ``references``, ``sources``, ``predictions`` (``original`` and ``none`` ->
    hypotheses in test order), ``bleu`` (each), ``model_params`` (each), ``copy_source_bleu`` and ``precision``.
    """
    spec = {"teacher": dict(teacher_spec), "test": task_fingerprint(test), "settings": settings.spec()}

    def compute() -> dict[str, Any]:
        model, tokenizer = teacher()
        precision = _resolved(settings.precision, model)
        kw = {"max_new_tokens": settings.max_new_tokens, "batch_size": 128}
        refs = [r["target"] for r in test.dev]
        student = copy.deepcopy(model)
        report = decompose(student, settings.config())
        preds = {ORIGINAL: _predictions(model, tokenizer, test, settings.max_length, precision, **kw),
                 NO_RECOVERY: _predictions(student, tokenizer, test, settings.max_length, precision, **kw)}
        return {"task": test.name, "references": refs, "sources": [r["source"] for r in test.dev], "predictions": preds,
                "bleu": {k: test.compute_metrics(v, refs)["bleu"] for k, v in preds.items()},
                "model_params": {ORIGINAL: report.model_params_before, NO_RECOVERY: report.model_params_after},
                "copy_source_bleu": trivial_score(test.name, refs, sources=[r["source"] for r in test.dev]),
                "precision": precision}

    return unit(STUDY, s2s_unit_name(profile, test.name), spec, compute, results_dir=results_dir, estimate_s=300)


def s2s_recovery_unit(teacher: Lazy, teacher_spec: Mapping[str, Any], task, test, settings: Seq2seqSettings,
                      seed: int, profile: str, *, results_dir: str | None = None) -> dict[str, Any]:
    """FD then KD of the factorized encoder-decoder from its teacher, with ``seed`` (training pairs drawn,
    data order, dropout), scored on ``test``. KD runs against the live teacher (vocabulary logits are too
    big to cache). The record's ``result``: ``predictions`` (``fd+kd`` -> hypotheses in test order),
    ``bleu``, ``model_params``, ``stages`` (steps, seconds), ``recovery_rows`` and ``precision``."""
    spec = {"teacher": dict(teacher_spec), "train": task_fingerprint(task), "test": task_fingerprint(test),
            "settings": settings.spec(), "seed": seed}

    def compute() -> dict[str, Any]:
        model, tokenizer = teacher()
        precision = _resolved(settings.precision, model)
        refs = [r["target"] for r in test.dev]
        cfg = settings.config()
        student = copy.deepcopy(model)
        report = decompose(student, cfg)
        rows = recovery_rows(task, settings.steps * settings.batch_size, seed)
        stages = {}
        for stage in STAGE_PLANS[FD_KD]:
            set_seed(seed)
            result = run_stage(stage, student, model, tokenizer, rows, cfg, settings.train_config(seed))
            stages[stage] = {"steps": result.steps, "train_seconds": result.train_seconds}
        preds = _predictions(student.eval(), tokenizer, test, settings.max_length, precision,
                             max_new_tokens=settings.max_new_tokens, batch_size=128)
        return {"predictions": {FD_KD: preds}, "bleu": {FD_KD: test.compute_metrics(preds, refs)["bleu"]},
                "model_params": report.model_params_after, "stages": stages, "recovery_rows": len(rows.train),
                "precision": precision}

    return unit(STUDY, s2s_unit_name(profile, test.name, seed), spec, compute, results_dir=results_dir,
                estimate_s=settings.steps * 1.0 + 200)


# --------------------------------------------------------------------------- tables


def _one(preds: Mapping[int, Any]) -> Any:
    """A seed mapping as :mod:`mpstudy.stats` takes it: the mapping with 2+ seeds, the list with one."""
    return dict(preds) if len(preds) > 1 else next(iter(preds.values()))


def is_collapse(score, trivial: float) -> bool:
    """Whether a score's interval reaches the trivial predictor's score: the model is no better than the
    majority class (or a constant), a collapse, never a result."""
    return bool(score.low <= trivial)


def _cells(untrained: Mapping[int, Mapping[str, Any]], recovered: Mapping[tuple[str, str, int], Mapping[str, Any]],
           keep: float) -> dict[tuple[str, str], dict[int, list]]:
    """(method, plan) -> seed -> dev predictions at the budget, from both kinds of units."""
    cells: dict[tuple[str, str], dict[int, list]] = {}
    for seed, rec in untrained.items():
        for row in rec["result"]["rows"]:
            if abs(row["keep"] - keep) < 1e-12:
                cells.setdefault((row["method"], NO_RECOVERY), {})[seed] = row["predictions"]
    for (method, plan, seed), rec in sorted(recovered.items(), key=lambda kv: kv[0][2]):
        for label, preds in rec["result"]["predictions"].items():
            if label != NO_RECOVERY:
                cells.setdefault((method, label), {})[seed] = preds
    return cells


def untrained_table(dense: Mapping[int, Any], untrained: Mapping[int, Mapping[str, Any]],
                    resamples: int = 2000) -> pd.DataFrame:
    """Per budget (``keep``, largest first), without training: plain SVD's and FWSVD's dev scores over seeds
    with their intervals, and the paired difference FWSVD - SVD (same seeds, same examples) with its interval
    and the verdict on "FWSVD beats SVD" (:func:`mpstudy.stats.band`: by more than half a point).

    ``dense``: seed -> dense baseline (for the task and references); ``untrained``: seed -> :func:`untrained_unit` record.
    """
    seeds = sorted(untrained)
    first = dense[seeds[0]]
    task_name, refs = first.task.name, first.record["result"]["references"]
    trivial = trivial_score(task_name, refs)
    by_cell: dict[tuple[str, float], dict[int, dict]] = {}
    for seed in seeds:
        for row in untrained[seed]["result"]["rows"]:
            by_cell.setdefault((row["method"], row["keep"]), {})[seed] = row
    out = []
    for keep in sorted({k for _, k in by_cell}, reverse=True):
        row: dict[str, Any] = {"keep": keep}
        preds = {}
        for method in SVD_METHODS:
            cell = by_cell[(method, keep)]
            preds[method] = _one({s: r["predictions"] for s, r in cell.items()})
            score = score_interval(task_name, preds[method], refs, resamples=resamples)
            any_row = cell[seeds[0]]
            row.update({"rank": any_row["rank"], "kept_fraction": any_row["kept_fraction"],
                        "model_params": any_row["model_params"], f"{method}": score.estimate,
                        f"{method}_low": score.low, f"{method}_high": score.high,
                        f"{method}_collapse": is_collapse(score, trivial)})
        diff = paired_difference(task_name, preds[FWSVD], preds[SVD], refs, resamples=resamples)
        row.update(fwsvd_minus_svd=diff.estimate, low=diff.low, high=diff.high,
                   fwsvd_beats=band(diff, BEATS).verdict, seeds=len(seeds))
        out.append(row)
    return pd.DataFrame(out)


def recovery_table(dense: Mapping[int, Any], untrained: Mapping[int, Mapping[str, Any]],
                   recovered: Mapping[tuple[str, str, int], Mapping[str, Any]], keep: float,
                   resamples: int = 2000) -> pd.DataFrame:
    """One row per (method, plan) at the budget, the dense models first: the dev score over seeds with its
    95 % interval, the paired difference to the dense model of the same seed (same examples) with its
    interval and the verdict on "within 2 points of dense, or above" (the paper's "minimal loss"), the
    stored parameters, and ``collapse`` (the interval reaches the trivial predictor's score).

    ``dense``: seed -> :class:`~mpstudy.studies.dense.DenseBaseline`; ``untrained``: seed ->
    :func:`untrained_unit` record; ``recovered``: (method, plan, seed) -> :func:`recovery_unit` record.
    """
    seeds = sorted(dense)
    first = dense[seeds[0]]
    task_name, refs = first.task.name, first.record["result"]["references"]
    trivial = trivial_score(task_name, refs)
    base = {s: dense[s].record["result"]["predictions"] for s in seeds}
    params = {row["method"]: row["model_params"] for row in untrained[seeds[0]]["result"]["rows"]
              if abs(row["keep"] - keep) < 1e-12}
    rows = []
    score = score_interval(task_name, _one(base), refs, resamples=resamples)
    rows.append({"method": "dense", "plan": "", "score": score.estimate, "score_low": score.low,
                 "score_high": score.high, "model_params": untrained[seeds[0]]["result"]["dense_params"],
                 "seeds": len(seeds), "collapse": is_collapse(score, trivial)})
    cells = _cells(untrained, recovered, keep)
    order = [(m, p) for m in SVD_METHODS for p in (NO_RECOVERY, KD_ONLY, FD_ONLY, FD_KD)]
    for method, plan in (c for c in order if c in cells):
        by_seed = cells[(method, plan)]
        if sorted(by_seed) != seeds:
            raise ValueError(f"{method} {plan}: records for seeds {sorted(by_seed)}, the dense baselines have {seeds}")
        score = score_interval(task_name, _one(by_seed), refs, resamples=resamples)
        diff = paired_difference(task_name, _one(by_seed), _one(base), refs, resamples=resamples)
        rows.append({"method": method, "plan": plan, "score": score.estimate, "score_low": score.low,
                     "score_high": score.high, "vs_dense": diff.estimate, "vs_dense_low": diff.low,
                     "vs_dense_high": diff.high, "minimal_loss": band(diff, -0.02).verdict,
                     "model_params": params.get(method), "seeds": len(seeds), "collapse": is_collapse(score, trivial)})
    return pd.DataFrame(rows)


def paired_table(dense: Mapping[int, Any], untrained: Mapping[int, Mapping[str, Any]],
                 recovered: Mapping[tuple[str, str, int], Mapping[str, Any]], keep: float,
                 pairs: Sequence[tuple[tuple[str, str], tuple[str, str]]], resamples: int = 2000) -> pd.DataFrame:
    """The paired differences ``a - b`` (same seeds, same dev examples) of the (method, plan) pairs asked,
    with their intervals and the verdict on "a beats b" (:func:`mpstudy.stats.band`: by more than half a
    point, :data:`~mpstudy.studies.verdicts.BEATS`); pairs whose cells are missing are left out."""
    first = dense[sorted(dense)[0]]
    task_name, refs = first.task.name, first.record["result"]["references"]
    cells = _cells(untrained, recovered, keep)
    rows = []
    for a, b in pairs:
        if a not in cells or b not in cells:
            continue
        seeds = sorted(set(cells[a]) & set(cells[b]))
        diff = paired_difference(task_name, _one({s: cells[a][s] for s in seeds}), _one({s: cells[b][s] for s in seeds}),
                                 refs, resamples=resamples)
        rows.append({"a": " + ".join(a), "b": " + ".join(b), "difference": diff.estimate, "low": diff.low,
                     "high": diff.high, "a_beats_b": band(diff, BEATS).verdict, "seeds": len(seeds)})
    return pd.DataFrame(rows)


def bleu_table(teacher: Mapping[str, Any], recovered: Mapping[int, Mapping[str, Any]],
               resamples: int = 2000) -> pd.DataFrame:
    """BLEU on the test split with its 95 % interval (whole-corpus BLEU of each resample of sentences; over
    recovery seeds for FD then KD), and the paired difference to the original (the one teacher, paired with
    every recovery seed) with its interval and the verdict on "within 1 BLEU point of the original".

    ``teacher``: the :func:`s2s_teacher_unit` record; ``recovered``: seed -> :func:`s2s_recovery_unit` record.
    """
    res = teacher["result"]
    refs, original, task_name = res["references"], res["predictions"][ORIGINAL], res["task"]
    rows = []
    for plan, preds, params in ((ORIGINAL, original, res["model_params"][ORIGINAL]),
                                (NO_RECOVERY, res["predictions"][NO_RECOVERY], res["model_params"][NO_RECOVERY]),
                                (FD_KD, {s: r["result"]["predictions"][FD_KD] for s, r in sorted(recovered.items())},
                                 next(iter(recovered.values()))["result"]["model_params"] if recovered else None)):
        if plan == FD_KD and not recovered:
            continue
        seeds = sorted(preds) if isinstance(preds, dict) else [None]
        score = score_interval(task_name, _one(preds) if isinstance(preds, dict) else preds, refs, metric="bleu",
                               resamples=resamples)
        row = {"plan": plan, "bleu": score.estimate, "low": score.low, "high": score.high, "model_params": params,
               "seeds": len(seeds)}
        if plan != ORIGINAL:
            # the teacher repeated under each recovery seed's id: the difference is paired seed by seed (its
            # interval carries the spread over recovery seeds) and example by example
            a = _one(preds) if isinstance(preds, dict) else preds
            b = _one({s: original for s in seeds}) if isinstance(preds, dict) else original
            diff = paired_difference(task_name, a, b, refs, metric="bleu", resamples=resamples)
            row.update(vs_original=diff.estimate, vs_original_low=diff.low, vs_original_high=diff.high,
                       within_1_bleu=band(diff, -1.0).verdict)
        rows.append(row)
    return pd.DataFrame(rows)

