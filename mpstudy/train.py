"""One transparent training loop (no HF Trainer) and the evaluation it uses.

The loop owns what every study shares: AdamW with parameter groups, linear warmup and decay,
gradient clipping, evaluation every N steps, the best checkpoint by a chosen metric, early
stopping, seeding, progress bars, CPU or GPU, mixed precision (bf16 autocast over fp32 master weights),
length-bucketed batches, data parallelism (accelerate). What a study changes is passed in:

* ``objective`` computes the loss of a batch (task loss by default; knowledge distillation,
  feature distillation and module-output matching are other ``Objective`` classes in
  :mod:`mpstudy.distill`);
* ``param_groups`` chooses what trains and at which learning rate (only parameters with
  ``requires_grad`` are ever optimized: freezing is how lightweight fine-tuning is expressed);
* ``eval_fn`` replaces the evaluation (the task's metrics on ``task.dev`` by default, see
  :func:`task_evaluation`); ``TrainConfig.select_metric``/``higher_is_better`` say which of its
  metrics chooses the best checkpoint and ``TrainConfig.patience`` when to stop.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Protocol

import torch
from torch import nn
from tqdm import tqdm

from .accounting import count_parameters
from .tasks import make_collate

__all__ = [
    "TrainConfig",
    "TrainResult",
    "Objective",
    "TaskLoss",
    "train",
    "evaluate",
    "evaluate_loss",
    "task_evaluation",
    "predict",
    "iterate_batches",
    "batch_plan",
    "linear_schedule",
    "default_param_groups",
    "resolve_device",
    "resolve_precision",
    "bf16_supported",
    "precision_context",
    "PRECISIONS",
    "set_seed",
    "distributed_context",
    "is_main_process",
]


#: TrainConfig fields added after cache keys were first stored, with the defaults that reproduce
#: the runs from before they existed (see ``TrainConfig.key_fields``)
_LATER_FIELDS = {"select_metric": None, "higher_is_better": None, "patience": None, "eval_at_start": False,
                 "precision": "fp32", "bucket_batches": None}

#: the precision settings of training and evaluation (see :func:`resolve_precision`)
PRECISIONS = ("fp32", "bf16", "auto")


@dataclass
class TrainConfig:
    """Hyperparameters of one training run.

    Attributes:
        lr: peak learning rate of AdamW (the default parameter group).
        epochs: passes over the training set (fractions allowed); ignored if ``max_steps`` is set.
        max_steps: optimizer steps to run, overriding ``epochs``.
        batch_size: training batch size (sequences are padded to the longest in the batch).
        eval_batch_size: batch size of evaluation.
        warmup_ratio: fraction of the steps with a linear warmup from 0; then linear decay to 0.
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        max_grad_norm: gradient clipping by global norm (``None``: no clipping).
        eval_every: evaluate on the dev split every this many steps (``None``: once per epoch);
            the final step is always evaluated.
        max_length: truncation length of the tokenizer.
        max_new_tokens: generation length when evaluating seq2seq tasks.
        seed: seeds the data order, dropout and everything else random in the run.
        device: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
        progress: show a tqdm progress bar.
        keep_best: restore the checkpoint with the best selection metric at the end.
        select_metric: the metric of the evaluation that chooses the best checkpoint (``None``: the
            task's main metric); a key of what the evaluation returns (``"loss"`` with
            ``task_evaluation(..., loss=True)``, any key of an ``eval_fn``) or of ``extra_eval``'s dict.
        higher_is_better: the direction of ``select_metric``; required when it is given (a loss is
            ``False``), left ``None`` for the task's main metric (always higher is better).
        patience: stop after this many evaluations in a row without improving the selection metric
            (``None``: never; the run then ends at ``max_steps``/``epochs``).
        eval_at_start: also evaluate before the first step (step 0, a candidate for the best checkpoint).
        precision: ``"fp32"``; ``"bf16"``: the forward (and so the backward) of training and of the
            evaluation runs under ``torch.autocast`` in bfloat16 while the weights, gradients and
            optimizer state stay float32; ``"auto"``: bf16 where the device computes it natively
            (``bf16_supported``), else fp32. Cache keys record the resolved precision.
        bucket_batches: ``None``: batches are consecutive slices of a seeded shuffle (the runs from
            before this field); ``k``: length-bucketed batches -- the shuffled rows are cut into
            chunks of ``k`` batches, each chunk sorted by token length and cut into batches, and the
            batches shuffled again (seeded), so a batch pads little yet every epoch mixes anew.
    """

    lr: float = 5e-5
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 32
    eval_batch_size: int = 64
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    eval_every: int | None = None
    max_length: int = 128
    max_new_tokens: int = 32
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    keep_best: bool = True
    select_metric: str | None = None
    higher_is_better: bool | None = None
    patience: int | None = None
    eval_at_start: bool = False
    precision: str = "fp32"
    bucket_batches: int | None = None

    def __post_init__(self) -> None:
        checks = {
            "lr": self.lr > 0, "epochs": self.epochs > 0, "batch_size": self.batch_size >= 1,
            "eval_batch_size": self.eval_batch_size >= 1, "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "weight_decay": self.weight_decay >= 0, "max_length": self.max_length >= 2,
            "max_steps": self.max_steps is None or self.max_steps >= 1,
            "eval_every": self.eval_every is None or self.eval_every >= 1,
            "max_grad_norm": self.max_grad_norm is None or self.max_grad_norm > 0,
            "patience": self.patience is None or (isinstance(self.patience, int) and not isinstance(self.patience, bool)
                                                  and self.patience >= 1),
            "bucket_batches": self.bucket_batches is None or (isinstance(self.bucket_batches, int)
                                                              and not isinstance(self.bucket_batches, bool)
                                                              and self.bucket_batches >= 1),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid TrainConfig values: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if (self.select_metric is None) != (self.higher_is_better is None):
            raise ValueError(f"select_metric={self.select_metric!r} with higher_is_better={self.higher_is_better!r}: "
                             "give both (e.g. 'loss' and False) or neither (the task's main metric, higher is better)")

    def key_fields(self) -> dict[str, Any]:
        """The fields that change what a run trains, for cache keys: all but ``progress`` and
        ``device``. The fields added later are left out while at their defaults, so a key stored
        before they existed still names the same run. ``precision="auto"`` is recorded as what it
        resolves to on this config's device (so an ``"auto"`` run that trained in fp32 has the fp32 key)."""
        fields = {k: v for k, v in asdict(self).items() if k not in ("progress", "device")}
        fields["precision"] = resolve_precision(self.precision, resolve_device(self.device))
        return {k: v for k, v in fields.items() if k not in _LATER_FIELDS or v != _LATER_FIELDS[k]}


@dataclass
class TrainResult:
    """What a run produced: the metrics of the best evaluation, when it came, and the history.

    ``best_metrics`` is what the evaluation returned at ``best_step`` (the task's metrics by
    default), unprefixed; the history records it as ``dev_<key>``. ``stopped_early``: patience ran
    out before ``max_steps``/``epochs``.
    """

    best_metrics: dict[str, float]
    best_step: int
    steps: int
    train_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    #: ``count_parameters`` of the model as trained — stored, trainable, frozen, non-zero
    params: dict[str, int] = field(default_factory=dict)
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Objective(Protocol):
    """Computes the loss of one batch. ``indices`` are the batch's rows in ``task.train``, so an
    objective can look up cached per-example targets (teacher logits) in the loop's data order."""

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], indices: list[int]) -> tuple[torch.Tensor, dict[str, float]]: ...


class TaskLoss:
    """The model's own loss on the task labels (cross-entropy, MSE for regression, token CE)."""

    def __call__(self, model, batch, indices):
        loss = model(**batch).loss
        return loss, {"loss": loss.item()}


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"``: CUDA if available (this process's GPU, ``cuda:LOCAL_RANK``, under a multi-process launch), else the CPU."""
    if device != "auto":
        return torch.device(device)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device(f"cuda:{os.environ['LOCAL_RANK']}" if _launched_world() > 1 and "LOCAL_RANK" in os.environ else "cuda")


# --------------------------------------------------------------------------- precision
# bf16 is autocast, not a cast of the model: matrix products run in bfloat16, while the weights,
# their gradients and AdamW's moments stay float32 (the "master weights"), and the ops autocast
# keeps in float32 (the losses among them) stay there. This is
# what accelerate's `mixed_precision="bf16"` does too (`torch.autocast(device, dtype=torch.bfloat16)`
# around the forward); it is done per call here because accelerate holds one mixed-precision setting
# per process (AcceleratorState refuses a second Accelerator with another one: "cannot be changed,
# restart your runtime"), while a study trains fp32 baselines and bf16 students in one kernel and
# the bench interleaves both.


def bf16_supported(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 natively, so bf16 autocast pays off there.

    CUDA: ``torch.cuda.is_bf16_supported()`` (Ampere and later). CPU: the AVX512-BF16 or AMX
    instructions (torch's own cpuinfo probe). Any CPU *runs* bf16 autocast, but without them
    oneDNN emulates bf16 products through fp32 conversions, which is no faster than fp32 (often
    slower), so ``"auto"`` would only cost accuracy there.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(probe() for probe in probes if probe is not None)
    return False


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``"fp32"`` or ``"bf16"``: what ``precision`` (``"fp32"``, ``"bf16"``, ``"auto"``) means on ``device``.
    ``"auto"`` is bf16 where ``bf16_supported``; an explicit ``"bf16"`` is honoured on any CPU
    (emulated where not native) and refused on a GPU without bf16."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    if precision == "bf16" and device.type == "cuda" and not bf16_supported(device):
        raise ValueError(f"precision 'bf16' asked for on {device}, which has no bfloat16 support; use 'fp32' or 'auto'")
    return precision


def precision_context(precision: str, device: str | torch.device):
    """The context a forward runs in: ``torch.autocast(device, dtype=torch.bfloat16)`` for bf16
    (after :func:`resolve_precision`), nothing for fp32."""
    device = torch.device(device)
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------- several processes (DDP)
# Under `accelerate launch --multi_gpu --num_processes N script.py` (or torchrun) every process runs the
# user's unchanged script; `train` notices the launch and hands the step to accelerate: its
# `Accelerator` starts the process group if the script did not and wraps the step in
# DistributedDataParallel (`prepare_model`), which starts every rank from rank 0's weights and
# all-reduces the gradients in buckets while the backward still runs. What DDP wraps is `_Step`, a
# module holding the user's model whose forward is the objective, so objectives, their hooks (feature
# distillation, module matching) and `eval_fn` / `extra_eval` keep the user's unwrapped model and DDP
# still sees every forward. Each rank computes every N-th row of each global batch; its mean loss is
# weighted by its share of the rows, so DDP's average is the global batch's mean even for an uneven
# last batch. Evaluation runs on rank 0 and its metrics are broadcast. With dropout the runs differ
# (each rank draws its own masks); without it they match one process at the same global batch up to
# floating-point summation order (tests/test_ddp.py).


def _launched_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def distributed_context(device: torch.device) -> tuple[int, int]:
    """``(rank, world size)``: ``(0, 1)`` in a single process; under a multi-process launch the
    process group is initialised from the launcher's environment if needed (NCCL on GPUs, gloo on CPUs)."""
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        if _launched_world() <= 1:
            return 0, 1
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def is_main_process() -> bool:
    """True on rank 0 of a multi-process launch (and in a single process): where to write files."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class _Step(nn.Module):
    """One training step's forward as a module: ``objective(model, batch, indices)`` under the run's
    precision, its loss scaled by ``weight``. Data parallelism wraps this module, so the objective
    (and every hook it sets) still gets the user's own model. ``extra`` holds trainable parameters
    outside the model (an objective's own), so DDP averages their gradients too."""

    def __init__(self, model: nn.Module, objective: Objective, extra: list[nn.Parameter], precision: str,
                 device: torch.device) -> None:
        super().__init__()
        self.model = model
        self.extra = nn.ParameterList(extra)
        object.__setattr__(self, "objective", objective)  # not a submodule: a teacher inside it is no DDP parameter
        self.context = lambda: precision_context(precision, device)

    def forward(self, batch: dict[str, torch.Tensor], indices: list[int], weight: float):
        with self.context():
            loss, logs = self.objective(self.model, batch, indices)
        return loss.float() * weight, logs


def _data_parallel(step: _Step, device: torch.device, precision: str) -> nn.Module:
    """``step`` wrapped by accelerate for the launch (DistributedDataParallel; the process group is
    already up). Parameters no rank uses in a step (a frozen-in-practice branch, the student slots a
    module-matching batch skips) are allowed: ``find_unused_parameters``."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    accelerator = Accelerator(cpu=device.type == "cpu", device_placement=False,
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    launched = accelerator.mixed_precision
    if launched not in ("no", precision):
        raise ValueError(f"the launch asks for mixed precision {launched!r} but TrainConfig.precision resolves to "
                         f"{precision!r}; launch with --mixed_precision no (mpstudy sets the precision per run)")
    return accelerator.prepare_model(step, device_placement=False)


def _global_logs(logs: dict[str, float], rows: int) -> dict[str, float]:
    """Per-rank logs (means over the rank's rows) -> the global batch's means."""
    import torch.distributed as dist

    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (rows, logs))
    keys = dict.fromkeys(k for _, lg in gathered for k in lg)
    return {k: sum(n * lg[k] for n, lg in gathered if k in lg) / max(1, sum(n for n, lg in gathered if k in lg)) for k in keys}


def default_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups over the trainable parameters: weight decay except on biases and norms."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.dim() < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _adamw(groups: list[dict[str, Any]], lr: float) -> torch.optim.AdamW:
    """AdamW, fused into one kernel where torch has it for these parameters (float tensors on the CPU or
    a GPU): the per-tensor loop AdamW runs by default on the CPU costs ~90 ms a step on MiniLM's 105
    tensors at 2 threads, the fused kernel ~11 ms (a quarter of a bf16 step); the two differ only in
    rounding (~1e-7 after 20 steps)."""
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # parameters on a device or of a dtype the fused kernel lacks
        return torch.optim.AdamW(groups, lr=lr)


def batch_plan(n: int, batch_size: int, generator: torch.Generator | None = None, lengths: list[int] | None = None,
               bucket: int | None = None) -> list[list[int]]:
    """The row indices of each batch over ``n`` rows.

    The order is a shuffle drawn from ``generator`` (``0..n-1`` without one). ``bucket=None``: the
    batches are consecutive slices of that order. ``bucket=k`` (needs ``lengths``): the order is cut
    into chunks of ``k`` batches, each chunk's rows are sorted by length (longest first, ties in
    order) and cut into batches, and, with a generator, the batches are shuffled again -- so each
    batch holds rows of similar length (little padding) while the mix still changes every epoch.
    """
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    if bucket is None:
        return [order[s: s + batch_size] for s in range(0, n, batch_size)]
    if lengths is None or len(lengths) != n:
        raise ValueError(f"length bucketing needs one length per row ({n}), got {None if lengths is None else len(lengths)}")
    if isinstance(bucket, bool) or not isinstance(bucket, int) or bucket < 1:
        raise ValueError(f"bucket must be a positive number of batches or None, got {bucket!r}")
    chunk = bucket * batch_size
    batches = []
    for s in range(0, n, chunk):
        rows = sorted(order[s: s + chunk], key=lambda i: -lengths[i])  # sorted() is stable: ties keep the shuffle
        batches += [rows[b: b + batch_size] for b in range(0, len(rows), batch_size)]
    if generator is not None:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def iterate_batches(
    examples: list[dict], collate: Callable, batch_size: int, generator: torch.Generator | None = None,
    bucket: int | None = None,
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Yield ``(row indices, collated batch)``; shuffled when a generator is given, length-bucketed
    with ``bucket`` (batches per sorted chunk, see :func:`batch_plan`; needs a collate from
    :func:`~mpstudy.tasks.make_collate`, which knows the rows' token lengths). Every row comes exactly once."""
    lengths = None
    if bucket is not None:
        if not hasattr(collate, "lengths"):
            raise ValueError("length bucketing needs the rows' token lengths: use a collate from mpstudy.tasks.make_collate")
        lengths = collate.lengths(examples)
    for idx in batch_plan(len(examples), batch_size, generator, lengths, bucket):
        yield idx, collate([examples[i] for i in idx])


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _eval_batches(examples: list[dict], collate, batch_size: int, bucket: bool):
    """Evaluation batches: with ``bucket`` the whole split sorted by length (least padding); the
    indices map each prediction back to its row."""
    return iterate_batches(examples, collate, batch_size, bucket=max(1, -(-len(examples) // batch_size)) if bucket else None)


@torch.no_grad()
def predict(model: nn.Module, tokenizer, task, split: str = "dev", batch_size: int = 64, max_length: int = 128,
            max_new_tokens: int = 32, device: str | torch.device | None = None, precision: str = "fp32",
            bucket: bool = True) -> tuple[list, list]:
    """Predictions and references on a split: class ids, regression scores, or decoded strings, in
    the split's row order.

    ``precision``: ``"fp32"``, ``"bf16"`` (the forward under bf16 autocast; the model is not cast)
    or ``"auto"`` (:func:`resolve_precision`). ``bucket``: batch the rows sorted by token length, so
    batches pad little (the predictions are put back in row order; padding does not change a
    row's prediction beyond floating-point summation order).
    """

    examples = getattr(task, split)
    device = next(model.parameters()).device if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    collate = make_collate(task, tokenizer, max_length=max_length)
    preds: list = [None] * len(examples)
    for idx, batch in _eval_batches(examples, collate, batch_size, bucket):
        batch = _to(batch, device)
        with precision_context(precision, device):
            if task.kind == "seq2seq":
                out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                     max_new_tokens=max_new_tokens, num_beams=1, do_sample=False)
                values = tokenizer.batch_decode(out, skip_special_tokens=True)
            else:
                batch.pop("labels", None)
                logits = model(**batch).logits.float()
                values = (logits.squeeze(-1) if task.kind == "regression" else logits.argmax(-1)).tolist()
        for i, value in zip(idx, values):
            preds[i] = value
    model.train(was_training)
    refs = [ex["target"] for ex in examples] if task.kind == "seq2seq" else [ex["label"] for ex in examples]
    return preds, refs


def evaluate(model: nn.Module, tokenizer, task, split: str = "dev", **kwargs: Any) -> dict[str, float]:
    """The task's metrics on a split (``dev`` by default). ``kwargs`` go to ``predict``
    (``batch_size``, ``max_length``, ``precision``, ``bucket``...)."""
    preds, refs = predict(model, tokenizer, task, split=split, **kwargs)
    return task.compute_metrics(preds, refs)


@torch.no_grad()
def evaluate_loss(model: nn.Module, tokenizer, task, split: str = "dev", batch_size: int = 64,
                  max_length: int = 128, precision: str = "fp32", bucket: bool = True) -> float:
    """The model's own loss on a split (cross-entropy; token-level for seq2seq, padding ignored;
    MSE for regression), averaged over examples (each batch's mean weighted by its row count).
    ``precision`` and ``bucket`` as in ``predict``."""
    examples = getattr(task, split)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    collate = make_collate(task, tokenizer, max_length=max_length)
    total, count = 0.0, 0
    for _, batch in _eval_batches(examples, collate, batch_size, bucket):
        n = batch["input_ids"].shape[0]
        with precision_context(precision, device):
            total += float(model(**_to(batch, device)).loss) * n
        count += n
    model.train(was_training)
    return total / count


def task_evaluation(tokenizer, task, config: TrainConfig | None = None, metrics: bool = True,
                    loss: bool = False) -> Callable[[nn.Module, int], dict[str, float]]:
    """The evaluation :func:`train` runs by default, as an ``eval_fn``: ``(model, step) -> metrics``.

    ``metrics``: the task's metrics on ``task.dev`` (:func:`~mpstudy.evaluate`); ``loss``: the model's own mean
    loss there (:func:`evaluate_loss`) under the key ``"loss"``, e.g. to select the best checkpoint
    by dev loss (``TrainConfig(select_metric="loss", higher_is_better=False)``). Batch size, length,
    generation length and precision come from ``config``; batches are length-bucketed.
    """
    if not (metrics or loss):
        raise ValueError("task_evaluation with metrics=False and loss=False evaluates nothing; ask for one")
    config = config or TrainConfig()
    kwargs = dict(batch_size=config.eval_batch_size, max_length=config.max_length, precision=config.precision)

    def run(model: nn.Module, step: int) -> dict[str, float]:
        out = evaluate(model, tokenizer, task, max_new_tokens=config.max_new_tokens, **kwargs) if metrics else {}
        if loss:
            out["loss"] = evaluate_loss(model, tokenizer, task, **kwargs)
        return out

    return run


def linear_schedule(total: int, warmup: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _score(name: str, metrics: dict[str, float], extra: dict[str, Any], higher_is_better: bool) -> float:
    """The selection metric of one evaluation, oriented so that larger is better; NaN (e.g. the
    Spearman correlation of constant predictions) is the worst score."""
    if name in metrics:
        value = metrics[name]
    elif name in extra:
        value = extra[name]
    else:
        raise ValueError(f"select_metric {name!r} is not among the evaluation's metrics {sorted(metrics)} "
                         f"nor extra_eval's {sorted(extra)}")
    value = float(value)
    if math.isnan(value):
        return -math.inf
    return value if higher_is_better else -value


def train(
    model: nn.Module,
    tokenizer,
    task,
    config: TrainConfig | None = None,
    objective: Objective | None = None,
    param_groups: list[dict[str, Any]] | None = None,
    extra_eval: Callable[[nn.Module], dict[str, float]] | None = None,
    eval_fn: Callable[[nn.Module, int], dict[str, float]] | None = None,
) -> TrainResult:
    """Train ``model`` on ``task.train``, evaluating every ``config.eval_every`` steps; returns the best evaluation.

    Only parameters with ``requires_grad`` train (or those in ``param_groups``, which may set
    their own ``lr``).

    Evaluation runs every ``config.eval_every`` steps (default once per epoch), at the last step
    and, with ``config.eval_at_start``, at step 0; the model is in eval mode meanwhile. It is
    ``eval_fn(model, step)`` if given, else the task's metrics on ``task.dev``
    (:func:`task_evaluation`); its dict is recorded as ``dev_<key>``. ``extra_eval(model)``, if
    given, runs after it and its dict is added to the record as it is. The evaluation whose
    ``config.select_metric`` (default: the task's main metric) is best is ``best_metrics``/``best_step``
    (ties: the earlier one); with ``config.keep_best`` the model ends in that state, and with
    ``config.patience`` training stops after that many evaluations in a row without improvement.

    Every step's record has ``step``, ``lr``, the objective's logs, ``elapsed_s`` (wall-clock
    seconds since the start) and ``train_s`` (the same without the time spent evaluating).

    ``config.precision`` ``"bf16"`` runs the objective (forward and loss) under bf16 autocast with
    float32 weights, gradients and optimizer state; evaluation by :func:`task_evaluation` uses the
    same precision (an ``eval_fn`` of the caller's runs as it is). ``config.bucket_batches`` draws
    length-bucketed batches (:func:`batch_plan`).

    Launched on several processes (``accelerate launch --multi_gpu --num_processes N``, or
    ``torchrun``), the same call trains data-parallel through accelerate (DistributedDataParallel):
    ``config.batch_size`` stays the global batch, each rank computes every N-th row of it and the
    gradients are averaged (see the comment above ``mpstudy.train.distributed_context``); evaluation
    runs on rank 0 and its metrics are broadcast, so every rank selects and stops alike and returns
    the same result.
    """

    config = config or TrainConfig()
    objective = objective or TaskLoss()
    eval_fn = eval_fn or task_evaluation(tokenizer, task, config)
    select = config.select_metric or task.main_metric
    higher = True if config.select_metric is None else config.higher_is_better
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    rank, world = distributed_context(device)
    set_seed(config.seed)
    model.to(device).train()

    groups = param_groups if param_groups is not None else default_param_groups(model, config.weight_decay)
    if not any(p.requires_grad for g in groups for p in g["params"]):
        raise ValueError("nothing to train: no parameter in the optimizer groups requires grad")
    optimizer = _adamw(groups, config.lr)
    in_model = {id(p) for p in model.parameters()}
    extra = list({id(p): p for g in groups for p in g["params"] if p.requires_grad and id(p) not in in_model}.values())
    step_module = _Step(model, objective, extra, precision, device)
    # several processes: DDP (through accelerate) starts every rank from rank 0's weights and averages the gradients
    run_step = _data_parallel(step_module, device, precision) if world > 1 else step_module

    params = count_parameters(model)
    steps_per_epoch = math.ceil(len(task.train) / config.batch_size)
    total = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(total, int(config.warmup_ratio * total)))
    eval_every = config.eval_every or steps_per_epoch
    collate = make_collate(task, tokenizer, max_length=config.max_length)
    generator = torch.Generator().manual_seed(config.seed)

    history: list[dict[str, Any]] = []
    # best: (oriented score, step, metrics, state); `stale` counts evaluations since the last improvement
    best: tuple[float, int, dict[str, float], dict[str, torch.Tensor] | None] = (-math.inf, 0, {}, None)
    seen, stale, stopped = False, 0, False
    step, start, eval_seconds = 0, time.perf_counter(), 0.0

    def evaluation(record: dict[str, Any]) -> None:
        """Evaluate at ``step``, add the metrics to ``record``, update the best state and the patience count."""
        nonlocal best, seen, stale, stopped, eval_seconds
        eval_start = time.perf_counter()
        metrics, extra = None, {}
        if rank == 0:  # the other ranks wait for its metrics
            model.eval()
            metrics = dict(eval_fn(model, step))
            extra = extra_eval(model) if extra_eval is not None else {}
        if world > 1:
            box = [metrics, extra]
            torch.distributed.broadcast_object_list(box, src=0)
            metrics, extra = box
        model.train()
        eval_seconds += time.perf_counter() - eval_start
        record.update(extra)
        record.update({f"dev_{k}": v for k, v in metrics.items()})
        score = _score(select, metrics, extra, higher)
        if not seen or score > best[0]:
            state = copy.deepcopy(model.state_dict()) if config.keep_best else None
            best, seen, stale = (score, step, metrics, state), True, 0
        else:
            stale += 1
            stopped = config.patience is not None and stale >= config.patience and step < total

    def stamp(record: dict[str, Any]) -> dict[str, Any]:
        # wall-clock seconds since the start: in all, and spent training (evaluation excluded)
        record["elapsed_s"] = time.perf_counter() - start
        record["train_s"] = record["elapsed_s"] - eval_seconds
        return record

    if config.eval_at_start:
        record: dict[str, Any] = {"step": 0}
        evaluation(record)
        history.append(stamp(record))
    bar = tqdm(total=total, desc=f"train {task.name}", disable=not config.progress or rank != 0, leave=False)
    clipped = [p for g in groups for p in g["params"]]
    while step < total and not stopped:
        for indices, batch in iterate_batches(task.train, collate, config.batch_size, generator,
                                              bucket=config.bucket_batches):
            rows, weight, mine = len(indices), 1.0, len(indices)
            if world > 1:  # this rank's share of the global batch: every world-th row
                mine = len(indices[rank::world])
                # DDP averages over ranks: weighting each rank's mean by its share of the rows gives the global mean;
                # a rank left without rows (a last batch smaller than the world) still runs a step, weighted 0
                share = slice(rank, None, world) if mine else slice(0, 1)
                indices, batch, weight = indices[share], {k: v[share] for k, v in batch.items()}, mine * world / rows
            loss, logs = run_step(_to(batch, device), indices, weight)
            loss.backward()
            loss = loss.detach()
            if world > 1:
                logs = _global_logs(logs, mine)
                loss = torch.tensor(logs.get("loss", float(loss)))
            if config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(clipped, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            record = {"step": step, "lr": scheduler.get_last_lr()[0], **logs}
            if step % eval_every == 0 or step == total:
                evaluation(record)
            history.append(stamp(record))
            if step >= total or stopped:
                break
    bar.close()
    if config.keep_best and best[3] is not None:
        model.load_state_dict(best[3])
    model.eval()
    return TrainResult(best_metrics=best[2], best_step=best[1], steps=step, train_seconds=time.perf_counter() - start,
                       history=history, params=params, stopped_early=stopped)
