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
worker processes (one torch thread each), and each finished unit is cached on disk, so an
interrupted grid resumes where it stopped.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from ...accounting import budget_count, count_parameters
from ...cache import default_cache_dir
from ...distill import DistillObjective, teacher_outputs
from ...factorize.budget import BUDGET_TOLERANCE, check_keep, relative_miss
from ...measure import compare_latency, count_flops, dummy_batch
from ...methods import get_method
from ...models import load_model
from ...records import write_json_atomic
from ...surgery import compress
from ...targets import resolve_targets
from ...tasks import load_task
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


def run_unit(spec: dict[str, Any]) -> dict[str, Any]:
    """Compress the dense model of one task with one method at one budget; recover it every way.

    ``spec`` (plain data, so a worker process can receive it): ``task`` (name), ``task_kwargs``
    (for ``mpstudy.tasks.load_task``), ``baseline`` (path of the fine-tuned dense model),
    ``method``, ``keep``, ``seeds``, ``train`` (:class:`mpstudy.train.TrainConfig` fields of the
    recovery runs), ``recovery_rows``, ``alpha``, ``temperature``, ``ae_epochs``, ``fisher`` (a
    ``{module: tensor}`` dict, fwsvd only), ``latency`` (``None`` or ``batch``, ``seq``,
    ``repeats``), ``threads``.

    Returns:
        ``compression`` (see :func:`compress_to_budget`), ``params`` (whole-model
        ``mpstudy.accounting.count_parameters``), ``flops`` and ``dense_flops``, ``latency``
        (``mpstudy.measure.compare_latency`` against the dense model with the unit's ``threads``,
        recorded there, or ``None``) and ``runs``: one row per
        (regime, seed) with ``score`` (the task's main metric) and all ``metrics``.
    """

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    task = load_task(spec["task"], **spec["task_kwargs"])
    teacher, tokenizer = load_model(spec["baseline"], task=task)
    teacher.eval()
    student = copy.deepcopy(teacher)
    compression = compress_to_budget(student, spec["method"], spec["keep"], fisher=spec.get("fisher"),
                                     seed=spec.get("compress_seed", 0), ae_epochs=spec.get("ae_epochs", 10))
    student.eval()
    cfg = dict(spec["train"])
    batch = dummy_batch(tokenizer, batch_size=8, seq_len=cfg.get("max_length", 64))
    out: dict[str, Any] = {"task": spec["task"], "method": spec["method"], "keep": spec["keep"],
                           "compression": compression, "params": count_parameters(student),
                           "dense_params": count_parameters(teacher), "flops": count_flops(student, batch),
                           "dense_flops": count_flops(teacher, batch), "latency": None, "runs": []}
    if spec.get("latency"):
        lat = spec["latency"]
        out["latency"] = {**compare_latency(teacher, student, dummy_batch(tokenizer, lat["batch"], lat["seq"]),
                                            repeats=lat["repeats"], threads=spec.get("threads")),
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
                outputs = teacher_outputs(teacher, tokenizer, sub, max_length=eval_kwargs["max_length"], progress=False)
                objective = DistillObjective(outputs, alpha=spec["alpha"], temperature=spec["temperature"])
            config = TrainConfig(**{**cfg, "seed": seed, "progress": False, "keep_best": False, "device": "cpu"})
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


def _unit_key(spec: dict[str, Any]) -> str:
    fisher = spec.get("fisher")
    digest = None
    if fisher is not None:
        h = hashlib.sha256()
        for name in sorted(fisher):
            h.update(name.encode())
            h.update(fisher[name].detach().cpu().contiguous().numpy().tobytes())
        digest = h.hexdigest()[:16]
    blob = {k: v for k, v in spec.items() if k not in ("fisher", "threads")} | {"fisher": digest}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def run_grid(specs: Iterable[dict[str, Any]], workers: int = 1, cache_dir: str | os.PathLike | None = None,
             progress: bool = True) -> list[dict[str, Any]]:
    """Run every unit (:func:`run_unit`), ``workers`` processes at a time; results in ``specs`` order.

    A finished unit is stored as ``comparison/<key>.json`` under ``cache_dir`` (default
    ``mpstudy.cache.default_cache_dir``), the key hashing the whole spec, and read back on
    the next call: an interrupted grid resumes, a changed spec recomputes. With ``workers > 1``
    the units run in spawned processes (one torch thread each unless a spec sets ``threads``);
    each unit seeds its own randomness, so results do not depend on scheduling.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm.auto import tqdm


    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    specs = list(specs)
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "comparison"
    keys = [_unit_key(s) for s in specs]
    results: list[dict[str, Any] | None] = [None] * len(specs)
    todo = []
    for i, key in enumerate(keys):
        path = folder / f"{key}.json"
        if path.exists():
            results[i] = json.loads(path.read_text())
        else:
            todo.append(i)
    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc="comparison units", disable=not progress)

    def done(i: int, result: dict[str, Any]) -> None:
        result = json.loads(json.dumps(result, default=float))  # what a cached read gives back
        write_json_atomic(folder / f"{keys[i]}.json", result)
        results[i] = result
        bar.update(1)
        bar.set_postfix_str(f"{specs[i]['task']} {specs[i]['method']} {specs[i]['keep']}")

    if workers == 1 or len(todo) <= 1:
        for i in todo:
            done(i, run_unit(specs[i]))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                 initargs=(1,)) as pool:
            futures = {pool.submit(run_unit, {"threads": 1, **specs[i]}): i for i in todo}
            for future in as_completed(futures):
                done(futures[future], future.result())
    bar.close()
    return results  # type: ignore[return-value]
