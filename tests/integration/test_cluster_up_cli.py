"""``fivenines up SPEC --node NAME`` refuses, before starting anything, what cannot run on this host:
each problem named by its field, exit 2 (no root needed: the checks are made here, on loopback)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PY, write_spec

pytestmark = pytest.mark.slow


def up(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "fivenines", "up", *args], capture_output=True, text=True, timeout=30)


def spec(**cluster: Any) -> dict[str, Any]:
    return {
        "name": "c",
        "listeners": [{"port": 0, "default_target_group": "web"}],
        "target_groups": {"web": {"instances": {"command": [PY, "-m", "fivenines.demo", "--host", "{host}",
                                                            "--port", "{port}"], "count": 2}}},
        "cluster": cluster,
    }


# loopback: every 127/8 address is this host's, so only etcd is missing
LOOP = {"nodes": [{"name": "a", "address": "127.0.0.1"}, {"name": "b", "address": "127.0.0.2"}],
        "vip": "127.0.0.100/8", "interface": "lo", "etcd": ["http://127.0.0.1:1"]}


def test_a_node_this_spec_does_not_name_or_a_missing_node_exits_2(tmp_path: Path) -> None:
    path = write_spec(tmp_path / "f.yaml", spec(**LOOP))
    r = up(str(path), "--node", "x")
    assert r.returncode == 2 and f"{path}: cluster.nodes: --node x: no such node; nodes: a, b" in r.stderr, r.stderr
    r = up(str(path))
    assert r.returncode == 2 and "cluster.nodes: this spec describes a cluster: give --node NAME, one of a, b" in r.stderr
    plain = spec(**LOOP)
    del plain["cluster"]
    r = up(str(write_spec(tmp_path / "plain.yaml", plain)), "--node", "a")
    assert r.returncode == 2 and "cluster: --node a: this spec has no cluster: section" in r.stderr
    assert not (tmp_path / ".fivenines").exists()


def test_etcd_unreachable_at_start_exits_2_naming_the_field_and_starts_nothing(tmp_path: Path) -> None:
    path = write_spec(tmp_path / "f.yaml", spec(**LOOP))
    t0 = time.monotonic()
    r = up(str(path), "--node", "a")
    assert r.returncode == 2, r.stderr
    assert f"{path}: cluster.etcd: no etcd endpoint answers (http://127.0.0.1:1/v3/kv/range:" in r.stderr
    assert "start it first" in r.stderr
    assert not (tmp_path / ".fivenines").exists(), "nothing started: not even the state dir"
    assert time.monotonic() - t0 < 20


def test_every_problem_with_this_host_is_named_at_once(tmp_path: Path) -> None:
    # TEST-NET-1 addresses are nobody's: not this host's, and the interface does not exist
    path = write_spec(tmp_path / "f.yaml", spec(
        nodes=[{"name": "a", "address": "192.0.2.11"}, {"name": "b", "address": "192.0.2.12"}],
        vip="192.0.2.100/24", interface="nosuch0", coordination="vrrp"))
    r = up(str(path), "--node", "b")
    assert r.returncode == 2
    assert f"{path}: target_groups.web.instances.ports: coordination vrrp has no store" in r.stderr  # the spec first
    fixed = spec(nodes=[{"name": "a", "address": "192.0.2.11"}, {"name": "b", "address": "192.0.2.12"}],
                 vip="192.0.2.100/24", interface="nosuch0", coordination="vrrp")
    fixed["target_groups"]["web"]["instances"]["ports"] = "9101-9102"
    path = write_spec(tmp_path / "g.yaml", fixed)
    r = up(str(path), "--node", "b")
    assert r.returncode == 2
    assert f"{path}: cluster.nodes.1.address: 192.0.2.12 is not an address of this host" in r.stderr
    assert "is this host node 'b'?" in r.stderr
    assert f"{path}: cluster.interface: this host has no interface 'nosuch0'" in r.stderr
    unbindable = f"{path}: listeners.0.host: cannot bind the VIP 192.0.2.100 before this node holds it"
    if Path("/proc/sys/net/ipv4/ip_nonlocal_bind").read_text().strip() == "0":
        assert unbindable in r.stderr and "net.ipv4.ip_nonlocal_bind=1" in r.stderr
    else:  # this host lets any address be bound
        assert unbindable not in r.stderr
    assert not (tmp_path / ".fivenines").exists()
