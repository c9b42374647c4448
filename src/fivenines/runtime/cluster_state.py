"""What a cluster node keeps in etcd and reads back from it: thin adapters, the decisions are in
:mod:`fivenines.core.membership`.

* :class:`Presence`: this node's member record under a lease of its own, kept alive every
  ttl/3 and granted afresh (the record put again) when etcd forgot it (this node was cut off
  longer than the ttl). When the node dies, is frozen or cut off, etcd deletes the record
  one ttl later and every other node sees its instances lost.
* :class:`PrefixWatch`: every key under a prefix, kept current: read, then watched from the
  revision read (re-read every ``reread`` seconds in case a watch stalls on a half-open
  connection); the owner is called with the whole current map after each change.
* :class:`OperatorWriter`: operator records written to etcd, retried until written (the
  latest wish per target wins; a command is applied where it was given at once, and
  everywhere else from the watch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from fivenines.core.membership import prefix_end
from fivenines.runtime.lease import Etcd, EtcdError, unb64

log = logging.getLogger("fivenines.cluster")

Entries = dict[str, tuple[bytes, int]]
"""Key (after the prefix) -> (value, mod_revision)."""


class Presence:
    """This node's member record in etcd, attached to a lease only this node renews."""

    def __init__(self, etcd: Etcd, key: str, ttl: int, record: Callable[[], str],
                 clock: Callable[[], float]) -> None:
        self.etcd = etcd
        self.key = key
        self.ttl = ttl
        self.record = record
        self.clock = clock
        self.lease: str | None = None
        self.last_ok = 0.0
        self.published = 0  # times the record was put (1 + re-grants)
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._dirty = False

    def __repr__(self) -> str:
        return f"<Presence {self.key} lease={self.lease or '-'} published={self.published}>"

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"presence {self.key}")

    async def stop(self) -> None:
        """Stop renewing and revoke the lease: the other nodes see this node's instances go at once."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        lease, self.lease = self.lease, None
        if lease is not None:
            try:
                async with asyncio.timeout(2):
                    await self.etcd.revoke(lease)
            except (EtcdError, TimeoutError) as exc:
                log.warning("could not revoke this node's lease (it expires on its own): %s", exc)

    def republish(self) -> None:
        """The record changed: put it again (under the same lease) at the next turn."""
        self._dirty = True
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except EtcdError as exc:
                self.last_error = str(exc)
                log.debug("presence: %s", exc)
                if self.lease is not None and self.clock() - self.last_ok > self.ttl:
                    self.lease = None  # etcd has expired it by now: grant a new one when it answers
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.ttl / 3 if self.lease is not None else min(0.5, self.ttl / 3)):
                    await self._wake.wait()

    async def _step(self) -> None:
        if self.lease is None:
            lease, _ = await self.etcd.grant(self.ttl)
            await self.etcd.put(self.key, self.record(), lease)
            self.lease, self.last_ok, self.last_error = lease, self.clock(), None
            self.published += 1
            self._dirty = False
            log.info("this node's member record is in etcd (lease %x)", int(lease))
            return
        if self._dirty:
            self._dirty = False
            await self.etcd.put(self.key, self.record(), self.lease)
        ttl = await self.etcd.keepalive(self.lease)
        if ttl <= 0:
            log.warning("etcd forgot this node's lease: publishing again")
            self.lease = None
            self._wake.set()
            return
        self.last_ok, self.last_error = self.clock(), None

    def status(self) -> dict[str, Any]:
        return {"key": self.key, "lease": f"{int(self.lease):x}" if self.lease else None, "ttl_s": self.ttl,
                "published": self.published, "last_error": self.last_error}


class PrefixWatch:
    """Every key under ``prefix``, kept current; ``on_change(entries)`` after each change."""

    def __init__(self, etcd: Etcd, prefix: str, on_change: Callable[[Entries], None], *, reread: float,
                 retry: float = 0.5) -> None:
        self.etcd = etcd
        self.prefix = prefix
        self.on_change = on_change
        self.reread = reread
        self.retry = retry
        self.entries: Entries = {}
        self.revision = 0
        self.synced = False  # the last read or watch answered; False while etcd does not
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self.first = asyncio.Event()  # set once the first read is in

    def __repr__(self) -> str:
        return f"<PrefixWatch {self.prefix} {len(self.entries)} keys rev={self.revision}>"

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"watch {self.prefix}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _key(self, kv: dict[str, Any]) -> str:
        return unb64(kv["key"]).decode()[len(self.prefix):]

    async def _run(self) -> None:
        end = prefix_end(self.prefix)
        while True:
            try:
                kvs, rev = await self.etcd.read_prefix(self.prefix, end)
                self.entries = {self._key(kv): (unb64(kv.get("value", "")), int(kv.get("mod_revision", 0)))
                                for kv in kvs}
                self.revision, self.synced, self.last_error = rev, True, None
                self._changed()
                self.first.set()
                async with asyncio.timeout(self.reread):
                    async for resp in self.etcd.watch(self.prefix, rev + 1, end):
                        events = resp.get("events") or []
                        for ev in events:
                            kv = ev.get("kv") or {}
                            if ev.get("type") == "DELETE":
                                self.entries.pop(self._key(kv), None)
                            else:
                                self.entries[self._key(kv)] = (unb64(kv.get("value", "")),
                                                               int(kv.get("mod_revision", 0)))
                        self.revision = int(resp.get("header", {}).get("revision", self.revision))
                        if events:
                            self._changed()
                        if resp.get("canceled"):
                            raise EtcdError(f"watch canceled: {resp.get('cancel_reason', '')}")
            except TimeoutError:
                continue  # read afresh
            except EtcdError as exc:
                self.synced, self.last_error = False, str(exc)
                log.debug("watch %s: %s", self.prefix, exc)
            await asyncio.sleep(self.retry)

    def _changed(self) -> None:
        try:
            self.on_change(self.entries)
        except Exception:  # the owner's bug must not end the watch
            log.exception("applying %s failed", self.prefix)

    def status(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "keys": len(self.entries), "revision": self.revision, "synced": self.synced,
                "last_error": self.last_error}


class OperatorWriter:
    """Operator records to etcd, each retried until written; a newer wish for a target replaces
    one not written yet."""

    def __init__(self, etcd: Etcd, key_of: Callable[[str], str], retry: float = 1.0) -> None:
        self.etcd = etcd
        self.key_of = key_of
        self.retry = retry
        self.pending: dict[str, str] = {}  # target -> record (JSON)
        self.written = 0
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<OperatorWriter pending={sorted(self.pending)} written={self.written}>"

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="operator writer")

    async def stop(self, timeout: float = 2.0) -> None:
        """Write what is pending (bounded), then stop."""
        if self.pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while self.pending and self._task is not None and not self._task.done():
                        self._wake.set()
                        await asyncio.sleep(0.05)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.pending:
            log.error("operator state not written to etcd: %s", ", ".join(sorted(self.pending)))

    def write(self, target: str, record: str) -> None:
        self.pending[target] = record
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            for target, record in list(self.pending.items()):
                try:
                    await self.etcd.put(self.key_of(target), record)
                except EtcdError as exc:
                    self.last_error = str(exc)
                    log.warning("operator state of %s not written to etcd yet: %s", target, exc)
                    continue
                if self.pending.get(target) == record:
                    del self.pending[target]
                self.written += 1
                self.last_error = None
            if self.pending:
                await asyncio.sleep(self.retry)
                self._wake.set()

    def status(self) -> dict[str, Any]:
        return {"pending": sorted(self.pending), "written": self.written, "last_error": self.last_error}
