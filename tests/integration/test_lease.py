"""The etcd lease with a fencing token, against a real etcd; and two real fivenines nodes sharing it."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fivenines.runtime.lease import Etcd, LeaderLease, LeaseLost, PrimaryRecord
from tests.helpers import Fivenines, get_json, wait_until
from tests.redis_helpers import EtcdServer, RedisServer, redis, role_of

pytestmark = pytest.mark.slow


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    e = EtcdServer(tmp_path)
    yield e
    e.close()


class Recorder:
    def __init__(self, name: str, loop: asyncio.AbstractEventLoop) -> None:
        self.name, self.loop = name, loop
        self.acquired: list[tuple[float, PrimaryRecord | None]] = []
        self.renewed: list[float] = []
        self.lost: list[tuple[float, str]] = []

    def lease(self, etcd: EtcdServer, ttl: float = 2.0) -> LeaderLease:
        return LeaderLease(Etcd([etcd.url]), "/t/svc/cache", ttl, self.name, self.loop.time,
                           on_acquired=lambda until, rec: self.acquired.append((self.loop.time(), rec)),
                           on_renewed=self.renewed.append,
                           on_lost=lambda why: self.lost.append((self.loop.time(), why)))


async def _until(pred: Any, timeout: float) -> None:
    """Poll ``pred`` on the loop until it holds (the lease's callbacks run there)."""
    async with asyncio.timeout(timeout):
        while not pred():  # noqa: ASYNC110 - polling with a deadline, as tests.helpers.wait_until
            await asyncio.sleep(0.02)


def test_one_holder_renewal_and_a_fenced_record_after_takeover(etcd: EtcdServer) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        ra, rb = Recorder("a", loop), Recorder("b", loop)
        a, b = ra.lease(etcd), rb.lease(etcd)
        a.start()
        await _until(lambda: a.leader, 5)
        b.start()
        await _until(lambda: b.holder == "a", 5)
        assert not b.leader and rb.acquired == []
        await a.record_primary("cache-2", 7)
        # a keeps the lease alive well past its ttl
        await asyncio.sleep(2.5)
        assert a.leader and len(ra.renewed) >= 3 and not b.leader
        token_a, deadline_a = a.token, a.valid_until
        # a stops renewing (as if hung): b takes over only after a's own deadline has passed
        assert a._task is not None
        a._task.cancel()
        await _until(lambda: b.leader, 10)
        took_over_at, record = rb.acquired[0]
        assert took_over_at > deadline_a, "b acquired before a's deadline: both could act"
        assert record == PrimaryRecord("cache-2", 7, token_a or 0, "a")
        assert b.token is not None and token_a is not None and b.token > token_a
        # a, unaware, tries to record a promotion with its stale token: etcd refuses it
        a.valid_until = loop.time() + 10  # even if a believed it still held the lease
        with pytest.raises(LeaseLost, match="stale"):
            await a.record_primary("cache-3", 8)
        assert (await b.read_record()) == record
        await b.stop()
        a.lease_id = None
        await a.stop()

    asyncio.run(scenario())


def test_revoking_hands_over_at_once(etcd: EtcdServer) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        ra, rb = Recorder("a", loop), Recorder("b", loop)
        a, b = ra.lease(etcd, ttl=10), rb.lease(etcd, ttl=10)
        a.start()
        await _until(lambda: a.leader, 5)
        b.start()
        await _until(lambda: b.holder == "a", 5)
        started = loop.time()
        await a.stop()
        await _until(lambda: b.leader, 5)
        assert loop.time() - started < 3  # not the 10 s ttl
        await b.stop()

    asyncio.run(scenario())


# --------------------------------------------------------------------------- two fivenines nodes


def node_spec(etcd: EtcdServer, servers: list[RedisServer], tmp: Path) -> dict[str, Any]:
    return {
        "name": "shared",
        "admin": {"listen": "127.0.0.1:0"},
        "state_dir": str(tmp / "state"),
        "listeners": [{"port": 0, "protocol": "tcp", "default_target_group": "cache"}],
        "target_groups": {
            "cache": {
                "targets": [s.address for s in servers],
                "health_check": {"interval": "200ms", "timeout": "150ms", "healthy_threshold": 2,
                                 "unhealthy_threshold": 2},
                "replicated": {"kind": "redis", "durability": "sync",
                               "lease": {"etcd": [etcd.url], "ttl": "2s", "prefix": "/fivenines-test"}},
            }
        },
    }


class Watch:
    """Samples, every 20 ms, which node publishes which primary and what each Redis says it is."""

    def __init__(self, nodes: list[Fivenines], servers: list[RedisServer]) -> None:
        self.nodes, self.servers = nodes, servers
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _publishing(self, f: Fivenines) -> str | None:
        if f.proc.poll() is not None:
            return None  # a dead node routes nothing
        try:
            g = get_json(f"{f.admin}/status", 1.0)["target_groups"]["cache"]
        except OSError:
            return None
        return g["serving"][0] if g["serving"] else None

    def _run(self) -> None:
        while not self._stop.is_set():
            pubs = [self._publishing(f) for f in self.nodes]
            roles = [role_of(s.address) for s in self.servers]
            self.samples.append({"t": time.monotonic(), "publishing": pubs, "roles": roles})
            self._stop.wait(0.02)

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._t.join(5)
        return self.samples


def test_two_nodes_never_produce_two_primaries_when_the_lease_holder_is_killed(
        etcd: EtcdServer, tmp_path: Path) -> None:
    servers = [RedisServer(tmp_path) for _ in range(3)]
    nodes: list[Fivenines] = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            nodes.append(Fivenines(tmp_path / name, node_spec(etcd, servers, tmp_path / name)))

        def leader() -> tuple[Fivenines, Fivenines, str] | None:
            for f, other in ((nodes[0], nodes[1]), (nodes[1], nodes[0])):
                g = f.status()["target_groups"]["cache"]
                if g["serving"] and g["replication"]["lease"]["leader"]:
                    return f, other, g["serving"][0]
            return None

        holder, standby, primary_id = wait_until(leader, 20, 0.05, what="a leader publishing a primary")
        # the leader discovered three fresh servers, chose one and made the others its replicas
        primary = servers[int(primary_id.rsplit("-", 1)[1]) - 1]
        wait_until(lambda: [role_of(s.address) for s in servers].count("slave") == 2, 10, 0.05,
                   what="two replicas")
        with redis(primary.address) as r:
            keys = [f"k{i}" for i in range(200)]
            for k in keys:
                r.cmd("SET", k, k)
            assert r.cmd("WAIT", 1, 2000) >= 1
        sf = standby.status()["target_groups"]["cache"]
        assert sf["serving"] == [] and sf["replication"]["phase"] == "follower"

        watch = Watch(nodes, servers)
        time.sleep(0.3)
        # kill the node holding the lease, and the primary with it: the other node must take over and fail over
        holder.proc.send_signal(signal.SIGKILL)
        primary.stop()
        killed_at = time.monotonic()

        def taken_over() -> str | None:
            g = standby.status()["target_groups"]["cache"]
            return g["serving"][0] if g["serving"] and g["serving"][0] != primary_id else None

        new_id = wait_until(taken_over, 15, 0.05, what="the other node publishing a new primary")
        took = time.monotonic() - killed_at
        time.sleep(0.5)
        samples = watch.stop()
        assert len(samples) > 20
        for s in samples:
            pubs = [p for p in s["publishing"] if p is not None]
            assert len(pubs) <= 1, f"two nodes routing writes at once: {s}"
            assert s["roles"].count("master") <= 1, f"two Redis primaries at once: {s}"
        # ttl 2s + detection; the lease cannot be taken before it expires in etcd
        assert took < 2.0 + 0.2 * 2 + 0.15 + 1.0 + 1.0, took
        new = servers[int(new_id.rsplit("-", 1)[1]) - 1]
        with redis(new.address) as r:
            assert r.cmd("MGET", *keys) == [k.encode() for k in keys]
        st = standby.status()["target_groups"]["cache"]["replication"]
        assert st["lease"]["leader"] and st["epoch"] == 2
    finally:
        for f in nodes:
            f.stop()
        for s in servers:
            s.close()
    assert os.path.exists(tmp_path / "etcd.log")


def test_a_stopped_leader_steps_down_on_resume_before_routing_again(etcd: EtcdServer, tmp_path: Path) -> None:
    servers = [RedisServer(tmp_path) for _ in range(2)]
    nodes: list[Fivenines] = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            nodes.append(Fivenines(tmp_path / name, node_spec(etcd, servers, tmp_path / name)))

        def leader() -> tuple[Fivenines, Fivenines] | None:
            for f, other in ((nodes[0], nodes[1]), (nodes[1], nodes[0])):
                g = f.status()["target_groups"]["cache"]
                if g["serving"] and g["replication"]["lease"]["leader"]:
                    return f, other
            return None

        holder, standby = wait_until(leader, 20, 0.05, what="a leader publishing a primary")
        watch = Watch(nodes, servers)
        holder.proc.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: standby.status()["target_groups"]["cache"]["serving"], 10, 0.05,
                       what="the other node routing writes")
            # a client of the resumed node must not be routed before it notices it lost the lease
            time.sleep(0.5)
        finally:
            holder.proc.send_signal(signal.SIGCONT)
        rep = wait_until(lambda: (g := holder.status()["target_groups"]["cache"])["serving"] == [] and
                         g["replication"], 5, 0.02, what="the resumed node stepped down")
        assert rep["phase"] == "follower" and not rep["lease"]["leader"]
        time.sleep(0.3)
        samples = watch.stop()
        for s in samples:
            assert len([p for p in s["publishing"] if p is not None]) <= 1, f"two nodes routing writes: {s}"
        assert any(e["kind"] == "lease" and e["new"] == "follower" for e in
                   get_json(f"{holder.admin}/events?limit=1000")["events"])
    finally:
        for f in nodes:
            f.stop()
        for srv in servers:
            srv.close()
