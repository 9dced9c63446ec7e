"""The dense baselines every study starts from, as campaign units with their intervals.

Each (profile, task, seed) is one unit of the campaign (:mod:`mpstudy.campaign`): the profile's model
fine-tuned on the whole training split with the settings of :data:`mpstudy.profiles.DENSE`, scored on
the whole dev split. Its record keeps the dev predictions, so every later comparison against the dense
model is paired on the same examples without the model itself, and the guard of
:func:`mpstudy.stats.baseline_learned` (a dense model that does not beat the trivial predictor ends a
study's retained-quality conclusions) is decided from the record.

The model is the cached fine-tuned baseline (:func:`mpstudy.baselines.finetuned_baseline`): a study
that needs it (to compress it) gets it lazily, so a study whose units are all recorded never trains it.
The model is kept as the record's artefact (:mod:`mpstudy.studies.artefacts`): identified by the
unit's spec like the record, and checked against the record's weights hash on every load.

Run the units from the shell (time-boxed, resumable)::

    python -m mpstudy.studies.dense --profile cpu --tasks sst2 mrpc stsb --seeds 0 1 2 --hours 2
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..baselines import finetuned_baseline
from ..cache import weights_hash
from ..campaign import Lazy, TimeUp, coverage, declare, read_unit, unit
from ..models import load_model
from ..profiles import DENSE, dense_settings
from ..stats import Interval, baseline_learned, score_interval, trivial_score
from ..tasks import load_task, task_fingerprint
from ..train import TrainConfig, predict, resolve_precision
from .artefacts import unit_model

__all__ = ["STUDY", "TARGETS", "DenseBaseline", "dense_unit_name", "dense_spec", "dense_baseline", "dense_interval",
           "plan_dense", "main"]

#: the campaign's study name for the dense units (``results/dense/units/``)
STUDY = "dense"

#: what a dense MiniLM should reach on the full dev sets for a study to be credible (published
#: all-MiniLM-L6-v2 level, minus a margin): SST-2 accuracy, MRPC F1, STS-B Spearman
TARGETS: dict[str, tuple[str, float]] = {"sst2": ("accuracy", 0.89), "mrpc": ("f1", 0.86), "stsb": ("spearman", 0.84)}


def dense_unit_name(profile: str, task_name: str, model_name: str, seed: int) -> str:
    """``<profile>-<task>-<model>-seed<k>`` (the model's last path component)."""
    return f"{profile}-{task_name}-{Path(str(model_name)).name}-seed{seed}"


def _load(block: dict[str, Any] | str, task_name: str, seed: int, data_dir: str | None):
    settings = dense_settings(block, task_name)
    # the rows are drawn with seed 0 whatever the training seed: every seed sees the same data and dev set
    task = load_task(task_name, data_dir=data_dir, max_train=settings["max_train"], max_eval=settings["max_eval"], seed=0)
    config = TrainConfig(**settings["train"], seed=seed, precision=settings["precision"], bucket_batches=8,
                         progress=False, device="auto")
    return settings, task, config


def dense_spec(block: dict[str, Any] | str, task_name: str, seed: int, data_dir: str | None = None,
               profile: str | None = None) -> dict[str, Any]:
    """What the unit computes: model, task rows (data checksums: the rows drawn), training settings and
    seed, under the ``profile`` label. ``block``: a profile name (also the default label) or a dense block
    (:data:`mpstudy.profiles.DENSE`)."""
    settings, task, config = _load(block, task_name, seed, data_dir)
    cfg = config.key_fields()
    cfg["precision"] = settings["precision"]  # the profile's choice; the record says what it resolved to
    label = profile if profile is not None else block
    return {"profile": label, "model": settings["model_name"], "task": task_name, "seed": seed,
            "data": task_fingerprint(task), "train": cfg}


@dataclass
class DenseBaseline:
    """One dense unit: its ``record`` (campaign record; ``record["result"]`` holds ``metrics``, ``interval``,
    ``predictions``, ``references``, ``trivial``, ``learned``...) and ``model``: call it for
    ``(model, tokenizer)``, fine-tuned or read from the cache on first call only."""

    record: dict[str, Any]
    model: Lazy
    task: Any

    @property
    def score(self) -> float:
        """The dev score of the task's main metric."""
        return float(self.record["result"]["metrics"][self.task.main_metric])

    @property
    def interval(self) -> Interval:
        """The dev score's 95 % interval, from the bootstrap over dev examples (one seed)."""
        return Interval.from_dict(self.record["result"]["interval"])


def dense_baseline(task_name: str, seed: int = 0, profile: str = "cpu", data_dir: str | None = None,
                   results_dir: str | None = None, cache_dir: str | None = None, resamples: int = 2000,
                   block: dict[str, Any] | None = None) -> DenseBaseline:
    """The dense baseline unit of ``task_name`` and ``seed`` under ``profile``: recorded, or trained now.

    ``block``: the dense settings (a study's ``dense`` parameter); None: the profile's
    :data:`~mpstudy.profiles.DENSE` block. ``profile`` names the unit (``<profile>-<task>-<model>-seed<k>``).

    The record's result: ``metrics`` (the task's dev metrics), ``interval`` (main metric, bootstrap over
    the dev examples), ``trivial`` (:func:`mpstudy.stats.trivial_score`), ``learned`` and ``guard`` (the
    dense model clears the trivial predictor by more than its interval), ``target`` and ``reached``
    (:data:`TARGETS`), ``predictions`` and ``references`` (dev, row order), ``weights`` (hash of the
    fine-tuned weights), ``steps``, ``best_step``, ``train_seconds`` and the resolved ``precision``.
    """
    block = profile if block is None else block
    settings, task, config = _load(block, task_name, seed, data_dir)
    spec = dense_spec(block, task_name, seed, data_dir, profile)
    name = dense_unit_name(profile, task_name, settings["model_name"], seed)

    def fine_tune():
        dense, tokenizer, info = finetuned_baseline(settings["model_name"], task, config, cache_dir=cache_dir)
        return dense, tokenizer, {k: info["result"][k] for k in ("steps", "best_step", "train_seconds", "history")}

    def make_model():
        """The record's kept model, else the fine-tuned one, checked against the record's weights if recorded."""
        recorded = read_unit(STUDY, name, spec, results_dir)
        return unit_model(name, spec, fine_tune, lambda path: load_model(path, task=task, seed=seed),
                          weights=recorded["result"]["weights"] if recorded is not None else None, cache_dir=cache_dir)

    trained = Lazy(make_model)
    model = Lazy(lambda: trained()[:2])

    def compute() -> dict[str, Any]:
        dense, tokenizer = model()
        info = trained()[2]
        device = next(dense.parameters()).device
        precision = resolve_precision(config.precision, device)
        preds, refs = predict(dense, tokenizer, task, batch_size=config.eval_batch_size, max_length=config.max_length,
                              precision=precision)
        cast = float if task.kind == "regression" else int
        preds, refs = [cast(p) for p in preds], [cast(r) for r in refs]
        metrics = task.compute_metrics(preds, refs)
        interval = score_interval(task.name, preds, refs, resamples=resamples, seed=seed)
        trivial = trivial_score(task.name, refs)
        guard = baseline_learned(interval, trivial)
        metric, target = TARGETS.get(task_name, (task.main_metric, math.nan))
        return {"metrics": metrics, "main_metric": task.main_metric, "interval": interval.as_dict(),
                "trivial": trivial, "learned": guard.learned, "guard": guard.reason,
                "target": target, "reached": bool(metrics.get(metric, math.nan) >= target),
                "predictions": preds, "references": refs, "weights": weights_hash(dense),
                "precision": precision, "train_rows": len(task.train), "dev_rows": len(task.dev),
                "steps": info["steps"], "best_step": info["best_step"],
                "train_seconds": info["train_seconds"], "history": _dev_history(info["history"])}

    record = unit(STUDY, name, spec, compute, results_dir=results_dir)
    return DenseBaseline(record, model, task)


def _dev_history(history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluations of a training history (step, elapsed seconds, dev metrics): the learning curve."""
    return [{k: v for k, v in row.items() if k in ("step", "elapsed_s") or k.startswith("dev_")}
            for row in history if any(k.startswith("dev_") for k in row)]


def dense_interval(task_name: str, seeds: Sequence[int], profile: str = "cpu", results_dir: str | None = None,
                   data_dir: str | None = None, resamples: int = 2000, block: dict[str, Any] | None = None) -> Interval:
    """The dense score over ``seeds`` (their recorded dev predictions, combined as in
    :func:`mpstudy.stats.score_interval`: the spread over seeds plus the shared dev-sampling error).
    Every seed must be recorded; a missing one raises naming it."""
    predictions, refs = {}, None
    block = profile if block is None else block
    for seed in seeds:
        settings = dense_settings(block, task_name)
        spec = dense_spec(block, task_name, seed, data_dir, profile)
        record = read_unit(STUDY, dense_unit_name(profile, task_name, settings["model_name"], seed), spec, results_dir)
        if record is None:
            raise ValueError(f"no dense record for {task_name} seed {seed} under the {profile} profile; "
                             f"run: python -m mpstudy.studies.dense --profile {profile} --tasks {task_name} --seeds {seed}")
        predictions[seed] = record["result"]["predictions"]
        refs = record["result"]["references"]
    return score_interval(task_name, predictions if len(predictions) > 1 else next(iter(predictions.values())), refs,
                          resamples=resamples)


def plan_dense(profile: str, tasks: Sequence[str], seeds: Sequence[int] | None = None) -> list[tuple[str, int, str]]:
    """``(task, seed, unit name)`` of every dense unit of ``tasks`` under ``profile`` (default: its seeds)."""
    out = []
    for task_name in tasks:
        settings = dense_settings(profile, task_name)
        for seed in (settings["seeds"] if seeds is None else seeds):
            out.append((task_name, int(seed), dense_unit_name(profile, task_name, settings["model_name"], int(seed))))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mpstudy.studies.dense``: run the missing dense units (see the module docstring)."""
    from ..runner import time_box

    parser = argparse.ArgumentParser(prog="python -m mpstudy.studies.dense", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", choices=sorted(DENSE))
    parser.add_argument("--tasks", nargs="+", default=None, help="default: every task the profile defines")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the profile's seeds")
    parser.add_argument("--data-dir", default=None, help="folder with glue/ (default: $MPSTUDY_DATA)")
    parser.add_argument("--results-dir", default=None, help="default: $MPSTUDY_RESULTS, else results")
    parser.add_argument("--hours", type=float, default=None, help="time box: start no unit after this many hours")
    args = parser.parse_args(argv)
    tasks = args.tasks or sorted(DENSE[args.profile]["tasks"])
    plan = plan_dense(args.profile, tasks, args.seeds)  # checks every task name before anything runs
    if args.seeds is None:
        declare(STUDY, [name for _, _, name in plan_dense(args.profile, sorted(DENSE[args.profile]["tasks"]))],
                args.results_dir, profile=args.profile)
    with time_box(args.hours):
        for task_name, seed, name in plan:
            try:
                base = dense_baseline(task_name, seed, args.profile, args.data_dir, args.results_dir)
            except TimeUp as err:
                print(err, file=sys.stderr)
                break
            r = base.record
            print(f"{name}: {base.task.main_metric} {base.interval} (trivial {r['result']['trivial']:.3f}, target "
                  f"{r['result']['target']}: {'reached' if r['result']['reached'] else 'NOT reached'}), "
                  f"{r['wall_seconds'] / 60:.1f} min", file=sys.stderr, flush=True)
    cov = coverage(STUDY, args.results_dir)
    print(f"dense units: {cov['done']} of {cov['planned']} recorded, {cov['cpu_hours']:.2f} CPU-hours", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
