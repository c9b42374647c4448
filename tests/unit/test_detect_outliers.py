"""Passive outlier ejection: consecutive errors and 5xx, ejection time, caps, latency outliers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.core.detect import LatencyPolicy, Outcome, OutlierDetector, OutlierPolicy

OK, E5, CONN, RESET, TIMEOUT = (int(o) for o in Outcome)
NO_LAT = OutlierPolicy(latency=None)


def test_one_connect_error_ejects_at_once_by_default() -> None:
    d = OutlierDetector(4, NO_LAT)
    e = d.record(0, CONN, 0.001, 100.0)
    assert e is not None and (e.index, e.at, e.until, e.count) == (0, 100.0, 110.0, 1)
    assert e.reason == "1 consecutive connect errors" and str(e) == "ejected for 10s: 1 consecutive connect errors"
    assert d.ejected(0) and d.ejected_count == 1
    # further outcomes of an ejected target eject nothing more
    assert d.record(0, CONN, 0.001, 100.1) is None and d.ejected_count == 1


def test_per_try_timeout_and_reset_count_as_errors() -> None:
    d = OutlierDetector(4, OutlierPolicy(consecutive_errors=2, latency=None))
    assert d.record(1, TIMEOUT, 0.5, 1.0) is None
    e = d.record(1, RESET, 0.01, 1.1)
    assert e is not None and e.reason == "2 consecutive resets"


def test_5xx_needs_consecutive_answers_and_a_success_resets() -> None:
    d = OutlierDetector(4, OutlierPolicy(consecutive_5xx=3, latency=None))
    for t, o in enumerate([E5, E5, OK, E5, E5]):
        assert d.record(2, o, 0.01, float(t)) is None
    e = d.record(2, E5, 0.01, 5.0)
    assert e is not None and e.reason == "3 consecutive 5xx"
    assert d.snapshot(2) == {"consecutive_errors": 0, "consecutive_5xx": 3, "ejections": 1}


def test_zero_thresholds_never_eject() -> None:
    d = OutlierDetector(2, OutlierPolicy(consecutive_errors=0, consecutive_5xx=0, latency=None))
    for t in range(100):
        assert d.record(0, CONN if t % 2 else E5, 0.01, float(t)) is None


def test_ejection_time_grows_with_count_capped_and_resets_after_good_behaviour() -> None:
    p = OutlierPolicy(base_ejection_time=10, max_ejection_time=25, latency=None)
    d = OutlierDetector(3, p)
    now = 0.0
    lengths = []
    for _ in range(4):
        e = d.record(0, CONN, 0.0, now)
        assert e is not None
        lengths.append(e.until - e.at)
        ej, back = d.sweep(e.until)
        assert back == [0] and ej == [] and not d.ejected(0)
        now = e.until + 1.0
    assert lengths == [10.0, 20.0, 25.0, 25.0]
    # a long good spell (max_ejection_time since the last ejection ended) starts the count over
    e = d.record(0, CONN, 0.0, now + 25.0)
    assert e is not None and e.count == 1 and e.until - e.at == 10.0


def test_max_ejection_percent_caps_ejections() -> None:
    d = OutlierDetector(4, OutlierPolicy(max_ejection_percent=50, latency=None))
    assert d.record(0, CONN, 0.0, 1.0) is not None
    assert d.record(1, CONN, 0.0, 1.0) is not None
    assert d.record(2, CONN, 0.0, 1.0) is None  # 2 of 4 already out
    assert [d.ejected(i) for i in range(4)] == [True, True, False, False]
    d.sweep(11.0)  # both back
    assert d.record(2, CONN, 0.0, 12.0) is not None


def test_at_least_one_may_be_ejected_unless_zero_percent() -> None:
    assert OutlierPolicy(max_ejection_percent=10).max_ejected(3) == 1
    assert OutlierPolicy(max_ejection_percent=0).max_ejected(3) == 0
    d = OutlierDetector(3, OutlierPolicy(max_ejection_percent=0, latency=None))
    assert d.record(0, CONN, 0.0, 0.0) is None


def test_reinstate_ends_an_ejection_early_and_clears_counters() -> None:
    d = OutlierDetector(2, OutlierPolicy(consecutive_5xx=2, latency=None))
    d.record(0, E5, 0.0, 0.0)
    assert not d.reinstate(0, 0.5)  # not ejected: only counters cleared
    assert d.record(0, E5, 0.0, 1.0) is None  # the streak started over
    assert d.record(0, E5, 0.0, 1.1) is not None
    assert d.reinstate(0, 2.0) and not d.ejected(0) and d.ejected_count == 0
    assert d.ejections(0) == 1


def lat_policy(**kw: float) -> OutlierPolicy:
    return OutlierPolicy(latency=LatencyPolicy(**kw), consecutive_errors=0, consecutive_5xx=0)  # type: ignore[arg-type]


def feed(d: OutlierDetector, i: int, latency: float, n: int, start: float, step: float = 0.01) -> float:
    t = start
    for _ in range(n):
        d.record(i, OK, latency, t)
        t += step
    return t


def test_a_latency_outlier_is_ejected_on_sweep() -> None:
    d = OutlierDetector(4, lat_policy(factor=5, min_latency=0.1, window=10, min_requests=20))
    for i in range(3):
        feed(d, i, 0.005, 50, 0.0)
    feed(d, 3, 2.0, 25, 0.0)
    ej, back = d.sweep(1.0)
    assert back == [] and [e.index for e in ej] == [3]
    assert ej[0].reason == "latency outlier: p90 2000ms > 5 x peers' median 5.0ms"


def test_latency_needs_enough_samples_peers_and_a_floor() -> None:
    d = OutlierDetector(3, lat_policy(factor=5, min_latency=0.1, min_requests=20))
    feed(d, 0, 0.005, 50, 0.0)
    feed(d, 1, 2.0, 10, 0.0)  # too few samples to be judged
    assert d.sweep(1.0) == ([], [])
    d2 = OutlierDetector(3, lat_policy(factor=5, min_latency=0.1, min_requests=20))
    feed(d2, 0, 2.0, 50, 0.0)  # alone: nobody to compare with
    assert d2.sweep(1.0) == ([], [])
    d3 = OutlierDetector(3, lat_policy(factor=5, min_latency=0.1, min_requests=20))
    feed(d3, 0, 0.001, 50, 0.0)
    feed(d3, 1, 0.001, 50, 0.0)
    feed(d3, 2, 0.050, 50, 0.0)  # 50x slower, but under the 100 ms floor
    assert d3.sweep(1.0) == ([], [])


def test_latency_window_forgets_old_samples() -> None:
    d = OutlierDetector(3, lat_policy(factor=5, min_latency=0.1, window=5, min_requests=20))
    for i in range(2):
        feed(d, i, 0.005, 50, 0.0)
    feed(d, 2, 1.0, 50, 0.0)
    assert d.latency_outliers(100.0) == []  # all samples older than the window
    assert [i for i, _ in d.latency_outliers(1.0)] == [2]


def test_a_window_holding_part_of_the_samples_judges_on_that_part() -> None:
    d = OutlierDetector(3, lat_policy(factor=5, min_latency=0.1, window=5, min_requests=20))
    for i in range(2):
        feed(d, i, 0.005, 50, 10.0)
    feed(d, 2, 1.0, 50, 0.0)  # slow, but long ago ...
    feed(d, 2, 0.005, 19, 10.0)  # ... and too few recent samples to judge
    assert d.latency_outliers(12.0) == []
    feed(d, 2, 1.0, 30, 11.0)  # the recent ones now include 30 slow of 49
    assert [i for i, _ in d.latency_outliers(12.0)] == [2]


def _outliers_by_definition(d: OutlierDetector, lp: LatencyPolicy, now: float) -> list[int]:
    """latency_outliers as its docstring says, from the samples themselves (the oracle)."""
    summary = {}
    for i, s in enumerate(d._t):
        samples = sorted(s.lat[k] for k in range(s.n) if s.times[k] >= now - lp.window)
        if not s.until and len(samples) >= lp.min_requests:
            summary[i] = (samples[len(samples) // 2] if len(samples) % 2 else
                          (samples[len(samples) // 2 - 1] + samples[len(samples) // 2]) / 2,
                          samples[max(0, min(len(samples) - 1, math.ceil(lp.percentile * len(samples)) - 1))])
    out = []
    for i, (_, high) in summary.items():
        peers = sorted(med for j, (med, _) in summary.items() if j != i)
        if not peers:
            continue
        ref = peers[len(peers) // 2] if len(peers) % 2 else (peers[len(peers) // 2 - 1] + peers[len(peers) // 2]) / 2
        if high > lp.min_latency and high > lp.factor * ref:
            out.append((high / max(ref, 1e-9), i))
    return [i for _, i in sorted(out, reverse=True)]


@settings(max_examples=300, deadline=None)
@given(samples=st.lists(st.tuples(st.integers(0, 3), st.sampled_from([0.001, 0.005, 0.2, 1.0, 3.0]),
                                  st.floats(0.0, 2.0)), max_size=120),
       later=st.floats(0.0, 10.0))
def test_latency_outliers_match_their_definition(samples: list[tuple[int, float, float]], later: float) -> None:
    """Whatever part of the ring is inside the window (none, some, all; the ring wrapped or not)."""
    lp = LatencyPolicy(factor=3, min_latency=0.1, window=4, min_requests=4)
    d = OutlierDetector(4, OutlierPolicy(latency=lp), ring=16)
    now = 0.0
    for i, latency, dt in samples:
        now += dt
        d.record(i, OK, latency, now)
    assert [i for i, _ in d.latency_outliers(now + later)] == _outliers_by_definition(d, lp, now + later)


def test_a_majority_of_slow_targets_is_the_norm() -> None:
    d = OutlierDetector(3, lat_policy(factor=5, min_latency=0.1))
    feed(d, 0, 0.005, 50, 0.0)
    feed(d, 1, 1.0, 50, 0.0)
    feed(d, 2, 1.0, 50, 0.0)
    # for each slow one, the others' medians are 5 ms and 1 s: their median, ~0.5 s, is not 5x faster
    assert d.latency_outliers(1.0) == []


def test_reinstated_target_is_judged_on_fresh_samples_only() -> None:
    d = OutlierDetector(3, lat_policy(factor=5, min_latency=0.1, window=60))
    for i in range(2):
        feed(d, i, 0.005, 50, 0.0)
    feed(d, 2, 1.0, 50, 0.0)
    ej, _ = d.sweep(1.0)
    assert [e.index for e in ej] == [2]
    ej, back = d.sweep(ej[0].until)
    assert back == [2] and ej == []  # its old slow samples were dropped


@settings(max_examples=200)
@given(
    events=st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from([OK, E5, CONN, RESET, TIMEOUT]), st.floats(0.0, 3.0),
                  st.floats(0.0, 5.0)),
        max_size=200,
    ),
    pct=st.sampled_from([0.0, 10.0, 34.0, 50.0, 100.0]),
)
def test_ejection_invariants(events: list[tuple[int, int, float, float]], pct: float) -> None:
    """Never more ejected than allowed; the count matches; ejections end when their time is up."""
    p = OutlierPolicy(consecutive_errors=1, consecutive_5xx=2, base_ejection_time=3, max_ejection_time=9,
                      max_ejection_percent=pct, latency=LatencyPolicy(min_requests=3, window=5))
    d = OutlierDetector(6, p, ring=16)
    now = 0.0
    for i, outcome, latency, dt in events:
        now += dt
        d.sweep(now)
        e = d.record(i, outcome, latency, now)
        if e is not None:
            assert e.until - e.at == pytest.approx(min(9.0, 3.0 * e.count))
        ejected = [k for k in range(6) if d.ejected(k)]
        assert len(ejected) == d.ejected_count <= p.max_ejected(6)
        # every ejection whose time was up has been ended by the sweep
        assert all(d.ejected_until(k) == 0 or d.ejected_until(k) > now for k in range(6))
    d.sweep(now + 10.0)
    assert d.ejected_count == 0 and not any(d.ejected(k) for k in range(6))


def test_a_veto_keeps_a_member_in_without_counting_an_ejection() -> None:
    d = OutlierDetector(2, NO_LAT)
    d.may_eject = lambda i: i != 0
    assert d.record(0, CONN, 0.0, 1.0) is None and d.vetoed == 1
    assert not d.ejected(0) and d.ejections(0) == 0 and d.snapshot(0)["consecutive_errors"] == 0
    assert d.record(1, CONN, 0.0, 1.0) is not None


def test_repr() -> None:
    d = OutlierDetector(2, NO_LAT)
    d.record(1, CONN, 0.0, 0.0)
    assert repr(d) == "<OutlierDetector size=2 ejected=[1]>"


def test_hot_path_records_into_a_fixed_ring() -> None:
    d = OutlierDetector(1, lat_policy(min_requests=1), ring=8)
    for t in range(20):
        d.record(0, OK, float(t), float(t))
    s = d._t[0]
    assert s.n == 8 and sorted(s.lat) == [float(x) for x in range(12, 20)]
    with pytest.raises(IndexError):
        d.record(1, OK, 0.0, 0.0)
