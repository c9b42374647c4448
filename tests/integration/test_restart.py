"""``fivenines restart GROUP``: a rolling restart under load, with real processes, without a failed request."""

from __future__ import annotations

import http.client
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PY, Fivenines, demo_spec, get_json, last_seq, wait_until

pytestmark = pytest.mark.slow


def keepalive_load(f: Fivenines, stop: threading.Event, results: list[tuple[int, str]]) -> None:
    """Requests one after another over a keep-alive connection (reconnecting when it closes)."""
    conn: http.client.HTTPConnection | None = None
    while not stop.is_set():
        try:
            if conn is None:
                conn = http.client.HTTPConnection(f.host, f.port, timeout=5)
            conn.request("GET", "/")
            r = conn.getresponse()
            body = r.read().decode()
            results.append((r.status, body.split()[1] if r.status == 200 else body))
            if r.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as exc:
            results.append((0, repr(exc)))
            if conn is not None:
                conn.close()
            conn = None
    if conn is not None:
        conn.close()


def restart(f: Fivenines, *args: str) -> subprocess.CompletedProcess[str]:
    """``fivenines restart`` with the spec (for the admin token) and the admin address."""
    return subprocess.run([PY, "-m", "fivenines", "restart", *args, "--admin", f.admin, "-f", str(f.spec_path)],
                          capture_output=True, text=True, timeout=120)


def test_rolling_restart_under_load_fails_no_request(run_fivenines: Any) -> None:
    spec = demo_spec(count=2, standby=1)
    spec["target_groups"]["web"]["deregistration_delay"] = "3s"
    f = run_fivenines(spec)
    before = {t["id"]: t["pid"] for t in f.wait_healthy()}
    results: list[tuple[int, str]] = []
    stop = threading.Event()
    loaders = [threading.Thread(target=keepalive_load, args=(f, stop, results)) for _ in range(2)]
    for t in loaders:
        t.start()
    try:
        wait_until(lambda: len(results) > 50, 10, what="load to flow")
        mark = last_seq(f)  # what start-up did is not the rollout's to answer for
        r = restart(f, "web")
    finally:
        stop.set()
        for t in loaders:
            t.join()
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "rolling restart of web: web-3, web-1, web-2"
    assert "deregister web-1: 2 others can serve (need 2)" in r.stdout
    assert "finished: restarted 3 members" in r.stdout and "web: done in" in r.stdout
    failed = [x for x in results if x[0] != 200]
    assert failed == [] and len(results) > 100
    after = {t["id"]: t for t in f.targets()}
    assert all(after[i]["pid"] != before[i] and after[i]["state"] == "healthy" for i in before)
    # one at a time, each deregistered before it was stopped, never two out at once
    events = get_json(f"{f.admin}/events?limit=1000")["events"]
    steps = [(e["target"], e["new"]) for e in events if e["kind"] == "rollout" and e["target"]]
    assert steps == [(t, s) for t in ("web-3", "web-1", "web-2") for s in ("deregister", "stop", "start")]
    serving = [e["new"].split(",") for e in events if e["kind"] == "serving" and e["seq"] > mark]
    assert serving and all(len(s) == 2 for s in serving), serving
    st = f.status()["target_groups"]["web"]["rollout"]
    assert st["state"] == "done" and st["steps"] == {"web-3": "done", "web-1": "done", "web-2": "done"}


def test_restart_needs_the_admin_token(run_fivenines: Any, tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    f = run_fivenines(demo_spec(count=1, standby=1))
    f.wait_healthy()
    req = urllib.request.Request(f"{f.admin}/target_groups/web/restart", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 401
    info.value.close()  # the error holds the response's socket
    bad = tmp_path / "wrong.token"
    bad.write_text("not-the-token\n")
    r = subprocess.run([PY, "-m", "fivenines", "restart", "web", "--admin", f.admin, "--token-file", str(bad)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "bearer token" in r.stderr
    assert f.status()["target_groups"]["web"]["rollout"] is None


def test_restart_refuses_what_it_cannot_do(run_fivenines: Any, demos: list[Any], tmp_path: Path) -> None:
    # Instances that wait at start while a gate file exists: the first restart is held at its first
    # member's health check until the test opens the gate, so the second call surely overlaps it
    # (an unheld restart of two demo instances can finish before a second CLI call even starts).
    gate = tmp_path / "gate"
    app = tmp_path / "app.py"
    app.write_text(
        "import os, sys, time\n"
        f"while os.path.exists({str(gate)!r}):\n"
        "    time.sleep(0.02)\n"
        "from fivenines.demo import main\n"
        "main(sys.argv[1:])\n"
    )
    spec = demo_spec(count=1, standby=1)
    spec["target_groups"]["web"]["instances"]["command"] = ["python", str(app), "--port", "{port}"]
    spec["target_groups"]["ext"] = {"targets": [demos[0].address]}
    f = run_fivenines(spec)
    f.wait_healthy()
    r = restart(f, "nope")
    assert r.returncode == 1 and "no target group 'nope'; defined: ext, web" in r.stderr
    r = restart(f, "ext")
    assert r.returncode == 1 and "ext: its targets are not run by fivenines" in r.stderr
    gate.write_text("")
    r = restart(f, "web", "--no-wait")
    assert r.returncode == 0 and r.stdout.startswith("rolling restart of web: web-2, web-1")
    r2 = restart(f, "web", "--no-wait")
    assert r2.returncode == 1 and "a rolling restart is already running" in r2.stderr
    ro = f.status()["target_groups"]["web"]["rollout"]
    assert ro["state"] == "running" and ro["steps"]["web-1"] == "waiting"  # the refused call changed nothing
    gate.unlink()
    wait_until(lambda: f.status()["target_groups"]["web"]["rollout"]["state"] == "done", 30, 0.1,
               what="restart to finish")


def test_a_crash_looping_replacement_stops_the_rollout(run_fivenines: Any, tmp_path: Path) -> None:
    """A bad release: the restarted instance crashes; the rollout stops and the rest keep serving."""
    marker = tmp_path / "broken"
    app = tmp_path / "app.py"
    app.write_text(
        "import os, sys\n"
        f"if os.path.exists({str(marker)!r}):\n"
        "    sys.exit('cannot start: bad config')\n"
        "from fivenines.demo import main\n"
        "main(sys.argv[1:])\n"
    )
    spec = demo_spec(count=2, standby=1)
    inst = spec["target_groups"]["web"]["instances"]
    inst["command"] = ["python", str(app), "--port", "{port}"]
    inst["restart"] = {"initial_delay": "20ms", "max_delay": "50ms", "crash_loop_after": 2}
    f = run_fivenines(spec)
    f.wait_healthy()
    marker.write_text("")
    start = time.monotonic()
    r = restart(f, "web")
    assert r.returncode == 1 and time.monotonic() - start < 20
    assert "web: failed: web-3 is crash looping after its restart" in r.stdout
    ts = {t["id"]: t for t in f.targets()}
    assert ts["web-1"]["state"] == ts["web-2"]["state"] == "healthy"
    assert f.status()["target_groups"]["web"]["serving"] == ["web-1", "web-2"]
    assert f.get("/")[0] == 200
