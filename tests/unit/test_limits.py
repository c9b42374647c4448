from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fivenines.core.limits import Admission, RateLimiter


def test_admission_caps_total_and_per_ip() -> None:
    a = Admission(max_total=4, max_per_ip=2)
    assert [a.admit("x") for _ in range(3)] == [True, True, False]
    assert a.admit("y") and a.admit("y") and not a.admit("z")
    assert a.refused == 2
    a.release("x")
    assert a.admit("z")
    a.release("never-admitted")  # harmless
    assert a.total == 4


def test_unlimited_admission() -> None:
    a = Admission(None, None)
    assert all(a.admit("x") for _ in range(1000))


@given(ops=st.lists(st.tuples(st.booleans(), st.sampled_from("abc")), max_size=200))
def test_admission_counts_stay_consistent(ops: list[tuple[bool, str]]) -> None:
    a = Admission(max_total=5, max_per_ip=2)
    held: list[str] = []
    for admit, ip in ops:
        if admit:
            if a.admit(ip):
                held.append(ip)
        elif ip in held:
            held.remove(ip)
            a.release(ip)
        assert a.total == len(held) <= 5
        assert all(a.per_ip.get(i, 0) == held.count(i) <= 2 for i in "abc")


def test_rate_limiter_refills() -> None:
    r = RateLimiter(rate=10.0, burst=5)
    assert sum(r.allow("ip", 0.0) for _ in range(20)) == 5
    assert sum(r.allow("ip", 0.5) for _ in range(20)) == 5  # 0.5 s x 10/s refills 5
    assert r.allow("other", 0.5)
    assert r.limited == 30


def test_rate_limiter_table_is_bounded() -> None:
    r = RateLimiter(rate=1.0, burst=1, max_keys=100)
    for i in range(10_000):
        r.allow(f"10.0.{i // 256}.{i % 256}", float(i))
    assert len(r) == 100


def test_rate_limiter_rejects_bad_config() -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate=0, burst=1)


@given(times=st.lists(st.floats(0, 100), min_size=1, max_size=100), rate=st.floats(0.1, 50), burst=st.integers(1, 20))
def test_never_more_than_burst_plus_rate_times_elapsed(times: list[float], rate: float, burst: int) -> None:
    r = RateLimiter(rate, burst)
    ts = sorted(times)
    allowed = sum(r.allow("k", t) for t in ts)
    assert allowed <= burst + rate * (ts[-1] - ts[0]) + 1e-6
