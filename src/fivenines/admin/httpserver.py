"""A small asyncio HTTP/1.1 server on httptools, for the demo backend and the admin API.

Not the data plane (that is :mod:`fivenines.proxy`): this serves application
handlers. Keep-alive, pipelining (answered in order), Content-Length and chunked
request bodies (bounded), and streamed responses (for server-sent events).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import httptools

from fivenines.proxy.tls_socket import loop_server

MAX_BODY = 1 << 20


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    client: tuple[str, int] | None
    raw_headers: list[tuple[str, str]] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: AsyncIterator[bytes] | None = None

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
        body = json.dumps(data, indent=None, separators=(",", ":"), default=str).encode() + b"\n"
        return cls(status, body, "application/json", headers or [])

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        return cls(status, text.encode())


Handler = Callable[[Request], Awaitable[Response]]


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


class _BadRequest(Exception):
    pass


class _Protocol(asyncio.Protocol):
    def __init__(self, handler: Handler, server: HttpServer) -> None:
        self._handler = handler
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._queue: deque[tuple[Request, bool]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self._client: tuple[str, int] | None = None

    # -- transport callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._client = (peer[0], peer[1]) if peer else None
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        if not self._server.connections:
            self._server.no_connections.set()
        self._closing = True
        if self._worker is not None:
            self._worker.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, _BadRequest):
            self._send_error(400)
        except httptools.HttpParserUpgrade:
            self._send_error(400)

    # -- parser callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = []
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_BODY:
            raise _BadRequest
        self._body.append(body)

    def on_message_complete(self) -> None:
        url = httptools.parse_url(self._url)
        query = {k: v[-1] for k, v in parse_qs((url.query or b"").decode("latin-1")).items()}
        req = Request(
            method=self._parser.get_method().decode("ascii", "replace"),
            path=(url.path or b"/").decode("latin-1"),
            query=query,
            headers=dict(self._headers),
            body=b"".join(self._body),
            client=self._client,
            raw_headers=self._headers,
        )
        self._queue.append((req, self._parser.should_keep_alive()))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work())

    # -- responding
    async def _work(self) -> None:
        while self._queue and not self._closing:
            req, keep_alive = self._queue.popleft()
            try:
                resp = await self._handler(req)
            except asyncio.CancelledError:
                raise
            except Exception:  # a handler bug answers 500 and keeps the server up
                import logging

                logging.getLogger("fivenines.http").exception("handler failed for %s %s", req.method, req.path)
                resp = Response.text("internal error\n", 500)
            keep_alive = keep_alive and not self._server.closing
            await self._write(resp, keep_alive, head_only=req.method == "HEAD")
            if not keep_alive:
                self._close()
                return

    async def _write(self, resp: Response, keep_alive: bool, head_only: bool) -> None:
        t = self._transport
        if t is None or t.is_closing():
            return
        lines = [b"HTTP/1.1 %d %s\r\n" % (resp.status, _reason(resp.status))]
        lines.append(b"Content-Type: " + resp.content_type.encode() + b"\r\n")
        for k, v in resp.headers:
            lines.append(f"{k}: {v}\r\n".encode("latin-1"))
        if not keep_alive:
            lines.append(b"Connection: close\r\n")
        if resp.stream is None:
            lines.append(b"Content-Length: %d\r\n\r\n" % len(resp.body))
            if not head_only:
                lines.append(resp.body)
            t.write(b"".join(lines))
            return
        lines.append(b"Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n\r\n")
        t.write(b"".join(lines))
        try:
            async for chunk in resp.stream:
                if t.is_closing():
                    break
                if chunk:
                    t.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            else:
                t.write(b"0\r\n\r\n")
        finally:
            aclose = getattr(resp.stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def _send_error(self, status: int) -> None:
        if self._transport is not None and not self._transport.is_closing():
            body = _reason(status) + b"\n"
            self._transport.write(
                b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (status, _reason(status), len(body), body)
            )
        self._close()

    def _close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def close_if_idle(self) -> None:
        if not self._queue and (self._worker is None or self._worker.done()):
            self._close()


class HttpServer:
    """A running server: ``address``, ``close()``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections: set[_Protocol] = set()
        self.closing = False
        self.no_connections = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool = False, backlog: int = 1024) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop_server(loop, lambda: _Protocol(self.handler, self), host, port,
                                         reuse_port=reuse_port, backlog=backlog)

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        sock = self._server.sockets[0].getsockname()
        return sock[0], sock[1]

    async def close(self, timeout: float = 2.0) -> None:
        self.closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close_if_idle()
        if self.connections:
            self.no_connections.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self.no_connections.wait()
            except TimeoutError:
                pass
        for conn in list(self.connections):
            conn._close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)


async def serve(handler: Handler, host: str, port: int, **kw: Any) -> HttpServer:
    server = HttpServer(handler)
    await server.start(host, port, **kw)
    return server
