"""``fivenines aws ...`` as a new user runs it: real subprocesses against a moto server.

plan → apply → apply (no changes) → out-of-band deletion → plan shows it → apply
repairs → destroy leaves nothing tagged; plus the exit codes of plan.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.helpers import PY, write_spec
from tests.integration.test_aws import (
    AWS_ENV,
    EXAMPLE,
    REGION,
    clients,
    moto_server,
    moto_url,
    tagged,
)

__all__ = ["moto_server", "moto_url"]  # fixtures used here


def fivenines_aws(url: str, *args: str, stdin: str | None = None, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENV)
    env.update(extra_env)
    env["COLUMNS"] = "200"
    cmd = [PY, "-m", "fivenines", "aws", "--region", REGION, "--endpoint-url", url, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, input=stdin)


def test_the_whole_flow_through_the_command_line(moto_url: str) -> None:
    spec = str(EXAMPLE)
    plan = fivenines_aws(moto_url, "plan", spec)
    assert plan.returncode == 0, plan.stderr
    assert "+ create load balancer aws-demo-alb" in plan.stdout
    assert "+ create auto scaling group fivenines-aws-demo-web" in plan.stdout
    assert "desired_capacity: 3" in plan.stdout
    assert "health_check.path: /health" in plan.stdout
    assert "Plan: 7 to create, 0 to update, 0 to replace, 0 to delete." in plan.stdout
    assert tagged(moto_url, "aws-demo") == {}  # plan changed nothing

    first = fivenines_aws(moto_url, "apply", spec)
    assert first.returncode == 0, first.stderr
    assert "applied: 7 steps" in first.stderr

    second = fivenines_aws(moto_url, "apply", spec)
    assert second.returncode == 0, second.stderr
    assert "No changes: stack aws-demo matches the spec (7 resources)." in second.stdout
    assert "applied" not in second.stderr

    as_json = json.loads(fivenines_aws(moto_url, "plan", spec, "--json").stdout)
    assert as_json["no_changes"] is True and as_json["changes"] == []

    status = fivenines_aws(moto_url, "status", spec)
    assert status.returncode == 0, status.stderr
    assert "aws-demo-alb: active" in status.stdout
    assert status.stdout.count("InService") == 3
    assert "web: Auto Scaling group fivenines-aws-demo-web: 3 instances of 3..3 (fixed size)" in status.stdout

    # out of band: someone deletes the listener and the target group in the console
    elb = clients(moto_url)["elbv2"]
    lb = elb.describe_load_balancers(Names=["aws-demo-alb"])["LoadBalancers"][0]
    for li in elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]:
        elb.delete_listener(ListenerArn=li["ListenerArn"])
    tg = elb.describe_target_groups(Names=["aws-demo-web"])["TargetGroups"][0]
    elb.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])

    drift = fivenines_aws(moto_url, "plan", spec)
    assert drift.returncode == 0, drift.stderr
    assert "+ create target group aws-demo-web" in drift.stdout
    assert "+ create listener aws-demo-alb:80" in drift.stdout
    assert "~ update auto scaling group fivenines-aws-demo-web" in drift.stdout  # re-attach the new group
    assert "Plan: 2 to create, 1 to update, 0 to replace, 0 to delete." in drift.stdout

    repair = fivenines_aws(moto_url, "apply", spec)
    assert repair.returncode == 0, repair.stderr
    assert "No changes" in fivenines_aws(moto_url, "plan", spec).stdout
    new_tg = elb.describe_target_groups(Names=["aws-demo-web"])["TargetGroups"][0]
    assert len(elb.describe_target_health(TargetGroupArn=new_tg["TargetGroupArn"])["TargetHealthDescriptions"]) == 3

    refused = fivenines_aws(moto_url, "destroy", spec, stdin="")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert tagged(moto_url, "aws-demo") != {}

    destroy = fivenines_aws(moto_url, "destroy", spec, "--yes")
    assert destroy.returncode == 0, destroy.stderr
    assert "destroyed: 7 resources" in destroy.stderr
    assert tagged(moto_url, "aws-demo") == {}
    assert "nothing to destroy" in fivenines_aws(moto_url, "destroy", spec, "--yes").stdout


def _spec(tmp_path: Path, **health: Any) -> str:
    return str(
        write_spec(
            tmp_path / "fivenines.yaml",
            {
                "name": "svc",
                "listeners": [{"port": 80, "default_target_group": "web"}],
                "target_groups": {
                    "web": {
                        "instances": {"command": ["app", "--port", "{port}"], "count": 2},
                        **({"health_check": health} if health else {}),
                    }
                },
            },
        )
    )


def test_plan_exits_2_on_a_written_setting_aws_cannot_take(moto_url: str, tmp_path: Path) -> None:
    spec = _spec(tmp_path, interval="1s", timeout="500ms")
    r = fivenines_aws(moto_url, "plan", spec)
    assert r.returncode == 2
    assert "target_groups.web.health_check.interval: 1s: AWS allows intervals of 5-300 s in whole seconds; nearest valid value: 5s" in r.stderr
    assert "target_groups.web.health_check.timeout" in r.stderr and "nearest valid value: 2s" in r.stderr
    assert "--adjust" in r.stderr
    assert r.stdout == ""  # nothing planned, nothing sent
    adjusted = fivenines_aws(moto_url, "plan", spec, "--adjust")
    assert adjusted.returncode == 0, adjusted.stderr
    assert "warning" in adjusted.stderr and "health_check.interval: 5" in adjusted.stdout
    applied = fivenines_aws(moto_url, "apply", spec)
    assert applied.returncode == 2  # apply follows the same rule
    assert tagged(moto_url, "svc") == {}


def test_local_defaults_are_adjusted_with_a_warning(moto_url: str, tmp_path: Path) -> None:
    r = fivenines_aws(moto_url, "plan", _spec(tmp_path))  # no health_check written: local defaults 1s/500ms
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "adjusted (local default)" in r.stderr
    assert "health_check.interval: 5" in r.stdout and "health_check.timeout: 2" in r.stdout


def test_plan_exits_2_on_a_bad_spec_and_on_unreachable_aws(tmp_path: Path) -> None:
    bad = write_spec(tmp_path / "bad.yaml", {"name": "x", "listeners": [], "target_groups": {}})
    r = fivenines_aws("http://127.0.0.1:9", "plan", str(bad))
    assert r.returncode == 2 and "listeners" in r.stderr
    r = fivenines_aws("http://127.0.0.1:9", "plan", str(EXAMPLE), AWS_MAX_ATTEMPTS="2")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "cannot reach" in r.stderr
