"""Debian's keepalived, supervised for ``coordination: vrrp``.

fivenines writes the configuration (:func:`fivenines.core.keepalived.render`), starts
``keepalived --dont-fork --vrrp`` with pid files of its own (several may run on one
machine), restarts it if it exits, feeds it this node's health through the track file
and learns its state (MASTER, BACKUP, FAULT, STOP) from the notify FIFO. On stop it
sends SIGTERM: keepalived then removes the address itself. A keepalived killed with
SIGKILL cannot: its address stays on the interface, and a frozen one keeps answering
for it. So the node also keeps a fence (:class:`MasterFence`, the nftables fence of
:mod:`fivenines.runtime.vip`), open only while keepalived is MASTER and runs, renewed
by a thread of fivenines for :func:`~fivenines.core.keepalived.fence_timeout` at a time:
when the node dies or freezes, the kernel closes it before the other node takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fivenines.core.keepalived import (
    VrrpPeer,
    fence_may_open,
    fence_refresh,
    fence_timeout,
    parse_notify,
    render,
)
from fivenines.errors import FivenineError
from fivenines.runtime.supervisor import die_with_parent
from fivenines.runtime.vip import Fence, announce
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


def node_fence_timeout(cluster: ClusterSpec, node: str) -> float:
    """How long one opening of ``node``'s fence lasts: before the *other* node's master-down timer ends."""
    vrrp = cluster.vrrp
    peers = [n.name for n in cluster.nodes if n.name != node]
    prio = min((cluster.priority(p) for p in peers), default=cluster.priority(node))
    return fence_timeout(vrrp.advert_int if vrrp else 1.0, prio)


def process_runs(pid: int | None) -> bool:
    """``pid`` exists and is neither stopped (SIGSTOP, traced) nor a zombie."""
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    return state not in ("T", "t", "Z", "X", "x")


def read_pid(path: Path | None) -> int | None:
    try:
        return int(path.read_text().split()[0]) if path is not None else None
    except (OSError, ValueError, IndexError):
        return None


class MasterFence:
    """The fence of a vrrp node: open while keepalived says MASTER and its processes run (the
    parent fivenines started, and the VRRP child that sends the adverts, found through
    ``child_pid_file``: frozen or killed alone, it stops advertising while the parent runs on).

    A thread (not the event loop: a busy loop must not close it) renews it every
    :func:`~fivenines.core.keepalived.fence_refresh` for ``timeout`` seconds, and acts at once
    when :meth:`update` reports a change. Opening a closed fence sends a gratuitous ARP
    (keepalived's own, sent as it became MASTER, may have met the fence still closed). When
    fivenines is killed or frozen, the thread stops with it and the kernel closes the fence
    ``timeout`` after the last renewal; keepalived (which dies with fivenines) keeps its address,
    silent.
    """

    def __init__(self, address: str, interface: str, timeout: float, *, fence: Fence | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 announce: Callable[[str, str], None] = announce,
                 runs: Callable[[int | None], bool] = process_runs, child_pid_file: Path | None = None) -> None:
        self.address, self.interface = address, interface
        self.child_pid_file = child_pid_file
        self.fence = fence or Fence(address)
        self.timeout = timeout
        self.every = fence_refresh(timeout)
        self.clock = clock
        self._announce = announce
        self._runs = runs
        self.state = "unknown"
        self.pid: int | None = None
        self.openings = 0  # times the fence went from closed to open
        self.lapses = 0  # renewals that found the fence already closed by the kernel (this process was held up)
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<MasterFence {self.address} {self.state} {self.fence!r} every={self.every:.3f}s>"

    def install(self) -> None:
        """Put the fence in place, closed (replacing what a previous process left); raises ProviderError."""
        self.fence.install()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"vrrp fence {self.address}", daemon=True)
        self._thread.start()

    def update(self, state: str, pid: int | None) -> None:
        """keepalived's state or process changed: act on it now."""
        self.state, self.pid = state, pid
        self._wake.set()

    def is_open(self) -> bool:
        until = self.fence.open_until
        return until is not None and self.clock() < until

    def step(self) -> None:
        """Open (renew) or close the fence as keepalived's state and process say; one decision."""
        with self._lock:
            try:
                running = self._runs(self.pid) and (self.child_pid_file is None
                                                    or self._runs(read_pid(self.child_pid_file)))
                if fence_may_open(self.state, running):
                    was = self.fence.open_until
                    now = self.clock()
                    if was is not None and now >= was:
                        self.lapses += 1
                    if self.fence.open_until_time(now + self.timeout, self.clock) > 0 and (was is None or now >= was):
                        self.openings += 1
                        try:
                            self._announce(self.interface, self.address)
                        except OSError as exc:
                            log.warning("gratuitous ARP for %s failed: %s", self.address, exc)
                elif self.fence.open_until is not None:
                    self.fence.close()
                self.last_error = None
            except FivenineError as exc:
                if self.last_error != str(exc):
                    log.error("the VIP fence: %s", exc)
                self.last_error = str(exc)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.step()
            self._wake.wait(self.every)
            self._wake.clear()

    def stop(self, *, remove: bool) -> None:
        """Stop renewing and close the fence; ``remove``: delete its tables too (the address is gone)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(2)
        with self._lock:
            try:
                self.fence.close()
                if remove:
                    self.fence.remove()
            except FivenineError as exc:
                log.warning("closing the VIP fence: %s", exc)

    def status(self) -> dict[str, Any]:
        return {"open": self.is_open(), "timeout_s": round(self.timeout, 4), "refresh_s": round(self.every, 4),
                "openings": self.openings, "lapses": self.lapses, "error": self.last_error}


class Keepalived:
    """One keepalived process for this node, its config in ``workdir``; with ``fence``, the node's
    :class:`MasterFence` follows its state and process."""

    def __init__(self, config: str, workdir: Path, *, binary: str | None = None,
                 on_state: Callable[[str], None] | None = None, restart_delay: float = 1.0,
                 fence: MasterFence | None = None) -> None:
        self.config = config
        self.fence = fence
        if fence is not None and fence.child_pid_file is None:
            fence.child_pid_file = workdir / "vrrp.pid"
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
        if self.fence is not None:
            self.fence.install()  # closed, before keepalived can add the address
            self.fence.start()
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
        if self.fence is not None:
            self.fence.update(self.state, self.proc.pid)

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
            if self.fence is not None:
                self.fence.update(state, self.proc.pid if self.proc and self.proc.returncode is None else None)
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
        clean = True
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)  # keepalived removes its addresses on the way out
            try:
                async with asyncio.timeout(timeout):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
                clean = False
        if self.fence is not None:  # a keepalived that did not exit cleanly may have left the address: keep it silent
            self.fence.stop(remove=clean)
        if self._fifo_fd is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._fifo_fd)
            os.close(self._fifo_fd)
            self._fifo_fd = None

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": "vrrp", "state": self.state, "state_since": self.state_since,
               "holds_vip": self.state == "MASTER" and (self.fence is None or self.fence.is_open()),
               "healthy": self.healthy, "restarts": self.restarts, "pid": self.proc.pid if self.proc else None}
        if self.fence is not None:
            out["fence"] = self.fence.status()
        return out
