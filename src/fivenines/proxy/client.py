"""The client side of the HTTP/1.1 reverse proxy: one :class:`ClientConnection` per downstream connection.

It parses requests (httptools, or the express lane for a plain whole head), rewrites each head
(:func:`~fivenines.core.heads.rewrite_request_head`), routes it, and hands it to
:class:`~fivenines.core.exchange.Exchange` — the state machine that decides everything about
its life. This module only feeds the machine inputs and carries out the actions it returns:
picking targets, taking or making upstream connections, writing bytes, counting, closing.

* keep-alive on both sides; pipelined requests answered in order (one exchange upstream at a
  time per connection, later ones wait with reading paused);
* bodies streamed both ways with back-pressure; the writes of one upstream read coalesced
  into one client write;
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
from collections import deque

import httptools

from fivenines.core.balance import key_hash
from fivenines.core.detect import Outcome
from fivenines.core.exchange import (
    ABORT,
    ANSWERED,
    ARM,
    BUFFER,
    CONNECT_HEDGE,
    FINISH,
    PARK,
    PICK,
    PICK_HEDGE,
    PROMOTE,
    RELAY_BODY,
    RELAY_HEAD,
    RELAY_INTERIM,
    RELEASE,
    RELEASE_HEDGE,
    REPLY_ERROR,
    REPLY_LOCAL,
    RETRY,
    SEND,
    SEND_HEDGE,
    TUNNEL,
    WRITE_BODY,
    ExchangeState,
)
from fivenines.core.framing import express_request
from fivenines.core.heads import (
    UPGRADE_VALUE,
    chunked_header,
    local_head,
    rewrite_request_head,
    status_reply,
    strip_hop_by_hop,
)
from fivenines.core.retry import Failure, RetryPolicy, Verdict
from fivenines.core.route import FixedResponse, Forward, Redirect, RequestView, ip_to_int
from fivenines.errors import InvalidTransition
from fivenines.proxy.backend import Backend, BackendGroup
from fivenines.proxy.listener import Listener, ProxySettings
from fivenines.proxy.upstream import (
    DROP,
    MAX_HEAD,
    RELAY,
    RELAY_CHUNKED,
    ClientSide,
    HttpExchange,
    UpstreamConnection,
)

log = logging.getLogger("fivenines.proxy")

# core.detect.Outcome of a failed attempt (ints: the passive hook allocates nothing)
_OUTCOME = {
    Failure.CONNECT: int(Outcome.CONNECT),
    Failure.CONNECT_TIMEOUT: int(Outcome.CONNECT),
    Failure.RESET: int(Outcome.RESET),
    Failure.STALE: int(Outcome.RESET),
    Failure.PROTOCOL: int(Outcome.RESET),
    Failure.TIMEOUT: int(Outcome.TIMEOUT),
    Failure.STATUS: int(Outcome.HTTP_5XX),
}
_OK, _HTTP_5XX = int(Outcome.OK), int(Outcome.HTTP_5XX)
_RELEASES = RELEASE | RELEASE_HEDGE | PROMOTE

# Pause reasons for the client transport (a bit set, so each is undone independently).
_P_PIPELINE = 1  # a later pipelined request waits for the current one
_P_UPSTREAM = 2  # the upstream's write buffer is full
_P_BUFFER = 4  # request body waits for an upstream connection

BUFFER_LIMIT = 256 * 1024
DEFER_LIMIT = 64 * 1024  # a chunked request body is validated up to this much before its head is sent
LINGER = 2.0  # after an error reply, input is read and dropped this long before the connection closes

_ids = itertools.count(1)
_ID_PREFIX = os.urandom(4).hex().encode()


def _new_id() -> bytes:
    return _ID_PREFIX + b"-%x" % next(_ids)


class ClientConnection(ClientSide):
    """A downstream (client) connection."""

    __slots__ = (
        "_admitted",
        "_closing",
        "_eof",
        "_error_after",
        "_exchanges",
        "_fresh",
        "_head_bytes",
        "_headers",
        "_lingering",
        "_parser",
        "_parsing",
        "_paused",
        "_peer_ip",
        "_transport",
        "_tunnel",
        "_upgraded",
        "_url",
        "_wbuf",
        "_wdeferred",
        "_write_paused",
        "head_started",
        "last_active",
        "listener",
    )

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self._transport: asyncio.Transport = None  # type: ignore[assignment]
        # made when a request first takes the full path: a connection whose requests all take the
        # express lane never needs one (and the parser, holding this protocol, made a cycle for the GC)
        self._parser: httptools.HttpRequestParser | None = None
        self._exchanges: deque[HttpExchange] = deque()
        self._fresh = True  # the parser is between messages with nothing buffered: the express lane may run
        self._parsing: HttpExchange | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._paused = 0
        self._write_paused = False
        self._closing = False
        self._eof = False
        self._upgraded = False  # the parser saw an upgrade request: later bytes are tunnel bytes
        self._tunnel: UpstreamConnection | None = None  # set once the target switched protocols
        self._peer_ip = b""
        self._wbuf: list[bytes] = []
        self._wdeferred = False  # the listener will write _wbuf at the end of this loop round
        self._head_bytes = 0
        self._admitted = False
        self._lingering = False
        self._error_after = 0  # status to answer once the request in flight is answered
        self.last_active = 0.0
        self.head_started: float | None = None

    def __repr__(self) -> str:
        mode = " tunnel" if self._tunnel is not None else ""
        states = ",".join(ex.state.value for ex in self._exchanges)
        return f"<ClientConnection {self._peer_ip.decode()} exchanges=[{states}] paused={self._paused}{mode}>"

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._peer_ip = peer[0].encode() if peer else b""
        listener = self.listener
        listener.counters.connections += 1
        if not listener.admission.admit(self._peer_ip.decode()):
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
        self.listener.admission.release(self._peer_ip.decode())
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

    # ------------------------------------------------------------------ parser callbacks

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
            ex.started = asyncio.get_running_loop().time()
        rate = listener.rate
        if rate is not None and not rate.allow(self._peer_ip.decode(), listener.tick):
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
            self._pause(_P_PIPELINE)

    def _express(self, data: bytes) -> bool:
        """The express lane: ``data`` is one whole, plain request head (see
        :func:`~fivenines.core.framing.express_request`) for a listener and group that need
        nothing more from it than its method, target and host. Forwarded as the full path
        would forward it; False (nothing done) otherwise."""
        listener = self.listener
        if not listener.express:
            return False
        got = express_request(data, listener.settings.limits)
        if got is None:
            return False
        group = listener.group_for()
        if group is not None and (group.stickiness is not None
                                  or (group.hash_on is not None and group.hash_on[0] not in _EXPRESS_HASH)):
            return False  # the group reads cookies or headers
        method, url, _host, head, keep_alive = got
        ex = HttpExchange(method, b"".join((head, b"X-Request-Id: ", _new_id(), b"\r\nX-Forwarded-For: ",
                                            self._peer_ip, listener.forwarded_tail)), False, keep_alive, False)
        ex.request_done = True  # (no body)
        if listener.settings.request_timeout:
            ex.started = asyncio.get_running_loop().time()
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

    # ------------------------------------------------------------------ request path

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
                self._pause(_P_BUFFER)
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

    def _dispatch(self, ex: HttpExchange) -> None:
        """Its turn came: answer it here, or pick a target."""
        acts = ex.dispatch()
        if acts & PICK:
            self._pick(ex)
        else:
            self._carry_out(ex, acts)

    def _pick(self, ex: HttpExchange) -> None:
        """Choose a target for the next attempt (first try or retry) and a connection to it."""
        group = ex.group
        backend = group.pick(ex.tried, ex.key, ex.sticky) if group is not None else None
        if backend is None:
            if ex.last_failure is None:
                self._count_failed(ex)  # no target serves: 503, answered once the request is read
            self._carry_out(ex, ex.no_target())
            return
        assert group is not None
        listener = self.listener
        ex.attempt(listener.time())  # CONNECT
        if ex.attempts == 1:
            group.budget.deposit()
            group.counters.requests += 1
        ex.backend = backend
        backend.in_flight += 1
        backend.requests += 1
        conn = backend.take_idle()
        if conn is not None:
            assert isinstance(conn, UpstreamConnection)
            self._ready(ex, conn, ex.primary, True)
        else:
            asyncio.get_running_loop().create_task(self._connect(ex, backend, ex.primary))

    async def _connect(self, ex: HttpExchange, backend: Backend, token: int) -> None:
        loop = asyncio.get_running_loop()
        backend.connections += 1
        try:
            async with asyncio.timeout(self.listener.settings.connect_timeout):
                _, conn = await loop.create_connection(lambda: UpstreamConnection(backend), backend.host, backend.port)
        except TimeoutError:
            self._attempt_failed(ex, token, Failure.CONNECT_TIMEOUT, f"connect to {backend.address}: timeout")
            return
        except OSError as exc:
            self._attempt_failed(ex, token, Failure.CONNECT, f"connect to {backend.address}: {exc}")
            return
        if self._transport.is_closing():
            backend.put_idle(conn, self.listener.tick)
            return
        self._ready(ex, conn, token, False)

    def _ready(self, ex: HttpExchange, conn: UpstreamConnection, token: int, reused: bool) -> None:
        """The connection for attempt (or hedge) ``token`` is at hand: the request goes on it."""
        group = ex.group
        acts = ex.ready(token, (group.hedge_delay or 0.0) if group is not None else 0.0)
        listener = self.listener
        if acts & PARK:  # made for an attempt that is over (answered, retried, lost its race)
            conn.backend.put_idle(conn, listener.tick)
            return
        timeout = group.retry.per_try_timeout if group is not None else None
        conn.start(self, ex, token, reused, timeout or listener.settings.response_timeout)
        if acts & SEND_HEDGE:
            ex.hedge_conn = conn
            conn.write(b"".join([ex.head, *(ex.replay or ())]))
            return
        if not acts & SEND:
            return
        ex.conn = conn
        if ex.hedge_at:
            listener.hedging[ex] = self
        if ex.body:
            conn.write(b"".join([ex.head, *ex.take_body()]))
            self._resume(_P_BUFFER)
        else:
            conn.write_soon(ex.head, listener)
        if self._write_paused:
            conn.pause_reading()

    def _policy(self, ex: HttpExchange) -> RetryPolicy:
        forced = self.listener.settings.retry
        if forced is not None:
            return forced
        return ex.group.retry if ex.group is not None else RetryPolicy()

    def _attempt_failed(self, ex: HttpExchange, token: int, failure: Failure, detail: str) -> None:
        """Attempt (or hedge) ``token`` failed: the machine decides what follows."""
        role = _role(ex, token)
        if role is None:
            return  # an attempt that is over already
        group = ex.group
        if self._closing and self._transport.is_closing():
            acts = ex.client_gone()  # nobody to answer: the attempts go
        else:
            acts = ex.failed(token, failure, self._policy(ex), group.budget if group is not None else None)
            self._count_verdict(ex)
        self._failed(ex, acts, role, failure, detail)

    def _failed(self, ex: HttpExchange, acts: int, role: tuple[bool, Backend | None, float], failure: Failure,
                detail: str) -> None:
        """Carry out what the machine decided on a failed attempt (``role``: was it the hedge, its
        target, when it was sent), counting and observing it."""
        hedge, backend, sent = role
        self._release_part(ex, acts)
        group = ex.group
        if backend is not None and failure is not Failure.STALE:
            backend.errors += 1
            if not acts & ABORT:
                if not hedge:
                    ex.tried.append(backend)
                # may eject the target: it leaves the serving set before a retry picks
                self._observe(group, backend, _OUTCOME[failure], sent)
        self._after_failure(ex, acts, backend, failure, detail)

    def _after_failure(self, ex: HttpExchange, acts: int, backend: Backend | None, failure: Failure,
                       detail: str) -> None:
        if acts & ABORT:
            self._count_failed(ex)  # a byte had reached the client: the connection is cut
        if acts & RETRY:
            if ex.verdict is Verdict.RETRY:
                self.listener.counters.retries += 1
                if ex.group is not None:
                    ex.group.counters.retries += 1
                if backend is not None:
                    backend.retries += 1
            log.debug("retrying after %s on %s: %s", failure.value, backend.id if backend else "?", detail)
        elif acts & REPLY_ERROR:
            log.debug("request failed (%s, %s): %s", failure.value, ex.verdict, detail)
        self._carry_out(ex, acts & ~_RELEASES)

    def _give_up_now(self, ex: HttpExchange, acts: int, failure: Failure, detail: str) -> None:
        """The whole-request deadline or a deregistration cut (not the target's doing: not observed)."""
        backend = ex.backend
        self._release_part(ex, acts)
        if backend is not None:
            backend.errors += 1
        self._after_failure(ex, acts, backend, failure, detail)

    def _release_part(self, ex: HttpExchange, acts: int) -> None:
        if acts & RELEASE:
            self._release(ex, False)
        if acts & RELEASE_HEDGE:
            self._release_hedge(ex)
        if acts & PROMOTE:
            self._promote(ex)

    def _carry_out(self, ex: HttpExchange, acts: int, reusable: bool = False) -> None:
        """Carry out the machine's actions for ``ex`` (those that need nothing but the exchange)."""
        if not acts:
            return
        if acts & _RELEASES:
            if acts & RELEASE:
                self._release(ex, reusable)
            if acts & RELEASE_HEDGE:
                self._release_hedge(ex)
            if acts & PROMOTE:
                self._promote(ex)
        if acts & PICK:
            self._pick(ex)
        if acts & ARM and ex.body_size and not ex.upgrade and ex.conn is not None:
            ex.conn.arm()  # the per-try timeout runs from the request's last byte
        if acts & REPLY_LOCAL:
            self._write_local(ex)
        elif acts & REPLY_ERROR:
            self._write_error(ex)
        if acts & ANSWERED:
            self.listener.counters.responses += 1
            if not acts & FINISH:
                self.flush()  # answered before its body ended: the rest is read and dropped
        if acts & FINISH:
            self._finish(ex)
        if acts & ABORT:
            self.flush()
            self.abort()

    def _release(self, ex: HttpExchange, reusable: bool) -> None:
        """The attempt is over: its target's in-flight count down, its connection to the pool or closed."""
        hedging = self.listener.hedging
        if hedging:
            hedging.pop(ex, None)
        backend, conn = ex.backend, ex.conn
        ex.conn = None
        if backend is not None:
            backend.in_flight -= 1
            ex.backend = None
        if conn is not None:
            conn.finish(reusable and not ex.upgrade)
            if self._paused & _P_UPSTREAM:
                self._resume(_P_UPSTREAM)  # that connection's full buffer no longer holds us back

    def _release_hedge(self, ex: HttpExchange) -> None:
        conn, backend = ex.hedge_conn, ex.hedge_backend
        ex.hedge_conn = ex.hedge_backend = None
        if backend is not None:
            backend.in_flight -= 1
        if conn is not None:
            conn.finish(False)

    def _promote(self, ex: HttpExchange) -> None:
        """The hedge becomes the attempt; the first attempt's connection is closed."""
        old_conn, old_backend = ex.conn, ex.backend
        ex.conn, ex.backend = ex.hedge_conn, ex.hedge_backend
        ex.hedge_conn = ex.hedge_backend = None
        if old_backend is not None:
            old_backend.in_flight -= 1
        if old_conn is not None:
            old_conn.finish(False)

    def _count_verdict(self, ex: HttpExchange) -> None:
        if ex.verdict is Verdict.BUDGET_EXHAUSTED and ex.group is not None:
            ex.group.counters.budget_exhausted += 1

    def _count_failed(self, ex: HttpExchange) -> None:
        self.listener.counters.failed += 1
        if ex.group is not None:
            ex.group.counters.failed += 1

    # ------------------------------------------------------------------ what the upstream side reports

    def upstream_response(self, conn: UpstreamConnection, status: int, head: bytes, lower: bytes,
                          body: bytes) -> None:
        ex = conn.exchange
        assert ex is not None
        group = ex.group
        acts = ex.response_head(conn.token, status, self._policy(ex), group.budget if group is not None else None)
        if acts & RELAY_HEAD:
            self._observed(ex, status)
            self._relay_head(ex, status, head, lower, True)
            self._wbuf.append(body)
            self._response_done(ex, conn, ex.request_done)
        else:
            self._carry_out(ex, acts)

    def upstream_head(self, conn: UpstreamConnection, status: int, head: bytes, lower: bytes) -> int:
        ex = conn.exchange
        assert ex is not None
        token = conn.token
        role = _role(ex, token)
        group = ex.group
        acts = ex.response_head(token, status, self._policy(ex), group.budget if group is not None else None)
        if status >= 500:
            self._count_verdict(ex)
        if not acts & RELAY_HEAD:  # retried, or one of two racing attempts answered 5xx: the other goes on
            if role is not None:
                backend = role[1]
                if acts & RETRY and backend is not None:
                    backend.observe(status, self.listener.time() - role[2])  # the target's answer, retried
                self._failed(ex, acts, role, Failure.STATUS, f"answered {status}")
            return DROP
        self._release_part(ex, acts)  # the race is settled: the slower attempt goes (says nothing of its target)
        self._observed(ex, status)
        return RELAY_CHUNKED if self._relay_head(ex, status, head, lower, False) else RELAY

    def upstream_interim(self, conn: UpstreamConnection) -> None:
        ex = conn.exchange
        assert ex is not None
        acts = ex.interim(conn.token)
        self._release_part(ex, acts)
        if acts & RELAY_INTERIM:
            self._wbuf.append(b"HTTP/1.1 100 Continue\r\n\r\n")

    def upstream_switched(self, conn: UpstreamConnection, head: bytes, lower: bytes) -> bool:
        ex = conn.exchange
        assert ex is not None
        acts = ex.switched(conn.token)
        if acts & RELAY_HEAD:
            self._relay_head(ex, 101, head, lower, False)
        if not acts & TUNNEL:
            return False
        self._tunnel = conn
        self.listener.counters.upgrades += 1
        self.last_active = self.listener.tick
        if not self._upgraded:
            self._upgraded = True  # a 101 to a request the parser did not see as an upgrade
        return True

    def upstream_body(self, conn: UpstreamConnection, data: bytes) -> None:
        ex = conn.exchange
        if ex is not None and ex.upstream_body(conn.token) & RELAY_BODY:
            self._wbuf.append(data)

    def upstream_done(self, conn: UpstreamConnection, reusable: bool) -> None:
        ex = conn.exchange
        if ex is not None:
            self._response_done(ex, conn, reusable and ex.request_done)

    def _response_done(self, ex: HttpExchange, conn: UpstreamConnection, reusable: bool) -> None:
        backend = ex.backend
        acts = ex.response_done(conn.token, self._closing)
        if not acts:
            return
        if backend is not None:
            backend.observe(ex.status, self.listener.time() - ex.sent_at)
            if self.listener.access_log is not None:
                self.listener.access_log.record(self._peer_ip, ex, backend.id)
        self._carry_out(ex, acts, reusable)

    def upstream_failed(self, conn: UpstreamConnection, failure: Failure, detail: str) -> None:
        ex = conn.exchange
        if ex is not None:
            self._attempt_failed(ex, conn.token, failure, detail)

    def upstream_write_paused(self, paused: bool) -> None:
        if paused:
            self._pause(_P_UPSTREAM)
        else:
            self._resume(_P_UPSTREAM)

    def _observed(self, ex: HttpExchange, status: int) -> None:
        """A response head arrived (and goes to the client): tell the passive detector."""
        group, backend = ex.group, ex.backend
        if group is not None and backend is not None:
            observe = group.observe
            if observe is not None:
                now = self.listener.time()
                observe(backend.index, _HTTP_5XX if status >= 500 else _OK, now - ex.sent_at, now)

    def _observe(self, group: BackendGroup | None, backend: Backend, outcome: int, sent_at: float) -> None:
        if group is not None and group.observe is not None and not backend.draining:
            now = self.listener.time()
            group.observe(backend.index, outcome, now - sent_at, now)

    # ------------------------------------------------------------------ response path

    def _relay_head(self, ex: HttpExchange, status: int, head: bytes, lower: bytes, plain: bool) -> bool:
        """Queue the response head for the client. Returns True when the body is chunk-encoded for it.

        ``head`` is the target's status line and header lines as received (each ending in
        CRLF, the blank line excluded), ``lower`` the same lower-cased. Hop-by-hop lines
        (and those the target's ``Connection`` header names) are cut out with one regex;
        no per-header Python work is done. ``plain``: an HTTP/1.1 head with no hop-by-hop
        line left (the express lane cut them), ``lower`` still the head as received.
        """
        upgrade_value = b""
        if status == 101:
            m = UPGRADE_VALUE.search(lower)
            if m is not None:
                upgrade_value = head[m.start(1):m.end(1)]
        if not plain:
            head = strip_hop_by_hop(head, lower)
            if not head.startswith(b"HTTP/1.1 "):
                head = b"HTTP/1.1 " + head[9:]  # an HTTP/1.0 target; we speak 1.1 to the client
        parts = [head]
        append = parts.append
        group = ex.group
        backend = ex.backend
        if group is not None and group.stickiness is not None and backend is not None:
            append(group.stickiness.set_cookie(group.token(backend)))
        if ex.group_cookie is not None:
            append(ex.group_cookie)
        if status == 101:
            append(b"Connection: Upgrade\r\nUpgrade: " + upgrade_value + b"\r\n\r\n")
            self._wbuf.append(b"".join(parts))
            return False
        chunk_out = False
        if not (ex.head_only or status == 204 or status == 304) and b"\r\ncontent-length:" not in lower:
            if ex.version10:
                ex.close_after()  # close-delimited for an HTTP/1.0 client
            else:
                chunk_out = True
                append(chunked_header(head, lower))
        if ex.upgrade:
            ex.close_after()  # the upgrade was refused: the connection cannot carry HTTP on
        if not ex.keep_alive or self._closing:
            append(b"Connection: close\r\n\r\n")
        elif ex.version10:
            append(b"Connection: keep-alive\r\n\r\n")
        else:
            append(b"\r\n")
        self._wbuf.append(b"".join(parts))
        if status >= 500 and backend is not None:
            backend.errors += 1
        return chunk_out

    def flush(self) -> None:
        """Write what the last upstream reads produced, in one write, now."""
        buf = self._wbuf
        if buf:
            self._wbuf = []
            if not self._transport.is_closing():
                self._transport.write(buf[0] if len(buf) == 1 else b"".join(buf))

    def flush_soon(self) -> None:
        """Write ``_wbuf`` at the end of this loop round (see Listener.defer). Anything that writes
        to the transport directly, or closes it, calls :meth:`flush` first, so order is kept."""
        if self._wbuf and not self._wdeferred:
            if self.listener.defer(self):
                self._wdeferred = True
            else:
                self.flush()

    def write_deferred(self) -> None:
        self._wdeferred = False
        self.flush()

    def tunnel_out(self, data: bytes) -> None:
        self.last_active = self.listener.tick
        self._transport.write(data)

    def tunnel_closed(self) -> None:
        self.flush()
        self._closing = True
        self._transport.close()

    def tunnel_eof(self) -> bool:
        """The target ended its direction; True when the client had ended its own too."""
        self.flush()
        if self._transport.can_write_eof():
            self._transport.write_eof()
        return self._eof

    def _finish(self, ex: HttpExchange) -> None:
        """``ex`` leaves the queue: the next one starts, or the connection closes."""
        if self._exchanges and self._exchanges[0] is ex:
            self._exchanges.popleft()
        self.last_active = self.listener.tick
        if self._error_after:
            self.flush()
            self._transport.write(status_reply(self._error_after))  # for a refused pipelined request
            self._error_after = 0
            self._linger()
            return
        if not ex.keep_alive or self._closing:
            self.flush()
            self._closing = True
            self._transport.close()
            return
        self.flush_soon()
        if self._exchanges:
            nxt = self._exchanges[0]
            if len(self._exchanges) == 1 and self._paused:
                self._resume(_P_PIPELINE)
            if not nxt.deferred:
                self._dispatch(nxt)
        elif self._paused:
            self._resume(_P_PIPELINE)

    def _write_local(self, ex: HttpExchange) -> None:
        """A reply made here: a redirect, a fixed response, 413, 429, 501, 503."""
        assert ex.local is not None
        if not ex.keep_alive or self._closing:
            tail = b"Connection: close\r\n\r\n"
        elif ex.version10:
            tail = b"Connection: keep-alive\r\n\r\n"
        else:
            tail = b"\r\n"
        self.flush()
        self._transport.write(ex.local + tail + (b"" if ex.head_only else ex.local_body))
        if self.listener.access_log is not None:
            self.listener.access_log.record(self._peer_ip, ex, "-")

    def _write_error(self, ex: HttpExchange) -> None:
        self._count_failed(ex)
        status = ex.status
        self.flush()
        self._transport.write(status_reply(status, close=not ex.keep_alive or self._closing,
                                           extra=b"Retry-After: 1\r\n" if status == 503 else b""))
        if self.listener.access_log is not None:
            self.listener.access_log.record(self._peer_ip, ex, "-")

    def _fail_protocol(self, status: int) -> None:
        """Unparseable input: answer ``status`` (after what is in flight) and close."""
        self._fresh = False  # the parser stopped inside a message
        self._pause(_P_PIPELINE)
        broken = self._parsing  # the error is inside this request's body: it can never complete
        self._parsing = None
        pending = [ex for ex in self._exchanges if not ex.done]
        if broken is not None and broken in pending:
            acts = broken.cancel()  # a target got part of it: that connection goes
            self._carry_out(broken, acts)
            if acts & ABORT:
                return  # its answer had begun: the connection is cut
            pending.remove(broken)
            self._exchanges = deque(pending)
        if not pending:
            self.flush()
            self._transport.write(status_reply(status))
            self._linger()
        else:
            for ex in pending[1:]:
                self._carry_out(ex, ex.cancel())
            del pending[1:]
            self._exchanges = deque(pending)
            pending[0].close_after()
            self._error_after = status

    def _linger(self) -> None:
        """Close after an error reply without losing it: stop sending, read and drop what the client
        is still sending for a moment (closing with unread input would send a reset, and the client
        might never read the reply), then close."""
        self._closing = True
        self._lingering = True  # later bytes are dropped unparsed
        t = self._transport
        if self._paused:
            self._paused = 0
            t.resume_reading()
        try:
            t.write_eof()
        except (OSError, RuntimeError, NotImplementedError):
            t.close()
            return
        asyncio.get_running_loop().call_later(LINGER, t.abort)

    # ------------------------------------------------------------------ flow control & timeouts

    def _pause(self, reason: int) -> None:
        if not self._paused and not self._closing:
            self._transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and not self._closing:
                self._transport.resume_reading()

    def busy(self) -> bool:
        return bool(self._exchanges)

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

    # ------------------------------------------------------------------ hedging, rescue, cut

    def fire_hedge(self, ex: HttpExchange) -> None:
        """The hedge delay passed without a response head: send a copy to another target."""
        group, conn = ex.group, ex.conn
        if group is None or conn is None or self._transport.is_closing():
            return
        if not ex.hedge_due(not conn.got_bytes) & PICK_HEDGE:
            return
        exclude = [*ex.tried, ex.backend] if ex.backend is not None else ex.tried
        backend = group.pick(exclude, ex.key, None)
        if backend is None or not group.budget.withdraw():
            return
        self.listener.counters.hedges += 1
        if not ex.race(self.listener.time()) & CONNECT_HEDGE:
            return
        ex.hedge_backend = backend
        backend.in_flight += 1
        backend.requests += 1
        idle = backend.take_idle()
        if idle is not None:
            assert isinstance(idle, UpstreamConnection)
            self._ready(ex, idle, ex.hedge, True)
        else:
            asyncio.get_running_loop().create_task(self._connect(ex, backend, ex.hedge))

    def upstream_ejected(self, conn: UpstreamConnection) -> int:
        """``conn``'s target was just ejected: move its attempt elsewhere now if a per-try timeout
        would (not charged to the retry budget: the pool keeps a target able to serve). 1 if moved."""
        ex = conn.exchange
        role = _role(ex, conn.token) if ex is not None else None
        if ex is None or role is None:
            return 0
        acts = ex.rescue(conn.token, self._policy(ex))
        if not acts:
            return 0
        self._failed(ex, acts, role, Failure.TIMEOUT, f"{conn.backend.id} ejected")
        self.flush()
        return 1

    def cut(self, backend: Backend) -> int:
        for ex in self._exchanges:
            if ex.backend is backend and not ex.done:
                self._give_up_now(ex, ex.cut(), Failure.RESET, f"{backend.id} deregistered")
                return 1
        return 0

    def close_when_idle(self) -> None:
        self._closing = True
        if not self._exchanges:
            self._transport.close()

    def abort(self) -> None:
        self._closing = True
        t = self._transport
        if t.is_closing():
            t.abort()  # asked again (by a timeout sweep): a client that reads nothing is dropped
        else:
            t.close()


def _role(ex: HttpExchange, token: int) -> tuple[bool, Backend | None, float] | None:
    """Which of ``ex``'s attempts ``token`` is: (the hedge?, its target, when it was sent); None: neither."""
    if token == 0:
        return None
    if token == ex.primary:
        return False, ex.backend, ex.sent_at
    if token == ex.hedge:
        return True, ex.hedge_backend, ex.hedge_sent_at
    return None


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


GROUP_COOKIE = b"FIVENINES_TG"
_EXPRESS_HASH = frozenset({"ip", "uri"})  # hash keys the express lane can compute (no headers needed)
_REDIRECT_REASONS = {
    301: b"Moved Permanently",
    302: b"Found",
    303: b"See Other",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
}
