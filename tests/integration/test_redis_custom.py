"""kind: custom — fivenines manages a store only through three commands (here: redis-cli against real Redis)."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from tests.helpers import require_binary, wait_until
from tests.redis_helpers import events, group, published, redis, redis_spec, role_of

pytestmark = pytest.mark.slow

ROLE = r"""
info=$("$0" -p "$1" info replication) || exit 1
info=$(printf '%s\n' "$info" | tr -d '\r')
get() { printf '%s\n' "$info" | sed -n "s/^$1://p"; }
if [ "$(get role)" = master ]; then echo "primary $(get master_repl_offset)"
else echo "replica $(get slave_repl_offset) $(get master_host):$(get master_port) $(get master_link_status)"; fi
"""


def custom_spec() -> dict[str, Any]:
    cli = require_binary("redis-cli")
    spec = redis_spec(standby=2, interval="300ms", timeout="250ms")
    spec["target_groups"]["cache"]["replicated"] = {
        "kind": "custom",
        "durability": "sync",
        "custom": {
            "role_command": ["sh", "-c", ROLE, cli, "{port}"],
            "promote_command": [cli, "-p", "{port}", "replicaof", "no", "one"],
            "follow_command": [cli, "-p", "{port}", "replicaof", "{primary_host}", "{primary_port}"],
            "command_timeout": "2s",
        },
    }
    # the commands do not set durability: the servers start with it
    spec["target_groups"]["cache"]["instances"]["command"] += ["--min-replicas-to-write", "1",
                                                                 "--repl-diskless-sync-delay", "0"]
    return spec


def test_custom_commands_fence_fail_over_and_keep_acknowledged_writes(run_fivenines: Any) -> None:
    f = run_fivenines(custom_spec())
    # Every server starts as a primary; fivenines keeps one (the first, unless its first role check
    # timed out: then the next) and makes the others follow it.
    def settled() -> dict[str, Any] | None:
        x = published(f)
        others = [t for t in group(f)["targets"] if x is not None and t["id"] != x["id"]]
        ok = x is not None and len(others) == 2 and all(t["replication"]["reported_role"] == "replica" for t in others)
        return x if ok else None

    p = wait_until(settled, 15, 0.05, what="one primary, the others replicas")
    others = [t for t in group(f)["targets"] if t["id"] != p["id"]]
    assert {e["target"] for e in events(f, "fence")} == {t["id"] for t in others}
    wait_until(lambda: all(role_of(t["address"]) == "slave" for t in others), 5, what="others replicate")
    keys = [f"c{i}" for i in range(100)]

    def written() -> bool:
        with redis(p["address"]) as r:
            try:
                for k in keys:
                    r.cmd("SET", k, k)
            except RuntimeError as exc:  # NOREPLICAS until the replicas are attached and counted
                assert "NOREPLICAS" in str(exc)
                return False
            return bool(r.cmd("WAIT", 2, 2000) == 2)

    wait_until(written, 10, 0.1, what="writes acknowledged by both replicas")
    os.kill(p["pid"], signal.SIGKILL)
    new = wait_until(lambda: (x := published(f)) and x["id"] != p["id"] and x, 10, 0.02, what="failover")
    with redis(new["address"]) as r:
        assert r.cmd("MGET", *keys) == [k.encode() for k in keys]
    # the restarted old primary came back as an empty primary: fenced by the follow command
    old = p["id"]
    wait_until(lambda: role_of(next(t for t in group(f)["targets"] if t["id"] == old)["address"]) == "slave",
               10, 0.05, what="fenced")
    assert published(f)["id"] == new["id"]  # type: ignore[index]
