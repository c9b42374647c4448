"""HTTP/1.1 heads as the proxy rewrites them, and the replies it makes itself. Pure: bytes in, bytes out.

* :func:`rewrite_request_head`: the full path's request head, from the parsed fields to the
  bytes forwarded (framing verdict of :mod:`fivenines.core.framing` included). The express
  lane (``framing.express_request`` and its C build) must forward exactly what this forwards
  for every head it takes (tests/unit/test_exchange_heads.py).
* :func:`strip_hop_by_hop` and :func:`chunked_header`: the response head's rewrite.
* :func:`status_reply` and :func:`local_head`: error replies and replies made here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from fivenines.core import fieldsets
from fivenines.core.framing import HeadSummary, Limits, check_head
from fivenines.core.retry import Failure, is_idempotent

HOP_BY_HOP: Final = frozenset(n.encode() for n in fieldsets.HOP_BY_HOP)  # (core/fieldsets.py: the one table)
_XFF: Final = b"x-forwarded-for"
_REQUEST_ID: Final = fieldsets.REQUEST_ID.encode()
# Request headers that need more than copying (one set lookup per header on the hot path).
_SPECIAL: Final = frozenset(n.encode() for n in (*fieldsets.HOP_BY_HOP, *fieldsets.FRAMING, *fieldsets.FRAMING_ALIASES,
                                                 *fieldsets.FORWARDED, fieldsets.REQUEST_ID, *fieldsets.REQUEST_READ))
CONNECTION_TOKENS: Final = frozenset({b"keep-alive", b"close", b"upgrade"})
_IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})

REASONS: Final = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}
STATUS_FOR: Final = {  # the error reply when an attempt's failure is the last word
    Failure.CONNECT: 502,
    Failure.CONNECT_TIMEOUT: 504,
    Failure.RESET: 502,
    Failure.STALE: 502,
    Failure.TIMEOUT: 504,
    Failure.STATUS: 502,
    Failure.PROTOCOL: 502,
}


class RequestHead:
    """What the full path learnt from a request head, and the head it forwards.

    ``status`` 0: forward ``head``; otherwise the request is refused with ``status`` (``reason``
    says why) and nothing of it is forwarded."""

    __slots__ = ("chunked", "cookies", "expect", "head", "host", "idempotent", "reason", "status", "target",
                 "upgrade")

    def __init__(self, status: int, reason: str = "") -> None:
        self.status = status
        self.reason = reason
        self.head = b""
        self.target = b""
        self.host = b""
        self.chunked = False
        self.upgrade = False
        self.expect = False
        self.idempotent = True
        self.cookies: list[bytes] | None = None


def rewrite_request_head(method: bytes, url: bytes, version: str, headers: list[tuple[bytes, bytes]],
                         upgrade: bool, peer_ip: bytes, proto: bytes, port: bytes, limits: Limits,
                         new_id: Callable[[], bytes], raw_size: int = 0) -> RequestHead:
    """The request head to forward, or the refusal, from a parsed head.

    ``upgrade`` is the parser's view (``Connection: upgrade`` with ``Upgrade``); ``new_id`` makes
    an ``X-Request-Id`` for a request without one; ``raw_size`` is the head's size as received
    (the fields' sizes are summed against ``limits.max_header_bytes`` only when it is over).
    Hop-by-hop fields (and those ``Connection`` names) are dropped, framing is redone (one
    ``Content-Length`` or ``Transfer-Encoding: chunked``), an absolute-form target becomes
    origin-form with ``Host`` from its authority, and ``X-Forwarded-For`` (appended to the
    client's), ``-Proto``, ``-Port`` and ``X-Request-Id`` (kept if sent) are added.

    >>> h = rewrite_request_head(b"GET", b"/a", "1.1", [(b"Host", b"x"), (b"Connection", b"close")], False,
    ...                          b"10.0.0.1", b"http", b"80", Limits(), lambda: b"id-1")
    >>> h.head.decode().split("\\r\\n")
    ['GET /a HTTP/1.1', 'Host: x', 'X-Request-Id: id-1', 'X-Forwarded-For: 10.0.0.1', 'X-Forwarded-Proto: http', 'X-Forwarded-Port: 80', '', '']
    >>> rewrite_request_head(b"GET", b"/", "1.1", [], False, b"", b"http", b"80", Limits(), lambda: b"").reason
    'missing Host'
    >>> h = rewrite_request_head(b"GET", b"/", "1.0", [], False, b"10.0.0.1", b"https", b"443", Limits(), lambda: b"i")
    >>> h.head.decode().split("\\r\\n")[:2]
    ['GET / HTTP/1.0', 'Connection: keep-alive']
    """
    summary = HeadSummary()  # for the framing verdict, filled in the one pass below
    if raw_size > limits.max_header_bytes:
        summary.bytes = sum(len(n) + len(v) + 4 for n, v in headers)
    summary.count = len(headers)
    chunked = False
    idem_key = False
    expect = False
    xff = b""
    rid = b""
    host = b""
    conn_value = b""
    upgrade_value = b""
    cookies: list[bytes] | None = None
    host_line = 0
    lines = [method + b" " + url + b" HTTP/1.1\r\n"]
    append = lines.append
    special = _SPECIAL
    for name, value in headers:
        lname = name.lower()
        if lname not in special:
            append(name + b": " + value + b"\r\n")
        elif lname == b"host":
            host = value
            summary.host = value
            summary.host_count += 1
            host_line = len(lines)
            append(name + b": " + value + b"\r\n")
        elif lname == b"content-length":
            summary.cl = value
            summary.cl_count += 1
            append(b"Content-Length: " + value + b"\r\n")
        elif lname == b"transfer-encoding":
            chunked = True
            summary.te = value
            summary.te_count += 1
        elif lname == _XFF:
            xff += value + b", "
        elif lname == _REQUEST_ID:
            rid = value
            append(name + b": " + value + b"\r\n")
        elif lname == b"cookie":
            if cookies is None:
                cookies = []
            cookies.append(value)
            append(name + b": " + value + b"\r\n")
        elif lname == b"idempotency-key":
            idem_key = True
            append(name + b": " + value + b"\r\n")
        elif lname == b"expect":
            expect = True
            append(name + b": " + value + b"\r\n")
        elif lname == b"connection":
            conn_value = conn_value + b"," + value if conn_value else value
        elif lname == b"upgrade":
            upgrade_value = value
        elif lname == b"content_length" or lname == b"transfer_encoding":
            summary.alias = name
        # other hop-by-hop headers and the client's own X-Forwarded-Proto/-Port: dropped
    verdict = check_head(method, url, version, summary, limits)
    if not verdict.ok:
        return RequestHead(verdict.status, verdict.reason)
    out = RequestHead(0)
    if verdict.target is not url:  # absolute-form: forwarded in origin-form, Host from its authority
        url = verdict.target
        host = verdict.host or b""
        lines[0] = method + b" " + url + b" HTTP/1.1\r\n"
        if host_line:
            lines[host_line] = b"Host: " + host + b"\r\n"
        else:
            append(b"Host: " + host + b"\r\n")
    if not host_line and not host:
        # an HTTP/1.0 request without Host: forwarded as HTTP/1.0 (as HTTP/1.1 it would need a Host the
        # client did not name, and a target answers 400), asking the target to keep the connection
        lines[0] = method + b" " + url + b" HTTP/1.0\r\n"
        if not upgrade:
            append(b"Connection: keep-alive\r\n")
    if conn_value and conn_value.lower() not in CONNECTION_TOKENS:
        named = {t.strip().lower() for t in conn_value.split(b",")} - CONNECTION_TOKENS
        if named:  # headers named in Connection are hop-by-hop too (RFC 9110 7.6.1)
            lines = [lines[0]] + [ln for ln in lines[1:] if ln.split(b":", 1)[0].lower() not in named]
            append = lines.append
    upgrade = upgrade and method != b"CONNECT"
    if upgrade:
        append(b"Connection: Upgrade\r\nUpgrade: " + upgrade_value + b"\r\n")
    if chunked:
        append(b"Transfer-Encoding: chunked\r\n")  # the verdict allows exactly chunked only
    if not rid:
        append(b"X-Request-Id: " + new_id() + b"\r\n")
    append(b"X-Forwarded-For: " + xff + peer_ip + b"\r\n")
    append(b"X-Forwarded-Proto: " + proto + b"\r\n")
    append(b"X-Forwarded-Port: " + port + b"\r\n\r\n")
    out.head = b"".join(lines)
    out.target = url
    out.host = host
    out.chunked = chunked
    out.upgrade = upgrade
    out.expect = expect
    out.cookies = cookies
    if idem_key or method not in _IDEMPOTENT:
        out.idempotent = is_idempotent(method, idem_key)
    return out


# -- the response head -----------------------------------------------------------------------------

_HOP_LINE: Final = re.compile(
    rb"\r\n(?:" + b"|".join(re.escape(n.encode()) for n in fieldsets.HOP_BY_HOP) + rb")[ \t]*:[^\r\n]*",
    re.IGNORECASE,
)
# a hop-by-hop line other than Connection (the prefixes stand for the proxy-* ones; a wider match only
# sends the head to _HOP_LINE)
_RARE_HOP: Final = re.compile(
    rb"\r\n(?:(?:" + b"|".join(re.escape(n.encode()) for n in fieldsets.RESPONSE_FULL_PATH) + rb")[ \t]*:|"
    + b"|".join(re.escape(p.encode()) for p in fieldsets.RESPONSE_PREFIXES) + b")"
)
_CONNECTION_VALUE: Final = re.compile(rb"\r\nconnection[ \t]*:[ \t]*([^\r\n]*)")
TE_VALUE: Final = re.compile(rb"\r\ntransfer-encoding[ \t]*:[ \t]*([^\r\n]*?)[ \t]*(?=\r\n)")
UPGRADE_VALUE: Final = re.compile(rb"\r\nupgrade[ \t]*:[ \t]*([^\r\n]*?)[ \t]*(?=\r\n)")


def strip_hop_by_hop(head: bytes, lower: bytes) -> bytes:
    """``head`` (a status line and header lines, each ending in CRLF) without hop-by-hop lines.

    Removes the RFC 9110 hop-by-hop fields and every field a ``Connection`` header names.
    ``lower`` is ``head.lower()`` (computed once by the caller). The common case, a lone
    ``Connection: keep-alive`` line, costs a few ``find`` calls and one regex search.

    >>> strip_hop_by_hop(b"HTTP/1.1 200 OK\\r\\nA: 1\\r\\nConnection: keep-alive\\r\\nB: 2\\r\\n",
    ...                  b"http/1.1 200 ok\\r\\na: 1\\r\\nconnection: keep-alive\\r\\nb: 2\\r\\n")
    b'HTTP/1.1 200 OK\\r\\nA: 1\\r\\nB: 2\\r\\n'
    """
    i = lower.find(b"\r\nconnection:")
    if i >= 0:
        j = lower.find(b"\r\n", i + 2)
        if (lower[i + 13:j].strip() in CONNECTION_TOKENS and lower.find(b"\r\nconnection:", j) < 0
                and _RARE_HOP.search(lower) is None):
            return head[:i] + head[j:]  # the usual case: one plain Connection line, nothing else
        named: set[bytes] = set()
        for v in _CONNECTION_VALUE.findall(lower):
            if v not in CONNECTION_TOKENS:
                named.update(t.strip() for t in v.split(b","))
        named -= CONNECTION_TOKENS
        named.discard(b"")
        if named:
            head = _header_lines(named).sub(b"", head)
        return _HOP_LINE.sub(b"", head)
    if _RARE_HOP.search(lower) is None:
        return head
    return _HOP_LINE.sub(b"", head)


def chunked_header(head: bytes, lower: bytes) -> bytes:
    """The Transfer-Encoding line for a body we chunk: the target's other codings kept.

    >>> chunked_header(b"HTTP/1.1 200 OK\\r\\n", b"http/1.1 200 ok\\r\\n")
    b'Transfer-Encoding: chunked\\r\\n'
    >>> h = b"HTTP/1.1 200 OK\\r\\nTransfer-Encoding: gzip, chunked\\r\\n"
    >>> chunked_header(h, h.lower())
    b'Transfer-Encoding: gzip, chunked\\r\\n'
    """
    if lower.find(b"\r\ntransfer-encoding") < 0:  # (find: a bytes `in` formats a TypeError first)
        return b"Transfer-Encoding: chunked\r\n"
    codings = [c.strip() for m in TE_VALUE.finditer(lower) for c in head[m.start(1):m.end(1)].split(b",")]
    kept = [c for c in codings if c and c.lower() != b"chunked"]
    return b"Transfer-Encoding: " + b", ".join([*kept, b"chunked"]) + b"\r\n"


def _header_lines(names: set[bytes]) -> re.Pattern[bytes]:
    """A regex matching the header lines named (for headers a Connection header names)."""
    alts = b"|".join(re.escape(n) for n in sorted(names))
    return re.compile(rb"\r\n(?:" + alts + rb")[ \t]*:[^\r\n]*", re.IGNORECASE)


# -- replies made here -----------------------------------------------------------------------------


def status_reply(status: int, close: bool = True, extra: bytes = b"") -> bytes:
    """A whole error reply.

    >>> status_reply(502).split(b"\\r\\n")[0]
    b'HTTP/1.1 502 Bad Gateway'
    """
    reason = REASONS.get(status, b"Error")
    body = reason + b"\n"
    return b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s%s\r\n%s" % (
        status,
        reason,
        len(body),
        extra,
        b"Connection: close\r\n" if close else b"",
        body,
    )


def local_head(status: int) -> bytes:
    """The head (without its blank line) of an error reply made here; its body is the reason and a newline.

    >>> local_head(503).split(b"\\r\\n")[-2]
    b'Retry-After: 1'
    """
    reason = REASONS.get(status, b"Error")
    return b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s" % (
        status, reason, len(reason) + 1, b"Retry-After: 1\r\n" if status in (429, 503) else b"")


def with_identity(headers: list[tuple[bytes, bytes]], prefix: bytes,
                  identity: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A request's headers as an https listener with mutual TLS forwards them: without any whose
    name starts with ``prefix`` (lower case; a client cannot forge the identity headers), then
    ``identity``, the headers carrying the client's certificate (:mod:`fivenines.core.tls`).

    >>> with_identity([(b"Host", b"x"), (b"X-Client-Subject", b"CN=forged")], b"x-client",
    ...               [(b"X-Client-Subject", b"CN=alice")])
    [(b'Host', b'x'), (b'X-Client-Subject', b'CN=alice')]
    """
    return [h for h in headers if not h[0].lower().startswith(prefix)] + identity
