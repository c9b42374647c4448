"""One exception root for the package, subclasses grouped by kind.

Every error fivenines raises on purpose derives from :class:`FivenineError`, through
one (or, where a failure is of two kinds, two) of the kinds below; subsystems add
their own classes under a kind (``StoreTimeout`` is a :class:`NetworkError` and a
:class:`TimedOut`), so a caller catches by what went wrong or by who failed:

==================  =============================================================
kind                what went wrong
==================  =============================================================
ConfigError         a spec, flag, token file or port that cannot work; found before
                    anything changes (:class:`SpecError` names file and field path)
NetworkError        a peer could not be reached, or the connection broke
TimedOut            no answer within a deadline
ProtocolError       a peer sent something its protocol does not allow (not HTTP,
                    not RESP, not JSON)
ConflictError       a valid request the current state does not allow (an input a
                    state machine has no rule for, a switchover during a failover,
                    a fenced write after the lease moved on)
ProviderError       a provider (local processes, AWS, a store) was asked to do
                    something and failed or refused
==================  =============================================================

Foreign errors are translated at the boundary (``raise ProviderError(...) from exc``)
so callers only ever need to catch :class:`FivenineError`. Private exceptions used
for control flow inside one module (``_Rejected``, ``_Incomplete``) never leave it.
``tests/unit/test_errors.py`` checks that every public exception class of the
package derives from the root.
"""

from __future__ import annotations

from dataclasses import dataclass


class FivenineError(Exception):
    """Root of every error fivenines raises on purpose."""


# --------------------------------------------------------------------------- kinds


class ConfigError(FivenineError):
    """A configuration problem detected before anything starts or changes (e.g. a port in use)."""


class NetworkError(FivenineError):
    """A peer could not be reached, or the connection to it broke."""


class TimedOut(FivenineError):
    """No answer within a deadline. (Not the builtin ``TimeoutError``, which ``asyncio.timeout``
    raises: code catching that one must not swallow fivenines' own errors.)"""


class ProtocolError(FivenineError):
    """A peer sent something its protocol does not allow."""


class ConflictError(FivenineError):
    """A valid request that the current state does not allow."""


class ProviderError(FivenineError):
    """A provider (local processes, AWS, a store) failed to carry out an action, or refused it."""


KINDS: tuple[type[FivenineError], ...] = (
    ConfigError, NetworkError, TimedOut, ProtocolError, ConflictError, ProviderError,
)
"""The kinds every other error class derives from (checked by tests/unit/test_errors.py)."""


# --------------------------------------------------------------------------- shared classes


@dataclass(frozen=True)
class FieldError:
    """One problem in a spec: where it is (dotted field path) and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(ConfigError):
    """A spec file is unreadable or invalid. Carries every problem found, with its field path."""

    def __init__(self, file: str, errors: list[FieldError]) -> None:
        self.file = file
        self.errors = errors
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.file}: {e}" for e in self.errors]
        return "\n".join(lines)


class InvalidTransition(ConflictError):
    """A pure state machine got an input it has no rule for in its current state."""
