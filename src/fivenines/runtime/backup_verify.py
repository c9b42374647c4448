"""Checking a copy: the Redis check tools and a scratch ``redis-server`` of fivenines' own.

* :class:`Tools`: ``redis-server``, ``redis-check-rdb`` and ``redis-check-aof``, found beside
  the group's ``redis-server`` or on the PATH; :func:`check_rdb`, :func:`check_aof` run them
  (a last AOF increment cut inside a command, copied while Redis appended to it, is
  truncated to its last whole command first);
* :class:`ScratchServer`: a ``redis-server`` in a private temporary directory that loads
  one copy (``--port 0``: a unix socket only; with ``tcp``, also a TCP port with a random
  password, as the source of a restore) and reports its key count;
* :func:`check_copy`: tool, checksum and key count of a local copy, for the verdict
  (:func:`fivenines.core.backup_verify.judge`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fivenines.core import backup_verify as verdicts
from fivenines.core.backup import BackupError, Kind
from fivenines.core.backup_verify import Checks
from fivenines.runtime.backup_copy import manifest_name, unpack
from fivenines.runtime.backup_store import sha256_file
from fivenines.runtime.redis import RedisClient, _RespProtocol, parse_info
from fivenines.runtime.store import StoreError
from fivenines.runtime.supervisor import die_with_parent

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


def tail(text: str, lines: int = 3) -> str:
    return " | ".join(x.strip() for x in text.strip().splitlines()[-lines:])


async def check_rdb(tools: Tools, path: Path, timeout: float) -> tuple[bool, str]:
    rc, out = await run_tool([tools.check_rdb, str(path)], timeout)
    return rc == 0, ("RDB looks OK" if rc == 0 else tail(out))


async def check_aof(tools: Tools, aof_dir: Path, manifest: str, timeout: float) -> tuple[bool, str, str]:
    """redis-check-aof on a copied AOF directory; a last increment cut inside a command (copied
    while Redis appended) is truncated to its last whole command first. (ok, detail, output)."""
    files = verdicts.parse_manifest((aof_dir / manifest).read_text())
    rc, out = await run_tool([tools.check_aof, str(aof_dir / manifest)], timeout)
    if rc != 0:
        torn = verdicts.torn_tail(verdicts.parse_check_aof(out), files)
        if torn is not None:
            os.truncate(aof_dir / torn.file, torn.ok_up_to)
            rc, out = await run_tool([tools.check_aof, str(aof_dir / manifest)], timeout)
    return rc == 0, ("AOF valid" if rc == 0 else tail(out)), out


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
                                  f"{tail(text)}")
            if time.monotonic() > deadline:
                await self.stop()
                raise BackupError(f"redis-server did not finish loading the copy in time: {tail(self._log())}")
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
        return verdicts.keyspace_keys(await self.info("keyspace"))

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


async def check_copy(tools: Tools, path: Path, kind: Kind, tmp: Path, timeout: float, *,
                     load: bool = True) -> tuple[Checks, float | None]:
    """Tool, checksum and (``load``) key count of a local copy; for AOF also the earliest
    second it covers. The copy at ``path`` is left as it was."""
    sha = await asyncio.to_thread(sha256_file, path)
    covers: float | None = None
    if kind is Kind.RDB:
        tool_ok, detail = await check_rdb(tools, path, timeout)
        if not load or not tool_ok:
            return Checks(tool_ok, detail, sha, None, "" if not load else "not loaded: the check failed"), None
        work = tmp / "load"
        work.mkdir(mode=0o700)
        os.link(path, work / "dump.rdb")  # the same directory tree: no copy
        server = ScratchServer(tools, work, rdb=work / "dump.rdb")
    else:
        work = tmp / "load"
        work.mkdir(mode=0o700)
        try:
            aof_dir = await asyncio.to_thread(unpack, path, work)
            manifest = manifest_name(aof_dir)
        except (BackupError, tarfile.TarError, OSError) as exc:
            return Checks(False, f"not an AOF archive: {exc}", sha, None, "not loaded"), None
        tool_ok, detail, out = await check_aof(tools, aof_dir, manifest, timeout)
        covers = verdicts.rdb_ctime(out)
        if covers is None:
            incr = [f for f in verdicts.parse_manifest((aof_dir / manifest).read_text()) if f.type == "i"]
            if incr:
                with (aof_dir / incr[0].name).open("rb") as f:
                    covers = verdicts.first_timestamp(f.read(64))
        if not load or not tool_ok:
            return Checks(tool_ok, detail, sha, None, "" if not load else "not loaded: the check failed"), covers
        server = ScratchServer(tools, work, aof=True)
    try:
        await server.start(timeout)
        keys = await server.keys()
        return Checks(tool_ok, detail, sha, keys), covers
    except (BackupError, StoreError) as exc:
        return Checks(tool_ok, detail, sha, None, str(exc)), covers
    finally:
        await server.stop()
        shutil.rmtree(work, ignore_errors=True)


__all__ = ["ScratchServer", "Tools", "check_aof", "check_copy", "check_rdb", "local_address_towards", "run_tool", "tail"]
