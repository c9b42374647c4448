"""Every balancing algorithm, deterministically (injected RNG), with properties by Hypothesis."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.core.balance import (
    ALGORITHMS,
    ConsistentHash,
    IpHash,
    LeastOutstanding,
    PowerOfTwo,
    RoundRobin,
    WeightedRoundRobin,
    key_hash,
    make_balancer,
    ramp,
)


@dataclass(eq=False)
class T:
    id: str
    weight: int = 1
    in_flight: int = 0

    def __repr__(self) -> str:
        return self.id


def members(n: int, **kw: int) -> list[T]:
    return [T(f"t{i}", **kw) for i in range(n)]


def keys(n: int, seed: int = 7) -> list[int]:
    rnd = random.Random(seed)
    return [key_hash(rnd.randbytes(12)) for _ in range(n)]


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_algorithm_handles_empty_and_single_and_exclusion(algorithm: str) -> None:
    b = make_balancer(algorithm, rng=random.Random(1))
    assert b.pick(key=1) is None
    ms = members(3)
    b.set_members(ms[:1], now=0.0)
    assert b.pick(key=1) is ms[0]
    assert b.pick(key=1, exclude=[ms[0]]) is None
    b.set_members(ms, now=0.0)
    for k in keys(50):
        got = b.pick(key=k, exclude=[ms[0], ms[2]])
        assert got is ms[1]


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_algorithm_only_picks_members(algorithm: str) -> None:
    b = make_balancer(algorithm, rng=random.Random(2))
    ms = members(4)
    b.set_members(ms[1:3], now=0.0)
    picks = {b.pick(key=k) for k in keys(200)}
    assert picks <= {ms[1], ms[2]} and len(picks) == 2


def test_unknown_algorithm() -> None:
    with pytest.raises(ValueError, match="valid: round_robin"):
        make_balancer("fastest")


# --------------------------------------------------------------------------- round robin


@given(n=st.integers(1, 10), rounds=st.integers(1, 20))
def test_round_robin_is_exactly_fair(n: int, rounds: int) -> None:
    rr = RoundRobin[T]()
    ms = members(n)
    rr.set_members(ms, 0.0)
    picks = Counter(rr.pick() for _ in range(n * rounds))
    assert all(picks[m] == rounds for m in ms)


def test_round_robin_retry_does_not_move_the_rotation() -> None:
    rr = RoundRobin[T]()
    a, b, c = ms = members(3)
    rr.set_members(ms, 0.0)
    assert rr.pick() is a
    assert rr.pick(exclude=[b]) is c  # a retry skips b...
    assert rr.pick() is b  # ...and the next request still gets b's turn


def test_round_robin_survives_membership_change() -> None:
    rr = RoundRobin[T]()
    ms = members(3)
    rr.set_members(ms, 0.0)
    rr.pick()
    rr.pick()
    rr.pick()
    rr.set_members(ms[:2], 1.0)
    assert [rr.pick() for _ in range(4)].count(ms[0]) == 2


# --------------------------------------------------------------------------- weighted


@given(weights=st.lists(st.integers(0, 20), min_size=1, max_size=8))
def test_smooth_weighted_round_robin_is_exact_over_each_cycle(weights: list[int]) -> None:
    wrr = WeightedRoundRobin[T]()
    ms = [T(f"t{i}", weight=w) for i, w in enumerate(weights)]
    wrr.set_members(ms, 0.0)
    total = sum(weights)
    if total == 0:
        assert wrr.pick() is None  # weight 0: no traffic
        return
    for _ in range(2):
        picks = Counter(wrr.pick() for _ in range(total))
        assert all(picks[m] == m.weight for m in ms)


def test_weighted_round_robin_interleaves() -> None:
    wrr = WeightedRoundRobin[T]()
    a, b = T("a", weight=3), T("b", weight=1)
    wrr.set_members([a, b], 0.0)
    assert [wrr.pick().id for _ in range(8)] == list("aabaaaba")  # type: ignore[union-attr]


def test_weights_only_count_for_weighted_round_robin() -> None:
    rr = RoundRobin[T]()
    rr.set_members([T("a", weight=9), T("b", weight=1)], 0.0)
    assert Counter(rr.pick().id for _ in range(10)) == {"a": 5, "b": 5}  # type: ignore[union-attr]


# --------------------------------------------------------------------------- least outstanding


@given(loads=st.lists(st.integers(0, 50), min_size=1, max_size=10))
def test_least_outstanding_picks_a_least_loaded_member(loads: list[int]) -> None:
    lor = LeastOutstanding[T]()
    ms = [T(f"t{i}", in_flight=x) for i, x in enumerate(loads)]
    lor.set_members(ms, 0.0)
    for _ in range(3):
        assert lor.pick().in_flight == min(loads)  # type: ignore[union-attr]


def test_least_outstanding_ties_go_in_turn_and_load_is_followed() -> None:
    lor = LeastOutstanding[T]()
    ms = members(3)
    lor.set_members(ms, 0.0)
    assert [lor.pick() for _ in range(3)] == ms  # all idle: in turn
    # simulate requests that stay in flight: each pick goes to the least loaded
    for _ in range(30):
        m = lor.pick()
        assert m is not None
        m.in_flight += 1
    assert [m.in_flight for m in ms] == [10, 10, 10]
    ms[1].in_flight = 3
    assert lor.pick() is ms[1]


# --------------------------------------------------------------------------- power of two choices


def test_power_of_two_never_picks_the_most_loaded() -> None:
    p2c = PowerOfTwo[T](rng=random.Random(3))
    ms = [T("a", in_flight=0), T("b", in_flight=5), T("c", in_flight=100)]
    p2c.set_members(ms, 0.0)
    picks = Counter(p2c.pick() for _ in range(3000))
    assert picks[ms[2]] == 0
    # a wins whenever it is drawn (2 of the 3 pairs), b only against c
    assert 0.6 < picks[ms[0]] / 3000 < 0.73 and picks[ms[1]] > 0


def test_power_of_two_spreads_evenly_when_equal() -> None:
    p2c = PowerOfTwo[T](rng=random.Random(4))
    ms = members(4)
    p2c.set_members(ms, 0.0)
    picks = Counter(p2c.pick() for _ in range(8000))
    assert all(1700 < picks[m] < 2300 for m in ms)


def test_power_of_two_is_deterministic_with_a_seeded_rng() -> None:
    def run() -> list[str]:
        b = PowerOfTwo[T](rng=random.Random(42))
        b.set_members(members(5), 0.0)
        return [b.pick().id for _ in range(20)]  # type: ignore[union-attr]

    assert run() == run()


# --------------------------------------------------------------------------- consistent hashing


def owners(b: ConsistentHash[T], ks: list[int]) -> dict[int, str]:
    return {k: b.pick(key=k).id for k in ks}  # type: ignore[union-attr]


@pytest.mark.parametrize("n", [3, 5, 10])
def test_removing_one_of_n_targets_moves_about_one_nth_of_keys(n: int) -> None:
    ring = ConsistentHash[T]()
    ms = members(n)
    ring.set_members(ms, 0.0)
    ks = keys(20000)
    before = owners(ring, ks)
    gone = ms[n // 2]
    ring.set_members([m for m in ms if m is not gone], 1.0)
    after = owners(ring, ks)
    moved = [k for k in ks if before[k] != after[k]]
    # only the keys the removed target owned move, and that is about 1/N of them
    assert all(before[k] == gone.id for k in moved)
    assert sum(1 for k in ks if before[k] == gone.id) == len(moved)
    assert abs(len(moved) / len(ks) - 1 / n) < 0.35 / n, f"moved {len(moved) / len(ks):.3f}, 1/N = {1 / n:.3f}"


def test_adding_a_target_moves_keys_only_to_it() -> None:
    ring = ConsistentHash[T]()
    ms = members(5)
    ring.set_members(ms[:4], 0.0)
    ks = keys(20000)
    before = owners(ring, ks)
    ring.set_members(ms, 1.0)
    after = owners(ring, ks)
    moved = [k for k in ks if before[k] != after[k]]
    assert all(after[k] == ms[4].id for k in moved)
    assert abs(len(moved) / len(ks) - 1 / 5) < 0.07


def test_hash_spreads_keys_evenly_enough() -> None:
    ring = ConsistentHash[T]()
    ring.set_members(members(4), 0.0)
    counts = Counter(owners(ring, keys(40000)).values())
    assert all(7000 < c < 13000 for c in counts.values())


def test_hash_ring_is_the_same_in_every_process_and_order() -> None:
    a, b = ConsistentHash[T](), ConsistentHash[T]()
    ms = members(6)
    a.set_members(ms, 0.0)
    b.set_members(list(reversed([T(m.id) for m in ms])), 0.0)
    ks = keys(500)
    assert owners(a, ks) == owners(b, ks)


def test_key_hash_is_the_same_in_another_process() -> None:
    """Workers must agree on the ring: the hash is blake2b, not Python's salted hash()."""
    import subprocess
    import sys

    code = "from fivenines.core.balance import key_hash; print(key_hash(b'10.1.2.3'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": ""})
    assert int(out.stdout) == key_hash(b"10.1.2.3")


def test_hash_retry_goes_to_the_next_member_and_no_key_falls_back_to_round_robin() -> None:
    ring = IpHash[T]()
    ms = members(3)
    ring.set_members(ms, 0.0)
    k = key_hash(b"192.0.2.7")
    first = ring.pick(key=k)
    second = ring.pick(key=k, exclude=[first])  # type: ignore[list-item]
    assert second is not None and second is not first
    assert ring.pick(key=k, exclude=[first]) is second  # deterministic
    assert [ring.pick() for _ in range(3)] == ms


# --------------------------------------------------------------------------- slow start


def test_ramp_is_linear() -> None:
    assert [ramp(0.0, 10.0, t) for t in (0, 2.5, 5, 10, 11)] == [0.0, 0.25, 0.5, 1.0, 1.0]


def share_of(b: object, new: T, now: float, n: int = 4000, seed: int = 0) -> float:
    ks = keys(n, seed)
    got = 0
    for k in ks:
        m = b.pick(key=k, now=now)  # type: ignore[attr-defined]
        got += m is new
    return got / n


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_slow_start_ramps_a_joining_target_linearly_with_every_algorithm(algorithm: str) -> None:
    b = make_balancer(algorithm, slow_start=100.0, rng=random.Random(5))
    old = members(3)
    new = T("new")
    b.set_members(old, now=0.0)
    b.set_members([*old, new], now=1000.0)
    assert b.ramping
    full = share_of(b, new, now=1000.0 + 100.0)  # the ramp is over: its normal share
    assert not b.ramping
    b.set_members(old, now=2000.0)  # leaves...
    b.set_members([*old, new], now=3000.0)  # ...and rejoins: a new ramp
    at0 = share_of(b, new, now=3000.0)
    half = share_of(b, new, now=3050.0)
    assert abs(full - 0.25) < 0.05
    assert at0 < 0.01
    # at 50% of the ramp, its weight is half: about half its normal share (within noise)
    expected = 0.5 / 3.5 if algorithm in ("round_robin", "weighted_round_robin", "random") else full / 2
    assert abs(half - expected) < 0.04, f"{algorithm}: share at half ramp {half:.3f}, expected ~{expected:.3f}"


def test_slow_start_moves_the_same_keys_as_the_ramp_grows() -> None:
    ring = ConsistentHash[T](slow_start=10.0)
    old = members(3)
    new = T("new")
    ring.set_members(old, 0.0)
    ks = keys(4000)
    ring.set_members([*old, new], 100.0)
    quarter = {k for k in ks if ring.pick(key=k, now=102.5) is new}
    half = {k for k in ks if ring.pick(key=k, now=105.0) is new}
    assert quarter < half  # keys that moved stay moved
    final = {k for k in ks if ring.pick(key=k, now=111.0) is new}
    assert half < final


def test_a_target_joining_an_empty_group_takes_everything_at_once() -> None:
    rr = RoundRobin[T](slow_start=60.0)
    a = T("a")
    rr.set_members([a], 0.0)
    assert not rr.ramping and rr.pick(now=0.0) is a


def test_a_ramping_target_is_still_used_when_it_is_the_only_choice() -> None:
    for algorithm in ALGORITHMS:
        b = make_balancer(algorithm, slow_start=60.0, rng=random.Random(0))
        a, new = T("a"), T("new")
        b.set_members([a], 0.0)
        b.set_members([a, new], 10.0)
        assert b.pick(key=key_hash(b"k"), exclude=[a], now=10.0) is new, algorithm


@settings(max_examples=50)
@given(weights=st.lists(st.integers(1, 10), min_size=2, max_size=5), t=st.floats(0, 1))
def test_slow_start_weighted_share_is_proportional(weights: list[int], t: float) -> None:
    wrr = WeightedRoundRobin[T](slow_start=1.0)
    ms = [T(f"t{i}", weight=w) for i, w in enumerate(weights)]
    wrr.set_members(ms[:-1], 0.0)
    wrr.set_members(ms, 10.0)
    picks = Counter(wrr.pick(now=10.0 + t) for _ in range(2000))
    eff = weights[-1] * t
    expected = eff / (sum(weights[:-1]) + eff)
    assert abs(picks[ms[-1]] / 2000 - expected) < 0.01


def test_repr_shows_members_and_ramp() -> None:
    b = RoundRobin[T](slow_start=5.0)
    b.set_members(members(1), 0.0)
    b.set_members(members(2), 1.0)
    assert repr(b) == "<RoundRobin [t0,t1] ramping=['t1']>"
