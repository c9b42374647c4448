"""Instance lifecycle: start, exit, restart backoff, crash loop. Pure: time and randomness are arguments.

An instance slot runs one process at a time. When it exits, the slot waits a
backoff delay and starts it again:

* the delay grows exponentially with consecutive *short* runs (a run shorter than
  ``stable_after``): ``initial_delay * multiplier ** (k - 1)``, capped at ``max_delay``,
  spread by ``± jitter`` so that crashed siblings do not restart in lockstep;
* a run that lasted ``stable_after`` or longer resets the count;
* after ``crash_loop_after`` consecutive short runs the slot is in ``crash_loop``: it
  keeps restarting at the capped delay, and is shown as such with its last exit
  code, so an operator sees it instead of a silent flapping process;
* for ``startup_grace`` seconds after a start, failed health checks do not count
  (:meth:`InstanceLifecycle.in_startup_grace`): a slow starter is not judged
  before it could answer; passed checks count at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from fivenines.errors import InvalidTransition


class InstanceState(str, Enum):
    STOPPED = "stopped"
    RUNNING = "running"
    BACKOFF = "backoff"
    CRASH_LOOP = "crash_loop"
    STOPPING = "stopping"


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    initial_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2
    stable_after: float = 10.0
    crash_loop_after: int = 5

    def delay(self, consecutive_failures: int, rand: float) -> float:
        """Backoff before the next start after ``consecutive_failures`` short runs.

        ``rand`` is uniform in [0, 1); 0.5 gives the un-jittered delay.

        >>> p = RestartPolicy(initial_delay=0.5, max_delay=30, multiplier=2, jitter=0.2)
        >>> [p.delay(k, 0.5) for k in (1, 2, 3, 10)]
        [0.5, 1.0, 2.0, 30.0]
        """
        k = max(1, consecutive_failures)
        base = min(self.max_delay, self.initial_delay * self.multiplier ** (k - 1))
        return max(0.0, base * (1.0 + self.jitter * (2.0 * rand - 1.0)))


@dataclass(frozen=True, slots=True)
class ExitDecision:
    """What to do after an exit: restart at ``restart_at`` (None: stay stopped)."""

    restart_at: float | None
    state: InstanceState
    reason: str


@dataclass(slots=True)
class InstanceLifecycle:
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    state: InstanceState = InstanceState.STOPPED
    pid: int | None = None
    started_at: float | None = None
    restarts: int = 0
    consecutive_failures: int = 0
    last_exit_code: int | None = None
    last_exit_at: float | None = None
    restart_at: float | None = None

    def __repr__(self) -> str:
        return (
            f"<InstanceLifecycle {self.state.value} pid={self.pid} restarts={self.restarts} "
            f"failures={self.consecutive_failures} last_exit={self.last_exit_code}>"
        )

    def started(self, pid: int, now: float) -> None:
        if self.state in (InstanceState.RUNNING, InstanceState.STOPPING):
            raise InvalidTransition(f"Invalid input started in state {self.state.value}")
        if self.started_at is not None:
            self.restarts += 1
        self.state = InstanceState.RUNNING
        self.pid = pid
        self.started_at = now
        self.restart_at = None

    def exited(self, code: int, now: float, rand: float) -> ExitDecision:
        """The process exited with ``code`` (negative: killed by that signal)."""
        if self.state not in (InstanceState.RUNNING, InstanceState.STOPPING):
            raise InvalidTransition(f"Invalid input exited in state {self.state.value}")
        self.last_exit_code = code
        self.last_exit_at = now
        self.pid = None
        if self.state is InstanceState.STOPPING:
            self.state = InstanceState.STOPPED
            return ExitDecision(None, self.state, f"stopped (exit {describe_exit(code)})")
        uptime = now - (self.started_at if self.started_at is not None else now)
        if uptime >= self.policy.stable_after:
            self.consecutive_failures = 1
        else:
            self.consecutive_failures += 1
        delay = self.policy.delay(self.consecutive_failures, rand)
        self.restart_at = now + delay
        looping = self.consecutive_failures >= self.policy.crash_loop_after
        self.state = InstanceState.CRASH_LOOP if looping else InstanceState.BACKOFF
        return ExitDecision(
            self.restart_at,
            self.state,
            f"exited ({describe_exit(code)}) after {uptime:.1f}s; restart in {delay:.2f}s"
            + (f" (crash loop: {self.consecutive_failures} short runs)" if looping else ""),
        )

    def stopping(self) -> None:
        """An orderly stop was requested: the coming exit must not cause a restart."""
        if self.state is InstanceState.RUNNING:
            self.state = InstanceState.STOPPING
        elif self.state in (InstanceState.BACKOFF, InstanceState.CRASH_LOOP):
            self.state = InstanceState.STOPPED
            self.restart_at = None

    @property
    def crash_looping(self) -> bool:
        """In a crash loop until a run lasts ``stable_after``: also while briefly running between crashes."""
        return self.consecutive_failures >= self.policy.crash_loop_after and self.state is not InstanceState.STOPPED

    def shown_state(self) -> InstanceState:
        """The state to show an operator: ``crash_loop`` sticks until a stable run."""
        return InstanceState.CRASH_LOOP if self.crash_looping else self.state

    def stable(self, now: float) -> bool:
        """True once the current run has lasted long enough to count as a success."""
        return (
            self.state is InstanceState.RUNNING
            and self.started_at is not None
            and now - self.started_at >= self.policy.stable_after
        )

    def in_startup_grace(self, now: float, grace: float) -> bool:
        """True while the current run is younger than ``grace`` seconds.

        >>> lc = InstanceLifecycle()
        >>> lc.started(7, 100.0)
        >>> lc.in_startup_grace(104.0, 5.0), lc.in_startup_grace(105.0, 5.0), lc.in_startup_grace(101.0, 0.0)
        (True, False, False)
        """
        return (
            grace > 0
            and self.state is InstanceState.RUNNING
            and self.started_at is not None
            and now - self.started_at < grace
        )

    @property
    def starts(self) -> int:
        """How many times a process was started in this slot."""
        return 0 if self.started_at is None else self.restarts + 1

    def mark_stable(self, now: float) -> bool:
        """Reset the failure count once the run is stable. Returns True when it did."""
        if self.consecutive_failures and self.stable(now):
            self.consecutive_failures = 0
            return True
        return False


def describe_exit(code: int) -> str:
    """``0`` → ``"code 0"``; ``-9`` → ``"signal SIGKILL"``.

    >>> describe_exit(1), describe_exit(-9)
    ('code 1', 'signal SIGKILL')
    """
    if code < 0:
        import signal

        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"
