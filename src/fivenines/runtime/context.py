"""What every part of the local runtime shares: the spec, the groups, the clock, the event journal.

One :class:`RuntimeContext` per running spec. The parts (reconcile, instances, checks,
draining, rollouts, the data plane, reload, the operator, the state file) each get it,
plus the few other parts they call, by their public methods; none reaches into another.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from pathlib import Path

from fivenines.runtime.events import Event, EventLog
from fivenines.runtime.paths import resolve_state_dir, spec_base_dir
from fivenines.runtime.targets import GroupRuntime, TargetRuntime
from fivenines.spec import Spec

log = logging.getLogger("fivenines")


class RuntimeContext:
    def __init__(self, spec: Spec, spec_path: Path | None, rng: random.Random) -> None:
        self.spec = spec  # replaced by a reload
        self.spec_path = spec_path
        # relative paths in the spec are relative to the spec file's folder
        self.base_dir = spec_base_dir(spec_path)
        self.state_dir = resolve_state_dir(spec, spec_path)
        self.rng = rng
        self.events = EventLog()
        self.groups: dict[str, GroupRuntime] = {}
        self.stopping = False  # set once, as fivenines begins to stop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wall_offset = 0.0

    def __repr__(self) -> str:
        return f"<RuntimeContext {self.spec.name} groups={sorted(self.groups)} stopping={self.stopping}>"

    # -- the clock: the loop's (monotonic); wall time only for what people read

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._wall_offset = time.time() - loop.time()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "not started"
        return self._loop

    def now(self) -> float:
        return self.loop.time()

    def wall(self, t: float) -> float:
        return t + self._wall_offset

    # -- lookups

    def target(self, target_id: str) -> TargetRuntime | None:
        for g in self.groups.values():
            t = g.by_id(target_id)
            if t is not None:
                return t
        return None

    def target_ids(self) -> list[str]:
        return [t.id for g in self.groups.values() for t in g.targets]

    # -- the journal

    def emit(self, kind: str, group: str, target: str, old: str, new: str, reason: str,
             at: float | None = None) -> Event:
        """Record an event (``at``: loop time, default now)."""
        return self.events.emit(self.wall(self.now() if at is None else at), kind, group, target, old, new, reason)

    def event(self, kind: str, t: TargetRuntime, old: str, new: str, reason: str) -> Event:
        """Record an event about target ``t`` now, and log it."""
        ev = self.emit(kind, t.group.name, t.id, old, new, reason)
        log.info("%s", ev, extra={"event": ev.to_json()})
        return ev
