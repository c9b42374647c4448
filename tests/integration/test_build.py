"""The package build (setup.py): the sdist carries what the compiled build needs and none of a
local build's outputs; without a C compiler the wheel still builds, has no extension, says why,
and runs from source; FIVENINES_BUILD=strict makes that a failed build instead.

A copy of the checkout is built (with `pip wheel --no-build-isolation`: the dev environment has
setuptools and mypy), so the in-place build of this checkout is left alone. Whether the build
compiles where a compiler is present is what make test checks on the checkout itself
(tests/unit/test_accel.py, under CI=true)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from fivenines import accel

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def checkout_copy(tmp_path: Path) -> Path:
    """The files a build reads, with whatever an earlier in-place build left in src/."""
    copy = tmp_path / "checkout"
    copy.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, copy / name)
    shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return copy


def run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=dict(os.environ, **env), capture_output=True, text=True, timeout=300)


def test_the_sdist_carries_the_build_and_no_build_output(tmp_path: Path) -> None:
    copy = checkout_copy(tmp_path)
    (copy / "src" / "fivenines" / accel.MANIFEST_NAME).write_text("{}")  # as a local build leaves them
    (copy / "src" / "fivenines" / "core" / "framing.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    got = run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path / "dist"), "."], copy)
    assert got.returncode == 0, got.stderr[-3000:]
    (sdist,) = (tmp_path / "dist").glob("fivenines-*.tar.gz")
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert {"setup.py", "pyproject.toml", "README.md"} <= names
    assert {f"src/fivenines/{f}" for f in accel.dependency_files(copy / "src" / "fivenines")} <= names
    assert not [n for n in names if n.endswith((".so", accel.MANIFEST_NAME))], names


def test_without_a_compiler_the_package_builds_runs_from_source_and_says_why(tmp_path: Path) -> None:
    copy = checkout_copy(tmp_path)
    wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w"]
    got = run([*wheel, str(tmp_path / "wheels"), "."], copy, CC="/bin/false", FIVENINES_BUILD="")  # make sets it under CI
    assert got.returncode == 0, got.stderr[-3000:]
    (whl,) = (tmp_path / "wheels").glob("fivenines-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(whl) as z:
        assert not [n for n in z.namelist() if n.endswith(".so")]
        z.extractall(site)
    manifest = json.loads((site / "fivenines" / accel.MANIFEST_NAME).read_text())
    assert manifest["python"] == sys.implementation.cache_tag
    assert manifest["failed"] == "C compiler '/bin/false' returned non-zero exit status 1"
    assert "modules" not in manifest and "accel.py" in manifest["sources"]
    env = {k: v for k, v in os.environ.items() if k != accel.PURE_ENV}
    out = subprocess.run([sys.executable, "-c", "import fivenines.accel as a, fivenines.proxy.client as h; "
                          "print(a.mode()); print(h.__file__)"],
                         env=dict(env, PYTHONPATH=str(site)), cwd="/", capture_output=True, text=True, check=True)
    mode, http = out.stdout.splitlines()
    assert mode == "pure (not compiled: the build failed: C compiler '/bin/false' returned non-zero exit status 1)"
    assert http == str(site / "fivenines" / "proxy" / "client.py")

    strict = run([*wheel, str(tmp_path / "strict"), "."], copy, CC="/bin/false", FIVENINES_BUILD="strict")
    assert strict.returncode != 0
    assert not list((tmp_path / "strict").glob("*.whl"))
