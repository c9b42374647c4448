"""Which hosts hold an address, sampled every millisecond or two across all of a rig's namespaces.

A host *holds* the address when its kernel answers for it: the address is configured
on one of its interfaces that is up with carrier, and, when the host has fivenines'
fence (:mod:`fivenines.runtime.vip`: nftables tables ``fivenines``), the fence lets the
address through (its set has an unexpired element). A host without a fence (keepalived)
holds it when the address is there. One sample asks every namespace in turn over a
netlink socket opened inside it (a few tens of microseconds each), plus a libnftables
call where the address is present, so a handover shorter than the sampling interval
can be missed, but two holders seen in one sample were two holders at once, to within
the time one sample takes (recorded). :class:`~fivenines.rig.arp.ArpProbe` measures the
same from the wire.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from fivenines.rig.netns import Rig
from fivenines.runtime.netlink import RouteSocket
from fivenines.runtime.nft import Nft, NftError
from fivenines.runtime.vip import FENCE_SET, FENCE_TABLE


@dataclass(frozen=True, slots=True)
class Change:
    at: float  # time.monotonic() when the sample began
    holders: tuple[str, ...]


@dataclass(slots=True)
class AddressWatch:
    """Sample ``address`` on ``hosts`` of ``rig`` in a thread; a timeline of who held it."""

    rig: Rig
    address: str
    hosts: Sequence[str] | None = None
    interval: float = 0.001
    changes: list[Change] = field(default_factory=list)
    samples: int = 0
    samples_with_two: int = 0
    longest_sample: float = 0.0
    longest_gap: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    fenced: int = 0  # samples in which a host had the address but its fence kept it silent
    _socks: dict[str, RouteSocket] = field(default_factory=dict)
    _nft: dict[str, Nft] = field(default_factory=dict)
    _error: BaseException | None = None

    def __post_init__(self) -> None:
        for h in self.hosts if self.hosts is not None else list(self.rig.hosts):
            self._socks[h] = self.rig.route_socket(h)
            self._nft[h] = self.rig.call_in(h, Nft)

    def answers(self, host: str) -> bool:
        """The address is on an up interface of ``host`` and no fence keeps it silent."""
        if not self._socks[host].holds(self.address):
            return False
        try:
            listing = self._nft[host].run(f"list set arp {FENCE_TABLE} {FENCE_SET}")
        except NftError:
            return True  # no fence on this host
        if f" {self.address} " in listing:
            return True
        self.fenced += 1
        return False

    def __repr__(self) -> str:
        now = self.changes[-1].holders if self.changes else ()
        return (f"<AddressWatch {self.address} held by {','.join(now) or 'nobody'} samples={self.samples} "
                f"with_two={self.samples_with_two} changes={len(self.changes)}>")

    def sample(self) -> tuple[str, ...]:
        return tuple(h for h in self._socks if self.answers(h))

    def start(self) -> AddressWatch:
        self._thread = threading.Thread(target=self._run, name=f"watch {self.address}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        last: tuple[str, ...] | None = None
        prev = 0.0
        try:
            while not self._stop.is_set():
                t0 = time.monotonic()
                holders = self.sample()
                t1 = time.monotonic()
                self.samples += 1
                self.longest_sample = max(self.longest_sample, t1 - t0)
                if prev:
                    self.longest_gap = max(self.longest_gap, t0 - prev)
                prev = t0
                if len(holders) > 1:
                    self.samples_with_two += 1
                if holders != last:
                    self.changes.append(Change(t0, holders))
                    last = holders
                self._stop.wait(self.interval)
        except BaseException as exc:  # reported by stop()
            self._error = exc

    def stop(self) -> AddressWatch:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for s in self._socks.values():
            s.close()
        for n in self._nft.values():
            n.close()
        if self._error is not None:
            raise self._error
        return self

    def __enter__(self) -> AddressWatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def holders(self) -> tuple[str, ...]:
        return self.changes[-1].holders if self.changes else ()

    def moments_of_two(self) -> list[Change]:
        """Every change after which two or more hosts held the address."""
        return [c for c in self.changes if len(c.holders) > 1]

    def first_held(self, host: str, after: float = 0.0) -> float | None:
        """When ``host`` was first seen holding the address at or after ``after``."""
        return next((c.at for c in self.changes if c.at >= after and host in c.holders), None)

    def dropped_at(self, host: str) -> float | None:
        """The start of the first sample after which ``host`` no longer held it (None: still holds, or never)."""
        held = False
        dropped: float | None = None
        for c in self.changes:
            if host in c.holders:
                held, dropped = True, None
            elif held and dropped is None:
                dropped = c.at
        return dropped

    def timeline(self, since: float | None = None) -> str:
        """Readable: ``+0.000s a`` / ``+1.734s -`` / ``+1.802s b`` (times from ``since`` or the first change)."""
        if not self.changes:
            return "(no samples)"
        t0 = self.changes[0].at if since is None else since
        return "\n".join(f"{c.at - t0:+.3f}s {','.join(c.holders) or '-'}" for c in self.changes)
