"""A tiny HTTPS server on the context layer (fivenines.proxy.tls), for tests of real TLS clients.

Each request is answered 200 with a JSON body of what the server saw: the protocol
version, cipher, ALPN and the client identity headers. :class:`TlsTestServer` runs it
on a loop in a thread (so tests can reload it); ``python -m tests.tls_server`` runs it
as a process (ticket resumption across processes) and prints its port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from fivenines.proxy.tls import ListenerTls
from fivenines.spec import ListenerSpec

T = TypeVar("T")


class _Echo(asyncio.Protocol):
    def __init__(self, tls: ListenerTls, open_: set[_Echo] | None = None) -> None:
        self.tls = tls
        self.open = open_ if open_ is not None else set()  # the server's connections still open
        self.buf = b""
        self.transport: Any = None  # asyncio's or uvloop's SSL transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open.discard(self)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            obj = self.transport.get_extra_info("ssl_object")
            body = json.dumps({
                "version": obj.version(), "cipher": obj.cipher()[0], "alpn": obj.selected_alpn_protocol(),
                "identity": self.tls.client_identity(obj),
            }).encode()
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(body), body))
            if b"connection: close" in head.lower():
                self.transport.close()
                return


def listener(data: dict[str, Any]) -> ListenerSpec:
    return ListenerSpec.model_validate({"port": 0, "default_target_group": "web", **data})


class TlsTestServer:
    """The server on its own loop in a thread; ``port`` once started; :meth:`call` runs on the loop."""

    def __init__(self, spec: dict[str, Any], base: Path, secret: bytes | None = None,
                 loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop) -> None:
        self.base = base
        self.open: set[_Echo] = set()
        self.loop = loop_factory()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tls: ListenerTls = self.call(lambda: ListenerTls(listener(spec), base, ticket_secret=secret))
        self.server: asyncio.Server = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        self.port: int = self.server.sockets[0].getsockname()[1]

    async def _start(self) -> asyncio.Server:
        return await self.loop.create_server(lambda: _Echo(self.tls, self.open), "127.0.0.1", 0, ssl=self.tls.context,
                                             ssl_handshake_timeout=5)

    def call(self, fn: Callable[[], T]) -> T:
        fut: Future[T] = Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return fut.result(10)

    def reload(self, spec: dict[str, Any]) -> list[str]:
        return self.call(lambda: self.tls.reload(listener(spec), self.base))

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            for conn in list(self.open):  # a client that kept its connection: closed, not left to GC
                conn.transport.abort()
            await self.server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True, help="the listener as JSON")
    ap.add_argument("--base", required=True)
    ap.add_argument("--secret-hex", default="")
    args = ap.parse_args()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        tls = ListenerTls(listener(json.loads(args.spec)), Path(args.base),
                          ticket_secret=bytes.fromhex(args.secret_hex) if args.secret_hex else None)
        server = await loop.create_server(lambda: _Echo(tls), "127.0.0.1", 0, ssl=tls.context)
        print(server.sockets[0].getsockname()[1], flush=True)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        server.close()

    asyncio.run(serve())
    sys.exit(0)


if __name__ == "__main__":
    main()
