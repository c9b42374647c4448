"""The VIP's fence, without a kernel: the rules it installs and how it times a commit that came late."""

from __future__ import annotations

from typing import Any

import pytest

from fivenines.runtime.nft import NftError
from fivenines.runtime.vip import Fence, Vip, expires_in, fence_open_commands, fence_rules


class FakeNft:
    """Records commands; ``after`` advances the fake clock as if the commit took that long."""

    def __init__(self, clock: list[float], delays: list[float]) -> None:
        self.clock, self.delays, self.commands = clock, delays, []  # type: list[float], list[float], list[str]

    def run(self, commands: str) -> str:
        self.commands.append(commands)
        self.clock[0] += self.delays.pop(0) if self.delays else 0.0
        return ""


def fence_with(delays: list[float], now: float = 100.0) -> tuple[Fence, FakeNft, list[float]]:
    clock = [now]
    nft = FakeNft(clock, delays)
    return Fence("10.0.0.100", nft), nft, clock  # type: ignore[arg-type]


def opened_for(commands: str) -> int:
    return int(commands.split("timeout ")[1].split("ms")[0])


def test_the_rules_drop_arp_and_ip_for_the_address_unless_it_is_in_the_live_set() -> None:
    rules = fence_rules("10.0.0.100")
    assert "add rule arp fivenines input arp daddr ip 10.0.0.100 arp daddr ip != @live drop" in rules
    assert "add rule arp fivenines output arp saddr ip 10.0.0.100 arp saddr ip != @live drop" in rules
    assert "add rule ip fivenines input ip daddr 10.0.0.100 ip daddr != @live drop" in rules
    assert "add rule ip fivenines output ip saddr 10.0.0.100 ip saddr != @live drop" in rules
    # nothing listening: the SYN is dropped (the client retransmits) rather than refused
    assert rules.endswith("add rule ip fivenines input ip daddr 10.0.0.100 tcp flags & (syn | ack) == syn drop\n")
    assert "add rule ip fivenines input ip daddr 10.0.0.100 tcp flags & (syn | ack) == syn socket transparent 0 accept" in rules
    # installing replaces whatever a previous process left: the fence starts closed
    assert rules.index("delete table arp fivenines") < rules.index("add set arp fivenines live")
    with pytest.raises(ValueError):
        fence_rules("10.0.0.300")
    assert fence_open_commands("10.0.0.100", 5).count("flush set") == 2


def test_the_timeout_is_computed_at_the_commit_and_ends_at_the_deadline() -> None:
    fence, nft, clock = fence_with([0.0001])
    assert fence.open_until_time(100.7205, lambda: clock[0]) == pytest.approx(0.72)
    assert opened_for(nft.commands[0]) == 720 and len(nft.commands) == 1
    assert fence.open_until == pytest.approx(100.72)


def test_a_commit_that_came_late_is_redone_with_the_time_left() -> None:
    fence, nft, clock = fence_with([0.3, 0.0001])  # frozen 300 ms between reading the clock and committing
    left = fence.open_until_time(100.7205, lambda: clock[0])
    assert [opened_for(c) for c in nft.commands] == [720, 420]
    assert left == pytest.approx(0.42) and fence.open_until == pytest.approx(100.72)


def test_a_deadline_passed_closes_the_fence_and_three_late_commits_in_a_row_too() -> None:
    fence, nft, clock = fence_with([0.5])
    assert fence.open_until_time(100.3, lambda: clock[0]) == 0.0  # late past the deadline: closed
    assert nft.commands[-1].startswith("flush set arp fivenines live") and fence.open_until is None
    fence, nft, clock = fence_with([0.01, 0.01, 0.01])
    assert fence.open_until_time(101.0, lambda: clock[0]) == 0.0
    assert len(nft.commands) == 4 and "add element" not in nft.commands[-1]


@pytest.mark.parametrize(("listing", "seconds"), [
    ("elements = { 10.0.0.100 timeout 750ms expires 512ms }", 0.512),
    ("elements = { 10.0.0.100 timeout 2s expires 1s250ms }", 1.25),
    ("type ipv4_addr\n flags timeout\n", None),
])
def test_expires_reads_nfts_listing(listing: str, seconds: Any) -> None:
    assert expires_in(listing) == seconds


class GoneOnce(FakeNft):
    """The first command fails as if the tables had been flushed away."""

    def __init__(self, clock: list[float]) -> None:
        super().__init__(clock, [])
        self.failed = False

    def run(self, commands: str) -> str:
        if not self.failed:
            self.failed = True
            raise NftError("Error: No such file or directory")
        return super().run(commands)


class Addresses:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None, bool]] = []

    def set_address(self, index: int, address: str, prefixlen: int, valid: float | None = None, *,
                    exclusive: bool = False) -> None:
        self.calls.append((address, None if valid is None else int(valid), exclusive))


def test_a_fence_removed_under_the_holder_is_installed_again_at_the_next_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [50.0]
    nft = GoneOnce(clock)
    vip = Vip("10.0.0.100/24", "eth0", fence=Fence("10.0.0.100", nft))  # type: ignore[arg-type]
    rt = Addresses()
    vip._rt = rt  # type: ignore[assignment]
    monkeypatch.setattr("fivenines.runtime.vip.announce", lambda interface, address: None)
    assert vip.hold(50.5, 1, lambda: clock[0]) is True
    assert nft.commands[0].startswith("add table arp fivenines") and "timeout 500ms" in nft.commands[1]
    assert rt.calls == [("10.0.0.100", 1, True)]
