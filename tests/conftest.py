from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Demo, Fivenines


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


@pytest.fixture
def run_fivenines(tmp_path: Path) -> Iterator[type[Fivenines]]:
    started: list[Fivenines] = []

    class _F(Fivenines):
        def __init__(self, spec: dict, extra_args: list[str] | None = None) -> None:  # type: ignore[type-arg]
            super().__init__(tmp_path, spec, extra_args)
            started.append(self)

    yield _F  # type: ignore[misc]
    for f in started:
        f.stop()
