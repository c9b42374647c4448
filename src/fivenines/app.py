"""``fivenines up``: the entry point that wires the parts together and runs until a signal.

The runtime (:class:`~fivenines.runtime.controller.Controller`) does not know the admin API;
this is where both meet: the admin server and its metrics are built over the runtime's
interface (:class:`~fivenines.runtime.interface.Runtime`) and handed to it as a front end
to start with it and stop last. SIGINT/SIGTERM stop cleanly; SIGHUP reloads the spec.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from fivenines.admin.metrics import Metrics
from fivenines.admin.server import AdminServer
from fivenines.runtime.controller import Controller
from fivenines.runtime.logs import AccessLog
from fivenines.runtime.paths import RUN_FILE, write_ready_file
from fivenines.spec import Spec

__all__ = ["Controller", "run"]

log = logging.getLogger("fivenines")


async def run(spec: Spec, spec_path: str | Path | None, *, ready_file: str | None = None,
              announce: Callable[[Controller], None] | None = None, access_log: str | None = None,
              node: str | None = None) -> int:
    """Start ``spec``, serve until SIGINT/SIGTERM, stop cleanly; SIGHUP reloads. Returns the exit status.

    ``node``: run as that node of the spec's ``cluster:`` (``spec`` as
    :func:`fivenines.core.membership.node_spec` gives it)."""
    sink = None
    if access_log is not None:
        sink = AccessLog(access_log)
        sink.open()
    ctl = Controller(spec, spec_path, access_log=sink, node=node)
    admin = AdminServer(ctl, Metrics(ctl))
    await ctl.start(admin)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, ctl.request_reload, "SIGHUP")
    run_file = ctl.state_dir / RUN_FILE
    write_ready_file(str(run_file), ctl.ready_info())
    if ready_file:
        write_ready_file(ready_file, ctl.ready_info())
    if announce:
        announce(ctl)
    await stop.wait()
    log.info("stopping: draining in-flight requests, then stopping instances")
    await ctl.stop()
    if sink is not None:
        sink.close()
    with contextlib.suppress(OSError):
        run_file.unlink()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(sig)
    return 0
