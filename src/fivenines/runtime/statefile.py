"""The state file: every target's health and operator state, saved so a restart keeps it.

``STATE_DIR/health-state.json`` (owner-only) is rewritten atomically shortly after
every state change, every few seconds while running (so its age says how fresh it
is, even after a ``kill -9``), and once more when fivenines stops. At start-up each
target's record goes through :func:`fivenines.core.restore.decide`, which ignores it
when stale or when the target's definition changed; what is restored is logged as a
``restore`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fivenines.core.health import HealthState, Reason
from fivenines.core.restore import MAX_AGE, AdminState, SavedTarget, decide
from fivenines.runtime.context import RuntimeContext

log = logging.getLogger("fivenines")

VERSION = 1


def encode(ctx: RuntimeContext, saved_at: float) -> dict[str, Any]:
    targets: dict[str, Any] = {}
    for g in ctx.groups.values():
        for t in g.targets:
            h = t.health
            targets[t.id] = {
                "group": g.name,
                "fingerprint": t.fingerprint,
                "state": h.state.value,
                "reason": h.reason.value if h.reason else None,
                "detail": h.detail,
                "admin_state": t.admin_state.value if t.admin_state else None,
                "weight": t.base_weight if t.base_weight != t.spec_weight else None,
            }
    return {"version": VERSION, "name": ctx.spec.name, "saved_at": saved_at, "targets": targets}


def decode(data: Any) -> tuple[float, dict[str, SavedTarget]]:
    """``(saved_at, records)`` from the file's JSON; raises ValueError when it is not one."""
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ValueError("not a fivenines state file of version 1")
    saved_at = float(data["saved_at"])
    out: dict[str, SavedTarget] = {}
    for tid, rec in dict(data["targets"]).items():
        out[str(tid)] = SavedTarget(
            fingerprint=str(rec["fingerprint"]),
            state=HealthState(rec["state"]),
            reason=Reason(rec["reason"]) if rec.get("reason") else None,
            detail=str(rec.get("detail") or ""),
            admin_state=AdminState(rec["admin_state"]) if rec.get("admin_state") else None,
            weight=int(rec["weight"]) if rec.get("weight") is not None else None,
        )
    return saved_at, out


class StateFile:
    """Saves the runtime's target states; restores them once at start-up."""

    def __init__(self, ctx: RuntimeContext, path: Path, every: float = 5.0, max_age: float = MAX_AGE) -> None:
        self.ctx = ctx
        self.path = path
        self.every = every
        self.max_age = max_age
        self._task: asyncio.Task[None] | None = None
        self._dirty = asyncio.Event()
        self._unsubscribe: Callable[[], None] | None = None
        self.saves = 0

    def __repr__(self) -> str:
        return f"<StateFile {self.path} saves={self.saves}>"

    # -- restore

    def restore(self) -> list[str]:
        """Apply what the file may restore to the runtime's fresh targets. Returns what was done."""
        try:
            raw = json.loads(self.path.read_text())
            saved_at, records = decode(raw)
            if raw.get("name") != self.ctx.spec.name:
                raise ValueError(f"written for service {raw.get('name')!r}")
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("state file %s ignored: %s", self.path, exc)
            return []
        ctx = self.ctx
        now_mono, now_wall = ctx.now(), time.time()
        done = []
        for g in ctx.groups.values():
            for t in g.targets:
                # an instance another cluster node runs is supervised too (there): its health is not restored
                supervised = t.slot is not None or t.reachable is not None
                r = decide(records.get(t.id), t.fingerprint, supervised, saved_at, now_wall, self.max_age)
                if t.id in records and not r.anything:
                    ctx.emit("restore", g.name, t.id, "", "", f"not restored: {r.why}", at=now_mono)
                    continue
                if not r.anything:
                    continue
                old = t.health.state.value
                if r.state is not None:
                    # in place: the target's health judge holds this very machine
                    h = t.health
                    h.state, h.reason, h.since, h.detail = r.state, r.reason, now_mono, r.detail
                    h.passes = h.healthy_threshold if r.state is HealthState.HEALTHY else 0
                    h.failures = h.unhealthy_threshold if r.state is HealthState.UNHEALTHY else 0
                t.admin_state = r.admin_state
                if r.weight is not None:
                    t.base_weight = r.weight
                    t.backend.weight = t.effective_weight()
                ctx.emit("restore", g.name, t.id, old, t.health.state.value, r.why, at=now_mono)
                log.info("%s: %s", t.id, r.why)
                done.append(f"{t.id}: {r.why}")
        return done

    # -- save

    def start(self) -> None:
        self._unsubscribe = self.ctx.events.subscribe(lambda ev: self._dirty.set())
        self._task = asyncio.get_running_loop().create_task(self._run(), name="state file")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.every):
                    await self._dirty.wait()
                    await asyncio.sleep(0.1)  # let a burst of changes settle into one write
            self._dirty.clear()
            self.save()

    def save(self) -> None:
        data = encode(self.ctx, time.time())
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, separators=(",", ":"))
            os.replace(tmp, self.path)
            self.saves += 1
        except OSError as exc:
            log.error("cannot save state file %s: %s", self.path, exc)

    def stop(self) -> None:
        """Save once more and stop saving (called as fivenines begins to stop)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.save()
