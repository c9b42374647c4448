"""`fivenines model SPEC [--json]` run as a real subprocess on spec files in tmp_path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def write_spec(tmp_path: Path, name: str, count: int, standby: int, reliability: dict[str, Any] | None = None,
               **top: Any) -> Path:
    group: dict[str, Any] = {
        "instances": {"command": ["python", "-m", "fivenines.demo", "--port", "{port}"], "count": count, "standby": standby},
        "health_check": {"interval": "1s", "timeout": "500ms", "unhealthy_threshold": 2},
    }
    if reliability is not None:
        group["reliability"] = reliability
    data = {"name": name, "listeners": [{"port": 0, "default_target_group": "web"}], "target_groups": {"web": group}, **top}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def run_model(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fivenines", "model", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )


def model_json(path: Path) -> dict[str, Any]:
    proc = run_model(str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def test_json_shape_and_a_standby_adds_nines(tmp_path: Path) -> None:
    two_plus_zero = model_json(write_spec(tmp_path, "a", 2, 0))
    two_plus_one = model_json(write_spec(tmp_path, "b", 2, 1, slo={"target": 99.9, "window": "30d"}))
    for data in (two_plus_zero, two_plus_one):
        assert {"availability", "nines", "downtime_per_year_s", "groups"} <= set(data)
        assert set(data["groups"]) == {"web"}
        assert 0 < data["groups"]["web"]["availability"] < 1
        assert data["downtime_per_year_s"] > 0
    assert two_plus_one["groups"]["web"]["nines"] > two_plus_zero["groups"]["web"]["nines"]
    assert two_plus_one["nines"] > two_plus_zero["nines"]
    assert two_plus_one["slo"]["meets"] is True


def test_text_output_names_every_part_and_the_assumptions(tmp_path: Path) -> None:
    proc = run_model(str(write_spec(tmp_path, "c", 2, 1)))
    assert proc.returncode == 0, proc.stderr
    for text in ("load balancer", "web", "2+1 hot", "overall", "dominated by", "assumed", "web: mtbf 30d"):
        assert text in proc.stdout, text


def test_declared_reliability_leaves_nothing_assumed_for_the_group(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "d", 3, 1, {"mtbf": "7d", "mttr": "30s", "standby_mode": "cold", "repair_crews": 1},
                      load_balancer={"reliability": {"mtbf": "90d", "mttr": "10s"}})
    data = model_json(path)
    assert data["assumptions"] == []
    assert data["groups"]["web"]["params"]["standby_mode"] == "cold"
    assert data["load_balancer"]["params"] == {"mtbf_s": 90 * 86400, "mttr_s": 10}


def test_bad_reliability_field_exits_2_naming_the_path(tmp_path: Path) -> None:
    proc = run_model(str(write_spec(tmp_path, "e", 2, 1, {"mtbf": "7d", "coverage": 1.5})), "--json")
    assert proc.returncode == 2
    assert "target_groups.web.reliability.coverage" in proc.stderr
    assert proc.stdout == ""


def test_the_bundled_demo_spec(tmp_path: Path) -> None:
    data = model_json(ROOT / "examples" / "demo.yaml")
    assert data["groups"]["web"]["params"]["active"] == 2
    assert data["groups"]["web"]["params"]["standby"] == 1


def test_the_cluster_demo_spec_text_and_json() -> None:
    spec = ROOT / "examples" / "cluster-demo.yaml"
    data = model_json(spec)
    assert data["nines"] >= 5.0
    assert data["cluster"]["mode"] == "etcd"
    assert [n["name"] for n in data["cluster"]["nodes"]] == ["a", "b"]
    assert data["cluster"]["takeover_time_s"] == 2.6
    assert data["cluster"]["findings"] == []
    proc = run_model(str(spec))
    assert proc.returncode == 0, proc.stderr
    for text in ("balancer tier", "2 nodes etcd", "takeover within 2.6 s: lease_ttl 2s + etcd's expiry sweep 0.5s",
                 "placement: web: actives web-1@a web-2@b; standbys web-3@a web-4@b", "cluster: node mtbf 180d"):
        assert text in proc.stdout, text


def test_a_cluster_spec_with_single_points_says_so(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "f", 2, 1, cluster={
        "nodes": [{"name": "a", "address": "10.0.0.11"}, {"name": "b", "address": "10.0.0.12"}],
        "vip": "10.0.0.100/24", "etcd": ["http://10.0.0.21:2379"]})
    proc = run_model(str(path))
    assert proc.returncode == 0, proc.stderr
    assert "etcd has one member: a single point of failure" in proc.stdout
    assert "web: losing node a leaves 1 of its instances, it needs 2" in proc.stdout
    bad = write_spec(tmp_path, "g", 2, 1, cluster={
        "nodes": [{"name": "a", "address": "10.0.0.11"}], "vip": "10.0.0.100/24", "etcd": ["http://10.0.0.21:2379"],
        "reliability": {"coverage": 2}})
    proc = run_model(str(bad))
    assert proc.returncode == 2 and "cluster.reliability.coverage" in proc.stderr
