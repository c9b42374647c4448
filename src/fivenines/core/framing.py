"""Strict, unambiguous HTTP/1.1 request framing. Pure: bytes in, a verdict out.

The parser (llhttp, through httptools) already rejects most malformed input: both
``Content-Length`` and ``Transfer-Encoding``, duplicate or non-numeric
``Content-Length``, bad chunk sizes and extensions, invalid header names and
values (spaces, control characters, NUL), obsolete line folding, bare CR or LF,
invalid methods and targets. This module closes what it lets through, so that
fivenines and the target can never disagree on where a request ends or what it
asks for (request smuggling):

* ``Transfer-Encoding`` must be exactly ``chunked`` (any case, surrounding
  spaces): no other coding, no list (``gzip, chunked``), and none at all in an
  HTTP/1.0 request (RFC 9112 §6.1: the framing is faulty);
* ``Content_Length`` and ``Transfer_Encoding`` spellings that some
  servers (CGI-style) read as the real header are rejected;
* the version must be HTTP/1.0 or HTTP/1.1 (not 0.9, not 2.0 on an HTTP/1 line);
* an HTTP/1.1 request has exactly one ``Host`` (RFC 9112 §3.2), and its value is
  a valid authority;
* the target is origin-form (``/path?query``), ``*`` for OPTIONS only, or
  absolute-form, which is normalised to origin-form with ``Host`` taken from it
  (RFC 9112 §3.2.2);
* header count and sizes stay within the listener's limits (431), the request
  line within its limit (414), a declared body within its limit (413).

The verdict says what to forward: one framing (``Content-Length`` *or*
``chunked``), and headers in canonical form.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from fivenines.core import fieldsets

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HOST = re.compile(rb"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(:[0-9]{0,5})?$")
# Names some servers read as framing headers (CGI-style: ``_`` for ``-``): ambiguous, rejected.
_ALIASES = frozenset({b"content_length", b"transfer_encoding"})
_ABSOLUTE = re.compile(rb"^[hH][tT][tT][pP][sS]?://([^/?#]*)([^#]*)$")


@dataclass(frozen=True, slots=True)
class Limits:
    """Request limits of a listener (defaults are safe for most services)."""

    max_request_line: int = 8192
    max_header_bytes: int = 65536
    max_headers: int = 100
    max_body: int | None = None  # None: no limit on the body size


class Verdict(NamedTuple):
    """``status`` 0: forward it, with ``target`` and ``host`` (may be rewritten). Otherwise answer ``status``.

    A named tuple, not a dataclass: one is made per request on the hot path, and a
    tuple is the cheapest immutable record to build.
    """

    status: int
    reason: str = ""
    target: bytes = b""
    host: bytes | None = None
    chunked: bool = False
    content_length: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == 0


def reject(status: int, reason: str) -> Verdict:
    return Verdict(status, reason)


def check_request(
    method: bytes,
    target: bytes,
    version: str,
    headers: list[tuple[bytes, bytes]],
    limits: Limits = Limits(),
) -> Verdict:
    """Decide whether a parsed request head may be forwarded.

    >>> check_request(b"GET", b"/", "1.1", [(b"Host", b"example.com")]).ok
    True
    >>> check_request(b"POST", b"/", "1.1", [(b"Host", b"x"), (b"Transfer-Encoding", b"gzip, chunked")]).reason
    'Transfer-Encoding must be exactly chunked'
    >>> check_request(b"GET", b"http://a.example/x?y", "1.1", [(b"Host", b"b")]).host
    b'a.example'
    """
    h = HeadSummary()
    for name, value in headers:
        if not _TOKEN.match(name):
            return reject(400, "invalid header name")
        h.add(name.lower(), name, value)
    return check_head(method, target, version, h, limits)


class HeadSummary:
    """What the framing verdict needs from a request's header fields, gathered in one pass."""

    __slots__ = ("alias", "bytes", "cl", "cl_count", "count", "host", "host_count", "te", "te_count")

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self.host: bytes | None = None
        self.host_count = 0
        self.te = b""
        self.te_count = 0
        self.cl = b""
        self.cl_count = 0
        self.alias: bytes | None = None

    def add(self, lname: bytes, name: bytes, value: bytes) -> None:
        """Count one field (``lname`` is its lower-cased name)."""
        self.count += 1
        self.bytes += len(name) + len(value) + 4
        if lname == b"host":
            self.host = value
            self.host_count += 1
        elif lname == b"transfer-encoding":
            self.te = value
            self.te_count += 1
        elif lname == b"content-length":
            self.cl = value
            self.cl_count += 1
        elif lname in _ALIASES:
            self.alias = name


def check_head(method: bytes, target: bytes, version: str, h: HeadSummary, limits: Limits = Limits()) -> Verdict:
    """The verdict on a request head summarised by ``h`` (see :func:`check_request`)."""
    if version != "1.1" and version != "1.0":
        return reject(400, f"unsupported HTTP version {version}")
    if len(method) + len(target) + 10 > limits.max_request_line:
        return reject(414, "request line too long")
    if h.count > limits.max_headers:
        return reject(431, f"more than {limits.max_headers} header fields")
    if h.bytes > limits.max_header_bytes:
        return reject(431, "request header fields too large")
    if h.alias is not None:
        return reject(400, f"ambiguous header name {h.alias.decode('latin-1')}")
    chunked = False
    length: int | None = None
    if h.te_count:
        if h.te_count > 1:
            return reject(400, "more than one Transfer-Encoding")
        if version == "1.0":
            return reject(400, "Transfer-Encoding in an HTTP/1.0 request")
        if h.te.strip().lower() != b"chunked":
            return reject(400, "Transfer-Encoding must be exactly chunked")
        if h.cl_count:
            return reject(400, "both Content-Length and Transfer-Encoding")
        chunked = True
    elif h.cl_count:
        if h.cl_count > 1:
            return reject(400, "more than one Content-Length")
        if not h.cl.isdigit():
            return reject(400, "invalid Content-Length")
        length = int(h.cl)
        if limits.max_body is not None and length > limits.max_body:
            return reject(413, f"body over {limits.max_body} bytes")
    host = h.host
    if h.host_count > 1:
        return reject(400, "more than one Host")
    if version == "1.1" and host is None:
        return reject(400, "missing Host")
    if host is not None and not _HOST.match(host):
        return reject(400, "invalid Host")
    if target[:1] == b"/" or method == b"CONNECT":  # CONNECT (authority-form) is answered 501 by the proxy
        return Verdict(0, "", target, host, chunked, length)
    if target == b"*":
        if method != b"OPTIONS":
            return reject(400, "asterisk target is for OPTIONS only")
        return Verdict(0, "", target, host, chunked, length)
    m = _ABSOLUTE.match(target)
    if m is None:
        return reject(400, "invalid request target")
    authority, rest = m.group(1), m.group(2) or b"/"
    if b"@" in authority or not _HOST.match(authority) or not authority:
        return reject(400, "invalid authority in request target")
    if not rest.startswith(b"/"):
        rest = b"/" + rest
    return Verdict(0, "", rest, authority, chunked, length)


def check_response(status: int, headers: list[tuple[bytes, bytes]]) -> tuple[bool, str]:
    """Is a response head's framing unambiguous? (False: answer 502, never reuse the connection.)

    >>> check_response(200, [(b"Content-Length", b"3"), (b"Content-Length", b"4")])
    (False, 'conflicting Content-Length')
    """
    te: bytes | None = None
    cls: set[bytes] = set()
    for name, value in headers:
        if not _TOKEN.match(name):
            return False, "invalid header name"
        lname = name.lower()
        if lname == b"transfer-encoding":
            if te is not None:
                return False, "more than one Transfer-Encoding"
            te = value
        elif lname == b"content-length":
            if not value.strip().isdigit():
                return False, "invalid Content-Length"
            cls.add(value.strip())
    if len(cls) > 1:
        return False, "conflicting Content-Length"
    if te is not None:
        if te.strip().lower() != b"chunked":
            return False, "Transfer-Encoding must be exactly chunked"
        if cls:
            return False, "both Content-Length and Transfer-Encoding"
    return True, ""


# -- the express lane ----------------------------------------------------------------------------
# Most requests and responses are plain: a GET with a Host header, a 200 with a Content-Length.
# The proxy recognises them with one C regex match over the bytes received, instead of feeding
# the parser and building the head again header by header. The express grammar is a strict
# subset of what the parser accepts *and* of what :func:`check_head` lets through, chosen so
# that what is forwarded is byte for byte what the full path would forward. Anything outside
# it (odd spacing, a framing or hop-by-hop header, an absolute target, ...) takes the full path,
# which stays the authority on what is refused.
#
# ``express_request_py`` and ``express_response_py`` below are the specification. ``make compile``
# also builds them in C (fivenines/_express.c: one pass over the bytes, no regex engine), which
# returns the same for every input (tests/unit/test_express_native.py) at a fraction of the cost;
# ``express_request`` and ``express_response`` call that build when fivenines.accel loaded it.

# (Possessive quantifiers: no repetition here could give back what it took and still match, as
# each class excludes what follows it; saying so spares the engine its backtracking. A request
# header value is runs of visible characters joined by runs of spaces: no space at either end.)
_EXPRESS_REQUEST = re.compile(
    rb"(GET|HEAD|DELETE|OPTIONS) (/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*+) HTTP/1\.1\r\n"
    rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]++: [!-~]++(?: ++[!-~]++)*+\r\n)++\r\n"
)


def _field_search(start: bytes, names: tuple[str, ...], prefixes: tuple[str, ...]) -> re.Pattern[bytes]:
    """A regex finding, in a lower-cased head matched by the express grammar (each field line
    ``name:`` at once), a line that starts one of the fields ``names`` or a name with one of
    ``prefixes``."""
    alts = [re.escape(n.encode()) + b":" for n in names] + [re.escape(p.encode()) for p in prefixes]
    return re.compile(re.escape(start) + b"(?:" + b"|".join(alts) + b")")


# Request fields the full path does more with than copy (framing, hop-by-hop, the ones it adds):
# core/fieldsets.py, the one table of them.
_EXPRESS_SPECIAL = _field_search(b"\n", fieldsets.REQUEST_FULL_PATH, fieldsets.REQUEST_PREFIXES)
_EXPRESS_RESPONSE = re.compile(
    rb"HTTP/1\.1 ([2-4][0-9][0-9]) [\t !-~]*+\r\n(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]++:[\t !-~]*+\r\n)++\r\n"
)
# Hop-by-hop response fields other than Connection (core/fieldsets.py)
_RESPONSE_SPECIAL = _field_search(b"\r\n", fieldsets.RESPONSE_FULL_PATH, fieldsets.RESPONSE_PREFIXES)


def native(name: str) -> Callable[..., Any] | None:
    """A function of the C express lane, when it is built and current (fivenines.accel decides)."""
    try:
        from fivenines import _express
    except ImportError:
        return None
    return getattr(_express, name)  # type: ignore[no-any-return]


# (Final: compiled, each call reads a C static, not the module's dict)
_NATIVE_REQUEST: Final = native("express_request")
_NATIVE_RESPONSE: Final = native("express_response")


def express_request(data: bytes, limits: Limits) -> tuple[bytes, bytes, bytes, bytes, bool] | None:
    """``(method, target, host, head, keep_alive)`` when ``data`` is exactly one plain request
    head, else None.

    Plain: ``GET``, ``HEAD``, ``DELETE`` or ``OPTIONS`` of an origin-form target over
    HTTP/1.1, header lines written ``Name: value`` (one space, no other whitespace around
    the value, visible ASCII), exactly one valid ``Host``, no body, no framing, forwarding
    or hop-by-hop header but one ``Connection: close`` or ``Connection: keep-alive``, within
    ``limits``. :func:`check_head` accepts every such head unchanged. ``head`` is what is
    forwarded of it: the request line and header lines as received, but the Connection
    line, each ending in CRLF (the blank line not included).

    >>> express_request(b"GET /a?b=1 HTTP/1.1\\r\\nHost: example.com\\r\\nAccept: */*\\r\\n\\r\\n", Limits())[:3]
    (b'GET', b'/a?b=1', b'example.com')
    >>> express_request(b"GET / HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n", Limits())[3:]
    (b'GET / HTTP/1.1\\r\\nHost: a\\r\\n', False)
    >>> express_request(b"GET / HTTP/1.1\\r\\nHost: a\\r\\nConnection: x-a\\r\\nX-A: 1\\r\\n\\r\\n", Limits()) is None
    True
    """
    if _NATIVE_REQUEST is not None:
        return _NATIVE_REQUEST(data, limits.max_header_bytes, limits.max_request_line,  # type: ignore[no-any-return]
                               limits.max_headers)
    return express_request_py(data, limits)


def express_request_py(data: bytes, limits: Limits) -> tuple[bytes, bytes, bytes, bytes, bool] | None:
    """:func:`express_request` in Python: its specification, and what runs without the C build."""
    if len(data) > limits.max_header_bytes:
        return None
    m = _EXPRESS_REQUEST.fullmatch(data)
    if m is None:
        return None
    method, target = m.group(1, 2)
    if len(method) + len(target) + 10 > limits.max_request_line or data.count(b"\r\n") - 2 > limits.max_headers:
        return None
    lower = data.lower()
    if _EXPRESS_SPECIAL.search(lower) is not None:
        return None
    i = lower.find(b"\nhost: ")
    if i < 0 or lower.find(b"\nhost:", i + 6) >= 0:
        return None
    host = data[i + 7:data.find(b"\r", i + 7)]
    if not _HOST.match(host):
        return None
    i = lower.find(b"\nconnection:")
    if i < 0:
        return method, target, host, data[:-2], True
    j = lower.find(b"\r\n", i)
    value = lower[i + 12:j]
    if (value != b" close" and value != b" keep-alive") or lower.find(b"\nconnection:", j) >= 0:
        return None
    return method, target, host, data[:i + 1] + data[j + 2:-2], value == b" keep-alive"


def express_response(data: bytes) -> tuple[int, bytes, int] | None:
    """``(status, message, head_end)`` when ``data`` is exactly one plain, whole response, else None.

    Plain: an HTTP/1.1 status 200-499 other than 204 and 304, header lines in strict
    form, exactly one ``Content-Length`` whose body is all of the rest of ``data``, no
    hop-by-hop field but a ``Connection`` header that says only ``keep-alive``.
    ``message`` is ``data`` without that ``Connection`` line (``data`` itself when it has
    none): what a keep-alive HTTP/1.1 client is sent as it is; ``head_end`` is where its
    blank line starts. (No lower-cased copy: whoever relays a plain response has nothing
    left to look up in its head.)

    >>> express_response(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: keep-alive\\r\\n\\r\\nok")
    (200, b'HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok', 34)
    >>> express_response(b"HTTP/1.1 200 OK\\r\\nContent-Length: 3\\r\\n\\r\\nok") is None
    True
    """
    if _NATIVE_RESPONSE is not None:
        return _NATIVE_RESPONSE(data)  # type: ignore[no-any-return]
    return express_response_py(data)


def express_response_py(data: bytes) -> tuple[int, bytes, int] | None:
    """:func:`express_response` in Python: its specification, and what runs without the C build."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or end > 65536:
        return None
    m = _EXPRESS_RESPONSE.fullmatch(data, 0, end + 4)
    if m is None:
        return None
    status = int(m.group(1))
    if status == 204 or status == 304:
        return None
    lower = data[:end + 2].lower()
    i = lower.find(b"\r\ncontent-length:")
    if i < 0 or lower.find(b"\r\ncontent-length:", i + 17) >= 0:
        return None
    j = lower.find(b"\r\n", i + 17)
    value = lower[i + 17:j].strip(b" \t")
    if not value.isdigit() or len(value) > 15 or int(value) != len(data) - end - 4:
        return None
    if _RESPONSE_SPECIAL.search(lower) is not None:
        return None
    i = lower.find(b"\r\nconnection:")
    if i < 0:
        return status, data, end
    j = lower.find(b"\r\n", i + 13)
    if lower[i + 13:j].strip(b" \t") != b"keep-alive" or lower.find(b"\r\nconnection:", j) >= 0:
        return None
    return status, data[:i] + data[j:], end - (j - i)
