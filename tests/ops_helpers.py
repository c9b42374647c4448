"""Helpers for the operations tests: a headless Chromium driven over the DevTools protocol
(with a minimal WebSocket client), a load generator that notices closed connections, and
admin API calls with or without the token."""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fivenines.runtime.supervisor import die_with_parent
from tests.helpers import wait_until

# --------------------------------------------------------------------------- admin calls


def admin_call(base: str, method: str, path: str, token: str | None = None, body: Any = None,
               timeout: float = 60.0) -> tuple[int, Any, dict[str, str]]:
    """(status, JSON body, headers) of one admin API call."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null"), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null"), dict(exc.headers)


def token_of(state_dir: Path) -> str:
    return (state_dir / "admin.token").read_text().strip()


class Lines:
    """Lines of a subprocess pipe, read by a thread so the test can wait with a deadline."""

    def __init__(self, stream: Any) -> None:
        import queue

        self.q: queue.Queue[str] = queue.Queue()
        self._t = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._t.start()

    def _pump(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            self.q.put(raw.decode("utf-8", "replace"))
        stream.close()

    def until(self, pred: Any, timeout: float = 10.0) -> list[str]:
        """Lines read until one satisfies ``pred`` (included); fails the test at the deadline."""
        import queue

        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching line within {timeout}s; got {seen!r}")
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                continue
            seen.append(line)
            if pred(line):
                return seen

    def join(self) -> None:
        self._t.join(10)


# --------------------------------------------------------------------------- load


@dataclass
class LoadResult:
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)  # keep-alive connections the server closed
    answers: list[tuple[float, str, str]] = field(default_factory=list)  # (time, path, instance)


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    """One HTTP/1.1 response with Content-Length from ``sock`` (``buf`` carries leftovers)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server mid-body")
        rest += chunk
    body, leftover = rest[:length], rest[length:]
    buf[:] = leftover
    return status, body


class Load:
    """Constant load until stopped: ``keepalive`` clients each on one persistent connection
    (a close by the server is recorded, never silently reconnected), and ``fresh`` clients
    opening a new connection per request. Paths are taken in turn from ``paths``."""

    def __init__(self, host: str, port: int, keepalive: int = 3, fresh: int = 1,
                 paths: tuple[str, ...] = ("/",)) -> None:
        self.host, self.port = host, port
        self.paths = paths
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._keepalive, args=(i,), daemon=True) for i in range(keepalive)]
        self._threads += [threading.Thread(target=self._fresh, args=(i,), daemon=True) for i in range(fresh)]
        for t in self._threads:
            t.start()

    def _record(self, path: str, status: int, body: bytes) -> None:
        with self._lock:
            if status == 200:
                self.result.ok += 1
                parts = body.split()
                self.result.answers.append((time.monotonic(), path, parts[1].decode() if len(parts) > 1 else "?"))
            else:
                self.result.failed.append(f"{path}: {status} {body[:60]!r}")

    def _keepalive(self, i: int) -> None:
        paths = itertools.cycle(self.paths)
        try:
            sock = socket.create_connection((self.host, self.port), timeout=10)
        except OSError as exc:
            with self._lock:
                self.result.failed.append(f"connect: {exc}")
            return
        buf = bytearray()
        with sock:
            while not self._stop.is_set():
                path = next(paths)
                try:
                    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
                    status, body = _read_response(sock, buf)
                except (OSError, ValueError, IndexError) as exc:
                    with self._lock:
                        self.result.closed.append(f"keep-alive client {i}: {exc!r}")
                    return
                self._record(path, status, body)

    def _fresh(self, i: int) -> None:
        paths = itertools.cycle(self.paths)
        while not self._stop.is_set():
            path = next(paths)
            c = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                c.request("GET", path)
                r = c.getresponse()
                self._record(path, r.status, r.read())
            except OSError as exc:
                with self._lock:
                    self.result.failed.append(f"{path}: {exc!r}")
            finally:
                c.close()

    def count(self) -> int:
        with self._lock:
            return self.result.ok + len(self.result.failed)

    def stop(self) -> LoadResult:
        self._stop.set()
        for t in self._threads:
            t.join(15)
        return self.result


# --------------------------------------------------------------------------- WebSocket + DevTools


class WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: text frames, masked from the client."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        u = urlsplit(url)
        self.sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("websocket handshake: closed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _recv_exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("websocket closed")
            out += chunk
        return out

    def send(self, text: str) -> None:
        payload = text.encode()
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def recv(self) -> str:
        parts: list[bytes] = []
        while True:
            b1, b2 = self._recv_exact(2)
            fin, opcode = b1 & 0x80, b1 & 0x0F
            n = b2 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._recv_exact(8))[0]
            payload = self._recv_exact(n)
            if opcode == 0x8:
                raise ConnectionError("websocket closed by peer")
            if opcode == 0x9:  # ping
                self.sock.sendall(struct.pack("!BB", 0x8A, 0x80 | len(payload)) + b"\0\0\0\0" + payload)
                continue
            if opcode in (0x1, 0x0):
                parts.append(payload)
                if fin:
                    return b"".join(parts).decode()

    def close(self) -> None:
        self.sock.close()


class Chromium:
    """Debian's headless Chromium on a page, driven over the DevTools protocol."""

    def __init__(self, binary: str, url: str) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="fivenines-chromium-"))
        self.log = (self.profile / "chromium.log").open("w")
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={self.profile}", "--remote-debugging-port=0", url],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent(os.getpid()))
        self._ids = itertools.count(1)
        self.ws: WebSocket | None = None
        try:
            port_file = self.profile / "DevToolsActivePort"
            port = int(wait_until(lambda: port_file.exists() and port_file.read_text().split("\n")[0], 30,
                                  0.05, what="chromium DevTools port"))

            def page() -> str | None:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    pages = [p for p in json.loads(r.read()) if p["type"] == "page" and p["url"].startswith(url)]
                return pages[0]["webSocketDebuggerUrl"] if pages else None

            self.ws = WebSocket(wait_until(page, 20, 0.05, what="the dashboard page in chromium"))
        except BaseException:
            self.close()
            raise

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        assert self.ws is not None
        mid = next(self._ids)
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params or {}}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def evaluate(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)
