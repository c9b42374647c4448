"""When a failed attempt may be tried again on another target. Pure.

The rules (``TargetGroupSpec.retries``: ``attempts``, ``per_try_timeout``,
``budget_percent``):

1. Nothing is retried once a byte of a response reached the client, nor when the
   request body can no longer be replayed (it was larger than the replay buffer).
2. A stale pooled connection (closed by the target while idle, noticed when the
   request is written) is retried at once and is not counted as an attempt.
3. A connect failure (refused, unreachable, connect timeout) or a connection
   closed before any response byte is retried on another target **for every
   method**: the target did not answer.
4. A 5xx response, a per-try timeout or an unparseable response is retried only
   for an idempotent request: method GET, HEAD, OPTIONS, PUT or DELETE, or any
   request carrying an ``Idempotency-Key`` header. A POST that timed out may have
   been carried out; trying it again could do it twice.
5. At most ``attempts`` tries in all, the first included.
6. The group's :class:`RetryBudget` must allow it (rules 3 and 4 only): retries
   may add at most ``budget_percent`` of the group's requests, so a group whose
   targets all fail does not multiply its load (a retry storm).

Hedging (:func:`may_hedge`): with ``hedging.delay``, an idempotent request still
waiting for its response head after the delay is also sent to another target;
the first response head wins and the other attempt is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Failure(str, Enum):
    CONNECT = "connect"  # refused or unreachable
    CONNECT_TIMEOUT = "connect_timeout"  # no connection within the connect timeout
    RESET = "reset"  # connection closed before any response byte
    STALE = "stale"  # a reused idle connection was closed by the target
    TIMEOUT = "timeout"  # no response head within the per-try timeout
    STATUS = "status"  # the target answered 5xx
    PROTOCOL = "protocol"  # unparseable response


IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})

_ALWAYS = frozenset({Failure.CONNECT, Failure.CONNECT_TIMEOUT, Failure.RESET})
_IDEMPOTENT_ONLY = frozenset({Failure.TIMEOUT, Failure.STATUS, Failure.PROTOCOL})


def is_idempotent(method: bytes, has_idempotency_key: bool = False) -> bool:
    """
    >>> is_idempotent(b"PUT"), is_idempotent(b"POST"), is_idempotent(b"POST", has_idempotency_key=True)
    (True, False, True)
    """
    return has_idempotency_key or method in IDEMPOTENT_METHODS


class Verdict(str, Enum):
    """The answer of :meth:`RetryPolicy.decide`, with the reason when it is no."""

    RETRY = "retry"
    RETRY_FREE = "retry_free"  # a stale pooled connection: not an attempt, no budget
    RESPONSE_STARTED = "response_started"
    NOT_REPLAYABLE = "not_replayable"
    NOT_IDEMPOTENT = "not_idempotent"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    BUDGET_EXHAUSTED = "budget_exhausted"

    @property
    def retry(self) -> bool:
        return self in (Verdict.RETRY, Verdict.RETRY_FREE)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 2  # total tries, the first included
    per_try_timeout: float | None = None  # None: the listener's response timeout

    def decide(
        self,
        failure: Failure,
        *,
        attempts_made: int,
        replayable: bool,
        response_started: bool,
        idempotent: bool,
        budget: RetryBudget | None = None,
    ) -> Verdict:
        """Whether to try again, and why not when not. Spends budget when it says RETRY.

        >>> p = RetryPolicy(attempts=2)
        >>> kw = dict(replayable=True, response_started=False)
        >>> p.decide(Failure.RESET, attempts_made=1, idempotent=False, **kw).value
        'retry'
        >>> p.decide(Failure.STATUS, attempts_made=1, idempotent=False, **kw).value
        'not_idempotent'
        >>> p.decide(Failure.STATUS, attempts_made=2, idempotent=True, **kw).value
        'attempts_exhausted'
        """
        if response_started:
            return Verdict.RESPONSE_STARTED
        if not replayable:
            return Verdict.NOT_REPLAYABLE
        if failure is Failure.STALE:
            return Verdict.RETRY_FREE
        if failure in _IDEMPOTENT_ONLY and not idempotent:
            return Verdict.NOT_IDEMPOTENT
        if attempts_made >= self.attempts:
            return Verdict.ATTEMPTS_EXHAUSTED
        if budget is not None and not budget.withdraw():
            return Verdict.BUDGET_EXHAUSTED
        return Verdict.RETRY

    def should_retry(
        self,
        failure: Failure,
        *,
        attempts_made: int,
        replayable: bool,
        response_started: bool,
        idempotent: bool = True,
        budget: RetryBudget | None = None,
    ) -> bool:
        """
        >>> p = RetryPolicy(attempts=2)
        >>> p.should_retry(Failure.CONNECT, attempts_made=1, replayable=True, response_started=False)
        True
        >>> p.should_retry(Failure.CONNECT, attempts_made=2, replayable=True, response_started=False)
        False
        >>> p.should_retry(Failure.RESET, attempts_made=1, replayable=True, response_started=True)
        False
        """
        return self.decide(
            failure,
            attempts_made=attempts_made,
            replayable=replayable,
            response_started=response_started,
            idempotent=idempotent,
            budget=budget,
        ).retry


def may_hedge(*, idempotent: bool, replayable: bool, request_done: bool, upgrade: bool,
              response_started: bool, waiting: bool) -> bool:
    """Whether a second copy of a request may be sent to another target (hedging).

    Only an idempotent request (a copy may run twice), whose whole body was read
    and can be replayed, that is no protocol upgrade, whose attempt is still
    waiting for a response head and of which nothing reached the client. The
    retry budget is charged too (by the caller), so hedges cannot double the load.

    >>> kw = dict(replayable=True, request_done=True, upgrade=False, response_started=False, waiting=True)
    >>> may_hedge(idempotent=True, **kw), may_hedge(idempotent=False, **kw)
    (True, False)
    """
    return idempotent and replayable and request_done and not upgrade and not response_started and waiting


class RetryBudget:
    """Retries may add at most ``percent`` % of the requests (a token bucket, per group).

    Every request deposits ``percent / 100`` of a token; every retry withdraws one.
    The bucket starts with ``reserve`` tokens (so a quiet group can retry its first
    failures) and holds at most ``reserve`` plus what recent traffic deposited, capped
    at ``cap``, so a long calm spell does not bank an unbounded storm. No clock is
    needed: the budget is counted in requests, not in seconds.

    >>> b = RetryBudget(20, reserve=0)
    >>> for _ in range(10): b.deposit()
    >>> [b.withdraw() for _ in range(3)]
    [True, True, False]
    """

    __slots__ = ("cap", "exhausted", "ratio", "retries", "tokens")

    def __init__(self, percent: float = 20.0, reserve: float = 10.0, cap: float = 100.0) -> None:
        if not 0 <= percent <= 100:
            raise ValueError("percent must be 0-100")
        self.ratio = percent / 100.0
        self.cap = max(cap, reserve)
        self.tokens = float(reserve)
        self.retries = 0
        self.exhausted = 0

    def deposit(self) -> None:
        """One request was sent (first attempts only)."""
        t = self.tokens + self.ratio
        self.tokens = t if t < self.cap else self.cap

    def withdraw(self) -> bool:
        """Spend one token for a retry; False (and counted) when the budget is spent."""
        # a small epsilon: 5 deposits of 0.2 make one token despite float rounding
        if self.tokens >= 1.0 - 1e-9:
            self.tokens -= 1.0
            self.retries += 1
            return True
        self.exhausted += 1
        return False

    def __repr__(self) -> str:
        return f"<RetryBudget {self.ratio:.0%} tokens={self.tokens:.2f} retries={self.retries} exhausted={self.exhausted}>"
