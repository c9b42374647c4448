"""Counters sampled at times, turned into rates and percentiles over a window."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fivenines.core.rates import Counters, RateWindow, quantile

BOUNDS = (0.01, 0.1, 1.0)


def zeros() -> tuple[int, ...]:
    return (0,) * (len(BOUNDS) + 1)


def test_a_rate_covers_at_least_the_span_once_there_is_that_much_history() -> None:
    w = RateWindow(6.0, BOUNDS)
    for t in range(21):  # 100 requests a second, one sample a second
        w.observe("a", Counters(float(t), requests=100 * t, in_flight=t % 3, latency=zeros()))
    r = w.rates(20.0)["a"]
    assert r.seconds == 6.0 and r.requests_per_s == 100.0
    # in flight: the mean of the gauge over the samples after the base (t = 15..20)
    assert r.in_flight == pytest.approx(sum(t % 3 for t in range(15, 21)) / 6)
    assert len(w.samples["a"]) == 7  # the base and what came after it; nothing older is kept


def test_a_short_history_gives_a_rate_over_what_there_is() -> None:
    w = RateWindow(6.0, BOUNDS)
    w.observe("a", Counters(0.0, requests=0))
    assert w.rates(0.0) == {}  # one sample: no rate yet
    w.observe("a", Counters(2.0, requests=50))
    assert w.rates(2.0)["a"].requests_per_s == 25.0 and w.rates(2.0)["a"].seconds == 2.0


def test_p99_from_the_histogram_increase_only() -> None:
    w = RateWindow(5.0, BOUNDS)
    w.observe("a", Counters(0.0, requests=1000, latency=(1000, 0, 0, 0)))  # before the window: all fast
    w.observe("a", Counters(5.0, requests=1100, latency=(1000, 0, 100, 0)))  # in it: all in (0.1, 1.0]
    r = w.rates(5.0)["a"]
    assert r.requests_per_s == 20.0
    assert r.p99_latency == pytest.approx(0.1 + 0.9 * 0.99)
    w.observe("a", Counters(10.0, requests=1100, latency=(1000, 0, 100, 0)))
    assert w.rates(10.0)["a"].p99_latency is None  # nothing completed in the window


def test_cpu_in_percent_of_one_core() -> None:
    w = RateWindow(4.0, BOUNDS)
    w.observe("a", Counters(0.0, cpu_seconds=10.0))
    w.observe("a", Counters(4.0, cpu_seconds=16.0))
    assert w.rates(4.0)["a"].cpu_percent == 150.0
    w.observe("b", Counters(0.0))
    w.observe("b", Counters(4.0))
    assert w.rates(4.0)["b"].cpu_percent is None


def test_a_counter_going_down_restarts_the_history() -> None:
    w = RateWindow(6.0, BOUNDS)
    w.observe("a", Counters(0.0, requests=500, cpu_seconds=9.0))
    w.observe("a", Counters(1.0, requests=600, cpu_seconds=10.0))
    w.observe("a", Counters(2.0, requests=650, cpu_seconds=0.1))  # a new process: its CPU starts again
    assert w.rates(2.0) == {}
    w.observe("a", Counters(3.0, requests=700, cpu_seconds=0.6))
    assert w.rates(3.0)["a"].requests_per_s == 50.0 and w.rates(3.0)["a"].cpu_percent == pytest.approx(50.0)


def test_same_instant_replaces_and_stale_targets_have_no_rate() -> None:
    w = RateWindow(6.0, BOUNDS)
    w.observe("a", Counters(0.0, requests=0))
    w.observe("a", Counters(1.0, requests=10))
    w.observe("a", Counters(1.0, requests=20))
    assert len(w.samples["a"]) == 2 and w.rates(1.0)["a"].requests_per_s == 20.0
    assert w.rates(7.0) != {} and w.rates(7.1) == {}  # newest sample older than the span: nothing


def test_forget_and_keep_only() -> None:
    w = RateWindow(6.0, BOUNDS)
    for tid in "abc":
        w.observe(tid, Counters(0.0))
    w.forget("a")
    w.keep_only(["b", "z"])
    assert set(w.samples) == {"b"} and repr(w) == "<RateWindow span=6s targets=1>"


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="span must be above 0"):
        RateWindow(0.0, BOUNDS)
    with pytest.raises(ValueError, match="2 latency buckets, expected 4"):
        RateWindow(1.0, BOUNDS).observe("a", Counters(0.0, latency=(0, 0)))
    with pytest.raises(ValueError, match="one more"):
        quantile(0.5, BOUNDS, (1, 2, 3))


def test_quantile_edges() -> None:
    assert quantile(0.99, BOUNDS, (0, 0, 0, 0)) is None
    assert quantile(0.99, BOUNDS, (0, 0, 0, 7)) == 1.0  # the unbounded bucket: its lower bound
    assert quantile(0.5, BOUNDS, (10, 0, 0, 0)) == pytest.approx(0.005)
    assert quantile(1.0, BOUNDS, (5, 5, 0, 0)) == pytest.approx(0.1)


@given(st.lists(st.integers(0, 1000), min_size=4, max_size=4), st.floats(0, 1), st.floats(0, 1))
def test_quantile_is_monotone_and_bounded(counts: list[int], q1: float, q2: float) -> None:
    a, b = quantile(min(q1, q2), BOUNDS, counts), quantile(max(q1, q2), BOUNDS, counts)
    if sum(counts) == 0:
        assert a is None and b is None
    else:
        assert a is not None and b is not None and 0 <= a <= b <= BOUNDS[-1]


@given(st.floats(0.1, 5000), st.lists(st.floats(0.05, 3), min_size=2, max_size=40), st.floats(0.5, 20))
def test_a_steady_rate_is_measured_exactly(rate: float, gaps: list[float], span: float) -> None:
    w = RateWindow(span, BOUNDS)
    t, cpu = 0.0, 0.0
    for gap in gaps:
        w.observe("a", Counters(t, requests=round(rate * t * 1000), cpu_seconds=cpu))
        t += gap
        cpu += gap * 0.25
    last = t - gaps[-1]
    r = w.rates(last)["a"]
    assert r.requests_per_s == pytest.approx(rate * 1000, rel=1e-3, abs=1.0 / r.seconds)
    assert r.cpu_percent == pytest.approx(25.0)
    assert r.seconds >= min(span, last) - 1e-9
