"""Supervisor hardening: startup grace, backoff reset after a stable run, crash loop, the rolling-restart path."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.core.lifecycle import InstanceLifecycle, InstanceState, RestartPolicy

P = RestartPolicy(initial_delay=0.5, max_delay=8.0, multiplier=2.0, jitter=0.0, stable_after=10.0, crash_loop_after=3)


def test_startup_grace_covers_only_the_first_seconds_of_a_running_process() -> None:
    lc = InstanceLifecycle(P)
    assert not lc.in_startup_grace(0.0, 5.0)  # never started
    lc.started(1, 10.0)
    assert lc.in_startup_grace(10.0, 5.0) and lc.in_startup_grace(14.99, 5.0)
    assert not lc.in_startup_grace(15.0, 5.0)
    assert not lc.in_startup_grace(11.0, 0.0)  # no grace configured
    lc.exited(1, 12.0, 0.5)
    assert not lc.in_startup_grace(12.5, 5.0)  # not running
    lc.started(2, 13.0)
    assert lc.in_startup_grace(14.0, 5.0)  # every start has its own grace


def test_starts_counts_processes() -> None:
    lc = InstanceLifecycle(P)
    assert lc.starts == 0
    lc.started(1, 0.0)
    assert lc.starts == 1
    lc.stopping()
    lc.exited(-15, 1.0, 0.5)
    lc.started(2, 2.0)
    assert lc.starts == 2 and lc.restarts == 1


def test_rolling_restart_path_stop_then_start_is_not_a_crash() -> None:
    lc = InstanceLifecycle(P)
    lc.started(1, 0.0)
    lc.exited(1, 0.2, 0.5)  # one crash
    lc.started(2, 1.0)
    lc.stopping()
    d = lc.exited(-15, 1.5, 0.5)
    assert d.restart_at is None and d.state is InstanceState.STOPPED
    assert lc.consecutive_failures == 1  # an orderly stop is not counted as a crash
    lc.started(3, 2.0)
    assert lc.state is InstanceState.RUNNING


def test_crash_loop_ends_after_a_stable_run() -> None:
    lc = InstanceLifecycle(P)
    now = 0.0
    for pid in range(3):
        lc.started(pid, now)
        d = lc.exited(1, now + 0.1, 0.5)
        assert d.restart_at is not None
        now = d.restart_at
    assert lc.state is InstanceState.CRASH_LOOP and lc.crash_looping
    lc.started(9, now)
    assert lc.shown_state() is InstanceState.CRASH_LOOP  # still shown until it proves stable
    assert lc.mark_stable(now + 10.0)
    assert lc.consecutive_failures == 0 and lc.shown_state() is InstanceState.RUNNING
    # the next crash starts the backoff from the beginning
    d = lc.exited(1, now + 20.0, 0.5)
    assert d.restart_at == now + 20.5 and d.state is InstanceState.BACKOFF


@settings(max_examples=200)
@given(runs=st.lists(st.floats(0.0, 30.0).filter(lambda x: abs(x - 10.0) > 1e-6), min_size=1, max_size=30))
def test_backoff_depends_only_on_the_run_of_short_lives(runs: list[float]) -> None:
    """The delay after each exit is initial x 2^(k-1) capped, k = consecutive short runs; crash loop at k >= 3."""
    lc = InstanceLifecycle(P)
    now = 0.0
    k = 0
    for i, uptime in enumerate(runs):
        lc.started(i, now)
        d = lc.exited(1, now + uptime, 0.5)
        k = 1 if uptime >= P.stable_after else k + 1
        assert lc.consecutive_failures == k
        assert d.restart_at is not None
        assert abs((d.restart_at - (now + uptime)) - min(8.0, 0.5 * 2 ** (k - 1))) < 1e-9
        assert (d.state is InstanceState.CRASH_LOOP) == (k >= 3)
        now = d.restart_at
