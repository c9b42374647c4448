"""Prometheus metrics at ``GET /metrics`` (text exposition format, via prometheus_client).

Nothing here runs per request. The data plane increments plain counters in place
(:class:`~fivenines.proxy.backend.Backend`, the listener's ``Counters``); a custom
collector reads them when Prometheus scrapes. Counters derived from state changes
(promotions, failovers, ejections, events) are kept by an event subscriber; health
check durations go to a prometheus_client histogram (one observation per check).

Names and units follow Prometheus conventions: ``fivenines_`` prefix, ``_total`` on
counters, seconds for durations, one ``state``/``role`` label per enum value with
value 1 for the current one. Labels: ``listener`` (its address), ``group``,
``target``, ``code_class`` (``2xx``), ``result`` (``pass``/``fail``; ``ok``/``failed`` for
backups, restores and drills), ``kind``, ``operation``, and ``reason`` on
``fivenines_data_plane_compiled`` (why the data plane runs from source; empty when it runs
compiled: fivenines.accel). https/tls listeners add their certificates' expiry
(``fivenines_tls_certificate_expiry_days{listener,cert}``) and handshakes
(``fivenines_tls_handshakes_total{listener,outcome}``): :mod:`fivenines.admin.tls_metrics`. Backups of replicated groups (``fivenines_backup*``,
``fivenines_restores_total``, ``fivenines_drill*``) come from the runtime's
:meth:`~fivenines.runtime.interface.Runtime.backup_status` (docs/backup.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from fivenines import __version__, accel
from fivenines.admin.tls_metrics import TlsCollector, TlsHandshakeCollector
from fivenines.certs import CertificateInfo
from fivenines.core.health import CheckResult, HealthState
from fivenines.core.pool import Role
from fivenines.proxy.backend import LATENCY_BUCKETS
from fivenines.proxy.tls_serve import TlsServing
from fivenines.runtime.events import Event
from fivenines.runtime.interface import Runtime

CONTENT_TYPE = CONTENT_TYPE_LATEST
CHECK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The registry of one running fivenines, and the event-derived counters."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.registry = CollectorRegistry(auto_describe=False)
        self.check_duration = Histogram(
            "fivenines_health_check_duration_seconds", "Duration of health checks.", ["group", "result"],
            buckets=CHECK_BUCKETS, registry=self.registry)
        self.events_by_kind: Counter[str] = Counter()
        self.promotions: Counter[str] = Counter()
        self.failovers: Counter[str] = Counter()
        self.ejections: Counter[tuple[str, str]] = Counter()
        self.scaling_changes: Counter[tuple[str, str]] = Counter()  # (group, "out" | "in")
        self.registry.register(_Collector(self))
        self.registry.register(TlsCollector(self._certificates))
        self.registry.register(TlsHandshakeCollector(self._handshakes))
        runtime.events.subscribe(self._on_event)
        runtime.on_check(self.observe_check)

    def __repr__(self) -> str:
        return f"<Metrics events={sum(self.events_by_kind.values())} promotions={sum(self.promotions.values())}>"

    def _on_event(self, ev: Event) -> None:
        self.events_by_kind[ev.kind] += 1
        if ev.kind == "role" and ev.new == Role.ACTIVE.value:
            self.promotions[ev.group] += 1
            if ev.reason.startswith("replaces "):
                self.failovers[ev.group] += 1
        elif ev.kind == "ejection" and ev.new.startswith("eject"):
            self.ejections[(ev.group, ev.target)] += 1
        elif ev.kind == "scaling" and not ev.target and ev.old.isdigit() and ev.new.isdigit():
            self.scaling_changes[(ev.group, "out" if int(ev.new) > int(ev.old) else "in")] += 1

    def _tls(self) -> Iterator[tuple[str, TlsServing]]:
        for _, lst in self.runtime.listeners:
            tls = getattr(lst, "tls", None)
            if isinstance(tls, TlsServing):
                host, port = lst.address
                yield f"{host}:{port}", tls

    def _certificates(self) -> Iterator[tuple[str, tuple[CertificateInfo, ...]]]:
        for name, tls in self._tls():
            if tls.tls is not None:
                yield name, tls.tls.infos

    def _handshakes(self) -> Iterator[tuple[str, dict[str, int], int]]:
        for name, tls in self._tls():
            yield name, tls.counters.as_dict(), tls.handshakes.total

    def observe_check(self, group: str, target: str, result: CheckResult) -> None:
        self.check_duration.labels(group, "pass" if result.ok else "fail").observe(result.duration)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Collector(Collector):
    def __init__(self, m: Metrics) -> None:
        self.m = m

    def collect(self) -> Iterator[Metric]:
        rt, m = self.m.runtime, self.m
        info = GaugeMetricFamily("fivenines_info", "fivenines version and service name.", labels=["name", "version"])
        info.add_metric([rt.spec.name, __version__], 1)
        yield info
        why = accel.reason()  # what runs, as in /status data_plane and the `fivenines up` banner
        plane = GaugeMetricFamily("fivenines_data_plane_compiled",
                                  "1 when the data plane runs compiled, 0 when it runs from source (reason: why).",
                                  labels=["reason"])
        plane.add_metric([why], 0 if why else 1)
        yield plane
        gen = GaugeMetricFamily("fivenines_config_generation", "Configuration generation (1 + successful reloads).")
        gen.add_metric([], rt.generation)
        yield gen
        reloads = CounterMetricFamily("fivenines_reloads", "Reloads by result.", labels=["result"])
        for result, n in sorted(rt.reload_counts.items()):
            reloads.add_metric([result], n)
        yield reloads
        ev = CounterMetricFamily("fivenines_events", "State-change events by kind.", labels=["kind"])
        for kind, n in sorted(m.events_by_kind.items()):
            ev.add_metric([kind], n)
        yield ev
        yield from self._listeners()
        yield from self._groups()
        yield from self._scaling()
        yield from self._targets()
        yield from self._backups()

    def _listeners(self) -> Iterator[Metric]:
        lab = ["listener"]
        conns = CounterMetricFamily("fivenines_listener_connections", "Client connections accepted.", labels=lab)
        open_ = GaugeMetricFamily("fivenines_listener_connections_open", "Client connections open now.", labels=lab)
        reqs = CounterMetricFamily("fivenines_listener_requests", "Requests received.", labels=lab)
        resps = CounterMetricFamily("fivenines_listener_responses", "Responses sent.", labels=lab)
        failed = CounterMetricFamily("fivenines_listener_failed_requests",
                                     "Requests answered with an error by fivenines (502/503/504) or cut.", labels=lab)
        retries = CounterMetricFamily("fivenines_listener_retries", "Attempts retried on another target.", labels=lab)
        for _, lst in self.m.runtime.listeners:
            host, port = lst.address
            name = [f"{host}:{port}"]
            c = lst.counters
            conns.add_metric(name, c.connections)
            open_.add_metric(name, len(lst.clients))
            reqs.add_metric(name, c.requests)
            resps.add_metric(name, c.responses)
            failed.add_metric(name, c.failed)
            retries.add_metric(name, c.retries)
        yield from (conns, open_, reqs, resps, failed, retries)

    def _groups(self) -> Iterator[Metric]:
        lab = ["group"]
        serving = GaugeMetricFamily("fivenines_group_serving_targets", "Targets receiving new requests.", labels=lab)
        healthy = GaugeMetricFamily("fivenines_group_healthy_targets", "Targets in state healthy.", labels=lab)
        wanted = GaugeMetricFamily("fivenines_group_active_count", "Actives wanted (N of N+M).", labels=lab)
        promos = CounterMetricFamily("fivenines_group_promotions", "Standbys promoted to active.", labels=lab)
        fails = CounterMetricFamily("fivenines_group_failovers",
                                    "Promotions that replaced a lost active.", labels=lab)
        fail_open = GaugeMetricFamily("fivenines_group_fail_open",
                                      "1 while no target can serve and the fail-open policy is in force.", labels=lab)
        for name, g in self.m.runtime.groups.items():
            fail_open.add_metric([name], 1 if g.failover.serving.fail_open else 0)
            serving.add_metric([name], len(g.backends.serving))
            healthy.add_metric([name], sum(1 for t in g.targets if t.health.state is HealthState.HEALTHY))
            wanted.add_metric([name], g.active_count)
            promos.add_metric([name], self.m.promotions[name])
            fails.add_metric([name], self.m.failovers[name])
        yield from (serving, healthy, wanted, promos, fails, fail_open)

    def _scaling(self) -> Iterator[Metric]:
        lab = ["group"]
        desired = GaugeMetricFamily("fivenines_scaling_desired", "Actives the scaler last asked for.", labels=lab)
        current = GaugeMetricFamily("fivenines_scaling_current", "Actives the group runs (or is moving to).",
                                    labels=lab)
        low = GaugeMetricFamily("fivenines_scaling_min", "Fewest actives (scaling.min).", labels=lab)
        high = GaugeMetricFamily("fivenines_scaling_max", "Most actives (scaling.max).", labels=lab)
        manual = GaugeMetricFamily("fivenines_scaling_manual",
                                   "The operator's count (fivenines scale); absent when the policies decide.",
                                   labels=lab)
        value = GaugeMetricFamily("fivenines_scaling_metric",
                                  "Each policy's metric over the warm actives (per second, count, seconds or percent "
                                  "of one core); absent while not measured.", labels=[*lab, "metric"])
        target = GaugeMetricFamily("fivenines_scaling_target", "Each policy's target per instance.",
                                   labels=[*lab, "metric"])
        changes = CounterMetricFamily("fivenines_scaling_changes", "Scaling changes by direction.",
                                      labels=[*lab, "direction"])
        for name, st in sorted(self.m.runtime.scaling().items()):
            desired.add_metric([name], st["desired"])
            current.add_metric([name], st["current"])
            low.add_metric([name], st["min"])
            high.add_metric([name], st["max"])
            if st.get("manual") is not None:
                manual.add_metric([name], st["manual"])
            for p in st["metrics"]:
                target.add_metric([name, p["metric"]], p["target"])
                if p["value"] is not None:
                    value.add_metric([name, p["metric"]], p["value"])
            for direction in ("out", "in"):
                changes.add_metric([name, direction], self.m.scaling_changes[(name, direction)])
        yield from (desired, current, low, high, manual, value, target, changes)

    def _targets(self) -> Iterator[Metric]:
        lab = ["group", "target"]
        reqs = CounterMetricFamily("fivenines_target_requests", "Requests sent to the target (attempts).", labels=lab)
        resps = CounterMetricFamily("fivenines_target_responses", "Responses from the target by status class.",
                                    labels=[*lab, "code_class"])
        errors = CounterMetricFamily("fivenines_target_errors",
                                     "Failed attempts and 5xx responses of the target.", labels=lab)
        retries = CounterMetricFamily("fivenines_target_retries",
                                      "Failed attempts on the target that were retried elsewhere.", labels=lab)
        ejections = CounterMetricFamily("fivenines_target_ejections", "Passive-detection ejections.", labels=lab)
        restarts = CounterMetricFamily("fivenines_target_restarts", "Restarts of the target's instance.", labels=lab)
        in_flight = GaugeMetricFamily("fivenines_target_in_flight_requests", "Requests in flight.", labels=lab)
        weight = GaugeMetricFamily("fivenines_target_weight",
                                   "Balancing weight as the balancer uses it (0: no new requests).", labels=lab)
        serving = GaugeMetricFamily("fivenines_target_serving", "1 when the target gets new requests.", labels=lab)
        ejected = GaugeMetricFamily("fivenines_target_ejected", "1 while passive detection keeps the target out.",
                                    labels=lab)
        state = GaugeMetricFamily("fivenines_target_health_state", "1 for the target's current health state.",
                                  labels=[*lab, "state"])
        role = GaugeMetricFamily("fivenines_target_role", "1 for the target's current role.", labels=[*lab, "role"])
        latency = HistogramMetricFamily("fivenines_target_request_duration_seconds",
                                        "Time from sending a request to the target to the end of its response.",
                                        labels=lab)
        bounds = [*(repr(b) for b in LATENCY_BUCKETS), "+Inf"]
        for gname, g in self.m.runtime.groups.items():
            serving_ids = {b.id for b in g.backends.serving}
            for t in g.targets:
                b = t.backend
                name = [gname, t.id]
                reqs.add_metric(name, b.requests)
                for klass, n in b.responses_by_class().items():
                    resps.add_metric([*name, klass], n)
                errors.add_metric(name, b.errors)
                retries.add_metric(name, b.retries)
                ejections.add_metric(name, self.m.ejections[(gname, t.id)])
                restarts.add_metric(name, t.slot.lifecycle.restarts if t.slot is not None else 0)
                in_flight.add_metric(name, b.in_flight)
                weight.add_metric(name, t.backend.weight)
                serving.add_metric(name, 1 if t.id in serving_ids else 0)
                ejected.add_metric(name, 1 if t.ejection else 0)
                for s in HealthState:
                    state.add_metric([*name, s.value], 1 if t.health.state is s else 0)
                for r in Role:
                    role.add_metric([*name, r.value], 1 if t.role is r else 0)
                cumulative, acc = [], 0
                for bound, n in zip(bounds, b.latency_counts, strict=True):
                    acc += n
                    cumulative.append((bound, acc))
                latency.add_metric(name, cumulative, b.latency_sum)
        yield from (reqs, resps, errors, retries, ejections, restarts, in_flight, weight, serving, ejected, state, role,
                    latency)

    def _backups(self) -> Iterator[Metric]:
        lab = ["group"]
        backups = CounterMetricFamily("fivenines_backups", "Backups taken, by result (failed: no copy, or it "
                                      "failed verification).", labels=[*lab, "result"])
        last = GaugeMetricFamily("fivenines_backup_last_success_timestamp_seconds",
                                 "When the data of the newest verified backup was taken (seconds since the epoch).",
                                 labels=lab)
        promised = GaugeMetricFamily("fivenines_backup_promised_rpo_seconds",
                                     "The longest gap between two scheduled backups (the RPO the schedule promises).",
                                     labels=lab)
        kept = GaugeMetricFamily("fivenines_backups_verified", "Verified backups in the catalogue.", labels=lab)
        size = GaugeMetricFamily("fivenines_backup_stored_bytes", "Bytes of the backups kept in the store.", labels=lab)
        restores = CounterMetricFamily("fivenines_restores", "Restores into the live group, by result (refused "
                                       "ones are not counted: nothing changed).", labels=[*lab, "result"])
        drills = CounterMetricFamily("fivenines_drills", "Restore drills, by result.", labels=[*lab, "result"])
        drill_ok = GaugeMetricFamily("fivenines_drill_last_success_timestamp_seconds",
                                     "When the last successful restore drill ran (seconds since the epoch).",
                                     labels=lab)
        rpo = GaugeMetricFamily("fivenines_drill_rpo_seconds",
                                "The last drill's recovery point: age of the newest data in the backup it restored.",
                                labels=lab)
        rto = GaugeMetricFamily("fivenines_drill_rto_seconds",
                                "The last drill's recovery time: fetch to a loaded, verified server.", labels=lab)
        running = GaugeMetricFamily("fivenines_backup_running", "1 while a backup, restore or drill runs.",
                                    labels=[*lab, "operation"])
        for name, b in sorted(self.m.runtime.backup_status().items()):
            backups.add_metric([name, "ok"], b["backups_ok"])
            backups.add_metric([name, "failed"], b["backups_failed"])
            if b.get("last_ok_time") is not None:
                last.add_metric([name], b["last_ok_time"])
            promised.add_metric([name], b["promised_rpo_s"])
            kept.add_metric([name], b["verified"])
            size.add_metric([name], b["bytes"])
            restores.add_metric([name, "ok"], b["restores_ok"])
            restores.add_metric([name, "failed"], b["restores_failed"])
            drills.add_metric([name, "ok"], b["drills_ok"])
            drills.add_metric([name, "failed"], b["drills_failed"])
            if b.get("last_drill_ok_time") is not None:
                drill_ok.add_metric([name], b["last_drill_ok_time"])
            d = b.get("last_drill") or {}
            if d.get("rpo_s") is not None:
                rpo.add_metric([name], d["rpo_s"])
            if d.get("rto_s") is not None:
                rto.add_metric([name], d["rto_s"])
            for op in ("backup", "restore", "drill"):
                running.add_metric([name, op], 1 if b.get("running") == op else 0)
        yield from (backups, last, promised, kept, size, restores, drills, drill_ok, rpo, rto, running)
