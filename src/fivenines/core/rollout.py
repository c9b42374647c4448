"""Rolling restart of a target group, one member at a time. Pure: time and observations are inputs.

``fivenines restart GROUP`` replaces every instance of a group without a failed
request. The load balancer and the supervisor act as one: for each member in
turn,

1. ``cover``: wait until the group can spare it: the other members that can serve
   number at least ``min(N, members - 1)``. Taking out an active then makes the
   pool promote a standby in the same step, so a group with a standby never
   drops below N serving actives;
2. ``drain``: deregister it (health ``draining``: no new requests; a standby is
   promoted in its place) and wait until nothing is in flight on it, at most
   ``deregistration_delay``;
3. ``stop``: stop the process (SIGTERM, SIGKILL after ``stop_timeout``);
4. ``start``: start it again;
5. ``check``: wait until it passes its health checks (``healthy``), at most
   ``check_timeout``; a member that does not, or that is crash looping, stops the
   rollout (``failed``) so a bad release is not rolled over the whole group;
6. ``slow_start``: wait ``slow_start`` so whoever joined the serving set in this
   step has ramped up before the next member is taken out.

Standbys are restarted first (they serve nothing), then actives, each group in
member order. :meth:`RollingRestart.step` takes a snapshot of the group and the
time, advances as far as the snapshot allows, and returns the action the
runtime must carry out (``deregister``, ``stop``, ``start``; ``finished`` or
``aborted`` at the end): at most one per call, since an action changes what the
next decision must be based on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from fivenines.core.health import HealthState
from fivenines.core.pool import Role


class Step(str, Enum):
    WAITING = "waiting"
    COVER = "cover"
    DRAIN = "drain"
    STOP = "stop"
    START = "start"
    CHECK = "check"
    SLOW_START = "slow_start"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


class ActionKind(str, Enum):
    DEREGISTER = "deregister"
    STOP = "stop"
    START = "start"
    FINISHED = "finished"
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    target: str
    reason: str

    def __str__(self) -> str:
        who = f" {self.target}" if self.target else ""
        return f"{self.kind.value}{who}: {self.reason}"


WAIT = Action(ActionKind.START, "", "(sentinel: nothing to do until the next snapshot)")


@dataclass(frozen=True, slots=True)
class View:
    """One member as the rollout sees it at one moment."""

    id: str
    role: Role
    state: HealthState
    in_flight: int = 0
    running: bool = True
    starts: int = 1  # processes started in this slot so far
    excluded: bool = False  # ejected or drained by its agent
    crash_looping: bool = False  # its process keeps exiting soon after each start

    @property
    def can_serve(self) -> bool:
        return self.state is HealthState.HEALTHY and not self.excluded


@dataclass(frozen=True, slots=True)
class RolloutPolicy:
    active_count: int
    deregistration_delay: float = 30.0
    slow_start: float = 0.0
    stop_timeout: float = 5.0
    check_timeout: float = 60.0
    cover_timeout: float = 60.0


def restart_order(views: Sequence[View]) -> list[str]:
    """Standbys first, then actives, each in the given order.

    >>> restart_order([View("a", Role.ACTIVE, HealthState.HEALTHY), View("b", Role.STANDBY, HealthState.HEALTHY),
    ...                View("c", Role.ACTIVE, HealthState.HEALTHY)])
    ['b', 'a', 'c']
    """
    return [v.id for v in views if v.role is Role.STANDBY] + [v.id for v in views if v.role is Role.ACTIVE]


@dataclass(slots=True)
class _Progress:
    step: Step = Step.WAITING
    since: float = 0.0  # when the current step began
    starts_before: int = 0
    detail: str = ""


@dataclass(slots=True)
class RollingRestart:
    """The state of one rolling restart of one group."""

    order: list[str]
    policy: RolloutPolicy
    started_at: float = 0.0
    progress: dict[str, _Progress] = field(default_factory=dict)
    current: int = 0
    finished_at: float | None = None
    outcome: str = ""  # "" while running, then "done" or "failed: ..."
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for tid in self.order:
            self.progress.setdefault(tid, _Progress(since=self.started_at))

    def __repr__(self) -> str:
        steps = " ".join(f"{t}:{self.progress[t].step.value}" for t in self.order)
        return f"<RollingRestart {self.outcome or 'running'} {steps}>"

    @property
    def running(self) -> bool:
        return self.finished_at is None

    @property
    def target(self) -> str | None:
        return self.order[self.current] if self.running and self.current < len(self.order) else None

    def step_of(self, target: str) -> Step:
        return self.progress[target].step

    # -- the machine

    def step(self, views: Sequence[View], now: float) -> list[Action]:
        """Advance as far as ``views`` allow at ``now``; the actions to carry out, in order."""
        actions: list[Action] = []
        by_id = {v.id: v for v in views}
        while self.running:
            if self.current >= len(self.order):
                self._finish(now, "done")
                actions.append(Action(ActionKind.FINISHED, "", f"restarted {len(self.order)} members"))
                break
            tid = self.order[self.current]
            v = by_id.get(tid)
            if v is None:
                self._set(tid, Step.SKIPPED, now, "no longer a member")
                self.current += 1
                continue
            act = self._advance(tid, v, views, now)
            if act is WAIT:
                break
            if act is not None:
                # An action changes the world: decide again on a fresh snapshot.
                actions.append(act)
                break
        self.log.extend(str(a) for a in actions)
        return actions

    def abort(self, now: float, reason: str) -> Action | None:
        if not self.running:
            return None
        tid = self.target
        if tid is not None:
            self._set(tid, Step.FAILED, now, reason)
        self._finish(now, f"failed: {reason}")
        act = Action(ActionKind.ABORTED, tid or "", reason)
        self.log.append(str(act))
        return act

    def _advance(self, tid: str, v: View, views: Sequence[View], now: float) -> Action | None:
        """The action of the step taken; None when a step was taken without one; WAIT when none was."""
        p = self.progress[tid]
        pol = self.policy
        if p.step is Step.WAITING:
            self._set(tid, Step.COVER, now)
            return None
        if p.step is Step.COVER:
            spare, need = self._spare(tid, v, views)
            if spare >= need:
                self._set(tid, Step.DRAIN, now)
                why = "not serving" if not v.can_serve else f"{spare} others can serve (need {need})"
                return Action(ActionKind.DEREGISTER, tid, why)
            if now - p.since >= pol.cover_timeout:
                return self.abort(now, f"{tid}: only {spare} other members can serve, need {need}; waited {pol.cover_timeout:g}s")
            return WAIT
        if p.step is Step.DRAIN:
            if v.in_flight <= 0 or now - p.since >= pol.deregistration_delay:
                why = ("drained" if v.in_flight <= 0
                       else f"deregistration_delay {pol.deregistration_delay:g}s reached with {v.in_flight} in flight")
                self._set(tid, Step.STOP, now, why)
                return Action(ActionKind.STOP, tid, why)
            return WAIT
        if p.step is Step.STOP:
            if not v.running:
                self._set(tid, Step.START, now)
                p.starts_before = v.starts
                return Action(ActionKind.START, tid, "stopped")
            if now - p.since >= pol.stop_timeout + 10.0:
                return self.abort(now, f"{tid} did not stop")
            return WAIT
        if p.step is Step.START:
            if v.running and v.starts > p.starts_before:
                self._set(tid, Step.CHECK, now)
                return None
            if now - p.since >= pol.check_timeout:
                return self.abort(now, f"{tid} did not start within {pol.check_timeout:g}s")
            return WAIT
        if p.step is Step.CHECK:
            if v.state is HealthState.HEALTHY and v.running:
                self._set(tid, Step.SLOW_START, now)
                return None
            if v.crash_looping:
                return self.abort(now, f"{tid} is crash looping after its restart")
            if now - self.progress[tid].since >= pol.check_timeout:
                return self.abort(now, f"{tid} did not pass health checks within {pol.check_timeout:g}s after its restart")
            return WAIT
        if p.step is Step.SLOW_START:
            if now - p.since >= pol.slow_start:
                self._set(tid, Step.DONE, now)
                self.current += 1
                return None
            return WAIT
        raise AssertionError(f"unexpected step {p.step}")  # DONE/FAILED/SKIPPED are never current

    def _spare(self, tid: str, v: View, views: Sequence[View]) -> tuple[int, int]:
        """(members other than ``tid`` that can serve, how many must)."""
        others = [o for o in views if o.id != tid]
        spare = sum(1 for o in others if o.can_serve)
        need = min(self.policy.active_count, len(others)) if v.can_serve else 0
        return spare, need

    def _set(self, tid: str, step: Step, now: float, detail: str = "") -> None:
        p = self.progress[tid]
        p.step, p.since, p.detail = step, now, detail

    def _finish(self, now: float, outcome: str) -> None:
        self.finished_at = now
        self.outcome = outcome

    def snapshot(self, now: float) -> dict[str, object]:
        """For status: overall state and each member's step."""
        return {
            "state": "running" if self.running else ("done" if self.outcome == "done" else "failed"),
            "outcome": self.outcome,
            "target": self.target,
            "elapsed_s": round((self.finished_at if self.finished_at is not None else now) - self.started_at, 3),
            "steps": {t: self.progress[t].step.value for t in self.order},
            "log": list(self.log[-20:]),
            "log_total": len(self.log),
        }
