"""N+M membership: who serves, who stands by, promotion, reinstatement, fail-open. Pure.

A target group with ``count: N`` and ``standby: M`` has N+M members. At most N hold
the ``active`` role; the rest are ``standby``: running and health-checked, serving
no traffic. Only healthy actives that are not excluded (ejected by passive
detection, or drained by their agent) serve.

:func:`plan_roles` is the whole policy. Given the members as they are, it returns the
role changes to make now, each with a readable reason:

1. an active that is *lost* (unhealthy, draining, unused, or excluded) is demoted
   to standby at once, so it serves again only after being promoted;
2. while fewer than N actives remain, standbys that can serve are promoted at
   once: those past their hold (see below) first, then the one that has been
   healthy longest (ties broken by member order);
3. with ``now`` given, *reinstatement* (hysteresis): a *home* member (one of the
   first N, the ones that start active) that is standby and has been able to
   serve since its ``ready_at`` takes its place back from a promoted standby,
   which is demoted back to standby. ``ready_at`` is when the member became
   healthy (or its ejection ended) plus its hold time; a member that flaps gets a
   growing hold-down (:class:`FlapHistory`), so a flapping target neither
   flip-flops the roles nor is trusted again quickly. A member able to serve for the
   first time has no hold (:func:`ready_at`): a slow starter whose first checks failed
   is not recovering from anything, so the roles after start-up are by member order
   (the first N active), whichever instance happened to answer first.

A member in ``initial`` state keeps its role: a starting active is not replaced by a
standby before it had a chance to pass its first checks.

:func:`plan_serving` is the fail-open policy: when no member can serve, either
route to every running member that checks have failed (``route_all``, as ELB
does), or serve nothing (``reject``: the proxy answers 503 with Retry-After).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from fivenines.core.health import HealthState, Reason


class Role(str, Enum):
    ACTIVE = "active"
    STANDBY = "standby"


class FailOpen(str, Enum):
    ROUTE_ALL = "route_all"
    REJECT = "reject"


LOST_STATES = frozenset({HealthState.UNHEALTHY, HealthState.DRAINING, HealthState.UNUSED})


@dataclass(frozen=True, slots=True)
class Member:
    """What the pool policy needs to know of one target."""

    id: str
    role: Role
    state: HealthState
    since: float = 0.0
    order: int = 0
    reason: Reason | None = None
    excluded: str = ""  # out of service though maybe healthy: "ejected: ...", "agent: drain"
    ready_at: float = 0.0  # hysteresis: not reinstated (nor preferred for promotion) before this
    running: bool = True  # its process runs (external targets: always)

    @property
    def lost(self) -> bool:
        return self.state in LOST_STATES or bool(self.excluded)

    @property
    def can_serve(self) -> bool:
        return self.state is HealthState.HEALTHY and not self.excluded


@dataclass(frozen=True, slots=True)
class RoleChange:
    id: str
    old: Role
    new: Role
    reason: str

    def __str__(self) -> str:
        verb = "promoted" if self.new is Role.ACTIVE else "demoted"
        return f"{verb} {self.old.value} {self.id}: {self.reason}"


def initial_roles(ids: Sequence[str], active_count: int) -> dict[str, Role]:
    """The first ``active_count`` members start active, the rest standby.

    >>> initial_roles(["web-1", "web-2", "web-3"], 2)
    {'web-1': <Role.ACTIVE: 'active'>, 'web-2': <Role.ACTIVE: 'active'>, 'web-3': <Role.STANDBY: 'standby'>}
    """
    return {tid: (Role.ACTIVE if i < active_count else Role.STANDBY) for i, tid in enumerate(ids)}


def ready_at(able_since: float, hold: float, first_able: float | None) -> float:
    """When a member able to serve since ``able_since`` is trusted (reinstated, preferred for
    promotion): ``hold`` seconds later, except on the first time it is able to serve at all
    (``first_able``: when that began; None: not yet). A member that has never served, such as a
    slow starter whose first checks failed, recovers from nothing: a home member takes its role
    the moment it can serve, so start-up ends with the roles by member order.

    >>> ready_at(100.0, 30.0, first_able=100.0), ready_at(150.0, 30.0, first_able=100.0), ready_at(7.0, 30.0, None)
    (100.0, 180.0, 7.0)
    """
    if first_able is None or able_since <= first_able:
        return able_since
    return able_since + hold


def _why(m: Member) -> str:
    if m.excluded and m.state not in LOST_STATES:
        return f"{m.id} {m.excluded}"
    reason = f" ({m.reason.value})" if m.reason else ""
    return f"{m.id} {m.state.value}{reason}"


def plan_roles(members: Sequence[Member], active_count: int, *, now: float | None = None) -> list[RoleChange]:
    """Role changes that restore N serving actives where possible (and, given ``now``, reinstate home members).

    >>> ms = [Member("web-1", Role.ACTIVE, HealthState.UNHEALTHY, reason=Reason.TIMEOUT),
    ...       Member("web-2", Role.ACTIVE, HealthState.HEALTHY),
    ...       Member("web-3", Role.STANDBY, HealthState.HEALTHY, order=2)]
    >>> [str(c) for c in plan_roles(ms, 2)]
    ['demoted active web-1: web-1 unhealthy (Target.Timeout)', 'promoted standby web-3: replaces web-1 unhealthy (Target.Timeout)']
    """
    changes: list[RoleChange] = []
    lost = [m for m in members if m.role is Role.ACTIVE and m.lost]
    for m in lost:
        changes.append(RoleChange(m.id, Role.ACTIVE, Role.STANDBY, _why(m)))
    actives = sum(1 for m in members if m.role is Role.ACTIVE) - len(lost)
    need = active_count - actives
    promoted: set[str] = set()
    if need > 0:
        t = now if now is not None else float("inf")
        candidates = sorted(
            (m for m in members if m.role is Role.STANDBY and m.can_serve),
            key=lambda m: (t < m.ready_at, m.since, m.order),
        )
        # Explain each promotion by the loss it makes up for, when there is one.
        missing = [_why(m) for m in lost]
        for i, m in enumerate(candidates[:need]):
            why = f"replaces {missing[i]}" if i < len(missing) else f"only {actives + i} of {active_count} actives"
            changes.append(RoleChange(m.id, Role.STANDBY, Role.ACTIVE, why))
            promoted.add(m.id)
    if now is None:
        return changes
    # Reinstatement: a home member ready again takes its place back from a promoted standby.
    demoted = {m.id for m in lost}
    guests = sorted(
        (m for m in members if m.order >= active_count and m.id not in demoted
         and (m.role is Role.ACTIVE or m.id in promoted)),
        key=lambda m: -m.order,
    )
    homes = [
        m for m in members
        if m.order < active_count and m.role is Role.STANDBY and m.id not in promoted
        and m.can_serve and now >= m.ready_at
    ]
    for home, guest in zip(sorted(homes, key=lambda m: m.order), guests, strict=False):
        held = now - home.ready_at
        if guest.id in promoted:
            # promoted in this very plan: promote the home member instead
            changes = [c for c in changes if c.id != guest.id]
            changes.append(RoleChange(home.id, Role.STANDBY, Role.ACTIVE, "home member, ready"))
            continue
        changes.append(RoleChange(home.id, Role.STANDBY, Role.ACTIVE, f"reinstated: ready {held:.1f}s past its hold"))
        changes.append(RoleChange(guest.id, Role.ACTIVE, Role.STANDBY, f"back to standby: {home.id} reinstated"))
    return changes


def apply_changes(roles: dict[str, Role], changes: Sequence[RoleChange]) -> dict[str, Role]:
    """Roles after ``changes`` (a new dict; the input is not modified)."""
    out = dict(roles)
    for c in changes:
        out[c.id] = c.new
    return out


def serving(members: Sequence[Member]) -> list[str]:
    """Ids of the members that may receive new requests: healthy actives, in member order."""
    return [m.id for m in sorted(members, key=lambda m: m.order) if m.role is Role.ACTIVE and m.can_serve]


def can_spare(members: Sequence[Member], member_id: str) -> bool:
    """True when another member could serve if ``member_id`` were taken out (by an ejection).

    Passive ejection never takes out the last member able to serve: an outlier
    that answers is better than no answer at all.

    >>> ms = [Member("a", Role.ACTIVE, HealthState.HEALTHY), Member("b", Role.STANDBY, HealthState.UNHEALTHY)]
    >>> can_spare(ms, "a"), can_spare(ms + [Member("c", Role.STANDBY, HealthState.HEALTHY)], "a")
    (False, True)
    """
    return any(m.can_serve for m in members if m.id != member_id)


@dataclass(frozen=True, slots=True)
class ServingSet:
    ids: list[str]
    fail_open: bool = False  # True: no member can serve; the policy below is in force
    policy: FailOpen = FailOpen.ROUTE_ALL

    def __str__(self) -> str:
        if not self.fail_open:
            return ",".join(self.ids)
        if self.policy is FailOpen.REJECT or not self.ids:
            return "none: fail-open reject (503)"
        return f"fail-open route_all: {','.join(self.ids)}"


def plan_serving(members: Sequence[Member], policy: FailOpen = FailOpen.ROUTE_ALL) -> ServingSet:
    """Who serves, with the fail-open policy applied when nobody can.

    ``route_all`` routes to every running member that checks have failed (ELB's
    fail-open: when every target is unhealthy, the checks are more likely wrong
    than every target); members still in ``initial`` checking, draining, unused,
    or whose process is not running are never routed to.

    >>> ms = [Member("a", Role.ACTIVE, HealthState.UNHEALTHY), Member("b", Role.STANDBY, HealthState.UNHEALTHY, order=1),
    ...       Member("c", Role.STANDBY, HealthState.UNHEALTHY, order=2, running=False)]
    >>> str(plan_serving(ms)), str(plan_serving(ms, FailOpen.REJECT))
    ('fail-open route_all: a,b', 'none: fail-open reject (503)')
    """
    ids = serving(members)
    if ids:
        return ServingSet(ids, False, policy)
    failed = [m.id for m in sorted(members, key=lambda m: m.order)
              if m.running and m.state is HealthState.UNHEALTHY]
    if not failed:
        return ServingSet([], False, policy)  # nothing has been judged yet (or nothing runs)
    if policy is FailOpen.REJECT:
        return ServingSet([], True, policy)
    return ServingSet(failed, True, policy)


@dataclass(slots=True)
class FlapHistory:
    """Losses per member in a sliding window; the hold time grows with them.

    The hold of a member with k losses in the last ``window`` seconds is
    ``hold_time x 2^(k-1)``, capped at ``max_hold_down`` (``hold_time`` when k ≤ 1).

    >>> f = FlapHistory(hold_time=10, window=300, max_hold_down=60)
    >>> [f.lost("a", t) for t in (0, 20, 40, 60)]
    [10.0, 20.0, 40.0, 60.0]
    >>> f.hold("a", 1000)
    10.0
    """

    hold_time: float = 30.0
    window: float = 300.0
    max_hold_down: float = 300.0
    _losses: dict[str, deque[float]] = field(default_factory=dict)

    def lost(self, member: str, now: float) -> float:
        """Record a loss of ``member``; returns its hold from now on."""
        q = self._losses.setdefault(member, deque())
        q.append(now)
        return self.hold(member, now)

    def count(self, member: str, now: float) -> int:
        q = self._losses.get(member)
        if not q:
            return 0
        while q and q[0] <= now - self.window:
            q.popleft()
        return len(q)

    def hold(self, member: str, now: float) -> float:
        k = self.count(member, now)
        if k <= 1:
            return float(self.hold_time)
        return float(min(self.max_hold_down, self.hold_time * 2 ** (k - 1)))
