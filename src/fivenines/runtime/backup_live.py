"""The live group as backups and restores see it, and the few Redis calls they share.

:class:`LiveGroup` is what a backup or a restore needs from the running group: its
members (address, health, role, link, position), whether scheduled work may run, the
restore fence (``begin_restore``/``end_restore``), the members' data directories and the
event journal. :class:`ReplicatedGroup` is that over a
:class:`~fivenines.runtime.replication.ReplicationManager`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fivenines.core import restore_plan
from fivenines.core.backup import BackupError
from fivenines.runtime.redis import ErrorReply, RedisClient, ReplyError, parse_info

if TYPE_CHECKING:
    from fivenines.runtime.replication import ReplicationManager

log = logging.getLogger("fivenines.backup")



@dataclass(frozen=True, slots=True)
class Member:
    id: str
    host: str
    port: int
    healthy: bool
    primary: bool
    link_up: bool
    position: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class LiveGroup(Protocol):
    """What backups and restores need from the running group (see :class:`ReplicatedGroup`)."""

    name: str

    def members(self) -> list[Member]: ...

    def ready(self) -> bool:
        """Scheduled work may run: this node acts for the group (lease) and a primary serves."""
        ...

    def begin_restore(self) -> None: ...

    def restoring(self) -> bool:
        """Still fenced for the restore (False: the node stepped down, its lease lost)."""
        ...

    def end_restore(self, ok: bool, position: int, detail: str, primary_intact: bool) -> None: ...

    def data_dir(self, target: str) -> Path | None: ...

    def emit(self, kind: str, target: str, old: str, new: str, reason: str) -> None: ...


class ReplicatedGroup:
    """:class:`LiveGroup` over a :class:`~fivenines.runtime.replication.ReplicationManager`."""

    def __init__(self, rm: ReplicationManager) -> None:
        self.rm = rm
        self.name = rm.g.name

    def members(self) -> list[Member]:
        from fivenines.core.health import HealthState

        out = []
        for t in self.rm.g.targets:
            st = self.rm.targets[t.id]
            obs = self.rm.observations.get(t.id, (None, 0.0))[0]
            out.append(Member(t.id, st.host, st.port, t.health.state is HealthState.HEALTHY,
                              t.id == self.rm.core.primary, bool(obs and obs.link_up),
                              obs.position if obs else -1))
        return out

    def ready(self) -> bool:
        from fivenines.core.replication import Phase

        core_ = self.rm.core
        return core_.can_act(self.rm.ctx.now()) and core_.phase is Phase.SERVING and core_.published.primary is not None

    def begin_restore(self) -> None:
        self.rm.begin_restore()

    def restoring(self) -> bool:
        from fivenines.core.replication import Phase

        return self.rm.core.phase is Phase.RESTORING and self.rm.core.can_act(self.rm.ctx.now())

    def end_restore(self, ok: bool, position: int, detail: str, primary_intact: bool) -> None:
        self.rm.end_restore(ok, position, detail, primary_intact)

    def data_dir(self, target: str) -> Path | None:
        t = self.rm.g.by_id(target)
        return self.rm.ctx.state_dir / "data" / target if t is not None and t.slot is not None else None

    def emit(self, kind: str, target: str, old: str, new: str, reason: str) -> None:
        ctx = self.rm.ctx
        ev = ctx.events.emit(ctx.wall(ctx.now()), kind, self.name, target, old, new, reason)
        log.info("%s", ev)


async def redis_client(host: str, port: int, timeout: float = 5.0) -> RedisClient:
    return await RedisClient.connect(host, port, timeout)


async def server_info(c: RedisClient, *sections: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for r in await c.pipeline([("INFO", s) for s in sections], timeout=10.0):
        if isinstance(r, ErrorReply):
            raise ReplyError(str(r))
        out.update(parse_info(r.decode() if isinstance(r, bytes) else str(r)))
    return out


async def until(what: str, deadline: float, check: Callable[[], Any], every: float = 0.05) -> Any:
    """Poll ``check`` (async; returns (done, why_not)) until done or the deadline."""
    why = ""
    while True:
        done, why = await check()
        if done:
            return why
        if time.monotonic() > deadline:
            raise BackupError(f"{what}: {why}")
        await asyncio.sleep(every)


async def aof_ready(c: RedisClient, before: dict[str, str]) -> tuple[bool, str]:
    """Whether AOF is on and rewritten since ``before`` (``INFO persistence``), and why not."""
    now = await server_info(c, "persistence")
    why = restore_plan.aof_rewritten(before, now)
    return why is None and now.get("aof_enabled") == "1", why or "AOF not enabled yet"


__all__ = ["LiveGroup", "Member", "ReplicatedGroup", "aof_ready", "redis_client", "server_info", "until"]
