"""Hedged requests through the real proxy, against real demo backends on loopback.

These check who answers and that nobody waits for the slow target; the delays are long and
the bounds far from them, so a busy machine cannot blur them. The latencies hedging achieves
are bench/timings_bench.py's to measure."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fivenines.core.detect import OutcomeSink, OutlierDetector, OutlierPolicy
from tests.helpers import Demo, LoopThread, wait_until


class HedgingProxy:
    """A proxy listener over the given demos with hedging (and, optionally, a passive detector)."""

    def __init__(self, demos: list[Demo], delay: float, per_try: float | None = None, outliers: bool = False) -> None:
        from fivenines.core.retry import RetryPolicy
        from fivenines.proxy.backend import Backend, BackendGroup
        from fivenines.proxy.client import http_listener
        from fivenines.proxy.listener import ProxySettings

        self.lt = LoopThread()
        self.group = BackendGroup("web", retry=RetryPolicy(2, per_try), budget_percent=100)
        self.group.hedge_delay = delay
        for i, d in enumerate(demos):
            self.group.add(Backend(f"web-{i + 1}", d.host, d.port))
        self.group.set_serving(list(self.group.backends))
        self.detector: OutlierDetector | None = None
        if outliers:
            det = OutlierDetector(len(demos), OutlierPolicy(consecutive_5xx=1, latency=None))
            self.detector = det

            self.group.observe = OutcomeSink(det, lambda e: None)
        self.listener = http_listener(lambda: self.group, 0, ProxySettings())
        self.lt.call(self.listener.start("127.0.0.1", 0))
        self.host, self.port = self.listener.address

    def request(self, method: str = "GET", path: str = "/") -> tuple[int, str, float]:
        c = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            start = time.monotonic()
            c.request(method, path, body=b"x" if method == "POST" else None)
            r = c.getresponse()
            body = r.read().decode()
            return r.status, body.split()[1] if body.startswith("instance") else body, time.monotonic() - start
        finally:
            c.close()

    def in_flight(self) -> list[int]:
        return [b.in_flight for b in self.group.backends.values()]

    def close(self) -> None:
        self.lt.call(self.listener.drain(1.0))
        for b in self.group.backends.values():
            self.lt.loop.call_soon_threadsafe(b.close_idle)
        self.lt.close()


@pytest.fixture
def two() -> Iterator[list[Demo]]:
    ds = [Demo("slow"), Demo("fast")]
    yield ds
    for d in ds:
        d.stop()


def test_a_slow_target_costs_only_the_hedge_delay(two: list[Demo]) -> None:
    slow = two[0]
    slow.get("/_slow?ms=3000")
    p = HedgingProxy(two, delay=0.05)
    try:
        results = [p.request() for _ in range(8)]
        assert all(status == 200 and inst == "fast" for status, inst, _ in results), results
        assert max(t for _, _, t in results) < 1.5  # none waited for the slow target (3 s)
        assert p.listener.counters.hedges >= 3  # every request first sent to the slow one
        wait_until(lambda: p.in_flight() == [0, 0], 5, what="released attempts")
    finally:
        p.close()


def test_non_idempotent_requests_are_not_hedged(two: list[Demo]) -> None:
    slow, _ = two
    slow.get("/_slow?ms=1000")
    p = HedgingProxy(two, delay=0.05)
    try:
        results = [p.request("POST", "/orders") for _ in range(4)]
        assert all(status == 200 for status, _, _ in results)
        assert p.listener.counters.hedges == 0
        # round robin: two went to the slow target, were answered by it and waited for it
        waited = [t for _, inst, t in results if inst == "slow"]
        assert len(waited) == 2 and min(waited) >= 1.0, results
    finally:
        p.close()


def test_the_first_answer_wins_and_the_slower_attempt_is_dropped(two: list[Demo]) -> None:
    slow, fast = two
    slow.get("/_slow?ms=150")
    fast.get("/_slow?ms=5000")  # the hedge target is slower still
    p = HedgingProxy(two, delay=0.05)
    try:
        status, inst, took = p.request()  # round robin: the first goes to "slow"
        assert (status, inst) == (200, "slow") and took < 3.0  # not the hedge's 5 s
        assert p.listener.counters.hedges == 1
        wait_until(lambda: p.in_flight() == [0, 0], 5, what="the losing attempt released")
    finally:
        p.close()


def test_a_hedge_answering_5xx_is_dropped_while_the_first_attempt_carries_on(two: list[Demo]) -> None:
    slow, fast = two
    slow.get("/_slow?ms=200")
    fast.get("/_fail")
    p = HedgingProxy(two, delay=0.05, outliers=True)
    try:
        status, inst, took = p.request()
        assert (status, inst) == (200, "slow") and took >= 0.2  # the first attempt's own answer
        assert p.listener.counters.hedges == 1
        assert p.detector is not None and p.detector.ejected(1)  # the hedge's 5xx was observed
        wait_until(lambda: p.in_flight() == [0, 0], 5, what="released attempts")
    finally:
        p.close()


def test_hedging_with_per_try_timeout_on_a_hung_target(two: list[Demo]) -> None:
    slow = two[0]
    slow.get("/_hang")
    p = HedgingProxy(two, delay=0.05, per_try=3.0)
    try:
        results: list[Any] = [p.request() for _ in range(6)]
        assert all(s == 200 and i == "fast" for s, i, _ in results)
        assert max(t for _, _, t in results) < 2.0  # never the per-try timeout (3 s): the hedge answered
    finally:
        p.close()
