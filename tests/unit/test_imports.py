"""The import structure of ``src/fivenines``: no circle, and no edge against the layering.

Which imports count: **every** ``import``/``from ... import`` naming a fivenines module,
wherever it is written: at module level, inside functions (lazy imports) and under
``if TYPE_CHECKING:``. A lazy or type-only import is still a dependency of the design;
hiding a circle behind one is exactly what this test is here to stop. Not counted: the
implicit import of a module's parent packages (``import fivenines.core.pool`` runs
``fivenines/__init__.py`` too), which every module shares and no module chooses.

The layering (DESIGN.md): decisions in ``core/`` use nothing that does I/O; the
availability maths in ``model/`` stays out of the runtime and the data plane; the
runtime never depends on the admin API (the entry point wires the admin API to the
runtime's interface, :mod:`fivenines.runtime.interface`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "fivenines"

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "core": ("proxy", "runtime", "admin", "cloud", "cli"),
    "model": ("runtime", "proxy"),
    "runtime": ("admin",),
}
"""Layer -> the layers it must not import (a layer: the first name after ``fivenines.``)."""


def module_name(path: Path, root: Path = SRC) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = SRC) -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    return {module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}


def _resolve(name: str, known: Iterable[str]) -> str | None:
    """The module ``name`` refers to: itself, or its longest prefix that is a module
    (``fivenines.spec.Spec`` -> ``fivenines.spec``)."""
    known = set(known)
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(tree: ast.AST, this: str, is_package: bool, known: Iterable[str]) -> set[str]:
    """The fivenines modules a module's source imports, anywhere in it (see the module doc)."""
    known = set(known)
    out: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package of this module
                pkg = this.split(".")
                if not is_package:
                    pkg = pkg[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            # ``from P import name``: the submodule P.name when there is one, else P itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for t in targets:
            if t == PACKAGE or t.startswith(PACKAGE + "."):
                m = _resolve(t, known)
                if m is not None and m != this:
                    out.add(m)
    return out


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    mods = modules(root)
    return {
        name: imports_of(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py", mods)
        for name, path in mods.items()
    }


def components(graph: Mapping[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan): each holds circles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: set[str] = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One circle per component, written as a path ``a -> b -> ... -> a`` through it."""
    return [_path_through(graph, comp) for comp in components(graph)]


def _path_through(graph: Mapping[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest circle from the component's first module back to itself (breadth first)."""
    start = min(comp)
    parent: dict[str, str] = {start: ""}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:  # back home: the path to v, then the edge v -> start
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"not a strongly connected component: {sorted(comp)}")


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def forbidden_edges(graph: Mapping[str, set[str]]) -> list[str]:
    out = []
    for src, dsts in sorted(graph.items()):
        banned = FORBIDDEN.get(layer(src), ())
        out += [f"{src} -> {dst} ({layer(src)} must not import {layer(dst)})"
                for dst in sorted(dsts) if layer(dst) in banned]
    return out


# ---------------------------------------------------------------------------- the checks


def test_the_walk_sees_lazy_and_type_checking_imports() -> None:
    src = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import fivenines.core.pool\n"
        "from fivenines.spec import Spec\n"
        "from . import health\n"
        "from .. import errors\n"
        "if TYPE_CHECKING:\n"
        "    from fivenines.runtime.controller import Controller\n"
        "def f() -> None:\n"
        "    from fivenines.admin import server\n"
        "    import os\n"
    )
    known = {"fivenines", "fivenines.spec", "fivenines.errors", "fivenines.core", "fivenines.core.pool",
             "fivenines.core.health", "fivenines.runtime", "fivenines.runtime.controller", "fivenines.admin",
             "fivenines.admin.server"}
    got = imports_of(ast.parse(src), "fivenines.core.x", False, known)
    assert got == {"fivenines.core.pool", "fivenines.spec", "fivenines.core.health", "fivenines.errors",
                   "fivenines.runtime.controller", "fivenines.admin.server"}


def test_cycles_and_forbidden_edges_are_found() -> None:
    graph = {
        "fivenines.core.a": {"fivenines.proxy.b"},
        "fivenines.proxy.b": {"fivenines.runtime.c"},
        "fivenines.runtime.c": {"fivenines.proxy.b", "fivenines.admin.d"},
        "fivenines.admin.d": set(),
    }
    assert cycles(graph) == [["fivenines.proxy.b", "fivenines.runtime.c", "fivenines.proxy.b"]]
    assert forbidden_edges(graph) == [
        "fivenines.core.a -> fivenines.proxy.b (core must not import proxy)",
        "fivenines.runtime.c -> fivenines.admin.d (runtime must not import admin)",
    ]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_every_module_is_seen() -> None:
    graph = import_graph()
    assert {"fivenines.core.pool", "fivenines.runtime.controller", "fivenines.admin.server",
            "fivenines.proxy.client"} <= set(graph)
    assert "fivenines.spec" in graph["fivenines.runtime.controller"]


def test_no_import_circle_in_src() -> None:
    graph = import_graph()
    found = components(graph)
    if found:
        pytest.fail("import circles (a lazy or TYPE_CHECKING import counts too):\n" + "\n".join(
            f"{len(c)} modules import each other: {', '.join(sorted(c))}; e.g. "
            + " -> ".join(_path_through(graph, c)) for c in found))


def test_no_import_against_the_layering() -> None:
    bad = forbidden_edges(import_graph())
    if bad:
        pytest.fail("imports against the layering:\n" + "\n".join(bad))
