"""A tiny asyncio HTTP/1.1 GET for the admin API and the demo's control paths (one request per connection)."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

from fivenines.chaos import ChaosError


async def get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    """``GET url`` → ``(status, body)``. Raises :class:`ChaosError` when unreachable or late."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    request = f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\nAccept: application/json\r\n\r\n"
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request.encode("latin-1"))
            data = await reader.read(-1)
    except (OSError, TimeoutError) as exc:
        raise ChaosError(f"GET {url}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else 'no answer'}"
                         f" (within {timeout:g}s)") from exc
    finally:
        if writer is not None:
            writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError) as exc:
        raise ChaosError(f"GET {url}: not an HTTP response: {head[:60]!r}") from exc
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return status, body


def _unchunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return bytes(out)


async def get_json(url: str, timeout: float = 3.0) -> Any:
    status, body = await get(url, timeout)
    if status != 200:
        raise ChaosError(f"GET {url}: HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ChaosError(f"GET {url}: not JSON: {body[:80]!r}") from exc
