"""Draining (deregistration delay) through the controller, and slow start through the proxy."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Demo, InProcess, http_get, wait_until
from tests.integration.servers import DataPlane, RawServer


@pytest.fixture
def ctl(tmp_path: Path, demos: list[Demo]) -> Iterator[InProcess]:
    c = InProcess(tmp_path, {
        "name": "drain",
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": [{"port": 0, "default_target_group": "web"}],
        "target_groups": {"web": {
            "targets": [demos[0].address, demos[1].address],
            "deregistration_delay": "1500ms",
            "health_check": {"interval": "200ms", "timeout": "150ms", "healthy_threshold": 2},
        }},
    })
    wait_until(lambda: c.status()["target_groups"]["web"]["serving"] == ["web-1", "web-2"], 10, what="serving")
    yield c
    c.close()


def test_draining_target_finishes_in_flight_and_gets_nothing_new(ctl: InProcess, demos: list[Demo]) -> None:
    demos[0].get("/_slow?ms=700")  # web-1 answers slowly from now on
    results: list[tuple[int, bytes]] = []
    slow = threading.Thread(target=lambda: results.append(http_get(ctl.host, ctl.port, "/in-flight")))
    slow.start()  # round robin: the first request goes to web-1
    wait_until(lambda: ctl.target("web-1")["in_flight"] == 1, 5, what="request in flight on web-1")
    assert ctl.call(ctl.ctl.deregister, "web-1") == "draining web-1: deregistration delay 1.5s"
    assert ctl.target("web-1")["state"] == "draining"
    assert ctl.status()["target_groups"]["web"]["serving"] == ["web-2"]
    assert {http_get(ctl.host, ctl.port, "/")[1].split()[1] for _ in range(4)} == {b"demo-b"}
    slow.join(5)
    assert results[0][0] == 200 and b"demo-a" in results[0][1]  # the in-flight request finished
    wait_until(lambda: ctl.target("web-1")["state"] == "unused", 3, what="drained")
    events = ctl.call(lambda: [e.to_json() for e in ctl.ctl.events.recent(50, 0)])
    assert any(e["kind"] == "drain" and "drained in" in e["reason"] for e in events)
    # registered again, it serves after passing its checks
    demos[0].get("/_recover")
    ctl.call(ctl.ctl.register, "web-1")
    wait_until(lambda: "web-1" in ctl.status()["target_groups"]["web"]["serving"], 5, what="back")


def test_in_flight_past_the_deregistration_delay_is_cut(ctl: InProcess, demos: list[Demo]) -> None:
    demos[0].get("/_hang?s=5")
    results: list[tuple[int, bytes]] = []
    t = threading.Thread(target=lambda: results.append(http_get(ctl.host, ctl.port, "/stuck", timeout=10)))
    t.start()
    wait_until(lambda: ctl.target("web-1")["in_flight"] == 1, 5, what="request in flight on web-1")
    ctl.call(ctl.ctl.deregister, "web-1")
    t.join(6)
    assert results and results[0][0] == 502  # cut at the deadline (1.5 s), before the 5 s hang ended
    wait_until(lambda: ctl.target("web-1")["state"] == "unused", 3, what="unused")
    events = ctl.call(lambda: [e.to_json() for e in ctl.ctl.events.recent(50, 0)])
    assert any("1 in flight cut after the 1.5s deregistration delay" in e["reason"] for e in events)


def test_slow_start_ramps_a_joining_target_through_the_proxy() -> None:
    a, b = RawServer(name="a"), RawServer(name="b")
    dp = DataPlane({"listeners": [{"port": 0, "default_target_group": "web"}],
                    "target_groups": {"web": {"targets": [a.address, b.address], "slow_start": "1s"}}})
    try:

        def served(n: int) -> Counter[str]:
            c = dp.conn()
            got: Counter[str] = Counter()
            for _ in range(n):
                c.request("GET", "/")
                got[json.loads(c.getresponse().read())["name"]] += 1
            c.close()
            return got

        dp.serve("web", ["web-1"])
        dp.serve("web", ["web-1", "web-2"])  # web-2 joins (a new or recovered target)
        early = served(20)
        assert early["b"] <= 3, early  # its share starts near 0...
        g = dp.groups["web"]
        wait_until(lambda: dp.do(lambda: g.balancer.ramp_of(g.backends["web-2"], g.clock()) >= 1.0), 3,
                   what="ramp over")
        late = served(20)
        assert late == {"a": 10, "b": 10}  # ...and is full after slow_start
    finally:
        dp.close()
        a.close()
        b.close()
