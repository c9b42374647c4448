"""The runtime in-process, through its public interface: the tick's readable decisions, and the
commands' refusals (what the admin API turns into 404 / 409 / 400)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fivenines.runtime.controller import Controller
from fivenines.runtime.interface import CommandRefused, Refusal
from fivenines.spec import split_hostport
from tests.helpers import Demo, InProcess, demo_spec, http_get, wait_until


@pytest.fixture
def rt(tmp_path: Path, demos: list[Demo]) -> Iterator[InProcess]:
    decisions: list[str] = []

    def prepare(c: Controller) -> None:
        c.tick_interval = 3600.0  # no tick of its own: the test calls tick() itself
        c.on_decision = decisions.append

    spec = demo_spec("ctl", count=1, standby=1, failover={"hold_time": "1s"}, health_check={
        "path": "/health", "interval": "100ms", "timeout": "80ms", "healthy_threshold": 2,
        "unhealthy_threshold": 2, "startup_grace": "2s"})  # a slow start on a loaded machine does not count
    spec["target_groups"]["static"] = {"targets": [demos[0].address]}
    r = InProcess(tmp_path, spec, prepare=prepare)
    r.decisions = decisions  # type: ignore[attr-defined]
    try:
        wait_until(lambda: [(t["state"], t["role"]) for t in r.status()["target_groups"]["web"]["targets"]]
                   == [("healthy", "active"), ("healthy", "standby")], 15, what="web-1 active, web-2 standby")
        wait_until(lambda: r.status()["uptime_s"] > 2.2, 5, what="startup grace over: failures count")
        yield r
    finally:
        r.close()


def test_tick_returns_the_role_decisions_it_takes_as_readable_strings(rt: InProcess) -> None:
    decisions: list[str] = rt.decisions  # type: ignore[attr-defined]
    assert rt.call(rt.ctl.tick) == []  # all is well: nothing to decide
    web1 = rt.target("web-1")["address"]
    http_get(*split_hostport(web1), "/_fail")
    wait_until(lambda: rt.target("web-2")["role"] == "active", 5, what="web-2 promoted")
    lost = "web-1 unhealthy (Target.ResponseCodeMismatch)"
    assert decisions == [f"demoted active web-1: {lost}", f"promoted standby web-2: replaces {lost}"]  # event driven
    http_get(*split_hostport(web1), "/_recover")
    wait_until(lambda: rt.target("web-1")["state"] == "healthy", 5, what="web-1 healthy again")

    def held() -> tuple[Any, list[str]]:
        return rt.ctl.target_status("web-1")["ready_in_s"], rt.ctl.tick()

    ready_in, now = rt.call(held)
    assert ready_in > 0 and now == []  # healthy, but held down (hysteresis): only time reinstates it
    wait_until(lambda: rt.target("web-1")["ready_in_s"] == 0, 5, what="hold over")
    assert rt.target("web-1")["role"] == "standby"  # nothing but a tick decides it
    now = rt.call(rt.ctl.tick)
    assert len(now) == 2 and re.fullmatch(r"promoted standby web-1: reinstated: ready \d+\.\ds past its hold", now[0])
    assert now[1] == "demoted active web-2: back to standby: web-1 reinstated"
    assert decisions[-2:] == now
    assert rt.status()["target_groups"]["web"]["serving"] == ["web-1"]
    assert rt.call(rt.ctl.tick) == []


def refusal(rt: InProcess, fn: Any, *args: Any) -> tuple[Refusal, str]:
    """How the command ``fn(*args)`` (plain or a coroutine) is refused, on the runtime's loop."""
    async def run() -> tuple[Refusal, str]:
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                await result
        except CommandRefused as exc:
            return exc.why, str(exc)
        raise AssertionError(f"{fn.__name__}{args} was not refused")

    return rt.lt.call(run())  # type: ignore[no-any-return]


def test_commands_refuse_with_a_reason_and_change_nothing(rt: InProcess) -> None:
    ctl = rt.ctl
    assert refusal(rt, ctl.act, "web-9", "drain") == (
        Refusal.UNKNOWN, "no target 'web-9'; targets: web-1, web-2, static-1")
    assert refusal(rt, ctl.target_status, "web-9")[0] is Refusal.UNKNOWN
    assert refusal(rt, ctl.set_weight, "static-1", 1001) == (Refusal.INVALID, "weight must be 0-1000")
    assert refusal(rt, ctl.restart_group, "db") == (Refusal.UNKNOWN, "no target group 'db'; defined: static, web")
    assert refusal(rt, ctl.restart_group, "static") == (
        Refusal.CONFLICT, "static: its targets are not run by fivenines, so it cannot restart them")
    assert refusal(rt, ctl.switchover, "db") == (Refusal.UNKNOWN, "no target group 'db'")
    assert refusal(rt, ctl.switchover, "web") == (Refusal.CONFLICT, "target group 'web' is not replicated")
    assert refusal(rt, ctl.cut_off, "web", "web-1", 1.0) == (Refusal.CONFLICT, "target group 'web' is not replicated")
    st = rt.target("static-1", "static")
    assert st["weight"] == 1 and st["admin_state"] is None

    assert rt.call(ctl.act, "static-1", "maintenance", "test")["admin_state"] == "maintenance"
    assert refusal(rt, ctl.act, "static-1", "drain") == (
        Refusal.CONFLICT, "static-1 is in maintenance: enable it first")
    assert rt.call(ctl.act, "static-1", "enable", "test")["admin_state"] is None
    events = rt.call(lambda: [(e.kind, e.target, e.new) for e in ctl.events.recent(100) if e.kind == "admin"])
    assert events == [("admin", "static-1", "maintenance"), ("admin", "static-1", "enabled")]
