"""The ``scaling:`` and ``load:`` sections of a target group: defaults, and every error with its field path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fivenines.errors import SpecError
from fivenines.runtime.scaling import rules_from_spec
from fivenines.spec import parse_spec
from tests.helpers import demo_spec, write_spec


def spec_with(count: int = 2, standby: int = 1, **group: Any) -> dict[str, Any]:
    return demo_spec(count=count, standby=standby, **group)


def errors_of(data: Any) -> list[str]:
    with pytest.raises(SpecError) as ei:
        parse_spec(data, "f.yaml")
    return [str(e) for e in ei.value.errors]


def test_defaults() -> None:
    sc = parse_spec(spec_with(scaling={"min": 2, "max": 8})).target_groups["web"].scaling
    assert sc is not None
    assert (sc.evaluation_interval, sc.scale_out_window, sc.scale_in_stabilization) == (2.0, 6.0, 180.0)
    assert (sc.max_step, sc.tolerance) == (4, 0.1)
    assert [p.metric() for p in sc.policies] == [("cpu", 50.0)]
    rules = rules_from_spec("web", sc)
    assert (rules.min, rules.max, rules.max_step, [p.metric.value for p in rules.policies]) == (2, 8, 4, ["cpu"])


def test_every_policy_kind_and_durations() -> None:
    sc = parse_spec(spec_with(scaling={
        "min": 1, "max": 4, "scale_in_stabilization": "5m", "scale_out_window": "10s", "evaluation_interval": "1s",
        "policies": [{"requests_per_target": 400}, {"in_flight_per_target": 8}, {"p99_latency": "250ms"},
                     {"cpu": 70}]})).target_groups["web"].scaling
    assert sc is not None and sc.scale_in_stabilization == 300.0
    rules = rules_from_spec("web", sc)
    assert [(p.metric.value, p.target) for p in rules.policies] == [
        ("requests_per_target", 400.0), ("in_flight_per_target", 8.0), ("p99_latency", 0.25), ("cpu", 70.0)]


@pytest.mark.parametrize(("scaling", "group", "message"), [
    ({"min": 3, "max": 2}, {}, "target_groups.web.scaling.min: must be at most max (2), got 3"),
    ({"min": 3, "max": 6}, {}, "target_groups.web.instances.count: the starting count must be within "
                               "scaling min..max (3..6), got 2"),
    ({"min": 1, "max": 1}, {}, "target_groups.web.instances.count: the starting count must be within "
                               "scaling min..max (1..1), got 2"),
    ({"min": 0, "max": 2}, {}, "target_groups.web.scaling.min: Input should be greater than or equal to 1 (got 0)"),
    ({"max": 2}, {}, "target_groups.web.scaling.min: required but missing"),
    ({"min": 1, "max": 4, "policies": []}, {}, "target_groups.web.scaling.policies: List should have at least 1 item "
                                               "after validation, not 0"),
    ({"min": 1, "max": 4, "policies": [{}]}, {}, "target_groups.web.scaling.policies.0: give exactly one of "
     "requests_per_target, in_flight_per_target, p99_latency, cpu (with its target)"),
    ({"min": 1, "max": 4, "policies": [{"cpu": 50, "requests_per_target": 100}]}, {},
     "target_groups.web.scaling.policies.0: give exactly one of requests_per_target, in_flight_per_target, "
     "p99_latency, cpu (with its target)"),
    ({"min": 1, "max": 4, "policies": [{"cpu": 50}, {"cpu": 60}]}, {},
     "target_groups.web.scaling.policies.1: cpu already in policies.0"),
    ({"min": 1, "max": 4, "policies": [{"p99_latency": "200ms"}]}, {},
     "target_groups.web.scaling.policies: p99_latency cannot tell how far the group may shrink (latency stays flat "
     "until an instance saturates): give it together with requests_per_target, in_flight_per_target or cpu"),
    ({"min": 1, "max": 4, "policies": [{"p99_latency": 0}, {"cpu": 50}]}, {},
     "target_groups.web.scaling.policies.0.p99_latency: must be greater than 0"),
    ({"min": 1, "max": 4, "policies": [{"requests_per_target": 0}]}, {},
     "target_groups.web.scaling.policies.0.requests_per_target: Input should be greater than 0 (got 0)"),
    ({"min": 1, "max": 4, "policies": [{"memory": 50}]}, {},
     "target_groups.web.scaling.policies.0.memory: unknown key; valid keys here: requests_per_target, "
     "in_flight_per_target, p99_latency, cpu"),
    ({"min": 1, "max": 4, "evaluation_interval": 0}, {},
     "target_groups.web.scaling.evaluation_interval: must be greater than 0"),
    ({"min": 1, "max": 4, "scale_out_window": "1s"}, {},
     "target_groups.web.scaling.scale_out_window: must be at least evaluation_interval (2s)"),
    ({"min": 1, "max": 4, "tolerance": 1}, {}, "target_groups.web.scaling.tolerance: Input should be less than 1 (got 1)"),
    ({"min": 1, "max": 4, "max_step": 0}, {},
     "target_groups.web.scaling.max_step: Input should be greater than or equal to 1 (got 0)"),
    ({"min": 1, "max": 8}, {"ports": "9101-9105"}, "target_groups.web.instances.ports: range 9101-9105 has 5 ports "
                                                   "but scaling.max + standby = 9"),
])
def test_scaling_errors_name_the_field(scaling: dict[str, Any], group: dict[str, Any], message: str) -> None:
    data = spec_with(scaling=scaling)
    data["target_groups"]["web"]["instances"].update(group)
    assert errors_of(data) == [message]


def test_only_groups_of_instances_scale() -> None:
    data = spec_with(scaling={"min": 1, "max": 3})
    web = data["target_groups"]["web"]
    del web["instances"]
    web["targets"] = ["127.0.0.1:9001"]
    assert errors_of(data) == ["target_groups.web.scaling: only groups of instances fivenines runs can scale "
                               "(give instances: to scale)"]


def test_a_replicated_group_does_not_scale() -> None:
    data = spec_with(count=1, standby=1, scaling={"min": 1, "max": 3}, replicated={"kind": "redis"})
    data["listeners"][0]["protocol"] = "tcp"
    assert "target_groups.web.scaling: only groups of instances fivenines runs can scale (a replicated group " \
           "has one primary)" in errors_of(data)


def test_scaling_needs_one_data_plane_process() -> None:
    data = spec_with(scaling={"min": 1, "max": 3})
    data["workers"] = 2
    assert errors_of(data) == ["target_groups.web.scaling: scaling needs workers: 1 (workers is 2: the worker "
                               "processes hold the targets they balance, set up at start)"]


def test_load_section() -> None:
    tg = parse_spec(spec_with(load={"mean_rps": 300, "peak_rps": 2000, "per_instance_rps": 500})).target_groups["web"]
    assert tg.load is not None and (tg.load.mean_rps, tg.load.peak_rps, tg.load.per_instance_rps) == (300, 2000, 500)
    assert errors_of(spec_with(load={"mean_rps": 300, "peak_rps": 200, "per_instance_rps": 500})) == [
        "target_groups.web.load.peak_rps: peak_rps (200) must be at least mean_rps (300)"]
    assert errors_of(spec_with(load={"mean_rps": 300, "peak_rps": 400})) == [
        "target_groups.web.load.per_instance_rps: required but missing"]


def test_instance_slots_counts_the_scaling_max() -> None:
    tg = parse_spec(spec_with(count=2, standby=1, scaling={"min": 1, "max": 6})).target_groups["web"]
    assert tg.instance_slots() == 7
    assert parse_spec(spec_with(count=2, standby=1)).target_groups["web"].instance_slots() == 3


def test_validate_exits_2_naming_file_and_field(tmp_path: Path) -> None:
    path = write_spec(tmp_path / "f.yaml", spec_with(scaling={"min": 3, "max": 2}))
    proc = subprocess.run([sys.executable, "-m", "fivenines", "validate", "--no-port-check", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "f.yaml" in proc.stderr and "target_groups.web.scaling.min: must be at most max (2), got 3" in proc.stderr

