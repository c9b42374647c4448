"""The one table of special header fields (fivenines/core/fieldsets.py) against everything that reads it.

Exhaustive over the names the table could tell apart: every name and prefix it holds, in every
mix of upper and lower case, every prefix of each, each one token character longer, one character
shorter, ``-`` and ``_`` swapped. For each such field name:

* the express lane's specification (``express_request_py`` / ``express_response_py``) takes a
  message carrying it exactly when the table says the field is plain (and reads Host, Connection,
  Content-Length where the table says it tracks them);
* the C express lane (its classifiers generated from the table by the build) returns what the
  specification returns, on the same messages;
* the full path (``rewrite_request_head``, ``strip_hop_by_hop``) forwards the field unchanged
  whenever the table lets the express lane copy it: the express lane never copies a field the
  full path drops or rewrites.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from fivenines import accel
from fivenines.core import fieldsets
from fivenines.core.fieldsets import FULL, PLAIN, request_field, response_field
from fivenines.core.framing import Limits, express_request_py, express_response_py
from fivenines.core.heads import rewrite_request_head, strip_hop_by_hop

try:
    from fivenines import _express
except ImportError:
    _express = None  # type: ignore[assignment]

TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
LIMITS = Limits()


def case_variants(name: str) -> Iterator[str]:
    """``name`` in every mix of upper and lower case."""
    letters = [i for i, c in enumerate(name) if c.isalpha()]
    for bits in itertools.product((False, True), repeat=len(letters)):
        chars = list(name)
        for i, up in zip(letters, bits, strict=True):
            if up:
                chars[i] = chars[i].upper()
        yield "".join(chars)


def neighbours(name: str) -> set[str]:
    """Names next to ``name``: its prefixes, one token character longer, one shorter, - and _ swapped."""
    out = {name[:i] for i in range(1, len(name))}
    out |= {name + c for c in TOKEN}
    out |= {name[:i] + name[i + 1:] for i in range(len(name))} - {""}
    swap = {"-": "_", "_": "-"}
    out |= {name[:i] + swap[c] + name[i + 1:] for i, c in enumerate(name) if c in swap}
    return out


def table_names(direction: str) -> list[str]:
    if direction == "request":
        return [*fieldsets.REQUEST_FULL_PATH, *fieldsets.REQUEST_PREFIXES, *fieldsets.REQUEST_TRACKED]
    return [*fieldsets.RESPONSE_FULL_PATH, *fieldsets.RESPONSE_PREFIXES, *fieldsets.RESPONSE_TRACKED]


def every_name() -> set[str]:
    """All names the sets could tell apart, lower case, with their neighbours and the other
    tables' names (hop-by-hop, framing, forwarded, read)."""
    base = {*table_names("request"), *table_names("response"), *fieldsets.HOP_BY_HOP, *fieldsets.FRAMING,
            *fieldsets.FRAMING_ALIASES, *fieldsets.FORWARDED, fieldsets.REQUEST_ID, *fieldsets.REQUEST_READ}
    out = set(base)
    for name in base:
        out |= neighbours(name)
    return {n for n in out if n and all(c in TOKEN for c in n)}


NAMES = sorted(every_name())


# -- the messages that carry one field


def request_with(name: str) -> list[bytes]:
    """Requests carrying field ``name``: beside a Host (value keep-alive, which a Connection field may
    carry), and as the only field (value a valid host, for a Host field)."""
    return [f"GET / HTTP/1.1\r\nHost: a\r\n{name}: keep-alive\r\n\r\n".encode(),
            f"GET / HTTP/1.1\r\n{name}: a\r\n\r\n".encode()]


def response_with(name: str) -> list[bytes]:
    """Responses carrying field ``name``: beside a Content-Length (value keep-alive), and as the only
    field (value the length of the body)."""
    return [f"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n{name}: keep-alive\r\n\r\nok".encode(),
            f"HTTP/1.1 200 OK\r\n{name}: 2\r\n\r\nok".encode()]


def expected_request(kind: int) -> tuple[bool, bool]:
    """Whether the two requests of :func:`request_with` take the express lane, by the table."""
    if kind == FULL:
        return False, False
    if kind == 2:  # Host: a second one (refused); the only one (taken)
        return False, True
    if kind == 3:  # Connection: keep-alive (taken, cut); the only field, no Host (refused)
        return True, False
    return True, False  # plain: copied; no Host (refused)


def expected_response(kind: int) -> tuple[bool, bool]:
    if kind == FULL:
        return False, False
    if kind == 2:  # Content-Length: a second one with "keep-alive" (refused); the only one (taken)
        return False, True
    if kind == 3:  # Connection: keep-alive (taken, cut); no Content-Length (refused)
        return True, False
    return True, False


# -- the express lane's specification and the C build, against the table


@pytest.mark.parametrize("direction", ["request", "response"])
def test_every_case_of_every_table_name_as_the_table_says(direction: str) -> None:
    classify, messages, expected, py = (
        (request_field, request_with, expected_request, lambda d: express_request_py(d, LIMITS))
        if direction == "request" else
        (response_field, response_with, expected_response, express_response_py))
    checked = 0
    for base in table_names(direction):
        for name in case_variants(base):
            kind = classify(name)
            assert kind == classify(base) != PLAIN
            got = tuple(py(m) is not None for m in messages(name))
            assert got == expected(kind), (name, kind, got)
            checked += 1
    assert checked > 10_000  # (transfer-encoding alone has 2**16 spellings)


@pytest.mark.parametrize("direction", ["request", "response"])
def test_every_neighbouring_name_as_the_table_says(direction: str) -> None:
    classify, messages, expected, py = (
        (request_field, request_with, expected_request, lambda d: express_request_py(d, LIMITS))
        if direction == "request" else
        (response_field, response_with, expected_response, express_response_py))
    for lower in NAMES:
        for name in (lower, lower.upper()):
            got = tuple(py(m) is not None for m in messages(name))
            assert got == expected(classify(name)), (name, got)


needs_c = pytest.mark.skipif(_express is None, reason=f"the C express lane is not loaded: {accel.mode()}")


@needs_c
def test_the_c_lane_classifies_every_name_as_the_specification() -> None:
    """The generated classifiers, through the C recognisers, on every name of both tests above."""
    lim = (LIMITS.max_header_bytes, LIMITS.max_request_line, LIMITS.max_headers)
    names = set(NAMES) | {n.upper() for n in NAMES}
    for direction in ("request", "response"):
        for base in table_names(direction):
            names.update(case_variants(base))
    for name in sorted(names):
        for m in request_with(name):
            assert _express.express_request(m, *lim) == express_request_py(m, LIMITS), m
        for m in response_with(name):
            assert _express.express_response(m) == express_response_py(m), m


# -- the full path: what the express lane copies, the full path copies too


def full_path_copies_request_field(name: str) -> bool:
    got = rewrite_request_head(b"GET", b"/", "1.1", [(b"Host", b"a"), (name.encode(), b"v")], False, b"10.0.0.1",
                               b"http", b"80", LIMITS, lambda: b"id")
    return got.status == 0 and f"\r\n{name}: v\r\n".encode() in got.head


def full_path_copies_response_field(name: str) -> bool:
    head = f"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n{name}: v\r\n".encode()
    return strip_hop_by_hop(head, head.lower()) == head


def test_the_express_lane_copies_only_what_the_full_path_copies() -> None:
    for lower in NAMES:
        for name in (lower, lower.upper(), lower.title()):
            if request_field(name) == PLAIN:
                assert full_path_copies_request_field(name), name
            if response_field(name) == PLAIN:
                assert full_path_copies_response_field(name), name


def test_the_full_path_drops_every_hop_by_hop_field() -> None:
    for name in fieldsets.HOP_BY_HOP:
        assert not full_path_copies_request_field(name)
        assert not full_path_copies_response_field(name)
        assert request_field(name) != PLAIN and response_field(name) != PLAIN


def test_the_table_sends_framing_and_added_fields_to_the_full_path() -> None:
    for name in (*fieldsets.FRAMING, *fieldsets.FRAMING_ALIASES, *fieldsets.FORWARDED, fieldsets.REQUEST_ID, "expect"):
        assert request_field(name) == FULL, name
    assert response_field("transfer-encoding") == FULL


def test_the_build_depends_on_the_table() -> None:
    """The C classifiers are generated from fieldsets.py: its digest is in the build's manifest, so
    an edit of the table sends the data plane to its sources until it is built again."""
    assert "core/fieldsets.py" in accel.dependency_files()


def test_the_generated_header_has_a_case_per_length() -> None:
    text = fieldsets.c_header()
    lengths = {len(n) for n in (*fieldsets.REQUEST_FULL_PATH, *fieldsets.REQUEST_TRACKED)}
    request = text[text.index("request_field("):text.index("response_field(")]
    assert all(f"case {n}:" in request for n in lengths)
    assert all(f'"{n}"' in request for n in (*fieldsets.REQUEST_FULL_PATH, *fieldsets.REQUEST_PREFIXES))
