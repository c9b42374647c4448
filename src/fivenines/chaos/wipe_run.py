"""A ``wipe`` run (``fivenines chaos SPEC --faults wipe``): a disaster and a restore, measured.

The order of things:

1. ``fivenines up SPEC`` as a child (as in every chaos run), until the replicated group serves
   with every replica linked;
2. writers (:class:`~fivenines.chaos.wipe.Writers`) through the group's listener confirm each
   write with ``WAIT 1``: each acknowledged write is recorded with its time;
3. by the end of the warm-up there must be a verified backup: the newest in the catalogue
   (taken by the schedule), else chaos takes one (``POST .../backup``); and a drill when the
   group has none yet, so that its RTO stands beside the measured one;
4. at the planned time, the wipe: ``FLUSHALL`` on the primary (its pid checked to be one the
   fivenines under test started), which the replicas copy;
5. ``--fault-duration`` later, chaos plays the operator: ``POST .../restore?at=T`` with T one
   second before the wipe (the newest backup before it; with ``point_in_time``, the AOF
   replayed up to that second), polled until it is over;
6. the writers go on until the end of the run (at least one second after the restore), then
   every acknowledged write is looked up on the primary and counted
   (:func:`~fivenines.chaos.wipe.account`): measured RPO and RTO beside the declared ones.

Everything it changes goes through the admin API, with the token of the fivenines it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fivenines.chaos import ChaosError
from fivenines.chaos.inject import Guard
from fivenines.chaos.runner import ChaosConfig, plan, start_fivenines
from fivenines.chaos.wipe import Writers, account, scan, wipe, wipe_target
from fivenines.cli.admin_client import AdminClient, AdminError, aget_json
from fivenines.core.backup import iso as backup_iso
from fivenines.runtime.events import iso
from fivenines.runtime.supervisor import Process
from fivenines.spec import Spec

FORMAT = 1
PREFIX = "chaos-wipe"


class WipeRun:
    def __init__(self, config: ChaosConfig, spec: Spec, say: Callable[[str], None] = lambda s: None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.config, self.spec, self.say, self.clock, self.wall = config, spec, say, clock, wall
        self.listener_index, self.group = wipe_target(spec)
        self.proc: Process | None = None
        self.admin = ""
        self.t0 = 0.0

    def __repr__(self) -> str:
        return f"<WipeRun {self.spec.name} group {self.group} admin {self.admin or '-'}>"

    def now(self) -> float:
        """Run time: seconds since the writers started."""
        return self.clock() - self.t0

    async def _get(self, path: str) -> Any:
        try:
            return await aget_json(f"{self.admin}{path}", timeout=10.0)
        except AdminError as exc:
            raise ChaosError(str(exc)) from exc

    async def _group(self) -> dict[str, Any]:
        return dict((await self._get("/status"))["target_groups"][self.group])

    async def _settled(self) -> dict[str, Any]:
        """The group serving, every target healthy, every replica linked to the primary."""
        deadline = self.clock() + self.config.startup_timeout
        while True:
            g = await self._group()
            rep = g.get("replication") or {}
            if g["serving"] and rep.get("phase") == "serving" and all(
                    t["state"] == "healthy" and (t["id"] == g["serving"][0] or t["replication"]["link_up"])
                    for t in g["targets"]):
                return g
            if self.clock() > deadline:
                raise ChaosError(f"group {self.group} did not settle within {self.config.startup_timeout:g}s "
                                 f"(phase {rep.get('phase')}, serving {g['serving']})")
            await asyncio.sleep(0.1)

    def _token(self) -> str:
        from fivenines.cli.connect import locate

        found = locate(self.config.spec_path)
        try:
            assert found is not None
            return found.token_file.read_text().strip()
        except (AssertionError, OSError) as exc:
            raise ChaosError(f"cannot read the admin token of the fivenines chaos started: {exc}") from None

    async def _operation(self, api: AdminClient, action: str, params: dict[str, str]) -> dict[str, Any]:
        """Start a backup command and poll it until it is over (the operation)."""
        try:
            op = await asyncio.to_thread(api.group_call, self.group, action, urlencode(params), status=202)
            while op["state"] == "running":
                await asyncio.sleep(0.1)
                op = await asyncio.to_thread(api.group_get, self.group, f"operations/{op['id']}")
        except AdminError as exc:
            raise ChaosError(f"{action}: {exc}") from exc
        return dict(op)

    async def _sleep_until(self, at: float) -> None:
        if at > self.now():
            await asyncio.sleep(at - self.now())

    async def _backup(self, api: AdminClient) -> tuple[dict[str, Any], str, float]:
        """The verified backup the restore will use, who took it, and a time every write acknowledged
        before which it holds (a backup holds every write the primary had taken when it began)."""
        cat = await self._get(f"/target_groups/{self.group}/backups")
        good = [r for r in cat["backups"] if r["verified"] == "ok"]
        if good:
            rec = good[0]
            self.say(f"  {self.now():7.2f}s  newest verified backup {rec['id']} (taken by the schedule)")
            return rec, "schedule", rec["time"] - rec["took"]  # it began at least `took` before its fork
        began = self.wall()
        op = await self._operation(api, "backup", {})
        if op["state"] != "ok":
            raise ChaosError(f"no verified backup to restore, and the one chaos took failed: {op.get('error')}")
        rec = op["result"]
        self.say(f"  {self.now():7.2f}s  no verified backup yet: chaos took {rec['id']} ({rec['keys']} keys)")
        return rec, "chaos", began

    async def run(self) -> dict[str, Any]:
        cfg = self.config
        cfg.report_dir.mkdir(parents=True, exist_ok=True)
        fault = plan(cfg)[0]
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        if me is not None:  # SIGTERM: stop like Ctrl-C
            loop.add_signal_handler(signal.SIGTERM, me.cancel)
        writers: Writers | None = None
        try:
            info = await start_fivenines(cfg, self.clock, lambda proc: setattr(self, "proc", proc))
            assert self.proc is not None
            self.admin = str(info["admin"])
            listener = str(info["listeners"][self.listener_index])
            st = await self._get("/status")
            if int(st.get("pid", 0)) != self.proc.pid:
                raise ChaosError(f"the admin API at {self.admin} belongs to pid {st.get('pid')}, not to the "
                                 f"fivenines chaos started ({self.proc.pid}); is another fivenines on that port?")
            await self._settled()
            api = AdminClient(self.admin, self._token(), timeout=30.0)
            guard = Guard(self.proc.pid)
            seq = int((await self._get("/events?limit=1"))["last_seq"])
            writers = Writers(listener, cfg.max_connections or 4, prefix=PREFIX, wall=self.wall)
            self.t0, started_wall = self.clock(), self.wall()
            writers.start()
            self.say(f"writers: {writers.clients} clients through {listener}, each write confirmed by WAIT 1; "
                     f"wipe at {fault.at:.2f}s, restore {cfg.fault_duration:g}s later")
            await self._sleep_until(min(cfg.warmup, fault.at))
            rec, taken_by, complete_before = await self._backup(api)
            b = (await self._group())["replication"]["backup"]
            if not b.get("last_drill"):
                op = await self._operation(api, "drill", {})
                self.say(f"  {self.now():7.2f}s  drill: {op['state']} {op.get('error') or ''}".rstrip())
                b = (await self._group())["replication"]["backup"]
            drill = b.get("last_drill") or {}
            if self.now() > fault.at:
                self.say(f"  {self.now():7.2f}s  the wipe planned at {fault.at:.2f}s waited for the backup")
            await self._sleep_until(fault.at)

            g = await self._group()
            primary = next(t for t in g["targets"] if t["id"] == g["replication"]["primary"])
            guard.check(primary.get("pid"), primary["id"])  # a server the fivenines under test started
            wipe_run_at, wipe_at = self.now(), self.wall()
            await wipe(primary["address"])
            self.say(f"  {wipe_run_at:7.2f}s  wipe: FLUSHALL on {primary['id']} ({primary['address']})")
            await asyncio.sleep(cfg.fault_duration)
            before = backup_iso(math.floor(wipe_at) - 1)  # the newest backup before it (AOF: replayed to then)
            restore_started = self.wall()
            op = await self._operation(api, "restore", {"at": before})
            restore_ended = self.wall()
            self.say(f"  {self.now():7.2f}s  restore --at {before}: {op['state']} in {op['seconds']}s"
                     + (f": {op['error']}" if op.get("error") else ""))
            await self._sleep_until(max(self.now() + 1.0, cfg.duration))
            await writers.stop()
            g = await self._group()
            address = next(t["address"] for t in g["targets"] if t["id"] == g["replication"]["primary"])
            final = await scan(address, f"{PREFIX}:*")
            report = account(writers.acks, final, wipe_at=wipe_at, restore_started=restore_started,
                             restore_ended=restore_ended, declared_rpo_s=b.get("promised_rpo_s"),
                             expected_rto_s=drill.get("rto_s"), complete_before=complete_before)
            events = (await self._get(f"/events?limit=1000&since={seq}"))["events"]
            return {
                "format": FORMAT, "kind": "wipe", "spec": self.spec.name, "spec_file": cfg.spec_path,
                "group": self.group, "listener": listener, "started": iso(started_wall),
                "duration_s": round(self.now(), 3), "config": cfg.to_json(), "planned": [fault.to_json()],
                "backup": {**rec, "taken_by": taken_by, "complete_before": complete_before},
                "drill": drill or None,
                "wipe": {"at_s": round(wipe_run_at, 3), "at": iso(wipe_at), "primary": primary["id"]},
                "restore": {"at": before, "state": op["state"], "error": op.get("error"),
                            "started_s": round(restore_started - started_wall, 3),
                            "seconds": op["seconds"], "result": op.get("result")},
                "writers": {"clients": writers.clients, "errors": writers.errors},
                "measured": report.to_json(), "lines": report.lines(),
                "events": [e for e in events if e["kind"] in ("backup", "recovery", "drill", "role", "serving")],
            }
        finally:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signal.SIGTERM)
            if writers is not None:
                await writers.stop()
            if self.proc is not None:
                await self.proc.stop(20.0)


def write_wipe_report(directory: Path, summary: dict[str, Any]) -> tuple[Path, Path]:
    """``summary.json`` and ``report.html`` of a wipe run."""
    import json

    from fivenines.chaos.report import render_wipe_html

    directory.mkdir(parents=True, exist_ok=True)
    js = directory / "summary.json"
    js.write_text(json.dumps(summary, indent=2, allow_nan=False))
    page = directory / "report.html"
    page.write_text(render_wipe_html(summary))
    return js, page


__all__ = ["WipeRun", "write_wipe_report"]
