"""The registry's types: a method name -> how it replaces one group of target modules.

Kept apart from ``mpstudy/methods/__init__.py`` so that each family module imports the registry
without importing the package that imports it (no import circle).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from ..layers.base import CompressedLayer
from ..targets import Target

__all__ = ["Method", "METHODS", "register_method", "get_method", "per_matrix", "GroupCompressor"]

#: builds the replacement modules of one group: (group, budget) -> {module name: new module}
GroupCompressor = Callable[[list[Target], dict[str, Any]], dict[str, nn.Module]]


@dataclass(frozen=True)
class Method:
    """A registered compression method.

    Attributes:
        name: registry key (``"svd"``).
        description: one line for ``mpstudy --help`` and the book's tables.
        budget_keys: keyword arguments ``compress`` accepts for this method (``rank``, ``ratio``...).
        dense_types: module types it can replace (``nn.Linear``...).
        compress_group: builds the replacements of one group of targets.
        grouping: default grouping of targets (``"matrix"``: each weight alone).
        defaults: default budget values, applied when not given.
    """

    name: str
    description: str
    budget_keys: tuple[str, ...]
    dense_types: tuple[type[nn.Module], ...]
    compress_group: GroupCompressor
    grouping: str = "matrix"
    defaults: dict[str, Any] = field(default_factory=dict)

    def check_budget(self, budget: dict[str, Any]) -> dict[str, Any]:
        """Reject unknown budget keywords (naming the allowed ones); fill in defaults."""
        unknown = sorted(set(budget) - set(self.budget_keys))
        if unknown:
            raise ValueError(f"method {self.name!r} does not take {unknown}; allowed: {list(self.budget_keys)}")
        return {**self.defaults, **{k: v for k, v in budget.items() if v is not None}}


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {sorted(METHODS)}")
    return METHODS[name]


def per_matrix(layer_cls: type[CompressedLayer]) -> GroupCompressor:
    """A compressor that factorizes each target of a group on its own with ``layer_cls.from_dense``."""

    def compress_group(group: list[Target], budget: dict[str, Any]) -> dict[str, nn.Module]:
        return {t.name: layer_cls.from_dense(t.module, **budget) for t in group}

    return compress_group
