"""Clients reach a replicated Redis only through fivenines' TCP listeners: writes to the primary, reads to replicas."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from typing import Any

import pytest

from fivenines.runtime.redis import encode_command
from tests.helpers import PY, Fivenines, wait_until
from tests.redis_helpers import SyncRedis, group, published, redis_spec, wait_settled

pytestmark = pytest.mark.slow


def through(f: Fivenines) -> SyncRedis:
    return SyncRedis(f.host, f.port, 3.0)


def served_by(c: SyncRedis) -> int:
    """The port of the Redis server a proxied connection reached."""
    return int(c.info("server")["tcp_port"])


def port_of(t: dict[str, Any]) -> int:
    return int(t["address"].rsplit(":", 1)[1])


def assert_cut(c: SyncRedis, within: float = 10.0) -> None:
    """fivenines closed (or reset) this proxied connection. A PING is sent: an open connection to a
    live server answers it, one to a hung server leaves it unanswered, and either fails here; a
    timeout is never taken for a cut."""
    c.sock.settimeout(within)
    try:
        c.sock.sendall(encode_command("PING"))
        data = c.sock.recv(100)
    except TimeoutError:
        pytest.fail(f"the connection was not cut: still open, unanswered, {within:g}s later")
    except ConnectionError:
        return  # reset, or a broken pipe on a connection already closed: cut
    assert data == b"", f"the connection was not cut: the server answered {data!r}"


def test_writes_go_only_to_the_primary_and_reads_only_to_replicas_within_the_lag_bound(
        run_fivenines: Any) -> None:
    f = run_fivenines(redis_spec(standby=2, read_listener={"port": 0, "max_lag": 1 << 20}))
    p = wait_settled(f)
    for _ in range(6):
        with through(f) as c:
            assert served_by(c) == port_of(p) and c.info()["role"] == "master"
            assert c.cmd("SET", "k", "v") == "OK" and c.cmd("WAIT", 2, 1000) == 2
    rl = wait_until(lambda: (g := group(f))["replication"].get("read_listener") and
                    len(g["replication"]["readers"]) == 2 and g["replication"]["read_listener"], 5)
    host, port = rl["address"].rsplit(":", 1)
    replicas = {port_of(t) for t in group(f)["targets"] if t["id"] != p["id"]}
    seen = set()
    for _ in range(6):
        with SyncRedis(host, int(port), 3.0) as c:
            seen.add(served_by(c))
            assert c.info()["role"] == "slave" and c.cmd("GET", "k") == b"v"
    assert seen == replicas


def test_failover_and_switchover_cut_connections_to_the_old_primary(run_fivenines: Any) -> None:
    f = run_fivenines(redis_spec(standby=2))
    old = wait_settled(f)
    before = through(f)
    assert served_by(before) == port_of(old)
    # a planned switchover: the old primary stays up, but no connection may stay on it
    r = subprocess.run([PY, "-m", "fivenines", "switchover", "cache", "--to", "cache-2", "-f", str(f.spec_path),
                        "--admin", f.admin], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert_cut(before)
    before.close()
    new = published(f)
    assert new is not None and new["id"] == "cache-2"
    with through(f) as c:
        assert served_by(c) == port_of(new) and c.cmd("SET", "fresh", "1") == "OK"
    # an unplanned failover: the hung primary's connections are cut when it is replaced
    held = through(f)
    os.kill(new["pid"], signal.SIGSTOP)
    try:
        wait_until(lambda: (p := published(f)) and p["id"] != "cache-2", 5, 0.01, what="failover")
        assert_cut(held)
    finally:
        os.kill(new["pid"], signal.SIGCONT)
        held.close()
    third = wait_settled(f)
    with through(f) as c:
        assert served_by(c) == port_of(third)


def test_with_no_primary_a_client_is_closed_not_sent_to_a_replica(run_fivenines: Any) -> None:
    f = run_fivenines(redis_spec(standby=1))
    p = wait_settled(f)
    replica = next(t for t in group(f)["targets"] if t["id"] != p["id"])
    os.kill(replica["pid"], signal.SIGSTOP)
    try:
        # the primary dies while its only replica is hung: in sync mode no one may be promoted
        os.kill(p["pid"], signal.SIGKILL)
        rep = wait_until(lambda: (g := group(f))["replication"]["phase"] == "no_primary" and g["replication"], 5)
        assert "unreachable" in rep["last_election"]
        for _ in range(3):
            with socket.create_connection((f.host, f.port), timeout=2) as s:
                s.sendall(b"PING\r\n")
                try:
                    assert s.recv(100) == b""  # closed by fivenines: no target to send it to
                except ConnectionResetError:
                    pass
    finally:
        os.kill(replica["pid"], signal.SIGCONT)
    # the replica answers again: it is promoted (it has every acknowledged write), and serves
    new = wait_until(lambda: (x := published(f)) and x, 10, 0.02, what="a primary again")
    assert new["id"] == replica["id"]
    with through(f) as c:
        assert c.info()["role"] == "master"
