"""From spec to prediction: defaults, overrides, the parts of a group, the JSON shape, spec errors."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from fivenines.errors import SpecError
from fivenines.model.blocks import SECONDS_PER_YEAR, series_unavailability
from fivenines.model.detection import detection_loss, detection_time, passive_detection_time
from fivenines.model.group import GroupParams, evaluate_group, evaluate_unit
from fivenines.model.layout import (
    DEFAULT_LB_MTBF,
    DEFAULT_LB_MTTR,
    DEFAULT_MTBF,
    DEFAULT_TARGETS_MTTR,
    human_duration,
    predict,
)
from fivenines.model.pool import Pool, StandbyMode
from fivenines.spec import Spec, parse_spec

BASE: dict[str, Any] = {
    "name": "shop",
    "listeners": [{"port": 0, "default_target_group": "web"}],
    "target_groups": {
        "web": {
            "instances": {"command": ["srv", "{port}"], "count": 2, "standby": 1},
            "health_check": {"interval": "1s", "timeout": "500ms", "unhealthy_threshold": 2, "healthy_threshold": 2},
        }
    },
}


def spec_with(**changes: Any) -> Spec:
    """BASE with ``web`` group keys (``web_*``) or top-level keys replaced."""
    data = copy.deepcopy(BASE)
    web = data["target_groups"]["web"]
    for key, value in changes.items():
        if key.startswith("web_"):
            web[key.removeprefix("web_")] = value
        elif key == "instances":
            web["instances"].update(value)
        elif key == "health_check":
            web["health_check"].update(value)
        else:
            data[key] = value
    return parse_spec(data)


# --------------------------------------------------------------------------- the parts of one group


def test_single_unit_group_is_the_unit_formula() -> None:
    r = evaluate_group(GroupParams(active=1, mtbf=100.0, mttr=5.0, detection_time=2.0))
    assert r.unavailability == pytest.approx(5.0 / 105.0, rel=1e-14)
    # every failure is an outage already: no extra detection loss
    assert r.contributions == {"capacity": pytest.approx(5.0 / 105.0), "switchover": 0.0, "common_cause": 0.0, "detection": 0.0}
    assert r.dominant == "capacity"


def test_detection_part_is_lambda_t_on_the_states_that_survive_a_failure() -> None:
    p = GroupParams(active=3, standby=1, mtbf=1000.0, mttr=10.0, detection_time=4.0, exposure=0.5)
    r = evaluate_group(p)
    room = Pool(active=3, standby=1, lam=1 / 1000.0, mu=0.1).distribution().room
    assert r.contributions["detection"] == pytest.approx(room * (1 / 1000.0) * 4.0 * 0.5, rel=1e-12)
    assert r.unavailability == pytest.approx(series_unavailability(r.contributions.values()), rel=1e-14)


def test_common_cause_counts_only_with_spare_members() -> None:
    beta, mtbf, mttr = 0.1, 1000.0, 10.0
    redundant = evaluate_group(GroupParams(active=2, standby=1, mtbf=mtbf, mttr=mttr, common_cause_beta=beta))
    lam_cc = beta / mtbf
    assert redundant.contributions["common_cause"] == pytest.approx(lam_cc / (lam_cc + 1 / mttr), rel=1e-12)
    independent = Pool(active=2, standby=1, lam=(1 - beta) / mtbf, mu=1 / mttr).unavailability()
    assert redundant.contributions["capacity"] == pytest.approx(independent, rel=1e-12)
    single = evaluate_group(GroupParams(active=2, mtbf=mtbf, mttr=mttr, common_cause_beta=beta))
    plain = evaluate_group(GroupParams(active=2, mtbf=mtbf, mttr=mttr))
    assert single.contributions == plain.contributions


def test_common_cause_can_dominate_a_well_redundant_group() -> None:
    r = evaluate_group(GroupParams(active=2, standby=2, mtbf=86400.0, mttr=60.0, common_cause_beta=0.05))
    assert r.dominant == "common_cause"


def test_uncovered_failures_show_as_switchover() -> None:
    p = GroupParams(active=1, standby=1, mtbf=86400.0, mttr=10.0, coverage=0.9, manual_recovery=3600.0)
    r = evaluate_group(p)
    pool = Pool(active=1, standby=1, lam=1 / 86400.0, mu=0.1, coverage=0.9, recovery=1 / 3600.0)
    assert r.contributions["switchover"] == pytest.approx(pool.distribution().switchover, rel=1e-12)
    assert r.dominant == "switchover"


def test_required_lowers_unavailability() -> None:
    strict = evaluate_group(GroupParams(active=3, mtbf=1000.0, mttr=10.0))
    degraded_ok = evaluate_group(GroupParams(active=3, mtbf=1000.0, mttr=10.0, required=1))
    assert degraded_ok.unavailability < strict.unavailability


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mtbf": 0.0}, "mtbf must be a finite number > 0"),
        ({"mttr": 0.0}, "mttr must be a finite number > 0"),
        ({"detection_time": -1.0}, "detection_time must be"),
        ({"exposure": 2.0}, "exposure must be within"),
        ({"common_cause_beta": -0.5}, "common_cause_beta must be within"),
        ({"required": 9}, "required must be within"),
        ({"standby_mode": "lukewarm"}, "lukewarm"),
    ],
)
def test_group_params_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GroupParams(active=2, standby=1, **kwargs)


def test_unit_and_detection_helpers() -> None:
    assert evaluate_unit(100.0, 5.0).unavailability == pytest.approx(5 / 105)
    assert detection_time(2.0, 3, 1.0) == 7.0
    assert detection_time(2.0, 3, 1.0, passive=0.1) == 0.1
    assert detection_time(2.0, 3, 1.0, passive=60.0) == 7.0
    assert passive_detection_time(3, 300.0) == pytest.approx(0.01)
    assert detection_loss(1.0, 10.0) == 1.0  # capped
    with pytest.raises(ValueError, match="unhealthy_threshold"):
        detection_time(1.0, 0, 0.5)
    with pytest.raises(ValueError, match="consecutive_errors"):
        passive_detection_time(0, 1.0)


# --------------------------------------------------------------------------- spec to parameters


def test_defaults_come_from_health_check_and_restart_and_are_listed() -> None:
    spec = spec_with(instances={"restart": {"initial_delay": "1s"}}, health_check={"interval": "2s", "timeout": "1s", "unhealthy_threshold": 3, "healthy_threshold": 4})
    p = predict(spec)
    web = p.groups["web"].params
    assert web.detection_time == 2 * 3 + 1
    assert web.mttr == 7 + 1 + 4 * 2
    assert web.mtbf == DEFAULT_MTBF
    assert (web.active, web.standby, web.needed, web.standby_mode) == (2, 1, 2, StandbyMode.HOT)
    assert p.load_balancer.mtbf == DEFAULT_LB_MTBF and p.load_balancer.mttr == DEFAULT_LB_MTTR
    assert p.assumptions == [
        f"load_balancer: mtbf {human_duration(DEFAULT_LB_MTBF)} (not given)",
        f"load_balancer: mttr {human_duration(DEFAULT_LB_MTTR)} (restarted by a service manager)",
        f"web: mtbf {human_duration(DEFAULT_MTBF)} (not given)",
        "web: mttr 16s (detection + first restart delay + healthy_threshold x interval)",
    ]


def test_reliability_section_is_used_and_nothing_is_assumed() -> None:
    spec = spec_with(
        web_reliability={
            "mtbf": "7d", "mttr": "2m", "repair_crews": 1, "standby_mode": "warm", "standby_failure_ratio": 0.2,
            "coverage": 0.99, "manual_recovery": "30m", "common_cause_beta": 0.01,
        },
        load_balancer={"reliability": {"mtbf": "90d", "mttr": "10s"}},
    )
    p = predict(spec)
    web = p.groups["web"].params
    assert (web.mtbf, web.mttr, web.repair_crews, web.standby_mode) == (7 * 86400, 120, 1, StandbyMode.WARM)
    assert (web.standby_failure_ratio, web.coverage, web.manual_recovery, web.common_cause_beta) == (0.2, 0.99, 1800, 0.01)
    assert (p.load_balancer.mtbf, p.load_balancer.mttr) == (90 * 86400, 10)
    assert p.assumptions == []


def test_warm_standby_without_ratio_uses_the_documented_default() -> None:
    p = predict(spec_with(web_reliability={"standby_mode": "warm"}))
    assert p.groups["web"].params.standby_failure_ratio == 0.5


def test_targets_group_is_n_plus_zero_repaired_outside() -> None:
    data = copy.deepcopy(BASE)
    data["target_groups"]["web"] = {"targets": ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]}
    p = predict(parse_spec(data))
    web = p.groups["web"].params
    assert (web.active, web.standby, web.mttr) == (3, 0, DEFAULT_TARGETS_MTTR)
    assert "web: mttr 1h (targets are repaired outside fivenines)" in p.assumptions


# --------------------------------------------------------------------------- what the numbers must do


def test_a_standby_adds_nines() -> None:
    for count in range(1, 5):
        without = predict(spec_with(instances={"count": count, "standby": 0}))
        with_one = predict(spec_with(instances={"count": count, "standby": 1}))
        assert with_one.groups["web"].nines > without.groups["web"].nines
        assert with_one.nines > without.nines


def test_faster_health_checks_add_nines() -> None:
    slow = predict(spec_with(health_check={"interval": "5s", "timeout": "2s"}, web_reliability={"mttr": "30s"}))
    fast = predict(spec_with(health_check={"interval": "500ms", "timeout": "200ms"}, web_reliability={"mttr": "30s"}))
    assert fast.groups["web"].nines > slow.groups["web"].nines
    assert slow.groups["web"].result.dominant == "detection"


def test_overall_is_the_load_balancer_in_series_with_every_group() -> None:
    data = copy.deepcopy(BASE)
    data["target_groups"]["api"] = {"targets": ["127.0.0.1:9001", "127.0.0.1:9002"], "reliability": {"mttr": "10m"}}
    p = predict(parse_spec(data))
    parts = [p.load_balancer.result.unavailability, p.groups["web"].unavailability, p.groups["api"].unavailability]
    assert p.unavailability == pytest.approx(1 - math.prod(1 - u for u in parts), rel=1e-12)
    assert p.downtime_per_year_s == pytest.approx(p.unavailability * SECONDS_PER_YEAR)
    biggest = max(p.contributions(), key=lambda kv: kv[1])
    assert p.dominant == biggest[0]
    assert [v for _, v in p.contributions()] == sorted((v for _, v in p.contributions()), reverse=True)


def test_load_balancer_dominates_the_default_demo_layout() -> None:
    p = predict(spec_with())
    assert p.dominant == "load_balancer"
    assert repr(p) == f"<Prediction A={p.availability:.9f} nines={p.nines:.2f} dominant=load_balancer>"


# --------------------------------------------------------------------------- overrides (what chaos feeds in)


def test_overrides_replace_parameters_and_drop_their_assumptions() -> None:
    spec = spec_with()
    base = predict(spec)
    measured = predict(spec, {"web": {"mttr": 2.0, "detection_time": 0.2, "exposure": 0.1, "coverage": 0.999}},
                       load_balancer={"mttr": 5.0})
    web = measured.groups["web"].params
    assert (web.mttr, web.detection_time, web.exposure, web.coverage) == (2.0, 0.2, 0.1, 0.999)
    assert measured.load_balancer.mttr == 5.0
    assert not any(a.startswith("web: mttr") for a in measured.assumptions)
    assert any(a.startswith("web: mtbf") for a in measured.assumptions)
    expected = evaluate_group(GroupParams(active=2, standby=1, mtbf=DEFAULT_MTBF, mttr=2.0, coverage=0.999,
                                          detection_time=0.2, exposure=0.1))
    assert measured.groups["web"].unavailability == pytest.approx(expected.unavailability, rel=1e-12)
    assert measured.groups["web"].unavailability != base.groups["web"].unavailability
    assert predict(spec, {"web": {"standby_mode": "cold"}}).groups["web"].params.standby_mode is StandbyMode.COLD


@pytest.mark.parametrize(
    ("overrides", "lb", "message"),
    [
        ({"db": {"mttr": 1.0}}, None, "unknown target group"),
        ({"web": {"mtrr": 1.0}}, None, "unknown override mtrr"),
        ({"web": {"coverage": 2.0}}, None, "coverage must be within"),
        ({}, {"coverage": 0.5}, "load_balancer: unknown override coverage"),
        ({}, {"mttr": -1.0}, "mttr must be"),
    ],
)
def test_bad_overrides_are_refused(overrides: Any, lb: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        predict(spec_with(), overrides, load_balancer=lb)


# --------------------------------------------------------------------------- JSON and SLO


def test_json_shape_has_the_stable_names() -> None:
    data = predict(spec_with(slo={"target": 99.9})).to_json()
    for key in ("availability", "nines", "downtime_per_year_s", "downtime_per_month_s", "groups", "dominant"):
        assert key in data
    web = data["groups"]["web"]
    for key in ("availability", "nines", "downtime_per_year_s", "contributions", "params", "dominant"):
        assert key in web
    assert set(web["contributions"]) == {"capacity", "switchover", "common_cause", "detection"}
    assert data["availability"] == pytest.approx(1 - data["unavailability"])
    assert sum(c["share"] for c in data["contributions"]) == pytest.approx(1.0)
    assert data["slo"]["target"] == 99.9 and data["slo"]["window_s"] == 30 * 86400


def test_infinite_nines_become_null_in_json() -> None:
    # so many spares that the capacity part underflows to exactly 0
    data = copy.deepcopy(BASE)
    data["target_groups"]["web"]["instances"].update(count=1, standby=200)
    data["target_groups"]["web"]["instances"]["ports"] = "auto"
    p = predict(parse_spec(data), {"web": {"detection_time": 0.0}})
    assert p.groups["web"].to_json()["nines"] is None
    assert p.to_json()["nines"] is not None


def test_slo_check_against_the_prediction() -> None:
    p = predict(spec_with(slo={"target": 99.9, "window": "30d"}))
    assert p.slo is not None
    assert p.slo.meets
    assert p.slo.budget_use == pytest.approx(p.unavailability / 0.001, rel=1e-9)
    strict = predict(spec_with(slo={"target": 99.9999, "window": "7d"}))
    assert strict.slo is not None and not strict.slo.meets
    assert strict.slo.to_json()["expected_downtime_per_window_s"] == pytest.approx(strict.unavailability * 7 * 86400)


# --------------------------------------------------------------------------- spec validation, with field paths


@pytest.mark.parametrize(
    ("changes", "path", "message"),
    [
        ({"web_reliability": {"mtbf": "0s"}}, "target_groups.web.reliability.mtbf", "greater than 0"),
        ({"web_reliability": {"mttr": "soon"}}, "target_groups.web.reliability.mttr", "not a duration"),
        ({"web_reliability": {"mtfb": "1d"}}, "target_groups.web.reliability.mtfb", "unknown key; valid keys here: mtbf, mttr"),
        ({"web_reliability": {"coverage": 1.5}}, "target_groups.web.reliability.coverage", "less than or equal to 1"),
        ({"web_reliability": {"common_cause_beta": -0.1}}, "target_groups.web.reliability.common_cause_beta", "greater than or equal to 0"),
        ({"web_reliability": {"repair_crews": 0}}, "target_groups.web.reliability.repair_crews", "greater than or equal to 1"),
        ({"web_reliability": {"standby_mode": "tepid"}}, "target_groups.web.reliability.standby_mode", "'hot', 'warm' or 'cold'"),
        ({"web_reliability": {"standby_failure_ratio": 0.2}}, "target_groups.web.reliability.standby_failure_ratio", "applies only to standby_mode: warm"),
        ({"web_reliability": {"manual_recovery": 0}}, "target_groups.web.reliability.manual_recovery", "greater than 0"),
        ({"load_balancer": {"reliability": {"mttr": "-1s"}}}, "load_balancer.reliability.mttr", "not a duration"),
        ({"load_balancer": {"reliability": {"coverage": 1}}}, "load_balancer.reliability.coverage", "unknown key"),
        ({"slo": {"target": 100}}, "slo.target", "less than 100"),
        ({"slo": {"target": 99.9, "window": "0s"}}, "slo.window", "greater than 0"),
        ({"slo": {}}, "slo.target", "required"),
    ],
)
def test_bad_reliability_and_slo_fields_are_named(changes: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        spec_with(**changes)
    errors = {e.path: e.message for e in info.value.errors}
    assert path in errors, errors
    assert message in errors[path]


def test_reliability_sections_are_optional_and_in_the_schema() -> None:
    spec = spec_with()
    assert spec.target_groups["web"].reliability is None and spec.slo is None and spec.load_balancer is None
    schema = Spec.model_json_schema()
    assert {"load_balancer", "slo"} <= set(schema["properties"])
    assert "reliability" in schema["$defs"]["TargetGroupSpec"]["properties"]
