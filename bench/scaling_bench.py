#!/usr/bin/env python3
"""Elastic scaling measured: a load that steps from 1x to 5x and back, against three layouts.

``make scaling-bench`` (or ``.venv/bin/python bench/scaling_bench.py``):

1. **One instance's capacity**, measured first: a demo backend with a fixed cost per
   request (``--cost-ms 40 --capacity 4``: 4 requests worked on at once, each for 40 ms,
   the rest queue) driven closed-loop by more connections than it serves at once; its
   throughput is C requests/s.
2. From C: the policy's target T = C / 2 requests/s per instance (half the capacity:
   room for the load to double while instances start, as the usual 50 % CPU target);
   1x = 1.7 x T (the MIN = 2 instances at 85 % of target); 5x = 8.5 x T (8.5 instances'
   worth: not a whole number, so that a reading a hair above it does not ask for one more);
   MAX = ceil(8.5) + 1 = 10. A p99 objective of 4 x the cost (160 ms: an instance on
   target answers in about the cost).
3. The same open-loop load (``fivenines.chaos.loadgen``: each request sent when due,
   latency counted from then; a 10 s client timeout) in three phases, 1x -> 5x -> 1x,
   against three runs of fivenines, each over its own demo instances:

   a. a fixed ``count`` = MIN (what the 1x needs);
   b. a fixed ``count`` = MAX (what the peak needs, all the time);
   c. ``scaling: {min: MIN, max: MAX}`` with a ``requests_per_target: T`` policy.

   Every run balances with ``least_outstanding_requests`` (a backlog on an old instance
   does not get new requests while new instances are idle) and has latency ejection off
   (an instance with a backlog is slow, not broken); the full configurations are printed.

Per phase it prints: requests, failed requests, p50/p99 latency, instances (mean, min-max),
the time from the phase's start (the step) until every later second's p99 is under the
objective, and the scale direction changes in the phase. Per run: instance-seconds.

Targets for (c), checked (exit 1 when one is missed): 0 failed requests; p99 back under the
objective within 10 s of the 5x step; instance-seconds at least 30 % lower than (b); no more
than one scale direction change within a constant phase.

The scaling run uses a 15 s scale-in stabilisation (the default is 3 minutes: the phases
here are 15 s, 35 s and 55 s; the last is the longest because a scale-in first waits out
its window and then steps down by at most ``max_step``) and evaluates every second on a 3 s window (defaults 2 s and 6 s); both are
printed. Results go to bench/results/scaling_bench.json. Bounded: 6 to 7 minutes; every
process started is stopped at the end (and on Ctrl-C). ``--quick`` shortens the phases (a
check that the bench works: its numbers mean little).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from fivenines.chaos.loadgen import LoadGen  # noqa: E402
from fivenines.chaos.outcomes import OutcomeLog  # noqa: E402
from fivenines.cli.admin_client import AdminError, aget_json  # noqa: E402
from fivenines.proxy import aio  # noqa: E402
from fivenines.runtime.supervisor import die_with_parent  # noqa: E402

PY = sys.executable
COST_MS = 40
CAPACITY = 4  # requests one instance works on at once
MIN = 2
BASE_X_TARGET = 1.7  # the base load (1x) in instances' worth at the target
STEP = 5  # the peak is 5x the base load
MAX = math.ceil(BASE_X_TARGET * STEP) + 1
OBJECTIVE_X_COST = 4  # the p99 objective: 4 x the cost
CLIENT_TIMEOUT = 10.0
TARGETS = {"failed": 0, "p99_back_s": 10.0, "instance_seconds_saved": 0.30, "direction_changes": 1}


# --------------------------------------------------------------------------- one instance's capacity


async def _closed_loop(host: str, port: int, seconds: float, conns: int) -> int:
    """Requests completed by ``conns`` keep-alive connections, each sending the next when answered."""
    done = 0
    end = time.monotonic() + seconds
    request = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()

    async def one() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.monotonic() < end:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                m = re.search(rb"(?i)content-length:\s*(\d+)", head)
                await reader.readexactly(int(m.group(1)) if m else 0)
                done += 1
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(conns)))
    return done


def measure_capacity(work: Path) -> float:
    """Requests/s one demo instance with the bench's cost serves, saturated (after a 1 s warm-up)."""
    log = (work / "capacity-demo.log").open("w")
    proc = subprocess.Popen([PY, "-m", "fivenines.demo", "--port", "0", "--cost-ms", str(COST_MS),
                             "--capacity", str(CAPACITY)], stderr=subprocess.PIPE, stdout=log, text=True,
                            preexec_fn=die_with_parent(os.getpid()))
    try:
        assert proc.stderr is not None
        m = re.search(r"listening on ([\d.]+):(\d+)", proc.stderr.readline())
        if m is None:
            raise SystemExit("the demo backend did not start")
        host, port = m.group(1), int(m.group(2))

        async def measure() -> float:
            await _closed_loop(host, port, 1.0, 3 * CAPACITY)
            t0 = time.monotonic()
            n = await _closed_loop(host, port, 4.0, 3 * CAPACITY)
            return n / (time.monotonic() - t0)

        return aio.run(measure())
    finally:
        proc.terminate()
        proc.wait(5)
        log.close()


# --------------------------------------------------------------------------- the three runs


def spec_for(name: str, work: Path, count: int, target: float | None, interval: float) -> dict[str, Any]:
    tg: dict[str, Any] = {
        "algorithm": "least_outstanding_requests",
        "instances": {
            "command": [PY, "-m", "fivenines.demo", "--port", "{port}", "--cost-ms", str(COST_MS),
                        "--capacity", str(CAPACITY)],
            "count": count,
            "standby": 0,
            "ports": "auto",
            "stop_timeout": "3s",
        },
        "health_check": {"path": "/health", "interval": "250ms", "timeout": "200ms", "healthy_threshold": 2,
                         "unhealthy_threshold": 3, "startup_grace": "3s"},
        "deregistration_delay": "10s",
        "outlier_detection": {"latency": None},
    }
    if target is not None:
        tg["scaling"] = {"min": MIN, "max": MAX, "policies": [{"requests_per_target": round(target, 1)}],
                         "evaluation_interval": f"{interval:g}s", "scale_out_window": "3s",
                         "scale_in_stabilization": "15s"}
    return {"name": name, "state_dir": str(work / name / "state"), "admin": {"listen": "127.0.0.1:0"},
            "listeners": [{"port": 0, "protocol": "http", "default_target_group": "web"}],
            "target_groups": {"web": tg}}


@dataclass
class Phase:
    label: str
    factor: float
    seconds: float
    rate: float = 0.0
    start_mono: float = 0.0
    start_wall: float = 0.0
    log: OutcomeLog | None = None


@dataclass
class Run:
    name: str
    spec: dict[str, Any]
    phases: list[Phase]
    samples: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, instances running)
    events: list[dict[str, Any]] = field(default_factory=list)
    started_at: float = 0.0
    ended_at: float = 0.0


async def _poll(admin: str, run: Run, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            st = await aget_json(f"{admin}/status", timeout=3.0)
            n = sum(1 for t in st["target_groups"]["web"]["targets"] if (t.get("instance") or {}).get("state") == "running")
            run.samples.append((time.monotonic(), n))
        except AdminError:
            pass
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass


def _start(work: Path, spec: dict[str, Any]) -> tuple[subprocess.Popen[bytes], dict[str, Any], Any]:
    d = work / spec["name"]
    d.mkdir(parents=True, exist_ok=True)
    path = d / "fivenines.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    ready = d / "ready.json"
    log = (d / "fivenines.log").open("w")
    proc = subprocess.Popen([PY, "-m", "fivenines", "up", str(path), "--ready-file", str(ready)], stdout=log,
                            stderr=subprocess.STDOUT, preexec_fn=die_with_parent(os.getpid()))
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"fivenines did not start: see {d / 'fivenines.log'}")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text()), log


async def _healthy(admin: str, want: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = await aget_json(f"{admin}/status")
        if sum(t["state"] == "healthy" for t in st["target_groups"]["web"]["targets"]) >= want:
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"not {want} healthy targets after {timeout:g}s")


def run_one(work: Path, name: str, spec: dict[str, Any], phases: list[tuple[str, float, float]],
            base: float) -> Run:
    run = Run(name, spec, [Phase(label, f, s, rate=base * f) for label, f, s in phases])
    proc, info, log = _start(work, spec)
    admin = info["admin"]
    host, port = info["listeners"][0].rsplit(":", 1)
    try:
        async def drive() -> None:
            await _healthy(admin, spec["target_groups"]["web"]["instances"]["count"])
            stop = asyncio.Event()
            poller = asyncio.get_running_loop().create_task(_poll(admin, run, stop))
            await asyncio.sleep(1.0)
            run.started_at = time.monotonic()
            for ph in run.phases:
                gen = LoadGen(host, int(port), ph.rate, ph.seconds, timeout=CLIENT_TIMEOUT, max_connections=2048)
                ph.start_mono, ph.start_wall = gen.clock(), time.time()
                print(f"  {name}: {ph.label} at {ph.rate:.0f} requests/s for {ph.seconds:g}s", flush=True)
                ph.log = await gen.run(ph.start_mono)
            run.ended_at = time.monotonic()
            stop.set()
            await poller
            run.events = (await aget_json(f"{admin}/events?limit=5000"))["events"]

        aio.run(drive())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    return run


# --------------------------------------------------------------------------- the numbers


def _wall(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def phase_stats(run: Run, i: int, objective: float) -> dict[str, Any]:
    import numpy as np

    ph = run.phases[i]
    log = ph.log
    assert log is not None
    end_mono = run.phases[i + 1].start_mono if i + 1 < len(run.phases) else run.ended_at
    end_wall = ph.start_wall + (end_mono - ph.start_mono)
    failed = log.failed_mask()
    good = log.good_mask()
    lat = log.latency
    ok = lat[good]
    # per second (by when each request was due): is its p99 over the objective, i.e. more than 1 %
    # of its requests slower than the objective or failed?
    buckets = np.floor(log.sched).astype(int)
    slow = ~good | (lat >= objective)
    bad_seconds = [b for b in range(int(buckets.max()) + 1)
                   if (n := int((buckets == b).sum())) and int(slow[buckets == b].sum()) > 0.01 * n]
    seconds = int(buckets.max()) + 1
    back = 0.0 if not bad_seconds else (float(bad_seconds[-1] + 1) if bad_seconds[-1] + 1 < seconds else None)
    counts = [n for t, n in run.samples if ph.start_mono <= t < end_mono]
    changes = [e for e in run.events if e["kind"] == "scaling" and not e["target"] and e["old"].isdigit()
               and e["new"].isdigit() and ph.start_wall <= _wall(e["at"]) < end_wall]
    directions = [int(e["new"]) > int(e["old"]) for e in changes]
    return {
        "phase": ph.label, "rate": round(ph.rate, 1), "seconds": ph.seconds, "requests": int(log.n),
        "failed": int(failed.sum()),
        "p50_ms": round(float(np.percentile(ok, 50)) * 1000, 1) if ok.size else None,
        "p99_ms": round(float(np.percentile(ok, 99)) * 1000, 1) if ok.size else None,
        "instances_mean": round(sum(counts) / len(counts), 2) if counts else None,
        "instances_min": min(counts) if counts else None, "instances_max": max(counts) if counts else None,
        "p99_back_under_objective_s": back,
        "scaling_changes": [e["reason"] for e in changes],
        "direction_changes": sum(1 for a, b in itertools.pairwise(directions) if a != b),
    }


def instance_seconds(run: Run) -> float:
    s = [(t, n) for t, n in run.samples if run.started_at <= t <= run.ended_at]
    return sum(n * (t2 - t1) for (t1, n), (t2, _) in itertools.pairwise(s))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short phases (checks the bench works; numbers mean little)")
    args = ap.parse_args()
    # the way back is longer than the way up: a scale-in waits out its stabilisation window
    # (15 s) and then steps down by at most max_step, so 35 s showed mostly the wait
    phases = [("1x", 1.0, 15.0), ("5x", float(STEP), 35.0), ("1x", 1.0, 55.0)]
    if args.quick:
        phases = [("1x", 1.0, 5.0), ("5x", float(STEP), 12.0), ("1x", 1.0, 20.0)]
    load_before = os.getloadavg()
    print(f"scaling bench: load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} "
          f"on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="fivenines-scaling-bench-") as tmp:
        work = Path(tmp)
        capacity = measure_capacity(work)
        target = capacity / 2
        base = BASE_X_TARGET * target
        objective = OBJECTIVE_X_COST * COST_MS / 1000
        print(f"one instance (--cost-ms {COST_MS} --capacity {CAPACITY}) serves {capacity:.1f} requests/s "
              f"(ideal {CAPACITY * 1000 / COST_MS:g}); target T = {target:.1f}/s per instance; "
              f"1x = {base:.0f}/s ({BASE_X_TARGET:g} instances' worth), {STEP}x = {STEP * base:.0f}/s "
              f"({BASE_X_TARGET * STEP:g}); min {MIN}, max {MAX}; p99 objective {objective * 1000:.0f} ms", flush=True)
        configs = [("a-fixed-min", spec_for("a-fixed-min", work, MIN, None, 1)),
                   ("b-fixed-max", spec_for("b-fixed-max", work, MAX, None, 1)),
                   ("c-scaling", spec_for("c-scaling", work, MIN, target, 1))]
        for name, spec in configs:
            print(f"--- {name}:\n" + yaml.safe_dump(spec["target_groups"], sort_keys=False), end="", flush=True)
        runs = [run_one(work, name, spec, phases, base) for name, spec in configs]
    results: dict[str, Any] = {"capacity_rps": round(capacity, 1), "target_rps": round(target, 1),
                               "base_rps": round(base, 1), "objective_ms": objective * 1000,
                               "load_average_before": load_before, "load_average_after": os.getloadavg(),
                               "runs": {}}
    print(f"\n{'run':<12} {'phase':<5} {'rate/s':>7} {'requests':>8} {'failed':>7} {'p50 ms':>8} {'p99 ms':>9} "
          f"{'instances':>14} {'p99 back':>9} {'dir.chg':>7}")
    for run in runs:
        stats = [phase_stats(run, i, objective) for i in range(len(run.phases))]
        isec = instance_seconds(run)
        results["runs"][run.name] = {"phases": stats, "instance_seconds": round(isec, 1)}
        for s in stats:
            inst = f"{s['instances_mean']} ({s['instances_min']}-{s['instances_max']})"
            back = "never" if s["p99_back_under_objective_s"] is None else f"{s['p99_back_under_objective_s']:g}s"
            print(f"{run.name:<12} {s['phase']:<5} {s['rate']:>7.0f} {s['requests']:>8} {s['failed']:>7} "
                  f"{s['p50_ms'] if s['p50_ms'] is not None else '-':>8} "
                  f"{s['p99_ms'] if s['p99_ms'] is not None else '-':>9} {inst:>14} {back:>9} "
                  f"{s['direction_changes']:>7}")
        print(f"{run.name:<12} instance-seconds {isec:.0f}")
        for s in stats:
            for reason in s["scaling_changes"]:
                print(f"{'':<12} {s['phase']:<5} {reason}")
    c, b = results["runs"]["c-scaling"], results["runs"]["b-fixed-max"]
    peak = c["phases"][1]
    saved = 1 - c["instance_seconds"] / b["instance_seconds"] if b["instance_seconds"] else 0.0
    checks = [
        ("0 failed requests", sum(s["failed"] for s in c["phases"]) == TARGETS["failed"],
         f"{sum(s['failed'] for s in c['phases'])} failed"),
        (f"p99 back under {objective * 1000:.0f} ms within {TARGETS['p99_back_s']:g}s of the {STEP}x step",
         peak["p99_back_under_objective_s"] is not None and peak["p99_back_under_objective_s"] <= TARGETS["p99_back_s"],
         "never" if peak["p99_back_under_objective_s"] is None else f"{peak['p99_back_under_objective_s']:g}s"),
        (f"instance-seconds at least {TARGETS['instance_seconds_saved']:.0%} lower than b",
         saved >= TARGETS["instance_seconds_saved"], f"{saved:.0%} lower ({c['instance_seconds']:.0f} vs "
                                                     f"{b['instance_seconds']:.0f})"),
        (f"at most {TARGETS['direction_changes']} direction change per phase",
         all(s["direction_changes"] <= TARGETS["direction_changes"] for s in c["phases"]),
         ", ".join(str(s["direction_changes"]) for s in c["phases"])),
    ]
    print()
    for what, met, got in checks:
        print(f"{'met   ' if met else 'MISSED'} c: {what}: {got}")
    results["checks"] = [{"target": w, "met": m, "measured": g} for w, m, g in checks]
    la = os.getloadavg()
    print(f"load average after: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling_bench.json").write_text(json.dumps(results, indent=2, default=lambda x: list(x)))
    return 0 if all(m for _, m, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
