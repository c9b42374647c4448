"""Health state that survives a restart: what a saved record may restore. Pure.

fivenines saves every target's health and operator state to a state file while it
runs. At start-up each target's saved record is offered to :func:`decide`, which
restores it only when it still describes *this* target:

* a record older than ``max_age`` is **stale** and ignored (the target may have
  changed meanwhile; its checks start over);
* a record whose **fingerprint** differs is ignored: the fingerprint covers what the
  target *is* (its address, or the instance command/env/cwd) and how it is checked
  (the whole health check), so editing either starts the target over — HAProxy's
  server-state file, which restores by name alone, is the complaint this answers;
* a supervised instance restarts with fivenines (its process dies with it), so only
  its operator state (maintenance, drained, weight) is restored, never its health;
* a static target restores its health state (``healthy`` serves at once instead of
  waiting ``healthy_threshold`` checks; ``unhealthy`` keeps it out until it passes).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import Enum

from fivenines.core.health import HealthState, Reason
from fivenines.spec import TargetGroupSpec

MAX_AGE = 60.0
"""A saved record older than this (seconds) is stale."""


class AdminState(str, Enum):
    """What an operator asked of a target (kept apart from what its checks say)."""

    DRAINED = "drained"  # drained by an operator: no traffic until enabled
    MAINTENANCE = "maintenance"  # taken out at once: no traffic until enabled


@dataclass(frozen=True, slots=True)
class SavedTarget:
    fingerprint: str
    state: HealthState
    reason: Reason | None = None
    detail: str = ""
    admin_state: AdminState | None = None
    weight: int | None = None  # an operator's weight override


@dataclass(frozen=True, slots=True)
class Restore:
    """What to restore: ``state`` (None: start ``initial``), operator state, weight; and why."""

    state: HealthState | None
    reason: Reason | None
    detail: str
    admin_state: AdminState | None
    weight: int | None
    why: str

    @property
    def anything(self) -> bool:
        return self.state is not None or self.admin_state is not None or self.weight is not None


NOTHING = Restore(None, None, "", None, None, "no saved state")


def fingerprint(group: str, tg: TargetGroupSpec, address: str | None) -> str:
    """What a target is and how it is checked, hashed. ``address`` None: a supervised instance.

    >>> from fivenines.spec import TargetGroupSpec
    >>> a = TargetGroupSpec(targets=["127.0.0.1:9001"])
    >>> fingerprint("web", a, "127.0.0.1:9001") == fingerprint("web", a, "127.0.0.1:9001")
    True
    >>> fingerprint("web", a, "127.0.0.1:9001") == fingerprint("web", a, "127.0.0.1:9002")
    False
    """
    what: dict[str, object] = {"group": group, "health_check": tg.health_check.model_dump(mode="json")}
    if address is not None:
        what["address"] = address
    elif tg.instances is not None:
        what["instances"] = tg.instances.model_dump(mode="json", include={"command", "env", "cwd", "shell"})
    blob = json.dumps(what, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def decide(saved: SavedTarget | None, current_fingerprint: str, supervised: bool, saved_at: float, now: float,
           max_age: float = MAX_AGE) -> Restore:
    """What of ``saved`` (written at wall time ``saved_at``) to restore at wall time ``now``.

    >>> s = SavedTarget("f1", HealthState.HEALTHY)
    >>> decide(s, "f1", False, saved_at=100.0, now=105.0).state
    <HealthState.HEALTHY: 'healthy'>
    >>> decide(s, "f1", False, saved_at=100.0, now=1000.0).why
    'stale: saved 900s ago (more than 60s)'
    >>> decide(s, "f2", False, saved_at=100.0, now=105.0).why
    'definition changed since it was saved'
    """
    if saved is None:
        return NOTHING
    age = now - saved_at
    if age > max_age:
        return _ignored(f"stale: saved {age:.0f}s ago (more than {max_age:.0f}s)")
    if age < -5.0:
        return _ignored("saved in the future (clock moved back)")
    if saved.fingerprint != current_fingerprint:
        return _ignored("definition changed since it was saved")
    ago = f"saved {max(0.0, age):.1f}s ago"
    admin = saved.admin_state
    if admin is None and saved.state in (HealthState.DRAINING, HealthState.UNUSED):
        admin = AdminState.DRAINED  # stopped mid-drain: the drain is done
    if admin is not None:
        return Restore(HealthState.UNUSED, Reason.NOT_IN_USE, admin.value, admin, saved.weight,
                       f"{admin.value} by an operator ({ago})")
    if supervised or saved.state is HealthState.INITIAL:
        why = "instance restarted: health checks start over" if supervised else "was still initial"
        return Restore(None, None, "", None, saved.weight, f"{why} ({ago})")
    return Restore(saved.state, saved.reason, saved.detail, None, saved.weight, f"restored {saved.state.value} ({ago})")


def _ignored(why: str) -> Restore:
    return Restore(None, None, "", None, None, why)
