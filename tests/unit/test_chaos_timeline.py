"""Fault timeline analysis on synthetic event histories (time passed in), and measured → model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.chaos.compare import NEVER, NO_OVERLAP_MTTR, compare, measure_group
from fivenines.chaos.stats import Proportion
from fivenines.chaos.timeline import (
    Ev,
    FaultResult,
    GroupView,
    Injected,
    analyse,
    analyse_all,
    count_between,
    health_changes,
    serving_changes,
    state_intervals,
)
from fivenines.spec import parse_spec

WEB = GroupView("web", active_count=2, standby_count=1, serving0=("web-1", "web-2"))


def serving(t: float, old: str, new: str) -> Ev:
    return Ev(t, "serving", "web", "", old, new, "")


def health(t: float, target: str, old: str, new: str) -> Ev:
    return Ev(t, "health", "web", target, old, new, "")


def kill_history(t: float) -> list[Ev]:
    """fivenines' events for a SIGKILL of web-1 at ``t``: exit noticed at once, standby promoted, restart."""
    return [
        Ev(t + 0.003, "instance", "web", "web-1", "running", "backoff", "exit"),
        health(t + 0.003, "web-1", "healthy", "unhealthy"),
        Ev(t + 0.003, "role", "web", "web-3", "standby", "active", ""),
        serving(t + 0.003, "web-1,web-2", "web-2,web-3"),
        Ev(t + 0.6, "instance", "web", "web-1", "", "running", "started"),
        health(t + 0.6, "web-1", "unhealthy", "initial"),
        health(t + 2.7, "web-1", "initial", "healthy"),
    ]


def test_kill_detection_failover_repair_and_cost() -> None:
    f = Injected(1, "kill", 10.0, "web", "web-1")
    r = analyse(f, WEB, kill_history(10.0), failures=[9.5, 10.001, 10.002, 31.0], horizon=30.0, rate=500)
    assert r.was_serving
    assert r.detection_s == pytest.approx(0.003)
    assert r.failover_s == pytest.approx(0.003)
    assert r.repair_s == pytest.approx(2.7)
    # the failure before the fault and the one after the horizon are not this fault's
    assert (r.failed_requests, r.covered) == (2, False)
    assert r.impact_s == pytest.approx(0.002)
    assert r.exposed_requests == pytest.approx(250 * 0.003)
    js = r.to_json()
    assert js["kind"] == "kill" and js["covered"] is False and js["failed_requests"] == 2


def test_hang_detected_by_checks_failover_when_standby_serves_later() -> None:
    evs = [
        health(21.4, "web-2", "healthy", "unhealthy"),
        serving(21.4, "web-1,web-2", "web-1"),  # out first, the standby still warming up
        serving(21.9, "web-1", "web-1,web-3"),
        health(27.5, "web-2", "unhealthy", "healthy"),
    ]
    f = Injected(2, "hang", 20.0, "web", "web-2", restored_at=25.0)
    r = analyse(f, WEB, evs, failures=[], horizon=40.0, rate=500)
    assert (r.detection_s, r.failover_s, r.repair_s) == (pytest.approx(1.4), pytest.approx(1.9), pytest.approx(7.5))
    assert r.covered and r.notes == ()


def test_slow_target_that_is_never_detected() -> None:
    f = Injected(3, "slow", 5.0, "web", "web-1")
    r = analyse(f, WEB, [], failures=[], horizon=15.0, rate=100)
    assert (r.detection_s, r.failover_s, r.repair_s) == (None, None, None)
    assert r.notes == ("never left the serving set",)
    assert r.exposed_requests == 0.0 and r.covered


def test_passive_ejection_without_a_failed_check_is_repaired_when_it_serves_again() -> None:
    evs = [
        Ev(5.01, "ejection", "web", "web-1", "", "ejected", "3 consecutive 5xx"),
        serving(5.01, "web-1,web-2", "web-2,web-3"),
        serving(15.01, "web-2,web-3", "web-1,web-2"),
    ]
    r = analyse(Injected(4, "error", 5.0, "web", "web-1"), WEB, evs, failures=[5.002], horizon=20.0, rate=500)
    assert r.detection_s == pytest.approx(0.01)
    assert r.repair_s == pytest.approx(10.01)
    assert r.unhealthy_at is None


def test_no_standby_and_not_serving_and_unrepaired() -> None:
    solo = GroupView("web", active_count=2, standby_count=0, serving0=("web-1", "web-2"))
    evs = [health(1.5, "web-1", "healthy", "unhealthy"), serving(1.5, "web-1,web-2", "web-2")]
    r = analyse(Injected(1, "hang", 1.0, "web", "web-1"), solo, evs, [], 10.0, 100)
    assert r.failover_s is None
    assert r.notes == ("no standby to fail over to", "not healthy again before the run ended")
    r = analyse(Injected(2, "kill", 1.0, "web", "web-3"), WEB, [], [], 10.0, 100)
    assert not r.was_serving and r.notes == ("not serving when hit",)


def test_skipped_and_lb_faults() -> None:
    r = analyse(Injected(1, "kill", 1.0, "web", "", skipped="no serving target"), WEB, [], [1.5], 5.0, 100)
    assert r.failed_requests == 0 and r.to_json()["covered"] is None and r.notes == ("no serving target",)
    r = analyse(Injected(2, "lb", 1.0, "web", "worker-2", repaired_at=1.8), WEB, [], [1.2, 1.3], 5.0, 100)
    assert r.repair_s == pytest.approx(0.8) and r.failed_requests == 2 and r.detection_s is None


def test_analyse_all_charges_each_failure_to_the_fault_before_it() -> None:
    evs = [*kill_history(10.0), health(30.6, "web-2", "healthy", "unhealthy"), serving(30.6, "web-2,web-3", "web-1,web-3"), health(36.0, "web-2", "unhealthy", "healthy")]
    faults = [
        Injected(2, "hang", 30.0, "web", "web-2", restored_at=35.0),
        Injected(1, "kill", 10.0, "web", "web-1"),
        Injected(3, "kill", 20.0, "web", "", skipped="the group was not whole again"),
    ]
    rs = analyse_all(faults, {"web": WEB}, list(reversed(evs)), [10.001, 29.0, 30.2, 30.3], end=60.0, rate=500)
    assert [r.fault.id for r in rs] == [1, 3, 2]
    assert [r.failed_requests for r in rs] == [2, 0, 2]
    assert rs[2].detection_s == pytest.approx(0.6)
    assert rs[2].was_serving  # web-2 still served (with web-3) when hit


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(0, 100, allow_nan=False), max_size=50), st.lists(st.floats(1, 99), min_size=1, max_size=6))
def test_every_failure_after_the_first_fault_is_charged_exactly_once(failures: list[float], ats: list[float]) -> None:
    failures = sorted(failures)
    ats = sorted(set(ats))
    faults = [Injected(i, "kill", at, "web", "web-1") for i, at in enumerate(ats)]
    rs = analyse_all(faults, {"web": WEB}, [], failures, end=100.0, rate=100)
    charged = sum(r.failed_requests for r in rs)
    assert charged == sum(1 for t in failures if ats[0] <= t < 100.0)


def test_count_between() -> None:
    assert count_between([], 0, 1) == (0, None, None)
    assert count_between([1.0, 1.0, 2.0], 1.0, 1.5) == (2, 1.0, 1.0)


def test_ev_from_json_converts_wall_time() -> None:
    e = Ev.from_json({"seq": 3, "time": 1_700_000_012.5, "kind": "health", "group": "web", "target": "web-1",
                      "old": "healthy", "new": "unhealthy", "reason": "Target.Timeout", "at": "..."}, 1_700_000_000.0)
    assert e == Ev(12.5, "health", "web", "web-1", "healthy", "unhealthy", "Target.Timeout")
    assert e.to_json()["t_s"] == 12.5


def test_state_intervals_and_changes() -> None:
    evs = kill_history(10.0)
    iv = state_intervals({"web-1": "healthy", "web-2": "healthy"}, health_changes(evs), 0.0, 20.0)
    assert [s for _, _, s in iv["web-1"]] == ["healthy", "unhealthy", "initial", "healthy"]
    assert iv["web-1"][0] == (0.0, 10.003, "healthy") and iv["web-1"][-1][1] == 20.0
    assert iv["web-2"] == [(0.0, 20.0, "healthy")]
    sc = serving_changes(evs, WEB)
    assert sorted(sc) == [(10.003, "web-1", "out"), (10.003, "web-3", "serving")]
    # changes outside the window are clamped; a target first seen in a change starts unknown
    iv = state_intervals({}, [(-5.0, "x", "healthy"), (30.0, "x", "unhealthy")], 0.0, 20.0)
    assert iv == {"x": [(0.0, 20.0, "healthy")]}


# --------------------------------------------------------------------------- measured → model

SPEC = parse_spec({
    "name": "shop",
    "listeners": [{"port": 0, "default_target_group": "web"}],
    "target_groups": {
        "web": {"instances": {"command": ["srv"], "count": 2, "standby": 1},
                "health_check": {"interval": "1s", "timeout": "500ms", "unhealthy_threshold": 2}},
        "api": {"instances": {"command": ["srv"], "count": 1}},
    },
})


def _result(fid: int, kind: str, at: float, det: float | None, rep: float | None, failed: int,
            exposed: float, group: str = "web") -> FaultResult:
    return FaultResult(Injected(fid, kind, at, group, "web-1"), True, None if det is None else at + det,
                       None if det is None else at + det, None, None if rep is None else at + rep,
                       failed, None, None, exposed)


def test_measure_group_aggregates_only_the_groups_injected_faults() -> None:
    rs = [
        _result(1, "kill", 10, 0.01, 2.0, 0, 2.5),
        _result(2, "hang", 20, 2.0, 8.0, 3, 500.0),
        _result(3, "slow", 30, None, None, 0, 0.0),
        _result(4, "kill", 40, 0.01, 3.0, 1, 2.5, group="api"),
        _result(5, "lb", 50, None, 1.0, 9, 0.0),
    ]
    m = measure_group(rs, "web")
    assert m.faults == 3
    assert m.detection.values == (0.01, 2.0) and m.repair.mean == pytest.approx(5.0)
    assert (m.coverage.k, m.coverage.n) == (2, 3)
    assert m.exposure == pytest.approx(3 / 502.5)
    assert m.overrides() == {"mttr": pytest.approx(5.0), "detection_time": pytest.approx(1.005),
                             "exposure": pytest.approx(3 / 502.5)}
    empty = measure_group([], "web")
    assert empty.overrides() == {} and empty.exposure is None


def test_compare_feeds_measured_values_into_the_model() -> None:
    rs = [_result(i, "hang", 10.0 * i, 1.0, 6.0, 1 if i == 3 else 0, 250.0) for i in range(1, 11)]
    c = compare(SPEC, "web", rs, 120.0, Proportion(59_999, 60_000), rate=500.0)
    assert c.run_mtbf == pytest.approx(2 * 120.0 / 10)
    p = c.run_measured.groups["web"].params
    assert (p.mtbf, p.mttr, p.detection_time) == (pytest.approx(24.0), NO_OVERLAP_MTTR, pytest.approx(1.0))
    assert p.exposure == pytest.approx(1 / 2500) and p.standby_mode.value == "cold"
    # the group the load did not reach, and the load balancer (no lb fault), do not fail in the run's model
    assert c.run_measured.groups["api"].params.mtbf == NEVER
    assert c.run_measured.load_balancer.mtbf == NEVER
    # lam x T_detect x exposure is the measured failed share: the bookkeeping closes
    assert 1 - c.run_measured_availability == pytest.approx(1 / 60_000, rel=0.01)
    # as declared: detection 2.5 s and every request to the failed member lost
    assert 1 - c.run_declared_availability == pytest.approx(2.5 / 24.0, rel=0.05)
    # production keeps the spec's mtbf and takes the measured mttr
    prod = c.production_measured.groups["web"].params
    assert prod.mtbf == 30 * 86400 and prod.mttr == pytest.approx(6.0)
    assert c.production_measured.groups["web"].availability > c.production_declared.groups["web"].availability
    js = c.to_json()
    assert js["availability"] == c.run_measured_availability
    assert js["serialised"] is True
    assert [r["quantity"] for r in js["table"]][:3] == ["detection time", "failover time", "repair time (MTTR)"]


def test_compare_with_overlap_keeps_the_measured_mttr_and_lb_faults() -> None:
    rs = [_result(1, "kill", 10, 0.01, 2.0, 0, 2.5), _result(2, "lb", 20, None, 0.5, 4, 0.0)]
    c = compare(SPEC, "web", rs, 60.0, Proportion(29_996, 30_000), rate=500.0, serialised=False)
    assert c.run_measured.groups["web"].params.mttr == pytest.approx(2.0)
    # the worker kill cost 4 requests at 500/s: 8 ms of outage, not the worker's 0.5 s restart
    assert c.lb_mtbf == 60.0 and c.run_measured.load_balancer.mttr == pytest.approx(4 / 500)
    assert c.run_declared.load_balancer.mttr == 60.0  # the model's default for the load balancer
    assert c.to_json()["serialised_note"] is None
    none = compare(SPEC, "web", [], 60.0, Proportion(100, 100), rate=500.0)
    assert none.run_mtbf == NEVER and none.run_measured_availability == pytest.approx(1.0)
