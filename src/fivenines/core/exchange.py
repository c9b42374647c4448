"""The life of one HTTP exchange in the proxy, as a state machine. Pure: no sockets, no clocks.

Everything that decides what happens to a request between its head being parsed and its
answer being complete lives here, and nowhere else: when it is forwarded or answered here,
when a failed attempt is tried again (:mod:`fivenines.core.retry` decides, called from here),
when a hedge races it and which attempt wins, that nothing is retried once a byte reached the
client, that it is answered once, and that every upstream connection an attempt took is given
back. ``proxy/client.py``, ``proxy/forward.py`` and ``proxy/upstream.py`` feed it inputs
(method calls, with ``now`` where time matters) and carry out the actions each call returns;
they decide nothing about the exchange's life themselves.

* **Transitions are data**, in the style of h2's stream machine: :data:`TRANSITIONS` maps
  ``(state, event)`` to ``(actions, next state)``. An event with no entry is a protocol error:
  the exchange moves to ``ERROR`` and :class:`~fivenines.errors.InvalidTransition` is raised
  (``Invalid input {event} in state {old}``); from ``ERROR`` any next input (a failure, a
  timeout, the client's going) ends it as ``ABORTED``, releasing whatever was held and cutting
  the client connection. Adapters need no error path of their own for it.
* **Inputs** (the methods under "inputs" below) turn what happened into one event, with the
  guards that choose it: a failure becomes ``RETRY``, ``GIVE_UP``, ``LOST`` (after a byte
  reached the client) or the loss of one of two racing attempts; a 5xx head becomes a retry
  when the policy allows it. The table then says what is done and where it goes.
* **Actions** are bits (one transition may ask for several: release the attempt, write an
  error reply, finish), carried out by the adapter in the order listed in :data:`ACTIONS`.
* **Attempts are tokens**: each attempt (and each hedge) gets a number; the adapter passes it
  back with everything its upstream connection reports, and a report for an attempt that is
  no longer current (a connection made after its exchange moved on) changes nothing (a
  connection made for it is ``PARK``-ed in the pool).

The hot path (a plain request and response) is five transitions, each a lookup in a flat
list of ints (:data:`_DENSE`, built from :data:`TRANSITIONS` at import): no dict, no
closure, no allocation per event.
"""

from __future__ import annotations

from enum import Enum, IntEnum
from typing import Final, NoReturn

from mypy_extensions import i64

from fivenines.core.heads import STATUS_FOR, local_head
from fivenines.core.retry import Failure, RetryBudget, RetryPolicy, Verdict, may_hedge
from fivenines.errors import InvalidTransition


class ExchangeState(str, Enum):
    QUEUED = "queued"  # head parsed; waiting for its turn (a pipelined request ahead, or its chunked body checked)
    LOCAL = "local"  # as QUEUED, to be answered here (redirect, fixed response, 429, 501)
    PICKING = "picking"  # its turn: a target is being chosen (a first try or a retry)
    CONNECTING = "connecting"  # an attempt's target is chosen; its connection is being made
    WAITING = "waiting"  # the request is on the attempt's connection; no response byte yet
    HEDGING = "hedging"  # as WAITING, with a second attempt (a hedge) to another target connecting
    HEDGED = "hedged"  # as WAITING, with the hedge sent too: the first final head wins
    INTERIM = "interim"  # a 100 Continue reached the client (nothing is retried from here on)
    STREAMING = "streaming"  # the response head reached the client; its body streams
    TUNNEL = "tunnel"  # the target switched protocols: bytes flow both ways
    REPLY_DUE = "reply_due"  # answered here once its body is read (the connection stays usable)
    DISCARDING = "discarding"  # answered; the rest of its body is read and dropped
    DONE = "done"  # answered
    ABORTED = "aborted"  # ended without a whole answer: client gone, response broken midway
    ERROR = "error"  # it got an input it had no rule for: the next input ends it (ABORTED)


class Event(IntEnum):
    """What happened (an input method picks one; the table says what follows)."""

    DISPATCH = 0  # its turn came: forward it
    ANSWER_HERE = 1  # routing answered it here (it waits for its turn as LOCAL)
    REPLY = 2  # answer it here now
    REPLY_LATER = 3  # answer it here once its body is read
    ATTEMPT = 4  # a target was chosen for the next attempt
    READY = 5  # the attempt's connection is at hand (pooled, or just made): upstream connected
    INTERIM = 6  # the target sent 100 Continue
    RESPONSE = 7  # the attempt's final response head (relayed)
    SWITCHED = 8  # the target answered 101 to an upgrade request
    UPSTREAM_BODY = 9  # a piece of the response body
    RESPONSE_DONE = 10  # the response ended (or the tunnel closed)
    ANSWERED_EARLY = 11  # the response ended before the request body did: the rest is dropped
    RETRY = 12  # the attempt failed before any response byte and may be tried again
    GIVE_UP = 13  # no attempt (more): an error reply (502, 504)
    LOST = 14  # the attempt failed after a byte reached the client: nothing can be answered
    HEDGE_DUE = 15  # the hedge delay passed with no response head, and a hedge may go
    HEDGE = 16  # a second target was chosen: race it
    HEDGE_READY = 17  # the hedge's connection is at hand
    HEDGE_WON = 18  # the hedge's final head came first
    HEDGE_LOST = 19  # the hedge failed (or answered 5xx while the attempt is still out)
    PRIMARY_LOST = 20  # the attempt failed (or answered 5xx) while its hedge is out
    BODY_CHUNK = 21  # a piece of the request body
    BODY_DONE = 22  # the request was read whole
    CLIENT_GONE = 23  # the client connection closed
    CANCEL = 24  # the client's input broke the connection: it is dropped unanswered

    def __str__(self) -> str:
        return self.name.lower()


# -- actions (bits), in the order an adapter carries them out --------------------------------------
RELEASE: Final = 1 << 0  # end the attempt: its connection back to the pool or closed, in-flight down
RELEASE_HEDGE: Final = 1 << 1  # end the hedge (its connection closed)
PROMOTE: Final = 1 << 2  # the hedge becomes the attempt; the first attempt ends (closed)
RETRY: Final = 1 << 3  # count a retry; the body goes again from the replay buffer
PICK: Final = 1 << 4  # choose a target (then attempt() or no_target())
CONNECT: Final = 1 << 5  # a connection to the attempt's target, pooled or new (then ready() or failed())
SEND: Final = 1 << 6  # write the request head and the body read so far to the attempt's connection
BUFFER: Final = 1 << 7  # keep the body piece until a connection is ready
WRITE_BODY: Final = 1 << 8  # write the body piece to the attempt's connection
ARM: Final = 1 << 9  # restart the attempt's per-try timeout (the request's last byte is out)
PICK_HEDGE: Final = 1 << 10  # choose a second target (then hedge() if one may take it)
CONNECT_HEDGE: Final = 1 << 11  # a connection for the hedge (then ready() or failed() with its token)
SEND_HEDGE: Final = 1 << 12  # write the whole request (replayed) to the hedge's connection
RELAY_INTERIM: Final = 1 << 13  # relay 100 Continue to the client
RELAY_HEAD: Final = 1 << 14  # relay the response head (a byte reaches the client: no retry after this)
RELAY_BODY: Final = 1 << 15  # relay a piece of the response body
TUNNEL: Final = 1 << 16  # both connections become a byte tunnel
REPLY_LOCAL: Final = 1 << 17  # write the reply made here (``local``, ``local_body``)
REPLY_ERROR: Final = 1 << 18  # write an error reply (``status``)
ANSWERED: Final = 1 << 19  # the answer is whole: count it
FINISH: Final = 1 << 20  # it leaves the connection's queue: the next one starts, or the connection closes
ABORT: Final = 1 << 21  # close the client connection now (an answer broken midway)
PARK: Final = 1 << 22  # (no transition) a connection made for an attempt no longer current: to the pool

ACTIONS: Final = ("release", "release_hedge", "promote", "retry", "pick", "connect", "send", "buffer",
                  "write_body", "arm", "pick_hedge", "connect_hedge", "send_hedge", "relay_interim",
                  "relay_head", "relay_body", "tunnel", "reply_local", "reply_error", "answered", "finish",
                  "abort", "park")
"""Names of the action bits, lowest first."""

# what every answer does once it is written; what giving up does
_ANSWER: Final = ANSWERED | FINISH
_FAIL: Final = REPLY_ERROR | ANSWERED | FINISH


def describe(actions: int) -> str:
    """The action bits by name.

    >>> describe(RELEASE | REPLY_ERROR | ANSWERED | FINISH)
    'release+reply_error+answered+finish'
    """
    return "+".join(n for i, n in enumerate(ACTIONS) if actions >> i & 1) or "-"


S, E = ExchangeState, Event
_NOT_OVER = [s for s in S if s not in (S.DONE, S.ABORTED, S.ERROR)]


def _table() -> dict[tuple[ExchangeState, Event], tuple[int, ExchangeState]]:
    t: dict[tuple[ExchangeState, Event], tuple[int, ExchangeState]] = {
        (S.QUEUED, E.DISPATCH): (PICK, S.PICKING),
        (S.QUEUED, E.ANSWER_HERE): (0, S.LOCAL),
        (S.QUEUED, E.REPLY): (REPLY_LOCAL | _ANSWER, S.DONE),  # its body went over the limit: 413
        (S.QUEUED, E.GIVE_UP): (_FAIL, S.DONE),  # the request deadline passed (its body still coming)
        (S.QUEUED, E.BODY_CHUNK): (BUFFER, S.QUEUED),
        (S.QUEUED, E.BODY_DONE): (0, S.QUEUED),
        (S.LOCAL, E.REPLY): (REPLY_LOCAL | _ANSWER, S.DONE),
        (S.LOCAL, E.REPLY_LATER): (0, S.REPLY_DUE),
        (S.LOCAL, E.GIVE_UP): (_FAIL, S.DONE),  # the request deadline passed first
        (S.LOCAL, E.BODY_CHUNK): (0, S.LOCAL),  # dropped: nobody will read it
        (S.LOCAL, E.BODY_DONE): (0, S.LOCAL),
        (S.PICKING, E.ATTEMPT): (CONNECT, S.CONNECTING),
        (S.PICKING, E.REPLY): (REPLY_LOCAL | _ANSWER, S.DONE),  # no target serves: 503 made here
        (S.PICKING, E.REPLY_LATER): (0, S.REPLY_DUE),
        (S.PICKING, E.GIVE_UP): (_FAIL, S.DONE),  # no target left to retry on
        (S.CONNECTING, E.READY): (SEND, S.WAITING),
        (S.CONNECTING, E.RETRY): (RELEASE | RETRY | PICK, S.PICKING),
        (S.CONNECTING, E.GIVE_UP): (RELEASE | _FAIL, S.DONE),
        (S.CONNECTING, E.REPLY): (RELEASE | REPLY_LOCAL | _ANSWER, S.DONE),  # 413
        (S.CONNECTING, E.BODY_CHUNK): (BUFFER, S.CONNECTING),
        (S.CONNECTING, E.BODY_DONE): (0, S.CONNECTING),
        (S.WAITING, E.INTERIM): (RELAY_INTERIM, S.INTERIM),
        (S.WAITING, E.RESPONSE): (RELAY_HEAD, S.STREAMING),
        (S.WAITING, E.SWITCHED): (RELAY_HEAD | TUNNEL, S.TUNNEL),
        (S.WAITING, E.RETRY): (RELEASE | RETRY | PICK, S.PICKING),
        (S.WAITING, E.GIVE_UP): (RELEASE | _FAIL, S.DONE),
        (S.WAITING, E.REPLY): (RELEASE | REPLY_LOCAL | _ANSWER, S.DONE),  # 413
        (S.WAITING, E.HEDGE_DUE): (PICK_HEDGE, S.WAITING),
        (S.WAITING, E.HEDGE): (CONNECT_HEDGE, S.HEDGING),
        (S.WAITING, E.BODY_CHUNK): (WRITE_BODY, S.WAITING),
        (S.WAITING, E.BODY_DONE): (ARM, S.WAITING),
        # two attempts race (only for a request read whole: no body events)
        (S.HEDGING, E.HEDGE_READY): (SEND_HEDGE, S.HEDGED),
        (S.HEDGING, E.HEDGE_LOST): (RELEASE_HEDGE, S.WAITING),
        (S.HEDGING, E.PRIMARY_LOST): (PROMOTE, S.CONNECTING),
        (S.HEDGING, E.RESPONSE): (RELEASE_HEDGE | RELAY_HEAD, S.STREAMING),
        (S.HEDGING, E.INTERIM): (RELEASE_HEDGE | RELAY_INTERIM, S.INTERIM),
        (S.HEDGING, E.GIVE_UP): (RELEASE | RELEASE_HEDGE | _FAIL, S.DONE),
        (S.HEDGED, E.HEDGE_LOST): (RELEASE_HEDGE, S.WAITING),
        (S.HEDGED, E.PRIMARY_LOST): (PROMOTE, S.WAITING),
        (S.HEDGED, E.RESPONSE): (RELEASE_HEDGE | RELAY_HEAD, S.STREAMING),
        (S.HEDGED, E.HEDGE_WON): (PROMOTE | RELAY_HEAD, S.STREAMING),
        (S.HEDGED, E.INTERIM): (RELEASE_HEDGE | RELAY_INTERIM, S.INTERIM),
        (S.HEDGED, E.GIVE_UP): (RELEASE | RELEASE_HEDGE | _FAIL, S.DONE),
        # a byte reached the client: a failure can only break the connection
        (S.INTERIM, E.RESPONSE): (RELAY_HEAD, S.STREAMING),
        (S.INTERIM, E.SWITCHED): (RELAY_HEAD | TUNNEL, S.TUNNEL),
        (S.INTERIM, E.LOST): (RELEASE | ABORT, S.ABORTED),
        (S.INTERIM, E.BODY_CHUNK): (WRITE_BODY, S.INTERIM),
        (S.INTERIM, E.BODY_DONE): (0, S.INTERIM),
        (S.STREAMING, E.UPSTREAM_BODY): (RELAY_BODY, S.STREAMING),
        (S.STREAMING, E.RESPONSE_DONE): (RELEASE | _ANSWER, S.DONE),
        (S.STREAMING, E.ANSWERED_EARLY): (RELEASE | ANSWERED, S.DISCARDING),
        (S.STREAMING, E.LOST): (RELEASE | ABORT, S.ABORTED),
        (S.STREAMING, E.BODY_CHUNK): (WRITE_BODY, S.STREAMING),  # a target answering as it reads
        (S.STREAMING, E.BODY_DONE): (0, S.STREAMING),
        (S.TUNNEL, E.RESPONSE_DONE): (RELEASE | _ANSWER, S.DONE),
        (S.TUNNEL, E.LOST): (RELEASE | ABORT, S.ABORTED),
        (S.TUNNEL, E.BODY_CHUNK): (WRITE_BODY, S.TUNNEL),
        (S.TUNNEL, E.BODY_DONE): (0, S.TUNNEL),
        (S.REPLY_DUE, E.BODY_DONE): (REPLY_LOCAL | _ANSWER, S.DONE),
        (S.REPLY_DUE, E.BODY_CHUNK): (0, S.REPLY_DUE),  # dropped
        (S.REPLY_DUE, E.REPLY): (REPLY_LOCAL | _ANSWER, S.DONE),  # 413 instead
        (S.REPLY_DUE, E.GIVE_UP): (_FAIL, S.DONE),  # the request deadline passed
        (S.DISCARDING, E.BODY_DONE): (FINISH, S.DONE),  # (counted when answered)
        (S.DISCARDING, E.BODY_CHUNK): (0, S.DISCARDING),
    }
    # After an input it had no rule for, whatever comes next ends it: all released, the client cut.
    for e in E:
        t[(S.ERROR, e)] = (0, S.ERROR) if e in (E.BODY_CHUNK, E.BODY_DONE) else (
            RELEASE | RELEASE_HEDGE | ABORT, S.ABORTED)
    # The client goes away (or breaks the connection): whatever is held is released.
    for s in _NOT_OVER:
        held = (RELEASE if s in _HOLDING else 0) | (RELEASE_HEDGE if s in _RACING else 0)
        t[(s, E.CLIENT_GONE)] = (held, S.ABORTED)
        t[(s, E.CANCEL)] = (held | (ABORT if s in _STARTED else 0), S.ABORTED)
    # An answered or ended exchange: its late body bytes are dropped; the client's going changes nothing.
    for end in (S.DONE, S.ABORTED):
        for e in (E.BODY_CHUNK, E.BODY_DONE, E.CLIENT_GONE, E.CANCEL):
            t[(end, e)] = (0, end)
    return t


_STARTED = (S.INTERIM, S.STREAMING, S.TUNNEL)  # a response byte reached the client; not over
_RACING = (S.HEDGING, S.HEDGED)
_HOLDING = (S.CONNECTING, S.WAITING, *_RACING, *_STARTED)  # an attempt holds a connection (or its making)
_OVER = (S.DISCARDING, S.DONE, S.ABORTED, S.ERROR)

TRANSITIONS: Final = _table()
"""``(state, event) → (actions, next state)``; a pair not here is a protocol error."""

# The table as the hot path reads it: one int per (state, event), ``actions << 9 | next row``
# (-1: no entry), in a flat list (never changed) indexed by ``row + event``, where a state's row is its index
# in ExchangeState times the number of events. Native ints (i64) when compiled: no boxing, no
# overflow checks, a handful of machine instructions per transition.
_STATES: Final = tuple(S)
_N_EVENTS: Final = 25  # len(Event)
_ROW_BITS: Final = 9  # rows go up to len(ExchangeState) * _N_EVENTS


def _row(state: ExchangeState) -> i64:
    return _STATES.index(state) * _N_EVENTS


def _dense() -> list[i64]:
    out: list[i64] = []
    for s in _STATES:
        for e in Event:
            got = TRANSITIONS.get((s, e))
            out.append(-1 if got is None else got[0] << _ROW_BITS | _row(got[1]))
    return out  # (a list: compiled, reading an item of a list of i64 is cheaper than of a tuple)


_DENSE: Final = _dense()
_P_STARTED: Final = 1
_P_RACING: Final = 2
_P_OVER: Final = 4
_P_ANSWERING: Final = 8  # a byte reached the client, or the answer is whole
_ANSWERING = (*_STARTED, S.DISCARDING, S.DONE)
_PROPS: Final = tuple((_P_STARTED if s in _STARTED else 0) | (_P_RACING if s in _RACING else 0)
                      | (_P_OVER if s in _OVER else 0) | (_P_ANSWERING if s in _ANSWERING else 0) for s in _STATES)
_LOCAL: Final = _row(S.LOCAL)
_CONNECTING: Final = _row(S.CONNECTING)
_WAITING: Final = _row(S.WAITING)
_ERROR: Final = _row(S.ERROR)
_INTERIM: Final = _row(S.INTERIM)
_STREAMING: Final = _row(S.STREAMING)
_TOKENS: Final = RELEASE | RELEASE_HEDGE | PROMOTE
assert len(Event) == _N_EVENTS and len(_STATES) * _N_EVENTS <= 1 << _ROW_BITS
assert len(ACTIONS) == PARK.bit_length()


class Exchange:
    """One request on a client connection, and the life of its answer (see the module docstring).

    The request's facts (method, the head to forward, its framing) are set when its head is
    parsed; the rest changes only through the inputs below. Adapters read the fields, never
    write the state."""

    __slots__ = (
        "attempts",
        "body",
        "body_size",
        "buffered",
        "chunked",
        "expect",
        "head",
        "head_only",
        "hedge",
        "hedge_at",
        "hedge_sent_at",
        "idempotent",
        "keep_alive",
        "last_failure",
        "local",
        "local_body",
        "method",
        "primary",
        "replay",
        "request_done",
        "row",
        "sent_at",
        "started",
        "status",
        "tokens",
        "upgrade",
        "verdict",
        "version10",
    )

    def __init__(self, method: bytes, head: bytes, chunked: bool, keep_alive: bool, version10: bool) -> None:
        self.row: i64 = 0  # the state: its row in the table (QUEUED)
        self.method = method
        self.head = head  # the request head as forwarded
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.version10 = version10
        self.head_only = method == b"HEAD"
        self.idempotent = True
        self.upgrade = False
        self.expect = False
        self.request_done = False
        self.local: bytes | None = None  # head of a reply made here, without the blank line
        self.local_body = b""
        self.status = 0  # of the answer
        self.attempts = 0  # attempts made (a stale pooled connection does not count)
        self.last_failure: Failure | None = None
        self.verdict: Verdict | None = None  # the retry policy's last word
        self.body: list[bytes] = []  # encoded body bytes not yet written upstream
        self.buffered = 0  # bytes in body
        self.body_size = 0
        self.replay: list[bytes] | None = []  # every encoded body byte, while replayable
        self.primary: i64 = 0  # token of the attempt (0: none)
        self.hedge: i64 = 0  # token of the hedge racing it (0: none)
        self.tokens: i64 = 0  # tokens given so far
        self.started = 0.0  # when the request began (for the whole-request timeout)
        self.sent_at = 0.0  # when the attempt was sent (passive latency)
        self.hedge_at = 0.0  # when a hedge is due (0: none planned)
        self.hedge_sent_at = 0.0

    def __repr__(self) -> str:
        racing = f" hedge={self.hedge}" if self.hedge else ""
        return (f"<Exchange {self.method.decode('latin-1')} {self.state.value} attempts={self.attempts}"
                f" attempt={self.primary}{racing}>")

    # -- what adapters read ------------------------------------------------------------------------

    @property
    def state(self) -> ExchangeState:
        return _STATES[self.row // _N_EVENTS]

    @property
    def done(self) -> bool:
        """Answered, or ended without an answer: nothing more will be sent for it."""
        return bool(_PROPS[self.row // _N_EVENTS] & _P_OVER)

    @property
    def response_started(self) -> bool:
        """A byte of the answer reached the client (so nothing may be retried)."""
        return bool(_PROPS[self.row // _N_EVENTS] & _P_ANSWERING)

    @property
    def plain_wait(self) -> bool:
        """One attempt waiting for a response head that may be relayed whole, as is."""
        return self.row == _WAITING and not self.head_only and not self.upgrade

    # -- inputs: the request side ------------------------------------------------------------------

    def answer_here(self, head: bytes, body: bytes) -> i64:
        """Routing answered it: a redirect, a fixed response, 429, 501 (sent when its turn comes).
        ``head`` is a status line and header lines, without the blank line."""
        self._set_local(head, body)
        return self._fire(Event.ANSWER_HERE)

    def dispatch(self) -> i64:
        """Its turn came (it is first on its connection, and its head may go)."""
        if self.row == _LOCAL:
            return self._reply_local()
        return self._fire(Event.DISPATCH)

    def body_chunk(self, data: bytes, replay_limit: int) -> i64:
        """A piece of the request body (already encoded for the target)."""
        acts = self._fire(Event.BODY_CHUNK)
        if acts & (BUFFER | WRITE_BODY):
            replay = self.replay
            if replay is not None:
                self.body_size += len(data)
                if self.body_size <= replay_limit:
                    replay.append(data)
                else:
                    self.replay = None
            if acts & BUFFER:
                self.body.append(data)
                self.buffered += len(data)
        return acts

    def body_done(self) -> i64:
        """The request was read whole."""
        self.request_done = True
        return self._fire(Event.BODY_DONE)

    def refuse_body(self, head: bytes, body: bytes) -> i64:
        """Its body went over the limit before a byte of an answer went out: answer that now."""
        self.keep_alive = False
        self.request_done = True
        self._set_local(head, body)
        return self._fire(Event.REPLY)

    def take_body(self) -> list[bytes]:
        """The body read so far, to be written with the head (it is no longer buffered here)."""
        body = self.body
        self.body = []
        self.buffered = 0
        return body

    def close_after(self) -> None:
        """The client connection cannot carry on after this answer (framing, a refused upgrade,
        an error waiting behind it)."""
        self.keep_alive = False

    def client_gone(self) -> i64:
        return self._fire(Event.CLIENT_GONE)

    def cancel(self) -> i64:
        """The client's input broke the connection: this exchange is dropped unanswered."""
        return self._fire(Event.CANCEL)

    def overdue(self, now: float, timeout: float | None) -> bool:
        """Past the whole-request timeout (``started`` and ``now`` on one clock)?"""
        return timeout is not None and timeout > 0 and self.started > 0 and not self.done and now - self.started > timeout

    def deadline(self) -> i64:
        """The whole-request timeout passed: 504, or the connection cut if the answer had begun."""
        return self._give_up(504)

    def cut(self) -> i64:
        """Its target's deregistration delay ran out: 502, or the connection cut if the answer had begun."""
        return self._give_up(502)

    # -- inputs: attempts --------------------------------------------------------------------------

    def attempt(self, now: float) -> i64:
        """A target was chosen for the next attempt; its token is then ``primary``."""
        self.attempts += 1
        self.sent_at = now
        self.tokens += 1
        self.primary = self.tokens
        return self._fire(Event.ATTEMPT)

    def no_target(self) -> i64:
        """No target may take it: the last failure's error, or 503 when nothing was tried."""
        if self.last_failure is not None:
            return self._fail_reply(STATUS_FOR[self.last_failure])
        self._set_local(local_head(503), b"Service Unavailable\n")
        return self._reply_local()

    def ready(self, token: i64, hedge_delay: float = 0.0) -> i64:
        """The connection for attempt ``token`` is at hand. Plans a hedge ``hedge_delay`` after the
        attempt began (``hedge_at``) when one may go."""
        if token == self.primary and token:
            acts = self._fire(Event.READY)
            if hedge_delay > 0 and self.idempotent and not self.upgrade:
                self.hedge_at = self.sent_at + hedge_delay
            return acts
        if token == self.hedge and token:
            return self._fire(Event.HEDGE_READY)
        return PARK

    def interim(self, token: i64) -> i64:
        """The target of ``token`` sent 100 Continue: relayed once, by the attempt, to an HTTP/1.1 client."""
        if token != self.primary or not token or self.version10 or self.row == _INTERIM:
            return 0
        return self._fire(Event.INTERIM)

    def response_head(self, token: i64, status: int, policy: RetryPolicy | None, budget: RetryBudget | None) -> i64:
        """A final response head from ``token``'s target (not a 101). ``policy`` decides whether a 5xx
        is tried again (None: it is not; a head below 500 never reads it)."""
        self.verdict = None
        if token == self.primary and token:
            if status >= 500:
                props = _PROPS[self.row // _N_EVENTS]
                if props & _P_RACING:
                    return self._fire(Event.PRIMARY_LOST)  # the hedge carries on
                if (not props & _P_STARTED and policy is not None
                        and self._decide(Failure.STATUS, policy, budget) is Verdict.RETRY):
                    self.last_failure = Failure.STATUS
                    return self._retry()
            self.status = status
            return self._fire(Event.RESPONSE)
        if token == self.hedge and token:
            if status >= 500:
                return self._fire(Event.HEDGE_LOST)
            self.status = status
            return self._fire(Event.HEDGE_WON)
        return 0

    def switched(self, token: i64) -> i64:
        """``token``'s target answered 101 to this upgrade request."""
        if token != self.primary or not token:
            return 0
        self.status = 101
        return self._fire(Event.SWITCHED)

    def upstream_body(self, token: i64) -> i64:
        if token != self.primary or not token:
            return 0
        return self._fire(Event.UPSTREAM_BODY)

    def response_done(self, token: i64, closing: bool) -> i64:
        """``token``'s response ended (or its tunnel closed). ``closing``: the client connection is."""
        if token != self.primary or not token:
            return 0
        if self.row == _STREAMING and not self.request_done and self.keep_alive and not closing and not self.upgrade:
            return self._fire(Event.ANSWERED_EARLY)  # answered before its body ended: the rest is read and dropped
        if not self.request_done:
            self.keep_alive = False
        return self._fire(Event.RESPONSE_DONE)

    def failed(self, token: i64, failure: Failure, policy: RetryPolicy, budget: RetryBudget | None) -> i64:
        """Attempt ``token`` failed (connect error, reset, per-try timeout, bad response)."""
        self.verdict = None
        settled = self._loss(token, Event.LOST)
        if settled >= 0:
            return settled
        if failure is Failure.STALE:
            self.attempts -= 1  # a pooled connection the target had closed: not an attempt
        else:
            self.last_failure = failure
        if self._decide(failure, policy, budget).retry:
            return self._retry()
        return self._fail_reply(STATUS_FOR[failure])

    def rescue(self, token: i64, policy: RetryPolicy) -> i64:
        """Attempt ``token``'s target was just ejected as hung or slow: retried now when its per-try
        timeout would allow it (not charged to the budget), else nothing changes (0)."""
        self.verdict = None
        settled = self._loss(token, -1)
        if settled >= 0:
            return settled
        if not self.idempotent or not self._decide(Failure.TIMEOUT, policy, None).retry:
            return 0
        self.last_failure = Failure.TIMEOUT
        return self._retry()

    def hedge_due(self, waiting: bool) -> i64:
        """The hedge delay passed. ``waiting``: the attempt has no response byte yet."""
        self.hedge_at = 0.0
        if self.row != _WAITING or not may_hedge(
                idempotent=self.idempotent, replayable=self.replay is not None, request_done=self.request_done,
                upgrade=self.upgrade, response_started=False, waiting=waiting):
            return 0
        return self._fire(Event.HEDGE_DUE)

    def race(self, now: float) -> i64:
        """A second target was chosen (and the budget paid): the hedge's token is then ``hedge``."""
        self.tokens += 1
        self.hedge = self.tokens
        self.hedge_sent_at = now
        return self._fire(Event.HEDGE)

    # -- machinery ---------------------------------------------------------------------------------

    def fire(self, event: Event) -> i64:
        """Feed ``event`` as it is, with no guard (the table's own tests; adapters use the inputs above)."""
        return self._fire(event)

    def _loss(self, token: i64, if_started: i64) -> i64:
        """The loss of attempt ``token`` where no retry is to be decided: the hedge's; the attempt's
        while its hedge races (the hedge carries on) or once a byte reached the client (the event
        ``if_started``; -1: nothing happens); an attempt that is over (nothing happens). -1: the
        caller decides (the one attempt, nothing sent to the client yet)."""
        if token == self.hedge and token:
            return self._fire(Event.HEDGE_LOST)
        if token != self.primary or not token:
            return 0
        props = _PROPS[self.row // _N_EVENTS]
        if props & _P_STARTED:
            return self._fire(if_started) if if_started >= 0 else 0
        if props & _P_RACING:
            return self._fire(Event.PRIMARY_LOST)
        return -1

    def _decide(self, failure: Failure, policy: RetryPolicy, budget: RetryBudget | None) -> Verdict:
        v = self.verdict = policy.decide(
            failure, attempts_made=self.attempts, replayable=self.replay is not None,
            response_started=self.response_started, idempotent=self.idempotent, budget=budget)
        return v

    def _retry(self) -> i64:
        acts = self._fire(Event.RETRY)
        replay = self.replay
        assert replay is not None  # (the verdict said replayable)
        self.body = list(replay)
        self.buffered = self.body_size
        return acts

    def _give_up(self, status: int) -> i64:
        if _PROPS[self.row // _N_EVENTS] & _P_STARTED:
            return self._fire(Event.LOST)
        self.replay = None  # no retry past this
        return self._fail_reply(status)

    def _fail_reply(self, status: int) -> i64:
        self.status = status
        if not self.request_done or self.upgrade:
            self.keep_alive = False  # the rest of its body (or tunnel bytes) may still come: close after
        return self._fire(Event.GIVE_UP)

    def _set_local(self, head: bytes, body: bytes) -> None:
        self.local = head
        self.local_body = body
        self.status = int(head[9:12])

    def _reply_local(self) -> i64:
        """Answer it here: at once, or once its body is read (so the connection stays usable;
        not for a client waiting for 100 Continue, nor an upgrade, which then close)."""
        if not self.request_done and not self.expect and not self.upgrade:
            return self._fire(Event.REPLY_LATER)
        if not self.request_done or self.upgrade:
            self.keep_alive = False  # the rest of its body (or tunnel bytes) may still come
        return self._fire(Event.REPLY)

    def _fire(self, event: i64) -> i64:
        t = _DENSE[self.row + event]
        if t < 0:
            self._invalid(event)
        self.row = t & ((1 << _ROW_BITS) - 1)
        acts = t >> _ROW_BITS
        if acts & _TOKENS:
            if acts & PROMOTE:
                self.primary = self.hedge
                self.hedge = 0
                self.sent_at = self.hedge_sent_at
                if self.row == _CONNECTING:  # the hedge was not sent yet: it sends the whole request
                    replay = self.replay
                    if replay is not None:
                        self.body = list(replay)
                        self.buffered = self.body_size
            else:
                if acts & RELEASE:
                    self.primary = 0
                    self.hedge_at = 0.0
                if acts & RELEASE_HEDGE:
                    self.hedge = 0
        return acts

    def _invalid(self, event: i64) -> NoReturn:
        old = self.state
        self.row = _ERROR
        raise InvalidTransition(f"Invalid input {Event(event)} in state {old.value}")
