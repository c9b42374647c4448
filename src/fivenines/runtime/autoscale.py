"""Elastic scaling in the running controller: a scaler per group with ``scaling:``, and its two actions.

Each group with a ``scaling:`` section gets a :class:`~fivenines.runtime.scaling.GroupScaler`
(samples the warm actives, decides with :func:`fivenines.core.scaling.decide`). This part
runs them on one loop and carries their decisions out on the group:

* **scale out by n**: n new instances, with fresh ids above every id the group has used
  (``web-4``, ``web-5`` ... after ``web-1..3``) and ports allocated as the group grows
  (a range holds ``scaling.max + standby``: the spec checks it). They are inserted after the
  group's first ``active_count`` members (the actives' *home* positions), so the standby pool
  keeps its place at the end, join as actives in ``initial`` state (a starting active keeps
  its role: no standby is promoted for it), serve once they pass their health checks, and
  ramp up through slow start. The active count rises at once, so the scaler's next decision
  counts them (as warming up) and does not ask again.
* **scale in by the picked ids** (:func:`~fivenines.core.scaling.pick_for_scale_in`, among
  the actives only: the standby pool is untouched): the active count drops first, then each
  one is deregistered (no new requests: its role goes to standby as it drains, and since the
  count dropped first, no standby is promoted for it), drained within the group's
  ``deregistration_delay``, stopped and forgotten, as a reload removing a target does.

A failure while scaling is handled as any failure: a new instance that does not pass its
checks is demoted and a standby promoted; it restarts with backoff. Decisions wait while a
reload or a rolling restart of the group runs (the reason shows in the status). A reload
keeps the scaled count (``count`` is the starting count only; new ``min``/``max`` clamp it:
:func:`fivenines.core.reconfig.active_count_after`); a changed ``scaling:`` section gets a
fresh scaler, which waits a whole stabilisation window before a scale-in.

Every change is a ``scaling`` event whose reason is the decision's
(``scaled web 3 -> 5: requests_per_target 640/s > target 400/s``); a hold is not an event
(it shows in ``GET /status``, ``target_groups.G.scaling.reason``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from fivenines.core.pool import Role
from fivenines.core.scaling import Decision
from fivenines.errors import ConfigError
from fivenines.runtime.context import RuntimeContext
from fivenines.runtime.draining import Draining
from fivenines.runtime.events import iso
from fivenines.runtime.failover import rollout_policy
from fivenines.runtime.instances import Instances
from fivenines.runtime.interface import CommandRefused, Refusal
from fivenines.runtime.ports import allocate_ports, release_ports
from fivenines.runtime.reconcile import Reconciler
from fivenines.runtime.scaling import GroupScaler, members_of
from fivenines.runtime.targets import GroupRuntime, TargetRuntime

log = logging.getLogger("fivenines")

PASS_INTERVAL = 0.1
"""Seconds between two passes of the loop (each pass samples or evaluates only what is due)."""


def id_number(group: str, target_id: str) -> int:
    """The number in ``GROUP-N`` (0 for any other id).

    >>> id_number("web", "web-12"), id_number("web", "api-3"), id_number("web", "web-x")
    (12, 0, 0)
    """
    head, _, tail = target_id.rpartition("-")
    return int(tail) if head == group and tail.isdigit() else 0


class Autoscaler:
    """Runs the scalers of the groups with ``scaling:`` and carries out their decisions."""

    def __init__(self, ctx: RuntimeContext, reconciler: Reconciler, instances: Instances, draining: Draining,
                 removing: set[str], busy: Callable[[GroupRuntime], str]) -> None:
        self.ctx = ctx
        self.reconciler = reconciler
        self.instances = instances
        self.draining = draining
        self.removing = removing  # ids being drained out (shared with reload: they are not running targets)
        self.busy = busy  # why a group's decisions must wait now ("" : they need not)
        self.scalers: dict[str, tuple[GroupRuntime, GroupScaler]] = {}
        self.last_change: dict[str, tuple[float, str]] = {}  # group -> (when, reason) of its last change
        self._serial: dict[str, int] = {}  # group -> the highest id number it has used
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        groups = " ".join(f"{n}={g.active_count}" for n, (g, _) in sorted(self.scalers.items()))
        return f"<Autoscaler {groups or 'no scaled group'} removing={sorted(self.removing)}>"

    # ------------------------------------------------------------------ start, stop, the loop

    def start(self) -> None:
        self.sync()
        self._task = self.ctx.loop.create_task(self._run(), name="autoscale")

    async def stop(self) -> None:
        """Stop deciding. Drains under way are cancelled (fivenines stops every instance next)."""
        tasks = [t for t in (self._task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    async def _run(self) -> None:
        while not self.ctx.stopping:
            try:
                self.step(self.ctx.now())
            except Exception:  # a bug here must not stop scaling (or the controller) for good
                log.exception("autoscale pass failed")
            await asyncio.sleep(PASS_INTERVAL)

    def step(self, now: float) -> list[Decision]:
        """One pass: follow spec changes, then let each scaler sample and decide when due."""
        self.sync()
        out = []
        for _, s in list(self.scalers.values()):
            d = s.tick(now)
            if d is not None:
                out.append(d)
        return out

    def sync(self) -> None:
        """A scaler for every group with ``scaling:`` (a fresh one when its section changed: a reload)."""
        groups = self.ctx.groups
        for name in [n for n, (g, _) in self.scalers.items() if groups.get(n) is not g or g.spec.scaling is None]:
            del self.scalers[name]
        for name, g in groups.items():
            sc = g.spec.scaling
            if sc is None or g.spec.instances is None:
                continue
            have = self.scalers.get(name)
            if have is not None and have[1].spec == sc:
                continue
            s = self._scaler(g)
            if have is not None and have[1].manual is not None:
                s.set_manual(have[1].manual)  # an operator's override survives, within the new bounds
            self.scalers[name] = (g, s)
            if have is not None:
                self.ctx.emit("scaling", name, "", "", "", f"scaling settings changed: {sc.min}..{sc.max} "
                              f"from {g.active_count} actives (a scale-in waits a whole stabilisation window)")

    def _scaler(self, g: GroupRuntime) -> GroupScaler:
        sc = g.spec.scaling
        assert sc is not None
        return GroupScaler(
            g.name, sc,
            members=lambda now: members_of(g, now),
            current=lambda: g.active_count,
            scale_out=lambda n: self.scale_out(g, n),
            scale_in=lambda ids: self.scale_in(g, ids),
            on_decision=lambda d: self._decided(g, d),
            paused=lambda: self.busy(g),
        )

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = self.ctx.loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ the decisions

    def _decided(self, g: GroupRuntime, d: Decision) -> None:
        """After each decision (the actions are done): a change is an event with its reason."""
        if not d.changed or g.active_count == d.current:  # nothing could be done: an event said why
            return
        reason = "scaled" + d.reason[len("scale"):] if d.reason.startswith("scale ") else d.reason
        now = self.ctx.now()
        self.last_change[g.name] = (now, reason)
        self.ctx.emit("scaling", g.name, "", str(d.current), str(g.active_count), reason, at=now)
        log.info("%s", reason)

    def scale_out(self, g: GroupRuntime, n: int) -> None:
        """Start ``n`` more actives (fewer when the port range has fewer free ports)."""
        inst = g.spec.instances
        assert inst is not None
        ctx = self.ctx
        now = ctx.now()
        taken = {t.slot.port for grp in ctx.groups.values() for t in grp.targets if t.slot is not None}
        holds: list[socket.socket] = []
        ports: list[int] = []
        try:
            for _ in range(n):
                ports += allocate_ports(inst.ports, 1, taken | set(ports), holds)
        except ConfigError as exc:
            ctx.emit("scaling", g.name, "", "", "", f"scale-out by {n} starts {len(ports)}: {exc}", at=now)
            log.warning("%s: scale-out by %d starts %d: %s", g.name, n, len(ports), exc)
        serial = max([self._serial.get(g.name, 0), *(id_number(g.name, t.id) for t in g.targets)])
        at = min(g.active_count, len(g.targets))  # after the actives' home positions, before the standbys'
        added: list[TargetRuntime] = []
        for port in ports:
            serial += 1
            t = self.instances.new_instance_target(g, at, f"{g.name}-{serial}", port, Role.ACTIVE, now)
            g.targets.insert(at + len(added), t)
            g.backends.add(t.backend)
            added.append(t)
        self._serial[g.name] = serial
        release_ports(holds)  # the instances bind them now
        if not added:
            return
        self.reconciler.reindex(g, {t.id for t in added})
        self._set_active_count(g, g.active_count + len(added))
        for t in added:
            self.instances.launch(t)
        self.reconciler.reconcile(g)

    def scale_in(self, g: GroupRuntime, ids: Sequence[str]) -> None:
        """Remove the actives ``ids``: the active count drops now; each drains, then stops."""
        victims = [t for t in (g.by_id(i) for i in ids) if t is not None and t.role is Role.ACTIVE]
        if not victims:
            return
        self._set_active_count(g, g.active_count - len(victims))
        why = f"scale-in of {g.name} to {g.active_count} actives"
        for t in victims:
            self.removing.add(t.id)
            self.draining.begin(t, why)  # now: it leaves the actives before anything re-plans the roles
            self._spawn(self._remove(t, why), f"scale in {t.id}")

    async def _remove(self, t: TargetRuntime, why: str) -> None:
        try:
            await self.draining.wait(t)
            await self.instances.retire(t)
            self.ctx.emit("scaling", t.group.name, t.id, t.health.state.value, "removed", why)
        finally:
            self.removing.discard(t.id)

    def _set_active_count(self, g: GroupRuntime, n: int) -> None:
        g.active_count = n
        g.failover.rollout_policy = rollout_policy(g.spec, n)

    # ------------------------------------------------------------------ the operator's override

    def set_manual(self, group: str, count: int | None, source: str) -> dict[str, Any]:
        """``fivenines scale GROUP N`` (``None``: back to the policies). Takes effect at once
        unless a reload or rolling restart runs (then at the next evaluation after it)."""
        g = self.ctx.groups.get(group)
        if g is None:
            raise CommandRefused(Refusal.UNKNOWN, f"no target group {group!r}; defined: {', '.join(sorted(self.ctx.groups))}")
        entry = self.scalers.get(group)
        if entry is None:
            raise CommandRefused(Refusal.CONFLICT, f"{group} has no scaling: section: its count is fixed "
                                                   "(change instances.count and reload)")
        _, s = entry
        r = s.rules
        if count is not None and not r.min <= count <= r.max:
            raise CommandRefused(Refusal.INVALID, f"{group} scales within {r.min}..{r.max}: {count} is outside "
                                                  "(change scaling.min/max and reload to go further)")
        s.set_manual(count)
        what = f"manual override {count}" if count is not None else "manual override cleared: the policies decide"
        self.ctx.emit("scaling", group, "", "", "auto" if count is None else str(count), f"{what} ({source})")
        now = self.ctx.now()
        s.held = self.busy(g)
        if not s.held:
            s.evaluate(now)
        return self.group_status(group, now)

    # ------------------------------------------------------------------ read model

    def group_status(self, group: str, now: float) -> dict[str, Any]:
        g, s = self.scalers[group]
        out = s.status()
        out["removing"] = sorted(i for i in self.removing if g.by_id(i) is not None)
        last = self.last_change.get(group)
        out["last_change"] = {"at": iso(self.ctx.wall(last[0])), "reason": last[1]} if last else None
        return out

    def status(self) -> Mapping[str, dict[str, Any]]:
        """Each scaled group's scaling status (``GET /status``: ``target_groups.G.scaling``)."""
        now = self.ctx.now()
        return {name: self.group_status(name, now) for name in self.scalers}
