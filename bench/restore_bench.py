#!/usr/bin/env python3
"""RPO and RTO of a replicated Redis group restored from backup, with ``--size`` of data (1 GB by default).

``make restore-bench`` (or ``.venv/bin/python bench/restore_bench.py [--size 1GB]``) runs fivenines
in-process with one Redis primary and two replicas and a ``backup:`` section writing to a local
directory (or ``--to s3://bucket/prefix``), then:

1. fills the group with ``--size`` bytes of incompressible values (``--value-size`` each);
2. takes a backup (copy from a replica over the replication protocol, check tool, scratch load,
   checksum read back) and times it;
3. runs a restore drill (newest backup into a scratch server) and times it: the RTO the drills promise;
4. the disaster: writers confirm writes with ``WAIT 1`` through the listener; ``FLUSHALL`` on the
   primary (the replicas copy it); ``--restore-after`` seconds later the backup is restored into
   the live group; writes go on; every acknowledged write is then looked up.

It prints the data restored, the writes lost (newer than the backup, or taken by the wiped
primary before the restore), the measured RPO (age of the restored data at the wipe) beside the
schedule's promise (``--schedule``: the longest gap between backups, plus the backup's own
duration), and the measured RTO (wipe to writes accepted on the restored data) beside the
drill's. Everything started is stopped at the end (and on Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from fivenines.chaos.wipe import run_wipe  # noqa: E402
from fivenines.runtime.controller import Controller  # noqa: E402
from fivenines.runtime.redis import RedisClient  # noqa: E402
from fivenines.spec import parse_size, parse_spec  # noqa: E402


def spec(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    backup: dict[str, Any] = {"to": args.to or str(workdir / "backups"), "schedule": args.schedule,
                              "retention": {"keep_last": 2}, "timeout": "1h"}
    return {
        "name": "restore-bench",
        "state_dir": str(workdir / "state"),
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": [{"port": 0, "protocol": "tcp", "default_target_group": "cache"}],
        "target_groups": {"cache": {
            "instances": {"command": [args.redis_server, "--port", "{port}", "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], "count": 1, "standby": 2, "stop_timeout": "5s"},
            "health_check": {"interval": "500ms", "timeout": "400ms", "healthy_threshold": 2,
                             "unhealthy_threshold": 3},
            "replicated": {"kind": "redis", "durability": "sync", "backup": backup},
        }},
    }


async def fill(primary: str, size: int, value_size: int) -> int:
    """``size`` bytes of values (random: incompressible) in keys fill:N, pipelined; returns the key count."""
    host, _, port = primary.rpartition(":")
    c = await RedisClient.connect(host, int(port), 5.0)
    n = max(1, size // value_size)
    try:
        batch = 500
        for start in range(0, n, batch):
            cmds = [("SET", f"fill:{i}", os.urandom(value_size)) for i in range(start, min(n, start + batch))]
            await c.pipeline(cmds, timeout=60.0)
        await c.execute("WAIT", 2, 60000, timeout=70.0)
    finally:
        c.close()
    return n


async def count(address: str, pattern: str) -> int:
    """Keys matching ``pattern`` (SCAN: keys only, the values stay on the server)."""
    host, _, port = address.rpartition(":")
    c = await RedisClient.connect(host, int(port), 5.0)
    n, cursor = 0, b"0"
    try:
        while True:
            cursor, keys = await c.execute("SCAN", cursor, "MATCH", pattern, "COUNT", 5000, timeout=30.0)
            n += len(keys)
            if cursor in (b"0", "0"):
                return n
    finally:
        c.close()


async def dbsize(address: str) -> int:
    host, _, port = address.rpartition(":")
    c = await RedisClient.connect(host, int(port), 5.0)
    try:
        return int(await c.execute("DBSIZE", timeout=10.0))
    finally:
        c.close()


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    ctl = Controller(parse_spec(spec(workdir, args)), workdir / "fivenines.yaml")
    await ctl.start()
    try:
        rm = ctl.groups["cache"].replication
        assert rm is not None and rm.backup is not None
        b = rm.backup
        b.paused = True  # the bench takes its backup itself
        deadline = time.monotonic() + 30
        while not (b.live is not None and b.live.ready() and all(
                m.healthy and (m.primary or m.link_up) for m in b.live.members())):
            if time.monotonic() > deadline:
                raise SystemExit("the group did not settle in 30 s")
            await asyncio.sleep(0.1)
        members = b.live.members()
        primary = next(m.address for m in members if m.primary)
        listener = f"{ctl.listeners[0][1].address[0]}:{ctl.listeners[0][1].address[1]}"
        size = parse_size(args.size)
        print(f"filling {args.size} ({size} bytes) in values of {args.value_size} bytes ...", flush=True)
        t0 = time.monotonic()
        keys = await fill(primary, size, parse_size(args.value_size))
        print(f"  {keys} keys in {time.monotonic() - t0:.1f}s", flush=True)
        took: dict[str, Any] = {}

        async def backup_and_drill() -> None:  # while the writers write
            t0 = time.monotonic()
            rec = took["rec"] = await b.backup("bench")
            took["backup_s"] = time.monotonic() - t0
            print(f"backup {rec.id}: {rec.size} bytes, {rec.keys} keys, {took['backup_s']:.2f}s, "
                  f"{rec.verified.value}", flush=True)
            d = took["drill"] = await b.drill()
            print(f"drill: ok={d.ok} RTO {d.rto:.2f}s" if d.rto is not None else f"drill failed: {d.detail}",
                  flush=True)

        async def restore() -> None:
            res = await b.restore(from_id=took["rec"].id)
            print("restore steps: " + ", ".join(f"{s['step']} {s['seconds']}s" for s in res["steps"]), flush=True)

        report = await run_wipe(listener, primary, restore, backup=backup_and_drill, clients=args.clients,
                                before=args.before, restore_after=args.restore_after, after=args.after,
                                declared_rpo_s=b.promised_rpo)
        rec, d, backup_s = took["rec"], took["drill"], took["backup_s"]
        report = dataclasses.replace(report, declared_rpo_s=b.promised_rpo + backup_s,
                                     expected_rto_s=d.rto)
        restored = await count(primary, "fill:*")
        in_sync = [await dbsize(m.address) for m in members]
        result = {"size_bytes": size, "keys": keys, "backup": rec.to_json(), "backup_s": round(backup_s, 3),
                  "drill": d.to_json(), "wipe": report.to_json(), "fill_keys_restored": restored,
                  "dbsize_per_member": in_sync, "schedule": args.schedule,
                  "backup_age_at_wipe_s": round(report.wipe_at - rec.time, 3)}
        print()
        print(f"data: {size} bytes in {keys} keys; restored {restored} of them "
              f"({'all' if restored == keys else 'MISSING SOME'}); members' key counts {in_sync}")
        for line in report.lines():
            print(line)
        print(f"backup age at the wipe {report.wipe_at - rec.time:.3f}s (the data point of {rec.id})")
        print(f"(declared RPO = the schedule's longest gap, {args.schedule}, plus one backup's duration)")
        return result
    finally:
        await ctl.stop(5.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--size", default="1GB", help="data to restore (default 1GB; e.g. 50MB for a smoke test)")
    ap.add_argument("--value-size", default="10KiB", help="bytes per value (default 10KiB)")
    ap.add_argument("--schedule", default="6h", help="the backup schedule whose promise is compared (default 6h)")
    ap.add_argument("--to", help="where backups go (default: a folder in the work directory; or s3://bucket/prefix)")
    ap.add_argument("--clients", type=int, default=2, help="writers during the wipe (default 2)")
    ap.add_argument("--before", type=float, default=2.0, help="seconds of writes before the wipe")
    ap.add_argument("--restore-after", type=float, default=1.0, help="seconds from the wipe to the restore")
    ap.add_argument("--after", type=float, default=1.0, help="seconds of writes after the restore")
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "/usr/bin/redis-server")
    ap.add_argument("--workdir", help="keep state and backups here (default: a temporary folder, removed)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="restore-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = asyncio.run(run(args, workdir))
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    ok = result["fill_keys_restored"] == result["keys"] and result["wipe"]["missing_after_restore"] == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
