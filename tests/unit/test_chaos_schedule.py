"""The fault schedule: seeded exponential arrivals, kind cycling, fixed schedules, target choice."""

from __future__ import annotations

import itertools
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.chaos.schedule import (
    FaultKind,
    PlannedFault,
    exponential_schedule,
    parse_kinds,
    parse_schedule,
    render,
    with_duration,
)

KINDS = list(FaultKind)


def test_same_seed_same_plan_other_seed_other_plan() -> None:
    a = exponential_schedule(mtbf=10, start=5, end=110, kinds=KINDS, seed=42)
    b = exponential_schedule(mtbf=10, start=5, end=110, kinds=KINDS, seed=42)
    c = exponential_schedule(mtbf=10, start=5, end=110, kinds=KINDS, seed=43)
    assert a == b
    assert a != c


def test_arrivals_stay_in_the_window_and_are_increasing() -> None:
    plan = exponential_schedule(mtbf=3, start=5, end=60, kinds=KINDS, seed=1)
    times = [f.at for f in plan]
    assert times == sorted(times)
    assert all(5 < t < 60 for t in times)


def test_gaps_are_exponential_with_the_given_mean() -> None:
    # 20 000 arrivals: the sample mean of exponential gaps is within 3 % of mtbf,
    # and their coefficient of variation is about 1 (an exponential's)
    plan = exponential_schedule(mtbf=2.0, start=0, end=40_000, kinds=[FaultKind.KILL], seed=7)
    gaps = [b.at - a.at for a, b in itertools.pairwise(plan)]
    assert len(gaps) > 19_000
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(2.0, rel=0.03)
    assert statistics.pstdev(gaps) / mean == pytest.approx(1.0, abs=0.03)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(KINDS), min_size=1, max_size=6, unique=True), st.integers(0, 10_000))
def test_every_block_of_len_kinds_holds_each_kind_once(kinds: list[FaultKind], seed: int) -> None:
    plan = exponential_schedule(mtbf=1.0, start=0, end=60, kinds=kinds, seed=seed)
    k = len(kinds)
    for i in range(0, len(plan) - len(plan) % k, k):
        assert sorted(f.kind.value for f in plan[i:i + k]) == sorted(x.value for x in kinds)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.0, 30.0))
def test_only_lasting_faults_have_a_duration_and_picks_are_uniform_draws(seed: int, duration: float) -> None:
    for f in exponential_schedule(mtbf=2, start=0, end=50, kinds=KINDS, seed=seed, duration=duration):
        assert f.duration == (duration if f.kind in (FaultKind.HANG, FaultKind.ERROR, FaultKind.SLOW, FaultKind.NODE,
                                             FaultKind.PARTITION) else 0.0)
        assert 0.0 <= f.pick < 1.0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mtbf must be > 0"):
        exponential_schedule(mtbf=0, start=0, end=10, kinds=KINDS, seed=1)
    with pytest.raises(ValueError, match="no fault kinds"):
        exponential_schedule(mtbf=1, start=0, end=10, kinds=[], seed=1)
    assert exponential_schedule(mtbf=1, start=10, end=10, kinds=KINDS, seed=1) == []


def test_parse_kinds() -> None:
    assert parse_kinds("KILL, hang ,,error") == (FaultKind.KILL, FaultKind.HANG, FaultKind.ERROR)
    with pytest.raises(ValueError, match="unknown fault 'nuke'; valid: kill, hang, error, slow, reset, lb"):
        parse_kinds("kill,nuke")
    with pytest.raises(ValueError, match="no fault kinds given"):
        parse_kinds(" , ")


def test_parse_schedule_sorts_names_targets_and_sets_durations() -> None:
    plan = parse_schedule("40s:error\n10s:kill, 25.5s : hang : web-2, 1m:reset, 500ms:slow", duration=3.0, seed=5)
    assert [(f.at, f.kind.value, f.target, f.duration) for f in plan] == [
        (0.5, "slow", None, 3.0),
        (10.0, "kill", None, 0.0),
        (25.5, "hang", "web-2", 3.0),
        (40.0, "error", None, 3.0),
        (60.0, "reset", None, 0.0),
    ]
    assert plan == parse_schedule("40s:error\n10s:kill, 25.5s : hang : web-2, 1m:reset, 500ms:slow", duration=3.0, seed=5)


@pytest.mark.parametrize("text, message", [
    ("", "the schedule is empty"),
    ("10s", "schedule item '10s': use AT:KIND"),
    ("10s:boom", "unknown fault 'boom'"),
    ("x:kill", "schedule item 'x:kill'"),
])
def test_parse_schedule_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_schedule(text)


def test_choose_is_deterministic_over_sorted_candidates() -> None:
    f = PlannedFault(1.0, FaultKind.KILL, pick=0.0)
    assert f.choose(["web-3", "web-1"]) == "web-1"
    assert PlannedFault(1.0, FaultKind.KILL, pick=0.999).choose(["web-3", "web-1"]) == "web-3"
    assert PlannedFault(1.0, FaultKind.KILL, pick=0.5).choose(["b", "a", "c", "d"]) == "c"
    assert f.choose([]) is None
    named = PlannedFault(1.0, FaultKind.HANG, target="web-2")
    assert named.choose(["web-1", "web-2"]) == "web-2"
    assert named.choose(["web-1"]) is None


@settings(max_examples=100, deadline=None)
@given(st.floats(0.0, 0.999999), st.lists(st.text("abc-123", min_size=1, max_size=5), min_size=1, max_size=8, unique=True))
def test_choose_always_returns_a_candidate(pick: float, candidates: list[str]) -> None:
    assert PlannedFault(0.0, FaultKind.KILL, pick=pick).choose(candidates) in candidates


def test_render_and_with_duration() -> None:
    plan = with_duration([PlannedFault(1.0, FaultKind.HANG), PlannedFault(2.5, FaultKind.LB)], 7.0)
    assert plan[0].duration == 7.0 and plan[1].duration == 0.0
    assert render(plan) == ["  1  at   1.00s  hang a serving target for 7s", "  2  at   2.50s  lb a worker"]
    assert plan[0].to_json() == {"at_s": 1.0, "kind": "hang", "target": None, "duration_s": 7.0}
