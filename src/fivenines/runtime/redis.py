"""Redis, the built-in replicated store: a minimal asyncio RESP client and the store adapter.

The client speaks RESP2 over one connection, on an asyncio protocol: commands are
pipelined in order and each reply resolves the oldest waiting future. The parser
is sans-IO (:class:`RespParser`: bytes in, values out) and tested on its own.

The adapter (:class:`RedisStore`) carries out what :mod:`fivenines.core.replication`
decides, with the commands Redis has for it:

* observe: ``INFO replication`` → role, replication offset (the position), the
  primary a replica follows and whether its link is up, the replicas of a primary;
* promote: ``REPLICAOF NO ONE``; follow (and fence): ``REPLICAOF host port``; park: ``REPLICAOF 127.0.0.1 0``;
* switchover: ``CLIENT PAUSE ms WRITE`` / ``CLIENT UNPAUSE``;
* durability: ``CONFIG SET min-replicas-to-write`` and ``min-replicas-max-lag`` on
  every server at every (re)connection, so a primary in ``sync`` mode refuses writes
  when no replica is attached and fresh, instead of taking them unprotected.

Clients get their acknowledgement from ``WAIT`` (see docs/replication.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from fivenines.core.replication import Durability, Observation, StoreRole
from fivenines.errors import ProtocolError
from fivenines.runtime.store import StoreError, StoreTarget, StoreTimeout, StoreUnreachable


class ReplyError(StoreError):
    """The server answered with an error reply (``-ERR ...``)."""


# --------------------------------------------------------------------------- RESP, sans-IO


class RespProtocolError(StoreError, ProtocolError):
    """The server's answer is not RESP."""


class _Incomplete(Exception):
    pass


class ErrorReply(str):
    """An error reply as a value (``-NOREPLICAS Not enough good replicas to write.``)."""


def encode_command(*args: str | bytes | int | float) -> bytes:
    """One command as a RESP array of bulk strings.

    >>> encode_command("SET", "k", 1)
    b'*3\\r\\n$3\\r\\nSET\\r\\n$1\\r\\nk\\r\\n$1\\r\\n1\\r\\n'
    """
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _line(buf: bytes | bytearray, pos: int) -> tuple[bytes, int]:
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    return bytes(buf[pos:end]), end + 2


def _parse(buf: bytes | bytearray, pos: int) -> tuple[Any, int]:
    if pos >= len(buf):
        raise _Incomplete
    kind = buf[pos : pos + 1]
    line, nxt = _line(buf, pos + 1)
    if kind == b"+":
        return line.decode("utf-8", "replace"), nxt
    if kind == b"-":
        return ErrorReply(line.decode("utf-8", "replace")), nxt
    try:
        n = int(line)
    except ValueError:
        raise RespProtocolError(f"bad RESP length/integer {line[:40]!r}") from None
    if kind == b":":
        return n, nxt
    if kind == b"$":
        if n < 0:
            return None, nxt
        if len(buf) < nxt + n + 2:
            raise _Incomplete
        if buf[nxt + n : nxt + n + 2] != b"\r\n":
            raise RespProtocolError("bulk string not terminated by CRLF")
        return bytes(buf[nxt : nxt + n]), nxt + n + 2
    if kind == b"*":
        if n < 0:
            return None, nxt
        items = []
        for _ in range(n):
            item, nxt = _parse(buf, nxt)
            items.append(item)
        return items, nxt
    raise RespProtocolError(f"unknown RESP type {kind!r}")


class RespParser:
    """Feed bytes, get complete replies.

    >>> p = RespParser()
    >>> p.feed(b"+OK\\r\\n:4")
    ['OK']
    >>> p.feed(b"2\\r\\n$3\\r\\nab")
    [42]
    >>> p.feed(b"c\\r\\n*2\\r\\n$-1\\r\\n-ERR no\\r\\n")
    [b'abc', [None, 'ERR no']]
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buf += data
        out: list[Any] = []
        while self._buf:
            try:
                value, pos = _parse(self._buf, 0)
            except _Incomplete:
                break
            del self._buf[:pos]
            out.append(value)
        return out


# --------------------------------------------------------------------------- the client


class _RespProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = RespParser()
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            values = self.parser.feed(data)
        except RespProtocolError as exc:
            self._fail(exc)
            if self.transport:
                self.transport.close()
            return
        for v in values:
            if not self.waiters:
                continue  # an unsolicited reply: ignore
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(v)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(StoreUnreachable(f"connection closed: {exc}" if exc else "connection closed by the server"))

    def _fail(self, exc: BaseException) -> None:
        self.closed = exc
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)


class RedisClient:
    """One RESP connection. A timed-out command closes it (replies would be out of order)."""

    def __init__(self, host: str, port: int, transport: asyncio.Transport, proto: _RespProtocol) -> None:
        self.host, self.port = host, port
        self._transport = transport
        self._proto = proto

    @classmethod
    async def connect(cls, host: str, port: int, timeout: float) -> RedisClient:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, proto = await loop.create_connection(_RespProtocol, host, port)
        except TimeoutError:
            raise StoreTimeout(f"{host}:{port}: no connection in {timeout:g}s") from None
        except OSError as exc:
            raise StoreUnreachable(f"{host}:{port}: {exc.strerror or exc}") from None
        return cls(host, port, transport, proto)

    @property
    def usable(self) -> bool:
        return self._proto.closed is None and not self._transport.is_closing()

    async def execute(self, *args: str | bytes | int | float, timeout: float | None = None) -> Any:
        """Send one command and return its reply; an error reply raises :class:`ReplyError`."""
        [reply] = await self.pipeline([args], timeout=timeout)
        if isinstance(reply, ErrorReply):
            raise ReplyError(str(reply))
        return reply

    async def pipeline(self, commands: Sequence[Sequence[str | bytes | int | float]],
                       timeout: float | None = None) -> list[Any]:
        """Send several commands at once; replies in order (error replies as :class:`ErrorReply`)."""
        if not self.usable:
            raise StoreUnreachable(f"{self.host}:{self.port}: connection closed")
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in commands]
        self._proto.waiters.extend(futs)
        self._transport.write(b"".join(encode_command(*c) for c in commands))
        try:
            async with asyncio.timeout(timeout):
                return [await f for f in futs]
        except TimeoutError:
            self.close()
            raise StoreTimeout(f"{self.host}:{self.port}: no reply in {timeout:g}s") from None
        finally:
            for f in futs:
                if not f.done():
                    f.cancel()  # not awaited any more: the connection's end must not fail it unseen
                elif not f.cancelled():
                    f.exception()  # retrieved

    def close(self) -> None:
        self._transport.close()

    def __repr__(self) -> str:
        return f"<RedisClient {self.host}:{self.port} {'open' if self.usable else 'closed'}>"


# --------------------------------------------------------------------------- INFO replication


def parse_info(text: str) -> dict[str, str]:
    """``INFO`` text as a flat mapping.

    >>> parse_info("# Replication\\r\\nrole:master\\r\\nconnected_slaves:0\\r\\n")
    {'role': 'master', 'connected_slaves': '0'}
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        k, _, v = line.partition(":")
        out[k.strip()] = v.strip()
    return out


def observation_from_info(info: dict[str, str]) -> Observation:
    """Role and position from ``INFO replication``.

    >>> observation_from_info({"role": "slave", "master_host": "127.0.0.1", "master_port": "7001",
    ...                        "master_link_status": "up", "slave_repl_offset": "420"})
    Observation(role=<StoreRole.REPLICA: 'replica'>, position=420, following='127.0.0.1:7001', link_up=True, replicas=(), incarnation=None)
    >>> observation_from_info({"role": "master", "master_repl_offset": "9",
    ...                        "slave0": "ip=127.0.0.1,port=7002,state=online,offset=9,lag=0"}).replicas
    ('127.0.0.1:7002',)
    """
    role = info.get("role")
    incarnation = info.get("run_id")
    if role == "master":
        replicas = []
        for k, v in info.items():
            if k.startswith("slave") and k[5:].isdigit():
                fields = dict(p.split("=", 1) for p in v.split(",") if "=" in p)
                if "ip" in fields and "port" in fields:
                    replicas.append(f"{fields['ip']}:{fields['port']}")
        return Observation(StoreRole.PRIMARY, int(info.get("master_repl_offset", "0")), replicas=tuple(replicas),
                           incarnation=incarnation)
    if role == "slave":
        following = f"{info.get('master_host', '')}:{info.get('master_port', '')}"
        return Observation(StoreRole.REPLICA, int(info.get("slave_repl_offset", "0")), following,
                           info.get("master_link_status") == "up", incarnation=incarnation)
    raise StoreError(f"INFO replication has no known role: {role!r}")


# --------------------------------------------------------------------------- the store adapter

PARKED = ("127.0.0.1", "0")  # where a parked replica "replicates from": no server can listen there
PARKED_AT = ":".join(PARKED)  # what a parked replica reports following


class RedisStore:
    """Observe, promote, follow and pause Redis servers; one kept-open connection per server."""

    def __init__(self, durability: Durability, max_lag_seconds: int) -> None:
        self.durability = durability
        self.max_lag_seconds = max_lag_seconds
        self._clients: dict[tuple[str, int], RedisClient] = {}
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self.config_errors: list[str] = []

    def durability_config(self) -> list[str]:
        n = 1 if self.durability is Durability.SYNC else 0
        return ["min-replicas-to-write", str(n), "min-replicas-max-lag", str(self.max_lag_seconds)]

    def start_args(self, data_dir: Path, follow: tuple[str, int] | None) -> list[str]:
        """Options appended to a redis-server command line fivenines starts."""
        data_dir.mkdir(parents=True, exist_ok=True)
        args = ["--dir", str(data_dir), "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
        cfg = self.durability_config()
        for i in range(0, len(cfg), 2):
            args += [f"--{cfg[i]}", cfg[i + 1]]
        if follow is not None:
            args += ["--replicaof", follow[0], str(follow[1])]
        return args

    async def _client(self, host: str, port: int, timeout: float) -> RedisClient:
        key = (host, port)
        c = self._clients.get(key)
        if c is not None and c.usable:
            return c
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            c = self._clients.get(key)
            if c is not None and c.usable:
                return c
            c = await RedisClient.connect(host, port, timeout)
            try:
                await c.execute("CONFIG", "SET", *self.durability_config(), timeout=timeout)
            except ReplyError as exc:
                self.config_errors.append(f"{host}:{port}: {exc}")
            except StoreError:
                c.close()
                raise
            self._clients[key] = c
            return c

    async def _run(self, t: StoreTarget, timeout: float, *args: str | int) -> Any:
        c = await self._client(t.host, t.port, timeout)
        return await c.execute(*args, timeout=timeout)

    async def observe(self, t: StoreTarget, timeout: float) -> Observation:
        c = await self._client(t.host, t.port, timeout)
        replies = await c.pipeline([("INFO", "server"), ("INFO", "replication")], timeout=timeout)
        info: dict[str, str] = {}
        for r in replies:
            if isinstance(r, ErrorReply):
                raise ReplyError(str(r))
            info.update(parse_info(r.decode() if isinstance(r, bytes) else str(r)))
        return observation_from_info(info)

    async def promote(self, t: StoreTarget, timeout: float) -> None:
        await self._run(t, timeout, "REPLICAOF", "NO", "ONE")

    async def follow(self, t: StoreTarget, primary: StoreTarget, timeout: float) -> None:
        await self._run(t, timeout, "REPLICAOF", primary.host, primary.port)

    async def park(self, t: StoreTarget, timeout: float) -> None:
        """Detach a replica from its primary, keeping its data, replication id and offset:
        ``REPLICAOF`` an address nothing listens on (port 0 of its own loopback). It acknowledges
        nothing more to the old primary (whose ``WAIT`` then counts it out), its position stays
        put while it is compared, and following the one promoted later is a partial resync
        (PSYNC from the offset it has), as from the lost primary."""
        await self._run(t, timeout, "REPLICAOF", *PARKED)

    async def pause_writes(self, t: StoreTarget, seconds: float, timeout: float) -> None:
        await self._run(t, timeout, "CLIENT", "PAUSE", max(1, round(seconds * 1000)), "WRITE")

    async def resume_writes(self, t: StoreTarget, timeout: float) -> None:
        await self._run(t, timeout, "CLIENT", "UNPAUSE")

    def drop(self, t: StoreTarget) -> None:
        """Forget the connection to a server (it was cut off or restarted)."""
        c = self._clients.pop((t.host, t.port), None)
        if c is not None:
            c.close()

    async def close(self) -> None:
        for c in self._clients.values():
            with contextlib.suppress(Exception):
                c.close()
        self._clients.clear()
