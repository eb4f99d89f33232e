"""No import circle inside the ``clift`` package.

The graph is built from the source with :mod:`ast`, without importing anything: a node per module of
``src/clift``, an edge ``a → b`` for every ``import`` of ``b`` written in ``a``, at module level or inside
a function (a deferred import still ties the two modules together; it only hides the circle until the
function runs). Imports guarded by ``if TYPE_CHECKING:`` are left out: they never run, and annotations
may name each other's types freely.

``from pkg import name`` points at ``pkg.name`` when that is a module, else at ``pkg``. Importing
``pkg.mod`` also runs ``pkg/__init__.py``, but that implicit edge is not drawn: a package's ``__init__``
re-exporting its own submodules would otherwise always read as a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "clift"


def module_files(src: Path = SRC, package: str = PACKAGE) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file of the package."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, target] if target else base)


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``module`` (source file ``path``) imports, TYPE_CHECKING blocks aside."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:  # only the `else:` branch runs
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = _resolve_relative(module, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    out = set()
    for name in found:
        # `import clift.data.task` names the module; keep the longest known prefix of a dotted name
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add(name)
    return out


def import_graph(src: Path = SRC, package: str = PACKAGE) -> dict[str, set[str]]:
    """``{module: modules it imports}`` for every module of the package (only edges inside it)."""
    files = module_files(src, package)
    known = set(files)
    return {m: imported_modules(m, p, known) for m, p in files.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module, as ``[a, b, ..., a]``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return [_one_cycle(graph, comp) for comp in components]


def _one_cycle(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component (breadth-first)."""
    members, start = set(comp), comp[0]
    parent: dict[str, str] = {}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                path = [v]  # walk back from v to start, then read it forwards
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    return comp  # unreachable for a strongly connected component


def test_graph_sees_the_package():
    graph = import_graph()
    assert "clift.config" in graph and "clift.methods.base" in graph
    assert "clift.errors" in graph["clift.config"]  # a module-level import
    assert "clift.runner" in graph["clift"]  # a function-level import (inside clift.run)


def test_type_checking_imports_are_left_out_and_function_imports_count(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import a\n    return a\n")
    (pkg / "c.py").write_text("from . import b\nimport pkg.d\n")
    (pkg / "d.py").write_text("from .c import x\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == set()
    assert graph["pkg.b"] == {"pkg.a"}
    assert graph["pkg.c"] == {"pkg.b", "pkg.d"}
    assert find_cycles(graph) == [["pkg.c", "pkg.d", "pkg.c"]]


def test_find_cycles_names_each_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": {"e"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "f", "e"]]


def test_no_import_cycle_in_clift():
    cycles = find_cycles(import_graph())
    if cycles:
        pytest.fail("import circle(s) in src/clift:\n" + "\n".join("  " + " → ".join(c) for c in cycles))


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_the_layers_that_broke_the_two_old_circles():
    """``schema`` sits under both ``config`` and the methods; ``user_stream`` under the stream loader."""
    graph = import_graph()
    # clift.safety (shorten() for messages) is itself a leaf over clift.errors
    assert _reachable(graph, "clift.safety") == {"clift.errors"}
    assert _reachable(graph, "clift.schema") == {"clift.errors", "clift.safety"}
    methods = [m for m in graph if m.startswith("clift.methods.")]
    assert methods and all("clift.config" not in _reachable(graph, m) for m in methods)
    assert {"clift.data.stream", "clift.data.benchmarks"}.isdisjoint(_reachable(graph, "clift.data.user_stream"))
    assert not any("clift.data.benchmarks" in graph[m] for m in graph if m.startswith("clift.data."))


def test_old_import_paths_still_name_the_same_objects():
    import clift.config
    import clift.data.benchmarks
    import clift.data.stream
    import clift.schema
    import clift.suite
    import clift.suite.aggregation
    import clift.suite.execute
    import clift.suite.planning

    assert clift.data.benchmarks.load_stream is clift.data.stream.load_stream
    assert clift.config.field_help is clift.schema.field_help
    assert clift.suite.run_suite is clift.suite.execute.run_suite
    assert clift.suite.aggregate is clift.suite.aggregation.aggregate
    assert clift.suite.plan is clift.suite.planning.plan


def test_no_submodule_is_shadowed_by_a_name_its_package_exports():
    """``pkg.name`` must be the submodule ``pkg/name.py``: a function of that name re-exported by the package
    would make ``monkeypatch.setattr("pkg.name.x", ...)`` and ``import pkg.name as m`` disagree."""
    import importlib
    import sys

    files = module_files()
    for name in files:
        importlib.import_module(name)
    shadowed = [
        m
        for m in files
        if (pkg := m.rpartition(".")[0]) in files
        and getattr(sys.modules[pkg], m.rpartition(".")[2], sys.modules[m]) is not sys.modules[m]
    ]
    assert not shadowed, f"package attributes hide these submodules: {shadowed}; rename the module or the name"
