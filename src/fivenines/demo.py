"""The demo backend: ``python -m fivenines.demo --port P``.

Answers every path with its instance id and port (plain text, or JSON when the
client accepts ``application/json``), ``/health`` for checks, and misbehaves on
request, for demonstrations and tests:

* ``/_fail``    → every request (``/health`` included) answers 500 until ``/_recover``;
* ``/_hang``    → stops answering anything (``?s=N``: for N seconds only);
* ``/_slow?ms=N`` → every request is delayed N ms until ``/_recover``;
* ``/_recover`` → back to normal;
* ``/_agent``   → the agent line it reports (``up``; ``/_agent?say=drain`` changes it);
* ``/_echo``    → the request as JSON (method, path, headers, body length).

With ``--cost-ms N`` every request but ``/health`` and the control paths costs N ms:
at most ``--capacity K`` requests (default 1) are worked on at once, each for N ms,
and the others queue, so an instance serves at most ``K x 1000 / N`` requests a
second and overload shows as latency, as in a server with K workers. With
``--burn`` the N ms are CPU time burnt in the event loop (the capacity is then one
core's worth, shared with whatever else the machine runs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time

from fivenines.admin.httpserver import Request, Response, serve
from fivenines.proxy import aio


class DemoApp:
    def __init__(self, instance_id: str, port: int, cost_ms: float = 0.0, capacity: int = 1,
                 burn: bool = False) -> None:
        self.id = instance_id
        self.port = port
        self.cost_s = cost_ms / 1000
        self.burn = burn
        self.workers = asyncio.Semaphore(capacity)
        self.failing = False
        self.slow_ms = 0
        self.hang_until: float | None = None  # loop time; inf = for ever
        self.requests = 0
        self.agent = "up"
        self._recovered = asyncio.Event()

    async def handle(self, req: Request) -> Response:
        self.requests += 1
        loop = asyncio.get_running_loop()
        if self.hang_until is not None:
            if loop.time() < self.hang_until:
                await self._hang(loop)
            self.hang_until = None
        path = req.path
        if path.startswith("/_"):
            return self._control(req, loop)
        if self.slow_ms:
            await asyncio.sleep(self.slow_ms / 1000)
        if self.cost_s and path != "/health":
            await self._work()
        if self.failing:
            return Response.text(f"instance {self.id} failing (demo /_fail)\n", 500)
        if path == "/health":
            return Response.text("ok\n")
        data = {"instance": self.id, "port": self.port, "pid": os.getpid(), "path": path}
        if "application/json" in req.headers.get("accept", ""):
            return Response.json(data)
        return Response.text(f"instance {self.id} port {self.port} path {path}\n")

    async def _work(self) -> None:
        """The fixed cost of one request: CPU burnt in the loop, or a worker held while waiting."""
        if self.burn:
            end = time.process_time() + self.cost_s
            while time.process_time() < end:
                pass
            return
        async with self.workers:
            await asyncio.sleep(self.cost_s)

    async def _hang(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.hang_until is not None
        if self.hang_until == float("inf"):
            await asyncio.Event().wait()
        await asyncio.sleep(max(0.0, self.hang_until - loop.time()))

    def _control(self, req: Request, loop: asyncio.AbstractEventLoop) -> Response:
        path = req.path
        if path == "/_fail":
            self.failing = True
        elif path == "/_recover":
            self.failing, self.slow_ms, self.hang_until = False, 0, None
        elif path == "/_slow":
            self.slow_ms = int(req.query.get("ms", "1000"))
        elif path == "/_hang":
            secs = req.query.get("s")
            self.hang_until = loop.time() + float(secs) if secs else float("inf")
        elif path == "/_agent":
            self.agent = req.query.get("say", self.agent)
            return Response.text(f"{self.agent}\n")
        elif path == "/_echo":
            return Response.json(
                {
                    "instance": self.id,
                    "method": req.method,
                    "path": path,
                    "query": req.query,
                    "headers": [[k, v] for k, v in req.raw_headers],
                    "body_length": len(req.body),
                }
            )
        else:
            return Response.text(f"unknown control path {path}\n", 404)
        return Response.text(f"instance {self.id}: {path[2:]}\n")


async def _main(host: str, port: int, instance_id: str, cost_ms: float = 0.0, capacity: int = 1,
                burn: bool = False) -> None:
    app = DemoApp(instance_id, port, cost_ms, capacity, burn)
    server = await serve(app.handle, host, port)
    app.port = server.address[1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"demo instance {instance_id} listening on {host}:{server.address[1]}", file=sys.stderr, flush=True)
    await stop.wait()
    await server.close(timeout=1.0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m fivenines.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--id", default=os.environ.get("FIVENINES_TARGET_ID", ""))
    ap.add_argument("--cost-ms", type=float, default=0.0, help="time each request costs (not /health)")
    ap.add_argument("--capacity", type=int, default=1, help="requests worked on at once (with --cost-ms)")
    ap.add_argument("--burn", action="store_true", help="spend the cost as CPU time instead of waiting")
    args = ap.parse_args(argv)
    if args.cost_ms < 0 or args.capacity < 1:
        ap.error("--cost-ms must be >= 0 and --capacity >= 1")
    aio.run(_main(args.host, args.port, args.id or f"demo-{args.port}", args.cost_ms, args.capacity, args.burn))


if __name__ == "__main__":
    main()
