"""The ``fivenines`` command."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from fivenines import __version__
from fivenines.errors import ConfigError, FivenineError, SpecError
from fivenines.proxy import aio
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
@click.option("--log-format", default="text", type=click.Choice(["text", "json"]),
              help="fivenines' own log on stderr: human-readable, or one JSON object per line.")
@click.option("--access-log", metavar="PATH",
              help="Log every proxied request (Common Log Format + target + duration) to PATH ('-': stdout).")
def up(spec_file: str, ready_file: str | None, log_level: str, log_format: str, access_log: str | None) -> None:
    """Start the instances of SPEC_FILE behind the load balancer and keep them healthy.

    SIGHUP (or `fivenines reload`) re-reads SPEC_FILE and applies the difference.
    """
    spec = _load(spec_file, check_ports=True)
    from fivenines.runtime.logs import setup_logging

    setup_logging(log_level, log_format)
    from fivenines import accel
    from fivenines.app import Controller, run

    def announce(ctl: Controller) -> None:
        urls = [f"http://{lst.address[0]}:{lst.address[1]}/" for _, lst in ctl.listeners]
        if log_format == "json":
            logging.getLogger("fivenines").info(
                "up", extra={"service": spec.name, "loop": aio.loop_name(), "data_plane": accel.mode(),
                             "listeners": urls, "admin": ctl.admin.url, "state_dir": str(ctl.state_dir)})
            return
        err.print(f"[bold green]fivenines[/] {spec.name} is up ({aio.loop_name()}, data plane {accel.mode()}).",
                  markup=True)
        for u in urls:
            err.print(f"  open        {u}")
        err.print(f"  dashboard   {ctl.admin.url}/")
        err.print(f"  status      fivenines status -f {spec_file}")
        err.print(f"  logs        {ctl.state_dir / 'logs'}")
        err.print("  Ctrl-C stops it: in-flight requests finish, then the instances stop. SIGHUP reloads the spec.")
        StartupProgress(ctl)

    try:
        code = aio.run(run(spec, spec_file, ready_file=ready_file, announce=announce, access_log=access_log))
    except ConfigError as exc:
        err.print(f"[bold red]error[/]: {spec_file}: {exc}", markup=True)
        sys.exit(EXIT_USAGE)
    except FivenineError as exc:
        err.print(f"[bold red]error[/]: {exc}", markup=True)
        sys.exit(1)
    sys.exit(code)


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


# --------------------------------------------------------------------------- talking to a running fivenines


def _find_spec(spec_file: str | None) -> str | None:
    if spec_file:
        return spec_file
    return "fivenines.yaml" if os.path.exists("fivenines.yaml") else None


def _locate(spec_file: str | None) -> tuple[str | None, Path | None]:
    """(admin URL, token file) of the fivenines running SPEC. Reads only the few keys needed,
    so that a spec with a pending (even invalid) edit still finds the running fivenines."""
    path = _find_spec(spec_file)
    if not path:
        return None, None
    import yaml

    from fivenines.runtime.paths import RUN_FILE, spec_base_dir, state_dir_for

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        name = str(raw["name"])
        admin = raw.get("admin") or {}
        state_dir = state_dir_for(name, raw.get("state_dir"), path)
        listen = str(admin.get("listen", "127.0.0.1:9900"))
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        err.print(f"[bold red]error[/]: {path}: cannot find the running fivenines from it: {exc}", markup=True)
        sys.exit(EXIT_USAGE)
    token_file = admin.get("token_file")
    from fivenines.admin.auth import TOKEN_NAME

    token = spec_base_dir(Path(path)) / str(token_file) if token_file else state_dir / TOKEN_NAME
    try:
        info = json.loads((state_dir / RUN_FILE).read_text())
        os.kill(int(info["pid"]), 0)
        return str(info["admin"]), token
    except (OSError, ValueError, KeyError, TypeError):
        return f"http://{listen}", token


def _admin_url(admin: str | None, spec_file: str | None) -> str:
    if admin:
        return admin if admin.startswith("http") else f"http://{admin}"
    url, _ = _locate(spec_file)
    return url or "http://127.0.0.1:9900"


def _token(token_file: str | None, spec_file: str | None) -> str | None:
    from fivenines.admin.auth import read_token

    if token_file:
        return read_token(Path(token_file))
    _, path = _locate(spec_file)
    return read_token(path) if path else None


def _request(method: str, url: str, token: str | None = None, body: Any = None,
             timeout: float = 10.0) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            payload = json.loads(exc.read() or b"null")
        except ValueError:
            payload = {"error": exc.reason}
        return exc.code, payload
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        err.print(f"[bold red]error[/]: cannot reach fivenines at {url}: {reason}", markup=True)
        sys.exit(1)


def _get_json(url: str) -> Any:
    status, data = _request("GET", url)
    if status != 200:
        err.print(f"[bold red]error[/]: {url}: HTTP {status}: {(data or {}).get('error', '')}", markup=True)
        sys.exit(1)
    return data


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


def _print_status(data: dict[str, Any]) -> None:
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
    for gname, g in data.get("target_groups", {}).items():
        fo = g.get("fail_open") or {}
        if fo.get("in_force"):
            out.print(f"[red]{gname}: no target can serve: fail-open {fo['policy']} in force[/]", markup=True)
        ro = g.get("rollout") or {}
        if ro.get("state") == "running":
            out.print(f"{gname}: rolling restart at {ro.get('target')}: {ro.get('steps')}")
    for t in (t for g in data.get("target_groups", {}).values() for t in g["targets"]):
        inst = t.get("instance") or {}
        if inst.get("state") == "crash_loop" and inst.get("stderr_tail"):
            out.print(f"[red]{t['id']}[/] crash loop, last {inst.get('last_exit')}; stderr tail:", markup=True)
            for line in inst["stderr_tail"][-5:]:
                out.print(f"    {line}", markup=False)


_admin_opt = click.option("--admin", help="Admin address (host:port or URL). Default: found from -f SPEC.")
_file_opt = click.option("-f", "--file", "spec_file", type=click.Path(dir_okay=False),
                         help="The spec fivenines runs (default: ./fivenines.yaml when present).")
_token_opt = click.option("--token-file", type=click.Path(dir_okay=False),
                          help="Admin token file (default: admin.token_file, else STATE_DIR/admin.token).")


@main.command()
@_admin_opt
@_file_opt
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes with --watch.")
def status(admin: str | None, spec_file: str | None, as_json: bool, watch: bool, interval: float) -> None:
    """Show every target's health, role and traffic."""
    base = _admin_url(admin, spec_file)
    if not watch:
        data = _get_json(f"{base}/status")
        if as_json:
            click.echo(json.dumps(data, indent=2))
        else:
            _print_status(data)
        return
    try:
        while True:
            data = _get_json(f"{base}/status")
            if as_json:
                click.echo(json.dumps(data), nl=True)
            else:
                if out.is_terminal:
                    out.clear()
                else:
                    out.print(f"--- {time.strftime('%H:%M:%S')}")
                _print_status(data)
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        pass


def format_event(e: dict[str, Any]) -> str:
    who = f"{e['group']}/{e['target']}" if e.get("target") else e.get("group", "")
    change = f"{e['old']} -> {e['new']}" if e.get("old") or e.get("new") else ""
    return f"{e['at'][11:23]} {e['kind']:<8} {who} {change}: {e['reason']}".replace("  :", ":")


@main.command()
@_admin_opt
@_file_opt
@click.option("-n", "--lines", default=20, show_default=True, help="How many recent events to show.")
@click.option("--follow", is_flag=True, help="Keep printing events as they happen, until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
def events(admin: str | None, spec_file: str | None, lines: int, follow: bool, as_json: bool) -> None:
    """Show recent state changes (health, role, instance, drain, reload, ...)."""
    base = _admin_url(admin, spec_file)
    data = _get_json(f"{base}/events?limit={lines}")
    last = 0
    for e in data["events"]:
        click.echo(json.dumps(e) if as_json else format_event(e))
        last = e["seq"]
    sys.stdout.flush()
    if not follow:
        return
    last = max(last, int(data.get("last_seq", last)))
    try:
        _follow(base, last, as_json)
    except KeyboardInterrupt:
        pass


def _follow(base: str, since: int, as_json: bool) -> None:
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 80, timeout=60)
    try:
        conn.request("GET", f"/events/stream?since={since}", headers={"Accept": "text/event-stream"})
        resp = conn.getresponse()
        if resp.status != 200:
            err.print(f"[bold red]error[/]: {base}/events/stream: HTTP {resp.status}", markup=True)
            sys.exit(1)
        err.print(f"following events after #{since} (Ctrl-C stops)")
        while True:
            raw = resp.readline()
            if not raw:
                err.print("fivenines stopped: no more events")
                sys.exit(1)
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("data: "):
                e = json.loads(line[6:])
                click.echo(json.dumps(e) if as_json else format_event(e))
                sys.stdout.flush()
    except OSError as exc:
        err.print(f"[bold red]error[/]: lost fivenines at {base}: {exc}", markup=True)
        sys.exit(1)
    finally:
        conn.close()


def _mutate(method: str, path: str, admin: str | None, spec_file: str | None, token_file: str | None,
            body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    base = _admin_url(admin, spec_file)
    token = _token(token_file, spec_file)
    if token is None:
        err.print("[bold red]error[/]: this needs the admin token: give -f SPEC (the token is in STATE_DIR/admin.token "
                  "or admin.token_file) or --token-file PATH", markup=True)
        sys.exit(1)
    status, data = _request(method, f"{base}{path}", token, body, timeout)
    if status == 401:
        err.print(f"[bold red]error[/]: the admin token was refused: {(data or {}).get('error', '')}", markup=True)
        sys.exit(1)
    return status, data


def _target_command(action: str) -> Any:
    helps = {
        "drain": "Stop sending TARGET new requests; in-flight ones finish (within deregistration_delay).",
        "enable": "Undo drain/maintenance: TARGET serves again once it passes its health checks.",
        "maintenance": "Take TARGET out at once (no new requests) until enabled.",
    }

    @click.argument("target")
    @_admin_opt
    @_file_opt
    @_token_opt
    def command(target: str, admin: str | None, spec_file: str | None, token_file: str | None) -> None:
        status, data = _mutate("POST", f"/targets/{target}/{action}", admin, spec_file, token_file)
        if status != 200:
            err.print(f"[bold red]error[/]: {action} {target}: {(data or {}).get('error', status)}", markup=True)
            sys.exit(1)
        out.print(f"{target}: {data['state']} ({data.get('admin_state') or 'enabled'}), role {data['role']}")

    command.__doc__ = helps[action]
    return main.command(name=action, help=helps[action])(command)


for _action in ("drain", "enable", "maintenance"):
    _target_command(_action)


@main.command()
@click.argument("target")
@click.argument("weight", type=click.IntRange(0, 1000))
@_admin_opt
@_file_opt
@_token_opt
def weight(target: str, weight: int, admin: str | None, spec_file: str | None, token_file: str | None) -> None:
    """Set TARGET's balancing weight (0: no new requests)."""
    status, data = _mutate("PUT", f"/targets/{target}/weight", admin, spec_file, token_file, {"weight": weight})
    if status != 200:
        err.print(f"[bold red]error[/]: weight {target}: {(data or {}).get('error', status)}", markup=True)
        sys.exit(1)
    out.print(f"{target}: weight {data['weight']}")


@main.command()
@_admin_opt
@_file_opt
@_token_opt
def reload(admin: str | None, spec_file: str | None, token_file: str | None) -> None:
    """Re-read the spec fivenines runs and apply the difference without dropping a request.

    An invalid spec changes nothing: its problems are printed and the exit status is 2.
    """
    status, data = _mutate("POST", "/reload", admin, spec_file, token_file, timeout=120.0)
    if status == 422:
        for e in data.get("errors", []):
            err.print(f"[bold red]error[/]: {e}", markup=True, soft_wrap=True)
        err.print("reload rejected: the running configuration is unchanged")
        sys.exit(EXIT_USAGE)
    if status != 200:
        err.print(f"[bold red]error[/]: reload: {(data or {}).get('error', status)}", markup=True)
        sys.exit(1)
    out.print(f"reloaded: configuration generation {data['generation']}")
    for a in data.get("actions", []):
        out.print(f"  {a}")
    for w in data.get("warnings", []):
        err.print(f"[yellow]warning[/]: {w}", markup=True)


# ------------------------------------------------------------------ switchover (replicated groups)


def _token_for(spec_file: str | None, token_file: str | None) -> str:
    from pathlib import Path

    if token_file:
        path = Path(token_file)
    elif spec_file:
        from fivenines.runtime.paths import admin_token_path, state_dir_of

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


def _post_json(url: str, token: str) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=b"", method="POST", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, {"error": str(exc)}
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        err.print(f"[bold red]error[/]: cannot reach fivenines at {url}: {reason}", markup=True)
        sys.exit(1)


@main.command()
@click.argument("group")
@click.option("--admin", help="Admin address (host:port or URL). Default: from -f SPEC, else 127.0.0.1:9900.")
@click.option("-f", "--file", "spec_file", type=click.Path(dir_okay=False), help="The spec (admin address, token).")
@click.option("--token-file", type=click.Path(dir_okay=False), help="Admin token file (default: from the spec).")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Follow the restart until it ends.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to follow it at most.")
def restart(group: str, admin: str | None, spec_file: str | None, token_file: str | None, wait: bool,
            timeout: float) -> None:
    """Rolling restart of GROUP's instances, one at a time, without failing a request.

    Each instance is deregistered (a standby takes over), drained, stopped,
    started, and must pass its health checks before the next one is taken out.
    Exits 0 when every instance was restarted, 1 when the restart stopped.
    """
    import time
    from urllib.parse import quote

    base = _admin_url(admin, spec_file)
    code, body = _post_json(f"{base}/target_groups/{quote(group)}/restart", _token_for(spec_file, token_file))
    if code != 202:
        err.print(f"[bold red]error[/]: {body.get('error', body)}", markup=True)
        sys.exit(1)
    order = body["rollout"]["steps"]
    out.print(f"rolling restart of {group}: {', '.join(order)}")
    if not wait:
        return
    printed = 0
    deadline = time.monotonic() + timeout
    while True:
        ro = _get_json(f"{base}/status")["target_groups"][group].get("rollout") or {}
        lines, total = ro.get("log", []), int(ro.get("log_total", 0))
        new = min(len(lines), total - printed)  # status keeps the last entries only
        for line in lines[len(lines) - new:] if new > 0 else []:
            out.print(f"  {line}", markup=False)
        printed = total
        if ro.get("state") in ("done", "failed"):
            out.print(f"{group}: {ro.get('outcome')} in {ro.get('elapsed_s')}s")
            sys.exit(0 if ro["state"] == "done" else 1)
        if time.monotonic() > deadline:
            err.print(f"[bold red]error[/]: still running after {timeout:g}s: {ro.get('steps')}", markup=True)
            sys.exit(1)
        time.sleep(0.2)


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


# --------------------------------------------------------------------------- aws
# `fivenines aws plan|apply|status|destroy SPEC`: the same spec on EC2 + Elastic Load
# Balancing. The decisions live in fivenines.cloud.mapping/plan (pure); boto3 is only
# imported by fivenines.cloud.aws, so `fivenines up` works without it.


def _aws_option_decorators() -> list[Any]:
    return [
        click.option("--region", help="AWS region (default: aws.region in the spec, else the boto3 chain)."),
        click.option("--profile", help="Named profile of the AWS config files (default: the boto3 chain)."),
        click.option("--endpoint-url", help="Endpoint of an AWS-compatible API (e.g. a moto server)."),
    ]


def _with_aws_options(f: Any) -> Any:
    for deco in reversed(_aws_option_decorators()):
        f = deco(f)
    return f


def _aws_provider(ctx: click.Context, spec: Spec, kw: dict[str, Any], code: int) -> Any:
    from fivenines.cloud.aws import AwsOptions, AwsProvider

    parent = ctx.obj or {}
    region = kw.get("region") or parent.get("region") or (spec.aws.region if spec.aws else None)
    options = AwsOptions(
        region=region,
        profile=kw.get("profile") or parent.get("profile"),
        endpoint_url=kw.get("endpoint_url") or parent.get("endpoint_url"),
    )
    try:
        return AwsProvider(options, log=lambda msg: err.print(f"  {msg}", markup=False))
    except FivenineError as exc:
        _aws_fail(str(exc), code)


def _aws_fail(message: str, code: int) -> None:
    err.print(f"[bold red]error[/]: {message}", markup=True, soft_wrap=True)
    sys.exit(code)


def _aws_prepare(ctx: click.Context, spec_file: str, kw: dict[str, Any], adjust: bool, as_json: bool) -> tuple[Any, Any, Spec]:
    """Load, map and check the spec; observe and diff the stack. Exit 2 on any problem."""
    from fivenines.cloud.plan import render

    spec = _load(spec_file, check_ports=False)
    provider = _aws_provider(ctx, spec, kw, EXIT_USAGE)
    try:
        desired = provider.desired(spec)
    except FivenineError as exc:
        _aws_fail(f"{spec_file}: {exc}", EXIT_USAGE)
    blocking = desired.blocking(adjust)
    for f in desired.findings:
        if f.blocks(adjust):
            err.print(f"[bold red]error[/]: {spec_file}: {f}", markup=True, soft_wrap=True)
        else:
            how = "adjusted (--adjust)" if f.written else "adjusted (local default)"
            err.print(f"[yellow]warning[/]: {spec_file}: {f} [dim]- {how}[/]", markup=True, soft_wrap=True)
    for note in desired.notes:
        err.print(f"[dim]note[/]: {note}", markup=True, soft_wrap=True)
    if blocking:
        if any(f.nearest is not None for f in blocking):
            err.print("AWS cannot take these settings as written; fix them, or pass --adjust to use the nearest valid values.")
        sys.exit(EXIT_USAGE)
    try:
        prepared = provider.prepare(desired)
    except FivenineError as exc:
        _aws_fail(str(exc), EXIT_USAGE)
    for c in prepared.conflicts:
        err.print(f"[bold red]error[/]: {c}", markup=True, soft_wrap=True)
    if prepared.conflicts:
        sys.exit(EXIT_USAGE)
    if as_json:
        click.echo(json.dumps(_aws_plan_json(provider, prepared), indent=2))
    else:
        out.print(f"stack {spec.name} in {provider.region}" + (f" via {provider.options.endpoint_url}" if provider.options.endpoint_url else ""), markup=False)
        for line in render(prepared.plan, desired.resources, prepared.observation.resources):
            out.print(line, markup=False, highlight=False)
    return provider, prepared, spec


def _aws_plan_json(provider: Any, prepared: Any) -> dict[str, Any]:
    plan = prepared.plan
    return {
        "stack": plan.stack,
        "region": provider.region,
        "no_changes": plan.empty,
        "summary": plan.summary(),
        "changes": [
            {
                "action": c.action.value,
                "kind": c.kind.value,
                "key": c.key,
                "name": c.name,
                "reason": c.reason,
                "fields": [{"path": f.path, "old": f.old, "new": f.new} for f in c.fields],
            }
            for c in plan.changes
        ],
        "findings": [
            {"path": f.path, "message": f.message, "nearest": f.nearest, "written": f.written}
            for f in prepared.desired.findings
        ],
        "notes": prepared.desired.notes,
    }


@main.group("aws")
@_with_aws_options
@click.pass_context
def aws_group(ctx: click.Context, region: str | None, profile: str | None, endpoint_url: str | None) -> None:
    """Deploy the spec on AWS: EC2 instances (launch template + Auto Scaling group) behind Elastic Load Balancing.

    Credentials come from the standard boto3 chain (environment, AWS config files,
    SSO, instance role). See docs/aws.md.
    """
    ctx.obj = {"region": region, "profile": profile, "endpoint_url": endpoint_url}


_ADJUST_HELP = "Use the nearest valid value for settings you wrote that AWS cannot take (shown as warnings)."


@aws_group.command("plan")
@click.argument("spec_file", default="fivenines.yaml", type=click.Path(dir_okay=False))
@click.option("--adjust", is_flag=True, help=_ADJUST_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (no_changes: true when up to date).")
@_with_aws_options
@click.pass_context
def aws_plan(ctx: click.Context, /, spec_file: str, adjust: bool, as_json: bool, **kw: Any) -> None:
    """Show what apply would create, update, replace and delete. Exit 0 (changes or not), 2 on error."""
    _aws_prepare(ctx, spec_file, kw, adjust, as_json)


@aws_group.command("apply")
@click.argument("spec_file", default="fivenines.yaml", type=click.Path(dir_okay=False))
@click.option("--adjust", is_flag=True, help=_ADJUST_HELP)
@_with_aws_options
@click.pass_context
def aws_apply(ctx: click.Context, /, spec_file: str, adjust: bool, **kw: Any) -> None:
    """Make the stack match the spec (idempotent: a second apply changes nothing)."""
    provider, prepared, spec = _aws_prepare(ctx, spec_file, kw, adjust, False)
    if prepared.plan.empty:
        return
    err.print("applying:")
    try:
        done = provider.apply(prepared, spec.aws or _aws_spec_default())
    except FivenineError as exc:
        _aws_fail(f"{exc} (re-run apply to finish; it picks up where this stopped)", 1)
    err.print(f"[bold green]applied[/]: {done} steps. `fivenines aws status {spec_file}` shows every target's health.", markup=True)


def _aws_spec_default() -> Any:
    from fivenines.spec import AwsSpec

    return AwsSpec()


@aws_group.command("status")
@click.argument("spec_file", default="fivenines.yaml", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@_with_aws_options
@click.pass_context
def aws_status(ctx: click.Context, /, spec_file: str, as_json: bool, **kw: Any) -> None:
    """Show the load balancers and every target's ELB health state and reason."""
    spec = _load(spec_file, check_ports=False)
    provider = _aws_provider(ctx, spec, kw, 1)
    try:
        data = provider.status(spec.name)
    except FivenineError as exc:
        _aws_fail(str(exc), 1)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if not data["load_balancers"] and not data["target_groups"]:
        out.print(f"stack {spec.name} has no load balancer or target group in {data['region']} (not applied, or destroyed).", markup=False)
        return
    for lb in data["load_balancers"]:
        out.print(f"{lb['type']} load balancer {lb['name']}: {lb['state']}; " + ", ".join(lb["urls"]), markup=False)
    table = Table(title=f"fivenines aws: {spec.name} ({data['region']})", title_justify="left")
    for col in ("group", "target", "port", "zone", "state", "reason", "description", "lifecycle"):
        table.add_column(col)
    for gname, g in data["target_groups"].items():
        for t in g["targets"]:
            style = _STATE_STYLE.get(t["state"] or "", "")
            table.add_row(
                gname,
                str(t["id"]),
                str(t.get("port") or ""),
                t.get("zone") or "",
                f"[{style}]{t['state']}[/]" if style else str(t["state"]),
                t.get("reason") or "",
                t.get("description") or "",
                t.get("lifecycle") or "",
            )
        if not g["targets"]:
            table.add_row(gname, "(no targets)", "", "", "", "", "", "")
    out.print(table)


@aws_group.command("destroy")
@click.argument("spec_file", default="fivenines.yaml", type=click.Path(dir_okay=False))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_with_aws_options
@click.pass_context
def aws_destroy(ctx: click.Context, /, spec_file: str, yes: bool, **kw: Any) -> None:
    """Delete every resource tagged as this stack's, in dependency order, waiting where AWS needs it."""
    from fivenines.cloud.plan import render

    spec = _load(spec_file, check_ports=False)
    provider = _aws_provider(ctx, spec, kw, 1)
    try:
        prepared = provider.prepare_destroy(spec.name)
    except FivenineError as exc:
        _aws_fail(str(exc), 1)
    if prepared.plan.empty:
        out.print(f"stack {spec.name} has no resources in {provider.region}; nothing to destroy.", markup=False)
        return
    for line in render(prepared.plan, {}, prepared.observation.resources):
        out.print(line, markup=False, highlight=False)
    for c in prepared.conflicts:
        err.print(f"[bold red]error[/]: {c}", markup=True, soft_wrap=True)
    if prepared.conflicts:
        sys.exit(EXIT_USAGE)
    if not yes:
        if not sys.stdin.isatty():
            _aws_fail("destroy deletes the resources above; pass --yes to confirm without a terminal", EXIT_USAGE)
        click.confirm(f"Delete these {len(prepared.plan.changes)} resources of stack {spec.name}?", abort=True)
    err.print("destroying:")
    try:
        done = provider.apply(prepared, _aws_spec_default())
    except FivenineError as exc:
        _aws_fail(f"{exc} (re-run destroy to finish)", 1)
    err.print(f"[bold green]destroyed[/]: {done} resources of stack {spec.name}.", markup=True)


def _percent(a: float, nines: float) -> str:
    decimals = 12 if nines == float("inf") else min(12, max(2, int(nines) + 1))
    return f"{a * 100:.{decimals}f}%"


@main.command("model")
@click.argument("spec_file", default="fivenines.yaml", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the prediction as JSON.")
def model_cmd(spec_file: str, as_json: bool) -> None:
    """Predict the availability of SPEC_FILE's layout: per group, overall, and what dominates."""
    from fivenines.model.blocks import format_seconds
    from fivenines.model.layout import human_duration, predict

    spec = _load(spec_file, check_ports=False)
    p = predict(spec)
    if as_json:
        click.echo(json.dumps(p.to_json(), indent=2))
        return
    table = Table(title=f"fivenines model: {spec.name} ({spec_file})", title_justify="left")
    for col in ("part", "layout", "mtbf", "mttr", "detect", "availability", "nines", "down/year", "down/30d", "dominant"):
        table.add_column(col, justify="right" if col in ("nines", "availability") else "left")

    def row(part: str, layout: str, mtbf: str, mttr: str, detect: str, r: Any, dominant: str) -> None:
        table.add_row(
            part, layout, mtbf, mttr, detect, _percent(r.availability, r.nines), f"{r.nines:.2f}",
            format_seconds(r.downtime_per_year_s), format_seconds(r.downtime_per_month_s), dominant,
        )

    lb = p.load_balancer
    row("load balancer", "1", human_duration(lb.mtbf), human_duration(lb.mttr), "-", lb.result, lb.result.dominant)
    for name, g in p.groups.items():
        gp = g.params
        layout = f"{gp.active}+{gp.standby} {gp.standby_mode.value}" if gp.standby else f"{gp.active}+0"
        if gp.needed != gp.active:
            layout += f" (need {gp.needed})"
        row(name, layout, human_duration(gp.mtbf), human_duration(gp.mttr), human_duration(gp.detection_time),
            g.result, g.result.dominant)
    table.add_section()
    contributions = p.contributions()
    total = sum(v for _, v in contributions)
    top, top_u = contributions[0]
    share = f" ({top_u / total:.0%})" if total else ""
    row("overall", "", "", "", "", p, f"{top}{share}")
    out.print(table)
    out.print(
        f"availability {_percent(p.availability, p.nines)} ({p.nines:.2f} nines): expected downtime "
        f"{format_seconds(p.downtime_per_year_s)} a year, {format_seconds(p.downtime_per_month_s)} per 30 days; "
        f"dominated by {top}{share}."
    )
    if p.slo is not None:
        verdict = "met" if p.slo.meets else "[red]missed[/]"
        out.print(
            f"slo {p.slo.target:g}% over {human_duration(p.slo.window)}: {verdict}; the expected downtime "
            f"spends {p.slo.budget_use:.1%} of the error budget.",
            markup=True,
        )
    if p.assumptions:
        out.print("assumed (no reliability: section says otherwise; see docs/availability.md):")
        for a in p.assumptions:
            out.print(f"  {a}", markup=False)

# --------------------------------------------------------------------------- chaos
# `fivenines chaos SPEC`: run SPEC, load it, inject faults into what fivenines started,
# measure availability, compare with the model, write a report. The logic lives in
# fivenines.chaos (pure: schedule, outcomes, timeline, compare; I/O: loadgen, inject, runner).


def _chaos_duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    from fivenines.spec import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@main.command("chaos")
@click.argument("spec_file", default="fivenines.yaml", type=click.Path(dir_okay=False))
@click.option("--duration", default="2m", callback=_chaos_duration, help="How long the load runs (default 2m).")
@click.option("--rate", default=500.0, type=click.FloatRange(min=1, max=20000), help="Requests per second, open loop (default 500).")
@click.option("--faults", "faults_text", default=None,
              help="Fault kinds: kill,hang,error,slow,reset,lb (default: all of them; lb only with workers > 1).")
@click.option("--mtbf", default="10s", callback=_chaos_duration, help="Mean time between faults (exponential; default 10s).")
@click.option("--seed", type=int, default=None, help="Seed of the schedule and target choice (default: random, printed).")
@click.option("--schedule", "schedule_text", default=None,
              help='A fixed schedule instead of random arrivals: "10s:kill, 25s:hang:web-2, 40s:error".')
@click.option("--fault-duration", default="5s", callback=_chaos_duration, help="How long hang/error/slow last (default 5s).")
@click.option("--slow-ms", default=1000, type=click.IntRange(min=1), help="Added latency of a slow fault (default 1000).")
@click.option("--warmup", default="5s", callback=_chaos_duration, help="Load without faults first (default 5s).")
@click.option("--settle", default="10s", callback=_chaos_duration, help="No new fault this close to the end (default 10s).")
@click.option("--timeout", "req_timeout", default="5s", callback=_chaos_duration, help="Client timeout per request (default 5s).")
@click.option("--connections", default=None, type=click.IntRange(min=1),
              help="Most client connections open at once (default: rate x timeout, within the fd limit).")
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
    """
    import asyncio
    import random

    from fivenines.chaos import ChaosError
    from fivenines.chaos.runner import ChaosConfig, ChaosRun, load_target, plan
    from fivenines.chaos.schedule import (
        DESCRIPTIONS,
        FaultKind,
        parse_kinds,
        parse_schedule,
        render,
    )

    spec = _load(spec_file, check_ports=True)
    assert duration is not None and mtbf is not None and fault_duration is not None
    assert warmup is not None and settle is not None and req_timeout is not None
    workers = spec.workers

    def usage(msg: str) -> NoReturn:
        err.print(f"[bold red]error[/]: {msg}", markup=True, soft_wrap=True)
        sys.exit(EXIT_USAGE)

    try:
        kinds = parse_kinds(faults_text) if faults_text else tuple(FaultKind)
    except ValueError as exc:
        usage(f"--faults: {exc}")
    if FaultKind.LB in kinds and workers < 2:
        if faults_text:
            usage(f"--faults lb kills a data-plane worker: it needs workers: 2 or more in {spec_file} (workers: {workers})")
        kinds = tuple(k for k in kinds if k is not FaultKind.LB)
    try:
        _, group = load_target(spec)
    except ChaosError as exc:
        usage(f"{spec_file}: {exc}")
    if spec.target_groups[group].instances is None and any(k.value != "lb" for k in kinds):
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
        if any(f.kind is FaultKind.LB for f in schedule) and workers < 2:
            usage(f"--schedule has an lb fault: it needs workers: 2 or more in {spec_file} (workers: {workers})")
        kinds = tuple(k for k in FaultKind if any(f.kind is k for f in schedule))
    elif duration - settle <= warmup:
        usage(f"--duration {duration:g}s leaves no time for faults after --warmup {warmup:g}s and before --settle {settle:g}s")
    if report_dir is None:
        from fivenines.runtime.controller import Controller

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
        data = aio.run(ChaosRun(config, spec, say).run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        err.print("interrupted: injection stopped, every target restored, fivenines stopped.")
        sys.exit(130)
    except FivenineError as exc:
        err.print(f"[bold red]error[/]: {exc}", markup=True, soft_wrap=True)
        sys.exit(1)
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


if __name__ == "__main__":
    main()
