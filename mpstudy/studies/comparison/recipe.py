"""The comparison study (``notebooks/06_comparison.ipynb``): every method at the same budgets.

No paper in this study compares its method with the others on equal terms. Here each method
compresses the same fine-tuned model to the same **budget**, the fraction of the encoder's
Linear weights it keeps (Q, K, V, attention output, FFN in and out of every layer; biases,
LayerNorms, embeddings and the classifier stay dense and are not counted), and every compressed
model is measured with the same accounting and recovered with the same three regimes:

* ``none``: evaluated as compressed;
* ``finetune``: trained on the task labels (all weights but the word embeddings, which no
  method compresses);
* ``kd``: the same run with the loss ``(1 - alpha) CE + alpha KD`` against the dense model's
  logits (MSE for regression).

The budget is counted as **stored** numbers for factorizations and structured pruning (the
weights physically removed), and as **non-zero** numbers for magnitude pruning, whose masked
weights are still stored dense; every method must land within 5 % of the requested fraction
(``mpstudy.factorize.budget.BUDGET_TOLERANCE``) or refuse with an error naming the budget.

Every method is a registered one (:data:`COMPARED` maps the labels the tables show to the
registry's names) and meets the budget through ``Method.for_budget``:

=====================  ======================================================================
``svd``                ``svd``: truncated SVD of each matrix (rank ``floor(keep * m n / (m + n))``)
``fwsvd``              ``fwsvd``: Fisher-weighted SVD (row importances from squared task gradients)
``mpo``                ``mpo``: MPO of each matrix, one bond cap for the whole encoder, found by search
``tucker``             ``offline-tucker`` (separated): Tucker of each matrix's rows cut into heads
``falcon``             ``falcon``: rows layout per module type across layers; ``k`` per type
                       chosen to minimize the total squared error within the budget
``kronecker``          ``offline-kronecker`` (separated): nearest sum of Kronecker products
``autoencoder``        ``offline-ae`` (separated): row autoencoder per matrix
``magnitude``          ``offline-prune`` (separated): l1 magnitude pruning of each matrix (masks)
``heads``              ``prune-heads``: the lowest-scoring attention heads and FFN neurons, the
                       same kept fraction of each, physically removed
=====================  ======================================================================

Lower precision is compared too: the precision methods ``bf16`` (the whole model in bfloat16) and
``int8`` (torch's dynamic int8 quantization of the Linears, :mod:`mpstudy.methods.precision`) alone
on the dense model (no recovery: they need none), and composed after every compressed model, as
compressed and after each recovery (``svd+int8``: the recovered SVD model, then int8). int8 has no
Linear to quantize inside a layer that rebuilds its weight from factors (MPO, Tucker, Kronecker,
FALCON, the autoencoder): those rows are recorded as not applicable.

The grid runs in **units** of the campaign (:mod:`mpstudy.campaign`), one per (task, method,
budget, dense seed): the unit takes that seed's dense baseline (:mod:`mpstudy.studies.dense`),
compresses it (deterministic given the seed), scores it as it is, trains one copy per recovery
regime with the same seed (which draws the recovery rows and their order), applies every precision
method after each of these, and records every model's dev **predictions**, so scores get intervals
over dev examples and seeds and every comparison with the dense model is paired, from the records
alone (:mod:`~mpstudy.studies.comparison.tables`). Units are independent, so :func:`run_grid` can
spread them over any ``concurrent.futures.Executor`` (local processes, a Dask cluster, SLURM
through submitit: :mod:`mpstudy.grid`); a unit's spec is plain data, each worker picks its device,
and each finished unit is recorded under ``results/06_comparison/units/`` (and copied into the
cache under a lock of its own), so workers sharing the cache never compute a unit twice and an
interrupted grid resumes where it stopped.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from ...accounting import budget_count, count_bytes, count_parameters
from ...cache import cache_key, default_cache_dir, weights_hash
from ...campaign import TimeUp, is_stale, read_unit, remaining_seconds, unit
from ...distill import DistillObjective, teacher_outputs
from ...factorize.budget import BUDGET_TOLERANCE, check_keep, relative_miss
from ...fisher import estimate_fisher
from ...grid import check_device, load_tensor_file, run_units, tensor_file, worker_device
from ...measure import count_flops, dummy_batch, forward_latency
from ...methods import get_method
from ...methods.fwsvd import FisherImportance
from ...methods.precision import PRECISION_METHODS
from ...surgery import compress
from ...targets import resolve_targets
from ...train import TrainConfig, predict, train
from ...profiles import dense_settings
from ..dense import DenseBaseline, dense_baseline

__all__ = [
    "STUDY",
    "COMPARED",
    "COMPARED_METHODS",
    "PRECISIONS",
    "PRECISION_ONLY",
    "LABELS",
    "REGIMES",
    "TRAINED",
    "NO_RECOVERY",
    "ENCODER_LINEAR",
    "variant_label",
    "encoder_linear_names",
    "compress_to_budget",
    "recovery_task",
    "pareto_front",
    "store_fisher",
    "load_fisher",
    "RUNTIME_FIELDS",
    "unit_name",
    "grid_specs",
    "record_spec",
    "run_unit",
    "record_unit",
    "run_grid",
]

#: the campaign's name of this study (``results/06_comparison/``)
STUDY = "06_comparison"
#: the comparison's labels (the names its tables and records show) -> (registered method, options the
#: comparison fixes); every method meets the budget through ``mpstudy.methods.Method.for_budget``
COMPARED: dict[str, tuple[str, dict[str, Any]]] = {
    "svd": ("svd", {}),
    "fwsvd": ("fwsvd", {}),
    "mpo": ("mpo", {}),
    "tucker": ("offline-tucker", {"mode": "separated"}),
    "falcon": ("falcon", {}),
    "kronecker": ("offline-kronecker", {"mode": "separated"}),
    "autoencoder": ("offline-ae", {"mode": "separated", "batch_size": 32, "lr": 3e-3}),
    "magnitude": ("offline-prune", {"mode": "separated"}),
    "heads": ("prune-heads", {}),
}
#: the methods compared, in the order tables show them
COMPARED_METHODS = tuple(COMPARED)
#: the recovery regimes after compression, ``none`` (as compressed) and the trained ones
REGIMES = ("none", "finetune", "kd")
NO_RECOVERY = REGIMES[0]
TRAINED = REGIMES[1:]
#: the precision methods compared alone and after every compressed model (``mpstudy.methods.precision``)
PRECISIONS = tuple(PRECISION_METHODS)
#: the ``method`` of the units that apply the precision methods to the dense model alone
PRECISION_ONLY = "precision"


def variant_label(method: str | None, precision: str | None = None) -> str:
    """The label a table shows: ``svd``; ``int8`` (the dense model in int8); ``svd+int8`` (SVD, then int8)."""
    if method is None and precision is None:
        raise ValueError("a variant needs a method, a precision method or both")
    return precision if method is None else method if precision is None else f"{method}+{precision}"


#: every label a row of the comparison can carry -- the methods, the precision methods alone, and composed
LABELS = (COMPARED_METHODS + PRECISIONS
          + tuple(variant_label(m, p) for m in COMPARED_METHODS for p in PRECISIONS))
#: the targets whose weights the budget counts
ENCODER_LINEAR = "all-linear"
#: per-module structure in a compression report -> its name in ``structure`` (distinct values)
_DISCRETE = {"rank": "ranks", "heads": "heads_kept", "neurons": "neurons_kept"}


# --------------------------------------------------------------------------- accounting


def encoder_linear_names(model: nn.Module) -> list[str]:
    """Names of the encoder's Linear modules the budget covers (Q, K, V, O, FFN in/out of every layer)."""
    return [t.name for t in resolve_targets(model, ENCODER_LINEAR, module_types=(nn.Linear,))]


# --------------------------------------------------------------------------- budgets per method


@torch.no_grad()
def compress_to_budget(model: nn.Module, method: str, keep: float, fisher=None, seed: int = 0,
                       ae_epochs: int = 10) -> dict[str, Any]:
    """Compress ``model``'s encoder Linears in place so ``keep`` of their weights remain.

    A thin call through the registry: the method's ``Method.for_budget`` turns ``keep`` into its
    own keywords (a rank rule, an MPO bond cap, FALCON's ``k`` per type...), ``mpstudy.compress``
    applies them, and the kept fraction is counted here (``mpstudy.accounting.budget_count``:
    stored numbers, non-zeros under a pruning mask) and checked against the request.

    Args:
        model: a BERT-family classifier (the targets are ``ENCODER_LINEAR``).
        method: one of ``COMPARED_METHODS`` (the comparison's labels; :data:`COMPARED` names the
            registered method behind each).
        keep: fraction of the encoder's Linear weights kept, in (0, 1).
        fisher: row importances for ``fwsvd`` (:func:`mpstudy.fisher.estimate_fisher`).
        seed: seeds the methods that draw random numbers (the autoencoder's initialisation).
        ae_epochs: training epochs of each row autoencoder.

    Returns:
        ``method``, ``keep`` (requested), ``kept`` (achieved, as the budget counts), ``stored``,
        ``nonzero``, ``dense`` (weights counted), ``structure`` (the method's discrete choice:
        the keywords ``for_budget`` chose, the fixed options, and the distinct ranks / heads /
        neurons left per module) and ``seconds``.

    Raises:
        ValueError: an unknown method or a bad ``keep`` (before anything changes), or an achieved
            budget more than 5 % from the request.
    """
    keep = check_keep(keep, full=False)
    if method not in COMPARED:
        raise ValueError(f"unknown method {method!r}; compared methods: {list(COMPARED_METHODS)}")
    name, fixed = COMPARED[method]
    spec = get_method(name)
    # the unit's own inputs, passed to the methods that take them
    given = {"fisher": fisher, "seed": seed, "epochs": ae_epochs}
    options = {**fixed, **{k: v for k, v in given.items() if k in spec.budget_keys and v is not None}}
    names = encoder_linear_names(model)
    dense = count_parameters(model, names, include_bias=False, nonzero=False)["stored"]
    start = time.perf_counter()
    chosen = spec.for_budget(model, keep, ENCODER_LINEAR, **options)
    report = compress(model, name, targets=ENCODER_LINEAR, **chosen, **options)
    seconds = time.perf_counter() - start
    # whatever a module became (thin Linears, MPO cores, a share of a FALCON basis, a row autoencoder
    # with its decoder, a pruned Linear), its numbers count, shared tensors once, output biases not
    counts = count_parameters(model, names, include_bias=False)
    kept = budget_count(model, names) / dense
    if relative_miss(kept, keep) > BUDGET_TOLERANCE:
        raise ValueError(f"{method} kept {kept:.3f} of the encoder weights for a budget of keep={keep:g} "
                         f"(tolerance {BUDGET_TOLERANCE:.0%})")
    structure = {**chosen, **{k: v for k, v in options.items() if k != "fisher"}}
    for key, label in _DISCRETE.items():
        values = sorted({m[key] for m in report.modules if m.get(key) is not None})
        if values:
            structure[label] = values
    return {"method": method, "keep": keep, "kept": kept, "dense": dense, "stored": counts["stored"],
            "nonzero": counts["nonzero"], "structure": structure, "seconds": seconds}


# --------------------------------------------------------------------------- one unit of the grid


def recovery_task(task, rows: int | None, seed: int):
    """``task`` with ``rows`` of its training rows drawn with ``seed`` (their order kept); ``None``: all."""
    if rows is None or rows >= len(task.train):
        return task
    keep = sorted(torch.randperm(len(task.train), generator=torch.Generator().manual_seed(seed))[:rows].tolist())
    return dataclasses.replace(task, train=[task.train[i] for i in keep])


def _freeze_word_embeddings(model: nn.Module) -> None:
    emb = model.get_input_embeddings()
    if emb is not None:
        emb.weight.requires_grad_(False)


def store_fisher(fisher: Mapping[str, torch.Tensor], cache_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Store ``fisher`` (:func:`mpstudy.fisher.estimate_fisher`'s row importances) as a file in the cache
    (``tensors/`` under ``cache_dir``, default ``mpstudy.cache.default_cache_dir``); returns the reference
    ``{"path", "sha256"}`` a unit spec carries as its ``fisher`` (see :func:`mpstudy.grid.tensor_file`)."""
    meta = {"kind": "fisher"}
    if isinstance(fisher, FisherImportance):
        meta |= {"examples": str(fisher.examples), "batches": str(fisher.batches),
                 "batch_size": str(fisher.batch_size), "task": str(fisher.task)}
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return tensor_file(dict(fisher), root / "tensors", metadata=meta)


def load_fisher(ref: Mapping[str, str]) -> FisherImportance:
    """The row importances :func:`store_fisher` stored under the reference ``ref`` (checked against its sha256).

    Raises:
        ValueError: ``ref`` is not a reference, its file changed, or it holds something other than Fisher weights.
    """
    rows, meta = load_tensor_file(ref)
    if meta.get("kind") != "fisher":
        raise ValueError(f"{ref['path']} holds {meta.get('kind')!r} tensors, not Fisher weights "
                         "(store them with store_fisher)")
    return FisherImportance(rows, examples=int(meta.get("examples", 0)), batches=int(meta.get("batches", 0)),
                            batch_size=int(meta.get("batch_size", 0)), task=meta.get("task", ""))


#: spec fields that say where and how a unit runs, not what it computes — left out of its record spec and cache key
RUNTIME_FIELDS = ("threads", "device", "cache_dir", "results_dir")
#: what a unit spec must hold (see :func:`run_unit`)
_SPEC_KEYS = ("name", "dense", "method", "keep", "seed", "regimes", "precisions", "train")
_DENSE_KEYS = ("task", "seed", "profile", "block", "unit", "spec_key", "weights")


def unit_name(profile: str, task_name: str, method: str, keep: float | None, seed: int) -> str:
    """``<profile>-<task>-<method>-keep<keep>-seed<k>``; the dense model under the precision methods alone:
    ``<profile>-<task>-precision-seed<k>``."""
    if method == PRECISION_ONLY:
        return f"{profile}-{task_name}-precision-seed{seed}"
    return f"{profile}-{task_name}-{method}-keep{keep:g}-seed{seed}"


def grid_specs(dense: Mapping[str, Mapping[int, DenseBaseline]], methods: Sequence[str], keeps: Sequence[float], *,
               profile: str, block: Mapping[str, Any], data_dir: str | None = None, regimes: Sequence[str] = TRAINED,
               precisions: Sequence[str] = PRECISIONS, recover: Sequence[str] | None = None,
               train: Mapping[str, Any], recovery_rows: int | None = None,
               alpha: float = 0.5, temperature: float = 2.0, ae_epochs: int = 10,
               fisher: Mapping[str, int] | None = None, latency: Mapping[str, int] | None = None,
               device: str = "auto") -> list[dict[str, Any]]:
    """The unit specs of the grid: one per (task, method, keep, dense seed), plus, when ``precisions`` is not
    empty, one per (task, seed) for the dense model under each precision method alone.

    Args:
        dense: task -> seed -> the dense baseline (:func:`mpstudy.studies.dense.dense_baseline`); its record
            names the unit (spec key, weights hash), so a spec is plain data any worker can run.
        methods, keeps: compared methods (:data:`COMPARED_METHODS`) and kept fractions.
        profile, block, data_dir: how the dense baselines were asked for (the worker asks again).
        regimes: the trained recovery regimes (of ``TRAINED``); ``none`` always runs.
        precisions: precision methods (of :data:`PRECISIONS`) applied after every compressed model.
        recover: the methods that get the trained ``regimes`` (None: all); the others are scored as
            compressed only (where time is short: untrained scores cost one evaluation, recoveries minutes).
        train: :class:`~mpstudy.train.TrainConfig` fields of the recovery runs; ``max_length`` defaults
            to the dense model's for each task.
        fisher: ``{"examples": n, "batch_size": b}`` for fwsvd's row importances (estimated on the worker).
        latency: ``{"batch", "seq", "repeats"}``: timed in the units of the first task's first seed only
            (the compressed architectures depend on neither).

    Raises:
        ValueError: an unknown method, regime or precision method, before anything runs.
    """
    unknown = [m for m in [*methods, *(recover or [])] if m not in COMPARED]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; compared methods: {list(COMPARED_METHODS)}")
    bad = [r for r in regimes if r not in TRAINED] + [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise ValueError(f"unknown regimes or precision methods {bad}; regimes: {list(TRAINED)}, "
                         f"precision methods: {list(PRECISIONS)}")
    specs = []
    tasks = list(dense)
    common = {"precisions": list(precisions), "recovery_rows": recovery_rows, "alpha": alpha,
              "temperature": temperature, "device": device}
    for task_name in tasks:
        seeds = list(dense[task_name])
        length = dense_settings(dict(block), task_name)["train"].get("max_length", 128)
        common["train"] = {"max_length": length, **train}
        for seed in seeds:
            record = dense[task_name][seed].record
            ref = {"task": task_name, "seed": seed, "profile": profile, "block": copy.deepcopy(dict(block)),
                   "data_dir": data_dir, "unit": record["unit"], "spec_key": record["spec_key"],
                   "weights": record["result"]["weights"]}
            timed = dict(latency) if latency and task_name == tasks[0] and seed == seeds[0] else None
            if precisions:
                specs.append({"name": unit_name(profile, task_name, PRECISION_ONLY, None, seed), "dense": ref,
                              "method": PRECISION_ONLY, "keep": 1.0, "seed": seed, **common, "regimes": [],
                              "ae_epochs": None, "fisher": None, "latency": timed})
            for method in methods:
                for keep in keeps:
                    specs.append({"name": unit_name(profile, task_name, method, keep, seed), "dense": ref,
                                  "method": method, "keep": float(keep), "seed": seed, **common,
                                  "regimes": list(regimes) if recover is None or method in recover else [],
                                  "ae_epochs": ae_epochs if method == "autoencoder" else None,
                                  "fisher": dict(fisher) if method == "fwsvd" and fisher else None, "latency": timed})
    return specs


def record_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What a unit computes, as its campaign record states it: the spec without the :data:`RUNTIME_FIELDS`
    and its name; the dense model by its unit, spec key and weights hash (not by how to find it); Fisher
    weights stored as a file by their sha256."""
    out = {k: v for k, v in spec.items() if k not in (*RUNTIME_FIELDS, "name")}
    out["dense"] = {k: spec["dense"][k] for k in ("unit", "spec_key", "weights")}
    fisher = spec.get("fisher")
    if isinstance(fisher, Mapping) and "sha256" in fisher:
        out["fisher"] = {"sha256": fisher["sha256"]}
    return out


#: this process's dense baselines, loaded model included: consecutive units of one (task, seed) share them
_DENSE_HELD: dict[str, tuple[DenseBaseline, Any]] = {}
_DENSE_HOLD = 2  #: how many are kept (a worker runs units in spec order: task by task, seed by seed)


def _dense_of(spec: Mapping[str, Any]) -> DenseBaseline:
    d = spec["dense"]
    return dense_baseline(d["task"], d["seed"], profile=d["profile"], data_dir=d.get("data_dir"),
                          results_dir=spec.get("results_dir"), cache_dir=spec.get("cache_dir"), block=d["block"])


def _dense_model(spec: Mapping[str, Any]) -> tuple[DenseBaseline, nn.Module, Any]:
    """The unit's dense baseline and its ``(model, tokenizer)``, checked against the record's weights hash;
    held for the next unit of the same dense model in this process (callers copy the model, never change it)."""
    key = json.dumps([spec["dense"]["unit"], spec["dense"]["spec_key"], spec.get("results_dir"), spec.get("cache_dir")])
    if key not in _DENSE_HELD:
        base = _dense_of(spec)
        model, tokenizer = base.model()
        if weights_hash(model) != spec["dense"]["weights"]:
            raise ValueError(f"the dense model of {spec['dense']['unit']} loaded from the cache does not hash to its "
                             f"record's weights {spec['dense']['weights']}; clear its cache entry to retrain it")
        while len(_DENSE_HELD) >= _DENSE_HOLD:
            _DENSE_HELD.pop(next(iter(_DENSE_HELD)))
        _DENSE_HELD[key] = (base, (model.cpu().eval(), tokenizer))
    base, (model, tokenizer) = _DENSE_HELD[key]
    return base, model, tokenizer


def _fisher_for(spec: Mapping[str, Any], model: nn.Module, tokenizer, task, max_length: int, seed: int):
    fisher = spec.get("fisher")
    if fisher is None:
        return None
    if "sha256" in fisher:
        return load_fisher(fisher)
    return estimate_fisher(model, tokenizer, task, targets=ENCODER_LINEAR, max_examples=fisher.get("examples", 256),
                           batch_size=fisher.get("batch_size", 8), max_length=max_length, seed=seed)


def _with_precision(model: nn.Module, precision: str) -> nn.Module:
    """A copy of ``model`` with the precision method applied (int8: on the CPU, where its kernels are)."""
    out = copy.deepcopy(model)
    if precision == "int8":
        out = out.cpu()
    compress(out, precision, targets=ENCODER_LINEAR)
    return out.eval()


def run_unit(spec: Mapping[str, Any]) -> dict[str, Any]:
    """One unit: one dense seed's model of one task, compressed by one method to one budget, scored as it
    is and after every recovery regime, each of these also under every precision method; or (``method``
    :data:`PRECISION_ONLY`) the dense model under each precision method alone.

    ``spec`` is plain data (:func:`grid_specs` builds it), so any worker can receive it: ``name``,
    ``dense`` (task, seed, profile, block, data_dir of the dense baseline, and its unit name, spec key and
    weights hash: the worker asks :func:`mpstudy.studies.dense.dense_baseline` for the model, read from
    the cache, and checks its weights), ``method``, ``keep``, ``seed`` (the dense seed, which also seeds
    the recovery rows and their order, and the autoencoder), ``regimes`` (trained regimes), ``precisions``,
    ``train`` (:class:`mpstudy.train.TrainConfig` fields), ``recovery_rows``, ``alpha``, ``temperature``,
    ``ae_epochs``, ``fisher`` (fwsvd: ``{"examples", "batch_size"}`` to estimate here, or a
    :func:`store_fisher` reference), ``latency`` (``None`` or ``batch``, ``seq``, ``repeats``), and the
    :data:`RUNTIME_FIELDS`: ``threads``, ``device`` (``"auto"``: :func:`mpstudy.grid.worker_device`),
    ``cache_dir`` and ``results_dir``.

    The model is compressed on the CPU; evaluation, recovery and latency run on the device (int8 on the
    CPU only: its rows are evaluated there and timed only when the device is the CPU).

    Returns:
        ``task``, ``method``, ``keep``, ``seed``, ``dense_unit``, ``device``, ``compression`` (see
        :func:`compress_to_budget`; None for the precision rows), ``params``/``dense_params``
        (``mpstudy.accounting.count_parameters``), ``bytes``/``dense_bytes`` (fp32 dense),
        ``flops``/``dense_flops``, ``not_applicable`` (label -> why a precision method refused the model),
        ``latency`` (None, or ``seconds``: label -> seconds per timed round, ``"dense"`` the fp32 dense
        model, every model timed round-robin; ``median_ms``, ``threads``, ``batch``, ``seq``, ``device``)
        and ``runs``: one row per (label, regime) with ``method`` (the label: ``svd``, ``svd+int8``,
        ``int8``...), ``regime``, ``seed``, ``score``, ``metrics``, ``predictions`` (dev, row order),
        ``stored``, ``bytes`` and, for trained rows, ``trainable``, ``steps`` and ``train_seconds``.
    """
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = worker_device(spec.get("device", "auto"))
    base, teacher, tokenizer = _dense_model(spec)
    task = base.task
    teacher = copy.deepcopy(teacher)
    result = base.record["result"]
    refs, eval_precision = result["references"], result["precision"]
    cfg = dict(spec["train"])
    max_length = cfg.get("max_length", 128)
    eval_kw = {"batch_size": cfg.get("eval_batch_size", 64), "max_length": max_length}
    cast = float if task.kind == "regression" else int
    method, seed = spec["method"], spec["seed"]

    def predictions(model: nn.Module, precision: str) -> list:
        preds, _ = predict(model, tokenizer, task, precision=precision, **eval_kw)
        return [cast(p) for p in preds]

    def row(model: nn.Module, label: str, regime: str, preds: list, **extra: Any) -> dict[str, Any]:
        metrics = task.compute_metrics(preds, refs)
        return {"method": label, "regime": regime, "seed": seed, "score": metrics[task.main_metric], "metrics": metrics,
                "predictions": preds, "stored": count_parameters(model)["stored"],
                "bytes": count_bytes(model)["total"], **extra}

    out: dict[str, Any] = {"task": task.name, "method": method, "keep": spec["keep"], "seed": seed,
                           "dense_unit": spec["dense"]["unit"], "device": device, "compression": None,
                           "dense_params": count_parameters(teacher), "dense_bytes": count_bytes(teacher)["total"],
                           "not_applicable": {}, "latency": None, "runs": []}
    batch = dummy_batch(tokenizer, batch_size=8, seq_len=max_length)
    out["dense_flops"] = count_flops(teacher, batch)

    def variants(model: nn.Module, label: str | None, regime: str) -> dict[str, nn.Module]:
        """Every precision method after ``model`` (unchanged), scored; the models by label."""
        made = {}
        for precision in spec["precisions"]:
            name = variant_label(label, precision)
            try:
                variant = _with_precision(model, precision)
            except ValueError as err:  # int8 after a method that rebuilds its weights: no Linear to quantize
                out["not_applicable"][name] = str(err)
                continue
            on = "cpu" if precision == "int8" else device
            variant.to(on)
            out["runs"].append(row(variant, name, regime, predictions(variant, "fp32")))
            made[name] = variant
        return made

    if method == PRECISION_ONLY:
        student, label = teacher, None
        out["params"], out["bytes"], out["flops"] = out["dense_params"], out["dense_bytes"], out["dense_flops"]
        timed = variants(teacher, None, NO_RECOVERY)
    else:
        student = copy.deepcopy(teacher)
        fisher = _fisher_for(spec, teacher, tokenizer, task, max_length, seed) if method == "fwsvd" else None
        out["compression"] = compress_to_budget(student, method, spec["keep"], fisher=fisher, seed=seed,
                                                ae_epochs=spec.get("ae_epochs") or 10)
        student.eval()
        label = method
        out["params"], out["bytes"] = count_parameters(student), count_bytes(student)["total"]
        out["flops"] = count_flops(student, batch)
        student.to(device)
        out["runs"].append(row(student, method, NO_RECOVERY, predictions(student, eval_precision)))
        timed = {method: student, **variants(student, method, NO_RECOVERY)}
    if spec.get("latency"):
        lat = spec["latency"]
        # int8 runs on the CPU only: timed against the dense model only where the unit runs on the CPU
        models = {"dense": teacher.to(device), **{k: m for k, m in timed.items()
                                                  if device == "cpu" or "int8" not in k.split("+")}}
        timing = forward_latency(models, dummy_batch(tokenizer, lat["batch"], lat["seq"], device=device),
                                 repeats=lat["repeats"], threads=spec.get("threads"))
        out["latency"] = {"seconds": timing.seconds, "median_ms": {k: timing.median(k) * 1e3 for k in timing.seconds},
                          "threads": timing.threads, "batch": lat["batch"], "seq": lat["seq"],
                          "repeats": lat["repeats"], "device": device}
    del timed
    teacher.to(device)
    for regime in spec["regimes"] if method != PRECISION_ONLY else []:
        model = copy.deepcopy(student).to(device)
        _freeze_word_embeddings(model)
        sub = recovery_task(task, spec.get("recovery_rows"), seed)
        objective = None
        if regime == "kd":
            outputs = teacher_outputs(teacher, tokenizer, sub, max_length=max_length, cache_dir=spec.get("cache_dir"),
                                      progress=False)
            objective = DistillObjective(outputs, alpha=spec["alpha"], temperature=spec["temperature"])
        last: dict[str, list] = {}

        def final_predictions(m: nn.Module, step: int) -> dict[str, float]:
            # keep_best=False: the model after the last evaluation is the model trained; its predictions are kept
            last["preds"] = predictions(m, eval_precision)
            return task.compute_metrics(last["preds"], refs)

        config = TrainConfig(**{**cfg, "seed": seed, "progress": False, "keep_best": False, "device": device})
        trained = train(model, tokenizer, sub, config, objective=objective, eval_fn=final_predictions)
        model.eval()
        out["runs"].append(row(model, label, regime, last["preds"], trainable=trained.params.get("trainable"),
                               steps=trained.steps, train_seconds=trained.train_seconds))
        variants(model, label, regime)
        del model
    return out


def record_unit(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The unit's campaign record (:func:`mpstudy.campaign.unit`, ``results/06_comparison/units/<name>.json``):
    read when one holds the same :func:`record_spec`, else :func:`run_unit` computed and recorded. What a
    grid worker runs."""
    return unit(STUDY, spec["name"], record_spec(spec), lambda: run_unit(spec), results_dir=spec.get("results_dir"))


def pareto_front(points, x: str, y: str):
    """Rows of the DataFrame ``points`` that no other row dominates, sorted by ``x``: the trade-off curve of score
    ``y`` against cost ``x``. A row is dominated by one with ``x`` and ``y`` at least as good and one of them
    strictly better (smaller ``x`` or larger ``y``); of identical rows one is kept."""
    import pandas as pd

    pts = points.sort_values([x, y], ascending=[True, False])
    front, best = [], -math.inf
    for _, row in pts.iterrows():
        if row[y] > best:
            front.append(row)
            best = row[y]
    return pd.DataFrame(front)


def _check_spec(i: int, spec: Any) -> None:
    """Refuse, before anything runs, a spec a worker could not receive or run."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"spec {i} must be a dict (see run_unit), got {type(spec).__name__}")
    missing = [k for k in _SPEC_KEYS if k not in spec]
    if missing:
        raise ValueError(f"spec {i} lacks {missing}; a unit spec holds the fields run_unit lists (see grid_specs)")
    dense = spec["dense"]
    lacking = [k for k in _DENSE_KEYS if not isinstance(dense, Mapping) or k not in dense]
    if lacking:
        raise ValueError(f"spec {i}'s dense lacks {lacking}; grid_specs builds it from the dense baselines' records")
    fisher = spec.get("fisher")
    plain = fisher is None or (isinstance(fisher, Mapping) and (set(fisher) == {"path", "sha256"} or (
        set(fisher) <= {"examples", "batch_size"} and all(isinstance(v, int) for v in fisher.values()))))
    if not plain:
        raise ValueError(f"spec {i} ({spec['method']}) holds fisher as {type(fisher).__name__}; a spec carries "
                         "only plain data: {'examples': n, 'batch_size': b} to estimate it on the worker, or store "
                         "the weights with store_fisher(fisher, cache_dir) and pass the reference it returns")
    check_device(spec.get("device", "auto"))


def _unit_keys(specs: Sequence[Mapping[str, Any]]) -> list[str]:
    """One :func:`mpstudy.cache.cache_key` per spec, for the grid's locks and resumption: the record spec
    (:func:`record_spec`: the recipe, the dense unit's spec key, which covers its data rows and training,
    and its weights hash; a Fisher file by its sha256), the library code and the torch/transformers versions.
    Nothing is loaded."""
    return [cache_key("comparison-unit", record_spec(spec), data=spec["dense"]["spec_key"],
                      weights=spec["dense"]["weights"]) for spec in specs]


def _describe(spec: Mapping[str, Any]) -> str:
    return spec["name"]


def run_grid(specs: Iterable[Mapping[str, Any]], workers: int = 1, cache_dir: str | os.PathLike | None = None,
             progress: bool = True, executor: Executor | None = None,
             results_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every unit's campaign record (:func:`record_unit`), in ``specs`` order.

    Args:
        specs: unit specs (plain data, :func:`grid_specs`).
        workers: without an ``executor``: 1 runs the units here, one after the other; more run them
            in that many spawned local processes (:func:`mpstudy.grid.local_pool`).
        cache_dir: the cache (default ``mpstudy.cache.default_cache_dir``), on a file system every
            worker sees: the dense models, the teachers' outputs and the grid's per-unit locks and copies.
        progress: show a progress bar.
        executor: any ``concurrent.futures.Executor`` to run the units on instead: a Dask cluster's
            ``distributed.Client(address).get_executor()``, ``submitit.AutoExecutor(folder)`` for
            SLURM (see :func:`mpstudy.grid.as_executor`)... Its workers must be able to import mpstudy.
        results_dir: where the records live (default ``$MPSTUDY_RESULTS``, else ``results``), on a file
            system every worker sees.

    A unit whose record exists for the same spec is read here and not sent (with
    ``MPSTUDY_RERUN_STALE=1``, not when its code version differs from today's). The rest go to
    :func:`mpstudy.grid.run_units`: each worker writes the unit's record as soon as it is done, and a
    copy in the cache under the unit's lock (:class:`mpstudy.grid.UnitLock`), so grids on several
    machines sharing the cache and the results compute each unit once and an interrupted grid
    resumes. The dense models of the units to run are loaded (or trained) here first, one after the
    other, so workers only read them. Out of this process, a unit gets one torch thread unless its
    spec sets ``threads``; each unit seeds its own randomness, so results do not depend on scheduling.

    Raises:
        ValueError: a bad ``workers``, ``workers`` together with an ``executor``, or a spec a worker
            could not run (missing fields, in-memory Fisher weights, an unknown device), before
            anything runs.
        mpstudy.campaign.TimeUp: the campaign's time box leaves no room for a unit still to run
            (finished units are recorded).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    specs = [dict(s) for s in specs]
    for i, spec in enumerate(specs):
        _check_spec(i, spec)
    names = [s["name"] for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"unit names repeat: {sorted({n for n in names if names.count(n) > 1})}; one name per unit")
    results_dir = str(results_dir) if results_dir is not None else None
    for spec in specs:
        spec.setdefault("results_dir", results_dir)
    records: list[dict[str, Any] | None] = []
    for spec in specs:
        found = read_unit(STUDY, spec["name"], record_spec(spec), spec["results_dir"])
        records.append(None if found is None or is_stale(found) else found)
    todo = [i for i, r in enumerate(records) if r is None]
    if not todo:
        return records  # type: ignore[return-value]
    left = remaining_seconds()
    if left is not None and left <= 0:
        raise TimeUp(f"the campaign's time box has ended: {len(todo)} units of study {STUDY} not started; "
                     "re-run to continue from the recorded units")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    loaded = set()
    for i in todo:  # the dense models the workers will read: trained or loaded here first, one at a time
        if specs[i]["dense"]["unit"] not in loaded:
            loaded.add(specs[i]["dense"]["unit"])
            _dense_model({**specs[i], "cache_dir": str(root)})
    pending = [specs[i] for i in todo]
    away = executor is not None or (workers > 1 and len(pending) > 1)
    sent = [{**({"threads": 1} if away else {}), **spec, "cache_dir": str(root)} for spec in pending]
    done = run_units(record_unit, sent, _unit_keys(pending), root / "comparison", executor=executor, workers=workers,
                     progress=progress, desc="comparison units", describe=_describe)
    for i, record in zip(todo, done):
        records[i] = record
    return records  # type: ignore[return-value]
