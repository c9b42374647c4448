"""An HTTP listener: what every client connection of it shares (settings, counters, timers, pools).

The connections themselves are :class:`~fivenines.proxy.client.ClientConnection` (the client
side of each exchange) and :class:`~fivenines.proxy.upstream.UpstreamConnection` (the target
side); the life of an exchange is :mod:`fivenines.core.exchange`. This module sees them only
as :class:`ClientBase` and :class:`UpstreamBase`, which they extend: it imports nothing of the
proxy above it (tests/unit/test_imports.py), and a listener is built with the class of its
client connections (:func:`fivenines.proxy.client.http_listener`). A listener runs the timers
of all its connections: one sweep for the slow timeouts (idle, client header, whole request,
tunnel, pooled upstream connections) and one watch for the per-try timeouts and the hedges
due, cheaper per request than a timer per attempt.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from fivenines.core.exchange import Exchange
from fivenines.core.framing import Limits
from fivenines.core.limits import Admission, RateLimiter
from fivenines.core.retry import RetryPolicy
from fivenines.core.route import Router
from fivenines.proxy.backend import Backend, BackendGroup
from fivenines.proxy.tls_socket import loop_server


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


class AccessLogSink(Protocol):
    """Where a listener reports finished exchanges when access logging is on."""

    def record(self, peer_ip: bytes, ex: Exchange, target: str) -> None: ...


class Deferred(asyncio.Protocol):
    """A connection whose writes a listener may hold to the end of the loop round (:meth:`Listener.defer`)."""

    __slots__ = ()

    def write_deferred(self) -> None:
        raise NotImplementedError


class ClientBase(Deferred):
    """What a listener does with its client connections (proxy/client.py's ClientConnection)."""

    __slots__ = ()

    def busy(self) -> bool:
        """An exchange is in flight."""
        raise NotImplementedError

    def check_timeouts(self, now: float, s: ProxySettings) -> None:
        raise NotImplementedError

    def close_when_idle(self) -> None:
        raise NotImplementedError

    def cut(self, backend: Backend) -> int:
        """Abort the exchange now on ``backend``; 1 if there was one."""
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def fire_hedge(self, ex: Exchange) -> None:
        """``ex``'s hedge delay passed without a response head."""
        raise NotImplementedError


class UpstreamBase(Deferred):
    """What a listener does with the upstream connections waiting for a response head."""

    __slots__ = ()

    def due(self, now: float) -> bool:
        """Its per-try deadline passed."""
        raise NotImplementedError

    def waits_on(self, backend: Backend) -> bool:
        raise NotImplementedError

    def timed_out(self) -> None:
        raise NotImplementedError

    def ejected(self) -> int:
        """Its target was ejected as hung or slow: 1 if its attempt moved elsewhere."""
        raise NotImplementedError


class Listener:
    """What every client connection of one listener shares. ``client`` makes the protocol of
    each accepted connection (:func:`fivenines.proxy.client.http_listener` gives the HTTP one)."""

    def __init__(
        self,
        group_for: Callable[[], BackendGroup | None],
        port: int,
        settings: ProxySettings | None = None,
        *,
        router: Router | None = None,
        groups: Mapping[str, BackendGroup] | None = None,
        client: Callable[[Listener], ClientBase] | None = None,
    ) -> None:
        self.client = client
        # https: TLS in front (proxy/tls_serve.py): the protocol of each accepted connection until
        # its handshake is done, and the listener's TlsServing; None for plain HTTP
        self.accept: Callable[[], asyncio.BaseProtocol] | None = None
        # https: what listens and accepts instead of the loop's server (tls_socket.TlsAccept),
        # made by start_server(loop, host, port, reuse_port, backlog, sock)
        self.start_server: Callable[[asyncio.AbstractEventLoop, str, int, bool, int, Any], Any] | None = None
        self.tls: Any = None
        self.group_for = group_for
        self.port = port
        self.settings = settings or ProxySettings()  # (sets port_bytes and forwarded_tail from port)
        self.router = router if router is not None and not router.trivial else None
        self.groups: Mapping[str, BackendGroup] = groups or {}
        self.counters = Counters()
        self.clients: set[ClientBase] = set()
        self.server: Any = None  # the loop's asyncio.Server, or https' TlsAccept (sockets, close())
        self._sweeper: asyncio.TimerHandle | None = None
        self._watcher: asyncio.TimerHandle | None = None
        self.tick = 0.0  # loop time of the last sweep: a coarse clock for the slow timeouts
        self.no_clients = asyncio.Event()  # set whenever the last client connection closes
        self.access_log: AccessLogSink | None = None  # None: no access log, and no cost
        # Attempts waiting for a response head, each with its deadline: checked by a timer
        # (cheaper per request than a timer per attempt; fires up to a tenth late).
        self.waiting: set[UpstreamBase] = set()
        self.hedging: dict[Exchange, ClientBase] = {}  # exchanges with a hedge planned at ex.hedge_at
        self.time: Callable[[], float] = lambda: 0.0
        # Connections with writes held back until the loop has handled every event of this
        # round (see defer); None until the listener runs (then writes are never held).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deferred: list[Deferred] = []
        s = self.settings
        self.admission = Admission(s.max_connections, s.max_connections_per_ip)
        self.rate: RateLimiter | None = RateLimiter(*s.rate_limit) if s.rate_limit else None

    def __repr__(self) -> str:
        return f"<Listener :{self.port} clients={len(self.clients)} waiting={len(self.waiting)}>"

    async def start(self, host: str, port: int, *, reuse_port: bool = False, backlog: int = 2048,
                    sock: Any = None) -> None:
        """Listen on ``host:port``, or on ``sock`` (already bound; e.g. handed over on a reload)."""
        make = self.client
        if make is None:
            raise RuntimeError("a Listener needs its client protocol: build it with proxy.client.http_listener")
        loop = asyncio.get_running_loop()
        # Latencies need finer than uvloop's loop.time() (1 ms, cached per iteration): the same
        # CLOCK_MONOTONIC, read directly, so values still compare with loop deadlines.
        self.time = time.monotonic
        self.tick = loop.time()
        self._loop = loop
        accept = self.accept
        if accept is None:
            accept = lambda: make(self)  # noqa: E731
        if self.start_server is not None:
            self.server = self.start_server(loop, host, port, reuse_port, backlog, sock)
        else:
            self.server = await loop_server(loop, accept, host, port, reuse_port=reuse_port, backlog=backlog, sock=sock)
        delay_first_ack(self.server)
        self._set_port(bound_address(self.server)[1])
        self._sweeper = loop.call_later(self.settings.sweep_interval(), self._sweep)
        self._watcher = loop.call_later(self._watch_interval(), self._watch)
        if self.tls is not None:
            self.tls.start(loop, self.address)

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

    def defer(self, conn: Deferred) -> bool:
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
        """Per-try timeouts: attempts whose response head is late; and hedges due."""
        loop = asyncio.get_running_loop()
        self._watcher = loop.call_later(self._watch_interval(), self._watch)  # first: an error here stops nothing
        now = self.time()  # the clock the deadlines were set with
        for conn in [c for c in self.waiting if c.due(now)]:
            conn.timed_out()
        if self.hedging:
            for ex, client in [(e, c) for e, c in self.hedging.items() if e.hedge_at <= now]:
                self.hedging.pop(ex, None)
                client.fire_hedge(ex)

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        return bound_address(self.server)

    def all_groups(self) -> list[BackendGroup]:
        out = list(self.groups.values())
        g = self.group_for()
        if g is not None and g not in out:
            out.append(g)
        return out

    def _sweep(self) -> None:
        """Close idle and too-slow connections (one timer for all of them)."""
        loop = asyncio.get_running_loop()
        s = self.settings
        self._sweeper = loop.call_later(s.sweep_interval(), self._sweep)  # first: an error here stops nothing
        now = loop.time()
        self.tick = now
        for c in list(self.clients):
            c.check_timeouts(now, s)
        older = now - s.upstream_idle_timeout
        for g in self.all_groups():
            for b in g.backends.values():
                if b.idle:
                    b.close_idle(older_than=older)

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
        for conn in [c for c in self.waiting if c.waits_on(backend)]:
            n += conn.ejected()
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
        if self.tls is not None:
            self.tls.stop()
        for c in list(self.clients):
            c.close_when_idle()
        cut = await wait_then_cut(self.clients, self.no_clients, timeout)
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        return cut


def delay_first_ack(server: Any) -> None:
    """Let an HTTP client's request be acknowledged by the response, not by an ACK of its own.

    A client sends its request as soon as its connection is up; the kernel acknowledges it at
    once (a new connection starts in quick-ACK mode) and the response follows microseconds
    later: one segment per connection for nothing, for both ends to handle. With quick ACKs off
    on the listening socket (Linux; set after ``listen``, the accepted connections take it on) the
    ACK rides on the response, as HAProxy's ``tcp-smart-accept`` does for HTTP by default. HTTP
    and HTTPS listeners only: in TCP mode the server may not speak first."""
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is None:  # pragma: no cover - not Linux
        return
    for sock in server.sockets:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, quickack, 0)
        except OSError:  # pragma: no cover - not a TCP socket
            pass


def bound_address(server: Any) -> tuple[str, int]:
    """Where an asyncio server listens: its first socket's address (for port 0, the port the
    kernel gave). ``server`` is read as Any: uvloop gives ``sockets`` as a list where typeshed
    says tuple, and the compiled code would check the annotation."""
    name = server.sockets[0].getsockname()
    return name[0], name[1]


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


def send_last_py(fd: int, data: bytes) -> int:
    """Send ``data`` on the socket ``fd`` with the end of the sending direction in the same segment:
    held back (``MSG_MORE``), then ``shutdown(SHUT_WR)``, which sets the FIN on the segment still
    held and sends it. The bytes sent; 0 when the socket took none (full, or failed: the transport's
    own write then meets the same and reports it). A partial send does not shut down: the rest is
    the caller's to write. The specification of ``_pump.send_last`` (C: no duplicate socket), which
    ``Forwarder.flush(last=True)`` calls for the last answer of a connection that closes."""
    with socket.socket(fileno=os.dup(fd)) as s:
        try:
            n = s.send(data, socket.MSG_MORE | socket.MSG_NOSIGNAL | socket.MSG_DONTWAIT)
        except OSError:
            return 0
        if n == len(data):
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        return n


def _native_send_last() -> Callable[[int, bytes], int]:
    """``_pump.send_last`` when fivenines.accel loaded the build; else its Python twin."""
    try:
        from fivenines import _pump
    except ImportError:
        return send_last_py
    return _pump.send_last


send_last: Final = _native_send_last()
