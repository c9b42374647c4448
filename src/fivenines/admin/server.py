"""The admin API: JSON over HTTP on loopback (default 127.0.0.1:9900)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fivenines.httpserver import HttpServer, Request, Response

if TYPE_CHECKING:
    from fivenines.runtime.controller import Controller


class AdminServer:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self._server = HttpServer(self.handle)
        self.url = ""

    async def start(self, host: str, port: int) -> None:
        await self._server.start(host, port)
        h, p = self._server.address
        self.url = f"http://{h}:{p}"

    async def close(self) -> None:
        await self._server.close(timeout=1.0)

    async def handle(self, req: Request) -> Response:
        path = req.path.rstrip("/") or "/"
        parts = path.split("/")
        if req.method == "POST" and len(parts) == 4 and parts[1] == "groups" and parts[3] == "restart":
            code, body = self.controller.restart_group(parts[2])
            return Response.json(body, code)
        if req.method not in ("GET", "HEAD"):
            return Response.json({"error": f"{req.method} not allowed on {path}"}, 405)
        if path == "/status":
            return Response.json(self.controller.status())
        if path == "/events":
            limit = int(req.query.get("limit", "100"))
            since = int(req.query.get("since", "0"))
            return Response.json({"events": [e.to_json() for e in self.controller.events.recent(limit, since)]})
        if path == "/healthz":
            return Response.json({"ok": True})
        if path == "/":
            return Response.json({"status": "/status", "events": "/events"})
        return Response.json({"error": f"no such path {path}"}, 404)
