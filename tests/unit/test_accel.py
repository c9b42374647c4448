"""fivenines.accel: the compiled data plane runs only while it is current, and what runs is reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fivenines import accel
from tests.helpers import IN_CI

SOURCES = {m: f"digest-{m}" for m in accel.MODULES + accel.NATIVE}
CURRENT = {"python": sys.implementation.cache_tag, "sources": dict(SOURCES)}


def test_a_current_build_runs() -> None:
    assert accel.decide(CURRENT, SOURCES, built=True, pure_env="") == ""
    assert accel.decide(CURRENT, SOURCES, built=True, pure_env="0") == ""


def test_no_build_runs_the_sources() -> None:
    assert "not compiled" in accel.decide(None, SOURCES, built=False, pure_env="")


@pytest.mark.parametrize("module", accel.MODULES + accel.NATIVE)
def test_one_changed_source_sends_every_module_to_its_source(module: str) -> None:
    changed = dict(SOURCES, **{module: "edited"})
    why = accel.decide(CURRENT, changed, built=True, pure_env="")
    assert why.startswith("sources changed") and module in why


def test_the_environment_and_a_foreign_build_force_the_sources() -> None:
    assert accel.decide(CURRENT, SOURCES, built=True, pure_env="1") == "FIVENINES_PURE=1"
    assert "without a manifest" in accel.decide(None, SOURCES, built=True, pure_env="")
    other = dict(CURRENT, python="cpython-399")
    assert "cpython-399" in accel.decide(other, SOURCES, built=True, pure_env="")


def _loaded_from(env: dict[str, str]) -> dict[str, object]:
    code = (
        "import json, fivenines.accel as a, importlib\n"
        "files = {m: importlib.import_module(m).__file__ for m in a.MODULES}\n"
        "from fivenines.core import framing\n"
        "native = framing._NATIVE_REQUEST is not None and framing._NATIVE_RESPONSE is not None\n"
        "print(json.dumps({'mode': a.mode(), 'files': files, 'native': native}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
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
        assert got["mode"] == "compiled", f"make test compiles the data plane (scripts/compile): {got['mode']}"


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


def test_the_real_digests_decide() -> None:
    """The digests of the sources in this tree against a manifest recorded for other sources."""
    stale = {"python": sys.implementation.cache_tag, "sources": {m: "0" * 64 for m in accel.MODULES + accel.NATIVE}}
    assert accel.decide(stale, accel.digests(), built=True, pure_env="").startswith("sources changed")
    assert accel.decide(dict(stale, sources=accel.digests()), accel.digests(), built=True, pure_env="") == ""
