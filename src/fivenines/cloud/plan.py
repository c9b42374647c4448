"""Desired state vs observed state → the changes, in the order AWS needs: pure.

:func:`diff` compares the desired resources (from :mod:`fivenines.cloud.mapping`)
with the resources the provider found by their ``fivenines:stack`` tag, read back
into the same normal form. Only properties the desired state sets are compared,
so AWS defaults and moto's extras never show as drift. A changed property that AWS
cannot update in place (``IMMUTABLE``) replaces the resource, and every resource
that references a replaced one is replaced with it (a listener cannot point at a
deleted target group while it is re-created).

:func:`steps` puts deletions first, dependants before what they depend on, then
creations and updates, dependencies first; :func:`render` prints the plan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from fivenines.cloud.resources import IMMUTABLE, KIND_ORDER, REF_RE, Kind, Resource


class Action(str, Enum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"


_SIGN = {Action.CREATE: "+", Action.UPDATE: "~", Action.REPLACE: "-/+", Action.DELETE: "-"}


@dataclass(frozen=True)
class Observed:
    """A resource found in AWS: its normal-form properties and its physical id (ARN or id)."""

    resource: Resource
    id: str


@dataclass(frozen=True)
class FieldChange:
    path: str
    old: Any
    new: Any


@dataclass(frozen=True)
class Change:
    action: Action
    kind: Kind
    key: str
    name: str
    fields: tuple[FieldChange, ...] = ()
    reason: str = ""

    def __str__(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.action.value} {self.kind.label} {self.name}{why}"


@dataclass
class Plan:
    stack: str
    changes: list[Change] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.changes

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action is action)

    def summary(self) -> str:
        if self.empty:
            return f"No changes: stack {self.stack} matches the spec ({len(self.unchanged)} resources)."
        return (
            f"Plan: {self.count(Action.CREATE)} to create, {self.count(Action.UPDATE)} to update, "
            f"{self.count(Action.REPLACE)} to replace, {self.count(Action.DELETE)} to delete."
        )

    def __repr__(self) -> str:
        return f"<Plan {self.stack}: {self.summary()}>"


def compare(desired: Any, actual: Any, path: str = "") -> list[FieldChange]:
    """Field changes turning ``actual`` into ``desired``; only keys ``desired`` sets count.

    >>> compare({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3, "d": 4}, "e": 5})
    [FieldChange(path='b.c', old=3, new=2)]
    """
    if isinstance(desired, dict) and isinstance(actual, dict):
        out: list[FieldChange] = []
        for k in desired:
            sub = f"{path}.{k}" if path else str(k)
            if k in actual:
                out.extend(compare(desired[k], actual[k], sub))
            else:
                out.append(FieldChange(sub, None, desired[k]))
        return out
    if desired != actual:
        return [FieldChange(path, actual, desired)]
    return []


def diff(stack: str, desired: dict[str, Resource], observed: dict[str, Observed]) -> Plan:
    """The changes that turn ``observed`` into ``desired`` (in dependency order)."""
    plan = Plan(stack)
    actions: dict[str, Change] = {}
    for key, want in desired.items():
        have = observed.get(key)
        if have is None:
            actions[key] = Change(Action.CREATE, want.kind, key, want.name)
            continue
        changes = compare(want.props, have.resource.props)
        if not changes:
            continue
        immutable = IMMUTABLE[want.kind]
        frozen = sorted({c.path.split(".")[0] for c in changes} & immutable)
        if frozen:
            reason = f"{', '.join(frozen)} cannot change in place"
            actions[key] = Change(Action.REPLACE, want.kind, key, want.name, tuple(changes), reason)
        else:
            actions[key] = Change(Action.UPDATE, want.kind, key, want.name, tuple(changes))
    # dependants of a replaced resource are replaced with it
    grew = True
    while grew:
        grew = False
        replaced = {k for k, c in actions.items() if c.action is Action.REPLACE}
        for key, want in desired.items():
            if key not in observed or (key in actions and actions[key].action is Action.REPLACE):
                continue
            hit = sorted(want.refs & replaced)
            if hit:
                old = actions.get(key)
                actions[key] = Change(
                    Action.REPLACE,
                    want.kind,
                    key,
                    want.name,
                    old.fields if old else (),
                    f"it uses {desired[hit[0]].kind.label} {desired[hit[0]].name}, which is replaced",
                )
                grew = True
    for key, have in observed.items():
        if key not in desired:
            actions[key] = Change(Action.DELETE, have.resource.kind, key, have.resource.name)
    everything: dict[str, Resource] = {k: o.resource for k, o in observed.items()}
    everything.update(desired)
    plan.changes = sorted(actions.values(), key=lambda c: _topo_key(c.key, c.kind, everything))
    plan.unchanged = sorted(k for k in desired if k not in actions)
    return plan


def _rank(kind: Kind) -> int:
    return KIND_ORDER.index(kind)


def _topo_key(key: str, kind: Kind, resources: dict[str, Resource]) -> tuple[int, int, str]:
    """Kind order, then same-kind dependencies first (sg/lb before sg/instances)."""
    depth = 0
    seen: set[str] = set()
    current = resources.get(key)
    while current is not None:
        same = sorted(r for r in current.refs if r in resources and resources[r].kind is kind and r not in seen)
        if not same:
            break
        depth += 1
        seen.add(same[0])
        current = resources[same[0]]
    return (_rank(kind), depth, key)


class Op(str, Enum):
    """One call-level step of carrying a plan out."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True)
class Step:
    op: Op
    change: Change

    def __str__(self) -> str:
        return f"{self.op.value} {self.change.kind.label} {self.change.name}"


def steps(plan: Plan, desired: dict[str, Resource], observed: dict[str, Observed]) -> list[Step]:
    """The execution sequence: deletions dependants first, then creations and updates dependencies first.

    A replacement is a delete step then a create step.
    """
    everything: dict[str, Resource] = {k: o.resource for k, o in observed.items()}
    everything.update(desired)
    removals = [Step(Op.DELETE, c) for c in plan.changes if c.action in (Action.DELETE, Action.REPLACE)]
    removals.sort(key=lambda s: _topo_key(s.change.key, s.change.kind, everything), reverse=True)
    builds = [
        Step(Op.UPDATE if c.action is Action.UPDATE else Op.CREATE, c)
        for c in plan.changes
        if c.action is not Action.DELETE
    ]
    builds.sort(key=lambda s: _topo_key(s.change.key, s.change.kind, everything))
    # a certificate is deleted last: the listeners using it move to its successor first
    late = [s for s in removals if s.change.kind is Kind.CERTIFICATE and s.change.action is Action.DELETE]
    return [s for s in removals if s not in late] + builds + late


# --------------------------------------------------------------------------- rendering


def _named(text: str, names: dict[str, str]) -> str:
    """``@key`` references in ``text`` replaced by the resources' names."""
    return REF_RE.sub(lambda m: names.get(m.group(1), m.group(0)), text)


def _show(value: Any, names: dict[str, str]) -> str:
    if isinstance(value, str):
        if len(value) > 120:
            return f"<{len(value)} characters>"
        return _named(value, names)
    if isinstance(value, dict) and all(isinstance(k, str) and k.startswith("@") for k in value):
        return "{" + ", ".join(f"{_show(k, names)}: {_show(v, names)}" for k, v in value.items()) + "}"
    text = _named(json.dumps(value, sort_keys=True, default=str), names)
    return text if len(text) <= 200 else text[:197] + "..."


def _flatten(props: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(props, dict) and props and not all(isinstance(k, str) and k.startswith("@") for k in props):
        out: list[tuple[str, Any]] = []
        for k, v in props.items():
            out.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return [(prefix, props)]


def render(plan: Plan, desired: dict[str, Resource], observed: dict[str, Observed]) -> list[str]:
    """The plan as readable lines (a diff: + create, ~ update, -/+ replace, - delete)."""
    names = {k: o.resource.name for k, o in observed.items()}
    names.update({k: r.name for k, r in desired.items()})
    lines: list[str] = []
    for c in plan.changes:
        lines.append(f"{_SIGN[c.action]:>3} {c}")
        if c.action is Action.CREATE:
            r = desired[c.key]
            for path, value in _flatten({**r.props, **r.create_only}):
                if path != "name":
                    lines.append(f"      {path}: {_show(value, names)}")
        else:
            for f in c.fields:
                lines.append(f"      {f.path}: {_show(f.old, names)} -> {_show(f.new, names)}")
    lines.append(plan.summary())
    return lines
