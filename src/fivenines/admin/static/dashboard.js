// fivenines dashboard: polls /status and /events every 0.5 s, renders with the DOM (no build step, no CDN).
// A token for a non-loopback admin address can be given in the URL fragment: /#token=...
"use strict";
(function () {
  const POLL_MS = 500;
  const MAX_EVENTS = 40;
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  const headers = token ? { Authorization: "Bearer " + token } : {};
  let prev = null; // last sample: {t, targets: {id: {...}}, listeners: {addr: {...}}}
  let lastSeq = 0;
  let busy = false;

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
    return e;
  }

  function rate(now, before, dt) {
    if (before === undefined || dt <= 0) return null;
    return Math.max(0, (now - before) / dt);
  }

  function fmtRate(r) { return r === null ? "–" : r >= 100 ? r.toFixed(0) : r.toFixed(1); }
  function fmtMs(s) { return s === null ? "–" : (s * 1000).toFixed(s < 0.01 ? 2 : 1) + " ms"; }
  function fmtAgo(s) {
    if (s === null || s === undefined) return "?";
    s = Math.round(s);
    if (s >= 86400) return Math.floor(s / 86400) + "d" + (s % 86400 >= 3600 ? " " + Math.floor((s % 86400) / 3600) + "h" : "");
    if (s >= 3600) return Math.floor(s / 3600) + "h" + (s % 3600 >= 60 ? " " + Math.floor((s % 3600) / 60) + "m" : "");
    return s >= 60 ? Math.floor(s / 60) + "m" : s + "s";
  }

  // a replicated group's backups in one line, as `fivenines status` prints it (docs/backup.md)
  function backupLine(b) {
    const last = b.newest ? `last ${b.newest.id}, ${fmtAgo(b.newest_age_s)} old (${b.verified} verified)` : "none verified yet";
    let line = `backups ${b.schedule} to ${b.to}: ${last}, next in ${fmtAgo(b.next_backup_in_s)}`;
    const d = b.last_drill;
    line += d ? `; last drill ${d.ok ? "ok" : "FAILED"} ${fmtAgo(b.last_drill_age_s)} ago: RPO ${d.rpo_s}s, RTO ${d.rto_s}s`
      : "; no drill yet";
    return line + (b.running ? "; running: " + b.running : "");
  }

  function fmtUptime(s) {
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
    return "up " + (h ? h + "h " : "") + (h || m ? m + "m " : "") + sec + "s";
  }

  // an https/tls listener: how many certificates, and the soonest expiry (days)
  function tlsNote(tls) {
    if (!tls) return "";
    if (tls.passthrough) return " · passthrough";
    const days = tls.certificates.map((c) => c.days_left);
    const soonest = Math.min(...days);
    return ` · ${days.length} cert${days.length === 1 ? "" : "s"}, ` +
      (soonest < 0 ? "one EXPIRED" : `first expires in ${Math.floor(soonest)} d`);
  }

  function renderListeners(status, dt) {
    const body = document.querySelector("#listeners tbody");
    const rows = status.listeners.map((l) => {
      const p = prev && prev.listeners[l.address];
      return el("tr", { "data-listener": l.address },
        el("td", {}, l.address), el("td", { "data-tls": tlsNote(l.tls) }, l.protocol + tlsNote(l.tls)),
        el("td", {}, l.default_target_group),
        el("td", { class: "num" }, l.rules || 0), el("td", { class: "num" }, l.connections_open),
        el("td", { class: "num" }, fmtRate(rate(l.requests, p && p.requests, dt))),
        el("td", { class: "num" }, fmtRate(rate(l.failed, p && p.failed, dt))),
        el("td", { class: "num" }, l.retries));
    });
    body.replaceChildren(...rows);
  }

  // a node of a cluster: every node, who holds the VIP and since when, the lease or VRRP state
  function renderCluster(status) {
    const box = document.getElementById("cluster");
    const c = status.cluster;
    box.hidden = !c;
    if (!c) return;
    const since = c.holder_since ? " since " + new Date(c.holder_since).toLocaleTimeString() : "";
    const how = c.mode === "etcd" ? `lease ${c.lease || "–"} · fencing revision ${c.fencing_revision || "–"}`
      : `VRRP ${c.vrrp_state || "–"}`;
    document.getElementById("cluster-summary").textContent =
      `${c.mode} · VIP ${c.vip} held by ${c.holder || "nobody"}${since} · ${how} · operator state ${c.operator_state}` +
      (c.healthy ? "" : ` · this node may not hold the VIP: ${c.health}`);
    const rows = c.nodes.map((n) => el("tr", { "data-node": n.name, "data-state": n.state, "data-vip": n.holds_vip ? "1" : "",
      class: n.state === "lost" ? "state-unhealthy" : "" },
      el("td", {}, n.name + (n.this_node ? " (this node)" : "")), el("td", {}, n.address), el("td", {}, n.zone || ""),
      el("td", {}, n.state + (n.same_layout === false ? " · placed differently: another spec?" : "")),
      el("td", { class: "role-active" }, n.holds_vip ? "holds the VIP" : ""), el("td", {}, (n.instances || []).join(" ")),
      el("td", { class: "muted" }, n.admin || "")));
    document.querySelector("#nodes tbody").replaceChildren(...rows);
  }

  function renderGroups(status, dt) {
    const box = document.getElementById("groups");
    const clustered = !!status.cluster;
    const sections = Object.entries(status.target_groups).map(([name, g]) => {
      const cols = ["target", "state", "reason", "role", "address", "pid", "req/s", "err/s",
        "errors %", "latency", "in flight", "weight"];
      if (clustered) cols.splice(4, 0, "node");
      const firstNum = cols.indexOf("req/s");
      const head = el("tr", {}, ...cols.map((h, i) => el("th", { class: i >= firstNum ? "num" : "" }, h)));
      const rows = g.targets.map((t) => {
        const p = prev && prev.targets[t.id];
        const rq = rate(t.requests, p && p.requests, dt);
        const er = rate(t.errors, p && p.errors, dt);
        const dn = p ? t.latency.count - p.latency_count : 0;
        const lat = p && dn > 0 ? (t.latency.sum_s - p.latency_sum) / dn : null;
        const pct = rq && rq > 0 && er !== null ? ((100 * er) / rq).toFixed(1) + "%" : "–";
        const reason = t.admin_state ? t.admin_state + " by operator" : t.excluded || t.reason || "";
        return el("tr", { "data-target": t.id, "data-state": t.state, "data-role": t.role, "data-node": t.node || "",
          class: "state-" + t.state },
          el("td", {}, t.id),
          el("td", {}, el("span", { class: "badge " + t.state }, t.state)),
          el("td", { class: "muted" }, reason),
          el("td", { class: "role-" + t.role }, t.role),
          ...(clustered ? [el("td", {}, t.node || "–")] : []),
          el("td", {}, t.address), el("td", { class: "num" }, t.pid || ""),
          el("td", { class: "num" }, fmtRate(rq)), el("td", { class: "num" }, fmtRate(er)),
          el("td", { class: "num" }, pct), el("td", { class: "num" }, fmtMs(lat)),
          el("td", { class: "num" }, t.in_flight), el("td", { class: "num" }, t.weight));
      });
      const summary = `${g.serving.length} serving · ${g.healthy}/${g.targets.length} healthy · ` +
        `${g.active_count} active + ${g.standby_count} standby · ${g.algorithm}` +
        (g.fail_open && g.fail_open.in_force ? ` · FAIL-OPEN (${g.fail_open.policy}) IN FORCE` : "") +
        (g.rollout && g.rollout.state === "running" ? " · rolling restart running" : "");
      const backup = g.replication && g.replication.backup;
      const failed = backup && backup.last_drill && !backup.last_drill.ok;
      return el("section", { class: "group", "data-group": name },
        el("h3", {}, "target group ", el("code", {}, name), " ", el("span", { class: "muted" }, summary)),
        backup ? el("p", { class: "backup " + (failed ? "bad" : "muted"), "data-backup": name }, backupLine(backup)) : "",
        ...(g.scaling ? [renderScaling(g.scaling)] : []),
        el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)));
    });
    box.replaceChildren(...sections);
  }

  // A scaled group (scaling: section): current/desired of min..max, each policy's metric, the last decision.
  function renderScaling(sc) {
    const moving = sc.desired === sc.current ? String(sc.current) : `${sc.current} → ${sc.desired}`;
    const metrics = sc.metrics.map((m) =>
      `${m.metric} ${m.value === null ? "not measured" : Number(m.value.toPrecision(3))} (target ${m.target}, ${m.warm} warm)`);
    const text = [`scaling ${moving} of ${sc.min}..${sc.max}` + (sc.manual !== null ? ` (manual ${sc.manual})` : ""),
      ...metrics, sc.reason + (sc.paused ? ` (waiting: ${sc.paused})` : "")].join(" · ");
    return el("p", { class: "scaling", "data-current": sc.current, "data-desired": sc.desired,
      "data-min": sc.min, "data-max": sc.max, "data-manual": sc.manual === null ? "" : sc.manual }, text);
  }

  function addEvents(events) {
    const list = document.getElementById("events");
    for (const e of events) {
      lastSeq = Math.max(lastSeq, e.seq);
      const who = e.target ? e.group + "/" + e.target : e.group;
      const change = e.old || e.new ? `${e.old} → ${e.new}` : "";
      list.prepend(el("li", { "data-seq": e.seq, "data-kind": e.kind },
        el("span", { class: "muted" }, e.at.slice(11, 23) + " "), el("span", { class: "kind" }, e.kind),
        ` ${who} ${change}: ${e.reason}`));
    }
    while (list.children.length > MAX_EVENTS) list.lastChild.remove();
  }

  function remember(status, t) {
    const targets = {};
    for (const g of Object.values(status.target_groups)) {
      for (const x of g.targets) {
        targets[x.id] = { requests: x.requests, errors: x.errors, latency_sum: x.latency.sum_s, latency_count: x.latency.count };
      }
    }
    const listeners = {};
    for (const l of status.listeners) listeners[l.address] = { requests: l.requests, failed: l.failed };
    prev = { t, targets, listeners };
  }

  async function get(path) {
    const r = await fetch(path, { headers, cache: "no-store" });
    if (r.status === 401) throw new Error("the admin API needs its token here: open this page as /#token=TOKEN");
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  }

  async function tick() {
    if (busy) return;
    busy = true;
    const updated = document.getElementById("updated");
    try {
      const t = performance.now() / 1000;
      const status = await get("/status");
      const dt = prev ? t - prev.t : 0;
      document.getElementById("name").textContent = status.name;
      document.title = "fivenines · " + status.name;
      document.getElementById("uptime").textContent = fmtUptime(status.uptime_s);
      document.getElementById("generation").textContent = status.config ? "· config generation " + status.config.generation : "";
      renderCluster(status);
      renderListeners(status, dt);
      renderGroups(status, dt);
      remember(status, t);
      if (status.events_seq !== lastSeq) {
        const ev = await get("/events?limit=" + MAX_EVENTS + "&since=" + lastSeq);
        addEvents(ev.events);
      }
      updated.textContent = "updated " + new Date().toLocaleTimeString();
      updated.classList.remove("stale");
      document.body.dataset.ready = "1";
    } catch (err) {
      updated.textContent = "cannot reach fivenines: " + err.message;
      updated.classList.add("stale");
    } finally {
      busy = false;
    }
  }

  tick();
  setInterval(tick, POLL_MS);
})();
