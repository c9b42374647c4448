"""Real etcd inside the rig, tuned for second-scale leases, and the JSON-gateway client (leases, txn, watch)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fivenines.rig import Rig
from fivenines.rig.etcd import EtcdInRig
from fivenines.runtime.lease import Etcd, EtcdError, b64, unb64
from tests.helpers import require_binary, require_rig

pytestmark = pytest.mark.slow


@pytest.fixture
def rig3() -> Iterator[Rig]:
    require_rig()
    require_binary("etcd")
    with Rig(["e1", "e2", "e3", "client"]) as r:
        yield r
    assert r.leftovers() == []


def in_client(rig: Rig, coro_fn: Any) -> Any:
    return rig.call_in("client", lambda: asyncio.run(coro_fn()))


def test_one_member_grants_a_one_second_lease_and_watch_sees_it_expire() -> None:
    require_rig()
    require_binary("etcd")
    with Rig(["e1", "client"]) as rig:
        etcd = EtcdInRig(rig, ["e1"], rig.scratch)
        assert etcd.min_ttl == 1

        async def scenario() -> dict[str, Any]:
            c = Etcd(etcd.endpoints, timeout=1.0)
            lease, ttl = await c.grant(1)
            assert ttl == 1  # the default election timeout (1000 ms) would have made it 2
            ok, rev, _ = await c.txn([{"target": "CREATE", "key": b64("/k"), "createRevision": "0"}],
                                     [{"requestPut": {"key": b64("/k"), "value": b64("a"), "lease": lease}}], [])
            kv, read_at = await c.read("/k")
            assert ok and kv is not None and int(kv["create_revision"]) == rev and read_at == rev
            assert await c.keepalive(lease) == 1
            events: list[tuple[float, str]] = []
            started = time.monotonic()
            async with asyncio.timeout(5):
                async for resp in c.watch("/k", rev + 1):
                    for ev in resp.get("events", []):
                        events.append((time.monotonic() - started, ev.get("type", "PUT")))
                    if events:
                        break
            assert await c.keepalive(lease) == 0  # gone
            return {"events": events, "kv": await c.get("/k")}

        out = in_client(rig, scenario)
        (after, kind), = out["events"]
        assert kind == "DELETE" and out["kv"] is None
        assert after < 1 + 0.5 + 0.3  # ttl + etcd's 500 ms expiry sweep + slack


def test_three_members_keep_serving_when_one_is_killed(rig3: Rig) -> None:
    etcd = EtcdInRig(rig3, ["e1", "e2", "e3"], rig3.scratch)

    async def write_and_read() -> tuple[str, str]:
        c = Etcd(etcd.endpoints, timeout=0.5)
        await c.call("/v3/kv/put", {"key": b64("/x"), "value": b64("1")})
        one = Etcd([etcd.endpoints[2]])
        kv = await one.get("/x")
        assert kv is not None
        return unb64(kv["value"]).decode(), c.endpoints[c._current]

    value, _ = in_client(rig3, write_and_read)
    assert value == "1"
    rig3.kill("e1")

    async def after_kill() -> int:
        c = Etcd(etcd.endpoints, timeout=0.5)  # e1 first in the list: refused, then the next one
        for _ in range(40):  # the two left elect a leader within a few election timeouts
            try:
                _, ttl = await c.grant(2)
                return int(ttl)
            except EtcdError:
                await asyncio.sleep(0.05)
        raise AssertionError("no lease from the two members left")

    assert in_client(rig3, after_kill) == 2
