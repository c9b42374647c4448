"""The admin API and dashboard: JSON over HTTP (default 127.0.0.1:9900), described in openapi.yaml.

Read-only (open to loopback clients; the bearer token from anywhere else):
``GET /`` (dashboard), ``/status``, ``/targets/ID``, ``/events``, ``/events/stream``
(server-sent events), ``/metrics`` (Prometheus), ``/healthz``, ``/openapi.yaml``.

Mutating (always the bearer token): ``POST /targets/ID/drain|enable|maintenance``,
``PUT /targets/ID/weight`` (``{"weight": N}``), ``POST /reload``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from importlib import resources
from typing import TYPE_CHECKING

from fivenines.admin.auth import Auth, load_or_create_token, token_path
from fivenines.httpserver import HttpServer, Request, Response

if TYPE_CHECKING:
    from fivenines.runtime.controller import Controller

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "/openapi.yaml": ("openapi.yaml", "application/yaml"),
}
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_TARGET_ACTIONS = ("drain", "enable", "maintenance")


def _asset(name: str) -> bytes:
    folder = "static" if name != "openapi.yaml" else ""
    ref = resources.files("fivenines.admin")
    return (ref / folder / name if folder else ref / name).read_bytes()


def _error(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response.json({"error": message}, status, headers)


class AdminServer:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self._server = HttpServer(self.handle)
        self.url = ""
        self.auth: Auth | None = None
        self.token_file = ""
        self._closing = asyncio.Event()
        self._assets: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"<AdminServer {self.url} connections={len(self._server.connections)}>"

    async def start(self, host: str, port: int) -> None:
        ctl = self.controller
        path = token_path(ctl.spec, ctl.base_dir, ctl.state_dir)
        token = load_or_create_token(path)
        self.auth = Auth(token)
        ctl.admin_token = token  # for the controller's own clients (one token for every admin call)
        self.token_file = str(path)
        await self._server.start(host, port)
        h, p = self._server.address
        self.url = f"http://{h}:{p}" if ":" not in h else f"http://[{h}]:{p}"

    async def close(self) -> None:
        self._closing.set()
        self.controller.events.wake_all()
        await self._server.close(timeout=1.0)

    # ------------------------------------------------------------------ dispatch

    async def handle(self, req: Request) -> Response:
        path = req.path.rstrip("/") or "/"
        mutating = req.method in _MUTATING
        assert self.auth is not None
        client = req.client[0] if req.client else None
        if not self.auth.allowed(req.headers.get("authorization"), client, mutating):
            why = ("this call changes fivenines: it needs the admin bearer token (Authorization: Bearer TOKEN; "
                   "the token is in admin.token_file, by default STATE_DIR/admin.token)")
            if not mutating:
                why = "calls from outside loopback need the admin bearer token (Authorization: Bearer TOKEN)"
            return _error(401, why, [("WWW-Authenticate", 'Bearer realm="fivenines"')])
        if path.startswith("/target_groups/") and req.method == "POST":
            return await self._group_call(req, path)
        if path.startswith("/targets/"):
            return self._target_call(req, path)
        if path == "/reload":
            if req.method != "POST":
                return _error(405, f"{req.method} not allowed on /reload; use POST", [("Allow", "POST")])
            result = await self.controller.reloader.reload("admin API")
            return Response.json(result.to_json(), 200 if result.ok else 422)
        if req.method not in ("GET", "HEAD"):
            return _error(405, f"{req.method} not allowed on {path}", [("Allow", "GET, HEAD")])
        if path == "/status":
            return Response.json(self.controller.status())
        if path == "/events":
            try:
                limit = int(req.query.get("limit", "100"))
                since = int(req.query.get("since", "0"))
            except ValueError:
                return _error(400, "limit and since must be integers")
            events = self.controller.events.recent(limit, since)
            return Response.json({"events": [e.to_json() for e in events], "last_seq": self.controller.events.last_seq})
        if path == "/events/stream":
            try:
                since = int(req.query.get("since") or req.headers.get("last-event-id") or "0")
            except ValueError:
                return _error(400, "since must be an integer")
            return Response(200, b"", "text/event-stream", [("X-Accel-Buffering", "no")], self._sse(since))
        if path == "/metrics":
            from fivenines.admin.metrics import CONTENT_TYPE

            return Response(200, self.controller.metrics.render(), CONTENT_TYPE)
        if path == "/healthz":
            return Response.json({"ok": True})
        if path == "/" and "application/json" in req.headers.get("accept", ""):
            return Response.json({"dashboard": "/", "status": "/status", "events": "/events",
                                  "metrics": "/metrics", "openapi": "/openapi.yaml"})
        if path in _STATIC:
            name, ctype = _STATIC[path]
            if name not in self._assets:
                self._assets[name] = _asset(name)
            return Response(200, self._assets[name], ctype, [("Cache-Control", "no-cache")])
        return _error(404, f"no such path {path}")

    def _target_call(self, req: Request, path: str) -> Response:
        parts = path.split("/")[2:]  # /targets/ID[/action]
        ctl = self.controller
        tid = parts[0]
        t = ctl.target(tid)
        if t is None:
            return _error(404, f"no target {tid!r}; targets: {', '.join(x.id for g in ctl.groups.values() for x in g.targets)}")
        source = f"admin API from {req.client[0] if req.client else '?'}"
        if len(parts) == 1:
            if req.method not in ("GET", "HEAD"):
                return _error(405, f"{req.method} not allowed on {path}", [("Allow", "GET, HEAD")])
            return Response.json(ctl.target_status(t))
        action = parts[1]
        if len(parts) == 2 and action in _TARGET_ACTIONS:
            if req.method != "POST":
                return _error(405, f"use POST {path}", [("Allow", "POST")])
            try:
                return Response.json(ctl.operator.act(tid, action, source))
            except ValueError as exc:
                return _error(409, str(exc))
        if len(parts) == 2 and action == "weight":
            if req.method != "PUT":
                return _error(405, f"use PUT {path} with {{\"weight\": N}}", [("Allow", "PUT")])
            try:
                body = req.json()
                weight = body["weight"] if isinstance(body, dict) else body
                if isinstance(weight, bool) or not isinstance(weight, int):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                return _error(400, 'body must be {"weight": N} with N an integer 0-1000')
            try:
                return Response.json(ctl.operator.set_weight(tid, weight, source))
            except ValueError as exc:
                return _error(400, str(exc))
        return _error(404, f"no such path {path}; use /targets/{tid}/drain|enable|maintenance|weight")

    async def _sse(self, since: int) -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n"
        async for ev in self.controller.events.follow(since, stop=self._closing, heartbeat=10.0):
            if ev is None:
                yield b": keep-alive\n\n"
            else:
                data = json.dumps(ev.to_json(), separators=(",", ":"))
                yield f"id: {ev.seq}\ndata: {data}\n\n".encode()

    async def _group_call(self, req: Request, path: str) -> Response:
        """``POST /target_groups/G/restart`` (a rolling restart); replicated groups:
        ``POST /target_groups/G/switchover[?to=T]``, ``.../targets/T/cut_off``.
        The token was checked by :meth:`handle`."""
        from fivenines.core.replication import ReplicationError

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
