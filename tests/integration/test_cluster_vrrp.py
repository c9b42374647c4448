"""coordination: vrrp — fivenines writes keepalived's config and supervises Debian's keepalived, in the rig.

A keepalived pair takes over fast. keepalived alone cannot remove its address when it is
killed with SIGKILL, and a frozen one keeps answering ARP for it; fivenines' fence
(runtime/keepalived.py ``MasterFence``: open only while keepalived is MASTER and runs,
renewed by fivenines with a timeout shorter than the other node's master-down timer)
makes a killed or frozen master go silent on its own before the other takes over: no
moment with two nodes answering, measured by ARP from an observer host. What vrrp
cannot promise: under a partition between the two nodes both are MASTER (two holders),
shown here, as docs/cluster.md says.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fivenines.core.keepalived import fence_timeout, master_down_interval
from fivenines.rig import AddressWatch, ArpProbe, Rig
from fivenines.runtime.keepalived import config_for
from fivenines.spec import parse_spec
from tests.cluster_helpers import (
    VIP,
    ask_vip,
    cluster_spec,
    has_address,
    reset_host,
    serve_id,
    start_nodes,
)
from tests.helpers import require_binary, require_rig, wait_until

pytestmark = pytest.mark.slow

ADVERT = 0.1
BOUND = master_down_interval(ADVERT, 100) + 0.6  # + a little for a loaded machine
FENCE = fence_timeout(ADVERT, 100)  # a's fence (b has priority 100); b's is shorter (a has 150)


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    require_rig()
    require_binary("keepalived")
    with Rig(["a", "b", "client", "obs"]) as r:
        yield r
    assert r.leftovers() == []


@pytest.fixture
def pair(rig: Rig, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    work = rig.scratch / request.node.name.replace("[", "-").rstrip("]")  # keepalived exits 6 at start with a "[" in its paths
    work.mkdir(parents=True)
    vrrp = {"advert_int": f"{round(ADVERT * 1000)}ms", "virtual_router_id": 42, **getattr(request, "param", {})}
    spec = cluster_spec(rig, "vrrp", ["a", "b"], coordination="vrrp", vrrp=vrrp)
    port = {h: serve_id(rig, h, work) for h in ("a", "b")}["a"]
    watch = AddressWatch(rig, VIP, ["a", "b"]).start()
    probe = ArpProbe(rig, "obs", VIP).start()
    # a first: with nopreempt the first master-down timer to run out wins, and a's (priority 150) is
    # only 20 ms shorter than b's; two processes started together differ by more on a loaded machine
    nodes = start_nodes(rig, spec, ["a"], work)
    wait_until(lambda: nodes["a"].status().get("state"), 10, 0.01, what="a's keepalived started")
    nodes.update(start_nodes(rig, spec, ["b"], work))
    try:
        yield {"rig": rig, "nodes": nodes, "watch": watch, "probe": probe, "port": port, "work": work}
    finally:
        watch.stop()
        probe.stop()
        for h in ("a", "b"):
            reset_host(rig, h)
        for n in nodes.values():  # shown only when the test failed
            print(f"--- {n.host}\n{n.tail()}\n--- keepalived {n.host}")
            log = work / f"work-{n.host}" / "keepalived.log"
            print("\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else "")
        print(f"--- VIP timeline\n{watch.timeline()}\n--- ARP answers\n{probe.timeline()}")


def master(ctx: dict[str, Any]) -> str:
    watch: AddressWatch = ctx["watch"]
    held = wait_until(lambda: len(watch.holders) == 1 and watch.holders, 10, 0.01, what="one MASTER")
    return held[0]


def test_the_rendered_config_is_one_keepalived_accepts(tmp_path: Path) -> None:
    binary = require_binary("keepalived")
    spec = parse_spec({
        "name": "s", "listeners": [{"port": 0, "default_target_group": "web"}],
        "target_groups": {"web": {"targets": ["127.0.0.1:9"]}},
        "cluster": {"nodes": [{"name": "a", "address": "10.0.0.11"}, {"name": "b", "address": "10.0.0.12"}],
                    "vip": "10.0.0.100/24", "vrrp": {"advert_int": "250ms", "preempt": True}}})
    assert spec.cluster is not None
    conf = tmp_path / "keepalived.conf"
    text = config_for(spec.cluster, "b", tmp_path)
    conf.write_text(text)
    assert "priority 100" in text and "advert_int 0.25" in text and "nopreempt" not in text
    done = subprocess.run([binary, "--config-test", "-f", str(conf)], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr + done.stdout


@pytest.mark.parametrize("pair", [{"preempt": True}], indirect=True)
def test_the_higher_priority_node_holds_and_a_crashed_master_is_replaced(pair: dict[str, Any]) -> None:
    rig, watch, nodes = pair["rig"], pair["watch"], pair["nodes"]
    # Priority decides between nodes that start together (a's master-down timer, priority 150
    # against 100, is 20 ms shorter), but the nodes start one after the other: whichever keepalived
    # is up first may be MASTER first, and without preemption (the default) keeps the address. With
    # preempt, a holds it once both run, whatever the start order.
    wait_until(lambda: watch.holders == ("a",), 10, 0.01, what="a holding the VIP alone")
    wait_until(lambda: nodes["a"].status().get("state") == "MASTER", 5, 0.02)
    wait_until(lambda: nodes["b"].status().get("state") == "BACKUP", 5, 0.02)
    assert wait_until(lambda: ask_vip(rig, pair["port"]), 5, 0.05) == "a"
    crashed = time.monotonic()
    rig.crash("a")  # the host dies: processes killed, cable pulled
    took = wait_until(lambda: watch.first_held("b", crashed), 5, 0.005, what="b holding the VIP")
    print(f"b took over {took - crashed:.3f}s after the crash (bound {BOUND:.3f}s)")
    assert took - crashed <= BOUND
    # a's address is behind a pulled cable: nobody reaches it (a preemption at start is not the crash's)
    assert [m for m in watch.moments_of_two() if m.at >= crashed] == []
    assert wait_until(lambda: ask_vip(rig, pair["port"]) == "b", 2, 0.02)


def no_two_answering(probe: ArpProbe, since: float) -> None:
    two = probe.moments_of_two(since)
    assert two == [], f"two nodes answered ARP for the VIP: {two}\n{probe.timeline(since)}"


@pytest.mark.parametrize("fault", ["kill", "sigstop"])
def test_a_killed_or_frozen_master_goes_silent_before_the_other_takes_over(pair: dict[str, Any], fault: str) -> None:
    rig, probe = pair["rig"], pair["probe"]
    first = master(pair)
    other = "b" if first == "a" else "a"
    wait_until(lambda: probe.first_answer(first), 5, 0.01, what=f"{first} answering ARP")
    wait_until(lambda: pair["nodes"][other].status().get("state") == "BACKUP", 5, 0.02, what=f"{other} BACKUP")
    at = time.monotonic()
    if fault == "kill":
        rig.kill(first)  # fivenines and keepalived: SIGKILL, no chance to remove the address
    else:
        rig.pause(first)  # frozen: its kernel would answer ARP for as long as it is stopped
    took = wait_until(lambda: probe.first_answer(other, at), 5, 0.005, what=f"{other} answering ARP")
    wait_until(lambda: time.monotonic() > took + 0.5, 2, 0.05)
    last = probe.last_answer(first)
    assert last is not None
    print(f"{fault}: {first} silent {last - at:.3f}s after the fault (fence {FENCE:.3f}s), {other} answered "
          f"{took - at:.3f}s after it\n{probe.timeline(at)}")
    no_two_answering(probe, at)
    assert last < took and last - at <= FENCE + 0.05
    assert probe.first_answer(first, last + 0.05) is None, "the dead or frozen master stays silent"
    assert has_address(rig, first), "keepalived could not remove its address: the fence silences it"
    assert took - at <= BOUND
    if fault == "sigstop":  # it wakes up: one holder again (the higher priority may take the VIP back)
        rig.resume(first)
        wait_until(lambda: len(pair["watch"].holders) == 1, 5, 0.005, what="one holder after SIGCONT")


def test_keepalived_killed_alone_closes_the_fence_at_once(pair: dict[str, Any]) -> None:
    probe, nodes, work = pair["probe"], pair["nodes"], pair["work"]
    first = master(pair)
    other = "b" if first == "a" else "a"
    wait_until(lambda: probe.first_answer(first), 5, 0.01, what=f"{first} answering ARP")
    wait_until(lambda: nodes[other].status().get("state") == "BACKUP", 5, 0.02, what=f"{other} BACKUP")
    pid = int((work / f"work-{first}" / "vrrp.pid").read_text())  # keepalived's VRRP process
    parent = int((work / f"work-{first}" / "keepalived.pid").read_text())
    at = time.monotonic()
    for p in (parent, pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    took = wait_until(lambda: probe.first_answer(other, at), 5, 0.005, what=f"{other} answering ARP")
    last = probe.last_answer(first)
    assert last is not None
    print(f"keepalived of {first} killed: silent {last - at:.3f}s later, {other} answered {took - at:.3f}s later")
    no_two_answering(probe, at)
    assert last - at < FENCE / 2, "fivenines saw keepalived die and closed the fence without waiting for its timeout"
    # fivenines restarts keepalived; it comes back as BACKUP (nopreempt)
    wait_until(lambda: nodes[first].status().get("restarts", 0) >= 1 and nodes[first].status().get("state") == "BACKUP",
               10, 0.05, what=f"{first}'s keepalived restarted")


def test_a_partition_between_the_two_makes_two_masters_then_one_again(pair: dict[str, Any]) -> None:
    rig, watch, nodes = pair["rig"], pair["watch"], pair["nodes"]
    first = master(pair)
    other = "b" if first == "a" else "a"
    cut = time.monotonic()
    rig.partition(first, [other])  # the nodes cannot hear each other; clients reach both
    wait_until(lambda: watch.holders == ("a", "b"), 5, 0.005, what="two MASTERs")
    print(f"two holders {watch.moments_of_two()[0].at - cut:.3f}s after the partition")
    assert nodes[first].status()["state"] == "MASTER"
    wait_until(lambda: nodes[other].status().get("state") == "MASTER", 2, 0.02)
    rig.heal(first)
    wait_until(lambda: len(watch.holders) == 1, 5, 0.005, what="one MASTER again after the partition heals")


def test_an_unhealthy_node_gives_the_vip_up_through_the_track_file(pair: dict[str, Any]) -> None:
    watch, nodes, work = pair["watch"], pair["nodes"], pair["work"]
    first = master(pair)
    other = "b" if first == "a" else "a"
    marked = time.monotonic()
    (work / f"work-{first}" / "health").write_text("1\n")  # what fivenines writes when its balancer is unhealthy
    wait_until(lambda: watch.holders == (other,), 5, 0.005, what=f"{other} holding the VIP alone")
    assert watch.moments_of_two() == [] and watch.first_held(other, marked) is not None
    wait_until(lambda: nodes[first].status().get("state") == "FAULT", 2, 0.02)
