"""The health state machine, exhaustively and by property."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fivenines.core.health import (
    _TRANSITIONS,
    CheckResult,
    HealthState,
    Input,
    Reason,
    TargetHealth,
)
from fivenines.errors import InvalidTransition

OK = CheckResult.passed()
TIMEOUT = CheckResult.failed(Reason.TIMEOUT, "no response")
MISMATCH = CheckResult.failed(Reason.RESPONSE_CODE_MISMATCH, "status 500")
REFUSED = CheckResult.failed(Reason.FAILED_HEALTH_CHECKS, "refused")


def machine(h: int = 2, u: int = 2) -> TargetHealth:
    return TargetHealth(healthy_threshold=h, unhealthy_threshold=u)


def test_new_target_is_initial_until_healthy_threshold_passes() -> None:
    m = machine(h=3)
    assert (m.state, m.reason) == (HealthState.INITIAL, Reason.INITIAL_HEALTH_CHECKING)
    assert m.check(OK, 1.0) is None
    assert m.check(OK, 2.0) is None
    t = m.check(OK, 3.0)
    assert t is not None and (t.old, t.new, t.reason, t.at) == (HealthState.INITIAL, HealthState.HEALTHY, None, 3.0)
    assert m.since == 3.0


def test_healthy_becomes_unhealthy_after_threshold_with_last_reason() -> None:
    m = machine(h=1, u=3)
    m.check(OK, 0)
    assert m.check(TIMEOUT, 1) is None
    assert m.check(MISMATCH, 2) is None
    t = m.check(MISMATCH, 3)
    assert t is not None and t.new is HealthState.UNHEALTHY and t.reason is Reason.RESPONSE_CODE_MISMATCH
    assert t.detail == "status 500"


def test_a_pass_resets_the_failure_streak() -> None:
    m = machine(h=1, u=2)
    m.check(OK, 0)
    for i in range(10):  # fail, pass, fail, pass ... never two failures in a row
        assert m.check(TIMEOUT if i % 2 == 0 else OK, i + 1) is None
    assert m.state is HealthState.HEALTHY


def test_initial_target_failing_checks_becomes_unhealthy() -> None:
    m = machine(h=2, u=2)
    m.check(REFUSED, 1)
    t = m.check(REFUSED, 2)
    assert t is not None and (t.old, t.new, t.reason) == (HealthState.INITIAL, HealthState.UNHEALTHY, Reason.FAILED_HEALTH_CHECKS)


def test_unhealthy_reports_a_changed_reason() -> None:
    m = machine(h=2, u=1)
    m.check(TIMEOUT, 1)
    t = m.check(MISMATCH, 2)
    assert t is not None and t.old is t.new is HealthState.UNHEALTHY and t.reason is Reason.RESPONSE_CODE_MISMATCH
    assert m.check(MISMATCH, 3) is None  # same state, same reason: nothing new


def test_unhealthy_recovers_after_healthy_threshold() -> None:
    m = machine(h=2, u=1)
    m.check(TIMEOUT, 1)
    assert m.check(OK, 2) is None
    t = m.check(OK, 3)
    assert t is not None and (t.old, t.new) == (HealthState.UNHEALTHY, HealthState.HEALTHY)


def test_process_exit_is_unhealthy_at_once() -> None:
    m = machine(h=1, u=5)
    m.check(OK, 0)
    t = m.exited(1.5, "exit signal SIGKILL")
    assert t is not None and t.new is HealthState.UNHEALTHY and t.reason is Reason.PROCESS_EXITED
    assert m.check(OK, 2) is not None  # h=1: the next pass makes it healthy again


def test_a_lost_node_makes_its_target_unhealthy_at_once_with_its_own_reason() -> None:
    m = machine(h=2, u=5)
    m.check(OK, 0)
    m.check(OK, 1)
    t = m.lost(1.5, "node b left the cluster")
    assert t is not None and t.new is HealthState.UNHEALTHY and t.reason is Reason.NODE_LOST
    assert m.detail == "node b left the cluster"
    assert m.exited(2) is not None and m.reason is Reason.PROCESS_EXITED  # the reason follows the input
    m.unuse(3)
    assert m.lost(4) is None  # unused: nothing to lose


def test_register_restarts_counting_from_initial() -> None:
    m = machine(h=2, u=2)
    m.check(OK, 0)
    m.check(OK, 1)
    t = m.register(2)
    assert t is not None and t.new is HealthState.INITIAL and t.reason is Reason.INITIAL_HEALTH_CHECKING
    assert m.check(OK, 3) is None  # one pass is not enough again
    assert m.check(OK, 4) is not None


def test_draining_and_unused_ignore_checks() -> None:
    for enter in ("drain", "unuse"):
        m = machine(h=1, u=1)
        getattr(m, enter)(1)
        for r in (OK, TIMEOUT, MISMATCH):
            assert m.check(r, 2) is None
        assert m.exited(3) is None
        assert m.state in (HealthState.DRAINING, HealthState.UNUSED)


def test_unused_cannot_drain() -> None:
    m = machine()
    m.unuse(0)
    with pytest.raises(InvalidTransition, match="Invalid input drain in state unused"):
        m.drain(1)


def test_transition_table_covers_every_state_and_input_but_one() -> None:
    missing = {(s, i) for s, i in itertools.product(HealthState, Input) if (s, i) not in _TRANSITIONS}
    assert missing == {(HealthState.UNUSED, Input.DRAIN)}


def test_thresholds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TargetHealth(0, 1)


def test_repr_summarises_state() -> None:
    m = machine()
    m.check(TIMEOUT, 1)
    assert repr(m) == "<TargetHealth initial Elb.InitialHealthChecking passes=0 failures=1>"


# ---------------------------------------------------------------- property: a reference model

results = st.sampled_from([OK, TIMEOUT, MISMATCH, REFUSED])


@given(h=st.integers(1, 5), u=st.integers(1, 5), seq=st.lists(results, max_size=60))
def test_state_matches_streak_reference_model(h: int, u: int, seq: list[CheckResult]) -> None:
    """After any sequence of checks, the state is what the consecutive-streak definition says."""
    m = machine(h, u)
    expected = HealthState.INITIAL
    passes = fails = 0
    for i, r in enumerate(seq):
        t = m.check(r, float(i))
        if r.ok:
            passes, fails = passes + 1, 0
            if passes >= h:
                expected = HealthState.HEALTHY
        else:
            passes, fails = 0, fails + 1
            if fails >= u:
                expected = HealthState.UNHEALTHY
        assert m.state is expected
        if t is not None:
            assert t.new is m.state and t.at == float(i) and m.since == float(i)
        if m.state is HealthState.UNHEALTHY:
            assert m.reason is not None and m.reason.value.startswith("Target.")
        if m.state is HealthState.HEALTHY:
            assert m.reason is None


@given(seq=st.lists(st.sampled_from(list(Input)), max_size=40))
def test_any_input_sequence_either_moves_or_raises_invalid_transition(seq: list[Input]) -> None:
    m = machine(1, 1)
    for i, inp in enumerate(seq):
        before = m.state
        try:
            m._feed(inp, OK if inp is Input.CHECK_PASSED else TIMEOUT, float(i))
        except InvalidTransition:
            assert (before, inp) not in _TRANSITIONS
            assert m.state is before
        else:
            assert (before, inp) in _TRANSITIONS
        assert m.state in HealthState
