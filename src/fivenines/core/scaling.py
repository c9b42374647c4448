"""Elastic scaling: how many actives a target group wants now. Pure: time and metrics are inputs.

Everything that decides a scaling step lives here; the runtime
(:mod:`fivenines.runtime.scaling`) only samples counters, calls :func:`decide`
every evaluation interval and carries out the answer. The rules, in order:

1. **Per policy, the HPA rule.** A target-tracking policy names a metric and a
   target per instance (``requests_per_target: 400``). Over the *warm* instances
   only (healthy and past slow start: a starting instance's CPU spike or empty
   cache says nothing about the load), the group's value is averaged and
   ``ratio = value / target``. Inside the tolerance band (``|ratio - 1| <=
   tolerance``) the policy holds. Outside it asks for ``ceil(current x ratio)``,
   where the instances still warming up count as serving nothing when scaling
   out and as exactly on target when scaling in (Kubernetes' HPA does the same
   with unready pods): a scale-out already under way is not repeated while its
   instances warm up, and they are not removed because they carry no load yet.
   A policy whose metric is not measured holds (it cannot agree to a scale-in).
2. **Several policies: out if any asks, in only if all agree** -- the largest
   recommendation wins.
3. **Bounds**: the recommendation is kept within ``min..max``.
4. **Scale-out is immediate, scale-in is stabilised**: a recommendation above
   the current count is taken at once; one below it is replaced by the *highest*
   recommendation of the last ``scale_in_stabilization`` seconds, so the group
   shrinks only when every evaluation of the window agreed it could. The state
   carried between calls is that window, kept as a short tuple.
5. **Step**: at most ``max_step`` instances are added or removed per decision.
6. A **manual override** (``fivenines scale GROUP N``) replaces the policies: its
   count (within ``min..max``) is taken at once, in either direction, and is
   remembered in the window like any recommendation, so after the override is
   cleared the group does not shrink before the window has passed.

>>> rules = Rules("web", min=2, max=10, policies=(Policy(Metric.REQUESTS_PER_TARGET, 400.0),))
>>> d = decide(rules, ScalingState(), 0.0, 3, [Sample(f"w{i}", True, requests_per_s=640) for i in range(3)])
>>> d.desired, d.reason
(5, 'scale web 3 -> 5: requests_per_target 640/s > target 400/s')
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Literal


class Metric(str, Enum):
    REQUESTS_PER_TARGET = "requests_per_target"  # requests per second per instance
    IN_FLIGHT_PER_TARGET = "in_flight_per_target"  # requests in flight per instance
    P99_LATENCY = "p99_latency"  # seconds, weighted by each instance's requests
    CPU = "cpu"  # percent of one core, per instance process


LOAD_PROPORTIONAL = frozenset({Metric.REQUESTS_PER_TARGET, Metric.IN_FLIGHT_PER_TARGET, Metric.CPU})
"""Metrics that grow in proportion to the load an instance carries. Latency does not (it stays
flat until an instance saturates), so it cannot tell how far a group may shrink."""


class Direction(str, Enum):
    OUT = "out"
    IN = "in"
    HOLD = "hold"


_EPS = 1e-9  # 4.000000001 instances are 4: ratios of floats are not exact


def _ceil(x: float) -> int:
    return math.ceil(x - _EPS)


def _fmt(v: float) -> str:
    """Three significant digits, no exponent: ``640``, ``12.5``, ``0.25``.

    >>> [_fmt(v) for v in (640.4, 6400, 12.54, 0.25, 0)]
    ['640', '6400', '12.5', '0.25', '0']
    """
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    decimals = max(0, 2 - math.floor(math.log10(abs(v))))
    text = f"{v:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass(frozen=True, slots=True)
class Policy:
    """Target tracking: keep ``metric`` near ``target`` per warm instance."""

    metric: Metric
    target: float  # requests/s, requests in flight, seconds, or percent of one core

    def __post_init__(self) -> None:
        if not (self.target > 0 and math.isfinite(self.target)):
            raise ValueError(f"{self.metric.value}: the target must be a number above 0, got {self.target!r}")

    def show(self, value: float) -> str:
        """A value of this policy's metric with its unit: ``640/s``, ``12.5``, ``320ms``, ``85%``."""
        if self.metric is Metric.REQUESTS_PER_TARGET:
            return f"{_fmt(value)}/s"
        if self.metric is Metric.P99_LATENCY:
            return f"{_fmt(value * 1000)}ms"
        if self.metric is Metric.CPU:
            return f"{_fmt(value)}%"
        return _fmt(value)


@dataclass(frozen=True, slots=True)
class Rules:
    """The decision's parameters for one group (from its ``scaling:`` section)."""

    group: str
    min: int
    max: int
    policies: tuple[Policy, ...]
    tolerance: float = 0.1
    scale_in_stabilization: float = 180.0
    max_step: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.max:
            raise ValueError(f"need 1 <= min <= max, got min {self.min}, max {self.max}")
        if not self.policies:
            raise ValueError("give at least one policy")
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"tolerance must be within [0, 1), got {self.tolerance}")
        if self.scale_in_stabilization < 0:
            raise ValueError("scale_in_stabilization cannot be negative")
        if self.max_step < 1:
            raise ValueError(f"max_step must be at least 1, got {self.max_step}")

    def bound(self, n: int) -> int:
        return min(self.max, max(self.min, n))


@dataclass(frozen=True, slots=True)
class Sample:
    """What one active instance did over the metrics window (:mod:`fivenines.core.rates` makes these)."""

    id: str
    warm: bool  # healthy and past slow start; the others are left out of every metric
    requests_per_s: float = 0.0
    in_flight: float = 0.0  # mean over the window
    p99_latency: float | None = None  # seconds; None: it completed no request in the window
    cpu_percent: float | None = None  # of one core; None: not measured

    def value(self, metric: Metric) -> float | None:
        if metric is Metric.REQUESTS_PER_TARGET:
            return self.requests_per_s
        if metric is Metric.IN_FLIGHT_PER_TARGET:
            return self.in_flight
        if metric is Metric.P99_LATENCY:
            return self.p99_latency
        return self.cpu_percent


def group_value(metric: Metric, samples: Sequence[Sample]) -> tuple[float | None, int]:
    """The group's value of ``metric`` over warm ``samples`` and how many instances it stands for.

    The mean per instance; for latency, the mean of the instances' p99 weighted by
    their requests (an idle group has no latency pressure: 0). ``(None, 0)``: no
    warm instance measured it.

    >>> s = [Sample("a", True, 300, p99_latency=0.1), Sample("b", True, 100, p99_latency=0.5), Sample("c", False, 900)]
    >>> group_value(Metric.REQUESTS_PER_TARGET, s), group_value(Metric.P99_LATENCY, s)
    ((200.0, 2), (0.2, 2))
    """
    warm = [s for s in samples if s.warm]
    if metric is Metric.P99_LATENCY:
        if not warm:
            return None, 0
        weighted = [(s.p99_latency, s.requests_per_s) for s in warm if s.p99_latency is not None]
        weight = sum(w for _, w in weighted)
        if weight <= 0:
            return (max((v for v, _ in weighted), default=0.0)), len(warm)
        return sum(v * w for v, w in weighted) / weight, len(warm)
    values = [v for s in warm if (v := s.value(metric)) is not None]
    if not values:
        return None, 0
    return sum(values) / len(values), len(values)


@dataclass(frozen=True, slots=True)
class Recommendation:
    """What one policy asks for."""

    policy: Policy
    value: float | None  # the group's metric (None: not measured)
    warm: int  # warm instances it was measured on
    count: int  # instances it asks for (the current count when it holds)
    direction: Direction
    note: str = ""  # why it holds though outside the band

    def describe(self) -> str:
        """``requests_per_target 640/s > target 400/s``."""
        p = self.policy
        if self.value is None:
            return f"{p.metric.value} not measured"
        if self.direction is Direction.OUT:
            op = ">"
        elif self.direction is Direction.IN:
            op = "<"
        elif self.note:
            op = ">" if self.value > p.target else "<"
        else:
            op = "near"
        text = f"{p.metric.value} {p.show(self.value)} {op} target {p.show(p.target)}"
        return f"{text} ({self.note})" if self.note else text


def recommend(policy: Policy, samples: Sequence[Sample], current: int, tolerance: float) -> Recommendation:
    """One policy's count by the HPA rule, warming instances counted conservatively.

    >>> p = Policy(Metric.CPU, 50.0)
    >>> recommend(p, [Sample("a", True, cpu_percent=90), Sample("b", True, cpu_percent=90)], 2, 0.1).count
    4
    >>> r = recommend(p, [Sample("a", True, cpu_percent=90), Sample("b", False)], 2, 0.1)
    >>> r.count, r.describe()
    (2, 'cpu 90% > target 50% (1 warming up: 1.8 of the 2 instances busy)')
    """
    value, warm = group_value(policy.metric, samples)
    if value is None:
        return Recommendation(policy, None, 0, current, Direction.HOLD)
    base = max(current, warm)
    target = policy.target
    busy = value * warm / target  # instances' worth of load the warm ones carry
    ratio = value / target
    if ratio > 1 + tolerance:
        if busy / base > 1 + tolerance:  # the warming ones counted as serving nothing
            return Recommendation(policy, value, warm, _ceil(busy), Direction.OUT)
        note = f"{base - warm} warming up: {_fmt(busy)} of the {base} instances busy"
        return Recommendation(policy, value, warm, current, Direction.HOLD, note)
    if ratio < 1 - tolerance:
        count = _ceil(busy + base - warm)  # the warming ones counted as on target
        if (busy + base - warm) / base >= 1 - tolerance:
            note = f"{base - warm} warming up"
        elif count >= current:
            note = f"{count} needed"
        else:
            return Recommendation(policy, value, warm, count, Direction.IN)
        return Recommendation(policy, value, warm, current, Direction.HOLD, note)
    return Recommendation(policy, value, warm, current, Direction.HOLD)


@dataclass(frozen=True, slots=True)
class ScalingState:
    """What :func:`decide` remembers: the recommendations of the stabilisation window.

    Kept as a monotone queue -- times ascending, counts strictly descending -- since
    a recommendation followed by a higher one can never be the window's highest
    again: the tuple stays short (one entry per distinct level) whatever the rate.
    """

    window: tuple[tuple[float, int], ...] = ()

    @classmethod
    def started(cls, now: float, count: int) -> ScalingState:
        """The state of a group that starts (or is taken over) with ``count`` actives: a first
        scale-in waits for a whole window, as if ``count`` had just been recommended."""
        return cls(((now, count),))

    def remember(self, now: float, count: int, span: float) -> ScalingState:
        """Add a recommendation; forget the ones older than ``span`` and the ones it outranks."""
        kept = [(t, c) for t, c in self.window if t > now - span and c > count]
        return ScalingState((*kept, (now, count)))

    def highest(self) -> int | None:
        return self.window[0][1] if self.window else None

    def __repr__(self) -> str:
        return f"<ScalingState {' '.join(f'{c}@{t:g}' for t, c in self.window) or 'empty'}>"


@dataclass(frozen=True, slots=True)
class Decision:
    """What :func:`decide` answers: the count to move to, why, and the state to pass back."""

    current: int
    desired: int
    reason: str
    state: ScalingState  # pass it to the next call
    recommendations: tuple[Recommendation, ...] = ()
    wanted: int = 0  # what the policies asked for, within min..max (before stabilisation and max_step)

    @property
    def direction(self) -> Direction:
        if self.desired > self.current:
            return Direction.OUT
        return Direction.IN if self.desired < self.current else Direction.HOLD

    @property
    def changed(self) -> bool:
        return self.desired != self.current

    def __str__(self) -> str:
        return self.reason


def decide(rules: Rules, state: ScalingState, now: float, current: int, samples: Sequence[Sample],
           manual: int | None = None) -> Decision:
    """The group's desired active count now, why, and the state for the next call.

    ``current`` is the active count the group has (or is already moving to);
    ``samples`` one per active instance, warm or not; ``manual`` an operator's
    override, if any. ``state`` is the previous call's (an empty one remembers
    nothing, so a first call may scale in at once: start from
    :meth:`ScalingState.started`).
    """
    g, span = rules.group, rules.scale_in_stabilization
    if manual is not None:
        wanted = rules.bound(manual)
        state = state.remember(now, wanted, span)
        clamped = f" (within min..max {rules.min}..{rules.max})" if wanted != manual else ""
        why = f"manual override {manual}{clamped}"
        if wanted == current:
            return Decision(current, current, f"hold {g} at {current}: {why}", state, (), wanted)
        return Decision(current, wanted, f"scale {g} {current} -> {wanted}: {why}", state, (), wanted)

    recs = tuple(recommend(p, samples, current, rules.tolerance) for p in rules.policies)
    measured = [r for r in recs if r.value is not None]
    wanted = rules.bound(max(r.count for r in recs))
    state = state.remember(now, wanted, span)
    if not measured:
        why = "no metrics from a warm instance yet"
        return _bounded(rules, current, current, why, state, recs, wanted)
    if wanted > current:
        asking = sorted((r for r in recs if r.direction is Direction.OUT), key=lambda r: -r.count)
        why = "; ".join(r.describe() for r in asking) or f"below min {rules.min}"
        if wanted < max(r.count for r in recs):
            why += f" (wants {max(r.count for r in recs)}, max {rules.max})"
        return _bounded(rules, current, wanted, why, state, recs, wanted)
    if wanted < current:
        highest = state.highest()
        assert highest is not None
        if highest >= current:
            why = (f"scale-in to {wanted} waits for the {_span(span)} stabilisation window "
                   f"(highest recommendation in it: {highest}): " + "; ".join(r.describe() for r in recs))
            return _bounded(rules, current, current, why, state, recs, wanted)
        if all(r.direction is Direction.IN for r in recs):
            why = "every policy below target: " + "; ".join(r.describe() for r in recs)
        else:
            why = f"above max {rules.max}: " + "; ".join(r.describe() for r in recs)
        if highest > wanted:
            why += f" (highest recommendation in the last {_span(span)}: {highest})"
        return _bounded(rules, current, highest, why, state, recs, wanted)
    why = "; ".join(r.describe() for r in recs)
    if any(r.direction is Direction.IN for r in recs) and current > rules.min:
        why += " (scale in only when every policy agrees)"
    elif any(r.direction is Direction.OUT for r in recs) and current >= rules.max:
        why += f" (at max {rules.max})"
    elif any(r.direction is Direction.IN for r in recs):
        why += f" (at min {rules.min})"
    return _bounded(rules, current, current, why, state, recs, wanted)


def _span(seconds: float) -> str:
    return f"{seconds / 60:g}m" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g}s"


def _bounded(rules: Rules, current: int, target: int, why: str, state: ScalingState,
             recs: tuple[Recommendation, ...], wanted: int) -> Decision:
    """Apply ``max_step``, then ``min..max`` (which win: a group outside its bounds is brought back at once)."""
    stepped = min(current + rules.max_step, max(current - rules.max_step, target))
    desired = rules.bound(stepped)
    if desired == stepped != target:
        why += f" (max_step {rules.max_step} of {target})"
    elif desired != stepped and not why.startswith(("below min", "above max")):
        why += f" ({f'below min {rules.min}' if current < rules.min else f'above max {rules.max}'})"
    verb = f"scale {rules.group} {current} -> {desired}" if desired != current else f"hold {rules.group} at {current}"
    return Decision(current, desired, f"{verb}: {why}", state, recs, wanted)


# --------------------------------------------------------------------------- which instances go


@dataclass(frozen=True, slots=True)
class Candidate:
    """An active instance that a scale-in could remove."""

    id: str
    started: float  # when it was started (larger: newer)
    warm: bool = True
    in_flight: float = 0.0


def pick_for_scale_in(candidates: Iterable[Candidate], n: int,
                      order: Literal["newest", "least_loaded"] = "newest") -> tuple[str, ...]:
    """The ``n`` instances a scale-in removes: the ones still warming up first (they
    carry almost nothing), then the newest (the oldest have proven themselves), or
    the least loaded; ties by fewest in flight, then the larger id.

    >>> c = [Candidate("w1", 0.0), Candidate("w2", 5.0, in_flight=3), Candidate("w3", 5.0), Candidate("w4", 9.0, warm=False)]
    >>> pick_for_scale_in(c, 3), pick_for_scale_in(c, 2, "least_loaded")
    (('w4', 'w3', 'w2'), ('w4', 'w3'))
    """
    def key(c: Candidate) -> tuple[bool, float, float]:
        if order == "newest":
            return (c.warm, -c.started, c.in_flight)
        return (c.warm, c.in_flight, -c.started)

    by_id = sorted(candidates, key=lambda c: c.id, reverse=True)
    return tuple(c.id for c in sorted(by_id, key=key)[:max(0, n)])
