"""What the per-target metrics hooks cost on the hot path, measured with wrk.

Runs one nginx backend (a fixed 200 answer) and fivenines in front of it, from this
tree and, with ``--baseline-src``, from another source tree (e.g. ``main`` without
the hooks: ``git archive main src | tar -x -C /tmp/fn-main``). The contenders are
measured in interleaved rounds (A B A B ...) so that the noise of a shared machine
falls on both; it prints requests/s, p50/p99 latency and the CPU time the proxy
process used per request (user + system, from /proc: much less sensitive to other
load on the machine than requests/s) per round, the medians and ratios, and writes
them as JSON.

    python bench/metrics_overhead.py --baseline-src /tmp/fn-main/src --rounds 3 --duration 5

Needs nginx and wrk (``scripts/install-test-deps --bench`` installs them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port} after {timeout}s")


def need(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path is None:
        raise SystemExit(f"{binary} is not installed: run scripts/install-test-deps --bench")
    return path


def start_nginx(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.err warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok\\n"; }} }}
}}
""")
    proc = subprocess.Popen([need("nginx"), "-c", str(conf), "-p", str(tmp)])
    wait_port(port)
    return proc


def start_fivenines(tmp: Path, src: Path, backend: int, name: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    spec = tmp / f"{name}.yaml"
    spec.write_text(json.dumps({
        "name": name, "admin": {"listen": "127.0.0.1:0"}, "state_dir": str(tmp / f"state-{name}"),
        "listeners": [{"port": port, "default_target_group": "web"}],
        "target_groups": {"web": {"targets": [f"127.0.0.1:{backend}"],
                                  "health_check": {"interval": "1s", "timeout": "500ms", "healthy_threshold": 1}}},
    }))
    env = dict(os.environ, PYTHONPATH=str(src))
    log = (tmp / f"{name}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "fivenines", "up", str(spec), "--log-level", "warning"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_port(port)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # until the target is healthy (no 503)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    break
        except OSError:
            pass
        time.sleep(0.1)
    return proc, port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port: int, duration: float, connections: int, pid: int | None = None) -> dict[str, float]:
    cpu0 = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run([need("wrk"), "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    cpu_us = (cpu_seconds(pid) - cpu0) / total * 1e6 if pid else 0.0
    return {"rps": rps, "p50_ms": pct("50"), "p99_ms": pct("99"), "cpu_us_per_req": cpu_us,
            "non_2xx": float(errors.group(1)) if errors else 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-src", type=Path, help="src/ folder of the tree to compare with (e.g. main)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "metrics_overhead.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fivenines-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        backend = free_port()
        procs.append(start_nginx(tmp, backend))
        contenders: dict[str, int] = {}
        pids: dict[str, int | None] = {}
        p, port = start_fivenines(tmp, SRC, backend, "this")
        procs.append(p)
        contenders["this tree"], pids["this tree"] = port, p.pid
        if args.baseline_src:
            p, port = start_fivenines(tmp, args.baseline_src.resolve(), backend, "baseline")
            procs.append(p)
            contenders["baseline"], pids["baseline"] = port, p.pid
        contenders["direct (nginx)"], pids["direct (nginx)"] = backend, None
        results: dict[str, list[dict[str, float]]] = {k: [] for k in contenders}
        for port in contenders.values():
            wrk(port, 1.0, args.connections)  # warm-up
        for r in range(args.rounds):
            for name, port in contenders.items():
                res = wrk(port, args.duration, args.connections, pids[name])
                results[name].append(res)
                print(f"round {r + 1} {name:15s} {res['rps']:9.0f} req/s  p50 {res['p50_ms']:.3f} ms  "
                      f"p99 {res['p99_ms']:.3f} ms  cpu {res['cpu_us_per_req']:.2f} us/req  "
                      f"non-2xx {res['non_2xx']:.0f}", flush=True)
        summary: dict[str, Any] = {}
        for name, rs in results.items():
            summary[name] = {k: statistics.median(x[k] for x in rs)
                             for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")}
        print()
        for name, s in summary.items():
            print(f"median {name:15s} {s['rps']:9.0f} req/s  p50 {s['p50_ms']:.3f} ms  p99 {s['p99_ms']:.3f} ms  "
                  f"cpu {s['cpu_us_per_req']:.2f} us/req")
        if "baseline" in summary:
            this, base = results["this tree"], results["baseline"]
            ratio = summary["this tree"]["rps"] / summary["baseline"]["rps"]
            pairs = [a["rps"] / b["rps"] for a, b in zip(this, base, strict=True)]
            print(f"requests/s, this tree / baseline: {ratio:.3f} (per round: {', '.join(f'{x:.3f}' for x in pairs)})")
            cpu = summary["this tree"]["cpu_us_per_req"] - summary["baseline"]["cpu_us_per_req"]
            cpairs = [a["cpu_us_per_req"] - b["cpu_us_per_req"] for a, b in zip(this, base, strict=True)]
            print(f"CPU per request, this tree - baseline: {cpu:+.2f} us "
                  f"(per round: {', '.join(f'{x:+.2f}' for x in cpairs)})")
            summary["ratio_rps"] = ratio
            summary["cpu_us_per_req_delta"] = cpu
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rounds": results, "median": summary}, indent=2))
        print(f"written to {args.out}")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
