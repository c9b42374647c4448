"""The rolling-restart planner: step by step, and against a simulated group (property-based)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.core.health import HealthState
from fivenines.core.pool import Member, Role, apply_changes, plan_roles, serving
from fivenines.core.rollout import (
    ActionKind,
    RollingRestart,
    RolloutPolicy,
    Step,
    View,
    restart_order,
)

H, U, INIT, D = HealthState.HEALTHY, HealthState.UNHEALTHY, HealthState.INITIAL, HealthState.DRAINING
A, S = Role.ACTIVE, Role.STANDBY
POLICY = RolloutPolicy(active_count=2, deregistration_delay=10.0, slow_start=2.0, stop_timeout=5.0,
                       check_timeout=30.0, cover_timeout=20.0)


def kinds(actions: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(a.kind.value, a.target) for a in actions]


def group(**over: View) -> dict[str, View]:
    g = {"a": View("a", A, H), "b": View("b", A, H), "c": View("c", S, H)}
    g.update(over)
    return g


def test_order_is_standbys_first() -> None:
    assert restart_order(list(group().values())) == ["c", "a", "b"]


def test_one_member_walks_through_every_step() -> None:
    ro = RollingRestart(["a"], POLICY, started_at=0.0)
    g = group()
    # cover: b and c can serve (need 2) -> deregister
    acts = ro.step(list(g.values()), 0.0)
    assert kinds(acts) == [("deregister", "a")] and acts[0].reason == "2 others can serve (need 2)"
    g["a"] = replace(g["a"], state=D, in_flight=3)
    assert ro.step(list(g.values()), 1.0) == [] and ro.step_of("a") is Step.DRAIN
    g["a"] = replace(g["a"], in_flight=0)
    acts = ro.step(list(g.values()), 2.0)
    assert kinds(acts) == [("stop", "a")] and acts[0].reason == "drained"
    assert ro.step(list(g.values()), 3.0) == []
    g["a"] = replace(g["a"], running=False)
    acts = ro.step(list(g.values()), 4.0)
    assert kinds(acts) == [("start", "a")]
    assert ro.step(list(g.values()), 4.5) == [] and ro.step_of("a") is Step.START  # not started yet
    g["a"] = replace(g["a"], running=True, starts=2, state=INIT)
    assert ro.step(list(g.values()), 5.0) == [] and ro.step_of("a") is Step.CHECK
    g["a"] = replace(g["a"], state=H)
    assert ro.step(list(g.values()), 6.0) == [] and ro.step_of("a") is Step.SLOW_START
    acts = ro.step(list(g.values()), 8.0)
    assert kinds(acts) == [("finished", "")] and ro.outcome == "done" and not ro.running
    assert ro.snapshot(9.0)["state"] == "done" and ro.snapshot(9.0)["elapsed_s"] == 8.0
    assert ro.step(list(g.values()), 10.0) == []


def test_drain_is_bounded_by_the_deregistration_delay() -> None:
    ro = RollingRestart(["a"], POLICY, started_at=0.0)
    g = group()
    ro.step(list(g.values()), 0.0)
    g["a"] = replace(g["a"], state=D, in_flight=1)
    assert ro.step(list(g.values()), 9.9) == []
    acts = ro.step(list(g.values()), 10.0)
    assert kinds(acts) == [("stop", "a")]
    assert acts[0].reason == "deregistration_delay 10s reached with 1 in flight"


def test_waits_for_cover_and_gives_up_after_the_cover_timeout() -> None:
    ro = RollingRestart(["a"], POLICY, started_at=0.0)
    g = group(c=View("c", S, U))  # only b can serve besides a: need 2
    assert ro.step(list(g.values()), 0.0) == [] and ro.step_of("a") is Step.COVER
    g["c"] = replace(g["c"], state=H)
    assert kinds(ro.step(list(g.values()), 5.0)) == [("deregister", "a")]
    ro2 = RollingRestart(["a"], POLICY, started_at=0.0)
    g2 = group(c=View("c", S, U))
    ro2.step(list(g2.values()), 0.0)
    acts = ro2.step(list(g2.values()), 20.0)
    assert kinds(acts) == [("aborted", "a")] and ro2.outcome.startswith("failed: a: only 1 other members can serve")


def test_an_unhealthy_member_needs_no_cover() -> None:
    ro = RollingRestart(["a"], POLICY, started_at=0.0)
    g = group(a=View("a", A, U), c=View("c", S, U))
    assert kinds(ro.step(list(g.values()), 0.0)) == [("deregister", "a")]


def test_a_member_that_does_not_pass_checks_stops_the_rollout() -> None:
    ro = RollingRestart(["c", "a", "b"], POLICY, started_at=0.0)
    g = group()
    ro.step(list(g.values()), 0.0)
    g["c"] = replace(g["c"], state=D)
    ro.step(list(g.values()), 0.1)
    g["c"] = replace(g["c"], running=False)
    ro.step(list(g.values()), 0.2)
    g["c"] = replace(g["c"], running=True, starts=2, state=INIT)
    ro.step(list(g.values()), 0.3)
    assert ro.step(list(g.values()), 30.0) == [] and ro.step_of("c") is Step.CHECK
    acts = ro.step(list(g.values()), 30.3)
    assert kinds(acts) == [("aborted", "c")]
    assert ro.outcome == "failed: c did not pass health checks within 30s after its restart"
    assert ro.step_of("a") is Step.WAITING and ro.snapshot(31.0)["state"] == "failed"


def test_a_crash_looping_member_stops_the_rollout_at_once() -> None:
    ro = RollingRestart(["c"], POLICY, started_at=0.0)
    g = group()
    for t, v in ((0.0, g["c"]), (0.1, replace(g["c"], state=D)), (0.2, replace(g["c"], state=D, running=False)),
                 (0.3, replace(g["c"], state=INIT, starts=2))):
        g["c"] = v
        ro.step(list(g.values()), t)
    assert ro.step_of("c") is Step.CHECK
    g["c"] = replace(g["c"], running=False, crash_looping=True)
    acts = ro.step(list(g.values()), 1.0)
    assert kinds(acts) == [("aborted", "c")] and ro.outcome == "failed: c is crash looping after its restart"


def test_removed_member_is_skipped_and_abort_is_idempotent() -> None:
    ro = RollingRestart(["x", "a"], POLICY, started_at=0.0)
    g = group()
    acts = ro.step(list(g.values()), 0.0)
    assert ro.step_of("x") is Step.SKIPPED and kinds(acts) == [("deregister", "a")]
    a = ro.abort(1.0, "operator")
    assert a is not None and a.kind is ActionKind.ABORTED and ro.abort(2.0, "again") is None
    assert "a:failed" in repr(ro)


# --------------------------------------------------------------------------- simulation


@dataclass
class Sim:
    """A group as the runtime would present it: roles follow core.pool after every action."""

    n: int
    members: dict[str, View]
    now: float = 0.0

    def replan(self) -> None:
        ms = [Member(v.id, v.role, v.state, 0.0, i) for i, v in enumerate(self.members.values())]
        roles = apply_changes({v.id: v.role for v in self.members.values()}, plan_roles(ms, self.n))
        for k, v in self.members.items():
            self.members[k] = replace(v, role=roles[k])

    def serving(self) -> list[str]:
        return serving([Member(v.id, v.role, v.state, 0.0, i) for i, v in enumerate(self.members.values())])


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 4),
    m=st.integers(0, 2),
    inflight=st.lists(st.integers(0, 3), min_size=6, max_size=6),
    stop_ticks=st.lists(st.integers(1, 4), min_size=6, max_size=6),
    check_ticks=st.lists(st.integers(1, 6), min_size=6, max_size=6),
)
def test_rollout_against_a_simulated_group(n: int, m: int, inflight: list[int], stop_ticks: list[int],
                                           check_ticks: list[int]) -> None:
    ids = [f"t{i}" for i in range(n + m)]
    sim = Sim(n, {t: View(t, A if i < n else S, H) for i, t in enumerate(ids)})
    pol = RolloutPolicy(active_count=n, deregistration_delay=3.0, slow_start=0.5, stop_timeout=5.0,
                        check_timeout=100.0, cover_timeout=100.0)
    ro = RollingRestart(restart_order(list(sim.members.values())), pol, started_at=0.0)
    pending: dict[str, tuple[str, float]] = {}  # target -> (event, at)
    stopped: list[str] = []
    min_serving = n
    for tick in range(400):
        sim.now = tick * 0.5
        # the world moves: in-flight requests finish, processes stop and start, checks pass
        for t, v in list(sim.members.items()):
            i = ids.index(t)
            if v.state is D and v.in_flight:
                sim.members[t] = replace(v, in_flight=v.in_flight - 1)
            ev = pending.get(t)
            if ev and sim.now >= ev[1]:
                del pending[t]
                if ev[0] == "exit":
                    sim.members[t] = replace(sim.members[t], running=False)
                elif ev[0] == "healthy":
                    sim.members[t] = replace(sim.members[t], state=H)
                    sim.replan()
            del i
        for a in ro.step(list(sim.members.values()), sim.now):
            v = sim.members.get(a.target)
            if a.kind is ActionKind.DEREGISTER:
                assert v is not None
                # only one member is ever out for the rollout
                assert all(x.state is H for x in sim.members.values() if x.id != a.target)
                sim.members[a.target] = replace(v, state=D, in_flight=inflight[ids.index(a.target)])
                sim.replan()
            elif a.kind is ActionKind.STOP:
                assert v is not None and (v.in_flight == 0 or "deregistration_delay" in a.reason)
                stopped.append(a.target)
                pending[a.target] = ("exit", sim.now + 0.5 * stop_ticks[ids.index(a.target)])
            elif a.kind is ActionKind.START:
                assert v is not None and not v.running
                sim.members[a.target] = replace(v, running=True, starts=v.starts + 1, state=INIT)
                pending[a.target] = ("healthy", sim.now + 0.5 * check_ticks[ids.index(a.target)])
        min_serving = min(min_serving, len(sim.serving()))
        if not ro.running:
            break
    assert ro.outcome == "done", ro
    # every member restarted exactly once, standbys first
    assert stopped == restart_order([View(t, A if i < n else S, H) for i, t in enumerate(ids)])
    assert all(v.starts == 2 and v.state is H and v.running for v in sim.members.values())
    # with a standby the group never dropped below N serving actives; without one, below N-1
    assert min_serving >= (n if m >= 1 else n - 1)
