"""Health changes to roles to the serving set; passive ejections. Thin: the decisions are in core.

Data flow of one heartbeat, from here on: a health :class:`~fivenines.core.health.Transition`
(:meth:`Reconciler.transition`) → an event → the group's roles re-planned by
:func:`~fivenines.core.pool.plan_roles` (a standby promoted, an active demoted) → the serving
set planned by :func:`~fivenines.core.pool.plan_serving` (fail-open when nothing can serve)
→ published to the data plane (:meth:`~fivenines.proxy.backend.BackendGroup.set_serving`).
A ``replicated:`` group hands the change to its store's failover instead.

Passive detection: the data plane records each outcome in the group's
:class:`~fivenines.core.detect.OutlierDetector` (wired by :meth:`Reconciler.wire`); an
ejection takes the target out of the serving set here; hung or slow targets also have
what waits for them retried elsewhere.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection
from typing import Any

from fivenines.core import pool
from fivenines.core.detect import Ejection, OutcomeSink
from fivenines.core.health import HealthState, Transition
from fivenines.runtime.context import RuntimeContext
from fivenines.runtime.dataplane import DataPlane
from fivenines.runtime.targets import GroupRuntime, TargetRuntime

log = logging.getLogger("fivenines")


class Reconciler:
    def __init__(self, ctx: RuntimeContext, data_plane: DataPlane) -> None:
        self.ctx = ctx
        self.data_plane = data_plane
        self.on_decision: Callable[[str], None] | None = None  # each role decision, as it is taken

    def __repr__(self) -> str:
        return f"<Reconciler {len(self.ctx.groups)} groups>"

    # ------------------------------------------------------------------ health → roles → serving

    def transition(self, t: TargetRuntime, tr: Transition | None) -> list[str]:
        """Carry out a health transition of ``t`` (None: nothing changed). Returns the role decisions."""
        if tr is None:
            return []
        reason = tr.reason.value if tr.reason else "passed health checks"
        if tr.detail:
            reason = f"{reason}: {tr.detail}"
        self.ctx.event("health", t, tr.old.value, tr.new.value, reason)
        if tr.new is HealthState.HEALTHY and t.first_healthy is None:
            t.first_healthy = tr.at  # its first time: nothing to recover from, no hold (pool.ready_at)
        if tr.old is HealthState.HEALTHY and tr.new is HealthState.UNHEALTHY and not t.ejection:
            t.group.failover.flaps.lost(t.id, tr.at)  # one loss per incident: not again after an ejection
        return self.reconcile(t.group)

    def reconcile(self, g: GroupRuntime) -> list[str]:
        """Re-plan roles and publish the serving set. Returns the decisions taken (readable)."""
        if g.replication is not None:
            return g.replication.reconcile()
        ctx = self.ctx
        now = ctx.now()
        changes = pool.plan_roles([t.member(now) for t in g.targets], g.active_count, now=now)
        decisions = []
        for c in changes:
            t = g.by_id(c.id)
            assert t is not None
            t.role = c.new
            t.role_since = now
            ctx.event("role", t, c.old.value, c.new.value, c.reason)
            decisions.append(str(c))
        fo = g.failover
        plan = pool.plan_serving([t.member() for t in g.targets], fo.fail_open)
        # weight 0 (an operator's): healthy but sent no new requests
        ids = [i for i in plan.ids if g.backends.backends[i].weight > 0]
        before = [b.id for b in g.backends.serving]
        if plan.fail_open != fo.serving.fail_open:
            what = (f"no target can serve: fail-open {plan.policy.value} in force" if plan.fail_open
                    else "fail-open over: a target can serve again")
            ctx.emit("fail_open", g.name, "", "", plan.policy.value if plan.fail_open else "", what, at=now)
            log.warning("%s: %s", g.name, what)
        fo.serving = plan
        if ids != before:
            g.backends.set_serving(ids)
            why = str(plan) if plan.fail_open else f"{len(ids)} of {g.active_count} actives serving"
            ctx.emit("serving", g.name, "", ",".join(before), ",".join(ids), why, at=now)
            if not ids:
                log.warning("%s: no target serves: requests get 503", g.name)
        for d in decisions:
            if self.on_decision:
                self.on_decision(d)
        return decisions

    def republish(self, g: GroupRuntime) -> None:
        """After a weight change: the serving set again (weight 0 leaves it), and the balancer's
        weights (it reads them when the serving set is published)."""
        before = [b.id for b in g.backends.serving]
        self.reconcile(g)
        if [b.id for b in g.backends.serving] == before:
            g.refresh_balancer()

    def tick(self, g: GroupRuntime, now: float) -> list[str]:
        """The time-driven part for one group: suspicion (phi), ends of ejections, latency outliers;
        then roles and the serving set. Returns the role decisions taken, in order."""
        grace = g.spec.health_check.startup_grace
        decisions: list[str] = []
        for t in g.targets:
            if t.slot is not None:
                t.slot.lifecycle.mark_stable(now)
                if t.slot.lifecycle.in_startup_grace(now, grace):
                    continue
            decisions += self.transition(t, t.judge.poll(now))
        out = g.failover.outliers
        if out is not None:
            ejections, back = out.sweep(now)
            for i in back:
                self.ejection_over(g.targets[i], now, "ejection time over")
            for e in ejections:
                decisions += self.apply_ejection(g, e)
        return decisions + self.reconcile(g)

    # ------------------------------------------------------------------ passive detection

    def wire(self, g: GroupRuntime) -> None:
        """Connect the group's data plane to its passive detector (when it has one)."""
        out = g.failover.outliers
        if out is not None:
            # compiled with the data plane: no Python frame per response (a reload that replaces the
            # detector wires the group again)
            g.backends.observe = OutcomeSink(out, functools.partial(self._ejected, g))
        else:
            g.backends.observe = None

    def reindex(self, g: GroupRuntime, fresh: Collection[str] = ()) -> None:
        """Targets came or went (a reload): make every target's index its position again (the
        passive detector's key, the data plane's ``backend.index``), carrying each kept target's
        passive history over; ``fresh`` targets start clean."""
        order: list[int | None] = []
        for i, t in enumerate(g.targets):
            order.append(None if t.id in fresh else t.backend.index)
            t.index = i
            t.backend.index = i
        out = g.failover.outliers
        if out is not None:
            out.remap(order)

    def apply_ejection(self, g: GroupRuntime, e: Ejection) -> list[str]:
        """Carry out an ejection: the target leaves the serving set. Returns the role decisions."""
        t = g.targets[e.index]
        t.ejection = e.reason
        if t.health.state is HealthState.HEALTHY:
            g.failover.flaps.lost(t.id, e.at)
        self.ctx.event("ejection", t, "", "ejected", f"{e} (ejection #{e.count})")
        decisions = self.reconcile(g)  # it leaves the serving set now
        if e.cause in ("timeout", "latency"):
            # hung or slow: what waits for it is retried elsewhere now (after this call stack unwinds)
            self.ctx.loop.call_soon(self._rescue, t)
        return decisions

    def _ejected(self, g: GroupRuntime, e: Ejection) -> None:  # from the data plane, as it records
        self.apply_ejection(g, e)

    def _rescue(self, t: TargetRuntime) -> None:
        n = self.data_plane.rescue(t.backend)
        if n:
            log.info("%s: %d requests waiting for %s retried elsewhere", t.group.name, n, t.id)

    def ejection_over(self, t: TargetRuntime, now: float, why: str) -> None:
        if not t.ejection:
            return
        t.ejection = ""
        t.available_since = now
        self.ctx.event("ejection", t, "ejected", "", why)

    def on_worker_ejection(self, msg: dict[str, Any]) -> None:
        """A worker's passive detector ejected a target (and took it out of its own serving set)."""
        g = self.ctx.groups.get(msg.get("group", ""))
        t = g.by_id(msg.get("id", "")) if g is not None else None
        if g is None or t is None or g.failover.outliers is None:
            return
        e = g.failover.outliers.eject(t.index, self.ctx.now(), str(msg.get("reason", "")), str(msg.get("cause", "")))
        if e is not None:
            self.apply_ejection(g, e)
        elif not t.ejection:
            g.refresh_balancer()  # not ejected: the workers serve it again
