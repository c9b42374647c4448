"""The cluster: section of fivenines.yaml: defaults, and every error with its field path."""

from __future__ import annotations

from typing import Any

import pytest

from fivenines.errors import SpecError
from fivenines.spec import Spec, node_error, parse_spec


def base(**cluster: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "svc",
        "listeners": [{"port": 0, "default_target_group": "web"}],
        "target_groups": {"web": {"targets": ["127.0.0.1:9"]}},
    }
    if cluster:
        spec["cluster"] = cluster
    return spec


NODES = [{"name": "a", "address": "10.0.0.11"}, {"name": "b", "address": "10.0.0.12", "zone": "z2"}]


def errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as exc:
        parse_spec(data, "f.yaml")
    return [str(e) for e in exc.value.errors]


def test_a_spec_without_cluster_is_one_node_as_before() -> None:
    spec = parse_spec(base())
    assert spec.cluster is None
    assert node_error(spec, None) is None
    assert str(node_error(spec, "a")) == "cluster: --node a: this spec has no cluster: section"
    assert "cluster" not in Spec.model_validate(base()).model_dump(exclude_none=True)


def test_etcd_is_the_default_when_endpoints_are_given_else_vrrp() -> None:
    spec = parse_spec(base(nodes=NODES, vip="10.0.0.100/24", etcd=["http://10.0.0.2:2379"]))
    c = spec.cluster
    assert c is not None and c.mode == "etcd" and c.lease_ttl == 1.0 and c.interface == "eth0"
    assert node_error(spec, "b") is None
    assert str(node_error(spec, "x")) == "cluster.nodes: --node x: no such node; nodes: a, b"
    assert str(node_error(spec, None)).startswith("cluster.nodes: this spec describes a cluster: give --node NAME")
    c2 = parse_spec(base(nodes=NODES, vip="10.0.0.100/24", vrrp={"advert_int": "100ms"})).cluster
    assert c2 is not None and c2.mode == "vrrp" and c2.vrrp is not None and c2.vrrp.advert_int == 0.1
    assert (c2.priority("a"), c2.priority("b")) == (150, 100)


@pytest.mark.parametrize(("cluster", "expected"), [
    ({"nodes": [NODES[0], {"name": "a", "address": "10.0.0.12"}], "vip": "10.0.0.100/24", "etcd": ["http://e:2379"]},
     "f.yaml: cluster.nodes.1.name: node 'a' is already cluster.nodes.0"),
    ({"nodes": [NODES[0], {"name": "b", "address": "10.0.0.11"}], "vip": "10.0.0.100/24", "etcd": ["http://e:2379"]},
     "f.yaml: cluster.nodes.1.address: 10.0.0.11 is already the address of cluster.nodes.0"),
    ({"nodes": NODES, "vip": "10.0.1.100/24", "etcd": ["http://e:2379"]},
     "f.yaml: cluster.vip: 10.0.1.100/24 is not in the subnet of node 'a' (10.0.0.11): the VIP must be in the "
     "nodes' subnet on eth0 (here 10.0.1.0/24)"),
    ({"nodes": NODES, "vip": "10.0.0.11/24", "etcd": ["http://e:2379"]},
     "f.yaml: cluster.vip: 10.0.0.11 is node 'a''s own address; the VIP must be a free one"),
    ({"nodes": NODES, "vip": "10.0.0.100", "etcd": ["http://e:2379"]},
     "f.yaml: cluster.vip: '10.0.0.100': give the prefix length too, e.g. 10.0.0.100/24"),
    ({"nodes": NODES, "vip": "10.0.0.100/24", "coordination": "etcd"},
     "f.yaml: cluster.etcd: coordination etcd needs etcd client URLs, e.g. [http://10.0.0.2:2379]"),
    ({"nodes": [*NODES, {"name": "c", "address": "10.0.0.13"}], "vip": "10.0.0.100/24"},
     "f.yaml: cluster.coordination: vrrp (keepalived) pairs two nodes; this cluster has 3: use coordination: etcd"),
    ({"nodes": NODES, "vip": "10.0.0.100/24", "vrrp": {"priority": {"x": 10}}},
     "f.yaml: cluster.vrrp.priority.x: no node 'x'; nodes: a, b"),
    ({"nodes": NODES, "vip": "10.0.0.100/24", "etcd": ["http://e:2379"], "vrrp": {}},
     "f.yaml: cluster.vrrp: only used with coordination: vrrp (coordination is etcd)"),
    ({"nodes": NODES, "vip": "10.0.0.100/24", "etcd": ["http://e:2379"], "lease_ttl": "500ms"},
     "f.yaml: cluster.lease_ttl: lease_ttl must be whole seconds and at least 1s: etcd's leases count whole "
     "seconds (got 500ms)"),
    ({"nodes": NODES, "vip": "10.0.0.100/24", "etcd": ["http://e:2379"], "lease_ttl": "2500ms"},
     "f.yaml: cluster.lease_ttl: lease_ttl must be whole seconds and at least 1s: etcd's leases count whole "
     "seconds (got 2500ms)"),
    ({"nodes": [{"name": "a", "address": "10.0.0.300"}], "vip": "10.0.0.100/24"},
     "f.yaml: cluster.nodes.0.address: '10.0.0.300' is not an IPv4 address, e.g. 10.0.0.11"),
    ({"nodes": NODES, "vip": "10.0.0.100/24", "vrrp": {"advert_int": "5ms"}},
     "f.yaml: cluster.vrrp.advert_int: advert_int must be between 10ms and 40.95s (VRRPv3 counts centiseconds; got 5ms)"),
    ({"nodes": NODES, "vip": "10.0.0.100/24", "vips": []},
     "f.yaml: cluster.vips: unknown key; valid keys here: nodes, vip, interface, coordination, etcd, lease_ttl, key_prefix, vrrp, reliability"),
])
def test_bad_cluster_specs_name_the_field(cluster: dict[str, Any], expected: str) -> None:
    got = errors(base(**cluster))
    assert expected in [f"f.yaml: {g}" for g in got], got


def group(**instances: Any) -> dict[str, Any]:
    return {"instances": {"command": ["x", "--host", "{host}", "--port", "{port}"], **instances}}


def with_groups(groups: dict[str, Any], **cluster: Any) -> dict[str, Any]:
    spec = base(**cluster)
    spec["target_groups"] = groups
    return spec


ETCD = {"nodes": NODES, "vip": "10.0.0.100/24", "etcd": ["http://10.0.0.2:2379"]}


def test_placement_per_node_names_the_cluster_s_nodes_and_adds_up_to_count() -> None:
    ok = parse_spec(with_groups({"web": group(count=3, placement={"a": 2, "b": 1})}, **ETCD))
    inst = ok.target_groups["web"].instances
    assert inst is not None and inst.placement == {"a": 2, "b": 1}
    assert parse_spec(with_groups({"web": group()}, **ETCD)).target_groups["web"].instances.placement == "spread"  # type: ignore[union-attr]
    assert errors(with_groups({"web": group(count=2, placement={"a": 1, "x": 1})}, **ETCD)) == [
        "target_groups.web.instances.placement.x: no node 'x'; nodes: a, b"]
    assert errors(with_groups({"web": group(count=3, placement={"a": 1, "b": 1})}, **ETCD)) == [
        "target_groups.web.instances.placement: the actives per node add up to 2, not count (3)"]
    assert errors(with_groups({"web": group(count=2, placement={"a": 2})})) == [
        "target_groups.web.instances.placement: actives per node need a cluster: section"]


def test_a_cluster_refuses_what_does_not_run_across_nodes_yet() -> None:
    vrrp = {"nodes": NODES, "vip": "10.0.0.100/24", "coordination": "vrrp"}
    assert errors(with_groups({"web": group(ports="auto")}, **vrrp)) == [
        "target_groups.web.instances.ports: coordination vrrp has no store to publish the instances' ports: give a "
        "range (e.g. 9101-9110); instance i of the group listens on the range's i-th port of its node"]
    assert parse_spec(with_groups({"web": group(ports="9101-9102")}, **vrrp)).cluster is not None
    replicated = {"db": {"instances": {"command": ["redis-server", "--port", "{port}"], "count": 1, "standby": 1},
                         "replicated": {"kind": "redis"}}}
    spec = base(**ETCD)
    spec["target_groups"] = replicated
    spec["listeners"] = [{"port": 0, "protocol": "tcp", "default_target_group": "db"}]
    msgs = errors(spec)
    assert any(m.startswith("target_groups.db.replicated: a replicated store does not run across cluster nodes yet")
               for m in msgs), msgs
