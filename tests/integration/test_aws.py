"""The AWS provider against a real moto server over HTTP, with real boto3 clients.

Nothing is patched: moto runs in server mode on 127.0.0.1 (port 0) and the provider
talks to it through ``endpoint_url`` exactly as it talks to AWS. Credentials are
dummies set in the environment. moto is lenient where AWS is not (duplicate load
balancer names, every target healthy), so idempotency is checked by counting what
exists, not by trusting moto to refuse duplicates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fivenines.cloud.aws import AwsOptions, AwsProvider, Prepared
from fivenines.cloud.plan import Action
from fivenines.cloud.resources import TAG_MANAGED, TAG_STACK
from fivenines.errors import ProviderError
from fivenines.spec import AwsSpec, Spec, load_spec, parse_spec
from tests.helpers import require_module
from tests.moto_helpers import AWS_ENV, empty_account, moto_server

# the moto server and real boto3 clients: skipped where they are not installed, required under CI
require_module("boto3")
require_module("moto.server")

__all__ = ["AWS_ENV", "moto_server"]  # shared with the other AWS tests

REGION = "eu-west-1"
EXAMPLE = Path(__file__).parents[2] / "examples" / "aws-demo.yaml"

@pytest.fixture
def moto_url(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A moto server with an empty account, and dummy credentials in the environment."""
    return empty_account(moto_server, monkeypatch)


def provider(url: str) -> AwsProvider:
    return AwsProvider(AwsOptions(region=REGION, endpoint_url=url), poll=0.05, timeout=20)


def clients(url: str) -> dict[str, Any]:
    import boto3

    s = boto3.Session(region_name=REGION)
    return {name: s.client(name, endpoint_url=url) for name in ("ec2", "elbv2", "autoscaling")}


def rich_spec(name: str = "shop") -> Spec:
    return parse_spec(
        {
            "name": name,
            "listeners": [
                {
                    "port": 80,
                    "protocol": "http",
                    "default_target_group": "web",
                    "rules": [
                        {
                            "name": "api",
                            "match": {"path": ["/api/*"], "method": ["GET", "POST"], "header": {"X-Env": ["canary"]}},
                            "forward": {"target_groups": {"web": 90, "canary": 10}, "stickiness": "60s"},
                        },
                        {"match": {"path": ["/old"]}, "redirect": {"url": "https://#{host}/new?#{query}", "status": 301}},
                        {
                            "match": {"host": ["down.example.com"], "query": {"v": "1"}, "source_ip": ["10.0.0.0/8"]},
                            "fixed_response": {"status": 503, "body": "maintenance"},
                        },
                    ],
                },
                {"port": 5432, "protocol": "tcp", "default_target_group": "db"},
            ],
            "target_groups": {
                "web": {
                    "algorithm": "least_outstanding_requests",
                    "instances": {"command": ["python3", "-m", "fivenines.demo", "--port", "{port}"], "count": 2, "standby": 1},
                    "health_check": {
                        "path": "/healthz",
                        "port": 8081,
                        "interval": "10s",
                        "timeout": "3s",
                        "healthy_threshold": 3,
                        "unhealthy_threshold": 4,
                        "matcher": "200,302",
                    },
                    "stickiness": {"enabled": True, "duration": "1h"},
                    "deregistration_delay": "45s",
                },
                "canary": {
                    "instances": {"command": "python3 -m fivenines.demo --port {port}", "shell": True, "count": 1},
                    "health_check": {"interval": "5s", "timeout": "2s"},
                    "slow_start": "60s",
                },
                "db": {
                    "targets": ["10.0.1.5:5432", "10.0.2.5:5432"],
                    "health_check": {"protocol": "tcp", "interval": "10s", "timeout": "5s", "unhealthy_threshold": 3},
                },
            },
        }
    )


def prepare(p: AwsProvider, spec: Spec) -> Prepared:
    desired = p.desired(spec)
    assert desired.blocking(adjust=False) == [], desired.findings
    return p.prepare(desired)


def apply(p: AwsProvider, spec: Spec) -> Prepared:
    prepared = prepare(p, spec)
    assert prepared.conflicts == []
    p.apply(prepared, spec.aws or AwsSpec())
    return prepared


def tagged(url: str, stack: str) -> dict[str, list[str]]:
    """Every resource carrying the stack's tags, found independently of the provider."""
    c = clients(url)
    ec2, elb, asg = c["ec2"], c["elbv2"], c["autoscaling"]
    flt = [{"Name": f"tag:{TAG_STACK}", "Values": [stack]}]
    out: dict[str, list[str]] = {}
    out["security_groups"] = [g["GroupName"] for g in ec2.describe_security_groups(Filters=flt)["SecurityGroups"]]
    out["launch_templates"] = [t["LaunchTemplateName"] for t in ec2.describe_launch_templates(Filters=flt)["LaunchTemplates"]]
    out["auto_scaling_groups"] = [g["AutoScalingGroupName"] for g in asg.describe_auto_scaling_groups(Filters=flt)["AutoScalingGroups"]]
    arns: list[str] = [lb["LoadBalancerArn"] for lb in elb.describe_load_balancers()["LoadBalancers"]]
    arns += [tg["TargetGroupArn"] for tg in elb.describe_target_groups()["TargetGroups"]]
    for lb_arn in [a for a in arns if ":loadbalancer/" in a]:
        for li in elb.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]:
            arns.append(li["ListenerArn"])
            arns += [r["RuleArn"] for r in elb.describe_rules(ListenerArn=li["ListenerArn"])["Rules"] if not r["IsDefault"]]
    out["elb"] = []
    for i in range(0, len(arns), 20):
        for d in elb.describe_tags(ResourceArns=arns[i : i + 20])["TagDescriptions"]:
            tags = {t["Key"]: t["Value"] for t in d["Tags"]}
            if tags.get(TAG_STACK) == stack:
                assert tags.get(TAG_MANAGED) == "true"
                out["elb"].append(d["ResourceArn"])
    running = ec2.describe_instances(Filters=[*flt, {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    out["instances"] = [i["InstanceId"] for r in running["Reservations"] for i in r["Instances"]]
    return {k: v for k, v in out.items() if v}


# --------------------------------------------------------------------------- tests


def test_plan_on_an_empty_account_creates_everything_and_changes_nothing(moto_url: str) -> None:
    p = provider(moto_url)
    prepared = prepare(p, rich_spec())
    plan = prepared.plan
    assert {c.action for c in plan.changes} == {Action.CREATE}
    kinds = sorted(c.kind.value for c in plan.changes)
    assert kinds.count("rule") == 3 and kinds.count("target_group") == 3 and kinds.count("load_balancer") == 2
    assert kinds.count("auto_scaling_group") == 2 and kinds.count("launch_template") == 2
    assert tagged(moto_url, "shop") == {}


def test_apply_is_idempotent_and_health_checks_arrive_unchanged(moto_url: str) -> None:
    p = provider(moto_url)
    spec = rich_spec()
    apply(p, spec)
    again = prepare(p, spec)
    assert again.plan.empty, again.plan.changes
    # a third run through apply: no step at all
    assert p.apply(again, AwsSpec()) == 0

    elb = clients(moto_url)["elbv2"]
    lbs = [lb for lb in elb.describe_load_balancers()["LoadBalancers"] if lb["LoadBalancerName"].startswith("shop-")]
    assert sorted(lb["LoadBalancerName"] for lb in lbs) == ["shop-alb", "shop-nlb"]  # no duplicates
    tgs = {tg["TargetGroupName"]: tg for tg in elb.describe_target_groups()["TargetGroups"]}
    web = tgs["shop-web"]
    hc = spec.target_groups["web"].health_check
    assert web["HealthCheckProtocol"] == "HTTP"
    assert web["HealthCheckPath"] == hc.path == "/healthz"
    assert web["HealthCheckPort"] == str(hc.port)
    assert web["HealthCheckIntervalSeconds"] == hc.interval == 10
    assert web["HealthCheckTimeoutSeconds"] == hc.timeout == 3
    assert web["HealthyThresholdCount"] == hc.healthy_threshold == 3
    assert web["UnhealthyThresholdCount"] == hc.unhealthy_threshold == 4
    assert web["Matcher"]["HttpCode"] == hc.matcher == "200,302"
    db = tgs["shop-db"]
    assert (db["Protocol"], db["HealthCheckProtocol"], db["HealthCheckIntervalSeconds"], db["HealthCheckTimeoutSeconds"]) == ("TCP", "TCP", 10, 5)
    assert db["UnhealthyThresholdCount"] == 3
    attrs = {a["Key"]: a["Value"] for a in elb.describe_target_group_attributes(TargetGroupArn=web["TargetGroupArn"])["Attributes"]}
    assert attrs["deregistration_delay.timeout_seconds"] == "45"
    assert attrs["load_balancing.algorithm.type"] == "least_outstanding_requests"
    assert (attrs["stickiness.enabled"], attrs["stickiness.type"], attrs["stickiness.lb_cookie.duration_seconds"]) == ("true", "lb_cookie", "3600")
    canary = {a["Key"]: a["Value"] for a in elb.describe_target_group_attributes(TargetGroupArn=tgs["shop-canary"]["TargetGroupArn"])["Attributes"]}
    assert canary["slow_start.duration_seconds"] == "60"
    targets = elb.describe_target_health(TargetGroupArn=db["TargetGroupArn"])["TargetHealthDescriptions"]
    assert sorted(f"{t['Target']['Id']}:{t['Target']['Port']}" for t in targets) == ["10.0.1.5:5432", "10.0.2.5:5432"]

    asg = clients(moto_url)["autoscaling"].describe_auto_scaling_groups(AutoScalingGroupNames=["fivenines-shop-web"])["AutoScalingGroups"][0]
    assert (asg["MinSize"], asg["DesiredCapacity"], asg["MaxSize"]) == (3, 3, 3)
    assert asg["HealthCheckType"] == "ELB" and asg["HealthCheckGracePeriod"] == 300
    assert len(asg["VPCZoneIdentifier"].split(",")) >= 2
    assert asg["TargetGroupARNs"] == [web["TargetGroupArn"]]
    assert len(asg["Instances"]) == 3

    # the weighted, sticky forward rule arrived as written
    alb = next(lb for lb in lbs if lb["Type"] == "application")
    listener = elb.describe_listeners(LoadBalancerArn=alb["LoadBalancerArn"])["Listeners"][0]
    rules = {r["Priority"]: r for r in elb.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"]}
    fwd = rules["1"]["Actions"][0]["ForwardConfig"]
    weights = {g["TargetGroupArn"]: g["Weight"] for g in fwd["TargetGroups"]}
    assert weights == {web["TargetGroupArn"]: 90, tgs["shop-canary"]["TargetGroupArn"]: 10}
    assert fwd["TargetGroupStickinessConfig"] == {"Enabled": True, "DurationSeconds": 60}
    assert rules["2"]["Actions"][0]["RedirectConfig"]["StatusCode"] == "HTTP_301"


def test_drift_is_shown_and_repaired(moto_url: str) -> None:
    p = provider(moto_url)
    spec = rich_spec()
    apply(p, spec)
    elb = clients(moto_url)["elbv2"]
    tgs = {tg["TargetGroupName"]: tg for tg in elb.describe_target_groups()["TargetGroups"]}
    # out of band: a health check changed, a rule deleted, a listener and its target group deleted
    elb.modify_target_group(TargetGroupArn=tgs["shop-web"]["TargetGroupArn"], HealthCheckIntervalSeconds=30, HealthCheckPath="/")
    lbs = {lb["LoadBalancerName"]: lb for lb in elb.describe_load_balancers()["LoadBalancers"]}
    http = elb.describe_listeners(LoadBalancerArn=lbs["shop-alb"]["LoadBalancerArn"])["Listeners"][0]
    rule2 = next(r for r in elb.describe_rules(ListenerArn=http["ListenerArn"])["Rules"] if r["Priority"] == "2")
    elb.delete_rule(RuleArn=rule2["RuleArn"])
    tcp = elb.describe_listeners(LoadBalancerArn=lbs["shop-nlb"]["LoadBalancerArn"])["Listeners"][0]
    elb.delete_listener(ListenerArn=tcp["ListenerArn"])
    elb.delete_target_group(TargetGroupArn=tgs["shop-db"]["TargetGroupArn"])

    plan = prepare(p, spec).plan
    shown = {(c.action, c.key) for c in plan.changes}
    assert shown == {
        (Action.UPDATE, "tg/web"),
        (Action.CREATE, "rule/80/2"),
        (Action.CREATE, "listener/5432"),
        (Action.CREATE, "tg/db"),
    }
    web = next(c for c in plan.changes if c.key == "tg/web")
    assert {(f.path, f.old, f.new) for f in web.fields} == {
        ("health_check.interval", 30, 10),
        ("health_check.path", "/", "/healthz"),
    }
    apply(p, spec)
    assert prepare(p, spec).plan.empty
    tgs = {tg["TargetGroupName"]: tg for tg in elb.describe_target_groups()["TargetGroups"]}
    assert tgs["shop-web"]["HealthCheckIntervalSeconds"] == 10
    assert len(elb.describe_target_health(TargetGroupArn=tgs["shop-db"]["TargetGroupArn"])["TargetHealthDescriptions"]) == 2


def test_an_interrupted_apply_can_be_rerun_to_completion(moto_url: str) -> None:
    spec = rich_spec()
    seen: list[str] = []

    def crash_after_six(msg: str) -> None:
        seen.append(msg)
        if len(seen) == 7:
            raise KeyboardInterrupt  # the operator's Ctrl-C, mid-apply

    p = AwsProvider(AwsOptions(region=REGION, endpoint_url=moto_url), poll=0.05, timeout=20, log=crash_after_six)
    with pytest.raises(KeyboardInterrupt):
        p.apply(prepare(p, spec), AwsSpec())
    half = prepare(provider(moto_url), spec)
    assert half.conflicts == []
    assert half.plan.count(Action.CREATE) == 16 - 6
    apply(provider(moto_url), spec)
    assert prepare(provider(moto_url), spec).plan.empty
    elb = clients(moto_url)["elbv2"]
    names = sorted(lb["LoadBalancerName"] for lb in elb.describe_load_balancers()["LoadBalancers"])
    assert names == ["shop-alb", "shop-nlb"]


def test_destroy_leaves_nothing_tagged_and_spares_untagged_resources(moto_url: str) -> None:
    c = clients(moto_url)
    vpc = c["ec2"].describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    bystander_sg = c["ec2"].create_security_group(GroupName="bystander", Description="not ours", VpcId=vpc)["GroupId"]
    bystander_tg = c["elbv2"].create_target_group(Name="bystander", Protocol="HTTP", Port=80, VpcId=vpc)["TargetGroups"][0]
    p = provider(moto_url)
    spec = rich_spec()
    apply(p, spec)
    assert set(tagged(moto_url, "shop")) == {"security_groups", "launch_templates", "auto_scaling_groups", "elb", "instances"}
    gone = p.prepare_destroy("shop")
    assert {ch.action for ch in gone.plan.changes} == {Action.DELETE}
    assert len(gone.plan.changes) == 16
    p.apply(gone, AwsSpec())
    assert tagged(moto_url, "shop") == {}
    assert p.prepare_destroy("shop").plan.empty
    assert c["ec2"].describe_security_groups(GroupIds=[bystander_sg])["SecurityGroups"]
    assert c["elbv2"].describe_target_groups(TargetGroupArns=[bystander_tg["TargetGroupArn"]])["TargetGroups"]


def test_refuses_to_adopt_a_same_named_resource_it_does_not_own(moto_url: str) -> None:
    c = clients(moto_url)
    vpc = c["ec2"].describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    c["elbv2"].create_target_group(Name="shop-web", Protocol="HTTP", Port=80, VpcId=vpc)
    other = c["elbv2"].create_target_group(
        Name="shop-canary", Protocol="HTTP", Port=80, VpcId=vpc, Tags=[{"Key": TAG_STACK, "Value": "other"}, {"Key": TAG_MANAGED, "Value": "true"}]
    )["TargetGroups"][0]
    p = provider(moto_url)
    prepared = prepare(p, rich_spec())
    assert len(prepared.conflicts) == 2
    web, canary = sorted(prepared.conflicts, key=lambda s: "canary" in s)
    assert "target group shop-web already exists" in web and "not tagged fivenines:stack=shop" in web
    assert "refusing to adopt" in web
    assert "of fivenines stack 'other'" in canary and other["TargetGroupArn"] in canary
    with pytest.raises(ProviderError, match="refusing to adopt"):
        p.apply(prepared, AwsSpec())
    assert tagged(moto_url, "shop") == {}


def test_aws_errors_become_one_line_naming_the_resource(moto_url: str) -> None:
    spec = parse_spec(
        {
            "name": "broken",
            "listeners": [{"port": 80, "default_target_group": "web"}],
            "target_groups": {"web": {"targets": ["10.0.0.5:80"], "health_check": {"interval": "5s", "timeout": "2s"}}},
            "aws": {"subnets": ["subnet-00000000000000000", "subnet-11111111111111111"]},
        }
    )
    with pytest.raises(ProviderError) as exc:
        provider(moto_url).desired(spec)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith("aws.subnets: looking up subnet-00000000000000000")
    assert "InvalidSubnetID.NotFound" in msg


def test_the_example_applies_cleanly(moto_url: str) -> None:
    spec = load_spec(EXAMPLE)
    assert spec.aws is not None
    p = provider(moto_url)
    desired = p.desired(spec)
    assert desired.findings == []
    apply(p, spec)
    assert prepare(p, spec).plan.empty
    status = p.status("aws-demo")
    (lb,) = status["load_balancers"]
    assert lb["type"] == "application" and lb["urls"][0].endswith(":80/")
    targets = status["target_groups"]["web"]["targets"]
    assert len(targets) == 3  # N + M: 2 active + 1 standby
    assert all(t["lifecycle"] == "InService" and t["port"] == 8080 for t in targets)
    zones = {s.availability_zone for s in p.network(spec.aws).subnets}
    assert len(zones) >= 2
    tg = clients(moto_url)["elbv2"].describe_target_groups(Names=["aws-demo-web"])["TargetGroups"][0]
    assert (tg["HealthCheckPath"], tg["HealthCheckIntervalSeconds"], tg["HealthCheckTimeoutSeconds"]) == ("/health", 5, 2)
    raw = yaml.safe_load(EXAMPLE.read_text())
    assert raw["target_groups"]["web"]["instances"]["count"] == 2
    assert raw["target_groups"]["web"]["instances"]["standby"] == 1


def test_destroy_refuses_to_take_foreign_listeners_down_with_the_load_balancer(moto_url: str) -> None:
    p = provider(moto_url)
    spec = rich_spec()
    apply(p, spec)
    elb = clients(moto_url)["elbv2"]
    alb = elb.describe_load_balancers(Names=["shop-alb"])["LoadBalancers"][0]
    web = elb.describe_target_groups(Names=["shop-web"])["TargetGroups"][0]
    foreign = elb.create_listener(  # someone else's listener, untagged, on the stack's ALB
        LoadBalancerArn=alb["LoadBalancerArn"], Port=8443, Protocol="HTTP",
        DefaultActions=[{"Type": "forward", "TargetGroupArn": web["TargetGroupArn"]}],
    )["Listeners"][0]
    gone = p.prepare_destroy("shop")
    assert gone.conflicts == [
        "load balancer shop-alb has listeners not managed by fivenines (ports 8443); "
        "deleting it would delete them: remove them first"
    ]
    with pytest.raises(ProviderError, match="not managed by fivenines"):
        p.apply(gone, AwsSpec())
    assert elb.describe_listeners(ListenerArns=[foreign["ListenerArn"]])["Listeners"]
    assert "security_groups" in tagged(moto_url, "shop")  # nothing was deleted
    # and a plain apply leaves the foreign listener alone
    assert prepare(p, spec).plan.empty


# --------------------------------------------------------------------------- TLS


def tls_spec(folder: Path, name: str = "secure") -> tuple[Spec, Path]:
    data = {
        "name": name,
        "listeners": [
            {"port": 80, "default_target_group": "web",
             "rules": [{"match": {"path": ["*"]}, "redirect": {"url": "https://#{host}:443/#{path}?#{query}", "status": 301}}]},
            {"port": 443, "protocol": "https", "default_target_group": "web", "ssl_policy": "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
             "certificates": [{"cert": "site.pem", "key": "site.key"}, {"cert": "api.pem", "key": "api.key"}]},
            # (moto's modify_listener ignores the certificates of TLS listeners: the renewal below changes site.pem only)
            {"port": 6443, "protocol": "tls", "default_target_group": "db", "certificates": [{"cert": "api.pem", "key": "api.key"}]},
        ],
        "target_groups": {"web": {"targets": ["10.0.1.5:8080"]}, "db": {"targets": ["10.0.1.6:5432"]}},
    }
    path = folder / "fivenines.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path), folder


def test_https_and_tls_listeners_with_acm_certificates(moto_url: str, tmp_path: Path) -> None:
    from tests.tls_helpers import issue, make_ca

    ca = make_ca()
    issue(ca, ["example.test", "www.example.test"]).write(tmp_path, "site", chain=(ca,))
    issue(ca, ["api.example.test"], kind="rsa").write(tmp_path, "api")
    spec, base = tls_spec(tmp_path)
    p = provider(moto_url)
    desired = p.desired(spec, base)
    assert desired.blocking(adjust=False) == [], desired.findings
    prepared = p.prepare(desired)
    p.apply(prepared, AwsSpec())
    assert p.prepare(p.desired(spec, base)).plan.empty  # read back: nothing drifts

    import boto3

    session = boto3.Session(region_name=REGION)
    acm = session.client("acm", endpoint_url=moto_url)
    elb = clients(moto_url)["elbv2"]
    imported = acm.list_certificates(Includes={"keyTypes": ["RSA_2048", "EC_prime256v1"]})["CertificateSummaryList"]
    assert sorted(c["DomainName"] for c in imported) == ["api.example.test", "example.test"]
    arn_of = {c["DomainName"]: c["CertificateArn"] for c in imported}
    tags = {t["Key"]: t["Value"] for t in acm.list_tags_for_certificate(CertificateArn=arn_of["example.test"])["Tags"]}
    assert tags[TAG_STACK] == "secure" and tags[TAG_MANAGED] == "true"
    listeners = {li["Port"]: li for lb in elb.describe_load_balancers()["LoadBalancers"]
                 for li in elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]}
    https, tls = listeners[443], listeners[6443]
    assert (https["Protocol"], https["SslPolicy"]) == ("HTTPS", "ELBSecurityPolicy-TLS13-1-2-Res-2021-06")
    assert https["Certificates"][0]["CertificateArn"] == arn_of["example.test"]
    extra = elb.describe_listener_certificates(ListenerArn=https["ListenerArn"])["Certificates"]
    assert arn_of["api.example.test"] in [c["CertificateArn"] for c in extra]
    assert (tls["Protocol"], tls["SslPolicy"]) == ("TLS", "ELBSecurityPolicy-TLS13-1-2-2021-06")
    redirect = elb.describe_rules(ListenerArn=listeners[80]["ListenerArn"])["Rules"]
    assert [r["Actions"][0]["RedirectConfig"]["Protocol"] for r in redirect if not r["IsDefault"]] == ["HTTPS"]
    status = p.status("secure")
    assert any(u.startswith("https://") and u.endswith(":443/") for lb in status["load_balancers"] for u in lb["urls"])

    # renewed files: a new ACM certificate, the listener moved to it, the old one deleted
    issue(ca, ["example.test", "www.example.test"]).write(tmp_path, "site", chain=(ca,))
    prepared = p.prepare(p.desired(spec, base))
    assert sorted((c.action.value, c.kind.value) for c in prepared.plan.changes) == [
        ("create", "certificate"), ("delete", "certificate"), ("update", "listener")]
    p.apply(prepared, AwsSpec())
    again = p.prepare(p.desired(spec, base)).plan
    assert again.empty, [(c.key, c.fields) for c in again.changes]
    after = acm.list_certificates(Includes={"keyTypes": ["RSA_2048", "EC_prime256v1"]})["CertificateSummaryList"]
    assert len(after) == 2 and arn_of["example.test"] not in [c["CertificateArn"] for c in after]

    # destroy leaves no certificate behind
    gone = p.prepare_destroy("secure")
    p.apply(gone, AwsSpec())
    assert acm.list_certificates(Includes={"keyTypes": ["RSA_2048", "EC_prime256v1"]})["CertificateSummaryList"] == []


def test_policy_table_matches_describe_ssl_policies(moto_url: str) -> None:
    from fivenines.core.tls import POLICIES

    elb = clients(moto_url)["elbv2"]
    got = {p["Name"]: p for p in elb.describe_ssl_policies(Names=list(POLICIES))["SslPolicies"]}
    for name, pol in POLICIES.items():
        aws = got[name]
        assert [c["Name"] for c in sorted(aws["Ciphers"], key=lambda c: c["Priority"])] == list(pol.ciphers)
        assert sorted(aws["SslProtocols"]) == sorted(pol.protocols)
