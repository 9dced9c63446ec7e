"""mpstudy.train under `accelerate launch` on 2 CPU processes (gloo) matches one process at the same global batch.

The script (tests/ddp_script.py) is the same for both runs: `train` detects the launch and trains
through accelerate's DistributedDataParallel. Two ranks must end bit-identical to each other, and
match the single process up to floating-point summation order: weights, per-step losses and learning
rates, dev metrics and the best step. A second pair of runs does the same in bf16 with length-bucketed
batches (matching one process within bf16 rounding).
"""
import os
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "ddp_script.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], timeout: int = 300) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _single_and_launched(tmp_path_factory, *args: str):
    single, ddp = tmp_path_factory.mktemp("single"), tmp_path_factory.mktemp("ddp")
    _run([sys.executable, str(SCRIPT), str(single), *args])
    accelerate = Path(sys.executable).with_name("accelerate")
    cli = [str(accelerate)] if accelerate.exists() else [sys.executable, "-m", "accelerate.commands.accelerate_cli"]
    # --multi_gpu selects accelerate's torch.distributed launcher; without GPUs the ranks run on the CPU (gloo)
    _run(cli + ["launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                "--dynamo_backend", "no", "--main_process_port", str(_free_port()), str(SCRIPT), str(ddp), *args])
    load = lambda p: torch.load(p, weights_only=False)  # noqa: E731
    return load(single / "rank0.pt"), load(ddp / "rank0.pt"), load(ddp / "rank1.pt")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return _single_and_launched(tmp_path_factory)


@pytest.fixture(scope="module")
def bf16_runs(tmp_path_factory):
    return _single_and_launched(tmp_path_factory, "bf16", "2")


def test_ranks_are_identical(runs):
    _, rank0, rank1 = runs
    assert rank0["world"] == rank1["world"] == 2
    assert all(torch.equal(rank0["state"][k], rank1["state"][k]) for k in rank0["state"])
    assert rank0["history"] == rank1["history"] and rank0["best"] == rank1["best"]


def test_two_processes_match_one(runs):
    single, ddp, _ = runs
    assert single["world"] == 1
    for k, v in single["state"].items():
        assert torch.allclose(v, ddp["state"][k], rtol=1e-4, atol=1e-6), k
    assert len(single["history"]) == len(ddp["history"]) == 6
    for one, two in zip(single["history"], ddp["history"]):
        assert one.keys() == two.keys()
        for key in one:
            assert one[key] == pytest.approx(two[key], rel=1e-5, abs=1e-7), (one["step"], key)
    assert single["best"] == ddp["best"] and single["best_step"] == ddp["best_step"]


def test_bf16_with_buckets_ranks_identical_and_close_to_one_process(bf16_runs):
    """bf16 autocast inside the DDP-wrapped step, length-bucketed batches: the ranks agree exactly and the
    run follows the single process within bf16 rounding (half batches round differently in bf16)."""
    single, rank0, rank1 = bf16_runs
    assert all(torch.equal(rank0["state"][k], rank1["state"][k]) for k in rank0["state"])
    assert rank0["history"] == rank1["history"]
    assert [h["step"] for h in single["history"]] == [h["step"] for h in rank0["history"]] == [1, 2, 3, 4, 5, 6]
    for one, two in zip(single["history"], rank0["history"]):
        assert two["loss"] == pytest.approx(one["loss"], rel=2e-2) and two["lr"] == pytest.approx(one["lr"])
    for k, v in single["state"].items():
        if v.is_floating_point():
            assert torch.allclose(v, rank0["state"][k], rtol=2e-2, atol=2e-3), k


def test_training_moved_the_weights(runs):
    """The comparison is not vacuous: six steps changed the model."""
    from mpstudy import load_model

    initial, _ = load_model("tiny-bert", task="synthetic-cls", seed=0)
    single = runs[0]["state"]
    changed = [k for k, v in initial.state_dict().items() if not torch.equal(v, single[k])]
    assert len(changed) > 10


def test_accelerate_is_a_dependency_in_pyproject_and_environment_yml():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[ ]", d)[0] for d in project["dependencies"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    assert "accelerate" in names
    assert any(re.split(r"[<>= ]", p)[0] == "accelerate" for p in pip)
