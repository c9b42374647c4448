"""A chaos run: start ``fivenines up SPEC``, load it, inject the planned faults, restore, stop.

The order of things:

1. ``fivenines up SPEC --ready-file ...`` as a child process in its own session
   (it dies with chaos: ``PR_SET_PDEATHSIG``), its output in ``REPORT/fivenines.log``;
2. wait until it is ready and every target of the loaded group is healthy;
3. the load generator starts; run time 0 is its first request;
4. faults are injected at their planned times (by default one at a time: a
   fault due while the previous one is not yet repaired waits for it);
5. ``/events`` is polled all along (every 200 ms), ``/status`` for targets and workers;
6. at the end, or on Ctrl-C, or on any error: every lasting fault is undone
   (SIGCONT, ``/_recover``), no stopped process is left, fivenines is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fivenines.chaos import ChaosError
from fivenines.chaos.inject import Applied, Guard, Injector
from fivenines.chaos.loadgen import LoadGen
from fivenines.chaos.outcomes import OutcomeLog
from fivenines.chaos.schedule import FaultKind, PlannedFault, exponential_schedule
from fivenines.chaos.timeline import Ev, GroupView, Injected
from fivenines.cli.admin_client import AdminError, aget_json
from fivenines.model.layout import health_detection_time
from fivenines.runtime.supervisor import Process, tail_lines
from fivenines.spec import Spec


@dataclass
class ChaosConfig:
    spec_path: str
    report_dir: Path
    duration: float = 120.0
    rate: float = 500.0
    kinds: tuple[FaultKind, ...] = (FaultKind.KILL, FaultKind.HANG, FaultKind.ERROR)
    mtbf: float = 10.0
    seed: int = 0
    schedule: list[PlannedFault] | None = None  # a fixed schedule instead of random arrivals
    fault_duration: float = 5.0
    slow_ms: int = 1000
    warmup: float = 5.0
    settle: float = 10.0
    timeout: float = 5.0
    max_connections: int | None = None  # None: enough for every request in flight for the whole timeout
    overlap: bool = False
    path: str = "/"
    startup_timeout: float = 30.0

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec_path,
            "duration_s": self.duration,
            "rate": self.rate,
            "faults": [k.value for k in self.kinds],
            "mtbf_s": self.mtbf,
            "seed": self.seed,
            "fixed_schedule": self.schedule is not None,
            "fault_duration_s": self.fault_duration,
            "slow_ms": self.slow_ms,
            "warmup_s": self.warmup,
            "settle_s": self.settle,
            "timeout_s": self.timeout,
            "max_connections": self.max_connections or auto_connections(self.rate, self.timeout),
            "overlap": self.overlap,
            "path": self.path,
        }


def plan(config: ChaosConfig) -> list[PlannedFault]:
    """The faults of this run: the fixed schedule, or random arrivals in ``[warmup, duration - settle)``.
    A ``wipe`` run has one wipe: the first arrival (the middle of the window when none falls in it)."""
    if config.schedule is not None:
        return [f for f in config.schedule if f.at < config.duration]
    end = config.duration - config.settle
    planned = exponential_schedule(mtbf=config.mtbf, start=config.warmup, end=end, kinds=config.kinds,
                                   seed=config.seed, duration=config.fault_duration)
    if config.kinds == (FaultKind.WIPE,):
        return planned[:1] or [PlannedFault((config.warmup + end) / 2, FaultKind.WIPE)]
    return planned


def auto_connections(rate: float, timeout: float) -> int:
    """Client connections allowed at once: every request of a whole timeout in flight (open loop: a
    stalled target must not make later requests queue behind a client-side cap), within half the
    process's file descriptor limit (raised to its hard limit first).

    >>> auto_connections(1.0, 1.0) >= 17
    True
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    except (OSError, ValueError):
        soft = 1024
    room = 1 << 20 if soft == resource.RLIM_INFINITY else max(64, soft // 2 - 64)
    return max(16, min(math.ceil(rate * timeout) + 16, room))


def load_target(spec: Spec) -> tuple[int, str]:
    """Index of the listener the load goes to (the first HTTP one) and its default target group."""
    for i, ls in enumerate(spec.listeners):
        if ls.protocol == "http":
            return i, ls.default_target_group
    raise ChaosError("the spec has no http listener to send load to")


@dataclass
class RunData:
    """Everything a run recorded; :mod:`fivenines.chaos.report` turns it into numbers and plots."""

    config: ChaosConfig
    spec: Spec
    group: str
    listener: str
    log: OutcomeLog
    loadgen: dict[str, Any]
    events: list[Ev]
    faults: list[Injected]
    groups: dict[str, GroupView]
    initial_health: dict[str, str]
    initial_roles: dict[str, str]
    end: float
    planned: list[PlannedFault]
    restore: dict[str, Any] = field(default_factory=dict)
    fivenines_pid: int = 0
    wall_at_start: float = 0.0
    cluster: ClusterTrace | None = None  # a run on a cluster (chaos/cluster_run.py)


@dataclass
class ClusterTrace:
    """What a run on a cluster recorded beside the requests: who held the VIP when, and the node each
    fault hit (run times)."""

    mode: str  # etcd or vrrp
    vip: str
    nodes: list[str]
    changes: list[tuple[float, tuple[str, ...]]]  # who held the VIP, at each change
    two_holders: int = 0  # samples in which two nodes held the VIP at once


class _FaultRecord:
    """A fault while the run goes on (mutable); frozen into :class:`Injected` at the end."""

    def __init__(self, fid: int, planned: PlannedFault, at: float, group: str, target: str) -> None:
        self.id = fid
        self.planned = planned
        self.at = at
        self.group = group
        self.target = target
        self.applied: Applied | None = None
        self.skipped: str | None = None
        self.restored_at: float | None = None
        self.repaired_at: float | None = None
        self.restore_task: asyncio.Task[None] | None = None

    def freeze(self) -> Injected:
        a = self.applied
        return Injected(self.id, self.planned.kind.value, self.at, self.group, self.target,
                        planned_at=round(self.planned.at, 4), restored_at=self.restored_at,
                        pid=a.pid if a else None, detail=a.detail if a else "", skipped=self.skipped,
                        repaired_at=self.repaired_at)


async def start_fivenines(config: ChaosConfig, clock: Callable[[], float],
                          started: Callable[[Process], None]) -> dict[str, Any]:
    """``fivenines up SPEC --ready-file`` as a child (``started`` gets the process at once, so that
    the caller stops it whatever happens next); returns the ready file once it is there."""
    d = config.report_dir
    ready = d / "ready.json"
    ready.unlink(missing_ok=True)
    exited: list[int] = []
    argv = [sys.executable, "-m", "fivenines", "up", config.spec_path, "--ready-file", str(ready)]
    started(Process(argv, env=dict(os.environ), cwd=None, stdout=d / "fivenines.log", stderr=d / "fivenines.log",
                    on_exit=exited.append))
    deadline = clock() + config.startup_timeout
    while not ready.exists():
        if exited:
            tail = "\n".join(tail_lines(d / "fivenines.log", 15))
            raise ChaosError(f"fivenines up {config.spec_path} exited ({exited[0]}) before it was ready:\n{tail}")
        if clock() > deadline:
            raise ChaosError(f"fivenines was not ready within {config.startup_timeout:g}s (see {d / 'fivenines.log'})")
        await asyncio.sleep(0.05)
    info: dict[str, Any] = json.loads(ready.read_text())
    return info


class ChaosRun:
    def __init__(self, config: ChaosConfig, spec: Spec, say: Callable[[str], None] = lambda s: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.spec = spec
        self.say = say
        self.clock = clock
        self.listener_index, self.group = load_target(spec)
        self.proc: Process | None = None
        self.admin = ""
        self.events: list[Ev] = []
        self._raw_events: list[dict[str, Any]] = []
        self._last_seq = 0
        self.status: dict[str, Any] = {}
        self.records: list[_FaultRecord] = []
        self.injector: Injector | None = None
        self.t0 = 0.0
        self.wall_at_start = 0.0

    def now(self) -> float:
        """Run time: seconds since the first request was due."""
        return self.clock() - self.t0

    # ------------------------------------------------------------------ fivenines

    async def _start_fivenines(self) -> dict[str, Any]:
        return await start_fivenines(self.config, self.clock, lambda proc: setattr(self, "proc", proc))

    async def _wait_healthy(self) -> dict[str, Any]:
        deadline = self.clock() + self.config.startup_timeout
        while True:
            st = await self._admin_json("/status")
            g = st["target_groups"][self.group]
            if all(t["state"] == "healthy" for t in g["targets"]) and len(g["serving"]) >= g["active_count"]:
                return dict(st)
            if self.clock() > deadline:
                states = ", ".join(f"{t['id']} {t['state']}" for t in g["targets"])
                raise ChaosError(f"group {self.group} not all healthy within {self.config.startup_timeout:g}s: {states}")
            await asyncio.sleep(0.1)

    # ------------------------------------------------------------------ polling

    async def _admin_json(self, path: str) -> Any:
        """GET the admin API of the fivenines under test; any failure is a ChaosError."""
        try:
            return await aget_json(f"{self.admin}{path}")
        except AdminError as exc:
            raise ChaosError(str(exc)) from exc

    async def _poll_events(self) -> None:
        data = await self._admin_json(f"/events?limit=1000&since={self._last_seq}")
        for e in data.get("events", []):
            seq = int(e.get("seq", 0))
            if seq <= self._last_seq:
                continue
            self._last_seq = seq
            self._raw_events.append(e)
            self.events.append(Ev.from_json(e, self.wall_at_start))

    async def _event_loop(self) -> None:
        while True:
            try:
                await self._poll_events()
            except ChaosError as exc:
                self.say(f"warning: {exc}")
            await asyncio.sleep(0.2)

    async def _fresh_status(self) -> dict[str, Any]:
        self.status = dict(await self._admin_json("/status"))
        return self.status

    # ------------------------------------------------------------------ faults

    def _lasting_active(self) -> bool:
        return any(r.restore_task is not None and not r.restore_task.done() for r in self.records)

    async def _settled(self, deadline: float) -> bool:
        """Wait until the group is whole again: no lasting fault on, every target healthy, a full
        serving set, no target ejected by passive detection."""
        while self.now() < deadline:
            if not self._lasting_active():
                try:
                    st = await self._fresh_status()
                except ChaosError:
                    st = {}
                g = st.get("target_groups", {}).get(self.group)
                workers_ready = all(w.get("ready", True) and w.get("pid") for w in st.get("workers") or [])
                if g and all(t["state"] == "healthy" for t in g["targets"]) and workers_ready \
                        and len(g["serving"]) >= g["active_count"] and not g.get("ejected"):
                    return True
            await asyncio.sleep(0.1)
        return False

    async def _fault_loop(self, planned: list[PlannedFault]) -> None:
        assert self.injector is not None
        window_end = self.config.duration - (0.0 if self.config.schedule is not None else self.config.settle)
        # One at a time: the previous fault first gets a whole detection window to show (a status read
        # right after a kill still shows the target healthy), then the group must be whole again.
        gap = health_detection_time(self.spec.target_groups[self.group].health_check)
        for fid, pf in enumerate(planned, 1):
            delay = pf.at - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            last = next((r for r in reversed(self.records) if r.applied is not None), None)
            if not self.config.overlap and last is not None and last.at + gap > self.now():
                await asyncio.sleep(last.at + gap - self.now())
            if not self.config.overlap and not await self._settled(window_end):
                rec = _FaultRecord(fid, pf, self.now(), self.group, pf.target or "")
                rec.skipped = "the group was not whole again before the end of the fault window"
                self.records.append(rec)
                continue
            await self._inject(fid, pf)

    async def _inject(self, fid: int, pf: PlannedFault) -> None:
        assert self.injector is not None
        try:
            st = await self._fresh_status()
        except ChaosError as exc:
            rec = _FaultRecord(fid, pf, self.now(), self.group, pf.target or "")
            rec.skipped = str(exc)
            self.records.append(rec)
            return
        g = st["target_groups"][self.group]
        pid: object = None
        address: str | None = None
        if pf.kind is FaultKind.LB:
            workers = st.get("workers") or []
            names = [f"worker-{i + 1}" for i in range(len(workers))]
            chosen = pf.choose([n for n, w in zip(names, workers, strict=True) if w.get("pid")])
            if chosen is not None:
                pid = workers[names.index(chosen)].get("pid")
            why = "no data-plane worker to kill (workers: 1)"
        else:
            serving = set(g["serving"])
            candidates = [t["id"] for t in g["targets"] if t["id"] in serving and t.get("pid")]
            chosen = pf.choose(candidates)
            if chosen is not None:
                t = next(t for t in g["targets"] if t["id"] == chosen)
                pid, address = t.get("pid"), t.get("address")
            why = f"target {pf.target} is not serving" if pf.target else "no serving target with a pid"
        rec = _FaultRecord(fid, pf, self.now(), self.group, chosen or (pf.target or ""))
        self.records.append(rec)
        if chosen is None:
            rec.skipped = why
            return
        rec.at = self.now()
        try:
            rec.applied = await self.injector.inject(fid, pf.kind, chosen, pid, address)
        except ChaosError as exc:
            rec.skipped = str(exc)
            self.say(f"  {rec.at:7.2f}s  {pf.kind.value:<5} {chosen}: skipped: {exc}")
            return
        self.say(f"  {rec.at:7.2f}s  {pf.kind.value:<5} {chosen}: {rec.applied.detail}")
        loop = asyncio.get_running_loop()
        if pf.kind.lasts:
            rec.restore_task = loop.create_task(self._restore_later(rec, pf.duration))
        if pf.kind is FaultKind.LB:
            rec.restore_task = loop.create_task(self._watch_worker(rec, pid))

    async def _restore_later(self, rec: _FaultRecord, after: float) -> None:
        assert self.injector is not None
        await asyncio.sleep(after)
        msg = await self.injector.undo(rec.id)
        rec.restored_at = self.now()
        if msg:
            self.say(f"  {rec.restored_at:7.2f}s  restore {rec.target}: {msg}")

    async def _watch_worker(self, rec: _FaultRecord, killed: object) -> None:
        """An ``lb`` fault is repaired when the worker's slot shows a new pid."""
        index = int(rec.target.rsplit("-", 1)[1]) - 1
        deadline = self.now() + 30.0
        while self.now() < deadline:
            await asyncio.sleep(0.1)
            try:
                st = await self._admin_json("/status")
            except ChaosError:
                continue
            workers = st.get("workers") or []
            if index < len(workers) and workers[index].get("pid") not in (None, killed) \
                    and workers[index].get("ready", True):
                rec.repaired_at = self.now()
                return

    # ------------------------------------------------------------------ the run

    async def run(self) -> RunData:
        cfg = self.config
        cfg.report_dir.mkdir(parents=True, exist_ok=True)
        planned = plan(cfg)
        # before fivenines starts, so that it inherits the raised file descriptor limit
        max_connections = cfg.max_connections or auto_connections(cfg.rate, cfg.timeout)
        poller: asyncio.Task[None] | None = None
        restore: dict[str, Any] = {}
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        if me is not None:  # SIGTERM: stop like Ctrl-C (restore, stop fivenines)
            loop.add_signal_handler(signal.SIGTERM, me.cancel)
        try:
            info = await self._start_fivenines()
            assert self.proc is not None
            self.admin = str(info["admin"])
            host, port = str(info["listeners"][self.listener_index]).rsplit(":", 1)
            st = await self._wait_healthy()
            if int(st.get("pid", 0)) != self.proc.pid:
                raise ChaosError(f"the admin API at {self.admin} belongs to pid {st.get('pid')}, not to the "
                                 f"fivenines chaos started ({self.proc.pid}); is another fivenines on that port?")
            self.status = st
            self.injector = Injector(Guard(self.proc.pid), slow_ms=cfg.slow_ms)
            groups, health0, roles0 = status_views(st)
            gen = LoadGen(host, int(port), cfg.rate, cfg.duration, path=cfg.path, timeout=cfg.timeout,
                          max_connections=max_connections, clock=self.clock)
            self.t0 = self.clock() + 0.1
            self.wall_at_start = time.time() + (self.t0 - self.clock())
            await self._poll_events()  # everything before the run
            self.events.clear()
            poller = asyncio.get_running_loop().create_task(self._event_loop())
            self.say(f"load: {cfg.rate:g} requests/s to http://{host}:{port}{cfg.path} for {cfg.duration:g}s; "
                     f"{len(planned)} fault(s) planned")
            faults = asyncio.get_running_loop().create_task(self._fault_loop(planned))
            try:
                log = await gen.run(self.t0)
            finally:
                faults.cancel()
                await asyncio.gather(faults, return_exceptions=True)
            end = self.now()
            seen = {r.id for r in self.records}
            for fid, pf in enumerate(planned, 1):  # due too late, or still waiting for the group
                if fid not in seen:
                    rec = _FaultRecord(fid, pf, min(pf.at, end), self.group, pf.target or "")
                    rec.skipped = ("the run ended while it waited for the group to be whole again" if pf.at < end
                                   else "due after the end of the run")
                    self.records.append(rec)
            self.records.sort(key=lambda r: r.id)
            restore["undone"] = await self.injector.restore_all()
            for r in self.records:
                if r.restore_task is not None and not r.restore_task.done():
                    r.restore_task.cancel()
                    if r.restored_at is None and r.planned.kind.lasts:
                        r.restored_at = end
            await asyncio.sleep(0.3)
            await self._poll_events()
            st = await self._fresh_status()
            pids = [t["pid"] for g in st["target_groups"].values() for t in g["targets"] if t.get("pid")]
            restore["stopped_left"] = self.injector.stopped_left(pids)
            restore["pending_undo"] = sorted(self.injector.pending)
            return RunData(cfg, self.spec, self.group, f"{host}:{port}", log, gen.stats(), list(self.events),
                           [r.freeze() for r in self.records], groups, health0, roles0, end, planned,
                           restore, self.proc.pid, self.wall_at_start)
        finally:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signal.SIGTERM)
            if poller is not None:
                poller.cancel()
            if self.injector is not None and self.injector.pending:
                for msg in await self.injector.restore_all():
                    self.say(f"restore on exit: {msg}")
            for r in self.records:
                if r.restore_task is not None:
                    r.restore_task.cancel()
            if self.proc is not None:
                await self.proc.stop(20.0)


def status_views(st: dict[str, Any]) -> tuple[dict[str, GroupView], dict[str, str], dict[str, str]]:
    groups: dict[str, GroupView] = {}
    health: dict[str, str] = {}
    roles: dict[str, str] = {}
    for name, g in st["target_groups"].items():
        groups[name] = GroupView(name, int(g.get("active_count", 0)), int(g.get("standby_count", 0)),
                                 tuple(g.get("serving", [])))
        for t in g["targets"]:
            health[t["id"]] = t["state"]
            roles[t["id"]] = t.get("role", "")
    return groups, health, roles
