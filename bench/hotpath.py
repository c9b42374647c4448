#!/usr/bin/env python3
"""Python cost of one proxied keep-alive request, without the network.

Drives one client connection and one pooled upstream connection of
``fivenines.proxy`` (client.py, upstream.py) with fake transports: a ``GET`` with a ``Host`` header in,
a small ``200`` with ``Content-Length`` back, repeated. What it prints is the
interpreter's share of a request (parsing, framing verdict, balancing, head
rewriting, counters); system calls and the event loop come on top in
``make bench``. ``--profile`` adds a cProfile listing of where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from typing import Any

from fivenines.core.detect import OutcomeSink, OutlierDetector, OutlierPolicy
from fivenines.proxy.backend import Backend, BackendGroup
from fivenines.proxy.client import ClientConnection, http_listener
from fivenines.proxy.listener import ProxySettings
from fivenines.proxy.upstream import UpstreamConnection

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
REQUEST_CLOSE = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 13:00:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n")


class FakeTransport:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if key == "peername" else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...


async def run(n: int, profile: bool, close: bool, cpu: bool = False) -> None:
    group = BackendGroup("web")
    backend = group.add(Backend("web-1", "127.0.0.1", 9))
    group.set_serving(group.backends)
    # the passive detector with the spec's defaults, hooked in as `fivenines up` does
    group.observe = OutcomeSink(OutlierDetector(1, OutlierPolicy()), lambda e: None).record
    listener = http_listener(lambda: group, 8080, ProxySettings())
    listener.time = time.monotonic
    client, ct = ClientConnection(listener), FakeTransport()
    client.connection_made(ct)  # type: ignore[arg-type]
    upstream, ut = UpstreamConnection(backend), FakeTransport()
    upstream.connection_made(ut)  # type: ignore[arg-type]
    backend.put_idle(upstream, 0.0)

    def loop(k: int) -> None:
        for _ in range(k):
            client.data_received(REQUEST)
            upstream.data_received(RESPONSE)
            ct.out.clear()
            ut.out.clear()

    def loop_close(k: int) -> None:  # a connection per request: accepted, one request, closed by us
        for _ in range(k):
            c, t = ClientConnection(listener), FakeTransport()
            c.connection_made(t)  # type: ignore[arg-type]
            c.data_received(REQUEST_CLOSE)
            upstream.data_received(RESPONSE)
            c.connection_lost(None)
            ut.out.clear()

    if close:
        loop = loop_close

    loop(1000)
    if not backend.idle:
        raise SystemExit("hotpath: the upstream connection did not return to the pool")
    clock = time.process_time if cpu else time.perf_counter
    t = clock()
    loop(n)
    dt = clock() - t
    what = "request on a new connection" if close else "keep-alive request"
    print(f"{dt / n * 1e6:.2f} µs of {'CPU time' if cpu else 'Python'} per proxied {what} ({n} requests)")
    if profile:
        pr = cProfile.Profile()
        pr.enable()
        loop(min(n, 50_000))
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(25)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("-n", type=int, default=100_000, help="requests (default 100000)")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile listing")
    ap.add_argument("--close", action="store_true", help="a new client connection per request")
    ap.add_argument("--cpu", action="store_true",
                    help="measure this process's CPU time, not the wall clock (steadier on a shared machine)")
    args = ap.parse_args()
    asyncio.run(run(args.n, args.profile, args.close, args.cpu))


if __name__ == "__main__":
    main()
