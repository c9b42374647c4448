"""TCP mode: byte streams with back-pressure, half-close, failover, draining cuts, idle timeout."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import free_port, http_get, wait_until
from tests.integration.servers import DataPlane, RawServer


@pytest.fixture(scope="module")
def echoes() -> Iterator[list[RawServer]]:
    ss = []
    for name in ("e1", "e2"):
        s = RawServer(name=name)
        s._handler = s.echo
        ss.append(s)
    yield ss
    for s in ss:
        s.close()


def tcp_plane(targets: list[str], **listener: Any) -> DataPlane:
    return DataPlane({
        "listeners": [{"port": 0, "protocol": "tcp", "default_target_group": "t", **listener}],
        "target_groups": {"t": {"targets": targets, "health_check": {"protocol": "tcp"}}},
    })


def talk(dp: DataPlane, payload: bytes) -> bytes:
    """Send payload, half-close, read everything until the proxy closes."""
    with socket.create_connection((dp.host, dp.port), timeout=5) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                return out
            out += b


def test_bytes_flow_both_ways_with_half_close_and_round_robin(echoes: list[RawServer]) -> None:
    dp = tcp_plane([e.address for e in echoes])
    try:
        outs = [talk(dp, b"ping %d" % i) for i in range(4)]
        assert outs == [b"ping 0[e1]", b"ping 1[e2]", b"ping 2[e1]", b"ping 3[e2]"]
        assert dp.listener.counters.connections == 4
        wait_until(lambda: not dp.listener.clients, 5, what="connections closed")
        assert dp.backend("t-1").in_flight == 0
    finally:
        dp.close()


def test_a_new_connection_never_goes_to_a_target_that_does_not_serve(echoes: list[RawServer]) -> None:
    dp = tcp_plane([e.address for e in echoes])
    try:
        dp.serve("t", ["t-2"])  # t-1 unhealthy
        assert {talk(dp, b"x")[-4:] for _ in range(6)} == {b"[e2]"}
        dp.serve("t", [])
        with socket.create_connection((dp.host, dp.port), timeout=5) as s:
            try:  # nobody serves: closed at once (a reset, as NLB does, since our bytes were unread)
                s.sendall(b"x")
                s.shutdown(socket.SHUT_WR)
                assert s.recv(10) == b""
            except OSError:  # reset, or not connected any more: closed either way
                pass
        assert dp.groups["t"].counters.failed == 1
    finally:
        dp.close()


def test_connect_failure_is_retried_on_another_target(echoes: list[RawServer]) -> None:
    dp = tcp_plane([f"127.0.0.1:{free_port()}", echoes[0].address])
    try:
        assert [talk(dp, b"a") for _ in range(4)] == [b"a[e1]"] * 4
        assert dp.backend("t-1").errors == 2 and dp.groups["t"].counters.retries == 2
    finally:
        dp.close()


def test_large_stream_with_back_pressure(echoes: list[RawServer]) -> None:
    dp = tcp_plane([echoes[0].address])
    size = 32 * 1024 * 1024
    try:
        with socket.create_connection((dp.host, dp.port), timeout=10) as s:
            received = [0]

            def reader() -> None:
                while True:
                    b = s.recv(1 << 20)
                    if not b:
                        return
                    received[0] += len(b)

            t = threading.Thread(target=reader)
            t.start()
            chunk = b"z" * (1 << 20)
            for _ in range(size // len(chunk)):
                s.sendall(chunk)
            s.shutdown(socket.SHUT_WR)
            t.join(20)
        assert received[0] == size + len(b"[e1]")
    finally:
        dp.close()


def test_the_data_phase_runs_in_the_c_pump_when_built_and_holds_what_a_slow_client_cannot_take(
        echoes: list[RawServer]) -> None:
    """Compiled, a connected stream is moved by the C pump (fivenines/_pump.c): a client that reads
    nothing makes it hold bytes for the client (and stop reading the target) until the client
    reads; every byte arrives, in order. From source the transports relay the same stream."""
    from fivenines.proxy import tcp

    dp = tcp_plane([echoes[0].address])
    payload = bytes(range(256)) * (128 * 1024)  # 32 MiB (more than socket buffers hold), not one byte repeated
    try:
        with socket.create_connection((dp.host, dp.port), timeout=10) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            s.sendall(b"first")
            assert s.recv(5) == b"first"
            client = dp.do(lambda: next(iter(dp.listener.clients)))
            if tcp._PUMP is None:
                assert client._pump is None
            else:
                assert client._pump is not None
            sender = threading.Thread(target=s.sendall, args=(payload,))
            sender.start()  # (blocks until the echo's answers are read)
            if tcp._PUMP is not None:
                wait_until(lambda: dp.do(lambda: client._pump.pending[0] > 0 if client._pump else False), 10,
                           what="the pump holds bytes the client has not read")
            got = bytearray()
            while len(got) < len(payload):
                b = s.recv(1 << 20)
                assert b, "closed early"
                got += b
            sender.join(10)
            assert bytes(got) == payload
            s.shutdown(socket.SHUT_WR)
            assert s.recv(100) == b"[e1]" and s.recv(100) == b""
    finally:
        dp.close()


def test_a_connection_that_keeps_talking_is_not_closed_as_idle(echoes: list[RawServer]) -> None:
    dp = tcp_plane([echoes[0].address], timeouts={"idle": "300ms"})
    try:
        with socket.create_connection((dp.host, dp.port), timeout=5) as s:
            for i in range(8):  # 1.2 s of traffic, a message every 150 ms: never 300 ms idle
                s.sendall(b"%d" % i)
                assert s.recv(10) == b"%d" % i
                time.sleep(0.15)
    finally:
        dp.close()


def test_draining_target_connections_are_cut(echoes: list[RawServer]) -> None:
    dp = tcp_plane([echoes[0].address, echoes[1].address])
    try:
        s = socket.create_connection((dp.host, dp.port), timeout=5)
        s.sendall(b"hello")
        assert s.recv(100) == b"hello"
        b = dp.backend("t-1")
        assert b.in_flight == 1
        dp.serve("t", ["t-2"])  # removed: established connections stay (as NLB)...
        s.sendall(b"still")
        assert s.recv(100) == b"still"
        assert dp.do(lambda: dp.listener.cut(b)) == 1  # ...until the deregistration delay ends
        assert s.recv(100) == b""
        s.close()
        wait_until(lambda: b.in_flight == 0, 5, what="released")
    finally:
        dp.close()


def test_idle_connections_are_closed(echoes: list[RawServer]) -> None:
    dp = tcp_plane([echoes[0].address], timeouts={"idle": "300ms"})
    try:
        with socket.create_connection((dp.host, dp.port), timeout=5) as s:
            s.sendall(b"x")
            assert s.recv(10) == b"x"
            t0 = time.monotonic()
            assert s.recv(10) in (b"", b"[e1]")
            assert time.monotonic() - t0 < 2
    finally:
        dp.close()


@pytest.mark.slow
def test_tcp_listener_with_health_checks_and_failover(run_fivenines: Any) -> None:
    """`fivenines up` with a tcp listener in front of demo instances: HTTP carried as bytes."""
    f = run_fivenines({
        "name": "tcp",
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": [{"port": 0, "protocol": "tcp", "default_target_group": "web"}],
        "target_groups": {"web": {
            "instances": {"command": ["python", "-m", "fivenines.demo", "--port", "{port}"],
                          "count": 2, "ports": "auto", "stop_timeout": "2s"},
            "health_check": {"protocol": "tcp", "interval": "200ms", "timeout": "150ms",
                             "healthy_threshold": 2, "unhealthy_threshold": 2},
        }},
    })
    f.wait_healthy()
    seen = {http_get(f.host, f.port, "/")[1].split()[1] for _ in range(4)}
    assert seen == {b"web-1", b"web-2"}
    victim = f.target("web-1")["pid"]
    import os
    import signal

    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: f.status()["target_groups"]["web"]["serving"] == ["web-2"], 10, what="failover")
    for _ in range(6):  # every new connection goes to the healthy one
        assert http_get(f.host, f.port, "/")[1].split()[1] == b"web-2"
    st = f.status()["listeners"][0]
    assert st["protocol"] == "tcp" and st["connections_total"] >= 10
