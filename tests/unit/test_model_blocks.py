"""Closed forms of units and blocks: the published vectors, identities and brute force."""

from __future__ import annotations

import itertools
import math

import pytest

from fivenines.model import blocks as b

# --------------------------------------------------------------------------- published vectors


def test_single_unit_vector_lambda_001_per_hour_repair_5h() -> None:
    lam, mttr = 0.01, 5.0
    assert round(b.availability(1 / lam, mttr), 3) == 0.952
    assert round(b.unit_availability(lam, 1 / mttr), 3) == 0.952


def test_three_out_of_four_vector() -> None:
    assert round(b.k_out_of_n(3, 4, 0.9), 4) == 0.9477


def test_point_availability_vector() -> None:
    assert b.point_availability(1e-4, 3e-2, 1000) == pytest.approx(0.996677740863788, abs=5e-16)


# --------------------------------------------------------------------------- one unit


def test_availability_and_rate_forms_agree() -> None:
    for mttf, mttr in [(100.0, 5.0), (2592000.0, 5.0), (1.0, 1.0), (3.0, 0.0)]:
        if mttr == 0:
            assert b.availability(mttf, mttr) == 1.0
            continue
        assert b.availability(mttf, mttr) == pytest.approx(b.unit_availability(1 / mttf, 1 / mttr), rel=1e-15)
        assert b.unit_unavailability(1 / mttf, 1 / mttr) == pytest.approx(mttr / (mttf + mttr), rel=1e-12)


def test_point_availability_starts_at_one_and_tends_to_steady_state() -> None:
    lam, mu = 0.02, 0.5
    assert b.point_availability(lam, mu, 0) == 1.0
    assert b.point_availability(lam, mu, 1e6) == pytest.approx(b.unit_availability(lam, mu), rel=1e-15)
    values = [b.point_availability(lam, mu, t) for t in range(0, 50)]
    assert all(x > y for x, y in itertools.pairwise(values))


def test_point_availability_solves_its_differential_equation() -> None:
    # dA/dt = mu (1 - A) - lam A  (flow into "up" minus flow out of it)
    lam, mu, h = 0.1, 0.3, 1e-4
    for t in (0.5, 1.0, 3.0, 6.0):
        a = b.point_availability(lam, mu, t)
        derivative = (b.point_availability(lam, mu, t + h) - b.point_availability(lam, mu, t - h)) / (2 * h)
        assert derivative == pytest.approx(mu * (1 - a) - lam * a, rel=1e-6)


def test_point_unavailability_is_the_complement() -> None:
    for t in (0.0, 1.0, 100.0, 1e4):
        u = b.point_unavailability(1e-4, 3e-2, t)
        assert u + b.point_availability(1e-4, 3e-2, t) == pytest.approx(1.0, abs=1e-16)
    # near t = 0 the complement form keeps the digits that 1 - A(t) would lose
    assert b.point_unavailability(1e-9, 1.0, 1e-3) == pytest.approx(1e-9 * (1 - math.exp(-1e-3)), rel=1e-9)


def test_point_availability_without_failures_is_one() -> None:
    assert b.point_availability(0.0, 0.0, 5.0) == 1.0
    assert b.point_availability(0.0, 1.0, 5.0) == 1.0


# --------------------------------------------------------------------------- combinations


def test_series_and_parallel_of_two() -> None:
    assert b.series([0.9, 0.8]) == pytest.approx(0.72)
    assert b.parallel([0.9, 0.8]) == pytest.approx(0.98)
    assert b.series([]) == 1.0
    assert b.parallel([]) == 0.0


def test_series_unavailability_keeps_precision_near_one() -> None:
    us = [1e-13, 2e-13, 3e-13]
    # exact: sum - pairwise products + triple product; the products are below 1e-25
    assert b.series_unavailability(us) == pytest.approx(6e-13, rel=1e-12)
    assert b.series_unavailability([0.5, 1.0]) == 1.0


def test_k_out_of_n_edges_are_series_and_parallel() -> None:
    for n in range(1, 7):
        for a in (0.5, 0.9, 0.999):
            assert b.k_out_of_n(n, n, a) == pytest.approx(b.series([a] * n), rel=1e-12)
            assert b.k_out_of_n(1, n, a) == pytest.approx(b.parallel([a] * n), rel=1e-12)
            assert b.k_out_of_n(0, n, a) == 1.0


def _brute_force_k_of_n(k: int, avails: list[float]) -> float:
    total = 0.0
    for ups in itertools.product((False, True), repeat=len(avails)):
        if sum(ups) >= k:
            total += math.prod(a if up else 1 - a for a, up in zip(avails, ups, strict=True))
    return total


@pytest.mark.parametrize(
    "avails", [[0.9, 0.8, 0.7], [0.99, 0.5, 0.95, 0.6], [0.3], [0.999, 0.999, 0.98, 0.9, 0.7]]
)
def test_mixed_k_out_of_n_matches_enumeration(avails: list[float]) -> None:
    for k in range(len(avails) + 1):
        assert b.k_out_of_n_mixed(k, avails) == pytest.approx(_brute_force_k_of_n(k, avails), abs=1e-14)


def test_mixed_equals_identical_when_units_are_identical() -> None:
    for n in range(1, 8):
        for k in range(n + 1):
            assert b.k_out_of_n_mixed(k, [0.93] * n) == pytest.approx(b.k_out_of_n(k, n, 0.93), abs=1e-14)


def test_up_count_distribution_sums_to_one_and_has_relative_precision() -> None:
    p = b.up_count_distribution([1e-9] * 4)
    assert math.fsum(p) == pytest.approx(1.0)
    assert p[0] == pytest.approx(1e-36, rel=1e-12)  # all four down
    assert b.k_out_of_n_unavailability(1, 4, 1e-9) == pytest.approx(1e-36, rel=1e-12)


def test_k_out_of_n_rejects_impossible_k() -> None:
    with pytest.raises(ValueError, match=r"k must be within 0\.\.3"):
        b.k_out_of_n(4, 3, 0.9)
    with pytest.raises(ValueError, match="k must be within"):
        b.k_out_of_n_mixed(-1, [0.9])


def test_naive_fault_tolerance_falls_while_redundancy_helps() -> None:
    a = 0.99
    naive = [b.naive_fault_tolerance(a, n) for n in range(1, 6)]
    real = [b.k_out_of_n(1, n, a) for n in range(1, 6)]
    assert all(x > y for x, y in itertools.pairwise(naive))
    assert all(x < y for x, y in itertools.pairwise(real))


# --------------------------------------------------------------------------- reading the result


def test_nines_and_downtime() -> None:
    for k in range(1, 10):
        u = 10.0**-k
        assert b.nines_of_unavailability(u) == pytest.approx(k)
        assert b.downtime_per_year(u) == pytest.approx(u * 365.25 * 86400)
        assert b.downtime_per_month(u) == pytest.approx(u * 30 * 86400)
    assert b.nines(0.99) == pytest.approx(2.0)
    assert b.nines(1.0) == math.inf
    assert b.nines_of_unavailability(1.0) == 0.0


def test_format_seconds_picks_a_readable_unit() -> None:
    assert b.format_seconds(0.0) == "0.0 ms"
    assert b.format_seconds(59.9) == "59.9 s"
    assert b.format_seconds(60.0) == "1.0 min"
    assert b.format_seconds(3600.0) == "1.0 h"
    assert b.format_seconds(86400.0) == "1.0 d"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: b.availability(0, 1), "mttf must be a finite number > 0"),
        (lambda: b.availability(1, -1), "mttr must be a finite number >= 0"),
        (lambda: b.unit_unavailability(0.1, 0), "mu must be a finite number > 0"),
        (lambda: b.point_availability(math.nan, 1, 1), "lam must be"),
        (lambda: b.parallel([1.5]), r"within \[0, 1\]"),
        (lambda: b.nines(-0.1), r"within \[0, 1\]"),
        (lambda: b.downtime_per_year(2.0), r"within \[0, 1\]"),
    ],
)
def test_invalid_arguments_are_named(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]
