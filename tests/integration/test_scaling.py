"""Elastic scaling in a real fivenines: real demo backends with a fixed cost, an open-loop load.

Short windows (1 s evaluations, a 2 s window, a 4 s stabilisation) keep each test under
about 40 s; bounds are generous (a loaded 2-core machine): the counts asserted are the
ones the decision must reach, not timings.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fivenines.chaos.loadgen import LoadGen
from fivenines.chaos.outcomes import OutcomeLog
from tests.helpers import PY, LoopThread, demo_spec, http_get, wait_until
from tests.ops_helpers import admin_call, token_of

pytestmark = pytest.mark.slow

TARGET = 30  # requests per second per instance; an instance serves up to 100 (20 ms, 2 at once)


def scaled_spec(interval: str = "200ms", timeout: str = "150ms", **scaling: Any) -> dict[str, Any]:
    spec = demo_spec(count=1, standby=1, interval=interval, timeout=timeout, deregistration_delay="5s")
    tg = spec["target_groups"]["web"]
    tg["instances"]["command"] += ["--cost-ms", "20", "--capacity", "2"]
    tg["health_check"]["startup_grace"] = "5s"  # a check before the demo listens does not swap the roles
    # a short hold: were a new active placed after the standby, the standby would soon be "reinstated"
    tg["failover"] = {"hold_time": "1s"}
    tg["outlier_detection"] = {"latency": None}  # the test slows the actives down on purpose
    tg["scaling"] = {"min": 1, "max": 4, "policies": [{"requests_per_target": TARGET}],
                     "evaluation_interval": "1s", "scale_out_window": "2s", "scale_in_stabilization": "4s",
                     **scaling}
    return spec


class Phases:
    """An open-loop load of ``(rate, seconds)`` phases, one after the other, on a background loop."""

    def __init__(self, host: str, port: int, phases: list[tuple[float, float]]) -> None:
        self.lt = LoopThread()
        self.logs: list[OutcomeLog] = []
        self.phase = -1
        self.closed = False

        async def run() -> None:
            for i, (rate, seconds) in enumerate(phases):
                self.phase = i
                gen = LoadGen(host, port, rate, seconds, timeout=5.0, max_connections=64)
                self.logs.append(await gen.run(gen.clock()))
            self.phase = len(phases)

        self.future: concurrent.futures.Future[None] = asyncio.run_coroutine_threadsafe(run(), self.lt.loop)

    def finish(self, timeout: float) -> list[OutcomeLog]:
        try:
            self.future.result(timeout)
        finally:
            self.close()
        return self.logs

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.future.cancel()
            self.lt.close()


@pytest.fixture
def load_runs() -> Iterator[list[Phases]]:
    runs: list[Phases] = []
    yield runs
    for r in runs:
        r.close()


def events(f: Any, kind: str = "scaling") -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{f.admin}/events?limit=1000", timeout=5) as r:
        import json

        return [e for e in json.loads(r.read())["events"] if e["kind"] == kind]


def scaling(f: Any) -> dict[str, Any]:
    st: dict[str, Any] = f.status()["target_groups"]["web"]["scaling"]
    return st


def roles(f: Any) -> dict[str, str]:
    return {t["id"]: t["role"] for t in f.targets()}


def test_scale_out_and_in_under_load_fails_no_request(run_fivenines: Any, load_runs: list[Phases]) -> None:
    # checks slow enough to pass while the actives answer in 300 ms (below)
    f = run_fivenines(scaled_spec(interval="600ms", timeout="500ms"))
    f.wait_healthy()
    assert roles(f) == {"web-1": "active", "web-2": "standby"}
    # 2.5x the target on the one active (3 instances' worth), then a light load for the scale-in
    load = Phases(f.host, f.port, [(2.5 * TARGET, 12.0), (12.0, 14.0)])
    load_runs.append(load)
    out = wait_until(lambda: [e for e in events(f) if e["target"] == "" and e["old"].isdigit()
                              and int(e["new"]) > int(e["old"])], 15, 0.2, what="a scale-out")
    first = out[0]
    assert re.fullmatch(rf"scaled web 1 -> [23]: requests_per_target [\d.]+/s > target {TARGET}/s", first["reason"]), first
    # the group reaches 3 actives (the load's worth) and they serve, warm
    wait_until(lambda: scaling(f)["current"] == 3 and sum(
        t["state"] == "healthy" and t["role"] == "active" for t in f.targets()) == 3, 15, 0.2, what="3 healthy actives")
    ids = roles(f)
    assert ids["web-2"] == "standby"  # the standby pool is untouched
    assert [t["id"] for t in f.targets()] == ["web-1", "web-3", "web-4", "web-2"]  # the standby's place is last
    assert set(ids) == {"web-1", "web-2", "web-3", "web-4"}  # new ids after web-{count + standby}
    st = scaling(f)
    assert (st["min"], st["max"], st["manual"]) == (1, 4, None) and st["metrics"][0]["metric"] == "requests_per_target"
    # every active now answers in 300 ms: the ones a scale-in removes have requests in flight as they drain
    for t in f.targets():
        if t["role"] == "active":
            host, port = t["address"].rsplit(":", 1)
            assert http_get(host, int(port), "/_slow?ms=300")[0] == 200
    # light load: every evaluation agrees the group may shrink; after the 4 s window it does
    down = wait_until(lambda: [e for e in events(f) if e["target"] == "" and e["old"].isdigit()
                               and int(e["new"]) < int(e["old"])], 25, 0.2, what="a scale-in")
    seen: list[tuple[str, str]] = []  # (health, instance state) of the instances going, while they drain

    def back_to_one() -> bool:
        targets = f.targets()
        seen.extend((t["state"], t["instance"]["state"]) for t in targets if t["id"] in ("web-3", "web-4"))
        return scaling(f)["current"] == 1 and {t["id"]: t["role"] for t in targets} == {
            "web-1": "active", "web-2": "standby"}

    wait_until(back_to_one, 20, 0.03, what="back to one active: the two new instances drained and stopped")
    # an instance is stopped only once drained (its in-flight requests finished)
    assert all(inst == "running" for health, inst in seen if health == "draining"), seen
    down = [e for e in events(f) if e["target"] == "" and e["old"].isdigit() and int(e["new"]) < int(e["old"])]
    for e in down:  # one step, or two as the light load's rate settles in the window
        assert re.fullmatch(rf"scaled web [32] -> [21]: every policy below target: requests_per_target [\d.]+/s "
                            rf"< target {TARGET}/s( \(highest recommendation in the last 4s: 2\))?", e["reason"]), e
    removed = [e for e in events(f) if e["target"] and e["new"] == "removed"]
    assert sorted(e["target"] for e in removed) == ["web-3", "web-4"]
    drains = [e for e in events(f, "drain") if e["target"] in ("web-3", "web-4") and e["new"] == "unused"]
    assert len(drains) == 2 and all(e["reason"].startswith("drained in ") for e in drains), drains  # none cut
    for e in removed:  # drained first, stopped after
        assert next(d["seq"] for d in drains if d["target"] == e["target"]) < e["seq"], (drains, removed)
    logs = load.finish(30)
    for log in logs:
        failed = int(log.failed_mask().sum())
        assert failed == 0, (failed, log.n)
        assert int(log.good_mask().sum()) == log.n
    listener = f.status()["listeners"][0]
    assert listener["failed"] == 0 and listener["retries"] == 0
    # one scale-out phase (possibly in steps), one scale-in: no flapping
    changes = [e for e in events(f) if e["target"] == "" and e["old"].isdigit()]
    directions = [int(e["new"]) > int(e["old"]) for e in changes]
    assert directions == sorted(directions, reverse=True), [e["reason"] for e in changes]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "fivenines", *args], capture_output=True, text=True, timeout=60, check=False)


def test_manual_override_status_metrics_and_refusals(run_fivenines: Any, tmp_path: Path) -> None:
    f = run_fivenines(scaled_spec(scale_in_stabilization="60s"))
    f.wait_healthy()
    spec = str(f.spec_path)
    r = cli("scale", "web", "3", "-f", spec)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("web: scaling 3 of 1..4 (manual 3); requests_per_target"), r.stdout
    assert "last: scale web 1 -> 3: manual override 3" in r.stdout
    wait_until(lambda: sum(t["state"] == "healthy" and t["role"] == "active" for t in f.targets()) == 3,
               15, 0.1, what="3 healthy actives")
    ev = events(f)
    assert [e["reason"] for e in ev if e["target"] == ""][-2:] == [
        "manual override 3 (admin API from 127.0.0.1)", "scaled web 1 -> 3: manual override 3"]
    # status: text and JSON, every field described in the OpenAPI document
    text = cli("status", "-f", spec)
    assert text.returncode == 0 and "web: scaling 3 of 1..4 (manual 3)" in text.stdout, text.stdout
    with urllib.request.urlopen(f"{f.admin}/openapi.yaml", timeout=5) as resp:
        schema = yaml.safe_load(resp.read())["components"]["schemas"]["Scaling"]["properties"]
    st = scaling(f)
    assert set(st) <= set(schema) and set(st["metrics"][0]) <= set(schema["metrics"]["items"]["properties"])
    # metrics (the policy's value once the three warm actives have two samples each)
    def scrape() -> str:
        with urllib.request.urlopen(f"{f.admin}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    value = r'fivenines_scaling_metric\{group="web",metric="requests_per_target"\} 0.0'
    metrics = wait_until(lambda: m if re.search(value, m := scrape()) else None, 10, 0.2, what="the metric")
    for line in ('fivenines_scaling_current{group="web"} 3.0', 'fivenines_scaling_desired{group="web"} 3.0',
                 'fivenines_scaling_min{group="web"} 1.0', 'fivenines_scaling_max{group="web"} 4.0',
                 'fivenines_scaling_manual{group="web"} 3.0',
                 'fivenines_scaling_target{group="web",metric="requests_per_target"} 30.0',
                 'fivenines_scaling_changes_total{direction="out",group="web"} 1.0'):
        assert line in metrics, line
    # refusals: out of range, unknown group, not a count; the token is needed
    r = cli("scale", "web", "9", "-f", spec)
    assert r.returncode == 1 and "scale web: web scales within 1..4: 9 is outside" in r.stderr, r.stderr
    r = cli("scale", "nope", "2", "-f", spec)
    assert r.returncode == 1 and "no target group 'nope'" in r.stderr, r.stderr
    r = cli("scale", "web", "two", "-f", spec)
    assert r.returncode == 2 and "'two' is not a count" in r.stderr, r.stderr
    assert admin_call(f.admin, "POST", "/target_groups/web/scale?count=2")[0] == 401
    token = token_of(tmp_path / "state")
    status, data, _ = admin_call(f.admin, "POST", "/target_groups/web/scale?count=x", token)
    assert status == 400 and "count must be a whole number or auto" in data["error"]
    # down by the operator's word: at once, drained; then auto: the policies decide again (no scale-in
    # before the 60 s window: the override of 3 is remembered in it)
    r = cli("scale", "web", "2", "-f", spec)
    assert r.returncode == 0 and "scale web 3 -> 2: manual override 2" in r.stdout, r.stdout
    wait_until(lambda: len(f.targets()) == 3, 15, 0.1, what="one instance drained out")
    assert roles(f)["web-2"] == "standby"
    r = cli("scale", "web", "auto", "-f", spec)
    assert r.returncode == 0 and "(manual" not in r.stdout, r.stdout
    assert scaling(f)["manual"] is None and scaling(f)["current"] == 2
    assert events(f)[-1]["reason"] == "manual override cleared: the policies decide (admin API from 127.0.0.1)"
    # a reload: count is the starting count only (the group keeps its 2); a lower max clamps it
    data = yaml.safe_load(f.spec_path.read_text())
    data["target_groups"]["web"]["instances"]["count"] = 3
    f.spec_path.write_text(yaml.safe_dump(data))
    r = cli("reload", "-f", spec)
    assert r.returncode == 0 and "no change" in r.stdout, r.stdout + r.stderr
    assert scaling(f)["current"] == 2
    data["target_groups"]["web"]["instances"]["count"] = 1
    data["target_groups"]["web"]["scaling"]["max"] = 1
    f.spec_path.write_text(yaml.safe_dump(data))
    r = cli("reload", "-f", spec)
    assert r.returncode == 0 and "web: 1 active" in r.stdout, r.stdout + r.stderr
    wait_until(lambda: len(f.targets()) == 2 and scaling(f)["current"] == 1 and scaling(f)["max"] == 1, 15, 0.1,
               what="the clamp to max 1")
    assert roles(f) == {"web-1": "active", "web-2": "standby"}  # an active went, the standby stayed
    assert events(f)[-1]["reason"].startswith("scaling settings changed: 1..1 from 1 actives")


def test_a_group_without_scaling_refuses_a_count(run_fivenines: Any) -> None:
    f = run_fivenines(demo_spec(count=1, standby=0))
    f.wait_healthy()
    assert f.status()["target_groups"]["web"]["scaling"] is None
    r = cli("scale", "web", "2", "-f", str(f.spec_path))
    assert r.returncode == 1 and "web has no scaling: section: its count is fixed" in r.stderr, r.stderr


def test_the_dashboard_shows_the_scaling_of_a_group(run_fivenines: Any, tmp_path: Path) -> None:
    import json

    from tests.helpers import require_binary
    from tests.ops_helpers import Chromium

    chromium = require_binary("chromium")
    f = run_fivenines(scaled_spec())
    f.wait_healthy()
    browser = Chromium(chromium, f"{f.admin}/")
    shown = ("JSON.stringify((e => e && [e.dataset.current, e.dataset.desired, e.dataset.min, e.dataset.max, "
             "e.dataset.manual, e.textContent])(document.querySelector('section[data-group=\"web\"] p.scaling')))")
    try:
        first = wait_until(lambda: (x := json.loads(browser.evaluate(shown))) and x, 10, 0.1, what="the scaling line")
        assert first[:5] == ["1", "1", "1", "4", ""], first
        assert first[5].startswith("scaling 1 of 1..4 · requests_per_target "), first
        status, _, _ = admin_call(f.admin, "POST", "/target_groups/web/scale?count=2", token_of(tmp_path / "state"))
        assert status == 200
        line = wait_until(lambda: (x := json.loads(browser.evaluate(shown))) and x[0] == "2" and x, 10, 0.1,
                          what="the new count shown")
        assert line[4] == "2" and line[5].startswith("scaling 2 of 1..4 (manual 2) · "), line
        # the last decision: the scale itself, or (one evaluation later, on a slow machine) the hold it sets
        assert line[5].endswith(("scale web 1 -> 2: manual override 2", "hold web at 2: manual override 2")), line
    finally:
        browser.close()
