"""Replicated Redis under `fivenines up`: real redis-server processes, real kills, stops and cut-offs."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_until
from tests.redis_helpers import (
    admin_post,
    events,
    group,
    published,
    redis,
    redis_spec,
    role_of,
    wait_settled,
)

pytestmark = pytest.mark.slow

# interval 200ms x unhealthy_threshold 2 + timeout 150ms + 3s: generous, for a loaded machine;
# bench/jepsen_redis.py holds every failover to + 1s
BOUND = 0.2 * 2 + 0.15 + 3.0


def write_acked(address: str, keys: list[str]) -> list[str]:
    """SET each key, then WAIT 1: the keys a replica confirmed (sync acknowledgement)."""
    with redis(address) as r:
        for k in keys:
            assert r.cmd("SET", k, k) == "OK"
        assert r.cmd("WAIT", 1, 1000) >= 1
    return keys


class Sampler:
    """Polls status every 20 ms: which target was published as the write primary, and when."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.seen: list[tuple[float, str | None]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                p = published(self.f)
                self.seen.append((time.monotonic(), p["id"] if p else None))
            except OSError:
                pass
            self._stop.wait(0.02)

    def stop(self) -> list[tuple[float, str | None]]:
        self._stop.set()
        self._t.join(5)
        return self.seen


def test_primary_and_replicas_start_and_replicate(run_fivenines: Any) -> None:
    f = run_fivenines(redis_spec(standby=2))
    p = wait_settled(f)
    assert p["id"] == "cache-1" and p["role"] == "active"
    g = group(f)
    rep = g["replication"]
    assert (rep["kind"], rep["durability"], rep["phase"], rep["epoch"]) == ("redis", "sync", "serving", 1)
    with redis(p["address"]) as r:
        assert r.cmd("SET", "a", "1") == "OK"
        assert r.cmd("WAIT", 2, 1000) == 2
        # sync durability is configured on the primary
        assert r.cmd("CONFIG", "GET", "min-replicas-to-write")[1] == b"1"
    for t in g["targets"][1:]:
        assert t["replication"]["following"] == p["address"]
        with redis(t["address"]) as r:
            assert r.cmd("GET", "a") == b"1"
            with pytest.raises(RuntimeError, match="READONLY"):
                r.cmd("SET", "b", "2")


def test_kill_9_of_the_primary_promotes_the_most_advanced_replica_and_loses_no_acknowledged_write(
        run_fivenines: Any) -> None:
    f = run_fivenines(redis_spec(standby=2))
    old = wait_settled(f)
    acked = write_acked(old["address"], [f"k{i}" for i in range(300)])
    sampler = Sampler(f)
    killed_at = time.monotonic()
    os.kill(old["pid"], signal.SIGKILL)
    new = wait_until(lambda: (p := published(f)) and p["id"] != old["id"] and p, BOUND + 2, 0.01,
                     what="a new primary")
    assert time.monotonic() - killed_at < BOUND
    seen = sampler.stop()
    assert all(tid in (old["id"], None, new["id"]) for _, tid in seen)
    with redis(new["address"]) as r:
        assert r.cmd("MGET", *acked) == [k.encode() for k in acked]
    [ev] = [e for e in events(f, "failover") if e["new"] == new["id"]]
    assert "compared" in ev["reason"] and "chosen" in ev["reason"] and "@" in ev["reason"]
    # the killed primary is restarted as a replica of the new one: it never comes back as a primary
    settled = wait_settled(f)
    assert settled["id"] == new["id"]
    restarted = next(t for t in group(f)["targets"] if t["id"] == old["id"])
    assert restarted["pid"] != old["pid"] and role_of(restarted["address"]) == "slave"
    with redis(restarted["address"]) as r:
        assert r.cmd("GET", "k299") == b"k299"


def test_a_hung_primary_is_replaced_within_the_bound_and_fenced_when_it_returns(run_fivenines: Any) -> None:
    f = run_fivenines(redis_spec(standby=2))
    old = wait_settled(f)
    acked = write_acked(old["address"], [f"h{i}" for i in range(100)])
    sampler = Sampler(f)
    os.kill(old["pid"], signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        new = wait_until(lambda: (p := published(f)) and p["id"] != old["id"] and p, BOUND + 3, 0.01,
                         what="a new primary")
        took = time.monotonic() - stopped_at
        assert took < BOUND, f"failover took {took:.2f}s, bound {BOUND}s"
    finally:
        os.kill(old["pid"], signal.SIGCONT)
    # back, still believing it is the primary: fenced (made a replica of the new primary), never published
    wait_until(lambda: role_of(old["address"]) == "slave", 10, 0.02, what="old primary demoted")
    wait_settled(f)
    seen = sampler.stop()
    after = [tid for t, tid in seen if t > stopped_at + took + 0.05]
    assert old["id"] not in after
    assert any(e["target"] == old["id"] for e in events(f, "fence"))
    with redis(new["address"]) as r:
        assert r.cmd("MGET", *acked) == [k.encode() for k in acked]
    with redis(old["address"]) as r:
        assert r.info()["master_port"] == new["address"].rsplit(":", 1)[1]


def test_sync_mode_refuses_writes_when_no_replica_is_attached(run_fivenines: Any) -> None:
    f = run_fivenines(redis_spec(standby=1))
    p = wait_settled(f)
    replica = next(t for t in group(f)["targets"] if t["id"] != p["id"])
    os.kill(replica["pid"], signal.SIGSTOP)
    try:
        def refused() -> bool:
            with redis(p["address"]) as r:
                try:
                    r.cmd("SET", "x", "1")
                except RuntimeError as exc:
                    return "NOREPLICAS" in str(exc)
            return False

        wait_until(refused, 5, 0.1, what="writes refused without a replica")
    finally:
        os.kill(replica["pid"], signal.SIGCONT)
    wait_settled(f)

    def accepted() -> bool:
        try:
            return bool(write_acked(p["address"], ["after"]))
        except RuntimeError as exc:  # Redis re-counts good replicas once a second
            assert "NOREPLICAS" in str(exc)
            return False

    wait_until(accepted, 5, 0.1, what="writes accepted again")


def test_a_pair_whose_replica_died_during_a_primary_blip_resumes_the_old_primary(run_fivenines: Any) -> None:
    # 1+1 sync: the replica hangs, the primary is cut off (the election refuses: the replica
    # may hold acknowledged writes), the replica is killed and restarted empty (it follows no
    # one: there is no primary). Once the cut ends the old primary, the same process, holds
    # every write it acknowledged and stays primary; before, the group had no primary for good.
    f = run_fivenines(redis_spec(standby=1))
    old = wait_settled(f)
    acked = write_acked(old["address"], [f"p{i}" for i in range(20)])
    replica = next(t for t in group(f)["targets"] if t["id"] != old["id"])
    os.kill(replica["pid"], signal.SIGSTOP)
    try:
        status, body = admin_post(f, f"/target_groups/cache/targets/{old['id']}/cut_off?seconds=3")
        assert status == 200, body
        wait_until(lambda: group(f)["replication"]["phase"] == "no_primary", BOUND + 3, 0.02,
                   what="the election refusing")
        os.kill(replica["pid"], signal.SIGKILL)
    finally:
        with contextlib.suppress(ProcessLookupError):  # gone already when it was killed
            os.kill(replica["pid"], signal.SIGCONT)
    wait_until(lambda: any(t["id"] == replica["id"] and t["pid"] not in (None, replica["pid"])
                           for t in group(f)["targets"]), 10, 0.05, what="the replica restarted")
    p = wait_until(lambda: published(f), 3 + BOUND + 3, 0.05, what="a primary after the cut")
    assert p["id"] == old["id"] and p["address"] == old["address"]
    assert "not restarted: holds what" in " ".join(e["reason"] for e in events(f, "failover"))
    wait_settled(f)  # the restarted replica follows it
    with redis(old["address"]) as r:
        assert r.cmd("MGET", *acked) == [k.encode() for k in acked]


def test_a_replica_parked_by_a_refused_election_says_so_then_follows_the_one_promoted(run_fivenines: Any) -> None:
    # one replica hangs, the primary is cut off: the election parks the other replica and
    # refuses (the hung one may hold acknowledged writes); status shows it parked until the
    # hung one answers, one is promoted and the parked one follows it
    f = run_fivenines(redis_spec(standby=2))
    old = wait_settled(f)
    hung, other = (t for t in group(f)["targets"] if t["id"] != old["id"])
    os.kill(hung["pid"], signal.SIGSTOP)
    try:
        status, body = admin_post(f, f"/target_groups/cache/targets/{old['id']}/cut_off?seconds=10")
        assert status == 200, body

        def parked() -> dict[str, Any] | None:
            g = group(f)
            t = next(t for t in g["targets"] if t["id"] == other["id"])
            done = g["replication"]["phase"] == "no_primary" and t["replication"]["parked"]
            return t if done and t["last_check"] and "parked" in t["last_check"]["detail"] else None

        t = wait_until(parked, BOUND + 3, 0.02, what="the other replica parked while no primary")
        assert t["replication"]["following"] == "127.0.0.1:0" and published(f) is None
    finally:
        os.kill(hung["pid"], signal.SIGCONT)
    new = wait_until(lambda: published(f), BOUND + 3, 0.02, what="a primary once the hung replica answers")
    assert new["id"] != old["id"]
    if new["id"] != other["id"]:
        def follows() -> bool:
            r = next(t for t in group(f)["targets"] if t["id"] == other["id"])["replication"]
            return not r["parked"] and r["following"] == new["address"] and bool(r["link_up"])

        wait_until(follows, 10, 0.05, what="the parked replica following the one promoted")


def test_async_mode_says_plainly_that_it_may_lose_writes(run_fivenines: Any) -> None:
    f = run_fivenines(redis_spec(standby=1, durability="async"))
    p = wait_settled(f)
    rep = group(f)["replication"]
    assert rep["durability"] == "async" and "may lose the last writes" in rep["durability_note"]
    with redis(p["address"]) as r:
        assert r.cmd("CONFIG", "GET", "min-replicas-to-write")[1] == b"0"


def test_cut_off_primary_fails_over_and_is_fenced_after_healing(run_fivenines: Any, tmp_path: Path) -> None:
    f = run_fivenines(redis_spec(standby=2))
    old = wait_settled(f)
    acked = write_acked(old["address"], [f"c{i}" for i in range(50)])
    assert admin_post(f, f"/target_groups/cache/targets/{old['id']}/cut_off?seconds=2", token="wrong")[0] == 401
    status, body = admin_post(f, f"/target_groups/cache/targets/{old['id']}/cut_off?seconds=2")
    assert status == 200, body
    cut_at = time.monotonic()
    new = wait_until(lambda: (p := published(f)) and p["id"] != old["id"] and p, BOUND + 3, 0.01,
                     what="a new primary")
    assert time.monotonic() - cut_at < BOUND
    # after the cut heals, the old primary (which kept running as a primary) is demoted
    wait_until(lambda: role_of(old["address"]) == "slave", 10, 0.05, what="old primary fenced")
    wait_settled(f)
    with redis(new["address"]) as r:
        assert r.cmd("MGET", *acked) == [k.encode() for k in acked]
