"""The AWS provider: a thin boto3 adapter around the pure mapping and plan.

It looks the stack up **by its tags** (``fivenines:stack`` and ``fivenines:managed``),
reads what it finds back into the normal form of :mod:`fivenines.cloud.resources`,
lets :mod:`fivenines.cloud.plan` decide what changes, and carries the steps out.
What is done with each kind of resource (read back, look up by name, create,
update, delete) is the kind's handler in :mod:`fivenines.cloud.aws_kinds`, looked
up in ``HANDLERS``; the API shapes are :mod:`fivenines.cloud.aws_shapes` (pure).
This module keeps what is the same for every kind: the session and clients, the
translation of AWS errors, the network lookup, listing the stack, conflicts, the
order of the steps and the status read-out.
It never touches a resource without both tags and refuses to adopt one that only
shares a name. Every resource is tagged in the call that creates it, so an apply
interrupted halfway leaves only resources the next run finds and finishes.

boto3 is imported lazily (``pip install 'fivenines[aws]'``). Clients use botocore's
``standard`` retry mode (throttling is retried with backoff); waiters and
paginators are used where AWS offers them. Every AWS error becomes one
:class:`~fivenines.errors.ProviderError` line naming the resource and the cause.
Credentials come from the standard boto3 chain only and are never logged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fivenines import __version__
from fivenines.cloud.aws_kinds import HANDLERS, Update, error_code
from fivenines.cloud.aws_shapes import changed_fields, resolve, tags_of
from fivenines.cloud.mapping import ALB_REQUESTS, ASG_CPU, map_spec
from fivenines.cloud.plan import Action, Observed, Op, Plan, diff, steps
from fivenines.cloud.resources import (
    TAG_MANAGED,
    TAG_RESOURCE,
    TAG_STACK,
    Desired,
    Kind,
    Network,
    Resource,
    Subnet,
    stack_tags,
)
from fivenines.errors import NetworkError, ProviderError, TimedOut
from fivenines.spec import AwsSpec, Spec

POLICY_METRICS = {ALB_REQUESTS: "requests_per_target", ASG_CPU: "cpu"}
"""AWS's predefined metric of a scaling policy -> the ``scaling:`` policy it maps (its key: ``policy/GROUP/METRIC``)."""


class AwsUnreachable(ProviderError, NetworkError):
    """The AWS endpoint could not be reached."""


class AwsTimeout(ProviderError, TimedOut):
    """AWS did not finish a step (a deletion, a waiter) within the provider's timeout."""


@dataclass(frozen=True)
class AwsOptions:
    """Where to talk to AWS. None means: let the boto3 chain decide."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None


@dataclass
class Observation:
    """What was found for a stack: its resources, plus foreign listeners and rules on its load balancers."""

    resources: dict[str, Observed] = field(default_factory=dict)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    foreign_listeners: dict[str, dict[int, str]] = field(default_factory=dict)  # lb key -> port -> arn
    foreign_rules: dict[str, dict[int, str]] = field(default_factory=dict)  # listener key -> priority -> arn
    duplicates: list[str] = field(default_factory=list)


@dataclass
class Prepared:
    """Everything ``plan`` shows and ``apply`` carries out."""

    desired: Desired
    observation: Observation
    plan: Plan
    conflicts: list[str]


def _max_attempts() -> int:
    """``AWS_MAX_ATTEMPTS`` when set (the standard variable), else 8 attempts in all."""
    try:
        return max(1, int(os.environ.get("AWS_MAX_ATTEMPTS", "8")))
    except ValueError:
        return 8


def _ours(tags: dict[str, str], stack: str) -> bool:
    return tags.get(TAG_STACK) == stack and tags.get(TAG_MANAGED) == "true"


_ERROR_CODE_HINTS = {
    "AuthFailure": "the credentials were refused",
    "UnauthorizedOperation": "these credentials may not do this (IAM)",
    "AccessDenied": "these credentials may not do this (IAM)",
    "AccessDeniedException": "these credentials may not do this (IAM)",
}


class AwsProvider:
    """Observe, plan, apply, destroy and report a fivenines stack on AWS."""

    def __init__(
        self,
        options: AwsOptions,
        *,
        sleep: Callable[[float], None] = time.sleep,
        poll: float = 5.0,
        timeout: float = 900.0,
        log: Callable[[str], None] = lambda _msg: None,
    ) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:  # pragma: no cover - depends on the installation
            raise ProviderError("the aws commands need boto3: pip install 'fivenines[aws]'") from None
        self.options = options
        self.sleep = sleep
        self.poll = poll
        self.timeout = timeout
        self.log = log
        with self.aws("reading the AWS configuration"):
            session = boto3.Session(profile_name=options.profile, region_name=options.region)
        if not session.region_name:
            raise ProviderError(
                "no AWS region: pass --region, set aws.region in the spec, or set AWS_REGION / a profile region"
            )
        self.region: str = session.region_name
        config = Config(
            # botocore's standard mode: throttling and transient errors retried with jittered backoff
            retries={"mode": "standard", "max_attempts": _max_attempts()},
            user_agent_extra=f"fivenines/{__version__}",
            connect_timeout=10,
            read_timeout=60,
        )
        kw: dict[str, Any] = {"config": config}
        if options.endpoint_url:
            kw["endpoint_url"] = options.endpoint_url
        self.ec2: Any = session.client("ec2", **kw)
        self.elb: Any = session.client("elbv2", **kw)
        self.asg: Any = session.client("autoscaling", **kw)
        self.acm: Any = session.client("acm", **kw)

    def __repr__(self) -> str:
        where = f" via {self.options.endpoint_url}" if self.options.endpoint_url else ""
        return f"<AwsProvider {self.region}{where}>"

    # ------------------------------------------------------------------ errors

    @contextmanager
    def aws(self, what: str) -> Iterator[None]:
        """Turn any boto3/botocore failure into one ProviderError line: what we did, and why it failed."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            NoRegionError,
            PartialCredentialsError,
            ProfileNotFound,
            WaiterError,
        )

        try:
            yield
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = err.get("Code", "Error")
            message = (err.get("Message") or "").strip().splitlines()[0] if err.get("Message") else ""
            hint = _ERROR_CODE_HINTS.get(code)
            tail = f" ({hint})" if hint else ""
            raise ProviderError(f"{what}: {code}: {message}{tail}".rstrip(": ")) from None
        except (NoCredentialsError, PartialCredentialsError):
            raise ProviderError(
                f"{what}: no usable AWS credentials (boto3 looked in the environment, the shared "
                "credentials and config files, SSO and the instance role); set a profile with --profile or AWS_PROFILE"
            ) from None
        except ProfileNotFound:
            raise ProviderError(f"{what}: AWS profile {self.options.profile!r} is not in the config files") from None
        except NoRegionError:
            raise ProviderError(f"{what}: no AWS region: pass --region or set AWS_REGION") from None
        except EndpointConnectionError as exc:
            raise AwsUnreachable(f"{what}: cannot reach {exc.kwargs.get('endpoint_url', 'the AWS endpoint')}") from None
        except WaiterError as exc:  # ran out of attempts (a timeout), or reached a failure state
            cls = AwsTimeout if "Max attempts exceeded" in str(exc) else ProviderError
            raise cls(f"{what}: gave up waiting: {exc.last_response.get('Error', {}).get('Message', exc)}") from None
        except BotoCoreError as exc:
            raise ProviderError(f"{what}: {exc}") from None

    def until(self, what: str, done: Callable[[], bool]) -> None:
        """Poll ``done`` until true; a ProviderError naming ``what`` after ``timeout``."""
        deadline = time.monotonic() + self.timeout
        while not done():
            if time.monotonic() > deadline:
                raise AwsTimeout(f"{what}: not done after {self.timeout:.0f}s")
            self.sleep(self.poll)

    def waiter_config(self) -> dict[str, int]:
        return {"Delay": max(1, round(self.poll)), "MaxAttempts": max(1, round(self.timeout / max(self.poll, 1)))}

    # ------------------------------------------------------------------ network

    def network(self, aws: AwsSpec) -> Network:
        """The VPC and subnets of the stack (``aws.subnets``, else the VPC's default subnets)."""
        if aws.subnets:
            with self.aws(f"aws.subnets: looking up {', '.join(aws.subnets)}"):
                found = self.ec2.describe_subnets(SubnetIds=aws.subnets)["Subnets"]
            vpcs = sorted({s["VpcId"] for s in found})
            if len(vpcs) != 1:
                raise ProviderError(f"aws.subnets: the subnets are in {len(vpcs)} VPCs ({', '.join(vpcs)}); give subnets of one VPC")
            if aws.vpc_id and aws.vpc_id != vpcs[0]:
                raise ProviderError(f"aws.subnets: the subnets are in {vpcs[0]}, not aws.vpc_id {aws.vpc_id}")
            subnets = tuple(Subnet(s["SubnetId"], s["AvailabilityZone"], s["VpcId"]) for s in found)
            return Network(vpcs[0], tuple(sorted(subnets, key=lambda s: s.id)))
        vpc_id = aws.vpc_id
        if vpc_id is None:
            with self.aws("looking up the default VPC"):
                vpcs = self.ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
            if not vpcs:
                raise ProviderError(f"aws.subnets: region {self.region} has no default VPC; give aws.subnets (two or more zones)")
            vpc_id = vpcs[0]["VpcId"]
        with self.aws(f"looking up the subnets of {vpc_id}"):
            pages = self.ec2.get_paginator("describe_subnets").paginate(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])
            found = [s for page in pages for s in page["Subnets"]]
        by_zone: dict[str, dict[str, Any]] = {}
        for s in sorted(found, key=lambda s: (not s.get("DefaultForAz", False), s["SubnetId"])):
            by_zone.setdefault(s["AvailabilityZone"], s)
        subnets = tuple(Subnet(s["SubnetId"], s["AvailabilityZone"], s["VpcId"]) for s in by_zone.values())
        return Network(vpc_id, tuple(sorted(subnets, key=lambda s: s.id)))

    # ------------------------------------------------------------------ observe

    def elb_tags(self, arns: list[str]) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for i in range(0, len(arns), 20):
            with self.aws("reading load balancing tags"):
                resp = self.elb.describe_tags(ResourceArns=arns[i : i + 20])
            for d in resp["TagDescriptions"]:
                out[d["ResourceArn"]] = tags_of(d.get("Tags"))
        return out

    def _paginate(self, client: Any, op: str, key: str, what: str, **kwargs: Any) -> list[dict[str, Any]]:
        with self.aws(what):
            return [item for page in client.get_paginator(op).paginate(**kwargs) for item in page[key]]

    def observe(self, stack: str) -> Observation:
        """Every resource tagged as this stack's, in normal form."""
        obs = Observation()
        raw: dict[str, tuple[Kind, str, str, dict[str, Any]]] = {}  # key -> (kind, id, name, raw)
        id_to_key: dict[str, str] = {}

        def keep(kind: Kind, tags: dict[str, str], rid: str, name: str, item: dict[str, Any]) -> None:
            key = tags.get(TAG_RESOURCE) or f"?{kind.value}/{rid}"
            if key in raw:
                obs.duplicates.append(f"{kind.label} {name} ({rid}) duplicates {raw[key][2]} as {key}")
                key = f"{key}#{rid}"
            raw[key] = (kind, rid, name, item)
            id_to_key[rid] = key

        tag_filter = [{"Name": f"tag:{TAG_STACK}", "Values": [stack]}]
        for sg in self._paginate(self.ec2, "describe_security_groups", "SecurityGroups", "listing security groups", Filters=tag_filter):
            tags = tags_of(sg.get("Tags"))
            if _ours(tags, stack):
                keep(Kind.SECURITY_GROUP, tags, sg["GroupId"], sg["GroupName"], sg)

        lbs = self._paginate(self.elb, "describe_load_balancers", "LoadBalancers", "listing load balancers")
        lb_tags = self.elb_tags([lb["LoadBalancerArn"] for lb in lbs])
        our_lbs = []
        for lb in lbs:
            tags = lb_tags.get(lb["LoadBalancerArn"], {})
            if _ours(tags, stack):
                keep(Kind.LOAD_BALANCER, tags, lb["LoadBalancerArn"], lb["LoadBalancerName"], lb)
                our_lbs.append(lb)

        tgs = self._paginate(self.elb, "describe_target_groups", "TargetGroups", "listing target groups")
        tg_tags = self.elb_tags([tg["TargetGroupArn"] for tg in tgs])
        for tg in tgs:
            tags = tg_tags.get(tg["TargetGroupArn"], {})
            if _ours(tags, stack):
                keep(Kind.TARGET_GROUP, tags, tg["TargetGroupArn"], tg["TargetGroupName"], tg)

        for lb in our_lbs:
            lb_key = id_to_key[lb["LoadBalancerArn"]]
            listeners = self._paginate(
                self.elb, "describe_listeners", "Listeners", f"listing listeners of {lb['LoadBalancerName']}",
                LoadBalancerArn=lb["LoadBalancerArn"],
            )
            l_tags = self.elb_tags([li["ListenerArn"] for li in listeners])
            for li in listeners:
                tags = l_tags.get(li["ListenerArn"], {})
                if not _ours(tags, stack):
                    obs.foreign_listeners.setdefault(lb_key, {})[li["Port"]] = li["ListenerArn"]
                    continue
                keep(Kind.LISTENER, tags, li["ListenerArn"], f"{lb['LoadBalancerName']}:{li['Port']}", li)
                rules = [
                    r
                    for r in self._paginate(
                        self.elb, "describe_rules", "Rules", f"listing rules of {lb['LoadBalancerName']}:{li['Port']}",
                        ListenerArn=li["ListenerArn"],
                    )
                    if not r.get("IsDefault")
                ]
                r_tags = self.elb_tags([r["RuleArn"] for r in rules])
                for r in rules:
                    tags = r_tags.get(r["RuleArn"], {})
                    if not _ours(tags, stack):
                        obs.foreign_rules.setdefault(id_to_key[li["ListenerArn"]], {})[int(r["Priority"])] = r["RuleArn"]
                        continue
                    keep(Kind.RULE, tags, r["RuleArn"], f"{lb['LoadBalancerName']}:{li['Port']} rule {r['Priority']}", r)

        key_types = ["RSA_2048", "RSA_3072", "RSA_4096", "EC_prime256v1", "EC_secp384r1", "EC_secp521r1"]
        for c in self._paginate(self.acm, "list_certificates", "CertificateSummaryList", "listing ACM certificates",
                                Includes={"keyTypes": key_types}):
            arn = c["CertificateArn"]
            with self.aws(f"reading the tags of certificate {arn}"):
                tags = tags_of(self.acm.list_tags_for_certificate(CertificateArn=arn).get("Tags"))
            if not _ours(tags, stack):
                continue
            with self.aws(f"reading certificate {arn}"):
                pem = self.acm.get_certificate(CertificateArn=arn)["Certificate"]
            keep(Kind.CERTIFICATE, tags, arn, f"{c.get('DomainName', '')} ({arn.rsplit('/', 1)[-1][:12]})",
                 {"CertificateArn": arn, "Certificate": pem})

        for lt in self._paginate(self.ec2, "describe_launch_templates", "LaunchTemplates", "listing launch templates", Filters=tag_filter):
            tags = tags_of(lt.get("Tags"))
            if not _ours(tags, stack):
                continue
            with self.aws(f"reading launch template {lt['LaunchTemplateName']}"):
                versions = self.ec2.describe_launch_template_versions(
                    LaunchTemplateId=lt["LaunchTemplateId"], Versions=["$Latest"]
                )["LaunchTemplateVersions"]
            keep(Kind.LAUNCH_TEMPLATE, tags, lt["LaunchTemplateId"], lt["LaunchTemplateName"], {**lt, "Latest": versions[0] if versions else {}})

        for g in self._paginate(self.asg, "describe_auto_scaling_groups", "AutoScalingGroups", "listing Auto Scaling groups", Filters=tag_filter):
            tags = tags_of(g.get("Tags"))
            if _ours(tags, stack) and g.get("Status") != "Delete in progress":
                keep(Kind.AUTO_SCALING_GROUP, tags, g["AutoScalingGroupName"], g["AutoScalingGroupName"], g)
                # its scaling policies carry no tags: ours are the fivenines- ones tracking a metric we map
                group = (tags.get(TAG_RESOURCE) or "").partition("/")[2]
                for pol in self._paginate(self.asg, "describe_policies", "ScalingPolicies",
                                          f"listing the scaling policies of {g['AutoScalingGroupName']}",
                                          AutoScalingGroupName=g["AutoScalingGroupName"]):
                    tracked = (pol.get("TargetTrackingConfiguration") or {}).get("PredefinedMetricSpecification") or {}
                    metric = POLICY_METRICS.get(str(tracked.get("PredefinedMetricType", "")))
                    if group and metric and str(pol.get("PolicyName", "")).startswith("fivenines-"):
                        ptags = {TAG_RESOURCE: f"policy/{group}/{metric}"}
                        keep(Kind.SCALING_POLICY, ptags, pol["PolicyName"], pol["PolicyName"], pol)

        def ref(rid: str) -> str:
            return f"@{id_to_key[rid]}" if rid in id_to_key else rid

        for key, (kind, rid, name, item) in raw.items():
            props = HANDLERS[kind].normalise(self, item, ref)
            obs.resources[key] = Observed(Resource(kind, key, name, props), rid)
            obs.extra[key] = item
        return obs

    # ------------------------------------------------------------------ conflicts

    def conflicts(self, desired: Desired, obs: Observation) -> list[str]:
        """Same-named resources that are not this stack's: never adopted, reported instead."""
        from botocore.exceptions import ClientError

        out: list[str] = list(obs.duplicates)
        stack = desired.stack
        for key, r in desired.resources.items():
            if key in obs.resources:
                continue
            handler = HANDLERS[r.kind]
            found: tuple[dict[str, str], str] | None = None
            try:
                found = handler.owner(self, r)
            except ClientError as exc:
                if error_code(exc) not in handler.not_found:
                    with self.aws(f"looking up {r.kind.label} {r.name}"):
                        raise
            if found is not None:
                tags, rid = found
                owner = f"{rid}, of fivenines stack {tags[TAG_STACK]!r}" if tags.get(TAG_STACK) else \
                    f"{rid}, not tagged {TAG_STACK}={stack}"
                out.append(
                    f"{r.kind.label} {r.name} already exists ({owner}); refusing to adopt it: "
                    f"delete or rename it, or give the spec another name than {stack!r}"
                )
        for key, r in desired.resources.items():
            if r.kind is Kind.LISTENER and key not in obs.resources:
                lb_key = str(r.props["load_balancer"])[1:]
                arn = obs.foreign_listeners.get(lb_key, {}).get(int(r.props["port"]))
                if arn:
                    out.append(f"listener {r.name}: port {r.props['port']} has a listener not managed by fivenines ({arn})")
            if r.kind is Kind.RULE and key not in obs.resources:
                l_key = str(r.props["listener"])[1:]
                arn = obs.foreign_rules.get(l_key, {}).get(int(r.props["priority"]))
                if arn:
                    out.append(f"{r.name}: priority {r.props['priority']} is taken by a rule not managed by fivenines ({arn})")
        return out

    # ------------------------------------------------------------------ plan

    def desired(self, spec: Spec, base: Path | None = None) -> Desired:
        """The spec mapped onto this account's network (looks up the VPC and subnets, and the
        instance type's vCPUs when a ``cpu`` scaling policy needs them); ``base``: the spec's
        folder, where https/tls certificate files are read for ACM."""
        from fivenines.certs import read_materials

        aws = spec.aws or AwsSpec()
        network = self.network(aws)
        if any(p.cpu is not None for tg in spec.target_groups.values() if tg.scaling for p in tg.scaling.policies):
            network = replace(network, vcpus=self.vcpus(aws.instance_type))
        materials = read_materials(spec, base) if base is not None else None
        return map_spec(spec, network, materials)

    def vcpus(self, instance_type: str) -> int | None:
        """The default vCPUs of an EC2 instance type (None: AWS does not know the type)."""
        from botocore.exceptions import ClientError

        with self.aws(f"aws.instance_type: looking up {instance_type}"):
            try:
                found = self.ec2.describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"]
            except ClientError as exc:
                if error_code(exc).startswith("InvalidInstanceType"):
                    return None  # the mapping says it cannot convert the cpu target
                raise
        return int(found[0]["VCpuInfo"]["DefaultVCpus"]) if found else None

    def prepare(self, desired: Desired) -> Prepared:
        """Observe the stack and diff it against ``desired``; no changes are made."""
        obs = self.observe(desired.stack)
        plan = diff(desired.stack, desired.resources, obs.resources)
        conflicts = self.conflicts(desired, obs) + _foreign_children(plan, obs)
        return Prepared(desired, obs, plan, conflicts)

    def prepare_destroy(self, stack: str) -> Prepared:
        obs = self.observe(stack)
        plan = diff(stack, {}, obs.resources)
        return Prepared(Desired(stack), obs, plan, _foreign_children(plan, obs))

    # ------------------------------------------------------------------ apply

    def apply(self, prepared: Prepared, aws: AwsSpec) -> int:
        """Carry the plan out, step by step; returns the number of steps done."""
        if prepared.conflicts:
            raise ProviderError(prepared.conflicts[0])
        ids = {k: o.id for k, o in prepared.observation.resources.items()}
        desired = prepared.desired.resources
        observed = prepared.observation.resources
        done = 0
        for step in steps(prepared.plan, desired, observed):
            key = step.change.key
            handler = HANDLERS[step.change.kind]
            what = f"{step.op.value[:-1]}ing {step.change.kind.label} {step.change.name}"
            self.log(what)
            with self.aws(what):
                if step.op is Op.DELETE:
                    handler.delete(self, observed[key], prepared.observation.extra.get(key, {}))
                    ids.pop(key, None)
                elif step.op is Op.CREATE:
                    r = desired[key]
                    props = resolve({**r.props, **r.create_only}, ids)
                    if r.payload is not None:
                        props["payload"] = r.payload
                    ids[key] = handler.create(self, props, stack_tags(prepared.desired.stack, key, aws), ids)
                else:
                    r, old = desired[key], observed[key].resource.props
                    handler.update(self, Update(r, old, resolve(r.props, ids), ids[key], changed_fields(r.props, old), ids))
            done += 1
        return done

    # ------------------------------------------------------------------ status

    def status(self, stack: str) -> dict[str, Any]:
        """Load balancers, and every target's ELB health state and reason, as JSON-able data."""
        obs = self.observe(stack)
        out: dict[str, Any] = {"stack": stack, "region": self.region, "load_balancers": [], "target_groups": {},
                               "auto_scaling_groups": {}}
        instances: dict[str, dict[str, Any]] = {}
        for key, o in sorted(obs.resources.items()):
            if o.resource.kind is Kind.AUTO_SCALING_GROUP:  # sizes, and the policies that move them
                group = key.split("/", 1)[1]
                props = o.resource.props
                out["auto_scaling_groups"][group] = {
                    "name": o.resource.name, "min": props["min_size"], "desired": props["desired_capacity"],
                    "max": props["max_size"],
                    "policies": [{"metric": x.resource.props["metric"], "target": x.resource.props["target_value"]}
                                 for k, x in sorted(obs.resources.items()) if k.startswith(f"policy/{group}/")],
                }
        for key, o in obs.resources.items():
            item = obs.extra.get(key, {})
            if o.resource.kind is Kind.AUTO_SCALING_GROUP:
                for inst in item.get("Instances", []):
                    instances[inst["InstanceId"]] = {
                        "zone": inst.get("AvailabilityZone"),
                        "lifecycle": inst.get("LifecycleState"),
                        "asg_health": inst.get("HealthStatus"),
                    }
        for key, o in sorted(obs.resources.items()):
            item = obs.extra.get(key, {})
            if o.resource.kind is Kind.LOAD_BALANCER:
                listeners = sorted(
                    (int(x.resource.props["port"]), str(x.resource.props["protocol"]))
                    for x in obs.resources.values()
                    if x.resource.kind is Kind.LISTENER and x.resource.props.get("load_balancer") == f"@{key}"
                )
                dns = item.get("DNSName", "")
                out["load_balancers"].append(
                    {
                        "name": o.resource.name,
                        "type": item.get("Type"),
                        "state": item.get("State", {}).get("Code"),
                        "dns": dns,
                        "urls": [
                            f"{proto.lower()}://{dns}:{port}/" if proto in ("HTTP", "HTTPS") else f"{dns}:{port} ({proto.lower()})"
                            for port, proto in listeners
                        ],
                    }
                )
        for key, o in sorted(obs.resources.items()):
            if o.resource.kind is not Kind.TARGET_GROUP:
                continue
            with self.aws(f"reading the target health of {o.resource.name}"):
                health = self.elb.describe_target_health(TargetGroupArn=o.id)["TargetHealthDescriptions"]
            targets = []
            for h in health:
                tid = h["Target"]["Id"]
                th = h.get("TargetHealth", {})
                targets.append(
                    {
                        "id": tid,
                        "port": h["Target"].get("Port"),
                        "state": th.get("State"),
                        "reason": th.get("Reason", ""),
                        "description": th.get("Description", ""),
                        **instances.get(tid, {}),
                    }
                )
            out["target_groups"][key.split("/", 1)[1]] = {"name": o.resource.name, "targets": sorted(targets, key=lambda t: str(t["id"]))}
        return out


def _foreign_children(plan: Plan, obs: Observation) -> list[str]:
    """Deleting a load balancer or listener deletes what hangs off it: refuse when that is not ours."""
    out = []
    for c in plan.changes:
        if c.action not in (Action.DELETE, Action.REPLACE):
            continue
        if c.kind is Kind.LOAD_BALANCER and obs.foreign_listeners.get(c.key):
            ports = ", ".join(str(p) for p in sorted(obs.foreign_listeners[c.key]))
            out.append(
                f"load balancer {c.name} has listeners not managed by fivenines (ports {ports}); "
                f"deleting it would delete them: remove them first"
            )
        if c.kind is Kind.LISTENER and obs.foreign_rules.get(c.key):
            prios = ", ".join(str(p) for p in sorted(obs.foreign_rules[c.key]))
            out.append(
                f"listener {c.name} has rules not managed by fivenines (priorities {prios}); "
                f"deleting it would delete them: remove them first"
            )
    return out
