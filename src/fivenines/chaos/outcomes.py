"""The outcome of every request of a chaos run, and the availability it adds up to. Pure.

Request ``i`` of an open-loop run at ``rate`` requests/s is *scheduled* at
``i / rate`` seconds after the load starts, whatever happened to the requests
before it. Its latency is counted from that scheduled time, not from when a
connection was free to send it (no coordinated omission: a stalled system shows
as latency, not as fewer requests).

* **valid**: every request sent, except those answered 4xx (a client error is
  not the service's failure) other than 408 and 429 (the service gave up on the
  request, or shed it);
* **good**: valid, answered, with a status below 400;
* **failed** (bad): a 5xx, a 408 or 429, a connect error, a reset or closed
  connection, a timeout, an unparseable response.

Request-based availability is good / valid. Time-based availability is good
seconds / seconds: a second (by scheduled time) is good when at most
``max_error_ratio`` of its valid requests failed (0 by default: none failed).

>>> log = OutcomeLog(rate=4, n=8)
>>> for i in range(8):
...     log.record(i, done=i / 4 + 0.01, status=500 if i == 5 else 200)
>>> log.request_availability()
Proportion(k=7, n=8)
>>> log.time_availability()
Proportion(k=1, n=2)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from fivenines.chaos.stats import Proportion


class Err(IntEnum):
    OK = 0  # an HTTP response arrived (its status tells the rest)
    CONNECT = 1  # could not connect
    RESET = 2  # the connection was reset or closed before a whole response
    TIMEOUT = 3  # no whole response within the client timeout
    PROTOCOL = 4  # the response could not be parsed
    UNSENT = 5  # never sent (the run stopped first)


ERROR_NAMES = {e: e.name.lower() for e in Err}


class OutcomeLog:
    """Per-request outcomes of an open-loop run: completion time, status, error. Times are seconds after start."""

    __slots__ = ("done", "error", "n", "rate", "status")

    def __init__(self, rate: float, n: int) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        self.rate = float(rate)
        self.n = int(n)
        self.done: npt.NDArray[np.float64] = np.full(self.n, np.nan)
        self.status: npt.NDArray[np.int16] = np.zeros(self.n, np.int16)
        self.error: npt.NDArray[np.int8] = np.full(self.n, int(Err.UNSENT), np.int8)

    def scheduled(self, i: int) -> float:
        return i / self.rate

    def record(self, i: int, done: float, status: int = 0, error: Err = Err.OK) -> None:
        """Request ``i`` finished at ``done`` with an HTTP ``status`` (0: none) or an ``error``."""
        self.done[i] = done
        self.status[i] = status
        self.error[i] = int(error)

    # ------------------------------------------------------------------ classification

    @property
    def sched(self) -> npt.NDArray[np.float64]:
        return np.arange(self.n, dtype=np.float64) / self.rate

    @property
    def latency(self) -> npt.NDArray[np.float64]:
        return self.done - self.sched

    def valid_mask(self) -> npt.NDArray[np.bool_]:
        s = self.status
        client_error = (self.error == Err.OK) & (s >= 400) & (s < 500) & (s != 408) & (s != 429)
        out: npt.NDArray[np.bool_] = ~client_error & (self.error != Err.UNSENT)
        return out

    def good_mask(self) -> npt.NDArray[np.bool_]:
        s = self.status
        out: npt.NDArray[np.bool_] = (self.error == Err.OK) & (s > 0) & (s < 400)
        return out

    def failed_mask(self) -> npt.NDArray[np.bool_]:
        return self.valid_mask() & ~self.good_mask()

    def request_availability(self) -> Proportion:
        valid = self.valid_mask()
        return Proportion(int((self.good_mask() & valid).sum()), int(valid.sum()))

    def time_availability(self, bucket: float = 1.0, max_error_ratio: float = 0.0) -> Proportion:
        """Good buckets / buckets with any valid request, by scheduled time."""
        valid, failed = self._per_bucket(bucket)
        has = valid > 0
        good = has & (failed <= max_error_ratio * valid)
        return Proportion(int(good.sum()), int(has.sum()))

    def _per_bucket(self, bucket: float) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        idx = np.floor(self.sched / bucket).astype(np.int64)
        size = int(idx.max()) + 1 if self.n else 0
        valid = np.bincount(idx, weights=self.valid_mask(), minlength=size).astype(np.int64)
        failed = np.bincount(idx, weights=self.failed_mask(), minlength=size).astype(np.int64)
        return valid, failed

    def failure_times(self) -> npt.NDArray[np.float64]:
        """When each failed request failed (completion time; its scheduled time if it never completed), sorted."""
        m = self.failed_mask()
        t = np.where(np.isnan(self.done), self.sched, self.done)[m]
        return np.sort(t)

    def errors_by_kind(self) -> dict[str, int]:
        """Failed requests by cause: ``{"5xx": 3, "reset": 1, ...}`` (only causes that occurred)."""
        out: dict[str, int] = {}
        ok = self.error == Err.OK
        n5 = int((ok & (self.status >= 500)).sum())
        if n5:
            out["5xx"] = n5
        for code in (408, 429):
            c = int((ok & (self.status == code)).sum())
            if c:
                out[str(code)] = c
        for e in Err:
            if e in (Err.OK, Err.UNSENT):
                continue
            c = int((self.error == e).sum())
            if c:
                out[ERROR_NAMES[e]] = c
        return out

    def latency_summary(self) -> dict[str, float | None]:
        """Percentiles of the good requests' latency, in milliseconds."""
        lat = np.sort(self.latency[self.good_mask()])
        if lat.size == 0:
            return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "p999_ms": None, "max_ms": None}
        q = np.percentile(lat, [50, 90, 99, 99.9]) * 1000
        return {"p50_ms": float(q[0]), "p90_ms": float(q[1]), "p99_ms": float(q[2]), "p999_ms": float(q[3]),
                "max_ms": float(lat[-1] * 1000)}

    # ------------------------------------------------------------------ series for the plots

    def series(self, bucket: float = 1.0) -> Series:
        """Per-bucket counts and latency percentiles for the report's plots."""
        sched = self.sched
        size = int(np.floor(sched[-1] / bucket)) + 1 if self.n else 0
        by_sched = np.floor(sched / bucket).astype(np.int64)
        done = self.done
        finished = ~np.isnan(done)
        by_done = np.floor(np.where(finished, done, 0.0) / bucket).astype(np.int64)
        by_done = np.clip(by_done, 0, max(size - 1, 0))
        good = self.good_mask()
        failed = self.failed_mask()
        completed = np.bincount(by_done[finished & good], minlength=size)[:size]
        failed_n = np.bincount(by_sched[failed], minlength=size)[:size]
        sent = np.bincount(by_sched, minlength=size)[:size]
        lat = self.latency
        p50 = np.full(size, np.nan)
        p99 = np.full(size, np.nan)
        order = np.argsort(by_sched, kind="stable")
        keys = by_sched[order]
        bounds = np.searchsorted(keys, np.arange(size + 1))
        lat_sorted = lat[order]
        good_sorted = good[order]
        for b in range(size):
            chunk = lat_sorted[bounds[b]:bounds[b + 1]][good_sorted[bounds[b]:bounds[b + 1]]]
            if chunk.size:
                p50[b], p99[b] = np.percentile(chunk, [50, 99]) * 1000
        return Series(bucket, np.arange(size, dtype=np.float64) * bucket, sent, completed, failed_n, p50, p99)

    def __repr__(self) -> str:
        finished = int((~np.isnan(self.done)).sum())
        return f"<OutcomeLog {self.n} requests at {self.rate:g}/s, {finished} finished, {int(self.failed_mask().sum())} failed>"


@dataclass(frozen=True)
class Series:
    """Per-bucket series: requests sent (scheduled), good responses completed, failures (by schedule), latency."""

    bucket: float
    t: npt.NDArray[np.float64]
    sent: npt.NDArray[np.int64]
    completed: npt.NDArray[np.int64]
    failed: npt.NDArray[np.int64]
    p50_ms: npt.NDArray[np.float64]
    p99_ms: npt.NDArray[np.float64]

    def to_json(self) -> dict[str, Any]:
        def clean(a: npt.NDArray[Any]) -> list[Any]:
            return [None if isinstance(x, float) and x != x else x for x in a.tolist()]

        return {"bucket_s": self.bucket, "t_s": clean(self.t), "sent": clean(self.sent),
                "completed": clean(self.completed), "failed": clean(self.failed),
                "p50_ms": clean(self.p50_ms), "p99_ms": clean(self.p99_ms)}
