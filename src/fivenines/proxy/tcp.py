"""TCP mode (``protocol: tcp`` on a listener): a byte stream to one target per connection.

Each accepted connection is paused until a target is connected: the group picks
among the targets serving *now* (healthy, not draining), so a new connection
never goes to an unhealthy target. A connect failure is tried on another target
(up to ``retries.attempts`` in all, within the group's retry budget); when none
is left the client connection is closed. Then bytes flow both ways unparsed:

* back-pressure: when one side's write buffer is full, the other side stops
  reading until it drains (``pause_writing``/``resume_writing``), so memory stays
  flat whatever the volume;
* half-close: an EOF from one side is passed on as an EOF to the other
  (``write_eof``), and the connection closes once both directions ended;
* a connection with no byte either way for the listener's ``idle`` timeout is
  closed (one sweep timer per listener);
* established connections stay on their target when it turns unhealthy (as NLB
  does); a draining target's connections are cut at the end of its
  deregistration delay (:meth:`TcpListener.cut`).

A ``tls`` listener is this listener with TLS in front (:mod:`fivenines.proxy.tls_serve` sets
``accept`` and ``tls``): its connections start here once their handshake is done, or, with
``passthrough``, once their ClientHello was read; its rules (``sni``, ``source_ip``) pick the
group of each connection (:meth:`TcpListener.group_of`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Final

from fivenines.core.balance import key_hash
from fivenines.core.limits import Admission
from fivenines.core.retry import Failure, Verdict
from fivenines.core.route import Forward, RequestView, Router, ip_to_int
from fivenines.proxy.backend import Backend, BackendGroup
from fivenines.proxy.listener import Counters, ProxySettings, bound_address, wait_then_cut
from fivenines.proxy.tls_socket import loop_server

log = logging.getLogger("fivenines.proxy.tcp")

BUFFER_LIMIT = 256 * 1024


def _native_pump() -> Any:
    """The C pump's class (fivenines/_pump.c), when fivenines.accel loaded the build; else None."""
    try:
        from fivenines import _pump
    except ImportError:
        return None
    return _pump.Pump


_PUMP: Final = _native_pump()
# what a pump tells (fivenines/_pump.c): the side that cannot take more, that took all, that
# sent EOF (passed on already), whose socket failed
BLOCKED: Final = 1
DRAINED: Final = 2
END: Final = 3
FAILED: Final = 4


class TcpListener:
    """What every connection of one TCP listener shares."""

    def __init__(self, group_for: Callable[[], BackendGroup | None], port: int,
                 settings: ProxySettings | None = None, *, router: Router | None = None,
                 groups: Mapping[str, BackendGroup] | None = None) -> None:
        self.group_for = group_for
        self.port = port
        self.settings = settings or ProxySettings()
        self.router = router if router is not None and not router.trivial else None  # tls: sni, source_ip
        self.groups: Mapping[str, BackendGroup] = groups or {}
        self.accept: Callable[[], asyncio.BaseProtocol] | None = None  # tls: the gate in front of TcpClient
        self.tls: Any = None  # tls: its TlsServing (proxy/tls_serve.py)
        self.counters = Counters()
        self.admission = Admission(self.settings.max_connections, self.settings.max_connections_per_ip)
        self.clients: set[TcpClient] = set()
        self.server: asyncio.Server | None = None
        self.tick = 0.0
        self._sweeper: asyncio.TimerHandle | None = None
        self.no_clients = asyncio.Event()

    async def start(self, host: str, port: int, *, reuse_port: bool = False, backlog: int = 2048,
                    sock: Any = None) -> None:
        loop = asyncio.get_running_loop()
        self.tick = loop.time()
        accept = self.accept or (lambda: TcpClient(self))
        self.server = await loop_server(loop, accept, host, port, reuse_port=reuse_port, backlog=backlog, sock=sock)
        self.port = bound_address(self.server)[1]
        self._sweeper = loop.call_later(self._interval(), self._sweep)
        if self.tls is not None:
            self.tls.start(loop, self.address)

    def group_of(self, sni: bytes, peer_ip: bytes) -> BackendGroup | None:
        """The group a new connection goes to: the first rule matching its server name (SNI) and
        source, else the default group."""
        router = self.router
        if router is None:
            return self.group_for()
        source = ip_to_int(peer_ip) if router.needs_source else None
        action = router.route(RequestView(b"", b"", sni=sni, source=source))
        if isinstance(action, Forward):
            return self.groups.get(action.single or action.choose())
        return None  # (a tls listener's rules only forward: spec.py)

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        return bound_address(self.server)

    def _interval(self) -> float:
        return max(0.05, min(1.0, self.settings.idle_timeout / 4))

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.tick = now
        limit = self.settings.idle_timeout
        for c in list(self.clients):
            c.notice_pumped(now)
            if now - c.last_active > limit:
                c.abort()
        self._sweeper = loop.call_later(self._interval(), self._sweep)

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    def in_flight(self) -> int:
        return len(self.clients)

    def rescue(self, backend: Backend) -> int:
        """Nothing to retry elsewhere: a TCP connection waits for no answer (see the HTTP listener's)."""
        return 0

    def cut(self, backend: Backend) -> int:
        n = 0
        for c in list(self.clients):
            if c.backend is backend:
                c.abort()
                n += 1
        return n

    async def drain(self, timeout: float) -> int:
        """Stop accepting; let open connections finish within ``timeout``; returns how many were cut."""
        self.stop_accepting()
        if self.tls is not None:
            self.tls.stop()
        cut = await wait_then_cut(self.clients, self.no_clients, timeout)
        if self._sweeper is not None:
            self._sweeper.cancel()
        return cut


class TcpClient(asyncio.Protocol):
    """A downstream connection and, once connected, its upstream."""

    __slots__ = (
        "_buffer",
        "_closed",
        "_eof_in",
        "_eof_out",
        "_forward",
        "_listener",
        "_moved",
        "_peer",
        "_peer_ip",
        "_pump",
        "_transport",
        "attempts",
        "backend",
        "group",
        "last_active",
        "sni",
        "tried",
        "upstream",
    )

    def __init__(self, listener: TcpListener) -> None:
        self._listener = listener
        self._transport: asyncio.Transport = None  # type: ignore[assignment]
        self._buffer: list[bytes] = []
        self._closed = False
        self._eof_in = False  # the client sent EOF
        self._eof_out = False  # the target sent EOF
        self._peer = ""  # the client's address as uvloop gave it: the admission's key (its hash kept)
        self._peer_ip = b""
        self.upstream: TcpUpstream | None = None
        self._forward: Callable[[bytes], object] | None = None  # the upstream transport's write
        self.backend: Backend | None = None
        self.group: BackendGroup | None = None
        self.tried: list[Backend] = []
        self.attempts = 0
        self.last_active = 0.0
        self._pump: Any = None  # the data phase in C (_start_pump), else the transports relay
        self._moved = 0
        self.sni = b""  # tls listeners: the server name the client sent (routing by sni)

    def __repr__(self) -> str:
        target = self.backend.id if self.backend else "-"
        return f"<TcpClient {self._peer_ip.decode()} -> {target}>"

    # -- client side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        transport.pause_reading()  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if peer else ""
        self._peer_ip = self._peer.encode()
        listener = self._listener
        listener.counters.connections += 1
        if not listener.admission.admit(self._peer):
            listener.counters.refused += 1  # over max_connections (per listener or per IP): refused
            self._closed = True
            transport.close()
            return
        listener.clients.add(self)
        self.last_active = listener.tick
        self.group = listener.group_for() if listener.router is None else listener.group_of(self.sni, self._peer_ip)
        self._try_next(None)

    def _try_next(self, failure: Failure | None) -> None:
        group = self.group
        if self._closed:
            return
        if group is not None and failure is not None:
            verdict = group.retry.decide(failure, attempts_made=self.attempts, replayable=True,
                                         response_started=False, idempotent=True, budget=group.budget)
            if verdict is not Verdict.RETRY:
                if verdict is Verdict.BUDGET_EXHAUSTED:
                    group.counters.budget_exhausted += 1
                self._give_up()
                return
            group.counters.retries += 1
            self._listener.counters.retries += 1
        key = None
        if group is not None and group.hash_on is not None and group.hash_on[0] == "ip":
            key = key_hash(self._peer_ip)
        backend = group.pick(self.tried, key) if group is not None else None
        if backend is None:
            self._give_up()
            return
        assert group is not None
        self.attempts += 1
        if self.attempts == 1:
            group.budget.deposit()
            group.counters.requests += 1
            self._listener.counters.requests += 1
        self.backend = backend
        backend.in_flight += 1
        backend.requests += 1
        backend.connections += 1
        asyncio.get_running_loop().create_task(self._connect(backend))

    async def _connect(self, backend: Backend) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._listener.settings.connect_timeout):
                _, up = await loop.create_connection(lambda: TcpUpstream(self), backend.host, backend.port)
        except (OSError, TimeoutError) as exc:
            backend.in_flight -= 1
            backend.errors += 1
            self.backend = None
            self.tried.append(backend)
            log.debug("tcp connect to %s failed: %r", backend.address, exc)
            self._try_next(Failure.CONNECT_TIMEOUT if isinstance(exc, TimeoutError) else Failure.CONNECT)
            return
        if self._closed:
            up.close()
            return
        self.upstream = up
        self._forward = up._transport.write
        if self._buffer:
            up.write(b"".join(self._buffer))
            self._buffer = []
        if self._eof_in:
            up.write_eof()
        elif not self._start_pump(up):
            self._transport.resume_reading()

    # -- the data phase in C
    def _start_pump(self, up: TcpUpstream) -> bool:
        """Hand the byte stream to the C pump (:mod:`fivenines._pump`) when it is built and both
        ends are plain sockets with nothing buffered: it reads each socket (a duplicate, so the
        transports keep theirs until they close) and sends on, with the loop's readers and writers
        as its only Python. Else the transports keep relaying (``data_received``)."""
        make = _PUMP
        if make is None:
            return False
        t, ut = self._transport, up._transport
        if t.get_extra_info("ssl_object") is not None or t.get_write_buffer_size() or ut.get_write_buffer_size():
            return False  # TLS ends here (tls listener) or bytes wait in a transport: they relay
        cs, us = t.get_extra_info("socket"), ut.get_extra_info("socket")
        if cs is None or us is None:
            return False
        a = os.dup(cs.fileno())
        try:
            b = os.dup(us.fileno())
        except OSError:
            os.close(a)
            return False
        # both transports stop reading (uvloop starts reading a new connection after connection_made,
        # whatever connection_made paused; what it read before is in _buffer, sent above)
        t.pause_reading()
        ut.pause_reading()
        pump = make(a, b, self._pump_event)
        loop = asyncio.get_running_loop()
        loop.add_reader(a, pump.read0)
        loop.add_reader(b, pump.read1)
        self._pump = pump
        return True

    def _pump_event(self, code: int, side: int) -> None:
        """What the pump tells about ``side`` (0 the client, 1 the target)."""
        pump = self._pump
        if pump is None:
            return
        loop = asyncio.get_running_loop()
        fds = pump.fds
        if code == BLOCKED:  # ``side`` takes no more for now: stop reading the other until it does
            loop.remove_reader(fds[1 - side])
            loop.add_writer(fds[side], pump.write0 if side == 0 else pump.write1)
        elif code == DRAINED:
            loop.remove_writer(fds[side])
            source = 1 - side
            if not (self._eof_in if source == 0 else self._eof_out):
                loop.add_reader(fds[source], pump.read0 if source == 0 else pump.read1)
        elif code == END:  # an EOF, passed on to the other side already (half-close)
            loop.remove_reader(fds[side])
            if side == 0:
                self._eof_in = True
            else:
                self._eof_out = True
            if self._eof_in and self._eof_out:
                self.abort()  # both directions ended
        else:  # FAILED: the client's socket or the target's
            self._unpump()
            if side == 0:
                self._transport.abort()
            elif self.upstream is not None:
                self.upstream._transport.abort()  # then upstream_lost closes the client

    def _unpump(self) -> None:
        """Stop the pump (its duplicate sockets closed, what it held dropped): the transports close next."""
        pump = self._pump
        if pump is None:
            return
        self._pump = None
        loop = asyncio.get_running_loop()
        for fd in pump.fds:
            loop.remove_reader(fd)
            loop.remove_writer(fd)
        pump.close()

    def notice_pumped(self, now: float) -> None:
        """The idle sweep: bytes the pump moved since the last sweep count as activity."""
        pump = self._pump
        if pump is not None:
            moved = pump.moved
            if moved != self._moved:
                self._moved = moved
                self.last_active = now

    def _give_up(self) -> None:
        self._listener.counters.failed += 1
        if self.group is not None:
            self.group.counters.failed += 1
        self.abort()

    def data_received(self, data: bytes) -> None:
        self.last_active = self._listener.tick
        forward = self._forward
        if forward is not None:
            forward(data)
        else:
            self._buffer.append(data)

    def eof_received(self) -> bool:
        self._eof_in = True
        up = self.upstream
        if up is not None:
            up.write_eof()
            if self._eof_out:
                self.abort()
        return True

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._unpump()
        if self._closed:
            return
        self._closed = True
        listener = self._listener
        listener.admission.release(self._peer)
        listener.clients.discard(self)
        if not listener.clients:
            listener.no_clients.set()
        if self.upstream is not None:
            self.upstream.close(listener.settings.idle_timeout)
            listener.counters.responses += 1
        self._release()

    def _release(self) -> None:
        if self.backend is not None:
            self.backend.in_flight -= 1
            self.backend = None

    def abort(self) -> None:
        self._unpump()
        t = self._transport
        if t.is_closing():
            t.abort()  # asked again (by the idle sweep): a client that reads nothing is dropped
        else:
            t.close()

    # -- from the upstream
    def upstream_eof(self) -> None:
        self._eof_out = True
        if self._transport.can_write_eof():
            self._transport.write_eof()
        if self._eof_in:
            self.abort()

    def upstream_lost(self) -> None:
        self._unpump()
        self._transport.close()  # flushes what is buffered first


class TcpUpstream(asyncio.Protocol):
    __slots__ = ("_back", "_client", "_lost", "_transport")

    def __init__(self, client: TcpClient) -> None:
        self._client = client
        self._back = client._transport.write  # bytes from the target go straight to the client
        self._transport: asyncio.Transport = None  # type: ignore[assignment]
        self._lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        client = self._client
        client.last_active = client._listener.tick
        self._back(data)

    def eof_received(self) -> bool:
        self._client.upstream_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._client.upstream_lost()

    def pause_writing(self) -> None:
        self._client._transport.pause_reading()

    def resume_writing(self) -> None:
        self._client._transport.resume_reading()

    def pause_reading(self) -> None:
        if not self._lost:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._lost:
            self._transport.resume_reading()

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    def write_eof(self) -> None:
        if not self._lost and self._transport.can_write_eof():
            self._transport.write_eof()

    def close(self, linger: float = 60.0) -> None:
        """Close after flushing what is buffered; a target that does not read it within
        ``linger`` seconds is dropped."""
        self._lost = True
        t = self._transport
        t.close()
        if t.get_write_buffer_size():
            asyncio.get_running_loop().call_later(linger, t.abort)
