"""Per-target counters sampled at times, turned into rates and percentiles over a short window. Pure.

The data plane keeps plain cumulative counters per target (requests, a latency
histogram, CPU seconds of the instance process) and an in-flight gauge. The
scaler samples them every second or so (:meth:`RateWindow.observe`, time passed
in) and asks for what happened over the last ``span`` seconds
(:meth:`RateWindow.rates`):

* requests per second: the requests counter's increase over the window's length;
* in flight: the mean of the gauge's samples in the window;
* p99 latency: from the histogram buckets' increase, interpolated linearly
  inside the bucket that holds the 99th percentile (as Prometheus'
  ``histogram_quantile``); the last, unbounded bucket answers its lower bound;
* CPU: CPU seconds' increase over the window's length, in percent of one core.

The window's base is the newest sample at least ``span`` old (else the oldest),
so a rate always covers at least ``span`` once that much history exists. A
counter that went down (the target was replaced) restarts the target's history.

>>> w = RateWindow(span=10.0, bounds=(0.1, 0.5, 1.0))
>>> w.observe("a", Counters(0.0, requests=0, in_flight=0, latency=(0, 0, 0, 0), cpu_seconds=1.0))
>>> w.observe("a", Counters(10.0, requests=500, in_flight=4, latency=(400, 90, 10, 0), cpu_seconds=4.0))
>>> r = w.rates(10.0)["a"]
>>> r.requests_per_s, r.in_flight, round(r.p99_latency or 0, 3), r.cpu_percent
(50.0, 4.0, 0.75, 30.0)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Counters:
    """One target's cumulative counters at one moment."""

    at: float
    requests: int = 0
    in_flight: int = 0
    latency: tuple[int, ...] = ()  # per-bucket counts (not cumulative), the last one unbounded
    cpu_seconds: float | None = None  # of the instance process; None: not measured


@dataclass(frozen=True, slots=True)
class Rates:
    """What one target did over the window."""

    requests_per_s: float
    in_flight: float
    p99_latency: float | None  # seconds; None: no request completed in the window
    cpu_percent: float | None  # of one core; None: not measured
    seconds: float  # the window's actual length


def quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The ``q`` quantile of a histogram: ``counts[i]`` values at most ``bounds[i]`` (and above
    ``bounds[i-1]``); one more count than bounds, the last bucket unbounded. None when empty.

    >>> quantile(0.5, (1.0, 2.0), (0, 10, 0)), quantile(0.99, (1.0, 2.0), (0, 0, 3))
    (1.5, 2.0)
    """
    if len(counts) != len(bounds) + 1:
        raise ValueError(f"{len(counts)} bucket counts for {len(bounds)} bounds (need one more)")
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n > 0 and seen + n >= rank:
            if i == len(bounds):
                return bounds[-1] if bounds else 0.0
            lo = bounds[i - 1] if i > 0 else 0.0
            return lo + (bounds[i] - lo) * (rank - seen) / n
        seen += n
    return bounds[-1] if bounds else 0.0


class RateWindow:
    """Samples of every target over the last ``span`` seconds (and one older, as the base)."""

    def __init__(self, span: float, bounds: Sequence[float]) -> None:
        if span <= 0:
            raise ValueError(f"span must be above 0, got {span}")
        self.span = span
        self.bounds = tuple(bounds)
        self.samples: dict[str, list[Counters]] = {}

    def __repr__(self) -> str:
        return f"<RateWindow span={self.span:g}s targets={len(self.samples)}>"

    def observe(self, target: str, c: Counters) -> None:
        if c.latency and len(c.latency) != len(self.bounds) + 1:
            raise ValueError(f"{target}: {len(c.latency)} latency buckets, expected {len(self.bounds) + 1}")
        history = self.samples.setdefault(target, [])
        if history and _went_down(history[-1], c):
            history.clear()
        if history and c.at <= history[-1].at:
            history[-1] = c  # same instant (or a clock step back): the newer reading wins
        else:
            history.append(c)
        # keep one sample at least `span` old as the base, nothing older
        cut = c.at - self.span
        while len(history) > 1 and history[1].at <= cut:
            del history[0]

    def forget(self, target: str) -> None:
        self.samples.pop(target, None)

    def keep_only(self, targets: Iterable[str]) -> None:
        """Forget every target not in ``targets`` (they left the group)."""
        keep = set(targets)
        for t in [t for t in self.samples if t not in keep]:
            del self.samples[t]

    def rates(self, now: float) -> dict[str, Rates]:
        """Each target's rates over the window ending at its newest sample (targets with at
        least two samples, the newest no older than ``span`` before ``now``)."""
        out: dict[str, Rates] = {}
        for target, history in self.samples.items():
            r = self._rates(history, now)
            if r is not None:
                out[target] = r
        return out

    def _rates(self, history: list[Counters], now: float) -> Rates | None:
        if len(history) < 2 or history[-1].at < now - self.span:
            return None
        last = history[-1]
        base = history[0]
        for c in history:
            if c.at <= last.at - self.span:
                base = c
        dt = last.at - base.at
        if dt <= 0:
            return None
        inside = [c for c in history if c.at > base.at]
        p99 = None
        if last.latency and base.latency:
            delta = [a - b for a, b in zip(last.latency, base.latency, strict=True)]
            p99 = quantile(0.99, self.bounds, delta)
        cpu = None
        if last.cpu_seconds is not None and base.cpu_seconds is not None:
            cpu = 100.0 * (last.cpu_seconds - base.cpu_seconds) / dt
        return Rates(
            requests_per_s=(last.requests - base.requests) / dt,
            in_flight=sum(c.in_flight for c in inside) / len(inside),
            p99_latency=p99,
            cpu_percent=cpu,
            seconds=dt,
        )


def _went_down(before: Counters, after: Counters) -> bool:
    if after.requests < before.requests:
        return True
    if before.cpu_seconds is not None and after.cpu_seconds is not None and after.cpu_seconds < before.cpu_seconds:
        return True
    return any(a < b for a, b in zip(after.latency, before.latency, strict=False))
