"""Study 02's campaign units: one per trained student (mode x budget x loss x start x fit x seed), one for
the decompositions and their cost, and the tables computed from their records.

The teacher of seed ``s`` is the shared dense baseline of seed ``s`` (:mod:`mpstudy.studies.dense`: the
profile's model fine-tuned on the whole training split); its dev predictions are in its record, so every
student is compared with it on the same examples and seeds without the model. The student starts, as in
LoBERT's code, from the *pre-trained* model (seed ``s``'s fresh head) compressed by its mode (or, in the
``teacher`` start ablation, from the teacher), and trains every parameter with
``(1 - alpha) CE + alpha KD + beta PKD`` on ``train_rows`` rows drawn with ``s`` from the training split.
The teacher's logits and ``[CLS]`` states on those rows are computed inside a unit's compute only, from
the dense model (:func:`mpstudy.distill.teacher_outputs` caches them on disk, once per seed and rows), so a
study whose units are all recorded never loads a model.

* :func:`student_unit` -- one student for one seed, recording its dev predictions (dense units' row order);
* :func:`decompose_unit` -- every mode's factorization of the pre-trained weights (errors, sizes) and the
  forward latency of each student against the dense model, once per profile;
* :func:`student_table`, :func:`pkd_table`, :func:`trivial_interval` -- the page's tables with intervals,
  and the collapse test (a student whose score lies within the majority-class predictor's interval).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ...accounting import count_parameters
from ...campaign import unit
from ...distill import teacher_outputs
from ...metrics import compute_metrics
from ...layers.stacked import set_decode_cache
from ...models import load_model
from ...stats import Interval, band, paired_difference, score_interval, trivial_score
from ...tasks import task_fingerprint
from ...train import TrainConfig, predict, resolve_precision, train
from ..verdicts import MINIMAL_LOSS
from .recipe import LOBERT_MODES, beta_from_lobert, lobert_compress, lobert_objective, student_cost
from .record import (CE, DEFAULT_BUDGET, DENSE, FROM_TEACHER, KD, KD_PKD, LOBERT_STUDY, LOSSES, MAIN, PARTS, PRETRAINED,
                     SGD_FIT, SVD_FIT)

__all__ = ["STUDY", "SECONDS_PER_STEP", "TEACHER_SECONDS_PER_ROW", "LobertSettings", "Student", "budget_label",
           "student_unit_name", "decompose_unit_name", "draw_rows", "student_unit", "decompose_unit",
           "trivial_interval", "collapsed", "student_table", "pkd_table"]

STUDY = LOBERT_STUDY
#: wall seconds per optimizer step (batch 32 x 64 tokens, bf16, one thread, KD + PKD) of all-MiniLM-L6-v2
#: measured on the study's 2-core machine under other jobs' load (SVD, Tucker and FALCON students alike,
#: ~0.6 s; the dense student 0.55 s): the time box's estimate, an upper bound elsewhere
SECONDS_PER_STEP = 0.65
#: wall seconds per training row of the teacher's forward with hidden states (once per seed and rows)
TEACHER_SECONDS_PER_ROW = 0.01


def budget_label(budget: Mapping[str, Any]) -> str:
    """``"default"`` (LoBERT's budget) or ``"k=3"``, ``"keep=0.5, stack_ranks=[3]"``: the budget's keywords."""
    return DEFAULT_BUDGET if not budget else ", ".join(f"{k}={v}" for k, v in budget.items())


def _slug(text: str) -> str:
    """A unit-name part: ``_`` and ``,`` become ``-`` and ``+``, brackets and spaces go."""
    for old, new in (("_", "-"), (", ", "+"), (",", "."), ("[", ""), ("]", ""), (" ", "")):
        text = text.replace(old, new)
    return text


@dataclass(frozen=True)
class Student:
    """One student of the study: the ``part`` it belongs to, its ``mode`` (a LoBERT mode, or ``dense``: the
    uncompressed pre-trained model under the same recipe), ``budget`` (keywords of
    :func:`~mpstudy.studies.lobert.recipe.lobert_compress`; empty: LoBERT's), ``loss`` (ce, kd, kd+pkd), ``init``
    (pretrained or teacher) and ``fit`` (svd: closed form; sgd: LoBERT's SGD fit of FALCON)."""

    part: str
    mode: str
    budget: tuple = ()
    loss: str = KD_PKD
    init: str = PRETRAINED
    fit: str = SVD_FIT

    def __post_init__(self) -> None:
        items = self.budget.items() if isinstance(self.budget, Mapping) else self.budget
        # hashable: a list (stack_ranks=[3]) is held as a tuple and given back as a list by budget_dict
        object.__setattr__(self, "budget", tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in items))
        for name, value, allowed in (("part", self.part, PARTS), ("mode", self.mode, (DENSE, *LOBERT_MODES)),
                                     ("loss", self.loss, LOSSES), ("init", self.init, (PRETRAINED, FROM_TEACHER)),
                                     ("fit", self.fit, (SVD_FIT, SGD_FIT))):
            if value not in allowed:
                raise ValueError(f"a student's {name} must be one of {list(allowed)}, got {value!r}")
        if self.mode == DENSE and (self.budget or self.init != PRETRAINED or self.fit != SVD_FIT):
            raise ValueError("the dense student has no budget, fit or other start: give only part and loss")

    @property
    def budget_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.budget}

    @property
    def label(self) -> str:
        return budget_label(self.budget_dict)

    def spec(self) -> dict[str, Any]:
        return {"mode": self.mode, "budget": self.budget_dict, "loss": self.loss, "init": self.init, "fit": self.fit}


@dataclass(frozen=True)
class LobertSettings:
    """How every student of one study run trains (the notebook's parameters, gathered).

    ``model_name``/``batch_size``/``max_length``/``precision`` come from the dense block (the teacher's);
    ``train_rows``: rows drawn from the training split per seed (None: all); ``max_steps`` overrides
    ``epochs``; ``lr``/``warmup_ratio``: AdamW's peak and linear warm-up share; ``temperature``/``alpha``:
    KD; ``pkd_beta``: the patience weight in LoBERT's units (:func:`~mpstudy.studies.lobert.recipe.beta_from_lobert`);
    ``n_iter``: HOOI sweeps of the Tucker modes; ``sgd_steps``: LoBERT's SGD fit of FALCON."""

    model_name: str
    batch_size: int
    max_length: int
    precision: str
    train_rows: int | None
    epochs: float
    max_steps: int | None
    warmup_ratio: float
    lr: float
    temperature: float
    alpha: float
    pkd_beta: float
    normalize: bool = True
    n_iter: int = 100
    sgd_steps: int = 10_000

    def config(self, seed: int) -> TrainConfig:
        """The students' ``TrainConfig``: evaluated once, at the last step, never selected on dev."""
        return TrainConfig(lr=self.lr, epochs=self.epochs, max_steps=self.max_steps, batch_size=self.batch_size,
                           max_length=self.max_length, warmup_ratio=self.warmup_ratio, seed=seed,
                           precision=self.precision, bucket_batches=8, keep_best=False, progress=False,
                           eval_every=self.max_steps, device="auto")

    def steps(self, rows: int) -> int:
        """Optimizer steps on ``rows`` training rows."""
        if self.max_steps is not None:
            return self.max_steps
        return math.ceil(rows / self.batch_size) * math.ceil(self.epochs)

    def spec(self, student: Student, seed: int) -> dict[str, Any]:
        """What a student's training depends on (besides the task's rows and the teacher), as plain data."""
        train_fields = self.config(seed).key_fields()
        train_fields["precision"] = self.precision  # the profile's choice; the record says what it resolved to
        out = {"model": self.model_name, "seed": seed, "train_rows": self.train_rows, "train": train_fields,
               **student.spec()}
        if student.loss != CE:
            out["kd"] = {"temperature": self.temperature, "alpha": self.alpha}
        if student.loss == KD_PKD:
            out["pkd"] = {"beta": self.pkd_beta, "normalize": self.normalize}
        if student.mode != DENSE and LOBERT_MODES[student.mode]["family"] == "tucker":
            out["n_iter"] = self.n_iter
        if student.fit == SGD_FIT:
            out["sgd_steps"] = self.sgd_steps
        return out


def student_unit_name(profile: str, task_name: str, student: Student, seed: int) -> str:
    """``<profile>-<task>-<mode>-<budget>-<loss>[-teacher][-sgd]-seed<k>`` (``_`` written ``-``)."""
    parts = [profile, task_name, _slug(student.mode), _slug(student.label), student.loss]
    parts += ["teacher"] if student.init == FROM_TEACHER else []
    parts += ["sgd"] if student.fit == SGD_FIT else []
    return "-".join(parts) + f"-seed{seed}"


def decompose_unit_name(profile: str, task_name: str) -> str:
    """``<profile>-<task>-decompositions``."""
    return f"{profile}-{task_name}-decompositions"


def draw_rows(task, rows: int | None, seed: int):
    """``task`` with ``rows`` of its training rows drawn with ``seed`` (in their order); None or more: all."""
    if rows is None or rows >= len(task.train):
        return task
    keep = sorted(torch.randperm(len(task.train), generator=torch.Generator().manual_seed(seed))[:rows].tolist())
    return dataclasses.replace(task, train=[task.train[i] for i in keep])


def _compress_extra(settings: LobertSettings, student: Student) -> dict[str, Any]:
    if student.fit == SGD_FIT:
        return {"fit": "sgd", "sgd_steps": settings.sgd_steps, "seed": 0}
    if LOBERT_MODES[student.mode]["family"] == "tucker":
        return {"n_iter": settings.n_iter}
    return {}


def _decomposition_row(report, model, dense_stored: int) -> dict[str, Any]:
    """Kept fraction of the replaced weights (biases excluded), errors and the whole model's ratio."""
    bias = sum(m["params_before"] - m["shape"][0] * m["shape"][1] for m in report.modules)
    errors = [m["rel_error"] for m in report.modules]
    return {"kept": (report.params_after - bias) / (report.params_before - bias),
            "param_ratio": count_parameters(model, nonzero=False)["stored"] / dense_stored,
            "rel_error": sum(errors) / len(errors), "worst_error": max(errors),
            "lost": sum(e > 0.95 for e in errors), "matrices": len(errors)}


def student_unit(settings: LobertSettings, teacher, student: Student, seed: int, profile: str, *,
                 results_dir: str | None = None, cache_dir: str | None = None) -> dict[str, Any]:
    """The record of one student and seed (computed, or read from ``results/02_lobert/units/``).

    Args:
        settings: the students' training settings.
        teacher: the dense baseline of ``seed`` (:class:`~mpstudy.studies.dense.DenseBaseline`): its task
            (the same rows and dev order, so the predictions pair with its record's) and its model, the
            teacher (its kept dense model, ``teacher.model()``; loaded only if this unit has no record).
        cache_dir: where the fine-tuned baselines and the teachers' outputs are cached.
        student: the student's mode, budget, loss, start and fit.

    The record's ``result``: ``metrics`` (dev), ``main_metric``, ``predictions`` (dev, row order),
    ``kept``/``param_ratio``/``rel_error``/``worst_error``/``lost``/``matrices`` (the factorization
    before training; the dense student: 1, 1, 0...), ``stored``/``dense_stored``, ``steps``,
    ``train_seconds``, ``train_rows``, ``last_losses`` (mean ce/kd/pkd of the last 20 steps), ``decompose_seconds``
    and the resolved ``precision``.
    """
    task = teacher.task
    spec = {"profile": profile, "task": task.name, "data": task_fingerprint(task),
            "teacher": teacher.record["spec_key"], **settings.spec(student, seed)}

    def compute() -> dict[str, Any]:
        rows = draw_rows(task, settings.train_rows, seed)
        dense, tokenizer = teacher.model()  # the dense unit's kept model, checked by its weights hash
        dense.eval()
        t_out = teacher_outputs(dense, tokenizer, rows, max_length=settings.max_length, cache_dir=cache_dir,
                                progress=False)
        if student.init == FROM_TEACHER:
            model = copy.deepcopy(dense)
        else:
            model, _ = load_model(settings.model_name, task=task, seed=seed)  # pre-trained, seed s's fresh head
        dense_stored = count_parameters(model, nonzero=False)["stored"]
        start = time.perf_counter()
        if student.mode == DENSE:
            shape = {"kept": 1.0, "param_ratio": 1.0, "rel_error": 0.0, "worst_error": 0.0, "lost": 0, "matrices": 0}
        else:
            report = lobert_compress(model, student.mode, **student.budget_dict, **_compress_extra(settings, student))
            shape = _decomposition_row(report, model, dense_stored)
        decompose_seconds = time.perf_counter() - start
        beta = beta_from_lobert(settings.pkd_beta, model.config.hidden_size) if student.loss == KD_PKD else 0.0
        objective = lobert_objective(t_out, alpha=0.0 if student.loss == CE else settings.alpha,
                                     temperature=settings.temperature, beta=beta, normalize=settings.normalize)
        result = train(model, tokenizer, rows, settings.config(seed), objective=objective)
        precision = resolve_precision(settings.precision, next(model.parameters()).device)
        preds, _ = predict(model, tokenizer, task, max_length=settings.max_length, precision=precision)
        preds = [int(p) for p in preds]
        refs = teacher.record["result"]["references"]
        tail = [h for h in result.history if "loss" in h][-20:]  # the last 20 steps: where training ended
        last = {k: sum(h[k] for h in tail) / len(tail) for k in ("loss", "ce", "kd", "pkd") if tail and k in tail[0]}
        return {"metrics": task.compute_metrics(preds, refs), "main_metric": task.main_metric, "predictions": preds,
                **shape, "stored": count_parameters(model, nonzero=False)["stored"], "dense_stored": dense_stored,
                "steps": result.steps, "train_seconds": result.train_seconds, "train_rows": len(rows.train),
                "last_losses": last, "decompose_seconds": round(decompose_seconds, 3), "precision": precision}

    rows = settings.train_rows if settings.train_rows is not None else len(task.train)
    estimate = settings.steps(min(rows, len(task.train))) * SECONDS_PER_STEP + rows * TEACHER_SECONDS_PER_ROW + 30
    return unit(STUDY, student_unit_name(profile, task.name, student, seed), spec, compute, results_dir=results_dir,
                estimate_s=estimate)


def decompose_unit(settings: LobertSettings, task, students: Sequence[Student], profile: str, *,
                   latency: Mapping[str, int], results_dir: str | None = None) -> dict[str, Any]:
    """The record of every distinct (mode, budget, fit) of ``students`` applied to the pre-trained model
    (seed 0's copy), with each one's cost against the dense model.

    ``latency``: ``batch_size``, ``seq_len``, ``repeats`` of :func:`~mpstudy.studies.lobert.recipe.student_cost`
    (repeats 0: not timed). The record's ``result``: ``decompositions`` (one row per variant: ``mode``,
    ``budget``, ``fit``, ``kept``, ``param_ratio``, errors, ``seconds``, the SGD fit's first and last
    mean squared error), ``per_role`` (mean relative error per replaced role) and ``cost`` (closed-form
    variants: ``latency_cached`` and ``latency_rebuilt``, student / dense forward time).
    """
    from ..offline import compression_info

    variants = list(dict.fromkeys((s.mode, s.budget, s.fit) for s in students if s.mode != DENSE))
    spec = {"profile": profile, "task": task.name, "model": settings.model_name, "n_iter": settings.n_iter,
            "sgd_steps": settings.sgd_steps, "latency": dict(latency),
            "variants": [{"mode": m, "budget": Student(MAIN, m, b, fit=f).budget_dict, "fit": f}
                         for m, b, f in variants]}

    def compute() -> dict[str, Any]:
        base, tokenizer = load_model(settings.model_name, task=task, seed=0)
        base.eval()
        dense_stored = count_parameters(base, nonzero=False)["stored"]
        rows, roles, cost = [], [], []
        for mode, budget, fit in variants:
            student = Student(MAIN, mode, budget, fit=fit)
            model = copy.deepcopy(base)
            start = time.perf_counter()
            report = lobert_compress(model, mode, **student.budget_dict, **_compress_extra(settings, student))
            row = {"mode": mode, "family": LOBERT_MODES[mode]["family"], "budget": student.label, "fit": fit,
                   **_decomposition_row(report, model, dense_stored), "seconds": round(time.perf_counter() - start, 3)}
            if fit == SGD_FIT:
                losses = [g["sgd_losses"] for g in compression_info(model)]
                row["sgd_mse_first"] = sum(l[0][1] for l in losses) / len(losses)
                row["sgd_mse_last"] = sum(l[-1][1] for l in losses) / len(losses)
            rows.append(row)
            by_role: dict[str, list[float]] = {}
            for m in report.modules:
                by_role.setdefault(m["role"], []).append(m["rel_error"])
            roles += [{"mode": mode, "budget": student.label, "fit": fit, "role": r, "rel_error": sum(v) / len(v)}
                      for r, v in by_role.items()]
            if fit == SVD_FIT and latency.get("repeats", 0) > 0:
                model.eval()
                timed = {"mode": mode, "family": row["family"], "budget": student.label, "kept": row["kept"],
                         "param_ratio": row["param_ratio"],
                         "latency_cached": student_cost(base, model, tokenizer, **latency)["latency_ratio"]}
                if row["family"] != "svd":
                    set_decode_cache(model, False)  # LoBERT's modules rebuilt the weight on every forward
                    timed["latency_rebuilt"] = student_cost(base, model, tokenizer, **latency)["latency_ratio"]
                else:
                    timed["latency_rebuilt"] = timed["latency_cached"]
                cost.append(timed)
            del model
        return {"decompositions": rows, "per_role": roles, "cost": cost, "dense_stored": dense_stored}

    estimate = 30 + 40 * len(variants) + (settings.sgd_steps * 0.003 if any(f == SGD_FIT for *_, f in variants) else 0)
    return unit(STUDY, decompose_unit_name(profile, task.name), spec, compute, results_dir=results_dir,
                estimate_s=estimate)


# --------------------------------------------------------------------------- tables


def trivial_interval(task_name: str, references: Sequence, resamples: int = 2000, seed: int = 0) -> Interval:
    """The 95 % interval of the best constant predictor's score (the majority class for accuracy) over dev
    sets like this one: the percentile bootstrap of its score over resampled dev examples (for accuracy,
    the spread of the majority share; :func:`mpstudy.stats.score_interval` resamples within the classes and
    gives a constant predictor no width). A student whose score lies inside it has collapsed (:func:`collapsed`)."""
    refs = np.asarray(references)
    best = trivial_score(task_name, refs)
    metric = None
    for c in range(max(2, int(refs.max()) + 1)):
        scores = compute_metrics(task_name, np.full(len(refs), c), refs)
        metric = next((k for k, v in scores.items() if math.isclose(v, best)), None)
        if metric is not None:
            break
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        sample = refs[rng.integers(0, len(refs), len(refs))]
        draws.append(compute_metrics(task_name, np.full(len(refs), c), sample)[metric])
    low, high = np.quantile(draws, [0.025, 0.975])
    return Interval(float(best), float(min(low, best)), float(max(high, best)), seeds=None, n=len(refs),
                    se=float(np.std(draws)),
                    method=f"constant prediction {c}: percentile bootstrap, {resamples} resamples")


def collapsed(score: float, trivial: Interval, predictions: Mapping[int, Sequence] | None = None) -> bool:
    """Whether a student collapsed: its ``score`` lies within the trivial predictor's interval, or every
    seed's ``predictions`` is one constant class (the minority class included)."""
    constant = bool(predictions) and all(len(set(p)) == 1 for p in predictions.values())
    return constant or trivial.low <= score <= trivial.high


def _one(preds: Mapping[int, list]) -> Any:
    """A seed mapping as :mod:`mpstudy.stats` takes it: the mapping with 2+ seeds, the list with one."""
    return preds if len(preds) > 1 else next(iter(preds.values()))


def student_table(teachers: Mapping[int, Any], records: Mapping[tuple[Student, int], Mapping[str, Any]],
                  resamples: int = 2000) -> pd.DataFrame:
    """One row per student (the teacher first): its dev score over its seeds with the 95 % interval, the
    paired difference to the teacher (the dense baseline of each seed, same examples) with its interval
    and the verdict on "within 2 points of the teacher, or above" (:func:`mpstudy.stats.band`), whether it
    collapsed (score within the majority-class interval), the kept fraction of the replaced weights and
    the whole model's stored parameters relative to the dense model.

    ``teachers``: seed -> :class:`~mpstudy.studies.dense.DenseBaseline`; ``records``: (student, seed) ->
    :func:`student_unit` record.
    """
    first = next(iter(teachers.values()))
    task_name, refs = first.task.name, first.record["result"]["references"]
    trivial = trivial_interval(task_name, refs, resamples)
    cells = list(dict.fromkeys(s for s, _ in records))
    seeds_all = sorted(teachers)
    teacher_preds = {s: teachers[s].record["result"]["predictions"] for s in seeds_all}
    score = score_interval(task_name, _one(teacher_preds), refs, resamples=resamples)
    rows = [{"part": "teacher", "mode": "teacher", "budget": "", "loss": "ce", "init": "", "fit": "",
             "seeds": len(seeds_all),
             "score": score.estimate, "score_low": score.low, "score_high": score.high, "kept": 1.0, "param_ratio": 1.0,
             "collapsed": collapsed(score.estimate, trivial, teacher_preds)}]
    for cell in cells:
        by_seed = {s: r["result"] for (c, s), r in sorted(records.items(), key=lambda kv: kv[0][1]) if c == cell}
        missing = sorted(set(by_seed) - set(teachers))
        if missing:
            raise ValueError(f"{cell.mode} ({cell.label}, {cell.loss}): seeds {missing} have no teacher record")
        preds = _one({s: r["predictions"] for s, r in by_seed.items()})
        score = score_interval(task_name, preds, refs, resamples=resamples)
        diff = paired_difference(task_name, preds, _one({s: teacher_preds[s] for s in by_seed}), refs,
                                 resamples=resamples)
        one = next(iter(by_seed.values()))
        rows.append({"part": cell.part, "mode": cell.mode, "budget": cell.label, "loss": cell.loss, "init": cell.init,
                     "fit": cell.fit, "seeds": len(by_seed), "score": score.estimate, "score_low": score.low,
                     "score_high": score.high, "vs_teacher": diff.estimate, "vs_teacher_low": diff.low,
                     "vs_teacher_high": diff.high, "keeps": band(diff, -MINIMAL_LOSS).verdict,
                     "collapsed": collapsed(score.estimate, trivial, {s: r["predictions"] for s, r in by_seed.items()}),
                     "kept": one["kept"],
                     "param_ratio": one["param_ratio"], "rel_error": one["rel_error"]})
    return pd.DataFrame(rows)


def pkd_table(records: Mapping[tuple[Student, int], Mapping[str, Any]], references: Sequence, task_name: str,
              resamples: int = 2000) -> pd.DataFrame:
    """Per mode that has both: KD + PKD minus KD alone (same mode, budget and start, paired by seed and
    example) with its interval, over the seeds both have; and the KD-only score with its interval."""
    rows = []
    kd_cells = [c for c in dict.fromkeys(c for c, _ in records) if c.loss == KD]
    for cell in kd_cells:
        partner = next((c for c in dict.fromkeys(c for c, _ in records)
                        if c.loss == KD_PKD and (c.mode, c.budget, c.init, c.fit) == (cell.mode, cell.budget, cell.init,
                                                                                      cell.fit)), None)
        if partner is None:
            continue
        kd = {s: r["result"]["predictions"] for (c, s), r in records.items() if c == cell}
        pkd = {s: r["result"]["predictions"] for (c, s), r in records.items() if c == partner}
        seeds = sorted(set(kd) & set(pkd))
        if not seeds:
            continue
        diff = paired_difference(task_name, _one({s: pkd[s] for s in seeds}), _one({s: kd[s] for s in seeds}),
                                 references, resamples=resamples)
        alone = score_interval(task_name, _one({s: kd[s] for s in seeds}), references, resamples=resamples)
        rows.append({"mode": cell.mode, "budget": cell.label, "seeds": len(seeds), "kd": alone.estimate,
                     "kd_low": alone.low, "kd_high": alone.high, "pkd_minus_kd": diff.estimate,
                     "pkd_minus_kd_low": diff.low, "pkd_minus_kd_high": diff.high})
    return pd.DataFrame(rows, columns=["mode", "budget", "seeds", "kd", "kd_low", "kd_high", "pkd_minus_kd",
                                       "pkd_minus_kd_low", "pkd_minus_kd_high"])
