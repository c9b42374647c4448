"""SLO math on synthetic request histories: error budget, burn rates, multiwindow alerts."""

from __future__ import annotations

import math

import pytest

from fivenines.model.slo import (
    SRE_WORKBOOK_RULES,
    BurnRateRule,
    OutcomeRing,
    budget_rate,
    burn_rate,
    error_budget,
    evaluate_alerts,
    slo_status,
)

MIN = 60.0
HOUR = 3600.0
DAY = 86400.0
TARGET = 99.9  # budget: 0.1 % of requests


def feed(ring: OutcomeRing, start_min: int, minutes: int, per_min: int, bad_per_min: int) -> None:
    """``minutes`` minutes of traffic from minute ``start_min``, ``bad_per_min`` of them failing."""
    for m in range(start_min, start_min + minutes):
        assert ring.record(m * MIN + 30, good=per_min - bad_per_min, total=per_min)


def firing(ring: OutcomeRing, now: float) -> list[str]:
    return [a.rule.name for a in evaluate_alerts(ring, now, TARGET) if a.firing]


PAGE_FAST, PAGE_SLOW, TICKET = (r.name for r in SRE_WORKBOOK_RULES)


# --------------------------------------------------------------------------- error budget


def test_error_budget_counts() -> None:
    b = error_budget(good=999_400, total=1_000_000, target=TARGET)
    assert b.bad == 600
    assert b.allowed_bad == pytest.approx(1000.0)
    assert b.consumed == pytest.approx(0.6)
    assert b.remaining == pytest.approx(0.4)
    assert b.availability == pytest.approx(0.9994)


def test_error_budget_overspent_and_empty() -> None:
    assert error_budget(990, 1000, TARGET).remaining == pytest.approx(-9.0)
    empty = error_budget(0, 0, TARGET)
    assert (empty.consumed, empty.remaining, empty.availability) == (0.0, 1.0, None)


@pytest.mark.parametrize(("good", "total", "target"), [(5, 4, 99.9), (-1, 4, 99.9), (1, 1, 100.0), (1, 1, 0.0)])
def test_error_budget_rejects_nonsense(good: int, total: int, target: float) -> None:
    with pytest.raises(ValueError):
        error_budget(good, total, target)


def test_budget_rate_is_exact_for_decimal_targets() -> None:
    for target, rate in [(99.9, 0.001), (99.99, 0.0001), (99.95, 0.0005), (99.0, 0.01), (95.0, 0.05)]:
        assert budget_rate(target) == rate


def test_burn_rate_is_error_rate_over_budget_rate() -> None:
    assert burn_rate(1000, 1000, TARGET) == 0.0
    assert burn_rate(999, 1000, TARGET) == pytest.approx(1.0)
    assert burn_rate(0, 1000, TARGET) == pytest.approx(1000.0)
    assert burn_rate(0, 0, TARGET) == 0.0


# --------------------------------------------------------------------------- the ring


def test_ring_windows_and_horizon() -> None:
    ring = OutcomeRing(horizon=10 * MIN, resolution=MIN)
    for m in range(20):
        ring.record(m * MIN, good=m, total=m)
    # only the last 10 minutes (10..19) are kept
    assert ring.counts(19 * MIN, 10 * MIN) == (sum(range(10, 20)),) * 2
    assert ring.counts(19 * MIN, 3 * MIN) == (17 + 18 + 19,) * 2
    # a record older than the horizon is refused; one inside it lands in its bucket
    assert not ring.record(5 * MIN, good=1, total=1)
    assert ring.record(15 * MIN, good=0, total=1)
    assert ring.counts(19 * MIN, 5 * MIN) == (15 + 16 + 17 + 18 + 19, 15 + 16 + 17 + 18 + 19 + 1)
    # later, the old buckets fall out of every window
    assert ring.counts(100 * MIN, 10 * MIN) == (0, 0)


def test_ring_add_and_repr() -> None:
    ring = OutcomeRing(horizon=HOUR)
    ring.add(0.0, True)
    ring.add(59.0, False)
    ring.add(61.0, True)
    assert ring.counts(61.0, 2 * MIN) == (2, 3)
    assert ring.counts(61.0, MIN) == (1, 1)
    assert repr(ring) == "<OutcomeRing 2/3 good in 2 buckets of 60s, horizon 3600s, latest bucket 1>"


def test_ring_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="resolution"):
        OutcomeRing(resolution=0)
    with pytest.raises(ValueError, match="horizon"):
        OutcomeRing(horizon=10, resolution=60)
    ring = OutcomeRing(horizon=HOUR)
    with pytest.raises(ValueError, match="window"):
        ring.counts(0, 2 * HOUR)
    with pytest.raises(ValueError, match="window"):
        ring.counts(0, 0)
    with pytest.raises(ValueError, match="good <= total"):
        ring.record(0, good=2, total=1)
    with pytest.raises(ValueError, match="now must be >= 0"):
        ring.record(-61, good=1, total=1)


# --------------------------------------------------------------------------- rules


def test_workbook_rules_spend_2_5_10_percent_of_a_30_day_budget() -> None:
    assert [r.threshold for r in SRE_WORKBOOK_RULES] == [14.4, 6.0, 1.0]
    assert [(r.long_window, r.short_window) for r in SRE_WORKBOOK_RULES] == [
        (HOUR, 5 * MIN), (6 * HOUR, 30 * MIN), (3 * DAY, 6 * HOUR)
    ]
    assert [r.budget_spent(30 * DAY) for r in SRE_WORKBOOK_RULES] == pytest.approx([0.02, 0.05, 0.10])
    assert [r.severity for r in SRE_WORKBOOK_RULES] == ["page", "page", "ticket"]


# --------------------------------------------------------------------------- synthetic histories


def test_steady_traffic_at_exactly_the_budget_rate_does_not_alert() -> None:
    ring = OutcomeRing(horizon=30 * DAY)
    feed(ring, 0, 3 * 24 * 60, per_min=1000, bad_per_min=1)  # burn exactly 1x
    now = 3 * DAY - 1
    assert firing(ring, now) == []
    status = slo_status(ring, now, TARGET)
    # request-based budget: at 1x, the failures use exactly what the requests so far allow
    assert status.budget.consumed == pytest.approx(1.0)
    assert status.severity is None


def test_steady_double_burn_opens_a_ticket_only() -> None:
    ring = OutcomeRing(horizon=30 * DAY)
    feed(ring, 0, 3 * 24 * 60, per_min=1000, bad_per_min=2)  # burn 2x
    assert firing(ring, 3 * DAY - 1) == [TICKET]
    assert slo_status(ring, 3 * DAY - 1, TARGET).severity == "ticket"


def test_partial_outage_pages_in_the_minute_the_long_window_crosses_the_threshold() -> None:
    ring = OutcomeRing(horizon=3 * DAY)
    feed(ring, 0, 24 * 60, per_min=600, bad_per_min=0)
    start = 24 * 60
    # 10 % errors from `start`: the 1 h error rate after k minutes is 0.1 k / 60 and must
    # exceed 14.4 x 0.1 %; the 5 m window is above it from the first minute
    first_page = math.floor(14.4 * 0.001 * 60 / 0.1) + 1
    assert first_page > 2
    for k in range(1, first_page + 2):
        feed(ring, start + k - 1, 1, per_min=600, bad_per_min=60)
        now = (start + k) * MIN - 1
        assert (PAGE_FAST in firing(ring, now)) == (k >= first_page), k


def test_multiwindow_alert_resets_soon_after_recovery() -> None:
    ring = OutcomeRing(horizon=3 * DAY)
    feed(ring, 0, 24 * 60, per_min=600, bad_per_min=0)
    outage = 24 * 60
    feed(ring, outage, 10, per_min=600, bad_per_min=600)  # a 10-minute outage
    during = (outage + 10) * MIN - 1
    assert firing(ring, during) == [PAGE_FAST, PAGE_SLOW, TICKET]
    # healthy traffic again: the 5-minute window clears first, then the 30-minute one
    feed(ring, outage + 10, 40, per_min=600, bad_per_min=0)
    assert firing(ring, (outage + 15) * MIN - 1) == [PAGE_SLOW, TICKET]  # 1 h burn still high, 5 m clean
    assert firing(ring, (outage + 40) * MIN - 1) == [TICKET]  # 30 m window clean: 6x page stops
    # the ticket rule's short window is 6 h: it keeps firing while that still holds the outage
    state = {a.rule.name: a for a in evaluate_alerts(ring, (outage + 40) * MIN - 1, TARGET)}
    assert state[TICKET].short_burn == pytest.approx(10 * 600 / (6 * 60 * 600) / 0.001)


def test_slow_burn_pages_on_the_6h_rule_but_not_the_1h_rule() -> None:
    ring = OutcomeRing(horizon=3 * DAY)
    feed(ring, 0, 7 * 60, per_min=1000, bad_per_min=10)  # 1 % errors: burn 10x
    names = firing(ring, 7 * HOUR - 1)
    assert names == [PAGE_SLOW, TICKET]


def test_no_traffic_no_alert_and_full_budget() -> None:
    ring = OutcomeRing(horizon=30 * DAY)
    status = slo_status(ring, 10 * DAY, TARGET)
    assert status.budget.remaining == 1.0
    assert status.firing == [] and status.severity is None
    assert status.to_json()["alerts"][0]["firing"] is False


def test_custom_rules_and_json() -> None:
    rule = BurnRateRule("page", 2.0, 10 * MIN, MIN)
    ring = OutcomeRing(horizon=HOUR)
    feed(ring, 0, 10, per_min=100, bad_per_min=1)  # 1 % errors against a 0.1 % budget: burn 10x
    status = slo_status(ring, 10 * MIN - 1, TARGET, window=HOUR, rules=(rule,))
    assert [str(a) for a in status.alerts] == ["page 2x over 10m/1m: FIRING (burn 10x long, 10x short)"]
    data = status.to_json()
    assert data["severity"] == "page"
    assert data["budget"]["bad"] == 10 and data["budget"]["total"] == 1000
    assert repr(status) == f"<SloStatus 99.9% over 1h: {status.budget.remaining:.1%} budget left, alert=page>"
