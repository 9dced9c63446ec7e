"""LoBERT: factorized BERT students (SVD, Tucker, FALCON) trained with KD and PKD's patience loss.

The pipeline of the original (SNU Data Mining Lab; methods digest, section 2):

1. fine-tune the teacher (the dense model) on the task; in the study, the shared dense baseline of each
   seed (:mod:`mpstudy.studies.dense`);
2. cache its logits and per-layer ``[CLS]`` states on the training rows once
   (:func:`mpstudy.distill.teacher_outputs`; the study's units, :mod:`~mpstudy.studies.lobert.units`, do it
   inside a unit only);
3. build the student: the **pre-trained** model (LoBERT's choice; the fine-tuned teacher is the
   alternative, ``init="teacher"``) with the weights of one mode factorized (:func:`lobert_compress`);
4. train the whole student with ``(1 - alpha) CE + alpha KD + beta PKD``
   (:class:`mpstudy.distill.DistillObjective`; :func:`lobert_objective`).

The nine modes are registered methods (:mod:`mpstudy.methods.lobert`); this module adds what a
study needs around them: the budget of each mode, students for several seeds from one
decomposition, LoBERT's per-task temperature and alpha, the conversion of its beta to this
library's patience loss, and the measured cost of a student.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...accounting import count_parameters
from ...distill import DistillObjective
from ...factorize.falcon import falcon_k_for_keep, falcon_max_k, falcon_num_params
from ...factorize.stacks import check_ranks, tucker_stack_num_params, tucker_stack_ranks
from ...factorize.svd import rank_for_keep
from ...measure import compare_latency, dummy_batch
from ...methods.lobert import DEFAULT_KEEP, LOBERT_MODES
from ...surgery import CompressionReport, compress

__all__ = ["LOBERT_MODES", "DEFAULT_KEEP", "LOBERT_KD", "mode_budget", "mode_plan", "lobert_compress", "copy_uncompressed",
           "lobert_objective", "beta_from_lobert", "student_cost"]

#: LoBERT's (temperature, alpha) per task, read from its ``kd_12layer_mean.csv`` (which is in fact
#: PKD's 6-layer vanilla-KD table renamed; STS-B and WNLI have no row)
LOBERT_KD: dict[str, tuple[float, float]] = {
    "mrpc": (20.0, 0.5), "sst2": (20.0, 0.2), "cola": (5.0, 0.7), "rte": (20.0, 0.7), "mnli": (20.0, 0.5),
    "qnli": (20.0, 0.7), "qqp": (20.0, 0.7),
}


def mode_budget(mode: str, keep: float | None = None, ranks: Any = None, k: int | None = None) -> dict[str, Any]:
    """The budget keywords of ``lobert-<mode>`` for a kept fraction ``keep``, explicit ``ranks`` (an int: the
    SVD rank; a list, or a dict role -> list: Tucker ranks) or FALCON's ``k``; none: LoBERT's default."""
    if mode not in LOBERT_MODES:
        raise ValueError(f"unknown LoBERT mode {mode!r}; known: {list(LOBERT_MODES)}")
    family = LOBERT_MODES[mode]["family"]
    given = {name: v for name, v in (("keep", keep), ("ranks", ranks), ("k", k)) if v is not None}
    if len(given) > 1:
        raise ValueError(f"give at most one of keep=, ranks=, k= for mode {mode!r}, got {sorted(given)}")
    if k is not None and family != "falcon":
        raise ValueError(f"k= is FALCON's number of products per slice; mode {mode!r} is {family}: use keep= or ranks=")
    if ranks is not None and family == "falcon":
        raise ValueError(f"mode {mode!r} is FALCON: its budget is k= (products per slice) or keep=, not ranks=")
    if family == "svd" and ranks is not None:
        return {"rank": ranks}
    return given


def mode_plan(mode: str, num_layers: int, hidden: int, intermediate: int, keep: float | None = None,
              ranks: Any = None, k: int | None = None, stack_ranks: list[int] | None = None) -> dict[str, Any]:
    """What ``mode`` stores on a BERT-shaped encoder, computed from the shapes alone (no weights).

    Args:
        mode: a LoBERT mode.
        num_layers, hidden, intermediate: the encoder's depth, hidden size and FFN size.
        keep, ranks, k, stack_ranks: the budget, as for :func:`lobert_compress`.

    Returns:
        ``dense`` (weights replaced), ``stored`` (numbers stored in their place; shared tensors once,
        biases excluded on both sides), ``kept`` = stored / dense, and ``groups``: one entry per
        factorized stack or matrix (``shape``, ``ranks`` / ``rank`` / ``k``, ``stored``). The same
        rules as ``compress``, so a test can hold both to the same numbers.
    """

    budget = mode_budget(mode, keep=keep, ranks=ranks, k=k)
    spec = LOBERT_MODES[mode]
    L, h, f = num_layers, hidden, intermediate
    shapes = {"query": (h, h), "key": (h, h), "value": (h, h), "ffn_in": (f, h), "ffn_out": (h, f)}
    roles = spec["roles"]
    groups: list[dict[str, Any]] = []
    if spec["family"] == "svd":
        for role in roles:
            m, n = shapes[role]
            r = budget["rank"] if "rank" in budget else rank_for_keep(m, n, budget.get("keep", DEFAULT_KEEP[mode]))
            if not isinstance(r, int) or isinstance(r, bool) or not 1 <= r <= min(m, n):
                raise ValueError(f"rank must be an integer in [1, {min(m, n)}] for a {m}x{n} weight, got {r!r}")
            groups += [{"role": role, "shape": [m, n], "rank": r, "stored": r * (m + n)}] * L
    else:
        stack = spec["stack"]
        if stack == "layer":
            tensors = [(roles[0], [len(roles), *shapes[roles[0]]], 1)] * L
        elif stack == "vertical":
            tensors = [(role, [L, *shapes[role]], 1) for role in roles]
        else:
            tensors = [(roles[0], [len(roles), L, *shapes[roles[0]]], 2)]
        for role, shape, n_stack in tensors:
            if spec["family"] == "tucker":
                r = budget.get("ranks")
                r = r.get(role) if isinstance(r, dict) else r
                r = (check_ranks(tuple(shape), r) if r is not None else
                     tucker_stack_ranks(shape, budget.get("keep", DEFAULT_KEEP[mode]), n_stack, stack_ranks))
                groups.append({"role": role, "shape": shape, "ranks": r, "stored": tucker_stack_num_params(tuple(shape), r)})
            else:
                kk = falcon_k_for_keep(tuple(shape), budget["keep"], spec["layout"]) if "keep" in budget else budget.get("k", 1)
                kmax = falcon_max_k(tuple(shape), spec["layout"])
                if not isinstance(kk, int) or isinstance(kk, bool) or not 1 <= kk <= kmax:
                    raise ValueError(f"k (products per slice) must be an integer in [1, {kmax}] for a stack shaped "
                                     f"{tuple(shape)}, got {kk!r}")
                groups.append({"role": role, "shape": shape, "k": kk, "layout": spec["layout"],
                               "stored": falcon_num_params(tuple(shape), kk, spec["layout"])})
    dense = sum(shapes[role][0] * shapes[role][1] for role in roles) * L
    stored = sum(g["stored"] for g in groups)
    return {"mode": mode, "dense": dense, "stored": stored, "kept": stored / dense, "groups": groups}


def lobert_compress(model: nn.Module, mode: str, keep: float | None = None, ranks: Any = None, k: int | None = None,
                    **budget: Any) -> CompressionReport:
    """Compress ``model`` in place with LoBERT's ``mode`` on the weights that mode targets.

    Args:
        model: a BERT-style Hugging Face model.
        mode: one of ``LOBERT_MODES`` (``"self_svd"``, ``"self_tuckerlayer"``...).
        keep: kept fraction of the replaced weights (biases excluded).
        ranks: the SVD rank (int) or the Tucker ranks (list, or dict role -> list).
        k: FALCON's products per slice.
        **budget: further keywords of the method (``n_iter``, ``stack_ranks``, ``fit="sgd"``...).

    Returns:
        The :class:`~mpstudy.surgery.CompressionReport`.
    """
    budget = {**mode_budget(mode, keep=keep, ranks=ranks, k=k), **budget}
    return compress(model, f"lobert-{mode}", targets=LOBERT_MODES[mode]["targets"], **budget)


@torch.no_grad()
def copy_uncompressed(student: nn.Module, donor: nn.Module) -> list[str]:
    """Copy into ``student`` every tensor of ``donor`` that ``student`` has under the same name and shape.

    A student compressed once from seed 0's model becomes seed ``s``'s student by taking seed
    ``s``'s freshly initialised head (classifier, pooler) from its model: the factorization of the
    pre-trained weights does not depend on the seed, so it is computed once. Compressed modules'
    tensors have new names and are left alone (a bias kept under its old name is the same
    pre-trained bias in both). Returns the names copied.
    """
    own = student.state_dict()
    copied = []
    for name, tensor in donor.state_dict().items():
        if name in own and own[name].shape == tensor.shape:
            own[name].copy_(tensor)
            copied.append(name)
    return copied


def beta_from_lobert(beta: float, hidden_size: int) -> float:
    """LoBERT's patience weight in this library's units.

    LoBERT's patience loss is an MSE averaged over the hidden size as well; :func:`mpstudy.distill.pkd_loss`
    sums over it, so the same weighting is ``beta / hidden_size`` (LoBERT's grid 10..1000 on
    BERT-base is 0.013..1.3 here).
    """
    if beta < 0 or hidden_size < 1:
        raise ValueError(f"need beta >= 0 and hidden_size >= 1, got beta={beta!r}, hidden_size={hidden_size!r}")
    return beta / hidden_size


def lobert_objective(teacher, alpha: float = 0.5, temperature: float = 20.0, beta: float = 0.0,
                     normalize: bool = True, layers: list[int] | None = None):
    """LoBERT's loss ``(1 - alpha) CE + alpha T^2 KL + beta PKD`` as a :class:`~mpstudy.distill.DistillObjective`.

    Args:
        teacher: cached :class:`~mpstudy.distill.TeacherOutputs` (or a teacher model).
        alpha, temperature: KD weight and temperature (LoBERT's per task: :data:`LOBERT_KD`).
        beta: patience weight in this library's units (:func:`beta_from_lobert`); 0 disables PKD.
        normalize: L2-normalize the ``[CLS]`` states (PKD's ``normalize_patience``).
        layers: hidden-state indices matched by the patience loss (default: every layer but the last,
            LoBERT's ``fc_layer_idx``; the student has the teacher's depth, so indices coincide).
    """

    return DistillObjective(teacher, alpha=alpha, temperature=temperature, beta=beta, student_layers=layers,
                            teacher_layers=layers, normalize=normalize)


def student_cost(dense: nn.Module, student: nn.Module, tokenizer, batch_size: int = 32, seq_len: int = 64,
                 repeats: int = 10, threads: int | None = None) -> dict[str, Any]:
    """Stored parameters and measured forward latency of ``student`` against ``dense`` (same process, alternated).

    Returns ``stored`` / ``dense_stored`` / ``param_ratio`` (whole model, shared tensors once), and
    ``latency_ratio`` (student / dense median forward time on a fixed batch, eval mode; factorized
    Tucker and FALCON layers decode their weight once and reuse it there) with the two medians and
    the torch ``threads`` they were timed with (``mpstudy.measure.compare_latency``; ``None``: the
    current count).
    """

    device = next(dense.parameters()).device
    batch = dummy_batch(tokenizer, batch_size=batch_size, seq_len=seq_len, device=device)
    timing = compare_latency(dense, student, batch, repeats=repeats, threads=threads)
    stored = count_parameters(student, nonzero=False)["stored"]
    base = count_parameters(dense, nonzero=False)["stored"]
    return {"stored": stored, "dense_stored": base, "param_ratio": stored / base,
            "latency_ratio": timing["candidate_ms"] / timing["baseline_ms"], "dense_ms": timing["baseline_ms"],
            "student_ms": timing["candidate_ms"], "threads": timing["threads"]}
