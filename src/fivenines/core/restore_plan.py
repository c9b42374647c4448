"""Restores, the pure part: which backup a restore loads, and the steps of a restore into the live
group, each guarding a known trap. Pure (the runtime carries the steps out: runtime/restore.py).

* :func:`choose_backup`: which backup ``--from ID`` or ``--at TIME`` means, refused with
  the reason when it failed verification or belongs to another group; :func:`latest_verified`
  for a drill;
* :func:`restore_plan`: the steps in order; :func:`source_ok`, :func:`in_sync`,
  :func:`aof_rewritten`: the checks between them.

The Redis traps the restore plan is built around (checked on Redis 7.0):

1. *A replica syncing an empty primary.* A replica copies whatever its primary
   holds, emptiness included: a primary restarted without its data (or whose load
   failed) wipes every replica that resyncs from it. So the replicas are detached
   (``REPLICAOF 127.0.0.1 0``: a replica of no one keeps its data and cannot be
   synced from) *before* the primary is loaded, and re-attached only after the
   primary answers with exactly the backup's key count.
2. *A restored RDB ignored because AOF is on.* With ``appendonly yes`` Redis loads
   the AOF at start-up (``appendonlydir/*.manifest``) and never reads
   ``dump.rdb``; with no AOF yet it creates an empty one and starts *empty*, the
   RDB beside it unread. The documented way round is to start with ``appendonly
   no`` and ``CONFIG SET appendonly yes`` afterwards (Redis rewrites the AOF from
   memory). fivenines never places files in a live server's directory: the
   backup is loaded into a scratch server (``appendonly no`` for an RDB, ``yes``
   with the copied AOF directory for an AOF backup), and the live primary becomes
   its replica for one full sync. A replica with AOF on rewrites its AOF after a
   full sync (``aof_rewrites`` grows): the plan waits for that rewrite before
   writes resume, so a restart right after the restore loads the restored data,
   not the old AOF. (With ``aof-use-rdb-preamble yes``, the default, the new AOF
   base is an RDB image; either way it is the restored dataset.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from fivenines.core.backup import (
    BackupRecord,
    Kind,
    RestoreRefused,
    Verdict,
    fmt_seconds,
    group_of_id,
    iso,
    newest_first,
)


@dataclass(frozen=True, slots=True)
class Choice:
    """The backup a restore loads; ``truncate_to``: replay an AOF backup up to this second only."""

    record: BackupRecord
    truncate_to: float | None
    note: str


def _usable(r: BackupRecord, group: str) -> str | None:
    if r.group != group:
        return f"backup {r.id} belongs to group {r.group!r}, not {group!r}"
    if r.verified is Verdict.FAILED:
        return f"backup {r.id} failed verification ({r.detail}); choose another (fivenines backups {group})"
    if r.verified is Verdict.PENDING:
        return f"backup {r.id} has not been verified yet"
    return None


def choose_backup(records: Sequence[BackupRecord], group: str, *, from_id: str | None = None,
                  at: float | None = None, now: float) -> Choice:
    """The backup ``--from ID`` or ``--at TIME`` means for ``group``; :class:`RestoreRefused` otherwise.

    ``--at``: an AOF backup covering that second (restored exactly to it, the one with the
    least to replay); else the newest verified backup taken at or before it (the note says
    how much earlier its data is).
    """
    if (from_id is None) == (at is None):
        raise RestoreRefused("give exactly one of --from ID (fivenines backups GROUP lists them) or --at TIME")
    if from_id is not None:
        r = next((x for x in records if x.id == from_id), None)
        if r is None:
            owner = group_of_id(from_id)
            if owner is not None and owner != group:
                raise RestoreRefused(f"backup {from_id} belongs to group {owner!r}, not {group!r}")
            mine = [x.id for x in newest_first(records) if x.group == group][:5]
            raise RestoreRefused(f"no backup {from_id!r} in the catalogue of {group!r}; newest: "
                                 f"{', '.join(mine) or 'none'}")
        why = _usable(r, group)
        if why:
            raise RestoreRefused(why)
        return Choice(r, None, f"{r.kind.value} backup {r.id} of {iso(r.time)}")
    assert at is not None
    if at > now:
        raise RestoreRefused(f"--at {iso(at)} is in the future (now {iso(now)})")
    usable = [r for r in records if _usable(r, group) is None]
    covering = [r for r in usable if r.kind is Kind.AOF and r.covers_from is not None
                and r.covers_from <= at <= r.time]
    if covering:
        r = min(covering, key=lambda x: (x.time, x.id))
        return Choice(r, math.floor(at), f"aof backup {r.id} replayed up to {iso(at)}")
    before = [r for r in usable if r.time <= at]
    if before:
        r = max(before, key=lambda x: (x.time, x.id))
        gap = at - r.time
        note = f"{r.kind.value} backup {r.id} of {iso(r.time)}"
        if gap >= 1:
            note += f": {fmt_seconds(round(gap))} before the time asked (no backup covers {iso(at)})"
        return Choice(r, None, note)
    oldest = min(usable, key=lambda x: x.time, default=None)
    raise RestoreRefused(f"no verified backup of {group!r} at or before {iso(at)}"
                         + (f"; the oldest is {oldest.id} of {iso(oldest.time)}" if oldest else ""))


def latest_verified(records: Sequence[BackupRecord], group: str) -> BackupRecord:
    good = [r for r in records if _usable(r, group) is None]
    if not good:
        raise RestoreRefused(f"no verified backup of {group!r} to drill with")
    return max(good, key=lambda x: (x.time, x.id))


# --------------------------------------------------------------------------- restore: the plan


class StepKind(str, Enum):
    VERIFY = "verify"  # fetch the copy, check it again (checksum, tool, key count): before anything changes
    START_SOURCE = "start_source"  # a scratch server loads the copy (aof: truncated to the time asked)
    CHECK_SOURCE = "check_source"  # it holds exactly the catalogue's key count (never an empty stand-in)
    FENCE = "fence"  # no writes anywhere in the group: routing stopped, connections cut
    HOLD_REPLICAS = "hold_replicas"  # replicas follow no one: they keep their data, nothing syncs from them
    LOAD_PRIMARY = "load_primary"  # the primary becomes a replica of the scratch server: one full sync
    CHECK_PRIMARY = "check_primary"  # link up, sync done, exactly the backup's key count
    DETACH_PRIMARY = "detach_primary"  # REPLICAOF NO ONE: the primary again, holding the backup
    REWRITE_AOF = "rewrite_aof"  # the primary's AOF rewritten from the restored data (only with AOF on)
    RESYNC_REPLICAS = "resync_replicas"  # replicas follow the primary again: full sync of the restored data
    CHECK_REPLICAS = "check_replicas"  # each replica linked, at the primary's offset, same key count
    UNFENCE = "unfence"  # writes resume
    STOP_SOURCE = "stop_source"


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    targets: tuple[str, ...] = ()
    why: str = ""

    def __str__(self) -> str:
        who = f" {','.join(self.targets)}" if self.targets else ""
        return f"{self.kind.value}{who}: {self.why}"


def restore_plan(choice: Choice, primary: str, replicas: Sequence[str], aof_on: Mapping[str, bool]) -> list[Step]:
    """The steps of a restore into the live group, in order.

    Nothing is changed before the copy is verified again and a scratch server holds exactly
    its key count; the replicas are held (following no one, their data kept) before the
    primary is loaded and re-attached only after it holds the backup; writes resume last.

    >>> c = Choice(BackupRecord("g-1", "g", 0.0, Kind.RDB, "g-2", "k", keys=3, verified=Verdict.OK), None, "")
    >>> [s.kind.value for s in restore_plan(c, "g-1", ["g-2"], {"g-1": True})]  # doctest: +NORMALIZE_WHITESPACE
    ['verify', 'start_source', 'check_source', 'fence', 'hold_replicas', 'load_primary', 'check_primary',
     'detach_primary', 'rewrite_aof', 'resync_replicas', 'check_replicas', 'unfence', 'stop_source']
    """
    r = choice.record
    reps = tuple(replicas)
    keys = "?" if r.keys is None else str(r.keys)
    src = ("scratch server, appendonly no (so it loads the RDB, not an AOF)" if r.kind is Kind.RDB else
           "scratch server, appendonly yes on the copied AOF directory"
           + (f" truncated to {iso(choice.truncate_to)} (redis-check-aof --truncate-to-timestamp)"
              if choice.truncate_to is not None else ""))
    steps = [
        Step(StepKind.VERIFY, (), f"{r.id}: checksum, check tool, key count {keys} again, before anything changes"),
        Step(StepKind.START_SOURCE, (), src),
        Step(StepKind.CHECK_SOURCE, (), "holds the backup's keys" + (f" ({keys})" if choice.truncate_to is None
                                                                     else " (replayed: any count but refuses empty "
                                                                     "when the backup is not)")),
        Step(StepKind.FENCE, (primary, *reps), "routing stopped and connections cut: no writes during the restore"),
    ]
    if reps:
        steps.append(Step(StepKind.HOLD_REPLICAS, reps, "REPLICAOF 127.0.0.1 0: keep their data, sync from no one "
                          "until the primary holds the backup"))
    steps += [
        Step(StepKind.LOAD_PRIMARY, (primary,), "REPLICAOF the scratch server: one full sync; read-only meanwhile"),
        Step(StepKind.CHECK_PRIMARY, (primary,), "link up, sync done, the source's key count"),
        Step(StepKind.DETACH_PRIMARY, (primary,), "REPLICAOF NO ONE"),
    ]
    if aof_on.get(primary):
        steps.append(Step(StepKind.REWRITE_AOF, (primary,), "appendonly yes: wait for the AOF rewritten from the "
                          "restored data, so a restart does not load the old AOF"))
    if reps:
        steps += [
            Step(StepKind.RESYNC_REPLICAS, reps, f"REPLICAOF {primary}: full sync of the restored data"),
            Step(StepKind.CHECK_REPLICAS, reps, "linked, at the primary's offset, the same key count"),
        ]
    steps += [Step(StepKind.UNFENCE, (primary, *reps), "writes resume"), Step(StepKind.STOP_SOURCE)]
    return steps


def source_ok(loaded_keys: int, choice: Choice) -> str | None:
    """Why the scratch server must not be synced from (None: it may).

    >>> c = Choice(BackupRecord("g-1", "g", 0.0, Kind.RDB, "g-2", "k", keys=3, verified=Verdict.OK), None, "")
    >>> source_ok(3, c), source_ok(0, c)
    (None, 'the scratch server holds 0 keys, the backup 3: not syncing the group from it')
    """
    r = choice.record
    if choice.truncate_to is None and r.keys is not None and loaded_keys != r.keys:
        return f"the scratch server holds {loaded_keys} keys, the backup {r.keys}: not syncing the group from it"
    if loaded_keys == 0 and (r.keys or r.source_keys):
        return "the scratch server is empty but the backup is not: not syncing the group from it"
    return None


def in_sync(primary: Mapping[str, str], replica: Mapping[str, str], primary_address: str,
            primary_keys: int, replica_keys: int) -> str | None:
    """Why a replica is not (yet) in sync with the primary, from their ``INFO`` (None: in sync).

    >>> p = {"role": "master", "master_repl_offset": "50"}
    >>> r = {"role": "slave", "master_host": "10.0.0.1", "master_port": "6379", "master_link_status": "up",
    ...      "master_sync_in_progress": "0", "slave_repl_offset": "50"}
    >>> in_sync(p, r, "10.0.0.1:6379", 7, 7), in_sync(p, {**r, "slave_repl_offset": "40"}, "10.0.0.1:6379", 7, 7)
    (None, 'at offset 40, the primary at 50')
    """
    if primary.get("role") != "master":
        return "the primary does not answer as a primary"
    if replica.get("role") != "slave":
        return "not a replica"
    following = f"{replica.get('master_host')}:{replica.get('master_port')}"
    if following != primary_address:
        return f"follows {following}, not {primary_address}"
    if replica.get("master_link_status") != "up" or replica.get("master_sync_in_progress", "0") != "0":
        return "link down or syncing"
    if replica.get("slave_repl_offset") != primary.get("master_repl_offset"):
        return f"at offset {replica.get('slave_repl_offset')}, the primary at {primary.get('master_repl_offset')}"
    if replica_keys != primary_keys:
        return f"{replica_keys} keys, the primary {primary_keys}"
    return None


def aof_rewritten(before: Mapping[str, str], now: Mapping[str, str]) -> str | None:
    """Why the primary's AOF is not yet rewritten since ``before`` (``INFO persistence``), or None.

    >>> b = {"aof_enabled": "1", "aof_rewrites": "1"}
    >>> aof_rewritten(b, {**b, "aof_rewrites": "2", "aof_rewrite_in_progress": "0",
    ...                   "aof_rewrite_scheduled": "0", "aof_last_bgrewrite_status": "ok"})
    >>> aof_rewritten(b, {**b, "aof_rewrite_in_progress": "1"})
    'AOF rewrite in progress'
    """
    if now.get("aof_enabled") != "1":
        return None
    if now.get("aof_rewrite_in_progress") == "1" or now.get("aof_rewrite_scheduled") == "1":
        return "AOF rewrite in progress"
    if now.get("aof_last_bgrewrite_status", "ok") != "ok":
        return f"AOF rewrite failed ({now.get('aof_last_bgrewrite_status')})"
    if int(now.get("aof_rewrites", "0")) <= int(before.get("aof_rewrites", "0")):
        return "AOF not rewritten since the load yet"
    return None



__all__ = [
    "Choice", "Step", "StepKind", "aof_rewritten", "choose_backup", "in_sync", "latest_verified", "restore_plan",
    "source_ok",
]
