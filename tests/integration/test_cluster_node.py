"""Whole cluster nodes (``fivenines up SPEC --node NAME``) in the namespace rig: a real etcd (or
keepalived), demo instances placed across the nodes, a client behind the VIP, real faults.

Every node checks every target all the time, so the node that takes the VIP over serves at
once with what it already knows; a node's instances go with it (its member record leaves
etcd with its lease) and standbys on the others take over; an operator's drain lives in etcd
and outlives the node it was given to.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from fivenines.core.keepalived import master_down_interval
from fivenines.rig import Rig
from fivenines.rig.etcd import EtcdInRig
from fivenines.rig.forward import Forward
from tests.cluster_helpers import (
    VIP,
    Load,
    UpNode,
    leave_closed_fence,
    node_spec,
    reset_host,
    start_up_nodes,
)
from tests.helpers import PY, require_binary, require_rig, wait_until
from tests.ops_helpers import Chromium

pytestmark = pytest.mark.slow

TTL = 2
TAKEOVER_BOUND = TTL + 0.5 + 1.0  # lease expiry + etcd's expiry sweep + watch, grant, txn (test_cluster_etcd)
PORT = 8080


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[Rig, EtcdInRig]]:
    require_rig()
    require_binary("etcd")
    with Rig(["etcd", "a", "b", "client"]) as rig:
        etcd = EtcdInRig(rig, ["etcd"], rig.scratch)
        yield rig, etcd
    assert rig.leftovers() == []


@pytest.fixture
def cluster(world: tuple[Rig, EtcdInRig], request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A work folder per test; at the end every node and instance killed, the VIP gone, logs shown."""
    rig, etcd = world
    work = rig.scratch / request.node.name[:40]
    work.mkdir(parents=True)
    ctx: dict[str, Any] = {"rig": rig, "etcd": etcd, "work": work, "nodes": {},
                           "name": request.node.name.removeprefix("test_")[:24].rstrip("_")}
    # a node refuses to start when etcd does not answer from its host (preflight): make sure it does, from
    # a and b, with a deadline, so that etcd unreachable after the previous test's faults fails here, named
    etcd.wait_healthy(15, via=["a", "b"])
    try:
        yield ctx
    finally:
        for h in ("a", "b"):
            reset_host(rig, h)
        for n in ctx["nodes"].values():  # shown only when the test failed
            print(f"--- {n.host}\n{n.tail()}")


def start(ctx: dict[str, Any], spec: dict[str, Any], *hosts: str) -> dict[str, UpNode]:
    nodes = start_up_nodes(ctx["rig"], spec, list(hosts), ctx["work"])
    ctx["nodes"].update(nodes)
    return nodes


def cluster_of(node: UpNode) -> dict[str, Any]:
    return dict(node.status()["cluster"])


def holds_vip(node: UpNode) -> bool:
    return bool(cluster_of(node)["holds_vip"])


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def etcd_spec(ctx: dict[str, Any], web: dict[str, Any]) -> dict[str, Any]:
    return node_spec(ctx["rig"], ctx["name"], ["a", "b"], web, PORT, etcd=ctx["etcd"].endpoints, lease_ttl=f"{TTL}s")


def leader_then_follower(ctx: dict[str, Any], spec: dict[str, Any], leader: str, follower: str) -> tuple[UpNode, UpNode]:
    """Start ``leader`` alone until it holds the VIP, then ``follower``."""
    lead = start(ctx, spec, leader)[leader]
    wait_until(lambda: holds_vip(lead), 15, 0.05, what=f"{leader} holding the VIP")
    return lead, start(ctx, spec, follower)[follower]


def all_healthy(node: UpNode, n: int) -> dict[str, dict[str, Any]]:
    ts = node.targets()
    return ts if len(ts) == n and all(t["state"] == "healthy" for t in ts.values()) else {}


def test_the_new_leader_serves_at_once_with_the_targets_it_already_checked(cluster: dict[str, Any]) -> None:
    rig = cluster["rig"]
    spec = etcd_spec(cluster, {"count": 2, "placement": {"b": 2}})  # both instances on b: a's death takes none
    a, b = leader_then_follower(cluster, spec, "a", "b")
    wait_until(lambda: all_healthy(a, 2), 10, 0.05, what="the leader serving both targets")
    # before the kill, the follower already checks every target and finds them healthy
    before = wait_until(lambda: all_healthy(b, 2), 10, 0.05, what="b seeing both targets healthy")
    st = cluster_of(b)
    assert st["holder"] == "a" and not st["holds_vip"] and st["election"]["role"] == "follower"
    assert {t["node"] for t in before.values()} == {"b"} and all(t["role"] == "active" for t in before.values())
    assert [n["name"] for n in st["nodes"] if n["holds_vip"]] == ["a"]
    assert {n["name"]: n["state"] for n in st["nodes"]} == {"a": "up", "b": "up"}
    openapi_covers(b.status())
    with Load(rig, "client", VIP, PORT) as load:
        wait_until(lambda: len(load.answered()) >= 20, 10, 0.05, what="answers through the VIP")
        time.sleep(0.3)  # the kill lands anywhere in a renewal period
        killed, killed_wall = time.monotonic(), time.time()
        rig.kill("a")
        wait_until(lambda: holds_vip(b), TAKEOVER_BOUND + 2, 0.05, what="b holding the VIP")
        wait_until(lambda: len(load.answered(killed)) >= 30, 10, 0.05, what="answers after the takeover")
    gap = load.gap(killed)
    statuses = [r[1] for r in load.answered()]
    print(f"gap {gap:.3f}s after kill -9 of the leader; answers {len(statuses)}, "
          f"errors {[r[1] for r in load.results if not isinstance(r[1], int)][:5]}")
    assert set(statuses) == {200}, "no 503 (nor any other error answer) before, during or after the takeover"
    assert gap <= TAKEOVER_BOUND + 0.5
    after = b.targets()
    # not re-checked from scratch: the same healthy state since before the kill
    assert all(t["state"] == "healthy" and epoch(t["since"]) < killed_wall for t in after.values()), after
    st = cluster_of(b)
    assert st["holder"] == "b" and st["holds_vip"] and st["fencing_revision"] > 0 and st["lease"]
    assert epoch(st["holder_since"]) >= killed_wall - 0.1
    wait_until(lambda: {n["name"]: n["state"] for n in cluster_of(b)["nodes"]} == {"a": "lost", "b": "up"}, 5, 0.05,
               what="a shown lost")
    dashboard_shows_the_cluster(rig, b)


NODE_ROWS = """JSON.stringify([[...document.querySelectorAll('#nodes tr[data-node]')].map(r => [
  r.dataset.node, r.dataset.state, r.dataset.vip]), [...document.querySelectorAll('tr[data-target]')].map(r => [
  r.dataset.target, r.dataset.node, r.dataset.state]), document.getElementById('cluster-summary').textContent])"""


def dashboard_shows_the_cluster(rig: Rig, b: UpNode) -> None:
    """b's dashboard in a real Chromium (through a port into b's namespace): every node, the VIP at b,
    every target with its node."""
    chromium = require_binary("chromium")
    with Forward(rig, "b", "127.0.0.1", int(b.admin().rsplit(":", 1)[1])) as fwd:
        browser = Chromium(chromium, f"{fwd.url}/")
        try:
            nodes, targets, summary = wait_until(
                lambda: (x := json.loads(browser.evaluate(NODE_ROWS))) and len(x[0]) == 2 and x, 15, 0.1,
                what="the cluster on the dashboard")
        finally:
            browser.close()
    assert nodes == [["a", "lost", ""], ["b", "up", "1"]]
    assert targets == [["web-1", "b", "healthy"], ["web-2", "b", "healthy"]]
    assert "VIP 10.199.0.100/24 held by b since" in summary and "fencing revision" in summary


def openapi_covers(status: dict[str, Any]) -> None:
    """Every field of the cluster section (and a target's node) is described in openapi.yaml."""
    doc = yaml.safe_load((Path(__file__).parents[2] / "src/fivenines/admin/openapi.yaml").read_text())
    schemas = doc["components"]["schemas"]
    assert "cluster" in schemas["Status"]["properties"]
    assert set(status["cluster"]) <= set(schemas["Cluster"]["properties"])
    assert set(status["cluster"]["nodes"][0]) <= set(schemas["ClusterNode"]["properties"])
    assert "node" in schemas["Target"]["properties"]


def test_a_lost_node_s_instances_are_replaced_by_standbys_on_the_other(cluster: dict[str, Any]) -> None:
    rig = cluster["rig"]
    spec = etcd_spec(cluster, {"count": 1, "standby": 1})  # web-1 (active) on a, web-2 (standby) on b
    b, _ = leader_then_follower(cluster, spec, "b", "a")  # b holds the VIP throughout
    ts = wait_until(lambda: all_healthy(b, 2), 10, 0.05, what="b seeing both targets healthy")
    assert (ts["web-1"]["node"], ts["web-1"]["role"]) == ("a", "active")
    assert (ts["web-2"]["node"], ts["web-2"]["role"]) == ("b", "standby")
    assert cluster_of(b)["placement"] == {"web": {"web-1": "a", "web-2": "b"}}
    with Load(rig, "client", VIP, PORT) as load:
        wait_until(lambda: load.served_by() == {"web-1"} and len(load.answered()) >= 10, 10, 0.05,
                   what="web-1 (on a) serving")
        crashed = time.monotonic()
        rig.crash("a")  # every process of a killed, its cable pulled
        t = wait_until(lambda: (x := b.targets())["web-1"]["reason"] == "Target.NodeLost" and x, TAKEOVER_BOUND, 0.05,
                       what="web-1 lost with its node")
        lost_after = time.monotonic() - crashed
        assert t["web-1"]["state"] == "unhealthy" and "node a left the cluster" in t["web-1"]["detail"]
        assert t["web-2"]["role"] == "active" and b.status()["target_groups"]["web"]["serving"] == ["web-2"]
        promoted = time.monotonic()
        wait_until(lambda: len(load.answered(promoted)) >= 20, 10, 0.05, what="answers after the promotion")
    print(f"web-1 NodeLost {lost_after:.3f}s after the crash of a; gap {load.gap(crashed):.3f}s")
    assert load.served_by(promoted) == {"web-2"}
    assert {r[1] for r in load.answered()} == {200}
    events = b.call("GET", "/events?limit=200")[1]["events"]
    assert any(e["kind"] == "cluster" and e["new"] == "node a lost" for e in events)
    assert any(e["kind"] == "role" and e["target"] == "web-2" and e["new"] == "active" for e in events)
    # fivenines status, run on b, finds b (FIVENINES_NODE: both nodes' folders are on this one disk)
    text = rig.run("b", ["env", "FIVENINES_NODE=b", PY, "-m", "fivenines", "status", "-f",
                         str(cluster["work"] / "fivenines.yaml")], timeout=30).stdout
    print(text)
    assert f"cluster (etcd): VIP {VIP}/24 held by b since" in text and "fencing revision" in text
    cells = [[c.strip() for c in line.strip("│ ").split("│")] for line in text.splitlines() if line.startswith("│")]
    nodes = {c[0].split()[0]: c for c in cells if c[0] != "web"}
    targets = {c[1]: c for c in cells if c[0] == "web"}
    assert nodes["a"][3] == "lost" and nodes["b"][3:5] == ["up", "holds"] and nodes["b"][0] == "b (this node)"
    assert targets["web-1"][2:5:2] == ["a", "unhealthy"] and targets["web-2"][2:5:2] == ["b", "healthy"]


def test_a_drain_lives_in_etcd_and_outlives_the_leader(cluster: dict[str, Any]) -> None:
    rig, work = cluster["rig"], cluster["work"]
    spec = etcd_spec(cluster, {"count": 2, "placement": {"b": 2}})
    a, b = leader_then_follower(cluster, spec, "a", "b")
    wait_until(lambda: all_healthy(b, 2) and all_healthy(a, 2), 10, 0.05, what="both nodes seeing both healthy")
    state_a = work / ".fivenines" / cluster["name"] / "node-a"
    token = (state_a / "admin.token").read_text().strip()
    code, t = a.call("POST", "/targets/web-1/drain", token)  # given to the leader
    assert code == 200 and t["admin_state"] == "drained"
    tb = wait_until(lambda: (x := b.targets()["web-1"])["admin_state"] == "drained" and x, 5, 0.05,
                    what="the drain applied on b")
    assert tb["state"] in ("draining", "unused")
    events = b.call("GET", "/events?limit=200")[1]["events"]
    assert any(e["kind"] == "admin" and e["target"] == "web-1" and "cluster (node a:" in e["reason"] for e in events)
    rig.kill("a")
    wait_until(lambda: holds_vip(b), TAKEOVER_BOUND + 2, 0.05, what="b holding the VIP")
    assert b.targets()["web-1"]["admin_state"] == "drained"
    with Load(rig, "client", VIP, PORT) as load:
        wait_until(lambda: len(load.answered()) >= 20, 10, 0.05, what="answers from b")
    assert load.served_by() == {"web-2"} and {r[1] for r in load.answered()} == {200}
    # a node started afresh (no state file of its own) learns the drain from etcd
    import shutil

    shutil.rmtree(state_a)
    a2 = start(cluster, spec, "a")["a"]
    assert wait_until(lambda: a2.targets()["web-1"]["admin_state"], 15, 0.05, what="a's view of web-1") == "drained"
    # enabled through b, it serves again everywhere
    token_b = (work / ".fivenines" / cluster["name"] / "node-b" / "admin.token").read_text().strip()
    assert b.call("POST", "/targets/web-1/enable", token_b)[0] == 200
    wait_until(lambda: a2.targets()["web-1"]["admin_state"] is None, 5, 0.05, what="the enable applied on a")
    wait_until(lambda: b.targets()["web-1"]["state"] == "healthy", 5, 0.05, what="web-1 healthy again on b")


def test_vrrp_nodes_take_over_with_keepalived(cluster: dict[str, Any]) -> None:
    require_binary("keepalived")
    rig = cluster["rig"]
    advert = 0.1
    spec = node_spec(rig, cluster["name"], ["a", "b"], {"count": 2, "ports": "18081-18082"}, PORT,
                     coordination="vrrp", vrrp={"advert_int": "100ms", "virtual_router_id": 43})
    for h in ("a", "b"):  # as nodes killed in etcd mode leave them: a fence left closed must not silence the VIP
        leave_closed_fence(rig, h)
    nodes = start(cluster, spec, "a", "b")
    b = nodes["b"]
    # the targets' addresses come from the placement and the fixed ports (no store to publish them)
    ts = wait_until(lambda: all_healthy(b, 2), 15, 0.05, what="b seeing both targets healthy")
    assert {i: (t["node"], t["address"]) for i, t in ts.items()} == {
        "web-1": ("a", f"{rig.host('a').address}:18081"), "web-2": ("b", f"{rig.host('b').address}:18082")}
    def roles() -> dict[str, str]:
        return {h: cluster_of(n)["vrrp_state"] for h, n in nodes.items()}

    # nopreempt (the default): the first node healthy takes the VIP; the other stays BACKUP
    first = wait_until(lambda: sorted((r := roles()).values()) == ["BACKUP", "MASTER"] and r, 10, 0.05,
                       what="one MASTER, one BACKUP")
    master = next(h for h, r in first.items() if r == "MASTER")
    other = "b" if master == "a" else "a"
    st = cluster_of(nodes[other])
    assert st["holder"] == master and st["healthy"] and not st["holds_vip"]
    assert st["operator_state"].startswith("local")
    with Load(rig, "client", VIP, PORT) as load:
        wait_until(lambda: len(load.answered()) >= 20, 10, 0.05, what="answers through the VIP")
        crashed = time.monotonic()
        rig.crash(master)
        wait_until(lambda: cluster_of(nodes[other])["vrrp_state"] == "MASTER", 5, 0.02, what=f"{other} MASTER")
        wait_until(lambda: len(load.answered(crashed)) >= 20, 10, 0.05, what=f"answers from {other}")
    gap = load.gap(crashed)
    print(f"vrrp: gap {gap:.3f}s after the crash of the master")
    assert gap <= master_down_interval(advert, 100) + 1.0
    assert {r[1] for r in load.answered()} == {200}
    survivor = "web-1" if other == "a" else "web-2"
    assert {r[2] for r in load.answered(crashed)[-10:]} == {survivor}
    st = cluster_of(nodes[other])
    assert st["holds_vip"] and st["holder"] == other
