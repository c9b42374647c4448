"""From a spec's ``cluster:`` section to the cluster model's inputs, and the cluster part of a prediction. Pure.

Which numbers go where (docs/availability.md, "Clusters"):

* every node: its host from ``cluster.nodes[i].reliability``, else ``cluster.reliability``,
  else 180 days between failures and 4 hours to repair
  (:data:`~fivenines.model.cluster.DEFAULT_NODE_MTBF`, ``DEFAULT_NODE_MTTR``); the
  fivenines process on it from ``load_balancer.reliability`` (default 30 days, 1 minute);
* the takeover bound of the mode: etcd, ``lease_ttl + 0.5 s + 0.1 s``; vrrp, the
  master-down interval of the lower priority (``3 x advert_int + skew``) + 0.1 s;
* etcd members: one per client URL; a URL whose host is a node's address is a member on
  that node's host, the others have hosts of their own, as reliable as the nodes;
* every group with ``instances:`` placed by :func:`fivenines.core.placement.place` (spread);
  ``targets:`` do not live on the nodes.

>>> from fivenines.spec import parse_spec
>>> spec = parse_spec({
...     "name": "shop", "listeners": [{"port": 0, "default_target_group": "web"}],
...     "target_groups": {"web": {"instances": {"command": ["srv"], "count": 2, "standby": 2}}},
...     "cluster": {"nodes": [{"name": "a", "address": "10.0.0.11"}, {"name": "b", "address": "10.0.0.12"}],
...                 "vip": "10.0.0.100/24", "etcd": ["http://10.0.0.11:2379", "http://10.0.0.12:2379",
...                                                  "http://10.0.0.13:2379"]}})
>>> from fivenines.model.layout import predict
>>> c = predict(spec).cluster
>>> c.params.takeover_time, [m.node for m in c.params.etcd], c.placements["web"].describe()
(1.6, ['a', 'b', None], 'web: actives web-1@a web-2@b; standbys web-3@a web-4@b')
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict
from urllib.parse import urlsplit

from fivenines.core.placement import Node, Placement, SlotRole, place
from fivenines.model.blocks import format_seconds
from fivenines.model.cluster import (
    DEFAULT_NODE_MTBF,
    DEFAULT_NODE_MTTR,
    ETCD_EXPIRY_SWEEP,
    TAKEOVER_ACTIONS,
    ClusterParams,
    ClusterResult,
    EtcdMember,
    NodeParams,
    PlacedGroup,
    etcd_takeover_time,
    single_points,
    vrrp_takeover_time,
)
from fivenines.model.group import GroupParams
from fivenines.spec import ClusterSpec, HostReliabilitySpec, Spec


class ClusterOverride(TypedDict, total=False):
    """Values that replace the declared or assumed ones of a cluster (seconds), e.g. measured by chaos.

    ``node_mtbf`` and ``node_mttr`` apply to every node's host (and every etcd member's
    host); ``takeover_time`` replaces the bound of the mode.
    """

    node_mtbf: float
    node_mttr: float
    takeover_time: float
    coverage: float
    manual_recovery: float


_CLUSTER_KEYS = frozenset(ClusterOverride.__annotations__)


@dataclass(frozen=True, slots=True)
class ClusterPrediction:
    """The cluster part of a :class:`~fivenines.model.layout.Prediction`."""

    mode: str  # "etcd" or "vrrp"
    vip: str
    addresses: dict[str, str]  # node -> address
    params: ClusterParams
    result: ClusterResult
    placements: dict[str, Placement]
    takeover_why: str
    findings: tuple[str, ...]
    assumptions: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        tier = self.result.tier
        return {
            "mode": self.mode,
            "vip": self.vip,
            "nodes": [
                {"name": n.name, "address": self.addresses[n.name], "mtbf_s": n.mtbf, "mttr_s": n.mttr,
                 "process_mtbf_s": n.process_mtbf, "process_mttr_s": n.process_mttr,
                 "unavailability": n.unavailability}
                for n in self.params.nodes
            ],
            "etcd": {"members": len(self.params.etcd), "quorum": self.params.quorum,
                     "on_nodes": [m.node for m in self.params.etcd]} if self.params.etcd else None,
            "takeover_time_s": self.params.takeover_time,
            "takeover_bound": self.takeover_why,
            "coverage": self.params.coverage,
            "manual_recovery_s": self.params.manual_recovery,
            "tier": {
                "availability": tier.availability,
                "unavailability": tier.unavailability,
                "nines": _finite(tier.nines),
                "dominant": tier.dominant,
                "contributions": dict(tier.contributions),
            },
            "state_unavailability": self.result.state,
            "left_out": self.result.left_out,
            "placement": {g: p.as_dict() for g, p in self.placements.items()},
            "findings": list(self.findings),
        }

    def lines(self) -> list[str]:
        """What ``fivenines model`` prints about the cluster, below its table."""
        p = self.params
        nodes = ", ".join(f"{n.name} {self.addresses[n.name]}" for n in p.nodes)
        if self.mode == "etcd":
            on_nodes = sum(1 for m in p.etcd if m.node is not None)
            where = ", ".join(part for part in (
                f"{on_nodes} on nodes" if on_nodes else "",
                _own_hosts(len(p.etcd) - on_nodes)) if part)
            how = f"etcd ({_count(len(p.etcd), 'member')}, quorum {p.quorum}: {where})"
        else:
            how = "vrrp (keepalived)"
        tier = self.result.tier
        c = tier.contributions
        takeover = (f"takeover within {format_seconds(p.takeover_time)}: {self.takeover_why}" if len(p.nodes) > 1
                    else "no takeover: one node")
        out = [
            f"cluster: {_count(len(p.nodes), 'node')} ({nodes}), VIP {self.vip} moved by {how}",
            f"  {takeover}",
            f"  balancer tier: no node serving {c['nodes']:.3g}, no etcd quorum {c['quorum']:.3g}, "
            f"takeovers {c['takeover']:.3g}, failed takeovers {c['switchover']:.3g}; "
            f"{format_seconds(tier.downtime_per_year_s)} a year, dominated by {tier.dominant}",
        ]
        out += [f"  placement: {pl.describe()}" for pl in self.placements.values()]
        if self.findings:
            out.append("findings:")
            out += [f"  {f}" for f in self.findings]
        return out


def _own_hosts(n: int) -> str:
    return "" if n == 0 else "1 on a host of its own" if n == 1 else f"{n} on hosts of their own"


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def _finite(x: float) -> float | None:
    return None if x == float("inf") else x


def _takeover(c: ClusterSpec) -> tuple[float, str]:
    if len(c.nodes) == 1:
        return 0.0, "one node: nothing to take over to"
    if c.mode == "etcd":
        ttl = c.lease_ttl
        return etcd_takeover_time(ttl), (f"lease_ttl {ttl:g}s + etcd's expiry sweep {ETCD_EXPIRY_SWEEP:g}s + "
                                          f"{TAKEOVER_ACTIONS:g}s to move the address")
    advert = c.vrrp.advert_int if c.vrrp is not None else 1.0
    prio = min(c.priority(n.name) for n in c.nodes)
    return vrrp_takeover_time(advert, prio), (f"3 x advert_int {advert:g}s + skew (256 - {prio})/256 x {advert:g}s + "
                                              f"{TAKEOVER_ACTIONS:g}s to move the address")


def _etcd_members(c: ClusterSpec, mtbf: float, mttr: float) -> tuple[EtcdMember, ...]:
    """One member per client URL: on the node whose address the URL names, else on a host of its own."""
    if c.mode != "etcd":
        return ()
    by_address = {n.address: n.name for n in c.nodes}
    return tuple(EtcdMember(by_address.get(urlsplit(url).hostname or ""), mtbf, mttr) for url in c.etcd or [])


def _placed(spec: Spec, params: Mapping[str, GroupParams], nodes: list[Node]) -> tuple[dict[str, PlacedGroup],
                                                                                        dict[str, Placement]]:
    groups: dict[str, PlacedGroup] = {}
    placements: dict[str, Placement] = {}
    for name, tg in spec.target_groups.items():
        gp = params[name]
        if tg.instances is None:
            groups[name] = PlacedGroup(gp)
            continue
        pl = place(name, gp.active, gp.standby, nodes)
        placements[name] = pl
        actives = Counter(s.node for s in pl.slots if s.role is SlotRole.ACTIVE)
        standbys = Counter(s.node for s in pl.slots if s.role is SlotRole.STANDBY)
        groups[name] = PlacedGroup(gp, dict(actives), dict(standbys))
    return groups, placements


@dataclass(frozen=True, slots=True)
class ClusterLayout:
    """A spec's cluster as the model sees it, before evaluation."""

    spec: ClusterSpec
    params: ClusterParams
    groups: dict[str, PlacedGroup]
    placements: dict[str, Placement]
    takeover_why: str
    assumptions: tuple[str, ...]

    def prediction(self, result: ClusterResult) -> ClusterPrediction:
        findings = single_points(self.params, self.groups)
        c = self.spec
        if c.mode == "vrrp" and len(c.nodes) == 2:
            a, b = (n.name for n in c.nodes)
            findings.append(f"vrrp: if {a} and {b} lose each other while clients reach both, both hold the VIP "
                            "(two masters) until the partition heals; not counted as downtime (docs/cluster.md)")
        zones = Counter(n.zone for n in c.nodes if n.zone is not None)
        for zone, count in zones.items():
            if count > 1:
                names = ", ".join(n.name for n in c.nodes if n.zone == zone)
                findings.append(f"nodes {names} share zone {zone}: one failure of the zone (power, switch) takes "
                                "them together, which the model does not count (nodes fail independently)")
        if result.left_out > 0:
            findings.append(f"{len(c.nodes)} nodes: states with more than 3 nodes down (probability "
                            f"{result.left_out:.3g}) counted as outages")
        return ClusterPrediction(
            mode=c.mode, vip=c.vip, addresses={n.name: n.address for n in c.nodes}, params=self.params,
            result=result, placements=self.placements, takeover_why=self.takeover_why,
            findings=tuple(findings), assumptions=self.assumptions,
        )


def cluster_layout(spec: Spec, params: Mapping[str, GroupParams], process_mtbf: float, process_mttr: float,
                   override: ClusterOverride) -> ClusterLayout:
    """The cluster model's inputs from ``spec`` (which must have a ``cluster:``), with ``override`` applied."""
    c = spec.cluster
    if c is None:
        raise ValueError("the spec has no cluster: section")
    unknown = sorted(set(override) - _CLUSTER_KEYS)
    if unknown:
        raise ValueError(f"cluster: unknown override {', '.join(unknown)}; valid: {', '.join(sorted(_CLUSTER_KEYS))}")
    rel = c.reliability
    mtbf = override.get("node_mtbf", rel.mtbf)
    mttr = override.get("node_mttr", rel.mttr)
    members = _etcd_members(c, 1.0, 1.0)
    own_hosts = any(m.node is None for m in members)
    assumed: list[str] = []
    if mtbf is None and (own_hosts or any(n.reliability is None or n.reliability.mtbf is None for n in c.nodes)):
        assumed.append(f"cluster: node mtbf {DEFAULT_NODE_MTBF / 86400:g}d (not given; a host fails about twice a year)")
    if mttr is None and (own_hosts or any(n.reliability is None or n.reliability.mttr is None for n in c.nodes)):
        assumed.append(f"cluster: node mttr {DEFAULT_NODE_MTTR / 3600:g}h (not given; hours, with replacement)")
    mtbf = float(mtbf if mtbf is not None else DEFAULT_NODE_MTBF)
    mttr = float(mttr if mttr is not None else DEFAULT_NODE_MTTR)

    def host(node_rel: HostReliabilitySpec | None, key: str, base: float) -> float:
        given = getattr(node_rel, key) if node_rel is not None and f"node_{key}" not in override else None
        return float(given) if given is not None else base

    nodes = tuple(NodeParams(n.name, host(n.reliability, "mtbf", mtbf), host(n.reliability, "mttr", mttr),
                             process_mtbf, process_mttr) for n in c.nodes)
    takeover, why = _takeover(c)
    if "takeover_time" in override:
        takeover, why = float(override["takeover_time"]), "given (measured)"
    cluster = ClusterParams(
        nodes, takeover, _etcd_members(c, mtbf, mttr),
        coverage=float(override.get("coverage", rel.coverage)),
        manual_recovery=float(override.get("manual_recovery", rel.manual_recovery)),
    )
    groups, placements = _placed(spec, params, [Node(n.name, n.zone) for n in c.nodes])
    return ClusterLayout(c, cluster, groups, placements, why, tuple(assumed))


__all__ = ["ClusterLayout", "ClusterOverride", "ClusterPrediction", "cluster_layout"]
