"""Backups of a replicated group: ``backup``, ``backups``, ``restore`` (docs/backup.md).

* ``fivenines backup GROUP``: take one now. Through the running fivenines
  (``POST /target_groups/GROUP/backup``): only it knows which replica is healthy and where
  the instances listen.
* ``fivenines backups GROUP``: the catalogue, newest first (``GET .../backups``);
  ``--verify ID`` checks one again (``POST .../verify?id=ID``: the verdict is recorded);
  ``--store`` reads the catalogue from the store named in the spec instead (no running
  fivenines needed).
* ``fivenines restore GROUP --from ID | --at TIME``: restore into the live group
  (``POST .../restore``): fivenines fences the group's writes while it loads the backup.
* ``fivenines restore --drill GROUP``: restore the newest verified backup into a scratch
  server, never the live group (``POST .../drill``: an event and a metric in the running
  fivenines); with ``--store``, on the store alone, in a scratch server of this command's own.

The admin API answers a command at once with an operation (``202``), which the command
polls (``GET .../operations/ID``) until it is over. Exit status: 0 done; 1 failed or refused
(the message says why; a refused restore changed nothing); 2 bad input (a time that does
not parse, ``--from`` with ``--at``, no such group or no ``backup:`` section with ``--store``);
130 interrupted (what runs in fivenines goes on: ``fivenines events`` follows it).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import click

from fivenines.cli import connect
from fivenines.cli.admin_client import AdminClient, AdminRefused
from fivenines.cli.common import EXIT_FAILED, EXIT_USAGE, err, fail, refusal

if TYPE_CHECKING:
    from fivenines.core.backup import BackupRecord, DrillResult
    from fivenines.runtime.backup import BackupManager

POLL = 0.2

timeout_option = click.option("--timeout", default=3600.0, show_default=True,
                              help="Seconds to wait for fivenines to finish it.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


# --------------------------------------------------------------------------- through the running fivenines


def run_operation(api: AdminClient, group: str, action: str, params: dict[str, str], timeout: float) -> dict[str, Any]:
    """Start a backup command in fivenines and poll it until it is over: the operation (its
    ``state`` ok, failed or refused). A refusal at the start (no such group, bad parameter,
    one already running) exits here: 2 for a bad parameter, 1 otherwise."""
    try:
        op = api.group_call(group, action, urlencode(params), status=202, timeout=30.0)
    except AdminRefused as exc:
        if exc.status == 400:  # a bad parameter: bad input
            fail(f"{action} of {group}: {exc.data.get('error') if isinstance(exc.data, dict) else exc.reason}",
                 EXIT_USAGE)
        raise
    err.print(f"{action} of {group} started in fivenines ({op['id']})", markup=False, highlight=False)
    deadline = time.monotonic() + timeout
    try:
        while op["state"] == "running":
            if time.monotonic() > deadline:
                fail(f"{action} {op['id']} still running after {timeout:g}s; it goes on in fivenines "
                     f"(fivenines events follows it)")
            time.sleep(POLL)
            op = api.group_get(group, f"operations/{op['id']}")
    except KeyboardInterrupt:
        err.print(f"interrupted: {action} {op['id']} goes on in fivenines (fivenines events follows it)")
        sys.exit(130)
    return dict(op)


def _over(op: dict[str, Any], what: str) -> dict[str, Any]:
    """The result of an operation that went well; exit 1 with the reason otherwise."""
    if op["state"] == "refused":
        fail(f"{what} refused, nothing was changed: {op.get('error')}")
    if op["state"] != "ok":
        fail(f"{what} failed after {op.get('seconds')}s: {op.get('error')}")
    return dict(op["result"] or {})


def describe_record(r: dict[str, Any]) -> str:
    keys = "?" if r.get("keys") is None else r["keys"]
    return (f"{r['id']} ({r['kind']}, {keys} keys, {r['size']} bytes, offset {r.get('offset')}, "
            f"from {r['source']}, {r.get('took', 0):.2f}s): {r.get('verified')}, {r.get('detail', '')}")


@click.command()
@click.argument("group")
@connect.mutating_options
@timeout_option
@json_option
def backup(group: str, admin: str | None, spec_file: str | None, token_file: str | None, timeout: float,
           as_json: bool) -> None:
    """Take a backup of GROUP now: copied from a healthy replica, verified, recorded in the catalogue.

    Exits 0 with a verified backup, 1 when none could be taken or it failed verification.
    """
    api = connect.client(admin, spec_file, token_file, token=True)
    with refusal(f"backup of {group}"):
        op = run_operation(api, group, "backup", {}, timeout)
    if as_json:
        click.echo(json.dumps(op))
    rec = _over(op, f"backup of {group}")
    if not as_json:
        click.echo(f"{group}: backup {describe_record(rec)}")


def format_records(records: list[dict[str, Any]]) -> list[str]:
    """One line per backup (catalogue records as JSON), for ``fivenines backups``."""
    rows = [f"{'ID':32} {'KIND':4} {'TAKEN (UTC)':20} {'SIZE':>12} {'KEYS':>10} {'OFFSET':>12} {'SOURCE':10} VERIFIED"]
    for r in records:
        keys = "?" if r.get("keys") is None else str(r["keys"])
        off = "?" if r.get("offset") is None else str(r["offset"])
        rows.append(f"{r['id']:32} {r['kind']:4} {r['at']:20} {r['size']:>12} {keys:>10} {off:>12} {r['source']:10} "
                    f"{r['verified']}" + (f" ({r['detail']})" if r["verified"] == "failed" else ""))
    return rows


@click.command()
@click.argument("group")
@connect.mutating_options
@click.option("--verify", "verify_id", metavar="ID", help="Check backup ID again (fetch, checksum, tool, key count).")
@click.option("--store", "from_store", is_flag=True,
              help="Read the catalogue from the store named in -f SPEC (no running fivenines needed).")
@timeout_option
@json_option
def backups(group: str, admin: str | None, spec_file: str | None, token_file: str | None, verify_id: str | None,
            from_store: bool, timeout: float, as_json: bool) -> None:
    """List GROUP's backups, newest first (or check one again with --verify ID)."""
    if verify_id is not None:
        if from_store:
            raise click.UsageError("--verify goes through the running fivenines (the verdict is recorded); "
                                   "drop --store")
        api = connect.client(admin, spec_file, token_file, token=True)
        with refusal(f"verify {verify_id}"):
            op = run_operation(api, group, "verify", {"id": verify_id}, timeout)
        if as_json:
            click.echo(json.dumps(op))
        rec = _over(op, f"verification of {verify_id}")
        if not as_json:
            click.echo(f"{group}: {describe_record(rec)}")
        return
    if from_store:
        records = [r.to_json() for r in store_catalogue(_spec_for_store(spec_file), group)]
        where = "the store"
    else:
        api = connect.client(admin, spec_file)
        with refusal(f"backups of {group}"):
            data = api.group_get(group, "backups")
        records, where = data["backups"], data["to"]
    if as_json:
        click.echo(json.dumps({"group": group, "backups": records}))
        return
    if not records:
        click.echo(f"{group}: no backups in {where}")
        return
    for line in format_records(records):
        click.echo(line)


def describe_restore(r: dict[str, Any]) -> list[str]:
    lines = [f"restored {r['note']} into {r['group']}: {r['keys']} keys on {r['primary']}, {r['rto_s']}s"]
    lines += [f"  {s['step']:<16} {s['seconds']:>8.3f}s  {s['detail']}".rstrip() for s in r.get("steps", [])]
    lines += [f"  note: {n}" for n in r.get("notes", [])]
    return lines


def describe_drill(d: dict[str, Any]) -> str:
    return (f"drill of backup {d['backup']}: {'ok' if d['ok'] else 'FAILED'}: RPO {d['rpo_s']}s (age of the data), "
            f"RTO {d['rto_s']}s (fetch to a loaded, verified server), {d['keys']} keys; {d['detail']}")


@click.command()
@click.argument("group")
@click.option("--from", "from_id", metavar="ID", help="The backup to restore (fivenines backups GROUP lists them).")
@click.option("--at", "at", metavar="TIME",
              help="Restore the data as of TIME: ISO 8601 (2025-01-31T03:00:00Z), @EPOCH or '90m ago'.")
@click.option("--drill", is_flag=True, help="A drill: the newest verified backup into a scratch server, never GROUP.")
@click.option("--store", "from_store", is_flag=True,
              help="With --drill: on the store named in -f SPEC, in a scratch server here (no running fivenines).")
@connect.mutating_options
@timeout_option
@json_option
def restore(group: str, from_id: str | None, at: str | None, drill: bool, from_store: bool, admin: str | None,
            spec_file: str | None, token_file: str | None, timeout: float, as_json: bool) -> None:
    """Restore a backup into GROUP (--from ID or --at TIME), or drill one (--drill).

    The group's writes are fenced while the backup is loaded into its primary and the replicas
    resync; writes taken after the backup are lost, by design. Refused, with nothing changed,
    when the backup failed verification, is not verified yet or belongs to another group.
    """
    if drill:
        if from_id or at:
            raise click.UsageError("--drill restores the newest verified backup into a scratch server: "
                                   "drop --from/--at")
        _drill(group, from_store, admin, spec_file, token_file, timeout, as_json)
        return
    if from_store:
        raise click.UsageError("--store is for --drill: a restore goes through the running fivenines")
    if (from_id is None) == (at is None):
        raise click.UsageError("give exactly one of --from ID (fivenines backups GROUP lists them) or --at TIME")
    if at is not None:
        from fivenines.core.backup import BackupError, parse_time

        try:
            parse_time(at, time.time())  # a clear usage error here; fivenines parses it again
        except BackupError as exc:
            fail(f"--at: {exc}", EXIT_USAGE)
    api = connect.client(admin, spec_file, token_file, token=True)
    with refusal(f"restore of {group}"):
        op = run_operation(api, group, "restore", {"from": from_id} if from_id else {"at": at or ""}, timeout)
    if as_json:
        click.echo(json.dumps(op))
    result = _over(op, f"restore of {group}")
    if not as_json:
        for line in describe_restore(result):
            click.echo(line)


def _drill(group: str, from_store: bool, admin: str | None, spec_file: str | None, token_file: str | None,
           timeout: float, as_json: bool) -> None:
    if from_store:
        result = store_drill(_spec_for_store(spec_file), group).to_json()
        if as_json:
            click.echo(json.dumps(result))
        if not result["ok"]:
            fail(describe_drill(result))
    else:
        api = connect.client(admin, spec_file, token_file, token=True)
        with refusal(f"drill of {group}"):
            op = run_operation(api, group, "drill", {}, timeout)
        if as_json:
            click.echo(json.dumps(op))
        if op["state"] == "failed" and op.get("result"):
            fail(describe_drill(op["result"]), EXIT_FAILED)
        result = _over(op, f"drill of {group}")
    if not as_json:
        click.echo(f"{group}: {describe_drill(result)}")


# --------------------------------------------------------------------------- fivenines status


def ago(seconds: float | None) -> str:
    """A duration for people: ``45s``, ``12m``, ``5h 48m``, ``3d 2h``.

    >>> ago(45.2), ago(720), ago(20880), ago(266400), ago(None)
    ('45s', '12m', '5h 48m', '3d 2h', '?')
    """
    if seconds is None:
        return "?"
    s = round(seconds)
    for unit, n, sub, m in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if s >= n:
            rest = (s % n) // m
            return f"{s // n}{unit}" + (f" {rest}{sub}" if rest else "")
    return f"{s // 60}m" if s >= 60 else f"{s}s"


def status_line(group: str, b: dict[str, Any]) -> str:
    """A replicated group's backups in one line, for ``fivenines status`` (from ``/status``:
    ``target_groups.G.replication.backup``).

    >>> status_line("cache", {"schedule": "every 6h", "to": "/srv/b/cache", "newest": {"id": "cache-1"},
    ...     "newest_age_s": 720, "verified": 4, "next_backup_in_s": 20880, "running": None,
    ...     "last_drill": {"ok": True, "rpo_s": 6.9, "rto_s": 2.1}, "last_drill_age_s": 7200})
    'cache: backups every 6h to /srv/b/cache: last cache-1, 12m old (4 verified), next in 5h 48m; last drill ok 2h ago: RPO 6.9s, RTO 2.1s'
    """
    newest = b.get("newest")
    last = (f"last {newest['id']}, {ago(b.get('newest_age_s'))} old ({b.get('verified')} verified)"
            if newest else "none verified yet")
    line = f"{group}: backups {b.get('schedule')} to {b.get('to')}: {last}, next in {ago(b.get('next_backup_in_s'))}"
    d = b.get("last_drill")
    if d:
        line += (f"; last drill {'ok' if d.get('ok') else 'FAILED'} {ago(b.get('last_drill_age_s'))} ago: "
                 f"RPO {d.get('rpo_s')}s, RTO {d.get('rto_s')}s")
    else:
        line += "; no drill yet"
    if b.get("running"):
        line += f"; running: {b['running']}"
    return line


# --------------------------------------------------------------------------- on the store alone


def _spec_for_store(spec_file: str | None) -> str:
    path = connect.find_spec(spec_file)
    if path is None:
        fail("--store reads the backup section of a spec: give -f SPEC", EXIT_USAGE)
    return path


def _offline(spec_path: str, group: str, work: Path) -> BackupManager:
    """A manager on the store alone, read-only (the running process owns the catalogue).
    SpecError or ConfigError (exit 2) for a spec without that group or its backup section."""
    from fivenines.errors import ConfigError
    from fivenines.runtime.backup import offline_manager
    from fivenines.spec import load_spec

    spec = load_spec(spec_path)
    tg = spec.target_groups.get(group)
    if tg is None or tg.replicated is None or tg.replicated.backup is None:
        with_backup = sorted(n for n, t in spec.target_groups.items() if t.replicated and t.replicated.backup)
        what = "no target group" if tg is None else "no replicated.backup section in target group"
        raise ConfigError(f"{spec_path}: {what} {group!r}; groups with backups: {', '.join(with_backup) or 'none'}")
    inst = tg.instances
    hint = inst.command[0] if inst is not None and isinstance(inst.command, list) else None
    m = offline_manager(tg.replicated.backup, group, Path(spec_path).resolve().parent, work, hint)
    m.read_only = True
    return m


def store_catalogue(spec_path: str, group: str) -> list[BackupRecord]:
    """The catalogue, newest first, read from the store named in the spec."""
    with tempfile.TemporaryDirectory(prefix="fivenines-backups-") as tmp:
        m = _offline(spec_path, group, Path(tmp))
        return list(reversed(asyncio.run(m.records())))


def store_drill(spec_path: str, group: str) -> DrillResult:
    """Restore the newest verified backup into a scratch redis-server here and verify it (RPO, RTO)."""
    with tempfile.TemporaryDirectory(prefix="fivenines-drill-") as tmp:
        m = _offline(spec_path, group, Path(tmp))
        return asyncio.run(m.drill())


COMMANDS: tuple[click.Command, ...] = (backup, backups, restore)
"""This family's commands, added to ``fivenines`` by :mod:`fivenines.cli`."""
