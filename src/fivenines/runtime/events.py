"""State-change events: a bounded in-memory ring that status, the CLI and subscribers read."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any


def iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    time: float  # wall clock, seconds since the epoch
    kind: str  # health | role | instance | serving | lifecycle
    group: str
    target: str
    old: str
    new: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["at"] = iso(self.time)
        return d

    def __str__(self) -> str:
        who = f"{self.group}/{self.target}" if self.target else self.group
        change = f"{self.old} -> {self.new}" if self.old or self.new else ""
        return f"{who} {self.kind} {change}: {self.reason}".replace("  ", " ")


class EventLog:
    def __init__(self, size: int = 1000) -> None:
        self._ring: deque[Event] = deque(maxlen=size)
        self._seq = itertools.count(1)
        self._subscribers: list[Callable[[Event], None]] = []

    def emit(self, wall: float, kind: str, group: str, target: str, old: str, new: str, reason: str) -> Event:
        ev = Event(next(self._seq), wall, kind, group, target, old, new, reason)
        self._ring.append(ev)
        for sub in list(self._subscribers):
            sub(ev)
        return ev

    def subscribe(self, fn: Callable[[Event], None]) -> Callable[[], None]:
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def recent(self, limit: int = 100, since: int = 0) -> list[Event]:
        return [e for e in self._ring if e.seq > since][-limit:]
