"""core/tls: the ELB policy table, certificate choice by SNI, the ClientHello parser, ticket keys."""

from __future__ import annotations

import ssl
from itertools import product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.core.route import RequestView, Router
from fivenines.core.tls import (
    DEFAULT_POLICY,
    IANA_NAMES,
    MAX_CLIENT_HELLO,
    POLICIES,
    CertificateSelector,
    ClientCertificate,
    ClientHello,
    HelloProblem,
    NeedMore,
    Rejected,
    client_identity_headers,
    derive_ticket_key,
    name_matches,
    parse_client_hello,
    policy,
    ticket_keys,
)
from fivenines.spec import RuleSpec

# --------------------------------------------------------------------------- policies


def test_policy_table_matches_what_aws_documents() -> None:
    """moto's table is transcribed from AWS's describe-ssl-policies; ours must agree policy by policy,
    cipher order (AWS's priority) included."""
    from moto.elbv2.ssl_policies import SSL_POLICIES

    for name, p in POLICIES.items():
        aws = SSL_POLICIES[name]
        assert list(p.ciphers) == aws["ciphers"], name
        assert set(p.protocols) == set(aws["ssl_protocols"]), name


def test_policy_shapes() -> None:
    assert DEFAULT_POLICY == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert len(POLICIES) == 12
    for p in POLICIES.values():
        assert p.protocols == tuple(sorted(p.protocols, key=["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"].index))
        assert set(p.ciphers) <= set(IANA_NAMES), p.name
        assert len(set(p.ciphers)) == len(p.ciphers)
        assert bool(p.tls13_suites) == ("TLSv1.3" in p.protocols)
        assert bool(p.tls12_ciphers) == (p.min_version != "TLSv1.3")
    assert policy("ELBSecurityPolicy-TLS13-1-3-2021-06").openssl_cipher_string == ""
    assert policy("ELBSecurityPolicy-FS-1-2-Res-2020-10").openssl_cipher_string == (
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384")
    assert policy("ELBSecurityPolicy-FS-1-2-Res-2020-10").forward_secret
    assert not policy("ELBSecurityPolicy-2016-08").forward_secret
    with pytest.raises(ValueError, match="valid: ELBSecurityPolicy-TLS13-1-3-2021-06"):
        policy("TLSv1.2")


def test_iana_names_agree_with_openssl_code_points() -> None:
    """Python's ssl reports each cipher's code point (``id``, 0x0300XXXX): the IANA table must agree."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ids = {c["name"]: c["id"] & 0xFFFF for c in ctx.get_ciphers()}
    for name, (_iana, code) in IANA_NAMES.items():
        assert ids[name] == code, name


# --------------------------------------------------------------------------- certificate choice


NAMES = ["example.com", "www.example.com", "*.example.com", "a.b.example.com", "*.b.example.com", "other.org", "*.org"]
QUERIES = ["example.com", "www.example.com", "WWW.EXAMPLE.COM.", "x.example.com", "a.b.example.com", "c.b.example.com",
           "b.example.com", "x.y.b.example.com", "other.org", "new.org", "org", "", "*.example.com", "unknown.net",
           ".example.com", "x..example.com"]


def reference(certs: list[list[str]], default: int, server_name: str | None) -> int:
    """The rule as written: the first certificate with an exact name, else the first with a
    wildcard covering the name, else the default."""
    if not server_name:
        return default
    for i, names in enumerate(certs):
        if any("*" not in n and n.lower().rstrip(".") == server_name.lower().rstrip(".") for n in names):
            return i
    for i, names in enumerate(certs):
        if any(n.startswith("*.") and name_matches(n, server_name) for n in names):
            return i
    return default


def test_selector_exhaustively_over_small_lists() -> None:
    for size in (1, 2, 3):
        for combo in product(NAMES, repeat=size):
            certs = [[n] for n in combo]
            for default in range(size):
                s = CertificateSelector(certs, default)
                for q in QUERIES:
                    assert s.select(q) == reference(certs, default, q), (certs, default, q)


def test_exact_beats_wildcard_whatever_the_order() -> None:
    s = CertificateSelector([["*.example.com"], ["api.example.com"]])
    assert s.select("api.example.com") == 1 and s.select("web.example.com") == 0
    assert s.select("deep.api.example.com") == 0  # no cert covers it: the default, never a two-label wildcard
    assert CertificateSelector([["a.test"], ["b.test"]], default=1).select("c.test") == 1
    with pytest.raises(ValueError):
        CertificateSelector([["a.test"]], default=1)


label = st.text(alphabet="abcxyz-", min_size=1, max_size=4)
dns_name = st.lists(label, min_size=1, max_size=4).map(".".join)
cert_name = st.one_of(dns_name, dns_name.map(lambda n: "*." + n))


@settings(max_examples=400)
@given(certs=st.lists(st.lists(cert_name, min_size=1, max_size=3), min_size=1, max_size=5),
       query=st.one_of(st.none(), dns_name, cert_name), default=st.integers(0, 4), upper=st.booleans())
def test_selector_matches_the_reference(certs: list[list[str]], query: str | None, default: int, upper: bool) -> None:
    default %= len(certs)
    s = CertificateSelector(certs, default)
    q = query.upper() if (query and upper) else query
    got = s.select(q)
    assert got == reference(certs, default, q)
    if got != default and q:
        assert any(name_matches(n, q) for n in certs[got])


# --------------------------------------------------------------------------- the ClientHello


def client_hello(server_name: str | None, alpn: list[str] | None = None, tls13: bool = True) -> bytes:
    """The bytes a real client (Python's ssl, OpenSSL) sends first."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if not tls13:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        ctx.set_alpn_protocols(alpn)
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def reframe(hello: bytes, sizes: list[int]) -> bytes:
    """The same handshake message split into records of the given sizes (the last takes the rest)."""
    assert hello[0] == 22
    message = hello[5 : 5 + int.from_bytes(hello[3:5], "big")]
    out, pos = b"", 0
    for n in [*sizes, len(message)]:
        chunk = message[pos : pos + max(1, n)]
        if not chunk:
            break
        out += b"\x16\x03\x01" + len(chunk).to_bytes(2, "big") + chunk
        pos += len(chunk)
    return out


def test_real_client_hellos() -> None:
    got = parse_client_hello(client_hello("API.Example.com", ["h2", "http/1.1"]))
    assert got == ClientHello("api.example.com", ("h2", "http/1.1"), ("TLSv1.3", "TLSv1.2"))
    assert parse_client_hello(client_hello(None)) == ClientHello(None, (), ("TLSv1.3", "TLSv1.2"))
    assert parse_client_hello(client_hello("x.test", tls13=False)) == ClientHello("x.test", (), ("TLSv1.2",))


def test_every_prefix_needs_more_and_fragmented_records_parse() -> None:
    hello = client_hello("shop.example.com", ["http/1.1"])
    want = parse_client_hello(hello)
    for cut in range(len(hello)):
        assert isinstance(parse_client_hello(hello[:cut]), NeedMore), cut
    split = reframe(hello, [1, 3, 50, 2])
    for cut in range(len(split)):
        assert isinstance(parse_client_hello(split[:cut]), NeedMore), cut
    assert parse_client_hello(split) == want
    assert parse_client_hello(split + b"\x17\x03\x03\x00\x01x") == want  # what follows is not read


def test_rejections() -> None:
    hello = client_hello("a.test")
    assert parse_client_hello(b"\x80\x2e\x01\x00\x02").problem is HelloProblem.SSLV2  # type: ignore[union-attr]
    assert parse_client_hello(b"\x17\x03\x03\x00\x05hello").problem is HelloProblem.NOT_TLS  # type: ignore[union-attr]
    assert parse_client_hello(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00").problem is HelloProblem.NOT_CLIENT_HELLO  # type: ignore[union-attr]
    assert parse_client_hello(b"\x16\x02\x00\x00\x04").problem is HelloProblem.NOT_TLS  # type: ignore[union-attr]
    assert parse_client_hello(b"\x16\x03\x01\x40\x01").problem is HelloProblem.MALFORMED  # type: ignore[union-attr]
    interleaved = reframe(hello, [10])
    first = 5 + 10
    bad = interleaved[:first] + b"\x15\x03\x03\x00\x02\x02\x28" + interleaved[first:]
    assert parse_client_hello(bad).problem is HelloProblem.NOT_HANDSHAKE  # type: ignore[union-attr]
    # a ClientHello announcing more than the limit is refused as soon as its header is in
    huge = b"\x16\x03\x01\x00\x04\x01" + (MAX_CLIENT_HELLO + 1).to_bytes(3, "big")
    assert parse_client_hello(huge).problem is HelloProblem.TOO_LARGE  # type: ignore[union-attr]
    assert parse_client_hello(huge[:7] + b"\x00", limit=10) == NeedMore(9)
    assert parse_client_hello(b"\x16\x03\x01\x00\x10\x01\x00\x01\x00", limit=10).problem is HelloProblem.TOO_LARGE  # type: ignore[union-attr]


def test_bad_server_names() -> None:
    def with_name(raw: bytes) -> bytes:
        hello = client_hello("placeholder.test")
        return hello.replace(b"placeholder.test", raw)  # same length keeps every length field right

    assert parse_client_hello(with_name(b"PLACEHOLDER.TEST")) == parse_client_hello(client_hello("placeholder.test"))
    for raw in (b"bad name\x00.test!", b"\xffplaceholder.tes", b"a..placeholder.t", b"-placeholder.tes"):
        got = parse_client_hello(with_name(raw[:16].ljust(16, b"x")))
        assert isinstance(got, Rejected) and got.problem is HelloProblem.BAD_SERVER_NAME, raw


@settings(max_examples=300)
@given(data=st.binary(max_size=600))
def test_random_bytes_never_raise(data: bytes) -> None:
    assert isinstance(parse_client_hello(data), ClientHello | NeedMore | Rejected)
    assert isinstance(parse_client_hello(b"\x16\x03\x01" + data), ClientHello | NeedMore | Rejected)


HELLO = client_hello("fuzz.example.com", ["http/1.1"])


@settings(max_examples=500)
@given(edits=st.lists(st.tuples(st.integers(0, len(HELLO) - 1), st.integers(0, 255)), max_size=6),
       cut=st.integers(0, len(HELLO)), sizes=st.lists(st.integers(1, 300), max_size=4))
def test_mutated_hellos_never_raise(edits: list[tuple[int, int]], cut: int, sizes: list[int]) -> None:
    data = bytearray(HELLO)
    for pos, value in edits:
        data[pos] = value
    for candidate in (bytes(data), bytes(data[:cut])):
        got = parse_client_hello(candidate)
        assert isinstance(got, ClientHello | NeedMore | Rejected)
        if isinstance(got, NeedMore):
            assert got.at_least > len(candidate)
        if isinstance(got, ClientHello) and got.server_name is not None:
            assert got.server_name == got.server_name.lower() and len(got.server_name) <= 253
    if not edits:
        assert parse_client_hello(reframe(HELLO, sizes)) == parse_client_hello(HELLO)


def test_sni_rules_route_connections() -> None:
    rules = [RuleSpec.model_validate({"match": {"sni": ["*.api.test", "api.test"]}, "forward": "api"}),
             RuleSpec.model_validate({"match": {"sni": ["db.test"], "source_ip": ["10.0.0.0/8"]}, "forward": "db"})]
    r = Router(rules, "web")
    hello = parse_client_hello(client_hello("v1.API.test"))
    assert isinstance(hello, ClientHello) and hello.server_name is not None
    assert r.route(RequestView(b"", b"", sni=hello.server_name.encode())).groups == ("api",)
    assert r.route(RequestView(b"", b"", sni=b"api.test")).groups == ("api",)
    assert r.route(RequestView(b"", b"", sni=b"db.test", source=(4, 0x0A000001))).groups == ("db",)
    assert r.route(RequestView(b"", b"", sni=b"db.test", source=(4, 0xC0A80001))).groups == ("web",)
    assert r.route(RequestView(b"", b"")).groups == ("web",)


# --------------------------------------------------------------------------- ticket keys


SECRET = b"0123456789abcdef0123456789abcdef"


def test_ticket_keys_rotate_on_epochs() -> None:
    a = ticket_keys(SECRET, 3599.9, 3600)
    b = ticket_keys(SECRET, 3600.0, 3600)
    assert (a.current.epoch, b.current.epoch) == (0, 1)
    assert a.next_rotation == 3600.0 and b.next_rotation == 7200.0
    assert b.find(a.current.name) == a.current  # issued just before the rotation: still decrypts
    assert a.find(b.current.name) == b.current  # a worker slightly behind accepts the next key
    later = ticket_keys(SECRET, 3 * 3600.0, 3600)
    assert later.find(a.current.name) is None  # two rotations later: a full handshake
    k = derive_ticket_key(SECRET, 5)
    assert (len(k.name), len(k.hmac_key), len(k.aes_key)) == (16, 32, 32)
    assert k == derive_ticket_key(SECRET, 5) and k != derive_ticket_key(SECRET, 6)
    assert derive_ticket_key(b"another secret, just as long!!!!", 5).name != k.name
    assert "hmac" not in repr(k) and k.hmac_key.hex() not in repr(k)
    with pytest.raises(ValueError):
        ticket_keys(b"short", 0, 3600)
    with pytest.raises(ValueError):
        ticket_keys(SECRET, 0, 0)


@given(now=st.floats(0, 1e10), skew=st.floats(-0.99, 0.99), rotation=st.sampled_from([60.0, 3600.0, 86400.0]),
       previous=st.integers(1, 3))
def test_workers_with_skewed_clocks_accept_each_others_tickets(now: float, skew: float, rotation: float,
                                                                previous: int) -> None:
    mine = ticket_keys(SECRET, now, rotation, previous)
    theirs = ticket_keys(SECRET, max(0.0, now + skew * rotation), rotation, previous)
    assert theirs.find(mine.current.name) == mine.current
    assert mine.current in mine.accepted and len(mine.accepted) == previous + 2
    # a ticket issued now still decrypts a whole rotation later
    assert ticket_keys(SECRET, now + rotation * 0.999, rotation, previous).find(mine.current.name) is not None


# --------------------------------------------------------------------------- client identity


@given(text=st.text(max_size=40))
def test_identity_headers_never_break_a_header_line(text: str) -> None:
    cert = ClientCertificate(text, text, "0A", "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z",
                             "-----BEGIN CERTIFICATE-----\nAB+/=\n-----END CERTIFICATE-----\n" + text)
    for mode in ("verify", "passthrough"):
        for name, value in client_identity_headers(mode, cert, "X-Client"):
            assert name.startswith("X-Client")
            assert all(0x20 <= ord(c) < 0x7F for c in value), (name, value)
    assert client_identity_headers("off", cert) == [] and client_identity_headers("verify", None) == []
