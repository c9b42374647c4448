"""rtnetlink, the little fivenines needs: IPv4 addresses (list, add with a lifetime, remove) and link flags.

The floating address (:mod:`fivenines.runtime.vip`) is added, refreshed and removed
with these calls from inside the node's process (no ``ip`` to fork on the takeover
path); the rig's samplers dump every namespace's addresses every millisecond or two
with one socket per namespace, opened inside it (see
:meth:`fivenines.rig.netns.Rig.call_in`). Linux only.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import socket
import struct
from dataclasses import dataclass

from fivenines.errors import NetworkError

NETLINK_ROUTE = 0
RTM_GETLINK, RTM_NEWLINK = 18, 16
RTM_GETADDR, RTM_NEWADDR, RTM_DELADDR = 22, 20, 21
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFA_ADDRESS, IFA_LOCAL, IFA_CACHEINFO = 1, 2, 6
INFINITY_LIFE_TIME = 0xFFFFFFFF
IFLA_IFNAME = 3
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_RTA = struct.Struct("=HH")
_CACHEINFO = struct.Struct("=IIII")  # ifa_cacheinfo: preferred, valid, cstamp, tstamp


class NetlinkError(NetworkError, OSError):
    pass


@dataclass(frozen=True, slots=True)
class Address:
    index: int
    address: str
    prefixlen: int


def _attr(kind: int, value: bytes) -> bytes:
    length = _RTA.size + len(value)
    return _RTA.pack(length, kind) + value + b"\0" * (((length + 3) & ~3) - length)


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

    def _request(self, kind: int, flags: int, body: bytes) -> None:
        """Send one request and wait for its acknowledgement; errors raise :class:`NetlinkError`."""
        seq = next(self._seq)
        self.sock.send(_HDR.pack(_HDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq, 0) + body)
        while True:
            data = self.sock.recv(1 << 16)
            offset = 0
            while offset + _HDR.size <= len(data):
                length, mtype, _, mseq, _ = _HDR.unpack_from(data, offset)
                if length < _HDR.size:
                    raise NetlinkError("malformed netlink message")
                if mseq == seq and mtype == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", data, offset + _HDR.size)
                    if err:
                        raise NetlinkError(-err, os.strerror(-err))
                    return
                offset += (length + 3) & ~3

    def _address_msg(self, index: int, address: str, prefixlen: int, *extra: bytes) -> bytes:
        raw = ipaddress.IPv4Address(address).packed
        return (_IFADDR.pack(socket.AF_INET, prefixlen, 0, 0, index)
                + _attr(IFA_LOCAL, raw) + _attr(IFA_ADDRESS, raw) + b"".join(extra))

    def set_address(self, index: int, address: str, prefixlen: int, valid: float | None = None, *,
                    exclusive: bool = False) -> None:
        """Add ``address/prefixlen`` to interface ``index`` or set its lifetime (``valid`` whole seconds,
        None: forever). ``exclusive``: fail with EEXIST when it is already there. (Linux re-adds an
        IPv4 address that is absent even when asked only to change it.)"""
        life = INFINITY_LIFE_TIME if valid is None else int(valid)
        cache = _attr(IFA_CACHEINFO, _CACHEINFO.pack(life, life, 0, 0))
        flags = NLM_F_CREATE | (NLM_F_EXCL if exclusive else NLM_F_REPLACE)
        self._request(RTM_NEWADDR, flags, self._address_msg(index, address, prefixlen, cache))

    def del_address(self, index: int, address: str, prefixlen: int) -> bool:
        """Remove the address; False when it was not there."""
        try:
            self._request(RTM_DELADDR, 0, self._address_msg(index, address, prefixlen))
        except NetlinkError as exc:
            if exc.errno in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH):
                return False
            raise
        return True

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
