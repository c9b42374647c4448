"""Real loopback peers for the data-plane tests: small asyncio servers with one behaviour each,
and a harness running fivenines' own listeners (built from a spec, as the controller builds
them) in a background event loop."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httptools

from tests.helpers import LoopThread, raw_exchange

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """An asyncio stream server on 127.0.0.1:0 in its own thread; ``handler`` per connection."""

    def __init__(self, handler: Handler | None = None, name: str = "raw") -> None:
        self.name = name
        self.requests: Counter[str] = Counter()  # by method
        self.bytes_in = 0
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self.lt = LoopThread()
        self._handler = handler or self.http
        self.server: asyncio.Server = self.lt.call(self._start())
        self.host, self.port = self.server.sockets[0].getsockname()[:2]
        self.address = f"{self.host}:{self.port}"

    async def _start(self) -> asyncio.Server:
        async def conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.connections += 1
            self._writers.add(w)
            try:
                await self._handler(r, w)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass
            finally:
                self._writers.discard(w)
                w.close()

        return await asyncio.start_server(conn, "127.0.0.1", 0, limit=1 << 20)

    def close(self) -> None:
        async def shut() -> None:  # on the server's own loop: asyncio objects are not thread-safe
            self.server.close()
            for w in list(self._writers):
                w.transport.abort()
            await asyncio.sleep(0)

        self.lt.call(shut())
        self.lt.close()

    # ------------------------------------------------------------------ behaviours

    async def read_request(self, r: asyncio.StreamReader, w: asyncio.StreamWriter,
                           on_body: Callable[[bytes], None] | None = None) -> dict[str, Any] | None:
        """Parse one request with httptools; answers 100 Continue when asked. None at EOF."""
        state: dict[str, Any] = {"headers": {}, "done": False, "body": 0, "url": b""}

        class P:
            def on_url(self, url: bytes) -> None:
                state["url"] += url

            def on_header(self, name: bytes, value: bytes) -> None:
                state["headers"][name.decode().lower()] = value.decode()

            def on_headers_complete(self) -> None:
                state["head"] = True

            def on_body(self, body: bytes) -> None:
                state["body"] += len(body)
                if on_body:
                    on_body(body)

            def on_message_complete(self) -> None:
                state["done"] = True

        parser = httptools.HttpRequestParser(P())
        continued = False
        while not state["done"]:
            data = await r.read(65536)
            if not data:
                return None
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                state["upgrade"] = True
                state["rest"] = data[exc.args[0]:]
                state["method"] = parser.get_method().decode()
                return state
            if state.get("head") and not continued and state["headers"].get("expect", "").lower() == "100-continue":
                continued = True
                w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.bytes_in += len(data)
        state["method"] = parser.get_method().decode()
        state["keep_alive"] = parser.should_keep_alive()
        self.requests[state["method"]] += 1
        return state

    async def http(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        """Keep-alive server: answers JSON {name, method, url, body_bytes, headers}; /big?n=N streams N bytes."""
        while True:
            req = await self.read_request(r, w)
            if req is None:
                return
            url = req["url"].decode()
            if url.startswith("/big"):
                n = int(url.split("n=")[1])
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
                chunk = b"x" * 65536
                left = n
                while left > 0:
                    piece = chunk if left >= len(chunk) else chunk[:left]
                    w.write(piece)
                    left -= len(piece)
                    await w.drain()
                continue
            body = json.dumps({"name": self.name, "method": req["method"], "url": url, "body_bytes": req["body"],
                               "headers": req["headers"]}).encode()
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                    b"Keep-Alive: timeout=5\r\nConnection: keep-alive, X-Secret\r\nX-Secret: hop\r\n\r\n%s"
                    % (len(body), body))
            await w.drain()

    async def status_500(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            req = await self.read_request(r, w)
            if req is None:
                return
            w.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nbusy\n")
            await w.drain()

    async def hang(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await self.read_request(r, w)
        await asyncio.sleep(30)

    async def truncate(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        """A head and part of the body, then the connection drops."""
        await self.read_request(r, w)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"y" * 10)
        await w.drain()
        w.transport.abort()

    async def reset_after_request(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        """Reads one whole request, then resets the connection before any response byte: close
        with SO_LINGER 0, so the kernel sends a RST instead of a FIN."""
        if await self.read_request(r, w) is None:
            return
        w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()

    async def upgrade_echo(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        """Switches protocols on an upgrade request, then echoes until EOF, then says bye (half-close)."""
        req = await self.read_request(r, w)
        if req is None:
            return
        if not req.get("upgrade") or req["headers"].get("upgrade") != "websocket":
            w.write(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n")
            await w.drain()
            await r.read()  # keeps the connection open: the proxy must close it
            return
        w.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "
                + req["headers"].get("upgrade", "").encode() + b"\r\n\r\n" + req["rest"])
        while True:
            data = await r.read(65536)
            if not data:
                break
            w.write(data)
            await w.drain()
        w.write(b"bye")
        await w.drain()

    async def echo(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        """TCP echo; on EOF writes its name and closes."""
        while True:
            data = await r.read(65536)
            if not data:
                break
            self.bytes_in += len(data)
            w.write(data)
            await w.drain()
        w.write(f"[{self.name}]".encode())
        await w.drain()


def unaccepting_listener() -> tuple[socket.socket, socket.socket, str]:
    """A listening socket whose accept queue is full: connecting to it times out."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(0)
    filler = socket.create_connection(s.getsockname(), timeout=1)
    host, port = s.getsockname()
    return s, filler, f"{host}:{port}"


class DataPlane:
    """fivenines' listeners for ``spec`` (a dict), built by :func:`make_listener`, in a background loop.

    Target groups use static ``targets`` (addresses of real servers); all start serving.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        from fivenines.proxy.backend import Backend, BackendGroup
        from fivenines.proxy.workers import make_listener
        from fivenines.spec import parse_spec, split_hostport

        spec.setdefault("name", "t")
        self.spec = parse_spec(spec)
        self.lt = LoopThread()
        self.groups: dict[str, BackendGroup] = {}
        for name, tg in self.spec.target_groups.items():
            g = BackendGroup.from_spec(name, tg, clock=self.lt.loop.time)
            for i, wt in enumerate(tg.target_list()):
                host, port = split_hostport(wt.address)
                g.add(Backend(f"{name}-{i + 1}", host, port, weight=wt.weight))
            self.groups[name] = g
        self.serve_all()
        self.listeners = []
        for ls in self.spec.listeners:
            lst = make_listener(ls, self.groups)
            self.lt.call(lst.start(ls.host, 0))
            self.listeners.append(lst)
        self.listener = self.listeners[0]
        self.host, self.port = self.listener.address

    def do(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the data plane's loop (group changes must happen there) and return its result."""

        async def run() -> Any:
            return fn()

        return self.lt.call(run())

    def serve_all(self) -> None:
        for g in self.groups.values():
            self.do(lambda g=g: g.set_serving(list(g.backends)))

    def serve(self, group: str, ids: list[str]) -> None:
        self.do(lambda: self.groups[group].set_serving(ids))

    def backend(self, tid: str) -> Any:
        for g in self.groups.values():
            if tid in g.backends:
                return g.backends[tid]
        raise KeyError(tid)

    def conn(self, timeout: float = 5.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str = "GET", path: str = "/", body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def raw(self, data: bytes, timeout: float = 5.0) -> bytes:
        return raw_exchange(self.host, self.port, data, timeout)

    def close(self) -> None:
        async def shut() -> None:
            for lst in self.listeners:
                await lst.drain(1.0)
            for g in self.groups.values():
                for b in g.backends.values():
                    b.close_idle()
            await asyncio.sleep(0)

        self.lt.call(shut())
        self.lt.close()
