"""Taking a copy of a live Redis server.

**Without stalling the primary.** The copy comes from a healthy replica over Redis' own
replication protocol (:func:`fetch_rdb`): fivenines connects to the replica as one more
replica would (``REPLCONF capa eof``, ``REPLCONF rdb-only 1``, ``PSYNC ? -1``) and
receives the RDB the replica's forked child streams (diskless). The primary is not
involved at all; the replica forks (copy-on-write) and keeps replicating meanwhile.
The ``+FULLRESYNC <replid> <offset>`` line gives the exact replication offset the copy
holds. The replica refuses (``NOMASTERLINK``) while it is not linked to its primary,
so a copy is never taken from a replica that lost its primary and might be stale or
empty. (``BGSAVE`` + copying ``dump.rdb`` would need the replica's files on this
machine; ``redis-cli --rdb`` does the same as this but does not report the offset.)

With ``point_in_time: true`` the replica's AOF directory (RDB base + increments with
``#TS:`` timestamps) is copied instead (:func:`copy_aof`; instances fivenines runs: their
files are here) and packed as a tar (:func:`pack`, :func:`unpack`).
"""

from __future__ import annotations

import os
import shutil
import socket
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fivenines.core.backup import BackupError
from fivenines.core.backup_verify import AofFile, parse_manifest
from fivenines.runtime.backup_store import private_dir
from fivenines.runtime.redis import encode_command

CHUNK = 1 << 20


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


def copy_aof(src_dir: Path, manifest: str, dest_dir: Path, tries: int = 5) -> list[AofFile]:
    """Copy a live AOF directory (blocking): manifest, base and increments; again if Redis
    rewrote it meanwhile (the manifest changed). History files are left out."""
    for _ in range(tries):
        text = (src_dir / manifest).read_text()
        files = [f for f in parse_manifest(text) if f.type in ("b", "i")]
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


__all__ = ["Taken", "copy_aof", "fetch_rdb", "manifest_name", "pack", "unpack"]
