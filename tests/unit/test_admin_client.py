"""The one admin HTTP client (fivenines.cli.admin_client): shared by the CLI and chaos, and
every failure one AdminError of the right kind, against real sockets on loopback."""

from __future__ import annotations

import ast
import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import fivenines
from fivenines.cli import admin_client
from fivenines.cli.admin_client import (
    AdminClient,
    AdminProtocolError,
    AdminRefused,
    AdminTimeout,
    AdminUnreachable,
)
from fivenines.errors import NetworkError, ProtocolError, TimedOut

SRC = Path(fivenines.__file__).parent


def _imports(path: Path) -> set[str]:
    """Every module a source file imports (at any depth: lazy imports count)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_cli_and_chaos_use_the_same_admin_client() -> None:
    from fivenines.chaos import inject, runner
    from fivenines.cli import connect, ops

    assert runner.aget_json is admin_client.aget_json
    assert inject.aget is admin_client.aget
    assert connect.AdminClient is admin_client.AdminClient
    assert "fivenines.cli.admin_client" in _imports(SRC / "chaos" / "runner.py")
    assert ops.connect is connect


def test_no_module_but_the_admin_client_speaks_http_with_the_standard_library() -> None:
    """A second admin client would need an HTTP client: only admin_client.py may import one."""
    users = sorted(
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if _imports(p) & {"http.client", "urllib.request"}
    )
    # rig/etcd.py polls etcd's own /health while the test rig starts it: not the admin API
    assert users == ["cli/admin_client.py", "rig/etcd.py"]
    assert not (SRC / "chaos" / "client.py").exists()


# --------------------------------------------------------------------------- against real sockets


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/status":
            self._reply(200, json.dumps({"name": "t", "auth": self.headers.get("Authorization")}).encode())
        elif self.path == "/text":
            self._reply(200, b"<html>not json</html>", "text/html")
        elif self.path == "/plain-error":
            self._reply(502, b"bad gateway", "text/plain")
        elif self.path.startswith("/events/stream?since=7"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()  # no length: the stream ends when the connection closes
            self.wfile.write(b"retry: 1000\n\n: keep-alive\n\nid: 8\ndata: {\"seq\": 8}\n\nid: 9\ndata: {\"seq\": 9}\n\n")
            self.close_connection = True
        else:
            self._reply(404, json.dumps({"error": f"no such path {self.path}"}).encode())

    def do_PUT(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._reply(200, json.dumps({"got": body, "auth": self.headers.get("Authorization")}).encode())


@pytest.fixture
def server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


@pytest.fixture
def raw_server() -> Iterator[Callable[[bytes | None], str]]:
    """A listener that answers each connection with fixed bytes (None: reads and never answers)."""
    socks: list[socket.socket] = []
    threads: list[threading.Thread] = []
    stop = threading.Event()

    def make(answer: bytes | None) -> str:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        s.settimeout(0.1)
        socks.append(s)

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = s.accept()
                except OSError:
                    continue
                with conn:
                    conn.recv(4096)
                    if answer is not None:
                        conn.sendall(answer)
                    else:
                        stop.wait(5)

        th = threading.Thread(target=serve, daemon=True)
        th.start()
        threads.append(th)
        return f"127.0.0.1:{s.getsockname()[1]}"

    try:
        yield make
    finally:
        stop.set()
        for th in threads:
            th.join(5)
        for s in socks:
            s.close()


def test_json_in_and_out_with_the_token(server: str) -> None:
    api = AdminClient(server, token="t0ken")
    assert api.status() == {"name": "t", "auth": "Bearer t0ken"}
    assert api.set_weight("web-1", 3) == {"got": {"weight": 3}, "auth": "Bearer t0ken"}
    assert AdminClient(server).status()["auth"] is None
    assert repr(api) == f"<AdminClient {server} with token>"


def test_an_unexpected_status_is_refused_with_fivenines_reason(server: str) -> None:
    api = AdminClient(server)
    with pytest.raises(AdminRefused) as ei:
        api.get_json("/nope")
    assert ei.value.status == 404 and ei.value.data == {"error": "no such path /nope"}
    assert str(ei.value) == f"{server}/nope: HTTP 404: no such path /nope"
    assert api.request("GET", "/plain-error") == (502, {"error": "bad gateway"})


def test_events_stream_until_fivenines_closes_it(server: str) -> None:
    api = AdminClient(server)
    stream = api.stream_events(7)
    assert next(stream) == {"seq": 8} and next(stream) == {"seq": 9}
    with pytest.raises(AdminUnreachable, match="fivenines closed the stream"):
        next(stream)
    with pytest.raises(AdminRefused) as ei:
        api.stream_events(1)  # refused at once, before any iteration
    assert ei.value.status == 404


def test_a_200_that_is_not_json_is_a_protocol_error(server: str) -> None:
    with pytest.raises(AdminProtocolError, match="not JSON") as ei:
        AdminClient(server).get_json("/text")
    assert isinstance(ei.value, ProtocolError)


def test_nothing_listening_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens here
    with pytest.raises(AdminUnreachable) as ei:
        AdminClient(f"127.0.0.1:{port}").status()
    assert ei.value.url == f"http://127.0.0.1:{port}/status" and isinstance(ei.value, NetworkError)
    assert not isinstance(ei.value, TimedOut)


def test_not_http_and_closed_early_and_no_answer(raw_server: Callable[[bytes | None], str]) -> None:
    with pytest.raises(AdminProtocolError, match="not an HTTP answer"):
        AdminClient(raw_server(b"SSH-2.0-OpenSSH\r\n\r\n")).status()
    with pytest.raises(AdminUnreachable, match="closed before a whole answer"):
        AdminClient(raw_server(b"")).status()
    with pytest.raises(AdminTimeout, match=r"no answer within 0\.2s"):
        AdminClient(raw_server(None), timeout=0.2).status()


def test_the_asyncio_calls_run_beside_the_loop(server: str, raw_server: Callable[[bytes | None], str]) -> None:
    silent = raw_server(None)

    async def scenario() -> tuple[Any, int, float]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.get_running_loop().create_task(ticker())
        data = await admin_client.aget_json(f"{server}/status")
        with pytest.raises(AdminTimeout):
            await admin_client.aget(f"http://{silent}/x", 0.3)
        t.cancel()
        status, _ = await admin_client.aget(f"{server}/nope")
        return data, status, ticks

    data, status, ticks = asyncio.run(scenario())
    assert data["name"] == "t" and status == 404
    assert ticks >= 10  # the loop kept running while a call waited 0.3 s for no answer
