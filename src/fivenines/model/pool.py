"""N+M pools as a birth-death Markov chain, solved in closed form. Pure, no numpy.

A pool has ``n = N + M`` identical units: ``N`` active (serving) and ``M`` standby.
Each serving unit fails at rate ``lam``; a standby fails at ``lam`` (hot),
``ratio * lam`` (warm) or not at all (cold). Failed units queue for ``r`` repair
crews, each repairing at rate ``mu`` (``r = None``: one crew per unit, i.e.
independent repair). The pool is *up* while at least ``required`` units work
(default ``N``: the declared capacity).

The state is the number ``j`` of failed units. In state ``j`` there are
``a_j = min(N, n - j)`` serving units and ``s_j = n - j - a_j`` standbys, so

* failure rate ``lam_j = a_j * lam + s_j * lam_standby`` (``j -> j + 1``),
* repair rate ``mu_j = min(j, r) * mu`` (``j -> j - 1``).

**Imperfect switchover** (coverage ``c``): when a serving unit fails and the pool
would still be up, the failure is handled automatically (detected, ejected, a
standby promoted) with probability ``c``. With probability ``1 - c`` it is not, and
the pool is down in state ``("down", j)`` until someone recovers it by hand at rate
``delta``, which leads to ``j + 1``. Nothing else happens meanwhile.

The closed form: every transition out of ``{0..j} + {("down", i) : i <= j}`` goes
to ``j + 1`` and every one back comes from ``j + 1``, so the flow across that cut
balances with the birth-death rates alone and

    pi_j = pi_0 * prod_{i<j} lam_i / mu_{i+1},
    pi_("down", j) = pi_j * (1 - c) * a_j * lam / delta.

Every term is a product of non-negative numbers, so tiny probabilities (the ones
the nines are made of) keep full relative precision. :meth:`Pool.transitions`
writes the same chain out state by state for :mod:`fivenines.model.markov`, and
the tests check the two against each other on random pools.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from enum import StrEnum

from fivenines.model.blocks import _check_probability, _check_rate


class StandbyMode(StrEnum):
    """How a standby ages while it waits: like an active unit, slower, or not at all."""

    HOT = "hot"  # running and checked: fails like an active unit
    WARM = "warm"  # running but idle: fails at standby_failure_ratio x lam
    COLD = "cold"  # not running: does not fail while waiting


State = Hashable
"""A chain state: ``j`` (the number of failed units) or ``("down", j)`` (uncovered failure)."""


@dataclass(frozen=True, slots=True)
class Distribution:
    """Steady-state probabilities of a pool's chain, and the unavailability they make."""

    probabilities: dict[State, float]
    capacity: float  # P(fewer than `required` units work)
    switchover: float  # P(down after an uncovered failure, awaiting manual recovery)
    room: float  # P(up, and one more serving-unit failure would leave it up)

    @property
    def unavailability(self) -> float:
        return self.capacity + self.switchover


@dataclass(frozen=True, slots=True)
class Pool:
    """An N+M pool of repairable units. Rates are per any one time unit.

    >>> Pool(active=1, lam=0.01, mu=0.2).unavailability()  # one unit: lam / (lam + mu)
    0.047619047619047616
    >>> p = Pool(active=2, standby=1, lam=0.01, mu=0.2)
    >>> round(p.availability(), 6), p.up(1), p.up(2)
    (0.993413, True, False)

    With a crew per unit the units are independent, so it is 2-out-of-3:

    >>> from fivenines.model.blocks import k_out_of_n
    >>> math.isclose(p.availability(), k_out_of_n(2, 3, 0.2 / 0.21))
    True
    """

    active: int
    lam: float
    mu: float
    standby: int = 0
    repair_crews: int | None = None
    standby_mode: StandbyMode = StandbyMode.HOT
    standby_failure_ratio: float = 0.5
    coverage: float = 1.0
    recovery: float = math.inf
    required: int | None = None

    def __post_init__(self) -> None:
        if self.active < 1:
            raise ValueError(f"active must be >= 1, got {self.active}")
        if self.standby < 0:
            raise ValueError(f"standby must be >= 0, got {self.standby}")
        _check_rate("lam", self.lam)
        _check_rate("mu", self.mu, positive=True)
        if self.repair_crews is not None and self.repair_crews < 1:
            raise ValueError(f"repair_crews must be >= 1 or None (unlimited), got {self.repair_crews}")
        _check_probability("standby_failure_ratio", self.standby_failure_ratio)
        _check_probability("coverage", self.coverage)
        if not self.recovery > 0:
            raise ValueError(f"recovery must be > 0 (math.inf: instant), got {self.recovery!r}")
        if self.required is not None and not 1 <= self.required <= self.n:
            raise ValueError(f"required must be within 1..{self.n}, got {self.required}")

    # ---------------------------------------------------------------- the chain

    @property
    def n(self) -> int:
        return self.active + self.standby

    @property
    def k(self) -> int:
        """Units that must work for the pool to be up."""
        return self.active if self.required is None else self.required

    @property
    def crews(self) -> int:
        return self.n if self.repair_crews is None else min(self.repair_crews, self.n)

    @property
    def standby_lam(self) -> float:
        """Failure rate of one waiting standby.

        >>> [Pool(1, 0.1, 1.0, 1, standby_mode=m).standby_lam for m in StandbyMode]
        [0.1, 0.05, 0.0]
        """
        if self.standby_mode is StandbyMode.HOT:
            return self.lam
        if self.standby_mode is StandbyMode.WARM:
            return self.standby_failure_ratio * self.lam
        return 0.0

    def serving(self, j: int) -> int:
        """Serving units when ``j`` have failed: ``min(N, n - j)``."""
        return min(self.active, self.n - j)

    def up(self, j: int) -> bool:
        return self.n - j >= self.k

    def birth(self, j: int) -> float:
        """Failure rate out of state ``j`` (``j -> j + 1``, covered or not)."""
        a = self.serving(j)
        return a * self.lam + (self.n - j - a) * self.standby_lam

    def death(self, j: int) -> float:
        """Repair rate out of state ``j`` (``j -> j - 1``)."""
        return min(j, self.crews) * self.mu

    def uncovered(self, j: int) -> float:
        """Rate of uncovered failures out of state ``j`` (``j -> ("down", j)``).

        Only a serving unit's failure needs a switchover, and only while the pool
        would survive it; a failure that leaves too few units is an outage either way.
        """
        return self._uncovered_share(j) * self.serving(j) * self.lam

    def _uncovered_share(self, j: int) -> float:
        if self.coverage == 1.0 or not self.up(j + 1) or self.recovery == math.inf:
            return 0.0
        return 1.0 - self.coverage

    def states(self) -> list[State]:
        down: list[State] = [("down", j) for j in range(self.n) if self.uncovered(j) > 0]
        return [*range(self.n + 1), *down]

    def transitions(self) -> dict[tuple[State, State], float]:
        """The chain as ``{(from, to): rate}``, written out for a general solver.

        >>> t = Pool(1, 0.1, 1.0, 1, repair_crews=1, coverage=0.5, recovery=0.25).transitions()
        >>> sorted((str(a), str(b), r) for (a, b), r in t.items())
        [("('down', 0)", '1', 0.25), ('0', "('down', 0)", 0.05), ('0', '1', 0.15000000000000002), ('1', '0', 1.0), ('1', '2', 0.1), ('2', '1', 1.0)]
        """
        rates: dict[tuple[State, State], float] = {}
        for j in range(self.n + 1):
            if j < self.n:
                a = self.serving(j)
                direct = a * self.lam * (1.0 - self._uncovered_share(j)) + (self.n - j - a) * self.standby_lam
                if direct > 0:
                    rates[(j, j + 1)] = direct
            if j > 0:
                rates[(j, j - 1)] = self.death(j)
        for j in range(self.n):
            u = self.uncovered(j)
            if u > 0:
                rates[(j, ("down", j))] = u
                rates[(("down", j), j + 1)] = self.recovery
        return rates

    # ---------------------------------------------------------------- the closed form

    def distribution(self) -> Distribution:
        """Steady state of the chain in product form (see the module docstring)."""
        weights: dict[State, float] = {0: 1.0}
        w = 1.0
        for j in range(self.n):
            u = self.uncovered(j)
            if u > 0:
                weights[("down", j)] = w * u / self.recovery
            w = w * self.birth(j) / self.death(j + 1)
            weights[j + 1] = w
        total = math.fsum(weights.values())
        probs = {s: v / total for s, v in weights.items()}
        capacity = math.fsum(probs[j] for j in range(self.n + 1) if not self.up(j))
        switchover = math.fsum(p for s, p in probs.items() if isinstance(s, tuple))
        room = math.fsum(probs[j] for j in range(self.n) if self.up(j + 1))
        return Distribution(probs, capacity, switchover, room)

    def unavailability(self) -> float:
        return self.distribution().unavailability

    def availability(self) -> float:
        return 1.0 - self.unavailability()


def one_plus_one_unavailability(
    lam: float,
    mu: float,
    coverage: float = 1.0,
    recovery: float = math.inf,
    standby_failure_ratio: float = 1.0,
    repair_crews: int = 1,
) -> float:
    """Unavailability of 1 active + 1 standby with imperfect switchover, in closed form.

    States: both up (0), one up (1), none up (2), and D: the active failed but the
    switchover did not happen (probability ``1 - coverage``), down until manual
    recovery at rate ``recovery``. The standby fails at ``standby_failure_ratio x
    lam`` (1: hot, 0: cold). With ``rho = standby_failure_ratio`` and ``mu2 =
    min(2, repair_crews) x mu``::

        w1 = (1 + rho) lam / mu,   w2 = w1 lam / mu2,   wD = (1 - c) lam / delta
        U  = (w2 + wD) / (1 + w1 + w2 + wD)

    With perfect coverage and one crew it is the classic hot pair
    ``2 lam^2 / (mu^2 + 2 lam mu + 2 lam^2)``:

    >>> lam, mu = 0.01, 0.2
    >>> math.isclose(one_plus_one_unavailability(lam, mu), 2 * lam**2 / (mu**2 + 2 * lam * mu + 2 * lam**2))
    True

    A switchover that fails 1 time in 100 and takes an hour by hand dominates:

    >>> u = one_plus_one_unavailability(1 / 720, 1 / 0.1, coverage=0.99, recovery=1.0)
    >>> f"{u:.3g} vs {one_plus_one_unavailability(1 / 720, 1 / 0.1):.3g} with perfect switchover"
    '1.39e-05 vs 3.86e-08 with perfect switchover'
    """
    _check_rate("lam", lam)
    _check_rate("mu", mu, positive=True)
    _check_probability("coverage", coverage)
    _check_probability("standby_failure_ratio", standby_failure_ratio)
    if not recovery > 0:
        raise ValueError(f"recovery must be > 0, got {recovery!r}")
    if repair_crews < 1:
        raise ValueError(f"repair_crews must be >= 1, got {repair_crews}")
    mu2 = min(2, repair_crews) * mu
    w1 = (1.0 + standby_failure_ratio) * lam / mu
    w2 = w1 * lam / mu2
    wd = 0.0 if recovery == math.inf else (1.0 - coverage) * lam / recovery
    return (w2 + wd) / (1.0 + w1 + w2 + wd)


def common_cause_split(lam: float, beta: float) -> tuple[float, float]:
    """Split a unit's failure rate by the beta-factor: ``((1 - beta) lam, beta lam)``.

    A share ``beta`` of each unit's failures strike every unit of the group at
    once (same host, same bad deploy, same dependency): those are the common-cause
    failures, and no redundancy inside the group helps against them.

    >>> common_cause_split(0.01, 0.25)
    (0.0075, 0.0025)
    """
    _check_rate("lam", lam)
    _check_probability("beta", beta)
    return (1.0 - beta) * lam, beta * lam


def common_cause_unavailability(lam: float, mu: float, beta: float) -> float:
    """Unavailability of a redundant group from common-cause failures alone.

    The beta-factor model puts the common-cause failures in series with the
    redundant part, as one unit failing at ``beta lam`` and repaired at ``mu``:

    >>> round(common_cause_unavailability(0.01, 0.2, 0.1), 6)
    0.004975
    """
    _, lam_cc = common_cause_split(lam, beta)
    _check_rate("mu", mu, positive=True)
    return lam_cc / (lam_cc + mu)
