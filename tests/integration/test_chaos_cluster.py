"""``fivenines chaos`` on a cluster: the namespace rig, two real nodes, a real etcd, real node faults,
each fault's measured VIP takeover beside the model's (docs/chaos.md, "Clusters")."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fivenines.runtime.supervisor import die_with_parent
from tests.helpers import PY, demo_spec, require_binary, require_rig, wait_until, write_spec

pytestmark = pytest.mark.slow


def chaos(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "fivenines", "chaos", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, preexec_fn=die_with_parent(os.getpid()))


def cluster_spec(tmp: Path) -> dict[str, Any]:
    """Two nodes and one etcd member at addresses of a real network: chaos moves them into its rig."""
    return {
        "name": "chaoscl",
        "state_dir": str(tmp / "state"),
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": [{"port": 8080, "default_target_group": "web"}],
        "target_groups": {"web": {
            "instances": {"command": [PY, "-m", "fivenines.demo", "--host", "{host}", "--port", "{port}"],
                          "count": 2, "standby": 1, "ports": "9101-9199", "stop_timeout": "2s"},
            "health_check": {"path": "/health", "interval": "200ms", "timeout": "150ms", "healthy_threshold": 2,
                             "unhealthy_threshold": 2, "startup_grace": "3s"},
            "retries": {"attempts": 3},
        }},
        "cluster": {"nodes": [{"name": "a", "address": "192.0.2.1"}, {"name": "b", "address": "192.0.2.2"}],
                    "vip": "192.0.2.100/24", "interface": "eth0", "etcd": ["http://192.0.2.9:2379"],
                    "lease_ttl": "2s"},
    }


def test_bad_combinations_exit_2_naming_the_option(tmp_path: Path) -> None:
    plain = demo_spec()
    plain["state_dir"] = str(tmp_path / "state")
    one = write_spec(tmp_path / "one.yaml", plain)
    r = chaos(str(one), "--faults", "kill,node", "--dry-run")
    assert r.returncode == 2 and f"--faults node: {one} has no cluster: section" in r.stderr, r.stderr
    r = chaos(str(one), "--schedule", "3s:partition", "--dry-run")
    assert r.returncode == 2 and "--schedule partition:" in r.stderr, r.stderr
    two = write_spec(tmp_path / "two.yaml", cluster_spec(tmp_path))
    r = chaos(str(two), "--faults", "node,hang", "--dry-run")
    assert r.returncode == 2 and "--faults hang:" in r.stderr and "node, lb and partition faults only" in r.stderr
    r = chaos(str(two), "--dry-run", "--schedule", "3s:node:b, 9s:lb")
    assert r.returncode == 0, r.stderr
    assert "  1  at   3.00s  node node b for 5s\n  2  at   9.00s  lb a worker\n" in r.stdout
    assert not (tmp_path / "state").exists()


def test_a_node_crash_and_a_partition_from_etcd_each_move_the_vip(tmp_path: Path) -> None:
    require_rig()
    require_binary("etcd")
    spec = write_spec(tmp_path / "cluster.yaml", cluster_spec(tmp_path))
    report = tmp_path / "report"
    r = chaos(str(spec), "--duration", "15s", "--rate", "50", "--schedule", "3s:node, 9s:partition",
              "--fault-duration", "2s", "--report", str(report), cwd=tmp_path, timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"^rig (\S+) built", r.stderr, re.M)
    assert m, r.stderr
    s = json.loads((report / "summary.json").read_text())
    c = s["cluster"]
    assert [(f["kind"], f["id"]) for f in c["faults"]] == [("node", 1), ("partition", 2)]
    bound = c["predicted_takeover_s"]
    assert bound == pytest.approx(2.6)  # lease_ttl 2 s + etcd's sweep + the move (model/cluster.py)
    for f in c["faults"]:
        # the holder hit lost the VIP and the other node took it, within the model's bound (+ slack: 2 shared cores)
        assert f["holder_before"] == f["node"] and f["holder_after"] not in (None, f["node"]), f
        assert 0.5 < f["takeover_s"] < bound + 1.5, f
        assert f["vip_dropped_s"] is not None and f["vip_dropped_s"] <= f["takeover_s"], f
        assert f["longest_gap_s"] is not None and f["longest_gap_s"] > 0.5, f
    node, part = c["faults"]
    assert node["vip_dropped_s"] < 0.2  # its cable pulled: gone at once
    assert part["vip_dropped_s"] > 0.5  # self-fenced: kept it until its lease could no longer be renewed
    assert c["two_holder_samples"] == 0  # etcd mode promises one holder at a time
    # every request that failed, failed in a fault's window, and is charged to one fault
    req = s["measured"]["requests"]
    assert req["before_first_fault"] == 0
    assert sum(f["failed_requests"] for f in c["faults"]) == c["failed_requests"] == req["failed"]
    assert part["failed_requests"] > 0
    # prediction beside measurement, in the same table as every chaos run
    rows = {row["quantity"]: row for row in s["predicted"]["table"]}
    take = rows["VIP takeover time (etcd)"]
    assert take["declared"] == "2.600 s" and take["measured"].startswith(f"{c['takeover_s']['mean']:.3f} s")
    avail = rows["availability during this run"]
    assert avail["measured"].startswith(f"{req['good']}/{req['valid']} = ")
    assert s["predicted"]["cluster"]["measured_takeover_s"] == c["takeover_s"]["mean"]
    assert "VIP takeover (etcd): measured" in r.stdout and "fault 2 partition" in r.stdout
    assert "VIP takeover" in (report / "report.html").read_text()
    # the rig is gone: no namespace of it left
    assert m.group(1) not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_ctrl_c_removes_the_rig_at_once(tmp_path: Path) -> None:
    require_rig()
    require_binary("etcd")
    spec = write_spec(tmp_path / "cluster.yaml", cluster_spec(tmp_path))
    log = tmp_path / "chaos.log"
    with log.open("w") as out:
        proc = subprocess.Popen([PY, "-m", "fivenines", "chaos", str(spec), "--duration", "30s", "--rate", "50",
                                 "--schedule", "2s:node", "--fault-duration", "10s", "--report",
                                 str(tmp_path / "report")], stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
                                preexec_fn=die_with_parent(os.getpid()))
    try:
        text = wait_until(lambda: "crashed" in (t := log.read_text()) and t, 40, 0.1, what="the node fault")
        m = re.search(r"^rig (\S+) built", text, re.M)
        assert m, text
        assert m.group(1) in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        proc.send_signal(signal.SIGINT)  # the load, the fault, the node restart: all still due
        assert proc.wait(8) == 130, log.read_text()
        assert "interrupted: injection stopped, the rig removed" in log.read_text()
        assert m.group(1) not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
