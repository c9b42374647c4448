"""Restart backoff and crash-loop detection, with time and randomness passed in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fivenines.core.lifecycle import InstanceLifecycle, InstanceState, RestartPolicy, describe_exit
from fivenines.errors import InvalidTransition

P = RestartPolicy(initial_delay=0.5, max_delay=8.0, multiplier=2.0, jitter=0.2, stable_after=10.0, crash_loop_after=4)


def test_delays_grow_exponentially_and_cap() -> None:
    lc = InstanceLifecycle(P)
    delays = []
    now = 0.0
    for _ in range(7):
        lc.started(100, now)
        d = lc.exited(1, now + 1.0, 0.5)
        assert d.restart_at is not None
        delays.append(round(d.restart_at - (now + 1.0), 6))
        now = d.restart_at
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_crash_loop_after_consecutive_short_runs() -> None:
    lc = InstanceLifecycle(P)
    states = []
    now = 0.0
    for _ in range(5):
        lc.started(1, now)
        d = lc.exited(2, now + 0.1, 0.5)
        states.append(d.state)
        assert d.restart_at is not None
        now = d.restart_at
    assert states == [InstanceState.BACKOFF] * 3 + [InstanceState.CRASH_LOOP] * 2
    assert lc.last_exit_code == 2 and "crash loop" in d.reason
    # shown as crash_loop while running again, until a run lasts stable_after
    lc.started(9, now)
    assert lc.state is InstanceState.RUNNING and lc.shown_state() is InstanceState.CRASH_LOOP
    assert not lc.mark_stable(now + 1.0) and lc.shown_state() is InstanceState.CRASH_LOOP
    assert lc.mark_stable(now + 10.0) and lc.shown_state() is InstanceState.RUNNING


def test_stable_run_resets_backoff() -> None:
    lc = InstanceLifecycle(P)
    lc.started(1, 0)
    lc.exited(1, 0.1, 0.5)
    lc.started(2, 1)
    lc.exited(1, 1.1, 0.5)
    assert lc.consecutive_failures == 2
    lc.started(3, 2)
    d = lc.exited(1, 20.0, 0.5)  # ran 18 s >= stable_after
    assert lc.consecutive_failures == 1 and d.restart_at == pytest.approx(20.5)


def test_mark_stable_resets_count_while_running() -> None:
    lc = InstanceLifecycle(P)
    lc.started(1, 0)
    lc.exited(1, 0.1, 0.5)
    lc.started(2, 1)
    assert not lc.mark_stable(5.0)
    assert lc.mark_stable(11.0) and lc.consecutive_failures == 0


def test_orderly_stop_does_not_restart() -> None:
    lc = InstanceLifecycle(P)
    lc.started(1, 0)
    lc.stopping()
    d = lc.exited(-15, 1, 0.5)
    assert d.restart_at is None and d.state is InstanceState.STOPPED


def test_stop_during_backoff_cancels_restart() -> None:
    lc = InstanceLifecycle(P)
    lc.started(1, 0)
    lc.exited(1, 0.1, 0.5)
    lc.stopping()
    assert lc.state is InstanceState.STOPPED and lc.restart_at is None


def test_invalid_inputs_raise() -> None:
    lc = InstanceLifecycle(P)
    with pytest.raises(InvalidTransition):
        lc.exited(0, 1, 0.5)
    lc.started(1, 0)
    with pytest.raises(InvalidTransition):
        lc.started(2, 1)


def test_restarts_counted() -> None:
    lc = InstanceLifecycle(P)
    lc.started(1, 0)
    lc.exited(1, 1, 0.5)
    lc.started(2, 2)
    assert lc.restarts == 1 and repr(lc).startswith("<InstanceLifecycle running pid=2 restarts=1")


@given(k=st.integers(1, 50), rand=st.floats(0, 0.999999), jitter=st.floats(0, 1))
def test_delay_is_within_jitter_bounds_and_cap(k: int, rand: float, jitter: float) -> None:
    p = RestartPolicy(initial_delay=0.5, max_delay=30, multiplier=2, jitter=jitter)
    base = min(30.0, 0.5 * 2 ** (k - 1))
    d = p.delay(k, rand)
    assert base * (1 - jitter) - 1e-9 <= d <= base * (1 + jitter) + 1e-9
    assert d <= 30 * (1 + jitter) + 1e-9


def test_describe_exit() -> None:
    assert describe_exit(0) == "code 0"
    assert describe_exit(-9) == "signal SIGKILL"
    assert describe_exit(-200) == "signal 200"
