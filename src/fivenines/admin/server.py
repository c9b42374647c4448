"""The admin API and dashboard: JSON over HTTP (default 127.0.0.1:9900), described in openapi.yaml.

Read-only (open to loopback clients; the bearer token from anywhere else):
``GET /`` (dashboard), ``/status``, ``/targets/ID``, ``/events``, ``/events/stream``
(server-sent events), ``/metrics`` (Prometheus), ``/healthz``, ``/openapi.yaml``.

Mutating (always the bearer token): ``POST /targets/ID/drain|enable|maintenance``,
``PUT /targets/ID/weight`` (``{"weight": N}``), ``POST /reload``,
``POST /target_groups/G/restart``, ``POST /target_groups/G/scale?count=N|auto`` (a scaled
group); replicated groups: ``POST /target_groups/G/switchover``,
``POST /target_groups/G/targets/T/cut_off``; with ``backup:`` (docs/backup.md)
``POST /target_groups/G/backup|verify?id=ID|restore?from=ID|at=TIME|drill``: each answers
``202`` with an operation to poll at ``GET /target_groups/G/operations/ID`` (read-only, as is
``GET /target_groups/G/backups``, the catalogue).

It serves a :class:`~fivenines.runtime.interface.Runtime`: reads its read models, sends it
commands, follows its events; a command it refuses
(:class:`~fivenines.runtime.interface.CommandRefused`) answers 404, 409 or 400 by its reason.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from importlib import resources

from fivenines.admin.auth import Auth, load_or_create_token, token_path
from fivenines.admin.httpserver import HttpServer, Request, Response
from fivenines.admin.metrics import CONTENT_TYPE, Metrics
from fivenines.runtime.interface import CommandRefused, Refusal, Runtime
from fivenines.spec import split_hostport

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "/openapi.yaml": ("openapi.yaml", "application/yaml"),
}
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_TARGET_ACTIONS = ("drain", "enable", "maintenance")
_REFUSAL_STATUS = {Refusal.UNKNOWN: 404, Refusal.CONFLICT: 409, Refusal.INVALID: 400, Refusal.UNAVAILABLE: 503}


def _asset(name: str) -> bytes:
    folder = "static" if name != "openapi.yaml" else ""
    ref = resources.files("fivenines.admin")
    return (ref / folder / name if folder else ref / name).read_bytes()


def _error(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response.json({"error": message}, status, headers)


def _refused(exc: CommandRefused) -> Response:
    return Response.json({"error": str(exc), **exc.detail}, _REFUSAL_STATUS[exc.why])


class AdminServer:
    def __init__(self, runtime: Runtime, metrics: Metrics) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self._server = HttpServer(self.handle)
        self.url = ""
        self.auth: Auth | None = None
        self.token_file = ""
        self._closing = asyncio.Event()
        self._assets: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"<AdminServer {self.url} connections={len(self._server.connections)}>"

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        """Serve on ``host:port`` (default: the spec's ``admin.listen``). Raises OSError, ConfigError."""
        rt = self.runtime
        if host is None or port is None:
            host, port = split_hostport(rt.spec.admin.listen)
        path = token_path(rt.spec, rt.base_dir, rt.state_dir)
        self.auth = Auth(load_or_create_token(path))
        self.token_file = str(path)
        await self._server.start(host, port)
        h, p = self._server.address
        self.url = f"http://{h}:{p}" if ":" not in h else f"http://[{h}]:{p}"

    async def close(self) -> None:
        self._closing.set()
        self.runtime.events.wake_all()
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
        if path.startswith("/target_groups/") and req.method in ("GET", "HEAD"):
            return await self._group_read(path)
        if path.startswith("/targets/"):
            return self._target_call(req, path)
        if path == "/reload":
            if req.method != "POST":
                return _error(405, f"{req.method} not allowed on /reload; use POST", [("Allow", "POST")])
            result = await self.runtime.reload("admin API")
            return Response.json(result.to_json(), 200 if result.ok else 422)
        if req.method not in ("GET", "HEAD"):
            return _error(405, f"{req.method} not allowed on {path}", [("Allow", "GET, HEAD")])
        if path == "/status":
            return Response.json(self.runtime.status())
        if path == "/events":
            try:
                limit = int(req.query.get("limit", "100"))
                since = int(req.query.get("since", "0"))
            except ValueError:
                return _error(400, "limit and since must be integers")
            events = self.runtime.events.recent(limit, since)
            return Response.json({"events": [e.to_json() for e in events], "last_seq": self.runtime.events.last_seq})
        if path == "/events/stream":
            try:
                since = int(req.query.get("since") or req.headers.get("last-event-id") or "0")
            except ValueError:
                return _error(400, "since must be an integer")
            return Response(200, b"", "text/event-stream", [("X-Accel-Buffering", "no")], self._sse(since))
        if path == "/metrics":
            return Response(200, self.metrics.render(), CONTENT_TYPE)
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
        rt = self.runtime
        tid = parts[0]
        ids = rt.target_ids()
        if tid not in ids:
            return _error(404, f"no target {tid!r}; targets: {', '.join(ids)}")
        try:
            return self._target_command(req, path, parts, self._source(req))
        except CommandRefused as exc:
            return _refused(exc)

    @staticmethod
    def _source(req: Request) -> str:
        return f"admin API from {req.client[0] if req.client else '?'}"

    def _target_command(self, req: Request, path: str, parts: list[str], source: str) -> Response:
        rt = self.runtime
        tid = parts[0]
        if len(parts) == 1:
            if req.method not in ("GET", "HEAD"):
                return _error(405, f"{req.method} not allowed on {path}", [("Allow", "GET, HEAD")])
            return Response.json(rt.target_status(tid))
        action = parts[1]
        if len(parts) == 2 and action in _TARGET_ACTIONS:
            if req.method != "POST":
                return _error(405, f"use POST {path}", [("Allow", "POST")])
            return Response.json(rt.act(tid, action, source))
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
            return Response.json(rt.set_weight(tid, weight, source))
        return _error(404, f"no such path {path}; use /targets/{tid}/drain|enable|maintenance|weight")

    async def _sse(self, since: int) -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n"
        async for ev in self.runtime.events.follow(since, stop=self._closing, heartbeat=10.0):
            if ev is None:
                yield b": keep-alive\n\n"
            else:
                data = json.dumps(ev.to_json(), separators=(",", ":"))
                yield f"id: {ev.seq}\ndata: {data}\n\n".encode()

    async def _group_call(self, req: Request, path: str) -> Response:
        """``POST /target_groups/G/restart`` (a rolling restart), ``.../scale?count=N|auto``; replicated groups:
        ``POST /target_groups/G/switchover[?to=T]``, ``.../targets/T/cut_off``.
        The token was checked by :meth:`handle`."""
        rt = self.runtime
        try:
            restart = re.fullmatch(r"/target_groups/([^/]+)/restart", path)
            if restart is not None:  # a rolling restart (fivenines restart GROUP)
                return Response.json(rt.restart_group(restart.group(1)), 202)
            backup = re.fullmatch(r"/target_groups/([^/]+)/(backup|verify|restore|drill)", path)
            if backup is not None:  # long: an operation to poll (fivenines backup / restore GROUP)
                group = backup.group(1)
                source = f"admin API from {req.client[0] if req.client else '?'}"
                op = rt.backup_command(group, backup.group(2), req.query, source)
                return Response.json(op, 202, [("Location", f"/target_groups/{group}/operations/{op['id']}")])
            scale = re.fullmatch(r"/target_groups/([^/]+)/scale", path)
            if scale is not None:  # a manual count (fivenines scale GROUP N|auto)
                given = req.query.get("count", "")
                if given == "auto":
                    return Response.json(rt.scale(scale.group(1), None, self._source(req)))
                if not given.isdigit():
                    return _error(400, f"count must be a whole number or auto, got {given!r}")
                return Response.json(rt.scale(scale.group(1), int(given), self._source(req)))
            m = re.fullmatch(r"/target_groups/([^/]+)/(switchover|targets/([^/]+)/cut_off)", path)
            if m is None:
                return _error(404, f"no such path {path}")
            if m.group(2) == "switchover":
                return Response.json(await rt.switchover(m.group(1), req.query.get("to") or None))
            try:
                seconds = float(req.query.get("seconds", "5"))
            except ValueError:
                return _error(400, "seconds must be a number")
            return Response.json(rt.cut_off(m.group(1), m.group(3), seconds))
        except CommandRefused as exc:
            return _refused(exc)

    async def _group_read(self, path: str) -> Response:
        """``GET /target_groups/G/backups`` (the catalogue, from the store) and
        ``GET /target_groups/G/operations/ID`` (a backup command's progress and result)."""
        m = re.fullmatch(r"/target_groups/([^/]+)/(backups|operations/([^/]+))", path)
        if m is None:
            return _error(404, f"no such path {path}")
        try:
            if m.group(2) == "backups":
                return Response.json(await self.runtime.backups(m.group(1)))
            return Response.json(self.runtime.backup_operation(m.group(1), m.group(3)))
        except CommandRefused as exc:
            return _refused(exc)
