"""Balancing algorithms: which of the serving targets gets the next request. Pure.

A balancer is asked to :meth:`~Balancer.pick` one of a sequence of candidates (the
targets the pool says may serve, minus any already tried for this request). It
keeps only its own small state (a counter, weights); candidates are passed in on
every call so that membership changes need no notification.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

T = TypeVar("T")


class Balancer(Protocol):
    name: str

    def pick(self, candidates: Sequence[T], key: bytes | None = None) -> T | None: ...


class RoundRobin:
    """Each candidate in turn.

    >>> rr = RoundRobin()
    >>> [rr.pick(["a", "b", "c"]) for _ in range(4)]
    ['a', 'b', 'c', 'a']
    """

    name = "round_robin"
    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def pick(self, candidates: Sequence[T], key: bytes | None = None) -> T | None:
        n = len(candidates)
        if n == 0:
            return None
        i = self._next % n
        self._next = i + 1
        return candidates[i]

    def __repr__(self) -> str:
        return f"<RoundRobin next={self._next}>"


def make_balancer(algorithm: str) -> Balancer:
    if algorithm == "round_robin":
        return RoundRobin()
    raise ValueError(f"unknown algorithm {algorithm!r}")
