"""Health check probes against real peers on loopback: HTTP (method, status, body), TCP, command, agents."""

from __future__ import annotations

import asyncio
import itertools
import random
import sys
import time
from pathlib import Path

from fivenines.core.detect import AgentReport
from fivenines.core.health import CheckResult, Reason
from fivenines.runtime.probe import (
    agent_check,
    command_check,
    http_check,
    make_check,
    probe_loop,
    tcp_check,
)
from fivenines.spec import HealthCheckSpec
from tests.helpers import Demo, free_port, pid_alive, wait_until

ANY_2XX = ((200, 299),)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_http_check_status_method_and_body(demo: Demo) -> None:
    r = run(http_check(demo.host, demo.port, "/health", 2.0, ANY_2XX))
    assert r.ok and r.detail == "status 200" and r.duration > 0
    r = run(http_check(demo.host, demo.port, "/health", 2.0, ANY_2XX, expect_body="ok"))
    assert r.ok
    r = run(http_check(demo.host, demo.port, "/health", 2.0, ANY_2XX, expect_body="ready"))
    assert not r.ok and r.reason is Reason.FAILED_HEALTH_CHECKS and "body lacks 'ready'" in r.detail
    r = run(http_check(demo.host, demo.port, "/_echo", 2.0, ANY_2XX, method="POST", expect_body='"method":"POST"'))
    assert r.ok
    r = run(http_check(demo.host, demo.port, "/health", 2.0, ANY_2XX, method="HEAD", expect_body="ignored for HEAD"))
    assert r.ok
    demo.get("/_fail")
    r = run(http_check(demo.host, demo.port, "/health", 2.0, ANY_2XX))
    assert not r.ok and r.reason is Reason.RESPONSE_CODE_MISMATCH and r.detail == "status 500"
    r = run(http_check(demo.host, demo.port, "/health", 2.0, ((200, 200), (500, 599))))
    assert r.ok


def test_http_check_failures_name_their_reason(demo: Demo) -> None:
    r = run(http_check("127.0.0.1", free_port(), "/health", 1.0, ANY_2XX))
    assert not r.ok and r.reason is Reason.FAILED_HEALTH_CHECKS and r.detail == "connection refused"
    demo.get("/_hang?s=10")
    start = time.monotonic()
    r = run(http_check(demo.host, demo.port, "/health", 0.3, ANY_2XX))
    # gives up at its own timeout, not when the target answers again (10 s)
    assert not r.ok and r.reason is Reason.TIMEOUT and time.monotonic() - start < 5.0


def test_http_check_of_something_that_is_not_http() -> None:
    async def go() -> CheckResult:
        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b"SSH-2.0-OpenSSH\r\n")
            await w.drain()
            w.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await http_check("127.0.0.1", port, "/", 1.0, ANY_2XX)

    r = run(go())
    assert not r.ok and r.reason is Reason.FAILED_HEALTH_CHECKS and "not an HTTP response" in r.detail


def test_tcp_check(demo: Demo) -> None:
    assert run(tcp_check(demo.host, demo.port, 1.0)).ok
    r = run(tcp_check("127.0.0.1", free_port(), 1.0))
    assert not r.ok and r.detail.startswith("connect:")


def test_command_check_exit_status_decides(tmp_path: Path) -> None:
    ok = run(command_check([sys.executable, "-c", "import sys; sys.exit(0)"], 5.0))
    assert ok.ok and ok.detail == "exit 0"
    bad = run(command_check([sys.executable, "-c", "import sys; print('disk full', file=sys.stderr); sys.exit(3)"], 5.0))
    assert not bad.ok and bad.reason is Reason.FAILED_HEALTH_CHECKS and bad.detail == "exit 3: disk full"
    missing = run(command_check([str(tmp_path / "no-such-check")], 5.0))
    assert not missing.ok and "cannot run" in missing.detail


def test_command_check_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = (
        "import os, subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    start = time.monotonic()
    r = run(command_check([sys.executable, "-c", script], 1.0))
    assert not r.ok and r.reason is Reason.TIMEOUT and "still running after 1.0s" in r.detail
    assert time.monotonic() - start < 5
    child = int(wait_until(lambda: pidfile.exists() and pidfile.read_text(), 5, what="child pid"))
    wait_until(lambda: not pid_alive(child), 5, what="the check's child to be killed too")


def test_a_hung_target_does_not_block_other_probes(demo: Demo) -> None:
    """Checks of a hung target time out on their own while a healthy one is checked on schedule."""
    hung = Demo("hung")
    try:
        hung.get("/_hang")

        async def go() -> tuple[list[CheckResult], list[CheckResult]]:
            good: list[CheckResult] = []
            bad: list[CheckResult] = []
            rng = random.Random(1)
            ok_check = make_check(HealthCheckSpec(interval=0.1, timeout=0.05), lambda: (demo.host, demo.port), "d")
            hung_check = make_check(HealthCheckSpec(interval=0.1, timeout=0.09), lambda: (hung.host, hung.port), "h")
            tasks = [asyncio.create_task(probe_loop(ok_check, 0.1, good.append, rng=rng)),
                     asyncio.create_task(probe_loop(hung_check, 0.1, bad.append, rng=rng))]
            await asyncio.sleep(1.0)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return good, bad

        good, bad = run(go())
        assert len(good) >= 6 and all(r.ok for r in good)
        assert len(bad) >= 4 and all(r.reason is Reason.TIMEOUT for r in bad)
    finally:
        hung.stop()


def test_probe_loop_waits_while_not_ready_and_drops_stale_results(demo: Demo) -> None:
    async def go() -> tuple[int, int]:
        ready = asyncio.Event()
        results: list[CheckResult] = []
        check = make_check(HealthCheckSpec(interval=0.05, timeout=0.04), lambda: (demo.host, demo.port), "d")
        task = asyncio.create_task(probe_loop(check, 0.05, results.append, rng=random.Random(2), ready=ready))
        await asyncio.sleep(0.3)
        before = len(results)
        ready.set()
        await asyncio.sleep(0.4)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return before, len(results)

    before, after = run(go())
    assert before == 0 and after >= 3


def test_jitter_spreads_probes() -> None:
    """Two probes with the same interval do not stay in lockstep: the gaps vary, never below the
    interval less its jitter (a busy machine only makes timers later). How close the gaps stay to
    the interval is bench/timings_bench.py's to measure."""
    async def go() -> list[float]:
        times: list[float] = []
        enough = asyncio.Event()

        async def check() -> CheckResult:
            times.append(time.monotonic())
            if len(times) >= 12:
                enough.set()
            return CheckResult.passed()

        task = asyncio.create_task(probe_loop(check, 0.05, lambda r: None, rng=random.Random(3)))
        try:
            await asyncio.wait_for(enough.wait(), 10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return times

    times = run(go())
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) >= 11 and max(gaps) - min(gaps) > 0.002
    assert min(gaps) > 0.05 * 0.9 - 0.002  # interval - 10 % jitter, less the timer's resolution
    assert sorted(gaps)[len(gaps) // 2] < 0.5  # checks go on at about the interval: none skipped for long


def test_command_check_from_spec_substitutes_host_port_id(tmp_path: Path, demo: Demo) -> None:
    out = tmp_path / "args"
    hc = HealthCheckSpec(protocol="command", interval=1.0, timeout=0.9,
                         command=["python", "-c", f"import sys; open({str(out)!r}, 'w').write(' '.join(sys.argv[1:]))",
                                  "{host}", "{port}", "{id}"])
    r = run(make_check(hc, lambda: (demo.host, demo.port), "web-7")())
    assert r.ok and out.read_text() == f"{demo.host} {demo.port} web-7"


def test_separate_check_port(demo: Demo) -> None:
    hc = HealthCheckSpec(protocol="tcp", port=demo.port)
    r = run(make_check(hc, lambda: ("127.0.0.1", free_port()), "x")())
    assert r.ok


def test_tcp_agent_and_http_agent(demo: Demo) -> None:
    async def go() -> tuple[AgentReport, AgentReport, str]:
        got: list[bytes] = []

        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            got.append(await r.readline())
            w.write(b"50%, drain # deploying\n")
            await w.drain()
            w.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            tcp = await agent_check("127.0.0.1", port, 1.0, send="status")
        http_rep = await agent_check(demo.host, demo.port, 1.0, path="/_agent")
        try:
            await agent_check(demo.host, demo.port, 1.0, path="/_nope")
        except ValueError as exc:
            return tcp, http_rep, str(exc) + "|" + got[0].decode()
        return tcp, http_rep, "no error"

    tcp, http_rep, err = run(go())
    assert tcp == AgentReport("drain", 50, "deploying") and tcp.drain
    assert http_rep == AgentReport("up", None, "")
    assert err == "agent answered status 404|status\n"
