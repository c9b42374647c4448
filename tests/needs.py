"""Which test files need which server binary or Python module, read from the sources (stdlib only).

A test needs ``X`` when it calls ``require_binary("X")`` or ``require_module("X")`` (tests/helpers.py)
itself, or uses a helper of the tests package that does (``redis_spec`` → redis-server), or imports
a module that does so at import time. ``scripts/install-test-deps`` runs this when it cannot
install what is missing, to say which tests will skip (and, under CI, fail)::

    python3 tests/needs.py redis-server etcd    # the files needing each
    python3 tests/needs.py                      # everything, by name
    python3 tests/needs.py --missing redis-server etcd   # what will skip (or, under CI, fail)
"""

from __future__ import annotations

import ast
import functools
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
REQUIRE = ("require_binary", "require_module")


def _scan(nodes: list[ast.stmt], funcs: tuple[str, ...]) -> tuple[set[str], set[str]]:
    """(literal names passed to ``funcs`` — require_binary, require_module —, names used) under ``nodes``."""
    required, used = set(), set()
    for node in nodes:
        for n in ast.walk(node):
            if isinstance(n, ast.Name):
                used.add(n.id)
            elif (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in funcs and n.args
                  and isinstance(n.args[0], ast.Constant) and isinstance(n.args[0].value, str)):
                required.add(n.args[0].value)
    return required, used


class _Module:
    def __init__(self, path: Path, funcs: tuple[str, ...]) -> None:
        self.name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        self.path = path
        tree = ast.parse(path.read_text(), str(path))
        self.defs: dict[str, tuple[set[str], set[str]]] = {}  # top-level def -> (required, names used)
        self.imports: dict[str, tuple[str, str]] = {}  # local name -> (module, name)
        self.imported_modules: set[str] = set()
        top: list[ast.stmt] = []
        for stmt in tree.body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                self.defs[stmt.name] = _scan([stmt], funcs)
            elif isinstance(stmt, ast.ImportFrom) and stmt.module and stmt.module.startswith("tests"):
                self.imported_modules.add(stmt.module)
                for a in stmt.names:
                    self.imports[a.asname or a.name] = (stmt.module, a.name)
            else:
                top.append(stmt)
        self.top = _scan(top, funcs)  # what runs at import time


@functools.lru_cache(maxsize=4)
def needs_by_file(root: Path = TESTS, funcs: tuple[str, ...] = REQUIRE) -> dict[str, set[str]]:
    """{test file relative to the repository: the names it needs}, for test files that need any;
    ``funcs``: ("require_binary",) for server binaries only."""
    mods = {m.name: m for m in (_Module(p, funcs) for p in sorted(root.rglob("*.py")))}
    memo: dict[tuple[str, str], set[str]] = {}

    def of_name(mod: str, name: str, seen: frozenset[tuple[str, str]] = frozenset()) -> set[str]:
        key = (mod, name)
        if key in memo:
            return memo[key]
        m = mods.get(mod)
        if m is None or key in seen:
            return set()
        seen = seen | {key}
        if name in m.imports:
            got = of_name(*m.imports[name], seen)
        elif name in m.defs:
            required, names = m.defs[name]
            got = set(required)
            for used in names - {name}:  # helpers calling helpers
                if used in m.defs or used in m.imports:
                    got |= of_name(mod, used, seen)
        else:
            got = set()
        memo[key] = got
        return got

    def at_import(mod: str, seen: frozenset[str] = frozenset()) -> set[str]:
        m = mods.get(mod)
        if m is None or mod in seen:
            return set()
        required, names = m.top
        got = set(required)
        for used in names:
            if used in m.defs or used in m.imports:
                got |= of_name(mod, used)
        for imported in m.imported_modules:
            got |= at_import(imported, seen | {mod})
        return got

    out = {}
    for m in mods.values():
        if not m.path.name.startswith("test_"):
            continue
        got = at_import(m.name)
        for name in m.defs:
            got |= of_name(m.name, name)
        if got:
            out[str(m.path.relative_to(ROOT))] = got
    return out


def files_needing(names: list[str], root: Path = TESTS) -> dict[str, list[str]]:
    by_file = needs_by_file(root)
    return {n: sorted(f for f, need in by_file.items() if n in need) for n in names}


def under_ci() -> bool:
    """fivenines' own rule (``fivenines.accel.under_ci``), from the sources if need be: this runs
    with any python3 (the package's ``__init__`` and ``accel`` import the standard library only)."""
    try:
        from fivenines.accel import under_ci as rule
    except ImportError:
        sys.path.insert(0, str(ROOT / "src"))
        from fivenines.accel import under_ci as rule
    return rule()


def main(argv: list[str]) -> int:
    missing = argv[:1] == ["--missing"]
    names = argv[1:] if missing else argv
    names = names or sorted({n for need in needs_by_file().values() for n in need})
    if missing:
        print("under CI these tests FAIL for what is missing:" if under_ci() else
              "until then these tests SKIP (pytest's summary names each one; under CI they fail):")
    for name, files in files_needing(names).items():
        print(f"{'    ' if missing else ''}{name}: {' '.join(files) if files else '(no test needs it)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
