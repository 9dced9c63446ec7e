"""Tasks of the study: loading GLUE / Multi30K data (local files or the Hub), synthetic tasks,
seeded subsampling, batching and fingerprints.

A :class:`Task` holds plain Python examples:

* classification / regression: ``{"text_a": str, "text_b": str | None, "label": int | float}``
* seq2seq: ``{"source": str, "target": str}`` (Multi30K: English source, German target)

Where the data comes from, in order:

1. ``data_dir=...`` passed to :func:`~mpstudy.load_task`, else the ``MPSTUDY_DATA`` environment variable:
   a folder in the standard GLUE download layout (``glue/SST-2/train.tsv`` ...) plus
   ``multi30k/{train,val}.{en,de}``. See ``data/README.md`` and ``data/datasets.yml``.
2. Otherwise the Hugging Face Hub (``nyu-mll/glue``, ``bentrevett/multi30k``); offline this fails
   with a :class:`~mpstudy.tasks.HubUnavailableError` that says how to point at local files instead.

The synthetic tasks need no data at all and are deterministic given ``seed``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
import dataclasses
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from .metrics import TASK_METRICS, TASK_NAMES, canonical_task_name, compute_metrics

__all__ = [
    "DATA_ENV_VAR",
    "DataDirError",
    "DataFormatError",
    "EMBEDDING_TASKS",
    "HubUnavailableError",
    "TASK_NAMES",
    "Task",
    "expected_files",
    "load_task",
    "load_test_split",
    "holdout_split",
    "with_source_prefix",
    "load_parallel_csv",
    "read_parallel_csv",
    "make_collate",
    "Collate",
    "TOKEN_CACHE_STORES",
    "clear_token_cache",
    "token_cache_info",
    "task_fingerprint",
    "task_head",
]

#: Environment variable naming the local data folder (used when ``data_dir`` is not passed).
DATA_ENV_VAR = "MPSTUDY_DATA"

Example = dict[str, Any]


class DataDirError(FileNotFoundError):
    """The data a task needs could not be found (missing folder or files, or no Hub access)."""


class HubUnavailableError(DataDirError):
    """No data dir was given and the Hugging Face Hub could not be reached."""


class DataFormatError(ValueError):
    """A data file exists but does not have the expected layout (names the file and line)."""


# --------------------------------------------------------------------------- the Task


@dataclass
class Task:
    """One task: its examples, what kind of model head it needs and where the data came from.

    ``num_labels`` is 2 for binary classification, 1 for regression (stsb), 0 for seq2seq.
    ``source`` is provenance (see :func:`~mpstudy.load_task`); the book prints it.
    """

    name: str
    kind: str  # "classification" | "regression" | "seq2seq"
    num_labels: int
    train: list[Example]
    dev: list[Example]
    main_metric: str
    source: dict[str, Any] = field(default_factory=dict)

    def compute_metrics(self, predictions: Any, references: Any) -> dict[str, float]:
        """All metrics of this task as plain floats; see :func:`mpstudy.metrics.compute_metrics`."""
        return compute_metrics(EMBEDDING_TASKS.get(self.name, self.name), predictions, references)

    @property
    def is_seq2seq(self) -> bool:
        return self.kind == "seq2seq"

    def __repr__(self) -> str:  # the default repr would print every example
        return (
            f"Task(name={self.name!r}, kind={self.kind!r}, num_labels={self.num_labels}, "
            f"train={len(self.train)}, dev={len(self.dev)}, main_metric={self.main_metric!r}, "
            f"source_kind={self.source.get('kind')!r})"
        )


# --------------------------------------------------------------------------- task table


@dataclass(frozen=True)
class _Spec:
    """Static facts about a real task: head type, local files, Hub location and row parser."""

    kind: str
    num_labels: int
    train_files: tuple[str, ...]  # relative to data_dir
    dev_files: tuple[str, ...]
    hub_dataset: str
    hub_config: str | None


_SPECS: dict[str, _Spec] = {
    "sst2": _Spec("classification", 2, ("glue/SST-2/train.tsv",), ("glue/SST-2/dev.tsv",), "nyu-mll/glue", "sst2"),
    "mrpc": _Spec("classification", 2, ("glue/MRPC/train.tsv",), ("glue/MRPC/dev.tsv",), "nyu-mll/glue", "mrpc"),
    "stsb": _Spec("regression", 1, ("glue/STS-B/train.tsv",), ("glue/STS-B/dev.tsv",), "nyu-mll/glue", "stsb"),
    "qnli": _Spec("classification", 2, ("glue/QNLI/train.tsv",), ("glue/QNLI/dev.tsv",), "nyu-mll/glue", "qnli"),
    "rte": _Spec("classification", 2, ("glue/RTE/train.tsv",), ("glue/RTE/dev.tsv",), "nyu-mll/glue", "rte"),
    "cola": _Spec("classification", 2, ("glue/CoLA/train.tsv",), ("glue/CoLA/dev.tsv",), "nyu-mll/glue", "cola"),
    "multi30k": _Spec(
        "seq2seq", 0, ("multi30k/train.en", "multi30k/train.de"), ("multi30k/val.en", "multi30k/val.de"),
        "bentrevett/multi30k", None,
    ),
}

_SYNTHETIC_KINDS = {"synthetic-cls": ("classification", 2), "synthetic-seq2seq": ("seq2seq", 0)}

#: embedding tasks (kind ``"embedding"``: frozen sentence embeddings scored by cosine similarity, no head,
#: no training; :mod:`mpstudy.embeddings` evaluates them) -> the task whose pairs and gold scores they read
EMBEDDING_TASKS: dict[str, str] = {"stsb-embed": "stsb"}

# GLUE NLI labels as in the Hugging Face glue datasets: entailment = 0, not_entailment = 1.
_NLI_LABELS = {"entailment": 0, "not_entailment": 1}


def expected_files(name: str) -> list[str]:
    """Files (relative to the data dir) that a real task reads; ``[]`` for synthetic tasks."""
    spec = _SPECS.get(canonical_task_name(name))
    return [] if spec is None else [*spec.train_files, *spec.dev_files]


# --------------------------------------------------------------------------- file reading


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_lines(path: Path, data: bytes) -> list[tuple[int, str]]:
    """Split file bytes into ``(line_number, text)`` pairs (1-based), dropping trailing blank lines.

    Splits on ``\\n`` only: ``str.splitlines`` would also split on rare Unicode separators
    that can occur inside sentences. A leading UTF-8 BOM (MRPC headers have one) is removed.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not valid UTF-8 at byte {exc.start}: {exc.reason}") from exc
    text = text.removeprefix("\ufeff")
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    while lines and lines[-1] == "":
        lines.pop()
    return list(enumerate(lines, start=1))


def _split_tsv(path: Path, lines: list[tuple[int, str]], ncols: int, header: tuple[str, ...] | None):
    """Yield ``(line_number, fields)`` of a GLUE TSV, checking the header and the column count.

    Fields are split on tabs only, with no quote handling: GLUE texts contain unbalanced quotes,
    which the csv module / pandas would otherwise treat as field delimiters and merge lines.
    """
    if header is not None:
        if not lines:
            raise DataFormatError(f"{path}: file is empty; expected header {_tab(header)}")
        lineno, first = lines[0]
        if tuple(first.split("\t")) != header:
            raise DataFormatError(f"{path}, line {lineno}: expected header {_tab(header)}, found {first!r}")
        lines = lines[1:]
    for lineno, line in lines:
        fields = line.split("\t")
        if len(fields) != ncols:
            raise DataFormatError(
                f"{path}, line {lineno}: expected {ncols} tab-separated columns, found {len(fields)}: {line[:120]!r}"
            )
        yield lineno, fields


def _tab(header: Sequence[str]) -> str:
    return repr("\t".join(header))


def _parse_binary(path: Path, lineno: int, value: str) -> int:
    if value not in ("0", "1"):
        raise DataFormatError(f"{path}, line {lineno}: expected label 0 or 1, found {value!r}")
    return int(value)


def _parse_nli(path: Path, lineno: int, value: str) -> int:
    if value not in _NLI_LABELS:
        raise DataFormatError(
            f"{path}, line {lineno}: expected label 'entailment' or 'not_entailment', found {value!r}"
        )
    return _NLI_LABELS[value]


def _parse_score(path: Path, lineno: int, value: str) -> float:
    try:
        score = float(value)
    except ValueError:
        score = math.nan
    if not 0.0 <= score <= 5.0:  # also rejects NaN
        raise DataFormatError(f"{path}, line {lineno}: expected a similarity score in [0, 5], found {value!r}")
    return score


def _pair(a: str, b: str | None, label: int | float) -> Example:
    return {"text_a": a, "text_b": b, "label": label}


def _parse_glue(name: str, path: Path, lines: list[tuple[int, str]]) -> list[Example]:
    """Parse one GLUE split file of task ``name`` into examples."""
    if name == "sst2":
        rows = _split_tsv(path, lines, 2, ("sentence", "label"))
        return [_pair(f[0], None, _parse_binary(path, n, f[1])) for n, f in rows]
    if name == "mrpc":
        rows = _split_tsv(path, lines, 5, ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"))
        return [_pair(f[3], f[4], _parse_binary(path, n, f[0])) for n, f in rows]
    if name == "stsb":
        header = ("index", "genre", "filename", "year", "old_index", "source1", "source2",
                  "sentence1", "sentence2", "score")
        rows = _split_tsv(path, lines, 10, header)
        return [_pair(f[7], f[8], _parse_score(path, n, f[9])) for n, f in rows]
    if name == "qnli":
        rows = _split_tsv(path, lines, 4, ("index", "question", "sentence", "label"))
        return [_pair(f[1], f[2], _parse_nli(path, n, f[3])) for n, f in rows]
    if name == "rte":
        rows = _split_tsv(path, lines, 4, ("index", "sentence1", "sentence2", "label"))
        return [_pair(f[1], f[2], _parse_nli(path, n, f[3])) for n, f in rows]
    if name == "cola":
        # CoLA's train/dev files have no header: source, label, original label ('*' or ''), sentence.
        rows = _split_tsv(path, lines, 4, None)
        return [_pair(f[3], None, _parse_binary(path, n, f[1])) for n, f in rows]
    raise AssertionError(f"no GLUE parser for {name!r}")


def parse_parallel(src_path: Path, src_lines, tgt_path: Path, tgt_lines) -> list[Example]:
    """Zip line-parallel source/target files into ``{"source", "target"}`` examples."""
    if len(src_lines) != len(tgt_lines):
        raise DataFormatError(
            f"{src_path} has {len(src_lines)} lines but {tgt_path} has {len(tgt_lines)}; "
            "expected line-parallel files with equal line counts"
        )
    return [{"source": s, "target": t} for (_, s), (_, t) in zip(src_lines, tgt_lines)]


def _missing_files_error(name: str, data_dir: Path) -> DataDirError | None:
    """A DataDirError listing every expected file (found / missing), or None if all exist."""
    files = expected_files(name)
    missing = [f for f in files if not (data_dir / f).is_file()]
    if not missing:
        return None
    listing = "\n".join(f"  {f}  ({'MISSING' if f in missing else 'found'})" for f in files)
    where = "does not exist" if not data_dir.is_dir() else f"lacks {len(missing)} of {len(files)} files"
    return DataDirError(
        f"data dir {str(data_dir)!r} {where} for task {name!r}. Expected files (relative to the data dir):\n"
        f"{listing}\n"
        f"Pass data_dir=... or set {DATA_ENV_VAR} to a folder in the standard GLUE layout "
        "(see data/README.md), or leave both unset to download from the Hugging Face Hub."
    )


def _outside_links(paths: list[Path], data_dir: Path) -> dict[str, str]:
    """``{file: where it leads}`` for each of ``paths`` that is a symbolic link out of ``data_dir``, each
    announced with a warning: a data file is read and hashed into the run's fingerprint by its place in
    the data dir, so one that leads elsewhere is followed (linking a split in is a way to reuse a file)
    but never silently; ``task.source["links"]`` records it."""
    root = Path(data_dir).resolve()
    links = {}
    for path in paths:
        real = path.resolve()
        if not real.is_relative_to(root):
            warnings.warn(f"{path} is a symbolic link out of the data dir {root}, to {real}; reading it", UserWarning,
                          stacklevel=4)
            links[str(path.relative_to(data_dir))] = str(real)
    return links


def _load_local(name: str, data_dir: Path) -> tuple[list[Example], list[Example], dict[str, str]]:
    """Read train and dev of a real task from ``data_dir``; also return ``{relpath: sha256}``."""
    error = _missing_files_error(name, data_dir)
    if error is not None:
        raise error
    spec = _SPECS[name]
    hashes: dict[str, str] = {}

    def read(rel: str) -> tuple[Path, list[tuple[int, str]]]:
        path = data_dir / rel
        data = path.read_bytes()
        hashes[rel] = _sha256(data)
        return path, decode_lines(path, data)

    splits = []
    for files in (spec.train_files, spec.dev_files):
        if spec.kind == "seq2seq":
            splits.append(parse_parallel(*read(files[0]), *read(files[1])))
        else:
            splits.append(_parse_glue(name, *read(files[0])))
    return splits[0], splits[1], hashes


# --------------------------------------------------------------------------- Hub


def _load_hub(name: str) -> tuple[list[Example], list[Example], dict[str, Any]]:
    """Load train and validation of a real task from the Hugging Face Hub.

    Any failure (no network, offline mode, missing ``datasets``) becomes a HubUnavailableError
    that explains how to use local files instead; the original error is chained.
    """
    spec = _SPECS[name]
    try:
        import datasets

        if spec.hub_config is None:
            ds = datasets.load_dataset(spec.hub_dataset)
        else:
            ds = datasets.load_dataset(spec.hub_dataset, spec.hub_config)
        train, dev = ds["train"], ds["validation"]
    except Exception as exc:  # noqa: BLE001 - every failure mode gets the same advice
        listing = "\n".join(f"  {f}" for f in expected_files(name))
        raise HubUnavailableError(
            f"task {name!r}: no data dir was given and the Hugging Face Hub could not be reached "
            f"(datasets.load_dataset({spec.hub_dataset!r}"
            f"{'' if spec.hub_config is None else ', ' + repr(spec.hub_config)}) failed with "
            f"{type(exc).__name__}: {str(exc)[:300]}).\n"
            f"Pass data_dir=... to load_task or set {DATA_ENV_VAR} to a folder holding these files:\n{listing}\n"
            "(standard GLUE download layout; see data/README.md)."
        ) from exc
    convert = _hub_seq2seq if spec.kind == "seq2seq" else _hub_pairs
    info = {
        "dataset": spec.hub_dataset,
        "config": spec.hub_config,
        # The datasets fingerprint identifies the exact cached Hub version (there are no file hashes).
        "fingerprints": {"train": getattr(train, "_fingerprint", None), "dev": getattr(dev, "_fingerprint", None)},
    }
    return convert(name, train), convert(name, dev), info


# Text columns of the Hub GLUE configs (the label column is always "label").
_HUB_COLUMNS = {
    "sst2": ("sentence", None),
    "cola": ("sentence", None),
    "mrpc": ("sentence1", "sentence2"),
    "stsb": ("sentence1", "sentence2"),
    "rte": ("sentence1", "sentence2"),
    "qnli": ("question", "sentence"),
}


def _hub_pairs(name: str, split: Any) -> list[Example]:
    col_a, col_b = _HUB_COLUMNS[name]
    a, labels = list(split[col_a]), list(split["label"])
    b = list(split[col_b]) if col_b else [None] * len(a)
    cast = float if name == "stsb" else int
    return [_pair(x, y, cast(lab)) for x, y, lab in zip(a, b, labels)]


def _hub_seq2seq(name: str, split: Any) -> list[Example]:
    return [{"source": s, "target": t} for s, t in zip(list(split["en"]), list(split["de"]))]


# --------------------------------------------------------------------------- synthetic tasks

# Small lists of real English words, all single WordPiece tokens in BERT's uncased vocabulary,
# so even a tiny model can learn the task from token identities in a few dozen steps.
_POSITIVE = (
    "good", "great", "excellent", "wonderful", "brilliant", "lovely", "superb", "enjoyable",
    "pleasant", "fantastic", "beautiful", "charming", "delightful", "amazing", "perfect", "fun",
)
_NEGATIVE = (
    "bad", "terrible", "awful", "boring", "dull", "horrible", "poor", "ugly",
    "weak", "dreadful", "tedious", "annoying", "bland", "painful", "mediocre", "messy",
)
_NEUTRAL = (
    "the", "a", "movie", "film", "plot", "story", "actors", "cast", "was", "is", "and", "with",
    "very", "quite", "ending", "music", "scenes", "really", "this", "characters", "director",
    "script", "overall", "but", "it", "of", "show", "acting",
)

# English -> German word pairs for the synthetic translation task. The German side is lower-case
# ASCII on purpose: the study's MiniLM tokenizer lower-cases and strips accents, so these words
# survive an encode/decode round trip unchanged and BLEU can reach 100.
_EN_DE = (
    ("man", "mann"), ("woman", "frau"), ("child", "kind"), ("dog", "hund"), ("cat", "katze"),
    ("house", "haus"), ("tree", "baum"), ("car", "auto"), ("water", "wasser"), ("city", "stadt"),
    ("horse", "pferd"), ("bird", "vogel"), ("book", "buch"), ("garden", "garten"), ("red", "rot"),
    ("blue", "blau"), ("yellow", "gelb"), ("black", "schwarz"), ("small", "klein"), ("old", "alt"),
    ("young", "jung"), ("runs", "rennt"), ("walks", "geht"), ("sits", "sitzt"), ("plays", "spielt"),
    ("sees", "sieht"), ("eats", "isst"), ("drinks", "trinkt"), ("reads", "liest"), ("and", "und"),
    ("with", "mit"), ("on", "auf"), ("a", "ein"), ("the", "der"), ("today", "heute"), ("here", "hier"),
    ("there", "dort"), ("now", "jetzt"), ("fast", "schnell"), ("slowly", "langsam"),
)
_EN_TO_DE = dict(_EN_DE)

_SYNTHETIC_SIZES = {"synthetic-cls": (512, 128), "synthetic-seq2seq": (512, 64)}


def _synthetic_sentiment(rng: random.Random, label: int) -> str:
    """A 4-12 word sentence whose sentiment words favour ``label`` (1 = positive); never a tie."""
    length = rng.randint(4, 12)
    # Mostly one-sided sentences, sometimes a minority word of the other polarity, so the
    # label is "which sentiment dominates" rather than "is there a positive word".
    majority = rng.randint(1, min(3, length - 1))
    minority = rng.randint(0, majority - 1) if rng.random() < 0.3 else 0
    major, minor = (_POSITIVE, _NEGATIVE) if label == 1 else (_NEGATIVE, _POSITIVE)
    words = [rng.choice(major) for _ in range(majority)] + [rng.choice(minor) for _ in range(minority)]
    words += [rng.choice(_NEUTRAL) for _ in range(length - len(words))]
    rng.shuffle(words)
    return " ".join(words)


def _synthetic_english(rng: random.Random) -> str:
    """3-8 random words from the English side of the dictionary."""
    return " ".join(rng.choice(_EN_DE)[0] for _ in range(rng.randint(3, 8)))


def _fresh(make: Callable[[], str], seen: set[str]) -> str:
    """Call ``make()`` until it returns a text not in ``seen``; record it (dev never repeats train)."""
    while True:
        text = make()
        if text not in seen:
            seen.add(text)
            return text


def _make_synthetic(name: str, seed: int) -> tuple[list[Example], list[Example]]:
    """Deterministic train/dev lists of a synthetic task (same seed -> identical data)."""
    rng = random.Random(f"mpstudy-{name}-{seed}")  # str seeds are hashed stably across processes
    seen: set[str] = set()
    splits: list[list[Example]] = []
    for n in _SYNTHETIC_SIZES[name]:
        if name == "synthetic-cls":
            labels = [i % 2 for i in range(n)]  # exactly balanced, then shuffled
            rng.shuffle(labels)
            splits.append([_pair(_fresh(partial(_synthetic_sentiment, rng, y), seen), None, y) for y in labels])
        else:
            sources = [_fresh(partial(_synthetic_english, rng), seen) for _ in range(n)]
            splits.append([{"source": s, "target": " ".join(_EN_TO_DE[w] for w in s.split())} for s in sources])
    return splits[0], splits[1]


# --------------------------------------------------------------------------- subsampling


def _check_max(value: int | None, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive int or None (all rows), got {value!r}")


def subsample(rows: list[Example], k: int | None, seed: int) -> list[Example]:
    """A seeded random subset of ``k`` rows kept in their original order (all rows if k is None or >= len)."""
    if k is None or k >= len(rows):
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), k))
    return [rows[i] for i in keep]


# --------------------------------------------------------------------------- load_task


def _resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    if data_dir is None:
        data_dir = os.environ.get(DATA_ENV_VAR) or None
    return None if data_dir is None else Path(data_dir).expanduser().resolve()


def task_head(name: str) -> tuple[str, int]:
    """``(kind, num_labels)`` of a task known by name, without reading any data."""
    if isinstance(name, str) and name.strip().lower() in EMBEDDING_TASKS:
        return "embedding", 0
    key = canonical_task_name(name)
    if key in _SYNTHETIC_KINDS:
        return _SYNTHETIC_KINDS[key]
    return _SPECS[key].kind, _SPECS[key].num_labels


def load_task(
    name: str,
    data_dir: str | os.PathLike | None = None,
    max_train: int | None = None,
    max_eval: int | None = None,
    seed: int = 0,
) -> Task:
    """Load a task by name (case-insensitive; ``SST-2``/``STS-B`` spellings accepted).

    ``data_dir`` (default: ``$MPSTUDY_DATA``) points at local files; without it real tasks come
    from the Hugging Face Hub. ``max_train``/``max_eval`` take a seeded random subset (original
    order kept); ``None`` keeps every row. ``seed`` drives the subsets and the synthetic data.

    ``task.source`` records provenance: ``kind`` ("local" | "hub" | "synthetic"), the local
    ``data_dir`` and ``files`` (relative path -> sha256) or the Hub dataset/config, plus
    ``max_train``, ``max_eval``, ``seed``, ``train_size_full`` and ``dev_size_full``.

    Raises ``ValueError`` for an unknown name or a bad ``max_*``, :class:`~mpstudy.tasks.DataDirError` for
    missing files (:class:`~mpstudy.tasks.HubUnavailableError` when the Hub cannot be reached) and
    :class:`~mpstudy.tasks.DataFormatError` for malformed files.
    """
    if isinstance(name, str) and name.strip().lower() in EMBEDDING_TASKS:
        return _embedding_task(name.strip().lower(), data_dir, max_eval, seed)
    key = canonical_task_name(name)
    _check_max(max_train, "max_train")
    _check_max(max_eval, "max_eval")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")

    if key in _SYNTHETIC_KINDS:
        kind, num_labels = _SYNTHETIC_KINDS[key]
        train, dev = _make_synthetic(key, seed)
        source: dict[str, Any] = {"kind": "synthetic", "seed": seed}
    else:
        spec = _SPECS[key]
        kind, num_labels = spec.kind, spec.num_labels
        root = _resolve_data_dir(data_dir)
        if root is not None:
            train, dev, hashes = _load_local(key, root)
            source = {"kind": "local", "data_dir": str(root), "files": hashes}
            links = _outside_links([root / rel for rel in expected_files(key)], root)
            if links:  # only then: the provenance of an ordinary data dir stays as it was
                source["links"] = links
        else:
            train, dev, hub_info = _load_hub(key)
            source = {"kind": "hub", **hub_info}

    source.update(
        max_train=max_train, max_eval=max_eval, seed=seed,
        train_size_full=len(train), dev_size_full=len(dev),
    )
    return Task(
        name=key,
        kind=kind,
        num_labels=num_labels,
        train=subsample(train, max_train, seed),
        dev=subsample(dev, max_eval, seed),
        main_metric=TASK_METRICS[key].main,
        source=source,
    )


def _embedding_task(name: str, data_dir: str | os.PathLike | None, max_eval: int | None, seed: int) -> Task:
    """An embedding task: the dev pairs and gold scores of the task it reads (``EMBEDDING_TASKS``), no training rows."""
    base = load_task(EMBEDDING_TASKS[name], data_dir=data_dir, max_train=1, max_eval=max_eval, seed=seed)
    return Task(name=name, kind="embedding", num_labels=0, train=[], dev=base.dev, main_metric=base.main_metric,
                source={**base.source, "max_train": None, "embedding_of": base.name})


# --------------------------------------------------------------------------- parallel CSV (seq2seq)


def read_parallel_csv(path: str | os.PathLike, source_column: str = "source_text",
                      target_column: str = "target_text") -> list[Example]:
    """Read a translation CSV (a header with ``source_text`` and ``target_text`` columns, the format the
    Noach & Goldberg Marian port's README asks for) into ``{"source", "target"}`` examples.

    Parsed with the csv module (quoted fields may hold commas, quotes and newlines); other columns
    are ignored. Raises :class:`DataFormatError` naming the file (and row) for a missing column or
    an empty cell, :class:`DataDirError` for a missing file.
    """
    import csv

    path = Path(path)
    if not path.is_file():
        raise DataDirError(f"no CSV file at {str(path)!r} (expected columns {source_column!r} and {target_column!r})")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in (source_column, target_column) if c not in columns]
        if missing:
            raise DataFormatError(f"{path}: header has no column(s) {missing}; found {columns}")
        rows = []
        for row in reader:
            src, tgt = row.get(source_column), row.get(target_column)
            if not src or not tgt or not src.strip() or not tgt.strip():
                raise DataFormatError(f"{path}, line {reader.line_num}: empty {source_column!r} or {target_column!r}")
            rows.append({"source": src, "target": tgt})
    if not rows:
        raise DataFormatError(f"{path}: no data rows after the header")
    return rows


def load_parallel_csv(train_path: str | os.PathLike, dev_path: str | os.PathLike | None = None,
                      name: str = "multi30k", max_train: int | None = None, max_eval: int | None = None,
                      seed: int = 0, dev_fraction: float = 0.1, source_column: str = "source_text",
                      target_column: str = "target_text") -> Task:
    """A seq2seq :class:`Task` from CSV files with ``source_text`` / ``target_text`` columns.

    ``dev_path=None`` holds out a seeded ``dev_fraction`` of the training file as the dev split.
    ``name`` picks the metric (a seq2seq task name: ``multi30k`` or ``synthetic-seq2seq``, both BLEU).
    ``task.source`` records ``kind="csv"`` and the files' sha256, as :func:`~mpstudy.load_task` does.
    """
    key = canonical_task_name(name)
    if task_head(key)[0] != "seq2seq":
        raise ValueError(f"name must be a seq2seq task (multi30k, synthetic-seq2seq) for a parallel CSV, got {name!r}")
    _check_max(max_train, "max_train")
    _check_max(max_eval, "max_eval")
    if not 0 < dev_fraction < 1:
        raise ValueError(f"dev_fraction must be in (0, 1), got {dev_fraction!r}")
    files = {str(train_path): _sha256(Path(train_path).read_bytes())} if Path(train_path).is_file() else {}
    train = read_parallel_csv(train_path, source_column, target_column)
    if dev_path is not None:
        dev = read_parallel_csv(dev_path, source_column, target_column)
        files[str(dev_path)] = _sha256(Path(dev_path).read_bytes())
    else:
        if len(train) < 2:
            raise ValueError(f"{train_path} has {len(train)} row(s): too few to hold out a dev split; pass dev_path")
        held = set(random.Random(seed).sample(range(len(train)), max(1, int(dev_fraction * len(train)))))
        dev = [r for i, r in enumerate(train) if i in held]
        train = [r for i, r in enumerate(train) if i not in held]
    source = {"kind": "csv", "files": files, "dev_fraction": None if dev_path is not None else dev_fraction,
              "max_train": max_train, "max_eval": max_eval, "seed": seed,
              "train_size_full": len(train), "dev_size_full": len(dev)}
    return Task(name=key, kind="seq2seq", num_labels=0, train=subsample(train, max_train, seed),
                dev=subsample(dev, max_eval, seed), main_metric=TASK_METRICS[key].main, source=source)


# --------------------------------------------------------------------------- batching
# Tokenization is done once per row: a batch is collated from cached per-row encodings (token ids,
# segment ids), padded here. The cache is keyed on what produced an encoding -- the tokenizer's
# fingerprint (mpstudy.cache.tokenizer_hash: class, vocabulary, special tokens, options), its
# truncation side, max_length, and the row's own text -- so it cannot go stale: a row edited in
# place, another tokenizer or another max_length is simply a miss. Keying rows by content rather
# than by task_fingerprint(task) also means two subsets of a task share their rows' encodings, and
# no call pays for hashing a whole split (task_fingerprint of SST-2's 67k rows is ~0.2 s).

#: at most this many (tokenizer, max_length, side) stores are kept; the least recently used goes
TOKEN_CACHE_STORES = 8
_TOKEN_STORES: "OrderedDict[tuple, dict[Any, tuple]]" = OrderedDict()
_TOKEN_STATS = {"hits": 0, "misses": 0}
#: id(tokenizer) -> (weak reference, len(tokenizer), fingerprint): tokenizer_hash costs ~70 ms
_TOKENIZER_KEYS: dict[int, tuple[Any, int, str]] = {}


def clear_token_cache() -> None:
    """Forget every cached encoding (and the hit/miss counts)."""
    _TOKEN_STORES.clear()
    _TOKENIZER_KEYS.clear()
    _TOKEN_STATS.update(hits=0, misses=0)


def token_cache_info() -> dict[str, int]:
    """``stores`` (tokenizer x max_length x side), ``rows`` encoded in all, ``hits`` and ``misses``
    (rows looked up since the last :func:`clear_token_cache`)."""
    return {"stores": len(_TOKEN_STORES), "rows": sum(len(s) for s in _TOKEN_STORES.values()), **_TOKEN_STATS}


def _tokenizer_key(tokenizer: Any) -> str:
    """The tokenizer's fingerprint, memoized per object (recomputed if it gained tokens)."""
    import weakref

    from .cache import tokenizer_hash

    size = len(tokenizer)
    memo = _TOKENIZER_KEYS.get(id(tokenizer))
    if memo is not None and memo[0]() is tokenizer and memo[1] == size:
        return memo[2]
    try:
        ref = weakref.ref(tokenizer)
    except TypeError:  # not weak-referenceable: no memo
        return tokenizer_hash(tokenizer)
    key = tokenizer_hash(tokenizer)
    _TOKENIZER_KEYS[id(tokenizer)] = (ref, size, key)
    return key


def _store(tokenizer: Any, max_length: int, side: str) -> dict[Any, tuple]:
    key = (_tokenizer_key(tokenizer), getattr(tokenizer, "truncation_side", "right"), max_length, side)
    store = _TOKEN_STORES.pop(key, None)
    _TOKEN_STORES[key] = store if store is not None else {}
    while len(_TOKEN_STORES) > TOKEN_CACHE_STORES:
        _TOKEN_STORES.popitem(last=False)
    return _TOKEN_STORES[key]


def _compact(encoding: dict[str, list[int]]) -> tuple:
    """``(input_ids, token_type_ids or None)`` as compact arrays; the attention mask of an unpadded
    encoding is all ones and is rebuilt when padding."""
    from array import array

    mask = encoding.get("attention_mask")
    if mask is not None and min(mask, default=1) != 1:  # never for an unpadded encoding
        raise AssertionError("an unpadded encoding has a masked position")
    types = encoding.get("token_type_ids")
    return array("i", encoding["input_ids"]), None if types is None else array("b", types)


class Collate:
    """``rows -> batch``: a ``collate_fn`` over examples of one task (see :func:`make_collate`);
    :meth:`lengths` gives each row's token count, for length-bucketed batches."""

    def __init__(self, task: Task, tokenizer: Any, max_length: int) -> None:
        self.task, self.tokenizer, self.max_length = task, tokenizer, max_length
        self.seq2seq = task.is_seq2seq
        sides = ("source", "target") if self.seq2seq else ("pair",)
        self._stores = {side: _store(tokenizer, max_length, side) for side in sides}

    # ---- encodings, cached per row
    def _encode(self, side: str, keys: list) -> list[tuple]:
        """Encodings of ``keys`` (``(text_a, text_b)`` pairs, or texts), tokenizing the missing ones in one call."""
        store = self._stores[side]
        missing = [k for k in dict.fromkeys(keys) if k not in store]
        _TOKEN_STATS["misses"] += len(missing)
        _TOKEN_STATS["hits"] += len(keys) - len(missing)
        if missing:
            args = {"truncation": True, "max_length": self.max_length}
            if side == "pair":
                for has_b in (False, True):  # a tokenizer call takes all single texts or all pairs
                    group = [k for k in missing if (k[1] is not None) == has_b]
                    if group:
                        enc = self.tokenizer([a for a, _ in group], [b for _, b in group] if has_b else None, **args)
                        store.update(zip(group, map(_compact, _rows(enc))))
            elif side == "source":
                store.update(zip(missing, map(_compact, _rows(self.tokenizer(missing, **args)))))
            else:
                store.update(zip(missing, map(_compact, _rows(self.tokenizer(text_target=missing, **args)))))
        return [store[k] for k in keys]

    def _pairs(self, rows: list[Example]) -> list[tuple]:
        return self._encode("pair", [(ex["text_a"], ex.get("text_b")) for ex in rows])

    def lengths(self, rows: list[Example]) -> list[int]:
        """Tokens of each row after truncation (seq2seq: source plus target), without padding."""
        if self.seq2seq:
            src = self._encode("source", [ex["source"] for ex in rows])
            tgt = self._encode("target", [ex["target"] for ex in rows])
            return [len(s[0]) + len(t[0]) for s, t in zip(src, tgt)]
        return [len(e[0]) for e in self._pairs(rows)]

    # ---- padding
    def _pad(self, encodings: list[tuple], pad_id: int) -> dict[str, Any]:
        """``input_ids`` / ``token_type_ids`` / ``attention_mask`` ``[B, W]`` int64, W the longest row,
        padded on the tokenizer's ``padding_side`` as its own padding would."""
        import numpy as np
        import torch

        width = max(len(e[0]) for e in encodings)
        ids = np.full((len(encodings), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        has_types = encodings[0][1] is not None
        types = np.full((len(encodings), width), getattr(self.tokenizer, "pad_token_type_id", 0), dtype=np.int64) \
            if has_types else None
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        for i, (row_ids, row_types) in enumerate(encodings):
            n = len(row_ids)
            cols = slice(width - n, width) if left else slice(0, n)
            ids[i, cols] = np.frombuffer(row_ids, dtype=np.int32)
            mask[i, cols] = 1
            if has_types:
                types[i, cols] = np.frombuffer(row_types, dtype=np.int8)
        out = {"input_ids": torch.from_numpy(ids)}
        if has_types:
            out["token_type_ids"] = torch.from_numpy(types)
        out["attention_mask"] = torch.from_numpy(mask)
        return out

    def __call__(self, batch: list[Example]) -> dict[str, Any]:
        import torch

        _check_batch(batch)
        if self.seq2seq:
            enc = self._pad(self._encode("source", [ex["source"] for ex in batch]), self.tokenizer.pad_token_id)
            # padding positions of the target are -100 so the loss ignores them (masking by position,
            # not by pad id: some tokenizers pad with the end-of-sequence id, which must still be trained on)
            tgt = self._pad(self._encode("target", [ex["target"] for ex in batch]), -100)
            return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": tgt["input_ids"]}
        has_b = [ex.get("text_b") is not None for ex in batch]
        if any(has_b) and not all(has_b):
            raise ValueError("batch mixes single sentences and sentence pairs (some text_b are None)")
        enc = self._pad(self._pairs(batch), self.tokenizer.pad_token_id)
        dtype = torch.float32 if self.task.kind == "regression" else torch.long
        enc["labels"] = torch.tensor([ex["label"] for ex in batch], dtype=dtype)
        return enc


def _rows(encoding: Any) -> list[dict[str, list[int]]]:
    """A batched tokenizer output (``{key: [row, ...]}``) as one dict per row."""
    keys = list(encoding.keys())
    return [dict(zip(keys, values)) for values in zip(*(encoding[k] for k in keys))]


def make_collate(task: Task, tokenizer: Any, max_length: int = 128) -> Collate:
    """A ``collate_fn`` for ``torch.utils.data.DataLoader`` over ``task.train`` / ``task.dev``.

    Returns ``batch -> dict`` of tensors, padded to the longest sequence *in the batch*
    (dynamic padding, width W <= max_length), exactly what the tokenizer's own batched call
    (``truncation=True, padding="longest"``) returns:

    * classification / regression: the tokenizer's ``input_ids``, ``attention_mask`` (and
      ``token_type_ids`` for BERT), each ``[B, W]`` int64, plus ``labels`` ``[B]``
      (int64 for classification, float32 for regression).
    * seq2seq: ``input_ids``, ``attention_mask`` ``[B, W_src]`` from the source and ``labels``
      ``[B, W_tgt]`` int64 from the target, with padding positions set to -100 so the loss ignores them.

    Every row is tokenized once per (tokenizer, max_length) and cached in memory (see the comment
    above :data:`TOKEN_CACHE_STORES`); ``collate.lengths(rows)`` gives the rows' token counts.
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length <= 0:
        raise ValueError(f"max_length must be a positive int, got {max_length!r}")
    return Collate(task, tokenizer, max_length)


def _check_batch(batch: list[Example]) -> None:
    if not batch:
        raise ValueError("cannot collate an empty batch")


# --------------------------------------------------------------------------- fingerprint


def task_fingerprint(task: Task) -> str:
    """A 16-hex-digit sha256 digest of what determines the task's data, for cache keys.

    Covers the name, the data files' sha256s (or Hub fingerprints / synthetic seed), the
    subsampling parameters and the selected rows themselves, so any change in data or
    selection gives a different fingerprint.
    """
    src = task.source
    payload = {
        "name": task.name,
        "kind": task.kind,
        "source": {k: src.get(k) for k in ("kind", "files", "dataset", "config", "fingerprints")},
        "max_train": src.get("max_train"),
        "max_eval": src.get("max_eval"),
        "seed": src.get("seed"),
        "train": task.train,
        "dev": task.dev,
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------- test splits and prefixes


def with_source_prefix(task, prefix: str):
    """A copy of a seq2seq task whose sources start with ``prefix`` (T5's
    ``"translate English to German: "``, as the original prepended)."""
    if not task.is_seq2seq:
        raise ValueError(f"with_source_prefix needs a seq2seq task, got {task.name!r} ({task.kind})")
    if not prefix:
        return task
    add = lambda rows: [{**ex, "source": prefix + ex["source"]} for ex in rows]  # noqa: E731
    return dataclasses.replace(task, train=add(task.train), dev=add(task.dev), source={**task.source, "source_prefix": prefix})


def holdout_split(task, share: float, seed: int = 0, name: str = "share", **source: Any):
    """A copy of ``task`` whose dev split is ``max(2, round(share * n))`` of its ``n`` training rows, drawn
    with ``seed``, and whose training split is the rest: rows to choose by (checkpoints, cuts) that are
    neither trained on nor the dev set a page reports. ``name``: the parameter ``share`` came from, for
    the error; ``source``: entries added to the copy's ``source`` (what was held out, and why)."""
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
        raise ValueError(f"{name} must be a share of the training rows in (0, 1), got {share!r}")
    rows = max(2, round(share * len(task.train)))
    if rows >= len(task.train):
        raise ValueError(f"{name} {share!r} holds out {rows} of the {len(task.train)} training rows: "
                         "nothing would be left to train on")
    held = set(random.Random(seed).sample(range(len(task.train)), rows))
    return dataclasses.replace(task, train=[ex for i, ex in enumerate(task.train) if i not in held],
                               dev=[ex for i, ex in enumerate(task.train) if i in held],
                               source={**task.source, **source} if source else task.source)


def load_test_split(task, data_dir: str | os.PathLike | None = None, max_rows: int | None = None, seed: int = 0):
    """A copy of ``task`` whose ``dev`` split is its labelled test split, or ``None`` if it has none.

    Only Multi30K has a public labelled test set here (``multi30k/test_2016_flickr.{en,de}``,
    1,000 pairs, read from ``data_dir``/``$MPSTUDY_DATA``, else the Hub's ``bentrevett/multi30k``
    ``test`` split). GLUE test labels are not public and the synthetic tasks have no test split,
    so for them the dev split is the final score.
    """
    if task.name != "multi30k":
        return None
    root = data_dir or os.environ.get(DATA_ENV_VAR) or None
    if root is not None:
        src, tgt = Path(root, "multi30k", "test_2016_flickr.en"), Path(root, "multi30k", "test_2016_flickr.de")
        for path in (src, tgt):
            if not path.is_file():
                raise FileNotFoundError(f"Multi30K test file {path} is missing (expected multi30k/test_2016_flickr.en/.de)")
        _outside_links([src, tgt], Path(root))
        rows = parse_parallel(src, decode_lines(src, src.read_bytes()), tgt, decode_lines(tgt, tgt.read_bytes()))
    else:
        import datasets

        split = datasets.load_dataset("bentrevett/multi30k")["test"]
        rows = [{"source": s, "target": t} for s, t in zip(split["en"], split["de"])]
    prefix = task.source.get("source_prefix", "")  # set by with_source_prefix
    rows = [{**r, "source": prefix + r["source"]} for r in subsample(rows, max_rows, seed)]
    return dataclasses.replace(task, dev=rows)
