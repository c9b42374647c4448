"""A reload of a group that scales (core.reconfig): ``count`` is the starting count only; new bounds clamp."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.core.health import HealthState
from fivenines.core.pool import Role
from fivenines.core.reconfig import (
    AddTarget,
    Demote,
    RemoveTarget,
    Running,
    RunningTarget,
    SetActiveCount,
    UpdateGroup,
    plan,
)
from fivenines.spec import Spec, parse_spec

H = HealthState.HEALTHY
A, S = Role.ACTIVE, Role.STANDBY
CMD = ["python", "-m", "fivenines.demo", "--port", "{port}"]


def spec(count: int, standby: int = 1, command: list[str] | None = None, **scaling: Any) -> Spec:
    tg: dict[str, Any] = {"instances": {"command": command or CMD, "count": count, "standby": standby}}
    if scaling:
        tg["scaling"] = {"policies": [{"requests_per_target": 100}], **scaling}
    return parse_spec({"name": "s", "listeners": [{"port": 0, "default_target_group": "web"}],
                       "target_groups": {"web": tg}})


def scaled_running(actives: int, standby: int = 1) -> Running:
    """A group that scaled to ``actives``: web-1 active, web-2 the standby, then web-3.. actives."""
    ts = [RunningTarget("web-1", "127.0.0.1:9101", A, H, 0)]
    ts += [RunningTarget(f"web-{i + 3}", f"127.0.0.1:{9103 + i}", A, H, i + 1) for i in range(actives - 1)]
    ts += [RunningTarget(f"web-{2 + (actives + 1) * i}", f"127.0.0.1:{9200 + i}", S, H, actives + i)
           for i in range(standby)]
    return Running({"web": ts}, active_counts={"web": actives})


def test_a_changed_count_leaves_the_scaled_count() -> None:
    p = plan(spec(2, min=2, max=8), spec(4, min=2, max=8), scaled_running(6))
    assert p.actions == ()


def test_lowered_max_removes_actives_not_the_standby() -> None:
    old, new = spec(2, min=2, max=8), spec(2, min=2, max=4)
    p = plan(old, new, scaled_running(6))
    assert [a for a in p.actions if not isinstance(a, UpdateGroup)] == [
        SetActiveCount("web", 4),
        RemoveTarget("web", "web-7", "the scaled count + standby lowered to 5"),
        RemoveTarget("web", "web-6", "the scaled count + standby lowered to 5"),
    ]
    assert not p.of(Demote) and not p.of(AddTarget)


def test_raised_min_adds_instances() -> None:
    p = plan(spec(2, min=2, max=8), spec(5, min=5, max=8), scaled_running(3))
    assert [a for a in p.actions if not isinstance(a, UpdateGroup)] == [
        AddTarget("web", "web-5", 4, S), AddTarget("web", "web-6", 5, S), SetActiveCount("web", 5)]


def test_removing_scaling_goes_back_to_count() -> None:
    p = plan(spec(2, min=2, max=8), spec(2), scaled_running(4))
    assert [type(a).__name__ for a in p.actions] == ["UpdateGroup", "SetActiveCount", "Demote",
                                                     "RemoveTarget", "RemoveTarget"]
    assert p.of(SetActiveCount) == [SetActiveCount("web", 2)]
    # without scaling: today's order (the standby goes first, then the highest index; one active
    # is demoted to be the standby)
    assert [a.id for a in p.of(RemoveTarget)] == ["web-2", "web-5"] and p.of(Demote)[0].id == "web-4"


def test_a_new_instance_definition_replaces_the_scaled_count() -> None:
    p = plan(spec(2, min=2, max=8), spec(2, command=[*CMD, "--id", "{id}"], min=2, max=8), scaled_running(5))
    assert len(p.of(RemoveTarget)) == 6 and len(p.of(AddTarget)) == 6 and not p.of(SetActiveCount)


def test_a_group_that_starts_scaling_keeps_its_count() -> None:
    old = spec(2)
    p = plan(old, spec(3, min=1, max=8), Running({"web": [RunningTarget("web-1", "a", A, H, 0),
                                                          RunningTarget("web-2", "b", A, H, 1),
                                                          RunningTarget("web-3", "c", S, H, 2)]}))
    assert p.actions == (UpdateGroup("web", ("scaling",)),)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 8), st.integers(1, 8), st.integers(1, 10), st.integers(1, 10), st.integers(0, 2),
       st.integers(1, 10))
def test_the_count_after_a_reload_is_the_running_one_within_the_new_bounds(
        lo: int, hi: int, new_lo: int, new_hi: int, standby: int, count: int) -> None:
    lo, hi = min(lo, hi), max(lo, hi)
    new_lo, new_hi = min(new_lo, new_hi), max(new_lo, new_hi)
    running = st_running = lo + (hi - lo) // 2
    old = spec(lo, standby, min=lo, max=hi)
    new = spec(min(max(count, new_lo), new_hi), standby, min=new_lo, max=new_hi)
    p = plan(old, new, scaled_running(st_running, standby))
    want = min(new_hi, max(new_lo, running))
    counts = p.of(SetActiveCount)
    after = counts[-1].count if counts else running
    assert after == want
    targets = len(scaled_running(st_running, standby).targets["web"]) + len(p.of(AddTarget)) - len(p.of(RemoveTarget))
    assert targets == want + standby
    # the standbys stay when the group shrinks (only actives go)
    assert all(a.id not in {t.id for t in scaled_running(st_running, standby).targets["web"] if t.role is S}
               for a in p.of(RemoveTarget))
