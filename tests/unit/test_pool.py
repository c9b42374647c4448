"""N+M roles: demotion of lost actives, promotion of healthy standbys."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fivenines.core.health import HealthState, Reason
from fivenines.core.pool import (
    LOST_STATES,
    Member,
    Role,
    apply_changes,
    initial_roles,
    plan_roles,
    serving,
)

H, U, INIT, D = HealthState.HEALTHY, HealthState.UNHEALTHY, HealthState.INITIAL, HealthState.DRAINING
A, S = Role.ACTIVE, Role.STANDBY


def m(tid: str, role: Role, state: HealthState, since: float = 0.0, order: int = 0) -> Member:
    return Member(tid, role, state, since, order, Reason.TIMEOUT if state is U else None)


def test_initial_roles() -> None:
    assert initial_roles(["a", "b", "c", "d"], 3) == {"a": A, "b": A, "c": A, "d": S}


def test_all_healthy_no_change() -> None:
    ms = [m("a", A, H), m("b", A, H, order=1), m("c", S, H, order=2)]
    assert plan_roles(ms, 2) == []
    assert serving(ms) == ["a", "b"]


def test_lost_active_is_replaced_by_the_longest_healthy_standby() -> None:
    ms = [m("a", A, U), m("b", A, H, order=1), m("c", S, H, since=5, order=2), m("d", S, H, since=2, order=3)]
    changes = plan_roles(ms, 2)
    assert [(c.id, c.new) for c in changes] == [("a", S), ("d", A)]
    assert str(changes[1]) == "promoted standby d: replaces a unhealthy (Target.Timeout)"


def test_no_healthy_standby_only_demotes() -> None:
    ms = [m("a", A, U), m("b", A, H, order=1), m("c", S, INIT, order=2)]
    assert [(c.id, c.new) for c in plan_roles(ms, 2)] == [("a", S)]


def test_initial_active_keeps_its_role() -> None:
    ms = [m("a", A, INIT), m("b", A, INIT, order=1), m("c", S, H, order=2)]
    assert plan_roles(ms, 2) == []
    assert serving(ms) == []


def test_draining_active_is_lost() -> None:
    ms = [m("a", A, D), m("b", S, H, order=1)]
    assert [(c.id, c.new) for c in plan_roles(ms, 1)] == [("a", S), ("b", A)]


def test_missing_actives_are_filled_even_without_a_loss() -> None:
    ms = [m("a", S, H), m("b", S, H, order=1), m("c", S, H, order=2)]
    changes = plan_roles(ms, 2)
    assert [(c.id, c.new) for c in changes] == [("a", A), ("b", A)]
    assert changes[0].reason == "only 0 of 2 actives"


states = st.sampled_from(list(HealthState))
roles = st.sampled_from(list(Role))


@given(
    spec=st.lists(st.tuples(roles, states, st.floats(0, 100)), min_size=1, max_size=8),
    n=st.integers(1, 8),
)
def test_plan_roles_properties(spec: list[tuple[Role, HealthState, float]], n: int) -> None:
    ms = [Member(f"t{i}", r, s, since, i) for i, (r, s, since) in enumerate(spec)]
    if sum(1 for x in ms if x.role is A) > n:
        return  # the controller never has more than N actives to start with
    changes = plan_roles(ms, n)
    roles_after = apply_changes({x.id: x.role for x in ms}, changes)
    after = [Member(x.id, roles_after[x.id], x.state, x.since, x.order) for x in ms]
    actives = [x for x in after if x.role is A]
    # never more than N actives; no lost member stays active
    assert len(actives) <= n
    assert not any(x.state in LOST_STATES for x in actives)
    # only healthy standbys are promoted; only lost actives are demoted
    by_id = {x.id: x for x in ms}
    for c in changes:
        if c.new is A:
            assert by_id[c.id].state is H and by_id[c.id].role is S
        else:
            assert by_id[c.id].state in LOST_STATES and by_id[c.id].role is A
    # as many serve as possible: a healthy standby left over means actives are full
    healthy_standbys = [x for x in after if x.role is S and x.state is H]
    if healthy_standbys:
        assert len(actives) == n
    # planning again changes nothing (a fixed point: no flapping)
    assert plan_roles(after, n) == []
    # serving = healthy actives
    assert set(serving(after)) == {x.id for x in actives if x.state is H}
