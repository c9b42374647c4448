"""Fault injectors, and the guard that keeps them on processes the fivenines under test started.

Safety rules, checked before every signal:

* a pid comes from fivenines' ``/status`` (a target's ``pid``, a worker's ``pid``);
* the process must descend from the fivenines process chaos itself started
  (its parent chain in ``/proc`` reaches that pid);
* the signal goes through a pidfd opened *before* the process is checked again
  (same start time, still ours): if the pid was reused meanwhile, the pidfd
  refers to the dead process and the signal fails instead of hitting a stranger;
* a fault that lasts (``hang``, ``error``, ``slow``) registers its undo at once;
  :meth:`Injector.restore_all` runs every undo still pending (at the end of the
  run, on Ctrl-C, on any crash).

``reset`` cuts every established TCP connection of the target's port by taking a
duplicate of each socket from the target process (``pidfd_getfd``, Linux 5.6+;
the caller must be allowed to ptrace it, which holds for a descendant) and
disconnecting it (``connect(AF_UNSPEC)``): the kernel sends a RST to the peer,
exactly what a crashed network path or a reset from a middlebox looks like.
fivenines' admin API has no endpoint for cutting a target's connections, so chaos
does it from outside, on the target's side.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fivenines.chaos import ChaosError, UnsafeTarget
from fivenines.chaos.schedule import FaultKind
from fivenines.cli.admin_client import AdminError, aget

_SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture (unified syscall table)


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """A process as ``/proc/PID/stat`` shows it; ``start`` (clock ticks after boot) tells reused pids apart."""

    pid: int
    ppid: int
    pgrp: int
    state: str
    start: int

    @property
    def stopped(self) -> bool:
        return self.state in ("T", "t")


def parse_stat(text: str) -> ProcInfo:
    """Parse a ``/proc/PID/stat`` line (the command name may hold spaces and parentheses).

    >>> parse_stat("4242 (python -m (x)) T 4000 4242 4242 0 -1 4194560 0 0 0 0 1 2 0 0 20 0 1 0 987654 0")
    ProcInfo(pid=4242, ppid=4000, pgrp=4242, state='T', start=987654)
    """
    pid_part, _, rest = text.partition(" (")
    fields = rest.rpartition(") ")[2].split()
    # fields[0] is field 3 (state); starttime is field 22
    return ProcInfo(int(pid_part), int(fields[1]), int(fields[2]), fields[0], int(fields[19]))


def read_proc(pid: int, proc: Path = Path("/proc")) -> ProcInfo | None:
    try:
        return parse_stat((proc / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


class Guard:
    """Answers one question: did the fivenines process ``root`` (our child) start this process?"""

    def __init__(self, root: int, proc: Path = Path("/proc")) -> None:
        self.root = root
        self.proc = proc

    def __repr__(self) -> str:
        return f"<Guard root={self.root}>"

    def ours(self, info: ProcInfo) -> bool:
        seen = 0
        ppid = info.ppid
        while ppid > 1 and seen < 16:
            if ppid == self.root:
                return True
            parent = read_proc(ppid, self.proc)
            if parent is None:
                return False
            ppid = parent.ppid
            seen += 1
        return False

    def check(self, pid: object, what: str) -> ProcInfo:
        """The process behind ``pid``, if fivenines started it; :class:`UnsafeTarget` otherwise."""
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
            raise UnsafeTarget(f"{what}: no usable pid in fivenines' status ({pid!r})")
        info = read_proc(pid, self.proc)
        if info is None:
            raise UnsafeTarget(f"{what}: pid {pid} is gone")
        if not self.ours(info):
            raise UnsafeTarget(f"{what}: pid {pid} was not started by fivenines (pid {self.root}); left alone")
        return info

    def members(self, leader: ProcInfo) -> list[ProcInfo]:
        """The leader and, when it leads its own process group (fivenines starts each instance in its
        own session), every other process of that group that is also ours."""
        out = [leader]
        if leader.pgrp != leader.pid:
            return out
        for entry in self.proc.iterdir():
            if not entry.name.isdigit() or int(entry.name) == leader.pid:
                continue
            info = read_proc(int(entry.name), self.proc)
            if info is not None and info.pgrp == leader.pid and self.ours(info):
                out.append(info)
        return out

    def signal(self, procs: Sequence[ProcInfo], sig: int) -> int:
        """Send ``sig`` to each process still the same one and still ours; how many got it."""
        sent = 0
        for p in procs:
            try:
                fd = os.pidfd_open(p.pid)
            except OSError:
                continue
            try:
                now = read_proc(p.pid, self.proc)
                if now is None or now.start != p.start or not self.ours(now):
                    continue
                signal.pidfd_send_signal(fd, sig)
                sent += 1
            except OSError:
                continue
            finally:
                os.close(fd)
        return sent


# --------------------------------------------------------------------------- reset


def established_inodes(pid: int, port: int, proc: Path = Path("/proc")) -> set[str]:
    """Socket inodes of established TCP connections on local ``port`` in ``pid``'s network namespace."""
    inodes: set[str] = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / str(pid) / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == "01" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f[9])
    return inodes


def cut_connections(guard: Guard, info: ProcInfo, port: int) -> int:
    """Reset every established TCP connection of ``info``'s process on local ``port``. Returns how many."""
    inodes = established_inodes(info.pid, port, guard.proc)
    if not inodes:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    fd_dir = guard.proc / str(info.pid) / "fd"
    pidfd = os.pidfd_open(info.pid)
    cut = 0
    try:
        now = read_proc(info.pid, guard.proc)
        if now is None or now.start != info.start or not guard.ours(now):
            raise UnsafeTarget(f"pid {info.pid} changed before its connections could be cut")
        for entry in fd_dir.iterdir():
            try:
                link = os.readlink(entry)
            except OSError:
                continue
            if not (link.startswith("socket:[") and link[8:-1] in inodes):
                continue
            dup = libc.syscall(_SYS_PIDFD_GETFD, pidfd, int(entry.name), 0)
            if dup < 0:
                err = ctypes.get_errno()
                raise ChaosError(f"cannot take a socket of pid {info.pid} (pidfd_getfd: {os.strerror(err)})")
            try:
                unspec = (ctypes.c_ubyte * 16)()  # struct sockaddr with sa_family = AF_UNSPEC
                if libc.connect(dup, unspec, 16) == 0:
                    cut += 1
            finally:
                os.close(dup)
    finally:
        os.close(pidfd)
    return cut


# --------------------------------------------------------------------------- injectors


Undo = Callable[[], Awaitable[str]]


@dataclass
class Applied:
    """A fault carried out: what was hit, what was done, and how to undo it (lasting faults)."""

    pid: int | None
    detail: str
    undo: Undo | None = None
    procs: list[ProcInfo] = field(default_factory=list)


class Injector:
    """Carries out faults on targets and workers of the fivenines guarded by ``guard``."""

    def __init__(self, guard: Guard, *, slow_ms: int = 1000, control_timeout: float = 2.0) -> None:
        self.guard = guard
        self.slow_ms = slow_ms
        self.control_timeout = control_timeout
        self.pending: dict[int, Undo] = {}  # fault id -> undo, until done
        self.stopped: dict[int, list[ProcInfo]] = {}  # fault id -> processes SIGSTOPped

    def __repr__(self) -> str:
        return f"<Injector {self.guard!r} pending undo={sorted(self.pending)}>"

    async def inject(self, fault_id: int, kind: FaultKind, what: str, pid: object, address: str | None) -> Applied:
        """Carry out one fault on target ``what`` (pid and ``host:port`` from status). Raises
        :class:`ChaosError` (and changes nothing) when it cannot."""
        info = self.guard.check(pid, what)
        if kind is FaultKind.KILL or kind is FaultKind.LB:
            procs = self.guard.members(info)
            n = self.guard.signal(procs, signal.SIGKILL)
            if not n:
                raise ChaosError(f"{what}: pid {info.pid} could not be signalled")
            return Applied(info.pid, f"SIGKILL pid {info.pid}" + (f" (+{n - 1} in its group)" if n > 1 else ""))
        if kind is FaultKind.HANG:
            procs = self.guard.members(info)
            self.stopped[fault_id] = procs
            self.pending[fault_id] = lambda: self._cont(fault_id)
            n = self.guard.signal(procs, signal.SIGSTOP)
            if not n:
                await self.undo(fault_id)
                raise ChaosError(f"{what}: pid {info.pid} could not be signalled")
            return Applied(info.pid, f"SIGSTOP pid {info.pid}", self.pending[fault_id], procs)
        if address is None:
            raise ChaosError(f"{what}: no address in fivenines' status")
        if kind is FaultKind.RESET:
            port = int(address.rsplit(":", 1)[1])
            try:
                n = cut_connections(self.guard, info, port)
            except OSError as exc:
                raise ChaosError(f"{what}: cannot cut connections: {exc.strerror or exc}") from exc
            return Applied(info.pid, f"reset {n} connection(s) on port {port}")
        path = "/_fail" if kind is FaultKind.ERROR else f"/_slow?ms={self.slow_ms}"
        self.pending[fault_id] = lambda: self._recover(fault_id, what, address)
        try:
            status, _ = await aget(f"http://{address}{path}", self.control_timeout)
        except AdminError as exc:
            await self.undo(fault_id)
            raise ChaosError(f"{what}: {exc}") from exc
        if status != 200:
            await self.undo(fault_id)
            raise ChaosError(f"{what}: GET {path} answered {status}: the {kind.value} fault needs the demo "
                             f"backend's control paths (python -m fivenines.demo)")
        return Applied(info.pid, f"GET {path}", self.pending[fault_id])

    async def undo(self, fault_id: int) -> str | None:
        """Undo one lasting fault now (idempotent); what was done, or None if nothing was pending."""
        fn = self.pending.pop(fault_id, None)
        return None if fn is None else await fn()

    async def restore_all(self) -> list[str]:
        """Undo every lasting fault still pending: SIGCONT first (a stopped instance answers no
        ``/_recover``), then the control calls."""
        done = []
        for fid in sorted(self.pending, key=lambda f: (f not in self.stopped, f)):
            try:
                msg = await self.undo(fid)
            except Exception as exc:  # keep restoring the others
                msg = f"fault {fid}: restore failed: {exc}"
            if msg:
                done.append(msg)
        return done

    async def _cont(self, fault_id: int) -> str:
        procs = self.stopped.pop(fault_id, [])
        n = self.guard.signal(procs, signal.SIGCONT)
        return f"SIGCONT {n} process(es)" if n else "nothing to SIGCONT (gone)"

    async def _recover(self, fault_id: int, what: str, address: str) -> str:
        last: Exception | None = None
        for _ in range(3):
            try:
                status, _ = await aget(f"http://{address}/_recover", self.control_timeout)
                return f"GET /_recover on {what}: {status}"
            except AdminError as exc:  # e.g. a target restarted in between: try again briefly
                last = exc
        return f"GET /_recover on {what} failed: {last}"

    def stopped_left(self, pids: Sequence[int]) -> list[int]:
        """Which of ``pids`` are stopped (state T) right now."""
        out = []
        for pid in pids:
            info = read_proc(pid, self.guard.proc)
            if info is not None and info.stopped:
                out.append(pid)
        return out
