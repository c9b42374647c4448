"""The values the AWS provider works with, shared by the mapping, the plan and boto3's adapter.

A :class:`Resource` is one AWS resource of the stack in **normal form**: its
:class:`Kind`, a logical key (``tg/web``), its AWS name and plain JSON-like
properties. :mod:`~fivenines.cloud.mapping` builds the desired ones from a spec,
:mod:`~fivenines.cloud.aws` reads the observed ones back from AWS into the same
form, and :mod:`~fivenines.cloud.plan` compares the two. References between
resources are written ``"@key"`` (``"@tg/web"``), never as ids, so desired and
observed state compare without knowing any ARN. Pure: no boto3, no network.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from fivenines.spec import AwsSpec

TAG_STACK = "fivenines:stack"
TAG_MANAGED = "fivenines:managed"
TAG_RESOURCE = "fivenines:resource"
"""Logical key of the resource (``tg/web``): how observed resources are matched to desired ones."""


class Kind(str, Enum):
    SECURITY_GROUP = "security_group"
    CERTIFICATE = "certificate"  # ACM, imported from the spec's PEM files
    LOAD_BALANCER = "load_balancer"
    TARGET_GROUP = "target_group"
    LISTENER = "listener"
    RULE = "rule"
    LAUNCH_TEMPLATE = "launch_template"
    AUTO_SCALING_GROUP = "auto_scaling_group"
    SCALING_POLICY = "scaling_policy"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


KIND_ORDER: tuple[Kind, ...] = tuple(Kind)
"""Creation order (a kind only references kinds before it); deletion runs it backwards."""

IMMUTABLE: dict[Kind, frozenset[str]] = {
    Kind.SECURITY_GROUP: frozenset({"name", "vpc", "description"}),
    Kind.CERTIFICATE: frozenset({"fingerprint"}),
    Kind.LOAD_BALANCER: frozenset({"name", "type", "scheme"}),
    Kind.TARGET_GROUP: frozenset({"name", "protocol", "port", "vpc", "target_type"}),
    Kind.LISTENER: frozenset({"load_balancer"}),
    Kind.RULE: frozenset({"listener", "priority"}),
    Kind.LAUNCH_TEMPLATE: frozenset({"name"}),
    Kind.AUTO_SCALING_GROUP: frozenset({"name"}),
    Kind.SCALING_POLICY: frozenset({"name", "auto_scaling_group"}),
}
"""Properties whose change needs the resource replaced (deleted, then created)."""



# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Subnet:
    id: str
    availability_zone: str
    vpc_id: str


@dataclass(frozen=True)
class Network:
    """Facts the provider looked up: the stack's VPC and subnets (and, when a ``cpu`` scaling
    policy needs it, the vCPUs of ``aws.instance_type``)."""

    vpc_id: str
    subnets: tuple[Subnet, ...]
    vcpus: int | None = None

    @property
    def zones(self) -> list[str]:
        return sorted({s.availability_zone for s in self.subnets})


@dataclass(frozen=True)
class Finding:
    """A spec setting AWS cannot take as written.

    ``nearest`` is the nearest valid value (as one would write it in the spec), or
    None when AWS has no equivalent; ``written`` tells whether the user wrote the
    value (True) or it is a local default (False).
    """

    path: str
    message: str
    nearest: str | None
    written: bool = True

    def blocks(self, adjust: bool) -> bool:
        """True when this finding must stop plan/apply (the rule: :mod:`fivenines.cloud.mapping`)."""
        return self.nearest is None or (self.written and not adjust)

    def __str__(self) -> str:
        tail = f"; nearest valid value: {self.nearest}" if self.nearest is not None else ""
        return f"{self.path}: {self.message}{tail}"


@dataclass(frozen=True)
class Resource:
    """One AWS resource of the desired (or observed) state, in normal form.

    ``create_only``: values sent when the resource is created and never compared afterwards
    (the desired capacity of an Auto Scaling group that scales: AWS moves it)."""

    kind: Kind
    key: str
    name: str
    props: dict[str, Any]
    payload: Any = field(default=None, compare=False, repr=False)
    """What create needs but AWS never gives back (a private key): not compared, not shown."""
    create_only: dict[str, Any] = field(default_factory=dict)

    @property
    def refs(self) -> frozenset[str]:
        """Logical keys this resource references (``"@key"`` strings anywhere in props)."""
        return frozenset(refs_in(self.props))

    def __repr__(self) -> str:
        return f"<{self.kind.label} {self.key} {self.name!r}>"


REF_RE = re.compile(r"(?:^|(?<=[\s\"]))@((?:sg|cert|lb|tg|listener|rule|lt|asg|policy)/[^\s\"]+)")


def refs_in(value: Any) -> Iterator[str]:
    """``"@key"`` references in a value, also inside strings (``"tcp:8080 from @sg/lb"``)."""
    if isinstance(value, str):
        yield from REF_RE.findall(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from refs_in(k)
            yield from refs_in(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from refs_in(v)


@dataclass
class Desired:
    """The stack as the spec wants it on AWS, plus what had to give."""

    stack: str
    resources: dict[str, Resource] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, r: Resource) -> None:
        assert r.key not in self.resources, r.key
        self.resources[r.key] = r

    def blocking(self, adjust: bool) -> list[Finding]:
        return [f for f in self.findings if f.blocks(adjust)]

    def __repr__(self) -> str:
        return f"<Desired {self.stack}: {len(self.resources)} resources, {len(self.findings)} findings>"


def stack_tags(stack: str, key: str, aws: AwsSpec) -> list[dict[str, str]]:
    """The tags every resource of the stack carries, sorted by key."""
    tags = {**aws.tags, TAG_STACK: stack, TAG_MANAGED: "true", TAG_RESOURCE: key}
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]

