"""The declared parameters of a study notebook, their types, and the check every run makes against them.

A study's ``parameters`` cell declares each parameter with a type annotation and a comment::

    lr: float = 1e-3                    # peak learning rate
    max_eval: Optional[int] = 128       # seeded subset of the dev split (None: all rows)

which ``papermill --help-notebook`` shows (papermill reads annotations made of words, ``[``, ``]``
and ``,``: hence ``Optional[int]``, not ``int | None``). The annotation language understood here:
``int float str bool list dict Any`` and ``list[T]``, ``dict[K, V]``, ``Optional[T]``,
``Union[A, B, ...]``; an unannotated parameter is ``Any``.

:func:`check_parameters` checks a whole parameter set (a profile's values, ``-p`` overrides) before
anything runs: every name must be declared and every value of its type, else one ``ValueError``
line names the notebook, the parameter, the value and the type. :func:`parse_text` types a ``-p
NAME VALUE`` text by the declared type: ``-p lr 1e-3`` is the float 0.001 (YAML alone reads
``1e-3`` as a string), ``-p task_name yes`` the string ``"yes"`` (YAML would say ``True``).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

__all__ = ["ParamType", "Declared", "parse_type", "declared_parameters", "coerce", "parse_text",
           "check_parameters", "parse_overrides"]

_SCALARS = ("int", "float", "str", "bool", "Any", "None")
#: generic -> the numbers of type arguments it takes
_GENERICS = {"list": {0, 1}, "dict": {0, 2}, "Optional": {1}, "Union": set(range(2, 33))}


@dataclass(frozen=True)
class ParamType:
    """A parsed annotation: ``name`` is a scalar (``int float str bool Any None``) or a generic
    (``list dict Optional Union``) with its ``args``."""

    name: str
    args: tuple["ParamType", ...] = ()

    def __str__(self) -> str:
        return self.name + (f"[{', '.join(map(str, self.args))}]" if self.args else "")

    def accepts_raw_text(self) -> bool:
        """True when a ``-p`` text is taken as it is (a ``str``, or ``Optional[str]`` unless ``null``)."""
        return self.name == "str" or (self.name == "Optional" and self.args[0].name == "str")


ANY = ParamType("Any")


@dataclass(frozen=True)
class Declared:
    """One parameter of a notebook's ``parameters`` cell: its type, default (source text) and help."""

    name: str
    type: ParamType
    default: str
    help: str


_TOKEN = re.compile(r"\s*(\w+|\[|\]|,)")


def parse_type(text: str) -> ParamType:
    """Parse an annotation such as ``"Optional[list[float]]"``; ``"None"``/``""`` (none given) is ``Any``."""
    text = (text or "").strip().strip("'\"")
    if text in ("", "None"):
        return ANY
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"cannot read type annotation {text!r}: use {', '.join(_SCALARS[:-1])}, "
                             f"list[T], dict[K, V], Optional[T], Union[A, B]")
        tokens.append(m.group(1))
        pos = m.end()

    def parse(i: int) -> tuple[ParamType, int]:
        name = tokens[i]
        if name not in _SCALARS and name not in _GENERICS:
            raise ValueError(f"unknown type {name!r} in annotation {text!r}; known: "
                             f"{', '.join(_SCALARS[:-1])}, {', '.join(_GENERICS)}")
        i += 1
        args: list[ParamType] = []
        if i < len(tokens) and tokens[i] == "[":
            i += 1
            while True:
                arg, i = parse(i)
                args.append(arg)
                if i >= len(tokens):
                    raise ValueError(f"unclosed '[' in annotation {text!r}")
                if tokens[i] == "]":
                    i += 1
                    break
                if tokens[i] != ",":
                    raise ValueError(f"expected ',' or ']' in annotation {text!r}, got {tokens[i]!r}")
                i += 1
        allowed = _GENERICS.get(name, {0})
        if len(args) not in allowed:
            counts = f"{min(allowed)} or more" if len(allowed) > 2 else " or ".join(map(str, sorted(allowed)))
            raise ValueError(f"{name} takes {counts} type arguments, got {len(args)} in annotation {text!r}")
        return ParamType(name, tuple(args)), i

    try:
        parsed, end = parse(0)
    except IndexError:
        raise ValueError(f"incomplete type annotation {text!r}") from None
    if end != len(tokens):
        raise ValueError(f"unexpected {tokens[end]!r} in type annotation {text!r}")
    return parsed


def declared_parameters(notebook: str | os.PathLike) -> dict[str, Declared]:
    """The parameters a notebook's ``parameters`` cell declares, as papermill reads them, in cell order."""
    import papermill

    notebook = Path(notebook)
    out = {}
    for name, info in papermill.inspect_notebook(str(notebook)).items():
        try:
            kind = parse_type(info.get("inferred_type_name", "None"))
        except ValueError as err:
            raise ValueError(f"{notebook.name}: parameter {name}: {err}") from None
        out[name] = Declared(name, kind, info.get("default", ""), info.get("help", ""))
    return out


class _Mismatch(Exception):
    pass


def _describe(value: Any) -> str:
    text = repr(value)
    return (text if len(text) <= 60 else text[:57] + "...") + f" ({type(value).__name__})"


def coerce(value: Any, kind: ParamType) -> Any:
    """``value`` as a value of ``kind``, or ``_Mismatch``.

    Exact but for two conversions: an int where a float is declared stays an int (Python's numeric
    tower), and a string where a float is declared is read as a float if it is one (``"1e-3"``). A
    bool is never an int or a float; a float is never an int.
    """
    name = kind.name
    if name == "Any":
        return value
    if name == "None":
        if value is None:
            return None
        raise _Mismatch
    if name == "Optional":
        return None if value is None else coerce(value, kind.args[0])
    if name == "Union":
        for arg in kind.args:
            try:
                return coerce(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if name == "bool":
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if name == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if name == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise _Mismatch from None
            if math.isnan(number) and value.strip().lower() != "nan":
                raise _Mismatch
            return number
        raise _Mismatch
    if name == "str":
        if isinstance(value, str):
            return value
        raise _Mismatch
    if name == "list":
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        return [coerce(v, kind.args[0]) for v in value] if kind.args else list(value)
    if name == "dict":
        if not isinstance(value, Mapping):
            raise _Mismatch
        if not kind.args:
            return dict(value)
        key_type, value_type = kind.args
        return {coerce(k, key_type): coerce(v, value_type) for k, v in value.items()}
    raise _Mismatch  # pragma: no cover - parse_type admits no other name


def parse_text(text: str, kind: ParamType) -> Any:
    """A ``-p NAME VALUE`` text as a value of the declared ``kind`` (raises ``_Mismatch``).

    ``str`` parameters take the text as it is; ``Optional[str]`` too, but ``null``/``None``/``~``
    give None; every other type reads the text as YAML (``3``, ``[0.5, 0.3]``, ``{key: 3}``,
    ``null``, ``true``) and then converts it like :func:`coerce` (``1e-3`` -> 0.001 for a float).
    """
    import yaml

    if kind.accepts_raw_text():
        return None if kind.name == "Optional" and text.strip() in ("null", "None", "~") else text
    if text.strip() == "None":  # the Python spelling of YAML's null, as the cell's defaults write it
        return coerce(None, kind)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    return coerce(value, kind)


def _unknown(notebook_name: str, names, declared: Mapping[str, Declared]) -> ValueError:
    return ValueError(f"{notebook_name} has no parameter(s) {sorted(names)}; its parameters are {sorted(declared)}")


def check_parameters(notebook_name: str, declared: Mapping[str, Declared], params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` checked against the declared names and types; returns them (floats given as text
    converted). Raises one ``ValueError`` line for the first unknown name or value of a wrong type."""
    unknown = set(params) - set(declared)
    if unknown:
        raise _unknown(notebook_name, unknown, declared)
    out = {}
    for name, value in params.items():
        kind = declared[name].type
        try:
            out[name] = coerce(value, kind)
        except _Mismatch:
            raise ValueError(f"{notebook_name}: parameter {name} must be of type {kind}, got {_describe(value)}") from None
    return out


def parse_overrides(notebook_name: str, declared: Mapping[str, Declared], pairs) -> dict[str, Any]:
    """``-p NAME VALUE`` pairs (texts) typed by the declared types; one ``ValueError`` line on an
    unknown name or a text that is not of its parameter's type."""
    pairs = list(pairs or [])
    unknown = {name for name, _ in pairs if name not in declared}
    if unknown:
        raise _unknown(notebook_name, unknown, declared)
    out = {}
    for name, text in pairs:
        kind = declared[name].type
        try:
            out[name] = parse_text(text, kind)
        except _Mismatch:
            raise ValueError(f"{notebook_name}: -p {name} {text!r} is not of type {kind}") from None
    return out
