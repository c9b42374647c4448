"""The compiled data plane: which modules the build compiles, and whether the compiled ones run.

The hot path of the HTTP proxy (framing, the proxy protocols, backends, balancing, retries and the
passive detector) is plain, fully annotated Python. Building the package (``pip install .``,
``pip install -e .``, ``python -m build``; ``setup.py`` is the one build) compiles ``MODULES``
with mypyc into C extensions beside their sources, and ``NATIVE`` (``_express.c``, the express
lane, whose Python specification is in ``core/framing.py``) in C. Python imports an extension
before a source of the same name, so a current build is used as it is. The same source runs
either way; the compiled form is about 1.4x faster per request (docs/dataplane.md).

The build writes ``_compiled.json`` beside this file: the Python it was built for, the modules it
built, and the SHA-256 of every source it depended on — the compiled modules and every fivenines
module they import, transitively (:func:`closure`, read from the sources with :mod:`ast`), with
the C source, its stub and the table its generated header comes from. Where the build failed (no C compiler, say) the manifest says why and
the package runs from source.

A build that no longer matches its sources (any of those files edited since, another Python,
another list of modules) would run old code, so then *all* of these modules are loaded from
source, as they are when ``FIVENINES_PURE=1`` is set (the test suite runs the data-plane tests
that way too). All or none: compiled modules call each other directly, so a mix would still run
the old code. :func:`mode` says what runs: the ``fivenines up`` banner, ``data_plane`` in
``/status`` and the ``fivenines_data_plane_compiled`` metric report it.

This file imports nothing outside the standard library: ``setup.py`` loads it by path to read
``MODULES`` and compute the manifest, without importing fivenines.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

MODULES = (
    "fivenines.core.framing",
    "fivenines.core.retry",
    "fivenines.core.balance",
    "fivenines.core.detect",
    "fivenines.core.limits",
    "fivenines.core.heads",
    "fivenines.core.exchange",
    "fivenines.proxy.backend",
    "fivenines.proxy.listener",
    "fivenines.proxy.plain",
    "fivenines.proxy.upstream",
    "fivenines.proxy.forward",
    "fivenines.proxy.client",
    "fivenines.proxy.tcp",
)
# Written in C, built beside the mypyc modules and loaded (or not) with them: the express lane and
# the TCP relay's data phase.
NATIVE = ("fivenines._express", "fivenines._pump")
# What a native module's build reads beyond its C source: the table its generated header comes from
# (setup.py writes _express_tables.h from fivenines.core.fieldsets), so that it counts in the digests.
NATIVE_DEPENDS: dict[str, tuple[str, ...]] = {"fivenines._express": ("fivenines.core.fieldsets",)}
GROUP = "fivenines_accel"  # mypyc's group: its shared library is SHARED_LIB, beside the package
SHARED_LIB = f"{GROUP}__mypyc"
PACKAGE = "fivenines"
PACKAGE_DIR = Path(__file__).resolve().parent
MANIFEST_NAME = "_compiled.json"
MANIFEST = PACKAGE_DIR / MANIFEST_NAME
PURE_ENV = "FIVENINES_PURE"
CI_ENV = "CI"


def under_ci(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this is a CI run: ``CI`` set to 1, true or yes (any case), as CI services set it.

    The one rule for "under CI": there ``scripts/compile`` fails when the build fails, and the
    tests fail instead of skipping when a server binary or module they need is missing.

    >>> [under_ci({"CI": v}) for v in ("true", "True", "1", "yes", "", "0", "false")], under_ci({})
    ([True, True, True, True, False, False, False], False)
    """
    return environ.get(CI_ENV, "").strip().lower() in ("1", "true", "yes")
BUILD_HINT = "pip install . (or make compile) builds it"


def source_path(module: str, package_dir: Path = PACKAGE_DIR) -> Path:
    """The source of a compiled module: ``.py`` for mypyc's, ``.c`` for the native ones."""
    return package_dir.joinpath(*module.split(".")[1:]).with_suffix(".c" if module in NATIVE else ".py")


# --------------------------------------------------------------------------- what a build depends on


def module_imports(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module name the text ``source`` of ``module`` may import, made absolute: ``import a.b``
    gives ``a`` and ``a.b``; ``from a import b`` gives ``a`` and ``a.b`` (``b`` may be a module).
    Imports anywhere count — in functions and under ``if TYPE_CHECKING:`` too, as mypyc reads those.

    >>> sorted(module_imports("from . import x\\nfrom ..core.y import z as w", "fivenines.proxy.http"))
    ['fivenines', 'fivenines.core', 'fivenines.core.y', 'fivenines.core.y.z', 'fivenines.proxy', 'fivenines.proxy.x']
    """
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        elif isinstance(node, ast.ImportFrom):
            base = (node.module or "").split(".") if node.module else []
            if node.level:
                if node.level > len(package):
                    continue  # beyond the top-level package: an error Python reports itself
                base = package[:len(package) - node.level + 1] + base
            name = ".".join(base)
            found.update(".".join(base[:i]) for i in range(1, len(base) + 1))
            found.update(f"{name}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def closure(roots: Iterable[str], read: Callable[[str], tuple[str, bool] | None]) -> list[str]:
    """``roots`` and every module of this package they import, transitively, with the packages
    that hold them (importing ``a.b.c`` runs ``a`` and ``a.b`` first), sorted. ``read(module)`` is
    ``(source text, is a package)``, or None when ``module`` is no Python module of the package (a
    function imported by name, another package's module). A native module depends on what
    ``NATIVE_DEPENDS`` says (the Python its build generates C from).

    >>> files = {"p": ("", True), "p.a": ("from p.b import f", False), "p.b": ("import os", False)}
    >>> closure(["p.a"], files.get)
    ['p', 'p.a', 'p.b']
    """
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo.extend(p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if read(p) is not None)
        if module in NATIVE:
            todo.extend(m for m in NATIVE_DEPENDS.get(module, ()) if m not in seen and read(m) is not None)
            continue
        got = read(module)
        if got is None:
            continue
        text, is_package = got
        todo.extend(m for m in module_imports(text, module, is_package)
                    if m.split(".")[0] == parts[0] and m not in seen and (m in NATIVE or read(m) is not None))
    return sorted(seen)


def reader(package_dir: Path = PACKAGE_DIR) -> Callable[[str], tuple[str, bool] | None]:
    """``read`` for :func:`closure` over the sources of the package in ``package_dir``."""
    def read(module: str) -> tuple[str, bool] | None:
        if module.split(".")[0] != PACKAGE:
            return None
        if module in NATIVE:
            return ("", False) if source_path(module, package_dir).exists() else None
        base = package_dir.joinpath(*module.split(".")[1:])
        for path, is_package in ((base / "__init__.py", True), (base.with_suffix(".py"), False)):
            if path.is_file():
                return path.read_text(encoding="utf-8"), is_package
        return None

    return read


def dependency_files(package_dir: Path = PACKAGE_DIR) -> list[str]:
    """The files a build of ``MODULES`` and ``NATIVE`` depends on, relative to ``package_dir``: the
    sources of the closure, each native module's C source and typing stub, and this file (whose
    lists and rules made the build)."""
    read = reader(package_dir)
    files = [Path(__file__).name]
    for module in closure(MODULES + NATIVE, read):
        base = Path(*module.split(".")[1:])
        if module in NATIVE:
            files += [str(base.with_suffix(".c")), str(base.with_suffix(".pyi"))]
        elif (package_dir / base / "__init__.py").is_file():
            files.append(str(base / "__init__.py"))
        else:
            files.append(str(base.with_suffix(".py")))
    return sorted(set(files))


def digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "missing"


def digests(files: Iterable[str], package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    return {f: digest(package_dir / f) for f in files}


def manifest(package_dir: Path = PACKAGE_DIR, failed: str = "") -> dict[str, Any]:
    """What ``setup.py`` writes as ``_compiled.json``: after a build, or after a failed one (``failed``: why)."""
    sources = digests(dependency_files(package_dir), package_dir)
    if failed:
        return {"python": sys.implementation.cache_tag, "failed": failed, "sources": sources}
    return {"python": sys.implementation.cache_tag, "modules": list(MODULES + NATIVE), "sources": sources}


def extension_paths(module: str, package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Where a compiled ``module`` (or ``SHARED_LIB``) may lie, one path per extension suffix."""
    base = package_dir.parent / SHARED_LIB if module == SHARED_LIB else source_path(module, package_dir).with_suffix("")
    return [base.with_name(base.name + suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES]


def built_extensions(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The compiled modules present beside their sources."""
    return [p for m in MODULES + NATIVE for p in extension_paths(m, package_dir) if p.exists()]


# --------------------------------------------------------------------------- whether the build runs


def decide(manifest: dict[str, Any] | None, sources: dict[str, str], built: Iterable[str], pure_env: str) -> str:
    """Why the sources run instead of the build ("" when the build runs). Pure: no I/O.

    ``sources``: the digests now of the files the manifest lists; ``built``: the modules whose
    extension is present (and ``SHARED_LIB``, mypyc's library they all need)."""
    built = set(built)
    failed = (manifest or {}).get("failed")
    if not built - {SHARED_LIB}:
        if failed:
            return f"not compiled: the build failed: {failed}"
        return f"not compiled: {BUILD_HINT}"
    if pure_env not in ("", "0"):
        return f"{PURE_ENV}={pure_env}"
    if manifest is None:
        return f"compiled modules without a manifest: {BUILD_HINT}"
    if failed:
        return f"the last build failed ({failed}): its leftovers are not used"
    if manifest.get("python") != sys.implementation.cache_tag:
        return f"compiled for {manifest.get('python')}, running {sys.implementation.cache_tag}"
    if "modules" not in manifest:
        return f"the manifest of an older build: {BUILD_HINT}"
    if manifest["modules"] != list(MODULES + NATIVE):
        return f"built for other modules than fivenines.accel lists ({manifest['modules']}): {BUILD_HINT}"
    missing = sorted(set((*MODULES, *NATIVE, SHARED_LIB)) - built)
    if missing:
        return f"incomplete build, without {', '.join(missing)}: {BUILD_HINT}"
    recorded = manifest.get("sources")
    if not isinstance(recorded, dict) or not recorded:
        return f"a manifest without sources: {BUILD_HINT}"
    changed = sorted(f for f, d in recorded.items() if sources.get(f) != d)
    if changed:
        return f"sources changed since the build ({', '.join(changed)}): {BUILD_HINT}"
    return ""


class _SourceFirst:
    """A meta-path finder that loads the compiled modules from their ``.py`` sources (and refuses
    the C ones, whose callers then run their Python twins)."""

    @staticmethod
    def find_spec(name: str, path: Any = None, target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if name in NATIVE:
            raise ImportError(f"{name}: the data plane runs from source ({WHY_PURE})", name=name)
        if name in MODULES:
            return importlib.util.spec_from_file_location(name, source_path(name))
        return None


def read_manifest(path: Path = MANIFEST) -> dict[str, Any] | None:
    try:
        got = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return got if isinstance(got, dict) else None


def build_problem(pure_env: str = "") -> str:
    """Why the build in this package would not run ("" when it is current), ``FIVENINES_PURE`` aside."""
    built = {m for m in (*MODULES, *NATIVE, SHARED_LIB) if any(p.exists() for p in extension_paths(m))}
    got = read_manifest()
    recorded = (got or {}).get("sources")
    sources = digests(recorded) if isinstance(recorded, dict) and built else {}
    return decide(got, sources, built, pure_env)


def guard() -> str:
    """Called once when ``fivenines`` is imported: load from source unless the build is current."""
    why = build_problem(os.environ.get(PURE_ENV, ""))
    if why and built_extensions() and not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())
    return why


def reason() -> str:
    """Why the data plane runs from source, "" when the compiled one runs (read from the loaded modules)."""
    if WHY_PURE:
        return WHY_PURE
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    if all((getattr(sys.modules.get(m), "__file__", "") or "").endswith(suffixes) for m in MODULES + NATIVE
           if m in sys.modules):
        return ""
    return "mixed"


def mode() -> str:
    """``compiled`` or ``pure (why)`` — what actually runs."""
    why = reason()
    return f"pure ({why})" if why else "compiled"


# The guard runs when this file is imported as fivenines.accel; setup.py loads it by path only to
# read MODULES and write the manifest, and must not install a finder into the build's interpreter.
WHY_PURE = guard() if __name__ == f"{PACKAGE}.accel" else "loaded by the build, not imported"
