"""From a spec to a prediction: which numbers ``fivenines model`` puts into which formula. Pure.

:func:`predict` reads the declared layout (N active + M standby per target group,
the health check, the restart backoff, the optional ``reliability:`` sections and
``slo:``), fills in documented defaults where the spec says nothing, and returns a
:class:`Prediction`. Measured values (from ``fivenines chaos``) replace declared or
assumed ones through ``overrides``:

>>> from fivenines.spec import parse_spec
>>> spec = parse_spec({
...     "name": "shop",
...     "listeners": [{"port": 0, "default_target_group": "web"}],
...     "target_groups": {"web": {"instances": {"command": ["srv"], "count": 2, "standby": 1}}},
... })
>>> p = predict(spec)
>>> p.groups["web"].params.detection_time, p.groups["web"].params.mttr
(2.5, 5.0)
>>> measured = predict(spec, {"web": {"mttr": 3.0, "detection_time": 0.8}})
>>> measured.groups["web"].nines > p.groups["web"].nines
True

Defaults, when the spec has no ``reliability:``:

* instances fivenines supervises: ``mtbf`` 30 days; ``mttr`` = detection time +
  the first restart delay + ``healthy_threshold x interval`` (the process is
  restarted at once and must pass its checks before it serves again);
* ``targets:`` fivenines does not run: ``mtbf`` 30 days, ``mttr`` 1 hour (someone
  else has to repair them);
* the load balancer: ``mtbf`` 30 days, ``mttr`` 1 minute (restarted by a service
  manager such as systemd, then its instances come up);
* unlimited repair crews, hot standby, coverage 1, no common cause, manual
  recovery 1 hour;
* detection time from the health check: ``interval x unhealthy_threshold + timeout``.

Each default used is listed in :attr:`Prediction.assumptions`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from fivenines.model.blocks import (
    UnavailabilityFigures,
    downtime_per_month,
    downtime_per_year,
    nines_of_unavailability,
    series_unavailability,
)
from fivenines.model.capacity import LoadInput, LoadPrediction, describe_load, predict_load
from fivenines.model.cluster import ClusterResult, evaluate_cluster
from fivenines.model.cluster_layout import ClusterOverride, ClusterPrediction, cluster_layout
from fivenines.model.detection import detection_time
from fivenines.model.group import GroupParams, PartResult, evaluate_group, evaluate_unit
from fivenines.model.pool import StandbyMode
from fivenines.spec import HealthCheckSpec, Spec, TargetGroupSpec

DEFAULT_MTBF = 30 * 86400.0
DEFAULT_TARGETS_MTTR = 3600.0
DEFAULT_LB_MTBF = 30 * 86400.0
DEFAULT_LB_MTTR = 60.0
DEFAULT_WARM_RATIO = 0.5
LOAD_BALANCER = "load_balancer"


class Override(TypedDict, total=False):
    """Values that replace the declared or assumed ones for one group, e.g. measured by chaos.

    Times in seconds. ``coverage`` is the share of failures handled automatically
    (an uncovered one waits ``manual_recovery``); ``exposure`` is the share of
    requests sent to a failed, not yet detected member that fail at the client (a
    chaos run measures it as its failed requests over the requests it sent to
    failed members before they were detected); ``detection_time`` is how long a
    failed member kept getting traffic.
    For the load balancer only ``mtbf`` and ``mttr`` apply.
    """

    mtbf: float
    mttr: float
    repair_crews: int | None
    standby_mode: str
    standby_failure_ratio: float
    coverage: float
    manual_recovery: float
    common_cause_beta: float
    detection_time: float
    exposure: float
    required: int | None


_OVERRIDE_KEYS = frozenset(Override.__annotations__)


@dataclass(frozen=True, slots=True)
class GroupPrediction:
    name: str
    params: GroupParams
    result: PartResult
    assumptions: tuple[str, ...]
    load: LoadPrediction | None = None  # with a load: section: instances needed, availability at min and max

    @property
    def unavailability(self) -> float:
        return self.result.unavailability

    @property
    def availability(self) -> float:
        return self.result.availability

    @property
    def nines(self) -> float:
        return self.result.nines

    def to_json(self) -> dict[str, Any]:
        return {**_summary(self.result), "params": self.params.to_json(),
                "load": self.load.to_json() if self.load is not None else None}


@dataclass(frozen=True, slots=True)
class UnitPrediction:
    mtbf: float
    mttr: float
    result: PartResult
    assumptions: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {**_summary(self.result), "params": {"mtbf_s": self.mtbf, "mttr_s": self.mttr}}


@dataclass(frozen=True, slots=True)
class SloCheck:
    target: float  # percent
    window: float  # seconds
    unavailability: float

    @property
    def objective(self) -> float:
        return self.target / 100.0

    @property
    def meets(self) -> bool:
        return 1.0 - self.unavailability >= self.objective

    @property
    def budget_use(self) -> float:
        """Share of the error budget the predicted unavailability would spend."""
        return self.unavailability / (1.0 - self.objective)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "window_s": self.window,
            "meets": self.meets,
            "budget_use": self.budget_use,
            "allowed_downtime_per_window_s": (1.0 - self.objective) * self.window,
            "expected_downtime_per_window_s": self.unavailability * self.window,
        }


@dataclass(frozen=True, slots=True)
class Prediction(UnavailabilityFigures):
    """Predicted availability of a whole layout: the load balancer in series with every group.

    With a ``cluster:``, ``load_balancer.result`` is the balancer tier (the nodes behind the
    VIP) and the whole is computed over the node states (:mod:`fivenines.model.cluster`).
    """

    groups: dict[str, GroupPrediction]
    load_balancer: UnitPrediction
    slo: SloCheck | None = None
    cluster: ClusterPrediction | None = None

    @property
    def unavailability(self) -> float:
        if self.cluster is not None:
            return self.cluster.result.unavailability
        parts = [self.load_balancer.result.unavailability]
        parts += [g.unavailability for g in self.groups.values()]
        return series_unavailability(parts)

    @property
    def assumptions(self) -> list[str]:
        out = list(self.load_balancer.assumptions)
        if self.cluster is not None:
            out += self.cluster.assumptions
        for g in self.groups.values():
            out += g.assumptions
        return out

    def contributions(self) -> list[tuple[str, float]]:
        """Every cause of unavailability, largest first: ``("web.detection", 9.6e-07)``, ..."""
        if self.cluster is not None:
            items = [(f"cluster.{k}", v) for k, v in self.load_balancer.result.contributions.items()]
        else:
            items = [(LOAD_BALANCER, self.load_balancer.result.unavailability)]
        for name, g in self.groups.items():
            items += [(f"{name}.{k}", v) for k, v in g.result.contributions.items()]
        return sorted(items, key=lambda kv: -kv[1])

    @property
    def dominant(self) -> str:
        return self.contributions()[0][0]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict. Stable names: availability, nines, downtime_per_year_s, groups.NAME.availability."""
        u = self.unavailability
        total = sum(v for _, v in self.contributions())
        return {
            "availability": 1.0 - u,
            "unavailability": u,
            "nines": _finite(nines_of_unavailability(u)),
            "downtime_per_year_s": downtime_per_year(u),
            "downtime_per_month_s": downtime_per_month(u),
            "dominant": self.dominant,
            "groups": {name: g.to_json() for name, g in self.groups.items()},
            "load_balancer": self.load_balancer.to_json(),
            "contributions": [
                {"part": k, "unavailability": v, "share": (v / total) if total else 0.0}
                for k, v in self.contributions()
            ],
            "slo": self.slo.to_json() if self.slo else None,
            "cluster": self.cluster.to_json() if self.cluster else None,
            "assumptions": self.assumptions,
        }

    def load_lines(self) -> list[str]:
        """Text lines for the groups with a ``load:`` section (``fivenines model`` prints them)."""
        return [line for name, g in self.groups.items() if g.load is not None for line in describe_load(name, g.load)]

    def __repr__(self) -> str:
        return f"<Prediction A={self.availability:.9f} nines={self.nines:.2f} dominant={self.dominant}>"


def _finite(x: float) -> float | None:
    return None if x == float("inf") else x


def _summary(r: PartResult) -> dict[str, Any]:
    return {
        "availability": r.availability,
        "unavailability": r.unavailability,
        "nines": _finite(r.nines),
        "downtime_per_year_s": r.downtime_per_year_s,
        "downtime_per_month_s": r.downtime_per_month_s,
        "dominant": r.dominant,
        "contributions": dict(r.contributions),
    }


def human_duration(seconds: float) -> str:
    """A duration as a spec would write it, in the largest whole unit: ``30d``, ``1h``, ``2.5s``.

    >>> [human_duration(s) for s in (2592000, 3600, 90, 5, 2.5, 0.25)]
    ['30d', '1h', '90s', '5s', '2.5s', '250ms']
    """
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds >= 1:
        return f"{seconds:g}s"
    return f"{seconds * 1000:g}ms"


def health_detection_time(hc: HealthCheckSpec) -> float:
    """Detection time of a group's active health check: ``interval x unhealthy_threshold + timeout``."""
    return detection_time(hc.interval, hc.unhealthy_threshold, hc.timeout)


def group_params(name: str, tg: TargetGroupSpec) -> tuple[GroupParams, dict[str, str]]:
    """The model parameters of one target group, and the defaults assumed (``{param: note}``)."""
    rel = tg.reliability
    assumed: dict[str, str] = {}
    t_detect = health_detection_time(tg.health_check)
    if tg.instances is not None:
        active, standby = tg.instances.count, tg.instances.standby
        hc = tg.health_check
        default_mttr = t_detect + tg.instances.restart.initial_delay + hc.healthy_threshold * hc.interval
        mttr_why = "detection + first restart delay + healthy_threshold x interval"
    else:
        active, standby = len(tg.target_list()), 0
        default_mttr = DEFAULT_TARGETS_MTTR
        mttr_why = "targets are repaired outside fivenines"
    mtbf = rel.mtbf if rel is not None else None
    mttr = rel.mttr if rel is not None else None
    if mtbf is None:
        mtbf = DEFAULT_MTBF
        assumed["mtbf"] = f"{name}: mtbf {human_duration(mtbf)} (not given)"
    if mttr is None:
        mttr = default_mttr
        assumed["mttr"] = f"{name}: mttr {human_duration(mttr)} ({mttr_why})"
    params = GroupParams(active=active, standby=standby, mtbf=mtbf, mttr=mttr, detection_time=t_detect)
    if rel is not None:
        params = dataclasses.replace(
            params,
            repair_crews=rel.repair_crews,
            standby_mode=StandbyMode(rel.standby_mode),
            standby_failure_ratio=(
                rel.standby_failure_ratio if rel.standby_failure_ratio is not None else DEFAULT_WARM_RATIO
            ),
            coverage=rel.coverage,
            manual_recovery=rel.manual_recovery,
            common_cause_beta=rel.common_cause_beta,
        )
    return params, assumed


def group_load(tg: TargetGroupSpec, params: GroupParams) -> LoadPrediction | None:
    """The instances a group's ``load:`` needs and its availability at both ends of its range."""
    if tg.load is None:
        return None
    sc = tg.scaling
    low, high = (sc.min, sc.max) if sc is not None else (params.active, params.active)
    policy = next((p.requests_per_target for p in sc.policies if p.requests_per_target), None) if sc else None
    ld = tg.load
    return predict_load(LoadInput(ld.mean_rps, ld.peak_rps, ld.per_instance_rps), params, low=low, high=high,
                        policy_rps=policy)


def _apply(name: str, params: GroupParams, override: Mapping[str, Any]) -> GroupParams:
    unknown = sorted(set(override) - _OVERRIDE_KEYS)
    if unknown:
        raise ValueError(f"{name}: unknown override {', '.join(unknown)}; valid: {', '.join(sorted(_OVERRIDE_KEYS))}")
    changes = dict(override)
    if "standby_mode" in changes:
        changes["standby_mode"] = StandbyMode(changes["standby_mode"])
    return dataclasses.replace(params, **changes)


def predict(
    spec: Spec,
    overrides: Mapping[str, Override] | None = None,
    *,
    load_balancer: Override | None = None,
    cluster: ClusterOverride | None = None,
) -> Prediction:
    """Predict the availability of ``spec``'s layout; ``overrides[group]`` replaces any parameter.

    With a ``cluster:`` section, ``load_balancer`` applies to the fivenines process of
    every node and ``cluster`` replaces the nodes' and the takeover's parameters
    (:class:`~fivenines.model.cluster_layout.ClusterOverride`).

    Raises :class:`ValueError` for an override of an unknown group or parameter,
    or with a value out of range.
    """
    overrides = overrides or {}
    missing = sorted(set(overrides) - set(spec.target_groups))
    if missing:
        raise ValueError(f"overrides for unknown target group(s) {', '.join(missing)}; defined: {', '.join(spec.target_groups)}")
    groups: dict[str, GroupPrediction] = {}
    for name, tg in spec.target_groups.items():
        params, assumed = group_params(name, tg)
        if name in overrides:
            params = _apply(name, params, overrides[name])
            assumed = {k: v for k, v in assumed.items() if k not in overrides[name]}
        groups[name] = GroupPrediction(name, params, evaluate_group(params), tuple(assumed.values()),
                                       group_load(tg, params))

    lb_rel = spec.load_balancer.reliability if spec.load_balancer is not None else None
    lb_assumed: list[str] = []
    lb_over: Mapping[str, Any] = load_balancer or {}
    bad = sorted(set(lb_over) - {"mtbf", "mttr"})
    if bad:
        raise ValueError(f"{LOAD_BALANCER}: unknown override {', '.join(bad)}; valid: mtbf, mttr")
    mtbf = lb_over.get("mtbf", lb_rel.mtbf if lb_rel is not None else None)
    mttr = lb_over.get("mttr", lb_rel.mttr if lb_rel is not None else None)
    if mtbf is None:
        mtbf = DEFAULT_LB_MTBF
        lb_assumed.append(f"{LOAD_BALANCER}: mtbf {human_duration(mtbf)} (not given)")
    if mttr is None:
        mttr = DEFAULT_LB_MTTR
        lb_assumed.append(f"{LOAD_BALANCER}: mttr {human_duration(mttr)} (restarted by a service manager)")
    lb = UnitPrediction(float(mtbf), float(mttr), evaluate_unit(float(mtbf), float(mttr)), tuple(lb_assumed))

    prediction = Prediction(groups, lb)
    if spec.cluster is not None:
        prediction = _with_cluster(spec, prediction, cluster or {})
    elif cluster:
        raise ValueError("cluster overrides given, but the spec has no cluster: section")
    if spec.slo is not None:
        prediction = dataclasses.replace(
            prediction, slo=SloCheck(spec.slo.target, spec.slo.window, prediction.unavailability)
        )
    return prediction


def _with_cluster(spec: Spec, p: Prediction, override: ClusterOverride) -> Prediction:
    """The prediction of a cluster: the balancer tier and every group over the node states."""
    lb = p.load_balancer
    layout = cluster_layout(spec, {name: g.params for name, g in p.groups.items()}, lb.mtbf, lb.mttr, override)
    result: ClusterResult = evaluate_cluster(layout.params, layout.groups)
    groups = {name: dataclasses.replace(g, result=result.groups[name]) for name, g in p.groups.items()}
    tier = dataclasses.replace(lb, result=result.tier)
    return dataclasses.replace(p, groups=groups, load_balancer=tier, cluster=layout.prediction(result))
