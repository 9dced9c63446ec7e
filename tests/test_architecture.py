"""The house rules, checked on the source: mpstudy's import graph has no circle and imports only downward.

The graph is built from every ``import`` statement in ``mpstudy/``, the ones inside functions
included (a function-local import hides a circle from Python, not from this test).
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "mpstudy"

#: the spine, bottom to top; a module may import its own level and the levels below it, never above.
#: ``studies`` sits above the whole spine except the entry points (``cli``, the package itself).
LEVELS: list[set[str]] = [
    {"factorize", "metrics", "profiles", "parameters", "records", "plots", "cache"},  # pure math, pure data, files
    {"layers"},  # nn.Modules holding factors
    {"targets", "prune"},  # naming modules in a model; pruning operations (layers too: T5 heads)
    {"methods"},  # the registry
    {"surgery", "accounting", "export"},  # compress / save / load / merge; counting
    {"tasks", "models", "prune_io"},  # data, loading models
    {"train", "distill", "measure", "fisher", "lora", "baselines", "stats", "grid", "embeddings", "translation"},  # the loop and around it
    {"runner", "reproducibility", "campaign", "pages"},  # running studies; the campaign's unit records; page dressing
    {"studies"},  # one package per paper
    {"cli", "__init__", "__main__"},  # entry points
]
LEVEL = {name: i for i, names in enumerate(LEVELS) for name in names}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imported(module: str, node: ast.AST, is_package: bool, known: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
    out = []
    for name in names:
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in known and name != module:
            out.append(name)
    return out


def import_graph() -> dict[str, set[str]]:
    """``module -> modules of mpstudy it imports`` (function-local imports included)."""
    known = module_files()
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in known.items():
        graph[module]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[module].update(_imported(module, node, path.name == "__init__.py", known))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def level_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top not in LEVEL:
        raise KeyError(f"{module} has no place in tests/test_architecture.py LEVELS; add it where it belongs")
    return LEVEL[top]


def upward_edges(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports from a lower level of the spine to a higher one."""
    return sorted((a, b) for a, targets in graph.items() for b in targets if level_of(b) > level_of(a))


def test_every_module_has_a_level():
    for module in import_graph():
        level_of(module)


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_the_spine_imports_only_downward():
    assert upward_edges(import_graph()) == []


@pytest.mark.parametrize("package", ["factorize", "layers"])
def test_math_and_layers_import_nothing_above_them(package):
    """``factorize`` imports only itself; ``layers`` only itself and ``factorize``."""
    allowed = {"factorize"} | ({"layers"} if package == "layers" else set())
    graph = import_graph()
    top = lambda name: (name.split(".") + ["__init__"])[1]  # noqa: E731
    bad = [(a, b) for a, targets in graph.items() if top(a) == package for b in targets if top(b) not in allowed]
    assert bad == []


def test_the_checks_can_fail():
    """The detectors find a planted circle and a planted upward edge."""
    graph = {"mpstudy.layers.x": {"mpstudy.train"}, "mpstudy.train": {"mpstudy.layers.x"}}
    assert cycles(defaultdict(set, graph)) == [["mpstudy.layers.x", "mpstudy.train"]]
    assert upward_edges(graph) == [("mpstudy.layers.x", "mpstudy.train")]
