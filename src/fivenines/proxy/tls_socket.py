"""HTTPS on the socket itself: the handshake and every record read and written by OpenSSL on the
connection's socket, with the loop's readers and writers.

The loop's SSL protocol (uvloop's, or asyncio's) runs TLS over memory BIOs: each read is copied
from a transport into OpenSSL and back out, through a protocol object, an application transport
and a future for the handshake, all made per connection. An https listener instead accepts on
its own listening socket (:class:`TlsAccept`) and gives each connection a :class:`TlsConnection`:
``SSLContext._wrap_socket`` on the socket (the C object ``ssl.SSLSocket`` is built on, without
its Python layer), ``do_handshake`` when the socket is readable (or writable), then ``read`` and
``write`` straight on the socket. What a connection is for the HTTP protocol does not change: a
:class:`TlsConnection` is its transport (``write``, ``close``, ``pause_reading``, flow control),
and its ``ssl_object`` (for SNI and client certificates).

What :mod:`fivenines.proxy.tls_serve`'s gate does for a TLS connection is done here the same way:
a place among the handshakes in progress (``limits.max_handshakes``: over it the connection is
closed at once), ``timeouts.handshake`` as the handshake's deadline, the counters, SNI and mutual
TLS through the listener's contexts (the SNI callback gets the :class:`TlsConnection`, which
forwards ``context`` to OpenSSL's object), and a reload's new certificates for new handshakes only.
"""

from __future__ import annotations

import _socket
import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

log = logging.getLogger("fivenines.tls")

_WantRead = ssl.SSLWantReadError
_WantWrite = ssl.SSLWantWriteError
_Closed = ssl.SSLZeroReturnError
READ_SIZE = 16384  # a TLS record holds at most 16 KiB: one read, one record (pending() says when more wait)
ACCEPTS_PER_WAKE = 64
HIGH_WATER = 64 * 1024


class _Socket(_socket.socket):
    """An accepted connection's socket: the C socket type with the weak reference OpenSSL's
    wrapper keeps to it, without ``socket.socket``'s Python layer (its ``accept``, ``__init__``
    and ``close`` are Python functions)."""

    __slots__ = ("__weakref__",)


class TlsAccept:
    """An https listener's listening socket, accepted from by the loop's reader: the part of an
    ``asyncio.Server`` the listener uses (``sockets``, ``close``). It also keeps the deadlines of
    the handshakes in progress, checked by one timer (every quarter of the timeout, at most 1 s)
    rather than a timer per connection."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 accepted: Callable[[Any, Any], None]) -> None:
        self.loop = loop
        self.sockets = [sock]
        self._accepted = accepted
        self._fd = sock.fileno()
        self._family = int(sock.family)  # (read once: socket.socket's family is a Python property)
        self.handshaking: dict[TlsConnection, float] = {}  # -> its deadline (loop time)
        self._sweeper: asyncio.TimerHandle | None = None
        self._interval = 1.0
        loop.add_reader(self._fd, self._ready)

    def started(self, conn: TlsConnection, timeout: float) -> None:
        """``conn``'s handshake started: cut it if it is not done within ``timeout`` seconds."""
        loop = self.loop
        self.handshaking[conn] = loop.time() + timeout
        self._interval = max(0.05, min(1.0, timeout / 4))
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._interval, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.loop.time()
        late = [c for c, deadline in self.handshaking.items() if deadline <= now]
        for c in late:
            c.timed_out()
        if self.handshaking:
            self._sweeper = self.loop.call_later(self._interval, self._sweep)

    def _ready(self) -> None:
        sock = self.sockets[0]
        accepted = self._accepted
        family = self._family
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                fd, peer = sock._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, say: try again at the next wake
                log.warning("https %s: accept failed: %s", sock.getsockname(), exc)
                return
            conn = _Socket(family, socket.SOCK_STREAM, 0, fd)
            conn.setblocking(False)  # (TCP_NODELAY it has from the listening socket)
            accepted(conn, peer)

    def close(self) -> None:
        """Stop accepting (handshakes in progress still end by their deadline)."""
        if self._fd >= 0:
            self.loop.remove_reader(self._fd)
            self._fd = -1
            self.sockets[0].close()

    def is_serving(self) -> bool:
        return self._fd >= 0


def listening_socket(host: str, port: int, *, reuse_port: bool, backlog: int, sock: Any = None) -> socket.socket:
    """A non-blocking listening socket on ``host:port`` (as ``create_server`` binds), or ``sock``
    (bound already, e.g. handed over on a reload; then it is this socket, as with
    ``create_server(sock=...)``) listening.

    Every listener and the admin API bind through this (the loop's servers through
    :func:`loop_server`), never ``create_server(host, port)``:
    uvloop resolves that address on libuv's thread pool, and the four threads it starts stay for
    the life of the process. In a process with more than one thread the kernel takes and drops a
    reference to the socket's file on every ``recv`` and ``send`` (``fdget``): the data plane
    stays single-threaded (docs/dataplane.md)."""
    if sock is None:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                              flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
    sock.listen(backlog)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # (the accepted connections take it on)
    return sock  # type: ignore[no-any-return]


async def loop_server(loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.BaseProtocol], host: str,
                      port: int, *, reuse_port: bool, backlog: int, sock: Any = None) -> asyncio.Server:
    """The loop's own server (its transports) on :func:`listening_socket`: what a TCP listener,
    an HTTP listener without its own accept and the admin API serve on."""
    sock = listening_socket(host, port, reuse_port=reuse_port, backlog=backlog, sock=sock)
    return await loop.create_server(factory, sock=sock, backlog=backlog)


class TlsConnection(asyncio.Transport):
    """One accepted https connection: its handshake, then the HTTP protocol's transport.

    Also what OpenSSL's callbacks and the listener see as its SSL object (``ssl_object``):
    ``context`` (the SNI callback moves the handshake to a certificate's context through it),
    ``session_reused``, ``getpeercert``, ``version``, ``cipher``, ``selected_alpn_protocol``."""

    __slots__ = ("__weakref__", "_acceptor", "_admitted", "_closing", "_fd", "_high", "_loop", "_lost", "_low",
                 "_make", "_peer", "_protocol", "_reading", "_serving", "_set_peer", "_sock", "_ssl", "_wbuf",
                 "_write_paused", "_writing", "_wsize", "fivenines_sni")

    def __init__(self, acceptor: TlsAccept, sock: Any, peer: Any, serving: Any,
                 make: Callable[[], asyncio.Protocol],
                 set_peer: Callable[[asyncio.Protocol, Any], None] | None) -> None:
        # (no asyncio.Transport.__init__: its extra dict is not used, get_extra_info is below)
        loop = acceptor.loop
        self._acceptor = acceptor
        self.fivenines_sni: str | None = None  # (tls.SNI_ATTRIBUTE: the SNI callback leaves it here)
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._peer = peer
        self._serving = serving
        self._make = make
        self._set_peer = set_peer
        self._protocol: Any = None
        self._closing = False
        self._lost = False
        self._reading = False
        self._writing = False  # a writer is registered: bytes wait (or the handshake wants to write)
        self._wbuf: list[bytes] = []
        self._wsize = 0
        self._high = HIGH_WATER
        self._low = HIGH_WATER // 4
        self._write_paused = False
        self._ssl: Any = None
        self._admitted = False
        if not serving.take_place():  # over limits.max_handshakes: no handshake at all
            sock.close()
            self._lost = self._closing = True
            return
        self._admitted = True
        tls = serving.tls
        assert tls is not None
        try:
            self._ssl = tls.context._wrap_socket(sock, True, None, owner=self)
        except (ssl.SSLError, OSError) as exc:  # pragma: no cover - out of memory, say
            self._handshake_over()
            serving.counters.failed += 1
            log.debug("tls %s: could not start a handshake: %r", serving.name, exc)
            sock.close()
            self._lost = self._closing = True
            return
        acceptor.started(self, serving.timeout)
        loop.add_reader(self._fd, self._readable)
        self._reading = True

    def __repr__(self) -> str:
        return f"<TlsConnection {self._peer} {'handshaking' if self._protocol is None else 'open'}>"

    # ------------------------------------------------------------------ the handshake

    def _readable(self) -> None:
        """The one reader of the connection (one registration for its life): the handshake, then records."""
        if self._lost:
            return
        if self._protocol is None:
            self._handshake()
        else:
            self._read()

    def _handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except _WantRead:
            self._wait_for(reading=True)
            return
        except _WantWrite:
            self._wait_for(reading=False)
            return
        except (ssl.SSLError, OSError) as exc:  # a refused version, a bad certificate, the client left
            self._serving.counters.failed += 1
            log.debug("tls %s: handshake failed: %r", self._serving.name, exc)
            self._close_now()  # (its place is freed there)
            return
        self._handshake_over()
        serving = self._serving
        serving.counters.handshakes += 1
        if self._ssl.session_reused:
            serving.counters.resumed += 1
        self._wait_for(reading=True)  # (from now on the reader reads records)
        proto = self._make()
        if self._set_peer is not None:
            self._set_peer(proto, self)
        self._protocol = proto
        proto.connection_made(self)
        if not self._closing and self._reading:
            # the request often follows the client's Finished at once: read it in this loop round
            # rather than the next (under a load of handshakes a round lasts milliseconds)
            self._read()

    def _wait_for(self, reading: bool) -> None:
        """Wait for the socket to be readable (the reader) or, for the handshake, writable (its
        writer): that one registered, the other not."""
        loop, fd = self._loop, self._fd
        if reading:
            if self._writing:
                loop.remove_writer(fd)
                self._writing = False
            if not self._reading:
                loop.add_reader(fd, self._readable)
                self._reading = True
        else:
            if self._reading:
                loop.remove_reader(fd)
                self._reading = False
            if not self._writing:
                loop.add_writer(fd, self._handshake)
                self._writing = True

    def _handshake_over(self) -> None:
        """The handshake ended (done, failed, timed out, or the connection was cut): its place is free."""
        if self._admitted:
            self._admitted = False
            self._serving.handshakes.release("")
            self._acceptor.handshaking.pop(self, None)

    def timed_out(self) -> None:
        """Its handshake's deadline passed (:meth:`TlsAccept._sweep`): cut."""
        if self._protocol is not None or self._lost:
            return
        self._serving.counters.timed_out += 1
        self._close_now()  # (its place is freed there)

    # ------------------------------------------------------------------ reading

    def _read(self) -> None:
        ssl_obj = self._ssl
        proto = self._protocol
        for _ in range(16):  # records OpenSSL holds already (pending) are read now: no wake for them
            try:
                data = ssl_obj.read(READ_SIZE)
            except _WantRead:
                return
            except _WantWrite:  # (a key update to answer first: the socket is full; read again later)
                return
            except _Closed:  # the client's close_notify
                self._eof()
                return
            except ssl.SSLEOFError:  # closed without close_notify: an EOF all the same
                self._eof()
                return
            except (ssl.SSLError, OSError) as exc:
                self._fatal(exc)
                return
            if not data:
                self._eof()
                return
            proto.data_received(data)
            if not self._reading or not ssl_obj.pending():
                return

    def _eof(self) -> None:
        self._stop_reading()
        if self._closing:
            return
        keep = self._protocol.eof_received()
        if not keep:
            self.close()

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def pause_reading(self) -> None:
        if not self._closing:
            self._stop_reading()

    def resume_reading(self) -> None:
        if self._closing or self._reading or self._protocol is None:
            return
        self._loop.add_reader(self._fd, self._readable)
        self._reading = True
        if self._ssl.pending():
            self._loop.call_soon(self._read)

    def is_reading(self) -> bool:
        return self._reading

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        if self._wbuf:
            self._wbuf.append(bytes(data))
            self._wsize += len(data)
            self._check_high()
            return
        try:
            self._ssl.write(data)
            return
        except _WantWrite:
            pass
        except _WantRead:  # (renegotiation is off: only a key update could ask it)
            pass
        except (ssl.SSLError, OSError) as exc:
            self._fatal(exc)
            return
        # The socket is full: OpenSSL needs the same bytes again when it is writable.
        self._wbuf.append(data if isinstance(data, bytes) else bytes(data))
        self._wsize += len(data)
        self._loop.add_writer(self._fd, self._flush)
        self._writing = True
        self._check_high()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def _check_high(self) -> None:
        if not self._write_paused and self._wsize > self._high and self._protocol is not None:
            self._write_paused = True
            self._protocol.pause_writing()

    def _flush(self) -> None:
        buf = self._wbuf
        while buf:
            data = buf[0]
            try:
                self._ssl.write(data)
            except (_WantWrite, _WantRead):
                return
            except (ssl.SSLError, OSError) as exc:
                self._fatal(exc)
                return
            buf.pop(0)
            self._wsize -= len(data)
            if len(buf) > 1:  # what came after the retried bytes goes out as one write
                rest = b"".join(buf)
                buf[:] = [rest]
        self._loop.remove_writer(self._fd)
        self._writing = False
        if self._write_paused and self._wsize <= self._low:
            self._write_paused = False
            self._protocol.resume_writing()
        if self._closing:
            self._finish()

    def get_write_buffer_size(self) -> int:
        return self._wsize

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = HIGH_WATER if high is None else high
        self._low = self._high // 4 if low is None else low

    def can_write_eof(self) -> bool:
        return False  # (TLS has close_notify, not a half-close)

    def write_eof(self) -> None:
        raise NotImplementedError("TLS connections cannot write EOF")

    # ------------------------------------------------------------------ closing

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Write what is buffered, then close_notify, then close."""
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if not self._wbuf:
            self._finish()

    def _finish(self) -> None:
        try:
            self._ssl.shutdown()  # close_notify (the client's is not waited for)
        except (ssl.SSLError, OSError, ValueError):
            pass
        self._close_now()

    def abort(self) -> None:
        self._closing = True
        self._close_now()

    def _fatal(self, exc: BaseException) -> None:
        log.debug("tls %s: connection failed: %r", self._serving.name, exc)
        self._closing = True
        self._close_now(exc)

    def _close_now(self, exc: BaseException | None = None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._handshake_over()
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        self._wbuf = []
        self._wsize = 0
        self._sock.close()
        if self._protocol is not None:
            self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: BaseException | None) -> None:
        """Tell the protocol, and let go of it: no cycle is left between the two, so both are freed
        by reference counting, not by the garbage collector (whose passes over thousands of them
        pause the loop for milliseconds). (Not at close: the protocol may be what is closing this
        transport, and must outlive that call.)"""
        proto = self._protocol
        self._protocol = None
        if proto is not None:
            proto.connection_lost(exc)

    # ------------------------------------------------------------------ what the protocol reads

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer
        if name == "ssl_object":
            return self
        if name == "socket":
            return self._sock
        if name == "sockname":
            try:
                return self._sock.getsockname()
            except OSError:
                return default
        if name == "sslcontext":
            return self._ssl.context if self._ssl is not None else default
        if name == "cipher":
            return self._ssl.cipher() if self._ssl is not None else default
        if name == "peercert":
            return self._ssl.getpeercert() if self._ssl is not None else default
        return default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ as its SSL object

    @property
    def context(self) -> ssl.SSLContext:
        return self._ssl.context  # type: ignore[no-any-return]

    @context.setter
    def context(self, ctx: ssl.SSLContext) -> None:
        self._ssl.context = ctx

    @property
    def session_reused(self) -> bool:
        return bool(self._ssl.session_reused)

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._ssl.getpeercert(binary_form)

    def version(self) -> str | None:
        return self._ssl.version()  # type: ignore[no-any-return]

    def cipher(self) -> tuple[str, str, int] | None:
        return self._ssl.cipher()  # type: ignore[no-any-return]

    def selected_alpn_protocol(self) -> str | None:
        return self._ssl.selected_alpn_protocol()  # type: ignore[no-any-return]
