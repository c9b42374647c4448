"""The express lane: plain requests and responses recognised by one regex match must be
forwarded byte for byte as the full path (httptools, the framing verdict, the head
rebuilt header by header) forwards them, and only heads the full path accepts may take it.

The proxy-level properties drive a real ClientConnection and UpstreamConnection with
fake transports: the same bytes arrive once whole (the express lane may take them) and
once through the parser (a request a byte at a time, so that the express lane never
sees a whole head; a response whole, with the express lane stood aside).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any, TypeVar

import httptools
from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.core.framing import Limits, check_request, express_request, express_response
from fivenines.proxy.backend import Backend, BackendGroup
from fivenines.proxy.client import ClientConnection, http_listener
from fivenines.proxy.listener import ProxySettings
from fivenines.proxy.upstream import UpstreamConnection

METHODS = ["GET", "HEAD", "DELETE", "OPTIONS", "POST", "PUT", "get", "CONNECT"]
TARGETS = ["/", "/a/b?c=1&d=%20", "/x:y@z", "*", "http://h.example/p", "/sp ace", "/hash#frag", "/\x7f",
           "/q?x=<y>", "/~!$&'()*+,;="]
NAMES = ["Host", "host", "HOST", "Accept", "User-Agent", "Cookie", "Content-Length", "Transfer-Encoding",
         "Connection", "Upgrade", "Expect", "TE", "Trailer", "Keep-Alive", "Proxy-Connection", "X-Forwarded-For",
         "X-Forwarded-Proto", "X-Request-Id", "Content_Length", "Transfer_Encoding", "Idempotency-Key", "X-A",
         "Bad Name", "Hostile", "Te"]
VALUES = ["example.com", "a.example:8080", "[::1]:80", "bad host", "*/*", "curl/8", "0", "5", "chunked",
          "keep-alive", "close", "websocket", "100-continue", "1.2.3.4", "v a l", " lead", "trail ", "", "x\ty",
          "caf\xe9"]
SEPARATORS = [": ", ":", ":  ", " : ", ":\t"]


PLAIN_NAMES = ["Accept", "User-Agent", "Cookie", "Idempotency-Key", "X-A", "Hostile", "Te-St"]
PLAIN_VALUES = ["*/*", "curl/8", "a=b; c=d", "v a l", "1.2.3.4", "x"]


@st.composite
def plain_request_heads(draw: Any) -> bytes:
    """Heads the express lane should take, or nearly (one field may be special)."""
    method = draw(st.sampled_from(["GET", "HEAD", "DELETE", "OPTIONS"]))
    target = draw(st.sampled_from(["/", "/a/b?c=1&d=%20", "/x:y@z", "/~!$&'()*+,;="]))
    fields = draw(st.lists(st.tuples(st.sampled_from(PLAIN_NAMES), st.sampled_from(PLAIN_VALUES)), max_size=5))
    fields.insert(draw(st.integers(0, len(fields))), ("Host", draw(st.sampled_from(VALUES[:4]))))
    if draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))),
                      ("Connection", draw(st.sampled_from(["close", "keep-alive", "Keep-Alive", "x-a", "close, x-a"]))))
    if draw(st.booleans()):  # one field that may not be plain (framing, hop-by-hop, a second Host, ...)
        fields.insert(draw(st.integers(0, len(fields))), (draw(st.sampled_from(NAMES)), draw(st.sampled_from(VALUES))))
    return (f"{method} {target} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields) + "\r\n").encode()


@st.composite
def any_request_heads(draw: Any) -> bytes:
    method = draw(st.sampled_from(METHODS))
    target = draw(st.sampled_from(TARGETS))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0"]))
    fields = draw(st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(SEPARATORS),
                                     st.sampled_from(VALUES)), max_size=6))
    if draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), ("Host", ": ", "example.com"))
    head = f"{method} {target} {version}\r\n" + "".join(f"{n}{s}{v}\r\n" for n, s, v in fields) + "\r\n"
    return head.encode("latin-1")


request_heads = st.one_of(plain_request_heads(), any_request_heads())


class Parsed:
    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = 0
        self.keep_alive = False
        self.parser: Any = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()  # as the full path reads it

    def on_message_complete(self) -> None:
        self.complete += 1


@settings(max_examples=400)
@given(request_heads)
def test_express_requests_are_heads_the_full_path_accepts_unchanged(head: bytes) -> None:
    got = express_request(head, Limits())
    if got is None:
        return
    method, target, host, forwarded, keep_alive = got
    p = Parsed()
    parser = p.parser = httptools.HttpRequestParser(p)
    parser.feed_data(head)  # the parser accepts it (raises otherwise) ...
    assert p.complete == 1 and parser.get_method() == method and p.url == target
    verdict = check_request(method, p.url, parser.get_http_version(), p.headers)
    assert verdict.ok, verdict.reason  # ... and so does the framing verdict,
    assert verdict.target == target and verdict.host == host and not verdict.chunked
    assert verdict.content_length is None
    assert keep_alive == p.keep_alive
    # header lines are forwarded as received (each exactly "name: value" as parsed), but Connection
    lines = head.split(b"\r\n")[1:-2]
    assert lines == [n + b": " + v for n, v in p.headers]
    kept = [ln for ln in lines if not ln.lower().startswith(b"connection:")]
    assert forwarded == b"".join(x + b"\r\n" for x in [head.split(b"\r\n")[0], *kept])


def test_express_request_respects_limits() -> None:
    head = b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n"
    assert express_request(head, Limits()) is not None
    assert express_request(head, Limits(max_request_line=100)) is None
    assert express_request(head, Limits(max_headers=2)) is None
    assert express_request(head, Limits(max_header_bytes=60)) is None
    assert express_request(head.replace(b"Host: h\r\n", b"Host: h\r\nHost: h\r\n"), Limits()) is None
    assert express_request(head.replace(b"Host: h\r\n", b""), Limits()) is None


class FakeTransport:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        return ("10.1.2.3", 50000) if key == "peername" else default

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def write_eof(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Rig:
    """One client connection and one pooled upstream connection, no network, no running loop."""

    def __init__(self) -> None:
        group = BackendGroup("web")
        self.backend = group.add(Backend("web-1", "127.0.0.1", 9))
        group.set_serving(group.backends)
        self.listener = http_listener(lambda: group, 8080, ProxySettings())
        self.client, self.ct = ClientConnection(self.listener), FakeTransport()
        self.client.connection_made(self.ct)  # type: ignore[arg-type]
        self.upstream, self.ut = UpstreamConnection(self.backend), FakeTransport()
        self.upstream.connection_made(self.ut)  # type: ignore[arg-type]
        self.backend.put_idle(self.upstream, 0.0)

    def request(self, head: bytes, whole: bool) -> bytes:
        for chunk in [head] if whole else [head[i:i + 1] for i in range(len(head))]:
            if self.ct.closed:
                break
            self.client.data_received(chunk)
        return _rid(b"".join(self.ut.out))

    def respond(self, response: bytes, express: bool) -> bytes:
        """The response in one read; ``express=False``: through the parser even if it is plain."""
        if not express:
            self.upstream._fresh = False  # as if the parser held bytes: the express lane stands aside
        self.upstream.data_received(response)
        return b"".join(self.ct.out)


T = TypeVar("T")


def in_loop(fn: Callable[[], T]) -> T:
    """Run ``fn`` inside a running event loop (error replies schedule their close on it)."""
    loop = asyncio.new_event_loop()

    async def main() -> T:
        return fn()

    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def _rid(data: bytes) -> bytes:
    return re.sub(rb"X-Request-Id: [0-9a-f]+-[0-9a-f]+\r\n", b"X-Request-Id: *\r\n", data)


@settings(max_examples=300)
@given(request_heads)
def test_a_request_is_forwarded_the_same_whole_or_byte_by_byte(head: bytes) -> None:
    whole, split = Rig(), Rig()
    assert in_loop(lambda: whole.request(head, whole=True)) == in_loop(lambda: split.request(head, whole=False))
    assert whole.ct.out == split.ct.out  # the same early answer (400, 501, 503, ...), if any
    assert whole.ct.closed == split.ct.closed


RESPONSE_LINES = ["Server: nginx", "Content-Type: text/plain", "Connection: keep-alive", "Connection: close",
                  "connection:keep-alive", "Connection: keep-alive, x-secret", "X-Secret: 1",
                  "Transfer-Encoding: chunked", "Keep-Alive: timeout=5", "Content-Length: 2", "content-length:  2 ",
                  "Content-Length: 3", "Trailer: X", "Upgrade: h2c", "Bad Line", "Date: Thu, 26 Nov 2026 13:00:00 GMT",
                  "X-Tab:\tv", "Set-Cookie: a=b", "TE: trailers", "Proxy-Authenticate: Basic", "Proxy-X: 1",
                  "Keep-Alive: max=5"]


@st.composite
def plain_responses(draw: Any) -> bytes:
    status = draw(st.sampled_from(["200 OK", "404 Not Found", "302 Found", "200 "]))
    lines = draw(st.lists(st.sampled_from([RESPONSE_LINES[i] for i in (0, 1, 2, 4, 6, 15, 16, 17)]), max_size=4))
    lines.insert(draw(st.integers(0, len(lines))), "Content-Length: 2")
    if draw(st.booleans()):  # one line that may not be plain (hop-by-hop, framing, ...)
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(RESPONSE_LINES)))
    return f"HTTP/1.1 {status}\r\n{''.join(x + chr(13) + chr(10) for x in lines)}\r\nok".encode()


@st.composite
def any_responses(draw: Any) -> bytes:
    status = draw(st.sampled_from(["200 OK", "404 Not Found", "204 No Content", "304 Not Modified", "302 Found",
                                   "503 Busy", "101 Switching", "200 ", "999 X"]))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]))
    lines = draw(st.lists(st.sampled_from(RESPONSE_LINES), max_size=5))
    if draw(st.booleans()):
        lines.append("Content-Length: 2")
    body = draw(st.sampled_from(["ok", "", "ok!", "2\r\nok\r\n0\r\n\r\n"]))
    return f"{version} {status}\r\n{''.join(x + chr(13) + chr(10) for x in lines)}\r\n{body}".encode()


responses = st.one_of(plain_responses(), any_responses())


@settings(max_examples=300)
@given(responses, st.sampled_from([b"", b"Connection: close\r\n", b"Connection: keep-alive\r\n"]))
def test_a_response_is_relayed_the_same_by_the_express_lane_and_the_parser(response: bytes, conn: bytes) -> None:
    """Whatever the client asked of its connection (kept, or closed after this answer)."""
    head = b"GET / HTTP/1.1\r\nHost: example.com\r\n" + conn + b"\r\n"
    whole, split = Rig(), Rig()
    whole.request(head, whole=True)
    split.request(head, whole=True)
    assert in_loop(lambda: whole.respond(response, express=True)) == in_loop(lambda: split.respond(response, False))
    assert whole.ct.closed == split.ct.closed
    assert (whole.upstream in whole.backend.idle) == (split.upstream in split.backend.idle)


def test_express_response_needs_the_whole_plain_message() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"  # the message, its Connection line cut
    assert express_response(ok) == (200, cut, cut.index(b"\r\n\r\n"))
    assert express_response(cut) == (200, cut, cut.index(b"\r\n\r\n"))
    assert express_response(ok[:-1]) is None  # body not all here yet
    assert express_response(ok + b"x") is None  # more than one message
    assert express_response(ok.replace(b"keep-alive", b"close")) is None
    assert express_response(ok.replace(b"200 OK", b"500 Oops")) is None  # retries are the full path's
    assert express_response(ok.replace(b"Connection: keep-alive", b"Content-Length: 2")) is None


def test_the_express_lane_carries_traffic_and_the_pool_reuses_the_connection() -> None:
    rig = Rig()
    for i in range(3):
        rig.ut.out.clear()
        rig.ct.out.clear()
        sent = rig.request(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i, whole=True)
        assert sent == (b"GET /%d HTTP/1.1\r\nHost: h\r\nX-Request-Id: *\r\nX-Forwarded-For: 10.1.2.3\r\n"
                        b"X-Forwarded-Proto: http\r\nX-Forwarded-Port: 8080\r\n\r\n" % i)
        got = rig.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok", express=True)
        assert got == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        assert rig.backend.idle == [rig.upstream]
    assert rig.listener.counters.requests == 3 and rig.listener.counters.responses == 3
    assert rig.backend.responses[2] == 3
