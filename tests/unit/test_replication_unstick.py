"""An action that fails in a way the store adapter did not foresee must not leave the replication
core waiting for ever (ELECTING or PROMOTING, no primary): the manager reports the round failed and
the core retries. The manager is driven with a real core and a store whose calls raise."""

from __future__ import annotations

import asyncio
from collections import deque
from types import SimpleNamespace
from typing import Any

from fivenines.core.replication import Collect, Phase, Promote
from fivenines.runtime.replication import ReplicationManager
from tests.unit.test_replication import of, rep, serving_group


class Broken:
    """A store whose every call fails with an error no adapter maps to StoreError."""

    def __init__(self, fail: set[str]) -> None:
        self.fail = fail
        self.calls: list[str] = []

    async def observe(self, t: Any, timeout: float) -> Any:
        self.calls.append(f"observe {t}")
        if "observe" in self.fail:
            raise ValueError("garbled INFO")
        return rep(100, "h:9")

    async def promote(self, t: Any, timeout: float) -> None:
        self.calls.append(f"promote {t}")
        if "promote" in self.fail:
            raise RuntimeError("surprise")


def manager(core: Any, store: Broken, now: list[float]) -> ReplicationManager:
    m = ReplicationManager.__new__(ReplicationManager)
    m.ctx = SimpleNamespace(now=lambda: now[0], stopping=False, emit=lambda *a, **kw: "ev")  # type: ignore[assignment]
    m.data_plane = SimpleNamespace(cut=lambda group, backend: None)  # type: ignore[assignment]
    m.g = SimpleNamespace(name="db", backends=SimpleNamespace(serving=[], set_serving=lambda ids: None),
                          targets=[])  # type: ignore[assignment]
    m.readers = SimpleNamespace(set_serving=lambda ids: None)  # type: ignore[assignment]
    m.core, m.store, m.lease = core, store, None  # type: ignore[assignment]
    m.targets = {t: t for t in ("db-1", "db-2", "db-3")}  # type: ignore[dict-item]
    m.timeout = m.command_timeout = 0.1
    m.cut_off_until, m.observations, m.read_listeners, m.failovers = {}, {}, [], 0
    m._queue, m._wake, m._changed, m._follows = deque(), asyncio.Event(), asyncio.Event(), {}
    return m


async def run_actions(m: ReplicationManager, acts: list[Any]) -> None:
    work = asyncio.get_running_loop().create_task(m._work())
    for a in acts:
        m._queue.append(a)
    m._wake.set()
    try:
        async with asyncio.timeout(5):
            while m._queue or m.core.phase in (Phase.ELECTING, Phase.PROMOTING):
                m._changed.clear()
                await m._changed.wait()
    finally:
        work.cancel()


def test_a_collect_that_raises_ends_the_round_and_the_core_retries() -> None:
    now = [1.0]
    core = serving_group()
    [collect] = of(core.health("db-1", True, "timeout", 1.0), Collect)
    assert core.phase is Phase.ELECTING
    m = manager(core, Broken({"observe"}), now)
    asyncio.run(run_actions(m, [collect]))
    assert core.phase is Phase.NO_PRIMARY  # the round failed: retried at the next interval
    [again] = of(core.tick(3.0), Collect)
    assert again.round > collect.round


def test_a_promotion_that_raises_is_a_failed_promotion() -> None:
    now = [1.0]
    core = serving_group()
    [collect] = of(core.health("db-1", True, "timeout", 1.0), Collect)
    [promote] = of(core.positions(collect.round, {"db-2": rep(100), "db-3": rep(100)}, 1.0), Promote)
    assert core.phase is Phase.PROMOTING
    store = Broken({"promote"})
    m = manager(core, store, now)
    asyncio.run(run_actions(m, [promote]))
    assert store.calls == ["promote db-2"]
    assert core.phase is Phase.NO_PRIMARY and core.primary == "db-1"  # nothing promoted, retried later
