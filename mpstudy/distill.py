"""Distillation: the losses and the cached teacher outputs that LoBERT, Noach & Goldberg and the
comparison study share.

Reductions are explicit because the originals differ (see the methods digest, sections 2.3 and 3.2):

* :func:`kd_loss` is ``KL(softmax(t/T) || softmax(s/T))`` with ``batchmean`` reduction times ``T**2``
  (Hinton et al.), over the *class / vocabulary* axis; LoBERT used PyTorch's ``mean`` (1/C of this)
  and the Marian port took the softmax over sequence positions. For a regression head (one output)
  it is the MSE between student and teacher predictions.
* :func:`pkd_loss` is PKD's patience loss: the squared L2 distance between the student's and the
  teacher's ``[CLS]`` states (each L2-normalized when ``normalize``), summed over the hidden size and
  averaged over batch and layers. LoBERT averaged over the hidden size too (1/H of this), which is why
  it needed betas of 10 to 1000.

Teacher outputs for a classification task are computed once per (teacher, task rows, max_length)
and cached on disk (:func:`teacher_outputs`); :class:`DistillObjective` looks them up by the batch's
row indices, so the training data can still be shuffled (LoBERT could not: it relied on a sequential
sampler to keep stored logits aligned). For seq2seq, where the logits over the vocabulary of every
target position are too large to store, pass the teacher model itself and it runs alongside.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .cache import cache_key, default_cache_dir, tokenizer_hash, weights_hash
from .grid import UnitLock
from .records import atomic_file
from .targets import preset_for
from .tasks import make_collate, task_fingerprint
from .train import iterate_batches

__all__ = ["kd_loss", "pkd_loss", "cls_states", "TeacherOutputs", "teacher_outputs", "DistillObjective",
           "model_fingerprint"]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Soft-target distillation loss, ``T**2 * KL(p_t || p_s)`` averaged over examples (``batchmean``).

    Args:
        student_logits: ``[B, C]`` (classification), ``[B, 1]`` / ``[B]`` (regression) or
            ``[B, L, V]`` (seq2seq: one distribution over the vocabulary per target position).
        teacher_logits: the same shape; no gradient flows into it.
        temperature: ``T > 0``; both distributions are ``softmax(logits / T)``.
        mask: for ``[B, L, V]`` logits, ``[B, L]`` booleans of the positions that count (the labels'
            non-padding positions); the KL is averaged over those positions.

    Returns:
        A scalar tensor. For regression (one output) the MSE between the two predictions instead.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape")
    teacher_logits = teacher_logits.detach().to(student_logits.dtype)
    if student_logits.dim() == 1 or student_logits.shape[-1] == 1:  # regression: no distribution to match
        return F.mse_loss(student_logits.float(), teacher_logits.float())
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    per_row = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)  # KL per example (or per position)
    if student_logits.dim() == 3:
        if mask is None:
            mask = torch.ones(per_row.shape, dtype=torch.bool, device=per_row.device)
        mask = mask.to(per_row.device).bool()
        if mask.shape != per_row.shape:
            raise ValueError(f"mask {tuple(mask.shape)} does not match the logits' positions {tuple(per_row.shape)}")
        return (per_row * mask).sum() / mask.sum().clamp_min(1) * temperature**2
    return per_row.mean() * temperature**2


def pkd_loss(student_states: Sequence[torch.Tensor], teacher_states: Sequence[torch.Tensor],
             normalize: bool = True) -> torch.Tensor:
    """PKD's patience loss over matched layers.

    Args:
        student_states: per chosen layer, the student's ``[CLS]`` states ``[B, H]``.
        teacher_states: the teacher's states for the same layers, ``[B, H]`` each.
        normalize: L2-normalize every state vector first (PKD's ``normalize_patience``).

    Returns:
        ``mean over layers and batch of ||s - t||_2**2`` (a scalar).
    """
    if len(student_states) != len(teacher_states) or not student_states:
        raise ValueError(f"need the same non-zero number of student and teacher layers, got "
                         f"{len(student_states)} and {len(teacher_states)}")
    total = student_states[0].new_zeros(())
    for s, t in zip(student_states, teacher_states):
        t = t.detach().to(s.device, s.dtype)
        if s.shape != t.shape:
            raise ValueError(f"student state {tuple(s.shape)} and teacher state {tuple(t.shape)} differ in shape")
        if normalize:
            s, t = F.normalize(s, dim=-1), F.normalize(t, dim=-1)
        total = total + (s - t).pow(2).sum(-1).mean()
    return total / len(student_states)


def cls_states(hidden_states: Sequence[torch.Tensor], layers: Sequence[int]) -> list[torch.Tensor]:
    """The ``[CLS]`` (first-token) state ``[B, H]`` of each requested entry of ``hidden_states``.

    ``hidden_states`` is a model output's ``hidden_states``: index 0 is the embeddings, ``i`` the
    output of encoder layer ``i`` (1-based).
    """
    n = len(hidden_states)
    bad = [i for i in layers if not -n <= i < n]
    if bad:
        raise ValueError(f"layer indices {bad} out of range for {n} hidden states (0 = embeddings .. {n - 1})")
    return [hidden_states[i][:, 0] for i in layers]


# --------------------------------------------------------------------------- cached teacher outputs


@dataclass
class TeacherOutputs:
    """A teacher's outputs on every row of ``task.train``, in the task's row order.

    Attributes:
        logits: ``[N, C]`` float32.
        cls: ``[L + 1, N, H]`` float32, the ``[CLS]`` state of the embeddings (0) and each layer.
        key: the cache key these were stored under.
    """

    logits: torch.Tensor
    cls: torch.Tensor
    key: str = ""

    def __len__(self) -> int:
        return self.logits.shape[0]


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of a model's parameter and buffer values (names, dtypes, shapes, bytes), for cache
    keys: :func:`mpstudy.cache.weights_hash`."""
    return weights_hash(model)


@torch.no_grad()
def _compute_teacher_outputs(teacher: nn.Module, tokenizer, task, max_length: int, batch_size: int,
                             progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from tqdm.auto import tqdm


    device = next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()
    collate = make_collate(task, tokenizer, max_length=max_length)
    logits, cls = [], []
    batches = iterate_batches(task.train, collate, batch_size)
    for _, batch in tqdm(batches, total=-(-len(task.train) // batch_size), desc="teacher outputs",
                         disable=not progress, leave=False):
        batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        out = teacher(**batch, output_hidden_states=True)
        logits.append(out.logits.float().cpu())
        cls.append(torch.stack([h[:, 0] for h in out.hidden_states]).float().cpu())
    teacher.train(was_training)
    return torch.cat(logits), torch.cat(cls, dim=1)


def teacher_outputs(teacher: nn.Module, tokenizer, task, max_length: int = 128, batch_size: int = 64,
                    cache_dir: str | os.PathLike | None = None, progress: bool = True) -> TeacherOutputs:
    """The teacher's logits and per-layer ``[CLS]`` states on ``task.train``, computed once and cached.

    The cache key (:func:`mpstudy.cache.cache_key`) hashes the teacher's weights and tokenizer, the
    task's rows and data files (``task_fingerprint``), ``max_length``, the library code and the torch/transformers versions, so a different teacher, subset,
    truncation or library never reads stale outputs. Stored as ``teachers/<task>-<key>.pt`` under
    ``cache_dir`` (default :func:`mpstudy.cache.default_cache_dir`), written atomically.
    Classification and regression tasks only (seq2seq: give :class:`DistillObjective` the teacher).
    """

    if task.is_seq2seq:
        raise ValueError(f"task {task.name!r} is seq2seq: its teacher logits are not cached; "
                         "pass the teacher model to DistillObjective instead")
    # batch_size is not in the key: dynamic padding does not change a row's outputs (tests/test_distill.py)
    key = cache_key("teacher-outputs", {"max_length": max_length},
                    data=task_fingerprint(task), weights={"model": model_fingerprint(teacher), "tokenizer": tokenizer_hash(tokenizer)})
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "teachers" / f"{task.name}-{key}.pt"
    if not path.exists():
        # one lock per entry: workers of a grid sharing the cache (several processes or machines on one
        # file system) compute a teacher's outputs once; the others wait and then read the file
        with UnitLock(path):
            if not path.exists():
                logits, cls = _compute_teacher_outputs(teacher, tokenizer, task, max_length, batch_size, progress)
                with atomic_file(path) as tmp:  # an interrupted run leaves no half-written cache entry
                    torch.save({"logits": logits, "cls": cls}, tmp)
                return TeacherOutputs(logits, cls, key)
    stored = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: a cache file cannot run code
    return TeacherOutputs(stored["logits"], stored["cls"], key)


# --------------------------------------------------------------------------- the training objective


class DistillObjective:
    """``(1 - alpha) * CE + alpha * KD + beta * PKD``, an :class:`~mpstudy.train.Objective`.

    Args:
        teacher: cached :class:`TeacherOutputs` (looked up by the batch's row indices) or a teacher
            model run on each batch without gradient (needed for seq2seq).
        alpha: weight of the KD term; ``1 - alpha`` weighs the task loss. ``alpha=0`` is plain CE.
        temperature: KD temperature ``T``.
        beta: weight of the patience loss (0 disables it and skips the hidden states).
        student_layers, teacher_layers: hidden-state indices matched by the patience loss
            (0 = embeddings, ``i`` = layer ``i``); equal lengths. Default: every layer but the last
            (PKD-skip with the same depth, as LoBERT: layers 1..L-1).
        normalize: L2-normalize the ``[CLS]`` states in the patience loss.

    Logs ``loss``, ``ce``, ``kd`` and (if ``beta``) ``pkd`` per step.
    """

    def __init__(self, teacher: TeacherOutputs | nn.Module, alpha: float = 0.5, temperature: float = 1.0,
                 beta: float = 0.0, student_layers: Sequence[int] | None = None,
                 teacher_layers: Sequence[int] | None = None, normalize: bool = True) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if (student_layers is None) != (teacher_layers is None):
            raise ValueError("give both student_layers and teacher_layers, or neither")
        if student_layers is not None and len(student_layers) != len(teacher_layers):
            raise ValueError(f"student_layers {list(student_layers)} and teacher_layers {list(teacher_layers)} "
                             "must have the same length")
        if beta > 0 and isinstance(teacher, nn.Module):
            teacher.eval()
        self.teacher, self.alpha, self.temperature, self.beta = teacher, alpha, temperature, beta
        self.student_layers = list(student_layers) if student_layers is not None else None
        self.teacher_layers = list(teacher_layers) if teacher_layers is not None else None
        self.normalize = normalize

    def _teacher(self, batch: dict[str, torch.Tensor], indices: list[int], device) -> tuple[torch.Tensor, Any]:
        if isinstance(self.teacher, TeacherOutputs):
            idx = torch.as_tensor(indices, dtype=torch.long)
            return self.teacher.logits[idx].to(device), self.teacher.cls[:, idx].to(device)
        with torch.no_grad():
            out = self.teacher(**batch, output_hidden_states=self.beta > 0)
        hidden = [h[:, 0] for h in out.hidden_states] if self.beta > 0 else None
        return out.logits, hidden

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], indices: list[int]):
        need_hidden = self.beta > 0
        out = model(**batch, output_hidden_states=need_hidden)
        t_logits, t_cls = self._teacher(batch, indices, out.logits.device)
        logs: dict[str, float] = {"ce": out.loss.item()}
        loss = (1 - self.alpha) * out.loss
        if self.alpha > 0:
            mask = batch["labels"] != -100 if out.logits.dim() == 3 else None
            kd = kd_loss(out.logits, t_logits, self.temperature, mask=mask)
            loss = loss + self.alpha * kd
            logs["kd"] = kd.item()
        if need_hidden:
            hidden = out.hidden_states if hasattr(out, "hidden_states") and out.hidden_states is not None \
                else out.encoder_hidden_states
            n = len(hidden)
            s_layers = self.student_layers if self.student_layers is not None else list(range(1, n - 1))
            t_layers = self.teacher_layers if self.teacher_layers is not None else s_layers
            pkd = pkd_loss(cls_states(hidden, s_layers), [t_cls[i] for i in t_layers], self.normalize)
            loss = loss + self.beta * pkd
            logs["pkd"] = pkd.item()
        logs["loss"] = loss.item()
        return loss, logs


# --------------------------------------------------------------------------- feature distillation
# Noach & Goldberg's first recovery stage matches the factorized model's internal activations to the
# original's. The Marian port computed these terms from weight matrices and turned them into Python
# floats (no gradient); here they are computed on activations, as tensors that train the student.

import re  # noqa: E402
from contextlib import contextmanager  # noqa: E402


@contextmanager
def eager_attention(*models: nn.Module):
    """Run ``models`` with the eager attention implementation inside the block, then restore.

    Only the eager implementation returns attention probabilities (``output_attentions=True``);
    SDPA returns none. The original implementation is restored on exit, so latency measured
    afterwards is measured with the implementation the model was loaded with.
    """
    before = [m.config._attn_implementation for m in models]
    try:
        for m in models:
            if m.config._attn_implementation != "eager":
                m.set_attn_implementation("eager")
        yield models
    finally:
        for m, impl in zip(models, before):
            if m.config._attn_implementation != impl:
                m.set_attn_implementation(impl)


def _masked_mean(per_position: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``per_position`` ``[B, L]`` over the positions where ``mask`` ``[B, L]`` is true."""
    if mask is None:
        return per_position.mean()
    mask = mask.to(per_position.device, per_position.dtype)
    return (per_position * mask).sum() / mask.sum().clamp_min(1)


def hidden_state_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error between two activations ``[B, L, H]``, averaged over the positions in
    ``mask`` ``[B, L]`` (all positions if ``None``) and the ``H`` features. ``[B, H]`` inputs are
    averaged over the batch. No gradient flows into ``teacher``."""
    teacher = teacher.detach().to(student.device, student.dtype)
    if student.shape != teacher.shape:
        raise ValueError(f"student activation {tuple(student.shape)} and teacher activation "
                         f"{tuple(teacher.shape)} differ in shape")
    per_position = (student.float() - teacher.float()).pow(2).mean(-1)
    return _masked_mean(per_position, mask if student.dim() == 3 else None)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None,
                   kind: str = "kl") -> torch.Tensor:
    """Distance between attention probabilities ``[B, heads, L_q, L_k]`` (rows sum to 1).

    ``kind="kl"``: ``KL(teacher || student)`` of each query's distribution over the keys;
    ``kind="mse"``: the squared difference summed over the keys. Either is averaged over heads and
    the query positions in ``mask`` ``[B, L_q]`` (padding queries carry no meaning). Masked keys
    have probability 0 in both models and contribute nothing.
    """
    if kind not in ("kl", "mse"):
        raise ValueError(f"attention loss kind must be 'kl' or 'mse', got {kind!r}")
    teacher = teacher.detach().to(student.device)
    if student.shape != teacher.shape or student.dim() != 4:
        raise ValueError(f"attention probabilities must both be [B, heads, L_q, L_k], got student "
                         f"{tuple(student.shape)} and teacher {tuple(teacher.shape)}")
    s, t = student.float(), teacher.float()
    if kind == "kl":
        # xlogy gives 0 where t == 0 (masked keys); the clamp keeps log(0) out of the student side
        per_query = (torch.special.xlogy(t, t) - t * s.clamp_min(1e-12).log()).sum(-1)
    else:
        per_query = (s - t).pow(2).sum(-1)
    return _masked_mean(per_query.mean(1), mask)


class _Capture:
    """Forward hooks that record a module's output (or its input) while a forward runs."""

    def __init__(self, model: nn.Module, names: Sequence[str], inputs: bool) -> None:
        self.values: dict[str, torch.Tensor] = {}
        self.handles = []
        for name in names:
            module = model.get_submodule(name)
            if inputs:
                hook = (lambda n: lambda mod, args: self.values.__setitem__(n, args[0]))(name)
                self.handles.append(module.register_forward_pre_hook(hook))
            else:
                hook = (lambda n: lambda mod, args, out: self.values.__setitem__(n, out[0] if isinstance(out, tuple) else out))(name)
                self.handles.append(module.register_forward_hook(hook))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _module_name(entry: str) -> str:
    # the seed's config named parameters ("...query.weight"); a feature is the module's activation
    for suffix in (".weight", ".bias"):
        if entry.endswith(suffix):
            return entry[: -len(suffix)]
    return entry


def context_modules(model: nn.Module) -> list[str]:
    """Names of the attention output projections (the ``attention_output`` role of the model's preset).

    Their *input* is the concatenation of every head's context vector (``softmax(QK^T) V`` per
    head), so matching it matches the per-head attention outputs.
    """

    regex = re.compile(preset_for(model)["attention_output"])
    return [name for name, _ in model.named_modules() if regex.search(name)]


class FeatureDistillObjective:
    """Feature distillation on activations (Noach & Goldberg's first stage), an ``mpstudy.train.Objective``.

    The teacher (the original model) runs on each batch without gradient; the student (the factorized
    copy) is trained to reproduce its activations:

    * ``hidden``: every selected hidden state (embeddings and each layer's output), MSE;
    * ``attention``: every selected layer's attention probabilities, KL or MSE (see :func:`attention_loss`);
    * ``context``: the per-head context vectors, i.e. the input of each attention output projection, MSE;
    * ``module``: the output of any named module (e.g. ``"bert.encoder.layer.3.intermediate.dense"``), MSE.

    Loss ``= sum over kinds of weight[kind] * mean over that kind's features + ce_weight * CE + kd_weight * KD``
    (KD: ``kd_loss`` over classes or, for seq2seq, over the vocabulary at each target position).

    Args:
        teacher: the original model; put in eval mode.
        features: which activations, as a list of entries: ``"hidden"``, ``"attention"``, ``"context"``
            (every layer of that kind); a pattern over feature names (``"hidden.3"``, ``"hidden.*"``,
            and for encoder-decoders ``"encoder.hidden.*"``, ``"decoder.attention.1"``,
            ``"cross.attention.*"``); ``"context:<module>"`` for one module's input; or any other module
            name (or parameter name: ``.weight``/``.bias`` is dropped, as in the seed's ``feature_layers``),
            whose output is matched. Hidden-state index 0 is the embeddings, ``i`` the output of layer ``i``.
        weights: per-kind weights (``hidden``, ``attention``, ``context``, ``module``), default 1 each.
        attention_kind: ``"kl"`` or ``"mse"``.
        ce_weight, kd_weight, temperature: optional task-loss and KD terms in the same objective.
        dropout: run the student with dropout. Off by default: eager attention returns the
            probabilities *after* attention dropout, so a student in train mode would be matched
            with randomly zeroed distributions, which only adds noise to the target.

    Attention probabilities need the eager attention implementation in both models: run the
    training inside :func:`eager_attention` (the objective refuses SDPA models instead of silently
    getting no attentions). Logs ``loss`` and one entry per kind (``fd_hidden``...) per step.
    """

    KINDS = ("hidden", "attention", "context", "module")

    def __init__(self, teacher: nn.Module, features: Sequence[str] = ("hidden", "attention"),
                 weights: dict[str, float] | None = None, attention_kind: str = "kl", ce_weight: float = 0.0,
                 kd_weight: float = 0.0, temperature: float = 1.0, dropout: bool = False) -> None:
        if isinstance(features, str):
            features = [features]
        if not features:
            raise ValueError("features is empty; give e.g. ['hidden', 'attention'], patterns such as 'hidden.3', "
                             "or module names")
        weights = {**{k: 1.0 for k in self.KINDS}, **(weights or {})}
        unknown = sorted(set(weights) - set(self.KINDS))
        if unknown:
            raise ValueError(f"unknown feature weight(s) {unknown}; allowed: {list(self.KINDS)}")
        bad = {k: v for k, v in weights.items() if not v >= 0}
        if bad or ce_weight < 0 or kd_weight < 0:
            raise ValueError(f"weights must be >= 0, got {bad or {'ce_weight': ce_weight, 'kd_weight': kd_weight}}")
        if attention_kind not in ("kl", "mse"):
            raise ValueError(f"attention_kind must be 'kl' or 'mse', got {attention_kind!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.teacher = teacher.eval()
        self.weights, self.attention_kind = weights, attention_kind
        self.ce_weight, self.kd_weight, self.temperature = ce_weight, kd_weight, temperature
        self.dropout = dropout
        self.patterns: list[str] = []  # over output feature names (hidden.*, attention.*)
        self.context: list[str] = []  # modules whose input is matched
        self.modules: list[str] = []  # modules whose output is matched
        named = dict(teacher.named_modules())
        for entry in features:
            if entry in ("hidden", "attention"):
                self.patterns += [f"{entry}.*", f"encoder.{entry}.*", f"decoder.{entry}.*"] + (
                    ["cross.attention.*"] if entry == "attention" else [])
            elif entry == "context":
                self.context += context_modules(teacher)
            elif entry.startswith("context:"):
                self._check_module(entry[len("context:"):], named)
                self.context.append(entry[len("context:"):])
            elif entry.split(".")[0] in ("hidden", "attention", "encoder", "decoder", "cross") and entry not in named \
                    and _module_name(entry) not in named:
                self.patterns.append(entry)
            else:
                name = _module_name(entry)
                self._check_module(name, named)
                self.modules.append(name)
        #: which outputs the forwards must return (asked once — the pattern test is not free)
        self.needs_attentions, self.needs_hidden = self._needs("attention"), self._needs("hidden")

    @staticmethod
    def _check_module(name: str, named: dict[str, nn.Module]) -> None:
        if name not in named:
            examples = [n for n, m in named.items() if isinstance(m, nn.Linear)][:3]
            raise ValueError(f"feature {name!r} is no module of the teacher; module names look like {examples}, "
                             "or use 'hidden', 'attention', 'context' or patterns such as 'hidden.3'")

    def _needs(self, kind: str) -> bool:
        import fnmatch

        names = [f"{pre}{kind}.{i}" for pre in ("", "encoder.", "decoder.", "cross.") for i in range(128)]
        return any(fnmatch.fnmatchcase(n, p) for p in self.patterns for n in names)

    @staticmethod
    def _output_features(out, seq2seq: bool) -> dict[str, torch.Tensor]:
        """Name -> activation of the outputs a forward returned (``hidden.i``, ``encoder.attention.i``...)."""
        groups = ({"encoder.hidden": out.encoder_hidden_states, "decoder.hidden": out.decoder_hidden_states,
                   "encoder.attention": out.encoder_attentions, "decoder.attention": out.decoder_attentions,
                   "cross.attention": out.cross_attentions} if seq2seq else
                  {"hidden": out.hidden_states, "attention": out.attentions})
        return {f"{prefix}.{i}": x for prefix, xs in groups.items() for i, x in enumerate(xs or ())}

    def _forward(self, model: nn.Module, batch: dict[str, torch.Tensor]):
        if self.needs_attentions and model.config._attn_implementation != "eager":
            raise ValueError(f"{type(model).__name__} uses {model.config._attn_implementation!r} attention, which "
                             "returns no attention probabilities; train inside mpstudy.distill.eager_attention(student, teacher)")
        ctx, mod = _Capture(model, self.context, inputs=True), _Capture(model, self.modules, inputs=False)
        try:
            out = model(**batch, output_hidden_states=self.needs_hidden, output_attentions=self.needs_attentions)
        finally:
            ctx.remove()
            mod.remove()
        return out, ctx.values, mod.values

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], indices: list[int]):
        import fnmatch

        seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
        if not self.dropout:
            model.eval()  # the training loop puts the model back in train mode after each evaluation
        out, s_ctx, s_mod = self._forward(model, batch)
        with torch.no_grad():
            t_out, t_ctx, t_mod = self._forward(self.teacher, batch)
        enc_mask = batch.get("attention_mask")
        dec_mask = batch["labels"] != -100 if seq2seq and "labels" in batch else None

        def mask_for(name: str):
            return dec_mask if seq2seq and ("decoder" in name.split(".") or name.startswith("cross")) else enc_mask

        s_feats, t_feats = self._output_features(out, seq2seq), self._output_features(t_out, seq2seq)
        terms: dict[str, list[torch.Tensor]] = {k: [] for k in self.KINDS}
        for name, s in s_feats.items():
            if not any(fnmatch.fnmatchcase(name, p) for p in self.patterns):
                continue
            kind = "attention" if "attention" in name else "hidden"
            if kind == "attention":
                terms[kind].append(attention_loss(s, t_feats[name], mask_for(name), self.attention_kind))
            else:
                terms[kind].append(hidden_state_loss(s, t_feats[name], mask_for(name)))
        for name in self.context:
            terms["context"].append(hidden_state_loss(s_ctx[name], t_ctx[name], mask_for(name)))
        for name in self.modules:
            s, t = s_mod[name], t_mod[name]
            mask = mask_for(name) if s.dim() == 3 else None
            terms["module"].append(hidden_state_loss(s, t, mask if mask is not None and mask.shape == s.shape[:2] else None))
        if not any(terms.values()):
            raise ValueError(f"no activation matched the features {self.patterns + self.context + self.modules}; "
                             f"output features are named like {list(s_feats)[:4]}")

        loss = out.logits.new_zeros((), dtype=torch.float32)
        logs: dict[str, float] = {}
        for kind, values in terms.items():
            if values and self.weights[kind] > 0:
                term = torch.stack(values).mean()
                loss = loss + self.weights[kind] * term
                logs[f"fd_{kind}"] = term.item()
        if self.ce_weight > 0:
            loss = loss + self.ce_weight * out.loss
            logs["ce"] = out.loss.item()
        if self.kd_weight > 0:
            mask = batch["labels"] != -100 if out.logits.dim() == 3 else None
            kd = kd_loss(out.logits, t_out.logits, self.temperature, mask=mask)
            loss = loss + self.kd_weight * kd
            logs["kd"] = kd.item()
        logs["loss"] = loss.item()
        return loss, logs


__all__ += ["eager_attention", "hidden_state_loss", "attention_loss", "context_modules", "FeatureDistillObjective"]


# --------------------------------------------------------------------------- module-output matching
# Module-level tuning (study 05) trains replacements of single modules (pruned variants) to
# reproduce what the original module computes. The original model runs frozen; a forward hook on
# each matched module hands its exact inputs (hidden states, masks, T5's position bias, cross-
# attention states) to every student of that module, so the rest of the network always sees the
# original's activations and every student trains independently, all in one forward per batch.


def forward_inputs(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The forward arguments that run ``model`` on a training batch without computing its loss.

    Labels are dropped (matching needs activations only); an encoder-decoder gets
    ``decoder_input_ids`` shifted from the labels (padding ``-100`` becomes the pad id), as in
    teacher-forced training, and ``use_cache=False``.
    """
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        if "labels" not in batch:
            raise ValueError("an encoder-decoder batch needs 'labels' to build the decoder inputs")
        labels = batch["labels"]
        if hasattr(model, "prepare_decoder_input_ids_from_labels"):
            inputs["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels=labels)
        else:
            inputs["decoder_input_ids"] = model._shift_right(labels)
        inputs["use_cache"] = False
    return inputs


def _main_output(output: Any) -> torch.Tensor:
    """The hidden-state output of a module: the tensor itself, or the first element of a tuple
    (attention blocks return ``(output, attention weights)``, T5 ``(output, position_bias, weights)``)."""
    return output[0] if isinstance(output, (tuple, list)) else output


class ModuleMatchObjective:
    """Module-output matching, an :class:`~mpstudy.train.Objective` whose model is a bank of students.

    The model :func:`mpstudy.train.train` trains is an ``nn.ModuleDict`` ``{slot: student}``;
    ``targets[slot]`` names the module of ``teacher`` that student replaces (several slots may
    replace the same module: variants of it). Per batch the teacher runs once, frozen, in eval mode
    and without gradient; a forward hook on each target module runs every student of that module on
    the very same arguments and takes the mean squared error between the student's output and the
    module's (``[B, T, hidden]``; the first element of tuple outputs). The loss is the sum over
    slots, so each student's gradient is its own error's. Logs ``loss``.

    Args:
        teacher: the original model, on the students' device; it is not changed.
        targets: ``{slot: module name in teacher}``; slots are valid ``nn.ModuleDict`` keys and
            not ``"loss"`` (:class:`ModuleMatchValidation` reports under both).
    """

    def __init__(self, teacher: nn.Module, targets: dict[str, str]) -> None:
        if not targets:
            raise ValueError("targets is empty: give {slot: module name} for at least one student")
        named = dict(teacher.named_modules())
        missing = sorted({name for name in targets.values() if name not in named})
        if missing:
            raise ValueError(f"target module(s) {missing} are not modules of the teacher")
        bad = [slot for slot in targets if not slot or "." in slot or slot == "loss"]
        if bad:
            raise ValueError(f"slot names {bad} are not allowed: no '.', not empty, not 'loss'")
        self.teacher = teacher
        self.by_module: dict[str, list[str]] = {}
        for slot, name in targets.items():
            self.by_module.setdefault(name, []).append(slot)

    def losses(self, students: nn.ModuleDict, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One teacher forward on ``batch``: ``{slot: MSE of that student}`` (scalars; they carry
        the students' gradient when grad is enabled)."""
        losses: dict[str, torch.Tensor] = {}
        grad = torch.is_grad_enabled()

        def hook_for(name: str):
            def hook(module, args, kwargs, output):
                target = _main_output(output)
                if kwargs.get("past_key_values") is not None:  # a student must not write into the teacher's cache
                    kwargs = {**kwargs, "past_key_values": None}
                with torch.set_grad_enabled(grad):  # the teacher runs without gradient, its students with
                    for slot in self.by_module[name]:
                        pred = _main_output(students[slot](*args, **kwargs))
                        if pred.shape != target.shape:
                            raise ValueError(f"student {slot!r} of {name} returned shape {tuple(pred.shape)}, "
                                             f"the teacher's module {tuple(target.shape)}")
                        losses[slot] = F.mse_loss(pred.float(), target.float())
            return hook

        handles = [self.teacher.get_submodule(name).register_forward_hook(hook_for(name), with_kwargs=True)
                   for name in self.by_module]
        was_training = self.teacher.training
        try:
            self.teacher.eval()
            with torch.no_grad():
                self.teacher(**forward_inputs(self.teacher, batch))
        finally:
            for handle in handles:
                handle.remove()
            self.teacher.train(was_training)
        missing = [slot for slots in self.by_module.values() for slot in slots if slot not in losses]
        if missing:
            raise ValueError(f"the teacher's forward never ran the target modules of slots {missing}")
        return losses

    def __call__(self, model: nn.ModuleDict, batch: dict[str, torch.Tensor], indices: list[int]):
        losses = self.losses(model, batch)
        loss = sum(losses.values())
        return loss, {"loss": loss.item()}

    @torch.no_grad()
    def validation_losses(self, students: nn.ModuleDict, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
        """``{slot: MSE}`` over ``batches`` (each batch's MSE weighted by its row count), students in eval mode."""
        was_training = students.training
        students.eval()
        device = next(students.parameters()).device
        sums: dict[str, float] = {}
        count = 0
        for batch in batches:
            n = batch["input_ids"].shape[0]
            for slot, loss in self.losses(students, {k: v.to(device) for k, v in batch.items()}).items():
                sums[slot] = sums.get(slot, 0.0) + float(loss) * n
            count += n
        students.train(was_training)
        return {slot: total / count for slot, total in sums.items()}


class ModuleMatchValidation:
    """The evaluation callback (``eval_fn`` of :func:`mpstudy.train.train`) of a module-matching run:
    every student's validation MSE, and every student's own best state.

    Each call returns ``{"loss": sum over slots, slot: MSE, ...}`` (select on ``"loss"``, lower is
    better, for the run's stopping) and snapshots each student whose own MSE is lower than at any
    earlier call (the first call included: with ``TrainConfig.eval_at_start`` the untouched student
    is a candidate). :meth:`restore` then puts every student in its own best state, which a single
    best checkpoint of the whole bank could not do. Runs on one process (under a multi-process
    launch only rank 0 evaluates, so only it holds the snapshots).

    Attributes:
        first: the MSE per slot at the first call.
        best: ``{slot: (MSE, step)}`` of each slot's best call.
    """

    def __init__(self, objective: ModuleMatchObjective, batches: Sequence[dict[str, torch.Tensor]]) -> None:
        if not batches:
            raise ValueError("no validation batches: the dev split is empty")
        self.objective, self.batches = objective, list(batches)
        self.first: dict[str, float] | None = None
        self.best: dict[str, tuple[float, int]] = {}
        self._states: dict[str, dict[str, torch.Tensor]] = {}

    def __call__(self, students: nn.ModuleDict, step: int) -> dict[str, float]:
        values = self.objective.validation_losses(students, self.batches)
        if self.first is None:
            self.first = dict(values)
        for slot, value in values.items():
            if slot not in self.best or value < self.best[slot][0]:
                self.best[slot] = (value, step)
                self._states[slot] = {n: t.detach().clone() for n, t in students[slot].state_dict().items()}
        return {"loss": sum(values.values()), **values}

    def restore(self, students: nn.ModuleDict) -> None:
        """Load each student's best state (those never evaluated are left as they are)."""
        for slot, state in self._states.items():
            students[slot].load_state_dict(state)


__all__ += ["forward_inputs", "ModuleMatchObjective", "ModuleMatchValidation"]
