"""The C pump (fivenines/_pump.c), TCP mode's data phase, on socket pairs: bytes both ways, a
side that takes no more (the rest kept, then sent in order), EOF passed on as a half-close, a
failed socket told, and closing."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from tests.helpers import native_module

_pump, pytestmark = native_module("_pump", "the C pump")


class Rig:
    """client <-> [a | pump | b] <-> target, each side a socket pair; the pump owns duplicates of a and b."""

    def __init__(self) -> None:
        self.a, self.client = socket.socketpair()
        self.b, self.target = socket.socketpair()
        for s in (self.a, self.b, self.client, self.target):
            s.setblocking(False)
        self.events: list[tuple[int, int]] = []
        self.pump = _pump.Pump(os.dup(self.a.fileno()), os.dup(self.b.fileno()),
                               lambda code, side: self.events.append((code, side)))

    def close(self) -> None:
        self.pump.close()
        for s in (self.a, self.b, self.client, self.target):
            s.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def test_constants_match_what_the_proxy_reads() -> None:
    from fivenines.proxy import tcp

    assert (_pump.BLOCKED, _pump.DRAINED, _pump.END, _pump.FAILED) == (tcp.BLOCKED, tcp.DRAINED, tcp.END, tcp.FAILED)


def test_bytes_move_both_ways_and_are_counted(rig: Rig) -> None:
    rig.client.send(b"hello")
    rig.pump.read0()
    assert rig.target.recv(100) == b"hello"
    rig.target.send(b"world!")
    rig.pump.read1()
    assert rig.client.recv(100) == b"world!"
    assert rig.pump.moved == 11 and rig.events == []
    rig.pump.read0()  # nothing to read: nothing happens
    assert rig.events == [] and rig.pump.moved == 11


def test_a_side_that_takes_no_more_keeps_the_rest_then_sends_it_in_order(rig: Rig) -> None:
    sent = bytearray()
    n = 0
    while not rig.events:  # the target reads nothing: its socket fills, then the pump holds the rest
        data = bytes([n % 251]) * 50_000
        n += 1
        try:
            rig.client.send(data)
        except BlockingIOError:
            pass
        else:
            sent += data
        rig.pump.read0()
        assert n < 10_000
    assert rig.events == [(_pump.BLOCKED, 1)]
    assert rig.pump.pending[1] > 0 and rig.pump.pending[0] == 0
    rig.pump.read0()  # (reading the client waits while the target has bytes pending)
    got = bytearray()
    for _ in range(100_000):
        if len(got) == len(sent):
            break
        try:
            got += rig.target.recv(1 << 20)
        except BlockingIOError:
            pass
        if rig.pump.pending[1]:
            rig.pump.write1()  # the rest first: DRAINED once it is all out
        else:
            rig.pump.read0()  # then what the client sent after it
    assert bytes(got) == bytes(sent)
    assert rig.pump.pending == (0, 0)
    assert (_pump.DRAINED, 1) in rig.events


def test_eof_is_passed_on_as_a_half_close(rig: Rig) -> None:
    rig.client.shutdown(socket.SHUT_WR)
    rig.pump.read0()
    assert rig.events == [(_pump.END, 0)]
    assert rig.target.recv(10) == b""  # the target sees EOF...
    rig.target.send(b"late answer")  # ...and can still answer
    rig.pump.read1()
    assert rig.client.recv(100) == b"late answer"


def test_a_failed_socket_is_told(rig: Rig) -> None:
    rig.target.close()
    rig.client.send(b"into the void")
    rig.pump.read0()
    assert rig.events == [(_pump.FAILED, 1)]


def test_close_closes_its_sockets_and_later_readiness_does_nothing(rig: Rig) -> None:
    a, b = rig.pump.fds
    rig.pump.close()
    assert rig.pump.fds == (-1, -1)
    for fd in (a, b):
        with pytest.raises(OSError):
            os.fstat(fd)
    rig.client.send(b"x")
    rig.pump.read0()
    rig.pump.write1()
    assert rig.events == []


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        _pump.Pump(0, 1, "not callable")
    with pytest.raises(TypeError):
        _pump.Pump(0, 1)
