"""Admission limits for a listener: concurrent connections and request rate per client. Pure.

* :class:`Admission` caps concurrent connections per listener and per client IP;
  a connection over a cap is refused at once, so a flood degrades into refused
  new connections while established clients keep being served.
* :class:`RateLimiter` is a token bucket per client IP (``rate`` requests/s,
  ``burst`` at once); over the rate a request is answered 429. The table of
  buckets is bounded: idle (full) buckets are dropped first, so a flood of
  source addresses cannot grow memory without bound.

Time is an argument everywhere.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


class Admission:
    """Concurrent connections, in all and per client address.

    >>> a = Admission(max_total=3, max_per_ip=2)
    >>> [a.admit("10.0.0.1"), a.admit("10.0.0.1"), a.admit("10.0.0.1"), a.admit("10.0.0.2")]
    [True, True, False, True]
    >>> a.admit("10.0.0.3")
    False
    >>> a.release("10.0.0.1"); a.admit("10.0.0.3")
    True
    """

    __slots__ = ("max_per_ip", "max_total", "per_ip", "refused", "total")

    def __init__(self, max_total: int | None, max_per_ip: int | None) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self.per_ip: dict[str, int] = {}
        self.refused = 0

    def admit(self, ip: str) -> bool:
        if self.max_total is not None and self.total >= self.max_total:
            self.refused += 1
            return False
        n = self.per_ip.get(ip, 0)
        if self.max_per_ip is not None and n >= self.max_per_ip:
            self.refused += 1
            return False
        self.total += 1
        self.per_ip[ip] = n + 1
        return True

    def release(self, ip: str) -> None:
        n = self.per_ip.get(ip, 0)
        if n <= 0:
            return
        self.total -= 1
        if n == 1:
            del self.per_ip[ip]
        else:
            self.per_ip[ip] = n - 1

    def __repr__(self) -> str:
        return f"<Admission total={self.total}/{self.max_total} ips={len(self.per_ip)} refused={self.refused}>"


@dataclass(slots=True)
class _Bucket:
    tokens: float
    last: float


class RateLimiter:
    """Token buckets per key (client IP): ``rate`` tokens/s, at most ``burst`` stored.

    >>> r = RateLimiter(rate=1.0, burst=2)
    >>> [r.allow("a", 0.0), r.allow("a", 0.0), r.allow("a", 0.0), r.allow("a", 1.0)]
    [True, True, False, True]
    """

    __slots__ = ("_buckets", "burst", "limited", "max_keys", "rate")

    def __init__(self, rate: float, burst: int, max_keys: int = 65536) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.limited = 0

    def allow(self, key: str, now: float) -> bool:
        b = self._buckets.get(key)
        if b is None:
            self._evict(now)
            b = _Bucket(float(self.burst), now)
            self._buckets[key] = b
        else:
            self._buckets.move_to_end(key)
            b.tokens = min(float(self.burst), b.tokens + (now - b.last) * self.rate)
            b.last = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return True
        self.limited += 1
        return False

    def _evict(self, now: float) -> None:
        """Keep the table bounded: drop least recently used buckets (full ones cost nothing to forget)."""
        while len(self._buckets) >= self.max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)
