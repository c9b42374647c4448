"""``fivenines chaos SPEC``: run SPEC, load it, inject faults into what fivenines started,
measure availability, compare with the model, write a report. The logic lives in
:mod:`fivenines.chaos` (pure: schedule, outcomes, timeline, compare; I/O: loadgen,
inject, runner); this is the command line around it."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click
from rich.table import Table

from fivenines.cli.common import EXIT_USAGE, err, fail, load, out, spec_argument
from fivenines.proxy import aio

if TYPE_CHECKING:
    from fivenines.chaos.runner import ChaosConfig
    from fivenines.chaos.schedule import FaultKind
    from fivenines.spec import Spec


def _chaos_duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    from fivenines.spec import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command("chaos")
@spec_argument
@click.option("--duration", default="2m", callback=_chaos_duration, help="How long the load runs (default 2m).")
@click.option("--rate", default=500.0, type=click.FloatRange(min=1, max=20000), help="Requests per second, open loop (default 500).")
@click.option("--faults", "faults_text", default=None,
              help="Fault kinds: kill,hang,error,slow,reset,lb (default: all of them; lb only with workers > 1); "
                   "or wipe alone: a replicated group's data wiped and restored from backup; on a spec with "
                   "cluster: node,lb,partition (the default there; needs root: the namespace rig).")
@click.option("--mtbf", default="10s", callback=_chaos_duration, help="Mean time between faults (exponential; default 10s).")
@click.option("--seed", type=int, default=None, help="Seed of the schedule and target choice (default: random, printed).")
@click.option("--schedule", "schedule_text", default=None,
              help='A fixed schedule instead of random arrivals: "10s:kill, 25s:hang:web-2, 40s:error".')
@click.option("--fault-duration", default="5s", callback=_chaos_duration,
              help="How long hang/error/slow last; for wipe, how long until the restore (default 5s).")
@click.option("--slow-ms", default=1000, type=click.IntRange(min=1), help="Added latency of a slow fault (default 1000).")
@click.option("--warmup", default="5s", callback=_chaos_duration, help="Load without faults first (default 5s).")
@click.option("--settle", default="10s", callback=_chaos_duration, help="No new fault this close to the end (default 10s).")
@click.option("--timeout", "req_timeout", default="5s", callback=_chaos_duration, help="Client timeout per request (default 5s).")
@click.option("--connections", default=None, type=click.IntRange(min=1),
              help="Most client connections open at once (default: rate x timeout, within the fd limit); "
                   "for wipe, the writers (default 4).")
@click.option("--overlap", is_flag=True, help="Inject on schedule even while an earlier fault is not repaired.")
@click.option("--path", default="/", help="Request path (default /).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Report folder (default: STATE_DIR/chaos/TIMESTAMP).")
@click.option("--dry-run", is_flag=True, help="Show the schedule and exit; start nothing.")
def chaos_cmd(spec_file: str, duration: float, rate: float, faults_text: str | None, mtbf: float, seed: int | None,
              schedule_text: str | None, fault_duration: float, slow_ms: int, warmup: float, settle: float,
              req_timeout: float, connections: int | None, overlap: bool, path: str, report_dir: str | None,
              dry_run: bool) -> None:
    """Run SPEC_FILE under load, inject faults, measure availability and compare it with the model.

    Starts `fivenines up SPEC_FILE`, sends RATE requests/s for DURATION, injects
    faults into the instances fivenines started (kill, hang, error, slow, reset,
    lb), restores them, stops everything and writes summary.json and report.html.
    Ctrl-C stops injection and restores every target. See docs/chaos.md.

    On a spec with cluster: (docs/chaos.md, "Clusters"; needs root), every node runs in a
    network namespace of this machine, the load goes to the VIP from a client namespace, and
    the faults hit the VIP holder: node (crash), lb (its fivenines up killed), partition (cut
    from etcd); the report adds each fault's VIP takeover beside the model's.

    --faults wipe: writers confirm each write to a replicated group with WAIT 1, the
    primary is wiped (FLUSHALL), restored from backup after --fault-duration, and every
    acknowledged write lost is counted: measured RPO and RTO beside the declared ones.
    """
    import asyncio
    import random
    import re

    from fivenines.chaos import ChaosError
    from fivenines.chaos.runner import ChaosConfig, ChaosRun, load_target, plan
    from fivenines.chaos.schedule import (
        CLUSTER_KINDS,
        DESCRIPTIONS,
        LOAD_KINDS,
        FaultKind,
        cluster_fault_problem,
        parse_kinds,
        parse_schedule,
        render,
    )

    spec = load(spec_file, check_ports=False)
    clustered = spec.cluster is not None
    if not clustered:  # a cluster's ports are in the rig's namespaces, not on this machine
        spec = load(spec_file, check_ports=True)
    assert duration is not None and mtbf is not None and fault_duration is not None
    assert warmup is not None and settle is not None and req_timeout is not None
    workers = spec.workers

    def usage(msg: str) -> NoReturn:
        fail(msg, EXIT_USAGE)

    try:
        kinds = parse_kinds(faults_text) if faults_text else (CLUSTER_KINDS if clustered else LOAD_KINDS)
    except ValueError as exc:
        usage(f"--faults: {exc}")

    def check_cluster(kinds: tuple[FaultKind, ...], option: str) -> None:
        from fivenines.rig import unavailable

        problem = cluster_fault_problem(kinds, spec_file=spec_file, clustered=clustered,
                                        rig_unavailable=None if dry_run or not clustered else unavailable())
        if problem:
            usage(problem.replace("--faults", option, 1))

    check_cluster(kinds, "--faults")
    wiping = FaultKind.WIPE in kinds or bool(schedule_text and re.search(r":\s*wipe\b", schedule_text, re.I))
    if wiping and clustered:
        usage(f"--faults wipe: {spec_file} has a cluster: section; chaos then injects node, lb and partition "
              f"faults only")
    if wiping:
        if seed is None:
            seed = random.SystemRandom().randrange(1, 2**31)
        try:
            config = _wipe_config(spec_file, spec, kinds if not schedule_text else (FaultKind.WIPE,), schedule_text,
                                  duration, mtbf, seed, fault_duration, warmup, settle, connections, report_dir)
        except ValueError as exc:
            usage(str(exc))
        _wipe(config, spec, dry_run)
        return
    if FaultKind.LB in kinds and workers < 2 and not clustered:
        if faults_text:
            usage(f"--faults lb kills a data-plane worker: it needs workers: 2 or more in {spec_file} (workers: {workers})")
        kinds = tuple(k for k in kinds if k is not FaultKind.LB)
    try:
        _, group = load_target(spec)
    except ChaosError as exc:
        usage(f"{spec_file}: {exc}")
    if spec.target_groups[group].instances is None and any(k.on_target for k in kinds):
        usage(f"{spec_file}: target_groups.{group} lists targets: fivenines does not run them, so chaos cannot "
              f"inject faults into them; use instances:")
    if seed is None:
        seed = random.SystemRandom().randrange(1, 2**31)
    schedule = None
    if schedule_text:
        try:
            schedule = parse_schedule(schedule_text, duration=fault_duration, seed=seed)
        except ValueError as exc:
            usage(f"--schedule: {exc}")
        check_cluster(tuple(dict.fromkeys(f.kind for f in schedule)), "--schedule")
        if any(f.kind is FaultKind.LB for f in schedule) and workers < 2 and not clustered:
            usage(f"--schedule has an lb fault: it needs workers: 2 or more in {spec_file} (workers: {workers})")
        kinds = tuple(k for k in FaultKind if any(f.kind is k for f in schedule))
    elif duration - settle <= warmup:
        usage(f"--duration {duration:g}s leaves no time for faults after --warmup {warmup:g}s and before --settle {settle:g}s")
    if report_dir is None:
        from fivenines.app import Controller

        state = Controller(spec, spec_file).state_dir
        report_dir = str(state / "chaos" / time.strftime("%Y%m%d-%H%M%S"))
    config = ChaosConfig(spec_file, Path(report_dir), duration=duration, rate=rate, kinds=kinds, mtbf=mtbf, seed=seed,
                         schedule=schedule, fault_duration=fault_duration, slow_ms=slow_ms, warmup=warmup, settle=settle,
                         timeout=req_timeout, max_connections=connections, overlap=overlap, path=path)
    planned = plan(config)
    how = "fixed schedule" if schedule else f"exponential, mean {mtbf:g}s apart, in [{warmup:g}s, {duration - settle:g}s)"
    out.print(f"fivenines chaos {spec.name}: {rate:g} requests/s for {duration:g}s to group {group}; faults "
              f"{', '.join(k.value for k in kinds)} ({how}); seed {seed}", markup=False)
    if dry_run:
        for k in sorted({f.kind for f in planned}, key=list(FaultKind).index):
            out.print(f"  {k.value:<6} {DESCRIPTIONS[k]}", markup=False)
        out.print(f"schedule ({len(planned)} faults; targets are picked among the serving ones when each fault is due"
                  + ("" if overlap else "; a fault waits until the previous one is repaired") + "):", markup=False)
        for line in render(planned):
            out.print(line, markup=False, highlight=False)
        return

    from fivenines.chaos.report import headline, summarise, write_report

    def say(line: str) -> None:
        err.print(line, markup=False, highlight=False)

    try:
        if clustered:
            from fivenines.chaos.cluster_run import ClusterChaosRun

            data = aio.run(ClusterChaosRun(config, spec, say).run())
        else:
            data = aio.run(ChaosRun(config, spec, say).run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        err.print("interrupted: injection stopped, " + ("the rig removed (every node, every namespace)." if clustered
                  else "every target restored, fivenines stopped."))
        sys.exit(130)
    summary = summarise(data)
    js, page = write_report(Path(report_dir), summary)
    table = Table(title=f"predicted vs measured ({group})", title_justify="left")
    for col in ("quantity", "model, as declared", "model, measured values", "measured"):
        table.add_column(col)
    for row in summary["predicted"]["table"]:
        table.add_row(row["quantity"], row["declared"], row["with_measured"], row["measured"])
    out.print(table)
    for line in headline(summary):
        out.print(line, markup=False, highlight=False)
    left = summary["restore"].get("stopped_left")
    if left:
        err.print(f"[bold red]warning[/]: processes still stopped: {left}", markup=True)
    out.print(f"report: {page}\n        {js}", markup=False)


def _wipe_config(spec_file: str, spec: Spec, kinds: tuple[FaultKind, ...], schedule_text: str | None,
                 duration: float, mtbf: float, seed: int, fault_duration: float, warmup: float, settle: float,
                 connections: int | None, report_dir: str | None) -> ChaosConfig:
    """The configuration of a ``wipe`` run; ValueError (a usage error) when it cannot be one."""
    from fivenines.chaos import ChaosError
    from fivenines.chaos.runner import ChaosConfig
    from fivenines.chaos.schedule import FaultKind, parse_schedule
    from fivenines.chaos.wipe import wipe_target

    if kinds != (FaultKind.WIPE,):
        raise ValueError("--faults wipe is a run of its own (writes to a replicated store, no HTTP load): "
                         "give it alone")
    schedule = None
    if schedule_text:
        schedule = parse_schedule(schedule_text, duration=fault_duration, seed=seed)
        if [f.kind for f in schedule] != [FaultKind.WIPE]:
            raise ValueError("--schedule: a wipe run has one fault, the wipe (e.g. --schedule 20s:wipe)")
    elif duration - settle <= warmup:
        raise ValueError(f"--duration {duration:g}s leaves no time for the wipe after --warmup {warmup:g}s "
                         f"and before --settle {settle:g}s")
    try:
        wipe_target(spec)
    except ChaosError as exc:
        raise ValueError(f"{spec_file}: {exc}") from None
    if report_dir is None:
        from fivenines.app import Controller

        report_dir = str(Controller(spec, spec_file).state_dir / "chaos" / time.strftime("%Y%m%d-%H%M%S"))
    return ChaosConfig(spec_file, Path(report_dir), duration=duration, kinds=(FaultKind.WIPE,), mtbf=mtbf, seed=seed,
                       schedule=schedule, fault_duration=fault_duration, warmup=warmup, settle=settle,
                       max_connections=connections)


def _wipe(config: ChaosConfig, spec: Spec, dry_run: bool) -> None:
    """``fivenines chaos SPEC --faults wipe`` (docs/chaos.md)."""
    import asyncio

    from fivenines.chaos.report import wipe_headline
    from fivenines.chaos.runner import plan
    from fivenines.chaos.schedule import DESCRIPTIONS, FaultKind
    from fivenines.chaos.wipe import wipe_target
    from fivenines.chaos.wipe_run import WipeRun, write_wipe_report

    _, group = wipe_target(spec)
    fault = plan(config)[0]
    out.print(f"fivenines chaos {spec.name}: wipe of group {group} at {fault.at:.2f}s, restore "
              f"{config.fault_duration:g}s later; writers for {config.duration:g}s; seed {config.seed}",
              markup=False, highlight=False)
    if dry_run:
        out.print(f"  wipe   {DESCRIPTIONS[FaultKind.WIPE]}", markup=False, highlight=False)
        return

    def say(line: str) -> None:
        err.print(line, markup=False, highlight=False)

    try:
        summary = aio.run(WipeRun(config, spec, say).run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        err.print("interrupted: the writers stopped, fivenines stopped.")
        sys.exit(130)
    js, page = write_wipe_report(config.report_dir, summary)
    for line in wipe_headline(summary):
        out.print(line, markup=False, highlight=False)
    out.print(f"report: {page}\n        {js}", markup=False)


COMMANDS: tuple[click.Command, ...] = (chaos_cmd,)
"""This family's commands, added to ``fivenines`` by :mod:`fivenines.cli`."""
