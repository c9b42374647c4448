"""``scaling:`` mapped onto EC2 Auto Scaling (pure): sizes, target-tracking policies, what has no equivalent."""

from __future__ import annotations

from typing import Any

from fivenines.cloud.mapping import map_spec
from fivenines.cloud.plan import Action, Observed, diff
from fivenines.cloud.resources import Kind, Network, Resource, Subnet
from fivenines.spec import parse_spec

NET = Network("vpc-1", (Subnet("subnet-a", "eu-west-1a", "vpc-1"), Subnet("subnet-b", "eu-west-1b", "vpc-1")), vcpus=2)


def spec(policies: list[dict[str, Any]] | None = None, protocol: str = "http", **scaling: Any) -> Any:
    sc: dict[str, Any] = {"min": 2, "max": 6, **scaling}
    if policies is not None:
        sc["policies"] = policies
    return parse_spec({
        "name": "shop",
        "listeners": [{"port": 80 if protocol == "http" else 5432, "protocol": protocol, "default_target_group": "web"}],
        "target_groups": {"web": {
            "instances": {"command": ["app", "--port", "{port}"], "count": 3, "standby": 1},
            "health_check": {"interval": "10s", "timeout": "5s", "healthy_threshold": 3},
            "slow_start": "60s",
            "scaling": sc,
        }},
    })


def policies(d: Any) -> dict[str, dict[str, Any]]:
    return {r.key: r.props for r in d.resources.values() if r.kind is Kind.SCALING_POLICY}


def test_sizes_and_the_two_mapped_policies() -> None:
    d = map_spec(spec([{"requests_per_target": 400}, {"cpu": 50}]), NET)
    assert d.blocking(adjust=False) == []
    asg = d.resources["asg/web"]
    # min..max actives, the standby on top; the starting count is sent at creation only
    assert (asg.props["min_size"], asg.props["max_size"]) == (3, 7) and "desired_capacity" not in asg.props
    assert asg.create_only == {"desired_capacity": 4}
    warmup = 300 + 10 * 3 + 60  # grace period + checks + slow start
    assert policies(d) == {
        "policy/web/requests_per_target": {
            "name": "fivenines-shop-web-requests-per-target", "auto_scaling_group": "@asg/web",
            "policy_type": "TargetTrackingScaling", "estimated_instance_warmup": warmup, "disable_scale_in": False,
            "metric": "ALBRequestCountPerTarget", "target_value": 24000.0,  # per minute
            "resource_label": {"load_balancer": "@lb/alb", "target_group": "@tg/web"},
        },
        "policy/web/cpu": {
            "name": "fivenines-shop-web-cpu", "auto_scaling_group": "@asg/web",
            "policy_type": "TargetTrackingScaling", "estimated_instance_warmup": warmup, "disable_scale_in": False,
            "metric": "ASGAverageCPUUtilization", "target_value": 25.0,  # 50% of one core of 2 vCPUs
        },
    }
    assert d.resources["policy/web/cpu"].refs == {"asg/web"}
    assert d.resources["policy/web/requests_per_target"].refs == {"asg/web", "lb/alb", "tg/web"}
    note = next(n for n in d.notes if n.startswith("target_groups.web.scaling:"))
    assert "scale_in_stabilization" in note and f"instance warm-up {warmup}s" in note
    assert any("the group's range is 3..7" in n for n in d.notes)  # the standby serves on AWS


def test_without_scaling_the_group_is_fixed() -> None:
    s = spec([{"cpu": 50}])
    s.target_groups["web"].scaling = None
    d = map_spec(s, NET)
    asg = d.resources["asg/web"].props
    assert (asg["min_size"], asg["max_size"], asg["desired_capacity"]) == (4, 4, 4) and not policies(d)


def test_what_aws_cannot_track_is_a_finding() -> None:
    d = map_spec(spec([{"requests_per_target": 400}, {"in_flight_per_target": 8}, {"p99_latency": "250ms"}]), NET)
    paths = {f.path: f for f in d.findings}
    inflight = paths["target_groups.web.scaling.policies.1.in_flight_per_target"]
    p99 = paths["target_groups.web.scaling.policies.2.p99_latency"]
    assert "no metric for requests in flight per target" in inflight.message
    assert "no metric for a latency percentile per target" in p99.message
    # written: it blocks unless --adjust leaves the policy out (the others remain)
    assert inflight.blocks(adjust=False) and not inflight.blocks(adjust=True)
    assert set(policies(d)) == {"policy/web/requests_per_target"}


def test_a_group_behind_a_network_load_balancer_has_no_request_count() -> None:
    d = map_spec(spec([{"requests_per_target": 400}], protocol="tcp"), NET)
    blocking = d.blocking(adjust=True)
    assert [f.path for f in blocking] == ["target_groups.web.scaling.policies"]  # nothing left to track
    assert "network load balancer" in next(f.message for f in d.findings if f.path.endswith("requests_per_target"))


def test_cpu_needs_the_vcpus_and_fits_in_them() -> None:
    d = map_spec(spec([{"cpu": 50}]), Network(NET.vpc_id, NET.subnets))
    f = next(f for f in d.findings if f.path == "target_groups.web.scaling.policies.0.cpu")
    assert f.nearest is None and "vCPUs of t3.micro are unknown" in f.message
    d = map_spec(spec([{"cpu": 300}]), NET)
    f = next(f for f in d.findings if f.path == "target_groups.web.scaling.policies.0.cpu")
    assert f.message == "300% of one core is 150% of a 2-vCPU t3.micro: more than it has" and f.nearest == "200"
    assert policies(d)["policy/web/cpu"]["target_value"] == 100.0
    default = map_spec(spec(), NET)  # the default policy (cpu 50) was not written: a warning, never a block
    assert default.blocking(adjust=False) == [] and policies(default)["policy/web/cpu"]["target_value"] == 25.0


def test_a_moved_desired_capacity_is_no_drift() -> None:
    d = map_spec(spec([{"cpu": 50}]), NET)
    observed = {k: Observed(Resource(r.kind, k, r.name, {**r.props, **r.create_only}), r.name)
                for k, r in d.resources.items()}
    observed["asg/web"].resource.props["desired_capacity"] = 6  # AWS scaled out
    assert diff("shop", d.resources, observed).empty
    observed["policy/web/cpu"].resource.props["target_value"] = 40.0  # changed out of band
    plan = diff("shop", d.resources, observed)
    assert [(c.action, c.key) for c in plan.changes] == [(Action.UPDATE, "policy/web/cpu")]
