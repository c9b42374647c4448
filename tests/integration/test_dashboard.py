"""The dashboard in a real headless Chromium (Debian's): it renders the targets and shows a
killed instance unhealthy within seconds, with nothing loaded from outside fivenines."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from tests.helpers import demo_spec, require_binary, wait_until
from tests.ops_helpers import Chromium

pytestmark = pytest.mark.slow

ROWS = """JSON.stringify([...document.querySelectorAll('tr[data-target]')].map(r => [
  r.dataset.target, r.dataset.state, r.dataset.role, r.querySelector('.badge').textContent]))"""


def test_dashboard_renders_targets_and_shows_a_killed_instance_unhealthy(run_fivenines: Any) -> None:
    import json

    chromium = require_binary("chromium")
    spec = demo_spec(count=2, standby=1)
    # a long restart delay keeps the killed instance unhealthy long enough to look at
    spec["target_groups"]["web"]["instances"]["restart"] = {"initial_delay": "20s", "jitter": 0}
    f = run_fivenines(spec)
    f.wait_healthy()
    for _ in range(10):
        assert f.get("/")[0] == 200
    browser = Chromium(chromium, f"{f.admin}/")
    try:
        rows = wait_until(lambda: (r := json.loads(browser.evaluate(ROWS))) and len(r) == 3
                          and all(x[1] == "healthy" for x in r) and r, 10, 0.1, what="three healthy rows")
        assert [(r[0], r[2]) for r in rows] == [("web-1", "active"), ("web-2", "active"), ("web-3", "standby")]
        assert all(r[3] == "healthy" for r in rows)
        # the page's own data: service name, listener row, the serving counts
        assert browser.evaluate("document.getElementById('name').textContent") == "t"
        assert browser.evaluate("document.querySelectorAll('tr[data-listener]').length") == 1
        # everything the page loaded came from fivenines itself (no CDN)
        origins = browser.evaluate("[...new Set(performance.getEntriesByType('resource').map(e => "
                                   "new URL(e.name).origin))]")
        assert origins == [f.admin], origins

        victim = f.target("web-1")
        os.kill(victim["pid"], signal.SIGKILL)
        killed = time.monotonic()
        state = "document.querySelector('tr[data-target=\"web-1\"]').dataset.state"
        wait_until(lambda: browser.evaluate(state) == "unhealthy", 5, 0.05, what="web-1 shown unhealthy")
        shown_after = time.monotonic() - killed
        assert shown_after < 3.0, shown_after
        # the promotion and the health event appear too
        wait_until(lambda: browser.evaluate(
            "document.querySelector('tr[data-target=\"web-3\"]').dataset.role") == "active", 5, 0.05,
            what="web-3 shown active")
        # the events list is fed on its own (the table's roles may arrive first): wait for the line
        events_js = "[...document.querySelectorAll('#events li')].map(li => li.textContent)"
        wait_until(lambda: any("web/web-1" in e and "unhealthy" in e and "Target.ProcessExited" in e
                               for e in browser.evaluate(events_js)), 5, 0.05, what="web-1's health event listed")
    finally:
        browser.close()
