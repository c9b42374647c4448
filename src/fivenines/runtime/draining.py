"""Deregistration (draining): a target gets no new requests; what is in flight finishes.

:meth:`Draining.deregister` starts it (health ``draining``, the data plane stops picking the
target); :func:`~fivenines.core.drain.drain_step` decides, each time it is asked, whether
to wait longer, or whether the draining is over (nothing in flight) or timed out (past
the group's ``deregistration_delay``: what is left is cut). The target is then ``unused``.
Operator actions, reloads and rolling restarts all drain through here.
"""

from __future__ import annotations

import asyncio

from fivenines.core.drain import DrainState, drain_step
from fivenines.core.health import HealthState
from fivenines.errors import ConfigError
from fivenines.runtime.context import RuntimeContext
from fivenines.runtime.dataplane import DataPlane
from fivenines.runtime.reconcile import Reconciler
from fivenines.runtime.targets import TargetRuntime


class Draining:
    def __init__(self, ctx: RuntimeContext, reconciler: Reconciler, data_plane: DataPlane) -> None:
        self.ctx = ctx
        self.reconciler = reconciler
        self.data_plane = data_plane

    def __repr__(self) -> str:
        ids = [t.id for g in self.ctx.groups.values() for t in g.targets if t.drain_started is not None]
        return f"<Draining {' '.join(ids) or 'none'}>"

    def _target(self, target_id: str) -> TargetRuntime:
        t = self.ctx.target(target_id)
        if t is None:
            raise ConfigError(f"no target {target_id!r}")
        return t

    def deregister(self, target_id: str) -> str:
        """Start draining a target: no new requests; in-flight ones get ``deregistration_delay``."""
        t = self._target(target_id)
        now = self.ctx.now()
        tr = t.health.drain(now)
        if tr is None:
            return f"{t.id} is already draining"
        t.drain_started = now
        t.group.backends.set_draining(t.id, True)
        self.reconciler.transition(t, tr)
        self._step(t)
        return f"draining {t.id}: deregistration delay {t.group.spec.deregistration_delay:g}s"

    def register(self, target_id: str) -> str:
        """(Re-)register a target: it serves again after passing its health checks."""
        t = self._target(target_id)
        t.drain_started = None
        t.group.backends.set_draining(t.id, False)
        self.reconciler.transition(t, t.health.register(self.ctx.now()))
        return f"registered {t.id}"

    def _step(self, t: TargetRuntime) -> None:
        ctx = self.ctx
        if t.drain_started is None or t.health.state is not HealthState.DRAINING or ctx.stopping:
            return
        now = ctx.now()
        step = drain_step(t.drain_started, t.group.spec.deregistration_delay, t.backend.in_flight, now)
        if step.state is DrainState.WAITING:
            assert step.check_again_in is not None
            ctx.loop.call_later(step.check_again_in, self._step, t)
            return
        if step.state is DrainState.TIMED_OUT:
            self.data_plane.cut(t.group.name, t.backend)
        t.drain_started = None
        self.reconciler.transition(t, t.health.unuse(now))
        ctx.event("drain", t, "draining", "unused", step.reason)

    async def drain(self, t: TargetRuntime, why: str) -> None:
        """Send ``t`` no new requests and wait until its draining is over (:meth:`deregister`:
        in-flight requests finish, or are cut after ``deregistration_delay``); ``t`` is then
        ``unused``, and the caller decides what comes next (removed, restarted, kept out)."""
        self.begin(t, why)
        await self.wait(t)

    def begin(self, t: TargetRuntime, why: str) -> None:
        """``t`` gets no new requests from now on; ``why`` goes into a ``drain`` event."""
        self.ctx.event("drain", t, "", "draining", why)
        if t.health.state is not HealthState.UNUSED:
            self.deregister(t.id)

    async def wait(self, t: TargetRuntime) -> None:
        """Until ``t`` is no longer draining (its draining finished, timed out or was called off)."""
        # the drain steps of deregister() decide the end; watch for it from here
        while t.health.state is HealthState.DRAINING and t.drain_started is not None and not self.ctx.stopping:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
