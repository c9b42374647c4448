"""The compiled data plane: which modules ``make compile`` builds with mypyc, and whether they run.

The hot path of the HTTP proxy (framing, the proxy protocols, backends, balancing, retries and the
passive detector) is plain, fully annotated Python. ``scripts/compile`` compiles these modules with
mypyc into C extensions next to their sources, and records a digest of each source it compiled in
``_compiled.json``. Python imports an extension before a source of the same name, so a fresh build
is used as it is. The same source runs either way; the compiled form is about 1.4x faster per
request (docs/dataplane.md). The build also makes the C express lane (``NATIVE``: ``_express.c``,
whose Python specification is in ``core/framing.py``), loaded only with the rest of the build.

A build that no longer matches its sources (a source edited since) would run old code, so then
*all* of these modules are loaded from source, as they are when ``FIVENINES_PURE=1`` is set (the
test suite runs the data-plane tests that way too). All or none: compiled modules call each other
directly, so a mix would still run the old code.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
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
    "fivenines.proxy.upstream",
    "fivenines.proxy.forward",
    "fivenines.proxy.client",
    "fivenines.proxy.http",  # (the old home of the three above: re-exports)
)
# Written in C, built beside the mypyc modules and loaded (or not) with them: the express lane.
NATIVE = ("fivenines._express",)
GROUP = "fivenines_accel"  # the name of the shared library mypyc builds (beside the package)
PACKAGE_DIR = Path(__file__).resolve().parent
MANIFEST = PACKAGE_DIR / "_compiled.json"
PURE_ENV = "FIVENINES_PURE"


def source_path(module: str) -> Path:
    return PACKAGE_DIR.joinpath(*module.split(".")[1:]).with_suffix(".c" if module in NATIVE else ".py")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digests() -> dict[str, str]:
    return {m: digest(source_path(m)) for m in MODULES + NATIVE}


def built_extensions() -> list[Path]:
    """The compiled modules present beside their sources."""
    found = []
    for m in MODULES + NATIVE:
        src = source_path(m)
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            ext = src.with_suffix(suffix)
            if ext.exists():
                found.append(ext)
    return found


def decide(manifest: dict[str, Any] | None, sources: dict[str, str], built: bool, pure_env: str) -> str:
    """Why the sources run instead of the build ("" when the build runs). Pure: no I/O."""
    if not built:
        return "not compiled: make compile builds it"
    if pure_env not in ("", "0"):
        return f"{PURE_ENV}={pure_env}"
    if manifest is None:
        return "compiled modules without a manifest: make compile"
    if manifest.get("python") != sys.implementation.cache_tag:
        return f"compiled for {manifest.get('python')}, running {sys.implementation.cache_tag}"
    changed = sorted(m for m, d in sources.items() if manifest.get("sources", {}).get(m) != d)
    if changed:
        return f"sources changed since the build ({', '.join(changed)}): make compile"
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


def _read_manifest() -> dict[str, Any] | None:
    try:
        got = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return None
    return got if isinstance(got, dict) else None


def guard() -> str:
    """Called once when ``fivenines`` is imported: load from source unless the build is current."""
    built = bool(built_extensions())
    why = decide(_read_manifest() if built else None, digests() if built else {}, built,
                 os.environ.get(PURE_ENV, ""))
    if why and built and not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())
    return why


def mode() -> str:
    """``compiled`` or ``pure (why)`` — what actually runs (read from the loaded modules)."""
    if not WHY_PURE and all(
            (getattr(sys.modules.get(m), "__file__", "") or "").endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
            for m in MODULES + NATIVE if m in sys.modules):
        return "compiled"
    return f"pure ({WHY_PURE or 'mixed'})"


WHY_PURE = guard()
