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
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fivenines.core import pool
from fivenines.core.drain import DrainState, drain_step
from fivenines.core.health import CheckResult, HealthState, TargetHealth, Transition
from fivenines.core.lifecycle import InstanceLifecycle, InstanceState, RestartPolicy, describe_exit
from fivenines.core.pool import Member, Role
from fivenines.core.restore import AdminState, fingerprint
from fivenines.errors import ConfigError, ProviderError
from fivenines.proxy.backend import Backend, BackendGroup
from fivenines.proxy.http import ProxySettings
from fivenines.proxy.workers import WorkerPool, make_listener
from fivenines.runtime.events import Event, EventLog, iso
from fivenines.runtime.probe import http_check, tcp_check
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
        self.health = TargetHealth(hc.healthy_threshold, hc.unhealthy_threshold, since=now)
        self.role = role
        self.role_since = now
        self.slot = slot
        self.backend = Backend(target_id, host, port, weight=weight)
        self.probe_task: asyncio.Task[None] | None = None
        self.drain_started: float | None = None
        self.admin_state: AdminState | None = None  # what an operator asked (drain, maintenance)
        self.weight = weight
        self.spec_weight = weight  # the spec's; weight differs when an operator set it
        self.fingerprint = fingerprint(group.name, group.spec, None if slot else self.backend.address)

    def member(self) -> Member:
        h = self.health
        return Member(self.id, self.role, h.state, h.since, self.index, h.reason)

    def __repr__(self) -> str:
        return f"<Target {self.id} {self.backend.address} {self.health.state.value} {self.role.value}>"


class GroupRuntime:
    def __init__(self, name: str, spec: TargetGroupSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.spec = spec
        self.backends = BackendGroup.from_spec(name, spec, clock=clock)
        self.targets: list[TargetRuntime] = []
        self.active_count = spec.instances.count if spec.instances else len(spec.targets or [])
        self.matcher = spec.health_check.matcher_ranges
        self.replication: ReplicationManager | None = None  # replicated: groups

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


def allocate_ports(spec_ports: str, n: int, taken: set[int]) -> list[int]:
    """Pick ``n`` free loopback ports from a range (or from the kernel for ``auto``)."""
    rng = parse_port_range(spec_ports)
    out: list[int] = []
    if rng is None:
        while len(out) < n:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                p = s.getsockname()[1]
            if p not in taken and p not in out:
                out.append(p)
        return out
    for p in range(rng[0], rng[1] + 1):
        if len(out) == n:
            break
        if p not in taken and port_is_free("127.0.0.1", p):
            out.append(p)
    if len(out) < n:
        raise ConfigError(f"not enough free ports in {spec_ports}: need {n}")
    return out


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
        self.workers: WorkerPool | None = None
        self.admin: Any = None
        self.started_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wall_offset = 0.0
        self._stopping = False
        self._settings_given = settings is not None
        self.stopped = asyncio.Event()
        self.on_decision: Callable[[str], None] | None = None
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
        for g in self.groups.values():
            for t in g.targets:
                self.launch_target(t)
            self._reconcile(g)
        self.statefile.start()

    def make_listener(self, ls: ListenerSpec) -> Any:
        """A listener (not yet bound) for ``ls``: its rules compiled over the groups running now."""
        groups = {name: g.backends for name, g in self.groups.items()}
        listener = make_listener(ls, groups, self.settings if self._settings_given else None)
        if self.access_log is not None and hasattr(listener, "access_log"):
            listener.access_log = self.access_log
        return listener

    def reroute(self, listener: Any, ls: ListenerSpec) -> None:
        """New requests on ``listener`` follow ``ls`` (default group, rules, timeouts) from now on;
        requests in flight finish where they are."""
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
        """Start the target's instance (if supervised) and its health checks."""
        if t.slot is not None:
            self._start_instance(t)
        self.restart_probe(t)

    def restart_probe(self, t: TargetRuntime) -> None:
        """(Re)start the probe loop of ``t``, e.g. after its group's health check changed."""
        if t.probe_task is not None:
            t.probe_task.cancel()
        assert self._loop is not None
        t.probe_task = self._loop.create_task(self._probe_loop(t), name=f"probe {t.id}")

    async def _start_data_plane(self) -> None:
        """Listeners in this process (``workers: 1``), or N worker processes sharing the ports."""
        groups = {name: g.backends for name, g in self.groups.items()}
        settings = self.settings if self._settings_given else None
        if self.spec.workers > 1:
            self.workers = WorkerPool(self.spec, groups, self.spec.workers, self.state_dir / "logs", settings)
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
                ports = allocate_ports(inst.ports, inst.total, taken)
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
        tasks = [t.probe_task for g in self.groups.values() for t in g.targets if t.probe_task]
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
            proc = Process(slot.command(), env=slot.env, cwd=slot.cwd, stdout=slot.stdout, stderr=slot.stderr,
                           shell=slot.shell, on_exit=lambda code, t=t: self._on_exit(t, code))  # type: ignore[misc]
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
        if slot.lifecycle.restarts and t.admin_state is None:
            self._transition(t, t.health.register(now))
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
        port = hc.port
        await asyncio.sleep(self.rng.uniform(0.05, 0.25) * hc.interval)
        while not self._stopping:
            if t.slot is not None and not t.slot.running.is_set():
                await t.slot.running.wait()
                await asyncio.sleep(self.rng.uniform(0.05, 0.25) * hc.interval)
                continue
            host, tport = t.backend.host, port or t.backend.port
            started = self.now()
            if t.group.replication is not None:
                result = await t.group.replication.check(t)
            elif hc.protocol == "http":
                result = await http_check(host, tport, hc.path, hc.timeout, t.group.matcher)
            else:
                result = await tcp_check(host, tport, hc.timeout)
            if self.stopping:
                return
            if t.slot is None or t.slot.running.is_set():
                self.on_check(t, result)
            elapsed = self.now() - started
            await asyncio.sleep(max(0.0, hc.interval * self.rng.uniform(0.9, 1.1) - elapsed))

    def on_check(self, t: TargetRuntime, result: CheckResult) -> None:
        now = self.now()
        if t.slot is not None:
            t.slot.lifecycle.mark_stable(now)
        if self.metrics is not None:
            self.metrics.observe_check(t, result)
        self._transition(t, t.health.check(result, now))

    def _transition(self, t: TargetRuntime, tr: Transition | None) -> None:
        if tr is None:
            return
        reason = tr.reason.value if tr.reason else "passed health checks"
        if tr.detail:
            reason = f"{reason}: {tr.detail}"
        self._event("health", t, tr.old.value, tr.new.value, reason)
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
        changes = pool.plan_roles([t.member() for t in g.targets], g.active_count)
        decisions = []
        now = self.now()
        for c in changes:
            t = g.by_id(c.id)
            assert t is not None
            t.role = c.new
            t.role_since = now
            self._event("role", t, c.old.value, c.new.value, c.reason)
            decisions.append(str(c))
        # weight 0 (an operator's, or the spec's): healthy but sent no new requests
        ids = [i for i in pool.serving([t.member() for t in g.targets]) if g.backends.backends[i].weight > 0]
        before = [b.id for b in g.backends.serving]
        if ids != before:
            g.backends.set_serving(ids)
            self.events.emit(self.wall(now), "serving", g.name, "", ",".join(before), ",".join(ids),
                             f"{len(ids)} of {g.active_count} actives serving")
            if not ids:
                log.warning("%s: no healthy target: requests get 503", g.name)
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
        if t.probe_task is not None:
            t.probe_task.cancel()
            await asyncio.gather(t.probe_task, return_exceptions=True)
            t.probe_task = None
        if t.slot is not None:
            await self._stop_instance(t)
        t.group.remove(t)
        t.backend.close_idle()
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
            "weight": t.weight,
            "admin_state": t.admin_state.value if t.admin_state else None,
            "retries": t.backend.retries,
            "responses": t.backend.responses_by_class(),
            "latency": {"count": t.backend.latency_count(), "sum_s": round(t.backend.latency_sum, 6)},
        }
        if h.last_check is not None:
            lc = h.last_check
            out["last_check"] = {"ok": lc.ok, "detail": lc.detail, "duration_ms": round(lc.duration * 1000, 2)}
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
