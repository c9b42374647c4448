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

from fivenines.core.health import HealthState
from fivenines.core.restore import AdminState
from fivenines.runtime.context import RuntimeContext
from fivenines.runtime.draining import Draining
from fivenines.runtime.interface import CommandRefused, Refusal
from fivenines.runtime.reconcile import Reconciler
from fivenines.runtime.targets import TargetRuntime

ACTIONS = ("drain", "enable", "maintenance")


class Operator:
    def __init__(self, ctx: RuntimeContext, reconciler: Reconciler, draining: Draining) -> None:
        self.ctx = ctx
        self.reconciler = reconciler
        self.draining = draining

    def __repr__(self) -> str:
        held = sorted(f"{t.id}:{t.admin_state.value}" for g in self.ctx.groups.values() for t in g.targets
                      if t.admin_state is not None)
        return f"<Operator {' '.join(held) or 'nothing held'}>"

    def target(self, target_id: str) -> TargetRuntime:
        t = self.ctx.target(target_id)
        if t is None:
            raise CommandRefused(Refusal.UNKNOWN,
                                 f"no target {target_id!r}; targets: {', '.join(self.ctx.target_ids())}")
        return t

    def act(self, target_id: str, action: str, source: str = "admin API") -> TargetRuntime:
        """``drain`` | ``enable`` | ``maintenance`` a target. Raises CommandRefused (no such target,
        or not possible in its state). Returns the target."""
        ctx = self.ctx
        t = self.target(target_id)
        now = ctx.now()
        old = t.admin_state.value if t.admin_state else "enabled"
        if action == "drain":
            if t.admin_state is AdminState.MAINTENANCE:
                raise CommandRefused(Refusal.CONFLICT, f"{t.id} is in maintenance: enable it first")
            if t.admin_state is not AdminState.DRAINED:
                t.admin_state = AdminState.DRAINED
                ctx.event("admin", t, old, "drained", f"drain requested via {source}")
                self.draining.begin(t, "drained by an operator")
        elif action == "maintenance":
            t.admin_state = AdminState.MAINTENANCE
            ctx.event("admin", t, old, "maintenance", f"maintenance requested via {source}")
            t.drain_started = None  # a drain in progress ends here: out at once
            self.reconciler.transition(t, t.health.unuse(now))
            t.backend.close_idle()
        elif action == "enable":
            if t.admin_state is not None:
                t.admin_state = None
                ctx.event("admin", t, old, "enabled", f"enabled via {source}: checked before it serves again")
                if t.health.state in (HealthState.DRAINING, HealthState.UNUSED):
                    self.draining.register(t.id)
        else:
            raise CommandRefused(Refusal.INVALID, f"unknown action {action!r}; use {', '.join(ACTIONS)}")
        return t

    def set_weight(self, target_id: str, weight: int, source: str = "admin API") -> TargetRuntime:
        """Set a target's weight (0-1000; 0: no new requests). Raises CommandRefused. Returns the target."""
        t = self.target(target_id)
        if not 0 <= weight <= 1000:
            raise CommandRefused(Refusal.INVALID, "weight must be 0-1000")
        old, t.base_weight = t.base_weight, weight
        t.backend.weight = t.effective_weight()
        if old != weight:
            self.ctx.event("admin", t, f"weight {old}", f"weight {weight}", f"weight set via {source}")
            self.reconciler.republish(t.group)
        return t
