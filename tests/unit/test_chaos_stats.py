"""Wilson intervals (published vectors and properties), percentiles, means with intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.chaos.stats import Mean, Proportion, format_availability, percentile, wilson


# Newcombe (1998), "Two-sided confidence intervals for the single proportion",
# Statistics in Medicine 17:857-872, Table I, method 3 (Wilson score, no continuity correction).
@pytest.mark.parametrize("k, n, lo, hi", [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_published_vectors(k: int, n: int, lo: float, hi: float) -> None:
    a, b = wilson(k, n)
    assert (round(a, 4), round(b, 4)) == (lo, hi)


def _wilson_by_quadratic(k: int, n: int, z: float) -> tuple[float, float]:
    """Independent route: the ends are the roots in p of (phat - p)^2 = z^2 p (1 - p) / n."""
    ph = k / n
    a = 1 + z * z / n
    b = -(2 * ph + z * z / n)
    c = ph * ph
    d = math.sqrt(max(0.0, b * b - 4 * a * c))
    return (-b - d) / (2 * a), (-b + d) / (2 * a)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 100_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_properties(kn: tuple[int, int]) -> None:
    k, n = kn
    lo, hi = wilson(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    qlo, qhi = _wilson_by_quadratic(k, n, 1.959963984540054)
    assert lo == pytest.approx(max(0.0, qlo), abs=1e-9)
    assert hi == pytest.approx(min(1.0, qhi), abs=1e-9)
    # more of the same evidence narrows the interval
    lo4, hi4 = wilson(4 * k, 4 * n)
    assert hi4 - lo4 < hi - lo


def test_wilson_edges() -> None:
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(5, 5)[1] == 1.0
    assert wilson(0, 5)[0] == 0.0
    for bad in ((-1, 5), (6, 5), (0, -1)):
        with pytest.raises(ValueError, match="need 0 <= k <= n"):
            wilson(*bad)


def test_proportion_json_and_text() -> None:
    p = Proportion(59_994, 60_000)
    d = p.to_json()
    assert d["value"] == pytest.approx(0.9999) and d["k"] == 59_994 and d["n"] == 60_000
    assert d["ci95"][0] < 0.9999 < d["ci95"][1]
    assert str(p).startswith("59994/60000 = 99.99000% [95% CI 99.9")
    assert Proportion(0, 0).to_json() == {"value": None, "k": 0, "n": 0, "ci95": None}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200), st.floats(0, 100))
def test_percentile_matches_numpy_linear(values: list[float], q: float) -> None:
    got = percentile(sorted(values), q)
    assert got == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-6)


def test_mean_interval_by_hand() -> None:
    m = Mean((2.0, 4.0, 6.0, 8.0))
    assert m.mean == 5.0
    s = math.sqrt(sum((x - 5.0) ** 2 for x in m.values) / 3)
    lo, hi = m.interval or (0, 0)
    assert hi - 5.0 == pytest.approx(3.182 * s / 2)
    assert lo == pytest.approx(5.0 - 3.182 * s / 2)
    assert Mean(()).to_json() == {"mean": None, "n": 0, "min": None, "max": None, "ci95": None}
    assert Mean((1.5,)).to_json()["ci95"] is None
    # durations never get a negative lower end
    assert (Mean((0.01, 0.02, 3.0)).interval or (None,))[0] == 0.0
    big = Mean(tuple(float(i % 7) for i in range(100)))
    assert big.interval is not None  # beyond the t table: the normal quantile


def test_format_availability() -> None:
    assert format_availability(0.5) == "50.0000%"
    assert format_availability(0.99995) == "99.99500%"
    assert format_availability(1 - 2e-8) == "99.99999800%"
    assert format_availability(1 - 1e-12) == ">99.9999999%"
    assert format_availability(1.0) == "100%"
    assert format_availability(None) == "-"
