"""A small T5 trained from scratch on Multi30K en->de: the seq2seq model the studies compress.

No pre-trained encoder-decoder can be loaded offline here, so the seq2seq tracks (study 03's SVD +
feature distillation + KD, study 05's T5 head pruning) start from one trained here:

* :func:`train_tokenizer`: a byte-pair-encoding vocabulary (Hugging Face ``tokenizers``) learnt
  on the training split only, source and target together (one shared vocabulary, so the tied
  input/output embeddings of T5 serve both languages), with T5's special ids
  (``<pad>`` = 0, also the decoder start; ``</s>`` = 1, appended to every sequence; ``<unk>`` = 2)
  and SentencePiece's word marker ``▁`` (lossless up to runs of spaces).
* :func:`t5_config`: a T5 (relative attention buckets, tied embeddings, ReLU FFN) of a named size;
  :func:`t5_param_groups` its AdamW rates; :class:`LabelSmoothedLoss` its objective.
* :func:`scratch_translation_model`: tokenizer + random-init T5 + :func:`mpstudy.train.train`,
  cached under ``default_cache_dir()/"translation"/<key>`` (key: tokenizer recipe, model config,
  training config, the task's rows and data files, mpstudy's code and library versions); a second
  call with the same recipe loads it (``load_model`` reads the directory too).

Why BPE and not Unigram: ``tokenizers``' Unigram trainer gave a different vocabulary on every
call on the same rows (its pruning depends on the iteration order of Rust hash maps, whose keys are
random per map), while its BPE trainer gave the same bytes on every call and in every process, so
the cached model is reproducible from its recipe. Punctuation is split off words before merging
(as SentencePiece's script split does), so ``"Tisch."`` is ``▁Tisch`` + ``.``, not a piece of its own.

Why per-weight learning rates (:func:`t5_param_groups`): T5's initialisation was made for
Adafactor's relative steps; with AdamW at one rate the model barely learnt in the first epochs
(greedy BLEU 1.9 on 300 test2016 rows after 700 steps), with rates relative to each weight's scale
and the embedding far faster it reached 22.7 after 800 steps.
"""
from __future__ import annotations

import json
import os
import random
import string
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .cache import cache_key, cache_key_payload, default_cache_dir
from .models import load_model
from .records import atomic_directory
from .tasks import Task, load_task, task_fingerprint
from .train import TrainConfig, train

__all__ = ["SPECIAL_TOKENS", "T5_SIZES", "TRANSLATION_CONFIG", "train_tokenizer", "t5_config",
           "LabelSmoothedLoss", "t5_param_groups", "translation_key", "scratch_translation_model"]

#: T5's special tokens in id order, ``<pad>`` = 0 (also the decoder start), ``</s>`` = 1, ``<unk>`` = 2
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")

#: characters every vocabulary holds even when the training rows lack them (so a test sentence with
#: a "?" or a "ß" the rows never had is not ``<unk>``): printable ASCII, German and common Latin-1 letters
_ALPHABET = sorted(set(string.ascii_letters + string.digits + string.punctuation
                       + "äöüÄÖÜßéèêëáàâíìîóòôúùûçñ„“”‚‘’–—…«»"))

#: the T5 sizes, by ``d_model``, ``d_kv`` (per head), ``d_ff``, encoder/decoder layers, heads and the
#: relative-attention buckets. "tiny" is for tests (seconds); "small" is the Multi30K model.
T5_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
                 relative_attention_num_buckets=16, relative_attention_max_distance=64),
    "small": dict(d_model=256, d_kv=64, d_ff=1024, num_layers=3, num_decoder_layers=3, num_heads=4,
                  relative_attention_num_buckets=32, relative_attention_max_distance=128),
}

#: the training recipe of the "small" Multi30K model (``bench/train_translation.py`` records its
#: BLEU and CPU-hours): AdamW with T5's rates relative to each weight's scale (:func:`t5_param_groups`:
#: 1e-3 for the d_model**-0.5-scale projections, 80x for the embedding), linear warmup over 5 % and
#: decay, 10 epochs of 64 rows (4,540 steps, ~0.55 CPU-seconds each at one thread in bf16: ~0.7
#: CPU-hours), bf16 autocast, length-bucketed batches, label smoothing 0.1 (:class:`LabelSmoothedLoss`,
#: passed by :func:`scratch_translation_model`), one greedy-BLEU evaluation of the validation split
#: per epoch choosing the best checkpoint. A probe of 800 steps (1.8 epochs, 7.3 CPU-minutes) of
#: the same recipe already reached greedy BLEU 22.7 on 300 test2016 rows.
TRANSLATION_CONFIG = TrainConfig(lr=1e-3, epochs=10, batch_size=64, eval_batch_size=128, warmup_ratio=0.05,
                                 weight_decay=0.01, max_grad_norm=1.0, max_length=128, max_new_tokens=64,
                                 precision="bf16", bucket_batches=50, progress=False)


# --------------------------------------------------------------------------- tokenizer


def _rows(task_or_rows: Task | Sequence[dict[str, str]]) -> list[dict[str, str]]:
    rows = task_or_rows.train if isinstance(task_or_rows, Task) else list(task_or_rows)
    if isinstance(task_or_rows, Task) and not task_or_rows.is_seq2seq:
        raise ValueError(f"train_tokenizer needs a seq2seq task (source/target rows), got {task_or_rows.name!r}")
    if not rows or not all(isinstance(r, dict) and isinstance(r.get("source"), str) and isinstance(r.get("target"), str)
                           for r in rows):
        raise ValueError("train_tokenizer needs a non-empty list of {'source': str, 'target': str} rows (or a seq2seq Task)")
    return rows


def train_tokenizer(task_or_rows: Task | Sequence[dict[str, str]], vocab_size: int = 8000, seed: int = 0,
                    max_rows: int | None = None, model_max_length: int = 512):
    """A shared source/target BPE tokenizer learnt on the training rows, with T5's special ids.

    Args:
        task_or_rows: a seq2seq :class:`~mpstudy.tasks.Task` (its ``train`` split only is read:
            the dev and test rows never shape the vocabulary) or its rows, ``{"source", "target"}``.
        vocab_size: the vocabulary size, special tokens included (the trainer stops earlier when
            the rows have fewer merges to make).
        seed: picks the ``max_rows`` subset; the BPE trainer itself is deterministic.
        max_rows: learn from a seeded random subset of this many rows (``None``: all).
        model_max_length: what the tokenizer reports as its longest input.

    Returns:
        A ``transformers`` fast tokenizer (``PreTrainedTokenizerFast``): ``tok("A dog.")`` ends in
        ``</s>`` (id 1), ``pad_token_id`` 0, ``unk_token_id`` 2; ``save_pretrained`` /
        ``AutoTokenizer.from_pretrained`` round-trip it (same ids, same decoding).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < len(SPECIAL_TOKENS) + len(_ALPHABET):
        raise ValueError(f"vocab_size must be an int >= {len(SPECIAL_TOKENS) + len(_ALPHABET)} "
                         f"(specials + base alphabet), got {vocab_size!r}")
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1):
        raise ValueError(f"max_rows must be a positive int or None, got {max_rows!r}")
    rows = _rows(task_or_rows)
    if max_rows is not None and max_rows < len(rows):
        rows = [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), max_rows))]

    marker = "▁"  # SentencePiece's word-start marker, as T5's own tokenizer has it
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement=marker, prepend_scheme="always", split=True),
        pre_tokenizers.Punctuation("isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement=marker, prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=_ALPHABET + [marker], show_progress=False)
    tok.train_from_iterator([r["source"] for r in rows] + [r["target"] for r in rows], trainer=trainer)
    eos = tok.token_to_id("</s>")
    # T5 appends </s> to sources and targets alike (the decoder learns to stop)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", eos)])
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if ids != [0, 1, 2]:  # pragma: no cover - the trainer puts special tokens first, in order
        raise AssertionError(f"special tokens {SPECIAL_TOKENS} got ids {ids}, expected [0, 1, 2]")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=model_max_length)


# --------------------------------------------------------------------------- model


def t5_config(size: str = "small", vocab_size: int = 8000, dropout: float = 0.1):
    """A ``T5Config`` of a named size (:data:`T5_SIZES`) for a tokenizer of ``vocab_size`` tokens
    with T5's special ids (pad = decoder start = 0, eos = 1): tied input/output embeddings, ReLU
    feed-forward, relative position buckets (T5 v1.0's layout, the one head pruning must handle)."""
    import transformers

    if size not in T5_SIZES:
        raise ValueError(f"size must be one of {sorted(T5_SIZES)}, got {size!r}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab_size must be an int > {len(SPECIAL_TOKENS)}, got {vocab_size!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return transformers.T5Config(vocab_size=vocab_size, **T5_SIZES[size], dropout_rate=dropout,
                                 feed_forward_proj="relu", tie_word_embeddings=True, pad_token_id=0, eos_token_id=1,
                                 decoder_start_token_id=0)


class LabelSmoothedLoss:
    """Token cross-entropy with label smoothing ``epsilon`` (Szegedy et al. 2016; the Transformer's
    0.1), padding (-100) ignored: an :class:`~mpstudy.train.Objective` for :func:`mpstudy.train.train`
    (its default ``TaskLoss`` is the model's own unsmoothed loss). The logged ``nll`` is the
    unsmoothed cross-entropy of the same forward, comparable with the model's own loss."""

    def __init__(self, epsilon: float = 0.1) -> None:
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"label smoothing epsilon must be in [0, 1), got {epsilon!r}")
        self.epsilon = epsilon

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], indices: list[int]):
        labels = batch["labels"]
        # the decoder inputs are the labels shifted right (T5 does this itself when given labels;
        # passing them explicitly skips the model's own, unsmoothed, loss)
        decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=decoder_input_ids).logits.float()  # [B, T, V]
        flat, target = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
        loss = nn.functional.cross_entropy(flat, target, ignore_index=-100, label_smoothing=self.epsilon)
        with torch.no_grad():
            nll = nn.functional.cross_entropy(flat, target, ignore_index=-100)
        return loss, {"loss": loss.item(), "nll": nll.item()}


#: T5's initialisation std of each weight matrix (``T5PreTrainedModel._init_weights``, factor 1), by
#: the last two parts of its name, as a function of the config
_T5_INIT_STD = {
    "q": lambda c: (c.d_model * c.d_kv) ** -0.5, "k": lambda c: c.d_model ** -0.5, "v": lambda c: c.d_model ** -0.5,
    "o": lambda c: (c.num_heads * c.d_kv) ** -0.5, "wi": lambda c: c.d_model ** -0.5, "wo": lambda c: c.d_ff ** -0.5,
    "relative_attention_bias": lambda c: c.d_model ** -0.5,
}


def t5_param_groups(model: nn.Module, lr: float, weight_decay: float = 0.01,
                    embedding_lr_scale: float = 80.0) -> list[dict[str, Any]]:
    """AdamW parameter groups for a T5 trained from scratch: each weight's learning rate in
    proportion to its initial scale, as Adafactor's relative steps (T5's own optimizer) have it.

    The shared (tied input/output) embedding trains at ``embedding_lr_scale`` x ``lr`` without
    weight decay; every other weight matrix at ``lr`` x its initialisation std over ``d_model**-0.5``
    (the query projections ``d_kv**-0.5``, 1/8 here; the FFN output ``sqrt(d_model / d_ff)``, 1/2;
    the rest 1) with ``weight_decay``; norms at ``lr`` without decay.

    Why: T5 initialises its embedding at std 1, its query projections at std ``(d_model*d_kv)**-0.5``
    and most others at ``d_model**-0.5``, a layout made for Adafactor, whose steps are relative to
    each weight's size. AdamW's steps are ~``lr`` for every weight: at one rate the embedding -- also
    the output layer -- moves ~16x slower relative to its size than most projections (the decoder
    aims at nearly frozen random word vectors) and the query projections 8x faster. Measured on
    Multi30K (400 steps of 64 rows, warmup 100, bf16, the same data order; validation token NLL and
    greedy BLEU on 150 rows; ``lr`` 1e-3 unless said):

    ==========================================  =====  =====
    rates                                        NLL    BLEU
    ==========================================  =====  =====
    one rate                                     5.20    3.6
    one rate, 2e-3                               5.15    3.2
    embedding 20x, others at ``lr``              4.27    5.4
    embedding 40x, others at ``lr``              4.01    5.5
    relative, embedding 20x                      4.02    9.3
    relative, embedding 20x, ``lr`` 2e-3         3.72   11.2
    relative, embedding 40x                      3.66   11.7
    relative, embedding 80x (the default)        3.36   15.1
    relative, embedding 160x                     3.16   14.9
    ==========================================  =====  =====

    80x rather than 160x: the same BLEU, and half the step size on the embedding through the long
    run. Shrinking the embedding's initialisation instead was worse (NLL 6.96 against 5.54 at 250
    steps): the tied output logits then start near zero.
    """
    if not embedding_lr_scale > 0:
        raise ValueError(f"embedding_lr_scale must be > 0, got {embedding_lr_scale!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    config = model.config
    shared = model.get_input_embeddings().weight
    reference = config.d_model ** -0.5
    by_scale: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():  # a tied tensor is listed once
        if not p.requires_grad or p is shared:
            continue
        parts = name.split(".")
        if p.dim() < 2:  # RMSNorm weights
            scale, decay = 1.0, 0.0
        else:
            role = "relative_attention_bias" if "relative_attention_bias" in parts else parts[-2]
            if role not in _T5_INIT_STD:
                raise ValueError(f"t5_param_groups: no T5 initialisation known for {name!r}; is this a T5 model?")
            scale, decay = _T5_INIT_STD[role](config) / reference, weight_decay
        by_scale.setdefault((scale, decay), []).append(p)
    groups = [{"params": params, "weight_decay": decay, "lr": lr * scale} for (scale, decay), params in by_scale.items()]
    return [*groups, {"params": [shared], "weight_decay": 0.0, "lr": lr * embedding_lr_scale}]


# --------------------------------------------------------------------------- the cached model


def translation_key(task: Task, size: str, vocab_size: int, config: TrainConfig, label_smoothing: float,
                    dropout: float, tokenizer_rows: int | None = None,
                    embedding_lr_scale: float = 80.0) -> tuple[str, dict[str, Any]]:
    """``(key, payload)`` of the model :func:`scratch_translation_model` trains from this recipe
    (see :func:`mpstudy.cache.cache_key`): the tokenizer recipe (algorithm, size, rows, the
    ``tokenizers`` version that learns it), the model config, the training config, the task's rows
    and data files; mpstudy's code and the torch/transformers versions are added by ``cache_key``."""
    import tokenizers

    spec = {"tokenizer": {"algorithm": "bpe", "vocab_size": vocab_size, "max_rows": tokenizer_rows,
                          "specials": list(SPECIAL_TOKENS), "tokenizers": tokenizers.__version__},
            "model": t5_config(size, vocab_size, dropout).to_diff_dict(), "size": size,
            "train": config.key_fields(), "label_smoothing": label_smoothing,
            "embedding_lr_scale": embedding_lr_scale}
    data = task_fingerprint(task)
    return cache_key("translation", spec, data=data), cache_key_payload("translation", spec, data=data)


def scratch_translation_model(data_dir: str | os.PathLike | None = None, seed: int = 0, size: str = "small",
                              config: TrainConfig | None = None, cache_dir: str | os.PathLike | None = None, *,
                              task: Task | None = None, vocab_size: int = 8000, label_smoothing: float = 0.1,
                              dropout: float = 0.1, tokenizer_rows: int | None = None,
                              embedding_lr_scale: float = 80.0):
    """The T5 trained from scratch on Multi30K en->de (or ``task``), trained once and then loaded from the cache.

    Args:
        data_dir: the data folder holding ``multi30k/`` (default ``$MPSTUDY_DATA``); ignored when
            ``task`` is given.
        seed: seeds the weight initialisation, dropout and the data order (it replaces ``config.seed``).
        size: a key of :data:`T5_SIZES`.
        config: the training configuration (default :data:`TRANSLATION_CONFIG`); its evaluation is
            greedy BLEU on ``task.dev`` (Multi30K's validation split), which picks the best checkpoint.
        cache_dir: where models live (default ``default_cache_dir()``); the model is stored under
            ``<cache_dir>/translation/<task>-t5-<size>-<key>``.
        task: a seq2seq task to train on instead of loading Multi30K (tests pass a few rows).
        vocab_size: the tokenizer's vocabulary size (:func:`train_tokenizer`).
        label_smoothing: epsilon of :class:`LabelSmoothedLoss` (0: the plain token cross-entropy).
        dropout: T5's dropout rate.
        tokenizer_rows: learn the tokenizer on a seeded subset of this many training rows (``None``: all).
        embedding_lr_scale: the shared embedding's learning rate over ``config.lr`` (:func:`t5_param_groups`).

    Returns:
        ``(model, tokenizer, info)``, the model on the CPU in eval mode, both as ``load_model`` reads
        them from the cache directory. ``info``: ``cache_key``, ``key_payload``, ``path``, ``cached``
        (True if loaded rather than trained), ``dev_metrics`` (the best validation BLEU), ``result``
        (the training history), ``train_config``, ``size``, ``vocab_size``, ``params``, and what the
        training cost: ``wall_seconds``, ``cpu_seconds`` (this process, all threads; tokenizer and
        evaluations included) and ``torch_threads``.
    """
    import transformers

    config = replace(config or TRANSLATION_CONFIG, seed=seed)
    # the recipe is checked before any data is read: size, vocabulary, dropout, smoothing, embedding rate
    t5_config(size, vocab_size, dropout)
    smoothed = LabelSmoothedLoss(label_smoothing)
    if not embedding_lr_scale > 0:
        raise ValueError(f"embedding_lr_scale must be > 0, got {embedding_lr_scale!r}")
    if task is None:
        task = load_task("multi30k", data_dir=data_dir)
    if not task.is_seq2seq:
        raise ValueError(f"scratch_translation_model needs a seq2seq task, got {task.name!r} ({task.kind})")
    key, payload = translation_key(task, size, vocab_size, config, label_smoothing, dropout, tokenizer_rows,
                                   embedding_lr_scale)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_dir / "translation" / f"{task.name}-t5-{size}-{key}"
    meta_file = path / "translation.json"
    if meta_file.exists():
        model, tokenizer = load_model(path, task=task)
        return model, tokenizer, {**json.loads(meta_file.read_text()), "path": str(path), "cached": True}

    objective = smoothed if label_smoothing > 0 else None  # None: the model's own loss
    # CPU time (all threads of this process) is the budget the issue states, robust to a busy machine
    wall, cpu = time.perf_counter(), time.process_time()
    tokenizer = train_tokenizer(task, vocab_size=vocab_size, seed=seed, max_rows=tokenizer_rows)
    transformers.set_seed(seed)  # the initial weights
    model = transformers.T5ForConditionalGeneration(t5_config(size, len(tokenizer), dropout))
    groups = t5_param_groups(model, config.lr, config.weight_decay, embedding_lr_scale)
    result = train(model, tokenizer, task, config, objective=objective, param_groups=groups)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    meta: dict[str, Any] = {"cache_key": key, "key_payload": payload, "task": task.name, "size": size,
                            "vocab_size": len(tokenizer), "label_smoothing": label_smoothing, "dropout": dropout,
                            "embedding_lr_scale": embedding_lr_scale,
                            "seed": seed, "dev_metrics": result.best_metrics, "params": result.params,
                            "wall_seconds": wall, "cpu_seconds": cpu, "torch_threads": torch.get_num_threads(),
                            "result": result.to_dict(), "train_config": asdict(config)}
    text = json.dumps(meta, indent=2, default=str)
    # an interrupted run never leaves a half-saved model (translation.json marks a complete one)
    with atomic_directory(path, marker="translation.json", kind="a cached scratch-trained translation model") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "translation.json").write_text(text)
    # both calls return what the directory holds (a reloaded tokenizer's init options differ from a fresh one's)
    model, tokenizer = load_model(path, task=task)
    return model, tokenizer, {**meta, "path": str(path), "cached": False}
