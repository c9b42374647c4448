"""The local runtime's control loop: feeds events to the pure core and carries out its decisions.

Data flow of one heartbeat: a probe runs a check → the result goes to the target's
:class:`~fivenines.core.health.TargetHealth` → on a state change the group's roles
are re-planned by :func:`~fivenines.core.pool.plan_roles` → the serving set is
published to the data plane → events are logged.

Data flow of one exit: the pidfd fires → health goes ``unhealthy`` at once → roles
are re-planned (a standby is promoted) → :class:`~fivenines.core.lifecycle.InstanceLifecycle`
says when to restart → the restart is scheduled. A restarted instance starts as a
standby in ``initial`` state and serves only after passing its health checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fivenines import accel
from fivenines.core import pool
from fivenines.core.detect import AgentReport, Ejection, OutcomeSink, PhiAccrualDetector
from fivenines.core.drain import DrainState, drain_step
from fivenines.core.health import CheckResult, HealthState, Reason, Transition
from fivenines.core.lifecycle import InstanceLifecycle, InstanceState, RestartPolicy, describe_exit
from fivenines.core.pool import Member, Role
from fivenines.core.restore import AdminState, fingerprint
from fivenines.core.rollout import ActionKind, RollingRestart, View, restart_order
from fivenines.errors import ConfigError, ProviderError
from fivenines.proxy.backend import Backend, BackendGroup
from fivenines.proxy.listener import ProxySettings
from fivenines.proxy.workers import WorkerPool, make_listener
from fivenines.runtime.events import Event, EventLog, iso
from fivenines.runtime.failover import GroupFailover, make_judge
from fivenines.runtime.probe import Check, agent_check, make_check, probe_loop
from fivenines.runtime.supervisor import Process, resolve_argv, tail_lines
from fivenines.spec import (
    ListenerSpec,
    Spec,
    TargetGroupSpec,
    parse_port_range,
    port_is_free,
    split_hostport,
)

if TYPE_CHECKING:
    from fivenines.runtime.replication import ReplicationManager

log = logging.getLogger("fivenines")


class InstanceSlot:
    """A supervised process slot: its lifecycle, its current process and its logs."""

    def __init__(self, target_id: str, port: int, argv: list[str] | str, env: dict[str, str], cwd: str | None,
                 shell: bool, stop_timeout: float, policy: RestartPolicy, log_dir: Path) -> None:
        self.target_id = target_id
        self.port = port
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.shell = shell
        self.stop_timeout = stop_timeout
        self.lifecycle = InstanceLifecycle(policy)
        self.process: Process | None = None
        self.stdout = log_dir / f"{target_id}.out.log"
        self.stderr = log_dir / f"{target_id}.err.log"
        self.restart_handle: asyncio.TimerHandle | None = None
        self.running = asyncio.Event()
        self.extra_args: Callable[[], list[str]] | None = None  # appended at each start (replicated groups)

    def command(self) -> list[str]:
        def sub(s: str) -> str:
            return s.replace("{port}", str(self.port)).replace("{id}", self.target_id)

        if isinstance(self.argv, str):
            return [sub(self.argv)]
        extra = self.extra_args() if self.extra_args is not None else []
        return resolve_argv([sub(a) for a in self.argv] + extra)


class TargetRuntime:
    def __init__(self, group: GroupRuntime, index: int, target_id: str, host: str, port: int,
                 role: Role, slot: InstanceSlot | None, now: float, weight: int = 1) -> None:
        self.group = group
        self.index = index
        self.id = target_id
        hc = group.spec.health_check
        self.judge = make_judge(hc, now)
        self.health = self.judge.health
        self.role = role
        self.role_since = now
        self.slot = slot
        self.backend = Backend(target_id, host, port, weight=weight)
        self.probe_task: asyncio.Task[None] | None = None
        self.agent_task: asyncio.Task[None] | None = None
        self.ejection = ""  # why passive detection ejected it (empty: not ejected)
        self.available_since = now  # when it last stopped being excluded
        self.agent: AgentReport | None = None
        self.agent_error = ""
        self.base_weight = weight  # the spec's weight; an agent's N% scales it
        if hc.agent is not None:
            self.backend.weight = weight * 100  # in percent, so that an agent's 75% is exact
        self.drain_started: float | None = None
        self.admin_state: AdminState | None = None  # what an operator asked (drain, maintenance)
        self.spec_weight = weight  # the spec's; base_weight differs when an operator set it
        self.fingerprint = fingerprint(group.name, group.spec, None if slot else self.backend.address)

    @property
    def excluded(self) -> str:
        """Why it serves nothing though maybe healthy: ejected, or drained by its agent."""
        if self.ejection:
            return f"ejected ({self.ejection})"
        if self.agent is not None and self.agent.drain:
            return "drained by its agent" + (f" ({self.agent.description})" if self.agent.description else "")
        return ""

    def member(self, now: float | None = None) -> Member:
        h = self.health
        ready_at = 0.0
        if now is not None:
            ready_at = max(h.since, self.available_since) + self.group.failover.flaps.hold(self.id, now)
        running = self.slot is None or (self.slot.process is not None and self.slot.process.running)
        return Member(self.id, self.role, h.state, h.since, self.index, h.reason, self.excluded, ready_at, running)

    def __repr__(self) -> str:
        return f"<Target {self.id} {self.backend.address} {self.health.state.value} {self.role.value}>"

    def effective_weight(self) -> int:
        """The balancer's weight: ``base_weight``, scaled by an agent's percentage when one is set up."""
        if self.group.spec.health_check.agent is None:
            return self.base_weight
        r = self.agent
        return self.base_weight * (r.weight_percent if r is not None and r.weight_percent else 100)


class GroupRuntime:
    def __init__(self, name: str, spec: TargetGroupSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.spec = spec
        self.backends = BackendGroup.from_spec(name, spec, clock=clock)
        self.targets: list[TargetRuntime] = []
        self.active_count = spec.instances.count if spec.instances else len(spec.targets or [])
        self.matcher = spec.health_check.matcher_ranges
        size = spec.instances.total if spec.instances else len(spec.targets or [])
        self.failover = GroupFailover(spec, size, self.active_count)
        self.guard_outliers()
        self.replication: ReplicationManager | None = None  # replicated: groups

    def guard_outliers(self) -> None:
        if self.failover.outliers is not None:
            # passive ejection never takes out the last member able to serve
            self.failover.outliers.may_eject = lambda i: pool.can_spare(
                [t.member() for t in self.targets], self.targets[i].id)

    def by_id(self, target_id: str) -> TargetRuntime | None:
        return next((t for t in self.targets if t.id == target_id), None)

    def add(self, t: TargetRuntime) -> None:
        self.targets.append(t)
        self.backends.add(t.backend)

    def remove(self, t: TargetRuntime) -> None:
        if t in self.targets:
            self.targets.remove(t)
        self.backends.remove(t.id)


def restart_policy(tg: TargetGroupSpec) -> RestartPolicy:
    assert tg.instances is not None
    r = tg.instances.restart
    return RestartPolicy(r.initial_delay, r.max_delay, r.multiplier, r.jitter, r.stable_after, r.crash_loop_after)


def spec_base_dir(spec_path: Path | None) -> Path:
    """The folder relative paths in a spec are relative to: the spec file's."""
    return (spec_path.parent if spec_path else Path.cwd()).resolve()


def resolve_state_dir(spec: Spec, spec_path: str | Path | None) -> Path:
    """Where a spec's state goes: ``state_dir``, else ``.fivenines/NAME`` beside the spec file."""
    return state_dir_for(spec.name, spec.state_dir, spec_path)


def state_dir_for(name: str, state_dir: str | None, spec_path: str | Path | None) -> Path:
    return spec_base_dir(Path(spec_path) if spec_path else None) / (state_dir or f".fivenines/{name}")


def allocate_ports(spec_ports: str, n: int, taken: set[int], hold: list[socket.socket] | None = None) -> list[int]:
    """Pick ``n`` free loopback ports from a range (or from the kernel for ``auto``).

    With ``hold``, an ``auto`` port stays bound by a socket appended there until the
    caller closes it (just before the instance starts): until then the kernel cannot
    hand the same port to another port-0 bind of this process (the admin server, a
    listener), which would leave the instance unable to bind its own port.
    """
    rng = parse_port_range(spec_ports)
    out: list[int] = []
    if rng is None:
        while len(out) < n:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", 0))
                p = s.getsockname()[1]
            except OSError:
                s.close()
                raise
            if p not in taken and p not in out:
                out.append(p)
                if hold is not None:
                    hold.append(s)
                    continue
            s.close()
        return out
    for p in range(rng[0], rng[1] + 1):
        if len(out) == n:
            break
        if p not in taken and port_is_free("127.0.0.1", p):
            out.append(p)
    if len(out) < n:
        raise ConfigError(f"not enough free ports in {spec_ports}: need {n}")
    return out


def release_ports(hold: list[socket.socket]) -> None:
    """Let go of ports :func:`allocate_ports` held: their instances may bind them now."""
    for s in hold:
        s.close()
    hold.clear()


class Controller:
    """Runs one spec on this machine."""

    def __init__(self, spec: Spec, spec_path: str | Path | None = None, *, rng: random.Random | None = None,
                 settings: ProxySettings | None = None) -> None:
        self.spec = spec
        self.spec_path = Path(spec_path) if spec_path else None
        # relative paths in the spec are relative to the spec file's folder
        self.base_dir = spec_base_dir(self.spec_path)
        self.state_dir = resolve_state_dir(spec, self.spec_path)
        self.rng = rng or random.Random()
        self.settings = settings or ProxySettings()
        self.events = EventLog()
        self.groups: dict[str, GroupRuntime] = {}
        self.listeners: list[tuple[Any, Any]] = []  # (ListenerSpec, Listener | TcpListener | RemoteListener)
        self._port_holds: list[socket.socket] = []  # instance ports kept bound until the servers are (see allocate_ports)
        self.workers: WorkerPool | None = None
        self.admin: Any = None
        self.started_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wall_offset = 0.0
        self._stopping = False
        self._settings_given = settings is not None
        self.stopped = asyncio.Event()
        self.on_decision: Callable[[str], None] | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self.tick_interval = 0.05
        # operations (admin API, metrics, reload, state file): set up in start()
        self.metrics: Any = None
        self.reloader: Any = None
        self.statefile: Any = None
        self.access_log: Any = None
        self.operator: Any = None
        self.admin_token = ""  # set by the admin server when it starts (admin.auth)

    # ------------------------------------------------------------------ clock

    @property
    def stopping(self) -> bool:
        return self._stopping

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def wall(self, t: float) -> float:
        return t + self._wall_offset

    # ------------------------------------------------------------------ start / stop

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._wall_offset = time.time() - loop.time()
        self.started_at = loop.time()
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)  # owner-only: logs, state and token live here
        os.chmod(self.state_dir / "logs", 0o700)
        self._build_groups()
        for g in self.groups.values():
            self.wire_group(g)
        from fivenines.admin.metrics import Metrics
        from fivenines.admin.server import AdminServer
        from fivenines.runtime.operator import Operator
        from fivenines.runtime.reload import Reloader
        from fivenines.runtime.statefile import StateFile

        self.events.open_file(self.state_dir / "events.jsonl")
        self.metrics = Metrics(self)
        self.reloader = Reloader(self)
        self.operator = Operator(self)
        self.statefile = StateFile(self, self.state_dir / "health-state.json")
        self.statefile.restore()
        host, port = split_hostport(self.spec.admin.listen)
        self.admin = AdminServer(self)
        try:
            await self.admin.start(host, port)
            await self._start_data_plane()
            for g in self.groups.values():
                if g.replication is not None:
                    await g.replication.start()
        except (OSError, TimeoutError) as exc:
            await self._close_servers()
            raise ConfigError(f"cannot listen: {exc.strerror or exc}") from exc
        finally:
            release_ports(self._port_holds)  # the servers are bound: the instances may take their ports now
        for g in self.groups.values():
            for t in g.targets:
                self.launch_target(t)
            self._reconcile(g)
        self._tick_task = loop.create_task(self._tick_loop(), name="failover tick")
        self.statefile.start()

    def reindex_group(self, g: GroupRuntime, fresh: Collection[str] = ()) -> None:
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

    def wire_group(self, g: GroupRuntime) -> None:
        """Connect the group's data plane to its passive detector (when it has one)."""
        out = g.failover.outliers
        if out is not None:
            # compiled with the data plane: no Python frame per response (a reload that replaces the
            # detector wires the group again)
            g.backends.observe = OutcomeSink(out, functools.partial(self._apply_ejection, g)).record
        else:
            g.backends.observe = None

    def make_listener(self, ls: ListenerSpec) -> Any:
        """A listener (not yet bound) for ``ls``: its rules compiled over the groups running now."""
        groups = {name: g.backends for name, g in self.groups.items()}
        listener = make_listener(ls, groups, self.settings if self._settings_given else None)
        if self.access_log is not None and hasattr(listener, "access_log"):
            listener.access_log = self.access_log
        return listener

    def reroute(self, listener: Any, ls: ListenerSpec) -> None:
        """New requests on ``listener`` follow ``ls`` (default group, rules, timeouts, limits) from
        now on; requests in flight finish where they are."""
        fresh = self.make_listener(ls)
        old_settings = listener.settings
        listener.group_for = fresh.group_for
        listener.settings = fresh.settings
        for attr in ("router", "groups"):
            if hasattr(fresh, attr):
                setattr(listener, attr, getattr(fresh, attr))
        admission = getattr(listener, "admission", None)
        if admission is not None:  # new limits; the connections open now stay counted
            admission.max_total = fresh.admission.max_total
            admission.max_per_ip = fresh.admission.max_per_ip
        if hasattr(listener, "rate") and getattr(old_settings, "rate_limit", None) != fresh.settings.rate_limit:
            listener.rate = fresh.rate

    def launch_target(self, t: TargetRuntime) -> None:
        """Start the target's instance (if supervised), its health checks and its agent checks."""
        if t.slot is not None:
            self._start_instance(t)
        self.restart_probe(t)

    def restart_probe(self, t: TargetRuntime) -> None:
        """(Re)start the probe (and agent) loops of ``t``, e.g. after its health check changed."""
        assert self._loop is not None
        for task in (t.probe_task, t.agent_task):
            if task is not None:
                task.cancel()
        t.probe_task = self._loop.create_task(self._probe_loop(t), name=f"probe {t.id}")
        t.agent_task = None
        if t.group.spec.health_check.agent is not None:
            t.agent_task = self._loop.create_task(self._agent_loop(t), name=f"agent {t.id}")

    async def _start_data_plane(self) -> None:
        """Listeners in this process (``workers: 1``), or N worker processes sharing the ports."""
        groups = {name: g.backends for name, g in self.groups.items()}
        settings = self.settings if self._settings_given else None
        if self.spec.workers > 1:
            self.workers = WorkerPool(self.spec, groups, self.spec.workers, self.state_dir / "logs", settings)
            self.workers.on_eject = self.on_worker_ejection
            await self.workers.start()
            self.listeners.extend(self.workers.listeners)
            return
        for ls in self.spec.listeners:
            listener = self.make_listener(ls)
            await listener.start(ls.host, ls.port)
            self.listeners.append((ls, listener))

    def _build_groups(self) -> None:
        now = self.now()
        taken: set[int] = set()
        for name, tg in self.spec.target_groups.items():
            g = GroupRuntime(name, tg, clock=self.now)
            self.groups[name] = g
            if tg.instances is not None:
                inst = tg.instances
                ports = allocate_ports(inst.ports, inst.total, taken, self._port_holds)
                taken.update(ports)
                ids = [f"{name}-{i + 1}" for i in range(inst.total)]
                roles = pool.initial_roles(ids, inst.count)
                for i, (tid, port) in enumerate(zip(ids, ports, strict=True)):
                    g.add(self.new_instance_target(g, i, tid, port, roles[tid], now))
            else:
                for i, wt in enumerate(tg.target_list()):
                    g.add(self.new_static_target(g, i, f"{name}-{i + 1}", wt.address, wt.weight, now))
            if tg.replicated is not None:
                from fivenines.runtime.replication import ReplicationManager

                g.replication = ReplicationManager(self, g)

    def new_instance_target(self, g: GroupRuntime, index: int, tid: str, port: int, role: Role,
                            now: float) -> TargetRuntime:
        inst = g.spec.instances
        assert inst is not None
        env = dict(os.environ)
        env.update({k: v.replace("{port}", str(port)).replace("{id}", tid) for k, v in inst.env.items()})
        env["FIVENINES_TARGET_ID"] = tid
        env["FIVENINES_PORT"] = str(port)
        cwd = inst.cwd or str(self.base_dir)
        slot = InstanceSlot(tid, port, inst.command, env, cwd, inst.shell, inst.stop_timeout, restart_policy(g.spec),
                            self.state_dir / "logs")
        return TargetRuntime(g, index, tid, "127.0.0.1", port, role, slot, now)

    def new_static_target(self, g: GroupRuntime, index: int, tid: str, address: str, weight: int,
                          now: float) -> TargetRuntime:
        host, port = split_hostport(address)
        return TargetRuntime(g, index, tid, host, port, Role.ACTIVE, None, now, weight)

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish (bounded), stop instances, close admin."""
        if self._stopping:
            await self.stopped.wait()
            return
        self._stopping = True
        if self.statefile is not None:
            self.statefile.stop()
        if self.reloader is not None:
            await self.reloader.stop()
        if self.operator is not None:
            self.operator.stop()
        cut = 0
        if self.workers is not None:
            cut = await self.workers.stop(drain_timeout)
        elif self.listeners:
            results = await asyncio.gather(*(lst.drain(drain_timeout) for _, lst in self.listeners))
            cut = sum(results)
        if cut:
            log.warning("shutdown: %d client connections cut after %.0fs", cut, drain_timeout)
        tasks = [task for g in self.groups.values() for t in g.targets for task in (t.probe_task, t.agent_task) if task]
        if self._tick_task is not None:
            tasks.append(self._tick_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(g.replication.close() for g in self.groups.values() if g.replication))
        await asyncio.gather(*(self._stop_instance(t) for g in self.groups.values() for t in g.targets if t.slot))
        for g in self.groups.values():
            for t in g.targets:
                t.backend.close_idle()
        await self._close_servers()
        self.events.close()
        self.stopped.set()

    async def _close_servers(self) -> None:
        if self.workers is not None:
            if not self._stopping:
                await self.workers.stop(0.0)
        else:
            for _, lst in self.listeners:
                lst.stop_accepting()
        if self.admin is not None:
            await self.admin.close()

    # ------------------------------------------------------------------ instances

    def _start_instance(self, t: TargetRuntime) -> None:
        slot = t.slot
        assert slot is not None
        slot.restart_handle = None
        if self._stopping:
            return
        now = self.now()
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
        t.backend.move_to("127.0.0.1", slot.port)
        t.group.backends.notify("move", t.backend)
        self._event("instance", t, "", "running", f"started pid {proc.pid} on port {slot.port}")
        if slot.lifecycle.restarts:
            if t.admin_state is None and (t.drain_started is not None or t.backend.draining):
                t.drain_started = None  # restarted after a deregistration
                t.group.backends.set_draining(t.id, False)
            outliers = t.group.failover.outliers
            if outliers is not None:
                outliers.reinstate(t.index, now)
            self._ejection_over(t, now, "fresh process")
            t.agent = None
            if t.admin_state is None:  # drained or in maintenance by an operator: it stays out
                self._transition(t, t.judge.reset(now))
        slot.running.set()

    def _on_exit(self, t: TargetRuntime, code: int) -> None:
        slot = t.slot
        assert slot is not None
        slot.running.clear()
        if slot.lifecycle.state is InstanceState.STOPPING:
            slot.lifecycle.exited(code, self.now(), self.rng.random())
            return
        self._after_exit(t, code)

    def _after_exit(self, t: TargetRuntime, code: int) -> None:
        slot = t.slot
        assert slot is not None
        now = self.now()
        decision = slot.lifecycle.exited(code, now, self.rng.random())
        t.backend.close_idle()
        t.group.backends.notify("close_idle", t.id)
        self._event("instance", t, "running", decision.state.value, decision.reason)
        tr = t.health.exited(now, f"exit {describe_exit(code)}")
        self._transition(t, tr)
        if tr is None:
            self._reconcile(t.group)
        if decision.restart_at is not None and not self._stopping:
            assert self._loop is not None
            slot.restart_handle = self._loop.call_at(decision.restart_at, self._start_instance, t)

    async def _stop_instance(self, t: TargetRuntime) -> None:
        slot = t.slot
        assert slot is not None
        if slot.restart_handle is not None:
            slot.restart_handle.cancel()
            slot.restart_handle = None
        slot.lifecycle.stopping()
        if slot.process is not None and slot.process.running:
            await slot.process.stop(slot.stop_timeout)

    # ------------------------------------------------------------------ health

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
        await probe_loop(check, hc.interval, lambda r: self.on_check(t, r), rng=self.rng,
                         ready=slot.running if slot else None)

    def on_check(self, t: TargetRuntime, result: CheckResult) -> None:
        if self._stopping:
            return
        now = self.now()
        grace = False
        if t.slot is not None:
            t.slot.lifecycle.mark_stable(now)
            grace = t.slot.lifecycle.in_startup_grace(now, t.group.spec.health_check.startup_grace)
        if self.metrics is not None:
            self.metrics.observe_check(t, result)
        self._transition(t, t.judge.check(result, now, in_grace=grace))

    def _transition(self, t: TargetRuntime, tr: Transition | None) -> None:
        if tr is None:
            return
        reason = tr.reason.value if tr.reason else "passed health checks"
        if tr.detail:
            reason = f"{reason}: {tr.detail}"
        self._event("health", t, tr.old.value, tr.new.value, reason)
        if tr.old is HealthState.HEALTHY and tr.new is HealthState.UNHEALTHY and not t.ejection:
            t.group.failover.flaps.lost(t.id, tr.at)  # one loss per incident: not again after an ejection
        self._reconcile(t.group)

    # ------------------------------------------------------------------ deregistration (draining)

    def deregister(self, target_id: str) -> str:
        """Start draining a target: no new requests; in-flight ones get ``deregistration_delay``."""
        t = self.target(target_id)
        if t is None:
            raise ConfigError(f"no target {target_id!r}")
        now = self.now()
        tr = t.health.drain(now)
        if tr is None:
            return f"{t.id} is already draining"
        t.drain_started = now
        t.group.backends.set_draining(t.id, True)
        self._transition(t, tr)
        self._drain_tick(t)
        return f"draining {t.id}: deregistration delay {t.group.spec.deregistration_delay:g}s"

    def register(self, target_id: str) -> str:
        """(Re-)register a target: it serves again after passing its health checks."""
        t = self.target(target_id)
        if t is None:
            raise ConfigError(f"no target {target_id!r}")
        t.drain_started = None
        t.group.backends.set_draining(t.id, False)
        self._transition(t, t.health.register(self.now()))
        return f"registered {t.id}"

    def _drain_tick(self, t: TargetRuntime) -> None:
        if t.drain_started is None or t.health.state is not HealthState.DRAINING or self._stopping:
            return
        now = self.now()
        step = drain_step(t.drain_started, t.group.spec.deregistration_delay, t.backend.in_flight, now)
        if step.state is DrainState.WAITING:
            assert self._loop is not None and step.check_again_in is not None
            self._loop.call_later(step.check_again_in, self._drain_tick, t)
            return
        if step.state is DrainState.TIMED_OUT:
            if self.workers is not None:
                self.workers.cut(t.group.name, t.id)
            for _, lst in self.listeners:
                if hasattr(lst, "cut"):
                    lst.cut(t.backend)
        t.drain_started = None
        self._transition(t, t.health.unuse(now))
        self._event("drain", t, "draining", "unused", step.reason)

    # ------------------------------------------------------------------ roles and serving

    def _reconcile(self, g: GroupRuntime) -> list[str]:
        """Re-plan roles and publish the serving set. Returns the decisions taken."""
        if g.replication is not None:
            return g.replication.reconcile()
        now = self.now()
        changes = pool.plan_roles([t.member(now) for t in g.targets], g.active_count, now=now)
        decisions = []
        for c in changes:
            t = g.by_id(c.id)
            assert t is not None
            t.role = c.new
            t.role_since = now
            self._event("role", t, c.old.value, c.new.value, c.reason)
            decisions.append(str(c))
        fo = g.failover
        plan = pool.plan_serving([t.member() for t in g.targets], fo.fail_open)
        # weight 0 (an operator's): healthy but sent no new requests
        ids = [i for i in plan.ids if g.backends.backends[i].weight > 0]
        before = [b.id for b in g.backends.serving]
        if plan.fail_open != fo.serving.fail_open:
            what = (f"no target can serve: fail-open {plan.policy.value} in force" if plan.fail_open
                    else "fail-open over: a target can serve again")
            self.events.emit(self.wall(now), "fail_open", g.name, "", "", plan.policy.value if plan.fail_open else "", what)
            log.warning("%s: %s", g.name, what)
        fo.serving = plan
        if ids != before:
            g.backends.set_serving(ids)
            why = str(plan) if plan.fail_open else f"{len(ids)} of {g.active_count} actives serving"
            self.events.emit(self.wall(now), "serving", g.name, "", ",".join(before), ",".join(ids), why)
            if not ids:
                log.warning("%s: no target serves: requests get 503", g.name)
        for d in decisions:
            if self.on_decision:
                self.on_decision(d)
        return decisions

    def _event(self, kind: str, t: TargetRuntime, old: str, new: str, reason: str) -> Event:
        ev = self.events.emit(self.wall(self.now()), kind, t.group.name, t.id, old, new, reason)
        log.info("%s", ev, extra={"event": ev.to_json()})
        return ev

    # ------------------------------------------------------------------ draining
    # Small hooks others reuse (operator actions, reload, rolling restarts).

    async def drain_target(self, t: TargetRuntime, why: str) -> None:
        """Send ``t`` no new requests and wait until its draining is over (:meth:`deregister`:
        in-flight requests finish, or are cut after ``deregistration_delay``); ``t`` is then
        ``unused``, and the caller decides what comes next (removed, restarted, kept out)."""
        self.begin_drain(t, why)
        await self.wait_drained(t)

    def begin_drain(self, t: TargetRuntime, why: str) -> None:
        """``t`` gets no new requests from now on; ``why`` goes into a ``drain`` event."""
        self._event("drain", t, "", "draining", why)
        if t.health.state is not HealthState.UNUSED:
            self.deregister(t.id)

    async def wait_drained(self, t: TargetRuntime) -> None:
        """Until ``t`` is no longer draining (its draining finished, timed out or was called off)."""
        # the drain ticks of deregister() decide the end; watch for it from here
        while t.health.state is HealthState.DRAINING and t.drain_started is not None and not self._stopping:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    async def retire_target(self, t: TargetRuntime) -> None:
        """Stop checking ``t``, stop its instance and forget it (after it was drained)."""
        tasks = [x for x in (t.probe_task, t.agent_task) if x is not None]
        for x in tasks:
            x.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        t.probe_task = t.agent_task = None
        if t.slot is not None:
            await self._stop_instance(t)
        t.group.remove(t)
        t.backend.close_idle()
        self.reindex_group(t.group)
        self._reconcile(t.group)

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        now = self.now()
        listeners = []
        for i, (ls, lst) in enumerate(self.listeners):
            c = lst.counters
            host, port = lst.address
            listeners.append({
                "index": i,
                "rules": len(ls.rules),
                "address": f"{host}:{port}",
                "host": host,
                "port": port,
                "protocol": ls.protocol,
                "default_target_group": ls.default_target_group,
                "connections_total": c.connections,
                "connections_open": len(lst.clients),
                "requests": c.requests,
                "responses": c.responses,
                "failed": c.failed,
                "retries": c.retries,
                "hedges": getattr(c, "hedges", 0),
                "redirects": c.redirects,
                "fixed_responses": c.fixed,
                "upgrades": c.upgrades,
                "rejected": c.rejected,
                "refused_connections": c.refused,
                "rate_limited": c.rate_limited,
            })
        groups: dict[str, dict[str, Any]] = {}
        for name, g in self.groups.items():
            rep = g.replication.status() if g.replication is not None else None  # first: applies a lapsed lease
            targets = [self._target_status(t, now) for t in g.targets]
            groups[name] = {
                "algorithm": g.spec.algorithm,
                "active_count": g.active_count,
                "standby_count": g.spec.instances.standby if g.spec.instances else 0,
                "serving": [b.id for b in g.backends.serving],
                "healthy": sum(1 for t in g.targets if t.health.state is HealthState.HEALTHY),
                "targets": targets,
                "requests": g.backends.counters.requests,
                "retries": g.backends.counters.retries,
                "retry_budget_exhausted": g.backends.counters.budget_exhausted,
                "failed": g.backends.counters.failed,
                "slow_start_s": g.spec.slow_start,
                "ramping": sorted(g.backends.balancer.joined),
                **self._failover_status(g, now),
            }
            if g.replication is not None:
                groups[name]["replication"] = rep
                for ts in targets:
                    ts["replication"] = g.replication.target_status(ts["id"])
        out: dict[str, Any] = {
            "name": self.spec.name,
            "pid": os.getpid(),
            "started": iso(self.wall(self.started_at)),
            "uptime_s": round(now - self.started_at, 3),
            "data_plane": accel.mode(),  # "compiled" or "pure (why)": see fivenines.accel
            "admin": self.admin.url if self.admin else None,
            "listeners": listeners,
            "target_groups": groups,
            "workers": self.workers.status() if self.workers is not None else [],
            "workers_synced": self.workers.synced() if self.workers is not None else True,
            "events_seq": self.events.last_seq,
        }
        if self.reloader is not None:
            out["config"] = self.reloader.status()
        return out

    def target_status(self, t: TargetRuntime) -> dict[str, Any]:
        return self._target_status(t, self.now())

    def _target_status(self, t: TargetRuntime, now: float) -> dict[str, Any]:
        h = t.health
        out: dict[str, Any] = {
            "id": t.id,
            "address": t.backend.address,
            "state": h.state.value,
            "reason": h.reason.value if h.reason else None,
            "detail": h.detail,
            "role": t.role.value,
            "pid": None,
            "since": iso(self.wall(h.since)),
            "role_since": iso(self.wall(t.role_since)),
            "requests": t.backend.requests,
            "errors": t.backend.errors,
            "in_flight": t.backend.in_flight,
            "last_check": None,
            "admin_state": t.admin_state.value if t.admin_state else None,
            "retries": t.backend.retries,
            "responses": t.backend.responses_by_class(),
            "latency": {"count": t.backend.latency_count(), "sum_s": round(t.backend.latency_sum, 6)},
        }
        if h.last_check is not None:
            lc = h.last_check
            out["last_check"] = {"ok": lc.ok, "detail": lc.detail, "duration_ms": round(lc.duration * 1000, 2)}
        out.update(self._failover_target_status(t, now))
        if t.slot is not None:
            lc_ = t.slot.lifecycle
            out["pid"] = lc_.pid
            inst: dict[str, Any] = {
                "state": lc_.shown_state().value,
                "restarts": lc_.restarts,
                "consecutive_failures": lc_.consecutive_failures,
                "last_exit_code": lc_.last_exit_code,
                "last_exit": describe_exit(lc_.last_exit_code) if lc_.last_exit_code is not None else None,
                "restart_in_s": round(lc_.restart_at - now, 3) if lc_.restart_at is not None else None,
                "stdout_log": str(t.slot.stdout),
                "stderr_log": str(t.slot.stderr),
                "stderr_tail": [],
            }
            if lc_.last_exit_code is not None:
                inst["stderr_tail"] = tail_lines(t.slot.stderr, 10)
            out["instance"] = inst
        return out

    def ready_info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "admin": self.admin.url if self.admin else None,
            "listeners": [f"{lst.address[0]}:{lst.address[1]}" for _, lst in self.listeners],
            "state_dir": str(self.state_dir),
        }

    def all_healthy(self) -> bool:
        return all(
            sum(1 for t in g.targets if t.health.state is HealthState.HEALTHY) >= len(g.targets)
            for g in self.groups.values()
        )

    def target(self, target_id: str) -> TargetRuntime | None:
        for g in self.groups.values():
            t = g.by_id(target_id)
            if t is not None:
                return t
        return None

    # ------------------------------------------------------------------ failover: tick, ejection, agent, rollout

    async def _tick_loop(self) -> None:
        """Time-driven decisions: phi suspicion, ejection ends and latency outliers, hysteresis, rollouts."""
        while not self._stopping:
            await asyncio.sleep(self.tick_interval)
            try:
                self.tick()
            except Exception:  # a bug here must not stop failover for good
                log.exception("failover tick failed")

    def tick(self) -> list[str]:
        """One pass of the time-driven decisions. Returns the role decisions taken (readable)."""
        now = self.now()
        decisions: list[str] = []
        for g in self.groups.values():
            grace = g.spec.health_check.startup_grace
            for t in g.targets:
                if t.slot is not None:
                    t.slot.lifecycle.mark_stable(now)
                    if t.slot.lifecycle.in_startup_grace(now, grace):
                        continue
                self._transition(t, t.judge.poll(now))
            out = g.failover.outliers
            if out is not None:
                ejections, back = out.sweep(now)
                for i in back:
                    self._ejection_over(g.targets[i], now, "ejection time over")
                for e in ejections:
                    self._apply_ejection(g, e)
            decisions += self._reconcile(g)
            ro = g.failover.rollout
            if ro is not None and ro.running:
                self._rollout_step(g, now)
        return decisions

    def on_worker_ejection(self, msg: dict[str, Any]) -> None:
        """A worker's passive detector ejected a target (and took it out of its own serving set)."""
        g = self.groups.get(msg.get("group", ""))
        t = g.by_id(msg.get("id", "")) if g is not None else None
        if g is None or t is None or g.failover.outliers is None:
            return
        e = g.failover.outliers.eject(t.index, self.now(), str(msg.get("reason", "")), str(msg.get("cause", "")))
        if e is not None:
            self._apply_ejection(g, e)
        elif not t.ejection:
            g.backends.set_serving([b.id for b in g.backends.serving])  # not ejected: the workers serve it again

    def _apply_ejection(self, g: GroupRuntime, e: Ejection) -> None:
        t = g.targets[e.index]
        t.ejection = e.reason
        if t.health.state is HealthState.HEALTHY:
            g.failover.flaps.lost(t.id, e.at)
        self._event("ejection", t, "", "ejected", f"{e} (ejection #{e.count})")
        self._reconcile(g)  # it leaves the serving set now
        if e.cause in ("timeout", "latency") and self._loop is not None:
            # hung or slow: what waits for it is retried elsewhere now (after this call stack unwinds)
            self._loop.call_soon(self._rescue, t)

    def _rescue(self, t: TargetRuntime) -> None:
        n = sum(lst.rescue(t.backend) for _, lst in self.listeners if hasattr(lst, "rescue"))
        if n:
            log.info("%s: %d requests waiting for %s retried elsewhere", t.group.name, n, t.id)

    def _ejection_over(self, t: TargetRuntime, now: float, why: str) -> None:
        if not t.ejection:
            return
        t.ejection = ""
        t.available_since = now
        self._event("ejection", t, "ejected", "", why)

    async def _agent_loop(self, t: TargetRuntime) -> None:
        hc = t.group.spec.health_check
        ag = hc.agent
        assert ag is not None
        await asyncio.sleep(self.rng.uniform(0.05, 0.25) * ag.interval)
        while not self._stopping:
            if t.slot is not None and not t.slot.running.is_set():
                await t.slot.running.wait()
                continue
            port = ag.port or hc.port or t.backend.port
            try:
                report = await agent_check(t.backend.host, port, min(hc.timeout, ag.interval), ag.send, ag.path)
            except (OSError, TimeoutError, ValueError) as exc:
                self.on_agent(t, None, str(exc) or type(exc).__name__)
            else:
                self.on_agent(t, report, "")
            await asyncio.sleep(ag.interval * self.rng.uniform(0.9, 1.1))

    def on_agent(self, t: TargetRuntime, report: AgentReport | None, error: str) -> None:
        """An agent reply (or the failure to get one: no opinion, as HAProxy treats it)."""
        now = self.now()
        before = t.excluded
        t.agent, t.agent_error = report, error
        # With an agent, weights are in percent of the spec's weight (an agent's 0% drains instead).
        pct = report.weight_percent if report is not None and report.weight_percent else 100
        if t.base_weight * pct != t.backend.weight:
            t.backend.weight = t.base_weight * pct
            g = t.group.backends
            g.set_serving([b.id for b in g.serving])  # the balancer takes the new weight
        if report is not None and report.down:
            detail = "agent: down" + (f" ({report.description})" if report.description else "")
            self._transition(t, t.judge.check(CheckResult.failed(Reason.FAILED_HEALTH_CHECKS, detail), now))
        if t.excluded != before:
            if not t.excluded:
                t.available_since = now
            self._event("agent", t, before or "serving", t.excluded or "serving",
                        (report.description if report else error) or "agent reply")
            self._reconcile(t.group)

    def _views(self, g: GroupRuntime) -> list[View]:
        out = []
        for t in g.targets:
            lc = t.slot.lifecycle if t.slot else None
            running = t.slot is None or (t.slot.process is not None and t.slot.process.running)
            out.append(View(t.id, t.role, t.health.state, t.backend.in_flight, running,
                            lc.starts if lc else 1, bool(t.excluded), bool(lc and lc.crash_looping)))
        return out

    def restart_group(self, name: str) -> tuple[int, dict[str, Any]]:
        """Start a rolling restart of group ``name``. Returns (HTTP status, body) for the admin API."""
        g = self.groups.get(name)
        if g is None:
            return 404, {"error": f"no target group {name!r}; defined: {', '.join(sorted(self.groups))}"}
        if g.spec.instances is None:
            return 409, {"error": f"{name}: its targets are not run by fivenines, so it cannot restart them"}
        if g.replication is not None:
            return 409, {"error": f"{name} is a replicated store: restart its replicas one by one and use "
                                  "fivenines switchover for the primary"}
        now = self.now()
        ro = g.failover.rollout
        if ro is not None and ro.running:
            return 409, {"error": f"{name}: a rolling restart is already running", "rollout": ro.snapshot(now)}
        views = self._views(g)
        ro = RollingRestart(restart_order(views), g.failover.rollout_policy, started_at=now)
        g.failover.rollout = ro
        self.events.emit(self.wall(now), "rollout", g.name, "", "", "running",
                         f"rolling restart, one at a time: {', '.join(ro.order)}")
        self._rollout_step(g, now)
        return 202, {"group": name, "rollout": ro.snapshot(now)}

    def _rollout_step(self, g: GroupRuntime, now: float) -> None:
        ro = g.failover.rollout
        assert ro is not None
        for a in ro.step(self._views(g), now):
            t = g.by_id(a.target) if a.target else None
            if a.kind is ActionKind.DEREGISTER and t is not None:
                self._event("rollout", t, "", "deregister", a.reason)
                self.deregister(t.id)
            elif a.kind is ActionKind.STOP and t is not None:
                self._event("rollout", t, "deregister", "stop", a.reason)
                assert self._loop is not None
                self._loop.create_task(self._stop_instance(t), name=f"rollout stop {t.id}")
            elif a.kind is ActionKind.START and t is not None:
                self._event("rollout", t, "stop", "start", a.reason)
                self._start_instance(t)
            else:
                state = "done" if a.kind is ActionKind.FINISHED else "failed"
                self.events.emit(self.wall(now), "rollout", g.name, a.target, "running", state, a.reason)
                (log.info if state == "done" else log.error)("%s: rolling restart %s: %s", g.name, state, a.reason)

    def _failover_status(self, g: GroupRuntime, now: float) -> dict[str, Any]:
        fo = g.failover
        return {
            "fail_open": {"policy": fo.fail_open.value, "in_force": fo.serving.fail_open},
            "ejected": [t.id for t in g.targets if t.ejection],
            "rollout": fo.rollout.snapshot(now) if fo.rollout is not None else None,
        }

    def _failover_target_status(self, t: TargetRuntime, now: float) -> dict[str, Any]:
        d = t.judge.detector
        out = t.group.failover.outliers
        hold = t.group.failover.flaps
        m = t.member(now)
        ej: dict[str, Any] | None = None
        if out is not None:
            until = out.ejected_until(t.index)
            ej = {"ejected": bool(t.ejection), "reason": t.ejection or None,
                  "remaining_s": round(max(0.0, until - now), 3) if until else None,
                  **out.snapshot(t.index)}
        return {
            "excluded": t.excluded or None,
            "detector": {"kind": d.kind, "level": round(d.level(now), 3),
                         "samples": d.samples if isinstance(d, PhiAccrualDetector) else None},
            "ejection": ej,
            "flaps": hold.count(t.id, now),
            "ready_in_s": round(max(0.0, m.ready_at - now), 3) if m.can_serve and m.role is Role.STANDBY else None,
            "weight": t.backend.weight,
            "agent": None if t.agent is None and not t.agent_error else {
                "state": t.agent.state if t.agent else None,
                "weight_percent": t.agent.weight_percent if t.agent else None,
                "description": t.agent.description if t.agent else "",
                "error": t.agent_error or None,
            },
        }


def admin_token_path(spec: Spec, state_dir: Path, base_dir: Path) -> Path:
    """Where the admin bearer token is kept: ``admin.token_file`` or ``STATE_DIR/admin.token``."""
    return base_dir / spec.admin.token_file if spec.admin.token_file else state_dir / "admin.token"


def state_dir_of(spec: Spec, spec_path: str | Path) -> tuple[Path, Path]:
    """(state_dir, base_dir) of a spec file, as :class:`Controller` resolves them."""
    base = Path(spec_path).parent.resolve()
    return base / (spec.state_dir or f".fivenines/{spec.name}"), base


def write_ready_file(path: str, info: dict[str, Any]) -> None:
    """Atomically write the addresses fivenines serves on (for scripts and tests)."""
    import json

    tmp = Path(path + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # owner-only, like every file we write
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(info))
    tmp.replace(path)


async def run(spec: Spec, spec_path: str | Path | None, *, ready_file: str | None = None,
              announce: Callable[[Controller], None] | None = None, access_log: str | None = None) -> int:
    """Start ``spec``, serve until SIGINT/SIGTERM, stop cleanly; SIGHUP reloads. Returns the exit status."""
    import signal

    ctl = Controller(spec, spec_path)
    if access_log is not None:
        from fivenines.runtime.logs import AccessLog

        ctl.access_log = AccessLog(access_log)
        ctl.access_log.open()
    await ctl.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, ctl.reloader.request, "SIGHUP")
    run_file = ctl.state_dir / RUN_FILE
    write_ready_file(str(run_file), ctl.ready_info())
    if ready_file:
        write_ready_file(ready_file, ctl.ready_info())
    if announce:
        announce(ctl)
    await stop.wait()
    log.info("stopping: draining in-flight requests, then stopping instances")
    await ctl.stop()
    if ctl.access_log is not None:
        ctl.access_log.close()
    with contextlib.suppress(OSError):
        run_file.unlink()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(sig)
    return 0


RUN_FILE = "run.json"
"""In STATE_DIR while fivenines runs: its pid and admin URL (how the CLI finds it with -f SPEC)."""
