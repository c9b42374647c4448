"""The admin API: JSON over HTTP on loopback (default 127.0.0.1:9900)."""

from __future__ import annotations

import re
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
        if req.method == "POST":
            return await self.handle_post(req, path)
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

    async def handle_post(self, req: Request, path: str) -> Response:
        """Mutating calls: need ``Authorization: Bearer TOKEN`` (the token file in the state dir)."""
        from fivenines.admin.token import authorized
        from fivenines.core.replication import ReplicationError

        if not authorized(req.headers.get("authorization"), self.controller.admin_token):
            return Response.json({"error": "missing or wrong bearer token (see the admin.token file in the "
                                           "state dir)"}, 401)
        restart = re.fullmatch(r"/target_groups/([^/]+)/restart", path)
        if restart is not None:  # a rolling restart (fivenines restart GROUP)
            code, body = self.controller.restart_group(restart.group(1))
            return Response.json(body, code)
        m = re.fullmatch(r"/target_groups/([^/]+)/(switchover|targets/([^/]+)/cut_off)", path)
        if m is None:
            return Response.json({"error": f"no such path {path}"}, 404)
        g = self.controller.groups.get(m.group(1))
        if g is None:
            return Response.json({"error": f"no target group {m.group(1)!r}"}, 404)
        if g.replication is None:
            return Response.json({"error": f"target group {g.name!r} is not replicated"}, 409)
        try:
            if m.group(2) == "switchover":
                return Response.json(await g.replication.switchover(req.query.get("to") or None))
            seconds = float(req.query.get("seconds", "5"))
            g.replication.cut_off(m.group(3), seconds)
            return Response.json({"group": g.name, "target": m.group(3), "cut_off_s": seconds})
        except ValueError:
            return Response.json({"error": "seconds must be a number"}, 400)
        except ReplicationError as exc:
            return Response.json({"error": str(exc)}, 409)
