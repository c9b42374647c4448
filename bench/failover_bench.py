#!/usr/bin/env python3
"""Failover as clients see it: fivenines beside HAProxy, in one run, under constant keep-alive load.

``make failover-bench`` (or ``.venv/bin/python bench/failover_bench.py``) puts each system in
front of its own 3 active + 1 standby demo instances, each given its best equivalent
configuration (both are printed at the start of the run):

* the same health checks: interval, timeout, rise/fall (HAProxy: ``inter``, ``timeout check``,
  ``rise``, ``fall``);
* the same passive detection: the first error takes a server out (fivenines:
  ``outlier_detection.consecutive_errors: 1, consecutive_5xx: 1``; HAProxy: ``observe layer7``,
  ``error-limit 1``, ``on-error mark-down``, which count a 5xx, a refused or reset connection
  and a response timeout);
* the same retries: 3 tries, each on another server, on a connect failure, a connection closed
  before any response byte, a response timeout or a 5xx (fivenines: ``retries.attempts: 3``,
  ``budget_percent: 100``; HAProxy: ``retries 2``, ``option redispatch 1``, ``retry-on
  conn-failure empty-response junk-response response-timeout 500 501 502 503 504``, no budget);
* the same per-try timeout (fivenines: ``retries.per_try_timeout``; HAProxy: ``timeout server``)
  and connect timeout.

What has no equivalent stays as each system has it: HAProxy's ``backup`` server serves only when
every active one is down (fivenines promotes its standby as soon as one active is lost), and
HAProxy does not move the requests already waiting on a server it marks down. HAProxy 2.6 also
does not show ``observe`` an attempt that it retries at layer 7 (``retry-on`` response-timeout or a
status: the retry is taken before the response is observed), so its passive detection sees
connection errors only and a hang or a 5xx is found by its checks. Leaving those keywords out
of ``retry-on`` would let ``observe`` see them, but hand the first 5xx, and every request already
waiting on a hung server, to the clients as errors; the bench keeps them.

Under an open-loop load of ``--rate`` requests/s over keep-alive connections it injects:

  a. ``kill -9`` of one active instance;
  b. ``SIGSTOP`` of one for 10 s, then ``SIGCONT``;
  c. one starts answering 500 (demo ``/_fail``);
  d. one becomes 2 s slow (demo ``/_slow?ms=2000``);
  e. a rolling restart of the whole group (fivenines: ``POST /target_groups/web/restart``;
     HAProxy: the usual runtime-API script: drain, wait for no sessions, stop,
     start, ready, wait for UP — one server at a time).

The systems run scenario by scenario, interleaved, the order alternating from one scenario to
the next (a, then b in the other order, ...), so a slow phase of a shared machine does not
fall on one system only. A third run, fivenines with ``hedging.delay``, joins for b and d.

The load generator (asyncio protocols, uvloop) records every request: its
scheduled time, latency measured from the scheduled time (no coordinated
omission), status and the instance that answered. Failed = anything but a 200
(including resets and a 10 s client timeout). Detection is read from the
fivenines event log (exact times) and from HAProxy's stats socket (polled every
20 ms; how: from its log). "standby served" is the first answer from the member that was standby
when the fault was injected (HAProxy's ``backup`` server only serves when every
active server is down, so it never does here).

The same targets are stated for every system and each gets its verdict; the exit status is 1
when fivenines misses one (HAProxy's verdict is reported, not enforced).

Everything started is stopped at the end (and on Ctrl-C). The run takes a few
minutes; ``--quick`` shortens the phases, ``--smoke`` makes a short check that the bench
works (light load, short phases, every scenario once): its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent

# The shared configuration of both systems.
INTERVAL = 0.5
TIMEOUT = 0.25
RISE = 2
FALL = 2
PER_TRY = 0.5
# The connect timeout of both data paths: the check timeout. HAProxy's checks connect within
# min(timeout connect, inter), then wait ``timeout check`` more; with a longer connect timeout a
# check of a stopped server whose accept queue is full would take up to the interval, not the
# check timeout as fivenines' checks do.
CONNECT_TIMEOUT = TIMEOUT
ATTEMPTS = 3  # tries in all; HAProxy: retries = ATTEMPTS - 1
ACTIVE_DETECTION_BOUND = INTERVAL * FALL + TIMEOUT
# Passive detection: the first error (connect failure, reset, per-try timeout) or 5xx takes a
# target out. fivenines: consecutive_errors 1 (its default), consecutive_5xx 1 (the default is 3);
# HAProxy: observe layer7 + error-limit 1 + on-error mark-down.
ERROR_LIMIT = 1
HEDGE = 0.05  # the extra fivenines run: hedging.delay
CLIENT_TIMEOUT = 10.0
LATENCY_SLACK = 0.2  # targets b, d: the worst latency is within one per-try timeout (or hedge delay) + this


# --------------------------------------------------------------------------- load generator


class Records:
    """Every request's outcome, in arrays (no per-request objects kept)."""

    def __init__(self) -> None:
        self.sched: list[float] = []
        self.latency: list[float] = []
        self.status: list[int] = []
        self.instance: list[str] = []

    def add(self, sched: float, latency: float, status: int, instance: str) -> None:
        self.sched.append(sched)
        self.latency.append(latency)
        self.status.append(status)
        self.instance.append(instance)

    def __len__(self) -> int:
        return len(self.sched)


class _Conn(asyncio.Protocol):
    def __init__(self, gen: LoadGen) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.current: float | None = None  # scheduled time of the request in flight
        self.body = bytearray()
        self.keep = True
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.gen.connected(self)

    def send(self, sched: float) -> None:
        assert self.transport is not None
        self.current = sched
        self.body.clear()
        self.transport.write(self.gen.request)
        self.timer = self.gen.loop.call_later(CLIENT_TIMEOUT, self._timeout)

    def _timeout(self) -> None:
        self.timer = None
        self._fail(-1, "client timeout")

    def on_body(self, body: bytes) -> None:
        if len(self.body) < 256:
            self.body += body

    def on_message_complete(self) -> None:
        sched = self.current
        if sched is None:
            return
        self.current = None
        if self.timer:
            self.timer.cancel()
            self.timer = None
        status = self.parser.get_status_code()
        parts = bytes(self.body).split(None, 2)
        inst = parts[1].decode() if status == 200 and len(parts) > 1 else ""
        self.gen.done(self, sched, status, inst, self.parser.should_keep_alive())

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(-2, "bad response")

    def _fail(self, code: int, why: str) -> None:
        sched = self.current
        self.current = None
        if self.timer:
            self.timer.cancel()
            self.timer = None
        if sched is not None:
            self.gen.done(self, sched, code, why, False)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.keep = False
        if self.current is not None:
            self._fail(0, f"connection lost: {exc or 'eof'}")
        self.gen.lost(self)


class LoadGen:
    """Open-loop load: requests are scheduled at a fixed rate and sent on idle keep-alive connections."""

    def __init__(self, host: str, port: int, rate: float, max_conns: int = 1500) -> None:
        self.host, self.port, self.rate, self.max_conns = host, port, rate, max_conns
        self.loop = asyncio.get_running_loop()
        self.request = f"GET /bench HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        self.records = Records()
        self.idle: list[_Conn] = []
        self.conns: set[_Conn] = set()
        self.connecting = 0
        self.queue: list[float] = []  # scheduled times waiting for a connection
        self.in_flight = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = False
        self.connect_errors = 0
        self.drained = asyncio.Event()

    def start(self) -> None:
        self._task = self.loop.create_task(self._run())

    async def stop(self, wait: float = CLIENT_TIMEOUT + 1) -> Records:
        self._stop = True
        if self._task is not None:
            await self._task
        if self.in_flight or self.queue:
            self.drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drained.wait(), wait)
        for c in list(self.conns):
            if c.transport is not None:
                c.transport.close()
        return self.records

    async def _run(self) -> None:
        t0 = time.monotonic()
        sent = 0
        while not self._stop:
            now = time.monotonic()
            due = int((now - t0) * self.rate)
            while sent < due:
                sched = t0 + sent / self.rate
                sent += 1
                self.in_flight += 1
                self._dispatch(sched)
            await asyncio.sleep(0.001)

    def _dispatch(self, sched: float) -> None:
        while self.idle:
            c = self.idle.pop()
            if c.keep and c.transport is not None and not c.transport.is_closing():
                c.send(sched)
                return
        self.queue.append(sched)
        if len(self.conns) + self.connecting < self.max_conns and self.connecting < len(self.queue) + 1:
            self._open()

    def _open(self) -> None:
        self.connecting += 1

        async def go() -> None:
            try:
                await self.loop.create_connection(lambda: _Conn(self), self.host, self.port)
            except OSError:
                self.connect_errors += 1
                self.connecting -= 1
                if self.queue:  # a refused listener fails the waiting request
                    sched = self.queue.pop(0)
                    self._record(sched, 0, "connect failed")
                return

        self.loop.create_task(go())

    def connected(self, c: _Conn) -> None:
        self.connecting -= 1
        self.conns.add(c)
        self._next(c)

    def _next(self, c: _Conn) -> None:
        if self.queue:
            c.send(self.queue.pop(0))
        else:
            self.idle.append(c)

    def done(self, c: _Conn, sched: float, status: int, inst: str, keep: bool) -> None:
        self._record(sched, status, inst)
        if keep and c.keep:
            self._next(c)
        elif c.transport is not None:
            c.keep = False
            c.transport.close()
            if self.queue and len(self.conns) + self.connecting <= self.max_conns:
                self._open()

    def _record(self, sched: float, status: int, inst: str) -> None:
        self.in_flight -= 1
        self.records.add(sched, time.monotonic() - sched, status, inst)
        if self._stop and not self.in_flight and not self.queue:
            self.drained.set()

    def lost(self, c: _Conn) -> None:
        self.conns.discard(c)
        with contextlib.suppress(ValueError):
            self.idle.remove(c)
        if self.queue and len(self.conns) + self.connecting < self.max_conns:
            self._open()


# --------------------------------------------------------------------------- small async helpers


async def http(method: str, host: str, port: int, path: str, timeout: float = 5.0,
               headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    async with asyncio.timeout(timeout):
        r, w = await asyncio.open_connection(host, port)
        try:
            w.write(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n{extra}Connection: close\r\n\r\n"
                    .encode())
            data = await r.read()
        finally:
            w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(None, 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", body
        while rest:
            size_s, _, rest = rest.partition(b"\r\n")
            size = int(size_s, 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    return status, body


def haproxy_exe() -> str:
    exe = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if exe is None:
        raise RuntimeError("haproxy is not installed (scripts/install-test-deps --bench installs it)")
    return exe


def spawn(argv: list[str], log: Any, new_session: bool = False) -> subprocess.Popen[bytes]:
    """Start a process that dies with the bench, even a killed bench (PR_SET_PDEATHSIG)."""
    from fivenines.runtime.supervisor import die_with_parent

    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=new_session,
                            preexec_fn=die_with_parent(os.getpid()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await pred()
        except (OSError, TimeoutError, ValueError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}: {last!r}")


# --------------------------------------------------------------------------- the systems


@dataclass
class Detection:
    at: float | None = None  # wall time of the first sign, after the fault
    how: str = ""


class System:
    name = ""
    host = "127.0.0.1"
    port = 0
    hedge: float | None = None

    def describe(self) -> str:
        """The configuration this system runs with, as its own file format."""
        raise NotImplementedError

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def ready(self) -> None: ...
    async def layout(self) -> tuple[str, str]:
        """(victim: an active that serves, standby) now."""
        raise NotImplementedError

    def pid(self, tid: str) -> int:
        raise NotImplementedError

    def port_of(self, tid: str) -> int:
        raise NotImplementedError

    async def watch(self, victim: str, since_wall: float, stop: asyncio.Event) -> Detection:
        raise NotImplementedError

    async def rolling_restart(self) -> float:
        raise NotImplementedError

    async def after_kill(self, tid: str) -> None:
        """After the kill -9 scenario: HAProxy has no supervisor, so the bench restarts the instance."""


class FiveninesSystem(System):
    name = "fivenines"

    def __init__(self, tmp: Path, hedge: float | None = None) -> None:
        self.tmp = tmp
        self.hedge = hedge
        if hedge is not None:
            self.name = f"f9+hedge{int(hedge * 1000)}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin = ""
        self.admin_host = "127.0.0.1"
        self.admin_port = 0
        self.last_seq = 0

    def spec(self) -> dict[str, Any]:
        return {
            "name": "bench",
            "state_dir": str(self.tmp / "state"),
            "admin": {"listen": "127.0.0.1:0"},
            "listeners": [{"port": 0, "default_target_group": "web",
                           "timeouts": {"connect": f"{int(CONNECT_TIMEOUT * 1000)}ms"}}],
            "target_groups": {"web": {
                "instances": {
                    "command": ["python", "-m", "fivenines.demo", "--port", "{port}"],
                    "count": 3, "standby": 1, "stop_timeout": "2s",
                },
                "health_check": {
                    "path": "/health", "interval": f"{int(INTERVAL * 1000)}ms", "timeout": f"{int(TIMEOUT * 1000)}ms",
                    "healthy_threshold": RISE, "unhealthy_threshold": FALL,
                },
                "retries": {"attempts": ATTEMPTS, "per_try_timeout": f"{int(PER_TRY * 1000)}ms", "budget_percent": 100},
                "outlier_detection": {"base_ejection_time": "5s", "consecutive_errors": ERROR_LIMIT,
                                      "consecutive_5xx": ERROR_LIMIT},
                "failover": {"hold_time": "2s"},
                "deregistration_delay": "5s",
                **({"hedging": {"delay": f"{int(self.hedge * 1000)}ms"}} if self.hedge is not None else {}),
            }},
        }

    def describe(self) -> str:
        import yaml

        return str(yaml.safe_dump(self.spec(), sort_keys=False))

    async def start(self) -> None:
        spec_path = self.tmp / "fivenines.yaml"
        spec_path.write_text(self.describe())
        ready = self.tmp / "ready.json"
        self.log = (self.tmp / "fivenines.log").open("wb")
        self.proc = spawn([PY, "-m", "fivenines", "up", str(spec_path), "--ready-file", str(ready),
                           "--log-level", "warning"], self.log)

        async def is_ready() -> Any:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"fivenines exited: {(self.tmp / 'fivenines.log').read_text()[-2000:]}")
            return json.loads(ready.read_text()) if ready.exists() else None

        info = await wait_for(is_ready, 20, "fivenines to start")
        self.admin = info["admin"]
        _, _, hostport = self.admin.partition("://")
        self.admin_host, p = hostport.rsplit(":", 1)
        self.admin_port = int(p)
        self.host, port = info["listeners"][0].rsplit(":", 1)
        self.port = int(port)

    async def status(self) -> Any:
        _status, body = await http("GET", self.admin_host, self.admin_port, "/status")
        return json.loads(body)

    async def ready(self) -> None:
        async def ok() -> bool:
            g = (await self.status())["target_groups"]["web"]
            ts = g["targets"]
            # settled: every member healthy and not ejected, the home members (web-1..3) active again
            return (all(t["state"] == "healthy" and not t.get("excluded") for t in ts)
                    and g["serving"] == ["web-1", "web-2", "web-3"]
                    and (g.get("rollout") or {}).get("state") != "running")

        await wait_for(ok, 90, "fivenines: 4 healthy, web-1..3 serving, none ejected", 0.1)
        self.targets = {t["id"]: t for t in (await self.status())["target_groups"]["web"]["targets"]}

    async def layout(self) -> tuple[str, str]:
        g = (await self.status())["target_groups"]["web"]
        standby = next(t["id"] for t in g["targets"] if t["role"] == "standby")
        return g["serving"][0], standby

    def pid(self, tid: str) -> int:
        return int(self.targets[tid]["pid"])

    def port_of(self, tid: str) -> int:
        return int(self.targets[tid]["address"].rsplit(":", 1)[1])

    async def watch(self, victim: str, since_wall: float, stop: asyncio.Event) -> Detection:
        det = Detection()
        seq = self.last_seq
        while not stop.is_set() and det.at is None:
            _, body = await http("GET", self.admin_host, self.admin_port, f"/events?since={seq}&limit=1000")
            for e in json.loads(body)["events"]:
                seq = max(seq, e["seq"])
                if e["target"] != victim or e["time"] < since_wall:
                    continue
                if e["kind"] == "ejection" and e["new"] == "ejected":
                    det = Detection(e["time"], f"passive: {e['reason'].split(': ', 1)[-1].split(' (ejection')[0]}")
                    break
                if e["kind"] == "health" and e["new"] == "unhealthy":
                    det = Detection(e["time"], f"active: {e['reason'][:40]}")
                    break
            await asyncio.sleep(0.02)
        self.last_seq = seq
        return det

    async def sync_events(self) -> None:
        _, body = await http("GET", self.admin_host, self.admin_port, "/events?limit=1")
        ev = json.loads(body)["events"]
        if ev:
            self.last_seq = ev[-1]["seq"]

    async def rolling_restart(self) -> float:
        t0 = time.monotonic()
        token = (self.tmp / "state" / "admin.token").read_text().strip()
        status, body = await http("POST", self.admin_host, self.admin_port, "/target_groups/web/restart",
                                  headers={"Authorization": f"Bearer {token}"})
        if status != 202:
            raise RuntimeError(f"restart refused: {status} {body!r}")

        async def done() -> Any:
            ro = (await self.status())["target_groups"]["web"]["rollout"]
            if ro["state"] == "failed":
                raise RuntimeError(f"rolling restart failed: {ro['outcome']}")
            return ro["state"] == "done"

        await wait_for(done, 120, "the rolling restart", 0.1)
        return time.monotonic() - t0

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 20)
            except TimeoutError:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.log.close()


class HAProxySystem(System):
    name = "haproxy"

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ids = ["web-1", "web-2", "web-3", "web-4"]
        self.ports = {tid: free_port() for tid in self.ids}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.sock = str(tmp / "haproxy.sock")
        self.port = free_port()

    def config(self) -> str:
        """HAProxy's best equivalent of the fivenines spec (``haproxy -c`` checks it before the run)."""
        servers = "\n".join(
            f"  server {tid} 127.0.0.1:{self.ports[tid]} check{' backup' if tid == 'web-4' else ''}" for tid in self.ids
        )
        ms = lambda s: f"{int(s * 1000)}ms"  # noqa: E731
        return f"""global
  maxconn 4000
  stats socket {self.sock} mode 600 level admin
  nbthread 1
defaults
  mode http
  timeout connect {ms(CONNECT_TIMEOUT)}
  timeout client 30s
  # per try: fivenines retries.per_try_timeout (a response timeout is retried and observed)
  timeout server {ms(PER_TRY)}
  timeout check {ms(TIMEOUT)}
  # {ATTEMPTS} tries in all, every retry on another server, no retry budget
  retries {ATTEMPTS - 1}
  option redispatch 1
  retry-on conn-failure empty-response junk-response response-timeout 500 501 502 503 504
  maxconn 4000
frontend fe
  bind 127.0.0.1:{self.port}
  default_backend be
backend be
  balance roundrobin
  option httpchk GET /health
  http-check expect status 200-399
  # active checks as fivenines' health_check; passive: the first error or 5xx marks the server down
  default-server inter {ms(INTERVAL)} fall {FALL} rise {RISE} observe layer7 error-limit {ERROR_LIMIT} on-error mark-down
  # web-4 is the standby: HAProxy's backup serves only when every active server is down
{servers}
"""

    def describe(self) -> str:
        return self.config()

    def start_demo(self, tid: str) -> None:
        with (self.tmp / f"{tid}.log").open("ab") as log:
            self.procs[tid] = spawn([PY, "-m", "fivenines.demo", "--port", str(self.ports[tid]), "--id", tid], log,
                                    new_session=True)

    def validate(self) -> None:
        """``haproxy -c`` on the configuration; raises with HAProxy's own message when it is refused."""
        cfg = self.tmp / "haproxy.cfg"
        cfg.write_text(self.config())
        r = subprocess.run([haproxy_exe(), "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"haproxy -c refused the configuration:\n{r.stdout}{r.stderr}")

    async def start(self) -> None:
        for tid in self.ids:
            self.start_demo(tid)
        cfg = self.tmp / "haproxy.cfg"
        self.validate()
        exe = haproxy_exe()
        self.hlog = (self.tmp / "haproxy.log").open("wb")
        self.haproxy = spawn([exe, "-db", "-f", str(cfg)], self.hlog)

    async def cmd(self, line: str) -> str:
        r, w = await asyncio.open_unix_connection(self.sock)
        try:
            w.write(line.encode() + b"\n")
            return (await r.read()).decode()
        finally:
            w.close()

    async def stat(self) -> dict[str, dict[str, str]]:
        text = await self.cmd("show stat")
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {row["svname"]: row for row in rows if row["pxname"] == "be"}

    async def ready(self) -> None:
        async def ok() -> bool:
            st = await self.stat()
            return all(st[t]["status"] == "UP" for t in self.ids)

        await wait_for(ok, 60, "haproxy: all servers UP", 0.1)

    async def layout(self) -> tuple[str, str]:
        return "web-1", "web-4"

    def pid(self, tid: str) -> int:
        return self.procs[tid].pid

    def port_of(self, tid: str) -> int:
        return self.ports[tid]

    async def watch(self, victim: str, since_wall: float, stop: asyncio.Event) -> Detection:
        while not stop.is_set():
            st = await self.stat()
            if not st[victim]["status"].startswith("UP"):
                at = time.time()
                return Detection(at, self.down_reason(victim)
                                 or f"checks: {st[victim]['status']} ({st[victim].get('check_status', '')})")
            await asyncio.sleep(0.02)
        return Detection()

    def down_reason(self, victim: str) -> str:
        """Why HAProxy marked ``victim`` down, from its last "is DOWN" line: "passive: ..." when
        ``observe`` did it (reason "Health analyze"), "active: ..." when the checks did."""
        self.hlog.flush()
        text = (self.tmp / "haproxy.log").read_text(errors="replace")
        lines = [ln for ln in text.splitlines() if f"Server be/{victim} is DOWN" in ln]
        if not lines:
            return ""
        reason = lines[-1].partition("reason: ")[2]
        if reason.startswith("Health analyze"):
            info = reason.partition("info: ")[2].strip('"').split('"')[0]
            return f"passive: {info.partition('last one was: ')[2] or info or reason}"
        return f"active: {reason.split(', check duration')[0].split('. ')[0]}"

    async def after_kill(self, tid: str) -> None:
        with contextlib.suppress(ChildProcessError):
            self.procs[tid].wait()
        self.start_demo(tid)

    async def rolling_restart(self) -> float:
        """The operator's script: drain, wait for no sessions (bounded), stop, start, ready, wait for UP."""
        t0 = time.monotonic()
        for tid in self.ids:
            await self.cmd(f"set server be/{tid} state drain")
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                if int((await self.stat())[tid]["scur"] or 0) == 0:
                    break
                await asyncio.sleep(0.02)
            p = self.procs[tid]
            p.send_signal(signal.SIGTERM)
            await asyncio.to_thread(p.wait)
            self.start_demo(tid)
            await self.cmd(f"set server be/{tid} state ready")
            # wait until the new process answers its checks again
            await asyncio.sleep(INTERVAL * RISE)

            async def up(tid: str = tid) -> bool:
                st = await self.stat()
                return st[tid]["status"] == "UP" and st[tid]["check_status"] in ("L7OK", "L6OK", "L4OK")

            await wait_for(up, 30, f"{tid} UP", 0.05)
        return time.monotonic() - t0

    async def stop(self) -> None:
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            await asyncio.to_thread(self.haproxy.wait)
            self.hlog.close()
        for p in self.procs.values():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGCONT)
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()


# --------------------------------------------------------------------------- scenarios


@dataclass
class Result:
    system: str
    scenario: str
    sent: int = 0
    failed: int = 0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    detect_s: float | None = None
    detect_how: str = ""
    standby_s: float | None = None
    note: str = ""
    failures: dict[str, int] = field(default_factory=dict)


SCENARIOS = {
    "a": "kill -9 one active",
    "b": "SIGSTOP, SIGCONT",
    "c": "one answers 500",
    "d": "one 2s slow",
    "e": "rolling restart",
}


async def run_scenario(sys_: System, key: str, rate: float, pre: float, post: float, stop_s: float = 10.0) -> Result:
    await sys_.ready()
    if isinstance(sys_, FiveninesSystem):
        await sys_.sync_events()
    victim, standby = await sys_.layout()
    gen = LoadGen(sys_.host, sys_.port, rate)
    gen.start()
    await asyncio.sleep(pre)
    stop = asyncio.Event()
    t0_wall, t0 = time.time(), time.monotonic()
    watcher = asyncio.get_running_loop().create_task(sys_.watch(victim, t0_wall, stop)) if key != "e" else None
    note = ""
    pid = sys_.pid(victim)
    vport = sys_.port_of(victim)
    if key == "a":
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(post)
        await sys_.after_kill(victim)
    elif key == "b":
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(stop_s)
        finally:
            os.kill(pid, signal.SIGCONT)
        await asyncio.sleep(post)
    elif key == "c":
        await http("GET", "127.0.0.1", vport, "/_fail")
        await asyncio.sleep(post)
        await http("GET", "127.0.0.1", vport, "/_recover")
    elif key == "d":
        await http("GET", "127.0.0.1", vport, "/_slow?ms=2000")
        await asyncio.sleep(post)
        await http("GET", "127.0.0.1", vport, "/_recover")
    elif key == "e":
        took = await sys_.rolling_restart()
        note = f"restart took {took:.1f}s"
        await asyncio.sleep(1.0)
    stop.set()
    det = await watcher if watcher is not None else Detection()
    rec = await gen.stop()
    res = Result(sys_.name, key, note=note)
    res.sent = len(rec)
    lat = sorted(rec.latency)
    res.p99_ms = lat[min(len(lat) - 1, math.ceil(0.99 * len(lat)) - 1)] * 1000 if lat else 0.0
    res.max_ms = lat[-1] * 1000 if lat else 0.0
    for s, inst in zip(rec.status, rec.instance, strict=True):
        if s != 200:
            res.failed += 1
            label = str(s) if s > 0 else inst.split(":")[0]
            res.failures[label] = res.failures.get(label, 0) + 1
    if det.at is not None:
        res.detect_s = det.at - t0_wall
        res.detect_how = det.how
    firsts = [sched + latency - t0 for sched, latency, inst in zip(rec.sched, rec.latency, rec.instance, strict=True)
              if inst == standby and sched + latency >= t0]
    res.standby_s = min(firsts) if firsts else None
    return res


def fmt(v: float | None, unit: str = "s", digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}{unit}"


def print_table(results: list[Result], rate: float) -> None:
    print()
    print(f"Failover under {rate:.0f} requests/s keep-alive load; 3 active + 1 standby demo instances; checks every "
          f"{INTERVAL * 1000:.0f}ms, timeout {TIMEOUT * 1000:.0f}ms, rise {RISE} fall {FALL}; per-try timeout "
          f"{PER_TRY * 1000:.0f}ms, {ATTEMPTS} tries, no retry budget; passive: out at the first error or 5xx "
          f"(configurations above)")
    head = f"| {'scenario':<22} | {'system':<14} | {'sent':>6} | {'failed':>6} | {'p99 ms':>7} | {'max ms':>7} | " \
           f"{'detected':>8} | {'how':<34} | {'standby served':>14} |"
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for key, title in SCENARIOS.items():
        for r in (r for r in results if r.scenario == key):
            how = r.detect_how or r.note
            print(f"| {key + ') ' + title:<22} | {r.system:<14} | {r.sent:>6} | {r.failed:>6} | {r.p99_ms:>7.1f} | "
                  f"{r.max_ms:>7.1f} | {fmt(r.detect_s):>8} | {how[:34]:<34} | {fmt(r.standby_s):>14} |")
    print()
    for r in results:
        if r.failures:
            print(f"  {r.system} {r.scenario}: failures by kind: {r.failures}")


def targets_text(hedge: float | None) -> str:
    wait = f"the hedge delay ({hedge * 1000:.0f}ms)" if hedge is not None else f"one per-try timeout ({PER_TRY * 1000:.0f}ms)"
    return (f"0 failed requests in a, b, c, e; worst latency in b and d within {wait} + {LATENCY_SLACK * 1000:.0f}ms; "
            f"every fault in a-d detected, by the checks within interval x fall + timeout "
            f"({ACTIVE_DETECTION_BOUND:.2f}s)")


def check_targets(results: list[Result], system: str, hedge: float | None = None) -> list[str]:
    """The targets (the same for every system, see :func:`targets_text`) that ``system`` missed."""
    misses = []
    by = {r.scenario: r for r in results if r.system == system}
    for key in "abce":
        if key in by and by[key].failed:
            misses.append(f"({key}) {by[key].failed} failed requests (target: 0)")
    wait = hedge if hedge is not None else PER_TRY
    for key in "bd":
        if key in by and by[key].max_ms > (wait + LATENCY_SLACK) * 1000:
            misses.append(f"({key}) max latency {by[key].max_ms:.0f}ms > {wait * 1000:.0f}ms + "
                          f"{LATENCY_SLACK * 1000:.0f}ms")
    for key in "abcd":
        r = by.get(key)
        if r is None:
            continue
        if r.detect_s is None:
            misses.append(f"({key}) not detected")
        elif not r.detect_how.startswith("passive") and r.detect_s > ACTIVE_DETECTION_BOUND:
            misses.append(f"({key}) detection by the checks took {r.detect_s:.3f}s > {ACTIVE_DETECTION_BOUND:.2f}s")
    return misses


def verdicts(results: list[Result], systems: list[System]) -> bool:
    """Print each system's verdict on the targets; True when fivenines (the system under test) met them."""
    ok = True
    for s in systems:
        if not any(r.system == s.name for r in results):
            continue
        misses = check_targets(results, s.name, s.hedge)
        print(f"{s.name} targets ({targets_text(s.hedge)}): " + ("all met" if not misses else "MISSED"))
        for m in misses:
            print(f"  - {m}")
        if misses and isinstance(s, FiveninesSystem):
            ok = False
    return ok


def plan(systems: list[System], scenarios: str, hedge_scenarios: str) -> list[tuple[str, System]]:
    """(scenario, system) in the order they run: scenario by scenario, the systems' order
    alternating from one scenario to the next; the hedging run only joins its scenarios.

    >>> class S(System):
    ...     def __init__(self, name: str, hedge: float | None = None) -> None:
    ...         self.name, self.hedge = name, hedge
    >>> [(k, s.name) for k, s in plan([S("f9"), S("hap"), S("f9h", 0.05)], "abd", "bd")]
    [('a', 'f9'), ('a', 'hap'), ('b', 'f9h'), ('b', 'hap'), ('b', 'f9'), ('d', 'f9'), ('d', 'hap'), ('d', 'f9h')]
    """
    out: list[tuple[str, System]] = []
    for i, key in enumerate(scenarios):
        runs = [s for s in systems if key in (hedge_scenarios if s.hedge is not None else scenarios)]
        out += [(key, s) for s in (runs if i % 2 == 0 else runs[::-1])]
    return out


async def main_async(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="fivenines-failover-bench-"))
    systems: list[System] = []
    if "fivenines" in args.systems:
        (tmp / "f9").mkdir()
        systems.append(FiveninesSystem(tmp / "f9"))
    if "haproxy" in args.systems:
        (tmp / "hap").mkdir()
        systems.append(HAProxySystem(tmp / "hap"))
    if args.hedge_scenarios and "fivenines" in args.systems:
        (tmp / "f9h").mkdir()
        systems.append(FiveninesSystem(tmp / "f9h", hedge=HEDGE))
    results: list[Result] = []
    started: list[System] = []
    try:
        for s in systems:
            print(f"== {s.name}: configuration\n{s.describe().rstrip()}\n", flush=True)
            if isinstance(s, HAProxySystem):
                s.validate()
                print("   (haproxy -c: configuration valid)\n", flush=True)
        for s in systems:
            started.append(s)
            await s.start()
        pre = 2.0 if not (args.quick or args.smoke) else 1.0 if args.quick else 0.5
        scale = 0.5 if args.smoke or args.quick else 1.0
        stop_s = 2.0 if args.smoke else 10.0
        for key, s in plan(systems, args.scenarios, args.hedge_scenarios):
            # after the fault: long enough for the checks to notice (a, c, d), and to see the recovery
            post = {"a": 4.0, "b": 2.0, "c": 4.0, "d": 4.0, "e": 0.0}[key] * scale
            r = await run_scenario(s, key, args.rate, pre, post, stop_s)
            results.append(r)
            print(f"   {key}) {SCENARIOS[key]:<20} {s.name:<12} sent {r.sent}, failed {r.failed}, "
                  f"p99 {r.p99_ms:.1f}ms, max {r.max_ms:.1f}ms, detected {fmt(r.detect_s)} {r.detect_how}, "
                  f"standby served {fmt(r.standby_s)} {r.note}", flush=True)
    finally:
        for s in started:
            with contextlib.suppress(Exception):
                await s.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs kept in {tmp}")
    print_table(results, args.rate)
    if args.smoke:
        print("smoke run (--smoke): light load and short phases; the numbers and verdicts say the bench works, "
              "not how the systems compare")
    return 0 if verdicts(results, systems) else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=2000.0, help="requests per second (default 2000)")
    ap.add_argument("--systems", default="fivenines,haproxy", help="comma-separated: fivenines,haproxy")
    ap.add_argument("--scenarios", default="abcde", help="which scenarios, in this order, e.g. abc")
    ap.add_argument("--hedge-scenarios", default="bd",
                    help=f"also run these with fivenines hedging ({int(HEDGE * 1000)}ms); '' for none (default bd)")
    ap.add_argument("--quick", action="store_true", help="shorter phases")
    ap.add_argument("--smoke", action="store_true",
                    help="a short check that the bench works: 300 requests/s, short phases, SIGSTOP for 2 s, "
                         "hedging in b only")
    ap.add_argument("--keep", action="store_true", help="keep the logs directory")
    args = ap.parse_args()
    args.systems = args.systems.split(",")
    if args.smoke:
        args.rate = min(args.rate, 300.0)
        args.hedge_scenarios = "b" if "b" in args.hedge_scenarios else ""
    if "haproxy" in args.systems:
        try:
            haproxy_exe()
        except RuntimeError as exc:
            sys.exit(str(exc))
    try:
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    sys.exit(runner(main_async(args)))


if __name__ == "__main__":
    main()
