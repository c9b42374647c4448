"""Failure detectors (threshold, phi accrual) on synthetic heartbeat sequences, and the judge over them."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fivenines.core.detect import (
    PHI_CAP,
    AgentReport,
    HealthJudge,
    PhiAccrualDetector,
    ThresholdDetector,
    parse_agent_reply,
    phi,
)
from fivenines.core.health import CheckResult, HealthState, Reason, TargetHealth

OK = CheckResult.passed()
BAD = CheckResult.failed(Reason.TIMEOUT, "no response")


# --------------------------------------------------------------------------- threshold


def test_threshold_needs_k_misses_in_a_row() -> None:
    d = ThresholdDetector(3)
    seq = [False, False, True, False, False, False, False]
    assert [d.observe(ok, t) for t, ok in enumerate(seq)] == [False, False, False, False, False, True, True]
    assert d.level(10) == 4.0
    d.reset()
    assert not d.suspected(11) and d.level(11) == 0.0


def test_threshold_rejects_zero() -> None:
    with pytest.raises(ValueError):
        ThresholdDetector(0)


# --------------------------------------------------------------------------- phi


def test_phi_function_shape() -> None:
    assert phi(1.0, 1.0, 0.1) == pytest.approx(-math.log10(0.5), abs=1e-3)
    # monotonic in lateness, 0 when very early, capped when absurdly late
    values = [phi(x / 10, 1.0, 0.1) for x in range(0, 40)]
    assert values == sorted(values)
    assert phi(0.0, 1.0, 0.1) == pytest.approx(0.0, abs=1e-6)
    assert phi(1000.0, 1.0, 0.1) == PHI_CAP
    with pytest.raises(ValueError):
        phi(1.0, 1.0, 0.0)


def test_phi_is_the_normal_tail() -> None:
    # known one-sided tail probabilities of the standard normal distribution
    for z, p_later in ((1.0, 0.158655), (2.0, 0.0227501), (3.0, 0.00134990), (5.0, 2.86652e-7)):
        assert phi(1.0 + 0.1 * z, 1.0, 0.1) == pytest.approx(-math.log10(p_later), rel=1e-4)
    # phi 8 is about 5.6 sigma late
    assert phi(1.0 + 0.1 * 5.61, 1.0, 0.1) == pytest.approx(8.0, abs=0.05)


def regular(d: PhiAccrualDetector, n: int, interval: float, start: float = 0.0, jitter: float = 0.0,
            seed: int = 1) -> float:
    rng = random.Random(seed)
    t = start
    for _ in range(n):
        d.heartbeat(t)
        t += interval * (1 + jitter * (2 * rng.random() - 1))
    return t - interval  # time of the last heartbeat (approximately, with jitter)


def test_phi_suspects_a_silent_target_after_about_mean_plus_5_sigma() -> None:
    d = PhiAccrualDetector(8.0, min_std_dev=0.1, first_interval=1.0)
    regular(d, 30, 1.0)
    last = d.last
    assert last is not None
    # not suspected at the expected next heartbeat, nor a little late; suspected well after
    assert not d.suspected(last + 1.0)
    assert not d.suspected(last + 1.4)
    assert d.suspected(last + 1.6)
    # the moment of suspicion: the first time phi >= 8, found by scanning
    t = next(last + k / 1000 for k in range(3000) if d.suspected(last + k / 1000))
    assert 1.45 < t - last < 1.6


def test_phi_learns_slower_heartbeats_and_tolerates_their_jitter() -> None:
    d = PhiAccrualDetector(8.0, min_std_dev=0.05, first_interval=1.0, window=50)
    regular(d, 200, 2.0, jitter=0.1)  # the window forgets the 1 s seed
    mean, sd = d.stats()
    assert mean == pytest.approx(2.0, abs=0.05) and 0.05 < sd < 0.2
    assert d.last is not None
    assert not d.suspected(d.last + 2.2)
    assert d.suspected(d.last + 4.0)


def test_phi_acceptable_pause_shifts_the_expectation() -> None:
    a = PhiAccrualDetector(8.0, min_std_dev=0.1)
    b = PhiAccrualDetector(8.0, min_std_dev=0.1, acceptable_pause=1.0)
    for d in (a, b):
        regular(d, 20, 1.0)
    assert a.last is not None and b.last is not None
    assert a.suspected(a.last + 2.0) and not b.suspected(b.last + 2.0)
    assert b.suspected(b.last + 3.0)


def test_phi_falls_back_to_counting_before_the_first_heartbeat() -> None:
    d = PhiAccrualDetector(8.0, fallback_misses=2)
    assert d.phi(100.0) == 0.0 and not d.suspected(100.0)
    assert d.observe(False, 1.0) is False
    assert d.observe(False, 2.0) is True
    assert d.level(2.0) == 2.0
    d.observe(True, 3.0)
    assert not d.suspected(3.0) and d.misses == 0


def test_phi_window_running_sums_match_a_recomputation() -> None:
    d = PhiAccrualDetector(8.0, window=5)
    times = [0.0, 1.0, 2.5, 3.0, 5.0, 5.5, 7.5, 8.0]
    for t in times:
        d.heartbeat(t)
    intervals = [b - a for a, b in itertools.pairwise(times)][-5:]
    mean = sum(intervals) / 5
    sd = math.sqrt(sum((x - mean) ** 2 for x in intervals) / 5)
    assert d.stats() == pytest.approx((mean, sd))


def test_phi_constructor_validates() -> None:
    for kw in ({"threshold": 0}, {"window": 1}, {"min_std_dev": 0}, {"first_interval": 0}):
        with pytest.raises(ValueError):
            PhiAccrualDetector(**kw)  # type: ignore[arg-type]


@given(
    intervals=st.lists(st.floats(0.05, 5.0), min_size=1, max_size=60),
    later=st.floats(0.0, 20.0),
    more=st.floats(0.0, 20.0),
)
def test_phi_never_decreases_while_silent(intervals: list[float], later: float, more: float) -> None:
    d = PhiAccrualDetector(8.0, min_std_dev=0.05)
    t = 0.0
    d.heartbeat(t)
    for x in intervals:
        t += x
        d.heartbeat(t)
    assert 0.0 <= d.phi(t + later) <= d.phi(t + later + more) <= PHI_CAP
    # a heartbeat always brings phi back under the threshold
    d.heartbeat(t + later + more)
    assert not d.suspected(t + later + more)


# --------------------------------------------------------------------------- the judge


@given(
    seq=st.lists(st.booleans(), max_size=40),
    h=st.integers(1, 5),
    u=st.integers(1, 5),
)
def test_judge_with_threshold_detector_is_exactly_elb_counting(seq: list[bool], h: int, u: int) -> None:
    """The judge over a ThresholdDetector(u) behaves exactly as TargetHealth(h, u)."""
    plain = TargetHealth(h, u)
    judged = HealthJudge(TargetHealth(h, 1), ThresholdDetector(u))
    for t, ok in enumerate(seq):
        a = plain.check(OK if ok else BAD, float(t))
        b = judged.check(OK if ok else BAD, float(t))
        assert (plain.state, plain.reason) == (judged.health.state, judged.health.reason)
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert (a.old, a.new, a.reason) == (b.old, b.new, b.reason)


def test_judge_requires_the_detector_to_count() -> None:
    with pytest.raises(ValueError):
        HealthJudge(TargetHealth(2, 2), ThresholdDetector(2))


def phi_judge() -> HealthJudge:
    return HealthJudge(TargetHealth(2, 1), PhiAccrualDetector(8.0, min_std_dev=0.1, first_interval=1.0))


def test_judge_with_phi_marks_a_silent_target_unhealthy_between_checks() -> None:
    j = phi_judge()
    for t in range(10):
        j.check(OK, float(t))
    assert j.health.state is HealthState.HEALTHY
    assert j.poll(9.5) is None
    tr = j.poll(11.0)
    assert tr is not None and tr.new is HealthState.UNHEALTHY and tr.reason is Reason.TIMEOUT
    assert tr.detail.startswith("phi ") and "no heartbeat for 2.00s" in tr.detail
    # it learns afresh after the outage: the silence is not taken as a normal interval
    assert isinstance(j.detector, PhiAccrualDetector) and j.detector.last is None
    assert j.check(OK, 20.0) is None
    tr = j.check(OK, 21.0)
    assert tr is not None and tr.new is HealthState.HEALTHY
    assert j.detector.stats()[0] == pytest.approx(1.0)


def test_judge_with_phi_a_late_failed_check_counts_an_early_one_does_not() -> None:
    j = phi_judge()
    for t in range(10):
        j.check(OK, float(t))
    assert j.check(BAD, 9.8) is None  # a failure soon after a heartbeat: not suspected
    assert j.health.state is HealthState.HEALTHY and j.health.passes == 0
    tr = j.check(BAD, 11.0)  # no heartbeat for 2 s: phi is far above 8
    assert tr is not None and tr.new is HealthState.UNHEALTHY


def test_judge_startup_grace_ignores_failures_but_counts_passes() -> None:
    j = HealthJudge(TargetHealth(2, 1), ThresholdDetector(1))
    assert j.check(BAD, 0.0, in_grace=True) is None
    assert j.check(BAD, 1.0, in_grace=True) is None
    assert j.health.state is HealthState.INITIAL
    j.check(OK, 2.0, in_grace=True)
    tr = j.check(OK, 3.0, in_grace=True)
    assert tr is not None and tr.new is HealthState.HEALTHY
    tr = j.check(BAD, 4.0)
    assert tr is not None and tr.new is HealthState.UNHEALTHY


def test_judge_failure_breaks_a_pass_streak() -> None:
    j = HealthJudge(TargetHealth(2, 1), ThresholdDetector(3))
    assert [j.check(r, float(t)) for t, r in enumerate([OK, BAD, OK])] == [None, None, None]
    assert j.health.state is HealthState.INITIAL


def test_judge_draining_ignores_checks_and_reset_starts_over() -> None:
    j = phi_judge()
    j.check(OK, 0.0)
    j.check(OK, 1.0)
    j.health.drain(2.0)
    assert j.check(BAD, 3.0) is None and j.poll(100.0) is None
    tr = j.reset(101.0)
    assert tr is not None and tr.new is HealthState.INITIAL
    assert isinstance(j.detector, PhiAccrualDetector) and j.detector.last is None


def test_judge_repr() -> None:
    assert "ThresholdDetector misses=0/2" in repr(HealthJudge(TargetHealth(1, 1), ThresholdDetector(2)))


# --------------------------------------------------------------------------- agent replies


@pytest.mark.parametrize(
    ("text", "report"),
    [
        ("up", AgentReport("up", None, "")),
        ("ready\n", AgentReport("ready", None, "")),
        ("75%", AgentReport(None, 75, "")),
        ("50% drain", AgentReport("drain", 50, "")),
        ("up, maint", AgentReport("maint", None, "")),
        ("down # disk full", AgentReport("down", None, "disk full")),
        ("fail", AgentReport("down", None, "")),
        ("stopped, 10%", AgentReport("down", 10, "")),
        ("900%", AgentReport(None, 256, "")),
        ("", AgentReport(None, None, "")),
    ],
)
def test_agent_replies(text: str, report: AgentReport) -> None:
    assert parse_agent_reply(text) == report


def test_agent_report_meaning() -> None:
    assert parse_agent_reply("drain").drain and parse_agent_reply("maint").drain and parse_agent_reply("0%").drain
    assert not parse_agent_reply("up 50%").drain and parse_agent_reply("down").down


@pytest.mark.parametrize("text", ["bogus", "75", "%", "up;down"])
def test_agent_bad_replies(text: str) -> None:
    with pytest.raises(ValueError, match="agent reply word"):
        parse_agent_reply(text)
