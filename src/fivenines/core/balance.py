"""Balancing algorithms: which serving target gets the next request. Pure.

A balancer holds the members that may serve now (:meth:`Balancer.set_members`,
called when the serving set changes, never per request) and picks one of them
per request (:meth:`Balancer.pick`), optionally skipping members already tried
for this request (``exclude``) and, for the hashing algorithms, by a key.

Time is an argument: ``now`` is passed to ``set_members`` (a member that joins
starts its slow start then) and to ``pick`` (the ramp's position). The random
algorithms take an injected :class:`random.Random`, so every test is
deterministic.

Algorithms (``TargetGroupSpec.algorithm``):

``round_robin``
    each member in turn.
``weighted_round_robin``
    smooth weighted round robin (nginx's): over any window a member with weight
    ``w`` gets ``w / sum(w)`` of the picks, interleaved rather than in bursts.
``least_outstanding_requests``
    the member with the fewest requests in flight; ties go round robin.
``random``
    power of two choices: two distinct members at random, the less loaded wins.
``ip_hash`` / ``hash``
    consistent hashing on a ring with virtual nodes (ketama): a key always maps
    to the same member while it serves, and when one of N members leaves only
    the keys it owned (about 1/N) move. Without a key (no such header or cookie)
    the pick falls back to round robin.

Slow start (``slow_start`` seconds, 0: off) works with every algorithm. A member
that joins a group that already has members (a new target, or one that recovered)
starts with share 0, rising linearly to its full share over ``slow_start``:

* round robin and weighted round robin use smooth weighted round robin over the
  *effective* weights ``weight * ramp`` (exact and deterministic);
* ``random`` samples its two candidates by effective weight;
* ``least_outstanding_requests`` admits a ramping winner with probability ``ramp``;
* the hashing algorithms admit a ramping member for the keys whose own hash
  fraction is below ``ramp``: the same keys move to it as it ramps up, and
  the others stay on the member that owned them before.

A member that joins an empty group takes all traffic at once (it is alone).
"""

from __future__ import annotations

import hashlib
import random as _random
from bisect import bisect
from collections.abc import Container, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar


class Member(Protocol):
    """What a balancer needs of a target."""

    @property
    def id(self) -> str: ...
    @property
    def weight(self) -> int: ...
    @property
    def in_flight(self) -> int: ...


M = TypeVar("M", bound=Member)

_EMPTY: tuple[()] = ()
_MASK64 = (1 << 64) - 1


def key_hash(data: bytes) -> int:
    """A stable 64-bit hash (the same in every process, unlike ``hash()``).

    >>> key_hash(b"10.0.0.1") == key_hash(b"10.0.0.1"), key_hash(b"a") != key_hash(b"b")
    (True, True)
    """
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def ramp(joined_at: float, slow_start: float, now: float) -> float:
    """Slow-start share factor in [0, 1]: 0 when a member joins, 1 after ``slow_start``.

    >>> ramp(10.0, 4.0, 10.0), ramp(10.0, 4.0, 11.0), ramp(10.0, 4.0, 20.0), ramp(10.0, 0.0, 10.0)
    (0.0, 0.25, 1.0, 1.0)
    """
    if slow_start <= 0:
        return 1.0
    f = (now - joined_at) / slow_start
    return 0.0 if f < 0 else (1.0 if f > 1 else f)


class Balancer(Generic[M]):
    """Base of the algorithms: membership, weights and slow start."""

    name: ClassVar[str] = ""
    weighted: ClassVar[bool] = False  # whether members' own weights count

    def __init__(self, slow_start: float = 0.0, rng: _random.Random | None = None) -> None:
        self.slow_start = slow_start
        self.rng = rng or _random.Random()
        self.members: list[M] = []
        self.weights: list[float] = []  # base weights (1.0 each unless weighted)
        self.joined: dict[str, float] = {}  # member id -> when its slow start began
        self.ramping = False  # some member is in slow start: pick needs ``now``
        self._current: list[float] = []  # smooth weighted round robin state
        self._next = 0

    # ------------------------------------------------------------------ membership

    def set_members(self, members: Sequence[M], now: float) -> None:
        """The members that may serve from now on (in a stable order)."""
        before = {m.id for m in self.members}
        ids = {m.id for m in members}
        joined = {i: t for i, t in self.joined.items() if i in ids}
        if self.slow_start > 0 and before:
            for m in members:
                if m.id not in before:
                    joined[m.id] = now
        self.joined = joined
        self.ramping = bool(joined)
        self.members = list(members)
        self.weights = [float(m.weight) if self.weighted else 1.0 for m in members]
        self._current = [0.0] * len(members)
        if self._next >= len(members):
            self._next = 0
        self._rebuild()

    def _rebuild(self) -> None:
        """Recompute derived tables after a membership change (hash rings)."""

    def ramp_of(self, member: M, now: float) -> float:
        t = self.joined.get(member.id)
        return 1.0 if t is None else ramp(t, self.slow_start, now)

    def effective_weights(self, now: float) -> list[float]:
        """Weights with slow start applied; ends finished ramps."""
        if not self.ramping:
            return self.weights
        out = []
        done = []
        joined, s = self.joined, self.slow_start
        for m, w in zip(self.members, self.weights, strict=True):
            t = joined.get(m.id)
            if t is None:
                out.append(w)
                continue
            f = ramp(t, s, now)
            if f >= 1.0:
                done.append(m.id)
            out.append(w * f)
        for i in done:
            del joined[i]
        self.ramping = bool(joined)
        return out

    # ------------------------------------------------------------------ picking

    def pick(self, key: int | None = None, exclude: Container[M] = _EMPTY, now: float = 0.0) -> M | None:
        raise NotImplementedError

    def _round_robin(self, exclude: Container[M]) -> M | None:
        members = self.members
        n = len(members)
        i = self._next
        for _ in range(n):
            if i >= n:
                i = 0
            m = members[i]
            i += 1
            if m not in exclude:
                if exclude is _EMPTY:  # a retry does not move the rotation on
                    self._next = i
                return m
        return None

    def _smooth(self, weights: Sequence[float], exclude: Container[M]) -> M | None:
        """Smooth weighted round robin over ``weights`` (nginx's algorithm)."""
        members, cur = self.members, self._current
        best = -1
        total = 0.0
        for i, m in enumerate(members):
            w = weights[i]
            if w <= 0 or m in exclude:
                continue
            cur[i] += w
            total += w
            if best < 0 or cur[i] > cur[best]:
                best = i
        if best < 0:
            return None
        cur[best] -= total
        return members[best]

    def __repr__(self) -> str:
        ids = ",".join(m.id for m in self.members)
        ramp_ = f" ramping={sorted(self.joined)}" if self.joined else ""
        return f"<{type(self).__name__} [{ids}]{ramp_}>"


class RoundRobin(Balancer[M]):
    """Each member in turn.

    >>> from types import SimpleNamespace as T
    >>> rr = RoundRobin()
    >>> rr.set_members([T(id=i, weight=1, in_flight=0) for i in "abc"], now=0.0)
    >>> [rr.pick().id for _ in range(4)]
    ['a', 'b', 'c', 'a']
    """

    name = "round_robin"

    def pick(self, key: int | None = None, exclude: Container[M] = _EMPTY, now: float = 0.0) -> M | None:
        if self.ramping:
            w = self.effective_weights(now)
            if self.ramping:
                return self._smooth(w, exclude) or self._round_robin(exclude)
        if exclude is _EMPTY:  # the common case, inlined
            members = self.members
            n = len(members)
            if n == 0:
                return None
            i = self._next
            if i >= n:
                i = 0
            self._next = i + 1
            return members[i]
        return self._round_robin(exclude)


class WeightedRoundRobin(Balancer[M]):
    """Smooth weighted round robin: weights 5, 1, 1 give a a b a c a a, not a a a a a b c.

    >>> from types import SimpleNamespace as T
    >>> wrr = WeightedRoundRobin()
    >>> wrr.set_members([T(id="a", weight=5, in_flight=0), T(id="b", weight=1, in_flight=0),
    ...                  T(id="c", weight=1, in_flight=0)], now=0.0)
    >>> "".join(wrr.pick().id for _ in range(7))
    'aabacaa'
    """

    name = "weighted_round_robin"
    weighted = True

    def pick(self, key: int | None = None, exclude: Container[M] = _EMPTY, now: float = 0.0) -> M | None:
        # weight 0 means no traffic; when no member has weight above 0, none is picked
        picked = self._smooth(self.effective_weights(now), exclude)
        if picked is None and self.ramping:
            picked = self._smooth(self.weights, exclude)  # only members at ramp 0 are left
        return picked


class LeastOutstanding(Balancer[M]):
    """The member with the fewest requests in flight; ties in turn."""

    name = "least_outstanding_requests"

    def pick(self, key: int | None = None, exclude: Container[M] = _EMPTY, now: float = 0.0) -> M | None:
        members = self.members
        n = len(members)
        if n == 0:
            return None
        ramping = self.ramping
        if ramping:
            self.effective_weights(now)  # ends finished ramps
            ramping = self.ramping
        start = self._next
        if exclude is _EMPTY:
            self._next = start + 1 if start + 1 < n else 0
        rejected: list[M] = []
        while True:
            best: M | None = None
            best_load = 0
            for k in range(n):
                i = start + k
                if i >= n:
                    i -= n
                m = members[i]
                if m in exclude or m in rejected:
                    continue
                load = m.in_flight
                if best is None or load < best_load:
                    best, best_load = m, load
            if best is None:
                return rejected[0] if rejected else None  # only ramping members were left
            if not ramping or best.id not in self.joined:
                return best
            # slow start: a ramping winner is admitted with probability ramp
            if self.rng.random() < self.ramp_of(best, now):
                return best
            rejected.append(best)


class PowerOfTwo(Balancer[M]):
    """Two distinct members at random (by effective weight); the less loaded wins."""

    name = "random"

    def pick(self, key: int | None = None, exclude: Container[M] = _EMPTY, now: float = 0.0) -> M | None:
        members: Sequence[M] = self.members
        weights = self.effective_weights(now) if self.ramping else None
        if exclude is not _EMPTY:
            keep = [i for i, m in enumerate(members) if m not in exclude]
            if weights is not None:
                weights = [weights[i] for i in keep]
            members = [members[i] for i in keep]
        n = len(members)
        if n <= 1:
            return members[0] if n else None
        rnd = self.rng.random
        if weights is None or sum(weights) <= 0:
            i = int(rnd() * n)
            j = int(rnd() * (n - 1))
            if j >= i:
                j += 1
        else:
            i = _weighted_index(weights, rnd())
            rest = list(weights)
            rest[i] = 0.0
            j = _weighted_index(rest, rnd()) if sum(rest) > 0 else i
        a, b = members[i], members[j]
        return b if b.in_flight < a.in_flight else a


def _weighted_index(weights: Sequence[float], u: float) -> int:
    total = sum(weights)
    x = u * total
    acc = 0.0
    last = 0
    for i, w in enumerate(weights):
        if w <= 0:
            continue
        acc += w
        last = i
        if x < acc:
            return i
    return last


RING_VNODES = 160  # virtual nodes per member on the hash ring


class ConsistentHash(Balancer[M]):
    """A hash ring with ``vnodes`` virtual nodes per member; keys go to the next node clockwise.

    >>> from types import SimpleNamespace as T
    >>> ring = ConsistentHash()
    >>> ring.set_members([T(id=i, weight=1, in_flight=0) for i in "abc"], now=0.0)
    >>> k = key_hash(b"user-42")
    >>> ring.pick(k).id == ring.pick(k).id
    True
    """

    name = "hash"

    def __init__(self, slow_start: float = 0.0, rng: _random.Random | None = None, vnodes: int = RING_VNODES) -> None:
        self.vnodes = vnodes
        self._points: list[int] = []
        self._owners: list[M] = []
        super().__init__(slow_start, rng)

    def _rebuild(self) -> None:
        ring: list[tuple[int, str, M]] = []
        for m in self.members:
            base = m.id.encode()
            for v in range(self.vnodes):
                ring.append((key_hash(b"%s#%d" % (base, v)), m.id, m))
        ring.sort(key=lambda e: (e[0], e[1]))
        self._points = [p for p, _, _ in ring]
        self._owners = [m for _, _, m in ring]

    def owner(self, key: int) -> M | None:
        """The member owning ``key`` on the ring, ignoring slow start and exclusions."""
        if not self._points:
            return None
        i = bisect(self._points, key)
        return self._owners[i if i < len(self._owners) else 0]

    def pick(self, key: int | None = None, exclude: Container[M] = _EMPTY, now: float = 0.0) -> M | None:
        if key is None:
            return self._round_robin(exclude)
        owners = self._owners
        n = len(owners)
        if n == 0:
            return None
        i = bisect(self._points, key)
        if i >= n:
            i = 0
        ramping = self.ramping
        if ramping:
            self.effective_weights(now)  # ends finished ramps
            ramping = self.ramping
        u = ((key >> 40) & 0xFFFFFF) / float(1 << 24)  # the key's own fraction, independent of its ring spot
        fallback: M | None = None
        for _ in range(n):
            m = owners[i]
            i += 1
            if i >= n:
                i = 0
            if m in exclude:
                continue
            if ramping and m.id in self.joined and u >= self.ramp_of(m, now):
                fallback = fallback or m
                continue
            return m
        return fallback


class IpHash(ConsistentHash[M]):
    """Consistent hashing on the client address (the key is the address's hash)."""

    name = "ip_hash"


ALGORITHMS: dict[str, type[Balancer[Any]]] = {
    cls.name: cls
    for cls in (RoundRobin, WeightedRoundRobin, LeastOutstanding, PowerOfTwo, ConsistentHash, IpHash)
}


def make_balancer(algorithm: str, slow_start: float = 0.0, rng: _random.Random | None = None) -> Balancer[Any]:
    """The balancer for a spec ``algorithm`` name.

    >>> make_balancer("random").name
    'random'
    """
    try:
        cls = ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(f"unknown algorithm {algorithm!r}; valid: {', '.join(ALGORITHMS)}") from None
    return cls(slow_start=slow_start, rng=rng)
