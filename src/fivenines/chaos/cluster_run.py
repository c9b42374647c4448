"""A chaos run on a cluster: the namespace rig, every node, load through the VIP, node faults.

For a spec with ``cluster:`` (docs/chaos.md, "Clusters"), on this machine (root):

1. the rig of ``make cluster-demo`` (:mod:`fivenines.rig`): a host per node, the etcd
   members (vrrp: none) and a client, each a network namespace on a bridge of its own;
2. a copy of the spec with the rig's addresses (:func:`rig_spec`: nodes, etcd endpoints,
   VIP, interface ``eth0``; everything else as written) and ``fivenines up COPY --node NAME``
   in every node's host (:class:`fivenines.cluster_demo.Demo`);
3. once a node holds the VIP and the loaded group is all healthy, the open-loop load runs
   from the client host to the VIP, and :class:`~fivenines.rig.watch.AddressWatch`
   samples who holds the VIP in every node's host;
4. faults on schedule, one at a time, on the VIP holder (or the node a fixed schedule
   names): ``node`` (:meth:`Rig.crash`, then :meth:`Rig.reset` and the node started again),
   ``lb`` (SIGKILL of the node's ``fivenines up`` alone; the same restart), ``partition``
   (the node cut from etcd, vrrp: from the other nodes; :meth:`Rig.heal`), each undone
   after ``--fault-duration``;
5. at the end, on Ctrl-C or on any error, the rig is removed: every process killed, every
   namespace deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from fivenines.chaos import ChaosError
from fivenines.chaos.loadgen import LoadGen
from fivenines.chaos.outcomes import OutcomeLog
from fivenines.chaos.runner import (
    ChaosConfig,
    ClusterTrace,
    RunData,
    auto_connections,
    load_target,
    plan,
    status_views,
)
from fivenines.chaos.schedule import FaultKind, PlannedFault
from fivenines.chaos.timeline import Injected
from fivenines.spec import Spec

CLIENT = "client"
VIP_HOST = 100  # the VIP: this host number in the rig's subnet


def etcd_hosts(spec: Spec) -> list[str]:
    """The rig hosts for the spec's etcd members: one per endpoint (1 or 3), none in vrrp mode."""
    c = spec.cluster
    assert c is not None
    if c.mode != "etcd":
        return []
    n = len(c.etcd or [])
    return ["etcd"] if n not in (3, 5) else [f"etcd{i + 1}" for i in range(n)]


def rig_spec(raw: dict[str, Any], addresses: dict[str, str], etcd_endpoints: list[str], vip: str) -> dict[str, Any]:
    """The spec as written, with the rig's node addresses, etcd endpoints, VIP and interface.

    >>> raw = {"name": "x", "cluster": {"nodes": [{"name": "a", "address": "10.0.0.1", "zone": "r1"}],
    ...        "vip": "10.0.0.100/24", "interface": "ens3", "etcd": ["http://10.0.0.9:2379"]}}
    >>> c = rig_spec(raw, {"a": "10.199.0.12"}, ["http://10.199.0.11:2379"], "10.199.0.100")["cluster"]
    >>> c["nodes"], c["vip"], c["interface"], c["etcd"]
    ([{'name': 'a', 'address': '10.199.0.12', 'zone': 'r1'}], '10.199.0.100/24', 'eth0', ['http://10.199.0.11:2379'])
    >>> raw["cluster"]["vip"]
    '10.0.0.100/24'
    """
    out = copy.deepcopy(raw)
    c = out["cluster"]
    for n in c["nodes"]:
        n["address"] = addresses[n["name"]]
    c["vip"] = f"{vip}/{str(c['vip']).rsplit('/', 1)[1]}" if "/" in str(c["vip"]) else vip
    c["interface"] = "eth0"
    if etcd_endpoints:
        c["etcd"] = list(etcd_endpoints)
    return out


class ClusterChaosRun:
    def __init__(self, config: ChaosConfig, spec: Spec, say: Callable[[str], None] = lambda s: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if spec.cluster is None:
            raise ChaosError("a cluster run needs a spec with cluster:")
        self.config, self.spec, self.say, self.clock = config, spec, say, clock
        self.cluster = spec.cluster
        self.nodes = [n.name for n in spec.cluster.nodes]
        self.listener_index, self.group = load_target(spec)
        self.port = spec.listeners[self.listener_index].port
        self.records: list[Injected] = []
        self.t0 = 0.0
        self._restores: dict[int, asyncio.Task[None]] = {}
        self._down: dict[str, int] = {}  # node -> the fault keeping it down or cut
        self._load_stop: Callable[[], None] | None = None
        self.loadgen: LoadGen | None = None
        self.vip = ""

    def now(self) -> float:
        return self.clock() - self.t0

    # ------------------------------------------------------------------ the world

    def _build(self) -> tuple[Any, Any, Path]:
        """The rig, etcd in it, the rig's copy of the spec (blocking; run in a thread)."""
        from fivenines.rig import Rig
        from fivenines.rig.etcd import EtcdInRig

        etcd_names = etcd_hosts(self.spec)
        clash = {CLIENT, *etcd_names} & set(self.nodes)
        if clash:
            raise ChaosError(f"cluster.nodes: the rig needs host names {sorted(clash)} for itself; rename the node")
        try:
            rig = Rig([*self.nodes, *etcd_names, CLIENT])
        except Exception as exc:  # RigError: a bad node name, no room in the subnet
            raise ChaosError(f"building the namespace rig: {exc}") from exc
        try:
            etcd = EtcdInRig(rig, etcd_names, rig.scratch) if etcd_names else None
            self.vip = str(rig.subnet.network_address + VIP_HOST)
            raw = yaml.safe_load(Path(self.config.spec_path).read_text())
            spec = rig_spec(raw, {n: rig.host(n).address for n in self.nodes}, etcd.endpoints if etcd else [],
                            self.vip)
            path = rig.scratch / Path(self.config.spec_path).name
            path.write_text(yaml.safe_dump(spec, sort_keys=False))
            (self.config.report_dir / "rig-spec.yaml").write_text(path.read_text())
        except BaseException:
            rig.close()
            raise
        return rig, etcd, path

    async def _holder_healthy(self, demo: Any, watch: Any) -> dict[str, Any]:
        """Wait until a node holds the VIP and its view of the loaded group is all healthy; its /status."""
        deadline = self.clock() + self.config.startup_timeout
        while True:
            holders = watch.holders
            st = await asyncio.to_thread(demo.status, holders[0]) if holders else None
            g = (st or {}).get("target_groups", {}).get(self.group)
            if st is not None and g and all(t["state"] == "healthy" for t in g["targets"]) \
                    and len(g["serving"]) >= g["active_count"]:
                return dict(st)
            if self.clock() > deadline:
                why = f"node {holders[0]}'s group {self.group}: " + ", ".join(
                    f"{t['id']} {t['state']}" for t in g["targets"]) if g else "no node holds the VIP"
                raise ChaosError(f"the cluster was not ready within {self.config.startup_timeout:g}s ({why})")
            await asyncio.sleep(0.2)

    # ------------------------------------------------------------------ faults

    async def _fault_loop(self, planned: list[PlannedFault], rig: Any, demo: Any, watch: Any) -> None:
        cfg = self.config
        window_end = cfg.duration - (0.0 if cfg.schedule is not None else cfg.settle)
        for fid, pf in enumerate(planned, 1):
            delay = pf.at - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            if not cfg.overlap:  # one at a time: the previous fault undone and a holder again
                await asyncio.gather(*self._restores.values(), return_exceptions=True)
                while not watch.holders and self.now() < window_end:  # noqa: ASYNC110 (a thread samples it)
                    await asyncio.sleep(0.05)
            holders = watch.holders
            node = pf.target or (holders[0] if holders else None)
            at = self.now()
            if node is None or node not in self.nodes or node in self._down or at >= window_end:
                why = (f"node {node} is already down or cut" if node in self._down
                       else f"{node} is not a node of the cluster ({', '.join(self.nodes)})" if node
                       else "no node held the VIP" if at < window_end else "the fault window ended first")
                self.records.append(Injected(fid, pf.kind.value, at, self.group, node or "", pf.at, skipped=why))
                continue
            pid, detail = await self._inject(pf.kind, node, rig, demo)
            rec = Injected(fid, pf.kind.value, at, self.group, node, pf.at, pid=pid, detail=detail)
            self.records.append(rec)
            self._down[node] = fid
            self.say(f"  {at:7.2f}s  {pf.kind.value:<9} {node}: {detail}")
            self._restores[fid] = asyncio.get_running_loop().create_task(
                self._restore_later(fid, pf.kind, node, rig, demo))

    async def _inject(self, kind: FaultKind, node: str, rig: Any, demo: Any) -> tuple[int | None, str]:
        if kind is FaultKind.NODE:
            pids = await asyncio.to_thread(rig.crash, node)
            return None, f"crashed: cable pulled, {len(pids)} processes killed"
        if kind is FaultKind.LB:
            proc = demo.procs[node]
            os.kill(proc.pid, signal.SIGKILL)
            return int(proc.pid), f"SIGKILL of its fivenines up (pid {proc.pid}); its instances keep running"
        peers = etcd_hosts(self.spec) or [n for n in self.nodes if n != node]
        await asyncio.to_thread(rig.partition, node, peers)
        return None, f"cut from {', '.join(peers)} (nft in its namespace)"

    async def _restore_later(self, fid: int, kind: FaultKind, node: str, rig: Any, demo: Any) -> None:
        await asyncio.sleep(self.config.fault_duration)
        await self._restore(fid, kind, node, rig, demo, restart=True)

    async def _restore(self, fid: int, kind: FaultKind, node: str, rig: Any, demo: Any, *, restart: bool) -> None:
        from fivenines.cluster_demo import NodeStartError

        restored = self.now()
        repaired: float | None = None
        note = ""
        if kind is FaultKind.PARTITION:
            await asyncio.to_thread(rig.heal, node)
            repaired = self.now()
        else:  # the host back: cable in, leftovers (a killed balancer's instances, fence, VIP) gone
            await asyncio.to_thread(rig.reset, node, self.vip)
            if restart:
                try:
                    await asyncio.to_thread(demo.start, node)
                    repaired = self.now()
                except NodeStartError as exc:
                    note = str(exc).splitlines()[0]
        i = next(i for i, r in enumerate(self.records) if r.id == fid)
        r = self.records[i]
        self.records[i] = Injected(r.id, r.kind, r.at, r.group, r.target, r.planned_at, restored, r.pid,
                                   r.detail + (f"; {note}" if note else ""), None, repaired)
        self._down.pop(node, None)
        self.say(f"  {restored:7.2f}s  restore   {node}" + (f" (ready at {repaired:.2f}s)" if repaired else ""))

    # ------------------------------------------------------------------ load

    def _load(self, rig: Any, host: str, port: int, max_connections: int) -> OutcomeLog:
        """The open-loop load from the client host (its sockets are made in that namespace)."""
        cfg = self.config

        def in_client() -> OutcomeLog:
            from fivenines.proxy import aio

            gen = LoadGen(host, port, cfg.rate, cfg.duration, path=cfg.path, timeout=cfg.timeout,
                          max_connections=max_connections, clock=self.clock)
            self.loadgen = gen

            async def main() -> OutcomeLog:
                task = asyncio.ensure_future(gen.run(self.t0))
                loop = asyncio.get_running_loop()

                def stop() -> None:
                    loop.call_soon_threadsafe(task.cancel)

                self._load_stop = stop
                try:
                    return await task
                except asyncio.CancelledError:
                    return gen.log

            return aio.run(main())

        out: OutcomeLog = rig.call_in(CLIENT, in_client, timeout=cfg.duration + cfg.timeout + 30.0)
        return out

    # ------------------------------------------------------------------ the run

    async def run(self) -> RunData:
        from fivenines.cluster_demo import Demo, NodeStartError
        from fivenines.rig import AddressWatch

        cfg = self.config
        cfg.report_dir.mkdir(parents=True, exist_ok=True)
        planned = plan(cfg)
        max_connections = cfg.max_connections or auto_connections(cfg.rate, cfg.timeout)
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        if me is not None:
            loop.add_signal_handler(signal.SIGTERM, me.cancel)
        rig: Any = None
        demo: Any = None
        watch: Any = None
        faults: asyncio.Task[None] | None = None
        load: asyncio.Future[OutcomeLog] | None = None
        try:
            self.say(f"building the namespace rig: nodes {', '.join(self.nodes)}"
                     + (f", etcd {', '.join(etcd_hosts(self.spec))}" if etcd_hosts(self.spec) else "")
                     + f", {CLIENT}")
            rig, _etcd, path = await asyncio.to_thread(self._build)
            self.say(f"rig {rig.prefix} built (namespaces {rig.prefix}-*); the spec with its addresses: {path}")
            demo = Demo(rig, path, startup_timeout=cfg.startup_timeout)
            try:
                for n in self.nodes:
                    await asyncio.to_thread(demo.start, n)
            except NodeStartError as exc:
                raise ChaosError(str(exc)) from exc
            watch = AddressWatch(rig, self.vip, hosts=self.nodes, interval=0.005).start()
            st = await self._holder_healthy(demo, watch)
            groups, health0, roles0 = status_views(st)
            self.t0 = self.clock() + 0.2
            wall_at_start = time.time() + (self.t0 - self.clock())
            self.say(f"load: {cfg.rate:g} requests/s from host {CLIENT} to http://{self.vip}:{self.port}{cfg.path} "
                     f"for {cfg.duration:g}s; VIP held by {watch.holders[0]}; {len(planned)} fault(s) planned")
            load = asyncio.ensure_future(asyncio.to_thread(self._load, rig, self.vip, self.port, max_connections))
            faults = loop.create_task(self._fault_loop(planned, rig, demo, watch))
            try:
                log = await load
            finally:
                faults.cancel()
                await asyncio.gather(faults, return_exceptions=True)
            end = self.now()
            seen = {r.id for r in self.records}
            for fid, pf in enumerate(planned, 1):
                if fid not in seen:
                    self.records.append(Injected(fid, pf.kind.value, min(pf.at, end), self.group, pf.target or "",
                                                 pf.at, skipped="due after the end of the run" if pf.at >= end
                                                 else "the run ended while the previous fault was not undone"))
            for fid, task in self._restores.items():  # undo what is still on, without restarting
                if not task.done():
                    task.cancel()
                    r = next(r for r in self.records if r.id == fid)
                    await self._restore(fid, FaultKind(r.kind), r.target, rig, demo, restart=False)
            watch.stop()
            trace = ClusterTrace(self.cluster.mode, self.vip, list(self.nodes),
                                 [(c.at - self.t0, c.holders) for c in watch.changes], watch.samples_with_two)
            watch = None
            self.records.sort(key=lambda r: r.id)
            holder_pid = int(st.get("pid", 0))
            return RunData(cfg, self.spec, self.group, f"{self.vip}:{self.port}", log,
                           self.loadgen.stats() if self.loadgen is not None else {}, [],
                           list(self.records), groups, health0, roles0, end, planned,
                           {"undone": [], "stopped_left": [], "pending_undo": []}, holder_pid, wall_at_start, trace)
        finally:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signal.SIGTERM)
            if self._load_stop is not None:  # the load's own loop, in the client thread (over already: no-op)
                with contextlib.suppress(RuntimeError):
                    self._load_stop()
            for task in self._restores.values():
                task.cancel()
            if faults is not None:
                faults.cancel()
            if watch is not None:
                with contextlib.suppress(Exception):
                    watch.stop()
            if demo is not None:
                for f in demo.admin.values():
                    f.close()
            if rig is not None:
                await asyncio.to_thread(rig.close)
