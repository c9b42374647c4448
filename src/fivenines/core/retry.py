"""When a failed attempt may be tried again on another target. Pure.

The foundation rule: a request whose attempt failed *before any response byte
arrived* (connect refused or timed out, connection reset) is retried on another
target, whatever its method, provided its body can be replayed and no byte of a
response reached the client. A stale pooled connection (closed by the target
while idle) does not count as an attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Failure(str, Enum):
    CONNECT = "connect"  # refused, unreachable or connect timeout
    RESET = "reset"  # connection closed before any response byte
    STALE = "stale"  # a reused idle connection was closed by the target
    TIMEOUT = "timeout"  # no response within the per-try timeout
    PROTOCOL = "protocol"  # unparseable response


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 2  # total tries, the first included

    def should_retry(
        self,
        failure: Failure,
        *,
        attempts_made: int,
        replayable: bool,
        response_started: bool,
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
        if response_started or not replayable:
            return False
        if failure is Failure.STALE:
            return True
        if failure in (Failure.CONNECT, Failure.RESET):
            return attempts_made < self.attempts
        return False
