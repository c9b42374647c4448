"""coordination: vrrp's fence, without a kernel: open only while keepalived is MASTER and runs, renewed
for less than the other node's master-down interval, closed at once when keepalived stops or dies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fivenines.core.keepalived import (
    STATES,
    fence_may_open,
    fence_refresh,
    fence_timeout,
    master_down_interval,
)
from fivenines.runtime.keepalived import MasterFence, node_fence_timeout, process_runs
from fivenines.runtime.vip import Fence
from fivenines.spec import parse_spec
from tests.unit.test_vip import FakeNft, opened_for


def opened_ms(commands: str) -> int:
    return opened_for(commands)


def fence(runs: bool = True) -> tuple[MasterFence, FakeNft, list[float], list[str]]:
    clock = [100.0]
    nft = FakeNft(clock, [])
    announced: list[str] = []
    f = MasterFence("10.0.0.100", "eth0", 0.24, fence=Fence("10.0.0.100", nft),  # type: ignore[arg-type]
                    clock=lambda: clock[0], announce=lambda i, a: announced.append(f"{i} {a}"),
                    runs=lambda pid: runs and pid is not None)
    return f, nft, clock, announced


@given(st.floats(0.01, 5.0), st.integers(1, 254), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_a_dead_master_s_fence_closes_before_the_backup_can_take_over(advert: float, prio: int, advert_phase: float,
                                                                      renew_phase: float) -> None:
    """Whenever the master stops: its last advert left up to one advert_int before, its last renewal up to one
    refresh before; the backup takes over a master-down interval after that advert, the fence closes one
    timeout after that renewal (plus two kernel ticks of rounding)."""
    timeout = fence_timeout(advert, prio)
    assert 0 < fence_refresh(timeout) < timeout
    died = 1000.0
    last_advert = died - advert_phase * advert
    last_renewal = died - renew_phase * fence_refresh(timeout)
    closes = last_renewal + timeout + 0.008
    takeover = last_advert + master_down_interval(advert, prio)
    assert closes < takeover


def test_the_fence_timeout_uses_the_other_node_s_priority() -> None:
    spec = parse_spec({"name": "s", "listeners": [{"port": 0, "default_target_group": "web"}],
                       "target_groups": {"web": {"targets": ["127.0.0.1:9"]}},
                       "cluster": {"nodes": [{"name": "a", "address": "10.0.0.11"}, {"name": "b", "address": "10.0.0.12"}],
                                   "vip": "10.0.0.100/24", "coordination": "vrrp",
                                   "vrrp": {"advert_int": "50ms", "priority": {"a": 200, "b": 100}}}})
    assert spec.cluster is not None
    assert node_fence_timeout(spec.cluster, "a") == pytest.approx(fence_timeout(0.05, 100))  # b takes over from a
    assert node_fence_timeout(spec.cluster, "b") == pytest.approx(fence_timeout(0.05, 200))
    assert node_fence_timeout(spec.cluster, "b") < node_fence_timeout(spec.cluster, "a")


@pytest.mark.parametrize("state", [*sorted(STATES - {"MASTER"}), "unknown"])
def test_only_a_running_master_opens(state: str) -> None:
    assert fence_may_open("MASTER", True)
    assert not fence_may_open("MASTER", False)
    assert not fence_may_open(state, True)


def test_master_opens_renews_and_closes_with_one_announcement_per_opening() -> None:
    f, nft, clock, announced = fence()
    f.step()
    assert nft.commands == [] and not f.is_open()  # state unknown: stays closed
    f.update("MASTER", 42)
    f.step()
    assert opened_ms(nft.commands[-1]) in (239, 240) and f.is_open() and announced == ["eth0 10.0.0.100"]
    clock[0] += f.every
    f.step()  # a renewal: no second announcement
    assert opened_ms(nft.commands[-1]) in (239, 240) and len(announced) == 1 and f.openings == 1
    f.update("BACKUP", 42)
    f.step()
    assert nft.commands[-1].startswith("flush set arp fivenines live") and not f.is_open()
    f.update("MASTER", 42)
    clock[0] += 1
    f.step()
    assert f.openings == 2 and len(announced) == 2
    assert f.status()["open"] and f.status()["lapses"] == 0


def test_a_renewal_after_the_kernel_closed_it_counts_as_a_lapse_and_announces_again() -> None:
    f, _, clock, announced = fence()
    f.update("MASTER", 42)
    f.step()
    clock[0] += 0.5  # held up longer than the timeout: the kernel closed the fence
    assert not f.is_open()
    f.step()
    assert f.lapses == 1 and f.openings == 2 and len(announced) == 2


def test_a_stopped_or_dead_keepalived_closes_it() -> None:
    f, nft, _, _ = fence(runs=False)
    f.update("MASTER", 42)
    f.step()
    assert not f.is_open() and nft.commands == []


def test_a_stopped_or_dead_vrrp_child_closes_it(tmp_path: Path) -> None:
    """The parent runs on, the child that sends the adverts is stopped (or gone): the backup will take over."""
    clock = [100.0]
    nft = FakeNft(clock, [])
    child = tmp_path / "vrrp.pid"
    f = MasterFence("10.0.0.100", "eth0", 0.24, fence=Fence("10.0.0.100", nft),  # type: ignore[arg-type]
                    clock=lambda: clock[0], announce=lambda i, a: None, runs=lambda pid: pid in (42, 43),
                    child_pid_file=child)
    f.update("MASTER", 42)
    f.step()
    assert not f.is_open(), "no child pid file yet: closed"
    child.write_text("43\n")
    f.step()
    assert f.is_open()
    child.write_text("44\n")  # a pid that does not run (stopped, killed)
    f.step()
    assert not f.is_open() and nft.commands[-1].startswith("flush set arp fivenines live")


def test_process_runs_tells_a_stopped_process_from_a_running_one() -> None:
    assert process_runs(os.getpid()) and not process_runs(None)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert process_runs(child.pid)
        os.kill(child.pid, 19)  # SIGSTOP
        for _ in range(200):
            if not process_runs(child.pid):
                break
            os.sched_yield()
        assert not process_runs(child.pid)
        os.kill(child.pid, 18)  # SIGCONT
    finally:
        child.kill()
        child.wait()
    assert not process_runs(child.pid)
