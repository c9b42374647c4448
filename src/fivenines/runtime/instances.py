"""Supervision: the processes fivenines runs for its targets, and a target's whole life.

Data flow of one exit: the pidfd fires → health goes ``unhealthy`` at once → roles are
re-planned (a standby is promoted) → :class:`~fivenines.core.lifecycle.InstanceLifecycle`
says when to restart → the restart is scheduled. A restarted instance starts as a standby
in ``initial`` state and serves only after passing its health checks.

:meth:`Instances.launch` and :meth:`Instances.retire` begin and end a target (its process,
if any, and its checks); a reload and the start of fivenines use them.
"""

from __future__ import annotations

import asyncio
import logging

from fivenines.core.lifecycle import InstanceState, describe_exit
from fivenines.core.pool import Role
from fivenines.errors import ProviderError
from fivenines.runtime.checks import Checks
from fivenines.runtime.context import RuntimeContext
from fivenines.runtime.reconcile import Reconciler
from fivenines.runtime.supervisor import Process
from fivenines.runtime.targets import GroupRuntime, TargetRuntime, instance_target, static_target

log = logging.getLogger("fivenines")


class Instances:
    def __init__(self, ctx: RuntimeContext, reconciler: Reconciler, checks: Checks) -> None:
        self.ctx = ctx
        self.reconciler = reconciler
        self.checks = checks

    def __repr__(self) -> str:
        running = sum(1 for g in self.ctx.groups.values() for t in g.targets if t.slot is not None and t.running)
        return f"<Instances {running} running>"

    # ------------------------------------------------------------------ a target's life

    def new_instance_target(self, g: GroupRuntime, index: int, tid: str, port: int, role: Role,
                            now: float, host: str = "127.0.0.1") -> TargetRuntime:
        return instance_target(g, index, tid, port, role, now, base_dir=self.ctx.base_dir,
                               log_dir=self.ctx.state_dir / "logs", host=host)

    def new_static_target(self, g: GroupRuntime, index: int, tid: str, address: str, weight: int,
                          now: float) -> TargetRuntime:
        return static_target(g, index, tid, address, weight, now)

    def launch(self, t: TargetRuntime) -> None:
        """Start the target's instance (if supervised), its health checks and its agent checks."""
        if t.slot is not None:
            self.start(t)
        self.checks.restart(t)

    async def retire(self, t: TargetRuntime) -> None:
        """Stop checking ``t``, stop its instance and forget it (after it was drained)."""
        await self.checks.stop(t)
        if t.slot is not None:
            await self.stop(t)
        t.group.remove(t)
        t.backend.close_idle()
        self.reconciler.reindex(t.group)
        self.reconciler.reconcile(t.group)

    # ------------------------------------------------------------------ the process

    def start(self, t: TargetRuntime) -> None:
        slot = t.slot
        assert slot is not None
        slot.restart_handle = None
        ctx = self.ctx
        if ctx.stopping:
            return
        now = ctx.now()
        try:
            logs = t.group.spec.instances.logs if t.group.spec.instances else None
            proc = Process(slot.command(), env=slot.env, cwd=slot.cwd, stdout=slot.stdout, stderr=slot.stderr,
                           shell=slot.shell, on_exit=lambda code, t=t: self._on_exit(t, code),  # type: ignore[misc]
                           log_max_bytes=logs.max_bytes if logs else 10 << 20, log_keep=logs.keep if logs else 3)
        except ProviderError as exc:
            log.error("%s: %s", t.id, exc)
            with slot.stderr.open("a") as f:
                f.write(f"fivenines: {exc}\n")
            slot.lifecycle.started(-1, now)
            slot.process = None
            self._after_exit(t, 127)
            return
        slot.process = proc
        slot.lifecycle.started(proc.pid, now)
        t.backend.move_to(slot.host, slot.port)
        t.group.backends.notify("move", t.backend)
        ctx.event("instance", t, "", "running", f"started pid {proc.pid} on port {slot.port}")
        if slot.lifecycle.restarts:
            if t.admin_state is None and (t.drain_started is not None or t.backend.draining):
                t.drain_started = None  # restarted after a deregistration
                t.group.backends.set_draining(t.id, False)
            outliers = t.group.failover.outliers
            if outliers is not None:
                outliers.reinstate(t.index, now)
            self.reconciler.ejection_over(t, now, "fresh process")
            t.agent = None
            if t.admin_state is None:  # drained or in maintenance by an operator: it stays out
                self.reconciler.transition(t, t.judge.reset(now))
        slot.running.set()

    def _on_exit(self, t: TargetRuntime, code: int) -> None:
        slot = t.slot
        assert slot is not None
        slot.running.clear()
        if slot.lifecycle.state is InstanceState.STOPPING:
            slot.lifecycle.exited(code, self.ctx.now(), self.ctx.rng.random())
            return
        self._after_exit(t, code)

    def _after_exit(self, t: TargetRuntime, code: int) -> None:
        slot = t.slot
        assert slot is not None
        ctx = self.ctx
        now = ctx.now()
        decision = slot.lifecycle.exited(code, now, ctx.rng.random())
        t.backend.close_idle()
        t.group.backends.notify("close_idle", t.id)
        ctx.event("instance", t, "running", decision.state.value, decision.reason)
        tr = t.health.exited(now, f"exit {describe_exit(code)}")
        self.reconciler.transition(t, tr)
        if tr is None:
            self.reconciler.reconcile(t.group)
        if decision.restart_at is not None and not ctx.stopping:
            slot.restart_handle = ctx.loop.call_at(decision.restart_at, self.start, t)

    async def stop(self, t: TargetRuntime) -> None:
        slot = t.slot
        assert slot is not None
        if slot.restart_handle is not None:
            slot.restart_handle.cancel()
            slot.restart_handle = None
        slot.lifecycle.stopping()
        if slot.process is not None and slot.process.running:
            await slot.process.stop(slot.stop_timeout)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(t) for g in self.ctx.groups.values() for t in g.targets if t.slot))
