"""HTTP/1.1 details through real connections: upgrades, 100-continue, half-close, timeouts."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.helpers import wait_until
from tests.integration.servers import DataPlane, RawServer


def recv_until(s: socket.socket, marker: bytes, limit: float = 5.0) -> bytes:
    s.settimeout(limit)
    buf = b""
    while marker not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


@pytest.fixture(scope="module")
def ws_server() -> Iterator[RawServer]:
    s = RawServer(name="ws")
    s._handler = s.upgrade_echo
    yield s
    s.close()


@pytest.fixture
def ws(ws_server: RawServer) -> Iterator[DataPlane]:
    dp = DataPlane({"listeners": [{"port": 0, "default_target_group": "web"}],
                    "target_groups": {"web": {"targets": [ws_server.address]}}})
    yield dp
    dp.close()


def test_websocket_upgrade_is_tunnelled_both_ways(ws: DataPlane) -> None:
    with socket.create_connection((ws.host, ws.port), timeout=5) as s:
        s.sendall(b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                  b"Sec-WebSocket-Version: 13\r\n\r\nearly-frame")
        head = recv_until(s, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"Upgrade: websocket\r\n" in head and b"Connection: Upgrade\r\n" in head
        rest = head.split(b"\r\n\r\n", 1)[1]
        rest += recv_until(s, b"early-frame")[len(rest):] if b"early-frame" not in rest else b""
        assert rest.endswith(b"early-frame")  # bytes sent right after the head reached the target
        big = bytes(range(256)) * 4096  # 1 MB through the tunnel and back
        got = b""
        s.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 10
        while len(got) < len(big) and time.monotonic() < deadline:
            if sent < len(big):
                try:
                    sent += s.send(big[sent:sent + 65536])
                except BlockingIOError:
                    pass
            try:
                got += s.recv(65536)
            except BlockingIOError:
                time.sleep(0.001)
        assert got == big
        s.setblocking(True)
        s.shutdown(socket.SHUT_WR)  # half-close: the target still answers after our EOF
        assert recv_until(s, b"bye").endswith(b"bye")
        s.settimeout(5)
        assert s.recv(10) == b""
    assert ws.listener.counters.upgrades == 1
    wait_until(lambda: ws.backend("web-1").in_flight == 0, 5, what="tunnel released")


def test_refused_upgrade_is_passed_on_and_the_connection_closed(ws: DataPlane) -> None:
    out = ws.raw(b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: nope\r\n\r\n")
    assert out == b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    wait_until(lambda: ws.backend("web-1").in_flight == 0, 5, what="attempt released")


def test_connect_method_is_not_implemented(ws: DataPlane) -> None:
    out = ws.raw(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 501")


@pytest.fixture(scope="module")
def app() -> Iterator[RawServer]:
    s = RawServer(name="app")
    yield s
    s.close()


@pytest.fixture
def dp(app: RawServer) -> Iterator[DataPlane]:
    d = DataPlane({"listeners": [{"port": 0, "default_target_group": "web",
                                  "timeouts": {"client_header": "300ms", "upstream_idle": "300ms"}}],
                   "target_groups": {"web": {"targets": [app.address]}}})
    yield d
    d.close()


def test_expect_100_continue_is_relayed(dp: DataPlane) -> None:
    with socket.create_connection((dp.host, dp.port), timeout=5) as s:
        s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert recv_until(s, b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello")
        resp = recv_until(s, b"}")
        assert resp.startswith(b"HTTP/1.1 200") and b'"body_bytes": 5' in resp


def test_no_interim_response_for_an_http10_client(dp: DataPlane) -> None:
    with socket.create_connection((dp.host, dp.port), timeout=5) as s:
        s.sendall(b"POST /up HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi")
        resp = recv_until(s, b"}")
        assert resp.startswith(b"HTTP/1.1 200") and b"100 Continue" not in resp


def test_half_closed_client_still_gets_its_answer(dp: DataPlane) -> None:
    with socket.create_connection((dp.host, dp.port), timeout=5) as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        resp = recv_until(s, b"}")
        assert resp.startswith(b"HTTP/1.1 200")


def test_slow_request_head_gets_408(dp: DataPlane) -> None:
    with socket.create_connection((dp.host, dp.port), timeout=5) as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
        t0 = time.monotonic()
        out = recv_until(s, b"\n\n", limit=5)
        assert out.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 2.5


def test_pooled_upstream_connections_are_closed_after_upstream_idle(dp: DataPlane) -> None:
    assert dp.request()[0] == 200
    b = dp.backend("web-1")
    assert len(b.idle) == 1
    wait_until(lambda: len(b.idle) == 0, 3, what="idle upstream connection closed")


def test_whole_request_timeout_gives_504() -> None:
    hang = RawServer(name="hang")
    hang._handler = hang.hang
    d = DataPlane({"listeners": [{"port": 0, "default_target_group": "web",
                                  "timeouts": {"request": "400ms", "response": "10s"}}],
                   "target_groups": {"web": {"targets": [hang.address]}}})
    try:
        t0 = time.monotonic()
        assert d.request()[0] == 504
        assert time.monotonic() - t0 < 5  # the request timeout (400ms), not the response timeout (10s)
    finally:
        d.close()
        hang.close()


def test_chunked_and_close_delimited_responses_are_reframed(dp: DataPlane) -> None:
    src = RawServer(name="src")

    async def handler(r: object, w: object) -> None:
        req = await src.read_request(r, w)  # type: ignore[arg-type]
        assert req is not None
        if req["url"] == b"/chunked":
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")  # type: ignore[attr-defined]
        else:
            w.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the close")  # type: ignore[attr-defined]
        await w.drain()  # type: ignore[attr-defined]

    src._handler = handler  # type: ignore[assignment]
    d = DataPlane({"listeners": [{"port": 0, "default_target_group": "web"}],
                   "target_groups": {"web": {"targets": [src.address]}}})
    try:
        status, headers, body = d.request("GET", "/chunked")
        assert (status, body, headers.get("transfer-encoding")) == (200, b"hello world", "chunked")
        status, headers, body = d.request("GET", "/close")
        assert (status, body, headers.get("transfer-encoding")) == (200, b"until the close", "chunked")
        out = d.raw(b"GET /close HTTP/1.0\r\n\r\n")  # an HTTP/1.0 client gets a close-delimited body
        assert out.endswith(b"\r\n\r\nuntil the close") and b"chunked" not in out
    finally:
        d.close()
        src.close()


def test_http10_request_without_host_is_served_over_a_kept_upstream_connection() -> None:
    """``GET / HTTP/1.0`` with no Host (openssl s_time, old clients): the target gets an HTTP/1.0
    request asking for keep-alive, not an HTTP/1.1 one without the Host that HTTP/1.1 requires (nginx
    answers that 400), and the one upstream connection serves the next such request too."""
    src = RawServer(name="strict")
    lines: list[bytes] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:  # as nginx: an HTTP/1.1 request must name its Host
            head = await r.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0]
            lines.append(line)
            lower = head.lower()
            if line.endswith(b"HTTP/1.1") and b"\r\nhost:" not in lower:
                w.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await w.drain()
                return
            keep = line.endswith(b"HTTP/1.1") or b"\r\nconnection: keep-alive\r\n" in lower
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: %s\r\n\r\nok"
                    % (b"keep-alive" if keep else b"close"))
            await w.drain()
            if not keep:
                return

    src._handler = handler  # type: ignore[assignment]
    d = DataPlane({"listeners": [{"port": 0, "default_target_group": "web"}],
                   "target_groups": {"web": {"targets": [src.address]}}})
    try:
        for _ in range(3):
            out = d.raw(b"GET /old HTTP/1.0\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"\r\n\r\nok"), out
        assert lines == [b"GET /old HTTP/1.0"] * 3
        assert src.connections == 1  # kept and reused, not one connection per request
    finally:
        d.close()
        src.close()


def test_forwarded_headers_reach_the_target(dp: DataPlane) -> None:
    _, _, body = dp.request(headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https",
                                     "Keep-Alive": "timeout=1", "TE": "trailers"})
    h = json.loads(body)["headers"]
    assert h["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert h["x-forwarded-proto"] == "http"  # the client's own claim is replaced
    assert "keep-alive" not in h and "te" not in h and h["x-request-id"]


def test_early_answer_drops_the_rest_of_the_body_and_keeps_the_connection() -> None:
    """A target that answers before reading the body (an early 413): the client's upload is read and
    dropped, not reset, and its connection carries on."""
    early = RawServer(name="early")

    async def handler(r: object, w: object) -> None:
        await r.readuntil(b"\r\n\r\n")  # type: ignore[attr-defined]
        w.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")  # type: ignore[attr-defined]
        await w.drain()  # type: ignore[attr-defined]
        while await r.read(65536):  # type: ignore[attr-defined]
            pass  # lingering close, as nginx does, so that the answer is not lost to a reset

    early._handler = handler  # type: ignore[assignment]
    d = DataPlane({"listeners": [{"port": 0, "default_target_group": "web"}],
                   "target_groups": {"web": {"targets": [early.address]}}})
    try:
        c = d.conn()
        for _ in range(2):
            c.request("POST", "/upload", body=b"x" * (4 * 1024 * 1024))
            r = c.getresponse()
            r.read()
            assert r.status == 413 and not r.will_close
        c.close()
        assert d.listener.counters.connections == 1 and d.listener.counters.responses == 2
    finally:
        d.close()
        early.close()


def test_oversized_request_head_gets_431(dp: DataPlane) -> None:
    out = dp.raw(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Filler: " + b"a" * 70000 + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431")


def test_oversized_response_head_gives_502() -> None:
    huge = RawServer(name="huge")

    async def handler(r: object, w: object) -> None:
        await r.readuntil(b"\r\n\r\n")  # type: ignore[attr-defined]
        w.write(b"HTTP/1.1 200 OK\r\nX-Filler: " + b"a" * 100000 + b"\r\n\r\n")  # type: ignore[attr-defined]
        await w.drain()  # type: ignore[attr-defined]
        await r.read()  # type: ignore[attr-defined]

    huge._handler = handler  # type: ignore[assignment]
    d = DataPlane({"listeners": [{"port": 0, "default_target_group": "web"}],
                   "target_groups": {"web": {"targets": [huge.address]}}})
    try:
        assert d.request()[0] == 502
    finally:
        d.close()
        huge.close()


def test_other_transfer_codings_are_refused(dp: DataPlane) -> None:
    """Only exactly `chunked` is forwarded (issue 8): another coding would be ambiguous framing."""
    before = dp.listener.counters.rejected
    out = dp.raw(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n"
                 b"3\r\nabc\r\n0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Connection: close" in out
    assert dp.listener.counters.rejected == before + 1


def test_early_answer_from_a_target_that_stops_reading_does_not_stall_the_client() -> None:
    """The target answers early and stops reading: the upstream write buffer fills and the client
    is paused for it; releasing that attempt must let the client's body be read (and dropped)."""
    stuck = RawServer(name="stuck")

    async def handler(r: object, w: object) -> None:
        await r.readuntil(b"\r\n\r\n")  # type: ignore[attr-defined]
        await asyncio.sleep(0.5)  # reads nothing: the proxy's buffer towards it fills, the client is paused
        w.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n")  # type: ignore[attr-defined]
        await w.drain()  # type: ignore[attr-defined]
        await asyncio.sleep(8)  # and reads nothing more

    stuck._handler = handler  # type: ignore[assignment]
    d = DataPlane({"listeners": [{"port": 0, "default_target_group": "web"}],
                   "target_groups": {"web": {"targets": [stuck.address]}}})
    try:
        t0 = time.monotonic()
        c = d.conn(timeout=10)
        c.request("POST", "/upload", body=b"x" * (32 * 1024 * 1024))
        r = c.getresponse()
        r.read()
        assert r.status == 413
        c.close()
        assert time.monotonic() - t0 < 6, "the client waited for the target"
    finally:
        d.close()
        stuck.close()
