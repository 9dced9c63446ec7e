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
(``mpstudy.factorize.budget.CR_TOLERANCE``) or refuse with an error naming the budget.

=====================  ======================================================================
``svd``                truncated SVD of each matrix (rank ``floor(keep * m n / (m + n))``)
``fwsvd``              Fisher-weighted SVD (row importances from squared task gradients)
``mpo``                MPO of each matrix, one bond cap for the whole encoder, found by search
``tucker``             Tucker of each matrix's rows cut into heads (offline-tucker, separated)
``falcon``             FALCON rows layout per module type across layers; ``k`` per type chosen
                       to minimize the total squared error within the budget
``kronecker``          nearest sum of Kronecker products per matrix (offline-kronecker)
``autoencoder``        row autoencoder per matrix (offline-ae)
``magnitude``          l1-unstructured pruning of each matrix (``torch.nn.utils.prune``)
``heads``              structured pruning: the lowest-scoring attention heads and FFN neurons,
                       the same kept fraction of each, physically removed
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
import itertools
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from ...cache import default_cache_dir
from ...distill import DistillObjective, teacher_outputs
from ...factorize.budget import CR_TOLERANCE, relative_miss
from ...factorize.falcon import falcon_max_k, falcon_num_params, falcon_slices
from ...factorize.mpo import mpo_num_params
from ...layers.mpo import mpo_shapes
from ...layers.stacked import falcon_group
from ...measure import compare_latency, count_flops, dummy_batch
from ...models import load_model
from ...prune import (
    attention_num_heads,
    prunable_modules,
    prune_attention,
    select_linear,
)
from ...records import write_json_atomic
from ...surgery import compress, count_parameters, set_submodule
from ...targets import resolve_targets
from ...tasks import load_task
from ...train import TrainConfig, evaluate, train

__all__ = [
    "COMPARED_METHODS",
    "REGIMES",
    "ENCODER_LINEAR",
    "encoder_linear_names",
    "linear_weight_counts",
    "compress_to_budget",
    "mpo_bond_for_budget",
    "falcon_allocation",
    "prune_ffn_neurons",
    "prune_heads_and_neurons",
    "recovery_task",
    "pareto_front",
    "run_unit",
    "run_grid",
]

#: the methods compared, in the order tables show them
COMPARED_METHODS = ("svd", "fwsvd", "mpo", "tucker", "falcon", "kronecker", "autoencoder", "magnitude", "heads")
#: recovery regimes after compression
REGIMES = ("none", "finetune", "kd")
#: the targets whose weights the budget counts
ENCODER_LINEAR = "all-linear"
#: methods whose budget counts non-zero numbers (their masked weights are stored dense)
NONZERO_BUDGET = ("magnitude",)


def _check_keep(keep: Any) -> float:
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep < 1:
        raise ValueError(f"keep (the fraction of the encoder's Linear weights kept) must be a number in (0, 1), got {keep!r}")
    return float(keep)


# --------------------------------------------------------------------------- accounting


def encoder_linear_names(model: nn.Module) -> list[str]:
    """Names of the encoder's Linear modules the budget covers (Q, K, V, O, FFN in/out of every layer)."""
    return [t.name for t in resolve_targets(model, ENCODER_LINEAR, module_types=(nn.Linear,))]


def linear_weight_counts(model: nn.Module, names: Sequence[str]) -> dict[str, int]:
    """Numbers held in place of the weights of modules ``names`` (their output biases excluded).

    Whatever a module became (two thin Linears, MPO cores, a share of a FALCON basis, a row
    autoencoder with its decoder, a pruned Linear), every parameter under it counts, each shared
    tensor once, except the module's output bias, which every method keeps dense: the parameter
    named ``bias`` at any depth outside a ``shared`` submodule (a shared decoder's biases are
    numbers the method stores). ``nonzero`` reads a ``torch.nn.utils.prune`` weight through its mask.

    Returns:
        ``{"stored": ..., "nonzero": ...}``.
    """
    seen: set[int] = set()
    stored = nonzero = 0
    for name in names:
        module = model.get_submodule(name)
        for pname, p in module.named_parameters(remove_duplicate=False):
            if id(p) in seen or (pname.rsplit(".", 1)[-1] == "bias" and not pname.startswith("shared.")):
                continue
            seen.add(id(p))
            stored += p.numel()
            owner_name, _, leaf = pname.rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            effective = getattr(owner, leaf[: -len("_orig")]) if leaf.endswith("_orig") else p
            nonzero += int(torch.count_nonzero(effective.detach()))
    return {"stored": stored, "nonzero": nonzero}


# --------------------------------------------------------------------------- budgets per method


def mpo_bond_for_budget(model: nn.Module, keep: float, names: Sequence[str] | None = None,
                        num_cores: int = 5) -> tuple[int, float]:
    """The one bond cap whose MPOs of all ``names`` store closest to ``keep`` of their weights.

    Counts come from the shapes alone (``mpstudy.factorize.mpo.mpo_num_params`` with the
    default ``mpstudy.layers.mpo.mpo_shapes``), so no decomposition runs during the search.

    Returns:
        ``(max_bond, kept_fraction)``.
    """
    keep = _check_keep(keep)
    names = list(names) if names is not None else encoder_linear_names(model)
    shapes = [model.get_submodule(n).weight.shape for n in names]
    dims = [mpo_shapes(rows, cols, num_cores) for rows, cols in shapes]
    dense = sum(rows * cols for rows, cols in shapes)

    def kept(bond: int) -> float:
        return sum(mpo_num_params(r, c, bond) for r, c in dims) / dense

    # kept(bond) never decreases with the cap and stops growing at the largest full bond: bisect
    # for the first cap that reaches the budget, then take it or the one below, whichever is closer.
    lo, hi = 1, max(max(min(math.prod(r[:i]) * math.prod(c[:i]), math.prod(r[i:]) * math.prod(c[i:]))
                        for i in range(1, num_cores)) for r, c in dims)
    while lo < hi:
        mid = (lo + hi) // 2
        if kept(mid) >= keep:
            hi = mid
        else:
            lo = mid + 1
    best = min({max(1, lo - 1), lo}, key=lambda b: (abs(kept(b) - keep), b))
    return best, kept(best)


def falcon_allocation(model: nn.Module, keep: float, names: Sequence[str] | None = None,
                      layout: str = "rows") -> dict[str, Any]:
    """Products per slice ``k`` for each module type (a role stacked across layers) at a budget.

    Each type's stack ``(L, R, C)`` is fitted slice by slice; the error of keeping ``k`` products
    is the sum of the squared singular values past ``k`` of every slice matrix (Eckart–Young),
    so every allocation's total error is known before fitting. Among the allocations whose stored
    numbers land within 5 % of ``keep`` (and save something on every type), the one with the
    least total squared error wins: an exhaustive search over at most ``6^types`` choices.

    Returns:
        ``{"k": {type: k}, "stacks": {type: [module names]}, "kept": fraction, "sq_error": float}``.
    """
    keep = _check_keep(keep)
    names = list(names) if names is not None else encoder_linear_names(model)
    targets = {t.name: t for t in resolve_targets(model, ENCODER_LINEAR, module_types=(nn.Linear,))}
    stacks: dict[str, list[str]] = {}
    for name in names:
        t = targets[name]
        stacks.setdefault(t.role, []).append(name)
    options: dict[str, list[tuple[int, int, float]]] = {}  # type -> [(k, stored, squared error)]
    dense = 0
    for role, members in stacks.items():
        members.sort(key=lambda n: targets[n].layer)
        X = torch.stack([model.get_submodule(n).weight.detach().double() for n in members])
        dense += X.numel()
        s2 = torch.linalg.svdvals(falcon_slices(X, layout)).pow(2)  # (slices, min(T, C))
        tail = s2.flip(-1).cumsum(-1).flip(-1)  # tail[:, i] = sum of s2[:, i:]
        full = X.numel()
        choices = []
        for k in range(1, falcon_max_k(tuple(X.shape), layout) + 1):
            stored = falcon_num_params(tuple(X.shape), k, layout)
            err = float(tail[:, k].sum()) if k < tail.shape[1] else 0.0
            if stored < full:
                choices.append((k, stored, err))
        options[role] = choices
    target = keep * dense
    best = None
    for combo in itertools.product(*options.values()):
        stored = sum(c[1] for c in combo)
        if relative_miss(stored, target) > CR_TOLERANCE:
            continue
        err = sum(c[2] for c in combo)
        if best is None or (err, stored) < (best[0], best[1]):
            best = (err, stored, combo)
    if best is None:
        nearest = sorted({sum(c[1] for c in combo) / dense for combo in itertools.product(*options.values())},
                         key=lambda f: abs(f - keep))[:3]
        raise ValueError(f"falcon cannot keep {keep:g} of the encoder weights within {CR_TOLERANCE:.0%}; "
                         f"nearest allocations keep {[round(f, 3) for f in nearest]}")
    return {"k": {role: c[0] for role, c in zip(options, best[2])}, "stacks": stacks, "kept": best[1] / dense,
            "sq_error": best[0]}


def prune_ffn_neurons(ffn_in: nn.Linear, ffn_out: nn.Linear, keep: float) -> tuple[nn.Linear, nn.Linear, list[int]]:
    """Remove the FFN's lowest-scoring intermediate neurons; returns new ``(ffn_in, ffn_out, kept)``.

    A neuron ``j`` is row ``j`` of ``ffn_in`` (and its bias) and column ``j`` of ``ffn_out``;
    its score is the l1 norm of both (the same weight-magnitude criterion as
    :func:`mpstudy.prune.head_scores`). ``round(keep * d_ff)`` neurons stay (at least one).
    """
    keep = _check_keep(keep)
    if ffn_in.out_features != ffn_out.in_features:
        raise ValueError(f"ffn_in has {ffn_in.out_features} outputs but ffn_out takes {ffn_out.in_features} inputs")
    score = ffn_in.weight.detach().abs().sum(1) + ffn_out.weight.detach().abs().sum(0)
    n_keep = max(1, round(keep * ffn_in.out_features))
    kept = sorted(torch.topk(score, n_keep).indices.tolist())
    index = torch.tensor(kept, dtype=torch.long)
    return select_linear(ffn_in, index, dim=0), select_linear(ffn_out, index, dim=1), kept


def prune_heads_and_neurons(model: nn.Module, keep: float) -> dict[str, Any]:
    """Structured pruning in place: keep ``keep`` of every layer's heads and FFN neurons.

    Heads go by ``mpstudy.prune.prune_attention`` (rounded to whole heads), neurons by
    ``prune_ffn_neurons``. Returns the removed heads and the kept neuron count per layer.
    """
    keep = _check_keep(keep)
    heads, kept_heads = {}, {}
    for pm in prunable_modules(model):
        if pm.kind == "attention":
            heads[pm.name] = prune_attention(pm.module, keep)
            kept_heads[pm.name] = attention_num_heads(pm.module)
    ffn = resolve_targets(model, "ffn", module_types=(nn.Linear,))
    by_layer: dict[tuple[str, int], dict[str, Any]] = {}
    for t in ffn:
        by_layer.setdefault((t.stack, t.layer), {})[t.role] = t
    neurons = {}
    for pair in by_layer.values():
        new_in, new_out, kept = prune_ffn_neurons(pair["ffn_in"].module, pair["ffn_out"].module, keep)
        set_submodule(model, pair["ffn_in"].name, new_in)
        set_submodule(model, pair["ffn_out"].name, new_out)
        neurons[pair["ffn_in"].name] = len(kept)
    return {"removed_heads": heads, "kept_heads": kept_heads, "kept_neurons": neurons}


@torch.no_grad()
def compress_to_budget(model: nn.Module, method: str, keep: float, fisher=None, seed: int = 0,
                       ae_epochs: int = 10) -> dict[str, Any]:
    """Compress ``model``'s encoder Linears in place so ``keep`` of their weights remain.

    Args:
        model: a BERT-family classifier (the targets are ``ENCODER_LINEAR``).
        method: one of ``COMPARED_METHODS``.
        keep: fraction of the encoder's Linear weights kept, in (0, 1).
        fisher: row importances for ``fwsvd`` (:func:`mpstudy.fisher.estimate_fisher`).
        seed: seeds the methods that draw random numbers (the autoencoder's initialisation).
        ae_epochs: training epochs of each row autoencoder.

    Returns:
        ``method``, ``keep`` (requested), ``kept`` (achieved, stored or non-zero as the method's
        budget counts), ``stored``, ``nonzero``, ``dense`` (weights counted), ``structure`` (the
        method's discrete choice) and ``seconds``.

    Raises:
        ValueError: an unknown method or a bad ``keep`` (before anything changes), or an achieved
            budget more than 5 % from the request.
    """
    keep = _check_keep(keep)
    if method not in COMPARED_METHODS:
        raise ValueError(f"unknown method {method!r}; compared methods: {list(COMPARED_METHODS)}")
    if method == "fwsvd" and fisher is None:
        raise ValueError("method 'fwsvd' needs fisher= (mpstudy.fisher.estimate_fisher on the task)")
    names = encoder_linear_names(model)
    dense = sum(model.get_submodule(n).weight.numel() for n in names)
    cr = 1 / keep
    start = time.perf_counter()
    structure: dict[str, Any] = {}
    if method == "svd":
        report = compress(model, "svd", targets=ENCODER_LINEAR, ratio=keep)
        structure = {"ranks": sorted({m["rank"] for m in report.modules})}
    elif method == "fwsvd":
        report = compress(model, "fwsvd", targets=ENCODER_LINEAR, ratio=keep, fisher=fisher)
        structure = {"ranks": sorted({m["rank"] for m in report.modules})}
    elif method == "mpo":
        bond, _ = mpo_bond_for_budget(model, keep, names)
        compress(model, "mpo", targets=ENCODER_LINEAR, max_bond=bond)
        structure = {"max_bond": bond}
    elif method in ("tucker", "kronecker", "magnitude"):
        offline = {"tucker": "offline-tucker", "kronecker": "offline-kronecker", "magnitude": "offline-prune"}[method]
        compress(model, offline, targets=ENCODER_LINEAR, cr=cr, mode="separated")
        structure = {"cr": cr, "mode": "separated"}
    elif method == "autoencoder":
        compress(model, "offline-ae", targets=ENCODER_LINEAR, cr=cr, mode="separated", epochs=ae_epochs,
                 batch_size=32, lr=3e-3, seed=seed)
        structure = {"cr": cr, "mode": "separated", "epochs": ae_epochs, "seed": seed}
    elif method == "falcon":
        plan = falcon_allocation(model, keep, names)
        for role, members in plan["stacks"].items():
            modules = [model.get_submodule(n) for n in members]
            layers, _ = falcon_group(modules, "rows", plan["k"][role], f"falcon:{role}")
            for name, layer, old in zip(members, layers, modules):
                layer.train(old.training)
                set_submodule(model, name, layer)
        structure = {"k": plan["k"], "layout": "rows", "stack": "vertical"}
    elif method == "heads":
        info = prune_heads_and_neurons(model, keep)
        structure = {"heads_kept": sorted(set(info["kept_heads"].values())),
                     "neurons_kept": sorted(set(info["kept_neurons"].values()))}
    seconds = time.perf_counter() - start
    counts = linear_weight_counts(model, names)
    kept = (counts["nonzero"] if method in NONZERO_BUDGET else counts["stored"]) / dense
    if relative_miss(kept, keep) > CR_TOLERANCE:
        raise ValueError(f"{method} kept {kept:.3f} of the encoder weights for a budget of keep={keep:g} "
                         f"(tolerance {CR_TOLERANCE:.0%})")
    return {"method": method, "keep": keep, "kept": kept, "dense": dense, **counts, "structure": structure,
            "seconds": seconds}


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
        ``mpstudy.surgery.count_parameters``), ``flops`` and ``dense_flops``, ``latency``
        (``compare_latency`` against the dense model, or ``None``) and ``runs``: one row per
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
                                            repeats=lat["repeats"]), "batch": lat["batch"], "seq": lat["seq"]}
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
