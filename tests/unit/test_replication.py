"""The replicated-store core: election, failover, fencing, switchover, lease; exhaustively and by property."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.core.replication import (
    _TRANSITIONS,
    NOWHERE,
    Action,
    Collect,
    Cut,
    Durability,
    Emit,
    Follow,
    Input,
    MemberView,
    Observation,
    PauseWrites,
    Phase,
    Promote,
    Publish,
    Replication,
    ReplicationError,
    ResumeWrites,
    Settings,
    StoreRole,
    elect,
    lease_valid_until,
)
from fivenines.errors import InvalidTransition

P, R = StoreRole.PRIMARY, StoreRole.REPLICA
MEMBERS = [("db-1", "h:1"), ("db-2", "h:2"), ("db-3", "h:3")]


def prim(pos: int, *replicas: str) -> Observation:
    return Observation(P, pos, replicas=tuple(replicas))


def rep(pos: int, following: str = "h:1", up: bool = True) -> Observation:
    return Observation(R, pos, following, up)


def of(acts: list[Action], kind: type) -> list[Any]:
    return [a for a in acts if isinstance(a, kind)]


def serving_group(**kw: Any) -> Replication:
    """db-1 primary (designated), db-2 and db-3 replicas of it, all observed."""
    r = Replication(MEMBERS, Settings(**kw), designated="db-1")
    r.observed("db-1", prim(100, "h:2", "h:3"), 0.0)
    r.observed("db-2", rep(100), 0.0)
    r.observed("db-3", rep(100), 0.0)
    return r


# --------------------------------------------------------------------------- elect()


def mv(tid: str, order: int, obs: Observation | None, lost: bool = False) -> MemberView:
    return MemberView(tid, f"h:{order + 1}", order, lost=lost, obs=obs)


def test_elect_chooses_the_highest_position_then_member_order() -> None:
    ms = [mv("a", 0, None), mv("b", 1, rep(50)), mv("c", 2, rep(70)), mv("d", 3, rep(70))]
    e = elect(ms, old_primary="a", known_position=70, durability=Durability.ASYNC, max_lag=100)
    assert (e.chosen, e.resume) == ("c", False)
    assert [str(c) for c in e.compared] == ["b@50 eligible (lag 20)", "c@70 chosen (lag 0)", "d@70 eligible (lag 0)"]


def test_elect_never_chooses_a_replica_lagging_beyond_max_lag() -> None:
    ms = [mv("a", 0, None), mv("b", 1, rep(10)), mv("c", 2, rep(20))]
    e = elect(ms, old_primary="a", known_position=1000, durability=Durability.ASYNC, max_lag=500)
    assert e.chosen is None
    assert "lag 980 > max_lag_on_failover 500" in e.describe() and e.reason == "no replica may be promoted"


def test_elect_skips_lost_unreachable_and_primary_reporting_members() -> None:
    ms = [mv("a", 0, None), mv("b", 1, rep(90), lost=True), mv("c", 2, prim(95)), mv("d", 3, None),
          mv("e", 4, rep(80))]
    e = elect(ms, old_primary="a", known_position=90, durability=Durability.ASYNC, max_lag=100)
    assert e.chosen == "e"
    verdicts = {c.id: c.verdict for c in e.compared}
    assert verdicts["b"].startswith("lost") and verdicts["c"].startswith("reports primary")
    assert verdicts["d"] == "unreachable" and "a" not in verdicts


def test_elect_in_sync_mode_refuses_when_a_replica_that_may_hold_acknowledged_writes_is_silent() -> None:
    ms = [mv("a", 0, None), mv("b", 1, None), mv("c", 2, rep(70))]
    kw: dict[str, Any] = dict(old_primary="a", known_position=70, max_lag=1000, must_cover={"b": None, "c": None})
    sync = elect(ms, durability=Durability.SYNC, **kw)
    assert sync.chosen is None and "b unreachable or lost data, and may have held acknowledged writes" in sync.reason
    assert elect(ms, durability=Durability.ASYNC, **kw).chosen == "c"
    # a silent member that was not attached cannot hold acknowledged writes
    assert elect(ms, durability=Durability.SYNC, **{**kw, "must_cover": {"c": None}}).chosen == "c"
    # b detached when the primary was at 70 and c has 70: c covers anything b may have acknowledged
    assert elect(ms, durability=Durability.SYNC, **{**kw, "must_cover": {"b": 70, "c": None}}).chosen == "c"
    blocked = elect(ms, durability=Durability.SYNC, **{**kw, "must_cover": {"b": 71, "c": None}})
    assert blocked.chosen is None and "b (detached at 71)" in blocked.reason


def test_elect_resumes_the_old_primary_only_with_everything_known() -> None:
    ms = [mv("a", 0, prim(100), lost=True), mv("b", 1, rep(90))]
    kw: dict[str, Any] = dict(old_primary="a", durability=Durability.SYNC, max_lag=1000, allow_resume=True)
    assert elect(ms, known_position=100, **kw).chosen == "b"  # answering, but not healthy yet
    ms[0] = mv("a", 0, prim(100))
    e = elect(ms, known_position=100, **kw)
    assert (e.chosen, e.resume) == ("a", True)
    # restarted empty: position below what was known, never resumed
    ms[0] = mv("a", 0, prim(0))
    assert elect(ms, known_position=100, **kw).chosen == "b"


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.one_of(st.none(), st.tuples(st.sampled_from([P, R]), st.integers(0, 200))),
                       st.booleans()), min_size=1, max_size=6),
    st.integers(0, 200), st.integers(0, 150), st.sampled_from(list(Durability)), st.data(),
)
def test_elect_properties(raw: list[Any], known: int, max_lag: int, dur: Durability, data: Any) -> None:
    ms = [mv(f"m{i}", i, Observation(o[0], o[1]) if o else None, lost) for i, (o, lost) in enumerate(raw)]
    must = data.draw(st.dictionaries(st.sampled_from([m.id for m in ms]), st.none()))
    e = elect(ms, old_primary=None, known_position=known, durability=dur, max_lag=max_lag, must_cover=must)
    best = max([known, *(m.obs.position for m in ms if m.obs)])
    ok = [m for m in ms if m.obs and m.obs.role is R and not m.lost and best - m.obs.position <= max_lag]
    blocked = dur is Durability.SYNC and any(m.obs is None or m.obs.role is not R for m in ms if m.id in must)
    if blocked or not ok:
        assert e.chosen is None
    else:
        chosen = next(m for m in ms if m.id == e.chosen)
        assert chosen in ok
        assert chosen.obs is not None and chosen.obs.position == max(m.obs.position for m in ok if m.obs)
        assert chosen.order == min(m.order for m in ok if m.obs and m.obs.position == chosen.obs.position)
    assert e.best_known == best


# --------------------------------------------------------------------------- the machine: serving and failover


def test_designated_primary_is_published_only_once_it_reports_primary() -> None:
    r = Replication(MEMBERS, designated="db-1")
    assert r.phase is Phase.SERVING and r.published == Publish(None, ())
    assert r.observed("db-2", rep(0), 0.0) == []
    acts = r.observed("db-1", prim(0), 0.1)
    assert acts == [Publish("db-1", ())]


def test_failover_stops_routing_first_then_collects_then_promotes_the_most_advanced() -> None:
    r = serving_group()
    acts = r.health("db-1", True, "Target.ProcessExited", 1.0)
    assert acts[:2] == [Publish(None, ()), Cut("db-1", "no longer the primary to route to (now none)")]
    [collect] = of(acts, Collect)
    assert collect.targets == ("db-2", "db-3") and r.phase is Phase.ELECTING
    acts = r.positions(collect.round, {"db-2": rep(120), "db-3": rep(130)}, 1.01)
    [promote] = of(acts, Promote)
    assert (promote.target, promote.epoch, promote.already_primary) == ("db-3", 2, False)
    acts = r.promoted(promote.round, "db-3", True, "", 1.02)
    assert acts[0] == Publish("db-3", ())
    follows = of(acts, Follow)
    assert [(f.target, f.primary, f.fence) for f in follows] == [("db-2", "db-3", False)]
    [ev] = [e for e in of(acts, Emit) if e.kind == "failover"]
    assert (ev.old, ev.new) == ("db-1", "db-3")
    assert "db-2@120 behind 130" in ev.reason and "db-3@130 chosen (lag 0)" in ev.reason
    assert (r.primary, r.epoch, r.phase) == ("db-3", 2, Phase.SERVING)


def test_a_sync_failover_parks_the_replicas_before_comparing_them() -> None:
    """So that none acknowledges a write to the lost primary (a client may still reach it) after
    its position is read: each is detached first (Collect.park), compared parked, and the ones
    not promoted are re-pointed from there."""
    r = serving_group()
    [c] = of(r.health("db-1", True, "timeout", 1.0), Collect)
    assert c.targets == c.park == ("db-2", "db-3")
    parked = "127.0.0.1:0"
    [p] = of(r.positions(c.round, {"db-2": rep(120, parked, up=False), "db-3": rep(130, parked, up=False)}, 1.0),
             Promote)
    assert p.target == "db-3"
    follows = of(r.promoted(p.round, "db-3", True, "", 1.1), Follow)
    assert [(f.target, f.primary) for f in follows] == [("db-2", "db-3")]


def test_a_retried_election_parks_every_member_but_the_old_primary_and_any_reporting_primary() -> None:
    r = serving_group()
    [c] = of(r.health("db-1", True, "timeout", 1.0), Collect)
    acts = r.positions(c.round, {"db-2": None, "db-3": rep(100, "127.0.0.1:0", up=False)}, 1.0)
    assert r.phase is Phase.NO_PRIMARY and not of(acts, Promote)  # db-2 may hold acknowledged writes
    r.observed("db-2", prim(100), 1.5)  # it answers again, as a primary: not parked (it would be demoted)
    [c2] = of(r.tick(2.0), Collect)
    assert c2.targets == ("db-1", "db-2", "db-3") and c2.park == ("db-3",)


def test_an_async_failover_parks_no_one() -> None:
    r = serving_group(durability=Durability.ASYNC)
    [c] = of(r.health("db-1", True, "timeout", 1.0), Collect)
    assert c.targets == ("db-2", "db-3") and c.park == ()


def test_a_replica_the_primary_lists_again_must_answer_even_when_fivenines_cannot_see_it() -> None:
    """Seen detached (bounded at the primary's position then), then listed by the primary again
    while fivenines cannot reach it: it may acknowledge writes beyond the bound, so it must
    answer at a failover (sync) rather than be covered by any replica at the bound."""
    r = serving_group()
    r.observed("db-1", prim(100, "h:3"), 0.5)  # db-2 not listed: bounded at 100
    r.observed("db-2", None, 0.6)  # fivenines cannot reach it
    r.observed("db-1", prim(150, "h:2", "h:3"), 0.7)  # attached again, its own position unknown
    [c] = of(r.health("db-1", True, "timeout", 1.0), Collect)
    acts = r.positions(c.round, {"db-2": None, "db-3": rep(150, "127.0.0.1:0", up=False)}, 1.0)
    assert r.phase is Phase.NO_PRIMARY and not of(acts, Promote)
    assert "db-2 unreachable" in of(acts, Emit)[0].reason


def test_a_demoted_primary_is_not_promoted_before_it_synced_from_the_new_one() -> None:
    """Its own position may be a tail of writes no replica took: until it reports a linked
    replica of the new primary, a later election must not prefer it to a replica holding the
    new term's acknowledged writes."""
    r = serving_group()
    parked = "127.0.0.1:0"
    [c] = of(r.health("db-1", True, "timeout", 1.0), Collect)
    [p] = of(r.positions(c.round, {"db-2": rep(100, parked, up=False), "db-3": rep(100, parked, up=False)}, 1.0),
             Promote)
    r.promoted(p.round, "db-2", True, "", 1.1)
    r.followed("db-3", True, "", 1.1)
    acts = r.observed("db-1", prim(200), 2.0)  # back, still a primary, with a tail no one has
    acts += r.health("db-1", False, "", 2.0)
    [f] = of(acts, Follow)
    assert (f.target, f.fence) == ("db-1", True)
    r.followed("db-1", True, "", 2.1)
    r.observed("db-3", rep(120, "h:2"), 2.2)  # the new term's writes
    [c2] = of(r.health("db-2", True, "timeout", 3.0), Collect)
    acts = r.positions(c2.round, {"db-1": rep(200, parked, up=False), "db-3": rep(120, parked, up=False)}, 3.0)
    assert all(p.target != "db-1" for p in of(acts, Promote))
    assert "db-1@200 restarted: has not synced from a primary since" in of(acts, Emit)[0].reason


def test_a_returning_old_primary_is_fenced_and_never_published() -> None:
    r = serving_group()
    [c] = of(r.health("db-1", True, "timeout", 1.0), Collect)
    [p] = of(r.positions(c.round, {"db-2": rep(100), "db-3": rep(100)}, 1.0), Promote)
    r.promoted(p.round, "db-2", True, "", 1.0)
    r.followed("db-3", True, "", 1.0)
    # db-1 comes back (SIGCONT) still believing it is the primary, and passes checks
    acts = r.observed("db-1", prim(105), 2.0)
    acts += r.health("db-1", False, "", 2.0)
    [f] = of(acts, Follow)
    assert (f.target, f.primary, f.fence) == ("db-1", "db-2", True)
    assert any(e.kind == "fence" for e in of(acts, Emit))
    assert all(pub.primary == "db-2" for pub in of(acts, Publish))
    assert r.published.primary == "db-2"
    # no second fence while the first is in flight
    assert of(r.observed("db-1", prim(105), 2.1), Follow) == []
    r.followed("db-1", True, "", 2.2)
    assert r.observed("db-1", rep(105, "h:2"), 2.3) == []


def test_a_failed_follow_is_retried_only_after_the_member_is_seen_again() -> None:
    r = serving_group()
    r.observed("db-3", rep(100, "h:9"), 1.0)  # follows a stranger
    acts = r.followed("db-3", False, "timeout", 1.1)
    assert of(acts, Follow) == [] and r.members["db-3"].obs is None
    assert len(of(r.observed("db-3", rep(100, "h:9"), 1.2), Follow)) == 1


def test_no_eligible_replica_leaves_no_primary_and_retries_every_interval() -> None:
    r = serving_group(max_lag=10, retry_interval=1.0)
    r.observed("db-1", prim(1000, "h:2", "h:3"), 0.5)
    [c] = of(r.health("db-1", True, "timeout", 1.0), Collect)
    acts = r.positions(c.round, {"db-2": rep(100), "db-3": rep(200)}, 1.0)
    assert r.phase is Phase.NO_PRIMARY and of(acts, Promote) == []
    assert "lag 800 > max_lag_on_failover 10" in of(acts, Emit)[0].reason
    assert r.tick(1.5) == []
    [c2] = of(r.tick(2.0), Collect)
    assert c2.targets == ("db-1", "db-2", "db-3")  # the old primary too: it may be back
    # the old primary answers again but is not healthy yet: not resumed
    acts = r.positions(c2.round, {"db-1": prim(1000), "db-2": rep(100), "db-3": rep(200)}, 2.0)
    assert r.phase is Phase.NO_PRIMARY and of(acts, Promote) == []
    # healthy again with all it had: it stays primary, nothing is lost
    r.health("db-1", False, "", 2.5)
    [c3] = of(r.tick(3.0), Collect)
    acts = r.positions(c3.round, {"db-1": prim(1000), "db-2": rep(100), "db-3": rep(200)}, 3.0)
    [p] = of(acts, Promote)
    assert (p.target, p.already_primary) == ("db-1", True)
    assert r.promoted(p.round, "db-1", True, "", 3.0)[0] == Publish("db-1", ())
    assert (r.phase, r.epoch) == (Phase.SERVING, 2)


def test_sync_mode_waits_for_every_attached_replica() -> None:
    r = serving_group(durability=Durability.SYNC)
    [c] = of(r.health("db-1", True, "killed", 1.0), Collect)
    acts = r.positions(c.round, {"db-2": rep(100), "db-3": None}, 1.0)
    assert r.phase is Phase.NO_PRIMARY and "db-3 unreachable" in of(acts, Emit)[0].reason

    # db-3 restarted empty (no persistence): it answers, but it lost what it had
    [c2] = of(r.tick(2.0), Collect)
    acts = r.positions(c2.round, {"db-1": None, "db-2": rep(100), "db-3": rep(0)}, 2.0)
    assert r.phase is Phase.NO_PRIMARY
    assert "db-3@0 lost data: position went back from 100" in of(acts, Emit)[0].reason
    [c3] = of(r.tick(3.0), Collect)
    [p] = of(r.positions(c3.round, {"db-1": None, "db-2": rep(100), "db-3": rep(101)}, 3.0), Promote)
    assert p.target == "db-3"


def test_async_mode_promotes_without_the_silent_replica() -> None:
    r = serving_group(durability=Durability.ASYNC)
    [c] = of(r.health("db-1", True, "killed", 1.0), Collect)
    [p] = of(r.positions(c.round, {"db-2": rep(100), "db-3": None}, 1.0), Promote)
    assert p.target == "db-2"


def test_failed_promotion_retries_and_stale_results_are_ignored() -> None:
    r = serving_group(durability=Durability.ASYNC)
    [c] = of(r.health("db-1", True, "killed", 1.0), Collect)
    [p] = of(r.positions(c.round, {"db-2": rep(110), "db-3": rep(105)}, 1.0), Promote)
    assert r.positions(c.round, {"db-2": rep(1)}, 1.0) == []  # an old round: ignored
    r.promoted(p.round, "db-2", False, "connection refused", 1.1)
    assert r.phase is Phase.NO_PRIMARY
    assert r.promoted(p.round, "db-2", True, "", 1.2) == []  # late duplicate: ignored
    [c2] = of(r.tick(2.2), Collect)
    [p2] = of(r.positions(c2.round, {"db-1": None, "db-2": None, "db-3": rep(105)}, 2.2), Promote)
    assert p2.target == "db-3" and p2.epoch == 2


def test_a_heartbeat_asked_before_a_promote_or_follow_ended_is_ignored() -> None:
    """Heartbeats run beside the commands: one asked while db-2 was being promoted may answer
    after the promotion with the role from before (a replica of the lost db-1). Taken as news, it
    would start another election at once and, the lost primary restarted empty, leave the group
    with no primary (sync mode cannot rule out that db-1 held acknowledged writes)."""
    r = serving_group()
    [c] = of(r.health("db-1", True, "Target.ProcessExited", 1.0), Collect)
    [p] = of(r.positions(c.round, {"db-2": rep(100), "db-3": rep(100)}, 1.0), Promote)
    [f] = of(r.promoted(p.round, "db-2", True, "", 1.2), Follow)
    assert (f.target, f.primary) == ("db-3", "db-2")
    assert r.observed("db-2", rep(100, "h:1"), 1.3, asked_at=1.1) == []  # asked mid-promotion: stale
    assert r.observed("db-3", rep(100, "h:1"), 1.3, asked_at=1.25) == []  # no second re-point of db-3
    r.followed("db-3", True, "", 1.35)
    assert r.observed("db-3", rep(100, "h:1"), 1.4, asked_at=1.3) == []  # asked before its follow ended
    assert (r.phase, r.primary, r.published.primary) == (Phase.SERVING, "db-2", "db-2")
    assert r.observed("db-2", prim(100, "h:3"), 1.5, asked_at=1.45) == []  # a fresh one is taken
    assert r.members["db-2"].obs == prim(100, "h:3")
    # had the promoted replica really gone back to following db-1, a fresh heartbeat says so
    assert of(r.observed("db-2", rep(100, "h:1"), 1.7, asked_at=1.6), Collect)
    assert r.phase is Phase.ELECTING


def test_primary_reporting_replica_starts_an_election() -> None:
    r = serving_group()
    acts = r.observed("db-1", rep(100, "h:3"), 1.0)
    assert r.phase is Phase.ELECTING and of(acts, Collect)


def test_replica_following_a_stranger_is_re_pointed() -> None:
    r = Replication(MEMBERS, designated="db-1")
    r.observed("db-1", prim(0), 0)
    acts = r.observed("db-2", rep(0, "h:9"), 0)
    [f] = of(acts, Follow)
    assert (f.target, f.primary, f.fence) == ("db-2", "db-1", False)


def test_readers_are_replicas_of_the_primary_within_the_lag_bound() -> None:
    r = serving_group(read_max_lag=50)
    assert r.published.readers == ("db-2", "db-3")
    # db-2 moves ahead: db-3 (100) now lags 90 > 50
    assert r.observed("db-2", rep(190), 0.9) == [Publish("db-1", ("db-2",))]
    assert r.observed("db-1", prim(200, "h:2", "h:3"), 1.0) == []
    assert r.observed("db-3", rep(160), 1.1) == [Publish("db-1", ("db-2", "db-3"))]
    # a replica following someone else serves no reads (it is re-pointed first)
    acts = r.observed("db-2", rep(200, "h:9"), 1.2)
    assert Publish("db-1", ("db-3",)) in acts and of(acts, Follow)


# --------------------------------------------------------------------------- discovery


def test_discovery_waits_for_every_member_then_picks_the_followed_primary() -> None:
    r = Replication(MEMBERS)
    assert r.observed("db-2", prim(0), 0) == []
    assert r.observed("db-3", rep(10, "h:2"), 0) == []
    acts = r.observed("db-1", prim(50), 0)
    [p] = of(acts, Promote)
    assert (p.target, p.already_primary) == ("db-2", True)
    acts = r.promoted(p.round, "db-2", True, "", 0.1)
    assert r.published.primary == "db-2"
    # db-1 also said it was a primary: it is demoted to follow db-2 before it gets any traffic
    [f] = of(acts, Follow)
    assert (f.target, f.primary, f.fence) == ("db-1", "db-2", True)
    assert r.members["db-1"].pending
    assert r.followed("db-1", True, "", 0.2) == []
    m = r.members["db-1"]
    assert not m.pending and m.obs is not None
    assert (m.obs.role, m.obs.following) == (R, "h:2")
    # now a replica of db-2 like db-3: seen as such, nothing more to do, db-2 stays published
    assert r.observed("db-1", rep(50, "h:2"), 0.3) == []
    assert r.published.primary == "db-2" and r.phase is Phase.SERVING


def test_discovery_of_fresh_primaries_picks_highest_position_then_first_and_fences_the_rest() -> None:
    r = Replication(MEMBERS)
    r.observed("db-1", prim(0), 0)
    r.observed("db-2", prim(0), 0)
    acts = r.observed("db-3", None, 0)
    [p] = of(acts, Promote)
    assert p.target == "db-1"
    acts = r.promoted(p.round, "db-1", True, "", 0)
    assert [(f.target, f.fence) for f in of(acts, Follow)] == [("db-2", True)]


def test_discovery_with_nobody_answering_waits() -> None:
    r = Replication(MEMBERS)
    for tid, _ in MEMBERS:
        assert r.observed(tid, None, 0) == []
    assert r.phase is Phase.DISCOVERING and r.tick(5) == []


# --------------------------------------------------------------------------- switchover


def test_switchover_pauses_waits_for_catch_up_promotes_and_demotes() -> None:
    r = serving_group()
    acts = r.request_switchover("db-3", 1.0)
    assert acts[:2] == [Publish(None, ()), Cut("db-1", "switchover to db-3")]
    assert of(acts, PauseWrites) == [PauseWrites("db-1", 10.0)]
    [c] = of(acts, Collect)
    assert c.targets == ("db-1", "db-3")
    [c2] = of(r.positions(c.round, {"db-1": prim(150), "db-3": rep(140)}, 1.01), Collect)
    assert c2.delay > 0
    # the goal is the primary's position right after the pause, not a later one
    [p] = of(r.positions(c2.round, {"db-1": prim(160), "db-3": rep(150)}, 1.02), Promote)
    assert p.target == "db-3"
    acts = r.promoted(p.round, "db-3", True, "", 1.03)
    assert acts[0] == Publish("db-3", ())
    kinds = [type(a) for a in acts]
    assert kinds.index(Follow) < kinds.index(ResumeWrites)
    [f_old] = [f for f in of(acts, Follow) if f.target == "db-1"]
    assert f_old.primary == "db-3"
    assert (r.primary, r.epoch) == ("db-3", 2)


def test_switchover_to_the_best_replica_and_abort_on_timeout() -> None:
    r = serving_group(switchover_timeout=2.0)
    r.observed("db-2", rep(99), 0.5)
    acts = r.request_switchover(None, 1.0)
    assert r.switch is not None and r.switch.target == "db-3"
    [c] = of(acts, Collect)
    r.positions(c.round, {"db-1": prim(150), "db-3": rep(10)}, 1.1)
    acts = r.tick(3.1)
    assert ResumeWrites("db-1") in acts and Publish("db-1", ()) in acts
    assert r.phase is Phase.SERVING and r.primary == "db-1"
    assert "aborted" in of(acts, Emit)[-1].reason


@pytest.mark.parametrize(("to", "message"), [
    ("db-1", "already the primary"), ("db-9", "no target 'db-9'"), ("db-2", "not a healthy replica"),
])
def test_switchover_refusals(to: str, message: str) -> None:
    r = serving_group()
    r.health("db-2", True, "timeout", 0.5) if to == "db-2" else None
    with pytest.raises(ReplicationError, match=message):
        r.request_switchover(to, 1.0)
    assert r.phase is Phase.SERVING


def test_switchover_refused_during_a_failover() -> None:
    r = serving_group()
    r.health("db-1", True, "killed", 1.0)
    with pytest.raises(ReplicationError, match="electing"):
        r.request_switchover(None, 1.0)


def test_primary_lost_during_switchover_turns_into_a_failover() -> None:
    r = serving_group()
    r.request_switchover("db-2", 1.0)
    acts = r.health("db-1", True, "killed", 1.1)
    assert r.phase is Phase.ELECTING and r.switch is None and of(acts, Collect)


# --------------------------------------------------------------------------- lease


def leased(record: tuple[str, int] | None = ("db-1", 4), until: float = 10.0) -> Replication:
    r = Replication(MEMBERS, Settings(leased=True))
    for tid, _ in MEMBERS:
        r.observed(tid, prim(100, "h:2", "h:3") if tid == "db-1" else rep(100), 0.0)
    assert r.published.primary is None and r.phase is Phase.FOLLOWER
    r.acquired(until, record, 0.0)
    return r


def test_a_follower_routes_nothing_and_fences_nothing() -> None:
    r = Replication(MEMBERS, Settings(leased=True))
    acts = [*r.observed("db-1", prim(1), 0), *r.observed("db-2", prim(1), 0), *r.observed("db-3", None, 0)]
    assert acts == [] and r.follow_for_start("db-2") == NOWHERE
    with pytest.raises(ReplicationError, match="lease"):
        r.request_switchover(None, 0)


def test_new_leader_starts_from_the_recorded_primary_and_epoch() -> None:
    r = leased(("db-1", 4))
    assert (r.primary, r.epoch, r.published.primary) == ("db-1", 4, "db-1")
    [c] = of(r.health("db-1", True, "killed", 1.0), Collect)
    [p] = of(r.positions(c.round, {"db-2": rep(100), "db-3": rep(100)}, 1.0), Promote)
    assert p.epoch == 5


def test_leader_steps_down_at_the_deadline_before_doing_anything_else() -> None:
    r = leased(until=10.0)
    assert r.can_act(9.99)
    acts = r.observed("db-2", prim(100), 10.0)  # would be fenced, but the lease ran out
    assert acts[:2] == [Publish(None, ()), Cut("db-1", "no longer the primary to route to (now none)")]
    assert of(acts, Follow) == [] and r.phase is Phase.FOLLOWER
    assert any(e.kind == "lease" and e.new == "follower" for e in of(acts, Emit))


def test_results_of_commands_issued_before_a_step_down_are_ignored() -> None:
    r = leased(until=10.0)
    [c] = of(r.health("db-1", True, "killed", 1.0), Collect)
    [p] = of(r.positions(c.round, {"db-2": rep(100), "db-3": rep(100)}, 1.0), Promote)
    r.lease_lost("keepalive: lease not found", 1.5)
    assert r.promoted(p.round, p.target, True, "", 1.6) == []
    assert r.published.primary is None and r.primary == "db-1"


def test_renewal_extends_the_deadline() -> None:
    r = leased(until=10.0)
    r.renewed(20.0, 9.0)
    assert r.can_act(15.0)
    assert r.tick(15.0) == []


def test_leader_without_record_discovers_and_records() -> None:
    r = leased(record=None)
    assert r.phase is Phase.PROMOTING
    r2 = Replication(MEMBERS, Settings(leased=True))
    r2.observed("db-1", prim(5), 0)
    r2.observed("db-2", rep(5, "h:1"), 0)
    r2.observed("db-3", rep(5, "h:1"), 0)
    acts = r2.acquired(10.0, None, 0.0)
    [p] = of(acts, Promote)
    assert (p.target, p.already_primary, p.epoch) == ("db-1", True, 1)


def test_lease_deadline_arithmetic() -> None:
    assert lease_valid_until(10.0, 8.0) == 16.0
    assert lease_valid_until(10.0, 8.0, margin=0.5) == 17.5


# --------------------------------------------------------------------------- the transition table


def test_every_phase_input_pair_is_handled_or_raises() -> None:
    for phase, inp in itertools.product(Phase, Input):
        if (phase, inp) in _TRANSITIONS:
            continue
        r = serving_group()
        r.phase = phase
        with pytest.raises(InvalidTransition, match=f"Invalid input {inp.value} in state {phase.value}"):
            r._handle(inp, __import__("fivenines.core.replication", fromlist=["_Ev"])._Ev(target="db-1"), 0.0)


def test_positions_of_the_current_round_outside_an_election_is_a_protocol_error() -> None:
    r = serving_group()
    with pytest.raises(InvalidTransition, match="Invalid input positions in state serving"):
        r.positions(r.round, {}, 0.0)


def test_repr_summarises_the_state() -> None:
    assert repr(serving_group()) == "<Replication serving primary=db-1 epoch=1 publishing=db-1 readers=[]>"


def test_a_member_restarted_while_no_primary_is_live_follows_no_one_and_is_not_promoted_empty() -> None:
    r = serving_group(durability=Durability.ASYNC)
    assert r.follow_for_start("db-2") == "h:1"  # a live primary: follow it
    r.observed("db-2", rep(100), 0.5)  # linked again: synced
    [c] = of(r.health("db-1", True, "killed", 1.0), Collect)
    # the old primary restarts (empty) during the election: never as a primary at its old address
    assert r.follow_for_start("db-1") == NOWHERE
    [p] = of(r.positions(c.round, {"db-2": rep(100), "db-3": rep(100)}, 1.0), Promote)
    r.promoted(p.round, p.target, True, "", 1.0)
    # it comes up as a replica of no one, position 0: re-pointed, and never eligible until synced
    acts = r.observed("db-1", Observation(R, 0, "127.0.0.1:0", False), 1.1)
    assert [(f.target, f.fence) for f in of(acts, Follow)] == [("db-1", False)]
    r.health("db-1", False, "", 1.2)
    e = elect(list(r.members.values()), old_primary=None, known_position=0, durability=Durability.ASYNC,
              max_lag=10**9)
    assert "db-1@0 restarted: has not synced from a primary since" in e.describe()


def test_the_position_a_replica_reports_before_its_first_sync_is_not_data_it_lost() -> None:
    # Redis says slave_repl_offset 1 before a replica's first sync and then the primary's
    # offset, 0 for a primary that took no write yet: not a loss (it held nothing); seen as
    # one, it blocked a sync failover until the primary reported again (make test, once)
    r = Replication(MEMBERS, Settings(), designated="db-1")
    assert r.follow_for_start("db-1") is None
    assert [r.follow_for_start(t) for t in ("db-2", "db-3")] == ["h:1", "h:1"]
    r.observed("db-1", prim(0), 0.0)
    for t in ("db-2", "db-3"):
        r.observed(t, rep(1, up=False), 0.1)
        r.observed(t, rep(0), 0.2)
        r.observed(t, rep(50), 0.3)
    [c] = of(r.health("db-1", True, "cut off", 1.0), Collect)
    [p] = of(r.positions(c.round, {"db-2": rep(50), "db-3": rep(50)}, 1.0), Promote)
    assert p.target == "db-2"
    # nor a position a replica held: with no write yet, a failover promotes at 0 (was: "behind 1")
    r = Replication(MEMBERS, Settings(), designated="db-1")
    for t in ("db-1", "db-2", "db-3"):
        r.follow_for_start(t)
    r.observed("db-1", prim(0), 0.0)
    for t in ("db-2", "db-3"):
        r.observed(t, rep(1, up=False), 0.1)
        r.observed(t, rep(0), 0.2)
    [c] = of(r.health("db-1", True, "cut off", 1.0), Collect)
    parked = Observation(R, 0, "127.0.0.1:0", False)
    [p] = of(r.positions(c.round, {"db-2": parked, "db-3": parked}, 1.0), Promote)
    assert p.target == "db-2" and r.replicated_floor == 0
    # once synced, a position that goes back is a loss again
    r2 = serving_group()
    r2.observed("db-2", rep(100, up=False), 0.5)
    r2.observed("db-2", rep(0), 0.6)
    assert r2.members["db-2"].regressed and "db-2" in r2.unbounded


def _pair_whose_replica_died_then_the_primary_blipped(run_id: str) -> tuple[Replication, float]:
    """1+1, sync: the replica dies (the primary then lists it no more), the primary is cut off,
    the election refuses (the replica may hold acknowledged writes), fivenines restarts the
    replica (it follows no one: no primary is live) and the primary comes back as ``run_id``."""
    r = Replication(MEMBERS[:2], Settings(retry_interval=1.0), designated="db-1")
    r.follow_for_start("db-1")
    r.follow_for_start("db-2")
    r.observed("db-1", Observation(P, 100, replicas=("h:2",), incarnation="a"), 0.0)
    r.observed("db-2", rep(100), 0.0)
    r.health("db-2", True, "exited", 0.5)
    r.observed("db-2", None, 0.5)
    r.observed("db-1", Observation(P, 100, incarnation="a"), 0.6)
    [c] = of(r.health("db-1", True, "Target.Timeout", 1.0), Collect)
    [e] = of(r.positions(c.round, {"db-2": None}, 1.0), Emit)
    assert "db-2 (detached at 100)" in e.reason and r.phase is Phase.NO_PRIMARY
    assert r.follow_for_start("db-2") == NOWHERE
    r.health("db-1", False, "", 2.0)
    r.observed("db-1", Observation(P, 100, incarnation=run_id), 2.0)
    return r, 2.0


def test_a_sync_group_whose_replica_died_resumes_the_old_primary_when_it_is_back_unrestarted() -> None:
    # before: no primary ever again (the replica restarted empty cannot sync without a primary,
    # and the primary could not resume while the replica "might hold" writes it has itself)
    r, t = _pair_whose_replica_died_then_the_primary_blipped(run_id="a")
    [c] = of(r.tick(t + 1.1), Collect)
    acts = r.positions(c.round, {"db-1": Observation(P, 100, incarnation="a"), "db-2": Observation(R, 0, "", False)},
                       t + 1.1)
    [p] = of(acts, Promote)
    assert (p.target, p.already_primary) == ("db-1", True)
    assert "not restarted: holds what db-2 (detached at 100) may have acknowledged" in of(acts, Emit)[0].reason
    acts = r.promoted(p.round, "db-1", True, "", t + 1.2)
    assert r.published.primary == "db-1"
    assert [(f.target, f.primary) for f in of(acts, Follow)] == [("db-2", "db-1")]  # the restarted replica


def test_an_old_primary_back_as_a_new_process_is_not_resumed_over_a_missing_replica() -> None:
    r, t = _pair_whose_replica_died_then_the_primary_blipped(run_id="b")  # restarted: its data may be older
    [c] = of(r.tick(t + 1.1), Collect)
    acts = r.positions(c.round, {"db-1": Observation(P, 100, incarnation="b"), "db-2": Observation(R, 0, "", False)},
                       t + 1.1)
    assert of(acts, Promote) == [] and r.phase is Phase.NO_PRIMARY


def test_a_replica_that_lost_data_after_attaching_blocks_a_sync_failover_until_bounded() -> None:
    r = serving_group()
    r.follow_for_start("db-2")  # db-2 restarts: what it acknowledged before is gone
    r.observed("db-2", rep(0), 0.5)
    [c] = of(r.health("db-1", True, "killed", 1.0), Collect)
    acts = r.positions(c.round, {"db-2": rep(0), "db-3": rep(100)}, 1.0)
    assert "db-2 (lost data before the primary could bound it)" in of(acts, Emit)[0].reason
    # had the primary reported once after the restart, db-3 at that position would cover db-2
    r2 = serving_group()
    r2.follow_for_start("db-2")
    r2.observed("db-1", prim(100, "h:3"), 0.6)
    [c2] = of(r2.health("db-1", True, "killed", 1.0), Collect)
    [p2] = of(r2.positions(c2.round, {"db-2": rep(0), "db-3": rep(100)}, 1.0), Promote)
    assert p2.target == "db-3"
