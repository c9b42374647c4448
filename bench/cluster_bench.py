#!/usr/bin/env python3
"""A pair of balancers behind a floating address, as clients see it when the active one fails: fivenines
(vrrp and etcd modes) beside HAProxy + keepalived, in the namespace rig, in one run.

``make cluster-bench`` (root: the rig makes network namespaces) builds one world with
:mod:`fivenines.rig`: nodes ``a`` and ``b`` (the pair), ``e1``-``e3`` (etcd, three
members), ``be1`` and ``be2`` (demo backends), ``client`` (the load) and ``obs`` (an
observer that asks who has the VIP by ARP every 5 ms), and puts each contender on
``a`` and ``b`` in turn:

* **haproxy+keepalived** — HAProxy 2.6 (health checks, retries with redispatch) and
  keepalived (VRRPv3, unicast peers, ``nopreempt``), at ``advert_int`` 1 s and at the
  fastest setting that stayed stable here (``--fast-advert``, 50 ms: 20 ms flapped on this
  loaded machine with no fault at all), two rows;
* **fivenines vrrp** — ``fivenines up SPEC --node NAME`` with ``coordination: vrrp``
  (fivenines renders keepalived's configuration and supervises it), at the same two
  settings;
* **fivenines etcd** — ``fivenines up SPEC --node NAME`` with ``coordination: etcd``
  (leader lease of ``lease_ttl`` 1 s, the nftables fence).

A contender is a small class (:class:`Contender`): how it starts on a node, what its
configuration is. A fivenines node is the one command a user runs on each host.

Scenarios, each under a steady load from ``client`` — new connections (``--rate``,
200/s, each its own request) and ``--keepalive`` clients on persistent connections
(50 requests/s each) that reconnect after an error — with a per-request timeout of 5 s:

  kill       ``kill -9`` of every process of the active node;
  sigstop    SIGSTOP of every process of the active node for 10 s, then SIGCONT;
  cable      the active node's cable pulled for 5 s;
  partition  etcd mode: the active node cut from the three etcd members only (clients and
             the other node still reach it); vrrp modes: the two nodes cut from each
             other (clients reach both), 5 s.

Every failed request is retried once, 250 ms after it failed, on a new connection (a
client that retries once): "after retry" counts the requests whose retry failed too.
The runs are interleaved, scenario by scenario, the order of the contenders alternating.

Measured per run: the **gap** (the longest time between two successful answers from
the fault on: the last success before it to the first after), failed requests, failed
after a retry, the **moments two nodes held the VIP** — episodes when two nodes
answered the same ARP probe (what the network sees) and, separately, when two nodes had
the address with an open fence (every namespace sampled every few ms) — and when the
other node first answered ARP (takeover). Targets, checked: fivenines etcd gap <= 2 s in
every scenario and 0 two-holder moments; fivenines vrrp no worse than the keepalived
pair at the same advert_int (gap within 0.25 s, failures after retry within 10% or 3,
not more two-holder moments); 0 failed requests for a retrying client in the kill scenario
(where the takeover can be that fast: at ``advert_int`` 1 s a VRRP backup waits 3.6 s for
the master to be down, so those rows are printed, not judged).
Exit 1 when a fivenines target is missed.

The machine is shared: numbers are indicative; the load average is printed with them.
The whole run takes about 5 minutes (``--quick``: about 3; ``--smoke``: one short run
per contender, numbers meaningless). Everything is cleaned up by the rig, even on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from fivenines.core.keepalived import master_down_interval  # noqa: E402
from fivenines.rig import AddressWatch, ArpProbe, Rig  # noqa: E402
from fivenines.rig.etcd import EtcdInRig  # noqa: E402

PY = sys.executable
FIVENINES = str(Path(PY).with_name("fivenines"))  # the console script of the installed package
HOSTS = ["e1", "e2", "e3", "a", "b", "be1", "be2", "client", "obs"]
NODES = ("a", "b")
ETCD = ["e1", "e2", "e3"]
BACKENDS = ["be1", "be2"]
VIP = "10.199.0.100"
PREFIX = 24
PORT = 8080  # the balancers' listener and the backends' port, each in its own namespace
ADMIN = "127.0.0.1:9900"  # fivenines' admin API, on the node's own loopback
TTL = 1  # fivenines etcd: lease_ttl


@dataclass(frozen=True)
class Load:
    rate: float = 200.0  # new connections per second, one request each
    keepalive: int = 4  # persistent clients
    keepalive_rate: float = 50.0  # requests per second each
    timeout: float = 5.0  # per request (connect + response)
    retry_after: float = 0.25


@dataclass(frozen=True)
class Timing:
    before: float = 2.0  # load before the fault
    kill_after: float = 5.0
    stop_for: float = 10.0
    cut_for: float = 5.0
    after_heal: float = 3.0


# --------------------------------------------------------------------------- contenders


class Contender:
    """One pair of balancers with a floating address, started on nodes ``a`` and ``b``."""

    name = "?"
    kind = "vrrp"  # "etcd": the partition scenario cuts the active node from etcd; "vrrp": from the other node

    def __init__(self, rig: Rig, work: Path) -> None:
        self.rig, self.work = rig, work

    def configs(self) -> dict[str, str]:
        """What to print: title -> configuration text (node a's where they differ by node)."""
        raise NotImplementedError

    def start(self, run: str) -> None:
        raise NotImplementedError

    def node_dir(self, run: str, node: str) -> Path:
        d = self.work / run / node
        d.mkdir(parents=True, exist_ok=True)
        return d

    def stop(self) -> None:
        """Undo every fault, kill everything on both nodes, flush their neighbours, remove the VIP and any fence."""
        for n in NODES:
            self.rig.reset(n, VIP)


def backend_targets(rig: Rig) -> list[str]:
    return [f"{rig.host(b).address}:{PORT}" for b in BACKENDS]


# The health checks and retries of both data paths (they matter little here: the backends stay up).
CHECK_INTERVAL, CHECK_TIMEOUT, RISE, FALL = 1.0, 0.5, 2, 2


def haproxy_config(rig: Rig) -> str:
    servers = "\n".join(f"    server {b} {t} check inter {CHECK_INTERVAL * 1000:g} rise {RISE} fall {FALL}"
                        for b, t in zip(BACKENDS, backend_targets(rig), strict=True))
    return f"""global
    maxconn 4000
defaults
    mode http
    timeout connect 500ms
    timeout client 30s
    timeout server 5s
    timeout check {CHECK_TIMEOUT * 1000:g}
    retries 2
    option redispatch 1
    retry-on conn-failure empty-response response-timeout 502 503 504
    option http-keep-alive
frontend fe
    bind 0.0.0.0:{PORT}
    default_backend be
backend be
    balance roundrobin
    option httpchk GET /health
{servers}
"""


def keepalived_pair_config(rig: Rig, node: str, advert: float) -> str:
    other = "b" if node == "a" else "a"
    priority = 150 if node == "a" else 100
    return f"""global_defs {{
    router_id pair-{node}
    vrrp_version 3
}}
vrrp_instance pair {{
    state BACKUP
    interface eth0
    virtual_router_id 61
    priority {priority}
    advert_int {advert:g}
    nopreempt
    unicast_src_ip {rig.host(node).address}
    unicast_peer {{
        {rig.host(other).address}
    }}
    virtual_ipaddress {{
        {VIP}/{PREFIX} dev eth0
    }}
}}
"""


class HaproxyKeepalived(Contender):
    def __init__(self, rig: Rig, work: Path, advert: float) -> None:
        super().__init__(rig, work)
        self.advert = advert
        self.name = f"haproxy+keepalived {advert:g}s"

    def configs(self) -> dict[str, str]:
        return {"haproxy.cfg (both nodes)": haproxy_config(self.rig),
                f"keepalived.conf, node a (b: priority 100, peers swapped), advert_int {self.advert:g}":
                    keepalived_pair_config(self.rig, "a", self.advert)}

    def start(self, run: str) -> None:
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        keepalived = shutil.which("keepalived") or "/usr/sbin/keepalived"
        for n in NODES:
            d = self.node_dir(run, n)
            (d / "haproxy.cfg").write_text(haproxy_config(self.rig))
            (d / "keepalived.conf").write_text(keepalived_pair_config(self.rig, n, self.advert))
            self.rig.popen(n, [haproxy, "-db", "-f", str(d / "haproxy.cfg")], log=d / "haproxy.log")
            self.rig.popen(n, [keepalived, "--dont-fork", "--log-console", "--log-detail", "--vrrp", "--no-syslog",
                               "-f", str(d / "keepalived.conf"), "-p", str(d / "keepalived.pid"),
                               "-r", str(d / "vrrp.pid")], log=d / "keepalived.log")


def fivenines_spec(rig: Rig, name: str) -> dict[str, Any]:
    """The service without its cluster: section: static targets on the two backends."""
    return {
        "name": name,
        "admin": {"listen": ADMIN},
        "listeners": [{"port": PORT, "host": "0.0.0.0", "default_target_group": "web"}],
        "target_groups": {"web": {
            "targets": backend_targets(rig),
            "health_check": {"protocol": "http", "path": "/health", "interval": f"{CHECK_INTERVAL:g}s",
                             "timeout": f"{CHECK_TIMEOUT * 1000:g}ms", "healthy_threshold": RISE,
                             "unhealthy_threshold": FALL},
        }},
    }


def cluster_spec(rig: Rig, name: str, **cluster: Any) -> dict[str, Any]:
    """What every node runs (`fivenines up SPEC --node NAME`): the service with a cluster: section."""
    spec = fivenines_spec(rig, name)
    spec["cluster"] = {"nodes": [{"name": n, "address": rig.host(n).address} for n in NODES],
                       "vip": f"{VIP}/{PREFIX}", "interface": "eth0", **cluster}
    return spec


def dump_yaml(doc: dict[str, Any]) -> str:
    import yaml

    return str(yaml.safe_dump(doc, sort_keys=False))


class Fivenines(Contender):
    """A fivenines node: `fivenines up SPEC --node NAME`, the data path and the VIP in one process."""

    def cluster(self) -> dict[str, Any]:
        raise NotImplementedError

    def configs(self) -> dict[str, str]:
        return {f"{self.name}: fivenines.yaml (both nodes; each runs fivenines up fivenines.yaml --node NAME)":
                dump_yaml(cluster_spec(self.rig, "bench", **self.cluster()))}

    def start(self, run: str) -> None:
        for n in NODES:
            self.start_node(run, n)

    def start_node(self, run: str, node: str) -> None:
        d = self.node_dir(run, node)
        spec = d / "fivenines.yaml"
        spec.write_text(dump_yaml(cluster_spec(self.rig, run, **self.cluster())))
        self.rig.popen(node, [FIVENINES, "up", str(spec), "--node", node, "--log-level", "warning"],
                       log=d / "up.log", cwd=d)


class FiveninesVrrp(Fivenines):
    def __init__(self, rig: Rig, work: Path, advert: float) -> None:
        super().__init__(rig, work)
        self.advert = advert
        self.name = f"fivenines vrrp {advert:g}s"

    def cluster(self) -> dict[str, Any]:
        return {"coordination": "vrrp",
                "vrrp": {"advert_int": f"{round(self.advert * 1000)}ms", "virtual_router_id": 62}}

    def configs(self) -> dict[str, str]:
        from fivenines.runtime.keepalived import config_for
        from fivenines.spec import parse_spec

        spec = parse_spec(cluster_spec(self.rig, "bench", **self.cluster()))
        assert spec.cluster is not None
        out = super().configs()
        out[f"{self.name}: the keepalived.conf fivenines writes, node a"] = config_for(spec.cluster, "a", Path("WORKDIR"))
        return out


class FiveninesEtcd(Fivenines):
    kind = "etcd"

    def __init__(self, rig: Rig, work: Path, etcd: EtcdInRig) -> None:
        super().__init__(rig, work)
        self.etcd = etcd
        self.name = f"fivenines etcd {TTL}s"

    def cluster(self) -> dict[str, Any]:
        return {"coordination": "etcd", "etcd": self.etcd.endpoints, "lease_ttl": f"{TTL}s"}


# --------------------------------------------------------------------------- the load (in the client namespace)

REQUEST = f"GET / HTTP/1.1\r\nHost: {VIP}\r\n".encode()


async def _read_status(r: asyncio.StreamReader) -> int:
    head = await r.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await r.readexactly(length)
    return status


LOAD_ERRORS = (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError)


async def _new_connection_request(timeout: float) -> str:
    """One request on a connection of its own: "" when answered 200, else what went wrong."""
    w: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            r, w = await asyncio.open_connection(VIP, PORT)
            w.write(REQUEST + b"Connection: close\r\n\r\n")
            status = await _read_status(r)
        return "" if status == 200 else f"HTTP {status}"
    except LOAD_ERRORS as exc:
        return type(exc).__name__
    finally:
        if w is not None:
            w.close()


async def run_load(load: Load, start_at: float, seconds: float) -> list[list[Any]]:
    loop = asyncio.get_running_loop()
    records: list[list[Any]] = []  # kind, sent, done, error ("" ok), retry error (None: none needed)
    pending: set[asyncio.Task[None]] = set()

    def spawn(coro: Any) -> None:
        t = loop.create_task(coro)
        pending.add(t)
        t.add_done_callback(pending.discard)

    async def retry(rec: list[Any]) -> None:
        await asyncio.sleep(load.retry_after)
        rec[4] = await _new_connection_request(load.timeout)

    def record(kind: str, sent: float, error: str) -> None:
        rec = [kind, sent, time.monotonic(), error, None]
        records.append(rec)
        if error:
            spawn(retry(rec))

    async def new_connection(sent: float) -> None:
        record("n", sent, await _new_connection_request(load.timeout))

    async def keepalive_client(offset: float) -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        due = start_at + offset
        while due < start_at + seconds:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            sent = time.monotonic()
            error = ""
            try:
                async with asyncio.timeout(load.timeout):
                    if conn is None:
                        conn = await asyncio.open_connection(VIP, PORT)
                    conn[1].write(REQUEST + b"\r\n")
                    status = await _read_status(conn[0])
                    error = "" if status == 200 else f"HTTP {status}"
            except LOAD_ERRORS as exc:
                error = type(exc).__name__
            if error and conn is not None:
                conn[1].close()
                conn = None
            record("k", sent, error)
            due = max(due + 1 / load.keepalive_rate, time.monotonic())
        if conn is not None:
            conn[1].close()

    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    for i in range(load.keepalive):
        spawn(keepalive_client(i / load.keepalive / load.keepalive_rate))
    n = 0
    while (due := start_at + n / load.rate) < start_at + seconds:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        spawn(new_connection(due))
        n += 1
    while pending:
        await asyncio.gather(*list(pending), return_exceptions=True)
    return records


def load_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--start-at", type=float, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--load", required=True, help="JSON of Load")
    a = ap.parse_args(argv)
    records = asyncio.run(run_load(Load(**json.loads(a.load)), a.start_at, a.seconds))
    a.out.write_text(json.dumps({"records": records}))
    return 0


# --------------------------------------------------------------------------- one run


@dataclass
class Result:
    contender: str
    scenario: str
    active: str
    requests: int = 0
    gap: float = 0.0
    gap_from: float = 0.0  # seconds from the fault: the last success before the gap
    gap_to: float = 0.0
    failed: int = 0
    failed_after_retry: int = 0
    takeover: float | None = None  # the other node's first ARP answer, from the fault
    slowest: float = 0.0  # the longest a successful request took
    two_arp: int = 0  # episodes of ARP rounds answered by two nodes
    two_arp_s: float = 0.0
    two_addr: int = 0  # episodes of two nodes with the address and an open fence
    two_addr_s: float = 0.0
    baseline_failed: int = 0  # failures before the fault (should be 0)
    load: str = ""
    loadavg: str = ""  # the machine's load average when the run ended
    errors: dict[str, int] = field(default_factory=dict)
    note: str = ""


def wait_for(what: str, fn: Callable[[], Any], timeout: float, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        time.sleep(every)


def vip_answers(rig: Rig) -> bool:
    import http.client

    def get() -> bool:
        c = http.client.HTTPConnection(VIP, PORT, timeout=0.5)
        try:
            c.request("GET", "/")
            return c.getresponse().status == 200
        except OSError:
            return False
        finally:
            c.close()

    return rig.call_in("client", get)


def episodes(spans: list[tuple[float, float]], join: float = 0.1) -> tuple[int, float]:
    """How many episodes (spans less than ``join`` apart are one: a lost ARP reply does not split one) and
    their total time."""
    merged: list[list[float]] = []
    for s, e in sorted(spans):
        if merged and s - merged[-1][1] < join:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return len(merged), round(sum(e - s for s, e in merged), 3)


def two_holder_spans(watch: AddressWatch, start: float, end: float) -> list[tuple[float, float]]:
    spans = []
    changes = watch.changes
    for i, c in enumerate(changes):
        if len(c.holders) > 1:
            stop = changes[i + 1].at if i + 1 < len(changes) else end
            if stop > start and c.at < end:
                spans.append((max(c.at, start), min(stop, end)))
    return spans


def run_one(rig: Rig, c: Contender, scenario: str, run: str, load: Load, timing: Timing, work: Path) -> Result:
    c.start(run)
    try:
        return _measure(rig, c, scenario, run, load, timing, work)
    finally:
        c.stop()


def _measure(rig: Rig, c: Contender, scenario: str, run: str, load: Load, timing: Timing, work: Path) -> Result:
    watch = AddressWatch(rig, VIP, list(NODES), interval=0.002)
    watch.start()
    probe = ArpProbe(rig, "obs", VIP).start()
    try:
        held = wait_for("one VIP holder", lambda: len(watch.holders) == 1 and watch.holders, 20)
        wait_for("the VIP answering HTTP 200", lambda: vip_answers(rig), 20)
        # both nodes' balancers ready (a takeover must find the other one serving)
        for n in NODES:
            wait_for(f"the balancer on {n}", lambda n=n: balancer_ready(rig, n), 20)
        active = watch.holders[0] if len(watch.holders) == 1 else held[0]
        other = "b" if active == "a" else "a"
        fault_len = {"kill": 0.0, "sigstop": timing.stop_for, "cable": timing.cut_for,
                     "partition": timing.cut_for}[scenario]
        after = timing.kill_after if scenario == "kill" else timing.after_heal
        seconds = timing.before + fault_len + after
        start_at = time.monotonic() + 0.5
        out = work / f"{run}.load.json"
        loadgen = rig.popen("client", [PY, str(Path(__file__).resolve()), "--load-worker", "--start-at", f"{start_at}",
                                       "--seconds", f"{seconds}", "--out", str(out), "--load", json.dumps(asdict(load))],
                            log=work / f"{run}.load.log")
        fault_at = start_at + timing.before
        time.sleep(max(0.0, fault_at - time.monotonic()))
        t_fault = time.monotonic()
        if scenario == "kill":
            rig.kill(active)
        elif scenario == "sigstop":
            rig.pause(active)
        elif scenario == "cable":
            rig.cable(active, False)
        elif c.kind == "etcd":
            rig.partition(active, ETCD)
        else:
            rig.partition(active, [other])
        if fault_len:
            time.sleep(max(0.0, t_fault + fault_len - time.monotonic()))
            rig.heal(active)
        rc = loadgen.wait(seconds + load.timeout * 3 + 10)
        end = time.monotonic()
        if rc != 0:
            raise RuntimeError(f"the load generator exited {rc}: {(work / f'{run}.load.log').read_text()[-2000:]}")
        records = json.loads(out.read_text())["records"]
    finally:
        watch.stop()
        probe.stop()
    return analyse(c, scenario, active, other, records, t_fault, start_at, end, watch, probe, load)


def balancer_ready(rig: Rig, node: str) -> bool:
    import http.client

    addr = rig.host(node).address

    def get() -> bool:
        conn = http.client.HTTPConnection(addr, PORT, timeout=0.5)
        try:
            conn.request("GET", "/")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    return rig.call_in("client", get)


def analyse(c: Contender, scenario: str, active: str, other: str, records: list[list[Any]], t_fault: float,
            start: float, end: float, watch: AddressWatch, probe: ArpProbe, load: Load) -> Result:
    res = Result(c.name, scenario, active, requests=len(records))
    ok = sorted(r[2] for r in records if not r[3])
    best = (0.0, t_fault, t_fault)
    for prev, nxt in itertools.pairwise(ok):
        if nxt >= t_fault and nxt - prev > best[0]:
            best = (nxt - prev, prev, nxt)
    if ok and ok[-1] < t_fault:
        best = (end - ok[-1], ok[-1], end)
    res.slowest = round(max((r[2] - r[1] for r in records if not r[3]), default=0.0), 3)
    res.gap, res.gap_from, res.gap_to = round(best[0], 3), round(best[1] - t_fault, 3), round(best[2] - t_fault, 3)
    failed = [r for r in records if r[3]]
    res.failed = len(failed)
    res.failed_after_retry = sum(1 for r in failed if r[4] != "")
    res.baseline_failed = sum(1 for r in failed if r[2] < t_fault)
    for r in failed:
        res.errors[r[3]] = res.errors.get(r[3], 0) + 1
    took = probe.first_answer(other, t_fault)
    res.takeover = round(took - t_fault, 3) if took is not None else None
    res.two_arp, res.two_arp_s = episodes([(s, e + probe.interval) for s, e, _ in probe.moments_of_two(start, end)])
    res.two_addr, res.two_addr_s = episodes(two_holder_spans(watch, start, end))
    n_new = sum(1 for r in records if r[0] == "n")
    res.load = f"{n_new / (end - start):.0f} new/s + {len(records) - n_new} keep-alive"
    res.loadavg = loadavg()
    return res


# --------------------------------------------------------------------------- report


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def print_table(results: list[Result]) -> None:
    print()
    print(f"{'scenario':<10} {'contender':<24} {'active':>6} {'gap s':>6} {'(from → to)':>15} {'failed':>7} "
          f"{'after retry':>11} {'two holders: ARP':>17} {'addr+fence':>11} {'takeover s':>10} {'slowest s':>9}")
    for scenario in dict.fromkeys(r.scenario for r in results):
        for r in (r for r in results if r.scenario == scenario):
            span = f"{r.gap_from:+.2f}→{r.gap_to:+.2f}"
            print(f"{r.scenario:<10} {r.contender:<24} {r.active:>6} {r.gap:>6.2f} {span:>15} {r.failed:>7} "
                  f"{r.failed_after_retry:>11} {f'{r.two_arp} ({r.two_arp_s:.2f}s)':>17} "
                  f"{f'{r.two_addr} ({r.two_addr_s:.2f}s)':>11} {fmt(r.takeover):>10} {r.slowest:>9.2f}")
    print("\ngap: longest time between two successful answers from the fault on (seconds from the fault);"
          " two holders: episodes (total time) when two nodes answered one ARP probe / had the address with"
          " an open fence; takeover: the other node's first ARP answer after the fault; slowest: the longest a"
          " successful request took.")


def check_targets(results: list[Result]) -> list[tuple[str, bool, str]]:
    """(target, met, detail); the fivenines ones decide the exit status."""
    out: list[tuple[str, bool, str]] = []
    etcd = [r for r in results if r.contender.startswith("fivenines etcd")]
    if etcd:
        worst = max(etcd, key=lambda r: r.gap)
        out.append(("fivenines etcd: gap <= 2 s in every scenario", all(r.gap <= 2.0 for r in etcd),
                    f"worst {worst.gap:.2f}s ({worst.scenario})"))
        two = sum(r.two_arp + r.two_addr for r in etcd)
        out.append(("fivenines etcd: 0 moments of two VIP holders", two == 0, f"{two}"))
    for r in results:
        if not r.contender.startswith("fivenines vrrp"):
            continue
        advert = r.contender.split()[-1]
        pair = next((p for p in results if p.scenario == r.scenario and p.contender == f"haproxy+keepalived {advert}"),
                    None)
        if pair is None:
            continue
        met = (r.gap <= pair.gap + 0.25 and r.two_arp <= pair.two_arp
               and r.failed_after_retry <= pair.failed_after_retry + max(3, pair.failed_after_retry // 10))
        out.append((f"{r.contender} no worse than the keepalived pair, {r.scenario}", met,
                    f"gap {r.gap:.2f} vs {pair.gap:.2f}s, after retry {r.failed_after_retry} vs "
                    f"{pair.failed_after_retry}, two holders {r.two_arp} vs {pair.two_arp}"))
    for r in results:
        if r.scenario != "kill":
            continue
        last = r.contender.split()[-1]
        advert = float(last[:-1]) if "etcd" not in r.contender and last.endswith("s") else None
        wait = master_down_interval(advert, 100) if advert is not None else 0.0
        if wait > Load.retry_after:
            # a VRRP backup waits for the master-down interval before it takes the address: a client
            # retrying once after 0.25 s is beyond reach of any VRRP pair at this advert_int
            out.append((f"(not a target) {r.contender}: failed for a retrying client (kill)", True,
                        f"{r.failed_after_retry} of {r.failed} failed; a backup waits {wait:.2f}s for the master "
                        f"to be down, the retry comes {Load.retry_after:g}s after a failure"))
            continue
        out.append((f"{r.contender}: 0 failed for a retrying client (kill)", r.failed_after_retry == 0,
                    f"{r.failed_after_retry} of {r.failed} failed"))
    return out


# --------------------------------------------------------------------------- main


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: list[str]) -> int:
    if argv[:1] == ["--load-worker"]:
        return load_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="shorter phases (SIGSTOP 5 s), about 3 minutes")
    ap.add_argument("--smoke", action="store_true", help="one short kill run per contender: checks the bench works")
    ap.add_argument("--fast-advert", type=float, default=0.05,
                    help="the fast VRRP advert_int row (seconds; 0.02 flapped here on a loaded machine, 0.05 did not)")
    ap.add_argument("--only", action="append", default=[], help="contenders whose name contains this (repeatable)")
    ap.add_argument("--scenario", action="append", default=[], choices=["kill", "sigstop", "cable", "partition"])
    ap.add_argument("--budget", type=float, default=540.0, help="stop starting runs after this many seconds")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cluster_bench.json")
    ap.add_argument("--keep-logs", type=Path, help="copy every process's log here before the rig is removed")
    args = ap.parse_args(argv)
    from fivenines.rig import unavailable

    why = unavailable()
    if why:
        print(f"cluster-bench: {why}", file=sys.stderr)
        return 2
    for binary in ("haproxy", "keepalived", "etcd"):
        if shutil.which(binary) is None and not os.path.exists(f"/usr/sbin/{binary}"):
            print(f"cluster-bench: {binary} is not installed (scripts/install-test-deps --bench)", file=sys.stderr)
            return 2
    load = Load(rate=60.0, keepalive=2, keepalive_rate=20.0) if args.smoke else Load()
    timing = Timing()
    if args.quick:
        timing = Timing(before=1.5, kill_after=4.5, stop_for=5.0, cut_for=4.5, after_heal=2.0)
    if args.smoke:
        timing = Timing(before=1.0, kill_after=4.5, stop_for=2.0, cut_for=2.0, after_heal=1.0)
    scenarios = args.scenario or (["kill"] if args.smoke else ["kill", "sigstop", "cable", "partition"])
    began = time.monotonic()
    results: list[Result] = []
    skipped: list[str] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # the rig cleans up on the way out
    with Rig(HOSTS) as rig:
        work = rig.scratch / "bench"
        work.mkdir()
        etcd = EtcdInRig(rig, ETCD, rig.scratch)
        for b in BACKENDS:
            rig.popen(b, [PY, "-m", "fivenines.demo", "--host", "0.0.0.0", "--port", str(PORT), "--id", b],
                      log=work / f"demo-{b}.log")
        contenders: list[Contender] = [
            HaproxyKeepalived(rig, work, 1.0), HaproxyKeepalived(rig, work, args.fast_advert),
            FiveninesVrrp(rig, work, 1.0), FiveninesVrrp(rig, work, args.fast_advert),
            FiveninesEtcd(rig, work, etcd),
        ]
        if args.only:
            contenders = [c for c in contenders if any(o in c.name for o in args.only)]
        print_configs(rig, contenders, etcd, load, timing)
        print(f"\nload average at start: {loadavg()} ({os.cpu_count()} CPUs)")
        n = 0
        for i, scenario in enumerate(scenarios):
            order = contenders if i % 2 == 0 else list(reversed(contenders))
            for c in order:
                if time.monotonic() - began > args.budget:
                    skipped.append(f"{scenario}/{c.name}")
                    continue
                n += 1
                run = f"run{n}"
                t0 = time.monotonic()
                try:
                    r = run_one(rig, c, scenario, run, load, timing, work)
                except (TimeoutError, RuntimeError) as exc:
                    r = Result(c.name, scenario, "-", note=f"failed: {exc}")
                    print(f"  {scenario:<10} {c.name:<24} FAILED: {exc}")
                    print(tail_logs(work / run))
                else:
                    print(f"  {scenario:<10} {c.name:<24} gap {r.gap:.2f}s failed {r.failed} (after retry "
                          f"{r.failed_after_retry}) two holders {r.two_arp}/{r.two_addr} takeover {fmt(r.takeover)}s "
                          f"[{time.monotonic() - t0:.0f}s, load {loadavg()}]")
                results.append(r)
        if args.keep_logs:
            keep_logs(work, args.keep_logs)
    print_table([r for r in results if not r.note])
    for r in results:
        if r.note:
            print(f"{r.scenario}/{r.contender}: {r.note}")
    if skipped:
        print(f"skipped (over the {args.budget:g}s budget): {', '.join(skipped)}")
    targets = check_targets([r for r in results if not r.note])
    print("\ntargets:")
    for what, met, detail in targets:
        mark = "--" if what.startswith("(not a target)") else "ok" if met else "MISSED"
        print(f"  [{mark}] {what}: {detail}")
    print(f"\nload average at the end: {loadavg()}; the whole run took {time.monotonic() - began:.0f}s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"load": asdict(load), "timing": asdict(timing), "loadavg_end": loadavg(),
                                    "results": [asdict(r) for r in results],
                                    "targets": [{"target": w, "met": m, "detail": d} for w, m, d in targets]},
                                   indent=1))
    print(f"results: {args.out}")
    missed = [w for w, m, _ in targets if not m and w.startswith("fivenines")]
    failed_runs = [r for r in results if r.note and r.contender.startswith("fivenines")]
    return 1 if (missed or failed_runs) and not args.smoke else 0


def keep_logs(work: Path, dest: Path) -> None:
    """Copy the logs, configurations and status files of every run (not etcd's data, not FIFOs)."""
    for f in work.rglob("*"):
        if f.is_file() and f.suffix in (".log", ".yaml", ".cfg", ".conf", ".json") and not f.name.endswith(".load.json"):
            target = dest / f.relative_to(work)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)


def tail_logs(folder: Path, lines: int = 8) -> str:
    out = []
    for f in sorted(folder.rglob("*.log")) if folder.exists() else []:
        text = f.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {f.relative_to(folder)}\n" + "\n".join(text))
    return "\n".join(out)


def print_configs(rig: Rig, contenders: list[Contender], etcd: EtcdInRig, load: Load, timing: Timing) -> None:
    print("cluster-bench: the configurations used")
    print(f"\nworld: nodes a={rig.host('a').address} b={rig.host('b').address}, VIP {VIP}/{PREFIX} on eth0, "
          f"etcd {', '.join(etcd.endpoints)} (--heartbeat-interval {etcd.heartbeat_ms} --election-timeout "
          f"{etcd.election_ms}), backends {', '.join(backend_targets(rig))} (python -m fivenines.demo), "
          f"balancers on 0.0.0.0:{PORT}")
    print(f"load: {load.rate:g} new connections/s (one request each) + {load.keepalive} keep-alive clients x "
          f"{load.keepalive_rate:g} requests/s (reconnect after an error); timeout {load.timeout:g}s per request; "
          f"each failure retried once {load.retry_after * 1000:g} ms later on a new connection")
    print(f"phases: {timing.before:g}s of load, then the fault; kill: {timing.kill_after:g}s after; sigstop "
          f"{timing.stop_for:g}s, cable and partition {timing.cut_for:g}s, then {timing.after_heal:g}s healed")
    shown: set[str] = set()
    for c in contenders:
        for title, text in c.configs().items():
            if text in shown:
                continue
            shown.add(text)
            print(f"\n--- {title}\n{text.rstrip()}")
    adverts = sorted({c.advert for c in contenders if isinstance(c, HaproxyKeepalived | FiveninesVrrp)})
    for a in adverts:
        print(f"\nVRRP takeover bound at advert_int {a:g}s (priority 100): {master_down_interval(a, 100):.3f}s")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
