"""Matrix decomposition with feature distillation (Noach & Goldberg, AACL 2020), as a pipeline.

1. **Decompose**: every selected ``nn.Linear`` (``W``, ``m x n``) becomes two thin ones of rank
   ``r < mn/(m+n)`` (:class:`~mpstudy.layers.lowrank.LowRankLinear`), from plain truncated SVD or from
   Fisher-weighted SVD (:mod:`mpstudy.methods.fwsvd`). The rank is one global ``r`` (the paper's
   style), or comes from ``keep``, the kept fraction of the selected matrices' weights: met by one
   global ``r`` (default), or per matrix (``per_matrix=True``, each matrix's own rank rule).
2. **Recover** by distillation from the original model, in stages: ``"fd"`` matches activations
   (:class:`~mpstudy.distill.FeatureDistillObjective`: hidden states, attention probabilities,
   per-head contexts), ``"kd"`` trains on ``(1 - alpha) * CE + alpha * KD`` with soft targets
   (:class:`~mpstudy.distill.DistillObjective`; cached teacher logits for classification, the live
   teacher for seq2seq, KD over the vocabulary at every target position).

Layers are chosen as in the seed's ``config.json``: ``decompose_layers`` and ``feature_layers`` are
lists of parameter (or module) names, or preset roles (``"all-linear"``, ``"attention"``, ``"ffn"``...)
and feature kinds (``"hidden"``, ``"attention"``, ``"context"``); :meth:`SvdDistillConfig.from_seed_config`
reads the seed's own keys.
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...accounting import count_parameters
from ...distill import (
    DistillObjective,
    FeatureDistillObjective,
    eager_attention,
    teacher_outputs,
)
from ...factorize.budget import check_keep
from ...factorize.fwsvd import row_weighted_error
from ...factorize.svd import max_saving_rank
from ...fisher import estimate_fisher
from ...measure import compare_latency, count_flops, time_interleaved
from ...surgery import CompressionReport, compress
from ...targets import resolve_targets
from ...tasks import make_collate
from ...train import TrainConfig, evaluate, iterate_batches, set_seed, train

__all__ = ["SvdDistillConfig", "STAGE_PLANS", "decompose_targets", "rank_for_budget", "decompose",
           "run_stage", "compress_and_distill", "recovery_grid", "module_errors", "rank_latency_curve",
           "train_step_seconds"]

#: the recovery plans a study compares — name -> stages run in order
STAGE_PLANS: dict[str, tuple[str, ...]] = {"none": (), "kd": ("kd",), "fd": ("fd",), "fd+kd": ("fd", "kd")}
METHODS = ("svd", "fwsvd")


@dataclass
class SvdDistillConfig:
    """What to decompose, how much, and how to recover.

    Attributes:
        decompose_layers: the matrices to factorize: preset roles or groups (``"all-linear"``,
            ``"query"``...), ``"re:<regex>"`` over module names, or exact module / parameter names
            (``"bert.encoder.layer.0.attention.self.query.weight"``). An empty list means the seed's
            default: every linear weight of the encoder stack.
        feature_layers: what feature distillation matches (see :class:`~mpstudy.distill.FeatureDistillObjective`):
            ``"hidden"``, ``"attention"``, ``"context"``, patterns such as ``"hidden.3"``, or module /
            parameter names. Empty means ``["hidden", "attention"]``.
        method: ``"svd"`` or ``"fwsvd"``.
        rank / keep: exactly one: a global rank, or the kept fraction of all selected matrices'
            weights, met by one global rank (:func:`rank_for_budget`).
        per_matrix: with ``keep``, give every matrix its own rank ``floor(keep * m n / (m + n))``
            instead of one global rank.
        plan: recovery stages, a key of ``STAGE_PLANS`` (``"none"``, ``"kd"``, ``"fd"``, ``"fd+kd"``).
        fd_weights: per-kind weights of the feature loss (``hidden``, ``attention``, ``context``, ``module``).
        attention_kind: ``"kl"`` or ``"mse"`` between attention probabilities.
        alpha, temperature: the KD stage's soft-target weight (``1 - alpha`` weighs CE) and temperature.
        fd_lr, fd_epochs, kd_lr, kd_epochs: the stages' learning rates and passes over the data.
        fisher_examples, fisher_batch_size: training rows and rows per backward pass of the Fisher
            estimate (FWSVD only).
    """

    decompose_layers: list[str] | str = "all-linear"
    feature_layers: list[str] = field(default_factory=lambda: ["hidden", "attention"])
    method: str = "svd"
    rank: int | None = None
    keep: float | None = None
    per_matrix: bool = False
    plan: str = "fd+kd"
    fd_weights: dict[str, float] = field(default_factory=dict)
    attention_kind: str = "kl"
    alpha: float = 0.5
    temperature: float = 2.0
    fd_lr: float = 1e-4
    fd_epochs: float = 1.0
    kd_lr: float = 5e-5
    kd_epochs: float = 1.0
    fisher_examples: int | None = 256
    fisher_batch_size: int = 8

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        if self.plan not in STAGE_PLANS:
            raise ValueError(f"plan must be one of {list(STAGE_PLANS)}, got {self.plan!r}")
        given = [k for k in ("rank", "keep") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of rank= or keep= (got {given or 'none'})")
        if self.keep is not None:
            check_keep(self.keep, "keep (of the selected weights)", full=False)
        elif self.per_matrix:
            raise ValueError("per_matrix=True chooses a rank per matrix from keep=; with rank= there is one rank")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha!r}")
        for k in ("temperature", "fd_lr", "fd_epochs", "kd_lr", "kd_epochs"):
            if not getattr(self, k) > 0:
                raise ValueError(f"{k} must be > 0, got {getattr(self, k)!r}")
        if not self.feature_layers:
            self.feature_layers = ["hidden", "attention"]

    @classmethod
    def from_seed_config(cls, seed_config: dict[str, Any] | str | os.PathLike, **overrides: Any) -> "SvdDistillConfig":
        """Read the Marian port's ``config.json`` (a dict or a path): ``decompose_layers``,
        ``feature_layers``, ``k_info`` (the global rank) and ``epoch`` (epochs of each stage).

        Its other keys (model and data paths, ``batch_size``, ``output_path``) describe the run, not
        the method: they are returned unchanged in the ``run`` attribute for the caller.
        """
        if not isinstance(seed_config, dict):
            seed_config = json.loads(Path(seed_config).read_text())
        known = {"decompose_layers", "feature_layers", "k_info", "epoch", "teacher_model_path", "student_model_path",
                 "dataset_path", "batch_size", "output_path"}
        unknown = sorted(set(seed_config) - known)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in the seed config; known: {sorted(known)}")
        kwargs: dict[str, Any] = {
            "decompose_layers": list(seed_config.get("decompose_layers") or []),
            "feature_layers": list(seed_config.get("feature_layers") or []),
        }
        if "k_info" in seed_config:
            kwargs["rank"] = int(seed_config["k_info"])
        if "epoch" in seed_config:
            kwargs["fd_epochs"] = kwargs["kd_epochs"] = float(seed_config["epoch"])
        kwargs.update(overrides)
        config = cls(**kwargs)
        config.run = {k: v for k, v in seed_config.items() if k not in ("decompose_layers", "feature_layers", "k_info", "epoch")}
        return config

    def budget_kwargs(self, model: nn.Module) -> dict[str, Any]:
        """``{"rank": r}`` or, per matrix, ``{"keep": keep}`` for :func:`mpstudy.compress` (``keep`` becomes its
        global rank unless ``per_matrix``)."""
        if self.rank is not None:
            return {"rank": self.rank}
        if self.per_matrix:
            return {"keep": self.keep}
        return {"rank": rank_for_budget(model, decompose_targets(model, self.decompose_layers), self.keep)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decompose_targets(model: nn.Module, decompose_layers: list[str] | str) -> list[str]:
    """``decompose_layers`` as ``targets=`` for :func:`mpstudy.compress`, checked against ``model``.

    Roles, groups and ``re:`` entries pass through; exact module or parameter names (``.weight``
    dropped) become anchored regexes. An empty list selects every ``nn.Linear`` of the encoder stack
    (for encoder-only models: all the preset's linear roles), as the seed's default did.

    Raises:
        ValueError: a name that is not an ``nn.Linear`` of ``model``.
    """
    if isinstance(decompose_layers, str):
        decompose_layers = [decompose_layers]
    if not decompose_layers:
        chosen = resolve_targets(model, "all-linear", module_types=(nn.Linear,))
        return [f"re:^{re.escape(t.name)}$" for t in chosen if t.stack in ("", "encoder")]
    named = dict(model.named_modules())
    out = []
    for entry in decompose_layers:
        name = entry[: -len(".weight")] if entry.endswith(".weight") else entry
        if name in named:
            if not isinstance(named[name], nn.Linear):
                raise ValueError(f"decompose layer {entry!r} is a {type(named[name]).__name__}; only nn.Linear weights "
                                 "are factorized (LayerNorms, embeddings and biases are kept)")
            out.append(f"re:^{re.escape(name)}$")
        elif "." in entry and not entry.startswith("re:"):
            examples = [n for n, m in named.items() if isinstance(m, nn.Linear)][:3]
            raise ValueError(f"decompose layer {entry!r} names no module of this {type(model).__name__}; "
                             f"module names look like {examples}")
        else:
            out.append(entry)  # a role, a group or a regex: resolve_targets names what is wrong with it
    resolve_targets(model, out, module_types=(nn.Linear,))  # fail here, before anything is built
    return out


def rank_for_budget(model: nn.Module, targets: str | list[str], keep: float) -> int:
    """The largest global rank ``r`` whose factors keep at most the fraction ``keep`` of the targeted weights.

    ``sum r (m + n) <= keep * sum m n`` over the targeted ``m x n`` matrices (biases are kept
    either way and not counted), so ``r = floor(keep * sum mn / sum (m + n))``.

    A ``keep`` outside ``(0, 1)``, or one whose rank saves nothing on some matrix (``r >= mn/(m+n)``,
    e.g. a square matrix at a ``keep`` near 1), raises a ValueError naming the largest ``keep`` allowed.
    """
    keep = check_keep(keep, full=False)
    chosen = resolve_targets(model, targets, module_types=(nn.Linear,))
    shapes = [(t.module.out_features, t.module.in_features) for t in chosen]
    total, width = sum(m * n for m, n in shapes), sum(m + n for m, n in shapes)
    rank = max(1, int(keep * total // width))
    cap = min(max_saving_rank(m, n) for m, n in shapes)
    if rank > cap:
        raise ValueError(f"keep={keep} needs global rank {rank}, but rank {cap + 1} already saves nothing on a "
                         f"{'x'.join(map(str, next(s for s in shapes if max_saving_rank(*s) == cap)))} matrix; "
                         f"the largest keep a global rank allows here is {cap * width / total:.3f}")
    return rank


def decompose(model: nn.Module, config: SvdDistillConfig, fisher=None, tokenizer=None, task=None,
              max_length: int = 128, seed: int = 0) -> CompressionReport:
    """Factorize ``model`` in place as ``config`` says; FWSVD estimates the Fisher importances on
    ``task`` first unless ``fisher`` is given. Returns :func:`mpstudy.compress`'s report."""
    targets = decompose_targets(model, config.decompose_layers)
    budget = config.budget_kwargs(model)
    if config.method == "fwsvd":
        if fisher is None:
            if task is None or tokenizer is None:
                raise ValueError("method 'fwsvd' needs fisher=... or a tokenizer and task to estimate it on")

            fisher = estimate_fisher(model, tokenizer, task, targets=targets, max_examples=config.fisher_examples,
                                     batch_size=config.fisher_batch_size, max_length=max_length, seed=seed)
        budget["fisher"] = fisher
    return compress(model, config.method, targets=targets, **budget)


def run_stage(stage: str, student: nn.Module, teacher: nn.Module, tokenizer, task, config: SvdDistillConfig,
              train_config: TrainConfig, cache_dir: str | os.PathLike | None = None):
    """Train ``student`` for one recovery stage (``"fd"`` or ``"kd"``) against ``teacher``.

    ``train_config`` gives batch size, length, seed and device; its ``lr`` and ``epochs`` are
    replaced by the stage's (``fd_lr``/``fd_epochs`` or ``kd_lr``/``kd_epochs``). Returns the
    stage's ``TrainResult``.
    """
    if stage == "fd":
        tc = replace(train_config, lr=config.fd_lr, epochs=config.fd_epochs)
        objective = FeatureDistillObjective(teacher, config.feature_layers, weights=config.fd_weights,
                                            attention_kind=config.attention_kind)
        teacher.to(next(student.parameters()).device)
        with eager_attention(student, teacher):
            return train(student, tokenizer, task, tc, objective=objective)
    if stage == "kd":
        tc = replace(train_config, lr=config.kd_lr, epochs=config.kd_epochs)
        if task.is_seq2seq:
            source = teacher.to(next(student.parameters()).device).eval()  # vocabulary logits are too big to cache
        else:
            source = teacher_outputs(teacher, tokenizer, task, max_length=tc.max_length, cache_dir=cache_dir,
                                     progress=tc.progress)
        objective = DistillObjective(source, alpha=config.alpha, temperature=config.temperature)
        return train(student, tokenizer, task, tc, objective=objective)
    raise ValueError(f"stage must be 'fd' or 'kd', got {stage!r}")


def compress_and_distill(teacher: nn.Module, tokenizer, task, config: SvdDistillConfig, train_config: TrainConfig,
                         fisher=None, cache_dir: str | os.PathLike | None = None,
                         eval_kwargs: dict[str, Any] | None = None,
                         offline_metrics: dict[str, float] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The whole pipeline on a copy of ``teacher``: decompose, evaluate, then each stage of ``config.plan``.

    Returns ``(student, record)``; the record holds the budget (``rank`` or ``keep``), the
    compression report's totals, the dev metrics after decomposition (``offline``) and after each
    stage, the stages' training seconds, and the student's parameter counts. The teacher is not changed.
    ``offline_metrics``: the metrics of this same decomposition measured before (decomposition is
    deterministic), to skip evaluating it again.
    """
    eval_kwargs = {"max_length": train_config.max_length, "max_new_tokens": train_config.max_new_tokens,
                   **(eval_kwargs or {})}
    student = copy.deepcopy(teacher)
    report = decompose(student, config, fisher=fisher, tokenizer=tokenizer, task=task,
                       max_length=train_config.max_length, seed=train_config.seed)
    metric = task.main_metric
    offline = offline_metrics if offline_metrics is not None else evaluate(student, tokenizer, task, **eval_kwargs)
    record: dict[str, Any] = {
        "method": config.method, "plan": config.plan, "seed": train_config.seed,
        **{k: v for k, v in report.budget.items() if k in ("rank", "keep")},
        "targeted_params_before": report.params_before, "targeted_params_after": report.params_after,
        "kept_fraction": report.kept_fraction, "model_params_before": report.model_params_before,
        "model_params_after": report.model_params_after, "offline": offline, "stages": {},
    }
    score = offline[metric]
    for stage in STAGE_PLANS[config.plan]:
        result = run_stage(stage, student, teacher, tokenizer, task, config, train_config, cache_dir=cache_dir)
        record["stages"][stage] = {"metrics": result.best_metrics, "best_step": result.best_step, "steps": result.steps,
                                   "train_seconds": result.train_seconds}
        score = result.best_metrics.get(metric, math.nan)
    record["final"] = record["stages"][STAGE_PLANS[config.plan][-1]]["metrics"] if config.plan != "none" else offline
    record["score"] = score
    record["params"] = count_parameters(student)
    return student.eval(), record


def recovery_grid(teacher: nn.Module, tokenizer, task, config: SvdDistillConfig, train_config: TrainConfig,
                  methods: tuple[str, ...] = METHODS, seeds: tuple[int, ...] = (0,), plans: tuple[str, ...] = ("kd", "fd+kd"),
                  fisher=None, cache_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Scores of every (method, recovery plan, seed) at ``config``'s budget, one row each.

    Runs the plans in ``plans`` for each method and seed (the seed sets the data order and
    dropout of the stages; decomposition does not depend on it). Rows for ``"none"`` (the
    decomposed model untrained, evaluated once per method) and, when ``"fd+kd"`` runs, ``"fd"``
    (its first stage, the same run as plan ``"fd"`` alone) are added without training again.
    Each row: ``method``, ``plan``, ``seed``, ``rank``/``keep``, ``score`` (the task's main
    metric), every dev metric, ``train_seconds`` (all stages), ``model_params``, ``kept_fraction``.
    """
    metric = task.main_metric
    rows: list[dict[str, Any]] = []
    for method in methods:
        offline = None
        for seed in seeds:
            for plan in plans:
                cfg = replace(config, method=method, plan=plan)
                _, rec = compress_and_distill(teacher, tokenizer, task, cfg, replace(train_config, seed=seed),
                                              fisher=fisher if method == "fwsvd" else None, cache_dir=cache_dir,
                                              offline_metrics=offline)
                common = {"method": method, "seed": seed, **{k: rec[k] for k in ("rank", "keep") if k in rec},
                          "model_params": rec["model_params_after"], "kept_fraction": rec["kept_fraction"]}
                if offline is None:
                    offline = rec["offline"]
                    rows.append({**common, "plan": "none", "score": offline[metric], **offline, "train_seconds": 0.0})
                seconds = 0.0
                for stage in STAGE_PLANS[plan]:
                    seconds += rec["stages"][stage]["train_seconds"]
                    if plan == "fd+kd" and stage == "fd" and "fd" not in plans:
                        metrics = rec["stages"]["fd"]["metrics"]
                        rows.append({**common, "plan": "fd", "score": metrics[metric], **metrics, "train_seconds": seconds})
                rows.append({**common, "plan": plan, "score": rec["score"], **rec["final"], "train_seconds": seconds})
    return rows


def module_errors(dense: nn.Module, report: CompressionReport, compressed: nn.Module, fisher=None) -> list[dict[str, Any]]:
    """Per factorized matrix: the plain relative error and, given Fisher importances, the
    row-weighted relative error ``||D (W - W')||_F / ||D W||_F`` that FWSVD minimizes."""
    dense_modules, comp_modules = dict(dense.named_modules()), dict(compressed.named_modules())
    rows = []
    for m in report.modules:
        W = dense_modules[m["name"]].weight.detach()
        approx = comp_modules[m["name"]].to_dense().detach()
        row = {"name": m["name"], "role": m["role"], "layer": m["layer"], "stack": m["stack"],
               "rank": m.get("rank"), "rel_error": m["rel_error"]}
        if fisher is not None:
            imp = fisher[m["name"]]
            row["weighted_rel_error"] = float(row_weighted_error(W, approx, imp) / row_weighted_error(W, torch.zeros_like(W), imp))
        rows.append(row)
    return rows


@torch.inference_mode()
def rank_latency_curve(model: nn.Module, batch: dict[str, torch.Tensor], ranks: list[int],
                       targets: str | list[str] = "all-linear", repeats: int = 10, warmup: int = 2,
                       threads: int | None = None) -> list[dict[str, Any]]:
    """Forward latency and FLOPs of ``model`` with its targeted matrices factorized at each global rank.

    For every rank a copy is factorized (plain SVD: the factors' values do not change the time)
    and timed alternately with the dense model on ``batch`` (``mpstudy.measure.compare_latency``),
    so the speed-up is a ratio measured in one process. Each row: ``rank``, ``kept_fraction`` of the
    targeted weights, ``model_params``, ``flop_ratio`` (factorized / dense, whole forward, from
    ``torch.utils.flop_counter``), ``dense_ms``, ``lowrank_ms`` (medians), ``speedup`` and the torch
    ``threads`` of the timing (``None``: the current count).
    """

    model = model.eval()
    dense_flops = count_flops(model, batch)
    rows = []
    for rank in ranks:
        student = copy.deepcopy(model)
        report = compress(student, "svd", targets=targets, rank=int(rank))
        timing = compare_latency(model, student, batch, repeats=repeats, warmup=warmup, threads=threads)
        rows.append({"rank": int(rank), "kept_fraction": report.kept_fraction, "model_params": report.model_params_after,
                     "flop_ratio": count_flops(student, batch) / dense_flops, "dense_ms": timing["baseline_ms"],
                     "lowrank_ms": timing["candidate_ms"], "speedup": timing["speedup"], "threads": timing["threads"]})
        del student
    return rows


def train_step_seconds(model: nn.Module, tokenizer, task, steps: int = 5, batch_size: int = 32, max_length: int = 128,
                       lr: float = 1e-3, seed: int = 0, threads: int | None = None) -> dict[str, float]:
    """Median wall-clock seconds of one training step (forward, backward, AdamW) of ``model`` on
    ``task.train`` batches, on a copy (the model is not changed); also the mean label length.

    A feasibility probe: it says how long training on this data would take on this machine, before
    committing to it (``steps_per_epoch`` is for the whole training split). The batches are built
    first (not timed); each step is one round of ``mpstudy.measure.time_interleaved`` (no warm-up:
    the first step counts, as it does in training) with ``threads`` torch threads (``None``: the
    current count, returned as ``threads``).
    """
    import statistics

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    set_seed(seed)
    probe = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW([p for p in probe.parameters() if p.requires_grad], lr=lr)
    collate = make_collate(task, tokenizer, max_length=max_length)
    batches = []
    for _, batch in iterate_batches(task.train, collate, batch_size, torch.Generator().manual_seed(seed)):
        batches.append(batch)
        if len(batches) == steps:
            break
    queue = iter(batches)

    def step() -> None:
        probe(**next(queue)).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    timing = time_interleaved({"step": step}, repeats=len(batches), warmup=0, threads=threads,
                              device=next(probe.parameters()).device)
    label_tokens = [float((b["labels"] != -100).sum(-1).float().mean()) if b["labels"].dim() == 2 else 0.0 for b in batches]
    step_s = timing.median("step")
    steps_per_epoch = math.ceil(len(task.train) / batch_size)
    return {"step_seconds": step_s, "steps_measured": len(batches), "mean_label_tokens": statistics.mean(label_tokens),
            "steps_per_epoch": steps_per_epoch, "epoch_seconds": step_s * steps_per_epoch, "threads": timing.threads}
