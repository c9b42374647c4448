#!/usr/bin/env python3
"""The timing targets the tests no longer assert: measured here, on a quiet machine.

The tests check behaviour (served, cut, detected, who answered, in which order) with bounds a
loaded 2-core CI machine cannot miss. How fast it happens is measured here, against the targets
the tests used to hold, each printed with its verdict:

  slowloris   p99 of normal requests while 500 connections trickle their heads  < 100 ms
  probe       a 50 ms probe loop: no gap below 45 ms (interval - 10 % jitter), median <= 55 ms
  hedging     a 600 ms slow target behind hedging.delay 50 ms: worst latency      < 400 ms
              a hung target, per-try timeout 1 s, hedging 50 ms: worst latency     < 500 ms
  kill        kill -9 of an instance until fivenines marks it unhealthy           < 200 ms
  phi         SIGSTOP until phi accrual (200 ms checks) suspects it                < 1 s
              (counting 8 failed checks would take 1.75 s)
  per-try     a hung target, per-try timeout 300 ms: worst latency of sequential  < 500 ms
              requests (one per-try timeout, once)
  loadgen     the chaos load generator's 300 ms timeout: the latest one it counts  < 500 ms

``.venv/bin/python bench/timings_bench.py`` runs them all (about a minute); ``--only kill,phi``
some. Exit status 1 when a target is missed. Like every bench, meaningless while other work
loads the machine. Replicated-store failover times are bench/jepsen_redis.py's; the failover
comparison with HAProxy is bench/failover_bench.py's.

Everything started (fivenines, demo instances, the attacker) is stopped at the end, even on
failure; all of it listens on 127.0.0.1 port 0.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test rig (tests/helpers.py) is shared with the benches

from tests.helpers import Demo, Fivenines, demo_spec, wait_until  # noqa: E402

from fivenines.proxy import aio  # noqa: E402


@dataclass
class Measure:
    name: str
    what: str
    value: float  # seconds
    target: float  # seconds: value must be below (or, with at_least, not below)
    detail: str = ""
    at_least: bool = False

    @property
    def met(self) -> bool:
        return self.value >= self.target if self.at_least else self.value < self.target

    def line(self) -> str:
        rel = ">=" if self.at_least else "<"
        return (f"{self.name:<10} {self.what:<58} {self.value * 1000:9.1f} ms  target {rel} {self.target * 1000:.0f} ms"
                f"  {'met' if self.met else 'MISSED'}{'  (' + self.detail + ')' if self.detail else ''}")


@contextmanager
def fivenines(spec: dict[str, Any]) -> Iterator[Fivenines]:
    with tempfile.TemporaryDirectory(prefix="fivenines-timings-") as tmp:
        f = Fivenines(Path(tmp), spec, ["--log-level", "warning"])
        try:
            yield f
        finally:
            f.stop()


def unhealthy_after(f: Fivenines, tid: str, since_wall: float, timeout: float = 10.0) -> dict[str, Any]:
    """The first event marking ``tid`` unhealthy at or after ``since_wall``."""
    def seen() -> dict[str, Any] | None:
        with urllib.request.urlopen(f"{f.admin}/events?limit=1000", timeout=5) as r:
            evs = json.loads(r.read())["events"]
        return next((e for e in evs if e["kind"] == "health" and e["target"] == tid and e["new"] == "unhealthy"
                     and e["time"] >= since_wall), None)

    return wait_until(seen, timeout, 0.01, what=f"{tid} unhealthy")


# --------------------------------------------------------------------------- the measurements


def slowloris() -> list[Measure]:
    from tests.integration.test_hostile import _attacker, _latencies, _p99

    spec = demo_spec(count=2, standby=0)
    spec["listeners"][0]["timeouts"] = {"client_header": "2s"}
    with fivenines(spec) as f:
        f.wait_healthy()
        attack = _attacker(f.port, 500, "127.0.0.2", 6.0, trickle=True)
        try:
            assert attack.stdout is not None and attack.stdout.readline().startswith("opened 500")
            lat = _latencies(f.host, f.port, 4.0)
            attack.communicate(timeout=20)
        finally:
            attack.kill()
            attack.wait()
    return [Measure("slowloris", "p99 of normal requests beside 500 trickling connections", _p99(lat), 0.1,
                    f"{len(lat)} requests, max {max(lat) * 1000:.1f} ms")]


def probe() -> list[Measure]:
    from fivenines.core.health import CheckResult
    from fivenines.runtime.probe import probe_loop

    async def go() -> list[float]:
        times: list[float] = []

        async def check() -> CheckResult:
            times.append(time.monotonic())
            return CheckResult.passed()

        task = asyncio.create_task(probe_loop(check, 0.05, lambda r: None, rng=random.Random(3)))
        await asyncio.sleep(3.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return times

    gaps = sorted(b - a for a, b in itertools.pairwise(aio.run(go())))
    detail = f"{len(gaps)} gaps, max {gaps[-1] * 1000:.1f} ms"
    return [Measure("probe", "smallest gap of a 50 ms probe loop (jitter 10 %)", gaps[0], 0.045, detail, at_least=True),
            Measure("probe", "median gap of a 50 ms probe loop", statistics.median(gaps), 0.0551, detail)]


def hedging() -> list[Measure]:
    from tests.integration.servers import DataPlane

    out = []
    for what, control, per_try, target in (("a 600 ms slow target, hedging 50 ms: worst latency", "/_slow?ms=600",
                                             None, 0.4),
                                            ("a hung target, per-try 1 s, hedging 50 ms: worst latency", "/_hang",
                                             "1s", 0.5)):
        demos = [Demo("slow"), Demo("fast")]
        dp = None
        try:
            demos[0].get(control)
            retries: dict[str, Any] = {"attempts": 2, "budget_percent": 100}
            if per_try:
                retries["per_try_timeout"] = per_try
            dp = DataPlane({"listeners": [{"port": 0, "default_target_group": "web"}],
                            "target_groups": {"web": {"targets": [d.address for d in demos], "retries": retries,
                                                      "hedging": {"delay": "50ms"}}}})
            lat = []
            for _ in range(20):
                t0 = time.monotonic()
                status, _, body = dp.request("GET", "/", timeout=10)
                lat.append(time.monotonic() - t0)
                assert status == 200 and b"fast" in body, (status, body)
        finally:
            if dp is not None:
                dp.close()
            for d in demos:
                d.stop()
        out.append(Measure("hedging", what, max(lat), target, f"median {statistics.median(lat) * 1000:.1f} ms"))
    return out


def kill() -> list[Measure]:
    with fivenines(demo_spec(count=2, standby=1)) as f:
        f.wait_healthy()
        victim = f.target("web-1")
        t0 = time.time()
        os.kill(victim["pid"], signal.SIGKILL)
        e = unhealthy_after(f, "web-1", t0)
    return [Measure("kill", "kill -9 until the instance is marked unhealthy", e["time"] - t0, 0.2, e["reason"][:40])]


def phi() -> list[Measure]:
    spec = demo_spec(count=1, standby=1, interval="200ms", timeout="150ms")
    hc = spec["target_groups"]["web"]["health_check"]
    hc["unhealthy_threshold"] = 8
    hc["detector"] = {"kind": "phi_accrual", "phi_threshold": 8}
    with fivenines(spec) as f:
        f.wait_healthy()
        victim = wait_until(lambda: (x := f.target("web-1"))["detector"]["samples"] >= 8 and x, 10, what="heartbeats")
        t0 = time.time()
        os.kill(victim["pid"], signal.SIGSTOP)
        try:
            e = unhealthy_after(f, "web-1", t0)
        finally:
            os.kill(victim["pid"], signal.SIGCONT)
    return [Measure("phi", "SIGSTOP until phi accrual suspects it (checks every 200 ms)", e["time"] - t0, 1.0,
                    e["reason"][:40])]


def per_try() -> list[Measure]:
    import http.client

    spec = demo_spec(count=2, standby=1, interval="1s", timeout="500ms")
    spec["target_groups"]["web"]["retries"] = {"attempts": 2, "per_try_timeout": "300ms"}
    with fivenines(spec) as f:
        f.wait_healthy()
        victim = f.target("web-1")
        os.kill(victim["pid"], signal.SIGSTOP)
        lat = []
        try:
            conn = http.client.HTTPConnection(f.host, f.port, timeout=10)
            for _ in range(30):
                t0 = time.monotonic()
                conn.request("GET", "/")
                r = conn.getresponse()
                r.read()
                lat.append(time.monotonic() - t0)
                assert r.status == 200
            conn.close()
        finally:
            os.kill(victim["pid"], signal.SIGCONT)
    return [Measure("per-try", "a hung target, per-try 300 ms: worst of 30 requests in a row", max(lat), 0.5,
                    f"{sum(t > 0.25 for t in lat)} waited a per-try timeout")]


def loadgen() -> list[Measure]:
    from fivenines.chaos.loadgen import LoadGen

    demo = Demo("stopped")
    try:
        demo.proc.send_signal(signal.SIGSTOP)
        try:
            async def go() -> Any:
                return await LoadGen("127.0.0.1", demo.port, 100, 0.5, timeout=0.3).run(time.monotonic() + 0.02)

            log = aio.run(go())
        finally:
            demo.proc.send_signal(signal.SIGCONT)
    finally:
        demo.stop()
    return [Measure("loadgen", "the load generator's 300 ms timeout: the latest one counted", float(log.latency.max()),
                    0.5, f"earliest {float(log.latency.min()) * 1000:.1f} ms")]


SECTIONS: dict[str, Callable[[], list[Measure]]] = {
    "slowloris": slowloris, "probe": probe, "hedging": hedging, "kill": kill, "phi": phi, "per-try": per_try,
    "loadgen": loadgen,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated, of: {', '.join(SECTIONS)}")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    results: list[Measure] = []
    for name in names:
        got = SECTIONS[name]()
        for m in got:
            print(m.line(), flush=True)
        results += got
    missed = [m for m in results if not m.met]
    print(f"\n{len(results) - len(missed)} of {len(results)} timing targets met"
          + (": missed " + ", ".join(f"{m.name} ({m.what})" for m in missed) if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
