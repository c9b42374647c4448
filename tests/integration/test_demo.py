"""The demo backend's behaviours, over real loopback connections."""

from __future__ import annotations

import json
import socket

from tests.helpers import Demo, http_get, wait_until


def test_answers_with_id_and_port(demo: Demo) -> None:
    status, body = demo.get("/anything")
    assert status == 200 and body.decode() == f"instance demo-a port {demo.port} path /anything\n"
    status, body = http_get(demo.host, demo.port, "/x", headers={"Accept": "application/json"})
    data = json.loads(body)
    assert (data["instance"], data["port"], data["path"]) == ("demo-a", demo.port, "/x")
    assert demo.get("/health") == (200, b"ok\n")


def test_fail_and_recover(demo: Demo) -> None:
    assert demo.get("/_fail")[0] == 200
    assert demo.get("/")[0] == 500
    assert demo.get("/health")[0] == 500
    assert demo.get("/_recover")[0] == 200
    assert demo.get("/health")[0] == 200


def test_slow(demo: Demo) -> None:
    import time

    demo.get("/_slow?ms=1000")
    t0 = time.monotonic()
    assert demo.get("/")[0] == 200
    assert time.monotonic() - t0 >= 1.0
    demo.get("/_recover")
    t0 = time.monotonic()
    demo.get("/")
    assert time.monotonic() - t0 < 1.0


def test_hang_stops_answering_for_a_while(demo: Demo) -> None:
    demo.get("/_hang?s=1")
    with socket.create_connection((demo.host, demo.port), timeout=0.3) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            got = s.recv(100)
        except TimeoutError:
            got = b""
    assert got == b""
    wait_until(lambda: demo.get("/health")[0] == 200, 5, what="demo to answer again")


def test_echo_shows_headers(demo: Demo) -> None:
    _, body = http_get(demo.host, demo.port, "/_echo?a=1", headers={"X-Test": "yes"})
    data = json.loads(body)
    assert data["query"] == {"a": "1"} and ["x-test", "yes"] in data["headers"]
