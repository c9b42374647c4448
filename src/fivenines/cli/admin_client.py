"""The one HTTP client for a running fivenines' admin API: the CLI and chaos both use it.

One request per connection (``Connection: close``) over :mod:`http.client` (no proxy
from the environment: the admin API is usually on loopback), JSON in and out, the
bearer token when given. Every failure is one :class:`AdminError` naming the URL:

* :class:`AdminUnreachable` (a :class:`~fivenines.errors.NetworkError`): refused,
  reset, closed early; :class:`AdminTimeout` when no answer came in time;
* :class:`AdminProtocolError`: the answer is not HTTP, or not the JSON it should be;
* :class:`AdminRefused`: an HTTP status the caller did not expect, with the
  ``error`` fivenines gave (``status`` and ``data`` are kept for the caller).

:meth:`AdminClient.request` returns any status with its decoded body, for callers
that tell statuses apart (422 of a rejected reload); :meth:`AdminClient.get_json`
wants a 200. The ``a*`` coroutines run the same calls in a thread for asyncio
callers (chaos polls ``/status`` and ``/events`` while its load generator runs on
the loop). Chaos also sends the demo backend's control calls (``/_fail``,
``/_recover``) through :func:`call`.
"""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

from fivenines.errors import NetworkError, ProtocolError, ProviderError, TimedOut


class AdminError(ProviderError):
    """A call to fivenines' admin API (or a demo backend's control path) did not succeed."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"{url}: {reason}")


class AdminUnreachable(AdminError, NetworkError):
    """No connection, or the connection broke before a whole answer."""


class AdminTimeout(AdminUnreachable, TimedOut):
    """No connection or no answer within the timeout."""


class AdminProtocolError(AdminError, ProtocolError):
    """The peer answered, but not with HTTP, or not with the JSON it should have."""


class AdminRefused(AdminError):
    """An HTTP status the caller did not expect; ``data`` is the decoded body (``{"error": ...}``)."""

    def __init__(self, url: str, status: int, data: Any) -> None:
        self.status = status
        self.data = data
        detail = data.get("error", "") if isinstance(data, dict) else ""
        super().__init__(url, f"HTTP {status}" + (f": {detail}" if detail else ""))


def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host = parts.hostname or "127.0.0.1"
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return cls(host, parts.port, timeout=timeout), target


def _headers(token: str | None, body: bytes | None, accept: str) -> dict[str, str]:
    headers = {"Accept": accept, "Connection": "close"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _unreachable(url: str, exc: OSError | http.client.HTTPException, timeout: float) -> AdminError:
    """A socket or http.client failure as an AdminError naming ``url`` (the boundary's one translation)."""
    if isinstance(exc, TimeoutError):
        return AdminTimeout(url, f"no answer within {timeout:g}s")
    if isinstance(exc, http.client.RemoteDisconnected | http.client.IncompleteRead):
        return AdminUnreachable(url, "the connection closed before a whole answer")
    if isinstance(exc, http.client.HTTPException):
        return AdminProtocolError(url, f"not an HTTP answer ({type(exc).__name__}: {exc})")
    return AdminUnreachable(url, str(exc.strerror or exc))


def call(method: str, url: str, *, token: str | None = None, body: Any = None, timeout: float = 10.0,
         accept: str = "application/json") -> tuple[int, bytes]:
    """One request: ``(status, raw body)`` for any status; an :class:`AdminError` when there is no answer."""
    data = json.dumps(body).encode() if body is not None else None
    conn, target = _connection(url, timeout)
    try:
        conn.request(method, target, body=data, headers=_headers(token, data, accept))
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise _unreachable(url, exc, timeout) from exc
    finally:
        conn.close()


def decode(url: str, status: int, raw: bytes) -> Any:
    """The JSON body of an answer. An error status may carry a non-JSON body: it becomes ``{"error": text}``."""
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        if status >= 400:
            return {"error": raw[:200].decode("utf-8", "replace").strip() or http.client.responses.get(status, "")}
        raise AdminProtocolError(url, f"not JSON: {raw[:80]!r}") from exc


class AdminClient:
    """Calls to the admin API at ``base`` (``http://host:port``), with the bearer token when given."""

    def __init__(self, base: str, token: str | None = None, timeout: float = 10.0) -> None:
        self.base = base.rstrip("/") if "://" in base else f"http://{base.rstrip('/')}"
        self.token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"<AdminClient {self.base} {'with' if self.token else 'without'} token>"

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> tuple[int, Any]:
        """``(status, decoded JSON)`` for any status."""
        url = self.url(path)
        status, raw = call(method, url, token=self.token, body=body, timeout=timeout or self.timeout)
        return status, decode(url, status, raw)

    def expect(self, status: int, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
        """The decoded body of an answer with ``status``; :class:`AdminRefused` for any other."""
        got, data = self.request(method, path, body, timeout=timeout)
        if got != status:
            raise AdminRefused(self.url(path), got, data)
        return data

    def get_json(self, path: str) -> Any:
        return self.expect(200, "GET", path)

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = self.get_json("/status")
        return data

    def events(self, limit: int, since: int = 0) -> dict[str, Any]:
        data: dict[str, Any] = self.get_json(f"/events?limit={limit}&since={since}")
        return data

    def target_action(self, target: str, action: str) -> Any:
        """``drain``, ``enable`` or ``maintenance`` a target."""
        return self.expect(200, "POST", f"/targets/{quote(target, safe='')}/{action}")

    def set_weight(self, target: str, weight: int) -> Any:
        return self.expect(200, "PUT", f"/targets/{quote(target, safe='')}/weight", {"weight": weight})

    def group_call(self, group: str, action: str, query: str = "", *, status: int = 200,
                   timeout: float | None = None) -> Any:
        """``POST /target_groups/GROUP/ACTION`` (``restart``, ``switchover``, ``backup`` ...)."""
        path = f"/target_groups/{quote(group, safe='')}/{action}" + (f"?{query}" if query else "")
        return self.expect(status, "POST", path, timeout=timeout)

    def group_get(self, group: str, what: str) -> Any:
        """``GET /target_groups/GROUP/WHAT`` (``backups``, ``operations/ID``): the decoded 200."""
        return self.get_json(f"/target_groups/{quote(group, safe='')}/{what}")

    def scale(self, group: str, count: int | None) -> Any:
        """``POST /target_groups/GROUP/scale?count=N`` (``None``: ``count=auto``); the group's scaling status."""
        return self.group_call(group, "scale", f"count={'auto' if count is None else count}")

    def stream_events(self, since: int, timeout: float = 60.0) -> Iterator[dict[str, Any]]:
        """Events after ``since`` as they happen (``/events/stream``, server-sent events). Connects
        now (an error here is raised now); the events then come until fivenines closes the stream
        (:class:`AdminUnreachable`). fivenines sends a heartbeat every 10 s, well within ``timeout``."""
        url = self.url(f"/events/stream?since={since}")
        conn, target = _connection(url, timeout)
        try:
            conn.request("GET", target, headers=_headers(self.token, None, "text/event-stream"))
            resp = conn.getresponse()
            if resp.status != 200:
                raise AdminRefused(url, resp.status, decode(url, resp.status, resp.read()))
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _unreachable(url, exc, timeout) from exc
        except AdminError:
            conn.close()
            raise
        return _events(url, conn, resp, timeout)


def _events(url: str, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse,
            timeout: float) -> Iterator[dict[str, Any]]:
    try:
        while True:
            try:
                raw = resp.readline()
            except (OSError, http.client.HTTPException) as exc:
                raise _unreachable(url, exc, timeout) from exc
            if not raw:
                raise AdminUnreachable(url, "fivenines closed the stream")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("data: "):
                try:
                    yield json.loads(line[6:])
                except ValueError as exc:
                    raise AdminProtocolError(url, f"an event that is not JSON: {line[:80]!r}") from exc
    finally:
        conn.close()


# --------------------------------------------------------------------------- for asyncio callers


async def aget(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    """``GET url`` → ``(status, raw body)``, in a thread: the caller's loop keeps running."""
    return await asyncio.to_thread(call, "GET", url, timeout=timeout)


async def aget_json(url: str, timeout: float = 3.0) -> Any:
    """``GET url`` → decoded JSON of a 200; :class:`AdminRefused` for any other status."""
    status, raw = await aget(url, timeout)
    data = decode(url, status, raw)
    if status != 200:
        raise AdminRefused(url, status, data)
    return data
