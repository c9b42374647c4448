"""The spec mapped onto AWS: pure, no boto3, no network, no clock.

:func:`map_spec` turns a :class:`~fivenines.spec.Spec` plus the facts of the
network it will live in (:class:`~fivenines.cloud.resources.Network`: VPC, subnets
and their availability zones, looked up by the provider) into the **desired state**
of the stack: a set of :class:`~fivenines.cloud.resources.Resource` values in the
normal form the provider reads back from AWS (see :mod:`fivenines.cloud.resources`).

Every local setting AWS cannot take is a :class:`Finding` with the field path and
the nearest valid value (when there is one). The rule, documented in docs/aws.md:

* a value **written in the spec** that AWS cannot take blocks ``plan`` and
  ``apply`` (exit 2) unless ``--adjust`` is given, which uses the nearest value;
* a **local default** the user did not write (e.g. the 1 s default interval) is
  replaced by the nearest valid value and shown as a warning;
* a setting with **no** AWS equivalent (a loopback target, an unexpressible
  redirect) always blocks.

The desired state always uses the nearest values, so a plan is complete even when
it is blocked; nothing incompatible is ever sent.

(Why this is one module of some 870 lines: it is one function, :func:`map_spec`, and
the mapping of each spec block it calls (health check, target group, rules,
instances), in the order it calls them. Every part checks against the same AWS
limits (below) and appends to the same list of findings with field paths, so a
reader checking one rule of the mapping needs the limits and the helpers beside it;
split by block, each piece would import them all and none would stand alone. The
values it produces (resources, findings, the network) live in
:mod:`fivenines.cloud.resources`, shared with the plan and the provider.)
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from fivenines.cloud.resources import (
    TAG_RESOURCE,
    Desired,
    Finding,
    Kind,
    Network,
    Resource,
    stack_tags,
)
from fivenines.core.tls import CertificateMaterial
from fivenines.spec import (
    AwsSpec,
    FixedResponseSpec,
    HealthCheckSpec,
    InstancesSpec,
    ListenerSpec,
    RedirectSpec,
    RuleMatch,
    RuleSpec,
    ScalingSpec,
    Spec,
    TargetGroupSpec,
    format_duration,
    parse_matcher,
    split_hostport,
)

# AWS limits (Elastic Load Balancing v2, Auto Scaling).
INTERVAL_RANGE = (5, 300)
TIMEOUT_RANGE = (2, 120)
THRESHOLD_RANGE = (2, 10)
ALB_MATCHER_RANGE = (200, 499)
NLB_MATCHER_RANGE = (200, 599)
DEREGISTRATION_RANGE = (0, 3600)
SLOW_START_RANGE = (30, 900)
STICKINESS_RANGE = (1, 604800)
RULE_VALUES_PER_CONDITION = 3
RULE_VALUES_PER_RULE = 5
FORWARD_MAX_GROUPS = 5
FIXED_RESPONSE_TYPES = ("text/plain", "text/css", "text/html", "application/javascript", "application/json")
USER_DATA_MAX = 16384
NAME_MAX = 32  # load balancer and target group names

DEFAULT_ALLOW = ["0.0.0.0/0"]


# --------------------------------------------------------------------------- names


def aws_name(*parts: str, limit: int = NAME_MAX) -> str:
    """An ELB-safe name (letters, digits, hyphens; at most ``limit``); too long: cut + hash.

    >>> aws_name("demo", "web")
    'demo-web'
    >>> aws_name("my_service", "alb")
    'my-service-alb'
    >>> n = aws_name("a" * 30, "web"); len(n), n[:22]
    (32, 'aaaaaaaaaaaaaaaaaaaaaa')
    """
    full = "-".join(parts)
    name = re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9-]", "-", full)).strip("-")
    if name.lower().startswith("internal-"):
        name = "x" + name
    if len(name) > limit:
        digest = hashlib.sha1(full.encode()).hexdigest()[:8]
        name = name[: limit - 9].rstrip("-") + "-" + digest
    return name


# --------------------------------------------------------------------------- helpers


def _clamp(v: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, v))


def _secs(v: float) -> str:
    """Seconds as a spec would write them, in the largest whole unit.

    >>> _secs(3600), _secs(604800), _secs(90), _secs(0.5)
    ('1h', '7d', '90s', '500ms')
    """
    if v >= 86400 and v % 86400 == 0:
        return f"{int(v // 86400)}d"
    if v >= 3600 and v % 3600 == 0:
        return f"{int(v // 3600)}h"
    return format_duration(v) if v < 60 or v % 60 == 0 else f"{v:g}s"


def _written(model: Any, field_name: str, parents: tuple[tuple[Any, str], ...] = ()) -> bool:
    """True when ``field_name`` was written in the spec on ``model`` (and each parent field)."""
    if any(name not in parent.model_fields_set for parent, name in parents):
        return False
    return field_name in model.model_fields_set


def _whole_seconds(
    findings: list[Finding], path: str, value: float, lo: int, hi: int, written: bool, what: str
) -> int:
    """``value`` as whole seconds within [lo, hi]; a Finding when that changes it."""
    nearest = int(_clamp(round(value), lo, hi))
    if nearest != value:
        findings.append(
            Finding(path, f"{_secs(value)}: AWS allows {what} {lo}-{hi} s in whole seconds", _secs(nearest), written)
        )
    return nearest


# --------------------------------------------------------------------------- protocols


LB_KIND = {"http": "http", "https": "http", "tcp": "tcp", "tls": "tcp"}
"""A listener protocol -> the kind of its load balancer and target groups: http (ALB) or tcp (NLB).
An ALB terminates https and forwards HTTP; an NLB's TLS listener forwards plain TCP."""


def group_protocols(spec: Spec) -> dict[str, set[str]]:
    """For each target group, the kinds of listener (http/tcp, see ``LB_KIND``) that send to it."""
    used: dict[str, set[str]] = {name: set() for name in spec.target_groups}
    for lst in spec.listeners:
        kind = LB_KIND[lst.protocol]
        used.setdefault(lst.default_target_group, set()).add(kind)
        for rule in lst.rules:
            for tg in rule.forward_weights() or {}:
                used.setdefault(tg, set()).add(kind)
    return used


# --------------------------------------------------------------------------- TLS


def map_listener_tls(lst: ListenerSpec, lpath: str, materials: Mapping[str, CertificateMaterial],
                     d: Desired) -> dict[str, Any]:
    """The TLS properties of an HTTPS (ALB) or TLS (NLB) listener; ACM certificates are added to ``d``.

    A certificate with ``arn`` is used as it is; one given as files is imported into ACM,
    keyed by its fingerprint (new files: a new certificate, the old one deleted once the
    listener moved). The default certificate is the listener's; the others are added as
    listener certificates, which the load balancer chooses by SNI as fivenines does."""
    refs: list[str] = []
    for j, c in enumerate(lst.certificates):
        if c.arn:
            refs.append(c.arn)
            continue
        m = materials.get(c.cert)
        if m is None:
            d.findings.append(Finding(f"{lpath}.certificates.{j}.cert", f"{c.cert}: cannot be read to import into ACM "
                                      "(fivenines validate names the problem); or give arn: an ACM certificate", None))
            continue
        key = f"cert/{m.fingerprint[:16]}"
        if key not in d.resources:
            d.add(Resource(Kind.CERTIFICATE, key, f"{m.domain} ({m.fingerprint[:12]})",
                           {"fingerprint": m.fingerprint, "domain": m.domain}, payload=m))
        refs.append(f"@{key}")
    default = next((j for j, c in enumerate(lst.certificates) if c.default), 0)
    props: dict[str, Any] = {"ssl_policy": lst.ssl_policy}
    if refs:
        chosen = refs[min(default, len(refs) - 1)]
        props["certificate"] = chosen
        props["extra_certificates"] = sorted({r for r in refs if r != chosen})
    if lst.mutual_authentication.mode != "off":
        d.findings.append(Finding(f"{lpath}.mutual_authentication", f"mode {lst.mutual_authentication.mode}: fivenines "
                                  "does not create ELB trust stores yet; set it up on the listener by hand, or remove it",
                                  None))
    if "session_tickets" in lst.model_fields_set:
        d.notes.append(f"{lpath}.session_tickets: Elastic Load Balancing issues and rotates its own ticket keys")
    return props


# --------------------------------------------------------------------------- health check


def map_health_check(
    hc: HealthCheckSpec, protocol: str, path: str, written_parent: bool, findings: list[Finding]
) -> dict[str, Any]:
    """Health check settings in ELBv2 terms (normal form), with findings for what must give."""

    def written(name: str) -> bool:
        return written_parent and name in hc.model_fields_set

    hc_protocol = hc.protocol
    if protocol == "http" and hc_protocol == "tcp":
        findings.append(
            Finding(
                f"{path}.protocol",
                "an Application Load Balancer target group checks over HTTP only",
                f"http (path {hc.path})",
                written("protocol"),
            )
        )
        hc_protocol = "http"
    interval = _whole_seconds(findings, f"{path}.interval", hc.interval, *INTERVAL_RANGE, written("interval"), "intervals of")
    tmax = min(TIMEOUT_RANGE[1], interval - 1)
    timeout_nearest = int(_clamp(round(hc.timeout), TIMEOUT_RANGE[0], tmax))
    if timeout_nearest != hc.timeout:
        findings.append(
            Finding(
                f"{path}.timeout",
                f"{_secs(hc.timeout)}: AWS allows timeouts of {TIMEOUT_RANGE[0]}-{TIMEOUT_RANGE[1]} s in whole seconds, "
                f"less than the interval ({interval}s)",
                _secs(timeout_nearest),
                written("timeout"),
            )
        )
    thresholds = {}
    for name in ("healthy_threshold", "unhealthy_threshold"):
        v = getattr(hc, name)
        near = int(_clamp(v, *THRESHOLD_RANGE))
        if near != v:
            findings.append(
                Finding(f"{path}.{name}", f"{v}: AWS allows {THRESHOLD_RANGE[0]}-{THRESHOLD_RANGE[1]}", str(near), written(name))
            )
        thresholds[name] = near
    out: dict[str, Any] = {
        "protocol": hc_protocol.upper(),
        "port": str(hc.port) if hc.port is not None else "traffic-port",
        "interval": interval,
        "timeout": timeout_nearest,
        "healthy_threshold": thresholds["healthy_threshold"],
        "unhealthy_threshold": thresholds["unhealthy_threshold"],
    }
    if hc_protocol == "http":
        lo, hi = ALB_MATCHER_RANGE if protocol == "http" else NLB_MATCHER_RANGE
        ranges = parse_matcher(hc.matcher)
        clamped = [(max(a, lo), min(b, hi)) for a, b in ranges if b >= lo and a <= hi]
        matcher = hc.matcher.replace(" ", "")
        if clamped != list(ranges):
            nearest = ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in clamped) or "200-399"
            kind = "an Application" if protocol == "http" else "a Network"
            findings.append(
                Finding(
                    f"{path}.matcher",
                    f"{hc.matcher!r}: {kind} Load Balancer accepts status codes {lo}-{hi}",
                    nearest,
                    written("matcher"),
                )
            )
            matcher = nearest
        out["path"] = hc.path
        out["matcher"] = matcher
    return out


# --------------------------------------------------------------------------- target groups


def _target_address(findings: list[Finding], path: str, address: str) -> tuple[str, int] | None:
    host, port = split_hostport(address)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        findings.append(
            Finding(path, f"{address}: Elastic Load Balancing registers IP addresses, not host names; write the IP", None)
        )
        return None
    if ip.is_loopback or ip.is_unspecified or ip.is_link_local or ip.is_multicast:
        findings.append(
            Finding(
                path,
                f"{address} is a {'loopback' if ip.is_loopback else 'local-only'} address, reachable on this "
                "machine only; AWS targets are VPC addresses (e.g. 10.0.1.5:8080), or use instances",
                None,
            )
        )
        return None
    if port == 0:
        findings.append(Finding(path, f"{address}: port 0 is not a target port", None))
        return None
    return str(ip), port


def map_target_group_attributes(
    name: str, tg: TargetGroupSpec, protocol: str, findings: list[Finding]
) -> dict[str, str]:
    """Target group attributes (deregistration, slow start, stickiness, algorithm)."""
    path = f"target_groups.{name}"
    attrs: dict[str, str] = {}
    attrs["deregistration_delay.timeout_seconds"] = str(
        _whole_seconds(
            findings,
            f"{path}.deregistration_delay",
            tg.deregistration_delay,
            *DEREGISTRATION_RANGE,
            _written(tg, "deregistration_delay"),
            "deregistration delays of",
        )
    )
    algo_written = _written(tg, "algorithm")
    if protocol == "tcp":
        if tg.algorithm not in ("round_robin", "ip_hash") and algo_written:
            findings.append(
                Finding(
                    f"{path}.algorithm",
                    f"{tg.algorithm}: a Network Load Balancer routes each TCP flow by a hash of its addresses "
                    "and ports; it has no choice of algorithm",
                    "round_robin (the flow hash), or stickiness for client affinity",
                )
            )
        if tg.slow_start > 0:
            findings.append(
                Finding(
                    f"{path}.slow_start",
                    f"{_secs(tg.slow_start)}: Network Load Balancer target groups have no slow start",
                    "0s",
                    _written(tg, "slow_start"),
                )
            )
        st = tg.stickiness
        if st is not None and st.enabled:
            attrs["stickiness.enabled"] = "true"
            attrs["stickiness.type"] = "source_ip"
            for fname in ("duration", "cookie_name"):
                if _written(st, fname):
                    findings.append(
                        Finding(
                            f"{path}.stickiness.{fname}",
                            "a Network Load Balancer sticks by client IP address (source_ip), without cookie or duration",
                            f"remove {fname}",
                        )
                    )
        else:
            attrs["stickiness.enabled"] = "false"
        return attrs

    algo = {
        "round_robin": "round_robin",
        "least_outstanding_requests": "least_outstanding_requests",
        "random": "weighted_random",
    }.get(tg.algorithm)
    if algo is None:
        reason = {
            "weighted_round_robin": "Elastic Load Balancing has no per-target weights",
            "ip_hash": "an Application Load Balancer has no hash-based balancing; "
            "stickiness (a load-balancer cookie) keeps a client on one target",
            "hash": "an Application Load Balancer has no hash-based balancing; "
            "stickiness (a load-balancer cookie) keeps a client on one target",
        }[tg.algorithm]
        findings.append(Finding(f"{path}.algorithm", f"{tg.algorithm}: {reason}", "round_robin", algo_written))
        algo = "round_robin"
    attrs["load_balancing.algorithm.type"] = algo
    slow = tg.slow_start
    if slow > 0 and algo != "round_robin":
        findings.append(
            Finding(
                f"{path}.slow_start",
                f"{_secs(slow)}: AWS supports slow start with round_robin only (algorithm maps to {algo})",
                "0s",
                _written(tg, "slow_start") or algo_written,
            )
        )
        slow = 0
    if slow > 0:
        near = int(_clamp(round(slow), *SLOW_START_RANGE))
        if near != slow:
            findings.append(
                Finding(
                    f"{path}.slow_start",
                    f"{_secs(slow)}: AWS allows slow start of {SLOW_START_RANGE[0]}-{SLOW_START_RANGE[1]} s "
                    "in whole seconds, or 0 (off)",
                    _secs(near),
                    _written(tg, "slow_start"),
                )
            )
        slow = near
    attrs["slow_start.duration_seconds"] = str(int(slow))
    st = tg.stickiness
    if st is not None and st.enabled:
        attrs["stickiness.enabled"] = "true"
        attrs["stickiness.type"] = "lb_cookie"
        attrs["stickiness.lb_cookie.duration_seconds"] = str(
            _whole_seconds(
                findings, f"{path}.stickiness.duration", st.duration, *STICKINESS_RANGE, _written(st, "duration"), "durations of"
            )
        )
        if _written(st, "cookie_name"):
            findings.append(
                Finding(
                    f"{path}.stickiness.cookie_name",
                    f"{st.cookie_name}: an Application Load Balancer names its stickiness cookie AWSALB",
                    "remove cookie_name",
                )
            )
    else:
        attrs["stickiness.enabled"] = "false"
    return attrs


def map_target_group(
    name: str, tg: TargetGroupSpec, protocol: str, network: Network, aws: AwsSpec, stack: str, d: Desired
) -> Resource:
    path = f"target_groups.{name}"
    findings = d.findings
    hc = map_health_check(tg.health_check, protocol, f"{path}.health_check", _written(tg, "health_check"), findings)
    attrs = map_target_group_attributes(name, tg, protocol, findings)
    if _written(tg, "retries"):
        findings.append(
            Finding(
                f"{path}.retries",
                "Elastic Load Balancing does not retry a failed request on another target",
                "remove retries",
            )
        )
    props: dict[str, Any] = {
        "name": aws_name(stack, name),
        "protocol": protocol.upper(),
        "vpc": network.vpc_id,
        "health_check": hc,
        "attributes": attrs,
    }
    if tg.instances is not None:
        props["port"] = aws.instance_port
        props["target_type"] = "instance"
    else:
        targets: list[str] = []
        ports: list[int] = []
        for i, t in enumerate(tg.target_list()):
            tpath = f"{path}.targets.{i}"
            if t.weight != 1:
                findings.append(
                    Finding(
                        f"{tpath}.weight",
                        f"{t.weight}: Elastic Load Balancing has no per-target weights",
                        "1 (or split the targets into groups and weight them in a forward rule)",
                    )
                )
            addr = _target_address(findings, tpath, t.address)
            if addr is not None:
                targets.append(f"{addr[0]}:{addr[1]}")
                ports.append(addr[1])
        props["port"] = ports[0] if ports else 80
        props["target_type"] = "ip"
        props["targets"] = sorted(set(targets))
    return Resource(Kind.TARGET_GROUP, f"tg/{name}", props["name"], props)


# --------------------------------------------------------------------------- rules


_PLACEHOLDER = re.compile(r"#\{(host|port|path|query|protocol)\}")


def parse_redirect(url: str) -> tuple[dict[str, str] | None, str]:
    """Split a redirect URL into ALB's RedirectConfig parts, or say why ALB cannot express it.

    Missing parts follow URL semantics: a relative ``/path`` keeps protocol, host and
    port; an absolute URL without a port means 80/443; without ``?`` means no query.

    >>> parse_redirect("https://#{host}:443/#{path}?#{query}")[0]
    {'protocol': 'HTTPS', 'host': '#{host}', 'port': '443', 'path': '/#{path}', 'query': '#{query}'}
    >>> parse_redirect("/new")[0]
    {'protocol': '#{protocol}', 'host': '#{host}', 'port': '#{port}', 'path': '/new', 'query': ''}
    >>> parse_redirect("ftp://x/")[1]
    "scheme 'ftp': ALB redirects to http, https or #{protocol}"
    """
    rest = url.strip()
    if "#" in _PLACEHOLDER.sub("", rest):
        return None, "a #fragment: ALB redirects cannot carry one"
    m = re.match(r"^([A-Za-z#{}]+)://", rest)
    if m:
        scheme = m.group(1)
        rest = rest[m.end() :]
        if scheme.lower() in ("http", "https"):
            protocol = scheme.upper()
        elif scheme == "#{protocol}":
            protocol = scheme
        else:
            return None, f"scheme {scheme!r}: ALB redirects to http, https or #{{protocol}}"
        hostport, slash, tail = rest.partition("/")
        tail = slash + tail
        if "@" in hostport:
            return None, "user information (user@host): ALB redirects cannot carry it"
        hm = re.fullmatch(r"(.+?)(?::(\d{1,5}|#\{port\}))?", hostport)
        if not hostport or hm is None:
            return None, "no host"
        host = hm.group(1)
        default_port = {"HTTP": "80", "HTTPS": "443"}.get(protocol, "#{port}")
        port = hm.group(2) or default_port
        if port.isdigit() and not 1 <= int(port) <= 65535:
            return None, f"port {port}: must be 1-65535"
        if not tail:
            tail = "/"
    elif rest.startswith("/"):
        protocol, host, port, tail = "#{protocol}", "#{host}", "#{port}", rest
    else:
        return None, "neither an absolute URL (https://host/path) nor a path starting with /"
    upath, q, query = tail.partition("?")
    parts = {"protocol": protocol, "host": host, "port": port, "path": upath, "query": query if q else ""}
    if "#{query}" in upath or "#{protocol}" in upath:
        return None, "ALB's redirect path may use #{host}, #{path} and #{port} only"
    for k in ("host", "path", "query"):
        if len(parts[k]) > 128:
            return None, f"the {k} is longer than ALB's 128 characters"
    if parts == {"protocol": "#{protocol}", "host": "#{host}", "port": "#{port}", "path": "/#{path}", "query": "#{query}"}:
        return None, "it redirects to the same URL (a loop); ALB rejects it"
    return parts, ""


_STATUS_NEAREST = {301: 301, 302: 302, 303: 302, 307: 302, 308: 301}


def map_redirect(r: RedirectSpec, path: str, findings: list[Finding]) -> dict[str, Any]:
    parts, problem = parse_redirect(r.url)
    if parts is None:
        findings.append(Finding(f"{path}.url", f"{r.url!r}: ALB cannot express this redirect: {problem}", None))
        parts = {"protocol": "#{protocol}", "host": "#{host}", "port": "#{port}", "path": "/", "query": ""}
    status = _STATUS_NEAREST[r.status]
    if status != r.status:
        findings.append(
            Finding(
                f"{path}.status",
                f"{r.status}: ALB redirects with 301 or 302 only",
                str(status),
                _written(r, "status"),
            )
        )
    return {"type": "redirect", **parts, "status": f"HTTP_{status}"}


def map_fixed_response(f: FixedResponseSpec, path: str, findings: list[Finding]) -> dict[str, Any]:
    if not (200 <= f.status <= 299 or 400 <= f.status <= 599):
        findings.append(
            Finding(f"{path}.status", f"{f.status}: ALB fixed responses are 2XX, 4XX or 5XX (use redirect for 3XX)", None)
        )
    content_type = f.content_type
    if content_type not in FIXED_RESPONSE_TYPES:
        findings.append(
            Finding(
                f"{path}.content_type",
                f"{content_type!r}: ALB serves {', '.join(FIXED_RESPONSE_TYPES)}",
                "text/plain",
                _written(f, "content_type"),
            )
        )
        content_type = "text/plain"
    return {"type": "fixed-response", "status": str(f.status), "content_type": content_type, "body": f.body}


def map_forward(
    weights: dict[str, int], stickiness: float | None, path: str, findings: list[Finding]
) -> dict[str, Any]:
    if len(weights) > FORWARD_MAX_GROUPS:
        findings.append(
            Finding(f"{path}.target_groups", f"{len(weights)} groups: ALB forwards to at most {FORWARD_MAX_GROUPS}", None)
        )
    sticky = 0
    if stickiness is not None:
        sticky = _whole_seconds(findings, f"{path}.stickiness", stickiness, *STICKINESS_RANGE, True, "group stickiness of")
    return {"type": "forward", "target_groups": {f"@tg/{k}": v for k, v in sorted(weights.items())}, "stickiness": sticky}


def map_conditions(m: RuleMatch, path: str, findings: list[Finding]) -> list[dict[str, Any]]:
    """ALB conditions, sorted into normal form, with findings for ALB's per-rule limits."""
    conds: list[dict[str, Any]] = []
    if m.path:
        conds.append({"field": "path-pattern", "values": list(m.path)})
    if m.host:
        conds.append({"field": "host-header", "values": list(m.host)})
    for name, values in sorted((m.header or {}).items()):
        if len(name) > 40:
            findings.append(Finding(f"{path}.header.{name}", "ALB matches header names of up to 40 characters", None))
        conds.append({"field": "http-header", "name": name, "values": list(values)})
    if m.method:
        conds.append({"field": "http-request-method", "values": list(m.method)})
    for key, value in sorted((m.query or {}).items()):
        conds.append({"field": "query-string", "values": [{"key": key, "value": value}]})
    if m.source_ip:
        conds.append({"field": "source-ip", "values": [str(ipaddress.ip_network(c, strict=False)) for c in m.source_ip]})
    for c in conds:
        n = len(c["values"])
        if n > RULE_VALUES_PER_CONDITION:
            what = c["field"] + (f" {c['name']}" if "name" in c else "")
            findings.append(
                Finding(
                    path,
                    f"{n} values for {what}: ALB allows {RULE_VALUES_PER_CONDITION} per condition; split it into several rules",
                    None,
                )
            )
    total = sum(len(c["values"]) for c in conds)
    if total > RULE_VALUES_PER_RULE:
        findings.append(
            Finding(
                path,
                f"{total} condition values: ALB allows {RULE_VALUES_PER_RULE} per rule; split it into several rules",
                None,
            )
        )
    for c in conds:
        if c["field"] == "path-pattern":
            for v in c["values"]:
                if len(v) > 128:
                    findings.append(Finding(f"{path}.path", f"{v[:20]}...: ALB path patterns have at most 128 characters", None))
    return sorted(conds, key=lambda c: (c["field"], c.get("name", ""), repr(c["values"])))


def map_rule_action(rule: RuleSpec, path: str, findings: list[Finding]) -> dict[str, Any]:
    if rule.redirect is not None:
        return map_redirect(rule.redirect, f"{path}.redirect", findings)
    if rule.fixed_response is not None:
        return map_fixed_response(rule.fixed_response, f"{path}.fixed_response", findings)
    weights = rule.forward_weights() or {}
    sticky = rule.forward.stickiness if rule.forward is not None and not isinstance(rule.forward, str) else None
    return map_forward(weights, sticky, f"{path}.forward", findings)


# --------------------------------------------------------------------------- instances


def _systemd_quote(arg: str) -> str:
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def _substitute(text: str, port: int) -> str:
    return text.replace("{port}", str(port)).replace("{id}", "${FIVENINES_ID}")


def user_data(stack: str, group: str, inst: InstancesSpec, aws: AwsSpec) -> str:
    """The boot script of an instance: the user's setup, then the command as a systemd service.

    ``{port}`` becomes ``aws.instance_port``; ``{id}`` becomes the EC2 instance id.

    >>> from fivenines.spec import InstancesSpec, AwsSpec
    >>> script = user_data("demo", "web", InstancesSpec(command=["app", "--port", "{port}"]), AwsSpec())
    >>> [line for line in script.splitlines() if line.startswith("ExecStart")]
    ['ExecStart="app" "--port" "8080"']
    """
    port = aws.instance_port
    if isinstance(inst.command, str):
        exec_start = f"/bin/sh -c {_substitute(_systemd_quote(inst.command), port)}"
    else:
        exec_start = " ".join(_substitute(_systemd_quote(a), port) for a in inst.command)
    unit = f"fivenines-{aws_name(group, limit=64)}"
    env_lines = [
        f"Environment={_systemd_quote(f'{k}=' + v.replace('{port}', str(port)))}" for k, v in sorted(inst.env.items())
    ]
    lines = [
        "#!/bin/bash",
        f"# fivenines: stack {stack}, target group {group}. Generated by `fivenines aws`; do not edit.",
        "set -euo pipefail",
    ]
    if aws.user_data:
        lines += ["# --- aws.user_data", aws.user_data.rstrip("\n"), "# --- end of aws.user_data"]
    lines += [
        "TOKEN=$(curl -sf -X PUT http://169.254.169.254/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')",
        'ID=$(curl -sf -H "X-aws-ec2-metadata-token: $TOKEN" http://169.254.169.254/latest/meta-data/instance-id)',
        "mkdir -p /etc/fivenines",
        f'echo "FIVENINES_ID=$ID" > /etc/fivenines/{unit}.env',
        f"cat > /etc/systemd/system/{unit}.service <<'UNIT'",
        "[Unit]",
        f"Description=fivenines {stack}/{group}",
        "Wants=network-online.target",
        "After=network-online.target",
        "[Service]",
        f"EnvironmentFile=/etc/fivenines/{unit}.env",
        *env_lines,
        *([f"WorkingDirectory={inst.cwd}"] if inst.cwd else []),
        f"ExecStart={exec_start}",
        "Restart=always",
        f"RestartSec={max(1, round(inst.restart.initial_delay))}",
        f"TimeoutStopSec={max(1, round(inst.stop_timeout))}",
        "[Install]",
        "WantedBy=multi-user.target",
        "UNIT",
        "systemctl daemon-reload",
        f"systemctl enable --now {unit}.service",
    ]
    return "\n".join(lines) + "\n"


def map_instances(
    name: str, inst: InstancesSpec, network: Network, aws: AwsSpec, stack: str, d: Desired,
    scaling: ScalingSpec | None = None,
) -> tuple[Resource, Resource]:
    path = f"target_groups.{name}.instances"
    if inst.cwd is not None and not inst.cwd.startswith("/"):
        d.findings.append(
            Finding(f"{path}.cwd", f"{inst.cwd!r}: on an instance the working directory must be an absolute path", None)
        )
    script = user_data(stack, name, inst, aws)
    encoded = base64.b64encode(script.encode()).decode()
    if len(encoded) > USER_DATA_MAX:
        d.findings.append(
            Finding("aws.user_data", f"the boot script is {len(encoded)} bytes in base64; EC2 allows {USER_DATA_MAX}", None)
        )
    argv = [inst.command] if isinstance(inst.command, str) else inst.command
    if any("127.0.0.1" in a or "localhost" in a for a in argv):
        d.notes.append(
            f"{path}.command: mentions 127.0.0.1/localhost; on an instance the service must listen on its VPC "
            "address (e.g. 0.0.0.0) for the load balancer to reach it"
        )
    if inst.standby:
        served = (f"the {inst.count} active one(s) (desired capacity {inst.total})" if scaling is None else
                  f"the actives (the group's range is {scaling.min + inst.standby}..{scaling.max + inst.standby})")
        d.notes.append(
            f"{path}.standby: Elastic Load Balancing has no standby role; the {inst.standby} standby instance(s) "
            f"serve traffic like {served}"
        )
    lt_key, asg_key = f"lt/{name}", f"asg/{name}"
    instance_tags = [t for t in stack_tags(stack, asg_key, aws) if t["Key"] != TAG_RESOURCE]
    instance_tags = sorted([*instance_tags, {"Key": "Name", "Value": f"{stack}-{name}"}], key=lambda t: t["Key"])
    data: dict[str, Any] = {
        "ImageId": aws.ami,
        "InstanceType": aws.instance_type,
        "SecurityGroupIds": ["@sg/instances", *sorted(aws.security_groups)],
        "UserData": encoded,
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": instance_tags},
            {"ResourceType": "volume", "Tags": instance_tags},
        ],
    }
    if aws.key_name:
        data["KeyName"] = aws.key_name
    lt_name = aws_name("fivenines", stack, name, limit=128)
    lt = Resource(Kind.LAUNCH_TEMPLATE, lt_key, lt_name, {"name": lt_name, "data": data})
    grace = round(aws.health_check_grace_period)
    asg_name = aws_name("fivenines", stack, name, limit=255)
    sizes: dict[str, int] = {"min_size": inst.total, "max_size": inst.total, "desired_capacity": inst.total}
    start: dict[str, int] = {}
    if scaling is not None:
        # min..max actives, standbys on top; the desired capacity is AWS's to move: sent at creation only
        sizes = {"min_size": scaling.min + inst.standby, "max_size": scaling.max + inst.standby}
        start = {"desired_capacity": inst.total}
    asg = Resource(
        Kind.AUTO_SCALING_GROUP,
        asg_key,
        asg_name,
        {
            "name": asg_name,
            "launch_template": f"@{lt_key}",
            "launch_template_version": "$Latest",
            **sizes,
            "subnets": sorted(s.id for s in network.subnets),
            "target_groups": [f"@tg/{name}"],
            "health_check_type": "ELB",
            "health_check_grace_period": grace,
        },
        create_only=start,
    )
    return lt, asg


# --------------------------------------------------------------------------- scaling

ALB_REQUESTS = "ALBRequestCountPerTarget"
ASG_CPU = "ASGAverageCPUUtilization"


def instance_warmup(tg_props: dict[str, Any], aws: AwsSpec) -> int:
    """Seconds before a new instance's metrics count, as EC2 Auto Scaling estimates it (its
    ``EstimatedInstanceWarmup``): the boot allowance (``aws.health_check_grace_period``), then
    passing the target group's checks, then its slow start, all as mapped onto AWS.

    >>> instance_warmup({"health_check": {"interval": 10, "healthy_threshold": 3},
    ...                  "attributes": {"slow_start.duration_seconds": "60"}}, AwsSpec())
    390
    """
    hc = tg_props["health_check"]
    slow = int(tg_props["attributes"].get("slow_start.duration_seconds", "0"))
    return round(aws.health_check_grace_period) + int(hc["interval"]) * int(hc["healthy_threshold"]) + slow


def map_scaling(name: str, tg: TargetGroupSpec, protocol: str, network: Network, aws: AwsSpec, stack: str,
                d: Desired) -> list[Resource]:
    """A group's ``scaling:`` policies as EC2 Auto Scaling target-tracking policies.

    ``requests_per_target`` (per second) becomes ``ALBRequestCountPerTarget`` (per minute: x 60);
    ``cpu`` (percent of one core per instance process) becomes ``ASGAverageCPUUtilization``
    (percent of the instance's vCPUs: / vCPUs). ``in_flight_per_target`` and ``p99_latency``
    have no AWS target-tracking metric: left out (a finding). The decision's timing settings
    have no AWS counterpart (CloudWatch decides on 1-minute datapoints): notes.
    """
    sc = tg.scaling
    assert sc is not None
    path = f"target_groups.{name}.scaling"
    warmup = instance_warmup(d.resources[f"tg/{name}"].props, aws)
    out: list[Resource] = []
    for i, pol in enumerate(sc.policies):
        given = pol.metric()
        assert given is not None, "spec validation lets exactly one metric per policy through"
        metric, target = given
        ppath = f"{path}.policies.{i}.{metric}"
        written = _written(sc, "policies")
        if metric == "requests_per_target" and (protocol != "http" or "lb/alb" not in d.resources):
            behind = "a network load balancer (tcp)" if protocol != "http" else "no listener"
            d.findings.append(Finding(ppath, "ALBRequestCountPerTarget needs an application load balancer; this "
                                      f"group is behind {behind}", "no such policy on AWS", written))
            continue
        if metric in ("in_flight_per_target", "p99_latency"):
            what = ("requests in flight per target" if metric == "in_flight_per_target"
                    else "a latency percentile per target")
            d.findings.append(Finding(ppath, f"EC2 Auto Scaling target tracking has no metric for {what}",
                                      "no such policy on AWS (the group's other policies remain)", written))
            continue
        props: dict[str, Any] = {
            "name": aws_name("fivenines", stack, name, metric, limit=255),
            "auto_scaling_group": f"@asg/{name}",
            "policy_type": "TargetTrackingScaling",
            "estimated_instance_warmup": warmup,
            "disable_scale_in": False,
        }
        if metric == "requests_per_target":
            props["metric"] = ALB_REQUESTS
            props["resource_label"] = {"load_balancer": "@lb/alb", "target_group": f"@tg/{name}"}
            props["target_value"] = float(round(float(target) * 60, 3))  # AWS counts per minute
        else:
            if network.vcpus is None:
                d.findings.append(Finding(ppath, f"the vCPUs of {aws.instance_type} are unknown: cannot convert a "
                                          "percent of one core to a percent of the instance", None, written))
                continue
            share = float(target) / network.vcpus
            if share > 100:
                d.findings.append(Finding(ppath, f"{target:g}% of one core is {share:g}% of a {network.vcpus}-vCPU "
                                          f"{aws.instance_type}: more than it has", f"{100 * network.vcpus:g}", written))
                share = 100.0
            props["metric"] = ASG_CPU
            props["target_value"] = float(round(share, 3))
        out.append(Resource(Kind.SCALING_POLICY, f"policy/{name}/{metric}", props["name"], props))
    if not out:
        d.findings.append(Finding(f"{path}.policies", "no policy has an AWS target-tracking equivalent: give "
                                  "requests_per_target (behind an ALB) or cpu", None))
    d.notes.append(
        f"{path}: on AWS, target tracking decides on CloudWatch's 1-minute datapoints (minutes to scale out, about "
        f"15 minutes of low readings to scale in; no scale-in cooldown setting exists for it): evaluation_interval, "
        f"scale_out_window, scale_in_stabilization, max_step and tolerance apply to the local runtime only; "
        f"instance warm-up {warmup}s (grace period + checks + slow start)"
    )
    return out


# --------------------------------------------------------------------------- the whole stack


def check_network(network: Network) -> list[Finding]:
    zones = network.zones
    seen: dict[str, str] = {}
    for sub in network.subnets:
        if sub.availability_zone in seen:
            return [
                Finding(
                    "aws.subnets",
                    f"{seen[sub.availability_zone]} and {sub.id} are both in {sub.availability_zone}; "
                    "a load balancer takes one subnet per availability zone",
                    None,
                )
            ]
        seen[sub.availability_zone] = sub.id
    if len(zones) < 2:
        return [
            Finding(
                "aws.subnets",
                f"the subnets span {len(zones)} availability zone(s) ({', '.join(zones) or 'none'}); "
                "a load balancer and a redundant service need subnets in at least two",
                None,
            )
        ]
    return []


def map_spec(spec: Spec, network: Network, certificates: Mapping[str, CertificateMaterial] | None = None) -> Desired:
    """The desired AWS state of ``spec`` in ``network``, with every finding and note.

    ``certificates``: the PEM material of https/tls listeners, by ``cert`` path as written
    (:func:`fivenines.certs.read_materials` reads it; pure code reads no file)."""
    aws = spec.aws or AwsSpec()
    stack = spec.name
    d = Desired(stack)
    d.findings.extend(check_network(network))
    protocols = group_protocols(spec)
    subnets = sorted(s.id for s in network.subnets)
    scheme = "internal" if aws.internal else "internet-facing"
    has = {p: any(LB_KIND[lst.protocol] == p for lst in spec.listeners) for p in ("http", "tcp")}

    # security groups
    lb_ingress = sorted(
        {f"tcp:{lst.port} from {cidr}" for lst in spec.listeners if lst.port for cidr in aws.allow_from}
    )
    d.add(
        Resource(
            Kind.SECURITY_GROUP,
            "sg/lb",
            aws_name("fivenines", stack, "lb", limit=255),
            {
                "name": aws_name("fivenines", stack, "lb", limit=255),
                "vpc": network.vpc_id,
                "description": f"fivenines {stack}: load balancer",
                "ingress": lb_ingress,
            },
        )
    )
    instance_groups = {n: tg for n, tg in spec.target_groups.items() if tg.instances is not None}
    if instance_groups:
        ports = {aws.instance_port}
        ports |= {tg.health_check.port for tg in instance_groups.values() if tg.health_check.port}
        d.add(
            Resource(
                Kind.SECURITY_GROUP,
                "sg/instances",
                aws_name("fivenines", stack, "instances", limit=255),
                {
                    "name": aws_name("fivenines", stack, "instances", limit=255),
                    "vpc": network.vpc_id,
                    "description": f"fivenines {stack}: instances, reachable from the load balancer",
                    "ingress": sorted(f"tcp:{p} from @sg/lb" for p in ports),
                },
            )
        )

    # load balancers
    for proto, key, lb_type in (("http", "lb/alb", "application"), ("tcp", "lb/nlb", "network")):
        if has[proto]:
            name = aws_name(stack, key.split("/")[1])
            d.add(
                Resource(
                    Kind.LOAD_BALANCER,
                    key,
                    name,
                    {
                        "name": name,
                        "type": lb_type,
                        "scheme": scheme,
                        "subnets": subnets,
                        "security_groups": ["@sg/lb"],
                    },
                )
            )

    # target groups
    for name, tg in spec.target_groups.items():
        used = protocols.get(name, set())
        if len(used) > 1:
            d.findings.append(
                Finding(
                    f"target_groups.{name}",
                    "used by http and tcp listeners; an ELB target group belongs to one kind of load balancer "
                    "(ALB or NLB): split it into two groups",
                    None,
                )
            )
        if not used:
            d.notes.append(f"target_groups.{name}: no listener sends traffic to it; its targets stay unused")
        protocol = "tcp" if used == {"tcp"} else "http"
        d.add(map_target_group(name, tg, protocol, network, aws, stack, d))
        if tg.instances is not None:
            for r in map_instances(name, tg.instances, network, aws, stack, d, tg.scaling):
                d.add(r)
            if tg.scaling is not None:
                for r in map_scaling(name, tg, protocol, network, aws, stack, d):
                    d.add(r)

    # listeners and rules
    for i, lst in enumerate(spec.listeners):
        lpath = f"listeners.{i}"
        port = lst.port
        if port == 0:
            near = {"http": "80", "https": "443"}.get(lst.protocol)
            d.findings.append(
                Finding(f"{lpath}.port", "0 (any free port) has no meaning on a load balancer; give the port", near)
            )
            port = int(near or 80)
        lb_key = "lb/alb" if LB_KIND[lst.protocol] == "http" else "lb/nlb"
        lkey = f"listener/{port}"
        if lkey in d.resources:
            d.findings.append(
                Finding(f"{lpath}.port", f"{port}: another listener has this port; a load balancer port is unique", None)
            )
            continue
        default = map_forward({lst.default_target_group: 1}, None, f"{lpath}.default_target_group", d.findings)
        lname = f"{aws_name(stack, lb_key.split('/')[1])}:{port}"
        props: dict[str, Any] = {
            "load_balancer": f"@{lb_key}",
            "port": port,
            "protocol": "TCP" if lst.passthrough else lst.protocol.upper(),
            "default_action": default,
        }
        if lst.tls and not lst.passthrough:
            props.update(map_listener_tls(lst, lpath, certificates or {}, d))
        d.add(Resource(Kind.LISTENER, lkey, lname, props))
        if lst.protocol == "tls" and lst.rules:
            d.findings.append(Finding(f"{lpath}.rules", "a Network Load Balancer routes no connection by SNI: one "
                                      "listener (port) per destination, or an ALB https listener with host rules", None))
            continue
        for j, rule in enumerate(lst.rules):
            rpath = f"{lpath}.rules.{j}"
            priority = j + 1
            d.add(
                Resource(
                    Kind.RULE,
                    f"rule/{port}/{priority}",
                    f"{lname} rule {priority}" + (f" ({rule.name})" if rule.name else ""),
                    {
                        "listener": f"@{lkey}",
                        "priority": priority,
                        "conditions": map_conditions(rule.match, f"{rpath}.match", d.findings),
                        "actions": [map_rule_action(rule, rpath, d.findings)],
                    },
                )
            )
    return d
