#!/usr/bin/env python3
"""What the chaos load generator costs: CPU per second of load, schedule keeping, at fixed rates.

``fivenines chaos`` runs its open-loop load generator in the same process as the
fault scheduler, on the same 2 cores as fivenines and the instances. This starts
one nginx on loopback (so the backend is not what is measured), drives it with
:class:`fivenines.chaos.loadgen.LoadGen` at each rate for ``--seconds`` seconds,
and prints, per rate: requests sent and good, the generator's CPU time as a share
of one core (user + system of this process during the run), the worst dispatch
lag (how late the generator sent a request after it was due), and the p50/p99
latency it measured.

Targets (checked, exit 1 if missed): at 2,000 requests/s, under 25 % of one core,
no request failed, dispatch lag under 20 ms. Results go to bench/results/chaos_loadgen.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from fivenines.chaos.loadgen import LoadGen  # noqa: E402
from fivenines.proxy import aio  # noqa: E402
from fivenines.runtime.supervisor import die_with_parent  # noqa: E402

TARGET_RATE = 2000.0
TARGETS = {"cpu_share": 0.25, "max_lag_ms": 20.0, "failed": 0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_nginx(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "ok\\n"; }}
  }}
}}
""")
    p = subprocess.Popen([nginx, "-c", str(conf), "-p", str(work)], preexec_fn=die_with_parent(os.getpid()))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return p, port
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit("nginx did not start")


def measure(port: int, rate: float, seconds: float) -> dict[str, Any]:
    async def go() -> tuple[LoadGen, Any, float, float]:
        gen = LoadGen("127.0.0.1", port, rate, seconds)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        log = await gen.run(time.monotonic() + 0.05)
        wall = time.monotonic() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        return gen, log, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), wall

    gen, log, cpu, wall = aio.run(go())
    p = log.request_availability()
    lat = log.latency_summary()
    return {
        "rate": rate,
        "seconds": seconds,
        "sent": gen.issued,
        "good": p.k,
        "failed": p.n - p.k,
        "cpu_s": round(cpu, 3),
        "cpu_share": round(cpu / wall, 4),
        "max_lag_ms": gen.stats()["max_dispatch_lag_ms"],
        "p50_ms": round(lat["p50_ms"] or 0, 3),
        "p99_ms": round(lat["p99_ms"] or 0, 3),
        "connections": gen.connections_opened,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="500,1000,2000,4000")
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        nginx, port = start_nginx(Path(d))
        try:
            for rate in (float(x) for x in args.rates.split(",")):
                rows.append(measure(port, rate, args.seconds))
        finally:
            nginx.terminate()
            nginx.wait(10)
    print(f"{'rate':>6} {'sent':>7} {'failed':>6} {'cpu/core':>8} {'max lag':>9} {'p50':>8} {'p99':>8} {'conns':>5}")
    for r in rows:
        print(f"{r['rate']:>6g} {r['sent']:>7} {r['failed']:>6} {r['cpu_share']:>8.1%} {r['max_lag_ms']:>7.1f}ms "
              f"{r['p50_ms']:>6.2f}ms {r['p99_ms']:>6.2f}ms {r['connections']:>5}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "chaos_loadgen.json").write_text(json.dumps({"rows": rows, "targets": TARGETS}, indent=2))
    at = next((r for r in rows if r["rate"] == TARGET_RATE), None)
    if at is None:
        return 0
    missed = [k for k, v in (("cpu_share", at["cpu_share"] > TARGETS["cpu_share"]),
                             ("max_lag_ms", at["max_lag_ms"] > TARGETS["max_lag_ms"]),
                             ("failed", at["failed"] > TARGETS["failed"])) if v]
    print("targets at 2000/s: " + ("met" if not missed else "MISSED: " + ", ".join(missed)))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
