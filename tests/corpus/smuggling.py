"""Request-smuggling and malformed-request cases: (name, raw bytes, expected status).

Every case carries a second request to ``/smuggled`` hidden where a proxy and a
backend that disagree on framing would split it off; none may reach the backend.
"""

from __future__ import annotations

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def _post(headers: bytes, body: bytes) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + body


CASES: list[tuple[str, bytes, int]] = [
    # CL.TE and TE.CL: both framings present
    ("CL.TE", _post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED), 400),
    ("TE.CL", _post(b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)), 400),
    ("CL.CL differing", _post(b"Content-Length: 0\r\nContent-Length: %d\r\n" % len(SMUGGLED), SMUGGLED), 400),
    ("CL.CL equal", _post(b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc" + SMUGGLED), 400),
    ("CL list", _post(b"Content-Length: 0, %d\r\n" % len(SMUGGLED), SMUGGLED), 400),
    ("CL plus sign", _post(b"Content-Length: +0\r\n", SMUGGLED), 400),
    ("CL negative", _post(b"Content-Length: -1\r\n", SMUGGLED), 400),
    ("CL hex", _post(b"Content-Length: 0x10\r\n", SMUGGLED), 400),
    ("CL overflow", _post(b"Content-Length: 18446744073709551617\r\n", SMUGGLED), 400),
    # TE.TE obfuscations: one side sees chunked, the other does not
    ("TE xchunked", _post(b"Transfer-Encoding: xchunked\r\nContent-Length: 4\r\n", b"0\r\n\r\n" + SMUGGLED), 400),
    ("TE gzip, chunked", _post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n" + SMUGGLED), 400),
    ("TE chunked, identity", _post(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n" + SMUGGLED), 400),
    ("TE twice", _post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", b"0\r\n\r\n" + SMUGGLED), 400),
    ("TE space before colon", _post(b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + SMUGGLED), 400),
    ("TE vertical tab", _post(b"Transfer-Encoding: \x0bchunked\r\n", b"0\r\n\r\n" + SMUGGLED), 400),
    ("TE underscore alias", _post(b"Transfer_Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + SMUGGLED), 400),
    ("CL underscore alias", _post(b"Content_Length: %d\r\n" % len(SMUGGLED), SMUGGLED), 400),
    ("TE folded", _post(b"X-Pad: a\r\n Transfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED), 400),
    ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    ("TE unknown coding", _post(b"Transfer-Encoding: cow\r\n", b"0\r\n\r\n" + SMUGGLED), 400),
    # chunk-size tricks
    ("chunk size 0x prefix", _post(b"Transfer-Encoding: chunked\r\n", b"0x0\r\n\r\n" + SMUGGLED), 400),
    ("chunk size negative", _post(b"Transfer-Encoding: chunked\r\n", b"-1\r\n\r\n" + SMUGGLED), 400),
    ("chunk size overflow", _post(b"Transfer-Encoding: chunked\r\n", b"10000000000000000\r\n" + SMUGGLED), 400),
    ("chunk size space", _post(b"Transfer-Encoding: chunked\r\n", b"0 \r\n\r\n" + SMUGGLED), 400),
    ("chunk ext control char", _post(b"Transfer-Encoding: chunked\r\n", b"0;\x01\r\n\r\n" + SMUGGLED), 400),
    ("chunk LF only", _post(b"Transfer-Encoding: chunked\r\n", b"0\n\n" + SMUGGLED), 400),
    ("chunk data too long", _post(b"Transfer-Encoding: chunked\r\n", b"1\r\nab\r\n0\r\n\r\n" + SMUGGLED), 400),
    ("trailer with CL", _post(b"Transfer-Encoding: chunked\r\n", b"0\r\nContent-Length: 40\r\n\r\n" + SMUGGLED), 400),
    # header injection and bad header syntax
    ("CR in value", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\rTransfer-Encoding: chunked\r\n\r\n" + SMUGGLED, 400),
    ("LF in value", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\nContent-Length: 40\r\n\r\n" + SMUGGLED, 400),
    ("NUL in value", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n" + SMUGGLED, 400),
    ("space in name", b"GET / HTTP/1.1\r\nHost: x\r\nX Y: z\r\n\r\n" + SMUGGLED, 400),
    ("control char in name", b"GET / HTTP/1.1\r\nHost: x\r\nX\x01: z\r\n\r\n" + SMUGGLED, 400),
    ("empty header name", b"GET / HTTP/1.1\r\nHost: x\r\n: z\r\n\r\n" + SMUGGLED, 400),
    ("obs fold", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n" + SMUGGLED, 400),
    ("bare LF line endings", b"GET / HTTP/1.1\nHost: x\n\n" + SMUGGLED, 400),
    ("bare CR line ending", b"GET / HTTP/1.1\rHost: x\r\n\r\n" + SMUGGLED, 400),
    # request line
    ("invalid method", b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, 400),
    ("space in target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, 400),
    ("NUL in target", b"GET /a\x00 HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, 400),
    ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: x\r\n\r\n" + SMUGGLED, 400),
    ("HTTP/2.0 on an HTTP/1 line", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n" + SMUGGLED, 400),
    ("HTTP/0.9", b"GET /\r\n\r\n" + SMUGGLED, 400),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SMUGGLED, 400),
    ("bad version token", b"GET / HTXP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, 400),
    ("asterisk target for GET", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, 400),
    ("userinfo in absolute target", b"GET http://a@b/ HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, 400),
    # Host
    ("missing Host", b"GET / HTTP/1.1\r\n\r\n" + SMUGGLED, 400),
    ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + SMUGGLED, 400),
    ("bad Host", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n" + SMUGGLED, 400),
    # limits
    ("request line too long", b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("header too large", b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 70000 + b"\r\n\r\n", 431),
    ("too many headers", b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(150)) + b"\r\n", 431),
]
