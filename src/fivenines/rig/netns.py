"""A small world of hosts on one machine: network namespaces on a bridge, real faults, guaranteed cleanup.

Tests, benches and ``make cluster-demo`` share this rig. The world of one run::

    PREFIX-sw   the switch: a namespace holding bridge br0 and one port p-HOST per host
    PREFIX-a    a host: eth0 (the other end of p-a) with 10.199.0.11/24, lo up
    PREFIX-b    ...10.199.0.12/24 ...

``PREFIX`` is ``fn9`` and six random hex digits, new for every run, so parallel runs
never collide; their address ranges may be the same, because each run has a bridge of
its own in a namespace of its own. Nothing is created in the machine's own network
namespace, so deleting a run's namespaces deletes every link it made.

Processes run inside a host with :meth:`Rig.popen` (``ip netns exec``); every process
whose network namespace is a host's belongs to that host (found through
``/proc/PID/ns/net``), whoever started it. Faults are real: ``kill -9`` of all of a
host's processes, SIGSTOP/SIGCONT, its cable pulled (the switch port down), packets
dropped with nftables inside its namespace (all of them, those to and from some hosts
only, or a random share), latency with tc netem where the kernel has it.

Cleanup is guaranteed three ways: the rig is a context manager, it registers an
``atexit`` hook, and every new rig first sweeps the worlds of runs that died without
cleaning up (a run holds an ``flock`` on ``/run/fivenines-rig/PREFIX.lock`` for its
whole life; a lock file nobody holds marks a dead run). Processes started by the rig
also die with the process that started them (``PR_SET_PDEATHSIG``).
:func:`leftovers` lists whatever a run left behind; the rig's tests assert it is empty.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from fivenines.errors import ProviderError
from fivenines.runtime.netlink import RouteSocket
from fivenines.runtime.supervisor import die_with_parent
from fivenines.runtime.vip import FENCE_TABLE

T = TypeVar("T")

ROOT_PREFIX = "fn9"
LOCK_DIR = Path("/run/fivenines-rig")
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
HOST_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,10}$")
_PREFIX_RE = re.compile(rf"^({ROOT_PREFIX}[0-9a-f]{{6}})(?:-|$)")
NFT_TABLE = "fn9rig"
SCRATCH_ROOT = Path("/dev/shm") if os.path.isdir("/dev/shm") else Path("/tmp")


class RigError(ProviderError):
    """The rig could not build its world or carry out a fault."""


def unavailable() -> str | None:
    """Why the rig cannot run on this machine, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "the namespace rig needs Linux network namespaces"
    if os.geteuid() != 0:
        return "the namespace rig needs root (it creates network namespaces, links and nftables rules)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            pkg = {"ip": "iproute2", "nft": "nftables"}[tool]
            return f"the namespace rig needs {tool} (Debian package {pkg})"
    return None


def _run(argv: Sequence[str], *, input: str | None = None, check: bool = True,
         timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RigError(f"{' '.join(argv)}: no answer in {timeout:g}s") from None
    if check and done.returncode != 0:
        raise RigError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(NETNS_DIR / name).st_ino
    except OSError:
        return None


def pids_in_netns(inodes: set[int]) -> list[int]:
    """Every live process whose network namespace is one of ``inodes``."""
    wanted = {f"net:[{i}]" for i in inodes}
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry.name}/ns/net") in wanted:
                out.append(int(entry.name))
        except OSError:
            continue  # gone, or a zombie
    return out


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def call_in_netns(netns: str, fn: Callable[..., T], *args: Any, timeout: float = 60.0) -> T:
    """Run ``fn(*args)`` in a thread that entered network namespace ``netns``.

    Sockets made there stay in that namespace and may be used from any thread afterwards.
    """
    result: list[Any] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(NETNS_DIR / netns, os.O_RDONLY)
            try:
                if _libc().setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise RigError(f"setns into {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(fn(*args))
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=body, name=f"in {netns}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise RigError(f"call in {netns} did not return in {timeout:g}s")
    if error:
        raise error[0]
    return result[0]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- sweeping


def _namespaces() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except OSError:
        return []


def _root_links() -> list[str]:
    text = _run(["ip", "-o", "link", "show"], check=False).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in text.splitlines() if line.count(":") >= 2]
    return [n for n in names if n.startswith(ROOT_PREFIX)]


def remove_world(prefix: str) -> list[str]:
    """Kill every process in ``prefix``'s namespaces, delete them and its links; what was removed."""
    removed: list[str] = []
    names = [n for n in _namespaces() if n.startswith(f"{prefix}-")]
    inodes = {i for n in names if (i := netns_inode(n)) is not None}
    pids = pids_in_netns(inodes)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    removed += [f"process {pid}" for pid in pids]
    deadline = time.monotonic() + 5
    while pids_in_netns(inodes) and time.monotonic() < deadline:
        time.sleep(0.01)
    for n in names:
        _run(["ip", "netns", "del", n], check=False)
        removed.append(f"namespace {n}")
    for link in _root_links():
        if link.startswith(prefix):
            _run(["ip", "link", "del", link], check=False)
            removed.append(f"link {link}")
    scratch = SCRATCH_ROOT / prefix
    if scratch.exists():
        shutil.rmtree(scratch, ignore_errors=True)
        removed.append(f"folder {scratch}")
    return removed


def sweep() -> list[str]:
    """Remove the worlds of rig runs that died without cleaning up; what was removed.

    A live run holds the flock of its lock file; a namespace of ours without a lock
    file at all is an orphan too (a run renames its locked file into place before it
    creates anything).
    """
    removed: list[str] = []
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    live: set[str] = set()
    for lock in sorted(LOCK_DIR.glob(f"{ROOT_PREFIX}*.lock")):
        prefix = lock.name.removesuffix(".lock")
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                live.add(prefix)
                continue
            removed += remove_world(prefix)
            with contextlib.suppress(OSError):
                lock.unlink()
        finally:
            os.close(fd)
    orphans = {m.group(1) for n in _namespaces() + _root_links() if (m := _PREFIX_RE.match(n))}
    for prefix in sorted(orphans - live):
        if not (LOCK_DIR / f"{prefix}.lock").exists():
            removed += remove_world(prefix)
    return removed


def leftovers(prefix: str, inodes: Collection[int] = ()) -> list[str]:
    """What a run with ``prefix`` left: namespaces, links, processes (in ``inodes``), its lock file."""
    left = [f"namespace {n}" for n in _namespaces() if n.startswith(prefix)]
    left += [f"link {n}" for n in _root_links() if n.startswith(prefix)]
    left += [f"process {p}" for p in pids_in_netns(set(inodes))]
    if (SCRATCH_ROOT / prefix).exists():
        left.append(f"folder {SCRATCH_ROOT / prefix}")
    if (LOCK_DIR / f"{prefix}.lock").exists():
        left.append(f"lock file {LOCK_DIR / f'{prefix}.lock'}")
    return left


# --------------------------------------------------------------------------- the rig


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    netns: str
    address: str
    prefixlen: int
    interface: str = "eth0"

    @property
    def port(self) -> str:
        """The host's port on the switch (its cable)."""
        return f"p-{self.name}"

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"


class Rig:
    """A bridge and one network namespace per host, with faults; see the module docstring.

    Use it as a context manager::

        with Rig(["etcd", "a", "b", "client"]) as rig:
            rig.popen("a", ["python", "-m", "fivenines.demo", "--port", "8080"])
            rig.partition("a", ["etcd"])   # a no longer reaches etcd, everyone else still
            rig.heal("a")
    """

    def __init__(self, hosts: Sequence[str], *, subnet: str = "10.199.0.0/24", first_host: int = 11,
                 nonlocal_bind: bool = True) -> None:
        why = unavailable()
        if why:
            raise RigError(why)
        for name in hosts:
            if not HOST_NAME_RE.match(name):
                raise RigError(f"host name {name!r}: use 1-11 lowercase letters and digits, starting with a letter")
        if len(set(hosts)) != len(hosts):
            raise RigError(f"duplicate host names in {list(hosts)}")
        net = ipaddress.IPv4Network(subnet)
        if first_host + len(hosts) >= net.num_addresses - 1:
            raise RigError(f"{subnet} has no room for {len(hosts)} hosts from .{first_host}")
        self.subnet = net
        self.swept = sweep()
        self.prefix = f"{ROOT_PREFIX}{secrets.token_hex(3)}"
        self.switch = f"{self.prefix}-sw"
        self.hosts = {
            name: Host(name, f"{self.prefix}-{name}", str(net.network_address + first_host + i), net.prefixlen)
            for i, name in enumerate(hosts)
        }
        self._procs: list[subprocess.Popen[Any]] = []
        self._logs: list[IO[Any]] = []
        self.inodes: set[int] = set()
        self._closed = False
        self._lock_fd = self._take_lock()
        self.scratch = SCRATCH_ROOT / self.prefix  # for data (etcd's), logs: on tmpfs when there is one
        atexit.register(self.close)
        try:
            self._build(nonlocal_bind)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        hosts = " ".join(f"{h.name}={h.address}" for h in self.hosts.values())
        return f"<Rig {self.prefix} {hosts}{' closed' if self._closed else ''}>"

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- building -----------------------------------------------------------------------

    def _take_lock(self) -> int:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        tmp = LOCK_DIR / f".{self.prefix}.{os.getpid()}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.rename(tmp, LOCK_DIR / f"{self.prefix}.lock")  # visible to sweepers only once locked
        return fd

    def _build(self, nonlocal_bind: bool) -> None:
        self.scratch.mkdir(mode=0o700)
        for ns in [self.switch, *(h.netns for h in self.hosts.values())]:
            _run(["ip", "netns", "add", ns])
            inode = netns_inode(ns)
            assert inode is not None
            self.inodes.add(inode)
        switch = ["link add br0 type bridge", "link set br0 up", "link set lo up"]
        for h in self.hosts.values():
            switch += [f"link add {h.port} type veth peer name {h.interface} netns {h.netns}",
                       f"link set {h.port} master br0", f"link set {h.port} up"]
        _run(["ip", "-n", self.switch, "-batch", "-"], input="\n".join(switch) + "\n")
        for h in self.hosts.values():
            if os.path.exists("/proc/sys/net/ipv6"):  # no IPv6 chatter (router solicitations, DAD) on the wire
                self.sysctl(h.name, "net.ipv6.conf.default.disable_ipv6", "1")
                self.sysctl(h.name, "net.ipv6.conf.all.disable_ipv6", "1")
            lines = ["link set lo up", f"addr add {h.cidr} dev {h.interface}", f"link set {h.interface} up"]
            _run(["ip", "-n", h.netns, "-batch", "-"], input="\n".join(lines) + "\n")
            if nonlocal_bind:  # a balancer may bind the floating address before it holds it
                self.sysctl(h.name, "net.ipv4.ip_nonlocal_bind", "1")

    def sysctl(self, host: str, key: str, value: str) -> None:
        path = "/proc/sys/" + key.replace(".", "/")

        def write() -> None:
            with open(path, "w") as f:
                f.write(value)

        self.call_in(host, write)

    # -- processes ------------------------------------------------------------------------

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise RigError(f"no host {name!r} in this rig; hosts: {', '.join(self.hosts)}") from None

    def netns_argv(self, host: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.host(host).netns, *argv]

    def popen(self, host: str, argv: Sequence[str], *, log: Path | None = None, **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside ``host`` (its own session; dies with this process); output to ``log``."""
        if log is not None:
            f = log.open("ab")
            self._logs.append(f)
            kw.setdefault("stdout", f)
            kw.setdefault("stderr", subprocess.STDOUT)
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(self.netns_argv(host, argv), preexec_fn=die_with_parent(os.getpid()),
                                start_new_session=True, **kw)
        self._procs.append(proc)
        return proc

    def run(self, host: str, argv: Sequence[str], *, check: bool = True, timeout: float = 10.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        return _run(self.netns_argv(host, argv), check=check, timeout=timeout, input=input)

    def call_in(self, host: str, fn: Callable[..., T], *args: Any, timeout: float = 60.0) -> T:
        """``fn(*args)`` in a thread inside ``host``'s namespace (sockets made there stay there)."""
        return call_in_netns(self.host(host).netns, fn, *args, timeout=timeout)

    def connect(self, host: str, address: str, port: int, timeout: float = 5.0) -> socket.socket:
        """A TCP connection from ``host`` to ``address:port``."""
        return self.call_in(host, socket.create_connection, (address, port), timeout)

    def route_socket(self, host: str) -> RouteSocket:
        return self.call_in(host, RouteSocket)

    def mac(self, host: str) -> str:
        """The hardware address of ``host``'s interface, e.g. ``6a:1f:...``."""
        h = self.host(host)
        out = _run(["ip", "-n", h.netns, "-o", "link", "show", "dev", h.interface]).stdout
        m = re.search(r"link/ether ([0-9a-f:]{17})", out)
        if m is None:
            raise RigError(f"no MAC address for {host}'s {h.interface}: {out.strip()}")
        return m.group(1)

    def pids(self, host: str) -> list[int]:
        inode = netns_inode(self.host(host).netns)
        return pids_in_netns({inode}) if inode is not None else []

    def _reap(self) -> None:
        for p in self._procs:
            p.poll()

    # -- faults ---------------------------------------------------------------------------

    def kill(self, host: str, sig: int = signal.SIGKILL, timeout: float = 5.0) -> list[int]:
        """Send ``sig`` to every process of ``host``; for SIGKILL, wait until they are gone.

        SIGKILL and SIGSTOP hit the whole host at one instant, as a crash or a freeze would: every
        process is stopped first (again, until no new one appears), so none can react to the
        death or the stop of another (a child told of its parent's death by PR_SET_PDEATHSIG,
        a supervisor restarting a child) before it is killed or stopped itself.
        """
        pids = self._stop_all(host) if sig in (signal.SIGKILL, signal.SIGSTOP) else self.pids(host)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if sig == signal.SIGKILL:
            deadline = time.monotonic() + timeout
            while self.pids(host):
                self._reap()
                if time.monotonic() > deadline:
                    raise RigError(f"processes of {host} still alive {timeout:g}s after SIGKILL: {self.pids(host)}")
                time.sleep(0.005)
            self._reap()
        return pids

    def _stop_all(self, host: str) -> list[int]:
        stopped: set[int] = set()
        for _ in range(20):
            fresh = [p for p in self.pids(host) if p not in stopped]
            if not fresh:
                break
            for pid in fresh:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            stopped.update(fresh)
        return sorted(stopped)

    def pause(self, host: str) -> list[int]:
        """SIGSTOP every process of ``host`` (its kernel still answers for its addresses)."""
        return self.kill(host, signal.SIGSTOP)

    def resume(self, host: str) -> list[int]:
        return self.kill(host, signal.SIGCONT)

    def cable(self, host: str, connected: bool) -> None:
        """Plug or pull ``host``'s cable: its switch port up or down (its eth0 loses carrier)."""
        _run(["ip", "-n", self.switch, "link", "set", self.host(host).port, "up" if connected else "down"])

    def crash(self, host: str) -> list[int]:
        """The host dies: every process killed with SIGKILL and its cable pulled."""
        self.cable(host, False)
        return self.kill(host)

    def _addresses(self, peers: Sequence[str]) -> list[str]:
        out = []
        for p in peers:
            if p in self.hosts:
                out.append(self.hosts[p].address)
            else:
                out.append(str(ipaddress.IPv4Address(p)))
        return out

    def _nft(self, host: str, *rules: str) -> None:
        t = f"inet {NFT_TABLE}"
        script = [f"add table {t}",
                  f"add chain {t} input {{ type filter hook input priority -10; policy accept; }}",
                  f"add chain {t} output {{ type filter hook output priority -10; policy accept; }}",
                  *(f"add rule {t} {r}" for r in rules)]
        self.run(host, ["nft", "-f", "-"], input="\n".join(script) + "\n")

    def partition(self, host: str, peers: Sequence[str]) -> None:
        """Drop every IPv4 packet between ``host`` and ``peers`` (host names or addresses), both ways."""
        addrs = ", ".join(self._addresses(peers))
        self._nft(host, f"input ip saddr {{ {addrs} }} drop", f"output ip daddr {{ {addrs} }} drop")

    def isolate(self, host: str) -> None:
        """Drop every packet ``host`` sends or receives on its network interface (loopback still works)."""
        iface = self.host(host).interface
        self._nft(host, f'input iifname "{iface}" drop', f'output oifname "{iface}" drop')

    def loss(self, host: str, percent: float) -> None:
        """Drop ``percent`` % of the packets ``host`` receives, and as many of those it sends, at random."""
        if not 0 < percent <= 100:
            raise RigError(f"loss percent must be in (0, 100], got {percent}")
        per_mille = round(percent * 10)
        iface = self.host(host).interface
        chance = "" if per_mille >= 1000 else f"numgen random mod 1000 < {per_mille} "
        self._nft(host, f'input iifname "{iface}" {chance}drop', f'output oifname "{iface}" {chance}drop')

    def netem(self, host: str, *, delay_ms: float = 0, jitter_ms: float = 0, loss_percent: float = 0) -> None:
        """tc netem on ``host``'s interface (outgoing); needs a kernel with sch_netem."""
        args = []
        if delay_ms:
            args += ["delay", f"{delay_ms}ms"] + ([f"{jitter_ms}ms"] if jitter_ms else [])
        if loss_percent:
            args += ["loss", f"{loss_percent}%"]
        done = self.run(host, ["tc", "qdisc", "replace", "dev", self.host(host).interface, "root", "netem", *args],
                        check=False)
        if done.returncode != 0:
            raise RigError(f"tc netem on {host}: {done.stderr.strip()}"
                           + (" (this kernel has no sch_netem: CONFIG_NET_SCH_NETEM)" if "unknown" in done.stderr else ""))

    def heal(self, host: str) -> None:
        """Undo every fault of ``host`` but a kill: rules, netem, cable (and SIGCONT its processes)."""
        self.run(host, ["nft", "delete", "table", "inet", NFT_TABLE], check=False)
        self.run(host, ["tc", "qdisc", "del", "dev", self.host(host).interface, "root"], check=False)
        self.cable(host, True)
        self.resume(host)

    def reset(self, host: str, vip: str | None = None) -> None:
        """Between runs on one world: undo every fault of ``host``, kill its processes, flush its
        neighbour table, and remove ``vip`` and the VIP's fence (``fivenines`` tables) a killed node left.

        The neighbour table: an ARP resolution begun while the host's cable was out (a killed
        process's orphaned sockets retransmit) fails, at the end of its 3 s of probes, every
        connection queued on it after the cable is back (EHOSTUNREACH). A closed fence left behind
        would silence the VIP for the next node started there.
        """
        self.heal(host)
        self.kill(host)
        iface = self.host(host).interface
        self.run(host, ["ip", "neigh", "flush", "dev", iface], check=False)
        if vip is not None:
            self.run(host, ["ip", "addr", "flush", "dev", iface, "to", f"{vip}/32"], check=False)
        for family in ("arp", "ip"):
            self.run(host, ["nft", "delete", "table", family, FENCE_TABLE], check=False)

    # -- cleanup ----------------------------------------------------------------------------

    def close(self) -> None:
        """Kill every process of every host, delete every namespace, release the lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        for p in self._procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
        remove_world(self.prefix)
        for p in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
        for f in self._logs:
            f.close()
        with contextlib.suppress(OSError):
            (LOCK_DIR / f"{self.prefix}.lock").unlink()
        os.close(self._lock_fd)

    def leftovers(self) -> list[str]:
        return leftovers(self.prefix, self.inodes)


@contextlib.contextmanager
def rig(hosts: Sequence[str], **kw: Any) -> Iterator[Rig]:
    r = Rig(hosts, **kw)
    try:
        yield r
    finally:
        r.close()
