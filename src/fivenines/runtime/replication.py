"""Runs one ``replicated:`` target group: feeds :mod:`fivenines.core.replication`, carries out its actions.

Wiring into the runtime (a few hooks, through :class:`~fivenines.runtime.targets.Replicated`):

* the heartbeat of a replicated target is :meth:`ReplicationManager.check`: the
  store's own report of role and position (Redis: ``INFO replication``), which
  also feeds the ELB health machine;
* after any health change the reconciler calls :meth:`ReplicationManager.reconcile`
  instead of the N+M pool policy; the serving set of the group is the primary alone;
* a (re)started instance gets its replication options from :meth:`start_args`:
  it starts as a replica of the current primary, so an old primary restarted by
  the supervisor can never come back as a second primary.

Actions run in the order the core returned them: routing changes (publish, cut)
at once, store commands (collect positions, promote, pause, resume) one after
the other on a worker task, ``follow`` commands concurrently per target.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from fivenines.core.health import CheckResult, Reason
from fivenines.core.pool import LOST_STATES, Role
from fivenines.core.replication import (
    NOWHERE,
    Action,
    Collect,
    Cut,
    Durability,
    Emit,
    Follow,
    Observation,
    PauseWrites,
    Phase,
    Promote,
    Publish,
    Replication,
    ReplicationError,
    ResumeWrites,
    Settings,
    min_replicas_max_lag,
)
from fivenines.errors import FivenineError
from fivenines.proxy.backend import Backend, BackendGroup
from fivenines.proxy.tcp import TcpListener
from fivenines.runtime.context import RuntimeContext
from fivenines.runtime.dataplane import DataPlane
from fivenines.runtime.lease import Etcd, LeaderLease, LeaseLost, PrimaryRecord, node_name
from fivenines.runtime.redis import PARKED_AT, RedisStore
from fivenines.runtime.store import (
    CommandStore,
    Store,
    StoreError,
    StoreTarget,
    StoreTimeout,
    StoreUnreachable,
)
from fivenines.runtime.targets import GroupRuntime, TargetRuntime


class BackupHooks(Protocol):
    """What a replicated group asks of its backups (runtime/backup.py's BackupManager, attached by
    the controller: the backups depend on the group, not the other way round)."""

    def start(self) -> None: ...
    async def close(self) -> None: ...
    def start_args(self) -> list[str]: ...
    def status(self) -> dict[str, Any]: ...

log = logging.getLogger("fivenines.replication")

ASYNC_WARNING = "async: a failover may lose the last writes acknowledged before the primary was lost"


def _resolve(host: str) -> str:
    """The address servers report for ``host`` (replicas name their primary by IP)."""
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host


class LeaseGuardedGroup(BackendGroup):
    """A write group that hands out no target once the lease deadline has passed.

    The deadline timer steps the node down, but after the process was stopped
    (SIGSTOP, a long pause) the event loop may run an accept callback before that
    timer: this check, made on every pick, closes that gap."""

    __slots__ = ("may_route",)
    may_route: Callable[[], bool]

    def pick(self, exclude: Any = (), key: Any = None, sticky: Any = None) -> Backend | None:
        if not self.may_route():
            return None
        return super().pick(exclude, key, sticky)


class ReplicationManager:
    """The replicated-store side of one target group."""

    def __init__(self, ctx: RuntimeContext, g: GroupRuntime, data_plane: DataPlane) -> None:
        rep = g.spec.replicated
        assert rep is not None
        self.ctx, self.g, self.spec = ctx, g, rep
        self.data_plane = data_plane
        hc = g.spec.health_check
        self.timeout = hc.timeout
        self.command_timeout = max(1.0, 4 * hc.timeout)
        self.durability = Durability(rep.durability)
        self.max_lag_seconds = min_replicas_max_lag(hc.interval, hc.unhealthy_threshold, hc.timeout)
        self.store: Store
        if rep.kind == "redis":
            self.store = RedisStore(self.durability, self.max_lag_seconds)
        else:
            assert rep.custom is not None
            self.store = CommandStore(rep.custom, cwd=str(ctx.base_dir))
            self.command_timeout = rep.custom.command_timeout
        self.targets: dict[str, StoreTarget] = {
            t.id: StoreTarget(t.id, _resolve(t.backend.host), t.backend.port) for t in g.targets
        }
        settings = Settings(
            durability=self.durability,
            max_lag=rep.max_lag_on_failover,
            read_max_lag=rep.read_listener.max_lag if rep.read_listener else None,
            retry_interval=hc.interval,
            switchover_timeout=10.0,
            leased=rep.lease is not None,
        )
        designated = g.targets[0].id if g.spec.instances is not None else None
        self.core = Replication([(i, st.address) for i, st in self.targets.items()], settings,
                                designated=designated)
        self.readers = BackendGroup(f"{g.name}-read", clock=ctx.now)
        self.read_listeners: list[tuple[Any, TcpListener]] = []
        for t in g.targets:
            self.readers.add(Backend(t.id, t.backend.host, t.backend.port))
            if t.slot is not None:
                t.slot.extra_args = lambda t=t: self.start_args(t)
        self.observations: dict[str, tuple[Observation | None, float]] = {}
        self.cut_off_until: dict[str, float] = {}
        self.failovers = 0
        self._lost: dict[str, bool] = {t.id: False for t in g.targets}
        self._queue: deque[Action] = deque()
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()  # set after every input: for waiters on an outcome
        self._tasks: list[asyncio.Task[None]] = []
        self._follows: dict[str, asyncio.Task[None]] = {}
        self._deadline: asyncio.TimerHandle | None = None
        self.lease: LeaderLease | None = None
        self.backup: BackupHooks | None = None  # attached by the controller when rep.backup is set
        if rep.lease is not None:
            guarded = cast(LeaseGuardedGroup, LeaseGuardedGroup.from_spec(g.name, g.spec, clock=ctx.now))
            guarded.may_route = lambda: self.core.can_act(self.ctx.now())
            for t in g.targets:
                guarded.add(t.backend)
            g.backends = guarded
            prefix = f"{rep.lease.prefix.rstrip('/')}/{ctx.spec.name}/{g.name}"
            self.lease = LeaderLease(Etcd(rep.lease.etcd, timeout=max(0.5, rep.lease.ttl / 6)), prefix,
                                     rep.lease.ttl, node_name(), ctx.now, on_acquired=self._on_acquired,
                                     on_renewed=self._on_renewed, on_lost=self._on_lease_lost)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the worker, the ticks, the lease and the read listener (OSError: its port is taken)."""
        rl = self.spec.read_listener
        if rl is not None:
            lst = TcpListener(lambda: self.readers, rl.port)
            await lst.start(rl.host, rl.port)
            self.read_listeners.append((rl, lst))
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._work(), name=f"replication {self.g.name}"))
        self._tasks.append(loop.create_task(self._ticks(), name=f"replication ticks {self.g.name}"))
        if self.lease is not None:
            self.lease.start()
        if self.backup is not None:
            self.backup.start()

    async def close(self) -> None:
        if self.backup is not None:
            await self.backup.close()
        await asyncio.gather(*(lst.drain(1.0) for _, lst in self.read_listeners))
        for task in [*self._tasks, *self._follows.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._follows.values(), return_exceptions=True)
        if self._deadline is not None:
            self._deadline.cancel()
        if self.lease is not None:
            await self.lease.stop()
        await self.store.close()

    def start_args(self, t: TargetRuntime) -> list[str]:
        """Replication options of a (re)starting instance: a replica of the primary, if there is one.

        A custom store gets none (its command decides), but the core still learns of the restart."""
        follow = self.core.follow_for_start(t.id)
        if not isinstance(self.store, RedisStore):
            return []
        primary = None
        if follow == NOWHERE:
            primary = ("127.0.0.1", 0)  # a replica of no one: read-only, and replicas cannot sync from it
        elif follow is not None:
            host, _, port = follow.rpartition(":")
            primary = (host, int(port))
        self.store.drop(self.targets[t.id])
        extra = self.backup.start_args() if self.backup is not None else []
        return self.store.start_args(self.ctx.state_dir / "data" / t.id, primary) + extra

    # ------------------------------------------------------------------ inputs from the controller

    async def check(self, t: TargetRuntime) -> CheckResult:
        """One heartbeat: the store's report of role and position."""
        st = self.targets[t.id]
        start = time.perf_counter()
        asked = self.ctx.now()
        obs: Observation | None = None
        if self._is_cut_off(t.id):
            await asyncio.sleep(self.timeout)
            result = CheckResult.failed(Reason.TIMEOUT, "cut off (fault injection)", time.perf_counter() - start)
        else:
            try:
                obs = await self.store.observe(st, self.timeout)
            except StoreTimeout as exc:
                result = CheckResult.failed(Reason.TIMEOUT, str(exc), time.perf_counter() - start)
            except StoreError as exc:
                result = CheckResult.failed(Reason.FAILED_HEALTH_CHECKS, str(exc), time.perf_counter() - start)
            else:
                detail = f"{obs.role.value} at {obs.position}"
                if obs.following == PARKED_AT:
                    detail += ", parked (detached by a failover, data kept: waits to follow the new primary)"
                elif obs.following:
                    detail += f" of {obs.following} (link {'up' if obs.link_up else 'down'})"
                result = CheckResult.passed(detail, time.perf_counter() - start)
        if self.ctx.stopping:
            return result
        now = self.ctx.now()
        self.observations[t.id] = (obs, now)
        self._feed(self.core.observed(t.id, obs, now, asked))
        return result

    def reconcile(self) -> list[str]:
        """Feed health changes to the core (the controller calls this after each one)."""
        now = self.ctx.now()
        for t in self.g.targets:
            lost = t.health.state in LOST_STATES
            if lost != self._lost[t.id]:
                self._lost[t.id] = lost
                h = t.health
                why = f"{h.reason.value if h.reason else h.state.value}{': ' + h.detail if h.detail else ''}"
                self._feed(self.core.health(t.id, lost, why, now))
        return []

    async def switchover(self, to: str | None, timeout: float = 15.0) -> dict[str, Any]:
        """Planned change of primary; returns once it is done (or raises ReplicationError)."""
        now = self.ctx.now()
        old = self.core.primary
        acts = self.core.request_switchover(to, now)
        self._feed(acts)
        target = self.core.switch.target if self.core.switch else to
        started = time.perf_counter()

        def settled() -> bool:
            if self.core.switch is not None or self.core.phase is Phase.PROMOTING:
                return False
            return self.core.primary != target or self.core.published.primary == target

        try:
            async with asyncio.timeout(timeout):
                while not settled():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pass
        if self.core.primary != target or self.core.published.primary != target:
            raise ReplicationError(f"switchover to {target} did not complete: "
                                   f"{self.core.phase.value}, primary {self.core.primary}")
        return {"group": self.g.name, "old": old, "new": target, "epoch": self.core.epoch,
                "seconds": round(time.perf_counter() - started, 3)}

    def begin_restore(self) -> None:
        """Fence writes for a restore (:mod:`fivenines.runtime.backup`): no routing, no failover
        until :meth:`end_restore`. Raises ReplicationError when the group cannot be restored now."""
        self._feed(self.core.begin_restore(self.ctx.now()))

    def end_restore(self, ok: bool, position: int, detail: str, primary_intact: bool = True) -> None:
        self._feed(self.core.end_restore(ok, position, detail, self.ctx.now(), primary_intact=primary_intact))

    def cut_off(self, target_id: str, seconds: float) -> None:
        """Fault injection: every connection fivenines has to the target fails for ``seconds``."""
        if target_id not in self.targets:
            raise ReplicationError(f"no target {target_id!r} in {self.g.name}")
        self.cut_off_until[target_id] = self.ctx.now() + seconds
        self.store.drop(self.targets[target_id])
        # new proxied connections fail too: the data plane is pointed at a closed port meanwhile
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        b = self.g.backends.backends[target_id]
        host, port = b.host, b.port
        b.move_to("127.0.0.1", closed)
        self._notify_move(b)
        self._cut_connections(target_id)

        def heal() -> None:
            if (b.host, b.port) == ("127.0.0.1", closed):  # not moved since (a restart moves it itself)
                b.move_to(host, port)
                self._notify_move(b)
            self._event("chaos", target_id, "cut off", "", "connections possible again")

        asyncio.get_running_loop().call_later(seconds, heal)
        self._event("chaos", target_id, "", "cut off", f"every fivenines connection fails for {seconds:g}s")

    def _notify_move(self, b: Backend) -> None:
        self.g.backends.notify("move", b)

    def _is_cut_off(self, target_id: str) -> bool:
        until = self.cut_off_until.get(target_id)
        if until is None:
            return False
        if self.ctx.now() >= until:
            del self.cut_off_until[target_id]
            return False
        return True

    # ------------------------------------------------------------------ lease callbacks

    def _on_acquired(self, until: float, record: PrimaryRecord | None) -> None:
        rec = (record.target, record.epoch) if record is not None else None
        self._feed(self.core.acquired(until, rec, self.ctx.now()))
        self._arm_deadline(until)

    def _on_renewed(self, until: float) -> None:
        self._feed(self.core.renewed(until, self.ctx.now()))
        self._arm_deadline(self.core.leader_until)

    def _on_lease_lost(self, why: str) -> None:
        self._feed(self.core.lease_lost(why, self.ctx.now()))

    def _arm_deadline(self, until: float) -> None:
        """Step down exactly at the deadline, not at the next tick."""
        if self._deadline is not None:
            self._deadline.cancel()
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_at(until, lambda: self._feed(self.core.tick(self.ctx.now())))

    # ------------------------------------------------------------------ carrying out actions

    def _feed(self, acts: Sequence[Action]) -> None:
        self._changed.set()
        if self.lease is not None and self.lease.leader and self.core.phase is Phase.FOLLOWER:
            self.lease.step_down()  # the core stepped down at the deadline: so does the lease
        for a in acts:
            if isinstance(a, Publish):
                self._publish(a)
            elif isinstance(a, Cut):
                self._cut_connections(a.target)
            elif isinstance(a, Emit):
                self._event(a.kind, a.target, a.old, a.new, a.reason)
            elif isinstance(a, Follow):
                self._start_follow(a)
            else:
                self._queue.append(a)
                self._wake.set()

    def _publish(self, a: Publish) -> None:
        now = self.ctx.now()
        g = self.g
        before = [b.id for b in g.backends.serving]
        ids = [a.primary] if a.primary else []
        g.backends.set_serving(ids)
        self.readers.set_serving(a.readers)
        for t in g.targets:
            role = Role.ACTIVE if t.id == self.core.primary else Role.STANDBY
            if role is not t.role:
                t.role, t.role_since = role, now
        if ids != before:
            self.ctx.emit("serving", g.name, "", ",".join(before), ",".join(ids),
                          f"writes go to {a.primary}" if a.primary else "no primary: writes refused")
            if a.primary is None:
                log.warning("%s: no primary to route writes to", g.name)

    def _cut_connections(self, target_id: str) -> None:
        """Close the client connections fivenines routed to the target (in every worker too)."""
        writer = self.g.backends.backends.get(target_id)
        reader = self.readers.backends.get(target_id)
        if writer is not None:
            writer.close_idle()
            self.data_plane.cut(self.g.name, writer)
        if reader is not None:
            reader.close_idle()
            for _, lst in self.read_listeners:
                lst.cut(reader)

    def _event(self, kind: str, target: str, old: str, new: str, reason: str) -> None:
        if kind == "failover" and new and new not in ("lost", "no primary"):
            self.failovers += 1
        ev = self.ctx.emit(kind, self.g.name, target, old, new, reason)
        log.info("%s", ev)

    def _start_follow(self, a: Follow) -> None:
        prev = self._follows.get(a.target)
        self._follows[a.target] = asyncio.get_running_loop().create_task(self._follow(a, prev))

    async def _follow(self, a: Follow, prev: asyncio.Task[None] | None) -> None:
        if prev is not None and not prev.done():
            await asyncio.gather(prev, return_exceptions=True)
        ok, detail = True, ""
        if not self.core.can_act(self.ctx.now()):
            ok, detail = False, "no longer holds the lease"
        elif self._is_cut_off(a.target):
            await asyncio.sleep(self.timeout)
            ok, detail = False, "cut off"
        else:
            try:
                await self.store.follow(self.targets[a.target], self.targets[a.primary], self.command_timeout)
            except StoreError as exc:
                ok, detail = False, str(exc)
        if self.ctx.stopping:
            return
        if ok:
            log.info("%s/%s now follows %s (%s)", self.g.name, a.target, a.primary, a.reason)
        self._feed(self.core.followed(a.target, ok, detail, self.ctx.now()))

    async def _ticks(self) -> None:
        period = min(0.25, max(0.02, self.g.spec.health_check.interval / 4))
        while True:
            await asyncio.sleep(period)
            try:
                self._feed(self.core.tick(self.ctx.now()))
            except Exception:  # the ticks drive retries: one failure must not end them
                log.exception("%s: tick failed", self.g.name)

    async def _work(self) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            a = self._queue.popleft()
            try:
                await self._do(a)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the group managed whatever one action did
                log.exception("%s: %r failed", self.g.name, a)
                self._unstick(a, exc)

    def _unstick(self, a: Action, exc: Exception) -> None:
        """An action failed in a way the adapter did not foresee. The core waits for the outcome
        of a Collect or a Promote (its phase stays ELECTING or PROMOTING until then): tell it the
        round failed, so that it retries rather than waiting for ever with no primary."""
        now = self.ctx.now()
        if isinstance(a, Collect):
            self._feed(self.core.positions(a.round, dict.fromkeys(a.targets), now))
        elif isinstance(a, Promote):
            self._feed(self.core.promoted(a.round, a.target, False, f"unexpected error: {exc!r}", now))

    async def _observe(self, tid: str, park: bool = False) -> Observation | None:
        """``tid``'s role and position now (None: no answer); ``park``: detached first (Collect)."""
        if self._is_cut_off(tid):
            await asyncio.sleep(self.timeout)
            return None
        try:
            if park:
                await self.store.park(self.targets[tid], self.timeout)
            return await self.store.observe(self.targets[tid], self.timeout)
        except StoreError:
            return None

    async def _do(self, a: Action) -> None:
        if isinstance(a, Collect):
            if a.delay:
                await asyncio.sleep(a.delay)
            results = await asyncio.gather(*(self._observe(tid, tid in a.park) for tid in a.targets))
            now = self.ctx.now()
            for tid, obs in zip(a.targets, results, strict=True):
                self.observations[tid] = (obs, now)
            self._feed(self.core.positions(a.round, dict(zip(a.targets, results, strict=True)), now))
        elif isinstance(a, Promote):
            ok, detail = True, ""
            try:
                if not self.core.can_act(self.ctx.now()):
                    raise LeaseLost("lease deadline passed")
                if self.lease is not None:
                    await self.lease.record_primary(a.target, a.epoch)
                if not a.already_primary:
                    if self._is_cut_off(a.target):
                        raise StoreUnreachable("cut off")
                    await self.store.promote(self.targets[a.target], self.command_timeout)
            except (StoreError, LeaseLost, FivenineError) as exc:
                ok, detail = False, str(exc)
            self._feed(self.core.promoted(a.round, a.target, ok, detail, self.ctx.now()))
        elif isinstance(a, PauseWrites):
            try:
                await self.store.pause_writes(self.targets[a.target], a.seconds, self.timeout)
            except StoreError as exc:
                self._event("switchover", a.target, "", "", f"could not pause writes: {exc} (routing is stopped)")
        elif isinstance(a, ResumeWrites):
            pending = self._follows.get(a.target)
            if pending is not None and not pending.done():
                await asyncio.gather(pending, return_exceptions=True)
            try:
                await self.store.resume_writes(self.targets[a.target], self.timeout)
            except StoreError as exc:
                log.warning("%s/%s: could not resume writes: %s", self.g.name, a.target, exc)

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        self._feed(self.core.tick(self.ctx.now()))  # a lapsed lease shows (and applies) at once
        snap = self.core.snapshot()
        snap.pop("leader_until", None)
        out: dict[str, Any] = {
            "kind": self.spec.kind,
            "durability": self.durability.value,
            "durability_note": ASYNC_WARNING if self.durability is Durability.ASYNC else
            "sync: a write is acknowledged once a replica has it (clients confirm with WAIT); "
            "with no replica attached, writes are refused",
            "max_lag_on_failover": self.spec.max_lag_on_failover,
            "failovers": self.failovers,
            **snap,
        }
        if self.lease is not None:
            out["lease"] = self.lease.status()
        if self.read_listeners:
            host, port = self.read_listeners[0][1].address
            out["read_listener"] = {"address": f"{host}:{port}", "max_lag": self.spec.read_listener.max_lag
                                    if self.spec.read_listener else None,
                                    "connections_open": len(self.read_listeners[0][1].clients)}
        if self.backup is not None:
            out["backup"] = self.backup.status()
        if self.cut_off_until:
            now = self.ctx.now()
            out["cut_off"] = {k: round(v - now, 3) for k, v in self.cut_off_until.items() if v > now}
        return out

    def target_status(self, target_id: str) -> dict[str, Any]:
        obs, at = self.observations.get(target_id, (None, 0.0))
        m = self.core.members[target_id]
        role = "primary" if target_id == self.core.primary else "replica"
        out: dict[str, Any] = {"role": role, "reported_role": None, "position": None, "following": None,
                               "link_up": None, "lag": None, "parked": False, "pending": m.pending,
                               "observed_s_ago": round(self.ctx.now() - at, 3) if at else None}
        if obs is not None:
            top = self.core.known_position
            out.update(reported_role=obs.role.value, position=obs.position, following=obs.following,
                       link_up=obs.link_up if obs.following else None, lag=max(0, top - obs.position),
                       parked=obs.following == PARKED_AT)
        return out

    def __repr__(self) -> str:
        return f"<ReplicationManager {self.g.name} {self.core!r}>"

