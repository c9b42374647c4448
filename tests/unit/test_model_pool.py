"""N+M pools: the closed form against the general CTMC solver, and against known special cases."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.model import markov
from fivenines.model.blocks import k_out_of_n_unavailability, unit_unavailability
from fivenines.model.pool import (
    Pool,
    StandbyMode,
    common_cause_split,
    common_cause_unavailability,
    one_plus_one_unavailability,
)

DETERMINISTIC = settings(derandomize=True, max_examples=300, deadline=None, database=None)


def _solver(pool: Pool, method: str = "gth") -> dict[object, float]:
    return markov.stationary(pool.states(), pool.transitions(), method)  # type: ignore[arg-type]


def _unavailability_from(pool: Pool, pi: dict[object, float]) -> float:
    return math.fsum(p for s, p in pi.items() if isinstance(s, tuple) or not pool.up(s))  # type: ignore[arg-type]


@st.composite
def pools(draw: st.DrawFn) -> Pool:
    active = draw(st.integers(1, 6))
    standby = draw(st.integers(0, 4))
    n = active + standby
    mu = draw(st.floats(1e-3, 1e2))
    lam = mu * draw(st.floats(1e-5, 5.0))
    coverage = draw(st.sampled_from([1.0, 0.0, 0.5, 0.9, 0.999]) | st.floats(0.0, 1.0))
    return Pool(
        active=active,
        standby=standby,
        lam=lam,
        mu=mu,
        repair_crews=draw(st.none() | st.integers(1, n)),
        standby_mode=draw(st.sampled_from(StandbyMode)),
        standby_failure_ratio=draw(st.floats(0.0, 1.0)),
        coverage=coverage,
        recovery=mu * draw(st.floats(1e-3, 1e2)),
        required=draw(st.none() | st.integers(1, n)),
    )


@DETERMINISTIC
@given(pools())
def test_closed_form_matches_ctmc_solver_on_the_same_chain(pool: Pool) -> None:
    closed = pool.distribution()
    pi = _solver(pool, "gth")
    assert set(pi) == set(closed.probabilities)
    for state, p in pi.items():
        assert closed.probabilities[state] == pytest.approx(p, rel=1e-9, abs=1e-300), state
    assert closed.unavailability == pytest.approx(_unavailability_from(pool, pi), rel=1e-9, abs=1e-300)
    solved = _solver(pool, "solve")
    for state, p in solved.items():
        assert closed.probabilities[state] == pytest.approx(p, rel=1e-6, abs=1e-11), state


def _reference_transitions(pool: Pool) -> dict[tuple[object, object], float]:
    """The chain written from the model's words, independently of Pool's helper methods."""
    n, big_n = pool.active + pool.standby, pool.active
    need = pool.required or big_n
    crews = n if pool.repair_crews is None else pool.repair_crews
    standby_rate = {
        StandbyMode.HOT: pool.lam,
        StandbyMode.WARM: pool.standby_failure_ratio * pool.lam,
        StandbyMode.COLD: 0.0,
    }[pool.standby_mode]
    rates: dict[tuple[object, object], float] = {}
    for failed in range(n + 1):
        working = n - failed
        serving = min(big_n, working)
        waiting = working - serving
        survives_one_more = working - 1 >= need
        p_uncovered = (1 - pool.coverage) if survives_one_more else 0.0
        if working > 0:
            direct = serving * pool.lam * (1 - p_uncovered) + waiting * standby_rate
            if direct > 0:
                rates[(failed, failed + 1)] = direct
            if serving * pool.lam * p_uncovered > 0:
                rates[(failed, ("down", failed))] = serving * pool.lam * p_uncovered
                rates[(("down", failed), failed + 1)] = pool.recovery
        if failed > 0:
            rates[(failed, failed - 1)] = min(failed, crews) * pool.mu
    return rates


@DETERMINISTIC
@given(pools())
def test_pool_writes_the_chain_the_model_describes(pool: Pool) -> None:
    ref = _reference_transitions(pool)
    got = pool.transitions()
    assert set(got) == set(ref)
    for key, rate in ref.items():
        assert got[key] == pytest.approx(rate, rel=1e-12), key


@DETERMINISTIC
@given(pools())
def test_distribution_is_a_distribution(pool: Pool) -> None:
    d = pool.distribution()
    assert math.fsum(d.probabilities.values()) == pytest.approx(1.0, rel=1e-12)
    assert all(p >= 0 for p in d.probabilities.values())
    assert 0.0 <= d.capacity <= 1.0 and 0.0 <= d.switchover <= 1.0 and 0.0 <= d.room <= 1.0
    assert d.unavailability + math.fsum(p for s, p in d.probabilities.items() if not isinstance(s, tuple) and pool.up(s)) == pytest.approx(1.0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- special cases with known answers


def test_one_unit_is_lambda_over_lambda_plus_mu() -> None:
    for lam, mu in [(0.01, 0.2), (1e-7, 0.2), (3.0, 1.0)]:
        assert Pool(active=1, lam=lam, mu=mu).unavailability() == pytest.approx(unit_unavailability(lam, mu), rel=1e-14)


def test_hot_standby_with_a_crew_per_unit_is_k_out_of_n() -> None:
    lam, mu = 0.01, 0.2
    u = unit_unavailability(lam, mu)
    for active, standby in itertools.product(range(1, 5), range(4)):
        n = active + standby
        for required in range(1, n + 1):
            pool = Pool(active=active, standby=standby, lam=lam, mu=mu, required=required)
            assert pool.unavailability() == pytest.approx(k_out_of_n_unavailability(required, n, u), rel=1e-12)


def test_one_crew_hot_pool_is_the_machine_repairman_model() -> None:
    # pi_j proportional to n! / (n - j)! * (lam / mu)^j
    lam, mu = 0.05, 1.0
    for n in range(1, 7):
        for k in range(1, n + 1):
            pool = Pool(active=k, standby=n - k, lam=lam, mu=mu, repair_crews=1)
            w = [math.perm(n, j) * (lam / mu) ** j for j in range(n + 1)]
            expected = math.fsum(w[n - k + 1 :]) / math.fsum(w)
            assert pool.unavailability() == pytest.approx(expected, rel=1e-12)


def test_cold_standby_one_crew_pair() -> None:
    # states 0, 1, 2; the waiting cold unit does not fail: both steps at lam
    lam, mu = 0.1, 1.0
    rho = lam / mu
    pool = Pool(active=1, standby=1, lam=lam, mu=mu, repair_crews=1, standby_mode=StandbyMode.COLD)
    assert pool.unavailability() == pytest.approx(rho**2 / (1 + rho + rho**2), rel=1e-14)


def test_one_plus_one_closed_form_matches_pool_and_solver() -> None:
    lam, mu, delta = 0.02, 0.5, 0.1
    for coverage, ratio, crews in itertools.product((1.0, 0.95, 0.5, 0.0), (1.0, 0.3, 0.0), (1, 2)):
        mode = {1.0: StandbyMode.HOT, 0.0: StandbyMode.COLD}.get(ratio, StandbyMode.WARM)
        pool = Pool(
            active=1, standby=1, lam=lam, mu=mu, repair_crews=crews, standby_mode=mode,
            standby_failure_ratio=ratio, coverage=coverage, recovery=delta,
        )
        closed = one_plus_one_unavailability(lam, mu, coverage, delta, ratio, crews)
        assert closed == pytest.approx(pool.unavailability(), rel=1e-12)
        assert closed == pytest.approx(_unavailability_from(pool, _solver(pool)), rel=1e-10)


def test_one_plus_one_perfect_coverage_is_the_classic_hot_pair() -> None:
    lam, mu = 0.01, 0.2
    assert one_plus_one_unavailability(lam, mu) == pytest.approx(
        2 * lam**2 / (mu**2 + 2 * lam * mu + 2 * lam**2), rel=1e-14
    )


def test_imperfect_switchover_adds_about_one_minus_c_lambda_over_delta() -> None:
    lam, mu, delta = 1e-6, 0.2, 1 / 3600
    for c in (0.9, 0.99, 0.999):
        extra = one_plus_one_unavailability(lam, mu, c, delta) - one_plus_one_unavailability(lam, mu)
        assert extra == pytest.approx((1 - c) * lam / delta, rel=1e-3)


# --------------------------------------------------------------------------- monotonicity


def test_more_standby_more_crews_better_mode_each_help() -> None:
    lam, mu = 0.01, 0.1
    for active in range(1, 4):
        us = [Pool(active=active, standby=m, lam=lam, mu=mu, repair_crews=1).unavailability() for m in range(4)]
        assert all(x > y for x, y in itertools.pairwise(us))
        crews = [Pool(active, lam, mu, 2, repair_crews=r).unavailability() for r in (1, 2, 3)]
        assert crews[0] > crews[1] > crews[2]
        modes = [
            Pool(active, lam, mu, 2, standby_mode=m, standby_failure_ratio=0.5, repair_crews=1).unavailability()
            for m in (StandbyMode.HOT, StandbyMode.WARM, StandbyMode.COLD)
        ]
        assert modes[0] > modes[1] > modes[2]


def test_lower_coverage_or_slower_recovery_hurts() -> None:
    base = {"active": 2, "standby": 1, "lam": 0.01, "mu": 0.5}
    by_c = [Pool(**base, coverage=c, recovery=0.05).unavailability() for c in (1.0, 0.99, 0.9, 0.5)]  # type: ignore[arg-type]
    assert all(x < y for x, y in itertools.pairwise(by_c))
    by_delta = [Pool(**base, coverage=0.9, recovery=d).unavailability() for d in (1.0, 0.1, 0.01)]  # type: ignore[arg-type]
    assert all(x < y for x, y in itertools.pairwise(by_delta))


def test_coverage_only_matters_when_the_pool_would_survive() -> None:
    # 2+0 needing both: every failure is an outage, handled or not
    a = Pool(active=2, lam=0.01, mu=0.5, coverage=0.5, recovery=0.01)
    b = Pool(active=2, lam=0.01, mu=0.5)
    assert a.unavailability() == b.unavailability()
    assert a.states() == [0, 1, 2]


def test_no_failures_means_always_up() -> None:
    pool = Pool(active=3, standby=1, lam=0.0, mu=1.0, coverage=0.5, recovery=1.0)
    d = pool.distribution()
    assert d.unavailability == 0.0
    assert d.probabilities[0] == 1.0


# --------------------------------------------------------------------------- common cause


def test_common_cause_split_and_unavailability() -> None:
    ind, cc = common_cause_split(0.01, 0.25)
    assert ind + cc == pytest.approx(0.01)
    assert cc == pytest.approx(0.0025)
    assert common_cause_unavailability(0.01, 0.2, 0.0) == 0.0
    assert common_cause_unavailability(0.01, 0.2, 1.0) == pytest.approx(unit_unavailability(0.01, 0.2))


# --------------------------------------------------------------------------- the chain itself


def test_chain_rates_of_a_warm_pool() -> None:
    pool = Pool(active=2, standby=2, lam=1.0, mu=10.0, repair_crews=2, standby_mode=StandbyMode.WARM,
                standby_failure_ratio=0.25)
    assert [pool.serving(j) for j in range(5)] == [2, 2, 2, 1, 0]
    assert [pool.birth(j) for j in range(4)] == [2.5, 2.25, 2.0, 1.0]
    assert [pool.death(j) for j in range(5)] == [0.0, 10.0, 20.0, 20.0, 20.0]
    assert [pool.up(j) for j in range(5)] == [True, True, True, False, False]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"active": 0}, "active must be >= 1"),
        ({"standby": -1}, "standby must be >= 0"),
        ({"lam": -1.0}, "lam must be"),
        ({"mu": 0.0}, "mu must be a finite number > 0"),
        ({"repair_crews": 0}, "repair_crews must be >= 1"),
        ({"coverage": 1.5}, "coverage must be within"),
        ({"standby_failure_ratio": -0.1}, "standby_failure_ratio must be within"),
        ({"recovery": 0.0}, "recovery must be > 0"),
        ({"required": 4}, r"required must be within 1..3"),
    ],
)
def test_pool_validation(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"active": 2, "standby": 1, "lam": 0.1, "mu": 1.0} | kwargs
    with pytest.raises(ValueError, match=message):
        Pool(**args)  # type: ignore[arg-type]


def test_one_plus_one_validation() -> None:
    with pytest.raises(ValueError, match="recovery must be > 0"):
        one_plus_one_unavailability(0.1, 1.0, 0.9, 0.0)
    with pytest.raises(ValueError, match="repair_crews must be >= 1"):
        one_plus_one_unavailability(0.1, 1.0, repair_crews=0)
