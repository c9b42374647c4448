"""The replication core driven against a model world, by property (a Jepsen check in miniature).

The world has servers with a log of write ids, replication that copies a primary's
log to the replicas following it, processes that die (and restart empty), hang
(SIGSTOP) or get cut off from fivenines while still replicating, and clients that
write through fivenines (only to the published primary). A write is acknowledged
in ``sync`` mode only when a replica received it (Redis' ``WAIT 1``), and refused
when no replica is attached (``min-replicas-to-write 1``). In the stepped world,
fivenines' actions run one at a time between the world's moves, and a direct
client writes to the primary it connected to, cut off from fivenines or not,
until that server fails it (as a client holding its own connection does).

Hypothesis drives random histories; after every step the invariants are checked:

* no acknowledged write is ever missing from the published primary (sync);
* the published primary is a server that believes it is the primary, and the
  core's primary; fivenines never routes to two servers;
* epochs only grow; with a lease, nothing is published or promoted after the
  deadline.

And one of liveness: once every fault heals, a group whose primary of the moment was
never killed has a primary again.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.core.health import CheckResult, HealthState, Reason, TargetHealth, Transition
from fivenines.core.replication import (
    Action,
    Collect,
    Durability,
    Emit,
    Follow,
    Observation,
    PauseWrites,
    Promote,
    Publish,
    Replication,
    ResumeWrites,
    Settings,
    StoreRole,
)

IDS = ["n1", "n2", "n3"]
ADDR = {i: f"127.0.0.1:{700 + k}" for k, i in enumerate(IDS)}
PARKED = "127.0.0.1:0"  # where a parked replica replicates from: no one
BY_ADDR = {a: i for i, a in ADDR.items()}
LOST = {HealthState.UNHEALTHY, HealthState.DRAINING, HealthState.UNUSED}


@dataclass
class Node:
    primary: bool
    following: str | None
    log: list[int] = field(default_factory=list)
    alive: bool = True
    frozen: bool = False
    cut: bool = False
    paused: bool = False
    incarnation: int = 0
    linked: bool = True  # has synced from the server it follows since it last changed whom (Redis: link up)
    seen: bool = False  # fivenines saw it attached (to its primary) since it last (re)attached

    @property
    def reachable(self) -> bool:
        return self.alive and not self.frozen and not self.cut

    @property
    def running(self) -> bool:
        return self.alive and not self.frozen


class World:
    def __init__(self, durability: Durability, leased: bool = False) -> None:
        self.durability = durability
        self.core = Replication([(i, ADDR[i]) for i in IDS],
                                Settings(durability=durability, max_lag=10**9, retry_interval=1.0,
                                         switchover_timeout=3.0, leased=leased),
                                designated=None if leased else "n1")
        self.nodes = {"n1": Node(True, None)} | {i: Node(False, ADDR["n1"]) for i in IDS[1:]}
        self.health = {i: TargetHealth(2, 2) for i in IDS}
        self.now = 0.0
        self.acked: set[int] = set()
        self.writes = 0
        self.epochs: list[int] = []
        self.queue: deque[Action] = deque()
        self.published: str | None = None
        self.leased = leased
        self.lease_until = 0.0
        self.later: list[Collect] = []  # collects with a delay run at the next tick

    # ------------------------------------------------------------------ fivenines' runtime, modelled

    def enqueue(self, acts: list[Action]) -> None:
        """What a command's result made the core do next: after the actions before it."""
        self.queue.extend(acts)

    def feed(self, acts: list[Action]) -> None:
        self.queue.extend(acts)
        steps = 0
        while self.queue:
            steps += 1
            assert steps < 500, "the core keeps issuing actions without settling"
            self.do(self.queue.popleft())
        self.check()

    def observe(self, i: str) -> Observation | None:
        n = self.nodes[i]
        if not n.reachable:
            return None
        if n.primary:
            reps = tuple(ADDR[j] for j, m in self.nodes.items()
                         if j != i and m.running and not m.primary and m.following == ADDR[i])
            return Observation(StoreRole.PRIMARY, len(n.log), replicas=reps, incarnation=f"{i}.{n.incarnation}")
        src = self.nodes.get(BY_ADDR.get(n.following or "", ""))
        up = src is not None and src.running and src.primary and n.linked
        return Observation(StoreRole.REPLICA, len(n.log), n.following, up, incarnation=f"{i}.{n.incarnation}")

    def do(self, a: Action) -> None:
        core = self.core
        if isinstance(a, Publish):
            self.published = a.primary
        elif isinstance(a, Collect) and a.delay > 0:
            self.later.append(a)
        elif isinstance(a, Collect):
            for i in a.park:
                if self.nodes[i].reachable:
                    self.nodes[i].primary, self.nodes[i].following, self.nodes[i].linked = False, PARKED, False
                    self.nodes[i].seen = False
            self.enqueue(core.positions(a.round, {i: self.observe(i) for i in a.targets}, self.now))
        elif isinstance(a, Promote):
            n = self.nodes[a.target]
            ok = n.reachable and (not self.leased or self.now < self.lease_until)
            if ok:
                n.primary, n.following = True, None
                self.epochs.append(a.epoch)
            self.enqueue(core.promoted(a.round, a.target, ok, "" if ok else "unreachable", self.now))
        elif isinstance(a, Follow):
            n = self.nodes[a.target]
            ok = n.reachable
            if ok:
                n.primary, n.following, n.linked, n.seen = False, ADDR[a.primary], False, False  # until it synced
            self.enqueue(core.followed(a.target, ok, "" if ok else "unreachable", self.now))
        elif isinstance(a, PauseWrites):
            if self.nodes[a.target].reachable:
                self.nodes[a.target].paused = True
        elif isinstance(a, ResumeWrites):
            self.nodes[a.target].paused = False
        else:
            assert isinstance(a, Emit | Publish) or a.__class__.__name__ == "Cut"

    def health_changed(self, i: str, tr: Transition | None) -> None:
        if tr is not None:
            self.feed(self.core.health(i, tr.new in LOST, tr.reason.value if tr.reason else "", self.now))

    # ------------------------------------------------------------------ the world's own moves

    def heartbeat_all(self) -> None:
        for i in IDS:
            self.heartbeat(i)

    def heartbeat(self, i: str) -> None:
        obs = self.observe(i)
        p = self.core.primary
        if obs is not None and p is not None:  # what the core counts as attached (_record)
            if i == p and obs.role is StoreRole.PRIMARY:
                for a in obs.replicas:
                    self.nodes[BY_ADDR[a]].seen = True
            elif obs.role is StoreRole.REPLICA and obs.following == ADDR[p]:
                self.nodes[i].seen = True
        acts = self.core.observed(i, obs, self.now)
        self.feed(acts)
        result = CheckResult.passed() if obs is not None else CheckResult.failed(Reason.TIMEOUT)
        self.health_changed(i, self.health[i].check(result, self.now))

    def replicate(self, i: str) -> None:
        """Replica ``i`` catches up with the server it follows (partial or full resync: same log)."""
        n = self.nodes[i]
        src = self.nodes.get(BY_ADDR.get(n.following or "", ""))
        if not n.primary and n.running and src is not None and src.running and src.primary:
            n.log, n.linked = list(src.log), True

    def write(self, receivers: list[bool]) -> None:
        """A client writes through fivenines; with WAIT, ``receivers`` say which replicas get it at once."""
        self.writes += 1
        target = self.published
        if target is None:
            return  # no primary: refused
        n = self.nodes[target]
        assert n.primary, f"fivenines routed a write to {target}, which is not a primary"
        if not n.reachable or n.paused:
            return  # connection fails / hangs, or writes paused: not acknowledged
        self.take(target, receivers)

    def kill(self, i: str) -> None:
        n = self.nodes[i]
        if n.alive:
            n.alive, n.frozen, n.paused, n.seen = False, False, False, False
            self.health_changed(i, self.health[i].exited(self.now, "SIGKILL"))

    def restart(self, i: str) -> None:
        n = self.nodes[i]
        if n.alive:
            return
        follow = self.core.follow_for_start(i)  # None: as a primary; NOWHERE (""): replica of no one
        self.nodes[i] = Node(follow is None, follow or None, [], incarnation=n.incarnation + 1, linked=False)  # empty
        self.health_changed(i, self.health[i].register(self.now))

    def tick(self, dt: float) -> None:
        self.now += dt
        later, self.later = self.later, []
        for c in later:
            self.feed(self.core.positions(c.round, {i: self.observe(i) for i in c.targets}, self.now))
        self.feed(self.core.tick(self.now))

    def take(self, target: str, receivers: list[bool]) -> None:
        """Server ``target`` takes write number ``self.writes``, and acknowledges it when a replica
        got it (sync) or at once (async). A replica that re-attached since fivenines last looked
        does not acknowledge here: one that does, then fails with the primary before fivenines
        sees it, is the limit docs/replication.md names (nothing can tell fivenines it holds it)."""
        n = self.nodes[target]
        attached = [j for j, m in self.nodes.items()
                    if j != target and m.running and not m.primary and m.following == ADDR[target] and m.linked]
        if self.durability is Durability.SYNC and not attached:
            return  # min-replicas-to-write 1: refused
        w = self.writes
        n.log.append(w)
        got = [j for j, r in zip((j for j in attached if self.nodes[j].seen), receivers, strict=False) if r]
        for j in got:
            self.nodes[j].log = list(n.log)
        if self.durability is Durability.ASYNC or got:
            self.acked.add(w)

    # ------------------------------------------------------------------ invariants

    def check(self) -> None:
        core = self.core
        pub = core.published.primary
        assert pub == self.published
        if pub is not None:
            assert pub == core.primary
            assert self.nodes[pub].primary, f"published {pub} believes it is a replica"
            if self.durability is Durability.SYNC:
                missing = self.acked - set(self.nodes[pub].log)
                assert not missing, f"acknowledged writes lost on {pub}: {sorted(missing)[:10]}"
        assert self.epochs == sorted(self.epochs) and len(set(self.epochs)) == len(self.epochs)
        if self.leased and self.now >= self.lease_until:
            assert pub is None


STEP = st.one_of(
    st.tuples(st.just("heartbeat"), st.sampled_from(IDS)),
    st.tuples(st.just("heartbeat_all"), st.just("")),
    st.tuples(st.just("replicate"), st.sampled_from(IDS)),
    st.tuples(st.just("write"), st.lists(st.booleans(), min_size=2, max_size=2)),
    st.tuples(st.just("write"), st.lists(st.booleans(), min_size=2, max_size=2)),
    st.tuples(st.just("write"), st.lists(st.booleans(), min_size=2, max_size=2)),
    st.tuples(st.just("replicate"), st.sampled_from(IDS)),
    st.tuples(st.just("heartbeat_all"), st.just("")),
    st.tuples(st.just("kill"), st.sampled_from(IDS)),
    st.tuples(st.just("kill_primary"), st.just("")),
    st.tuples(st.just("restart"), st.sampled_from(IDS)),
    st.tuples(st.just("freeze"), st.sampled_from(IDS)),
    st.tuples(st.just("thaw"), st.sampled_from(IDS)),
    st.tuples(st.just("cut"), st.sampled_from(IDS)),
    st.tuples(st.just("heal"), st.sampled_from(IDS)),
    st.tuples(st.just("tick"), st.sampled_from([0.1, 0.5, 1.0])),
    st.tuples(st.just("switchover"), st.sampled_from([*IDS, ""])),
)


def run(world: World, steps: list[tuple[str, Any]]) -> None:
    for _ in range(3):
        world.heartbeat_all()
    for kind, arg in steps:
        move(world, kind, arg)


def move(world: World, kind: str, arg: Any) -> None:
    """One of the world's moves (STEP)."""
    if kind == "heartbeat":
        world.heartbeat(arg)
    elif kind == "heartbeat_all":
        world.heartbeat_all()
    elif kind == "replicate":
        world.replicate(arg)
    elif kind == "write":
        world.write(arg)
    elif kind == "kill":
        world.kill(arg)
    elif kind == "kill_primary":
        if world.published:
            world.kill(world.published)
    elif kind == "restart":
        world.restart(arg)
    elif kind == "freeze":  # (its primary stops listing it: fivenines sees it detached)
        world.nodes[arg].frozen, world.nodes[arg].seen = world.nodes[arg].alive, False
    elif kind == "thaw":
        world.nodes[arg].frozen = False
    elif kind == "cut":
        world.nodes[arg].cut = True
    elif kind == "heal":
        world.nodes[arg].cut = False
    elif kind == "tick":
        world.tick(arg)
    elif kind == "switchover":
        try:
            world.feed(world.core.request_switchover(arg or None, world.now))
        except Exception as exc:
            assert type(exc).__name__ == "ReplicationError", exc


@settings(max_examples=300, deadline=None)
@given(st.lists(STEP, max_size=60))
def test_sync_mode_never_loses_an_acknowledged_write(steps: list[tuple[str, Any]]) -> None:
    run(World(Durability.SYNC), steps)


@settings(max_examples=150, deadline=None)
@given(st.lists(STEP, max_size=60))
def test_async_mode_keeps_the_routing_invariants(steps: list[tuple[str, Any]]) -> None:
    run(World(Durability.ASYNC), steps)


def recover(world: World, rounds: int = 12) -> None:
    """Every fault heals: frozen servers resume, cuts heal, fivenines restarts the dead; then
    rounds of heartbeats, replication and ticks past the election's retry interval."""
    for n in world.nodes.values():
        n.frozen = n.cut = False
    for i in IDS:
        world.restart(i)
    for _ in range(rounds):
        world.heartbeat_all()
        for i in IDS:
            world.replicate(i)
        world.tick(1.0)
        world.heartbeat_all()


@settings(max_examples=300, deadline=None)
@given(st.lists(STEP, max_size=50))
def test_sync_mode_has_a_primary_again_once_every_fault_heals_if_the_primary_never_died(
        steps: list[tuple[str, Any]]) -> None:
    # liveness, where fivenines can know that no acknowledged write is lost: the primary of the
    # moment is never killed (killed, its writes may be on a replica fivenines cannot vouch for,
    # and refusing is right). Found: a replica killed while the primary was cut off left the
    # group without a primary for good (docs/replication.md, failover step 3).
    w = World(Durability.SYNC)
    for _ in range(3):
        w.heartbeat_all()
    for kind, arg in steps:
        if kind == "kill_primary" or (kind == "kill" and arg == w.core.primary):
            continue
        move(w, kind, arg)
    recover(w)
    e = w.core.last_election
    assert w.published is not None, f"{w.core.phase.value}: {e.describe() if e else ''}"


def test_the_model_does_detect_loss_in_async_mode() -> None:
    """The invariant checker is not vacuous: async loses the write no replica received."""
    w = World(Durability.ASYNC)
    run(w, [("write", [False, False]), ("kill", "n1"), ("heartbeat_all", "")])
    assert w.published in ("n2", "n3")
    assert w.acked - set(w.nodes[w.published].log) == {1}


def test_sync_mode_refuses_rather_than_loses() -> None:
    w = World(Durability.SYNC)
    run(w, [("write", [False, False]), ("kill", "n1"), ("heartbeat_all", "")])
    assert w.acked == set() and w.published in ("n2", "n3")
    # with both replicas gone, writes are refused, not taken unprotected
    n = w.published
    assert n is not None
    for i in IDS:
        if i != n:
            w.kill(i)
    run(w, [("write", [True, True])])
    assert w.acked == set()


@settings(max_examples=150, deadline=None)
@given(st.lists(STEP, max_size=40), st.floats(0.5, 5.0))
def test_leased_node_publishes_nothing_after_its_deadline(steps: list[tuple[str, Any]], until: float) -> None:
    w = World(Durability.SYNC, leased=True)
    for i in IDS:
        w.heartbeat(i)
    w.lease_until = until
    w.feed(w.core.acquired(until, None, 0.0))
    run(w, steps)


class SteppedWorld(World):
    """As fivenines' runtime does, routing changes (Publish, Cut) take effect at once and store
    commands wait in a queue; here they run one at a time (``act``), between the world's moves:
    a write can land between a Collect and the Promote after it, or between the Promote and the
    Follow of another replica. A direct client writes to the primary it connected to."""

    def __init__(self, durability: Durability) -> None:
        super().__init__(durability)
        self.direct: str | None = None  # the server the direct client is connected to

    def enqueue(self, acts: list[Action]) -> None:
        for a in acts:
            if isinstance(a, Publish | Emit) or a.__class__.__name__ == "Cut":
                self.do(a)
            else:
                self.queue.append(a)

    def feed(self, acts: list[Action]) -> None:
        self.enqueue(acts)
        if not self.queue:
            self.check()

    def act(self, n: int) -> None:
        for _ in range(n):
            if not self.queue:
                break
            self.do(self.queue.popleft())
        if not self.queue:
            self.check()

    def settle(self) -> None:
        steps = 0
        while self.queue:
            steps += 1
            assert steps < 500, "the core keeps issuing actions without settling"
            self.act(1)

    def direct_write(self, receivers: list[bool]) -> None:
        """The direct client's write: on its connection while that server takes writes as a
        primary (whatever fivenines thinks of it); else it connects to the published primary."""
        n = self.nodes[self.direct] if self.direct is not None else None
        if n is None or not n.running or n.paused or not n.primary:
            self.direct = self.published  # (a failed write: it reconnects, and writes next time)
            return
        self.writes += 1
        self.take(self.direct, receivers)

    def check(self) -> None:
        pub = self.published
        if pub is not None and self.durability is Durability.SYNC and self.nodes[pub].primary:
            missing = self.acked - set(self.nodes[pub].log)
            assert not missing, f"acknowledged writes lost on {pub}: {sorted(missing)[:10]}"


STEPPED = st.one_of(
    STEP,
    st.tuples(st.just("direct_write"), st.lists(st.booleans(), min_size=2, max_size=2)),
    st.tuples(st.just("direct_write"), st.lists(st.booleans(), min_size=2, max_size=2)),
    st.tuples(st.just("act"), st.integers(1, 3)),
    st.tuples(st.just("act"), st.integers(1, 3)),
    st.tuples(st.just("cut_primary"), st.just("")),
    # the primary cut off from fivenines mid-write: heartbeats fail, the failover's commands run
    # up to some point, and the direct client writes again there
    st.tuples(st.just("cut_during_failover"),
              st.tuples(st.integers(0, 4), st.lists(st.booleans(), min_size=2, max_size=2))),
)


def run_stepped(world: SteppedWorld, steps: list[tuple[str, Any]]) -> None:
    for _ in range(3):
        world.heartbeat_all()
        world.settle()
    for kind, arg in steps:
        if kind == "direct_write":
            world.direct_write(arg)
        elif kind == "act":
            world.act(arg)
        elif kind == "cut_primary":  # fivenines loses the primary; a direct client still reaches it
            if world.published:
                world.nodes[world.published].cut = True
        elif kind == "cut_during_failover":
            commands, receivers = arg
            world.direct_write([True, True])
            if world.published:
                world.nodes[world.published].cut = True
            for _ in range(2):
                world.heartbeat_all()
            world.act(commands)
            world.direct_write(receivers)
        else:
            move(world, kind, arg)
    world.settle()
    for i in IDS:  # every server back, then the group settles: nothing acknowledged may be missing
        world.nodes[i].cut = world.nodes[i].frozen = False
    for _ in range(4):
        world.tick(1.0)
        world.heartbeat_all()
        world.settle()


@settings(max_examples=400, deadline=None)
@given(st.lists(STEPPED, max_size=60))
def test_sync_mode_loses_no_write_acknowledged_to_a_direct_client_of_a_cut_off_primary(
        steps: list[tuple[str, Any]]) -> None:
    """The window a failover opens when a client reaches the lost primary itself: unless the
    replicas are parked before their positions are compared, one not promoted can acknowledge a
    write (WAIT 1) between the Collect and its Follow of the new primary, which then drops it."""
    run_stepped(SteppedWorld(Durability.SYNC), steps)


def test_the_stepped_world_finds_the_window_without_parking() -> None:
    """The property above is not vacuous: the same history, with the Collect's parking undone,
    loses a write a replica acknowledged to the cut-off primary after the positions were read."""
    for park in (True, False):
        w = SteppedWorld(Durability.SYNC)
        run_stepped(w, [("direct_write", [True, True])])  # connects to n1
        w.direct_write([True, True])
        w.nodes["n1"].cut = True  # fivenines loses n1; the direct client still reaches it
        for _ in range(2):
            w.tick(0.5)
            w.heartbeat("n1")
        [c] = [a for a in w.queue if isinstance(a, Collect)]
        if not park:
            w.queue = deque(Collect(a.round, a.targets, a.delay) if isinstance(a, Collect) else a for a in w.queue)
        while not isinstance(w.queue[0], Promote):
            w.act(1)  # up to the Collect: positions compared
        w.act(1)  # the Promote
        w.direct_write([True, True])  # a replica still following n1 acknowledges it (unless parked)
        if park:
            assert c.park == ("n2", "n3")
            w.settle()
            assert w.acked <= set(w.nodes[w.published or ""].log)
        else:
            with pytest.raises(AssertionError, match="acknowledged writes lost"):
                w.settle()
