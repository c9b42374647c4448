"""The scaling decision: every rule on its own, then properties over random loads, states and noise."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.core.scaling import (
    Candidate,
    Decision,
    Direction,
    Metric,
    Policy,
    Rules,
    Sample,
    ScalingState,
    decide,
    group_value,
    pick_for_scale_in,
    recommend,
)

RPS = Policy(Metric.REQUESTS_PER_TARGET, 400.0)
CPU = Policy(Metric.CPU, 50.0)
LAT = Policy(Metric.P99_LATENCY, 0.25)
FLIGHT = Policy(Metric.IN_FLIGHT_PER_TARGET, 8.0)
RULES = Rules("web", min=2, max=10, policies=(RPS,), tolerance=0.1, scale_in_stabilization=180.0, max_step=4)


def warm(n: int, rps: float = 0.0, *, cpu: float | None = None, p99: float | None = None,
         in_flight: float = 0.0, prefix: str = "w") -> list[Sample]:
    return [Sample(f"{prefix}{i}", True, rps, in_flight, p99, cpu) for i in range(n)]


def cold(n: int, rps: float = 0.0, cpu: float | None = None) -> list[Sample]:
    return [Sample(f"c{i}", False, rps, cpu_percent=cpu) for i in range(n)]


def once(samples: list[Sample], current: int, rules: Rules = RULES, manual: int | None = None,
         state: ScalingState | None = None, now: float = 0.0) -> Decision:
    return decide(rules, state or ScalingState(), now, current, samples, manual)


# --------------------------------------------------------------------------- the HPA rule, one policy


def test_the_reason_names_the_metric_and_its_target() -> None:
    d = once(warm(3, 640), 3)
    assert (d.desired, d.direction) == (5, Direction.OUT)
    assert d.reason == "scale web 3 -> 5: requests_per_target 640/s > target 400/s"


@pytest.mark.parametrize(("rps", "desired"), [
    (440.0, 3),  # ratio 1.1: on the band's edge, holds
    (441.0, 4),  # just outside: ceil(3 x 1.1025) = 4
    (360.0, 3),  # ratio 0.9: on the lower edge, holds
    (359.0, 3),  # just below, but ceil(3 x 0.8975) = 3 instances are still needed
    (250.0, 2),  # ceil(1.875) = 2
    (1200.0, 7),  # 9 wanted, max_step 4 from 3
])
def test_tolerance_band_and_the_proportional_step(rps: float, desired: int) -> None:
    assert once(warm(3, rps), 3).desired == desired


def test_an_exact_multiple_is_not_rounded_up_by_float_error() -> None:
    # 3 x 533.333.../400 = 4.000000000001 in floats: 4 instances, not 5
    assert once(warm(3, 1600 / 3), 3).desired == 4


def test_the_band_holds_with_a_readable_reason() -> None:
    d = once(warm(3, 410), 3)
    assert d.reason == "hold web at 3: requests_per_target 410/s near target 400/s"
    d = once(warm(3, 359), 3)
    assert d.reason == "hold web at 3: requests_per_target 359/s < target 400/s (3 needed)"


def test_warming_instances_count_as_idle_when_scaling_out() -> None:
    # 6 wanted, 2 warm carrying 1000/s each and 4 starting: 2000/s is 5 instances' worth: hold
    d = once(warm(2, 1000) + cold(4), 6)
    assert d.desired == 6
    assert d.reason == ("hold web at 6: requests_per_target 1000/s > target 400/s "
                        "(4 warming up: 5 of the 6 instances busy)")
    # more load than the 6 will carry: out to what the warm ones alone show
    assert once(warm(2, 1400) + cold(4), 6).desired == 7


def test_warming_instances_count_as_on_target_when_scaling_in() -> None:
    # 2 warm at 100/s (0.5 instance) + 2 starting counted as busy: ceil(2.5) = 3
    assert once(warm(2, 100) + cold(2), 4).desired == 3
    # 2 warm at 300/s + 2 starting: (1.5 + 2) / 4 = 0.875 < 0.9 but ceil(3.5) = 4: hold
    assert once(warm(2, 300) + cold(2), 4).desired == 4


def test_the_metrics_of_warming_instances_are_ignored() -> None:
    # the starting instance's CPU spike says nothing about the load
    rules = dataclasses.replace(RULES, policies=(CPU,))
    assert once(warm(2, cpu=50) + cold(1, cpu=400), 3, rules).desired == 3
    assert once(warm(2, cpu=50) + cold(1, cpu=0), 3, rules).desired == 3


def test_no_warm_instance_holds() -> None:
    d = once(cold(3, 5000), 3)
    assert d.desired == 3 and d.reason == "hold web at 3: no metrics from a warm instance yet"
    assert once([], 3).desired == 3


def test_each_metric_is_aggregated_over_warm_instances() -> None:
    s = [Sample("a", True, 300, 2.0, 0.1, 40.0), Sample("b", True, 100, 6.0, 0.5, None),
         Sample("c", False, 900, 50.0, 9.0, 300.0)]
    assert group_value(Metric.REQUESTS_PER_TARGET, s) == (200.0, 2)
    assert group_value(Metric.IN_FLIGHT_PER_TARGET, s) == (4.0, 2)
    assert group_value(Metric.P99_LATENCY, s) == (pytest.approx(0.2), 2)  # weighted by requests
    assert group_value(Metric.CPU, s) == (40.0, 1)  # b's CPU is not measured
    # an idle group has no latency pressure
    assert group_value(Metric.P99_LATENCY, [Sample("a", True, 0.0)]) == (0.0, 1)
    assert group_value(Metric.CPU, [Sample("a", True)]) == (None, 0)


@pytest.mark.parametrize(("policy", "sample", "text"), [
    (RPS, Sample("a", True, 1000), "requests_per_target 1000/s > target 400/s"),
    (CPU, Sample("a", True, cpu_percent=87.5), "cpu 87.5% > target 50%"),
    (LAT, Sample("a", True, 10, p99_latency=0.4), "p99_latency 400ms > target 250ms"),
    (FLIGHT, Sample("a", True, in_flight=12.5), "in_flight_per_target 12.5 > target 8"),
])
def test_every_metric_reads_with_its_unit(policy: Policy, sample: Sample, text: str) -> None:
    r = recommend(policy, [sample], 1, 0.1)
    assert r.direction is Direction.OUT and r.describe() == text


# --------------------------------------------------------------------------- several policies


def test_out_when_any_policy_asks() -> None:
    rules = dataclasses.replace(RULES, policies=(RPS, CPU))
    d = once(warm(3, 400, cpu=90), 3, rules)
    assert d.desired == 6
    assert d.reason == "scale web 3 -> 6: cpu 90% > target 50%"


def test_in_only_when_every_policy_agrees() -> None:
    rules = dataclasses.replace(RULES, policies=(RPS, CPU))
    d = once(warm(6, 100, cpu=50), 6, rules)
    assert d.desired == 6
    assert d.reason == ("hold web at 6: requests_per_target 100/s < target 400/s; cpu 50% near target 50% "
                        "(scale in only when every policy agrees)")
    d = once(warm(6, 100, cpu=25), 6, rules)  # rps asks for 2, cpu for 3: the larger wins
    assert d.desired == 3
    assert d.reason == "scale web 6 -> 3: every policy below target: requests_per_target 100/s < target 400/s; cpu 25% < target 50%"


def test_a_policy_without_data_blocks_scale_in_but_not_scale_out() -> None:
    rules = dataclasses.replace(RULES, policies=(RPS, CPU))
    d = once(warm(6, 100), 6, rules)
    assert d.desired == 6 and "cpu not measured" in d.reason
    assert once(warm(3, 800), 3, rules).desired == 6


def test_latency_scales_out_with_a_load_proportional_companion() -> None:
    rules = dataclasses.replace(RULES, policies=(RPS, LAT))
    d = once(warm(4, 380, p99=0.6), 4, rules)  # rps on target, p99 2.4x over: ceil(4 x 2.4) = 10, step 4
    assert d.desired == 8 and d.reason.startswith("scale web 4 -> 8: p99_latency 600ms > target 250ms")


# --------------------------------------------------------------------------- bounds and step


def test_bounds_are_kept_and_said() -> None:
    d = once(warm(8, 1150), 8)  # wants 23
    assert d.desired == 10
    assert d.reason == "scale web 8 -> 10: requests_per_target 1150/s > target 400/s (wants 23, max 10)"
    d = once(warm(10, 1150), 10)
    assert d.reason == "hold web at 10: requests_per_target 1150/s > target 400/s (at max 10)"
    d = once(warm(2, 10), 2)
    assert d.reason == "hold web at 2: requests_per_target 10/s < target 400/s (at min 2)"


def test_max_step_limits_both_directions() -> None:
    d = once(warm(2, 2000), 2)  # wants 10
    assert d.desired == 6 and d.reason.endswith("(max_step 4 of 10)")
    d = once(warm(10, 40), 10)  # wants 1 -> min 2
    assert d.desired == 6 and d.reason.endswith("(max_step 4 of 2)")


def test_out_of_bounds_is_corrected_at_once_whatever_the_step() -> None:
    rules = dataclasses.replace(RULES, min=5, max_step=1)
    d = once(warm(1, 400), 1, rules)
    assert d.reason == "scale web 1 -> 5: below min 5"
    d = once(warm(12, 400), 12, rules)
    assert d.reason == "scale web 12 -> 10: above max 10: requests_per_target 400/s near target 400/s"
    d = once(cold(1), 1, rules)
    assert d.reason == "scale web 1 -> 5: no metrics from a warm instance yet (below min 5)"


# --------------------------------------------------------------------------- scale-in stabilisation


Load = Callable[[float, int], list[Sample]]


def spread(rps: float) -> Load:
    """A total load of ``rps`` spread evenly over whatever instances the group has (all warm)."""
    return lambda now, current: warm(current, rps / current)


def run(rules: Rules, steps: list[tuple[float, list[Sample] | Load]], current: int,
        manual: dict[float, int | None] | None = None) -> list[Decision]:
    """Evaluate at each time from a group started with ``current``; the count follows the decisions;
    ``manual`` sets the override from a time on."""
    state, out, m = ScalingState.started(steps[0][0], current), [], None
    for now, samples in steps:
        if manual and now in manual:
            m = manual[now]
        d = decide(rules, state, now, current, samples if isinstance(samples, list) else samples(now, current), m)
        state, current = d.state, d.desired
        out.append(d)
    return out


def test_scale_in_waits_for_the_whole_window() -> None:
    steps: list[tuple[float, list[Sample] | Load]] = [(0.0, warm(5, 400))]
    steps += [(float(t), warm(5, 200)) for t in range(10, 200, 10)]
    ds = run(RULES, steps, 5)
    assert [d.desired for d in ds[:-2]] == [5] * (len(ds) - 2)
    assert ds[1].reason.startswith("hold web at 5: scale-in to 3 waits for the 3m stabilisation window "
                                   "(highest recommendation in it: 5)")
    # the 5 of t=0 left the window at t=180 (entries at least 180 s old are gone)
    t180 = next(d for (t, _), d in zip(steps, ds, strict=True) if t == 180.0)
    assert t180.desired == 3 and t180.reason.startswith("scale web 5 -> 3: every policy below target")


def test_scale_in_goes_to_the_highest_recommendation_of_the_window() -> None:
    steps: list[tuple[float, list[Sample] | Load]] = [
        (0.0, warm(5, 400)), (60.0, warm(5, 300)), (120.0, warm(5, 100)), (181.0, warm(5, 100))]
    ds = run(RULES, steps, 5)
    assert [d.desired for d in ds] == [5, 5, 5, 4]  # 4 (t=60) is still in the window at t=181
    assert ds[-1].reason.endswith("(highest recommendation in the last 3m: 4)")


def test_a_spike_restarts_the_wait_and_scale_out_is_immediate() -> None:
    steps: list[tuple[float, list[Sample] | Load]] = [
        (0.0, warm(4, 100)), (100.0, warm(4, 900)), (102.0, warm(9, 200)), (200.0, warm(9, 200)),
        (279.0, warm(9, 200)), (281.0, warm(9, 200))]
    ds = run(RULES, steps, 4)
    # started with 4 (wants 2: waits) -> out to 8 at once (wants 9, max_step 4) -> the 9 of t=100 holds
    # the group until t=280, then it goes to 5, the highest recommendation since
    assert [d.desired for d in ds] == [4, 8, 8, 8, 8, 5]


def test_zero_stabilisation_scales_in_at_once() -> None:
    rules = dataclasses.replace(RULES, scale_in_stabilization=0.0)
    ds = run(rules, [(0.0, warm(5, 400)), (2.0, warm(5, 200))], 5)
    assert [d.desired for d in ds] == [5, 3]


def test_a_fresh_state_remembers_nothing_a_started_one_its_count() -> None:
    assert once(warm(5, 100), 5).desired == 2  # nothing says 5 were needed: as HPA after a restart
    d = once(warm(5, 100), 5, state=ScalingState.started(-10.0, 5), now=0.0)
    assert d.desired == 5 and "waits for the 3m stabilisation window" in d.reason


def test_the_window_state_stays_short() -> None:
    rng = random.Random(7)
    state = ScalingState()
    for i in range(2000):
        state = state.remember(float(i), rng.randint(2, 10), 180.0)
        counts = [c for _, c in state.window]
        assert counts == sorted(set(counts), reverse=True)  # strictly descending: at most one per level
        assert all(t > i - 180.0 - 1e-9 for t, _ in state.window)
    assert repr(ScalingState(((1.0, 5), (2.5, 3)))) == "<ScalingState 5@1 3@2.5>"


# --------------------------------------------------------------------------- manual override


def test_manual_override_is_immediate_bounded_and_then_stabilised() -> None:
    steps: list[tuple[float, list[Sample] | Load]] = [(float(t), spread(1200)) for t in range(0, 400, 20)]
    ds = run(RULES, steps, 3, manual={20.0: 9, 40.0: 50, 60.0: None})
    assert ds[1].reason == "scale web 3 -> 9: manual override 9"  # past max_step: an operator's word
    assert ds[2].desired == 10 and ds[2].reason == "scale web 9 -> 10: manual override 50 (within min..max 2..10)"
    # cleared at t=60: the 10 of t=40 holds the group until t=220, then it shrinks by max_step
    held = [d.desired for (t, _), d in zip(steps, ds, strict=True) if 60 <= t < 220]
    assert set(held) == {10}
    after = [d.desired for (t, _), d in zip(steps, ds, strict=True) if t >= 220]
    assert after[:3] == [6, 3, 3]


def test_manual_override_below_the_load_holds_until_cleared() -> None:
    d = once(warm(3, 2000), 3, manual=2)
    assert d.desired == 2 and d.reason == "scale web 3 -> 2: manual override 2"
    assert once(warm(3, 2000), 3, manual=3).reason == "hold web at 3: manual override 3"


# --------------------------------------------------------------------------- which instances go


def test_pick_for_scale_in() -> None:
    c = [Candidate("w1", 0.0, in_flight=0), Candidate("w2", 5.0, in_flight=3), Candidate("w3", 5.0),
         Candidate("w4", 9.0, warm=False), Candidate("w5", 2.0, in_flight=1)]
    assert pick_for_scale_in(c, 1) == ("w4",)  # still warming: carries nothing yet
    assert pick_for_scale_in(c, 3) == ("w4", "w3", "w2")  # then the newest, fewest in flight first
    assert pick_for_scale_in(c, 3, "least_loaded") == ("w4", "w3", "w1")  # equal in flight: newest
    assert pick_for_scale_in(c, 0) == () and len(pick_for_scale_in(c, 9)) == 5
    ties = [Candidate(f"w{i}", 1.0) for i in (1, 2, 10)]
    assert pick_for_scale_in(ties, 2) == ("w2", "w10")  # by id, the larger first


def test_rules_are_validated() -> None:
    for bad in (dict(min=0), dict(min=5, max=4), dict(policies=()), dict(tolerance=1.0), dict(max_step=0),
                dict(scale_in_stabilization=-1.0)):
        with pytest.raises(ValueError):
            dataclasses.replace(RULES, **bad)
    with pytest.raises(ValueError, match="cpu: the target must be a number above 0"):
        Policy(Metric.CPU, 0.0)


# --------------------------------------------------------------------------- properties

policies = st.sampled_from([RPS, CPU, LAT, FLIGHT])


@st.composite
def rules_st(draw: st.DrawFn) -> Rules:
    lo = draw(st.integers(1, 20))
    return Rules(
        "g", lo, draw(st.integers(lo, 40)),
        tuple(draw(st.lists(policies, min_size=1, max_size=4, unique=True))),
        tolerance=draw(st.sampled_from([0.0, 0.05, 0.1, 0.25])),
        scale_in_stabilization=draw(st.sampled_from([0.0, 10.0, 180.0])),
        max_step=draw(st.integers(1, 8)),
    )


ratios = st.floats(0, 4, allow_nan=False)  # a metric's value as a multiple of its target: around the band


@st.composite
def sample_st(draw: st.DrawFn, i: int) -> Sample:
    p99, cpu = draw(st.none() | ratios), draw(st.none() | ratios)
    return Sample(f"i{i}", draw(st.booleans()), draw(ratios) * RPS.target, draw(ratios) * FLIGHT.target,
                  None if p99 is None else p99 * LAT.target, None if cpu is None else cpu * CPU.target)


@st.composite
def samples_st(draw: st.DrawFn) -> list[Sample]:
    n = draw(st.integers(0, 30))
    return [draw(sample_st(i)) for i in range(n)]


@st.composite
def state_st(draw: st.DrawFn) -> ScalingState:
    state = ScalingState()
    for t in sorted(draw(st.lists(st.floats(0, 300), max_size=8))):
        state = state.remember(t, draw(st.integers(1, 40)), 180.0)
    return state


@given(rules_st(), state_st(), st.integers(1, 60), samples_st(), st.none() | st.integers(1, 60))
def test_never_below_min_or_above_max(rules: Rules, state: ScalingState, current: int, samples: list[Sample],
                                      manual: int | None) -> None:
    d = decide(rules, state, 400.0, current, samples, manual)
    assert rules.min <= d.desired <= rules.max
    assert d.reason.startswith(f"scale g {current} -> {d.desired}: " if d.changed else f"hold g at {current}: ")


@given(rules_st(), state_st(), samples_st(), st.data())
def test_respects_max_step(rules: Rules, state: ScalingState, samples: list[Sample], data: st.DataObject) -> None:
    current = data.draw(st.integers(rules.min, rules.max))
    d = decide(rules, state, 400.0, current, samples)
    assert abs(d.desired - current) <= rules.max_step


def scaled(s: Sample, k: float) -> Sample:
    return dataclasses.replace(
        s, requests_per_s=s.requests_per_s * k, in_flight=s.in_flight * k,
        p99_latency=None if s.p99_latency is None else s.p99_latency * k,
        cpu_percent=None if s.cpu_percent is None else s.cpu_percent * k)


@given(rules_st(), state_st(), st.integers(1, 60), samples_st(), st.floats(1, 4))
def test_monotone_in_load(rules: Rules, state: ScalingState, current: int, samples: list[Sample], k: float) -> None:
    low = decide(rules, state, 400.0, current, samples)
    high = decide(rules, state, 400.0, current, [scaled(s, k) for s in samples])
    assert high.desired >= low.desired


@given(rules_st(), state_st(), st.integers(1, 60), samples_st(), st.data())
def test_warming_instances_metrics_never_matter(rules: Rules, state: ScalingState, current: int,
                                                samples: list[Sample], data: st.DataObject) -> None:
    other = [s if s.warm else dataclasses.replace(data.draw(sample_st(i)), id=s.id, warm=False)
             for i, s in enumerate(samples)]
    a = decide(rules, state, 400.0, current, samples)
    b = decide(rules, state, 400.0, current, other)
    assert (a.desired, a.reason, a.state) == (b.desired, b.reason, b.state)


# ---- no flapping: a simulated group under a constant load with bounded noise


@dataclasses.dataclass
class Instance:
    id: str
    started: float


def simulate(rules: Rules, phases: list[tuple[float, int]], load_of: list[float], noise: float, warmup: float,
             seed: int, start: int, interval: float = 2.0, common: float = 0.0) -> list[tuple[int, Decision]]:
    """Evaluate every ``interval`` through ``phases`` (duration, index into ``load_of``); the group
    follows each decision (new instances warm after ``warmup``, scale-in removes the picked ones).
    Each warm instance reports its share of the load times (1 + c) (1 + e): |c| <= common is the
    same for all at one evaluation, |e| <= noise each its own."""
    rng = random.Random(seed)
    insts = [Instance(f"i{i}", -1e9) for i in range(start)]
    serial, state, now = start, ScalingState.started(0.0, start), 0.0
    out: list[tuple[int, Decision]] = []
    for phase, (duration, which) in enumerate(phases):
        end = now + duration
        while now < end:
            warm_ids = {i.id for i in insts if now - i.started >= warmup}
            load = load_of[which] * RPS.target * (1 + rng.uniform(-common, common))  # requests/s
            samples = [Sample(i.id, i.id in warm_ids,
                              load / len(warm_ids) * (1 + rng.uniform(-noise, noise)) if i.id in warm_ids else 0.0)
                       for i in insts]
            d = decide(rules, state, now, len(insts), samples)
            state = d.state
            if d.desired > len(insts):
                new = d.desired - len(insts)
                insts += [Instance(f"i{serial + k}", now) for k in range(new)]
                serial += new
            elif d.desired < len(insts):
                gone = set(pick_for_scale_in([Candidate(i.id, i.started, i.id in warm_ids) for i in insts],
                                             len(insts) - d.desired))
                insts = [i for i in insts if i.id not in gone]
            out.append((phase, d))
            now += interval
    return out


def direction_changes(directions: list[Direction]) -> int:
    moves = [d for d in directions if d is not Direction.HOLD]
    return sum(1 for a, b in itertools.pairwise(moves) if a is not b)


@st.composite
def noisy_rules(draw: st.DrawFn) -> tuple[Rules, float]:
    lo = draw(st.integers(1, 5))
    tol = draw(st.sampled_from([0.05, 0.1, 0.2]))
    rules = Rules("g", lo, draw(st.integers(lo, 30)), (RPS,), tolerance=tol,
                  scale_in_stabilization=draw(st.sampled_from([20.0, 60.0, 180.0])), max_step=draw(st.integers(1, 6)))
    # noise small enough that its highest and lowest readings stay within one band: (1+e)/(1-e) <= 1+tol
    bound = tol / (2 + tol)
    return rules, draw(st.floats(0, bound * 0.999))


@settings(max_examples=150, deadline=None)
@given(noisy_rules(), st.lists(st.floats(0.2, 40), min_size=1, max_size=4), st.floats(0, 20), st.integers(0, 2**32),
       st.integers(1, 30), st.data())
def test_no_flapping_under_a_constant_load_with_noise(rn: tuple[Rules, float], loads: list[float], warmup: float,
                                                      seed: int, start: int, data: st.DataObject) -> None:
    rules, noise = rn
    phases = [(data.draw(st.sampled_from([60.0, 200.0, 400.0])), i) for i in range(len(loads))]
    trace = simulate(rules, phases, loads, noise, warmup, seed, rules.bound(start))
    for phase in range(len(phases)):
        directions = [d.direction for p, d in trace if p == phase]
        assert direction_changes(directions) <= 1, [(p, d.reason) for p, d in trace if p == phase]
    for _, d in trace:
        assert rules.min <= d.desired <= rules.max


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.5, 30), min_size=1, max_size=3), st.floats(0, 10), st.integers(0, 2**32),
       st.integers(1, 30))
def test_the_stabilisation_window_absorbs_noise_wider_than_the_band(loads: list[float], warmup: float, seed: int,
                                                                     start: int) -> None:
    # +-30% on every reading with a 10% band: the band alone would flap; the highest recommendation of
    # 3 minutes (90 evaluations) has seen the noise's top, so no later reading can ask for more
    rules = Rules("g", 1, 40, (RPS,), tolerance=0.1, scale_in_stabilization=180.0, max_step=4)
    phases = [(600.0, i) for i in range(len(loads))]
    trace = simulate(rules, phases, loads, 0.0, warmup, seed, start, common=0.3)
    for phase in range(len(phases)):
        directions = [d.direction for p, d in trace if p == phase]
        assert direction_changes(directions) <= 1, [(p, d.reason) for p, d in trace if p == phase]


@given(st.floats(0.2, 40), st.integers(1, 30))
def test_a_steady_load_settles_on_what_it_needs(load: float, start: int) -> None:
    rules = dataclasses.replace(RULES, min=1, max=50, scale_in_stabilization=20.0)
    trace = simulate(rules, [(600.0, 0)], [load], 0.0, 4.0, 0, start)
    final = trace[-1][1].desired
    # settled: not above the band, and below it only where ceil(load) instances are still needed
    assert load / final <= 1 + rules.tolerance + 1e-9
    assert load / final >= 1 - rules.tolerance - 1e-9 or final <= max(1, math.ceil(load - 1e-9))
    assert [d.desired for _, d in trace[-20:]] == [final] * 20
