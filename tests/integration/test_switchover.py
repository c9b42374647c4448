"""`fivenines switchover`: a planned change of primary under continuous writes loses none of them."""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PY, Fivenines, wait_until
from tests.redis_helpers import group, published, redis, redis_spec, role_of, wait_settled

pytestmark = pytest.mark.slow


class Writer:
    """Writes unique keys through fivenines' TCP listener; a key counts once WAIT 1 confirms it."""

    def __init__(self, f: Fivenines) -> None:
        self.f = f
        self.acked: list[tuple[float, str]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        n = 0
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = redis(f"{self.f.host}:{self.f.port}", 2.0)
                n += 1
                key = f"w{n}"
                conn.cmd("SET", key, key)
                if conn.cmd("WAIT", 1, 500) >= 1:
                    self.acked.append((time.monotonic(), key))
            except (OSError, RuntimeError) as exc:
                self.errors.append(str(exc)[:80])
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.005)
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._t.join(10)


def switchover(f: Fivenines, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "fivenines", "switchover", "cache", "-f", str(f.spec_path), "--admin", f.admin,
                           *args],
                          capture_output=True, text=True, timeout=60)


def test_switchover_under_writes_loses_nothing_and_pauses_writes_only_briefly(run_fivenines: Any) -> None:
    f = run_fivenines(redis_spec(standby=2))
    old = wait_settled(f)
    w = Writer(f)
    try:
        wait_until(lambda: len(w.acked) >= 200, 30, 0.01, what="200 acknowledged writes before the switchover")
        started = time.monotonic()
        r = switchover(f, "--to", "cache-3")
        switched = time.monotonic()
        assert r.returncode == 0, r.stderr
        assert "primary cache-1 -> cache-3" in r.stdout
        # writes resume: 200 more are acknowledged after the switchover returned
        wait_until(lambda: sum(t > switched for t, _ in w.acked) >= 200, 30, 0.01,
                   what="writes to resume after the switchover")
    finally:
        w.stop()
    new = published(f)
    assert new is not None and new["id"] == "cache-3"
    assert group(f)["replication"]["epoch"] == 2
    # no acknowledged write is lost: every one is on the new primary
    keys = [k for _, k in w.acked]
    with redis(new["address"]) as c:
        values = c.cmd("MGET", *keys)
    assert [k for k, v in zip(keys, values, strict=True) if v is None] == []
    # writes paused only for the switch: every gap between acknowledged writes that overlaps the
    # switchover counts, however far it reaches beyond it. The pause is lifted by the switch, not by
    # its own expiry (switchover_timeout, 10 s), and lasts no longer than the switchover took + 1 s.
    times = [t for t, _ in w.acked]
    pause = max(b - a for a, b in itertools.pairwise(times) if b >= started and a <= switched)
    took = switched - started
    print(f"pause {pause:.3f}s, switchover took {took:.3f}s")
    assert pause < min(took + 1.0, 5.0), f"writes paused {pause:.2f}s (the switchover took {took:.2f}s)"
    # the old primary follows the new one
    assert role_of(old["address"]) == "slave"
    settled = wait_settled(f)
    assert settled["id"] == "cache-3"


def test_switchover_refusals_name_the_reason(run_fivenines: Any, tmp_path: Path) -> None:
    f = run_fivenines(redis_spec(standby=1))
    wait_settled(f)
    r = switchover(f, "--to", "cache-1")
    assert r.returncode == 1 and "cache-1 is already the primary" in r.stderr
    r = switchover(f, "--to", "nope")
    assert r.returncode == 1 and "no target 'nope'" in r.stderr
    def with_token_file(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PY, "-m", "fivenines", "switchover", "cache", "--admin", f.admin, "--token-file",
                               str(path)], capture_output=True, text=True, timeout=30)

    r = with_token_file(f.spec_path)
    assert r.returncode == 2 and "is not an admin token file" in r.stderr
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token\n")
    r = with_token_file(wrong)
    assert r.returncode == 1 and "bearer token" in r.stderr
    # without --to: the most advanced replica
    r = switchover(f)
    assert r.returncode == 0 and "-> cache-2" in r.stdout
