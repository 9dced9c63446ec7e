"""Measured cost of a model on a batch: latency, FLOPs; and the one timing primitive behind every timing.

Latency is a measurement, not a derivation: a factorized layer that rebuilds its dense weight
every forward saves storage but not time, and only timing shows it. FLOPs come from
``torch.utils.flop_counter`` (matrix products only) and are reported beside the latency.

Every time in the library, the notebooks and ``bench/`` is taken by :func:`time_interleaved`:
the callables being compared run round-robin (every round runs each once, in the order given),
so a slow stretch of a shared machine slows the neighbours too and ratios stay honest; results
are medians over rounds; the torch thread count is fixed for the timing (and restored after) and
recorded. :func:`latency`, :func:`compare_latency` and :func:`forward_latency` are that primitive
applied to model forwards; a training step (forward, backward, optimizer step) is timed by
passing it as the callable.
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .accounting import count_bytes, count_parameters

__all__ = ["Timing", "time_interleaved", "forward", "latency", "compare_latency", "forward_latency", "count_flops",
           "dummy_batch", "cost_table"]


def dummy_batch(tokenizer, batch_size: int = 8, seq_len: int = 64, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A fixed batch of ``batch_size`` sequences of ``seq_len`` random (seeded) token ids."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, tokenizer.vocab_size, (batch_size, seq_len), generator=g)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def forward(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> Any:
    """One forward of ``model`` on ``batch``; an encoder-decoder gets one decoder start token per row."""
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        start = model.config.decoder_start_token_id
        dec = torch.full((batch["input_ids"].shape[0], 1), start, device=batch["input_ids"].device)
        return model(**batch, decoder_input_ids=dec)
    return model(**batch)


# --------------------------------------------------------------------------- the primitive


@dataclass
class Timing:
    """What :func:`time_interleaved` measured.

    Attributes:
        seconds: name -> wall-clock seconds of each timed round; ``seconds[name][i]`` is round ``i``,
            in which every callable ran once, in ``order``.
        order: the names in the order each round ran them.
        threads: torch threads during the timing.
        repeats, warmup: timed rounds, and untimed rounds run before them.
        outputs: name -> what the callable returned in the last round (with ``keep_outputs`` only).
    """

    seconds: dict[str, list[float]]
    order: list[str]
    threads: int
    repeats: int
    warmup: int
    outputs: dict[str, Any] = field(default_factory=dict, repr=False)

    def median(self, name: str) -> float:
        """Median seconds of ``name`` over the rounds."""
        return statistics.median(self.seconds[name])

    def iqr(self, name: str) -> float:
        """Interquartile range of ``name``'s seconds (0 for one round)."""
        ts = self.seconds[name]
        if len(ts) < 2:
            return 0.0
        q = statistics.quantiles(ts, n=4)
        return q[2] - q[0]

    def ratio(self, numerator: str, denominator: str) -> float:
        """Median over rounds of ``numerator``'s time divided by ``denominator``'s in the same round."""
        return statistics.median(a / b for a, b in zip(self.seconds[numerator], self.seconds[denominator]))


def _check_count(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    return value


def time_interleaved(calls: Mapping[str, Callable[[], Any]], repeats: int = 10, warmup: int = 2,
                     threads: int | None = None, device: str | torch.device | None = None,
                     keep_outputs: bool = False) -> Timing:
    """Time each callable of ``calls`` round-robin: ``warmup`` untimed rounds, then ``repeats`` timed ones.

    Every round runs every callable once, in the order of ``calls``, so whatever else the machine
    is doing hits neighbours alike and per-round ratios (``Timing.ratio``) cancel it.

    Args:
        calls: name -> a callable taking no argument (a forward, a training step, a decomposition).
        repeats: timed rounds (>= 1).
        warmup: untimed rounds before them (>= 0), so caches and lazy initialisation are not timed.
        threads: torch threads to time with, set for the call and restored after; ``None`` keeps
            the current count. Either way the count used is recorded.
        device: a CUDA device is synchronised before and after each call, so the time is the
            kernels', not the launch's.
        keep_outputs: keep each callable's return value of the last round in ``Timing.outputs``.

    Returns:
        A :class:`Timing`.
    """
    if not calls:
        raise ValueError("time_interleaved needs at least one callable to time, got none")
    _check_count("repeats", repeats, 1)
    _check_count("warmup", warmup, 0)
    if threads is not None:
        _check_count("threads", threads, 1)
    cuda = device is not None and torch.device(device).type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        used = torch.get_num_threads()
        seconds: dict[str, list[float]] = {name: [] for name in calls}
        outputs: dict[str, Any] = {}
        for round_ in range(warmup + repeats):
            last = round_ == warmup + repeats - 1
            for name, fn in calls.items():
                sync()
                t0 = time.perf_counter()
                out = fn()
                sync()
                elapsed = time.perf_counter() - t0
                if round_ >= warmup:
                    seconds[name].append(elapsed)
                if keep_outputs and last:
                    outputs[name] = out
                del out
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
    return Timing(seconds=seconds, order=list(calls), threads=used, repeats=repeats, warmup=warmup, outputs=outputs)


# --------------------------------------------------------------------------- forwards of models


def _device(model: nn.Module) -> torch.device | None:
    p = next(model.parameters(), None)
    return p.device if p is not None else None


@torch.inference_mode()
def forward_latency(models: Mapping[str, nn.Module], batch: Mapping[str, torch.Tensor], repeats: int = 10,
                    warmup: int = 2, threads: int | None = None) -> Timing:
    """Forward time of several models on one batch, in evaluation mode, timed round-robin
    (:func:`time_interleaved`)."""
    batch = dict(batch)
    for model in models.values():
        model.eval()
    device = next((d for d in map(_device, models.values()) if d is not None), None)
    calls = {name: (lambda m=m: forward(m, batch)) for name, m in models.items()}
    return time_interleaved(calls, repeats=repeats, warmup=warmup, threads=threads, device=device)


def latency(model: nn.Module, batch: Mapping[str, torch.Tensor], repeats: int = 10, warmup: int = 2,
            threads: int | None = None) -> dict[str, float]:
    """Wall-clock forward time of ``model`` on ``batch``, in milliseconds.

    Returns ``median_ms``, ``min_ms`` and ``iqr_ms`` over ``repeats`` timed runs after ``warmup``
    untimed ones, and the torch ``threads`` used.
    """
    timing = forward_latency({"model": model}, batch, repeats=repeats, warmup=warmup, threads=threads)
    return {"median_ms": timing.median("model") * 1e3, "min_ms": min(timing.seconds["model"]) * 1e3,
            "iqr_ms": timing.iqr("model") * 1e3, "threads": timing.threads}


def compare_latency(baseline: nn.Module, candidate: nn.Module, batch: Mapping[str, torch.Tensor], repeats: int = 10,
                    warmup: int = 2, threads: int | None = None) -> dict[str, float]:
    """Forward time of ``candidate`` against ``baseline`` on the same batch, timed alternately.

    Returns ``baseline_ms`` and ``candidate_ms`` (medians), ``speedup`` = baseline / candidate
    (of the medians) and the torch ``threads`` used.
    """
    timing = forward_latency({"baseline": baseline, "candidate": candidate}, batch, repeats=repeats, warmup=warmup,
                             threads=threads)
    base, cand = timing.median("baseline"), timing.median("candidate")
    return {"baseline_ms": base * 1e3, "candidate_ms": cand * 1e3, "speedup": base / cand, "threads": timing.threads}


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of scaled-dot-product attention from its shapes (torch's own formula for the GPU kernels)."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _quantized_linear_flops(input_shape, packed_params, *args, out_shape=None, **kwargs) -> int:
    """Multiply-adds (x2) of a dynamically quantized Linear, ``(..., in) -> (..., out)``: as many as the
    float Linear it replaces (they are integer operations, counted alike so int8 rows compare)."""
    return 2 * math.prod(input_shape[:-1]) * input_shape[-1] * out_shape[-1]


def _cpu_ops() -> dict:
    """Kernels torch's FlopCounterMode does not count. Attention: it knows the GPU kernels only; on the
    CPU, ``F.scaled_dot_product_attention`` runs ``_scaled_dot_product_flash_attention_for_cpu``, whose
    two matrix products (``Q K^T`` and ``P V``) would otherwise be missing from every count. int8: the
    ``quantized::linear_dynamic`` products of :class:`~mpstudy.layers.int8.Int8Linear` (an int8 model
    counted 6 % of its float twin's FLOPs without it)."""
    ops = {}
    attention = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if attention is not None:
        ops[attention] = _sdpa_flops
    quantized = getattr(getattr(torch.ops, "quantized", None), "linear_dynamic", None)
    if quantized is not None:
        ops[quantized] = _quantized_linear_flops
    return ops


@torch.inference_mode()
def count_flops(model: nn.Module, batch: Mapping[str, torch.Tensor], warmup: bool = True) -> int:
    """Floating-point operations of one forward: every matrix product, attention's included.

    Counted by torch's ``FlopCounterMode`` (products and attention kernels; elementwise work is not
    counted), with the CPU attention kernel and the int8 products added (``_cpu_ops``), so a model with
    scaled-dot-product attention counts the same as with eager attention. With ``warmup`` (the
    default) one uncounted forward runs first: a layer that rebuilds its dense weight once and
    caches it in evaluation (MPO, the decoded layers) pays that once, not per forward, and
    counting the first forward would charge it to every one. The model is counted in eval mode
    (its mode is restored afterwards).
    """
    from torch.utils.flop_counter import FlopCounterMode

    batch = dict(batch)
    was_training = model.training
    model.eval()  # the cost of inference: no dropout, evaluation caches in use
    try:
        if warmup:
            forward(model, batch)
        counter = FlopCounterMode(display=False, custom_mapping=_cpu_ops())
        with counter:
            forward(model, batch)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------- the whole cost of a model


def cost_table(models: Mapping[str, nn.Module], batch: Mapping[str, torch.Tensor], baseline: str | None = None,
               repeats: int = 10, warmup: int = 2, threads: int | None = None) -> list[dict[str, Any]]:
    """One row per model of everything a model costs, in the study's one accounting and one timer.

    Each row: ``model``; ``stored``, ``trainable``, ``nonzero`` parameters and ``bytes``
    (:mod:`mpstudy.accounting`); ``flops`` of one forward on ``batch`` (:func:`count_flops`);
    ``latency_ms`` (median over ``repeats`` rounds of :func:`forward_latency`, all models timed
    round-robin) and ``threads``. Against ``baseline`` (a key of ``models``; default: the first):
    ``flop_ratio`` (model / baseline), ``speedup`` (the median over rounds of baseline time /
    model time in the same round) and ``speedup_low``/``speedup_high``, the 2.5 % and 97.5 %
    quantiles of those per-round ratios: the run-to-run spread a timing difference must exceed
    before it is a finding (:mod:`mpstudy.stats` decides with it).

    Works for any ``nn.Module`` that :func:`forward` can run (Hugging Face encoders, classifiers
    and encoder-decoders).
    """
    import numpy as np

    if not models:
        raise ValueError("cost_table needs at least one model, got none")
    names = list(models)
    baseline = names[0] if baseline is None else baseline
    if baseline not in models:
        raise ValueError(f"baseline {baseline!r} is not one of the models {names}")
    timing = forward_latency(dict(models), batch, repeats=repeats, warmup=warmup, threads=threads)
    flops = {name: count_flops(model, batch) for name, model in models.items()}
    rows = []
    for name, model in models.items():
        counts = count_parameters(model)
        ratios = np.array(timing.seconds[baseline]) / np.array(timing.seconds[name])
        rows.append({
            "model": name, "stored": counts["stored"], "trainable": counts["trainable"], "nonzero": counts["nonzero"],
            "bytes": count_bytes(model)["total"], "flops": flops[name], "flop_ratio": flops[name] / flops[baseline],
            "latency_ms": timing.median(name) * 1e3, "speedup": float(np.median(ratios)),
            "speedup_low": float(np.quantile(ratios, 0.025)), "speedup_high": float(np.quantile(ratios, 0.975)),
            "threads": timing.threads,
        })
    return rows
