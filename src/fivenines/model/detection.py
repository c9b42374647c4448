"""The detection window: requests lost while a failed target still gets traffic. Pure.

Between the moment a serving target fails and the moment the load balancer stops
sending it requests, its share of the traffic fails (unless a retry on another
target saves it). With ``a`` serving targets each failing at rate ``lam``, failures
arrive at ``a x lam`` and each costs ``T_detect / a`` of the traffic, so the share
of requests lost is about ``lam x T_detect``, whatever ``a`` is. Faster health
checks therefore show up directly as more nines.
"""

from __future__ import annotations

from fivenines.model.blocks import _check_probability, _check_rate


def detection_time(
    interval: float,
    unhealthy_threshold: int,
    timeout: float,
    passive: float | None = None,
) -> float:
    """Time until a failed target stops receiving traffic, by active checks or passive observation.

    Active checks need ``unhealthy_threshold`` failed checks, ``interval`` apart,
    the last one failing by ``timeout`` (a hung target answers nothing): at most
    ``interval x unhealthy_threshold + timeout``. (On average the first failed
    check comes half an interval after the failure, so the mean is ``interval / 2``
    shorter; the bound is what the model charges.) Passive detection (ejecting a
    target after consecutive failed requests) can only shorten it:

    >>> detection_time(1.0, 2, 0.5)
    2.5
    >>> detection_time(1.0, 2, 0.5, passive=passive_detection_time(1, 250.0))
    0.004
    """
    _check_rate("interval", interval, positive=True)
    _check_rate("timeout", timeout)
    if unhealthy_threshold < 1:
        raise ValueError(f"unhealthy_threshold must be >= 1, got {unhealthy_threshold}")
    active = interval * unhealthy_threshold + timeout
    if passive is None:
        return active
    _check_rate("passive", passive)
    return min(active, passive)


def passive_detection_time(consecutive_errors: int, requests_per_second: float) -> float:
    """Time for a target receiving ``requests_per_second`` to fail ``consecutive_errors`` requests.

    >>> passive_detection_time(5, 100.0)
    0.05
    """
    if consecutive_errors < 1:
        raise ValueError(f"consecutive_errors must be >= 1, got {consecutive_errors}")
    _check_rate("requests_per_second", requests_per_second, positive=True)
    return consecutive_errors / requests_per_second


def detection_loss(lam: float, t_detect: float, exposure: float = 1.0) -> float:
    """Share of all requests lost in detection windows: ``lam x t_detect x exposure``.

    ``exposure`` is the share of requests sent to a failed, not yet detected
    target that fail at the client (1: all of them; retries on another target
    lower it). Capped at 1.

    A target failing once every 30 days, detected in 2.5 s:

    >>> f"{detection_loss(1 / (30 * 86400), 2.5):.3g}"
    '9.65e-07'
    """
    _check_rate("lam", lam)
    _check_rate("t_detect", t_detect)
    _check_probability("exposure", exposure)
    return min(1.0, lam * t_detect * exposure)
