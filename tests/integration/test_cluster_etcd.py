"""The floating address with coordination: etcd, in the namespace rig: a real etcd, real faults.

Each test starts two node processes (``python -m fivenines.cluster_node``, the election
runner and the VIP alone, with a 1 s lease) and a demo server on each node, and watches
who answers for the VIP two ways: every namespace's address and fence every millisecond
or two (:class:`AddressWatch`), and ARP requests from an observer host every 5 ms
(:class:`ArpProbe`: what the network sees). It asserts on who answered when.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fivenines.cluster_node import main as cluster_node_main
from fivenines.rig import AddressWatch, ArpProbe, Rig
from fivenines.rig.etcd import EtcdInRig
from tests.cluster_helpers import (
    VIP,
    Node,
    ask_vip,
    cluster_spec,
    has_address,
    reset_host,
    serve_id,
    start_nodes,
)
from tests.helpers import require_binary, require_rig, wait_until, write_spec

pytestmark = pytest.mark.slow

TTL = 1
# etcd deletes an expired lease's keys in a sweep every 500 ms; then a watch event, a grant, a txn and
# the address (milliseconds, more on a loaded machine)
TAKEOVER_BOUND = TTL + 0.5 + 0.5
# the fence closes by the deadline, sent + 0.75 x ttl of the last answered renewal (sent at most
# ttl/6 before the fault): the kernel's lateness is inside it
FENCE_BOUND = 0.75 * TTL + 0.05
# (the address watch sees a change up to its longest gap between samples late on a loaded machine;
# the ARP probe's last answer is never late: a round answered means the fence was open at its start)


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[Rig, EtcdInRig]]:
    require_rig()
    require_binary("etcd")
    with Rig(["etcd", "a", "b", "client", "obs"]) as rig:
        etcd = EtcdInRig(rig, ["etcd"], rig.scratch)
        yield rig, etcd
    assert rig.leftovers() == []


@pytest.fixture
def pair(world: tuple[Rig, EtcdInRig], request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    rig, etcd = world
    work = rig.scratch / request.node.name
    spec = cluster_spec(rig, request.node.name.replace("[", "-").replace("]", "")[:32].rstrip("-_"),
                        ["a", "b"], etcd=etcd.endpoints, lease_ttl=f"{TTL}s")
    work.mkdir(parents=True)
    ports = {h: serve_id(rig, h, work) for h in ("a", "b")}
    watch = AddressWatch(rig, VIP, ["a", "b"])
    probe = ArpProbe(rig, "obs", VIP)
    nodes = start_nodes(rig, spec, ["a", "b"], work)
    watch.start()
    probe.start()
    ctx = {"rig": rig, "nodes": nodes, "watch": watch, "probe": probe, "port": ports["a"]}
    try:
        yield ctx
    finally:
        watch.stop()
        probe.stop()
        for h in ("a", "b"):
            reset_host(rig, h)
        for n in nodes.values():  # shown only when the test failed
            print(f"--- {n.host}\n{n.tail()}")
        print(f"--- VIP timeline\n{watch.timeline()}\n--- ARP answers\n{probe.timeline()}")


def leader(ctx: dict[str, Any], timeout: float = 10.0) -> tuple[str, str]:
    watch: AddressWatch = ctx["watch"]
    held = wait_until(lambda: len(watch.holders) == 1 and watch.holders, timeout, 0.01, what="one VIP holder")
    first = held[0]
    return first, "b" if first == "a" else "a"


def single_holder_throughout(ctx: dict[str, Any], since: float) -> None:
    """Never two answering holders: not in any sample of addresses and fences, not in any ARP round."""
    watch: AddressWatch = ctx["watch"]
    probe: ArpProbe = ctx["probe"]
    assert watch.moments_of_two() == [] and watch.samples_with_two == 0
    assert probe.moments_of_two() == []
    elapsed = time.monotonic() - since
    assert len(probe.rounds_between(since)) >= elapsed / probe.interval / 4, "the ARP probe kept probing"


def handed_over_on_the_wire(ctx: dict[str, Any], old: str, new: str, since: float) -> tuple[float, float]:
    """When the old holder last answered ARP and the new one first did (after ``since``); the old first."""
    probe: ArpProbe = ctx["probe"]
    first_new = wait_until(lambda: probe.first_answer(new, since), 3, 0.01, what=f"{new} answering ARP")
    last_old = probe.last_answer(old, first_new)
    assert last_old is not None and last_old < first_new
    # silent by the deadline: the fence did it (the address, with its lifetime of whole seconds, is still there)
    assert last_old - since <= FENCE_BOUND
    return last_old, first_new


def test_leader_killed_another_takes_the_vip_within_the_ttl_and_clients_follow(pair: dict[str, Any]) -> None:
    rig, watch, nodes = pair["rig"], pair["watch"], pair["nodes"]
    old, new = leader(pair)
    assert wait_until(lambda: ask_vip(rig, pair["port"]), 5, 0.05, what="the VIP answering") == old
    st = wait_until(lambda: (s := nodes[old].status()).get("holds_vip") and s, 2, 0.02)
    assert st["role"] == "leader" and st["holder"] == old and st["fencing_revision"] > 0 and st["holds_vip"]
    wait_until(lambda: nodes[new].status().get("holder") == old, 5, 0.02, what="the other node seeing the holder")
    time.sleep(0.5)  # let a renewal or two pass (the kill lands anywhere in a renewal period)
    killed = time.monotonic()
    rig.kill(old)  # kill -9 of every process of the node; its kernel keeps the address until its lifetime ends
    took = wait_until(lambda: watch.first_held(new, killed), TAKEOVER_BOUND + 2, 0.01, what=f"{new} holding the VIP")
    last_old, first_new = handed_over_on_the_wire(pair, old, new, killed)
    print(f"takeover {took - killed:.3f}s after kill -9 (ARP: {old} last {last_old - killed:.3f}s, {new} first "
          f"{first_new - killed:.3f}s)\n{watch.timeline(killed)}")
    assert took - killed <= TAKEOVER_BOUND
    dropped = watch.dropped_at(old)
    assert dropped is not None and dropped < took, "the killed node's fence must silence the VIP before the other adds it"
    assert dropped - killed <= FENCE_BOUND + watch.longest_gap
    single_holder_throughout(pair, killed)
    # the new holder announced itself: the client reaches it without waiting for its ARP cache to go stale
    answered = wait_until(lambda: ask_vip(rig, pair["port"]) == new, 2, 0.02, what="the client reaching the new holder")
    assert answered
    st = wait_until(lambda: (s := nodes[new].status()).get("holds_vip") and s, 2, 0.02)
    assert st["role"] == "leader" and st["fencing_revision"] > 0


def test_leader_cut_from_etcd_drops_the_vip_before_anyone_else_adds_it(pair: dict[str, Any]) -> None:
    rig, watch, nodes = pair["rig"], pair["watch"], pair["nodes"]
    old, new = leader(pair)
    rev_old = wait_until(lambda: nodes[old].status().get("fencing_revision"), 5, 0.02)
    time.sleep(0.5)
    cut = time.monotonic()
    rig.partition(old, ["etcd"])  # clients and the other node still reach it: only etcd does not
    took = wait_until(lambda: watch.first_held(new, cut), TAKEOVER_BOUND + 2, 0.01, what=f"{new} holding the VIP")
    dropped = watch.dropped_at(old)
    print(f"{old} dropped {dropped and round(dropped - cut, 3)}s, {new} took {took - cut:.3f}s after the cut\n"
          f"{watch.timeline(cut)}")
    assert dropped is not None and dropped < took
    assert dropped - cut <= FENCE_BOUND + watch.longest_gap, "the old leader gives the VIP up by its own deadline, before the lease can expire"
    handed_over_on_the_wire(pair, old, new, cut)
    single_holder_throughout(pair, cut)
    assert not has_address(rig, old), "alive, the old leader removed the address itself (not only fenced it)"
    assert nodes[old].proc.poll() is None and nodes[old].status()["role"] != "leader"
    st_new = wait_until(lambda: (s := nodes[new].status()).get("holds_vip") and s, 2, 0.02)
    assert st_new["fencing_revision"] > rev_old
    # healed, the old leader follows: it does not take the VIP back
    rig.heal(old)
    wait_until(lambda: nodes[old].status().get("holder") == new, 5, 0.02, what="the old leader following")
    assert watch.holders == (new,)


def test_a_frozen_leader_is_silenced_by_its_fence_and_steps_down_on_resume(pair: dict[str, Any]) -> None:
    rig, watch, nodes = pair["rig"], pair["watch"], pair["nodes"]
    old, new = leader(pair)
    time.sleep(0.5)
    frozen = time.monotonic()
    rig.pause(old)  # SIGSTOP: the process cannot drop anything; only its kernel acts (the fence's timeout)
    try:
        took = wait_until(lambda: watch.first_held(new, frozen), TAKEOVER_BOUND + 2, 0.01, what=f"{new} holding the VIP")
        dropped = watch.dropped_at(old)
        last_old, first_new = handed_over_on_the_wire(pair, old, new, frozen)
        print(f"{old} silenced {dropped and round(dropped - frozen, 3)}s (ARP {last_old - frozen:.3f}s), {new} took it "
              f"{took - frozen:.3f}s (ARP {first_new - frozen:.3f}s) after SIGSTOP")
        assert dropped is not None and dropped < took and dropped - frozen <= FENCE_BOUND + watch.longest_gap
        assert took - frozen <= TAKEOVER_BOUND
        # the address's kernel lifetime (whole seconds, the backstop) removes it from the frozen node too
        wait_until(lambda: not has_address(rig, old), 2.5, 0.02, what=f"the address gone from frozen {old}")
    finally:
        rig.resume(old)
    wait_until(lambda: nodes[old].status().get("holder") == new, 5, 0.02, what="the resumed node following")
    time.sleep(0.3)
    assert watch.holders == (new,)
    single_holder_throughout(pair, frozen)


def test_a_leader_that_stops_hands_over_at_once(pair: dict[str, Any]) -> None:
    watch, nodes = pair["watch"], pair["nodes"]
    old, new = leader(pair)
    stopped = time.monotonic()
    nodes[old].proc.send_signal(signal.SIGTERM)  # resigns: drops the VIP, then revokes its lease
    assert nodes[old].proc.wait(5) == 0
    took = wait_until(lambda: watch.first_held(new, stopped), 3, 0.01, what=f"{new} holding the VIP")
    assert took - stopped < 0.75, "a revoked lease is free at once, not after its ttl"
    single_holder_throughout(pair, stopped)


def test_a_bad_node_name_or_spec_exits_2_and_starts_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = {"name": "s", "listeners": [{"port": 0, "default_target_group": "web"}],
            "target_groups": {"web": {"targets": ["127.0.0.1:9"]}},
            "cluster": {"nodes": [{"name": "a", "address": "10.0.0.11"}], "vip": "10.0.0.100/24",
                        "etcd": ["http://10.0.0.2:2379"]}}
    path = write_spec(tmp_path / "f.yaml", spec)
    assert cluster_node_main([str(path), "--node", "x"]) == 2
    assert "--node x: no such node; nodes: a" in capsys.readouterr().err
    spec["cluster"]["vip"] = "10.0.1.100/24"
    write_spec(path, spec)
    assert cluster_node_main([str(path), "--node", "a"]) == 2
    assert "cluster.vip: 10.0.1.100/24 is not in the subnet of node 'a'" in capsys.readouterr().err


def test_node_status_shape(pair: dict[str, Any]) -> None:
    old, new = leader(pair)
    nodes: dict[str, Node] = pair["nodes"]
    st = wait_until(lambda: (s := nodes[new].status()).get("holder") == old and s, 5, 0.02)
    assert set(st) >= {"node", "role", "holder", "holder_since", "lease", "fencing_revision", "ttl_s",
                       "may_hold_vip", "valid_for_s", "holds_vip", "vip_since", "last_error", "decisions"}
    assert st["role"] == "follower" and st["lease"] == "-" and not st["holds_vip"]
    lead = wait_until(lambda: (s := nodes[old].status()).get("holds_vip") and s, 2, 0.02)
    assert lead["lease"] != "-" and lead["valid_for_s"] > 0 and lead["decisions"][-1].startswith(f"{old} took the VIP")
