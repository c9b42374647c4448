"""fivenines.accel: the compiled data plane runs only while it is current — every source it was built
from, the fivenines modules the compiled ones import included — and what runs is reported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fivenines import accel
from tests.helpers import IN_CI

EXPECTED = (*accel.MODULES, *accel.NATIVE, accel.SHARED_LIB)
FILES = ["a.py", "core/b.py", "_express.c"]
SOURCES = {f: f"digest-{f}" for f in FILES}
CURRENT = {"python": sys.implementation.cache_tag, "modules": list(accel.MODULES + accel.NATIVE), "sources": dict(SOURCES)}


def decide(manifest: dict[str, object] | None, sources: dict[str, str] = SOURCES, built: tuple[str, ...] = EXPECTED,
           pure_env: str = "") -> str:
    return accel.decide(manifest, sources, built, pure_env)


# --------------------------------------------------------------------------- decide


def test_a_current_build_runs() -> None:
    assert decide(CURRENT) == ""
    assert decide(CURRENT, pure_env="0") == ""


def test_no_build_runs_the_sources_and_says_why() -> None:
    assert decide(None, built=()).startswith("not compiled: pip install .")
    failed = {"python": sys.implementation.cache_tag, "failed": "C compiler 'gcc' not found"}
    assert decide(failed, built=()) == "not compiled: the build failed: C compiler 'gcc' not found"
    assert decide(failed, built=(accel.SHARED_LIB,)).startswith("not compiled: the build failed")
    # leftovers of an earlier build next to the manifest of a failed one are not used
    assert decide(failed).startswith("the last build failed (C compiler 'gcc'")


@pytest.mark.parametrize("changed", FILES)
def test_one_changed_source_sends_every_module_to_its_source(changed: str) -> None:
    why = decide(CURRENT, sources=dict(SOURCES, **{changed: "edited"}))
    assert why.startswith("sources changed") and changed in why
    assert decide(CURRENT, sources={f: d for f, d in SOURCES.items() if f != changed}).startswith("sources changed")


@pytest.mark.parametrize("module", EXPECTED)
def test_a_build_without_one_module_is_not_used(module: str) -> None:
    why = decide(CURRENT, built=tuple(m for m in EXPECTED if m != module))
    assert why.startswith("incomplete build") and module in why


def test_the_environment_a_foreign_build_or_another_list_force_the_sources() -> None:
    assert decide(CURRENT, pure_env="1") == "FIVENINES_PURE=1"
    assert "without a manifest" in decide(None)
    assert "cpython-399" in decide(dict(CURRENT, python="cpython-399"))
    assert decide(dict(CURRENT, modules=[*accel.MODULES[1:], *accel.NATIVE])).startswith("built for other modules")
    assert decide({k: v for k, v in CURRENT.items() if k != "modules"}).startswith("the manifest of an older build")
    assert decide(dict(CURRENT, sources={})).startswith("a manifest without sources")


# --------------------------------------------------------------------------- what a build depends on


def test_imports_are_read_from_the_source_wherever_they_are() -> None:
    source = "\n".join([
        "import os, fivenines.core.a as a",
        "from fivenines.core import b, c as cc",
        "from . import d",
        "from .e import f",
        "from ..g import h",
        "from typing import TYPE_CHECKING",
        "if TYPE_CHECKING:",
        "    from fivenines.spec import Spec",
        "def later():",
        "    from fivenines import _express",
        "from .star import *",
    ])
    got = accel.module_imports(source, "fivenines.proxy.http")
    assert got >= {"os", "fivenines", "fivenines.core", "fivenines.core.a", "fivenines.core.b", "fivenines.core.c",
                   "fivenines.proxy.d", "fivenines.proxy.e", "fivenines.proxy.e.f", "fivenines.g", "fivenines.g.h",
                   "fivenines.spec", "fivenines.spec.Spec", "fivenines._express", "fivenines.proxy.star"}
    assert "fivenines.proxy.star.*" not in got and "cc" not in got
    # in a package's __init__, "." is the package itself
    assert "fivenines.proxy.x" in accel.module_imports("from . import x", "fivenines.proxy", is_package=True)
    assert accel.module_imports("from .... import x", "fivenines.proxy.http") == set()


def test_the_closure_follows_imports_through_modules_that_are_not_compiled() -> None:
    tree = {
        "fivenines": ("", True),
        "fivenines.core": ("", True),
        "fivenines.core.hot": ("from fivenines.core.helper import f\nimport fivenines._express", False),
        "fivenines.core.helper": ("from fivenines.spec import S\nimport json\nfrom fivenines.core import hot", False),
        "fivenines.spec": ("if TYPE_CHECKING:\n    from fivenines.errors import E\n", False),
        "fivenines.errors": ("", False),
        "fivenines.unrelated": ("import fivenines.core.hot", False),
        "fivenines._express": ("", False),
    }
    got = accel.closure(["fivenines.core.hot"], tree.get)
    assert got == ["fivenines", "fivenines._express", "fivenines.core", "fivenines.core.helper", "fivenines.core.hot",
                   "fivenines.errors", "fivenines.spec"]


def test_the_real_closure_holds_every_fivenines_module_the_compiled_ones_load() -> None:
    """Python's own import of the compiled modules (from source, in a fresh interpreter) loads no
    fivenines module the build's closure misses; the closure reaches past the compiled modules."""
    code = ("import importlib, json, sys, fivenines.accel as a\n"
            "[importlib.import_module(m) for m in a.MODULES]\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'fivenines')))\n")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **{accel.PURE_ENV: "1"}),
                         capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    closure = set(accel.closure(accel.MODULES + accel.NATIVE, accel.reader()))
    assert loaded - closure == set()
    assert len(closure - set(accel.MODULES + accel.NATIVE)) >= 3, closure
    files = accel.dependency_files()
    assert {"_express.c", "_express.pyi", "__init__.py"} <= set(files)
    assert all((accel.PACKAGE_DIR / f).is_file() for f in files)


# --------------------------------------------------------------------------- what runs


def _loaded_from(env: dict[str, str], path: str | None = None) -> dict[str, object]:
    code = (
        "import json, fivenines.accel as a, importlib\n"
        "files = {m: importlib.import_module(m).__file__ for m in a.MODULES}\n"
        "from fivenines.core import framing\n"
        "native = framing._NATIVE_REQUEST is not None and framing._NATIVE_RESPONSE is not None\n"
        "print(json.dumps({'mode': a.mode(), 'files': files, 'native': native}))\n"
    )
    if path is not None:  # ahead of the installed package
        env = dict(env, PYTHONPATH=path)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd="/")
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_what_runs_is_what_mode_reports() -> None:
    """In this run: compiled modules when a current build exists (under CI, make test builds one,
    so it must be in use unless FIVENINES_PURE is set), the sources otherwise — in a fresh interpreter."""
    got = _loaded_from(dict(os.environ))
    files = got["files"]
    assert isinstance(files, dict)
    compiled = {m: not str(f).endswith(".py") for m, f in files.items()}
    if got["mode"] == "compiled":
        assert all(compiled.values()), files
        assert got["native"], "the C express lane is part of the build"
    else:
        assert not any(compiled.values()), files
        assert not got["native"], "the C express lane runs only with the rest of the build"
    if IN_CI and not os.environ.get(accel.PURE_ENV):
        assert got["mode"] == "compiled", f"make test compiles the data plane (pip install -e .): {got['mode']}"


@pytest.mark.skipif(not accel.built_extensions(), reason="no compiled build to override")
def test_the_sources_run_when_asked_even_with_a_current_build() -> None:
    got = _loaded_from(dict(os.environ, **{accel.PURE_ENV: "1"}))
    assert got["mode"] == f"pure ({accel.PURE_ENV}=1)"
    files = got["files"]
    assert isinstance(files, dict)
    assert all(str(f).endswith(".py") for f in files.values()), files
    assert not got["native"]
    for m, f in files.items():
        assert Path(str(f)) == accel.source_path(m)


@pytest.mark.skipif(accel.build_problem() != "", reason=f"no current build: {accel.build_problem()}")
def test_a_build_is_stale_once_a_module_the_compiled_ones_import_changes(tmp_path: Path) -> None:
    """A copy of this package with its build: compiled as it is; after an edit of spec.py (which no
    module compiles, but the compiled ones import) every module runs from source, and says why."""
    root = tmp_path / "site"
    shutil.copytree(accel.PACKAGE_DIR, root / accel.PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    for lib in accel.extension_paths(accel.SHARED_LIB):
        if lib.exists():
            shutil.copy2(lib, root / lib.name)
    env = {k: v for k, v in os.environ.items() if k != accel.PURE_ENV}
    assert _loaded_from(env, str(root))["mode"] == "compiled"
    spec = root / accel.PACKAGE / "spec.py"
    spec.write_text(spec.read_text() + "\n# edited after the build\n")
    got = _loaded_from(env, str(root))
    assert got["mode"] == "pure (sources changed since the build (spec.py): pip install . (or make compile) builds it)"
    files = got["files"]
    assert isinstance(files, dict) and all(str(f).endswith(".py") for f in files.values()), files
    assert not got["native"]


def test_the_real_digests_decide() -> None:
    """The digests of the sources in this tree against a manifest recorded for other sources."""
    files = accel.dependency_files()
    stale = {"python": sys.implementation.cache_tag, "modules": list(accel.MODULES + accel.NATIVE),
             "sources": {f: "0" * 64 for f in files}}
    assert decide(stale, sources=accel.digests(files)).startswith("sources changed")
    assert decide(dict(stale, sources=accel.digests(files)), sources=accel.digests(files)) == ""
