"""Failure detectors and outlier ejection. Pure: time is an argument.

Two kinds of evidence say that a target is failing, and both are decided here:

* **Active checks are heartbeats.** A passed check is a heartbeat, a failed one is
  a miss. A :class:`ThresholdDetector` suspects a target after ``k`` consecutive
  misses (ELB's ``unhealthy_threshold``). A :class:`PhiAccrualDetector`
  (Hayashibara et al., "The φ Accrual Failure Detector", SRDS 2004) learns the
  distribution of heartbeat inter-arrival times and turns the time since the last
  heartbeat into a suspicion level φ = -log10(P(a heartbeat arrives even later));
  the target is suspected when φ reaches the threshold (default 8: one chance in
  10⁸ that a live target is that late). It needs no failed check to notice a
  silent target: φ grows continuously and is read on the controller's tick.

* **Passive outcomes of real traffic** feed an :class:`OutlierDetector` per target
  group: consecutive connect errors / resets / per-try timeouts, or consecutive
  5xx, eject a target at once, before any active check notices; a target whose
  recent latency is far above its peers' (p90 > ``factor`` x the median of the
  others' medians, over a window) is ejected too. Ejection lasts
  ``base_ejection_time x n`` for the n-th ejection, capped at
  ``max_ejection_time``; at most ``max_ejection_percent`` of the group is ejected
  at once. :meth:`OutlierDetector.record` is on the data plane's hot path: it
  allocates nothing unless it ejects.

Agent replies (HAProxy's ``agent-check`` words) are parsed by
:func:`parse_agent_reply`.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

from fivenines.core.health import CheckResult, HealthState, Reason, TargetHealth, Transition

# --------------------------------------------------------------------------- heartbeat detectors


class Detector(Protocol):
    """What the controller asks of a heartbeat failure detector."""

    kind: str

    def observe(self, ok: bool, now: float) -> bool:
        """Feed one check result; True when the target is suspected afterwards."""
        ...

    def suspected(self, now: float) -> bool: ...

    def level(self, now: float) -> float:
        """The suspicion level shown in status (misses, or φ)."""
        ...

    def reset(self) -> None:
        """Forget everything (a restarted or re-registered target)."""
        ...


class ThresholdDetector:
    """Suspect after ``threshold`` consecutive misses; one heartbeat clears it.

    >>> d = ThresholdDetector(2)
    >>> d.observe(False, 1.0), d.observe(False, 2.0), d.observe(True, 3.0)
    (False, True, False)
    """

    kind = "threshold"
    __slots__ = ("misses", "threshold")

    def __init__(self, threshold: int) -> None:
        if threshold < 1:
            raise ValueError("threshold must be >= 1")
        self.threshold = threshold
        self.misses = 0

    def observe(self, ok: bool, now: float) -> bool:
        self.misses = 0 if ok else self.misses + 1
        return self.misses >= self.threshold

    def suspected(self, now: float) -> bool:
        return self.misses >= self.threshold

    def level(self, now: float) -> float:
        return float(self.misses)

    def reset(self) -> None:
        self.misses = 0

    def __repr__(self) -> str:
        return f"<ThresholdDetector misses={self.misses}/{self.threshold}>"


PHI_CAP = 1000.0
"""φ is reported as at most this (the tail probability underflows long before)."""


def phi(elapsed: float, mean: float, std_dev: float) -> float:
    """φ of a heartbeat ``elapsed`` seconds after the last one, for normally distributed intervals.

    φ = -log10(P(the next heartbeat comes later than ``elapsed``)), with the exact
    normal tail (``erfc``); φ = 8 is about 5.6 standard deviations late.

    >>> round(phi(1.0, 1.0, 0.1), 2)  # exactly on time: P(later) = 1/2
    0.3
    >>> phi(1.6, 1.0, 0.1) > 8 > phi(1.5, 1.0, 0.1)
    True
    """
    if std_dev <= 0:
        raise ValueError("std_dev must be > 0")
    z = (elapsed - mean) / std_dev
    p_later = 0.5 * math.erfc(z / math.sqrt(2.0))
    if p_later <= 0.0:
        return PHI_CAP
    return min(PHI_CAP, max(0.0, -math.log10(p_later)))


class PhiAccrualDetector:
    """φ accrual failure detector on heartbeat arrival times.

    Inter-arrival times are kept in a window of ``window`` samples (running sums,
    no rescans). ``min_std_dev`` keeps very regular heartbeats from making φ
    jumpy; ``acceptable_pause`` is added to the mean (a known pause that is not a
    failure). Until the first heartbeat there is nothing to learn from, so the
    detector falls back to counting ``fallback_misses`` consecutive misses.

    >>> d = PhiAccrualDetector(threshold=8, first_interval=1.0, min_std_dev=0.1)
    >>> for t in range(10):
    ...     _ = d.observe(True, float(t))
    >>> d.suspected(9.9), d.suspected(10.5), d.suspected(10.7)
    (False, False, True)
    """

    kind = "phi_accrual"
    __slots__ = (
        "_intervals",
        "_sum",
        "_sum_sq",
        "acceptable_pause",
        "fallback_misses",
        "first_interval",
        "last",
        "min_std_dev",
        "misses",
        "threshold",
        "window",
    )

    def __init__(
        self,
        threshold: float = 8.0,
        *,
        window: int = 100,
        min_std_dev: float = 0.1,
        acceptable_pause: float = 0.0,
        first_interval: float = 1.0,
        fallback_misses: int = 2,
    ) -> None:
        if threshold <= 0:
            raise ValueError("threshold must be > 0")
        if window < 2:
            raise ValueError("window must be >= 2")
        if min_std_dev <= 0 or first_interval <= 0:
            raise ValueError("min_std_dev and first_interval must be > 0")
        self.threshold = threshold
        self.window = window
        self.min_std_dev = min_std_dev
        self.acceptable_pause = acceptable_pause
        self.first_interval = first_interval
        self.fallback_misses = fallback_misses
        self._intervals: deque[float] = deque()
        self._sum = 0.0
        self._sum_sq = 0.0
        self.last: float | None = None
        self.misses = 0

    # -- inputs
    def observe(self, ok: bool, now: float) -> bool:
        if ok:
            self.heartbeat(now)
        else:
            self.misses += 1
        return self.suspected(now)

    def heartbeat(self, now: float) -> None:
        self.misses = 0
        if self.last is None:
            # Seed the history as Akka does: the expected interval ± a quarter of it.
            sd = self.first_interval / 4
            self._push(self.first_interval - sd)
            self._push(self.first_interval + sd)
        else:
            self._push(max(0.0, now - self.last))
        self.last = now

    def reset(self) -> None:
        self._intervals.clear()
        self._sum = self._sum_sq = 0.0
        self.last = None
        self.misses = 0

    def _push(self, x: float) -> None:
        q = self._intervals
        q.append(x)
        self._sum += x
        self._sum_sq += x * x
        if len(q) > self.window:
            old = q.popleft()
            self._sum -= old
            self._sum_sq -= old * old

    # -- outputs
    @property
    def samples(self) -> int:
        """Intervals remembered (the two seeds included)."""
        return len(self._intervals)

    def stats(self) -> tuple[float, float]:
        """(mean, standard deviation) of the remembered intervals."""
        n = len(self._intervals)
        if n == 0:
            return self.first_interval, self.first_interval / 4
        mean = self._sum / n
        var = max(0.0, self._sum_sq / n - mean * mean)
        return mean, math.sqrt(var)

    def phi(self, now: float) -> float:
        if self.last is None:
            return 0.0
        mean, sd = self.stats()
        return phi(now - self.last, mean + self.acceptable_pause, max(sd, self.min_std_dev))

    def suspected(self, now: float) -> bool:
        if self.last is None:
            return self.misses >= self.fallback_misses
        return self.phi(now) >= self.threshold

    def level(self, now: float) -> float:
        return self.phi(now) if self.last is not None else float(self.misses)

    def __repr__(self) -> str:
        mean, sd = self.stats()
        return f"<PhiAccrualDetector n={len(self._intervals)} mean={mean:.3f} sd={sd:.3f} last={self.last}>"


class HealthJudge:
    """A target's ELB health machine, judged by a failure detector.

    Passed checks go to the health machine as they are (``healthy_threshold``
    passes in a row make a target healthy). A failed check counts against the
    target only when the detector suspects it; otherwise it just breaks the pass
    streak. With a :class:`ThresholdDetector` of ``k`` this is exactly ELB's
    ``unhealthy_threshold = k``; with a :class:`PhiAccrualDetector`,
    :meth:`poll` also turns a silent target unhealthy between checks, as soon as φ
    crosses the threshold. During a startup grace period failed checks do not
    count at all.

    >>> j = HealthJudge(TargetHealth(2, 1), ThresholdDetector(2))
    >>> ok, bad = CheckResult.passed(), CheckResult.failed(Reason.TIMEOUT, "no response")
    >>> [str(j.check(r, t)) for t, r in enumerate([ok, ok, bad, bad])]
    ['None', 'initial -> healthy', 'None', 'healthy -> unhealthy (Target.Timeout)']
    """

    __slots__ = ("detector", "health")

    def __init__(self, health: TargetHealth, detector: Detector) -> None:
        if health.unhealthy_threshold != 1:
            raise ValueError("the detector counts failures: give the health machine unhealthy_threshold=1")
        self.health = health
        self.detector = detector

    def __repr__(self) -> str:
        return f"<HealthJudge {self.health!r} {self.detector!r}>"

    def check(self, result: CheckResult, now: float, *, in_grace: bool = False) -> Transition | None:
        h = self.health
        if h.state in (HealthState.DRAINING, HealthState.UNUSED):
            return h.check(result, now)  # recorded, changes nothing
        if result.ok:
            self.detector.observe(True, now)
            return h.check(result, now)
        if not in_grace and self.detector.observe(False, now):
            d = self.detector
            if isinstance(d, PhiAccrualDetector) and d.last is not None:
                result = CheckResult(False, result.reason, f"{result.detail} (phi {d.phi(now):.1f} >= {d.threshold:g})",
                                     result.duration)
            return self._failed(h.check(result, now))
        # Not (yet) suspected: the failure breaks a pass streak but changes no state.
        h.passes = 0
        h.last_check = result
        return None

    def poll(self, now: float) -> Transition | None:
        """Between checks: a healthy target the detector now suspects becomes unhealthy."""
        if self.health.state is not HealthState.HEALTHY or not self.detector.suspected(now):
            return None
        d = self.detector
        if isinstance(d, PhiAccrualDetector) and d.last is not None:
            why = f"phi {d.phi(now):.1f} >= {d.threshold:g}: no heartbeat for {now - d.last:.2f}s"
        else:
            why = f"suspected by the {d.kind} detector"
        return self._failed(self.health.check(CheckResult.failed(Reason.TIMEOUT, why), now))

    def _failed(self, tr: Transition | None) -> Transition | None:
        # An outage must not teach phi that long silences are normal: learn afresh after it.
        if tr is not None and tr.new is HealthState.UNHEALTHY and isinstance(self.detector, PhiAccrualDetector):
            self.detector.reset()
        return tr

    def reset(self, now: float) -> Transition | None:
        """A new process or a re-registration: checking starts over."""
        self.detector.reset()
        return self.health.register(now)


# --------------------------------------------------------------------------- passive outcomes


class Outcome(IntEnum):
    """The outcome of one attempt of a real request on one target."""

    OK = 0
    HTTP_5XX = 1  # the target answered 500-599
    CONNECT = 2  # connection refused, unreachable, connect timeout
    RESET = 3  # connection closed before a complete response
    TIMEOUT = 4  # no response head within the per-try timeout


LOCAL_FAILURES = frozenset({Outcome.CONNECT, Outcome.RESET, Outcome.TIMEOUT})


@dataclass(frozen=True, slots=True)
class LatencyPolicy:
    factor: float = 5.0  # eject when p90 > factor x the others' median ...
    min_latency: float = 0.1  # ... and p90 > this (seconds): fast is fast enough
    window: float = 10.0  # seconds of samples considered
    min_requests: int = 20  # samples a target needs in the window to be judged (and to judge)
    percentile: float = 0.9


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    consecutive_errors: int = 1  # connect errors, resets, per-try timeouts
    consecutive_5xx: int = 3
    base_ejection_time: float = 10.0
    max_ejection_time: float = 300.0
    max_ejection_percent: float = 50.0
    latency: LatencyPolicy | None = LatencyPolicy()

    def ejection_time(self, n: int) -> float:
        """How long the n-th ejection in a row lasts.

        >>> [OutlierPolicy(base_ejection_time=10, max_ejection_time=35).ejection_time(n) for n in (1, 2, 3, 4)]
        [10.0, 20.0, 30.0, 35.0]
        """
        return float(min(self.max_ejection_time, self.base_ejection_time * max(1, n)))

    def max_ejected(self, members: int) -> int:
        """How many of ``members`` may be ejected at once (at least one when the percent is above 0).

        >>> p = OutlierPolicy(max_ejection_percent=50)
        >>> [p.max_ejected(n) for n in (1, 2, 3, 4)]
        [1, 1, 1, 2]
        """
        if self.max_ejection_percent <= 0 or members == 0:
            return 0
        return max(1, int(members * self.max_ejection_percent / 100.0))


def outlier_policy(tg: Any) -> OutlierPolicy | None:
    """The policy of a :class:`~fivenines.spec.TargetGroupSpec`'s ``outlier_detection`` (None: disabled)."""
    od = tg.outlier_detection
    if not od.enabled:
        return None
    lat = od.latency
    return OutlierPolicy(
        consecutive_errors=od.consecutive_errors,
        consecutive_5xx=od.consecutive_5xx,
        base_ejection_time=od.base_ejection_time,
        max_ejection_time=od.max_ejection_time,
        max_ejection_percent=od.max_ejection_percent,
        latency=None if lat is None else LatencyPolicy(
            factor=lat.factor, min_latency=lat.min_latency, window=lat.window, min_requests=lat.min_requests
        ),
    )


@dataclass(frozen=True, slots=True)
class Ejection:
    index: int
    at: float
    until: float
    count: int  # the how-many-th ejection of this target (in a row)
    reason: str
    cause: str = ""  # connect | reset | timeout | 5xx | latency

    def __str__(self) -> str:
        return f"ejected for {self.until - self.at:.3g}s: {self.reason}"


class _Stats:
    """Per-target passive state. Latency samples are a fixed ring: no allocation per request."""

    __slots__ = ("count", "errors", "fives", "last_eject", "lat", "n", "pos", "times", "until")

    def __init__(self, ring: int) -> None:
        self.errors = 0
        self.fives = 0
        self.until = 0.0  # ejected until (0: not ejected)
        self.count = 0  # ejections in a row
        self.last_eject = -math.inf  # when the last ejection ended (for resetting count)
        self.lat = array("d", bytes(8 * ring))
        self.times = array("d", bytes(8 * ring))
        self.pos = 0
        self.n = 0

    def clear_samples(self) -> None:
        self.pos = self.n = 0


class OutlierDetector:
    """Passive ejection for one target group of ``size`` members (indexed 0..size-1)."""

    def __init__(self, size: int, policy: OutlierPolicy | None = None, ring: int = 256) -> None:
        self.policy = policy or OutlierPolicy()
        self.ring = ring
        self._t = [_Stats(ring) for _ in range(size)]
        self.ejected_count = 0
        # Asked before each ejection; False keeps the member in (e.g. it is the last one able to serve).
        self.may_eject: Callable[[int], bool] | None = None
        self.vetoed = 0

    def __len__(self) -> int:
        return len(self._t)

    def remap(self, order: Sequence[int | None]) -> None:
        """Members came or went (a reload): new member ``i`` was member ``order[i]`` (None: new).
        Each kept member keeps its history and ejection; new ones start clean.

        >>> d = OutlierDetector(3)
        >>> _ = d.eject(2, 0.0, "test")
        >>> d.remap([2, None, 0]); len(d), d.ejected(0), d.ejected(1), d.ejected(2)
        (3, True, False, False)
        """
        old = self._t
        self._t = [old[j] if j is not None and 0 <= j < len(old) else _Stats(self.ring) for j in order]

    def __repr__(self) -> str:
        ej = [i for i, s in enumerate(self._t) if s.until]
        return f"<OutlierDetector size={len(self._t)} ejected={ej}>"

    # -- hot path
    def record(self, i: int, outcome: int, latency: float, now: float) -> Ejection | None:
        """One attempt's outcome on member ``i``. Returns the ejection it caused, if any."""
        s = self._t[i]
        if outcome == 0:
            s.errors = 0
            s.fives = 0
        elif outcome == 1:
            s.fives += 1
            s.errors = 0
        else:
            s.errors += 1
        pos = s.pos
        s.lat[pos] = latency
        s.times[pos] = now
        pos += 1
        s.pos = 0 if pos == self.ring else pos
        if s.n < self.ring:
            s.n += 1
        if s.until or outcome == 0:
            return None
        p = self.policy
        if s.errors >= p.consecutive_errors > 0:
            return self._eject(i, now, f"{s.errors} consecutive {_ERROR_WORD[outcome]}", _CAUSE[outcome])
        if s.fives >= p.consecutive_5xx > 0:
            return self._eject(i, now, f"{s.fives} consecutive 5xx", "5xx")
        return None

    # -- timed
    def sweep(self, now: float) -> tuple[list[Ejection], list[int]]:
        """Latency outliers to eject, and members whose ejection has ended (now reinstated)."""
        reinstated: list[int] = []
        for i, s in enumerate(self._t):
            if s.until and now >= s.until:
                s.until = 0.0
                s.last_eject = now
                s.errors = s.fives = 0
                s.clear_samples()  # judge it on fresh traffic only
                self.ejected_count -= 1
                reinstated.append(i)
        ejections: list[Ejection] = []
        lp = self.policy.latency
        if lp is not None:
            for i, why in self.latency_outliers(now):
                e = self._eject(i, now, why, "latency")
                if e is not None:
                    ejections.append(e)
        return ejections, reinstated

    def latency_outliers(self, now: float) -> list[tuple[int, str]]:
        """Members whose p90 is far above the median of their peers' medians, worst first."""
        lp = self.policy.latency
        if lp is None:
            return []
        since = now - lp.window
        summary: dict[int, tuple[float, float]] = {}
        for i, s in enumerate(self._t):
            if s.until or s.n < lp.min_requests:  # (fewer samples than a judgement needs, in the window or not)
                continue
            lat, times = s.lat[:s.n], s.times[:s.n]  # (array slices: one copy each, no per-item index calls)
            if not times or min(times) >= since:  # every sample in the window: the common case under load
                samples = sorted(lat)
            else:
                samples = sorted(x for x, t in zip(lat, times, strict=True) if t >= since)
            if len(samples) >= lp.min_requests:
                summary[i] = (_median(samples), _quantile(samples, lp.percentile))
        if len(summary) < 2:
            return []
        out: list[tuple[float, int, str]] = []
        for i, (_, high) in summary.items():
            ref = _median(sorted(med for j, (med, _) in summary.items() if j != i))
            if high > lp.min_latency and high > lp.factor * ref:
                pct = round(lp.percentile * 100)
                out.append((high / max(ref, 1e-9), i,
                            f"latency outlier: p{pct} {high * 1000:.0f}ms > {lp.factor:g} x peers' median {ref * 1000:.1f}ms"))
        out.sort(reverse=True)
        return [(i, why) for _, i, why in out]

    # -- state
    def _eject(self, i: int, now: float, reason: str, cause: str) -> Ejection | None:
        s = self._t[i]
        if s.until:
            return None
        if self.ejected_count >= self.policy.max_ejected(len(self._t)):
            return None
        if self.may_eject is not None and not self.may_eject(i):
            self.vetoed += 1
            s.errors = s.fives = 0  # judge it afresh
            return None
        if now - s.last_eject >= self.policy.max_ejection_time:
            s.count = 0  # well behaved for a long time: start over
        s.count += 1
        s.until = now + self.policy.ejection_time(s.count)
        self.ejected_count += 1
        return Ejection(i, now, s.until, s.count, reason, cause)

    def eject(self, i: int, now: float, reason: str, cause: str = "") -> Ejection | None:
        """Eject ``i`` on evidence gathered elsewhere (another process's detector), within the same caps."""
        return self._eject(i, now, reason, cause)

    def ejected(self, i: int) -> bool:
        return self._t[i].until != 0.0

    def ejected_until(self, i: int) -> float:
        return self._t[i].until

    def ejections(self, i: int) -> int:
        return self._t[i].count

    def reinstate(self, i: int, now: float) -> bool:
        """End ``i``'s ejection now (e.g. a fresh process). Returns True when it was ejected."""
        s = self._t[i]
        s.errors = s.fives = 0
        s.clear_samples()
        if not s.until:
            return False
        s.until = 0.0
        s.last_eject = now
        self.ejected_count -= 1
        return True

    def snapshot(self, i: int) -> dict[str, float | int]:
        s = self._t[i]
        return {"consecutive_errors": s.errors, "consecutive_5xx": s.fives, "ejections": s.count}


_CAUSE = {int(Outcome.CONNECT): "connect", int(Outcome.RESET): "reset", int(Outcome.TIMEOUT): "timeout"}

_ERROR_WORD = {
    int(Outcome.CONNECT): "connect errors",
    int(Outcome.RESET): "resets",
    int(Outcome.TIMEOUT): "per-try timeouts",
}


def _median(sorted_values: list[float]) -> float:
    """The median of an already sorted list (the mean of the middle two for an even count).

    >>> _median([1.0, 2.0, 10.0]), _median([1.0, 3.0])
    (2.0, 2.0)
    """
    n = len(sorted_values)
    if n == 0:
        raise ValueError("no values")
    mid = n // 2
    return sorted_values[mid] if n % 2 else (sorted_values[mid - 1] + sorted_values[mid]) / 2


class OutcomeSink:
    """The passive hook the data plane calls with each attempt's outcome (``BackendGroup.observe``
    is one; the data plane calls its :meth:`record`): the detector records it, and an ejection it causes is handed to
    ``on_ejection``. Compiled with the data plane, so the call per response stays compiled.

    >>> d = OutlierDetector(2, OutlierPolicy(consecutive_errors=1, consecutive_5xx=0))
    >>> got = []
    >>> sink = OutcomeSink(d, got.append)
    >>> sink.record(0, 0, 0.001, 1.0); got
    []
    >>> sink.record(1, 2, 0.5, 2.0); [e.index for e in got]
    [1]
    """

    __slots__ = ("detector", "on_ejection")

    def __init__(self, detector: OutlierDetector, on_ejection: Callable[[Ejection], None]) -> None:
        self.detector = detector
        self.on_ejection = on_ejection

    def record(self, index: int, outcome: int, latency: float, now: float) -> None:
        e = self.detector.record(index, outcome, latency, now)
        if e is not None:
            self.on_ejection(e)


def _quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of an already sorted list.

    >>> _quantile([1.0, 2.0, 3.0, 4.0], 0.5), _quantile([1.0, 2.0, 3.0, 4.0], 0.9)
    (2.0, 4.0)
    """
    if not sorted_values:
        raise ValueError("no values")
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


# --------------------------------------------------------------------------- agent replies


@dataclass(frozen=True, slots=True)
class AgentReport:
    """What a target said about itself (HAProxy agent-check words)."""

    state: str | None = None  # up | down | drain | ready | maint | None (no opinion)
    weight_percent: int | None = None  # 0-256; 0 means take no new requests
    description: str = ""

    @property
    def drain(self) -> bool:
        return self.state in ("drain", "maint") or self.weight_percent == 0

    @property
    def down(self) -> bool:
        return self.state == "down"


_AGENT_STATES = {"up": "up", "ready": "ready", "drain": "drain", "maint": "maint",
                 "down": "down", "fail": "down", "stopped": "down"}


def parse_agent_reply(text: str) -> AgentReport:
    """Parse an agent's one-line reply: words and a weight, comma or space separated.

    >>> parse_agent_reply("75%, up")
    AgentReport(state='up', weight_percent=75, description='')
    >>> parse_agent_reply("drain # deploying")
    AgentReport(state='drain', weight_percent=None, description='deploying')
    >>> parse_agent_reply("bogus")
    Traceback (most recent call last):
    ...
    ValueError: agent reply word 'bogus' is not a weight (75%) or up, down, drain, ready, maint, fail, stopped
    """
    line, _, desc = text.strip().partition("#")
    state: str | None = None
    weight: int | None = None
    for word in line.replace(",", " ").split():
        w = word.lower()
        if w.endswith("%") and w[:-1].isdigit():
            weight = min(256, int(w[:-1]))
        elif w in _AGENT_STATES:
            mapped = _AGENT_STATES[w]
            # "down" wins over anything, "drain"/"maint" over "up"/"ready"
            rank = {"down": 3, "maint": 2, "drain": 2, "up": 1, "ready": 1}
            if state is None or rank[mapped] > rank[state]:
                state = mapped
        else:
            raise ValueError(
                f"agent reply word {word!r} is not a weight (75%) or up, down, drain, ready, maint, fail, stopped"
            )
    return AgentReport(state, weight, desc.strip())
