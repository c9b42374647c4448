"""A plain http listener's own accept and transport (fivenines.proxy.plain), on real loopback
sockets and a real loop: ``accept_read`` (the C function when built, and its Python twin alike),
:class:`PlainAccept` and :class:`PlainConnection` as the HTTP protocol sees them."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from fivenines.proxy.plain import PlainAccept, PlainConnection, accept_read_py, plain_server
from tests.helpers import native_module

_pump, _ = native_module("_pump", "the C pump")

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="TCP_DEFER_ACCEPT and accept4 are Linux's")

IMPLEMENTATIONS: list[str] = ["python"] + (["c"] if _pump is not None else [])


def accept_with(impl: str, srv: socket.socket) -> Any:
    if impl == "c":
        assert _pump is not None
        return _pump.accept_read(srv.fileno(), 65536)
    return accept_read_py(srv, 65536)


@pytest.fixture
def server() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        srv.setblocking(False)
        yield srv


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_nothing_waiting_is_none(impl: str, server: socket.socket) -> None:
    assert accept_with(impl, server) is None


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_accepts_with_the_peer_and_what_it_sent(impl: str, server: socket.socket) -> None:
    server.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)
    with socket.create_connection(server.getsockname()) as client:
        client.sendall(b"GET / HTTP/1.1\r\n\r\n")
        fd, peer, data = _accept_blocking(impl, server)
        try:
            assert peer == client.getsockname()
            assert data == b"GET / HTTP/1.1\r\n\r\n"
            assert _nonblocking(fd)
            with socket.socket(fileno=fd) as s:
                s.sendall(b"ok")
            assert client.recv(10) == b"ok"
        finally:
            _close_quietly(fd)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_nothing_sent_yet_is_none_data(impl: str, server: socket.socket) -> None:
    with socket.create_connection(server.getsockname()):
        fd, _, data = _accept_blocking(impl, server)
        _close_quietly(fd)
    assert data is None


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_a_closed_client_is_empty_data(impl: str, server: socket.socket) -> None:
    server.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)
    client = socket.create_connection(server.getsockname())
    client.shutdown(socket.SHUT_WR)
    fd, _, data = _accept_blocking(impl, server)
    _close_quietly(fd)
    client.close()
    assert data == b""


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_ipv6_peer_as_the_socket_module_gives_it(impl: str) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        srv = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback")
    with srv, socket.create_connection(srv.getsockname()[:2]) as client:
        srv.setblocking(False)
        srv.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)
        client.sendall(b"x")
        fd, peer, _ = _accept_blocking(impl, srv)
        _close_quietly(fd)
        assert peer == client.getsockname()


def _accept_blocking(impl: str, srv: socket.socket) -> Any:
    """Accept once the listening socket is readable. With TCP_DEFER_ACCEPT set (as PlainAccept's
    is) that is once the client's bytes, or its end, are there."""
    assert select.select([srv], [], [], 5)[0], "no connection to accept"
    got = accept_with(impl, srv)
    assert got is not None
    return got


def _queued(fd: int) -> int:
    """Bytes waiting in the socket's receive queue (FIONREAD)."""
    import fcntl
    import struct
    import termios
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])


def _nonblocking(fd: int) -> bool:
    import fcntl
    import os
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)


def _close_quietly(fd: int) -> None:
    import os
    try:
        os.close(fd)
    except OSError:
        pass


# ---------------------------------------------------------------------- the transport


class Recorder(asyncio.Protocol):
    """What the HTTP protocol would see, in order; ``more``: what ``reads_more`` answers (False: the
    first bytes are all it reads, and the plain transport keeps the connection to its end)."""

    def __init__(self, on_data: Callable[[Recorder, bytes], None] | None = None, more: bool = True) -> None:
        self.events: list[tuple[str, Any]] = []
        self.transport: Any = None
        self.transports: list[Any] = []
        self.on_data = on_data
        self.more = more
        self.paused = False
        self.lost = asyncio.Event()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.transports.append(transport)
        self.events.append(("made", transport.get_extra_info("peername")))

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", data))
        if self.on_data is not None:
            self.on_data(self, data)

    def eof_received(self) -> bool | None:
        self.events.append(("eof", None))
        return None

    def pause_writing(self) -> None:
        self.events.append(("pause_writing", None))

    def resume_writing(self) -> None:
        self.events.append(("resume_writing", None))

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", exc))
        self.lost.set()

    # what PlainConnection asks beside an asyncio protocol's methods
    def reads_more(self) -> bool:
        return self.more

    def rebind(self, transport: Any) -> None:
        self.transport = transport
        self.transports.append(transport)

    def reading_paused(self) -> bool:
        return self.paused

    def pause(self) -> None:
        self.paused = True
        self.transport.pause_reading()

    def resume(self) -> None:
        self.paused = False
        self.transport.resume_reading()

    def data(self) -> bytes:
        return b"".join(v for k, v in self.events if k == "data")

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]


@contextlib.asynccontextmanager
async def served(make: Callable[[], Recorder]) -> AsyncIterator[tuple[list[Recorder], PlainAccept]]:
    """A plain listener on loopback whose connections' protocols are ``make()``'s, kept in the
    list; on leaving, passed or not, every transport is aborted and the listener closed (:func:`shut`)."""
    protos: list[Recorder] = []

    def factory() -> Recorder:
        p = make()
        protos.append(p)
        return p

    acceptor = plain_server(asyncio.get_running_loop(), factory, "127.0.0.1", 0, False, 16, None)
    try:
        yield protos, acceptor
    finally:
        shut(protos, acceptor)


async def until(pred: Callable[[], Any], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


_clients: list[asyncio.StreamWriter] = []


async def connect(acceptor: PlainAccept) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = acceptor.sockets[0].getsockname()[:2]
    reader, writer = await asyncio.open_connection(host, port)
    _clients.append(writer)
    return reader, writer


def shut(protos: list[Recorder], acceptor: PlainAccept) -> None:
    """End of a test, passed or not: every server-side transport aborted, the listening socket closed."""
    for p in protos:
        for t in p.transports:
            if not t.is_closing():
                t.abort()
    acceptor.close()
    while _clients:
        _clients.pop().transport.abort()


def run(main: Callable[[], Any]) -> None:
    """On uvloop, as fivenines runs (its transports are what a connection is handed to)."""
    import uvloop
    uvloop.run(main())


def test_the_listening_socket_defers_the_accept_until_the_client_speaks() -> None:
    async def main() -> None:
        async with served(Recorder) as (_, acceptor):
            s = acceptor.sockets[0]
            assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) > 0
    run(main)


def test_first_bytes_with_the_connection_then_the_loops_transport_reads_the_rest() -> None:
    async def main() -> None:
        async with served(Recorder) as (protos, acceptor):
            _, writer = await connect(acceptor)
            writer.write(b"first")
            await until(lambda: protos and protos[0].data() == b"first")
            p = protos[0]
            assert p.kinds()[0] == "made"
            assert p.events[0][1] == writer.get_extra_info("sockname")
            assert isinstance(p.transports[0], PlainConnection)
            await until(lambda: len(p.transports) == 2)  # handed over: the loop's transport reads on
            assert not isinstance(p.transport, PlainConnection)
            writer.write(b" second")
            await until(lambda: p.data() == b"first second")
            writer.close()
            await until(lambda: ("eof", None) in p.events)
            await asyncio.wait_for(p.lost.wait(), 5)  # eof_received said close
            assert p.kinds().count("made") == 1
            assert p.events[-1] == ("lost", None)
    run(main)


def test_a_connection_that_reads_no_more_is_never_handed_over() -> None:
    async def main() -> None:
        def answer(p: Recorder, data: bytes) -> None:
            p.transport.write(b"answer")
            p.transport.close()

        async with served(lambda: Recorder(answer, more=False)) as (protos, acceptor):
            reader, writer = await connect(acceptor)
            writer.write(b"ask")
            assert await asyncio.wait_for(reader.read(), 5) == b"answer"
            await asyncio.wait_for(protos[0].lost.wait(), 5)
            assert len(protos[0].transports) == 1
            assert protos[0].events[-1] == ("lost", None)
            writer.close()
    run(main)


def test_writes_and_close_before_the_handover_reach_the_client_in_order() -> None:
    async def main() -> None:
        big = bytes(range(256)) * 40_000  # 10 MB: more than loopback's buffers take at once

        def early(p: Recorder, data: bytes) -> None:
            p.transport.write(b"a")

            def later() -> None:  # the next loop round: the loop's transport is not there yet
                assert isinstance(p.transport, PlainConnection)
                p.transport.write(big)
                p.transport.close()
            asyncio.get_running_loop().call_soon(later)

        async with served(lambda: Recorder(early)) as (protos, acceptor):
            reader, writer = await connect(acceptor)
            writer.write(b"go")
            got = await asyncio.wait_for(reader.read(), 10)  # to the end: every byte, then the FIN
            assert got == b"a" + big
            p = protos[0]
            await asyncio.wait_for(p.lost.wait(), 5)
            assert len(p.transports) == 2
            assert p.kinds().count("lost") == 1
            writer.close()
    run(main)


def test_a_pause_before_the_handover_holds_the_bytes_until_resumed() -> None:
    async def main() -> None:
        async with served(lambda: Recorder(lambda p, d: p.pause() if d == b"one" else None)) as (protos, acceptor):
            _, writer = await connect(acceptor)
            writer.write(b"one")
            await until(lambda: protos and len(protos[0].transports) == 2)
            p = protos[0]
            assert p.data() == b"one"
            writer.write(b"two")
            fd = p.transport.get_extra_info("socket").fileno()
            await until(lambda: _queued(fd) == 3)  # the kernel holds them for the paused transport
            for _ in range(20):
                await asyncio.sleep(0)  # loop rounds in which a reading transport would have read
            assert p.data() == b"one"
            p.resume()
            await until(lambda: p.data() == b"onetwo")
            writer.close()
    run(main)


def test_a_full_socket_buffers_pauses_the_writer_and_closes_after_the_last_byte() -> None:
    async def main() -> None:
        big = bytes(range(256)) * 40_000
        async with served(lambda: Recorder(more=False)) as (protos, acceptor):
            reader, writer = await connect(acceptor)
            writer.write(b"go")
            await until(lambda: protos and protos[0].data() == b"go")
            t = protos[0].transport
            assert isinstance(t, PlainConnection)
            t.write(big)
            assert t.get_write_buffer_size() > 0
            assert ("pause_writing", None) in protos[0].events
            t.write_eof()
            t.close()
            assert t.is_closing()
            got = await asyncio.wait_for(reader.read(), 10)
            assert got == big
            await asyncio.wait_for(protos[0].lost.wait(), 5)
            kinds = protos[0].kinds()
            assert kinds.index("resume_writing") < kinds.index("lost")
            assert protos[0].events[-1] == ("lost", None)
            writer.close()
    run(main)


def test_write_eof_ends_the_sending_direction_only() -> None:
    async def main() -> None:
        async with served(lambda: Recorder(more=False)) as (protos, acceptor):
            reader, writer = await connect(acceptor)
            writer.write(b"ask")
            await until(lambda: protos and protos[0].data() == b"ask")
            t = protos[0].transport
            assert t.can_write_eof()
            t.write(b"answer")
            t.write_eof()
            assert await asyncio.wait_for(reader.read(), 5) == b"answer"
            assert not t.is_closing()
            writer.write(b"more")  # the other direction is open: the client's bytes still go in
            await writer.drain()
            t.close()
            await asyncio.wait_for(protos[0].lost.wait(), 5)
            writer.close()
    run(main)


def test_a_reset_peer_is_a_lost_connection_with_its_error_at_the_next_write() -> None:
    async def main() -> None:
        async with served(lambda: Recorder(more=False)) as (protos, acceptor):
            _, writer = await connect(acceptor)
            writer.write(b"hi")
            await until(lambda: protos and protos[0].data() == b"hi")
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            writer.transport.abort()  # RST
            t = protos[0].transport
            await until(lambda: (t.write(b"x"), protos[0].lost.is_set())[1])
            assert isinstance(protos[0].events[-1][1], OSError)
    run(main)


def test_abort_drops_what_waits_and_tells_the_protocol_once() -> None:
    async def main() -> None:
        async with served(lambda: Recorder(more=False)) as (protos, acceptor):
            _, writer = await connect(acceptor)
            writer.write(b"x")
            await until(lambda: protos and protos[0].data() == b"x")
            t = protos[0].transport
            t.write(b"y" * 10_000_000)
            t.abort()
            t.abort()
            t.close()
            assert t.get_write_buffer_size() == 0
            await asyncio.wait_for(protos[0].lost.wait(), 5)
            await asyncio.sleep(0)
            assert protos[0].kinds().count("lost") == 1
            writer.close()
    run(main)


def test_closed_acceptor_accepts_nothing_more() -> None:
    async def main() -> None:
        async with served(Recorder) as (_, acceptor):
            host, port = acceptor.sockets[0].getsockname()[:2]
            assert acceptor.is_serving()
            acceptor.close()
            assert not acceptor.is_serving()
            with pytest.raises(OSError):
                await asyncio.open_connection(host, port)
    run(main)


def test_what_the_protocol_reads_of_the_plain_transport() -> None:
    async def main() -> None:
        async with served(lambda: Recorder(more=False)) as (protos, acceptor):
            _, writer = await connect(acceptor)
            writer.write(b"x")
            await until(lambda: protos)
            t = protos[0].transport
            assert isinstance(t, PlainConnection)
            assert t.get_extra_info("socket").fileno() >= 0
            assert t.get_extra_info("sockname") == writer.get_extra_info("peername")
            assert t.get_extra_info("nothing", 7) == 7
            t.close()
            writer.close()
    run(main)
