"""Print docs/grafana-dashboard.json: a Grafana dashboard over the metrics of GET /metrics.

    python scripts/grafana_dashboard.py > docs/grafana-dashboard.json   (a test checks it is current)
"""

import json

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
panels = []
pid = 0

def panel(title, exprs, x, y, w=12, h=8, kind="timeseries", unit="short", desc="", legend=None, **extra):
    global pid
    pid += 1
    p = {
        "id": pid, "type": kind, "title": title, "description": desc, "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [{"refId": chr(65 + i), "datasource": DS, "expr": e, "legendFormat": legend}
                    for i, (e, legend) in enumerate(exprs)],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
    }
    p.update(extra)
    panels.append(p)

def row(title, y):
    global pid
    pid += 1
    panels.append({"id": pid, "type": "row", "title": title, "collapsed": False,
                   "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})

G = 'group=~"$group"'
row("Traffic", 0)
panel("Requests per second by listener", [('sum by (listener) (rate(fivenines_listener_requests_total[$__rate_interval]))', "{{listener}}")], 0, 1, unit="reqps")
panel("Failed requests per second (502/503/504 or cut)", [('sum by (listener) (rate(fivenines_listener_failed_requests_total[$__rate_interval]))', "{{listener}}"),
      ('sum by (listener) (rate(fivenines_listener_retries_total[$__rate_interval]))', "retries {{listener}}")], 12, 1, unit="reqps")
panel("Responses per second by status class", [(f'sum by (code_class) (rate(fivenines_target_responses_total{{{G}}}[$__rate_interval]))', "{{code_class}}")], 0, 9, unit="reqps")
panel("Open client connections", [('sum by (listener) (fivenines_listener_connections_open)', "{{listener}}")], 12, 9)
row("Targets", 17)
panel("Health state", [(f'fivenines_target_health_state{{{G}}} == 1', "{{target}} {{state}}")], 0, 18, w=24, h=7, kind="state-timeline",
      desc="Each target's ELB health state over time (initial, healthy, unhealthy, draining, unused).",
      transformations=[{"id": "labelsToFields", "options": {"mode": "columns", "valueLabel": "state"}}])
panel("Requests per second by target", [(f'rate(fivenines_target_requests_total{{{G}}}[$__rate_interval])', "{{target}}")], 0, 25, unit="reqps")
panel("Error ratio by target", [(f'rate(fivenines_target_errors_total{{{G}}}[$__rate_interval]) / clamp_min(rate(fivenines_target_requests_total{{{G}}}[$__rate_interval]), 1e-9)', "{{target}}")], 12, 25, unit="percentunit")
panel("Latency p50 / p99 by group", [
    (f'histogram_quantile(0.5, sum by (group, le) (rate(fivenines_target_request_duration_seconds_bucket{{{G}}}[$__rate_interval])))', "p50 {{group}}"),
    (f'histogram_quantile(0.99, sum by (group, le) (rate(fivenines_target_request_duration_seconds_bucket{{{G}}}[$__rate_interval])))', "p99 {{group}}")], 0, 33, unit="s")
panel("In-flight requests by target", [(f'fivenines_target_in_flight_requests{{{G}}}', "{{target}}")], 12, 33)
row("Failover", 41)
panel("Serving targets vs actives wanted", [(f'fivenines_group_serving_targets{{{G}}}', "serving {{group}}"), (f'fivenines_group_active_count{{{G}}}', "wanted {{group}}"),
      (f'fivenines_group_healthy_targets{{{G}}}', "healthy {{group}}"),
      (f'fivenines_group_fail_open{{{G}}}', "fail-open in force {{group}}"),
      (f'sum by (group) (fivenines_target_ejected{{{G}}})', "ejected {{group}}")], 0, 42, w=8)
panel("Failovers and promotions", [(f'increase(fivenines_group_failovers_total{{{G}}}[$__range])', "failovers {{group}}"), (f'increase(fivenines_group_promotions_total{{{G}}}[$__range])', "promotions {{group}}")],
      8, 42, w=8, kind="stat")
panel("Restarts, ejections, retries (by target)", [(f'increase(fivenines_target_restarts_total{{{G}}}[$__range])', "restarts {{target}}"),
      (f'increase(fivenines_target_ejections_total{{{G}}}[$__range])', "ejections {{target}}"), (f'increase(fivenines_target_retries_total{{{G}}}[$__range])', "retried away {{target}}")],
      16, 42, w=8, kind="bargauge")
panel("Health check duration p99 by group", [(f'histogram_quantile(0.99, sum by (group, le) (rate(fivenines_health_check_duration_seconds_bucket{{{G}}}[$__rate_interval])))', "{{group}}"),
      (f'sum by (group) (rate(fivenines_health_check_duration_seconds_count{{{G},result="fail"}}[$__rate_interval]))', "failed checks/s {{group}}")], 0, 50, unit="s")
panel("Operations: reloads, config generation, events", [('increase(fivenines_reloads_total[$__range])', "reloads {{result}}"), ('fivenines_config_generation', "generation"),
      ('sum by (kind) (increase(fivenines_events_total[$__range]))', "events {{kind}}")], 12, 50, kind="stat")

dash = {
    "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"}],
    "__requires": [{"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
                   {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"}],
    "title": "fivenines", "uid": "fivenines", "description": "fivenines: listeners, targets, failover and operations (metrics from the admin API's /metrics).",
    "tags": ["fivenines", "load balancer"], "timezone": "browser", "schemaVersion": 39, "version": 1, "editable": True,
    "refresh": "10s", "time": {"from": "now-1h", "to": "now"},
    "templating": {"list": [
        {"name": "group", "label": "target group", "type": "query", "datasource": DS, "query": "label_values(fivenines_group_active_count, group)",
         "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"}},
    ]},
    "annotations": {"list": []},
    "panels": panels,
}
print(json.dumps(dash, indent=2))
