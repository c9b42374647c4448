"""``scaling:`` on AWS against a real moto server with real boto3 clients (see test_aws.py).

moto stores Auto Scaling policies and sizes but does not evaluate them (no CloudWatch
alarms fire, nothing scales by itself): these tests check what is sent and read back --
the group's min/max/desired, the target-tracking policies created, updated and deleted,
and that a desired capacity AWS moved is left alone. What AWS then does with the
policies is AWS's (docs/aws.md says what cannot be tested here).
"""

from __future__ import annotations

from typing import Any

from fivenines.cloud.aws import AwsProvider, Prepared
from fivenines.cloud.plan import Action
from fivenines.spec import AwsSpec, Spec, parse_spec
from tests.helpers import require_module
from tests.integration.test_aws import clients, moto_server, moto_url, provider

__all__ = ["moto_server", "moto_url"]  # fixtures used here

require_module("boto3")
require_module("moto.server")

ASG = "fivenines-shop-web"


def scaled(**scaling: Any) -> Spec:
    tg: dict[str, Any] = {
        "instances": {"command": ["python3", "-m", "fivenines.demo", "--port", "{port}"], "count": 2, "standby": 1},
        "health_check": {"interval": "10s", "timeout": "5s", "healthy_threshold": 3},
    }
    if scaling:
        tg["scaling"] = scaling
    return parse_spec({"name": "shop", "listeners": [{"port": 80, "default_target_group": "web"}],
                       "target_groups": {"web": tg}})


def apply(p: AwsProvider, spec: Spec) -> Prepared:
    desired = p.desired(spec)
    assert desired.blocking(adjust=False) == [], desired.findings
    prepared = p.prepare(desired)
    assert prepared.conflicts == []
    p.apply(prepared, spec.aws or AwsSpec())
    return prepared


def group(url: str) -> dict[str, Any]:
    found: dict[str, Any] = clients(url)["autoscaling"].describe_auto_scaling_groups(
        AutoScalingGroupNames=[ASG])["AutoScalingGroups"][0]
    return found


def policies(url: str) -> dict[str, dict[str, Any]]:
    found = clients(url)["autoscaling"].describe_policies(AutoScalingGroupName=ASG)["ScalingPolicies"]
    return {p["PolicyName"]: p for p in found}


def test_scaling_maps_to_the_group_sizes_and_target_tracking_policies(moto_url: str) -> None:
    p = provider(moto_url)
    spec = scaled(min=2, max=6, policies=[{"requests_per_target": 400}, {"cpu": 50}])
    apply(p, spec)
    g = group(moto_url)
    assert (g["MinSize"], g["DesiredCapacity"], g["MaxSize"]) == (3, 3, 7)  # actives + the standby
    got = policies(moto_url)
    assert set(got) == {"fivenines-shop-web-requests-per-target", "fivenines-shop-web-cpu"}
    req = got["fivenines-shop-web-requests-per-target"]
    assert req["PolicyType"] == "TargetTrackingScaling" and req["EstimatedInstanceWarmup"] == 300 + 10 * 3
    tt = req["TargetTrackingConfiguration"]
    assert tt["TargetValue"] == 24000.0 and tt.get("DisableScaleIn") is False  # 400/s is 24000 a minute
    elb = clients(moto_url)["elbv2"]
    lb = elb.describe_load_balancers(Names=["shop-alb"])["LoadBalancers"][0]["LoadBalancerArn"]
    tg = elb.describe_target_groups(Names=["shop-web"])["TargetGroups"][0]["TargetGroupArn"]
    label = tt["PredefinedMetricSpecification"]
    assert label["PredefinedMetricType"] == "ALBRequestCountPerTarget"
    assert label["ResourceLabel"] == f"{lb.split(':loadbalancer/')[1]}/{tg.split(':')[-1]}"
    cpu = got["fivenines-shop-web-cpu"]["TargetTrackingConfiguration"]
    # t3.micro has 2 vCPUs (moto's instance type data, as AWS's): 50% of one core is 25% of the instance
    assert cpu["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ASGAverageCPUUtilization"
    assert cpu["TargetValue"] == 25.0
    # read back as written: nothing to do
    assert p.prepare(p.desired(spec)).plan.empty
    assert p.status("shop")["auto_scaling_groups"]["web"] == {
        "name": ASG, "min": 3, "desired": 3, "max": 7,
        "policies": [{"metric": "ASGAverageCPUUtilization", "target": 25.0},
                     {"metric": "ALBRequestCountPerTarget", "target": 24000.0}]}

    # AWS scales the group (here: by hand, moto evaluates no policy): no drift, apply leaves it
    clients(moto_url)["autoscaling"].set_desired_capacity(AutoScalingGroupName=ASG, DesiredCapacity=5)
    assert p.prepare(p.desired(spec)).plan.empty

    # new bounds and targets: the policy is updated in place, the one removed deleted
    spec2 = scaled(min=2, max=8, policies=[{"requests_per_target": 500}])
    plan = p.prepare(p.desired(spec2)).plan
    assert {(c.action, c.key) for c in plan.changes} == {
        (Action.UPDATE, "asg/web"), (Action.UPDATE, "policy/web/requests_per_target"),
        (Action.DELETE, "policy/web/cpu")}
    apply(p, spec2)
    g = group(moto_url)
    assert (g["MinSize"], g["DesiredCapacity"], g["MaxSize"]) == (3, 5, 9)  # AWS's 5 kept
    got = policies(moto_url)
    assert list(got) == ["fivenines-shop-web-requests-per-target"]
    assert got["fivenines-shop-web-requests-per-target"]["TargetTrackingConfiguration"]["TargetValue"] == 30000.0
    assert p.prepare(p.desired(spec2)).plan.empty

    # scaling removed: a fixed group of count + standby, no policy left
    apply(p, scaled())
    g = group(moto_url)
    assert (g["MinSize"], g["DesiredCapacity"], g["MaxSize"]) == (3, 3, 3)
    assert policies(moto_url) == {}

    # and back, then destroy: the policies go with the group
    apply(p, spec)
    assert len(policies(moto_url)) == 2
    gone = p.prepare_destroy("shop")
    assert (Action.DELETE, "policy/web/cpu") in {(c.action, c.key) for c in gone.plan.changes}
    p.apply(gone, AwsSpec())
    assert clients(moto_url)["autoscaling"].describe_policies()["ScalingPolicies"] == []
    assert p.prepare_destroy("shop").plan.empty


def test_a_policy_edited_out_of_band_is_repaired_and_foreign_ones_are_left(moto_url: str) -> None:
    p = provider(moto_url)
    spec = scaled(min=2, max=6, policies=[{"cpu": 60}])
    apply(p, spec)
    asg = clients(moto_url)["autoscaling"]
    asg.put_scaling_policy(AutoScalingGroupName=ASG, PolicyName="fivenines-shop-web-cpu",
                           PolicyType="TargetTrackingScaling",
                           TargetTrackingConfiguration={"PredefinedMetricSpecification": {
                               "PredefinedMetricType": "ASGAverageCPUUtilization"}, "TargetValue": 80.0})
    asg.put_scaling_policy(AutoScalingGroupName=ASG, PolicyName="someone-elses", PolicyType="TargetTrackingScaling",
                           TargetTrackingConfiguration={"PredefinedMetricSpecification": {
                               "PredefinedMetricType": "ASGAverageNetworkIn"}, "TargetValue": 1e6})
    plan = p.prepare(p.desired(spec)).plan
    change = next(c for c in plan.changes if c.key == "policy/web/cpu")
    assert change.action is Action.UPDATE
    assert {(f.path, f.old, f.new) for f in change.fields} >= {("target_value", 80.0, 30.0)}
    apply(p, spec)
    got = policies(moto_url)
    assert got["fivenines-shop-web-cpu"]["TargetTrackingConfiguration"]["TargetValue"] == 30.0
    assert "someone-elses" in got  # not ours: never touched
    assert p.prepare(p.desired(spec)).plan.empty


def test_an_instance_type_aws_does_not_know_cannot_convert_cpu(moto_url: str) -> None:
    spec = scaled(min=1, max=3, policies=[{"cpu": 50}])
    spec.aws = AwsSpec(instance_type="t9.imaginary")
    desired = provider(moto_url).desired(spec)
    (f,) = [f for f in desired.findings if f.path == "target_groups.web.scaling.policies.0.cpu"]
    assert "vCPUs of t9.imaginary are unknown" in f.message and f.blocks(adjust=True)


def test_the_provider_reads_the_vcpus_of_an_instance_type(moto_url: str) -> None:
    p = provider(moto_url)
    assert (p.vcpus("t3.micro"), p.vcpus("m5.2xlarge"), p.vcpus("t9.imaginary")) == (2, 8, None)



def test_plan_apply_and_status_of_a_scaled_group_on_the_command_line(moto_url: str, tmp_path: Any) -> None:
    from tests.helpers import write_spec
    from tests.integration.test_aws_cli import fivenines_aws

    raw = {"name": "shop", "listeners": [{"port": 80, "default_target_group": "web"}],
           "target_groups": {"web": {
               "instances": {"command": ["app", "--port", "{port}"], "count": 2, "standby": 1},
               "health_check": {"interval": "10s", "timeout": "5s"},
               "scaling": {"min": 2, "max": 6, "policies": [{"requests_per_target": 400},
                                                            {"p99_latency": "250ms"}]}}}}
    spec = str(write_spec(tmp_path / "shop.yaml", raw))
    plan = fivenines_aws(moto_url, "plan", spec)
    assert plan.returncode == 2, plan.stdout + plan.stderr  # p99_latency has no AWS equivalent: written, it blocks
    assert ("target_groups.web.scaling.policies.1.p99_latency: EC2 Auto Scaling target tracking has no metric for "
            "a latency percentile per target; nearest valid value: no such policy on AWS") in plan.stderr
    plan = fivenines_aws(moto_url, "plan", spec, "--adjust")
    assert plan.returncode == 0, plan.stderr
    for line in ("+ create scaling policy fivenines-shop-web-requests-per-target", "target_value: 24000.0",
                 "metric: ALBRequestCountPerTarget", "min_size: 3", "max_size: 7", "desired_capacity: 3"):
        assert line in plan.stdout, line
    applied = fivenines_aws(moto_url, "apply", spec, "--adjust")
    assert applied.returncode == 0, applied.stderr
    status = fivenines_aws(moto_url, "status", spec)
    assert ("web: Auto Scaling group fivenines-shop-web: 3 instances of 3..7 "
            "(ALBRequestCountPerTarget target 24000)") in status.stdout, status.stdout
    assert fivenines_aws(moto_url, "destroy", spec, "--yes").returncode == 0
