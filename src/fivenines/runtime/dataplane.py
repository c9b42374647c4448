"""The runtime's side of the data plane: its listeners, in this process or in worker processes.

With ``workers: 1`` (the default) the listeners serve in this process; with ``workers: N``
a :class:`~fivenines.proxy.workers.WorkerPool` runs them in N processes and this process
keeps a :class:`~fivenines.proxy.workers.RemoteListener` view of each. Either way the rest
of the runtime asks the same things: cut or rescue what is on a target, drain, stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from fivenines.proxy.backend import Backend
from fivenines.proxy.base import ListenerView, ProxyListener
from fivenines.proxy.listener import AccessLogSink, Listener, ProxySettings
from fivenines.proxy.workers import WorkerPool, make_listener
from fivenines.runtime.context import RuntimeContext
from fivenines.spec import ListenerSpec

log = logging.getLogger("fivenines")


class DataPlane:
    def __init__(self, ctx: RuntimeContext, settings: ProxySettings | None = None,
                 access_log: AccessLogSink | None = None) -> None:
        self.ctx = ctx
        self.settings = settings  # None: each listener's own, from its spec
        self.access_log = access_log
        self.served: list[tuple[ListenerSpec, ProxyListener]] = []  # in this process (workers: 1)
        self.workers: WorkerPool | None = None

    def __repr__(self) -> str:
        where = f"{self.ctx.spec.workers} workers" if self.workers is not None else "in process"
        return f"<DataPlane {len(self.listeners)} listeners {where}>"

    @property
    def listeners(self) -> Sequence[tuple[ListenerSpec, ListenerView]]:
        """Every listener with its spec, in spec order (status and metrics read these)."""
        return self.workers.listeners if self.workers is not None else self.served

    async def start(self, on_worker_ejection: Callable[[dict[str, Any]], None]) -> None:
        """Listeners in this process (``workers: 1``), or N worker processes sharing the ports."""
        groups = {name: g.backends for name, g in self.ctx.groups.items()}
        spec = self.ctx.spec
        if spec.workers > 1:
            self.workers = WorkerPool(spec, groups, spec.workers, self.ctx.state_dir / "logs", self.settings)
            self.workers.on_eject = on_worker_ejection
            await self.workers.start()
            return
        for ls in spec.listeners:
            listener = self.make_listener(ls)
            await listener.start(ls.host, ls.port)
            self.served.append((ls, listener))

    def make_listener(self, ls: ListenerSpec) -> ProxyListener:
        """A listener (not yet bound) for ``ls``: its rules compiled over the groups running now."""
        groups = {name: g.backends for name, g in self.ctx.groups.items()}
        listener = make_listener(ls, groups, self.settings)
        if self.access_log is not None and isinstance(listener, Listener):  # HTTP exchanges are logged
            listener.access_log = self.access_log
        return listener

    def reroute(self, listener: ProxyListener, ls: ListenerSpec) -> None:
        """New requests on ``listener`` follow ``ls`` (default group, rules, timeouts, limits) from
        now on; requests in flight finish where they are."""
        fresh = self.make_listener(ls)
        old_settings = listener.settings
        listener.group_for = fresh.group_for
        listener.settings = fresh.settings
        # new limits; the connections open now stay counted
        listener.admission.max_total = fresh.admission.max_total
        listener.admission.max_per_ip = fresh.admission.max_per_ip
        if isinstance(listener, Listener) and isinstance(fresh, Listener):  # HTTP: rules and the rate limit too
            listener.router = fresh.router
            listener.groups = fresh.groups
            if old_settings.rate_limit != fresh.settings.rate_limit:
                listener.rate = fresh.rate

    def cut(self, group: str, backend: Backend) -> None:
        """Abort the client exchanges on ``backend`` of ``group``, in every listener (and worker)."""
        if self.workers is not None:
            self.workers.cut(group, backend.id)
        for _, lst in self.served:
            lst.cut(backend)

    def rescue(self, backend: Backend) -> int:
        """Retry elsewhere what waits for ``backend`` (workers rescue on their own, as they eject)."""
        return sum(lst.rescue(backend) for _, lst in self.served)

    async def drain(self, timeout: float) -> int:
        """Stop accepting; in-flight exchanges finish within ``timeout``. Returns how many were cut."""
        if self.workers is not None:
            return await self.workers.stop(timeout)
        results = await asyncio.gather(*(lst.drain(timeout) for _, lst in self.served))
        return sum(results)

    async def abandon(self) -> None:
        """Stop at once (start failed): workers stop, listeners stop accepting."""
        if self.workers is not None:
            await self.workers.stop(0.0)
        for _, lst in self.served:
            lst.stop_accepting()
