"""Retry rules (exhaustively, against an independent statement of them) and the retry budget."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fivenines.core.retry import (
    IDEMPOTENT_METHODS,
    Failure,
    RetryBudget,
    RetryPolicy,
    Verdict,
    is_idempotent,
)

METHODS = [b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"POST", b"PATCH", b"CONNECT"]


def oracle(failure: Failure, method: bytes, idem_key: bool, attempts_made: int, attempts: int,
           replayable: bool, started: bool) -> bool:
    """The issue's rules, written out independently of the implementation."""
    if started or not replayable:
        return False  # never after a byte reached the client; never without the body
    if failure is Failure.STALE:
        return True  # a dead pooled connection is not an attempt
    idempotent = method in (b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE") or idem_key
    if failure in (Failure.STATUS, Failure.TIMEOUT, Failure.PROTOCOL) and not idempotent:
        return False
    return attempts_made < attempts


def test_retry_rules_exhaustively() -> None:
    for failure, method, key, made, attempts, replayable, started in itertools.product(
        Failure, METHODS, (False, True), (1, 2, 3), (1, 2, 3), (False, True), (False, True)
    ):
        p = RetryPolicy(attempts=attempts)
        got = p.should_retry(failure, attempts_made=made, replayable=replayable, response_started=started,
                             idempotent=is_idempotent(method, key))
        want = oracle(failure, method, key, made, attempts, replayable, started)
        assert got == want, (failure, method, key, made, attempts, replayable, started)


@pytest.mark.parametrize("failure", [Failure.STATUS, Failure.TIMEOUT, Failure.PROTOCOL])
@pytest.mark.parametrize("method", [b"POST", b"PATCH"])
def test_non_idempotent_requests_are_not_retried_after_a_5xx_or_timeout(failure: Failure, method: bytes) -> None:
    p = RetryPolicy(attempts=5)
    v = p.decide(failure, attempts_made=1, replayable=True, response_started=False,
                 idempotent=is_idempotent(method))
    assert v is Verdict.NOT_IDEMPOTENT
    # ...unless the client says it is safe
    v = p.decide(failure, attempts_made=1, replayable=True, response_started=False,
                 idempotent=is_idempotent(method, has_idempotency_key=True))
    assert v is Verdict.RETRY


@pytest.mark.parametrize("failure", [Failure.CONNECT, Failure.CONNECT_TIMEOUT, Failure.RESET])
def test_connect_failures_and_resets_are_retried_for_every_method(failure: Failure) -> None:
    for m in METHODS:
        assert RetryPolicy(attempts=2).decide(failure, attempts_made=1, replayable=True, response_started=False,
                                              idempotent=is_idempotent(m)) is Verdict.RETRY


def test_nothing_is_retried_after_a_byte_reached_the_client() -> None:
    for f in Failure:
        v = RetryPolicy(attempts=5).decide(f, attempts_made=1, replayable=True, response_started=True,
                                           idempotent=True)
        assert v is Verdict.RESPONSE_STARTED


def test_idempotent_methods_are_the_issues() -> None:
    assert {b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"} == IDEMPOTENT_METHODS


# --------------------------------------------------------------------------- budget


def test_budget_spends_and_counts() -> None:
    b = RetryBudget(20, reserve=2)
    p = RetryPolicy(attempts=3)
    kw = {"replayable": True, "response_started": False, "idempotent": True}
    assert p.decide(Failure.RESET, attempts_made=1, budget=b, **kw) is Verdict.RETRY
    assert p.decide(Failure.RESET, attempts_made=1, budget=b, **kw) is Verdict.RETRY
    assert p.decide(Failure.RESET, attempts_made=1, budget=b, **kw) is Verdict.BUDGET_EXHAUSTED
    for _ in range(5):
        b.deposit()
    assert p.decide(Failure.RESET, attempts_made=1, budget=b, **kw) is Verdict.RETRY
    assert (b.retries, b.exhausted) == (3, 1)
    # a stale connection costs no budget; a refused retry costs none either
    assert p.decide(Failure.STALE, attempts_made=1, budget=b, **kw) is Verdict.RETRY_FREE
    assert p.decide(Failure.STATUS, attempts_made=1, budget=b, replayable=True, response_started=False,
                    idempotent=False) is Verdict.NOT_IDEMPOTENT
    assert b.retries == 3


@given(percent=st.integers(0, 100), requests=st.integers(0, 5000), reserve=st.integers(0, 20))
def test_retries_never_exceed_the_budget_in_a_storm(percent: int, requests: int, reserve: int) -> None:
    """Every request fails and wants a retry: retries stay within percent of requests (+ reserve)."""
    b = RetryBudget(percent, reserve=reserve, cap=100)
    retries = 0
    for _ in range(requests):
        b.deposit()
        if b.withdraw():
            retries += 1
    assert retries <= percent / 100 * requests + reserve + 1e-6
    # and it is not stingy: nearly all of the allowance is used
    assert retries >= min(percent / 100 * requests + reserve, requests) - 1


def test_budget_is_capped_after_a_calm_spell() -> None:
    b = RetryBudget(50, reserve=10, cap=100)
    for _ in range(100000):
        b.deposit()
    allowed = sum(b.withdraw() for _ in range(1000))
    assert allowed == 100


def test_budget_rejects_bad_percent() -> None:
    with pytest.raises(ValueError):
        RetryBudget(120)
