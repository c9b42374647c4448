"""The Jepsen-style check (bench/jepsen_redis.py), bounded for the suite, in the namespace rig: three Redis
servers in hosts of their own as targets of fivenines in another host, clients in a third; 21 real faults
injected inside the hosts (kill -9, SIGSTOP, nft split and isolation, link down, a replica cut, packet loss),
none announced to fivenines. Zero acknowledged writes lost in sync mode, and nothing left behind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from fivenines.rig import leftovers
from tests.helpers import PY, require_binary, require_rig

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).parents[2] / "bench" / "jepsen_redis.py"
FAILURES = 21  # 3 of each of the 7 kinds
TIME_LIMIT = 60.0  # the bench gives up (FAIL, cleaning up) after this; about 27 s on 2 shared cores


def run_check(tmp_path: Path, *args: str) -> tuple[int, str, dict[str, object]]:
    out = tmp_path / "result.json"
    cwd = tmp_path / "cwd"  # nothing may land in the caller's folder (a redis-server's RDB file)
    cwd.mkdir()
    proc = subprocess.Popen([PY, str(SCRIPT), "--redis-server", require_binary("redis-server"),
                             "--clients", "3", "--direct", "1", "--hold", "0.5", "--steady", "0.2",
                             "--time-limit", str(TIME_LIMIT), "--json", str(out),
                             "--workdir", str(tmp_path / "work"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd)
    try:
        stdout, _ = proc.communicate(timeout=TIME_LIMIT + 45)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the bench's rig removes its world on the way out
        stdout, _ = proc.communicate(timeout=30)
        pytest.fail(f"the check did not end within {TIME_LIMIT + 45:g}s:\n{stdout[-3000:]}")
    assert out.exists(), stdout[-5000:]
    assert list(cwd.iterdir()) == [], "the check wrote into its working directory"
    return proc.returncode, stdout, json.loads(out.read_text())


def test_sync_mode_loses_no_acknowledged_write_across_21_real_faults(tmp_path: Path) -> None:
    require_rig()
    code, stdout, res = run_check(tmp_path, "--failures", str(FAILURES), "--durability", "sync")
    assert leftovers(str(res["rig"])) == [], "the rig left part of its world behind"
    assert code == 0, stdout[-5000:]
    assert res["lost"] == 0 and res["overlaps"] == [], stdout[-5000:]
    assert "acknowledged writes lost  : 0" in stdout
    assert int(res["acknowledged"]) > 10_000  # type: ignore[call-overload]
    faults = res["faults"]
    assert isinstance(faults, list) and len(faults) == FAILURES
    kinds = [f["kind"] for f in faults]
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "kill": 3, "stop": 3, "split": 3, "isolate": 3, "link": 3, "replica": 3, "loss": 3}
    for f in faults:
        assert f["verdict"] == "", f
        assert f["acked"] > 0, f  # writes went on after every fault
        if f["kind"] in ("kill", "stop", "split", "isolate", "link"):
            assert f["failover_s"] is not None and f["failover_s"] < res["bound_s"], f
            assert f["new"] not in ("", f["old"]), f
        if f["kind"] == "replica":
            assert f["failover_s"] is None, f
