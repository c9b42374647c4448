"""Listener rules → an action (ALB's content-based routing), compiled once. Pure.

A :class:`Router` is built from a listener's ``rules`` when the spec loads: every
glob becomes one compiled regular expression, every CIDR a (network, mask) pair
of integers, every redirect a template split into parts, every fixed response
pre-rendered bytes. Per request, :meth:`Router.route` walks the rules in order
and returns the first matching rule's action object (shared, never allocated
per request); the listener's default forward when none match.

Conditions (``RuleMatch``), all of which must hold; the values of one condition
are alternatives:

``path``       globs on the path (percent-decoded, without the query); case-sensitive
``host``       globs on the Host header (port removed); case-insensitive
``header``     header name → value globs; case-insensitive
``method``     exact methods
``query``      parameter → value glob; case-insensitive, percent-decoded
``source_ip``  CIDRs the client address must fall in
``sni``        globs on the TLS server name (tls listeners: routes connections); case-insensitive

Globs are ALB's: ``*`` matches any run of characters (also none), ``?`` exactly one.

The router tells the caller what it needs (``needs_host``, ``needs_headers``,
``needs_query``, ``needs_source``) so that a listener without such rules does no
work for them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from fivenines.spec import FixedResponseSpec, RedirectSpec, RuleSpec

# --------------------------------------------------------------------------- globs


def glob_regex(patterns: Sequence[str], *, ignore_case: bool) -> re.Pattern[bytes]:
    """One regex matching any of the ALB globs in ``patterns`` (whole value).

    >>> r = glob_regex(["/api/*", "/v?/x"], ignore_case=False)
    >>> [bool(r.fullmatch(p)) for p in (b"/api/", b"/api/a/b", b"/v1/x", b"/v10/x", b"/API/a")]
    [True, True, True, False, False]
    """
    alts = []
    for p in patterns:
        out = []
        for ch in p:
            if ch == "*":
                out.append(".*")
            elif ch == "?":
                out.append(".")
            else:
                out.append(re.escape(ch))
        alts.append("".join(out))
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.compile(("(?:" + "|".join(alts) + ")").encode(), flags)


def ip_to_int(ip: bytes | str) -> tuple[int, int] | None:
    """``(version, integer)`` of an address, or None when it is not one.

    >>> ip_to_int(b"10.0.0.1"), ip_to_int("::1"), ip_to_int(b"")
    ((4, 167772161), (6, 1), None)
    """
    try:
        a = ipaddress.ip_address(ip.decode() if isinstance(ip, bytes) else ip)
    except ValueError:
        return None
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    return a.version, int(a)


# --------------------------------------------------------------------------- actions


@dataclass(slots=True)
class Forward:
    """Forward to one target group, or split by weight across several.

    :meth:`choose` is smooth weighted round robin over the groups: a 90/10 split
    sends exactly 9 of every 10 requests to the first group, interleaved.
    """

    groups: tuple[str, ...]
    weights: tuple[int, ...]
    stickiness: float | None = None  # seconds a client stays on the group it got
    rule: str = ""
    _current: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._current = [0] * len(self.groups)

    @property
    def single(self) -> str | None:
        return self.groups[0] if len(self.groups) == 1 else None

    def choose(self, sticky: str | None = None) -> str:
        """The group for the next request; ``sticky`` (from the client's cookie) wins when valid."""
        groups = self.groups
        if len(groups) == 1:
            return groups[0]
        if sticky is not None and sticky in groups and self.weights[groups.index(sticky)] > 0:
            return sticky
        cur, weights = self._current, self.weights
        best, total = 0, 0
        for i, w in enumerate(weights):
            cur[i] += w
            total += w
            if cur[i] > cur[best]:
                best = i
        cur[best] -= total
        return groups[best]


@dataclass(frozen=True, slots=True)
class Redirect:
    """``url`` with ``#{protocol}``, ``#{host}``, ``#{port}``, ``#{path}`` and ``#{query}`` replaced.

    As in ALB, ``#{path}`` is the path without its leading ``/`` and ``#{query}`` the
    query without its ``?``; an empty query leaves no trailing ``?``.

    >>> r = Redirect.compile(RedirectSpec(url="https://#{host}:8443/#{path}?#{query}", status=301))
    >>> r.location(b"http", b"example.com", b"80", b"/a/b", b"x=1")
    b'https://example.com:8443/a/b?x=1'
    >>> r.location(b"http", b"example.com", b"80", b"/a/b", b"")
    b'https://example.com:8443/a/b'
    """

    parts: tuple[bytes | int, ...]  # literal bytes, or an index into (protocol, host, port, path, query)
    status: int
    rule: str = ""

    _KEYS = ("protocol", "host", "port", "path", "query")

    @classmethod
    def compile(cls, spec: RedirectSpec, rule: str = "") -> Redirect:
        parts: list[bytes | int] = []
        pos = 0
        url = spec.url
        for m in re.finditer(r"#\{(protocol|host|port|path|query)\}", url):
            if m.start() > pos:
                parts.append(url[pos : m.start()].encode())
            parts.append(cls._KEYS.index(m.group(1)))
            pos = m.end()
        if pos < len(url):
            parts.append(url[pos:].encode())
        return cls(tuple(parts), spec.status, rule)

    def location(self, protocol: bytes, host: bytes, port: bytes, path: bytes, query: bytes) -> bytes:
        values = (protocol, host, port, path[1:] if path.startswith(b"/") else path, query)
        out = b"".join(values[p] if isinstance(p, int) else p for p in self.parts)
        if not query and out.endswith(b"?"):
            out = out[:-1]
        return out


@dataclass(frozen=True, slots=True)
class FixedResponse:
    """A pre-rendered response: ``head`` lacks only the final blank line (the listener adds Connection)."""

    status: int
    head: bytes
    body: bytes
    rule: str = ""

    @classmethod
    def compile(cls, spec: FixedResponseSpec, rule: str = "") -> FixedResponse:
        from http import HTTPStatus

        try:
            reason = HTTPStatus(spec.status).phrase
        except ValueError:
            reason = "Status"
        body = spec.body.encode()
        head = (
            f"HTTP/1.1 {spec.status} {reason}\r\nContent-Type: {spec.content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
        ).encode()
        return cls(spec.status, head, body, rule)


Action = Forward | Redirect | FixedResponse


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class RequestView:
    """What rules look at, as the listener parsed it (bytes, no copies made for routing)."""

    method: bytes
    path: bytes  # without the query
    query: bytes = b""
    host: bytes = b""
    headers: Mapping[bytes, bytes] | None = None  # lower-case names; only when needs_headers
    source: tuple[int, int] | None = None  # (version, address as int); only when needs_source
    sni: bytes = b""  # the ClientHello's server name (tls listeners)


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    methods: frozenset[bytes] | None
    path: re.Pattern[bytes] | None
    host: re.Pattern[bytes] | None
    headers: tuple[tuple[bytes, re.Pattern[bytes]], ...]
    query: tuple[tuple[bytes, re.Pattern[bytes]], ...]
    sources: tuple[tuple[int, int, int], ...]  # (version, network, mask)
    action: Action
    sni: re.Pattern[bytes] | None = None

    def matches(self, r: RequestView) -> bool:
        if self.methods is not None and r.method not in self.methods:
            return False
        if self.path is not None and self.path.fullmatch(_decode_path(r.path)) is None:
            return False
        if self.host is not None and self.host.fullmatch(_host_only(r.host)) is None:
            return False
        if self.headers:
            hs = r.headers or {}
            for name, rx in self.headers:
                v = hs.get(name)
                if v is None or rx.fullmatch(v) is None:
                    return False
        if self.query:
            params = parse_query(r.query)
            for qname, rx in self.query:
                vals = params.get(qname)
                if vals is None or not any(rx.fullmatch(v) for v in vals):
                    return False
        if self.sni is not None and self.sni.fullmatch(r.sni) is None:
            return False
        if self.sources:
            src = r.source
            if src is None:
                return False
            version, addr = src
            if not any(v == version and addr & mask == net for v, net, mask in self.sources):
                return False
        return True


def _decode_path(path: bytes) -> bytes:
    return unquote_to_bytes(path) if b"%" in path else path


def _host_only(host: bytes) -> bytes:
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[: end + 1] if end > 0 else host
    i = host.rfind(b":")
    return host[:i] if i >= 0 else host


def parse_query(query: bytes) -> dict[bytes, list[bytes]]:
    """Query parameters, names lower-cased, values percent-decoded.

    >>> parse_query(b"A=1&b=x%20y&a=2&flag")
    {b'a': [b'1', b'2'], b'b': [b'x y'], b'flag': [b'']}
    """
    out: dict[bytes, list[bytes]] = {}
    for part in query.split(b"&"):
        if not part:
            continue
        k, _, v = part.partition(b"=")
        k = unquote_to_bytes(k.replace(b"+", b" ")).lower()
        out.setdefault(k, []).append(unquote_to_bytes(v.replace(b"+", b" ")))
    return out


def compile_action(rule: RuleSpec, name: str) -> Action:
    if rule.redirect is not None:
        return Redirect.compile(rule.redirect, name)
    if rule.fixed_response is not None:
        return FixedResponse.compile(rule.fixed_response, name)
    weights = rule.forward_weights() or {}
    sticky = None if isinstance(rule.forward, str) or rule.forward is None else rule.forward.stickiness
    return Forward(tuple(weights), tuple(weights.values()), sticky, name)


def compile_rule(rule: RuleSpec, index: int) -> _Rule:
    m = rule.match
    name = rule.name or f"rule-{index + 1}"
    sources = []
    for cidr in m.source_ip or []:
        net = ipaddress.ip_network(cidr, strict=False)
        sources.append((net.version, int(net.network_address), int(net.netmask)))
    return _Rule(
        name=name,
        methods=frozenset(x.encode() for x in m.method) if m.method else None,
        path=glob_regex(m.path, ignore_case=False) if m.path else None,
        host=glob_regex(m.host, ignore_case=True) if m.host else None,
        headers=tuple((k.lower().encode(), glob_regex(v, ignore_case=True)) for k, v in (m.header or {}).items()),
        query=tuple((k.lower().encode(), glob_regex([v], ignore_case=True)) for k, v in (m.query or {}).items()),
        sources=tuple(sources),
        action=compile_action(rule, name),
        sni=glob_regex(m.sni, ignore_case=True) if m.sni else None,
    )


class Router:
    """A listener's rules, compiled; :meth:`route` returns the action for a request.

    >>> from fivenines.spec import RuleSpec
    >>> r = Router([RuleSpec.model_validate({"match": {"path": ["/api/*"]}, "forward": "api"})], "web")
    >>> r.route(RequestView(b"GET", b"/api/users")).groups, r.route(RequestView(b"GET", b"/")).groups
    (('api',), ('web',))
    """

    __slots__ = ("default", "needs_headers", "needs_host", "needs_query", "needs_source", "rules")

    def __init__(self, rules: Sequence[RuleSpec], default_group: str) -> None:
        self.rules = tuple(compile_rule(r, i) for i, r in enumerate(rules))
        self.default = Forward((default_group,), (1,), None, "default")
        self.needs_host = any(r.host is not None for r in self.rules)
        self.needs_headers = any(r.headers for r in self.rules)
        self.needs_query = any(r.query for r in self.rules)
        self.needs_source = any(r.sources for r in self.rules)

    @property
    def trivial(self) -> bool:
        """No rules: every request gets the default forward."""
        return not self.rules

    def route(self, request: RequestView) -> Action:
        for rule in self.rules:
            if rule.matches(request):
                return rule.action
        return self.default

    def groups(self) -> set[str]:
        """Every target group an action of this router may forward to."""
        out = set(self.default.groups)
        for r in self.rules:
            if isinstance(r.action, Forward):
                out.update(r.action.groups)
        return out

    def __repr__(self) -> str:
        return f"<Router {len(self.rules)} rules default={self.default.groups[0]}>"
