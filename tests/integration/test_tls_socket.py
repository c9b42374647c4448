"""HTTPS on the socket itself (fivenines/proxy/tls_socket.py): an https listener accepts on its own
socket and each connection's TLS runs on that socket (no SSL protocol object between), which is
the HTTP protocol's transport: a large answer to a client that reads slowly is held and sent in
full, a closing answer ends with close_notify, and a handshake never finished frees its place."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ProxyUnderTest, wait_until
from tests.integration.servers import RawServer


@pytest.fixture(scope="module")
def backend() -> Iterator[RawServer]:
    s = RawServer(name="b")
    yield s
    s.close()


@pytest.fixture
def proxy(backend: RawServer, tmp_path: Path) -> Iterator[ProxyUnderTest]:
    p = ProxyUnderTest([backend.address], tmp_path)
    yield p
    p.close()


def test_https_connections_are_accepted_and_served_on_their_own_socket(proxy: ProxyUnderTest) -> None:
    from fivenines.proxy.tls_socket import TlsAccept, TlsConnection

    assert isinstance(proxy.listener.server, TlsAccept)
    with proxy.connect() as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        conn = proxy.lt.call(_one_client(proxy))
        transport = conn._transport
        assert isinstance(transport, TlsConnection)
        obj = transport.get_extra_info("ssl_object")
        assert obj.version() == s.version() and obj.selected_alpn_protocol() is None
        assert transport.get_extra_info("peername") == s.getsockname()
    serving = proxy.listener.tls
    assert serving.counters.handshakes >= 1 and serving.handshakes.total == 0


async def _one_client(proxy: ProxyUnderTest) -> object:
    return next(iter(proxy.listener.clients))


def test_a_large_answer_to_a_slow_reader_is_held_then_sent_whole(proxy: ProxyUnderTest) -> None:
    """The client reads nothing at first: OpenSSL's writes meet a full socket, the connection holds
    the rest (and the target is not read meanwhile); then every byte arrives."""
    n = 24 * 1024 * 1024
    raw = socket.create_connection((proxy.host, proxy.port), timeout=10)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    assert proxy.client_tls is not None
    with proxy.client_tls.wrap_socket(raw, server_hostname="proxy.test") as s:
        s.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: proxy.test\r\n\r\n" % n)
        conn = wait_until(lambda: proxy.lt.call(_one_client_or_none(proxy)), what="the connection")
        wait_until(lambda: conn._transport.get_write_buffer_size() > 0, 10,
                   what="bytes held for the client that does not read")
        got = b""
        while b"\r\n\r\n" not in got:
            got += s.recv(65536)
        head, body = got.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: %d" % n in head
        size = len(body)
        while size < n:
            chunk = s.recv(1 << 20)
            assert chunk, f"closed after {size} of {n} bytes"
            assert chunk.count(b"x") == len(chunk)
            size += len(chunk)
        assert size == n


async def _one_client_or_none(proxy: ProxyUnderTest) -> object:
    return next(iter(proxy.listener.clients), None)


def test_a_closing_answer_ends_with_close_notify(proxy: ProxyUnderTest) -> None:
    """A clean TLS end: the client reads EOF, not an EOF 'in violation of protocol'."""
    raw = socket.create_connection((proxy.host, proxy.port), timeout=5)
    assert proxy.client_tls is not None
    with proxy.client_tls.wrap_socket(raw, server_hostname="proxy.test", suppress_ragged_eofs=False) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)  # raises ssl.SSLEOFError without close_notify
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 200")


def test_a_handshake_never_finished_frees_its_place_at_the_timeout(backend: RawServer, tmp_path: Path) -> None:
    p = ProxyUnderTest([backend.address], tmp_path)
    try:
        serving = p.listener.tls
        serving.timeout = 0.3
        with socket.create_connection((p.host, p.port), timeout=5) as s:
            s.sendall(b"\x16\x03\x01")  # the start of a ClientHello, and no more
            wait_until(lambda: serving.handshakes.total == 1, 5, what="the handshake in progress")
            t0 = time.monotonic()
            try:
                assert s.recv(10) == b""  # closed by the proxy at the deadline
            except ConnectionResetError:
                pass  # (or reset: closed either way)
            assert time.monotonic() - t0 < 3
        wait_until(lambda: serving.handshakes.total == 0, 5, what="its place freed")
        assert serving.counters.timed_out == 1
        with p.connect() as s:  # and the listener serves the next one
            s.sendall(b"GET / HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        p.close()


def test_a_client_that_fails_the_handshake_is_counted_and_closed(proxy: ProxyUnderTest) -> None:
    ctx = ssl.create_default_context()  # does not trust the proxy's CA
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as raw, \
            pytest.raises(ssl.SSLCertVerificationError):
        ctx.wrap_socket(raw, server_hostname="proxy.test")
    serving = proxy.listener.tls
    wait_until(lambda: serving.counters.failed == 1 and serving.handshakes.total == 0, 5, what="counted, place freed")


def test_a_closed_connection_is_freed_by_reference_counting(proxy: ProxyUnderTest) -> None:
    """No cycle is left between a closed connection and its protocol: they are freed as soon as
    they are closed, not by a pass of the garbage collector (which pauses the loop for
    milliseconds once thousands of them wait)."""
    import gc
    import weakref

    gc.collect()
    gc.disable()
    try:
        with proxy.connect() as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            conn = proxy.lt.call(_one_client(proxy))
            ref = weakref.ref(conn._transport)  # (the protocol, a compiled class, is not weakly referenced)
            del conn
        wait_until(lambda: not proxy.lt.call(_one_client_or_none(proxy)), 5, what="the connection closed")
        wait_until(lambda: ref() is None, 5, what="the closed connection freed without the collector")
    finally:
        gc.enable()
