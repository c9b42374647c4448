"""Backups, restores and drills of a replicated Redis group: real redis-server, the moto server for S3.

fivenines runs in-process (a Controller on its own event-loop thread) so that the tests can
call the backup manager the admin routes will call (:func:`fivenines.runtime.backup.admin_call`);
clients are plain blocking RESP connections. Every server is stopped at the end, even on failure.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fivenines.core.backup import Verdict, iso
from fivenines.runtime.backup import BackupManager, admin_call
from fivenines.runtime.controller import Controller
from fivenines.spec import parse_spec
from tests.helpers import IN_CI, wait_until, write_spec
from tests.redis_helpers import redis, redis_spec

T = TypeVar("T")
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_DEFAULT_REGION": "eu-west-1",
}


class Running:
    """A Controller on its own event-loop thread; ``call`` runs a coroutine or a function there."""

    def __init__(self, tmp: Path, spec: dict[str, Any]) -> None:
        spec.setdefault("state_dir", str(tmp / "state"))
        self.spec_path = write_spec(tmp / "fivenines.yaml", spec)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fivenines", daemon=True)
        self.thread.start()
        self.ctl = Controller(parse_spec(spec), self.spec_path)
        try:
            self.call(self.ctl.start(), 30)
        except BaseException:
            self.close()
            raise

    def call(self, what: Any, timeout: float = 60.0) -> Any:
        if asyncio.iscoroutine(what):
            return asyncio.run_coroutine_threadsafe(what, self.loop).result(timeout)
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
        rm = self.ctl.groups["cache"].replication
        assert rm is not None and rm.backup is not None
        return rm.backup

    def admin(self, action: str, **query: str) -> tuple[int, Any]:
        return self.call(admin_call(self.backups, "cache", action, query))  # type: ignore[no-any-return]

    def status(self) -> Any:
        return self.call(self.ctl.status)["target_groups"]["cache"]

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
        return [e for e in self.call(lambda: self.ctl.events.recent(1000)) if e.kind == kind]

    def close(self) -> None:
        try:
            if self.ctl._loop is not None:
                self.call(self.ctl.stop(2.0), 30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def backup_spec(tmp: Path, **backup: Any) -> dict[str, Any]:
    spec = redis_spec(standby=2, durability="sync")
    inst = spec["target_groups"]["cache"]["instances"]
    inst["command"] += ["--repl-ping-replica-period", "3600"]  # offsets move only with writes (the drill test)
    spec["target_groups"]["cache"]["replicated"]["backup"] = {"to": "backups", "schedule": "1h", **backup}
    return spec


@pytest.fixture
def group(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Running]]:
    made: list[Running] = []

    def make(**backup: Any) -> Running:
        r = Running(tmp_path, backup_spec(tmp_path, **backup))
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def write(address: str, keys: dict[str, str]) -> None:
    """Write and confirm each write with WAIT 1: acknowledged writes."""
    with redis(address) as c:
        for k, v in keys.items():
            c.cmd("SET", k, v)
        assert c.cmd("WAIT", 1, 2000) >= 1


def dump(address: str) -> dict[str, str]:
    """Every key and value of a server (small test datasets)."""
    with redis(address) as c:
        keys = c.cmd("KEYS", "*")
        if not keys:
            return {}
        values = c.cmd("MGET", *keys)
        return {k.decode(): v.decode() for k, v in zip(keys, values, strict=True)}


def info(address: str, section: str) -> dict[str, str]:
    with redis(address) as c:
        return c.info(section)


# --------------------------------------------------------------------------- scheduled backups and retention


def test_scheduled_backups_appear_and_rotate_by_retention(group: Callable[..., Running], tmp_path: Path) -> None:
    g = group(schedule="1s", retention={"keep_last": 2})
    addrs = g.settled()
    seen: set[str] = set()
    for i in range(4):  # data changes between backups: each one holds what was written before it
        write(addrs["primary"], {f"k{i}": str(i)})
        n = g.backups.counters.backups_ok
        wait_until(lambda n=n: g.backups.counters.backups_ok > n, 15, 0.05, what=f"backup {i}")
        seen |= {r.id for r in g.call(g.backups.records())}
    g.backups.paused = True
    wait_until(lambda: g.backups.running is None, 10, what="the schedule idle")
    code, body = g.admin("backups")
    assert code == 200
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
