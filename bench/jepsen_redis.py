#!/usr/bin/env python3
"""A Jepsen-style check of fivenines' replicated Redis: is any acknowledged write lost across failovers?

It runs ``fivenines up`` with one Redis primary and two replicas (real ``redis-server``
processes), starts several clients that write unique keys continuously and record
which writes were acknowledged, and injects primary failures over and over:
``SIGKILL``, ``SIGSTOP`` (hung for a while, then ``SIGCONT``) and a cut-off (every
connection fivenines has to the primary dropped, through the admin fault-injection
call, while the primary keeps running and its replicas keep replicating).

A write is *acknowledged* when ``SET`` answered ``OK`` and, in ``sync`` mode, the
client's own ``WAIT 1`` confirmed that a replica has it (docs/replication.md says
why a proxy cannot do this for the client). In ``async`` mode ``OK`` is the
acknowledgement.

Afterwards it checks, against the current primary:

* every acknowledged write is readable there (``sync``: lost must be 0; ``async``:
  it prints how many were lost, which is the trade-off);
* the history shows at most one primary accepting writes at any time: grouping the
  acknowledged writes by the server that took them (its ``run_id``), the time windows
  of consecutive servers never overlap;
* every failover completed within ``interval x unhealthy_threshold + timeout + 1 s``.

Clients reach Redis through fivenines' TCP listener (``--via listener``, the
default) or, before the TCP listener exists, connect to the primary fivenines
publishes in its status (``--via status``; cut-offs are then skipped, since clients
that bypass fivenines cannot be cut off by it).

    python bench/jepsen_redis.py --failures 21 --durability sync
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fivenines.runtime.redis import RedisClient, ReplyError
from fivenines.runtime.store import StoreError, StoreTimeout, StoreUnreachable
from fivenines.runtime.supervisor import die_with_parent

INTERVAL, TIMEOUT, UNHEALTHY = 0.2, 0.15, 2
BOUND = INTERVAL * UNHEALTHY + TIMEOUT + 1.0


def spec(durability: str, redis_server: str, workers: int = 1) -> dict[str, Any]:
    return {
        "name": "jepsen",
        "workers": workers,
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": [{"port": 0, "protocol": "tcp", "default_target_group": "cache"}],
        "target_groups": {
            "cache": {
                "instances": {
                    "command": [redis_server, "--port", "{port}", "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no"],
                    "count": 1,
                    "standby": 2,
                    "stop_timeout": "2s",
                    "restart": {"initial_delay": "200ms", "max_delay": "2s", "jitter": 0, "stable_after": "2s",
                                "crash_loop_after": 1000},
                },
                "health_check": {"interval": f"{int(INTERVAL * 1000)}ms", "timeout": f"{int(TIMEOUT * 1000)}ms",
                                 "healthy_threshold": 2, "unhealthy_threshold": UNHEALTHY},
                "replicated": {"kind": "redis", "durability": durability},
            }
        },
    }


# --------------------------------------------------------------------------- fivenines and its admin API


class Node:
    def __init__(self, tmp: Path, durability: str, redis_server: str, workers: int = 1) -> None:
        self.spec_path = tmp / "fivenines.yaml"
        data = spec(durability, redis_server, workers)
        data["state_dir"] = str(tmp / "state")
        self.spec_path.write_text(yaml.safe_dump(data, sort_keys=False))
        ready = tmp / "ready.json"
        self.log = (tmp / "fivenines.log").open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "fivenines", "up", str(self.spec_path),
                                      "--ready-file", str(ready)], stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=die_with_parent(os.getpid()))  # and its Redis servers with it
        deadline = time.monotonic() + 20
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"fivenines did not start; see {tmp / 'fivenines.log'}")
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        self.admin = info["admin"]
        self.listener = info["listeners"][0]
        self.token = (tmp / "state" / "admin.token").read_text().strip()

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.admin}{path}", timeout=5) as r:
            return json.loads(r.read())

    def post(self, path: str) -> Any:
        req = urllib.request.Request(f"{self.admin}{path}", method="POST", data=b"",
                                     headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def group(self) -> dict[str, Any]:
        return dict(self.get("/status")["target_groups"]["cache"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def primary_of(g: dict[str, Any]) -> dict[str, Any] | None:
    if not g["serving"]:
        return None
    return next(t for t in g["targets"] if t["id"] == g["serving"][0])


async def settled(node: Node, timeout: float = 30.0) -> dict[str, Any]:
    """A published primary and every other target a healthy, linked, caught-up replica of it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        g = await asyncio.to_thread(node.group)
        p = primary_of(g)
        if p is not None and all(
            t["state"] == "healthy" and t["replication"]["reported_role"] == "replica"
            and t["replication"]["following"] == p["address"] and t["replication"]["link_up"]
            for t in g["targets"] if t["id"] != p["id"]
        ):
            host, port = p["address"].rsplit(":", 1)
            try:
                c = await RedisClient.connect(host, int(port), 1.0)
                try:
                    if await c.execute("WAIT", len(g["targets"]) - 1, 500, timeout=2) >= len(g["targets"]) - 1:
                        return p
                finally:
                    c.close()
            except StoreError:
                pass
        await asyncio.sleep(0.05)
    raise SystemExit("the group did not settle (a primary and caught-up replicas) within 30s")


# --------------------------------------------------------------------------- clients


@dataclass(slots=True)
class Write:
    key: str
    server: str  # run_id of the server the connection reached
    invoked: float
    acked: float


@dataclass
class History:
    attempted: int = 0
    acked: list[Write] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, exc: BaseException) -> None:
        if isinstance(exc, ReplyError):
            kind = str(exc).split(" ", 1)[0]  # READONLY, NOREPLICAS, ...
        elif isinstance(exc, StoreTimeout):
            kind = "timeout"
        elif isinstance(exc, StoreUnreachable | OSError):
            kind = "connection closed/refused"
        else:
            kind = type(exc).__name__
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Router:
    """Where a client should connect: fivenines' listener, or the primary it publishes (--via status)."""

    def __init__(self, node: Node, via: str) -> None:
        self.node, self.via = node, via
        self.address: str | None = node.listener if via == "listener" else None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.via == "status":
            self._task = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(OSError, ValueError):
                p = primary_of(await asyncio.to_thread(self.node.group))
                self.address = p["address"] if p else None
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def client(cid: int, router: Router, sync: bool, history: History, stop: asyncio.Event) -> None:
    n = 0
    conn: RedisClient | None = None
    server = ""
    while not stop.is_set():
        try:
            if conn is None:
                addr = router.address
                if addr is None:
                    await asyncio.sleep(0.01)
                    continue
                host, port = addr.rsplit(":", 1)
                conn = await RedisClient.connect(host, int(port), 1.0)
                info = (await conn.execute("INFO", "server", timeout=1.0)).decode()
                server = next(line.split(":", 1)[1].strip() for line in info.splitlines()
                              if line.startswith("run_id:"))
            n += 1
            key = f"c{cid}-{n}"
            history.attempted += 1
            invoked = time.time()
            await conn.execute("SET", key, key, timeout=1.0)
            if sync and await conn.execute("WAIT", 1, 500, timeout=1.5) < 1:
                continue  # no replica confirmed it: not acknowledged
            history.acked.append(Write(key, server, invoked, time.time()))
        except (StoreError, OSError, StopIteration) as exc:
            history.error(exc)
            if conn is not None:
                conn.close()
            conn = None
            await asyncio.sleep(0.005)
    if conn is not None:
        conn.close()


# --------------------------------------------------------------------------- faults


@dataclass
class Failover:
    n: int
    kind: str
    old: str
    new: str = ""
    at: float = 0.0  # wall clock of the fault
    failover_s: float | None = None  # fault -> new primary published
    unavailable_s: float | None = None  # longest stretch without an acknowledged write around it


async def inject(node: Node, kind: str, old: dict[str, Any], hold: float) -> None:
    pid = old["pid"]
    if kind == "kill":
        os.kill(pid, signal.SIGKILL)
    elif kind == "stop":
        os.kill(pid, signal.SIGSTOP)
        asyncio.get_running_loop().call_later(hold, lambda: os.kill(pid, signal.SIGCONT))
    elif kind == "cut":
        await asyncio.to_thread(node.post, f"/target_groups/cache/targets/{old['id']}/cut_off?seconds={hold}")


def published_at(events: list[dict[str, Any]], old: str, since: float) -> tuple[str, float] | None:
    for e in events:
        if e["kind"] == "serving" and e["group"] == "cache" and e["time"] >= since and e["new"] and e["new"] != old:
            return e["new"], e["time"]
    return None


def overlapping_primaries(acked: list[Write]) -> list[str]:
    """Consecutive runs of writes taken by different servers must not overlap in time."""
    runs: list[tuple[str, float, float]] = []
    for w in sorted(acked, key=lambda w: w.acked):
        if runs and runs[-1][0] == w.server:
            s, lo, hi = runs[-1]
            runs[-1] = (s, min(lo, w.invoked), max(hi, w.acked))
        else:
            runs.append((w.server, w.invoked, w.acked))
    return [f"{a[0][:8]} acked until {a[2]:.3f} while {b[0][:8]} took a write at {b[1]:.3f}"
            for a, b in itertools.pairwise(runs) if b[1] < a[2]]


async def read_all(address: str, keys: list[str]) -> set[str]:
    host, port = address.rsplit(":", 1)
    c = await RedisClient.connect(host, int(port), 2.0)
    present: set[str] = set()
    try:
        for i in range(0, len(keys), 1000):
            batch = keys[i : i + 1000]
            values = await c.execute("MGET", *batch, timeout=10)
            present.update(k for k, v in zip(batch, values, strict=True) if v == k.encode())
    finally:
        c.close()
    return present


async def run(args: argparse.Namespace) -> int:
    redis_server = args.redis_server
    with tempfile.TemporaryDirectory(prefix="jepsen-redis-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        node = Node(work, args.durability, redis_server, args.workers)
        try:
            return await scenario(node, args)
        finally:
            node.stop()


async def scenario(node: Node, args: argparse.Namespace) -> int:
    kinds = [k for k in args.faults.split(",") if k]
    if args.via == "status" and "cut" in kinds:
        print("note: --via status: clients bypass fivenines, so cut-offs are skipped (see the module docstring)")
        kinds = [k for k in kinds if k != "cut"]
    await settled(node)
    history = History()
    stop = asyncio.Event()
    router = Router(node, args.via)
    router.start()
    clients = [asyncio.create_task(client(i, router, args.durability == "sync", history, stop))
               for i in range(args.clients)]
    failovers: list[Failover] = []
    started = time.monotonic()
    try:
        await asyncio.sleep(1.0)
        for n in range(args.failures):
            old = await settled(node)
            await asyncio.sleep(args.steady)
            fo = Failover(n + 1, kinds[n % len(kinds)], old["id"], at=time.time())
            await inject(node, fo.kind, old, args.hold)
            deadline = time.monotonic() + BOUND + 10
            found = None
            while found is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                evs = (await asyncio.to_thread(node.get, "/events?limit=1000"))["events"]
                found = published_at(evs, old["id"], fo.at)
            if found is not None:
                fo.new, t = found
                fo.failover_s = t - fo.at
            failovers.append(fo)
            print(f"  failure {fo.n:2d}: {fo.kind:4s} {fo.old} -> {fo.new or '?'}"
                  f"  failover {fo.failover_s if fo.failover_s is not None else float('nan'):.3f}s", flush=True)
            if fo.kind == "stop":
                await asyncio.sleep(max(0.0, fo.at + args.hold + 0.2 - time.time()))
        await settled(node, 60)
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*clients, return_exceptions=True)
        await router.stop()
    elapsed = time.monotonic() - started
    primary = await settled(node, 60)
    keys = [w.key for w in history.acked]
    present = await read_all(primary["address"], keys)
    lost = [k for k in keys if k not in present]
    acks = sorted(w.acked for w in history.acked)
    for fo, nxt in zip(failovers, [*failovers[1:], None], strict=True):
        # the longest stretch without an acknowledged write around the fault (not reaching the next one)
        end = fo.at + (fo.failover_s or 0.0) + (0.0 if fo.kind == "kill" else args.hold) + 2.0
        if nxt is not None:
            end = min(end, nxt.at - 0.05)
        around = [a for a in acks if fo.at - 0.5 <= a <= end]
        if len(around) >= 2:
            fo.unavailable_s = max(b - a for a, b in itertools.pairwise(around))
    overlaps = overlapping_primaries(history.acked)
    slow = [fo for fo in failovers if fo.failover_s is None or fo.failover_s > BOUND]

    print()
    print(f"fivenines Jepsen-style check: redis 1 primary + 2 replicas, durability {args.durability}, "
          f"{args.clients} clients via {args.via}, {args.workers} worker(s), {elapsed:.0f}s")
    print(f"{'#':>3} {'fault':5} {'old -> new':22} {'failover s':>10} {'writes unavailable s':>21}")
    for fo in failovers:
        fs = f"{fo.failover_s:.3f}" if fo.failover_s is not None else "none"
        us = f"{fo.unavailable_s:.3f}" if fo.unavailable_s is not None else "-"
        print(f"{fo.n:>3} {fo.kind:5} {fo.old + ' -> ' + (fo.new or '?'):22} {fs:>10} {us:>21}")
    fos = [fo.failover_s for fo in failovers if fo.failover_s is not None]
    uns = [fo.unavailable_s for fo in failovers if fo.unavailable_s is not None]
    print()
    print(f"primary failures injected : {len(failovers)} ({', '.join(f'{k} {sum(f.kind == k for f in failovers)}' for k in kinds)})")
    if fos:
        print(f"failover time             : max {max(fos):.3f}s, mean {sum(fos) / len(fos):.3f}s "
              f"(bound interval x unhealthy_threshold + timeout + 1s = {BOUND:.2f}s)")
    if uns:
        print(f"write unavailability      : max {max(uns):.3f}s, mean {sum(uns) / len(uns):.3f}s")
    print(f"writes attempted          : {history.attempted}")
    print(f"writes acknowledged       : {len(history.acked)}")
    print(f"acknowledged writes lost  : {len(lost)}" + (f"  e.g. {lost[:5]}" if lost else ""))
    print(f"servers that took writes  : {len({w.server for w in history.acked})} (run_ids)")
    print(f"overlapping primaries     : {len(overlaps)}" + (f"  e.g. {overlaps[:2]}" if overlaps else ""))
    print(f"client errors             : {dict(sorted(history.errors.items(), key=lambda kv: -kv[1]))}")
    if args.json:
        await asyncio.to_thread(Path(args.json).write_text, json.dumps({
            "durability": args.durability, "via": args.via, "clients": args.clients,
            "attempted": history.attempted, "acknowledged": len(history.acked), "lost": len(lost),
            "overlaps": overlaps, "bound_s": BOUND,
            "failovers": [fo.__dict__ for fo in failovers],
        }, indent=2))
    ok = not overlaps and not slow and (args.durability == "async" or not lost)
    if args.durability == "async":
        print(f"async mode: {len(lost)} acknowledged writes lost - the price of not waiting for a replica")
    if slow:
        print(f"FAIL: {len(slow)} failover(s) slower than {BOUND:.2f}s or missing")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--failures", type=int, default=21, help="primary failures to inject (default 21)")
    ap.add_argument("--durability", choices=["sync", "async"], default="sync")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--faults", default="kill,stop,cut", help="comma-separated: kill, stop, cut")
    ap.add_argument("--via", choices=["listener", "status"], default="listener",
                    help="clients connect to fivenines' TCP listener, or to the primary its status publishes")
    ap.add_argument("--hold", type=float, default=2.0, help="seconds a stop or cut-off lasts")
    ap.add_argument("--steady", type=float, default=0.5, help="seconds of writes between recovery and next fault")
    ap.add_argument("--redis-server", default="/usr/bin/redis-server")
    ap.add_argument("--workers", type=int, default=1, help="fivenines data-plane worker processes")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--workdir", help="keep the spec, fivenines' log and state here (default: a temporary folder)")
    args = ap.parse_args()
    if not os.path.exists(args.redis_server):
        raise SystemExit(f"{args.redis_server} not found (scripts/install-test-deps installs redis-server)")
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.Loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        sys.exit(runner.run(run(args)))


if __name__ == "__main__":
    main()
