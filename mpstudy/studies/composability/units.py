"""Study 05's campaign units: module-level tuning of one teacher's pruned modules (one unit per track and
seed), model-level fine-tuning of one configuration from one starting point (one unit per track,
configuration, arm and seed), the seq2seq teacher's own scores, the cost of each pruned form, and the
tables computed from their records.

Tracks (:data:`~mpstudy.studies.composability.record.TRACKS`):

* ``cls``: the shared dense baselines of the profile (:mod:`mpstudy.studies.dense`; at the ``cpu``
  profile all-MiniLM-L6-v2 fine-tuned on the full SST-2 training set, one model per seed) are the
  teachers; seed ``s`` prunes, tunes and fine-tunes the dense model of seed ``s``, and its scores are
  paired with that model's recorded dev predictions.
* ``s2s``: one encoder-decoder teacher (``scratch-t5``: the T5 trained from scratch on Multi30K, a campaign
  unit of :mod:`mpstudy.studies.translation_base`; otherwise a named model fine-tuned once),
  tuned and fine-tuned with several seeds; its dev split is a seeded subset of the validation rows
  (the evaluations along the way), its final scores are on the test split when the task has one.

Every fine-tuning unit records the dev predictions of the composed model before fine-tuning
(``start_predictions``) and after its last step (``predictions``; no checkpoint is chosen on dev), the
dev score at every evaluation (``history``, for the time to the target), and for seq2seq the test
predictions; the tables give each score its 95 % interval over examples and seeds
(:func:`mpstudy.stats.score_interval`, corpus BLEU re-computed on each resample) and compare the arms
paired by seed (:func:`mpstudy.stats.paired_difference`; for times
:func:`~mpstudy.studies.composability.claims.seed_difference`, judged per configuration by
:func:`~mpstudy.studies.composability.claims.time_verdicts`).

The pruned and tuned modules are shared by the units of one teacher through :class:`mpstudy.campaign.Lazy`:
they are built (and tuned) once per process, and only when some unit that needs them has no record.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ...accounting import count_parameters
from ...campaign import Lazy, unit
from ...prune import compose, generate_configs, prune_variants, pruning_scheme, scheme_size
from ...stats import paired_difference, score_interval
from ...tasks import holdout_split, task_fingerprint
from ...train import TrainConfig, predict, resolve_device, resolve_precision, train
from .claims import seed_difference
from .record import ARMS, BASELINE, CLS, COMPOSABILITY, COMPOSABILITY_STUDY, S2S, TRACKS
from .recipe import sparsity_latency, time_to_target, tune_modules

__all__ = ["STUDY", "SECONDS_PER_STEP", "TUNE_SECONDS_PER_STEP", "EVAL_SECONDS", "CompSettings", "Teacher",
           "tune_unit_name", "run_unit_name", "teacher_unit_name", "cost_unit_name", "unit_names", "selection_split",
           "pruned_variants", "tuned_variants", "tune_unit", "run_unit", "teacher_unit", "cost_unit",
           "seed_difference", "score_table", "time_table", "record_rows"]

STUDY = COMPOSABILITY_STUDY
#: wall seconds of one model-level optimizer step at batch 32, bf16, one thread, on the study's 2-core machine
#: with its load average at 6 (all-MiniLM-L6-v2 at 64 tokens and the 3+3-layer Multi30K T5, both pruned by
#: configuration 0: 0.51 s each): the time box's estimate of a unit, an upper bound
SECONDS_PER_STEP = {CLS: 0.5, S2S: 0.5}
#: one module-level tuning step (the frozen teacher's forward plus every variant's forward and backward)
TUNE_SECONDS_PER_STEP = {CLS: 1.3, S2S: 1.3}
#: one evaluation on the dev split along the way (SST-2's 872 rows; greedy decoding of 300 Multi30K rows)
EVAL_SECONDS = {CLS: 5.0, S2S: 6.0}


def _check(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {list(allowed)}, got {value!r}")
    return value


@dataclass(frozen=True)
class CompSettings:
    """How one track prunes, tunes and fine-tunes (the notebook's parameters of that track, gathered).

    Configuration ``i`` keeps ``attention_keep[i]`` of every attention block's heads and ``linear_keep[i]``
    of every feed-forward Linear's weights. Module-level tuning: ``module_steps`` steps at ``module_lr``,
    validated every ``module_eval_every`` steps on a share ``module_select_share`` of the training rows held out
    (each variant keeps its best validated state; ``module_patience`` validations without improvement stop
    it). Model-level fine-tuning: ``steps`` steps at ``lr`` (linear warm-up over ``warmup_ratio``), the dev
    score evaluated every ``eval_every`` steps and at the last; no checkpoint is chosen on dev.
    """

    track: str
    attention_keep: tuple[float, ...]
    linear_keep: tuple[float, ...]
    batch_size: int
    max_length: int
    precision: str
    module_lr: float
    module_steps: int
    module_eval_every: int
    module_patience: int | None
    module_select_share: float
    lr: float
    steps: int
    eval_every: int
    warmup_ratio: float
    max_new_tokens: int = 32

    def __post_init__(self) -> None:
        _check(self.track, TRACKS, "track")
        if len(self.attention_keep) != len(self.linear_keep) or not self.attention_keep:
            raise ValueError(f"attention_keep {list(self.attention_keep)} and linear_keep {list(self.linear_keep)} must "
                             "be non-empty lists of the same length (one entry per configuration)")

    @property
    def n_configs(self) -> int:
        return len(self.attention_keep)

    def module_config(self, seed: int) -> TrainConfig:
        return TrainConfig(lr=self.module_lr, max_steps=self.module_steps, batch_size=self.batch_size,
                           max_length=self.max_length, max_new_tokens=self.max_new_tokens,
                           eval_every=self.module_eval_every, warmup_ratio=0.0, seed=seed, precision=self.precision,
                           bucket_batches=8, progress=False, device="auto")

    def model_config(self, seed: int) -> TrainConfig:
        return TrainConfig(lr=self.lr, max_steps=self.steps, batch_size=self.batch_size, max_length=self.max_length,
                           max_new_tokens=self.max_new_tokens, eval_every=self.eval_every,
                           warmup_ratio=self.warmup_ratio, seed=seed, precision=self.precision, bucket_batches=8,
                           keep_best=False, progress=False, device="auto")

    def tune_spec(self, seed: int) -> dict[str, Any]:
        fields = self.module_config(seed).key_fields()
        fields["precision"] = self.precision  # the profile's choice; the record says what it resolved to
        return {"track": self.track, "attention_keep": list(self.attention_keep), "linear_keep": list(self.linear_keep),
                "module": fields, "patience": self.module_patience, "select_share": self.module_select_share}

    def run_spec(self, seed: int) -> dict[str, Any]:
        fields = self.model_config(seed).key_fields()
        fields["precision"] = self.precision
        return {"track": self.track, "train": fields}

    def config_keeps(self, index: int) -> dict[str, float]:
        return {"attention_keep": self.attention_keep[index], "linear_keep": self.linear_keep[index]}


@dataclass
class Teacher:
    """The model a track prunes: ``model`` (a :class:`~mpstudy.campaign.Lazy` of ``(model, tokenizer)``), what
    identifies it in the units' specs (``identity``: plain data, never a code version), and, for the cls
    track, its dense unit's record (dev ``predictions``/``references``)."""

    model: Lazy
    identity: dict[str, Any]
    record: dict[str, Any] | None = None


# --------------------------------------------------------------------------- names


def tune_unit_name(profile: str, track: str, task_name: str, seed: int) -> str:
    """``<profile>-<track>-<task>-tune-seed<k>``."""
    return f"{profile}-{_check(track, TRACKS, 'track')}-{task_name}-tune-seed{seed}"


def run_unit_name(profile: str, track: str, task_name: str, config: int, arm: str, seed: int) -> str:
    """``<profile>-<track>-<task>-c<i>-<composability|baseline>-seed<k>``."""
    return f"{profile}-{_check(track, TRACKS, 'track')}-{task_name}-c{config}-{_check(arm, ARMS, 'arm')}-seed{seed}"


def teacher_unit_name(profile: str, task_name: str) -> str:
    """``<profile>-s2s-<task>-teacher``: the seq2seq teacher's dev and test predictions."""
    return f"{profile}-s2s-{task_name}-teacher"


def cost_unit_name(profile: str, task_name: str) -> str:
    """``<profile>-cls-<task>-cost``: the cost of each pruned form (first seed's teacher)."""
    return f"{profile}-cls-{task_name}-cost"


def unit_names(profile: str, track: str, task_name: str, seeds: Sequence[int], n_configs: int) -> list[str]:
    """Every unit of one track, in the order the page asks for them (for :func:`mpstudy.campaign.declare`)."""
    names = [teacher_unit_name(profile, task_name)] if track == S2S else []
    for s in seeds:
        names.append(tune_unit_name(profile, track, task_name, s))
        names += [run_unit_name(profile, track, task_name, c, arm, s) for c in range(n_configs) for arm in ARMS]
    if track == CLS:
        names.append(cost_unit_name(profile, task_name))
    return names


# --------------------------------------------------------------------------- the models


def selection_split(task, share: float, seed: int = 0):
    """A copy of ``task`` whose dev split is ``max(2, round(share * n))`` of its ``n`` training rows, drawn with
    ``seed``, and whose training split is the rest: module-level tuning trains on it and keeps each variant's
    best state by the held-out rows, so the dev set the page reports never chooses anything."""
    return holdout_split(task, share, seed, "module_select_share")


def pruned_variants(settings: CompSettings, teacher: Teacher) -> Lazy:
    """``Lazy`` of ``{"configs", "scheme", "variants"}``: the configurations on the teacher and every distinct
    pruned module once (l1-unstructured masks for Linears, lowest-l1 heads removed, T5's relative attention
    bias kept with its heads)."""

    def make() -> dict[str, Any]:
        model, _ = teacher.model()
        configs = generate_configs(model, list(settings.attention_keep), list(settings.linear_keep))
        scheme = pruning_scheme(configs)
        return {"configs": configs, "scheme": scheme, "variants": prune_variants(model, scheme)}

    return Lazy(make)


def tuned_variants(settings: CompSettings, teacher: Teacher, pruned: Lazy, task, seed: int) -> Lazy:
    """``Lazy`` of ``{"tuned", "result"}``: :func:`~mpstudy.studies.composability.recipe.tune_modules` of the pruned
    modules against the frozen teacher with ``seed`` (each variant's own best state on the held-out rows)."""

    def make() -> dict[str, Any]:
        model, tokenizer = teacher.model()
        split = selection_split(task, settings.module_select_share)
        tuned, result = tune_modules(model, tokenizer, split, pruned()["variants"], settings.module_config(seed),
                                     patience=settings.module_patience)
        return {"tuned": tuned, "result": result}

    return Lazy(make)


def _cast(task, preds: list) -> list:
    if task.kind == "seq2seq":
        return [str(p) for p in preds]
    return [float(p) for p in preds] if task.kind == "regression" else [int(p) for p in preds]


def _predict(model, tokenizer, task, settings: CompSettings, split: str = "dev") -> list:
    precision = resolve_precision(settings.precision, next(model.parameters()).device)
    preds, _ = predict(model, tokenizer, task, split=split, batch_size=64, max_length=settings.max_length,
                       max_new_tokens=settings.max_new_tokens, precision=precision)
    return _cast(task, preds)


# --------------------------------------------------------------------------- units


def tune_unit(settings: CompSettings, teacher: Teacher, task, seed: int, profile: str, *, pruned: Lazy,
              tuned: Lazy, results_dir: str | None = None) -> dict[str, Any]:
    """The record of module-level tuning of one teacher's pruned modules with ``seed``.

    ``result``: ``variants`` (how many), ``scheme``, ``val_before``/``val_after``/``best_step`` per variant
    (MSE to the teacher's module output on the held-out training rows), ``steps``, ``stopped_early``,
    ``seconds`` (the whole tuning's wall time, validations included: the cost each configuration shares)
    and ``history``.
    """
    spec = {"profile": profile, "task": task.name, "data": task_fingerprint(task), "teacher": teacher.identity,
            "seed": seed, **settings.tune_spec(seed)}

    def compute() -> dict[str, Any]:
        result = tuned()["result"]
        scheme = pruned()["scheme"]
        return {"variants": scheme_size(scheme), "scheme": scheme, "val_before": result.val_before,
                "val_after": result.val_after, "best_step": result.best_step, "steps": result.steps,
                "stopped_early": result.stopped_early, "seconds": result.seconds, "history": result.history}

    validations = math.ceil(settings.module_steps / settings.module_eval_every) + 1
    estimate = settings.module_steps * TUNE_SECONDS_PER_STEP[settings.track] + validations * EVAL_SECONDS[settings.track]
    return unit(STUDY, tune_unit_name(profile, settings.track, task.name, seed), spec, compute,
                results_dir=results_dir, estimate_s=estimate)


def run_unit(settings: CompSettings, teacher: Teacher, task, config: int, arm: str, seed: int, profile: str, *,
             pruned: Lazy, tuned: Lazy, test_task=None, results_dir: str | None = None) -> dict[str, Any]:
    """The record of model-level fine-tuning of configuration ``config`` composed from tuned modules
    (``arm`` ``composability``: ``tuned``, whose tuning has the same seed) or from untuned pruned ones
    (``baseline``: ``pruned``), with ``seed`` (data order, dropout).

    ``result``: ``start_predictions`` and ``predictions`` (dev, row order: as composed, and after the last
    step), ``start_metrics``/``metrics`` (dev), ``history`` (one row per evaluation, step 0 the composed
    model: ``step``, ``train_s`` (training seconds, evaluations excluded), ``elapsed_s``, ``dev_<metric>``),
    ``steps``, ``train_seconds``, ``stored``/``nonzero`` parameters, the resolved ``precision`` and, with
    ``test_task``, ``test_predictions`` and ``test_metrics`` after the last step.
    """
    _check(arm, ARMS, "arm")
    if not 0 <= config < settings.n_configs:
        raise ValueError(f"config must be in [0, {settings.n_configs - 1}], got {config!r}")
    spec = {"profile": profile, "task": task.name, "data": task_fingerprint(task), "teacher": teacher.identity,
            "seed": seed, "config": config, **settings.config_keeps(config), "arm": arm, **settings.run_spec(seed)}
    if test_task is not None:
        spec["test"] = task_fingerprint(test_task)
    if arm == COMPOSABILITY:
        spec["tuning"] = settings.tune_spec(seed)

    def compute() -> dict[str, Any]:
        model, tokenizer = teacher.model()
        modules = tuned()["tuned"] if arm == COMPOSABILITY else pruned()["variants"]
        composed = compose(model, pruned()["configs"][config], modules)
        composed.to(resolve_device("auto"))
        metric = task.main_metric
        refs = [ex["target"] if task.is_seq2seq else ex["label"] for ex in task.dev]
        start = _predict(composed, tokenizer, task, settings)
        start_metrics = task.compute_metrics(start, refs)
        last: dict[str, list] = {}

        def evaluation(m, step: int) -> dict[str, float]:
            last["preds"] = _predict(m, tokenizer, task, settings)
            return task.compute_metrics(last["preds"], refs)

        result = train(composed, tokenizer, task, settings.model_config(seed), eval_fn=evaluation)
        history = [{"step": 0, "train_s": 0.0, "elapsed_s": 0.0, f"dev_{metric}": start_metrics[metric]}]
        history += [{"step": h["step"], "train_s": h["train_s"], "elapsed_s": h["elapsed_s"],
                     f"dev_{metric}": h[f"dev_{metric}"]} for h in result.history if f"dev_{metric}" in h]
        counts = count_parameters(composed)
        out = {"main_metric": metric, "start_predictions": start, "predictions": last["preds"],
               "start_metrics": start_metrics, "metrics": task.compute_metrics(last["preds"], refs),
               "history": history, "steps": result.steps, "train_seconds": result.train_seconds,
               "stored": counts["stored"], "nonzero": counts["nonzero"],
               "precision": resolve_precision(settings.precision, next(composed.parameters()).device)}
        if test_task is not None:
            test = _predict(composed, tokenizer, test_task, settings)
            out["test_predictions"] = test
            out["test_metrics"] = test_task.compute_metrics(test, [ex["target"] for ex in test_task.dev])
        return out

    evals = math.ceil(settings.steps / settings.eval_every) + 2 + (5 if test_task is not None else 0)
    estimate = settings.steps * SECONDS_PER_STEP[settings.track] + evals * EVAL_SECONDS[settings.track]
    if arm == COMPOSABILITY and not tuned.made:
        estimate += settings.module_steps * TUNE_SECONDS_PER_STEP[settings.track]
    return unit(STUDY, run_unit_name(profile, settings.track, task.name, config, arm, seed), spec, compute,
                results_dir=results_dir, estimate_s=estimate)


def teacher_unit(settings: CompSettings, teacher: Teacher, task, profile: str, *, test_task=None,
                 results_dir: str | None = None) -> dict[str, Any]:
    """The record of the seq2seq teacher's own scores: ``predictions``/``references``/``metrics`` on the dev
    split (the rows evaluated along the way) and, with ``test_task``, ``test_predictions``/
    ``test_references``/``test_metrics``; ``stored`` parameters."""
    spec = {"profile": profile, "task": task.name, "data": task_fingerprint(task), "teacher": teacher.identity,
            "max_length": settings.max_length, "max_new_tokens": settings.max_new_tokens,
            "precision": settings.precision, "test": None if test_task is None else task_fingerprint(test_task)}

    def compute() -> dict[str, Any]:
        model, tokenizer = teacher.model()
        model.to(resolve_device("auto"))
        refs = [ex["target"] for ex in task.dev]
        preds = _predict(model, tokenizer, task, settings)
        out = {"main_metric": task.main_metric, "predictions": preds, "references": refs,
               "metrics": task.compute_metrics(preds, refs), "stored": count_parameters(model)["stored"]}
        if test_task is not None:
            test_refs = [ex["target"] for ex in test_task.dev]
            test = _predict(model, tokenizer, test_task, settings)
            out.update(test_predictions=test, test_references=test_refs,
                       test_metrics=test_task.compute_metrics(test, test_refs))
        return out

    return unit(STUDY, teacher_unit_name(profile, task.name), spec, compute, results_dir=results_dir,
                estimate_s=8 * EVAL_SECONDS[S2S])


def cost_unit(settings: CompSettings, teacher: Teacher, pruned: Lazy, task, profile: str, repeats: int, *,
              results_dir: str | None = None) -> dict[str, Any]:
    """The record of what each pruned form costs (:func:`~mpstudy.studies.composability.recipe.sparsity_latency` on a
    batch of ``batch_size`` x ``max_length`` tokens, ``repeats`` interleaved rounds): ``rows``, one per form."""
    from ...measure import dummy_batch

    spec = {"profile": profile, "task": task.name, "teacher": teacher.identity, "repeats": repeats,
            "batch": [settings.batch_size, settings.max_length], "attention_keep": list(settings.attention_keep),
            "linear_keep": list(settings.linear_keep)}

    def compute() -> dict[str, Any]:
        model, tokenizer = teacher.model()
        batch = dummy_batch(tokenizer, batch_size=settings.batch_size, seq_len=settings.max_length)
        table = sparsity_latency(model.cpu(), pruned()["configs"], pruned()["variants"], batch, repeats=repeats)
        table["nonzero_share"] = table.nonzero_params / table.loc[0, "nonzero_params"]
        table["flop_share"] = table.gflops / table.loc[0, "gflops"]
        return {"rows": [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
                         for row in table.to_dict(orient="records")]}

    return unit(STUDY, cost_unit_name(profile, task.name), spec, compute, results_dir=results_dir,
                estimate_s=60.0)


# --------------------------------------------------------------------------- tables


def _one(preds: Mapping[int, list]) -> Any:
    """A seed mapping as :mod:`mpstudy.stats` takes it: the mapping with 2+ seeds, the list with one."""
    return dict(preds) if len(preds) > 1 else next(iter(preds.values()))


def score_table(track: str, task_name: str, runs: Mapping[tuple[int, str, int], Mapping[str, Any]],
                references: Sequence, reference_predictions: Mapping[int, list] | list, *, key: str = "predictions",
                trivial: float | None = None, resamples: int = 2000) -> pd.DataFrame:
    """One row per configuration and arm: the score as composed (``start``, dev) and after fine-tuning (``key``:
    ``predictions`` on dev, ``test_predictions`` on the test split) over the seeds with 95 % intervals, the
    paired differences composability - baseline (seed by seed, same examples) before and after fine-tuning,
    and ``collapse`` (the interval of the final score reaches the trivial predictor's score).

    ``runs``: ``(config, arm, seed) -> run_unit record``; ``reference_predictions``: the teacher's (seed ->
    predictions for cls, one list for s2s), scored as the first row (``config`` "teacher").
    """
    rows = []
    ref = score_interval(task_name, _one(reference_predictions) if isinstance(reference_predictions, Mapping)
                         else reference_predictions, references, resamples=resamples)
    rows.append({"track": track, "config": "teacher", "arm": "dense", "score": ref.estimate, "score_low": ref.low,
                 "score_high": ref.high, "seeds": ref.seeds})
    configs = sorted({c for c, _, _ in runs})
    for c in configs:
        by_arm = {arm: {s: r["result"] for (cc, a, s), r in sorted(runs.items()) if cc == c and a == arm} for arm in ARMS}
        for arm in ARMS:
            res = by_arm[arm]
            final = score_interval(task_name, _one({s: r[key] for s, r in res.items()}), references, resamples=resamples)
            row = {"track": track, "config": c, "arm": arm, "score": final.estimate, "score_low": final.low,
                   "score_high": final.high, "seeds": final.seeds,
                   "stored": next(iter(res.values()))["stored"], "nonzero": next(iter(res.values()))["nonzero"]}
            if key == "predictions":
                start = score_interval(task_name, _one({s: r["start_predictions"] for s, r in res.items()}), references,
                                       resamples=resamples)
                row.update(start=start.estimate, start_low=start.low, start_high=start.high)
            row["collapse"] = bool(trivial is not None and final.low <= trivial)
            rows.append(row)
        seeds = sorted(set(by_arm[COMPOSABILITY]) & set(by_arm[BASELINE]))
        for what, field in (("final", key), ("start", "start_predictions")):
            if field == "start_predictions" and key != "predictions":
                continue
            diff = paired_difference(task_name, _one({s: by_arm[COMPOSABILITY][s][field] for s in seeds}),
                                     _one({s: by_arm[BASELINE][s][field] for s in seeds}), references,
                                     resamples=resamples)
            target = next(r for r in rows if r["config"] == c and r["arm"] == COMPOSABILITY)
            target.update({f"{what}_gain": diff.estimate, f"{what}_gain_low": diff.low, f"{what}_gain_high": diff.high})
    return pd.DataFrame(rows)


def time_table(track: str, metric: str, runs: Mapping[tuple[int, str, int], Mapping[str, Any]],
               tunes: Mapping[int, Mapping[str, Any]], targets: Mapping[int, float], n_configs: int) -> pd.DataFrame:
    """One row per configuration, arm and seed: the target (``targets[seed]``), steps and training seconds until
    the dev score first reached it (None: not within the budget), the arm's share of the module-level tuning
    (composability: that seed's tuning seconds / ``n_configs``), ``total_s`` (time to the target plus the
    share) and ``censored_s`` (the same, or the whole budget's time plus the share when not reached: a lower
    bound of the true time)."""
    rows = []
    for (c, arm, s), r in sorted(runs.items()):
        res = r["result"]
        share = tunes[s]["result"]["seconds"] / n_configs if arm == COMPOSABILITY else 0.0
        hit = time_to_target(res["history"], metric, targets[s])
        budget_s = res["history"][-1]["train_s"]
        rows.append({"track": track, "config": c, "arm": arm, "seed": s, "target": targets[s],
                     "start_score": res["history"][0][f"dev_{metric}"],
                     "final_score": res["history"][-1][f"dev_{metric}"], "reached": hit is not None,
                     "steps_to_target": None if hit is None else hit["step"],
                     "seconds_to_target": None if hit is None else hit["seconds"], "tune_share_s": share,
                     "total_s": None if hit is None else hit["seconds"] + share,
                     "censored_s": (budget_s if hit is None else hit["seconds"]) + share,
                     "steps": res["steps"], "train_s": budget_s})
    return pd.DataFrame(rows)


def record_rows(times: pd.DataFrame, runs: Mapping[tuple[int, str, int], Mapping[str, Any]],
                settings: CompSettings) -> list[dict[str, Any]]:
    """The record's run rows (:class:`~mpstudy.studies.composability.record.ConfigurationRow`): the
    :func:`time_table` row of each (config, arm, seed) with its unit's predictions and counts."""
    out = []
    for row in times.to_dict(orient="records"):
        res = runs[(row["config"], row["arm"], row["seed"])]["result"]
        out.append({"config": int(row["config"]), "arm": row["arm"], "seed": int(row["seed"]),
                    "start_score": row["start_score"], "final_score": row["final_score"], "target": row["target"],
                    "reached": bool(row["reached"]), "steps_to_target": row["steps_to_target"],
                    "seconds_to_target": row["seconds_to_target"], "tune_share_s": row["tune_share_s"],
                    "total_seconds_to_target": row["total_s"], "censored_s": row["censored_s"],
                    "steps": int(row["steps"]), "train_s": row["train_s"],
                    **settings.config_keeps(int(row["config"])), "stored_params": res["stored"],
                    "nonzero_params": res["nonzero"], "start_predictions": res["start_predictions"],
                    "predictions": res["predictions"], "test_predictions": res.get("test_predictions")})
    return out
