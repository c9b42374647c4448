"""Where a spec's state lives on this machine, and the files fivenines leaves there for others.

``STATE_DIR`` is ``state_dir`` from the spec, else ``.fivenines/NAME`` beside the spec file;
relative paths in a spec are relative to the spec file's folder. While fivenines runs,
``STATE_DIR/run.json`` says where (its pid and admin URL): how the CLI finds it with ``-f SPEC``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fivenines.spec import Spec

RUN_FILE = "run.json"
"""In STATE_DIR while fivenines runs: its pid and admin URL (how the CLI finds it with -f SPEC)."""

TOKEN_NAME = "admin.token"
"""The admin bearer token's file in STATE_DIR when the spec names no ``admin.token_file``."""


def spec_base_dir(spec_path: Path | None) -> Path:
    """The folder relative paths in a spec are relative to: the spec file's."""
    return (spec_path.parent if spec_path else Path.cwd()).resolve()


def resolve_state_dir(spec: Spec, spec_path: str | Path | None) -> Path:
    """Where a spec's state goes: ``state_dir``, else ``.fivenines/NAME`` beside the spec file."""
    return state_dir_for(spec.name, spec.state_dir, spec_path)


def state_dir_for(name: str, state_dir: str | None, spec_path: str | Path | None) -> Path:
    return spec_base_dir(Path(spec_path) if spec_path else None) / (state_dir or f".fivenines/{name}")


def state_dir_of(spec: Spec, spec_path: str | Path) -> tuple[Path, Path]:
    """(state_dir, base_dir) of a spec file, as the runtime resolves them."""
    base = Path(spec_path).parent.resolve()
    return base / (spec.state_dir or f".fivenines/{spec.name}"), base


def admin_token_path(spec: Spec, state_dir: Path, base_dir: Path) -> Path:
    """Where the admin bearer token is kept: ``admin.token_file`` (relative to the spec's
    folder) or ``STATE_DIR/admin.token``."""
    return base_dir / spec.admin.token_file if spec.admin.token_file else state_dir / TOKEN_NAME


def write_ready_file(path: str, info: dict[str, Any]) -> None:
    """Atomically write the addresses fivenines serves on (for scripts and tests)."""
    tmp = Path(path + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # owner-only, like every file we write
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(info))
    tmp.replace(path)
