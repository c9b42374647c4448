"""Injectors and the load generator against real demo processes on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fivenines.chaos import ChaosError, UnsafeTarget
from fivenines.chaos.inject import Guard, Injector, cut_connections, established_inodes, read_proc
from fivenines.chaos.loadgen import LoadGen
from fivenines.chaos.outcomes import Err
from fivenines.chaos.schedule import FaultKind
from fivenines.proxy import aio
from fivenines.runtime.supervisor import die_with_parent
from tests.helpers import PY, Demo, free_port, pid_alive, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def parent() -> Iterator[subprocess.Popen[bytes]]:
    """A stand-in for fivenines: a process whose child is a demo instance (chaos may touch the child only)."""
    code = (
        "import os, subprocess, sys, time\n"
        "from fivenines.runtime.supervisor import die_with_parent\n"
        "c = subprocess.Popen([sys.executable, '-m', 'fivenines.demo', '--port', '0', '--id', 'web-1'],"
        " stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=die_with_parent(os.getpid()))\n"
        "print(c.pid, c.stderr.readline().strip().rsplit(':', 1)[1], flush=True)\n"
        "time.sleep(60)\n"
    )
    p = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, preexec_fn=die_with_parent(os.getpid()))
    yield p
    # the child dies with the stand-in (PR_SET_PDEATHSIG, SIGKILL: even when stopped)
    p.kill()
    p.wait()
    if p.stdout is not None:
        p.stdout.close()


def _child(parent: subprocess.Popen[bytes]) -> tuple[int, int]:
    assert parent.stdout is not None
    pid, port = parent.stdout.readline().split()
    return int(pid), int(port)


def test_the_stand_ins_child_dies_with_it(parent: subprocess.Popen[bytes]) -> None:
    pid, _ = _child(parent)
    os.kill(pid, signal.SIGSTOP)
    parent.kill()
    parent.wait()
    wait_until(lambda: not pid_alive(pid), 5, what="the stopped child killed with its parent")


def test_guard_accepts_the_child_and_refuses_everyone_else(parent: subprocess.Popen[bytes], demo: Demo) -> None:
    pid, _ = _child(parent)
    g = Guard(parent.pid)
    assert g.check(pid, "web-1").ppid == parent.pid
    with pytest.raises(UnsafeTarget, match="not started by fivenines"):
        g.check(demo.proc.pid, "stranger")  # a demo the test started, not the stand-in
    with pytest.raises(UnsafeTarget, match="not started by fivenines"):
        g.check(os.getpid(), "the test itself")
    with pytest.raises(UnsafeTarget):
        g.check(parent.pid, "fivenines itself")
    os.kill(pid, 9)
    wait_until(lambda: read_proc(pid) is None or read_proc(pid).state == "Z", 5, what="child dead")  # type: ignore[union-attr]


def _keepalive(port: int) -> http.client.HTTPConnection:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/")
    c.getresponse().read()
    return c


def test_reset_cuts_established_connections_with_a_rst(parent: subprocess.Popen[bytes]) -> None:
    pid, port = _child(parent)
    conns = [_keepalive(port) for _ in range(3)]
    g = Guard(parent.pid)
    info = g.check(pid, "web-1")
    wait_until(lambda: len(established_inodes(pid, port)) == 3, 5, what="3 established connections")
    assert cut_connections(g, info, port) == 3
    for c in conns:
        assert c.sock is not None
        c.sock.settimeout(5)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            c.sock.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            if not c.sock.recv(100):
                raise ConnectionResetError("closed")
    # the instance itself is fine and serves new connections; those are cut the next time
    fresh = _keepalive(port)
    wait_until(lambda: len(established_inodes(pid, port)) == 1, 5, what="1 established connection")
    assert cut_connections(g, info, port) == 1
    fresh.close()
    for c in conns:
        c.close()


def test_injector_error_slow_hang_and_restore_all(parent: subprocess.Popen[bytes]) -> None:
    pid, port = _child(parent)
    addr = f"127.0.0.1:{port}"

    def status() -> int:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
        try:
            c.request("GET", "/health")
            return c.getresponse().status
        finally:
            c.close()

    async def scenario() -> list[str]:
        inj = Injector(Guard(parent.pid), slow_ms=300)
        await inj.inject(1, FaultKind.ERROR, "web-1", pid, addr)
        assert await asyncio.to_thread(status) == 500
        assert await inj.undo(1) == "GET /_recover on web-1: 200"
        assert await asyncio.to_thread(status) == 200
        await inj.inject(2, FaultKind.SLOW, "web-1", pid, addr)
        t = time.monotonic()
        assert await asyncio.to_thread(status) == 200
        assert time.monotonic() - t >= 0.3
        await inj.inject(3, FaultKind.HANG, "web-1", pid, addr)
        await asyncio.to_thread(wait_until, lambda: inj.stopped_left([pid]) == [pid], 5, what="stopped")
        assert sorted(inj.pending) == [2, 3]
        done = await inj.restore_all()
        assert inj.pending == {}
        await asyncio.to_thread(wait_until, lambda: inj.stopped_left([pid]) == [], 5, what="running again")
        return done

    done = aio.run(scenario())
    assert done == ["SIGCONT 1 process(es)", "GET /_recover on web-1: 200"]
    assert status() == 200


def test_injector_refuses_control_calls_to_a_non_demo_and_changes_nothing(parent: subprocess.Popen[bytes]) -> None:
    pid, _ = _child(parent)
    with socket.socket() as srv:  # something that is not the demo answers on this address
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        addr = f"127.0.0.1:{srv.getsockname()[1]}"

        async def scenario() -> None:
            inj = Injector(Guard(parent.pid), control_timeout=0.3)
            with pytest.raises(ChaosError):
                await inj.inject(1, FaultKind.ERROR, "web-1", pid, addr)
            assert inj.pending == {}

        aio.run(scenario())


# --------------------------------------------------------------------------- the pid-reuse guard

_LISTENER = """
import signal, sys
for sig in (signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(sig, lambda n, f: print(signal.Signals(n).name, flush=True))
print("ready", flush=True)
while True:
    signal.pause()
"""


@pytest.fixture
def listener() -> Iterator[subprocess.Popen[str]]:
    """A child of the test that prints the name of every SIGUSR1/SIGUSR2 it gets."""
    p = subprocess.Popen([PY, "-c", _LISTENER], stdout=subprocess.PIPE, text=True,
                         preexec_fn=die_with_parent(os.getpid()))
    assert p.stdout is not None and p.stdout.readline() == "ready\n"
    yield p
    p.kill()
    p.wait()
    p.stdout.close()


def test_a_pid_that_now_belongs_to_another_process_is_not_signalled(listener: subprocess.Popen[str]) -> None:
    """The guard signals a process only while it is the one that was checked: the same pid *and*
    the same start time. A checked process whose pid now shows another start time has gone and
    its pid was reused: the process behind it now is left alone."""
    g = Guard(os.getpid())  # the listener is the test's own child: ours
    checked = g.check(listener.pid, "web-1")
    gone = dataclasses.replace(checked, start=checked.start - 1)  # checked before the pid was reused
    assert g.signal([gone], signal.SIGUSR1) == 0
    assert g.signal([checked], signal.SIGUSR2) == 1
    # a SIGUSR1 sent first would have been handled before the SIGUSR2 (lower number, sent earlier)
    assert listener.stdout is not None and listener.stdout.readline() == "SIGUSR2\n"


def test_restore_does_not_continue_a_process_that_reused_the_pid(listener: subprocess.Popen[str]) -> None:
    """A hang is undone with SIGCONT to the processes that were stopped: if one of them is gone and
    its pid reused meanwhile, the process now behind the pid is not touched."""
    async def scenario() -> tuple[str, list[str]]:
        inj = Injector(Guard(os.getpid()))
        await inj.inject(1, FaultKind.HANG, "web-1", listener.pid, "127.0.0.1:1")
        await asyncio.to_thread(wait_until, lambda: inj.stopped_left([listener.pid]) == [listener.pid], 5,
                                what="stopped")
        # the stopped process is replaced by another with the same pid (another start time)
        inj.stopped[1] = [dataclasses.replace(p, start=p.start + 1) for p in inj.stopped[1]]
        one = await inj.undo(1) or ""
        return one, inj.stopped_left([listener.pid])

    try:
        done, left = aio.run(scenario())
        assert done == "nothing to SIGCONT (gone)"
        assert left == [listener.pid]  # no SIGCONT reached it: still stopped
    finally:
        os.kill(listener.pid, signal.SIGCONT)
    # the guard did not lose the real one: continued, it answers again
    os.kill(listener.pid, signal.SIGUSR2)
    assert listener.stdout is not None and listener.stdout.readline() == "SIGUSR2\n"


def _load(port: int, rate: float, duration: float, **kw: Any) -> Any:
    async def go() -> Any:
        gen = LoadGen("127.0.0.1", port, rate, duration, **kw)
        log = await gen.run(time.monotonic() + 0.02)
        return gen, log

    return aio.run(go())


def test_loadgen_open_loop_on_schedule(demo: Demo) -> None:
    gen, log = _load(demo.port, 400, 1.0)
    p = log.request_availability()
    assert (p.k, p.n) == (400, 400)
    # keep-alive: every connection opened stayed open and carried later requests (none was replaced),
    # so the connections opened are as many as were ever needed at once; how many that is depends
    # on how the machine schedules the demo (10 on an idle one, a few more under load)
    stats = gen.stats()
    assert stats["connections_opened"] == stats["max_open_connections"], stats
    # request i completed no earlier than when it was due
    assert (log.latency >= 0).all()


def test_loadgen_counts_timeouts_from_when_requests_were_due(demo: Demo) -> None:
    demo.proc.send_signal(19)  # SIGSTOP: the kernel still accepts connections, nobody answers
    try:
        _gen, log = _load(demo.port, 100, 0.5, timeout=0.3)
    finally:
        demo.proc.send_signal(18)
    assert set(log.error.tolist()) == {int(Err.TIMEOUT)}
    lat = log.latency
    # from when each was due, at its timeout (0.3 s), not when the target answered again
    assert lat.min() >= 0.3 and lat.max() < 0.3 + 1.0


def test_loadgen_connect_errors() -> None:
    _gen, log = _load(free_port(), 50, 0.2)
    assert set(log.error.tolist()) == {int(Err.CONNECT)}
    assert log.request_availability().k == 0
