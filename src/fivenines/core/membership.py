"""What one node of a cluster knows and decides about the others. Pure: no sockets, no etcd, no clock.

Every node runs the same spec with ``--node NAME`` and works out the same things from it:

* **the node's view of the spec** (:func:`node_spec`): its listeners listen on the VIP
  (a ``host:`` written in the spec is kept), its state lives in ``STATE_DIR/node-NAME``;
* **the layout** (:func:`layout_for`): every instance group placed on the nodes by
  :func:`fivenines.core.placement.place` (the same on every node, given the same spec),
  the slots this node runs and, with a port range, the port of every slot (slot ``i`` of
  a group listens on the range's ``i``-th port, on its node's address);
* **where every target is** (:func:`locate`): with etcd, from the **member records** the
  nodes publish under their own leases (:class:`MemberRecord`: address, admin URL, their
  instances' addresses, each once it passed its own node's checks: the others do not
  judge an instance that is still starting); a node whose record vanished (its lease expired: dead, frozen or
  cut off) has **lost** its targets; one never seen has not joined yet. Without etcd
  (``coordination: vrrp``) from the layout alone (:meth:`Layout.fixed_address`);
* **operator state** shared through etcd (:class:`OperatorRecord`, one per target) and
  the commands that bring a target to it (:func:`operator_steps`);
* **this node's health** as keepalived's track file sees it (:func:`node_health`).

The etcd keys, under ``PREFIX/SERVICE/cluster/``: ``leader`` (the election),
``members/NODE`` (a member record, attached to the node's own lease) and
``operator/TARGET`` (an operator record, no lease: it outlives every node).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import Enum

from fivenines.core.placement import Node, Placement, Slot, place
from fivenines.core.restore import AdminState
from fivenines.spec import Spec, parse_port_range

# --------------------------------------------------------------------------- the node's view of the spec


def node_state_dir(spec: Spec, node: str) -> str:
    """Where a node keeps its state: a folder of its own under the spec's state dir, so that
    several nodes may share one disk (the rig, ``make cluster-demo``).

    >>> from fivenines.spec import parse_spec
    >>> node_state_dir(parse_spec({"name": "shop", "listeners": [{"port": 80, "default_target_group": "w"}],
    ...                            "target_groups": {"w": {"targets": ["127.0.0.1:1"]}}}), "a")
    '.fivenines/shop/node-a'
    """
    return f"{(spec.state_dir or f'.fivenines/{spec.name}').rstrip('/')}/node-{node}"


def node_spec(spec: Spec, node: str) -> Spec:
    """The spec as node ``node`` runs it: listeners on the VIP unless their ``host`` is written
    in the spec (0.0.0.0, say), and a state dir of its own (:func:`node_state_dir`)."""
    assert spec.cluster is not None
    vip = str(ipaddress.IPv4Interface(spec.cluster.vip).ip)
    listeners = [ls if "host" in ls.model_fields_set else ls.model_copy(update={"host": vip})
                 for ls in spec.listeners]
    return spec.model_copy(update={"listeners": listeners, "state_dir": node_state_dir(spec, node)})


# --------------------------------------------------------------------------- the layout


@dataclass(frozen=True, slots=True)
class NodeAddress:
    name: str
    address: str
    zone: str | None = None


@dataclass(frozen=True, slots=True)
class Layout:
    """Where every instance of every group lives, as node ``node`` works it out from the spec."""

    node: str
    nodes: tuple[NodeAddress, ...]
    placements: Mapping[str, Placement] = field(default_factory=dict)
    ports: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # per group, by slot; () for auto

    def address_of(self, node: str) -> str:
        return next(n.address for n in self.nodes if n.name == node)

    @property
    def address(self) -> str:
        """This node's own address (its instances listen there)."""
        return self.address_of(self.node)

    def slot(self, target_id: str) -> Slot | None:
        for p in self.placements.values():
            for s in p.slots:
                if s.id == target_id:
                    return s
        return None

    def home(self, target_id: str) -> str | None:
        """The node ``target_id`` lives on (None: not a placed instance)."""
        s = self.slot(target_id)
        return s.node if s is not None else None

    def local(self, group: str) -> list[str]:
        """Ids of ``group``'s slots this node runs."""
        p = self.placements.get(group)
        return [s.id for s in p.on(self.node)] if p is not None else []

    def port(self, group: str, target_id: str) -> int | None:
        """The fixed port of a slot (a port range in the spec), or None (``auto``: published)."""
        p, ports = self.placements.get(group), self.ports.get(group, ())
        if p is None or not ports:
            return None
        return ports[[s.id for s in p.slots].index(target_id)]

    def fixed_address(self, target_id: str) -> str | None:
        """``node-address:port`` of a slot with a fixed port; None with ``auto`` ports."""
        for group, p in self.placements.items():
            for s in p.slots:
                if s.id == target_id:
                    port = self.port(group, s.id)
                    return f"{self.address_of(s.node)}:{port}" if port is not None else None
        return None

    def describe(self) -> list[str]:
        """``web: actives web-1@a web-2@b; standbys web-3@a`` per group."""
        return [p.describe() for _, p in sorted(self.placements.items())]

    @property
    def digest(self) -> str:
        """A short hash of the placement: nodes running different specs place differently."""
        text = "\n".join(self.describe() + [f"{g}:{ports}" for g, ports in sorted(self.ports.items())])
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def layout_for(spec: Spec, node: str) -> Layout:
    """Place every instance group of ``spec`` on its cluster's nodes, as ``node`` sees it.

    >>> from fivenines.spec import parse_spec
    >>> spec = parse_spec({"name": "s", "listeners": [{"port": 80, "default_target_group": "web"}],
    ...   "target_groups": {"web": {"instances": {"command": ["x"], "count": 2, "standby": 1, "ports": "9101-9103"}}},
    ...   "cluster": {"nodes": [{"name": "a", "address": "10.0.0.11"}, {"name": "b", "address": "10.0.0.12"}],
    ...               "vip": "10.0.0.100/24", "etcd": ["http://10.0.0.2:2379"]}})
    >>> lay = layout_for(spec, "b")
    >>> lay.describe(), lay.local("web"), lay.fixed_address("web-3")
    (['web: actives web-1@a web-2@b; standbys web-3@a'], ['web-2'], '10.0.0.11:9103')
    """
    c = spec.cluster
    assert c is not None
    nodes = tuple(NodeAddress(n.name, n.address, n.zone) for n in c.nodes)
    placements: dict[str, Placement] = {}
    ports: dict[str, tuple[int, ...]] = {}
    for name, tg in spec.target_groups.items():
        inst = tg.instances
        if inst is None or tg.replicated is not None:
            continue
        per_node = inst.placement if isinstance(inst.placement, dict) else None
        placements[name] = place(name, inst.count, inst.standby, [Node(n.name, n.zone) for n in nodes],
                                 per_node=per_node)
        rng = parse_port_range(inst.ports)
        ports[name] = tuple(rng[0] + i for i in range(inst.total)) if rng is not None else ()
    return Layout(node, nodes, placements, ports)


# --------------------------------------------------------------------------- the keys in etcd


def cluster_prefix(prefix: str, service: str) -> str:
    """Every key of the cluster of ``service`` starts with this.

    >>> cluster_prefix("/fivenines/", "shop")
    '/fivenines/shop/cluster/'
    """
    return f"{prefix.rstrip('/')}/{service}/cluster/"


def members_prefix(prefix: str, service: str) -> str:
    return cluster_prefix(prefix, service) + "members/"


def member_key(prefix: str, service: str, node: str) -> str:
    """Node ``node``'s member record (attached to its lease).

    >>> member_key("/fivenines", "shop", "a")
    '/fivenines/shop/cluster/members/a'
    """
    return members_prefix(prefix, service) + node


def operator_prefix(prefix: str, service: str) -> str:
    return cluster_prefix(prefix, service) + "operator/"


def operator_key(prefix: str, service: str, target: str) -> str:
    """The operator record of ``target`` (no lease).

    >>> operator_key("/fivenines", "shop", "web-2")
    '/fivenines/shop/cluster/operator/web-2'
    """
    return operator_prefix(prefix, service) + target


def prefix_end(prefix: str) -> bytes:
    """etcd's ``range_end`` for every key starting with ``prefix``: the prefix, last byte plus one.

    >>> prefix_end("/f/s/cluster/members/")
    b'/f/s/cluster/members0'
    """
    raw = prefix.encode()
    if not raw or raw[-1] == 0xFF:
        raise ValueError(f"no range end for prefix {prefix!r}")
    return raw[:-1] + bytes([raw[-1] + 1])


# --------------------------------------------------------------------------- member records


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """What a node publishes about itself under its own lease."""

    node: str
    address: str
    instances: Mapping[str, str]  # target id -> host:port, once it passed its node's checks
    starting: tuple[str, ...] = ()  # ids it runs that have not passed their checks yet
    admin: str | None = None
    pid: int = 0
    started: float = 0.0  # wall clock
    layout: str = ""  # Layout.digest: the same on every node running the same spec

    def to_json(self) -> str:
        return json.dumps({"node": self.node, "address": self.address, "instances": dict(self.instances),
                           "starting": list(self.starting), "admin": self.admin, "pid": self.pid,
                           "started": self.started, "layout": self.layout},
                          sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> MemberRecord:
        """Raises ValueError when ``text`` is not a member record.

        >>> r = MemberRecord("a", "10.0.0.11", {"web-1": "10.0.0.11:9101"}, pid=7)
        >>> MemberRecord.from_json(r.to_json()) == r
        True
        """
        try:
            d = json.loads(text)
            instances = {str(k): str(v) for k, v in dict(d["instances"]).items()}
            starting = tuple(str(i) for i in d.get("starting") or ())
            return cls(str(d["node"]), str(d["address"]), instances, starting, d.get("admin") and str(d["admin"]),
                       int(d.get("pid") or 0), float(d.get("started") or 0.0), str(d.get("layout") or ""))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a member record: {exc}") from None


class Where(str, Enum):
    PUBLISHED = "published"  # its node runs it and published its address
    FIXED = "fixed"  # from the layout alone (vrrp: fixed ports)
    UNKNOWN = "unknown"  # its node has not joined yet, or is starting it: not checked, no traffic
    LOST = "lost"  # its node left the cluster (lease expired), or says it does not run it


@dataclass(frozen=True, slots=True)
class Place:
    node: str
    address: str | None
    where: Where
    why: str = ""


def locate(layout: Layout, records: Mapping[str, MemberRecord], seen: Collection[str]) -> dict[str, Place]:
    """Where every instance on the *other* nodes is, from the member records in etcd now
    (``seen``: the nodes whose record this node has seen at some time).

    >>> lay = Layout("a", (NodeAddress("a", "10.0.0.11"), NodeAddress("b", "10.0.0.12"), NodeAddress("c", "10.0.0.13")),
    ...              {"web": place("web", 3, 0, [Node("a"), Node("b"), Node("c")])})
    >>> recs = {"b": MemberRecord("b", "10.0.0.12", {"web-2": "10.0.0.12:40001"})}
    >>> sorted((k, v.where.value, v.address) for k, v in locate(lay, recs, {"b"}).items())
    [('web-2', 'published', '10.0.0.12:40001'), ('web-3', 'unknown', None)]
    >>> locate(lay, {}, {"b"})["web-2"].why
    'node b left the cluster (its lease expired)'
    """
    out: dict[str, Place] = {}
    for p in layout.placements.values():
        for s in p.slots:
            if s.node == layout.node:
                continue
            rec = records.get(s.node)
            if rec is not None:
                addr = rec.instances.get(s.id)
                if addr is not None:
                    out[s.id] = Place(s.node, addr, Where.PUBLISHED)
                elif s.id in rec.starting:
                    out[s.id] = Place(s.node, None, Where.UNKNOWN, f"node {s.node} is starting it")
                else:
                    out[s.id] = Place(s.node, None, Where.LOST,
                                      f"node {s.node} runs no {s.id} (is it running the same spec?)")
            elif s.node in seen:
                out[s.id] = Place(s.node, None, Where.LOST, f"node {s.node} left the cluster (its lease expired)")
            else:
                out[s.id] = Place(s.node, None, Where.UNKNOWN, f"node {s.node} has not joined yet")
    return out


def fixed_places(layout: Layout) -> dict[str, Place]:
    """Where every instance on the other nodes is without a store (vrrp): node address and fixed port."""
    out = {}
    for p in layout.placements.values():
        for s in p.slots:
            if s.node != layout.node:
                out[s.id] = Place(s.node, layout.fixed_address(s.id), Where.FIXED)
    return out


# --------------------------------------------------------------------------- operator state


@dataclass(frozen=True, slots=True)
class OperatorRecord:
    """An operator's wish for one target, shared by every node."""

    admin_state: AdminState | None  # None: enabled
    weight: int | None  # None: the spec's
    node: str = ""  # where it was asked
    source: str = ""

    def to_json(self) -> str:
        return json.dumps({"admin_state": self.admin_state.value if self.admin_state else None,
                           "weight": self.weight, "node": self.node, "source": self.source},
                          sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> OperatorRecord:
        """Raises ValueError when ``text`` is not an operator record.

        >>> r = OperatorRecord(AdminState.DRAINED, None, "a", "admin API")
        >>> OperatorRecord.from_json(r.to_json()) == r
        True
        """
        try:
            d = json.loads(text)
            state = AdminState(d["admin_state"]) if d["admin_state"] is not None else None
            weight = d.get("weight")
            if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int)
                                       or not 0 <= weight <= 1000):
                raise ValueError(f"weight {weight!r} is not 0-1000")
            return cls(state, weight, str(d.get("node") or ""), str(d.get("source") or ""))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not an operator record: {exc}") from None


def operator_steps(admin_state: AdminState | None, weight: int, spec_weight: int,
                   want: OperatorRecord | None) -> list[tuple[str, int | None]]:
    """The operator commands that bring a target (``admin_state``, ``weight``) to ``want``
    (None: no record, i.e. enabled at the spec's weight), in order: ``("enable"|"drain"|
    "maintenance", None)`` and ``("weight", n)``.

    >>> operator_steps(AdminState.MAINTENANCE, 1, 1, OperatorRecord(AdminState.DRAINED, None))
    [('enable', None), ('drain', None)]
    >>> operator_steps(None, 5, 1, None)
    [('weight', 1)]
    >>> operator_steps(AdminState.DRAINED, 1, 1, OperatorRecord(AdminState.DRAINED, 1))
    []
    """
    want_state = want.admin_state if want is not None else None
    want_weight = want.weight if want is not None and want.weight is not None else spec_weight
    steps: list[tuple[str, int | None]] = []
    if want_state is not admin_state:
        if want_state is None:
            steps.append(("enable", None))
        elif want_state is AdminState.DRAINED:
            if admin_state is AdminState.MAINTENANCE:
                steps.append(("enable", None))  # drain refuses a target in maintenance
            steps.append(("drain", None))
        else:
            steps.append(("maintenance", None))
    if want_weight != weight:
        steps.append(("weight", want_weight))
    return steps


# --------------------------------------------------------------------------- this node's health (vrrp)


@dataclass(frozen=True, slots=True)
class GroupServing:
    serving: int  # targets getting new requests
    fail_open: bool  # ... only because nothing can serve (fail-open)


def node_health(listening: bool, groups: Mapping[str, GroupServing]) -> tuple[bool, str]:
    """Whether this node may hold the VIP (keepalived's track file): its balancer listens and
    every target group has a target serving on its merits (not by fail-open).

    >>> node_health(True, {"web": GroupServing(2, False)})
    (True, 'listening; every group has a target serving')
    >>> node_health(True, {"web": GroupServing(0, False), "api": GroupServing(3, True)})
    (False, 'no target serving in: api (fail-open), web')
    """
    if not listening:
        return False, "the balancer is not listening"
    empty = sorted(f"{g} (fail-open)" if s.fail_open else g for g, s in groups.items()
                   if s.serving == 0 or s.fail_open)
    if empty:
        return False, f"no target serving in: {', '.join(empty)}"
    return True, "listening; every group has a target serving"


__all__ = ["GroupServing", "Layout", "MemberRecord", "NodeAddress", "OperatorRecord", "Place", "Where", "fixed_places", "layout_for", "locate", "node_health", "node_spec", "operator_steps"]
