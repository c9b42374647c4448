"""Listener rules, weighted forwards, stickiness and hashing through real loopback connections."""

from __future__ import annotations

import http.client
import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.servers import DataPlane, RawServer


@pytest.fixture(scope="module")
def servers() -> Iterator[list[RawServer]]:
    ss = [RawServer(name=n) for n in ("a", "b", "c", "d")]
    yield ss
    for s in ss:
        s.close()


def served_by(body: bytes) -> str:
    return str(json.loads(body)["name"])


@pytest.fixture(scope="module")
def routed(servers: list[RawServer]) -> Iterator[DataPlane]:
    a, b, c, d = servers
    dp = DataPlane({
        "listeners": [{
            "port": 0,
            "default_target_group": "web",
            "rules": [
                {"name": "blocked", "match": {"path": ["/private/*"], "source_ip": ["10.0.0.0/8"]},
                 "fixed_response": {"status": 403, "body": "forbidden\n"}},
                {"match": {"path": ["/private/*"], "source_ip": ["127.0.0.0/8", "::1/128"]},
                 "fixed_response": {"status": 200, "body": "local only\n"}},
                {"match": {"path": ["/admin/*"]}, "fixed_response": {"status": 404, "body": "nothing here\n"}},
                {"match": {"host": ["old.example.com"]},
                 "redirect": {"url": "https://new.example.com/#{path}?#{query}", "status": 301}},
                {"match": {"path": ["/api/*"], "method": ["POST", "PUT"]}, "forward": "writes"},
                {"match": {"path": ["/api/*"]}, "forward": "api"},
                {"match": {"header": {"X-Beta": ["yes"]}}, "forward": "api"},
                {"match": {"query": {"canary": "1"}}, "forward": "writes"},
                {"match": {"path": ["/split/*"]},
                 "forward": {"target_groups": {"web": 9, "api": 1}}},
                {"match": {"path": ["/sticky-split/*"]},
                 "forward": {"target_groups": {"web": 1, "api": 1}, "stickiness": "1h"}},
            ],
        }],
        "target_groups": {
            "web": {"targets": [a.address, b.address]},
            "api": {"targets": [c.address]},
            "writes": {"targets": [d.address]},
        },
    })
    yield dp
    dp.close()


def test_path_method_header_and_query_rules_pick_the_group(routed: DataPlane) -> None:
    assert served_by(routed.request("GET", "/")[2]) in ("a", "b")
    assert served_by(routed.request("GET", "/api/users")[2]) == "c"
    assert served_by(routed.request("POST", "/api/users", body=b"{}")[2]) == "d"
    assert served_by(routed.request("PUT", "/api/x", body=b"")[2]) == "d"
    assert served_by(routed.request("GET", "/other", headers={"X-Beta": "YES"})[2]) == "c"
    assert served_by(routed.request("GET", "/other?canary=1")[2]) == "d"
    assert served_by(routed.request("GET", "/other?canary=2")[2]) in ("a", "b")


def test_fixed_response_and_source_ip(routed: DataPlane) -> None:
    status, headers, body = routed.request("GET", "/admin/panel")
    assert (status, body, headers["content-type"]) == (404, b"nothing here\n", "text/plain")
    # the client is 127.0.0.1: not in 10.0.0.0/8, so the second private rule answers
    status, _, body = routed.request("GET", "/private/x")
    assert (status, body) == (200, b"local only\n")
    status, _, body = routed.request("HEAD", "/private/x")
    assert (status, body) == (200, b"")


def test_fixed_response_keeps_the_connection_alive(routed: DataPlane) -> None:
    before = routed.listener.counters.connections
    c = routed.conn()
    for path in ("/admin/x", "/api/y", "/admin/z"):
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        assert r.status == (200 if path.startswith("/api") else 404)
        assert not r.will_close
    c.close()
    assert routed.listener.counters.connections == before + 1


def test_redirect_rule(routed: DataPlane) -> None:
    status, headers, body = routed.request("GET", "/a/b?x=1", headers={"Host": "old.example.com"})
    assert status == 301 and headers["location"] == "https://new.example.com/a/b?x=1" and body == b""


def test_weighted_forward_is_a_90_10_split(routed: DataPlane) -> None:
    c = routed.conn()
    seen: Counter[str] = Counter()
    for _ in range(50):
        c.request("GET", "/split/x")
        seen[served_by(c.getresponse().read())] += 1
    c.close()
    assert seen["c"] == 5 and seen["a"] + seen["b"] == 45


def test_weighted_forward_with_group_stickiness(routed: DataPlane) -> None:
    _status, headers, body = routed.request("GET", "/sticky-split/1")
    cookie = headers["set-cookie"].split(";")[0]
    assert cookie.startswith("FIVENINES_TG=") and "Max-Age=3600" in headers["set-cookie"]
    group = cookie.split("=")[1]
    for _ in range(6):
        _, _, body = routed.request("GET", "/sticky-split/1", headers={"Cookie": cookie})
        assert (served_by(body) == "c") == (group == "api")


def test_rules_in_pipelined_requests_are_answered_in_order(routed: DataPlane) -> None:
    reqs = (b"GET /admin/x HTTP/1.1\r\nHost: h\r\n\r\n"
            b"GET /api/y HTTP/1.1\r\nHost: h\r\n\r\n"
            b"GET /q HTTP/1.1\r\nHost: old.example.com\r\n\r\n"
            b"GET /api/z HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    out = routed.raw(reqs)
    statuses = [int(x) for x in re.findall(rb"HTTP/1\.1 (\d{3}) ", out)]
    assert statuses == [404, 200, 301, 200]


# --------------------------------------------------------------------------- stickiness and hashing


@pytest.fixture
def sticky(servers: list[RawServer]) -> Iterator[DataPlane]:
    a, b, c, _ = servers
    dp = DataPlane({
        "listeners": [{"port": 0, "default_target_group": "web"}],
        "target_groups": {"web": {"targets": [a.address, b.address, c.address],
                                  "stickiness": {"duration": "10m", "cookie_name": "LB"}}},
    })
    yield dp
    dp.close()


def test_sticky_client_stays_and_is_rebalanced_when_its_target_is_unhealthy(sticky: DataPlane) -> None:
    _, headers, body = sticky.request()
    first = served_by(body)
    cookie = headers["set-cookie"].split(";")[0]
    assert cookie.startswith("LB=") and "Max-Age=600" in headers["set-cookie"]
    c = sticky.conn()
    for _ in range(9):  # over one keep-alive connection and new ones alike
        c.request("GET", "/", headers={"Cookie": f"other=1; {cookie}"})
        r = c.getresponse()
        assert served_by(r.read()) == first
        assert r.getheader("Set-Cookie", "").split(";")[0] == cookie
    c.close()
    # its target turns unhealthy: it leaves the serving set; the client is sent elsewhere, and re-pinned
    tid = {"a": "web-1", "b": "web-2", "c": "web-3"}[first]
    sticky.serve("web", [t for t in ("web-1", "web-2", "web-3") if t != tid])
    _, headers, body = sticky.request(headers={"Cookie": cookie})
    moved = served_by(body)
    assert moved != first
    new_cookie = headers["set-cookie"].split(";")[0]
    assert new_cookie != cookie
    for _ in range(5):
        assert served_by(sticky.request(headers={"Cookie": new_cookie})[2]) == moved


def test_clients_without_cookie_are_balanced(sticky: DataPlane) -> None:
    seen = Counter(served_by(sticky.request()[2]) for _ in range(9))
    assert seen == {"a": 3, "b": 3, "c": 3}


def hashing(servers: list[RawServer], **group: Any) -> DataPlane:
    a, b, c, _ = servers
    return DataPlane({
        "listeners": [{"port": 0, "default_target_group": "web"}],
        "target_groups": {"web": {"targets": [a.address, b.address, c.address], **group}},
    })


def test_hash_on_header_keeps_a_key_on_one_target(servers: list[RawServer]) -> None:
    dp = hashing(servers, algorithm="hash", hash_on={"header": "X-User"})
    try:
        owner = {u: served_by(dp.request(headers={"X-User": u})[2]) for u in map(str, range(30))}
        assert len(set(owner.values())) == 3  # keys spread over every target
        for u, who in owner.items():
            assert served_by(dp.request(headers={"X-User": u})[2]) == who
        # a request without the header falls back to round robin
        assert len({served_by(dp.request()[2]) for _ in range(3)}) == 3
        # one target leaves: only its keys move
        dp.serve("web", ["web-1", "web-2"])
        for u, who in owner.items():
            now = served_by(dp.request(headers={"X-User": u})[2])
            assert now == who or who == "c"
    finally:
        dp.close()


def test_hash_on_cookie_and_uri(servers: list[RawServer]) -> None:
    dp = hashing(servers, algorithm="hash", hash_on={"cookie": "session"})
    try:
        for s in ("s1", "s2", "s3", "s4"):
            got = {served_by(dp.request(headers={"Cookie": f"x=1; session={s}"})[2]) for _ in range(4)}
            assert len(got) == 1
    finally:
        dp.close()
    dp = hashing(servers, algorithm="hash", hash_on={"uri": True})
    try:
        for p in ("/a", "/b?x=1", "/c"):
            assert len({served_by(dp.request("GET", p)[2]) for _ in range(4)}) == 1
    finally:
        dp.close()


def test_ip_hash_keeps_a_client_on_one_target(servers: list[RawServer]) -> None:
    dp = hashing(servers, algorithm="ip_hash")
    try:
        assert len({served_by(dp.request()[2]) for _ in range(6)}) == 1
    finally:
        dp.close()


@pytest.mark.parametrize("algorithm", ["least_outstanding_requests", "random", "weighted_round_robin"])
def test_other_algorithms_serve_through_the_proxy(servers: list[RawServer], algorithm: str) -> None:
    a, b, _c, _ = servers
    dp = DataPlane({
        "listeners": [{"port": 0, "default_target_group": "web"}],
        "target_groups": {"web": {"algorithm": algorithm, "targets": [
            {"address": a.address, "weight": 3}, {"address": b.address, "weight": 1}]}},
    })
    try:
        c_ = http.client.HTTPConnection(dp.host, dp.port, timeout=5)
        seen: Counter[str] = Counter()
        for _ in range(40):
            c_.request("GET", "/")
            seen[served_by(c_.getresponse().read())] += 1
        c_.close()
        if algorithm == "weighted_round_robin":
            assert seen == {"a": 30, "b": 10}
        else:
            assert seen["a"] > 0 and seen["b"] > 0 and sum(seen.values()) == 40
    finally:
        dp.close()


def test_hop_by_hop_response_headers_are_removed(routed: DataPlane) -> None:
    _, headers, _ = routed.request("GET", "/")
    assert "keep-alive" not in headers and "x-secret" not in headers and "connection" not in headers
