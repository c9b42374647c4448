"""One target group's availability: the pool chain, common cause, switchover and detection. Pure.

A group's unavailability is made of four parts, each a different way to lose
requests (all times in seconds, rates per second):

``capacity``
    fewer than ``required`` members work, from independent failures
    (:class:`~fivenines.model.pool.Pool`, the N+M birth-death chain);
``switchover``
    a failure was not handled automatically (probability ``1 - coverage``)
    and the group waits for a person (``manual_recovery``);
``common_cause``
    a failure that hit every member at once (share ``common_cause_beta`` of the
    failures; counted only when the group has spare members, since without them
    every failure is already an outage);
``detection``
    a serving member failed, the group is still up, but the load balancer has not
    noticed yet: ``lam x detection_time x exposure`` of the requests.

They are combined in series (``1 - prod(1 - u)``). The first three are shares of
time; the detection part is a share of requests, so the result is the share of
requests that fail with traffic spread evenly over time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fivenines.model.blocks import (
    UnavailabilityFigures,
    _check_probability,
    _check_rate,
    series_unavailability,
)
from fivenines.model.detection import detection_loss
from fivenines.model.pool import Pool, StandbyMode, common_cause_split

PARTS = ("capacity", "switchover", "common_cause", "detection")


@dataclass(frozen=True, slots=True)
class GroupParams:
    """Everything the model needs to know of one N+M group, in seconds.

    >>> p = GroupParams(active=2, standby=1, mtbf=30 * 86400, mttr=5.0, detection_time=2.5)
    >>> r = evaluate_group(p)
    >>> r.dominant, f"{r.unavailability:.3g}"
    ('detection', '9.65e-07')
    """

    active: int
    standby: int = 0
    mtbf: float = 30 * 86400.0
    mttr: float = 5.0
    repair_crews: int | None = None
    standby_mode: StandbyMode = StandbyMode.HOT
    standby_failure_ratio: float = 0.5
    coverage: float = 1.0
    manual_recovery: float = 3600.0
    common_cause_beta: float = 0.0
    detection_time: float = 0.0
    exposure: float = 1.0
    required: int | None = None

    def __post_init__(self) -> None:
        _check_rate("mtbf", self.mtbf, positive=True)
        _check_rate("mttr", self.mttr, positive=True)
        _check_rate("manual_recovery", self.manual_recovery, positive=True)
        _check_rate("detection_time", self.detection_time)
        _check_probability("common_cause_beta", self.common_cause_beta)
        _check_probability("exposure", self.exposure)
        object.__setattr__(self, "standby_mode", StandbyMode(self.standby_mode))
        self.pool(0.0)  # validates the rest

    @property
    def total(self) -> int:
        return self.active + self.standby

    @property
    def needed(self) -> int:
        return self.active if self.required is None else self.required

    @property
    def redundant(self) -> bool:
        return self.total > self.needed

    def rates(self) -> tuple[float, float]:
        """(independent, common-cause) failure rate of one member, per second."""
        lam = 1.0 / self.mtbf
        if not self.redundant:
            return lam, 0.0
        return common_cause_split(lam, self.common_cause_beta)

    def pool(self, lam: float) -> Pool:
        return Pool(
            active=self.active,
            standby=self.standby,
            lam=lam,
            mu=1.0 / self.mttr,
            repair_crews=self.repair_crews,
            standby_mode=self.standby_mode,
            standby_failure_ratio=self.standby_failure_ratio,
            coverage=self.coverage,
            recovery=1.0 / self.manual_recovery,
            required=self.required,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "standby": self.standby,
            "required": self.needed,
            "mtbf_s": self.mtbf,
            "mttr_s": self.mttr,
            "repair_crews": self.repair_crews,
            "standby_mode": self.standby_mode.value,
            "standby_failure_ratio": self.standby_failure_ratio,
            "coverage": self.coverage,
            "manual_recovery_s": self.manual_recovery,
            "common_cause_beta": self.common_cause_beta,
            "detection_time_s": self.detection_time,
            "exposure": self.exposure,
        }


@dataclass(frozen=True, slots=True)
class PartResult(UnavailabilityFigures):
    """Predicted unavailability of one part of the layout, split by cause."""

    contributions: dict[str, float]
    notes: tuple[str, ...] = field(default=())

    @property
    def unavailability(self) -> float:
        return series_unavailability(self.contributions.values())

    @property
    def dominant(self) -> str:
        """The cause with the largest share of the unavailability (first in :data:`PARTS` order on ties)."""
        return max(self.contributions, key=lambda k: self.contributions[k])

    def __repr__(self) -> str:
        return f"<PartResult A={self.availability:.9f} nines={self.nines:.2f} dominant={self.dominant}>"


def evaluate_group(p: GroupParams) -> PartResult:
    """Split a group's unavailability into capacity, switchover, common-cause and detection parts.

    >>> r = evaluate_group(GroupParams(active=1, mtbf=100.0, mttr=5.0))
    >>> round(r.availability, 3), r.contributions["detection"]
    (0.952, 0.0)
    """
    lam_ind, lam_cc = p.rates()
    dist = p.pool(lam_ind).distribution()
    mu = 1.0 / p.mttr
    common = lam_cc / (lam_cc + mu) if lam_cc > 0 else 0.0
    # Only a covered failure of a serving member that leaves the group up costs a
    # detection window on top; the other failures are outages, counted already.
    detection = p.coverage * dist.room * detection_loss(lam_ind, p.detection_time, p.exposure)
    return PartResult(
        {
            "capacity": dist.capacity,
            "switchover": dist.switchover,
            "common_cause": common,
            "detection": detection,
        }
    )


def evaluate_unit(mtbf: float, mttr: float) -> PartResult:
    """One non-redundant unit (e.g. the load balancer): ``mttr / (mtbf + mttr)``.

    >>> round(evaluate_unit(100.0, 5.0).availability, 3)
    0.952
    """
    _check_rate("mtbf", mtbf, positive=True)
    _check_rate("mttr", mttr)
    return PartResult({"outage": mttr / (mtbf + mttr)})


def combine(parts: dict[str, PartResult]) -> float:
    """Unavailability of parts in series: every part is needed.

    >>> f"{combine({'a': evaluate_unit(1e6, 1.0), 'b': evaluate_unit(1e6, 2.0)}):.4g}"
    '3e-06'
    """
    return series_unavailability(p.unavailability for p in parts.values())
