"""The pure plan: desired vs observed → creates, updates, replacements, deletes, in AWS's order."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.cloud.mapping import map_spec
from fivenines.cloud.plan import Action, Observed, Op, compare, diff, render, steps
from fivenines.cloud.resources import Desired, Network, Resource, Subnet
from fivenines.spec import parse_spec

NET = Network("vpc-1", (Subnet("subnet-a", "eu-west-1a", "vpc-1"), Subnet("subnet-b", "eu-west-1b", "vpc-1")))


def desired() -> Desired:
    s = parse_spec(
        {
            "name": "demo",
            "listeners": [
                {
                    "port": 80,
                    "default_target_group": "web",
                    "rules": [
                        {"match": {"path": ["/api/*"]}, "forward": "api"},
                        {"match": {"path": ["/old"]}, "redirect": {"url": "/new"}},
                    ],
                }
            ],
            "target_groups": {
                "web": {"instances": {"command": ["app"], "count": 2, "standby": 1}, "health_check": {"interval": "5s", "timeout": "2s"}},
                "api": {"instances": {"command": ["api"], "count": 2}, "health_check": {"interval": "5s", "timeout": "2s"}},
            },
        }
    )
    d = map_spec(s, NET)
    assert d.findings == []
    return d


def observed_as(resources: dict[str, Resource], **extra: Any) -> dict[str, Observed]:
    """What AWS would report for these resources: same props plus AWS's own extras."""
    out = {}
    for key, r in resources.items():
        props = copy.deepcopy(r.props)
        props.update(extra)
        out[key] = Observed(Resource(r.kind, key, r.name, props), f"id-{key}")
    return out


def test_everything_is_created_on_an_empty_account_dependencies_first() -> None:
    d = desired()
    plan = diff("demo", d.resources, {})
    assert {c.action for c in plan.changes} == {Action.CREATE}
    assert len(plan.changes) == len(d.resources)
    done: set[str] = set()
    for step in steps(plan, d.resources, {}):
        assert step.op is Op.CREATE
        assert d.resources[step.change.key].refs <= done, step
        done.add(step.change.key)
    assert plan.summary() == f"Plan: {len(d.resources)} to create, 0 to update, 0 to replace, 0 to delete."


def test_matching_state_is_no_changes_even_with_aws_extras() -> None:
    d = desired()
    plan = diff("demo", d.resources, observed_as(d.resources, arn="x", created="today"))
    assert plan.empty and plan.changes == []
    assert plan.summary() == f"No changes: stack demo matches the spec ({len(d.resources)} resources)."
    assert steps(plan, d.resources, {}) == []


def test_a_changed_health_check_is_an_update_with_field_paths() -> None:
    d = desired()
    obs = observed_as(d.resources)
    obs["tg/web"].resource.props["health_check"]["interval"] = 30
    obs["tg/web"].resource.props["attributes"]["deregistration_delay.timeout_seconds"] = "300"
    obs["tg/web"].resource.props["attributes"]["waf.fail_open.enabled"] = "false"  # AWS's own: ignored
    plan = diff("demo", d.resources, obs)
    (change,) = plan.changes
    assert (change.action, change.key) == (Action.UPDATE, "tg/web")
    assert {(f.path, f.old, f.new) for f in change.fields} == {
        ("health_check.interval", 30, 5),
        ("attributes.deregistration_delay.timeout_seconds", "300", "30"),
    }


def test_a_deleted_rule_is_created_again_and_an_unknown_one_deleted() -> None:
    d = desired()
    obs = observed_as(d.resources)
    del obs["rule/80/2"]
    stray = Resource(d.resources["rule/80/1"].kind, "rule/80/9", "demo-alb:80 rule 9", {"listener": "@listener/80", "priority": 9})
    obs["rule/80/9"] = Observed(stray, "arn-9")
    plan = diff("demo", d.resources, obs)
    assert [(c.action, c.key) for c in plan.changes] == [(Action.CREATE, "rule/80/2"), (Action.DELETE, "rule/80/9")]
    order = [(s.op, s.change.key) for s in steps(plan, d.resources, obs)]
    assert order == [(Op.DELETE, "rule/80/9"), (Op.CREATE, "rule/80/2")]


def test_a_listener_pointing_at_a_deleted_group_is_updated_after_the_group_is_recreated() -> None:
    d = desired()
    obs = observed_as(d.resources)
    del obs["tg/web"]
    obs["listener/80"].resource.props["default_action"]["target_groups"] = {"arn:deleted": 1}
    obs["asg/web"].resource.props["target_groups"] = ["arn:deleted"]
    plan = diff("demo", d.resources, obs)
    assert {(c.action, c.key) for c in plan.changes} == {
        (Action.CREATE, "tg/web"),
        (Action.UPDATE, "listener/80"),
        (Action.UPDATE, "asg/web"),
    }
    order = [s.change.key for s in steps(plan, d.resources, obs)]
    assert order.index("tg/web") < order.index("listener/80") and order.index("tg/web") < order.index("asg/web")


def test_an_immutable_change_replaces_the_resource_and_everything_using_it() -> None:
    d = desired()
    obs = observed_as(d.resources)
    obs["tg/web"].resource.props["port"] = 9090  # a target group's port cannot change in place
    plan = diff("demo", d.resources, obs)
    replaced = {c.key: c for c in plan.changes if c.action is Action.REPLACE}
    assert set(replaced) == {"tg/web", "listener/80", "rule/80/1", "rule/80/2", "asg/web"}
    assert replaced["tg/web"].reason == "port cannot change in place"
    assert replaced["listener/80"].reason == "it uses target group demo-web, which is replaced"
    assert "listener demo-alb:80, which is replaced" in replaced["rule/80/1"].reason
    seq = [(s.op, s.change.key) for s in steps(plan, d.resources, obs)]
    deletes = [k for op, k in seq if op is Op.DELETE]
    creates = [k for op, k in seq if op is Op.CREATE]
    assert seq.index((Op.DELETE, "tg/web")) > seq.index((Op.DELETE, "listener/80"))  # users go first
    assert deletes.index("listener/80") > deletes.index("rule/80/1")
    assert creates.index("tg/web") < creates.index("listener/80") < creates.index("rule/80/1")
    assert all(seq.index((Op.DELETE, k)) < seq.index((Op.CREATE, k)) for k in replaced)


def test_destroy_deletes_everything_dependants_first() -> None:
    d = desired()
    obs = observed_as(d.resources)
    plan = diff("demo", {}, obs)
    assert {c.action for c in plan.changes} == {Action.DELETE}
    gone: set[str] = set()
    for step in steps(plan, {}, obs):
        users = {k for k, o in obs.items() if step.change.key in o.resource.refs}
        assert users <= gone, (step, users - gone)
        gone.add(step.change.key)


def test_render_is_a_readable_diff() -> None:
    d = desired()
    obs = observed_as(d.resources)
    obs["tg/web"].resource.props["health_check"]["path"] = "/"
    del obs["rule/80/1"]
    lines = render(diff("demo", d.resources, obs), d.resources, obs)
    text = "\n".join(lines)
    assert "  ~ update target group demo-web" in text
    assert "      health_check.path: / -> /health" in text
    assert "  + create rule demo-alb:80 rule 1" in text
    assert "      listener: demo-alb:80" in text  # references shown by name, not as @keys
    assert lines[-1] == "Plan: 1 to create, 1 to update, 0 to replace, 0 to delete."


def test_compare_only_looks_at_what_is_desired() -> None:
    assert compare({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}, "d": 3}) == []
    assert [c.path for c in compare({"a": {"b": 1}}, {})] == ["a"]
    assert [c.path for c in compare({"a": [1, 2]}, {"a": [2, 1]})] == ["a"]


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_any_subset_of_the_stack_reaches_the_desired_state(data: st.DataObject) -> None:
    """Whatever part of the stack exists (an interrupted apply), the steps create the rest in a valid order."""
    d = desired()
    everything = observed_as(d.resources)
    present = data.draw(st.sets(st.sampled_from(sorted(everything))))
    obs = {k: v for k, v in everything.items() if k in present}
    plan = diff("demo", d.resources, obs)
    assert {c.key for c in plan.changes} == set(d.resources) - present
    exists = set(present)
    for step in steps(plan, d.resources, obs):
        assert step.op is Op.CREATE
        assert d.resources[step.change.key].refs <= exists
        exists.add(step.change.key)
    assert exists == set(d.resources)
