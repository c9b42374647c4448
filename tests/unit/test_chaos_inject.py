"""The injection guard's decisions on a fake /proc tree: only descendants of fivenines are touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from fivenines.chaos import UnsafeTarget
from fivenines.chaos.inject import Guard, ProcInfo, established_inodes, parse_stat


def _proc(root: Path, pid: int, ppid: int, pgrp: int | None = None, state: str = "S", start: int = 1000,
          comm: str = "python") -> None:
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    pg = pid if pgrp is None else pgrp
    fields = [state, str(ppid), str(pg), str(pg)] + ["0"] * 15 + [str(start)] + ["0"] * 5
    (d / "stat").write_text(f"{pid} ({comm}) " + " ".join(fields) + "\n")


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    """init(1) ─ shell(100) ─ chaos(200) ─ fivenines(300) ─┬ web-1(301) ─ worker child(311, same group)
                                                            ├ web-2(302)
                                                            └ data-plane worker(303)
       and a stranger(400) under init."""
    _proc(tmp_path, 1, 0)
    _proc(tmp_path, 100, 1)
    _proc(tmp_path, 200, 100)
    _proc(tmp_path, 300, 200, comm="python -m fivenines up (x)")
    _proc(tmp_path, 301, 300)
    _proc(tmp_path, 311, 301, pgrp=301)
    _proc(tmp_path, 302, 300, state="T")
    _proc(tmp_path, 303, 300, pgrp=300)
    _proc(tmp_path, 400, 1)
    _proc(tmp_path, 401, 1, pgrp=301)  # in web-1's group but not ours (e.g. it escaped): left alone
    return tmp_path


def test_parse_stat_handles_odd_command_names() -> None:
    assert parse_stat("7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 555 0") == ProcInfo(7, 1, 7, "R", 555)
    assert ProcInfo(7, 1, 7, "T", 5).stopped and not ProcInfo(7, 1, 7, "S", 5).stopped


def test_only_descendants_of_fivenines_pass(proc: Path) -> None:
    g = Guard(300, proc)
    assert g.check(301, "web-1").pid == 301
    assert g.check(311, "grandchild").pid == 311
    assert g.check(302, "web-2").stopped
    for pid, what in ((400, "was not started by fivenines"), (200, "was not started by fivenines"),
                      (300, "was not started by fivenines"), (999, "is gone"), (1, "no usable pid"),
                      (None, "no usable pid"), ("301", "no usable pid"), (True, "no usable pid")):
        with pytest.raises(UnsafeTarget, match=what):
            g.check(pid, "target")


def test_members_of_an_instance_group_are_only_ours(proc: Path) -> None:
    g = Guard(300, proc)
    leader = g.check(301, "web-1")
    assert sorted(p.pid for p in g.members(leader)) == [301, 311]
    # a worker in fivenines' own process group: itself only (never fivenines' whole group)
    worker = g.check(303, "worker-1")
    assert [p.pid for p in g.members(worker)] == [303]


def test_signal_skips_processes_that_changed(proc: Path) -> None:
    g = Guard(300, proc)
    stale = ProcInfo(999_999_999, 300, 999_999_999, "S", 1)  # no such pid: pidfd_open fails
    assert g.signal([stale], 0) == 0


def test_established_inodes_reads_tcp_and_tcp6(tmp_path: Path) -> None:
    net = tmp_path / "42" / "net"
    net.mkdir(parents=True)
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    port = 9101  # 0x238D
    (net / "tcp").write_text(header + "\n".join([
        "   0: 0100007F:238D 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1",  # listening
        "   1: 0100007F:238D 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 222 1",  # established
        "   2: 0100007F:9C40 0100007F:238D 01 00000000:00000000 00:00000000 00000000     0        0 333 1",  # the peer
        "   3: 0100007F:238E 0100007F:9C41 01 00000000:00000000 00:00000000 00000000     0        0 444 1",  # other port
    ]) + "\n")
    (net / "tcp6").write_text(header + (
        "   0: 0000000000000000FFFF00000100007F:238D 0000000000000000FFFF00000100007F:9C42 01 "
        "00000000:00000000 00:00000000 00000000     0        0 555 1\n"))
    assert established_inodes(42, port, tmp_path) == {"222", "555"}
    assert established_inodes(43, port, tmp_path) == set()
