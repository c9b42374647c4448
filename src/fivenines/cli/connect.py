"""How a command finds the running fivenines: its admin URL and token, from ``--admin``,
``-f SPEC`` (or ``./fivenines.yaml``) and ``--token-file``; the options that say so. With a
cluster spec, the node running on this machine (``$FIVENINES_NODE`` when there are several).

Only the few keys needed are read from the spec (``name``, ``state_dir``, ``admin``),
so that a spec with a pending (even invalid) edit still finds the fivenines that runs
it: ``STATE_DIR/run.json`` holds its pid and admin URL while it runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from fivenines.cli.admin_client import AdminClient
from fivenines.cli.common import EXIT_USAGE, fail

DEFAULT_ADMIN = "127.0.0.1:9900"

F = TypeVar("F", bound=Callable[..., Any])

admin_option = click.option("--admin", help="Admin address (host:port or URL). Default: found from -f SPEC.")
file_option = click.option("-f", "--file", "spec_file", type=click.Path(dir_okay=False),
                           help="The spec fivenines runs (default: ./fivenines.yaml when present).")
token_option = click.option("--token-file", type=click.Path(dir_okay=False),
                            help="Admin token file (default: admin.token_file, else STATE_DIR/admin.token).")


def admin_options(f: F) -> F:
    """``--admin`` and ``-f``: enough to read a running fivenines."""
    return admin_option(file_option(f))


def mutating_options(f: F) -> F:
    """``--admin``, ``-f`` and ``--token-file``: for the calls that change fivenines."""
    return admin_option(file_option(token_option(f)))


@dataclass(frozen=True)
class Located:
    """Where the fivenines running a spec answers, and where its token is."""

    admin: str
    token_file: Path


def find_spec(spec_file: str | None) -> str | None:
    if spec_file:
        return spec_file
    return "fivenines.yaml" if os.path.exists("fivenines.yaml") else None


def locate(spec_file: str | None) -> Located | None:
    """The admin URL and token file of the fivenines running SPEC (None without a spec)."""
    path = find_spec(spec_file)
    if not path:
        return None
    import yaml

    from fivenines.admin.auth import TOKEN_NAME
    from fivenines.runtime.paths import RUN_FILE, spec_base_dir, state_dir_for

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        name = str(raw["name"])
        admin = raw.get("admin") or {}
        state_dir = state_dir_for(name, raw.get("state_dir"), path)
        listen = str(admin.get("listen", DEFAULT_ADMIN))
        token_file = admin.get("token_file")
        if raw.get("cluster"):
            state_dir = _node_dir(path, state_dir, [str(n["name"]) for n in raw["cluster"].get("nodes") or []])
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        fail(f"{path}: cannot find the running fivenines from it: {exc}", EXIT_USAGE)
    token = spec_base_dir(Path(path)) / str(token_file) if token_file else state_dir / TOKEN_NAME
    try:
        info = json.loads((state_dir / RUN_FILE).read_text())
        os.kill(int(info["pid"]), 0)
        return Located(str(info["admin"]), token)
    except (OSError, ValueError, KeyError, TypeError):
        return Located(f"http://{listen}", token)


def _alive(run_dir: Path) -> bool:
    from fivenines.runtime.paths import RUN_FILE

    try:
        os.kill(int(json.loads((run_dir / RUN_FILE).read_text())["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _node_dir(path: str, state_dir: Path, nodes: list[str]) -> Path:
    """A cluster spec: the state dir of the node running here (``STATE_DIR/node-NAME``; the one in
    ``$FIVENINES_NODE`` when several run on this machine)."""
    wanted = os.environ.get("FIVENINES_NODE")
    if wanted:
        return state_dir / f"node-{wanted}"
    live = [n for n in nodes if _alive(state_dir / f"node-{n}")]
    if len(live) > 1:
        fail(f"{path}: nodes {', '.join(live)} of this cluster run on this machine: say which with "
             "FIVENINES_NODE=NAME, or give --admin", EXIT_USAGE)
    return state_dir / f"node-{live[0] if live else nodes[0]}"


def admin_url(admin: str | None, spec_file: str | None) -> str:
    if admin:
        return admin if admin.startswith("http") else f"http://{admin}"
    found = locate(spec_file)
    return found.admin if found else f"http://{DEFAULT_ADMIN}"


def read_token(token_file: str | None, spec_file: str | None) -> str:
    """The admin token from ``--token-file``, else from the spec's token file. Missing or
    unreadable: exit 1; a file that is not a token (several lines, spaces): exit 2."""
    if token_file:
        path = Path(token_file)
    else:
        found = locate(spec_file)
        if found is None:
            fail("this needs the admin token: give -f SPEC (the token is in STATE_DIR/admin.token or "
                 "admin.token_file) or --token-file PATH")
        path = found.token_file
    try:
        token = path.read_text().strip()
    except OSError as exc:
        fail(f"this needs the admin token: cannot read {path}: {exc.strerror or exc}")
    if not token or any(c.isspace() for c in token):
        fail(f"{path} is not an admin token file (one line, no spaces)", EXIT_USAGE)
    return token


def client(admin: str | None, spec_file: str | None, token_file: str | None = None, *,
           token: bool = False, timeout: float = 10.0) -> AdminClient:
    """An admin client for the running fivenines; with ``token``, for calls that change it."""
    base = admin_url(admin, spec_file)
    return AdminClient(base, read_token(token_file, spec_file) if token else None, timeout)
