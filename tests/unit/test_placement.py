"""Placement of a group's actives and standbys on cluster nodes: balance, zones, stability."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.core.placement import Node, Placement, PlacementError, SlotRole, place


def counts(p: Placement, role: SlotRole | None = None) -> Counter[str]:
    return Counter(s.node for s in p.slots if role is None or s.role is role)


def test_two_actives_and_a_standby_on_three_nodes_one_each_standby_alone() -> None:
    p = place("web", 2, 1, [Node("a"), Node("b"), Node("c")])
    assert p.as_dict() == {"web-1": "a", "web-2": "b", "web-3": "c"}
    assert p.describe() == "web: actives web-1@a web-2@b; standbys web-3@c"


def test_on_two_nodes_the_standby_backs_up_the_active_on_the_other_node() -> None:
    p = place("web", 2, 1, [Node("a"), Node("b")])
    assert counts(p, SlotRole.ACTIVE) == {"a": 1, "b": 1} and sum(counts(p).values()) == 3


def test_a_replicated_store_keeps_its_primary_away_from_its_replicas() -> None:
    p = place("cache", 1, 2, [Node("a"), Node("b")])
    assert p.as_dict() == {"cache-1": "a", "cache-2": "b", "cache-3": "b"}
    p = place("cache", 1, 2, [Node("a"), Node("b"), Node("c")])
    assert len(set(p.as_dict().values())) == 3


def test_actives_go_round_the_zones_and_standbys_to_the_zone_with_fewer_actives() -> None:
    nodes = [Node("a", "z1"), Node("b", "z1"), Node("c", "z2"), Node("d", "z2")]
    p = place("web", 2, 1, nodes)
    assert {p.node_of("web-1"), p.node_of("web-2")} == {"a", "c"}  # one per zone, not a and b
    nodes = [Node("a", "z1"), Node("b", "z1"), Node("c", "z1"), Node("d", "z2")]
    p = place("web", 4, 2, nodes)
    standby_zones = {next(n.zone for n in nodes if n.name == s.node) for s in p.slots if s.role is SlotRole.STANDBY}
    assert standby_zones == {"z1", "z2"}  # a zone lost leaves a standby in the other


def test_per_node_counts_are_followed_and_checked() -> None:
    p = place("web", 3, 1, [Node("a"), Node("b")], per_node={"a": 3})
    assert counts(p, SlotRole.ACTIVE) == {"a": 3} and counts(p, SlotRole.STANDBY) == {"b": 1}
    with pytest.raises(PlacementError, match="add up to count 3"):
        place("web", 3, 0, [Node("a")], per_node={"a": 2})
    with pytest.raises(PlacementError, match="unknown nodes \\['x'\\]"):
        place("web", 1, 0, [Node("a")], per_node={"x": 1})
    with pytest.raises(PlacementError, match="no nodes"):
        place("web", 1, 0, [])
    with pytest.raises(PlacementError, match="duplicate"):
        place("web", 1, 0, [Node("a"), Node("a")])


def test_a_node_that_leaves_moves_only_its_own_slots() -> None:
    nodes = [Node("a"), Node("b"), Node("c")]
    before = place("web", 3, 2, nodes)
    after = place("web", 3, 2, nodes[:2], previous=before.as_dict())
    assert sorted(after.moved_from(before.as_dict())) == sorted(s.id for s in before.on("c"))


# --------------------------------------------------------------------------- properties

names = st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=6, unique=True)


@st.composite
def clusters(draw: st.DrawFn) -> list[Node]:
    zones = draw(st.sampled_from([None, ["z1"], ["z1", "z2"], ["z1", "z2", "z3"]]))
    return [Node(n, draw(st.sampled_from(zones)) if zones else None) for n in draw(names)]


@settings(max_examples=200, deadline=None)
@given(clusters(), st.integers(0, 9), st.integers(0, 5))
def test_balanced_complete_deterministic(nodes: list[Node], count: int, standby: int) -> None:
    p = place("g", count, standby, nodes)
    assert p == place("g", count, standby, nodes)
    assert [s.id for s in p.slots] == [f"g-{i + 1}" for i in range(count + standby)]
    assert [s.role for s in p.slots] == [SlotRole.ACTIVE] * count + [SlotRole.STANDBY] * standby
    act = [counts(p, SlotRole.ACTIVE)[n.name] for n in nodes]
    tot = [counts(p)[n.name] for n in nodes]
    assert max(act) - min(act) <= 1, p.describe()
    assert max(tot) - min(tot) <= 1, p.describe()
    if len(nodes) >= count + standby:  # room for everyone: no two instances share a node
        assert max(tot) <= 1
    zones = {n.zone_key for n in nodes}
    used = {n.zone_key for n in nodes if counts(p, SlotRole.ACTIVE)[n.name]}
    assert len(used) == min(count, len(zones)), p.describe()
    free = [n.name for n in nodes if not counts(p, SlotRole.ACTIVE)[n.name]]
    if standby <= len(free):  # standbys on nodes with no active, one each (a replicated store: away from its primary)
        assert counts(p, SlotRole.STANDBY) == Counter(dict.fromkeys(set(counts(p, SlotRole.STANDBY)), 1))
        assert all(s.node in free for s in p.slots if s.role is SlotRole.STANDBY), p.describe()


@settings(max_examples=150, deadline=None)
@given(clusters(), st.integers(1, 9), st.integers(0, 5), st.data())
def test_a_node_leaving_moves_its_actives_and_nothing_else_active(
        nodes: list[Node], count: int, standby: int, data: st.DataObject) -> None:
    if len(nodes) < 2:
        return
    before = place("g", count, standby, nodes)
    gone = data.draw(st.sampled_from(nodes))
    rest = [n for n in nodes if n != gone]
    after = place("g", count, standby, rest, previous=before.as_dict())
    moved = set(after.moved_from(before.as_dict()))
    on_gone = {s.id for s in before.on(gone.name)}
    assert on_gone <= moved
    assert {i for i in moved - on_gone if int(i[2:]) <= count} == set()
    # standbys: at most as many others move as the lost node had (room is made for its actives)
    assert len(moved - on_gone) <= len(on_gone)


@settings(max_examples=150, deadline=None)
@given(clusters(), st.integers(0, 9), st.integers(0, 5), st.sampled_from("xyz"))
def test_a_node_joining_moves_no_more_than_it_takes(nodes: list[Node], count: int, standby: int, new: str) -> None:
    before = place("g", count, standby, nodes)
    after = place("g", count, standby, [*nodes, Node(new)], previous=before.as_dict())
    moved = after.moved_from(before.as_dict())
    actives = {f"g-{i + 1}" for i in range(count)}
    assert all(after.node_of(i) == new for i in moved if i in actives), (before.describe(), after.describe())
    assert len(moved) <= len(after.on(new)) + standby
