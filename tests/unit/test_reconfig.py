"""The reload diff (core.reconfig): exhaustive cases and properties over random old/new specs."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.core.health import HealthState
from fivenines.core.pool import Role
from fivenines.core.reconfig import (
    AddGroup,
    AddListener,
    AddTarget,
    Demote,
    Plan,
    RebindListener,
    RemoveGroup,
    RemoveListener,
    RemoveTarget,
    RerouteListener,
    Running,
    RunningTarget,
    SetActiveCount,
    SetWeight,
    UpdateGroup,
    plan,
    readiness,
    ready_deadline,
    removal_order,
)
from fivenines.spec import Spec, parse_spec

H, U, INI = HealthState.HEALTHY, HealthState.UNHEALTHY, HealthState.INITIAL
A, S = Role.ACTIVE, Role.STANDBY
CMD = ["python", "-m", "fivenines.demo", "--port", "{port}"]


def static(*addrs: str | dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"targets": list(addrs), **extra}


def instances(count: int, standby: int = 0, **inst: Any) -> dict[str, Any]:
    return {"instances": {"command": CMD, "count": count, "standby": standby, **inst}}


def mk(groups: dict[str, dict[str, Any]], listeners: list[dict[str, Any]] | None = None, **top: Any) -> Spec:
    first = next(iter(groups))
    return parse_spec({"name": "s", "listeners": listeners or [{"port": 0, "default_target_group": first}],
                       "target_groups": groups, **top})


def running_of(spec: Spec) -> Running:
    """What a freshly started spec runs: ids NAME-1.., everything healthy, first N active."""
    out: dict[str, list[RunningTarget]] = {}
    for name, tg in spec.target_groups.items():
        if tg.instances is not None:
            out[name] = [RunningTarget(f"{name}-{i + 1}", f"127.0.0.1:{9100 + i}", A if i < tg.instances.count else S,
                                       H, i) for i in range(tg.instances.total)]
        else:
            out[name] = [RunningTarget(f"{name}-{i + 1}", wt.address, A, H, i, wt.weight)
                         for i, wt in enumerate(tg.target_list())]
    return Running(out)


def kinds(p: Plan) -> list[str]:
    return [type(a).__name__ for a in p.actions]


# ----------------------------------------------------------------------------- no change, refusals


def test_same_spec_is_no_change() -> None:
    s = mk({"web": instances(2, 1), "api": static("127.0.0.1:9001")},
           [{"port": 0, "default_target_group": "web", "rules": [{"match": {"path": ["/api/*"]}, "forward": "api"}]}])
    p = plan(s, copy.deepcopy(s), running_of(s))
    assert p.ok and p.actions == () and p.describe() == ["no change"]


def test_fields_that_need_a_restart_refuse_the_whole_reload() -> None:
    old = mk({"web": static("127.0.0.1:9001")})
    new = mk({"web": static("127.0.0.1:9002")}, name="other", workers=2, state_dir="elsewhere",
             admin={"listen": "127.0.0.1:9911"})
    p = plan(old, new, running_of(old))
    assert not p.ok and p.actions == ()
    assert [e.path for e in p.errors] == ["name", "state_dir", "workers", "admin"]
    assert str(p.errors[0]) == "name: cannot change on a reload (was 's'); restart fivenines for it"


# ----------------------------------------------------------------------------- static targets


def test_static_targets_keep_ids_new_ones_get_fresh_ids_removed_ones_drain() -> None:
    old = mk({"web": static("127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003")})
    new = mk({"web": static("127.0.0.1:9003", "127.0.0.1:9004", {"address": "127.0.0.1:9001", "weight": 5})})
    p = plan(old, new, running_of(old))
    assert p.actions == (
        AddTarget("web", "web-4", 3, A, "127.0.0.1:9004", 1),
        SetWeight("web", "web-1", 5),
        RemoveTarget("web", "web-2", "127.0.0.1:9002 no longer in targets"),
    )
    assert p.describe() == [
        "add target web-4 (127.0.0.1:9004) to web as active",
        "set weight of web-1 to 5",
        "drain and remove web-2 from web: 127.0.0.1:9002 no longer in targets",
    ]


def test_fresh_ids_skip_targets_still_being_removed() -> None:
    old = mk({"web": static("127.0.0.1:9001")})
    new = mk({"web": static("127.0.0.1:9001", "127.0.0.1:9009")})
    run = Running(running_of(old).targets, frozenset({"web-1", "web-2", "web-7"}))
    assert plan(old, new, run).of(AddTarget)[0].id == "web-8"


def test_group_settings_apply_in_place() -> None:
    old = mk({"web": static("127.0.0.1:9001")})
    new = mk({"web": static("127.0.0.1:9001", health_check={"path": "/ready"}, deregistration_delay="5s",
                            slow_start="10s")})
    assert plan(old, new, running_of(old)).actions == (
        UpdateGroup("web", ("health_check", "deregistration_delay", "slow_start")),)


# ----------------------------------------------------------------------------- instances


def test_more_instances_join_as_standbys_and_count_is_raised() -> None:
    old = mk({"web": instances(2, 1)})
    new = mk({"web": instances(3, 1)})
    p = plan(old, new, running_of(old))
    assert p.actions == (AddTarget("web", "web-4", 3, S), SetActiveCount("web", 3))


def test_fewer_instances_remove_those_serving_least() -> None:
    old = mk({"web": instances(3, 1)})
    run = Running({"web": [RunningTarget("web-1", "a", A, H, 0), RunningTarget("web-2", "b", A, U, 1),
                           RunningTarget("web-3", "c", A, H, 2), RunningTarget("web-4", "d", S, H, 3)]})
    p = plan(old, mk({"web": instances(2, 0)}), run)
    assert p.actions == (
        SetActiveCount("web", 2),
        RemoveTarget("web", "web-2", "count + standby lowered to 2"),
        RemoveTarget("web", "web-4", "count + standby lowered to 2"),
    )


def test_lower_count_same_total_demotes_the_extra_active() -> None:
    old = mk({"web": instances(3, 0)})
    p = plan(old, mk({"web": instances(2, 1)}), running_of(old))
    assert p.actions == (SetActiveCount("web", 2), Demote("web", "web-3", "count lowered to 2"))


def test_changed_command_replaces_every_instance() -> None:
    old = mk({"web": instances(2, 1)})
    new = mk({"web": instances(2, 1, env={"MODE": "v2"})})
    p = plan(old, new, running_of(old))
    assert kinds(p) == ["AddTarget"] * 3 + ["RemoveTarget"] * 3
    assert [a.id for a in p.of(AddTarget)] == ["web-4", "web-5", "web-6"]
    assert all(a.role is S and a.address is None for a in p.of(AddTarget))
    assert {a.reason for a in p.of(RemoveTarget)} == {"instance definition changed: env"}


def test_restart_policy_and_stop_timeout_apply_in_place() -> None:
    old = mk({"web": instances(1)})
    new = mk({"web": instances(1, stop_timeout="1s", restart={"max_delay": "5s"})})
    assert plan(old, new, running_of(old)).actions == (
        UpdateGroup("web", ("instances.stop_timeout", "instances.restart")),)


def test_switching_between_instances_and_targets_replaces_all() -> None:
    old = mk({"web": instances(1, 1)})
    new = mk({"web": static("127.0.0.1:9001")})
    p = plan(old, new, running_of(old))
    assert p.actions == (
        AddTarget("web", "web-3", 2, A, "127.0.0.1:9001", 1),
        SetActiveCount("web", 1),
        RemoveTarget("web", "web-1", "now balances targets instead of running instances"),
        RemoveTarget("web", "web-2", "now balances targets instead of running instances"),
    )
    back = plan(new, old, running_of(new))
    assert kinds(back) == ["AddTarget", "AddTarget", "SetActiveCount", "RemoveTarget"]
    assert back.of(SetActiveCount) == [SetActiveCount("web", 1)]


# ----------------------------------------------------------------------------- groups and listeners


def test_group_added_and_removed_and_listener_rerouted() -> None:
    old = mk({"web": static("127.0.0.1:9001"), "old": static("127.0.0.1:9002")})
    new = mk({"web": static("127.0.0.1:9001"), "api": instances(1, 1)},
             [{"port": 0, "default_target_group": "web", "rules": [{"match": {"path": ["/api/*"]}, "forward": "api"}]}])
    p = plan(old, new, running_of(old))
    assert p.actions == (
        AddGroup("api"),
        AddTarget("api", "api-1", 0, A),
        AddTarget("api", "api-2", 1, S),
        RerouteListener(0, ("rules",)),
        RemoveGroup("old"),
    )


def test_listener_changes() -> None:
    groups = {"web": static("127.0.0.1:9001"), "api": static("127.0.0.1:9002")}
    old = mk(groups, [{"port": 0, "default_target_group": "web"}, {"port": 8081, "default_target_group": "web"},
                      {"port": 8082, "default_target_group": "web"}])
    new = mk(groups, [{"port": 0, "default_target_group": "api"}, {"port": 8091, "default_target_group": "web"}])
    p = plan(old, new, running_of(old))
    assert p.actions == (RebindListener(1, "127.0.0.1:8081", "127.0.0.1:8091"),
                         RerouteListener(0, ("default_target_group",)), RemoveListener(2))
    more = plan(new, old, running_of(new))
    assert more.actions == (AddListener(2), RebindListener(1, "127.0.0.1:8091", "127.0.0.1:8081"),
                            RerouteListener(0, ("default_target_group",)))
    proto = mk(groups, [{"port": 0, "default_target_group": "web", "protocol": "tcp"},
                        {"port": 8081, "default_target_group": "web"}, {"port": 8082, "default_target_group": "web"}])
    assert plan(old, proto, running_of(old)).describe() == [
        "rebind listeners.0 from 127.0.0.1:0/http to 127.0.0.1:0/tcp (open connections stay)"]


# ----------------------------------------------------------------------------- properties

ADDRS = [f"127.0.0.1:{9001 + i}" for i in range(8)]


@settings(max_examples=300, deadline=None)
@given(old=st.lists(st.sampled_from(ADDRS), min_size=1, max_size=6, unique=True),
       new=st.lists(st.sampled_from(ADDRS), min_size=1, max_size=6, unique=True),
       extra_taken=st.sets(st.integers(1, 20), max_size=4))
def test_static_plan_reaches_the_new_targets(old: list[str], new: list[str], extra_taken: set[int]) -> None:
    s_old, s_new = mk({"web": static(*old)}), mk({"web": static(*new)})
    run = running_of(s_old)
    taken = frozenset({f"web-{k}" for k in extra_taken} | {t.id for t in run.targets["web"]})
    p = plan(s_old, s_new, Running(run.targets, taken))
    removed = {a.id for a in p.of(RemoveTarget)}
    added = p.of(AddTarget)
    after = {t.address: t.id for t in run.targets["web"] if t.id not in removed}
    after.update({a.address or "": a.id for a in added})
    assert set(after) == set(new)
    # a kept target keeps its id; a new one never reuses an id in use or being removed
    for t in run.targets["web"]:
        if t.address in new:
            assert after[t.address] == t.id and t.id not in removed
    assert len({a.id for a in added}) == len(added) and not {a.id for a in added} & taken
    # nothing is drained before what is added
    order = kinds(p)
    if "RemoveTarget" in order and "AddTarget" in order:
        assert max(i for i, k in enumerate(order) if k == "AddTarget") < order.index("RemoveTarget")
    assert p.of(SetActiveCount) == ([] if len(new) == len(old) else [SetActiveCount("web", len(new))])


@settings(max_examples=300, deadline=None)
@given(old_n=st.integers(1, 4), old_m=st.integers(0, 3), new_n=st.integers(1, 4), new_m=st.integers(0, 3),
       states=st.lists(st.sampled_from([H, U, INI]), min_size=7, max_size=7),
       actives=st.lists(st.booleans(), min_size=7, max_size=7))
def test_instance_plan_reaches_the_new_count(old_n: int, old_m: int, new_n: int, new_m: int,
                                             states: list[HealthState], actives: list[bool]) -> None:
    s_old, s_new = mk({"web": instances(old_n, old_m)}), mk({"web": instances(new_n, new_m)})
    total = old_n + old_m
    # any mix of roles with at most N actives, any health
    roles, n_act = [], 0
    for i in range(total):
        act = actives[i] and n_act < old_n
        n_act += act
        roles.append(A if act else S)
    run = [RunningTarget(f"web-{i + 1}", f"a{i}", roles[i], states[i], i) for i in range(total)]
    p = plan(s_old, s_new, Running({"web": run}))
    removed = {a.id for a in p.of(RemoveTarget)}
    kept = [t for t in run if t.id not in removed]
    assert len(kept) + len(p.of(AddTarget)) == new_n + new_m
    assert all(a.role is S for a in p.of(AddTarget))  # new instances never push out a serving one
    demoted = {a.id for a in p.of(Demote)}
    assert sum(1 for t in kept if t.role is A and t.id not in demoted) <= new_n
    assert not demoted & removed
    # the ones removed serve no better than any kept one
    rank = {t.id: i for i, t in enumerate(removal_order(run))}
    if removed and kept:
        assert max(rank[i] for i in removed) < min(rank[t.id] for t in kept)
    assert p.of(SetActiveCount) == ([] if new_n == old_n else [SetActiveCount("web", new_n)])


# ----------------------------------------------------------------------------- readiness


def test_readiness_waits_for_added_targets_and_new_groups() -> None:
    assert readiness({}, {}).ready
    r = readiness({"web-4": INI, "web-5": U, "web-6": H}, {"api": 0, "old": 2})
    assert not r.ready and r.waiting == ("web-4: initial", "web-5: unhealthy", "api: no serving target yet")
    assert readiness({"web-4": H}, {"api": 1}).ready


def test_ready_deadline_covers_a_slow_recovery_and_is_capped() -> None:
    fast = mk({"web": static("127.0.0.1:9001", health_check={"interval": "100ms", "timeout": "50ms"})})
    slow = mk({"web": static("127.0.0.1:9001", health_check={"interval": "30s", "timeout": "5s"})})
    assert ready_deadline([fast.target_groups["web"]]) == 0.1 * 6 + 0.05 + 5.0
    assert ready_deadline([slow.target_groups["web"]]) == 60.0
    assert ready_deadline([]) == 0.0


def test_listener_timeouts_reroute_and_workers_hold_the_data_plane() -> None:
    from fivenines.core.reconfig import held_by_workers

    old = mk({"web": static("127.0.0.1:9001"), "api": static("127.0.0.1:9002")})
    new = mk({"web": static("127.0.0.1:9001", health_check={"path": "/ready"}, deregistration_delay="1s"),
              "api": static("127.0.0.1:9002", algorithm="random")},
             [{"port": 0, "default_target_group": "web", "timeouts": {"idle": "5s"}}])
    p = plan(old, new, running_of(old))
    assert p.actions == (UpdateGroup("web", ("health_check", "deregistration_delay")),
                         UpdateGroup("api", ("algorithm",)), RerouteListener(0, ("timeouts",)))
    # with workers > 1 only what the main process holds can change on a reload
    assert held_by_workers(p) == [UpdateGroup("api", ("algorithm",)), RerouteListener(0, ("timeouts",))]
    grow = plan(mk({"web": instances(2, 1)}), mk({"web": instances(2, 1, restart={"max_delay": "1s"})}),
                running_of(mk({"web": instances(2, 1)})))
    assert held_by_workers(grow) == []
    assert [str(a) for a in held_by_workers(plan(old, mk({"web": static("127.0.0.1:9001", "127.0.0.1:9003"),
                                                           "api": static("127.0.0.1:9002")}), running_of(old)))] == \
        ["add target web-2 (127.0.0.1:9003) to web as active"]


def test_a_replicated_store_cannot_change_on_a_reload() -> None:
    store = {"instances": {"command": ["redis-server", "--port", "{port}"], "count": 1, "standby": 1},
             "replicated": {"kind": "redis"}, "health_check": {"protocol": "tcp"}}
    groups = {"web": static("127.0.0.1:9001"), "cache": store}
    old = mk(groups, [{"port": 0, "default_target_group": "web"},
                      {"port": 0, "protocol": "tcp", "default_target_group": "cache"}])
    changed = copy.deepcopy(groups)
    changed["cache"]["instances"]["standby"] = 2
    changed["web"] = static("127.0.0.1:9002")
    p = plan(old, mk(changed, [{"port": 0, "default_target_group": "web"},
                               {"port": 0, "protocol": "tcp", "default_target_group": "cache"}]), running_of(old))
    assert not p.ok and [e.path for e in p.errors] == ["target_groups.cache"]
    assert "a replicated store cannot change on a reload" in p.errors[0].message
    # the rest of the spec may change when the store does not
    only_web = copy.deepcopy(groups)
    only_web["web"] = static("127.0.0.1:9002")
    p = plan(old, mk(only_web, [{"port": 0, "default_target_group": "web"},
                                {"port": 0, "protocol": "tcp", "default_target_group": "cache"}]), running_of(old))
    assert p.ok and {a.group for a in p.actions if hasattr(a, "group")} == {"web"}
