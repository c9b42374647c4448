"""The admin API and the CLI that drives it: token, operator actions, events, logs."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from fivenines.runtime.supervisor import die_with_parent
from tests.helpers import PY, demo_spec, get_json, wait_until, write_spec
from tests.ops_helpers import Lines, admin_call, token_of

pytestmark = pytest.mark.slow


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "fivenines", *args], capture_output=True, text=True, timeout=timeout)


def test_mutating_calls_need_the_token_which_is_never_shown(run_fivenines: Any, tmp_path: Path) -> None:
    f = run_fivenines(demo_spec(count=2, standby=1))
    f.wait_healthy()
    token_file = tmp_path / "state" / "admin.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_of(tmp_path / "state")
    assert len(token) >= 32
    for method, path, body in (("POST", "/targets/web-1/drain", None), ("POST", "/targets/web-1/maintenance", None),
                               ("POST", "/targets/web-1/enable", None), ("PUT", "/targets/web-1/weight", {"weight": 0}),
                               ("POST", "/reload", None)):
        for bad in (None, "wrong-token", token[:-1]):
            status, data, headers = admin_call(f.admin, method, path, bad, body)
            assert status == 401, (method, path, bad)
            assert headers["WWW-Authenticate"] == 'Bearer realm="fivenines"' and "Bearer" in data["error"]
    t = f.target("web-1")
    assert (t["state"], t["role"], t["weight"], t["admin_state"]) == ("healthy", "active", 1, None)
    assert f.status()["config"]["reloads"] == {"ok": 0, "rejected": 0}
    # read-only calls are open on loopback; the token appears nowhere
    for path in ("/status", "/events", "/metrics", "/", "/targets/web-1", "/openapi.yaml", "/healthz"):
        with __import__("urllib.request").request.urlopen(f.admin + path, timeout=5) as r:
            assert r.status == 200
            assert token not in r.read().decode()
    status, data, _ = admin_call(f.admin, "POST", "/targets/web-1/maintenance", token)
    assert status == 200 and data["admin_state"] == "maintenance"
    f.stop()
    for p in (f.log, tmp_path / "state" / "events.jsonl", tmp_path / "state" / "health-state.json"):
        assert token not in p.read_text()


def test_drain_lets_in_flight_requests_finish_then_enable_brings_it_back(run_fivenines: Any, tmp_path: Path) -> None:
    f = run_fivenines(demo_spec(count=2, standby=1))
    f.wait_healthy()
    token = token_of(tmp_path / "state")
    web1 = f.target("web-1")
    host, port = web1["address"].rsplit(":", 1)
    from tests.helpers import http_get

    http_get(host, int(port), "/_slow?ms=700")  # web-1 answers slowly from now on
    results: list[tuple[int, bytes]] = []
    threads = [threading.Thread(target=lambda: results.append(f.get("/x"))) for _ in range(2)]
    for th in threads:
        th.start()
    wait_until(lambda: f.target("web-1")["in_flight"] == 1, 5, 0.01, what="a request in flight on web-1")
    status, data, _ = admin_call(f.admin, "POST", "/targets/web-1/drain", token)
    assert status == 200 and data["state"] == "draining" and data["admin_state"] == "drained"
    # no new request goes to web-1 while its in-flight one finishes
    assert {f.get("/")[1].split()[1] for _ in range(6)} == {b"web-2", b"web-3"}
    for th in threads:
        th.join(10)
    assert sorted(s for s, _ in results) == [200, 200]
    assert any(b.split()[1] == b"web-1" for _, b in results)  # the slow one was answered, not cut
    t = wait_until(lambda: (x := f.target("web-1"))["state"] == "unused" and x, 5, 0.02, what="drained")
    assert t["reason"] == "Target.NotInUse" and t["admin_state"] == "drained" and t["role"] == "standby"
    drained = [e for e in get_json(f"{f.admin}/events")["events"] if e["kind"] == "drain"]
    assert [e["new"] for e in drained] == ["draining", "unused"]
    assert drained[0]["reason"] == "drained by an operator"
    # it ended with its in-flight request (700 ms, less what had passed), not at deregistration_delay (30 s)
    took = re.fullmatch(r"drained in (\d+\.\d)s", drained[1]["reason"])
    assert took is not None and float(took[1]) < 5.0, drained[1]["reason"]
    # a target in maintenance cannot be drained: 409 says why
    assert admin_call(f.admin, "POST", "/targets/web-2/maintenance", token)[0] == 200
    status, data, _ = admin_call(f.admin, "POST", "/targets/web-2/drain", token)
    assert status == 409 and data["error"] == "web-2 is in maintenance: enable it first"
    # enable: checked again before it serves
    http_get(host, int(port), "/_recover")
    for tid in ("web-1", "web-2"):
        status, data, _ = admin_call(f.admin, "POST", f"/targets/{tid}/enable", token)
        assert status == 200 and data["state"] == "initial" and data["admin_state"] is None
    f.wait_healthy()
    kinds = [(e["kind"], e["target"], e["new"]) for e in get_json(f"{f.admin}/events?limit=200")["events"]]
    for want in (("admin", "web-1", "drained"), ("admin", "web-2", "maintenance"), ("admin", "web-1", "enabled"),
                 ("health", "web-1", "initial"), ("health", "web-1", "healthy")):
        assert want in kinds


def test_weight_and_error_answers(run_fivenines: Any, tmp_path: Path) -> None:
    f = run_fivenines(demo_spec(count=2, standby=0))
    f.wait_healthy()
    token = token_of(tmp_path / "state")
    status, data, _ = admin_call(f.admin, "PUT", "/targets/web-1/weight", token, {"weight": 0})
    assert status == 200 and data["weight"] == 0 and data["state"] == "healthy"
    assert {f.get("/")[1].split()[1] for _ in range(6)} == {b"web-2"}
    assert f.status()["target_groups"]["web"]["serving"] == ["web-2"]
    assert admin_call(f.admin, "PUT", "/targets/web-1/weight", token, {"weight": 3})[0] == 200
    assert {f.get("/")[1].split()[1] for _ in range(6)} == {b"web-1", b"web-2"}
    for body in ({"weight": -1}, {"weight": 1001}, {"weight": "2"}, {"w": 1}, {"weight": True}):
        status, data, _ = admin_call(f.admin, "PUT", "/targets/web-1/weight", token, body)
        assert status == 400, body
    status, data, _ = admin_call(f.admin, "POST", "/targets/web-9/drain", token)
    assert status == 404 and data["error"] == "no target 'web-9'; targets: web-1, web-2"
    assert admin_call(f.admin, "GET", "/reload", token)[0] == 405
    assert admin_call(f.admin, "GET", "/targets/web-1/drain", token)[0] == 405
    assert admin_call(f.admin, "POST", "/targets/web-1/explode", token)[0] == 404
    assert admin_call(f.admin, "GET", "/nowhere")[0] == 404


def test_openapi_describes_every_route(run_fivenines: Any) -> None:
    f = run_fivenines(demo_spec(count=1, standby=0))
    import urllib.request

    with urllib.request.urlopen(f"{f.admin}/openapi.yaml", timeout=5) as r:
        doc = yaml.safe_load(r.read())
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    want = {"/": ["get"], "/status": ["get"], "/events": ["get"], "/events/stream": ["get"], "/metrics": ["get"],
            "/healthz": ["get"], "/targets/{id}": ["get"], "/targets/{id}/drain": ["post"],
            "/targets/{id}/enable": ["post"], "/targets/{id}/maintenance": ["post"],
            "/targets/{id}/weight": ["put"], "/reload": ["post"], "/openapi.yaml": ["get"],
            "/target_groups/{group}/switchover": ["post"], "/target_groups/{group}/targets/{id}/cut_off": ["post"],
            "/target_groups/{group}/restart": ["post"], "/target_groups/{group}/backup": ["post"],
            "/target_groups/{group}/verify": ["post"], "/target_groups/{group}/restore": ["post"],
            "/target_groups/{group}/drill": ["post"], "/target_groups/{group}/backups": ["get"],
            "/target_groups/{group}/operations/{op}": ["get"], "/target_groups/{group}/scale": ["post"]}
    assert {p: sorted(m for m in ops if m != "parameters") for p, ops in paths.items()} == want
    for p, ops in paths.items():
        for m in want[p]:
            if m != "get":
                assert ops[m]["security"] == [{"bearer": []}], p
                assert "401" in ops[m]["responses"], p
    # the status schema names every stable field
    target = doc["components"]["schemas"]["Target"]["properties"]
    for key in ("id", "address", "state", "reason", "role", "pid", "since", "requests", "errors"):
        assert key in target
    # and every field the server really sends is described
    st = f.status()
    schemas = doc["components"]["schemas"]
    assert set(st) <= set(schemas["Status"]["properties"])
    assert set(st["listeners"][0]) <= set(schemas["Listener"]["properties"])
    assert set(st["target_groups"]["web"]) <= set(schemas["TargetGroup"]["properties"])
    assert set(st["target_groups"]["web"]["targets"][0]) <= set(target)


def test_non_loopback_admin_needs_a_token_file_and_the_file_must_be_private(tmp_path: Path) -> None:
    spec = demo_spec()
    spec["admin"] = {"listen": "0.0.0.0:9900"}
    path = write_spec(tmp_path / "fivenines.yaml", spec)
    msg = (f"{path}: admin.listen: 0.0.0.0:9900 is not a loopback address: set admin.token_file so that every "
           "admin call needs the token, or listen on 127.0.0.1")
    for cmd in (["up", str(path)], ["validate", "--no-port-check", str(path)]):
        r = cli(*cmd)
        assert r.returncode == 2 and msg in r.stderr, r.stderr
    # a token file others can read is refused at start (like ssh refuses such a key)
    tok = tmp_path / "tok"
    tok.write_text("x" * 40)
    os.chmod(tok, 0o644)
    spec = demo_spec()
    spec["admin"]["token_file"] = "tok"
    spec["state_dir"] = str(tmp_path / "state")
    path = write_spec(tmp_path / "fivenines.yaml", spec)
    r = cli("up", str(path))
    assert r.returncode == 2
    assert f"admin token file {tok} can be read by others (mode 0644); run: chmod 600 {tok}" in r.stderr


def test_read_only_calls_from_outside_loopback_need_the_token() -> None:
    from fivenines.admin.auth import Auth

    auth = Auth("s3cret-token-of-some-length")
    assert auth.allowed(None, "127.0.0.1", mutating=False) and auth.allowed(None, "::1", mutating=False)
    assert not auth.allowed(None, "10.1.2.3", mutating=False)
    assert not auth.allowed(None, "127.0.0.1", mutating=True)
    assert auth.allowed("Bearer s3cret-token-of-some-length", "10.1.2.3", mutating=True)
    assert not auth.allowed("Basic s3cret-token-of-some-length", "127.0.0.1", mutating=True)
    assert "s3cret" not in repr(auth)


def test_cli_status_events_and_operator_commands(run_fivenines: Any, tmp_path: Path) -> None:
    f = run_fivenines(demo_spec(count=2, standby=1))
    f.wait_healthy()
    spec = str(f.spec_path)
    # `up` showed its progress while it waited for the targets
    log = wait_until(lambda: "all 3 target(s) healthy after" in (x := f.log.read_text()) and x, 5, 0.05,
                     what="up's progress")
    assert "waiting for 3 target(s) to pass their health checks" in log
    assert all(f"✓ web-{i} healthy" in log for i in (1, 2, 3)) and "(3/3 healthy)" in log
    # -f SPEC finds the running fivenines (its admin port is 0 in the spec) and its token
    r = cli("status", "-f", spec, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["name"] == "t"
    follow = subprocess.Popen([PY, "-m", "fivenines", "events", "-f", spec, "--follow", "-n", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=die_with_parent(os.getpid()))
    watch = subprocess.Popen([PY, "-m", "fivenines", "status", "-f", spec, "--watch", "--interval", "0.2"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent(os.getpid()))
    follow_out, follow_err, watch_out = Lines(follow.stdout), Lines(follow.stderr), Lines(watch.stdout)
    try:
        follow_err.until(lambda x: x.startswith("following events after #"))
        r = cli("drain", "web-2", "-f", spec)
        assert r.returncode == 0 and r.stdout.startswith("web-2: unused (drained)"), r.stderr  # nothing in flight
        follow_out.until(lambda x: "admin    web/web-2 enabled -> drained: drain requested via admin API from "
                         "127.0.0.1" in x)
        r = cli("maintenance", "web-2", "-f", spec)
        assert r.returncode == 0 and "web-2: unused (maintenance)" in r.stdout
        r = cli("enable", "web-2", "-f", spec)
        assert r.returncode == 0 and "web-2: initial (enabled)" in r.stdout
        r = cli("weight", "web-1", "5", "-f", spec)
        assert r.returncode == 0 and "web-1: weight 5" in r.stdout
        r = cli("drain", "web-7", "-f", spec)
        assert r.returncode == 1 and "no target 'web-7'" in r.stderr
        # no token at hand: a clear error, nothing changed
        r = cli("drain", "web-1", "--admin", f.admin, "--token-file", str(tmp_path / "missing"))
        assert r.returncode == 1 and "this needs the admin token" in r.stderr
        r = cli("events", "-f", spec, "-n", "3")
        assert r.returncode == 0 and len(r.stdout.splitlines()) == 3
        follow_out.until(lambda x: "health   web/web-2 unused -> initial" in x)
        follow_out.until(lambda x: "health   web/web-2 initial -> healthy" in x)
        # --watch redraws the table (a '--- HH:MM:SS' line per frame when not on a terminal):
        # the weight set after it started shows up
        seen = watch_out.until(lambda x: "web-1" in x and "(weight 5)" in x)
        assert sum(1 for x in seen if x.startswith("--- ")) >= 2
    finally:
        for p in (follow, watch):
            p.send_signal(signal.SIGINT)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for lines in (follow_out, follow_err, watch_out):
            lines.join()
    assert watch.returncode == 0 and follow.returncode == 0


def test_json_log_and_access_log(run_fivenines: Any, tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    f = run_fivenines(demo_spec(count=1, standby=0), ["--log-format", "json", "--access-log", str(access)])
    f.wait_healthy()
    for path in ("/a", "/b?x=1"):
        assert f.get(path)[0] == 200
    lines = wait_until(lambda: (x := access.read_text().splitlines()) and len(x) >= 2 and x, 5, 0.05,
                       what="access log lines")
    assert '"GET /a HTTP/1.1" 200 - target=web-1 duration=0.' in lines[0]
    assert lines[0].startswith("127.0.0.1 - - [") and '"GET /b?x=1 HTTP/1.1" 200' in lines[1]
    f.stop()
    records = [json.loads(x) for x in f.log.read_text().splitlines() if x.strip()]  # every line is JSON
    up = next(r for r in records if r["message"] == "up")
    assert up["service"] == "t" and up["admin"] == f.admin
    healthy = next(r for r in records if r.get("event", {}).get("new") == "healthy")
    assert healthy["event"]["target"] == "web-1" and healthy["level"] == "info"
