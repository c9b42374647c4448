"""The HTTP proxy against real demo backends on loopback."""

from __future__ import annotations

import http.client
import json
import select
import socket
import sys
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.helpers import Demo, ProxyUnderTest, free_port, wait_until


@pytest.fixture
def proxy(demos: list[Demo]) -> Iterator[ProxyUnderTest]:
    p = ProxyUnderTest([d.address for d in demos[:2]])
    yield p
    p.close()


def test_round_robin_over_keep_alive(proxy: ProxyUnderTest) -> None:
    c = http.client.HTTPConnection(proxy.host, proxy.port, timeout=5)
    seen = Counter()
    for _ in range(10):
        c.request("GET", "/")
        r = c.getresponse()
        body = r.read().decode()
        assert r.status == 200
        seen[body.split()[1]] += 1
    c.close()
    assert seen == {"demo-a": 5, "demo-b": 5}
    assert proxy.listener.counters.connections == 1
    # upstream connections are pooled and reused: one per backend
    assert sum(len(b.idle) for b in proxy.group.backends.values()) == 2


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux's")
def test_a_request_is_acknowledged_by_its_response_not_by_an_ack_of_its_own(proxy: ProxyUnderTest) -> None:
    """Quick ACKs are off on the listening socket, so each accepted connection delays the ACK of
    the request until the response carries it (one segment less per connection)."""
    def quickack(sock: object) -> int:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK)  # type: ignore[attr-defined]

    assert [quickack(s) for s in proxy.listener.server.sockets] == [0]
    c = socket.create_connection((proxy.host, proxy.port), timeout=5)
    try:
        conn = wait_until(lambda: next(iter(proxy.listener.clients), None), what="the connection accepted")
        assert quickack(conn._transport.get_extra_info("socket")) == 0
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert c.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        c.close()


@pytest.mark.skipif(sys.platform != "linux", reason="TCP_INFO's layout is Linux's")
def test_a_closing_answer_carries_the_end_of_the_connection(proxy: ProxyUnderTest) -> None:
    """The last answer of a connection that closes comes with the proxy's FIN (forward.send_last):
    when the client first finds the socket readable, the proxy has already ended its side
    (CLOSE_WAIT), so the client never closes first and never holds the TIME_WAIT. Writing, then
    letting the transport close at the next loop round, lost that race to a waiting client."""
    close_wait = 8  # Linux's TCP_CLOSE_WAIT (tcpi_state, the first byte of struct tcp_info)
    states = []
    for _ in range(50):
        with socket.create_connection((proxy.host, proxy.port), timeout=5) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert select.select([c], [], [], 5)[0]
            states.append(c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0])
            out = b""
            while chunk := c.recv(65536):
                out += chunk
            assert out.startswith(b"HTTP/1.1 200") and b"Connection: close\r\n" in out
    assert states == [close_wait] * 50


def test_forwarded_headers_and_request_id(proxy: ProxyUnderTest) -> None:
    _, body = proxy.get("/_echo", headers={"X-Forwarded-For": "10.1.2.3", "Connection": "close, X-Drop", "X-Drop": "1"})
    headers = {k: v for k, v in json.loads(body)["headers"]}
    assert headers["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-port"] == str(proxy.port)
    assert len(headers["x-request-id"]) > 8
    assert "x-drop" not in headers  # named in Connection: hop-by-hop


def test_client_request_id_is_kept(proxy: ProxyUnderTest) -> None:
    _, body = proxy.get("/_echo", headers={"X-Request-Id": "abc-123"})
    headers = dict(json.loads(body)["headers"])
    assert headers["x-request-id"] == "abc-123"


def test_chunked_request_body_is_forwarded(proxy: ProxyUnderTest) -> None:
    c = http.client.HTTPConnection(proxy.host, proxy.port, timeout=5)
    c.request("POST", "/_echo", body=iter([b"hello ", b"world"]), encode_chunked=True,
              headers={"Transfer-Encoding": "chunked"})
    r = c.getresponse()
    assert r.status == 200 and json.loads(r.read())["body_length"] == 11
    c.request("POST", "/_echo", body=b"x" * 100_000)
    r = c.getresponse()
    assert json.loads(r.read())["body_length"] == 100_000
    c.close()


def test_pipelined_requests_answered_in_order(proxy: ProxyUnderTest) -> None:
    reqs = b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
    reqs += b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = proxy.raw(reqs)
    paths = [line.split()[-1] for line in out.split(b"\n") if line.startswith(b"instance")]
    assert paths == [b"/p0", b"/p1", b"/p2", b"/p3", b"/p4", b"/last"]


def test_head_request(proxy: ProxyUnderTest) -> None:
    c = http.client.HTTPConnection(proxy.host, proxy.port, timeout=5)
    for _ in range(3):
        c.request("HEAD", "/")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"" and int(r.headers["Content-Length"]) > 0
    c.close()


def test_http10_client(proxy: ProxyUnderTest) -> None:
    out = proxy.raw(b"GET /old HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"path /old\n")
    assert b"Connection: close" in out


def test_dead_backend_is_retried_on_another(demos: list[Demo]) -> None:
    dead = f"127.0.0.1:{free_port()}"
    p = ProxyUnderTest([dead, demos[0].address])
    try:
        for _ in range(6):
            assert p.get("/")[0] == 200
        assert p.listener.counters.retries == 3  # every other request tried the dead one first
        assert p.group.backends["web-1"].errors == 3
    finally:
        p.close()


def test_all_backends_dead_gives_502_then_503_with_none() -> None:
    p = ProxyUnderTest([f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"])
    try:
        assert p.get("/")[0] == 502
        p.group.set_serving([])
        status, body = p.get("/")
        assert status == 503 and body == b"Service Unavailable\n"
    finally:
        p.close()


def test_backend_restart_between_requests_is_invisible(demos: list[Demo]) -> None:
    """A pooled connection closed by a restarted backend is retried (stale), not failed."""
    d = demos[0]
    p = ProxyUnderTest([d.address])
    try:
        assert p.get("/")[0] == 200
        d.stop()
        d2 = Demo("demo-again")
        p.group.backends["web-1"].port = d2.port  # same target, new port: pooled conn is stale
        try:
            assert p.get("/")[0] == 200
        finally:
            d2.stop()
    finally:
        p.close()


def test_response_timeout_gives_504(demos: list[Demo]) -> None:
    d = demos[0]
    p = ProxyUnderTest([d.address], response_timeout=0.3)
    try:
        d.get("/_hang?s=2")
        assert p.get("/")[0] == 504
    finally:
        p.close()


def test_malformed_request_gets_400_and_never_reaches_backend(proxy: ProxyUnderTest) -> None:
    before = sum(b.requests for b in proxy.group.backends.values())
    out = proxy.raw(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400")
    assert sum(b.requests for b in proxy.group.backends.values()) == before


def test_upgrade_is_forwarded_and_a_refusal_passed_on(proxy: ProxyUnderTest) -> None:
    """The demo backend does not speak WebSocket: its refusal reaches the client, which is then closed.
    (Tunnelling itself is tested in test_proxy_http.py.)"""
    out = proxy.raw(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 4") and b"Connection: close\r\n" in out


def test_idle_client_is_kept_alive_then_closed(demos: list[Demo]) -> None:
    p = ProxyUnderTest([demos[0].address], idle_timeout=1.0)
    try:
        with socket.create_connection((p.host, p.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            s.settimeout(4)
            assert s.recv(10) == b""  # closed by the idle sweep within ~2 s
    finally:
        p.close()
