"""The VIP's fence in a real network namespace: a holder that is killed goes silent at its deadline, to the
millisecond, while its address is still configured; a new process starts with the fence closed."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fivenines.rig import ArpProbe, Rig
from tests.cluster_helpers import has_address
from tests.helpers import PY, require_rig, wait_until

pytestmark = pytest.mark.slow

VIP = "10.199.0.100"

HOLDER = """
import sys, time
from fivenines.runtime.vip import Vip
vip = Vip(sys.argv[1], "eth0")
vip.install()
if sys.argv[2] != "-":
    until = time.monotonic() + float(sys.argv[2])
    vip.hold(until, 5, time.monotonic)
    print(f"until {until:.6f}", flush=True)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def rig() -> Iterator[Rig]:
    require_rig()
    with Rig(["a", "obs"]) as r:
        yield r
    assert r.leftovers() == []


def holder(rig: Rig, tmp: Path, name: str, fence_s: str) -> tuple[float | None, object]:
    log = tmp / f"{name}.log"
    proc = rig.popen("a", [PY, "-c", HOLDER, f"{VIP}/24", fence_s], log=log)
    text = wait_until(lambda: "ready" in (t := log.read_text()) and t, 10, 0.01, what=f"{name} ready")
    m = re.search(r"until ([\d.]+)", text)
    return (float(m.group(1)) if m else None), proc


def test_a_killed_holder_goes_silent_at_its_fence_deadline_with_its_address_still_there(rig: Rig, tmp_path: Path) -> None:
    with ArpProbe(rig, "obs", VIP) as probe:
        until, _ = holder(rig, tmp_path, "first", "0.4")
        assert until is not None
        rig.kill("a")  # kill -9: nothing of fivenines runs on the host any more; only its kernel
        wait_until(lambda: time.monotonic() > until + 0.2, 2, 0.01)
    first, last = probe.first_answer("a"), probe.last_answer("a")
    assert first is not None and last is not None, probe.timeline()
    # a reply in a round means the fence was open at the round's start or within the next 5 ms
    assert until - 0.1 <= last <= until + 0.03, f"silent {last - until:+.3f}s from the deadline\n{probe.timeline()}"
    assert probe.last_answer("a") == last and probe.first_answer("a", until + 0.03 + probe.interval) is None
    assert has_address(rig, "a"), "the address (lifetime 5 s) is still configured: the fence silenced it"


def test_a_new_process_starts_with_the_fence_closed(rig: Rig, tmp_path: Path) -> None:
    with ArpProbe(rig, "obs", VIP) as probe:
        until, _ = holder(rig, tmp_path, "first", "3")
        assert until is not None
        wait_until(lambda: probe.first_answer("a"), 2, 0.01, what="a answering")
        rig.kill("a")
        restarted = time.monotonic()
        holder(rig, tmp_path, "second", "-")  # installs the fence, holds nothing
        installed = time.monotonic()
        wait_until(lambda: time.monotonic() > installed + 0.3, 1, 0.01)
    last = probe.last_answer("a")
    assert last is not None and restarted - 0.5 < last < installed, probe.timeline()
    assert probe.first_answer("a", installed) is None and installed + 0.3 < until


def test_a_connection_nothing_listens_for_is_ignored_not_refused(rig: Rig, tmp_path: Path) -> None:
    """A holder whose balancer died does not refuse connections to the VIP: the client's SYN goes
    unanswered, so its retransmission can reach the next holder. Its own address still refuses."""
    until, _ = holder(rig, tmp_path, "first", "10")
    assert until is not None

    def connect(address: str) -> str:
        try:
            socket.create_connection((address, 8080), 0.3).close()
        except OSError as exc:
            return type(exc).__name__
        return "connected"

    assert rig.call_in("obs", connect, VIP) == "TimeoutError"
    assert rig.call_in("obs", connect, rig.host("a").address) == "ConnectionRefusedError"
    log = tmp_path / "demo.log"
    rig.popen("a", [PY, "-m", "fivenines.demo", "--host", "0.0.0.0", "--port", "8080"], log=log)
    wait_until(lambda: "listening on" in log.read_text(), 10, 0.02, what="the demo listening")
    assert rig.call_in("obs", connect, VIP) == "connected"
