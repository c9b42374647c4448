"""What a cluster fault did to the floating address and to the clients. Pure.

A chaos run on a cluster (docs/chaos.md, "Clusters") samples who holds the VIP in every
node's namespace (:class:`fivenines.rig.watch.AddressWatch`: the address on an up interface,
not silenced by the VIP's fence) and records every request. For each fault, from its
injection ``at`` until the next fault (or the end of the run):

* ``dropped``: when the VIP holder hit stopped holding the address;
* ``taken``: when another node first held it: the measured **takeover**;
* the failed requests, and the longest time without a successful answer (between the
  completions of two requests that succeeded): the outage clients saw, including requests
  that waited through it (a SYN retransmitted until another node held the VIP) and then
  succeeded.

Times are run times (seconds since the load began).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Changes = Sequence[tuple[float, tuple[str, ...]]]
"""Who held the VIP: ``(time, holders)`` at every change, sorted by time."""


def holders_at(changes: Changes, t: float) -> tuple[str, ...]:
    """The holders in force at ``t``.

    >>> holders_at([(0.0, ("a",)), (5.0, ()), (6.0, ("b",))], 5.5)
    ()
    >>> holders_at([(0.0, ("a",))], -1.0)
    ()
    """
    i = bisect.bisect_right([c[0] for c in changes], t) - 1
    return changes[i][1] if i >= 0 else ()


def dropped_after(changes: Changes, node: str, at: float, until: float) -> float | None:
    """The first change in ``[at, until)`` after which ``node`` no longer held the VIP.

    >>> dropped_after([(0.0, ("a",)), (5.2, ()), (7.0, ("b",))], "a", 5.0, 20.0)
    5.2
    >>> dropped_after([(0.0, ("a",))], "a", 5.0, 20.0) is None
    True
    """
    if node not in holders_at(changes, at):
        return at
    return next((t for t, h in changes if at <= t < until and node not in h), None)


def taken_after(changes: Changes, old: str, at: float, until: float) -> tuple[float, str] | None:
    """When, in ``[at, until)``, a node other than ``old`` first held the VIP, and which.

    >>> taken_after([(0.0, ("a",)), (5.2, ()), (7.4, ("b",))], "a", 5.0, 20.0)
    (7.4, 'b')
    >>> taken_after([(0.0, ("a",)), (5.2, ()), (7.4, ("a",))], "a", 5.0, 20.0) is None
    True
    """
    for t, h in changes:
        if at <= t < until:
            others = [n for n in h if n != old]
            if others:
                return t, others[0]
    return None


def longest_gap(ok_times: Sequence[float], lo: float, hi: float) -> float | None:
    """The longest time between two consecutive successes (sorted ``ok_times``) that ends in
    ``(lo, hi]``: the outage the fault at ``lo`` caused, as clients saw it (a gap that ends after
    ``hi`` belongs to the next fault). None without two such successes.

    >>> longest_gap([1.0, 1.1, 1.2, 4.0, 4.1], 1.15, 10.0)
    2.8
    >>> longest_gap([1.0, 1.1, 1.2, 4.0, 4.1], 0.0, 3.0)
    0.1
    >>> longest_gap([1.0], 0.5, 2.0) is None
    True
    """
    a = max(0, bisect.bisect_right(ok_times, lo) - 1)
    b = bisect.bisect_right(ok_times, hi)
    window = ok_times[a:b]
    if len(window) < 2:
        return None
    return round(max(y - x for x, y in itertools.pairwise(window)), 6)


@dataclass(frozen=True, slots=True)
class ClusterFault:
    """One cluster fault as measured."""

    id: int
    kind: str
    node: str  # the node hit
    at: float
    old_holder: str | None
    dropped_at: float | None
    taken_at: float | None
    new_holder: str | None
    failed_requests: int
    longest_gap_s: float | None
    repaired_at: float | None

    @property
    def takeover_s(self) -> float | None:
        """From the fault to another node holding the VIP (None: nobody else took it)."""
        return None if self.taken_at is None else round(self.taken_at - self.at, 6)

    @property
    def dropped_s(self) -> float | None:
        return None if self.dropped_at is None else round(self.dropped_at - self.at, 6)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "node": self.node, "injected_at_s": round(self.at, 4),
                "holder_before": self.old_holder, "holder_after": self.new_holder,
                "vip_dropped_s": self.dropped_s, "takeover_s": self.takeover_s,
                "failed_requests": self.failed_requests, "longest_gap_s": self.longest_gap_s,
                "repaired_s": None if self.repaired_at is None else round(self.repaired_at - self.at, 4)}


def measure_fault(fid: int, kind: str, node: str, at: float, until: float, changes: Changes,
                  ok_times: Sequence[float], failure_times: Sequence[float],
                  repaired_at: float | None = None) -> ClusterFault:
    """One fault at ``at`` on ``node``, charged with what happened until ``until``.

    >>> ch = [(0.0, ("a",)), (10.3, ()), (12.5, ("b",))]
    >>> f = measure_fault(1, "node", "a", 10.0, 30.0, ch, [9.9, 12.6, 13.0], [10.1, 11.0, 12.0])
    >>> f.takeover_s, f.dropped_s, f.failed_requests, f.longest_gap_s, f.new_holder
    (2.5, 0.3, 3, 2.7, 'b')
    """
    old = holders_at(changes, at)
    before = old[0] if old else None
    taken = taken_after(changes, before or node, at, until)
    failed = bisect.bisect_left(failure_times, until) - bisect.bisect_left(failure_times, at)
    return ClusterFault(fid, kind, node, at, before,
                        dropped_after(changes, before, at, until) if before else None,
                        taken[0] if taken else None, taken[1] if taken else None,
                        failed, longest_gap(ok_times, at, until), repaired_at)
