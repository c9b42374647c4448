"""The AWS provider: a thin boto3 adapter around the pure mapping and plan.

It looks the stack up **by its tags** (``fivenines:stack`` and ``fivenines:managed``),
reads what it finds back into the normal form of :mod:`fivenines.cloud.mapping`,
lets :mod:`fivenines.cloud.plan` decide what changes, and carries the steps out.
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
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fivenines import __version__
from fivenines.cloud.mapping import (
    TAG_MANAGED,
    TAG_RESOURCE,
    TAG_STACK,
    Desired,
    Kind,
    Network,
    Resource,
    Subnet,
    map_spec,
    stack_tags,
)
from fivenines.cloud.plan import Action, Observed, Op, Plan, diff, steps
from fivenines.errors import ProviderError
from fivenines.spec import AwsSpec, Spec


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


def _tags(items: list[dict[str, Any]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or []}


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
        with self._aws("reading the AWS configuration"):
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

    def __repr__(self) -> str:
        where = f" via {self.options.endpoint_url}" if self.options.endpoint_url else ""
        return f"<AwsProvider {self.region}{where}>"

    # ------------------------------------------------------------------ errors

    @contextmanager
    def _aws(self, what: str) -> Iterator[None]:
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
            raise ProviderError(f"{what}: cannot reach {exc.kwargs.get('endpoint_url', 'the AWS endpoint')}") from None
        except WaiterError as exc:
            raise ProviderError(f"{what}: gave up waiting: {exc.last_response.get('Error', {}).get('Message', exc)}") from None
        except BotoCoreError as exc:
            raise ProviderError(f"{what}: {exc}") from None

    def _code(self, exc: BaseException) -> str:
        resp = getattr(exc, "response", None) or {}
        return str(resp.get("Error", {}).get("Code", ""))

    def _until(self, what: str, done: Callable[[], bool]) -> None:
        """Poll ``done`` until true; a ProviderError naming ``what`` after ``timeout``."""
        deadline = time.monotonic() + self.timeout
        while not done():
            if time.monotonic() > deadline:
                raise ProviderError(f"{what}: not done after {self.timeout:.0f}s")
            self.sleep(self.poll)

    def _waiter_config(self) -> dict[str, int]:
        return {"Delay": max(1, round(self.poll)), "MaxAttempts": max(1, round(self.timeout / max(self.poll, 1)))}

    # ------------------------------------------------------------------ network

    def network(self, aws: AwsSpec) -> Network:
        """The VPC and subnets of the stack (``aws.subnets``, else the VPC's default subnets)."""
        if aws.subnets:
            with self._aws(f"aws.subnets: looking up {', '.join(aws.subnets)}"):
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
            with self._aws("looking up the default VPC"):
                vpcs = self.ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
            if not vpcs:
                raise ProviderError(f"aws.subnets: region {self.region} has no default VPC; give aws.subnets (two or more zones)")
            vpc_id = vpcs[0]["VpcId"]
        with self._aws(f"looking up the subnets of {vpc_id}"):
            pages = self.ec2.get_paginator("describe_subnets").paginate(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])
            found = [s for page in pages for s in page["Subnets"]]
        by_zone: dict[str, dict[str, Any]] = {}
        for s in sorted(found, key=lambda s: (not s.get("DefaultForAz", False), s["SubnetId"])):
            by_zone.setdefault(s["AvailabilityZone"], s)
        subnets = tuple(Subnet(s["SubnetId"], s["AvailabilityZone"], s["VpcId"]) for s in by_zone.values())
        return Network(vpc_id, tuple(sorted(subnets, key=lambda s: s.id)))

    # ------------------------------------------------------------------ observe

    def _elb_tags(self, arns: list[str]) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for i in range(0, len(arns), 20):
            with self._aws("reading load balancing tags"):
                resp = self.elb.describe_tags(ResourceArns=arns[i : i + 20])
            for d in resp["TagDescriptions"]:
                out[d["ResourceArn"]] = _tags(d.get("Tags"))
        return out

    def _paginate(self, client: Any, op: str, key: str, what: str, **kwargs: Any) -> list[dict[str, Any]]:
        with self._aws(what):
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
            tags = _tags(sg.get("Tags"))
            if _ours(tags, stack):
                keep(Kind.SECURITY_GROUP, tags, sg["GroupId"], sg["GroupName"], sg)

        lbs = self._paginate(self.elb, "describe_load_balancers", "LoadBalancers", "listing load balancers")
        lb_tags = self._elb_tags([lb["LoadBalancerArn"] for lb in lbs])
        our_lbs = []
        for lb in lbs:
            tags = lb_tags.get(lb["LoadBalancerArn"], {})
            if _ours(tags, stack):
                keep(Kind.LOAD_BALANCER, tags, lb["LoadBalancerArn"], lb["LoadBalancerName"], lb)
                our_lbs.append(lb)

        tgs = self._paginate(self.elb, "describe_target_groups", "TargetGroups", "listing target groups")
        tg_tags = self._elb_tags([tg["TargetGroupArn"] for tg in tgs])
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
            l_tags = self._elb_tags([li["ListenerArn"] for li in listeners])
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
                r_tags = self._elb_tags([r["RuleArn"] for r in rules])
                for r in rules:
                    tags = r_tags.get(r["RuleArn"], {})
                    if not _ours(tags, stack):
                        obs.foreign_rules.setdefault(id_to_key[li["ListenerArn"]], {})[int(r["Priority"])] = r["RuleArn"]
                        continue
                    keep(Kind.RULE, tags, r["RuleArn"], f"{lb['LoadBalancerName']}:{li['Port']} rule {r['Priority']}", r)

        for lt in self._paginate(self.ec2, "describe_launch_templates", "LaunchTemplates", "listing launch templates", Filters=tag_filter):
            tags = _tags(lt.get("Tags"))
            if not _ours(tags, stack):
                continue
            with self._aws(f"reading launch template {lt['LaunchTemplateName']}"):
                versions = self.ec2.describe_launch_template_versions(
                    LaunchTemplateId=lt["LaunchTemplateId"], Versions=["$Latest"]
                )["LaunchTemplateVersions"]
            keep(Kind.LAUNCH_TEMPLATE, tags, lt["LaunchTemplateId"], lt["LaunchTemplateName"], {**lt, "Latest": versions[0] if versions else {}})

        for g in self._paginate(self.asg, "describe_auto_scaling_groups", "AutoScalingGroups", "listing Auto Scaling groups", Filters=tag_filter):
            tags = _tags(g.get("Tags"))
            if _ours(tags, stack) and g.get("Status") != "Delete in progress":
                keep(Kind.AUTO_SCALING_GROUP, tags, g["AutoScalingGroupName"], g["AutoScalingGroupName"], g)

        def ref(rid: str) -> str:
            return f"@{id_to_key[rid]}" if rid in id_to_key else rid

        for key, (kind, rid, name, item) in raw.items():
            props = self._normalise(kind, item, ref)
            obs.resources[key] = Observed(Resource(kind, key, name, props), rid)
            obs.extra[key] = item
        return obs

    def _normalise(self, kind: Kind, item: dict[str, Any], ref: Callable[[str], str]) -> dict[str, Any]:
        if kind is Kind.SECURITY_GROUP:
            return {
                "name": item["GroupName"],
                "vpc": item.get("VpcId"),
                "description": item.get("Description"),
                "ingress": sorted(_ingress_strings(item.get("IpPermissions", []), ref)),
            }
        if kind is Kind.LOAD_BALANCER:
            return {
                "name": item["LoadBalancerName"],
                "type": item.get("Type"),
                "scheme": item.get("Scheme"),
                "subnets": sorted(z["SubnetId"] for z in item.get("AvailabilityZones", []) if z.get("SubnetId")),
                "security_groups": sorted(ref(s) for s in item.get("SecurityGroups", [])),
            }
        if kind is Kind.TARGET_GROUP:
            arn = item["TargetGroupArn"]
            hc: dict[str, Any] = {
                "protocol": item.get("HealthCheckProtocol"),
                "port": item.get("HealthCheckPort"),
                "interval": item.get("HealthCheckIntervalSeconds"),
                "timeout": item.get("HealthCheckTimeoutSeconds"),
                "healthy_threshold": item.get("HealthyThresholdCount"),
                "unhealthy_threshold": item.get("UnhealthyThresholdCount"),
            }
            if item.get("HealthCheckPath") is not None:
                hc["path"] = item["HealthCheckPath"]
            if item.get("Matcher", {}).get("HttpCode") is not None:
                hc["matcher"] = item["Matcher"]["HttpCode"]
            with self._aws(f"reading target group {item['TargetGroupName']}"):
                attrs = self.elb.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]
            props: dict[str, Any] = {
                "name": item["TargetGroupName"],
                "protocol": item.get("Protocol"),
                "port": item.get("Port"),
                "vpc": item.get("VpcId"),
                "target_type": item.get("TargetType"),
                "health_check": hc,
                "attributes": {a["Key"]: a["Value"] for a in attrs},
            }
            if item.get("TargetType") == "ip":
                with self._aws(f"reading the targets of {item['TargetGroupName']}"):
                    health = self.elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
                props["targets"] = sorted(
                    f"{h['Target']['Id']}:{h['Target']['Port']}"
                    for h in health
                    if h.get("TargetHealth", {}).get("State") != "draining"
                )
            return props
        if kind is Kind.LISTENER:
            actions = item.get("DefaultActions", [])
            return {
                "load_balancer": ref(item["LoadBalancerArn"]),
                "port": item.get("Port"),
                "protocol": item.get("Protocol"),
                "default_action": _action_from_api(actions[0], ref) if actions else None,
            }
        if kind is Kind.RULE:
            listener_arn = item["RuleArn"].replace(":listener-rule/", ":listener/").rsplit("/", 1)[0]
            return {
                "listener": ref(listener_arn),
                "priority": int(item["Priority"]),
                "conditions": _conditions_from_api(item.get("Conditions", [])),
                "actions": [_action_from_api(a, ref) for a in sorted(item.get("Actions", []), key=lambda a: a.get("Order", 0))],
            }
        if kind is Kind.LAUNCH_TEMPLATE:
            data = dict(item.get("Latest", {}).get("LaunchTemplateData", {}))
            if "SecurityGroupIds" in data:
                data["SecurityGroupIds"] = sorted((ref(s) for s in data["SecurityGroupIds"]), key=lambda s: (not s.startswith("@"), s))
            if "TagSpecifications" in data:
                data["TagSpecifications"] = sorted(
                    (
                        {"ResourceType": t["ResourceType"], "Tags": sorted(t.get("Tags", []), key=lambda x: x["Key"])}
                        for t in data["TagSpecifications"]
                        if t["ResourceType"] in ("instance", "volume")
                    ),
                    key=lambda t: t["ResourceType"],
                )
            return {"name": item["LaunchTemplateName"], "data": data}
        if kind is Kind.AUTO_SCALING_GROUP:
            lt = item.get("LaunchTemplate") or {}
            return {
                "name": item["AutoScalingGroupName"],
                "launch_template": ref(lt.get("LaunchTemplateId", "")),
                "launch_template_version": lt.get("Version"),
                "min_size": item.get("MinSize"),
                "max_size": item.get("MaxSize"),
                "desired_capacity": item.get("DesiredCapacity"),
                "subnets": sorted(s for s in (item.get("VPCZoneIdentifier") or "").split(",") if s),
                "target_groups": sorted(ref(a) for a in item.get("TargetGroupARNs", [])),
                "health_check_type": item.get("HealthCheckType"),
                "health_check_grace_period": item.get("HealthCheckGracePeriod"),
            }
        raise AssertionError(kind)

    # ------------------------------------------------------------------ conflicts

    def conflicts(self, desired: Desired, obs: Observation) -> list[str]:
        """Same-named resources that are not this stack's: never adopted, reported instead."""
        from botocore.exceptions import ClientError

        out: list[str] = list(obs.duplicates)
        stack = desired.stack
        for key, r in desired.resources.items():
            if key in obs.resources:
                continue
            owner: str | None = None
            try:
                owner = self._owner_by_name(r, desired)
            except ClientError as exc:
                if self._code(exc) not in (
                    "LoadBalancerNotFound",
                    "TargetGroupNotFound",
                    "InvalidLaunchTemplateName.NotFoundException",
                    "InvalidLaunchTemplateId.NotFound",
                ):
                    with self._aws(f"looking up {r.kind.label} {r.name}"):
                        raise
            if owner is not None:
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

    def _owner_by_name(self, r: Resource, desired: Desired) -> str | None:
        def describe(tags: dict[str, str], rid: str) -> str:
            if tags.get(TAG_STACK):
                return f"{rid}, of fivenines stack {tags[TAG_STACK]!r}"
            return f"{rid}, not tagged {TAG_STACK}={desired.stack}"

        if r.kind is Kind.SECURITY_GROUP:
            found = self.ec2.describe_security_groups(
                Filters=[{"Name": "group-name", "Values": [r.name]}, {"Name": "vpc-id", "Values": [r.props["vpc"]]}]
            )["SecurityGroups"]
            return describe(_tags(found[0].get("Tags")), found[0]["GroupId"]) if found else None
        if r.kind is Kind.LOAD_BALANCER:
            lbs = self.elb.describe_load_balancers(Names=[r.name])["LoadBalancers"]
            if lbs:
                arn = lbs[0]["LoadBalancerArn"]
                return describe(self._elb_tags([arn]).get(arn, {}), arn)
            return None
        if r.kind is Kind.TARGET_GROUP:
            tgs = self.elb.describe_target_groups(Names=[r.name])["TargetGroups"]
            if tgs:
                arn = tgs[0]["TargetGroupArn"]
                return describe(self._elb_tags([arn]).get(arn, {}), arn)
            return None
        if r.kind is Kind.LAUNCH_TEMPLATE:
            lts = self.ec2.describe_launch_templates(LaunchTemplateNames=[r.name])["LaunchTemplates"]
            return describe(_tags(lts[0].get("Tags")), lts[0]["LaunchTemplateId"]) if lts else None
        if r.kind is Kind.AUTO_SCALING_GROUP:
            groups = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[r.name])["AutoScalingGroups"]
            return describe(_tags(groups[0].get("Tags")), r.name) if groups else None
        return None

    # ------------------------------------------------------------------ plan

    def desired(self, spec: Spec) -> Desired:
        """The spec mapped onto this account's network (looks up the VPC and subnets only)."""
        return map_spec(spec, self.network(spec.aws or AwsSpec()))

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
            what = f"{step.op.value[:-1]}ing {step.change.kind.label} {step.change.name}"
            self.log(what)
            with self._aws(what):
                if step.op is Op.DELETE:
                    self._delete(observed[step.change.key], prepared.observation.extra.get(step.change.key, {}))
                    ids.pop(step.change.key, None)
                elif step.op is Op.CREATE:
                    ids[step.change.key] = self._create(desired[step.change.key], ids, prepared.desired.stack, aws)
                else:
                    self._update(desired[step.change.key], observed[step.change.key], ids)
            done += 1
        return done

    # resolution of "@key" references to ids/ARNs

    @staticmethod
    def _resolve(value: Any, ids: dict[str, str]) -> Any:
        if isinstance(value, str) and value.startswith("@"):
            key = value[1:]
            if key not in ids:
                raise ProviderError(f"internal: {key} is referenced before it exists")
            return ids[key]
        if isinstance(value, list):
            return [AwsProvider._resolve(v, ids) for v in value]
        if isinstance(value, dict):
            return {AwsProvider._resolve(k, ids): AwsProvider._resolve(v, ids) for k, v in value.items()}
        return value

    def _create(self, r: Resource, ids: dict[str, str], stack: str, aws: AwsSpec) -> str:
        p = self._resolve(r.props, ids)
        tags = stack_tags(stack, r.key, aws)
        if r.kind is Kind.SECURITY_GROUP:
            gid: str = self.ec2.create_security_group(
                GroupName=p["name"],
                Description=p["description"],
                VpcId=p["vpc"],
                TagSpecifications=[{"ResourceType": "security-group", "Tags": [*tags, {"Key": "Name", "Value": p["name"]}]}],
            )["GroupId"]
            if p["ingress"]:
                self.ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=_ip_permissions(p["ingress"], ids))
            return gid
        if r.kind is Kind.LOAD_BALANCER:
            lb = self.elb.create_load_balancer(
                Name=p["name"],
                Subnets=p["subnets"],
                SecurityGroups=p["security_groups"],
                Scheme=p["scheme"],
                Type=p["type"],
                IpAddressType="ipv4",
                Tags=tags,
            )["LoadBalancers"][0]
            return str(lb["LoadBalancerArn"])
        if r.kind is Kind.TARGET_GROUP:
            tg = self.elb.create_target_group(
                Name=p["name"],
                Protocol=p["protocol"],
                Port=p["port"],
                VpcId=p["vpc"],
                TargetType=p["target_type"],
                Tags=tags,
                **_health_check_args(p["health_check"]),
            )["TargetGroups"][0]
            arn = str(tg["TargetGroupArn"])
            self.elb.modify_target_group_attributes(
                TargetGroupArn=arn, Attributes=[{"Key": k, "Value": v} for k, v in p["attributes"].items()]
            )
            if p.get("targets"):
                self.elb.register_targets(TargetGroupArn=arn, Targets=_targets(p["targets"]))
            return arn
        if r.kind is Kind.LISTENER:
            li = self.elb.create_listener(
                LoadBalancerArn=p["load_balancer"],
                Port=p["port"],
                Protocol=p["protocol"],
                DefaultActions=[_action_to_api(p["default_action"])],
                Tags=tags,
            )["Listeners"][0]
            return str(li["ListenerArn"])
        if r.kind is Kind.RULE:
            rule = self.elb.create_rule(
                ListenerArn=p["listener"],
                Priority=p["priority"],
                Conditions=_conditions_to_api(p["conditions"]),
                Actions=[_action_to_api(a, i + 1) for i, a in enumerate(p["actions"])],
                Tags=tags,
            )["Rules"][0]
            return str(rule["RuleArn"])
        if r.kind is Kind.LAUNCH_TEMPLATE:
            lt = self.ec2.create_launch_template(
                LaunchTemplateName=p["name"],
                LaunchTemplateData=p["data"],
                TagSpecifications=[{"ResourceType": "launch-template", "Tags": tags}],
            )["LaunchTemplate"]
            return str(lt["LaunchTemplateId"])
        if r.kind is Kind.AUTO_SCALING_GROUP:
            self.asg.create_auto_scaling_group(
                AutoScalingGroupName=p["name"],
                LaunchTemplate={"LaunchTemplateId": p["launch_template"], "Version": p["launch_template_version"]},
                MinSize=p["min_size"],
                MaxSize=p["max_size"],
                DesiredCapacity=p["desired_capacity"],
                VPCZoneIdentifier=",".join(p["subnets"]),
                TargetGroupARNs=p["target_groups"],
                HealthCheckType=p["health_check_type"],
                HealthCheckGracePeriod=p["health_check_grace_period"],
                Tags=[
                    {**t, "ResourceId": p["name"], "ResourceType": "auto-scaling-group", "PropagateAtLaunch": False}
                    for t in tags
                ],
            )
            return str(p["name"])
        raise AssertionError(r.kind)

    def _update(self, r: Resource, have: Observed, ids: dict[str, str]) -> None:
        want = self._resolve(r.props, ids)
        old = have.resource.props
        rid = ids[r.key]
        changed = {c.split(".")[0] for c in _changed_paths(r.props, old)}
        if r.kind is Kind.SECURITY_GROUP:
            desired = set(r.props["ingress"])
            current = set(old["ingress"])
            if current - desired:
                self.ec2.revoke_security_group_ingress(
                    GroupId=rid, IpPermissions=_ip_permissions(sorted(current - desired), ids)
                )
            if desired - current:
                self.ec2.authorize_security_group_ingress(
                    GroupId=rid, IpPermissions=_ip_permissions(sorted(desired - current), ids)
                )
        elif r.kind is Kind.LOAD_BALANCER:
            if "subnets" in changed:
                self.elb.set_subnets(LoadBalancerArn=rid, Subnets=want["subnets"])
            if "security_groups" in changed:
                self.elb.set_security_groups(LoadBalancerArn=rid, SecurityGroups=want["security_groups"])
        elif r.kind is Kind.TARGET_GROUP:
            if "health_check" in changed:
                self.elb.modify_target_group(TargetGroupArn=rid, **_health_check_args(want["health_check"]))
            if "attributes" in changed:
                self.elb.modify_target_group_attributes(
                    TargetGroupArn=rid, Attributes=[{"Key": k, "Value": v} for k, v in want["attributes"].items()]
                )
            if "targets" in changed:
                current_t = set(old.get("targets") or [])
                desired_t = set(want.get("targets") or [])
                if current_t - desired_t:
                    self.elb.deregister_targets(TargetGroupArn=rid, Targets=_targets(sorted(current_t - desired_t)))
                if desired_t - current_t:
                    self.elb.register_targets(TargetGroupArn=rid, Targets=_targets(sorted(desired_t - current_t)))
        elif r.kind is Kind.LISTENER:
            self.elb.modify_listener(
                ListenerArn=rid, Port=want["port"], Protocol=want["protocol"], DefaultActions=[_action_to_api(want["default_action"])]
            )
        elif r.kind is Kind.RULE:
            self.elb.modify_rule(
                RuleArn=rid,
                Conditions=_conditions_to_api(want["conditions"]),
                Actions=[_action_to_api(a, i + 1) for i, a in enumerate(want["actions"])],
            )
        elif r.kind is Kind.LAUNCH_TEMPLATE:
            version = self.ec2.create_launch_template_version(LaunchTemplateId=rid, LaunchTemplateData=want["data"])[
                "LaunchTemplateVersion"
            ]["VersionNumber"]
            self.ec2.modify_launch_template(LaunchTemplateId=rid, DefaultVersion=str(version))
        elif r.kind is Kind.AUTO_SCALING_GROUP:
            from botocore.exceptions import ClientError

            current_g = {self._resolve(a, ids) if a.startswith("@") and a[1:] in ids else a for a in old["target_groups"]}
            desired_g = set(want["target_groups"])
            for arn in sorted(current_g - desired_g):
                try:
                    self.asg.detach_load_balancer_target_groups(AutoScalingGroupName=rid, TargetGroupARNs=[arn])
                except ClientError as exc:
                    if self._code(exc) != "TargetGroupNotFound":
                        raise  # a group deleted out of band has nothing left to detach
            if changed - {"target_groups"}:
                self.asg.update_auto_scaling_group(
                    AutoScalingGroupName=rid,
                    LaunchTemplate={"LaunchTemplateId": want["launch_template"], "Version": want["launch_template_version"]},
                    MinSize=want["min_size"],
                    MaxSize=want["max_size"],
                    DesiredCapacity=want["desired_capacity"],
                    VPCZoneIdentifier=",".join(want["subnets"]),
                    HealthCheckType=want["health_check_type"],
                    HealthCheckGracePeriod=want["health_check_grace_period"],
                )
            if desired_g - current_g:
                self.asg.attach_load_balancer_target_groups(AutoScalingGroupName=rid, TargetGroupARNs=sorted(desired_g - current_g))

    def _delete(self, have: Observed, item: dict[str, Any]) -> None:
        from botocore.exceptions import ClientError

        kind, rid = have.resource.kind, have.id

        def retrying(call: Callable[[], Any], busy: tuple[str, ...], what: str) -> None:
            def attempt() -> bool:
                try:
                    call()
                except ClientError as exc:
                    if self._code(exc) in busy:
                        return False
                    raise
                return True

            self._until(what, attempt)

        if kind is Kind.RULE:
            self.elb.delete_rule(RuleArn=rid)
        elif kind is Kind.LISTENER:
            self.elb.delete_listener(ListenerArn=rid)
        elif kind is Kind.LOAD_BALANCER:
            self.elb.delete_load_balancer(LoadBalancerArn=rid)
            self.elb.get_waiter("load_balancers_deleted").wait(LoadBalancerArns=[rid], WaiterConfig=self._waiter_config())
        elif kind is Kind.TARGET_GROUP:
            retrying(lambda: self.elb.delete_target_group(TargetGroupArn=rid), ("ResourceInUse",), f"deleting target group {have.resource.name}")
        elif kind is Kind.AUTO_SCALING_GROUP:
            instances = [i["InstanceId"] for i in item.get("Instances", [])]
            self.asg.delete_auto_scaling_group(AutoScalingGroupName=rid, ForceDelete=True)

            def gone() -> bool:
                groups = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[rid])["AutoScalingGroups"]
                return not groups

            self._until(f"deleting Auto Scaling group {rid}", gone)
            if instances:
                self.ec2.get_waiter("instance_terminated").wait(InstanceIds=instances, WaiterConfig=self._waiter_config())
        elif kind is Kind.LAUNCH_TEMPLATE:
            self.ec2.delete_launch_template(LaunchTemplateId=rid)
        elif kind is Kind.SECURITY_GROUP:
            # network interfaces of a deleted load balancer or instance release the group after a while
            retrying(lambda: self.ec2.delete_security_group(GroupId=rid), ("DependencyViolation",), f"deleting security group {have.resource.name}")
        else:  # pragma: no cover
            raise AssertionError(kind)

    # ------------------------------------------------------------------ status

    def status(self, stack: str) -> dict[str, Any]:
        """Load balancers, and every target's ELB health state and reason, as JSON-able data."""
        obs = self.observe(stack)
        out: dict[str, Any] = {"stack": stack, "region": self.region, "load_balancers": [], "target_groups": {}}
        instances: dict[str, dict[str, Any]] = {}
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
                            f"http://{dns}:{port}/" if proto == "HTTP" else f"{dns}:{port} (tcp)" for port, proto in listeners
                        ],
                    }
                )
        for key, o in sorted(obs.resources.items()):
            if o.resource.kind is not Kind.TARGET_GROUP:
                continue
            with self._aws(f"reading the target health of {o.resource.name}"):
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


# --------------------------------------------------------------------------- API shapes


def _changed_paths(desired: Any, actual: Any) -> list[str]:
    from fivenines.cloud.plan import compare

    return [c.path for c in compare(desired, actual)]


_INGRESS_RE = re.compile(r"^(tcp|udp|all):(\d+)(?:-(\d+))? from (\S+)$")


def _ingress_strings(perms: list[dict[str, Any]], ref: Callable[[str], str]) -> Iterator[str]:
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


def _ip_permissions(rules: list[str], ids: dict[str, str] | None = None) -> list[dict[str, Any]]:
    out = []
    for rule in rules:
        m = _INGRESS_RE.match(rule)
        if m is None:
            raise ProviderError(f"internal: bad ingress rule {rule!r}")
        proto, lo, hi, source = m.group(1), int(m.group(2)), int(m.group(3) or m.group(2)), m.group(4)
        perm: dict[str, Any] = {"IpProtocol": "-1" if proto == "all" else proto, "FromPort": lo, "ToPort": hi}
        if source.startswith("@"):
            if ids is not None:
                source = AwsProvider._resolve(source, ids)
            perm["UserIdGroupPairs"] = [{"GroupId": source}]
        elif source.startswith("sg-"):
            perm["UserIdGroupPairs"] = [{"GroupId": source}]
        elif ":" in source:
            perm["Ipv6Ranges"] = [{"CidrIpv6": source}]
        else:
            perm["IpRanges"] = [{"CidrIp": source}]
        out.append(perm)
    return out


def _health_check_args(hc: dict[str, Any]) -> dict[str, Any]:
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


def _targets(addresses: list[str]) -> list[dict[str, Any]]:
    out = []
    for a in addresses:
        host, _, port = a.rpartition(":")
        out.append({"Id": host, "Port": int(port)})
    return out


def _action_to_api(a: dict[str, Any], order: int | None = None) -> dict[str, Any]:
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


def _action_from_api(a: dict[str, Any], ref: Callable[[str], str]) -> dict[str, Any]:
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


def _conditions_to_api(conds: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


def _conditions_from_api(conds: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
