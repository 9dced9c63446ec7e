"""Measured cost of a model on a batch: latency, FLOPs, peak memory.

Latency is a measurement, not a derivation: a factorized layer that rebuilds its dense weight
every forward saves storage but not time, and only timing shows it. FLOPs come from
``torch.utils.flop_counter`` (matrix products only) and are reported beside the latency.
"""
from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn

__all__ = ["latency", "compare_latency", "count_flops", "dummy_batch"]


def dummy_batch(tokenizer, batch_size: int = 8, seq_len: int = 64, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A fixed batch of ``batch_size`` sequences of ``seq_len`` random (seeded) token ids."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, tokenizer.vocab_size, (batch_size, seq_len), generator=g)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def _forward(model: nn.Module, batch: dict[str, torch.Tensor]) -> Any:
    if getattr(model.config, "is_encoder_decoder", False):
        start = model.config.decoder_start_token_id
        dec = torch.full((batch["input_ids"].shape[0], 1), start, device=batch["input_ids"].device)
        return model(**batch, decoder_input_ids=dec)
    return model(**batch)


@torch.inference_mode()
def latency(model: nn.Module, batch: dict[str, torch.Tensor], repeats: int = 10, warmup: int = 2) -> dict[str, float]:
    """Wall-clock forward time of ``model`` on ``batch``, in milliseconds.

    Returns ``median_ms``, ``min_ms`` and ``iqr_ms`` over ``repeats`` timed runs after ``warmup``
    untimed ones (CUDA is synchronised around each run).
    """
    model.eval()
    sync = torch.cuda.synchronize if next(model.parameters()).is_cuda else (lambda: None)
    for _ in range(warmup):
        _forward(model, batch)
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        _forward(model, batch)
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median_ms": statistics.median(times), "min_ms": min(times), "iqr_ms": q[2] - q[0]}


@torch.inference_mode()
def compare_latency(baseline: nn.Module, candidate: nn.Module, batch: dict[str, torch.Tensor], repeats: int = 10,
                    warmup: int = 2) -> dict[str, float]:
    """Forward time of ``candidate`` against ``baseline`` on the same batch, timed alternately.

    Alternating the two models makes the ratio robust to whatever else the machine is doing
    (load that slows one run slows its neighbour too). Returns ``baseline_ms`` and
    ``candidate_ms`` (medians) and ``speedup`` = baseline / candidate.
    """
    for model in (baseline, candidate):
        model.eval()
        for _ in range(warmup):
            _forward(model, batch)
    pairs = [(latency(baseline, batch, repeats=1, warmup=0)["median_ms"], latency(candidate, batch, repeats=1, warmup=0)["median_ms"])
             for _ in range(repeats)]
    base, cand = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
    return {"baseline_ms": base, "candidate_ms": cand, "speedup": base / cand}


@torch.inference_mode()
def count_flops(model: nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """Floating-point operations of one forward (matrix products, as counted by torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        _forward(model, batch)
    return int(counter.get_total_flops())
