"""Debian's keepalived, supervised for ``coordination: vrrp``.

fivenines writes the configuration (:func:`fivenines.core.keepalived.render`), starts
``keepalived --dont-fork --vrrp`` with pid files of its own (several may run on one
machine), restarts it if it exits, feeds it this node's health through the track file
and learns its state (MASTER, BACKUP, FAULT, STOP) from the notify FIFO. On stop it
sends SIGTERM: keepalived then removes the address itself. A keepalived killed with
SIGKILL cannot: its address stays on the interface (docs/cluster.md).

Beside keepalived, the node keeps a fence without a gate (:func:`quiet_fence`): a dead
node's address ignores connections rather than refusing them, and whatever fence an
earlier fivenines left on this host (a node killed in etcd mode leaves its gate closed,
which would silence keepalived's address) is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fivenines.core.keepalived import VrrpPeer, parse_notify, render
from fivenines.errors import FivenineError
from fivenines.runtime.supervisor import die_with_parent
from fivenines.runtime.vip import Fence
from fivenines.spec import ClusterSpec

log = logging.getLogger("fivenines.keepalived")


def config_for(cluster: ClusterSpec, node: str, workdir: Path) -> str:
    vrrp = cluster.vrrp
    peers = [VrrpPeer(n.name, n.address, cluster.priority(n.name)) for n in cluster.nodes]
    return render(node=node, peers=peers, vip=cluster.vip, interface=cluster.interface,
                  advert_int=vrrp.advert_int if vrrp else 1.0,
                  virtual_router_id=vrrp.virtual_router_id if vrrp else 51,
                  preempt=vrrp.preempt if vrrp else False,
                  track_file=str(workdir / "health"), notify_fifo=str(workdir / "notify"))


def quiet_fence(cluster: ClusterSpec) -> Fence | None:
    """Install the VIP's fence without a gate (replacing any an earlier process left); None, with a
    warning, when nftables cannot be used here (connections to a dead node's VIP are then refused)."""
    fence = Fence(str(ipaddress.IPv4Interface(cluster.vip).ip), gate=False)
    try:
        fence.install()
    except FivenineError as exc:
        log.warning("connections to the VIP with no listener will be refused, and a fence left by an earlier "
                    "fivenines stays: %s", exc)
        return None
    return fence


def remove_quiet_fence(fence: Fence | None) -> None:
    if fence is not None:
        with contextlib.suppress(FivenineError):
            fence.remove()


class Keepalived:
    """One keepalived process for this node, its config in ``workdir``."""

    def __init__(self, config: str, workdir: Path, *, binary: str | None = None,
                 on_state: Callable[[str], None] | None = None, restart_delay: float = 1.0) -> None:
        self.config = config
        self.workdir = workdir
        self.binary = binary or shutil.which("keepalived") or "/usr/sbin/keepalived"
        self.on_state = on_state
        self.restart_delay = restart_delay
        self.state = "unknown"
        self.state_since: float | None = None
        self.healthy = True
        self.restarts = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._fifo_fd: int | None = None

    def __repr__(self) -> str:
        return f"<Keepalived {self.state} pid={self.proc.pid if self.proc else '-'} restarts={self.restarts}>"

    @property
    def conf_path(self) -> Path:
        return self.workdir / "keepalived.conf"

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config)
        self.set_healthy(self.healthy)
        fifo = self.workdir / "notify"
        if not fifo.exists():
            os.mkfifo(fifo, 0o600)
        # read and write: the FIFO never reports end of file when keepalived closes it
        self._fifo_fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        loop = asyncio.get_running_loop()
        loop.add_reader(self._fifo_fd, self._on_fifo)
        self._buf = b""
        await self._spawn()
        self._tasks.append(loop.create_task(self._supervise(), name="keepalived supervisor"))

    async def _spawn(self) -> None:
        log_file = (self.workdir / "keepalived.log").open("ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                self.binary, "--dont-fork", "--log-console", "--log-detail", "--vrrp", "--no-syslog",
                "-f", str(self.conf_path), "-p", str(self.workdir / "keepalived.pid"),
                "-r", str(self.workdir / "vrrp.pid"),
                stdout=log_file, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
                preexec_fn=die_with_parent(os.getpid()))
        finally:
            log_file.close()

    async def _supervise(self) -> None:
        while True:
            assert self.proc is not None
            rc = await self.proc.wait()
            if self._stopping:
                return
            log.warning("keepalived exited %s; restarting in %gs", rc, self.restart_delay)
            self._set_state("STOP")
            await asyncio.sleep(self.restart_delay)
            self.restarts += 1
            await self._spawn()

    def _on_fifo(self) -> None:
        assert self._fifo_fd is not None
        try:
            data = os.read(self._fifo_fd, 4096)
        except BlockingIOError:
            return
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            parsed = parse_notify(line.decode(errors="replace"))
            if parsed is not None and parsed[0] == "INSTANCE":
                self._set_state(parsed[2])

    def _set_state(self, state: str) -> None:
        if state != self.state:
            log.info("keepalived: %s -> %s", self.state, state)
            self.state, self.state_since = state, time.time()
            if self.on_state is not None:
                self.on_state(state)

    def set_healthy(self, ok: bool) -> None:
        """Feed this node's health to keepalived: an unhealthy node goes to FAULT and gives the VIP up."""
        self.healthy = ok
        (self.workdir / "health").write_text("0\n" if ok else "1\n")

    async def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)  # keepalived removes its addresses on the way out
            try:
                async with asyncio.timeout(timeout):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._fifo_fd is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._fifo_fd)
            os.close(self._fifo_fd)
            self._fifo_fd = None

    def status(self) -> dict[str, Any]:
        return {"mode": "vrrp", "state": self.state, "state_since": self.state_since, "holds_vip": self.state == "MASTER",
                "healthy": self.healthy, "restarts": self.restarts, "pid": self.proc.pid if self.proc else None}
