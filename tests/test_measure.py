"""``mpstudy.measure``'s timing primitive, checked by structure only (never by a time): the order the
callables run in, warm-up rounds left out, the thread count fixed, recorded and restored, the
medians and ratios of given times, the wrappers' keys and bad input."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mpstudy.measure import (
    Timing,
    compare_latency,
    forward_latency,
    latency,
    time_interleaved,
)


@pytest.fixture
def two_threads():
    """The test starts at 2 torch threads (so fixing 1 is a change) and leaves the count as it found it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def test_rounds_alternate_and_warmup_is_not_timed():
    log = []
    timing = time_interleaved({"baseline": lambda: log.append("baseline"), "candidate": lambda: log.append("candidate")},
                              repeats=3, warmup=2)
    assert log == ["baseline", "candidate"] * 5  # every round runs both, in the order given
    assert timing.order == ["baseline", "candidate"]
    assert [len(timing.seconds[n]) for n in timing.order] == [3, 3] and (timing.repeats, timing.warmup) == (3, 2)


def test_threads_are_fixed_recorded_and_restored(two_threads):
    seen = []
    timing = time_interleaved({"step": lambda: seen.append(torch.get_num_threads())}, repeats=2, warmup=1, threads=1)
    assert seen == [1, 1, 1] and timing.threads == 1 and torch.get_num_threads() == 2
    assert time_interleaved({"step": lambda: None}, repeats=1).threads == 2  # None: the current count, recorded


def test_threads_are_restored_when_the_callable_fails(two_threads):
    def boom():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        time_interleaved({"step": boom}, repeats=1, threads=1)
    assert torch.get_num_threads() == 2


def test_a_training_step_is_a_callable_and_outputs_of_the_last_round_are_kept():
    layer = nn.Linear(3, 1)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.ones(4, 3)
    steps = []

    def step():
        loss = layer(x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps.append(float(loss.detach()))
        return len(steps)

    timing = time_interleaved({"step": step}, repeats=4, warmup=1, keep_outputs=True)
    assert len(steps) == 5 and timing.outputs == {"step": 5}
    assert steps == sorted(steps, reverse=True)  # it really trained: the loss falls step by step
    assert time_interleaved({"step": lambda: 1}, repeats=1).outputs == {}


def test_medians_and_ratios_of_given_times():
    timing = Timing(seconds={"dense": [2.0, 4.0, 9.0], "svd": [1.0, 1.0, 3.0]}, order=["dense", "svd"], threads=1,
                    repeats=3, warmup=0)
    assert timing.median("dense") == 4.0 and timing.median("svd") == 1.0
    assert timing.ratio("dense", "svd") == 3.0  # median of the per-round ratios 2, 4, 3 (not 4 / 1)
    assert Timing(seconds={"a": [1.0]}, order=["a"], threads=1, repeats=1, warmup=0).iqr("a") == 0.0


class _Logged(nn.Module):
    """A stand-in model whose forward writes its name to a shared log."""

    def __init__(self, name: str, log: list[str]):
        super().__init__()
        self.name, self.log = name, log
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask):
        self.log.append(self.name)
        return input_ids.float() + self.w


def test_model_wrappers_interleave_forwards_in_eval_mode(two_threads):
    log = []
    base, cand = _Logged("base", log), _Logged("cand", log)
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3, dtype=torch.long)}
    out = compare_latency(base, cand, batch, repeats=3, warmup=1, threads=1)
    assert log == ["base", "cand"] * 4 and not base.training and not cand.training
    assert set(out) == {"baseline_ms", "candidate_ms", "speedup", "threads"} and out["threads"] == 1
    assert out["speedup"] == out["baseline_ms"] / out["candidate_ms"]
    log.clear()
    assert set(latency(base, batch, repeats=2, warmup=0)) == {"median_ms", "min_ms", "iqr_ms", "threads"}
    assert log == ["base", "base"]
    log.clear()
    timing = forward_latency({"c": cand, "b": base}, batch, repeats=1, warmup=0)
    assert log == ["cand", "base"] and timing.order == ["c", "b"] and torch.get_num_threads() == 2


@pytest.mark.parametrize("kwargs, match", [
    ({"repeats": 0}, "repeats must be an int >= 1, got 0"),
    ({"repeats": True}, "repeats must be an int >= 1, got True"),
    ({"warmup": -1}, "warmup must be an int >= 0, got -1"),
    ({"threads": 0}, "threads must be an int >= 1, got 0"),
])
def test_bad_counts_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        time_interleaved({"a": lambda: None}, **kwargs)
    with pytest.raises(ValueError, match="at least one callable"):
        time_interleaved({})


def _attention_flops(config, batch: int, seq: int) -> int:
    """Q K^T and P V of every layer, by hand: 2 products of (seq x head_dim) by (head_dim x seq) per head."""
    head_dim = config.hidden_size // config.num_attention_heads
    return config.num_hidden_layers * config.num_attention_heads * 2 * (2 * batch * seq * seq * head_dim)


def test_count_flops_counts_scaled_dot_product_attention_as_eager_attention():
    """torch's counter misses the CPU attention kernel; mpstudy adds it, so SDPA and eager agree and
    the difference from the Linears alone is exactly the attention products derived by hand."""
    import mpstudy
    from mpstudy.measure import count_flops, dummy_batch

    sdpa, tok = mpstudy.load_model("tiny-bert", task="sst2")
    eager, _ = mpstudy.load_model("tiny-bert", task="sst2")
    for module in eager.modules():
        if hasattr(module, "config"):
            module.config._attn_implementation = "eager"
    batch = dummy_batch(tok, batch_size=2, seq_len=16)
    linears = sum(2 * 2 * 16 * m.in_features * m.out_features for n, m in sdpa.named_modules()
                  if isinstance(m, torch.nn.Linear) and not n.startswith(("classifier", "bert.pooler")))
    head = sum(2 * 2 * m.in_features * m.out_features for n, m in sdpa.named_modules()
               if isinstance(m, torch.nn.Linear) and n.startswith(("classifier", "bert.pooler")))
    expected = linears + head + _attention_flops(sdpa.config, 2, 16)
    assert count_flops(sdpa, batch) == count_flops(eager, batch) == expected
    # int8 Linears (quantized::linear_dynamic) count as the float products they replace
    mpstudy.compress(sdpa, "int8", targets="all-linear")
    assert count_flops(sdpa, batch) == expected


def test_count_flops_charges_a_cached_rebuild_once_and_restores_the_mode():
    """An MPO layer rebuilds its dense weight once and caches it in evaluation: per forward it costs
    what the dense model costs; the model's training mode is left as it was."""
    import mpstudy
    from mpstudy.measure import count_flops, dummy_batch

    model, tok = mpstudy.load_model("tiny-bert", task="sst2")
    batch = dummy_batch(tok, batch_size=2, seq_len=16)
    dense = count_flops(model, batch)
    mpstudy.compress(model, "mpo", targets="all-linear", keep=0.5)
    model.train()
    assert count_flops(model, batch) == dense
    assert model.training
    assert count_flops(model, batch, warmup=False) > dense  # the first forward contracts the cores


def test_cost_table_holds_the_one_accounting_and_flops_of_every_model():
    """Counts in the table are the accounting module's; ratios are against the chosen baseline; the
    speed-up interval brackets its median (no timed assertion)."""
    import mpstudy
    from mpstudy.accounting import count_bytes, count_parameters
    from mpstudy.measure import cost_table, count_flops, dummy_batch

    dense, tok = mpstudy.load_model("tiny-bert", task="sst2")
    svd, _ = mpstudy.load_model("tiny-bert", task="sst2")
    mpstudy.compress(svd, "svd", targets="all-linear", keep=0.25)
    batch = dummy_batch(tok, batch_size=2, seq_len=16)
    rows = cost_table({"dense": dense, "svd": svd}, batch, repeats=3, warmup=1, threads=1)
    assert [r["model"] for r in rows] == ["dense", "svd"]
    for row, model in zip(rows, (dense, svd)):
        counts = count_parameters(model)
        assert (row["stored"], row["trainable"], row["nonzero"]) == (counts["stored"], counts["trainable"], counts["nonzero"])
        assert row["bytes"] == count_bytes(model)["total"] and row["threads"] == 1
        assert row["flops"] == count_flops(model, batch)
        assert row["speedup_low"] <= row["speedup"] <= row["speedup_high"]
    assert rows[1]["flop_ratio"] == rows[1]["flops"] / rows[0]["flops"] < 1.0
    with pytest.raises(ValueError, match="baseline 'int8' is not one of"):
        cost_table({"dense": dense}, batch, baseline="int8")
