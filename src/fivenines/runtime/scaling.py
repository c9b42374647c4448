"""The scaler of one target group: samples its counters, decides every evaluation interval, acts. Thin.

Decisions are :func:`fivenines.core.scaling.decide` and
:func:`~fivenines.core.scaling.pick_for_scale_in`; rates come from
:class:`fivenines.core.rates.RateWindow`. This module only

* **samples** (:meth:`GroupScaler.sample`, about every second): for each *warm*
  active member -- healthy, serving, past slow start -- its data-plane counters
  (requests, in flight, the latency histogram of
  :class:`~fivenines.proxy.backend.Backend`) and the CPU seconds of its process
  (``/proc/PID/stat``). A member that is not warm is forgotten, so its history
  starts again when it is: warm-up never enters a metric. When the set of warm
  members changes, every member's history starts again (the load is split
  another way from then on);
* **evaluates** (:meth:`GroupScaler.evaluate`, every ``evaluation_interval``):
  rates over ``scale_out_window``, the decision, then one of the two callbacks
  it was given: ``scale_out(n)`` (start ``n`` more actives) or
  ``scale_in(ids)`` (drain those, then stop them). The callbacks belong to the
  controller; once one returns, ``current()`` must count the change.

Time, the members and the CPU reader are injected, so tests drive it with fake
callbacks and real inputs, no clock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fivenines.core.balance import ramp
from fivenines.core.health import HealthState
from fivenines.core.pool import Role
from fivenines.core.rates import Counters, RateWindow
from fivenines.core.scaling import (
    Candidate,
    Decision,
    Metric,
    Policy,
    Rules,
    Sample,
    ScalingState,
    decide,
    group_value,
    pick_for_scale_in,
)
from fivenines.proxy.backend import LATENCY_BUCKETS
from fivenines.spec import ScalingSpec

if TYPE_CHECKING:
    from fivenines.runtime.targets import GroupRuntime

log = logging.getLogger("fivenines")

SAMPLE_INTERVAL = 1.0
"""Seconds between two samples of the counters (a window of 6 s holds 6 of them)."""


def rules_from_spec(group: str, sc: ScalingSpec) -> Rules:
    """The decision's parameters from a validated ``scaling:`` section."""
    policies = []
    for p in sc.policies:
        given = p.metric()
        assert given is not None, "spec validation lets exactly one metric per policy through"
        policies.append(Policy(Metric(given[0]), float(given[1])))
    return Rules(group, sc.min, sc.max, tuple(policies), sc.tolerance, sc.scale_in_stabilization, sc.max_step)


@dataclass(frozen=True, slots=True)
class Member:
    """One active instance of the group, as the scaler sees it at one moment."""

    id: str
    warm: bool  # healthy, serving new requests, past slow start
    started: float  # when its instance (or its role as an active) started, on the scaler's clock
    requests: int = 0
    in_flight: int = 0
    latency: tuple[int, ...] = ()  # per-bucket counts of the latency histogram
    pid: int | None = None


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def read_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system, with reaped children) of process ``pid``; None if unreadable.

    >>> (read_cpu_seconds(os.getpid()) or 0.0) > 0, read_cpu_seconds(0)
    (True, None)
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = raw[raw.rfind(b")") + 2:].split()
    try:
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    except (ValueError, IndexError):
        return None
    return (utime + stime + cutime + cstime) / _CLK_TCK


def members_of(g: GroupRuntime, now: float) -> list[Member]:
    """The actives of a controller's group as :class:`Member` records (read only)."""
    serving = {b.id for b in g.backends.serving}
    bal = g.backends.balancer
    out = []
    for t in g.targets:
        if t.role is not Role.ACTIVE:
            continue
        joined = bal.joined.get(t.id)
        past_slow_start = joined is None or ramp(joined, bal.slow_start, now) >= 1.0
        warm = t.health.state is HealthState.HEALTHY and t.id in serving and past_slow_start
        slot = t.slot
        started = slot.lifecycle.started_at if slot is not None and slot.lifecycle.started_at is not None else t.role_since
        b = t.backend
        out.append(Member(t.id, warm, started, b.requests, b.in_flight, tuple(b.latency_counts),
                          slot.lifecycle.pid if slot is not None else None))
    return out


class GroupScaler:
    """Scales one target group: samples, decides, calls ``scale_out(n)`` or ``scale_in(ids)``."""

    def __init__(
        self,
        group: str,
        spec: ScalingSpec,
        *,
        members: Callable[[float], Sequence[Member]],
        current: Callable[[], int],
        scale_out: Callable[[int], None],
        scale_in: Callable[[Sequence[str]], None],
        on_decision: Callable[[Decision], None] | None = None,
        paused: Callable[[], str] = lambda: "",
        cpu_seconds: Callable[[int], float | None] = read_cpu_seconds,
        bounds: Sequence[float] = LATENCY_BUCKETS,
        sample_interval: float = SAMPLE_INTERVAL,
    ) -> None:
        self.group = group
        self.spec = spec
        self.rules = rules_from_spec(group, spec)
        self.members = members
        self.current = current
        self.scale_out = scale_out
        self.scale_in = scale_in
        self.on_decision = on_decision
        self.paused = paused
        self.cpu_seconds = cpu_seconds
        self.sample_interval = min(sample_interval, spec.evaluation_interval)
        self.window = RateWindow(spec.scale_out_window, bounds)
        self.state = ScalingState()
        self.manual: int | None = None
        self.last: Decision | None = None
        self.last_samples: list[Sample] = []
        self.evaluated_at: float | None = None
        self.held = ""  # why the last due evaluation did not run (paused), if it did not
        self._warm: frozenset[str] = frozenset()  # the warm members at the last sample
        self.next_sample: float | None = None
        self.next_eval: float | None = None

    def __repr__(self) -> str:
        last = f" {self.last.reason!r}" if self.last else ""
        manual = f" manual={self.manual}" if self.manual is not None else ""
        return f"<GroupScaler {self.group} {self.rules.min}..{self.rules.max} current={self.current()}{manual}{last}>"

    # ------------------------------------------------------------------ the two steps

    def sample(self, now: float) -> None:
        """Record the counters of every warm member; forget the others.

        When the set of warm members changes (one joins, leaves or fails), every member's
        history starts again here: the load is split another way from now on, and the older
        samples describe the old split (a group that just grew would otherwise look as busy
        as before for a whole window, its old members' past counted, and grow again)."""
        members = self.members(now)
        warm = frozenset(m.id for m in members if m.warm)
        if warm != self._warm:
            self._warm = warm
            self.window.keep_only(())
        for m in members:
            if not m.warm:
                self.window.forget(m.id)
                continue
            cpu = self.cpu_seconds(m.pid) if m.pid is not None else None
            self.window.observe(m.id, Counters(now, m.requests, m.in_flight, m.latency, cpu))
        self.window.keep_only(m.id for m in members)

    def samples(self, now: float, members: Sequence[Member] | None = None) -> list[Sample]:
        """Each active member's rates over the window (a member without two samples yet is not warm)."""
        rates = self.window.rates(now)
        out = []
        for m in self.members(now) if members is None else members:
            r = rates.get(m.id)
            if r is None or not m.warm:
                out.append(Sample(m.id, False))
            else:
                out.append(Sample(m.id, True, r.requests_per_s, r.in_flight, r.p99_latency, r.cpu_percent))
        return out

    def evaluate(self, now: float) -> Decision:
        """Decide, and carry the decision out through the callbacks."""
        members = self.members(now)
        samples = self.samples(now, members)
        current = self.current()
        if self.evaluated_at is None and self.manual is None:
            self.state = ScalingState.started(now, current)
        d = decide(self.rules, self.state, now, current, samples, self.manual)
        self.state, self.last, self.last_samples, self.evaluated_at = d.state, d, samples, now
        if d.desired > current:
            self.scale_out(d.desired - current)
        elif d.desired < current:
            candidates = [Candidate(m.id, m.started, m.warm, m.in_flight) for m in members]
            victims = pick_for_scale_in(candidates, current - d.desired)
            for v in victims:
                self.window.forget(v)
            self.scale_in(victims)
        if self.on_decision is not None:
            self.on_decision(d)
        return d

    def set_manual(self, count: int | None) -> int | None:
        """An operator's override (``fivenines scale GROUP N``), within min..max; None clears it.

        Returns the count that will be used (bounded), or None."""
        if count is None:
            self.manual = None
            return None
        if count < 1:
            raise ValueError(f"a count must be at least 1, got {count}")
        self.manual = self.rules.bound(count)
        return self.manual

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """current/desired/min/max, the manual override, each policy's metric and the last reason."""
        d = self.last
        metrics = []
        for p in self.rules.policies:
            value, warm = group_value(p.metric, self.last_samples)
            metrics.append({"metric": p.metric.value, "target": p.target, "value": value, "warm": warm})
        return {
            "current": self.current(),
            "desired": d.desired if d is not None else self.current(),
            "min": self.rules.min,
            "max": self.rules.max,
            "manual": self.manual,
            "metrics": metrics,
            "reason": d.reason if d is not None else "not evaluated yet",
            "paused": self.held or None,
            "evaluation_interval_s": self.spec.evaluation_interval,
            "scale_in_stabilization_s": self.spec.scale_in_stabilization,
        }

    # ------------------------------------------------------------------ the loop

    def tick(self, now: float) -> Decision | None:
        """One pass: sample when a sample is due, evaluate when an evaluation is due (the first one
        ``evaluation_interval`` after the first pass). An evaluation that ``paused()`` gives a
        reason against is skipped (:attr:`held`). Returns the decision, if one was taken."""
        if self.next_eval is None:
            self.next_eval = now + self.spec.evaluation_interval
        if self.next_sample is None or now >= self.next_sample:
            self.next_sample = now + self.sample_interval
            self.sample(now)
        if now < self.next_eval:
            return None
        self.next_eval = now + self.spec.evaluation_interval
        self.held = self.paused()
        if self.held:
            return None
        return self.evaluate(now)

    async def run(self, clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Sample every ``sample_interval`` and evaluate every ``evaluation_interval``, until cancelled.
        An exception in one pass is logged; the next pass runs as usual."""
        while True:
            try:
                self.tick(clock())
            except Exception:  # a bug here must not stop scaling (or the controller) for good
                log.exception("scaling %s: pass failed", self.group)
            await sleep(self.sample_interval)
