"""A spec with ``cluster:`` through `predict`: the inputs it reads, the findings, the JSON, the demo."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest

from fivenines.errors import SpecError
from fivenines.model.cluster import (
    DEFAULT_NODE_MTBF,
    DEFAULT_NODE_MTTR,
    NodeParams,
    etcd_takeover_time,
)
from fivenines.model.layout import DEFAULT_LB_MTBF, DEFAULT_LB_MTTR, predict
from fivenines.spec import Spec, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
NODES = [{"name": "a", "address": "10.0.0.11"}, {"name": "b", "address": "10.0.0.12"}]
ETCD3 = ["http://10.0.0.21:2379", "http://10.0.0.22:2379", "http://10.0.0.23:2379"]


def spec(count: int = 2, standby: int = 2, **cluster: Any) -> Spec:
    data: dict[str, Any] = {
        "name": "shop",
        "listeners": [{"port": 0, "default_target_group": "web"}],
        "target_groups": {"web": {"instances": {"command": ["srv", "{host}", "{port}"], "count": count, "standby": standby, "ports": "9101-9120"}}},
        "cluster": {"nodes": copy.deepcopy(NODES), "vip": "10.0.0.100/24", "etcd": ETCD3, **cluster},
    }
    return parse_spec(data)


def test_the_cluster_demo_predicts_five_nines_with_the_defaults() -> None:
    p = predict(load_spec(ROOT / "examples" / "cluster-demo.yaml"))
    assert p.cluster is not None
    assert p.nines >= 5.0, p
    assert [n.name for n in p.cluster.params.nodes] == ["a", "b"]
    assert all(n.mtbf == DEFAULT_NODE_MTBF and n.mttr == DEFAULT_NODE_MTTR for n in p.cluster.params.nodes)
    assert p.cluster.placements["web"].describe() == "web: actives web-1@a web-2@b; standbys web-3@a web-4@b"
    assert "cluster: node mtbf 180d (not given; a host fails about twice a year)" in p.assumptions
    assert p.cluster.findings == ()  # no single point: three etcd members, either node carries web


def test_one_node_is_held_to_about_three_nines_and_two_reach_five() -> None:
    one = predict(spec(count=2, standby=1, nodes=NODES[:1]))
    two = predict(spec(count=2, standby=2))
    assert one.cluster is not None and two.cluster is not None
    host = NodeParams("a")
    assert one.nines == pytest.approx(-math.log10(host.unavailability), abs=0.05)
    assert one.dominant == "cluster.nodes"
    assert two.nines >= 5.0
    assert any(f.startswith("one node (a)") for f in one.cluster.findings)


def test_the_takeover_bound_comes_from_the_mode() -> None:
    etcd = predict(spec(lease_ttl="3s")).cluster
    assert etcd is not None and etcd.params.takeover_time == pytest.approx(etcd_takeover_time(3.0))
    assert etcd.takeover_why == "lease_ttl 3s + etcd's expiry sweep 0.5s + 0.1s to move the address"
    vrrp = predict(spec(etcd=None, coordination="vrrp", vrrp={"advert_int": "100ms", "priority": {"a": 200, "b": 50}}))
    assert vrrp.cluster is not None
    assert vrrp.cluster.params.takeover_time == pytest.approx(3 * 0.1 + (256 - 50) * 0.1 / 256 + 0.1)
    assert vrrp.cluster.params.etcd == ()
    assert vrrp.load_balancer.result.contributions["quorum"] == 0.0
    slower = predict(spec(etcd=None, coordination="vrrp", vrrp={"advert_int": "1s"}))
    assert slower.load_balancer.result.contributions["takeover"] > vrrp.load_balancer.result.contributions["takeover"]


def test_vrrp_split_brain_is_a_finding_not_downtime() -> None:
    p = predict(spec(etcd=None, coordination="vrrp"))
    assert p.cluster is not None
    assert any("two masters" in f for f in p.cluster.findings)
    assert set(p.load_balancer.result.contributions) == {"nodes", "quorum", "takeover", "switchover"}


def test_etcd_members_on_a_node_address_live_on_that_node() -> None:
    p = predict(spec(etcd=["http://10.0.0.11:2379", "http://10.0.0.12:2379", "http://etcd3:2379"]))
    assert p.cluster is not None
    assert [m.node for m in p.cluster.params.etcd] == ["a", "b", None]
    one = predict(spec(etcd=["http://10.0.0.21:2379"]))
    assert one.cluster is not None
    assert any("etcd has one member: a single point of failure" in f for f in one.cluster.findings)
    assert one.dominant == "cluster.quorum"
    assert one.nines < 3.1


def test_declared_reliability_of_the_nodes_replaces_the_defaults() -> None:
    p = predict(spec(reliability={"mtbf": "365d", "mttr": "30m", "coverage": 0.99, "manual_recovery": "15m"},
                     nodes=[{**NODES[0], "reliability": {"mtbf": "90d"}}, NODES[1]]))
    assert p.cluster is not None
    a, b = p.cluster.params.nodes
    assert (a.mtbf, a.mttr, b.mtbf, b.mttr) == (90 * 86400, 1800, 365 * 86400, 1800)
    assert (a.process_mtbf, a.process_mttr) == (DEFAULT_LB_MTBF, DEFAULT_LB_MTTR)
    assert p.cluster.params.etcd[0].mtbf == 365 * 86400  # members on hosts of their own: as cluster.reliability
    assert (p.cluster.params.coverage, p.cluster.params.manual_recovery) == (0.99, 900)
    assert not any(a.startswith("cluster:") for a in p.assumptions)
    assert p.load_balancer.result.contributions["switchover"] > 0


def test_cluster_overrides_replace_what_the_spec_says() -> None:
    s = spec()
    base = predict(s)
    measured = predict(s, cluster={"takeover_time": 1.1, "node_mttr": 600.0})
    assert measured.cluster is not None and base.cluster is not None
    assert measured.cluster.params.takeover_time == 1.1 and measured.cluster.takeover_why == "given (measured)"
    assert all(n.mttr == 600.0 for n in measured.cluster.params.nodes)
    assert measured.nines > base.nines
    with pytest.raises(ValueError, match="unknown override lease; valid: coverage, manual_recovery, node_mtbf"):
        predict(s, cluster={"lease": 1.0})  # type: ignore[arg-type]
    no_cluster = parse_spec({"name": "x", "listeners": [{"port": 0, "default_target_group": "web"}],
                             "target_groups": {"web": {"instances": {"command": ["srv"], "count": 1}}}})
    with pytest.raises(ValueError, match="no cluster: section"):
        predict(no_cluster, cluster={"takeover_time": 1.0})


def test_the_overall_figure_counts_a_moment_once() -> None:
    p = predict(spec(count=2, standby=1))  # a's loss takes web below its two actives
    assert p.cluster is not None
    c = p.cluster.result
    parts = [v for _, v in p.contributions()]
    # the whole is no more than its parts, and the exact joint is used
    assert p.unavailability <= math.fsum(parts) + 1e-18
    assert p.unavailability == pytest.approx(c.unavailability, rel=1e-15)
    assert p.dominant == "web.nodes"
    assert any(f.startswith("web: losing node a leaves 1") for f in p.cluster.findings)


def test_json_has_the_cluster_and_no_cluster_stays_as_it_was() -> None:
    data = predict(spec()).to_json()
    c = data["cluster"]
    assert c["mode"] == "etcd" and c["vip"] == "10.0.0.100/24"
    assert [n["name"] for n in c["nodes"]] == ["a", "b"] and c["nodes"][0]["address"] == "10.0.0.11"
    assert c["etcd"] == {"members": 3, "quorum": 2, "on_nodes": [None, None, None]}
    assert c["takeover_time_s"] == pytest.approx(1.6)
    assert set(c["tier"]["contributions"]) == {"nodes", "quorum", "takeover", "switchover"}
    assert c["placement"] == {"web": {"web-1": "a", "web-2": "b", "web-3": "a", "web-4": "b"}}
    assert data["load_balancer"]["availability"] == pytest.approx(c["tier"]["availability"])
    assert data["groups"]["web"]["contributions"]["nodes"] == 0.0
    assert {x["part"] for x in data["contributions"]} >= {"cluster.quorum", "cluster.takeover", "web.detection"}
    plain = predict(parse_spec({"name": "x", "listeners": [{"port": 0, "default_target_group": "web"}],
                                "target_groups": {"web": {"instances": {"command": ["srv"], "count": 1}}}}))
    assert plain.to_json()["cluster"] is None and plain.cluster is None
    assert "nodes" not in plain.to_json()["groups"]["web"]["contributions"]


@pytest.mark.parametrize(("reliability", "where"), [
    ({"coverage": 1.5}, "cluster.reliability.coverage"),
    ({"mttr": "0s"}, "cluster.reliability.mttr"),
    ({"mtbf": "soon"}, "cluster.reliability.mtbf"),
    ({"mbtf": "30d"}, "cluster.reliability.mbtf"),
])
def test_bad_cluster_reliability_names_the_field(reliability: dict[str, Any], where: str) -> None:
    with pytest.raises(SpecError) as err:
        spec(reliability=reliability)
    assert where in str(err.value)


def test_bad_node_reliability_names_the_field() -> None:
    with pytest.raises(SpecError) as err:
        spec(nodes=[{**NODES[0], "reliability": {"mtbf": "0s"}}, NODES[1]])
    assert "cluster.nodes.0.reliability.mtbf" in str(err.value)
