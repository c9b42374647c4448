"""The latency histogram's bucket search (proxy.backend.latency_bucket) is bisect_left over
LATENCY_BUCKETS for every latency, boundaries included."""

from __future__ import annotations

from bisect import bisect_left

from hypothesis import given
from hypothesis import strategies as st

from fivenines.proxy.backend import LATENCY_BUCKETS, Backend, latency_bucket


def test_every_boundary_and_its_neighbours() -> None:
    for b in LATENCY_BUCKETS:
        for x in (b, b * 0.999999, b * 1.000001, b - 1e-12, b + 1e-12):
            assert latency_bucket(x) == bisect_left(LATENCY_BUCKETS, x), x
    assert latency_bucket(-1.0) == 0 and latency_bucket(1e9) == len(LATENCY_BUCKETS)


@given(st.floats(min_value=-1.0, max_value=100.0, allow_nan=False))
def test_same_as_bisect_left(x: float) -> None:
    assert latency_bucket(x) == bisect_left(LATENCY_BUCKETS, x)


def test_observe_counts_the_latency_in_its_bucket() -> None:
    b = Backend("web-1", "127.0.0.1", 1)
    for seconds in (0.0005, 0.001, 0.003, 45.0):
        b.observe(200, seconds)
    assert b.latency_counts[0] == 2 and b.latency_counts[2] == 1 and b.latency_counts[-1] == 1
    assert b.responses[2] == 4 and abs(b.latency_sum - 45.0045) < 1e-9
