"""Reload without dropping a request: real fivenines, real backends, constant load."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PY, Demo, Fivenines, free_port, get_json, http_get, wait_until, write_spec
from tests.ops_helpers import Load, _read_response

pytestmark = pytest.mark.slow

FAST = {"interval": "100ms", "timeout": "80ms", "healthy_threshold": 2, "unhealthy_threshold": 2}


def static_spec(groups: dict[str, list[str]], listeners: list[dict[str, Any]] | None = None,
                **group: Any) -> dict[str, Any]:
    return {
        "name": "t",
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": listeners or [{"port": 0, "default_target_group": next(iter(groups))}],
        "target_groups": {name: {"targets": addrs, "health_check": dict(FAST), **group}
                          for name, addrs in groups.items()},
    }


def reload_cli(f: Fivenines, state: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "fivenines", "reload", "--admin", f.admin, "--token-file",
                           str(state / "admin.token")], capture_output=True, text=True, timeout=timeout)


def listeners_of(f: Fivenines) -> list[tuple[str, int]]:
    info = json.loads(f.ready.read_text())
    return [(h, int(p)) for h, p in (a.rsplit(":", 1) for a in info["listeners"])]


def events(f: Fivenines) -> list[dict[str, Any]]:
    return list(get_json(f"{f.admin}/events?limit=1000")["events"])


def test_reload_under_load_adds_a_group_removes_a_target_and_reroutes_without_dropping_anything(
        run_fivenines: Any, demos: list[Demo], tmp_path: Path) -> None:
    a, b, c = demos
    d = Demo("demo-d")
    try:
        spec = static_spec({"web": [a.address, b.address, c.address]},
                           [{"port": 0, "default_target_group": "web"}, {"port": 0, "default_target_group": "web"}],
                           deregistration_delay="10s")
        f = run_fivenines(spec)
        f.wait_healthy()
        (h0, p0), (h1, p1) = listeners_of(f)
        c.get("/_slow?ms=300")  # c's requests take 300 ms: some are in flight when it is removed
        before = {t["id"]: t for t in f.targets()}
        main = Load(h0, p0, keepalive=3, fresh=1, paths=("/", "/api/x"))
        side = Load(h1, p1, keepalive=1, fresh=0)
        try:
            wait_until(lambda: sum(1 for _, _, i in main.result.answers if i == "demo-c") >= 3 and side.count() > 10,
                       15, 0.01, what="load flowing to every target")
            # v2: web loses c; a new group api (d); listener 0 gets a rule, listener 1 a new default
            spec2 = static_spec({"web": [a.address, b.address], "api": [d.address]},
                                [{"port": 0, "default_target_group": "web",
                                  "rules": [{"match": {"path": ["/api/*"]}, "forward": "api"}]},
                                 {"port": 0, "default_target_group": "api"}],
                                deregistration_delay="10s")
            spec2["state_dir"] = spec["state_dir"]
            write_spec(f.spec_path, spec2)
            seq_before = get_json(f"{f.admin}/events?limit=1")["last_seq"]
            started = time.monotonic()
            r = reload_cli(f, tmp_path / "state")
            reloaded = time.monotonic()
            assert r.returncode == 0, r.stderr
            assert "reloaded: configuration generation 2" in r.stdout
            for line in ("add target group api", "add target api-1 (127.0.0.1:", "reroute listeners.0: rules",
                         "reroute listeners.1: default_target_group", "drain and remove web-3 from web"):
                assert line in r.stdout, r.stdout
            # web-3 drains (its in-flight requests finish) and goes; traffic keeps flowing meanwhile
            wait_until(lambda: [t["id"] for t in f.targets()] == ["web-1", "web-2"], 15, 0.05, what="web-3 removed")
            gone = time.monotonic()
            wait_until(lambda: sum(1 for t, _, _ in main.result.answers if t > gone) > 100
                       and sum(1 for t, _, _ in side.result.answers if t > gone) > 20, 15, 0.01,
                       what="more load after the reload")
        finally:
            res, side_res = main.stop(), side.stop()
        assert res.failed == [] and side_res.failed == [], (res.failed[:5], side_res.failed[:5])
        assert res.closed == [] and side_res.closed == [], (res.closed, side_res.closed)  # no connection closed
        assert res.ok > 150 and side_res.ok > 20
        assert [x["retries"] for x in f.status()["listeners"]] == [0, 0]
        # the new rule and listener 1's new default apply to new requests at once; before the
        # reload /api/x went to web; c gets nothing new once drained
        assert {i for t, p, i in res.answers if t > reloaded and p == "/api/x"} == {"demo-d"}
        assert {i for t, p, i in res.answers if t > gone and p == "/"} == {"demo-a", "demo-b"}
        assert {i for t, p, i in res.answers if t < started and p == "/api/x"} <= {"demo-a", "demo-b", "demo-c"}
        assert {i for t, _, i in side_res.answers if t > reloaded} == {"demo-d"}
        assert not [x for x in res.answers if x[2] == "demo-c" and x[0] > gone]
        drained = [e for e in events(f) if e["kind"] == "drain" and e["target"] == "web-3"]
        assert [e["new"] for e in drained] == ["draining", "unused"], drained
        assert drained[-1]["reason"].startswith("drained in ")  # its in-flight requests finished, none cut
        # health state survived: kept targets were not re-checked from scratch
        after = {t["id"]: t for t in f.targets()}
        for tid in ("web-1", "web-2"):
            assert after[tid]["state"] == "healthy" and after[tid]["since"] == before[tid]["since"]
        assert [e for e in events(f) if e["kind"] == "health" and e["target"] in ("web-1", "web-2")
                and e["seq"] > seq_before] == []
        st = f.status()
        assert st["config"]["generation"] == 2 and st["config"]["last_reload"]["ok"]
        assert [(x["rules"], x["default_target_group"]) for x in st["listeners"]] == [(1, "web"), (0, "api")]
        assert st["target_groups"]["api"]["serving"] == ["api-1"]
    finally:
        d.stop()


def test_invalid_reload_changes_nothing_and_says_why(run_fivenines: Any, demos: list[Demo], tmp_path: Path) -> None:
    a, b, _ = demos
    spec = static_spec({"web": [a.address, b.address]})
    f = run_fivenines(spec)
    f.wait_healthy()
    before = f.status()
    bad = static_spec({"web": [a.address]})
    bad["state_dir"] = spec["state_dir"]
    bad["target_groups"]["web"]["health_check"]["timeout"] = "1s"
    bad["listeners"][0]["default_target_group"] = "nope"
    write_spec(f.spec_path, bad)
    r = reload_cli(f, tmp_path / "state")
    assert r.returncode == 2
    # the same messages as at start (fivenines validate)
    v = subprocess.run([PY, "-m", "fivenines", "validate", "--no-port-check", str(f.spec_path)],
                       capture_output=True, text=True)
    assert v.returncode == 2
    want = [line.split("error: ", 1)[1] for line in v.stderr.splitlines() if "error: " in line]
    assert want and "target_groups.web.health_check.timeout" in want[0]
    for line in want:
        assert line in r.stderr
    assert "reload rejected: the running configuration is unchanged" in r.stderr
    # a field that needs a restart is refused too, with its path
    renamed = dict(spec, name="other")
    write_spec(f.spec_path, renamed)
    r = reload_cli(f, tmp_path / "state")
    assert r.returncode == 2 and "name: cannot change on a reload (was 't'); restart fivenines for it" in r.stderr
    # ... and by SIGHUP: logged, nothing changed
    write_spec(f.spec_path, bad)
    f.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: f.status()["config"]["reloads"]["rejected"] == 3, 10, 0.05, what="SIGHUP reload rejected")
    after = f.status()
    assert after["config"]["generation"] == 1
    assert [(t["id"], t["address"], t["state"], t["since"]) for t in after["target_groups"]["web"]["targets"]] == \
        [(t["id"], t["address"], t["state"], t["since"]) for t in before["target_groups"]["web"]["targets"]]
    assert {f.get("/")[1].split()[1] for _ in range(4)} == {b"demo-a", b"demo-b"}
    rejected = [e for e in events(f) if e["kind"] == "reload"]
    assert [e["new"] for e in rejected] == ["rejected"] * 3
    assert "nothing changed" in rejected[0]["reason"] and "timeout (1s) must be less than interval" in rejected[0]["reason"]
    assert "reload rejected: " in f.log.read_text()


def test_sighup_rebinds_a_changed_listener_and_keeps_established_connections(
        run_fivenines: Any, demos: list[Demo]) -> None:
    a, b, _ = demos
    spec = static_spec({"web": [a.address]})
    f = run_fivenines(spec)
    f.wait_healthy()
    old_port = f.port
    sock = socket.create_connection((f.host, old_port), timeout=5)
    buf = bytearray()
    with sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _read_response(sock, buf)[0] == 200
        new_port = free_port()
        spec2 = static_spec({"web": [a.address, b.address]}, [{"port": new_port, "default_target_group": "web"}])
        spec2["state_dir"] = spec["state_dir"]
        write_spec(f.spec_path, spec2)
        f.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: f.status()["listeners"][0]["port"] == new_port
                   and f.status()["target_groups"]["web"]["serving"] == ["web-1", "web-2"], 10, 0.05,
                   what="listener rebound and web-2 serving")
        # the established connection is still open and served (with the new targets)
        seen = set()
        for _ in range(4):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            status, body = _read_response(sock, buf)
            assert status == 200
            seen.add(body.split()[1])
        assert seen == {b"demo-a", b"demo-b"}
    assert http_get("127.0.0.1", new_port, "/")[0] == 200
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", old_port), timeout=2).close()
    ev = [e for e in events(f) if e["kind"] == "reload"]
    assert ev[-1]["new"] == "generation 2" and "SIGHUP: " in ev[-1]["reason"]
    assert f"rebind listeners.0 from 127.0.0.1:0 to 127.0.0.1:{new_port}" in ev[-1]["reason"]


def test_replaced_instances_are_checked_before_they_get_traffic(run_fivenines: Any, tmp_path: Path) -> None:
    from tests.helpers import demo_spec

    spec = demo_spec(count=2, standby=0, interval="100ms", timeout="80ms")
    f = run_fivenines(spec)
    f.wait_healthy()
    load = Load(f.host, f.port, keepalive=2, fresh=1)
    try:
        wait_until(lambda: load.count() > 30, 10, 0.01, what="load")
        spec2 = demo_spec(count=3, standby=0, interval="100ms", timeout="80ms")
        spec2["state_dir"] = spec["state_dir"]
        spec2["target_groups"]["web"]["instances"]["env"] = {"RELEASE": "2"}
        write_spec(f.spec_path, spec2)
        started = time.monotonic()
        r = reload_cli(f, tmp_path / "state")
        assert r.returncode == 0, r.stderr
        assert "drain and remove web-1 from web: instance definition changed: env" in r.stdout
        wait_until(lambda: [t["id"] for t in f.targets()] == ["web-3", "web-4", "web-5"], 15, 0.05,
                   what="old instances gone")
        gone = time.monotonic()
        n = load.count()
        wait_until(lambda: load.count() > n + 60, 10, 0.01, what="load on the new instances")
    finally:
        res = load.stop()
    assert res.failed == [] and res.closed == [], (res.failed[:5], res.closed)
    assert {i for t, _, i in res.answers if t > gone} == {"web-3", "web-4", "web-5"}
    assert {i for t, _, i in res.answers if t < started} == {"web-1", "web-2"}
    # no attempt failed (none went to an instance not yet listening): nothing was retried
    assert f.status()["listeners"][0]["retries"] == 0
    t = f.targets()
    assert all(x["state"] == "healthy" for x in t) and [x["role"] for x in t] == ["active"] * 3
    for x in t:
        env = Path(f"/proc/{x['pid']}/environ").read_bytes().split(b"\0")
        assert b"RELEASE=2" in env


def test_health_state_survives_a_restart_unless_the_target_changed(demos: list[Demo], tmp_path: Path) -> None:
    a, b, _ = demos
    slow = {"interval": "500ms", "timeout": "200ms", "healthy_threshold": 4, "unhealthy_threshold": 2}
    spec = static_spec({"web": [a.address, b.address]})
    spec["target_groups"]["web"]["health_check"] = dict(slow)
    f = Fivenines(tmp_path, spec)
    try:
        f.wait_healthy(timeout=15)
        r = subprocess.run([PY, "-m", "fivenines", "maintenance", "web-2", "-f", str(f.spec_path)],
                           capture_output=True, text=True)
        assert r.returncode == 0 and "web-2: unused (maintenance)" in r.stdout, r.stderr
    finally:
        f.stop()
    saved = json.loads((tmp_path / "state" / "health-state.json").read_text())
    assert saved["targets"]["web-1"]["state"] == "healthy"
    assert saved["targets"]["web-2"]["admin_state"] == "maintenance"
    f.ready.unlink()
    f = Fivenines(tmp_path, spec)
    try:
        # at once, before a single check could pass (4 x 500 ms): web-1 serves, web-2 stays out
        t = {x["id"]: x for x in f.targets()}
        assert t["web-1"]["state"] == "healthy" and t["web-2"]["state"] == "unused"
        assert t["web-2"]["admin_state"] == "maintenance"
        assert f.get("/")[1].split()[1] == b"demo-a"
        restore = {e["target"]: e["reason"] for e in events(f) if e["kind"] == "restore"}
        assert restore["web-1"].startswith("restored healthy (saved ")
        assert restore["web-2"].startswith("maintenance by an operator")
    finally:
        f.stop()
    # a changed health check is a changed definition: nothing is restored
    spec["target_groups"]["web"]["health_check"]["path"] = "/health?v=2"
    write_spec(f.spec_path, spec)
    f.ready.unlink()
    f = Fivenines(tmp_path, spec)
    try:
        t = {x["id"]: x for x in f.targets()}
        assert t["web-1"]["state"] == "initial" and t["web-2"]["state"] == "initial"
        assert t["web-2"]["admin_state"] is None
        restore = {e["target"]: e["reason"] for e in events(f) if e["kind"] == "restore"}
        assert restore == {"web-1": "not restored: definition changed since it was saved",
                           "web-2": "not restored: definition changed since it was saved"}
    finally:
        f.stop()


def test_socket_handover_keeps_the_port_accepting(demo: Demo) -> None:
    """Rebinding on the same address (a protocol change) hands the listening socket over:
    the port never stops accepting, and the old listener's connections stay open."""
    from fivenines.proxy.backend import Backend, BackendGroup
    from fivenines.proxy.client import http_listener
    from fivenines.runtime.reload import _dup_listening
    from tests.helpers import LoopThread

    lt = LoopThread()
    clients: list[socket.socket] = []
    group = BackendGroup("web")
    group.add(Backend("web-1", demo.host, demo.port))
    group.set_serving(["web-1"])
    old = http_listener(lambda: group, 0)
    new = http_listener(lambda: group, 0)
    try:
        lt.call(old.start("127.0.0.1", 0))
        port = old.address[1]
        kept = socket.create_connection(("127.0.0.1", port), timeout=5)
        clients.append(kept)
        buf = bytearray()
        kept.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _read_response(kept, buf)[0] == 200
        sock = _dup_listening(old)
        # a client connecting during the handover is served by one of the two, never refused
        waiting = socket.create_connection(("127.0.0.1", port), timeout=5)
        clients.append(waiting)

        async def swap() -> None:
            old.stop_accepting()
            await new.start("127.0.0.1", port, sock=sock)

        lt.call(swap())
        assert new.address == ("127.0.0.1", port)
        waiting.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _read_response(waiting, bytearray())[0] == 200
        before = new.counters.connections
        assert http_get("127.0.0.1", port, "/")[0] == 200  # after the swap: the new listener
        assert new.counters.connections == before + 1
        kept.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # the old listener's connection goes on
        assert _read_response(kept, buf)[0] == 200
        assert old.counters.connections + new.counters.connections == 3
    finally:
        for c in clients:
            c.close()
        lt.call(old.drain(1.0))
        if new.server is not None:
            lt.call(new.drain(1.0))
        lt.loop.call_soon_threadsafe(group.backends["web-1"].close_idle)
        lt.close()


def test_protocol_change_on_the_same_port_hands_the_socket_over(run_fivenines: Any, demo: Demo,
                                                                 tmp_path: Path) -> None:
    port = free_port()
    spec = static_spec({"web": [demo.address]}, [{"port": port, "default_target_group": "web"}])
    f = run_fivenines(spec)
    f.wait_healthy()

    def echo_headers(sock: socket.socket, buf: bytearray) -> list[str]:
        sock.sendall(b"GET /_echo HTTP/1.1\r\nHost: t\r\n\r\n")
        status, body = _read_response(sock, buf)
        assert status == 200
        return [k.lower() for k, _ in json.loads(body)["headers"]]

    kept = socket.create_connection(("127.0.0.1", port), timeout=5)
    buf = bytearray()
    with kept:
        assert "x-forwarded-for" in echo_headers(kept, buf)  # http: the proxy adds it
        spec2 = static_spec({"web": [demo.address]}, [{"port": port, "default_target_group": "web",
                                                       "protocol": "tcp"}])
        spec2["state_dir"] = spec["state_dir"]
        write_spec(f.spec_path, spec2)
        r = reload_cli(f, tmp_path / "state")
        assert r.returncode == 0, r.stderr
        assert f"rebind listeners.0 from 127.0.0.1:{port}/http to 127.0.0.1:{port}/tcp" in r.stdout
        assert f.status()["listeners"][0]["protocol"] == "tcp"
        # the established connection goes on, as http; a new one on the same port is tcp (bytes as sent)
        assert "x-forwarded-for" in echo_headers(kept, buf)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as fresh:
            assert "x-forwarded-for" not in echo_headers(fresh, bytearray())


def test_changed_listener_limits_apply_to_new_connections_and_keep_the_open_ones(
        run_fivenines: Any, demo: Demo, tmp_path: Path) -> None:
    spec = static_spec({"web": [demo.address]})
    f = run_fivenines(spec)
    f.wait_healthy()
    kept = socket.create_connection((f.host, f.port), timeout=5)
    buf = bytearray()
    with kept:
        kept.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _read_response(kept, buf)[0] == 200
        spec2 = static_spec({"web": [demo.address]})
        spec2["state_dir"] = spec["state_dir"]
        spec2["listeners"][0]["limits"] = {"max_connections_per_ip": 1}
        write_spec(f.spec_path, spec2)
        r = reload_cli(f, tmp_path / "state")
        assert r.returncode == 0 and "reroute listeners.0: limits" in r.stdout, r.stdout + r.stderr
        # the open connection still counts: a second one from this address is over the new limit
        with socket.create_connection((f.host, f.port), timeout=5) as second:
            second.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert _read_response(second, bytearray())[0] == 503
        kept.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _read_response(kept, buf)[0] == 200
    wait_until(lambda: f.status()["listeners"][0]["connections_open"] == 0, 5, 0.02, what="connections closed")
    assert http_get(f.host, f.port, "/")[0] == 200  # under the limit again
    assert f.status()["listeners"][0]["refused_connections"] == 1


def test_passive_detection_follows_the_targets_a_reload_added_and_removed(
        run_fivenines: Any, demos: list[Demo], tmp_path: Path) -> None:
    a, b, c = demos
    od = {"consecutive_5xx": 3, "max_ejection_percent": 100}
    spec = static_spec({"web": [a.address, b.address]}, outlier_detection=od)
    spec["target_groups"]["web"]["health_check"]["matcher"] = "200-599"  # only passive detection ejects
    f = run_fivenines(spec)
    f.wait_healthy()
    for _ in range(4):
        assert f.get("/")[0] == 200
    spec2 = static_spec({"web": [b.address, c.address]}, outlier_detection=od)
    spec2["state_dir"] = spec["state_dir"]
    spec2["target_groups"]["web"]["health_check"]["matcher"] = "200-599"
    write_spec(f.spec_path, spec2)
    r = reload_cli(f, tmp_path / "state")
    assert r.returncode == 0, r.stderr
    wait_until(lambda: [t["id"] for t in f.targets()] == ["web-2", "web-3"], 10, 0.05, what="web-1 removed")
    c.get("/_fail")  # the target the reload added answers 500 from now on
    for _ in range(12):
        f.get("/")  # retried on web-2 (idempotent): the client sees 200s
    ejections = [e for e in events(f) if e["kind"] == "ejection" and e["new"] == "ejected"]
    assert [e["target"] for e in ejections] == ["web-3"], ejections
    t = {x["id"]: x for x in f.targets()}
    assert t["web-3"]["ejection"]["ejected"] and not t["web-2"]["ejection"]["ejected"]
    assert t["web-2"]["ejection"]["consecutive_5xx"] == 0
    assert {f.get("/")[1].split()[1] for _ in range(4)} == {b"demo-b"}
