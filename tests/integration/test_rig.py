"""The namespace rig: hosts that reach each other, real faults, and nothing left behind."""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fivenines.rig import AddressWatch, Rig, RigError, leftovers
from fivenines.rig.netns import NETNS_DIR, pids_in_netns
from tests.helpers import PY, require_rig, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def rig() -> Iterator[Rig]:
    require_rig()
    r = Rig(["a", "b", "client"])
    yield r
    r.close()
    assert r.leftovers() == []


def serve(rig: Rig, host: str, tmp: Path) -> int:
    """A demo HTTP server on ``host``'s address; its port."""
    log = tmp / f"demo-{host}.log"
    rig.popen(host, [PY, "-m", "fivenines.demo", "--host", rig.hosts[host].address, "--port", "0", "--id", host],
              log=log)
    line = wait_until(lambda: "listening on" in (t := log.read_text()) and t, 10, what=f"demo on {host}")
    m = re.search(r"listening on [\d.]+:(\d+)", line)
    assert m
    return int(m.group(1))


def reaches(rig: Rig, src: str, dst: str, port: int, timeout: float = 0.3) -> bool:
    try:
        rig.connect(src, rig.hosts[dst].address, port, timeout).close()
    except OSError:
        return False
    return True


def state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_hosts_reach_each_other_through_the_switch_and_faults_cut_them(rig: Rig, tmp_path: Path) -> None:
    port = serve(rig, "a", tmp_path)
    assert reaches(rig, "client", "a", port) and reaches(rig, "b", "a", port)
    # the machine's own namespace has no route into the rig
    with pytest.raises(OSError), socket.create_connection((rig.hosts["a"].address, port), 0.2):
        pass

    rig.partition("a", ["client"])  # a cut from the client only
    assert not reaches(rig, "client", "a", port)
    assert reaches(rig, "b", "a", port)
    rig.heal("a")
    assert reaches(rig, "client", "a", port)

    rig.isolate("a")
    assert not reaches(rig, "client", "a", port) and not reaches(rig, "b", "a", port)
    rig.heal("a")

    rig.cable("a", False)
    assert not reaches(rig, "client", "a", port)
    rig.heal("a")  # plugs the cable back in
    wait_until(lambda: reaches(rig, "client", "a", port), 5, what="a reachable again")

    rig.loss("a", 100)
    assert not reaches(rig, "client", "a", port)
    rig.heal("a")
    assert reaches(rig, "client", "a", port)


def test_partial_loss_drops_some_packets_not_all(rig: Rig, tmp_path: Path) -> None:
    port = serve(rig, "a", tmp_path)
    rig.loss("a", 50)
    # a handshake needs a SYN in and a SYN-ACK out: about a quarter get through at the first try
    results = [reaches(rig, "client", "a", port, timeout=0.15) for _ in range(24)]
    assert 0 < sum(results) < 24, results


def test_kill_pause_and_resume_reach_every_process_of_a_host(rig: Rig) -> None:
    # a process with a child of its own: both belong to the host
    rig.popen("a", ["sh", "-c", "sleep 300 & exec sleep 301"])
    rig.popen("b", ["sleep", "302"])
    pids = wait_until(lambda: len(p := rig.pids("a")) == 2 and p, 5, what="two processes on a")
    rig.pause("a")
    wait_until(lambda: all(state(p) == "T" for p in pids), 5, what="stopped")
    rig.resume("a")
    wait_until(lambda: all(state(p) == "S" for p in pids), 5, what="running again")
    assert sorted(rig.kill("a")) == sorted(pids)
    assert rig.pids("a") == [] and len(rig.pids("b")) == 1


def test_kill_stops_every_process_before_it_kills_any(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a crash, no process of the host may see another die (a child told of its parent's death
    by PR_SET_PDEATHSIG, as keepalived's are, would shut down cleanly) before it is killed itself."""
    rig.popen("a", ["sh", "-c", "sleep 300 & sleep 301 & exec sleep 302"])
    pids = wait_until(lambda: len(p := rig.pids("a")) == 3 and p, 5, what="three processes on a")
    sent: list[tuple[int, int]] = []
    real_kill = os.kill

    def kill(pid: int, sig: int) -> None:
        sent.append((pid, sig))
        real_kill(pid, sig)

    monkeypatch.setattr("fivenines.rig.netns.os.kill", kill)
    assert sorted(rig.kill("a")) == sorted(pids)
    signals = [sig for _, sig in sent]
    assert signals == [signal.SIGSTOP] * 3 + [signal.SIGKILL] * 3 and rig.pids("a") == []


def test_crash_pulls_the_cable_and_kills_everything(rig: Rig, tmp_path: Path) -> None:
    port = serve(rig, "a", tmp_path)
    rig.crash("a")
    assert rig.pids("a") == []
    assert not reaches(rig, "client", "a", port)


def connect_error(rig: Rig, src: str, dst: str, port: int, timeout: float = 2.0) -> str:
    try:
        rig.connect(src, rig.hosts[dst].address, port, timeout).close()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    return "connected"


@pytest.mark.parametrize("reset", [False, True])
def test_reset_forgets_the_arp_resolutions_that_failed_while_the_cable_was_out(rig: Rig, tmp_path: Path,
                                                                              reset: bool) -> None:
    """A resolution begun with the cable out fails, at the end of its probes, the connect queued on it after
    the cable is back: what made the next test's node fail to reach etcd. Rig.reset flushes it."""
    port = serve(rig, "b", tmp_path)
    rig.cable("a", False)
    assert connect_error(rig, "a", "b", port, 0.05) == "TimeoutError"  # starts the resolution
    b = rig.hosts["b"].address
    # its last probe sent, with the cable out (Linux: 6 probes, 1 s apart, then FAILED)
    wait_until(lambda: re.search(rf"^{re.escape(b)} .*probes 6 INCOMPLETE",
                                 rig.run("a", ["ip", "-s", "neigh", "show", "dev", "eth0"]).stdout, re.M),
               5, 0.05, what="the last ARP probe with the cable out")
    rig.cable("a", True)
    if reset:
        rig.reset("a")
    # the connect is queued on the failing resolution (its last probes went out with the cable out)
    assert connect_error(rig, "a", "b", port) == ("connected" if reset else "EHOSTUNREACH")


def test_address_watch_sees_every_holder_and_the_overlap(rig: Rig) -> None:
    vip = "10.199.0.100"
    with AddressWatch(rig, vip, ["a", "b"]) as w:
        rig.run("a", ["ip", "addr", "add", f"{vip}/24", "dev", "eth0"])
        wait_until(lambda: w.holders == ("a",), 2, 0.001)
        rig.run("b", ["ip", "addr", "add", f"{vip}/24", "dev", "eth0"])
        wait_until(lambda: w.holders == ("a", "b"), 2, 0.001)
        rig.run("a", ["ip", "addr", "del", f"{vip}/24", "dev", "eth0"])
        wait_until(lambda: w.holders == ("b",), 2, 0.001)
        rig.cable("b", False)  # an address behind a pulled cable answers nobody: not held
        wait_until(lambda: w.holders == (), 2, 0.001)
    assert [c.holders for c in w.changes] == [(), ("a",), ("a", "b"), ("b",), ()]
    assert len(w.moments_of_two()) == 1 and w.samples_with_two >= 1
    dropped, b_first = w.dropped_at("a"), w.first_held("b")
    assert dropped is not None and b_first is not None and b_first < dropped
    assert w.longest_gap < 0.1, w.longest_gap


def test_netem_latency_or_a_clear_refusal(rig: Rig) -> None:
    try:
        rig.netem("a", delay_ms=50)
    except RigError as exc:
        assert "netem" in str(exc)
        pytest.skip(f"this kernel cannot add latency: {exc}")
    port_probe = rig.run("a", ["tc", "qdisc", "show", "dev", "eth0"]).stdout
    assert "netem" in port_probe and "delay 50ms" in port_probe


def test_nothing_is_left_when_the_test_body_fails() -> None:
    require_rig()
    with pytest.raises(ZeroDivisionError), Rig(["a", "b"]) as r:
        r.popen("a", ["sleep", "300"])
        r.partition("a", ["b"])
        wait_until(lambda: r.pids("a"), 5)
        _ = 1 / 0
    assert r.leftovers() == []
    assert not any(n.startswith(r.prefix) for n in os.listdir(NETNS_DIR))


def test_a_killed_run_is_swept_by_the_next(tmp_path: Path) -> None:
    require_rig()
    script = textwrap.dedent("""
        import sys, time
        from fivenines.rig import Rig
        r = Rig(["a", "b"])
        r.popen("a", ["sleep", "300"])
        while not r.pids("a"):
            time.sleep(0.01)
        print(r.prefix, " ".join(str(i) for i in r.inodes), flush=True)
        time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        prefix, *inodes_text = proc.stdout.readline().split()
    finally:
        proc.send_signal(signal.SIGKILL)  # no atexit, no context manager: only the sweep can clean up
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    inodes = {int(i) for i in inodes_text}
    # the dead run's namespaces and lock file remain (its sleep died with it: PR_SET_PDEATHSIG)
    wait_until(lambda: not pids_in_netns(inodes), 5, what="the killed run's processes gone")
    assert any(x.startswith("namespace") for x in leftovers(prefix))
    with Rig(["a"]) as fresh:
        assert any(prefix in x for x in fresh.swept), fresh.swept
        assert leftovers(prefix, inodes) == []
    assert fresh.leftovers() == []


def test_a_live_run_is_never_swept() -> None:
    require_rig()
    with Rig(["a"]) as one, Rig(["a"]) as two:
        assert one.prefix != two.prefix
        assert not any(one.prefix in x for x in two.swept)
        assert (NETNS_DIR / one.hosts["a"].netns).exists()
        t = time.monotonic()
        assert one.call_in("a", lambda: True) and time.monotonic() - t < 1
