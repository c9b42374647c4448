"""Instance ports chosen by the kernel (``ports: auto``) stay reserved until fivenines' own servers are bound."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from fivenines.core.health import HealthState
from fivenines.runtime.controller import Controller, allocate_ports
from fivenines.spec import parse_spec, port_is_free
from tests.helpers import demo_spec


def _bindable(port: int) -> bool:
    return port_is_free("127.0.0.1", port)


def test_auto_ports_are_held_until_released_then_free_for_the_instance() -> None:
    hold: list[socket.socket] = []
    ports = allocate_ports("auto", 3, set(), hold)
    try:
        assert len(set(ports)) == 3 and len(hold) == 3
        # while held, no other bind (e.g. the admin server's port 0) can take them
        assert not any(_bindable(p) for p in ports)
        others = []
        for _ in range(50):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            others.append(s)
        try:
            assert not {s.getsockname()[1] for s in others} & set(ports)
        finally:
            for s in others:
                s.close()
    finally:
        for s in hold:
            s.close()
    assert all(_bindable(p) for p in ports)  # released: the instances bind them


def test_without_hold_nothing_stays_bound_and_taken_ports_are_skipped() -> None:
    first = allocate_ports("auto", 2, set())
    assert all(_bindable(p) for p in first)
    again = allocate_ports("auto", 5, set(first))
    assert not set(again) & set(first)


def test_controller_start_releases_every_hold_and_the_instances_run_on_their_ports(tmp_path: Path) -> None:
    spec = demo_spec(count=1, standby=1)  # ports: auto, admin and listener on port 0
    spec["state_dir"] = str(tmp_path / "state")

    async def run() -> list[int]:
        c = Controller(parse_spec(spec))
        await c.start()
        try:
            assert c._port_holds == []
            targets = c.groups["web"].targets
            wait = asyncio.get_running_loop().time() + 15
            while not all(t.health.state is HealthState.HEALTHY for t in targets):
                assert asyncio.get_running_loop().time() < wait, [t.health.state for t in targets]
                await asyncio.sleep(0.05)
            return [t.backend.port for t in targets]
        finally:
            await c.stop()

    ports = asyncio.run(run())
    assert len(set(ports)) == 2
