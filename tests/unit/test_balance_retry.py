from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fivenines.core.balance import RoundRobin, make_balancer
from fivenines.core.retry import Failure, RetryPolicy


def test_round_robin_cycles_and_handles_empty() -> None:
    rr = RoundRobin()
    assert rr.pick([]) is None
    assert [rr.pick("abc") for _ in range(6)] == list("abcabc")


@given(n=st.integers(1, 10), rounds=st.integers(1, 20))
def test_round_robin_is_fair(n: int, rounds: int) -> None:
    rr = make_balancer("round_robin")
    items = list(range(n))
    picks = [rr.pick(items) for _ in range(n * rounds)]
    assert all(picks.count(i) == rounds for i in items)


def test_round_robin_survives_membership_change() -> None:
    rr = RoundRobin()
    rr.pick("abc")
    rr.pick("abc")
    assert rr.pick("ab") in ("a", "b")


def test_retry_rules() -> None:
    p = RetryPolicy(attempts=2)
    kw = {"replayable": True, "response_started": False}
    assert p.should_retry(Failure.CONNECT, attempts_made=1, **kw)
    assert p.should_retry(Failure.RESET, attempts_made=1, **kw)
    assert not p.should_retry(Failure.RESET, attempts_made=2, **kw)
    assert p.should_retry(Failure.STALE, attempts_made=5, **kw)  # stale pooled connections are free
    assert not p.should_retry(Failure.TIMEOUT, attempts_made=1, **kw)
    assert not p.should_retry(Failure.PROTOCOL, attempts_made=1, **kw)
    assert not p.should_retry(Failure.CONNECT, attempts_made=1, replayable=False, response_started=False)
    assert not p.should_retry(Failure.STALE, attempts_made=1, replayable=True, response_started=True)
