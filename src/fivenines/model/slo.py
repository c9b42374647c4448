"""Service level objectives: error budget and multiwindow burn-rate alerts. Pure: time is an argument.

An SLO ``target: 99.9, window: 30d`` allows ``0.1 %`` of the requests in any 30
days to fail: that is the *error budget*. The *burn rate* of a stretch of time is
its error rate divided by the budget rate: burning at 1x spends exactly the
budget over the window; at 14.4x, a 30-day budget is 2 % spent in one hour.

Alerts follow the Site Reliability Workbook (ch. 5, "multiwindow, multi-burn-rate"):
each rule fires while the burn rate is above its threshold over a long window
*and* over a short one. The long window makes the alert significant; the short
one makes it stop soon after the problem is fixed:

============  ==========  ============  =============  ==============================
severity      burn rate   long window   short window   budget spent (30 d window)
============  ==========  ============  =============  ==============================
page          14.4x       1 h           5 min          2 %
page          6x          6 h           30 min         5 %
ticket        1x          3 d           6 h            10 %
============  ==========  ============  =============  ==============================

Request outcomes are kept in an :class:`OutcomeRing`: per-bucket (good, total)
counts (one bucket a minute by default) over a fixed horizon, fed with ``now``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


def _objective(target: float) -> float:
    if not 0 < target < 100:
        raise ValueError(f"target must be a percentage strictly between 0 and 100, got {target!r}")
    return target / 100.0


def budget_rate(target: float) -> float:
    """The share of requests allowed to fail, ``1 - target / 100``, without binary rounding noise.

    >>> budget_rate(99.9), 1 - 99.9 / 100
    (0.001, 0.0009999999999998899)
    """
    _objective(target)
    return float((Decimal(100) - Decimal(repr(float(target)))) / 100)


# --------------------------------------------------------------------------- error budget


@dataclass(frozen=True, slots=True)
class ErrorBudget:
    """The error budget of ``total`` requests of which ``good`` succeeded, against ``target`` percent.

    >>> b = error_budget(good=99_950, total=100_000, target=99.9)
    >>> b.bad, round(b.allowed_bad, 6), round(b.consumed, 6), round(b.remaining, 6)
    (50, 100.0, 0.5, 0.5)
    """

    good: int
    total: int
    target: float

    @property
    def objective(self) -> float:
        return _objective(self.target)

    @property
    def bad(self) -> int:
        return self.total - self.good

    @property
    def allowed_bad(self) -> float:
        """How many of ``total`` requests may fail: ``(1 - objective) x total``."""
        return budget_rate(self.target) * self.total

    @property
    def consumed(self) -> float:
        """Share of the budget spent (above 1: overspent); 0 when there were no requests."""
        return self.bad / self.allowed_bad if self.total else 0.0

    @property
    def remaining(self) -> float:
        """Share of the budget left: ``1 - consumed`` (negative when overspent)."""
        return 1.0 - self.consumed

    @property
    def availability(self) -> float | None:
        return self.good / self.total if self.total else None

    def to_json(self) -> dict[str, Any]:
        return {
            "good": self.good,
            "total": self.total,
            "bad": self.bad,
            "target": self.target,
            "allowed_bad": self.allowed_bad,
            "consumed": self.consumed,
            "remaining": self.remaining,
            "availability": self.availability,
        }


def error_budget(good: int, total: int, target: float) -> ErrorBudget:
    """Error budget of a window's counts; see :class:`ErrorBudget`."""
    if total < 0 or not 0 <= good <= total:
        raise ValueError(f"need 0 <= good <= total, got good={good}, total={total}")
    _objective(target)
    return ErrorBudget(good, total, target)


def burn_rate(good: int, total: int, target: float) -> float:
    """Error rate over the budget rate: 1 spends the budget exactly over the SLO window.

    >>> burn_rate(985, 1000, 99.9), burn_rate(0, 0, 99.9)
    (15.0, 0.0)
    """
    rate = budget_rate(target)
    if total < 0 or not 0 <= good <= total:
        raise ValueError(f"need 0 <= good <= total, got good={good}, total={total}")
    if total == 0:
        return 0.0
    return (total - good) / (total * rate)


# --------------------------------------------------------------------------- outcome history


class OutcomeRing:
    """Request outcomes as (good, total) per time bucket, over a fixed horizon. Time is passed in.

    Bucket ``i`` holds the outcomes of ``[i x resolution, (i + 1) x resolution)``.
    A window of length ``w`` at ``now`` is the ``ceil(w / resolution)`` buckets up to
    and including the one ``now`` falls in (so it may reach up to one bucket
    further back than ``now - w``). Outcomes older than the horizon are dropped.

    >>> ring = OutcomeRing(horizon=3600, resolution=60)
    >>> ring.record(now=30, good=99, total=100)
    True
    >>> ring.record(now=90, good=50, total=50)
    True
    >>> ring.counts(now=100, window=60), ring.counts(now=100, window=120)
    ((50, 50), (149, 150))
    >>> ring
    <OutcomeRing 149/150 good in 2 buckets of 60s, horizon 3600s, latest bucket 1>
    """

    __slots__ = ("_epoch", "_good", "_total", "latest", "resolution", "size")

    def __init__(self, horizon: float = 30 * 86400.0, resolution: float = 60.0) -> None:
        if not resolution > 0 or not math.isfinite(resolution):
            raise ValueError(f"resolution must be > 0 seconds, got {resolution!r}")
        if not horizon >= resolution or not math.isfinite(horizon):
            raise ValueError(f"horizon must be >= resolution ({resolution}s), got {horizon!r}")
        self.resolution = float(resolution)
        self.size = math.ceil(horizon / resolution)
        self._epoch = [-1] * self.size
        self._good = [0] * self.size
        self._total = [0] * self.size
        self.latest: int | None = None

    @property
    def horizon(self) -> float:
        return self.size * self.resolution

    def bucket(self, now: float) -> int:
        return math.floor(now / self.resolution)

    def record(self, now: float, good: int = 0, total: int = 0) -> bool:
        """Add ``total`` outcomes at ``now``, ``good`` of them good. False when older than the horizon."""
        if total < 0 or not 0 <= good <= total:
            raise ValueError(f"need 0 <= good <= total, got good={good}, total={total}")
        i = self.bucket(now)
        if i < 0:
            raise ValueError(f"now must be >= 0, got {now!r}")
        if self.latest is not None and i <= self.latest - self.size:
            return False
        slot = i % self.size
        if self._epoch[slot] != i:
            self._epoch[slot], self._good[slot], self._total[slot] = i, 0, 0
        self._good[slot] += good
        self._total[slot] += total
        if self.latest is None or i > self.latest:
            self.latest = i
        return True

    def add(self, now: float, ok: bool) -> bool:
        """Record one request outcome."""
        return self.record(now, int(ok), 1)

    def counts(self, now: float, window: float) -> tuple[int, int]:
        """``(good, total)`` over the ``window`` seconds up to ``now``."""
        k = math.ceil(window / self.resolution)
        if not 1 <= k <= self.size:
            raise ValueError(
                f"window must be within (0, {self.horizon:g}] seconds (the horizon), got {window!r}"
            )
        end = self.bucket(now)
        good = total = 0
        for i in range(end - k + 1, end + 1):
            slot = i % self.size
            if self._epoch[slot] == i:
                good += self._good[slot]
                total += self._total[slot]
        return good, total

    def __repr__(self) -> str:
        live = [s for s in range(self.size) if self._epoch[s] >= 0 and self.latest is not None
                and self._epoch[s] > self.latest - self.size]
        good = sum(self._good[s] for s in live)
        total = sum(self._total[s] for s in live)
        return (
            f"<OutcomeRing {good}/{total} good in {len(live)} buckets of {self.resolution:g}s, "
            f"horizon {self.horizon:g}s, latest bucket {self.latest}>"
        )


# --------------------------------------------------------------------------- burn-rate alerts


@dataclass(frozen=True, slots=True)
class BurnRateRule:
    """Fire when the burn rate exceeds ``threshold`` over both ``long_window`` and ``short_window``."""

    severity: str
    threshold: float
    long_window: float
    short_window: float

    def budget_spent(self, slo_window: float) -> float:
        """Share of the budget spent in ``long_window`` at exactly the threshold rate.

        >>> [round(r.budget_spent(30 * 86400), 4) for r in SRE_WORKBOOK_RULES]
        [0.02, 0.05, 0.1]
        """
        return self.threshold * self.long_window / slo_window

    @property
    def name(self) -> str:
        return f"{self.severity} {self.threshold:g}x over {_short(self.long_window)}/{_short(self.short_window)}"


def _short(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


SRE_WORKBOOK_RULES: tuple[BurnRateRule, ...] = (
    BurnRateRule("page", 14.4, 3600.0, 300.0),
    BurnRateRule("page", 6.0, 6 * 3600.0, 1800.0),
    BurnRateRule("ticket", 1.0, 3 * 86400.0, 6 * 3600.0),
)
"""The Site Reliability Workbook's recommended rules for a 30-day SLO window."""


@dataclass(frozen=True, slots=True)
class AlertState:
    rule: BurnRateRule
    long_burn: float
    short_burn: float

    @property
    def firing(self) -> bool:
        return self.long_burn > self.rule.threshold and self.short_burn > self.rule.threshold

    def __str__(self) -> str:
        state = "FIRING" if self.firing else "ok"
        return f"{self.rule.name}: {state} (burn {self.long_burn:g}x long, {self.short_burn:g}x short)"

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule.name,
            "severity": self.rule.severity,
            "threshold": self.rule.threshold,
            "long_window_s": self.rule.long_window,
            "short_window_s": self.rule.short_window,
            "long_burn": self.long_burn,
            "short_burn": self.short_burn,
            "firing": self.firing,
        }


def evaluate_alerts(
    ring: OutcomeRing, now: float, target: float, rules: tuple[BurnRateRule, ...] = SRE_WORKBOOK_RULES
) -> list[AlertState]:
    """The state of every burn-rate rule at ``now``.

    >>> ring = OutcomeRing(horizon=3 * 86400)
    >>> for minute in range(120):
    ...     _ = ring.record(minute * 60, good=100 if minute < 110 else 0, total=100)
    >>> [str(a) for a in evaluate_alerts(ring, 119 * 60, 99.9)][:2]
    ['page 14.4x over 1h/5m: FIRING (burn 166.667x long, 1000x short)', 'page 6x over 6h/30m: FIRING (burn 83.3333x long, 333.333x short)']
    """
    states = []
    for rule in rules:
        long_burn = burn_rate(*ring.counts(now, rule.long_window), target)
        short_burn = burn_rate(*ring.counts(now, rule.short_window), target)
        states.append(AlertState(rule, long_burn, short_burn))
    return states


@dataclass(frozen=True, slots=True)
class SloStatus:
    """Error budget over the SLO window and the state of the burn-rate alerts, at one moment."""

    now: float
    window: float
    budget: ErrorBudget
    alerts: tuple[AlertState, ...]

    @property
    def firing(self) -> list[AlertState]:
        return [a for a in self.alerts if a.firing]

    @property
    def severity(self) -> str | None:
        """``"page"`` if any paging rule fires, else ``"ticket"`` if one fires, else None."""
        fired = {a.rule.severity for a in self.firing}
        return "page" if "page" in fired else ("ticket" if fired else None)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.budget.target,
            "window_s": self.window,
            "budget": self.budget.to_json(),
            "alerts": [a.to_json() for a in self.alerts],
            "severity": self.severity,
        }

    def __repr__(self) -> str:
        return (
            f"<SloStatus {self.budget.target:g}% over {_short(self.window)}: "
            f"{self.budget.remaining:.1%} budget left, alert={self.severity}>"
        )


def slo_status(
    ring: OutcomeRing,
    now: float,
    target: float,
    window: float = 30 * 86400.0,
    rules: tuple[BurnRateRule, ...] = SRE_WORKBOOK_RULES,
) -> SloStatus:
    """Budget over ``window`` and every alert, from the outcomes in ``ring`` up to ``now``.

    >>> ring = OutcomeRing(horizon=30 * 86400)
    >>> _ = ring.record(0, good=9_995, total=10_000)
    >>> slo_status(ring, 60, 99.9)
    <SloStatus 99.9% over 30d: 50.0% budget left, alert=None>
    >>> _ = ring.record(120, good=0, total=100)
    >>> slo_status(ring, 120, 99.9)
    <SloStatus 99.9% over 30d: -939.6% budget left, alert=page>
    """
    budget = error_budget(*ring.counts(now, window), target)
    return SloStatus(now, window, budget, tuple(evaluate_alerts(ring, now, target, rules)))
