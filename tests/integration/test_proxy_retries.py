"""Retry rules through real connections: which failures, which methods, never after a byte, budget."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import free_port
from tests.integration.servers import DataPlane, RawServer, unaccepting_listener


@pytest.fixture(scope="module")
def ok() -> Iterator[RawServer]:
    s = RawServer(name="ok")
    yield s
    s.close()


@pytest.fixture
def busy() -> Iterator[RawServer]:
    s = RawServer(name="busy")
    s._handler = s.status_500
    yield s
    s.close()


def plane(first: str, second: str, **group: Any) -> DataPlane:
    """Round robin over [first, second]: the first request of each pair tries ``first``."""
    return DataPlane({
        "listeners": [{"port": 0, "default_target_group": "web", "timeouts": {"connect": "300ms"}}],
        "target_groups": {"web": {"targets": [first, second], **group}},
    })


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"])
def test_5xx_is_retried_for_idempotent_methods(busy: RawServer, ok: RawServer, method: str) -> None:
    dp = plane(busy.address, ok.address)
    try:
        status, _, _ = dp.request(method, "/x", body=b"data" if method == "PUT" else None)
        assert status == 200
        assert busy.requests[method] == 1 and dp.groups["web"].counters.retries == 1
    finally:
        dp.close()


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_5xx_is_not_retried_for_non_idempotent_methods(busy: RawServer, ok: RawServer, method: str) -> None:
    dp = plane(busy.address, ok.address)
    before = ok.requests[method]
    try:
        status, _, body = dp.request(method, "/x", body=b"{}")
        assert (status, body) == (503, b"busy\n")  # the target's own answer, passed on
        assert ok.requests[method] == before and dp.groups["web"].counters.retries == 0
        # with an Idempotency-Key the client says a repeat is safe
        dp.groups["web"].balancer._next = 0
        status, _, _ = dp.request(method, "/x", body=b"{}", headers={"Idempotency-Key": "k-1"})
        assert status == 200 and ok.requests[method] == before + 1
    finally:
        dp.close()


def test_connect_failure_is_retried_even_for_post(ok: RawServer) -> None:
    dead = f"127.0.0.1:{free_port()}"
    dp = plane(dead, ok.address)
    try:
        for _ in range(4):
            status, _, body = dp.request("POST", "/x", body=b"payload")
            assert status == 200 and json.loads(body)["body_bytes"] == 7
        assert dp.backend("web-1").errors == 2 and dp.groups["web"].counters.retries == 2
    finally:
        dp.close()


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_reset_after_the_request_was_read_is_retried(ok: RawServer, method: str) -> None:
    """The target reads the whole request, then resets the connection (SO_LINGER 0) before any
    response byte: retried on the other target, for every method (the target did not answer)."""
    rst = RawServer(name="rst")
    rst._handler = rst.reset_after_request
    dp = plane(rst.address, ok.address)
    before = ok.requests[method]
    try:
        status, _, body = dp.request(method, "/x", body=b"payload" if method == "POST" else None)
        assert status == 200 and json.loads(body)["name"] == "ok"
        assert rst.requests[method] == 1  # it did read the request, then reset
        assert ok.requests[method] == before + 1
        assert dp.groups["web"].counters.retries == 1 and dp.backend("web-1").errors == 1
        # the target really resets (a direct client gets ECONNRESET, not an end of file)
        with socket.create_connection((rst.host, rst.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            with pytest.raises(ConnectionResetError):
                s.recv(100)
    finally:
        dp.close()
        rst.close()


def test_connect_timeout_is_retried_then_504(ok: RawServer) -> None:
    s, filler, addr = unaccepting_listener()
    try:
        dp = plane(addr, ok.address)
        try:
            assert dp.request("POST", "/x", body=b"1")[0] == 200  # timed out on web-1, retried on web-2
            dp.serve("web", ["web-1"])
            status, _, _ = dp.request("GET", "/x")
            assert status == 504  # ALB: connect timeout is a gateway timeout
        finally:
            dp.close()
    finally:
        filler.close()
        s.close()


def test_per_try_timeout_retries_get_but_not_post(ok: RawServer) -> None:
    hang = RawServer(name="hang")
    hang._handler = hang.hang
    dp = plane(hang.address, ok.address, retries={"attempts": 2, "per_try_timeout": "300ms"})
    try:
        status, _, body = dp.request("GET", "/x")
        assert status == 200 and json.loads(body)["name"] == "ok"
        dp.groups["web"].balancer._next = 0
        before = ok.requests["POST"]
        status, _, _ = dp.request("POST", "/x", body=b"{}")
        assert status == 504  # a POST that timed out may have been carried out: not repeated
        assert hang.requests["POST"] == 1 and ok.requests["POST"] == before
    finally:
        dp.close()
        hang.close()


def test_no_retry_after_a_byte_reached_the_client(ok: RawServer) -> None:
    cut = RawServer(name="cut")
    cut._handler = cut.truncate
    dp = plane(cut.address, ok.address)
    try:
        c = http.client.HTTPConnection(dp.host, dp.port, timeout=5)
        c.request("GET", "/x")
        r = c.getresponse()
        assert r.status == 200
        with pytest.raises(http.client.IncompleteRead):
            r.read()  # the client learns the response broke; it is not replayed elsewhere
        c.close()
        assert cut.requests["GET"] == 1 and dp.backend("web-2").requests == 0
        assert dp.groups["web"].counters.retries == 0 and dp.groups["web"].counters.failed == 1
    finally:
        dp.close()
        cut.close()


def test_attempts_bound_the_tries() -> None:
    deads = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    dp = DataPlane({
        "listeners": [{"port": 0, "default_target_group": "web"}],
        "target_groups": {"web": {"targets": deads, "retries": {"attempts": 2}}},
    })
    try:
        assert dp.request("GET", "/")[0] == 502
        assert sum(dp.backend(f"web-{i}").errors for i in (1, 2, 3)) == 2
    finally:
        dp.close()


def test_retry_budget_stops_a_retry_storm(busy: RawServer) -> None:
    busy2 = RawServer(name="busy2")
    busy2._handler = busy2.status_500
    dp = plane(busy.address, busy2.address, retries={"attempts": 2, "budget_percent": 10})
    try:
        c = http.client.HTTPConnection(dp.host, dp.port, timeout=5)
        for _ in range(200):
            c.request("GET", "/")
            r = c.getresponse()
            r.read()
            assert r.status == 503
        c.close()
        counters = dp.groups["web"].counters
        # 10% of 200 requests, plus the bucket's initial reserve of 10
        assert counters.retries <= 200 * 0.10 + 10 and counters.retries >= 25
        assert counters.budget_exhausted == 200 - counters.retries
        assert busy.requests["GET"] + busy2.requests["GET"] == 200 + counters.retries
    finally:
        dp.close()
        busy2.close()
