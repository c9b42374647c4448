"""``fivenines aws plan|apply|status|destroy SPEC``: the same spec on EC2 + Elastic Load
Balancing. The decisions live in :mod:`fivenines.cloud.mapping` and
:mod:`fivenines.cloud.plan` (pure); boto3 is only imported by :mod:`fivenines.cloud.aws`,
so ``fivenines up`` works without it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from fivenines.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    err,
    error,
    fail,
    failing,
    load,
    out,
    spec_argument,
)
from fivenines.cli.ops import state_cell
from fivenines.spec import AwsSpec, Spec


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


def _aws_provider(ctx: click.Context, spec: Spec, kw: dict[str, Any]) -> Any:
    from fivenines.cloud.aws import AwsOptions, AwsProvider

    parent = ctx.obj or {}
    region = kw.get("region") or parent.get("region") or (spec.aws.region if spec.aws else None)
    options = AwsOptions(
        region=region,
        profile=kw.get("profile") or parent.get("profile"),
        endpoint_url=kw.get("endpoint_url") or parent.get("endpoint_url"),
    )
    return AwsProvider(options, log=lambda msg: err.print(f"  {msg}", markup=False))


def _aws_prepare(ctx: click.Context, spec_file: str, kw: dict[str, Any], adjust: bool, as_json: bool) -> tuple[Any, Any, Spec]:
    """Load, map and check the spec; observe and diff the stack. Exit 2 on any problem."""
    from fivenines.cloud.plan import render

    spec = load(spec_file, check_ports=False)
    with failing(EXIT_USAGE):
        provider = _aws_provider(ctx, spec, kw)
    with failing(EXIT_USAGE, f"{spec_file}: "):
        desired = provider.desired(spec, Path(spec_file).parent)
    blocking = desired.blocking(adjust)
    for f in desired.findings:
        if f.blocks(adjust):
            error(f"{spec_file}: {f}")
        else:
            how = "adjusted (--adjust)" if f.written else "adjusted (local default)"
            err.print(f"[yellow]warning[/]: {spec_file}: {f} [dim]- {how}[/]", markup=True, soft_wrap=True)
    for note in desired.notes:
        err.print(f"[dim]note[/]: {note}", markup=True, soft_wrap=True)
    if blocking:
        if any(f.nearest is not None for f in blocking):
            err.print("AWS cannot take these settings as written; fix them, or pass --adjust to use the nearest valid values.")
        sys.exit(EXIT_USAGE)
    with failing(EXIT_USAGE):
        prepared = provider.prepare(desired)
    for c in prepared.conflicts:
        error(c)
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


@click.group("aws")
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
@spec_argument
@click.option("--adjust", is_flag=True, help=_ADJUST_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (no_changes: true when up to date).")
@_with_aws_options
@click.pass_context
def aws_plan(ctx: click.Context, /, spec_file: str, adjust: bool, as_json: bool, **kw: Any) -> None:
    """Show what apply would create, update, replace and delete. Exit 0 (changes or not), 2 on error."""
    _aws_prepare(ctx, spec_file, kw, adjust, as_json)


@aws_group.command("apply")
@spec_argument
@click.option("--adjust", is_flag=True, help=_ADJUST_HELP)
@_with_aws_options
@click.pass_context
def aws_apply(ctx: click.Context, /, spec_file: str, adjust: bool, **kw: Any) -> None:
    """Make the stack match the spec (idempotent: a second apply changes nothing)."""
    provider, prepared, spec = _aws_prepare(ctx, spec_file, kw, adjust, False)
    if prepared.plan.empty:
        return
    err.print("applying:")
    with failing(EXIT_FAILED, suffix=" (re-run apply to finish; it picks up where this stopped)"):
        done = provider.apply(prepared, spec.aws or AwsSpec())
    err.print(f"[bold green]applied[/]: {done} steps. `fivenines aws status {spec_file}` shows every target's health.", markup=True)


@aws_group.command("status")
@spec_argument
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@_with_aws_options
@click.pass_context
def aws_status(ctx: click.Context, /, spec_file: str, as_json: bool, **kw: Any) -> None:
    """Show the load balancers and every target's ELB health state and reason."""
    spec = load(spec_file, check_ports=False)
    data = _aws_provider(ctx, spec, kw).status(spec.name)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if not data["load_balancers"] and not data["target_groups"]:
        out.print(f"stack {spec.name} has no load balancer or target group in {data['region']} (not applied, or destroyed).", markup=False)
        return
    for lb in data["load_balancers"]:
        out.print(f"{lb['type']} load balancer {lb['name']}: {lb['state']}; " + ", ".join(lb["urls"]), markup=False)
    for gname, a in data.get("auto_scaling_groups", {}).items():
        tracking = "; ".join(f"{p['metric']} target {p['target']:g}" for p in a["policies"]) or "fixed size"
        out.print(f"{gname}: Auto Scaling group {a['name']}: {a['desired']} instances of {a['min']}..{a['max']} "
                  f"({tracking})", markup=False)
    table = Table(title=f"fivenines aws: {spec.name} ({data['region']})", title_justify="left")
    for col in ("group", "target", "port", "zone", "state", "reason", "description", "lifecycle"):
        table.add_column(col)
    for gname, g in data["target_groups"].items():
        for t in g["targets"]:
            table.add_row(
                gname,
                str(t["id"]),
                str(t.get("port") or ""),
                t.get("zone") or "",
                state_cell(t["state"]),
                t.get("reason") or "",
                t.get("description") or "",
                t.get("lifecycle") or "",
            )
        if not g["targets"]:
            table.add_row(gname, "(no targets)", "", "", "", "", "", "")
    out.print(table)


@aws_group.command("destroy")
@spec_argument
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_with_aws_options
@click.pass_context
def aws_destroy(ctx: click.Context, /, spec_file: str, yes: bool, **kw: Any) -> None:
    """Delete every resource tagged as this stack's, in dependency order, waiting where AWS needs it."""
    from fivenines.cloud.plan import render

    spec = load(spec_file, check_ports=False)
    provider = _aws_provider(ctx, spec, kw)
    prepared = provider.prepare_destroy(spec.name)
    if prepared.plan.empty:
        out.print(f"stack {spec.name} has no resources in {provider.region}; nothing to destroy.", markup=False)
        return
    for line in render(prepared.plan, {}, prepared.observation.resources):
        out.print(line, markup=False, highlight=False)
    for c in prepared.conflicts:
        error(c)
    if prepared.conflicts:
        sys.exit(EXIT_USAGE)
    if not yes:
        if not sys.stdin.isatty():
            fail("destroy deletes the resources above; pass --yes to confirm without a terminal", EXIT_USAGE)
        click.confirm(f"Delete these {len(prepared.plan.changes)} resources of stack {spec.name}?", abort=True)
    err.print("destroying:")
    with failing(EXIT_FAILED, suffix=" (re-run destroy to finish)"):
        done = provider.apply(prepared, AwsSpec())
    err.print(f"[bold green]destroyed[/]: {done} resources of stack {spec.name}.", markup=True)


COMMANDS: tuple[click.Command, ...] = (aws_group,)
"""This family's commands, added to ``fivenines`` by :mod:`fivenines.cli`."""
