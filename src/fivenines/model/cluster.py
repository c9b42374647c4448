"""A cluster of nodes behind a floating address: the balancer tier, and instances that fail with their node. Pure.

A cluster has ``N`` nodes. Each node is two units in series: its **host** (hardware,
kernel, power, network port; mtbf of months, mttr of hours) and the **fivenines
process** on it (the balancer, the election, the supervisor of the node's instances;
restarted by a service manager in about a minute). A node *serves* while both are up.
Both the balancer and the node's instances need it: the instances are children of
fivenines and die with it (``PR_SET_PDEATHSIG``), so a node failure is a **common
cause** for every instance placed on it.

Nodes fail and are repaired independently, so their joint steady state is a product:
every node is, independently, ``UP``, ``PROCESS_DOWN`` (host up, fivenines down) or
``HOST_DOWN`` with probabilities ``(a_h a_p, a_h u_p, u_h)``. :func:`evaluate_cluster`
enumerates those states (all ``3^N`` of them up to :data:`EXACT_NODES` nodes; beyond,
every state with at most :data:`TRUNCATED_DEPTH` nodes down, the rest counted as an
outage) and, **given each state**, computes:

* the **balancer tier**: up while at least one node serves (the VIP moves to it) and,
  in etcd mode, a quorum of etcd members is up (without one no node can win or keep the
  lease: the VIP lapses everywhere, safe but not live). An etcd member whose client URL
  names a node's address lives on that node's host; the others have hosts of their own;
* every **target group**: its instances on serving nodes (where :func:`~fivenines.core.placement.place`
  put them) form an N+M pool of the members left (:class:`~fivenines.model.pool.Pool`);
  with fewer than the group needs, it is down. Instances' own failures are independent
  of the nodes' (a process crash, a hang), so given the node state this is exact.

The service is up in a state when the tier and every group are; the unavailability is
``sum_s pi(s) (1 - A_tier(s) prod_g A_g(s))``, exact for this model (no double counting
of a moment when a node failure takes the balancer and instances at once).

Failures that cost a *window* of requests rather than a state come on top, in series:

* **takeover**: when the VIP holder stops serving and another node can take over, every
  request fails until the takeover is done:
  ``lam_holder x P(2+ nodes serve, quorum) x coverage x t_takeover``, where
  ``t_takeover`` is the bound of the mode (:func:`etcd_takeover_time`,
  :func:`vrrp_takeover_time`, from docs/cluster.md) and ``lam_holder`` the failure rate
  of the least reliable node (the holder could be any of them);
* **switchover** (imperfect takeover): with probability ``1 - coverage`` a takeover does
  not happen by itself and waits ``manual_recovery`` for a person;
* per group, the detection windows of instance failures (as for one node) and of **node
  failures**: the requests sent to a dead node's actives until the health checks of the
  balancer eject them, ``lam_node x t_node x (actives on the node / actives)``, where
  ``t_node`` leaves out what the takeover window covers when the dead node held the VIP.

>>> nodes = (NodeParams("a"), NodeParams("b"))
>>> one = evaluate_cluster(ClusterParams(nodes[:1], takeover_time=0.0), {})
>>> two = evaluate_cluster(ClusterParams(nodes, takeover_time=etcd_takeover_time(2)), {})
>>> f"{one.unavailability:.3g} -> {two.unavailability:.3g}"
'0.000948 -> 2.07e-06'
>>> two.tier.dominant
'takeover'
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import combinations, product

from fivenines.core.keepalived import master_down_interval
from fivenines.model.blocks import (
    UnavailabilityFigures,
    _check_probability,
    _check_rate,
    series_unavailability,
    up_count_distribution,
)
from fivenines.model.detection import detection_loss
from fivenines.model.group import GroupParams, PartResult, evaluate_group
from fivenines.model.pool import Distribution

DAY = 86400.0

DEFAULT_NODE_MTBF = 180 * DAY
"""A host fails about twice a year: Google's first year of a new cluster (Jeff Dean, 2008-2009
talks) has ~1000 individual machine failures, ~20 rack failures (40-80 machines each) and a
PDU failure (500-1000 machines) among a few thousand machines, i.e. ~0.5-1.5 losses of a
machine per machine-year from hardware and power alone; kernel panics, hangs and unplanned
reboots add to it."""

DEFAULT_NODE_MTTR = 4 * 3600.0
"""Hours, with replacement: a rack "1-6 hours to get back", a PDU "~6 hours" (same source);
a machine that does not come back is replaced from a spare or rebuilt in that time."""

ETCD_EXPIRY_SWEEP = 0.5
"""etcd revokes expired leases in a loop every 500 ms (docs/cluster.md, "the lease expires in etcd")."""

TAKEOVER_ACTIONS = 0.1
"""Watch event, grant, transaction, address added, gratuitous ARP: milliseconds on a LAN
(docs/cluster.md, "another node holds the VIP"); 0.1 s allowed."""

EXACT_NODES = 8
"""Up to this many nodes every state is enumerated (3^8 = 6561)."""

TRUNCATED_DEPTH = 3
"""Beyond :data:`EXACT_NODES`, states with more nodes than this down are counted as outages."""


def etcd_takeover_time(lease_ttl: float) -> float:
    """Bound on the time from the holder's failure to another node holding the VIP, etcd mode.

    The dead holder's lease expires at most ``lease_ttl`` after the last keepalive etcd
    received, plus etcd's expiry sweep; then a watcher campaigns and adds the address
    (docs/cluster.md: 1.7-2.6 s for ``lease_ttl`` 2 s, 2.19 s measured after ``kill -9``):

    >>> etcd_takeover_time(2.0)
    2.6
    """
    _check_rate("lease_ttl", lease_ttl, positive=True)
    return lease_ttl + ETCD_EXPIRY_SWEEP + TAKEOVER_ACTIONS


def vrrp_takeover_time(advert_int: float, backup_priority: int) -> float:
    """Bound on the takeover in vrrp mode: the backup's master-down interval (RFC 5798) and the move.

    ``3 x advert_int + (256 - priority) x advert_int / 256`` without adverts (docs/cluster.md):

    >>> round(vrrp_takeover_time(1.0, 100), 3), round(vrrp_takeover_time(0.1, 100), 3)
    (3.709, 0.461)
    """
    _check_rate("advert_int", advert_int, positive=True)
    return master_down_interval(advert_int, backup_priority) + TAKEOVER_ACTIONS


class NodeState(IntEnum):
    UP = 0  # host and fivenines up: the node serves
    PROCESS_DOWN = 1  # host up, fivenines (balancer and the node's instances) down
    HOST_DOWN = 2  # the host is down: everything on it, an etcd member included


@dataclass(frozen=True, slots=True)
class NodeParams:
    """One node: its host, and the fivenines process on it. Seconds.

    >>> up, process_down, host_down = NodeParams("a", mtbf=100.0, mttr=1.0, process_mtbf=50.0, process_mttr=1.0).probabilities()
    >>> round(up, 6), round(process_down, 6), round(host_down, 6)
    (0.970685, 0.019414, 0.009901)
    """

    name: str
    mtbf: float = DEFAULT_NODE_MTBF  # the host
    mttr: float = DEFAULT_NODE_MTTR
    process_mtbf: float = 30 * DAY  # fivenines on it (load_balancer.reliability)
    process_mttr: float = 60.0

    def __post_init__(self) -> None:
        for name in ("mtbf", "mttr", "process_mtbf", "process_mttr"):
            _check_rate(name, getattr(self, name), positive=True)

    def probabilities(self) -> tuple[float, float, float]:
        """``(UP, PROCESS_DOWN, HOST_DOWN)`` in steady state: host and process independent."""
        u_host = self.mttr / (self.mtbf + self.mttr)
        u_proc = self.process_mttr / (self.process_mtbf + self.process_mttr)
        return ((1.0 - u_host) * (1.0 - u_proc), (1.0 - u_host) * u_proc, u_host)

    @property
    def unavailability(self) -> float:
        """Probability that the node does not serve."""
        _, proc, host = self.probabilities()
        return proc + host

    @property
    def failure_rate(self) -> float:
        """Rate at which a serving node stops serving (its host or its fivenines fails), per second."""
        return 1.0 / self.mtbf + 1.0 / self.process_mtbf


@dataclass(frozen=True, slots=True)
class EtcdMember:
    """One etcd member: on a node's host (``node``), or on a host of its own (``mtbf``, ``mttr``)."""

    node: str | None = None
    mtbf: float = DEFAULT_NODE_MTBF
    mttr: float = DEFAULT_NODE_MTTR

    def __post_init__(self) -> None:
        _check_rate("mtbf", self.mtbf, positive=True)
        _check_rate("mttr", self.mttr, positive=True)

    @property
    def unavailability(self) -> float:
        """Of a member on a host of its own (one on a node follows the node's host)."""
        return self.mttr / (self.mtbf + self.mttr)


@dataclass(frozen=True, slots=True)
class ClusterParams:
    """The nodes, the takeover bound, the etcd members (none in vrrp mode), the takeover's coverage."""

    nodes: tuple[NodeParams, ...]
    takeover_time: float
    etcd: tuple[EtcdMember, ...] = ()
    coverage: float = 1.0
    manual_recovery: float = 3600.0

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ValueError("a cluster needs at least one node")
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate node names in {names}")
        for m in self.etcd:
            if m.node is not None and m.node not in names:
                raise ValueError(f"etcd member on unknown node {m.node!r}; nodes: {', '.join(names)}")
        _check_rate("takeover_time", self.takeover_time)
        _check_probability("coverage", self.coverage)
        _check_rate("manual_recovery", self.manual_recovery, positive=True)

    @property
    def quorum(self) -> int:
        """etcd members needed for a quorum (0 without etcd)."""
        return len(self.etcd) // 2 + 1 if self.etcd else 0

    @property
    def holder_failure_rate(self) -> float:
        """Failure rate of the VIP holder: the least reliable node's (conservative: any node may hold it)."""
        return max(n.failure_rate for n in self.nodes)


@dataclass(frozen=True, slots=True)
class PlacedGroup:
    """A target group and where its instances live: actives and standbys per node.

    A group whose members are not on the nodes (``targets:`` repaired elsewhere) has empty
    maps and does not depend on the node states.
    """

    params: GroupParams
    actives: Mapping[str, int] = field(default_factory=dict)
    standbys: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.placed and (sum(self.actives.values()) != self.params.active
                            or sum(self.standbys.values()) != self.params.standby):
            raise ValueError(f"placement of {sum(self.actives.values())}+{sum(self.standbys.values())} does not match "
                             f"the group's {self.params.active}+{self.params.standby}")

    @property
    def placed(self) -> bool:
        return bool(self.actives or self.standbys)

    def on(self, node: str) -> int:
        return self.actives.get(node, 0) + self.standbys.get(node, 0)


TIER_PARTS = ("nodes", "quorum", "takeover", "switchover")
CLUSTER_GROUP_PARTS = ("nodes", "capacity", "switchover", "common_cause", "detection")


@dataclass(frozen=True, slots=True)
class ClusterResult(UnavailabilityFigures):
    """The balancer tier, every group given the node states, and the whole service.

    ``tier`` parts: ``nodes`` (no node serves), ``quorum`` (a node serves but etcd has no
    quorum), ``takeover`` (windows while the VIP moves), ``switchover`` (takeovers that need a
    person). A group's ``nodes`` part: some node serves but those serving hold fewer of its
    instances than it needs; its ``detection`` part includes the windows of node failures.
    ``state`` is the exact unavailability over the node states (tier and groups together);
    ``unavailability`` adds the windows in series.
    """

    tier: PartResult
    groups: dict[str, PartResult]
    state: float
    windows: tuple[float, ...]
    left_out: float = 0.0  # probability of the states not enumerated (counted as down)

    @property
    def unavailability(self) -> float:
        return series_unavailability([self.state, *self.windows])


# --------------------------------------------------------------------------- node states


def node_states(nodes: Sequence[NodeParams]) -> tuple[list[tuple[tuple[NodeState, ...], float]], float]:
    """Every state of the nodes with its probability, and the probability of the states left out.

    All ``3^N`` states up to :data:`EXACT_NODES` nodes (nothing left out); beyond, the
    states with at most :data:`TRUNCATED_DEPTH` nodes not serving.

    >>> states, left = node_states([NodeParams("a"), NodeParams("b")])
    >>> len(states), left, round(math.fsum(p for _, p in states), 12)
    (9, 0.0, 1.0)
    """
    n = len(nodes)
    probs = [node.probabilities() for node in nodes]
    depth = n if n <= EXACT_NODES else TRUNCATED_DEPTH
    out: list[tuple[tuple[NodeState, ...], float]] = []
    for k in range(depth + 1):
        for down in combinations(range(n), k):
            for kinds in product((NodeState.PROCESS_DOWN, NodeState.HOST_DOWN), repeat=k):
                state = [NodeState.UP] * n
                for i, kind in zip(down, kinds, strict=True):
                    state[i] = kind
                out.append((tuple(state), math.prod(probs[i][s] for i, s in enumerate(state))))
    left = 0.0
    if depth < n:  # P(more than `depth` nodes down), summed directly
        left = math.fsum(up_count_distribution([node.unavailability for node in nodes])[: n - depth])
    return out, left


def quorum_unavailability(cluster: ClusterParams, state: Sequence[NodeState]) -> float:
    """Probability that fewer than a quorum of etcd members are up, given the node state (0 without etcd).

    >>> c = ClusterParams((NodeParams("a"), NodeParams("b")), 2.6, etcd=(EtcdMember("a"), EtcdMember("b"), EtcdMember()))
    >>> quorum_unavailability(c, [NodeState.UP, NodeState.PROCESS_DOWN])  # both hosts up: quorum
    0.0
    >>> f"{quorum_unavailability(c, [NodeState.UP, NodeState.HOST_DOWN]):.3g}"  # b's member gone: the third is needed
    '0.000925'
    """
    if not cluster.etcd:
        return 0.0
    index = {n.name: i for i, n in enumerate(cluster.nodes)}
    on_nodes = [m for m in cluster.etcd if m.node is not None]
    up_on_nodes = sum(1 for m in on_nodes if state[index[m.node or ""]] is not NodeState.HOST_DOWN)
    own = [m.unavailability for m in cluster.etcd if m.node is None]
    missing = cluster.quorum - up_on_nodes  # members needed among those on hosts of their own
    if missing <= 0:
        return 0.0
    if missing > len(own):
        return 1.0
    return math.fsum(up_count_distribution(own)[:missing])


# --------------------------------------------------------------------------- evaluation


class _GroupOverStates:
    """One group's parts, summed over the node states as :func:`evaluate_cluster` visits them."""

    def __init__(self, g: PlacedGroup, cluster: ClusterParams) -> None:
        self.g = g
        self.lam, self.lam_cc = g.params.rates()
        self.node_rates = {n.name: n.failure_rate for n in cluster.nodes}
        self.takeover_time = cluster.takeover_time
        self.parts = dict.fromkeys(CLUSTER_GROUP_PARTS, 0.0)
        self._pools: dict[int, Distribution | None] = {}

    def pool(self, members: int) -> Distribution | None:
        """The group's pool made of the ``members`` left on serving nodes; None when too few."""
        if members not in self._pools:
            params = self.g.params
            if members < params.needed:
                self._pools[members] = None
            else:
                active = min(params.active, members)
                left = dataclasses.replace(params, active=active, standby=members - active, required=params.needed)
                self._pools[members] = left.pool(self.lam).distribution()
        return self._pools[members]

    def given(self, up: Sequence[str], p: float) -> float:
        """Add the parts of one node state (probability ``p``); return the group's unavailability in it."""
        g, params, parts = self.g, self.g.params, self.parts
        members = sum(g.on(n) for n in up) if g.placed else params.total
        dist = self.pool(members)
        if dist is None:
            parts["nodes"] += p
            return 1.0
        parts["capacity"] += p * dist.capacity
        parts["switchover"] += p * dist.switchover
        # a covered instance failure that leaves the group up: its detection window
        window = params.coverage * dist.room * detection_loss(self.lam, params.detection_time, params.exposure)
        # A serving node that fails while the group survives it: its actives' share until ejected.
        # When it held the VIP (one serving node in k), the takeover window covers that time
        # already, but for what detection takes beyond the takeover.
        k = len(up)
        t_node = ((k - 1) * params.detection_time + max(0.0, params.detection_time - self.takeover_time)) / k
        for name in up if g.placed else ():
            if g.actives.get(name, 0) and members - g.on(name) >= params.needed:
                share = g.actives[name] / params.active
                window += detection_loss(self.node_rates[name], t_node, params.exposure) * share
        parts["detection"] += p * window
        return dist.unavailability

    def result(self) -> PartResult:
        if not self.g.placed:  # not on the nodes: as on one node
            return PartResult({"nodes": 0.0, **evaluate_group(self.g.params).contributions})
        mu = 1.0 / self.g.params.mttr
        self.parts["common_cause"] = self.lam_cc / (self.lam_cc + mu) if self.lam_cc > 0 else 0.0
        return PartResult(dict(self.parts))


def evaluate_cluster(cluster: ClusterParams, groups: Mapping[str, PlacedGroup]) -> ClusterResult:
    """The balancer tier and every group over the node states (see the module docstring).

    A 1+1 group: with both instances on node a, a's failures take the group down; spread
    over a and b, only both nodes down at once does:

    >>> from fivenines.model.group import GroupParams
    >>> c = ClusterParams((NodeParams("a"), NodeParams("b")), takeover_time=2.6)
    >>> stacked = PlacedGroup(GroupParams(1, 1, mttr=5.0, detection_time=2.5), {"a": 1}, {"a": 1})
    >>> spread = PlacedGroup(GroupParams(1, 1, mttr=5.0, detection_time=2.5), {"a": 1}, {"b": 1})
    >>> s, r = evaluate_cluster(c, {"web": stacked}), evaluate_cluster(c, {"web": spread})
    >>> s.groups["web"].dominant, f"{s.groups['web'].unavailability:.3g}", f"{r.groups['web'].unavailability:.3g}"
    ('nodes', '0.000948', '1.53e-06')
    """
    index = {n.name: i for i, n in enumerate(cluster.nodes)}
    for name, g in groups.items():
        unknown = sorted((set(g.actives) | set(g.standbys)) - set(index))
        if unknown:
            raise ValueError(f"{name}: instances placed on unknown nodes {unknown}; nodes: {', '.join(index)}")
    states, left = node_states(cluster.nodes)
    over = {name: _GroupOverStates(g, cluster) for name, g in groups.items()}
    tier = dict.fromkeys(TIER_PARTS, 0.0)
    tier["nodes"] = left
    state_u: list[float] = [left]
    takeover_weight: list[float] = []  # P(a node serves, another could take over, quorum)

    for state, p in states:
        up = [cluster.nodes[i].name for i, s in enumerate(state) if s is NodeState.UP]
        if not up:
            tier["nodes"] += p
            state_u.append(p)
            continue
        u_quorum = quorum_unavailability(cluster, state)
        tier["quorum"] += p * u_quorum
        if len(up) >= 2:
            takeover_weight.append(p * (1.0 - u_quorum))
        u_groups = [o.given(up, p) for o in over.values()]
        state_u.append(p * series_unavailability([u_quorum, *u_groups]))

    holder = cluster.holder_failure_rate * math.fsum(takeover_weight)
    tier["takeover"] = min(1.0, holder * cluster.coverage * cluster.takeover_time)
    tier["switchover"] = min(1.0, holder * (1.0 - cluster.coverage) * cluster.manual_recovery)
    results = {name: o.result() for name, o in over.items()}
    windows = [tier["takeover"], tier["switchover"]]
    for r in results.values():
        windows += [r.contributions["common_cause"], r.contributions["detection"]]
    return ClusterResult(PartResult(tier), results, math.fsum(state_u), tuple(windows), left)


def single_points(cluster: ClusterParams, groups: Mapping[str, PlacedGroup]) -> list[str]:
    """What one failure takes down: findings for ``fivenines model``.

    >>> c = ClusterParams((NodeParams("a"), NodeParams("b")), 2.6, etcd=(EtcdMember(),))
    >>> for line in single_points(c, {"web": PlacedGroup(GroupParams(2, 1), {"a": 1, "b": 1}, {"a": 1})}):
    ...     print(line)
    etcd has one member: a single point of failure (no quorum, no VIP, while its host is down); run three
    web: losing node a leaves 1 of its instances, it needs 2 (add a standby or a node)
    """
    out: list[str] = []
    names = [n.name for n in cluster.nodes]
    if len(cluster.nodes) == 1:
        out.append(f"one node ({names[0]}): every failure of its host or of fivenines is an outage; "
                   "a second node would take over the VIP instead")
    if len(cluster.etcd) == 1:
        where = f"on node {cluster.etcd[0].node}" if cluster.etcd[0].node else "its host"
        out.append(f"etcd has one member: a single point of failure (no quorum, no VIP, while {where} is down); run three")
    elif cluster.etcd and len(cluster.etcd) % 2 == 0:
        n, q = len(cluster.etcd), cluster.quorum
        out.append(f"etcd has {n} members: a quorum needs {q}, so it survives {n - q} failure{'s' if n - q != 1 else ''}, "
                   f"as {n - 1} member{'s' if n != 2 else ''} would, with one more to fail; use an odd number")
    for name in names:
        colocated = sum(1 for m in cluster.etcd if m.node == name)
        if colocated and len(cluster.etcd) - colocated < cluster.quorum:
            out.append(f"node {name} holds {colocated} of the {len(cluster.etcd)} etcd members: losing it loses the quorum")
    for gname, g in groups.items():
        if not g.placed or len(names) == 1:
            continue
        for name in names:
            left = g.params.total - g.on(name)
            if g.on(name) and left < g.params.needed:
                out.append(f"{gname}: losing node {name} leaves {left} of its instances, it needs "
                           f"{g.params.needed} (add a standby or a node)")
    return out


__all__ = [
    "DEFAULT_NODE_MTBF",
    "DEFAULT_NODE_MTTR",
    "ClusterParams",
    "ClusterResult",
    "EtcdMember",
    "NodeParams",
    "NodeState",
    "PlacedGroup",
    "etcd_takeover_time",
    "evaluate_cluster",
    "node_states",
    "quorum_unavailability",
    "single_points",
    "vrrp_takeover_time",
]
