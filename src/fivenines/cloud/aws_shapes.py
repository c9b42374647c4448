"""Between the normal form of :mod:`fivenines.cloud.resources` and the shapes of the
EC2 / ELBv2 / Auto Scaling APIs, both ways: pure, no boto3, no network.

``*_to_api`` build the arguments of a create or modify call from normal-form
properties (references already resolved by :func:`resolve`); ``*_from_api`` read
what ``describe_*`` returns back into the normal form, turning ids and ARNs of the
stack's own resources into ``"@key"`` references through ``ref``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from fivenines.cloud.plan import compare
from fivenines.errors import ProviderError


def tags_of(items: list[dict[str, Any]] | None) -> dict[str, str]:
    """``[{"Key": k, "Value": v}, ...]`` as a dict."""
    return {t["Key"]: t["Value"] for t in items or []}


def resolve(value: Any, ids: dict[str, str]) -> Any:
    """``value`` with every ``"@key"`` replaced by the id or ARN of that resource."""
    if isinstance(value, str) and value.startswith("@"):
        key = value[1:]
        if key not in ids:
            raise ProviderError(f"internal: {key} is referenced before it exists")
        return ids[key]
    if isinstance(value, list):
        return [resolve(v, ids) for v in value]
    if isinstance(value, dict):
        return {resolve(k, ids): resolve(v, ids) for k, v in value.items()}
    return value


def changed_fields(desired: dict[str, Any], actual: dict[str, Any]) -> set[str]:
    """The top-level properties of ``desired`` that differ in ``actual``."""
    return {c.path.split(".")[0] for c in compare(desired, actual)}


_INGRESS_RE = re.compile(r"^(tcp|udp|all):(\d+)(?:-(\d+))? from (\S+)$")


def ingress_from_api(perms: list[dict[str, Any]], ref: Callable[[str], str]) -> Iterator[str]:
    for p in perms:
        proto = p.get("IpProtocol", "-1")
        proto = "all" if proto == "-1" else proto
        lo, hi = p.get("FromPort", 0), p.get("ToPort", 0)
        ports = f"{lo}" if lo == hi else f"{lo}-{hi}"
        for r in p.get("IpRanges", []):
            yield f"{proto}:{ports} from {r['CidrIp']}"
        for r in p.get("Ipv6Ranges", []):
            yield f"{proto}:{ports} from {r['CidrIpv6']}"
        for r in p.get("UserIdGroupPairs", []):
            yield f"{proto}:{ports} from {ref(r['GroupId'])}"


def ingress_to_api(rules: list[str], ids: dict[str, str] | None = None) -> list[dict[str, Any]]:
    out = []
    for rule in rules:
        m = _INGRESS_RE.match(rule)
        if m is None:
            raise ProviderError(f"internal: bad ingress rule {rule!r}")
        proto, lo, hi, source = m.group(1), int(m.group(2)), int(m.group(3) or m.group(2)), m.group(4)
        perm: dict[str, Any] = {"IpProtocol": "-1" if proto == "all" else proto, "FromPort": lo, "ToPort": hi}
        if source.startswith("@"):
            if ids is not None:
                source = resolve(source, ids)
            perm["UserIdGroupPairs"] = [{"GroupId": source}]
        elif source.startswith("sg-"):
            perm["UserIdGroupPairs"] = [{"GroupId": source}]
        elif ":" in source:
            perm["Ipv6Ranges"] = [{"CidrIpv6": source}]
        else:
            perm["IpRanges"] = [{"CidrIp": source}]
        out.append(perm)
    return out


def health_check_to_api(hc: dict[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = {
        "HealthCheckProtocol": hc["protocol"],
        "HealthCheckPort": hc["port"],
        "HealthCheckEnabled": True,
        "HealthCheckIntervalSeconds": hc["interval"],
        "HealthCheckTimeoutSeconds": hc["timeout"],
        "HealthyThresholdCount": hc["healthy_threshold"],
        "UnhealthyThresholdCount": hc["unhealthy_threshold"],
    }
    if "path" in hc:
        args["HealthCheckPath"] = hc["path"]
    if "matcher" in hc:
        args["Matcher"] = {"HttpCode": hc["matcher"]}
    return args


def targets_to_api(addresses: list[str]) -> list[dict[str, Any]]:
    out = []
    for a in addresses:
        host, _, port = a.rpartition(":")
        out.append({"Id": host, "Port": int(port)})
    return out


def action_to_api(a: dict[str, Any], order: int | None = None) -> dict[str, Any]:
    out: dict[str, Any]
    if a["type"] == "forward":
        groups = a["target_groups"]
        if len(groups) == 1 and not a.get("stickiness"):
            out = {"Type": "forward", "TargetGroupArn": next(iter(groups))}
        else:
            out = {
                "Type": "forward",
                "ForwardConfig": {
                    "TargetGroups": [{"TargetGroupArn": arn, "Weight": w} for arn, w in groups.items()],
                    "TargetGroupStickinessConfig": (
                        {"Enabled": True, "DurationSeconds": a["stickiness"]} if a.get("stickiness") else {"Enabled": False}
                    ),
                },
            }
    elif a["type"] == "redirect":
        out = {
            "Type": "redirect",
            "RedirectConfig": {
                "Protocol": a["protocol"],
                "Host": a["host"],
                "Port": a["port"],
                "Path": a["path"],
                "Query": a["query"],
                "StatusCode": a["status"],
            },
        }
    elif a["type"] == "fixed-response":
        cfg = {"StatusCode": a["status"], "ContentType": a["content_type"]}
        if a["body"]:
            cfg["MessageBody"] = a["body"]
        out = {"Type": "fixed-response", "FixedResponseConfig": cfg}
    else:  # pragma: no cover
        raise AssertionError(a)
    if order is not None:
        out["Order"] = order
    return out


def action_from_api(a: dict[str, Any], ref: Callable[[str], str]) -> dict[str, Any]:
    t = a.get("Type")
    if t == "forward":
        fc = a.get("ForwardConfig")
        if fc and fc.get("TargetGroups"):
            groups = {ref(g["TargetGroupArn"]): int(g.get("Weight", 1) if g.get("Weight") is not None else 1) for g in fc["TargetGroups"]}
            st = fc.get("TargetGroupStickinessConfig") or {}
            sticky = int(st.get("DurationSeconds") or 0) if st.get("Enabled") else 0
        else:
            groups, sticky = {ref(a.get("TargetGroupArn", "")): 1}, 0
        return {"type": "forward", "target_groups": dict(sorted(groups.items())), "stickiness": sticky}
    if t == "redirect":
        rc = a.get("RedirectConfig", {})
        return {
            "type": "redirect",
            "protocol": rc.get("Protocol", "#{protocol}"),
            "host": rc.get("Host", "#{host}"),
            "port": rc.get("Port", "#{port}"),
            "path": rc.get("Path", "/#{path}"),
            "query": rc.get("Query", ""),
            "status": rc.get("StatusCode"),
        }
    if t == "fixed-response":
        fc = a.get("FixedResponseConfig", {})
        return {
            "type": "fixed-response",
            "status": fc.get("StatusCode"),
            "content_type": fc.get("ContentType"),
            "body": fc.get("MessageBody", ""),
        }
    return {"type": str(t)}


_CONFIG_KEYS = {
    "path-pattern": "PathPatternConfig",
    "host-header": "HostHeaderConfig",
    "http-header": "HttpHeaderConfig",
    "http-request-method": "HttpRequestMethodConfig",
    "query-string": "QueryStringConfig",
    "source-ip": "SourceIpConfig",
}


def conditions_to_api(conds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in conds:
        f = c["field"]
        cfg: dict[str, Any]
        if f == "http-header":
            cfg = {"HttpHeaderName": c["name"], "Values": c["values"]}
        elif f == "query-string":
            cfg = {"Values": [{"Key": v["key"], "Value": v["value"]} for v in c["values"]]}
        else:
            cfg = {"Values": c["values"]}
        out.append({"Field": f, _CONFIG_KEYS[f]: cfg})
    return out


def conditions_from_api(conds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for c in conds:
        f = c.get("Field", "")
        cfg = c.get(_CONFIG_KEYS.get(f, ""), {}) or {}
        if f == "http-header":
            out.append({"field": f, "name": cfg.get("HttpHeaderName"), "values": list(cfg.get("Values", []))})
        elif f == "query-string":
            out.append({"field": f, "values": [{"key": v.get("Key", ""), "value": v.get("Value")} for v in cfg.get("Values", [])]})
        else:
            out.append({"field": f, "values": list(cfg.get("Values") or c.get("Values") or [])})
    return sorted(out, key=lambda c: (c["field"], c.get("name", "") or "", repr(c["values"])))


# --------------------------------------------------------------------------- scaling policies


def resource_label(lb_arn: str, tg_arn: str) -> str:
    """``ALBRequestCountPerTarget``'s ResourceLabel: ``app/LB/ID/targetgroup/TG/ID`` from the two ARNs.

    >>> resource_label("arn:aws:elasticloadbalancing:eu-west-1:1:loadbalancer/app/shop-alb/50dc",
    ...                "arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/shop-web/73e2")
    'app/shop-alb/50dc/targetgroup/shop-web/73e2'
    """
    return f"{lb_arn.split(':loadbalancer/', 1)[-1]}/{tg_arn.split(':', 5)[-1]}"


def label_arns(label: str, policy_arn: str) -> tuple[str, str] | None:
    """The load balancer's and target group's ARNs a ResourceLabel names (partition, region and
    account from the policy's ARN); None for a label of another shape.

    >>> label_arns("app/shop-alb/50dc/targetgroup/shop-web/73e2",
    ...            "arn:aws:autoscaling:eu-west-1:1:scalingPolicy:x:autoScalingGroupName/g:policyName/p")[1]
    'arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/shop-web/73e2'
    """
    head, sep, tail = label.partition("/targetgroup/")
    parts = policy_arn.split(":")
    if not sep or len(parts) < 5:
        return None
    prefix = f"arn:{parts[1]}:elasticloadbalancing:{parts[3]}:{parts[4]}"
    return f"{prefix}:loadbalancer/{head}", f"{prefix}:targetgroup/{tail}"
