"""The client side of the HTTP/1.1 reverse proxy: one :class:`ClientConnection` per downstream connection.

It reads requests (httptools, or the express lane for a plain whole head), rewrites each head
(:func:`~fivenines.core.heads.rewrite_request_head`), routes it, and hands it to
:class:`~fivenines.core.exchange.Exchange` — the state machine that decides everything about
its life — through :class:`~fivenines.proxy.forward.Forwarder`, the half of this class that
carries out what the machine decides.

* keep-alive on both sides; pipelined requests answered in order (one exchange upstream at a
  time per connection, later ones wait with reading paused);
* bodies streamed both ways with back-pressure; a chunked request body is checked (up to
  DEFER_LIMIT) before its head goes, so that broken framing never reaches a target;
* hop-by-hop headers removed, ``X-Forwarded-For``/``-Proto``/``-Port`` and ``X-Request-Id``
  added; ``Expect: 100-continue`` and ``Connection: Upgrade`` (WebSocket) forwarded;
* failures before a byte reached the client retried on another target when
  :mod:`fivenines.core.retry` says so, else 502 (504 when the target did not answer in time);
  hedges raced; nothing retried after a byte reached the client;
* timeouts: connect, client header (408), client idle, per try, whole request, tunnel idle.

No logging on the hot path: failures are counted (listener, group, target) and logged at
debug level only.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Final

import httptools

from fivenines.core.balance import key_hash
from fivenines.core.exchange import ABORT, BUFFER, WRITE_BODY, ExchangeState
from fivenines.core.framing import Limits, express_request, native
from fivenines.core.heads import local_head, rewrite_request_head, status_reply, with_identity
from fivenines.core.retry import Failure
from fivenines.core.route import FixedResponse, Forward, Redirect, RequestView, Router, ip_to_int
from fivenines.errors import InvalidTransition
from fivenines.proxy.backend import BackendGroup
from fivenines.proxy.forward import P_BUFFER, P_PIPELINE, Forwarder
from fivenines.proxy.listener import Listener, ProxySettings
from fivenines.proxy.plain import plain_server
from fivenines.proxy.upstream import MAX_HEAD, HttpExchange

log = logging.getLogger("fivenines.proxy")

BUFFER_LIMIT: Final = 256 * 1024
DEFER_LIMIT: Final = 64 * 1024  # a chunked request body is validated up to this much before its head is sent

_ids: Final = itertools.count(1)
_ID_PREFIX: Final = os.urandom(4).hex().encode() + b"-"


_NATIVE_ID: Final = native("request_id")


def _new_id() -> bytes:
    """An ``X-Request-Id``: this process's random prefix and its next request number in hex (the C
    module's counter when it is loaded: the same numbers, in one call)."""
    if _NATIVE_ID is not None:
        return _NATIVE_ID(_ID_PREFIX)  # type: ignore[no-any-return]
    return _ID_PREFIX + hex(next(_ids))[2:].encode()  # (a third of the instructions of b"%x" %)


_NATIVE_REQUEST: Final = native("express_request")


def express_forward(data: bytes, limits: Limits, peer_ip: bytes,
                    tail: bytes) -> tuple[bytes, bytes, bytes, bytes, bool] | None:
    """:func:`~fivenines.core.framing.express_request` with the head as the express lane forwards
    it: then ``X-Request-Id`` (a new id), ``X-Forwarded-For: peer_ip`` and ``tail`` (the rest and
    the blank line); built by the C lane in one call and one allocation when it is loaded."""
    if _NATIVE_REQUEST is not None:
        return _NATIVE_REQUEST(data, limits.max_header_bytes, limits.max_request_line,  # type: ignore[no-any-return]
                               limits.max_headers, _ID_PREFIX, peer_ip, tail)
    got = express_request(data, limits)
    if got is None:
        return None
    method, url, host, head, keep_alive = got
    return method, url, host, b"".join((head, b"X-Request-Id: ", _new_id(), b"\r\nX-Forwarded-For: ", peer_ip,
                                        tail)), keep_alive


class ClientConnection(Forwarder):
    """A downstream (client) connection."""

    __slots__ = ("_admitted", "_fresh", "_head_bytes", "_headers", "_parser", "_parsing", "_peer", "_url",
                 "head_started", "identity")

    def __init__(self, listener: Listener) -> None:
        super().__init__(listener)
        # made when a request first takes the full path: a connection whose requests all take the
        # express lane never needs one (and the parser, holding this protocol, made a cycle for the GC)
        self._parser: httptools.HttpRequestParser | None = None
        self._fresh = True  # the parser is between messages with nothing buffered: the express lane may run
        self._parsing: HttpExchange | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._admitted = False
        self._peer = ""  # the client's address as uvloop gave it: the admission's key (its hash kept)
        self.head_started: float | None = None
        # https with mutual TLS (set by proxy/tls_serve.py after the handshake): the lower-case prefix
        # of the identity headers, and the headers to forward; a client's own with the prefix are dropped
        self.identity: tuple[bytes, list[tuple[bytes, bytes]]] | None = None

    def __repr__(self) -> str:
        mode = " tunnel" if self._tunnel is not None else ""
        states = ",".join(ex.state.value for ex in self._exchanges)
        return f"<ClientConnection {self._peer_ip.decode()} exchanges=[{states}] paused={self._paused}{mode}>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if peer else ""
        self._peer_ip = self._peer.encode()
        listener = self.listener
        listener.counters.connections += 1
        if not listener.admission.admit(self._peer):
            listener.counters.refused += 1
            self._closing = True
            transport.write(status_reply(503, extra=b"Retry-After: 1\r\n"))  # type: ignore[attr-defined]
            transport.close()
            return
        self._admitted = True
        listener.clients.add(self)
        self.last_active = listener.tick
        self.head_started = listener.tick  # the first request head is due within client_header too

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if not self._admitted:
            return
        self.listener.admission.release(self._peer)
        clients = self.listener.clients
        clients.discard(self)
        if not clients:
            self.listener.no_clients.set()
        for ex in self._exchanges:
            self._carry_out(ex, ex.client_gone())
        self._exchanges.clear()
        self._wbuf = []

    def eof_received(self) -> bool | None:
        self._eof = True
        tunnel = self._tunnel
        if tunnel is not None:
            tunnel.write_eof()
            # half-close: the target may still answer; both directions ended: close
            return None if tunnel.eof_seen else True
        if self._exchanges:
            # a client that half-closed after its request still gets the answer
            self._closing = True
            return True
        self.flush()  # an answer finished in this round waits in _wbuf (flush_soon): out before the close
        return None

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self._upgraded:
            self._tunnel_in(data)
            return
        if (self._fresh and not self._exchanges and data[-4:] == b"\r\n\r\n" and not self._closing
                and self._express(data)):
            return
        if self._parsing is None:  # a request head is being read: it is bounded
            self._head_bytes += len(data)  # (reset when a head completes)
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpRequestParser(self)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            ex = self._exchanges[-1] if self._exchanges else None
            if ex is None or not ex.upgrade:
                self._fail_protocol(501)  # CONNECT, or an upgrade answered already
                return
            self._upgraded = True
            rest = data[exc.args[0]:]
            if rest:
                self._tunnel_in(rest)
        except httptools.HttpParserError as exc:
            why = exc.__context__
            status = 400
            if isinstance(why, _Refused):
                if why.status == 0:
                    return  # answered and closing already
                status = why.status
            elif isinstance(why, InvalidTransition):
                log.error("client %s: %s", self._peer_ip.decode(), why)
            self.listener.counters.rejected += 1
            self._fail_protocol(status)
            return
        if self._head_bytes > MAX_HEAD and self._parsing is None:
            self.listener.counters.rejected += 1
            self._fail_protocol(414 if len(self._url) > self.listener.settings.limits.max_request_line else 431)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._exchanges:
            conn = self._exchanges[0].conn
            if conn is not None:
                conn.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._exchanges:
            conn = self._exchanges[0].conn
            if conn is not None:
                conn.resume_reading()

    def on_message_begin(self) -> None:
        self._fresh = False
        self._url = b""
        self._headers = []
        self.head_started = self.listener.tick

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._parsing is not None:
            return  # a trailer of a chunked body: dropped (we do not forward trailers)
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_started = None
        parser = self._parser
        assert parser is not None  # (called by it)
        listener = self.listener
        s = listener.settings
        method = parser.get_method()
        version = parser.get_http_version()
        if self.identity is not None:
            self._headers = with_identity(self._headers, *self.identity)
        req = rewrite_request_head(method, self._url, version, self._headers, parser.should_upgrade(), self._peer_ip,
                                   s.proto, listener.port_bytes, s.limits, _new_id, self._head_bytes)
        self._head_bytes = 0
        if req.status:
            # Refused before anything is forwarded; the parser is stopped here, so no byte
            # of this request (or any after it) reaches a target. Answered, then closed.
            log.debug("refused request from %s: %d %s", self._peer_ip.decode(), req.status, req.reason)
            raise _Refused(req.status, req.reason)
        ex = HttpExchange(method, req.head, req.chunked, parser.should_keep_alive(), version == "1.0")
        ex.upgrade = req.upgrade
        ex.expect = req.expect
        ex.idempotent = req.idempotent
        if s.request_timeout:
            ex.started = listener.time()  # (CLOCK_MONOTONIC, as the loop's time the sweep reads)
        rate = listener.rate
        if rate is not None and not rate.allow(self._peer, listener.tick):
            listener.counters.rate_limited += 1
            ex.answer_here(local_head(429), b"Too Many Requests\n")
        elif method == b"CONNECT":
            ex.answer_here(local_head(501), b"Not Implemented\n")
        elif listener.router is None:
            ex.group = listener.group_for()
        else:
            self._route(ex, method, req.target, req.host, req.cookies)
        group = ex.group
        if group is not None:
            if group.hash_on is not None:
                ex.key = self._hash_key(group, req.target, req.cookies)
            if group.stickiness is not None:
                ex.sticky = _cookie(req.cookies, group.stickiness.cookie)
        self._parsing = ex
        listener.counters.requests += 1
        self._exchanges.append(ex)
        if req.chunked and not req.expect and not req.upgrade and ex.local is None:
            # Hold the head until the body has been parsed (whole, or DEFER_LIMIT of it), so that a
            # request whose chunked framing turns out invalid never reaches a target at all.
            ex.deferred = True
        if len(self._exchanges) == 1:
            if not ex.deferred:
                self._dispatch(ex)
        else:
            self._pause(P_PIPELINE)

    def _express(self, data: bytes) -> bool:
        """The express lane: ``data`` is one whole, plain request head (see
        :func:`~fivenines.core.framing.express_request`) for a listener and group that need
        nothing more from it than its method, target and host. Forwarded as the full path
        would forward it; False (nothing done) otherwise."""
        listener = self.listener
        if not listener.express or self.identity is not None:  # (mutual TLS: the full path drops forged identities)
            return False
        group = listener.group_for()
        if group is not None and (group.stickiness is not None
                                  or (group.hash_on is not None and group.hash_on[0] not in _EXPRESS_HASH)):
            return False  # the group reads cookies or headers
        got = express_forward(data, listener.settings.limits, self._peer_ip, listener.forwarded_tail)
        if got is None:
            return False
        method, url, _host, forwarded, keep_alive = got
        ex = HttpExchange(method, forwarded, False, keep_alive, False)
        ex.request_done = True  # (no body)
        if listener.settings.request_timeout:
            ex.started = listener.time()
        ex.group = group
        if group is not None and group.hash_on is not None:
            ex.key = self._hash_key(group, url, None)
        self.head_started = None
        self._head_bytes = 0
        listener.counters.requests += 1
        self._exchanges.append(ex)
        self._dispatch(ex)
        return True

    def _route(self, ex: HttpExchange, method: bytes, url: bytes, host: bytes, cookies: list[bytes] | None) -> None:
        listener = self.listener
        router = listener.router
        assert router is not None
        path, _, query = url.partition(b"?")
        headers: dict[bytes, bytes] | None = None
        if router.needs_headers:
            headers = {}
            for name, value in self._headers:
                lname = name.lower()
                headers[lname] = headers[lname] + b"," + value if lname in headers else value
        source = ip_to_int(self._peer_ip) if router.needs_source else None
        action = router.route(RequestView(method, path, query, host, headers, source))
        if isinstance(action, Forward):
            gname = action.single
            if gname is None:
                sticky: str | None = None
                if action.stickiness:
                    got = _cookie(cookies, GROUP_COOKIE)
                    sticky = got.decode("latin-1") if got else None
                gname = action.choose(sticky)
                if action.stickiness:
                    ex.group_cookie = b"Set-Cookie: %s=%s; Max-Age=%d; Path=/; HttpOnly\r\n" % (
                        GROUP_COOKIE, gname.encode(), int(action.stickiness))
            ex.group = listener.groups.get(gname)
        elif isinstance(action, Redirect):
            listener.counters.redirects += 1
            loc = action.location(listener.settings.proto, _host_only(host), listener.port_bytes, path, query)
            ex.answer_here(b"HTTP/1.1 %d %s\r\nLocation: %s\r\nContent-Length: 0\r\n"
                           % (action.status, _REDIRECT_REASONS.get(action.status, b"Redirect"), loc), b"")
        elif isinstance(action, FixedResponse):
            listener.counters.fixed += 1
            ex.answer_here(action.head, action.body)

    def _hash_key(self, group: BackendGroup, url: bytes, cookies: list[bytes] | None) -> int | None:
        assert group.hash_on is not None
        kind, arg = group.hash_on
        if kind == "ip":
            return key_hash(self._peer_ip)
        if kind == "uri":
            return key_hash(url)
        if kind == "cookie":
            v = _cookie(cookies, arg)
            return key_hash(v) if v else None
        for name, value in self._headers:
            if name.lower() == arg:
                return key_hash(value)
        return None

    def on_body(self, body: bytes) -> None:
        ex = self._parsing
        if ex is None or not body:
            return
        max_body = self.listener.settings.limits.max_body
        if max_body is not None:
            ex.received += len(body)
            if ex.received > max_body:
                self._refuse_body(ex)
        if ex.chunked:
            body = b"%x\r\n%s\r\n" % (len(body), body)
        self._send_body(ex, body)

    def _refuse_body(self, ex: HttpExchange) -> None:
        """A body went over ``limits.max_body`` (a chunked one; a declared length was refused at once)."""
        self.listener.counters.rejected += 1
        if ex.response_started or not self._exchanges or self._exchanges[0] is not ex:
            raise _Refused(413, "body too large")  # answered after what is in flight, or closed mid-response
        self._parsing = None
        self._carry_out(ex, ex.refuse_body(local_head(413), b"Content Too Large\n"))  # a target got part: it goes
        raise _Refused(0, "body too large")  # answered already

    def on_message_complete(self) -> None:
        self._fresh = True
        ex = self._parsing
        self._parsing = None
        if ex is None:
            return
        if ex.chunked:
            self._send_body(ex, b"0\r\n\r\n")
        self._carry_out(ex, ex.body_done())
        if ex.deferred:
            self._undefer(ex)

    def _send_body(self, ex: HttpExchange, data: bytes) -> None:
        acts = ex.body_chunk(data, self.listener.settings.replay_limit)
        if acts & WRITE_BODY:
            conn = ex.conn
            if conn is not None:
                conn.write(data)
        elif acts & BUFFER:
            if ex.deferred and ex.buffered >= DEFER_LIMIT:
                self._undefer(ex)  # a large upload: validated so far, streamed from here
            elif ex.buffered > BUFFER_LIMIT:
                self._pause(P_BUFFER)
        else:  # answered (or to be answered) here, or the target replied early: dropped
            self.last_active = self.listener.tick

    def _undefer(self, ex: HttpExchange) -> None:
        ex.deferred = False
        if self._exchanges and self._exchanges[0] is ex and ex.state is ExchangeState.QUEUED:
            self._dispatch(ex)

    def _tunnel_in(self, data: bytes) -> None:
        """Bytes after an upgrade request: to the target as they come."""
        self.last_active = self.listener.tick
        tunnel = self._tunnel
        if tunnel is not None:
            tunnel.write(data)
            return
        ex = self._exchanges[-1] if self._exchanges else None
        if ex is None or ex.done:
            return
        if not ex.request_done:
            self._carry_out(ex, ex.body_done())  # what follows the upgrade request is not its body
        self._send_body(ex, data)

    def _fail_protocol(self, status: int) -> None:
        """Unparseable input: answer ``status`` (after what is in flight) and close."""
        self._fresh = False  # the parser stopped inside a message
        self._pause(P_PIPELINE)
        broken = self._parsing  # the error is inside this request's body: it can never complete
        self._parsing = None
        pending = [ex for ex in self._exchanges if not ex.done]
        if broken is not None and broken in pending:
            acts = broken.cancel()  # a target got part of it: that connection goes
            self._carry_out(broken, acts)
            if acts & ABORT:
                return  # its answer had begun: the connection is cut
            pending.remove(broken)
            self._exchanges = list(pending)
        if not pending:
            self.flush()
            self._transport.write(status_reply(status))
            self._linger()
        else:
            for ex in pending[1:]:
                self._carry_out(ex, ex.cancel())
            del pending[1:]
            self._exchanges = list(pending)
            pending[0].close_after()
            self._error_after = status

    def busy(self) -> bool:
        return bool(self._exchanges)

    # (proxy/plain.py: what its transport asks of the protocol)
    def reads_more(self) -> bool:
        """After the first bytes of a plain connection: is there more to read? Not once every request
        read is whole and the last one closes the connection (what a client sends after it is never read)."""
        exs = self._exchanges
        if not exs or self._parsing is not None or not self._fresh:
            return True
        last = exs[-1]
        return last.keep_alive or not last.request_done or self._upgraded

    def rebind(self, transport: asyncio.BaseTransport) -> None:
        """The loop's stream transport took the connection over from the plain one (same socket, same state)."""
        self._transport = transport  # type: ignore[assignment]

    def reading_paused(self) -> bool:
        return bool(self._paused) and not self._closing

    def check_timeouts(self, now: float, s: ProxySettings) -> None:
        if self._tunnel is not None:
            if now - self.last_active > s.tunnel_timeout:
                self.abort()
            return
        if self._exchanges:
            ex = self._exchanges[0]
            if ex.state is ExchangeState.DISCARDING and now - self.last_active > s.idle_timeout:
                self.abort()
                return
            if ex.overdue(now, s.request_timeout):
                self._give_up_now(ex, ex.deadline(), Failure.TIMEOUT, "request timeout")
            return
        if self.head_started is not None:
            if now - self.head_started > s.header_timeout:
                self._transport.write(status_reply(408))
                self.abort()
        elif now - self.last_active > s.idle_timeout:
            self.abort()

    def close_when_idle(self) -> None:
        self._closing = True
        if not self._exchanges:
            self._transport.close()

class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request refused by the framing rules or
    limits: ``status`` is the answer still to make (0: answered already)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _cookie(values: list[bytes] | None, name: bytes) -> bytes | None:
    """The value of cookie ``name`` in Cookie header values."""
    if not values:
        return None
    for v in values:
        for part in v.split(b";"):
            k, sep, val = part.strip().partition(b"=")
            if sep and k == name:
                return val.strip().strip(b'"')
    return None


def _host_only(host: bytes) -> bytes:
    i = host.rfind(b":")
    return host[:i] if i > 0 and not host.endswith(b"]") else host


GROUP_COOKIE: Final = b"FIVENINES_TG"
_EXPRESS_HASH: Final = frozenset({"ip", "uri"})  # hash keys the express lane can compute (no headers needed)
_REDIRECT_REASONS: Final = {
    301: b"Moved Permanently",
    302: b"Found",
    303: b"See Other",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
}


def http_listener(group_for: Callable[[], BackendGroup | None], port: int, settings: ProxySettings | None = None,
                  *, router: Router | None = None, groups: Mapping[str, BackendGroup] | None = None) -> Listener:
    """An HTTP listener whose connections are :class:`ClientConnection`, accepted on its own
    listening socket (:mod:`fivenines.proxy.plain`; an https listener replaces that hook)."""
    listener = Listener(group_for, port, settings, router=router, groups=groups, client=ClientConnection)

    def start_server(loop: asyncio.AbstractEventLoop, host: str, port: int, reuse_port: bool, backlog: int,
                     sock: Any) -> Any:
        return plain_server(loop, lambda: ClientConnection(listener), host, port, reuse_port, backlog, sock)

    listener.start_server = start_server
    return listener
