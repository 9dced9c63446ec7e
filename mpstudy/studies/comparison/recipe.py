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

The grid runs in units of one (task, method, budget): the unit compresses once (deterministic
given its seed) and then runs every recovery regime for every seed, where the seed draws the
recovery rows and their order. Units are independent, so :func:`run_grid` can spread them over
any ``concurrent.futures.Executor`` (local processes, a Dask cluster, SLURM through submitit:
:mod:`mpstudy.grid`); a unit's spec is plain data (the Fisher weights of ``fwsvd`` are a file in
the cache, :func:`store_fisher`), each worker picks its device, and each finished unit is cached
on disk under a lock of its own, so workers sharing the cache never compute a unit twice and an
interrupted grid resumes where it stopped.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from ...accounting import budget_count, count_parameters
from ...cache import cache_key, default_cache_dir, tokenizer_hash, weights_hash
from ...distill import DistillObjective, teacher_outputs
from ...factorize.budget import BUDGET_TOLERANCE, check_keep, relative_miss
from ...grid import check_device, load_tensor_file, run_units, tensor_file, worker_device
from ...measure import compare_latency, count_flops, dummy_batch
from ...methods import get_method
from ...methods.fwsvd import FisherImportance
from ...models import load_model
from ...surgery import compress
from ...targets import resolve_targets
from ...tasks import load_task, task_fingerprint
from ...train import TrainConfig, evaluate, train

__all__ = [
    "COMPARED",
    "COMPARED_METHODS",
    "REGIMES",
    "ENCODER_LINEAR",
    "encoder_linear_names",
    "compress_to_budget",
    "recovery_task",
    "pareto_front",
    "store_fisher",
    "load_fisher",
    "RUNTIME_FIELDS",
    "run_unit",
    "run_grid",
]

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
#: recovery regimes after compression
REGIMES = ("none", "finetune", "kd")
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


#: spec fields that say where and how a unit runs, not what it computes — left out of its cache key
RUNTIME_FIELDS = ("threads", "device", "cache_dir")


def run_unit(spec: dict[str, Any]) -> dict[str, Any]:
    """Compress the dense model of one task with one method at one budget; recover it every way.

    ``spec`` is plain data, so any worker can receive it: ``task`` (name), ``task_kwargs`` (for
    ``mpstudy.tasks.load_task``), ``baseline`` (path of the fine-tuned dense model), ``method``,
    ``keep``, ``seeds``, ``train`` (:class:`mpstudy.train.TrainConfig` fields of the recovery runs),
    ``recovery_rows``, ``alpha``, ``temperature``, ``ae_epochs``, ``fisher`` (fwsvd only: the
    reference :func:`store_fisher` returns; ``None`` otherwise), ``latency`` (``None`` or ``batch``,
    ``seq``, ``repeats``), and the :data:`RUNTIME_FIELDS`: ``threads`` (torch threads),
    ``device`` (``"auto"``, the default: :func:`mpstudy.grid.worker_device` picks this worker's
    GPU or the CPU; or ``"cpu"``, ``"cuda[:N]"``) and ``cache_dir`` (where the teacher's outputs
    are cached; default ``mpstudy.cache.default_cache_dir``).

    The model is compressed on the CPU (the same compressed model wherever the unit runs) and its
    FLOPs counted there; latency, evaluation and recovery run on the device.

    Returns:
        ``compression`` (see :func:`compress_to_budget`), ``params`` (whole-model
        ``mpstudy.accounting.count_parameters``), ``flops`` and ``dense_flops``, ``latency``
        (``mpstudy.measure.compare_latency`` against the dense model with the unit's ``threads``,
        recorded there, or ``None``), ``device`` (where it ran) and ``runs``: one row per
        (regime, seed) with ``score`` (the task's main metric) and all ``metrics``.
    """

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = worker_device(spec.get("device", "auto"))
    task = load_task(spec["task"], **spec["task_kwargs"])
    teacher, tokenizer = load_model(spec["baseline"], task=task)
    teacher.eval()
    student = copy.deepcopy(teacher)
    fisher = load_fisher(spec["fisher"]) if spec.get("fisher") is not None else None
    compression = compress_to_budget(student, spec["method"], spec["keep"], fisher=fisher,
                                     seed=spec.get("compress_seed", 0), ae_epochs=spec.get("ae_epochs", 10))
    student.eval()
    cfg = dict(spec["train"])
    batch = dummy_batch(tokenizer, batch_size=8, seq_len=cfg.get("max_length", 64))
    out: dict[str, Any] = {"task": spec["task"], "method": spec["method"], "keep": spec["keep"],
                           "compression": compression, "params": count_parameters(student),
                           "dense_params": count_parameters(teacher), "flops": count_flops(student, batch),
                           "dense_flops": count_flops(teacher, batch), "latency": None, "device": device, "runs": []}
    teacher.to(device)
    student.to(device)
    if spec.get("latency"):
        lat = spec["latency"]
        timed = dummy_batch(tokenizer, lat["batch"], lat["seq"], device=device)
        out["latency"] = {**compare_latency(teacher, student, timed, repeats=lat["repeats"], threads=spec.get("threads")),
                          "batch": lat["batch"], "seq": lat["seq"]}
    eval_kwargs = {"batch_size": cfg.get("eval_batch_size", 64), "max_length": cfg.get("max_length", 128)}
    start = time.perf_counter()
    metrics = evaluate(student, tokenizer, task, **eval_kwargs)
    out["runs"].append({"regime": "none", "seed": None, "score": metrics[task.main_metric], "metrics": metrics,
                        "seconds": time.perf_counter() - start})
    for seed in spec["seeds"]:
        sub = recovery_task(task, spec.get("recovery_rows"), seed)
        for regime in ("finetune", "kd"):
            model = copy.deepcopy(student)
            _freeze_word_embeddings(model)
            objective = None
            if regime == "kd":
                outputs = teacher_outputs(teacher, tokenizer, sub, max_length=eval_kwargs["max_length"],
                                          cache_dir=spec.get("cache_dir"), progress=False)
                objective = DistillObjective(outputs, alpha=spec["alpha"], temperature=spec["temperature"])
            config = TrainConfig(**{**cfg, "seed": seed, "progress": False, "keep_best": False, "device": device})
            result = train(model, tokenizer, sub, config, objective=objective)
            out["runs"].append({"regime": regime, "seed": seed, "score": result.best_metrics[task.main_metric],
                                "metrics": result.best_metrics, "seconds": result.train_seconds,
                                "trainable": result.params.get("trainable")})
    return out


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
    missing = [k for k in ("task", "task_kwargs", "baseline", "method", "keep", "seeds", "train") if k not in spec]
    if missing:
        raise ValueError(f"spec {i} lacks {missing}; a unit spec holds the fields run_unit lists")
    fisher = spec.get("fisher")
    if fisher is not None and not (isinstance(fisher, Mapping) and set(fisher) == {"path", "sha256"}):
        raise ValueError(f"spec {i} ({spec['method']}) holds fisher as {type(fisher).__name__}; a spec carries "
                         "only plain data: store the weights with store_fisher(fisher, cache_dir) and pass the "
                         "reference it returns")
    check_device(spec.get("device", "auto"))


def _unit_keys(specs: list[dict[str, Any]]) -> list[str]:
    """One :func:`mpstudy.cache.cache_key` per spec: the recipe (every field but the
    :data:`RUNTIME_FIELDS` and the paths), the task's data (``task_fingerprint``: data files' sha256
    and the selected rows), the dense model's weights and tokenizer (hashed, not named by path), the
    Fisher file's sha256, the library code and the torch/transformers versions.

    Each distinct task and dense model is loaded once here to be hashed.
    """
    tasks: dict[str, Any] = {}
    weights: dict[tuple[str, str], dict[str, str]] = {}
    keys = []
    for spec in specs:
        task_id = json.dumps([spec["task"], spec["task_kwargs"]], sort_keys=True, default=str)
        if task_id not in tasks:
            tasks[task_id] = load_task(spec["task"], **spec["task_kwargs"])
        task = tasks[task_id]
        model_id = (str(spec["baseline"]), task_id)
        if model_id not in weights:
            model, tokenizer = load_model(spec["baseline"], task=task)
            weights[model_id] = {"model": weights_hash(model), "tokenizer": tokenizer_hash(tokenizer)}
        recipe = {k: v for k, v in spec.items() if k not in (*RUNTIME_FIELDS, "baseline")}
        recipe["task_kwargs"] = {k: v for k, v in spec["task_kwargs"].items() if k != "data_dir"}
        recipe["fisher"] = spec["fisher"]["sha256"] if spec.get("fisher") is not None else None
        keys.append(cache_key("comparison-unit", recipe, data=task_fingerprint(task), weights=weights[model_id]))
    return keys


def _describe(spec: dict[str, Any]) -> str:
    return f"{spec['task']} {spec['method']} {spec['keep']}"


def run_grid(specs: Iterable[dict[str, Any]], workers: int = 1, cache_dir: str | os.PathLike | None = None,
             progress: bool = True, executor: Executor | None = None) -> list[dict[str, Any]]:
    """Run every unit (:func:`run_unit`); results in ``specs`` order.

    Args:
        specs: unit specs (plain data, see :func:`run_unit`).
        workers: without an ``executor``: 1 runs the units here, one after the other; more run them
            in that many spawned local processes (:func:`mpstudy.grid.local_pool`).
        cache_dir: the cache (default ``mpstudy.cache.default_cache_dir``), on a file system every
            worker sees: finished units (``comparison/<key>.json``) and the teachers' outputs.
        progress: show a progress bar.
        executor: any ``concurrent.futures.Executor`` to run the units on instead: a Dask cluster's
            ``distributed.Client(address).get_executor()``, ``submitit.AutoExecutor(folder)`` for
            SLURM (see :func:`mpstudy.grid.as_executor`)... Its workers must be able to import mpstudy.

    A finished unit is stored under a key covering everything that produced it (``_unit_keys``)
    and read back on the next call: an interrupted grid resumes, a changed spec, data set, dense
    model, library or code recomputes. The worker writes the unit under a lock of its own
    (:class:`mpstudy.grid.UnitLock`), so grids on several machines sharing the cache compute each
    unit once. Out of this process, a unit gets one torch thread unless its spec sets ``threads``;
    each unit seeds its own randomness, so results do not depend on scheduling.

    Raises:
        ValueError: a bad ``workers``, ``workers`` together with an ``executor``, or a spec a worker
            could not run (missing fields, in-memory Fisher weights, an unknown device), before
            anything runs.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    specs = list(specs)
    for i, spec in enumerate(specs):
        _check_spec(i, spec)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    keys = _unit_keys(specs)
    folder = root / "comparison"
    # where run_units runs them: away from this process (one thread each), or here as they are
    todo = sum(not (folder / f"{key}.json").exists() for key in keys)
    away = executor is not None or (workers > 1 and todo > 1)
    sent = [{**({"threads": 1} if away else {}), **spec, "cache_dir": str(root)} for spec in specs]
    return run_units(run_unit, sent, keys, folder, executor=executor, workers=workers, progress=progress,
                     desc="comparison units", describe=_describe)
