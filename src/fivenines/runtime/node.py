"""One node of a cluster (``fivenines up SPEC --node NAME``): the runtime's cluster part.

The controller builds it when it runs a spec with ``cluster:`` for one of its nodes. It

* **builds the targets** of every instance group from the layout
  (:func:`fivenines.core.membership.layout_for`): the slots placed on this node are
  instances it supervises, listening on this node's address (``{host}``); the others
  are **remote targets**, checked and balanced here like any target, supervised by
  their own node. Every node's balancer checks every target all the time, so the node
  that takes the VIP over already knows which are healthy (no ``initial`` period);
* **learns where the remote targets are**: with etcd, from the member records the
  nodes publish under their own leases (:class:`~fivenines.runtime.cluster_state.Presence`,
  watched with :class:`~fivenines.runtime.cluster_state.PrefixWatch`): a record that
  vanishes (the node died, froze or was cut off for a ttl) makes its targets
  ``unhealthy`` at once (``Target.NodeLost``) and standbys elsewhere are promoted; with
  ``coordination: vrrp``, from the layout (node address and fixed port);
* **shares operator state** (etcd): a drain, maintenance, enable or weight given to any
  node is applied there at once and written to ``PREFIX/SERVICE/cluster/operator/ID``;
  every node applies what it reads there (:func:`~fivenines.core.membership.operator_steps`).
  The records have no lease: they outlive every node. With vrrp it stays local;
* **runs the floating address**: the election runner (etcd) or keepalived (vrrp), whose
  track file follows this node's health (:func:`~fivenines.core.membership.node_health`:
  the balancer listens and every group has a target serving). The listeners listen on
  the VIP on every node (``net.ipv4.ip_nonlocal_bind``), so a node serves the moment
  the address arrives;
* **reports** all of it as the ``cluster`` section of ``GET /status``, and changes as
  ``cluster`` events.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from typing import Any

from fivenines.core.election import Settings
from fivenines.core.health import HealthState, Reason
from fivenines.core.membership import (
    GroupServing,
    Layout,
    MemberRecord,
    OperatorRecord,
    Place,
    Where,
    fixed_places,
    layout_for,
    locate,
    member_key,
    members_prefix,
    node_health,
    operator_key,
    operator_prefix,
    operator_steps,
)
from fivenines.core.placement import SlotRole
from fivenines.core.pool import Role
from fivenines.errors import ConfigError, FieldError, FivenineError
from fivenines.runtime.cluster import ElectionRunner, leader_key
from fivenines.runtime.cluster_state import Entries, OperatorWriter, PrefixWatch, Presence
from fivenines.runtime.context import RuntimeContext
from fivenines.runtime.dataplane import DataPlane
from fivenines.runtime.events import Event, iso
from fivenines.runtime.keepalived import Keepalived, MasterFence, config_for, node_fence_timeout
from fivenines.runtime.lease import Etcd, EtcdError
from fivenines.runtime.operator import Operator
from fivenines.runtime.ports import allocate_ports
from fivenines.runtime.reconcile import Reconciler
from fivenines.runtime.targets import GroupRuntime, TargetRuntime, remote_target
from fivenines.runtime.vip import Vip
from fivenines.spec import ClusterSpec, Spec, port_is_free, split_hostport

log = logging.getLogger("fivenines.cluster")

NewInstance = Callable[..., TargetRuntime]
"""``Instances.new_instance_target(g, index, id, port, role, now, host=...)``."""


def election_runner(cluster: ClusterSpec, service: str, node: str,
                    on_change: Callable[[dict[str, Any]], None]) -> ElectionRunner:
    """This node's part in the election for the VIP (coordination: etcd)."""
    assert cluster.etcd
    ttl = int(cluster.lease_ttl)
    return ElectionRunner(Etcd(cluster.etcd, timeout=max(0.2, ttl / 6)), Settings(node, ttl),
                          leader_key(cluster.key_prefix, service), Vip(cluster.vip, cluster.interface),
                          on_change=on_change)


def _can_bind(address: str) -> OSError | None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, 0))
        except OSError as exc:
            return exc
    return None


async def _etcd_answers(endpoints: list[str], key: str) -> str | None:
    try:
        await Etcd(endpoints, timeout=2.0).read(key)
    except EtcdError as exc:
        return str(exc)
    return None


def preflight(spec: Spec, node: str) -> tuple[list[FieldError], list[str]]:
    """What would stop node ``node`` of ``spec`` (as :func:`~fivenines.core.membership.node_spec`
    gives it) from running on this host, before anything starts: problems, and warnings.

    Its address must be one of this host's; the VIP's interface must exist; the listeners must be
    able to bind the VIP before this node holds it (``net.ipv4.ip_nonlocal_bind``); etcd must
    answer (etcd mode) or keepalived be installed (vrrp).
    """
    cluster = spec.cluster
    assert cluster is not None
    problems: list[FieldError] = []
    warnings: list[str] = []
    i, me = next((i, n) for i, n in enumerate(cluster.nodes) if n.name == node)
    exc = _can_bind(me.address)
    if exc is not None:
        problems.append(FieldError(f"cluster.nodes.{i}.address", f"{me.address} is not an address of this host "
                                   f"({exc.strerror or exc}): is this host node {node!r}?"))
    try:
        socket.if_nametoindex(cluster.interface)
    except OSError:
        problems.append(FieldError("cluster.interface", f"this host has no interface {cluster.interface!r} "
                                   "(see `ip link`)"))
    vip = str(ipaddress.IPv4Interface(cluster.vip).ip)
    for j, ls in enumerate(spec.listeners):
        if ls.host == vip and (exc := _can_bind(vip)) is not None:
            problems.append(FieldError(f"listeners.{j}.host", f"cannot bind the VIP {vip} before this node holds it "
                                       f"({exc.strerror or exc}): run `sysctl net.ipv4.ip_nonlocal_bind=1` (every "
                                       "node listens on the VIP, so a takeover needs no new listener), or give "
                                       "host: 0.0.0.0"))
            break
    if cluster.mode == "etcd":
        assert cluster.etcd
        why = asyncio.run(_etcd_answers(cluster.etcd, leader_key(cluster.key_prefix, spec.name)))
        if why is not None:
            problems.append(FieldError("cluster.etcd", f"no etcd endpoint answers ({why}): the nodes elect the VIP's "
                                       "holder and share their instances through etcd; start it first"))
    elif shutil.which("keepalived") is None and not os.path.exists("/usr/sbin/keepalived"):
        problems.append(FieldError("cluster.coordination", "vrrp runs keepalived, which is not installed "
                                   "(Debian package keepalived)"))
    for name, tg in spec.target_groups.items():
        inst = tg.instances
        if inst is not None and "{host}" not in str(inst.command) and "{host}" not in str(inst.env):
            warnings.append(f"target_groups.{name}.instances.command has no {{host}}: its instances must listen on "
                            f"this node's address ({me.address}, in FIVENINES_HOST) for the other nodes to reach them")
    return problems, warnings


class ClusterNode:
    """The cluster part of the runtime of node ``node``."""

    def __init__(self, ctx: RuntimeContext, node: str, reconciler: Reconciler, operator: Operator,
                 data_plane: DataPlane) -> None:
        cluster = ctx.spec.cluster
        assert cluster is not None
        self.ctx = ctx
        self.node = node
        self.cluster = cluster
        self.reconciler = reconciler
        self.operator = operator
        self.data_plane = data_plane
        self.layout: Layout = layout_for(ctx.spec, node)
        self.mode = cluster.mode
        self.started = time.time()
        self.admin_url: str | None = None
        self.healthy: tuple[bool, str] | None = None
        self.holder: str | None = None
        self.records: dict[str, MemberRecord] = {}
        self.ready: set[str] = set()  # local instances that passed their checks once: published
        self.seen: set[str] = set()
        self.bad_records: list[str] = []
        self._op_applied: dict[str, int] = {}  # target -> mod_revision of the record applied
        self._op_first = True
        self.runner: ElectionRunner | None = None
        self.keepalived: Keepalived | None = None
        self.presence: Presence | None = None
        self.members: PrefixWatch | None = None
        self.operators: PrefixWatch | None = None
        self.writer: OperatorWriter | None = None
        self._unsubscribe: Callable[[], None] | None = None
        if self.mode == "etcd":
            assert cluster.etcd
            ttl = int(cluster.lease_ttl)
            prefix, service = cluster.key_prefix, ctx.spec.name
            etcd = Etcd(cluster.etcd, timeout=max(0.5, ttl / 3))
            self.presence = Presence(etcd, member_key(prefix, service, node), ttl, self._record, ctx.now)
            self.members = PrefixWatch(Etcd(cluster.etcd, timeout=max(0.5, ttl / 3)), members_prefix(prefix, service),
                                       self._on_members, reread=2 * ttl)
            self.operators = PrefixWatch(Etcd(cluster.etcd, timeout=1.0), operator_prefix(prefix, service),
                                         self._on_operator, reread=4 * ttl)
            self.writer = OperatorWriter(Etcd(cluster.etcd, timeout=1.0),
                                         lambda tid: operator_key(prefix, service, tid))
            self.runner = election_runner(cluster, service, node, self._on_election)
        else:
            fence = MasterFence(str(ipaddress.IPv4Interface(cluster.vip).ip), cluster.interface,
                                node_fence_timeout(cluster, node))
            self.keepalived = Keepalived(config_for(cluster, node, ctx.state_dir / "keepalived"),
                                         ctx.state_dir / "keepalived", on_state=self._on_vrrp, fence=fence)

    def __repr__(self) -> str:
        return f"<ClusterNode {self.node} {self.mode} holder={self.holder or '-'} members={sorted(self.records)}>"

    @property
    def address(self) -> str:
        return self.layout.address

    # ------------------------------------------------------------------ building the groups

    def build(self, g: GroupRuntime, new_instance: NewInstance, taken: set[int], holds: list[socket.socket],
              now: float) -> bool:
        """Add the targets of an instance group to ``g``: this node's slots as its instances, the
        others as remote targets. False when ``g`` is not a placed group (the caller builds it)."""
        placement = self.layout.placements.get(g.name)
        if placement is None:
            return False
        fixed = fixed_places(self.layout) if self.mode == "vrrp" else {}
        for i, s in enumerate(placement.slots):
            role = Role.ACTIVE if s.role is SlotRole.ACTIVE else Role.STANDBY
            if s.node == self.node:
                port = self.layout.port(g.name, s.id)
                if port is None:
                    port = allocate_ports("auto", 1, taken, holds)[0]
                elif not port_is_free(self.address, port):
                    raise ConfigError(f"target_groups.{g.name}.instances.ports: {self.address}:{port} (for {s.id}) "
                                      "is in use on this node")
                taken.add(port)
                t = new_instance(g, i, s.id, port, role, now, host=self.address)
            else:
                place = fixed.get(s.id)
                t = remote_target(g, i, s.id, s.node, place.address if place else None, role, now)
            t.node = s.node
            g.add(t)
        return True

    # ------------------------------------------------------------------ life

    async def start(self, admin_url: str | None) -> None:
        """Join: apply the shared operator state, publish this node's instances, follow the others,
        then stand for the VIP. Raises ConfigError when the VIP cannot be managed here."""
        self.admin_url = admin_url
        if self.keepalived is not None:
            self.keepalived.workdir.mkdir(parents=True, exist_ok=True)
            self.tick(self.ctx.now())  # the track file, before keepalived reads it
            try:
                await self.keepalived.start()
            except FivenineError as exc:
                raise ConfigError(f"cluster.vip: cannot fence {self.cluster.vip} on {self.cluster.interface}: "
                                  f"{exc}") from exc
            return
        self.tick(self.ctx.now())
        assert self.presence and self.members and self.operators and self.writer and self.runner
        self._unsubscribe = self.ctx.events.subscribe(self._on_event)
        self.ready |= {t.id for g in self.ctx.groups.values() for t in g.targets
                       if t.slot is not None and t.node == self.node and t.health.state is HealthState.HEALTHY}
        self.operators.start()
        self.writer.start()
        try:  # the shared operator state first: this node may take the VIP in a moment
            async with asyncio.timeout(3):
                await self.operators.first.wait()
        except TimeoutError:
            log.warning("operator state not read from etcd in 3s: applied when it comes")
        self.presence.start()
        self.members.start()
        try:
            self.runner.start()
        except FivenineError as exc:
            raise ConfigError(f"cluster.vip: cannot manage {self.cluster.vip} on {self.cluster.interface}: "
                              f"{exc}") from exc

    async def stop(self) -> None:
        """Leave: give the VIP up (another node takes it at once), then the lease of this node's
        record (the others see its instances go), stop following."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self.runner is not None:
            await self.runner.stop()
        if self.keepalived is not None:
            await self.keepalived.stop()
        if self.writer is not None:
            await self.writer.stop()
        if self.presence is not None:
            await self.presence.stop()
        for w in (self.members, self.operators):
            if w is not None:
                await w.stop()

    def tick(self, now: float) -> None:
        """This node's health (may it hold the VIP?), fed to keepalived's track file on a change."""
        groups = {name: GroupServing(len(g.backends.serving), g.failover.serving.fail_open)
                  for name, g in self.ctx.groups.items()}
        health = node_health(bool(self.data_plane.listeners), groups)
        if health == self.healthy:
            return
        before, self.healthy = self.healthy, health
        if before is None or before[0] != health[0]:
            self.ctx.emit("cluster", "", "", "" if before is None else ("healthy" if before[0] else "unhealthy"),
                          "healthy" if health[0] else "unhealthy", f"node {self.node}: {health[1]}")
            if self.keepalived is not None:
                self.keepalived.set_healthy(health[0])

    # ------------------------------------------------------------------ the floating address

    def _on_election(self, st: dict[str, Any]) -> None:
        self._set_holder(st.get("holder"), "etcd lease" + (f", fencing revision {st['fencing_revision']}"
                                                            if st.get("fencing_revision") else ""))

    def _on_vrrp(self, state: str) -> None:
        self._set_holder(self._vrrp_holder(), f"VRRP state {state}")

    def _vrrp_holder(self) -> str | None:
        ka = self.keepalived
        if ka is None:
            return None
        if ka.state == "MASTER":
            return self.node
        others = [n.name for n in self.layout.nodes if n.name != self.node]
        if ka.state == "BACKUP" and len(others) == 1:
            return others[0]  # a backup hears the master's adverts
        return None

    def _set_holder(self, holder: str | None, why: str) -> None:
        if holder == self.holder:
            return
        old, self.holder = self.holder, holder
        self.ctx.emit("cluster", "", "", f"VIP at {old}" if old else "VIP nowhere",
                      f"VIP at {holder}" if holder else "VIP nowhere", f"{self.cluster.vip}: {why}")
        log.info("VIP %s: %s -> %s (%s)", self.cluster.vip, old or "-", holder or "-", why)

    # ------------------------------------------------------------------ members: where the targets are

    def _record(self) -> str:
        mine = [t for g in self.ctx.groups.values() for t in g.targets if t.slot is not None and t.node == self.node]
        instances = {t.id: t.backend.address for t in mine if t.id in self.ready}
        starting = tuple(t.id for t in mine if t.id not in self.ready)
        return MemberRecord(self.node, self.address, instances, starting, self.admin_url, os.getpid(), self.started,
                            self.layout.digest).to_json()

    def _on_event(self, ev: Event) -> None:
        """A local instance passed its checks for the first time: publish its address."""
        if ev.kind == "health" and ev.new == HealthState.HEALTHY.value and ev.target not in self.ready:
            t = self.ctx.target(ev.target)
            if t is not None and t.slot is not None and t.node == self.node:
                self.ready.add(t.id)
                if self.presence is not None:
                    self.presence.republish()

    def _on_members(self, entries: Entries) -> None:
        records: dict[str, MemberRecord] = {}
        bad = []
        for name, (value, _) in entries.items():
            try:
                records[name] = MemberRecord.from_json(value)
            except ValueError as exc:
                bad.append(f"{name}: {exc}")
        self.bad_records = bad
        for name in records.keys() - self.records.keys():
            if name != self.node:
                self.ctx.emit("cluster", "", "", "", f"node {name} up", f"node {name} joined "
                              f"({records[name].address}, {len(records[name].instances)} instances)")
        for name in self.records.keys() - records.keys():
            if name != self.node:
                self.ctx.emit("cluster", "", "", f"node {name} up", f"node {name} lost",
                              f"node {name}'s record left etcd (its lease expired or was revoked)")
        self.records = records
        self.seen |= records.keys()
        self.apply_places(locate(self.layout, records, self.seen))

    def apply_places(self, places: dict[str, Place]) -> None:
        """Point every remote target at its published address; a lost one is unhealthy at once."""
        now = self.ctx.now()
        for g in self.ctx.groups.values():
            touched = False
            for t in g.targets:
                p = places.get(t.id)
                if p is None or t.reachable is None:
                    continue
                if p.where in (Where.PUBLISHED, Where.FIXED) and p.address:
                    host, port = split_hostport(p.address)
                    if (host, port) != (t.backend.host, t.backend.port):
                        t.backend.move_to(host, port)
                        g.backends.notify("move", t.backend)
                    if not t.reachable.is_set():
                        t.reachable.set()
                        if t.health.reason is Reason.NODE_LOST:  # back: checked afresh before it serves
                            self.reconciler.transition(t, t.health.register(now))
                        touched = True
                elif p.where is Where.LOST and (t.reachable.is_set() or t.health.state is not HealthState.UNHEALTHY):
                    t.reachable.clear()
                    self.reconciler.transition(t, t.health.lost(now, p.why))
                    t.backend.close_idle()
                    g.backends.notify("close_idle", t.id)
                    self.data_plane.rescue(t.backend)  # what waits for it is retried elsewhere
                    touched = True
            if touched:
                self.reconciler.reconcile(g)

    # ------------------------------------------------------------------ operator state

    def operator_changed(self, t: TargetRuntime, source: str) -> None:
        """An operator command was carried out here: share it (etcd) so every node applies it."""
        if self.writer is None:
            return
        weight = t.base_weight if t.base_weight != t.spec_weight else None
        self.writer.write(t.id, OperatorRecord(t.admin_state, weight, self.node, source).to_json())

    def _on_operator(self, entries: Entries) -> None:
        first, self._op_first = self._op_first, False
        ids = set(self.ctx.target_ids()) if first else set()
        ids |= {tid for tid, (_, rev) in entries.items() if self._op_applied.get(tid) != rev}
        ids |= {tid for tid in self._op_applied if tid not in entries}
        for tid in sorted(ids):
            value, rev = entries.get(tid, (b"", 0))
            if rev:
                self._op_applied[tid] = rev
            else:
                self._op_applied.pop(tid, None)
            t = self.ctx.target(tid)
            if t is None:
                continue
            want = None
            if rev:
                try:
                    want = OperatorRecord.from_json(value)
                except ValueError as exc:
                    log.error("operator record of %s in etcd ignored: %s", tid, exc)
                    continue
            source = (f"cluster (node {want.node}: {want.source})" if want is not None and want.node
                      else "cluster (no operator record)")
            for action, n in operator_steps(t.admin_state, t.base_weight, t.spec_weight, want):
                try:
                    if action == "weight":
                        assert n is not None
                        self.operator.set_weight(tid, n, source)
                    else:
                        self.operator.act(tid, action, source)
                except FivenineError as exc:
                    log.error("operator state of %s from etcd not applied: %s", tid, exc)

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "node": self.node,
            "address": self.address,
            "mode": self.mode,
            "vip": self.cluster.vip,
            "interface": self.cluster.interface,
            "holder": self.holder,
            "holder_since": None,
            "holds_vip": False,
            "vip_since": None,
            "lease": None,
            "fencing_revision": None,
            "vrrp_state": None,
            "healthy": bool(self.healthy and self.healthy[0]),
            "health": self.healthy[1] if self.healthy else "",
            "operator_state": ("shared through etcd" if self.mode == "etcd" else
                               "local to this node (coordination vrrp has no shared store)"),
            "placement": {g: p.as_dict() for g, p in sorted(self.layout.placements.items())},
            "layout": self.layout.digest,
        }
        if self.runner is not None:
            st = self.runner.status()
            since = st.get("holder_since")
            out.update({"holder": st.get("holder"), "holder_since": iso(since) if since else None,
                        "holds_vip": bool(st.get("holds_vip")),
                        "vip_since": iso(st["vip_since"]) if st.get("vip_since") else None,
                        "lease": st.get("lease"), "fencing_revision": st.get("fencing_revision"), "election": st})
        if self.keepalived is not None:
            st = self.keepalived.status()
            out.update({"holder": self._vrrp_holder(), "holds_vip": bool(st.get("holds_vip")),
                        "vrrp_state": st.get("state"), "election": st})
            if st.get("holds_vip") and st.get("state_since"):
                out["holder_since"] = out["vip_since"] = iso(st["state_since"])
        if self.presence is not None and self.members is not None and self.operators is not None and self.writer:
            out["etcd"] = {"presence": self.presence.status(), "members": self.members.status(),
                           "operator": {**self.operators.status(), **self.writer.status()},
                           "bad_records": list(self.bad_records)}
        out["nodes"] = [self._node_status(n.name, n.address, n.zone, out["holder"]) for n in self.layout.nodes]
        return out

    def _node_status(self, name: str, address: str, zone: str | None, holder: str | None) -> dict[str, Any]:
        rec = self.records.get(name)
        placed = [s.id for p in self.layout.placements.values() for s in p.slots if s.node == name]
        if name == self.node:
            state = "up" if self.presence is None or self.presence.lease else "up (no lease in etcd)"
        elif self.mode == "vrrp":
            state = "unknown (vrrp: no shared store; see its targets)"
        else:
            state = "up" if rec is not None else "lost" if name in self.seen else "not joined"
        return {
            "name": name, "address": address, "zone": zone, "state": state, "this_node": name == self.node,
            "holds_vip": holder == name, "instances": placed,
            "admin": self.admin_url if name == self.node else rec.admin if rec else None,
            "pid": os.getpid() if name == self.node else rec.pid if rec else None,
            "started": iso(self.started) if name == self.node else iso(rec.started) if rec and rec.started else None,
            "same_layout": None if rec is None else rec.layout == self.layout.digest,
        }
