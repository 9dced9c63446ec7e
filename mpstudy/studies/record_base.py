"""What every study's typed results record shares: rows whose label fields are checked against the
study's named constants, the record's frame (parameters, provenance, file name) and its JSON form.

A study's ``record.py`` declares its rows as :class:`Row` subclasses and its record as a
:class:`StudyRecord` subclass. The JSON stays the one :func:`mpstudy.records.write_record` writes:
declared fields under their JSON keys, anything else a notebook puts in a row (metric columns such as
``accuracy`` or ``f1``) kept in ``extra`` and written back beside them, so reading a committed record
and writing it again changes no key and no value (fields a row lacks are written with their default).

An unknown label is refused where the row is built, with one line naming the row, the field, the
value and what is allowed: renaming a label in a notebook stops the run instead of changing a verdict.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Self

from ..records import read_records, write_record

__all__ = ["check_label", "Row", "StudyRecord", "plain", "default_results_dir"]

def check_label(owner: str, name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise a one-line ValueError unless ``value`` is one of ``allowed``."""
    allowed = tuple(allowed)
    if (isinstance(value, Iterable) and not isinstance(value, str)) or value not in allowed:  # a list is never a label
        raise ValueError(f"{owner}.{name} must be one of {list(allowed)}, got {value!r}")


def plain(value: Any) -> Any:
    """``value`` with every typed row or record turned back into JSON-ready dicts and lists."""
    if hasattr(value, "to_dict") and isinstance(value, (Row, StudyRecord)):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _required(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING and f.kw_only is False]


@dataclass
class Row:
    """One row of a record's table. Subclasses declare the fields the study writes (typed, a default
    for those older records or other profiles may lack); ``LABELS`` maps a field to its allowed values;
    ``KEYS`` maps a field to its JSON key where that key is not a Python name (``"whole model kept"``);
    ``NESTED`` maps a field to the row type of its list (or single) items."""

    LABELS: ClassVar[dict[str, tuple[Any, ...]]] = {}
    KEYS: ClassVar[dict[str, str]] = {}
    NESTED: ClassVar[dict[str, type]] = {}
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)

    def __post_init__(self) -> None:
        for name, row_type in self.NESTED.items():
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, [row_type.from_dict(v) for v in value])
            elif isinstance(value, Mapping) and not isinstance(value, row_type):
                setattr(self, name, row_type.from_dict(value))
        for name, allowed in self.LABELS.items():
            check_label(type(self).__name__, name, getattr(self, name), allowed)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | Self) -> Self:
        """The row of a JSON dict (a DataFrame's ``to_dict(orient="records")`` item); extra keys go to ``extra``."""
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise TypeError(f"a {cls.__name__} row is built from a dict, got {type(data).__name__}")
        key_of = {f.name: cls.KEYS.get(f.name, f.name) for f in fields(cls) if f.name != "extra"}
        missing = [key_of[n] for n in _required(cls) if key_of[n] not in data]
        if missing:
            raise ValueError(f"a {cls.__name__} row needs {missing}; got keys {sorted(map(str, data))}")
        known = set(key_of.values())
        return cls(**{n: data[k] for n, k in key_of.items() if k in data},
                   extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """The row as the JSON dict it was read from (declared fields under their JSON keys, then ``extra``)."""
        out = {self.KEYS.get(f.name, f.name): plain(getattr(self, f.name)) for f in fields(self) if f.name != "extra"}
        return {**out, **plain(self.extra)}


def default_results_dir(results_dir: str | os.PathLike | None = None) -> Path:
    """``results_dir``, else ``$MPSTUDY_RESULTS``, else ``results`` (what every notebook writes into)."""
    return Path(results_dir or os.environ.get("MPSTUDY_RESULTS", "results"))


@dataclass
class StudyRecord:
    """One run of one study: its ``parameters`` (the notebook's), its ``provenance``
    (:func:`mpstudy.records.provenance`) and the study's tables, declared by each subclass.

    ``ROWS`` maps a field holding a table (a list of dicts or rows) to its :class:`Row` type: the
    dicts are turned into rows, and so checked, when the record is built. ``name`` is the file name
    (set by :meth:`read`); ``extra`` keeps top-level keys the subclass does not declare.
    """

    STUDY: ClassVar[str] = ""
    ROWS: ClassVar[dict[str, type[Row]]] = {}
    parameters: dict[str, Any]
    provenance: dict[str, Any]
    name: str = field(default="", kw_only=True)
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)

    def __post_init__(self) -> None:
        for name, row_type in self.ROWS.items():
            rows = getattr(self, name)
            if rows is None:
                continue
            if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Iterable):
                raise TypeError(f"{type(self).__name__}.{name} must be a list of {row_type.__name__} rows or dicts, "
                                f"got {type(rows).__name__}")
            setattr(self, name, [row_type.from_dict(r) for r in rows])

    # ------------------------------------------------------------------ JSON

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The typed record of one JSON record (as :func:`mpstudy.records.read_records` returns it)."""
        study = data.get("study", cls.STUDY)
        if study != cls.STUDY:
            raise ValueError(f"{cls.__name__} reads records of study {cls.STUDY!r}, got one of study {study!r}")
        names = [f.name for f in fields(cls) if f.name not in ("name", "extra")]
        missing = [n for n in _required(cls) if n not in data]
        if missing:
            raise ValueError(f"a {cls.__name__} needs {missing}; got keys {sorted(data)}")
        return cls(**{n: data[n] for n in names if n in data}, name=data.get("name", ""),
                   extra={k: v for k, v in data.items() if k not in (*names, "study", "name")})

    def to_dict(self) -> dict[str, Any]:
        """The record's JSON body (``study`` and ``name`` are added by :func:`mpstudy.records.write_record`)."""
        out = {f.name: plain(getattr(self, f.name)) for f in fields(self) if f.name not in ("name", "extra")}
        return {**out, **plain(self.extra)}

    def write(self, results_dir: str | os.PathLike | None, name: str) -> Path:
        """Store the record as ``<results_dir>/<STUDY>/<name>.json`` (atomically); ``results_dir`` None:
        ``$MPSTUDY_RESULTS``, else ``results``."""
        return write_record(default_results_dir(results_dir), self.STUDY, name, self.to_dict())

    @classmethod
    def read(cls, results_dir: str | os.PathLike | None = None) -> list[Self]:
        """Every record of the study under ``results_dir``, sorted by file name, typed."""
        return [cls.from_dict(d) for d in read_records(default_results_dir(results_dir), cls.STUDY)]

    # ------------------------------------------------------------------ what the claims read

    @property
    def profile(self) -> str:
        """The parameter set the record was made with (``smoke``, ``cpu``, ``gpu``; ``?`` if unknown)."""
        return self.provenance.get("profile", "?")

    @property
    def scale(self) -> str:
        """One line saying what the record ran (profile, model, task, training rows and seeds)."""
        prov, params = self.provenance, self.parameters
        rows = prov.get("train_rows") or params.get("max_train")
        seeds = params.get("seeds") or params.get("finetune_seeds") or [params.get("seed", prov.get("seed"))]
        return (f"{prov.get('profile', '?')} profile: {params.get('model', prov.get('model', '?'))} on "
                f"{params.get('task', prov.get('task', '?'))}, {rows} training rows, {len(seeds)} seed(s)")
