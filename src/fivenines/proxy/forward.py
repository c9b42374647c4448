"""The client side of an exchange in the HTTP proxy: what carries out the machine's actions.

:class:`Forwarder` is the half of :class:`~fivenines.proxy.client.ClientConnection` that acts
for :class:`~fivenines.core.exchange.Exchange`: it picks targets, takes pooled upstream
connections or makes new ones, writes request heads and bodies, relays what the target side
reports (:class:`~fivenines.proxy.upstream.ClientSide`), writes the replies made here, counts,
observes (the passive health hook) and moves the connection's queue on. It decides nothing
about an exchange's life: every branch here follows an action bit the machine returned.
(``ClientConnection`` adds the other half: reading requests.)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from mypy_extensions import i64

from fivenines.core.detect import Outcome
from fivenines.core.exchange import (
    ABORT,
    ANSWERED,
    ARM,
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
    Exchange,
)
from fivenines.core.heads import UPGRADE_VALUE, chunked_header, status_reply, strip_hop_by_hop
from fivenines.core.retry import Failure, RetryPolicy, Verdict
from fivenines.proxy.backend import Backend, BackendGroup
from fivenines.proxy.listener import Listener, send_last
from fivenines.proxy.upstream import (
    DROP,
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
_OK: Final = int(Outcome.OK)
_HTTP_5XX: Final = int(Outcome.HTTP_5XX)
_RELEASES: Final = RELEASE | RELEASE_HEDGE | PROMOTE
_DONE: Final = RELEASE | ANSWERED | FINISH  # what the end of a response asks, nearly always

# Pause reasons for the client transport (a bit set, so each is undone independently).
P_PIPELINE: Final = 1  # a later pipelined request waits for the current one
P_UPSTREAM: Final = 2  # the upstream's write buffer is full
P_BUFFER: Final = 4  # request body waits for an upstream connection

LINGER: Final = 2.0  # after an error reply, input is read and dropped this long before the connection closes


class Forwarder(ClientSide):
    """Carries out the actions of the exchanges on one client connection (see the module docstring)."""

    __slots__ = (
        "_closing",
        "_eof",
        "_error_after",
        "_exchanges",
        "_lingering",
        "_paused",
        "_peer_ip",
        "_transport",
        "_tunnel",
        "_upgraded",
        "_wbuf",
        "_wdeferred",
        "_write_paused",
        "last_active",
        "listener",
    )

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self._transport: asyncio.Transport = None  # type: ignore[assignment]
        # (a list, not a deque: compiled, its operations are C calls; reading pauses while two wait)
        self._exchanges: list[HttpExchange] = []
        self._paused = 0
        self._write_paused = False
        self._closing = False
        self._eof = False
        self._upgraded = False  # the parser saw an upgrade request: later bytes are tunnel bytes
        self._tunnel: UpstreamConnection | None = None  # set once the target switched protocols
        self._peer_ip = b""
        self._wbuf: list[bytes] = []
        self._wdeferred = False  # the listener will write _wbuf at the end of this loop round
        self._lingering = False
        self._error_after = 0  # status to answer once the request in flight is answered
        self.last_active = 0.0

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
        self._connection(ex, backend, ex.primary)

    def _connection(self, ex: HttpExchange, backend: Backend, token: i64) -> None:
        """A connection to ``backend`` for attempt (or hedge) ``token``: an idle one, or a new one."""
        backend.in_flight += 1
        backend.requests += 1
        conn = backend.take_idle()
        if conn is not None:
            assert isinstance(conn, UpstreamConnection)
            self._ready(ex, conn, token, True)
        else:
            asyncio.get_running_loop().create_task(self._connect(ex, backend, token))

    async def _connect(self, ex: HttpExchange, backend: Backend, token: i64) -> None:
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

    def _ready(self, ex: HttpExchange, conn: UpstreamConnection, token: i64, reused: bool) -> None:
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
            self._resume(P_BUFFER)
        else:
            conn.write_soon(ex.head, listener)
        if self._write_paused:
            conn.pause_reading()

    def _policy(self, ex: HttpExchange) -> RetryPolicy:
        forced = self.listener.settings.retry
        if forced is not None:
            return forced
        return ex.group.retry if ex.group is not None else RetryPolicy()

    def _attempt_failed(self, ex: HttpExchange, token: i64, failure: Failure, detail: str) -> None:
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

    def _failed(self, ex: HttpExchange, acts: i64, role: tuple[bool, Backend | None, float], failure: Failure,
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

    def _after_failure(self, ex: HttpExchange, acts: i64, backend: Backend | None, failure: Failure,
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

    def _give_up_now(self, ex: HttpExchange, acts: i64, failure: Failure, detail: str) -> None:
        """The whole-request deadline or a deregistration cut (not the target's doing: not observed)."""
        backend = ex.backend
        self._release_part(ex, acts)
        if backend is not None:
            backend.errors += 1
        self._after_failure(ex, acts, backend, failure, detail)

    def _release_part(self, ex: HttpExchange, acts: i64) -> None:
        if acts & RELEASE:
            self._release(ex, False)
        if acts & RELEASE_HEDGE:
            self._release_hedge(ex)
        if acts & PROMOTE:
            self._promote(ex)

    def _carry_out(self, ex: HttpExchange, acts: i64, reusable: bool = False) -> None:
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
            if self._paused & P_UPSTREAM:
                self._resume(P_UPSTREAM)  # that connection's full buffer no longer holds us back

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

    def upstream_response(self, conn: UpstreamConnection, status: int, message: bytes, head_end: int) -> None:
        ex = conn.exchange
        assert ex is not None
        group = ex.group
        acts = ex.response_head(conn.token, status, self._policy(ex) if status >= 500 else None,
                                group.budget if group is not None else None)
        if acts & RELAY_HEAD:
            now = self.listener.time()  # (head and end arrived together: one reading of the clock)
            self._observed(ex, status, now)
            if (not ex.version10 and not ex.upgrade and ex.group_cookie is None
                    and (group is None or group.stickiness is None)):
                # what _relay_head would send: the message, with "Connection: close" if this is the last
                if ex.keep_alive and not self._closing:
                    self._wbuf.append(message)
                else:
                    self._wbuf.extend((message[:head_end + 2], b"Connection: close", message[head_end:]))
            else:
                self._relay_head(ex, status, message[:head_end + 2], b"", True)
                self._wbuf.append(message[head_end + 4:])
            self._response_done(ex, conn, ex.request_done, now)
        else:
            self._carry_out(ex, acts)

    def upstream_head(self, conn: UpstreamConnection, status: int, head: bytes, lower: bytes) -> int:
        ex = conn.exchange
        assert ex is not None
        token = conn.token
        role = _role(ex, token)
        group = ex.group
        acts = ex.response_head(token, status, self._policy(ex) if status >= 500 else None,
                                group.budget if group is not None else None)
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
        self._observed(ex, status, self.listener.time())
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

    def _response_done(self, ex: HttpExchange, conn: UpstreamConnection, reusable: bool, now: float = 0.0) -> None:
        backend = ex.backend
        acts = ex.response_done(conn.token, self._closing)
        if not acts:
            return
        if backend is not None:
            backend.observe(ex.status, (now or self.listener.time()) - ex.sent_at)
            if self.listener.access_log is not None:
                self.listener.access_log.record(self._peer_ip, ex, backend.id)
        if acts == _DONE:  # (what _carry_out would do, without its tests)
            self._release(ex, reusable)
            self.listener.counters.responses += 1
            self._finish(ex)
        else:
            self._carry_out(ex, acts, reusable)

    def upstream_failed(self, conn: UpstreamConnection, failure: Failure, detail: str) -> None:
        ex = conn.exchange
        if ex is not None:
            self._attempt_failed(ex, conn.token, failure, detail)

    def upstream_write_paused(self, paused: bool) -> None:
        if paused:
            self._pause(P_UPSTREAM)
        else:
            self._resume(P_UPSTREAM)

    def _observed(self, ex: HttpExchange, status: int, now: float) -> None:
        """A response head arrived at ``now`` (and goes to the client): tell the passive detector."""
        group, backend = ex.group, ex.backend
        if group is not None and backend is not None:
            observe = group.observe
            if observe is not None:
                observe.record(backend.index, _HTTP_5XX if status >= 500 else _OK, now - ex.sent_at, now)

    def _observe(self, group: BackendGroup | None, backend: Backend, outcome: int, sent_at: float) -> None:
        if group is not None and not backend.draining:
            observe = group.observe
            if observe is not None:
                now = self.listener.time()
                observe.record(backend.index, outcome, now - sent_at, now)

    def _relay_head(self, ex: HttpExchange, status: int, head: bytes, lower: bytes, plain: bool) -> bool:
        """Queue the response head for the client. Returns True when the body is chunk-encoded for it.

        ``head`` is the target's status line and header lines as received (each ending in
        CRLF, the blank line excluded), ``lower`` the same lower-cased. Hop-by-hop lines
        (and those the target's ``Connection`` header names) are cut out with one regex;
        no per-header Python work is done. ``plain``: an HTTP/1.1 head with no hop-by-hop
        line left, status 200-499, exactly one ``Content-Length`` (the express lane), and no
        ``lower`` (b"": nothing is looked up in a plain head).
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
            self._wbuf.extend(parts)
            return False
        chunk_out = False
        # (find, not `in`: a bytes `in` first tries its operand as an int, formatting a TypeError each time)
        if not (plain or ex.head_only or status == 204 or status == 304) and lower.find(b"\r\ncontent-length:") < 0:
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
        self._wbuf.extend(parts)  # joined with the body by flush: one copy
        if status >= 500 and backend is not None:
            backend.errors += 1
        return chunk_out

    def flush(self, last: bool = False) -> None:
        """Write what the last upstream reads produced, in one write, now. ``last``: the connection
        closes after it; on a plain socket with nothing waiting in the transport the bytes then go
        with the FIN (``send_last``), so the client never closes first (and never holds the
        TIME_WAIT): the transport closes its socket only at the next loop round."""
        buf = self._wbuf
        if buf:
            self._wbuf = []
            t = self._transport
            if not t.is_closing():
                data = buf[0] if len(buf) == 1 else b"".join(buf)
                if last and self.listener.tls is None and not t.get_write_buffer_size():
                    sock = t.get_extra_info("socket")
                    if sock is not None:
                        data = data[send_last(sock.fileno(), data):]  # what it could not send
                if data:
                    t.write(data)

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
            self._exchanges.pop(0)
        self.last_active = self.listener.tick
        if self._error_after:
            self.flush()
            self._transport.write(status_reply(self._error_after))  # for a refused pipelined request
            self._error_after = 0
            self._linger()
            return
        if not ex.keep_alive or self._closing:
            self.flush(last=True)
            self._closing = True
            self._transport.close()
            return
        self.flush_soon()
        if self._exchanges:
            nxt = self._exchanges[0]
            if len(self._exchanges) == 1 and self._paused:
                self._resume(P_PIPELINE)
            if not nxt.deferred:
                self._dispatch(nxt)
        elif self._paused:
            self._resume(P_PIPELINE)

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

    def _pause(self, reason: int) -> None:
        if not self._paused and not self._closing:
            self._transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and not self._closing:
                self._transport.resume_reading()

    def fire_hedge(self, ex: Exchange) -> None:
        """The hedge delay passed without a response head: send a copy to another target."""
        assert isinstance(ex, HttpExchange)  # (the listener keeps this connection's own exchanges)
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
        self._connection(ex, backend, ex.hedge)

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

    def abort(self) -> None:
        self._closing = True
        t = self._transport
        if t.is_closing():
            t.abort()  # asked again (by a timeout sweep): a client that reads nothing is dropped
        else:
            t.close()



def _role(ex: HttpExchange, token: i64) -> tuple[bool, Backend | None, float] | None:
    """Which of ``ex``'s attempts ``token`` is: (the hedge?, its target, when it was sent); None: neither."""
    if token == 0:
        return None
    if token == ex.primary:
        return False, ex.backend, ex.sent_at
    if token == ex.hedge:
        return True, ex.hedge_backend, ex.hedge_sent_at
    return None
