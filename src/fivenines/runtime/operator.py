"""What an operator asks of a target: drain, maintenance, enable, weight.

The operator's wish is kept apart from what health checks say
(:attr:`TargetRuntime.admin_state`), saved in the state file, and shown in status:

* ``drain``: no new requests from now on (``draining``, a standby is promoted);
  requests in flight finish, within the group's ``deregistration_delay``; then
  ``unused`` until enabled;
* ``maintenance``: ``unused`` at once (requests in flight still finish);
* ``enable``: back to ``initial``: the target serves again once it passes its checks;
* ``weight``: 0-1000; 0 keeps a healthy target out of the serving set.

Each action is an ``admin`` event naming where it came from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fivenines.core.health import HealthState
from fivenines.core.restore import AdminState

if TYPE_CHECKING:
    from fivenines.runtime.controller import Controller, TargetRuntime

ACTIONS = ("drain", "enable", "maintenance")


class Operator:
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl

    def __repr__(self) -> str:
        held = sorted(f"{t.id}:{t.admin_state.value}" for g in self.ctl.groups.values() for t in g.targets
                      if t.admin_state is not None)
        return f"<Operator {' '.join(held) or 'nothing held'}>"

    def stop(self) -> None:
        """Nothing runs in the background: draining is the controller's (:meth:`Controller.deregister`)."""

    def _target(self, target_id: str) -> TargetRuntime:
        t = self.ctl.target(target_id)
        if t is None:
            raise KeyError(target_id)
        return t

    def act(self, target_id: str, action: str, source: str = "admin API") -> dict[str, Any]:
        """``drain`` | ``enable`` | ``maintenance`` a target. Raises KeyError (no such target)
        or ValueError (not possible in its state). Returns its new status."""
        ctl = self.ctl
        t = self._target(target_id)
        now = ctl.now()
        old = t.admin_state.value if t.admin_state else "enabled"
        if action == "drain":
            if t.admin_state is AdminState.MAINTENANCE:
                raise ValueError(f"{t.id} is in maintenance: enable it first")
            if t.admin_state is not AdminState.DRAINED:
                t.admin_state = AdminState.DRAINED
                ctl._event("admin", t, old, "drained", f"drain requested via {source}")
                ctl.begin_drain(t, "drained by an operator")
        elif action == "maintenance":
            t.admin_state = AdminState.MAINTENANCE
            ctl._event("admin", t, old, "maintenance", f"maintenance requested via {source}")
            t.drain_started = None  # a drain in progress ends here: out at once
            ctl._transition(t, t.health.unuse(now))
            t.backend.close_idle()
        elif action == "enable":
            if t.admin_state is not None:
                t.admin_state = None
                ctl._event("admin", t, old, "enabled", f"enabled via {source}: checked before it serves again")
                if t.health.state in (HealthState.DRAINING, HealthState.UNUSED):
                    ctl.register(t.id)
        else:
            raise ValueError(f"unknown action {action!r}; use {', '.join(ACTIONS)}")
        return ctl.target_status(t)

    def set_weight(self, target_id: str, weight: int, source: str = "admin API") -> dict[str, Any]:
        """Set a target's weight (0-1000; 0: no new requests). Raises KeyError / ValueError."""
        ctl = self.ctl
        t = self._target(target_id)
        if not 0 <= weight <= 1000:
            raise ValueError("weight must be 0-1000")
        old, t.base_weight = t.base_weight, weight
        t.backend.weight = t.effective_weight()
        if old != weight:
            ctl._event("admin", t, f"weight {old}", f"weight {weight}", f"weight set via {source}")
            republish(ctl, t)

        return ctl.target_status(t)


def republish(ctl: Controller, t: TargetRuntime) -> None:
    """After a weight change: the serving set again (weight 0 leaves it), and the balancer's
    weights (it reads them when the serving set is published)."""
    g = t.group
    before = [b.id for b in g.backends.serving]
    ctl._reconcile(g)
    if [b.id for b in g.backends.serving] == before:
        g.backends.set_serving(before)
