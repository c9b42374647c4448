"""The model knows the range: instances a load needs, availability at min and at max."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fivenines.model.capacity import LoadInput, instances_needed, predict_load
from fivenines.model.group import GroupParams, evaluate_group
from fivenines.model.layout import predict
from fivenines.spec import parse_spec
from tests.helpers import demo_spec

PARAMS = GroupParams(active=3, standby=1, mtbf=30 * 86400.0, mttr=600.0, detection_time=2.5)


def test_instances_needed() -> None:
    assert [instances_needed(r, 400) for r in (0.1, 400, 400.0001, 2000, 2001)] == [1, 1, 2, 5, 6]


def test_each_end_is_the_group_model_with_its_count_and_what_the_load_needs() -> None:
    lp = predict_load(LoadInput(700, 2000, 500), PARAMS, low=2, high=8)
    assert (lp.needed_at_mean, lp.needed_at_peak, lp.peak_fits) == (2, 4, True)
    want_min = evaluate_group(dataclasses.replace(PARAMS, active=2, required=2))
    want_max = evaluate_group(dataclasses.replace(PARAMS, active=8, required=4))
    assert lp.at_min.unavailability == want_min.unavailability
    assert lp.at_max.unavailability == want_max.unavailability
    # 8 actives keeping 4 working have more room than 2 keeping 2: fewer capacity outages
    assert lp.at_max.contributions["capacity"] < lp.at_min.contributions["capacity"]
    assert lp.findings == ()


def test_a_floor_above_the_mean_counts_as_redundancy() -> None:
    lp = predict_load(LoadInput(100, 2000, 500), PARAMS, low=3, high=8)
    assert lp.needed_at_mean == 1
    assert lp.at_min.unavailability == evaluate_group(dataclasses.replace(PARAMS, active=3, required=1)).unavailability


@pytest.mark.parametrize(("load", "low", "high", "policy", "findings"), [
    (LoadInput(300, 5000, 500), 2, 6, None,
     ["the peak (5000 rps) needs 10 instances but max is 6: it overloads the group"]),
    (LoadInput(300, 5000, 500), 4, 4, None,
     ["the peak (5000 rps) needs 10 instances but count is 4: it overloads the group"]),
    (LoadInput(1600, 2000, 500), 2, 6, None,
     ["the mean load needs 4 instances, above min 2: the group runs above min most of the time"]),
    (LoadInput(300, 2000, 500), 2, 6, 600.0,
     ["requests_per_target 600 is above per_instance_rps 500: instances overload before the group scales out"]),
    (LoadInput(300, 2000, 500), 2, 6, 250.0, ["at the peak, requests_per_target 250 asks for 8 instances, above max 6"]),
])
def test_findings(load: LoadInput, low: int, high: int, policy: float | None, findings: list[str]) -> None:
    assert list(predict_load(load, PARAMS, low=low, high=high, policy_rps=policy).findings) == findings


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="peak_rps"):
        LoadInput(500, 100, 50)
    with pytest.raises(ValueError, match="per_instance_rps must be a number above 0"):
        LoadInput(1, 2, 0)
    with pytest.raises(ValueError, match="1 <= low <= high"):
        predict_load(LoadInput(1, 2, 3), PARAMS, low=4, high=3)


@given(st.floats(1, 1e5), st.floats(1, 10), st.floats(10, 5000), st.integers(1, 20), st.integers(0, 20))
def test_needs_follow_the_load(mean: float, burst: float, per: float, low: int, extra: int) -> None:
    lp = predict_load(LoadInput(mean, mean * burst, per), PARAMS, low=low, high=low + extra)
    assert lp.needed_at_mean <= lp.needed_at_peak
    assert (lp.needed_at_peak - 1) * per < mean * burst * (1 + 1e-9) and mean * burst <= lp.needed_at_peak * per * (1 + 1e-9)
    assert lp.peak_fits == (lp.needed_at_peak <= low + extra)
    assert 0 <= lp.at_min.unavailability <= 1 and 0 <= lp.at_max.unavailability <= 1


def spec(**group: Any) -> Any:
    return parse_spec(demo_spec(count=2, standby=1, **group))


def test_predict_reports_the_range_in_json_and_text() -> None:
    p = predict(spec(load={"mean_rps": 300, "peak_rps": 2500, "per_instance_rps": 500},
                     scaling={"min": 2, "max": 8, "policies": [{"requests_per_target": 400}]}))
    load = p.to_json()["groups"]["web"]["load"]
    assert (load["min"], load["max"], load["needed_at_mean"], load["needed_at_peak"], load["peak_fits"]) == (2, 8, 1, 5, True)
    assert load["at_min"]["actives"] == 2 and load["at_min"]["required"] == 1 and load["at_min"]["load"] == "mean"
    assert load["at_max"]["actives"] == 8 and load["at_max"]["required"] == 5
    assert load["findings"] == ["at the peak, requests_per_target 400 asks for 7 instances"]
    lines = p.load_lines()
    assert lines[0] == ("web load: the peak 2500 rps needs 5 instances at 500 rps each, the mean 300 rps needs 1; "
                        "range 2..8")
    assert lines[1].startswith("  at min 2 (mean load, 1 needed): availability ")
    assert lines[2].startswith("  at max 8 (peak load, 5 needed): availability ")
    assert lines[3] == "  ! at the peak, requests_per_target 400 asks for 7 instances"
    # the group's own prediction (the declared count) is unchanged by the load section
    assert p.groups["web"].unavailability == predict(spec()).groups["web"].unavailability


def test_without_scaling_both_ends_are_the_count_and_without_load_nothing() -> None:
    p = predict(spec(load={"mean_rps": 300, "peak_rps": 2500, "per_instance_rps": 500}))
    load = p.groups["web"].load
    assert load is not None and (load.low, load.high, load.peak_fits) == (2, 2, False)
    assert p.load_lines()[2].startswith("  at max 2 (peak load, needs 5: overloaded): availability ")
    assert p.load_lines()[3] == "  ! the peak (2500 rps) needs 5 instances but count is 2: it overloads the group"
    empty = predict(spec())
    assert empty.groups["web"].load is None and empty.load_lines() == []
    assert empty.to_json()["groups"]["web"]["load"] is None
