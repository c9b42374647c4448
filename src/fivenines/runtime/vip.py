"""The floating address on this host: a fence with millisecond timeouts, the address, a gratuitous ARP.

What the network sees of a holder is its kernel: it answers ARP for the address and
accepts packets to it for as long as the address is configured, even when fivenines
is frozen (SIGSTOP) or killed with SIGKILL. So holding is enforced where the packets
are, by a **fence** in the node's network namespace (nftables, two tables named
``fivenines``)::

    table arp fivenines   drop ARP asking for the address, and ARP answering from it,
    table ip fivenines    drop IPv4 to the address, and from it,

    unless the address is an element of the set ``live``, which has a timeout in ms;
    and a connection to the address that nothing listens for is not refused but
    ignored (its SYN dropped), so a client's retransmission reaches the next holder.

Every hold (the election's :class:`~fivenines.core.election.HoldVip`, after each lease
renewal) re-adds that element with a timeout that ends at the election's deadline, so
the kernel closes the fence by then, whatever happens to this process; a drop closes
it at once. Only then comes the address itself (added or refreshed over rtnetlink with
a kernel lifetime of whole seconds: a backstop that removes a dead node's address a
second or so after the fence closed) and, when it was absent, a gratuitous ARP (a
request and a reply from this interface's MAC) so that neighbours switch to this host
at once instead of when their ARP entries go stale.

The fence's timeout is computed from the deadline at the last moment before it is
committed (one in-process libnftables call, about 0.1 ms), and checked again after:
if this process was held up in between (a freeze, a long scheduling delay), the element
is at once replaced by one computed from the later time, so the fence outlives the
deadline only if the process stops a second time in that one call's window.
Linux only; needs CAP_NET_ADMIN (root) in the node's network namespace.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import re
import socket
import struct
from collections.abc import Callable

from fivenines.errors import ProviderError
from fivenines.runtime.netlink import NetlinkError, RouteSocket
from fivenines.runtime.nft import Nft, NftError

log = logging.getLogger("fivenines.vip")

ETH_P_ARP = 0x0806
SIOCGIFHWADDR = 0x8927
BROADCAST = b"\xff" * 6
FENCE_TABLE = "fivenines"
FENCE_SET = "live"
LATE_COMMIT = 0.002  # a commit that returns later than this after its clock read is redone


def arp_frames(mac: bytes, address: str) -> list[bytes]:
    """Two gratuitous ARP frames for ``address`` from ``mac``: a request and a reply, both broadcast.

    >>> [len(f) for f in arp_frames(b"\\x02" * 6, "10.0.0.100")]
    [42, 42]
    """
    ip = ipaddress.IPv4Address(address).packed
    head = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    frames = []
    for op, target_mac in ((1, b"\x00" * 6), (2, BROADCAST)):
        arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + mac + ip + target_mac + ip
        frames.append(head + arp)
    return frames


def interface_mac(interface: str) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        info = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, struct.pack("256s", interface.encode()[:15]))
    return info[18:24]


def announce(interface: str, address: str) -> None:
    """Send the gratuitous ARP frames for ``address`` on ``interface``."""
    mac = interface_mac(interface)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
        s.bind((interface, ETH_P_ARP))
        for frame in arp_frames(mac, address):
            s.send(frame)


def fence_rules(address: str) -> str:
    """The fence for ``address``, as one nft transaction that replaces any earlier one (closed).

    >>> print(fence_rules("10.0.0.100").splitlines()[3])
    add set arp fivenines live { type ipv4_addr; flags timeout; }
    """
    ipaddress.IPv4Address(address)
    lines = []
    for family, match in (("arp", "arp {dir} ip"), ("ip", "ip {dir}")):
        t = f"{family} {FENCE_TABLE}"
        lines += [f"add table {t}", f"delete table {t}", f"add table {t}",
                  f"add set {t} {FENCE_SET} {{ type ipv4_addr; flags timeout; }}"]
        hooks = (("input", "input" if family == "arp" else "prerouting", "daddr"), ("output", "output", "saddr"))
        for chain, hook, direction in hooks:
            m = match.format(dir=direction)
            lines += [f"add chain {t} {chain} {{ type filter hook {hook} priority -300; policy accept; }}",
                      f"add rule {t} {chain} {m} {address} {m} != @{FENCE_SET} drop"]
    # A connection to the address on a port nothing listens on (the balancer died, the fence is still
    # open) is not refused: the client's SYN is dropped, so its retransmission (1 s later) can reach
    # the next holder instead of failing at once.
    syn = f"ip daddr {address} tcp flags & (syn | ack) == syn"
    lines += [f"add rule ip {FENCE_TABLE} input {syn} socket transparent 0 accept",
              f"add rule ip {FENCE_TABLE} input {syn} socket transparent 1 accept",
              f"add rule ip {FENCE_TABLE} input {syn} drop"]
    return "\n".join(lines) + "\n"


def fence_open_commands(address: str, ms: int) -> str:
    """Replace the element of both sets by one that expires in ``ms`` milliseconds (one transaction).

    >>> fence_open_commands("10.0.0.100", 730).splitlines()[:2]
    ['flush set arp fivenines live', 'add element arp fivenines live { 10.0.0.100 timeout 730ms }']
    """
    out = []
    for family in ("arp", "ip"):
        out += [f"flush set {family} {FENCE_TABLE} {FENCE_SET}",
                f"add element {family} {FENCE_TABLE} {FENCE_SET} {{ {address} timeout {ms}ms }}"]
    return "\n".join(out) + "\n"


class Fence:
    """The nftables fence of ``address`` in this network namespace (see the module docstring)."""

    def __init__(self, address: str, nft: Nft | None = None) -> None:
        self.address = str(ipaddress.IPv4Address(address))
        self._nft = nft
        self.open_until: float | None = None  # clock time it closes, as last set (None: closed)

    def __repr__(self) -> str:
        return f"<Fence {self.address} {'open' if self.open_until is not None else 'closed'}>"

    @property
    def nft(self) -> Nft:
        if self._nft is None:
            self._nft = Nft()
        return self._nft

    def install(self) -> None:
        """Put the fence in place, closed (replacing any a previous process left, open or not)."""
        self.nft.run(fence_rules(self.address))
        self.open_until = None

    def open_until_time(self, until: float, clock: Callable[[], float]) -> float:
        """Let traffic pass until ``until`` on ``clock`` (closes at once when that has passed); seconds left.

        The timeout is computed just before the commit and checked after it: see the module docstring.
        """
        for _ in range(3):
            read = clock()
            ms = int((until - read) * 1000)
            if ms <= 0:
                self.close()
                return 0.0
            self.nft.run(fence_open_commands(self.address, ms))
            self.open_until = read + ms / 1000
            if clock() - read <= LATE_COMMIT:
                return ms / 1000
        self.close()  # held up three times in a row: rather closed than late
        return 0.0

    def close(self) -> None:
        self.nft.run("\n".join(f"flush set {f} {FENCE_TABLE} {FENCE_SET}" for f in ("arp", "ip")) + "\n")
        self.open_until = None

    def remaining(self) -> float | None:
        """Seconds until the kernel closes the fence, as the kernel says (None: closed)."""
        try:
            out = self.nft.run(f"get element arp {FENCE_TABLE} {FENCE_SET} {{ {self.address} }}")
        except NftError:
            return None
        return expires_in(out)

    def remove(self) -> None:
        self.nft.run("\n".join(f"delete table {f} {FENCE_TABLE}" for f in ("arp", "ip")) + "\n")
        self.open_until = None


def expires_in(listing: str) -> float | None:
    """The ``expires`` of the first element in nft's listing of a set, in seconds.

    >>> expires_in("elements = { 10.0.0.100 timeout 750ms expires 512ms }"), expires_in("elements = { }")
    (0.512, None)
    >>> expires_in("elements = { 10.0.0.100 timeout 2s expires 1s250ms }")
    1.25
    """
    m = re.search(r"expires ((?:\d+[a-z]+)+)", listing)
    if m is None:
        return None
    units = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return round(sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([a-z]+)", m.group(1))), 3)


class Vip:
    """The cluster's floating address (``cidr``, e.g. ``10.0.0.100/24``) on ``interface``, fenced.

    :meth:`install` (once, in the node's network namespace) puts the fence in place, closed;
    then :meth:`hold` and :meth:`drop` as the election says; :meth:`close` at the end.
    """

    def __init__(self, cidr: str, interface: str, *, fence: Fence | None = None) -> None:
        self.cidr = cidr
        iface = ipaddress.IPv4Interface(cidr)
        self.address, self.prefixlen = str(iface.ip), iface.network.prefixlen
        self.interface = interface
        self.fence = fence or Fence(self.address)
        self._rt: RouteSocket | None = None
        self._index = 0
        self.lifetime = 0
        self.expires_at = 0.0  # clock time the kernel removes the address, unless refreshed

    def __repr__(self) -> str:
        return f"<Vip {self.cidr} on {self.interface} lifetime={self.lifetime} {self.fence!r}>"

    def install(self) -> None:
        """Open rtnetlink, find the interface, put the fence in place (closed)."""
        try:
            self._index = socket.if_nametoindex(self.interface)
        except OSError as exc:
            raise ProviderError(f"no interface {self.interface!r} for the VIP {self.cidr}") from exc
        self._rt = RouteSocket()
        self.fence.install()

    @property
    def rt(self) -> RouteSocket:
        if self._rt is None:
            raise ProviderError("Vip.install() was not called")
        return self._rt

    def hold(self, fence_until: float, lifetime: int, clock: Callable[[], float]) -> bool:
        """Open the fence until ``fence_until`` (``clock`` time), then add or refresh the address with a
        kernel lifetime of ``lifetime`` s; True when the address was added (and announced).

        Linux's RTM_NEWADDR of an IPv4 address that is gone adds it back even when asked to
        change it, so whether it is there is tracked here: refreshed while its last lifetime
        runs, else added exclusively.
        """
        if lifetime < 1:
            raise ValueError("a kernel lifetime is at least 1 s")
        try:
            opened = self.fence.open_until_time(fence_until, clock)
        except NftError as first:  # the tables were removed under us (a flushed ruleset): put them back
            log.warning("the VIP fence is gone (%s); installing it again", first)
            try:
                self.fence.install()
                opened = self.fence.open_until_time(fence_until, clock)
            except NftError as exc:
                raise ProviderError(f"cannot open the fence of {self.address}: {exc}") from exc
        if opened <= 0:
            return False
        now = clock()
        added = now >= self.expires_at
        try:
            if not added:
                self.rt.set_address(self._index, self.address, self.prefixlen, lifetime)
            else:
                try:
                    self.rt.set_address(self._index, self.address, self.prefixlen, lifetime, exclusive=True)
                except NetlinkError as exc:
                    if exc.errno != 17:  # EEXIST: still there (its lifetime not yet over): refresh it
                        raise
                    self.rt.set_address(self._index, self.address, self.prefixlen, lifetime)
        except NetlinkError as exc:
            raise ProviderError(f"add {self.cidr} on {self.interface}: {exc}") from exc
        self.lifetime, self.expires_at = lifetime, now + lifetime
        if added:
            try:
                announce(self.interface, self.address)
            except OSError as exc:
                log.warning("gratuitous ARP for %s on %s failed: %s", self.address, self.interface, exc)
        return added

    def drop(self) -> None:
        """Close the fence, then remove the address (nothing when it is absent)."""
        self.lifetime, self.expires_at = 0, 0.0
        try:
            self.fence.close()
        finally:
            try:
                self.rt.del_address(self._index, self.address, self.prefixlen)
            except NetlinkError as exc:
                raise ProviderError(f"remove {self.cidr} from {self.interface}: {exc}") from exc

    def close(self) -> None:
        """After a drop: remove the fence's tables and close rtnetlink."""
        try:
            self.fence.remove()
        except NftError as exc:
            log.warning("removing the VIP fence: %s", exc)
        if self._rt is not None:
            self._rt.close()
            self._rt = None

    def present(self) -> bool:
        return any(a.address == self.address for a in self.rt.addresses())
