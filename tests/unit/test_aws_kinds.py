"""The AWS provider's handler table and the pure API shapes its handlers use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fivenines.cloud import aws_shapes as shapes
from fivenines.cloud.aws_kinds import HANDLERS
from fivenines.cloud.mapping import map_spec
from fivenines.cloud.resources import Kind, Network, Subnet
from fivenines.errors import ProviderError
from fivenines.spec import load_spec

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))
NET = Network("vpc-1", (Subnet("subnet-a", "eu-west-1a", "vpc-1"), Subnet("subnet-b", "eu-west-1b", "vpc-1")))


def test_every_kind_has_its_handler() -> None:
    assert set(HANDLERS) == set(Kind)
    for kind, handler in HANDLERS.items():
        assert handler.kind is kind
        assert repr(handler).endswith(f" {kind.value}>")


def test_only_named_kinds_look_for_a_same_named_owner() -> None:
    """Listeners and rules have no name of their own to collide with: no lookup, no AWS call."""
    for kind in (Kind.LISTENER, Kind.RULE):
        assert HANDLERS[kind].owner(None, None) is None  # type: ignore[arg-type]


def _same(x: str) -> str:
    return x


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_listener_and_rule_shapes_read_back_as_written(example: Path) -> None:
    """What create sends for the actions and conditions of every example is read back by
    observe into the same normal form: otherwise a fresh apply would show drift."""
    desired = map_spec(load_spec(example), NET)
    checked = 0
    for r in desired.resources.values():
        if r.kind is Kind.LISTENER:
            assert shapes.action_from_api(shapes.action_to_api(r.props["default_action"]), _same) == r.props["default_action"]
            checked += 1
        if r.kind is Kind.RULE:
            sent = [shapes.action_to_api(a, i + 1) for i, a in enumerate(r.props["actions"])]
            assert [shapes.action_from_api(a, _same) for a in sent] == r.props["actions"]
            assert shapes.conditions_from_api(shapes.conditions_to_api(r.props["conditions"])) == r.props["conditions"]
            checked += 1
    assert checked or not load_spec(example).listeners


_source = st.one_of(
    st.sampled_from(["0.0.0.0/0", "10.0.0.0/8", "::/0", "2001:db8::/32", "@sg/lb", "sg-0abc"]),
)


@given(st.lists(st.tuples(st.sampled_from(["tcp", "udp", "all"]), st.integers(0, 65535), st.integers(0, 100), _source),
                max_size=6, unique=True))
def test_ingress_rules_round_trip(rules: list[tuple[str, int, int, str]]) -> None:
    written = sorted({f"{p}:{lo}" + (f"-{lo + span}" if span else "") + f" from {src}" for p, lo, span, src in rules})
    ids = {"sg/lb": "sg-0lb"}
    perms = shapes.ingress_to_api(written, ids)
    back = sorted(shapes.ingress_from_api(perms, lambda gid: "@sg/lb" if gid == "sg-0lb" else gid))
    assert back == written


def test_a_reference_to_a_resource_not_yet_created_is_an_internal_error() -> None:
    assert shapes.resolve({"a": ["@tg/web", "x"], "@lb/alb": 1}, {"tg/web": "arn:tg", "lb/alb": "arn:lb"}) == {
        "a": ["arn:tg", "x"], "arn:lb": 1}
    with pytest.raises(ProviderError, match="internal: tg/api is referenced before it exists"):
        shapes.resolve(["@tg/api"], {})


def test_changed_fields_are_the_top_level_properties_that_differ() -> None:
    desired: dict[str, Any] = {"health_check": {"interval": 10, "path": "/"}, "port": 80, "targets": ["a:1"]}
    actual: dict[str, Any] = {"health_check": {"interval": 30, "path": "/"}, "port": 80, "targets": ["a:1"], "x": 1}
    assert shapes.changed_fields(desired, actual) == {"health_check"}
