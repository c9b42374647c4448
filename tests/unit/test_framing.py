"""Request and response framing verdicts (the part llhttp lets through)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fivenines.core.framing import Limits, check_request, check_response

H = [(b"Host", b"example.com")]


def verdict(method: bytes = b"GET", target: bytes = b"/", version: str = "1.1", headers: list | None = None, **lim: int):  # type: ignore[no-untyped-def,type-arg]
    return check_request(method, target, version, H if headers is None else headers, Limits(**lim))


@pytest.mark.parametrize(
    ("te", "ok"),
    [(b"chunked", True), (b"Chunked", True), (b" chunked ", True), (b"gzip, chunked", False),
     (b"chunked, gzip", False), (b"identity", False), (b"xchunked", False), (b"chunked;q=1", False)],
)
def test_transfer_encoding_must_be_exactly_chunked(te: bytes, ok: bool) -> None:
    v = verdict(b"POST", headers=[*H, (b"Transfer-Encoding", te)])
    assert v.ok is ok
    if ok:
        assert v.chunked and v.content_length is None
    else:
        assert (v.status, v.reason) == (400, "Transfer-Encoding must be exactly chunked")


def test_transfer_encoding_in_http10_is_faulty() -> None:
    v = verdict(b"POST", version="1.0", headers=[(b"Transfer-Encoding", b"chunked")])
    assert (v.status, v.reason) == (400, "Transfer-Encoding in an HTTP/1.0 request")


@pytest.mark.parametrize("version", ["0.9", "2.0", "1.2", "3.0"])
def test_only_http_1_0_and_1_1(version: str) -> None:
    assert verdict(version=version).status == 400


def test_host_rules() -> None:
    assert verdict(headers=[]).reason == "missing Host"
    assert verdict(version="1.0", headers=[]).ok  # HTTP/1.0 may omit Host
    assert verdict(headers=[*H, (b"host", b"other")]).reason == "more than one Host"
    assert verdict(headers=[(b"Host", b"a b")]).reason == "invalid Host"
    assert verdict(headers=[(b"Host", b"[::1]:8080")]).ok
    assert verdict(headers=[(b"Host", b"example.com:80")]).ok


def test_targets() -> None:
    assert verdict(target=b"/a?b=c").target == b"/a?b=c"
    assert verdict(b"OPTIONS", target=b"*").ok
    assert verdict(target=b"*").reason == "asterisk target is for OPTIONS only"
    v = verdict(target=b"http://a.example:81/x?y=1")
    assert (v.target, v.host) == (b"/x?y=1", b"a.example:81")
    assert verdict(target=b"http://a.example").target == b"/"
    assert verdict(target=b"http://user@a.example/").reason == "invalid authority in request target"
    assert verdict(target=b"ftp://a/").reason == "invalid request target"
    assert verdict(b"CONNECT", target=b"a.example:443").ok  # not a framing problem: the proxy answers 501


def test_limits() -> None:
    assert verdict(target=b"/" + b"a" * 9000).status == 414
    many = [*H] + [(b"X-%d" % i, b"v") for i in range(100)]
    assert verdict(headers=many).status == 431
    big = [*H, (b"X-Big", b"v" * 70000)]
    assert verdict(headers=big).status == 431
    assert verdict(b"POST", headers=[*H, (b"Content-Length", b"11")], max_body=10).status == 413
    v = verdict(b"POST", headers=[*H, (b"Content-Length", b"10")], max_body=10)
    assert v.ok and v.content_length == 10


def test_duplicate_framing_headers() -> None:
    assert verdict(b"POST", headers=[*H, (b"Content-Length", b"1"), (b"Content-Length", b"1")]).status == 400
    assert verdict(b"POST", headers=[*H, (b"Content-Length", b"1"), (b"Transfer-Encoding", b"chunked")]).status == 400
    assert verdict(b"POST", headers=[*H, (b"Transfer-Encoding", b"chunked")] * 2).status == 400
    assert verdict(b"POST", headers=[*H, (b"Content-Length", b"+1")]).status == 400


@pytest.mark.parametrize("name", [b"Transfer_Encoding", b"content_length", b"HOST_"[:-1] + b"_"])
def test_underscore_aliases_of_framing_headers(name: bytes) -> None:
    v = verdict(b"POST", headers=[*H, (name, b"chunked")])
    if name.lower() in (b"transfer_encoding", b"content_length"):
        assert v.status == 400 and v.reason.startswith("ambiguous header name")
    else:
        assert v.ok  # HOST_ is just an odd header


def test_response_framing() -> None:
    assert check_response(200, [(b"Content-Length", b"3")]) == (True, "")
    assert check_response(200, [(b"Transfer-Encoding", b"chunked")]) == (True, "")
    assert check_response(200, [(b"Content-Length", b"3"), (b"Content-Length", b"3")]) == (True, "")
    assert check_response(200, [(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"3")])[0] is False
    assert check_response(200, [(b"Transfer-Encoding", b"gzip")])[0] is False
    assert check_response(200, [(b"Bad Name", b"x")])[0] is False


names = st.sampled_from([b"Host", b"host", b"Content-Length", b"Transfer-Encoding", b"X-A", b"Connection"])
values = st.sampled_from([b"example.com", b"5", b"chunked", b"gzip, chunked", b"keep-alive", b"", b"+5", b"a b"])


@given(
    headers=st.lists(st.tuples(names, values), max_size=8),
    version=st.sampled_from(["1.0", "1.1", "0.9", "2.0"]),
    target=st.sampled_from([b"/", b"/x?y", b"*", b"http://h/p", b"h:1"]),
)
def test_an_accepted_request_has_exactly_one_unambiguous_framing(headers: list, version: str, target: bytes) -> None:  # type: ignore[type-arg]
    v = check_request(b"GET", target, version, headers)
    if not v.ok:
        assert v.status in (400, 413, 414, 431) and v.reason
        return
    lnames = [n.lower() for n, _ in headers]
    te = lnames.count(b"transfer-encoding")
    cl = lnames.count(b"content-length")
    assert te + cl <= 1
    assert not (v.chunked and v.content_length is not None)
    assert v.chunked == (te == 1)
    assert version in ("1.0", "1.1")
    if version == "1.1":
        assert lnames.count(b"host") == 1 or target.startswith(b"http://")
    assert v.target.startswith(b"/") or v.target == b"*"
