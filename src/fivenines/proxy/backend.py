"""Targets as the data plane sees them: addresses, idle upstream connections, counters.

The controller owns the decisions (who serves); it publishes them here by calling
:meth:`BackendGroup.set_serving`. The proxy only reads ``serving`` and asks the
group's balancer to pick, so a request never allocates routing tables.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Protocol

from fivenines.core.balance import Balancer, make_balancer


class PooledConnection(Protocol):
    def is_usable(self) -> bool: ...
    def close(self) -> None: ...


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds (seconds) of the per-target latency histogram; a last bucket holds the rest."""


class Backend:
    """One target: where it is, its idle upstream connections and its traffic counters.

    The counters are plain ints and lists incremented in place on the hot path; the
    admin API and ``/metrics`` read them when asked (nothing is allocated per request).
    """

    __slots__ = ("address", "errors", "group", "host", "id", "idle", "in_flight", "latency_counts", "latency_sum",
                 "max_idle", "port", "requests", "responses", "retries", "weight")

    def __init__(self, target_id: str, host: str, port: int, group: str = "", max_idle: int = 64) -> None:
        self.id = target_id
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.group = group
        self.idle: list[PooledConnection] = []
        self.max_idle = max_idle
        self.in_flight = 0
        self.requests = 0
        self.errors = 0
        self.retries = 0  # failed attempts on this target that were retried elsewhere
        self.weight = 1
        self.responses = [0] * 10  # by status class: responses[2] counts 2xx
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0

    def observe(self, status: int, seconds: float) -> None:
        """A response from this target completed: count its status class and latency."""
        self.responses[status // 100 % 10] += 1
        self.latency_counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def responses_by_class(self) -> dict[str, int]:
        return {f"{k}xx": n for k, n in enumerate(self.responses) if 1 <= k <= 5}

    def latency_count(self) -> int:
        return sum(self.latency_counts)

    def take_idle(self) -> PooledConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.is_usable():
                return conn
        return None

    def put_idle(self, conn: PooledConnection) -> None:
        if len(self.idle) < self.max_idle:
            self.idle.append(conn)
        else:
            conn.close()

    def close_idle(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()

    def move_to(self, host: str, port: int) -> None:
        """The target now listens elsewhere (a restarted instance): forget old connections."""
        if (host, port) != (self.host, self.port):
            self.host, self.port, self.address = host, port, f"{host}:{port}"
        self.close_idle()

    def __repr__(self) -> str:
        return f"<Backend {self.id} {self.address} in_flight={self.in_flight} idle={len(self.idle)}>"


class BackendGroup:
    """A target group: its backends, the ones serving now, and how to pick among them."""

    __slots__ = ("backends", "balancer", "name", "serving")

    def __init__(self, name: str, algorithm: str = "round_robin") -> None:
        self.name = name
        self.balancer: Balancer = make_balancer(algorithm)
        self.backends: dict[str, Backend] = {}
        self.serving: list[Backend] = []

    def add(self, backend: Backend) -> Backend:
        backend.group = self.name
        self.backends[backend.id] = backend
        return backend

    def set_serving(self, ids: Iterable[str]) -> None:
        self.serving = [self.backends[i] for i in ids]

    def pick(self, exclude: Sequence[Backend] = (), key: bytes | None = None) -> Backend | None:
        serving = self.serving
        if exclude:
            serving = [b for b in serving if b not in exclude]
        return self.balancer.pick(serving, key)

    def __repr__(self) -> str:
        return f"<BackendGroup {self.name} serving={[b.id for b in self.serving]}>"
