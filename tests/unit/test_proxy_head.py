"""The response-head rewrite of the proxy's hot path, against a line-by-line reference."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fivenines.core.heads import HOP_BY_HOP, strip_hop_by_hop

NAMES = ["Content-Type", "Content-Length", "Connection", "connection", "CONNECTION", "Keep-Alive",
         "Transfer-Encoding", "TE", "Tel", "Trailer", "Upgrade", "Proxy-Authenticate", "X-Secret",
         "x-secret", "Date", "Server", "Set-Cookie", "X-Connection", "Proxy-Connection", "Teapot"]
VALUES = ["keep-alive", "close", "Upgrade", "x-secret", "X-Secret, keep-alive", "1", "text/plain",
          "chunked", "a, b", "", "close, Date"]


def reference(head: bytes) -> bytes:
    lines = head.split(b"\r\n")[:-1]
    status, fields = lines[0], lines[1:]
    named = set()
    for f in fields:
        name, _, value = f.partition(b":")
        if name.strip().lower() == b"connection":
            named |= {t.strip().lower() for t in value.split(b",")}
    drop = set(HOP_BY_HOP) | (named - {b"", b"keep-alive", b"close", b"upgrade"})
    kept = [f for f in fields if f.partition(b":")[0].strip().lower() not in drop]
    return b"".join(x + b"\r\n" for x in [status, *kept])


@given(st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=8))
def test_strip_hop_by_hop_matches_the_reference(fields: list[tuple[str, str]]) -> None:
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(f"{n}: {v}\r\n".encode() for n, v in fields)
    assert strip_hop_by_hop(head, head.lower()) == reference(head)
