"""``workers: N``: N data-plane processes on one port (SO_REUSEPORT) following one health view."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from tests.helpers import demo_spec, http_get, pid_alive, wait_until

pytestmark = pytest.mark.slow


def test_workers_share_the_port_and_follow_the_health_view(run_fivenines: Any) -> None:
    spec = demo_spec(count=2, standby=0)
    spec["workers"] = 2
    f = run_fivenines(spec)
    f.wait_healthy()
    wait_until(lambda: f.status()["workers_synced"], 5, what="workers synced")
    st = f.status()
    assert [w["ready"] for w in st["workers"]] == [True, True]
    pids = [w["pid"] for w in st["workers"]]
    assert len(set(pids)) == 2 and st["pid"] not in pids

    for _ in range(40):  # a new connection each: the kernel spreads them over both workers
        assert f.get("/")[0] == 200
    wait_until(lambda: f.status()["listeners"][0]["requests"] == 40, 5, what="counters from workers")
    assert all(w["connections"] > 0 for w in f.status()["workers"])

    # web-1 fails its checks: once every worker applied the new serving set, no new request reaches it
    web1 = f.target("web-1")
    host, port = web1["address"].rsplit(":", 1)
    http_get(host, int(port), "/_fail")
    wait_until(lambda: f.status()["target_groups"]["web"]["serving"] == ["web-2"], 10, what="web-1 out")
    wait_until(lambda: f.status()["workers_synced"], 5, what="workers synced")
    before = f.target("web-1")["requests"]
    for _ in range(30):
        status, body = f.get("/")
        assert status == 200 and body.split()[1] == b"web-2"
    wait_until(lambda: f.status()["listeners"][0]["requests"] == 70, 5, what="counters")
    assert f.target("web-1")["requests"] == before


def test_a_dead_worker_is_replaced(run_fivenines: Any) -> None:
    spec = demo_spec(count=1, standby=0)
    spec["workers"] = 2
    f = run_fivenines(spec)
    f.wait_healthy()
    victim = f.status()["workers"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not pid_alive(victim), 5, what="worker dead")
    wait_until(lambda: f.status()["workers"][0]["restarts"] == 1 and f.status()["workers"][0]["ready"], 10,
               what="worker replaced")
    assert f.status()["workers"][0]["pid"] != victim
    for _ in range(10):
        assert f.get("/")[0] == 200
    pids = [w["pid"] for w in f.status()["workers"]]
    assert f.stop() == 0
    for pid in pids:
        wait_until(lambda pid=pid: not pid_alive(pid), 5, what="workers gone with fivenines")
