"""Backups of a replicated store: schedules, retention, the catalogue, verdicts, restore plans. Pure.

Everything a backup or a restore *decides* lives here; :mod:`fivenines.runtime.backup`
takes the copies, runs the check tools and the servers, and feeds the results in.
No files, no sockets, no clocks: times are wall-clock seconds passed in.

* **Schedules** (:func:`parse_schedule`): an interval (``6h``, ``every 30m``) or a
  five-field cron expression in UTC (``0 3 * * *``, ``*/15 * * * 1-5``,
  ``@daily``). :func:`next_run` says when the next backup is due.
* **Retention** (:func:`to_delete`): keep the newest ``keep_last`` verified backups,
  plus the newest of each of the last ``daily`` days and ``weekly`` ISO weeks that
  have one. Backups still being verified are never deleted; the newest verified
  backup never is; one that failed verification goes once a newer backup exists.
* **The catalogue** (:class:`BackupRecord`, :func:`parse_catalogue`): one record per
  backup: id, group, time, size, source target, replication offset, SHA-256, key
  count, kind (``rdb`` or ``aof``), verdict.
* **Verification** (:func:`judge`): the check tool's exit, the checksum read back,
  the key count of a scratch server that loaded the copy.
* **Restore** (:func:`choose_backup`, :func:`restore_plan`): which backup ``--from
  ID`` or ``--at TIME`` means, refused with the reason when it failed verification
  or belongs to another group; the steps in order.

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
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from fivenines.errors import ConfigError, ConflictError, ProviderError


class BackupError(ProviderError):
    """Root of backup and restore errors."""


class ScheduleError(BackupError, ConfigError, ValueError):
    """A schedule expression that cannot be parsed or never fires."""


class CatalogueError(BackupError):
    """A catalogue that cannot be read as one (names the record and the field)."""


class RestoreRefused(BackupError, ConflictError):
    """A restore that must not run: the reason says why and what would be valid."""


# --------------------------------------------------------------------------- schedules

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *"}
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
           ("day of week", 0, 7))
_NAMES = {
    3: {m: i + 1 for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])},
    4: {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
}


@dataclass(frozen=True, slots=True)
class Interval:
    """Every ``seconds``, counted from the last successful run."""

    seconds: float

    def __str__(self) -> str:
        return f"every {_fmt_seconds(self.seconds)}"


@dataclass(frozen=True, slots=True)
class Cron:
    """A five-field cron expression, in UTC. Day of month and day of week: when both are
    restricted a day matching either fires (as in cron)."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday .. 6
    any_day: bool  # day of month is *
    any_weekday: bool  # day of week is *

    def __str__(self) -> str:
        return f"cron {self.text} (UTC)"

    def day_matches(self, t: datetime) -> bool:
        dom = t.day in self.days
        dow = (t.weekday() + 1) % 7 in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return dow
        if self.any_weekday:
            return dom
        return dom or dow


Schedule = Interval | Cron


def _fmt_seconds(s: float) -> str:
    for unit, n in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n and s % n == 0:
            return f"{int(s // n)}{unit}"
    return f"{s:g}s"


def _cron_field(text: str, index: int) -> frozenset[int]:
    name, lo, hi = _FIELDS[index]
    values: set[int] = set()

    def num(tok: str) -> int:
        tok = tok.lower()
        names = _NAMES.get(index, {})
        if tok in names:
            return names[tok]
        if not tok.isdigit():
            valid = f"{lo}-{hi}" + (f" or a name ({', '.join(names)})" if names else "")
            raise ScheduleError(f"{name} field: {tok!r} is not a number; use {valid}")
        v = int(tok)
        if not lo <= v <= hi:
            raise ScheduleError(f"{name} field: {v} is out of range {lo}-{hi}")
        return v

    for part in text.split(","):
        if not part:
            raise ScheduleError(f"{name} field: empty item in {text!r}")
        rng, _, step_s = part.partition("/")
        step = 1
        if step_s:
            if not step_s.isdigit() or int(step_s) == 0:
                raise ScheduleError(f"{name} field: step {step_s!r} must be a whole number of at least 1")
            step = int(step_s)
        if rng == "*":
            a, b = lo, hi
        elif "-" in rng:
            x, _, y = rng.partition("-")
            a, b = num(x), num(y)
            if a > b:
                raise ScheduleError(f"{name} field: range {rng!r} goes backwards")
        else:
            a = num(rng)
            b = hi if step_s else a
        values.update(range(a, b + 1, step))
    if index == 4 and 7 in values:
        values.discard(7)
        values.add(0)  # 7 is Sunday too
    return frozenset(values)


def parse_schedule(text: str) -> Schedule:
    """An interval (``6h``, ``every 30m``) or a cron expression (five fields, UTC; ``@daily``).

    >>> parse_schedule("every 6h"), parse_schedule("90s")
    (Interval(seconds=21600.0), Interval(seconds=90.0))
    >>> str(parse_schedule("*/15 3 * * mon-fri"))
    'cron */15 3 * * mon-fri (UTC)'
    >>> parse_schedule("0 25 * * *")
    Traceback (most recent call last):
    ...
    fivenines.core.backup.ScheduleError: hour field: 25 is out of range 0-23
    """
    if not isinstance(text, str) or not text.strip():
        raise ScheduleError("a schedule is an interval such as 6h (or every 30m) or a cron expression "
                            "such as '0 3 * * *'")
    t = " ".join(text.strip().split())
    t = _MACROS.get(t.lower(), t)
    m = _DURATION.match(t.lower().removeprefix("every "))
    if m:
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
        if seconds < 1:
            raise ScheduleError(f"{text!r}: an interval must be at least 1s")
        return Interval(seconds)
    parts = t.split(" ")
    if len(parts) != 5:
        raise ScheduleError(f"{text!r} is neither an interval (6h, every 30m) nor a cron expression: cron has "
                            f"5 fields (minute hour day-of-month month day-of-week), got {len(parts)}")
    sets = [_cron_field(p, i) for i, p in enumerate(parts)]
    cron = Cron(t, sets[0], sets[1], sets[2], sets[3], sets[4], parts[2] == "*", parts[4] == "*")
    try:
        next_fire(cron, 0.0)
    except ScheduleError:
        raise ScheduleError(f"{text!r} never fires (no such day: check day of month against month)") from None
    return cron


_SEARCH_YEARS = 9  # Feb 29 can be 8 years away (2096 -> 2104)


def next_fire(schedule: Schedule, after: float) -> float:
    """The first firing time strictly after ``after`` (cron: whole minutes, UTC).

    >>> next_fire(parse_schedule("30 2 * * *"), 0.0)  # 1970-01-01 02:30 UTC
    9000.0
    >>> next_fire(parse_schedule("6h"), 100.0)
    21700.0
    """
    if isinstance(schedule, Interval):
        return after + schedule.seconds
    c = schedule
    t = datetime.fromtimestamp(math.floor(after / 60) * 60, UTC) + timedelta(minutes=1)
    limit = t + timedelta(days=366 * _SEARCH_YEARS)
    while t < limit:
        if t.month not in c.months:
            t = (t.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
        elif not c.day_matches(t):
            t = t.replace(hour=0, minute=0) + timedelta(days=1)
        elif t.hour not in c.hours:
            h = min((h for h in c.hours if h > t.hour), default=None)
            t = t.replace(hour=h, minute=0) if h is not None else t.replace(hour=0, minute=0) + timedelta(days=1)
        elif t.minute not in c.minutes:
            m = min((m for m in c.minutes if m > t.minute), default=None)
            t = t.replace(minute=m) if m is not None else t.replace(minute=0) + timedelta(hours=1)
        else:
            return t.timestamp()
    raise ScheduleError(f"cron {c.text!r} never fires")


def next_run(schedule: Schedule, *, last_ok: float | None, last_try: float | None, since: float,
             retry: float) -> float:
    """When the next run is due.

    ``last_ok``: the last successful run (None: none yet); ``last_try``: the last attempt;
    ``since``: when scheduling began (a cron schedule with no run yet fires at its next
    time after it; an interval schedule with no run yet is due at once). A failed attempt
    newer than the last success is retried ``retry`` seconds after it, not sooner.

    >>> s = parse_schedule("1h")
    >>> next_run(s, last_ok=None, last_try=None, since=50.0, retry=60.0)
    50.0
    >>> next_run(s, last_ok=1000.0, last_try=1000.0, since=0.0, retry=60.0)
    4600.0
    >>> next_run(s, last_ok=None, last_try=70.0, since=50.0, retry=60.0)
    130.0
    """
    if isinstance(schedule, Interval):
        due = since if last_ok is None else last_ok + schedule.seconds
    else:
        due = next_fire(schedule, since if last_ok is None else max(last_ok, since))
    if last_try is not None and (last_ok is None or last_try > last_ok):
        due = max(due, last_try + retry)
    return due


def promised_rpo(schedule: Schedule) -> float:
    """The longest time between two runs: the most data (in time) a loss can cost when every
    backup succeeds, not counting the time a backup takes.

    >>> promised_rpo(parse_schedule("6h")), promised_rpo(parse_schedule("0 3,9 * * *"))
    (21600.0, 64800.0)
    >>> promised_rpo(parse_schedule("0 0 * * 1-5")) / 86400  # Friday to Monday
    3.0
    """
    if isinstance(schedule, Interval):
        return schedule.seconds
    start = datetime(2024, 1, 1, tzinfo=UTC).timestamp()  # a leap year, starting on a Monday
    end = start + 2 * 366 * 86400
    prev = next_fire(schedule, start)
    worst = 0.0
    for _ in range(20000):
        nxt = next_fire(schedule, prev)
        worst = max(worst, nxt - prev)
        if nxt > end:
            break
        prev = nxt
    return worst


# --------------------------------------------------------------------------- the catalogue


class Kind(str, Enum):
    RDB = "rdb"  # a point-in-time snapshot (the replication stream's RDB)
    AOF = "aof"  # the append-only file (base + increments, with timestamps): restorable to any second it covers


class Verdict(str, Enum):
    PENDING = "pending"  # written, not verified yet
    OK = "ok"
    FAILED = "failed"


def iso(wall: float) -> str:
    """``2025-01-31T03:00:00Z`` (whole seconds, UTC).

    >>> iso(0)
    '1970-01-01T00:00:00Z'
    """
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, now: float | None = None) -> float:
    """An instant: ISO 8601 (``2025-01-31T03:00:00Z``; no zone means UTC), ``@EPOCH``,
    or a time ago (``90m ago``, with ``now``).

    >>> parse_time("1970-01-01T01:00:00Z"), parse_time("1970-01-01 01:00"), parse_time("@3600")
    (3600.0, 3600.0, 3600.0)
    >>> parse_time("10m ago", now=1000.0)
    400.0
    """
    t = text.strip()
    if t.startswith("@"):
        try:
            return float(t[1:])
        except ValueError:
            raise BackupError(f"{text!r}: @ must be followed by seconds since the epoch") from None
    if t.lower().endswith(" ago"):
        m = _DURATION.match(t[:-4].strip().lower())
        if m is None or now is None:
            raise BackupError(f"{text!r}: use e.g. '90m ago' or '2h ago'")
        return now - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        d = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise BackupError(f"{text!r} is not a time; use ISO 8601 such as 2025-01-31T03:00:00Z, "
                          "@EPOCH_SECONDS or '90m ago'") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


@dataclass(frozen=True, slots=True)
class BackupRecord:
    """One backup in the catalogue.

    ``time``: when the data was taken (the replica's fork, or the AOF's last second);
    ``offset``: the source's replication offset then; ``key``: the object's name in the
    store; ``covers_from`` (AOF): the earliest second it can be restored to;
    ``source_keys``: the source's key count when the copy began (for the empty-copy check)."""

    id: str
    group: str
    time: float
    kind: Kind
    source: str
    key: str
    size: int = 0
    offset: int | None = None
    sha256: str = ""
    keys: int | None = None
    verified: Verdict = Verdict.PENDING
    detail: str = ""
    covers_from: float | None = None
    source_keys: int | None = None
    took: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "group": self.group, "time": self.time, "at": iso(self.time),
                "kind": self.kind.value, "source": self.source, "key": self.key, "size": self.size,
                "offset": self.offset, "sha256": self.sha256, "keys": self.keys,
                "verified": self.verified.value, "detail": self.detail, "covers_from": self.covers_from,
                "source_keys": self.source_keys, "took": round(self.took, 3)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "record") -> BackupRecord:
        def get(name: str, types: type | tuple[type, ...], required: bool = True, default: Any = None) -> Any:
            if name not in d:
                if required:
                    raise CatalogueError(f"{where}: {name} is missing")
                return default
            v = d[name]
            if v is None and not required:
                return None
            if isinstance(v, bool) or not isinstance(v, types):
                raise CatalogueError(f"{where}.{name}: {v!r} is not a {getattr(types, '__name__', types)}")
            return v

        try:
            kind = Kind(get("kind", str))
            verified = Verdict(get("verified", str))
        except ValueError as exc:
            raise CatalogueError(f"{where}: {exc}") from None
        cf = get("covers_from", (int, float), False)
        return cls(
            id=get("id", str), group=get("group", str), time=float(get("time", (int, float))), kind=kind,
            source=get("source", str), key=get("key", str), size=get("size", int, False, 0),
            offset=get("offset", int, False), sha256=get("sha256", str, False, ""), keys=get("keys", int, False),
            verified=verified, detail=get("detail", str, False, ""),
            covers_from=float(cf) if cf is not None else None, source_keys=get("source_keys", int, False),
            took=float(get("took", (int, float), False, 0.0)),
        )

    def __str__(self) -> str:
        keys = "?" if self.keys is None else str(self.keys)
        return f"{self.id} {self.kind.value} {iso(self.time)} {self.size}B {keys} keys {self.verified.value}"


CATALOGUE_VERSION = 1


def parse_catalogue(data: Any, group: str, where: str = "catalogue") -> list[BackupRecord]:
    """The records of a catalogue document, oldest first. A record naming another group is
    kept (a restore refuses it, with the reason)."""
    if not isinstance(data, dict) or not isinstance(data.get("backups"), list):
        raise CatalogueError(f"{where}: expected {{version, group, backups: [...]}}")
    if data.get("version") != CATALOGUE_VERSION:
        raise CatalogueError(f"{where}: version {data.get('version')!r} is not {CATALOGUE_VERSION}")
    records = []
    for i, r in enumerate(data["backups"]):
        if not isinstance(r, dict):
            raise CatalogueError(f"{where}.backups.{i}: expected a mapping")
        records.append(BackupRecord.from_json(r, f"{where}.backups.{i}"))
    return sorted(records, key=lambda r: (r.time, r.id))


def dump_catalogue(group: str, records: Iterable[BackupRecord]) -> dict[str, Any]:
    return {"version": CATALOGUE_VERSION, "group": group,
            "backups": [r.to_json() for r in sorted(records, key=lambda r: (r.time, r.id))]}


def new_backup_id(group: str, wall: float, existing: Iterable[str]) -> str:
    """``GROUP-YYYYMMDDTHHMMSSZ`` (``-2``, ``-3``... when taken in the same second).

    >>> new_backup_id("cache", 0.0, ["cache-19700101T000000Z"])
    'cache-19700101T000000Z-2'
    """
    base = f"{group}-{datetime.fromtimestamp(wall, UTC).strftime('%Y%m%dT%H%M%SZ')}"
    taken = set(existing)
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def group_of_id(backup_id: str) -> str | None:
    """The group a backup id names (ids are ``GROUP-YYYYMMDDTHHMMSSZ[-N]``), or None.

    >>> group_of_id("cache-eu-20250131T030000Z-2"), group_of_id("nonsense")
    ('cache-eu', None)
    """
    m = re.fullmatch(r"(.+)-\d{8}T\d{6}Z(?:-\d+)?", backup_id)
    return m.group(1) if m else None


# --------------------------------------------------------------------------- retention


@dataclass(frozen=True, slots=True)
class Retention:
    keep_last: int = 7
    daily: int = 0
    weekly: int = 0

    def __post_init__(self) -> None:
        if self.keep_last < 1 or self.daily < 0 or self.weekly < 0:
            raise ValueError("keep_last must be at least 1; daily and weekly at least 0")


def _newest_first(records: Iterable[BackupRecord]) -> list[BackupRecord]:
    return sorted(records, key=lambda r: (r.time, r.id), reverse=True)


def retained(records: Sequence[BackupRecord], rules: Retention) -> set[str]:
    """Ids of the verified backups the rules keep: the newest ``keep_last``, and the newest of each
    of the ``daily`` most recent UTC days and ``weekly`` most recent ISO weeks that have one."""
    good = _newest_first(r for r in records if r.verified is Verdict.OK)
    keep = {r.id for r in good[: rules.keep_last]}
    for n, weekly in ((rules.daily, False), (rules.weekly, True)):
        seen: set[Any] = set()
        for r in good:
            if len(seen) >= n:
                break
            d = datetime.fromtimestamp(r.time, UTC)
            b = d.isocalendar()[:2] if weekly else d.date()
            if b not in seen:
                seen.add(b)
                keep.add(r.id)
    return keep


def to_delete(records: Sequence[BackupRecord], rules: Retention) -> list[BackupRecord]:
    """The backups retention removes, oldest first.

    Verified backups the rules do not keep; failed ones, except the newest record of all
    (left for an operator to look at until a newer backup exists). Pending ones (being
    verified) are never removed, and neither is the newest verified backup.

    >>> r = [BackupRecord(f"g-{i}", "g", i * 86400.0, Kind.RDB, "g-2", f"k{i}", verified=Verdict.OK)
    ...      for i in range(5)]
    >>> [x.id for x in to_delete(r, Retention(keep_last=2))]
    ['g-0', 'g-1', 'g-2']
    >>> [x.id for x in to_delete(r, Retention(keep_last=1, daily=3))]
    ['g-0', 'g-1']
    """
    keep = retained(records, rules)
    newest = max(records, key=lambda r: (r.time, r.id), default=None)
    out = []
    for r in records:
        if r.verified is Verdict.PENDING or r.id in keep:
            continue
        if r.verified is Verdict.FAILED and newest is not None and r.id == newest.id:
            continue
        out.append(r)
    return sorted(out, key=lambda r: (r.time, r.id))


# --------------------------------------------------------------------------- choosing the source


@dataclass(frozen=True, slots=True)
class SourceView:
    """A member as a backup sees it: healthy, role, link to its primary, position."""

    id: str
    healthy: bool
    primary: bool
    link_up: bool
    position: int


def choose_source(members: Sequence[SourceView], allow_primary: bool = False) -> tuple[str | None, str]:
    """The member to copy from: the healthy replica, linked to the primary, with the highest
    position (then the first). The primary only when ``allow_primary`` and no replica qualifies:
    copying from it forks the process that takes the writes.

    >>> m = [SourceView("c-1", True, True, False, 90), SourceView("c-2", True, False, True, 80),
    ...      SourceView("c-3", True, False, False, 85)]
    >>> choose_source(m)
    ('c-2', 'c-2: healthy replica at position 80')
    >>> choose_source(m[:1]), choose_source(m[:1], allow_primary=True)[0]
    ((None, 'no healthy replica linked to its primary (c-1 is the primary); not copying from the primary'), 'c-1')
    """
    ok = [m for m in members if m.healthy and not m.primary and m.link_up]
    if ok:
        best = max(ok, key=lambda m: (m.position, -members.index(m)))
        return best.id, f"{best.id}: healthy replica at position {best.position}"
    why = []
    for m in members:
        if m.primary:
            why.append(f"{m.id} is the primary")
        elif not m.healthy:
            why.append(f"{m.id} unhealthy")
        else:
            why.append(f"{m.id} not linked to its primary")
    prim = next((m for m in members if m.primary and m.healthy), None)
    if allow_primary and prim is not None:
        return prim.id, f"{prim.id}: the primary (no healthy replica: {', '.join(why)}; allow_primary)"
    return None, f"no healthy replica linked to its primary ({', '.join(why)}); not copying from the primary"


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True, slots=True)
class Checks:
    """What the runtime found when it checked a copy. None: not checked."""

    tool_ok: bool | None = None
    tool_detail: str = ""
    sha256: str | None = None
    loaded_keys: int | None = None
    load_error: str = ""


def judge(checks: Checks, *, expected_sha256: str | None = None, expected_keys: int | None = None,
          source_keys: int | None = None, loaded: bool = True) -> tuple[Verdict, str]:
    """The verdict on a copy, and why (every reason found).

    After writing, ``expected_sha256`` is the checksum computed while the copy was taken
    (the stored object is read back and must match); at a restore or a drill, the
    catalogue's checksum and key count (``loaded=False``: the copy was not loaded yet, the
    key count is checked later, as a restore does). ``source_keys``: the source held that many keys
    when the copy began; an empty copy of a non-empty source is refused (it is what a
    replica that had just synced an empty primary would produce).

    >>> judge(Checks(True, "", "ab", 10), expected_sha256="ab", expected_keys=10)
    (<Verdict.OK: 'ok'>, 'check tool ok, sha256 ab matches, 10 keys loaded')
    >>> judge(Checks(False, "CRC error", "ab", None, "exited 1"), expected_sha256="cd")[1]
    'check tool failed: CRC error; sha256 ab, expected cd; not loadable: exited 1'
    """
    bad: list[str] = []
    good: list[str] = []
    if checks.tool_ok is False:
        bad.append(f"check tool failed: {checks.tool_detail}".rstrip(": "))
    elif checks.tool_ok:
        good.append("check tool ok")
    if checks.sha256 is None:
        bad.append("no checksum")
    elif expected_sha256 is not None and checks.sha256 != expected_sha256:
        bad.append(f"sha256 {checks.sha256}, expected {expected_sha256}")
    else:
        good.append(f"sha256 {checks.sha256}" + (" matches" if expected_sha256 is not None else ""))
    if checks.load_error:
        bad.append(f"not loadable: {checks.load_error}")
    elif checks.loaded_keys is None and not loaded:
        pass
    elif checks.loaded_keys is None:
        bad.append("not loaded")
    else:
        if expected_keys is not None and checks.loaded_keys != expected_keys:
            bad.append(f"{checks.loaded_keys} keys loaded, the catalogue says {expected_keys}")
        elif source_keys and checks.loaded_keys == 0:
            bad.append(f"the copy is empty but its source held {source_keys} keys when it began")
        else:
            good.append(f"{checks.loaded_keys} keys loaded")
    if bad:
        return Verdict.FAILED, "; ".join(bad)
    return Verdict.OK, ", ".join(good)


# --------------------------------------------------------------------------- AOF pieces


@dataclass(frozen=True, slots=True)
class AofFile:
    name: str
    seq: int
    type: str  # b (base), h (history), i (increment)


def parse_manifest(text: str) -> list[AofFile]:
    """A Redis 7 AOF manifest (``file NAME seq N type b|h|i`` per line).

    >>> parse_manifest("file appendonly.aof.1.base.rdb seq 1 type b\\nfile appendonly.aof.1.incr.aof seq 1 type i\\n")
    [AofFile(name='appendonly.aof.1.base.rdb', seq=1, type='b'), AofFile(name='appendonly.aof.1.incr.aof', seq=1, type='i')]
    """
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        words = line.split()
        fields = dict(zip(words[::2], words[1::2], strict=False))
        if "file" not in fields or "seq" not in fields or "type" not in fields or not fields["seq"].isdigit():
            raise BackupError(f"AOF manifest line {n}: {line!r} is not 'file NAME seq N type b|h|i'")
        if "/" in fields["file"] or fields["file"].startswith("."):
            raise BackupError(f"AOF manifest line {n}: file name {fields['file']!r} is not a plain name")
        out.append(AofFile(fields["file"], int(fields["seq"]), fields["type"]))
    return out


@dataclass(frozen=True, slots=True)
class AofCheck:
    """One file as ``redis-check-aof`` analysed it: valid up to ``ok_up_to`` of ``size`` bytes."""

    file: str
    size: int
    ok_up_to: int

    @property
    def valid(self) -> bool:
        return self.ok_up_to == self.size


_ANALYZED = re.compile(r"AOF analyzed: filename=(\S+), size=(\d+), ok_up_to=(\d+),")


def parse_check_aof(output: str) -> list[AofCheck]:
    """The per-file lines of ``redis-check-aof`` (Redis 7).

    >>> parse_check_aof("AOF analyzed: filename=a.1.incr.aof, size=1864, ok_up_to=1834, ok_up_to_line=355, diff=30")
    [AofCheck(file='a.1.incr.aof', size=1864, ok_up_to=1834)]
    """
    return [AofCheck(m.group(1), int(m.group(2)), int(m.group(3))) for m in _ANALYZED.finditer(output)]


def torn_tail(checks: Sequence[AofCheck], files: Sequence[AofFile]) -> AofCheck | None:
    """The copy's only fault is a last increment cut inside a command (it was copied while Redis
    appended to it): that file, to be truncated to ``ok_up_to``. None when every file is valid
    or another file is damaged (a real fault: the copy fails verification).

    >>> f = [AofFile("a.1.base.rdb", 1, "b"), AofFile("a.1.incr.aof", 1, "i")]
    >>> torn_tail([AofCheck("a.1.base.rdb", 89, 89), AofCheck("a.1.incr.aof", 1864, 1834)], f)
    AofCheck(file='a.1.incr.aof', size=1864, ok_up_to=1834)
    >>> torn_tail([AofCheck("a.1.base.rdb", 89, 80)], f) is None
    True
    """
    incr = [f.name for f in files if f.type == "i"]
    bad = [c for c in checks if not c.valid]
    if len(bad) == 1 and incr and bad[0].file == incr[-1] and checks and checks[-1] is bad[0]:
        return bad[0]
    return None


def rdb_ctime(output: str) -> float | None:
    """The creation time of an RDB (or of an AOF's RDB base) from the check tool's output.

    >>> rdb_ctime("[offset 53] AUX FIELD ctime = '1796587273'")
    1796587273.0
    """
    m = re.search(r"AUX FIELD ctime = '(\d+)'", output)
    return float(m.group(1)) if m else None


def first_timestamp(head: bytes) -> float | None:
    """The ``#TS:`` annotation an AOF increment starts with (Redis' aof-timestamp-enabled), or None.

    >>> first_timestamp(b"#TS:1796587275\\r\\n*2\\r\\n"), first_timestamp(b"*2\\r\\n")
    (1796587275.0, None)
    """
    m = re.match(rb"#TS:(\d+)\r?\n", head)
    return float(m.group(1)) if m else None


# --------------------------------------------------------------------------- restore: which backup


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
            mine = [x.id for x in _newest_first(records) if x.group == group][:5]
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
            note += f": {_fmt_seconds(round(gap))} before the time asked (no backup covers {iso(at)})"
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


def keyspace_keys(info: Mapping[str, str]) -> int:
    """Total keys from ``INFO keyspace`` (``db0:keys=3,expires=0,avg_ttl=0``).

    >>> keyspace_keys({"db0": "keys=3,expires=0,avg_ttl=0", "db2": "keys=4,expires=1,avg_ttl=9"})
    7
    """
    total = 0
    for k, v in info.items():
        if k.startswith("db") and k[2:].isdigit():
            fields = dict(p.split("=", 1) for p in v.split(",") if "=" in p)
            total += int(fields.get("keys", "0"))
    return total


# --------------------------------------------------------------------------- drills, status


@dataclass(frozen=True, slots=True)
class DrillResult:
    """One restore drill: ``rpo`` (age of the newest data restored, at the drill), ``rto``
    (seconds from the start of the fetch to a loaded, verified scratch server)."""

    ok: bool
    at: float
    backup: str | None
    rpo: float | None
    rto: float | None
    keys: int | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "at": iso(self.at), "time": self.at, "backup": self.backup,
                "rpo_s": None if self.rpo is None else round(self.rpo, 3),
                "rto_s": None if self.rto is None else round(self.rto, 3), "keys": self.keys, "detail": self.detail}


@dataclass(slots=True)
class Counters:
    """Numbers a metrics exporter reads (see :meth:`fivenines.runtime.backup.BackupManager.status`)."""

    backups_ok: int = 0
    backups_failed: int = 0
    deleted: int = 0
    restores_ok: int = 0
    restores_failed: int = 0
    drills_ok: int = 0
    drills_failed: int = 0
    last_ok: float | None = None
    last_try: float | None = None
    last_drill_ok: float | None = None
    last_drill_try: float | None = None
    last_drill: DrillResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def with_verdict(r: BackupRecord, verdict: Verdict, detail: str, **changes: Any) -> BackupRecord:
    return replace(r, verified=verdict, detail=detail, **changes)


__all__ = [
    "AofCheck", "AofFile", "BackupError", "BackupRecord", "CatalogueError", "Checks", "Choice", "Counters",
    "Cron", "DrillResult", "Interval", "Kind", "RestoreRefused", "Retention", "Schedule", "ScheduleError",
    "SourceView", "Step", "StepKind", "Verdict", "aof_rewritten", "choose_backup", "choose_source",
    "dump_catalogue", "first_timestamp", "group_of_id", "in_sync", "iso", "judge", "keyspace_keys",
    "latest_verified", "new_backup_id", "next_fire", "next_run", "parse_catalogue", "parse_check_aof",
    "parse_manifest", "parse_schedule", "parse_time", "promised_rpo", "rdb_ctime", "restore_plan", "retained",
    "source_ok", "to_delete", "torn_tail", "with_verdict",
]
