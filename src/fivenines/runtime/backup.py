"""Backups, restores and drills of a replicated Redis group: the I/O around :mod:`fivenines.core.backup`.

:class:`BackupManager` is one group's backups: the catalogue in the store, taking a
backup now or on schedule, verifying one again, restoring one into the live group,
drilling, and the status the admin API and metrics read. The parts it uses, one module
per concern:

=====================================  =====================================================
:mod:`fivenines.runtime.backup_copy`   taking a copy of a replica (the replication protocol;
                                       the AOF directory for ``point_in_time``)
:mod:`fivenines.runtime.backup_verify` the check tools and the scratch ``redis-server``
:mod:`fivenines.runtime.backup_store`  where backups live: a local directory or S3
:mod:`fivenines.runtime.backup_live`   the live group (:class:`LiveGroup`) and shared Redis calls
:mod:`fivenines.runtime.restore`       a restore into the live group, step by step
:mod:`fivenines.runtime.backup_ops`    operator commands as operations the admin API polls
=====================================  =====================================================

**A backup** comes from a healthy replica linked to its primary (never stalling the
primary), once that replica holds every write the primary had taken when the backup
began; it is verified after it is written: ``redis-check-rdb`` (``redis-check-aof``), a
scratch server that loads it and reports its key count, and the SHA-256 of the stored
object read back. The verdict (:func:`fivenines.core.backup_verify.judge`) and the
record go to the catalogue; retention runs after each good backup.

**Drills** load the newest verified backup into a scratch server (never the live
group) and report RPO (age of the data) and RTO (time to a loaded, verified server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fivenines.core import backup as core
from fivenines.core import backup_schedule as schedules
from fivenines.core import backup_verify as verdicts
from fivenines.core.backup import (
    BackupError,
    BackupRecord,
    Counters,
    DrillResult,
    Kind,
    RestoreRefused,
    Verdict,
)
from fivenines.core.backup_retention import Retention, to_delete
from fivenines.core.backup_verify import Checks, SourceView
from fivenines.core.restore_plan import latest_verified
from fivenines.runtime.backup_copy import Taken, copy_aof, fetch_rdb, pack
from fivenines.runtime.backup_live import (
    LiveGroup,
    Member,
    ReplicatedGroup,
    aof_ready,
    redis_client,
    server_info,
    until,
)
from fivenines.runtime.backup_store import (
    CATALOGUE,
    ObjectStore,
    open_store,
    private_dir,
    sha256_file,
)
from fivenines.runtime.backup_verify import Tools, check_aof, check_copy
from fivenines.runtime.redis import RedisClient
from fivenines.runtime.restore import RESTORE_TIMEOUT, run_restore
from fivenines.runtime.store import StoreError
from fivenines.spec import BackupSpec

if TYPE_CHECKING:
    from fivenines.runtime.replication import ReplicationManager

log = logging.getLogger("fivenines.backup")

CATCH_UP_TIMEOUT = 30.0  # longest a backup waits for its replica to reach the primary's offset


class BackupManager:
    """Backups, restores and drills of one group, and the loop that schedules them."""

    def __init__(self, group: str, spec: BackupSpec, store: ObjectStore, tools: Tools, work_dir: Path, *,
                 live: LiveGroup | None = None, wall: Callable[[], float] = time.time) -> None:
        self.group, self.spec, self.store, self.tools = group, spec, store, tools
        self.work_dir, self.live, self.wall = work_dir, live, wall
        self.schedule = schedules.parse_schedule(spec.schedule)
        self.drill_schedule = schedules.parse_schedule(spec.drill) if spec.drill else None
        self.retention = Retention(spec.retention.keep_last, spec.retention.daily, spec.retention.weekly)
        self.counters = Counters()
        self.running: str | None = None
        self.paused = False  # the schedule skips its rounds (an operator's maintenance, a test's inspection)
        self.read_only = False  # the catalogue is not written (commands beside a running process)
        self.since = wall()
        self.promised_rpo = schedules.promised_rpo(self.schedule)  # computed once: a cron walks its fire times
        self._drill_gap = schedules.promised_rpo(self.drill_schedule) if self.drill_schedule else 0.0
        self.tick = max(0.2, min(30.0, self.promised_rpo / 20))
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._records: list[BackupRecord] | None = None

    @classmethod
    def for_replication(cls, rm: ReplicationManager) -> BackupManager:
        rep = rm.spec
        assert rep.backup is not None
        inst = rm.g.spec.instances
        hint = inst.command[0] if inst is not None and isinstance(inst.command, list) else None
        tools = Tools.find(hint)
        work = rm.ctx.state_dir / "backup" / rm.g.name
        store = open_store(rep.backup, rm.g.name, rm.ctx.base_dir)
        return cls(rm.g.name, rep.backup, store, tools, work, live=ReplicatedGroup(rm), wall=time.time)

    def __repr__(self) -> str:
        n = len(self._records) if self._records is not None else "?"
        return (f"<BackupManager {self.group} {self.store.where} {n} backups, {self.running or 'idle'}, "
                f"ok {self.counters.backups_ok} failed {self.counters.backups_failed}>")

    def start_args(self) -> list[str]:
        """Options for the servers fivenines starts: AOF with timestamps for point-in-time restores."""
        if not self.spec.point_in_time:
            return []
        return ["--appendonly", "yes", "--aof-timestamp-enabled", "yes"]

    # ------------------------------------------------------------------ the catalogue

    async def _read(self) -> tuple[dict[str, Any] | None, list[BackupRecord]]:
        doc = await self.store.read_json(CATALOGUE)
        return doc, [] if doc is None else core.parse_catalogue(doc, self.group, f"{self.store.where}/{CATALOGUE}")

    async def stored_records(self) -> list[BackupRecord]:
        """The catalogue as the store holds it now, oldest first. Unlike :meth:`records` it leaves
        the cached copy alone: a read beside a running backup must not put back the catalogue that
        backup is replacing (its retention write would then drop the new record)."""
        return (await self._read())[1]

    async def records(self, reload: bool = False) -> list[BackupRecord]:
        """The catalogue, oldest first: the cached copy, read from the store the first time or with
        ``reload`` (only under the lock, or before anything runs)."""
        if self._records is None or reload:
            doc, self._records = await self._read()
            if doc is not None and isinstance(doc.get("last_drill"), dict) and self.counters.last_drill_try is None:
                last = DrillResult.from_json(doc["last_drill"])  # after a restart: status and metrics show it
                if last is not None:
                    self.counters.last_drill, self.counters.last_drill_try = last, last.at
                    if last.ok:
                        self.counters.last_drill_ok = last.at
            good = [r.time for r in self._records if r.verified is Verdict.OK]
            if good and self.counters.last_ok is None:
                self.counters.last_ok = max(good)
        return list(self._records)

    async def _save(self, records: list[BackupRecord]) -> None:
        if self.read_only:
            return
        doc = core.dump_catalogue(self.group, records)
        if self.counters.last_drill is not None:
            doc["last_drill"] = self.counters.last_drill.to_json()
        await self.store.write_json(CATALOGUE, doc)
        self._records = sorted(records, key=lambda r: (r.time, r.id))

    async def put_record(self, rec: BackupRecord) -> None:
        records = [r for r in await self.records() if r.id != rec.id]
        await self._save([*records, rec])

    def emit(self, kind: str, target: str, old: str, new: str, reason: str) -> None:
        if self.live is not None:
            self.live.emit(kind, target, old, new, reason)
        else:
            log.info("%s %s %s: %s", self.group, kind, new, reason)

    # ------------------------------------------------------------------ checking a copy

    def scratch_dir(self, name: str) -> Path:
        d = private_dir(self.work_dir) / f"{name}-{secrets.token_hex(4)}"
        d.mkdir(mode=0o700)
        return d

    async def _source(self) -> tuple[Member, int | None]:
        """The member to copy from, chosen on its *live* link and offset (an observation may be a
        health-check interval old), and the primary's offset when the backup began (None: no
        primary answers)."""
        if self.live is None:
            raise BackupError("taking a backup needs the running group (fivenines up)")
        members = self.live.members()
        primary = next((m for m in members if m.primary), None)
        primary_offset = None
        if primary is not None:
            state = await _replication_state(primary)
            primary_offset = int(state["master_repl_offset"]) if state and "master_repl_offset" in state else None
        views = []
        for m in members:
            link_up, position = m.link_up, m.position
            if m.healthy and not m.primary:
                state = await _replication_state(m) or {}
                link_up = state.get("master_link_status") == "up"
                position = int(state.get("slave_repl_offset", "-1"))
            views.append(SourceView(m.id, m.healthy, m.primary, link_up, position))
        chosen, why = verdicts.choose_source(views, self.spec.allow_primary)
        if chosen is None:
            raise BackupError(why)
        return next(m for m in members if m.id == chosen), primary_offset

    async def _caught_up(self, src: Member, primary_offset: int | None) -> None:
        """Wait until ``src`` holds every write the primary had taken when the backup began: a
        write acknowledged by another replica (``WAIT 1``) may not have reached it yet."""

        async def check() -> tuple[bool, str]:
            state = await _replication_state(src)
            offset = int(state.get("slave_repl_offset") or state.get("master_repl_offset") or -1) if state else None
            why = verdicts.missing_writes(src.id, offset, primary_offset)
            return why is None, why or ""

        await until(f"{src.id} catching up with the primary", time.monotonic() + min(CATCH_UP_TIMEOUT, self.spec.timeout / 2),
                    check, every=0.02)

    async def backup(self, reason: str = "operator") -> BackupRecord:
        """Take one backup now, verify it, record it, apply retention. Returns its record (its
        verdict says whether it is good); raises BackupError when no copy could be taken."""
        async with self._lock:
            self.running = "backup"
            self.counters.last_try = self.wall()
            try:
                rec, gone = await asyncio.wait_for(self._backup(reason), self.spec.timeout)
            except (BackupError, StoreError, OSError, TimeoutError) as exc:
                why = f"backup timed out after {self.spec.timeout:g}s" if isinstance(exc, TimeoutError) else str(exc)
                self.counters.backups_failed += 1
                self.emit("backup", "", "", "failed", f"{reason}: {why}")
                raise BackupError(why) from None
            finally:
                self.running = None
            if rec.verified is Verdict.OK:
                self.counters.backups_ok += 1
                self.counters.last_ok = rec.time
                self.emit("backup", rec.source, "", "ok", f"{reason}: {rec.id}, {rec.size} bytes, {rec.keys} keys, "
                           f"offset {rec.offset}, {rec.took:.2f}s to {self.store.where}: {rec.detail}")
                if gone:
                    self.emit("backup", "", "", "deleted",
                               f"retention {self.retention}: removed {', '.join(r.id for r in gone)}")
            else:
                self.counters.backups_failed += 1
                self.emit("backup", rec.source, "", "failed", f"{reason}: {rec.id} failed verification: {rec.detail}")
            return rec

    async def _backup(self, reason: str) -> tuple[BackupRecord, list[BackupRecord]]:
        started = time.monotonic()
        src, primary_offset = await self._source()
        if not src.primary:
            await self._caught_up(src, primary_offset)
        tmp = self.scratch_dir("take")
        try:
            c = await redis_client(src.host, src.port)
            try:
                source_keys = verdicts.keyspace_keys(await server_info(c, "keyspace"))
                if self.spec.point_in_time:
                    taken = await self._take_aof(c, src, tmp)
                else:
                    taken = await asyncio.to_thread(fetch_rdb, src.host, src.port, tmp / "copy.rdb",
                                                    self.spec.timeout, self.wall)
            finally:
                c.close()
            behind = None if src.primary else verdicts.missing_writes(src.id, taken.offset, primary_offset)
            if behind:  # the offset went back while it was copied: a resync from another history
                raise BackupError(f"the copy of {behind}")
            kind = Kind.AOF if self.spec.point_in_time else Kind.RDB
            checks, covers = await check_copy(self.tools, taken.path, kind, tmp, self.spec.timeout)
            records = await self.records()
            bid = core.new_backup_id(self.group, taken.at, [r.id for r in records])
            key = f"{bid}.{'aof.tar' if kind is Kind.AOF else 'rdb'}"
            rec = BackupRecord(bid, self.group, taken.at, kind, src.id, key, size=taken.size, offset=taken.offset,
                               sha256=taken.sha256, keys=checks.loaded_keys, covers_from=covers,
                               source_keys=source_keys)
            verdict, detail = verdicts.judge(checks, expected_sha256=taken.sha256, source_keys=source_keys)
            if verdict is Verdict.OK:
                await self.store.put_file(key, taken.path)
                stored = await self.store.sha256(key)  # read back from the store
                verdict, detail = verdicts.judge(Checks(checks.tool_ok, checks.tool_detail, stored, checks.loaded_keys),
                                                 expected_sha256=taken.sha256, source_keys=source_keys)
            else:
                rec = core.with_verdict(rec, verdict, detail, key="")  # a bad copy is not kept, only recorded
            rec = core.with_verdict(rec, verdict, detail, took=time.monotonic() - started)
            return rec, await self._commit(rec)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    async def _take_aof(self, c: RedisClient, src: Member, tmp: Path) -> Taken:
        cfg = await c.execute("CONFIG", "GET", "dir", "appenddirname", "appendfilename", timeout=5.0)
        conf = {k.decode(): v.decode() for k, v in zip(cfg[::2], cfg[1::2], strict=True)}
        local = self.live.data_dir(src.id) if self.live else None
        if local is None or not await asyncio.to_thread(os.path.samefile, conf["dir"], local):
            raise BackupError(f"{src.id}: its AOF is not on this machine (point_in_time needs instances)")
        before = await server_info(c, "persistence")
        if before.get("aof_enabled") != "1":  # a server started before point_in_time was set
            await c.execute("CONFIG", "SET", "aof-timestamp-enabled", "yes", "appendonly", "yes", timeout=5.0)
            await until(f"{src.id}: AOF being enabled", time.monotonic() + self.spec.timeout,
                         lambda: aof_ready(c, before))
        else:
            await c.execute("CONFIG", "SET", "aof-timestamp-enabled", "yes", timeout=5.0)
        info = await server_info(c, "replication")
        at = self.wall()
        aof_dir = Path(conf["dir"]) / conf["appenddirname"]
        copy = tmp / "appendonlydir"
        manifest = f"{conf['appendfilename']}.manifest"
        await asyncio.to_thread(copy_aof, aof_dir, manifest, copy)
        await check_aof(self.tools, copy, manifest, self.spec.timeout)  # cuts a torn last command; judged later
        archive = tmp / "copy.aof.tar"
        await asyncio.to_thread(pack, copy, archive)
        shutil.rmtree(copy, ignore_errors=True)
        offset = int(info.get("slave_repl_offset") or info.get("master_repl_offset") or 0)
        return Taken(archive, info.get("master_replid", ""), offset, await asyncio.to_thread(sha256_file, archive),
                     archive.stat().st_size, at)

    async def verify(self, backup_id: str) -> BackupRecord:
        """Check a stored backup again (fetch, checksum, tool, key count); the catalogue keeps the verdict."""
        async with self._lock:
            rec = next((r for r in await self.records(reload=True) if r.id == backup_id), None)
            if rec is None:
                raise BackupError(f"no backup {backup_id!r} in the catalogue of {self.group!r}")
            checks = await self.fetch_and_check(rec)
            verdict, detail = verdicts.judge(checks, expected_sha256=rec.sha256, expected_keys=rec.keys)
            rec = core.with_verdict(rec, verdict, detail)
            await self.put_record(rec)
            self.emit("backup", rec.source, "", f"verified {verdict.value}", f"{rec.id}: {detail}")
            return rec

    async def fetch_and_check(self, rec: BackupRecord, tmp: Path | None = None) -> Checks:
        """Fetch a stored backup and check it: loaded into a scratch server, unless ``tmp`` is
        given (a restore: the copy stays in ``tmp``/copy and is loaded by the restore itself)."""
        work = tmp or self.scratch_dir("verify")
        path = work / ("copy.aof.tar" if rec.kind is Kind.AOF else "copy.rdb")
        try:
            if not rec.key:
                raise BackupError("not stored (it failed verification when taken)")
            await self.store.get_file(rec.key, path)
            checks, _ = await check_copy(self.tools, path, rec.kind, work, self.spec.timeout, load=tmp is None)
            return checks
        except BackupError as exc:
            return Checks(None, "", None, None, f"cannot fetch: {exc}")
        finally:
            if tmp is None:
                shutil.rmtree(work, ignore_errors=True)

    # ------------------------------------------------------------------ retention

    async def _commit(self, rec: BackupRecord) -> list[BackupRecord]:
        """Record a new backup and apply retention in one catalogue write; then delete the objects
        retention removed (a crash in between leaves an unlisted object, never a listed missing one)."""
        records = [*await self.records(), rec]
        gone = to_delete(records, self.retention)
        ids = {r.id for r in gone}
        await self._save([r for r in records if r.id not in ids])
        for r in gone:
            if r.key:
                await self.store.delete(r.key)
        self.counters.deleted += len(gone)
        return gone

    # ------------------------------------------------------------------ restore

    async def restore(self, *, from_id: str | None = None, at: float | None = None,
                      timeout: float = RESTORE_TIMEOUT) -> dict[str, Any]:
        """Restore a backup into the live group (see :func:`core.restore_plan`). Raises
        :class:`RestoreRefused` (nothing changed) or BackupError (what was done is in the event)."""
        if self.live is None:
            raise RestoreRefused("a restore needs the running group: run it through fivenines up's admin API")
        async with self._lock:
            self.running = "restore"
            try:
                result = await run_restore(self, from_id, at, timeout)
            except RestoreRefused as exc:
                self.emit("recovery", "", "", "refused", str(exc))
                raise
            except (BackupError, StoreError, OSError) as exc:
                self.counters.restores_failed += 1
                self.emit("recovery", "", "", "failed", str(exc))
                raise BackupError(str(exc)) from None
            finally:
                self.running = None
            self.counters.restores_ok += 1
            return result


    async def drill(self) -> DrillResult:
        """Restore the newest verified backup into a scratch server (never the live group), verify
        it, and measure RPO (age of its data) and RTO (fetch to loaded and verified)."""
        async with self._lock:
            self.running = "drill"
            try:
                result = await self._drill()
            finally:
                self.running = None
        c = self.counters
        c.last_drill_try, c.last_drill = result.at, result
        if result.ok:
            c.drills_ok += 1
            c.last_drill_ok = result.at
        else:
            c.drills_failed += 1
        with contextlib.suppress(BackupError):
            await self._save(await self.records())  # keeps the last drill beside the catalogue
        self.emit("drill", "", "", "ok" if result.ok else "failed",
                   f"{result.backup}: {result.detail}; RPO {_secs(result.rpo)}, RTO {_secs(result.rto)}")
        return result

    async def _drill(self) -> DrillResult:
        at = self.wall()
        started = time.monotonic()
        try:
            rec = latest_verified(await self.records(reload=True), self.group)
        except (RestoreRefused, BackupError) as exc:
            return DrillResult(False, at, None, None, None, None, str(exc))
        checks = await self.fetch_and_check(rec)
        rto = time.monotonic() - started
        verdict, detail = verdicts.judge(checks, expected_sha256=rec.sha256, expected_keys=rec.keys)
        rpo = at - rec.time
        if verdict is not Verdict.OK:
            await self.put_record(core.with_verdict(rec, Verdict.FAILED, f"at drill: {detail}"))
        return DrillResult(verdict is Verdict.OK, at, rec.id, rpo, rto, checks.loaded_keys, detail)

    # ------------------------------------------------------------------ the schedule

    def next_backup(self) -> float:
        c = self.counters
        return schedules.next_run(self.schedule, last_ok=c.last_ok, last_try=c.last_try, since=self.since,
                                  retry=min(60.0, self.promised_rpo))

    def next_drill(self) -> float | None:
        if self.drill_schedule is None:
            return None
        c = self.counters
        return schedules.next_run(self.drill_schedule, last_ok=c.last_drill_ok, last_try=c.last_drill_try,
                                  since=self.since, retry=min(300.0, self._drill_gap))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"backups {self.group}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.records()
                if not self.paused and (self.live is None or self.live.ready()):
                    if self.wall() >= self.next_backup():
                        with contextlib.suppress(BackupError):
                            await self.backup("scheduled")
                    nd = self.next_drill()
                    if nd is not None and self.wall() >= nd:
                        await self.drill()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad round must not end the schedule
                log.exception("%s: backup schedule", self.group)
                self.counters.last_try = self.wall()
            await asyncio.sleep(self.tick)

    def status(self) -> dict[str, Any]:
        """For ``/status`` and a metrics exporter: what is kept, what ran, what is due."""
        c = self.counters
        now = self.wall()
        records = self._records or []
        good = [r for r in records if r.verified is Verdict.OK]
        newest = max(good, key=lambda r: (r.time, r.id), default=None)
        nd = self.next_drill()
        return {
            "to": self.store.where,
            "schedule": str(self.schedule),
            "promised_rpo_s": self.promised_rpo,
            "point_in_time": self.spec.point_in_time,
            "retention": {"keep_last": self.retention.keep_last, "daily": self.retention.daily,
                          "weekly": self.retention.weekly},
            "running": self.running,
            "backups": len(records),
            "verified": len(good),
            "bytes": sum(r.size for r in records if r.key),
            "newest": newest.to_json() if newest else None,
            "newest_age_s": round(now - newest.time, 3) if newest else None,
            "last_ok": core.iso(c.last_ok) if c.last_ok else None,
            "last_ok_time": c.last_ok,
            "next_backup_in_s": round(max(0.0, self.next_backup() - now), 3),
            "backups_ok": c.backups_ok, "backups_failed": c.backups_failed, "deleted": c.deleted,
            "restores_ok": c.restores_ok, "restores_failed": c.restores_failed,
            "drills_ok": c.drills_ok, "drills_failed": c.drills_failed,
            "last_drill": c.last_drill.to_json() if c.last_drill else None,
            "last_drill_ok": core.iso(c.last_drill_ok) if c.last_drill_ok else None,
            "last_drill_ok_time": c.last_drill_ok,
            "last_drill_age_s": round(now - c.last_drill.at, 3) if c.last_drill else None,
            "next_drill_in_s": round(max(0.0, nd - now), 3) if nd is not None else None,
        }


async def _replication_state(m: Member) -> dict[str, str] | None:
    """``INFO replication`` of a member now, or None when it does not answer."""
    try:
        c = await redis_client(m.host, m.port, 2.0)
    except StoreError:
        return None
    try:
        return await server_info(c, "replication")
    except StoreError:
        return None
    finally:
        c.close()


def _secs(x: float | None) -> str:
    return "?" if x is None else f"{x:.2f}s"


def offline_manager(spec: BackupSpec, group: str, base_dir: Path, work_dir: Path,
                    redis_hint: str | None = None) -> BackupManager:
    """A manager on the store alone (no running group): list, verify, drill."""
    return BackupManager(group, spec, open_store(spec, group, base_dir), Tools.find(redis_hint), work_dir)
