"""Parking a Redis replica (``RedisStore.park``), what a ``sync`` failover does to every replica
before it compares their positions: real redis-server processes, a primary a client still
writes to directly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fivenines.core.replication import Durability, StoreRole
from fivenines.runtime.redis import RedisStore
from fivenines.runtime.store import StoreTarget
from tests.helpers import wait_until
from tests.redis_helpers import RedisServer, redis

pytestmark = pytest.mark.slow


def target(name: str, server: RedisServer) -> StoreTarget:
    return StoreTarget(name, "127.0.0.1", server.port)


def test_a_parked_replica_keeps_its_data_acknowledges_nothing_more_and_follows_with_a_partial_resync(
        tmp_path: Path) -> None:
    a, b, c = RedisServer(tmp_path), RedisServer(tmp_path), RedisServer(tmp_path)
    store = RedisStore(Durability.SYNC, 1)
    try:
        for r in (b, c):
            with redis(r.address) as x:
                x.cmd("REPLICAOF", "127.0.0.1", a.port)
        with redis(a.address) as primary:
            for i in range(100):
                primary.cmd("SET", f"k{i}", i)
            assert primary.cmd("WAIT", 2, 5000) == 2  # both replicas have the 100 keys
            before = int(primary.info()["master_repl_offset"])

            async def failover() -> list[int]:
                """Park both (as the election's Collect does), then the old primary takes a write; then
                promote b and re-point c. (Blocking calls to the old primary inside: a test.)"""
                positions = []
                for t in (target("b", b), target("c", c)):
                    await store.park(t, 2.0)
                    obs = await store.observe(t, 2.0)
                    assert (obs.role, obs.following, obs.link_up) == (StoreRole.REPLICA, "127.0.0.1:0", False)
                    positions.append(obs.position)
                # the old primary, still reached by a client, takes a write no replica acknowledges
                assert primary.cmd("SET", "late", "x") == "OK"
                assert primary.cmd("WAIT", 1, 300) == 0
                assert (await store.observe(target("b", b), 2.0)).position == before  # parked: it stayed put
                await store.promote(target("b", b), 2.0)
                await store.follow(target("c", c), target("b", b), 2.0)
                await store.close()
                return positions

            assert asyncio.run(failover()) == [before, before]
        with redis(c.address) as x:
            wait_until(lambda: x.info()["master_link_status"] == "up", 10, what="c linked to b")
        with redis(b.address) as new:
            stats = new.info("stats")
            assert (stats["sync_full"], stats["sync_partial_ok"]) == ("0", "1")  # from the offset c had
            assert new.cmd("SET", "after", "y") == "OK"
            assert new.cmd("WAIT", 1, 5000) == 1
        with redis(c.address) as x:
            assert x.cmd("DBSIZE") == 101 and x.cmd("EXISTS", "late") == 0 and x.cmd("GET", "k99") == b"99"
    finally:
        for r in (a, b, c):
            r.close()
