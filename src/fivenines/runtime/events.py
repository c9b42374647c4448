"""State-change events: a bounded in-memory ring, a JSON-lines file, and followers.

Every state change is one :class:`Event` (time, kind, group, target, old and new
state, reason). Kinds: ``health``, ``role``, ``instance``, ``serving``, ``admin``
(an operator's drain/enable/maintenance/weight), ``drain`` (a drain finished),
``reload``, ``restore`` (state restored from the state file), ``fail_open``,
``ejection``; replicated stores add ``failover``, ``fence``, ``switchover``, ``lease``,
``discovery``, and with backups ``backup``, ``recovery`` (a backup restored into the
group) and ``drill`` (docs/backup.md). The ring keeps the latest ``size`` for status and the dashboard;
the file (``STATE_DIR/events.jsonl``, rotated to ``events.jsonl.1`` past
``max_bytes``) keeps them for later; :meth:`EventLog.follow` streams them live.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("fivenines")


def iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    time: float  # wall clock, seconds since the epoch
    kind: str
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
    """The ring, the optional file, and the subscribers."""

    def __init__(self, size: int = 1000) -> None:
        self._ring: deque[Event] = deque(maxlen=size)
        self._seq = itertools.count(1)
        self._subscribers: list[Callable[[Event], None]] = []
        self._file: IO[str] | None = None
        self._path: Path | None = None
        self._max_bytes = 0
        self._written = 0
        self._closed = False
        self._wakeups: set[asyncio.Event] = set()

    def __repr__(self) -> str:
        last = self._ring[-1].seq if self._ring else 0
        return f"<EventLog {len(self._ring)} kept, last seq {last}, file {self._path}>"

    # -- the file

    def open_file(self, path: Path, max_bytes: int = 10 << 20) -> None:
        """Append every event to ``path`` as one JSON line; rotate to ``path.1`` past ``max_bytes``."""
        self._path = path
        self._max_bytes = max_bytes
        self._open()

    def _open(self) -> None:
        assert self._path is not None
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self._written = self._file.tell()

    def _write(self, ev: Event) -> None:
        f = self._file
        if f is None:
            return
        line = json.dumps(ev.to_json(), separators=(",", ":")) + "\n"
        try:
            f.write(line)
            f.flush()
            self._written += len(line)
            if self._written > self._max_bytes and self._path is not None:
                f.close()
                os.replace(self._path, self._path.with_name(self._path.name + ".1"))
                self._open()
        except OSError as exc:  # a full disk must not stop the control loop
            log.error("events file %s: %s; events are kept in memory only", self._path, exc)
            self._file = None

    def close(self) -> None:
        """Close the file and end every follower."""
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None
        self.wake_all()

    def wake_all(self) -> None:
        """Wake every follower (to notice its ``stop`` event, or the close)."""
        for w in self._wakeups:
            w.set()

    # -- emitting and reading

    def emit(self, wall: float, kind: str, group: str, target: str, old: str, new: str, reason: str) -> Event:
        ev = Event(next(self._seq), wall, kind, group, target, old, new, reason)
        self._ring.append(ev)
        self._write(ev)
        for sub in list(self._subscribers):
            sub(ev)
        self.wake_all()
        return ev

    def subscribe(self, fn: Callable[[Event], None]) -> Callable[[], None]:
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def recent(self, limit: int = 100, since: int = 0) -> list[Event]:
        """The latest ``limit`` events after seq ``since``, oldest first."""
        if limit <= 0:
            return []
        return [e for e in self._ring if e.seq > since][-limit:]

    @property
    def last_seq(self) -> int:
        return self._ring[-1].seq if self._ring else 0

    async def follow(self, since: int = 0, stop: asyncio.Event | None = None,
                     heartbeat: float = 15.0) -> AsyncIterator[Event | None]:
        """Events after ``since`` as they happen; ``None`` every ``heartbeat`` seconds of quiet.

        Ends when the log is closed or ``stop`` is set. A follower that falls behind the
        ring's size gets what the ring still holds.
        """
        wake = asyncio.Event()
        self._wakeups.add(wake)
        try:
            while not self._closed and not (stop is not None and stop.is_set()):
                wake.clear()
                fresh = self.recent(len(self._ring), since)
                for ev in fresh:
                    yield ev
                    since = ev.seq
                if fresh:
                    continue
                try:
                    async with asyncio.timeout(heartbeat):
                        await wake.wait()
                except TimeoutError:
                    yield None
        finally:
            self._wakeups.discard(wake)
