"""The demo backend's fixed per-request cost (the scaling bench's backend), over real loopback connections."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import pytest

from fivenines.runtime.scaling import read_cpu_seconds
from tests.helpers import Demo, http_get


@pytest.fixture
def costly(request: pytest.FixtureRequest) -> Iterator[Demo]:
    d = Demo("demo-cost", *request.param)
    yield d
    d.stop()


def timed(d: Demo, path: str = "/") -> float:
    t0 = time.monotonic()
    status, _ = http_get(d.host, d.port, path)
    assert status == 200
    return time.monotonic() - t0


def concurrently(d: Demo, n: int) -> list[float]:
    with ThreadPoolExecutor(n) as pool:
        return sorted(pool.map(lambda _: timed(d), range(n)))


@pytest.mark.parametrize("costly", [["--cost-ms", "200"]], indirect=True)
def test_one_worker_queues_requests_and_health_skips_the_queue(costly: Demo) -> None:
    with ThreadPoolExecutor(4) as pool:
        queued = [pool.submit(timed, costly) for _ in range(3)]
        wait(queued, timeout=10, return_when=FIRST_COMPLETED)  # the first is done: the other two are queued
        health = timed(costly, "/health")
        took = sorted(f.result() for f in queued)
    # one at a time: the third waited for the two before it
    assert took[0] >= 0.19 and took[2] >= 0.58, took
    assert health < 0.15, health


@pytest.mark.parametrize("costly", [["--cost-ms", "200", "--capacity", "3"]], indirect=True)
def test_capacity_serves_that_many_at_once(costly: Demo) -> None:
    took = concurrently(costly, 3)
    assert took[0] >= 0.19 and took[2] < 0.5, took


@pytest.mark.parametrize("costly", [["--cost-ms", "100", "--burn"]], indirect=True)
def test_burn_spends_the_cost_as_cpu(costly: Demo) -> None:
    before = read_cpu_seconds(costly.proc.pid)
    assert before is not None
    for _ in range(3):
        timed(costly)
    after = read_cpu_seconds(costly.proc.pid)
    assert after is not None and after - before >= 0.28, (before, after)


def test_bad_cost_options_exit_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "fivenines.demo", "--port", "0", "--capacity", "0"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2 and "--capacity >= 1" in proc.stderr
