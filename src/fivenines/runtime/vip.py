"""The floating address on this host: ``ip addr`` with a kernel lifetime, and a gratuitous ARP.

:meth:`Vip.hold` refreshes the address's lifetime (``ip addr change ... valid_lft L``)
or, when it is absent, adds it and announces it: a gratuitous ARP (a request and a
reply for the address, from this interface's MAC, to the broadcast address) makes the
neighbours' ARP caches point at this host at once rather than after their entries go
stale. The kernel removes the address by itself when its lifetime runs out, so a
holder that is frozen or killed loses it too (see :mod:`fivenines.core.election`).
Linux only; needs CAP_NET_ADMIN (root) in the host's network namespace.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import logging
import socket
import struct

from fivenines.errors import ProviderError

log = logging.getLogger("fivenines.vip")

ETH_P_ARP = 0x0806
SIOCGIFHWADDR = 0x8927
BROADCAST = b"\xff" * 6


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


class Vip:
    """The cluster's floating address (``cidr``, e.g. ``10.0.0.100/24``) on ``interface``."""

    def __init__(self, cidr: str, interface: str, *, ip: str = "ip") -> None:
        self.cidr = cidr
        self.address = str(ipaddress.IPv4Interface(cidr).ip)
        self.interface = interface
        self.ip = ip
        self.added_at: float | None = None  # loop time of the last add
        self.lifetime = 0
        self.expires_at = 0.0  # loop time the kernel removes it, unless refreshed

    def __repr__(self) -> str:
        return f"<Vip {self.cidr} on {self.interface} lifetime={self.lifetime}>"

    async def _ip(self, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(self.ip, *args, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        return proc.returncode or 0, (err or out).decode(errors="replace").strip()

    async def hold(self, lifetime: int) -> bool:
        """Refresh the address with ``lifetime`` seconds, or add and announce it; True when it was added.

        Linux's ``ip addr change`` of an IPv4 address that is gone silently adds it back, so
        whether it is there is tracked here: changed while its last lifetime runs, else added.
        """
        if lifetime < 1:
            raise ValueError("a kernel lifetime is at least 1 s")
        now = asyncio.get_running_loop().time()
        life = ["valid_lft", f"{lifetime}", "preferred_lft", f"{lifetime}"]
        if now < self.expires_at:
            rc, err = await self._ip("addr", "change", self.cidr, "dev", self.interface, *life)
            if rc != 0:
                raise ProviderError(f"ip addr change {self.cidr} dev {self.interface}: {err}")
            self.lifetime, self.expires_at = lifetime, now + lifetime
            return False
        rc, err = await self._ip("addr", "add", self.cidr, "dev", self.interface, *life)
        if rc != 0 and "File exists" in err:  # still there (its lifetime not yet run out): refresh it
            rc, err = await self._ip("addr", "change", self.cidr, "dev", self.interface, *life)
            added = False
        else:
            added = True
        if rc != 0:
            raise ProviderError(f"ip addr add {self.cidr} dev {self.interface}: {err}")
        self.lifetime, self.expires_at = lifetime, now + lifetime
        if added:
            self.added_at = now
            try:
                announce(self.interface, self.address)
            except OSError as exc:
                log.warning("gratuitous ARP for %s on %s failed: %s", self.address, self.interface, exc)
        return added

    async def drop(self) -> None:
        """Remove the address (nothing when it is absent)."""
        self.lifetime, self.expires_at = 0, 0.0
        rc, err = await self._ip("addr", "del", self.cidr, "dev", self.interface)
        if rc != 0 and "Cannot assign" not in err and "No such" not in err:
            raise ProviderError(f"ip addr del {self.cidr} dev {self.interface}: {err}")

    async def present(self) -> bool:
        rc, out = await self._ip("-o", "-4", "addr", "show", "dev", self.interface)
        return rc == 0 and f" {self.address}/" in out
