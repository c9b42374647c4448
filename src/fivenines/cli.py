"""The ``fivenines`` command."""

from __future__ import annotations

import json
import logging
import sys
import urllib.error
import urllib.request
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from fivenines import __version__, aio
from fivenines.errors import ConfigError, FivenineError, SpecError
from fivenines.spec import Spec, json_schema, load_spec, port_errors

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)

EXIT_USAGE = 2


def _fail_spec(exc: SpecError) -> None:
    for e in exc.errors:
        err.print(f"[bold red]error[/]: {exc.file}: {e}", markup=True, soft_wrap=True)
    sys.exit(EXIT_USAGE)


def _load(path: str, check_ports: bool) -> Spec:
    try:
        spec = load_spec(path)
        if check_ports:
            problems = port_errors(spec)
            if problems:
                raise SpecError(path, problems)
    except SpecError as exc:
        _fail_spec(exc)
    return spec


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fivenines")
def main() -> None:
    """fivenines: a redundant service behind a health-checked load balancer, from one file."""


@main.command()
@click.argument("spec_file", default="fivenines.yaml", type=click.Path(dir_okay=False))
@click.option("--no-port-check", is_flag=True, help="Do not check that the ports are free now.")
def validate(spec_file: str, no_port_check: bool) -> None:
    """Check SPEC_FILE; exit 2 with every problem named by its field path."""
    spec = _load(spec_file, check_ports=not no_port_check)
    groups = ", ".join(
        f"{n} ({tg.instances.count}+{tg.instances.standby})" if tg.instances else f"{n} ({len(tg.targets or [])} targets)"
        for n, tg in spec.target_groups.items()
    )
    out.print(f"{spec_file}: ok: {spec.name}: {len(spec.listeners)} listener(s); target groups: {groups}")


@main.command()
@click.argument("spec_file", default="fivenines.yaml", type=click.Path(dir_okay=False))
@click.option("--ready-file", type=click.Path(dir_okay=False), help="Write addresses as JSON here once serving.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def up(spec_file: str, ready_file: str | None, log_level: str) -> None:
    """Start the instances of SPEC_FILE behind the load balancer and keep them healthy."""
    spec = _load(spec_file, check_ports=True)
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    from fivenines.runtime.controller import Controller, run

    def announce(ctl: Controller) -> None:
        urls = [f"http://{lst.address[0]}:{lst.address[1]}/" for _, lst in ctl.listeners]
        err.print(f"[bold green]fivenines[/] {spec.name} is up ({aio.loop_name()}).", markup=True)
        for u in urls:
            err.print(f"  open        {u}")
        err.print(f"  status      {ctl.admin.url}/status   (fivenines status --admin {ctl.admin.url})")
        err.print(f"  logs        {ctl.state_dir / 'logs'}")
        err.print("  Ctrl-C stops it: in-flight requests finish, then the instances stop.")

    try:
        code = aio.run(run(spec, spec_file, ready_file=ready_file, announce=announce))
    except ConfigError as exc:
        err.print(f"[bold red]error[/]: {spec_file}: {exc}", markup=True)
        sys.exit(EXIT_USAGE)
    except FivenineError as exc:
        err.print(f"[bold red]error[/]: {exc}", markup=True)
        sys.exit(1)
    sys.exit(code)


def _admin_url(admin: str | None, spec_file: str | None) -> str:
    if admin:
        return admin if admin.startswith("http") else f"http://{admin}"
    if spec_file:
        try:
            return f"http://{load_spec(spec_file).admin.listen}"
        except SpecError as exc:
            _fail_spec(exc)
    return "http://127.0.0.1:9900"


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        err.print(f"[bold red]error[/]: cannot reach fivenines at {url}: {reason}", markup=True)
        sys.exit(1)


_STATE_STYLE = {"healthy": "green", "initial": "yellow", "unhealthy": "red", "draining": "blue", "unused": "dim"}


def render_status(status: dict[str, Any]) -> Table:
    table = Table(title=f"fivenines: {status.get('name', '')}", title_justify="left")
    for col in ("group", "target", "address", "state", "reason", "role", "pid", "since", "requests", "errors"):
        table.add_column(col, justify="right" if col in ("pid", "requests", "errors") else "left")
    for gname, g in status.get("target_groups", {}).items():
        for t in g["targets"]:
            style = _STATE_STYLE.get(t["state"], "")
            reason = t.get("reason") or ""
            inst = t.get("instance") or {}
            if inst.get("state") == "crash_loop":
                reason = f"crash loop ({inst.get('last_exit')})"
            role = t["role"]
            if t.get("replication"):  # a replicated store: primary / replica, and its position
                r = t["replication"]
                role = r["role"] + (f" @{r['position']}" if r.get("position") is not None else "")
            table.add_row(
                gname,
                t["id"],
                t["address"],
                f"[{style}]{t['state']}[/]" if style else t["state"],
                reason,
                role,
                str(t.get("pid") or ""),
                str(t.get("since", ""))[11:19],
                str(t.get("requests", 0)),
                str(t.get("errors", 0)),
            )
    return table


@main.command()
@click.option("--admin", help="Admin address (host:port or URL). Default: from -f SPEC, else 127.0.0.1:9900.")
@click.option("-f", "--file", "spec_file", type=click.Path(dir_okay=False), help="Read the admin address from SPEC.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
def status(admin: str | None, spec_file: str | None, as_json: bool) -> None:
    """Show every target's health, role and traffic."""
    base = _admin_url(admin, spec_file)
    data = _get_json(f"{base}/status")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    out.print(render_status(data))
    for gname, g in data.get("target_groups", {}).items():
        rep = g.get("replication")
        if rep:
            out.print(f"{gname}: {rep['kind']} {rep['phase']}, primary {rep['primary']} (epoch {rep['epoch']}), "
                      f"durability {rep['durability']}: {rep['durability_note']}")
    for lst in data.get("listeners", []):
        out.print(
            f"listener {lst['address']} ({lst['protocol']}) -> {lst['default_target_group']}: "
            f"{lst['requests']} requests, {lst['failed']} failed, {lst['retries']} retried"
        )
    for t in (t for g in data.get("target_groups", {}).values() for t in g["targets"]):
        inst = t.get("instance") or {}
        if inst.get("state") == "crash_loop" and inst.get("stderr_tail"):
            out.print(f"[red]{t['id']}[/] crash loop, last {inst.get('last_exit')}; stderr tail:", markup=True)
            for line in inst["stderr_tail"][-5:]:
                out.print(f"    {line}", markup=False)


# ------------------------------------------------------------------ switchover (replicated groups)


def _token_for(spec_file: str | None, token_file: str | None) -> str:
    from pathlib import Path

    if token_file:
        path = Path(token_file)
    elif spec_file:
        from fivenines.runtime.controller import admin_token_path, state_dir_of

        try:
            spec = load_spec(spec_file)
        except SpecError as exc:
            _fail_spec(exc)
        state_dir, base = state_dir_of(spec, spec_file)
        path = admin_token_path(spec, state_dir, base)
    else:
        path = Path("fivenines.yaml")
        if not path.exists():
            err.print("[bold red]error[/]: give -f SPEC or --token-file for the admin token", markup=True)
            sys.exit(EXIT_USAGE)
        return _token_for(str(path), None)
    try:
        token = path.read_text().strip()
    except OSError as exc:
        err.print(f"[bold red]error[/]: cannot read the admin token {path}: {exc.strerror or exc}", markup=True)
        sys.exit(1)
    if not token or any(c.isspace() for c in token):
        err.print(f"[bold red]error[/]: {path} is not an admin token file (one line, no spaces)", markup=True)
        sys.exit(EXIT_USAGE)
    return token


@main.command()
@click.argument("group")
@click.option("--to", "to", help="Target to promote (default: the most advanced healthy replica).")
@click.option("--admin", help="Admin address (host:port or URL). Default: from -f SPEC, else 127.0.0.1:9900.")
@click.option("-f", "--file", "spec_file", type=click.Path(dir_okay=False), help="The spec (admin address, token).")
@click.option("--token-file", type=click.Path(dir_okay=False), help="Admin token file (default: from the spec).")
def switchover(group: str, to: str | None, admin: str | None, spec_file: str | None, token_file: str | None) -> None:
    """Planned change of GROUP's primary: writes pause, the replica catches up, then it is promoted."""
    from urllib.parse import quote

    base = _admin_url(admin, spec_file)
    token = _token_for(spec_file, token_file)
    url = f"{base}/target_groups/{quote(group)}/switchover" + (f"?to={quote(to)}" if to else "")
    req = urllib.request.Request(url, method="POST", data=b"", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            data = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            msg = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            msg = exc.reason
        err.print(f"[bold red]error[/]: switchover of {group}: {msg}", markup=True)
        sys.exit(1)
    except (urllib.error.URLError, OSError) as exc:
        err.print(f"[bold red]error[/]: cannot reach fivenines at {base}: {getattr(exc, 'reason', exc)}", markup=True)
        sys.exit(1)
    out.print(f"{group}: primary {data['old']} -> {data['new']} in {data['seconds']}s (epoch {data['epoch']})")


@main.command()
def schema() -> None:
    """Print the JSON Schema of fivenines.yaml."""
    click.echo(json.dumps(json_schema(), indent=2))


if __name__ == "__main__":
    main()
