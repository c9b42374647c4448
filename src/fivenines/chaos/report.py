"""A chaos run's report: ``summary.json`` (numbers) and ``report.html`` (tables and plots).

:func:`summarise` is pure: the recorded run in, a JSON-ready dict out. The plots
are drawn with matplotlib's Agg backend and embedded in the HTML as base64 PNG,
so the report opens anywhere, offline, as one file.

Stable names in ``summary.json``: ``measured.request_availability``,
``measured.time_availability``, ``predicted.availability``, ``faults`` (one
entry per fault, skipped ones included, each with ``kind``, ``target``,
``injected_at_s``, ``detection_s``, ``failover_s``, ``repair_s``,
``failed_requests``, ``covered``).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fivenines.chaos.compare import compare, measure_cluster
from fivenines.chaos.outcomes import OutcomeLog
from fivenines.chaos.stats import Proportion, format_availability
from fivenines.chaos.timeline import (
    FaultResult,
    analyse_all,
    count_between,
    health_changes,
    serving_changes,
    state_intervals,
)
from fivenines.model.slo import OutcomeRing, burn_rate, slo_status
from fivenines.runtime.events import iso

if TYPE_CHECKING:
    from fivenines.chaos.runner import RunData

FORMAT = 1
DEFAULT_SLO_TARGET = 99.9


def slo_summary(log: OutcomeLog, end: float, target: float, window: float) -> dict[str, Any]:
    """Error budget and burn-rate alerts of the run's outcomes against an SLO (model/slo.py)."""
    ring = OutcomeRing(horizon=max(window, 3 * 86400.0), resolution=60.0)
    sec = np.floor(log.sched).astype(np.int64)
    valid = log.valid_mask()
    good = log.good_mask() & valid
    n = int(sec.max()) + 1 if log.n else 0
    v = np.bincount(sec, weights=valid, minlength=n)
    g = np.bincount(sec, weights=good, minlength=n)
    for s in range(n):
        if v[s]:
            ring.record(float(s), good=int(g[s]), total=int(v[s]))
    st = slo_status(ring, max(end, 0.0), target, window)
    out = st.to_json()
    out["burn_rate"] = burn_rate(int(good.sum()), int(valid.sum()), target)
    out["note"] = ("the run's outcomes alone: the budget is the run's share of the window's budget, "
                   "and the burn rate is the run's error rate over the allowed rate")
    return out


def summarise(run: RunData) -> dict[str, Any]:
    """Every number of the run, JSON-ready."""
    log = run.log
    failures = log.failure_times().tolist()
    results = analyse_all(run.faults, run.groups, run.events, failures, run.end, log.rate)
    req = log.request_availability()
    tim = log.time_availability()
    cluster = None
    if run.cluster is not None:
        ok = np.sort(log.done[log.good_mask() & log.valid_mask()])  # when each success came back
        cluster = measure_cluster(run.spec, run.cluster.mode, run.faults, run.cluster.changes, ok.tolist(), failures,
                                  run.end, int(log.valid_mask().sum()), run.cluster.two_holders)
    cmp = compare(run.spec, run.group, results, run.end, req, rate=log.rate, serialised=not run.config.overlap,
                  cluster=cluster)
    m = cmp.measured
    real = [r for r in results if r.fault.skipped is None]
    first = min((r.fault.at for r in real), default=run.end)
    baseline, _, _ = count_between(failures, float("-inf"), first)
    slo_spec = run.spec.slo
    target, window = (slo_spec.target, slo_spec.window) if slo_spec else (DEFAULT_SLO_TARGET, 30 * 86400.0)
    slo = slo_summary(log, run.end, target, window)
    slo["source"] = "spec" if slo_spec else f"assumed {DEFAULT_SLO_TARGET}% (the spec has no slo:)"
    valid = log.valid_mask()
    return {
        "format": FORMAT,
        "spec": run.spec.name,
        "spec_file": run.config.spec_path,
        "group": run.group,
        "listener": run.listener,
        "started": iso(run.wall_at_start),
        "duration_s": round(run.end, 3),
        "config": run.config.to_json(),
        "loadgen": run.loadgen,
        "measured": {
            "request_availability": req.value,
            "request_availability_ci95": req.to_json()["ci95"],
            "requests": {
                "scheduled": log.n,
                "valid": int(valid.sum()),
                "good": req.k,
                "failed": req.n - req.k,
                "errors": log.errors_by_kind(),
                "before_first_fault": baseline,
            },
            "time_availability": tim.value,
            "time_availability_ci95": tim.to_json()["ci95"],
            "seconds": {"good": tim.k, "total": tim.n, "good_means": "no valid request of that second failed"},
            "latency_ms": log.latency_summary(),
            "detection_s": m.detection.to_json(),
            "failover_s": m.failover.to_json(),
            "repair_s": m.repair.to_json(),
            "mttr_s": m.repair.mean,
            "coverage": m.coverage.value,
            "coverage_ci95": m.coverage.to_json()["ci95"],
            "covered_faults": m.coverage.k,
            "faults": m.coverage.n,
            "exposure": m.exposure,
            "group": m.to_json(),
            "slo": slo,
        },
        "predicted": cmp.to_json(),
        "faults": [r.to_json() for r in results],
        "planned": [p.to_json() for p in run.planned],
        "restore": run.restore,
        "initial": {"health": run.initial_health, "roles": run.initial_roles,
                    "serving": {g: list(v.serving0) for g, v in run.groups.items()}},
        "events": [e.to_json() for e in run.events],
        "series": log.series(1.0).to_json(),
        "cluster": None if cluster is None or run.cluster is None else {
            **cluster.to_json(), "vip": run.cluster.vip, "nodes": run.cluster.nodes,
            "vip_holders": [{"t_s": round(t, 4), "holders": list(h)} for t, h in run.cluster.changes]},
    }


# --------------------------------------------------------------------------- plots

_STATE_COLOURS = {"healthy": "#2e9e44", "initial": "#e8b50c", "unhealthy": "#d0312d", "draining": "#3b73c4",
                  "unused": "#9a9a9a", "unknown": "#cccccc"}
_FAULT_COLOURS = {"kill": "#7b1fa2", "hang": "#ef6c00", "error": "#c62828", "slow": "#00838f", "reset": "#5d4037",
                  "lb": "#283593", "node": "#000000", "partition": "#ad1457"}


def _mark_faults(ax: Any, faults: list[dict[str, Any]], label: bool) -> None:
    for f in faults:
        if f.get("skipped"):
            continue
        c = _FAULT_COLOURS.get(f["kind"], "black")
        t = f["injected_at_s"]
        ax.axvline(t, color=c, lw=1.0, alpha=0.9)
        if f.get("restored_at_s") is not None:
            ax.axvspan(t, f["restored_at_s"], color=c, alpha=0.08, lw=0)
        if label:
            ax.annotate(f"{f['id']} {f['kind']}\n{f['target']}", (t, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(2, -2), textcoords="offset points", fontsize=7, color=c, va="top")


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plots(summary: dict[str, Any]) -> dict[str, str]:
    """The report's figures as base64 PNG: ``traffic`` (throughput, failures, latency) and ``targets``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summary["series"]
    t = np.asarray(s["t_s"], dtype=float)
    faults = summary["faults"]
    end = summary["duration_s"]
    out: dict[str, str] = {}

    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(11, 7.5), sharex=True)
    a1.plot(t, s["completed"], color="#1565c0", lw=1.2, label="good responses/s")
    a1.plot(t, s["sent"], color="#90a4ae", lw=0.8, ls="--", label="scheduled requests/s")
    a1.set_ylabel("requests/s")
    a1.set_ylim(bottom=0)
    a1.legend(loc="lower left", fontsize=8)
    a2.bar(t, s["failed"], width=s["bucket_s"], align="edge", color="#d0312d")
    a2.set_ylabel("failed requests/s")
    a2.set_ylim(bottom=0, top=max(1, max(s["failed"], default=0)) * 1.15)
    p50 = np.asarray([np.nan if v is None else v for v in s["p50_ms"]], dtype=float)
    p99 = np.asarray([np.nan if v is None else v for v in s["p99_ms"]], dtype=float)
    a3.plot(t, p99, color="#6a1b9a", lw=1.2, label="p99")
    a3.plot(t, p50, color="#26a69a", lw=1.0, label="p50")
    a3.set_yscale("log")
    a3.set_ylabel("latency (ms)")
    a3.set_xlabel("seconds since the load started")
    a3.legend(loc="upper left", fontsize=8)
    for i, ax in enumerate((a1, a2, a3)):
        _mark_faults(ax, faults, label=i == 0)
        ax.grid(alpha=0.25)
        ax.set_xlim(0, end)
    fig.suptitle(f"{summary['spec']}: {summary['config']['rate']:g} requests/s, faults marked", fontsize=11)
    out["traffic"] = _png(fig)
    plt.close(fig)

    ini = summary["initial"]
    events = summary["events"]
    from fivenines.chaos.timeline import Ev, GroupView

    evs = [Ev(e["t_s"], e["kind"], e["group"], e["target"], e["old"], e["new"], e["reason"]) for e in events]
    health = state_intervals(ini["health"], health_changes(evs), 0.0, end)
    serving: dict[str, list[tuple[float, float, str]]] = {}
    for g, ids in ini["serving"].items():
        gv = GroupView(g, 0, 0, tuple(ids))
        members = {tid for tid in ini["health"] if tid.startswith(f"{g}-")} | set(ids)
        start = {tid: ("serving" if tid in ids else "out") for tid in members}
        serving.update(state_intervals(start, serving_changes(evs, gv), 0.0, end))
    ids = sorted(health)
    fig, ax = plt.subplots(figsize=(11, 0.65 * len(ids) + 1.6))
    for row, tid in enumerate(reversed(ids)):
        for a, b, state in health.get(tid, []):
            ax.broken_barh([(a, b - a)], (row + 0.25, 0.6), color=_STATE_COLOURS.get(state, "#cccccc"))
        for a, b, state in serving.get(tid, []):
            if state == "serving":
                ax.broken_barh([(a, b - a)], (row + 0.05, 0.14), color="#263238")
    ax.set_yticks([r + 0.5 for r in range(len(ids))], list(reversed(ids)))
    ax.set_ylim(0, max(1, len(ids)))
    ax.set_xlim(0, end)
    ax.set_xlabel("seconds since the load started")
    _mark_faults(ax, faults, label=True)
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=k) for k, c in _STATE_COLOURS.items() if k != "unknown"]
    handles.append(Patch(color="#263238", label="serving (thin bar)"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.6 / max(1, len(ids))),
              ncol=len(handles), fontsize=8)
    ax.set_title("each target's health state and whether it served", fontsize=10)
    out["targets"] = _png(fig)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------- html

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1150px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em} td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f4f6f8} .num{text-align:right;font-variant-numeric:tabular-nums}
.big{font-size:1.6em;font-weight:600} .ok{color:#2e7d32} .bad{color:#c62828} .muted{color:#777;font-size:.85em}
img{max-width:100%;border:1px solid #eee}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _fmt_s(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


def _pct(p: float | None) -> str:
    return format_availability(p)


def render_html(summary: dict[str, Any], images: dict[str, str]) -> str:
    m = summary["measured"]
    p = summary["predicted"]
    req = m["requests"]
    ci = m["request_availability_ci95"] or [None, None]
    tci = m["time_availability_ci95"] or [None, None]
    good = (m["request_availability"] or 0) >= 0.9999
    rows = []
    for r in p["table"]:
        rows.append(f"<tr><td>{_e(r['quantity'])}</td><td class=num>{_e(r['declared'])}</td>"
                    f"<td class=num>{_e(r['with_measured'])}</td><td class=num>{_e(r['measured'])}</td></tr>")
    frows = []
    for f in summary["faults"]:
        cov = f["covered"]
        frows.append(
            "<tr>" + "".join(f"<td>{x}</td>" for x in (
                _e(f["id"]), _e(f["kind"]), _e(f["target"]), _e(f["pid"]),
                f"<span class=num>{f['injected_at_s']:.2f}</span>",
                _fmt_s(f["detection_s"]), _fmt_s(f["failover_s"]), _fmt_s(f["repair_s"]),
                _e(f["failed_requests"]),
                "-" if cov is None else ("<span class=ok>yes</span>" if cov else "<span class=bad>no</span>"),
                _e(f["skipped"] or "; ".join([f["detail"], *f["notes"]]).strip("; ")),
            )) + "</tr>")
    slo = m["slo"]
    restore = summary["restore"]
    errors = ", ".join(f"{k}: {v}" for k, v in req["errors"].items()) or "none"
    lat = m["latency_ms"]
    cfg = summary["config"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fivenines chaos: {_e(summary['spec'])}</title>
<style>{_CSS}</style></head><body>
<h1>fivenines chaos: {_e(summary['spec'])}</h1>
<p class=muted>{_e(summary['spec_file'])} · started {_e(summary['started'])} · {summary['duration_s']:.0f} s ·
{cfg['rate']:g} requests/s to {_e(summary['listener'])}{_e(cfg['path'])} (group {_e(summary['group'])}) ·
faults {_e(', '.join(cfg['faults']))}, {'fixed schedule' if cfg['fixed_schedule'] else f"mean {cfg['mtbf_s']:g} s apart"}, seed {cfg['seed']}</p>

<table>
<tr><th>measured request availability</th><th>time availability</th><th>predicted (this run, measured values)</th><th>coverage</th><th>MTTR</th></tr>
<tr><td class="big {'ok' if good else 'bad'}">{_pct(m['request_availability'])}</td>
<td class=big>{_pct(m['time_availability'])}</td><td class=big>{_pct(p['availability'])}</td>
<td class=big>{_pct(m['coverage'])}</td><td class=big>{_fmt_s(m['mttr_s'])} s</td></tr>
<tr><td class=muted>{req['good']} good of {req['valid']} valid; 95% CI {_pct(ci[0])} &ndash; {_pct(ci[1])}</td>
<td class=muted>{m['seconds']['good']} good of {m['seconds']['total']} seconds; 95% CI {_pct(tci[0])} &ndash; {_pct(tci[1])}</td>
<td class=muted>as declared: {_pct(p['declared']['availability'])}</td>
<td class=muted>{m['covered_faults']} of {m['faults']} faults cost no request</td>
<td class=muted>mean repair time over {m['repair_s']['n']} faults</td></tr>
</table>
<p>Failed requests: {req['failed']} ({errors}); before the first fault: {req['before_first_fault']}.
Latency of good requests: p50 {_fmt_s(lat['p50_ms'])} ms, p99 {_fmt_s(lat['p99_ms'])} ms, p99.9 {_fmt_s(lat['p999_ms'])} ms, max {_fmt_s(lat['max_ms'])} ms.</p>

<h2>Predicted vs measured</h2>
<table><tr><th>quantity</th><th>model, as declared</th><th>model, measured values</th><th>measured</th></tr>
{''.join(rows)}</table>
<p class=muted>The run's fault rate is modelled as an mtbf of {p['run_mtbf_per_member_s']:.1f} s per serving member.
{_e(p.get('serialised_note') or '')}. Overrides fed to the model: {_e(json.dumps(p['overrides']))}.
See docs/chaos.md for how each number is measured.</p>

<h2>Traffic</h2>
<img alt="throughput, failed requests and latency over time, faults marked" src="data:image/png;base64,{images['traffic']}">
<h2>Targets</h2>
<img alt="each target's health state over time, faults marked" src="data:image/png;base64,{images['targets']}">

<h2>Faults</h2>
<table><tr><th>#</th><th>kind</th><th>target</th><th>pid</th><th>at (s)</th><th>detection (s)</th><th>failover (s)</th>
<th>repair (s)</th><th>failed requests</th><th>covered</th><th>detail</th></tr>
{''.join(frows)}</table>
{_cluster_html(summary.get("cluster"))}
<h2>SLO</h2>
<p>{_e(slo['source'])}: target {slo['target']:g}%. This run failed requests at {slo['burn_rate']:.3g} times the rate
the objective allows (burn rate {slo['burn_rate']:.3g}x); had it been the last hour of real traffic, the alerts firing
would be: {_e(slo['severity'] or 'none')}.</p>

<h2>Restore</h2>
<p>Undone at the end: {_e('; '.join(restore.get('undone', [])) or 'nothing pending')} ·
stopped processes left: {_e(restore.get('stopped_left') or 'none')}</p>
<p class=muted>Load generator: {_e(json.dumps(summary['loadgen']))}</p>
</body></html>
"""


def _cluster_html(c: dict[str, Any] | None) -> str:
    """The node faults of a run on a cluster: who held the VIP before and after, the takeover, the gap."""
    if not c:
        return ""
    rows = "".join(
        f"<tr><td>{f['id']}</td><td>{_e(f['kind'])}</td><td>{_e(f['node'])}</td><td class=num>"
        f"{f['injected_at_s']:.2f}</td><td>{_e(f['holder_before'])} → {_e(f['holder_after'])}</td><td class=num>"
        f"{_fmt_s(f['vip_dropped_s'])}</td><td class=num>{_fmt_s(f['takeover_s'])}</td><td class=num>"
        f"{f['failed_requests']}</td><td class=num>{_fmt_s(f['longest_gap_s'])}</td></tr>" for f in c["faults"])
    return f"""<h2>Cluster: node faults and the VIP ({_e(c['mode'])}, {_e(c['vip'])})</h2>
<p>Model takeover bound {_fmt_s(c['predicted_takeover_s'])} s ({_e(c['takeover_bound'])}); measured
{_fmt_s(c['takeover_s']['mean'])} s (n={c['takeover_s']['n']}). Samples with two VIP holders:
{c['two_holder_samples']}.</p>
<table><tr><th>#</th><th>kind</th><th>node</th><th>at (s)</th><th>VIP holder</th><th>dropped (s)</th>
<th>takeover (s)</th><th>failed requests</th><th>longest gap (s)</th></tr>{rows}</table>
"""


def write_report(directory: Path, summary: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``summary.json`` and ``report.html`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    js = directory / "summary.json"
    js.write_text(json.dumps(summary, indent=2, allow_nan=False, default=_jsonable))
    page = directory / "report.html"
    page.write_text(render_html(summary, plots(summary)))
    return js, page


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    raise TypeError(f"not JSON: {type(x).__name__}")


def headline(summary: dict[str, Any]) -> list[str]:
    """A few lines for the terminal."""
    m = summary["measured"]
    p = summary["predicted"]
    req = m["requests"]
    cov = Proportion(m["covered_faults"], m["faults"])
    return [
        f"measured request availability {_pct(m['request_availability'])} "
        f"({req['good']}/{req['valid']}; 95% CI {_pct((m['request_availability_ci95'] or [None])[0])} to "
        f"{_pct((m['request_availability_ci95'] or [None, None])[1])}), failed {req['failed']}",
        f"time availability {_pct(m['time_availability'])} ({m['seconds']['good']}/{m['seconds']['total']} seconds)",
        f"coverage {cov}",
        f"MTTR {_fmt_s(m['mttr_s'])} s, detection {_fmt_s(m['detection_s']['mean'])} s, "
        f"failover {_fmt_s(m['failover_s']['mean'])} s",
        f"predicted for this run: {_pct(p['availability'])} with measured values, "
        f"{_pct(p['declared']['availability'])} as declared",
        *cluster_lines(summary.get("cluster")),
    ]


def cluster_lines(c: dict[str, Any] | None) -> list[str]:
    """Each node fault of a run on a cluster: the VIP's move, failed requests, the longest gap."""
    if not c:
        return []
    t = c["takeover_s"]
    out = [f"VIP takeover ({c['mode']}): measured {_fmt_s(t['mean'])} s (n={t['n']}), model "
           f"{_fmt_s(c['predicted_takeover_s'])} s ({c['takeover_bound']}); failed requests in node faults "
           f"{c['failed_requests']}; samples with two VIP holders {c['two_holder_samples']}"]
    for f in c["faults"]:
        out.append(f"  fault {f['id']} {f['kind']} {f['node']} at {f['injected_at_s']:.2f}s: VIP "
                   f"{f['holder_before'] or 'nobody'} -> {f['holder_after'] or 'nobody'}, dropped after "
                   f"{_fmt_s(f['vip_dropped_s'])} s, taken over after {_fmt_s(f['takeover_s'])} s; "
                   f"failed {f['failed_requests']}, longest gap {_fmt_s(f['longest_gap_s'])} s")
    return out


def wipe_headline(summary: dict[str, Any]) -> list[str]:
    """A wipe run (docs/chaos.md) for the terminal: the backup, the restore, then every acknowledged write counted."""
    b, r = summary["backup"], summary["restore"]
    out = [f"backup {b['id']} ({b['keys']} keys, taken by {b['taken_by']}); wipe at {summary['wipe']['at_s']:.2f}s "
           f"on {summary['wipe']['primary']}; restore --at {r['at']}: {r['state']} in {r['seconds']}s"
           + (f": {r['error']}" if r.get("error") else "")]
    return out + list(summary["lines"])


def render_wipe_html(summary: dict[str, Any]) -> str:
    """``report.html`` of a wipe run: one page, no plots."""
    m, b, r = summary["measured"], summary["backup"], summary["restore"]
    ok = m["missing_after_restore"] == 0 and m["missing_before_backup"] == 0 and m["wrong_value"] == 0 \
        and r["state"] == "ok"
    rows = "".join(f"<tr><td>{_e(k)}</td><td class=num>{_e(v)}</td></tr>" for k, v in (
        ("acknowledged writes", m["acknowledged"]),
        ("lost, newer than the backup", m["lost_before_wipe"]),
        ("lost, taken by the wiped primary before the restore", m["lost_after_wipe"]),
        ("missing though acknowledged before the backup began (must be 0)", m["missing_before_backup"]),
        ("missing though acknowledged after the restore (must be 0)", m["missing_after_restore"]),
        ("present with another value (must be 0)", m["wrong_value"]),
        ("RPO measured (age of the restored data at the wipe), s", _fmt_s(m["rpo_s"])),
        ("RPO declared (the schedule's longest gap), s", _fmt_s(m["declared_rpo_s"])),
        ("RTO measured (wipe to writes on the restored data), s", _fmt_s(m["rto_s"])),
        ("of which the restore itself, s", _fmt_s(m["restore_s"])),
        ("RTO of the last drill, s", _fmt_s(m["expected_rto_s"]))))
    steps = "".join(f"<tr><td>{_e(s['step'])}</td><td class=num>{s['seconds']:.3f}</td><td>{_e(s['detail'])}</td></tr>"
                    for s in ((r.get("result") or {}).get("steps") or []))
    events = "".join(f"<tr><td>{_e(e['at'][11:23])}</td><td>{_e(e['kind'])}</td><td>{_e(e.get('target'))}</td>"
                     f"<td>{_e(e['old'])} → {_e(e['new'])}</td><td>{_e(e['reason'])}</td></tr>" for e in summary["events"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fivenines chaos wipe: {_e(summary['spec'])}</title>
<style>{_CSS}</style></head><body>
<h1>fivenines chaos: wipe of {_e(summary['group'])}</h1>
<p class=muted>{_e(summary['spec_file'])} · started {_e(summary['started'])} · {summary['duration_s']:.0f} s ·
{summary['writers']['clients']} writers through {_e(summary['listener'])}, each write confirmed by WAIT 1 ·
seed {summary['config']['seed']}</p>
<p class="big {'ok' if ok else 'bad'}">{m['lost']} of {m['acknowledged']} acknowledged writes lost ·
RPO {_fmt_s(m['rpo_s'])} s · RTO {_fmt_s(m['rto_s'])} s</p>
<p>Backup {_e(b['id'])} of {_e(b['at'])} ({_e(b['keys'])} keys, taken by {_e(b['taken_by'])}); wipe (FLUSHALL on
{_e(summary['wipe']['primary'])}) at {summary['wipe']['at_s']:.2f} s; restore --at {_e(r['at'])}: {_e(r['state'])}
in {_e(r['seconds'])} s{(': ' + _e(r['error'])) if r.get('error') else ''}.</p>
<h2>Every acknowledged write, counted</h2><table>{rows}</table>
<h2>Restore steps</h2><table><tr><th>step</th><th>seconds</th><th>detail</th></tr>{steps}</table>
<h2>Events</h2><table><tr><th>at</th><th>kind</th><th>target</th><th>change</th><th>reason</th></tr>{events}</table>
</body></html>
"""


__all__ = ["FaultResult", "headline", "plots", "render_html", "render_wipe_html", "slo_summary", "summarise",
           "wipe_headline", "write_report"]
