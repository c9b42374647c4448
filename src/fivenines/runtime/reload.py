"""Reload: re-read the spec and apply it as a diff, without dropping a request.

Triggered by ``fivenines reload`` / ``POST /reload`` / SIGHUP. What changes is decided
by :func:`fivenines.core.reconfig.plan`; this module carries it out in three steps:

1. **Check everything first.** The file is loaded and validated exactly as at start;
   the plan is made; new ports are checked and new listener sockets bound; instance
   ports allocated; every https/tls listener's certificate files are read again and its
   TLS contexts built (even when the spec's text did not change: replaced certificate
   files are what a reload is often for). Any problem rejects the reload *as a whole*, with the same
   ``FILE: field.path: what is wrong`` messages as ``fivenines validate``; the running
   configuration is not touched.
2. **Add, then wait.** New groups and targets start (``initial``: no traffic) next to
   the old ones; in-place updates apply; then the reload waits (bounded) until what it
   added has passed its health checks.
3. **Switch, then drain.** Listeners are rerouted (new requests follow the new rules;
   requests in flight finish where they are) or rebound (the new socket listens before
   the old one stops; established connections stay open); TLS listeners switch to the
   contexts built in step 1 (new handshakes get the new certificates, open connections
   keep theirs; with workers, every worker reads the files again); removed targets drain (no
   new requests, in-flight ones finish within ``deregistration_delay``) and are then
   stopped and forgotten.

Health state is untouched by a reload: kept targets keep their state machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from fivenines.core import reconfig
from fivenines.core.detect import HealthJudge
from fivenines.core.pool import Role
from fivenines.core.restore import fingerprint
from fivenines.errors import ConfigError, SpecError
from fivenines.proxy.backend import BackendGroup
from fivenines.proxy.base import ProxyListener
from fivenines.proxy.tls_serve import TlsServing
from fivenines.runtime.checks import Checks
from fivenines.runtime.context import RuntimeContext
from fivenines.runtime.dataplane import DataPlane, TlsPlan
from fivenines.runtime.draining import Draining
from fivenines.runtime.failover import GroupFailover, make_detector, rollout_policy
from fivenines.runtime.instances import Instances
from fivenines.runtime.interface import ReloadResult
from fivenines.runtime.ports import allocate_ports, release_ports
from fivenines.runtime.reconcile import Reconciler
from fivenines.runtime.targets import GroupRuntime, TargetRuntime, restart_policy
from fivenines.spec import ListenerSpec, Spec, load_spec, port_is_free

log = logging.getLogger("fivenines")

_BALANCING = ("algorithm", "hash_on", "retries", "stickiness", "slow_start", "hedging")
"""Group settings the data plane holds in its BackendGroup (rebuilt from the spec on a reload)."""


class _Rejected(Exception):
    def __init__(self, errors: list[str]) -> None:
        self.errors = errors


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
    except OSError:
        s.close()
        raise
    s.setblocking(False)
    return s


def _dup_listening(lst: ProxyListener) -> socket.socket:
    """A second handle on ``lst``'s listening socket: the queue of pending connections is kept."""
    assert lst.server is not None
    ts = lst.server.sockets[0]
    s = socket.socket(ts.family, ts.type, ts.proto, fileno=socket.dup(ts.fileno()))
    s.setblocking(False)
    return s


class Reloader:
    """Serialises reloads and carries them out on the running parts."""

    def __init__(self, ctx: RuntimeContext, reconciler: Reconciler, data_plane: DataPlane, instances: Instances,
                 checks: Checks, draining: Draining) -> None:
        self.ctx = ctx
        self.reconciler = reconciler
        self.data_plane = data_plane
        self.instances = instances
        self.checks = checks
        self.draining = draining
        self.lock = asyncio.Lock()
        self.generation = 1
        self.last: ReloadResult | None = None
        self.counts = {"ok": 0, "rejected": 0}
        self.removing: set[str] = set()  # ids of targets being drained out (by a reload or a scale-in)
        # listeners that stopped accepting (with the index they served); their connections finish
        self.retiring: list[tuple[int | None, ProxyListener]] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return (f"<Reloader generation={self.generation} removing={sorted(self.removing)} "
                f"retiring={len(self.retiring)}>")

    def status(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "spec_file": str(self.ctx.spec_path) if self.ctx.spec_path else None,
            "reloads": dict(self.counts),
            "last_reload": self.last.to_json() if self.last else None,
            "removing": sorted(self.removing),
        }

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def request(self, source: str) -> None:
        """Enqueue a reload (from a signal handler: only schedules)."""
        self._spawn(self.reload(source), f"reload ({source})")

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(lst.drain(5.0) for _, lst in self.retiring), return_exceptions=True)
        self.retiring.clear()

    # ------------------------------------------------------------------ the reload

    async def reload(self, source: str = "admin API") -> ReloadResult:
        async with self.lock:
            ctx = self.ctx
            at = time.time()
            try:
                result = await self._reload(source, at)
            except _Rejected as rej:
                result = ReloadResult(False, source, self.generation, at, errors=rej.errors)
                self.counts["rejected"] += 1
                for e in rej.errors:
                    log.error("reload rejected: %s", e)
                first = rej.errors[0] if rej.errors else ""
                ctx.emit("reload", "", "", f"generation {self.generation}", "rejected",
                         f"{source}: {len(rej.errors)} problem(s), nothing changed; {first}")
            self.last = result
            return result

    async def _reload(self, source: str, at: float) -> ReloadResult:
        ctx = self.ctx
        if ctx.spec_path is None:
            raise _Rejected(["fivenines was started without a spec file: nothing to re-read"])
        path = str(ctx.spec_path)
        try:
            new = load_spec(path)
        except SpecError as exc:
            raise _Rejected([f"{exc.file}: {e}" for e in exc.errors]) from None
        plan = reconfig.plan(ctx.spec, new, self._running())
        if not plan.ok:
            raise _Rejected([f"{path}: {e}" for e in plan.errors])
        prepared = self._prepare(plan, new, path)
        try:
            warnings = await self._commit(plan, new, prepared)
        except BaseException:
            prepared.close()
            raise
        self.generation += 1
        self.counts["ok"] += 1
        desc = [d for d in plan.describe() if not (prepared.tls_changes and d == "no change")] + prepared.tls_changes
        for line in desc:
            log.info("reload: %s", line)
        ctx.emit("reload", "", "", f"generation {self.generation - 1}", f"generation {self.generation}",
                 f"{source}: " + "; ".join(desc))
        return ReloadResult(True, source, self.generation, at, desc, [], warnings)

    def _running(self) -> reconfig.Running:
        targets = {
            name: [reconfig.RunningTarget(t.id, t.backend.address, t.role, t.health.state, t.index, t.spec_weight)
                   for t in g.targets if t.id not in self.removing]
            for name, g in self.ctx.groups.items()
        }
        taken = frozenset(t.id for g in self.ctx.groups.values() for t in g.targets)
        actives = {name: g.active_count for name, g in self.ctx.groups.items() if g.spec.instances is not None}
        return reconfig.Running(targets, taken, actives)

    # ------------------------------------------------------------------ step 1: check everything

    def _prepare(self, plan: reconfig.Plan, new: Spec, path: str) -> _Prepared:
        ctx = self.ctx
        prep = _Prepared()
        errors: list[str] = []
        for name in sorted({a.group for a in plan.actions if hasattr(a, "group")}):
            g = ctx.groups.get(name)
            if g is not None and g.failover.rollout is not None and g.failover.rollout.running:
                errors.append(f"{path}: target_groups.{name}: a rolling restart is running; reload when it has ended")
        if errors:
            raise _Rejected(errors)
        if ctx.spec.workers > 1:
            errors += [f"{path}: cannot {a} on a reload with workers: {ctx.spec.workers} (the worker processes "
                       "hold listeners, targets and balancing); restart fivenines for it"
                       for a in reconfig.held_by_workers(plan)]
            if errors:
                raise _Rejected(errors)
        for a in plan.actions:
            if isinstance(a, reconfig.AddGroup) or (isinstance(a, reconfig.UpdateGroup)
                                                    and set(_BALANCING) & set(a.fields)):
                try:
                    prep.groups[a.group] = BackendGroup.from_spec(a.group, new.target_groups[a.group], clock=ctx.now)
                except ValueError as exc:
                    errors.append(f"{path}: target_groups.{a.group}: {exc}")
        # instance ports
        taken = {t.slot.port for g in ctx.groups.values() for t in g.targets if t.slot is not None}
        want: dict[str, int] = {}
        for a in plan.of(reconfig.AddTarget):
            if a.address is None:
                want[a.group] = want.get(a.group, 0) + 1
        holds: list[socket.socket] = []  # new instances' ports, kept from the listener binds below
        for group, n in want.items():
            inst = new.target_groups[group].instances
            assert inst is not None
            try:
                ports = allocate_ports(inst.ports, n, taken, holds)
            except ConfigError as exc:
                errors.append(f"{path}: target_groups.{group}.instances.ports: {exc}")
                continue
            taken.update(ports)
            prep.ports[group] = ports
        # listener sockets: bound now, so a busy port rejects the reload before anything changes
        served = self.data_plane.served
        held = {lst.address: i for i, (_, lst) in enumerate(served)}
        for a in plan.actions:
            if not isinstance(a, reconfig.AddListener | reconfig.RebindListener):
                continue
            ls = new.listeners[a.index]
            if isinstance(a, reconfig.RebindListener):
                old_ls, old_lst = served[a.index]
                if (old_ls.host, old_ls.port) == (ls.host, ls.port) and ls.port != 0:
                    prep.sockets[a.index] = _dup_listening(old_lst)  # same address: hand the socket over
                    continue
            owner = held.get((ls.host, ls.port)) if ls.port else None
            if owner is not None and owner != a.index:
                errors.append(f"{path}: listeners.{a.index}.port: {ls.host}:{ls.port} is served by listeners."
                              f"{owner} now; move them in two reloads")
                continue
            if ls.port and not port_is_free(ls.host, ls.port):
                errors.append(f"{path}: listeners.{a.index}.port: {ls.host}:{ls.port} is in use")
                continue
            try:
                prep.sockets[a.index] = _bind(ls.host, ls.port)
            except OSError as exc:
                errors.append(f"{path}: listeners.{a.index}: cannot listen on {ls.host}:{ls.port}: "
                              f"{exc.strerror or exc}")
        release_ports(holds)
        # TLS: every certificate file read again and every context built, even when the spec's
        # text is unchanged (replaced files are what a reload is for); nothing switched yet
        rebound = {a.index for a in plan.of(reconfig.RebindListener)}
        kept = set(range(min(len(ctx.spec.listeners), len(new.listeners)))) - rebound
        prep.tls, prep.tls_fresh, tls_errors = self.data_plane.prepare_tls(new, kept)
        errors += [f"{path}: {e}" for e in tls_errors]
        if errors:
            prep.close()
            raise _Rejected(errors)
        return prep

    # ------------------------------------------------------------------ steps 2 and 3

    async def _commit(self, plan: reconfig.Plan, new: Spec, prep: _Prepared) -> list[str]:
        ctx, reconciler, dp, instances = self.ctx, self.reconciler, self.data_plane, self.instances
        now = ctx.now()
        warnings: list[str] = []
        touched: set[str] = set()
        old_spec = ctx.spec
        ctx.spec = new
        for name, g in ctx.groups.items():
            if name in new.target_groups and name in old_spec.target_groups:
                g.spec = new.target_groups[name]
                g.matcher = g.spec.health_check.matcher_ranges
        added: list[TargetRuntime] = []
        new_groups: list[str] = []
        ports = {g: list(p) for g, p in prep.ports.items()}
        for a in plan.actions:
            if isinstance(a, reconfig.AddGroup):
                grp = GroupRuntime(a.group, new.target_groups[a.group], clock=ctx.now)
                ctx.groups[a.group] = grp
                reconciler.wire(grp)
                new_groups.append(a.group)
            elif isinstance(a, reconfig.AddTarget):
                grp = ctx.groups[a.group]
                if a.address is None:
                    t = instances.new_instance_target(grp, a.index, a.id, ports[a.group].pop(0), a.role, now)
                else:
                    t = instances.new_static_target(grp, a.index, a.id, a.address, a.weight, now)
                grp.add(t)
                added.append(t)
                touched.add(a.group)
            elif isinstance(a, reconfig.UpdateGroup):
                self._update_group(ctx.groups[a.group], a.fields, prep)
                touched.add(a.group)
            elif isinstance(a, reconfig.SetWeight):
                t = self._target(a.group, a.id)
                t.spec_weight = t.base_weight = a.weight
                t.backend.weight = t.effective_weight()
                touched.add(a.group)
            elif isinstance(a, reconfig.SetActiveCount):
                grp = ctx.groups[a.group]
                grp.active_count = a.count
                grp.failover.rollout_policy = rollout_policy(grp.spec, a.count)
                touched.add(a.group)
            elif isinstance(a, reconfig.Demote):
                t = self._target(a.group, a.id)
                if t.role is Role.ACTIVE:
                    t.role, t.role_since = Role.STANDBY, now
                    ctx.emit("role", a.group, t.id, "active", "standby", a.reason, at=now)
                touched.add(a.group)
        for name in {t.group.name for t in added}:
            reconciler.reindex(ctx.groups[name], {t.id for t in added})
        for t in added:
            instances.launch(t)
        for name in touched | set(new_groups):
            reconciler.reconcile(ctx.groups[name])
        # step 2: wait (bounded) until what was added has passed its checks
        if added or new_groups:
            deadline = reconfig.ready_deadline([ctx.groups[g].spec for g in {t.group.name for t in added}])
            waiting = await self._wait_ready(added, new_groups, deadline)
            if waiting:
                warnings.append(f"went ahead after {deadline:g}s without: {', '.join(waiting)}")
                log.warning("reload: went ahead after %gs without: %s", deadline, ", ".join(waiting))
        # step 3: switch listeners, then drain what goes
        for a in plan.actions:
            if isinstance(a, reconfig.RerouteListener):
                ls = new.listeners[a.index]
                _, lst = dp.served[a.index]
                dp.reroute(lst, ls)
                dp.served[a.index] = (ls, lst)
                for i, old in self.retiring:
                    if i == a.index:
                        dp.reroute(old, ls)
            elif isinstance(a, reconfig.RebindListener):
                await self._rebind(a.index, new.listeners[a.index], prep.sockets.pop(a.index),
                                   prep.tls_fresh.pop(a.index, None))
            elif isinstance(a, reconfig.AddListener):
                ls = new.listeners[a.index]
                lst = dp.make_listener(ls, prep.tls_fresh.pop(a.index, None))
                await lst.start(ls.host, ls.port, sock=prep.sockets.pop(a.index))
                dp.served.append((ls, lst))
        for a in sorted(plan.of(reconfig.RemoveListener), key=lambda x: -x.index):
            _, lst = dp.served.pop(a.index)
            self._retire_listener(lst)
        prep.tls_changes = dp.apply_tls(prep.tls) or [
            f"tls listeners.{i}: certificates read again, unchanged" for i in sorted(prep.tls)]
        for a in plan.actions:
            if isinstance(a, reconfig.RemoveTarget):
                t = self._target(a.group, a.id)
                self.removing.add(t.id)
                self._spawn(self._drain_and_remove(t, f"reload: {a.reason}"), f"remove {t.id}")
            elif isinstance(a, reconfig.RemoveGroup):
                self._spawn(self._remove_group(ctx.groups[a.group]), f"remove group {a.group}")
        return warnings

    def _target(self, group: str, tid: str) -> TargetRuntime:
        t = self.ctx.groups[group].by_id(tid)
        assert t is not None, f"{tid} not in {group}"
        return t

    def _update_group(self, g: GroupRuntime, fields: tuple[str, ...], prep: _Prepared) -> None:
        if g.name in prep.groups:
            g.backends.configure_like(prep.groups[g.name])
        fo = g.failover
        if {"outlier_detection", "failover", "fail_open"} & set(fields):
            fresh = GroupFailover(g.spec, len(g.targets), g.active_count)
            if "outlier_detection" in fields:  # a new detector: passive history starts over
                fo.outliers = fresh.outliers
                g.guard_outliers()
                self.reconciler.reindex(g, {t.id for t in g.targets})
                self.reconciler.wire(g)
            if "failover" in fields:
                fo.flaps = fresh.flaps
            if "fail_open" in fields:
                fo.fail_open = fresh.fail_open
        fo.rollout_policy = rollout_policy(g.spec, g.active_count)
        hc = g.spec.health_check
        for t in g.targets:
            if "health_check" in fields:
                # the state machine (and so the health state) stays; the failure detector is new
                t.health.healthy_threshold = hc.healthy_threshold
                t.judge = HealthJudge(t.health, make_detector(hc))
                t.fingerprint = fingerprint(g.name, g.spec, None if t.slot else t.backend.address)
                t.backend.weight = t.effective_weight()  # an agent added or removed changes the scale
                if t.probe_task is not None:
                    self.checks.restart(t)
            if t.slot is not None and g.spec.instances is not None:
                if "instances.restart" in fields:
                    t.slot.lifecycle.policy = restart_policy(g.spec)
                if "instances.stop_timeout" in fields:
                    t.slot.stop_timeout = g.spec.instances.stop_timeout
        if "health_check" in fields:
            g.refresh_balancer()  # the balancer takes the weights

    async def _wait_ready(self, added: list[TargetRuntime], new_groups: list[str], limit: float) -> tuple[str, ...]:
        ctx = self.ctx
        deadline = ctx.now() + limit
        while True:
            r = reconfig.readiness(
                {t.id: t.health.state for t in added},
                {g: len(ctx.groups[g].backends.serving) for g in new_groups if g in ctx.groups},
            )
            if r.ready or ctx.stopping:
                return ()
            if ctx.now() >= deadline:
                return r.waiting
            await asyncio.sleep(0.05)

    async def _rebind(self, index: int, ls: ListenerSpec, sock: socket.socket, tls: TlsServing | None) -> None:
        """Listen on the new address first, then stop accepting on the old one; its open
        connections stay and finish on their own (they follow the new routes)."""
        dp = self.data_plane
        _, old = dp.served[index]
        lst = dp.make_listener(ls, tls)
        await lst.start(ls.host, ls.port, sock=sock)
        dp.served[index] = (ls, lst)
        dp.reroute(old, ls)
        self._retire_listener(old, index)

    def _retire_listener(self, lst: ProxyListener, index: int | None = None) -> None:
        lst.stop_accepting()
        entry = (index, lst)
        self.retiring.append(entry)

        async def forget() -> None:
            if lst.clients:
                lst.no_clients.clear()
                await lst.no_clients.wait()
            await lst.drain(0)  # nothing left to cut: stops its timers
            if entry in self.retiring:
                self.retiring.remove(entry)

        self._spawn(forget(), "retire listener")

    async def _drain_and_remove(self, t: TargetRuntime, why: str) -> None:
        try:
            await self.draining.drain(t, why)
            await self.instances.retire(t)
            self.ctx.emit("reload", t.group.name, t.id, t.health.state.value, "removed", why)
        finally:
            self.removing.discard(t.id)

    async def _remove_group(self, g: GroupRuntime) -> None:
        for t in g.targets:
            self.removing.add(t.id)
        try:
            await asyncio.gather(*(self._drain_and_remove(t, f"reload: target group {g.name} removed")
                                   for t in list(g.targets)))
        finally:
            if self.ctx.groups.get(g.name) is g:
                del self.ctx.groups[g.name]
            self.ctx.emit("reload", g.name, "", "", "removed", "target group removed")


@dataclass(slots=True)
class _Prepared:
    """What step 1 reserved: released again when the reload is rejected."""

    groups: dict[str, BackendGroup] = field(default_factory=dict)  # configured from the new spec
    ports: dict[str, list[int]] = field(default_factory=dict)
    sockets: dict[int, socket.socket] = field(default_factory=dict)
    tls: dict[int, TlsPlan] = field(default_factory=dict)  # kept https/tls listeners: their files read again
    tls_fresh: dict[int, TlsServing] = field(default_factory=dict)  # added or rebound ones: their TLS, built
    tls_changes: list[str] = field(default_factory=list)  # what the TLS reloads changed (the result lists it)

    def close(self) -> None:
        for s in self.sockets.values():
            with contextlib.suppress(OSError):
                s.close()
        self.sockets.clear()

