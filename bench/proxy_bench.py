#!/usr/bin/env python3
"""fivenines' load balancer against HAProxy and direct access, in one run (``make bench``).

What is measured is what users install: the checkout is installed with ``pip install .`` into a
venv of the bench's own (``build/bench-venv``, reused while the checkout is unchanged), and
``fivenines`` runs from there, never from the source tree; the data plane it runs (compiled, or
from source and why) is printed.

Starts two nginx backends on loopback, HAProxy (``nbthread 1``, an equivalent config) and
``fivenines up`` (``workers: 1``) in front of them, and measures with wrk, interleaving the
contenders round by round so that drifting load on a shared machine hits all of them alike:

  (a) HTTP keep-alive GET, round robin over both backends;
  (b) HTTP with a new connection per request (``Connection: close``);
  (c) TCP mode (HTTP keep-alive carried as a byte stream);
  (d) HTTP keep-alive with fivenines ``workers: 2`` against HAProxy ``nbthread 2``, both free to
      use every core (the load generator then shares the cores: it runs alike for both).

For each: requests/s, p50 and p99 latency, the CPU the proxy used (its processes, user + sys,
from /proc, over the measured window) and requests per CPU-second; the fivenines/HAProxy ratios
are judged against the targets (TARGETS). Then memory: RSS of the fivenines process with 10,000
idle keep-alive client connections, and RSS growth while streaming a 1 GB body each way. Writes
everything to ``bench/results/*.json``.

``--baseline REV`` (``make bench BASELINE=REV``) also installs git revision REV of this repository
(``build/bench-venv-REV``, compiled as that revision compiles) and runs it as one more contender in
the workers: 1 scenarios, interleaved with the others: the report adds this build / REV's build,
req/s and per CPU-second (issue 18: a refactor costs at most 3%, ``BASELINE_MIN_RATIO``).

Nothing here is tuned for the benchmark: fivenines runs with the same code and
defaults as ``fivenines up`` anywhere (access logging is off by default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
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
VENV = ROOT / "build" / "bench-venv"
GB = 1024**3

# fivenines / HAProxy, per scenario: req/s ratio >= rps, requests per CPU-second ratio >= per_cpu,
# p99 ratio <= p99 (issue 17).
TARGETS: dict[str, dict[str, float]] = {
    "keepalive": {"rps": 1.0, "per_cpu": 0.9, "p99": 1.2},
    "new_connection": {"rps": 1.0, "per_cpu": 0.8, "p99": 1.3},
    "tcp": {"rps": 1.0, "per_cpu": 0.95},
    "workers2": {"rps": 0.9},
}
MEMORY_TARGETS = {"idle_10k_rss_mb": 100.0, "stream_1gb_growth_mb": 20.0}
# With --baseline REV: this build / REV's build, req/s and per CPU-second, each >= this (issue 18: a
# refactor costs at most 3%).
BASELINE_MIN_RATIO = 0.97


# --------------------------------------------------------------------------- the installed package


def checkout_digest() -> str:
    """What ``pip install .`` builds from: the sources and the build files (not build outputs)."""
    h = hashlib.sha256()
    files = [ROOT / "setup.py", ROOT / "pyproject.toml"]
    files += sorted(p for p in (ROOT / "src").rglob("*") if p.is_file() and "__pycache__" not in p.parts
                    and not p.parent.name.endswith(".egg-info") and p.suffix != ".so" and p.name != "_compiled.json")
    for p in files:
        h.update(f"{p.relative_to(ROOT)}\0".encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def install(venv: Path, force: bool) -> tuple[Path, str]:
    """The checkout installed with ``pip install .`` into ``venv`` (made once; installed again
    when the checkout changed): its ``fivenines`` command, and the data plane it loads."""
    stamp = venv / ".fivenines-checkout"
    want = checkout_digest()
    python = venv / "bin" / "python"
    if force or not python.exists() or not stamp.exists() or stamp.read_text() != want:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        print(f"proxy bench: pip install . into {venv.relative_to(ROOT)} (builds the data plane)...", flush=True)
        stamp.unlink(missing_ok=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", str(ROOT)], check=True, cwd=venv)
        stamp.write_text(want)
    else:
        print(f"proxy bench: {venv.relative_to(ROOT)} has this checkout installed", flush=True)
    return venv / "bin" / "fivenines", data_plane_of(python, venv)


def install_revision(rev: str, force: bool) -> tuple[Path, str, str]:
    """Git revision ``rev`` of this repository installed as users install it, into a venv of its own
    (``build/bench-venv-REV``; made again when ``rev`` names another commit): its ``fivenines``
    command, the data plane it loads and the commit.

    The revision's tree is ``git archive``d into ``build/bench-src-REV``. A revision whose build
    backend compiles the data plane (it has ``setup.py``) gets ``pip install .``; an older one,
    which compiled only in a checkout, gets ``pip install -e`` of that tree and its own
    ``scripts/compile`` (as ``make compile`` did then), so that both builds compared are compiled.
    """
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True,
                         text=True).stdout.strip()
    if not sha:
        sys.exit(f"proxy_bench: --baseline {rev}: not a commit of {ROOT}")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", rev)
    venv, tree = ROOT / "build" / f"bench-venv-{name}", ROOT / "build" / f"bench-src-{name}"
    stamp = venv / ".fivenines-commit"
    python = venv / "bin" / "python"
    if force or not python.exists() or not stamp.exists() or stamp.read_text() != sha:
        print(f"proxy bench: installing {rev} ({sha[:10]}) into {venv.relative_to(ROOT)}...", flush=True)
        shutil.rmtree(venv, ignore_errors=True)
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", "--format=tar", sha], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        if (tree / "setup.py").exists():
            subprocess.run([*pip, str(tree)], check=True, cwd=venv)
        else:
            subprocess.run([*pip, "mypy", "-e", str(tree)], check=True, cwd=venv)
            if (tree / "scripts" / "compile").exists():
                subprocess.run([str(python), str(tree / "scripts" / "compile"), "--strict"], check=True, cwd=tree)
        stamp.write_text(sha)
    else:
        print(f"proxy bench: {venv.relative_to(ROOT)} has {rev} ({sha[:10]}) installed", flush=True)
    mode = data_plane_of(python, venv)
    return venv / "bin" / "fivenines", mode, sha


def data_plane_of(python: Path, cwd: Path) -> str:
    """The data plane the fivenines ``python`` imports loads; exits when it imports this checkout's sources."""
    out = subprocess.run([str(python), "-c", "import fivenines, fivenines.accel as a; print(fivenines.__file__); "
                          "print(a.mode())"], capture_output=True, text=True, check=True, cwd=cwd,
                         env=installed_env())
    where, mode = out.stdout.splitlines()
    if Path(where).resolve().is_relative_to(ROOT / "src"):
        sys.exit(f"proxy_bench: {python} runs fivenines from {where}, not the package installed for the bench")
    return mode


def installed_env() -> dict[str, str]:
    """The environment the installed fivenines runs in: nothing pointing into the checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


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


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()  # fields from the state on (3rd)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (fivenines' worker processes; HAProxy's threads are one process)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent[int(entry)] = int(_stat(int(entry))[1])
    tree, todo = [pid], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        tree += kids
        todo += kids
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes used so far (every thread of each)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = _stat(pid)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


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


def wait_serving(ready: Path, timeout: float = 20.0) -> str:
    """Wait until the fivenines that wrote ``ready`` serves every target (measuring before would
    measure its local 503s); the data plane its /status reports."""
    import urllib.request

    admin = json.loads(ready.read_text())["admin"]
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(f"{admin}/status", timeout=2) as r:
                st = json.loads(r.read())
            if all(len(g["serving"]) == len(g["targets"]) for g in st["target_groups"].values()):
                return str(st.get("data_plane", "?"))
        if time.monotonic() > deadline:
            raise RuntimeError("fivenines targets did not become healthy")
        time.sleep(0.1)


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
  nbthread {nbthread}
  maxconn {maxconn}
defaults
  timeout connect 3s
  timeout client 60s
  timeout server 60s
  timeout http-request 10s
  timeout http-keep-alive 60s
frontend http_in
  mode http
  bind 127.0.0.1:{http_port} defer-accept
  option http-keep-alive
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Port %[dst_port]
  unique-id-format %{{+X}}o\\ %pid-%rt
  http-request set-header X-Request-Id %[unique-id] unless {{ req.hdr(x-request-id) -m found }}
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
        self.fivenines_bin, self.installed_mode = install(args.venv, args.reinstall)
        self.baseline_bin: Path | None = None  # --baseline REV: that revision's fivenines, and its commit
        self.baseline_mode, self.baseline_sha = "", ""
        if args.baseline:
            self.baseline_bin, self.baseline_mode, self.baseline_sha = install_revision(args.baseline, args.reinstall)
        self.ports: dict[str, int] = {}
        self.pids: dict[str, int] = {}
        self.fivenines: subprocess.Popen[bytes] | None = None
        self.configs: dict[str, str] = {}  # contender -> its configuration, as given to it
        self.data_plane: dict[str, str] = {}  # fivenines contender -> data_plane from its /status

    # -- setup
    def start_backends(self) -> None:
        os.chmod(self.dir, 0o755)  # nginx workers may run as another user
        big = self.dir / "big.bin"
        with big.open("wb") as f:  # sparse: costs no disk
            f.truncate(self.args.stream_mb << 20)
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

    def start_haproxy(self, key: str = "haproxy", nbthread: int = 1, cpus: set[int] | str | None = "proxy") -> None:
        self.ports[f"{key}_http"], self.ports[f"{key}_tcp"] = free_port(), free_port()
        conf = self.dir / f"{key}.cfg"
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        text = HAPROXY_CONF.format(http_port=self.ports[f"{key}_http"], tcp_port=self.ports[f"{key}_tcp"],
                                   a=self.ports["a"], b=self.ports["b"], nbthread=nbthread,
                                   maxconn=max(1000, min(30000, (nofile - 200) // 2)))
        conf.write_text(text)
        self.configs[key] = text.strip()
        p = self.procs.start([self.haproxy, "-f", str(conf)], self.dir / f"{key}.log",
                             self.proxy_cpus if cpus == "proxy" else cpus)  # type: ignore[arg-type]
        wait_port(self.ports[f"{key}_http"])
        self.pids[key] = p.pid

    def start_fivenines(self, tag: str = "", sink: int | None = None, workers: int = 1,
                        cpus: set[int] | str | None = "proxy", key: str = "fivenines",
                        binary: Path | None = None) -> subprocess.Popen[bytes]:
        """``fivenines up`` of the installed package (never the source tree), or of ``binary`` (the baseline's)."""
        http_port, tcp_port = free_port(), free_port()
        self.ports[f"{key}_http"], self.ports[f"{key}_tcp"] = http_port, tcp_port
        spec = fivenines_spec(self.ports["a"], self.ports["b"], http_port, tcp_port, self.dir / f"state{tag}",
                              sink, workers)
        path = self.dir / f"fivenines{tag}.json"
        path.write_text(json.dumps(spec))  # JSON is YAML
        self.configs.setdefault(key, json.dumps(spec))
        ready = self.dir / f"ready{tag}.json"
        p = self.procs.start([str(binary or self.fivenines_bin), "up", str(path), "--ready-file", str(ready),
                              "--log-level", "warning"], self.dir / f"fivenines{tag}.log",
                             self.proxy_cpus if cpus == "proxy" else cpus,  # type: ignore[arg-type]
                             cwd=self.dir, env=installed_env())
        deadline = time.monotonic() + 20
        while not ready.exists():
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fivenines did not start:\n{(self.dir / f'fivenines{tag}.log').read_text()}")
            time.sleep(0.05)
        self.data_plane.setdefault(key, wait_serving(ready))
        self.pids[key] = p.pid
        if key == "fivenines":
            self.fivenines = p
        return p

    # -- wrk
    def wrk(self, url: str, duration: float, close: bool) -> dict[str, Any]:
        argv = [self.wrk_bin, "-t", str(self.args.threads), "-c", str(self.args.connections), "-d", f"{max(1, round(duration))}s",
                "--latency", "--timeout", "5s"]
        if close:
            argv += ["-H", "Connection: close"]
        argv.append(url)
        out = subprocess.run(argv, capture_output=True, text=True, check=True, preexec_fn=pinner(self.other_cpus),
                             timeout=duration + 30).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        lat = {m.group(1): _ms(m.group(2)) for m in re.finditer(r"^\s+(50|75|90|99)%\s+([\d.]+\w+)", out, re.M)}
        errors = re.search(r"Socket errors: (.*)", out)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        return {"rps": rps, "requests": requests, "p50_ms": lat.get("50", 0.0), "p99_ms": lat.get("99", 0.0),
                "errors": errors.group(1) if errors else "", "non_2xx": int(non2xx.group(1)) if non2xx else 0}

    def plan(self) -> dict[str, tuple[bool, dict[str, tuple[str, str | None]]]]:
        """scenario -> (new connection per request, contender -> (URL, key of the proxy's pid))."""
        p = self.ports

        def url(key: str) -> str:
            return f"http://127.0.0.1:{p[key]}/"

        plan = {
            "keepalive": (False, {"direct": (url("a"), None), "haproxy": (url("haproxy_http"), "haproxy"),
                                  "fivenines": (url("fivenines_http"), "fivenines")}),
            "new_connection": (True, {"direct": (url("a"), None), "haproxy": (url("haproxy_http"), "haproxy"),
                                      "fivenines": (url("fivenines_http"), "fivenines")}),
            "tcp": (False, {"direct": (url("a"), None), "haproxy": (url("haproxy_tcp"), "haproxy"),
                            "fivenines": (url("fivenines_tcp"), "fivenines")}),
        }
        if "baseline_http" in p:  # the baseline revision's build, interleaved with the others
            for scenario, (_, by) in plan.items():
                by["baseline"] = (url("baseline_tcp" if scenario == "tcp" else "baseline_http"), "baseline")
        if "fivenines2_http" in p:
            plan["workers2"] = (False, {"haproxy": (url("haproxy2_http"), "haproxy2"),
                                        "fivenines": (url("fivenines2_http"), "fivenines2")})
        if self.args.scenarios:
            plan = {s: v for s, v in plan.items() if s in self.args.scenarios}
        return plan

    def measure(self) -> dict[str, Any]:
        plan = self.plan()
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {s: {c: [] for c in by} for s, (_, by) in plan.items()}
        for rnd in range(self.args.rounds):
            for scenario, (close, by) in plan.items():
                contenders = list(by)
                order = contenders[rnd % len(contenders):] + contenders[:rnd % len(contenders)]  # who goes first
                for c in order:
                    target, key = by[c]
                    self.wrk(target, 1.0, close)  # warm-up (pools, caches)
                    pids = process_tree(self.pids[key]) if key else []
                    cpu0 = cpu_seconds(pids)
                    t0 = time.monotonic()
                    r: dict[str, Any] = dict(self.wrk(target, self.args.duration, close))
                    if key:
                        cpu = cpu_seconds(pids) - cpu0
                        r["proxy_processes"] = len(pids)
                        r["proxy_cpu_s"] = cpu
                        r["proxy_cpu_pct"] = 100 * cpu / (time.monotonic() - t0)
                        r["req_per_cpu_s"] = r["requests"] / cpu if cpu > 0 else 0.0
                    runs[scenario][c].append(r)
                    print(f"  round {rnd + 1} {scenario:15} {c:10} {r['rps']:>10.0f} rps  p50 {r['p50_ms']:.2f} ms"
                          f"  p99 {r['p99_ms']:.2f} ms"
                          + (f"  cpu {r['proxy_cpu_pct']:.0f}% {r['req_per_cpu_s']:.0f} req/CPU-s" if key else "")
                          + (f"  errors {r['errors']}" if r["errors"] else ""), flush=True)
        summary: dict[str, Any] = {}
        for scenario, by_contender in runs.items():
            summary[scenario] = {}
            for c, rs in by_contender.items():
                summary[scenario][c] = {
                    k: statistics.median(r.get(k, 0.0) for r in rs)
                    for k in ("rps", "p50_ms", "p99_ms", "proxy_cpu_pct", "req_per_cpu_s")
                } | {"runs": rs}
            f, h = summary[scenario]["fivenines"], summary[scenario]["haproxy"]
            summary[scenario]["ratio"] = {k: f[k] / h[k] if h[k] else 0.0 for k in ("rps", "req_per_cpu_s", "p99_ms")}
            if "baseline" in summary[scenario]:
                b = summary[scenario]["baseline"]
                summary[scenario]["ratio_baseline"] = {k: f[k] / b[k] if b[k] else 0.0
                                                       for k in ("rps", "req_per_cpu_s", "p99_ms")}
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
        p = self.start_fivenines("-stream", sink.port, key="stream")
        pid = p.pid
        size = self.args.stream_mb << 20
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
        down = _download(self.ports["stream_http"], "/big.bin")
        t1 = time.monotonic()
        up = _upload(self.ports["stream_http"], "/upload", size)
        t2 = time.monotonic()
        stop.set()
        t.join()
        hwm = mem_kb(pid)["VmHWM"]
        self.procs.stop(p)
        sink.close()
        return {
            "bytes": size, "download_bytes": down, "download_s": t1 - t0, "upload_status": up, "upload_s": t2 - t1,
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


def judge(scenario: str, ratio: dict[str, float]) -> list[tuple[str, bool]]:
    """Each target of ``scenario``: its text and whether the ratios meet it."""
    t = TARGETS.get(scenario, {})
    got = []
    if "rps" in t:
        got.append((f"req/s >= {t['rps']}x", ratio["rps"] >= t["rps"]))
    if "per_cpu" in t:
        got.append((f"per CPU-s >= {t['per_cpu']}x", ratio["req_per_cpu_s"] >= t["per_cpu"]))
    if "p99" in t:
        got.append((f"p99 <= {t['p99']}x", 0 < ratio["p99_ms"] <= t["p99"]))
    return got


def report(summary: dict[str, Any], idle: dict[str, Any], stream: dict[str, Any],
           baseline: str = "") -> tuple[list[str], list[bool]]:
    """The tables, and every verdict (``baseline``: the revision the ``baseline`` contender runs)."""
    lines: list[str] = []
    verdicts: list[bool] = []
    if summary:
        header = (f"{'scenario':16}{'contender':11}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'proxy CPU':>11}"
                  f"{'req/CPU-s':>11}")
        lines += [header, "-" * len(header)]
        for scenario, by in summary.items():
            for c in ("direct", "haproxy", "fivenines", "baseline"):
                if c not in by:
                    continue
                r = by[c]
                cpu, eff = ((f"{r['proxy_cpu_pct']:.0f}%", f"{r['req_per_cpu_s']:.0f}") if c != "direct" else ("-", "-"))
                lines.append(f"{scenario:16}{c:11}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{cpu:>11}{eff:>11}")
        lines.append("")
        lines.append(f"{'fivenines / HAProxy':22}{'req/s':>8}{'per CPU-s':>11}{'p99':>8}   targets")
        for scenario, by in summary.items():
            ratio = by["ratio"]
            got = judge(scenario, ratio)
            verdicts += [ok for _, ok in got]
            lines.append(f"{scenario:22}{ratio['rps']:>7.2f}x{ratio['req_per_cpu_s']:>10.2f}x{ratio['p99_ms']:>7.2f}x   "
                         + ", ".join(f"{text} {verdict(ok)}" for text, ok in got))
        lines.append("")
        if baseline:
            lines.append(f"{'fivenines / ' + baseline:22}{'req/s':>8}{'per CPU-s':>11}{'p99':>8}   "
                         f"targets (this build costs at most {1 - BASELINE_MIN_RATIO:.0%})")
            for scenario, by in summary.items():
                if "ratio_baseline" not in by:
                    continue
                ratio = by["ratio_baseline"]
                got = [(f"req/s >= {BASELINE_MIN_RATIO}x", ratio["rps"] >= BASELINE_MIN_RATIO),
                       (f"per CPU-s >= {BASELINE_MIN_RATIO}x", ratio["req_per_cpu_s"] >= BASELINE_MIN_RATIO)]
                verdicts += [ok for _, ok in got]
                lines.append(f"{scenario:22}{ratio['rps']:>7.3f}x{ratio['req_per_cpu_s']:>10.3f}x"
                             f"{ratio['p99_ms']:>7.2f}x   " + ", ".join(f"{text} {verdict(ok)}" for text, ok in got))
            lines.append("")
    if idle:
        ok = idle["rss_mb"] < MEMORY_TARGETS["idle_10k_rss_mb"] and idle["answered"] == idle["connections"]
        verdicts.append(ok)
        lines.append(f"{idle['connections']:,} idle keep-alive connections: RSS {idle['rss_mb']:.1f} MB "
                     f"(before: {idle['rss_before_mb']:.1f} MB; {idle['answered']}/{idle['connections']} answered)  "
                     f"< {MEMORY_TARGETS['idle_10k_rss_mb']:.0f} MB {verdict(ok)}")
    if stream:
        ok = stream["growth_mb"] < MEMORY_TARGETS["stream_1gb_growth_mb"] and stream["download_bytes"] == stream["bytes"]
        verdicts.append(ok)
        size = f"{stream['bytes'] / GB:g} GB" if stream["bytes"] >= GB else f"{stream['bytes'] >> 20} MB"
        lines.append(f"{size} download ({stream['download_s']:.1f} s) + {size} upload ({stream['upload_s']:.1f} s, "
                     f"{stream['upload_status']}): RSS {stream['rss_before_mb']:.1f} MB -> peak "
                     f"{stream['vm_hwm_mb']:.1f} MB, growth {stream['growth_mb']:.1f} MB  "
                     f"< {MEMORY_TARGETS['stream_1gb_growth_mb']:.0f} MB {verdict(ok)}")
    return lines, verdicts


def running(bench: Bench) -> str:
    """The data plane each fivenines contender reported in /status (once when all agree)."""
    modes = set(bench.data_plane.values())
    if len(modes) == 1:
        return f"data plane {modes.pop()} (every fivenines contender)"
    return "data plane " + ", ".join(f"{k}: {v}" for k, v in bench.data_plane.items())


def configurations(bench: Bench, args: argparse.Namespace) -> list[str]:
    """What each contender ran with, as given to it."""
    lines = ["configurations:"]
    for key, text in bench.configs.items():
        lines.append(f"  {key}:")
        lines += [f"    {line}" for line in text.splitlines()]
    lines.append(f"  nginx (both backends): worker_processes 1, keepalive_requests 10000000, access_log off, "
                 f"CPUs {sorted(bench.other_cpus) if bench.other_cpus else 'any'}")
    lines.append(f"  wrk: -t{args.threads} -c{args.connections} -d{args.duration:g}s --latency (1 s warm-up first), "
                 f"CPUs {sorted(bench.other_cpus) if bench.other_cpus else 'any'}, the same for every contender")
    pinned = sorted(bench.proxy_cpus) if bench.proxy_cpus else "any"
    lines.append(f"  workers: 1 / nbthread 1 on CPUs {pinned}; workers: 2 / nbthread 2 on any CPU: there the proxies "
                 f"share the cores with nginx and wrk, which run alike (same CPUs, threads and connections) for "
                 f"both, interleaved round by round with the order rotated")
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
        "pinned": {"proxy": sorted(bench.proxy_cpus or []), "nginx_and_wrk": sorted(bench.other_cpus or []),
                   "workers2": "proxies on any CPU; nginx and wrk as above"},
        "fivenines": str(bench.fivenines_bin),
        "installed_data_plane": bench.installed_mode,
        "baseline": {"rev": args.baseline, "commit": bench.baseline_sha, "fivenines": str(bench.baseline_bin),
                     "installed_data_plane": bench.baseline_mode} if args.baseline else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (default 5)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are reported (default 5)")
    ap.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    ap.add_argument("--idle", type=int, default=10000, help="idle keep-alive connections to hold (default 10000)")
    ap.add_argument("--stream-mb", type=int, default=1024, help="size streamed each way, in MiB (default 1024)")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="do not pin the proxy to CPU 0 and nginx + wrk to the others")
    ap.add_argument("--no-workers2", dest="workers2", action="store_false",
                    help="skip fivenines workers: 2 against HAProxy nbthread 2")
    ap.add_argument("--scaling", type=int, default=0, metavar="N",
                    help="also compare fivenines with N workers against 1 worker (keep-alive, unpinned)")
    ap.add_argument("--venv", type=Path, default=VENV,
                    help=f"the venv the checkout is installed into (default {VENV.relative_to(ROOT)})")
    ap.add_argument("--reinstall", action="store_true", help="pip install . again even when the venv is current")
    ap.add_argument("--baseline", metavar="REV",
                    help="also run git revision REV, installed in build/bench-venv-REV, interleaved with the others, "
                         f"and print this build / REV's build (judged >= {BASELINE_MIN_RATIO}x)")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (configs, logs)")
    ap.add_argument("--only", choices=["throughput", "idle", "stream"], help="run one part only")
    ap.add_argument("--scenarios", type=lambda v: v.split(","), metavar="A,B",
                    help=f"run these throughput scenarios only (of {', '.join(TARGETS)})")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run, not a measurement: 1 round of 2 s, 2,000 idle connections, 128 MiB streamed")
    args = ap.parse_args(argv)
    if args.scenarios and set(args.scenarios) - set(TARGETS):
        ap.error(f"--scenarios: {', '.join(sorted(set(args.scenarios) - set(TARGETS)))} unknown; "
                 f"the scenarios are {', '.join(TARGETS)}")
    if args.quick:
        args.rounds, args.duration, args.idle, args.stream_mb = 1, 2.0, min(args.idle, 2000), min(args.stream_mb, 128)
    args.venv = args.venv.resolve()
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
        if bench.baseline_bin is not None and args.only in (None, "throughput"):
            bench.start_fivenines("-baseline", key="baseline", binary=bench.baseline_bin)
        if args.workers2 and args.only in (None, "throughput"):
            bench.start_haproxy("haproxy2", nbthread=2, cpus=None)
            bench.start_fivenines("-workers2", workers=2, cpus=None, key="fivenines2")
        env = environment(args, bench)
        print(f"proxy bench: {env['cpus']} CPUs, load {env['loadavg_at_start'][0]:.2f}, pinned {env['pinned']}, "
              f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s x {args.rounds} rounds", flush=True)
        print(f"fivenines installed in {args.venv} ({bench.fivenines_bin}): {running(bench)}", flush=True)
        if bench.baseline_bin is not None:
            print(f"baseline: {args.baseline} ({bench.baseline_sha[:10]}) from {bench.baseline_bin}, data plane "
                  f"{bench.data_plane.get('baseline', bench.baseline_mode)}", flush=True)
        if any(mode != "compiled" for mode in bench.data_plane.values()):
            print("WARNING: the installed fivenines runs its data plane from source: these are not the "
                  "compiled data plane's numbers", flush=True)
        print("\n".join(configurations(bench, args)), flush=True)
        summary: dict[str, Any] = {}
        idle: dict[str, Any] = {}
        stream: dict[str, Any] = {}
        if args.only in (None, "throughput"):
            summary = bench.measure()
        if args.only in (None, "idle"):
            print(f"  holding {args.idle} idle keep-alive connections...", flush=True)
            idle = bench.idle_connections(args.idle)
        if args.only in (None, "stream"):
            print(f"  streaming {args.stream_mb} MiB each way...", flush=True)
            stream = bench.stream()
        scaling: dict[str, Any] = {}
        if args.scaling:
            scaling = bench.scaling(args.scaling)
    finally:
        bench.close()
    label = ""
    if args.baseline:
        label = args.baseline if bench.baseline_sha.startswith(args.baseline) else f"{args.baseline} ({bench.baseline_sha[:7]})"
    lines, verdicts = report(summary, idle, stream, label)
    if scaling:
        lines.append(f"workers: {scaling['workers']} (unpinned, keep-alive): {scaling['rps'][str(scaling['workers'])]:.0f} "
                     f"req/s vs {scaling['rps']['1']:.0f} with 1 worker ({scaling['speedup']:.2f}x)")
    lines.append(f"{running(bench)} (installed with pip install . in {args.venv})")
    lines.append(f"targets met: {sum(verdicts)} of {len(verdicts)}"
                 + ("  (SMOKE RUN with --quick: not a measurement)" if args.quick else ""))
    print()
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / time.strftime("proxy-%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps({"environment": env, "targets": TARGETS, "memory_targets": MEMORY_TARGETS,
                               "quick": args.quick, "data_plane": bench.data_plane, "configurations": bench.configs,
                               "throughput": summary, "idle_connections": idle, "stream": stream,
                               "scaling": scaling, "table": lines}, indent=2))
    met = all(verdicts)
    print(f"\nwritten to {out.relative_to(ROOT)}" + ("" if met else "; some targets not met"))
    return 0 if met or args.quick else 1  # as bench/tls_bench.py: make bench fails when a target is missed


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
