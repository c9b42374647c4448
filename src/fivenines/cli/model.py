"""``fivenines model``: the predicted availability of a spec's layout (see docs/availability.md)."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from fivenines.cli.common import load, out, spec_argument


def _percent(a: float, nines: float) -> str:
    decimals = 12 if nines == float("inf") else min(12, max(2, int(nines) + 1))
    return f"{a * 100:.{decimals}f}%"


@click.command("model")
@spec_argument
@click.option("--json", "as_json", is_flag=True, help="Print the prediction as JSON.")
def model_cmd(spec_file: str, as_json: bool) -> None:
    """Predict the availability of SPEC_FILE's layout: per group, overall, and what dominates."""
    from fivenines.model.blocks import format_seconds
    from fivenines.model.layout import human_duration, predict

    spec = load(spec_file, check_ports=False)
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
    if p.cluster is None:
        row("load balancer", "1", human_duration(lb.mtbf), human_duration(lb.mttr), "-", lb.result, lb.result.dominant)
    else:  # the balancer tier: mtbf/mttr of the first node's host, detect = the takeover bound
        c = p.cluster
        host = c.params.nodes[0]
        n = len(c.params.nodes)
        row("balancer tier", f"{n} node{'s' if n != 1 else ''} {c.mode}", human_duration(host.mtbf),
            human_duration(host.mttr), f"{round(c.params.takeover_time, 2):g}s", lb.result, lb.result.dominant)
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
    if p.cluster is not None:
        for line in p.cluster.lines():
            out.print(line, markup=False)
    for line in p.load_lines():  # groups with a load: section: instances the load needs, availability at min/max
        out.print(line, markup=False)
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


COMMANDS: tuple[click.Command, ...] = (model_cmd,)
"""This family's commands, added to ``fivenines`` by :mod:`fivenines.cli`."""
