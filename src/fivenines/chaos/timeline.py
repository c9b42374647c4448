"""fivenines' events as a timeline, and what each injected fault cost. Pure: times are arguments.

All times are *run times*: seconds after the load started, on the chaos
process's clock (events carry wall-clock times; :meth:`Ev.from_json` converts).

For a fault injected at ``t`` into target X of group G (the group's serving set
comes from fivenines' ``serving`` events):

* **detection time**: from ``t`` until X left G's serving set (the load balancer
  stopped sending it requests), whether by a failed health check, an exit or a
  passive ejection. None when it never left (e.g. a slow target that still
  passed its checks), or was not serving when hit.
* **failover time**: from ``t`` until G served at full strength again without X
  (``active_count`` members: a standby was promoted). None without a standby.
* **repair time**: from ``t`` until X was healthy again after having been
  unhealthy (after an ejection without a failed check: until it served again).
  This is the MTTR the model takes.
* **failed requests**: requests that failed from ``t`` until the next fault (or
  the end of the run). A fault that cost none is *covered*.

>>> evs = [Ev(10.02, "instance", "web", "web-1", "running", "backoff", "exit"),
...        Ev(10.02, "health", "web", "web-1", "healthy", "unhealthy", "exited"),
...        Ev(10.02, "serving", "web", "", "web-1,web-2", "web-2,web-3", ""),
...        Ev(11.50, "health", "web", "web-1", "unhealthy", "initial", "registered"),
...        Ev(13.60, "health", "web", "web-1", "initial", "healthy", "passed")]
>>> g = GroupView("web", active_count=2, standby_count=1, serving0=("web-1", "web-2"))
>>> f = Injected(1, "kill", 10.0, "web", "web-1")
>>> r = analyse(f, g, evs, failures=[10.01], horizon=30.0, rate=500.0)
>>> r.detection_s, r.failover_s, r.repair_s, r.failed_requests, r.covered
(0.02, 0.02, 3.6, 1, False)
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

HEALTHY = "healthy"


@dataclass(frozen=True, slots=True)
class Ev:
    """One fivenines event at run time ``t`` (the admin API's ``/events`` entries)."""

    t: float
    kind: str
    group: str
    target: str
    old: str
    new: str
    reason: str = ""

    @classmethod
    def from_json(cls, d: Mapping[str, Any], wall_at_start: float) -> Ev:
        """An ``/events`` entry; ``wall_at_start`` is the wall-clock time of run time 0."""
        return cls(float(d["time"]) - wall_at_start, str(d.get("kind", "")), str(d.get("group", "")),
                   str(d.get("target", "")), str(d.get("old", "")), str(d.get("new", "")),
                   str(d.get("reason", "")))

    def to_json(self) -> dict[str, Any]:
        return {"t_s": round(self.t, 4), "kind": self.kind, "group": self.group, "target": self.target,
                "old": self.old, "new": self.new, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class GroupView:
    """A target group at the start of the run: its declared size and who served."""

    name: str
    active_count: int
    standby_count: int
    serving0: tuple[str, ...]

    def serving_history(self, events: Iterable[Ev]) -> list[tuple[float, frozenset[str]]]:
        """``[(t, serving set from t on), ...]``, starting with the initial set at ``-inf``."""
        out: list[tuple[float, frozenset[str]]] = [(float("-inf"), frozenset(self.serving0))]
        for e in events:
            if e.kind == "serving" and e.group == self.name:
                out.append((e.t, frozenset(x for x in e.new.split(",") if x)))
        return out


@dataclass(frozen=True, slots=True)
class Injected:
    """A fault as it was carried out (run times). ``skipped`` says why it was not, if it was not."""

    id: int
    kind: str
    at: float
    group: str
    target: str
    planned_at: float | None = None
    restored_at: float | None = None
    pid: int | None = None
    detail: str = ""
    skipped: str | None = None
    repaired_at: float | None = None  # observed by the runner (lb: the worker's replacement came up)


@dataclass(frozen=True, slots=True)
class FaultResult:
    fault: Injected
    was_serving: bool
    detected_at: float | None
    failover_at: float | None
    unhealthy_at: float | None
    repaired_at: float | None
    failed_requests: int
    first_failure: float | None
    last_failure: float | None
    exposed_requests: float  # requests the load sent X while it was failed and not yet detected
    notes: tuple[str, ...] = field(default=())

    def _since(self, t: float | None) -> float | None:
        return None if t is None else round(t - self.fault.at, 6)

    @property
    def detection_s(self) -> float | None:
        return self._since(self.detected_at)

    @property
    def failover_s(self) -> float | None:
        return self._since(self.failover_at)

    @property
    def repair_s(self) -> float | None:
        return self._since(self.repaired_at)

    @property
    def covered(self) -> bool:
        """The fault cost no failed request."""
        return self.failed_requests == 0

    @property
    def impact_s(self) -> float | None:
        """From the fault to the last failed request it caused (None: none failed)."""
        return self._since(self.last_failure)

    def to_json(self) -> dict[str, Any]:
        f = self.fault
        return {
            "id": f.id,
            "kind": f.kind,
            "group": f.group,
            "target": f.target,
            "pid": f.pid,
            "planned_at_s": f.planned_at,
            "injected_at_s": round(f.at, 4),
            "restored_at_s": None if f.restored_at is None else round(f.restored_at, 4),
            "detail": f.detail,
            "skipped": f.skipped,
            "was_serving": self.was_serving,
            "detection_s": self.detection_s,
            "failover_s": self.failover_s,
            "repair_s": self.repair_s,
            "failed_requests": self.failed_requests,
            "covered": self.covered if f.skipped is None else None,
            "impact_s": self.impact_s,
            "exposed_requests": round(self.exposed_requests, 2),
            "notes": list(self.notes),
        }


def serving_at(history: Sequence[tuple[float, frozenset[str]]], t: float) -> frozenset[str]:
    """The serving set in force at ``t`` (events at exactly ``t`` count as done)."""
    times = [h[0] for h in history]
    return history[bisect.bisect_right(times, t) - 1][1]


def count_between(sorted_times: Sequence[float], lo: float, hi: float) -> tuple[int, float | None, float | None]:
    """How many of ``sorted_times`` fall in ``[lo, hi)``, and the first and last of them.

    >>> count_between([1.0, 2.0, 2.5, 7.0], 2.0, 7.0)
    (2, 2.0, 2.5)
    """
    a = bisect.bisect_left(sorted_times, lo)
    b = bisect.bisect_left(sorted_times, hi)
    if b <= a:
        return 0, None, None
    return b - a, float(sorted_times[a]), float(sorted_times[b - 1])


def analyse(
    fault: Injected,
    group: GroupView,
    events: Sequence[Ev],
    failures: Sequence[float],
    horizon: float,
    rate: float,
) -> FaultResult:
    """Detection, failover and repair of one fault, and the failed requests from it until ``horizon``.

    ``events`` sorted by time; ``failures``: the failure times of failed requests, sorted.
    """
    notes: list[str] = []
    n_failed, first, last = count_between(failures, fault.at, horizon)
    if fault.skipped is not None:
        return FaultResult(fault, False, None, None, None, None, 0, None, None, 0.0, (fault.skipped,))
    if fault.kind in ("lb", "node", "partition"):
        rep = fault.repaired_at
        why = ("a data-plane worker: no target to detect" if fault.kind == "lb" and "worker" in fault.target
               else "a node: see the cluster section (who held the VIP, the takeover)")
        return FaultResult(fault, True, None, None, None, rep, n_failed, first, last, 0.0, (why,))
    history = group.serving_history(events)
    before = serving_at(history, fault.at)
    was_serving = fault.target in before
    x = fault.target
    detected_at = failover_at = None
    if was_serving:
        for t, ids in history:
            if t < fault.at:
                continue
            if detected_at is None and x not in ids:
                detected_at = t
            if detected_at is not None and x not in ids and len(ids) >= group.active_count:
                failover_at = t
                break
        if detected_at is None:
            notes.append("never left the serving set")
        elif failover_at is None:
            notes.append("no full-strength serving set without it" if group.standby_count
                         else "no standby to fail over to")
    else:
        notes.append("not serving when hit")
    unhealthy_at = repaired_at = None
    for e in events:
        if e.t < fault.at or e.kind != "health" or e.target != x or e.group != group.name:
            continue
        if unhealthy_at is None and e.new != HEALTHY:
            unhealthy_at = e.t
        elif unhealthy_at is not None and e.new == HEALTHY:
            repaired_at = e.t
            break
    if unhealthy_at is None and detected_at is not None:
        # ejected on the evidence of traffic without failing a check: repaired when it serves again
        back = next((t for t, ids in history if t > detected_at and x in ids), None)
        repaired_at = back
    if unhealthy_at is not None and repaired_at is None:
        notes.append("not healthy again before the run ended")
    exposed = 0.0
    if was_serving and detected_at is not None and before:
        exposed = rate / len(before) * (detected_at - fault.at)
    return FaultResult(fault, was_serving, detected_at, failover_at, unhealthy_at, repaired_at,
                       n_failed, first, last, exposed, tuple(notes))


def analyse_all(
    faults: Sequence[Injected],
    groups: Mapping[str, GroupView],
    events: Sequence[Ev],
    failures: Sequence[float],
    end: float,
    rate: float,
) -> list[FaultResult]:
    """Every fault, each charged with the failures until the next one (or ``end``)."""
    events = sorted(events, key=lambda e: e.t)
    real = sorted((f for f in faults if f.skipped is None), key=lambda f: f.at)
    nexts = {f.id: (real[i + 1].at if i + 1 < len(real) else end) for i, f in enumerate(real)}
    out = []
    for f in sorted(faults, key=lambda f: f.at):
        g = groups.get(f.group) or GroupView(f.group, 0, 0, ())
        out.append(analyse(f, g, events, failures, nexts.get(f.id, f.at), rate))
    return out


def state_intervals(
    initial: Mapping[str, str],
    changes: Iterable[tuple[float, str, str]],
    start: float,
    end: float,
) -> dict[str, list[tuple[float, float, str]]]:
    """``{id: [(from, to, state), ...]}`` over ``[start, end]`` from initial states and ``(t, id, new)`` changes.

    >>> state_intervals({"a": "healthy"}, [(2.0, "a", "unhealthy"), (5.0, "a", "healthy")], 0.0, 10.0)
    {'a': [(0.0, 2.0, 'healthy'), (2.0, 5.0, 'unhealthy'), (5.0, 10.0, 'healthy')]}
    """
    cur = {k: (start, v) for k, v in initial.items()}
    out: dict[str, list[tuple[float, float, str]]] = {k: [] for k in initial}
    for t, key, new in sorted(changes, key=lambda c: c[0]):
        t = min(max(t, start), end)
        since, state = cur.get(key, (start, "unknown"))
        out.setdefault(key, [])
        if t > since:
            out[key].append((since, t, state))
        cur[key] = (max(t, since), new)
    for key, (since, state) in cur.items():
        if end > since:
            out[key].append((since, end, state))
    return out


def health_changes(events: Iterable[Ev], group: str | None = None) -> list[tuple[float, str, str]]:
    return [(e.t, e.target, e.new) for e in events
            if e.kind == "health" and e.target and (group is None or e.group == group)]


def serving_changes(events: Iterable[Ev], group: GroupView) -> list[tuple[float, str, str]]:
    """Per-target ``serving``/``out`` changes from the group's serving events."""
    out: list[tuple[float, str, str]] = []
    prev = frozenset(group.serving0)
    for t, ids in group.serving_history(events)[1:]:
        for x in ids - prev:
            out.append((t, x, "serving"))
        for x in prev - ids:
            out.append((t, x, "out"))
        prev = ids
    return out
