"""What ``fivenines backup | backups | restore`` do; the command-line package wires these to commands.

* ``fivenines backup GROUP``: :func:`take_backup`, through the running fivenines' admin API
  (``POST /target_groups/GROUP/backup``): only the running process knows which replica is
  healthy and where the instances listen.
* ``fivenines backups GROUP [--verify ID]``: :func:`list_backups` reads the catalogue straight
  from the store (no running process needed); ``--verify`` goes through the admin API
  (``POST /target_groups/GROUP/verify?id=ID``) so that the verdict is recorded once.
* ``fivenines restore GROUP --from ID | --at TIME``: :func:`restore`, through the admin API
  (``POST /target_groups/GROUP/restore?from=ID`` or ``?at=TIME``): the running process fences
  the group's writes while it loads the backup.
* ``fivenines restore --drill GROUP``: :func:`drill` on the store alone, into a scratch server
  (never the live group); with ``--admin`` it runs in the process instead
  (``POST /target_groups/GROUP/drill``), where it is an event and a metric.

Exit codes the commands should use: 0 done, 1 failed (the message says why), 2 bad input
(no such group, no ``backup:`` section, a time that does not parse).
"""

from __future__ import annotations

import asyncio
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from fivenines.cli.admin_client import AdminClient, AdminError, AdminRefused
from fivenines.core.backup import BackupError, BackupRecord, DrillResult, iso, parse_time
from fivenines.errors import ConfigError
from fivenines.runtime.backup import offline_manager
from fivenines.spec import BackupSpec, load_spec


class BackupUsageError(ConfigError):
    """Bad input for a backup command (exit 2): no such group, no backup section, a bad time."""


def backup_section(spec_path: str, group: str) -> tuple[BackupSpec, Path, str | None]:
    """(the group's ``replicated.backup``, the spec's folder, the group's redis-server) or BackupUsageError."""
    spec = load_spec(spec_path)  # SpecError: the caller reports it (exit 2)
    tg = spec.target_groups.get(group)
    with_backup = sorted(n for n, t in spec.target_groups.items() if t.replicated and t.replicated.backup)
    if tg is None or tg.replicated is None or tg.replicated.backup is None:
        what = "no target group" if tg is None else "no replicated.backup section in target group"
        raise BackupUsageError(f"{spec_path}: {what} {group!r}; groups with backups: {', '.join(with_backup) or 'none'}")
    hint = tg.instances.command[0] if tg.instances is not None and isinstance(tg.instances.command, list) else None
    return tg.replicated.backup, Path(spec_path).resolve().parent, hint


def _offline(spec_path: str, group: str, work: Path) -> Any:
    b, base, hint = backup_section(spec_path, group)
    m = offline_manager(b, group, base, work, hint)
    m.read_only = True  # the running process owns the catalogue: these commands only read it
    return m


def list_backups(spec_path: str, group: str) -> list[BackupRecord]:
    """The catalogue, newest first, read from the store."""
    with tempfile.TemporaryDirectory(prefix="fivenines-backups-") as tmp:
        m = _offline(spec_path, group, Path(tmp))
        return list(reversed(asyncio.run(m.records())))


def drill(spec_path: str, group: str) -> DrillResult:
    """Restore the newest verified backup into a scratch redis-server and verify it (RPO, RTO)."""
    with tempfile.TemporaryDirectory(prefix="fivenines-drill-") as tmp:
        m = _offline(spec_path, group, Path(tmp))
        result: DrillResult = asyncio.run(m.drill())
        return result


def format_records(records: list[BackupRecord]) -> list[str]:
    """One line per backup, for ``fivenines backups``."""
    rows = [f"{'ID':32} {'KIND':4} {'TAKEN (UTC)':20} {'SIZE':>12} {'KEYS':>10} {'OFFSET':>12} {'SOURCE':10} VERIFIED"]
    for r in records:
        keys = "?" if r.keys is None else str(r.keys)
        off = "?" if r.offset is None else str(r.offset)
        rows.append(f"{r.id:32} {r.kind.value:4} {iso(r.time):20} {r.size:>12} {keys:>10} {off:>12} {r.source:10} "
                    f"{r.verified.value}" + (f" ({r.detail})" if r.verified.value == "failed" else ""))
    return rows


def _call(admin: str, token: str, group: str, action: str, query: dict[str, str], timeout: float) -> dict[str, Any]:
    """``POST /target_groups/GROUP/ACTION?QUERY`` through the one admin client."""
    client = AdminClient(admin, token, timeout=timeout)
    try:
        body = client.group_call(group, action, urllib.parse.urlencode(query), timeout=timeout)
    except AdminRefused as exc:
        data = exc.data
        raise BackupError(f"{action} of {group}: {data.get('error', data) if isinstance(data, dict) else data}") from None
    except AdminError as exc:
        raise BackupError(f"cannot reach fivenines at {admin}: {exc}") from None
    return dict(body)


def take_backup(admin: str, token: str, group: str, timeout: float = 3600.0) -> dict[str, Any]:
    """``POST /target_groups/GROUP/backup``: the new record (verified), or BackupError."""
    return _call(admin, token, group, "backup", {}, timeout)


def verify(admin: str, token: str, group: str, backup_id: str, timeout: float = 3600.0) -> dict[str, Any]:
    return _call(admin, token, group, "verify", {"id": backup_id}, timeout)


def restore(admin: str, token: str, group: str, *, from_id: str | None = None, at: str | None = None,
            timeout: float = 3600.0) -> dict[str, Any]:
    """``POST /target_groups/GROUP/restore?from=ID|at=TIME``: the restore's report, or BackupError
    (refused: nothing changed; failed part-way: what was done is in the events)."""
    if (from_id is None) == (at is None):
        raise BackupUsageError("give exactly one of --from ID or --at TIME")
    if at is not None:
        try:
            parse_time(at, 0.0)  # checked here for a clear usage error; the process parses it again
        except BackupError as exc:
            raise BackupUsageError(str(exc)) from None
    return _call(admin, token, group, "restore", {"from": from_id} if from_id else {"at": at or ""}, timeout)


def remote_drill(admin: str, token: str, group: str, timeout: float = 3600.0) -> dict[str, Any]:
    return _call(admin, token, group, "drill", {}, timeout)


ADMIN_ROUTES = {
    "POST /target_groups/{group}/backup": "backup",
    "GET /target_groups/{group}/backups": "backups",
    "POST /target_groups/{group}/verify?id=ID": "verify",
    "POST /target_groups/{group}/restore?from=ID|at=TIME": "restore",
    "POST /target_groups/{group}/drill": "drill",
}
"""The admin API routes these need; each calls :func:`fivenines.runtime.backup.admin_call`
with ``g.replication.backup`` and the action named here."""
