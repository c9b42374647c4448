"""Targets as the data plane sees them: addresses, idle upstream connections, counters.

The controller owns the decisions (who serves); it publishes them here by calling
:meth:`BackendGroup.set_serving`. The proxy only reads ``serving`` and asks the
group's balancer to pick, so a request never allocates routing tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from fivenines.core.balance import Balancer, make_balancer


class PooledConnection(Protocol):
    def is_usable(self) -> bool: ...
    def close(self) -> None: ...


class Backend:
    """One target: where it is, its idle upstream connections and its traffic counters."""

    __slots__ = ("address", "errors", "group", "host", "id", "idle", "in_flight", "max_idle", "port", "requests")

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
