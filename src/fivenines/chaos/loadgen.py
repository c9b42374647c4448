"""An open-loop HTTP/1.1 load generator on asyncio protocols (httptools), keep-alive.

Request ``i`` is due at ``t0 + i / rate`` and is sent then, whether or not the
earlier ones were answered (open loop: a stalled system does not slow the load
down, it piles up latency). A free keep-alive connection carries it; if none is
free a new one is opened, up to ``max_connections``; beyond that it waits its
turn, and its latency still counts from when it was due. Each outcome goes to an
:class:`~fivenines.chaos.outcomes.OutcomeLog`.

Kept lean for 2,000 requests/s on one core: one request head built once, no
header callbacks, one sweeper timer for timeouts instead of one per request,
idle connections reused last-in first-out (a few hot connections carry the load;
the rest age out after ``idle_timeout``, before the server's own idle timeout).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import httptools

from fivenines.chaos.outcomes import Err, OutcomeLog


class _Conn(asyncio.Protocol):
    __slots__ = ("closed", "gen", "i", "idle_since", "parser", "transport")

    def __init__(self, gen: LoadGen) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.i = -1
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def send(self, i: int) -> None:
        assert self.transport is not None
        self.i = i
        self.gen._busy.add(self)
        self.transport.write(self.gen._request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.gen._fail(self, Err.PROTOCOL)

    def on_message_complete(self) -> None:
        i = self.i
        if i < 0:  # an answer nobody asked for
            self.gen._fail(self, Err.PROTOCOL)
            return
        self.gen._done(self, i, self.parser.get_status_code(), self.parser.should_keep_alive())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.gen._lost(self)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()


class LoadGen:
    """``rate`` requests/s of ``GET path`` to ``host:port`` for ``duration`` seconds."""

    def __init__(
        self,
        host: str,
        port: int,
        rate: float,
        duration: float,
        *,
        path: str = "/",
        timeout: float = 5.0,
        max_connections: int = 256,
        idle_timeout: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate > 0 or not duration > 0:
            raise ValueError("rate and duration must be > 0")
        self.host, self.port = host, port
        self.rate = float(rate)
        self.n = max(1, round(rate * duration))
        self.log = OutcomeLog(rate, self.n)
        self.timeout = timeout
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.clock = clock
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: fivenines-chaos\r\n"
            "Accept: */*\r\n\r\n"
        ).encode("latin-1")
        self._idle: list[_Conn] = []
        self._busy: set[_Conn] = set()
        self._pending: deque[int] = deque()
        self._connecting: dict[asyncio.Task[None], int] = {}
        self._open = 0
        self.t0 = 0.0
        self.issued = 0
        self.finished = 0
        self.connections_opened = 0
        self.max_lag = 0.0  # the worst delay between a request's due time and its dispatch
        self.max_open = 0
        self._all_done = asyncio.Event()
        self._dispatched = False

    # ------------------------------------------------------------------ driving

    async def run(self, t0: float) -> OutcomeLog:
        """Send every request on schedule from ``t0`` (a ``clock()`` time), wait for the answers."""
        self.t0 = t0
        sweeper = asyncio.get_running_loop().create_task(self._sweep())
        try:
            i, n, rate = 0, self.n, self.rate
            while i < n:
                now = self.clock()
                due = t0 + i / rate
                if due > now:
                    # uvloop's timers tick in milliseconds: a shorter sleep would spin
                    await asyncio.sleep(max(due - now, 0.001))
                    continue
                lag = now - due
                if lag > self.max_lag:
                    self.max_lag = lag
                while i < n and t0 + i / rate <= now:
                    self._issue(i)
                    i += 1
            self._dispatched = True
            if self.finished < self.issued:
                try:
                    async with asyncio.timeout(self.timeout + 1.0):
                        await self._all_done.wait()
                except TimeoutError:
                    pass
        finally:
            sweeper.cancel()
            self.close()
        return self.log

    def close(self) -> None:
        """Abort whatever is in flight (recorded as timeouts) and close every connection."""
        now = self.clock() - self.t0
        for task, i in list(self._connecting.items()):
            task.cancel()
            self._record(i, now, 0, Err.TIMEOUT)
        self._connecting.clear()
        while self._pending:
            self._record(self._pending.popleft(), now, 0, Err.TIMEOUT)
        for c in list(self._busy):
            if c.i >= 0:
                self._record(c.i, now, 0, Err.TIMEOUT)
                c.i = -1
            c.abort()
        for c in self._idle:
            c.close()
        self._idle.clear()

    def __repr__(self) -> str:
        return (f"<LoadGen {self.rate:g}/s {self.issued}/{self.n} issued, {self.finished} finished, "
                f"{self._open} open ({len(self._idle)} idle), {len(self._pending)} waiting>")

    # ------------------------------------------------------------------ requests

    def _issue(self, i: int) -> None:
        self.issued += 1
        if self._pending:
            self._pending.append(i)
        elif self._idle:
            self._idle.pop().send(i)
        elif self._open < self.max_connections:
            self._connect(i)
        else:
            self._pending.append(i)

    def _connect(self, i: int) -> None:
        self._open += 1
        self.max_open = max(self.max_open, self._open)
        task = asyncio.get_running_loop().create_task(self._do_connect(i))
        self._connecting[task] = i

    async def _do_connect(self, i: int) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        try:
            _, proto = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
        except OSError:
            self._open -= 1
            if task is not None and self._connecting.pop(task, None) is not None:
                self._record(i, self.clock() - self.t0, 0, Err.CONNECT)
            self._pump()
            return
        self.connections_opened += 1
        if task is not None and self._connecting.pop(task, None) is None:  # timed out meanwhile
            self._release(proto)
            return
        proto.send(i)

    def _record(self, i: int, done: float, status: int, error: Err) -> None:
        self.log.record(i, done, status, error)
        self.finished += 1
        if self._dispatched and self.finished >= self.issued:
            self._all_done.set()

    def _done(self, c: _Conn, i: int, status: int, keep_alive: bool) -> None:
        c.i = -1
        self._busy.discard(c)
        self._record(i, self.clock() - self.t0, status, Err.OK)
        if keep_alive and not c.closed:
            self._release(c)
        else:
            c.close()

    def _fail(self, c: _Conn, error: Err) -> None:
        if c.i >= 0:
            self._record(c.i, self.clock() - self.t0, 0, error)
            c.i = -1
        self._busy.discard(c)
        c.abort()

    def _release(self, c: _Conn) -> None:
        if self._pending:
            c.send(self._pending.popleft())
        else:
            c.idle_since = self.clock()
            self._idle.append(c)

    def _lost(self, c: _Conn) -> None:
        self._open -= 1
        if c.i >= 0:
            self._record(c.i, self.clock() - self.t0, 0, Err.RESET)
            c.i = -1
        self._busy.discard(c)
        try:
            self._idle.remove(c)
        except ValueError:
            pass
        self._pump()

    def _pump(self) -> None:
        while self._pending and self._open < self.max_connections:
            self._connect(self._pending.popleft())

    async def _sweep(self, every: float = 0.05) -> None:
        """Time out requests older than ``timeout`` (counted from when they were due); retire old idle connections."""
        rate = self.rate
        while True:
            await asyncio.sleep(every)
            now = self.clock()
            limit = now - self.timeout - self.t0  # requests due before this are late
            done = now - self.t0
            for c in [c for c in self._busy if c.i >= 0 and c.i / rate < limit]:
                i, c.i = c.i, -1
                self._busy.discard(c)
                self._record(i, done, 0, Err.TIMEOUT)
                c.abort()
            while self._pending and self._pending[0] / rate < limit:
                self._record(self._pending.popleft(), done, 0, Err.TIMEOUT)
            for task, i in [(t, i) for t, i in self._connecting.items() if i / rate < limit]:
                del self._connecting[task]
                self._record(i, done, 0, Err.TIMEOUT)
            # oldest idle connections are at the bottom of the stack
            while self._idle and now - self._idle[0].idle_since > self.idle_timeout:
                self._idle.pop(0).close()

    def stats(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "requests": self.n,
            "issued": self.issued,
            "connections_opened": self.connections_opened,
            "max_open_connections": self.max_open,
            "max_dispatch_lag_ms": round(self.max_lag * 1000, 3),
            "timeout_s": self.timeout,
        }
