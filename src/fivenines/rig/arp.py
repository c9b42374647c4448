"""Who answers ARP for an address, as the network sees it: a probe every few milliseconds from one host.

A host holding an address in its kernel is not necessarily answering for it: a fenced
node (:mod:`fivenines.runtime.vip`) keeps the address configured while its nftables
rules drop the ARP for it. What clients follow is who *answers*. :class:`ArpProbe`
broadcasts an ARP request for the address from an observer host every ``interval``
seconds and records, per probe round, the hardware addresses that replied before the
next round; a round with two of them is a moment when two hosts answered at once.

Run it from a host of its own (an observer), not from the client under test: every
reply also refreshes the sender's ARP cache, which would change what that client does.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from fivenines.rig.netns import Rig
from fivenines.runtime.vip import ETH_P_ARP, interface_mac

_ARP = struct.Struct("!HHBBH6s4s6s4s")


def request_frame(mac: bytes, ip: str, target: str) -> bytes:
    """A broadcast ARP request from ``mac``/``ip`` asking who has ``target``.

    >>> len(request_frame(b"\\x02" * 6, "10.0.0.9", "10.0.0.100"))
    42
    """
    head = b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP)
    return head + _ARP.pack(1, 0x0800, 6, 4, 1, mac, ipaddress.IPv4Address(ip).packed, b"\0" * 6,
                            ipaddress.IPv4Address(target).packed)


def reply_from(frame: bytes, address: bytes, own_ip: bytes) -> bytes | None:
    """The sender MAC of ``frame`` when it is an ARP reply for ``address`` sent to ``own_ip``; else None."""
    if len(frame) < 14 + _ARP.size or frame[12:14] != b"\x08\x06":
        return None
    _, ptype, _, _, op, sha, spa, _, tpa = _ARP.unpack_from(frame, 14)
    if ptype != 0x0800 or op != 2 or spa != address or tpa != own_ip:
        return None
    return bytes(sha)


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


@dataclass(frozen=True, slots=True)
class Round:
    at: float  # time.monotonic() when the request went out
    answered: tuple[str, ...]  # hosts (or MACs) that replied before the next round


@dataclass(slots=True)
class ArpProbe:
    """Probe ``address`` from host ``observer`` of ``rig`` every ``interval`` s in a thread."""

    rig: Rig
    observer: str
    address: str
    interval: float = 0.005
    rounds: list[Round] = field(default_factory=list)
    unknown: set[str] = field(default_factory=set)  # MACs of no rig host
    _names: Mapping[bytes, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _sock: socket.socket | None = None
    _mac: bytes = b""
    _error: BaseException | None = None

    def __post_init__(self) -> None:
        self._names = {bytes.fromhex(self.rig.mac(h).replace(":", "")): h for h in self.rig.hosts}
        host = self.rig.host(self.observer)

        def open_socket() -> tuple[socket.socket, bytes]:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
            s.bind((host.interface, ETH_P_ARP))
            return s, interface_mac(host.interface)

        self._sock, self._mac = self.rig.call_in(self.observer, open_socket)

    def __repr__(self) -> str:
        return (f"<ArpProbe {self.address} from {self.observer} rounds={len(self.rounds)} "
                f"with_two={sum(1 for r in self.rounds if len(r.answered) > 1)}>")

    def start(self) -> ArpProbe:
        self._thread = threading.Thread(target=self._run, name=f"arp probe {self.address}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._sock is not None
        sock = self._sock
        me = ipaddress.IPv4Address(self.rig.host(self.observer).address).packed
        target = ipaddress.IPv4Address(self.address).packed
        frame = request_frame(self._mac, self.rig.host(self.observer).address, self.address)
        try:
            while not self._stop.is_set():
                at = time.monotonic()
                sock.send(frame)
                macs: set[bytes] = set()
                deadline = at + self.interval
                while (left := deadline - time.monotonic()) > 0:
                    ready, _, _ = select.select([sock], [], [], left)
                    if not ready:
                        break
                    mac = reply_from(sock.recv(128), target, me)
                    if mac is not None:
                        macs.add(mac)
                names = []
                for mac in sorted(macs):
                    name = self._names.get(mac)
                    if name is None:
                        name = mac_text(mac)
                        self.unknown.add(name)
                    names.append(name)
                self.rounds.append(Round(at, tuple(sorted(names))))
        except BaseException as exc:  # reported by stop()
            self._error = exc

    def stop(self) -> ArpProbe:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._error is not None:
            raise self._error
        return self

    def __enter__(self) -> ArpProbe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reading ---------------------------------------------------------------------------

    def rounds_between(self, start: float = 0.0, end: float = float("inf")) -> list[Round]:
        return [r for r in self.rounds if start <= r.at < end]

    def moments_of_two(self, start: float = 0.0, end: float = float("inf")) -> list[tuple[float, float, tuple[str, ...]]]:
        """Runs of consecutive rounds in which two or more hosts answered: (first, last, who)."""
        out: list[tuple[float, float, tuple[str, ...]]] = []
        run: list[Round] = []
        for r in [*self.rounds_between(start, end), Round(float("inf"), ())]:
            if len(r.answered) > 1:
                run.append(r)
            elif run:
                who = tuple(sorted({h for x in run for h in x.answered}))
                out.append((run[0].at, run[-1].at, who))
                run = []
        return out

    def first_answer(self, host: str, after: float = 0.0) -> float | None:
        return next((r.at for r in self.rounds if r.at >= after and host in r.answered), None)

    def last_answer(self, host: str, before: float = float("inf")) -> float | None:
        return next((r.at for r in reversed(self.rounds) if r.at < before and host in r.answered), None)

    def timeline(self, since: float | None = None) -> str:
        """The changes of who answered: ``+0.000s a`` / ``+0.751s -`` / ``+1.402s b``."""
        if not self.rounds:
            return "(no rounds)"
        t0 = self.rounds[0].at if since is None else since
        lines, last = [], None
        for r in self.rounds:
            if r.answered != last:
                lines.append(f"{r.at - t0:+.3f}s {','.join(r.answered) or '-'}")
                last = r.answered
        return "\n".join(lines)
