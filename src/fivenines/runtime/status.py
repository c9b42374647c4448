"""The read model: the running service as ``GET /status`` (and the dashboard, the CLI) show it.

Pure reading of the runtime's state, no decision and no change; one exception: a
replicated group's status first lets its store's failover see the time (a lapsed lease
shows, and applies, at once). The shape is documented in ``admin/openapi.yaml``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from fivenines import accel
from fivenines.core.detect import PhiAccrualDetector
from fivenines.core.health import HealthState
from fivenines.core.lifecycle import describe_exit
from fivenines.core.pool import Role
from fivenines.runtime.context import RuntimeContext
from fivenines.runtime.dataplane import DataPlane
from fivenines.runtime.events import iso
from fivenines.runtime.supervisor import tail_lines
from fivenines.runtime.targets import GroupRuntime, TargetRuntime


def service_status(ctx: RuntimeContext, data_plane: DataPlane, *, started_at: float, admin_url: str | None,
                   config: Mapping[str, Any] | None,
                   scaling: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    now = ctx.now()
    listeners = []
    for i, (ls, lst) in enumerate(data_plane.listeners):
        c = lst.counters
        host, port = lst.address
        listeners.append({
            "index": i,
            "rules": len(ls.rules),
            "address": f"{host}:{port}",
            "host": host,
            "port": port,
            "protocol": ls.protocol,
            "default_target_group": ls.default_target_group,
            "connections_total": c.connections,
            "connections_open": len(lst.clients),
            "requests": c.requests,
            "responses": c.responses,
            "failed": c.failed,
            "retries": c.retries,
            "hedges": c.hedges,
            "redirects": c.redirects,
            "fixed_responses": c.fixed,
            "upgrades": c.upgrades,
            "rejected": c.rejected,
            "refused_connections": c.refused,
            "rate_limited": c.rate_limited,
            "tls": tls.status() if (tls := data_plane.tls_of(i)) is not None else None,
        })
    groups = {name: group_status(ctx, g, now, (scaling or {}).get(name)) for name, g in ctx.groups.items()}
    workers = data_plane.workers
    out: dict[str, Any] = {
        "name": ctx.spec.name,
        "pid": os.getpid(),
        "started": iso(ctx.wall(started_at)),
        "uptime_s": round(now - started_at, 3),
        "data_plane": accel.mode(),  # "compiled" or "pure (why)": see fivenines.accel
        "admin": admin_url,
        "listeners": listeners,
        "target_groups": groups,
        "workers": workers.status() if workers is not None else [],
        "workers_synced": workers.synced() if workers is not None else True,
        "events_seq": ctx.events.last_seq,
    }
    if config is not None:
        out["config"] = dict(config)
    return out


def group_status(ctx: RuntimeContext, g: GroupRuntime, now: float,
                 scaling: Mapping[str, Any] | None = None) -> dict[str, Any]:
    rep = g.replication.status() if g.replication is not None else None  # first: applies a lapsed lease
    targets = [target_status(ctx, t, now) for t in g.targets]
    fo = g.failover
    out = {
        "algorithm": g.spec.algorithm,
        "active_count": g.active_count,
        "standby_count": g.spec.instances.standby if g.spec.instances else 0,
        "serving": [b.id for b in g.backends.serving],
        "healthy": sum(1 for t in g.targets if t.health.state is HealthState.HEALTHY),
        "targets": targets,
        "requests": g.backends.counters.requests,
        "retries": g.backends.counters.retries,
        "retry_budget_exhausted": g.backends.counters.budget_exhausted,
        "failed": g.backends.counters.failed,
        "slow_start_s": g.spec.slow_start,
        "ramping": sorted(g.backends.balancer.joined),
        "fail_open": {"policy": fo.fail_open.value, "in_force": fo.serving.fail_open},
        "ejected": [t.id for t in g.targets if t.ejection],
        "rollout": fo.rollout.snapshot(now) if fo.rollout is not None else None,
        "scaling": dict(scaling) if scaling is not None else None,  # a group with scaling: (runtime/autoscale)
    }
    if g.replication is not None:
        out["replication"] = rep
        for ts in targets:
            ts["replication"] = g.replication.target_status(ts["id"])
    return out


def target_status(ctx: RuntimeContext, t: TargetRuntime, now: float) -> dict[str, Any]:
    h = t.health
    b = t.backend
    out: dict[str, Any] = {
        "id": t.id,
        "address": b.address,
        "node": t.node,  # in a cluster: the node it lives on
        "state": h.state.value,
        "reason": h.reason.value if h.reason else None,
        "detail": h.detail,
        "role": t.role.value,
        "pid": None,
        "since": iso(ctx.wall(h.since)),
        "role_since": iso(ctx.wall(t.role_since)),
        "requests": b.requests,
        "errors": b.errors,
        "in_flight": b.in_flight,
        "last_check": None,
        "admin_state": t.admin_state.value if t.admin_state else None,
        "retries": b.retries,
        "responses": b.responses_by_class(),
        "latency": {"count": b.latency_count(), "sum_s": round(b.latency_sum, 6)},
    }
    if h.last_check is not None:
        lc = h.last_check
        out["last_check"] = {"ok": lc.ok, "detail": lc.detail, "duration_ms": round(lc.duration * 1000, 2)}
    out.update(_failover_status(t, now))
    if t.slot is not None:
        lc_ = t.slot.lifecycle
        out["pid"] = lc_.pid
        inst: dict[str, Any] = {
            "state": lc_.shown_state().value,
            "restarts": lc_.restarts,
            "consecutive_failures": lc_.consecutive_failures,
            "last_exit_code": lc_.last_exit_code,
            "last_exit": describe_exit(lc_.last_exit_code) if lc_.last_exit_code is not None else None,
            "restart_in_s": round(lc_.restart_at - now, 3) if lc_.restart_at is not None else None,
            "stdout_log": str(t.slot.stdout),
            "stderr_log": str(t.slot.stderr),
            "stderr_tail": [],
        }
        if lc_.last_exit_code is not None:
            inst["stderr_tail"] = tail_lines(t.slot.stderr, 10)
        out["instance"] = inst
    return out


def _failover_status(t: TargetRuntime, now: float) -> dict[str, Any]:
    d = t.judge.detector
    out = t.group.failover.outliers
    hold = t.group.failover.flaps
    m = t.member(now)
    ej: dict[str, Any] | None = None
    if out is not None:
        until = out.ejected_until(t.index)
        ej = {"ejected": bool(t.ejection), "reason": t.ejection or None,
              "remaining_s": round(max(0.0, until - now), 3) if until else None,
              **out.snapshot(t.index)}
    return {
        "excluded": t.excluded or None,
        "detector": {"kind": d.kind, "level": round(d.level(now), 3),
                     "samples": d.samples if isinstance(d, PhiAccrualDetector) else None},
        "ejection": ej,
        "flaps": hold.count(t.id, now),
        "ready_in_s": round(max(0.0, m.ready_at - now), 3) if m.can_serve and m.role is Role.STANDBY else None,
        "weight": t.backend.weight,
        "agent": None if t.agent is None and not t.agent_error else {
            "state": t.agent.state if t.agent else None,
            "weight_percent": t.agent.weight_percent if t.agent else None,
            "description": t.agent.description if t.agent else "",
            "error": t.agent_error or None,
        },
    }


def ready_info(ctx: RuntimeContext, data_plane: DataPlane, admin_url: str | None) -> dict[str, Any]:
    """What the ready file and ``STATE_DIR/run.json`` say: where this fivenines serves."""
    return {
        "pid": os.getpid(),
        "admin": admin_url,
        "listeners": [f"{lst.address[0]}:{lst.address[1]}" for _, lst in data_plane.listeners],
        "urls": [listener_url(ls.protocol, *lst.address) for ls, lst in data_plane.listeners],
        "state_dir": str(ctx.state_dir),
    }


def listener_url(protocol: str, host: str, port: int) -> str:
    """Where a listener answers: ``http://...``, ``https://...``, ``tcp://``, ``tls://``.

    >>> listener_url("https", "127.0.0.1", 8443), listener_url("tls", "::1", 5000)
    ('https://127.0.0.1:8443/', 'tls://[::1]:5000')
    """
    h = f"[{host}]" if ":" in host else host
    return f"{protocol}://{h}:{port}" + ("/" if protocol in ("http", "https") else "")
