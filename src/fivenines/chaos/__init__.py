"""Fault injection under load, measured availability, prediction vs measurement: ``fivenines chaos``.

The pure parts, time passed in, no I/O:

* :mod:`~fivenines.chaos.schedule`: which faults, when (exponential inter-arrival
  with a seed, or a fixed schedule);
* :mod:`~fivenines.chaos.stats`: Wilson intervals, percentiles, means with intervals;
* :mod:`~fivenines.chaos.outcomes`: the outcome of every request; request- and
  time-based availability; per-second series;
* :mod:`~fivenines.chaos.timeline`: fivenines' events as state intervals, and
  each fault's detection, failover and repair times and client cost;
* :mod:`~fivenines.chaos.compare`: measured values fed into the model
  (:func:`fivenines.model.layout.predict`), predicted vs measured.

The I/O parts, thin: :mod:`~fivenines.chaos.loadgen` (open-loop HTTP/1.1 load on
asyncio protocols), :mod:`~fivenines.chaos.inject` (signals and demo control
calls, only to processes the fivenines under test started),
:mod:`~fivenines.chaos.runner` (runs ``fivenines up`` and the rest) and
:mod:`~fivenines.chaos.report` (``summary.json`` and ``report.html``). The ``wipe``
disaster of a replicated store is a run of its own: :mod:`~fivenines.chaos.wipe` (its
accounting, pure, and its writers) and :mod:`~fivenines.chaos.wipe_run` (the run). ``inject``
and ``runner`` talk HTTP (fivenines' admin API, the demo's control paths) through
the one admin client, :mod:`fivenines.cli.admin_client`, the one the CLI uses.
See docs/chaos.md.
"""

from __future__ import annotations

from fivenines.errors import ProviderError


class ChaosError(ProviderError):
    """A chaos run cannot start or carry on (fivenines did not come up, a fault could not be
    injected, the admin API did not answer, ...)."""


class UnsafeTarget(ChaosError):
    """A process is not one the fivenines under test started: chaos leaves it alone."""
