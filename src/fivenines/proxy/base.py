"""What the rest of fivenines may do with a listener, whatever its kind: two structural protocols.

The kinds: the HTTP :class:`~fivenines.proxy.listener.Listener`, the
:class:`~fivenines.proxy.tcp.TcpListener` (``protocol: tcp``, and the read listener of a
replicated store), and the :class:`~fivenines.proxy.workers.RemoteListener` (the main
process's view of a listener that ``workers: N`` processes serve). They conform by shape
(:class:`typing.Protocol`); none inherits from these.

* :class:`ListenerView`: what status and metrics read of any of the three;
* :class:`ProxyListener`: a listener serving in this process (HTTP or TCP): started,
  rerouted, drained, and told to cut or rescue the exchanges on a target.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sized
from typing import Any, Protocol

from fivenines.core.limits import Admission
from fivenines.proxy.backend import Backend, BackendGroup
from fivenines.proxy.listener import Counters, ProxySettings


class ListenerView(Protocol):
    """Any listener, as status and metrics read it."""

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (after start: the port the kernel gave for port 0)."""
        ...

    @property
    def counters(self) -> Counters: ...

    @property
    def clients(self) -> Sized:
        """Its open client connections (only their number is read)."""
        ...


class ProxyListener(ListenerView, Protocol):
    """A listener serving in this process."""

    settings: ProxySettings
    group_for: Callable[[], BackendGroup | None]
    admission: Admission
    server: asyncio.Server | None
    no_clients: asyncio.Event  # set whenever its last client connection closes

    async def start(self, host: str, port: int, *, reuse_port: bool = False, backlog: int = 2048,
                    sock: Any = None) -> None:
        """Listen on ``host:port``, or on ``sock`` (already bound; e.g. handed over on a reload)."""
        ...

    def stop_accepting(self) -> None: ...

    async def drain(self, timeout: float) -> int:
        """Stop accepting, let what is in flight finish within ``timeout``; returns how many were cut."""
        ...

    def in_flight(self) -> int: ...

    def cut(self, backend: Backend) -> int:
        """Abort every client exchange now on ``backend`` (a drained target's deadline). Returns how many."""
        ...

    def rescue(self, backend: Backend) -> int:
        """Retry elsewhere what waits for ``backend``'s answer (it was ejected as hung). Returns how many."""
        ...
