"""Targets as the data plane sees them: addresses, idle upstream connections, counters.

The controller owns the decisions (who serves); it publishes them here by calling
:meth:`BackendGroup.set_serving`. The proxy asks the group to :meth:`~BackendGroup.pick`
a target per request; the group's balancer (:mod:`fivenines.core.balance`) was
told the serving set when it changed, so a request never allocates routing tables.

A group also carries the per-group policies the proxy applies: retries and their
budget (:mod:`fivenines.core.retry`), stickiness (a load-balancer cookie naming
the target by an opaque token), what the ``hash`` algorithm hashes, and counters.
Observers (the worker pool, in multi-process mode) are told of every change.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from mypy_extensions import mypyc_attr

from fivenines.core.balance import Balancer, make_balancer
from fivenines.core.detect import OutcomeSink
from fivenines.core.retry import RetryBudget, RetryPolicy


class PooledConnection(Protocol):
    idle_since: float

    def is_usable(self) -> bool: ...
    def close(self) -> None: ...


LATENCY_BUCKETS: Final[tuple[float, ...]] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds (seconds) of the per-target latency histogram; a last bucket holds the rest."""


def latency_bucket(seconds: float) -> int:
    """``bisect_left(LATENCY_BUCKETS, seconds)``: the histogram bucket of a latency, searched
    here so that the compiled data plane keeps the float unboxed (one per response).

    >>> latency_bucket(0.0), latency_bucket(0.001), latency_bucket(0.0011), latency_bucket(31.0)
    (0, 0, 1, 14)
    """
    buckets = LATENCY_BUCKETS
    lo, hi = 0, len(buckets)
    while lo < hi:
        mid = (lo + hi) // 2
        if buckets[mid] < seconds:
            lo = mid + 1
        else:
            hi = mid
    return lo


class Backend:
    """One target: where it is, its idle upstream connections and its traffic counters.

    The counters are plain ints and lists incremented in place on the hot path; the
    admin API and ``/metrics`` read them when asked (nothing is allocated per request).
    """

    __slots__ = (
        "address",
        "connections",
        "draining",
        "errors",
        "group",
        "host",
        "id",
        "idle",
        "in_flight",
        "index",
        "latency_counts",
        "latency_sum",
        "max_idle",
        "port",
        "requests",
        "responses",
        "retries",
        "weight",
    )

    def __init__(self, target_id: str, host: str, port: int, group: str = "", max_idle: int = 64,
                 weight: int = 1) -> None:
        self.id = target_id
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.group = group
        self.weight = weight
        self.idle: list[PooledConnection] = []
        self.max_idle = max_idle
        self.index = 0  # position in its group (set by BackendGroup.add): the passive detector's key
        self.in_flight = 0  # HTTP requests or TCP connections now on this target
        self.requests = 0  # attempts sent (HTTP) or connections opened (TCP)
        self.connections = 0  # upstream connections opened
        self.errors = 0
        self.retries = 0  # failed attempts on this target that were retried (elsewhere)
        self.draining = False
        self.responses = [0] * 10  # by status class: responses[2] counts 2xx
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0

    def observe(self, status: int, seconds: float) -> None:
        """A response from this target completed: count its status class and latency."""
        self.responses[status // 100 % 10] += 1
        self.latency_counts[latency_bucket(seconds)] += 1
        self.latency_sum += seconds

    def stats_row(self) -> list[float]:
        """Every counter in one flat row: a worker process sends it, the main one sums them."""
        return [self.requests, self.errors, self.in_flight, self.retries, self.connections,
                *self.responses, *self.latency_counts, self.latency_sum]

    def set_stats_row(self, row: Sequence[float]) -> None:
        n, m = len(self.responses), len(self.latency_counts)
        self.requests, self.errors, self.in_flight, self.retries, self.connections = (int(x) for x in row[:5])
        self.responses = [int(x) for x in row[5:5 + n]]
        self.latency_counts = [int(x) for x in row[5 + n:5 + n + m]]
        self.latency_sum = float(row[5 + n + m])

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

    def put_idle(self, conn: PooledConnection, now: float = 0.0) -> None:
        if len(self.idle) < self.max_idle and not self.draining:
            conn.idle_since = now
            self.idle.append(conn)
        else:
            conn.close()

    def close_idle(self, older_than: float | None = None) -> int:
        """Close pooled connections (all, or those idle since before ``older_than``)."""
        if older_than is None:
            idle, self.idle = self.idle, []
        else:
            idle = [c for c in self.idle if c.idle_since < older_than or not c.is_usable()]
            if not idle:
                return 0
            self.idle = [c for c in self.idle if c not in idle]
        for conn in idle:
            conn.close()
        return len(idle)

    def move_to(self, host: str, port: int) -> None:
        """The target now listens elsewhere (a restarted instance): forget old connections."""
        if (host, port) != (self.host, self.port):
            self.host, self.port, self.address = host, port, f"{host}:{port}"
        self.close_idle()

    def __repr__(self) -> str:
        return f"<Backend {self.id} {self.address} in_flight={self.in_flight} idle={len(self.idle)}>"


@dataclass(frozen=True, slots=True)
class Stickiness:
    cookie: bytes
    duration: float

    def set_cookie(self, token: bytes) -> bytes:
        return b"Set-Cookie: %s=%s; Max-Age=%d; Path=/; HttpOnly\r\n" % (self.cookie, token, int(self.duration))


HashOn = tuple[Literal["header", "cookie", "uri", "ip"], bytes]


def sticky_token(group: str, target_id: str) -> bytes:
    """An opaque, stable cookie value naming a target (the same in every worker).

    >>> sticky_token("web", "web-1") == sticky_token("web", "web-1") != sticky_token("web", "web-2")
    True
    """
    return hashlib.blake2b(f"{group}/{target_id}".encode(), digest_size=8).hexdigest().encode()


_GROUP_COUNTER_FIELDS = ("budget_exhausted", "failed", "requests", "retries")  # (as_dict reads them)


class GroupCounters:
    __slots__ = _GROUP_COUNTER_FIELDS

    def __init__(self) -> None:
        self.requests = 0
        self.retries = 0
        self.failed = 0
        self.budget_exhausted = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in _GROUP_COUNTER_FIELDS}


@mypyc_attr(allow_interpreted_subclasses=True)  # LeaseGuardedGroup extends it
class BackendGroup:
    """A target group: its backends, the ones serving now, and how to pick among them."""

    __slots__ = (
        "_by_token",
        "backends",
        "balancer",
        "budget",
        "clock",
        "counters",
        "hash_on",
        "hedge_delay",
        "name",
        "observe",
        "observers",
        "retry",
        "serving",
        "stickiness",
    )

    def __init__(
        self,
        name: str,
        algorithm: str = "round_robin",
        *,
        slow_start: float = 0.0,
        retry: RetryPolicy | None = None,
        budget_percent: float = 20.0,
        stickiness: Stickiness | None = None,
        hash_on: HashOn | None = None,
        clock: Callable[[], float] = time.monotonic,
        balancer: Balancer[Any] | None = None,
    ) -> None:
        self.name = name
        self.balancer: Balancer[Any] = balancer or make_balancer(algorithm, slow_start)
        self.backends: dict[str, Backend] = {}
        self.serving: list[Backend] = []
        self.retry = retry or RetryPolicy()
        self.budget = RetryBudget(budget_percent)
        self.stickiness = stickiness
        self.hash_on: HashOn | None = hash_on
        if hash_on is None and self.balancer.name == "ip_hash":
            self.hash_on = ("ip", b"")
        self.clock = clock
        self.counters = GroupCounters()
        self.observers: list[Callable[[str, BackendGroup, Any], None]] = []
        # The passive-outcome hook: its record(backend index, core.detect.Outcome, latency, now) is
        # called with every attempt of a real request, on the hot path (a compiled call: no boxing).
        self.observe: OutcomeSink | None = None
        self.hedge_delay: float | None = None  # hedging: send a copy after this (idempotent requests)
        self._by_token: dict[bytes, Backend] = {}

    @classmethod
    def from_spec(cls, name: str, spec: Any, clock: Callable[[], float] = time.monotonic) -> BackendGroup:
        """A group configured from a :class:`~fivenines.spec.TargetGroupSpec` (no backends yet)."""
        sticky = None
        if spec.stickiness is not None and spec.stickiness.enabled:
            sticky = Stickiness(spec.stickiness.cookie_name.encode(), spec.stickiness.duration)
        hash_on: HashOn | None = None
        if spec.algorithm == "hash" and spec.hash_on is not None:
            ho = spec.hash_on
            if ho.header is not None:
                hash_on = ("header", ho.header.lower().encode())
            elif ho.cookie is not None:
                hash_on = ("cookie", ho.cookie.encode())
            else:
                hash_on = ("uri", b"")
        r = spec.retries
        group = cls(
            name,
            spec.algorithm,
            slow_start=spec.slow_start,
            retry=RetryPolicy(r.attempts, r.per_try_timeout),
            budget_percent=r.budget_percent,
            stickiness=sticky,
            hash_on=hash_on,
            clock=clock,
        )
        hedging = getattr(spec, "hedging", None)
        group.hedge_delay = hedging.delay if hedging is not None else None
        return group

    def add(self, backend: Backend) -> Backend:
        backend.group = self.name
        if backend.id not in self.backends:
            backend.index = len(self.backends)
        self.backends[backend.id] = backend
        self._by_token[sticky_token(self.name, backend.id)] = backend
        return backend

    def set_serving(self, ids: Iterable[str]) -> None:
        """Publish the serving set (in a stable order). Backends that left it are not interrupted."""
        self.serving = [self.backends[i] for i in ids]
        for b in self.serving:
            b.draining = False
        self.balancer.set_members(self.serving, self.clock())
        for obs in self.observers:
            obs("serving", self, [b.id for b in self.serving])

    def remove(self, target_id: str) -> Backend | None:
        """Forget a target (a reload removed it, after draining): out of the serving set too."""
        b = self.backends.pop(target_id, None)
        if b is None:
            return None
        self._by_token.pop(sticky_token(self.name, target_id), None)
        if b in self.serving:
            self.set_serving([x.id for x in self.serving if x is not b])
        return b

    def configure_like(self, other: BackendGroup) -> None:
        """Take ``other``'s policies (balancer, retries and budget, stickiness, hashing, hedging), keeping
        this group's backends, serving set and counters: a reload changed the group's settings."""
        self.balancer = other.balancer
        self.retry = other.retry
        self.budget = other.budget
        self.stickiness = other.stickiness
        self.hash_on = other.hash_on
        self.hedge_delay = other.hedge_delay
        self.balancer.set_members(self.serving, self.clock())

    def set_draining(self, target_id: str, draining: bool) -> None:
        b = self.backends[target_id]
        b.draining = draining
        if draining:
            b.close_idle()
        for obs in self.observers:
            obs("draining", self, (target_id, draining))

    def notify(self, what: str, data: Any) -> None:
        for obs in self.observers:
            obs(what, self, data)

    def pick(self, exclude: Sequence[Backend] = (), key: int | None = None,
             sticky: bytes | None = None) -> Backend | None:
        """The target for the next try; a sticky client's own target when it still serves."""
        if sticky is not None:
            b = self._by_token.get(sticky)
            if b is not None and b in self.serving and b not in exclude:
                return b
        bal = self.balancer
        return bal.pick(key, exclude or (), self.clock() if bal.ramping else 0.0)

    def token(self, backend: Backend) -> bytes:
        return sticky_token(self.name, backend.id)

    def __repr__(self) -> str:
        return f"<BackendGroup {self.name} serving={[b.id for b in self.serving]}>"


class FixedGroup:
    """A listener's target-group lookup that always answers one group: a compiled callable, as
    the proxy calls it for every request (a closure would run interpreted).

    >>> g = BackendGroup("web")
    >>> FixedGroup(g)() is g
    True
    """

    __slots__ = ("group",)

    def __init__(self, group: BackendGroup) -> None:
        self.group = group

    def __call__(self) -> BackendGroup:
        return self.group
