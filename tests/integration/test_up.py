"""``fivenines up`` end to end: real fivenines, real demo instances, real kills."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    PY,
    Fivenines,
    demo_spec,
    get_json,
    http_get,
    last_seq,
    pid_alive,
    wait_until,
    write_spec,
)

pytestmark = pytest.mark.slow


def test_traffic_spreads_over_both_actives_not_the_standby(run_fivenines: Any) -> None:
    f = run_fivenines(demo_spec(count=2, standby=1))
    targets = f.wait_healthy()
    assert [t["role"] for t in targets] == ["active", "active", "standby"]
    seen = Counter(f.get("/")[1].split()[1].decode() for _ in range(20))
    assert seen == {"web-1": 10, "web-2": 10}
    st = f.status()
    assert st["listeners"][0]["requests"] == 20
    web = st["target_groups"]["web"]
    assert web["serving"] == ["web-1", "web-2"]
    t = web["targets"][0]
    for key in ("id", "address", "state", "reason", "role", "pid", "since", "requests", "errors"):
        assert key in t
    assert t["requests"] == 10 and t["errors"] == 0 and t["reason"] is None


def _load(f: Fivenines, n: int, results: list[tuple[float, int, str]]) -> None:
    """n sequential requests over fresh connections; records (time, status, instance)."""
    for _ in range(n):
        try:
            c = http.client.HTTPConnection(f.host, f.port, timeout=5)
            c.request("GET", "/")
            r = c.getresponse()
            body = r.read().decode()
            c.close()
            results.append((time.monotonic(), r.status, body.split()[1] if r.status == 200 else body))
        except OSError as exc:
            results.append((time.monotonic(), 0, repr(exc)))


def test_kill_9_of_an_active_costs_no_request(run_fivenines: Any) -> None:
    f = run_fivenines(demo_spec(count=2, standby=1))
    f.wait_healthy()
    victim = f.target("web-1")
    assert [t["role"] for t in f.targets()] == ["active", "active", "standby"]
    mark = last_seq(f)  # start-up's events (a slow starter's failed checks) are not the kill's
    results: list[tuple[float, int, str]] = []
    killer_done: list[float] = []

    def kill_when_flowing() -> None:
        wait_until(lambda: len(results) >= 50, 10, 0.001, what="load to flow")
        os.kill(victim["pid"], signal.SIGKILL)
        killer_done.append(time.monotonic())

    k = threading.Thread(target=kill_when_flowing)
    k.start()
    _load(f, 500, results)
    k.join()
    failed = [r for r in results if r[1] != 200]
    assert failed == [], failed[:5]
    assert len(results) == 500
    killed_at = killer_done[0]
    # the standby serves within 3 s of the kill
    first_standby = min(t for t, _, inst in results if inst == "web-3")
    assert first_standby - killed_at < 3.0
    after = [inst for t, _, inst in results if t > killed_at + 0.5]
    assert "web-1" not in after
    # the killed instance is running and healthy again within 10 s, as the standby
    t = wait_until(
        lambda: (x := f.target("web-1"))["state"] == "healthy" and x["pid"] != victim["pid"] and x,
        10, 0.05, what="web-1 restarted and healthy",
    )
    assert t["role"] == "standby" and t["instance"]["restarts"] == 1
    assert t["instance"]["last_exit"] == "signal SIGKILL"
    assert f.target("web-3")["role"] == "active"
    events = get_json(f"{f.admin}/events?since={mark}&limit=1000")["events"]
    changes = [(e["kind"], e["target"], e["new"]) for e in events]
    assert ("role", "web-3", "active") in changes and ("role", "web-1", "standby") in changes
    promo = next(e for e in events if e["kind"] == "role" and e["target"] == "web-3")
    # whichever saw the death first: the process watcher (exit) or the proxy (a connect refused
    # on web-1's port before the exit was handled); both are exact, both name web-1's death
    assert promo["reason"] in ("replaces web-1 unhealthy (Target.ProcessExited)",
                               "replaces web-1 ejected (1 consecutive connect errors)",
                               "replaces web-1 ejected (1 consecutive resets)")  # a pooled connection


def test_sigterm_stops_instances_and_drains(run_fivenines: Any) -> None:
    f = run_fivenines(demo_spec(count=2, standby=1))
    pids = [t["pid"] for t in f.wait_healthy()]
    assert all(pid_alive(p) for p in pids)
    assert f.stop(signal.SIGTERM) == 0
    assert not any(pid_alive(p) for p in pids)
    assert "Traceback" not in f.log.read_text()


def test_no_instance_outlives_a_sigkilled_fivenines(run_fivenines: Any) -> None:
    f = run_fivenines(demo_spec(count=1, standby=1))
    pids = [t["pid"] for t in f.wait_healthy()]
    f.proc.kill()
    f.proc.wait()
    wait_until(lambda: not any(pid_alive(p) for p in pids), 5, what="instances to die with fivenines")


def test_crash_looping_instance_is_shown_with_exit_code_and_stderr(run_fivenines: Any, tmp_path: Path) -> None:
    crasher = tmp_path / "crash.py"
    crasher.write_text("import sys\nprint('boom: cannot open database', file=sys.stderr)\nsys.exit(3)\n")
    spec = demo_spec(count=1, standby=0)
    spec["target_groups"]["web"]["instances"]["command"] = ["python", str(crasher)]
    spec["target_groups"]["web"]["instances"]["restart"] = {
        "initial_delay": "20ms", "max_delay": "100ms", "crash_loop_after": 3,
    }
    f = run_fivenines(spec)
    t = wait_until(lambda: (x := f.target("web-1"))["instance"]["state"] == "crash_loop" and x, 10, 0.05,
                   what="crash loop")
    assert t["state"] == "unhealthy" and t["reason"] == "Target.ProcessExited"
    assert t["instance"]["last_exit_code"] == 3
    assert "boom: cannot open database" in t["instance"]["stderr_tail"]
    # fivenines status shows it as such
    out = subprocess.run([PY, "-m", "fivenines", "status", "--admin", f.admin], capture_output=True, text=True, check=True)
    assert "crash loop (code 3)" in out.stdout and "boom: cannot open database" in out.stdout
    assert f.get("/")[0] == 503


def test_bad_spec_exits_2_names_the_field_and_starts_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    spec = demo_spec(interval="1s", timeout="1s")
    spec["target_groups"]["web"]["instances"]["command"] = ["python", "-c", f"open({str(marker)!r}, 'w')"]
    path = write_spec(tmp_path / "fivenines.yaml", spec)
    r = subprocess.run([PY, "-m", "fivenines", "up", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert f"{path}: target_groups.web.health_check.timeout: timeout (1s) must be less than interval (1s)" in r.stderr
    assert not marker.exists()


def test_busy_port_exits_2(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        spec = demo_spec()
        spec["listeners"][0]["port"] = s.getsockname()[1]
        path = write_spec(tmp_path / "fivenines.yaml", spec)
        r = subprocess.run([PY, "-m", "fivenines", "up", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "listeners.0.port" in r.stderr and "is in use" in r.stderr


def test_static_targets_are_balanced_and_checked(run_fivenines: Any, demos: list[Any]) -> None:
    spec = demo_spec()
    tg = spec["target_groups"]["web"]
    del tg["instances"]
    tg["targets"] = [d.address for d in demos[:2]]
    f = run_fivenines(spec)
    f.wait_healthy()
    assert {f.get("/")[1].split()[1] for _ in range(4)} == {b"demo-a", b"demo-b"}
    demos[0].get("/_fail")
    wait_until(lambda: f.target("web-1")["reason"] == "Target.ResponseCodeMismatch", 5, what="web-1 unhealthy")
    assert {f.get("/")[1].split()[1] for _ in range(4)} == {b"demo-b"}
    assert all(t["pid"] is None for t in f.targets())


def test_validate_command(tmp_path: Path) -> None:
    good = write_spec(tmp_path / "good.yaml", demo_spec())
    r = subprocess.run([PY, "-m", "fivenines", "validate", str(good)], capture_output=True, text=True)
    assert r.returncode == 0 and "ok" in r.stdout
    bad_spec = demo_spec()
    bad_spec["target_groups"]["web"]["health_check"]["unhealthy_threshold"] = 0
    bad = write_spec(tmp_path / "bad.yaml", bad_spec)
    r = subprocess.run([PY, "-m", "fivenines", "validate", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert f"{bad}: target_groups.web.health_check.unhealthy_threshold: Input should be greater than or equal to 1" in r.stderr


def test_schema_command() -> None:
    import json

    r = subprocess.run([PY, "-m", "fivenines", "schema"], capture_output=True, text=True, check=True)
    assert json.loads(r.stdout)["title"] == "Spec"


def test_status_command_without_server_fails_clearly() -> None:
    from tests.helpers import free_port

    r = subprocess.run([PY, "-m", "fivenines", "status", "--admin", f"127.0.0.1:{free_port()}"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "cannot reach fivenines" in r.stderr


def test_state_dir_defaults_beside_the_spec(tmp_path: Path, run_fivenines: Any) -> None:
    spec = demo_spec(count=1, standby=0)
    spec["state_dir"] = "rel/state"
    f = run_fivenines(spec)
    t = f.wait_healthy()[0]
    assert t["instance"]["stderr_log"] == str(tmp_path / "rel" / "state" / "logs" / "web-1.err.log")
    assert (tmp_path / "rel" / "state" / "logs" / "web-1.err.log").exists()


def test_the_process_carrying_traffic_stays_single_threaded(run_fivenines: Any) -> None:
    """uvloop binds ``create_server(host, port)`` through libuv's thread pool, whose threads stay;
    with a second thread the kernel refcounts the socket on every recv and send. Listeners and the
    admin API bind their own sockets (proxy/tls_socket.py listening_socket) so it never starts."""
    spec = demo_spec(count=2, standby=0)
    spec["listeners"].append({"port": 0, "protocol": "tcp", "default_target_group": "web"})
    f = run_fivenines(spec)
    f.wait_healthy()
    tcp_host, tcp_port = json.loads(f.ready.read_text())["listeners"][1].rsplit(":", 1)
    for _ in range(4):
        assert f.get("/")[0] == 200
        assert http_get(tcp_host, int(tcp_port), "/")[0] == 200
    assert f.status()["listeners"][1]["connections_total"] >= 4  # the admin API answered too
    tasks = Path(f"/proc/{f.proc.pid}/task")
    threads = {t.name: (t / "comm").read_text().strip() for t in tasks.iterdir()}
    assert len(threads) == 1, threads
