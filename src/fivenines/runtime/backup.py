"""Backups, restores and drills of a replicated Redis group: the I/O around :mod:`fivenines.core.backup`.

**Taking a copy without stalling the primary.** The copy comes from a healthy replica
over Redis' own replication protocol: fivenines connects to the replica as one more
replica would (``REPLCONF capa eof``, ``REPLCONF rdb-only 1``, ``PSYNC ? -1``) and
receives the RDB the replica's forked child streams (diskless). The primary is not
involved at all; the replica forks (copy-on-write) and keeps replicating meanwhile.
The ``+FULLRESYNC <replid> <offset>`` line gives the exact replication offset the copy
holds. The replica refuses (``NOMASTERLINK``) while it is not linked to its primary,
so a copy is never taken from a replica that lost its primary and might be stale or
empty. (``BGSAVE`` + copying ``dump.rdb`` would need the replica's files on this
machine; ``redis-cli --rdb`` does the same as this but does not report the offset.)
With ``point_in_time: true`` the replica's AOF directory (RDB base + increments with
``#TS:`` timestamps) is copied instead (instances fivenines runs: their files are here).

**Verification after writing.** ``redis-check-rdb`` (``redis-check-aof`` on the copied
manifest), a scratch ``redis-server`` (``--port 0``: a unix socket only, in a private
temporary directory) that loads the copy and reports its key count, and the SHA-256
of the stored object read back from the store. The verdict (:func:`core.judge`) and
the record go to the catalogue; retention runs after each good backup.

**Restore** follows :func:`core.restore_plan`: the copy is checked again and loaded into
a scratch server (TCP, password-protected) *before* anything in the group changes; then
writes are fenced through the replication manager (``begin_restore``), the replicas
are held, the primary becomes a replica of the scratch server for one full sync, is
detached, its AOF rewritten when AOF is on, the replicas resync and are checked in
sync, and writes resume (``end_restore``).

**Drills** load the newest verified backup into a scratch server (never the live
group) and report RPO (age of the data) and RTO (time to a loaded, verified server).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import shutil
import socket
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fivenines.core import backup as core
from fivenines.core.backup import (
    BackupError,
    BackupRecord,
    Checks,
    Choice,
    Counters,
    DrillResult,
    Kind,
    RestoreRefused,
    Retention,
    SourceView,
    StepKind,
    Verdict,
)
from fivenines.runtime.backup_store import CATALOGUE, ObjectStore, open_store, private_dir
from fivenines.runtime.redis import (
    ErrorReply,
    RedisClient,
    ReplyError,
    _RespProtocol,
    encode_command,
    parse_info,
)
from fivenines.runtime.store import StoreError
from fivenines.runtime.supervisor import die_with_parent
from fivenines.spec import BackupSpec

if TYPE_CHECKING:
    from fivenines.runtime.replication import ReplicationManager

log = logging.getLogger("fivenines.backup")

CHUNK = 1 << 20
RESTORE_TIMEOUT = 600.0
BATCH_SYNC_BYTES = 64 << 20  # from this size one transfer to every replica beats up to 1 s of waiting for it


# --------------------------------------------------------------------------- the Redis tools


@dataclass(frozen=True, slots=True)
class Tools:
    server: str
    check_rdb: str
    check_aof: str

    @classmethod
    def find(cls, hint: str | None = None) -> Tools:
        """redis-server and its check tools: beside ``hint`` (the group's redis-server), on PATH, /usr/bin."""
        dirs = [str(Path(hint).parent)] if hint and os.sep in hint else []

        def one(name: str) -> str:
            for d in dirs:
                if os.access(Path(d) / name, os.X_OK):
                    return str(Path(d) / name)
            found = shutil.which(name) or next((p for p in (f"/usr/bin/{name}", f"/usr/local/bin/{name}")
                                                if os.access(p, os.X_OK)), None)
            if found is None:
                raise BackupError(f"{name} not found (it comes with redis-server: apt install redis-tools)")
            return found

        return cls(one("redis-server"), one("redis-check-rdb"), one("redis-check-aof"))


async def run_tool(argv: list[str], timeout: float, stdin: bytes | None = None) -> tuple[int, str]:
    """Run a check tool; (exit code, output)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        preexec_fn=die_with_parent(os.getpid()))
    try:
        out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BackupError(f"{Path(argv[0]).name} took longer than {timeout:g}s") from None
    return proc.returncode or 0, out.decode("utf-8", "replace")


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(x.strip() for x in text.strip().splitlines()[-lines:])


async def check_rdb(tools: Tools, path: Path, timeout: float) -> tuple[bool, str]:
    rc, out = await run_tool([tools.check_rdb, str(path)], timeout)
    return rc == 0, ("RDB looks OK" if rc == 0 else _tail(out))


async def check_aof(tools: Tools, aof_dir: Path, manifest: str, timeout: float) -> tuple[bool, str, str]:
    """redis-check-aof on a copied AOF directory; a last increment cut inside a command (copied
    while Redis appended) is truncated to its last whole command first. (ok, detail, output)."""
    files = core.parse_manifest((aof_dir / manifest).read_text())
    rc, out = await run_tool([tools.check_aof, str(aof_dir / manifest)], timeout)
    if rc != 0:
        torn = core.torn_tail(core.parse_check_aof(out), files)
        if torn is not None:
            os.truncate(aof_dir / torn.file, torn.ok_up_to)
            rc, out = await run_tool([tools.check_aof, str(aof_dir / manifest)], timeout)
    return rc == 0, ("AOF valid" if rc == 0 else _tail(out)), out


# --------------------------------------------------------------------------- a scratch redis-server


async def _unix_client(path: Path, timeout: float) -> RedisClient:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            transport, proto = await loop.create_unix_connection(_RespProtocol, str(path))
    except (OSError, TimeoutError) as exc:
        raise StoreError(f"{path}: {exc}") from None
    return RedisClient("unix", 0, transport, proto)


class ScratchServer:
    """A redis-server of fivenines' own, in a private directory, loading one copy.

    It answers on a unix socket (``--port 0``: no TCP) unless ``tcp`` is given: then it
    also listens there, with a random password, as the source of a restore."""

    def __init__(self, tools: Tools, workdir: Path, *, rdb: Path | None = None, aof: bool = False,
                 tcp: str | None = None) -> None:
        self.tools, self.dir = tools, workdir
        # a unix socket path has at most 107 bytes: a short private directory of its own
        self.sock_dir = Path(tempfile.mkdtemp(prefix="fivenines-"))
        self.sock = self.sock_dir / "redis.sock"
        self.password = secrets.token_hex(16) if tcp else None
        self.address: str | None = None
        self.tcp = tcp
        args = [tools.server, "--dir", str(workdir), "--unixsocket", str(self.sock), "--unixsocketperm", "700",
                "--save", "", "--daemonize", "no", "--logfile", str(workdir / "redis.log"),
                "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
        if aof:  # the copied appendonlydir: loaded as the AOF
            args += ["--appendonly", "yes", "--appenddirname", "appendonlydir"]
        else:  # appendonly no: Redis reads the RDB (with AOF on it would start empty, the RDB unread)
            args += ["--appendonly", "no", "--dbfilename", rdb.name if rdb else "dump.rdb"]
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.client: RedisClient | None = None

    def __repr__(self) -> str:
        return f"<ScratchServer {self.address or self.sock} {'running' if self.proc else 'stopped'}>"

    async def start(self, timeout: float) -> None:
        """Start and wait until the copy is loaded; a copy it cannot load raises BackupError."""
        deadline = time.monotonic() + timeout
        for _ in range(5):  # a TCP port taken between choosing and binding: choose again
            args = list(self.args)
            if self.tcp is not None:
                port = _free_port(self.tcp)
                self.address = f"{self.tcp}:{port}"
                args += ["--port", str(port), "--bind", self.tcp, "--requirepass", self.password or ""]
            else:
                args += ["--port", "0"]
            self.proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, preexec_fn=die_with_parent(os.getpid()))
            try:
                await self._wait_loaded(deadline)
                return
            except _PortTaken:
                continue
        raise BackupError("scratch redis-server: no free TCP port after 5 tries")

    async def _wait_loaded(self, deadline: float) -> None:
        assert self.proc is not None
        while True:
            if self.proc.returncode is not None:
                text = self._log()
                if "Address already in use" in text:
                    raise _PortTaken
                raise BackupError(f"redis-server could not load the copy (exit {self.proc.returncode}): "
                                  f"{_tail(text)}")
            if time.monotonic() > deadline:
                await self.stop()
                raise BackupError(f"redis-server did not finish loading the copy in time: {_tail(self._log())}")
            if self.sock.exists():
                try:
                    if self.client is None or not self.client.usable:
                        self.client = await _unix_client(self.sock, 2.0)
                        if self.password:
                            await self.client.execute("AUTH", self.password, timeout=2.0)
                    info = await self.info("persistence")
                    if info.get("loading") == "0" and info.get("async_loading", "0") == "0":
                        return
                except StoreError:
                    pass
            try:
                await asyncio.wait_for(self.proc.wait(), 0.02)
            except TimeoutError:
                pass

    def _log(self) -> str:
        try:
            return (self.dir / "redis.log").read_text(errors="replace")
        except OSError:
            return ""

    async def info(self, section: str) -> dict[str, str]:
        assert self.client is not None
        reply = await self.client.execute("INFO", section, timeout=10.0)
        return parse_info(reply.decode() if isinstance(reply, bytes) else str(reply))

    async def keys(self) -> int:
        return core.keyspace_keys(await self.info("keyspace"))

    async def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self.proc = None
        shutil.rmtree(self.sock_dir, ignore_errors=True)


class _PortTaken(Exception):
    pass


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def local_address_towards(host: str, port: int) -> str:
    """The address of this machine a server at ``host:port`` can reach us by."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, port))
        return str(s.getsockname()[0])


# --------------------------------------------------------------------------- taking a copy


@dataclass(frozen=True, slots=True)
class Taken:
    path: Path
    replid: str
    offset: int
    sha256: str
    size: int
    at: float  # wall time the data was taken


def fetch_rdb(host: str, port: int, dest: Path, timeout: float, wall: Callable[[], float] = time.time) -> Taken:
    """Receive an RDB of the server at ``host:port`` over the replication protocol (blocking:
    run it in a thread). Streams to ``dest`` (0600) and hashes as it goes."""
    import hashlib

    deadline = time.monotonic() + timeout

    def left() -> float:
        rest = deadline - time.monotonic()
        if rest <= 0:
            raise BackupError(f"{host}:{port}: the copy took longer than {timeout:g}s")
        return rest

    try:
        s = socket.create_connection((host, port), timeout=min(10.0, left()))
    except OSError as exc:
        raise BackupError(f"{host}:{port}: {exc.strerror or exc}") from None
    with s, s.makefile("rb") as f:
        def line() -> bytes:
            while True:
                s.settimeout(left())
                raw = f.readline()
                if not raw:
                    raise BackupError(f"{host}:{port}: closed the connection during the copy")
                if raw.strip():
                    return raw.rstrip(b"\r\n")  # bare newlines are keep-alives while it forks

        def cmd(*args: str) -> bytes:
            s.sendall(encode_command(*args))
            return line()

        try:
            if not cmd("REPLCONF", "capa", "eof", "capa", "psync2").startswith(b"+"):
                raise BackupError(f"{host}:{port}: REPLCONF refused")
            cmd("REPLCONF", "rdb-only", "1")  # Redis < 7: an error, and the copy still works
            head = cmd("PSYNC", "?", "-1")
            at = wall()
            if not head.startswith(b"+FULLRESYNC "):
                raise BackupError(f"{host}:{port}: refused the copy: {head.decode(errors='replace')}")
            _, replid, offset = head.decode().split()
            bulk = line()
            if not bulk.startswith(b"$"):
                raise BackupError(f"{host}:{port}: unexpected {bulk[:40]!r} instead of the RDB")
            h = hashlib.sha256()
            size = 0
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                if bulk.startswith(b"$EOF:"):
                    mark = bulk[5:]
                    held = b""
                    while True:
                        s.settimeout(left())
                        chunk = f.read1(CHUNK)
                        if not chunk:
                            raise BackupError(f"{host}:{port}: the RDB stream ended before its end mark")
                        held += chunk
                        if held.endswith(mark):
                            body = held[: -len(mark)]
                            out.write(body)
                            h.update(body)
                            size += len(body)
                            break
                        keep = len(mark)
                        if len(held) > keep:
                            body, held = held[:-keep], held[-keep:]
                            out.write(body)
                            h.update(body)
                            size += len(body)
                else:
                    remaining = int(bulk[1:])
                    while remaining:
                        s.settimeout(left())
                        chunk = f.read1(min(CHUNK, remaining))
                        if not chunk:
                            raise BackupError(f"{host}:{port}: the RDB ended {remaining} bytes early")
                        out.write(chunk)
                        h.update(chunk)
                        size += len(chunk)
                        remaining -= len(chunk)
                out.flush()
                os.fsync(out.fileno())
        except TimeoutError:
            raise BackupError(f"{host}:{port}: no data within the backup timeout ({timeout:g}s)") from None
        except OSError as exc:
            raise BackupError(f"{host}:{port}: {exc.strerror or exc}") from None
    return Taken(dest, replid, int(offset), h.hexdigest(), size, at)


def copy_aof(src_dir: Path, manifest: str, dest_dir: Path, tries: int = 5) -> list[core.AofFile]:
    """Copy a live AOF directory (blocking): manifest, base and increments; again if Redis
    rewrote it meanwhile (the manifest changed). History files are left out."""
    for _ in range(tries):
        text = (src_dir / manifest).read_text()
        files = [f for f in core.parse_manifest(text) if f.type in ("b", "i")]
        private_dir(dest_dir)
        for f in sorted(files, key=lambda f: f.type != "b"):  # the base first, increments (growing) last
            shutil.copyfile(src_dir / f.name, dest_dir / f.name)
            os.chmod(dest_dir / f.name, 0o600)
        if (src_dir / manifest).read_text() == text:
            kept = "".join(f"file {f.name} seq {f.seq} type {f.type}\n" for f in files)
            (dest_dir / manifest).write_text(kept)
            os.chmod(dest_dir / manifest, 0o600)
            return files
        shutil.rmtree(dest_dir)
    raise BackupError(f"{src_dir}: the AOF was rewritten during each of {tries} copies")


def pack(src_dir: Path, dest: Path) -> None:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w") as tar:
        tar.add(src_dir, arcname="appendonlydir")


def unpack(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    out = dest / "appendonlydir"
    if not out.is_dir():
        raise BackupError(f"{archive.name}: no appendonlydir inside")
    return out


def manifest_name(aof_dir: Path) -> str:
    found = sorted(p.name for p in aof_dir.glob("*.manifest"))
    if len(found) != 1:
        raise BackupError(f"{aof_dir}: expected one AOF manifest, found {found or 'none'}")
    return found[0]


# --------------------------------------------------------------------------- the live group


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    host: str
    port: int
    healthy: bool
    primary: bool
    link_up: bool
    position: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class LiveGroup(Protocol):
    """What backups and restores need from the running group (see :class:`ReplicatedGroup`)."""

    name: str

    def members(self) -> list[Member]: ...

    def ready(self) -> bool:
        """Scheduled work may run: this node acts for the group (lease) and a primary serves."""
        ...

    def begin_restore(self) -> None: ...

    def restoring(self) -> bool:
        """Still fenced for the restore (False: the node stepped down, its lease lost)."""
        ...

    def end_restore(self, ok: bool, position: int, detail: str, primary_intact: bool) -> None: ...

    def data_dir(self, target: str) -> Path | None: ...

    def emit(self, kind: str, target: str, old: str, new: str, reason: str) -> None: ...


class ReplicatedGroup:
    """:class:`LiveGroup` over a :class:`~fivenines.runtime.replication.ReplicationManager`."""

    def __init__(self, rm: ReplicationManager) -> None:
        self.rm = rm
        self.name = rm.g.name

    def members(self) -> list[Member]:
        from fivenines.core.health import HealthState

        out = []
        for t in self.rm.g.targets:
            st = self.rm.targets[t.id]
            obs = self.rm.observations.get(t.id, (None, 0.0))[0]
            out.append(Member(t.id, st.host, st.port, t.health.state is HealthState.HEALTHY,
                              t.id == self.rm.core.primary, bool(obs and obs.link_up),
                              obs.position if obs else -1))
        return out

    def ready(self) -> bool:
        from fivenines.core.replication import Phase

        core_ = self.rm.core
        return core_.can_act(self.rm.ctx.now()) and core_.phase is Phase.SERVING and core_.published.primary is not None

    def begin_restore(self) -> None:
        self.rm.begin_restore()

    def restoring(self) -> bool:
        from fivenines.core.replication import Phase

        return self.rm.core.phase is Phase.RESTORING and self.rm.core.can_act(self.rm.ctx.now())

    def end_restore(self, ok: bool, position: int, detail: str, primary_intact: bool) -> None:
        self.rm.end_restore(ok, position, detail, primary_intact)

    def data_dir(self, target: str) -> Path | None:
        t = self.rm.g.by_id(target)
        return self.rm.ctx.state_dir / "data" / target if t is not None and t.slot is not None else None

    def emit(self, kind: str, target: str, old: str, new: str, reason: str) -> None:
        ctx = self.rm.ctx
        ev = ctx.events.emit(ctx.wall(ctx.now()), kind, self.name, target, old, new, reason)
        log.info("%s", ev)


async def _redis(host: str, port: int, timeout: float = 5.0) -> RedisClient:
    return await RedisClient.connect(host, port, timeout)


async def _info(c: RedisClient, *sections: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for r in await c.pipeline([("INFO", s) for s in sections], timeout=10.0):
        if isinstance(r, ErrorReply):
            raise ReplyError(str(r))
        out.update(parse_info(r.decode() if isinstance(r, bytes) else str(r)))
    return out


async def _until(what: str, deadline: float, check: Callable[[], Any], every: float = 0.05) -> Any:
    """Poll ``check`` (async; returns (done, why_not)) until done or the deadline."""
    why = ""
    while True:
        done, why = await check()
        if done:
            return why
        if time.monotonic() > deadline:
            raise BackupError(f"{what}: {why}")
        await asyncio.sleep(every)


# --------------------------------------------------------------------------- the manager


class BackupManager:
    """Backups, restores and drills of one group, and the loop that schedules them."""

    def __init__(self, group: str, spec: BackupSpec, store: ObjectStore, tools: Tools, work_dir: Path, *,
                 live: LiveGroup | None = None, wall: Callable[[], float] = time.time) -> None:
        self.group, self.spec, self.store, self.tools = group, spec, store, tools
        self.work_dir, self.live, self.wall = work_dir, live, wall
        self.schedule = core.parse_schedule(spec.schedule)
        self.drill_schedule = core.parse_schedule(spec.drill) if spec.drill else None
        self.retention = Retention(spec.retention.keep_last, spec.retention.daily, spec.retention.weekly)
        self.counters = Counters()
        self.running: str | None = None
        self.paused = False  # the schedule skips its rounds (an operator's maintenance, a test's inspection)
        self.read_only = False  # the catalogue is not written (commands beside a running process)
        self.since = wall()
        self.promised_rpo = core.promised_rpo(self.schedule)  # computed once: a cron walks its fire times
        self._drill_gap = core.promised_rpo(self.drill_schedule) if self.drill_schedule else 0.0
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

    async def records(self, reload: bool = False) -> list[BackupRecord]:
        if self._records is None or reload:
            doc = await self.store.read_json(CATALOGUE)
            self._records = [] if doc is None else core.parse_catalogue(doc, self.group, f"{self.store.where}/{CATALOGUE}")
            if doc is not None and isinstance(doc.get("last_drill"), dict) and self.counters.last_drill_try is None:
                t = doc["last_drill"].get("time")
                self.counters.last_drill_try = t if isinstance(t, int | float) else None
                if doc["last_drill"].get("ok"):
                    self.counters.last_drill_ok = self.counters.last_drill_try
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

    async def _put_record(self, rec: BackupRecord) -> None:
        records = [r for r in await self.records() if r.id != rec.id]
        await self._save([*records, rec])

    def _emit(self, kind: str, target: str, old: str, new: str, reason: str) -> None:
        if self.live is not None:
            self.live.emit(kind, target, old, new, reason)
        else:
            log.info("%s %s %s: %s", self.group, kind, new, reason)

    # ------------------------------------------------------------------ checking a copy

    def _scratch_dir(self, name: str) -> Path:
        d = private_dir(self.work_dir) / f"{name}-{secrets.token_hex(4)}"
        d.mkdir(mode=0o700)
        return d

    async def _check_copy(self, path: Path, kind: Kind, tmp: Path, *, load: bool = True) -> tuple[Checks, float | None]:
        """Tool, checksum and (``load``) key count of a local copy; for AOF also the earliest
        second it covers. The copy at ``path`` is left as it was."""
        sha = await asyncio.to_thread(_sha256, path)
        covers: float | None = None
        if kind is Kind.RDB:
            tool_ok, detail = await check_rdb(self.tools, path, self.spec.timeout)
            if not load or not tool_ok:
                return Checks(tool_ok, detail, sha, None, "" if not load else "not loaded: the check failed"), None
            work = tmp / "load"
            work.mkdir(mode=0o700)
            os.link(path, work / "dump.rdb")  # the same directory tree: no copy
            server = ScratchServer(self.tools, work, rdb=work / "dump.rdb")
        else:
            work = tmp / "load"
            work.mkdir(mode=0o700)
            try:
                aof_dir = await asyncio.to_thread(unpack, path, work)
                manifest = manifest_name(aof_dir)
            except (BackupError, tarfile.TarError, OSError) as exc:
                return Checks(False, f"not an AOF archive: {exc}", sha, None, "not loaded"), None
            tool_ok, detail, out = await check_aof(self.tools, aof_dir, manifest, self.spec.timeout)
            covers = core.rdb_ctime(out)
            if covers is None:
                incr = [f for f in core.parse_manifest((aof_dir / manifest).read_text()) if f.type == "i"]
                if incr:
                    with (aof_dir / incr[0].name).open("rb") as f:
                        covers = core.first_timestamp(f.read(64))
            if not load or not tool_ok:
                return Checks(tool_ok, detail, sha, None, "" if not load else "not loaded: the check failed"), covers
            server = ScratchServer(self.tools, work, aof=True)
        try:
            await server.start(self.spec.timeout)
            keys = await server.keys()
            return Checks(tool_ok, detail, sha, keys), covers
        except (BackupError, StoreError) as exc:
            return Checks(tool_ok, detail, sha, None, str(exc)), covers
        finally:
            await server.stop()
            shutil.rmtree(work, ignore_errors=True)

    # ------------------------------------------------------------------ backup

    def _source(self) -> Member:
        if self.live is None:
            raise BackupError("taking a backup needs the running group (fivenines up)")
        members = self.live.members()
        views = [SourceView(m.id, m.healthy, m.primary, m.link_up, m.position) for m in members]
        chosen, why = core.choose_source(views, self.spec.allow_primary)
        if chosen is None:
            raise BackupError(why)
        return next(m for m in members if m.id == chosen)

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
                self._emit("backup", "", "", "failed", f"{reason}: {why}")
                raise BackupError(why) from None
            finally:
                self.running = None
            if rec.verified is Verdict.OK:
                self.counters.backups_ok += 1
                self.counters.last_ok = rec.time
                self._emit("backup", rec.source, "", "ok", f"{reason}: {rec.id}, {rec.size} bytes, {rec.keys} keys, "
                           f"offset {rec.offset}, {rec.took:.2f}s to {self.store.where}: {rec.detail}")
                if gone:
                    self._emit("backup", "", "", "deleted",
                               f"retention {self.retention}: removed {', '.join(r.id for r in gone)}")
            else:
                self.counters.backups_failed += 1
                self._emit("backup", rec.source, "", "failed", f"{reason}: {rec.id} failed verification: {rec.detail}")
            return rec

    async def _backup(self, reason: str) -> tuple[BackupRecord, list[BackupRecord]]:
        started = time.monotonic()
        src = self._source()
        tmp = self._scratch_dir("take")
        try:
            c = await _redis(src.host, src.port)
            try:
                source_keys = core.keyspace_keys(await _info(c, "keyspace"))
                if self.spec.point_in_time:
                    taken = await self._take_aof(c, src, tmp)
                else:
                    taken = await asyncio.to_thread(fetch_rdb, src.host, src.port, tmp / "copy.rdb",
                                                    self.spec.timeout, self.wall)
            finally:
                c.close()
            kind = Kind.AOF if self.spec.point_in_time else Kind.RDB
            checks, covers = await self._check_copy(taken.path, kind, tmp)
            records = await self.records()
            bid = core.new_backup_id(self.group, taken.at, [r.id for r in records])
            key = f"{bid}.{'aof.tar' if kind is Kind.AOF else 'rdb'}"
            rec = BackupRecord(bid, self.group, taken.at, kind, src.id, key, size=taken.size, offset=taken.offset,
                               sha256=taken.sha256, keys=checks.loaded_keys, covers_from=covers,
                               source_keys=source_keys)
            verdict, detail = core.judge(checks, expected_sha256=taken.sha256, source_keys=source_keys)
            if verdict is Verdict.OK:
                await self.store.put_file(key, taken.path)
                stored = await self.store.sha256(key)  # read back from the store
                verdict, detail = core.judge(Checks(checks.tool_ok, checks.tool_detail, stored, checks.loaded_keys),
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
        before = await _info(c, "persistence")
        if before.get("aof_enabled") != "1":  # a server started before point_in_time was set
            await c.execute("CONFIG", "SET", "aof-timestamp-enabled", "yes", "appendonly", "yes", timeout=5.0)
            await _until(f"{src.id}: AOF being enabled", time.monotonic() + self.spec.timeout,
                         lambda: self._aof_ready(c, before))
        else:
            await c.execute("CONFIG", "SET", "aof-timestamp-enabled", "yes", timeout=5.0)
        info = await _info(c, "replication")
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
        return Taken(archive, info.get("master_replid", ""), offset, await asyncio.to_thread(_sha256, archive),
                     archive.stat().st_size, at)

    async def _aof_ready(self, c: RedisClient, before: dict[str, str]) -> tuple[bool, str]:
        now = await _info(c, "persistence")
        why = core.aof_rewritten(before, now)
        return why is None and now.get("aof_enabled") == "1", why or "AOF not enabled yet"

    async def verify(self, backup_id: str) -> BackupRecord:
        """Check a stored backup again (fetch, checksum, tool, key count); the catalogue keeps the verdict."""
        async with self._lock:
            rec = next((r for r in await self.records(reload=True) if r.id == backup_id), None)
            if rec is None:
                raise BackupError(f"no backup {backup_id!r} in the catalogue of {self.group!r}")
            checks = await self._fetch_and_check(rec)
            verdict, detail = core.judge(checks, expected_sha256=rec.sha256, expected_keys=rec.keys)
            rec = core.with_verdict(rec, verdict, detail)
            await self._put_record(rec)
            self._emit("backup", rec.source, "", f"verified {verdict.value}", f"{rec.id}: {detail}")
            return rec

    async def _fetch_and_check(self, rec: BackupRecord, tmp: Path | None = None) -> Checks:
        """Fetch a stored backup and check it: loaded into a scratch server, unless ``tmp`` is
        given (a restore: the copy stays in ``tmp``/copy and is loaded by the restore itself)."""
        work = tmp or self._scratch_dir("verify")
        path = work / ("copy.aof.tar" if rec.kind is Kind.AOF else "copy.rdb")
        try:
            if not rec.key:
                raise BackupError("not stored (it failed verification when taken)")
            await self.store.get_file(rec.key, path)
            checks, _ = await self._check_copy(path, rec.kind, work, load=tmp is None)
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
        gone = core.to_delete(records, self.retention)
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
                result = await self._restore(from_id, at, timeout)
            except RestoreRefused as exc:
                self._emit("recovery", "", "", "refused", str(exc))
                raise
            except (BackupError, StoreError, OSError) as exc:
                self.counters.restores_failed += 1
                self._emit("recovery", "", "", "failed", str(exc))
                raise BackupError(str(exc)) from None
            finally:
                self.running = None
            self.counters.restores_ok += 1
            return result

    async def _restore(self, from_id: str | None, at: float | None, timeout: float) -> dict[str, Any]:
        assert self.live is not None
        started = time.monotonic()
        deadline = started + timeout
        records = await self.records(reload=True)
        choice = core.choose_backup(records, self.group, from_id=from_id, at=at, now=self.wall())
        rec = choice.record
        members = self.live.members()
        primary = next((m for m in members if m.primary), None)
        if primary is None:
            raise RestoreRefused(f"{self.group} has no primary now; restore once it has one")
        replicas = [m for m in members if not m.primary]
        pc = await _redis(primary.host, primary.port)
        try:
            aof_on = (await _info(pc, "persistence")).get("aof_enabled") == "1"
        except StoreError as exc:
            pc.close()
            raise RestoreRefused(f"the primary {primary.id} does not answer: {exc}") from None
        plan = core.restore_plan(choice, primary.id, [m.id for m in replicas], {primary.id: aof_on})
        steps: list[dict[str, Any]] = []
        tmp = self._scratch_dir("restore")
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
                if fenced and not self.live.restoring():
                    raise BackupError(f"stopped before {k.value}: this node no longer acts for the group "
                                      "(lease lost); the new leader takes over")
                if k is StepKind.VERIFY:
                    checks = await self._fetch_and_check(rec, tmp)
                    verdict, detail = core.judge(checks, expected_sha256=rec.sha256, loaded=False)
                    if verdict is not Verdict.OK:
                        await self._put_record(core.with_verdict(rec, Verdict.FAILED, f"at restore: {detail}"))
                        raise RestoreRefused(f"backup {rec.id} failed verification at restore: {detail}; "
                                             "nothing was changed")
                    done(k, t0, detail)
                elif k is StepKind.START_SOURCE:
                    source = await self._start_source(rec, choice, tmp, primary)
                    done(k, t0, source.address or "")
                elif k is StepKind.CHECK_SOURCE:
                    assert source is not None
                    keys = await source.keys()
                    why = core.source_ok(keys, choice)
                    if why:
                        raise RestoreRefused(f"{why}; nothing was changed")
                    done(k, t0, f"{keys} keys")
                elif k is StepKind.FENCE:
                    try:
                        self.live.begin_restore()
                    except Exception as exc:  # ReplicationError: not serving, not the leader
                        raise RestoreRefused(f"{exc}; nothing was changed") from None
                    fenced = True
                    done(k, t0)
                elif k is StepKind.HOLD_REPLICAS:
                    for m in replicas:
                        try:
                            await self._cmd(m, "REPLICAOF", "127.0.0.1", "0")
                        except StoreError as exc:
                            notes.append(f"{m.id} not held ({exc}): it resyncs when it is back")
                    done(k, t0)
                elif k is StepKind.LOAD_PRIMARY:
                    assert source is not None and source.address is not None
                    before = await _info(pc, "persistence")
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
                    await _until(f"{primary.id} loading the backup", deadline,
                                 functools.partial(self._primary_loaded, pc, want, src_off))
                    done(k, t0, f"{want} keys")
                elif k is StepKind.DETACH_PRIMARY:
                    await pc.execute("REPLICAOF", "NO", "ONE", timeout=5.0)
                    await pc.execute("CONFIG", "SET", "masterauth", masterauth or "", timeout=5.0)
                    masterauth = None
                    position = int((await _info(pc, "replication")).get("master_repl_offset", "0"))
                    done(k, t0, f"position {position}")
                elif k is StepKind.REWRITE_AOF:
                    await _until(f"{primary.id} AOF rewrite", deadline,
                                 functools.partial(self._aof_ready, pc, before))
                    done(k, t0)
                elif k is StepKind.RESYNC_REPLICAS:
                    if rec.size >= BATCH_SYNC_BYTES:
                        saved = await self._one_transfer(pc, len(replicas))
                    for m in replicas:
                        try:
                            await self._cmd(m, "REPLICAOF", primary.host, str(primary.port))
                        except StoreError as exc:
                            notes.append(f"{m.id} not re-pointed ({exc}): fivenines re-points it when it is back")
                    done(k, t0)
                elif k is StepKind.CHECK_REPLICAS:
                    states = await self._replicas_in_sync(pc, primary, replicas, deadline)
                    if saved:
                        await pc.execute("CONFIG", "SET", *saved, timeout=5.0)
                        saved = []
                    notes += [f"{i}: {s}" for i, s in states.items() if s != "in sync"]
                    done(k, t0, ", ".join(f"{i} {s}" for i, s in states.items()))
                elif k is StepKind.UNFENCE:
                    detail = f"{choice.note}; {rec.keys if choice.truncate_to is None else 'replayed'} keys"
                    self.live.end_restore(True, position, detail, True)
                    fenced = False
                    done(k, t0)
                elif k is StepKind.STOP_SOURCE:
                    if source is not None:
                        await source.stop()
                    done(k, t0)
        except BaseException as exc:
            if fenced:
                self.live.end_restore(False, 0, str(exc) or type(exc).__name__, not loaded)
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
        keys = await self._keys_of(primary)
        result = {"group": self.group, "backup": rec.id, "kind": rec.kind.value, "note": choice.note,
                  "restored_to": core.iso(choice.truncate_to if choice.truncate_to is not None else rec.time),
                  "primary": primary.id, "keys": keys, "position": position, "rto_s": round(seconds, 3),
                  "steps": steps, "notes": notes}
        self._emit("recovery", primary.id, "", "restored",
                   f"{choice.note}: {keys} keys in {seconds:.2f}s" + (f"; {'; '.join(notes)}" if notes else ""))
        return result

    async def _start_source(self, rec: BackupRecord, choice: Choice, tmp: Path, primary: Member) -> ScratchServer:
        path = tmp / ("copy.aof.tar" if rec.kind is Kind.AOF else "copy.rdb")
        work = tmp / "source"
        work.mkdir(mode=0o700)
        if rec.kind is Kind.RDB:
            shutil.move(str(path), work / "dump.rdb")
            server = ScratchServer(self.tools, work, rdb=work / "dump.rdb",
                                   tcp=local_address_towards(primary.host, primary.port))
        else:
            aof_dir = await asyncio.to_thread(unpack, path, work)
            if choice.truncate_to is not None:
                rc, out = await run_tool([self.tools.check_aof, "--truncate-to-timestamp", str(int(choice.truncate_to)),
                                          str(aof_dir / manifest_name(aof_dir))], self.spec.timeout)
                if rc != 0:
                    raise RestoreRefused(f"redis-check-aof could not truncate to {core.iso(choice.truncate_to)}: "
                                         f"{_tail(out)}; nothing was changed")
            server = ScratchServer(self.tools, work, aof=True, tcp=local_address_towards(primary.host, primary.port))
        try:
            await server.start(self.spec.timeout)
        except BackupError as exc:
            raise RestoreRefused(f"the backup does not load: {exc}; nothing was changed") from None
        return server

    async def _one_transfer(self, pc: RedisClient, replicas: int) -> list[str]:
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

    async def _cmd(self, m: Member, *args: str) -> Any:
        c = await _redis(m.host, m.port, 3.0)
        try:
            return await c.execute(*args, timeout=5.0)
        finally:
            c.close()

    async def _keys_of(self, m: Member) -> int:
        c = await _redis(m.host, m.port, 3.0)
        try:
            return core.keyspace_keys(await _info(c, "keyspace"))
        finally:
            c.close()

    async def _primary_loaded(self, pc: RedisClient, keys: int, source_offset: int) -> tuple[bool, str]:
        info = await _info(pc, "replication", "keyspace", "persistence")
        if info.get("master_link_status") != "up" or info.get("master_sync_in_progress") != "0":
            return False, "still syncing from the scratch server"
        if info.get("loading") == "1":
            return False, "loading"
        if int(info.get("slave_repl_offset", "-1")) < source_offset:
            return False, f"at offset {info.get('slave_repl_offset')}, the scratch server at {source_offset}"
        have = core.keyspace_keys(info)
        if have != keys:
            return False, f"holds {have} keys, the backup {keys}"
        return True, ""

    async def _replicas_in_sync(self, pc: RedisClient, primary: Member, replicas: list[Member],
                                deadline: float) -> dict[str, str]:
        states: dict[str, str] = {}
        for m in replicas:
            async def check(m: Member = m) -> tuple[bool, str]:
                p = await _info(pc, "replication", "keyspace")
                try:
                    c = await _redis(m.host, m.port, 2.0)
                except StoreError as exc:
                    return False, f"unreachable: {exc}"
                try:
                    r = await _info(c, "replication", "keyspace")
                finally:
                    c.close()
                why = core.in_sync(p, r, primary.address, core.keyspace_keys(p), core.keyspace_keys(r))
                return why is None, why or ""
            try:
                await _until(f"{m.id} resync", deadline, check)
                states[m.id] = "in sync"
            except BackupError as exc:
                states[m.id] = f"not in sync: {exc}"
        return states

    # ------------------------------------------------------------------ drill

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
        self._emit("drill", "", "", "ok" if result.ok else "failed",
                   f"{result.backup}: {result.detail}; RPO {_secs(result.rpo)}, RTO {_secs(result.rto)}")
        return result

    async def _drill(self) -> DrillResult:
        at = self.wall()
        started = time.monotonic()
        try:
            rec = core.latest_verified(await self.records(reload=True), self.group)
        except (RestoreRefused, BackupError) as exc:
            return DrillResult(False, at, None, None, None, None, str(exc))
        checks = await self._fetch_and_check(rec)
        rto = time.monotonic() - started
        verdict, detail = core.judge(checks, expected_sha256=rec.sha256, expected_keys=rec.keys)
        rpo = at - rec.time
        if verdict is not Verdict.OK:
            await self._put_record(core.with_verdict(rec, Verdict.FAILED, f"at drill: {detail}"))
        return DrillResult(verdict is Verdict.OK, at, rec.id, rpo, rto, checks.loaded_keys, detail)

    # ------------------------------------------------------------------ the schedule

    def next_backup(self) -> float:
        c = self.counters
        return core.next_run(self.schedule, last_ok=c.last_ok, last_try=c.last_try, since=self.since,
                             retry=min(60.0, self.promised_rpo))

    def next_drill(self) -> float | None:
        if self.drill_schedule is None:
            return None
        c = self.counters
        return core.next_run(self.drill_schedule, last_ok=c.last_drill_ok, last_try=c.last_drill_try,
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
            "next_backup_in_s": round(max(0.0, self.next_backup() - now), 3),
            "backups_ok": c.backups_ok, "backups_failed": c.backups_failed, "deleted": c.deleted,
            "restores_ok": c.restores_ok, "restores_failed": c.restores_failed,
            "drills_ok": c.drills_ok, "drills_failed": c.drills_failed,
            "last_drill": c.last_drill.to_json() if c.last_drill else None,
            "last_drill_ok": core.iso(c.last_drill_ok) if c.last_drill_ok else None,
            "next_drill_in_s": round(max(0.0, nd - now), 3) if nd is not None else None,
        }


def _secs(x: float | None) -> str:
    return "?" if x is None else f"{x:.2f}s"


def _sha256(path: Path) -> str:
    from fivenines.runtime.backup_store import sha256_file

    return sha256_file(path)


def offline_manager(spec: BackupSpec, group: str, base_dir: Path, work_dir: Path,
                    redis_hint: str | None = None) -> BackupManager:
    """A manager on the store alone (no running group): list, verify, drill."""
    return BackupManager(group, spec, open_store(spec, group, base_dir), Tools.find(redis_hint), work_dir)


# --------------------------------------------------------------------------- the admin API's side


async def admin_call(backups: BackupManager | None, group: str, action: str,
                     query: dict[str, str]) -> tuple[int, Any]:
    """What the admin routes answer (status code, JSON body):

    * ``POST /target_groups/G/backup``: take one now (200 with the record; 500 when it failed);
    * ``GET /target_groups/G/backups``: the catalogue, newest first;
    * ``POST /target_groups/G/verify?id=ID``: check a stored backup again;
    * ``POST /target_groups/G/restore?from=ID`` or ``?at=TIME``: restore into the group
      (409 refused, nothing changed; 500 failed part-way, see the events);
    * ``POST /target_groups/G/drill``: a restore drill into a scratch server.
    """
    if backups is None:
        return 409, {"error": f"target group {group!r} has no backup: section (replicated.backup)"}
    try:
        if action == "backup":
            rec = await backups.backup("operator")
            return (200 if rec.verified is Verdict.OK else 500), rec.to_json()
        if action == "backups":
            records = await backups.records(reload=True)
            return 200, {"group": group, "to": backups.store.where,
                         "backups": [r.to_json() for r in reversed(records)]}
        if action == "verify":
            rec = await backups.verify(query.get("id", ""))
            return (200 if rec.verified is Verdict.OK else 500), rec.to_json()
        if action == "restore":
            at = core.parse_time(query["at"], backups.wall()) if query.get("at") else None
            return 200, await backups.restore(from_id=query.get("from") or None, at=at)
        if action == "drill":
            result = await backups.drill()
            return (200 if result.ok else 500), result.to_json()
    except RestoreRefused as exc:
        return 409, {"error": str(exc)}
    except BackupError as exc:
        return 500, {"error": str(exc)}
    return 404, {"error": f"no backup action {action!r}"}
