"""Reconfiguration as a diff: the running spec, what runs now, and a new spec → actions. Pure.

Everything that decides what a reload changes lives here; :mod:`fivenines.runtime.reload`
only carries the actions out. The rules:

* **Identity.** A target group is its name. A listener is its position in ``listeners``
  (``listeners.0``), so port-0 listeners have an identity too. A static target is its
  address within its group; a supervised target is its id (``web-2``) within its group.
* **Targets.** A static target that stays keeps its id, its health state and its
  connections; one that goes is drained then removed; a new one gets the next free id
  and joins ``initial`` (it serves only after passing its health checks). A weight change
  is applied in place.
* **Instances.** A change of what an instance *is* (``command``, ``env``, ``cwd``,
  ``shell``, ``ports``) replaces every instance of the group: the new ones start as
  standbys next to the old ones, and the old ones are drained once the new ones have
  been checked. A change of ``count``/``standby`` adds or removes instances (removing
  the ones that serve least first: not healthy, then standbys, then the highest index).
  Restart policy and ``stop_timeout`` changes apply in place.
* **Scaling.** In a group with ``scaling:``, ``count`` is the starting count only: a
  reload keeps the active count the scaler reached (``Running.active_counts``), brought
  within the new ``min..max`` when those changed. Removing ``scaling:`` brings the group
  back to its ``count``.
* **Group settings** (algorithm, health check, retries, stickiness, deregistration
  delay, slow start) apply in place: health state survives a health-check change.
* **Listeners.** A changed address or protocol rebinds (established connections stay
  open); a changed default target group, rules or timeouts reroute new requests.
* **Refused.** ``name``, ``state_dir``, ``workers`` and ``admin`` cannot change on a
  reload (they need a restart), nor can a replicated store's group; such a reload is
  refused as a whole, with the field path.

Actions come out in the order they must be carried out: additions, in-place updates,
listener changes, removals (so that nothing is drained before what replaces it is up).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from fivenines.core.health import HealthState
from fivenines.core.pool import Role
from fivenines.errors import FieldError
from fivenines.spec import InstancesSpec, ListenerSpec, Spec, TargetGroupSpec

# ----------------------------------------------------------------------------- what runs now


@dataclass(frozen=True, slots=True)
class RunningTarget:
    """One target as it runs now (targets already being removed are left out)."""

    id: str
    address: str
    role: Role
    state: HealthState
    index: int
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Running:
    """What runs now: targets per group, every target id in use (removing ones included), and
    the active count of each group that scales (``scaling:``; it may differ from ``count``)."""

    targets: Mapping[str, Sequence[RunningTarget]]
    taken_ids: frozenset[str] = frozenset()
    active_counts: Mapping[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class AddGroup:
    group: str

    def __str__(self) -> str:
        return f"add target group {self.group}"


@dataclass(frozen=True, slots=True)
class AddTarget:
    group: str
    id: str
    index: int
    role: Role
    address: str | None = None  # None: a supervised instance (its port is allocated when added)
    weight: int = 1

    def __str__(self) -> str:
        where = f" ({self.address})" if self.address else " (new instance)"
        return f"add target {self.id}{where} to {self.group} as {self.role.value}"


@dataclass(frozen=True, slots=True)
class UpdateGroup:
    group: str
    fields: tuple[str, ...]

    def __str__(self) -> str:
        return f"update target group {self.group}: {', '.join(self.fields)}"


@dataclass(frozen=True, slots=True)
class SetWeight:
    group: str
    id: str
    weight: int

    def __str__(self) -> str:
        return f"set weight of {self.id} to {self.weight}"


@dataclass(frozen=True, slots=True)
class SetActiveCount:
    group: str
    count: int

    def __str__(self) -> str:
        return f"{self.group}: {self.count} active"


@dataclass(frozen=True, slots=True)
class Demote:
    group: str
    id: str
    reason: str

    def __str__(self) -> str:
        return f"demote {self.id} to standby: {self.reason}"


@dataclass(frozen=True, slots=True)
class AddListener:
    index: int

    def __str__(self) -> str:
        return f"add listeners.{self.index}"


@dataclass(frozen=True, slots=True)
class RebindListener:
    index: int
    old: str
    new: str

    def __str__(self) -> str:
        return f"rebind listeners.{self.index} from {self.old} to {self.new} (open connections stay)"


@dataclass(frozen=True, slots=True)
class RerouteListener:
    index: int
    fields: tuple[str, ...]

    def __str__(self) -> str:
        return f"reroute listeners.{self.index}: {', '.join(self.fields)} (for new requests)"


@dataclass(frozen=True, slots=True)
class RemoveTarget:
    group: str
    id: str
    reason: str

    def __str__(self) -> str:
        return f"drain and remove {self.id} from {self.group}: {self.reason}"


@dataclass(frozen=True, slots=True)
class RemoveGroup:
    group: str

    def __str__(self) -> str:
        return f"drain and remove target group {self.group}"


@dataclass(frozen=True, slots=True)
class RemoveListener:
    index: int

    def __str__(self) -> str:
        return f"remove listeners.{self.index} (stops accepting; open connections finish)"


Action = (
    AddGroup | AddTarget | UpdateGroup | SetWeight | SetActiveCount | Demote | AddListener | RebindListener
    | RerouteListener | RemoveTarget | RemoveGroup | RemoveListener
)

_A = TypeVar("_A")
_GROUP_ACTIONS = (AddGroup, AddTarget, UpdateGroup, SetWeight, SetActiveCount, Demote, RemoveTarget, RemoveGroup)

_ORDER: dict[type, int] = {
    AddGroup: 0, AddTarget: 1, UpdateGroup: 2, SetWeight: 3, SetActiveCount: 4, Demote: 5,
    AddListener: 6, RebindListener: 7, RerouteListener: 8, RemoveTarget: 9, RemoveGroup: 10, RemoveListener: 11,
}


@dataclass(frozen=True, slots=True)
class Plan:
    """What a reload does, or why it is refused (``errors``: nothing is done then)."""

    actions: tuple[Action, ...] = ()
    errors: tuple[FieldError, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors

    def of(self, kind: type[_A]) -> list[_A]:
        return [a for a in self.actions if isinstance(a, kind)]

    def describe(self) -> list[str]:
        return [str(a) for a in self.actions] or ["no change"]


# ----------------------------------------------------------------------------- the diff

_FIXED = ("name", "state_dir", "workers", "admin")
# Every other field of a target group is a setting applied in place (so a field added to the
# model later is never silently ignored by a reload).
_GROUP_SETTINGS = tuple(f for f in TargetGroupSpec.model_fields if f not in ("instances", "targets"))
_INSTANCE_IDENTITY = ("command", "env", "cwd", "shell", "ports")
_INSTANCE_IN_PLACE = tuple(f for f in InstancesSpec.model_fields if f not in (*_INSTANCE_IDENTITY, "count", "standby"))
_LISTENER_ADDRESS = ("host", "port", "protocol")
_LISTENER_ROUTES = tuple(f for f in ListenerSpec.model_fields if f not in _LISTENER_ADDRESS)


def _dump(model: object) -> object:
    dump = getattr(model, "model_dump", None)
    return dump(mode="json") if dump is not None else model


def plan(old: Spec, new: Spec, running: Running) -> Plan:
    """The actions that turn ``old`` (running as ``running``) into ``new``.

    >>> from fivenines.spec import parse_spec
    >>> def spec(targets, rules=()):
    ...     return parse_spec({"name": "s", "listeners": [{"port": 0, "default_target_group": "web",
    ...         "rules": list(rules)}], "target_groups": {"web": {"targets": targets}}})
    >>> old = spec(["127.0.0.1:9001", "127.0.0.1:9002"])
    >>> run = Running({"web": [RunningTarget("web-1", "127.0.0.1:9001", Role.ACTIVE, HealthState.HEALTHY, 0),
    ...                        RunningTarget("web-2", "127.0.0.1:9002", Role.ACTIVE, HealthState.HEALTHY, 1)]})
    >>> plan(old, spec(["127.0.0.1:9001", "127.0.0.1:9003"]), run).describe()
    ['add target web-3 (127.0.0.1:9003) to web as active', 'drain and remove web-2 from web: 127.0.0.1:9002 no longer in targets']
    """
    errors = [
        FieldError(key, f"cannot change on a reload (was {_dump(getattr(old, key))!r}); restart fivenines for it")
        for key in _FIXED
        if _dump(getattr(old, key)) != _dump(getattr(new, key))
    ]
    if errors:
        return Plan(errors=tuple(errors))
    actions: list[Action] = []
    taken = set(running.taken_ids) | {t.id for ts in running.targets.values() for t in ts}
    for name, tg in new.target_groups.items():
        if name not in old.target_groups:
            actions.append(AddGroup(name))
            actions.extend(_new_group_targets(name, tg))
        else:
            actions.extend(_group_diff(name, old.target_groups[name], tg, list(running.targets.get(name, ())), taken,
                                       running.active_counts.get(name)))
    for name in old.target_groups:
        if name not in new.target_groups:
            actions.append(RemoveGroup(name))
    actions.extend(_listener_diff(old.listeners, new.listeners))
    actions.sort(key=lambda a: _ORDER[type(a)])
    replicated = {n for s in (old, new) for n, tg in s.target_groups.items() if tg.replicated is not None}
    touched = sorted({a.group for a in actions if isinstance(a, _GROUP_ACTIONS) and a.group in replicated})
    if touched:
        return Plan(errors=tuple(
            FieldError(f"target_groups.{n}", "a replicated store cannot change on a reload (its primary, "
                       "replicas and fencing are set up at start); restart fivenines for it, or use "
                       "fivenines switchover") for n in touched))
    return Plan(tuple(actions))


def _new_group_targets(name: str, tg: TargetGroupSpec) -> list[Action]:
    if tg.instances is not None:
        n = tg.instances.count
        return [AddTarget(name, f"{name}-{i + 1}", i, Role.ACTIVE if i < n else Role.STANDBY)
                for i in range(tg.instances.total)]
    return [AddTarget(name, f"{name}-{i + 1}", i, Role.ACTIVE, wt.address, wt.weight)
            for i, wt in enumerate(tg.target_list())]


def _next_ids(name: str, taken: set[str], n: int) -> list[tuple[str, int]]:
    """``n`` fresh ``name-K`` ids (and their indexes), above every id taken; marks them taken."""
    used = [int(t.rsplit("-", 1)[1]) for t in taken if t.rsplit("-", 1)[0] == name and t.rsplit("-", 1)[1].isdigit()]
    k = max(used, default=0)
    out = []
    for _ in range(n):
        k += 1
        tid = f"{name}-{k}"
        taken.add(tid)
        out.append((tid, k - 1))
    return out


def removal_order(targets: Sequence[RunningTarget], actives_first: bool = False) -> list[RunningTarget]:
    """Targets in the order to remove them when a group shrinks: those serving least first
    (not healthy, then standbys, then the highest index); with ``actives_first`` (a scaled
    group whose count was clamped: the standby pool keeps its members), actives before standbys.

    >>> ts = [RunningTarget("w-1", "a", Role.ACTIVE, HealthState.HEALTHY, 0),
    ...       RunningTarget("w-2", "b", Role.STANDBY, HealthState.HEALTHY, 1),
    ...       RunningTarget("w-3", "c", Role.ACTIVE, HealthState.UNHEALTHY, 2),
    ...       RunningTarget("w-4", "d", Role.ACTIVE, HealthState.HEALTHY, 3)]
    >>> [t.id for t in removal_order(ts)], [t.id for t in removal_order(ts, actives_first=True)]
    (['w-3', 'w-2', 'w-4', 'w-1'], ['w-3', 'w-4', 'w-1', 'w-2'])
    """
    return sorted(targets, key=lambda t: (t.state is HealthState.HEALTHY, (t.role is Role.ACTIVE) != actives_first,
                                          -t.index))


def active_count_after(old: TargetGroupSpec, new: TargetGroupSpec, running: int | None) -> tuple[int, int]:
    """``(actives now, actives after the reload)`` of a group of instances in both specs.

    Without ``scaling:`` in the new spec, the group runs its ``count``. With it, ``count`` is
    the starting count only: the group keeps the actives it runs now (``running``: the
    scaler's count, default the old spec's ``count``), within the new ``min..max``.

    >>> from fivenines.spec import TargetGroupSpec
    >>> def tg(count, **scaling):
    ...     return TargetGroupSpec.model_validate({"instances": {"command": ["x"], "count": count},
    ...                                            **({"scaling": scaling} if scaling else {})})
    >>> active_count_after(tg(2, min=2, max=8), tg(3, min=2, max=8), 6)  # count changed: kept
    (6, 6)
    >>> active_count_after(tg(2, min=2, max=8), tg(2, min=2, max=4), 6)  # max lowered: clamped
    (6, 4)
    >>> active_count_after(tg(2, min=2, max=8), tg(3), 6)  # scaling removed: back to count
    (6, 3)
    """
    assert old.instances is not None and new.instances is not None
    now = old.instances.count if running is None else running
    if new.scaling is None:
        return now, new.instances.count
    return now, min(new.scaling.max, max(new.scaling.min, now))


def _group_diff(name: str, old: TargetGroupSpec, new: TargetGroupSpec, running: list[RunningTarget],
                taken: set[str], active_now: int | None = None) -> list[Action]:
    actions: list[Action] = []
    fields = [f for f in _GROUP_SETTINGS if _dump(getattr(old, f)) != _dump(getattr(new, f))]
    if old.instances is not None and new.instances is not None:
        fields += [f"instances.{f}" for f in _INSTANCE_IN_PLACE
                   if _dump(getattr(old.instances, f)) != _dump(getattr(new.instances, f))]
    if fields:
        actions.append(UpdateGroup(name, tuple(fields)))
    running = sorted(running, key=lambda t: t.index)
    if new.instances is not None:
        inst = new.instances
        if old.instances is None:
            was, count = -1, inst.count
        else:
            was, count = active_count_after(old, new, active_now)
        total = count + inst.standby
        what = "count" if new.scaling is None else "the scaled count"
        same_kind = old.instances is not None and all(
            _dump(getattr(old.instances, f)) == _dump(getattr(inst, f)) for f in _INSTANCE_IDENTITY)
        if not same_kind:
            why = ("instance definition changed: " + ", ".join(
                f for f in _INSTANCE_IDENTITY if _dump(getattr(old.instances, f)) != _dump(getattr(inst, f)))
                if old.instances is not None else "now runs instances instead of targets")
            for t in running:
                actions.append(RemoveTarget(name, t.id, why))
            for tid, idx in _next_ids(name, taken, total):
                actions.append(AddTarget(name, tid, idx, Role.STANDBY))
            if was != count:
                actions.append(SetActiveCount(name, count))
            return actions
        keep = list(running)
        if len(running) > total:
            going = removal_order(running, new.scaling is not None)[: len(running) - total]
            for t in going:
                actions.append(RemoveTarget(name, t.id, f"{what} + standby lowered to {total}"))
            keep = [t for t in running if t not in going]
        elif len(running) < total:
            for tid, idx in _next_ids(name, taken, total - len(running)):
                actions.append(AddTarget(name, tid, idx, Role.STANDBY))
        if was != count:
            actions.append(SetActiveCount(name, count))
        actives = [t for t in keep if t.role is Role.ACTIVE]
        if len(actives) > count:
            for t in removal_order(actives)[: len(actives) - count]:
                actions.append(Demote(name, t.id, f"{what} lowered to {count}"))
        return actions
    # static targets: identity is the address
    wanted = new.target_list()
    by_addr: dict[str, RunningTarget] = {t.address: t for t in running}
    wanted_addrs = {wt.address for wt in wanted}
    if old.instances is not None:
        for t in running:
            actions.append(RemoveTarget(name, t.id, "now balances targets instead of running instances"))
        by_addr = {}
    else:
        for t in running:
            if t.address not in wanted_addrs:
                actions.append(RemoveTarget(name, t.id, f"{t.address} no longer in targets"))
    fresh = [wt for wt in wanted if wt.address not in by_addr]
    for wt, (tid, idx) in zip(fresh, _next_ids(name, taken, len(fresh)), strict=True):
        actions.append(AddTarget(name, tid, idx, Role.ACTIVE, wt.address, wt.weight))
    for wt in wanted:
        kept = by_addr.get(wt.address)
        if kept is not None and kept.weight != wt.weight:
            actions.append(SetWeight(name, kept.id, wt.weight))
    if len(wanted) != len(old.target_list()) or old.instances is not None:
        actions.append(SetActiveCount(name, len(wanted)))
    return actions


def listener_address(ls: ListenerSpec) -> str:
    return f"{ls.host}:{ls.port}"


def _listener_diff(old: Sequence[ListenerSpec], new: Sequence[ListenerSpec]) -> list[Action]:
    actions: list[Action] = []
    for i, ls in enumerate(new):
        if i >= len(old):
            actions.append(AddListener(i))
            continue
        was = old[i]
        if (was.host, was.port, was.protocol) != (ls.host, ls.port, ls.protocol):
            old_addr, new_addr = listener_address(was), listener_address(ls)
            if was.protocol != ls.protocol:
                old_addr, new_addr = f"{old_addr}/{was.protocol}", f"{new_addr}/{ls.protocol}"
            actions.append(RebindListener(i, old_addr, new_addr))
        changed = tuple(f for f in _LISTENER_ROUTES if _dump(getattr(was, f)) != _dump(getattr(ls, f)))
        if changed:
            actions.append(RerouteListener(i, changed))
    for i in range(len(new), len(old)):
        actions.append(RemoveListener(i))
    return actions


# ----------------------------------------------------------------------------- workers

MAIN_PROCESS_GROUP_FIELDS = frozenset({"health_check", "deregistration_delay", "reliability", "failover", "fail_open",
                                       "load", "scaling"})
"""Group settings only the main process uses (checks, draining, the model); the rest is held
by the data plane, which with ``workers > 1`` lives in worker processes."""


def held_by_workers(plan: Plan) -> list[Action]:
    """The actions of ``plan`` a reload cannot carry out while worker processes hold the data
    plane (``workers > 1``): their listeners, targets and balancing were set up at start.

    >>> p = Plan((UpdateGroup("web", ("health_check",)), SetActiveCount("web", 2), AddGroup("api"),
    ...           RerouteListener(0, ("certificates", "ssl_policy")), RerouteListener(1, ("rules",))))
    >>> [str(a) for a in held_by_workers(p)]
    ['add target group api', 'reroute listeners.1: rules (for new requests)']
    """
    out: list[Action] = []
    for a in plan.actions:
        if isinstance(a, SetActiveCount | Demote):
            continue  # roles: the serving sets reach the workers as they change
        if isinstance(a, UpdateGroup) and all(
                f in MAIN_PROCESS_GROUP_FIELDS or f.startswith("instances.") for f in a.fields):
            continue
        if isinstance(a, RerouteListener) and set(a.fields) <= WORKER_TLS_FIELDS:
            continue  # every worker reads the TLS files again (a tls_reload message)
        out.append(a)
    return out


WORKER_TLS_FIELDS = frozenset({"certificates", "ssl_policy", "mutual_authentication", "session_tickets"})
"""Listener fields a reload can change with ``workers > 1``: the workers are told to rebuild their TLS."""


# ----------------------------------------------------------------------------- readiness


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether what a reload added has been checked enough for traffic to move to it."""

    ready: bool
    waiting: tuple[str, ...] = field(default=())


def readiness(added: Mapping[str, HealthState], new_groups_serving: Mapping[str, int]) -> Readiness:
    """Ready when every added target is healthy and every added group has a serving target.

    Pure; the runtime waits on it with a deadline and goes ahead at the deadline anyway
    (a target that never passes its checks must not hold a reload up for ever).

    >>> readiness({"web-4": HealthState.HEALTHY}, {"api": 0})
    Readiness(ready=False, waiting=('api: no serving target yet',))
    >>> readiness({"web-4": HealthState.INITIAL, "api-1": HealthState.HEALTHY}, {"api": 1})
    Readiness(ready=False, waiting=('web-4: initial',))
    >>> readiness({"web-4": HealthState.HEALTHY}, {"api": 1}).ready
    True
    """
    waiting = [f"{tid}: {state.value}" for tid, state in added.items() if state is not HealthState.HEALTHY]
    waiting += [f"{g}: no serving target yet" for g, n in new_groups_serving.items() if n == 0]
    return Readiness(not waiting, tuple(waiting))


def ready_deadline(groups: Sequence[TargetGroupSpec]) -> float:
    """How long a reload waits for what it added: enough for a slow start and a recovery.

    >>> from fivenines.spec import TargetGroupSpec
    >>> ready_deadline([TargetGroupSpec(targets=["127.0.0.1:1"])])
    11.5
    """
    worst = 0.0
    for tg in groups:
        hc = tg.health_check
        worst = max(worst, hc.interval * (hc.healthy_threshold + hc.unhealthy_threshold + 2) + hc.timeout + 5.0)
    return min(60.0, worst)
