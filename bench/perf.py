"""Performance of mpstudy: decomposition time against peers, inference cost against the dense model.

Three measurements, each a JSON record plus a markdown table rendered from it
(:func:`render_markdown`), used by the book's "Performance" chapter:

1. :func:`run_decomposition` — every weight matrix of a BERT-base-sized model (random init: the
   time of an SVD does not depend on the values) is decomposed by each mpstudy factorization and by
   its peers on the same matrix with the same structure, timed alternately, matrix by matrix:

   ==========  ========================================  =========================================
   method      mpstudy                                    peers
   ==========  ========================================  =========================================
   svd         ``factorize.truncated_svd`` (float64)      TensorLy ``svd_interface`` (pytorch backend)
   mpo         ``factorize.mpo_decompose``                TensorLy ``tensor_train_matrix``; TensorLy-Torch
                                                          ``FactorizedLinear.from_linear(factorization="blocktt")``
   tucker      ``mode_eigh`` + ``hosvd`` (the rows cut    TensorLy ``tucker(..., n_iter_max=0)`` (its HOSVD)
               into heads, as ``offline-tucker``)
   kronecker   ``nearest_kronecker_sum`` (closed form)    none (TensorLy has no Kronecker-sum decomposition)
   ==========  ========================================  =========================================

   Every method keeps about half of each matrix's weights (SVD rank ``floor(mn / 2(m+n))``, an MPO
   bond cap, Tucker and Kronecker at compression ratio 2); the peers get exactly the structure
   mpstudy chose (ranks, bond dimensions), so both sides produce the same kind of object.

2. :func:`run_inference` — a model compressed by every registered method (budgets in
   :data:`INFERENCE_BUDGETS`; a method added later gets a guessed budget) against the dense model
   over a grid of batch sizes and sequence lengths: latency (median of round-robin rounds: every
   model runs once per round, so drifts in machine load hit all of them), throughput, peak memory
   (weights plus the forward's transient peak, eval caches included), and the FLOP ratio
   ``dense / compressed`` (``torch.utils.flop_counter``), which is the ideal speed-up. Also the
   SVD layers alone (``LowRankLinear`` against ``nn.Linear`` on the model's own matrices).

3. :func:`evaluate_goals` — the issue's goals checked against the two records.

Everything runs on the device given (``"auto"``: CUDA when available, in bfloat16; else the CPU
in float32) and records it.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from mpstudy.measure import time_interleaved

__all__ = [
    "resolve_device",
    "run_decomposition",
    "run_inference",
    "evaluate_goals",
    "render_markdown",
    "peak_memory",
    "INFERENCE_BUDGETS",
    "DECOMPOSITION_METHODS",
    "GOALS",
]

#: kept fraction of each matrix's weights in the decomposition benchmark
KEEP = 0.5
#: methods of the decomposition benchmark
DECOMPOSITION_METHODS = ("svd", "mpo", "tucker", "kronecker")
#: budgets of the inference benchmark, per registered method (one compressed model per entry);
#: an entry is a dict, or a function ``(model, targets) -> dict`` for budgets that depend on the model.
#: Methods missing here get a guessed budget (:func:`guess_budget`), so new methods join.
INFERENCE_BUDGETS: dict[str, list[dict[str, Any] | Callable[[nn.Module, str], dict[str, Any]]]] = {
    "svd": [{"keep": 0.5}, {"keep": 0.25}],
    "mpo": [{"max_bond": 64}],
    # uniform row importances: the layer (LowRankLinear) and its cost are those of plain SVD
    "fwsvd": [lambda model, targets: {"keep": 0.5, "fisher": uniform_fisher(model, targets)}],
    "offline-svd": [{"keep": 0.5}],
    "offline-kronecker": [{"keep": 0.5}],
    "offline-tucker": [{"keep": 0.5}],
    "offline-prune": [{"keep": 0.5}],
    # one epoch: the weights' values do not change the forward's cost, only the training time
    "offline-ae": [{"keep": 0.5, "epochs": 1}],
}
#: targets tried in turn: every method takes the first its registration accepts (LoBERT's modes
#: replace only Q/K/V or only the FFN)
TARGET_CANDIDATES = ("all-linear", "qkv", "ffn")
#: the issue's goals: (key, statement, threshold)
GOALS = {
    "svd_efficiency": ("SVD-factorized layers reach >= 80 % of the ideal (FLOP-ratio) speed-up at batch 32 x 128 on CPU", 0.8),
    "mpo_eval_ratio": ("MPO in evaluation mode within 10 % of dense (time ratio <= 1.10)", 1.10),
    "decomposition_ratio": ("decomposition no slower than the TensorLy peer on the same matrices (time ratio <= 1)", 1.0),
}


# --------------------------------------------------------------------------- devices and timing


def resolve_device(device: str = "auto", dtype: str | None = None) -> tuple[torch.device, torch.dtype]:
    """``(device, dtype)``: ``"auto"`` is CUDA in bfloat16 when available, else the CPU in float32."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device")
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype is None:
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in dtypes:
        raise ValueError(f"dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    return torch.device(device), dtypes[dtype]


def device_name(device: torch.device) -> str:
    """What the record says the measurement ran on."""
    import platform

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} torch thread(s)"


def _load_average() -> list[float] | None:
    """The machine's 1/5/15-minute load averages (other processes compete for the cores being timed)."""
    import os

    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        return None


def _rel_error(W: torch.Tensor, approx: torch.Tensor) -> float:
    W = W.double()
    return float(torch.linalg.norm(W - approx.double().reshape(W.shape)) / torch.linalg.norm(W))


# --------------------------------------------------------------------------- 1. decomposition


@dataclass
class _Impl:
    """One implementation of a decomposition: ``run()`` is timed, ``dense(out)`` is not."""

    run: Callable[[], Any]
    dense: Callable[[Any], torch.Tensor]


@dataclass
class _Case:
    method: str
    structure: dict[str, Any]
    params: int
    impls: dict[str, _Impl] = field(default_factory=dict)  # the first one is mpstudy's


def bert_base_sized(layers: int = 12, seed: int = 0) -> nn.Module:
    """A BERT-base-sized classifier (hidden 768, FFN 3072, 12 heads, vocabulary 30,522), random init."""
    import transformers

    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= 12:
        raise ValueError(f"layers must be an int in [1, 12] (BERT-base has 12), got {layers!r}")
    torch.manual_seed(seed)
    config = transformers.BertConfig(num_hidden_layers=layers)
    return transformers.BertForSequenceClassification(config).eval()


def decomposition_matrices(model: nn.Module) -> list[tuple[str, str, torch.Tensor]]:
    """``(name, role, weight)`` of every encoder matrix (``all-linear``) and the word embeddings."""
    from mpstudy.targets import resolve_targets

    return [(t.name, t.role, t.module.weight.detach()) for t in resolve_targets(model, "all-linear,word_embeddings")]


def mpo_cap_for_keep(row_dims: list[int], col_dims: list[int], keep: float) -> int:
    """Largest single bond cap whose MPO stores at most ``keep`` of the matrix's entries (at least 1)."""
    from mpstudy.factorize.mpo import mpo_bond_dims, mpo_num_params

    limit = keep * math.prod(row_dims) * math.prod(col_dims)
    lo, hi = 1, max(mpo_bond_dims(row_dims, col_dims))
    while lo < hi:  # the count grows with the cap
        mid = (lo + hi + 1) // 2
        if mpo_num_params(row_dims, col_dims, mid) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _tltorch():
    try:
        import tltorch  # noqa: F401

        return tltorch, None
    except Exception as err:  # noqa: BLE001 - any import failure means "peer unavailable"
        return None, f"{type(err).__name__}: {err}"


def decomposition_cases(W: torch.Tensor, role: str, methods: tuple[str, ...], block: int) -> list[_Case]:
    """The cases of one matrix: per method, mpstudy's implementation and its peers, same structure."""
    import tensorly as tl
    from tensorly.decomposition import tensor_train_matrix, tucker
    from tensorly.tenalg import svd_interface

    from mpstudy.factorize import mpo_decompose, nearest_kronecker_sum, truncated_svd
    from mpstudy.factorize.kronecker import kronecker_plan_for_keep, kronecker_sum_to_dense
    from mpstudy.factorize.shapes import pad_to
    from mpstudy.factorize.svd import rank_for_keep, svd_num_params
    from mpstudy.factorize.tucker import hosvd, mode_eigh, tucker_plan_for_keep, tucker_to_tensor
    from mpstudy.layers.mpo import mpo_shapes
    from mpstudy.layers.tucker_rows import rows_to_blocks

    m, n = W.shape
    cases = []
    if "svd" in methods:
        r = rank_for_keep(m, n, KEEP)
        case = _Case("svd", {"rank": r}, svd_num_params(m, n, r))
        case.impls["mpstudy"] = _Impl(lambda: truncated_svd(W, r), lambda out: out[0] @ out[1])
        case.impls["tensorly"] = _Impl(lambda: svd_interface(W, n_eigenvecs=r), lambda out: (out[0] * out[1]) @ out[2])
        cases.append(case)
    if "mpo" in methods:
        rd, cd = mpo_shapes(m, n)
        Wp = pad_to(W, math.prod(rd), math.prod(cd))  # vocabularies are zero-padded to a round size
        cap = mpo_cap_for_keep(rd, cd, KEEP)
        probe = mpo_decompose(Wp, rd, cd, max_bond=cap)
        bonds = probe.bond_dims
        case = _Case("mpo", {"row_dims": rd, "col_dims": cd, "max_bond": cap, "bond_dims": bonds}, probe.num_params)
        case.impls["mpstudy"] = _Impl(lambda: mpo_decompose(Wp, rd, cd, max_bond=cap), lambda out: out.to_dense()[:m, :n])
        tensor = Wp.reshape(*rd, *cd)
        case.impls["tensorly"] = _Impl(lambda: tensor_train_matrix(tensor, rank=bonds),
                                       lambda out: out.to_matrix()[:m, :n])
        tltorch, _ = _tltorch()
        if tltorch is not None:
            linear = nn.Linear(Wp.shape[1], Wp.shape[0], bias=False, device=W.device, dtype=W.dtype)
            with torch.no_grad():
                linear.weight.copy_(Wp)
            case.impls["tensorly-torch"] = _Impl(
                lambda: tltorch.FactorizedLinear.from_linear(linear, auto_tensorize=False, in_tensorized_features=tuple(cd),
                                                             out_tensorized_features=tuple(rd), rank=bonds,
                                                             factorization="blocktt", bias=False),
                lambda out: out.weight.to_matrix().detach()[:m, :n])
        cases.append(case)
    if "tucker" in methods:
        blk = block if role != "word_embeddings" else n  # as offline-tucker: heads, or the embedding's width
        X = rows_to_blocks(W, blk)
        eig = mode_eigh(X)
        plan = tucker_plan_for_keep(m, n, KEEP, block=blk, spectra=[v for v, _ in eig])
        ranks = list(plan.ranks)
        case = _Case("tucker", {"block": blk, "tensor_shape": list(X.shape), "ranks": ranks}, plan.stored)
        case.impls["mpstudy"] = _Impl(lambda: hosvd(X, ranks, eig=mode_eigh(X)),
                                      lambda out: tucker_to_tensor(*out).reshape(-1, n)[:m])
        case.impls["tensorly"] = _Impl(lambda: tucker(X, rank=ranks, n_iter_max=0),
                                       lambda out: tl.tucker_to_tensor(out).reshape(-1, n)[:m])
        cases.append(case)
    if "kronecker" in methods:
        plan = kronecker_plan_for_keep(m, n, KEEP)
        case = _Case("kronecker", {"p": plan.p, "q": plan.q, "s": plan.s, "t": plan.t, "terms": plan.rank}, plan.stored)
        case.impls["mpstudy"] = _Impl(lambda: nearest_kronecker_sum(W, plan.rank, plan.p, plan.q, plan.s, plan.t),
                                      lambda out: kronecker_sum_to_dense(out[0], out[1], m, n))
        cases.append(case)
    return cases


def run_decomposition(layers: int = 12, methods: tuple[str, ...] = DECOMPOSITION_METHODS, repeats: int = 1,
                      device: str = "auto", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Time every mpstudy decomposition against its peers on every matrix of a BERT-base-sized model.

    Returns a record: ``rows`` (one per matrix, method and implementation: ``seconds`` = median of
    ``repeats`` alternated runs, ``rel_error`` of the result, ``params`` of the structure),
    ``totals`` per method and implementation, ``peers_unavailable``, and the set-up.
    """
    import tensorly as tl

    unknown = sorted(set(methods) - set(DECOMPOSITION_METHODS))
    if unknown or not methods:
        raise ValueError(f"unknown decomposition method(s) {unknown or methods!r}; allowed: {list(DECOMPOSITION_METHODS)}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    dev, _ = resolve_device(device)
    load_start = _load_average()
    tl.set_backend("pytorch")
    model = bert_base_sized(layers).to(dev)
    block = model.config.hidden_size // model.config.num_attention_heads
    matrices = decomposition_matrices(model)
    _, tltorch_error = _tltorch()
    rows: list[dict[str, Any]] = []
    log(f"decomposition: {len(matrices)} matrices x {list(methods)} on {device_name(dev)}")
    with torch.no_grad():
        for name, role, W in matrices:
            for case in decomposition_cases(W, role, tuple(methods), block):
                timing = time_interleaved({k: impl.run for k, impl in case.impls.items()}, repeats=repeats, warmup=0,
                                          device=dev, keep_outputs=True)
                line = []
                for impl_name, impl in case.impls.items():
                    out = timing.outputs[impl_name]  # the last timed run's result, for the error of what was timed
                    seconds = timing.median(impl_name)
                    rows.append({"matrix": name, "role": role, "shape": list(W.shape), "method": case.method,
                                 "impl": impl_name, "structure": case.structure, "params": case.params,
                                 "seconds": seconds, "rel_error": _rel_error(W, impl.dense(out))})
                    line.append(f"{impl_name} {seconds:.3f}s")
                log(f"  {name:50s} {str(tuple(W.shape)):>13} {case.method:>9}: " + ", ".join(line))
    record = {
        "bench": "decomposition", "device": str(dev), "device_name": device_name(dev), "model": "bert-base-sized",
        "layers": layers, "matrices": len(matrices), "methods": list(methods), "repeats": repeats, "keep": KEEP,
        "rows": rows, "totals": decomposition_totals(rows),
        "peers_unavailable": {} if tltorch_error is None else {"tensorly-torch": tltorch_error},
        "peers_not_applicable": {
            "tensorly-torch": "svd (no low-rank matrix layer), tucker (its Tucker layers factorize the tensorized "
                              "weight, a different structure; TuckerTensor.from_tensor calls TensorLy's tucker)",
            "tensorly": "kronecker (no nearest-Kronecker-sum decomposition in TensorLy)",
        },
        "load_average": {"start": load_start, "end": _load_average()},
    }
    return record


def decomposition_totals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method and implementation: total seconds over the matrices, and the ratio mpstudy / peer."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        ours = sum(r["seconds"] for r in mine if r["impl"] == "mpstudy")
        for impl in dict.fromkeys(r["impl"] for r in mine):
            total = sum(r["seconds"] for r in mine if r["impl"] == impl)
            errors = [r["rel_error"] for r in mine if r["impl"] == impl]
            out.append({"method": method, "impl": impl, "matrices": len(errors), "seconds": total,
                        "mean_rel_error": sum(errors) / len(errors),
                        "mpstudy_over_impl": ours / total if impl != "mpstudy" else 1.0})
    return out


# --------------------------------------------------------------------------- 2. inference


def guess_budget(budget_keys: tuple[str, ...]) -> dict[str, Any] | None:
    """A budget keeping about half the weights, for a method with no entry in :data:`INFERENCE_BUDGETS`."""
    for key, value in (("keep", 0.5), ("max_bond", 64), ("rank", 64)):
        if key in budget_keys:
            return {key: value}
    return None


def uniform_fisher(model: nn.Module, targets: str) -> dict[str, torch.Tensor]:
    """FWSVD row importances of 1 for every targeted Linear (plain SVD's factors, FWSVD's layers)."""
    from mpstudy.targets import resolve_targets

    return {t.name: torch.ones(t.module.out_features) for t in resolve_targets(model, targets, module_types=(nn.Linear,))}


def method_budgets(method: str, model: nn.Module, targets: str) -> list[dict[str, Any] | None]:
    """The budgets :data:`INFERENCE_BUDGETS` gives ``method`` (or a guessed one) for ``model``."""
    from mpstudy.methods import METHODS

    entries = INFERENCE_BUDGETS.get(method) or [guess_budget(METHODS[method].budget_keys)]
    return [entry(model, targets) if callable(entry) else entry for entry in entries]


def _scalars(budget: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in budget.items() if isinstance(v, (int, float, str, bool, type(None)))}


def _budget_label(method: str, budget: dict[str, Any]) -> str:
    shown = [f" {k}={v}" for k, v in _scalars(budget).items() if k not in ("epochs",)]
    return method + ("".join(shown) if budget else " (its defaults)")


def compress_any(model: nn.Module, method: str, index: int = 0) -> tuple[dict[str, Any], str, Any]:
    """Compress ``model`` in place with the ``index``-th budget of ``method``, trying
    :data:`TARGET_CANDIDATES` in turn (and, for a method without an entry in
    :data:`INFERENCE_BUDGETS`, its own defaults after the guessed budget). Returns
    ``(budget, targets, report)``; when nothing works, raises a ValueError listing every attempt
    (the model is untouched then: ``compress`` checks before it replaces).
    """
    from mpstudy import compress

    attempts = []
    for targets in TARGET_CANDIDATES:
        budgets = [method_budgets(method, model, targets)[index]]
        if method not in INFERENCE_BUDGETS:
            budgets.append({})
        for budget in budgets:
            if budget is None:
                continue
            try:
                return budget, targets, compress(model, method, targets=targets, **budget)
            except (ValueError, TypeError, KeyError) as err:
                attempts.append(f"{targets} {_scalars(budget)}: {' '.join(str(err).split())[:160]}")
    raise ValueError("; ".join(attempts) or f"no budget known for {method!r}: add it to bench.perf.INFERENCE_BUDGETS")


def compressed_models(dense: nn.Module, methods: list[str] | None = None,
                      log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """One compressed copy of ``dense`` per (method, budget) of :data:`INFERENCE_BUDGETS`.

    Returns entries ``{label, method, budget, targets, model | error, compress_seconds, params}``;
    a method that cannot compress this model is kept with its one-line ``error`` so the table
    shows it.
    """
    from mpstudy import count_parameters
    from mpstudy.methods import METHODS

    names = methods if methods is not None else sorted(METHODS)
    unknown = sorted(set(names) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {sorted(METHODS)}")
    out = []
    for method in names:
        for index in range(len(method_budgets(method, dense, TARGET_CANDIDATES[0]))):
            model = copy.deepcopy(dense)
            t0 = time.perf_counter()
            try:
                budget, targets, _ = compress_any(model, method, index)
            except Exception as err:  # noqa: BLE001 - shown in the table, the benchmark goes on
                entry = {"method": method, "label": method, "error": " ".join(str(err).split())}
                log(f"  {method}: cannot compress ({entry['error']})")
                out.append(entry)
                continue
            entry = {"method": method, "budget": _scalars(budget), "targets": targets,
                     "label": _budget_label(method, budget) + ("" if targets == "all-linear" else f" [{targets}]"),
                     "model": model.eval(), "compress_seconds": time.perf_counter() - t0,
                     "params": count_parameters(model)["stored"]}
            log(f"  {entry['label']}: compressed in {entry['compress_seconds']:.1f} s, {entry['params']:,} parameters")
            out.append(entry)
    return out


@torch.inference_mode()
def peak_memory(model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, float]:
    """Bytes a forward needs: the model's parameters and buffers plus the forward's transient peak.

    Evaluation caches (decoded weights of MPO, Kronecker, Tucker and autoencoder layers) are
    dropped first (``train()`` then ``eval()``), so building them counts. CUDA: the allocator's
    peak above what was allocated before the forward. CPU: the torch profiler's allocation events
    (``profile_memory``), accumulated in time order (allocations inside one operator that are freed
    before it returns are not seen, so this is a lower bound).
    """
    from torch.profiler import ProfilerActivity, profile

    from mpstudy.accounting import count_bytes
    from mpstudy.measure import forward

    model.train()
    model.eval()
    weights = count_bytes(model, buffers=True)["total"]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        forward(model, batch)
        torch.cuda.synchronize(device)
        transient = torch.cuda.max_memory_allocated(device) - before
    else:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            forward(model, batch)
        current = transient = 0
        for event in sorted(prof.events(), key=lambda e: e.time_range.start):
            current += event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
            transient = max(transient, current)
    return {"weights_mib": weights / 2**20, "peak_mib": (weights + transient) / 2**20}


def _batch(tokenizer, batch_size: int, seq_len: int, device: torch.device) -> dict[str, torch.Tensor]:
    from mpstudy.measure import dummy_batch

    return dummy_batch(tokenizer, batch_size=batch_size, seq_len=seq_len, device=device)


@torch.inference_mode()
def svd_layer_rows(model: nn.Module, ratios: list[float], tokens: int, device: torch.device, dtype: torch.dtype,
                   repeats: int) -> list[dict[str, Any]]:
    """``LowRankLinear`` against ``nn.Linear`` on each distinct Linear shape of ``model``'s encoder.

    The dense layer and one factorized layer per ratio run round-robin on the same input, so every
    ratio is measured against the same dense timings (``mpstudy.measure.time_interleaved``, one warm-up
    round). ``ideal`` is the FLOP ratio ``mn / r(m + n)``;
    ``efficiency`` = measured speed-up / ideal. ``count`` is how many matrices of that shape the
    encoder has, so a weighted sum gives the encoder's linear layers as a whole.
    """
    from mpstudy.layers import LowRankLinear
    from mpstudy.targets import resolve_targets

    shapes: dict[tuple[int, int], list[nn.Linear]] = {}
    for t in resolve_targets(model, "all-linear"):
        shapes.setdefault(tuple(t.module.weight.shape), []).append(t.module)
    rows = []
    for (m, n), modules in shapes.items():
        dense = copy.deepcopy(modules[0]).to(device, dtype)
        x = torch.randn(tokens, n, generator=torch.Generator().manual_seed(0)).to(device, dtype)
        lows = {ratio: LowRankLinear.from_dense(copy.deepcopy(modules[0]).float(), keep=ratio).to(device, dtype)
                for ratio in ratios}
        fns = {"dense": lambda: dense(x), **{ratio: (lambda low=low: low(x)) for ratio, low in lows.items()}}
        timing = time_interleaved(fns, repeats=repeats, warmup=1, device=device)
        d = timing.median("dense")
        for ratio, low in lows.items():
            s = timing.median(ratio)
            ideal = m * n / (low.rank * (m + n))
            rows.append({"shape": [m, n], "count": len(modules), "ratio": ratio, "rank": low.rank, "tokens": tokens,
                         "rounds": repeats, "dense_ms": d * 1e3, "svd_ms": s * 1e3, "speedup": d / s, "ideal": ideal,
                         "efficiency": (d / s) / ideal})
    return rows


def run_inference(model_spec: str = "minilm", batch_sizes: tuple[int, ...] = (1, 8, 32), seq_lens: tuple[int, ...] = (32, 128),
                  methods: list[str] | None = None, repeats: int = 5, device: str = "auto", dtype: str | None = None,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Latency, throughput, peak memory and FLOP ratio of every compressed model against dense, on a grid.

    Returns a record with ``models`` (label, method, budget, parameters, compression time or the
    error), ``rows`` (one per model and grid cell: ``median_ms``, ``iqr_ms``, ``tokens_per_s``,
    ``peak_mib``, ``flops``, ``flop_ratio`` = dense / model FLOPs (the ideal speed-up),
    ``speedup`` = dense / model time, ``time_ratio`` = its inverse) and ``svd_layers``.
    """
    from mpstudy import count_parameters, load_model
    from mpstudy.measure import count_flops, forward_latency

    for name, values in (("batch_sizes", batch_sizes), ("seq_lens", seq_lens)):
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
            raise ValueError(f"{name} must be positive ints, got {list(values)!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    from mpstudy.methods import METHODS

    unknown = sorted(set(methods or []) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {sorted(METHODS)}")
    dev, dt = resolve_device(device, dtype)
    load_start = _load_average()
    dense, tokenizer = load_model(model_spec, task="sst2")
    max_len = getattr(dense.config, "max_position_embeddings", None)
    if max_len is not None and max(seq_lens) > max_len:
        raise ValueError(f"seq_lens {list(seq_lens)} exceed the model's {max_len} positions")
    log(f"inference: {model_spec} on {device_name(dev)} ({dt}); compressing")
    entries = compressed_models(dense, methods, log=log)
    models = {"dense": dense.to(dev, dt).eval()}
    for e in entries:
        if "model" in e:
            models[e["label"]] = e["model"].to(dev, dt).eval()
    rows = []
    with torch.inference_mode():
        for bs in batch_sizes:
            for sl in seq_lens:
                batch = _batch(tokenizer, bs, sl, dev)
                timing = forward_latency(models, batch, repeats=repeats, warmup=1)
                # after the warm-up forwards: a cold forward would count building the eval caches
                flops = {label: count_flops(m, batch) for label, m in models.items()}
                base = timing.median("dense")
                for label, m in models.items():
                    med = timing.median(label)
                    mem = peak_memory(m, batch, dev)
                    rows.append({"model": label, "batch_size": bs, "seq_len": sl, "median_ms": med * 1e3,
                                 "iqr_ms": timing.iqr(label) * 1e3, "tokens_per_s": bs * sl / med, "sequences_per_s": bs / med,
                                 **mem, "flops": flops[label], "flop_ratio": flops["dense"] / flops[label],
                                 "speedup": base / med, "time_ratio": med / base})
                log(f"  batch {bs:>3} x {sl:>4}: dense {base * 1e3:.1f} ms; " + ", ".join(
                    f"{r['model']} x{r['time_ratio']:.2f}" for r in rows[-len(models):] if r["model"] != "dense"))
    goal_bs, goal_sl = max(batch_sizes), max(seq_lens)
    svd_ratios = [b["keep"] for b in INFERENCE_BUDGETS["svd"]] if methods is None or "svd" in methods else []
    svd_layers = svd_layer_rows(dense, svd_ratios, goal_bs * goal_sl, dev, dt, max(3 * repeats, 15)) if svd_ratios else []
    return {
        "bench": "inference", "device": str(dev), "device_name": device_name(dev), "dtype": str(dt).removeprefix("torch."),
        "model": model_spec, "targets": "all-linear", "batch_sizes": list(batch_sizes), "seq_lens": list(seq_lens),
        "repeats": repeats, "dense_params": count_parameters(dense)["stored"],
        "models": [{k: v for k, v in e.items() if k != "model"} for e in entries],
        "rows": rows, "svd_layers": svd_layers, "svd_layers_tokens": goal_bs * goal_sl,
        "load_average": {"start": load_start, "end": _load_average()},
    }


# --------------------------------------------------------------------------- 3. goals


def evaluate_goals(decomposition: dict[str, Any] | None, inference: dict[str, Any] | None) -> dict[str, Any]:
    """Check the issue's goals against a decomposition and an inference record (either may be missing).

    * ``svd_efficiency``: for each SVD budget, the speed-up of the encoder's linear layers (the SVD
      layer rows summed over the encoder's matrices) over its ideal, at the largest grid cell
      (batch 32 x 128 by default); also the whole model's, for reference (its ideal counts the
      attention products, which SVD does not touch).
    * ``mpo_eval_ratio``: MPO's time ratio to dense at that cell (and the worst over the grid).
    * ``decomposition_ratio``: mpstudy's total time over each TensorLy peer's.
    """
    rows = []
    if inference is not None:
        bs, sl = max(inference["batch_sizes"]), max(inference["seq_lens"])
        where = f"{inference['device']}, batch {bs} x {sl}, {inference['model']}"
        for ratio in dict.fromkeys(r["ratio"] for r in inference["svd_layers"]):
            layer = [r for r in inference["svd_layers"] if r["ratio"] == ratio]
            dense_ms = sum(r["dense_ms"] * r["count"] for r in layer)
            svd_ms = sum(r["svd_ms"] * r["count"] for r in layer)
            dense_fl = sum(r["shape"][0] * r["shape"][1] * r["count"] for r in layer)
            svd_fl = sum(r["rank"] * (r["shape"][0] + r["shape"][1]) * r["count"] for r in layer)
            eff = (dense_ms / svd_ms) / (dense_fl / svd_fl)
            rows.append({"goal": "svd_efficiency", "subject": f"svd keep={ratio}: encoder linear layers ({where})",
                         "measured": eff, "threshold": GOALS["svd_efficiency"][1], "met": eff >= GOALS["svd_efficiency"][1],
                         "detail": f"speed-up {dense_ms / svd_ms:.2f} of ideal {dense_fl / svd_fl:.2f}"})
            model_row = next((r for r in inference["rows"] if r["model"] == f"svd keep={ratio}"
                              and r["batch_size"] == bs and r["seq_len"] == sl), None)
            if model_row is not None:
                eff = model_row["speedup"] / model_row["flop_ratio"]
                rows.append({"goal": "svd_efficiency", "subject": f"svd keep={ratio}: whole model ({where})",
                             "measured": eff, "threshold": GOALS["svd_efficiency"][1], "met": eff >= GOALS["svd_efficiency"][1],
                             "detail": f"speed-up {model_row['speedup']:.2f} of ideal {model_row['flop_ratio']:.2f}"})
        for label in dict.fromkeys(r["model"] for r in inference["rows"] if r["model"].startswith("mpo")):
            cells = [r for r in inference["rows"] if r["model"] == label]
            cell = next(r for r in cells if r["batch_size"] == bs and r["seq_len"] == sl)
            worst = max(cells, key=lambda r: r["time_ratio"])
            rows.append({"goal": "mpo_eval_ratio", "subject": f"{label}, evaluation mode ({where})",
                         "measured": cell["time_ratio"], "threshold": GOALS["mpo_eval_ratio"][1],
                         "met": cell["time_ratio"] <= GOALS["mpo_eval_ratio"][1],
                         "detail": f"worst cell: x{worst['time_ratio']:.2f} at batch {worst['batch_size']} x {worst['seq_len']}"})
    if decomposition is not None:
        for total in decomposition["totals"]:
            if total["impl"] != "tensorly":
                continue
            ratio = total["mpstudy_over_impl"]
            rows.append({"goal": "decomposition_ratio",
                         "subject": f"{total['method']}: mpstudy / TensorLy, {total['matrices']} matrices of a "
                                    f"{decomposition['layers']}-layer BERT-base ({decomposition['device']})",
                         "measured": ratio, "threshold": GOALS["decomposition_ratio"][1], "met": ratio <= GOALS["decomposition_ratio"][1],
                         "detail": f"{total['seconds']:.1f} s TensorLy"})
    return {"bench": "goals", "goals": {k: v[0] for k, v in GOALS.items()}, "rows": rows,
            "device": (inference or decomposition or {}).get("device")}


# --------------------------------------------------------------------------- markdown


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _load_note(rec: dict[str, Any]) -> str:
    load = rec.get("load_average") or {}
    if not load.get("start") or not load.get("end"):
        return ""
    return f"; 1-minute load average {load['start'][0]} at the start and {load['end'][0]} at the end"


def _f(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def render_markdown(record: dict[str, Any]) -> str:
    """The markdown table(s) of a record written by this module (what the book includes)."""
    kind = record.get("bench")
    if kind == "decomposition":
        return _md_decomposition(record)
    if kind == "inference":
        return _md_inference(record)
    if kind == "goals":
        return _md_goals(record)
    raise ValueError(f"not a bench/perf record (bench={kind!r}); expected 'decomposition', 'inference' or 'goals'")


def _md_decomposition(rec: dict[str, Any]) -> str:
    out = [f"Decomposition time on the {rec['matrices']} matrices of a {rec['layers']}-layer BERT-base-sized model "
           f"({rec['device_name']}; median of {rec['repeats']} alternated run(s) per matrix; each method keeps "
           f"about {rec['keep']:.0%} of the weights){_load_note(rec)}.", ""]
    body = []
    for t in rec["totals"]:
        ratio = "" if t["impl"] == "mpstudy" else _f(t["mpstudy_over_impl"])
        body.append([t["method"], t["impl"], t["matrices"], _f(t["seconds"], 1), _f(t["mean_rel_error"], 4), ratio])
    out.append(_table(["method", "implementation", "matrices", "total s", "mean rel. error", "mpstudy / this"], body))
    out += ["", "Per matrix shape (total seconds over the matrices of that shape):", ""]
    shapes = list(dict.fromkeys((r["method"], tuple(r["shape"])) for r in rec["rows"]))
    impls = list(dict.fromkeys(r["impl"] for r in rec["rows"]))
    body = []
    for method, shape in shapes:
        sel = [r for r in rec["rows"] if r["method"] == method and tuple(r["shape"]) == shape]
        count = len({r["matrix"] for r in sel})
        cells = []
        for impl in impls:
            s = [r["seconds"] for r in sel if r["impl"] == impl]
            cells.append(_f(sum(s), 2) if s else "-")
        body.append([method, f"{shape[0]} x {shape[1]}", count, *cells])
    out.append(_table(["method", "shape", "matrices", *[f"{i} s" for i in impls]], body))
    notes = [f"{k} unavailable: {v}" for k, v in rec.get("peers_unavailable", {}).items()]
    notes += [f"{k} does not apply to {v}" for k, v in rec.get("peers_not_applicable", {}).items()]
    if notes:
        out += [""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def _md_inference(rec: dict[str, Any]) -> str:
    bs, sl = max(rec["batch_sizes"]), max(rec["seq_lens"])
    out = [f"Inference of {rec['model']} compressed by every registered method (targets `{rec['targets']}`), against "
           f"the dense model ({rec['device_name']}, {rec['dtype']}; median of {rec['repeats']} round-robin rounds){_load_note(rec)}.", ""]
    body = []
    for e in rec["models"]:
        label = e["label"]
        if "error" in e:
            body.append([label, "-", "-", "-", "-", "-", f"not compressed: {e['error'][:300]}"])
            continue
        cell = next(r for r in rec["rows"] if r["model"] == label and r["batch_size"] == bs and r["seq_len"] == sl)
        dense = next(r for r in rec["rows"] if r["model"] == "dense" and r["batch_size"] == bs and r["seq_len"] == sl)
        body.append([label, f"{e['params'] / rec['dense_params']:.2f}", _f(cell["flop_ratio"]), _f(cell["speedup"]),
                     _f(cell["speedup"] / cell["flop_ratio"]), _f(cell["peak_mib"] / dense["peak_mib"]), ""])
    out.append(f"At batch {bs} x {sl} tokens (ratios to the dense model; ideal speed-up = FLOP ratio):")
    out.append("")
    out.append(_table(["model", "params", "ideal speed-up", "measured speed-up", "of ideal", "peak memory", "note"], body))
    out += ["", "The whole grid:", ""]
    body = [[r["model"], r["batch_size"], r["seq_len"], _f(r["median_ms"], 1), f"{r['tokens_per_s']:,.0f}",
             _f(r["peak_mib"], 0), _f(r["flop_ratio"]), _f(r["speedup"])] for r in rec["rows"]]
    out.append(_table(["model", "batch", "seq", "ms", "tokens/s", "peak MiB", "ideal speed-up", "speed-up"], body))
    if rec.get("svd_layers"):
        out += ["", f"SVD layers alone (`LowRankLinear` against `nn.Linear`, {rec['svd_layers_tokens']} tokens):", ""]
        body = [[f"{r['shape'][0]} x {r['shape'][1]}", r["count"], r["ratio"], r["rank"], _f(r["dense_ms"]), _f(r["svd_ms"]),
                 _f(r["ideal"]), _f(r["speedup"]), _f(r["efficiency"])] for r in rec["svd_layers"]]
        out.append(_table(["shape (out x in)", "in encoder", "ratio", "rank", "dense ms", "svd ms", "ideal", "speed-up", "of ideal"], body))
    return "\n".join(out) + "\n"


def _md_goals(rec: dict[str, Any]) -> str:
    body = [[rec["goals"][r["goal"]], r["subject"], _f(r["measured"]), r["threshold"], "met" if r["met"] else "**missed**",
             r["detail"]] for r in rec["rows"]]
    return _table(["goal", "measured on", "value", "threshold", "", "detail"], body) + "\n"
