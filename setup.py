"""The build of fivenines, with its data plane compiled (setuptools runs this).

``pip install .``, ``pip install -e .`` (``make``), ``pip install`` of the sdist and ``python -m
build --wheel`` all come here. The metadata is in pyproject.toml; this file adds one step to
``build_ext``: compile the modules ``fivenines.accel.MODULES`` lists with mypyc (mypy, in
build-system.requires) and ``accel.NATIVE`` (the express lane) in C, then write the manifest
``fivenines/_compiled.json`` that fivenines.accel checks at every start.

Where that fails (no C compiler, no Python headers, mypyc missing), the package still installs and
runs its data plane from source: what the build left is removed, the manifest records why, and
fivenines says so (``fivenines up``, ``/status``, the ``fivenines_data_plane_compiled`` metric).
``FIVENINES_BUILD=strict`` (``make test`` under CI) fails the build instead, and makes C warnings
errors.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import sys
import time
from pathlib import Path
from types import ModuleType

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = ROOT / "src" / "fivenines"
STRICT = os.environ.get("FIVENINES_BUILD", "") == "strict"


def load(name: str, path: Path) -> ModuleType:
    """A module of fivenines read from its file, without importing fivenines (whose dependencies
    the build environment does not have): fivenines.accel (the list of modules and the manifest)
    and fivenines.core.fieldsets (the table the C express lane's field classifiers come from)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


accel = load("fivenines_build_accel", PACKAGE_DIR / "accel.py")


def native_extensions() -> list[Extension]:
    flags = ["-O2", "-Wall", *(["-Werror"] if STRICT else [])]
    return [Extension(m, [str(accel.source_path(m).relative_to(ROOT))], extra_compile_args=flags)
            for m in accel.NATIVE]


def planned_extensions() -> list[Extension]:
    """Every extension the build makes: one per mypyc module and mypyc's shared library, whose C
    ``BuildDataPlane`` generates when it runs (not when the sdist is made), and the C ones."""
    return [Extension(m, []) for m in (*accel.MODULES, accel.SHARED_LIB)] + native_extensions()


def failure(exc: BaseException) -> str:
    """Why the build failed, in one line: ``C compiler 'gcc' not found``."""
    text = " ".join(str(exc).split())
    tool = {"CompileError": "C compiler", "LinkError": "linker"}.get(type(exc).__name__, "command")
    ran = re.fullmatch(r"[Cc]ommand '(.*)' ((?:failed|returned).*)", text)
    if ran:
        argv = ast.literal_eval(ran[1]) if ran[1].startswith("[") else ran[1].split()
        return f"{tool} {argv[0]!r} {ran[2].rstrip('.')}"
    absent = re.fullmatch(r"\[Errno 2\] No such file or directory: '(.*)'", text)
    if absent:
        return f"{tool} {absent[1]!r} not found"
    return f"{type(exc).__name__}: {text}"[:200]


def say(message: str) -> None:
    print(f"fivenines build: {message}", file=sys.stderr, flush=True)


class BuildDataPlane(build_ext):
    """build_ext that compiles the data plane, or leaves the package to run from source."""

    def run(self) -> None:
        target = PACKAGE_DIR if self.inplace else Path(self.build_lib) / accel.PACKAGE
        target.mkdir(parents=True, exist_ok=True)
        manifest = target / accel.MANIFEST_NAME
        manifest.unlink(missing_ok=True)  # a half-done build must never look current
        if not self.inplace:  # build_lib is a staging area: no extension of an earlier build stays in it
            for stale in [*target.rglob("*.so"), *target.parent.glob(f"{accel.SHARED_LIB}.*")]:
                stale.unlink()
        t0 = time.monotonic()
        try:
            built_from = accel.manifest(PACKAGE_DIR)  # the sources as mypyc reads them
            self.generate_mypyc()
            self.generate_tables()
            if accel.manifest(PACKAGE_DIR) != built_from:
                raise RuntimeError("sources changed while mypyc read them")
            super().run()
            missing = [m for m in accel.MODULES + accel.NATIVE
                       if not any(p.exists() for p in accel.extension_paths(m, target))]
            if missing:
                raise RuntimeError(f"not built: {', '.join(missing)}")
        except (Exception, SystemExit) as exc:  # distutils and mypyc report some failures with SystemExit
            why = failure(exc)
            self.remove_outputs(target)
            if STRICT:
                raise
            manifest.write_text(json.dumps(accel.manifest(PACKAGE_DIR, failed=why), indent=1) + "\n")
            say(f"WARNING: the data plane was not compiled ({why}). fivenines installs and runs it from "
                "source, at about half the requests/s; with a C compiler and the Python headers (Debian: "
                "gcc python3-dev), install again to compile it.")
            return
        # what was compiled: an installed source that differs from it (edited during or after the
        # build) sends the data plane to its sources
        manifest.write_text(json.dumps(built_from, indent=1) + "\n")
        say(f"{len(accel.MODULES)} modules compiled with mypyc and {len(accel.NATIVE)} in C "
            f"in {time.monotonic() - t0:.0f} s")

    def generate_mypyc(self) -> None:
        """mypyc's C for ``accel.MODULES``, given to the planned extensions (mypy reads the whole
        package; nothing is compiled yet)."""
        from mypyc.build import mypycify

        work = Path(self.build_temp).resolve() / "mypyc"
        work.mkdir(parents=True, exist_ok=True)
        config = work / "mypy.ini"
        # The same analysis wherever it runs: only the standard library's and fivenines' own types
        # (the build environment has mypy and setuptools, not pydantic or httptools), errors only
        # where compiled. The project's strict mypy run is `make test`'s business.
        config.write_text("[mypy]\nignore_missing_imports = True\nfollow_imports = silent\n"
                          "no_site_packages = True\n")
        paths = [str(accel.source_path(m).relative_to(ROOT)) for m in accel.MODULES]
        cwd = os.getcwd()
        os.chdir(ROOT)
        try:
            generated = mypycify([f"--config-file={config}", f"--cache-dir={work / 'cache'}", *paths],
                                 opt_level="3", group_name=accel.GROUP, target_dir=str(work / "c"))
        finally:
            os.chdir(cwd)
        by_name = {ext.name: ext for ext in generated}
        planned = {ext.name: ext for ext in self.extensions if not ext.sources}
        if set(by_name) != set(planned):
            raise RuntimeError(f"mypyc made {sorted(by_name)}, the build planned {sorted(planned)}")
        for name, ext in planned.items():  # what to compile and how; setuptools' own state stays
            vars(ext).update({k: v for k, v in vars(by_name[name]).items()
                              if k != "name" and (not k.startswith("_") or k.startswith("_mypyc"))})

    def generate_tables(self) -> None:
        """``_express_tables.h`` (the C express lane's field classifiers) from the one table of
        fields, fivenines/core/fieldsets.py (in the build's manifest: fivenines.accel.NATIVE_DEPENDS),
        into the build's temporary directory, which the C extensions include from."""
        fieldsets = load("fivenines_build_fieldsets", PACKAGE_DIR / "core" / "fieldsets.py")
        out = Path(self.build_temp).resolve() / "generated"
        out.mkdir(parents=True, exist_ok=True)
        (out / fieldsets.HEADER_NAME).write_text(fieldsets.c_header())
        for ext in self.extensions:
            if ext.name in accel.NATIVE:
                ext.include_dirs = [str(out), *ext.include_dirs]

    def remove_outputs(self, target: Path) -> None:
        for m in (*accel.MODULES, *accel.NATIVE, accel.SHARED_LIB):
            for p in accel.extension_paths(m, target):
                p.unlink(missing_ok=True)
        self.extensions = []


setup(ext_modules=planned_extensions(), cmdclass={"build_ext": BuildDataPlane})
