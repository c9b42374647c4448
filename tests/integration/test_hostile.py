"""Hostile input against the real proxy: smuggling corpus, fuzzing, slow clients, floods, limits.

The backend is a recording server (tests/recording.py): every byte it received is
kept and parsed strictly, so each test can assert exactly what reached it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import statistics
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fivenines.core.framing import Limits
from fivenines.runtime.supervisor import die_with_parent
from tests.corpus.smuggling import CASES
from tests.helpers import PY, LoopThread, ProxyUnderTest, demo_spec, http_get
from tests.recording import RecordingServer
from tests.tls_helpers import issue, make_ca


def exchange(host: str, port: int, data: bytes, timeout: float = 3.0, source: str | None = None,
             tls: ssl.SSLContext | None = None) -> tuple[bytes, bool]:
    """Send ``data``, half-close, read until the server closes. Returns (bytes read, closed by server).

    Over TLS (``tls``, a client context for proxy.test) there is no half-close: the data is
    sent and the answer read until the server closes (or ``timeout``)."""
    s = socket.create_connection((host, port), timeout=timeout, source_address=(source, 0) if source else None)
    if tls is not None:
        s = tls.wrap_socket(s, server_hostname="proxy.test")
    chunks: list[bytes] = []
    closed = False
    try:
        try:
            s.sendall(data)
            if tls is None:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may refuse before reading everything
        while True:
            try:
                b = s.recv(65536)
            except TimeoutError:
                break
            except (ConnectionResetError, ssl.SSLEOFError):
                closed = True
                break
            if not b:
                closed = True
                break
            chunks.append(b)
    finally:
        s.close()
    return b"".join(chunks), closed


@dataclass
class Rig:
    lt: LoopThread
    rec: RecordingServer
    proxy: ProxyUnderTest

    def normal_ok(self) -> bool:
        status, body = self.proxy.get("/normal")
        return status == 200 and body == b"recorded GET /normal\n"


def _rig(tls_dir: Path | None = None) -> Iterator[Rig]:
    lt = LoopThread()
    rec = RecordingServer(lt)
    proxy = ProxyUnderTest([rec.address], tls_dir, response_timeout=1.0, header_timeout=2.0)
    yield Rig(lt, rec, proxy)
    proxy.close()
    rec.close()
    lt.close()


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    yield from _rig()


@pytest.fixture(scope="module")
def tls_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """The rig with an https listener in front (TLS as fivenines up serves it)."""
    yield from _rig(tmp_path_factory.mktemp("tls"))


@pytest.fixture(params=["http", "https"])
def any_rig(request: pytest.FixtureRequest) -> Rig:
    """The corpus runs over plain HTTP and over TLS: the same parser behind either."""
    return request.getfixturevalue("rig" if request.param == "http" else "tls_rig")  # type: ignore[no-any-return]


def _exchange(rig: Rig, data: bytes) -> tuple[bytes, bool]:
    return exchange(rig.proxy.host, rig.proxy.port, data, tls=rig.proxy.client_tls)


@pytest.mark.parametrize(("name", "data", "status"), CASES, ids=[c[0] for c in CASES])
def test_corpus_case_is_refused_before_the_backend(any_rig: Rig, name: str, data: bytes, status: int) -> None:
    rig = any_rig
    before = len(rig.rec.requests)
    raw_before = len(rig.rec.raw)
    out, closed = _exchange(rig, data)
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:200]
    assert closed, "the connection must be closed after a refused request"
    assert len(rig.rec.requests) == before and len(rig.rec.raw) == raw_before, "nothing may reach the backend"
    assert b"/smuggled" not in rig.rec.raw
    assert rig.normal_ok()  # a well-behaved client keeps being served


def test_valid_request_after_a_valid_one_is_pipelined_but_nothing_after_a_refused_one(any_rig: Rig) -> None:
    rig = any_rig
    rig.rec.reset()
    ok = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
    bad = b"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"
    out, closed = _exchange(rig, ok + bad + b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 400" in out and closed
    assert [r.target for r in rig.rec.requests] == [b"/first"]


def test_forwarded_requests_are_normalised(rig: Rig) -> None:
    rig.rec.reset()
    data = (b"POST http://app.example/p?q=1 HTTP/1.1\r\nHost: ignored.example\r\nTransfer-Encoding:  Chunked \r\n"
            b"Connection: close\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n")
    out, _ = exchange(rig.proxy.host, rig.proxy.port, data)
    assert out.startswith(b"HTTP/1.1 200")
    [r] = rig.rec.requests
    headers = [(n.lower(), v) for n, v in r.headers]
    assert r.target == b"/p?q=1" and (b"host", b"app.example") in headers
    assert (b"transfer-encoding", b"chunked") in headers and r.body == b"abc"
    assert b"x-trailer" not in dict(headers) and b";ext" not in rig.rec.raw


# ---------------------------------------------------------------- response splitting / framing


class _BadBackend:
    """A backend answering a fixed raw response to every request."""

    def __init__(self, lt: LoopThread, response: bytes) -> None:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                await r.readuntil(b"\r\n\r\n")
                w.write(response)
                await w.drain()
                await asyncio.sleep(0.2)
            finally:
                w.close()

        async def start() -> asyncio.Server:
            return await asyncio.start_server(handle, "127.0.0.1", 0)

        self.server = lt.call(start())
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\rSet-Cookie: stolen=1\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\nSet-Cookie: stolen=1\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n",
    ],
    ids=["CL+TE", "CL CL", "TE gzip", "TE gzip,chunked", "CR injection", "LF injection", "bare LF", "space in name"],
)
def test_ambiguous_or_split_responses_become_502(response: bytes) -> None:
    lt = LoopThread()
    bad = _BadBackend(lt, response)
    p = ProxyUnderTest([bad.address], response_timeout=2.0)
    try:
        status, body = p.get("/")
        assert status == 502
        assert b"stolen" not in body
    finally:
        p.close()
        lt.call(_stop(bad.server))
        lt.close()


async def _stop(server: asyncio.Server) -> None:
    server.close()


# ---------------------------------------------------------------- fuzzing

# Mostly plausible pieces, some hostile ones: so that both paths (forwarded, refused) are exercised.
_GOOD_LINES = [b"Content-Length: 3", b"Content-Length: 0", b"Transfer-Encoding: chunked", b"X-A: 1",
               b"Connection: close", b"Connection: keep-alive, X-A", b"Cookie: a=b", b"Accept: */*"]
_BAD_LINES = [b"Host: y", b"Content-Length: -1", b"Content-Length: 3, 3", b"Transfer-Encoding: gzip, chunked",
              b"Transfer-Encoding : chunked", b"Transfer_Encoding: chunked", b" folded", b"X: a\x00b", b"X: a\rb",
              b"Expect: 100-continue", b"Upgrade: websocket", b"Connection: Upgrade"]
_LINES = st.sampled_from(_GOOD_LINES * 4 + _BAD_LINES)
_EOL = st.sampled_from([b"\r\n"] * 8 + [b"\n", b"\r"])
_START = st.sampled_from([b"GET / HTTP/1.1", b"POST /p HTTP/1.1", b"PUT /x HTTP/1.1", b"DELETE /d HTTP/1.1"] * 4 + [
    b"PUT /x HTTP/1.0", b"G@T / HTTP/1.1", b"GET /a b HTTP/1.1", b"GET * HTTP/1.1", b"OPTIONS * HTTP/1.1",
    b"GET http://h/x HTTP/1.1", b"GET / HTTP/2.0", b"GET /",
])
_BODY = st.sampled_from([b"", b"abc", b"0\r\n\r\n", b"3\r\nabc\r\n0\r\n\r\n", b"5\r\nab\r\n", b"zz\r\n"])


@st.composite
def requestish(draw: Any) -> bytes:
    parts = [draw(_START)]
    eol = draw(_EOL)
    if draw(st.integers(0, 9)):
        parts.append(b"Host: x")
    parts += draw(st.lists(_LINES, max_size=5))
    head = eol.join(parts) + eol + eol
    return head + draw(_BODY) + draw(st.sampled_from([b"", b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(requestish(), st.binary(max_size=200)))
def test_fuzzed_input_never_reaches_the_backend_unframed(rig: Rig, data: bytes) -> None:
    before = len(rig.rec.requests)
    out, _ = exchange(rig.proxy.host, rig.proxy.port, data, timeout=0.5)
    event(f"answered {out[9:12].decode('latin-1') or 'nothing'}; backend got {len(rig.rec.requests) - before}")
    assert rig.rec.clean(), [c.error for c in rig.rec.conns if c.error]
    for r in rig.rec.requests:
        names = [n.lower() for n, _ in r.headers]
        assert not (b"content-length" in names and b"transfer-encoding" in names)
        assert names.count(b"transfer-encoding") <= 1 and names.count(b"content-length") <= 1
        assert names.count(b"host") <= 1
        if b"transfer-encoding" in names:
            assert dict((n.lower(), v) for n, v in r.headers)[b"transfer-encoding"] == b"chunked"
    assert rig.normal_ok()


# ---------------------------------------------------------------- limits


def test_body_limits_give_413() -> None:
    lt = LoopThread()
    rec = RecordingServer(lt)
    p = ProxyUnderTest([rec.address], limits=Limits(max_body=1024))
    try:
        out, closed = exchange(p.host, p.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + b"a" * 2000)
        assert out.startswith(b"HTTP/1.1 413") and closed and rec.requests == [] and rec.raw == b""
        chunk = b"%x\r\n%s\r\n" % (600, b"b" * 600)
        out, closed = exchange(p.host, p.port, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                               + chunk * 3 + b"0\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 413") and closed
        assert rec.requests == [] and rec.clean()  # at most a cut-short body reached it, never a whole request
        out, _ = exchange(p.host, p.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n" + b"a" * 1024)
        assert out.startswith(b"HTTP/1.1 200") and len(rec.requests) == 1
        assert p.listener.counters.rejected == 2
    finally:
        p.close()
        rec.close()
        lt.close()


def test_rate_limit_per_client_ip_gives_429(demo: Any) -> None:
    p = ProxyUnderTest([demo.address], rate_limit=(2.0, 5))
    try:
        statuses = [http_get(p.host, p.port, "/")[0] for _ in range(8)]
        assert statuses[:5] == [200] * 5 and statuses[5:] == [429] * 3
        out, _ = exchange(p.host, p.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", source="127.0.0.9")
        assert out.startswith(b"HTTP/1.1 200")  # another client has its own bucket
        out, _ = exchange(p.host, p.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 429") and b"Retry-After: 1" in out
        assert p.listener.counters.rate_limited == 4
    finally:
        p.close()


_HOLDER = textwrap.dedent("""
    import socket, ssl, sys, time
    host, port, n, source, hold, trickle = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5]), sys.argv[6] == "1"
    tls = sys.argv[7] == "1"  # over TLS: the handshake done, then the same trickle inside it
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    socks, refused, opened = [], 0, 0
    deadline = time.monotonic() + hold
    def open_one():
        global refused, opened
        try:
            s = socket.create_connection((host, port), timeout=2, source_address=(source, 0))
            if tls:
                s = ctx.wrap_socket(s, server_hostname="proxy.test")
        except OSError:
            refused += 1
            return
        opened += 1
        s.setblocking(False)
        if trickle:
            s.send(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n")
        socks.append(s)
    for _ in range(n):
        open_one()
    print("opened", len(socks), flush=True)
    while time.monotonic() < deadline:
        alive = []
        for s in socks:
            try:
                data = s.recv(4096)
                if data == b"" or data.startswith(b"HTTP/1.1 503") or data.startswith(b"HTTP/1.1 408"):
                    s.close(); refused += data.startswith(b"HTTP/1.1 503") or data == b""; continue
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except OSError:
                s.close(); refused += 1; continue
            if trickle:
                try:
                    s.send(b"X-a: b\\r\\n")
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
                except OSError:
                    s.close(); continue
            alive.append(s)
        socks = alive
        while trickle and len(socks) < n and time.monotonic() < deadline:
            open_one()  # a slowloris attacker reopens what was closed
        time.sleep(0.2)
    print("done", len(socks), refused, opened, flush=True)
""")


def _attacker(port: int, n: int, source: str, hold: float, trickle: bool, tls: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen([PY, "-c", _HOLDER, "127.0.0.1", str(port), str(n), source, str(hold), "1" if trickle else "0",
                             "1" if tls else "0"],
                            stdout=subprocess.PIPE, text=True, preexec_fn=die_with_parent(os.getpid()))


def _latencies(host: str, port: int, seconds: float, tls: ssl.SSLContext | None = None) -> list[float]:
    """Normal requests for ``seconds``: half on one keep-alive connection, half on new connections
    (over TLS with ``tls``: new connections make a full handshake each)."""
    import http.client

    def conn() -> http.client.HTTPConnection:
        if tls is not None:
            return http.client.HTTPSConnection(host, port, timeout=5, context=tls)
        return http.client.HTTPConnection(host, port, timeout=5)

    lat: list[float] = []
    keep = conn()
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        t0 = time.perf_counter()
        c = keep if i % 2 else conn()
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        status = r.status
        if c is not keep:
            c.close()
        lat.append(time.perf_counter() - t0)
        assert status == 200
        i += 1
    keep.close()
    return lat


def https_listener(listener: dict[str, Any], folder: Path) -> ssl.SSLContext:
    """Make ``listener`` (a spec's) https with a fresh certificate for 127.0.0.1; returns a client context."""
    ca = make_ca()
    cert, key = issue(ca, ["127.0.0.1", "proxy.test"]).write(folder, "proxy")
    listener.update(protocol="https", certificates=[{"cert": str(cert), "key": str(key)}])
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cadata=ca.pem().decode())
    return ctx


def _p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100)[98]


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "https"])
def test_slowloris_of_500_connections_does_not_hurt_normal_clients(run_fivenines: Any, tmp_path: Path,
                                                                   protocol: str) -> None:
    spec = demo_spec(count=2, standby=0)
    spec["listeners"][0]["timeouts"] = {"client_header": "2s"}
    tls = https_listener(spec["listeners"][0], tmp_path) if protocol == "https" else None
    f = run_fivenines(spec)
    f.wait_healthy()
    attack = _attacker(f.port, 500, "127.0.0.2", 6.0, trickle=True, tls=tls is not None)
    assert attack.stdout is not None
    assert attack.stdout.readline().startswith("opened 500")
    lat = _latencies(f.host, f.port, 4.0, tls)
    out, _ = attack.communicate(timeout=30)
    assert len(lat) > (100 if tls else 200)  # (over TLS half of them are new handshakes)
    p99 = _p99(lat)
    print(f"slowloris of 500 {protocol} connections: {len(lat)} normal requests, all 200, p99 {p99 * 1000:.1f} ms, "
          f"max {max(lat) * 1000:.1f} ms; attacker: {out.strip()}")
    # never near the attackers' header deadline (2 s): normal clients are not queued behind them.
    # The p99 target (< 100 ms) is bench/timings_bench.py's.
    assert p99 < 1.0, f"p99 {p99 * 1000:.1f} ms under slowloris"
    # the trickling connections were cut at the header deadline (408), and reopened by the attacker
    assert int(out.split()[-1]) > 500, out


@pytest.mark.slow
def test_connection_flood_is_refused_while_established_clients_are_served(run_fivenines: Any) -> None:
    import http.client

    spec = demo_spec(count=1, standby=0)
    spec["listeners"][0]["limits"] = {"max_connections": 300, "max_connections_per_ip": 150}
    f = run_fivenines(spec)
    f.wait_healthy()
    established = http.client.HTTPConnection(f.host, f.port, timeout=5)
    established.request("GET", "/")
    assert established.getresponse().read()
    attack = _attacker(f.port, 400, "127.0.0.3", 3.0, trickle=False)
    assert attack.stdout is not None
    attack.stdout.readline()
    for _ in range(50):
        established.request("GET", "/")
        r = established.getresponse()
        r.read()
        assert r.status == 200
        assert f.get("/")[0] == 200  # a new client from another address is admitted too
    out, _ = attack.communicate(timeout=20)
    refused = int(out.split()[-2])
    assert refused >= 250, out  # 150 of 400 admitted from that address
    assert f.status()["listeners"][0]["refused_connections"] >= 250
    established.close()


@pytest.mark.slow
def test_files_fivenines_writes_are_owner_only(run_fivenines: Any, tmp_path: Any) -> None:
    f = run_fivenines(demo_spec(count=1, standby=0))
    f.wait_healthy()
    f.get("/")
    written = [p for p in (tmp_path / "state").rglob("*")] + [f.ready]
    assert any(p.name.endswith(".err.log") for p in written)
    for p in written:
        mode = p.stat().st_mode & 0o777
        assert mode & 0o077 == 0, f"{p} is mode {oct(mode)}"
