"""Health check probes: one check of one target, with its own timeout. I/O only.

The result is a :class:`~fivenines.core.health.CheckResult` with an ELB reason code;
what the result means for the target is decided in :mod:`fivenines.core.health`.
"""

from __future__ import annotations

import asyncio
import time

from fivenines.core.health import CheckResult, Reason
from fivenines.spec import matches


class _StatusLine(asyncio.Protocol):
    """Send one request, resolve with the first response line."""

    def __init__(self, request: bytes, fut: asyncio.Future[bytes]) -> None:
        self._request = request
        self._fut = fut
        self._buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._request:
            transport.write(self._request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if b"\n" in self._buf and not self._fut.done():
            self._fut.set_result(self._buf.split(b"\n", 1)[0])

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._fut.done():
            self._fut.set_exception(exc or ConnectionResetError("closed before a status line"))


async def _exchange(host: str, port: int, request: bytes, timeout: float) -> tuple[bytes | None, float]:
    """Connect and (when ``request``) read a status line. Raises TimeoutError / OSError."""
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    fut: asyncio.Future[bytes] = loop.create_future()
    transport: asyncio.BaseTransport | None = None
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(lambda: _StatusLine(request, fut), host, port)
            line = await fut if request else None
    finally:
        if transport is not None:
            transport.close()
        if fut.done() and not fut.cancelled():
            fut.exception()  # retrieved: a reset after the answer is not an error
    return line, time.perf_counter() - start


async def tcp_check(host: str, port: int, timeout: float) -> CheckResult:
    start = time.perf_counter()
    try:
        _, elapsed = await _exchange(host, port, b"", timeout)
    except TimeoutError:
        return CheckResult.failed(Reason.TIMEOUT, f"no connection in {timeout}s", time.perf_counter() - start)
    except OSError as exc:
        return CheckResult.failed(Reason.FAILED_HEALTH_CHECKS, f"connect: {exc.strerror or exc}", time.perf_counter() - start)
    return CheckResult.passed("connected", elapsed)


async def http_check(
    host: str,
    port: int,
    path: str,
    timeout: float,
    matcher: tuple[tuple[int, int], ...],
    *,
    method: str = "GET",
) -> CheckResult:
    """One HTTP check: connect, send ``method path``, read the status line, match it."""
    start = time.perf_counter()
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: fivenines-health-check\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    try:
        line, elapsed = await _exchange(host, port, request, timeout)
    except TimeoutError:
        return CheckResult.failed(Reason.TIMEOUT, f"no response in {timeout}s", time.perf_counter() - start)
    except OSError as exc:
        return CheckResult.failed(Reason.FAILED_HEALTH_CHECKS, f"{exc.strerror or exc}", time.perf_counter() - start)
    parts = (line or b"").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return CheckResult.failed(Reason.FAILED_HEALTH_CHECKS, f"not an HTTP response: {(line or b'')[:40]!r}", elapsed)
    status = int(parts[1])
    if not matches(matcher, status):
        return CheckResult.failed(Reason.RESPONSE_CODE_MISMATCH, f"status {status}", elapsed)
    return CheckResult.passed(f"status {status}", elapsed)
