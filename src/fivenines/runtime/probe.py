"""Health check probes: one check of one target, with its own timeout, and the loop that repeats it. I/O only.

Kinds of check (``health_check.protocol``):

* ``http``: connect, send ``method path``, match the status against the matcher
  and, with ``expect_body``, look for that text in the first 64 KiB of the body;
* ``tcp``: a connection is accepted;
* ``command``: run an argv (``{host}``, ``{port}``, ``{id}`` substituted) in its own
  session; exit status 0 passes, anything else fails (keepalived's ``vrrp_script``).
  A command still running at the timeout is killed with its whole process group.

Optionally an **agent** (HAProxy's ``agent-check``): a TCP port on the target that
answers one line such as ``75%``, ``drain``, ``up`` or ``down``; the words are
parsed by :func:`fivenines.core.detect.parse_agent_reply`.

Every probe runs under its own timeout as a task, so a hung target never blocks
the event loop or other probes. The loop is jittered (±10% of the interval, and a
random first delay) so the checks of many targets do not fire in lockstep.

The result is a :class:`~fivenines.core.health.CheckResult` with an ELB reason code;
what the result means for the target is decided in :mod:`fivenines.core`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httptools

from fivenines.core.detect import AgentReport, parse_agent_reply
from fivenines.core.health import CheckResult, Reason
from fivenines.spec import HealthCheckSpec, matches

BODY_LIMIT = 64 * 1024

Check = Callable[[], Awaitable[CheckResult]]


class _Response(asyncio.Protocol):
    """Send one request; resolve with (status, body prefix) once enough has been read."""

    def __init__(self, request: bytes, fut: asyncio.Future[tuple[int, bytes]], want_body: bool) -> None:
        self._request = request
        self._fut = fut
        self._want_body = want_body
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._size = 0
        self._status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self._request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self._fut.done():
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self._fut.done():
                self._fut.set_exception(_NotHttp(f"not an HTTP response: {exc}"))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        if not self._want_body:
            self._done()

    def on_body(self, body: bytes) -> None:
        if self._size < BODY_LIMIT:
            self._body.append(body)
            self._size += len(body)
        if self._size >= BODY_LIMIT:
            self._done()

    def on_message_complete(self) -> None:
        self._done()

    def _done(self) -> None:
        if not self._fut.done():
            self._fut.set_result((self._status, b"".join(self._body)[:BODY_LIMIT]))

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._fut.done():
            return
        if self._status and self._want_body:
            self._done()  # a close-delimited body ends here
        else:
            self._fut.set_exception(exc or ConnectionResetError("closed before a response"))


class _NotHttp(Exception):
    pass


class _Line(asyncio.Protocol):
    """Connect (optionally send), resolve with the first line received (agents), or on connect (tcp)."""

    def __init__(self, send: bytes, fut: asyncio.Future[bytes], read: bool) -> None:
        self._send = send
        self._fut = fut
        self._read = read
        self._buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._send:
            transport.write(self._send)  # type: ignore[attr-defined]
        if not self._read and not self._fut.done():
            self._fut.set_result(b"")

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if (b"\n" in self._buf or len(self._buf) > 1024) and not self._fut.done():
            self._fut.set_result(self._buf.split(b"\n", 1)[0])

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._fut.done():
            if self._buf:
                self._fut.set_result(self._buf)
            else:
                self._fut.set_exception(exc or ConnectionResetError("closed without a reply"))


async def _connect(host: str, port: int, timeout: float, factory: Callable[[asyncio.Future[Any]], asyncio.Protocol]) -> Any:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    transport: asyncio.BaseTransport | None = None
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(lambda: factory(fut), host, port)
            return await fut
    finally:
        if transport is not None:
            transport.close()
        if fut.done() and not fut.cancelled():
            fut.exception()  # retrieved: a reset after the answer is not an error


def _os_detail(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc.strerror or exc)


async def tcp_check(host: str, port: int, timeout: float) -> CheckResult:
    start = time.perf_counter()
    try:
        await _connect(host, port, timeout, lambda f: _Line(b"", f, read=False))
    except TimeoutError:
        return CheckResult.failed(Reason.TIMEOUT, f"no connection in {timeout}s", time.perf_counter() - start)
    except OSError as exc:
        return CheckResult.failed(Reason.FAILED_HEALTH_CHECKS, f"connect: {_os_detail(exc)}", time.perf_counter() - start)
    return CheckResult.passed("connected", time.perf_counter() - start)


async def http_check(
    host: str,
    port: int,
    path: str,
    timeout: float,
    matcher: tuple[tuple[int, int], ...],
    *,
    method: str = "GET",
    expect_body: str | None = None,
) -> CheckResult:
    """One HTTP check: connect, send ``method path``, match the status (and the body, when asked)."""
    start = time.perf_counter()
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: fivenines-health-check\r\n"
        f"{'Content-Length: 0' + chr(13) + chr(10) if method == 'POST' else ''}Connection: close\r\n\r\n"
    ).encode("latin-1")
    want_body = expect_body is not None and method != "HEAD"
    try:
        status, body = await _connect(host, port, timeout, lambda f: _Response(request, f, want_body))
    except TimeoutError:
        return CheckResult.failed(Reason.TIMEOUT, f"no response in {timeout}s", time.perf_counter() - start)
    except _NotHttp as exc:
        return CheckResult.failed(Reason.FAILED_HEALTH_CHECKS, str(exc)[:120], time.perf_counter() - start)
    except OSError as exc:
        return CheckResult.failed(Reason.FAILED_HEALTH_CHECKS, _os_detail(exc), time.perf_counter() - start)
    elapsed = time.perf_counter() - start
    if not matches(matcher, status):
        return CheckResult.failed(Reason.RESPONSE_CODE_MISMATCH, f"status {status}", elapsed)
    if want_body and expect_body is not None and expect_body.encode() not in body:
        return CheckResult.failed(Reason.FAILED_HEALTH_CHECKS, f"status {status}, body lacks {expect_body!r}", elapsed)
    return CheckResult.passed(f"status {status}", elapsed)


async def command_check(argv: list[str], timeout: float, env: dict[str, str] | None = None,
                        cwd: str | None = None) -> CheckResult:
    """Run ``argv``; exit status 0 passes. Killed (with its process group) at the timeout."""
    start = time.perf_counter()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=env, cwd=cwd, start_new_session=True,
        )
    except OSError as exc:
        return CheckResult.failed(Reason.FAILED_HEALTH_CHECKS, f"cannot run {argv[0]!r}: {exc.strerror or exc}",
                                  time.perf_counter() - start)
    try:
        async with asyncio.timeout(timeout):
            _, err = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return CheckResult.failed(Reason.TIMEOUT, f"{os.path.basename(argv[0])} still running after {timeout}s",
                                  time.perf_counter() - start)
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    elapsed = time.perf_counter() - start
    code = proc.returncode
    if code == 0:
        return CheckResult.passed("exit 0", elapsed)
    last = (err or b"").decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    detail = f"exit {code}" if code is not None and code >= 0 else f"killed by signal {-(code or 0)}"
    if last[0]:
        detail += f": {last[0][:120]}"
    return CheckResult.failed(Reason.FAILED_HEALTH_CHECKS, detail, elapsed)


async def agent_check(host: str, port: int, timeout: float, send: str = "", path: str | None = None) -> AgentReport:
    """Ask a target's agent for its state: a TCP line, or (``path``) the first body line of an HTTP GET.

    Raises OSError / TimeoutError / ValueError (a reply that is not agent words or not 2xx).
    """
    if path is None:
        payload = (send + "\n").encode() if send else b""
        line: bytes = await _connect(host, port, timeout, lambda f: _Line(payload, f, read=True))
    else:
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: fivenines-agent-check\r\n"
                   "Connection: close\r\n\r\n").encode("latin-1")
        status, body = await _connect(host, port, timeout, lambda f: _Response(request, f, True))
        if not 200 <= status < 300:
            raise ValueError(f"agent answered status {status}")
        line = body.split(b"\n", 1)[0]
    return parse_agent_reply(line.decode("utf-8", "replace"))


def substitute(argv: list[str], host: str, port: int, target_id: str) -> list[str]:
    """``{host}``, ``{port}``, ``{id}`` in each argument.

    >>> substitute(["check", "{host}:{port}", "--id={id}"], "127.0.0.1", 9101, "web-1")
    ['check', '127.0.0.1:9101', '--id=web-1']
    """
    return [a.replace("{host}", host).replace("{port}", str(port)).replace("{id}", target_id) for a in argv]


def make_check(hc: HealthCheckSpec, address: Callable[[], tuple[str, int]], target_id: str,
               *, env: dict[str, str] | None = None, cwd: str | None = None) -> Check:
    """The check of one target as a no-argument coroutine function (``address`` is read per check)."""
    matcher = hc.matcher_ranges

    async def check() -> CheckResult:
        host, port = address()
        port = hc.port or port
        if hc.protocol == "http":
            return await http_check(host, port, hc.path, hc.timeout, matcher, method=hc.method, expect_body=hc.expect_body)
        if hc.protocol == "tcp":
            return await tcp_check(host, port, hc.timeout)
        assert hc.command is not None
        from fivenines.runtime.supervisor import resolve_argv

        return await command_check(resolve_argv(substitute(hc.command, host, port, target_id)), hc.timeout, env, cwd)

    return check


async def probe_loop(
    check: Check,
    interval: float,
    on_result: Callable[[CheckResult], None],
    *,
    rng: random.Random,
    ready: asyncio.Event | None = None,
    jitter: float = 0.1,
) -> None:
    """Run ``check`` every ``interval`` (± ``jitter``) until cancelled.

    With ``ready`` (a supervised instance's "running" event), checks wait while it
    is clear and start a short random delay after it is set again; a result is
    delivered only when the instance still runs after the check.
    """
    await asyncio.sleep(rng.uniform(0.05, 0.25) * interval)
    while True:
        if ready is not None and not ready.is_set():
            await ready.wait()
            await asyncio.sleep(rng.uniform(0.05, 0.25) * interval)
            continue
        started = time.perf_counter()
        result = await check()
        if ready is None or ready.is_set():
            on_result(result)
        elapsed = time.perf_counter() - started
        await asyncio.sleep(max(0.0, interval * rng.uniform(1 - jitter, 1 + jitter) - elapsed))
