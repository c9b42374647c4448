"""How many instances a load needs, and the availability at both ends of the scaling range. Pure.

A group's ``load: {mean_rps, peak_rps, per_instance_rps}`` turns a request rate
into a number of instances: ``ceil(rps / per_instance_rps)``. With it, the model
evaluates the group at the two ends of its range (``scaling: {min, max}``, or the
fixed ``count`` at both ends):

* **at min, under the mean load**: ``min`` actives + the standbys, up while
  ``min(needed at mean, min)`` members work (a floor above the mean load leaves
  spare actives, which count as redundancy);
* **at max, under the peak load**: ``max`` actives + the standbys, up while
  ``min(needed at peak, max)`` members work. A peak needing more than ``max``
  overloads the group whatever fails: that is reported as a finding, and the
  availability shown is then the one of ``max`` fully used.

Findings also compare the ``requests_per_target`` policy with the instance's
capacity: a target above ``per_instance_rps`` lets instances overload before the
group scales out, and the count the policy asks for at the peak may exceed ``max``.

>>> from fivenines.model.group import GroupParams
>>> lp = predict_load(LoadInput(400, 2000, 500), GroupParams(active=2, standby=1, mttr=600.0), low=2, high=6,
...                   policy_rps=400)
>>> lp.needed_at_mean, lp.needed_at_peak, lp.peak_fits, round(lp.at_min.nines, 1), round(lp.at_max.nines, 1)
(1, 4, True, 10.9, 13.0)
>>> lp.findings
('at the peak, requests_per_target 400 asks for 5 instances',)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from fivenines.model.blocks import nines_of_unavailability
from fivenines.model.group import GroupParams, PartResult, evaluate_group


@dataclass(frozen=True, slots=True)
class LoadInput:
    mean_rps: float
    peak_rps: float
    per_instance_rps: float

    def __post_init__(self) -> None:
        for name in ("mean_rps", "peak_rps", "per_instance_rps"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a number above 0, got {v!r}")
        if self.peak_rps < self.mean_rps:
            raise ValueError(f"peak_rps ({self.peak_rps:g}) must be at least mean_rps ({self.mean_rps:g})")


def instances_needed(rps: float, per_instance_rps: float) -> int:
    """Instances that serve ``rps`` at ``per_instance_rps`` each (at least one).

    >>> instances_needed(2000, 400), instances_needed(2001, 400), instances_needed(1, 400)
    (5, 6, 1)
    """
    return max(1, math.ceil(rps / per_instance_rps - 1e-9))


@dataclass(frozen=True, slots=True)
class LoadPrediction:
    load: LoadInput
    low: int  # actives at the low end (scaling min, or the fixed count)
    high: int  # actives at the high end (scaling max, or the fixed count)
    needed_at_mean: int
    needed_at_peak: int
    at_min: PartResult
    at_max: PartResult
    findings: tuple[str, ...]

    @property
    def peak_fits(self) -> bool:
        return self.needed_at_peak <= self.high

    def to_json(self) -> dict[str, Any]:
        def part(n: int, r: PartResult, load: str, required: int) -> dict[str, Any]:
            nines = nines_of_unavailability(r.unavailability)
            return {"actives": n, "load": load, "required": required, "availability": r.availability,
                    "unavailability": r.unavailability, "nines": None if math.isinf(nines) else nines,
                    "downtime_per_year_s": r.downtime_per_year_s, "dominant": r.dominant}

        return {
            "mean_rps": self.load.mean_rps,
            "peak_rps": self.load.peak_rps,
            "per_instance_rps": self.load.per_instance_rps,
            "needed_at_mean": self.needed_at_mean,
            "needed_at_peak": self.needed_at_peak,
            "min": self.low,
            "max": self.high,
            "peak_fits": self.peak_fits,
            "at_min": part(self.low, self.at_min, "mean", min(self.needed_at_mean, self.low)),
            "at_max": part(self.high, self.at_max, "peak", min(self.needed_at_peak, self.high)),
            "findings": list(self.findings),
        }


def predict_load(load: LoadInput, params: GroupParams, *, low: int, high: int,
                 policy_rps: float | None = None) -> LoadPrediction:
    """The instances ``load`` needs and the group's availability at ``low`` and ``high`` actives.

    ``params`` is the group's model (its standbys, failure and repair); its active
    count and ``required`` are replaced at each end. ``policy_rps`` is the target of
    a ``requests_per_target`` scaling policy, if the group has one.
    """
    if not 1 <= low <= high:
        raise ValueError(f"need 1 <= low <= high, got {low}..{high}")
    at_mean = instances_needed(load.mean_rps, load.per_instance_rps)
    at_peak = instances_needed(load.peak_rps, load.per_instance_rps)
    at_min = evaluate_group(dataclasses.replace(params, active=low, required=min(at_mean, low)))
    at_max = evaluate_group(dataclasses.replace(params, active=high, required=min(at_peak, high)))
    findings: list[str] = []
    end = "max" if high > low else "count"
    if at_peak > high:
        findings.append(f"the peak ({load.peak_rps:g} rps) needs {at_peak} instances but {end} is {high}: "
                        f"it overloads the group")
    if at_mean > low and high > low:
        findings.append(f"the mean load needs {at_mean} instances, above min {low}: the group runs above min "
                        f"most of the time")
    if policy_rps is not None:
        if policy_rps > load.per_instance_rps:
            findings.append(f"requests_per_target {policy_rps:g} is above per_instance_rps "
                            f"{load.per_instance_rps:g}: instances overload before the group scales out")
        asks = instances_needed(load.peak_rps, policy_rps)
        if asks != at_peak:
            over = f", above max {high}" if asks > high else ""
            findings.append(f"at the peak, requests_per_target {policy_rps:g} asks for {asks} instances{over}")
    return LoadPrediction(load, low, high, at_mean, at_peak, at_min, at_max, tuple(findings))


def _percent(r: PartResult) -> str:
    nines = nines_of_unavailability(r.unavailability)
    decimals = 12 if math.isinf(nines) else min(12, max(2, int(nines) + 1))
    return f"{r.availability * 100:.{decimals}f}%"


def describe_load(name: str, lp: LoadPrediction) -> list[str]:
    """Lines for ``fivenines model``'s text output: what the load needs, the availability at each end.

    >>> from fivenines.model.group import GroupParams
    >>> lp = predict_load(LoadInput(400, 2000, 500), GroupParams(active=2, mttr=5.0, detection_time=2.5),
    ...                   low=2, high=3, policy_rps=600)
    >>> print("\\n".join(describe_load("web", lp)))
    web load: the peak 2000 rps needs 4 instances at 500 rps each, the mean 400 rps needs 1; range 2..3
      at min 2 (mean load, 1 needed): availability 99.9999035% (6.02 nines)
      at max 3 (peak load, needs 4: overloaded): availability 99.999421% (5.24 nines)
      ! the peak (2000 rps) needs 4 instances but max is 3: it overloads the group
      ! requests_per_target 600 is above per_instance_rps 500: instances overload before the group scales out
    """
    ld = lp.load
    lines = [f"{name} load: the peak {ld.peak_rps:g} rps needs {lp.needed_at_peak} instances at "
             f"{ld.per_instance_rps:g} rps each, the mean {ld.mean_rps:g} rps needs {lp.needed_at_mean}; "
             f"range {lp.low}..{lp.high}"]
    for label, n, r, load, need in (("min", lp.low, lp.at_min, "mean", lp.needed_at_mean),
                                    ("max", lp.high, lp.at_max, "peak", lp.needed_at_peak)):
        nines = nines_of_unavailability(r.unavailability)
        shown = "inf" if math.isinf(nines) else f"{nines:.2f}"
        needed = f"{need} needed" if need <= n else f"needs {need}: overloaded"
        lines.append(f"  at {label} {n} ({load} load, {needed}): availability {_percent(r)} ({shown} nines)")
    lines += [f"  ! {f}" for f in lp.findings]
    return lines
