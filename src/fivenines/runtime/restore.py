"""Restoring a backup into the live group: the steps of :func:`fivenines.core.restore_plan.restore_plan`,
carried out.

The copy is checked again and loaded into a scratch server (TCP, password-protected)
*before* anything in the group changes; then writes are fenced through the replication
manager (``begin_restore``), the replicas are held, the primary becomes a replica of the
scratch server for one full sync, is detached, its AOF rewritten when AOF is on, the
replicas resync and are checked in sync, and writes resume (``end_restore``).
:class:`~fivenines.runtime.backup.BackupManager` runs it under its lock and keeps the
counters and events; :class:`RestoreHost` is what the restore needs from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from fivenines.core import restore_plan
from fivenines.core.backup import (
    BackupError,
    BackupRecord,
    Kind,
    RestoreRefused,
    Verdict,
    iso,
    with_verdict,
)
from fivenines.core.backup_verify import Checks, judge, keyspace_keys
from fivenines.core.restore_plan import Choice, StepKind
from fivenines.runtime.backup_copy import manifest_name, unpack
from fivenines.runtime.backup_live import (
    LiveGroup,
    Member,
    aof_ready,
    redis_client,
    server_info,
    until,
)
from fivenines.runtime.backup_verify import (
    ScratchServer,
    Tools,
    local_address_towards,
    run_tool,
    tail,
)
from fivenines.runtime.redis import PARKED, RedisClient
from fivenines.runtime.store import StoreError
from fivenines.spec import BackupSpec

RESTORE_TIMEOUT = 600.0
BATCH_SYNC_BYTES = 64 << 20  # from this size one transfer to every replica beats up to 1 s of waiting for it


class RestoreHost(Protocol):
    """What a restore needs from the group's backups (:class:`~fivenines.runtime.backup.BackupManager`)."""

    group: str
    spec: BackupSpec
    tools: Tools
    live: LiveGroup | None
    wall: Callable[[], float]

    async def records(self, reload: bool = False) -> list[BackupRecord]: ...

    async def fetch_and_check(self, rec: BackupRecord, tmp: Path | None = None) -> Checks: ...

    async def put_record(self, rec: BackupRecord) -> None: ...

    def scratch_dir(self, name: str) -> Path: ...

    def emit(self, kind: str, target: str, old: str, new: str, reason: str) -> None: ...


async def run_restore(backups: RestoreHost, from_id: str | None, at: float | None, timeout: float) -> dict[str, Any]:
    """Restore a backup into the live group, step by step (:func:`fivenines.restore_plan.restore_plan.restore_plan`).
    Raises :class:`RestoreRefused` (nothing changed) or BackupError / StoreError (failed part-way)."""
    live = backups.live
    assert live is not None
    started = time.monotonic()
    deadline = started + timeout
    records = await backups.records(reload=True)
    choice = restore_plan.choose_backup(records, backups.group, from_id=from_id, at=at, now=backups.wall())
    rec = choice.record
    members = live.members()
    primary = next((m for m in members if m.primary), None)
    if primary is None:
        raise RestoreRefused(f"{backups.group} has no primary now; restore once it has one")
    replicas = [m for m in members if not m.primary]
    pc = await redis_client(primary.host, primary.port)
    try:
        aof_on = (await server_info(pc, "persistence")).get("aof_enabled") == "1"
    except StoreError as exc:
        pc.close()
        raise RestoreRefused(f"the primary {primary.id} does not answer: {exc}") from None
    plan = restore_plan.restore_plan(choice, primary.id, [m.id for m in replicas], {primary.id: aof_on})
    steps: list[dict[str, Any]] = []
    tmp = backups.scratch_dir("restore")
    source: ScratchServer | None = None
    fenced = loaded = False
    position = 0
    before: dict[str, str] = {}
    saved: list[str] = []
    masterauth: str | None = None  # the primary's own, while the scratch server's password is set
    notes: list[str] = []

    def done(step: StepKind, t0: float, detail: str = "") -> None:
        steps.append({"step": step.value, "seconds": round(time.monotonic() - t0, 3), "detail": detail})

    try:
        for step in plan:
            t0 = time.monotonic()
            k = step.kind
            if fenced and not live.restoring():
                raise BackupError(f"stopped before {k.value}: this node no longer acts for the group "
                                  "(lease lost); the new leader takes over")
            if k is StepKind.VERIFY:
                checks = await backups.fetch_and_check(rec, tmp)
                verdict, detail = judge(checks, expected_sha256=rec.sha256, loaded=False)
                if verdict is not Verdict.OK:
                    await backups.put_record(with_verdict(rec, Verdict.FAILED, f"at restore: {detail}"))
                    raise RestoreRefused(f"backup {rec.id} failed verification at restore: {detail}; "
                                         "nothing was changed")
                done(k, t0, detail)
            elif k is StepKind.START_SOURCE:
                source = await _start_source(backups, rec, choice, tmp, primary)
                done(k, t0, source.address or "")
            elif k is StepKind.CHECK_SOURCE:
                assert source is not None
                keys = await source.keys()
                why = restore_plan.source_ok(keys, choice)
                if why:
                    raise RestoreRefused(f"{why}; nothing was changed")
                done(k, t0, f"{keys} keys")
            elif k is StepKind.FENCE:
                try:
                    live.begin_restore()
                except Exception as exc:  # ReplicationError: not serving, not the leader
                    raise RestoreRefused(f"{exc}; nothing was changed") from None
                fenced = True
                done(k, t0)
            elif k is StepKind.HOLD_REPLICAS:
                for m in replicas:
                    try:
                        await _cmd(m, "REPLICAOF", *PARKED)
                    except StoreError as exc:
                        notes.append(f"{m.id} not held ({exc}): it resyncs when it is back")
                done(k, t0)
            elif k is StepKind.LOAD_PRIMARY:
                assert source is not None and source.address is not None
                before = await server_info(pc, "persistence")
                host, _, port = source.address.rpartition(":")
                got = await pc.execute("CONFIG", "GET", "masterauth", timeout=5.0)
                masterauth = got[1].decode() if len(got) == 2 else ""  # put back after the load
                await pc.execute("CONFIG", "SET", "masterauth", source.password or "", timeout=5.0)
                loaded = True  # from here the primary's data is uncertain until it is checked
                await pc.execute("REPLICAOF", host, port, timeout=5.0)
                done(k, t0)
            elif k is StepKind.CHECK_PRIMARY:
                assert source is not None
                want = await source.keys()
                src_off = int((await source.info("replication")).get("master_repl_offset", "0"))
                await until(f"{primary.id} loading the backup", deadline,
                             functools.partial(_primary_loaded, pc, want, src_off))
                done(k, t0, f"{want} keys")
            elif k is StepKind.DETACH_PRIMARY:
                await pc.execute("REPLICAOF", "NO", "ONE", timeout=5.0)
                await pc.execute("CONFIG", "SET", "masterauth", masterauth or "", timeout=5.0)
                masterauth = None
                position = int((await server_info(pc, "replication")).get("master_repl_offset", "0"))
                done(k, t0, f"position {position}")
            elif k is StepKind.REWRITE_AOF:
                await until(f"{primary.id} AOF rewrite", deadline,
                             functools.partial(aof_ready, pc, before))
                done(k, t0)
            elif k is StepKind.RESYNC_REPLICAS:
                if rec.size >= BATCH_SYNC_BYTES:
                    saved = await _one_transfer(pc, len(replicas))
                for m in replicas:
                    try:
                        await _cmd(m, "REPLICAOF", primary.host, str(primary.port))
                    except StoreError as exc:
                        notes.append(f"{m.id} not re-pointed ({exc}): fivenines re-points it when it is back")
                done(k, t0)
            elif k is StepKind.CHECK_REPLICAS:
                states = await _replicas_in_sync(pc, primary, replicas, deadline)
                if saved:
                    await pc.execute("CONFIG", "SET", *saved, timeout=5.0)
                    saved = []
                notes += [f"{i}: {s}" for i, s in states.items() if s != "in sync"]
                done(k, t0, ", ".join(f"{i} {s}" for i, s in states.items()))
            elif k is StepKind.UNFENCE:
                detail = f"{choice.note}; {rec.keys if choice.truncate_to is None else 'replayed'} keys"
                live.end_restore(True, position, detail, True)
                fenced = False
                done(k, t0)
            elif k is StepKind.STOP_SOURCE:
                if source is not None:
                    await source.stop()
                done(k, t0)
    except BaseException as exc:
        if fenced:
            live.end_restore(False, 0, str(exc) or type(exc).__name__, not loaded)
            if masterauth is not None:
                with contextlib.suppress(StoreError):
                    await pc.execute("CONFIG", "SET", "masterauth", masterauth, timeout=5.0)
        raise
    finally:
        if saved:
            with contextlib.suppress(StoreError):
                await pc.execute("CONFIG", "SET", *saved, timeout=5.0)
        pc.close()
        if source is not None:
            await source.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.monotonic() - started
    keys = await _keys_of(primary)
    result = {"group": backups.group, "backup": rec.id, "kind": rec.kind.value, "note": choice.note,
              "restored_to": iso(choice.truncate_to if choice.truncate_to is not None else rec.time),
              "primary": primary.id, "keys": keys, "position": position, "rto_s": round(seconds, 3),
              "steps": steps, "notes": notes}
    backups.emit("recovery", primary.id, "", "restored",
               f"{choice.note}: {keys} keys in {seconds:.2f}s" + (f"; {'; '.join(notes)}" if notes else ""))
    return result

async def _start_source(backups: RestoreHost, rec: BackupRecord, choice: Choice, tmp: Path, primary: Member) -> ScratchServer:
    path = tmp / ("copy.aof.tar" if rec.kind is Kind.AOF else "copy.rdb")
    work = tmp / "source"
    work.mkdir(mode=0o700)
    if rec.kind is Kind.RDB:
        shutil.move(str(path), work / "dump.rdb")
        server = ScratchServer(backups.tools, work, rdb=work / "dump.rdb",
                               tcp=local_address_towards(primary.host, primary.port))
    else:
        aof_dir = await asyncio.to_thread(unpack, path, work)
        if choice.truncate_to is not None:
            rc, out = await run_tool([backups.tools.check_aof, "--truncate-to-timestamp", str(int(choice.truncate_to)),
                                      str(aof_dir / manifest_name(aof_dir))], backups.spec.timeout)
            if rc != 0:
                raise RestoreRefused(f"redis-check-aof could not truncate to {iso(choice.truncate_to)}: "
                                     f"{tail(out)}; nothing was changed")
        server = ScratchServer(backups.tools, work, aof=True, tcp=local_address_towards(primary.host, primary.port))
    try:
        await server.start(backups.spec.timeout)
    except BackupError as exc:
        raise RestoreRefused(f"the backup does not load: {exc}; nothing was changed") from None
    return server

async def _one_transfer(pc: RedisClient, replicas: int) -> list[str]:
    """Diskless sync: hold the primary's fork until every replica asked (Redis 7's
    ``repl-diskless-sync-max-replicas``, at most 5 s), so that one transfer serves them all
    instead of one after the other. Redis starts the held fork from its once-a-second cron,
    so this pays only for large datasets (:data:`BATCH_SYNC_BYTES`). Returns the settings to put back."""
    reply = await pc.execute("CONFIG", "GET", "repl-diskless-sync*", timeout=5.0)
    conf = {k.decode(): v.decode() for k, v in zip(reply[::2], reply[1::2], strict=True)}
    if replicas < 2 or conf.get("repl-diskless-sync") != "yes" or "repl-diskless-sync-max-replicas" not in conf:
        return []
    await pc.execute("CONFIG", "SET", "repl-diskless-sync-delay", "5", "repl-diskless-sync-max-replicas",
                     str(replicas), timeout=5.0)
    return ["repl-diskless-sync-delay", conf["repl-diskless-sync-delay"],
            "repl-diskless-sync-max-replicas", conf["repl-diskless-sync-max-replicas"]]

async def _cmd(m: Member, *args: str) -> Any:
    c = await redis_client(m.host, m.port, 3.0)
    try:
        return await c.execute(*args, timeout=5.0)
    finally:
        c.close()

async def _keys_of(m: Member) -> int:
    c = await redis_client(m.host, m.port, 3.0)
    try:
        return keyspace_keys(await server_info(c, "keyspace"))
    finally:
        c.close()

async def _primary_loaded(pc: RedisClient, keys: int, source_offset: int) -> tuple[bool, str]:
    info = await server_info(pc, "replication", "keyspace", "persistence")
    if info.get("master_link_status") != "up" or info.get("master_sync_in_progress") != "0":
        return False, "still syncing from the scratch server"
    if info.get("loading") == "1":
        return False, "loading"
    if int(info.get("slave_repl_offset", "-1")) < source_offset:
        return False, f"at offset {info.get('slave_repl_offset')}, the scratch server at {source_offset}"
    have = keyspace_keys(info)
    if have != keys:
        return False, f"holds {have} keys, the backup {keys}"
    return True, ""

async def _replicas_in_sync(pc: RedisClient, primary: Member, replicas: list[Member],
                            deadline: float) -> dict[str, str]:
    states: dict[str, str] = {}
    for m in replicas:
        async def check(m: Member = m) -> tuple[bool, str]:
            p = await server_info(pc, "replication", "keyspace")
            try:
                c = await redis_client(m.host, m.port, 2.0)
            except StoreError as exc:
                return False, f"unreachable: {exc}"
            try:
                r = await server_info(c, "replication", "keyspace")
            finally:
                c.close()
            why = restore_plan.in_sync(p, r, primary.address, keyspace_keys(p), keyspace_keys(r))
            return why is None, why or ""
        try:
            await until(f"{m.id} resync", deadline, check)
            states[m.id] = "in sync"
        except BackupError as exc:
            states[m.id] = f"not in sync: {exc}"
    return states

# ------------------------------------------------------------------ drill


__all__ = ["BATCH_SYNC_BYTES", "RESTORE_TIMEOUT", "RestoreHost", "run_restore"]
