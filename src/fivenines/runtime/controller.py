"""The local runtime: one spec run on this machine, and its public face (:class:`Controller`).

The controller builds the parts, starts and stops them in order, and runs the loop of
time-driven decisions (:meth:`Controller.tick`). Each concern is a part of its own, sharing
one :class:`~fivenines.runtime.context.RuntimeContext` (spec, groups, clock, events):

==========================  ==========================================================
:mod:`.ports`               instance ports (a range, or held ``auto`` ports)
:mod:`.targets`             the state of groups and targets
:mod:`.instances`           supervised processes: start, exit → restart, stop
:mod:`.checks`              health checks (heartbeats) and agent checks
:mod:`.reconcile`           health → roles → serving set; passive ejections
:mod:`.draining`            deregistration delay
:mod:`.rollouts`            rolling restarts
:mod:`.dataplane`           the listeners, in process or in worker processes
:mod:`.reload`              a new spec applied as a diff
:mod:`.operator`            an operator's drain / maintenance / enable / weight
:mod:`.statefile`           health and operator state kept across restarts
:mod:`.status`              the read model (``GET /status``)
:mod:`.autoscale`           elastic scaling: a scaler per ``scaling:`` group, its actions
==========================  ==========================================================

The controller implements :class:`~fivenines.runtime.interface.Runtime`: its read models,
commands and event bus are all that front ends (the admin API, metrics) use. It never
imports them: the entry point (:func:`fivenines.app.run`) hands it the admin API as a
:class:`~fivenines.runtime.interface.FrontEnd` to start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fivenines.core import pool
from fivenines.core.health import CheckResult, HealthState
from fivenines.core.replication import ReplicationError
from fivenines.errors import ConfigError
from fivenines.proxy.base import ListenerView
from fivenines.proxy.listener import AccessLogSink, ProxySettings
from fivenines.runtime.autoscale import Autoscaler
from fivenines.runtime.backup import BackupManager
from fivenines.runtime.backup_ops import BackupOperations
from fivenines.runtime.checks import Checks
from fivenines.runtime.context import RuntimeContext
from fivenines.runtime.dataplane import DataPlane
from fivenines.runtime.draining import Draining
from fivenines.runtime.events import EventLog
from fivenines.runtime.instances import Instances
from fivenines.runtime.interface import CommandRefused, FrontEnd, Refusal, ReloadResult
from fivenines.runtime.node import ClusterNode
from fivenines.runtime.operator import Operator
from fivenines.runtime.ports import allocate_ports, release_ports
from fivenines.runtime.reconcile import Reconciler
from fivenines.runtime.reload import Reloader
from fivenines.runtime.replication import ReplicationManager
from fivenines.runtime.rollouts import Rollouts
from fivenines.runtime.statefile import StateFile
from fivenines.runtime.status import ready_info, service_status, target_status
from fivenines.runtime.targets import GroupRuntime, Replicated, TargetRuntime
from fivenines.spec import ListenerSpec, Spec

log = logging.getLogger("fivenines")


class Controller:
    """Runs one spec on this machine."""

    def __init__(self, spec: Spec, spec_path: str | Path | None = None, *, rng: random.Random | None = None,
                 settings: ProxySettings | None = None, access_log: AccessLogSink | None = None,
                 node: str | None = None) -> None:
        """``node``: run ``spec`` (as :func:`fivenines.core.membership.node_spec` gives it) as that
        node of its ``cluster:`` (:mod:`.node`)."""
        ctx = self.ctx = RuntimeContext(spec, Path(spec_path) if spec_path else None, rng or random.Random())
        self.data_plane = DataPlane(ctx, settings, access_log)
        self.reconciler = Reconciler(ctx, self.data_plane)
        self.checks = Checks(ctx, self.reconciler)
        self.instances = Instances(ctx, self.reconciler, self.checks)
        self.draining = Draining(ctx, self.reconciler, self.data_plane)
        self.rollouts = Rollouts(ctx, self.draining, self.instances)
        self.operator = Operator(ctx, self.reconciler, self.draining)
        self.reloader = Reloader(ctx, self.reconciler, self.data_plane, self.instances, self.checks, self.draining)
        self.statefile = StateFile(ctx, ctx.state_dir / "health-state.json")
        self.autoscaler = Autoscaler(ctx, self.reconciler, self.instances, self.draining, self.reloader.removing,
                                     self._scaling_busy)
        self.cluster = ClusterNode(ctx, node, self.reconciler, self.operator, self.data_plane) if node else None
        self._admin: FrontEnd | None = None  # the admin API, when the entry point gave one
        self.started_at = 0.0
        self.stopped = asyncio.Event()
        self.tick_interval = 0.05
        self._started = False
        self._tick_task: asyncio.Task[None] | None = None
        self._port_holds: list[socket.socket] = []  # instance ports kept bound until the servers are (see ports)
        self._backups: dict[str, BackupOperations] = {}  # replicated groups with backup: (docs/backup.md)

    def __repr__(self) -> str:
        state = "stopping" if self.ctx.stopping else "running" if self._started else "not started"
        return f"<Controller {self.spec.name} {state} groups={sorted(self.groups)}>"

    # ------------------------------------------------------------------ what it runs, and its clock

    @property
    def spec(self) -> Spec:
        return self.ctx.spec

    @property
    def spec_path(self) -> Path | None:
        return self.ctx.spec_path

    @property
    def base_dir(self) -> Path:
        return self.ctx.base_dir

    @property
    def state_dir(self) -> Path:
        return self.ctx.state_dir

    @property
    def events(self) -> EventLog:
        return self.ctx.events

    @property
    def groups(self) -> Mapping[str, GroupRuntime]:
        return self.ctx.groups

    @property
    def listeners(self) -> Sequence[tuple[ListenerSpec, ListenerView]]:
        return self.data_plane.listeners

    @property
    def stopping(self) -> bool:
        return self.ctx.stopping

    def now(self) -> float:
        return self.ctx.now()

    def wall(self, t: float) -> float:
        return self.ctx.wall(t)

    # ------------------------------------------------------------------ start / stop

    async def start(self, admin: FrontEnd | None = None) -> None:
        """Build the groups, start ``admin`` and the data plane, then the instances and their checks."""
        ctx = self.ctx
        loop = asyncio.get_running_loop()
        ctx.bind(loop)
        self.started_at = loop.time()
        (ctx.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        os.chmod(ctx.state_dir, 0o700)  # owner-only: logs, state and token live here
        os.chmod(ctx.state_dir / "logs", 0o700)
        self._build_groups()
        for g in ctx.groups.values():
            self.reconciler.wire(g)
        ctx.events.open_file(ctx.state_dir / "events.jsonl")
        self._started = True
        self.statefile.restore()
        self._admin = admin
        try:
            if admin is not None:
                await admin.start()
            await self.data_plane.start(self.reconciler.on_worker_ejection)
            for g in ctx.groups.values():
                if g.replication is not None:
                    await g.replication.start()
        except (OSError, TimeoutError) as exc:
            await self.data_plane.abandon()
            if admin is not None:
                await admin.close()
            raise ConfigError(f"cannot listen: {exc.strerror or exc}") from exc
        finally:
            release_ports(self._port_holds)  # the servers are bound: the instances may take their ports now
        for g in ctx.groups.values():
            for t in g.targets:
                self.instances.launch(t)
            self.reconciler.reconcile(g)
        self._tick_task = loop.create_task(self._tick_loop(), name="failover tick")
        self.statefile.start()
        self.autoscaler.start()
        if self.cluster is not None:  # serving and checking: now join the cluster and stand for the VIP
            try:
                await self.cluster.start(self.admin_url)
            except ConfigError:
                await self.stop()
                raise

    def _build_groups(self) -> None:
        ctx = self.ctx
        now = ctx.now()
        taken: set[int] = set()
        for name, tg in ctx.spec.target_groups.items():
            g = GroupRuntime(name, tg, clock=ctx.now)
            ctx.groups[name] = g
            placed = self.cluster is not None and self.cluster.build(  # on the cluster's nodes
                g, self.instances.new_instance_target, taken, self._port_holds, now)
            if placed:
                continue
            if tg.instances is not None:
                inst = tg.instances
                ports = allocate_ports(inst.ports, inst.total, taken, self._port_holds)
                taken.update(ports)
                ids = [f"{name}-{i + 1}" for i in range(inst.total)]
                roles = pool.initial_roles(ids, inst.count)
                for i, (tid, port) in enumerate(zip(ids, ports, strict=True)):
                    g.add(self.instances.new_instance_target(g, i, tid, port, roles[tid], now))
            else:
                for i, wt in enumerate(tg.target_list()):
                    g.add(self.instances.new_static_target(g, i, f"{name}-{i + 1}", wt.address, wt.weight, now))
            if tg.replicated is not None:
                g.replication = ReplicationManager(ctx, g, self.data_plane)
                if tg.replicated.backup is not None:
                    backups = BackupManager.for_replication(g.replication)
                    g.replication.backup = backups
                    self._backups[name] = BackupOperations(backups)

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish (bounded), stop instances, close admin."""
        ctx = self.ctx
        if ctx.stopping:
            await self.stopped.wait()
            return
        ctx.stopping = True
        if self.cluster is not None:  # the VIP goes to another node first, then this node drains
            await self.cluster.stop()
        if self._started:
            self.statefile.stop()
        await self.autoscaler.stop()
        await self.reloader.stop()
        cut = await self.data_plane.drain(drain_timeout)
        if cut:
            log.warning("shutdown: %d client connections cut after %.0fs", cut, drain_timeout)
        tasks = [task for g in ctx.groups.values() for t in g.targets for task in (t.probe_task, t.agent_task) if task]
        if self._tick_task is not None:
            tasks.append(self._tick_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(ops.close() for ops in self._backups.values()))
        await asyncio.gather(*(g.replication.close() for g in ctx.groups.values() if g.replication))
        await self.instances.stop_all()
        for g in ctx.groups.values():
            for t in g.targets:
                t.backend.close_idle()
        if self._admin is not None:
            await self._admin.close()
        ctx.events.close()
        self.stopped.set()

    # ------------------------------------------------------------------ the loop of time-driven decisions

    async def _tick_loop(self) -> None:
        """Time-driven decisions: phi suspicion, ejection ends and latency outliers, hysteresis, rollouts."""
        while not self.ctx.stopping:
            await asyncio.sleep(self.tick_interval)
            try:
                self.tick()
            except Exception:  # a bug here must not stop failover for good
                log.exception("failover tick failed")

    def tick(self) -> list[str]:
        """One pass of the time-driven decisions. Returns the role decisions taken (readable:
        ``"promoted standby web-3: replaces web-1 unhealthy (Target.Timeout)"``)."""
        now = self.now()
        decisions: list[str] = []
        for g in self.ctx.groups.values():
            decisions += self.reconciler.tick(g, now)
            self.rollouts.step(g, now)
        if self.cluster is not None:
            self.cluster.tick(now)
        return decisions

    # ------------------------------------------------------------------ read models

    @property
    def admin(self) -> FrontEnd:
        """The front end :meth:`start` was given (the admin API). Raises LookupError without one."""
        if self._admin is None:
            raise LookupError("started without an admin API")
        return self._admin

    @property
    def admin_url(self) -> str | None:
        return self._admin.url if self._admin is not None else None

    def status(self) -> dict[str, Any]:
        out = service_status(self.ctx, self.data_plane, started_at=self.started_at, admin_url=self.admin_url,
                             config=self.reloader.status(), scaling=self.autoscaler.status())
        if self.cluster is not None:
            out["cluster"] = self.cluster.status()
        return out


    def scaling(self) -> Mapping[str, dict[str, Any]]:
        return self.autoscaler.status()

    def target(self, target_id: str) -> TargetRuntime | None:
        return self.ctx.target(target_id)

    def target_ids(self) -> list[str]:
        return self.ctx.target_ids()

    def target_status(self, target_id: str) -> dict[str, Any]:
        return target_status(self.ctx, self.operator.target(target_id), self.now())

    def ready_info(self) -> dict[str, Any]:
        return ready_info(self.ctx, self.data_plane, self.admin_url)

    def all_healthy(self) -> bool:
        return all(t.health.state is HealthState.HEALTHY for g in self.ctx.groups.values() for t in g.targets)

    @property
    def generation(self) -> int:
        return self.reloader.generation

    @property
    def reload_counts(self) -> Mapping[str, int]:
        return dict(self.reloader.counts)

    # ------------------------------------------------------------------ events out

    def on_check(self, fn: Callable[[str, str, CheckResult], None]) -> Callable[[], None]:
        return self.checks.subscribe(fn)

    @property
    def on_decision(self) -> Callable[[str], None] | None:
        """Called with each role decision as it is taken (tick or event driven)."""
        return self.reconciler.on_decision

    @on_decision.setter
    def on_decision(self, fn: Callable[[str], None] | None) -> None:
        self.reconciler.on_decision = fn

    # ------------------------------------------------------------------ commands in

    def act(self, target_id: str, action: str, source: str = "admin API") -> dict[str, Any]:
        t = self.operator.act(target_id, action, source)
        if self.cluster is not None:
            self.cluster.operator_changed(t, source)  # every node applies it (etcd)
        return target_status(self.ctx, t, self.now())

    def set_weight(self, target_id: str, weight: int, source: str = "admin API") -> dict[str, Any]:
        t = self.operator.set_weight(target_id, weight, source)
        if self.cluster is not None:
            self.cluster.operator_changed(t, source)
        return target_status(self.ctx, t, self.now())

    def deregister(self, target_id: str) -> str:
        """Start draining a target (no operator state kept: see :meth:`act` for that)."""
        return self.draining.deregister(target_id)

    def register(self, target_id: str) -> str:
        return self.draining.register(target_id)

    async def reload(self, source: str = "admin API") -> ReloadResult:
        if self.cluster is not None:
            why = ("a cluster node does not reload its spec yet (the placement and the other nodes would have "
                   "to follow): restart the nodes one at a time")
            self.ctx.emit("reload", "", "", f"generation {self.generation}", "rejected", f"{source}: {why}")
            return ReloadResult(False, source, self.generation, time.time(), errors=[why])
        return await self.reloader.reload(source)

    def request_reload(self, source: str) -> None:
        """Enqueue a reload (safe from a signal handler: only schedules)."""
        self.reloader.request(source)

    def restart_group(self, name: str) -> dict[str, Any]:
        return self.rollouts.restart_group(name)

    def scale(self, group: str, count: int | None, source: str = "admin API") -> dict[str, Any]:
        return self.autoscaler.set_manual(group, count, source)

    def _scaling_busy(self, g: GroupRuntime) -> str:
        """Why a group's scaling decisions must wait now ("": they need not)."""
        if self.ctx.stopping:
            return "fivenines is stopping"
        if self.reloader.lock.locked():
            return "a reload is in progress"
        ro = g.failover.rollout
        if ro is not None and ro.running:
            return f"a rolling restart of {g.name} is running"
        return ""

    def _replicated(self, group: str) -> Replicated:
        g = self.ctx.groups.get(group)
        if g is None:
            raise CommandRefused(Refusal.UNKNOWN, f"no target group {group!r}")
        if g.replication is None:
            raise CommandRefused(Refusal.CONFLICT, f"target group {group!r} is not replicated")
        return g.replication

    async def switchover(self, group: str, to: str | None = None) -> dict[str, Any]:
        rep = self._replicated(group)
        try:
            return await rep.switchover(to)
        except ReplicationError as exc:
            raise CommandRefused(Refusal.CONFLICT, str(exc)) from exc

    def cut_off(self, group: str, target_id: str, seconds: float) -> dict[str, Any]:
        rep = self._replicated(group)
        try:
            rep.cut_off(target_id, seconds)
        except ReplicationError as exc:
            raise CommandRefused(Refusal.CONFLICT, str(exc)) from exc
        return {"group": group, "target": target_id, "cut_off_s": seconds}

    # ------------------------------------------------------------------ backups (docs/backup.md)

    def _backup_ops(self, group: str) -> BackupOperations:
        self._replicated(group)  # no such group, not replicated: refused as for a switchover
        ops = self._backups.get(group)
        if ops is None:
            raise CommandRefused(Refusal.CONFLICT, f"target group {group!r} has no backup: section "
                                 "(replicated.backup; docs/backup.md)")
        return ops

    def backup_status(self) -> Mapping[str, Mapping[str, Any]]:
        return {name: ops.backups.status() for name, ops in self._backups.items()}

    def backup_command(self, group: str, action: str, params: Mapping[str, str],
                       source: str = "admin API") -> dict[str, Any]:
        return self._backup_ops(group).start(action, params, source)

    def backup_operation(self, group: str, op_id: str) -> dict[str, Any]:
        return self._backup_ops(group).get(op_id)

    async def backups(self, group: str) -> dict[str, Any]:
        return await self._backup_ops(group).catalogue()
