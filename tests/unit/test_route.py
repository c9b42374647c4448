"""Listener rules: every condition kind, combinations, order, and every action."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fivenines.core.route import (
    FixedResponse,
    Forward,
    Redirect,
    RequestView,
    Router,
    glob_regex,
    ip_to_int,
)
from fivenines.spec import RuleSpec


def router(*rules: dict[str, Any], default: str = "web") -> Router:
    return Router([RuleSpec.model_validate(r) for r in rules], default)


def req(method: bytes = b"GET", path: bytes = b"/", query: bytes = b"", host: bytes = b"example.com",
        headers: dict[bytes, bytes] | None = None, source: str | None = "10.0.0.1") -> RequestView:
    return RequestView(method, path, query, host, headers, ip_to_int(source) if source else None)


def target(r: Router, request: RequestView) -> str:
    action = r.route(request)
    assert isinstance(action, Forward)
    return action.choose()


def test_no_rules_is_trivial_and_forwards_to_the_default() -> None:
    r = router()
    assert r.trivial and target(r, req()) == "web"


def test_path_globs() -> None:
    r = router({"match": {"path": ["/api/*", "/v?/status"]}, "forward": "api"})
    assert target(r, req(path=b"/api/users/1")) == "api"
    assert target(r, req(path=b"/api/")) == "api"
    assert target(r, req(path=b"/v2/status")) == "api"
    assert target(r, req(path=b"/v22/status")) == "web"
    assert target(r, req(path=b"/API/users")) == "web"  # path is case-sensitive
    assert target(r, req(path=b"/apix")) == "web"
    # percent-encoding cannot dodge a rule
    assert target(r, req(path=b"/%61pi/users")) == "api"


def test_host_globs_ignore_case_and_port() -> None:
    r = router({"match": {"host": ["*.example.com"]}, "forward": "sub"})
    assert target(r, req(host=b"WWW.Example.com:8080")) == "sub"
    assert target(r, req(host=b"example.com")) == "web"
    assert r.needs_host and not r.needs_headers


def test_header_and_method_and_query_and_source() -> None:
    r = router(
        {"match": {"header": {"X-Canary": ["yes", "tru?"]}}, "forward": "canary"},
        {"match": {"method": ["POST", "PUT"]}, "forward": "writes"},
        {"match": {"query": {"version": "2*"}}, "forward": "v2"},
        {"match": {"source_ip": ["192.168.0.0/16", "2001:db8::/32"]}, "forward": "office"},
    )
    assert r.needs_headers and r.needs_query and r.needs_source
    assert target(r, req(headers={b"x-canary": b"YES"})) == "canary"
    assert target(r, req(headers={b"x-canary": b"true"})) == "canary"
    assert target(r, req(headers={b"x-canary": b"no"})) == "web"
    assert target(r, req(method=b"PUT")) == "writes"
    assert target(r, req(method=b"GET", query=b"a=1&Version=2.1")) == "v2"
    assert target(r, req(query=b"version=1")) == "web"
    assert target(r, req(query=b"version=2%2E0")) == "v2"  # percent-decoded
    assert target(r, req(source="192.168.7.9")) == "office"
    assert target(r, req(source="2001:db8::1")) == "office"
    assert target(r, req(source="::ffff:192.168.1.1")) == "office"  # v4-mapped
    assert target(r, req(source="10.9.9.9")) == "web"


def test_conditions_combine_with_and_values_with_or() -> None:
    r = router({"match": {"path": ["/admin/*"], "method": ["POST"], "source_ip": ["10.0.0.0/8"]},
                "forward": "admin"})
    assert target(r, req(method=b"POST", path=b"/admin/x", source="10.1.1.1")) == "admin"
    assert target(r, req(method=b"GET", path=b"/admin/x", source="10.1.1.1")) == "web"
    assert target(r, req(method=b"POST", path=b"/other", source="10.1.1.1")) == "web"
    assert target(r, req(method=b"POST", path=b"/admin/x", source="11.1.1.1")) == "web"


def test_first_matching_rule_wins() -> None:
    r = router(
        {"match": {"path": ["/api/special"]}, "forward": "special"},
        {"match": {"path": ["/api/*"]}, "forward": "api"},
    )
    assert target(r, req(path=b"/api/special")) == "special"
    assert target(r, req(path=b"/api/other")) == "api"


def test_weighted_forward_splits_exactly_and_interleaves() -> None:
    r = router({"match": {"path": ["/*"]}, "forward": {"target_groups": {"stable": 90, "canary": 10}}})
    action = r.route(req())
    assert isinstance(action, Forward)
    picks = [action.choose() for _ in range(100)]
    assert Counter(picks) == {"stable": 90, "canary": 10}
    assert "canary" not in picks[:5] and picks[:10].count("canary") == 1  # spread, not bunched
    # a sticky client keeps its group while that group still has weight
    assert all(action.choose("canary") == "canary" for _ in range(10))
    assert action.choose("gone") in ("stable", "canary")


def test_redirect_action() -> None:
    r = router({"match": {"host": ["old.example.com"]},
                "redirect": {"url": "https://new.example.com/#{path}?#{query}", "status": 301}})
    action = r.route(req(host=b"old.example.com"))
    assert isinstance(action, Redirect) and action.status == 301
    assert action.location(b"http", b"old.example.com", b"80", b"/a", b"q=1") == b"https://new.example.com/a?q=1"
    r2 = router({"match": {"path": ["/x"]}, "redirect": {"url": "#{protocol}://#{host}:#{port}/y"}})
    a2 = r2.route(req(path=b"/x"))
    assert isinstance(a2, Redirect) and a2.status == 302
    assert a2.location(b"http", b"h", b"8080", b"/x", b"") == b"http://h:8080/y"


def test_fixed_response_action_is_rendered_once() -> None:
    r = router({"match": {"path": ["/blocked"]},
                "fixed_response": {"status": 403, "body": "no\n", "content_type": "text/plain"}})
    a = r.route(req(path=b"/blocked"))
    assert isinstance(a, FixedResponse)
    assert a.head == b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
    assert a.body == b"no\n"
    assert r.route(req(path=b"/blocked")) is a  # the same object: nothing built per request


def test_groups_lists_every_forward_target() -> None:
    r = router({"match": {"path": ["/a"]}, "forward": {"target_groups": {"x": 1, "y": 1}}},
               {"match": {"path": ["/b"]}, "fixed_response": {"status": 200}})
    assert r.groups() == {"web", "x", "y"}


@given(st.text(alphabet="abc/*?.-", min_size=1, max_size=12), st.text(alphabet="abc/.-", max_size=12))
def test_glob_matches_like_fnmatch_without_brackets(pattern: str, value: str) -> None:
    import fnmatch

    want = fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))
    assert bool(glob_regex([pattern], ignore_case=False).fullmatch(value.encode())) == want


@pytest.mark.parametrize("special", [".", "+", "(", "[", "\\", "$", "^"])
def test_glob_escapes_regex_characters(special: str) -> None:
    rx = glob_regex([f"/a{special}b"], ignore_case=False)
    assert rx.fullmatch(f"/a{special}b".encode())
    assert not rx.fullmatch(b"/axb")


def test_the_routing_example_loads_and_routes() -> None:
    from pathlib import Path

    from fivenines.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "examples" / "routing.yaml")
    ls = spec.listeners[0]
    r = Router(ls.rules, ls.default_target_group)
    assert target(r, req(method=b"POST", path=b"/api/x")) == "api"
    canary = r.route(req(path=b"/api/x"))
    assert isinstance(canary, Forward) and canary.groups == ("api", "canary") and canary.stickiness == 3600
    assert isinstance(r.route(req(path=b"/old/a", query=b"q=1")), Redirect)
    assert target(r, req(path=b"/admin/x", source="127.0.0.1")) == "web"
    assert isinstance(r.route(req(path=b"/admin/x", source="10.2.3.4")), FixedResponse)
    assert spec.listeners[1].protocol == "tcp"
