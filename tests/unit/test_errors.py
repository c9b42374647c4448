"""One exception root: every public exception class of the package derives from FivenineError,
through one of the kinds of fivenines.errors."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from types import ModuleType

import pytest

import fivenines
from fivenines import accel
from fivenines.errors import KINDS, ConfigError, FivenineError, ProtocolError, SpecError, TimedOut


def _modules() -> Iterator[ModuleType]:
    for info in pkgutil.walk_packages(fivenines.__path__, "fivenines."):
        if info.name.rsplit(".", 1)[-1] == "__main__" or info.name in accel.NATIVE:
            continue  # __main__ runs the CLI; the C modules (accel.NATIVE) have no Python classes
        yield importlib.import_module(info.name)


def _exception_classes() -> list[type[BaseException]]:
    found = {
        obj
        for mod in _modules()
        for obj in vars(mod).values()
        if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == mod.__name__
    }
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


CLASSES = _exception_classes()
PUBLIC = [c for c in CLASSES if not c.__name__.startswith("_")]
"""Private exceptions (``_Rejected``, ``_Incomplete``) are control flow inside their module."""


def test_the_walk_finds_the_errors_of_every_layer() -> None:
    names = {c.__name__ for c in PUBLIC}
    assert {"SpecError", "StoreTimeout", "LeaseLost", "ReplicationError", "ChaosError", "AdminTimeout"} <= names
    assert "ProxyError" not in names  # nothing raised it: removed


@pytest.mark.parametrize("cls", PUBLIC, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_every_public_exception_derives_from_the_root_through_a_kind(cls: type[BaseException]) -> None:
    assert issubclass(cls, FivenineError), f"{cls.__module__}.{cls.__name__} is a stray exception root"
    if cls is not FivenineError:
        assert issubclass(cls, KINDS), f"{cls.__name__} belongs to no kind of fivenines.errors.KINDS"


def test_errors_of_two_kinds_are_caught_as_either() -> None:
    from fivenines.cli.admin_client import AdminTimeout
    from fivenines.errors import NetworkError
    from fivenines.runtime.redis import RespProtocolError
    from fivenines.runtime.store import StoreError, StoreTimeout

    for timeout in (StoreTimeout("redis: no reply in 1s"), AdminTimeout("http://x", "no answer within 1s")):
        with pytest.raises(TimedOut):
            raise timeout
        with pytest.raises(NetworkError):
            raise timeout
    with pytest.raises(StoreError):
        raise RespProtocolError("unknown RESP type")
    with pytest.raises(ProtocolError):
        raise RespProtocolError("unknown RESP type")
    assert issubclass(SpecError, ConfigError)
    assert not issubclass(TimedOut, TimeoutError)  # asyncio's timeouts and ours stay apart
