"""Active checks of every target: its health check (the heartbeat) and its agent check.

A probe runs the group's ``health_check`` every ``interval`` (for a ``replicated:`` group,
the store's own report of role and position) and feeds the result to the target's
:class:`~fivenines.core.detect.HealthJudge`; a transition goes to the
:class:`~fivenines.runtime.reconcile.Reconciler`. Results inside an instance's startup
grace do not count as failures. An agent check (``health_check.agent``, HAProxy's
agent-check) reads the target's own opinion: a weight in percent, drain, down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fivenines.core.detect import AgentReport
from fivenines.core.health import CheckResult, Reason
from fivenines.runtime.context import RuntimeContext
from fivenines.runtime.probe import Check, agent_check, make_check, probe_loop
from fivenines.runtime.reconcile import Reconciler
from fivenines.runtime.targets import TargetRuntime

log = logging.getLogger("fivenines")

CheckObserver = Callable[[str, str, CheckResult], None]
"""Called with (group, target, result) after every health check (metrics keep their durations)."""


class Checks:
    def __init__(self, ctx: RuntimeContext, reconciler: Reconciler) -> None:
        self.ctx = ctx
        self.reconciler = reconciler
        self._observers: list[CheckObserver] = []

    def __repr__(self) -> str:
        return f"<Checks observers={len(self._observers)}>"

    def subscribe(self, fn: CheckObserver) -> Callable[[], None]:
        """Call ``fn`` after every health check result; returns the call that stops it."""
        self._observers.append(fn)
        return lambda: self._observers.remove(fn) if fn in self._observers else None

    def restart(self, t: TargetRuntime) -> None:
        """(Re)start the probe (and agent) loops of ``t``, e.g. after its health check changed."""
        loop = self.ctx.loop
        for task in (t.probe_task, t.agent_task):
            if task is not None:
                task.cancel()
        t.probe_task = loop.create_task(self._probe_loop(t), name=f"probe {t.id}")
        t.agent_task = None
        if t.group.spec.health_check.agent is not None:
            t.agent_task = loop.create_task(self._agent_loop(t), name=f"agent {t.id}")

    async def stop(self, t: TargetRuntime) -> None:
        """Stop checking ``t``."""
        tasks = [x for x in (t.probe_task, t.agent_task) if x is not None]
        for x in tasks:
            x.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        t.probe_task = t.agent_task = None

    # ------------------------------------------------------------------ the heartbeat

    async def _probe_loop(self, t: TargetRuntime) -> None:
        hc = t.group.spec.health_check
        slot = t.slot
        replication = t.group.replication
        check: Check
        if replication is not None:
            async def check_role() -> CheckResult:  # replicated: role and position are the check
                assert replication is not None
                return await replication.check(t)

            check = check_role
        else:
            check = make_check(hc, lambda: (t.backend.host, t.backend.port), t.id,
                               env=slot.env if slot else None, cwd=slot.cwd if slot else None)
        await probe_loop(check, hc.interval, lambda r: self.on_check(t, r), rng=self.ctx.rng,
                         ready=slot.running if slot else t.reachable)

    def on_check(self, t: TargetRuntime, result: CheckResult) -> None:
        if self.ctx.stopping:
            return
        now = self.ctx.now()
        grace = False
        if t.slot is not None:
            t.slot.lifecycle.mark_stable(now)
            grace = t.slot.lifecycle.in_startup_grace(now, t.group.spec.health_check.startup_grace)
        for fn in self._observers:
            try:
                fn(t.group.name, t.id, result)
            except Exception:  # an observer's bug must not stop the heartbeat
                log.exception("check observer %r failed", fn)
        self.reconciler.transition(t, t.judge.check(result, now, in_grace=grace))

    # ------------------------------------------------------------------ the agent

    async def _agent_loop(self, t: TargetRuntime) -> None:
        hc = t.group.spec.health_check
        ag = hc.agent
        assert ag is not None
        rng = self.ctx.rng
        await asyncio.sleep(rng.uniform(0.05, 0.25) * ag.interval)
        while not self.ctx.stopping:
            ready = t.slot.running if t.slot is not None else t.reachable
            if ready is not None and not ready.is_set():
                await ready.wait()
                continue
            port = ag.port or hc.port or t.backend.port
            try:
                report = await agent_check(t.backend.host, port, min(hc.timeout, ag.interval), ag.send, ag.path)
            except (OSError, TimeoutError, ValueError) as exc:
                self.on_agent(t, None, str(exc) or type(exc).__name__)
            else:
                self.on_agent(t, report, "")
            await asyncio.sleep(ag.interval * rng.uniform(0.9, 1.1))

    def on_agent(self, t: TargetRuntime, report: AgentReport | None, error: str) -> None:
        """An agent reply (or the failure to get one: no opinion, as HAProxy treats it)."""
        now = self.ctx.now()
        before = t.excluded
        t.agent, t.agent_error = report, error
        # With an agent, weights are in percent of the spec's weight (an agent's 0% drains instead).
        pct = report.weight_percent if report is not None and report.weight_percent else 100
        if t.base_weight * pct != t.backend.weight:
            t.backend.weight = t.base_weight * pct
            t.group.refresh_balancer()  # the balancer takes the new weight
        if report is not None and report.down:
            detail = "agent: down" + (f" ({report.description})" if report.description else "")
            self.reconciler.transition(t, t.judge.check(CheckResult.failed(Reason.FAILED_HEALTH_CHECKS, detail), now))
        if t.excluded != before:
            if not t.excluded:
                t.available_since = now
            self.ctx.event("agent", t, before or "serving", t.excluded or "serving",
                           (report.description if report else error) or "agent reply")
            self.reconciler.reconcile(t.group)
