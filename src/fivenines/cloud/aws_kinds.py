"""What the AWS provider does with each kind of resource, one handler per :class:`Kind`.

A :class:`KindHandler` knows, for its kind, how to read an item ``describe_*``
returned into normal form (:meth:`~KindHandler.normalise`), how to find a resource
of the same name that is not the stack's (:meth:`~KindHandler.owner`), and how to
create, update and delete one. :mod:`fivenines.cloud.aws` looks the handler up in
:data:`HANDLERS` instead of branching on the kind; a new kind of resource is a new
handler here, its listing in :meth:`AwsProvider.observe
<fivenines.cloud.aws.AwsProvider.observe>`, and its place in ``KIND_ORDER``.

Handlers hold no state. They reach AWS through :class:`Api` (the provider's three
clients and helpers) and run inside the provider's error translation, so a boto3
error raised here becomes one :class:`~fivenines.errors.ProviderError` line naming
the step.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from fivenines.cloud import aws_shapes as shapes
from fivenines.cloud.plan import Observed
from fivenines.cloud.resources import Kind, Resource

Ref = Callable[[str], str]
"""An id or ARN → ``"@key"`` when it is one of the stack's resources, else unchanged."""


class Api(Protocol):
    """What a handler needs of the provider."""

    ec2: Any
    elb: Any
    asg: Any
    acm: Any

    def aws(self, what: str) -> AbstractContextManager[None]: ...

    def until(self, what: str, done: Callable[[], bool]) -> None: ...

    def waiter_config(self) -> dict[str, int]: ...

    def elb_tags(self, arns: list[str]) -> dict[str, dict[str, str]]: ...


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``""`` for anything else)."""
    resp = getattr(exc, "response", None) or {}
    return str(resp.get("Error", {}).get("Code", ""))


@dataclass(frozen=True)
class Update:
    """One in-place update: the resource as desired, its properties as observed and as wanted
    (references resolved), its id, the top-level properties that changed, and the ids so far."""

    resource: Resource
    old: dict[str, Any]
    want: dict[str, Any]
    rid: str
    changed: set[str]
    ids: dict[str, str]


class KindHandler:
    kind: ClassVar[Kind]
    not_found: ClassVar[tuple[str, ...]] = ()
    """Error codes of :meth:`owner`'s lookup that mean: no resource of that name."""

    def normalise(self, api: Api, item: dict[str, Any], ref: Ref) -> dict[str, Any]:
        raise NotImplementedError

    def owner(self, api: Api, r: Resource) -> tuple[dict[str, str], str] | None:
        """``(tags, id)`` of an existing resource named like ``r``; None: the name is free
        (or, for kinds without names, the question does not arise)."""
        return None

    def create(self, api: Api, p: dict[str, Any], tags: list[dict[str, str]], ids: dict[str, str]) -> str:
        """Create the resource with properties ``p`` (references resolved); its id or ARN."""
        raise NotImplementedError

    def update(self, api: Api, u: Update) -> None:
        raise NotImplementedError

    def delete(self, api: Api, have: Observed, item: dict[str, Any]) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind.value}>"


def _retrying(api: Api, call: Callable[[], Any], busy: tuple[str, ...], what: str) -> None:
    """``call`` until AWS stops answering one of the ``busy`` codes (a dependency lets go)."""
    from botocore.exceptions import ClientError

    def attempt() -> bool:
        try:
            call()
        except ClientError as exc:
            if error_code(exc) in busy:
                return False
            raise
        return True

    api.until(what, attempt)


# --------------------------------------------------------------------------- EC2


class SecurityGroups(KindHandler):
    kind = Kind.SECURITY_GROUP

    def normalise(self, api: Api, item: dict[str, Any], ref: Ref) -> dict[str, Any]:
        return {
            "name": item["GroupName"],
            "vpc": item.get("VpcId"),
            "description": item.get("Description"),
            "ingress": sorted(shapes.ingress_from_api(item.get("IpPermissions", []), ref)),
        }

    def owner(self, api: Api, r: Resource) -> tuple[dict[str, str], str] | None:
        found = api.ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": [r.name]}, {"Name": "vpc-id", "Values": [r.props["vpc"]]}]
        )["SecurityGroups"]
        return (shapes.tags_of(found[0].get("Tags")), found[0]["GroupId"]) if found else None

    def create(self, api: Api, p: dict[str, Any], tags: list[dict[str, str]], ids: dict[str, str]) -> str:
        gid: str = api.ec2.create_security_group(
            GroupName=p["name"],
            Description=p["description"],
            VpcId=p["vpc"],
            TagSpecifications=[{"ResourceType": "security-group", "Tags": [*tags, {"Key": "Name", "Value": p["name"]}]}],
        )["GroupId"]
        if p["ingress"]:
            api.ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=shapes.ingress_to_api(p["ingress"], ids))
        return gid

    def update(self, api: Api, u: Update) -> None:
        desired = set(u.resource.props["ingress"])  # compared as written: "@sg/lb", not the group id
        current = set(u.old["ingress"])
        if current - desired:
            api.ec2.revoke_security_group_ingress(
                GroupId=u.rid, IpPermissions=shapes.ingress_to_api(sorted(current - desired), u.ids)
            )
        if desired - current:
            api.ec2.authorize_security_group_ingress(
                GroupId=u.rid, IpPermissions=shapes.ingress_to_api(sorted(desired - current), u.ids)
            )

    def delete(self, api: Api, have: Observed, item: dict[str, Any]) -> None:
        # network interfaces of a deleted load balancer or instance release the group after a while
        _retrying(api, lambda: api.ec2.delete_security_group(GroupId=have.id), ("DependencyViolation",),
                  f"deleting security group {have.resource.name}")


class LaunchTemplates(KindHandler):
    kind = Kind.LAUNCH_TEMPLATE
    not_found = ("InvalidLaunchTemplateName.NotFoundException", "InvalidLaunchTemplateId.NotFound")

    def normalise(self, api: Api, item: dict[str, Any], ref: Ref) -> dict[str, Any]:
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

    def owner(self, api: Api, r: Resource) -> tuple[dict[str, str], str] | None:
        lts = api.ec2.describe_launch_templates(LaunchTemplateNames=[r.name])["LaunchTemplates"]
        return (shapes.tags_of(lts[0].get("Tags")), lts[0]["LaunchTemplateId"]) if lts else None

    def create(self, api: Api, p: dict[str, Any], tags: list[dict[str, str]], ids: dict[str, str]) -> str:
        lt = api.ec2.create_launch_template(
            LaunchTemplateName=p["name"],
            LaunchTemplateData=p["data"],
            TagSpecifications=[{"ResourceType": "launch-template", "Tags": tags}],
        )["LaunchTemplate"]
        return str(lt["LaunchTemplateId"])

    def update(self, api: Api, u: Update) -> None:
        version = api.ec2.create_launch_template_version(LaunchTemplateId=u.rid, LaunchTemplateData=u.want["data"])[
            "LaunchTemplateVersion"
        ]["VersionNumber"]
        api.ec2.modify_launch_template(LaunchTemplateId=u.rid, DefaultVersion=str(version))

    def delete(self, api: Api, have: Observed, item: dict[str, Any]) -> None:
        api.ec2.delete_launch_template(LaunchTemplateId=have.id)


# --------------------------------------------------------------------------- Elastic Load Balancing


class LoadBalancers(KindHandler):
    kind = Kind.LOAD_BALANCER
    not_found = ("LoadBalancerNotFound",)

    def normalise(self, api: Api, item: dict[str, Any], ref: Ref) -> dict[str, Any]:
        return {
            "name": item["LoadBalancerName"],
            "type": item.get("Type"),
            "scheme": item.get("Scheme"),
            "subnets": sorted(z["SubnetId"] for z in item.get("AvailabilityZones", []) if z.get("SubnetId")),
            "security_groups": sorted(ref(s) for s in item.get("SecurityGroups", [])),
        }

    def owner(self, api: Api, r: Resource) -> tuple[dict[str, str], str] | None:
        lbs = api.elb.describe_load_balancers(Names=[r.name])["LoadBalancers"]
        if not lbs:
            return None
        arn = lbs[0]["LoadBalancerArn"]
        return api.elb_tags([arn]).get(arn, {}), arn

    def create(self, api: Api, p: dict[str, Any], tags: list[dict[str, str]], ids: dict[str, str]) -> str:
        lb = api.elb.create_load_balancer(
            Name=p["name"],
            Subnets=p["subnets"],
            SecurityGroups=p["security_groups"],
            Scheme=p["scheme"],
            Type=p["type"],
            IpAddressType="ipv4",
            Tags=tags,
        )["LoadBalancers"][0]
        return str(lb["LoadBalancerArn"])

    def update(self, api: Api, u: Update) -> None:
        if "subnets" in u.changed:
            api.elb.set_subnets(LoadBalancerArn=u.rid, Subnets=u.want["subnets"])
        if "security_groups" in u.changed:
            api.elb.set_security_groups(LoadBalancerArn=u.rid, SecurityGroups=u.want["security_groups"])

    def delete(self, api: Api, have: Observed, item: dict[str, Any]) -> None:
        api.elb.delete_load_balancer(LoadBalancerArn=have.id)
        api.elb.get_waiter("load_balancers_deleted").wait(LoadBalancerArns=[have.id], WaiterConfig=api.waiter_config())


class TargetGroups(KindHandler):
    kind = Kind.TARGET_GROUP
    not_found = ("TargetGroupNotFound",)

    def normalise(self, api: Api, item: dict[str, Any], ref: Ref) -> dict[str, Any]:
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
        with api.aws(f"reading target group {item['TargetGroupName']}"):
            attrs = api.elb.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]
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
            with api.aws(f"reading the targets of {item['TargetGroupName']}"):
                health = api.elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
            props["targets"] = sorted(
                f"{h['Target']['Id']}:{h['Target']['Port']}"
                for h in health
                if h.get("TargetHealth", {}).get("State") != "draining"
            )
        return props

    def owner(self, api: Api, r: Resource) -> tuple[dict[str, str], str] | None:
        tgs = api.elb.describe_target_groups(Names=[r.name])["TargetGroups"]
        if not tgs:
            return None
        arn = tgs[0]["TargetGroupArn"]
        return api.elb_tags([arn]).get(arn, {}), arn

    def create(self, api: Api, p: dict[str, Any], tags: list[dict[str, str]], ids: dict[str, str]) -> str:
        tg = api.elb.create_target_group(
            Name=p["name"],
            Protocol=p["protocol"],
            Port=p["port"],
            VpcId=p["vpc"],
            TargetType=p["target_type"],
            Tags=tags,
            **shapes.health_check_to_api(p["health_check"]),
        )["TargetGroups"][0]
        arn = str(tg["TargetGroupArn"])
        api.elb.modify_target_group_attributes(
            TargetGroupArn=arn, Attributes=[{"Key": k, "Value": v} for k, v in p["attributes"].items()]
        )
        if p.get("targets"):
            api.elb.register_targets(TargetGroupArn=arn, Targets=shapes.targets_to_api(p["targets"]))
        return arn

    def update(self, api: Api, u: Update) -> None:
        if "health_check" in u.changed:
            api.elb.modify_target_group(TargetGroupArn=u.rid, **shapes.health_check_to_api(u.want["health_check"]))
        if "attributes" in u.changed:
            api.elb.modify_target_group_attributes(
                TargetGroupArn=u.rid, Attributes=[{"Key": k, "Value": v} for k, v in u.want["attributes"].items()]
            )
        if "targets" in u.changed:
            current = set(u.old.get("targets") or [])
            desired = set(u.want.get("targets") or [])
            if current - desired:
                api.elb.deregister_targets(TargetGroupArn=u.rid, Targets=shapes.targets_to_api(sorted(current - desired)))
            if desired - current:
                api.elb.register_targets(TargetGroupArn=u.rid, Targets=shapes.targets_to_api(sorted(desired - current)))

    def delete(self, api: Api, have: Observed, item: dict[str, Any]) -> None:
        _retrying(api, lambda: api.elb.delete_target_group(TargetGroupArn=have.id), ("ResourceInUse",),
                  f"deleting target group {have.resource.name}")


class Certificates(KindHandler):
    """ACM certificates imported from the spec's PEM files; recognised by fingerprint, never updated
    (new files make a new certificate; the old one is deleted once no listener uses it)."""

    kind = Kind.CERTIFICATE

    def normalise(self, api: Api, item: dict[str, Any], ref: Ref) -> dict[str, Any]:
        from fivenines.certs import certificate_facts

        fingerprint, domain = certificate_facts(item["Certificate"].encode())
        return {"fingerprint": fingerprint, "domain": domain}

    def create(self, api: Api, p: dict[str, Any], tags: list[dict[str, str]], ids: dict[str, str]) -> str:
        m = p["payload"]
        args: dict[str, Any] = {"Certificate": m.certificate, "PrivateKey": m.private_key, "Tags": tags}
        if m.chain:
            args["CertificateChain"] = m.chain
        return str(api.acm.import_certificate(**args)["CertificateArn"])

    def update(self, api: Api, u: Update) -> None:  # pragma: no cover - fingerprint is immutable
        raise AssertionError("an ACM certificate is replaced, never updated")

    def delete(self, api: Api, have: Observed, item: dict[str, Any]) -> None:
        _retrying(api, lambda: api.acm.delete_certificate(CertificateArn=have.id), ("ResourceInUseException",),
                  f"deleting certificate {have.resource.name}")


class Listeners(KindHandler):
    kind = Kind.LISTENER

    def normalise(self, api: Api, item: dict[str, Any], ref: Ref) -> dict[str, Any]:
        actions = item.get("DefaultActions", [])
        props = {
            "load_balancer": ref(item["LoadBalancerArn"]),
            "port": item.get("Port"),
            "protocol": item.get("Protocol"),
            "default_action": shapes.action_from_api(actions[0], ref) if actions else None,
        }
        if item.get("Protocol") in ("HTTPS", "TLS"):
            default = (item.get("Certificates") or [{}])[0].get("CertificateArn")
            with api.aws(f"reading the certificates of listener {item['ListenerArn']}"):
                listed = api.elb.describe_listener_certificates(ListenerArn=item["ListenerArn"])["Certificates"]
            props["ssl_policy"] = item.get("SslPolicy")
            props["certificate"] = ref(default) if default else None
            props["extra_certificates"] = sorted({ref(c["CertificateArn"]) for c in listed
                                                  if not c.get("IsDefault") and c["CertificateArn"] != default})
        return props

    def create(self, api: Api, p: dict[str, Any], tags: list[dict[str, str]], ids: dict[str, str]) -> str:
        tls: dict[str, Any] = {}
        if p.get("certificate"):
            tls = {"SslPolicy": p["ssl_policy"], "Certificates": [{"CertificateArn": p["certificate"]}]}
        li = api.elb.create_listener(
            LoadBalancerArn=p["load_balancer"],
            Port=p["port"],
            Protocol=p["protocol"],
            DefaultActions=[shapes.action_to_api(p["default_action"])],
            Tags=tags,
            **tls,
        )["Listeners"][0]
        arn = str(li["ListenerArn"])
        if p.get("extra_certificates"):
            api.elb.add_listener_certificates(ListenerArn=arn, Certificates=[{"CertificateArn": c} for c in p["extra_certificates"]])
        return arn

    def update(self, api: Api, u: Update) -> None:
        args: dict[str, Any] = {"ListenerArn": u.rid, "Port": u.want["port"],
                                "DefaultActions": [shapes.action_to_api(u.want["default_action"])]}
        if "protocol" in u.changed:
            args["Protocol"] = u.want["protocol"]
        if u.want.get("certificate") and u.changed & {"protocol", "ssl_policy", "certificate"}:
            args["SslPolicy"] = u.want["ssl_policy"]
            args["Certificates"] = [{"CertificateArn": u.want["certificate"]}]
        api.elb.modify_listener(**args)
        if "Certificates" in args or "extra_certificates" in u.changed:
            # read the list back after the modify: the extras are set against what is there now
            default = u.want.get("certificate")
            listed = api.elb.describe_listener_certificates(ListenerArn=u.rid)["Certificates"]
            old = {c["CertificateArn"] for c in listed if not c.get("IsDefault") and c["CertificateArn"] != default}
            new = set(u.want.get("extra_certificates") or [])
            if old - new:
                api.elb.remove_listener_certificates(ListenerArn=u.rid, Certificates=[{"CertificateArn": c} for c in sorted(old - new)])
            if new - old:
                api.elb.add_listener_certificates(ListenerArn=u.rid, Certificates=[{"CertificateArn": c} for c in sorted(new - old)])

    def delete(self, api: Api, have: Observed, item: dict[str, Any]) -> None:
        api.elb.delete_listener(ListenerArn=have.id)


class Rules(KindHandler):
    kind = Kind.RULE

    def normalise(self, api: Api, item: dict[str, Any], ref: Ref) -> dict[str, Any]:
        listener_arn = item["RuleArn"].replace(":listener-rule/", ":listener/").rsplit("/", 1)[0]
        return {
            "listener": ref(listener_arn),
            "priority": int(item["Priority"]),
            "conditions": shapes.conditions_from_api(item.get("Conditions", [])),
            "actions": [shapes.action_from_api(a, ref) for a in sorted(item.get("Actions", []), key=lambda a: a.get("Order", 0))],
        }

    def create(self, api: Api, p: dict[str, Any], tags: list[dict[str, str]], ids: dict[str, str]) -> str:
        rule = api.elb.create_rule(
            ListenerArn=p["listener"],
            Priority=p["priority"],
            Conditions=shapes.conditions_to_api(p["conditions"]),
            Actions=[shapes.action_to_api(a, i + 1) for i, a in enumerate(p["actions"])],
            Tags=tags,
        )["Rules"][0]
        return str(rule["RuleArn"])

    def update(self, api: Api, u: Update) -> None:
        api.elb.modify_rule(
            RuleArn=u.rid,
            Conditions=shapes.conditions_to_api(u.want["conditions"]),
            Actions=[shapes.action_to_api(a, i + 1) for i, a in enumerate(u.want["actions"])],
        )

    def delete(self, api: Api, have: Observed, item: dict[str, Any]) -> None:
        api.elb.delete_rule(RuleArn=have.id)


# --------------------------------------------------------------------------- Auto Scaling


class AutoScalingGroups(KindHandler):
    kind = Kind.AUTO_SCALING_GROUP

    def normalise(self, api: Api, item: dict[str, Any], ref: Ref) -> dict[str, Any]:
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

    def owner(self, api: Api, r: Resource) -> tuple[dict[str, str], str] | None:
        groups = api.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[r.name])["AutoScalingGroups"]
        return (shapes.tags_of(groups[0].get("Tags")), r.name) if groups else None

    def create(self, api: Api, p: dict[str, Any], tags: list[dict[str, str]], ids: dict[str, str]) -> str:
        api.asg.create_auto_scaling_group(
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

    def update(self, api: Api, u: Update) -> None:
        from botocore.exceptions import ClientError

        current = {shapes.resolve(a, u.ids) if a.startswith("@") and a[1:] in u.ids else a for a in u.old["target_groups"]}
        desired = set(u.want["target_groups"])
        for arn in sorted(current - desired):
            try:
                api.asg.detach_load_balancer_target_groups(AutoScalingGroupName=u.rid, TargetGroupARNs=[arn])
            except ClientError as exc:
                if error_code(exc) != "TargetGroupNotFound":
                    raise  # a group deleted out of band has nothing left to detach
        if u.changed - {"target_groups"}:
            # a group that scales has no desired capacity here: AWS moves it (and brings it within
            # a new MinSize..MaxSize itself)
            desired_capacity = {"DesiredCapacity": u.want["desired_capacity"]} if "desired_capacity" in u.want else {}
            api.asg.update_auto_scaling_group(
                AutoScalingGroupName=u.rid,
                LaunchTemplate={"LaunchTemplateId": u.want["launch_template"], "Version": u.want["launch_template_version"]},
                MinSize=u.want["min_size"],
                MaxSize=u.want["max_size"],
                **desired_capacity,
                VPCZoneIdentifier=",".join(u.want["subnets"]),
                HealthCheckType=u.want["health_check_type"],
                HealthCheckGracePeriod=u.want["health_check_grace_period"],
            )
        if desired - current:
            api.asg.attach_load_balancer_target_groups(AutoScalingGroupName=u.rid, TargetGroupARNs=sorted(desired - current))

    def delete(self, api: Api, have: Observed, item: dict[str, Any]) -> None:
        rid = have.id
        instances = [i["InstanceId"] for i in item.get("Instances", [])]
        api.asg.delete_auto_scaling_group(AutoScalingGroupName=rid, ForceDelete=True)

        def gone() -> bool:
            return not api.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[rid])["AutoScalingGroups"]

        api.until(f"deleting Auto Scaling group {rid}", gone)
        if instances:
            api.ec2.get_waiter("instance_terminated").wait(InstanceIds=instances, WaiterConfig=api.waiter_config())


class ScalingPolicies(KindHandler):
    """Target-tracking policies of an Auto Scaling group. They carry no tags: the provider finds
    them on the stack's own groups, by their ``fivenines-`` names (``observe``)."""

    kind = Kind.SCALING_POLICY

    def normalise(self, api: Api, item: dict[str, Any], ref: Ref) -> dict[str, Any]:
        tt = item.get("TargetTrackingConfiguration") or {}
        metric = tt.get("PredefinedMetricSpecification") or {}
        props: dict[str, Any] = {
            "name": item["PolicyName"],
            "auto_scaling_group": ref(item["AutoScalingGroupName"]),
            "policy_type": item.get("PolicyType"),
            "estimated_instance_warmup": item.get("EstimatedInstanceWarmup"),
            "disable_scale_in": bool(tt.get("DisableScaleIn", False)),
            "metric": metric.get("PredefinedMetricType"),
            "target_value": float(tt["TargetValue"]) if tt.get("TargetValue") is not None else None,
        }
        label = metric.get("ResourceLabel")
        if label:
            arns = shapes.label_arns(label, item.get("PolicyARN", ""))
            props["resource_label"] = ({"load_balancer": ref(arns[0]), "target_group": ref(arns[1])} if arns
                                       else label)
        return props

    def _put(self, api: Api, p: dict[str, Any]) -> None:
        metric: dict[str, Any] = {"PredefinedMetricType": p["metric"]}
        label = p.get("resource_label")
        if label:
            metric["ResourceLabel"] = shapes.resource_label(label["load_balancer"], label["target_group"])
        api.asg.put_scaling_policy(
            AutoScalingGroupName=p["auto_scaling_group"],
            PolicyName=p["name"],
            PolicyType=p["policy_type"],
            EstimatedInstanceWarmup=p["estimated_instance_warmup"],
            TargetTrackingConfiguration={
                "PredefinedMetricSpecification": metric,
                "TargetValue": p["target_value"],
                "DisableScaleIn": p["disable_scale_in"],
            },
        )

    def create(self, api: Api, p: dict[str, Any], tags: list[dict[str, str]], ids: dict[str, str]) -> str:
        self._put(api, p)
        return str(p["name"])

    def update(self, api: Api, u: Update) -> None:
        self._put(api, u.want)  # the same name replaces the policy's configuration

    def delete(self, api: Api, have: Observed, item: dict[str, Any]) -> None:
        api.asg.delete_policy(AutoScalingGroupName=item["AutoScalingGroupName"], PolicyName=have.id)


HANDLERS: dict[Kind, KindHandler] = {
    h.kind: h
    for h in (SecurityGroups(), Certificates(), LoadBalancers(), TargetGroups(), Listeners(), Rules(), LaunchTemplates(),
              AutoScalingGroups(), ScalingPolicies())
}
"""The handler of every kind (tests/unit/test_aws_kinds.py checks that none is missing)."""
