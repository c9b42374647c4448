"""Draining a target (ELB's deregistration delay). Pure: time is an argument.

A target being removed is ``draining``: it gets no new requests or connections
(it has left the serving set), while the ones in flight may finish. Draining ends

* as soon as nothing is in flight on it any more (``finished``), or
* when ``deregistration_delay`` has passed since it began; whatever is still open
  is then cut (``timed_out``), as ELB does.

The runtime asks :func:`drain_step` each time it looks (on a short timer) and
carries out the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class DrainState(str, Enum):
    WAITING = "waiting"
    FINISHED = "finished"
    TIMED_OUT = "timed_out"


@dataclass(frozen=True, slots=True)
class DrainStep:
    state: DrainState
    check_again_in: float | None  # seconds until the next look; None when draining is over
    reason: str

    @property
    def done(self) -> bool:
        return self.state is not DrainState.WAITING


def drain_step(started_at: float, delay: float, in_flight: int, now: float, poll: float = 0.1) -> DrainStep:
    """What to do with a draining target now.

    >>> drain_step(0.0, 30.0, 3, 1.0).state.value, drain_step(0.0, 30.0, 0, 1.0).state.value
    ('waiting', 'finished')
    >>> s = drain_step(0.0, 30.0, 2, 30.0)
    >>> s.state.value, s.reason
    ('timed_out', '2 in flight cut after the 30s deregistration delay')
    """
    if in_flight <= 0:
        return DrainStep(DrainState.FINISHED, None, f"drained in {now - started_at:.1f}s")
    left = started_at + delay - now
    if left <= 0:
        return DrainStep(
            DrainState.TIMED_OUT, None, f"{in_flight} in flight cut after the {delay:g}s deregistration delay"
        )
    return DrainStep(DrainState.WAITING, min(poll, left), f"{in_flight} in flight, {left:.1f}s left")
