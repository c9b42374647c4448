"""The election runner: drives :mod:`fivenines.core.election` with a real etcd lease and the real VIP.

Three things run on the event loop:

* a **ticker** (every ``tick`` seconds) feeds the time to the machine, which decides
  when to campaign, renew, or give the address up at its deadline;
* a **watcher** reads the leader key and then watches it, feeding every change (with
  the revision etcd answered at, so stale answers are told apart);
* the **actions** the machine returns: fence and address changes
  (:class:`~fivenines.runtime.vip.Vip`: in-process nftables and rtnetlink calls, well under
  a millisecond) are carried out at once, in order and without yielding to the loop, so a
  drop is never stuck behind a slow etcd call; etcd calls (campaign, keepalive, revoke)
  run as tasks, each timing its request from just before it is sent.

``status()`` says who holds the VIP and since when, the lease and the fencing revision;
``on_change(status)`` is called whenever the holder or this node's role changes (the
controller uses it to start or stop serving on the VIP). Keys, under ``key_prefix``:
``PREFIX/SERVICE/cluster/leader`` (value: the holder's node name, attached to its lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from fivenines.core.election import (
    Action,
    Campaign,
    DropVip,
    Election,
    HoldVip,
    Renew,
    Revoke,
    Settings,
    Step,
)
from fivenines.errors import FivenineError
from fivenines.runtime.lease import Etcd, EtcdError, b64, unb64

log = logging.getLogger("fivenines.cluster")


class VipLike(Protocol):
    def install(self) -> None: ...

    def hold(self, fence_until: float, lifetime: int, clock: Callable[[], float]) -> bool: ...

    def drop(self) -> None: ...

    def close(self) -> None: ...


def leader_key(prefix: str, service: str) -> str:
    """The etcd key of the cluster's leader (value: the holder's node name, attached to its lease).

    >>> leader_key("/fivenines", "shop")
    '/fivenines/shop/cluster/leader'
    """
    return f"{prefix.rstrip('/')}/{service}/cluster/leader"


class ElectionRunner:
    """This node's part in the election for the cluster's address."""

    def __init__(self, etcd: Etcd, settings: Settings, key: str, vip: VipLike, *,
                 clock: Callable[[], float] | None = None, tick: float = 0.05,
                 on_change: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.etcd = etcd
        self.election = Election(settings)
        self.key = key
        self.vip = vip
        self._clock = clock
        self.tick = tick
        self.on_change = on_change
        self.holds_vip = False  # the address is on this host as far as this node did it
        self.vip_since: float | None = None  # wall clock
        self.last_error: str | None = None
        self.decisions: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: list[asyncio.Task[None]] = []
        self._seen: tuple[object, ...] = ()
        self._drop_failed = False

    def __repr__(self) -> str:
        return f"<ElectionRunner {self.election!r} vip={'held' if self.holds_vip else '-'}>"

    @property
    def node(self) -> str:
        return self.election.settings.node

    def now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    # -- life ---------------------------------------------------------------------------

    def start(self) -> None:
        """Put the VIP's fence in place (closed; raises :class:`~fivenines.errors.ProviderError` when it
        cannot be), then start the ticker and the watcher."""
        self.vip.install()
        loop = asyncio.get_running_loop()
        self._main = [loop.create_task(self._ticker(), name="election ticker"),
                      loop.create_task(self._watcher(), name="election watcher")]

    async def stop(self) -> None:
        """Resign: drop the address, revoke the lease (so another node takes over at once), stop."""
        for t in self._main:
            t.cancel()
        await asyncio.gather(*self._main, return_exceptions=True)
        self._apply(self.election.resign(self.now()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await asyncio.gather(*self._tasks, return_exceptions=True)
        for t in self._tasks:
            t.cancel()
        if not self.holds_vip and not self._drop_failed:  # else leave the fence: it keeps the address silent
            self.vip.close()

    # -- the loops ------------------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            self._apply(self.election.tick(self.now()))
            await asyncio.sleep(self.tick)

    async def _watcher(self) -> None:
        while True:
            try:
                kv, read_at = await self.etcd.read(self.key)
                self._observe(kv, read_at)
                # a watch can stall silently (a half-open connection): read afresh now and then
                async with asyncio.timeout(2 * self.election.settings.ttl):
                    async for resp in self.etcd.watch(self.key, read_at + 1):
                        at = int(resp.get("header", {}).get("revision", 0))
                        for ev in resp.get("events", []):
                            self._observe(None if ev.get("type") == "DELETE" else ev.get("kv"), at)
                        if resp.get("canceled"):
                            raise EtcdError(f"watch canceled: {resp.get('cancel_reason', '')}")
            except TimeoutError:
                continue
            except EtcdError as exc:
                self.last_error = str(exc)
                log.debug("%s: watch: %s", self.node, exc)
            await asyncio.sleep(self.election.settings.retry_interval)

    def _observe(self, kv: dict[str, Any] | None, read_at: int) -> None:
        now = self.now()
        if kv is None:
            step = self.election.observe(None, 0, read_at, now)
        else:
            step = self.election.observe(unb64(kv["value"]).decode(), int(kv["create_revision"]), read_at, now)
        self._apply(step)

    # -- carrying out -----------------------------------------------------------------------

    def _apply(self, step: Step) -> None:
        if step.decision:
            log.info("%s", step.decision)
            self.decisions.append(step.decision)
            del self.decisions[:-20]
        for action in step.actions:
            self._do(action)
        self._changed()

    def _do(self, action: Action) -> None:
        if isinstance(action, HoldVip):
            try:
                added = self.vip.hold(action.fence_until, action.lifetime, self.now)
            except FivenineError as exc:
                self.last_error = str(exc)
                log.error("%s: could not hold the VIP: %s", self.node, exc)
                return
            if added or not self.holds_vip:
                self.holds_vip, self.vip_since = True, time.time()
        elif isinstance(action, DropVip):
            try:
                self.vip.drop()
            except FivenineError as exc:
                self.last_error = str(exc)
                self._drop_failed = True
                log.error("%s: could not drop the VIP: %s", self.node, exc)
            else:
                self._drop_failed = False
            self.holds_vip, self.vip_since = False, None
        elif isinstance(action, Campaign):
            self._spawn(self._campaign(action.ttl))
        elif isinstance(action, Renew):
            self._spawn(self._renew(action.lease))
        elif isinstance(action, Revoke):
            self._spawn(self._revoke(action.lease))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _campaign(self, ttl: int) -> None:
        lease: int | None = None
        sent = self.now()
        try:
            lease_id, granted = await self.etcd.grant(ttl)
            lease = int(lease_id)
            ok, revision, doc = await self.etcd.txn(
                [{"target": "CREATE", "key": b64(self.key), "createRevision": "0"}],
                [{"requestPut": {"key": b64(self.key), "value": b64(self.node), "lease": str(lease)}}],
                [{"requestRange": {"key": b64(self.key)}}],
            )
        except EtcdError as exc:
            self.last_error = str(exc)
            self._apply(self.election.campaign_failed(lease, str(exc), self.now()))
            return
        now = self.now()
        if ok:
            self._apply(self.election.granted(lease, granted, revision, sent, now))
            return
        kvs = (doc.get("responses") or [{}])[0].get("response_range", {}).get("kvs") or []
        holder = unb64(kvs[0]["value"]).decode() if kvs else None
        held_rev = int(kvs[0]["create_revision"]) if kvs else 0
        self._apply(self.election.refused(lease, holder, held_rev, now))

    async def _renew(self, lease: int) -> None:
        sent = self.now()
        # an answer is worth waiting for until the deadline (it extends it from ``sent``); renewals overlap
        wait = min(max(0.05, self.election.valid_until - sent), float(self.election.settings.ttl))
        try:
            ttl = await self.etcd.keepalive(str(lease), wait)
        except EtcdError as exc:
            self.last_error = str(exc)
            self._apply(self.election.renew_failed(lease, str(exc), self.now()))
            return
        now = self.now()
        if ttl <= 0:
            self._apply(self.election.expired(lease, now))
        else:
            self._apply(self.election.renewed(lease, ttl, sent, now))

    async def _revoke(self, lease: int) -> None:
        try:
            await self.etcd.revoke(str(lease))
        except EtcdError as exc:
            log.debug("%s: revoke %x: %s (it expires on its own)", self.node, lease, exc)

    # -- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Who holds the VIP and since when, the lease and fencing revision, as this node sees it."""
        now = self.now()
        view = self.election.view(now)
        since = view.pop("holder_since")
        wall = time.time()
        view.update({
            "holder_since": round(wall - (now - since), 3) if isinstance(since, float) else None,
            "holds_vip": self.holds_vip,
            "vip_since": self.vip_since,
            "last_error": self.last_error,
            "decisions": list(self.decisions[-5:]),
        })
        return view

    def _changed(self) -> None:
        e = self.election
        seen = (e.role, e.holder, e.revision, self.holds_vip)
        if seen != self._seen:
            self._seen = seen
            if self.on_change is not None:
                self.on_change(self.status())
