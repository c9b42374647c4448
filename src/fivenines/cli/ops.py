"""Operating a running fivenines through its admin API: ``status``, ``events``, ``drain``,
``enable``, ``maintenance``, ``weight``, ``reload``, ``restart``, ``switchover``.

Every call goes through :class:`~fivenines.cli.admin_client.AdminClient`, found by
:mod:`fivenines.cli.connect`; failures it raises are reported by
:func:`fivenines.cli.common.report` (exit 1).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from fivenines.cli import connect
from fivenines.cli.admin_client import AdminRefused, AdminUnreachable
from fivenines.cli.backup import status_line as backup_status_line
from fivenines.cli.common import EXIT_USAGE, err, error, fail, out, refusal, warn

_STATE_STYLE = {"healthy": "green", "initial": "yellow", "unhealthy": "red", "draining": "blue", "unused": "dim"}


def state_cell(state: str | None) -> str:
    """A health state, coloured as in ``status``."""
    style = _STATE_STYLE.get(state or "", "")
    return f"[{style}]{state}[/]" if style else str(state)


# --------------------------------------------------------------------------- reading


def render_status(status: dict[str, Any]) -> Table:
    table = Table(title=f"fivenines: {status.get('name', '')}", title_justify="left")
    clustered = "cluster" in status
    cols = ("group", "target", "node", "address", "state", "reason", "role", "pid", "since", "requests", "errors")
    for col in cols:
        if col != "node" or clustered:
            table.add_column(col, justify="right" if col in ("pid", "requests", "errors") else "left")
    for gname, g in status.get("target_groups", {}).items():
        for t in g["targets"]:
            reason = t.get("reason") or ""
            inst = t.get("instance") or {}
            if inst.get("state") == "crash_loop":
                reason = f"crash loop ({inst.get('last_exit')})"
            if t.get("admin_state"):
                reason = f"{t['admin_state']} by operator"
            if t.get("weight", 1) != 1:
                reason = f"{reason} (weight {t['weight']})".strip()
            role = t["role"]
            if t.get("replication"):  # a replicated store: primary / replica, and its position
                r = t["replication"]
                role = r["role"] + (f" @{r['position']}" if r.get("position") is not None else "")
            if t.get("excluded") and inst.get("state") != "crash_loop":
                reason = t["excluded"]
            table.add_row(
                gname,
                t["id"],
                *([t.get("node") or "-"] if clustered else []),
                t["address"],
                state_cell(t["state"]),
                reason,
                role,
                str(t.get("pid") or ""),
                str(t.get("since", ""))[11:19],
                str(t.get("requests", 0)),
                str(t.get("errors", 0)),
            )
    return table


def render_cluster(c: dict[str, Any]) -> Table:
    """Every node of the cluster, who holds the VIP and since when, as this node sees it."""
    how = (f"lease {c.get('lease') or '-'}, fencing revision {c.get('fencing_revision') or '-'}" if c["mode"] == "etcd"
           else f"VRRP {c.get('vrrp_state') or '-'}")
    since = f" since {str(c['holder_since'])[11:19]}" if c.get("holder_since") else ""
    table = Table(title=f"cluster ({c['mode']}): VIP {c['vip']} held by {c.get('holder') or 'nobody'}{since}; {how}",
                  title_justify="left")
    for col in ("node", "address", "zone", "state", "VIP", "instances", "admin"):
        table.add_column(col)
    for n in c.get("nodes", []):
        name = f"{n['name']} (this node)" if n.get("this_node") else n["name"]
        state = n["state"] if n.get("same_layout") is not False else f"{n['state']}, placed differently: another spec?"
        table.add_row(name, n["address"], n.get("zone") or "", state, "holds" if n.get("holds_vip") else "",
                      " ".join(n.get("instances", [])), n.get("admin") or "")
    return table


def print_status(data: dict[str, Any]) -> None:
    if data.get("cluster"):
        c = data["cluster"]
        out.print(render_cluster(c))
        if not c.get("healthy"):
            out.print(f"[yellow]node {c['node']} may not hold the VIP: {escape(c.get('health') or '')}[/]", markup=True)
        out.print(f"operator state: {c.get('operator_state')}")
    out.print(render_status(data))
    plane = data.get("data_plane", "")
    if plane and plane != "compiled":
        out.print(f"[yellow]data plane runs from source, about half as fast: {escape(plane)}[/]", markup=True)
    for gname, g in data.get("target_groups", {}).items():
        rep = g.get("replication")
        if rep:
            out.print(f"{gname}: {rep['kind']} {rep['phase']}, primary {rep['primary']} (epoch {rep['epoch']}), "
                      f"durability {rep['durability']}: {rep['durability_note']}")
        if rep and rep.get("backup"):
            click.echo(backup_status_line(gname, rep["backup"]))
    for lst in data.get("listeners", []):
        out.print(
            f"listener {lst['address']} ({lst['protocol']}) -> {lst['default_target_group']}: "
            f"{lst['requests']} requests, {lst['failed']} failed, {lst['retries']} retried"
        )
        if lst.get("tls"):
            for line in tls_lines(lst["tls"]):
                out.print(line, markup=False)
    for gname, g in data.get("target_groups", {}).items():
        fo = g.get("fail_open") or {}
        if fo.get("in_force"):
            out.print(f"[red]{gname}: no target can serve: fail-open {fo['policy']} in force[/]", markup=True)
        ro = g.get("rollout") or {}
        if ro.get("state") == "running":
            out.print(f"{gname}: rolling restart at {ro.get('target')}: {ro.get('steps')}")
        sc = g.get("scaling")
        if sc:
            out.print(scaling_line(gname, sc), markup=False)
    for t in (t for g in data.get("target_groups", {}).values() for t in g["targets"]):
        inst = t.get("instance") or {}
        if inst.get("state") == "crash_loop" and inst.get("stderr_tail"):
            out.print(f"[red]{t['id']}[/] crash loop, last {inst.get('last_exit')}; stderr tail:", markup=True)
            for line in inst["stderr_tail"][-5:]:
                out.print(f"    {line}", markup=False)


def tls_lines(tls: dict[str, Any]) -> list[str]:
    """An https/tls listener in ``fivenines status``: its policy, handshakes and each certificate.

    >>> tls = {"passthrough": False, "ssl_policy": "P", "tickets": "shared", "mutual_authentication": "off",
    ...        "handshakes": 9, "resumed": 4, "failed": 1, "timed_out": 0, "refused": 0, "certificates": [
    ...        {"subject": "CN=a.test", "sans": ["a.test", "*.a.test"], "not_after": "2027-01-01T00:00:00Z",
    ...         "days_left": 12.5, "file": "a.pem", "default": True}]}
    >>> print("\\n".join(tls_lines(tls)))
      tls P, tickets shared, mTLS off: 9 handshakes (4 resumed), 1 failed, 0 timed out, 0 refused
      certificate CN=a.test (a.test, *.a.test) expires 2027-01-01T00:00:00Z, in 12.5 days [default] a.pem
    """
    head = ("  tls passthrough (routed by SNI)" if tls.get("passthrough") else
            f"  tls {tls['ssl_policy']}, tickets {tls['tickets']}, mTLS {tls['mutual_authentication']}")
    lines = [f"{head}: {tls['handshakes']} handshakes"
             + (f" ({tls['resumed']} resumed)" if not tls.get("passthrough") else "")
             + f", {tls['failed']} failed, {tls['timed_out']} timed out, {tls['refused']} refused"]
    for c in tls.get("certificates", []):
        left = c["days_left"]
        when = f"in {left:g} days" if left >= 0 else f"EXPIRED {-left:g} days ago"
        lines.append(f"  certificate {c['subject']} ({', '.join(c['sans'])}) expires {c['not_after']}, {when}"
                     + (" [default]" if c.get("default") else "") + f" {c['file']}")
    return lines


def scaling_line(group: str, sc: dict[str, Any]) -> str:
    """``web: scaling 3 -> 5 of 2..10 (manual 5); requests_per_target 640/s (target 400/s); last: ...``."""
    moving = f"{sc['current']}" if sc["desired"] == sc["current"] else f"{sc['current']} -> {sc['desired']}"
    parts = [f"{group}: scaling {moving} of {sc['min']}..{sc['max']}"
             + (f" (manual {sc['manual']})" if sc.get("manual") is not None else "")]
    for m in sc.get("metrics", []):
        value = "not measured" if m["value"] is None else f"{m['value']:.4g}"
        parts.append(f"{m['metric']} {value} (target {m['target']:g}, {m['warm']} warm)")
    parts.append(f"last: {sc['reason']}" + (f" (waiting: {sc['paused']})" if sc.get("paused") else ""))
    return "; ".join(parts)


def format_event(e: dict[str, Any]) -> str:
    who = f"{e['group']}/{e['target']}" if e.get("target") else e.get("group", "")
    change = f"{e['old']} -> {e['new']}" if e.get("old") or e.get("new") else ""
    return f"{e['at'][11:23]} {e['kind']:<8} {who} {change}: {e['reason']}".replace("  :", ":")


@click.command()
@connect.admin_options
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes with --watch.")
def status(admin: str | None, spec_file: str | None, as_json: bool, watch: bool, interval: float) -> None:
    """Show every target's health, role and traffic."""
    api = connect.client(admin, spec_file)
    if not watch:
        data = api.status()
        if as_json:
            click.echo(json.dumps(data, indent=2))
        else:
            print_status(data)
        return
    try:
        while True:
            data = api.status()
            if as_json:
                click.echo(json.dumps(data), nl=True)
            else:
                if out.is_terminal:
                    out.clear()
                else:
                    out.print(f"--- {time.strftime('%H:%M:%S')}")
                print_status(data)
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        pass


@click.command()
@connect.admin_options
@click.option("-n", "--lines", default=20, show_default=True, help="How many recent events to show.")
@click.option("--follow", is_flag=True, help="Keep printing events as they happen, until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
def events(admin: str | None, spec_file: str | None, lines: int, follow: bool, as_json: bool) -> None:
    """Show recent state changes (health, role, instance, drain, reload, ...)."""
    api = connect.client(admin, spec_file)
    data = api.events(lines)
    last = 0
    for e in data["events"]:
        click.echo(json.dumps(e) if as_json else format_event(e))
        last = e["seq"]
    sys.stdout.flush()
    if not follow:
        return
    last = max(last, int(data.get("last_seq", last)))
    try:
        stream = api.stream_events(last)
        err.print(f"following events after #{last} (Ctrl-C stops)")
        for e in stream:
            click.echo(json.dumps(e) if as_json else format_event(e))
            sys.stdout.flush()
    except AdminUnreachable as exc:
        fail(f"lost fivenines at {api.base}: {exc.reason}")
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------------- changing


def _target_command(action: str, help: str) -> click.Command:
    @click.command(name=action, help=help)
    @click.argument("target")
    @connect.mutating_options
    def command(target: str, admin: str | None, spec_file: str | None, token_file: str | None) -> None:
        api = connect.client(admin, spec_file, token_file, token=True)
        with refusal(f"{action} {target}"):
            data = api.target_action(target, action)
        out.print(f"{target}: {data['state']} ({data.get('admin_state') or 'enabled'}), role {data['role']}")

    return command


drain = _target_command("drain", "Stop sending TARGET new requests; in-flight ones finish (within deregistration_delay).")
enable = _target_command("enable", "Undo drain/maintenance: TARGET serves again once it passes its health checks.")
maintenance = _target_command("maintenance", "Take TARGET out at once (no new requests) until enabled.")


@click.command()
@click.argument("target")
@click.argument("weight", type=click.IntRange(0, 1000))
@connect.mutating_options
def weight(target: str, weight: int, admin: str | None, spec_file: str | None, token_file: str | None) -> None:
    """Set TARGET's balancing weight (0: no new requests)."""
    api = connect.client(admin, spec_file, token_file, token=True)
    with refusal(f"weight {target}"):
        data = api.set_weight(target, weight)
    out.print(f"{target}: weight {data['weight']}")


@click.command()
@connect.mutating_options
def reload(admin: str | None, spec_file: str | None, token_file: str | None) -> None:
    """Re-read the spec fivenines runs and apply the difference without dropping a request.

    An invalid spec changes nothing: its problems are printed and the exit status is 2.
    """
    api = connect.client(admin, spec_file, token_file, token=True)
    status, data = api.request("POST", "/reload", timeout=120.0)
    if status == 422:
        for e in data.get("errors", []):
            error(str(e))
        err.print("reload rejected: the running configuration is unchanged")
        sys.exit(EXIT_USAGE)
    with refusal("reload"):
        if status != 200:
            raise AdminRefused(api.url("/reload"), status, data)
    out.print(f"reloaded: configuration generation {data['generation']}")
    for a in data.get("actions", []):
        out.print(f"  {a}")
    for w in data.get("warnings", []):
        warn(w)


@click.command()
@click.argument("group")
@connect.mutating_options
@click.option("--wait/--no-wait", default=True, show_default=True, help="Follow the restart until it ends.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to follow it at most.")
def restart(group: str, admin: str | None, spec_file: str | None, token_file: str | None, wait: bool,
            timeout: float) -> None:
    """Rolling restart of GROUP's instances, one at a time, without failing a request.

    Each instance is deregistered (a standby takes over), drained, stopped,
    started, and must pass its health checks before the next one is taken out.
    Exits 0 when every instance was restarted, 1 when the restart stopped.
    """
    api = connect.client(admin, spec_file, token_file, token=True)
    with refusal(f"restart {group}"):
        body = api.group_call(group, "restart", status=202, timeout=5.0)
    order = body["rollout"]["steps"]
    out.print(f"rolling restart of {group}: {', '.join(order)}")
    if not wait:
        return
    printed = 0
    deadline = time.monotonic() + timeout
    while True:
        ro = api.status()["target_groups"][group].get("rollout") or {}
        lines, total = ro.get("log", []), int(ro.get("log_total", 0))
        new = min(len(lines), total - printed)  # status keeps the last entries only
        for line in lines[len(lines) - new:] if new > 0 else []:
            out.print(f"  {line}", markup=False)
        printed = total
        if ro.get("state") in ("done", "failed"):
            out.print(f"{group}: {ro.get('outcome')} in {ro.get('elapsed_s')}s")
            sys.exit(0 if ro["state"] == "done" else 1)
        if time.monotonic() > deadline:
            fail(f"still running after {timeout:g}s: {ro.get('steps')}")
        time.sleep(0.2)


@click.command()
@click.argument("group")
@click.option("--to", "to", help="Target to promote (default: the most advanced healthy replica).")
@connect.mutating_options
def switchover(group: str, to: str | None, admin: str | None, spec_file: str | None, token_file: str | None) -> None:
    """Planned change of GROUP's primary: writes pause, the replica catches up, then it is promoted."""
    from urllib.parse import quote

    api = connect.client(admin, spec_file, token_file, token=True)
    with refusal(f"switchover of {group}"):
        data = api.group_call(group, "switchover", f"to={quote(to)}" if to else "", timeout=30.0)
    out.print(f"{group}: primary {data['old']} -> {data['new']} in {data['seconds']}s (epoch {data['epoch']})")


COMMANDS: tuple[click.Command, ...] = (status, events, drain, enable, maintenance, weight, reload, restart, switchover)
"""This family's commands, added to ``fivenines`` by :mod:`fivenines.cli`."""
