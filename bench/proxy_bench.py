#!/usr/bin/env python3
"""fivenines' load balancer against HAProxy and direct access, in one run (``make bench``).

Starts two nginx backends on loopback, HAProxy (``nbthread 1``, an equivalent
config) and ``fivenines up`` (``workers: 1``) in front of them, and measures with
wrk, interleaving the contenders round by round so that drifting load on a shared
machine hits all of them alike:

  (a) HTTP keep-alive GET, round robin over both backends;
  (b) HTTP with a new connection per request (``Connection: close``);
  (c) TCP mode (HTTP keep-alive carried as a byte stream).

Then memory: RSS of the fivenines process with 10,000 idle keep-alive client
connections, and RSS growth while streaming a 1 GB body each way.

Prints requests/s, p50 and p99 latency, the CPU the proxy used, and the
fivenines/HAProxy ratios against the targets (keep-alive >= 0.8x HAProxy's
requests/s, TCP >= 0.9x, p99 <= 1.5x; < 100 MB with 10k idle connections; < 20 MB
growth while streaming 1 GB); writes everything to ``bench/results/*.json``.

Nothing here is tuned for the benchmark: fivenines runs with the same code and
defaults as ``fivenines up`` anywhere (access logging is off by default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PY = sys.executable
GB = 1024**3

TARGETS = {
    "keepalive_rps_ratio": 0.8,
    "tcp_rps_ratio": 0.9,
    "p99_ratio": 1.5,
    "idle_10k_rss_mb": 100.0,
    "stream_1gb_growth_mb": 20.0,
}


# --------------------------------------------------------------------------- plumbing


def need(binary: str) -> str:
    path = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if os.path.exists(p)), None)
    if path is None:
        subprocess.run([str(ROOT / "scripts" / "install-test-deps"), "--bench"], check=False)
        path = shutil.which(binary) or next(
            (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if os.path.exists(p)), None)
    if path is None:
        sys.exit(f"proxy_bench: {binary} is missing; run scripts/install-test-deps --bench as root")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def raise_nofile(n: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(n, hard) if hard != resource.RLIM_INFINITY else n
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pinner(cpus: set[int] | None) -> Callable[[], None] | None:
    if not cpus:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mem_kb(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":")
                out[k] = int(v.split()[0])
    return out


class Procs:
    """Processes started by the bench, stopped at exit whatever happens."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log: Path, cpus: set[int] | None = None, **kw: Any) -> subprocess.Popen[bytes]:
        f = log.open("wb")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, preexec_fn=pinner(cpus),
                             start_new_session=True, **kw)
        f.close()
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[bytes]) -> None:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self) -> None:
        for p in list(reversed(self.procs)):
            self.stop(p)


# --------------------------------------------------------------------------- contenders


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx-{name}.pid;
error_log {dir}/nginx-{name}.err warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body-{name};
  proxy_temp_path {dir}/proxy-{name};
  fastcgi_temp_path {dir}/fcgi-{name};
  uwsgi_temp_path {dir}/uwsgi-{name};
  scgi_temp_path {dir}/scgi-{name};
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  client_max_body_size 0;
  sendfile on;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location = / {{ default_type text/plain; return 200 "hello from {name}\\n"; }}
    location = /health {{ default_type text/plain; return 200 "ok\\n"; }}
    location = /upload {{ default_type text/plain; return 200 "stored\\n"; }}
    location = /big.bin {{ root {dir}; }}
  }}
}}
"""

HAPROXY_CONF = """
global
  nbthread 1
  maxconn {maxconn}
defaults
  timeout connect 3s
  timeout client 60s
  timeout server 60s
  timeout http-request 10s
  timeout http-keep-alive 60s
frontend http_in
  mode http
  bind 127.0.0.1:{http_port}
  option http-keep-alive
  option forwardfor
  default_backend web
backend web
  mode http
  balance roundrobin
  http-reuse always
  option httpchk GET /health
  server a 127.0.0.1:{a} check inter 1s
  server b 127.0.0.1:{b} check inter 1s
frontend tcp_in
  mode tcp
  bind 127.0.0.1:{tcp_port}
  default_backend tcp_web
backend tcp_web
  mode tcp
  balance roundrobin
  server a 127.0.0.1:{a} check inter 1s
  server b 127.0.0.1:{b} check inter 1s
"""


def fivenines_spec(a: int, b: int, http_port: int, tcp_port: int, state: Path,
                   sink: int | None = None, workers: int = 1) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "bench",
        "state_dir": str(state),
        "admin": {"listen": "127.0.0.1:0"},
        "workers": workers,
        "listeners": [
            {"port": http_port, "protocol": "http", "default_target_group": "web"},
            {"port": tcp_port, "protocol": "tcp", "default_target_group": "web"},
        ],
        "target_groups": {"web": {
            "algorithm": "round_robin",
            "targets": [f"127.0.0.1:{a}", f"127.0.0.1:{b}"],
            "health_check": {"path": "/health", "interval": "1s", "timeout": "500ms"},
        }},
    }
    if sink is not None:  # uploads go to a sink that reads every byte before answering
        spec["listeners"][0]["rules"] = [{"match": {"path": ["/upload"]}, "forward": "sink"}]
        spec["target_groups"]["sink"] = {"targets": [f"127.0.0.1:{sink}"],
                                         "health_check": {"path": "/health", "interval": "1s", "timeout": "500ms"}}
    return spec


class Sink:
    """A plain HTTP server in a thread that reads whole request bodies (Content-Length) and answers 200."""

    def __init__(self) -> None:
        import socketserver

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn: socket.socket = self.request
                buf = b""
                while True:
                    while b"\r\n\r\n" not in buf:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buf += data
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    m = re.search(rb"content-length:\s*(\d+)", head, re.I)
                    length = int(m.group(1)) if m else 0
                    take = min(length, len(buf))
                    left, buf = length - take, buf[take:]
                    view = bytearray(1 << 20)
                    while left > 0:
                        n = conn.recv_into(view, min(left, len(view)))
                        if not n:
                            return
                        left -= n
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nstored\n")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="fivenines-bench-"))
        self.procs = Procs()
        ncpu = os.cpu_count() or 1
        # the proxy under test on one core, nginx and wrk on the others (the same for every contender)
        self.proxy_cpus = {0} if args.pin and ncpu >= 2 else None
        self.other_cpus = set(range(1, ncpu)) if args.pin and ncpu >= 2 else None
        self.nginx = need("nginx")
        self.haproxy = need("haproxy")
        self.wrk_bin = need("wrk")
        self.ports: dict[str, int] = {}
        self.pids: dict[str, int] = {}
        self.fivenines: subprocess.Popen[bytes] | None = None

    # -- setup
    def start_backends(self) -> None:
        os.chmod(self.dir, 0o755)  # nginx workers may run as another user
        big = self.dir / "big.bin"
        with big.open("wb") as f:  # sparse: costs no disk
            f.truncate(GB)
        big.chmod(0o644)
        for name in ("a", "b"):
            port = free_port()
            self.ports[name] = port
            for sub in ("body", "proxy", "fcgi", "uwsgi", "scgi"):
                (self.dir / f"{sub}-{name}").mkdir(exist_ok=True)
            conf = self.dir / f"nginx-{name}.conf"
            conf.write_text(NGINX_CONF.format(dir=self.dir, name=name, port=port))
            self.procs.start([self.nginx, "-c", str(conf), "-p", str(self.dir), "-e", str(self.dir / f"nginx-{name}.err")], self.dir / f"nginx-{name}.log",
                             self.other_cpus)
            wait_port(port)

    def start_haproxy(self) -> None:
        self.ports["haproxy_http"], self.ports["haproxy_tcp"] = free_port(), free_port()
        conf = self.dir / "haproxy.cfg"
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        conf.write_text(HAPROXY_CONF.format(http_port=self.ports["haproxy_http"], tcp_port=self.ports["haproxy_tcp"],
                                            a=self.ports["a"], b=self.ports["b"],
                                            maxconn=max(1000, min(30000, (nofile - 200) // 2))))
        p = self.procs.start([self.haproxy, "-f", str(conf)], self.dir / "haproxy.log", self.proxy_cpus)
        wait_port(self.ports["haproxy_http"])
        self.pids["haproxy"] = p.pid

    def start_fivenines(self, tag: str = "", sink: int | None = None, workers: int = 1,
                        cpus: set[int] | str | None = "proxy") -> subprocess.Popen[bytes]:
        http_port, tcp_port = free_port(), free_port()
        self.ports["fivenines_http"], self.ports["fivenines_tcp"] = http_port, tcp_port
        spec = fivenines_spec(self.ports["a"], self.ports["b"], http_port, tcp_port, self.dir / f"state{tag}",
                              sink, workers)
        path = self.dir / f"fivenines{tag}.json"
        path.write_text(json.dumps(spec))  # JSON is YAML
        ready = self.dir / f"ready{tag}.json"
        p = self.procs.start([PY, "-m", "fivenines", "up", str(path), "--ready-file", str(ready),
                              "--log-level", "warning"], self.dir / f"fivenines{tag}.log",
                             self.proxy_cpus if cpus == "proxy" else cpus)  # type: ignore[arg-type]
        deadline = time.monotonic() + 20
        while not ready.exists():
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fivenines did not start:\n{(self.dir / f'fivenines{tag}.log').read_text()}")
            time.sleep(0.05)
        admin = json.loads(ready.read_text())["admin"]
        deadline = time.monotonic() + 20
        while True:  # both targets healthy before measuring
            with contextlib.suppress(OSError, ValueError):
                import urllib.request

                with urllib.request.urlopen(f"{admin}/status", timeout=2) as r:
                    st = json.loads(r.read())
                if all(len(g["serving"]) == len(g["targets"]) for g in st["target_groups"].values()):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("fivenines targets did not become healthy")
            time.sleep(0.1)
        self.pids["fivenines"] = p.pid
        self.fivenines = p
        return p

    # -- wrk
    def wrk(self, url: str, duration: float, close: bool) -> dict[str, float]:
        argv = [self.wrk_bin, "-t", str(self.args.threads), "-c", str(self.args.connections), "-d", f"{max(1, round(duration))}s",
                "--latency", "--timeout", "5s"]
        if close:
            argv += ["-H", "Connection: close"]
        argv.append(url)
        out = subprocess.run(argv, capture_output=True, text=True, check=True, preexec_fn=pinner(self.other_cpus),
                             timeout=duration + 30).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        lat = {m.group(1): _ms(m.group(2)) for m in re.finditer(r"^\s+(50|75|90|99)%\s+([\d.]+\w+)", out, re.M)}
        errors = re.search(r"Socket errors: (.*)", out)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        return {"rps": rps, "p50_ms": lat.get("50", 0.0), "p99_ms": lat.get("99", 0.0),
                "errors": errors.group(1) if errors else "", "non_2xx": int(non2xx.group(1)) if non2xx else 0}

    def measure(self) -> dict[str, Any]:
        p = self.ports
        scenarios = {
            "keepalive": ("http", False),
            "new_connection": ("http", True),
            "tcp": ("tcp", False),
        }
        urls = {
            "direct": {"http": f"http://127.0.0.1:{p['a']}/", "tcp": f"http://127.0.0.1:{p['a']}/"},
            "haproxy": {"http": f"http://127.0.0.1:{p['haproxy_http']}/", "tcp": f"http://127.0.0.1:{p['haproxy_tcp']}/"},
            "fivenines": {"http": f"http://127.0.0.1:{p['fivenines_http']}/",
                          "tcp": f"http://127.0.0.1:{p['fivenines_tcp']}/"},
        }
        runs: dict[str, dict[str, list[dict[str, float]]]] = {s: {c: [] for c in urls} for s in scenarios}
        contenders = list(urls)
        for rnd in range(self.args.rounds):
            for scenario, (kind, close) in scenarios.items():
                order = contenders[rnd % 3:] + contenders[:rnd % 3]  # rotate who goes first
                for c in order:
                    self.wrk(urls[c][kind], 1.0, close)  # warm-up (pools, caches)
                    pid = self.pids.get(c)
                    cpu0 = cpu_seconds(pid) if pid else 0.0
                    t0 = time.monotonic()
                    r = self.wrk(urls[c][kind], self.args.duration, close)
                    if pid:
                        r["proxy_cpu_pct"] = 100 * (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
                    runs[scenario][c].append(r)
                    print(f"  round {rnd + 1} {scenario:15} {c:10} {r['rps']:>10.0f} rps  p50 {r['p50_ms']:.2f} ms"
                          f"  p99 {r['p99_ms']:.2f} ms" + (f"  cpu {r['proxy_cpu_pct']:.0f}%" if pid else "")
                          + (f"  errors {r['errors']}" if r["errors"] else ""), flush=True)
        summary: dict[str, Any] = {}
        for scenario, by in runs.items():
            summary[scenario] = {}
            for c, rs in by.items():
                summary[scenario][c] = {
                    "rps": statistics.median(r["rps"] for r in rs),
                    "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                    "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                    "proxy_cpu_pct": statistics.median(r.get("proxy_cpu_pct", 0.0) for r in rs),
                    "runs": rs,
                }
            f, h = summary[scenario]["fivenines"], summary[scenario]["haproxy"]
            summary[scenario]["ratio_rps"] = f["rps"] / h["rps"] if h["rps"] else 0.0
            summary[scenario]["ratio_p99"] = f["p99_ms"] / h["p99_ms"] if h["p99_ms"] else 0.0
            f_eff = f["rps"] / max(f["proxy_cpu_pct"], 1) * 100
            h_eff = h["rps"] / max(h["proxy_cpu_pct"], 1) * 100
            summary[scenario]["requests_per_cpu_second"] = {"fivenines": f_eff, "haproxy": h_eff}
        return summary

    def scaling(self, workers: int) -> dict[str, Any]:
        """Keep-alive requests/s of fivenines with 1 worker and with ``workers``, neither pinned."""
        one = self.start_fivenines("-scale1", cpus=None)
        url1 = f"http://127.0.0.1:{self.ports['fivenines_http']}/"
        many = self.start_fivenines(f"-scale{workers}", workers=workers, cpus=None)
        url_n = f"http://127.0.0.1:{self.ports['fivenines_http']}/"
        got: dict[str, list[float]] = {"1": [], str(workers): []}
        for _ in range(self.args.rounds):
            for name, url in (("1", url1), (str(workers), url_n)):
                self.wrk(url, 1.0, False)
                r = self.wrk(url, self.args.duration, False)
                got[name].append(r["rps"])
                print(f"  scaling: {name} worker(s) {r['rps']:>10.0f} rps", flush=True)
        self.procs.stop(one)
        self.procs.stop(many)
        med = {k: statistics.median(v) for k, v in got.items()}
        return {"workers": workers, "rps": med, "speedup": med[str(workers)] / med["1"], "runs": got}

    # -- memory
    def idle_connections(self, n: int) -> dict[str, Any]:
        assert self.fivenines is not None
        pid = self.fivenines.pid
        before = mem_kb(pid)["VmRSS"]
        got = asyncio.run(_open_idle(self.ports["fivenines_http"], n, lambda: mem_kb(pid)["VmRSS"]))
        got["rss_before_mb"] = before / 1024
        return got

    def stream(self) -> dict[str, Any]:
        sink = Sink()
        p = self.start_fivenines("-stream", sink.port)
        pid = p.pid
        before = mem_kb(pid)["VmRSS"]
        samples: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append(mem_kb(pid)["VmRSS"])
                time.sleep(0.02)

        t = threading.Thread(target=sample)
        t.start()
        t0 = time.monotonic()
        down = _download(self.ports["fivenines_http"], "/big.bin")
        t1 = time.monotonic()
        up = _upload(self.ports["fivenines_http"], "/upload", GB)
        t2 = time.monotonic()
        stop.set()
        t.join()
        hwm = mem_kb(pid)["VmHWM"]
        self.procs.stop(p)
        sink.close()
        return {
            "download_bytes": down, "download_s": t1 - t0, "upload_status": up, "upload_s": t2 - t1,
            "rss_before_mb": before / 1024, "rss_max_sampled_mb": max(samples) / 1024, "vm_hwm_mb": hwm / 1024,
            "growth_mb": (hwm - before) / 1024,
        }

    def close(self) -> None:
        self.procs.stop_all()
        if self.args.keep:
            print(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return 0.0
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


async def _open_idle(port: int, n: int, rss: Callable[[], int]) -> dict[str, Any]:
    """n keep-alive connections, one request each, then held open while RSS is read."""
    sem = asyncio.Semaphore(500)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    ok = 0

    async def one() -> None:
        nonlocal ok
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            head = await r.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
            await r.readexactly(length)
            ok += 1
            conns.append((r, w))

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(n)))
    opened = time.monotonic() - t0
    await asyncio.sleep(1.0)  # let the proxy settle (idle sweep, freed buffers)
    rss_kb = rss()
    for _, w in conns:
        w.close()
    return {"connections": n, "answered": ok, "open_s": opened, "rss_mb": rss_kb / 1024}


def _download(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        total = 0
        head = b""
        buf = bytearray(1 << 20)
        while b"\r\n\r\n" not in head:
            head += s.recv(65536)
        total = len(head.split(b"\r\n\r\n", 1)[1])
        while True:
            n = s.recv_into(buf)
            if not n:
                return total
            total += n


def _upload(port: int, path: str, size: int) -> str:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {size}\r\n"
                  f"Connection: close\r\n\r\n".encode())
        chunk = b"u" * (1 << 20)
        left = size
        while left:
            n = min(left, len(chunk))
            s.sendall(chunk[:n] if n < len(chunk) else chunk)
            left -= n
        return s.recv(200).split(b"\r\n", 1)[0].decode()


# --------------------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(summary: dict[str, Any], idle: dict[str, Any], stream: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if summary:
        header = f"{'scenario':16}{'contender':11}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'proxy CPU':>11}"
        lines += [header, "-" * len(header)]
        for scenario in ("keepalive", "new_connection", "tcp"):
            for c in ("direct", "haproxy", "fivenines"):
                r = summary[scenario][c]
                cpu = f"{r['proxy_cpu_pct']:.0f}%" if c != "direct" else "-"
                lines.append(f"{scenario:16}{c:11}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{cpu:>11}")
        lines.append("")
        lines.append(f"{'fivenines / HAProxy':22}{'req/s':>8}{'p99':>8}{'req per CPU-s':>15}   targets")
        for scenario, rps_target in (("keepalive", TARGETS["keepalive_rps_ratio"]), ("new_connection", None),
                                     ("tcp", TARGETS["tcp_rps_ratio"])):
            s = summary[scenario]
            eff = s["requests_per_cpu_second"]
            t = []
            if rps_target is not None:
                t.append(f"req/s >= {rps_target}x {verdict(s['ratio_rps'] >= rps_target)}")
            t.append(f"p99 <= {TARGETS['p99_ratio']}x {verdict(s['ratio_p99'] <= TARGETS['p99_ratio'])}")
            lines.append(f"{scenario:22}{s['ratio_rps']:>7.2f}x{s['ratio_p99']:>7.2f}x"
                         f"{eff['fivenines'] / eff['haproxy']:>14.2f}x   {', '.join(t)}")
        lines.append("")
    if idle:
        lines.append(f"{idle['connections']:,} idle keep-alive connections: RSS {idle['rss_mb']:.1f} MB "
                     f"(before: {idle['rss_before_mb']:.1f} MB; {idle['answered']}/{idle['connections']} answered)  "
                     f"< {TARGETS['idle_10k_rss_mb']:.0f} MB {verdict(idle['rss_mb'] < TARGETS['idle_10k_rss_mb'])}")
    if stream:
        ok = stream["growth_mb"] < TARGETS["stream_1gb_growth_mb"] and stream["download_bytes"] == GB
        lines.append(f"1 GB download ({stream['download_s']:.1f} s) + 1 GB upload ({stream['upload_s']:.1f} s, "
                     f"{stream['upload_status']}): RSS {stream['rss_before_mb']:.1f} MB -> peak "
                     f"{stream['vm_hwm_mb']:.1f} MB, growth {stream['growth_mb']:.1f} MB  "
                     f"< {TARGETS['stream_1gb_growth_mb']:.0f} MB {verdict(ok)}")
    return lines


def environment(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    def version(argv: list[str]) -> str:
        out = subprocess.run(argv, capture_output=True, text=True)
        return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else ""

    import httptools
    import uvloop

    return {
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "uvloop": uvloop.__version__,
        "httptools": httptools.__version__,
        "nginx": version([bench.nginx, "-v"]),
        "haproxy": version([bench.haproxy, "-v"]),
        "wrk": version([bench.wrk_bin, "--version"]),
        "wrk_threads": args.threads,
        "wrk_connections": args.connections,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "pinned": {"proxy": sorted(bench.proxy_cpus or []), "nginx_and_wrk": sorted(bench.other_cpus or [])},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported (default 3)")
    ap.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    ap.add_argument("--idle", type=int, default=10000, help="idle keep-alive connections to hold (default 10000)")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="do not pin the proxy to CPU 0 and nginx + wrk to the others")
    ap.add_argument("--scaling", type=int, default=0, metavar="N",
                    help="also compare fivenines with N workers against 1 worker (keep-alive, unpinned)")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (configs, logs)")
    ap.add_argument("--only", choices=["throughput", "idle", "stream"], help="run one part only")
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s (a smoke run, not a measurement)")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 2.0
    nofile = raise_nofile()
    if nofile < args.idle + 1000:
        print(f"proxy_bench: open-file limit {nofile} is too low for {args.idle} connections; using "
              f"{nofile - 1000}", file=sys.stderr)
        args.idle = max(0, nofile - 1000)
    bench = Bench(args)
    try:
        bench.start_backends()
        bench.start_haproxy()
        bench.start_fivenines()
        env = environment(args, bench)
        print(f"proxy bench: {env['cpus']} CPUs, load {env['loadavg_at_start'][0]:.2f}, pinned {env['pinned']}, "
              f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s x {args.rounds} rounds", flush=True)
        summary: dict[str, Any] = {}
        idle: dict[str, Any] = {}
        stream: dict[str, Any] = {}
        if args.only in (None, "throughput"):
            summary = bench.measure()
        if args.only in (None, "idle"):
            print(f"  holding {args.idle} idle keep-alive connections...", flush=True)
            idle = bench.idle_connections(args.idle)
        if args.only in (None, "stream"):
            print("  streaming 1 GB each way...", flush=True)
            stream = bench.stream()
        scaling: dict[str, Any] = {}
        if args.scaling:
            scaling = bench.scaling(args.scaling)
    finally:
        bench.close()
    lines = report(summary, idle, stream)
    if scaling:
        lines.append(f"workers: {scaling['workers']} (unpinned, keep-alive): {scaling['rps'][str(scaling['workers'])]:.0f} "
                     f"req/s vs {scaling['rps']['1']:.0f} with 1 worker ({scaling['speedup']:.2f}x)")
    print()
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / time.strftime("proxy-%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps({"environment": env, "targets": TARGETS, "throughput": summary,
                               "idle_connections": idle, "stream_1gb": stream, "scaling": scaling,
                               "table": lines}, indent=2))
    print(f"\nwritten to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
