"""The HTTP/1.1 reverse proxy: asyncio protocols (not streams) with httptools.

One :class:`ClientConnection` per downstream connection parses requests and hands
each one, as an :class:`Exchange`, to an upstream connection taken from the chosen
backend's idle pool (or freshly connected). One :class:`UpstreamConnection` per
upstream connection parses the response and streams it back.

* Routing: the listener's :class:`~fivenines.core.route.Router` (compiled once)
  picks an action per request: forward to a target group (or a weighted split),
  redirect, or a fixed response. A listener without rules skips routing.
* keep-alive on both sides (per-target idle pools, closed after
  ``upstream_idle``); pipelined requests are answered in order (one exchange
  upstream at a time per client connection, later ones wait with reading paused);
* bodies are streamed both ways, never buffered whole: reading from one side pauses
  while the other side's write buffer is full (``pause_writing``/``resume_writing``);
  the writes of one upstream read are coalesced into one client write;
* hop-by-hop headers are removed (RFC 9110 §7.6.1, including those the
  ``Connection`` header names) and ``X-Forwarded-For``, ``-Proto``, ``-Port`` and
  ``X-Request-Id`` added;
* ``Expect: 100-continue`` is forwarded and the target's ``100 Continue`` relayed
  (never to an HTTP/1.0 client);
* ``Connection: Upgrade`` (WebSocket) is forwarded with its ``Upgrade`` header; on
  the target's ``101`` both connections become a byte tunnel with back-pressure
  and half-close, closed after ``tunnel`` seconds without traffic;
* failures before any byte reached the client are retried on another target when
  :mod:`fivenines.core.retry` says so (connect errors and resets for every method;
  5xx, per-try timeouts and bad responses only for idempotent requests; within
  the group's retry budget); otherwise the client gets 502, or 504 when the
  target did not answer in time. Nothing is retried after a byte reached the client;
* timeouts: connect, client header (408), client idle, per try (504), whole
  request (504), tunnel idle. One timer per listener sweeps the slow ones; the
  per-try timeout is a timer per attempt.

No logging on the hot path: failures are counted (listener, group, target) and
logged at debug level only.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httptools

from fivenines.core.balance import key_hash
from fivenines.core.detect import Outcome
from fivenines.core.framing import (
    HeadSummary,
    Limits,
    check_head,
    express_request,
    express_response,
)
from fivenines.core.limits import Admission, RateLimiter
from fivenines.core.retry import Failure, RetryPolicy, Verdict, is_idempotent, may_hedge
from fivenines.core.route import FixedResponse, Forward, Redirect, RequestView, Router, ip_to_int
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
_XFF = b"x-forwarded-for"
_REQUEST_ID = b"x-request-id"
# Request headers that need more than copying (one set lookup per header on the hot path).
_SPECIAL = HOP_BY_HOP | {
    _XFF,
    b"x-forwarded-proto",
    b"x-forwarded-port",
    b"content-length",
    _REQUEST_ID,
    b"host",
    b"cookie",
    b"idempotency-key",
    b"expect",
    b"content_length",  # CGI-style aliases of framing headers: ambiguous, refused
    b"transfer_encoding",
}
_CONNECTION_TOKENS = frozenset({b"keep-alive", b"close", b"upgrade"})

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}
# core.detect.Outcome of a failed attempt (ints: the passive hook allocates nothing)
_OUTCOME = {
    Failure.CONNECT: int(Outcome.CONNECT),
    Failure.CONNECT_TIMEOUT: int(Outcome.CONNECT),
    Failure.RESET: int(Outcome.RESET),
    Failure.PROTOCOL: int(Outcome.RESET),
    Failure.TIMEOUT: int(Outcome.TIMEOUT),
    Failure.STATUS: int(Outcome.HTTP_5XX),
}

_OK, _HTTP_5XX = int(Outcome.OK), int(Outcome.HTTP_5XX)

_STATUS_FOR = {
    Failure.CONNECT: 502,
    Failure.CONNECT_TIMEOUT: 504,
    Failure.RESET: 502,
    Failure.STALE: 502,
    Failure.TIMEOUT: 504,
    Failure.STATUS: 502,
    Failure.PROTOCOL: 502,
}

# Pause reasons for the client transport (a bit set, so each is undone independently).
_P_PIPELINE = 1  # a later pipelined request waits for the current one
_P_UPSTREAM = 2  # the upstream's write buffer is full
_P_BUFFER = 4  # request body waits for an upstream connection

BUFFER_LIMIT = 256 * 1024
DEFER_LIMIT = 64 * 1024  # a chunked request body is validated up to this much before its head is sent
LINGER = 2.0  # after an error reply, input is read and dropped this long before the connection closes
MAX_HEAD = 64 * 1024  # a request or response head larger than this is refused (431 / 502)


@dataclass(slots=True)
class ProxySettings:
    connect_timeout: float = 3.0
    response_timeout: float = 60.0  # per try: until the response head arrives
    idle_timeout: float = 60.0  # client keep-alive connection with nothing in flight
    header_timeout: float = 10.0  # client must send a whole request head in this time
    request_timeout: float | None = None  # whole request, retries included (None: no limit)
    tunnel_timeout: float = 3600.0  # upgraded connection without traffic
    upstream_idle_timeout: float = 15.0  # pooled upstream connection unused this long is closed
    replay_limit: int = 64 * 1024  # request body kept for a retry up to this size
    retry: RetryPolicy | None = None  # overrides every group's policy when set (tests)
    proto: bytes = b"http"
    limits: Limits = field(default_factory=Limits)  # request line, header and body limits (414 / 431 / 413)
    max_connections: int | None = 20_000  # open client connections; more are refused
    max_connections_per_ip: int | None = None
    rate_limit: tuple[float, int] | None = None  # (requests per second, burst) per client IP: 429

    @classmethod
    def from_spec(cls, timeouts: Any, limits: Any = None, **kw: Any) -> ProxySettings:
        """From a :class:`~fivenines.spec.TimeoutsSpec` and a :class:`~fivenines.spec.LimitsSpec`."""
        if limits is not None:
            kw.setdefault("limits", Limits(limits.max_request_line, limits.max_header_bytes, limits.max_headers,
                                           limits.max_body))
            kw.setdefault("max_connections", limits.max_connections)
            kw.setdefault("max_connections_per_ip", limits.max_connections_per_ip)
            rl = limits.rate_limit
            kw.setdefault("rate_limit", (rl.requests_per_second, rl.burst) if rl is not None else None)
        return cls(
            connect_timeout=timeouts.connect,
            response_timeout=timeouts.response,
            idle_timeout=timeouts.idle,
            header_timeout=timeouts.client_header,
            request_timeout=timeouts.request,
            tunnel_timeout=timeouts.tunnel,
            upstream_idle_timeout=timeouts.upstream_idle,
            **kw,
        )

    def sweep_interval(self) -> float:
        ts = [self.idle_timeout, self.header_timeout, self.tunnel_timeout, self.upstream_idle_timeout]
        if self.request_timeout:
            ts.append(self.request_timeout)
        return max(0.05, min(1.0, min(ts) / 4))


# (a compiled class has no __slots__ to read back)
_COUNTER_FIELDS = ("connections", "failed", "fixed", "hedges", "rate_limited", "redirects", "refused", "rejected",
                   "requests", "responses", "retries", "upgrades")


class Counters:
    """Per-listener traffic counters (read by status and metrics)."""

    __slots__ = _COUNTER_FIELDS

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.responses = 0
        self.failed = 0
        self.retries = 0
        self.redirects = 0
        self.fixed = 0
        self.upgrades = 0
        self.rejected = 0  # requests refused by the framing rules and limits (4xx; never forwarded)
        self.refused = 0  # connections refused over max_connections / max_connections_per_ip
        self.rate_limited = 0  # requests answered 429
        self.hedges = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in _COUNTER_FIELDS}


_ids = itertools.count(1)
_ID_PREFIX = os.urandom(4).hex().encode()


class Exchange:
    """One request and its response on a client connection."""

    __slots__ = (
        "attempts",
        "backend",
        "body",
        "body_size",
        "buffered",
        "chunked",
        "conn",
        "deferred",
        "discard_rest",
        "done",
        "expect",
        "group",
        "group_cookie",
        "head",
        "head_only",
        "hedge",
        "hedge_at",
        "hedge_backend",
        "hedge_sent_at",
        "idempotent",
        "keep_alive",
        "key",
        "last_failure",
        "local",
        "local_body",
        "method",
        "received",
        "replay",
        "reply_when_read",
        "request_done",
        "response_started",
        "sent_at",
        "started",
        "status",
        "sticky",
        "tried",
        "upgrade",
        "version10",
    )

    def __init__(self, method: bytes, head: bytes, chunked: bool, keep_alive: bool, version10: bool) -> None:
        self.method = method
        self.head = head
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.version10 = version10
        self.head_only = method == b"HEAD"
        self.idempotent = True
        self.upgrade = False
        self.body: list[bytes] = []  # encoded body bytes not yet written upstream
        self.body_size = 0
        self.received = 0  # request body bytes read from the client (for limits.max_body)
        self.buffered = 0  # bytes in body
        self.replay: list[bytes] | None = []  # all encoded body bytes while replayable
        self.request_done = False
        self.reply_when_read = False
        self.discard_rest = False  # answered early: the rest of the request body is dropped
        self.deferred = False  # a chunked body is validated (up to DEFER_LIMIT) before anything is sent
        self.expect = False
        self.response_started = False
        self.group: BackendGroup | None = None
        self.local: bytes | None = None  # head of a reply made here (redirect, fixed), without the blank line
        self.local_body = b""
        self.key: int | None = None  # hash key for the hashing algorithms
        self.sticky: bytes | None = None  # the client's stickiness token
        self.group_cookie: bytes | None = None  # Set-Cookie line of a sticky weighted forward
        self.backend: Backend | None = None
        self.conn: UpstreamConnection | None = None
        self.tried: list[Backend] = []
        self.attempts = 0
        self.last_failure: Failure | None = None
        self.started = 0.0
        self.sent_at = 0.0  # loop time the current attempt was sent (passive latency)
        # hedging: a second attempt racing the first (only while no response head arrived)
        self.hedge: UpstreamConnection | None = None
        self.hedge_backend: Backend | None = None
        self.hedge_at = 0.0  # when to send the hedge (0: none planned)
        self.hedge_sent_at = 0.0
        self.done = False
        self.status = 0


class Listener:
    """What every client connection of one listener shares."""

    def __init__(
        self,
        group_for: Callable[[], BackendGroup | None],
        port: int,
        settings: ProxySettings | None = None,
        *,
        router: Router | None = None,
        groups: Mapping[str, BackendGroup] | None = None,
    ) -> None:
        self.group_for = group_for
        self.port = port
        self.settings = settings or ProxySettings()  # (sets port_bytes and forwarded_tail from port)
        self.router = router if router is not None and not router.trivial else None
        self.groups: Mapping[str, BackendGroup] = groups or {}
        self.counters = Counters()
        self.clients: set[ClientConnection] = set()
        self.server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._watcher: asyncio.TimerHandle | None = None
        self.tick = 0.0  # loop time of the last sweep: a coarse clock for the slow timeouts
        self.no_clients = asyncio.Event()  # set whenever the last client connection closes
        self.access_log: AccessLogSink | None = None  # None: no access log, and no cost
        # Attempts waiting for a response head, each with its deadline: checked by a timer
        # (cheaper per request than a timer per attempt; fires up to a tenth late).
        self.waiting: set[UpstreamConnection] = set()
        self.hedging: dict[Exchange, ClientConnection] = {}  # exchanges with a hedge planned at ex.hedge_at
        self.time: Callable[[], float] = lambda: 0.0
        # Connections with writes held back until the loop has handled every event of this
        # round (see defer); None until the listener runs (then writes are never held).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deferred: list[ClientConnection | UpstreamConnection] = []
        s = self.settings
        self.admission = Admission(s.max_connections, s.max_connections_per_ip)
        self.rate: RateLimiter | None = RateLimiter(*s.rate_limit) if s.rate_limit else None

    async def start(self, host: str, port: int, *, reuse_port: bool = False, backlog: int = 2048,
                    sock: Any = None) -> None:
        """Listen on ``host:port``, or on ``sock`` (already bound; e.g. handed over on a reload)."""
        loop = asyncio.get_running_loop()
        # Latencies need finer than uvloop's loop.time() (1 ms, cached per iteration): the same
        # CLOCK_MONOTONIC, read directly, so values still compare with loop deadlines.
        self.time = time.monotonic
        self.tick = loop.time()
        self._loop = loop
        if sock is not None:
            self.server = await loop.create_server(lambda: ClientConnection(self), sock=sock, backlog=backlog)
        else:
            self.server = await loop.create_server(
                lambda: ClientConnection(self), host, port, reuse_port=reuse_port or None, backlog=backlog
            )
        srv: Any = self.server  # (uvloop gives a list where typeshed says tuple: compiled code checks)
        self._set_port(srv.sockets[0].getsockname()[1])
        self._sweeper = loop.call_later(self.settings.sweep_interval(), self._sweep)
        self._watcher = loop.call_later(self._watch_interval(), self._watch)

    @property
    def settings(self) -> ProxySettings:
        return self._settings

    @settings.setter
    def settings(self, settings: ProxySettings) -> None:  # (replaced on a reload)
        self._settings = settings
        self._set_port(self.port)

    def _set_port(self, port: int) -> None:
        self.port = port
        self.port_bytes = str(port).encode()
        # what ends every forwarded request head after X-Forwarded-For's value
        self.forwarded_tail = b"\r\nX-Forwarded-Proto: %s\r\nX-Forwarded-Port: %s\r\n\r\n" % (
            self._settings.proto, self.port_bytes)

    def defer(self, conn: ClientConnection | UpstreamConnection) -> bool:
        """Hold ``conn``'s writes until the loop has handled every event ready now, then write
        them (``conn.write_deferred()``). Responses and requests written together, after the
        Python work of a round, wake the peers (clients, targets) once per round rather than
        once per message: fewer wake-ups for the kernel to do. False: not running, write now."""
        loop = self._loop
        if loop is None:
            return False
        deferred = self._deferred
        deferred.append(conn)
        if len(deferred) == 1:
            loop.call_soon(self._write_deferred)
        return True

    def _write_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        for conn in deferred:
            conn.write_deferred()

    @property
    def express(self) -> bool:
        """May plain requests take the express lane? Not with rules or a rate limit (they read more)."""
        return self.router is None and self.rate is None

    def _watch_interval(self) -> float:
        ts = [self.settings.response_timeout]
        ts += [g.retry.per_try_timeout for g in self.all_groups() if g.retry.per_try_timeout]
        ts += [g.hedge_delay for g in self.all_groups() if g.hedge_delay]
        if self.settings.retry is not None and self.settings.retry.per_try_timeout:
            ts.append(self.settings.retry.per_try_timeout)
        return max(0.02, min(1.0, min(ts) / 10))

    def _watch(self) -> None:
        """Per-try timeouts: attempts whose response head is late."""
        loop = asyncio.get_running_loop()
        now = self.time()  # the clock the deadlines were set with
        for conn in [c for c in self.waiting if c.deadline <= now]:
            conn.timed_out()
        if self.hedging:
            for ex, client in [(e, c) for e, c in self.hedging.items() if e.hedge_at <= now]:
                self.hedging.pop(ex, None)
                client.fire_hedge(ex)
        self._watcher = loop.call_later(self._watch_interval(), self._watch)

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        srv: Any = self.server
        name = srv.sockets[0].getsockname()
        return name[0], name[1]

    def all_groups(self) -> list[BackendGroup]:
        out = list(self.groups.values())
        g = self.group_for()
        if g is not None and g not in out:
            out.append(g)
        return out

    def _sweep(self) -> None:
        """Close idle and too-slow connections (one timer for all of them)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.tick = now
        s = self.settings
        for c in list(self.clients):
            c.check_timeouts(now, s)
        older = now - s.upstream_idle_timeout
        for g in self.all_groups():
            for b in g.backends.values():
                if b.idle:
                    b.close_idle(older_than=older)
        self._sweeper = loop.call_later(s.sweep_interval(), self._sweep)

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    def in_flight(self) -> int:
        return sum(1 for c in self.clients if c.busy())

    def rescue(self, backend: Backend) -> int:
        """Give up now on the attempts waiting for ``backend``'s answer (it was just ejected as hung or
        slow), as their per-try timeout would: idempotent ones are retried on another target at once;
        the others keep waiting (trying them twice could do them twice). Returns how many."""
        n = 0
        for conn in [c for c in self.waiting if c.backend is backend]:
            ex, client = conn.exchange, conn.client
            if ex is not None and client is not None and ex.idempotent and not ex.response_started:
                if client.attempt_lost(ex, conn, Failure.TIMEOUT):
                    n += 1  # one of two racing attempts: the other carries on
                else:
                    n += client.rescue(ex, conn)
        return n

    def cut(self, backend: Backend) -> int:
        """Abort every client exchange now on ``backend`` (a drained target's deadline). Returns how many."""
        n = 0
        for c in list(self.clients):
            n += c.cut(backend)
        return n

    async def drain(self, timeout: float) -> int:
        """Stop accepting, let in-flight exchanges finish; returns how many were cut."""
        self.stop_accepting()
        for c in list(self.clients):
            c.close_when_idle()
        cut = await wait_then_cut(self.clients, self.no_clients, timeout)
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        return cut


async def wait_then_cut(clients: set[Any], no_clients: asyncio.Event, timeout: float) -> int:
    """Wait up to ``timeout`` for ``clients`` to leave (``no_clients`` is set when the last one
    does), then abort those still open. Returns how many were cut. (HTTP and TCP listeners.)"""
    if clients:
        no_clients.clear()
        try:
            async with asyncio.timeout(timeout):
                await no_clients.wait()
        except TimeoutError:
            pass
    cut = len(clients)
    for c in list(clients):
        c.abort()
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


def _cookie(values: list[bytes] | None, name: bytes) -> bytes | None:
    """The value of cookie ``name`` in Cookie header values."""
    if not values:
        return None
    for v in values:
        for part in v.split(b";"):
            k, sep, val = part.strip().partition(b"=")
            if sep and k == name:
                return val.strip().strip(b'"')
    return None


GROUP_COOKIE = b"FIVENINES_TG"


class ClientConnection(asyncio.Protocol):
    """A downstream (client) connection."""

    __slots__ = (
        "_admitted",
        "_closing",
        "_eof",
        "_error_after",
        "_exchanges",
        "_fresh",
        "_head_bytes",
        "_headers",
        "_lingering",
        "_listener",
        "_parser",
        "_parsing",
        "_paused",
        "_peer_ip",
        "_reject",
        "_transport",
        "_tunnel",
        "_upgraded",
        "_url",
        "_wbuf",
        "_wdeferred",
        "_write_paused",
        "head_started",
        "last_active",
    )

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._transport: asyncio.Transport = None  # type: ignore[assignment]
        # made when a request first takes the full path: a connection whose requests all take the
        # express lane never needs one (and the parser, holding this protocol, made a cycle for the GC)
        self._parser: httptools.HttpRequestParser | None = None
        self._exchanges: deque[Exchange] = deque()
        self._fresh = True  # the parser is between messages with nothing buffered: the express lane may run
        self._parsing: Exchange | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._paused = 0
        self._write_paused = False
        self._closing = False
        self._eof = False
        self._upgraded = False  # the parser saw an upgrade request: later bytes are tunnel bytes
        self._tunnel: UpstreamConnection | None = None  # set once the target switched protocols
        self._peer_ip = b""
        self._wbuf: list[bytes] = []
        self._wdeferred = False  # the listener will write _wbuf at the end of this loop round
        self._head_bytes = 0
        self._admitted = False
        self._lingering = False
        self._error_after = 0  # status to answer once the request in flight is answered
        self._reject = 0  # status of a request head refused by the framing rules or limits
        self.last_active = 0.0
        self.head_started: float | None = None

    def __repr__(self) -> str:
        mode = " tunnel" if self._tunnel is not None else ""
        return f"<ClientConnection {self._peer_ip.decode()} exchanges={len(self._exchanges)} paused={self._paused}{mode}>"

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._peer_ip = peer[0].encode() if peer else b""
        listener = self._listener
        listener.counters.connections += 1
        if not listener.admission.admit(self._peer_ip.decode()):
            listener.counters.refused += 1
            self._closing = True
            transport.write(_status_reply(503, extra=b"Retry-After: 1\r\n"))  # type: ignore[attr-defined]
            transport.close()
            return
        self._admitted = True
        listener.clients.add(self)
        self.last_active = listener.tick
        self.head_started = listener.tick  # the first request head is due within client_header too

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if not self._admitted:
            return
        self._listener.admission.release(self._peer_ip.decode())
        clients = self._listener.clients
        clients.discard(self)
        if not clients:
            self._listener.no_clients.set()
        for ex in self._exchanges:
            if not ex.done:
                self._release_attempt(ex, reusable=False)
                ex.done = True
        self._exchanges.clear()
        self._wbuf = []

    def eof_received(self) -> bool | None:
        self._eof = True
        tunnel = self._tunnel
        if tunnel is not None:
            tunnel.write_eof()
            # half-close: the target may still answer; both directions ended: close
            return None if tunnel.eof_seen else True
        if self._exchanges:
            # a client that half-closed after its request still gets the answer
            self._closing = True
            return True
        self.flush()  # an answer finished in this round waits in _wbuf (flush_soon): out before the close
        return None

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self._upgraded:
            self._tunnel_in(data)
            return
        if (self._fresh and not self._exchanges and data[-4:] == b"\r\n\r\n" and not self._closing
                and self._express(data)):
            return
        if self._parsing is None:  # a request head is being read: it is bounded
            self._head_bytes += len(data)  # (reset when a head completes)
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpRequestParser(self)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            ex = self._exchanges[-1] if self._exchanges else None
            if ex is None or not ex.upgrade:
                self._fail_protocol(501)  # CONNECT, or an upgrade answered already
                return
            self._upgraded = True
            rest = data[exc.args[0]:]
            if rest:
                self._tunnel_in(rest)
        except httptools.HttpParserError:
            status = self._reject or 400
            self._reject = 0
            if status < 0:
                return  # answered and closing already
            self._listener.counters.rejected += 1
            self._fail_protocol(status)
            return
        if self._head_bytes > MAX_HEAD and self._parsing is None:
            self._listener.counters.rejected += 1
            self._fail_protocol(414 if len(self._url) > self._listener.settings.limits.max_request_line else 431)

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
        self._fresh = False
        self._url = b""
        self._headers = []
        self.head_started = self._listener.tick

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._parsing is not None:
            return  # a trailer of a chunked body: dropped (we do not forward trailers)
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_started = None
        parser = self._parser
        assert parser is not None  # (called by it)
        listener = self._listener
        limits = listener.settings.limits
        summary = HeadSummary()  # for the framing verdict, filled in the one pass below
        if self._head_bytes > limits.max_header_bytes:
            summary.bytes = sum(len(n) + len(v) + 4 for n, v in self._headers)
        self._head_bytes = 0
        summary.count = len(self._headers)
        method = parser.get_method()
        url = self._url
        chunked = False
        idem_key = False
        expect = False
        xff = b""
        rid = b""
        host = b""
        conn_value = b""
        upgrade_value = b""
        cookies: list[bytes] | None = None
        host_line = 0
        lines = [method + b" " + url + b" HTTP/1.1\r\n"]
        append = lines.append
        special = _SPECIAL
        for name, value in self._headers:
            lname = name.lower()
            if lname not in special:
                append(name + b": " + value + b"\r\n")
            elif lname == b"host":
                host = value
                summary.host = value
                summary.host_count += 1
                host_line = len(lines)
                append(name + b": " + value + b"\r\n")
            elif lname == b"content-length":
                summary.cl = value
                summary.cl_count += 1
                append(b"Content-Length: " + value + b"\r\n")
            elif lname == b"transfer-encoding":
                chunked = True
                summary.te = value
                summary.te_count += 1
            elif lname == _XFF:
                xff += value + b", "
            elif lname == _REQUEST_ID:
                rid = value
                append(name + b": " + value + b"\r\n")
            elif lname == b"cookie":
                if cookies is None:
                    cookies = []
                cookies.append(value)
                append(name + b": " + value + b"\r\n")
            elif lname == b"idempotency-key":
                idem_key = True
                append(name + b": " + value + b"\r\n")
            elif lname == b"expect":
                expect = True
                append(name + b": " + value + b"\r\n")
            elif lname == b"connection":
                conn_value = conn_value + b"," + value if conn_value else value
            elif lname == b"upgrade":
                upgrade_value = value
            elif lname == b"content_length" or lname == b"transfer_encoding":
                summary.alias = name
            # other hop-by-hop headers and our own X-Forwarded-Proto/-Port: dropped
        verdict = check_head(method, url, parser.get_http_version(), summary, limits)
        if not verdict.ok:
            # Refused before anything is forwarded; the parser is stopped here, so no byte
            # of this request (or any after it) reaches a target. Answered, then closed.
            self._reject = verdict.status
            log.debug("refused request from %s: %d %s", self._peer_ip.decode(), verdict.status, verdict.reason)
            raise _Refused(verdict.reason)
        if verdict.target is not url:  # absolute-form: forwarded in origin-form, Host from its authority
            url = verdict.target
            host = verdict.host or b""
            lines[0] = method + b" " + url + b" HTTP/1.1\r\n"
            if host_line:
                lines[host_line] = b"Host: " + host + b"\r\n"
            else:
                append(b"Host: " + host + b"\r\n")
        if conn_value and conn_value.lower() not in _CONNECTION_TOKENS:
            named = {t.strip().lower() for t in conn_value.split(b",")} - _CONNECTION_TOKENS
            if named:  # headers named in Connection are hop-by-hop too (RFC 9110 7.6.1)
                lines = [lines[0]] + [
                    ln for ln in lines[1:] if ln.split(b":", 1)[0].lower() not in named
                ]
                append = lines.append
        upgrade = parser.should_upgrade() and method != b"CONNECT"
        if upgrade:
            append(b"Connection: Upgrade\r\nUpgrade: " + upgrade_value + b"\r\n")
        if chunked:
            append(b"Transfer-Encoding: chunked\r\n")  # the verdict allows exactly chunked only
        if not rid:
            rid = _ID_PREFIX + b"-%x" % next(_ids)
            append(b"X-Request-Id: " + rid + b"\r\n")
        append(b"X-Forwarded-For: " + xff + self._peer_ip + b"\r\n")
        append(b"X-Forwarded-Proto: " + listener.settings.proto + b"\r\n")
        append(b"X-Forwarded-Port: " + listener.port_bytes + b"\r\n\r\n")
        ex = Exchange(method, b"".join(lines), chunked, parser.should_keep_alive(), parser.get_http_version() == "1.0")
        ex.upgrade = upgrade
        ex.expect = expect
        if idem_key or method not in _IDEMPOTENT:
            ex.idempotent = is_idempotent(method, idem_key)
        if listener.settings.request_timeout:
            ex.started = asyncio.get_running_loop().time()
        rate = listener.rate
        if rate is not None and not rate.allow(self._peer_ip.decode(), listener.tick):
            listener.counters.rate_limited += 1
            ex.local = _TOO_MANY_HEAD
            ex.local_body = b"Too Many Requests\n"
        elif method == b"CONNECT":
            ex.local = _NOT_IMPLEMENTED_HEAD
            ex.local_body = b"Not Implemented\n"
        elif listener.router is None:
            ex.group = listener.group_for()
        else:
            self._route(ex, method, url, host, cookies)
        group = ex.group
        if group is not None:
            if group.hash_on is not None:
                ex.key = self._hash_key(group, url, cookies)
            if group.stickiness is not None:
                ex.sticky = _cookie(cookies, group.stickiness.cookie)
        self._parsing = ex
        listener.counters.requests += 1
        self._exchanges.append(ex)
        if chunked and not expect and not upgrade and ex.local is None:
            # Hold the head until the body has been parsed (whole, or DEFER_LIMIT of it), so that a
            # request whose chunked framing turns out invalid never reaches a target at all.
            ex.deferred = True
        if len(self._exchanges) == 1:
            if not ex.deferred:
                self._dispatch(ex)
        else:
            self._pause(_P_PIPELINE)

    def _express(self, data: bytes) -> bool:
        """The express lane: ``data`` is one whole, plain request head (see
        :func:`~fivenines.core.framing.express_request`) for a listener and group that need
        nothing more from it than its method, target and host. Forwarded as the full path
        would forward it; False (nothing done) otherwise."""
        listener = self._listener
        if not listener.express:
            return False
        got = express_request(data, listener.settings.limits)
        if got is None:
            return False
        group = listener.group_for()
        if group is not None and (group.stickiness is not None
                                  or (group.hash_on is not None and group.hash_on[0] not in _EXPRESS_HASH)):
            return False  # the group reads cookies or headers
        method, url, _host, head, keep_alive = got
        rid = _ID_PREFIX + b"-%x" % next(_ids)
        ex = Exchange(method, b"".join((head, b"X-Request-Id: ", rid, b"\r\nX-Forwarded-For: ", self._peer_ip,
                                        listener.forwarded_tail)), False, keep_alive, False)
        ex.request_done = True
        if listener.settings.request_timeout:
            ex.started = asyncio.get_running_loop().time()
        ex.group = group
        if group is not None and group.hash_on is not None:
            ex.key = self._hash_key(group, url, None)
        self.head_started = None
        self._head_bytes = 0
        listener.counters.requests += 1
        self._exchanges.append(ex)
        self._dispatch(ex)
        return True

    def _route(self, ex: Exchange, method: bytes, url: bytes, host: bytes, cookies: list[bytes] | None) -> None:
        listener = self._listener
        router = listener.router
        assert router is not None
        path, _, query = url.partition(b"?")
        headers: dict[bytes, bytes] | None = None
        if router.needs_headers:
            headers = {}
            for name, value in self._headers:
                lname = name.lower()
                headers[lname] = headers[lname] + b"," + value if lname in headers else value
        source = ip_to_int(self._peer_ip) if router.needs_source else None
        action = router.route(RequestView(method, path, query, host, headers, source))
        if isinstance(action, Forward):
            gname = action.single
            if gname is None:
                sticky: str | None = None
                if action.stickiness:
                    got = _cookie(cookies, GROUP_COOKIE)
                    sticky = got.decode("latin-1") if got else None
                gname = action.choose(sticky)
                if action.stickiness:
                    ex.group_cookie = b"Set-Cookie: %s=%s; Max-Age=%d; Path=/; HttpOnly\r\n" % (
                        GROUP_COOKIE, gname.encode(), int(action.stickiness))
            ex.group = listener.groups.get(gname)
        elif isinstance(action, Redirect):
            listener.counters.redirects += 1
            loc = action.location(listener.settings.proto, _host_only(host), listener.port_bytes, path, query)
            ex.local = (
                b"HTTP/1.1 %d %s\r\nLocation: %s\r\nContent-Length: 0\r\n"
                % (action.status, _REDIRECT_REASONS.get(action.status, b"Redirect"), loc)
            )
        elif isinstance(action, FixedResponse):
            listener.counters.fixed += 1
            ex.local = action.head
            ex.local_body = action.body

    def _hash_key(self, group: BackendGroup, url: bytes, cookies: list[bytes] | None) -> int | None:
        assert group.hash_on is not None
        kind, arg = group.hash_on
        if kind == "ip":
            return key_hash(self._peer_ip)
        if kind == "uri":
            return key_hash(url)
        if kind == "cookie":
            v = _cookie(cookies, arg)
            return key_hash(v) if v else None
        for name, value in self._headers:
            if name.lower() == arg:
                return key_hash(value)
        return None

    def on_body(self, body: bytes) -> None:
        ex = self._parsing
        if ex is None or not body:
            return
        max_body = self._listener.settings.limits.max_body
        if max_body is not None:
            ex.received += len(body)
            if ex.received > max_body:
                self._refuse_body(ex)
        if ex.chunked:
            body = b"%x\r\n%s\r\n" % (len(body), body)
        self._send_body(ex, body)

    def _refuse_body(self, ex: Exchange) -> None:
        """A body went over ``limits.max_body`` (a chunked one; a declared length was refused at once)."""
        self._listener.counters.rejected += 1
        if ex.response_started or not self._exchanges or self._exchanges[0] is not ex:
            self._reject = 413  # answered after what is in flight, or closed mid-response
            raise _Refused("body too large")
        self._release_attempt(ex, reusable=False)  # the target got part of it: that connection goes
        ex.keep_alive = False
        ex.request_done = True
        ex.local = b"HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain\r\nContent-Length: 18\r\n"
        ex.local_body = b"Content Too Large\n"
        self._parsing = None
        self._reply_local(ex)
        self._reject = -1  # answered already
        raise _Refused("body too large")

    def on_message_complete(self) -> None:
        self._fresh = True
        ex = self._parsing
        self._parsing = None
        if ex is None:
            return
        ex.request_done = True
        if ex.reply_when_read:
            self._reply_local(ex)
            return
        if ex.discard_rest:
            self._finish(ex, counted=True)
            return
        if ex.chunked:
            self._send_body(ex, b"0\r\n\r\n")
        if ex.deferred:
            self._undefer(ex)
        if ex.body_size:
            conn = ex.conn
            if conn is not None and conn.ready and not ex.upgrade:
                conn.arm(ex)  # the per-try timeout runs from the request's last byte

    # ------------------------------------------------------------------ request path

    def _send_body(self, ex: Exchange, data: bytes) -> None:
        if ex.done or ex.local is not None:
            # answered (or to be answered) here, or the target replied early: drop the rest
            self.last_active = self._listener.tick
            return
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
            if ex.deferred and ex.buffered >= DEFER_LIMIT:
                self._undefer(ex)  # a large upload: validated so far, streamed from here
            elif ex.buffered > BUFFER_LIMIT:
                self._pause(_P_BUFFER)

    def _undefer(self, ex: Exchange) -> None:
        ex.deferred = False
        if self._exchanges and self._exchanges[0] is ex:
            self._dispatch(ex)

    def _tunnel_in(self, data: bytes) -> None:
        """Bytes after an upgrade request: to the target as they come."""
        self.last_active = self._listener.tick
        tunnel = self._tunnel
        if tunnel is not None:
            tunnel.write(data)
            return
        ex = self._exchanges[-1] if self._exchanges else None
        if ex is None or ex.done:
            return
        ex.request_done = True
        self._send_body(ex, data)

    def _dispatch(self, ex: Exchange) -> None:
        """Answer ``ex`` here, or choose a target and an upstream connection (first try or retry)."""
        if ex.local is not None:
            self._reply_local(ex)
            return
        group = ex.group
        backend = group.pick(ex.tried, ex.key, ex.sticky) if group is not None else None
        if backend is None:
            if ex.last_failure is not None:
                self._reply_error(ex, _STATUS_FOR[ex.last_failure])
            else:
                self._local_error(ex, 503)  # no target serves: answered once the request is read
            return
        assert group is not None
        ex.attempts += 1
        if ex.attempts == 1:
            group.budget.deposit()
            group.counters.requests += 1
        ex.backend = backend
        ex.sent_at = self._listener.time()
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
        backend.connections += 1
        try:
            async with asyncio.timeout(self._listener.settings.connect_timeout):
                _, conn = await loop.create_connection(lambda: UpstreamConnection(backend), backend.host, backend.port)
        except TimeoutError:
            self._attempt_failed(ex, Failure.CONNECT_TIMEOUT, f"connect to {backend.address}: timeout")
            return
        except OSError as exc:
            self._attempt_failed(ex, Failure.CONNECT, f"connect to {backend.address}: {exc}")
            return
        if ex.done or self._transport.is_closing() or ex.backend is not backend:
            backend.put_idle(conn, self._listener.tick)
            return
        self._attach(ex, conn, reused=False)

    def _attach(self, ex: Exchange, conn: UpstreamConnection, reused: bool) -> None:
        ex.conn = conn
        group = ex.group
        timeout = None
        if group is not None:
            timeout = group.retry.per_try_timeout
        conn.start(self, ex, reused, timeout or self._listener.settings.response_timeout)
        if group is not None and group.hedge_delay and ex.idempotent and not ex.upgrade and ex.hedge_backend is None:
            ex.hedge_at = ex.sent_at + group.hedge_delay
            self._listener.hedging[ex] = self
        if ex.body:
            body, ex.body = ex.body, []
            ex.buffered = 0
            conn.write(b"".join([ex.head, *body]))
            self._resume(_P_BUFFER)
        else:
            conn.write_soon(ex.head, self._listener)
        if self._write_paused:
            conn.pause_reading()

    def _release_attempt(self, ex: Exchange, reusable: bool) -> None:
        if ex.hedge_at:
            ex.hedge_at = 0.0
            self._listener.hedging.pop(ex, None)
        if ex.hedge_backend is not None:
            self._release_hedge(ex)
        backend, conn = ex.backend, ex.conn
        ex.conn = None
        if backend is not None:
            backend.in_flight -= 1
            ex.backend = None
        if conn is not None:
            conn.finish(reusable and not ex.upgrade)
            if self._paused & _P_UPSTREAM:
                self._resume(_P_UPSTREAM)  # that connection's full buffer no longer holds us back

    def _policy(self, ex: Exchange) -> RetryPolicy:
        forced = self._listener.settings.retry
        if forced is not None:
            return forced
        return ex.group.retry if ex.group is not None else RetryPolicy()

    def retry_verdict(self, ex: Exchange, failure: Failure) -> Verdict:
        group = ex.group
        verdict = self._policy(ex).decide(
            failure,
            attempts_made=ex.attempts,
            replayable=ex.replay is not None,
            response_started=ex.response_started,
            idempotent=ex.idempotent,
            budget=group.budget if group is not None else None,
        )
        if verdict is Verdict.BUDGET_EXHAUSTED and group is not None:
            group.counters.budget_exhausted += 1
        return verdict

    def _attempt_failed(self, ex: Exchange, failure: Failure, detail: str, verdict: Verdict | None = None,
                        *, passive: bool = True) -> None:
        """An attempt failed before any response byte reached the client.

        ``passive``: the failure is the target's doing and is reported to the group's
        passive detector (not a deregistration cut nor the client's request deadline).
        """
        if ex.done:
            return
        backend = ex.backend
        if backend is not None and failure is not Failure.STALE:
            backend.errors += 1
            ex.tried.append(backend)
        if failure is Failure.STALE:
            ex.attempts -= 1
        self._release_attempt(ex, reusable=False)
        if passive and backend is not None and failure is not Failure.STALE and ex.group is not None:
            observe = ex.group.observe
            if observe is not None and not backend.draining:
                now = self._listener.time()
                # may eject the target: it leaves the serving set before the retry below picks
                observe(backend.index, _OUTCOME[failure], now - ex.sent_at, now)
        if self._closing and self._transport.is_closing():
            ex.done = True
            return
        ex.last_failure = failure if failure is not Failure.STALE else ex.last_failure
        if verdict is None:
            verdict = self.retry_verdict(ex, failure)
        group = ex.group
        if verdict.retry:
            if verdict is Verdict.RETRY:
                self._listener.counters.retries += 1
                if group is not None:
                    group.counters.retries += 1
                if backend is not None:
                    backend.retries += 1
            log.debug("retrying after %s on %s: %s", failure.value, backend.id if backend else "?", detail)
            assert ex.replay is not None
            ex.body = list(ex.replay)
            ex.buffered = ex.body_size
            self._dispatch(ex)
            return
        log.debug("request failed (%s, %s): %s", failure.value, verdict.value, detail)
        self._reply_error(ex, _STATUS_FOR[failure])

    # ------------------------------------------------------------------ response path

    def response_head(self, ex: Exchange, status: int, head: bytes, lower: bytes, plain: bool = False) -> bool:
        """Queue the response head for the client. Returns True when the body is chunk-encoded for it.

        ``head`` is the target's status line and header lines as received (each ending in
        CRLF, the blank line excluded), ``lower`` the same lower-cased. Hop-by-hop lines
        (and those the target's ``Connection`` header names) are cut out with one regex;
        no per-header Python work is done. ``plain``: an HTTP/1.1 head with no hop-by-hop
        line left (the express lane cut them), ``lower`` still the head as received.
        """
        ex.response_started = True
        ex.status = status
        upgrade_value = b""
        if status == 101:
            m = _UPGRADE_VALUE.search(lower)
            if m is not None:
                upgrade_value = head[m.start(1):m.end(1)]
        if not plain:
            head = strip_hop_by_hop(head, lower)
            if not head.startswith(b"HTTP/1.1 "):
                head = b"HTTP/1.1 " + head[9:]  # an HTTP/1.0 target; we speak 1.1 to the client
        parts = [head]
        append = parts.append
        group = ex.group
        backend = ex.backend
        if group is not None and group.stickiness is not None and backend is not None:
            append(group.stickiness.set_cookie(group.token(backend)))
        if ex.group_cookie is not None:
            append(ex.group_cookie)
        if status == 101:
            append(b"Connection: Upgrade\r\nUpgrade: " + upgrade_value + b"\r\n\r\n")
            self._wbuf.append(b"".join(parts))
            return False
        chunk_out = False
        if not (ex.head_only or status == 204 or status == 304) and b"\r\ncontent-length:" not in lower:
            if ex.version10:
                ex.keep_alive = False  # close-delimited for an HTTP/1.0 client
            else:
                chunk_out = True
                append(_chunked_header(head, lower))
        if ex.upgrade:
            ex.keep_alive = False  # the upgrade was refused: the connection cannot carry HTTP on
        if not ex.keep_alive or self._closing:
            append(b"Connection: close\r\n\r\n")
        elif ex.version10:
            append(b"Connection: keep-alive\r\n\r\n")
        else:
            append(b"\r\n")
        self._wbuf.append(b"".join(parts))
        if status >= 500 and backend is not None:
            backend.errors += 1
        return chunk_out

    def interim(self, ex: Exchange, status: int, reason: bytes) -> None:
        if ex.version10:
            return  # RFC 9110 15.2: no 1xx to an HTTP/1.0 client
        ex.response_started = True  # a byte reached the client: no retry from here on
        self._wbuf.append(b"HTTP/1.1 %d %s\r\n\r\n" % (status, reason))

    def response_body(self, data: bytes) -> None:
        self._wbuf.append(data)

    def flush(self) -> None:
        """Write what the last upstream reads produced, in one write, now."""
        buf = self._wbuf
        if buf:
            self._wbuf = []
            if not self._transport.is_closing():
                self._transport.write(buf[0] if len(buf) == 1 else b"".join(buf))

    def flush_soon(self) -> None:
        """Write ``_wbuf`` at the end of this loop round (see Listener.defer). Anything that writes
        to the transport directly, or closes it, calls :meth:`flush` first, so order is kept."""
        if self._wbuf and not self._wdeferred:
            if self._listener.defer(self):
                self._wdeferred = True
            else:
                self.flush()

    def write_deferred(self) -> None:
        self._wdeferred = False
        self.flush()

    def response_done(self, ex: Exchange, upstream_reusable: bool) -> None:
        backend = ex.backend
        if backend is not None:
            backend.observe(ex.status, self._listener.time() - ex.sent_at)
            if self._listener.access_log is not None:
                self._listener.access_log.record(self._peer_ip, ex, backend.id)
        self._release_attempt(ex, upstream_reusable and ex.request_done)
        if not ex.request_done and ex.keep_alive and not self._closing and not ex.upgrade:
            # Answered before its body ended (an early 413, a target that does not read it):
            # the rest of the body is read and dropped, then the connection carries on.
            ex.done = True
            ex.discard_rest = True
            self.flush()
            self._listener.counters.responses += 1
            return
        if not ex.request_done:
            ex.keep_alive = False
        self._finish(ex)

    def observed(self, ex: Exchange, status: int) -> None:
        """A response head arrived (and goes to the client): tell the passive detector."""
        group, backend = ex.group, ex.backend
        if group is not None and backend is not None:
            observe = group.observe
            if observe is not None:
                now = self._listener.time()
                observe(backend.index, _HTTP_5XX if status >= 500 else _OK, now - ex.sent_at, now)

    def upstream_failed(self, ex: Exchange, failure: Failure, detail: str) -> None:
        if ex.response_started:
            # A response byte reached the client: nothing can be retried or answered.
            if ex.backend is not None:
                ex.backend.errors += 1
            self._release_attempt(ex, reusable=False)
            ex.done = True
            self._listener.counters.failed += 1
            if ex.group is not None:
                ex.group.counters.failed += 1
            self.flush()
            self.abort()
            return
        self._attempt_failed(ex, failure, detail)

    def start_tunnel(self, ex: Exchange, conn: UpstreamConnection) -> None:
        """The target switched protocols: from now on bytes flow both ways unparsed."""
        self._tunnel = conn
        self._listener.counters.upgrades += 1
        self.last_active = self._listener.tick
        if not self._upgraded:
            self._upgraded = True  # a 101 to a request the parser did not see as an upgrade

    def tunnel_out(self, data: bytes) -> None:
        self.last_active = self._listener.tick
        self._transport.write(data)

    def tunnel_closed(self) -> None:
        self.flush()
        self._closing = True
        self._transport.close()

    def tunnel_eof(self) -> bool:
        """The target ended its direction; True when the client had ended its own too."""
        self.flush()
        if self._transport.can_write_eof():
            self._transport.write_eof()
        return self._eof

    def _finish(self, ex: Exchange, counted: bool = False) -> None:
        ex.done = True
        if not counted:
            self._listener.counters.responses += 1
        if self._exchanges and self._exchanges[0] is ex:
            self._exchanges.popleft()
        self.last_active = self._listener.tick
        if self._error_after:
            self.flush()
            self._transport.write(_status_reply(self._error_after))  # for a refused pipelined request
            self._error_after = 0
            self._linger()
            return
        if not ex.keep_alive or self._closing:
            self.flush()
            self._closing = True
            self._transport.close()
            return
        self.flush_soon()
        if self._exchanges:
            nxt = self._exchanges[0]
            if len(self._exchanges) == 1 and self._paused:
                self._resume(_P_PIPELINE)
            if not nxt.deferred:
                self._dispatch(nxt)
        elif self._paused:
            self._resume(_P_PIPELINE)

    def _local_error(self, ex: Exchange, status: int) -> None:
        self._listener.counters.failed += 1
        if ex.group is not None:
            ex.group.counters.failed += 1
        reason = _REASONS.get(status, b"Error")
        ex.local = b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s" % (
            status, reason, len(reason) + 1, b"Retry-After: 1\r\n" if status == 503 else b"")
        ex.local_body = reason + b"\n"
        self._reply_local(ex)

    def _reply_local(self, ex: Exchange) -> None:
        """A response made here: a redirect, a fixed response, 503 or 501 for CONNECT.

        It waits until the request is read whole (its body is dropped), so that the
        connection stays usable; but not for a client that waits for 100 Continue.
        """
        if not ex.request_done and not ex.expect and not ex.upgrade:
            ex.reply_when_read = True
            return
        if not ex.request_done or ex.upgrade:
            ex.keep_alive = False  # the rest of its body (or tunnel bytes) may still come: close after
        close = not ex.keep_alive or self._closing
        assert ex.local is not None
        if close:
            tail = b"Connection: close\r\n\r\n"
        elif ex.version10:
            tail = b"Connection: keep-alive\r\n\r\n"
        else:
            tail = b"\r\n"
        self.flush()
        self._transport.write(ex.local + tail + (b"" if ex.head_only else ex.local_body))
        ex.response_started = True
        if self._listener.access_log is not None:
            ex.status = int(ex.local[9:12])
            self._listener.access_log.record(self._peer_ip, ex, "-")
        self._finish(ex)

    def _reply_error(self, ex: Exchange, status: int) -> None:
        self._release_attempt(ex, reusable=False)
        self._listener.counters.failed += 1
        if ex.group is not None:
            ex.group.counters.failed += 1
        if not ex.request_done or ex.upgrade:
            ex.keep_alive = False  # the rest of its body is still coming: close after
        close = not ex.keep_alive or self._closing
        extra = b"Retry-After: 1\r\n" if status == 503 else b""
        self.flush()
        self._transport.write(_status_reply(status, close=close, extra=extra))
        ex.response_started = True
        ex.status = status
        if self._listener.access_log is not None:
            self._listener.access_log.record(self._peer_ip, ex, "-")
        self._finish(ex)

    def _fail_protocol(self, status: int) -> None:
        """Unparseable input: answer ``status`` (after what is in flight) and close."""
        self._fresh = False  # the parser stopped inside a message
        self._pause(_P_PIPELINE)
        broken = self._parsing  # the error is inside this request's body: it can never complete
        self._parsing = None
        pending = [ex for ex in self._exchanges if not ex.done]
        if broken is not None and broken in pending:
            if broken.response_started:
                self._release_attempt(broken, reusable=False)
                broken.done = True
                self.abort()
                return
            self._release_attempt(broken, reusable=False)  # a target got part of it: that connection goes
            broken.done = True
            pending.remove(broken)
            self._exchanges = deque(pending)
        if not pending:
            self.flush()
            self._transport.write(_status_reply(status))
            self._linger()
        else:
            for ex in pending[1:]:
                ex.done = True
            del pending[1:]
            self._exchanges = deque(pending)
            pending[0].keep_alive = False
            self._error_after = status

    def _linger(self) -> None:
        """Close after an error reply without losing it: stop sending, read and drop what the client
        is still sending for a moment (closing with unread input would send a reset, and the client
        might never read the reply), then close."""
        self._closing = True
        self._lingering = True  # later bytes are dropped unparsed
        t = self._transport
        if self._paused:
            self._paused = 0
            t.resume_reading()
        try:
            t.write_eof()
        except (OSError, RuntimeError, NotImplementedError):
            t.close()
            return
        asyncio.get_running_loop().call_later(LINGER, t.abort)

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
        if self._tunnel is not None:
            if now - self.last_active > s.tunnel_timeout:
                self.abort()
            return
        if self._exchanges:
            ex = self._exchanges[0]
            if ex.discard_rest and now - self.last_active > s.idle_timeout:
                self.abort()
                return
            if s.request_timeout and not ex.done and ex.started and now - ex.started > s.request_timeout:
                if ex.response_started:
                    self.upstream_failed(ex, Failure.TIMEOUT, "request timeout")
                else:
                    ex.replay = None  # no retry past the request deadline
                    self._attempt_failed(ex, Failure.TIMEOUT, "request timeout", passive=False)
            return
        if self.head_started is not None:
            if now - self.head_started > s.header_timeout:
                self._transport.write(_status_reply(408))
                self.abort()
        elif now - self.last_active > s.idle_timeout:
            self.abort()

    # ------------------------------------------------------------------ hedging

    def fire_hedge(self, ex: Exchange) -> None:
        """The hedge delay passed without a response head: send a copy to another target."""
        ex.hedge_at = 0.0
        group, conn = ex.group, ex.conn
        if ex.done or group is None or conn is None or ex.hedge_backend is not None or self._transport.is_closing():
            return
        if not may_hedge(idempotent=ex.idempotent, replayable=ex.replay is not None, request_done=ex.request_done,
                         upgrade=ex.upgrade, response_started=ex.response_started, waiting=not conn.got_bytes):
            return
        exclude = [*ex.tried, ex.backend] if ex.backend is not None else ex.tried
        backend = group.pick(exclude, ex.key, None)
        if backend is None or not group.budget.withdraw():
            return
        self._listener.counters.hedges += 1
        ex.hedge_backend = backend
        ex.hedge_sent_at = self._listener.time()
        backend.in_flight += 1
        backend.requests += 1
        idle = backend.take_idle()
        if idle is not None:
            assert isinstance(idle, UpstreamConnection)
            self._attach_hedge(ex, idle, reused=True)
        else:
            asyncio.get_running_loop().create_task(self._connect_hedge(ex, backend))

    async def _connect_hedge(self, ex: Exchange, backend: Backend) -> None:
        loop = asyncio.get_running_loop()
        backend.connections += 1
        try:
            async with asyncio.timeout(self._listener.settings.connect_timeout):
                _, conn = await loop.create_connection(lambda: UpstreamConnection(backend), backend.host, backend.port)
        except (TimeoutError, OSError):
            if ex.hedge_backend is backend and ex.hedge is None:
                sent = ex.hedge_sent_at
                self._release_hedge(ex)
                self._observe(ex.group, backend, int(Outcome.CONNECT), sent)
            return
        if (ex.hedge_backend is not backend or ex.hedge is not None or ex.done or ex.response_started
                or self._transport.is_closing()):
            backend.put_idle(conn, self._listener.tick)  # the race is over (its in-flight was released)
            return
        self._attach_hedge(ex, conn, reused=False)

    def _attach_hedge(self, ex: Exchange, conn: UpstreamConnection, reused: bool) -> None:
        conn.hedge = True
        ex.hedge = conn
        group = ex.group
        timeout = group.retry.per_try_timeout if group is not None else None
        conn.start(self, ex, reused, timeout or self._listener.settings.response_timeout)
        assert ex.replay is not None
        conn.write(b"".join([ex.head, *ex.replay]))

    def _release_hedge(self, ex: Exchange) -> None:
        conn, backend = ex.hedge, ex.hedge_backend
        ex.hedge = ex.hedge_backend = None
        if backend is not None:
            backend.in_flight -= 1
        if conn is not None:
            conn.hedge = False
            conn.finish(False)

    def _observe(self, group: BackendGroup | None, backend: Backend, outcome: int, sent_at: float) -> None:
        if group is not None and group.observe is not None and not backend.draining:
            now = self._listener.time()
            group.observe(backend.index, outcome, now - sent_at, now)

    def settle_hedge(self, ex: Exchange, winner: UpstreamConnection, status: int) -> bool:
        """Two attempts race and ``winner`` got a response head first. True: go on with it (the
        other is dropped); False: it answered 5xx while the other is still out: it is dropped and
        the other carries on."""
        drop = status >= 500 and ex.hedge is not None and ex.conn is not None
        if winner is ex.hedge:
            hb = ex.hedge_backend
            assert hb is not None
            if drop:
                sent = ex.hedge_sent_at
                self._release_hedge(ex)
                self._observe(ex.group, hb, _HTTP_5XX, sent)
                return False
            loser_conn, loser_backend = ex.conn, ex.backend
            ex.conn, ex.backend, ex.sent_at = winner, hb, ex.hedge_sent_at
            ex.hedge = ex.hedge_backend = None
            winner.hedge = False
            if loser_backend is not None:
                loser_backend.in_flight -= 1
            if loser_conn is not None:
                loser_conn.finish(False)
            return True
        if drop:
            self._promote_hedge(ex, _HTTP_5XX)
            return False
        self._release_hedge(ex)  # a slower hedge says nothing about its target: not observed
        return True

    def _promote_hedge(self, ex: Exchange, outcome: int) -> None:
        """The first attempt failed while its hedge is out: the hedge becomes the attempt."""
        old_conn, old_backend, old_sent = ex.conn, ex.backend, ex.sent_at
        hedge = ex.hedge
        assert hedge is not None
        ex.conn, ex.backend, ex.sent_at = hedge, ex.hedge_backend, ex.hedge_sent_at
        ex.hedge = ex.hedge_backend = None
        hedge.hedge = False
        if old_backend is not None:
            old_backend.in_flight -= 1
            old_backend.errors += 1
            ex.tried.append(old_backend)
            self._observe(ex.group, old_backend, outcome, old_sent)
        if old_conn is not None:
            old_conn.finish(False)

    def attempt_lost(self, ex: Exchange, conn: UpstreamConnection, failure: Failure) -> bool:
        """One of two racing attempts failed. True when the other carries on (nothing else to do)."""
        if ex.done or ex.response_started or ex.hedge is None:
            return False
        if conn is ex.hedge:
            hb, sent = ex.hedge_backend, ex.hedge_sent_at
            self._release_hedge(ex)
            if hb is not None and failure is not Failure.STALE:
                hb.errors += 1
                self._observe(ex.group, hb, _OUTCOME[failure], sent)
            return True
        if conn is ex.conn:
            self._promote_hedge(ex, _OUTCOME.get(failure, int(Outcome.RESET)))
            return True
        return False

    def rescue(self, ex: Exchange, conn: UpstreamConnection) -> int:
        """Move ``ex`` off its ejected target now. Not charged to the retry budget: the pool keeps a
        target able to serve, and these would be retried at their per-try timeout anyway."""
        verdict = self._policy(ex).decide(
            Failure.TIMEOUT, attempts_made=ex.attempts, replayable=ex.replay is not None,
            response_started=ex.response_started, idempotent=ex.idempotent, budget=None)
        if not verdict.retry:
            return 0
        conn.detach_timer()
        self._attempt_failed(ex, Failure.TIMEOUT, f"{conn.backend.id} ejected", verdict)
        self.flush()
        return 1

    def cut(self, backend: Backend) -> int:
        for ex in self._exchanges:
            if ex.backend is backend and not ex.done:
                if ex.response_started or self._tunnel is not None:
                    self.upstream_failed(ex, Failure.RESET, f"{backend.id} deregistered")
                else:
                    ex.replay = None
                    self._attempt_failed(ex, Failure.RESET, f"{backend.id} deregistered", passive=False)
                return 1
        return 0

    def close_when_idle(self) -> None:
        self._closing = True
        if not self._exchanges:
            self._transport.close()

    def abort(self) -> None:
        self._closing = True
        t = self._transport
        if t.is_closing():
            t.abort()  # asked again (by a timeout sweep): a client that reads nothing is dropped
        else:
            t.close()


_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})
_EXPRESS_HASH = frozenset({"ip", "uri"})  # hash keys the express lane can compute (no headers needed)
_REDIRECT_REASONS = {
    301: b"Moved Permanently",
    302: b"Found",
    303: b"See Other",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
}
_NOT_IMPLEMENTED_HEAD = b"HTTP/1.1 501 Not Implemented\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n"
_TOO_MANY_HEAD = (
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: 18\r\nRetry-After: 1\r\n"
)


def _host_only(host: bytes) -> bytes:
    i = host.rfind(b":")
    return host[:i] if i > 0 and not host.endswith(b"]") else host


class UpstreamConnection(asyncio.Protocol):
    """A connection to one backend, reused across exchanges while keep-alive holds."""

    __slots__ = (
        "_body_mode",
        "_chunk_out",
        "_client",
        "_ex",
        "_fresh",
        "_hbuf",
        "_hpos",
        "_in_body",
        "_lost",
        "_obuf",
        "_parser",
        "_paused",
        "_retry_status",
        "_reused",
        "_timeout",
        "_transport",
        "_tunnel",
        "_waiting",
        "backend",
        "deadline",
        "eof_seen",
        "got_bytes",
        "hedge",
        "idle_since",
        "keep_alive",
        "ready",
    )

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._transport: asyncio.Transport = None  # type: ignore[assignment]
        self._parser = httptools.HttpResponseParser(self)
        self._client: ClientConnection | None = None
        self._ex: Exchange | None = None
        self._fresh = True  # the parser is between messages with nothing buffered: the express lane may run
        self._hbuf = b""  # bytes of the response head(s) being received
        self._hpos = 0  # where the next head starts in _hbuf (after a 1xx)
        self._chunk_out = False
        self._in_body = False
        self._lost = False
        self._obuf: list[bytes] | None = None  # held back until the end of this loop round (write_soon)
        self._reused = False
        self._tunnel = False
        self._retry_status = False
        self.hedge = False  # the second of two racing attempts (hedging)
        self._waiting: set[UpstreamConnection] | None = None  # the listener's set while a head is awaited
        self._timeout = 0.0
        self._paused = False
        self.deadline = 0.0
        self._body_mode = 0  # 0: length or chunked, 2: delimited by the close
        self.got_bytes = False
        self.keep_alive = True
        self.ready = False
        self.idle_since = 0.0
        self.eof_seen = False

    def __repr__(self) -> str:
        state = "busy" if self._ex is not None else ("closed" if self._lost else "idle")
        return f"<UpstreamConnection {self.backend.id} {state}>"

    # -- pool interface
    def is_usable(self) -> bool:
        return not self._lost and self._ex is None and not self._transport.is_closing()

    def close(self) -> None:
        self._lost = True
        self._obuf = None  # not sent yet: dropped with the connection
        t = self._transport
        if t.get_write_buffer_size():
            t.abort()  # bytes for a target we gave up on (it may not read them): dropped
        else:
            t.close()

    # -- transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._cancel_timer()
        ex, client = self._ex, self._client
        if ex is None or client is None or ex.done:
            return
        if self._tunnel:
            client.tunnel_closed()
            client.response_done(ex, False)
            return
        if self._in_body:
            if self._body_mode == 2:
                self._end_response(reusable=False)  # close-delimited body: the close ends it
                client.flush()
            else:
                client.upstream_failed(ex, Failure.RESET, "upstream closed mid-response")
            return
        if not self.got_bytes:
            kind = Failure.STALE if self._reused else Failure.RESET
            self._fail(kind, f"upstream closed before responding ({exc or 'eof'})")
        else:
            self._fail(Failure.PROTOCOL, "upstream closed inside the response head")

    def _fail(self, failure: Failure, detail: str) -> None:
        """This attempt failed before its response head: tell the client connection."""
        ex, client = self._ex, self._client
        if ex is None or client is None or ex.done:
            return
        if ex.hedge is not None and client.attempt_lost(ex, self, failure):
            client.flush()
            return  # the racing attempt carries on
        client.upstream_failed(ex, failure, detail)

    def eof_received(self) -> bool | None:
        self.eof_seen = True
        if self._tunnel and self._client is not None:
            return None if self._client.tunnel_eof() else True
        return None

    def data_received(self, data: bytes) -> None:
        client = self._client
        if self._tunnel:
            if client is not None:
                client.tunnel_out(data)
            return
        self.got_bytes = True
        if self._fresh and not self._in_body and not self._hbuf and self._express(data, client):
            return
        if not self._in_body:
            self._hbuf = self._hbuf + data if self._hbuf else data
            if len(self._hbuf) > MAX_HEAD and self._hbuf.find(b"\r\n\r\n", self._hpos) < 0:
                self._protocol_error("response head too large")
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._switched(client, data[exc.args[0]:])
            return
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _BadHead):
                self._protocol_error("bad header line ends")
            elif isinstance(exc.__context__, _BadFraming):
                self._protocol_error("Transfer-Encoding other than chunked")
            elif isinstance(exc.__context__, _HeadDone):
                if self._retry_status:
                    self._retry_status = False
                    ex = self._ex
                    if ex is not None and client is not None:
                        client._attempt_failed(ex, Failure.STATUS, f"{self.backend.id} answered 5xx", Verdict.RETRY)
                    return
                if self._ex is None:
                    self.close()
            else:
                self._protocol_error(str(exc))
        except httptools.HttpParserError as exc:
            self._protocol_error(str(exc))
        if client is not None:
            if self._in_body:
                # a body streaming on: written now, so that a full client buffer stops this
                # connection's reading before the loop reads it again (back-pressure)
                client.flush()
            else:
                client.flush_soon()

    def _switched(self, client: ClientConnection | None, rest: bytes) -> None:
        """The parser stopped after a 101 head: ``rest`` is the first tunnel data."""
        if not self._tunnel or client is None:
            self._protocol_error("unexpected protocol switch")
            return
        client.flush()
        if rest:
            client.tunnel_out(rest)

    def pause_writing(self) -> None:
        if self._client is not None:
            self._client.upstream_write_paused(True)

    def resume_writing(self) -> None:
        if self._client is not None:
            self._client.upstream_write_paused(False)

    def pause_reading(self) -> None:
        if not self._lost:
            self._paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._lost:
            self._paused = False
            self._transport.resume_reading()

    # -- exchange
    def start(self, client: ClientConnection, ex: Exchange, reused: bool, timeout: float) -> None:
        self._client = client
        self._ex = ex
        self._reused = reused
        self.got_bytes = False
        self._in_body = False
        self.ready = True
        self._timeout = timeout
        listener = client._listener
        self.deadline = listener.time() + timeout
        waiting = self._waiting = listener.waiting
        waiting.add(self)

    def arm(self, ex: Exchange) -> None:
        """Restart the per-try timeout (the request's last byte was just sent)."""
        if self._ex is ex and not self.got_bytes and self._client is not None:
            self.deadline = self._client._listener.time() + self._timeout

    def write(self, data: bytes) -> None:
        if self._obuf is not None:
            self.write_deferred()
        self._transport.write(data)

    def write_soon(self, data: bytes, listener: Listener) -> None:
        """Write ``data`` at the end of this loop round (see Listener.defer); :meth:`write` keeps order."""
        if self._obuf is not None:
            self._obuf.append(data)
        elif listener.defer(self):
            self._obuf = [data]
        else:
            self._transport.write(data)

    def write_deferred(self) -> None:
        buf = self._obuf
        if buf is not None:
            self._obuf = None
            if not self._lost:
                self._transport.write(buf[0] if len(buf) == 1 else b"".join(buf))

    def write_eof(self) -> None:
        if self._obuf is not None:
            self.write_deferred()
        if not self._lost and self._transport.can_write_eof():
            self._transport.write_eof()

    def finish(self, reusable: bool) -> None:
        """The exchange is over: back to the idle pool, or closed."""
        self._cancel_timer()
        client = self._client
        self._client = None
        self._ex = None
        self.ready = False
        if reusable and self.keep_alive and not self._lost and not self._tunnel:
            if self._paused:
                self._paused = False
                self._transport.resume_reading()
            self.backend.put_idle(self, client._listener.tick if client is not None else 0.0)
        else:
            self.close()

    def _cancel_timer(self) -> None:
        waiting = self._waiting
        if waiting is not None:
            waiting.discard(self)
            self._waiting = None

    @property
    def exchange(self) -> Exchange | None:
        return self._ex

    @property
    def client(self) -> ClientConnection | None:
        return self._client

    def detach_timer(self) -> None:
        self._cancel_timer()

    def timed_out(self) -> None:
        self._cancel_timer()
        ex, client = self._ex, self._client
        if ex is not None and client is not None and not ex.done and not self._tunnel:
            self._fail(Failure.TIMEOUT, f"no response from {self.backend.id} in time")
            client.flush()

    def _protocol_error(self, detail: str) -> None:
        ex, client = self._ex, self._client
        self.keep_alive = False
        if ex is not None and client is not None and not ex.done:
            if ex.hedge is not None and not self._in_body:
                self._fail(Failure.PROTOCOL, f"bad response from {self.backend.id}: {detail}")
                self.close()
                return
            client.upstream_failed(ex, Failure.PROTOCOL, f"bad response from {self.backend.id}: {detail}")
        else:
            self.close()

    def _express(self, data: bytes, client: ClientConnection | None) -> bool:
        """The express lane: ``data`` is one whole, plain response (see
        :func:`~fivenines.core.framing.express_response`) to a plain exchange: relayed as the
        full path would relay it, without the parser. False (nothing done) otherwise."""
        ex = self._ex
        if (client is None or ex is None or ex.done or ex.head_only or ex.upgrade or self.hedge
                or ex.hedge_backend is not None):
            return False
        got = express_response(data)
        if got is None:
            return False
        status, head, lower, end = got
        self._cancel_timer()
        client.observed(ex, status)
        self.keep_alive = True
        client.response_head(ex, status, head, lower, plain=True)
        client.response_body(data[end + 4:])
        client.response_done(ex, ex.request_done)
        return True

    # -- parser callbacks (no per-header ones: the head is taken whole from the bytes received)
    def on_message_begin(self) -> None:
        self._fresh = False

    def _take_head(self) -> tuple[bytes, bytes] | None:
        """The head just parsed, from the bytes received: (head, head lower-cased)."""
        buf = self._hbuf
        pos = self._hpos
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0 or end - pos > MAX_HEAD:
            return None  # bare-LF line ends, or too large: not accepted from a target
        self._hpos = end + 4
        head = buf[pos:end + 2]
        return head, head.lower()

    def on_headers_complete(self) -> None:
        ex, client = self._ex, self._client
        if ex is None or client is None:
            raise _HeadDone  # unsolicited response: the pool drops this connection
        taken = self._take_head()
        if taken is None:
            raise _BadHead
        head, lower = taken
        parser = self._parser
        status = parser.get_status_code()
        if status == 101:
            if not ex.upgrade:
                raise _HeadDone  # the parser would take what follows as a tunnel; we did not ask
            self._cancel_timer()
            client.response_head(ex, 101, head, lower)
            self._tunnel = True
            client.start_tunnel(ex, self)
            return
        if status < 200:
            if status == 100 and not ex.response_started and not self.hedge:
                client.interim(ex, status, b"Continue")
            return
        if ex.hedge_backend is not None and not client.settle_hedge(ex, self, status):
            raise _HeadDone  # this racing attempt is dropped (the connection is closed)
        self._cancel_timer()
        if status >= 500 and not ex.response_started and client.retry_verdict(ex, Failure.STATUS) is Verdict.RETRY:
            self.backend.observe(status, client._listener.time() - ex.sent_at)  # the target's answer, retried
            self.keep_alive = False
            self._retry_status = True
            raise _HeadDone
        client.observed(ex, status)
        has_cl = b"\r\ncontent-length:" in lower
        has_te = b"\r\ntransfer-encoding:" in lower
        if has_te:
            m = _TE_VALUE.search(lower)
            if m is None or m.group(1).strip() != b"chunked":
                raise _BadFraming  # another coding (gzip, ...) would reach the client mislabelled
        # ambiguous framing (both): never reuse this connection
        self.keep_alive = parser.should_keep_alive() and not (has_te and has_cl)
        self._chunk_out = client.response_head(ex, status, head, lower)
        if ex.head_only:
            self.keep_alive = False  # the parser would wait for a body a HEAD answer has not
            self._end_response(reusable=False)
            raise _HeadDone
        self._body_mode = 0 if (has_te or has_cl or status == 204 or status == 304) else 2
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
        self._fresh = True
        if not self._in_body:
            return  # a 1xx interim response
        self._end_response(reusable=True)

    def _end_response(self, reusable: bool) -> None:
        ex, client = self._ex, self._client
        self._in_body = False
        self._hbuf = b""
        self._hpos = 0
        if ex is None or client is None:
            return
        if self._chunk_out:
            client.response_body(b"0\r\n\r\n")
        client.response_done(ex, reusable and ex.request_done)


class _HeadDone(Exception):
    """Raised from a parser callback to stop parsing after a body-less response head."""


class _BadFraming(Exception):
    """Raised from a parser callback when a response's framing is not one fivenines forwards."""


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request the framing rules refuse."""


class _BadHead(Exception):
    """Raised from a parser callback when the head cannot be found in the bytes received."""


_HOP_LINE = re.compile(
    rb"\r\n(?:connection|keep-alive|proxy-connection|te|trailer|transfer-encoding|upgrade|"
    rb"proxy-authenticate|proxy-authorization)[ \t]*:[^\r\n]*",
    re.IGNORECASE,
)
_RARE_HOP = re.compile(rb"\r\n(?:keep-alive|proxy-|te[ \t]*:|trailer|transfer-encoding|upgrade)")
_TE_VALUE = re.compile(rb"\r\ntransfer-encoding[ \t]*:[ \t]*([^\r\n]*)")
_CONNECTION_VALUE = re.compile(rb"\r\nconnection[ \t]*:[ \t]*([^\r\n]*)")
_UPGRADE_VALUE = re.compile(rb"\r\nupgrade[ \t]*:[ \t]*([^\r\n]*?)[ \t]*(?=\r\n)")


def strip_hop_by_hop(head: bytes, lower: bytes) -> bytes:
    """``head`` (a status line and header lines, each ending in CRLF) without hop-by-hop lines.

    Removes the RFC 9110 hop-by-hop fields and every field a ``Connection`` header names.
    ``lower`` is ``head.lower()`` (computed once by the caller). The common case, a lone
    ``Connection: keep-alive`` line, costs a few ``find`` calls and one regex search.

    >>> strip_hop_by_hop(b"HTTP/1.1 200 OK\\r\\nA: 1\\r\\nConnection: keep-alive\\r\\nB: 2\\r\\n",
    ...                  b"http/1.1 200 ok\\r\\na: 1\\r\\nconnection: keep-alive\\r\\nb: 2\\r\\n")
    b'HTTP/1.1 200 OK\\r\\nA: 1\\r\\nB: 2\\r\\n'
    """
    i = lower.find(b"\r\nconnection:")
    if i >= 0:
        j = lower.find(b"\r\n", i + 2)
        if (lower[i + 13:j].strip() in _CONNECTION_TOKENS and lower.find(b"\r\nconnection:", j) < 0
                and _RARE_HOP.search(lower) is None):
            return head[:i] + head[j:]  # the usual case: one plain Connection line, nothing else
        named: set[bytes] = set()
        for v in _CONNECTION_VALUE.findall(lower):
            if v not in _CONNECTION_TOKENS:
                named.update(t.strip() for t in v.split(b","))
        named -= _CONNECTION_TOKENS
        named.discard(b"")
        if named:
            head = _header_lines(named).sub(b"", head)
        return _HOP_LINE.sub(b"", head)
    if _RARE_HOP.search(lower) is None:
        return head
    return _HOP_LINE.sub(b"", head)


_TE_VALUE = re.compile(rb"\r\ntransfer-encoding[ \t]*:[ \t]*([^\r\n]*?)[ \t]*(?=\r\n)")


def _chunked_header(head: bytes, lower: bytes) -> bytes:
    """The Transfer-Encoding line for a body we chunk: the target's other codings kept.

    >>> _chunked_header(b"HTTP/1.1 200 OK\\r\\n", b"http/1.1 200 ok\\r\\n")
    b'Transfer-Encoding: chunked\\r\\n'
    >>> h = b"HTTP/1.1 200 OK\\r\\nTransfer-Encoding: gzip, chunked\\r\\n"
    >>> _chunked_header(h, h.lower())
    b'Transfer-Encoding: gzip, chunked\\r\\n'
    """
    if b"\r\ntransfer-encoding" not in lower:
        return b"Transfer-Encoding: chunked\r\n"
    codings = [c.strip() for m in _TE_VALUE.finditer(lower) for c in head[m.start(1):m.end(1)].split(b",")]
    kept = [c for c in codings if c and c.lower() != b"chunked"]
    return b"Transfer-Encoding: " + b", ".join([*kept, b"chunked"]) + b"\r\n"


def _header_lines(names: set[bytes]) -> re.Pattern[bytes]:
    """A regex matching the header lines named (for headers a Connection header names)."""
    alts = b"|".join(re.escape(n) for n in sorted(names))
    return re.compile(rb"\r\n(?:" + alts + rb")[ \t]*:[^\r\n]*", re.IGNORECASE)
