"""The HTTP/1.1 reverse proxy: asyncio protocols (not streams) with httptools.

One :class:`ClientConnection` per downstream connection parses requests and hands
each one, as an :class:`Exchange`, to an upstream connection taken from the chosen
backend's idle pool (or freshly connected). One :class:`UpstreamConnection` per
upstream connection parses the response and streams it back.

* keep-alive on both sides; pipelined requests are answered in order (one exchange
  upstream at a time per client connection, later ones wait with reading paused);
* bodies are streamed both ways, never buffered whole: reading from one side pauses
  while the other side's write buffer is full (``pause_writing``/``resume_writing``);
* hop-by-hop headers are removed (RFC 9110 §7.6.1) and ``X-Forwarded-For``,
  ``-Proto``, ``-Port`` and ``X-Request-Id`` added;
* an attempt that fails before any response byte (connect error, reset, stale
  pooled connection) is retried on another target when :mod:`fivenines.core.retry`
  says so; otherwise the client gets 502, or 504 when the target did not answer in
  time. Nothing is retried after a response byte reached the client.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, Protocol

import httptools

from fivenines.core.retry import Failure, RetryPolicy
from fivenines.proxy.backend import Backend, BackendGroup

log = logging.getLogger("fivenines.proxy")

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
# Headers the proxy sets itself; a client's own copies are replaced or appended to.
_XFF = b"x-forwarded-for"
_OWN = frozenset({b"x-forwarded-proto", b"x-forwarded-port", b"content-length"})
_REQUEST_ID = b"x-request-id"

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}

# Pause reasons for the client transport (a bit set, so each is undone independently).
_P_PIPELINE = 1  # a later pipelined request waits for the current one
_P_UPSTREAM = 2  # the upstream's write buffer is full
_P_BUFFER = 4  # request body waits for an upstream connection

BUFFER_LIMIT = 256 * 1024


@dataclass(slots=True)
class ProxySettings:
    connect_timeout: float = 3.0
    response_timeout: float = 60.0  # per try: until the response head arrives
    idle_timeout: float = 60.0  # client keep-alive connection with nothing in flight
    header_timeout: float = 10.0  # client must send a whole request head in this time
    replay_limit: int = 64 * 1024  # request body kept for a retry up to this size
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    proto: bytes = b"http"


class Counters:
    """Per-listener traffic counters (read by status and metrics)."""

    __slots__ = ("connections", "failed", "requests", "responses", "retries")

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.responses = 0
        self.failed = 0
        self.retries = 0


_ids = itertools.count(1)
_ID_PREFIX = os.urandom(4).hex().encode()


class Exchange:
    """One request and its response on a client connection."""

    __slots__ = (
        "attempt_started",
        "attempts",
        "backend",
        "body",
        "body_size",
        "buffered",
        "chunked",
        "conn",
        "done",
        "head",
        "head_only",
        "keep_alive",
        "method",
        "replay",
        "request_done",
        "response_started",
        "status",
        "tried",
        "version10",
    )

    def __init__(self, method: bytes, head: bytes, chunked: bool, keep_alive: bool, version10: bool) -> None:
        self.method = method
        self.head = head
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.version10 = version10
        self.head_only = method == b"HEAD"
        self.body: list[bytes] = []  # encoded body bytes not yet written upstream
        self.body_size = 0
        self.buffered = 0  # bytes in body
        self.replay: list[bytes] | None = []  # all encoded body bytes while replayable
        self.request_done = False
        self.response_started = False
        self.backend: Backend | None = None
        self.conn: UpstreamConnection | None = None
        self.tried: list[Backend] = []
        self.attempts = 0
        self.done = False
        self.attempt_started = 0.0  # monotonic time the current attempt was dispatched
        self.status = 0


class Listener:
    """What every client connection of one listener shares."""

    def __init__(
        self,
        group_for: Callable[[], BackendGroup | None],
        port: int,
        settings: ProxySettings | None = None,
    ) -> None:
        self.group_for = group_for
        self.port = port
        self.port_bytes = str(port).encode()
        self.settings = settings or ProxySettings()
        self.counters = Counters()
        self.clients: set[ClientConnection] = set()
        self.server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.no_clients = asyncio.Event()  # set whenever the last client connection closes
        self.access_log: AccessLogSink | None = None  # None: no access log, and no cost

    async def start(self, host: str, port: int, *, reuse_port: bool = False, backlog: int = 2048,
                    sock: socket.socket | None = None) -> None:
        """Listen on ``host:port``, or on ``sock`` (already bound; e.g. handed over on a reload)."""
        loop = asyncio.get_running_loop()
        if sock is not None:
            self.server = await loop.create_server(lambda: ClientConnection(self), sock=sock, backlog=backlog)
        else:
            self.server = await loop.create_server(
                lambda: ClientConnection(self), host, port, reuse_port=reuse_port or None, backlog=backlog
            )
        actual = self.server.sockets[0].getsockname()[1]
        self.port = actual
        self.port_bytes = str(actual).encode()
        self._sweeper = loop.call_later(1.0, self._sweep)

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        name = self.server.sockets[0].getsockname()
        return name[0], name[1]

    def _sweep(self) -> None:
        """Close idle and too-slow client connections (one timer for all of them)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        s = self.settings
        for c in list(self.clients):
            c.check_timeouts(now, s)
        self._sweeper = loop.call_later(1.0, self._sweep)

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    def in_flight(self) -> int:
        return sum(1 for c in self.clients if c.busy())

    async def drain(self, timeout: float) -> int:
        """Stop accepting, let in-flight exchanges finish; returns how many were cut."""
        self.stop_accepting()
        for c in list(self.clients):
            c.close_when_idle()
        if self.clients:
            self.no_clients.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self.no_clients.wait()
            except TimeoutError:
                pass
        cut = len(self.clients)
        for c in list(self.clients):
            c.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        return cut


class AccessLogSink(Protocol):
    """Where a listener reports finished exchanges when access logging is on."""

    def record(self, peer_ip: bytes, ex: Exchange, target: str) -> None: ...


def _status_reply(status: int, close: bool = True, extra: bytes = b"") -> bytes:
    reason = _REASONS.get(status, b"Error")
    body = reason + b"\n"
    return b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s%s\r\n%s" % (
        status,
        reason,
        len(body),
        extra,
        b"Connection: close\r\n" if close else b"",
        body,
    )


class ClientConnection(asyncio.Protocol):
    """A downstream (client) connection."""

    __slots__ = (
        "_closing",
        "_exchanges",
        "_headers",
        "_listener",
        "_parser",
        "_parsing",
        "_paused",
        "_peer_ip",
        "_transport",
        "_upgrade",
        "_url",
        "_write_paused",
        "head_started",
        "last_active",
    )

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._transport: asyncio.Transport = None  # type: ignore[assignment]
        self._parser = httptools.HttpRequestParser(self)
        self._exchanges: deque[Exchange] = deque()
        self._parsing: Exchange | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._paused = 0
        self._write_paused = False
        self._closing = False
        self._upgrade = False
        self._peer_ip = b""
        self.last_active = 0.0
        self.head_started: float | None = None

    def __repr__(self) -> str:
        return f"<ClientConnection {self._peer_ip.decode()} exchanges={len(self._exchanges)} paused={self._paused}>"

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._peer_ip = peer[0].encode() if peer else b""
        self._listener.clients.add(self)
        self._listener.counters.connections += 1
        self.last_active = asyncio.get_running_loop().time()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        clients = self._listener.clients
        clients.discard(self)
        if not clients:
            self._listener.no_clients.set()
        for ex in self._exchanges:
            if not ex.done:
                self._release_attempt(ex, reusable=False)
                ex.done = True
        self._exchanges.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail_protocol(501 if self._upgrade else 400)
        except httptools.HttpParserError:
            self._fail_protocol(400)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._exchanges:
            conn = self._exchanges[0].conn
            if conn is not None:
                conn.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._exchanges:
            conn = self._exchanges[0].conn
            if conn is not None:
                conn.resume_reading()

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self.head_started = asyncio.get_running_loop().time()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._parsing is not None:
            return  # a trailer of a chunked body: dropped (we do not forward trailers)
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_started = None
        parser = self._parser
        method = parser.get_method()
        version10 = parser.get_http_version() == "1.0"
        if parser.should_upgrade():
            self._upgrade = True  # tunnelling is not supported yet: answered 501 below
            return
        chunked = False
        xff = b""
        rid = b""
        lines = [method + b" " + self._url + b" HTTP/1.1\r\n"]
        append = lines.append
        drop: frozenset[bytes] | set[bytes] = HOP_BY_HOP
        for name, value in self._headers:
            lname = name.lower()
            if lname == b"connection":
                # headers named in Connection are hop-by-hop too (RFC 9110 7.6.1)
                drop = set(drop) | {t.strip().lower() for t in value.split(b",")}
        for name, value in self._headers:
            lname = name.lower()
            if lname in drop:
                if lname == b"transfer-encoding":
                    chunked = True
                continue
            if lname == _XFF:
                xff += value + b", "
                continue
            if lname in _OWN:
                if lname == b"content-length":
                    append(b"Content-Length: " + value + b"\r\n")
                continue
            if lname == _REQUEST_ID:
                rid = value
            append(name + b": " + value + b"\r\n")
        listener = self._listener
        if chunked:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        if not rid:
            rid = _ID_PREFIX + b"-%x" % next(_ids)
            lines.append(b"X-Request-Id: " + rid + b"\r\n")
        lines.append(b"X-Forwarded-For: " + xff + self._peer_ip + b"\r\n")
        lines.append(b"X-Forwarded-Proto: " + listener.settings.proto + b"\r\n")
        lines.append(b"X-Forwarded-Port: " + listener.port_bytes + b"\r\n\r\n")
        ex = Exchange(method, b"".join(lines), chunked, parser.should_keep_alive(), version10)
        self._parsing = ex
        listener.counters.requests += 1
        self._exchanges.append(ex)
        if len(self._exchanges) == 1:
            self._dispatch(ex)
        else:
            self._pause(_P_PIPELINE)

    def on_body(self, body: bytes) -> None:
        ex = self._parsing
        if ex is None or not body:
            return
        if ex.chunked:
            body = b"%x\r\n%s\r\n" % (len(body), body)
        self._send_body(ex, body)

    def on_message_complete(self) -> None:
        ex = self._parsing
        self._parsing = None
        if ex is None:
            return
        ex.request_done = True
        if ex.chunked:
            self._send_body(ex, b"0\r\n\r\n")

    # ------------------------------------------------------------------ request path

    def _send_body(self, ex: Exchange, data: bytes) -> None:
        if ex.done:
            return  # answered already (an error, or the target replied early): drop the rest
        replay = ex.replay
        if replay is not None:
            ex.body_size += len(data)
            if ex.body_size <= self._listener.settings.replay_limit:
                replay.append(data)
            else:
                ex.replay = None
        conn = ex.conn
        if conn is not None and conn.ready:
            conn.write(data)
        else:
            ex.body.append(data)
            ex.buffered += len(data)
            if ex.buffered > BUFFER_LIMIT:
                self._pause(_P_BUFFER)

    def _dispatch(self, ex: Exchange) -> None:
        """Choose a target and an upstream connection for ``ex`` (first try or retry)."""
        group = self._listener.group_for()
        backend = group.pick(ex.tried) if group is not None else None
        if backend is None:
            self._reply_error(ex, 503)
            return
        ex.attempts += 1
        ex.backend = backend
        ex.attempt_started = monotonic()
        backend.in_flight += 1
        backend.requests += 1
        conn = backend.take_idle()
        if conn is not None:
            assert isinstance(conn, UpstreamConnection)
            self._attach(ex, conn, reused=True)
        else:
            asyncio.get_running_loop().create_task(self._connect(ex, backend))

    async def _connect(self, ex: Exchange, backend: Backend) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._listener.settings.connect_timeout):
                _, conn = await loop.create_connection(lambda: UpstreamConnection(backend), backend.host, backend.port)
        except (OSError, TimeoutError) as exc:
            self._attempt_failed(ex, Failure.CONNECT, f"connect: {exc or 'timeout'}")
            return
        if ex.done or self._closing:
            backend.put_idle(conn)
            return
        self._attach(ex, conn, reused=False)

    def _attach(self, ex: Exchange, conn: UpstreamConnection, reused: bool) -> None:
        ex.conn = conn
        conn.start(self, ex, reused, self._listener.settings.response_timeout)
        conn.write(ex.head)
        if ex.body:
            for chunk in ex.body:
                conn.write(chunk)
            ex.body = []
            ex.buffered = 0
            self._resume(_P_BUFFER)
        if self._write_paused:
            conn.pause_reading()

    def _release_attempt(self, ex: Exchange, reusable: bool) -> None:
        backend, conn = ex.backend, ex.conn
        ex.conn = None
        if backend is not None:
            backend.in_flight -= 1
            ex.backend = None
        if conn is not None:
            conn.finish(reusable)

    def _attempt_failed(self, ex: Exchange, failure: Failure, detail: str) -> None:
        """An attempt failed before any response byte reached the client."""
        if ex.done:
            return
        backend = ex.backend
        if backend is not None and failure is not Failure.STALE:
            backend.errors += 1
            ex.tried.append(backend)
        if failure is Failure.STALE:
            ex.attempts -= 1
        self._release_attempt(ex, reusable=False)
        s = self._listener.settings
        if self._closing:
            ex.done = True
            return
        if s.retry.should_retry(
            failure,
            attempts_made=ex.attempts,
            replayable=ex.replay is not None,
            response_started=ex.response_started,
        ):
            self._listener.counters.retries += 1
            if backend is not None:
                backend.retries += 1
            log.debug("retrying after %s on %s: %s", failure.value, backend.id if backend else "?", detail)
            assert ex.replay is not None
            ex.body = list(ex.replay)
            ex.buffered = ex.body_size
            self._dispatch(ex)
            return
        log.info("request failed (%s): %s", failure.value, detail)
        self._reply_error(ex, 504 if failure is Failure.TIMEOUT else 502)

    # ------------------------------------------------------------------ response path

    def response_head(self, ex: Exchange, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
        """Write the response head to the client. Returns True when the body is chunk-encoded for it."""
        ex.response_started = True
        ex.status = status
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        append = lines.append
        upstream_chunked = False
        has_length = False
        for name, value in headers:
            lname = name.lower()
            if lname in HOP_BY_HOP:
                if lname == b"transfer-encoding":
                    upstream_chunked = True
                continue
            if lname == b"content-length":
                has_length = True
            append(name + b": " + value + b"\r\n")
        no_body = ex.head_only or status in (204, 304) or status < 200
        chunk_out = False
        if not no_body and not has_length:
            if ex.version10:
                ex.keep_alive = False  # close-delimited for an HTTP/1.0 client
            else:
                chunk_out = True
                append(b"Transfer-Encoding: chunked\r\n")
        elif upstream_chunked and has_length:
            pass  # ambiguous upstream framing: the upstream parser went by chunked; see conn.reusable
        if not ex.keep_alive or self._closing:
            append(b"Connection: close\r\n\r\n")
        elif ex.version10:
            append(b"Connection: keep-alive\r\n\r\n")
        else:
            append(b"\r\n")
        self._transport.write(b"".join(lines))
        if status >= 500 and ex.backend is not None:
            ex.backend.errors += 1
        return chunk_out

    def interim(self, status: int, reason: bytes) -> None:
        self._transport.write(b"HTTP/1.1 %d %s\r\n\r\n" % (status, reason))

    def response_body(self, data: bytes) -> None:
        self._transport.write(data)

    def response_done(self, ex: Exchange, upstream_reusable: bool) -> None:
        if not ex.request_done:
            ex.keep_alive = False  # answered before the body ended: cannot resync, close after
        backend = ex.backend
        if backend is not None:
            backend.observe(ex.status, monotonic() - ex.attempt_started)
            if self._listener.access_log is not None:
                self._listener.access_log.record(self._peer_ip, ex, backend.id)
        self._release_attempt(ex, upstream_reusable)
        self._finish(ex)

    def upstream_failed(self, ex: Exchange, failure: Failure, detail: str) -> None:
        if ex.response_started:
            # A response byte reached the client: nothing can be retried or answered.
            if ex.backend is not None:
                ex.backend.errors += 1
            self._release_attempt(ex, reusable=False)
            ex.done = True
            self._listener.counters.failed += 1
            self.abort()
            return
        self._attempt_failed(ex, failure, detail)

    def _finish(self, ex: Exchange) -> None:
        ex.done = True
        self._listener.counters.responses += 1
        if self._exchanges and self._exchanges[0] is ex:
            self._exchanges.popleft()
        self.last_active = asyncio.get_running_loop().time()
        if not ex.keep_alive or self._closing:
            self._closing = True
            self._transport.close()
            return
        if self._exchanges:
            nxt = self._exchanges[0]
            if len(self._exchanges) == 1:
                self._resume(_P_PIPELINE)
            self._dispatch(nxt)
        else:
            self._resume(_P_PIPELINE)

    def _reply_error(self, ex: Exchange, status: int) -> None:
        self._release_attempt(ex, reusable=False)
        self._listener.counters.failed += 1
        if not ex.request_done:
            ex.keep_alive = False  # the rest of its body is still coming: close after
        close = not ex.keep_alive or self._closing
        extra = b"Retry-After: 1\r\n" if status == 503 else b""
        self._transport.write(_status_reply(status, close=close, extra=extra))
        ex.response_started = True
        ex.status = status
        if self._listener.access_log is not None:
            self._listener.access_log.record(self._peer_ip, ex, "-")
        self._finish(ex)

    def _fail_protocol(self, status: int) -> None:
        """Unparseable input: answer ``status`` (after what is in flight) and close."""
        self._pause(_P_PIPELINE)
        self._parsing = None
        pending = [ex for ex in self._exchanges if not ex.done]
        if not pending:
            self._transport.write(_status_reply(status))
            self._closing = True
            self._transport.close()
        else:
            for ex in pending[1:]:
                ex.done = True
            del pending[1:]
            self._exchanges = deque(pending)
            pending[0].keep_alive = False

    # ------------------------------------------------------------------ flow control & timeouts

    def _pause(self, reason: int) -> None:
        if not self._paused and not self._closing:
            self._transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and not self._closing:
                self._transport.resume_reading()

    def upstream_write_paused(self, paused: bool) -> None:
        if paused:
            self._pause(_P_UPSTREAM)
        else:
            self._resume(_P_UPSTREAM)

    def busy(self) -> bool:
        return bool(self._exchanges)

    def check_timeouts(self, now: float, s: ProxySettings) -> None:
        if self._exchanges:
            return
        if self.head_started is not None:
            if now - self.head_started > s.header_timeout:
                self._transport.write(_status_reply(408))
                self.abort()
        elif now - self.last_active > s.idle_timeout:
            self.abort()

    def close_when_idle(self) -> None:
        self._closing = True
        if not self._exchanges:
            self._transport.close()

    def abort(self) -> None:
        self._closing = True
        self._transport.close()


class UpstreamConnection(asyncio.Protocol):
    """A connection to one backend, reused across exchanges while keep-alive holds."""

    __slots__ = (
        "_body_mode",
        "_chunk_out",
        "_client",
        "_ex",
        "_headers",
        "_in_body",
        "_lost",
        "_parser",
        "_reason",
        "_reused",
        "_timer",
        "_transport",
        "backend",
        "got_bytes",
        "keep_alive",
        "ready",
    )

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._transport: asyncio.Transport = None  # type: ignore[assignment]
        self._parser = httptools.HttpResponseParser(self)
        self._client: ClientConnection | None = None
        self._ex: Exchange | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._chunk_out = False
        self._in_body = False
        self._lost = False
        self._reused = False
        self._timer: asyncio.TimerHandle | None = None
        self._body_mode = 0  # 0: length or chunked, 2: delimited by the close
        self.got_bytes = False
        self.keep_alive = True
        self.ready = False

    def __repr__(self) -> str:
        state = "busy" if self._ex is not None else ("closed" if self._lost else "idle")
        return f"<UpstreamConnection {self.backend.id} {state}>"

    # -- pool interface
    def is_usable(self) -> bool:
        return not self._lost and self._ex is None and not self._transport.is_closing()

    def close(self) -> None:
        self._lost = True
        self._transport.close()

    # -- transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._cancel_timer()
        ex, client = self._ex, self._client
        if ex is None or client is None or ex.done:
            return
        if self._in_body:
            if self._body_mode == 2:
                self._end_response(reusable=False)  # close-delimited body: the close ends it
            else:
                client.upstream_failed(ex, Failure.RESET, "upstream closed mid-response")
            return
        if not self.got_bytes:
            kind = Failure.STALE if self._reused else Failure.RESET
            client.upstream_failed(ex, kind, f"upstream closed before responding ({exc or 'eof'})")
        else:
            client.upstream_failed(ex, Failure.PROTOCOL, "upstream closed inside the response head")

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadDone):
                if self._ex is None:
                    self.close()
                return
            self._protocol_error(str(exc))
        except httptools.HttpParserError as exc:
            self._protocol_error(str(exc))

    def pause_writing(self) -> None:
        if self._client is not None:
            self._client.upstream_write_paused(True)

    def resume_writing(self) -> None:
        if self._client is not None:
            self._client.upstream_write_paused(False)

    def pause_reading(self) -> None:
        if not self._lost:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._lost:
            self._transport.resume_reading()

    # -- exchange
    def start(self, client: ClientConnection, ex: Exchange, reused: bool, timeout: float) -> None:
        self._client = client
        self._ex = ex
        self._reused = reused
        self.got_bytes = False
        self._in_body = False
        self.ready = True
        self._timer = asyncio.get_running_loop().call_later(timeout, self._on_timeout)

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    def finish(self, reusable: bool) -> None:
        """The exchange is over: back to the idle pool, or closed."""
        self._cancel_timer()
        self._client = None
        self._ex = None
        self.ready = False
        if reusable and self.keep_alive and not self._lost:
            self._transport.resume_reading()
            self.backend.put_idle(self)
        else:
            self.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self) -> None:
        self._timer = None
        ex, client = self._ex, self._client
        if ex is not None and client is not None and not ex.done:
            client.upstream_failed(ex, Failure.TIMEOUT, f"no response from {self.backend.id} in time")

    def _protocol_error(self, detail: str) -> None:
        ex, client = self._ex, self._client
        self.keep_alive = False
        if ex is not None and client is not None and not ex.done:
            client.upstream_failed(ex, Failure.PROTOCOL, f"bad response from {self.backend.id}: {detail}")
        else:
            self.close()

    # -- parser callbacks
    def on_message_begin(self) -> None:
        self._headers = []
        self._reason = b""

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_body:
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        ex, client = self._ex, self._client
        if ex is None or client is None:
            raise _HeadDone  # unsolicited response: the pool drops this connection
        self._cancel_timer()
        parser = self._parser
        status = parser.get_status_code()
        if 100 <= status < 200:
            if status != 101:
                client.interim(status, self._reason)
            return
        self.keep_alive = parser.should_keep_alive()
        has_te = has_cl = False
        for name, _ in self._headers:
            ln = name.lower()
            if ln == b"transfer-encoding":
                has_te = True
            elif ln == b"content-length":
                has_cl = True
        if has_te and has_cl:
            self.keep_alive = False  # ambiguous framing: never reuse this connection
        self._chunk_out = client.response_head(ex, status, self._reason, self._headers)
        if ex.head_only:
            self.keep_alive = False  # the parser would wait for a body a HEAD answer has not
            self._end_response(reusable=False)
            raise _HeadDone
        self._body_mode = 0 if (has_te or has_cl or status in (204, 304)) else 2
        self._in_body = True

    def on_body(self, body: bytes) -> None:
        client = self._client
        if client is None or not body:
            return
        if self._chunk_out:
            client.response_body(b"%x\r\n%s\r\n" % (len(body), body))
        else:
            client.response_body(body)

    def on_message_complete(self) -> None:
        if not self._in_body:
            return  # a 1xx interim response
        self._end_response(reusable=True)

    def _end_response(self, reusable: bool) -> None:
        ex, client = self._ex, self._client
        self._in_body = False
        if ex is None or client is None:
            return
        if self._chunk_out:
            client.response_body(b"0\r\n\r\n")
        client.response_done(ex, reusable and ex.request_done)


class _HeadDone(Exception):
    """Raised from a parser callback to stop parsing after a body-less response head."""


def make_listener(group_for: Callable[[], BackendGroup | None], port: int, **settings: Any) -> Listener:
    return Listener(group_for, port, ProxySettings(**settings))
