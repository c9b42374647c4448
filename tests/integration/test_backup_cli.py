"""``fivenines backup | backups | restore`` as real commands (subprocesses) against a running
``fivenines up`` with a replicated redis group backed up to a local directory; the admin routes
they use, over HTTP. Every process is stopped at the end, even on failure."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PY, Fivenines, wait_until
from tests.redis_helpers import backup_spec, dump, group, redis, wait_settled, write

YEARLY = "0 0 1 1 *"  # no scheduled backup during the test: only the commands take them


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Fivenines]:
    f = Fivenines(tmp_path, backup_spec(schedule=YEARLY))
    try:
        yield f
    finally:
        f.stop()


def cli(f: Fivenines, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "fivenines", *args, "-f", str(f.spec_path)], capture_output=True, text=True,
                          timeout=timeout)


def http(f: Fivenines, method: str, path: str, token: str | None = None) -> tuple[int, Any, dict[str, str]]:
    req = urllib.request.Request(f"{f.admin}{path}", method=method,
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def test_backup_backups_restore_and_drill_from_the_command_line(running: Fivenines, tmp_path: Path) -> None:
    f = running
    p = wait_settled(f)
    primary = p["address"]
    members = [t["address"] for t in group(f)["targets"]]

    r = cli(f, "backups", "cache")
    assert r.returncode == 0 and "cache: no backups in" in r.stdout, r

    before = {f"k{i}": f"v{i}" for i in range(200)}
    write(primary, before)
    r = cli(f, "backup", "cache")
    assert r.returncode == 0, r
    assert "backup cache-" in r.stdout and "200 keys" in r.stdout and ": ok," in r.stdout, r.stdout
    assert "started in fivenines (op-1)" in r.stderr

    r = cli(f, "backups", "cache", "--json")
    assert r.returncode == 0, r
    (rec,) = json.loads(r.stdout)["backups"]
    assert rec["verified"] == "ok" and rec["keys"] == 200 and rec["source"] != p["id"]
    # the same catalogue from the store alone, and a table for people
    assert [x["id"] for x in json.loads(cli(f, "backups", "cache", "--store", "--json").stdout)["backups"]] == [rec["id"]]
    table = cli(f, "backups", "cache").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "KIND", "TAKEN"] and table[1].split()[0] == rec["id"]
    r = cli(f, "backups", "cache", "--verify", rec["id"])
    assert r.returncode == 0 and rec["id"] in r.stdout and "sha256" in r.stdout, r

    write(primary, {f"late{i}": "lost by design" for i in range(30)})
    with redis(primary) as c:  # the disaster
        c.cmd("FLUSHALL")
        assert c.cmd("WAIT", 2, 2000) == 2
    r = cli(f, "restore", "cache", "--from", rec["id"])
    assert r.returncode == 0, r
    assert r.stdout.startswith(f"restored rdb backup {rec['id']}") and "200 keys" in r.stdout, r.stdout
    assert [line.split()[0] for line in r.stdout.splitlines()[1:]] == [
        "verify", "start_source", "check_source", "fence", "hold_replicas", "load_primary", "check_primary",
        "detach_primary", "resync_replicas", "check_replicas", "unfence", "stop_source"]
    for a in members:
        assert dump(a) == before, a

    r = cli(f, "restore", "--drill", "cache")
    assert r.returncode == 0 and f"drill of backup {rec['id']}: ok: RPO" in r.stdout and "RTO" in r.stdout, r
    r = cli(f, "restore", "--drill", "cache", "--store", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["keys"] == 200, r

    # refused: nothing changed, exit 1
    r = cli(f, "restore", "cache", "--from", "orders-20250101T000000Z")
    assert r.returncode == 1 and "refused, nothing was changed" in r.stderr, r
    assert "belongs to group 'orders', not 'cache'" in r.stderr
    for a in members:
        assert dump(a) == before, a
    # bad input: exit 2, nothing started
    for args in (["restore", "cache"], ["restore", "cache", "--from", rec["id"], "--at", "@0"],
                 ["restore", "cache", "--at", "next tuesday"], ["backups", "nosuch", "--store"]):
        r = cli(f, *args)
        assert r.returncode == 2, (args, r)
    assert "--at: 'next tuesday' is not a time" in cli(f, "restore", "cache", "--at", "next tuesday").stderr
    r = cli(f, "backup", "nosuch")
    assert r.returncode == 1 and "no target group 'nosuch'" in r.stderr, r
    bad = tmp_path / "bad.token"
    bad.write_text("not-the-token\n")
    r = cli(f, "backup", "cache", "--token-file", str(bad))
    assert r.returncode == 1 and "the admin token was refused" in r.stderr, r

    # what the events say
    events = [(e["kind"], e["new"]) for e in http(f, "GET", "/events?limit=1000")[1]["events"]
              if e["kind"] in ("backup", "recovery", "drill")]
    assert ("backup", "ok") in events and ("backup", "verified ok") in events and ("drill", "ok") in events
    assert [e for e in events if e[0] == "recovery"] == [
        ("recovery", "restoring"), ("recovery", "serving"), ("recovery", "restored"), ("recovery", "refused")]


def test_the_backup_routes_answer_with_operations_to_poll(running: Fivenines, tmp_path: Path) -> None:
    f = running
    p = wait_settled(f)
    token = (tmp_path / "state" / "admin.token").read_text().strip()

    def over(location: str) -> Any:
        return wait_until(lambda: (o := http(f, "GET", location)[1])["state"] != "running" and o, 60,
                          what=f"{location} over")

    assert http(f, "POST", "/target_groups/cache/backup")[0] == 401  # mutating: the token, even on loopback
    status, body, _ = http(f, "POST", "/target_groups/cache/verify", token)
    assert status == 400 and "verify needs the backup's id" in body["error"]
    status, body, _ = http(f, "POST", "/target_groups/cache/restore?from=x&at=@0", token)
    assert status == 400 and "exactly one of from=ID" in body["error"]
    status, body, _ = http(f, "POST", "/target_groups/nosuch/drill", token)
    assert status == 404 and "no target group 'nosuch'" in body["error"]
    assert http(f, "POST", "/target_groups/cache/explode", token)[0] == 404
    # no backup yet: the drill runs and fails, with the reason
    status, op, headers = http(f, "POST", "/target_groups/cache/drill", token)
    assert status == 202 and op["state"] == "running" and op["action"] == "drill" and op["id"] == "op-1"
    assert headers["Location"] == "/target_groups/cache/operations/op-1"
    done = over(headers["Location"])
    assert done["state"] == "failed" and "no verified backup of 'cache' to drill with" in done["error"], done
    assert done["result"]["ok"] is False and done["ended"] is not None
    # one operation at a time: while a backup waits for its replica to catch up, another is refused
    replicas = [t["address"] for t in group(f)["targets"] if t["id"] != p["id"]]
    for a in replicas:
        with redis(a) as c:
            c.cmd("CLIENT", "PAUSE", 1500, "WRITE")
    with redis(p["address"]) as c:
        c.cmd("SET", "k", "v")
    status, op, headers = http(f, "POST", "/target_groups/cache/backup", token)
    assert status == 202, op
    status, body, _ = http(f, "POST", "/target_groups/cache/drill", token)
    assert status == 409 and body["operation"]["id"] == op["id"] and "still running" in body["error"], body
    done = over(headers["Location"])
    assert done["state"] == "ok" and done["result"]["keys"] == 1 and done["error"] is None, done
    assert http(f, "GET", "/target_groups/cache/operations/op-99")[0] == 404
    status, cat, _ = http(f, "GET", "/target_groups/cache/backups")
    assert status == 200 and [r["id"] for r in cat["backups"]] == [done["result"]["id"]]
    assert cat["to"].endswith("backups/cache")


def metric(text: str, name: str, **labels: str) -> float | None:
    """A sample's value from the Prometheus text, or None when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head == f"{name}{{{want}}}":
            return float(value)
    return None


def test_metrics_status_and_the_dashboard_show_the_backups(running: Fivenines) -> None:
    from tests.helpers import require_binary
    from tests.ops_helpers import Chromium

    f = running
    p = wait_settled(f)
    text = urllib.request.urlopen(f"{f.admin}/metrics", timeout=5).read().decode()
    assert metric(text, "fivenines_backups_total", group="cache", result="ok") == 0
    assert metric(text, "fivenines_backup_last_success_timestamp_seconds", group="cache") is None  # none yet
    assert metric(text, "fivenines_backup_promised_rpo_seconds", group="cache") == 366 * 86400.0  # yearly, leap
    write(p["address"], {f"k{i}": "v" for i in range(20)})
    assert cli(f, "backup", "cache").returncode == 0
    assert cli(f, "restore", "--drill", "cache").returncode == 0
    rec = json.loads(cli(f, "backups", "cache", "--json").stdout)["backups"][0]
    st = f.status()["target_groups"]["cache"]["replication"]["backup"]

    text = urllib.request.urlopen(f"{f.admin}/metrics", timeout=5).read().decode()
    assert metric(text, "fivenines_backups_total", group="cache", result="ok") == 1
    assert metric(text, "fivenines_backups_total", group="cache", result="failed") == 0
    assert metric(text, "fivenines_backup_last_success_timestamp_seconds", group="cache") == rec["time"]
    assert metric(text, "fivenines_backups_verified", group="cache") == 1
    assert metric(text, "fivenines_backup_stored_bytes", group="cache") == rec["size"]
    assert metric(text, "fivenines_drills_total", group="cache", result="ok") == 1
    assert metric(text, "fivenines_drill_last_success_timestamp_seconds", group="cache") == st["last_drill"]["time"]
    assert metric(text, "fivenines_drill_rpo_seconds", group="cache") == st["last_drill"]["rpo_s"] > 0
    assert metric(text, "fivenines_drill_rto_seconds", group="cache") == st["last_drill"]["rto_s"] > 0
    assert metric(text, "fivenines_restores_total", group="cache", result="ok") == 0
    assert metric(text, "fivenines_backup_running", group="cache", operation="backup") == 0

    out = subprocess.run([PY, "-m", "fivenines", "status", "--admin", f.admin], capture_output=True, text=True,
                         check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("cache: backups "))
    assert f"last {rec['id']}," in line and "(1 verified)" in line and re.search(r"next in \d+[dhms]", line), line
    assert "last drill ok" in line and f"RPO {st['last_drill']['rpo_s']}s" in line, line

    browser = Chromium(require_binary("chromium"), f"{f.admin}/")
    try:
        shown = wait_until(lambda: browser.evaluate(
            "(document.querySelector('p[data-backup=\"cache\"]') || {}).textContent"), 10, 0.1,
            what="the backup line in the group card")
        assert shown.startswith("backups cron 0 0 1 1 * (UTC) to ") and f"last {rec['id']}," in shown, shown
        assert "last drill ok" in shown and f"RTO {st['last_drill']['rto_s']}s" in shown, shown
    finally:
        browser.close()
