#!/usr/bin/env python3
"""Instructions per proxied request, counted by callgrind: a measure a loaded machine does not blur.

Wall-clock ratios against HAProxy (``make bench``) mean something only on a quiet machine; the
instructions a proxy executes in user space per request barely move with the load around it.
This starts two nginx backends and ``fivenines up`` (``workers: 1``, as ``make bench``) under
``valgrind --tool=callgrind``, waits until it serves both targets, then for each scenario zeroes
the counters, runs wrk for a few seconds, dumps the counters and divides the instructions counted
by the requests wrk completed (every answer must be a 2xx: a proxy's own error replies are not
what is measured). Under valgrind the proxy serves ~50x fewer requests per second, so what it
runs per unit of time (timers, the runtime's ticks) would weigh ~50x more per request than at
full speed: the same seconds are counted idle just before, and the net count subtracts them: keep-alive GET, a new connection per request, TCP mode. ``--haproxy`` counts
HAProxy (``nbthread 1``, the bench's configuration) the same way, for reference. ``--keep`` keeps
the dumps: ``callgrind_annotate --inclusive=yes callgrind.out.PID.N`` shows where they went.

What it does not count: the kernel (system calls, waking peers), which is about half of a proxied
request on loopback; and under valgrind a proxy runs ~50x slower, so more events are ready per
loop round than at full speed (per-round costs are spread thinner), and how many there are varies:
one build's net count moves by ~10% from run to run (keep-alive, -c 1: 37,250 and 29,277; -c 10
is steadier). Compare builds with --repeat and their ranges, not single counts, and counts with
counts, not with wall-clock figures.

    python bench/icount.py                    # the fivenines on PATH beside this python (a dev venv)
    python bench/icount.py --fivenines build/bench-venv/bin/fivenines --haproxy
    python bench/icount.py --https --haproxy --only https_keepalive https_new_tls   # the https listener

``--https`` adds an https listener with tls_bench's certificate (ECDSA P-256) and policy, and
HAProxy its https frontend: ``https_keepalive`` (also shown net of the full handshakes of wrk's
connections) and ``https_new_tls`` (a handshake per request: wrk offers the session of its
previous connection, so after the first these are TLS 1.3 resumptions, still with an ECDHE).
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proxy_bench import (
    HAPROXY_CONF,
    NGINX_CONF,
    Procs,
    fivenines_spec,
    free_port,
    installed_env,
    need,
    wait_port,
    wait_serving,
)
from tls_bench import HAPROXY_CONF as TLS_HAPROXY_CONF
from tls_bench import POLICY, make_certificate, policy_strings

SCENARIOS = {"keepalive": ("http", False), "new_connection": ("http", True), "tcp": ("tcp", False)}
# ``--https``: an https listener (tls_bench's certificate and policy); a handshake per new connection
HTTPS_SCENARIOS = {"https_keepalive": ("https", False), "https_new_tls": ("https", True)}


def control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def counted(out_dir: Path, pid: int, before: set[Path]) -> tuple[int, Path]:
    """The instruction count in the dump callgrind just wrote for ``pid``, and that dump."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        new = [p for p in out_dir.glob(f"callgrind.out.{pid}*") if p not in before]
        for p in new:
            m = re.search(r"^totals:\s+(\d+)", p.read_text(errors="replace"), re.M)
            if m:
                return int(m.group(1)), p
        time.sleep(0.2)
    raise RuntimeError("callgrind wrote no dump")


def handshakes_in(dump: Path) -> int:
    """Instructions spent in OpenSSL's ``SSL_do_handshake`` (inclusive) in a dump: wrk's few
    full handshakes of a keep-alive run, spread over its requests, would blur what a request
    costs (their number is fixed, the requests counted vary with the machine's load)."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(dump)],
                         capture_output=True, text=True, check=True).stdout
    got = [int(m.group(1).replace(",", "")) for m in re.finditer(r"^\s*([\d,]+) .*:SSL_do_handshake ", out, re.M)]
    return max(got, default=0)


def wrk(url: str, seconds: int, connections: int, close: bool) -> int:
    argv = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s"]
    if close:
        argv += ["-H", "Connection: close"]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} answers were not 2xx: the proxy did not serve them")
    errors = re.search(r"Socket errors: (.*)", out)
    if errors and "timeout" in errors.group(1) and not errors.group(1).endswith("timeout 0"):
        print(f"    wrk: {errors.group(0)}", flush=True)
    return int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]


def pause(seconds: float) -> int:
    time.sleep(seconds)  # (idle: what the proxy runs with no request)
    return 0


def count(pid: int, out_dir: Path, run: Callable[[], int]) -> tuple[int, int, float, Path]:
    """Instructions ``pid`` executed while ``run`` ran, what ``run`` returned, the seconds it took
    and the dump."""
    before = set(out_dir.glob(f"callgrind.out.{pid}*"))
    control("-z", str(pid))
    t0 = time.monotonic()
    n = run()
    elapsed = time.monotonic() - t0
    control("-d", str(pid))
    ir, dump = counted(out_dir, pid, before)
    return ir, n, elapsed, dump


def measure(name: str, pid: int, out_dir: Path, ports: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    """Per scenario: instructions per request, gross and net of what the proxy runs per unit of time
    (timers, the runtime's ticks: counted idle for as long, just before, and subtracted)."""
    got: dict[str, Any] = {}
    for scenario, (kind, close) in {**SCENARIOS, **HTTPS_SCENARIOS}.items():
        if (args.only and scenario not in args.only) or kind not in ports:
            continue
        url = f"{'https' if kind == 'https' else 'http'}://127.0.0.1:{ports[kind]}/"
        wrk(url, 1, args.connections, close)  # warm-up (pools), not counted
        runs = []
        for _ in range(args.repeat):
            idle, _, idle_s, _ = count(pid, out_dir, functools.partial(pause, args.seconds))
            ir, n, busy_s, dump = count(pid, out_dir,
                                        functools.partial(wrk, url, args.seconds, args.connections, close))
            net = (ir - idle * busy_s / idle_s) / n
            run: dict[str, Any] = {"gross": ir / n, "net": net, "requests": n, "idle_per_s": idle / idle_s}
            more = ""
            if kind == "https" and not close:  # (new_tls: the handshake is part of each request)
                hs = handshakes_in(dump)
                run["net_of_handshakes"] = net - hs / n
                more = f"; {net - hs / n:.0f} net of wrk's handshakes"
            runs.append(run)
            print(f"  {name:10} {scenario:15} {net:>10.0f} instructions per request net of {idle / idle_s:,.0f}/s "
                  f"idle ({ir / n:.0f} gross; {n} requests{more})", flush=True)
        nets = sorted(r["net"] for r in runs)
        got[scenario] = {"net": statistics.median(nets), "runs": runs}
        if args.repeat > 1:
            print(f"  {name:10} {scenario:15} {statistics.median(nets):>10.0f} median of {args.repeat} "
                  f"(range {nets[0]:.0f}-{nets[-1]:.0f})", flush=True)
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--fivenines", default=str(Path(sys.executable).with_name("fivenines")),
                    help="the fivenines command to count (default: beside this python)")
    ap.add_argument("--haproxy", action="store_true", help="count HAProxy too, for reference")
    ap.add_argument("--seconds", type=int, default=4, help="wrk seconds per scenario (default 4)")
    ap.add_argument("--connections", type=int, default=10, help="wrk connections (default 10)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="counts per scenario, median reported (one build's count moves by ~10%% from run to run)")
    ap.add_argument("--only", nargs="*", choices=[*SCENARIOS, *HTTPS_SCENARIOS], help="these scenarios only")
    ap.add_argument("--https", action="store_true",
                    help="add an https listener (ECDSA P-256, tls_bench's policy) and its scenarios; "
                         "--haproxy then counts HAProxy's https frontend of tls_bench")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (callgrind dumps)")
    args = ap.parse_args()
    args.fivenines = str(Path(args.fivenines).absolute())  # (it runs from its working directory)
    for tool in ("valgrind", "callgrind_control", "wrk"):
        if shutil.which(tool) is None:
            sys.exit(f"icount: {tool} is missing (Debian: valgrind, wrk)")
    work = Path(tempfile.mkdtemp(prefix="fivenines-icount-"))
    work.chmod(0o755)
    procs = Procs()
    results: dict[str, dict[str, Any]] = {}
    try:
        nginx = need("nginx")
        ports = {name: free_port() for name in ("a", "b")}
        for name, port in ports.items():
            for sub in ("body", "proxy", "fcgi", "uwsgi", "scgi"):
                (work / f"{sub}-{name}").mkdir()
            conf = work / f"nginx-{name}.conf"
            conf.write_text(NGINX_CONF.format(dir=work, name=name, port=port))
            procs.start([nginx, "-c", str(conf), "-p", str(work), "-e", str(work / f"nginx-{name}.err")],
                        work / f"nginx-{name}.log")
            wait_port(port)
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/callgrind.out.%p"]
        http, tcp = free_port(), free_port()
        spec = fivenines_spec(ports["a"], ports["b"], http, tcp, work / "state")
        fports = {"http": http, "tcp": tcp}
        if args.https:
            cert, key, both = make_certificate(work)
            fports["https"] = free_port()
            spec["listeners"].append({"port": fports["https"], "protocol": "https", "default_target_group": "web",
                                      "ssl_policy": POLICY, "certificates": [{"cert": str(cert), "key": str(key)}]})
        for group in spec["target_groups"].values():  # (a check is not a request; under valgrind one is slow)
            group["health_check"].update(interval="5s", timeout="3s")
        (work / "spec.json").write_text(json.dumps(spec))
        ready = work / "ready.json"
        p = procs.start([*valgrind, args.fivenines, "up", str(work / "spec.json"), "--ready-file", str(ready),
                         "--log-level", "warning"], work / "fivenines.log", cwd=work, env=installed_env())
        deadline = time.monotonic() + 300
        while not ready.exists():
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fivenines did not start:\n{(work / 'fivenines.log').read_text()}")
            time.sleep(0.2)
        wait_port(http, 60)
        wait_serving(ready, 120)
        mode = subprocess.run([str(Path(args.fivenines).with_name("python")), "-c",
                               "import fivenines.accel as a; print(a.mode())"], capture_output=True, text=True,
                              env=installed_env()).stdout.strip()
        print(f"fivenines ({args.fivenines}, data plane {mode}) under callgrind:", flush=True)
        results["fivenines"] = measure("fivenines", p.pid, work, fports, args)
        procs.stop(p)
        if args.haproxy:
            hports = {"http": free_port(), "tcp": free_port()}
            conf = work / "haproxy.cfg"
            conf.write_text(HAPROXY_CONF.format(http_port=hports["http"], tcp_port=hports["tcp"], a=ports["a"],
                                                b=ports["b"], nbthread=1, maxconn=4000))
            argv = [*valgrind, need("haproxy"), "-f", str(conf)]
            if args.https:
                hports["https"] = free_port()
                ciphers, suites = policy_strings()
                tls_conf = work / "haproxy-tls.cfg"
                tls_conf.write_text(TLS_HAPROXY_CONF.format(port=hports["https"], pem=both, ciphers=ciphers,
                                                            suites=suites, backend=ports["a"])
                                    .split("defaults", 1)[1].join(("defaults", "")).replace(" web\n", " tls_web\n"))
                argv += ["-f", str(tls_conf)]
            h = procs.start(argv, work / "haproxy.log")
            wait_port(hports["http"], 60)
            time.sleep(2)  # its first health checks
            print("haproxy under callgrind:", flush=True)
            results["haproxy"] = measure("haproxy", h.pid, work, hports, args)
            procs.stop(h)
    finally:
        procs.stop_all()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
