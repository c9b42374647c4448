"""/metrics: parses with Prometheus' own parser, follows conventions, and moves with traffic."""

from __future__ import annotations

import os
import signal
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import demo_spec, http_get, wait_until

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(admin: str) -> tuple[Samples, dict[str, str], str]:
    with urllib.request.urlopen(f"{admin}/metrics", timeout=5) as r:
        ctype = r.headers["Content-Type"]
        text = r.read().decode()
    samples: Samples = {}
    types: dict[str, str] = {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, types, ctype


def v(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_parse_and_move_as_traffic_flows(run_fivenines: Any) -> None:
    # a matcher that accepts 5xx keeps a failing target in service, so its 500s are counted
    f = run_fivenines(demo_spec(count=2, standby=1, health_check={"interval": "200ms", "timeout": "150ms",
                                                                  "matcher": "200-599"}))
    f.wait_healthy()
    m0, types, ctype = scrape(f.admin)
    assert ctype.startswith("text/plain; version=")
    # conventions: one prefix, counters are counters (exposed with _total), durations in seconds
    assert all(name.startswith("fivenines_") for name in types)
    for name in ("fivenines_listener_requests", "fivenines_target_requests", "fivenines_target_responses",
                 "fivenines_target_retries", "fivenines_target_ejections", "fivenines_group_failovers",
                 "fivenines_group_promotions", "fivenines_target_restarts", "fivenines_listener_connections"):
        assert types[name] == "counter", name
    for name in ("fivenines_target_request_duration_seconds", "fivenines_health_check_duration_seconds"):
        assert types[name] == "histogram"
    for name in ("fivenines_target_in_flight_requests", "fivenines_target_health_state", "fivenines_target_role",
                 "fivenines_group_serving_targets", "fivenines_listener_connections_open"):
        assert types[name] == "gauge"
    listener = f"{f.host}:{f.port}"
    assert v(m0, "fivenines_target_health_state", group="web", target="web-1", state="healthy") == 1
    assert v(m0, "fivenines_target_health_state", group="web", target="web-1", state="unhealthy") == 0
    assert v(m0, "fivenines_target_role", group="web", target="web-3", role="standby") == 1
    assert v(m0, "fivenines_health_check_duration_seconds_count", group="web", result="pass") >= 6
    assert types["fivenines_group_fail_open"] == types["fivenines_target_ejected"] == "gauge"
    assert ("fivenines_group_fail_open", frozenset({("group", "web")})) in m0
    assert v(m0, "fivenines_group_fail_open", group="web") == 0
    assert v(m0, "fivenines_target_ejected", group="web", target="web-1") == 0
    # what runs, as /status says: compiled (1, no reason) or from source (0, and why)
    plane = [(dict(labels), value) for (name, labels), value in m0.items() if name == "fivenines_data_plane_compiled"]
    mode = f.status()["data_plane"]
    expected = [({"reason": ""}, 1.0)] if mode == "compiled" else [({"reason": mode[len("pure ("):-1]}, 0.0)]
    assert plane == expected, mode

    for _ in range(20):
        assert f.get("/")[0] == 200
    m1, _, _ = scrape(f.admin)
    assert v(m1, "fivenines_listener_requests_total", listener=listener) - \
        v(m0, "fivenines_listener_requests_total", listener=listener) == 20
    for tid in ("web-1", "web-2"):
        lab = {"group": "web", "target": tid}
        assert v(m1, "fivenines_target_requests_total", **lab) - v(m0, "fivenines_target_requests_total", **lab) == 10
        assert v(m1, "fivenines_target_responses_total", code_class="2xx", **lab) == 10
        assert v(m1, "fivenines_target_request_duration_seconds_count", **lab) == 10
        assert v(m1, "fivenines_target_request_duration_seconds_bucket", le="+Inf", **lab) == 10
        assert 0 < v(m1, "fivenines_target_request_duration_seconds_sum", **lab) < 10 * 1.0
        assert v(m1, "fivenines_target_request_duration_seconds_bucket", le="1.0", **lab) == 10
    assert v(m1, "fivenines_target_requests_total", group="web", target="web-3") == 0

    # a target's 5xx answers are counted by class and as errors, also when the request was
    # retried on another target (a GET is idempotent: the client gets the other target's 200)
    host, port = f.target("web-2")["address"].rsplit(":", 1)
    http_get(host, int(port), "/_fail")
    codes = [f.get("/")[0] for _ in range(4)]
    assert codes == [200] * 4
    m2, _, _ = scrape(f.admin)
    web2 = {"group": "web", "target": "web-2"}
    failed = v(m2, "fivenines_target_requests_total", **web2) - v(m1, "fivenines_target_requests_total", **web2)
    assert failed >= 1  # every attempt on web-2 got its 500, and was retried on web-1
    assert v(m2, "fivenines_target_responses_total", code_class="5xx", **web2) == failed
    assert v(m2, "fivenines_target_errors_total", **web2) == failed
    assert v(m2, "fivenines_target_retries_total", **web2) == failed
    assert v(m2, "fivenines_listener_retries_total", listener=listener) == failed

    # a failover: the killed active is unhealthy, the standby promoted, the group counts it
    os.kill(f.target("web-1")["pid"], signal.SIGKILL)
    wait_until(lambda: f.target("web-3")["role"] == "active", 5, 0.02, what="web-3 promoted")
    m3, _, _ = scrape(f.admin)
    # counted from m0: a slow start-up has promotions of its own (a standby in for a slow starter)
    for name in ("fivenines_group_failovers_total", "fivenines_group_promotions_total"):
        assert v(m3, name, group="web") - v(m0, name, group="web") == 1, name
    assert v(m3, "fivenines_target_role", group="web", target="web-3", role="active") == 1
    assert v(m3, "fivenines_target_serving", group="web", target="web-3") == 1
    assert v(m3, "fivenines_events_total", kind="role") >= 2
    m4, _, _ = wait_until(lambda: (m := scrape(f.admin)) and
                          v(m[0], "fivenines_target_restarts_total", group="web", target="web-1") == 1 and m, 10, 0.05,
                          what="web-1 restarted")
    assert v(m4, "fivenines_reloads_total", result="ok") == 0 and v(m4, "fivenines_config_generation") == 1


def test_grafana_dashboard_queries_only_metrics_fivenines_exposes(run_fivenines: Any) -> None:
    import json
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parents[2]
    text = (root / "docs" / "grafana-dashboard.json").read_text()
    generated = subprocess.run([sys.executable, str(root / "scripts" / "grafana_dashboard.py")], capture_output=True,
                               text=True, check=True).stdout
    assert generated == text, "regenerate: python scripts/grafana_dashboard.py > docs/grafana-dashboard.json"
    dash = json.loads(text)
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in dash["templating"]["list"]]
    used = {m for e in exprs for m in re.findall(r"fivenines_[a-z_]+", e)}
    assert len(used) >= 15
    f = run_fivenines(demo_spec(count=1, standby=0))
    f.wait_healthy()
    assert f.get("/")[0] == 200
    samples, _, _ = scrape(f.admin)
    exposed = {name for name, _ in samples}
    assert used <= exposed, sorted(used - exposed)
    for p in dash["panels"]:
        assert p["type"] == "row" or p["targets"], p["title"]
