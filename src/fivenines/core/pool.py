"""N+M membership: who serves, who stands by, and when a standby is promoted. Pure.

A target group with ``count: N`` and ``standby: M`` has N+M members. At most N hold
the ``active`` role; the rest are ``standby``: running and health-checked, serving
no traffic. Only healthy actives serve.

:func:`plan_roles` is the whole policy. Given the members as they are, it returns the
role changes to make now, each with a readable reason:

1. an active that is *lost* (unhealthy, draining or unused) is demoted to standby at
   once, so it serves again only after passing checks and being promoted;
2. while fewer than N actives remain, healthy standbys are promoted, the one that
   has been healthy longest first (ties broken by member order).

A member in ``initial`` state keeps its role: a starting active is not replaced by a
standby before it had a chance to pass its first checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from fivenines.core.health import HealthState, Reason


class Role(str, Enum):
    ACTIVE = "active"
    STANDBY = "standby"


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


def _why(m: Member) -> str:
    reason = f" ({m.reason.value})" if m.reason else ""
    return f"{m.id} {m.state.value}{reason}"


def plan_roles(members: Sequence[Member], active_count: int) -> list[RoleChange]:
    """Role changes that restore N serving actives where possible.

    >>> ms = [Member("web-1", Role.ACTIVE, HealthState.UNHEALTHY, reason=Reason.TIMEOUT),
    ...       Member("web-2", Role.ACTIVE, HealthState.HEALTHY),
    ...       Member("web-3", Role.STANDBY, HealthState.HEALTHY, order=2)]
    >>> [str(c) for c in plan_roles(ms, 2)]
    ['demoted active web-1: web-1 unhealthy (Target.Timeout)', 'promoted standby web-3: replaces web-1 unhealthy (Target.Timeout)']
    """
    changes: list[RoleChange] = []
    lost = [m for m in members if m.role is Role.ACTIVE and m.state in LOST_STATES]
    for m in lost:
        changes.append(RoleChange(m.id, Role.ACTIVE, Role.STANDBY, _why(m)))
    actives = sum(1 for m in members if m.role is Role.ACTIVE) - len(lost)
    need = active_count - actives
    if need <= 0:
        return changes
    candidates = sorted(
        (m for m in members if m.role is Role.STANDBY and m.state is HealthState.HEALTHY),
        key=lambda m: (m.since, m.order),
    )
    # Explain each promotion by the loss it makes up for, when there is one.
    missing = [_why(m) for m in lost]
    for i, m in enumerate(candidates[:need]):
        why = f"replaces {missing[i]}" if i < len(missing) else f"only {actives + i} of {active_count} actives"
        changes.append(RoleChange(m.id, Role.STANDBY, Role.ACTIVE, why))
    return changes


def apply_changes(roles: dict[str, Role], changes: Sequence[RoleChange]) -> dict[str, Role]:
    """Roles after ``changes`` (a new dict; the input is not modified)."""
    out = dict(roles)
    for c in changes:
        out[c.id] = c.new
    return out


def serving(members: Sequence[Member]) -> list[str]:
    """Ids of the members that may receive new requests: healthy actives, in member order."""
    return [m.id for m in sorted(members, key=lambda m: m.order) if m.role is Role.ACTIVE and m.state is HealthState.HEALTHY]
