"""The registry's types: a method name -> how it compresses a group of targets and meets a budget.

Kept apart from ``mpstudy/methods/__init__.py`` so that each family module imports the registry
without importing the package that imports it (no import circle).

The budget: ``keep``, the fraction of the targeted weights a method keeps, in (0, 1]
(``CR = 1 / keep`` is only a display). Every method registered here takes ``keep=``, either
directly (a rank rule, a share of stored numbers) or through a ``search`` that turns it into the
method's own discrete structure (an MPO bond cap, FALCON's products per type) from the shapes and
singular values of the targets, before anything is compressed. The precision methods (``bf16``,
``int8``: :mod:`mpstudy.methods.precision`) are the exception: they keep every weight and take no
``keep``, so ``for_budget`` refuses them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from ..factorize.budget import check_keep
from ..layers.base import CompressedLayer
from ..targets import Target, resolve_targets

__all__ = ["Method", "METHODS", "register_method", "get_method", "per_matrix", "check_keep", "GroupCompressor",
           "ModelEditor", "BudgetSearch"]

#: builds the replacements of one group — ``(group, budget) -> {module name: new module}``
GroupCompressor = Callable[[list[Target], dict[str, Any]], dict[str, nn.Module]]
#: edits the model in place when compressing is more than swapping modules (removing attention heads):
#: (model, targets, budget) -> {target name: structure record}; it checks everything before its first edit
ModelEditor = Callable[[nn.Module, list[Target], dict[str, Any]], dict[str, dict[str, Any]]]
#: turns ``keep`` into the method's own budget keywords — (targets, keep, other budget keywords) -> keywords
BudgetSearch = Callable[[list[Target], float, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Method:
    """A registered compression method.

    Attributes:
        name: registry key (``"svd"``).
        description: one line for ``mpstudy --help`` and the book's tables.
        budget_keys: keyword arguments ``compress`` accepts for this method (``rank``, ``keep``...).
        dense_types: module types it can replace (``nn.Linear``...).
        compress_group: builds the replacements of one group of targets (module swaps).
        grouping: default grouping of targets (``"matrix"``: each weight alone).
        defaults: default budget values, applied when not given.
        apply: instead of ``compress_group``, edits the model in place (structured pruning, which
            shrinks an attention block's internals rather than swapping one module).
        search: turns ``keep`` into the method's own keywords (``{"max_bond": 7}``); ``None`` when
            the method takes ``keep`` itself.

    What ``keep`` counts is :func:`mpstudy.accounting.budget_count`: stored numbers, or the
    non-zeros of a weight under a pruning mask (magnitude pruning's masked weights are stored dense).
    """

    name: str
    description: str
    budget_keys: tuple[str, ...]
    dense_types: tuple[type[nn.Module], ...]
    compress_group: GroupCompressor | None = None
    grouping: str = "matrix"
    defaults: dict[str, Any] = field(default_factory=dict)
    apply: ModelEditor | None = None
    search: BudgetSearch | None = None

    def __post_init__(self) -> None:
        if (self.compress_group is None) == (self.apply is None):
            raise ValueError(f"method {self.name!r} needs exactly one of compress_group= and apply=")

    def check_budget(self, budget: dict[str, Any]) -> dict[str, Any]:
        """Reject unknown budget keywords (naming the allowed ones); fill in defaults."""
        unknown = sorted(set(budget) - set(self.budget_keys))
        if unknown and not self.budget_keys:  # a precision method: it keeps every weight
            raise ValueError(f"method {self.name!r} takes no budget keywords, got {unknown}")
        if unknown:
            raise ValueError(f"method {self.name!r} does not take {unknown}; allowed: {list(self.budget_keys)}")
        return {**self.defaults, **{k: v for k, v in budget.items() if v is not None}}

    def resolve_keep(self, targets: list[Target], budget: dict[str, Any]) -> dict[str, Any]:
        """``budget`` (checked) with ``keep`` turned into the method's own keywords by its search, if it has one."""
        if budget.get("keep") is None:
            return budget
        keep = check_keep(budget["keep"])
        if self.search is None:
            return {**budget, "keep": keep}
        rest = {k: v for k, v in budget.items() if k != "keep"}
        return {**rest, **self.search(targets, keep, rest)}

    def for_budget(self, model: nn.Module, keep: float, targets: str | list[str] = "all-linear",
                   **options: Any) -> dict[str, Any]:
        """The budget keywords for ``compress`` that keep the fraction ``keep`` of the targeted weights.

        ``{"keep": keep}`` for a method that meets ``keep`` itself, its search's choice otherwise
        (``{"max_bond": 7}`` for ``mpo``, ``{"k": {"query": 1, ...}}`` for ``falcon``). ``options``
        are other budget keywords the search must respect (``num_cores=`` for ``mpo``). Nothing is
        compressed; ``compress(model, method, targets, **for_budget(...), **options)`` does it.

        Raises:
            ValueError: a bad ``keep``, a method without a ``keep`` budget, or a budget the
                method's structures cannot reach within 5 % (the search's message).
        """
        keep = check_keep(keep)
        if "keep" not in self.budget_keys:
            keywords = f"its budget keywords are {list(self.budget_keys)}" if self.budget_keys else "it takes no budget"
            raise ValueError(f"method {self.name!r} cannot be asked for a kept fraction; {keywords}")
        if self.search is None:
            return {"keep": keep}
        budget = self.check_budget(options)
        chosen = resolve_targets(model, targets, module_types=self.dense_types)
        return self.search(chosen, keep, budget)


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add ``method`` to ``METHODS`` under its name (a later registration of the name replaces it)."""
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method called ``name``; an unknown name raises a ValueError listing the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {sorted(METHODS)}")
    return METHODS[name]


def per_matrix(layer_cls: type[CompressedLayer]) -> GroupCompressor:
    """A compressor that factorizes each target of a group on its own with ``layer_cls.from_dense``."""

    def compress_group(group: list[Target], budget: dict[str, Any]) -> dict[str, nn.Module]:
        return {t.name: layer_cls.from_dense(t.module, **budget) for t in group}

    return compress_group
