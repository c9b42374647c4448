#!/usr/bin/env python3
"""A Jepsen-style check of fivenines' replicated Redis across network namespaces, with real faults.

The world (:mod:`fivenines.rig`, needs root): one network namespace per host on a bridge,

    fn        fivenines (``fivenines up``): the TCP listener clients write through, the failover
    r1 r2 r3  one ``redis-server`` each, bound to the host's address: the group's ``targets:``
    client    the clients

fivenines manages the three servers as a ``kind: redis`` group of ``targets:`` (servers it
does not run: it observes them, promotes and re-points them over the network). Clients
write unique keys continuously and record which writes were acknowledged: most through
fivenines' listener, some (``--direct``) straight to the primary fivenines publishes in
its status, as a client holding its own connection to the primary would.

Faults are real and never announced to fivenines: the rig injects them inside the hosts, in
turn, one at a time. Each lasts ``--hold`` seconds; one that takes the primary away (kill,
stop, split, isolate, link) lasts until fivenines published a new primary (at most the
failover bound + 5 s), so a loaded machine cannot heal it before fivenines reacts.

    kill     ``kill -9`` of the primary's redis-server; then its supervisor (this script)
             starts it again, empty, as a replica of no one (docs/replication.md)
    stop     SIGSTOP of the primary's redis-server, SIGCONT after ``--hold``
    split    the primary cut from fivenines and from the replicas (nftables inside its host),
             not from the client host: direct clients still reach it
    isolate  the primary cut from everyone (nftables: every packet on its interface dropped)
    link     the primary's link down (its port on the rig's switch: its eth0 loses carrier)
    replica  one replica cut from everyone (no failover is expected)
    loss     ``--loss`` % of the primary's packets dropped at random, both ways (nftables)

A write is *acknowledged* when ``SET`` answered ``OK`` and, in ``sync`` mode, the
client's own ``WAIT 1`` confirmed that a replica has it (docs/replication.md says
why a proxy cannot do this for the client). In ``async`` mode ``OK`` is the
acknowledgement.

After every fault, once the group settled again, and at the end it checks:

* every write acknowledged so far is readable on the current primary (``sync``: lost
  must be 0; ``async``: it prints how many were lost, which is the trade-off); a lost
  write is counted against the fault after which it was first found missing;
* the history shows at most one primary acknowledging writes at any time: grouping the
  acknowledged writes by the term that took them (the server's replication id when the
  client connected: a new one at every promotion), no term acknowledged a write that
  began after a later term had acknowledged one;
* after every fault that takes the primary away (kill, stop, split, isolate, link) a new
  primary was published within ``interval x unhealthy_threshold + timeout + 1 s``, and
  a replica cut caused no failover.

Before the next fault the group must have settled again (a primary, every other server a
linked, caught-up replica of it). The run is bounded: it gives up (FAIL) after ``--time-limit``
seconds (300 by default; 24 faults take about 80 s) and, whatever ends it (a failure, Ctrl-C,
SIGTERM), removes every namespace, nftables rule, link and process it made (:class:`fivenines.rig.Rig`).
Every redis-server keeps its files (a replica's resync RDB) in a folder of its own under the work dir.

    sudo python bench/jepsen_redis.py --failures 24 --durability sync
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import os
import random
import signal
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fivenines.rig import Rig, unavailable
from fivenines.runtime.redis import RedisClient, ReplyError, parse_info
from fivenines.runtime.store import StoreError, StoreTimeout, StoreUnreachable

INTERVAL, TIMEOUT, UNHEALTHY = 0.2, 0.15, 2
BOUND = INTERVAL * UNHEALTHY + TIMEOUT + 1.0
REDIS_PORT, LISTENER_PORT = 6379, 6379
SERVERS = ("r1", "r2", "r3")
FAULTS = ("kill", "stop", "split", "isolate", "link", "replica", "loss")
# a failover must follow these within BOUND; must not follow these; may follow the others
TAKES_PRIMARY = frozenset({"kill", "stop", "split", "isolate", "link"})
KEEPS_PRIMARY = frozenset({"replica"})


def spec(rig: Rig, durability: str, state_dir: Path) -> dict[str, Any]:
    return {
        "name": "jepsen",
        "state_dir": str(state_dir),
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": [{"host": rig.host("fn").address, "port": LISTENER_PORT, "protocol": "tcp",
                       "default_target_group": "cache"}],
        "target_groups": {
            "cache": {
                "targets": [f"{rig.host(h).address}:{REDIS_PORT}" for h in SERVERS],
                "health_check": {"interval": f"{int(INTERVAL * 1000)}ms", "timeout": f"{int(TIMEOUT * 1000)}ms",
                                 "healthy_threshold": 2, "unhealthy_threshold": UNHEALTHY},
                "replicated": {"kind": "redis", "durability": durability},
            }
        },
    }


# --------------------------------------------------------------------------- the world


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


class World:
    """The rig's hosts with their processes: redis-server in r1..r3, fivenines in fn."""

    def __init__(self, rig: Rig, work: Path, durability: str, redis_server: str) -> None:
        self.rig, self.work, self.redis_server = rig, work, redis_server
        self.starts = dict.fromkeys(SERVERS, 0)
        for h in SERVERS:
            self.start_redis(h, fresh=True)
        path = work / "fivenines.yaml"
        path.write_text(yaml.safe_dump(spec(rig, durability, work / "state"), sort_keys=False))
        ready = work / "ready.json"
        ready.unlink(missing_ok=True)  # a --workdir used before
        self.log = work / "fivenines.log"
        self.proc = rig.popen("fn", [sys.executable, "-m", "fivenines", "up", str(path), "--ready-file", str(ready)],
                              log=self.log)
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"fivenines did not start in host fn; see {self.log}:\n{self.tail()}")
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        self.admin = str(info["admin"])
        self.listener = f"{rig.host('fn').address}:{LISTENER_PORT}"

    def start_redis(self, host: str, *, fresh: bool) -> None:
        """redis-server on ``host``'s address, no persistence. Restarted (``fresh=False``), it comes
        up as a replica of no one: a server that lost its data must never come up as a primary
        that the replicas still following its address would resync from (docs/replication.md)."""
        self.starts[host] += 1
        data = self.work / "redis" / f"{host}.{self.starts[host]}"  # its own --dir: a replica's resync
        data.mkdir(parents=True, exist_ok=True)  # writes an RDB file there, never in the caller's cwd
        argv = [self.redis_server, "--bind", self.rig.host(host).address, "--port", str(REDIS_PORT),
                "--dir", str(data),
                "--protected-mode", "no", "--save", "", "--appendonly", "no",
                "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
        if not fresh:
            argv += ["--replicaof", "127.0.0.1", "0"]
        self.rig.popen(host, argv, log=self.work / f"redis-{host}.{self.starts[host]}.log")

    def host_of(self, address: str) -> str:
        ip = address.rsplit(":", 1)[0]
        return next(h.name for h in self.rig.hosts.values() if h.address == ip)

    def get(self, path: str) -> Any:
        """A GET on fivenines' admin API (on host fn's loopback)."""
        return self.rig.call_in("fn", _get_json, f"{self.admin}{path}", timeout=10)

    def group(self) -> dict[str, Any]:
        return dict(self.get("/status")["target_groups"]["cache"])

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(Exception):
                self.proc.wait(5)  # then the rig kills it


def primary_of(g: dict[str, Any]) -> dict[str, Any] | None:
    if not g["serving"]:
        return None
    p: dict[str, Any] = next(t for t in g["targets"] if t["id"] == g["serving"][0])
    return p


async def settled(world: World, timeout: float = 30.0) -> dict[str, Any]:
    """A published primary and every other target a healthy, linked, caught-up replica of it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        g = await asyncio.to_thread(world.group)
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
    raise SystemExit(f"the group did not settle (a primary and caught-up replicas) within {timeout:g}s")


# --------------------------------------------------------------------------- clients


@dataclass(slots=True)
class Write:
    key: str  # CLIENT-N: l* through the listener, d* direct
    server: str  # run_id of the server the connection reached
    term: str  # its replication id then: a new one at every promotion (run_id/replid, 8 digits each)
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
    """Where a direct client connects: the primary fivenines publishes in its status."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.address: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(OSError, ValueError, KeyError):
                p = primary_of(await asyncio.to_thread(self.world.group))
                self.address = p["address"] if p else None
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def client(name: str, where: Any, sync: bool, history: History, stop: asyncio.Event) -> None:
    """Write unique keys until ``stop``; ``where()`` is the address to (re)connect to, or None."""
    n = 0
    conn: RedisClient | None = None
    server = term = ""
    while not stop.is_set():
        try:
            if conn is None:
                addr = where()
                if addr is None:
                    await asyncio.sleep(0.01)
                    continue
                host, port = addr.rsplit(":", 1)
                conn = await RedisClient.connect(host, int(port), 1.0)
                info = parse_info((await conn.execute("INFO", timeout=1.0)).decode())
                server, term = info["run_id"], f"{info['run_id'][:8]}/{info['master_replid'][:8]}"
            n += 1
            key = f"{name}-{n}"
            history.attempted += 1
            invoked = time.time()
            await conn.execute("SET", key, key, timeout=1.0)
            if sync and await conn.execute("WAIT", 1, 500, timeout=1.5) < 1:
                continue  # no replica confirmed it: not acknowledged
            history.acked.append(Write(key, server, term, invoked, time.time()))
        except (StoreError, OSError, KeyError) as exc:
            history.error(exc)
            if conn is not None:
                conn.close()
            conn = None
            await asyncio.sleep(0.005)
    if conn is not None:
        conn.close()


# --------------------------------------------------------------------------- faults


@dataclass
class Fault:
    n: int
    kind: str
    host: str  # where it was injected
    old: str  # the primary before it
    at: float = 0.0  # wall clock of the fault
    new: str = ""
    failover_s: float | None = None  # fault -> a new primary published
    unavailable_s: float | None = None  # longest stretch without an acknowledged write around it
    acked: int = 0  # writes acknowledged between this fault and the next
    lost: int = 0  # acknowledged writes (of all so far) first found missing by the check after this fault

    @property
    def verdict(self) -> str:
        """'' when the failover (or its absence) is what this fault must cause."""
        if self.kind in TAKES_PRIMARY:
            if self.failover_s is None:
                return "no failover"
            if self.failover_s > BOUND:
                return f"failover slower than {BOUND:.2f}s"
        if self.kind in KEEPS_PRIMARY and self.failover_s is not None:
            return "failover though the primary was not touched"
        return ""


async def inject(world: World, kind: str, primary: str, replicas: list[str], loss: float) -> str:
    """Inject ``kind`` (the rig, inside the hosts); returns the host it hit."""
    rig = world.rig
    if kind == "kill":
        await asyncio.to_thread(rig.kill, primary)
    elif kind == "stop":
        await asyncio.to_thread(rig.pause, primary)
    elif kind == "split":
        await asyncio.to_thread(rig.partition, primary, ["fn", *replicas])
    elif kind == "isolate":
        await asyncio.to_thread(rig.isolate, primary)
    elif kind == "link":
        await asyncio.to_thread(rig.cable, primary, False)
    elif kind == "replica":
        primary = replicas[0]
        await asyncio.to_thread(rig.isolate, primary)
    elif kind == "loss":
        await asyncio.to_thread(rig.loss, primary, loss)
    else:
        raise ValueError(f"unknown fault {kind!r}; faults: {', '.join(FAULTS)}")
    return primary


async def heal(world: World, kind: str, host: str) -> None:
    if kind == "kill":
        await asyncio.to_thread(world.start_redis, host, fresh=False)
    else:
        await asyncio.to_thread(world.rig.heal, host)


def published_at(events: list[dict[str, Any]], old: str, since: float) -> tuple[str, float] | None:
    for e in events:
        if e["kind"] == "serving" and e["group"] == "cache" and e["time"] >= since and e["new"] and e["new"] != old:
            return e["new"], e["time"]
    return None


def overlapping_primaries(acked: list[Write]) -> list[str]:
    """Two primaries acknowledging writes at once: a term (a server between two promotions) that
    acknowledged a write invoked after a later term had already acknowledged one.

    Terms are ordered by their first acknowledgement. Writes of two terms may overlap in time
    (a write invoked on the old primary, its reply late), but one that *began* after the new
    primary acknowledged a write was taken by the old primary while the new one served.
    """
    terms: dict[str, tuple[float, Write]] = {}  # term -> (first ack, its write invoked last)
    for w in acked:
        first, last = terms.get(w.term, (w.acked, w))
        terms[w.term] = (min(first, w.acked), w if w.invoked > last.invoked else last)
    order = sorted(terms.items(), key=lambda kv: kv[1][0])
    out = []
    for i, (t, (_, last)) in enumerate(order):
        for later, (first, _) in order[i + 1 :]:
            if last.invoked > first:
                out.append(f"{t} acknowledged {last.key} invoked at {last.invoked:.3f}, after {later} "
                           f"acknowledged a write at {first:.3f}")
    return out


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


def count_acked(faults: list[Fault], acked: list[Write]) -> None:
    """Count each acknowledged write against the fault it was acknowledged after."""
    starts = [f.at for f in faults]
    for w in acked:
        i = bisect.bisect_right(starts, w.acked) - 1
        if i >= 0:
            faults[i].acked += 1


async def newly_lost(address: str, acked: list[Write], missing: set[str]) -> int:
    """Read every write acknowledged so far on ``address`` (the settled primary); add the keys it
    lacks to ``missing``; how many were not missing before."""
    keys = [w.key for w in acked]
    present = await read_all(address, keys)
    new = {k for k in keys if k not in present} - missing
    missing |= new
    return len(new)


async def scenario(world: World, args: argparse.Namespace) -> dict[str, Any]:
    """The clients and the faults; runs inside the client host (every socket it makes is there)."""
    kinds = [k for k in args.faults.split(",") if k]
    rng = random.Random(args.seed)
    await settled(world)
    history = History()
    stop = asyncio.Event()
    router = Router(world)
    router.start()
    sync = args.durability == "sync"
    clients = [asyncio.create_task(client(f"l{i}", lambda: world.listener, sync, history, stop))
               for i in range(args.clients)]
    clients += [asyncio.create_task(client(f"d{i}", lambda: router.address, sync, history, stop))
                for i in range(args.direct)]
    faults: list[Fault] = []
    missing: set[str] = set()  # acknowledged writes found lost by the check after a fault
    check_s: list[float] = []  # how long each of those checks took
    started = time.monotonic()
    try:
        await asyncio.sleep(1.0)
        for n in range(args.failures):
            old = await settled(world)
            await asyncio.sleep(args.steady)
            primary = world.host_of(old["address"])
            replicas = [h for h in SERVERS if h != primary]
            rng.shuffle(replicas)
            f = Fault(n + 1, kinds[n % len(kinds)], primary, old["id"], at=time.time())
            f.host = await inject(world, f.kind, primary, replicas, args.loss)
            # The fault lasts --hold seconds; one that must cause a failover lasts until the failover
            # came (at most BOUND + 5 s), so a slow machine cannot heal it before fivenines reacts.
            deadline = time.monotonic() + max(args.hold, BOUND + 5 if f.kind in TAKES_PRIMARY else 0.0)
            found = None
            while True:
                await asyncio.sleep(0.05)
                if found is None:
                    evs = (await asyncio.to_thread(world.get, "/events?limit=1000"))["events"]
                    found = published_at(evs, old["id"], f.at)
                held = time.time() >= f.at + args.hold
                if (held and (found is not None or f.kind not in TAKES_PRIMARY)) or time.monotonic() >= deadline:
                    break
            await heal(world, f.kind, f.host)
            if found is not None:
                f.new, t = found
                f.failover_s = t - f.at
            faults.append(f)
            # every write acknowledged so far, this fault's failover included, readable on the primary
            now = await settled(world)
            t0 = time.monotonic()
            f.lost = await newly_lost(now["address"], history.acked[:], missing)
            check_s.append(time.monotonic() - t0)
            fs = f"{f.failover_s:.3f}s" if f.failover_s is not None else "none"
            print(f"  failure {f.n:2d}: {f.kind:7s} on {f.host}  {f.old} -> {f.new or '-'}  failover {fs}  "
                  f"acked writes lost {f.lost} (of {len(history.acked)} read back on {now['id']})"
                  + (f"  ({f.verdict})" if f.verdict else ""), flush=True)
        await settled(world, 60)
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*clients, return_exceptions=True)
        await router.stop()
    elapsed = time.monotonic() - started
    final = await settled(world, 60)
    present = await read_all(final["address"], [w.key for w in history.acked])
    lost = [w for w in history.acked if w.key not in present]
    count_acked(faults, history.acked)
    if faults:  # lost after the last check after a fault: the last fault's
        faults[-1].lost += len({w.key for w in lost} - missing)
    acks = sorted(w.acked for w in history.acked)
    for f, nxt in zip(faults, [*faults[1:], None], strict=True):
        # the longest stretch without an acknowledged write around the fault (not reaching the next one)
        end = f.at + (f.failover_s or 0.0) + args.hold + 2.0
        if nxt is not None:
            end = min(end, nxt.at - 0.05)
        around = [a for a in acks if f.at - 0.5 <= a <= end]
        if len(around) >= 2:
            f.unavailable_s = max(b - a for a, b in itertools.pairwise(around))
    return {"history": history, "faults": faults, "lost": lost, "check_s": check_s,
            "overlaps": overlapping_primaries(history.acked), "elapsed": elapsed, "kinds": kinds}


def _stats(xs: list[float]) -> str:
    return f"{max(xs):.3f} / {sum(xs) / len(xs):.3f}" if xs else "-"


def report(args: argparse.Namespace, rig: Rig, res: dict[str, Any]) -> int:
    history: History = res["history"]
    faults: list[Fault] = res["faults"]
    lost: list[Write] = res["lost"]
    overlaps: list[str] = res["overlaps"]
    print()
    print(f"fivenines Jepsen-style check in network namespaces ({rig.prefix}): redis 1 primary + 2 replicas "
          f"(hosts {', '.join(SERVERS)}) as targets of fivenines (host fn), durability {args.durability}, "
          f"{args.clients} clients via the listener + {args.direct} direct (host client), {res['elapsed']:.0f}s")
    print(f"{'#':>3} {'fault':7} {'host':4} {'old -> new':22} {'failover s':>10} {'writes unavailable s':>21} "
          f"{'acked':>6} {'lost':>5}")
    for f in faults:
        fs = f"{f.failover_s:.3f}" if f.failover_s is not None else "none"
        us = f"{f.unavailable_s:.3f}" if f.unavailable_s is not None else "-"
        print(f"{f.n:>3} {f.kind:7} {f.host:4} {f.old + ' -> ' + (f.new or '-'):22} {fs:>10} {us:>21} "
              f"{f.acked:>6} {f.lost:>5}" + (f"  {f.verdict}" if f.verdict else ""))
    print()
    print("per fault kind (writes acked: between a fault of this kind and the next fault; "
          "unavailable: the longest stretch without an acknowledged write)")
    print(f"{'fault':8} {'injected':>8} {'failovers':>9} {'failover s max / mean':>22} "
          f"{'unavailable s max / mean':>25} {'writes acked':>12} {'acked lost':>10}")
    for k in res["kinds"]:
        fk = [f for f in faults if f.kind == k]
        fos = [f.failover_s for f in fk if f.failover_s is not None]
        uns = [f.unavailable_s for f in fk if f.unavailable_s is not None]
        print(f"{k:8} {len(fk):>8} {len(fos):>9} {_stats(fos):>22} {_stats(uns):>25} "
              f"{sum(f.acked for f in fk):>12} {sum(f.lost for f in fk):>10}")
    wrong = [f for f in faults if f.verdict]
    print()
    print(f"failures injected         : {len(faults)} "
          f"({', '.join(f'{k} {sum(f.kind == k for f in faults)}' for k in res['kinds'])})")
    print(f"failover bound            : interval x unhealthy_threshold + timeout + 1s = {BOUND:.2f}s")
    print(f"writes attempted          : {history.attempted}")
    print(f"writes acknowledged       : {len(history.acked)}")
    print(f"read-back checks          : {len(res['check_s'])} after the faults + 1 at the end, "
          f"{_stats(res['check_s'])} s max / mean")
    print(f"acknowledged writes lost  : {len(lost)}" + (f"  e.g. {[w.key for w in lost[:5]]}" if lost else ""))
    print(f"servers that took writes  : {len({w.server for w in history.acked})} (run_ids)")
    print(f"overlapping primaries     : {len(overlaps)}" + (f"  e.g. {overlaps[:2]}" if overlaps else ""))
    print(f"client errors             : {dict(sorted(history.errors.items(), key=lambda kv: -kv[1]))}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "rig": rig.prefix, "durability": args.durability, "clients": args.clients, "direct": args.direct,
            "attempted": history.attempted, "acknowledged": len(history.acked), "lost": len(lost),
            "overlaps": overlaps, "bound_s": BOUND,
            "elapsed_s": res["elapsed"], "faults": [{**asdict(f), "verdict": f.verdict} for f in faults],
            "writes": [asdict(w) for w in history.acked] if args.json_writes else None,
        }, indent=2))
    if args.durability == "async":
        print(f"async mode: {len(lost)} acknowledged writes lost, {len(overlaps)} overlaps - the price of not "
              "waiting for a replica")
        ok = not wrong
    else:
        ok = not wrong and not lost and not overlaps
    for f in wrong:
        print(f"FAIL: failure {f.n} ({f.kind}): {f.verdict}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def run(args: argparse.Namespace, work: Path) -> int:
    with Rig(["fn", *SERVERS, "client"]) as rig:
        print(f"rig {rig.prefix}: " + ", ".join(f"{h.name} {h.address}" for h in rig.hosts.values()), flush=True)
        world = World(rig, work, args.durability, args.redis_server)
        try:
            def in_client() -> dict[str, Any]:
                try:
                    import uvloop

                    runner = asyncio.Runner(loop_factory=uvloop.Loop)
                except ImportError:
                    runner = asyncio.Runner()
                with runner:
                    return runner.run(asyncio.wait_for(scenario(world, args), args.time_limit))

            try:
                res = rig.call_in("client", in_client, timeout=args.time_limit + 30)
            except TimeoutError:
                raise SystemExit(f"FAIL: not done within --time-limit {args.time_limit:g}s") from None
            return report(args, rig, res)
        finally:
            world.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--failures", type=int, default=24, help="faults to inject (default 24)")
    ap.add_argument("--durability", choices=["sync", "async"], default="sync")
    ap.add_argument("--clients", type=int, default=4, help="clients writing through fivenines' listener")
    ap.add_argument("--direct", type=int, default=2, help="clients writing to the published primary directly")
    ap.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, in turn: {', '.join(FAULTS)}")
    ap.add_argument("--hold", type=float, default=2.0, help="seconds a fault lasts (until restart or heal); "
                    "one that takes the primary away lasts until the failover")
    ap.add_argument("--steady", type=float, default=0.5, help="seconds of writes between recovery and next fault")
    ap.add_argument("--loss", type=float, default=30.0, help="percent of packets the loss fault drops")
    ap.add_argument("--seed", type=int, default=9, help="which replica the replica and split faults pick")
    ap.add_argument("--time-limit", type=float, default=300.0, help="give up (FAIL) after this many seconds")
    ap.add_argument("--redis-server", default="/usr/bin/redis-server")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--json-writes", action="store_true", help="with --json: every acknowledged write too")
    ap.add_argument("--workdir", help="keep the spec and the logs here (default: a folder in the rig's scratch)")
    args = ap.parse_args()
    bad = [k for k in args.faults.split(",") if k and k not in FAULTS]
    if bad:
        raise SystemExit(f"--faults: unknown {', '.join(bad)}; faults: {', '.join(FAULTS)}")
    why = unavailable()
    if why:
        print(f"jepsen-redis runs in the namespace rig: {why} (sudo make jepsen-redis)", file=sys.stderr)
        sys.exit(2)
    if not os.path.exists(args.redis_server):
        raise SystemExit(f"{args.redis_server} not found (scripts/install-test-deps installs redis-server)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the rig cleans up on the way out
    try:
        if args.workdir:
            work = Path(args.workdir)
            work.mkdir(parents=True, exist_ok=True)
            sys.exit(run(args, work))
        import tempfile

        with tempfile.TemporaryDirectory(prefix="jepsen-redis-") as tmp:
            sys.exit(run(args, Path(tmp)))
    except KeyboardInterrupt:  # the rig has removed its world (namespaces, rules, links, processes) by now
        print("interrupted: every namespace, rule, link and process of the run removed", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
