"""What every command family shares: the two consoles, exit codes, loading the spec, and
the one place a :class:`~fivenines.errors.FivenineError` becomes a message and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape

from fivenines.cli.admin_client import AdminRefused, AdminUnreachable
from fivenines.errors import ConfigError, FivenineError, SpecError
from fivenines.spec import Spec, load_spec, port_errors

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)

EXIT_FAILED = 1
EXIT_USAGE = 2

spec_argument = click.argument("spec_file", default="fivenines.yaml", type=click.Path(dir_okay=False))


def error(message: str) -> None:
    """Print ``error: message`` on stderr (the message as plain text)."""
    err.print(f"[bold red]error[/]: {escape(message)}", markup=True, soft_wrap=True)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print ``error: message`` and exit with ``code``."""
    error(message)
    sys.exit(code)


@contextmanager
def failing(code: int, prefix: str = "", suffix: str = "") -> Iterator[None]:
    """A FivenineError in the block exits with ``code`` instead of :func:`report`'s, its message
    between ``prefix`` and ``suffix`` (``aws plan`` exits 2 on any problem; ``apply`` tells how
    to finish)."""
    try:
        yield
    except FivenineError as exc:
        fail(f"{prefix}{exc}{suffix}", code)


def warn(message: str) -> None:
    err.print(f"[yellow]warning[/]: {escape(message)}", markup=True, soft_wrap=True)


def load(path: str, check_ports: bool) -> Spec:
    """The spec at ``path``, its ports checked free when asked; a :class:`SpecError` otherwise
    (:func:`report` prints every problem, exit status 2)."""
    spec = load_spec(path)
    if check_ports:
        problems = port_errors(spec)
        if problems:
            raise SpecError(path, problems)
    return spec


def report(exc: FivenineError) -> NoReturn:
    """The CLI's boundary: an error no command handled itself, as one message and an exit code
    (2 for a spec or configuration problem, 1 for anything else)."""
    if isinstance(exc, SpecError):
        for e in exc.errors:
            error(f"{exc.file}: {e}")
        sys.exit(EXIT_USAGE)
    if isinstance(exc, AdminUnreachable):
        fail(f"cannot reach fivenines at {exc.url}: {exc.reason}")
    if isinstance(exc, AdminRefused) and exc.status == 401:
        fail(f"the admin token was refused: {_detail(exc.data)}")
    fail(str(exc), EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED)


def _detail(data: Any) -> str:
    """fivenines' reason in an admin API answer (``{"error": ...}``)."""
    return str(data.get("error", "")) if isinstance(data, dict) else ""


@contextmanager
def refusal(what: str) -> Iterator[None]:
    """fivenines said no (an HTTP status other than the one expected): ``error: WHAT: its
    reason``, exit 1. A refused token is left to :func:`report`."""
    try:
        yield
    except AdminRefused as exc:
        if exc.status == 401:
            raise
        fail(f"{what}: {_detail(exc.data) or exc.status}")


class Main(click.Group):
    """The ``fivenines`` group: every FivenineError a command lets through goes to :func:`report`."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FivenineError as exc:
            report(exc)
