"""N+M with hysteresis: instant promotion on loss, reinstatement only after a hold, flap hold-down, fail-open."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.core import pool
from fivenines.core.health import HealthState, Reason
from fivenines.core.pool import (
    FailOpen,
    FlapHistory,
    Member,
    Role,
    apply_changes,
    initial_roles,
    plan_roles,
    plan_serving,
    serving,
)

H, U, INIT, D, UN = (HealthState.HEALTHY, HealthState.UNHEALTHY, HealthState.INITIAL, HealthState.DRAINING,
                     HealthState.UNUSED)
A, S = Role.ACTIVE, Role.STANDBY


def m(tid: str, role: Role, state: HealthState = H, order: int = 0, since: float = 0.0, excluded: str = "",
      ready_at: float = 0.0, running: bool = True) -> Member:
    return Member(tid, role, state, since, order, Reason.TIMEOUT if state is U else None, excluded, ready_at, running)


def changes(ms: list[Member], n: int, now: float | None = None) -> list[tuple[str, Role]]:
    return [(c.id, c.new) for c in plan_roles(ms, n, now=now)]


def test_ejected_active_is_replaced_at_once_and_stops_serving() -> None:
    ms = [m("a", A, excluded="ejected (1 consecutive connect errors)"), m("b", A, order=1), m("c", S, order=2)]
    cs = plan_roles(ms, 2, now=5.0)
    assert [str(c) for c in cs] == [
        "demoted active a: a ejected (1 consecutive connect errors)",
        "promoted standby c: replaces a ejected (1 consecutive connect errors)",
    ]
    assert serving(ms) == ["b"]


def test_excluded_standby_is_not_promoted() -> None:
    ms = [m("a", A, U), m("b", S, order=1, excluded="drained by its agent"), m("c", S, order=2)]
    assert changes(ms, 1, now=0.0) == [("a", S), ("c", A)]


def test_recovered_home_member_is_reinstated_only_after_its_hold() -> None:
    # a (home) was lost, c (standby) replaced it; a is healthy again since t=100 with a 30 s hold
    ms = [m("a", S, order=0, since=100.0, ready_at=130.0), m("b", A, order=1), m("c", A, order=2)]
    assert changes(ms, 2, now=110.0) == []
    assert changes(ms, 2, now=129.9) == []
    cs = plan_roles(ms, 2, now=130.0)
    assert [str(c) for c in cs] == [
        "promoted standby a: reinstated: ready 0.0s past its hold",
        "demoted active c: back to standby: a reinstated",
    ]


def test_only_a_recovery_is_held_not_the_first_time_a_member_can_serve() -> None:
    assert pool.ready_at(12.0, 30.0, first_able=None) == 12.0  # not able to serve yet: moot
    assert pool.ready_at(12.0, 30.0, first_able=12.0) == 12.0  # its first stretch: nothing to prove
    assert pool.ready_at(50.0, 30.0, first_able=12.0) == 80.0  # healthy again after a loss: held


def test_a_home_member_slow_to_start_takes_its_role_the_moment_it_is_healthy() -> None:
    """Start-up on a loaded machine: web-1's first checks failed (demoted), web-3 was healthy first
    (promoted). When web-1 is healthy for the first time it is reinstated at once, not 30 s later."""
    ms = [m("web-1", S, H, order=0, since=3.0, ready_at=pool.ready_at(3.0, 30.0, first_able=3.0)),
          m("web-2", A, H, order=1, since=1.0), m("web-3", A, H, order=2, since=2.0)]
    assert [str(c) for c in plan_roles(ms, 2, now=3.0)] == [
        "promoted standby web-1: reinstated: ready 0.0s past its hold",
        "demoted active web-3: back to standby: web-1 reinstated",
    ]


@settings(max_examples=300)
@given(data=st.data(), total=st.integers(1, 5), n=st.integers(1, 5))
def test_start_up_ends_with_the_roles_by_member_order_whoever_answers_first(data: st.DataObject, total: int,
                                                                             n: int) -> None:
    """Every member starts ``initial``; some fail their first checks (``unhealthy``, as a slow starter
    does), then each becomes healthy, in any interleaving. Once all are healthy the first N are
    active: the check race at start decides nothing that lasts."""
    n = min(n, total)
    ids = [f"web-{i + 1}" for i in range(total)]
    slow = data.draw(st.lists(st.booleans(), min_size=total, max_size=total))
    tokens = data.draw(st.permutations([i for i in range(total) for _ in range(2 if slow[i] else 1)]))
    roles = initial_roles(ids, n)
    state = dict.fromkeys(ids, INIT)
    since = dict.fromkeys(ids, 0.0)
    first: dict[str, float] = {}
    for t, i in enumerate(tokens, 1):
        now, tid = float(t), ids[i]
        state[tid] = U if slow[i] and state[tid] is INIT else H
        since[tid] = now
        if state[tid] is H:
            first.setdefault(tid, now)
        ms = [Member(x, roles[x], state[x], since[x], k, Reason.TIMEOUT if state[x] is U else None, "",
                     pool.ready_at(since[x], 30.0, first.get(x))) for k, x in enumerate(ids)]
        roles = apply_changes(roles, plan_roles(ms, n, now=now))
    assert roles == initial_roles(ids, n)


def test_classic_active_standby_one_plus_one() -> None:
    ms = [m("primary", A, U, order=0), m("backup", S, order=1)]
    assert changes(ms, 1, now=0.0) == [("primary", S), ("backup", A)]
    # primary healthy again at t=10: stays standby during the hold, then takes over
    ms = [m("primary", S, order=0, since=10.0, ready_at=40.0), m("backup", A, order=1)]
    assert changes(ms, 1, now=39.0) == []
    assert changes(ms, 1, now=40.0) == [("primary", A), ("backup", S)]


def test_without_now_there_is_no_reinstatement() -> None:
    ms = [m("a", S, order=0), m("b", A, order=1), m("c", A, order=2)]
    assert changes(ms, 2) == []


def test_promotion_prefers_members_past_their_hold_then_longest_healthy() -> None:
    ms = [m("a", A, U, order=0), m("b", A, order=1),
          m("flappy", S, order=2, since=0.0, ready_at=500.0),  # healthy longest, but held down
          m("steady", S, order=3, since=50.0, ready_at=80.0)]
    assert changes(ms, 2, now=100.0) == [("a", S), ("steady", A)]
    # with nobody else, a held-down member still covers: some capacity beats none
    ms2 = [m("a", A, U, order=0), m("b", A, order=1), m("flappy", S, order=2, ready_at=500.0)]
    assert changes(ms2, 2, now=100.0) == [("a", S), ("flappy", A)]


def test_home_member_ready_in_the_same_plan_is_promoted_instead_of_a_guest() -> None:
    ms = [m("a", S, order=0, since=50.0, ready_at=60.0), m("b", A, U, order=1), m("c", A, order=2),
          m("d", S, order=3, since=0.0)]
    # b is lost; d (a guest, healthy longest) would replace it, but a (home, ready) goes in instead
    cs = plan_roles(ms, 2, now=70.0)
    after = apply_changes({x.id: x.role for x in ms}, cs)
    assert after == {"a": A, "b": S, "c": A, "d": S}
    assert [str(c) for c in cs] == ["demoted active b: b unhealthy (Target.Timeout)", "promoted standby a: home member, ready"]


def test_flap_history_doubles_the_hold_and_forgets() -> None:
    f = FlapHistory(hold_time=5.0, window=60.0, max_hold_down=30.0)
    assert f.hold("x", 0.0) == 5.0
    assert [f.lost("x", t) for t in (0.0, 10.0, 20.0, 30.0, 40.0)] == [5.0, 10.0, 20.0, 30.0, 30.0]
    assert f.count("x", 40.0) == 5
    assert f.count("x", 75.0) == 3  # the losses at 0 and 10 fell out of the window
    assert f.hold("x", 200.0) == 5.0 and f.count("y", 0.0) == 0


def test_fail_open_route_all_routes_to_running_failed_members() -> None:
    ms = [m("a", A, U, order=0), m("b", A, U, order=1, running=False), m("c", S, U, order=2),
          m("d", S, INIT, order=3), m("e", S, D, order=4)]
    plan = plan_serving(ms, FailOpen.ROUTE_ALL)
    assert plan.ids == ["a", "c"] and plan.fail_open and str(plan) == "fail-open route_all: a,c"
    rej = plan_serving(ms, FailOpen.REJECT)
    assert rej.ids == [] and rej.fail_open and str(rej) == "none: fail-open reject (503)"


def test_no_fail_open_while_someone_serves_or_nothing_was_judged() -> None:
    ms = [m("a", A, U, order=0), m("b", A, H, order=1)]
    plan = plan_serving(ms)
    assert plan.ids == ["b"] and not plan.fail_open and str(plan) == "b"
    starting = [m("a", A, INIT), m("b", A, INIT, order=1)]
    assert plan_serving(starting) == plan_serving(starting, FailOpen.REJECT).__class__([], False, FailOpen.ROUTE_ALL)
    # an ejected-only group: everybody healthy but excluded, nobody failed checks -> nothing to route to
    ejected = [m("a", A, excluded="ejected (x)"), m("b", A, order=1, excluded="ejected (y)")]
    assert plan_serving(ejected).ids == []


# --------------------------------------------------------------------------- properties

members_st = st.lists(
    st.tuples(
        st.sampled_from([A, S]),
        st.sampled_from([H, U, INIT, D, UN]),
        st.booleans(),  # excluded
        st.floats(0, 100),  # since
        st.floats(0, 200),  # ready_at
    ),
    min_size=1,
    max_size=7,
)


@settings(max_examples=300)
@given(spec=members_st, n=st.integers(1, 7), now=st.floats(0, 300))
def test_plan_roles_with_hysteresis_properties(
    spec: list[tuple[Role, HealthState, bool, float, float]], n: int, now: float
) -> None:
    ms = [m(f"t{i}", r, s, i, since, "ejected (x)" if ex else "", ready) for i, (r, s, ex, since, ready) in enumerate(spec)]
    if sum(1 for x in ms if x.role is A) > n:
        return  # the controller never has more than N actives
    cs = plan_roles(ms, n, now=now)
    roles_after = apply_changes({x.id: x.role for x in ms}, cs)
    after = [Member(x.id, roles_after[x.id], x.state, x.since, x.order, x.reason, x.excluded, x.ready_at) for x in ms]
    by_id = {x.id: x for x in ms}
    actives = [x for x in after if x.role is A]
    assert len(actives) <= n
    assert not any(x.lost for x in actives)
    # each member changes at most once
    assert len({c.id for c in cs}) == len(cs)
    for c in cs:
        before = by_id[c.id]
        if c.new is A:
            assert before.role is S and before.can_serve
        else:
            assert before.role is A
            # a healthy, serving active is demoted only by a reinstated home member
            if not before.lost:
                assert before.order >= n and "reinstated" in c.reason
    # a home member is reinstated only when ready
    for c in cs:
        if "reinstated" in c.reason and c.new is A:
            assert now >= by_id[c.id].ready_at and by_id[c.id].order < n
    # as many serve as possible
    if any(x.role is S and x.can_serve for x in after):
        assert len(actives) == n
    # serving did not shrink: whoever served before and is not lost still serves, or was swapped 1:1
    assert len(serving(after)) >= min(n, len(serving(ms)))
    # a fixed point: planning again at the same time changes nothing
    assert plan_roles(after, n, now=now) == []


@settings(max_examples=100)
@given(
    flips=st.lists(st.tuples(st.booleans(), st.floats(0.1, 20.0)), min_size=1, max_size=40),
)
def test_a_flapping_home_member_never_flip_flops_faster_than_its_hold(flips: list[tuple[bool, float]]) -> None:
    """Drive a 1+1 pair where the primary flaps; count reinstatements: each needs a full (growing) hold."""
    hold, window, cap = 5.0, 120.0, 40.0
    f = FlapHistory(hold, window, cap)
    roles = {"p": A, "b": S}
    healthy_since = 0.0
    state = H
    now = 0.0
    reinstated_at: list[float] = []
    for up, dt in flips:
        now += dt
        new_state = H if up else U
        if new_state is not state:
            state = new_state
            if state is U:
                f.lost("p", now)
            else:
                healthy_since = now
        ready = healthy_since + f.hold("p", now)
        ms = [Member("p", roles["p"], state, healthy_since, 0, None, "", ready),
              Member("b", roles["b"], H, 0.0, 1, None, "", 0.0)]
        for c in plan_roles(ms, 1, now=now):
            roles[c.id] = c.new
            if c.id == "p" and c.new is A:
                reinstated_at.append(now)
                assert now - healthy_since >= f.hold("p", now) - 1e-9
        assert list(roles.values()).count(A) == 1
