"""An etcd v3 lease with a fencing token, over etcd's JSON gRPC gateway (HTTP), on asyncio.

Several fivenines nodes managing one replicated group agree on one leader:

* a node grants itself a lease (``/v3/lease/grant``) and creates the leader key
  attached to it in a transaction that succeeds only if the key does not exist
  (``/v3/kv/txn``, compare ``create_revision == 0``); the revision of that
  transaction is its **fencing token**;
* it renews the lease (``/v3/lease/keepalive``) every ``ttl / 6`` and may act only
  until :func:`~fivenines.core.replication.lease_valid_until` of the last renewal it
  *sent*, safely before etcd can expire the lease;
* every change of primary is first written to the primary record in a
  transaction that compares the leader key's ``create_revision`` with the token, so a
  node that lost the lease (even one that does not know it yet) can never record a
  promotion; a new leader starts from that record.

Keys and values are base64 in the JSON API. The decisions (when to stop routing,
what a new leader does) are in :mod:`fivenines.core.replication`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools

from fivenines.core.replication import lease_valid_until, renew_every
from fivenines.errors import ConflictError, ProviderError

log = logging.getLogger("fivenines.lease")


class EtcdError(ProviderError):
    """etcd did not answer, or answered with an error."""


class LeaseLost(ConflictError):
    """This node no longer holds the lease (a fenced write was refused)."""


def b64(text: str | bytes) -> str:
    """etcd's JSON API carries keys and values in base64.

    >>> b64("/a")
    'L2E='
    """
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


class _Response(asyncio.Protocol):
    def __init__(self, request: bytes, done: asyncio.Future[tuple[int, bytes]]) -> None:
        self._request = request
        self._done = done
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self._request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self._done.done():
                self._done.set_exception(EtcdError(f"bad HTTP response: {exc}"))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._done.done():
            self._done.set_result((self._parser.get_status_code(), b"".join(self._body)))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_exception(EtcdError(f"connection closed before a response: {exc}"))


def _post(url: str, path: str, body: dict[str, Any]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 2379
    data = json.dumps(body).encode()
    req = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode() + data
    return host, port, req


class _Stream(asyncio.Protocol):
    """A streamed response (a watch): one JSON object per line, each put on ``queue``."""

    def __init__(self, request: bytes, queue: asyncio.Queue[dict[str, Any] | BaseException]) -> None:
        self._request = request
        self._queue = queue
        self._parser = httptools.HttpResponseParser(self)
        self._buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self._request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._queue.put_nowait(EtcdError(f"bad HTTP response: {exc}"))

    def on_headers_complete(self) -> None:
        if self._parser.get_status_code() != 200:
            self._queue.put_nowait(EtcdError(f"watch refused: HTTP {self._parser.get_status_code()}"))

    def on_body(self, body: bytes) -> None:
        self._buf += body
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            if line.strip():
                try:
                    doc = json.loads(line)
                except ValueError:
                    self._queue.put_nowait(EtcdError(f"not JSON: {line[:120]!r}"))
                    continue
                if "error" in doc:
                    self._queue.put_nowait(EtcdError(f"watch: {doc['error']}"))
                else:
                    self._queue.put_nowait(doc.get("result", doc))

    def connection_lost(self, exc: Exception | None) -> None:
        self._queue.put_nowait(EtcdError(f"watch stream closed: {exc}"))


def os_error(exc: OSError) -> str:
    """An OSError with its errno's name (asyncio's "Connect call failed" hides whether it was refused,
    unreachable or reset).

    >>> os_error(OSError(111, "Connect call failed ('10.0.0.2', 2379)"))
    "Connect call failed ('10.0.0.2', 2379) (ECONNREFUSED)"
    """
    name = errno.errorcode.get(exc.errno) if exc.errno is not None else None
    text = exc.strerror or str(exc)
    return f"{text} ({name})" if name and name not in text else text


async def post_json(url: str, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    """POST ``body`` as JSON to ``url + path``; the response's JSON (the first object of a stream)."""
    host, port, req = _post(url, path, body)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[int, bytes]] = loop.create_future()
    transport: asyncio.BaseTransport | None = None
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(lambda: _Response(req, done), host, port)
            status, raw = await done
    except TimeoutError:
        raise EtcdError(f"{url}{path}: no answer in {timeout:g}s") from None
    except OSError as exc:
        raise EtcdError(f"{url}{path}: {os_error(exc)}") from None
    finally:
        if transport is not None:
            transport.close()
    text = raw.decode("utf-8", "replace").strip()
    first = text.splitlines()[0] if text else "{}"
    try:
        doc = json.loads(first)
    except ValueError:
        raise EtcdError(f"{url}{path}: not JSON: {first[:120]!r}") from None
    if status != 200 or "error" in doc:
        raise EtcdError(f"{url}{path}: {status} {doc.get('error') or doc.get('message') or first[:200]}")
    return doc.get("result", doc) if isinstance(doc, dict) else {}


class Etcd:
    """The few etcd v3 calls fivenines makes; tries the endpoints in turn."""

    def __init__(self, endpoints: list[str], timeout: float = 1.0) -> None:
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self._current = 0

    async def call(self, path: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """POST to the endpoints in turn until one answers, each given ``timeout`` (default: the client's)."""
        errors = []
        for i in range(len(self.endpoints)):
            url = self.endpoints[(self._current + i) % len(self.endpoints)]
            try:
                doc = await post_json(url, path, body, self.timeout if timeout is None else timeout)
            except EtcdError as exc:
                errors.append(str(exc))
                continue
            self._current = (self._current + i) % len(self.endpoints)
            return doc
        raise EtcdError("; ".join(errors))

    async def grant(self, ttl: float) -> tuple[str, float]:
        doc = await self.call("/v3/lease/grant", {"TTL": max(1, round(ttl))})
        return str(doc["ID"]), float(doc.get("TTL", 0))

    async def keepalive(self, lease_id: str, timeout: float | None = None) -> float:
        """The lease's new TTL; 0 when etcd no longer knows it (expired or revoked)."""
        doc = await self.call("/v3/lease/keepalive", {"ID": lease_id}, timeout)
        return float(doc.get("TTL", 0))

    async def revoke(self, lease_id: str) -> None:
        await self.call("/v3/lease/revoke", {"ID": lease_id})

    async def get(self, key: str) -> dict[str, Any] | None:
        return (await self.read(key))[0]

    async def read(self, key: str) -> tuple[dict[str, Any] | None, int]:
        """``key``'s kv (None when absent) and etcd's revision when it answered."""
        doc = await self.call("/v3/kv/range", {"key": b64(key)})
        kvs = doc.get("kvs") or []
        return (kvs[0] if kvs else None), int(doc.get("header", {}).get("revision", 0))

    async def read_prefix(self, prefix: str, range_end: bytes) -> tuple[list[dict[str, Any]], int]:
        """Every kv with a key in ``[prefix, range_end)`` and etcd's revision when it answered."""
        doc = await self.call("/v3/kv/range", {"key": b64(prefix), "range_end": b64(range_end)})
        return list(doc.get("kvs") or []), int(doc.get("header", {}).get("revision", 0))

    async def put(self, key: str, value: str, lease: str | None = None) -> int:
        """Set ``key`` (attached to ``lease`` when given); etcd's revision after the write."""
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease is not None:
            body["lease"] = lease
        doc = await self.call("/v3/kv/put", body)
        return int(doc.get("header", {}).get("revision", 0))

    async def watch(self, key: str, start_revision: int = 0,
                    range_end: bytes | None = None) -> AsyncIterator[dict[str, Any]]:
        """etcd's watch responses for ``key`` (every key in ``[key, range_end)`` with ``range_end``;
        from ``start_revision``, 0: from now) as they come:
        ``{"header": {"revision": ...}, "events": [{"type": "DELETE"?, "kv": {...}}]}``.
        Ends with :class:`EtcdError` when the stream breaks; the caller re-reads and watches again."""
        body: dict[str, Any] = {"create_request": {"key": b64(key)}}
        if range_end is not None:
            body["create_request"]["range_end"] = b64(range_end)
        if start_revision:
            body["create_request"]["start_revision"] = str(start_revision)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        transport: asyncio.BaseTransport | None = None
        errors = []
        for i in range(len(self.endpoints)):
            url = self.endpoints[(self._current + i) % len(self.endpoints)]
            host, port, req = _post(url, "/v3/watch", body)
            try:
                async with asyncio.timeout(self.timeout):
                    transport, _ = await loop.create_connection(lambda r=req: _Stream(r, queue), host, port)  # type: ignore[misc]
                break
            except (OSError, TimeoutError) as exc:
                errors.append(f"{url}/v3/watch: {exc or 'no answer'}")
        if transport is None:
            raise EtcdError("; ".join(errors))
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            transport.close()

    async def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
                  failure: list[dict[str, Any]]) -> tuple[bool, int, dict[str, Any]]:
        doc = await self.call("/v3/kv/txn", {"compare": compare, "success": success, "failure": failure})
        return bool(doc.get("succeeded", False)), int(doc.get("header", {}).get("revision", 0)), doc


@dataclass(frozen=True, slots=True)
class PrimaryRecord:
    target: str
    epoch: int
    token: int
    node: str


def node_name() -> str:
    import os

    return f"{socket.gethostname()}:{os.getpid()}"


class LeaderLease:
    """Hold (or wait for) the leader key of one group and keep it alive; report to callbacks.

    ``on_acquired(valid_until, record)``, ``on_renewed(valid_until)`` and ``on_lost(why)``
    run on the event loop; ``clock`` is the loop's monotonic time.
    """

    def __init__(self, etcd: Etcd, key_prefix: str, ttl: float, node: str, clock: Callable[[], float], *,
                 on_acquired: Callable[[float, PrimaryRecord | None], None],
                 on_renewed: Callable[[float], None], on_lost: Callable[[str], None]) -> None:
        self.etcd = etcd
        self.leader_key = f"{key_prefix}/leader"
        self.primary_key = f"{key_prefix}/primary"
        self.ttl = ttl
        self.node = node
        self.clock = clock
        self.on_acquired, self.on_renewed, self.on_lost = on_acquired, on_renewed, on_lost
        self.lease_id: str | None = None
        self.token: int | None = None
        self.valid_until = 0.0
        self.holder: str | None = None
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._revoking: asyncio.Task[None] | None = None

    @property
    def leader(self) -> bool:
        return self.token is not None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"lease {self.leader_key}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.lease_id is not None:
            try:
                await self.etcd.revoke(self.lease_id)  # hand over at once instead of after the ttl
            except EtcdError as exc:
                log.warning("could not revoke the lease: %s", exc)
        self.token = self.lease_id = None

    async def _run(self) -> None:
        while True:
            try:
                if self.token is None:
                    await self._try_acquire()
                else:
                    await self._renew()
            except EtcdError as exc:
                self.last_error = str(exc)
                log.debug("etcd: %s", exc)
            if self.token is not None and self.clock() >= self.valid_until:
                self._lose("could not renew the lease before the deadline")
            await asyncio.sleep(renew_every(self.ttl))

    async def _try_acquire(self) -> None:
        held = await self.etcd.get(self.leader_key)
        if held is not None:
            self.holder = unb64(held["value"]).decode()
            return
        sent = self.clock()
        lease_id, ttl = await self.etcd.grant(self.ttl)
        if ttl <= 0:
            raise EtcdError("etcd granted a lease with no TTL")
        ok, revision, doc = await self.etcd.txn(
            [{"target": "CREATE", "key": b64(self.leader_key), "createRevision": "0"}],
            [{"requestPut": {"key": b64(self.leader_key), "value": b64(self.node), "lease": lease_id}}],
            [{"requestRange": {"key": b64(self.leader_key)}}],
        )
        if not ok:
            kvs = (doc.get("responses") or [{}])[0].get("response_range", {}).get("kvs") or []
            self.holder = unb64(kvs[0]["value"]).decode() if kvs else None
            try:
                await self.etcd.revoke(lease_id)
            except EtcdError:
                pass  # it expires on its own
            return
        try:
            record = await self.read_record()
        except EtcdError:
            with contextlib.suppress(EtcdError):
                await self.etcd.revoke(lease_id)  # let another node take it at once
            raise
        # no await from here on: the node is leader exactly when the callback has run
        self.lease_id, self.token, self.holder = lease_id, revision, self.node
        self.valid_until = lease_valid_until(sent, ttl)
        self.ttl = ttl
        self.last_error = None
        self.on_acquired(self.valid_until, record)

    async def _renew(self) -> None:
        assert self.lease_id is not None
        sent = self.clock()
        ttl = await self.etcd.keepalive(self.lease_id)
        if ttl <= 0:
            self._lose("the lease expired in etcd")
            return
        self.valid_until = max(self.valid_until, lease_valid_until(sent, ttl))
        self.last_error = None
        self.on_renewed(self.valid_until)

    def step_down(self) -> None:
        """The node gave up the lease (its deadline passed): forget it and revoke it in the background."""
        lease_id = self.lease_id
        self.token = self.lease_id = None
        self.valid_until = 0.0
        if lease_id is not None:
            async def revoke() -> None:
                with contextlib.suppress(EtcdError):
                    await self.etcd.revoke(lease_id)

            self._revoking = asyncio.get_running_loop().create_task(revoke())

    def _lose(self, why: str) -> None:
        self.token = None
        self.lease_id = None
        self.valid_until = 0.0
        self.on_lost(why)

    async def read_record(self) -> PrimaryRecord | None:
        kv = await self.etcd.get(self.primary_key)
        if kv is None:
            return None
        try:
            d = json.loads(unb64(kv["value"]))
            return PrimaryRecord(str(d["target"]), int(d["epoch"]), int(d.get("token", 0)), str(d.get("node", "")))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring an unreadable primary record in etcd")
            return None

    async def record_primary(self, target: str, epoch: int) -> None:
        """Write the primary record, fenced by the token: refused once another node took the lease."""
        token = self.token
        if token is None or self.clock() >= self.valid_until:
            raise LeaseLost("this node does not hold the lease")
        value = json.dumps({"target": target, "epoch": epoch, "token": token, "node": self.node})
        ok, _, _ = await self.etcd.txn(
            [{"target": "CREATE", "key": b64(self.leader_key), "createRevision": str(token)}],
            [{"requestPut": {"key": b64(self.primary_key), "value": b64(value)}}],
            [],
        )
        if not ok:
            why = f"the leader key changed: token {token} is stale"
            if self.token == token:
                self._lose(why)
            raise LeaseLost(why)

    def status(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "node": self.node,
            "leader": self.leader,
            "holder": self.holder,
            "token": self.token,
            "valid_for_s": round(self.valid_until - now, 3) if self.leader else None,
            "ttl_s": self.ttl,
            "last_error": self.last_error,
        }
