"""Composability in transformer pruning: tune each pruned module variant once, compose
configurations from the tuned variants, fine-tune the composed model, and measure how much
sooner it reaches a target quality than the same configuration composed from untuned variants.

The workflow (each step is also a ``mpstudy prune ...`` command):

1. :func:`mpstudy.prune.generate_configs` and :func:`mpstudy.prune.pruning_scheme`: the
   configurations and the distinct (module, keep ratio) variants they need.
2. :func:`mpstudy.prune.prune_variants`: every variant pruned once from the fine-tuned model.
3. :func:`tune_modules` (module-level fine-tuning): each variant is trained to reproduce the
   original module's output on the same input (mean squared error), with the original model
   frozen and its activations captured by forward hooks (:class:`mpstudy.distill.ModuleMatchObjective`,
   trained by the shared loop :func:`mpstudy.train`); early stopping restores each variant's
   own best state.
4. :func:`mpstudy.prune.compose` and :func:`finetune_configuration` (model-level fine-tuning
   with the shared loop :func:`mpstudy.train`), once from tuned variants (composability) and once
   from untuned ones (the baseline).
5. :func:`time_to_target`: wall-clock training time and steps until the dev score first
   reaches a target.

:func:`run_composability` runs steps 1-5 for a list of configurations; :func:`sparsity_latency`
measures what each pruning form saves in parameters, non-zeros, FLOPs and time.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ... import prune as P
from ... import prune_io
from ...accounting import count_parameters
from ...distill import ModuleMatchObjective, ModuleMatchValidation
from ...measure import count_flops, forward_latency
from ...models import load_model
from ...prune import (
    clone_module,
    compose,
    finalize_pruning,
    prunable_modules,
    prune_variants,
    pruning_scheme,
    scheme_size,
)
from ...records import atomic_file, write_json_atomic
from ...tasks import load_task, load_test_split, make_collate
from ...train import (
    TrainConfig,
    TrainResult,
    evaluate,
    iterate_batches,
    resolve_device,
    task_evaluation,
    train,
)

__all__ = [
    "ModuleTuneResult",
    "ConfigurationRun",
    "CompositionStudy",
    "tune_modules",
    "finetune_configuration",
    "time_to_target",
    "run_composability",
    "sparsity_latency",
    "plot_loss_curves",
    "plot_time_to_quality",
    "run_prune_step",
    "variant_key",
]


def variant_key(name: str, keep: float) -> str:
    """``"<module name>@<keep>"``, the key of one variant in histories and tables."""
    return f"{name}@{keep:g}"


@dataclass
class ModuleTuneResult:
    """What module-level fine-tuning did.

    Attributes:
        history: one record per validation: ``step``, ``epoch``, ``train_loss`` (mean summed
            MSE over the steps since the last validation; ``None`` at step 0), ``val_loss``
            (summed over variants), ``elapsed_s`` and ``val/<variant key>`` for each variant.
        val_before / val_after: validation MSE per variant before tuning and in its restored best state.
        best_step: the step of each variant's restored state (0 = untuned was best).
        steps: optimizer steps run; ``stopped_early``: patience ran out before the budget.
        seconds: wall-clock time of the whole tuning (validation included).
    """

    history: list[dict[str, Any]]
    val_before: dict[str, float]
    val_after: dict[str, float]
    best_step: dict[str, int]
    steps: int
    stopped_early: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_frame(self):
        """One row per variant: module, keep ratio, validation MSE before/after, best step."""
        import pandas as pd

        rows = []
        for key, before in self.val_before.items():
            name, _, keep = key.rpartition("@")
            rows.append({"module": name, "keep_ratio": float(keep), "val_mse_before": before,
                         "val_mse_after": self.val_after[key], "best_step": self.best_step[key]})
        return pd.DataFrame(rows)


def _tune_history(records: Sequence[Mapping[str, Any]], keys: Mapping[str, str], steps_per_epoch: int) -> list[dict[str, Any]]:
    """``TrainResult.history`` of a module-matching run (a ``loss`` per step; ``dev_loss`` and
    ``dev_<slot>`` per validation) -> one :class:`ModuleTuneResult` record per validation."""
    out: list[dict[str, Any]] = []
    losses: list[float] = []
    for record in records:
        if "loss" in record:
            losses.append(record["loss"])
        if "dev_loss" in record:
            out.append({"step": record["step"], "epoch": record["step"] / steps_per_epoch,
                        "train_loss": statistics.fmean(losses) if losses else None, "val_loss": record["dev_loss"],
                        "elapsed_s": record["elapsed_s"], **{f"val/{key}": record[f"dev_{slot}"] for slot, key in keys.items()}})
            losses = []
    return out


def tune_modules(
    model: nn.Module,
    tokenizer,
    task,
    variants: Mapping[str, Mapping[float, nn.Module]],
    config: TrainConfig | None = None,
    patience: int | None = 5,
) -> tuple[dict[str, dict[float, nn.Module]], ModuleTuneResult]:
    """Module-level fine-tuning: train every variant to reproduce its original module's output.

    The original ``model`` runs frozen, in eval mode, on ``task.train`` batches; a forward hook
    on each pruned module feeds its exact inputs (hidden states, masks, T5's position bias) to
    every variant of that module and takes the mean squared error between the variant's output
    and the original module's output (``[B, T, hidden]``; for attention blocks the first element
    of their tuple outputs): :class:`mpstudy.distill.ModuleMatchObjective`. The rest of the network
    sees the original activations, so all variants train at once, independently, in one forward of
    the original model per batch. The loss is the sum over variants; only variant parameters are
    optimized, by the shared loop :func:`mpstudy.train` (its model is an ``nn.ModuleDict`` of the
    variants). A masked Linear stays masked: only its surviving weights change.

    Validation (on ``task.dev``) runs before training, every ``config.eval_every`` steps
    (default: once per epoch) and at the end. Each variant ends in the state with its lowest
    validation MSE, the untuned one included (:class:`mpstudy.distill.ModuleMatchValidation`
    snapshots each variant on its own); training stops when the summed validation loss
    has not improved for ``patience`` validations (``None``: never).

    Args:
        model: the original (fine-tuned, unpruned) model; it is not changed.
        tokenizer, task: the data the activations come from.
        variants: ``{module name: {keep ratio: pruned module}}`` from :func:`mpstudy.prune.prune_variants`;
            they are copied, not changed.
        config: ``lr``, ``epochs``/``max_steps``, ``batch_size``, ``eval_batch_size``,
            ``warmup_ratio``, ``weight_decay``, ``max_grad_norm``, ``eval_every``,
            ``max_length``, ``seed``, ``device``, ``progress`` are used; the selection (summed
            validation MSE, lower is better), ``patience`` and the validation at step 0 are set here.
        patience: validations without improvement before stopping.

    Returns:
        ``(tuned variants, ModuleTuneResult)``; the tuned variants are on CPU in eval mode.
    """

    config = config or TrainConfig(lr=1e-3)
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience must be a positive int or None, got {patience!r}")
    if not variants:
        raise ValueError("no variants to tune: the pruning scheme is empty")
    start = time.perf_counter()
    tuned = {name: {keep: clone_module(m) for keep, m in by_keep.items()} for name, by_keep in variants.items()}
    # ModuleDict keys cannot hold dots (module names and keep ratios do): slot v<i> is the i-th variant
    slots = {f"v{i}": (name, keep) for i, (name, keep) in
             enumerate((name, keep) for name, by_keep in tuned.items() for keep in by_keep)}
    students = nn.ModuleDict({slot: tuned[name][keep] for slot, (name, keep) in slots.items()})
    for p in students.parameters():
        p.requires_grad_(True)
    objective = ModuleMatchObjective(model, {slot: name for slot, (name, _) in slots.items()})
    collate = make_collate(task, tokenizer, max_length=config.max_length)
    validation = ModuleMatchValidation(objective, [b for _, b in iterate_batches(task.dev, collate, config.eval_batch_size)])
    run_config = replace(config, patience=patience, select_metric="loss", higher_is_better=False,
                         eval_at_start=True, keep_best=False)  # the best states are per variant: `validation` keeps them
    model_device = next(model.parameters()).device
    model.to(resolve_device(config.device))
    try:
        result = train(students, tokenizer, task, run_config, objective=objective, eval_fn=validation)
    finally:
        model.to(model_device)
    validation.restore(students)
    students.cpu().eval()
    keys = {slot: variant_key(name, keep) for slot, (name, keep) in slots.items()}
    steps_per_epoch = math.ceil(len(task.train) / config.batch_size)
    return tuned, ModuleTuneResult(
        history=_tune_history(result.history, keys, steps_per_epoch),
        val_before={keys[slot]: v for slot, v in validation.first.items()},
        val_after={keys[slot]: v for slot, (v, _) in validation.best.items()},
        best_step={keys[slot]: step for slot, (_, step) in validation.best.items()},
        steps=result.steps, stopped_early=result.stopped_early, seconds=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------- model level


def finetune_configuration(
    model: nn.Module, tokenizer, task, config: Mapping[str, float], variants: Mapping[str, Mapping[float, nn.Module]],
    train_config: TrainConfig, with_dev_loss: bool = True,
) -> tuple[nn.Module, dict[str, float], TrainResult]:
    """Model-level fine-tuning of one configuration: compose it from ``variants``, evaluate it as
    composed (the starting point), then fine-tune all its parameters with :func:`mpstudy.train`.

    Pruned heads stay removed and masked weights stay zero (the masks are kept). With
    ``with_dev_loss`` each evaluation also records the model's own dev loss (``loss`` in the
    metrics, ``dev_loss`` in the history; :func:`mpstudy.train.task_evaluation`).

    Returns:
        ``(fine-tuned model, dev metrics before fine-tuning, TrainResult)``.
    """
    composed = compose(model, config, variants)
    composed.to(resolve_device(train_config.device))
    evaluation = task_evaluation(tokenizer, task, train_config, loss=with_dev_loss)
    start_metrics = evaluation(composed, 0)
    result = train(composed, tokenizer, task, train_config, eval_fn=evaluation)
    return composed, start_metrics, result


def time_to_target(history: Sequence[Mapping[str, Any]], metric: str, target: float, start_score: float | None = None,
                   clock: str = "train_s") -> dict[str, float] | None:
    """The first evaluation at which ``dev_<metric>`` reached ``target``.

    Args:
        history: ``TrainResult.history``.
        metric: a task metric name (``"accuracy"``, ``"bleu"``).
        target: the score to reach.
        start_score: the score before training; if it already reaches the target the answer is step 0.
        clock: ``"train_s"`` (training time, evaluations excluded) or ``"elapsed_s"`` (wall clock).

    Returns:
        ``{"step", "seconds", "score"}`` or ``None`` if the target was never reached.
    """
    if start_score is not None and start_score >= target:
        return {"step": 0, "seconds": 0.0, "score": start_score}
    key = f"dev_{metric}"
    for record in history:
        if key in record and record[key] >= target:
            return {"step": record["step"], "seconds": record[clock], "score": record[key]}
    return None


# --------------------------------------------------------------------------- the study


@dataclass
class ConfigurationRun:
    """One configuration fine-tuned from one starting point (``arm``: ``composability`` or ``baseline``)."""

    config_index: int
    arm: str
    attention_keep: float | None
    linear_keep: float | None
    params: dict[str, int]
    start_metrics: dict[str, float]
    result: TrainResult
    test_metrics: dict[str, float] | None = None


@dataclass
class CompositionStudy:
    """Everything :func:`run_composability` measured."""

    task: str
    metric: str
    configs: list[dict[str, float]]
    scheme: dict[str, list[float]]
    prune_seconds: float
    tune: ModuleTuneResult
    runs: list[ConfigurationRun] = field(default_factory=list)

    @property
    def num_variants(self) -> int:
        return scheme_size(self.scheme)

    def runs_frame(self, target: float | None = None, clock: str = "train_s"):
        """One row per (configuration, arm): keep ratios, parameters, scores before and after
        fine-tuning, and (given ``target``) steps and seconds to reach it. For composability,
        ``tune_share_s`` is its share of the one-off module-level tuning (total / configurations)."""
        import pandas as pd

        share = self.tune.seconds / max(1, len(self.configs))
        rows = []
        for run in self.runs:
            row = {"config": run.config_index, "arm": run.arm, "attention_keep": run.attention_keep,
                   "linear_keep": run.linear_keep, "stored_params": run.params["stored"],
                   "nonzero_params": run.params["nonzero"], "start_score": run.start_metrics[self.metric],
                   "best_score": run.result.best_metrics[self.metric], "best_step": run.result.best_step,
                   "steps": run.result.steps, "train_s": run.result.history[-1]["train_s"],
                   "tune_share_s": share if run.arm == "composability" else 0.0}
            if run.test_metrics is not None:
                row["test_score"] = run.test_metrics[self.metric]
            if target is not None:
                hit = time_to_target(run.result.history, self.metric, target, run.start_metrics[self.metric], clock)
                row.update(target=target, steps_to_target=hit["step"] if hit else None,
                           seconds_to_target=hit["seconds"] if hit else None,
                           total_seconds_to_target=(hit["seconds"] + row["tune_share_s"]) if hit else None)
            rows.append(row)
        return pd.DataFrame(rows)

    def curves_frame(self):
        """Long table of the model-level runs: config, arm, step, train_s, training loss and dev scores
        (step 0 is the composed model before fine-tuning)."""
        import pandas as pd

        rows = []
        for run in self.runs:
            rows.append({"config": run.config_index, "arm": run.arm, "step": 0, "train_s": 0.0, "elapsed_s": 0.0,
                         **{f"dev_{k}": v for k, v in run.start_metrics.items()}})
            for h in run.result.history:
                rows.append({"config": run.config_index, "arm": run.arm, **h})
        return pd.DataFrame(rows)


def _keep_of(config: Mapping[str, float], kinds: Mapping[str, str], kind: str) -> float | None:
    values = sorted({keep for name, keep in config.items() if kinds.get(name) == kind})
    return values[0] if len(values) == 1 else None


def run_composability(
    model: nn.Module,
    tokenizer,
    task,
    configs: Sequence[Mapping[str, float]],
    module_config: TrainConfig,
    model_config: TrainConfig,
    patience: int | None = 5,
    test_task=None,
    log=None,
) -> tuple[CompositionStudy, dict[str, dict[float, nn.Module]], dict[str, dict[float, nn.Module]]]:
    """The whole workflow for a list of configurations.

    Prunes every variant of the configurations' scheme once, tunes them all once
    (:func:`tune_modules` with ``module_config``), then for each configuration fine-tunes the
    model composed from tuned variants (``composability``) and from untuned ones (``baseline``)
    with the same ``model_config``. With ``test_task`` (a task whose ``dev`` is the test split)
    the fine-tuned models are also scored there.

    Returns:
        ``(CompositionStudy, untuned variants, tuned variants)``.
    """

    log = log or (lambda message: None)
    kinds = {m.name: m.kind for m in prunable_modules(model)}
    scheme = pruning_scheme(configs)
    t0 = time.perf_counter()
    variants = prune_variants(model, scheme)
    prune_seconds = time.perf_counter() - t0
    log(f"pruned {scheme_size(scheme)} variants of {len(scheme)} modules in {prune_seconds:.1f} s")
    tuned, tune_result = tune_modules(model, tokenizer, task, variants, module_config, patience=patience)
    log(f"module-level tuning: {tune_result.steps} steps in {tune_result.seconds:.1f} s")
    study = CompositionStudy(task=task.name, metric=task.main_metric, configs=[dict(c) for c in configs],
                             scheme=scheme, prune_seconds=prune_seconds, tune=tune_result)
    eval_kwargs = dict(batch_size=model_config.eval_batch_size, max_length=model_config.max_length,
                       max_new_tokens=model_config.max_new_tokens)
    for index, config in enumerate(configs):
        for arm, arm_variants in (("composability", tuned), ("baseline", variants)):
            composed, start, result = finetune_configuration(model, tokenizer, task, config, arm_variants, model_config)
            test = evaluate(composed, tokenizer, test_task, **eval_kwargs) if test_task is not None else None
            study.runs.append(ConfigurationRun(index, arm, _keep_of(config, kinds, "attention"), _keep_of(config, kinds, "linear"),
                                               count_parameters(composed), start, result, test))
            log(f"config {index} {arm}: {task.main_metric} {start[task.main_metric]:.4f} -> "
                f"{result.best_metrics[task.main_metric]:.4f} in {result.steps} steps")
            del composed
    return study, variants, tuned


# --------------------------------------------------------------------------- cost


def sparsity_latency(
    model: nn.Module,
    configs: Sequence[Mapping[str, float]],
    variants: Mapping[str, Mapping[float, nn.Module]],
    batch: Mapping[str, torch.Tensor],
    repeats: int = 10,
    warmup: int = 2,
    threads: int | None = None,
):
    """What each pruning form saves: stored and non-zero parameters, FLOPs and measured latency.

    Forms (each built from ``model`` and the (untuned) ``variants``; weights do not matter for cost):

    * ``dense``: the model itself;
    * ``unstructured (masks)``: only the Linear part of each distinct linear keep ratio, as
      trained (``weight_orig * weight_mask`` recomputed before every forward);
    * ``unstructured (zeros)``: the same with the masks made permanent (a dense matrix holding zeros);
    * ``heads removed``: only the attention part of each distinct attention keep ratio;
    * ``config k``: each full configuration, masks made permanent.

    Returns:
        A DataFrame with ``form``, ``attention_keep``, ``linear_keep``, ``stored_params``,
        ``nonzero_params``, ``gflops`` (dense kernels: zeros are multiplied too),
        ``latency_ms`` (median), ``speedup`` (median over rounds of the dense model's time divided
        by this form's time in the same round) and ``threads``. Every form's forward is timed
        round-robin with the others (``mpstudy.measure.forward_latency``, ``threads`` torch threads;
        ``None``: the current count).
    """
    import pandas as pd


    kinds = {m.name: m.kind for m in prunable_modules(model)}
    forms: dict[str, tuple[nn.Module, float | None, float | None]] = {"dense": (model, None, None)}
    seen_linear, seen_attention = set(), set()
    for config in configs:
        lin = _keep_of(config, kinds, "linear")
        att = _keep_of(config, kinds, "attention")
        if lin is not None and lin < 1 and lin not in seen_linear:
            seen_linear.add(lin)
            part = {n: k for n, k in config.items() if kinds[n] == "linear"}
            masked = compose(model, part, variants)
            forms[f"unstructured {lin:g} (masks)"] = (masked, None, lin)
            forms[f"unstructured {lin:g} (zeros)"] = (finalize_pruning(clone_module(masked)), None, lin)
        if att is not None and att < 1 and att not in seen_attention:
            seen_attention.add(att)
            part = {n: k for n, k in config.items() if kinds[n] == "attention"}
            forms[f"heads removed {att:g}"] = (compose(model, part, variants), att, None)
    for index, config in enumerate(configs):
        forms[f"config {index}"] = (finalize_pruning(compose(model, config, variants)),
                                    _keep_of(config, kinds, "attention"), _keep_of(config, kinds, "linear"))
    timing = forward_latency({name: m for name, (m, _, _) in forms.items()}, batch, repeats=repeats, warmup=warmup,
                             threads=threads)
    rows = []
    for name, (m, att, lin) in forms.items():
        params = count_parameters(m)
        rows.append({"form": name, "attention_keep": att, "linear_keep": lin, "stored_params": params["stored"],
                     "nonzero_params": params["nonzero"], "gflops": count_flops(m, dict(batch)) / 1e9,
                     "latency_ms": timing.median(name) * 1e3, "speedup": timing.ratio("dense", name),
                     "threads": timing.threads})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- data helpers


# --------------------------------------------------------------------------- plots


def plot_loss_curves(history: Sequence[Mapping[str, Any]], train_key: str = "loss", val_key: str = "dev_loss",
                     title: str | None = None, ax=None, smooth: int | None = 8):
    """Training loss and validation loss (at each evaluation) against the optimizer step.

    Works on ``TrainResult.history`` (``loss`` every step, drawn faintly with its running mean
    over ``smooth`` steps; ``dev_loss``) and on ``ModuleTuneResult.history`` (``train_loss``,
    the mean since the previous validation, and ``val_loss``; pass ``smooth=None``).
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    ax = ax or plt.subplots(figsize=(6.4, 4))[1]
    frame = pd.DataFrame(list(history))
    if train_key in frame:
        tr = frame.dropna(subset=[train_key])
        if smooth:
            ax.plot(tr["step"], tr[train_key], lw=0.8, alpha=0.4, color="C0")
            ax.plot(tr["step"], tr[train_key].rolling(smooth, min_periods=1).mean(), color="C0", label="training loss")
        else:
            ax.plot(tr["step"], tr[train_key], "s-", color="C0", label="training loss")
    if val_key in frame:
        va = frame.dropna(subset=[val_key])
        ax.plot(va["step"], va[val_key], "o-", color="C1", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    if title:
        ax.set_title(title)
    ax.legend(frameon=False)
    return ax


def plot_time_to_quality(curves, metric: str, target: float | None = None, clock: str = "train_s", title: str | None = None):
    """Dev score against training time, one panel per configuration, composability vs baseline.

    ``curves`` is :meth:`CompositionStudy.curves_frame`; the target is a dashed line.
    """
    import matplotlib.pyplot as plt

    key = f"dev_{metric}"
    data = curves.dropna(subset=[key])
    configs = sorted(data["config"].unique())
    fig, axes = plt.subplots(1, len(configs), figsize=(4.2 * len(configs), 3.6), sharey=True, squeeze=False)
    for ax, config in zip(axes[0], configs):
        for arm, color in (("composability", "C2"), ("baseline", "C7")):
            part = data[(data["config"] == config) & (data["arm"] == arm)]
            ax.plot(part[clock], part[key], "o-", color=color, label=arm, ms=3)
        if target is not None:
            ax.axhline(target, ls="--", c="0.4", lw=1, label="target")
        ax.set_title(f"configuration {config}")
        ax.set_xlabel("training time (s)" if clock == "train_s" else "wall-clock time (s)")
    axes[0][0].set_ylabel(f"dev {metric}")
    axes[0][0].legend(frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- command line


def _write_json(path: str | os.PathLike, data: Any) -> None:

    write_json_atomic(path, data)


def _read_json(path: str | os.PathLike) -> Any:
    import json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    return json.loads(path.read_text())


def _check_out_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"--out {path} is a directory; give a file name")
    return path


def run_prune_step(args) -> Any:
    """Run one step of the ``mpstudy prune`` command (``args.step``) and print its summary as JSON.

    Steps, named as in the original repository's scripts:
    ``configs`` (config_generator.py), ``scheme`` (prune_scheme_generator.py), ``prune``
    (prune.py), ``tune-modules`` (block-level_finetuning.py), ``compose`` (compose_model.py),
    ``finetune`` (model-level_finetuning.py; the baseline is the same step on a model composed
    from untuned variants), ``evaluate`` (evaluate_t5.py / evaluate_distilbert.py,
    parameter_counter.py) and ``plot`` (plot_loss.py).
    """
    import json


    step = args.step
    summary: dict[str, Any]

    def task_for(args, **extra):
        return load_task(args.task, data_dir=args.data_dir, max_train=getattr(args, "max_train", 1),
                         max_eval=getattr(args, "max_eval", None), seed=args.seed, **extra)

    def train_config(args, **extra) -> TrainConfig:
        return TrainConfig(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length,
                           eval_every=args.eval_every, seed=args.seed, progress=not args.quiet, **extra)

    if step == "configs":
        out = _check_out_file(args.out)
        model, _ = load_model(args.model, task=args.task)
        configs = P.generate_configs(model, args.attention_keep, args.linear_keep, args.num_configs)
        _write_json(out, configs)
        summary = {"configs": len(configs), "modules": len(configs[0]), "out": str(out)}
    elif step == "scheme":
        out = _check_out_file(args.out)
        scheme = P.pruning_scheme(_read_json(args.configs))
        _write_json(out, scheme)
        summary = {"modules": len(scheme), "variants": P.scheme_size(scheme), "out": str(out)}
    elif step == "prune":
        out = _check_out_file(args.out)
        scheme = _read_json(args.scheme)
        model, _ = load_model(args.model, task=args.task, seed=args.seed)
        variants = P.prune_variants(model, scheme)
        prune_io.save_variants(variants, out, model)
        summary = {"variants": P.scheme_size(scheme), "out": str(out)}
    elif step == "tune-modules":
        out = _check_out_file(args.out)
        task = task_for(args)
        model, tokenizer = load_model(args.model, task=task, seed=args.seed)
        variants = prune_io.load_variants(model, args.variants)
        tuned, result = tune_modules(model, tokenizer, task, variants, train_config(args), patience=args.patience)
        prune_io.save_variants(tuned, out, model)
        if args.stats:
            _write_json(args.stats, result.to_dict())
        summary = {"steps": result.steps, "stopped_early": result.stopped_early, "seconds": round(result.seconds, 1),
                   "val_loss_before": sum(result.val_before.values()), "val_loss_after": sum(result.val_after.values()),
                   "out": str(out)}
    elif step == "compose":
        configs = _read_json(args.configs)
        if not 0 <= args.index < len(configs):
            raise ValueError(f"--index {args.index} is out of range: {args.configs} holds {len(configs)} configurations (0-based)")
        model, tokenizer = load_model(args.model, task=args.task, seed=args.seed)
        composed = P.compose(model, configs[args.index], prune_io.load_variants(model, args.variants))
        prune_io.save_pruned(composed, args.out, base=args.model, task=args.task, tokenizer=tokenizer,
                      extra={"config_index": args.index, "configs": str(args.configs), "variants": str(args.variants)})
        summary = {"out": str(args.out), **count_parameters(composed)}
    elif step == "finetune":
        model, tokenizer, meta = prune_io.load_pruned(args.model)
        if args.task != meta.get("task"):
            raise ValueError(f"--task {args.task!r} differs from the task {meta.get('task')!r} {args.model} was composed for")
        task = task_for(args)
        config = train_config(args)
        start = evaluate(model, tokenizer, task, max_length=config.max_length)
        result = train(model, tokenizer, task, config, eval_fn=task_evaluation(tokenizer, task, config, loss=True))
        prune_io.save_pruned(model, args.out, base=meta["base"], task=meta["task"], tokenizer=tokenizer,
                      extra={k: v for k, v in meta.items() if k not in ("format", "base", "task", "pruned_heads", "masked_linears")})
        if args.stats:
            _write_json(args.stats, {"start_metrics": start, **result.to_dict()})
        summary = {"start_metrics": start, "best_metrics": result.best_metrics, "best_step": result.best_step,
                   "steps": result.steps, "train_seconds": round(result.train_seconds, 1), "out": str(args.out)}
    elif step == "evaluate":
        model, tokenizer, meta = prune_io.load_pruned(args.model)
        task = task_for(args)
        split = task
        if args.test:
            split = load_test_split(task, data_dir=args.data_dir)
            if split is None:
                raise ValueError(f"task {task.name!r} has no labelled test split here (GLUE test labels are not public)")
        metrics = evaluate(model, tokenizer, split, max_length=args.max_length)
        summary = {"model": str(args.model), "task": task.name, "split": "test" if args.test else "dev", "n": len(split.dev),
                   **metrics, "params": count_parameters(model)}
    elif step == "plot":
        import matplotlib

        matplotlib.use("Agg")
        stats = _read_json(args.stats)
        history = stats.get("history", [])
        keys = ("train_loss", "val_loss") if history and "val_loss" in history[0] else ("loss", "dev_loss")
        ax = plot_loss_curves(history, *keys, title=Path(args.stats).name)
        out = Path(args.out)
        with atomic_file(out) as tmp:  # a killed run leaves the old figure or the new one, never half a file
            ax.figure.savefig(tmp, dpi=120, bbox_inches="tight", format=out.suffix.lstrip(".").lower() or "png")
        summary = {"out": str(args.out), "points": len(history)}
    else:  # pragma: no cover - argparse restricts the choices
        raise ValueError(f"unknown step {step!r}")
    print(json.dumps(summary, indent=2, default=str))
    return summary
