"""The express lane in C (fivenines/_express.c) returns what its Python specification
(``express_request_py`` / ``express_response_py`` in fivenines.core.framing) returns, for every input.

Inputs: the heads and responses of the express-lane properties (plain ones and near misses), the
same with bytes replaced, inserted or removed at random places (each class boundary the grammar
draws: spaces, tabs, CR, LF, colons, brackets, high bytes, ...), small limits, and raw bytes.

Runs where the C build is loaded (the compiled run of ``make test``; under CI it must be).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.core.framing import (
    Limits,
    express_request,
    express_request_py,
    express_response,
    express_response_py,
)
from tests.helpers import native_module
from tests.unit.test_proxy_express import request_heads, responses

_express, pytestmark = native_module("_express", "the C express lane")

# Bytes at the edges of the grammar's classes.
EDGES = b" \t\r\n:;,/?#[]@%\"'()<>\\{}=-_.~!$&*+^`|\x00\x1f\x7f\x80\xff0123456789aAzZhHtTpP"
edge_bytes = st.binary(min_size=1, max_size=3) | st.lists(st.sampled_from(EDGES), min_size=1, max_size=3).map(bytes)


@st.composite
def mutated(draw: Any, base: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        if op == "insert":
            data[i:i] = draw(edge_bytes)
        elif i < len(data):
            data[i:i + 1] = draw(edge_bytes) if op == "replace" else b""
    return bytes(data)


limits = st.builds(Limits, max_request_line=st.sampled_from([8192, 30, 18]),
                   max_header_bytes=st.sampled_from([65536, 80, 40]), max_headers=st.sampled_from([100, 2, 1, 0]))


def both_requests(data: bytes, lim: Limits) -> None:
    c = _express.express_request(data, lim.max_header_bytes, lim.max_request_line, lim.max_headers)
    assert c == express_request_py(data, lim), data
    assert express_request(data, lim) == c  # and the proxy's entry point calls the C one
    # with the forwarding headers: the same, its head followed by them (the id: the C counter's next)
    f = _express.express_request(data, lim.max_header_bytes, lim.max_request_line, lim.max_headers,
                                 b"5eed-", b"10.9.8.7", b"\r\nX-Forwarded-Proto: http\r\n\r\n")
    if c is None:
        assert f is None, data
        return
    assert f[:3] + f[4:] == c[:3] + c[4:], data
    head, rid = f[3][:len(c[3])], f[3][len(c[3]):]
    assert head == c[3], data
    m = re.fullmatch(rb"X-Request-Id: 5eed-([0-9a-f]+)\r\nX-Forwarded-For: 10\.9\.8\.7\r\nX-Forwarded-Proto: http\r\n\r\n",
                     rid)
    assert m is not None and not m.group(1).startswith(b"0"), rid
    assert _express.request_id(b"") == hex(int(m.group(1), 16) + 1)[2:].encode()  # one counter: the next


def both_responses(data: bytes) -> None:
    c = _express.express_response(data)
    assert c == express_response_py(data), data
    assert express_response(data) == c


@settings(max_examples=1500)
@given(mutated(request_heads), limits)
def test_requests_as_the_specification(data: bytes, lim: Limits) -> None:
    both_requests(data, lim)


@settings(max_examples=1500)
@given(mutated(responses))
def test_responses_as_the_specification(data: bytes) -> None:
    both_responses(data)


@settings(max_examples=300)
@given(st.binary(max_size=120), limits)
def test_raw_bytes_as_the_specification(data: bytes, lim: Limits) -> None:
    both_requests(data, lim)
    both_responses(data)


@pytest.mark.parametrize("data", [
    b"", b"GET", b"GET ", b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nHost: a\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"GET / HTTP/1.1\r\nHost: a\r\n\r\nX", b"GET / HTTP/1.1\r\nHost: a \r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a  b\r\n\r\n", b"GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", b"GET / HTTP/1.1\r\nHost: []\r\n\r\n", b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a:123456\r\n\r\n", b"GET / HTTP/1.1\r\nHost: a:12345\r\n\r\n", b"GET / HTTP/1.1\r\nHost: :\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a:b\r\n\r\n", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: CLOSE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nconnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nProxy-: 1\r\n\r\n", b"GET / HTTP/1.1\r\nHost: a\r\nProxy: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded: 1\r\n\r\n", b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nTE: x\r\n\r\n", b"GET / HTTP/1.1\r\nHost: a\r\nTEa: x\r\n\r\n",
    b"OPTIONS /x HTTP/1.1\r\nhost: a\r\n\r\n", b"DELETE /x HTTP/1.1\r\nHOST: a\r\n\r\n", b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n",
])
def test_request_edges(data: bytes) -> None:
    for lim in (Limits(), Limits(max_headers=1), Limits(max_header_bytes=len(data)), Limits(max_header_bytes=len(data) - 1),
                Limits(max_request_line=25)):
        both_requests(data, lim)


@pytest.mark.parametrize("data", [
    b"", b"HTTP/1.1 200 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nx", b"HTTP/1.1 200 \r\nContent-Length:2\r\n\r\nok",
    b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", b"HTTP/1.1 204 No\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 304 No\r\nContent-Length: 0\r\n\r\n", b"HTTP/1.1 499 x\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 500 x\r\nContent-Length: 0\r\n\r\n", b"HTTP/1.1 199 x\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 000000000000002\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0000000000000002\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: \t2\t\r\nConnection:\tKeep-Alive \r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nConnection: keep-alive\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nProxy-A: 1\r\n\r\nok", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nProxy: 1\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\n\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nX: " + b"a" * 65536 + b"\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: " + b"a" * 65490 + b"\r\nContent-Length: 0\r\n\r\n",
])
def test_response_edges(data: bytes) -> None:
    both_responses(data)


def test_the_blank_line_at_the_64_kib_bound() -> None:
    """``end`` may be 65536 but not 65537: each side of the bound, and a body that holds the blank line."""
    for pad in range(65480, 65500):
        data = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: " + b"a" * pad + b"\r\n\r\n"
        both_responses(data)
        both_responses(data[:-4] + b"\r\n\r\nab")


def test_wrong_arguments_are_type_errors() -> None:
    with pytest.raises(TypeError):
        _express.express_request("GET / HTTP/1.1\r\n\r\n", 1, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _express.express_request(b"", 1, 1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _express.express_response(bytearray(b"HTTP/1.1 200 OK\r\n\r\n"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _express.express_request(b"", "1", 1, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _express.express_request(b"", 1, 1, 1, b"p", "10.0.0.1", b"")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _express.express_request(b"", 1, 1, 1, b"p")  # type: ignore[call-arg]


def test_request_ids_count_up_in_hex_after_the_prefix() -> None:
    """The C counter gives what the Python one gives: prefix, then 1, 2, ... in lower-case hex,
    each number once (also across the 4-bit digit boundaries)."""
    first = _express.request_id(b"p-")
    assert first.startswith(b"p-")
    n = int(first[2:], 16)
    got = [_express.request_id(b"ab12cd34-") for _ in range(300)]
    assert got == [b"ab12cd34-" + hex(i)[2:].encode() for i in range(n + 1, n + 301)]
    assert _express.request_id(b"") == hex(n + 301)[2:].encode()
    with pytest.raises(TypeError):
        _express.request_id("p-")  # type: ignore[arg-type]
