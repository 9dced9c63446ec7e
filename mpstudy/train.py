"""One transparent training loop (no HF Trainer) and the evaluation it uses.

The loop owns what every study shares: AdamW with parameter groups, linear warmup and decay,
gradient clipping, evaluation every N steps, the best checkpoint by a chosen metric, early
stopping, seeding, progress bars, CPU or GPU, data parallelism. What a study changes is passed in:

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
    "linear_schedule",
    "default_param_groups",
    "resolve_device",
    "set_seed",
    "distributed_context",
    "is_main_process",
]


#: TrainConfig fields added after cache keys were first stored, with the defaults that reproduce
#: the runs from before they existed (see ``TrainConfig.key_fields``)
_LATER_FIELDS = {"select_metric": None, "higher_is_better": None, "patience": None, "eval_at_start": False}


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
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid TrainConfig values: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if (self.select_metric is None) != (self.higher_is_better is None):
            raise ValueError(f"select_metric={self.select_metric!r} with higher_is_better={self.higher_is_better!r}: "
                             "give both (e.g. 'loss' and False) or neither (the task's main metric, higher is better)")

    def key_fields(self) -> dict[str, Any]:
        """The fields that change what a run trains, for cache keys: all but ``progress`` and
        ``device``. The fields added later are left out while at their defaults, so a key stored
        before they existed still names the same run."""
        fields = {k: v for k, v in asdict(self).items() if k not in ("progress", "device")}
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


# --------------------------------------------------------------------------- several processes (DDP)
# Under `accelerate launch --multi_gpu --num_processes N script.py` (or torchrun) every process runs the
# user's unchanged script; `train` notices the launch and (1) starts the process group if the script did
# not, (2) starts every rank from rank 0's weights, (3) gives each rank every N-th row of each global
# batch, (4) averages the gradients over ranks before the optimizer step, weighting each rank's mean loss
# by its share of the rows so the average is the global batch's mean even for an uneven last batch, and
# (5) evaluates on rank 0 and broadcasts the metrics. This is DistributedDataParallel's arithmetic, done
# by hand rather than by wrapping the model: objectives, hooks and `extra_eval` keep the user's model.
# With dropout the runs differ (each rank draws its own masks); without it they match one process at
# the same global batch up to floating-point summation order (tests/test_ddp.py).


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


def _broadcast_weights(model: nn.Module) -> None:
    import torch.distributed as dist

    for tensor in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(tensor.data, src=0)


def _average_gradients(params: list[nn.Parameter], world: int) -> None:
    """Mean of every gradient over the ranks, in one all-reduce; a parameter no rank has a gradient
    for keeps ``grad = None`` (AdamW then skips it, as in one process)."""
    import torch.distributed as dist

    device = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    dist.all_reduce(has)
    live = [p for p, h in zip(params, has.tolist()) if h > 0]
    if not live:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in live])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in live:
        p.grad = flat[offset: offset + p.numel()].view_as(p).clone()
        offset += p.numel()


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


def iterate_batches(
    examples: list[dict], collate: Callable, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Yield ``(row indices, collated batch)``; shuffled when a generator is given."""
    order = torch.randperm(len(examples), generator=generator).tolist() if generator is not None else range(len(examples))
    order = list(order)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield idx, collate([examples[i] for i in idx])


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def predict(model: nn.Module, tokenizer, task, split: str = "dev", batch_size: int = 64, max_length: int = 128,
            max_new_tokens: int = 32, device: str | torch.device | None = None) -> tuple[list, list]:
    """Predictions and references on a split: class ids, regression scores, or decoded strings."""

    examples = getattr(task, split)
    device = next(model.parameters()).device if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    collate = make_collate(task, tokenizer, max_length=max_length)
    preds: list = []
    for _, batch in iterate_batches(examples, collate, batch_size):
        batch = _to(batch, device)
        if task.kind == "seq2seq":
            out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 max_new_tokens=max_new_tokens, num_beams=1, do_sample=False)
            preds += tokenizer.batch_decode(out, skip_special_tokens=True)
        else:
            batch.pop("labels", None)
            logits = model(**batch).logits
            preds += (logits.squeeze(-1) if task.kind == "regression" else logits.argmax(-1)).tolist()
    model.train(was_training)
    refs = [ex["target"] for ex in examples] if task.kind == "seq2seq" else [ex["label"] for ex in examples]
    return preds, refs


def evaluate(model: nn.Module, tokenizer, task, split: str = "dev", **kwargs: Any) -> dict[str, float]:
    """The task's metrics on a split (``dev`` by default). ``kwargs`` go to ``predict``."""
    preds, refs = predict(model, tokenizer, task, split=split, **kwargs)
    return task.compute_metrics(preds, refs)


@torch.no_grad()
def evaluate_loss(model: nn.Module, tokenizer, task, split: str = "dev", batch_size: int = 64,
                  max_length: int = 128) -> float:
    """The model's own loss on a split (cross-entropy; token-level for seq2seq, padding ignored;
    MSE for regression), averaged over examples (each batch's mean weighted by its row count)."""
    examples = getattr(task, split)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    collate = make_collate(task, tokenizer, max_length=max_length)
    total, count = 0.0, 0
    for _, batch in iterate_batches(examples, collate, batch_size):
        n = batch["input_ids"].shape[0]
        total += float(model(**_to(batch, device)).loss) * n
        count += n
    model.train(was_training)
    return total / count


def task_evaluation(tokenizer, task, config: TrainConfig | None = None, metrics: bool = True,
                    loss: bool = False) -> Callable[[nn.Module, int], dict[str, float]]:
    """The evaluation :func:`train` runs by default, as an ``eval_fn``: ``(model, step) -> metrics``.

    ``metrics``: the task's metrics on ``task.dev`` (:func:`~mpstudy.evaluate`); ``loss``: the model's own mean
    loss there (:func:`evaluate_loss`) under the key ``"loss"``, e.g. to select the best checkpoint
    by dev loss (``TrainConfig(select_metric="loss", higher_is_better=False)``). Batch size, length
    and generation length come from ``config``.
    """
    if not (metrics or loss):
        raise ValueError("task_evaluation with metrics=False and loss=False evaluates nothing; ask for one")
    config = config or TrainConfig()
    kwargs = dict(batch_size=config.eval_batch_size, max_length=config.max_length)

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

    Launched on several processes (``accelerate launch --multi_gpu --num_processes N``, or
    ``torchrun``), the same call trains data-parallel: ``config.batch_size`` stays the global batch,
    each rank computes every N-th row of it and the gradients are averaged (see the comment above
    ``mpstudy.train.distributed_context``); evaluation runs on rank 0 and its metrics are broadcast,
    so every rank selects and stops alike and returns the same result.
    """

    config = config or TrainConfig()
    objective = objective or TaskLoss()
    eval_fn = eval_fn or task_evaluation(tokenizer, task, config)
    select = config.select_metric or task.main_metric
    higher = True if config.select_metric is None else config.higher_is_better
    device = resolve_device(config.device)
    rank, world = distributed_context(device)
    set_seed(config.seed)
    model.to(device).train()
    if world > 1:
        _broadcast_weights(model)

    groups = param_groups if param_groups is not None else default_param_groups(model, config.weight_decay)
    if not any(p.requires_grad for g in groups for p in g["params"]):
        raise ValueError("nothing to train: no parameter in the optimizer groups requires grad")
    optimizer = torch.optim.AdamW(groups, lr=config.lr)

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
    trainable = [p for g in groups for p in g["params"] if p.requires_grad]
    while step < total and not stopped:
        for indices, batch in iterate_batches(task.train, collate, config.batch_size, generator):
            rows = len(indices)
            if world > 1:  # this rank's share of the global batch: every world-th row
                indices, batch = indices[rank::world], {k: v[rank::world] for k, v in batch.items()}
            loss, logs = torch.zeros(()), {}
            if indices:
                loss, logs = objective(model, _to(batch, device), indices)
                (loss * (len(indices) * world / rows)).backward()  # world == 1: loss * 1
            if world > 1:
                _average_gradients(trainable, world)
                logs = _global_logs(logs, len(indices))
                loss = torch.tensor(logs.get("loss", float(loss)))
            if config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], config.max_grad_norm)
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
