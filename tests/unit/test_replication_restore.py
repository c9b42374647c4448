"""The replication core's restore phase: writes fenced, nothing elected or re-pointed, a new history after."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.core.replication import (
    NOWHERE,
    Action,
    Collect,
    Cut,
    Emit,
    Follow,
    Observation,
    Phase,
    Promote,
    Publish,
    Replication,
    ReplicationError,
    Settings,
    StoreRole,
)

P, R = StoreRole.PRIMARY, StoreRole.REPLICA
MEMBERS = [("db-1", "h:1"), ("db-2", "h:2"), ("db-3", "h:3")]
SCRATCH = "127.0.0.1:9"


def of(acts: list[Action], kind: type) -> list[Any]:
    return [a for a in acts if isinstance(a, kind)]


def serving(**kw: Any) -> Replication:
    r = Replication(MEMBERS, Settings(**kw), designated="db-1")
    r.observed("db-1", Observation(P, 5000, replicas=("h:2", "h:3")), 0.0)
    r.observed("db-2", Observation(R, 5000, "h:1", True), 0.0)
    r.observed("db-3", Observation(R, 5000, "h:1", True), 0.0)
    return r


def restoring() -> Replication:
    r = serving()
    r.begin_restore(1.0)
    return r


def test_begin_restore_fences_writes() -> None:
    r = serving()
    assert r.published.primary == "db-1"
    acts = r.begin_restore(1.0)
    assert r.phase is Phase.RESTORING
    assert of(acts, Publish) == [Publish(None, ())]
    assert [c.target for c in of(acts, Cut)] == ["db-1"]
    assert [(e.kind, e.new) for e in of(acts, Emit)] == [("recovery", "restoring")]
    assert isinstance(acts[0], Publish | Cut)  # routing stops before anything else


def test_nothing_is_elected_fenced_or_repointed_while_restoring() -> None:
    r = restoring()
    # the primary replicates the scratch server, the replicas follow no one, their positions go back
    acts = r.observed("db-1", Observation(R, 100, SCRATCH, True), 2.0)
    acts += r.observed("db-2", Observation(R, 5000, "127.0.0.1:0", False), 2.0)
    acts += r.observed("db-3", Observation(P, 0), 2.0)
    acts += r.health("db-1", True, "timeout", 2.1)
    acts += r.tick(3.0)
    assert not of(acts, Collect) and not of(acts, Promote) and not of(acts, Follow)
    assert r.published.primary is None and r.phase is Phase.RESTORING
    assert r.follow_for_start("db-2") == NOWHERE  # a member restarted meanwhile follows no one
    with pytest.raises(ReplicationError, match="cannot switch over while restoring"):
        r.request_switchover(None, 3.0)
    with pytest.raises(ReplicationError, match="cannot restore while restoring"):
        r.begin_restore(3.0)


def test_a_successful_restore_starts_a_new_history() -> None:
    r = restoring()
    r.observed("db-1", Observation(R, 120, SCRATCH, True), 2.0)
    r.observed("db-2", Observation(R, 120, "h:1", True), 2.0)
    r.observed("db-3", Observation(R, 120, "h:1", True), 2.0)
    acts = r.end_restore(True, 120, "backup g-1", 3.0)
    assert r.phase is Phase.SERVING and r.known_position == 120 and r.replicated_floor == 0
    assert of(acts, Publish) == [Publish("db-1", ())]
    assert [(e.kind, e.old, e.new) for e in of(acts, Emit)] == [("recovery", "restoring", "serving")]
    assert not of(acts, Follow)
    # positions far below the ones before the restore are not "lost data": a failover can promote
    r.observed("db-2", Observation(R, 130, "h:1", True), 4.0)
    r.observed("db-3", Observation(R, 125, "h:1", True), 4.0)
    [c] = of(r.health("db-1", True, "killed", 5.0), Collect)
    acts = r.positions(c.round, {"db-2": Observation(R, 130, "h:1", True), "db-3": Observation(R, 125, "h:1", True)}, 5.0)
    assert [p.target for p in of(acts, Promote)] == ["db-2"]


def test_a_restore_that_failed_before_loading_serves_as_before_and_repoints_held_replicas() -> None:
    r = restoring()
    r.observed("db-2", Observation(R, 5000, "127.0.0.1:0", False), 2.0)
    r.observed("db-3", Observation(R, 5000, "127.0.0.1:0", False), 2.0)
    acts = r.end_restore(False, 0, "scratch server did not start", 3.0)
    assert r.phase is Phase.SERVING and r.published.primary == "db-1"
    assert sorted(f.target for f in of(acts, Follow)) == ["db-2", "db-3"]
    assert "primary unchanged" in of(acts, Emit)[0].reason


def test_a_restore_that_failed_after_loading_began_elects_among_the_replicas() -> None:
    r = restoring()
    r.observed("db-1", Observation(R, 0, SCRATCH, False), 2.0)
    acts = r.end_restore(False, 0, "sync broke", 3.0, primary_intact=False)
    [c] = of(acts, Collect)
    assert set(c.targets) == {"db-2", "db-3"} and r.phase is Phase.ELECTING
    reps = {"db-2": Observation(R, 5000, "127.0.0.1:0", False), "db-3": Observation(R, 5000, "127.0.0.1:0", False)}
    acts = r.positions(c.round, reps, 3.5)
    assert [p.target for p in of(acts, Promote)] == ["db-2"]  # both kept their pre-restore data: the first


def test_restore_refused_when_not_serving_or_not_leader() -> None:
    r = serving()
    r.health("db-1", True, "killed", 1.0)
    with pytest.raises(ReplicationError, match="cannot restore while electing"):
        r.begin_restore(1.0)
    leased = Replication(MEMBERS, Settings(leased=True))
    with pytest.raises(ReplicationError, match="does not hold the lease"):
        leased.begin_restore(1.0)


def test_losing_the_lease_while_restoring_steps_down() -> None:
    r = Replication(MEMBERS, Settings(leased=True))
    r.acquired(100.0, ("db-1", 3), 0.0)
    r.observed("db-1", Observation(P, 10), 0.0)
    r.begin_restore(1.0)
    acts = r.tick(100.0)
    assert r.phase is Phase.FOLLOWER and [e.new for e in of(acts, Emit)] == ["follower"]
    assert r.end_restore(True, 5, "too late", 101.0) == []  # the restore's end is ignored: another node acts
    assert r.phase is Phase.FOLLOWER


inputs = st.lists(st.one_of(
    st.tuples(st.just("obs"), st.sampled_from(["db-1", "db-2", "db-3"]),
              st.sampled_from([P, R]), st.integers(0, 9000), st.sampled_from(["h:1", "h:2", SCRATCH, "127.0.0.1:0"]),
              st.booleans()),
    st.tuples(st.just("health"), st.sampled_from(["db-1", "db-2", "db-3"]), st.booleans()),
    st.tuples(st.just("tick")),
    st.tuples(st.just("unreachable"), st.sampled_from(["db-1", "db-2", "db-3"])),
), max_size=25)


@settings(max_examples=200)
@given(inputs)
def test_writes_stay_fenced_whatever_happens_while_restoring(events: list[tuple[Any, ...]]) -> None:
    r = restoring()
    now = 1.0
    for ev in events:
        now += 0.1
        if ev[0] == "obs":
            _, tid, role, pos, following, up = ev
            acts = r.observed(tid, Observation(role, pos, following if role is R else None, up), now)
        elif ev[0] == "health":
            acts = r.health(ev[1], ev[2], "x", now)
        elif ev[0] == "unreachable":
            acts = r.observed(ev[1], None, now)
        else:
            acts = r.tick(now)
        assert not of(acts, Promote) and not of(acts, Follow) and not of(acts, Collect)
        assert all(p.primary is None for p in of(acts, Publish))
        assert r.phase is Phase.RESTORING and r.published.primary is None
