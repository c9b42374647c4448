"""Who holds the floating address: a leader-lease state machine. Pure: time and lease facts are inputs.

Everything that decides whether this node may hold the cluster's virtual IP lives here;
the runner (:mod:`fivenines.runtime.cluster`) talks to etcd, feeds the answers in with
the time, and carries out the :class:`Action` values that come out, in order.

The rules:

* A node campaigns when it sees the leader key vacant: it grants itself a lease and
  creates the key attached to it in a transaction that succeeds only if the key does
  not exist. The revision of that transaction is the **fencing revision**: strictly
  larger for every new leader, so anything a leader writes can be fenced by it.
* A leader's view of its lease is conservative: etcd starts (or restarts) a lease's
  time to live no earlier than it *received* the grant or keepalive, so the lease
  cannot expire for the others before ``sent + ttl`` of the last request the leader
  *sent* and heard back from. The leader may hold the address only while::

      now < valid_until = sent + ttl - margin

  The margin (a quarter of the ttl by default) covers a clock that runs faster or
  slower than etcd's, and the time it takes to carry out a drop.
* Holding is enforced where the packets are. Every hold opens the node's **fence**
  (:mod:`fivenines.runtime.vip`: nftables rules that drop ARP and IPv4 for the address
  unless a set element with a millisecond timeout is present) until
  ``fence_until = valid_until - fence_slack``, so the kernel itself stops answering for the
  address by ``valid_until`` even if this process is frozen (SIGSTOP) or killed with
  SIGKILL; ``fence_slack`` covers the kernel's rounding of timeouts to its tick and the
  moment between reading the clock and committing. The address itself gets a kernel
  lifetime of whole seconds that ends within a second after the deadline: a backstop that
  removes a dead node's address, not what keeps the VIP single.
* Every step that ends leadership drops the address *before* it revokes the lease, so
  the next leader cannot take it while this node still has it.

Transitions are data, as in h2's stream machine: ``(Role, Input)`` maps to a handler;
a pair with no entry raises :class:`~fivenines.errors.InvalidTransition`. Each step
returns the actions and a readable decision (``"a took the VIP: lease 7a3f revision
42"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from fivenines.errors import InvalidTransition


class Role(str, Enum):
    FOLLOWER = "follower"
    CAMPAIGNING = "campaigning"
    LEADER = "leader"
    RESIGNED = "resigned"


class Input(str, Enum):
    TICK = "tick"  # time passed
    VACANT = "vacant"  # the leader key is absent (read or watched)
    HELD = "held"  # the leader key exists: holder, fencing revision, lease
    GRANTED = "granted"  # our campaign created the key
    REFUSED = "refused"  # our campaign found the key taken
    CAMPAIGN_FAILED = "campaign_failed"  # etcd did not answer the campaign (it may or may not have applied)
    RENEWED = "renewed"  # a keepalive was answered with a ttl
    RENEW_FAILED = "renew_failed"  # a keepalive got no answer
    EXPIRED = "expired"  # etcd answered that the lease no longer exists
    RESIGN = "resign"  # this node stops


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Campaign:
    """Grant a lease of ``ttl`` seconds and create the leader key with it if the key is absent."""

    ttl: int


@dataclass(frozen=True, slots=True)
class Renew:
    lease: int


@dataclass(frozen=True, slots=True)
class HoldVip:
    """Open the fence until ``fence_until`` (this node's clock), then add the address (announce it if
    it was absent) or refresh it, with a kernel lifetime of ``lifetime`` whole seconds (a backstop)."""

    fence_until: float
    lifetime: int


@dataclass(frozen=True, slots=True)
class DropVip:
    pass


@dataclass(frozen=True, slots=True)
class Revoke:
    lease: int


Action = Campaign | Renew | HoldVip | DropVip | Revoke


@dataclass(frozen=True, slots=True)
class Event:
    """One input with its facts. ``sent_at`` is this node's clock when the request was sent."""

    kind: Input
    lease: int | None = None
    ttl: float = 0.0
    revision: int = 0
    sent_at: float | None = None
    read_at: int = 0  # etcd's revision when it answered (observations older than what we know are stale)
    holder: str | None = None
    why: str = ""


@dataclass(frozen=True, slots=True)
class Step:
    actions: tuple[Action, ...] = ()
    decision: str | None = None  # set when something worth a log line happened


@dataclass(frozen=True, slots=True)
class Settings:
    node: str
    ttl: int  # requested lease ttl, whole seconds (etcd's unit)
    margin_ratio: float = 0.25  # margin = ttl * ratio
    renew_every: float | None = None  # default ttl / 6: four renewals may fail before the deadline
    # a slow etcd's answers still count (each extends the deadline from when it was sent): renewals
    # overlap, a new one every renew_every while up to this many wait for their answers
    max_renewals_in_flight: int = 3
    retry_every: float | None = None  # campaign retry after a failure (default renew_every)
    # how late the kernel may close an expired fence: timeouts round up to its tick (two ticks are
    # 8 ms at HZ=250, 20 ms at HZ=100), plus reading the clock to committing (about 0.1 ms)
    fence_slack: float = 0.03

    def __post_init__(self) -> None:
        if self.ttl < 1:
            raise ValueError("ttl must be at least 1 s")
        if not 0 < self.margin_ratio < 1:
            raise ValueError("margin_ratio must be in (0, 1)")
        if not 0 <= self.fence_slack < self.ttl * (1 - self.margin_ratio):
            raise ValueError("fence_slack must be >= 0 and leave part of the ttl")
        if self.max_renewals_in_flight < 1:
            raise ValueError("max_renewals_in_flight must be at least 1")

    @property
    def renew_interval(self) -> float:
        return self.renew_every if self.renew_every is not None else self.ttl / 6

    @property
    def retry_interval(self) -> float:
        return self.retry_every if self.retry_every is not None else self.renew_interval

    def margin(self, ttl: float) -> float:
        return ttl * self.margin_ratio


def lease_hex(lease: int | None) -> str:
    """etcd prints lease ids in hex.

    >>> lease_hex(31295), lease_hex(None)
    ('7a3f', '-')
    """
    return "-" if lease is None else format(lease, "x")


def backstop_lifetime(valid_until: float, now: float) -> int:
    """The address's kernel lifetime: whole seconds (the kernel's unit), at least 1, ending at most a
    second after ``valid_until``: a dead node's address goes away soon after its fence closed.

    >>> backstop_lifetime(100.75, 100.0), backstop_lifetime(101.5, 100.0), backstop_lifetime(103.0, 100.0)
    (1, 2, 3)
    """
    return max(1, math.ceil(valid_until - now - 1e-9))


_Handler = Callable[["Election", Event, float], Step]


@dataclass(slots=True)
class Election:
    """This node's side of the election for the cluster's address."""

    settings: Settings
    role: Role = Role.FOLLOWER
    lease: int | None = None
    ttl: float = 0.0  # as granted
    revision: int = 0  # fencing revision of the current holder (ours when leader)
    read_revision: int = 0  # the newest etcd revision this node has heard of
    holder: str | None = None  # who holds the leader key, as last seen
    holder_since: float | None = None  # when this node first saw that holder
    valid_until: float = 0.0  # leader: may hold the address while now < valid_until
    vip_until: float = 0.0  # the latest moment this node's fence can still let the address answer
    since: float = 0.0  # when the role last changed
    vacant: bool = False  # the key was last seen absent
    next_campaign: float = float("-inf")
    next_renew: float = 0.0
    renewals_in_flight: int = 0  # keepalives of the current lease sent and not yet answered
    history: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return (f"<Election {self.settings.node} {self.role.value} holder={self.holder or '-'} "
                f"lease={lease_hex(self.lease)} revision={self.revision} valid_until={self.valid_until:.3f}>")

    # -- queries --------------------------------------------------------------------------

    def may_hold_vip(self, now: float) -> bool:
        """True only while this node leads and its conservative deadline has not passed."""
        return self.role is Role.LEADER and now < self.valid_until

    def view(self, now: float) -> dict[str, object]:
        return {
            "node": self.settings.node,
            "role": self.role.value,
            "holder": self.holder,
            "holder_since": self.holder_since,
            "lease": lease_hex(self.lease),
            "fencing_revision": self.revision or None,
            "ttl_s": self.ttl or float(self.settings.ttl),
            "may_hold_vip": self.may_hold_vip(now),
            "valid_for_s": round(self.valid_until - now, 3) if self.role is Role.LEADER else None,
        }

    # -- inputs ---------------------------------------------------------------------------

    def feed(self, event: Event, now: float) -> Step:
        handler = _TABLE.get((self.role, event.kind))
        if handler is None:
            raise InvalidTransition(f"Invalid input {event.kind.value} in state {self.role.value}")
        if event.sent_at is not None and event.sent_at > now:
            raise ValueError(f"sent_at {event.sent_at} is after now {now}")
        if event.kind in (Input.VACANT, Input.HELD):
            if event.read_at < self.read_revision:
                return Step()  # an answer about an older state than one this node has seen
            self.read_revision = event.read_at
        elif event.kind in (Input.GRANTED, Input.REFUSED):
            self.read_revision = max(self.read_revision, event.revision)
        step = handler(self, event, now)
        if step.decision:
            self.history.append(step.decision)
            del self.history[:-50]
        return step

    def tick(self, now: float) -> Step:
        return self.feed(Event(Input.TICK), now)

    def observe(self, holder: str | None, revision: int, read_at: int, now: float) -> Step:
        """The leader key as etcd had it at revision ``read_at``: ``holder`` None when absent,
        else its value and create revision (the holder's fencing revision)."""
        if holder is None:
            return self.feed(Event(Input.VACANT, read_at=read_at), now)
        return self.feed(Event(Input.HELD, holder=holder, revision=revision, read_at=read_at), now)

    def granted(self, lease: int, ttl: float, revision: int, sent_at: float, now: float) -> Step:
        """Our campaign created the key; ``sent_at``: when the *grant* request was sent."""
        return self.feed(Event(Input.GRANTED, lease=lease, ttl=ttl, revision=revision, sent_at=sent_at), now)

    def refused(self, lease: int | None, holder: str | None, revision: int, now: float) -> Step:
        return self.feed(Event(Input.REFUSED, lease=lease, holder=holder, revision=revision), now)

    def campaign_failed(self, lease: int | None, why: str, now: float) -> Step:
        return self.feed(Event(Input.CAMPAIGN_FAILED, lease=lease, why=why), now)

    def renewed(self, lease: int, ttl: float, sent_at: float, now: float) -> Step:
        return self.feed(Event(Input.RENEWED, lease=lease, ttl=ttl, sent_at=sent_at), now)

    def renew_failed(self, lease: int, why: str, now: float) -> Step:
        return self.feed(Event(Input.RENEW_FAILED, lease=lease, why=why), now)

    def expired(self, lease: int, now: float) -> Step:
        return self.feed(Event(Input.EXPIRED, lease=lease), now)

    def resign(self, now: float) -> Step:
        return self.feed(Event(Input.RESIGN), now)

    # -- helpers --------------------------------------------------------------------------

    def _become(self, role: Role, now: float) -> None:
        if role is not self.role:
            self.role, self.since = role, now

    def _see(self, holder: str | None, revision: int, now: float) -> None:
        if holder != self.holder or (holder is not None and revision != self.revision):
            self.holder_since = now if holder is not None else None
        self.holder, self.revision = holder, revision if holder is not None else 0
        self.vacant = holder is None

    def fence_until(self) -> float:
        """Until when the fence may be open: the kernel closes it by ``valid_until`` at the latest."""
        return self.valid_until - self.settings.fence_slack

    def _hold(self, now: float) -> tuple[Action, ...]:
        until = self.fence_until()
        if until <= now:
            return ()
        self.vip_until = max(self.vip_until, until + self.settings.fence_slack)
        return (HoldVip(until, backstop_lifetime(self.valid_until, now)),)

    def _end(self, now: float, role: Role, why: str) -> Step:
        """Leadership ends: drop the address first, then revoke the lease."""
        lease = self.lease
        self.lease, self.ttl, self.valid_until, self.renewals_in_flight = None, 0.0, 0.0, 0
        self.vip_until = min(self.vip_until, now)
        if self.holder == self.settings.node:
            self._see(None, 0, now)
        self.next_campaign = now + self.settings.retry_interval
        self._become(role, now)
        actions: tuple[Action, ...] = (DropVip(),) + ((Revoke(lease),) if lease is not None else ())
        return Step(actions, f"{self.settings.node} dropped the VIP: {why}")

    def _campaign(self, now: float) -> Step:
        self.next_campaign = now + self.settings.retry_interval
        self._become(Role.CAMPAIGNING, now)
        return Step((Campaign(self.settings.ttl),))


# --------------------------------------------------------------------------- handlers


def _follower_tick(e: Election, ev: Event, now: float) -> Step:
    if e.vacant and now >= e.next_campaign:
        return e._campaign(now)
    return Step()


def _follower_vacant(e: Election, ev: Event, now: float) -> Step:
    was = e.holder
    e._see(None, 0, now)
    if now >= e.next_campaign:
        return e._campaign(now)
    return Step((), f"{e.settings.node} saw the VIP vacant (was {was})" if was else None)


def _observe_held(e: Election, ev: Event, now: float) -> Step:
    changed = ev.holder != e.holder or ev.revision != e.revision
    e._see(ev.holder, ev.revision, now)
    if changed and e.role is not Role.RESIGNED and ev.holder != e.settings.node:
        return Step((), f"{e.settings.node} follows {ev.holder}: revision {ev.revision}")
    return Step()


def _observe_vacant(e: Election, ev: Event, now: float) -> Step:
    e._see(None, 0, now)
    return Step()


def _nothing(e: Election, ev: Event, now: float) -> Step:
    return Step()


def _stale(e: Election, ev: Event, now: float) -> Step:
    """A late answer about a lease this node no longer holds: nothing to do but forget it."""
    return Step()


def _granted(e: Election, ev: Event, now: float) -> Step:
    assert ev.lease is not None and ev.sent_at is not None
    valid_until = ev.sent_at + ev.ttl - e.settings.margin(ev.ttl)
    e.lease, e.ttl = ev.lease, ev.ttl
    e._see(e.settings.node, ev.revision, now)
    if now >= valid_until:  # the answer came too late to act on: the lease may be gone for the others
        return e._end(now, Role.FOLLOWER, f"lease {lease_hex(ev.lease)} was granted too late to use "
                      f"({now - ev.sent_at:.2f}s after the request)")
    e.valid_until = valid_until
    e.next_renew = ev.sent_at + e.settings.renew_interval
    e._become(Role.LEADER, now)
    hold = e._hold(now)
    if hold:
        return Step(hold, f"{e.settings.node} took the VIP: lease {lease_hex(ev.lease)} revision {ev.revision}")
    return Step((), f"{e.settings.node} won lease {lease_hex(ev.lease)} revision {ev.revision}; the answer came "
                    f"too late to add the VIP ({now - ev.sent_at:.2f}s), a renewal will")


def _refused(e: Election, ev: Event, now: float) -> Step:
    e._see(ev.holder, ev.revision, now)
    e._become(Role.FOLLOWER, now)
    actions = (Revoke(ev.lease),) if ev.lease is not None else ()
    return Step(actions, f"{e.settings.node} lost the election to {ev.holder or 'another node'}: revision {ev.revision}")


def _campaign_failed(e: Election, ev: Event, now: float) -> Step:
    e._become(Role.FOLLOWER, now)
    # the transaction may have been applied without an answer: revoking the lease undoes it
    actions = (Revoke(ev.lease),) if ev.lease is not None else ()
    return Step(actions, f"{e.settings.node} could not campaign: {ev.why}")


def _resigned_granted(e: Election, ev: Event, now: float) -> Step:
    assert ev.lease is not None
    return Step((Revoke(ev.lease),), f"{e.settings.node} gave back lease {lease_hex(ev.lease)}: resigned")


def _revoke_leftover(e: Election, ev: Event, now: float) -> Step:
    return Step((Revoke(ev.lease),)) if ev.lease is not None else Step()


def _leader_tick(e: Election, ev: Event, now: float) -> Step:
    if now >= e.valid_until:
        return e._end(now, Role.FOLLOWER, f"lease {lease_hex(e.lease)} not renewed by its deadline "
                      f"({now - e.valid_until:.2f}s ago)")
    if now >= e.next_renew and e.renewals_in_flight < e.settings.max_renewals_in_flight:
        assert e.lease is not None
        e.renewals_in_flight += 1
        e.next_renew = now + e.settings.renew_interval
        return Step((Renew(e.lease),))
    return Step()


def _leader_renewed(e: Election, ev: Event, now: float) -> Step:
    if ev.lease != e.lease:
        return _stale(e, ev, now)
    e.renewals_in_flight = max(0, e.renewals_in_flight - 1)
    if now >= e.valid_until:
        return _leader_tick(e, ev, now)  # too late: the deadline passed before the answer
    assert ev.sent_at is not None
    e.ttl = ev.ttl
    e.valid_until = max(e.valid_until, ev.sent_at + ev.ttl - e.settings.margin(ev.ttl))
    return Step(e._hold(now))


def _leader_renew_failed(e: Election, ev: Event, now: float) -> Step:
    if ev.lease != e.lease:
        return Step()
    e.renewals_in_flight = max(0, e.renewals_in_flight - 1)
    if now >= e.valid_until:
        return _leader_tick(e, ev, now)
    return Step((), f"{e.settings.node} could not renew lease {lease_hex(e.lease)} ({ev.why}): "
                    f"{e.valid_until - now:.2f}s left")


def _leader_expired(e: Election, ev: Event, now: float) -> Step:
    if ev.lease != e.lease:
        return Step()
    return e._end(now, Role.FOLLOWER, f"etcd says lease {lease_hex(e.lease)} has expired")


def _leader_held(e: Election, ev: Event, now: float) -> Step:
    if ev.revision <= e.revision:
        return Step()  # our key, or an older one read before ours was created
    why = f"{ev.holder} holds the key now (revision {ev.revision})"
    step = e._end(now, Role.FOLLOWER, why)
    e._see(ev.holder, ev.revision, now)
    return step


def _leader_vacant(e: Election, ev: Event, now: float) -> Step:
    if ev.read_at <= e.revision:
        return Step()  # read before (or as) the key was created: stale
    return e._end(now, Role.FOLLOWER, f"the leader key of lease {lease_hex(e.lease)} is gone")


def _resign(e: Election, ev: Event, now: float) -> Step:
    if e.role is Role.LEADER:
        return e._end(now, Role.RESIGNED, "resigned")
    e._become(Role.RESIGNED, now)
    return Step((), f"{e.settings.node} resigned")


F, C, L, R = Role.FOLLOWER, Role.CAMPAIGNING, Role.LEADER, Role.RESIGNED
In = Input
_TABLE: dict[tuple[Role, Input], _Handler] = {
    (F, In.TICK): _follower_tick,
    (F, In.VACANT): _follower_vacant,
    (F, In.HELD): _observe_held,
    (F, In.RENEWED): _stale,
    (F, In.RENEW_FAILED): _nothing,
    (F, In.EXPIRED): _nothing,
    (F, In.RESIGN): _resign,
    (C, In.TICK): _nothing,
    (C, In.VACANT): _observe_vacant,
    (C, In.HELD): _observe_held,
    (C, In.GRANTED): _granted,
    (C, In.REFUSED): _refused,
    (C, In.CAMPAIGN_FAILED): _campaign_failed,
    (C, In.RENEWED): _stale,
    (C, In.RENEW_FAILED): _nothing,
    (C, In.EXPIRED): _nothing,
    (C, In.RESIGN): _resign,
    (L, In.TICK): _leader_tick,
    (L, In.VACANT): _leader_vacant,
    (L, In.HELD): _leader_held,
    (L, In.RENEWED): _leader_renewed,
    (L, In.RENEW_FAILED): _leader_renew_failed,
    (L, In.EXPIRED): _leader_expired,
    (L, In.RESIGN): _resign,
    (R, In.TICK): _nothing,
    (R, In.VACANT): _observe_vacant,
    (R, In.HELD): _observe_held,
    (R, In.GRANTED): _resigned_granted,
    (R, In.REFUSED): _revoke_leftover,
    (R, In.CAMPAIGN_FAILED): _revoke_leftover,
    (R, In.RENEWED): _stale,
    (R, In.RENEW_FAILED): _nothing,
    (R, In.EXPIRED): _nothing,
    (R, In.RESIGN): _nothing,
}
del F, C, L, R, In

TRANSITIONS = frozenset(_TABLE)

__all__ = [
    "TRANSITIONS", "Action", "Campaign", "DropVip", "Election", "Event", "HoldVip", "Input", "Renew",
    "Revoke", "Role", "Settings", "Step", "backstop_lifetime", "lease_hex",
]
