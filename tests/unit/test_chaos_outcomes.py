"""Availability from outcome logs: request-based, time-based, per-second series, error causes, SLO."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.chaos.outcomes import Err, OutcomeLog
from fivenines.chaos.report import slo_summary


def _log(rate: float, outcomes: list[tuple[int, Err]], latency: float = 0.002) -> OutcomeLog:
    log = OutcomeLog(rate, len(outcomes))
    for i, (status, err) in enumerate(outcomes):
        if err is not Err.UNSENT:
            log.record(i, i / rate + latency, status, err)
    return log


def test_valid_and_good() -> None:
    ok = (200, Err.OK)
    log = _log(10, [ok, ok, (404, Err.OK), (503, Err.OK), (0, Err.RESET), (0, Err.TIMEOUT), (302, Err.OK),
                    (0, Err.CONNECT), (0, Err.UNSENT), (0, Err.PROTOCOL), (429, Err.OK), (408, Err.OK)])
    # the 404 is the client's doing and the unsent request never reached the system: both not valid;
    # a 429 (shed) or 408 (the server gave up) is the service's failure
    p = log.request_availability()
    assert (p.k, p.n) == (3, 10)
    assert log.errors_by_kind() == {"5xx": 1, "408": 1, "429": 1, "connect": 1, "reset": 1, "timeout": 1,
                                    "protocol": 1}
    assert int(log.failed_mask().sum()) == 7


def test_time_availability_counts_seconds_by_scheduled_time() -> None:
    rate = 100
    outcomes = [(200, Err.OK)] * 1000  # 10 seconds
    outcomes[150] = (500, Err.OK)  # second 1
    outcomes[151] = (0, Err.TIMEOUT)  # second 1 again
    outcomes[999] = (0, Err.RESET)  # second 9
    log = _log(rate, outcomes)
    p = log.time_availability()
    assert (p.k, p.n) == (8, 10)
    # tolerating 1 % of errors per second: second 1 (2 %) stays bad, second 9 (1 %) is good
    p = log.time_availability(max_error_ratio=0.01)
    assert (p.k, p.n) == (9, 10)
    # 5-second buckets
    p = log.time_availability(bucket=5.0)
    assert (p.k, p.n) == (0, 2)


def test_failure_times_use_completion_or_schedule() -> None:
    log = OutcomeLog(10, 4)
    log.record(0, 0.01, 200)
    log.record(1, 5.1, 0, Err.TIMEOUT)  # due at 0.1, timed out at 5.1
    log.record(3, 0.31, 502)
    assert log.failure_times().tolist() == [0.31, 5.1]


def test_latency_summary_and_series() -> None:
    rate = 50
    n = 150  # three seconds
    log = OutcomeLog(rate, n)
    for i in range(n):
        sec = i // rate
        lat = 0.001 if sec != 1 else 0.400  # the middle second is slow
        log.record(i, i / rate + lat, 200 if i != 120 else 500)
    s = log.series(1.0)
    assert s.t.tolist() == [0.0, 1.0, 2.0]
    assert s.sent.tolist() == [50, 50, 50]
    assert s.failed.tolist() == [0, 0, 1]
    assert int(s.completed.sum()) == 149
    assert s.p99_ms[1] == pytest.approx(400.0, rel=1e-6)
    assert s.p50_ms[0] == pytest.approx(1.0, rel=1e-6)
    lat = log.latency_summary()
    assert lat["max_ms"] == pytest.approx(400.0, rel=1e-6)
    assert lat["p50_ms"] == pytest.approx(1.0, rel=1e-6)
    js = s.to_json()
    assert js["sent"] == [50, 50, 50] and js["bucket_s"] == 1.0
    empty = OutcomeLog(10, 3).latency_summary()
    assert empty["p99_ms"] is None


def test_series_marks_seconds_without_good_requests_as_gaps() -> None:
    log = OutcomeLog(2, 4)
    log.record(0, 0.01, 200)
    log.record(1, 0.51, 200)
    log.record(2, 6.0, 0, Err.TIMEOUT)
    log.record(3, 6.5, 0, Err.TIMEOUT)
    s = log.series(1.0)
    assert math.isnan(s.p99_ms[1])
    assert s.to_json()["p99_ms"][1] is None


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([(200, Err.OK), (204, Err.OK), (404, Err.OK), (429, Err.OK), (500, Err.OK), (503, Err.OK),
                                 (0, Err.RESET), (0, Err.TIMEOUT), (0, Err.CONNECT), (0, Err.UNSENT)]),
                min_size=1, max_size=300),
       st.floats(1.0, 5000.0))
def test_request_availability_matches_a_plain_count(outcomes: list[tuple[int, Err]], rate: float) -> None:
    log = _log(rate, outcomes)
    valid = [(s, e) for s, e in outcomes
             if e is not Err.UNSENT and not (e is Err.OK and 400 <= s < 500 and s not in (408, 429))]
    good = [(s, e) for s, e in valid if e is Err.OK and s < 400]
    p = log.request_availability()
    assert (p.k, p.n) == (len(good), len(valid))
    t = log.time_availability()
    assert t.k <= t.n <= math.ceil(len(outcomes) / rate) + 1
    if p.n and p.k == p.n:
        assert t.k == t.n


def test_slo_summary_burn_rate_and_budget() -> None:
    rate = 100
    outcomes = [(200, Err.OK)] * 12_000  # two minutes
    for i in range(0, 12_000, 1000):
        outcomes[i] = (500, Err.OK)  # 12 failures: 0.1 %
    log = _log(rate, outcomes)
    s = slo_summary(log, 120.0, 99.9, 30 * 86400.0)
    assert s["burn_rate"] == pytest.approx(1.0)
    assert s["budget"]["bad"] == 12 and s["budget"]["total"] == 12_000
    assert s["budget"]["consumed"] == pytest.approx(1.0)
    assert s["severity"] is None
    s = slo_summary(log, 120.0, 99.99, 30 * 86400.0)
    assert s["burn_rate"] == pytest.approx(10.0)
    assert s["severity"] == "page"  # above 6x over the 6h/30m pair
    assert np.isclose(s["budget"]["remaining"], -9.0)
