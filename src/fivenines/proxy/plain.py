"""Plain HTTP on the socket itself: an http listener's own accept, and each client connection's
transport (:class:`PlainConnection`) reading and writing the socket with the loop's readers and writers.

The loop's server gives each accepted connection its own stream transport: the loop looks up
both addresses (``getsockname``, ``getpeername``), registers the socket for reading (one
``epoll_ctl``), waits for the next round to read the request, and at the close unregisters it
(another ``epoll_ctl``) and closes the handle at the round after; the protocol needs the socket
object (one more ``getsockname``) to send its last answer with the FIN. For a client that opens
a connection per request that is most of what its request costs the proxy beyond the kernel's
own TCP work (docs/dataplane.md). Here the listener accepts on its own listening socket
(:class:`PlainAccept`, as https does with :mod:`fivenines.proxy.tls_socket`): ``accept4`` gives
the peer's address, the request is read at once (the listening socket defers the accept until
the client has sent something: ``TCP_DEFER_ACCEPT``), and the socket is registered for reading
only when the protocol needs more than that (a body, a keep-alive connection's next request).
A connection whose request was all there and whose answer ends it is never registered at all.

For the HTTP protocol a :class:`PlainConnection` is a transport like the loop's (``write``,
``close``, ``abort``, ``write_eof``, ``pause_reading``, flow control, ``get_extra_info``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from fivenines.proxy.tls_socket import ACCEPTS_PER_WAKE, HIGH_WATER, _Socket, listening_socket

log = logging.getLogger("fivenines.proxy")

READ_SIZE = 65536
DEFER_ACCEPT_S = 1  # TCP_DEFER_ACCEPT: seconds the kernel waits for a client's first bytes before the accept


def _native_accept() -> Callable[[int, int], Any] | None:
    """``_pump.accept_read`` when fivenines.accel loaded the build (accept4 and the first read in one call)."""
    try:
        from fivenines import _pump
    except ImportError:
        return None
    return getattr(_pump, "accept_read", None)


_accept_read = _native_accept()


def accept_read_py(sock: socket.socket, size: int) -> tuple[int, Any, bytes | None] | None:
    """The specification of ``_pump.accept_read``: accept a connection on the listening ``sock``
    (non-blocking) and read what the client sent already. ``(fd, peer, data)``: ``data`` is b"" when
    the client closed, None when nothing is there yet; None when no connection waits."""
    try:
        fd, peer = sock._accept()  # type: ignore[attr-defined]
    except (BlockingIOError, InterruptedError):
        return None
    conn = _Socket(sock.family, socket.SOCK_STREAM, 0, fd)
    conn.setblocking(False)
    try:
        data: bytes | None = conn.recv(size)
    except (BlockingIOError, InterruptedError):
        data = None
    except OSError:
        data = b""  # reset already: read as an end (the first write fails too)
    conn.detach()
    return fd, peer, data


class PlainAccept:
    """A plain http listener's listening socket, accepted from by the loop's reader: the part of an
    ``asyncio.Server`` the listener uses (``sockets``, ``close``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 make: Callable[[], asyncio.Protocol]) -> None:
        self.loop = loop
        self.sockets = [sock]
        self._make = make
        self._fd = sock.fileno()
        self._family = int(sock.family)
        defer = getattr(socket, "TCP_DEFER_ACCEPT", None)
        if defer is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, defer, DEFER_ACCEPT_S)
            except OSError:  # pragma: no cover - not Linux
                pass
        loop.add_reader(self._fd, self._ready)

    def _ready(self) -> None:
        sock = self.sockets[0]
        fd = self._fd
        native = _accept_read
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                got = native(fd, READ_SIZE) if native is not None else accept_read_py(sock, READ_SIZE)
            except OSError as exc:  # out of file descriptors, say: try again at the next wake
                log.warning("http %s: accept failed: %s", sock.getsockname(), exc)
                return
            if got is None:
                return
            cfd, peer, data = got
            PlainConnection(self.loop, _Socket(self._family, socket.SOCK_STREAM, 0, cfd), peer, self._make(), data)
            if self._fd < 0:
                return  # closed by what the connection did (a drain)

    def close(self) -> None:
        if self._fd >= 0:
            self.loop.remove_reader(self._fd)
            self._fd = -1
            self.sockets[0].close()

    def is_serving(self) -> bool:
        return self._fd >= 0


class PlainConnection:
    """One accepted plain connection: the HTTP protocol's transport until the loop's takes over
    (see the module docstring; an asyncio transport by its methods, not its base class, so that
    it is compiled as a native class).

    It never reads. After the protocol has the client's first bytes, either nothing more is to be
    read (``protocol.reads_more()`` says so: the request is whole and the connection closes after
    its answer), and this transport writes that answer and closes; or the socket is handed to the
    loop's own stream transport (``loop.connect_accepted_socket``), which reads from then on. Until
    that transport exists (a loop round or two) this one still writes, holds what the socket does
    not take, and notes a close, an abort or a pause; at the handover (``protocol.rebind(transport)``)
    those go to the new transport in order. The protocol needs ``reads_more()``, ``rebind(transport)``
    and ``reading_paused()`` beside an asyncio protocol's methods."""

    __slots__ = ("_abort_asked", "_adopting", "_close_asked", "_closing", "_eof_after", "_fd", "_high", "_loop",
                 "_lost", "_low", "_paused", "_peer", "_protocol", "_sock", "_wbuf", "_write_paused", "_writing",
                 "_wsize")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: Any, peer: Any, protocol: asyncio.Protocol,
                 data: bytes | None) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._peer = peer
        self._protocol: Any = protocol
        self._closing = False
        self._lost = False
        self._adopting = False  # the loop's transport is being made for this socket
        self._close_asked = False  # (while adopting) close, then abort, asked: done by the new transport
        self._abort_asked = False
        self._paused = False  # the protocol paused reading
        self._writing = False  # a writer is registered: bytes wait
        self._eof_after = False  # write_eof asked while bytes wait
        self._wbuf: list[bytes] = []
        self._wsize = 0
        self._high = HIGH_WATER
        self._low = HIGH_WATER // 4
        self._write_paused = False
        proto: Any = protocol
        proto.connection_made(self)
        if self._closing:
            return
        if data is None:
            self._adopt()  # nothing sent yet (the accept was not deferred): the loop's transport reads it
        elif not data:
            self._eof()
        else:
            proto.data_received(data)
            if not self._closing and proto.reads_more():
                self._adopt()

    def __repr__(self) -> str:
        return f"<PlainConnection {self._peer}>"

    # ------------------------------------------------------------------ the handover

    def _adopt(self) -> None:
        self._adopting = True
        if self._writing:  # (no reader or writer of ours on the socket once the loop's transport has it)
            self._loop.remove_writer(self._fd)
            self._writing = False
        self._loop.create_task(self._handover())

    async def _handover(self) -> None:
        sock = socket.socket(self._sock.family, socket.SOCK_STREAM, 0, self._fd)  # (the same descriptor)
        try:
            await self._loop.connect_accepted_socket(lambda: _Handover(self), sock)
        except Exception as exc:  # the loop is closing, say: the connection goes
            sock.detach()
            self._adopting = False
            self._close_now(exc)

    def handed_over(self, transport: Any) -> None:
        """The loop's transport has the socket (its protocol's connection_made): everything goes to it."""
        self._adopting = False
        self._lost = True  # (this transport does nothing more)
        self._sock.detach()  # the descriptor is the new transport's now
        proto = self._protocol
        self._protocol = None
        transport.set_protocol(proto)  # (before it starts reading, which it does after connection_made)
        proto.rebind(transport)
        data = b"".join(self._wbuf)
        self._wbuf = []
        self._wsize = 0
        if self._write_paused:  # the new transport pauses again if what waits is over its own limit
            self._write_paused = False
            proto.resume_writing()
        if data:
            transport.write(data)
        if self._eof_after and not self._close_asked and not self._abort_asked:
            transport.write_eof()
        if self._abort_asked:
            transport.abort()
        elif self._close_asked:
            transport.close()
        elif self._paused:
            # it starts reading when this returns; paused again at once after (what it reads in
            # between the protocol takes, as it takes what a pipelining client sends ahead)
            self._loop.call_soon(_repause, proto, transport)

    # ------------------------------------------------------------------ reading

    def _eof(self) -> None:
        if self._closing:
            return
        keep = self._protocol.eof_received()
        if not keep:
            self.close()

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False

    def is_reading(self) -> bool:
        return self._adopting and not self._paused and not self._closing

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        if self._wbuf:
            self._wbuf.append(bytes(data))
            self._wsize += len(data)
            self._check_high()
            return
        n = self._send(data)
        if n < 0 or n == len(data):
            return
        rest = bytes(data[n:])
        self._wbuf.append(rest)
        self._wsize += len(rest)
        if not self._adopting:  # (adopting: what waits goes to the new transport)
            self._loop.add_writer(self._fd, self._flush)
            self._writing = True
        self._check_high()

    def _send(self, data: bytes | bytearray | memoryview) -> int:
        """What the socket took of ``data`` now (0 when full); -1 when it failed (the connection is lost)."""
        try:
            return int(self._sock.send(data))
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._fatal(exc)
            return -1

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def _check_high(self) -> None:
        if not self._write_paused and self._wsize > self._high:
            self._write_paused = True
            self._protocol.pause_writing()

    def _flush(self) -> None:
        if self._lost:
            return
        buf = self._wbuf
        data = buf[0] if len(buf) == 1 else b"".join(buf)
        n = self._send(data)
        if n < 0:
            return
        if n < len(data):
            self._wbuf = [data[n:]]
            self._wsize = len(data) - n
            return
        self._wbuf = []
        self._wsize = 0
        self._loop.remove_writer(self._fd)
        self._writing = False
        if self._write_paused:
            self._write_paused = False
            self._protocol.resume_writing()
        if self._eof_after:
            self._shutdown()
        if self._closing:
            self._close_now()

    def get_write_buffer_size(self) -> int:
        return self._wsize

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = HIGH_WATER if high is None else high
        self._low = self._high // 4 if low is None else low

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._closing or self._eof_after:
            return
        self._eof_after = True
        if not self._wbuf and not self._adopting:
            self._shutdown()

    def _shutdown(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    # ------------------------------------------------------------------ closing

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Write what is buffered, then close."""
        if self._closing:
            return
        self._closing = True
        if self._adopting:
            self._close_asked = True
        elif not self._wbuf:
            self._close_now()

    def abort(self) -> None:
        self._closing = True
        self._close_now()

    def _fatal(self, exc: BaseException) -> None:
        log.debug("http %s: connection failed: %r", self._peer, exc)
        self._closing = True
        self._close_now(exc)

    def _close_now(self, exc: BaseException | None = None) -> None:
        if self._lost:
            return
        self._closing = True
        if self._adopting:  # the descriptor may be the new transport's already: it closes it
            self._abort_asked = True
            return
        self._lost = True
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        self._wbuf = []
        self._wsize = 0
        self._sock.close()
        self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: BaseException | None) -> None:
        """Tell the protocol, and let go of it (no cycle left for the garbage collector; not at
        close: the protocol may be what is closing this transport, and must outlive that call)."""
        proto = self._protocol
        self._protocol = None
        if proto is not None:
            proto.connection_lost(exc)

    # ------------------------------------------------------------------ what the protocol reads

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer
        if name == "socket":
            return self._sock
        if name == "sockname":
            try:
                return self._sock.getsockname()
            except OSError:
                return default
        return default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[no-any-return]


class _Handover(asyncio.Protocol):
    """The protocol the loop's transport is made with: at its connection_made the connection goes over."""

    def __init__(self, plain: PlainConnection) -> None:
        self.plain = plain

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.plain.handed_over(transport)


def _repause(proto: Any, transport: Any) -> None:
    if proto.reading_paused() and not transport.is_closing():
        transport.pause_reading()


def plain_server(loop: asyncio.AbstractEventLoop, make: Callable[[], asyncio.Protocol], host: str, port: int,
                 reuse_port: bool, backlog: int, sock: Any) -> PlainAccept:
    """A plain http listener's accept: on ``sock`` (handed over on a reload) or a new listening socket."""
    return PlainAccept(loop, listening_socket(host, port, reuse_port=reuse_port, backlog=backlog, sock=sock), make)
