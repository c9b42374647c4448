"""The header fields the HTTP proxy treats specially: written once, here. Pure: names in, sets out.

Which fields are hop-by-hop, which frame a message, which the proxy adds, and from these which
fields send a request or a response off the express lane to the full path. Everything else reads
its sets from this table:

* :mod:`fivenines.core.heads` (the full path): ``HOP_BY_HOP``, the request fields it handles
  one by one, the regexes that cut hop-by-hop lines from a response head;
* :mod:`fivenines.core.framing` (``express_request_py`` / ``express_response_py``, the express
  lane's specification): the regexes that find a field the express lane leaves to the full path;
* ``_express.c`` (the express lane in C): its field classifiers are generated from this table by
  :func:`c_header` when the package is built (``setup.py`` writes ``_express_tables.h``); this
  file is among those whose digests the build's manifest records (fivenines.accel), so a build
  older than the table is never loaded.

``tests/unit/test_fieldsets.py`` checks both express lanes against the table exhaustively: every
name the table holds, in every mix of upper and lower case, every prefix of it, every name one
token character longer, ``-`` and ``_`` swapped.

This module imports nothing (``setup.py`` loads it by path, without fivenines' dependencies).
"""

from __future__ import annotations

from typing import Final

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded (both directions).
HOP_BY_HOP: Final = (
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
)
FRAMING: Final = ("content-length", "transfer-encoding")
# CGI-style spellings some servers read as the framing fields: ambiguous, refused in a request.
FRAMING_ALIASES: Final = ("content_length", "transfer_encoding")
# Fields the proxy writes into a forwarded request itself (the client's own are replaced or extended).
FORWARDED: Final = ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-port")
REQUEST_ID: Final = "x-request-id"
# Request fields the full path reads beyond copying them (routing, retries, 100-continue).
REQUEST_READ: Final = ("host", "cookie", "idempotency-key", "expect")

# -- the express lane ------------------------------------------------------------------------------
# A field whose lower-cased name starts with one of these prefixes, or is one of these names,
# sends the message to the full path. The prefixes are wider than the fields they stand for
# (every proxy-* and x-forwarded-* field): a field the full path copies unchanged costs only the
# express lane there, never a wrong byte.
REQUEST_PREFIXES: Final = ("proxy-", "x-forwarded-")
RESPONSE_PREFIXES: Final = ("proxy-",)
# The fields each lane reads itself (they are neither plain nor sent to the full path): a request's
# Host and Connection (close / keep-alive, cut); a response's Content-Length and Connection.
REQUEST_TRACKED: Final = ("host", "connection")
RESPONSE_TRACKED: Final = ("content-length", "connection")


def _covered(name: str, prefixes: tuple[str, ...]) -> bool:
    return name.startswith(prefixes)


def _full_path(fields: tuple[str, ...], tracked: tuple[str, ...], prefixes: tuple[str, ...]) -> tuple[str, ...]:
    """``fields`` less those the lane tracks itself and those its prefixes already cover, sorted."""
    return tuple(sorted({f for f in fields if f not in tracked and not _covered(f, prefixes)}))


# A request field of these: the full path (framing, hop-by-hop, added by the proxy, 100-continue).
# Cookie and Idempotency-Key stay on the express lane: it is taken only where no group reads
# cookies, and only by methods that are idempotent anyway.
REQUEST_FULL_PATH: Final = _full_path((*HOP_BY_HOP, *FRAMING, *FRAMING_ALIASES, *FORWARDED, REQUEST_ID, "expect"),
                                      REQUEST_TRACKED, REQUEST_PREFIXES)
# A response field of these: the full path (hop-by-hop other than Connection, Transfer-Encoding).
RESPONSE_FULL_PATH: Final = _full_path((*HOP_BY_HOP, *FRAMING), RESPONSE_TRACKED, RESPONSE_PREFIXES)

PLAIN: Final = 0  # copied as received
FULL: Final = 1  # the message takes the full path


def classify(name: str, full: tuple[str, ...], prefixes: tuple[str, ...], tracked: tuple[str, ...]) -> int:
    """What a lane does with a field ``name`` (any case): ``PLAIN``, ``FULL``, or 2 + the index of
    the tracked field it is.

    >>> classify("Proxy-Anything", REQUEST_FULL_PATH, REQUEST_PREFIXES, REQUEST_TRACKED)
    1
    >>> [classify(n, RESPONSE_FULL_PATH, RESPONSE_PREFIXES, RESPONSE_TRACKED) for n in ("TE", "Content-Length", "Tea")]
    [1, 2, 0]
    """
    low = name.lower()
    if low in full or low.startswith(prefixes):
        return FULL
    if low in tracked:
        return 2 + tracked.index(low)
    return PLAIN


def request_field(name: str) -> int:
    """:func:`classify` for a request field on the express lane (2: Host, 3: Connection)."""
    return classify(name, REQUEST_FULL_PATH, REQUEST_PREFIXES, REQUEST_TRACKED)


def response_field(name: str) -> int:
    """:func:`classify` for a response field on the express lane (2: Content-Length, 3: Connection)."""
    return classify(name, RESPONSE_FULL_PATH, RESPONSE_PREFIXES, RESPONSE_TRACKED)


# -- the C express lane's classifiers, generated ----------------------------------------------------


def _c_function(fn: str, full: tuple[str, ...], prefixes: tuple[str, ...], tracked: tuple[str, ...]) -> list[str]:
    """A C function ``fn(p, n)`` that returns :func:`classify` of the field name ``p[0:n]``:
    one ``switch`` on the length, then case-blind compares (``eq_lower``) with each name of that
    length; the prefixes after."""
    by_len: dict[int, list[tuple[str, int]]] = {}
    for name in full:
        by_len.setdefault(len(name), []).append((name, FULL))
    for i, name in enumerate(tracked):
        by_len.setdefault(len(name), []).append((name, 2 + i))
    out = [f"static inline int\n{fn}(const unsigned char *p, Py_ssize_t n)\n{{", "    switch (n) {"]
    for length in sorted(by_len):
        out.append(f"    case {length}:")
        for name, code in sorted(by_len[length]):
            out.append(f'        if (eq_lower(p, "{name}", {length})) return {code};')
        out.append("        break;")
    out += ["    default:", "        break;", "    }"]
    for prefix in prefixes:
        out.append(f'    if (n >= {len(prefix)} && eq_lower(p, "{prefix}", {len(prefix)})) return {FULL};')
    out += [f"    return {PLAIN};", "}"]
    return out


def c_header() -> str:
    """``_express_tables.h``, which ``_express.c`` includes: the two field classifiers in C.

    >>> "case 4:" in c_header() and '"host"' in c_header()
    True
    """
    for name in (*REQUEST_FULL_PATH, *REQUEST_PREFIXES, *REQUEST_TRACKED, *RESPONSE_FULL_PATH, *RESPONSE_PREFIXES,
                 *RESPONSE_TRACKED):
        if name != name.lower() or not name.isascii() or '"' in name or "\\" in name:
            raise ValueError(f"field name {name!r}: the table holds lower-case ASCII names only")
    lines = [
        "/* Generated from fivenines/core/fieldsets.py by setup.py (fieldsets.c_header()): do not edit. */",
        f"#define F_PLAIN {PLAIN}",
        f"#define F_FULL {FULL}",
        *(f"#define F_{name.upper().replace('-', '_')} {2 + i}  /* request */" for i, name in enumerate(REQUEST_TRACKED)),
        *(f"#define FR_{name.upper().replace('-', '_')} {2 + i}  /* response */"
          for i, name in enumerate(RESPONSE_TRACKED)),
        "",
        *_c_function("request_field", REQUEST_FULL_PATH, REQUEST_PREFIXES, REQUEST_TRACKED),
        "",
        *_c_function("response_field", RESPONSE_FULL_PATH, RESPONSE_PREFIXES, RESPONSE_TRACKED),
    ]
    return "\n".join(lines) + "\n"


HEADER_NAME: Final = "_express_tables.h"
