"""Where a target group's instances live in a cluster. Pure and deterministic.

A group of ``count`` actives and ``standby`` standbys gets ``count + standby`` slots,
``GROUP-1`` … (the instance ids fivenines uses on one node), each placed on a node:

* **actives spread**: per-node active counts differ by at most one, and the nodes that
  take one more are taken from the zones in turn, so actives use as many zones as they
  can (or the operator gives the per-node active counts);
* **standbys elsewhere**: each standby goes to the node with the fewest instances so
  far, preferring zones with fewer standbys, then zones with fewer actives. Totals per
  node then differ by at most one, and standbys land on the nodes with no (or fewer)
  actives: when a node dies, standbys on other nodes replace its actives. For a
  replicated store (one active, the primary; standbys are its replicas) this keeps the
  primary and its replicas on different nodes whenever there are two nodes or more;
* **stable**: given the previous placement, a slot stays on its node unless that node
  left or the balance needs the room. When a node leaves, no active moves but those it
  had; when one joins, actives move only onto it. A standby may move to keep the totals
  balanced (at most as many as the new node takes, or the lost node had).

The order of ``nodes`` breaks ties, so the same inputs always give the same placement.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from fivenines.errors import ConfigError


class PlacementError(ConfigError, ValueError):
    pass


class SlotRole(str, Enum):
    ACTIVE = "active"
    STANDBY = "standby"


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    zone: str | None = None

    @property
    def zone_key(self) -> str:
        return self.zone if self.zone is not None else f"node:{self.name}"  # no zone: a zone of its own


@dataclass(frozen=True, slots=True)
class Slot:
    id: str
    role: SlotRole
    node: str


@dataclass(frozen=True, slots=True)
class Placement:
    group: str
    slots: tuple[Slot, ...]

    def node_of(self, slot_id: str) -> str:
        return next(s.node for s in self.slots if s.id == slot_id)

    def on(self, node: str) -> tuple[Slot, ...]:
        return tuple(s for s in self.slots if s.node == node)

    def as_dict(self) -> dict[str, str]:
        return {s.id: s.node for s in self.slots}

    def moved_from(self, previous: Mapping[str, str]) -> list[str]:
        """Ids of slots that were placed before and are now on another node."""
        return [s.id for s in self.slots if s.id in previous and previous[s.id] != s.node]

    def describe(self) -> str:
        """``web: actives web-1@a web-2@b; standbys web-3@c``"""
        parts = []
        for role, label in ((SlotRole.ACTIVE, "actives"), (SlotRole.STANDBY, "standbys")):
            slots = [f"{s.id}@{s.node}" for s in self.slots if s.role is role]
            if slots:
                parts.append(f"{label} {' '.join(slots)}")
        return f"{self.group}: {'; '.join(parts) or 'nothing'}"


def zone_order(nodes: Sequence[Node]) -> list[Node]:
    """Nodes taken from each zone in turn (zones in order of first appearance).

    >>> [n.name for n in zone_order([Node("a", "z1"), Node("b", "z1"), Node("c", "z2"), Node("d", "z2")])]
    ['a', 'c', 'b', 'd']
    """
    by_zone: dict[str, list[Node]] = {}
    for n in nodes:
        by_zone.setdefault(n.zone_key, []).append(n)
    out: list[Node] = []
    queues = list(by_zone.values())
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def _active_targets(count: int, nodes: Sequence[Node], previous: Counter[str]) -> dict[str, int]:
    base, extra = divmod(count, len(nodes))
    spread = zone_order(nodes)
    rank = {n.name: i for i, n in enumerate(spread)}
    # who gets one more: those that had more before (nothing moves needlessly), then zones in turn
    more = sorted(spread, key=lambda n: (-min(previous[n.name], base + 1), rank[n.name]))[:extra]
    chosen = {n.name for n in more}
    return {n.name: base + (1 if n.name in chosen else 0) for n in nodes}


def _standby_targets(standby: int, nodes: Sequence[Node], actives: Mapping[str, int],
                     previous: Counter[str]) -> dict[str, int]:
    targets = dict.fromkeys((n.name for n in nodes), 0)
    zone_actives: Counter[str] = Counter()
    for n in nodes:
        zone_actives[n.zone_key] += actives[n.name]
    zone_standbys: Counter[str] = Counter()
    order = {n.name: i for i, n in enumerate(nodes)}
    kept = Counter({k: v for k, v in previous.items() if k in targets})
    for _ in range(standby):
        n = min(nodes, key=lambda n: (actives[n.name] + targets[n.name],
                                      0 if kept[n.name] > targets[n.name] else 1, actives[n.name],
                                      zone_standbys[n.zone_key], zone_actives[n.zone_key], order[n.name]))
        targets[n.name] += 1
        zone_standbys[n.zone_key] += 1
    return targets


def _fill(ids: Sequence[str], targets: Mapping[str, int], previous: Mapping[str, str],
          nodes: Sequence[Node]) -> dict[str, str]:
    left = dict(targets)
    out: dict[str, str] = {}
    for i in ids:  # first: every slot that may stay where it was
        node = previous.get(i)
        if node is not None and left.get(node, 0) > 0:
            out[i] = node
            left[node] -= 1
    for i in ids:  # then the rest, in node order
        if i not in out:
            node = next(n.name for n in nodes if left[n.name] > 0)
            out[i] = node
            left[node] -= 1
    return out


def place(group: str, count: int, standby: int, nodes: Sequence[Node], *,
          per_node: Mapping[str, int] | None = None, previous: Mapping[str, str] | None = None) -> Placement:
    """Place ``count`` actives and ``standby`` standbys of ``group`` on ``nodes``.

    ``per_node`` fixes the number of actives on each node (they must add up to ``count``;
    nodes not named get none). ``previous`` (slot id -> node) keeps slots where they were
    when it can.

    >>> place("web", 2, 1, [Node("a"), Node("b"), Node("c")]).describe()
    'web: actives web-1@a web-2@b; standbys web-3@c'
    >>> place("cache", 1, 2, [Node("a"), Node("b")]).describe()
    'cache: actives cache-1@a; standbys cache-2@b cache-3@b'
    """
    if not nodes:
        raise PlacementError(f"{group}: no nodes to place instances on")
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise PlacementError(f"{group}: duplicate node names in {names}")
    if count < 0 or standby < 0:
        raise PlacementError(f"{group}: count and standby must be >= 0")
    previous = dict(previous or {})
    ids = [f"{group}-{i + 1}" for i in range(count + standby)]
    active_ids, standby_ids = ids[:count], ids[count:]
    prev_actives = Counter(previous[i] for i in active_ids if i in previous)
    prev_standbys = Counter(previous[i] for i in standby_ids if i in previous)
    if per_node is not None:
        unknown = sorted(set(per_node) - set(names))
        if unknown:
            raise PlacementError(f"{group}: per-node counts name unknown nodes {unknown}; nodes: {names}")
        if sum(per_node.values()) != count or any(v < 0 for v in per_node.values()):
            raise PlacementError(f"{group}: per-node counts {dict(per_node)} must be >= 0 and add up to count {count}")
        active_targets = {n: per_node.get(n, 0) for n in names}
    else:
        active_targets = _active_targets(count, nodes, prev_actives)
    standby_targets = _standby_targets(standby, nodes, active_targets, prev_standbys)
    where = _fill(active_ids, active_targets, previous, nodes)
    where.update(_fill(standby_ids, standby_targets, previous, nodes))
    slots = tuple(Slot(i, SlotRole.ACTIVE if idx < count else SlotRole.STANDBY, where[i])
                  for idx, i in enumerate(ids))
    return Placement(group, slots)


__all__ = ["Node", "Placement", "PlacementError", "Slot", "SlotRole", "place", "zone_order"]
