"""Small statistics for chaos measurements: Wilson intervals, percentiles, means. Pure.

Wilson's score interval for a proportion (Wilson 1927) stays inside [0, 1] and
keeps its coverage for proportions near 0 or 1 and small samples, where the
textbook ``p ± z sqrt(p(1-p)/n)`` collapses to a point (0 failures in 12 faults
does not prove a coverage of exactly 1):

    centre = (p + z²/2n) / (1 + z²/n)
    half   = z / (1 + z²/n) · sqrt(p(1-p)/n + z²/4n²)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Z95 = 1.959963984540054

# two-sided 95 % Student t quantiles, by degrees of freedom
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of ``k`` successes in ``n`` trials (95 % by default).

    >>> [round(x, 4) for x in wilson(12, 12)]
    [0.7575, 1.0]
    >>> [round(x, 4) for x in wilson(0, 10)]
    [0.0, 0.2775]
    >>> [round(x, 4) for x in wilson(81, 263)]
    [0.2553, 0.3662]
    >>> wilson(0, 0)
    (0.0, 1.0)
    """
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    # exact ends: 0 successes can only widen upwards, n successes downwards
    return (0.0 if k == 0 else lo), (1.0 if k == n else hi)


@dataclass(frozen=True, slots=True)
class Proportion:
    """``k`` of ``n`` with its Wilson interval."""

    k: int
    n: int

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.k, self.n)

    def to_json(self) -> dict[str, Any]:
        lo, hi = self.interval
        return {"value": self.value, "k": self.k, "n": self.n, "ci95": [lo, hi] if self.n else None}

    def __str__(self) -> str:
        if not self.n:
            return "n/a (0 of 0)"
        lo, hi = self.interval
        return (f"{self.k}/{self.n} = {format_availability(self.value)} "
                f"[95% CI {format_availability(lo)}, {format_availability(hi)}]")


def format_availability(a: float | None) -> str:
    """A share as a percentage with enough decimals to show its nines (at least 4).

    >>> format_availability(0.99275), format_availability(0.9999999035), format_availability(1.0)
    ('99.2750%', '99.99999035%', '100%')
    >>> format_availability(1 - 1e-15)
    '>99.9999999%'
    """
    if a is None:
        return "-"
    u = 1.0 - a
    if u <= 0:
        return "100%"
    if u < 1e-9:
        return ">99.9999999%"
    decimals = max(4, min(12, math.floor(-math.log10(u)) + 1))
    return f"{a * 100:.{decimals}f}%"


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of already sorted values, by linear interpolation.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([5.0], 99), percentile([], 50)
    (2.5, 5.0, None)
    >>> percentile(list(range(101)), 99)
    99.0
    """
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0-100, got {q!r}")
    n = len(sorted_values)
    if n == 0:
        return None
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac)


@dataclass(frozen=True, slots=True)
class Mean:
    """Mean of a few measurements with a 95 % Student t interval (None below two values)."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return sum(self.values) / self.n if self.values else None

    @property
    def interval(self) -> tuple[float, float] | None:
        """``mean ± t(n-1) s / sqrt(n)``.

        >>> [round(x, 3) for x in Mean((1.0, 2.0, 3.0)).interval]
        [0.0, 4.484]
        >>> [round(x, 3) for x in Mean((-1.0, 2.0, 3.0)).interval]
        [-3.838, 6.505]
        >>> Mean((2.0,)).interval is None
        True
        """
        if self.n < 2:
            return None
        m = sum(self.values) / self.n
        var = sum((v - m) ** 2 for v in self.values) / (self.n - 1)
        t = _T95[self.n - 2] if self.n - 2 < len(_T95) else Z95
        half = t * math.sqrt(var / self.n)
        lo = m - half
        if min(self.values) >= 0:  # durations: an interval below zero says nothing more than zero
            lo = max(0.0, lo)
        return lo, m + half

    def to_json(self) -> dict[str, Any]:
        ci = self.interval
        return {
            "mean": self.mean,
            "n": self.n,
            "min": min(self.values) if self.values else None,
            "max": max(self.values) if self.values else None,
            "ci95": list(ci) if ci else None,
        }
