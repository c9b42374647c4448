"""Reliability blocks: one unit, series, parallel, k-out-of-n, and how to read the result. Pure.

Every function here is a closed form over independent units, each alternating
between *up* (exponential time to failure, rate ``lam``) and *down* (exponential
repair, rate ``mu``) with its own repair crew. Availability is the long-run share
of time a block is up.

Unavailability (``1 - A``) is what the nines are made of, and for a good layout it
is far below float resolution near 1.0 (``1 - 0.9999999999`` has only six correct
digits). So the functions that combine blocks take and return *unavailabilities*
``u`` where it matters (``*_unavailability``), and the availability forms are thin
wrappers. Rates are per any time unit, as long as every argument uses the same one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

SECONDS_PER_YEAR = 365.25 * 86400.0
"""A Julian year: the one the "five nines = 5.26 minutes a year" tables use."""

SECONDS_PER_MONTH = 30 * 86400.0
"""A 30-day month, the usual SLO window."""


def _check_rate(name: str, value: float, *, positive: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        need = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {need}, got {value!r}")


def _check_probability(name: str, value: float) -> None:
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be within [0, 1], got {value!r}")


# --------------------------------------------------------------------------- one unit


def availability(mttf: float, mttr: float) -> float:
    """Steady-state availability of one repairable unit: ``MTTF / (MTTF + MTTR)``.

    A unit failing at lambda = 0.01/h (MTTF 100 h) with a mean repair of 5 h:

    >>> round(availability(100, 5), 3)
    0.952
    """
    _check_rate("mttf", mttf, positive=True)
    _check_rate("mttr", mttr)
    return mttf / (mttf + mttr)


def unit_unavailability(lam: float, mu: float) -> float:
    """Steady-state unavailability of one unit from its rates: ``lam / (lam + mu)``.

    >>> unit_unavailability(0.01, 0.2)
    0.047619047619047616
    """
    _check_rate("lam", lam)
    _check_rate("mu", mu, positive=True)
    return lam / (lam + mu)


def unit_availability(lam: float, mu: float) -> float:
    """Steady-state availability of one unit from its rates: ``mu / (lam + mu)``.

    >>> round(unit_availability(0.01, 1 / 5), 3)
    0.952
    """
    return 1.0 - unit_unavailability(lam, mu)


def point_availability(lam: float, mu: float, t: float) -> float:
    """Probability that a unit which was up at time 0 is up at time ``t``.

    ``A(t) = mu/(lam+mu) + lam/(lam+mu) * exp(-(lam+mu) t)``: it starts at 1 and
    decays to the steady state with time constant ``1/(lam+mu)``.

    >>> point_availability(1e-4, 3e-2, 0.0)
    1.0
    >>> round(point_availability(1e-4, 3e-2, 1000), 15)
    0.996677740863788
    """
    return 1.0 - point_unavailability(lam, mu, t)


def point_unavailability(lam: float, mu: float, t: float) -> float:
    """``1 - A(t) = lam/(lam+mu) * (1 - exp(-(lam+mu) t))``, computed with ``expm1``.

    >>> point_unavailability(1e-4, 3e-2, 0.0), f"{point_unavailability(1e-9, 1.0, 1e-3):.6g}"
    (0.0, '9.995e-13')
    """
    _check_rate("lam", lam)
    _check_rate("mu", mu)
    _check_rate("t", t)
    if lam + mu == 0:
        return 0.0
    return lam / (lam + mu) * -math.expm1(-(lam + mu) * t)


# --------------------------------------------------------------------------- combinations


def series_unavailability(us: Iterable[float]) -> float:
    """Unavailability of blocks that are all needed: ``1 - prod(1 - u_i)``, computed without cancellation.

    >>> series_unavailability([0.1, 0.1])
    0.19
    >>> series_unavailability([1e-12, 2e-12])  # exactly 3e-12 - 2e-24
    2.9999999999980004e-12
    >>> 1 - (1 - 1e-12) * (1 - 2e-12)  # the naive form keeps four digits
    2.9999336348396355e-12
    """
    total = 0.0
    for u in us:
        _check_probability("unavailability", u)
        if u == 1.0:
            return 1.0
        total += math.log1p(-u)
    return -math.expm1(total)


def series(availabilities: Iterable[float]) -> float:
    """Availability of blocks in series (every one needed): the product.

    >>> round(series([0.99, 0.99, 0.99]), 6)
    0.970299
    """
    return 1.0 - series_unavailability(1.0 - a for a in availabilities)


def parallel_unavailability(us: Iterable[float]) -> float:
    """Unavailability of redundant blocks (any one suffices): the product of the ``u_i``.

    >>> parallel_unavailability([0.1, 0.01])
    0.001
    """
    prod = 1.0
    for u in us:
        _check_probability("unavailability", u)
        prod *= u
    return prod


def parallel(availabilities: Iterable[float]) -> float:
    """Availability of blocks in parallel (any one suffices): ``1 - prod(1 - a_i)``.

    >>> parallel([0.9, 0.9])
    0.99
    """
    return 1.0 - parallel_unavailability(1.0 - a for a in availabilities)


def up_count_distribution(us: Sequence[float]) -> list[float]:
    """``p[j]`` = probability that exactly ``j`` of the independent units are up.

    The Poisson-binomial distribution, by the usual O(n^2) recurrence; every term is
    a sum of non-negative products, so small probabilities keep full relative precision.

    >>> [round(p, 4) for p in up_count_distribution([0.1, 0.2])]
    [0.02, 0.26, 0.72]
    """
    p = [1.0]
    for u in us:
        _check_probability("unavailability", u)
        a = 1.0 - u
        nxt = [0.0] * (len(p) + 1)
        for j, pj in enumerate(p):
            nxt[j] += pj * u
            nxt[j + 1] += pj * a
        p = nxt
    return p


def k_out_of_n_unavailability_mixed(k: int, us: Sequence[float]) -> float:
    """Probability that fewer than ``k`` of the independent units (unavailabilities ``us``) are up.

    >>> round(k_out_of_n_unavailability_mixed(2, [0.1, 0.1, 0.1]), 6)
    0.028
    """
    n = len(us)
    if not 0 <= k <= n:
        raise ValueError(f"k must be within 0..{n}, got {k}")
    return math.fsum(up_count_distribution(us)[:k])


def k_out_of_n_mixed(k: int, availabilities: Sequence[float]) -> float:
    """Availability of a k-out-of-n block of non-identical independent units.

    >>> round(k_out_of_n_mixed(2, [0.9, 0.8, 0.7]), 4)
    0.902
    """
    return 1.0 - k_out_of_n_unavailability_mixed(k, [1.0 - a for a in availabilities])


def k_out_of_n_unavailability(k: int, n: int, u: float) -> float:
    """Probability that fewer than ``k`` of ``n`` identical independent units are up.

    ``sum_{i<k} C(n,i) (1-u)^i u^(n-i)``, summed directly (no ``1 - ...``).

    >>> round(k_out_of_n_unavailability(3, 4, 0.1), 4)
    0.0523
    """
    if not 0 <= k <= n:
        raise ValueError(f"k must be within 0..{n}, got {k}")
    _check_probability("u", u)
    a = 1.0 - u
    return math.fsum(math.comb(n, i) * a**i * u ** (n - i) for i in range(k))


def k_out_of_n(k: int, n: int, a: float) -> float:
    """Availability of a k-out-of-n block of identical independent units with availability ``a``.

    With independent repair (one crew per unit) each unit is up with probability
    ``a`` independently of the others, so the block is up with the binomial tail
    ``sum_{i>=k} C(n,i) a^i (1-a)^(n-i)``. 3-out-of-4 with a = 0.9:

    >>> round(k_out_of_n(3, 4, 0.9), 4)
    0.9477
    >>> k_out_of_n(1, 2, 0.9) == parallel([0.9, 0.9]), k_out_of_n(2, 2, 0.9) == series([0.9, 0.9])
    (True, True)
    """
    _check_probability("a", a)
    return 1.0 - k_out_of_n_unavailability(k, n, 1.0 - a)


def naive_fault_tolerance(a: float, n: int) -> float:
    """The often-quoted "fault tolerance = A x 1/N", kept only to show why it is wrong.

    It *falls* as redundancy grows, while the real availability of ``n`` redundant
    units rises (see :func:`k_out_of_n`):

    >>> [round(naive_fault_tolerance(0.99, n), 3) for n in (1, 2, 3)]
    [0.99, 0.495, 0.33]
    >>> [round(k_out_of_n(1, n, 0.99), 6) for n in (1, 2, 3)]
    [0.99, 0.9999, 0.999999]
    """
    return a / n


# --------------------------------------------------------------------------- reading the result


def nines(a: float) -> float:
    """Number of nines of an availability: ``-log10(1 - a)`` (infinite for a = 1).

    >>> round(nines(0.999), 6), round(nines(0.9995), 3), nines(0.0)
    (3.0, 3.301, 0.0)
    """
    _check_probability("availability", a)
    return nines_of_unavailability(1.0 - a)


def nines_of_unavailability(u: float) -> float:
    """Number of nines from the unavailability ``u``: ``-log10(u)``.

    >>> nines_of_unavailability(1e-5), nines_of_unavailability(0.0)
    (5.0, inf)
    """
    _check_probability("unavailability", u)
    return math.inf if u == 0 else max(0.0, -math.log10(u))


def downtime_per_year(u: float) -> float:
    """Expected downtime in seconds per (Julian) year for unavailability ``u``.

    >>> round(downtime_per_year(1e-5) / 60, 2)
    5.26
    """
    _check_probability("unavailability", u)
    return u * SECONDS_PER_YEAR


def downtime_per_month(u: float) -> float:
    """Expected downtime in seconds per 30-day month for unavailability ``u``.

    >>> round(downtime_per_month(1e-3) / 60, 1)
    43.2
    """
    _check_probability("unavailability", u)
    return u * SECONDS_PER_MONTH


class UnavailabilityFigures:
    """Availability, nines and downtime, derived from a result's ``unavailability``.

    A mixin for the model's result records (slotted dataclasses: it adds no slots).
    """

    __slots__ = ()

    @property
    def unavailability(self) -> float:
        raise NotImplementedError

    @property
    def availability(self) -> float:
        return 1.0 - self.unavailability

    @property
    def nines(self) -> float:
        return nines_of_unavailability(self.unavailability)

    @property
    def downtime_per_year_s(self) -> float:
        return downtime_per_year(self.unavailability)

    @property
    def downtime_per_month_s(self) -> float:
        return downtime_per_month(self.unavailability)


def format_seconds(seconds: float) -> str:
    """A short human rendering of a downtime: ``2.6 s``, ``5.3 min``, ``8.8 h``, ``3.7 d``.

    >>> [format_seconds(s) for s in (0.0004, 2.6, 315.6, 31557.6, 321408.0)]
    ['0.4 ms', '2.6 s', '5.3 min', '8.8 h', '3.7 d']
    """
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
