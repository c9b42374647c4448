"""The spec and running it here: ``validate``, ``up``, ``schema``."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from fivenines.cli.common import EXIT_USAGE, err, fail, load, out, spec_argument, warn
from fivenines.errors import ConfigError, SpecError
from fivenines.proxy import aio
from fivenines.spec import Spec, json_schema, node_error, port_errors


@click.command()
@spec_argument
@click.option("--no-port-check", is_flag=True, help="Do not check that the ports are free now.")
def validate(spec_file: str, no_port_check: bool) -> None:
    """Check SPEC_FILE; exit 2 with every problem named by its field path."""
    spec = load(spec_file, check_ports=not no_port_check)
    if any(lst.tls for lst in spec.listeners):
        from fivenines.certs import tls_file_problems

        for w in tls_file_problems(spec, Path(spec_file).parent, time.time()).warnings:
            warn(f"{spec_file}: {w}")
    groups = ", ".join(
        f"{n} ({tg.instances.count}+{tg.instances.standby})" if tg.instances else f"{n} ({len(tg.targets or [])} targets)"
        for n, tg in spec.target_groups.items()
    )
    out.print(f"{spec_file}: ok: {spec.name}: {len(spec.listeners)} listener(s); target groups: {groups}")


@click.command()
@spec_argument
@click.option("--ready-file", type=click.Path(dir_okay=False), help="Write addresses as JSON here once serving.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-format", default="text", type=click.Choice(["text", "json"]),
              help="fivenines' own log on stderr: human-readable, or one JSON object per line.")
@click.option("--access-log", metavar="PATH",
              help="Log every proxied request (Common Log Format + target + duration) to PATH ('-': stdout).")
@click.option("--node", metavar="NAME", help="Run as this node of the spec's cluster: section (docs/cluster.md).")
def up(spec_file: str, ready_file: str | None, log_level: str, log_format: str, access_log: str | None,
       node: str | None) -> None:
    """Start the instances of SPEC_FILE behind the load balancer and keep them healthy.

    SIGHUP (or `fivenines reload`) re-reads SPEC_FILE and applies the difference. With a
    cluster: section, every node runs the same SPEC_FILE with --node NAME.
    """
    spec = load(spec_file, check_ports=False)
    spec = _as_node(spec_file, spec, node)
    problems = port_errors(spec)
    if problems:
        raise SpecError(spec_file, problems)
    from fivenines.runtime.logs import setup_logging

    setup_logging(log_level, log_format)
    from fivenines import accel
    from fivenines.app import Controller, run
    from fivenines.runtime.status import listener_url

    def announce(ctl: Controller) -> None:
        urls = [listener_url(ls.protocol, *lst.address) for ls, lst in ctl.listeners]
        if log_format == "json":
            logging.getLogger("fivenines").info(
                "up", extra={"service": spec.name, "loop": aio.loop_name(), "data_plane": accel.mode(),
                             "listeners": urls, "admin": ctl.admin.url, "state_dir": str(ctl.state_dir)})
            return
        err.print(f"[bold green]fivenines[/] {spec.name} is up ({aio.loop_name()}, data plane {accel.mode()}).",
                  markup=True)
        if accel.reason():
            err.print(f"  [bold yellow]warning[/]     the data plane runs from source, about half as fast: "
                      f"{escape(accel.reason())}", markup=True)
        for u in urls:
            err.print(f"  open        {u}")
        if ctl.cluster is not None:
            c = ctl.cluster
            err.print(f"  node        {c.node} ({c.address}) of {', '.join(n.name for n in c.layout.nodes)}; "
                      f"VIP {c.cluster.vip} on {c.cluster.interface} by {c.mode}")
            for line in c.layout.describe():
                err.print(f"  placement   {line}")
        err.print(f"  dashboard   {ctl.admin.url}/")
        err.print(f"  status      fivenines status -f {spec_file}")
        err.print(f"  logs        {ctl.state_dir / 'logs'}")
        err.print("  Ctrl-C stops it: in-flight requests finish, then the instances stop. SIGHUP reloads the spec.")
        StartupProgress(ctl)

    try:
        code = aio.run(run(spec, spec_file, ready_file=ready_file, announce=announce, access_log=access_log,
                           node=node))
    except SpecError:
        raise
    except ConfigError as exc:
        fail(f"{spec_file}: {exc}", EXIT_USAGE)
    sys.exit(code)


def _as_node(spec_file: str, spec: Spec, node: str | None) -> Spec:
    """The spec as ``--node NODE`` runs it (unchanged without a cluster: section), after checking
    that this host can run that node (exit 2 otherwise, nothing started)."""
    problem = node_error(spec, node)
    if problem is not None:
        raise SpecError(spec_file, [problem])
    if spec.cluster is None or node is None:
        return spec
    from fivenines.core.membership import node_spec
    from fivenines.runtime.node import preflight

    spec = node_spec(spec, node)
    problems, warnings = preflight(spec, node)
    if problems:
        raise SpecError(spec_file, problems)
    for w in warnings:
        warn(f"{spec_file}: {w}")
    return spec


class StartupProgress:
    """Prints each target's first health transitions while ``up`` waits for them all to be healthy."""

    def __init__(self, ctl: Any, console: Console = err) -> None:
        self.ctl = ctl
        self.console = console
        self.total = sum(len(g.targets) for g in ctl.groups.values())
        self.started = ctl.now()
        self._unsubscribe = ctl.events.subscribe(self._on_event)
        if ctl.all_healthy():
            self._done()
        else:
            console.print(f"  waiting for {self.total} target(s) to pass their health checks…")

    def healthy(self) -> int:
        return sum(1 for g in self.ctl.groups.values() for t in g.targets if t.health.state.value == "healthy")

    def _on_event(self, ev: Any) -> None:
        if ev.kind == "health":
            mark = {"healthy": "[green]✓[/]", "unhealthy": "[red]✗[/]"}.get(ev.new, "·")
            why = "" if ev.new == "healthy" else f": {ev.reason}"
            self.console.print(f"  {mark} {ev.target} {ev.new}{why} ({self.healthy()}/{self.total} healthy)",
                               markup=True, highlight=False)
        if self.ctl.all_healthy():
            self._done()

    def _done(self) -> None:
        self._unsubscribe()
        self.console.print(f"  [green]all {self.total} target(s) healthy[/] after {self.ctl.now() - self.started:.1f}s",
                           markup=True)


@click.command()
def schema() -> None:
    """Print the JSON Schema of fivenines.yaml."""
    click.echo(json.dumps(json_schema(), indent=2))


COMMANDS: tuple[click.Command, ...] = (validate, up, schema)
"""This family's commands, added to ``fivenines`` by :mod:`fivenines.cli`."""
