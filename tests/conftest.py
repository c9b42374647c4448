from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Demo, Fivenines

# Tests press Ctrl-C on the commands they start (SIGINT) as a user at a terminal does. A suite
# started as a background job of a non-interactive shell (`make test &`) has SIGINT ignored, and
# an ignored signal stays ignored in every process it starts: Python then installs no
# KeyboardInterrupt, and those commands would never see the Ctrl-C. A handler of our own is reset
# to the default in the processes started, so they get SIGINT as from a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def demo() -> Iterator[Demo]:
    d = Demo("demo-a")
    yield d
    d.stop()


@pytest.fixture
def demos() -> Iterator[list[Demo]]:
    ds = [Demo(f"demo-{c}") for c in "abc"]
    yield ds
    for d in ds:
        d.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def run_fivenines(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[type[Fivenines]]:
    """Start ``fivenines up`` processes; stopped after the test. When the test failed, the
    end of each one's log is printed with the failure (its tmp_path does not outlive a few runs)."""
    started: list[Fivenines] = []

    class _F(Fivenines):
        def __init__(self, spec: dict, extra_args: list[str] | None = None) -> None:  # type: ignore[type-arg]
            super().__init__(tmp_path, spec, extra_args)
            started.append(self)

    yield _F  # type: ignore[misc]
    for f in started:
        f.stop()
    if request.node.stash.get(_FAILED, False):
        for f in started:
            lines = f.log.read_text(errors="replace").splitlines()
            print(f"--- last {min(80, len(lines))} lines of {f.log}", *lines[-80:], sep="\n")
