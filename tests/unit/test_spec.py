"""The spec: durations, validation errors with field paths, cross-field checks."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from fivenines.errors import SpecError
from fivenines.spec import json_schema, load_spec, parse_duration, parse_spec, port_errors
from tests.helpers import demo_spec, write_spec

EXAMPLE = Path(__file__).parents[2] / "examples" / "demo.yaml"


def errors_of(data: Any) -> list[str]:
    with pytest.raises(SpecError) as ei:
        parse_spec(data, "f.yaml")
    return [str(e) for e in ei.value.errors]


def test_example_spec_is_valid() -> None:
    spec = load_spec(EXAMPLE)
    web = spec.target_groups["web"]
    assert web.instances is not None and (web.instances.count, web.instances.standby) == (2, 1)
    assert web.health_check.interval == 1.0 and web.health_check.timeout == 0.5
    assert web.health_check.matcher_ranges == ((200, 399),)


@pytest.mark.parametrize(("text", "secs"), [("500ms", 0.5), ("1s", 1), ("2m", 120), ("1.5h", 5400), ("30d", 2592000), (3, 3.0), ("7", 7.0)])
def test_durations(text: Any, secs: float) -> None:
    assert parse_duration(text) == secs


@pytest.mark.parametrize("bad", ["fast", "1 sec", "-1s", True, None, "1e3"])
def test_bad_durations(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_timeout_must_be_below_interval_with_field_path() -> None:
    data = demo_spec(interval="1s", timeout="2s")
    [msg] = errors_of(data)
    assert msg == "target_groups.web.health_check.timeout: timeout (2s) must be less than interval (1s)"


def test_unknown_key_names_the_valid_ones() -> None:
    data = demo_spec()
    data["target_groups"]["web"]["health_check"]["intervall"] = "1s"
    [msg] = errors_of(data)
    assert msg.startswith("target_groups.web.health_check.intervall: unknown key; valid keys here: protocol, path, port, interval")


def test_unknown_top_level_key() -> None:
    data = demo_spec()
    data["listner"] = []
    [msg] = errors_of(data)
    assert msg.startswith("listner: unknown key; valid keys here: name, admin")


@pytest.mark.parametrize("field", ["healthy_threshold", "unhealthy_threshold"])
def test_thresholds_at_least_one(field: str) -> None:
    data = demo_spec()
    data["target_groups"]["web"]["health_check"][field] = 0
    [msg] = errors_of(data)
    assert msg.startswith(f"target_groups.web.health_check.{field}: Input should be greater than or equal to 1")


def test_listener_target_group_must_exist() -> None:
    data = demo_spec()
    data["listeners"][0]["default_target_group"] = "api"
    assert errors_of(data) == ["listeners.0.default_target_group: no target group 'api'; defined: web"]


def test_bad_algorithm_lists_valid_values() -> None:
    data = demo_spec()
    data["target_groups"]["web"]["algorithm"] = "fastest"
    [msg] = errors_of(data)
    assert msg.startswith("target_groups.web.algorithm: Input should be 'round_robin'")


def test_bad_matcher_and_missing_required() -> None:
    data = demo_spec()
    data["target_groups"]["web"]["health_check"]["matcher"] = "2xx"
    del data["listeners"][0]["default_target_group"]
    msgs = errors_of(data)
    assert "listeners.0.default_target_group: required but missing" in msgs
    assert any(m.startswith("target_groups.web.health_check.matcher: '2xx' is not a matcher") for m in msgs)


def test_instances_or_targets_exactly_one() -> None:
    data = demo_spec()
    data["target_groups"]["web"]["targets"] = ["127.0.0.1:9001"]
    assert errors_of(data) == [
        "target_groups.web: give exactly one of instances (run them) or targets (balance existing servers)"
    ]


def test_string_command_needs_shell() -> None:
    data = demo_spec()
    data["target_groups"]["web"]["instances"]["command"] = "python -m fivenines.demo --port {port}"
    assert errors_of(data) == [
        "target_groups.web.instances.command: a string command needs shell: true; otherwise give an argv list"
    ]


def test_port_range_too_small() -> None:
    data = demo_spec(count=2, standby=1)
    data["target_groups"]["web"]["instances"]["ports"] = "9101-9102"
    [msg] = errors_of(data)
    assert msg == "target_groups.web.instances.ports: range 9101-9102 has 2 ports but count + standby = 3"


def test_busy_listener_port_is_reported() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        data = demo_spec()
        data["listeners"][0]["port"] = port
        spec = parse_spec(data)
        assert [str(e) for e in port_errors(spec)] == [f"listeners.0.port: 127.0.0.1:{port} is in use"]


def test_not_a_mapping_and_bad_yaml(tmp_path: Path) -> None:
    assert errors_of(["a"]) == ["the spec must be a mapping (name:, listeners:, target_groups:)"]
    p = tmp_path / "bad.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(SpecError) as ei:
        load_spec(p)
    assert str(ei.value).startswith(f"{p}: not valid YAML: line ")
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    data = demo_spec(interval="1s", timeout="1s")
    data["name"] = "bad name!"
    data["target_groups"]["web"]["instances"]["count"] = 0
    with pytest.raises(SpecError) as ei:
        load_spec(write_spec(tmp_path / "f.yaml", data))
    paths = sorted(e.path for e in ei.value.errors)
    assert paths == ["name", "target_groups.web.health_check.timeout", "target_groups.web.instances.count"]


def test_json_schema_has_descriptions() -> None:
    schema = json_schema()
    assert schema["title"] == "Spec"
    hc = schema["$defs"]["HealthCheckSpec"]["properties"]
    assert "healthy" in hc["healthy_threshold"]["description"]


def test_rules_and_data_plane_fields_validate() -> None:
    data = demo_spec()
    data["target_groups"]["canary"] = {"targets": [{"address": "127.0.0.1:9001", "weight": 3}, "127.0.0.1:9002"],
                                       "algorithm": "hash", "hash_on": {"header": "X-User"}}
    data["listeners"][0]["rules"] = [
        {"match": {"path": ["/api/*"], "method": ["GET"], "source_ip": ["10.0.0.0/8"]},
         "forward": {"target_groups": {"web": 90, "canary": 10}}},
        {"match": {"host": ["old.example.com"]}, "redirect": {"url": "https://new.example.com#{path}", "status": 301}},
        {"match": {"path": ["/down"]}, "fixed_response": {"status": 503, "body": "maintenance"}},
    ]
    spec = parse_spec(data)
    assert spec.listeners[0].rules[0].forward_weights() == {"web": 90, "canary": 10}
    assert [t.weight for t in spec.target_groups["canary"].target_list()] == [3, 1]


def test_rule_errors_name_their_paths() -> None:
    data = demo_spec()
    data["listeners"][0]["rules"] = [
        {"match": {}, "forward": "nope"},
        {"match": {"path": ["/x"]}, "forward": "web", "fixed_response": {"status": 200}},
        {"match": {"source_ip": ["10.0.0.300/8"]}, "forward": "web"},
    ]
    msgs = errors_of(data)
    assert "listeners.0.rules.2.match.source_ip: '10.0.0.300/8' is not a CIDR, e.g. 10.0.0.0/8 or 192.168.1.7/32" in msgs
    data["listeners"][0]["rules"].pop()
    msgs = errors_of(data)
    assert msgs == [
        "listeners.0.rules.0.match: give at least one condition: path, host, header, method, query, source_ip",
        "listeners.0.rules.0.forward: no target group 'nope'; defined: web",
        "listeners.0.rules.1: give exactly one action: forward, redirect or fixed_response",
    ]


def test_hash_needs_hash_on_and_tcp_has_no_rules() -> None:
    data = demo_spec()
    data["target_groups"]["web"]["algorithm"] = "hash"
    data["listeners"][0]["protocol"] = "tcp"
    data["listeners"][0]["rules"] = [{"match": {"path": ["/"]}, "forward": "web"}]
    assert errors_of(data) == [
        "listeners.0.rules: rules match HTTP requests; a tcp listener has none",
        "target_groups.web.hash_on: algorithm hash needs exactly one of header, cookie or uri",
    ]
