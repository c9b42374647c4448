"""The runtime's side of the data plane: its listeners, in this process or in worker processes.

With ``workers: 1`` (the default) the listeners serve in this process; with ``workers: N``
a :class:`~fivenines.proxy.workers.WorkerPool` runs them in N processes and this process
keeps a :class:`~fivenines.proxy.workers.RemoteListener` view of each. Either way the rest
of the runtime asks the same things: cut or rescue what is on a target, drain, stop.

An https/tls listener serves with a :class:`~fivenines.proxy.tls_serve.TlsServing` (its
contexts, handshake cap and counters) made here; with workers each worker makes its own from
the same files and ticket secret, and this process keeps one per listener too, not serving: it
checks the files on a reload before any worker is told, and is what status reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fivenines.certs import CertificateError
from fivenines.proxy.backend import Backend
from fivenines.proxy.base import ListenerView, ProxyListener
from fivenines.proxy.listener import AccessLogSink, Listener, ProxySettings
from fivenines.proxy.tcp import TcpListener
from fivenines.proxy.tls import ticket_secret
from fivenines.proxy.tls_serve import TlsReload, TlsServing
from fivenines.proxy.workers import WorkerPool, make_listener
from fivenines.runtime.context import RuntimeContext
from fivenines.spec import ListenerSpec, Spec

log = logging.getLogger("fivenines")


@dataclass(frozen=True)
class TlsPlan:
    """One kept listener's TLS reload: built, to be switched to by :meth:`DataPlane.apply_tls`."""

    serving: TlsServing  # this process's (with workers: the view the workers follow)
    spec: ListenerSpec
    reload: TlsReload
    secret: bytes | None


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
            tls = {i: self.tls_serving(ls) for i, ls in enumerate(spec.listeners) if ls.tls}
            self.workers = WorkerPool(spec, groups, spec.workers, self.ctx.state_dir / "logs", self.settings,
                                      base_dir=self.ctx.base_dir, state_dir=self.ctx.state_dir, tls=tls)
            self.workers.on_eject = on_worker_ejection
            await self.workers.start()
            return
        for ls in spec.listeners:
            listener = self.make_listener(ls)
            await listener.start(ls.host, ls.port)
            self.served.append((ls, listener))

    def make_listener(self, ls: ListenerSpec, tls: TlsServing | None = None) -> ProxyListener:
        """A listener (not yet bound) for ``ls``: its rules compiled over the groups running now
        (an https/tls one with ``tls``, else with its TLS made now)."""
        groups = {name: g.backends for name, g in self.ctx.groups.items()}
        if ls.tls and tls is None:
            tls = self.tls_serving(ls)
        listener = make_listener(ls, groups, self.settings, tls=tls)
        if self.access_log is not None and isinstance(listener, Listener):  # HTTP exchanges are logged
            listener.access_log = self.access_log
        return listener

    # ------------------------------------------------------------------ TLS

    def ticket_secret(self, ls: ListenerSpec) -> bytes | None:
        """The secret ``ls``'s session ticket keys derive from (None: no tickets of ours)."""
        if ls.passthrough or not ls.session_tickets.enabled:
            return None
        return ticket_secret(ls, self.ctx.base_dir, self.ctx.state_dir)

    def tls_serving(self, ls: ListenerSpec) -> TlsServing:
        """The TLS of an https/tls listener, every file read (raises CertificateError naming one)."""
        return TlsServing(ls, self.ctx.base_dir, name=f"{ls.host}:{ls.port}", ticket_secret=self.ticket_secret(ls))

    def tls_of(self, index: int) -> TlsServing | None:
        """The TLS of listener ``index`` (in this process, or this process's view of the workers')."""
        if self.workers is not None:
            return self.workers.tls.get(index)
        if index < len(self.served):
            tls = getattr(self.served[index][1], "tls", None)
            return tls if isinstance(tls, TlsServing) else None
        return None

    def prepare_tls(self, new: Spec, kept: set[int]) -> tuple[dict[int, TlsPlan], dict[int, TlsServing], list[str]]:
        """Step 1 of a reload, for TLS: every certificate file of ``new`` read again and every
        context built, nothing switched. ``kept``: indexes of listeners that stay (not rebound);
        their TLS is reloaded in place; any other https/tls listener gets a new
        :class:`TlsServing`. Returns (reloads, new ones, errors naming listener, field and file)."""
        plans: dict[int, TlsPlan] = {}
        fresh: dict[int, TlsServing] = {}
        errors: list[str] = []
        for i, ls in enumerate(new.listeners):
            if not ls.tls:
                continue
            try:
                current = self.tls_of(i) if i in kept else None
                if current is None:
                    fresh[i] = self.tls_serving(ls)
                else:
                    secret = self.ticket_secret(ls)
                    plans[i] = TlsPlan(current, ls, current.prepare(ls, self.ctx.base_dir, secret), secret)
            except CertificateError as exc:
                errors.append(f"listeners.{i}: {exc.file}: {exc.message}; the running certificates stay")
        return plans, fresh, errors

    def apply_tls(self, plans: dict[int, TlsPlan]) -> list[str]:
        """Step 3 of a reload, for TLS: switch every listener (and every worker) to what
        :meth:`prepare_tls` built. Returns what changed."""
        changes: list[str] = []
        for i, plan in sorted(plans.items()):
            if self.workers is not None:
                self.workers.reload_tls(i, plan.spec)
            changes += plan.serving.apply(plan.spec, plan.reload, plan.secret)
        return changes

    def reroute(self, listener: ProxyListener, ls: ListenerSpec) -> None:
        """New requests on ``listener`` follow ``ls`` (default group, rules, timeouts, limits) from
        now on; requests in flight finish where they are."""
        fresh = self.make_listener(ls, getattr(listener, "tls", None))  # (its TLS is reloaded on its own)
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
        elif isinstance(listener, TcpListener) and isinstance(fresh, TcpListener):  # tls: rules by sni
            listener.router = fresh.router
            listener.groups = fresh.groups

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
