"""The group scaler: counters in, callbacks out, with a simulated group and no clock."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import pytest

from fivenines.core.health import CheckResult, HealthState
from fivenines.core.pool import Role
from fivenines.core.scaling import Decision
from fivenines.proxy.backend import LATENCY_BUCKETS
from fivenines.runtime.scaling import GroupScaler, Member, members_of, read_cpu_seconds
from fivenines.runtime.targets import GroupRuntime, TargetRuntime
from fivenines.spec import ScalingSpec, parse_spec
from tests.helpers import demo_spec

BUCKETS = len(LATENCY_BUCKETS) + 1


@dataclasses.dataclass
class FakeInstance:
    """An instance's counters, advanced by the test as load arrives."""

    id: str
    started: float
    warm: bool = True
    requests: int = 0
    in_flight: int = 0
    latency: list[int] = dataclasses.field(default_factory=lambda: [0] * BUCKETS)
    pid: int | None = None
    cpu: float = 0.0


class FakeGroup:
    """What the controller would be: actives, their counters, the two callbacks."""

    def __init__(self, n: int) -> None:
        self.instances = [FakeInstance(f"web-{i + 1}", 0.0, pid=1000 + i) for i in range(n)]
        self.serial = n
        self.outs: list[int] = []
        self.ins: list[list[str]] = []
        self.decisions: list[Decision] = []

    def members(self, now: float) -> list[Member]:
        return [Member(i.id, i.warm, i.started, i.requests, i.in_flight, tuple(i.latency), i.pid)
                for i in self.instances]

    def current(self) -> int:
        return len(self.instances)

    def scale_out(self, n: int) -> None:
        self.outs.append(n)
        for _ in range(n):
            self.serial += 1
            self.instances.append(FakeInstance(f"web-{self.serial}", 100.0 + self.serial, warm=False,
                                               pid=1000 + self.serial))

    def scale_in(self, ids: Sequence[str]) -> None:
        self.ins.append(list(ids))
        self.instances = [i for i in self.instances if i.id not in ids]

    def cpu_seconds(self, pid: int) -> float | None:
        return next((i.cpu for i in self.instances if i.pid == pid), None)

    def load(self, rps_each: float, seconds: float, latency_bucket: int = 3, cpu_each: float = 0.0) -> None:
        """Each warm instance serves ``rps_each`` for ``seconds``, in one latency bucket."""
        for i in self.instances:
            if i.warm:
                n = round(rps_each * seconds)
                i.requests += n
                i.latency[latency_bucket] += n
                i.cpu += cpu_each * seconds


def scaler(g: FakeGroup, **spec: Any) -> GroupScaler:
    sc = ScalingSpec.model_validate({"min": 2, "max": 10, "policies": [{"requests_per_target": 400}], **spec})
    return GroupScaler("web", sc, members=g.members, current=g.current, scale_out=g.scale_out,
                       scale_in=g.scale_in, on_decision=g.decisions.append, cpu_seconds=g.cpu_seconds)


def drive(s: GroupScaler, g: FakeGroup, start: float, end: float, rps_each: float, **load: Any) -> None:
    """Sample each second from ``start`` to ``end`` with the load applied in between (no evaluation)."""
    t = start
    while t <= end:
        s.sample(t)
        g.load(rps_each, 1.0, **load)
        t += 1.0


def test_a_spike_scales_out_through_the_callback() -> None:
    g = FakeGroup(2)
    s = scaler(g)
    drive(s, g, 0.0, 6.0, 640)
    d = s.evaluate(6.0)
    assert d.reason == "scale web 2 -> 4: requests_per_target 640/s > target 400/s"
    assert g.outs == [2] and g.current() == 4 and g.decisions == [d]
    # the new two are warming: the same load on the first two does not ask again
    drive(s, g, 7.0, 8.0, 640)
    assert s.evaluate(8.0).reason == ("hold web at 4: requests_per_target 640/s > target 400/s "
                                      "(2 warming up: 3.2 of the 4 instances busy)")
    assert g.outs == [2]


def test_warming_instances_are_not_sampled() -> None:
    g = FakeGroup(3)
    g.instances[2].warm = False
    g.instances[2].requests = 10**9  # whatever it did while starting
    s = scaler(g)
    drive(s, g, 0.0, 6.0, 400)
    assert "web-3" not in s.window.samples
    samples = {x.id: x for x in s.samples(6.0)}
    assert not samples["web-3"].warm and samples["web-1"].warm and samples["web-1"].requests_per_s == 400
    # once warm, its history starts then: two samples later it counts, at its real rate
    g.instances[2].warm = True
    drive(s, g, 7.0, 9.0, 400)
    assert s.samples(9.0)[2].warm and s.samples(9.0)[2].requests_per_s == 400


def test_a_new_split_of_the_load_restarts_every_history() -> None:
    g = FakeGroup(2)
    s = scaler(g)
    drive(s, g, 0.0, 6.0, 800)
    assert s.evaluate(6.0).reason == "scale web 2 -> 4: requests_per_target 800/s > target 400/s"
    drive(s, g, 7.0, 8.0, 800)  # the new two warm up; the old two carry the load
    for i in g.instances[2:]:
        i.warm = True
    drive(s, g, 9.0, 11.0, 400)  # 1600/s over four
    # the old two's 800/s before the split is not averaged in (it would read 533/s and scale out to 6)
    d = s.evaluate(11.0)
    assert d.reason == "hold web at 4: requests_per_target 400/s near target 400/s" and g.outs == [2], d.reason


def test_the_first_evaluation_does_not_scale_in_at_once() -> None:
    g = FakeGroup(6)
    s = scaler(g, scale_in_stabilization="30s")
    drive(s, g, 0.0, 6.0, 100)
    assert "waits for the 30s stabilisation window" in s.evaluate(6.0).reason and g.ins == []
    drive(s, g, 7.0, 37.0, 100)
    d = s.evaluate(37.0)
    assert (d.current, d.desired) == (6, 2) and g.ins == [["web-6", "web-5", "web-4", "web-3"]]
    assert set(s.window.samples) == {"web-1", "web-2"}  # the ones removed are forgotten


def test_scale_in_removes_the_warming_then_the_newest() -> None:
    g = FakeGroup(4)
    s = scaler(g, scale_in_stabilization=0)
    s.evaluate(0.0)  # (seeds the state with 4)
    g.instances[1].warm = False
    drive(s, g, 1.0, 7.0, 100)
    s.evaluate(7.0)
    # 3 warm at 100/s + 1 warming counted on target: ceil(0.75 + 1) = 2; the warming one goes first, then web-4
    assert g.ins == [["web-2", "web-4"]]


def test_cpu_policy_reads_the_processes() -> None:
    g = FakeGroup(2)
    s = scaler(g, policies=[{"cpu": 50}])
    drive(s, g, 0.0, 6.0, 10, cpu_each=0.9)
    d = s.evaluate(6.0)
    assert d.reason == "scale web 2 -> 4: cpu 90% > target 50%"


def test_manual_override_is_bounded_and_cleared() -> None:
    g = FakeGroup(2)
    s = scaler(g)
    assert s.set_manual(50) == 10
    d = s.evaluate(0.0)
    assert d.reason == "scale web 2 -> 10: manual override 10" and g.outs == [8]
    assert s.set_manual(None) is None and s.manual is None
    with pytest.raises(ValueError, match="at least 1"):
        s.set_manual(0)


def test_status_and_repr() -> None:
    g = FakeGroup(2)
    s = scaler(g)
    assert s.status()["reason"] == "not evaluated yet"
    drive(s, g, 0.0, 6.0, 640)
    s.evaluate(6.0)
    st = s.status()
    assert (st["current"], st["desired"], st["min"], st["max"], st["manual"]) == (4, 4, 2, 10, None)
    assert st["metrics"] == [{"metric": "requests_per_target", "target": 400.0, "value": 640.0, "warm": 2}]
    assert repr(s) == ("<GroupScaler web 2..10 current=4 'scale web 2 -> 4: requests_per_target 640/s > "
                       "target 400/s'>")


def test_run_samples_every_second_and_evaluates_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    g = FakeGroup(2)
    s = scaler(g, evaluation_interval="3s", scale_out_window="6s")
    clock = [0.0]
    evaluations: list[float] = []
    real_evaluate = s.evaluate

    def evaluate(now: float) -> Decision:
        evaluations.append(now)
        if now == 6.0:
            raise RuntimeError("a bug in one pass")
        return real_evaluate(now)

    s.evaluate = evaluate  # type: ignore[method-assign]

    async def sleep(seconds: float) -> None:
        g.load(640, seconds)
        clock[0] += seconds
        if clock[0] > 12:
            raise asyncio.CancelledError

    with caplog.at_level(logging.ERROR, "fivenines"), pytest.raises(asyncio.CancelledError):
        asyncio.run(s.run(clock=lambda: clock[0], sleep=sleep))
    assert evaluations == [3.0, 6.0, 9.0, 12.0]
    assert "scaling web: pass failed" in caplog.text  # ... and the next pass ran all the same
    assert g.outs and g.outs[0] == 2


def test_members_of_a_controller_group() -> None:
    spec = parse_spec(demo_spec(count=3, standby=1, slow_start="10s", scaling={"min": 1, "max": 5}))
    g = GroupRuntime("web", spec.target_groups["web"], clock=lambda: 0.0)
    roles = [Role.ACTIVE, Role.ACTIVE, Role.ACTIVE, Role.STANDBY]
    for i, role in enumerate(roles):
        g.add(TargetRuntime(g, i, f"web-{i + 1}", "127.0.0.1", 9000 + i, role, None, 0.0))
    for t in g.targets[:3]:
        for k in range(2):
            t.health.check(CheckResult.passed(), float(k))
    g.targets[2].health.exited(2.0)
    g.backends.set_serving(["web-1", "web-2"])  # web-2 joins later: it ramps from t=5
    g.backends.balancer.joined = {"web-2": 5.0}
    g.targets[0].backend.requests = 7
    at = {m.id: m for m in members_of(g, 12.0)}
    assert set(at) == {"web-1", "web-2", "web-3"}  # the standby is not scaled
    assert at["web-1"].warm and at["web-1"].requests == 7
    assert not at["web-2"].warm  # in slow start until t=15
    assert not at["web-3"].warm and g.targets[2].health.state is HealthState.UNHEALTHY
    assert members_of(g, 15.0)[1].warm


def test_read_cpu_seconds_of_a_real_process() -> None:
    before = read_cpu_seconds(os.getpid())
    assert before is not None
    end = time.process_time() + 0.2  # CPU time, not wall time: the machine may be busy
    while time.process_time() < end:
        pass
    after = read_cpu_seconds(os.getpid())
    assert after is not None and after - before >= 0.18  # (ticks of 10 ms)
    assert read_cpu_seconds(2**22 + 12345) is None


def test_a_reload_changing_scaling_or_load_is_not_held_by_workers() -> None:
    from fivenines.core.reconfig import Running, RunningTarget, UpdateGroup, held_by_workers, plan

    old = parse_spec(demo_spec(count=2, standby=1))
    new = parse_spec(demo_spec(count=2, standby=1, scaling={"min": 1, "max": 4},
                               load={"mean_rps": 1, "peak_rps": 2, "per_instance_rps": 1}))
    roles = (Role.ACTIVE, Role.ACTIVE, Role.STANDBY)
    running = Running({"web": [RunningTarget(f"web-{i + 1}", f"127.0.0.1:{9100 + i}", r, HealthState.HEALTHY, i)
                               for i, r in enumerate(roles)]})
    p = plan(old, new, running)
    assert p.actions == (UpdateGroup("web", ("load", "scaling")),)
    assert held_by_workers(p) == []  # the scaler and the model live in the main process
