"""``send_last``, the last write of an HTTP connection that closes (fivenines.proxy.forward; in fivenines.proxy.listener): the
data and the FIN in one segment, on real loopback TCP sockets, for the C function
(``_pump.send_last``, when built) and its Python twin (``listener.send_last_py``) alike."""

from __future__ import annotations

import select
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from fivenines.proxy.listener import send_last_py
from tests.helpers import native_module

_pump, _ = native_module("_pump", "the C pump")

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="TCP_INFO's layout and MSG_MORE are Linux's")

IMPLEMENTATIONS: list[tuple[str, Callable[[int, bytes], int]]] = [("python", send_last_py)]
if _pump is not None:
    IMPLEMENTATIONS.append(("c", _pump.send_last))

ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT = 1, 4, 5, 8


def tcp_info(s: socket.socket) -> tuple[int, int]:
    """(state, segments sent) from Linux's struct tcp_info (tcpi_state at 0, tcpi_segs_out at 136)."""
    raw = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return raw[0], struct.unpack_from("I", raw, 136)[0]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        client = socket.create_connection(srv.getsockname())
        server, _ = srv.accept()
    server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    server.setblocking(False)
    client.settimeout(5)
    yield server, client
    server.close()
    client.close()


@pytest.fixture(params=[name for name, _ in IMPLEMENTATIONS])
def send_last(request: pytest.FixtureRequest) -> Callable[[int, bytes], int]:
    return dict(IMPLEMENTATIONS)[request.param]


def read_to_end(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def test_the_data_and_the_fin_go_in_one_segment(pair: tuple[socket.socket, socket.socket],
                                               send_last: Callable[[int, bytes], int]) -> None:
    server, client = pair
    _, before = tcp_info(server)
    assert send_last(server.fileno(), b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") == 40
    state, after = tcp_info(server)
    assert after - before == 1 and state in (FIN_WAIT1, FIN_WAIT2)
    # the client is woken once, with the answer and the end together
    assert select.select([client], [], [], 5)[0]
    assert tcp_info(client)[0] == CLOSE_WAIT
    assert read_to_end(client) == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_a_write_then_a_shutdown_is_two_segments(pair: tuple[socket.socket, socket.socket]) -> None:
    """What send_last saves, measured the same way: the count above is not one by construction."""
    server, client = pair
    _, before = tcp_info(server)
    server.send(b"ok")
    server.shutdown(socket.SHUT_WR)
    assert tcp_info(server)[1] - before == 2
    assert read_to_end(client) == b"ok"


def test_what_does_not_fit_is_left_to_the_caller_and_the_connection_stays_open(
        send_last: Callable[[int, bytes], int]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(srv.getsockname())
        server, _ = srv.accept()
    with server, client:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        server.setblocking(False)
        data = bytes(range(256)) * 8192  # 2 MiB: more than both buffers hold
        sent = send_last(server.fileno(), data)
        assert 0 < sent < len(data)
        assert tcp_info(server)[0] == ESTABLISHED  # not shut down: the rest is still to come
        client.settimeout(5)
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(read_to_end(client)))
        reader.start()
        server.setblocking(True)
        server.sendall(data[sent:])
        server.shutdown(socket.SHUT_WR)
        reader.join(10)
        assert got == [data]
        # a full socket takes nothing: 0, and still open
        client2, server2 = socket.socketpair()
        with client2, server2:
            server2.setblocking(False)
            while True:
                try:
                    server2.send(b"x" * 65536)
                except BlockingIOError:
                    break
            assert send_last(server2.fileno(), b"more") == 0
            assert client2.recv(1) == b"x"


def test_a_socket_that_failed_takes_nothing_and_raises_nothing(send_last: Callable[[int, bytes], int]) -> None:
    """The transport's own write meets the same error next and reports it as it always does."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        client = socket.create_connection(srv.getsockname())
        server, _ = srv.accept()
    with server:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset
        assert select.select([server], [], [], 5)[0]
        assert send_last(server.fileno(), b"late") == 0


def test_the_c_function_is_the_one_the_proxy_uses_when_built() -> None:
    from fivenines.proxy import forward

    assert forward.send_last is (_pump.send_last if _pump is not None else send_last_py)
