"""TLS decisions, pure: security policies, certificate choice by SNI, the ClientHello, ticket keys.

Nothing here touches a socket, a file or the clock (time is an argument); the
``ssl`` contexts built from these decisions live in :mod:`fivenines.proxy.tls`.

* :data:`POLICIES`: Elastic Load Balancing's named security policies, protocol
  versions and ciphers in AWS's priority order, exactly as AWS documents them
  ("Security policies for your Application Load Balancer"), with OpenSSL cipher
  names; :data:`IANA_NAMES` maps them to the IANA (RFC) names and code points.
* :class:`CertificateSelector`: which certificate answers a server name
  (exact name beats wildcard, a wildcard covers one label, case-insensitive,
  the default otherwise).
* :func:`parse_client_hello`: bytes from the start of a connection to the SNI and
  ALPN of its ClientHello, or "need more", or a rejection; bounded in size,
  never raises (for TLS passthrough, as HAProxy's ``req.ssl_sni``).
* :func:`ticket_keys`: the session ticket keys of a moment, derived from one
  shared secret, so that every worker and every node with the secret agree
  without talking (the current key encrypts; the previous and next decrypt).
* :func:`client_identity_headers`: the client certificate, as ALB forwards it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import quote

# --------------------------------------------------------------------------- security policies

TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
"""Protocol versions as ELB names them, oldest first."""

IANA_NAMES: dict[str, tuple[str, int]] = {
    # OpenSSL name: (IANA name, code point)
    "TLS_AES_128_GCM_SHA256": ("TLS_AES_128_GCM_SHA256", 0x1301),
    "TLS_AES_256_GCM_SHA384": ("TLS_AES_256_GCM_SHA384", 0x1302),
    "TLS_CHACHA20_POLY1305_SHA256": ("TLS_CHACHA20_POLY1305_SHA256", 0x1303),
    "ECDHE-ECDSA-AES128-GCM-SHA256": ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", 0xC02B),
    "ECDHE-RSA-AES128-GCM-SHA256": ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 0xC02F),
    "ECDHE-ECDSA-AES128-SHA256": ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", 0xC023),
    "ECDHE-RSA-AES128-SHA256": ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", 0xC027),
    "ECDHE-ECDSA-AES128-SHA": ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", 0xC009),
    "ECDHE-RSA-AES128-SHA": ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", 0xC013),
    "ECDHE-ECDSA-AES256-GCM-SHA384": ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", 0xC02C),
    "ECDHE-RSA-AES256-GCM-SHA384": ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", 0xC030),
    "ECDHE-ECDSA-AES256-SHA384": ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", 0xC024),
    "ECDHE-RSA-AES256-SHA384": ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", 0xC028),
    "ECDHE-ECDSA-AES256-SHA": ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", 0xC00A),
    "ECDHE-RSA-AES256-SHA": ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", 0xC014),
    "AES128-GCM-SHA256": ("TLS_RSA_WITH_AES_128_GCM_SHA256", 0x009C),
    "AES128-SHA256": ("TLS_RSA_WITH_AES_128_CBC_SHA256", 0x003C),
    "AES128-SHA": ("TLS_RSA_WITH_AES_128_CBC_SHA", 0x002F),
    "AES256-GCM-SHA384": ("TLS_RSA_WITH_AES_256_GCM_SHA384", 0x009D),
    "AES256-SHA256": ("TLS_RSA_WITH_AES_256_CBC_SHA256", 0x003D),
    "AES256-SHA": ("TLS_RSA_WITH_AES_256_CBC_SHA", 0x0035),
}

_TLS13 = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
# AWS's priority order interleaves the families; the building blocks below keep it.
_ECDHE_GCM128 = ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256")
_ECDHE_CBC128 = ("ECDHE-ECDSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA256")
_ECDHE_SHA128 = ("ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA")
_ECDHE_GCM256 = ("ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384")
_ECDHE_CBC256 = ("ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA384")
_RSA_12 = ("AES128-GCM-SHA256", "AES128-SHA256", "AES256-GCM-SHA384", "AES256-SHA256")
_RSA_ALL = ("AES128-GCM-SHA256", "AES128-SHA256", "AES128-SHA", "AES256-GCM-SHA384", "AES256-SHA256", "AES256-SHA")
_LEGACY = (*_ECDHE_GCM128, *_ECDHE_CBC128, *_ECDHE_SHA128, *_ECDHE_GCM256, *_ECDHE_CBC256,
           "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA", *_RSA_ALL)
"""Every TLS 1.2-and-older cipher ELB offers (ELBSecurityPolicy-2016-08, the TLS13 Ext2 policies)."""


@dataclass(frozen=True)
class Policy:
    """One ELB security policy: protocol versions and ciphers, in AWS's priority order."""

    name: str
    protocols: tuple[str, ...]  # ELB names, oldest first: TLSv1, TLSv1.1, TLSv1.2, TLSv1.3
    ciphers: tuple[str, ...]  # OpenSSL names; TLS 1.3 suites first, as AWS lists them

    @property
    def min_version(self) -> str:
        return self.protocols[0]

    @property
    def max_version(self) -> str:
        return self.protocols[-1]

    @property
    def tls13_suites(self) -> tuple[str, ...]:
        """TLS 1.3 cipher suites (empty when the policy has no TLS 1.3)."""
        return tuple(c for c in self.ciphers if c.startswith("TLS_"))

    @property
    def tls12_ciphers(self) -> tuple[str, ...]:
        """Ciphers of TLS 1.2 and older (OpenSSL's cipher list)."""
        return tuple(c for c in self.ciphers if not c.startswith("TLS_"))

    @property
    def openssl_cipher_string(self) -> str:
        """The cipher list for ``SSLContext.set_ciphers`` (TLS 1.2 and older)."""
        return ":".join(self.tls12_ciphers)

    @property
    def forward_secret(self) -> bool:
        return all(c.startswith(("TLS_", "ECDHE-")) for c in self.ciphers)

    def __repr__(self) -> str:
        return f"<Policy {self.name} {'/'.join(self.protocols)} {len(self.ciphers)} ciphers>"


def _policy(name: str, protocols: tuple[str, ...], ciphers: tuple[str, ...]) -> Policy:
    return Policy(f"ELBSecurityPolicy-{name}", protocols, ciphers)


_P12 = ("TLSv1.2",)
_P1213 = ("TLSv1.2", "TLSv1.3")
POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        _policy("TLS13-1-3-2021-06", ("TLSv1.3",), _TLS13),
        _policy("TLS13-1-2-2021-06", _P1213, (*_TLS13, *_ECDHE_GCM128, *_ECDHE_CBC128, *_ECDHE_GCM256, *_ECDHE_CBC256)),
        _policy("TLS13-1-2-Res-2021-06", _P1213, (*_TLS13, *_ECDHE_GCM128, *_ECDHE_GCM256)),
        _policy("TLS13-1-2-Ext1-2021-06", _P1213,
                (*_TLS13, *_ECDHE_GCM128, *_ECDHE_CBC128, *_ECDHE_GCM256, *_ECDHE_CBC256, *_RSA_12)),
        _policy("TLS13-1-2-Ext2-2021-06", _P1213, (*_TLS13, *_LEGACY)),
        _policy("TLS13-1-1-2021-06", ("TLSv1.1", *_P1213), (*_TLS13, *_LEGACY)),
        _policy("TLS13-1-0-2021-06", ("TLSv1", "TLSv1.1", *_P1213), (*_TLS13, *_LEGACY)),
        _policy("2016-08", ("TLSv1", "TLSv1.1", "TLSv1.2"), _LEGACY),
        _policy("TLS-1-1-2017-01", ("TLSv1.1", "TLSv1.2"), _LEGACY),
        _policy("TLS-1-2-2017-01", _P12, (*_ECDHE_GCM128, *_ECDHE_CBC128, *_ECDHE_GCM256, *_ECDHE_CBC256, *_RSA_12)),
        _policy("TLS-1-2-Ext-2018-06", _P12, _LEGACY),
        _policy("FS-1-2-Res-2020-10", _P12, (*_ECDHE_GCM128, *_ECDHE_GCM256)),
    )
}
"""The policies fivenines serves, by name."""

DEFAULT_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"


def policy(name: str) -> Policy:
    """The policy called ``name``; a ValueError listing the valid names otherwise.

    >>> policy("ELBSecurityPolicy-TLS13-1-3-2021-06").protocols
    ('TLSv1.3',)
    """
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"{name!r} is not a security policy fivenines knows; valid: {', '.join(POLICIES)}") from None


# --------------------------------------------------------------------------- certificate choice by SNI


def normalise_name(name: str) -> str:
    """A DNS name as SNI compares it: lower case, without a trailing dot.

    >>> normalise_name("WWW.Example.COM.")
    'www.example.com'
    """
    return name.strip().rstrip(".").lower()


def name_matches(pattern: str, server_name: str) -> bool:
    """True when a certificate name (``pattern``, maybe ``*.`` + a domain) covers ``server_name``.

    A wildcard stands for exactly one whole leftmost label (RFC 6125), never for
    nothing and never for several labels; anything else compares exactly.

    >>> [name_matches("*.example.com", n) for n in ("a.example.com", "a.b.example.com", "example.com")]
    [True, False, False]
    >>> name_matches("Example.com", "EXAMPLE.COM.")
    True
    """
    p, n = normalise_name(pattern), normalise_name(server_name)
    if not n:
        return False
    if p.startswith("*."):
        label, dot, rest = n.partition(".")
        return bool(label) and bool(dot) and rest == p[2:] and "*" not in label
    return p == n


class CertificateSelector:
    """Which certificate (an index into the listener's list) answers a server name.

    Built once per listener from each certificate's names (subject alternative names,
    else the common name). An exact name beats a wildcard; among equals the earlier
    certificate wins; no server name, or no match: the default.

    >>> s = CertificateSelector([["example.com"], ["*.example.com"], ["api.example.com"]], default=0)
    >>> [s.select(n) for n in ("api.example.com", "API.example.com", "www.example.com", "x.y.example.com", None)]
    [2, 2, 1, 0, 0]
    """

    __slots__ = ("default", "exact", "wildcard")

    def __init__(self, names: Sequence[Sequence[str]], default: int = 0) -> None:
        if not 0 <= default < max(1, len(names)):
            raise ValueError(f"default {default} is not one of the {len(names)} certificates")
        self.default = default
        self.exact: dict[str, int] = {}
        self.wildcard: dict[str, int] = {}  # the domain under "*." -> certificate
        for i, cert_names in enumerate(names):
            for raw in cert_names:
                n = normalise_name(raw)
                if n.startswith("*.") and "*" not in n[2:] and n[2:]:
                    self.wildcard.setdefault(n[2:], i)
                elif n and "*" not in n:
                    self.exact.setdefault(n, i)

    def select(self, server_name: str | None) -> int:
        found = self.find(server_name)
        return self.default if found is None else found

    def find(self, server_name: str | None) -> int | None:
        """The certificate that names ``server_name``, or None (then :meth:`select` gives the default)."""
        if not server_name:
            return None
        n = normalise_name(server_name)
        found = self.exact.get(n)
        if found is not None:
            return found
        label, dot, rest = n.partition(".")
        if label and dot and "*" not in label:
            return self.wildcard.get(rest)
        return None

    def __repr__(self) -> str:
        return f"<CertificateSelector {len(self.exact)} names, {len(self.wildcard)} wildcards, default {self.default}>"


# --------------------------------------------------------------------------- ClientHello


MAX_CLIENT_HELLO = 16384
"""Largest ClientHello (handshake message body) passthrough reads before deciding; bigger: rejected."""

_RECORD_HANDSHAKE = 22
_CLIENT_HELLO = 1
_EXT_SERVER_NAME = 0
_EXT_ALPN = 16
_EXT_SUPPORTED_VERSIONS = 43
_HOST_RE = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*")


@dataclass(frozen=True)
class ClientHello:
    """What passthrough needs from a ClientHello. ``versions``: ELB names the client offers."""

    server_name: str | None
    alpn: tuple[str, ...]
    versions: tuple[str, ...]


@dataclass(frozen=True)
class NeedMore:
    """The ClientHello is not complete yet: read at least ``at_least`` bytes in all."""

    at_least: int


class HelloProblem(str, Enum):
    NOT_TLS = "not TLS"
    SSLV2 = "an SSLv2 ClientHello"
    NOT_HANDSHAKE = "not a handshake record"
    NOT_CLIENT_HELLO = "the first handshake message is not a ClientHello"
    TOO_LARGE = "the ClientHello is larger than the limit"
    MALFORMED = "a malformed ClientHello"
    BAD_SERVER_NAME = "a malformed server name"


@dataclass(frozen=True)
class Rejected:
    """The bytes are not a ClientHello passthrough can route (close the connection)."""

    problem: HelloProblem
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.problem.value}: {self.detail}" if self.detail else self.problem.value


class _Short(Exception):
    """A length field points past the end of the message (private to this module)."""


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise _Short
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, len_bytes: int) -> bytes:
        return self.take(self.uint(len_bytes))

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def _version_name(v: int) -> str | None:
    return {0x0301: "TLSv1", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}.get(v)


def parse_client_hello(data: bytes, limit: int = MAX_CLIENT_HELLO) -> ClientHello | NeedMore | Rejected:
    """Read the ClientHello at the start of ``data`` (the bytes a client sent so far).

    Handles a ClientHello split over several records and records split over reads;
    returns :class:`NeedMore` until it is whole, :class:`Rejected` for anything that
    is not a well-formed ClientHello of at most ``limit`` bytes. Never raises.

    >>> hello = bytes.fromhex("16030100") + b"\\x00"  # a record header that announces nothing
    >>> parse_client_hello(hello).problem.value
    'a malformed ClientHello'
    >>> parse_client_hello(b"GET / HTTP/1.1\\r\\n")
    Rejected(problem=<HelloProblem.NOT_TLS: 'not TLS'>, detail='first byte 0x47')
    >>> parse_client_hello(b"\\x16\\x03")
    NeedMore(at_least=5)
    """
    if not data:
        return NeedMore(5)
    first = data[0]
    if first & 0x80:
        return Rejected(HelloProblem.SSLV2, f"first byte {first:#04x}")
    if first != _RECORD_HANDSHAKE:
        return Rejected(HelloProblem.NOT_TLS, f"first byte {first:#04x}")
    message = bytearray()
    pos = 0
    wanted = -1  # handshake message length incl. its 4-byte header, once known
    while True:
        if len(data) < pos + 5:
            return NeedMore(pos + 5)
        rtype, major, length = data[pos], data[pos + 1], int.from_bytes(data[pos + 3 : pos + 5], "big")
        if rtype != _RECORD_HANDSHAKE:
            return Rejected(HelloProblem.NOT_HANDSHAKE, f"record type {rtype} inside the ClientHello")
        if major != 3:
            return Rejected(HelloProblem.NOT_TLS, f"record version {major}.{data[pos + 2]}")
        if length == 0 or length > 16384:
            return Rejected(HelloProblem.MALFORMED, f"record length {length}")
        if len(data) < pos + 5 + length:
            if wanted < 0 and len(message) + len(data) - pos - 5 >= 4:
                # the header of the handshake message may already be readable: check the limit early
                head = bytes(message) + data[pos + 5 : pos + 9]
                if head[0] != _CLIENT_HELLO:
                    return Rejected(HelloProblem.NOT_CLIENT_HELLO, f"handshake type {head[0]}")
                if int.from_bytes(head[1:4], "big") > limit:
                    return Rejected(HelloProblem.TOO_LARGE, f"{int.from_bytes(head[1:4], 'big')} > {limit} bytes")
            return NeedMore(pos + 5 + length)
        message += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if wanted < 0 and len(message) >= 4:
            if message[0] != _CLIENT_HELLO:
                return Rejected(HelloProblem.NOT_CLIENT_HELLO, f"handshake type {message[0]}")
            body = int.from_bytes(message[1:4], "big")
            if body > limit:
                return Rejected(HelloProblem.TOO_LARGE, f"{body} > {limit} bytes")
            wanted = 4 + body
        if wanted >= 0 and len(message) >= wanted:
            return _client_hello_body(bytes(message[4:wanted]))


def _client_hello_body(body: bytes) -> ClientHello | Rejected:
    r = _Reader(body)
    try:
        legacy_version = r.uint(2)
        r.take(32)  # random
        if len(r.vector(1)) > 32:
            return Rejected(HelloProblem.MALFORMED, "session id longer than 32 bytes")
        suites = r.vector(2)
        if not suites or len(suites) % 2:
            return Rejected(HelloProblem.MALFORMED, "cipher suites")
        if not r.vector(1):
            return Rejected(HelloProblem.MALFORMED, "no compression method")
        name: str | None = None
        alpn: tuple[str, ...] = ()
        versions: tuple[str, ...] = ()
        seen: set[int] = set()
        if r.left:
            ext = _Reader(r.vector(2))
            if r.left:
                return Rejected(HelloProblem.MALFORMED, "bytes after the extensions")
            while ext.left:
                etype = ext.uint(2)
                edata = ext.vector(2)
                if etype in seen:
                    return Rejected(HelloProblem.MALFORMED, f"extension {etype} twice")
                seen.add(etype)
                if etype == _EXT_SERVER_NAME:
                    got = _server_name(edata)
                    if isinstance(got, Rejected):
                        return got
                    name = got
                elif etype == _EXT_ALPN:
                    got_alpn = _alpn(edata)
                    if isinstance(got_alpn, Rejected):
                        return got_alpn
                    alpn = got_alpn
                elif etype == _EXT_SUPPORTED_VERSIONS:
                    vr = _Reader(edata)
                    listed = vr.vector(1)
                    if vr.left or not listed or len(listed) % 2:
                        return Rejected(HelloProblem.MALFORMED, "supported_versions")
                    codes = (int.from_bytes(listed[i : i + 2], "big") for i in range(0, len(listed), 2))
                    versions = tuple(n for n in (_version_name(c) for c in codes) if n)
    except _Short:
        return Rejected(HelloProblem.MALFORMED, "a length points past the end")
    if not versions:
        legacy = _version_name(legacy_version)
        versions = (legacy,) if legacy else ()
    return ClientHello(name, alpn, versions)


def _server_name(data: bytes) -> str | Rejected | None:
    r = _Reader(data)
    names = _Reader(r.vector(2))
    if r.left:
        return Rejected(HelloProblem.MALFORMED, "bytes after the server name list")
    found: str | None = None
    while names.left:
        kind = names.uint(1)
        raw = names.vector(2)
        if kind != 0:
            continue  # only host_name (0) is defined; others are skipped
        if found is not None:
            return Rejected(HelloProblem.BAD_SERVER_NAME, "two host names")
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            return Rejected(HelloProblem.BAD_SERVER_NAME, "not ASCII")
        host = normalise_name(text)
        if len(host) > 253 or not _HOST_RE.fullmatch(host):
            return Rejected(HelloProblem.BAD_SERVER_NAME, repr(text[:80]))
        found = host
    return found


def _alpn(data: bytes) -> tuple[str, ...] | Rejected:
    r = _Reader(data)
    protos = _Reader(r.vector(2))
    if r.left:
        return Rejected(HelloProblem.MALFORMED, "bytes after the ALPN list")
    out = []
    while protos.left:
        p = protos.vector(1)
        if not p:
            return Rejected(HelloProblem.MALFORMED, "an empty ALPN protocol")
        out.append(p.decode("latin-1"))
    return tuple(out)


# --------------------------------------------------------------------------- session ticket keys


@dataclass(frozen=True)
class TicketKey:
    """One session ticket key in OpenSSL's layout: a 16-byte name, 32 HMAC and 32 AES bytes."""

    epoch: int
    name: bytes
    hmac_key: bytes
    aes_key: bytes

    def __repr__(self) -> str:  # never the key material
        return f"<TicketKey epoch={self.epoch} name={self.name[:4].hex()}...>"


@dataclass(frozen=True)
class TicketKeys:
    """The keys of one moment: ``current`` encrypts new tickets; ``accepted`` decrypt (current included)."""

    current: TicketKey
    accepted: tuple[TicketKey, ...]
    next_rotation: float  # when the keys change (same clock as ``now``)

    def find(self, name: bytes) -> TicketKey | None:
        for k in self.accepted:
            if hmac.compare_digest(k.name, name):
                return k
        return None


def derive_ticket_key(secret: bytes, epoch: int) -> TicketKey:
    """The key of ``epoch``: HKDF-SHA256 (RFC 5869) of the shared ``secret``, 80 bytes."""
    prk = hmac.new(b"fivenines session tickets", secret, hashlib.sha256).digest()
    info = b"fivenines ticket key " + epoch.to_bytes(8, "big", signed=True)
    okm, block = b"", b""
    for i in range(1, 4):  # 3 x 32 bytes >= 80
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        okm += block
    return TicketKey(epoch, okm[:16], okm[16:48], okm[48:80])


def ticket_keys(secret: bytes, now: float, rotation: float, previous: int = 1) -> TicketKeys:
    """The ticket keys at ``now`` when keys rotate every ``rotation`` seconds.

    Epoch ``e = floor(now / rotation)`` encrypts; epochs ``e - previous .. e + 1`` are
    accepted for decryption, so a ticket issued just before a rotation still resumes
    after it, and a worker or node whose clock runs a little ahead does not make
    tickets the others refuse. Same secret and same epoch: same keys, everywhere.

    >>> k = ticket_keys(b"s" * 32, now=7300.0, rotation=3600.0)
    >>> k.current.epoch, [x.epoch for x in k.accepted], k.next_rotation
    (2, [2, 1, 3], 10800.0)
    """
    if rotation <= 0:
        raise ValueError("rotation must be greater than 0")
    if len(secret) < 16:
        raise ValueError("the ticket secret must have at least 16 bytes")
    epoch = int(now // rotation)
    current = derive_ticket_key(secret, epoch)
    older = tuple(derive_ticket_key(secret, epoch - i) for i in range(1, previous + 1))
    return TicketKeys(current, (current, *older, derive_ticket_key(secret, epoch + 1)), (epoch + 1) * rotation)


# --------------------------------------------------------------------------- client identity (mutual TLS)


@dataclass(frozen=True)
class ClientCertificate:
    """The fields of a client certificate that are forwarded (from :mod:`fivenines.certs`)."""

    subject: str  # RFC 4514
    issuer: str
    serial: str  # hex, upper case
    not_before: str  # ISO 8601, UTC, e.g. 2024-01-01T00:00:00Z
    not_after: str
    pem: str  # the leaf certificate


IDENTITY_HEADER_PREFIX = "X-Amzn-Mtls-Clientcert"


def _header_safe(value: str) -> str:
    """Control characters percent-encoded, so a value can never end a header line."""
    return "".join(c if 0x20 <= ord(c) < 0x7F else quote(c, safe="") for c in value)


def client_identity_headers(mode: str, cert: ClientCertificate | None,
                            prefix: str = IDENTITY_HEADER_PREFIX) -> list[tuple[str, str]]:
    """The headers that carry the client's certificate to the target, as ALB names them.

    ``verify``: ``-Serial-Number``, ``-Issuer``, ``-Subject``, ``-Validity`` and ``-Leaf``
    (URL-encoded PEM); ``passthrough``: the URL-encoded PEM in ``PREFIX`` itself;
    ``off`` or no certificate: none. (A client may not send these headers itself: the
    listener drops any header starting with the prefix before adding its own.)

    >>> c = ClientCertificate("CN=alice", "CN=ca", "0A", "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z", "P")
    >>> client_identity_headers("verify", c)[:2]
    [('X-Amzn-Mtls-Clientcert-Serial-Number', '0A'), ('X-Amzn-Mtls-Clientcert-Issuer', 'CN=ca')]
    >>> client_identity_headers("passthrough", c)
    [('X-Amzn-Mtls-Clientcert', 'P')]
    """
    if cert is None or mode == "off":
        return []
    if mode == "passthrough":
        return [(prefix, quote(cert.pem, safe="=+/"))]
    if mode != "verify":
        raise ValueError(f"mode {mode!r}: off, verify or passthrough")
    return [
        (f"{prefix}-Serial-Number", _header_safe(cert.serial)),
        (f"{prefix}-Issuer", _header_safe(cert.issuer)),
        (f"{prefix}-Subject", _header_safe(cert.subject)),
        (f"{prefix}-Validity", f"NotBefore={cert.not_before};NotAfter={cert.not_after}"),
        (f"{prefix}-Leaf", quote(cert.pem, safe="=+/")),
    ]


# --------------------------------------------------------------------------- expiry


def days_left(not_after: float, now: float) -> float:
    """Days from ``now`` until ``not_after`` (negative once expired), both POSIX seconds.

    >>> days_left(86400 * 10, 86400 * 7.5)
    2.5
    """
    return (not_after - now) / 86400.0


EXPIRY_WARNING_DAYS = 30.0
"""``fivenines validate`` warns about a certificate that expires within this many days."""


@dataclass(frozen=True)
class CertificateMaterial:
    """A certificate to import into ACM, read from the spec's files (by :mod:`fivenines.certs`)."""

    fingerprint: str  # SHA-256 of the leaf, hex
    domain: str  # its first name
    certificate: bytes  # the leaf, PEM
    chain: bytes  # the intermediates, PEM (may be empty)
    private_key: bytes = field(repr=False)
