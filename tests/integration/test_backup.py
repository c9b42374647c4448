"""Backups, restores and drills of a replicated Redis group: real redis-server, the moto server for S3.

fivenines runs in-process (a Controller on its own event-loop thread) so that the tests can
call the backup manager the admin routes will call (:func:`fivenines.runtime.backup.admin_call`);
clients are plain blocking RESP connections. Every server is stopped at the end, even on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fivenines.runtime.backup import BackupManager
from fivenines.runtime.controller import Controller
from fivenines.spec import parse_spec
from tests.helpers import wait_until, write_spec
from tests.moto_helpers import empty_account, moto_server
from tests.redis_helpers import backup_spec, dump, redis, write

__all__ = ["moto_server"]  # a fixture used here

T = TypeVar("T")
class Running:
    """A Controller on its own event-loop thread; ``call`` runs a coroutine or a function there.

    ``setup`` runs on the loop right after :meth:`Controller.start` returns, before the loop runs
    anything else: the backup schedule has not had a turn yet (it starts inside ``start``)."""

    def __init__(self, tmp: Path, spec: dict[str, Any], setup: Callable[[Running], None] | None = None) -> None:
        spec.setdefault("state_dir", str(tmp / "state"))
        self.spec_path = write_spec(tmp / "fivenines.yaml", spec)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fivenines", daemon=True)
        self.thread.start()
        self.ctl: Controller | None = None
        try:
            self.ctl = Controller(parse_spec(spec), self.spec_path)
            self.call(self._start(setup), 30)
        except BaseException:
            self.close()
            raise

    async def _start(self, setup: Callable[[Running], None] | None) -> None:
        assert self.ctl is not None
        await self.c.start()
        if setup is not None:
            setup(self)  # no await between: nothing else ran on the loop since start() returned

    @property
    def c(self) -> Controller:
        assert self.ctl is not None
        return self.ctl

    def call(self, what: Any, timeout: float = 60.0) -> Any:
        if asyncio.iscoroutine(what):
            cf = asyncio.run_coroutine_threadsafe(what, self.loop)
            try:
                return cf.result(timeout)
            except TimeoutError:
                cf.cancel()  # never leave it running beside whatever the caller does next (close: stop)
                with contextlib.suppress(BaseException):
                    cf.result(10)
                raise
        fut: Future[Any] = Future()

        def run() -> None:
            try:
                fut.set_result(what())
            except BaseException as exc:
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    @property
    def backups(self) -> BackupManager:
        rm = self.c.groups["cache"].replication
        assert rm is not None and rm.backup is not None
        return rm.backup

    def admin(self, action: str, **query: str) -> tuple[str, Any]:
        """A backup command through the runtime's interface, as the admin API runs it: started, then
        polled until it is over. (state: ok, failed or refused; its result, or ``{"error": ...}``)."""
        if action == "backups":
            return "ok", self.call(self.c.backups("cache"))
        op = self.call(lambda: self.c.backup_command("cache", action, query, "test"))
        assert op["state"] == "running", op

        def over() -> Any:
            now = self.call(lambda: self.c.backup_operation("cache", op["id"]))
            return now if now["state"] != "running" else None

        done = wait_until(over, 120, 0.02, what=f"{action} {op['id']} over")
        return done["state"], done["result"] if done["result"] is not None else {"error": done["error"]}

    def status(self) -> Any:
        return self.call(self.c.status)["target_groups"]["cache"]

    def settled(self, timeout: float = 20.0) -> dict[str, str]:
        """Wait for a published primary with every replica linked and caught up: {id: address}."""

        def ok() -> dict[str, str] | None:
            g = self.status()
            if not g["serving"] or g["replication"]["phase"] != "serving":
                return None
            addrs = {t["id"]: t["address"] for t in g["targets"]}
            p = g["serving"][0]
            for t in g["targets"]:
                r = t["replication"]
                if t["id"] != p and (t["state"] != "healthy" or r["following"] != addrs[p] or not r["link_up"]):
                    return None
            with redis(addrs[p]) as c:
                if c.cmd("WAIT", len(addrs) - 1, 500) < len(addrs) - 1:
                    return None
            return {"primary": addrs[p], **{i: a for i, a in addrs.items() if i != p}}

        return wait_until(ok, timeout, 0.05, what="replicated group settled")  # type: ignore[return-value]

    def events(self, kind: str) -> list[Any]:
        return [e for e in self.call(lambda: self.c.events.recent(1000)) if e.kind == kind]

    def close(self) -> None:
        """Stop fivenines (also after a failed or timed-out start: ``call`` cancelled it, and
        ``stop`` cleans up whatever it had started), then the loop."""
        try:
            if self.ctl is not None:
                self.call(self.ctl.stop(2.0), 30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def group(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Running]]:
    made: list[Running] = []

    def make(scheduled: bool = False, **backup: Any) -> Running:
        """``scheduled``: leave the schedule on (else only the test takes backups and drills)."""
        def pause(r: Running) -> None:
            r.backups.paused = not scheduled

        r = Running(tmp_path, backup_spec(**backup), setup=pause)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def info(address: str, section: str) -> dict[str, str]:
    with redis(address) as c:
        return c.info(section)


def untouched(addrs: dict[str, str]) -> list[tuple[str, Any]]:
    """What a change to the group would move, per member: keys and values, replication offsets
    and id, full and partial syncs served. Taken once every member is at the same offset: a
    replica that a ``WAIT 1`` did not wait for may still be a few bytes behind, which is not a
    change."""

    def take() -> list[tuple[str, Any]] | None:
        out = []
        for name, x in addrs.items():
            r, s = info(x, "replication"), info(x, "stats")
            out.append((name, (dump(x), r["master_repl_offset"], r.get("slave_repl_offset"), r["master_replid"],
                               s["sync_full"], s["sync_partial_ok"])))
        return out if len({v[1] for _, v in out}) == 1 else None

    return wait_until(take, 10, 0.02, what="every member at the primary's offset")  # type: ignore[return-value]


def changed(was: list[tuple[str, Any]], now: list[tuple[str, Any]]) -> list[str]:
    """The fields that differ between two :func:`untouched` snapshots, by member (short, unlike a
    diff of two datasets)."""
    fields = ("keys", "master_repl_offset", "slave_repl_offset", "master_replid", "sync_full", "sync_partial_ok")
    out = []
    for (name, a), (_, b) in zip(was, now, strict=True):
        for f, x, y in zip(fields, a, b, strict=True):
            if f == "keys" and x != y:
                out.append(f"{name} keys: {sorted(k for k in x.keys() | y.keys() if x.get(k) != y.get(k))[:5]} differ")
            elif x != y:
                out.append(f"{name} {f}: {x} -> {y}")
    return out


# --------------------------------------------------------------------------- scheduled backups and retention


def test_scheduled_backups_appear_and_rotate_by_retention(group: Callable[..., Running], tmp_path: Path) -> None:
    g = group(scheduled=True, schedule="1s", retention={"keep_last": 2})
    addrs = g.settled()
    seen: set[str] = set()
    for i in range(4):  # data changes between backups: each one holds what was written before it
        write(addrs["primary"], {f"k{i}": str(i)})
        n = g.backups.counters.backups_ok
        wait_until(lambda n=n: g.backups.counters.backups_ok > n, 15, 0.05, what=f"backup {i}")
        seen |= {r.id for r in g.call(g.backups.records())}
    g.backups.paused = True
    wait_until(lambda: g.backups.running is None, 10, what="the schedule idle")
    state, body = g.admin("backups")
    assert state == "ok"
    kept = body["backups"]
    assert len(kept) == 2 and all(r["verified"] == "ok" for r in kept)
    assert len(seen) >= 4 and g.backups.counters.deleted >= 2
    store = tmp_path / "backups" / "cache"
    files = sorted(p.name for p in store.iterdir())
    assert files == sorted([*(r["key"] for r in kept), "catalogue.json"])
    # owner-only: the directories fivenines made are 0700, every file 0600
    for d in (tmp_path / "backups", store):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    for f in store.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    newest = kept[0]
    assert newest["source"] != g.status()["serving"][0]  # taken from a replica, never the primary
    assert newest["keys"] >= 3 and newest["offset"] > 0 and len(newest["sha256"]) == 64
    kinds = [e.new for e in g.events("backup")]
    assert kinds.count("ok") >= 4 and "deleted" in kinds
    st = g.status()["replication"]["backup"]
    assert st["verified"] == 2 and st["backups_ok"] >= 4 and st["promised_rpo_s"] == 1.0


# --------------------------------------------------------------------------- restore after a wipe (S3)

BUCKET = "fivenines-backups"


@pytest.fixture
def s3(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An empty moto account with one bucket; dummy credentials in the environment (the boto3 chain)."""
    import boto3

    empty_account(moto_server, monkeypatch, region="eu-west-1")
    client = boto3.client("s3", endpoint_url=moto_server, region_name="eu-west-1")
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    client.url = moto_server
    return client


def listener(g: Running) -> str:
    return str(g.call(g.c.ready_info)["listeners"][0])


def test_restore_after_flushall_brings_back_exactly_the_acknowledged_writes(group: Callable[..., Running],
                                                                            s3: Any) -> None:
    g = group(to=f"s3://{BUCKET}/prod", endpoint_url=s3.url, server_side_encryption="AES256")
    addrs = g.settled()
    primary = addrs["primary"]
    before = {f"a{i}": f"value-{i}" for i in range(300)}
    write(primary, before)  # acknowledged: WAIT 1 returned 1
    state, rec = g.admin("backup")
    assert state == "ok", rec
    assert rec["verified"] == "ok" and rec["keys"] == 300 and rec["kind"] == "rdb"
    head = s3.head_object(Bucket=BUCKET, Key=f"prod/cache/{rec['key']}")
    assert head["ServerSideEncryption"] == "AES256" and head["ContentLength"] == rec["size"]
    assert s3.head_object(Bucket=BUCKET, Key="prod/cache/catalogue.json")["ServerSideEncryption"] == "AES256"
    write(primary, {f"b{i}": "after the backup" for i in range(50)})  # acknowledged, after the backup point
    with redis(primary) as c:  # the disaster: replicated everywhere
        c.cmd("FLUSHALL")
        assert c.cmd("WAIT", 2, 2000) == 2
    for a in addrs.values():
        assert dump(a) == {}
    state, res = g.admin("restore", **{"from": rec["id"]})
    assert state == "ok", res
    assert [s["step"] for s in res["steps"]] == [
        "verify", "start_source", "check_source", "fence", "hold_replicas", "load_primary", "check_primary",
        "detach_primary", "resync_replicas", "check_replicas", "unfence", "stop_source"]
    assert res["keys"] == 300 and res["notes"] == [] and res["rto_s"] > 0
    # exactly the acknowledged writes up to the backup point, key by key, on every member
    for a in addrs.values():
        assert dump(a) == before, a
    p = info(primary, "replication")
    assert p["role"] == "master" and p["connected_slaves"] == "2"
    for i, a in addrs.items():
        if i == "primary":
            continue
        r = info(a, "replication")
        assert (r["role"], r["master_link_status"], f"{r['master_host']}:{r['master_port']}") == ("slave", "up", primary)
        assert r["slave_repl_offset"] == p["master_repl_offset"]
    # fivenines serves the same primary again; writes through the listener are acknowledged by a replica
    st = wait_until(lambda: (s := g.status())["serving"] and s, 10, what="serving again")
    assert st["replication"]["phase"] == "serving" and addrs["primary"] in [t["address"] for t in st["targets"]
                                                                             if t["id"] == st["serving"][0]]
    with redis(listener(g)) as c:
        c.cmd("SET", "after-restore", "1")
        assert c.cmd("WAIT", 1, 2000) >= 1
    rec_events = [(e.old, e.new) for e in g.events("recovery")]
    assert rec_events == [("serving", "restoring"), ("restoring", "serving"), ("", "restored")]


def test_a_backup_holds_every_write_the_primary_took_before_it_began_even_from_a_lagging_replica(
        group: Callable[..., Running]) -> None:
    """``WAIT 1`` acknowledges a write once *one* replica has it: another replica may still lack it.
    ``CLIENT PAUSE ms WRITE`` on a replica stops it applying its primary's stream while it stays
    linked and answers INFO and PSYNC, as a replica starved of CPU would: a copy of it then would
    lack acknowledged writes (this test failed before the backup chose its replica on live offsets
    and waited for it to reach the primary's offset read when the backup began)."""
    g = group()
    addrs = g.settled()
    primary = addrs["primary"]
    replicas = [a for i, a in addrs.items() if i != "primary"]
    expected: dict[str, str] = {}
    for n, lagging in enumerate(replicas):  # each replica in turn lags: the other acknowledges
        keys = {f"r{n}-{i}": str(i) for i in range(100)}
        with redis(lagging) as c:
            c.cmd("CLIENT", "PAUSE", 3000, "WRITE")
            write(primary, keys)  # acknowledged (WAIT 1) by the replica that is not paused
            expected |= keys
            state, rec = g.admin("backup")
            c.cmd("CLIENT", "UNPAUSE")
        assert state == "ok" and rec["verified"] == "ok" and rec["keys"] == len(expected), rec
        assert rec["source"] != g.status()["serving"][0]
    # every replica lags: the backup waits for its replica to reach the primary's offset
    for a in replicas:
        with redis(a) as c:
            c.cmd("CLIENT", "PAUSE", 1000, "WRITE")
    with redis(primary) as c:
        for i in range(50):
            c.cmd("SET", f"late-{i}", str(i))
            expected[f"late-{i}"] = str(i)
        offset = int(c.info()["master_repl_offset"])
    state, rec = g.admin("backup")
    assert state == "ok" and rec["keys"] == len(expected) and rec["offset"] >= offset, rec
    for a in addrs.values():
        assert dump(a) == expected, a


# --------------------------------------------------------------------------- corruption


def test_a_corrupt_backup_is_detected_at_verification_and_refused_at_restore(group: Callable[..., Running],
                                                                            tmp_path: Path) -> None:
    g = group()
    addrs = g.settled()
    primary = addrs["primary"]
    write(primary, {f"k{i}": "x" * 100 for i in range(200)})
    a = g.admin("backup")[1]
    b = g.admin("backup")[1]
    assert a["verified"] == b["verified"] == "ok"
    store = tmp_path / "backups" / "cache"
    blob = bytearray((store / a["key"]).read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one bit flip in the stored object
    (store / a["key"]).write_bytes(bytes(blob))
    state, v = g.admin("verify", id=a["id"])
    assert state == "failed" and v["verified"] == "failed"
    assert "check tool failed" in v["detail"] and f"expected {a['sha256']}" in v["detail"]

    was = untouched(addrs)
    state, body = g.admin("restore", **{"from": a["id"]})
    assert state == "refused" and "failed verification" in body["error"]
    # corrupt b without telling the catalogue: the restore's own check refuses it
    (store / b["key"]).write_bytes((store / b["key"]).read_bytes()[: b["size"] // 2])
    state, body = g.admin("restore", **{"from": b["id"]})
    assert state == "refused" and "failed verification at restore" in body["error"] and "nothing was changed" in body["error"]
    assert {r["id"]: r["verified"] for r in g.admin("backups")[1]["backups"]} == {a["id"]: "failed", b["id"]: "failed"}
    state, body = g.admin("restore", **{"from": "orders-20250101T000000Z"})
    assert state == "refused" and "belongs to group 'orders', not 'cache'" in body["error"]
    moved = changed(was, untouched(addrs))
    assert not moved, moved  # nothing changed
    assert g.status()["replication"]["phase"] == "serving"
    assert [(e.old, e.new) for e in g.events("recovery")] == [("", "refused")] * 3


# --------------------------------------------------------------------------- drills


def test_a_drill_restores_into_a_scratch_server_and_never_touches_the_live_group(group: Callable[..., Running],
                                                                                 tmp_path: Path) -> None:
    from fivenines.cli.backup import store_catalogue, store_drill

    g = group(drill="1h")
    addrs = g.settled()
    write(addrs["primary"], {f"k{i}": str(i) for i in range(120)})
    rec = g.admin("backup")[1]

    was = untouched(addrs)
    state, d = g.admin("drill")
    assert state == "ok", d
    assert d["ok"] and d["backup"] == rec["id"] and d["keys"] == 120 and d["rto_s"] > 0 and d["rpo_s"] >= 0
    # the same drill from the command line, on the store alone (no running group needed)
    result = store_drill(str(g.spec_path), "cache")
    assert result.ok and result.keys == 120 and result.backup == rec["id"]
    assert [r.id for r in store_catalogue(str(g.spec_path), "cache")] == [rec["id"]]
    moved = changed(was, untouched(addrs))
    assert not moved, moved  # keys, offsets, replication ids, syncs
    st = g.status()["replication"]["backup"]
    assert st["drills_ok"] == 1 and st["last_drill"]["ok"] and st["last_drill"]["backup"] == rec["id"]
    assert [e.new for e in g.events("drill")] == ["ok"]


# --------------------------------------------------------------------------- point in time


def test_point_in_time_restore_replays_the_aof_up_to_the_second_asked(group: Callable[..., Running]) -> None:
    g = group(point_in_time=True)
    addrs = g.settled()
    primary = addrs["primary"]
    wait_until(lambda: all(info(a, "persistence")["aof_enabled"] == "1" for a in addrs.values()), 10,
               what="AOF on (point_in_time start options)")
    first = {f"early{i}": str(i) for i in range(40)}
    write(primary, first)
    at = int(time.time())
    wait_until(lambda: time.time() >= at + 1.3, 3, what="the next second")  # Redis' cached clock lags ~100ms
    write(primary, {f"late{i}": str(i) for i in range(40)})
    state, rec = g.admin("backup")
    assert state == "ok" and rec["kind"] == "aof" and rec["covers_from"] <= at, rec
    with redis(primary) as c:
        c.cmd("FLUSHALL")
        c.cmd("WAIT", 2, 2000)
    state, res = g.admin("restore", at=f"@{at}")
    assert state == "ok", res
    assert "rewrite_aof" in [s["step"] for s in res["steps"]]
    for a in addrs.values():
        assert dump(a) == first, a


# --------------------------------------------------------------------------- the chaos wipe


def test_chaos_wipe_counts_each_acknowledged_write_lost(group: Callable[..., Running]) -> None:
    from fivenines.chaos.wipe import run_wipe

    g = group()
    addrs = g.settled()
    taken: dict[str, Any] = {}

    async def backup() -> None:
        taken["started"] = time.time()
        taken["rec"] = await g.backups.backup("chaos")

    async def restore() -> None:
        await g.backups.restore(from_id=taken["rec"].id)

    r = g.call(run_wipe(listener(g), addrs["primary"], restore, backup=backup, clients=3, before=2.0,
                        restore_after=0.5, after=1.0, declared_rpo_s=3600.0), 60)
    assert r.acknowledged > 50, r
    assert r.missing_after_restore == 0 and r.wrong_value == 0  # nothing acknowledged after the restore is lost
    assert r.missing_before_backup == 0  # nor anything acknowledged before the backup began
    assert r.lost_before_wipe > 0 and r.lost_after_wipe > 0  # newer than the backup; taken by the wiped primary
    # the restored data ends at the backup point
    assert r.backup_point is not None and taken["started"] - 0.5 <= r.backup_point <= taken["rec"].time + 0.2
    assert r.rpo_s is not None and 0.5 < r.rpo_s < 3.0 and r.rto_s > 0.5
    assert r.to_json()["declared_rpo_s"] == 3600.0
