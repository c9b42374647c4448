"""The pure spec → AWS mapping: resources, settings carried over exactly, and findings."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fivenines.cloud.mapping import NAME_MAX, _secs, aws_name, map_spec, parse_redirect
from fivenines.cloud.resources import (
    TAG_MANAGED,
    TAG_RESOURCE,
    TAG_STACK,
    Finding,
    Kind,
    Network,
    Subnet,
    stack_tags,
)
from fivenines.spec import AwsSpec, HealthCheckSpec, Spec, parse_spec

NET = Network("vpc-1", (Subnet("subnet-a", "eu-west-1a", "vpc-1"), Subnet("subnet-b", "eu-west-1b", "vpc-1")))


def spec(groups: dict[str, Any] | None = None, listeners: list[dict[str, Any]] | None = None, **top: Any) -> Spec:
    return parse_spec(
        {
            "name": "demo",
            "listeners": listeners or [{"port": 80, "default_target_group": "web"}],
            "target_groups": groups
            or {"web": {"instances": {"command": ["app", "--port", "{port}"], "count": 2, "standby": 1}}},
            **top,
        }
    )


def web(**group: Any) -> dict[str, Any]:
    return {"web": {"instances": {"command": ["app", "--port", "{port}"], "count": 2, "standby": 1}, **group}}


def findings(s: Spec, net: Network = NET) -> dict[str, Finding]:
    return {f.path: f for f in map_spec(s, net).findings}


# --------------------------------------------------------------------------- resources


def test_demo_maps_to_security_groups_alb_target_group_listener_launch_template_and_asg() -> None:
    d = map_spec(spec(groups=web(health_check={"interval": "5s", "timeout": "2s"})), NET)
    assert d.findings == []
    assert sorted(d.resources) == ["asg/web", "lb/alb", "listener/80", "lt/web", "sg/instances", "sg/lb", "tg/web"]
    asg = d.resources["asg/web"].props
    assert (asg["min_size"], asg["desired_capacity"], asg["max_size"]) == (3, 3, 3)  # N + M
    assert asg["health_check_type"] == "ELB" and asg["health_check_grace_period"] == 300
    assert asg["subnets"] == ["subnet-a", "subnet-b"] and asg["target_groups"] == ["@tg/web"]
    assert asg["launch_template"] == "@lt/web"
    lb = d.resources["lb/alb"].props
    assert lb == {
        "name": "demo-alb",
        "type": "application",
        "scheme": "internet-facing",
        "subnets": ["subnet-a", "subnet-b"],
        "security_groups": ["@sg/lb"],
    }
    assert d.resources["sg/lb"].props["ingress"] == ["tcp:80 from 0.0.0.0/0"]
    assert d.resources["sg/instances"].props["ingress"] == ["tcp:8080 from @sg/lb"]
    assert d.resources["sg/instances"].refs == {"sg/lb"}
    listener = d.resources["listener/80"].props
    assert listener["default_action"] == {"type": "forward", "target_groups": {"@tg/web": 1}, "stickiness": 0}
    assert any("standby" in n and "desired capacity 3" in n for n in d.notes)


def test_every_health_check_setting_is_carried_over_exactly() -> None:
    hc = {"protocol": "http", "path": "/ready", "port": 9000, "interval": "30s", "timeout": "7s",
          "healthy_threshold": 4, "unhealthy_threshold": 6, "matcher": "200-299,302"}
    d = map_spec(spec(groups=web(health_check=hc)), NET)
    assert d.findings == []
    assert d.resources["tg/web"].props["health_check"] == {
        "protocol": "HTTP", "path": "/ready", "port": "9000", "interval": 30, "timeout": 7,
        "healthy_threshold": 4, "unhealthy_threshold": 6, "matcher": "200-299,302",
    }
    # the instances' group admits the check port from the load balancer
    assert d.resources["sg/instances"].props["ingress"] == ["tcp:8080 from @sg/lb", "tcp:9000 from @sg/lb"]


def test_tcp_listener_maps_to_an_nlb_and_tcp_target_group() -> None:
    s = spec(
        listeners=[{"port": 5432, "protocol": "tcp", "default_target_group": "db"}],
        groups={"db": {"targets": ["10.0.1.5:5432", "10.0.2.5:5432"], "health_check": {"protocol": "tcp", "interval": "10s", "timeout": "5s"}}},
    )
    d = map_spec(s, NET)
    assert d.findings == []
    assert d.resources["lb/nlb"].props["type"] == "network"
    tg = d.resources["tg/db"].props
    assert (tg["protocol"], tg["target_type"], tg["port"]) == ("TCP", "ip", 5432)
    assert tg["targets"] == ["10.0.1.5:5432", "10.0.2.5:5432"]
    assert tg["health_check"] == {"protocol": "TCP", "port": "traffic-port", "interval": 10, "timeout": 5,
                                  "healthy_threshold": 2, "unhealthy_threshold": 2}
    assert "sg/instances" not in d.resources and "lt/db" not in d.resources


def test_every_resource_is_tagged_with_stack_managed_and_its_key() -> None:
    tags = stack_tags("demo", "tg/web", AwsSpec(tags={"team": "core"}))
    assert tags == [
        {"Key": TAG_MANAGED, "Value": "true"},
        {"Key": TAG_RESOURCE, "Value": "tg/web"},
        {"Key": TAG_STACK, "Value": "demo"},
        {"Key": "team", "Value": "core"},
    ]
    lt = map_spec(spec(groups=web(health_check={"interval": "5s", "timeout": "2s"})), NET).resources["lt/web"].props["data"]
    for ts in lt["TagSpecifications"]:
        keys = {t["Key"]: t["Value"] for t in ts["Tags"]}
        assert keys[TAG_STACK] == "demo" and keys[TAG_MANAGED] == "true"


def test_reserved_tag_prefixes_are_spec_errors() -> None:
    from fivenines.errors import SpecError

    with pytest.raises(SpecError, match="reserved"):
        spec(aws={"tags": {"fivenines:stack": "x"}})


def test_names_fit_elb_limits_and_are_stable() -> None:
    long = aws_name("a-very-long-service-name-indeed", "checkout_canary")
    assert len(long) == NAME_MAX and long == aws_name("a-very-long-service-name-indeed", "checkout_canary")
    assert long != aws_name("a-very-long-service-name-indeed", "checkout_canarz")
    assert aws_name("internal-api", "alb") == "xinternal-api-alb"  # ELB reserves the internal- prefix


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=40),
       st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=40))
def test_names_are_always_valid(a: str, b: str) -> None:
    n = aws_name(a, b)
    assert len(n) <= NAME_MAX
    assert all(c.isalnum() or c == "-" for c in n)
    assert not n.startswith("-") and not n.endswith("-")


# --------------------------------------------------------------------------- health check findings


def test_written_interval_below_aws_minimum_blocks_with_the_nearest_value() -> None:
    f = findings(spec(groups=web(health_check={"interval": "1s", "timeout": "500ms"})))
    interval = f["target_groups.web.health_check.interval"]
    assert interval.nearest == "5s" and interval.written and interval.blocks(adjust=False)
    assert not interval.blocks(adjust=True)
    assert "5-300 s" in str(interval) and str(interval).endswith("nearest valid value: 5s")
    assert f["target_groups.web.health_check.timeout"].nearest == "2s"


def test_local_defaults_are_adjusted_not_blocking() -> None:
    d = map_spec(spec(), NET)  # health_check not written: local defaults 1s / 500ms
    assert d.blocking(adjust=False) == []
    f = {x.path: x for x in d.findings}
    assert not f["target_groups.web.health_check.interval"].written
    assert d.resources["tg/web"].props["health_check"]["interval"] == 5
    assert d.resources["tg/web"].props["health_check"]["timeout"] == 2


@pytest.mark.parametrize(
    ("hc", "path", "nearest"),
    [
        ({"interval": "10m", "timeout": "5s"}, "interval", "5m"),
        ({"interval": "7500ms", "timeout": "2s"}, "interval", "8s"),
        ({"interval": "5s", "timeout": "4500ms"}, "timeout", "4s"),
        ({"interval": "300s", "timeout": "150s"}, "timeout", "2m"),
        ({"interval": "5s", "timeout": "2s", "healthy_threshold": 1}, "healthy_threshold", "2"),
        ({"interval": "5s", "timeout": "2s", "unhealthy_threshold": 1}, "unhealthy_threshold", "2"),
        ({"interval": "5s", "timeout": "2s", "matcher": "100-599"}, "matcher", "200-499"),
        ({"interval": "5s", "timeout": "2s", "matcher": "500,503"}, "matcher", "200-399"),
        ({"interval": "5s", "timeout": "2s", "protocol": "tcp"}, "protocol", "http (path /health)"),
    ],
)
def test_health_check_findings_name_the_field_and_nearest_value(hc: dict[str, Any], path: str, nearest: str) -> None:
    f = findings(spec(groups=web(health_check=hc)))
    got = f[f"target_groups.web.health_check.{path}"]
    assert got.nearest == nearest and got.written


@settings(max_examples=200, deadline=None)
@given(
    interval=st.integers(min_value=1, max_value=400_000),
    timeout_frac=st.floats(min_value=0.01, max_value=0.99),
    healthy=st.integers(min_value=1, max_value=10),
    unhealthy=st.integers(min_value=1, max_value=10),
    lo=st.integers(min_value=100, max_value=599),
    width=st.integers(min_value=0, max_value=300),
)
def test_mapped_health_checks_always_fit_aws_and_equal_the_spec_when_nothing_is_reported(
    interval: int, timeout_frac: float, healthy: int, unhealthy: int, lo: int, width: int
) -> None:
    interval_s = interval / 1000
    timeout_s = round(interval * timeout_frac) / 1000 or 0.001
    hi = min(599, lo + width)
    hc = {"interval": interval_s, "timeout": timeout_s, "healthy_threshold": healthy,
          "unhealthy_threshold": unhealthy, "matcher": f"{lo}-{hi}"}
    try:
        HealthCheckSpec.model_validate(hc)
    except ValidationError:
        assume(False)
    d = map_spec(spec(groups=web(health_check=hc)), NET)
    got = d.resources["tg/web"].props["health_check"]
    assert 5 <= got["interval"] <= 300 and 2 <= got["timeout"] <= 120 and got["timeout"] < got["interval"]
    assert 2 <= got["healthy_threshold"] <= 10 and 2 <= got["unhealthy_threshold"] <= 10
    for part in got["matcher"].split(","):
        a, _, b = part.partition("-")
        assert 200 <= int(a) <= int(b or a) <= 499
    hc_findings = [f for f in d.findings if ".health_check." in f.path]
    assert all(f.nearest is not None and f.written for f in hc_findings)
    if not hc_findings:  # nothing reported: AWS gets exactly what the spec says
        assert (got["interval"], got["timeout"]) == (interval_s, timeout_s)
        assert (got["healthy_threshold"], got["unhealthy_threshold"]) == (healthy, unhealthy)
        assert got["matcher"] == f"{lo}-{hi}"
    else:  # each reported value names its field and what it becomes
        for f in hc_findings:
            field = f.path.rsplit(".", 1)[1]
            mapped = {"interval": got["interval"], "timeout": got["timeout"]}.get(field)
            if mapped is not None:
                assert f.nearest == _secs(mapped)


# --------------------------------------------------------------------------- target group attributes


def test_attributes_deregistration_slow_start_stickiness_algorithm() -> None:
    d = map_spec(
        spec(groups=web(health_check={"interval": "5s", "timeout": "2s"}, deregistration_delay="45s",
                        slow_start="60s", stickiness={"enabled": True, "duration": "1h"})),
        NET,
    )
    assert d.findings == []
    assert d.resources["tg/web"].props["attributes"] == {
        "deregistration_delay.timeout_seconds": "45",
        "load_balancing.algorithm.type": "round_robin",
        "slow_start.duration_seconds": "60",
        "stickiness.enabled": "true",
        "stickiness.type": "lb_cookie",
        "stickiness.lb_cookie.duration_seconds": "3600",
    }


@pytest.mark.parametrize(
    ("algorithm", "aws_type", "blocked"),
    [
        ("round_robin", "round_robin", False),
        ("least_outstanding_requests", "least_outstanding_requests", False),
        ("random", "weighted_random", False),
        ("weighted_round_robin", "round_robin", True),
        ("ip_hash", "round_robin", True),
    ],
)
def test_algorithms(algorithm: str, aws_type: str, blocked: bool) -> None:
    d = map_spec(spec(groups=web(algorithm=algorithm, health_check={"interval": "5s", "timeout": "2s"})), NET)
    assert d.resources["tg/web"].props["attributes"]["load_balancing.algorithm.type"] == aws_type
    f = {x.path: x for x in d.findings}
    if blocked:
        assert f["target_groups.web.algorithm"].nearest == "round_robin"
        assert f["target_groups.web.algorithm"].blocks(adjust=False)
    else:
        assert "target_groups.web.algorithm" not in f


def test_hash_algorithm_is_reported() -> None:
    f = findings(spec(groups=web(algorithm="hash", hash_on={"header": "X-User"}, health_check={"interval": "5s", "timeout": "2s"})))
    assert "no hash-based balancing" in f["target_groups.web.algorithm"].message


@pytest.mark.parametrize(
    ("group", "path", "nearest"),
    [
        ({"slow_start": "10s"}, "slow_start", "30s"),
        ({"slow_start": "20m"}, "slow_start", "15m"),
        ({"slow_start": "60s", "algorithm": "least_outstanding_requests"}, "slow_start", "0s"),
        ({"deregistration_delay": "2h"}, "deregistration_delay", "1h"),
        ({"stickiness": {"duration": "30d"}}, "stickiness.duration", "7d"),
        ({"stickiness": {"cookie_name": "SESSION"}}, "stickiness.cookie_name", "remove cookie_name"),
        ({"retries": {"attempts": 3}}, "retries", "remove retries"),
    ],
)
def test_target_group_findings(group: dict[str, Any], path: str, nearest: str) -> None:
    f = findings(spec(groups=web(health_check={"interval": "5s", "timeout": "2s"}, **group)))
    assert f[f"target_groups.web.{path}"].nearest == nearest


def test_default_retries_are_not_reported() -> None:
    assert "target_groups.web.retries" not in findings(spec(groups=web(health_check={"interval": "5s", "timeout": "2s"})))


def test_nlb_groups_have_no_slow_start_and_stick_by_source_ip() -> None:
    s = spec(
        listeners=[{"port": 6379, "protocol": "tcp", "default_target_group": "web"}],
        groups=web(health_check={"protocol": "tcp", "interval": "10s", "timeout": "5s"}, slow_start="60s",
                   stickiness={"enabled": True}),
    )
    d = map_spec(s, NET)
    attrs = d.resources["tg/web"].props["attributes"]
    assert attrs["stickiness.type"] == "source_ip" and "slow_start.duration_seconds" not in attrs
    assert {f.path: f.nearest for f in d.findings} == {"target_groups.web.slow_start": "0s"}


@pytest.mark.parametrize(
    ("target", "message"),
    [("127.0.0.1:9001", "loopback"), ("localhost:9001", "not host names"), ("[::1]:9001", "loopback"),
     ("0.0.0.0:80", "local-only")],
)
def test_static_loopback_or_named_targets_always_block(target: str, message: str) -> None:
    d = map_spec(spec(groups={"web": {"targets": [target], "health_check": {"interval": "5s", "timeout": "2s"}}}), NET)
    (f,) = d.findings
    assert f.path == "target_groups.web.targets.0" and message in f.message
    assert f.nearest is None and f.blocks(adjust=True)


def test_target_weights_are_reported() -> None:
    s = spec(groups={"web": {"targets": [{"address": "10.0.0.5:80", "weight": 3}], "health_check": {"interval": "5s", "timeout": "2s"}}})
    assert "target_groups.web.targets.0.weight" in findings(s)


def test_a_group_behind_http_and_tcp_listeners_is_reported() -> None:
    s = spec(listeners=[{"port": 80, "default_target_group": "web"},
                        {"port": 81, "protocol": "tcp", "default_target_group": "web"}],
             groups=web(health_check={"interval": "5s", "timeout": "2s"}))
    f = findings(s)["target_groups.web"]
    assert f.nearest is None and "split it" in f.message


def test_one_availability_zone_blocks() -> None:
    one = Network("vpc-1", (Subnet("subnet-a", "eu-west-1a", "vpc-1"),))
    f = findings(spec(), one)["aws.subnets"]
    assert "1 availability zone" in f.message and f.blocks(adjust=True)
    two_in_one = Network("vpc-1", (*NET.subnets, Subnet("subnet-c", "eu-west-1a", "vpc-1")))
    f = findings(spec(), two_in_one)["aws.subnets"]
    assert "subnet-a and subnet-c are both in eu-west-1a" in f.message and f.blocks(adjust=True)


def test_listener_port_zero() -> None:
    s = spec(listeners=[{"port": 0, "default_target_group": "web"}], groups=web(health_check={"interval": "5s", "timeout": "2s"}))
    assert findings(s)["listeners.0.port"].nearest == "80"


# --------------------------------------------------------------------------- rules


def rules_spec(*rules: dict[str, Any]) -> Spec:
    return spec(
        listeners=[{"port": 80, "default_target_group": "web", "rules": list(rules)}],
        groups={**web(health_check={"interval": "5s", "timeout": "2s"}),
                "canary": {"targets": ["10.0.0.9:80"], "health_check": {"interval": "5s", "timeout": "2s"}}},
    )


def test_rule_conditions_and_weighted_sticky_forward() -> None:
    d = map_spec(
        rules_spec({"match": {"path": ["/api/*"], "host": ["*.example.com"], "header": {"X-Env": ["canary"]}},
                    "forward": {"target_groups": {"web": 90, "canary": 10}, "stickiness": "60s"}},
                   {"match": {"method": ["POST"], "query": {"v": "1"}, "source_ip": ["10.0.0.0/8"]}, "forward": "canary"}),
        NET,
    )
    assert d.findings == []
    r1 = d.resources["rule/80/1"].props
    assert r1["priority"] == 1 and r1["listener"] == "@listener/80"
    assert r1["conditions"] == [
        {"field": "host-header", "values": ["*.example.com"]},
        {"field": "http-header", "name": "X-Env", "values": ["canary"]},
        {"field": "path-pattern", "values": ["/api/*"]},
    ]
    assert r1["actions"] == [{"type": "forward", "target_groups": {"@tg/canary": 10, "@tg/web": 90}, "stickiness": 60}]
    r2 = d.resources["rule/80/2"].props
    assert r2["conditions"] == [
        {"field": "http-request-method", "values": ["POST"]},
        {"field": "query-string", "values": [{"key": "v", "value": "1"}]},
        {"field": "source-ip", "values": ["10.0.0.0/8"]},
    ]
    assert d.resources["rule/80/2"].refs == {"listener/80", "tg/canary"}


def test_alb_condition_limits_block() -> None:
    f = findings(rules_spec({"match": {"path": ["/a", "/b", "/c", "/d"]}, "forward": "web"}))
    assert "3 per condition" in f["listeners.0.rules.0.match"].message
    f = findings(rules_spec({"match": {"path": ["/a", "/b", "/c"], "method": ["GET", "HEAD", "PUT"]}, "forward": "web"}))
    assert "5 per rule" in f["listeners.0.rules.0.match"].message


def test_redirects_and_fixed_responses() -> None:
    d = map_spec(
        rules_spec({"match": {"path": ["/old"]}, "redirect": {"url": "https://#{host}/new?#{query}", "status": 308}},
                   {"match": {"path": ["/down"]}, "fixed_response": {"status": 503, "body": "bye", "content_type": "text/html"}}),
        NET,
    )
    assert d.resources["rule/80/1"].props["actions"] == [
        {"type": "redirect", "protocol": "HTTPS", "host": "#{host}", "port": "443", "path": "/new", "query": "#{query}", "status": "HTTP_301"}
    ]
    assert {f.path: f.nearest for f in d.findings} == {"listeners.0.rules.0.redirect.status": "301"}
    assert d.resources["rule/80/2"].props["actions"] == [
        {"type": "fixed-response", "status": "503", "content_type": "text/html", "body": "bye"}
    ]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/", "scheme 'ftp'"),
        ("https://example.com/a#frag", "#fragment"),
        ("https://user@example.com/", "user information"),
        ("new-page", "neither an absolute URL"),
        ("#{protocol}://#{host}:#{port}/#{path}?#{query}", "loop"),
        ("/#{query}", "#{host}, #{path} and #{port} only"),
    ],
)
def test_redirects_alb_cannot_express_always_block(url: str, problem: str) -> None:
    parts, why = parse_redirect(url)
    assert parts is None and problem in why
    f = findings(rules_spec({"match": {"path": ["/x"]}, "redirect": {"url": url}}))["listeners.0.rules.0.redirect.url"]
    assert f.nearest is None and f.blocks(adjust=True)


def test_redirect_url_forms() -> None:
    assert parse_redirect("http://example.com")[0] == {
        "protocol": "HTTP", "host": "example.com", "port": "80", "path": "/", "query": ""}
    assert parse_redirect("#{protocol}://www.#{host}:8443/#{path}")[0] == {
        "protocol": "#{protocol}", "host": "www.#{host}", "port": "8443", "path": "/#{path}", "query": ""}


def test_fixed_response_3xx_and_content_type() -> None:
    f = findings(rules_spec({"match": {"path": ["/x"]}, "fixed_response": {"status": 302}},
                            {"match": {"path": ["/y"]}, "fixed_response": {"status": 200, "content_type": "image/png"}}))
    assert f["listeners.0.rules.0.fixed_response.status"].nearest is None
    assert f["listeners.0.rules.1.fixed_response.content_type"].nearest == "text/plain"


# --------------------------------------------------------------------------- instances


def _script(d_spec: Spec, group: str = "web") -> str:
    data = map_spec(d_spec, NET).resources[f"lt/{group}"].props["data"]
    return base64.b64decode(data["UserData"]).decode()


def test_user_data_runs_the_command_as_a_service_after_the_users_setup() -> None:
    s = spec(groups={"web": {"instances": {"command": ["python3", "-m", "app", "--port", "{port}", "--id", "{id}"],
                                           "env": {"MODE": "50%$x", "PORT": "{port}"}},
                             "health_check": {"interval": "5s", "timeout": "2s"}}},
             aws={"instance_port": 9000, "user_data": "pip install app"})
    script = _script(s)
    assert script.startswith("#!/bin/bash\n")
    assert script.index("pip install app") < script.index("systemctl enable --now fivenines-web.service")
    assert 'ExecStart="python3" "-m" "app" "--port" "9000" "--id" "${FIVENINES_ID}"' in script
    assert 'Environment="MODE=50%%$$x"' in script and 'Environment="PORT=9000"' in script
    assert "Restart=always" in script


def test_shell_command_runs_through_sh() -> None:
    s = spec(groups={"web": {"instances": {"command": "app --port {port} > /tmp/log", "shell": True},
                             "health_check": {"interval": "5s", "timeout": "2s"}}})
    assert 'ExecStart=/bin/sh -c "app --port 8080 > /tmp/log"' in _script(s)


def test_launch_template_data() -> None:
    s = spec(groups=web(health_check={"interval": "5s", "timeout": "2s"}),
             aws={"ami": "ami-123", "instance_type": "t4g.small", "key_name": "ops", "security_groups": ["sg-b", "sg-a"]})
    data = map_spec(s, NET).resources["lt/web"].props["data"]
    assert (data["ImageId"], data["InstanceType"], data["KeyName"]) == ("ami-123", "t4g.small", "ops")
    assert data["SecurityGroupIds"] == ["@sg/instances", "sg-a", "sg-b"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"


def test_relative_cwd_blocks() -> None:
    s = spec(groups={"web": {"instances": {"command": ["app"], "cwd": "srv"}, "health_check": {"interval": "5s", "timeout": "2s"}}})
    assert findings(s)["target_groups.web.instances.cwd"].nearest is None


def test_internal_scheme_and_allow_from() -> None:
    s = spec(groups=web(health_check={"interval": "5s", "timeout": "2s"}),
             aws={"internal": True, "allow_from": ["10.0.0.0/8", "::/0"]})
    d = map_spec(s, NET)
    assert d.resources["lb/alb"].props["scheme"] == "internal"
    assert d.resources["sg/lb"].props["ingress"] == ["tcp:80 from 10.0.0.0/8", "tcp:80 from ::/0"]


def test_finding_rule_table() -> None:
    written = Finding("p", "m", "5s", written=True)
    default = Finding("p", "m", "5s", written=False)
    impossible = Finding("p", "m", None)
    assert [written.blocks(False), written.blocks(True)] == [True, False]
    assert [default.blocks(False), default.blocks(True)] == [False, False]
    assert [impossible.blocks(False), impossible.blocks(True)] == [True, True]


def test_kinds_are_in_dependency_order() -> None:
    d = map_spec(rules_spec({"match": {"path": ["/a"]}, "forward": "canary"}), NET)
    order = list(Kind)
    for r in d.resources.values():
        for ref in r.refs:
            assert order.index(d.resources[ref].kind) <= order.index(r.kind), (r, ref)


def test_a_command_bound_to_loopback_gets_a_note() -> None:
    s = spec(groups={"web": {"instances": {"command": ["app", "--host", "127.0.0.1", "--port", "{port}"]},
                             "health_check": {"interval": "5s", "timeout": "2s"}}})
    d = map_spec(s, NET)
    assert any(n.startswith("target_groups.web.instances.command: mentions 127.0.0.1") for n in d.notes)
    assert not any("command" in n for n in map_spec(spec(groups=web()), NET).notes)
