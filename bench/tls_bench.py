#!/usr/bin/env python3
"""fivenines' https listener against HAProxy's, in one run (``make tls-bench``; ``--quick``: a smoke run).

The same ECDSA P-256 certificate (made here with ``openssl req``) and the same policy
(``ELBSecurityPolicy-TLS13-1-2-2021-06``: TLS 1.2 and 1.3, AWS's ciphers in AWS's order) in
front of one nginx backend; HAProxy with ``nbthread 1``, fivenines with ``workers: 1``, each
pinned to CPU 0 (nginx and the load generators on the others), measured round by round,
interleaved (the order alternates) so that drifting load on a shared machine hits both alike:

  (a) ``keepalive``: HTTPS keep-alive GET with wrk: requests/s and p99;
  (b) ``new_tls``: a new connection and handshake per request (wrk, ``Connection: close``;
      wrk offers each new connection the session of its previous one, so with TLS 1.3 tickets
      each handshake after the first is a resumption, if the server gave a fresh ticket on
      the last one: both do): requests/s and p99;
  (c) ``handshakes_resumed`` / ``handshakes_full``: new TLS connections per second, with
      session resumption (``openssl s_time -reuse``: tickets, the session of the first
      connection) and without (``s_time -new``), a few s_time processes in parallel.

Prints both configurations, each figure, and the fivenines/HAProxy ratios judged against
issue 19's targets (TARGETS); writes ``bench/results/tls.json``. The fivenines measured is
the installed package (``pip install .`` into build/bench-venv, as ``make bench``), or with
``--dev`` (the default of ``--quick``) the checkout's venv.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proxy_bench import (  # (bench/ is not a package: its folder is on sys.path)
    NGINX_CONF,
    RESULTS,
    ROOT,
    VENV,
    Procs,
    _ms,
    free_port,
    install,
    installed_env,
    need,
    pinner,
    raise_nofile,
    wait_port,
)

POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
# fivenines / HAProxy (issue 19): req/s and handshakes/s ratio >= rate, p99 ratio <= p99
TARGETS: dict[str, dict[str, float]] = {
    "keepalive": {"rate": 0.8, "p99": 1.5},
    "new_tls": {"rate": 0.8, "p99": 1.5},
    "handshakes_resumed": {"rate": 0.8},
    "handshakes_full": {"rate": 0.8},
}

HAPROXY_CONF = """
global
  nbthread 1
  maxconn 5000
  tune.ssl.default-dh-param 2048
defaults
  mode http
  timeout connect 3s
  timeout client 60s
  timeout server 60s
  timeout http-request 10s
  timeout http-keep-alive 60s
frontend https_in
  bind 127.0.0.1:{port} ssl crt {pem} alpn http/1.1 ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3 ciphers {ciphers} ciphersuites {suites}
  option http-keep-alive
  option forwardfor
  http-request set-header X-Forwarded-Proto https
  http-request set-header X-Forwarded-Port %[dst_port]
  unique-id-format %{{+X}}o\\ %pid-%rt
  http-request set-header X-Request-Id %[unique-id] unless {{ req.hdr(x-request-id) -m found }}
  default_backend web
backend web
  balance roundrobin
  http-reuse always
  server a 127.0.0.1:{backend}
"""


def policy_strings() -> tuple[str, str]:
    """The policy's TLS 1.2 cipher list and TLS 1.3 suites, as OpenSSL (and HAProxy) spell them."""
    from fivenines.core.tls import policy

    p = policy(POLICY)
    suites = [c for c in p.ciphers if c.startswith("TLS_")]
    return ":".join(c for c in p.ciphers if c not in suites), ":".join(suites)


def make_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """An ECDSA P-256 certificate for bench.test and 127.0.0.1: (cert, key, cert+key for HAProxy)."""
    cert, key, both = folder / "bench.pem", folder / "bench.key", folder / "bench-haproxy.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=bench.test",
                    "-addext", "subjectAltName=DNS:bench.test,IP:127.0.0.1"], check=True, capture_output=True)
    both.write_bytes(cert.read_bytes() + key.read_bytes())
    return cert, key, both


class TlsBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="fivenines-tls-bench-"))
        self.procs = Procs()
        ncpu = os.cpu_count() or 1
        self.proxy_cpus = {0} if args.pin and ncpu >= 2 else None
        self.other_cpus = set(range(1, ncpu)) if args.pin and ncpu >= 2 else None
        self.nginx, self.haproxy, self.wrk_bin, self.openssl = need("nginx"), need("haproxy"), need("wrk"), need("openssl")
        if args.dev:
            self.fivenines = [sys.executable, "-m", "fivenines"]
            from fivenines import accel

            self.mode = accel.mode()
            self.env = dict(os.environ)
        else:
            binary, self.mode = install(args.venv, False)
            self.fivenines, self.env = [str(binary)], installed_env()
        self.ports: dict[str, int] = {}
        self.configs: dict[str, str] = {}

    def start(self) -> None:
        cert, key, both = make_certificate(self.dir)
        os.chmod(self.dir, 0o755)
        backend = free_port()
        for sub in ("body", "proxy", "fcgi", "uwsgi", "scgi"):
            (self.dir / f"{sub}-a").mkdir(exist_ok=True)
        conf = self.dir / "nginx-a.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, name="a", port=backend))
        self.procs.start([self.nginx, "-c", str(conf), "-p", str(self.dir), "-e", str(self.dir / "nginx-a.err")],
                         self.dir / "nginx-a.log", self.other_cpus)
        wait_port(backend)
        ciphers, suites = policy_strings()
        self.ports["haproxy"] = free_port()
        text = HAPROXY_CONF.format(port=self.ports["haproxy"], pem=both, ciphers=ciphers, suites=suites,
                                   backend=backend)
        (self.dir / "haproxy.cfg").write_text(text)
        self.configs["haproxy"] = text.strip()
        self.procs.start([self.haproxy, "-f", str(self.dir / "haproxy.cfg")], self.dir / "haproxy.log", self.proxy_cpus)
        wait_port(self.ports["haproxy"])
        self.ports["fivenines"] = free_port()
        spec = {"name": "tlsbench", "admin": {"listen": "127.0.0.1:0"}, "state_dir": str(self.dir / "state"),
                "listeners": [{"port": self.ports["fivenines"], "protocol": "https", "default_target_group": "web",
                               "ssl_policy": POLICY, "certificates": [{"cert": str(cert), "key": str(key)}]}],
                "target_groups": {"web": {"targets": [f"127.0.0.1:{backend}"],
                                          "health_check": {"path": "/health", "interval": "1s"}}}}
        path = self.dir / "fivenines.json"
        path.write_text(json.dumps(spec, indent=1))
        self.configs["fivenines"] = json.dumps(spec, indent=1)
        ready = self.dir / "ready.json"
        p = self.procs.start([*self.fivenines, "up", str(path), "--ready-file", str(ready), "--log-level", "warning"],
                             self.dir / "fivenines.log", self.proxy_cpus, cwd=self.dir, env=self.env)
        deadline = time.monotonic() + 30
        while not ready.exists():
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fivenines did not start:\n{(self.dir / 'fivenines.log').read_text()}")
            time.sleep(0.05)
        admin = json.loads(ready.read_text())["admin"]
        while True:
            with urllib.request.urlopen(f"{admin}/status", timeout=2) as r:
                st = json.loads(r.read())
            if st["target_groups"]["web"]["serving"]:
                self.mode = st.get("data_plane", self.mode)
                break
            if time.monotonic() > deadline:
                raise RuntimeError("fivenines' target did not become healthy")
            time.sleep(0.1)

    def check_answers(self) -> None:
        """Each proxy answers 200 to what the load generators send (s_time: ``GET / HTTP/1.0`` with
        no Host; wrk: HTTP/1.1 with Host and ``Connection: close``): a rate of error replies or
        of requests the proxy could not forward measures nothing."""
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        for who, port in self.ports.items():
            for request in (b"GET / HTTP/1.0\r\n\r\n",
                            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n" % port):
                with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                        ctx.wrap_socket(raw, server_hostname="bench.test") as s:
                    s.sendall(request)
                    answer = b""
                    while chunk := s.recv(65536):
                        answer += chunk
                if not answer.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 ")):
                    raise RuntimeError(f"{who} answered {answer[:80]!r} to {request!r}: nothing to measure")

    # -- load generators
    def wrk(self, port: int, close: bool) -> dict[str, Any]:
        a = self.args
        argv = [self.wrk_bin, "-t", "1", "-c", str(a.connections), "-d", f"{max(1, round(a.duration))}s",
                "--latency", "--timeout", "5s"]
        if close:
            argv += ["-H", "Connection: close"]
        out = subprocess.run([*argv, f"https://127.0.0.1:{port}/"], capture_output=True, text=True, check=True,
                             preexec_fn=pinner(self.other_cpus), timeout=a.duration + 30).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        lat = {m.group(1): _ms(m.group(2)) for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M)}
        errors = re.search(r"Socket errors: (.*)", out)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if non2xx:
            raise RuntimeError(f"port {port}: {non2xx.group(1)} answers were not 2xx: the proxy did not serve them")
        return {"rate": rps, "p50_ms": lat.get("50", 0.0), "p99_ms": lat.get("99", 0.0),
                "errors": errors.group(1) if errors else ""}

    def s_time(self, port: int, reuse: bool) -> dict[str, Any]:
        """``openssl s_time`` processes in parallel: new TLS connections per second (each GETs /)."""
        a = self.args
        seconds = max(1, round(a.duration))
        argv = [self.openssl, "s_time", "-connect", f"127.0.0.1:{port}", "-www", "/", "-time", str(seconds),
                "-reuse" if reuse else "-new"]
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                  preexec_fn=pinner(self.other_cpus)) for _ in range(a.handshake_clients)]
        total = 0.0
        for p in procs:
            out, _ = p.communicate(timeout=seconds + 30)
            m = re.search(r"(\d+) connections in (\d+) real seconds", out)
            if m and int(m.group(2)) > 0:
                total += int(m.group(1)) / int(m.group(2))
        return {"rate": total}

    def run(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        scenarios = {
            "keepalive": lambda port: self.wrk(port, close=False),
            "new_tls": lambda port: self.wrk(port, close=True),
            "handshakes_resumed": lambda port: self.s_time(port, reuse=True),
            "handshakes_full": lambda port: self.s_time(port, reuse=False),
        }
        results: dict[str, dict[str, list[dict[str, Any]]]] = {s: {"haproxy": [], "fivenines": []} for s in scenarios}
        for rnd in range(self.args.rounds):
            order = ["haproxy", "fivenines"] if rnd % 2 == 0 else ["fivenines", "haproxy"]
            for name, measure in scenarios.items():
                for who in order:
                    r = measure(self.ports[who])
                    results[name][who].append(r)
                    p99 = f", p99 {r['p99_ms']:.2f} ms" if "p99_ms" in r else ""
                    print(f"  round {rnd + 1} {name:<19} {who:<9} {r['rate']:9.0f}/s{p99}", flush=True)
        return results


def median(rows: list[dict[str, Any]], key: str) -> float:
    vals = sorted(r[key] for r in rows)
    return vals[len(vals) // 2] if vals else 0.0


def summarise(results: dict[str, dict[str, list[dict[str, Any]]]]) -> tuple[dict[str, Any], bool]:
    summary: dict[str, Any] = {}
    ok = True
    print("\nmedians over the rounds (fivenines / HAProxy, target):")
    for name, per in results.items():
        f, h = per["fivenines"], per["haproxy"]
        row: dict[str, Any] = {"fivenines_rate": median(f, "rate"), "haproxy_rate": median(h, "rate")}
        row["rate_ratio"] = row["fivenines_rate"] / row["haproxy_rate"] if row["haproxy_rate"] else 0.0
        line = (f"  {name:<19} {row['fivenines_rate']:9.0f}/s vs {row['haproxy_rate']:9.0f}/s = "
                f"{row['rate_ratio']:.2f}x (>= {TARGETS[name]['rate']})")
        good = row["rate_ratio"] >= TARGETS[name]["rate"]
        if "p99" in TARGETS[name]:
            row["fivenines_p99_ms"], row["haproxy_p99_ms"] = median(f, "p99_ms"), median(h, "p99_ms")
            row["p99_ratio"] = row["fivenines_p99_ms"] / row["haproxy_p99_ms"] if row["haproxy_p99_ms"] else 0.0
            line += (f"; p99 {row['fivenines_p99_ms']:.2f} vs {row['haproxy_p99_ms']:.2f} ms = "
                     f"{row['p99_ratio']:.2f}x (<= {TARGETS[name]['p99']})")
            good = good and row["p99_ratio"] <= TARGETS[name]["p99"]
        row["met"] = good
        ok = ok and good
        summary[name] = row
        print(line + ("  ok" if good else "  BELOW TARGET"))
    return summary, ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3; medians reported)")
    ap.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    ap.add_argument("--handshake-clients", type=int, default=4, help="parallel openssl s_time (default 4)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round of 1 s, few clients, the checkout's venv")
    ap.add_argument("--dev", action="store_true", help="run the checkout's venv's fivenines, not build/bench-venv")
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin the proxies to CPU 0")
    ap.add_argument("--venv", type=Path, default=VENV, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.connections, args.handshake_clients, args.dev = 1.0, 1, 10, 1, True
    raise_nofile()
    bench = TlsBench(args)
    try:
        bench.start()
        bench.check_answers()
        print(f"tls bench: fivenines ({bench.mode}) vs HAProxy, {POLICY}, ECDSA P-256; "
              f"{args.rounds} round(s) of {args.duration:g} s, wrk -t1 -c{args.connections}, "
              f"{args.handshake_clients} s_time client(s); proxies on {sorted(bench.proxy_cpus or []) or 'any CPU'}")
        for who, text in bench.configs.items():
            print(f"\n--- {who} configuration ---\n{text}")
        print()
        results = bench.run()
        summary, ok = summarise(results)
    finally:
        bench.procs.stop_all()
        shutil.rmtree(bench.dir, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("tls-quick.json" if args.quick else "tls.json")
    out.write_text(json.dumps({"policy": POLICY, "data_plane": bench.mode, "args": {k: str(v) for k, v in vars(args).items()},
                               "configs": bench.configs, "rounds": results, "summary": summary}, indent=1))
    print(f"\nwritten to {out.relative_to(ROOT)}" + ("" if ok else "; some targets not met"))
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
