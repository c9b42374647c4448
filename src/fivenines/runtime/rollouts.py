"""Rolling restarts (``fivenines restart GROUP``): one instance at a time, never below N serving.

The plan and every step are :class:`~fivenines.core.rollout.RollingRestart`'s: given a view
of the group (roles, health, in-flight requests, starts), it returns what to do now —
deregister, stop, start, or finished/failed. This module carries the actions out; the
controller's tick asks for the next step.
"""

from __future__ import annotations

import logging
from typing import Any

from fivenines.core.rollout import ActionKind, RollingRestart, View, restart_order
from fivenines.runtime.context import RuntimeContext
from fivenines.runtime.draining import Draining
from fivenines.runtime.instances import Instances
from fivenines.runtime.interface import CommandRefused, Refusal
from fivenines.runtime.targets import GroupRuntime

log = logging.getLogger("fivenines")


def views(g: GroupRuntime) -> list[View]:
    out = []
    for t in g.targets:
        lc = t.slot.lifecycle if t.slot else None
        out.append(View(t.id, t.role, t.health.state, t.backend.in_flight, t.running,
                        lc.starts if lc else 1, bool(t.excluded), bool(lc and lc.crash_looping)))
    return out


class Rollouts:
    def __init__(self, ctx: RuntimeContext, draining: Draining, instances: Instances) -> None:
        self.ctx = ctx
        self.draining = draining
        self.instances = instances

    def __repr__(self) -> str:
        running = [g.name for g in self.ctx.groups.values() if g.failover.rollout and g.failover.rollout.running]
        return f"<Rollouts running={running}>"

    def restart_group(self, name: str) -> dict[str, Any]:
        """Start a rolling restart of group ``name``. Returns its snapshot; raises CommandRefused."""
        ctx = self.ctx
        g = ctx.groups.get(name)
        if g is None:
            raise CommandRefused(Refusal.UNKNOWN, f"no target group {name!r}; defined: {', '.join(sorted(ctx.groups))}")
        if g.spec.instances is None:
            raise CommandRefused(Refusal.CONFLICT,
                                 f"{name}: its targets are not run by fivenines, so it cannot restart them")
        if g.replication is not None:
            raise CommandRefused(Refusal.CONFLICT, f"{name} is a replicated store: restart its replicas one by one "
                                                   "and use fivenines switchover for the primary")
        now = ctx.now()
        ro = g.failover.rollout
        if ro is not None and ro.running:
            raise CommandRefused(Refusal.CONFLICT, f"{name}: a rolling restart is already running",
                                 {"rollout": ro.snapshot(now)})
        ro = RollingRestart(restart_order(views(g)), g.failover.rollout_policy, started_at=now)
        g.failover.rollout = ro
        ctx.emit("rollout", g.name, "", "", "running", f"rolling restart, one at a time: {', '.join(ro.order)}",
                 at=now)
        self.step(g, now)
        return {"group": name, "rollout": ro.snapshot(now)}

    def step(self, g: GroupRuntime, now: float) -> None:
        """Carry out what the group's rolling restart says to do now (if one runs)."""
        ro = g.failover.rollout
        if ro is None or not ro.running:
            return
        ctx = self.ctx
        for a in ro.step(views(g), now):
            t = g.by_id(a.target) if a.target else None
            if a.kind is ActionKind.DEREGISTER and t is not None:
                ctx.event("rollout", t, "", "deregister", a.reason)
                self.draining.deregister(t.id)
            elif a.kind is ActionKind.STOP and t is not None:
                ctx.event("rollout", t, "deregister", "stop", a.reason)
                ctx.loop.create_task(self.instances.stop(t), name=f"rollout stop {t.id}")
            elif a.kind is ActionKind.START and t is not None:
                ctx.event("rollout", t, "stop", "start", a.reason)
                self.instances.start(t)
            else:
                state = "done" if a.kind is ActionKind.FINISHED else "failed"
                ctx.emit("rollout", g.name, a.target, "running", state, a.reason, at=now)
                (log.info if state == "done" else log.error)("%s: rolling restart %s: %s", g.name, state, a.reason)
