"""Backups of a replicated store, the pure part: errors, the record and the catalogue. Pure.

Everything a backup or a restore *decides* lives in ``core``; :mod:`fivenines.runtime.backup`
takes the copies, runs the check tools and the servers, and feeds the results in.
No files, no sockets, no clocks: times are wall-clock seconds passed in. One module per concern:

=====================================  ======================================================
:mod:`fivenines.core.backup`           errors, times (:func:`iso`, :func:`parse_time`), the
                                       record (:class:`BackupRecord`) and the catalogue
                                       (:func:`parse_catalogue`, ids), drill results, counters
:mod:`fivenines.core.backup_schedule`  schedules: an interval (``6h``) or cron in UTC, when the
                                       next run is due, the RPO a schedule promises
:mod:`fivenines.core.backup_retention` which backups retention removes (keep last N, daily, weekly)
:mod:`fivenines.core.backup_verify`    which member to copy from; the verdict on a copy (check tool,
                                       checksum, key count); the AOF files and the check tool's output
:mod:`fivenines.core.restore_plan`     which backup ``--from ID``/``--at TIME`` means, and the steps
                                       of a restore into the live group, each guarding a Redis trap
=====================================  ======================================================

* **The catalogue** (:class:`BackupRecord`, :func:`parse_catalogue`): one record per
  backup: id, group, time, size, source target, replication offset, SHA-256, key
  count, kind (``rdb`` or ``aof``), verdict.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
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



# --------------------------------------------------------------------------- durations and times

DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
"""A duration: a number and a unit (``90s``, ``6h``, ``1.5d``)."""
UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def fmt_seconds(s: float) -> str:
    """``6h``, ``90s``: the largest whole unit.

    >>> fmt_seconds(21600.0), fmt_seconds(90.0)
    ('6h', '90s')
    """
    for unit, n in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n and s % n == 0:
            return f"{int(s // n)}{unit}"
    return f"{s:g}s"


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
        m = DURATION.match(t[:-4].strip().lower())
        if m is None or now is None:
            raise BackupError(f"{text!r}: use e.g. '90m ago' or '2h ago'")
        return now - float(m.group(1)) * UNIT[m.group(2)]
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



def newest_first(records: Iterable[BackupRecord]) -> list[BackupRecord]:
    return sorted(records, key=lambda r: (r.time, r.id), reverse=True)


def with_verdict(r: BackupRecord, verdict: Verdict, detail: str, **changes: Any) -> BackupRecord:
    return replace(r, verified=verdict, detail=detail, **changes)


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

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DrillResult | None:
        """A drill kept beside the catalogue (:meth:`to_json`), or None when it is not one.

        >>> r = DrillResult(True, 60.0, "g-1", 5.0, 1.25, 3, "ok")
        >>> DrillResult.from_json(r.to_json()) == r, DrillResult.from_json({"ok": "yes"})
        (True, None)
        """
        def num(k: str) -> float | None:
            v = d.get(k)
            return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

        at, keys, backup = num("time"), d.get("keys"), d.get("backup")
        if not isinstance(d.get("ok"), bool) or at is None or not (keys is None or isinstance(keys, int)) \
                or not (backup is None or isinstance(backup, str)):
            return None
        return cls(d["ok"], at, backup, num("rpo_s"), num("rto_s"), keys, str(d.get("detail", "")))


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



__all__ = [
    "DURATION", "UNIT", "BackupError", "BackupRecord", "CatalogueError", "Counters", "DrillResult", "Kind",
    "RestoreRefused", "ScheduleError", "Verdict", "dump_catalogue", "fmt_seconds", "group_of_id", "iso",
    "new_backup_id", "newest_first", "parse_catalogue", "parse_time", "with_verdict",
]
