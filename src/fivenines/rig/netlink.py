"""The two rtnetlink dumps the rig's samplers need: IPv4 addresses and link flags.

One netlink socket per network namespace, opened inside it (see
:meth:`fivenines.rig.netns.Rig.call_in`); a dump is then two syscalls, fast enough to
sample every namespace of a rig every millisecond or two. Linux only.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
import struct
from dataclasses import dataclass

from fivenines.errors import NetworkError

NETLINK_ROUTE = 0
RTM_GETLINK, RTM_NEWLINK = 18, 16
RTM_GETADDR, RTM_NEWADDR = 22, 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFLA_IFNAME = 3
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_RTA = struct.Struct("=HH")


class NetlinkError(NetworkError, OSError):
    pass


@dataclass(frozen=True, slots=True)
class Address:
    index: int
    address: str
    prefixlen: int


def _attrs(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while offset + _RTA.size <= end:
        length, kind = _RTA.unpack_from(data, offset)
        if length < _RTA.size:
            break
        out[kind] = data[offset + _RTA.size: offset + length]
        offset += (length + 3) & ~3
    return out


class RouteSocket:
    """A NETLINK_ROUTE socket (bound to the namespace of the thread that made it)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self._seq = itertools.count(1)

    def close(self) -> None:
        self.sock.close()

    def _dump(self, kind: int, body: bytes) -> list[tuple[int, bytes, int]]:
        seq = next(self._seq)
        self.sock.send(_HDR.pack(_HDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
        out: list[tuple[int, bytes, int]] = []
        while True:
            data = self.sock.recv(1 << 16)
            offset = 0
            while offset + _HDR.size <= len(data):
                length, mtype, _, mseq, _ = _HDR.unpack_from(data, offset)
                if length < _HDR.size:
                    raise NetlinkError("malformed netlink message")
                if mseq == seq:
                    if mtype == NLMSG_DONE:
                        return out
                    if mtype == NLMSG_ERROR:
                        (err,) = struct.unpack_from("=i", data, offset + _HDR.size)
                        if err:
                            raise NetlinkError(-err, f"netlink dump failed: errno {-err}")
                    else:
                        out.append((mtype, data, offset + _HDR.size))
                offset += (length + 3) & ~3

    def addresses(self) -> list[Address]:
        """Every IPv4 address of the namespace."""
        out = []
        for mtype, data, off in self._dump(RTM_GETADDR, _IFADDR.pack(socket.AF_INET, 0, 0, 0, 0)):
            if mtype != RTM_NEWADDR:
                continue
            (length,) = struct.unpack_from("=I", data, off - _HDR.size)
            _, prefixlen, _, _, index = _IFADDR.unpack_from(data, off)
            attrs = _attrs(data, off + _IFADDR.size, off - _HDR.size + length)
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw is not None and len(raw) == 4:
                out.append(Address(index, str(ipaddress.IPv4Address(raw)), prefixlen))
        return out

    def links(self) -> dict[int, tuple[str, int]]:
        """Interface index -> (name, flags)."""
        out = {}
        for mtype, data, off in self._dump(RTM_GETLINK, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            if mtype != RTM_NEWLINK:
                continue
            (length,) = struct.unpack_from("=I", data, off - _HDR.size)
            _, _, index, flags, _ = _IFINFO.unpack_from(data, off)
            attrs = _attrs(data, off + _IFINFO.size, off - _HDR.size + length)
            name = attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode()
            out[index] = (name, flags)
        return out

    def holds(self, address: str) -> bool:
        """True when ``address`` is on an interface that is up with carrier (it answers ARP)."""
        found = [a.index for a in self.addresses() if a.address == address]
        if not found:
            return False
        links = self.links()
        return any(links.get(i, ("", 0))[1] & (IFF_UP | IFF_LOWER_UP) == IFF_UP | IFF_LOWER_UP for i in found)
