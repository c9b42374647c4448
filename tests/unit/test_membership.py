"""core/membership: what a cluster node works out about the others, exhaustively and by property."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.core.membership import (
    GroupServing,
    MemberRecord,
    NodeAddress,
    OperatorRecord,
    Where,
    fixed_places,
    layout_for,
    locate,
    node_health,
    node_spec,
    operator_steps,
)
from fivenines.core.restore import AdminState
from fivenines.spec import Spec, parse_spec

NODES = [{"name": "a", "address": "10.0.0.11", "zone": "z1"}, {"name": "b", "address": "10.0.0.12", "zone": "z1"},
         {"name": "c", "address": "10.0.0.13", "zone": "z2"}]


def spec(groups: dict[str, Any], nodes: list[dict[str, Any]] = NODES, **extra: Any) -> Spec:
    return parse_spec({
        "name": "shop",
        "listeners": [{"port": 80, "default_target_group": next(iter(groups))},
                      {"port": 81, "host": "0.0.0.0", "default_target_group": next(iter(groups))}],
        "target_groups": groups,
        "cluster": {"nodes": nodes, "vip": "10.0.0.100/24", "etcd": ["http://10.0.0.2:2379"]},
        **extra,
    })


def inst(count: int, standby: int = 0, **kw: Any) -> dict[str, Any]:
    return {"instances": {"command": ["x", "--host", "{host}", "--port", "{port}"], "count": count,
                          "standby": standby, **kw}}


def test_the_node_s_spec_listens_on_the_vip_unless_a_host_is_written_and_keeps_state_apart() -> None:
    s = spec({"web": inst(1)})
    a = node_spec(s, "a")
    assert [ls.host for ls in a.listeners] == ["10.0.0.100", "0.0.0.0"]
    assert a.state_dir == ".fivenines/shop/node-a" and node_spec(s, "b").state_dir == ".fivenines/shop/node-b"
    assert [ls.host for ls in s.listeners] == ["127.0.0.1", "0.0.0.0"]  # the spec itself is untouched
    assert node_spec(spec({"web": inst(1)}, state_dir="/var/lib/f9/"), "c").state_dir == "/var/lib/f9/node-c"


def test_every_node_works_out_the_same_layout_and_runs_its_own_share() -> None:
    s = spec({"web": inst(3, 2, ports="9101-9105"), "api": inst(2, placement={"c": 2}),
              "ext": {"targets": ["10.0.0.50:80"]}})
    layouts = {n: layout_for(s, n) for n in ("a", "b", "c")}
    assert len({lay.digest for lay in layouts.values()}) == 1
    assert {tuple(lay.describe()) for lay in layouts.values()} == {(
        "api: actives api-1@c api-2@c", "web: actives web-1@a web-2@b web-3@c; standbys web-4@a web-5@c")}
    a = layouts["a"]
    assert "ext" not in a.placements  # static targets are nobody's
    assert a.placements["api"].as_dict() == {"api-1": "c", "api-2": "c"}
    # each slot is run by exactly one node
    ids = [i for g in ("web", "api") for i in a.placements[g].as_dict()]
    assert sorted(i for lay in layouts.values() for g in ("web", "api") for i in lay.local(g)) == sorted(ids)
    # fixed ports: slot i on the range's i-th port, on its node's address
    for i, tid in enumerate(f"web-{k}" for k in range(1, 6)):
        node = a.home(tid)
        assert node is not None
        assert a.fixed_address(tid) == f"{a.address_of(node)}:{9101 + i}"
    assert a.fixed_address("api-1") is None and a.port("api", "api-1") is None  # auto: published
    assert a.home("ext-1") is None and a.address == "10.0.0.11"
    other = layout_for(spec({"web": inst(3, 1, ports="9101-9105"), "api": inst(2, placement={"c": 2})}), "a")
    assert other.digest != a.digest  # a node running another spec shows


def test_standbys_back_up_actives_from_another_node() -> None:
    lay = layout_for(spec({"web": inst(1, 1)}, NODES[:2]), "a")
    assert lay.placements["web"].as_dict() == {"web-1": "a", "web-2": "b"}


def rec(node: str, instances: dict[str, str], starting: tuple[str, ...] = ()) -> MemberRecord:
    return MemberRecord(node, {"a": "10.0.0.11", "b": "10.0.0.12", "c": "10.0.0.13"}[node], instances, starting)


def test_where_the_other_nodes_instances_are() -> None:
    lay = layout_for(spec({"web": inst(3)}), "a")  # one on each node
    homes = {t: lay.home(t) for t in ("web-1", "web-2", "web-3")}
    b_id = next(t for t, n in homes.items() if n == "b")
    c_id = next(t for t, n in homes.items() if n == "c")
    nothing = locate(lay, {}, set())
    assert set(nothing) == {b_id, c_id}  # this node's own instance is never located
    assert {p.where for p in nothing.values()} == {Where.UNKNOWN}
    assert nothing[b_id].why == "node b has not joined yet"
    recs = {"b": rec("b", {b_id: "10.0.0.12:40000"}), "c": rec("c", {}, (c_id,))}
    got = locate(lay, recs, {"b", "c"})
    assert (got[b_id].where, got[b_id].address) == (Where.PUBLISHED, "10.0.0.12:40000")
    assert (got[c_id].where, got[c_id].why) == (Where.UNKNOWN, "node c is starting it")
    gone = locate(lay, {"c": rec("c", {})}, {"b", "c"})
    assert gone[b_id].where is Where.LOST and gone[b_id].why == "node b left the cluster (its lease expired)"
    assert gone[c_id].where is Where.LOST and "runs no" in gone[c_id].why


ids3 = ("web-1", "web-2", "web-3")


@settings(max_examples=150, deadline=None)
@given(published=st.dictionaries(st.sampled_from(["b", "c"]), st.sets(st.sampled_from(ids3))),
       starting=st.sets(st.sampled_from(ids3)), seen=st.sets(st.sampled_from(["b", "c"])))
def test_locate_marks_lost_exactly_what_is_gone(published: dict[str, set[str]], starting: set[str],
                                                seen: set[str]) -> None:
    lay = layout_for(spec({"web": inst(3)}), "a")
    recs = {n: rec(n, {t: f"{n}:{i}" for i, t in enumerate(sorted(ts))}, tuple(sorted(starting - ts)))
            for n, ts in published.items()}
    got = locate(lay, recs, seen | set(recs))
    assert set(got) == {t for t in ids3 if lay.home(t) != "a"}
    for t, p in got.items():
        node = lay.home(t)
        assert p.node == node
        r = recs.get(node)  # type: ignore[arg-type]
        if r is not None and t in r.instances:
            assert p.where is Where.PUBLISHED and p.address == r.instances[t]
        elif (r is not None and t in r.starting) or (r is None and node not in seen):
            assert p.where is Where.UNKNOWN
        else:
            assert p.where is Where.LOST and p.address is None


def test_without_a_store_the_others_are_where_the_layout_says() -> None:
    lay = layout_for(spec({"web": inst(2, ports="9101-9102")}, NODES[:2]), "b")
    assert {t: (p.where, p.address) for t, p in fixed_places(lay).items()} == {"web-1": (Where.FIXED, "10.0.0.11:9101")}


def test_records_round_trip_and_bad_ones_are_refused() -> None:
    m = MemberRecord("a", "10.0.0.11", {"web-1": "10.0.0.11:1"}, ("web-3",), "http://127.0.0.1:9900", 42, 1.5, "ab")
    assert MemberRecord.from_json(m.to_json()) == m
    o = OperatorRecord(AdminState.MAINTENANCE, 7, "b", "admin API from 10.0.0.9")
    assert OperatorRecord.from_json(o.to_json()) == o
    for bad in ('{"node": "a"}', "[]", "nonsense", '{"node": "a", "address": "x", "instances": 3}'):
        with pytest.raises(ValueError):
            MemberRecord.from_json(bad)
    for bad in ("{}", '{"admin_state": "asleep"}', '{"admin_state": null, "weight": 2000}',
                '{"admin_state": null, "weight": true}', "7"):
        with pytest.raises(ValueError):
            OperatorRecord.from_json(bad)


STATES = [None, AdminState.DRAINED, AdminState.MAINTENANCE]


def carry_out(state: AdminState | None, weight: int, steps: list[tuple[str, int | None]]) -> tuple[AdminState | None, int]:
    """What runtime/operator.py does with each command (drain is refused in maintenance)."""
    for action, n in steps:
        if action == "enable":
            state = None
        elif action == "drain":
            assert state is not AdminState.MAINTENANCE, "drain refused: in maintenance"
            state = AdminState.DRAINED
        elif action == "maintenance":
            state = AdminState.MAINTENANCE
        else:
            assert action == "weight" and n is not None
            weight = n
    return state, weight


@given(state=st.sampled_from(STATES), weight=st.integers(0, 1000), spec_weight=st.integers(0, 1000),
       want_state=st.sampled_from(STATES), want_weight=st.one_of(st.none(), st.integers(0, 1000)),
       record=st.booleans())
def test_operator_steps_reach_the_record_and_nothing_more(state: AdminState | None, weight: int, spec_weight: int,
                                                          want_state: AdminState | None, want_weight: int | None,
                                                          record: bool) -> None:
    want = OperatorRecord(want_state, want_weight) if record else None
    steps = operator_steps(state, weight, spec_weight, want)
    target = (want_state, want_weight if want_weight is not None else spec_weight) if record else (None, spec_weight)
    assert carry_out(state, weight, steps) == target
    assert operator_steps(*target, spec_weight, want) == []  # applied: nothing left to do (the echo is a no-op)
    assert len(steps) <= 3


def test_a_node_may_hold_the_vip_when_it_listens_and_every_group_serves() -> None:
    ok = GroupServing(1, False)
    assert node_health(True, {"web": ok, "api": GroupServing(3, False)})[0]
    assert node_health(True, {})[0]
    assert node_health(False, {"web": ok}) == (False, "the balancer is not listening")
    assert node_health(True, {"web": GroupServing(0, False), "api": ok}) == (False, "no target serving in: web")
    assert node_health(True, {"web": GroupServing(2, True)}) == (False, "no target serving in: web (fail-open)")


def test_node_address_lookup() -> None:
    lay = layout_for(spec({"web": inst(1)}), "c")
    assert lay.address == "10.0.0.13" and lay.nodes[0] == NodeAddress("a", "10.0.0.11", "z1")
    with pytest.raises(StopIteration):
        lay.address_of("x")
