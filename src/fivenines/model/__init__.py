"""Availability math: closed forms for units, blocks, N+M pools and SLOs. Pure, no I/O.

* :mod:`~fivenines.model.blocks`: one unit (steady state and A(t)), series, parallel,
  k-out-of-n, nines and downtime;
* :mod:`~fivenines.model.pool`: N+M pools as a birth-death chain (repair crews,
  hot/warm/cold standby, imperfect switchover), 1+1, common cause;
* :mod:`~fivenines.model.detection`: the detection window;
* :mod:`~fivenines.model.group`: one target group, split by cause;
* :mod:`~fivenines.model.layout`: a spec to a :class:`~fivenines.model.layout.Prediction`;
* :mod:`~fivenines.model.slo`: error budget and burn-rate alerts;
* :mod:`~fivenines.model.markov`: a general CTMC solver (numpy) to cross-check the rest.

See docs/availability.md for the maths and the assumptions.
"""

from fivenines.model.blocks import (
    availability,
    downtime_per_month,
    downtime_per_year,
    k_out_of_n,
    k_out_of_n_mixed,
    nines,
    parallel,
    point_availability,
    series,
    unit_availability,
)
from fivenines.model.detection import detection_loss, detection_time
from fivenines.model.group import GroupParams, evaluate_group
from fivenines.model.pool import Pool, StandbyMode, one_plus_one_unavailability

__all__ = [
    "GroupParams",
    "Pool",
    "StandbyMode",
    "availability",
    "detection_loss",
    "detection_time",
    "downtime_per_month",
    "downtime_per_year",
    "evaluate_group",
    "k_out_of_n",
    "k_out_of_n_mixed",
    "nines",
    "one_plus_one_unavailability",
    "parallel",
    "point_availability",
    "series",
    "unit_availability",
]
