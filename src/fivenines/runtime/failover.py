"""Failover state the controller keeps per target group, built from the spec. Thin: decisions are in core.

* :func:`make_judge`: a target's health machine and its failure detector
  (:mod:`fivenines.core.detect`), from ``health_check``;
* :class:`GroupFailover`: the group's passive outlier detector, flap history
  (hysteresis hold times), fail-open policy and current rolling restart.
"""

from __future__ import annotations

from fivenines.core.detect import (
    Detector,
    HealthJudge,
    OutlierDetector,
    PhiAccrualDetector,
    ThresholdDetector,
    outlier_policy,
)
from fivenines.core.health import TargetHealth
from fivenines.core.pool import FailOpen, FlapHistory, ServingSet
from fivenines.core.rollout import RollingRestart, RolloutPolicy
from fivenines.spec import HealthCheckSpec, TargetGroupSpec


def make_detector(hc: HealthCheckSpec) -> Detector:
    d = hc.detector
    if d.kind == "phi_accrual":
        return PhiAccrualDetector(
            d.phi_threshold,
            window=d.window,
            min_std_dev=d.min_std_dev if d.min_std_dev is not None else hc.interval / 10,
            acceptable_pause=d.acceptable_pause,
            first_interval=hc.interval,
            fallback_misses=hc.unhealthy_threshold,
        )
    return ThresholdDetector(hc.unhealthy_threshold)


def make_judge(hc: HealthCheckSpec, now: float) -> HealthJudge:
    return HealthJudge(TargetHealth(hc.healthy_threshold, 1, since=now), make_detector(hc))


def rollout_policy(tg: TargetGroupSpec, active_count: int) -> RolloutPolicy:
    hc = tg.health_check
    inst = tg.instances
    # Long enough for a slow starter to pass its checks, never unbounded.
    check_timeout = hc.startup_grace + (hc.healthy_threshold + hc.unhealthy_threshold + 2) * hc.interval + 30.0
    return RolloutPolicy(
        active_count=active_count,
        deregistration_delay=tg.deregistration_delay,
        slow_start=tg.slow_start,
        stop_timeout=inst.stop_timeout if inst else 5.0,
        check_timeout=check_timeout,
        cover_timeout=check_timeout,
    )


class GroupFailover:
    """A group's passive detection, hysteresis and rollout state."""

    def __init__(self, tg: TargetGroupSpec, size: int, active_count: int) -> None:
        policy = outlier_policy(tg)
        self.outliers: OutlierDetector | None = OutlierDetector(size, policy) if policy else None
        fo = tg.failover
        self.flaps = FlapHistory(fo.hold_time, fo.flap_window, fo.max_hold_down)
        self.fail_open = FailOpen(tg.fail_open)
        self.serving = ServingSet([], False, self.fail_open)
        self.rollout: RollingRestart | None = None
        self.rollout_policy = rollout_policy(tg, active_count)

    def __repr__(self) -> str:
        return f"<GroupFailover {self.outliers!r} serving={self.serving} rollout={self.rollout!r}>"
