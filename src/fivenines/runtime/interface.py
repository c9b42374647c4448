"""The local runtime's public interface: what front ends (the admin API, metrics, the CLI) may use.

A running fivenines, seen from outside the runtime, is a :class:`Runtime`:

* **read models**: :meth:`Runtime.status` (the whole service, see
  :mod:`fivenines.runtime.status`), :meth:`Runtime.target_status`, and, for metrics,
  the groups and listeners themselves (read only);
* **commands in**: drain / enable / maintenance a target, set its weight, reload the spec,
  a rolling restart of a group, a manual count for a scaled group, a switchover (and fault
  injection) in a replicated group.
  A command the runtime cannot carry out raises :class:`CommandRefused`, saying why
  (:class:`Refusal`: no such thing, not in this state, a value out of range, a store that
  did not answer);
* **events out**: the event bus (:class:`~fivenines.runtime.events.EventLog`: subscribe,
  follow, recent) and every health-check result (:meth:`Runtime.on_check`).

:class:`~fivenines.runtime.controller.Controller` is the implementation. The runtime never
imports a front end: the entry point (:func:`fivenines.app.run`) builds the admin API over a
:class:`Runtime` and hands it to :meth:`~fivenines.runtime.controller.Controller.start` as a
:class:`FrontEnd`, which the runtime starts and stops with itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from fivenines.core.health import CheckResult
from fivenines.errors import ConflictError
from fivenines.proxy.base import ListenerView
from fivenines.runtime.events import EventLog, iso
from fivenines.runtime.targets import GroupRuntime
from fivenines.spec import ListenerSpec, Spec


class Refusal(str, Enum):
    UNKNOWN = "unknown"  # no such target or group
    CONFLICT = "conflict"  # not possible in its current state
    INVALID = "invalid"  # a value out of range
    UNAVAILABLE = "unavailable"  # something it needs did not answer (a backup store)


class CommandRefused(ConflictError):
    """A command the runtime did not carry out; nothing changed. ``detail``: more for the caller
    (e.g. the rolling restart already running)."""

    def __init__(self, why: Refusal, message: str, detail: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.why = why
        self.detail = dict(detail or {})


@dataclass(slots=True)
class ReloadResult:
    ok: bool
    source: str
    generation: int
    at: float
    actions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "source": self.source, "generation": self.generation, "at": iso(self.at),
                "actions": self.actions, "errors": self.errors, "warnings": self.warnings}


class FrontEnd(Protocol):
    """A server the runtime starts with itself and stops last (the admin API)."""

    @property
    def url(self) -> str: ...

    async def start(self) -> None:
        """Bind and serve (OSError: the address is taken)."""
        ...

    async def close(self) -> None: ...


class Runtime(Protocol):
    """A running fivenines, as front ends see it."""

    @property
    def spec(self) -> Spec: ...

    @property
    def base_dir(self) -> Path:
        """The spec file's folder (relative paths in the spec are relative to it)."""
        ...

    @property
    def state_dir(self) -> Path: ...

    # -- events out

    @property
    def events(self) -> EventLog: ...

    def on_check(self, fn: Callable[[str, str, CheckResult], None]) -> Callable[[], None]:
        """Call ``fn(group, target, result)`` after every health check; returns the unsubscribe call."""
        ...

    # -- read models

    def status(self) -> dict[str, Any]: ...

    def target_ids(self) -> list[str]: ...

    def target_status(self, target_id: str) -> dict[str, Any]:
        """One target's status (as in :meth:`status`). Raises CommandRefused (UNKNOWN)."""
        ...

    @property
    def groups(self) -> Mapping[str, GroupRuntime]:
        """The target groups, to read (metrics); change them only through the commands."""
        ...

    @property
    def listeners(self) -> Sequence[tuple[ListenerSpec, ListenerView]]: ...

    @property
    def generation(self) -> int:
        """The configuration generation: 1 + successful reloads."""
        ...

    @property
    def reload_counts(self) -> Mapping[str, int]:
        """Reloads by result (``ok``, ``rejected``)."""
        ...

    def backup_status(self) -> Mapping[str, Mapping[str, Any]]:
        """Each group with ``backup:``: its backups' status, as in ``/status``
        (``target_groups.G.replication.backup``; docs/backup.md), for metrics."""
        ...

    # -- commands in

    def act(self, target_id: str, action: str, source: str = "admin API") -> dict[str, Any]:
        """``drain`` | ``enable`` | ``maintenance`` a target; returns its new status."""
        ...

    def set_weight(self, target_id: str, weight: int, source: str = "admin API") -> dict[str, Any]:
        """Set a target's weight (0-1000; 0: no new requests); returns its new status."""
        ...

    async def reload(self, source: str = "admin API") -> ReloadResult:
        """Re-read the spec file and apply the difference (or reject it whole)."""
        ...

    def restart_group(self, name: str) -> dict[str, Any]:
        """Start a rolling restart of a group; returns the rollout's snapshot."""
        ...

    def scaling(self) -> Mapping[str, dict[str, Any]]:
        """Each scaled group's scaling status (as ``target_groups.G.scaling`` in :meth:`status`)."""
        ...

    def scale(self, group: str, count: int | None, source: str = "admin API") -> dict[str, Any]:
        """An operator's count for a scaled group, within its min..max (None: back to the policies);
        returns the group's scaling status."""
        ...

    async def switchover(self, group: str, to: str | None = None) -> dict[str, Any]:
        """Planned change of primary in a replicated group; returns once done."""
        ...

    def cut_off(self, group: str, target_id: str, seconds: float) -> dict[str, Any]:
        """Fault injection in a replicated group: every connection to the target fails for ``seconds``."""
        ...

    # -- backups of a replicated group with ``backup:`` (docs/backup.md)

    def backup_command(self, group: str, action: str, params: Mapping[str, str],
                       source: str = "admin API") -> dict[str, Any]:
        """Start ``backup`` | ``verify`` (``id``) | ``restore`` (``from`` or ``at``) | ``drill`` as an
        operation (:mod:`fivenines.runtime.backup_ops`); returns it, ``state`` running. Raises
        CommandRefused: UNKNOWN (no such group or action), CONFLICT (no ``backup:`` section, an
        operation already running), INVALID (a missing or bad parameter)."""
        ...

    def backup_operation(self, group: str, op_id: str) -> dict[str, Any]:
        """An operation started by :meth:`backup_command`: its ``state`` (running, ok, failed,
        refused), and its ``result`` or ``error`` once over. Raises CommandRefused (UNKNOWN)."""
        ...

    async def backups(self, group: str) -> dict[str, Any]:
        """The group's catalogue, newest first, read from the store. Raises CommandRefused
        (UNKNOWN, CONFLICT as above; UNAVAILABLE: the store did not answer)."""
        ...
