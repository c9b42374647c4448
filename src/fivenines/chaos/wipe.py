"""The ``wipe`` disaster: ``FLUSHALL`` on a replicated store's primary (replicated everywhere), then a
restore from backup; measured RPO and RTO beside the declared ones.

Replication cannot help here: the replicas copy the wipe. What comes back is the newest backup,
so the acknowledged writes after it are lost, and so is every write taken between the wipe and
the restore (the restore replaces the data). This module counts them, one by one.

* :func:`account` (pure): every acknowledged write (unique key, value, acknowledgement time)
  against the keys present after the restore: lost before the wipe (newer than the backup),
  lost after it (taken by the wiped primary before the restore replaced its data), missing
  though acknowledged after the restore (must be none), missing though acknowledged before
  the backup began (must be none: a backup holds every write the primary had taken when it
  began), and the measured RPO and RTO.
* :func:`wipe_target` (pure): the group a ``wipe`` run hits and the listener its writers use.
* :class:`Writers`, :func:`wipe`, :func:`scan` (thin I/O): writers through the listener
  confirming each write with ``WAIT 1``, the disaster, the final look-up;
  :func:`run_wipe` puts them together around a restore callable (the integration test and
  ``bench/restore_bench.py``); ``fivenines chaos --faults wipe`` runs them through the admin
  API (:class:`fivenines.chaos.runner.WipeRun`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fivenines.chaos import ChaosError
from fivenines.core.backup import fmt_seconds
from fivenines.runtime.redis import RedisClient
from fivenines.runtime.store import StoreError
from fivenines.spec import Spec


@dataclass(frozen=True, slots=True)
class Ack:
    """An acknowledged write: ``key`` (unique per write) set to ``value``, confirmed at ``at``."""

    key: str
    value: str
    at: float


@dataclass(frozen=True, slots=True)
class WipeReport:
    acknowledged: int
    lost_before_wipe: int  # acknowledged before the wipe, not in the restored data (newer than the backup)
    lost_after_wipe: int  # acknowledged by the wiped primary before the restore replaced its data
    missing_after_restore: int  # acknowledged after the restore ended, yet missing: must be 0
    wrong_value: int  # present with another value than acknowledged: must be 0
    wipe_at: float
    restore_started: float
    restore_ended: float
    backup_point: float | None  # the newest acknowledged write the restore brought back
    declared_rpo_s: float | None
    expected_rto_s: float | None
    missing_before_backup: int = 0  # acknowledged before the backup began, yet missing: must be 0

    @property
    def lost(self) -> int:
        return self.lost_before_wipe + self.lost_after_wipe

    @property
    def rpo_s(self) -> float | None:
        """Measured RPO: how old the restored data was when the wipe hit (wipe - newest write restored)."""
        return None if self.backup_point is None else max(0.0, self.wipe_at - self.backup_point)

    @property
    def rto_s(self) -> float:
        """Measured RTO: from the wipe to writes accepted again on the restored data."""
        return self.restore_ended - self.wipe_at

    def to_json(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 3)

        return {
            "acknowledged": self.acknowledged, "lost": self.lost, "lost_before_wipe": self.lost_before_wipe,
            "lost_after_wipe": self.lost_after_wipe, "missing_after_restore": self.missing_after_restore,
            "missing_before_backup": self.missing_before_backup,
            "wrong_value": self.wrong_value, "rpo_s": r(self.rpo_s), "declared_rpo_s": r(self.declared_rpo_s),
            "rto_s": r(self.rto_s), "restore_s": r(self.restore_ended - self.restore_started),
            "expected_rto_s": r(self.expected_rto_s),
        }

    def lines(self) -> list[str]:
        j = self.to_json()
        return [
            f"acknowledged writes  {j['acknowledged']}",
            f"lost                 {j['lost']} ({j['lost_before_wipe']} newer than the backup, "
            f"{j['lost_after_wipe']} taken between the wipe and the restore)",
            f"missing after restore {j['missing_after_restore']} (must be 0), before the backup "
            f"{j['missing_before_backup']} (must be 0), wrong value {j['wrong_value']} (must be 0)",
            f"RPO measured         {_s(j['rpo_s'])}  declared (schedule) {_s(j['declared_rpo_s'])}",
            f"RTO measured         {_s(j['rto_s'])}  (restore itself {_s(j['restore_s'])}; "
            f"last drill {_s(j['expected_rto_s'])})",
        ]


def _s(x: float | None) -> str:
    """``3.976s``; from a minute on, whole units (``6h``, ``366d``).

    >>> _s(3.9761), _s(21600.0), _s(None)
    ('3.976s', '6h', '?')
    """
    if x is None:
        return "?"
    return f"{x:.3f}s" if x < 60 else fmt_seconds(round(x))


def account(acks: Sequence[Ack], final: Mapping[str, str], *, wipe_at: float, restore_started: float,
            restore_ended: float, declared_rpo_s: float | None = None,
            expected_rto_s: float | None = None, complete_before: float | None = None) -> WipeReport:
    """Count what the wipe and the restore cost, write by write. ``complete_before``: the
    restored backup began at or after this time (every write acknowledged before it must be back).

    >>> acks = [Ack("a", "1", 1.0), Ack("b", "1", 2.0), Ack("c", "1", 4.0), Ack("d", "1", 9.0)]
    >>> r = account(acks, {"a": "1", "d": "1"}, wipe_at=3.0, restore_started=5.0, restore_ended=8.0)
    >>> (r.lost_before_wipe, r.lost_after_wipe, r.missing_after_restore, r.rpo_s, r.rto_s)
    (1, 1, 0, 2.0, 5.0)
    """
    before = after = missing = wrong = early = 0
    point: float | None = None
    for a in acks:
        have = final.get(a.key)
        if have is not None and have != a.value:
            wrong += 1
            continue
        if a.at >= restore_ended:
            missing += have is None
        elif have is None:
            if a.at < wipe_at:
                before += 1
                early += complete_before is not None and a.at < complete_before
            else:
                after += 1
        elif a.at < wipe_at:
            point = a.at if point is None else max(point, a.at)
    return WipeReport(len(acks), before, after, missing, wrong, wipe_at, restore_started, restore_ended, point,
                      declared_rpo_s, expected_rto_s, early)


def wipe_target(spec: Spec) -> tuple[int, str]:
    """The listener a ``wipe`` run writes through and its group: the first listener whose default
    target group is a replicated redis group with ``backup:`` that fivenines runs (``instances:``).
    ChaosError saying what is missing otherwise."""
    for i, ls in enumerate(spec.listeners):
        tg = spec.target_groups.get(ls.default_target_group)
        rep = tg.replicated if tg is not None else None
        if tg is not None and rep is not None and rep.kind == "redis" and rep.backup is not None:
            if tg.instances is None:
                raise ChaosError(f"target_groups.{ls.default_target_group} lists targets: fivenines does not run "
                                 "them, so chaos cannot wipe them; use instances:")
            return i, ls.default_target_group
    raise ChaosError("--faults wipe needs a listener whose default target group is a replicated redis group "
                     "with a backup: section (replicated.backup; docs/backup.md)")


# --------------------------------------------------------------------------- the run (I/O)


class Writers:
    """``clients`` connections through the listener, each writing unique keys confirmed by ``WAIT 1``."""

    def __init__(self, address: str, clients: int = 4, prefix: str = "wipe", wall: Callable[[], float] = time.time,
                 wait_timeout_ms: int = 1000) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port, self.clients, self.prefix = host, int(port), clients, prefix
        self.wall, self.wait_ms = wall, wait_timeout_ms
        self.acks: list[Ack] = []
        self.errors = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._client(i)) for i in range(self.clients)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _client(self, i: int) -> None:
        seq = 0
        c: RedisClient | None = None
        while not self._stop.is_set():
            try:
                if c is None or not c.usable:
                    c = await RedisClient.connect(self.host, self.port, 1.0)
                key, value = f"{self.prefix}:{i}:{seq}", str(seq)
                seq += 1
                await c.execute("SET", key, value, timeout=2.0)
                if int(await c.execute("WAIT", 1, self.wait_ms, timeout=self.wait_ms / 1000 + 2)) >= 1:
                    self.acks.append(Ack(key, value, self.wall()))
            except StoreError:
                self.errors += 1
                if c is not None:
                    c.close()
                c = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.05)
        if c is not None:
            c.close()


async def scan(address: str, pattern: str) -> dict[str, str]:
    """Every key matching ``pattern`` and its value."""
    host, _, port = address.rpartition(":")
    c = await RedisClient.connect(host, int(port), 5.0)
    out: dict[str, str] = {}
    try:
        cursor = b"0"
        while True:
            cursor, keys = await c.execute("SCAN", cursor, "MATCH", pattern, "COUNT", 1000, timeout=30.0)
            if keys:
                values = await c.execute("MGET", *keys, timeout=30.0)
                out.update({k.decode(errors="replace"): v.decode(errors="replace")
                            for k, v in zip(keys, values, strict=True) if v is not None})
            if cursor in (b"0", 0, "0"):
                return out
    finally:
        c.close()


async def wipe(primary: str) -> None:
    """The disaster: FLUSHALL on the primary; its replicas copy it."""
    host, _, port = primary.rpartition(":")
    c = await RedisClient.connect(host, int(port), 5.0)
    try:
        await c.execute("FLUSHALL", timeout=30.0)
    finally:
        c.close()


async def run_wipe(listener: str, primary: str, restore: Callable[[], Awaitable[Any]], *,
                   clients: int = 4, before: float = 2.0, restore_after: float = 1.0, after: float = 1.0,
                   backup: Callable[[], Awaitable[Any]] | None = None, declared_rpo_s: float | None = None,
                   expected_rto_s: float | None = None, wall: Callable[[], float] = time.time,
                   sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> WipeReport:
    """Writers run throughout; ``backup`` (if given) halfway through ``before``; the wipe; ``restore``
    ``restore_after`` seconds later (an operator noticing); ``after`` seconds of writes; then the count
    (with a ``backup``, every write acknowledged before it began must be back)."""
    w = Writers(listener, clients, wall=wall)
    w.start()
    began: float | None = None
    try:
        await sleep(before / 2)
        if backup is not None:
            began = wall()
            await backup()
        await sleep(before / 2)
        wipe_at = wall()
        await wipe(primary)
        await sleep(restore_after)
        started = wall()
        await restore()
        ended = wall()
        await sleep(after)
    finally:
        await w.stop()
    final = await scan(primary, f"{w.prefix}:*")
    return account(w.acks, final, wipe_at=wipe_at, restore_started=started, restore_ended=ended,
                   declared_rpo_s=declared_rpo_s, expected_rto_s=expected_rto_s, complete_before=began)
