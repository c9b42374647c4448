"""Measured values into the model, predicted next to measured. Pure.

A chaos run measures, for the group under load, the repair time (MTTR), the
detection time, the failover time, and the client cost of each fault. They go
into :func:`fivenines.model.layout.predict` as overrides
(:class:`~fivenines.model.layout.Override`):

* mean repair time → ``mttr``;
* mean detection time → ``detection_time``;
* measured **exposure** → ``exposure``: the failed requests over the requests
  the load sent to failed, not yet detected members (``rate / serving x
  detection time`` per fault). The run's *coverage* (share of faults that cost no
  failed request) is reported beside it; ``1 - coverage`` is a cruder estimate of
  the same thing, which the model docs mention.

Four predictions come out:

* **this run, as declared**: the spec's own parameters (health-check detection
  bound, default exposure 1), with the run's fault rate as ``mtbf``;
* **this run, measured parameters**: the same with the measured overrides; next
  to it, the measured request availability;
* **production, as declared** (what ``fivenines model`` prints) and
  **production, measured parameters** (the spec's ``mtbf``, measured repair,
  detection and exposure): the nines to expect, which a 2-minute run cannot
  measure directly.

For the run's conditions, the group's per-member ``mtbf`` is ``serving members x
run length / faults`` (chaos hits only serving members, so standbys are modelled
``cold``), and the load balancer and the other groups are modelled as never
failing unless ``lb`` faults were injected (then the load balancer's ``mtbf`` is
the run's ``lb`` fault rate, and its measured ``mttr`` the requests those faults
cost over the rate: with several workers a worker's death is an outage only for
the requests it took down). When faults were injected one at a
time (the default), no two members were ever down together by injection: the
run's chain is then evaluated with repairs that finish before the next failure
(``mttr`` of a microsecond), so the ``capacity`` part, which needs overlapping
failures, vanishes from the run's prediction and only what one fault at a time
costs (detection window, switchover) remains. The measured MTTR still goes into
the production prediction, where failures are independent.

With the direct exposure estimate, the run's prediction with measured values
reproduces the measured loss by construction (``lam x T_detect x exposure`` is
the failed share): that row checks the bookkeeping. The informative ones are the
measured parameters themselves, the run as declared (what the spec alone
predicts, e.g. without knowing that retries save most requests), and production.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fivenines.chaos.stats import Mean, Proportion, format_availability
from fivenines.chaos.takeover import Changes, ClusterFault, measure_fault
from fivenines.chaos.timeline import FaultResult, Injected
from fivenines.model.blocks import nines_of_unavailability
from fivenines.model.cluster_layout import ClusterOverride
from fivenines.model.layout import (
    DEFAULT_LB_MTTR,
    Override,
    Prediction,
    group_params,
    health_detection_time,
    predict,
)
from fivenines.spec import Spec

NEVER = 1e15  # seconds: an mtbf that makes a part's unavailability vanish
NO_OVERLAP_MTTR = 1e-6  # seconds: repairs done before the next failure arrives
CLUSTER_FAULTS = ("node", "partition")  # with lb on a cluster: faults of a node, measured by the VIP's takeover


@dataclass(frozen=True, slots=True)
class ClusterMeasurement:
    """The faults of a run on a cluster, each measured by the VIP's takeover and what clients saw,
    beside the model's takeover bound (:func:`fivenines.model.cluster_layout.cluster_layout`)."""

    mode: str
    faults: tuple[ClusterFault, ...]
    predicted_takeover: float
    takeover_why: str
    two_holders: int
    requests: int  # scheduled in the whole run

    @property
    def takeover(self) -> Mean:
        return Mean(tuple(t for f in self.faults if (t := f.takeover_s) is not None))

    @property
    def gap(self) -> Mean:
        return Mean(tuple(g for f in self.faults if (g := f.longest_gap_s) is not None))

    @property
    def failed_requests(self) -> int:
        return sum(f.failed_requests for f in self.faults)

    def unavailability(self, run_seconds: float, *, declared: bool) -> float:
        """The run's share of requests lost to these faults: declared, every request during each
        predicted takeover fails (exposure 1); measured, the failed requests over those sent.

        >>> m = ClusterMeasurement("etcd", (), 2.6, "", 0, 1000)
        >>> m.unavailability(100.0, declared=True), m.unavailability(100.0, declared=False)
        (0.0, 0.0)
        """
        if declared:
            return min(1.0, len(self.faults) * self.predicted_takeover / run_seconds) if run_seconds > 0 else 0.0
        return self.failed_requests / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "predicted_takeover_s": self.predicted_takeover, "takeover_bound": self.takeover_why,
                "takeover_s": self.takeover.to_json(), "longest_gap_s": self.gap.to_json(),
                "failed_requests": self.failed_requests, "two_holder_samples": self.two_holders,
                "faults": [f.to_json() for f in self.faults]}


def is_cluster_fault(kind: str, clustered: bool) -> bool:
    """``node`` and ``partition``, and ``lb`` on a cluster (the VIP holder's balancer), hit a node.

    >>> is_cluster_fault("lb", True), is_cluster_fault("lb", False), is_cluster_fault("kill", True)
    (True, False, False)
    """
    return kind in CLUSTER_FAULTS or (clustered and kind == "lb")


def measure_cluster(spec: Spec, mode: str, faults: Sequence[Injected], changes: Changes, ok_times: Sequence[float],
                    failure_times: Sequence[float], end: float, requests: int,
                    two_holders: int = 0) -> ClusterMeasurement:
    """Every node fault injected, charged with what happened until the next one (or ``end``)."""
    real = sorted((f for f in faults if f.skipped is None and is_cluster_fault(f.kind, True)), key=lambda f: f.at)
    measured = tuple(
        measure_fault(f.id, f.kind, f.target, f.at, real[i + 1].at if i + 1 < len(real) else end, changes,
                      ok_times, failure_times, f.repaired_at)
        for i, f in enumerate(real))
    cp = predict(spec).cluster
    assert cp is not None, "measure_cluster needs a spec with cluster:"
    return ClusterMeasurement(mode, measured, cp.params.takeover_time, cp.takeover_why, two_holders, requests)


@dataclass(frozen=True, slots=True)
class GroupMeasurement:
    group: str
    faults: int
    detection: Mean
    failover: Mean
    repair: Mean
    coverage: Proportion
    failed_requests: int
    exposed_requests: float

    @property
    def exposure(self) -> float | None:
        """Failed requests over requests sent to failed, undetected members (None: nothing was exposed)."""
        if self.exposed_requests <= 0:
            return None
        return min(1.0, self.failed_requests / self.exposed_requests)

    def overrides(self) -> Override:
        o: Override = {}
        if self.repair.mean is not None:
            o["mttr"] = max(self.repair.mean, 1e-3)
        if self.detection.mean is not None:
            o["detection_time"] = self.detection.mean
        if self.exposure is not None:
            o["exposure"] = self.exposure
        return o

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "faults": self.faults,
            "detection_s": self.detection.to_json(),
            "failover_s": self.failover.to_json(),
            "repair_s": self.repair.to_json(),
            "coverage": self.coverage.to_json(),
            "failed_requests": self.failed_requests,
            "exposed_requests": round(self.exposed_requests, 2),
            "exposure": self.exposure,
        }


def measure_group(results: Sequence[FaultResult], group: str) -> GroupMeasurement:
    """Aggregate the faults injected into ``group``'s targets (``lb`` and skipped faults left out).

    >>> from fivenines.chaos.timeline import Injected
    >>> r = FaultResult(Injected(1, "kill", 10.0, "web", "web-1"), True, 10.5, 10.5, 10.5, 13.0, 0, None, None, 125.0)
    >>> m = measure_group([r], "web")
    >>> m.repair.mean, m.detection.mean, m.exposure, str(m.coverage)
    (3.0, 0.5, 0.0, '1/1 = 100% [95% CI 20.6549%, 100%]')
    """
    rs = [r for r in results if r.fault.group == group and r.fault.skipped is None
          and r.fault.kind != "lb" and not is_cluster_fault(r.fault.kind, False)]

    def vals(xs: Sequence[float | None]) -> Mean:
        return Mean(tuple(x for x in xs if x is not None))

    return GroupMeasurement(
        group,
        len(rs),
        vals([r.detection_s for r in rs]),
        vals([r.failover_s for r in rs]),
        vals([r.repair_s for r in rs]),
        Proportion(sum(1 for r in rs if r.covered), len(rs)),
        sum(r.failed_requests for r in rs),
        sum(r.exposed_requests for r in rs),
    )


def _finite(x: float) -> float | None:
    return None if x == float("inf") else x


@dataclass(frozen=True)
class Comparison:
    group: str
    measured: GroupMeasurement
    run_mtbf: float
    serialised: bool
    run_declared: Prediction
    run_measured: Prediction
    production_declared: Prediction
    production_measured: Prediction
    measured_availability: Proportion
    declared_detection: float
    declared_mttr: float
    lb_mtbf: float | None
    cluster: ClusterMeasurement | None = None
    run_seconds: float = 0.0

    @property
    def run_declared_availability(self) -> float:
        """The run's prediction; on a cluster, times the share of requests the node faults' predicted
        takeovers leave."""
        u = self.cluster.unavailability(self.run_seconds, declared=True) if self.cluster else 0.0
        return self.run_declared.availability * (1.0 - u)

    @property
    def run_measured_availability(self) -> float:
        u = self.cluster.unavailability(self.run_seconds, declared=False) if self.cluster else 0.0
        return self.run_measured.availability * (1.0 - u)

    def rows(self) -> list[dict[str, Any]]:
        """The predicted-vs-measured table: quantity, model as declared, model with measured values, measured."""
        m = self.measured
        av = self.measured_availability

        pct = format_availability

        def sec(x: float | None) -> str:
            return "-" if x is None else f"{x:.3f} s"

        def mean_ci(mean: Mean) -> str:
            if mean.mean is None:
                return "- (none)"
            ci = mean.interval
            return f"{mean.mean:.3f} s" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "") + f" (n={mean.n})"

        u_run = 1.0 - av.value if av.value is not None else None
        over = m.overrides()
        c = self.cluster
        cluster_rows = [] if c is None else [
            {"quantity": f"VIP takeover time ({c.mode})", "declared": sec(c.predicted_takeover),
             "with_measured": sec(c.takeover.mean), "measured": mean_ci(c.takeover)},
            {"quantity": "longest client gap per node fault", "declared": sec(c.predicted_takeover),
             "with_measured": "-", "measured": mean_ci(c.gap)},
            {"quantity": "failed requests in node faults",
             "declared": f"{c.unavailability(self.run_seconds, declared=True) * c.requests:.0f} (every request "
                         f"in a takeover)", "with_measured": "-", "measured": str(c.failed_requests)},
        ]
        return [
            *cluster_rows,
            {"quantity": "detection time", "declared": sec(self.declared_detection),
             "with_measured": sec(over.get("detection_time")), "measured": mean_ci(m.detection)},
            {"quantity": "failover time", "declared": sec(self.declared_detection),
             "with_measured": "-", "measured": mean_ci(m.failover)},
            {"quantity": "repair time (MTTR)", "declared": sec(self.declared_mttr),
             "with_measured": sec(over.get("mttr")), "measured": mean_ci(m.repair)},
            {"quantity": "exposure (failed / requests to failed members)", "declared": "1 (assumed)",
             "with_measured": "-" if m.exposure is None else f"{m.exposure:.4f}",
             "measured": f"{m.failed_requests} / {m.exposed_requests:.0f}"},
            {"quantity": "coverage (faults with no failed request)", "declared": "-", "with_measured": "-",
             "measured": str(m.coverage)},
            {"quantity": "availability during this run", "declared": pct(self.run_declared_availability),
             "with_measured": pct(self.run_measured_availability), "measured": str(av)},
            {"quantity": "nines during this run",
             "declared": f"{nines_of_unavailability(1 - self.run_declared_availability):.2f}",
             "with_measured": f"{nines_of_unavailability(1 - self.run_measured_availability):.2f}",
             "measured": "-" if u_run is None else f"{nines_of_unavailability(u_run):.2f}"},
            {"quantity": f"{self.group} availability in production (spec mtbf)",
             "declared": pct(self.production_declared.groups[self.group].availability),
             "with_measured": pct(self.production_measured.groups[self.group].availability),
             "measured": "- (not measurable in one run)"},
            {"quantity": "availability in production (spec mtbf)",
             "declared": pct(self.production_declared.availability),
             "with_measured": pct(self.production_measured.availability), "measured": "- (not measurable in one run)"},
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "availability": self.run_measured_availability,
            "nines": _finite(nines_of_unavailability(1 - self.run_measured_availability)),
            "basis": "the model with the run's fault rate and the measured mttr, detection time and exposure",
            "group": self.group,
            "run_mtbf_per_member_s": self.run_mtbf,
            "load_balancer_mtbf_s": self.lb_mtbf,
            "serialised": self.serialised,
            "serialised_note": ("faults were injected one at a time, so the run's chain has repairs done before "
                                "the next failure (no capacity loss); the measured mttr is used for production"
                                if self.serialised else None),
            "overrides": dict(self.measured.overrides()),
            "declared": {"availability": self.run_declared_availability,
                         "nines": _finite(nines_of_unavailability(1 - self.run_declared_availability))},
            "run_model": self.run_measured.to_json(),
            "production": {"declared": _short(self.production_declared),
                           "with_measured": _short(self.production_measured)},
            "table": self.rows(),
            "cluster": None if self.cluster is None else {
                "predicted_takeover_s": self.cluster.predicted_takeover,
                "measured_takeover_s": self.cluster.takeover.mean,
                "basis": "declared: every request during each predicted takeover fails; measured: the failed "
                         "requests of the node faults over the requests sent"},
        }


def _short(p: Prediction) -> dict[str, Any]:
    return {"availability": p.availability, "nines": _finite(p.nines), "downtime_per_year_s": p.downtime_per_year_s,
            "dominant": p.dominant}


def compare(
    spec: Spec,
    group: str,
    results: Sequence[FaultResult],
    run_seconds: float,
    measured_availability: Proportion,
    *,
    rate: float,
    serialised: bool = True,
    cluster: ClusterMeasurement | None = None,
) -> Comparison:
    """Predicted vs measured for ``group`` (the group the load went to) over a run of ``run_seconds``
    at ``rate`` requests/s; on a cluster, with its node faults (``cluster``) and the measured takeover
    in the production prediction."""
    m = measure_group(results, group)
    tg = spec.target_groups[group]
    params, _ = group_params(group, tg)
    active = params.active
    run_mtbf = active * run_seconds / m.faults if m.faults else NEVER
    lb_results = [r for r in results if r.fault.kind == "lb" and r.fault.skipped is None and cluster is None]
    lb_declared: Override = {"mtbf": NEVER, "mttr": 1.0}
    lb_measured: Override = {"mtbf": NEVER, "mttr": 1.0}
    lb_mtbf = None
    if lb_results:
        # A worker's death is an outage of the load balancer only for the requests it cost:
        # its measured "mttr" is the request-equivalent outage, lost requests / rate.
        lb_mtbf = run_seconds / len(lb_results)
        rel = spec.load_balancer.reliability if spec.load_balancer is not None else None
        declared_mttr = rel.mttr if rel is not None and rel.mttr is not None else DEFAULT_LB_MTTR
        lost = sum(r.failed_requests for r in lb_results)
        lb_declared = {"mtbf": lb_mtbf, "mttr": declared_mttr}
        lb_measured = {"mtbf": lb_mtbf, "mttr": max(NO_OVERLAP_MTTR, lost / (len(lb_results) * rate))}
    others: dict[str, Override] = {g: {"mtbf": NEVER} for g in spec.target_groups if g != group}
    run_base: Override = {"mtbf": run_mtbf, "standby_mode": "cold"}
    measured = m.overrides()
    run_measured: Override = {**run_base, **measured}
    if serialised:
        run_base["mttr"] = run_measured["mttr"] = NO_OVERLAP_MTTR
    # a cluster's hosts fail in the run only by the node faults injected (counted beside, in ``cluster``)
    run_nodes: ClusterOverride | None = {"node_mtbf": NEVER} if spec.cluster is not None else None
    return Comparison(
        group=group,
        measured=m,
        run_mtbf=run_mtbf,
        serialised=serialised,
        run_declared=predict(spec, {**others, group: run_base}, load_balancer=lb_declared, cluster=run_nodes),
        run_measured=predict(spec, {**others, group: run_measured}, load_balancer=lb_measured, cluster=run_nodes),
        production_declared=predict(spec),
        production_measured=predict(spec, {group: measured}, cluster=(
            {"takeover_time": cluster.takeover.mean} if cluster and cluster.takeover.mean is not None else None)),
        measured_availability=measured_availability,
        declared_detection=health_detection_time(tg.health_check),
        declared_mttr=params.mttr,
        lb_mtbf=lb_mtbf,
        cluster=cluster,
        run_seconds=run_seconds,
    )
