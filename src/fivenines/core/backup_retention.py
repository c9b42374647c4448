"""Backup retention: which backups a catalogue keeps and which it removes. Pure.

Keep the newest ``keep_last`` verified backups, plus the newest of each of the last
``daily`` UTC days and ``weekly`` ISO weeks that have one (as ``restic forget
--keep-last --keep-daily --keep-weekly``). Backups still being verified are never
deleted; the newest verified backup never is; one that failed verification goes once
a newer backup exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fivenines.core.backup import BackupRecord, Verdict, newest_first


@dataclass(frozen=True, slots=True)
class Retention:
    keep_last: int = 7
    daily: int = 0
    weekly: int = 0

    def __post_init__(self) -> None:
        if self.keep_last < 1 or self.daily < 0 or self.weekly < 0:
            raise ValueError("keep_last must be at least 1; daily and weekly at least 0")



def retained(records: Sequence[BackupRecord], rules: Retention) -> set[str]:
    """Ids of the verified backups the rules keep: the newest ``keep_last``, and the newest of each
    of the ``daily`` most recent UTC days and ``weekly`` most recent ISO weeks that have one."""
    good = newest_first(r for r in records if r.verified is Verdict.OK)
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

    >>> from fivenines.core.backup import Kind
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



__all__ = ["Retention", "retained", "to_delete"]
