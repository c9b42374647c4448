"""Which faults a chaos run injects, and when. Pure: a seed in, a list of planned faults out.

Two ways to plan:

* :func:`exponential_schedule`: arrivals of a Poisson process (exponential
  inter-arrival times with mean ``mtbf``) between ``start`` and ``end``; the kinds
  cycle through the requested ones in a seeded random order, so that every kind
  appears once in each block of ``len(kinds)`` faults;
* :func:`parse_schedule`: a fixed list such as ``"10s:kill, 25s:hang:web-2, 40s:error"``
  (``AT:KIND[:TARGET]``).

A planned fault names its target only when the schedule says so; otherwise the
runner picks one of the serving targets when the time comes, using the fault's
``pick`` (a uniform draw in [0, 1) from the same seed), so one seed gives one run.

>>> plan = exponential_schedule(mtbf=10.0, start=5.0, end=60.0, kinds=parse_kinds("kill,hang"), seed=1)
>>> [(round(f.at, 1), f.kind.value) for f in plan][:3]
[(6.4, 'kill'), (13.3, 'hang'), (23.8, 'kill')]
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum

from fivenines.spec import format_duration, parse_duration


class FaultKind(str, Enum):
    KILL = "kill"  # SIGKILL the instance (fivenines restarts it)
    HANG = "hang"  # SIGSTOP the instance for a while, then SIGCONT
    ERROR = "error"  # the demo answers 500 (/_fail) for a while, then /_recover
    SLOW = "slow"  # the demo answers slowly (/_slow?ms=N) for a while, then /_recover
    RESET = "reset"  # every TCP connection of the instance is reset at once
    LB = "lb"  # SIGKILL one data-plane worker (needs workers > 1); cluster: the VIP holder's fivenines
    WIPE = "wipe"  # FLUSHALL on a replicated store's primary, then a restore from backup (a run of its own)
    NODE = "node"  # cluster: a node crashes (every process killed, cable pulled), back after the fault duration
    PARTITION = "partition"  # cluster: the VIP holder cut from etcd (vrrp: from the other node) for a while

    @property
    def lasts(self) -> bool:
        """True for faults that stay until chaos undoes them (``hang``, ``error``, ``slow``)."""
        return self in (FaultKind.HANG, FaultKind.ERROR, FaultKind.SLOW, FaultKind.NODE, FaultKind.PARTITION)

    @property
    def on_target(self) -> bool:
        """True for faults aimed at a target (an instance); ``lb`` hits the load balancer, ``wipe``
        the data of a replicated group."""
        return self not in (FaultKind.LB, FaultKind.WIPE, FaultKind.NODE, FaultKind.PARTITION)


CLUSTER_KINDS = (FaultKind.NODE, FaultKind.LB, FaultKind.PARTITION)
"""The faults of a run on a spec with ``cluster:`` (the default there): aimed at nodes, not instances."""

LOAD_KINDS = tuple(k for k in FaultKind if k not in (FaultKind.WIPE, FaultKind.NODE, FaultKind.PARTITION))
"""The faults of a run under HTTP load on one fivenines (the default); ``wipe`` is a run of its own,
``node`` and ``partition`` need a cluster (docs/chaos.md)."""


DESCRIPTIONS: dict[FaultKind, str] = {
    FaultKind.KILL: "SIGKILL an instance; fivenines restarts it",
    FaultKind.HANG: "SIGSTOP an instance, SIGCONT after the fault duration",
    FaultKind.ERROR: "the instance answers 500 (demo /_fail), /_recover after the fault duration",
    FaultKind.SLOW: "the instance answers slowly (demo /_slow?ms=N), /_recover after the fault duration",
    FaultKind.RESET: "reset every TCP connection of the instance at once",
    FaultKind.LB: "SIGKILL one data-plane worker (workers > 1); in a cluster, the VIP holder's fivenines up "
                  "(its instances keep running), started again after the fault duration",
    FaultKind.WIPE: "FLUSHALL on a replicated group's primary (the replicas copy it); after the fault duration, "
                    "a restore from backup through the admin API; each acknowledged write lost is counted",
    FaultKind.NODE: "a node crashes: every process of its host killed, its cable pulled; after the fault duration "
                    "the cable is back and fivenines up --node starts again",
    FaultKind.PARTITION: "the VIP holder cut from etcd (vrrp: from the other node) by nft in its namespace, "
                         "healed after the fault duration",
}


def cluster_fault_problem(kinds: Sequence[FaultKind], *, spec_file: str, clustered: bool,
                          rig_unavailable: str | None = None) -> str | None:
    """Why ``kinds`` cannot run on this spec (a usage error naming the option), or None.

    A spec with ``cluster:`` runs the cluster faults only (``rig_unavailable``: why the namespace
    rig cannot be built here, e.g. not root); ``node`` and ``partition`` need a cluster.

    >>> cluster_fault_problem((FaultKind.KILL,), spec_file="s.yaml", clustered=False) is None
    True
    >>> print(cluster_fault_problem((FaultKind.NODE,), spec_file="s.yaml", clustered=False))
    --faults node: s.yaml has no cluster: section (node and partition faults need a cluster; see docs/cluster.md)
    >>> print(cluster_fault_problem((FaultKind.NODE, FaultKind.HANG), spec_file="s.yaml", clustered=True))
    --faults hang: s.yaml has a cluster: section; chaos then injects node, lb and partition faults only
    """
    if not clustered:
        bad = [k.value for k in kinds if k in (FaultKind.NODE, FaultKind.PARTITION)]
        if bad:
            return (f"--faults {','.join(bad)}: {spec_file} has no cluster: section (node and partition faults "
                    f"need a cluster; see docs/cluster.md)")
        return None
    bad = [k.value for k in kinds if k not in CLUSTER_KINDS]
    if bad:
        return (f"--faults {','.join(bad)}: {spec_file} has a cluster: section; chaos then injects node, lb and "
                f"partition faults only")
    if rig_unavailable:
        return (f"--faults {','.join(k.value for k in kinds)}: chaos on a cluster builds the network-namespace rig "
                f"on this machine and {rig_unavailable}; run it as root")
    return None


def parse_kinds(text: str) -> tuple[FaultKind, ...]:
    """``"kill,hang"`` → the kinds, in order, without duplicates; ValueError naming the valid ones.

    >>> [k.value for k in parse_kinds("kill, hang,kill")]
    ['kill', 'hang']
    >>> parse_kinds("kill,boom")
    Traceback (most recent call last):
    ...
    ValueError: unknown fault 'boom'; valid: kill, hang, error, slow, reset, lb, wipe, node, partition
    """
    kinds: list[FaultKind] = []
    for word in (w.strip().lower() for w in text.split(",")):
        if not word:
            continue
        try:
            kind = FaultKind(word)
        except ValueError:
            valid = ", ".join(k.value for k in FaultKind)
            raise ValueError(f"unknown fault {word!r}; valid: {valid}") from None
        if kind not in kinds:
            kinds.append(kind)
    if not kinds:
        raise ValueError("no fault kinds given; valid: " + ", ".join(k.value for k in FaultKind))
    return tuple(kinds)


@dataclass(frozen=True, slots=True)
class PlannedFault:
    """One fault to inject ``at`` seconds after the load starts."""

    at: float
    kind: FaultKind
    target: str | None = None  # a target id; None: a serving target chosen at run time
    duration: float = 0.0  # hang/error/slow: how long until chaos undoes it
    pick: float = 0.0  # uniform draw in [0, 1) choosing among the candidates at run time

    def choose(self, candidates: Sequence[str]) -> str | None:
        """The target this fault hits among ``candidates`` (its own ``target`` if named).

        >>> PlannedFault(1.0, FaultKind.KILL, pick=0.7).choose(["web-1", "web-2"])
        'web-2'
        >>> PlannedFault(1.0, FaultKind.KILL, target="web-3").choose(["web-1"]) is None
        True
        """
        if self.target is not None:
            return self.target if self.target in candidates else None
        if not candidates:
            return None
        ordered = sorted(candidates)
        return ordered[min(len(ordered) - 1, int(self.pick * len(ordered)))]

    def describe(self) -> str:
        who = self.target or "a serving target"
        if self.kind is FaultKind.LB:
            who = self.target or "a worker"
        if self.kind is FaultKind.WIPE:
            who = "the primary's data, then restore from backup"
        if self.kind in (FaultKind.NODE, FaultKind.PARTITION):
            who = f"node {self.target}" if self.target else "the VIP holder"
        dur = f" for {format_duration(self.duration)}" if self.kind.lasts else ""
        return f"{self.kind.value} {who}{dur}"

    def to_json(self) -> dict[str, object]:
        return {"at_s": self.at, "kind": self.kind.value, "target": self.target,
                "duration_s": self.duration if self.kind.lasts else None}


def exponential_schedule(
    *,
    mtbf: float,
    start: float,
    end: float,
    kinds: Sequence[FaultKind],
    seed: int,
    duration: float = 5.0,
) -> list[PlannedFault]:
    """Fault arrivals in ``[start, end)`` with exponential gaps of mean ``mtbf`` seconds.

    Deterministic for a seed; the kinds cycle in a seeded random order.

    >>> a = exponential_schedule(mtbf=5, start=0, end=100, kinds=list(FaultKind), seed=7)
    >>> a == exponential_schedule(mtbf=5, start=0, end=100, kinds=list(FaultKind), seed=7)
    True
    >>> sorted({f.kind.value for f in a[:len(FaultKind)]}) == sorted(k.value for k in FaultKind)
    True
    """
    if not mtbf > 0:
        raise ValueError(f"mtbf must be > 0 seconds, got {mtbf!r}")
    if not kinds:
        raise ValueError("no fault kinds")
    if duration < 0:
        raise ValueError(f"duration must be >= 0, got {duration!r}")
    rng = random.Random(seed)
    out: list[PlannedFault] = []
    block: list[FaultKind] = []
    t = start
    while True:
        t += rng.expovariate(1.0 / mtbf)
        if t >= end:
            return out
        if not block:
            block = list(kinds)
            rng.shuffle(block)
        kind = block.pop()
        out.append(PlannedFault(t, kind, None, duration if kind.lasts else 0.0, rng.random()))


_ITEM_RE = re.compile(r"^\s*([0-9.]+\s*(?:ms|s|m|h)?)\s*:\s*([a-z]+)\s*(?::\s*([A-Za-z0-9_.-]+))?\s*$")


def parse_schedule(text: str, *, duration: float = 5.0, seed: int = 0) -> list[PlannedFault]:
    """A fixed schedule, ``AT:KIND[:TARGET]`` items separated by commas or new lines, sorted by time.

    >>> [f.describe() for f in parse_schedule("25s:hang:web-2, 10s:kill", duration=3)]
    ['kill a serving target', 'hang web-2 for 3s']
    >>> parse_schedule("10s:kill, soon:hang")
    Traceback (most recent call last):
    ...
    ValueError: schedule item 'soon:hang': use AT:KIND[:TARGET], e.g. 10s:kill or 25s:hang:web-2
    """
    rng = random.Random(seed)
    out: list[PlannedFault] = []
    for raw in re.split(r"[,\n]", text):
        if not raw.strip():
            continue
        m = _ITEM_RE.match(raw)
        if not m:
            raise ValueError(f"schedule item {raw.strip()!r}: use AT:KIND[:TARGET], e.g. 10s:kill or 25s:hang:web-2")
        at = parse_duration(m.group(1).replace(" ", ""))
        kind = parse_kinds(m.group(2))[0]
        out.append(PlannedFault(at, kind, m.group(3), duration if kind.lasts else 0.0, rng.random()))
    if not out:
        raise ValueError("the schedule is empty; use e.g. 10s:kill, 25s:hang")
    return sorted(out, key=lambda f: f.at)


def with_duration(plan: Sequence[PlannedFault], duration: float) -> list[PlannedFault]:
    """The same plan with every lasting fault set to ``duration`` seconds."""
    return [replace(f, duration=duration if f.kind.lasts else 0.0) for f in plan]


def render(plan: Sequence[PlannedFault]) -> list[str]:
    """One line per planned fault, for ``--dry-run``.

    >>> render([PlannedFault(12.25, FaultKind.HANG, duration=5.0)])
    ['  1  at  12.25s  hang a serving target for 5s']
    """
    return [f"{i:>3}  at {f.at:>6.2f}s  {f.describe()}" for i, f in enumerate(plan, 1)]
