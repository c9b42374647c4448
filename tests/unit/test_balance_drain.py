"""The drain decision (deregistration delay) and the data plane's group: draining, stickiness."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fivenines.core.drain import DrainState, drain_step
from fivenines.proxy.backend import Backend, BackendGroup, sticky_token


@given(started=st.floats(0, 1e6), delay=st.floats(0, 600), in_flight=st.integers(0, 100),
       elapsed=st.floats(0, 1200))
def test_drain_step(started: float, delay: float, in_flight: int, elapsed: float) -> None:
    now = started + elapsed
    s = drain_step(started, delay, in_flight, now)
    if in_flight == 0:
        assert s.state is DrainState.FINISHED and s.done
    elif now >= started + delay:
        assert s.state is DrainState.TIMED_OUT and s.done and f"{in_flight} in flight cut" in s.reason
    else:
        assert s.state is DrainState.WAITING and not s.done
        assert s.check_again_in is not None and 0 < s.check_again_in <= 0.1 + 1e-9
        assert now + s.check_again_in <= started + delay + 1e-6  # never looks past the deadline


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def group(algorithm: str = "round_robin", **kw: object) -> tuple[BackendGroup, list[Backend]]:
    g = BackendGroup("web", algorithm, **kw)  # type: ignore[arg-type]
    bs = [g.add(Backend(f"web-{i}", "127.0.0.1", 9000 + i)) for i in range(1, 4)]
    g.set_serving([b.id for b in bs])
    return g, bs


def test_draining_target_gets_no_new_requests_and_no_pooled_connections() -> None:
    g, (a, b, c) = group()

    class Conn:
        idle_since = 0.0
        closed = False

        def is_usable(self) -> bool:
            return not self.closed

        def close(self) -> None:
            self.closed = True

    conn = Conn()
    b.put_idle(conn)
    g.set_draining("web-2", True)
    g.set_serving(["web-1", "web-3"])
    assert conn.closed and b.draining and not b.idle
    assert {g.pick() for _ in range(10)} == {a, c}
    b.put_idle(Conn())  # a connection finishing on a draining target is not pooled
    assert not b.idle
    g.set_serving(["web-1", "web-2", "web-3"])  # re-registered and healthy again
    assert not b.draining


def test_sticky_client_keeps_its_target_and_is_rebalanced_when_it_leaves() -> None:
    g, (a, b, c) = group()
    tok = sticky_token("web", "web-2")
    assert all(g.pick(sticky=tok) is b for _ in range(5))
    g.set_serving(["web-1", "web-3"])  # web-2 unhealthy: never sent there
    assert {g.pick(sticky=tok) for _ in range(6)} == {a, c}
    assert g.pick(sticky=sticky_token("web", "web-1"), exclude=[a]) in (b, c)  # a retry skips it
    assert g.pick(sticky=b"garbage") in (a, c)


def test_slow_start_uses_the_groups_clock() -> None:
    clock = Clock()
    g = BackendGroup("web", "round_robin", slow_start=10.0, clock=clock)
    a = g.add(Backend("a", "h", 1))
    b = g.add(Backend("b", "h", 2))
    g.set_serving(["a"])
    clock.t = 100.0
    g.set_serving(["a", "b"])
    assert [g.pick() for _ in range(10)].count(b) == 0
    clock.t = 105.0
    picks = [g.pick() for _ in range(300)]
    assert abs(picks.count(b) / 300 - 1 / 3) < 0.01  # weight 0.5 against 1
    clock.t = 111.0
    picks = [g.pick() for _ in range(300)]
    assert picks.count(a) == picks.count(b) == 150
    assert repr(g) == "<BackendGroup web serving=['a', 'b']>"
