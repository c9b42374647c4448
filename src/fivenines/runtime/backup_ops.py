"""Operator commands on a group's backups, as operations: started at once, run on, polled.

A backup, a verification, a restore or a drill can take minutes (a restore of 1 GB: a few).
So a command does not hold the caller's connection: :meth:`BackupOperations.start` checks it,
starts it and returns the operation at once (the admin API answers ``202``); the caller polls
:meth:`BackupOperations.get` (``GET /target_groups/G/operations/ID``) until its ``state`` is
no longer ``running``:

* ``ok``: done: a verified backup, a verification or drill that passed, a completed restore;
* ``failed``: it ran and did not succeed: a copy that failed verification, no copy could be
  taken, a restore that failed part-way (the events say what was done);
* ``refused``: it did not run and nothing changed (the backup failed verification, belongs
  to another group, the group has no primary ...).

A command the runtime can tell is wrong before it starts is refused at once instead
(:class:`~fivenines.runtime.interface.CommandRefused`: an unknown action, ``verify`` without
an id, ``restore`` without exactly one of ``from``/``at``, a time that does not parse), and so
is a second operation while one runs in the group (its id is in the refusal). Scheduled
backups and drills share the manager's lock: an operation may wait for one to end first.

:func:`perform` runs one command to its end; the operations run it in a task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from fivenines.core.backup import BackupError, RestoreRefused, Verdict, iso, parse_time
from fivenines.runtime.backup import BackupManager
from fivenines.runtime.interface import CommandRefused, Refusal

log = logging.getLogger("fivenines.backup")

ACTIONS = ("backup", "verify", "restore", "drill")
"""The commands; ``backups`` (the catalogue) is a read, not an operation."""


class Outcome(str, Enum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    REFUSED = "refused"  # did not run; nothing changed


async def perform(backups: BackupManager, action: str, params: Mapping[str, str]) -> tuple[Outcome, dict[str, Any]]:
    """Run one command to its end: its outcome and its JSON result (``{"error": ...}`` when it
    has nothing else to say). ValueError for an action that is not one of :data:`ACTIONS`."""
    try:
        if action == "backup":
            rec = await backups.backup("operator")
            return (Outcome.OK if rec.verified is Verdict.OK else Outcome.FAILED), rec.to_json()
        if action == "verify":
            rec = await backups.verify(params.get("id", ""))
            return (Outcome.OK if rec.verified is Verdict.OK else Outcome.FAILED), rec.to_json()
        if action == "restore":
            at = parse_time(params["at"], backups.wall()) if params.get("at") else None
            return Outcome.OK, await backups.restore(from_id=params.get("from") or None, at=at)
        if action == "drill":
            result = await backups.drill()
            return (Outcome.OK if result.ok else Outcome.FAILED), result.to_json()
    except RestoreRefused as exc:
        return Outcome.REFUSED, {"error": str(exc)}
    except BackupError as exc:
        return Outcome.FAILED, {"error": str(exc)}
    raise ValueError(f"no backup action {action!r}; use one of {', '.join(ACTIONS)}")


def _why(outcome: Outcome, body: dict[str, Any]) -> str | None:
    """The one-line reason an operation did not succeed (None when it did)."""
    if outcome is Outcome.OK:
        return None
    if "error" in body:
        return str(body["error"])
    what = body.get("id") or body.get("backup") or ""
    return f"{what}: {body.get('detail', '')}".strip(": ")


@dataclass(slots=True)
class Operation:
    id: str
    group: str
    action: str
    params: dict[str, str]
    source: str
    started: float
    state: Outcome = Outcome.RUNNING
    ended: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def to_json(self, now: float) -> dict[str, Any]:
        return {"id": self.id, "group": self.group, "action": self.action, "params": self.params,
                "source": self.source, "state": self.state.value, "started": iso(self.started),
                "ended": iso(self.ended) if self.ended is not None else None,
                "seconds": round((self.ended if self.ended is not None else now) - self.started, 3),
                "result": self.result, "error": self.error}


class BackupOperations:
    """The operator's operations on one group's backups (the last ``keep`` of them)."""

    def __init__(self, backups: BackupManager, keep: int = 20) -> None:
        self.backups = backups
        self.keep = keep
        self._ops: dict[str, Operation] = {}
        self._n = 0

    def __repr__(self) -> str:
        running = [op.id for op in self._ops.values() if op.state is Outcome.RUNNING]
        return f"<BackupOperations {self.backups.group} {len(self._ops)} kept, running {running or 'none'}>"

    @property
    def group(self) -> str:
        return self.backups.group

    def _check(self, action: str, params: Mapping[str, str]) -> dict[str, str]:
        """The command's parameters, or CommandRefused (INVALID) saying what would be valid."""
        g = self.group
        if action not in ACTIONS:
            raise CommandRefused(Refusal.UNKNOWN, f"no backup action {action!r}; use one of {', '.join(ACTIONS)}")
        if action == "verify":
            if not params.get("id"):
                raise CommandRefused(Refusal.INVALID, f"verify needs the backup's id (?id=ID; fivenines backups {g})")
            return {"id": params["id"]}
        if action != "restore":
            return {}
        if bool(params.get("from")) == bool(params.get("at")):
            raise CommandRefused(Refusal.INVALID, "restore needs exactly one of from=ID (fivenines backups "
                                 f"{g} lists them) or at=TIME (ISO 8601, @EPOCH or '90m ago')")
        if params.get("at"):
            try:
                parse_time(params["at"], self.backups.wall())
            except BackupError as exc:
                raise CommandRefused(Refusal.INVALID, f"at: {exc}") from None
            return {"at": params["at"]}
        return {"from": params["from"]}

    def start(self, action: str, params: Mapping[str, str], source: str = "admin API") -> dict[str, Any]:
        """Check and start a command; returns the operation (``state`` running). Raises CommandRefused."""
        checked = self._check(action, params)
        now = self.backups.wall()
        running = next((op for op in self._ops.values() if op.state is Outcome.RUNNING), None)
        if running is not None:
            raise CommandRefused(Refusal.CONFLICT, f"{running.action} {running.id} of {self.group} is still "
                                 "running: wait for it to end (its operation says how it went)",
                                 {"operation": running.to_json(now)})
        self._n += 1
        op = Operation(f"op-{self._n}", self.group, action, checked, source, now)
        self._ops[op.id] = op
        finished = [o.id for o in self._ops.values() if o.state is not Outcome.RUNNING]
        for old in finished[: max(0, len(self._ops) - self.keep)]:  # the oldest first
            del self._ops[old]
        op.task = asyncio.get_running_loop().create_task(self._run(op), name=f"backup {action} {self.group}")
        log.info("%s: %s %s started by %s %s", self.group, action, op.id, source, checked or "")
        return op.to_json(now)

    async def _run(self, op: Operation) -> None:
        try:
            outcome, body = await perform(self.backups, op.action, op.params)
        except asyncio.CancelledError:
            op.state, op.error, op.ended = Outcome.FAILED, "fivenines stopped before it ended", self.backups.wall()
            raise
        except Exception as exc:  # a bug must still end the operation, not leave it running for ever
            log.exception("%s: %s %s", self.group, op.action, op.id)
            outcome, body = Outcome.FAILED, {"error": f"{type(exc).__name__}: {exc}"}
        op.state, op.ended, op.error = outcome, self.backups.wall(), _why(outcome, body)
        op.result = None if set(body) == {"error"} else body

    def get(self, op_id: str) -> dict[str, Any]:
        """An operation (running or over). Raises CommandRefused (UNKNOWN)."""
        op = self._ops.get(op_id)
        if op is None:
            kept = ", ".join(self._ops) or "none"
            raise CommandRefused(Refusal.UNKNOWN, f"no operation {op_id!r} in {self.group} (kept: {kept})")
        return op.to_json(self.backups.wall())

    def last(self) -> dict[str, Any] | None:
        """The newest operation, for status."""
        op = next(reversed(self._ops.values()), None)
        return op.to_json(self.backups.wall()) if op is not None else None

    async def catalogue(self) -> dict[str, Any]:
        """The catalogue, newest first, read from the store. Raises CommandRefused (UNAVAILABLE)."""
        b = self.backups
        try:
            records = await b.stored_records()  # not records(reload=True): a backup may be running
        except BackupError as exc:
            raise CommandRefused(Refusal.UNAVAILABLE, f"{b.store.where}: {exc}") from None
        return {"group": b.group, "to": b.store.where, "backups": [r.to_json() for r in reversed(records)]}

    async def close(self) -> None:
        """Cancel the operations still running (fivenines stops)."""
        tasks = [op.task for op in self._ops.values() if op.task is not None and not op.task.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


__all__ = ["ACTIONS", "BackupOperations", "Operation", "Outcome", "perform"]
