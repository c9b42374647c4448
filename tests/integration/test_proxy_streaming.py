"""Large bodies stream through ``fivenines up`` both ways with flat memory (real process, real sockets).

The full 1 GB measurement is in ``bench/proxy_bench.py``; here 64 MB each way, and the load
balancer's peak RSS (VmHWM) may not grow by more than 20 MB over its RSS before the transfer.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import wait_until
from tests.integration.servers import RawServer

pytestmark = pytest.mark.slow

SIZE = 64 * 1024 * 1024


def mem_kb(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":")
                out[k] = int(v.split()[0])
    return out


@pytest.fixture
def lb(run_fivenines: Any) -> Iterator[Any]:
    sink = RawServer(name="sink")
    f = run_fivenines({
        "name": "stream",
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": [{"port": 0, "default_target_group": "web"}],
        "target_groups": {"web": {"targets": [sink.address],
                                  "health_check": {"path": "/health", "interval": "200ms", "timeout": "150ms"}}},
    })
    f.wait_healthy()
    yield f
    sink.close()


def test_large_download_and_uploads_stream_with_flat_memory(lb: Any) -> None:
    pid = lb.proc.pid
    c = http.client.HTTPConnection(lb.host, lb.port, timeout=30)
    c.request("GET", "/warm")  # warm up: first request, pools, parsers
    c.getresponse().read()
    before = mem_kb(pid)["VmRSS"]

    c.request("GET", f"/big?n={SIZE}")
    r = c.getresponse()
    got = 0
    while True:
        chunk = r.read(256 * 1024)
        if not chunk:
            break
        got += len(chunk)
    assert r.status == 200 and got == SIZE

    piece = b"u" * (256 * 1024)

    def body() -> Iterator[bytes]:
        for _ in range(SIZE // len(piece)):
            yield piece

    c.request("POST", "/upload", body=body(), headers={"Content-Length": str(SIZE)})
    r = c.getresponse()
    assert json.loads(r.read())["body_bytes"] == SIZE
    c.request("POST", "/upload-chunked", body=body(), encode_chunked=True,
              headers={"Transfer-Encoding": "chunked"})
    r = c.getresponse()
    assert json.loads(r.read())["body_bytes"] == SIZE
    c.close()

    peak = mem_kb(pid)["VmHWM"]
    grew_mb = (peak - before) / 1024
    assert grew_mb < 20, f"peak RSS grew {grew_mb:.1f} MB while streaming 3 x 64 MB"


def test_a_client_that_stops_reading_stops_the_target_being_read(lb: Any) -> None:
    """Back-pressure on a download: while the client reads nothing, the load balancer stops
    reading the target once the client's socket and its own small write buffer are full; it
    does not keep taking the target's bytes into memory (one loop round may read a connection
    many times over, so a response body is written at once, not held to the end of the round)."""
    pid = lb.proc.pid
    s = socket.create_connection((lb.host, lb.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.sendall(b"GET /warm HTTP/1.1\r\nHost: t\r\n\r\n")
    wait_until(lambda: b"\r\n\r\n" in s.recv(65536), 5, what="warm-up response")
    before = mem_kb(pid)["VmRSS"]
    s.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % SIZE)
    first = s.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    # nothing more is read for 1.5 s: the load balancer's memory is sampled meanwhile (a window
    # in which nothing may grow, not a wait for something to happen)
    samples = []
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        samples.append(mem_kb(pid)["VmRSS"])
        time.sleep(0.05)
    grew_mb = (max(samples) - before) / 1024
    assert grew_mb < 4, f"RSS grew {grew_mb:.1f} MB while the client read nothing (the target was read on)"
    # the rest still arrives whole
    s.settimeout(30)
    got = len(first) - first.index(b"\r\n\r\n") - 4
    while got < SIZE:
        chunk = s.recv(1 << 20)
        assert chunk
        got += len(chunk)
    assert got == SIZE
    s.close()
