"""A recording HTTP backend for attack tests: keeps every byte each connection received.

It parses what it receives with a strict parser (llhttp) and answers each complete
request ``200`` with a body naming it, so a test can assert exactly which requests
reached the backend — and that nothing it received was mis-framed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httptools

from tests.helpers import LoopThread


@dataclass
class Received:
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass
class Conn:
    raw: bytearray = field(default_factory=bytearray)
    requests: list[Received] = field(default_factory=list)
    error: str | None = None
    partial: bool = False


class _Proto(asyncio.Protocol):
    def __init__(self, server: RecordingServer) -> None:
        self.server = server
        self.rec = Conn()
        server.conns.append(self.rec)
        server.protos.add(self)
        self.parser = httptools.HttpRequestParser(self)
        self.t: asyncio.Transport | None = None
        self._target = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.rec.raw += data
        if self.rec.error:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.rec.error = f"{type(exc).__name__}: {exc}"
            assert self.t is not None
            self.t.close()

    def on_message_begin(self) -> None:
        self.rec.partial = True
        self._target, self._headers, self._body = b"", [], b""

    def on_url(self, url: bytes) -> None:
        self._target += url

    def on_header(self, n: bytes, v: bytes) -> None:
        self._headers.append((n, v))

    def on_body(self, b: bytes) -> None:
        self._body += b

    def on_message_complete(self) -> None:
        self.rec.partial = False
        r = Received(self.parser.get_method(), self._target, self._headers, self._body)
        self.rec.requests.append(r)
        body = b"recorded " + r.method + b" " + r.target + b"\n"
        assert self.t is not None
        self.t.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


class RecordingServer:
    def __init__(self, lt: LoopThread) -> None:
        self.lt = lt
        self.conns: list[Conn] = []
        self.protos: set[_Proto] = set()

        async def start() -> asyncio.Server:
            return await asyncio.get_running_loop().create_server(lambda: _Proto(self), "127.0.0.1", 0)

        self.server = lt.call(start())
        self.port = self.server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"

    def close(self) -> None:
        """Stop listening and drop every connection (on the server's own loop)."""

        async def close() -> None:
            self.server.close()
            for p in list(self.protos):
                if p.t is not None:
                    p.t.abort()
            await asyncio.sleep(0)

        self.lt.call(close())

    @property
    def requests(self) -> list[Received]:
        return [r for c in self.conns for r in c.requests]

    @property
    def raw(self) -> bytes:
        return b"".join(bytes(c.raw) for c in self.conns)

    def clean(self) -> bool:
        """Everything received parsed as well-framed requests (possibly a last one cut short)."""
        return all(c.error is None for c in self.conns)

    def reset(self) -> None:
        """Forget what was received so far (connections stay: the proxy may reuse them)."""
        for c in self.conns:
            c.requests.clear()
            c.raw.clear()
