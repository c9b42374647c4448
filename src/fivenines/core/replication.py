"""Replicated stores: who is primary, which replica to promote, whom to fence. Pure.

(Why one module of some 950 lines: it is one state machine. The rules below hold across
every handler of :class:`Replication` (a round tag, fencing, the lease deadline), and the
observation and action types are its vocabulary; split, each half would have to be read
with the other open. What is separable is small and pure already: :func:`elect`.)

Everything that decides the roles of a replicated group lives here, and nothing
else does: the runtime feeds observations (each member's role and replication
position), health changes, command results, lease changes and the time in, and
carries out the :data:`Action` values that come out, in order. No sockets, no
clocks, no sleeping.

The rules:

1. **One primary, chosen here.** Writes are routed to the primary only while it is
   not lost (ELB health), reports itself ``primary`` and (with a lease) this node
   holds the lease. Anything else publishes *no* primary: writes are refused
   rather than sent somewhere doubtful.
2. **Failover** (the primary is lost): stop routing and cut its connections, then
   collect fresh positions from every other member, and promote the replica with
   the most recent position — never one lagging more than ``max_lag`` behind the
   best known position. In ``sync`` mode a replica that may hold acknowledged
   writes (attached to the primary at its last observation) must answer: if it
   cannot, no one is promoted, because the one promoted might miss a write a
   client was told was safe. Also in ``sync`` mode the replicas are *parked*
   (detached from the lost primary, keeping what they have) before their
   positions are read: a lost primary that a client still reaches directly gets
   no acknowledgement from any of them after that, so the positions compared
   cover every acknowledged write. The positions compared are part of the event.
3. **Fencing.** A member that reports ``primary`` but is not the primary (an old
   primary coming back, a node restarted empty) is made a replica of the primary
   before anything else; it never gets traffic, since only the primary is
   published. Replicas following anyone else are re-pointed.
4. **Switchover** (planned): stop routing, pause writes on the primary, wait until
   the chosen replica has caught up with the primary's final position, promote
   it, demote the old primary. No acknowledged write can be lost; writes wait only
   for the switch.
5. **Lease** (several fivenines nodes): only the holder of the lease acts and
   routes writes, and only while ``now < valid_until``, a deadline the runtime
   computes from the time it *sent* the last successful renewal, safely before the
   lease can expire in the store. At the deadline the node steps down at once:
   no primary published, connections cut, results of its in-flight commands
   ignored. A new holder starts from the primary recorded in the store.

Transitions are data in the style of h2's stream machine: ``_TRANSITIONS`` maps
``(phase, input)`` to a handler; an input with no entry raises
:class:`~fivenines.errors.InvalidTransition`. Results of commands are tagged with
the ``round`` they were issued in; a result from an older round (the world moved
on: a step-down, an abort) is ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from fivenines.errors import ConflictError, InvalidTransition


class ReplicationError(ConflictError):
    """A request the replicated group cannot carry out now (e.g. a switchover during a failover)."""


class Durability(str, Enum):
    SYNC = "sync"
    ASYNC = "async"


class StoreRole(str, Enum):
    PRIMARY = "primary"
    REPLICA = "replica"


class Phase(str, Enum):
    DISCOVERING = "discovering"  # no primary chosen yet
    SERVING = "serving"  # a primary is chosen; writes go to it while it is healthy
    ELECTING = "electing"  # the primary is lost: collecting positions
    PROMOTING = "promoting"  # a promotion is in flight
    NO_PRIMARY = "no_primary"  # no member may be promoted now; retried every retry_interval
    SWITCHING = "switching"  # planned switchover: writes paused, waiting for the target to catch up
    FOLLOWER = "follower"  # (lease) another node holds the lease: act on nothing, route no writes
    RESTORING = "restoring"  # a backup is being loaded: writes fenced; no one elected, fenced or re-pointed


class Input(str, Enum):
    OBSERVED = "observed"
    HEALTH = "health"
    TICK = "tick"
    POSITIONS = "positions"
    PROMOTED = "promoted"
    FOLLOWED = "followed"
    SWITCHOVER = "switchover"
    ACQUIRED = "acquired"
    RENEWED = "renewed"
    LEASE_LOST = "lease_lost"
    RESTORE = "restore"
    RESTORED = "restored"


@dataclass(frozen=True, slots=True)
class Observation:
    """What one member said about itself.

    ``position`` is its replication position (Redis: the replication offset in bytes).
    ``following`` is the ``host:port`` a replica replicates from; ``replicas`` the
    addresses of the replicas attached to a primary. ``incarnation`` changes when the
    server restarts (Redis: its ``run_id``); None when the store cannot tell.
    """

    role: StoreRole
    position: int
    following: str | None = None
    link_up: bool = False
    replicas: tuple[str, ...] = ()
    incarnation: str | None = None


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Publish:
    """Route new write connections to ``primary`` (None: refuse them) and reads to ``readers``."""

    primary: str | None
    readers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Cut:
    """Close every client connection fivenines routed to ``target``'s write listener."""

    target: str
    reason: str


@dataclass(frozen=True, slots=True)
class Collect:
    """Observe ``targets`` now (after ``delay``) and report :meth:`Replication.positions`.

    ``park`` (of ``targets``): detach each from whatever it replicates first, keeping its data
    and its replication history (Redis: ``REPLICAOF`` an address no server listens on), then
    observe it; one that cannot be parked counts as unreachable."""

    round: int
    targets: tuple[str, ...]
    delay: float = 0.0
    park: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Promote:
    """Make ``target`` the primary of ``epoch`` (with a lease: record it in the store first).

    ``already_primary``: it already is one (discovery); only the record is written."""

    round: int
    target: str
    epoch: int
    already_primary: bool = False


@dataclass(frozen=True, slots=True)
class Follow:
    """Make ``target`` a replica of ``primary``. ``fence``: it claimed to be a primary."""

    round: int
    target: str
    primary: str
    fence: bool
    reason: str


@dataclass(frozen=True, slots=True)
class PauseWrites:
    target: str
    seconds: float


@dataclass(frozen=True, slots=True)
class ResumeWrites:
    target: str


@dataclass(frozen=True, slots=True)
class Emit:
    """An event for the log: kind is failover, fence, switchover, lease or discovery."""

    kind: str
    target: str
    old: str
    new: str
    reason: str


Action = Publish | Cut | Collect | Promote | Follow | PauseWrites | ResumeWrites | Emit


# --------------------------------------------------------------------------- settings and members


@dataclass(frozen=True, slots=True)
class Settings:
    durability: Durability = Durability.SYNC
    max_lag: int = 1 << 20
    read_max_lag: int | None = None  # None: no read listener
    retry_interval: float = 1.0
    switchover_timeout: float = 10.0
    leased: bool = False
    poll_delay: float = 0.01  # between catch-up polls of a switchover


@dataclass(slots=True)
class MemberView:
    id: str
    address: str
    order: int
    lost: bool = False
    lost_why: str = ""
    obs: Observation | None = None
    reported: bool = False  # observed, or found unreachable, at least once
    pending: bool = False  # a Follow is in flight
    high: int = -1  # highest position seen since it last started following the primary
    regressed: bool = False  # reported less than ``high``: restarted empty or truncated, data lost
    incarnation: str | None = None  # None: unknown, or a fresh start fivenines made itself
    synced: bool = True  # False from a fresh start until it is a primary or a linked replica
    restarted: bool = False  # (re)started since it was last made primary: what it held then may be gone
    changed_at: float = float("-inf")  # when a promote or follow of it last ended: heartbeats asked before are stale

    def record(self, obs: Observation | None) -> bool:
        """Take a fresh observation. True when it shows the member lost data since last seen:
        restarted (a new incarnation) or its position went back (``regressed`` until caught up)."""
        self.obs, self.reported = obs, True
        if obs is None:
            return False
        restarted = (obs.incarnation is not None and self.incarnation is not None
                     and obs.incarnation != self.incarnation)
        if obs.incarnation is not None:
            self.incarnation = obs.incarnation
        self.restarted = self.restarted or restarted
        if obs.role is StoreRole.PRIMARY or obs.link_up:
            self.synced = True
        if not self.synced:
            # a replica that has not synced since it started holds nothing yet: the position it
            # reports is not data (Redis says 1 before the first sync, then the primary's, maybe 0)
            return restarted
        self.regressed = obs.position < self.high
        self.high = max(self.high, obs.position)
        return restarted or self.regressed

    def fresh_start(self) -> None:
        """fivenines (re)starts it now: forget what it held; its next incarnation is expected."""
        self.incarnation, self.high, self.regressed, self.synced = None, -1, False, False
        self.restarted = True


# --------------------------------------------------------------------------- the election, a pure function

UNKNOWN_COVER = 1 << 62  # a member lost data and the primary was not seen since: nothing covers it
NOWHERE = ""  # follow_for_start: replicate from no one (a read-only replica that cannot be synced from)


@dataclass(frozen=True, slots=True)
class Compared:
    id: str
    position: int | None
    verdict: str

    def __str__(self) -> str:
        pos = "?" if self.position is None else str(self.position)
        return f"{self.id}@{pos} {self.verdict}"


@dataclass(frozen=True, slots=True)
class Election:
    """The outcome of comparing positions: the member chosen (or None) and why."""

    chosen: str | None
    resume: bool
    best_known: int
    compared: tuple[Compared, ...]
    reason: str

    def describe(self) -> str:
        head = f"best known position {self.best_known}; compared " + ", ".join(str(c) for c in self.compared)
        return f"{self.reason}; {head}" if self.reason else head


def elect(
    members: Sequence[MemberView],
    *,
    old_primary: str | None,
    known_position: int,
    durability: Durability,
    max_lag: int,
    must_cover: Mapping[str, int | None] | None = None,
    allow_resume: bool = False,
    replicated_floor: int = 0,
) -> Election:
    """Choose whom to promote: the reachable replica with the highest position, within ``max_lag``.

    ``members`` carry fresh observations (``obs is None``: unreachable now).
    ``must_cover`` (sync): members that may hold acknowledged writes no one else has.
    A member mapped to ``None`` must answer itself (it is attached to the primary); one
    mapped to a position ``c`` detached (or lost its data) when the primary was at ``c`` at
    most, so any answering replica at ``c`` or beyond covers it; :data:`UNKNOWN_COVER`:
    it lost its data and no bound is known. If one is not covered, no one is chosen: the
    one promoted might lack a write a client was told was safe. ``replicated_floor`` (sync): the highest position a
    replica of the primary ever reported; writes up to it may have been acknowledged,
    so a replica below it is not promoted. ``allow_resume``: the old primary, healthy
    again and back with at least every position known, may simply stay primary.

    >>> a = MemberView("db-1", "h:1", 0, lost=True)
    >>> b = MemberView("db-2", "h:2", 1, obs=Observation(StoreRole.REPLICA, 90))
    >>> c = MemberView("db-3", "h:3", 2, obs=Observation(StoreRole.REPLICA, 100))
    >>> e = elect([a, b, c], old_primary="db-1", known_position=100, durability=Durability.SYNC, max_lag=50)
    >>> e.chosen, e.describe()
    ('db-3', 'best known position 100; compared db-2@90 eligible (lag 10), db-3@100 chosen (lag 0)')
    """
    reachable = [m for m in members if m.obs is not None]
    best = max([known_position, *(m.obs.position for m in reachable if m.obs is not None)])
    verdicts: dict[str, str] = {}
    eligible: list[MemberView] = []
    for m in members:
        if m.id == old_primary and not allow_resume:
            continue
        o = m.obs
        if o is None:
            verdicts[m.id] = "unreachable"
        elif m.id == old_primary:
            verdicts[m.id] = f"old primary, {'lost' if m.lost else 'reports ' + o.role.value}"
        elif o.role is not StoreRole.REPLICA:
            verdicts[m.id] = "reports primary: not a replica of it"
        elif m.lost:
            verdicts[m.id] = f"lost ({m.lost_why})" if m.lost_why else "lost"
        elif m.regressed:
            verdicts[m.id] = f"lost data: position went back from {m.high} (restarted or truncated)"
        elif not m.synced:
            verdicts[m.id] = "restarted: has not synced from a primary since"
        elif best - o.position > max_lag:
            verdicts[m.id] = f"lag {best - o.position} > max_lag_on_failover {max_lag}"
        elif durability is Durability.SYNC and o.position < replicated_floor:
            verdicts[m.id] = f"behind {replicated_floor}, a position a replica held: may miss acknowledged writes"
        else:
            verdicts[m.id] = f"eligible (lag {best - o.position})"
            eligible.append(m)
    has_data = [m for m in members if m.obs is not None and m.obs.role is StoreRole.REPLICA
                and not m.regressed and m.synced]
    missing = []
    for i, cover in sorted((must_cover or {}).items()):
        if i == old_primary or (cover is None and any(m.id == i for m in has_data)):
            continue  # it answers for itself: its position is among those compared
        if cover is None:
            missing.append(i)
        elif cover == UNKNOWN_COVER:
            missing.append(f"{i} (lost data before the primary could bound it)")
        elif not any(m.obs is not None and m.obs.position >= cover for m in has_data):
            missing.append(f"{i} (detached at {cover})")
    chosen: MemberView | None = None
    resume = False
    reason = ""
    old = next((m for m in members if m.id == old_primary), None)
    back = (allow_resume and old is not None and not old.lost and old.obs is not None
            and old.obs.role is StoreRole.PRIMARY and old.obs.position >= known_position)
    if durability is Durability.SYNC and missing:
        # the old primary back as the same process holds every write it acknowledged, those of the
        # members missing too: it may stay primary (the only choice; a replica might lack them)
        if (back and old is not None and old.obs is not None and old.incarnation is not None
                and not old.restarted and not old.regressed
                and all(old.obs.position >= (m.obs.position if m.obs else 0) for m in has_data)):
            chosen, resume = old, True
            verdicts[old.id] = (f"back with position {old.obs.position} >= known {known_position}, "
                                f"not restarted: holds what {', '.join(missing)} may have acknowledged")
        else:
            reason = (f"sync: {', '.join(missing)} unreachable or lost data, and may have held acknowledged "
                      "writes; promoting another could lose them")
    else:
        if eligible:
            chosen = max(eligible, key=lambda m: (m.obs.position if m.obs else -1, -m.order))
        if (back and old is not None and old.obs is not None
                and (chosen is None or chosen.obs is None or old.obs.position >= chosen.obs.position)):
            chosen, resume = old, True
            verdicts[old.id] = f"back with position {old.obs.position} >= known {known_position}"
        if chosen is None:
            reason = "no replica may be promoted"
        elif not resume:
            verdicts[chosen.id] = verdicts[chosen.id].replace("eligible", "chosen")
    compared = tuple(
        Compared(m.id, m.obs.position if m.obs else None, verdicts[m.id]) for m in members if m.id in verdicts
    )
    return Election(chosen.id if chosen else None, resume, best, compared, reason)


# --------------------------------------------------------------------------- the group machine


@dataclass(slots=True)
class _Switch:
    target: str
    deadline: float
    goal: int | None = None


@dataclass(frozen=True, slots=True)
class _Ev:
    """The payload of one input."""

    target: str = ""
    obs: Observation | None = None
    ok: bool = False
    detail: str = ""
    results: Mapping[str, Observation | None] = field(default_factory=dict)
    until: float = 0.0
    record: tuple[str, int] | None = None
    position: int = 0  # end_restore: the restored primary's position
    intact: bool = True  # end_restore: the primary was not touched


class Replication:
    """The roles of one replicated group, as a state machine fed with events and time."""

    def __init__(self, members: Sequence[tuple[str, str]], settings: Settings | None = None, *,
                 designated: str | None = None) -> None:
        """``members``: (id, host:port) in order. ``designated``: the primary fivenines started
        (instances); without it the primary is discovered from what members report."""
        self.settings = settings or Settings()
        self.members: dict[str, MemberView] = {
            tid: MemberView(tid, addr, i) for i, (tid, addr) in enumerate(members)
        }
        if len(self.members) != len(members):
            raise ValueError("member ids must be unique")
        self.phase = Phase.FOLLOWER if self.settings.leased else Phase.DISCOVERING
        self.primary: str | None = None
        self.epoch = 0
        self.known_position = 0
        self.replicated_floor = 0  # highest position a replica of the primary reported
        self.round = 0
        self.retry_at = 0.0
        self.leader_until = 0.0
        self.switch: _Switch | None = None
        self.last_election: Election | None = None
        self.published: Publish = Publish(None, ())
        # members that may hold acknowledged writes this epoch: id -> None (attached: must answer)
        # or the primary's position when it was seen detached (any replica that far covers it)
        self.attached: dict[str, int | None] = {}
        self.unbounded: set[str] = set()  # lost data since attached; bounded at the next primary report
        self.must_cover: dict[str, int | None] = {}
        self.parking: frozenset[str] = frozenset()  # parked by the election's latest Collect
        if designated is not None and not self.settings.leased:
            if designated not in self.members:
                raise ValueError(f"designated primary {designated!r} is not a member")
            self.primary, self.epoch, self.phase = designated, 1, Phase.SERVING

    # ------------------------------------------------------------------ inputs

    def observed(self, target: str, obs: Observation | None, now: float, asked_at: float | None = None) -> list[Action]:
        """A heartbeat's result: ``obs`` (None: unreachable), asked at ``asked_at`` (default: now).

        A heartbeat asked before a promote or follow of the member ended is ignored: it may show
        the role from before (a replica just promoted, still reported following the lost primary,
        would start another election); the next heartbeat tells."""
        m = self.members.get(target)
        if m is not None and asked_at is not None and asked_at <= m.changed_at:
            return []
        return self._handle(Input.OBSERVED, _Ev(target=target, obs=obs), now)

    def health(self, target: str, lost: bool, why: str, now: float) -> list[Action]:
        """The target's ELB health changed: ``lost`` when unhealthy (or exited, draining, unused)."""
        return self._handle(Input.HEALTH, _Ev(target=target, ok=not lost, detail=why), now)

    def tick(self, now: float) -> list[Action]:
        return self._handle(Input.TICK, _Ev(), now)

    def positions(self, round_: int, results: Mapping[str, Observation | None], now: float) -> list[Action]:
        """Fresh observations asked for by :class:`Collect`."""
        return self._handle(Input.POSITIONS, _Ev(results=results), now, round_)

    def promoted(self, round_: int, target: str, ok: bool, detail: str, now: float) -> list[Action]:
        return self._handle(Input.PROMOTED, _Ev(target=target, ok=ok, detail=detail), now, round_)

    def followed(self, target: str, ok: bool, detail: str, now: float) -> list[Action]:
        return self._handle(Input.FOLLOWED, _Ev(target=target, ok=ok, detail=detail), now)

    def request_switchover(self, to: str | None, now: float) -> list[Action]:
        """Planned change of primary, to ``to`` or to the most advanced healthy replica.

        Raises :class:`ReplicationError` (with the reason) when it cannot start now."""
        if not self.can_act(now):
            raise ReplicationError("this node does not hold the lease: run the switchover on the leader")
        if self.phase is not Phase.SERVING or self.published.primary is None:
            raise ReplicationError(f"cannot switch over while {self.phase.value}"
                                   + ("" if self.phase is not Phase.SERVING else ": the primary is not serving"))
        return self._handle(Input.SWITCHOVER, _Ev(target=to or ""), now)

    def begin_restore(self, now: float) -> list[Action]:
        """A backup is about to be loaded into the group (see :mod:`fivenines.core.restore_plan`): stop
        routing writes and cut the primary's connections; until :meth:`end_restore` nothing is
        elected, fenced or re-pointed (the restore moves roles itself). Raises
        :class:`ReplicationError` when it cannot start now."""
        if not self.can_act(now):
            raise ReplicationError("this node does not hold the lease: run the restore on the leader")
        if self.phase is not Phase.SERVING or self.primary is None:
            raise ReplicationError(f"cannot restore while {self.phase.value}")
        return self._handle(Input.RESTORE, _Ev(), now)

    def end_restore(self, ok: bool, position: int, detail: str, now: float, *,
                    primary_intact: bool = True) -> list[Action]:
        """The restore is over. ``ok``: the primary holds the backup at ``position`` and the replicas
        follow it: a new history starts (positions before it mean nothing now). Failed with the
        primary untouched (``primary_intact``): serve as before (held replicas are re-pointed).
        Failed after the primary began loading: its data is uncertain, so elect among the replicas,
        which kept theirs."""
        return self._handle(Input.RESTORED, _Ev(ok=ok, detail=detail, position=position, intact=primary_intact), now)

    def acquired(self, until: float, record: tuple[str, int] | None, now: float) -> list[Action]:
        """This node now holds the lease, valid until ``until``; ``record``: (primary, epoch) stored."""
        return self._handle(Input.ACQUIRED, _Ev(until=until, record=record), now)

    def renewed(self, until: float, now: float) -> list[Action]:
        return self._handle(Input.RENEWED, _Ev(until=until), now)

    def lease_lost(self, why: str, now: float) -> list[Action]:
        return self._handle(Input.LEASE_LOST, _Ev(detail=why), now)

    # ------------------------------------------------------------------ queries

    def can_act(self, now: float) -> bool:
        return not self.settings.leased or (self.phase is not Phase.FOLLOWER and now < self.leader_until)

    def follow_for_start(self, target: str) -> str | None:
        """What a member fivenines (re)starts now replicates from: the primary's address; None
        for the primary itself at its first start; :data:`NOWHERE` when no primary is live.

        A member restarted empty must never come up as a primary at an address replicas
        follow (they would resync from it and drop their data), so with no live primary it
        starts as a replica of nothing, and is re-pointed once a primary is chosen. From its
        start on it may acknowledge writes (sync), so it counts among the members that must
        answer (or be covered) before a failover; what it held before is gone."""
        m = self.members[target]
        m.fresh_start()
        if self.attached.get(target, 0) is None:
            self.unbounded.add(target)  # it was attached: it may have acknowledged writes it lost
        live = self.phase in (Phase.SERVING, Phase.SWITCHING) and self.primary is not None
        if live and self.primary == target:
            m.synced, m.restarted = True, False  # its first start: what it holds from now on counts
            return None
        if not live or self.primary is None:
            return NOWHERE
        self.attached.setdefault(target, None)
        return self.members[self.primary].address

    def snapshot(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value,
            "primary": self.primary,
            "publishing": self.published.primary,
            "readers": list(self.published.readers),
            "epoch": self.epoch,
            "known_position": self.known_position,
            "replicated_floor": self.replicated_floor,
            "leader_until": self.leader_until if self.settings.leased else None,
            "switchover_to": self.switch.target if self.switch else None,
            "last_election": self.last_election.describe() if self.last_election else None,
        }

    def __repr__(self) -> str:
        return (f"<Replication {self.phase.value} primary={self.primary} epoch={self.epoch} "
                f"publishing={self.published.primary} readers={list(self.published.readers)}>")

    # ------------------------------------------------------------------ machinery

    def _handle(self, inp: Input, ev: _Ev, now: float, round_: int | None = None) -> list[Action]:
        acts = self._expire_lease(now)
        stale = round_ is not None and round_ != self.round  # the world moved on since it was asked
        if round_ is not None and not stale:
            self.round += 1  # consumed: a duplicate is stale
        if not stale:
            handler = _TRANSITIONS.get((self.phase, inp))
            if handler is None:
                raise InvalidTransition(f"Invalid input {inp.value} in state {self.phase.value}")
            acts += handler(self, ev, now)
        acts += self._settle(now)
        # stop routing (and cut) before anything slow is done about it
        return sorted(acts, key=lambda a: 0 if isinstance(a, Publish | Cut) else 1)

    def _expire_lease(self, now: float) -> list[Action]:
        if self.settings.leased and self.phase is not Phase.FOLLOWER and now >= self.leader_until:
            return self._step_down("lease deadline passed: stepped down before the lease could expire")
        return []

    def _step_down(self, why: str) -> list[Action]:
        self.phase = Phase.FOLLOWER
        self.round += 1
        self.switch = None
        self.leader_until = 0.0
        for m in self.members.values():
            m.pending = False
        return [Emit("lease", "", "leader", "follower", why)]

    def _next_round(self) -> int:
        self.round += 1
        return self.round

    def _addr(self, tid: str | None) -> str | None:
        return self.members[tid].address if tid is not None else None

    def _serving(self, now: float) -> Publish:
        if not self.can_act(now) or self.phase is Phase.FOLLOWER:
            return Publish(None, ())
        p = self.members.get(self.primary) if self.primary else None
        primary = None
        if (self.phase is Phase.SERVING and p is not None and not p.lost and p.obs is not None
                and p.obs.role is StoreRole.PRIMARY):
            primary = p.id
        readers: tuple[str, ...] = ()
        bound = self.settings.read_max_lag
        paddr = self._addr(self.primary)
        if bound is not None and paddr is not None:
            top = max([self.known_position, *(m.obs.position for m in self.members.values() if m.obs)])
            readers = tuple(
                m.id for m in self.members.values()
                if m.id != self.primary and not m.lost and m.obs is not None
                and m.obs.role is StoreRole.REPLICA and m.obs.following == paddr
                and top - m.obs.position <= bound
            )
        return Publish(primary, readers)

    def _settle(self, now: float) -> list[Action]:
        """After every input: fence and re-point members, publish what changed."""
        acts: list[Action] = []
        if self.phase is Phase.SERVING and self.can_act(now):
            p = self.members.get(self.primary) if self.primary else None
            if p is not None and p.lost:
                acts += self._begin_election(now, f"{p.id} lost: {p.lost_why}" if p.lost_why else f"{p.id} lost")
            else:
                acts += self._fence()
        pub = self._serving(now)
        if pub != self.published:
            old = self.published.primary
            self.published = pub
            acts.append(pub)
            if old is not None and old != pub.primary:
                acts.append(Cut(old, f"no longer the primary to route to (now {pub.primary or 'none'})"))
        return acts

    def _fence(self) -> list[Action]:
        p = self.members.get(self.primary) if self.primary else None
        if p is None or p.obs is None or p.obs.role is not StoreRole.PRIMARY:
            return []
        acts: list[Action] = []
        for m in self.members.values():
            if m.id == p.id or m.pending or m.obs is None:
                continue
            if m.obs.role is StoreRole.PRIMARY:
                m.pending = True
                why = f"reports primary but the primary is {p.id} (epoch {self.epoch}): demoted before any traffic"
                acts.append(Follow(self.round, m.id, p.id, True, why))
                acts.append(Emit("fence", m.id, "primary", "replica", why))
            elif m.obs.following != p.address:
                m.pending = True
                acts.append(Follow(self.round, m.id, p.id, False,
                                   f"follows {m.obs.following or 'nothing'}; re-pointed to {p.id}"))
        return acts

    def _begin_election(self, now: float, why: str) -> list[Action]:
        self.phase = Phase.ELECTING
        self.switch = None
        self.must_cover = {**self.attached, **{i: UNKNOWN_COVER for i in self.unbounded}}
        if self.primary is not None:
            self.members[self.primary].obs = None  # lost: nothing it said still holds
        targets = tuple(m for m in self.members if m != self.primary)
        return [
            Emit("failover", self.primary or "", "primary", "lost", why),
            self._election_collect(targets),
        ]

    def _election_collect(self, targets: tuple[str, ...]) -> Collect:
        """An election's Collect of ``targets``, and whom it parks (kept in ``parking``): in
        ``sync`` mode every member but the lost primary that is not known to be a primary itself
        (so no replica acknowledges a write to the lost primary while the positions are compared,
        nor until it follows the one promoted); in ``async`` mode no one (losing the last writes
        is the trade)."""
        park: tuple[str, ...] = ()
        if self.settings.durability is Durability.SYNC:
            park = tuple(t for t in targets if t != self.primary
                         and ((o := self.members[t].obs) is None or o.role is StoreRole.REPLICA))
        self.parking = frozenset(park)
        return Collect(self._next_round(), targets, park=park)

    def _retry_later(self, now: float) -> None:
        self.phase = Phase.NO_PRIMARY
        self.retry_at = now + self.settings.retry_interval

    # ------------------------------------------------------------------ handlers

    def _on_observed(self, ev: _Ev, now: float) -> list[Action]:
        m = self._member(ev.target)
        self._record(m, ev.obs)
        o = ev.obs
        if m.id == self.primary and o is not None and o.role is StoreRole.PRIMARY:
            self.known_position = max(self.known_position, o.position)
        if self.phase is Phase.DISCOVERING:
            return self._discover(now)
        if (self.phase is Phase.SERVING and m.id == self.primary and o is not None
                and o.role is StoreRole.REPLICA and self.can_act(now)):
            return self._begin_election(now, f"{m.id} reports being a replica of {o.following}")
        return []

    def _on_health(self, ev: _Ev, now: float) -> list[Action]:
        m = self._member(ev.target)
        was_lost, m.lost = m.lost, not ev.ok
        m.lost_why = ev.detail if m.lost else ""
        if self.phase is Phase.SWITCHING and self.switch is not None and m.lost and not was_lost:
            if m.id == self.primary:
                return self._begin_election(now, f"{m.id} lost during a switchover: {ev.detail}")
            if m.id == self.switch.target:
                return self._abort_switch(f"{m.id} became unhealthy: {ev.detail}")
        return []  # a lost primary while serving: see _settle

    def _on_tick(self, ev: _Ev, now: float) -> list[Action]:
        if self.phase is Phase.NO_PRIMARY and now >= self.retry_at:
            self.phase = Phase.ELECTING  # must_cover is kept from when the primary was lost
            return [self._election_collect(tuple(self.members))]
        if self.phase is Phase.SWITCHING and self.switch is not None and now >= self.switch.deadline:
            return self._abort_switch(f"{self.switch.target} did not catch up within "
                                      f"{self.settings.switchover_timeout:g}s")
        if self.phase is Phase.DISCOVERING:
            return self._discover(now)
        return []

    def _on_positions_electing(self, ev: _Ev, now: float) -> list[Action]:
        paddr = self._addr(self.primary)
        for tid, obs in ev.results.items():
            m = self._member(tid)
            followed = m.obs is not None and m.obs.role is StoreRole.REPLICA and m.obs.following == paddr
            self._record(m, obs)
            if (tid in self.parking and obs is not None and obs.role is StoreRole.REPLICA
                    and (followed or tid in self.must_cover)):
                # parked just now, a replica of the lost primary until then (as when it is seen
                # following it: _record)
                self._held(m, obs.position)
        allow_resume = self.primary in ev.results
        e = elect(list(self.members.values()), old_primary=self.primary, known_position=self.known_position,
                  durability=self.settings.durability, max_lag=self.settings.max_lag,
                  must_cover=self.must_cover, allow_resume=allow_resume,
                  replicated_floor=self.replicated_floor)
        self.last_election = e
        if e.chosen is None:
            self._retry_later(now)
            return [Emit("failover", self.primary or "", "lost", "no primary",
                         f"{e.describe()}; retrying every {self.settings.retry_interval:g}s")]
        self.phase = Phase.PROMOTING
        if e.resume:  # the lost primary is back with everything: keep it (recorded under a new epoch)
            return [Emit("failover", e.chosen, "lost", "primary", f"resumed: {e.describe()}"),
                    Promote(self._next_round(), e.chosen, self.epoch + 1, already_primary=True)]
        return [Promote(self._next_round(), e.chosen, self.epoch + 1)]

    def _on_promoted(self, ev: _Ev, now: float) -> list[Action]:
        old = self.primary
        planned = self.switch is not None
        m = self._member(ev.target)
        m.changed_at = now
        if not ev.ok:
            acts: list[Action] = [Emit("switchover" if planned else "failover", m.id, "replica", "replica",
                                       f"promotion failed: {ev.detail}")]
            if planned and self.switch is not None and old is not None:
                return acts + self._abort_switch(f"promotion of {m.id} failed")
            self._retry_later(now)
            return acts
        if self.primary != m.id:
            if self.primary is not None:
                self.members[self.primary].high = -1  # its tail may be writes no replica has
            self.attached, self.unbounded = {}, set()
        self.primary = m.id
        self.epoch += 1
        m.restarted = False
        pos = m.obs.position if m.obs else 0
        self.known_position = max(self.known_position, pos)
        m.obs = Observation(StoreRole.PRIMARY, pos)
        self.phase = Phase.SERVING
        acts = []
        if planned and old is not None:
            o = self._member(old)
            self.switch = None
            o.pending = True
            o.obs = Observation(StoreRole.PRIMARY, pos)
            acts.append(Follow(self.round, old, m.id, True, f"switched over to {m.id}: old primary demoted"))
            acts.append(ResumeWrites(old))
            acts.append(Emit("switchover", m.id, old or "", m.id,
                             f"epoch {self.epoch}: {m.id} caught up at position {pos}; {old} demoted"))
        elif old == m.id:
            acts.append(Emit("discovery", m.id, "", "primary", f"epoch {self.epoch}: {m.id} is the primary"))
        else:
            why = self.last_election.describe() if self.last_election else ""
            acts.append(Emit("failover", m.id, old or "", m.id, f"promoted, epoch {self.epoch}: {why}"))
        return acts

    def _on_followed(self, ev: _Ev, now: float) -> list[Action]:
        m = self._member(ev.target)
        m.pending, m.changed_at = False, now
        if not ev.ok:
            m.obs = None  # unknown until observed again (no retry storm against a dead member)
            return [Emit("fence", m.id, "", "", f"follow failed: {ev.detail}")]
        m.high, m.regressed = -1, False  # its history is the primary's from now on
        if m.obs is not None and m.obs.role is StoreRole.PRIMARY:
            m.synced = False  # a demoted primary's tail may be writes no one else has: not promoted before it synced
        if self.primary is not None and m.id != self.primary:
            self.attached.setdefault(m.id, None)
        if m.obs is not None and self.primary is not None:
            m.obs = Observation(StoreRole.REPLICA, m.obs.position, self._addr(self.primary), False)
        return []

    def _on_switchover(self, ev: _Ev, now: float) -> list[Action]:
        p = self._member(self.primary or "")
        ok = [m for m in self.members.values()
              if m.id != p.id and not m.lost and m.obs is not None and m.obs.role is StoreRole.REPLICA
              and m.obs.following == p.address]
        if ev.target:
            target = self.members.get(ev.target)
            if target is None:
                raise ReplicationError(f"no target {ev.target!r}; members: {', '.join(self.members)}")
            if target.id == p.id:
                raise ReplicationError(f"{target.id} is already the primary")
            if target not in ok:
                raise ReplicationError(f"{target.id} is not a healthy replica of {p.id}")
        elif not ok:
            raise ReplicationError(f"no healthy replica of {p.id} to switch over to")
        else:
            target = max(ok, key=lambda m: (m.obs.position if m.obs else -1, -m.order))
        timeout = self.settings.switchover_timeout
        self.phase = Phase.SWITCHING
        self.switch = _Switch(target.id, now + timeout)
        self.published = Publish(None, self.published.readers)
        return [
            Emit("switchover", target.id, p.id, target.id, f"requested: pausing writes on {p.id}"),
            Publish(None, self.published.readers),
            Cut(p.id, f"switchover to {target.id}"),
            PauseWrites(p.id, timeout),
            Collect(self._next_round(), (p.id, target.id)),
        ]

    def _on_positions_switching(self, ev: _Ev, now: float) -> list[Action]:
        sw = self.switch
        assert sw is not None and self.primary is not None
        pobs = ev.results.get(self.primary)
        tobs = ev.results.get(sw.target)
        if pobs is None or pobs.role is not StoreRole.PRIMARY:
            return self._abort_switch(f"{self.primary} did not answer as primary during the switchover")
        if tobs is None or tobs.role is not StoreRole.REPLICA:
            return self._abort_switch(f"{sw.target} did not answer as a replica during the switchover")
        if sw.goal is None:
            sw.goal = pobs.position  # writes are paused: the primary's final position
        self._record(self._member(sw.target), tobs)
        if tobs.position >= sw.goal:
            self.phase = Phase.PROMOTING
            self.last_election = None
            return [Promote(self._next_round(), sw.target, self.epoch + 1)]
        return [Collect(self._next_round(), (self.primary, sw.target), self.settings.poll_delay)]

    def _abort_switch(self, why: str) -> list[Action]:
        sw = self.switch
        self.switch = None
        self.phase = Phase.SERVING
        self.round += 1
        acts: list[Action] = []
        if self.primary is not None:
            acts.append(ResumeWrites(self.primary))
        acts.append(Emit("switchover", sw.target if sw else "", "", "", f"aborted: {why}; primary unchanged"))
        return acts

    def _on_acquired(self, ev: _Ev, now: float) -> list[Action]:
        self.leader_until = ev.until
        self.round += 1
        rec = ev.record
        if rec is not None and rec[0] in self.members:
            self.primary, self.epoch = rec
            # what the previous leader saw is unknown: every replica may hold acknowledged writes
            self.attached, self.unbounded = {i: None for i in self.members if i != rec[0]}, set()
            self.phase = Phase.SERVING
            why = f"holds the lease; primary {rec[0]} (epoch {rec[1]}) from the store"
            return [Emit("lease", "", "follower", "leader", why)]
        self.primary = None
        self.epoch = rec[1] if rec is not None else 0
        self.phase = Phase.DISCOVERING
        return [Emit("lease", "", "follower", "leader", "holds the lease; no primary recorded: discovering"),
                *self._discover(now)]

    def _on_renewed(self, ev: _Ev, now: float) -> list[Action]:
        if self.phase is not Phase.FOLLOWER:
            self.leader_until = max(self.leader_until, ev.until)
        return []

    def _on_lease_lost(self, ev: _Ev, now: float) -> list[Action]:
        if self.phase is Phase.FOLLOWER:
            return []
        return self._step_down(f"lease lost: {ev.detail}")

    def _on_restore(self, ev: _Ev, now: float) -> list[Action]:
        self.phase = Phase.RESTORING
        self.round += 1  # results of commands issued before are stale
        return [Emit("recovery", self.primary or "", "serving", "restoring",
                     "restoring a backup: writes fenced, no failover until it ends")]

    def _on_restored(self, ev: _Ev, now: float) -> list[Action]:
        p = self._member(self.primary or "")
        if ev.ok:
            for m in self.members.values():
                m.high, m.regressed = -1, False
            self.attached, self.unbounded, self.must_cover = {}, set(), {}
            self.replicated_floor = 0
            self.known_position = ev.position
            p.obs = Observation(StoreRole.PRIMARY, ev.position, incarnation=p.incarnation)
            p.high = ev.position
            self.phase = Phase.SERVING
            return [Emit("recovery", p.id, "restoring", "serving", f"restored: {ev.detail}")]
        if ev.intact:
            self.phase = Phase.SERVING
            return [Emit("recovery", p.id, "restoring", "serving", f"restore failed, primary unchanged: {ev.detail}")]
        self.phase = Phase.SERVING
        return self._begin_election(now, f"restore failed after {p.id} began loading (its data is uncertain): "
                                         f"{ev.detail}")

    def _on_ignored(self, ev: _Ev, now: float) -> list[Action]:
        return []

    # ------------------------------------------------------------------ discovery

    def _discover(self, now: float) -> list[Action]:
        """Choose the primary from what members report, once every member reported (or timed out)."""
        ms = list(self.members.values())
        if not all(m.reported for m in ms) or not self.can_act(now):
            return []
        by_addr = {m.address: m for m in ms}
        followers: dict[str, int] = {}
        for m in ms:
            if m.obs is not None and m.obs.role is StoreRole.REPLICA and m.obs.following in by_addr:
                followers[by_addr[m.obs.following].id] = followers.get(by_addr[m.obs.following].id, 0) + 1
        primaries = [m for m in ms if m.obs is not None and m.obs.role is StoreRole.PRIMARY]
        if followers:
            # the member most replicas follow: a primary chosen before (by us or another node)
            chosen = max((self.members[i] for i in followers), key=lambda m: (followers[m.id], -m.order))
            why = f"followed by {followers[chosen.id]} replica(s)"
        elif primaries:
            chosen = max(primaries, key=lambda m: (m.obs.position if m.obs else -1, -m.order))
            why = "no replica follows anyone: the primary with the highest position, then the first"
        else:
            return []
        pos = ", ".join(f"{m.id}@{m.obs.position if m.obs else '?'}" for m in ms)
        if chosen.obs is None or chosen.obs.role is not StoreRole.PRIMARY:
            # followed but not answering as primary: it is the primary; health checks decide if it is lost
            self.primary, self.phase = chosen.id, Phase.SERVING
            return [Emit("discovery", chosen.id, "", "primary", f"{why}, not answering as primary yet; {pos}")]
        self.phase = Phase.PROMOTING
        self.primary = chosen.id
        return [Emit("discovery", chosen.id, "", "primary", f"{why}; {pos}"),
                Promote(self._next_round(), chosen.id, self.epoch + 1, already_primary=True)]

    def _record(self, m: MemberView, obs: Observation | None) -> None:
        """Take an observation; track who may hold acknowledged writes (sync)."""
        if m.record(obs) and m.id in self.attached and self.attached[m.id] is None:
            self.unbounded.add(m.id)  # it may have acknowledged writes it no longer has
        paddr = self._addr(self.primary)
        if obs is None or paddr is None:
            return
        if m.id == self.primary and obs.role is StoreRole.PRIMARY:
            for i in self.unbounded:
                self.attached[i] = obs.position  # it lost them before this: anyone this far has them
            self.unbounded.clear()
            by_addr = {x.address: x.id for x in self.members.values()}
            listed = {by_addr[a] for a in obs.replicas if a in by_addr}
            for i in listed:
                lo = self.members[i].obs
                self._attach(i, lo.position if lo is not None else None)
            for i, cover in self.attached.items():
                if cover is None and i not in listed:
                    self.attached[i] = obs.position  # detached: it acked nothing beyond this
        elif obs.role is StoreRole.REPLICA and obs.following == paddr and m.id != self.primary:
            self._held(m, obs.position)
            self._attach(m.id, obs.position)

    def _held(self, m: MemberView, position: int) -> None:
        """Replica ``m`` of the primary holds ``position``: writes up to it may have been
        acknowledged, so no replica below it is promoted (``replicated_floor``). Not before its
        first sync: the position it reports then is not data (MemberView.record)."""
        if m.synced:
            self.replicated_floor = max(self.replicated_floor, position)

    def _attach(self, tid: str, position: int | None) -> None:
        """``tid`` is attached to the primary (it follows it, or the primary lists it; ``position``:
        its own, None when it could not be observed): it must answer at a failover. A member
        bounded earlier (detached at a position) is so again unless it lost data: its own
        position went back below the bound, or it restarted since."""
        cover = self.attached.get(tid, None)
        if tid not in self.attached or (cover is not None and (position is None or position >= cover)
                                        and not self.members[tid].regressed and tid not in self.unbounded):
            self.attached[tid] = None

    def _member(self, tid: str) -> MemberView:
        m = self.members.get(tid)
        if m is None:
            raise InvalidTransition(f"no member {tid!r}")
        return m


_Handler = Callable[[Replication, _Ev, float], list[Action]]


def _table() -> dict[tuple[Phase, Input], _Handler]:
    t: dict[tuple[Phase, Input], _Handler] = {}
    R = Replication
    for ph in Phase:
        t[(ph, Input.OBSERVED)] = R._on_observed
        t[(ph, Input.HEALTH)] = R._on_health
        t[(ph, Input.TICK)] = R._on_tick
        t[(ph, Input.FOLLOWED)] = R._on_followed
        t[(ph, Input.LEASE_LOST)] = R._on_lease_lost
        t[(ph, Input.RENEWED)] = R._on_renewed
    t[(Phase.ELECTING, Input.POSITIONS)] = R._on_positions_electing
    t[(Phase.SWITCHING, Input.POSITIONS)] = R._on_positions_switching
    t[(Phase.PROMOTING, Input.PROMOTED)] = R._on_promoted
    t[(Phase.SERVING, Input.SWITCHOVER)] = R._on_switchover
    t[(Phase.FOLLOWER, Input.ACQUIRED)] = R._on_acquired
    t[(Phase.SERVING, Input.RESTORE)] = R._on_restore
    t[(Phase.RESTORING, Input.RESTORED)] = R._on_restored
    t[(Phase.FOLLOWER, Input.RESTORED)] = R._on_ignored  # stepped down (lease) while restoring
    return t


_TRANSITIONS: dict[tuple[Phase, Input], _Handler] = _table()


# --------------------------------------------------------------------------- lease arithmetic


def lease_valid_until(sent_at: float, granted_ttl: float, margin: float | None = None) -> float:
    """Until when a lease holder may act: measured from when the renewal was *sent*.

    The store started the lease's new time-to-live no earlier than it received the
    request, so ``sent_at + ttl`` is a lower bound of the expiry; ``margin`` (default a
    quarter of the ttl) covers clock-rate drift and the time it takes to stop routing.

    >>> lease_valid_until(100.0, 4.0)
    103.0
    """
    if margin is None:
        margin = granted_ttl / 4
    return sent_at + granted_ttl - margin


def renew_every(ttl: float) -> float:
    """How often to renew so that two renewals may fail before the deadline.

    >>> renew_every(6.0)
    1.0
    """
    return ttl / 6


def min_replicas_max_lag(interval: float, unhealthy_threshold: int, timeout: float) -> int:
    """Redis ``min-replicas-max-lag`` (whole seconds): about the time fivenines takes to call a target lost.

    >>> min_replicas_max_lag(0.2, 2, 0.1), min_replicas_max_lag(5, 3, 2)
    (1, 17)
    """
    import math

    return max(1, math.ceil(interval * unhealthy_threshold + timeout))


__all__ = [
    "NOWHERE", "UNKNOWN_COVER", "Action", "Collect", "Compared", "Cut", "Durability", "Election", "Emit", "Follow", "Input", "MemberView",
    "Observation", "PauseWrites", "Phase", "Promote", "Publish", "Replication", "ReplicationError",
    "ResumeWrites", "Settings", "StoreRole", "elect", "lease_valid_until", "min_replicas_max_lag",
    "renew_every",
]
