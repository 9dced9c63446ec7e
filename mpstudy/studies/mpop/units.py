"""Study 01's campaign units: one per fine-tuned (variant, seed), one per squeezed seed, and the tables
computed from their records.

Every variant starts from the *pre-trained* model of the profile's dense block (MPOP decomposes the
pre-trained weights, not the fine-tuned ones) and trains on the same training split as the shared dense
baselines (:mod:`mpstudy.studies.dense`); every unit records its dev predictions in the dense units'
row order, so each score gets an interval over dev examples and seeds, and each comparison (lightweight
vs full MPO, lightweight MPO vs dense, squeezed vs unsqueezed) is paired on the same examples and seeds
without the models (:mod:`mpstudy.stats`).

* :func:`finetune_unit` -- ``MPO full``, ``MPO lightweight`` or ``LoRA`` for one seed;
* :func:`squeeze_unit` -- dimension squeezing of one seed's lightweight model; the cuts are accepted on
  a held-out slice of the training split (not on dev: choosing cuts by the dev score and then reporting
  that dev score would flatter the squeeze), and the final model is scored on dev beside the starting one;
* :func:`variant_table`, :func:`squeeze_table` -- the page's tables with intervals.

The trained lightweight model is shared by its fine-tuning unit and its squeeze unit through
:class:`mpstudy.campaign.Lazy` (:func:`trained_model`): it is trained once per process, and only when one
of the two units has no record (a squeeze unit whose lightweight record exists trains it again, with
the same seed and settings).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ...accounting import count_parameters
from ...campaign import Lazy, unit
from ...lora import apply_lora
from ...measure import compare_latency, dummy_batch
from ...models import load_model
from ...stats import band, paired_difference, score_interval
from ...tasks import holdout_split, task_fingerprint
from ...train import TrainConfig, predict, resolve_device, resolve_precision, train
from ..verdicts import COMPARABLE
from .record import DENSE, LORA, MPO_FULL, MPO_LIGHTWEIGHT, MPOP_STUDY
from .recipe import mpop_compress, mpop_variant
from .squeeze import dimension_squeeze

__all__ = ["STUDY", "TRAINED_VARIANTS", "SLUGS", "MpopSettings", "SqueezeSettings", "finetune_unit_name",
           "squeeze_unit_name", "unit_names", "trained_model", "finetune_unit", "squeeze_unit", "selection_task",
           "variant_table", "squeeze_table", "SECONDS_PER_STEP"]

STUDY = MPOP_STUDY
#: the variants this study trains itself (the dense one is the shared dense unit)
TRAINED_VARIANTS = (MPO_FULL, MPO_LIGHTWEIGHT, LORA)
#: each variant's part of a unit name
SLUGS = {MPO_FULL: "mpo-full", MPO_LIGHTWEIGHT: "mpo-light", LORA: "lora"}
#: wall seconds per optimizer step of all-MiniLM-L6-v2 at batch 32 x 64 tokens, bf16, one thread, measured on
#: the study's 2-core machine under the load of other jobs (an MPO layer rebuilds its dense weight every
#: training forward; LoRA trains 1 % of the weights): the time box's estimate of a unit, an upper bound
SECONDS_PER_STEP = {MPO_FULL: 1.3, MPO_LIGHTWEIGHT: 1.3, LORA: 0.35}


@dataclass(frozen=True)
class MpopSettings:
    """How every variant of one study run fine-tunes (the notebook's parameters, gathered).

    ``model_name``/``max_length``/``batch_size``/``precision`` come from the dense block (the variants
    see the dense baselines' data as the dense models saw it); ``epochs``/``max_steps`` are the
    variants' training length (``max_steps`` overrides ``epochs``); ``lr`` is the main learning rate of
    MPO full (every non-MPO parameter), ``mpo_lr`` that of its MPO cores, ``light_lr`` that of every
    trained parameter of the lightweight variant, ``lora_lr`` that of LoRA's adapters, pooler and head.
    """

    model_name: str
    batch_size: int
    max_length: int
    precision: str
    epochs: float
    max_steps: int | None
    warmup_ratio: float
    lr: float
    mpo_lr: float
    light_lr: float
    lora_lr: float
    lora_rank: int
    mpo_groups: tuple[str, ...]
    caps: dict[str, int | None] = field(default_factory=dict)

    def rate(self, variant: str) -> float:
        """The main learning rate of ``variant``."""
        return {MPO_FULL: self.lr, MPO_LIGHTWEIGHT: self.light_lr, LORA: self.lora_lr}[_check_variant(variant)]

    def config(self, variant: str, seed: int) -> TrainConfig:
        """The variant's ``TrainConfig``: evaluated once, at the last step, and never selected on dev
        (``keep_best=False``): the recorded dev predictions are those of the model as trained."""
        steps = self.max_steps
        return TrainConfig(lr=self.rate(variant), epochs=self.epochs, max_steps=steps, batch_size=self.batch_size,
                           max_length=self.max_length, warmup_ratio=self.warmup_ratio, seed=seed,
                           precision=self.precision, bucket_batches=8, keep_best=False, progress=False,
                           eval_every=steps, device="auto")

    def spec(self, variant: str, seed: int) -> dict[str, Any]:
        """What a variant's training depends on (besides the task's rows), as plain data."""
        train_fields = self.config(variant, seed).key_fields()
        # the profile's choice, as in the dense units' specs (the records say what it resolved to)
        train_fields["precision"] = self.precision
        out: dict[str, Any] = {"model": self.model_name, "variant": variant, "seed": seed, "train": train_fields}
        if variant != LORA:
            out["mpo"] = {"groups": list(self.mpo_groups), "caps": dict(sorted(self.caps.items())),
                          "mpo_lr": self.light_lr if variant == MPO_LIGHTWEIGHT else self.mpo_lr}
        else:
            out["lora_rank"] = self.lora_rank
        return out


@dataclass(frozen=True)
class SqueezeSettings:
    """Dimension squeezing: at most ``cuts`` greedy cuts of ``step`` (a fraction of a bond), each followed
    by ``steps`` fine-tuning steps (central tensors frozen, at ``lr``), accepted while the score on a
    held-out share ``select_share`` of the training rows stays within ``tolerance`` of the starting
    model's there (:func:`selection_task`; a share, not a count, so the same setting fits any data size).
    ``latency_repeats``: rounds of the dense-vs-squeezed timing (first seed only; 0: not timed)."""

    cuts: int
    step: float
    steps: int
    tolerance: float
    select_share: float
    lr: float
    latency_repeats: int = 0

    def spec(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_variant(variant: str) -> str:
    if variant not in TRAINED_VARIANTS:
        raise ValueError(f"variant must be one of {list(TRAINED_VARIANTS)}, got {variant!r}")
    return variant


def finetune_unit_name(profile: str, task_name: str, variant: str, seed: int) -> str:
    """``<profile>-<task>-<mpo-full|mpo-light|lora>-seed<k>``."""
    return f"{profile}-{task_name}-{SLUGS[_check_variant(variant)]}-seed{seed}"


def squeeze_unit_name(profile: str, task_name: str, seed: int) -> str:
    """``<profile>-<task>-squeeze-seed<k>``."""
    return f"{profile}-{task_name}-squeeze-seed{seed}"


def unit_names(profile: str, task_name: str, seeds: Sequence[int]) -> list[str]:
    """Every unit a study run asks for, in the order it asks (for :func:`mpstudy.campaign.declare`)."""
    names = [finetune_unit_name(profile, task_name, v, s) for s in seeds for v in TRAINED_VARIANTS]
    return names + [squeeze_unit_name(profile, task_name, s) for s in seeds]


def _steps(settings: MpopSettings, task) -> int:
    if settings.max_steps is not None:
        return settings.max_steps
    return math.ceil(len(task.train) / settings.batch_size) * math.ceil(settings.epochs)


def trained_model(settings: MpopSettings, task, variant: str, seed: int) -> Lazy:
    """The fine-tuned model of ``variant`` and ``seed``, trained on first call only: ``Lazy`` of a dict with
    ``model``, ``tokenizer``, ``result`` (the :class:`~mpstudy.train.TrainResult`) and ``dense_stored``
    (the stored parameters of the pre-trained model before any change)."""
    _check_variant(variant)

    def make() -> dict[str, Any]:
        model, tokenizer = load_model(settings.model_name, task=task, seed=seed)
        dense_stored = count_parameters(model, nonzero=False)["stored"]
        groups = None
        if variant == LORA:
            model = apply_lora(model, rank=settings.lora_rank)
        else:
            mpop_compress(model, layers=tuple(settings.mpo_groups), **settings.caps)
            light = variant == MPO_LIGHTWEIGHT
            groups = mpop_variant(model, "lightweight" if light else "full",
                                  mpo_lr=settings.light_lr if light else settings.mpo_lr)
        result = train(model, tokenizer, task, settings.config(variant, seed), param_groups=groups)
        return {"model": model, "tokenizer": tokenizer, "result": result, "dense_stored": dense_stored}

    return Lazy(make)


def _predictions(model, tokenizer, task, settings: MpopSettings) -> tuple[list, str]:
    precision = resolve_precision(settings.precision, next(model.parameters()).device)
    preds, _ = predict(model, tokenizer, task, max_length=settings.max_length, precision=precision)
    cast = float if task.kind == "regression" else int
    return [cast(p) for p in preds], precision


def finetune_unit(settings: MpopSettings, task, variant: str, seed: int, profile: str, *,
                  trained: Lazy | None = None, results_dir: str | None = None) -> dict[str, Any]:
    """The record of one fine-tuned variant and seed (computed, or read from ``results/01_mpop/units/``).

    Args:
        settings: the study's fine-tuning settings.
        task: the dense baselines' task (``DenseBaseline.task``, :mod:`mpstudy.studies.dense`): the same rows
            and dev order, so the predictions pair with the dense units'.
        variant: ``MPO full``, ``MPO lightweight`` or ``LoRA``.
        trained: the variant's :func:`trained_model` (shared with a squeeze unit); None: made here.

    The record's ``result``: ``metrics`` (dev), ``main_metric``, ``predictions`` (dev, row order),
    ``stored``/``trainable`` (:func:`mpstudy.count_parameters` of the trained model), ``dense_stored``,
    ``steps``, ``train_seconds`` and the resolved ``precision``.
    """
    _check_variant(variant)
    trained = trained if trained is not None else trained_model(settings, task, variant, seed)
    spec = {"profile": profile, "task": task.name, "data": task_fingerprint(task), **settings.spec(variant, seed)}

    def compute() -> dict[str, Any]:
        done = trained()
        model, tokenizer, result = done["model"], done["tokenizer"], done["result"]
        preds, precision = _predictions(model, tokenizer, task, settings)
        refs = [ex["label"] for ex in task.dev]
        counts = count_parameters(model, nonzero=False)
        return {"metrics": task.compute_metrics(preds, refs), "main_metric": task.main_metric, "predictions": preds,
                "stored": counts["stored"], "trainable": counts["trainable"], "dense_stored": done["dense_stored"],
                "steps": result.steps, "train_seconds": result.train_seconds, "precision": precision}

    estimate = _steps(settings, task) * SECONDS_PER_STEP[variant]
    return unit(STUDY, finetune_unit_name(profile, task.name, variant, seed), spec, compute,
                results_dir=results_dir, estimate_s=estimate)


def selection_task(task, share: float, seed: int = 0):
    """A copy of ``task`` whose dev split is ``max(2, round(share * n))`` of its ``n`` training rows, drawn
    with ``seed``, and whose training split is the rest: what dimension squeezing fine-tunes on and
    accepts its cuts by."""
    select = holdout_split(task, share, seed, "select_share")
    held = {"rows": len(select.dev), "seed": seed}
    return dataclasses.replace(select, source={**task.source, "squeeze_selection": held})


def squeeze_unit(settings: MpopSettings, squeeze: SqueezeSettings, task, seed: int, profile: str, *,
                 trained: Lazy | None = None, time_it: bool = False, results_dir: str | None = None) -> dict[str, Any]:
    """The record of dimension squeezing one seed's lightweight MPO model.

    ``trained``: the lightweight model of that seed (:func:`trained_model`, shared with its fine-tuning
    unit); it is copied, not changed. ``time_it``: also time the squeezed model against the dense
    pre-trained one (interleaved, :func:`mpstudy.measure.compare_latency`).

    The record's ``result``: ``trajectory`` (one row per cut tried, cut 0 the start; the metrics are
    on the held-out selection rows), ``start_predictions``/``predictions`` (dev, before and after
    squeezing), ``start_metrics``/``metrics`` (dev), ``start_stored``/``stored``, ``accepted`` (cuts
    accepted), ``tried`` and, when timed, ``latency``.
    """
    trained = trained if trained is not None else trained_model(settings, task, MPO_LIGHTWEIGHT, seed)
    select = selection_task(task, squeeze.select_share, seed=0)
    spec = {"profile": profile, "task": task.name, "data": task_fingerprint(task),
            "start": settings.spec(MPO_LIGHTWEIGHT, seed), "squeeze": squeeze.spec(), "time_it": bool(time_it)}

    def compute() -> dict[str, Any]:
        done = trained()
        model, tokenizer = copy.deepcopy(done["model"]), done["tokenizer"]
        refs = [ex["label"] for ex in task.dev]
        start_preds, precision = _predictions(model, tokenizer, task, settings)
        start_stored = count_parameters(model, nonzero=False)["stored"]
        short = TrainConfig(lr=squeeze.lr, max_steps=squeeze.steps, batch_size=settings.batch_size,
                            max_length=settings.max_length, seed=seed, warmup_ratio=0.0, precision=settings.precision,
                            bucket_batches=8, keep_best=False, progress=False, device="auto")
        trajectory = dimension_squeeze(model, tokenizer, select, short, tolerance=squeeze.tolerance,
                                       max_cuts=squeeze.cuts, step=squeeze.step,
                                       param_groups=lambda m: mpop_variant(m, "lightweight", mpo_lr=squeeze.lr),
                                       progress=False)
        preds, _ = _predictions(model, tokenizer, task, settings)
        out = {"trajectory": [_plain_row(r) for r in trajectory], "start_predictions": start_preds,
               "predictions": preds, "start_metrics": task.compute_metrics(start_preds, refs),
               "metrics": task.compute_metrics(preds, refs), "main_metric": task.main_metric,
               "start_stored": start_stored, "stored": count_parameters(model, nonzero=False)["stored"],
               "accepted": sum(1 for r in trajectory[1:] if r["accepted"]), "tried": len(trajectory) - 1,
               "select_rows": len(select.dev), "precision": precision}
        if time_it and squeeze.latency_repeats > 0:
            dense, _ = load_model(settings.model_name, task=task, seed=seed)
            device = resolve_device("auto")
            batch = dummy_batch(tokenizer, batch_size=settings.batch_size, seq_len=settings.max_length, device=device)
            out["latency"] = compare_latency(dense.to(device), model.to(device), batch, repeats=squeeze.latency_repeats)
        return out

    steps = squeeze.cuts * squeeze.steps + (0 if trained.made else _steps(settings, task))
    return unit(STUDY, squeeze_unit_name(profile, task.name, seed), spec, compute, results_dir=results_dir,
                estimate_s=steps * SECONDS_PER_STEP[MPO_LIGHTWEIGHT])


def _plain_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A trajectory row as JSON (NaN-free: the start row's missing cut fields are None)."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


# --------------------------------------------------------------------------- tables


def _by_seed(records: Mapping[tuple[str, int], Mapping[str, Any]], variant: str) -> dict[int, list]:
    return {s: r["result"]["predictions"] for (v, s), r in sorted(records.items(), key=lambda kv: kv[0][1])
            if v == variant}


def _one(preds: Mapping[int, list]) -> Any:
    """A seed mapping as :mod:`mpstudy.stats` takes it: the mapping with 2+ seeds, the list with one."""
    return preds if len(preds) > 1 else next(iter(preds.values()))


def variant_table(dense: Mapping[int, Any], records: Mapping[tuple[str, int], Mapping[str, Any]],
                  resamples: int = 2000) -> pd.DataFrame:
    """One row per variant (dense first): its dev score over seeds with the 95 % interval, the paired
    difference to the dense model (same examples, same seeds) with its interval and the verdict on
    "within 1 point of dense, or above" (:func:`mpstudy.stats.band`, threshold -0.01), the stored and
    trained parameters and their share of the dense model's.

    ``dense``: seed -> :class:`~mpstudy.studies.dense.DenseBaseline`; ``records``: (variant, seed) ->
    :func:`finetune_unit` record, for the same seeds.
    """
    seeds = sorted(dense)
    first = dense[seeds[0]]
    task_name, refs = first.task.name, first.record["result"]["references"]
    base = _one({s: dense[s].record["result"]["predictions"] for s in seeds})
    dense_stored = next(iter(records.values()))["result"]["dense_stored"]
    rows = []
    for variant in (DENSE, *TRAINED_VARIANTS):
        if variant == DENSE:
            preds, stored, trainable = base, dense_stored, dense_stored
        else:
            by_seed = _by_seed(records, variant)
            if sorted(by_seed) != seeds:
                raise ValueError(f"{variant}: records for seeds {sorted(by_seed)}, the dense baselines have {seeds}")
            preds = _one(by_seed)
            one = next(r for (v, _), r in records.items() if v == variant)["result"]
            stored, trainable = one["stored"], one["trainable"]
        score = score_interval(task_name, preds, refs, resamples=resamples)
        row = {"variant": variant, "score": score.estimate, "score_low": score.low, "score_high": score.high,
               "stored": stored, "trainable": trainable, "trainable_share": trainable / dense_stored,
               "seeds": len(seeds)}
        if variant != DENSE:
            diff = paired_difference(task_name, preds, base, refs, resamples=resamples)
            row.update(vs_dense=diff.estimate, vs_dense_low=diff.low, vs_dense_high=diff.high,
                       on_par=band(diff, -COMPARABLE).verdict)
        rows.append(row)
    return pd.DataFrame(rows)


def squeeze_table(records: Mapping[int, Mapping[str, Any]], references: Sequence, task_name: str,
                  resamples: int = 2000) -> pd.DataFrame:
    """Per seed, and over the seeds (``seed`` "all"): stored parameters before and after squeezing, cuts
    accepted of cuts tried, the dev scores before and after squeezing with their intervals, and the paired difference
    squeezed - unsqueezed (same model before its cuts, same examples) with its interval.

    ``records``: seed -> :func:`squeeze_unit` record.
    """
    seeds = sorted(records)
    rows = []
    groups = [(s, {s: records[s]}) for s in seeds] + ([("all", records)] if len(seeds) > 1 else [])
    for label, part in groups:
        after = _one({s: r["result"]["predictions"] for s, r in part.items()})
        before = _one({s: r["result"]["start_predictions"] for s, r in part.items()})
        score = score_interval(task_name, after, references, resamples=resamples)
        start = score_interval(task_name, before, references, resamples=resamples)
        diff = paired_difference(task_name, after, before, references, resamples=resamples)
        results = [r["result"] for r in part.values()]
        rows.append({"seed": label, "start_stored": round(sum(r["start_stored"] for r in results) / len(results)),
                     "stored": round(sum(r["stored"] for r in results) / len(results)),
                     "accepted": sum(r["accepted"] for r in results), "tried": sum(r["tried"] for r in results),
                     "start_score": start.estimate, "start_score_low": start.low, "start_score_high": start.high,
                     "score": score.estimate, "score_low": score.low, "score_high": score.high,
                     "vs_start": diff.estimate, "vs_start_low": diff.low, "vs_start_high": diff.high})
    return pd.DataFrame(rows)
