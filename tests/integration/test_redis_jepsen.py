"""The Jepsen-style check, bounded for the suite: 5 primary failures (kill, stop, cut) through the TCP listener,
zero acknowledged writes lost in sync mode."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import PY, require_binary

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).parents[2] / "bench" / "jepsen_redis.py"


def run_check(tmp_path: Path, *args: str) -> dict[str, object]:
    out = tmp_path / "result.json"
    r = subprocess.run([PY, str(SCRIPT), "--redis-server", require_binary("redis-server"), "--clients", "2",
                        "--hold", "1.5", "--steady", "0.3", "--json", str(out), *args],
                       capture_output=True, text=True, timeout=150)
    assert out.exists(), r.stdout + r.stderr
    result = json.loads(out.read_text())
    result["_exit"] = r.returncode
    result["_stdout"] = r.stdout
    return result


def test_sync_mode_loses_no_acknowledged_write_across_primary_failures(tmp_path: Path) -> None:
    res = run_check(tmp_path, "--failures", "5", "--durability", "sync", "--via", "listener",
                    "--faults", "kill,stop,cut")
    assert res["_exit"] == 0, res["_stdout"]
    assert res["lost"] == 0 and res["overlaps"] == []
    assert int(res["acknowledged"]) > 1000  # type: ignore[call-overload]
    fos = res["failovers"]
    assert isinstance(fos, list) and len(fos) == 5
    assert all(f["failover_s"] is not None and f["failover_s"] < res["bound_s"] for f in fos)
    assert "acknowledged writes lost  : 0" in str(res["_stdout"])
