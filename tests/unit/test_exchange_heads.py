"""The request head rewrite (core/heads.py): the express lane forwards exactly what
rewrite_request_head() forwards, for every head it takes (the Python specification and, when
built, the C lane); and the rewrite itself, case by case."""

from __future__ import annotations

import httptools
import pytest
from hypothesis import given, settings

from fivenines.core import framing
from fivenines.core.framing import Limits, express_request, express_request_py
from fivenines.core.heads import RequestHead, rewrite_request_head
from tests.unit.test_proxy_express import Parsed, request_heads

PEER, PROTO, PORT = b"10.1.2.3", b"http", b"8080"
RID = b"0badc0de-1"


def full_path(head: bytes, limits: Limits | None = None) -> RequestHead:
    """What the full path makes of ``head``: httptools parses it, rewrite_request_head rewrites it."""
    p = Parsed()
    parser = p.parser = httptools.HttpRequestParser(p)
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass  # (the parser stops after an upgrade request: what follows would be tunnel bytes)
    return rewrite_request_head(parser.get_method(), p.url, parser.get_http_version(), p.headers,
                                parser.should_upgrade(), PEER, PROTO, PORT, limits or Limits(), lambda: RID, len(head))


def express_forwarded(got: tuple[bytes, bytes, bytes, bytes, bool]) -> bytes:
    """The head the express lane forwards (as proxy/client.py assembles it from what it recognised)."""
    return b"".join((got[3], b"X-Request-Id: ", RID, b"\r\nX-Forwarded-For: ", PEER,
                     b"\r\nX-Forwarded-Proto: %s\r\nX-Forwarded-Port: %s\r\n\r\n" % (PROTO, PORT)))


LANES = [pytest.param(express_request_py, id="python")]
if framing._NATIVE_REQUEST is not None:
    LANES.append(pytest.param(express_request, id="C"))


@pytest.mark.parametrize("lane", LANES)
@settings(max_examples=400)
@given(head=request_heads)
def test_the_express_lane_forwards_what_the_full_path_rewrite_forwards(lane, head: bytes) -> None:  # type: ignore[no-untyped-def]
    got = lane(head, Limits())
    if got is None:
        return  # the full path alone decides
    req = full_path(head)
    assert req.status == 0, req.reason
    assert express_forwarded(got) == req.head
    method, target, host, _, _ = got
    assert (target, host, req.chunked, req.upgrade, req.expect) == (req.target, req.host, False, False, False)
    assert req.idempotent == (method != b"POST")


def test_hop_by_hop_fields_and_those_connection_names_are_dropped() -> None:
    req = full_path(b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close, x-secret\r\nX-Secret: 1\r\n"
                    b"Keep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: b\r\nAccept: */*\r\n\r\n")
    assert req.head == (b"GET /x HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nX-Request-Id: " + RID +
                        b"\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: 8080\r\n\r\n")


def test_forwarding_fields_are_appended_or_replaced_and_a_request_id_kept() -> None:
    req = full_path(b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Proto: https\r\n"
                    b"X-Forwarded-Port: 1\r\nX-Request-Id: abc\r\n\r\n")
    assert req.head == (b"GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: abc\r\nX-Forwarded-For: 1.1.1.1, 10.1.2.3\r\n"
                        b"X-Forwarded-Proto: http\r\nX-Forwarded-Port: 8080\r\n\r\n")


def test_an_absolute_target_is_forwarded_in_origin_form_with_its_host() -> None:
    req = full_path(b"GET http://a.example:81/p?q HTTP/1.1\r\nHost: other\r\n\r\n")
    assert req.head.startswith(b"GET /p?q HTTP/1.1\r\nHost: a.example:81\r\n")
    assert (req.target, req.host) == (b"/p?q", b"a.example:81")


def test_framing_is_redone_one_way() -> None:
    chunked = full_path(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert chunked.chunked and b"Transfer-Encoding: chunked\r\n" in chunked.head and not chunked.idempotent
    length = full_path(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
    assert b"Content-Length: 3\r\n" in length.head and length.idempotent


def test_an_upgrade_is_forwarded_with_its_upgrade_field() -> None:
    req = full_path(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    assert req.upgrade and b"Connection: Upgrade\r\nUpgrade: websocket\r\n" in req.head


@pytest.mark.parametrize("head,status,reason", [
    (b"GET / HTTP/1.1\r\n\r\n", 400, "missing Host"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "more than one Host"),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent_Length: 3\r\n\r\n", 400, "ambiguous header name Content_Length"),
    (b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414, "request line too long"),
])
def test_a_refused_head_says_why_and_forwards_nothing(head: bytes, status: int, reason: str) -> None:
    req = full_path(head, Limits(max_request_line=64))
    assert (req.status, req.reason, req.head) == (status, reason, b"")
