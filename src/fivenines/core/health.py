"""Target health, with AWS Elastic Load Balancing semantics. Pure: time is an argument.

Everything that decides a target's health state lives here, and nothing else does:
the runtime feeds check results and process events in, and acts on the
:class:`Transition` values that come out. No sockets, no clocks, no sleeping.

States and reason codes are ELB's:

* a new (or re-registered) target is ``initial`` (``Elb.InitialHealthChecking``) until
  ``healthy_threshold`` consecutive checks pass; ``unhealthy_threshold`` consecutive
  failures make it ``unhealthy`` instead;
* a ``healthy`` target becomes ``unhealthy`` after ``unhealthy_threshold`` consecutive
  failures, with the reason of the last failure (``Target.Timeout``,
  ``Target.ResponseCodeMismatch``, ``Target.FailedHealthChecks``);
* an ``unhealthy`` target becomes ``healthy`` after ``healthy_threshold`` passes;
* a supervised target whose process exits is ``unhealthy`` at once
  (``Target.ProcessExited``: fivenines knows, so it need not wait for checks); so is a
  target on a cluster node that left the cluster (``Target.NodeLost``: its lease expired);
* ``draining`` (``Target.DeregistrationInProgress``) and ``unused``
  (``Target.NotInUse``) are entered on request and left by re-registering.

Transitions are data, in the style of h2's stream machine: a table maps
``(state, input)`` to a handler; an input with no entry raises
:class:`~fivenines.errors.InvalidTransition`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from fivenines.errors import InvalidTransition


class HealthState(str, Enum):
    INITIAL = "initial"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"
    UNUSED = "unused"


class Reason(str, Enum):
    """ELB target health reason codes, plus fivenines' own where ELB has none."""

    INITIAL_HEALTH_CHECKING = "Elb.InitialHealthChecking"
    REGISTRATION_IN_PROGRESS = "Elb.RegistrationInProgress"
    TIMEOUT = "Target.Timeout"
    RESPONSE_CODE_MISMATCH = "Target.ResponseCodeMismatch"
    FAILED_HEALTH_CHECKS = "Target.FailedHealthChecks"
    DEREGISTRATION_IN_PROGRESS = "Target.DeregistrationInProgress"
    NOT_IN_USE = "Target.NotInUse"
    PROCESS_EXITED = "Target.ProcessExited"
    NODE_LOST = "Target.NodeLost"


class Input(str, Enum):
    CHECK_PASSED = "check_passed"
    CHECK_FAILED = "check_failed"
    EXITED = "exited"
    REGISTER = "register"
    DRAIN = "drain"
    UNUSE = "unuse"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one health check. ``reason`` is set when it failed."""

    ok: bool
    reason: Reason | None = None
    detail: str = ""
    duration: float = 0.0

    @classmethod
    def passed(cls, detail: str = "", duration: float = 0.0) -> CheckResult:
        return cls(True, None, detail, duration)

    @classmethod
    def failed(cls, reason: Reason, detail: str = "", duration: float = 0.0) -> CheckResult:
        return cls(False, reason, detail, duration)


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of health state: what it was, what it is, why, and when."""

    old: HealthState
    new: HealthState
    reason: Reason | None
    at: float
    detail: str = ""

    def __str__(self) -> str:
        why = f" ({self.reason.value})" if self.reason else ""
        return f"{self.old.value} -> {self.new.value}{why}"


_Handler = Callable[["TargetHealth", "CheckResult | None", float], "Transition | None"]


@dataclass(slots=True)
class TargetHealth:
    """One target's health state machine."""

    healthy_threshold: int
    unhealthy_threshold: int
    state: HealthState = HealthState.INITIAL
    reason: Reason | None = Reason.INITIAL_HEALTH_CHECKING
    since: float = 0.0
    passes: int = 0
    failures: int = 0
    detail: str = ""
    last_check: CheckResult | None = None

    def __post_init__(self) -> None:
        if self.healthy_threshold < 1 or self.unhealthy_threshold < 1:
            raise ValueError("thresholds must be >= 1")

    def __repr__(self) -> str:
        why = f" {self.reason.value}" if self.reason else ""
        return f"<TargetHealth {self.state.value}{why} passes={self.passes} failures={self.failures}>"

    # -- inputs -------------------------------------------------------------------------

    def check(self, result: CheckResult, now: float) -> Transition | None:
        """Feed one health check result."""
        self.last_check = result
        return self._feed(Input.CHECK_PASSED if result.ok else Input.CHECK_FAILED, result, now)

    def exited(self, now: float, detail: str = "") -> Transition | None:
        """The target's process is gone: unhealthy at once."""
        return self._feed(Input.EXITED, CheckResult.failed(Reason.PROCESS_EXITED, detail), now)

    def lost(self, now: float, detail: str = "") -> Transition | None:
        """The cluster node the target lives on is gone: unhealthy at once, as for an exit."""
        return self._feed(Input.EXITED, CheckResult.failed(Reason.NODE_LOST, detail), now)

    def register(self, now: float) -> Transition | None:
        """(Re-)register the target: back to ``initial``, counting from zero."""
        return self._feed(Input.REGISTER, None, now)

    def drain(self, now: float) -> Transition | None:
        return self._feed(Input.DRAIN, None, now)

    def unuse(self, now: float) -> Transition | None:
        return self._feed(Input.UNUSE, None, now)

    # -- machinery ------------------------------------------------------------------------

    def _feed(self, inp: Input, result: CheckResult | None, now: float) -> Transition | None:
        handler = _TRANSITIONS.get((self.state, inp))
        if handler is None:
            raise InvalidTransition(f"Invalid input {inp.value} in state {self.state.value}")
        return handler(self, result, now)

    def _move(self, new: HealthState, reason: Reason | None, now: float, detail: str = "") -> Transition | None:
        if new is self.state and reason is self.reason:
            return None
        t = Transition(self.state, new, reason, now, detail)
        self.state, self.reason, self.since, self.detail = new, reason, now, detail
        return t


def _count_pass(h: TargetHealth, r: CheckResult | None, now: float) -> Transition | None:
    h.passes += 1
    h.failures = 0
    if h.state is not HealthState.HEALTHY and h.passes >= h.healthy_threshold:
        return h._move(HealthState.HEALTHY, None, now)
    return None


def _count_failure(h: TargetHealth, r: CheckResult | None, now: float) -> Transition | None:
    assert r is not None and r.reason is not None
    h.failures += 1
    h.passes = 0
    if h.failures >= h.unhealthy_threshold:
        # Already unhealthy: keep the state but report the latest reason.
        return h._move(HealthState.UNHEALTHY, r.reason, now, r.detail)
    return None


def _exited(h: TargetHealth, r: CheckResult | None, now: float) -> Transition | None:
    assert r is not None
    h.passes = 0
    h.failures = max(h.failures, h.unhealthy_threshold)
    return h._move(HealthState.UNHEALTHY, r.reason or Reason.PROCESS_EXITED, now, r.detail)


def _register(h: TargetHealth, r: CheckResult | None, now: float) -> Transition | None:
    h.passes = h.failures = 0
    t = h._move(HealthState.INITIAL, Reason.INITIAL_HEALTH_CHECKING, now)
    return t


def _drain(h: TargetHealth, r: CheckResult | None, now: float) -> Transition | None:
    return h._move(HealthState.DRAINING, Reason.DEREGISTRATION_IN_PROGRESS, now)


def _unuse(h: TargetHealth, r: CheckResult | None, now: float) -> Transition | None:
    return h._move(HealthState.UNUSED, Reason.NOT_IN_USE, now)


def _ignore(h: TargetHealth, r: CheckResult | None, now: float) -> Transition | None:
    """Checks of a draining or unused target are recorded but change nothing."""
    return None


_S, _I = HealthState, Input
_TRANSITIONS: dict[tuple[HealthState, Input], _Handler] = {
    (_S.INITIAL, _I.CHECK_PASSED): _count_pass,
    (_S.INITIAL, _I.CHECK_FAILED): _count_failure,
    (_S.INITIAL, _I.EXITED): _exited,
    (_S.INITIAL, _I.REGISTER): _register,
    (_S.INITIAL, _I.DRAIN): _drain,
    (_S.INITIAL, _I.UNUSE): _unuse,
    (_S.HEALTHY, _I.CHECK_PASSED): _count_pass,
    (_S.HEALTHY, _I.CHECK_FAILED): _count_failure,
    (_S.HEALTHY, _I.EXITED): _exited,
    (_S.HEALTHY, _I.REGISTER): _register,
    (_S.HEALTHY, _I.DRAIN): _drain,
    (_S.HEALTHY, _I.UNUSE): _unuse,
    (_S.UNHEALTHY, _I.CHECK_PASSED): _count_pass,
    (_S.UNHEALTHY, _I.CHECK_FAILED): _count_failure,
    (_S.UNHEALTHY, _I.EXITED): _exited,
    (_S.UNHEALTHY, _I.REGISTER): _register,
    (_S.UNHEALTHY, _I.DRAIN): _drain,
    (_S.UNHEALTHY, _I.UNUSE): _unuse,
    (_S.DRAINING, _I.CHECK_PASSED): _ignore,
    (_S.DRAINING, _I.CHECK_FAILED): _ignore,
    (_S.DRAINING, _I.EXITED): _ignore,
    (_S.DRAINING, _I.REGISTER): _register,
    (_S.DRAINING, _I.DRAIN): _drain,
    (_S.DRAINING, _I.UNUSE): _unuse,
    (_S.UNUSED, _I.CHECK_PASSED): _ignore,
    (_S.UNUSED, _I.CHECK_FAILED): _ignore,
    (_S.UNUSED, _I.EXITED): _ignore,
    (_S.UNUSED, _I.REGISTER): _register,
    (_S.UNUSED, _I.UNUSE): _unuse,
}
"""(state, input) → handler. ``(unused, drain)`` has no entry: there is nothing to drain."""
