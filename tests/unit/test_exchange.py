"""The HTTP exchange's state machine (core/exchange.py): the table exhaustively, its inputs by
property, driven the way the proxy's adapters drive them (a model of proxy/client.py and
proxy/upstream.py that tracks connections, not sockets)."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.core.exchange import (
    ABORT,
    ACTIONS,
    ANSWERED,
    CONNECT,
    CONNECT_HEDGE,
    FINISH,
    PARK,
    PICK,
    PICK_HEDGE,
    PROMOTE,
    RELAY_HEAD,
    RELAY_INTERIM,
    RELEASE,
    RELEASE_HEDGE,
    REPLY_ERROR,
    REPLY_LOCAL,
    RETRY,
    SEND,
    SEND_HEDGE,
    TRANSITIONS,
    TUNNEL,
    Event,
    Exchange,
    ExchangeState,
    describe,
)
from fivenines.core.retry import Failure, RetryBudget, RetryPolicy
from fivenines.errors import InvalidTransition

S, E = ExchangeState, Event
ANSWERS = RELAY_HEAD | REPLY_LOCAL | REPLY_ERROR  # the one answer an exchange gets
TO_CLIENT = ANSWERS | RELAY_INTERIM  # a byte reaches the client
OVER = (S.DONE, S.ABORTED)


def at(state: ExchangeState) -> Exchange:
    ex = Exchange(b"GET", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", False, True, False)
    ex.row = list(S).index(state) * len(E)
    return ex


# ---------------------------------------------------------------- the table, exhaustively


def test_every_state_and_event_is_a_transition_or_a_defined_error() -> None:
    """Every (state, event): the table's actions and next state, or InvalidTransition and ERROR."""
    for state, event in itertools.product(S, E):
        ex = at(state)
        rule = TRANSITIONS.get((state, event))
        if rule is None:
            with pytest.raises(InvalidTransition, match=f"^Invalid input {event} in state {state.value}$"):
                ex.fire(event)
            assert ex.state is S.ERROR, (state, event)
        else:
            assert ex.fire(event) == rule[0], (state, event)
            assert ex.state is rule[1], (state, event)


def test_after_an_error_any_input_ends_the_exchange_releasing_everything() -> None:
    for event in E:
        nxt = TRANSITIONS[(S.ERROR, event)]
        if event in (E.BODY_CHUNK, E.BODY_DONE):
            assert nxt == (0, S.ERROR)
        else:
            assert nxt == (RELEASE | RELEASE_HEDGE | ABORT, S.ABORTED)


def test_the_client_going_away_is_defined_everywhere_and_releases_what_is_held() -> None:
    holding = {S.CONNECTING, S.WAITING, S.HEDGING, S.HEDGED, S.INTERIM, S.STREAMING, S.TUNNEL}
    for state in S:
        acts, nxt = TRANSITIONS[(state, E.CLIENT_GONE)]
        assert nxt in OVER
        if state in holding:
            assert acts & RELEASE
        if state in (S.HEDGING, S.HEDGED):
            assert acts & RELEASE_HEDGE


def _paths() -> set[tuple[ExchangeState, bool, bool, bool, bool]]:
    """Every (state, a byte reached the client, answered, attempt held, hedge held) reachable from
    QUEUED by any sequence of events (no guard: a superset of what the inputs can do), checking on
    each step the three properties the table alone must guarantee."""
    start = (S.QUEUED, False, False, False, False)
    seen = {start}
    todo = deque([start])
    while todo:
        state, reached, answered, held, hedge = todo.popleft()
        for event in E:
            rule = TRANSITIONS.get((state, event))
            acts, nxt = rule if rule is not None else (0, S.ERROR)
            where = f"{state.value} --{event}--> {nxt.value} [{describe(acts)}]"
            assert not (acts & RETRY and reached), f"retry after a byte reached the client: {where}"
            assert not (acts & ANSWERS and answered), f"a second answer: {where}"
            h, g = held, hedge
            if acts & RELEASE:
                h = False
            if acts & RELEASE_HEDGE:
                g = False
            if acts & PROMOTE:
                assert g, f"promoting no hedge: {where}"
                h, g = True, False
            if acts & CONNECT:
                assert not h, f"a second connection for the attempt (the first leaks): {where}"
                h = True
            if acts & CONNECT_HEDGE:
                assert h and not g, f"a hedge without an attempt, or a second one: {where}"
                g = True
            if nxt in OVER:
                assert not h and not g, f"ended holding a connection: {where}"
            key = (nxt, reached or bool(acts & TO_CLIENT), answered or bool(acts & ANSWERS), h, g)
            if key not in seen:
                seen.add(key)
                todo.append(key)
    return seen


def test_no_event_sequence_retries_after_a_byte_answers_twice_or_leaks_a_connection() -> None:
    reachable = _paths()
    states = {s for s, *_ in reachable}
    assert states == set(S)  # every state is reachable
    # a byte reached the client on some paths to each of these, and they still end cleanly
    assert {s for s, reached, *_ in reachable if reached} >= {S.INTERIM, S.STREAMING, S.TUNNEL, S.DONE}


def test_the_hot_path_is_five_transitions() -> None:
    ex = Exchange(b"GET", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", False, True, False)
    ex.request_done = True
    policy = RetryPolicy()
    steps = [ex.dispatch(), ex.attempt(1.0), ex.ready(ex.primary), ex.response_head(ex.primary, 200, policy, None)]
    steps.append(ex.response_done(ex.primary, False))
    assert [describe(a) for a in steps] == ["pick", "connect", "send", "relay_head", "release+answered+finish"]
    assert ex.state is S.DONE and ex.primary == 0 and ex.status == 200
    assert repr(ex) == "<Exchange GET done attempts=1 attempt=0>"


def test_describe_names_every_action() -> None:
    assert describe(0) == "-"
    assert describe((1 << len(ACTIONS)) - 1) == "+".join(ACTIONS)


# ---------------------------------------------------------------- the inputs, scenario by scenario

POLICY = RetryPolicy(attempts=2)


def started(method: bytes = b"GET", request_done: bool = True) -> Exchange:
    ex = Exchange(method, method + b" / HTTP/1.1\r\nHost: h\r\n\r\n", False, True, False)
    ex.idempotent = method != b"POST"
    ex.request_done = request_done
    assert ex.dispatch() == PICK and ex.attempt(0.0) == CONNECT
    return ex


def test_a_connect_failure_is_retried_for_any_method_then_the_last_failure_answers() -> None:
    ex = started(b"POST")
    first = ex.primary
    assert ex.failed(first, Failure.CONNECT, POLICY, None) == RELEASE | RETRY | PICK
    assert ex.state is S.PICKING and ex.attempt(1.0) == CONNECT and ex.primary != first
    assert ex.ready(first) == PARK  # the first attempt's late connection goes to the pool
    assert ex.failed(ex.primary, Failure.CONNECT, POLICY, None) == RELEASE | REPLY_ERROR | ANSWERED | FINISH
    assert ex.status == 502 and ex.verdict is not None and ex.verdict.value == "attempts_exhausted"


def test_a_5xx_is_retried_for_an_idempotent_request_only_and_within_the_budget() -> None:
    ex = started()
    assert ex.ready(ex.primary) == SEND
    assert ex.response_head(ex.primary, 503, POLICY, None) == RELEASE | RETRY | PICK
    post = started(b"POST")
    post.ready(post.primary)
    assert post.response_head(post.primary, 503, POLICY, None) == RELAY_HEAD  # relayed as it is
    spent = RetryBudget(20, reserve=0)
    ex = started()
    ex.ready(ex.primary)
    assert ex.response_head(ex.primary, 503, POLICY, spent) == RELAY_HEAD
    assert ex.verdict is not None and ex.verdict.value == "budget_exhausted"


def test_nothing_is_retried_once_100_continue_reached_the_client() -> None:
    ex = started(request_done=False)
    ex.ready(ex.primary)
    assert ex.interim(ex.primary) == RELAY_INTERIM
    assert ex.interim(ex.primary) == 0  # relayed once
    assert ex.failed(ex.primary, Failure.RESET, POLICY, None) == RELEASE | ABORT
    assert ex.state is S.ABORTED


def test_a_stale_pooled_connection_is_tried_again_without_counting_an_attempt() -> None:
    ex = started()
    ex.ready(ex.primary)
    assert ex.failed(ex.primary, Failure.STALE, RetryPolicy(attempts=1), None) == RELEASE | RETRY | PICK
    assert ex.attempts == 0 and ex.last_failure is None


def test_a_hedge_races_and_the_first_final_head_wins() -> None:
    ex = started()
    assert ex.ready(ex.primary, hedge_delay=0.5) == SEND and ex.hedge_at == 0.5
    assert ex.hedge_due(waiting=True) == PICK_HEDGE
    assert ex.race(0.5) == CONNECT_HEDGE and ex.state is S.HEDGING
    assert ex.ready(ex.hedge) == SEND_HEDGE and ex.state is S.HEDGED
    first, hedge = ex.primary, ex.hedge
    assert ex.response_head(first, 500, POLICY, None) == PROMOTE  # a 5xx while the other is out: dropped
    assert ex.primary == hedge and ex.hedge == 0 and ex.sent_at == 0.5 and ex.state is S.WAITING
    assert ex.response_head(first, 200, POLICY, None) == 0  # the dropped attempt says nothing more
    assert ex.response_head(hedge, 200, POLICY, None) == RELAY_HEAD


def test_a_first_attempt_lost_while_its_hedge_connects_hands_the_whole_request_over() -> None:
    ex = started(b"PUT")
    ex.body_chunk(b"x" * 10, 100)  # (buffered: no connection yet)
    ex.ready(ex.primary, hedge_delay=0.1)
    assert ex.take_body() == [b"x" * 10]
    ex.hedge_due(waiting=True)
    ex.race(0.1)
    assert ex.failed(ex.primary, Failure.RESET, POLICY, None) == PROMOTE
    assert ex.state is S.CONNECTING and ex.body == [b"x" * 10]  # sent when the hedge's connection comes
    assert ex.ready(ex.primary) == SEND


def test_no_hedge_for_a_request_not_read_whole_or_not_idempotent() -> None:
    ex = started(request_done=False)
    ex.ready(ex.primary, hedge_delay=0.1)
    assert ex.hedge_due(waiting=True) == 0
    post = started(b"POST")
    post.ready(post.primary, hedge_delay=0.1)
    assert post.hedge_at == 0.0 and post.hedge_due(waiting=True) == 0


def test_a_reply_made_here_waits_for_the_body_unless_the_client_waits_for_100_continue() -> None:
    ex = Exchange(b"POST", b"", False, True, False)
    assert ex.answer_here(b"HTTP/1.1 302 Found\r\nLocation: /x\r\n", b"") == 0 and ex.state is S.LOCAL
    assert ex.body_chunk(b"abc", 100) == 0  # dropped
    assert ex.dispatch() == 0 and ex.state is S.REPLY_DUE
    assert ex.body_done() == REPLY_LOCAL | ANSWERED | FINISH and ex.status == 302 and ex.keep_alive
    waiting = Exchange(b"POST", b"", False, True, False)
    waiting.expect = True
    waiting.answer_here(b"HTTP/1.1 302 Found\r\n", b"")
    assert waiting.dispatch() == REPLY_LOCAL | ANSWERED | FINISH and not waiting.keep_alive


def test_an_answer_before_the_body_ended_drops_the_rest_and_keeps_the_connection() -> None:
    ex = started(request_done=False)
    ex.ready(ex.primary)
    ex.response_head(ex.primary, 413, POLICY, None)
    assert ex.response_done(ex.primary, closing=False) == RELEASE | ANSWERED and ex.state is S.DISCARDING
    assert ex.body_chunk(b"more", 100) == 0 and ex.body_done() == FINISH and ex.keep_alive


def test_the_request_deadline_answers_504_or_cuts_an_answer_begun() -> None:
    ex = started()
    ex.ready(ex.primary)
    assert ex.deadline() == RELEASE | REPLY_ERROR | ANSWERED | FINISH and ex.status == 504
    ex = started()
    ex.ready(ex.primary)
    ex.response_head(ex.primary, 200, POLICY, None)
    assert ex.deadline() == RELEASE | ABORT
    assert not ex.overdue(100.0, 1.0)  # over: never overdue


def test_an_ejected_targets_attempt_is_moved_when_a_per_try_timeout_would_move_it() -> None:
    ex = started()
    ex.ready(ex.primary)
    assert ex.rescue(ex.primary, POLICY) == RELEASE | RETRY | PICK
    post = started(b"POST")
    post.ready(post.primary)
    assert post.rescue(post.primary, POLICY) == 0 and post.state is S.WAITING


def test_an_upgrade_becomes_a_tunnel_that_ends_the_exchange_when_it_closes() -> None:
    ex = started()
    ex.upgrade = True
    ex.ready(ex.primary)
    assert ex.switched(ex.primary) == RELAY_HEAD | TUNNEL and ex.state is S.TUNNEL
    assert ex.response_done(ex.primary, closing=True) == RELEASE | ANSWERED | FINISH


def test_an_invalid_input_raises_then_the_next_input_releases_and_ends() -> None:
    ex = started()
    with pytest.raises(InvalidTransition, match="Invalid input dispatch in state connecting"):
        ex.dispatch()
    assert ex.state is S.ERROR and ex.done
    assert ex.client_gone() == RELEASE | RELEASE_HEDGE | ABORT and ex.state is S.ABORTED


# ---------------------------------------------------------------- the inputs, by property


# kinds of input, the way on first (Hypothesis draws and shrinks toward the start of a list)
KINDS = ["dispatch", "ready", "head200", "body", "done", "body_chunk", "body_done", "hedge_due", "interim", "switched",
         "head503", "rescue", "refuse_body", "failed", "connect_failed"]
ENDINGS = ["deadline", "cut", "cancel", "client_gone"]


def _kind(label: str) -> int:
    kind = label.split("(")[0]
    return KINDS.index(kind) if kind in KINDS else len(KINDS)


class Chooser(Protocol):
    def input(self, sc: Scenario, options: list[str], endings: list[str]) -> str: ...

    def free(self, sc: Scenario, what: str) -> bool: ...


class Scenario:
    """One exchange driven as the adapters drive it, each next input chosen by ``chooser``: what
    the adapters would feed (a connection came, a head, a failure, body bytes, a timeout...), only
    when they could (a report only from a connection carrying the exchange, and so on). The
    properties are checked after every input (:meth:`feed`) and once it is over (:meth:`run`)."""

    def __init__(self, f: dict[str, Any], chooser: Chooser) -> None:
        self.f = f
        self.chooser = chooser
        self.ex = ex = Exchange(f["method"], b"", False, f["keep_alive"], f["version10"])
        ex.idempotent = f["method"] != b"POST"
        ex.request_done, ex.expect, ex.upgrade = f["request_done"], f["expect"], f["upgrade"]
        self.policy = RetryPolicy(attempts=f["attempts"])
        self.budget = RetryBudget(20, reserve=f["reserve"])
        self.log: list[str] = []
        self.primary = 0  # the attempt's token while the exchange holds a connection (or its making) for it
        self.hedge = 0
        self.connecting: set[int] = set()  # connections being made, by token (they outlive their attempt)
        self.attached: set[int] = set()  # connections carrying the request
        self.headed: set[int] = set()  # ... that relayed a final head (101 included)
        self.interim: set[int] = set()
        self.parked = 0  # connections made for an attempt already over: to the pool
        self.to_client = False
        self.answers = 0
        self.finished = 0
        self.gone = False
        self.dispatched = False
        self.now = 0.0

    def key(self, where: str) -> tuple[Any, ...]:
        """Everything the rest of a run depends on (the exhaustive search visits each once)."""
        ex = self.ex
        return (where, ex.row, ex.primary, ex.hedge, ex.tokens, ex.attempts, ex.request_done, ex.keep_alive,
                ex.replay is None, ex.hedge_at > 0, ex.last_failure, round(self.budget.tokens, 6), bool(ex.body),
                frozenset(self.connecting), frozenset(self.attached), frozenset(self.headed),
                frozenset(self.interim), self.to_client, self.answers, self.finished, self.gone, self.dispatched)

    def feed(self, what: str, fn: Callable[[], int]) -> int:
        acts = fn()
        ex = self.ex
        self.log.append(f"{what} -> {describe(acts)} -> {ex.state.value}")
        trail = "\n  ".join(self.log)
        assert ex.state is not S.ERROR, f"an input the machine had no rule for:\n  {trail}"
        assert not (acts & RETRY and self.to_client), f"retry after a byte reached the client:\n  {trail}"
        if acts & ANSWERS:
            assert self.answers == 0, f"a second answer:\n  {trail}"
            self.answers += 1
        if acts & TO_CLIENT:
            self.to_client = True
        if acts & RELEASE:
            self.attached.discard(self.primary)  # (a connection still being made is parked when it comes)
            self.primary = 0
        if acts & RELEASE_HEDGE:
            self.attached.discard(self.hedge)
            self.hedge = 0
        if acts & PROMOTE:
            self.attached.discard(self.primary)
            self.primary, self.hedge = self.hedge, 0
        if acts & CONNECT:
            assert self.primary == 0, f"a second connection for the attempt (the first leaks):\n  {trail}"
            self.primary = ex.primary
            self.connecting.add(ex.primary)
        if acts & CONNECT_HEDGE:
            assert self.hedge == 0, f"a second hedge:\n  {trail}"
            self.hedge = ex.hedge
            self.connecting.add(ex.hedge)
        if acts & FINISH:
            self.finished += 1
            assert self.finished == 1 and self.answers == 1, f"finished twice or unanswered:\n  {trail}"
        if acts & REPLY_ERROR:
            assert ex.status in (502, 503, 504), trail
        assert (self.primary, self.hedge) == (ex.primary, ex.hedge), f"tokens out of step:\n  {trail}"
        if ex.state in OVER or ex.state is S.DISCARDING:
            assert self.primary == self.hedge == 0, f"over, still holding a connection:\n  {trail}"
        if ex.state is S.DONE:
            assert self.answers == 1, f"done without one answer:\n  {trail}"
        if acts & PICK:
            if self.chooser.free(self, "a target is free"):
                self.feed("attempt", lambda: ex.attempt(self.now))
            else:
                self.feed("no_target", ex.no_target)
        if acts & PICK_HEDGE and self.chooser.free(self, "a hedge target is free"):
            self.feed("race", lambda: ex.race(self.now))
        return acts

    def connected(self, token: int) -> None:
        self.connecting.discard(token)
        acts = self.feed(f"ready({token})", lambda: self.ex.ready(token, self.f["hedge_delay"]))
        if acts & PARK:
            self.parked += 1
        elif acts & (SEND | SEND_HEDGE):
            self.attached.add(token)
        else:
            raise AssertionError(f"a connection neither used nor parked: {self.log}")

    def inputs(self) -> tuple[dict[str, Callable[[], Any]], dict[str, Callable[[], Any]]]:
        """What may come next: what moves the exchange on, and what ends it early."""
        ex, policy, budget = self.ex, self.policy, self.budget
        options: dict[str, Callable[[], Any]] = {}
        endings: dict[str, Callable[[], Any]] = {}

        def relayed(t: int, acts: int) -> None:
            if acts & (RELAY_HEAD | TUNNEL):
                self.headed.add(t)

        for t in sorted(self.connecting):
            options[f"ready({t})"] = lambda t=t: self.connected(t)
            options[f"connect_failed({t})"] = lambda t=t: (self.connecting.discard(t), self.feed(
                f"failed({t}, connect)", lambda: ex.failed(t, Failure.CONNECT, policy, budget)))
        for t in sorted(self.attached):
            if t not in self.headed:
                for status in (200, 503):
                    options[f"head{status}({t})"] = lambda t=t, status=status: relayed(t, self.feed(
                        f"head({t}, {status})", lambda: ex.response_head(t, status, policy, budget)))
                if t not in self.interim:
                    options[f"interim({t})"] = lambda t=t: (self.interim.add(t), self.feed(
                        f"interim({t})", lambda: ex.interim(t)))
                if ex.upgrade:
                    options[f"switched({t})"] = lambda t=t: relayed(t, self.feed(
                        f"switched({t})", lambda: ex.switched(t)))
                options[f"rescue({t})"] = lambda t=t: self.feed(f"rescue({t})", lambda: ex.rescue(t, policy))
            else:
                if ex.state is not S.TUNNEL:
                    options[f"body({t})"] = lambda t=t: self.feed(f"upstream_body({t})", lambda: ex.upstream_body(t))
                options[f"done({t})"] = lambda t=t: self.feed(f"response_done({t})", lambda: ex.response_done(t, False))
            for failure in (Failure.RESET, Failure.TIMEOUT, Failure.STALE):
                options[f"failed({t}, {failure.value})"] = lambda t=t, failure=failure: self.feed(
                    f"failed({t}, {failure.value})", lambda: ex.failed(t, failure, policy, budget))
        if not self.gone and not ex.request_done:  # the parser reads on, answered or not
            options["body_chunk"] = lambda: self.feed(
                "body_chunk", lambda: ex.body_chunk(b"abc", self.f["replay_limit"]))
            options["body_done"] = lambda: self.feed("body_done", ex.body_done)
            if not ex.done and not ex.response_started and (self.dispatched or ex.local is not None):
                options["refuse_body"] = lambda: self.feed("refuse_body", lambda: ex.refuse_body(
                    b"HTTP/1.1 413 Content Too Large\r\n", b""))
        if not self.gone and not ex.done:
            if not self.dispatched:
                options["dispatch"] = lambda: (setattr(self, "dispatched", True), self.feed("dispatch", ex.dispatch))
            if ex.hedge_at and ex.primary in self.attached:
                options["hedge_due"] = lambda: self.feed(
                    "hedge_due", lambda: ex.hedge_due(ex.primary not in self.headed))
            if ex.state is not S.TUNNEL:  # (a tunnel has its own idle timeout)
                endings["deadline"] = lambda: self.feed("deadline", ex.deadline)
            if ex.primary:
                endings["cut"] = lambda: self.feed("cut", ex.cut)
            endings["cancel"] = lambda: self.feed("cancel", ex.cancel)
        if not self.gone:
            endings["client_gone"] = lambda: (setattr(self, "gone", True), self.feed("client_gone", ex.client_gone))
        return options, endings

    def run(self, steps: int) -> None:
        ex = self.ex
        if self.f["local"]:
            self.feed("answer_here", lambda: ex.answer_here(b"HTTP/1.1 301 Moved\r\nLocation: /\r\n", b""))
        for _ in range(steps):
            self.now += 0.25
            options, endings = self.inputs()
            if not options and not endings:
                break
            order = sorted(options, key=lambda k: (_kind(k), k))
            label = self.chooser.input(self, order, sorted(endings))
            (options.get(label) or endings[label])()
        if ex.state in OVER:
            for t in sorted(self.connecting):  # connections still being made come, and go to the pool
                self.connected(t)
            assert not self.attached, f"a connection still carries an exchange that is over: {self.log}"


facts = st.fixed_dictionaries({
    "method": st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD"]),
    "request_done": st.booleans(),
    "expect": st.booleans(),
    "upgrade": st.booleans(),
    "version10": st.booleans(),
    "keep_alive": st.booleans(),
    "local": st.booleans(),
    "attempts": st.integers(1, 3),
    "reserve": st.integers(0, 2),
    "hedge_delay": st.sampled_from([0.0, 0.5]),
    "replay_limit": st.sampled_from([0, 1 << 20]),
})


class Drawn:
    """Hypothesis chooses (swarm testing: each example leaves some kinds of input out, so that
    rarer paths get their turn; an early ending one time in ten)."""

    def __init__(self, data: Any) -> None:
        self.data = data
        self.off = {k for k, on in zip(KINDS, data.draw(st.lists(st.booleans(), min_size=len(KINDS),
                                                                  max_size=len(KINDS)), label="kinds on"),
                                       strict=True) if not on}

    def input(self, sc: Scenario, options: list[str], endings: list[str]) -> str:
        kept = [o for o in options if o.split("(")[0] not in self.off] or options
        if not kept or (endings and self.data.draw(st.sampled_from([False] * 9 + [True]), label="end early?")):
            kept = endings
        return self.data.draw(st.sampled_from(kept), label="input")  # type: ignore[no-any-return]

    def free(self, sc: Scenario, what: str) -> bool:
        return self.data.draw(st.sampled_from([True, True, True, False]), label=what)  # type: ignore[no-any-return]


@settings(max_examples=500, deadline=None)
@given(facts, st.data())
def test_no_input_sequence_retries_after_a_byte_answers_twice_or_leaks_a_connection(
        f: dict[str, Any], data: Any) -> None:
    Scenario(f, Drawn(data)).run(40)


class _Frontier(Exception):
    def __init__(self, n: int, key: tuple[Any, ...]) -> None:
        self.n, self.key = n, key


class Replay:
    """Follows a prefix of choices; at the first choice past it, reports how many there are."""

    def __init__(self, prefix: list[int]) -> None:
        self.prefix = prefix
        self.i = 0

    def _choose(self, sc: Scenario, where: str, n: int) -> int:
        if self.i < len(self.prefix):
            self.i += 1
            return self.prefix[self.i - 1]
        raise _Frontier(n, sc.key(where))

    def input(self, sc: Scenario, options: list[str], endings: list[str]) -> str:
        every = options + endings
        return every[self._choose(sc, "input", len(every))]

    def free(self, sc: Scenario, what: str) -> bool:
        return self._choose(sc, what, 2) == 0


PROFILES = {  # the facts of the exchanges searched exhaustively, each for what it exercises
    "GET read whole, hedged, 2 attempts": dict(method=b"GET", request_done=True, hedge_delay=0.5),
    "GET with a body still coming": dict(method=b"GET", request_done=False),
    "POST with a body still coming, 1 attempt": dict(method=b"POST", request_done=False, attempts=1),
    "an upgrade": dict(method=b"GET", request_done=True, upgrade=True),
    "an upgrade with bytes still coming": dict(method=b"GET", request_done=False, upgrade=True),
    "answered here, body coming": dict(method=b"POST", request_done=False, local=True),
    "answered here, Expect: 100-continue": dict(method=b"POST", request_done=False, local=True, expect=True),
    "HTTP/1.0, closing": dict(method=b"PUT", request_done=False, version10=True, keep_alive=False),
    "hedged, body not replayable": dict(method=b"PUT", request_done=False, hedge_delay=0.5, replay_limit=0),
}
DEFAULTS: dict[str, Any] = dict(request_done=True, expect=False, upgrade=False, version10=False, keep_alive=True,
                                local=False, attempts=2, reserve=1, hedge_delay=0.0, replay_limit=1 << 20)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_input_sequence_up_to_a_depth_keeps_the_properties(profile: str) -> None:
    """The same properties over every sequence of inputs (to 12 choices, each state once)."""
    f = {**DEFAULTS, **PROFILES[profile]}
    seen: set[tuple[Any, ...]] = set()
    stack: list[list[int]] = [[]]
    runs = 0
    while stack:
        prefix = stack.pop()
        runs += 1
        try:
            Scenario(f, Replay(prefix)).run(60)
        except _Frontier as frontier:
            if frontier.key not in seen and len(prefix) < 12:
                seen.add(frontier.key)
                stack.extend([*prefix, i] for i in range(frontier.n))
    assert runs >= 20  # (the search ran)
