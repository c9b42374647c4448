"""The target side of the HTTP proxy: one :class:`UpstreamConnection` per connection to a target.

It parses responses (httptools, or the express lane for a plain whole response) and reports
what it sees to the client side of the exchange through :class:`ClientSide`, the only thing it
knows of it: a response head, body bytes, the end, a failure. What follows from each report
(relay it, retry, settle a hedge race, give up) is :mod:`fivenines.core.exchange`'s decision,
carried out by the client side. The connection itself only frames bytes, keeps its per-try
deadline in the listener's watch, and goes back to its target's idle pool or closes when an
exchange is over with it (:meth:`UpstreamConnection.finish`).
"""

from __future__ import annotations

import asyncio
from typing import Final

import httptools
from mypy_extensions import i64

from fivenines.core.exchange import Exchange
from fivenines.core.framing import express_response
from fivenines.core.heads import TE_VALUE
from fivenines.core.retry import Failure
from fivenines.proxy.backend import Backend, BackendGroup
from fivenines.proxy.listener import ClientBase, Listener, UpstreamBase

MAX_HEAD: Final = 64 * 1024  # a request or response head larger than this is refused (431 / 502)

# what ClientSide.upstream_head answers
DROP: Final = -1  # this response goes no further: the attempt was retried or lost its race (the connection is closed)
RELAY: Final = 0  # relay the body as it comes
RELAY_CHUNKED: Final = 1  # relay the body chunk-encoded (a target's close-delimited body to an HTTP/1.1 client)


class HttpExchange(Exchange):
    """An exchange as the proxy carries it: the machine, plus the targets and connections of its
    attempts and what routing chose."""

    __slots__ = ("backend", "conn", "deferred", "group", "group_cookie", "hedge_backend", "hedge_conn", "key",
                 "received", "sticky", "tried")

    def __init__(self, method: bytes, head: bytes, chunked: bool, keep_alive: bool, version10: bool) -> None:
        super().__init__(method, head, chunked, keep_alive, version10)
        self.group: BackendGroup | None = None
        self.key: int | None = None  # hash key for the hashing algorithms
        self.sticky: bytes | None = None  # the client's stickiness token
        self.group_cookie: bytes | None = None  # Set-Cookie line of a sticky weighted forward
        self.backend: Backend | None = None  # the attempt's target
        self.conn: UpstreamConnection | None = None  # ... and its connection, once ready
        self.hedge_backend: Backend | None = None  # the hedge's target
        self.hedge_conn: UpstreamConnection | None = None
        self.tried: list[Backend] = []
        self.received = 0  # request body bytes read from the client (for limits.max_body)
        self.deferred = False  # a chunked body is checked (up to DEFER_LIMIT) before its head goes


class ClientSide(ClientBase):
    """What an upstream connection reports to the client side of its exchange (and all it knows
    of it). ``conn`` says which attempt reports: its ``token`` is the exchange's attempt or hedge."""

    listener: Listener

    def upstream_response(self, conn: UpstreamConnection, status: int, message: bytes, head_end: int) -> None:
        """A whole plain response (the express lane, :func:`~fivenines.core.framing.express_response`:
        ``message`` without its Connection line, its blank line at ``head_end``): relayed as it
        is, and the exchange ends."""
        raise NotImplementedError

    def upstream_head(self, conn: UpstreamConnection, status: int, head: bytes, lower: bytes) -> int:
        """A final response head (not 101): DROP, RELAY or RELAY_CHUNKED."""
        raise NotImplementedError

    def upstream_interim(self, conn: UpstreamConnection) -> None:
        """100 Continue."""
        raise NotImplementedError

    def upstream_switched(self, conn: UpstreamConnection, head: bytes, lower: bytes) -> bool:
        """101 to an upgrade request; True when both connections are a tunnel now."""
        raise NotImplementedError

    def upstream_body(self, conn: UpstreamConnection, data: bytes) -> None:
        raise NotImplementedError

    def upstream_done(self, conn: UpstreamConnection, reusable: bool) -> None:
        """The response ended (or the tunnel closed)."""
        raise NotImplementedError

    def upstream_failed(self, conn: UpstreamConnection, failure: Failure, detail: str) -> None:
        raise NotImplementedError

    def upstream_ejected(self, conn: UpstreamConnection) -> int:
        """``conn``'s target was just ejected as hung or slow: 1 if its attempt moved elsewhere."""
        raise NotImplementedError

    def upstream_write_paused(self, paused: bool) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Write what the reports so far produced, now."""
        raise NotImplementedError

    def flush_soon(self) -> None:
        """... at the end of this loop round."""
        raise NotImplementedError

    def tunnel_out(self, data: bytes) -> None:
        raise NotImplementedError

    def tunnel_eof(self) -> bool:
        """The target ended its direction; True when the client had ended its own too."""
        raise NotImplementedError

    def tunnel_closed(self) -> None:
        raise NotImplementedError


class UpstreamConnection(UpstreamBase):
    """A connection to one backend, reused across exchanges while keep-alive holds."""

    __slots__ = (
        "_body_mode",
        "_chunk_out",
        "_client",
        "_ex",
        "_fresh",
        "_hbuf",
        "_hpos",
        "_in_body",
        "_lost",
        "_obuf",
        "_parser",
        "_paused",
        "_reused",
        "_timeout",
        "_transport",
        "_tunnel",
        "_waiting",
        "backend",
        "deadline",
        "eof_seen",
        "got_bytes",
        "idle_since",
        "keep_alive",
        "ready",
        "token",
    )

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._transport: asyncio.Transport = None  # type: ignore[assignment]
        self._parser = httptools.HttpResponseParser(self)
        self._client: ClientSide | None = None
        self._ex: HttpExchange | None = None
        self.token: i64 = 0  # the exchange's attempt (or hedge) this connection carries
        self._fresh = True  # the parser is between messages with nothing buffered: the express lane may run
        self._hbuf = b""  # bytes of the response head(s) being received
        self._hpos = 0  # where the next head starts in _hbuf (after a 1xx)
        self._chunk_out = False
        self._in_body = False
        self._lost = False
        self._obuf: list[bytes] | None = None  # held back until the end of this loop round (write_soon)
        self._reused = False
        self._tunnel = False
        self._waiting: set[UpstreamBase] | None = None  # the listener's set while a head is awaited
        self._timeout = 0.0
        self._paused = False
        self.deadline = 0.0
        self._body_mode = 0  # 0: length or chunked, 2: delimited by the close
        self.got_bytes = False
        self.keep_alive = True
        self.ready = False
        self.idle_since = 0.0
        self.eof_seen = False

    def __repr__(self) -> str:
        state = "busy" if self._ex is not None else ("closed" if self._lost else "idle")
        return f"<UpstreamConnection {self.backend.id} {state}>"

    # -- pool interface
    def is_usable(self) -> bool:
        return not self._lost and self._ex is None and not self._transport.is_closing()

    def close(self) -> None:
        self._lost = True
        self._obuf = None  # not sent yet: dropped with the connection
        t = self._transport
        if t.get_write_buffer_size():
            t.abort()  # bytes for a target we gave up on (it may not read them): dropped
        else:
            t.close()

    # -- transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._cancel_timer()
        client = self._client
        if self._ex is None or client is None:
            return
        if self._tunnel:
            client.tunnel_closed()
            client.upstream_done(self, False)
            return
        if self._in_body:
            if self._body_mode == 2:
                self._end_response(reusable=False)  # close-delimited body: the close ends it
                client.flush()
            else:
                self._fail(Failure.RESET, "upstream closed mid-response")
            return
        if not self.got_bytes:
            kind = Failure.STALE if self._reused else Failure.RESET
            self._fail(kind, f"upstream closed before responding ({exc or 'eof'})")
        else:
            self._fail(Failure.PROTOCOL, "upstream closed inside the response head")

    def _fail(self, failure: Failure, detail: str) -> None:
        """This attempt failed: tell the client side (which decides what follows)."""
        client = self._client
        if self._ex is not None and client is not None:
            client.upstream_failed(self, failure, detail)
            client.flush()

    def eof_received(self) -> bool | None:
        self.eof_seen = True
        if self._tunnel and self._client is not None:
            return None if self._client.tunnel_eof() else True
        return None

    def data_received(self, data: bytes) -> None:
        client = self._client
        if self._tunnel:
            if client is not None:
                client.tunnel_out(data)
            return
        self.got_bytes = True
        if self._fresh and not self._in_body and not self._hbuf and self._express(data, client):
            return
        if not self._in_body:
            self._hbuf = self._hbuf + data if self._hbuf else data
            if len(self._hbuf) > MAX_HEAD and self._hbuf.find(b"\r\n\r\n", self._hpos) < 0:
                self._protocol_error("response head too large")
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._switched(client, data[exc.args[0]:])
            return
        except httptools.HttpParserCallbackError as exc:
            why = exc.__context__
            if isinstance(why, _BadHead):
                self._protocol_error("bad header line ends")
            elif isinstance(why, _BadFraming):
                self._protocol_error("Transfer-Encoding other than chunked")
            elif isinstance(why, _HeadDone):
                if self._ex is None:
                    self.close()  # unsolicited, dropped, or answered: this connection goes
            else:
                self._protocol_error(str(why or exc))
        except httptools.HttpParserError as exc:
            self._protocol_error(str(exc))
        if client is not None:
            if self._in_body:
                # a body streaming on: written now, so that a full client buffer stops this
                # connection's reading before the loop reads it again (back-pressure)
                client.flush()
            else:
                client.flush_soon()

    def _switched(self, client: ClientSide | None, rest: bytes) -> None:
        """The parser stopped after a 101 head: ``rest`` is the first tunnel data."""
        if not self._tunnel or client is None:
            self._protocol_error("unexpected protocol switch")
            return
        client.flush()
        if rest:
            client.tunnel_out(rest)

    def pause_writing(self) -> None:
        if self._client is not None:
            self._client.upstream_write_paused(True)

    def resume_writing(self) -> None:
        if self._client is not None:
            self._client.upstream_write_paused(False)

    def pause_reading(self) -> None:
        if not self._lost:
            self._paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._lost:
            self._paused = False
            self._transport.resume_reading()

    # -- exchange
    def start(self, client: ClientSide, ex: HttpExchange, token: i64, reused: bool, timeout: float) -> None:
        """Carry attempt ``token`` of ``ex`` (its head is written next), with a per-try ``timeout``."""
        self._client = client
        self._ex = ex
        self.token = token
        self._reused = reused
        self.got_bytes = False
        self._in_body = False
        self.ready = True
        self._timeout = timeout
        listener = client.listener
        self.deadline = listener.time() + timeout
        waiting = self._waiting = listener.waiting
        waiting.add(self)

    def arm(self) -> None:
        """Restart the per-try timeout (the request's last byte was just sent)."""
        if not self.got_bytes and self._client is not None:
            self.deadline = self._client.listener.time() + self._timeout

    def write(self, data: bytes) -> None:
        if self._obuf is not None:
            self.write_deferred()
        self._transport.write(data)

    def write_soon(self, data: bytes, listener: Listener) -> None:
        """Write ``data`` at the end of this loop round (see Listener.defer); :meth:`write` keeps order."""
        if self._obuf is not None:
            self._obuf.append(data)
        elif listener.defer(self):
            self._obuf = [data]
        else:
            self._transport.write(data)

    def write_deferred(self) -> None:
        buf = self._obuf
        if buf is not None:
            self._obuf = None
            if not self._lost:
                self._transport.write(buf[0] if len(buf) == 1 else b"".join(buf))

    def write_eof(self) -> None:
        if self._obuf is not None:
            self.write_deferred()
        if not self._lost and self._transport.can_write_eof():
            self._transport.write_eof()

    def finish(self, reusable: bool) -> None:
        """The exchange is over with this connection: back to the idle pool, or closed."""
        self._cancel_timer()
        client = self._client
        self._client = None
        self._ex = None
        self.token = 0
        self.ready = False
        if reusable and self.keep_alive and not self._lost and not self._tunnel:
            if self._paused:
                self._paused = False
                self._transport.resume_reading()
            self.backend.put_idle(self, client.listener.tick if client is not None else 0.0)
        else:
            self.close()

    def _cancel_timer(self) -> None:
        waiting = self._waiting
        if waiting is not None:
            waiting.discard(self)
            self._waiting = None

    @property
    def exchange(self) -> HttpExchange | None:
        return self._ex

    @property
    def client(self) -> ClientSide | None:
        return self._client

    def due(self, now: float) -> bool:
        return self.deadline <= now

    def waits_on(self, backend: Backend) -> bool:
        return self.backend is backend

    def ejected(self) -> int:
        """This connection's target was just ejected while it waits for a response head: 1 if the
        attempt moved to another target (as its per-try timeout would have done)."""
        client = self._client
        return client.upstream_ejected(self) if client is not None and self._ex is not None else 0

    def timed_out(self) -> None:
        self._cancel_timer()
        if not self._tunnel:
            self._fail(Failure.TIMEOUT, f"no response from {self.backend.id} in time")

    def _protocol_error(self, detail: str) -> None:
        self.keep_alive = False
        if self._ex is not None and self._client is not None:
            self._client.upstream_failed(self, Failure.PROTOCOL, f"bad response from {self.backend.id}: {detail}")
        if self._ex is None:
            self.close()

    def _express(self, data: bytes, client: ClientSide | None) -> bool:
        """The express lane: ``data`` is one whole, plain response (see
        :func:`~fivenines.core.framing.express_response`) to a plain exchange: relayed as the
        full path would relay it, without the parser. False (nothing done) otherwise."""
        ex = self._ex
        if client is None or ex is None or not ex.plain_wait or ex.primary != self.token:
            return False
        got = express_response(data)
        if got is None:
            return False
        status, message, end = got
        self._cancel_timer()
        self.keep_alive = True
        client.upstream_response(self, status, message, end)
        return True

    # -- parser callbacks (no per-header ones: the head is taken whole from the bytes received)
    def on_message_begin(self) -> None:
        self._fresh = False

    def _take_head(self) -> tuple[bytes, bytes] | None:
        """The head just parsed, from the bytes received: (head, head lower-cased)."""
        buf = self._hbuf
        pos = self._hpos
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0 or end - pos > MAX_HEAD:
            return None  # bare-LF line ends, or too large: not accepted from a target
        self._hpos = end + 4
        head = buf[pos:end + 2]
        return head, head.lower()

    def on_headers_complete(self) -> None:
        ex, client = self._ex, self._client
        if ex is None or client is None:
            raise _HeadDone  # unsolicited response: the pool drops this connection
        taken = self._take_head()
        if taken is None:
            raise _BadHead
        head, lower = taken
        parser = self._parser
        status = parser.get_status_code()
        if status == 101:
            if not ex.upgrade:
                raise _BadHead  # a switch we did not ask for: the parser would take what follows as a tunnel
            self._cancel_timer()
            self._tunnel = client.upstream_switched(self, head, lower)
            return
        if status < 200:
            if status == 100:
                client.upstream_interim(self)
            return
        # (find, not `in`: a bytes `in` first tries its operand as an int, formatting a TypeError each time)
        has_cl = lower.find(b"\r\ncontent-length:") >= 0
        has_te = lower.find(b"\r\ntransfer-encoding:") >= 0
        if has_te:
            m = TE_VALUE.search(lower)
            if m is None or m.group(1).strip() != b"chunked":
                raise _BadFraming  # another coding (gzip, ...) would reach the client mislabelled
        got = client.upstream_head(self, status, head, lower)
        if got == DROP:
            self.keep_alive = False
            raise _HeadDone  # retried elsewhere, or the race went to the other attempt: this connection goes
        self._cancel_timer()
        # ambiguous framing (both): never reuse this connection
        self.keep_alive = parser.should_keep_alive() and not (has_te and has_cl)
        self._chunk_out = got == RELAY_CHUNKED
        if ex.head_only:
            self.keep_alive = False  # the parser would wait for a body a HEAD answer has not
            self._end_response(reusable=False)
            raise _HeadDone
        self._body_mode = 0 if (has_te or has_cl or status == 204 or status == 304) else 2
        self._in_body = True

    def on_body(self, body: bytes) -> None:
        client = self._client
        if client is None or not body:
            return
        client.upstream_body(self, b"%x\r\n%s\r\n" % (len(body), body) if self._chunk_out else body)

    def on_message_complete(self) -> None:
        self._fresh = True
        if not self._in_body:
            return  # a 1xx interim response
        self._end_response(reusable=True)

    def _end_response(self, reusable: bool) -> None:
        client = self._client
        self._in_body = False
        self._hbuf = b""
        self._hpos = 0
        if self._ex is None or client is None:
            return
        if self._chunk_out:
            client.upstream_body(self, b"0\r\n\r\n")
        client.upstream_done(self, reusable)


class _HeadDone(Exception):
    """Raised from a parser callback to stop parsing after a head that goes no further."""


class _BadFraming(Exception):
    """Raised from a parser callback when a response's framing is not one fivenines forwards."""


class _BadHead(Exception):
    """Raised from a parser callback when the head cannot be taken (bad line ends, too large) or
    is a 101 to a request that asked for no upgrade."""
