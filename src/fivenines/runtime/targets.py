"""What the local runtime knows of each target group and target (the state the other parts share).

* :class:`GroupRuntime`: a target group: its spec, its targets, its data-plane group
  (:class:`~fivenines.proxy.backend.BackendGroup`), its failover state and, for a
  ``replicated:`` group, the manager of its store (:class:`Replicated`);
* :class:`TargetRuntime`: one target: its health judge, role, data-plane backend,
  operator state, passive-detection and agent state, and its :class:`InstanceSlot`
  when fivenines runs its process;
* :func:`instance_target` and :func:`static_target` build them from the spec.

No behaviour beyond reading this state lives here: the parts that change it are
:mod:`~fivenines.runtime.reconcile` (roles, serving set, ejections),
:mod:`~fivenines.runtime.instances`, :mod:`~fivenines.runtime.checks`,
:mod:`~fivenines.runtime.draining`, :mod:`~fivenines.runtime.rollouts`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from fivenines.core import pool
from fivenines.core.detect import AgentReport
from fivenines.core.health import CheckResult
from fivenines.core.lifecycle import InstanceLifecycle, RestartPolicy
from fivenines.core.pool import Member, Role
from fivenines.core.restore import AdminState, fingerprint
from fivenines.proxy.backend import Backend, BackendGroup
from fivenines.runtime.failover import GroupFailover, make_judge
from fivenines.runtime.supervisor import Process, resolve_argv
from fivenines.spec import TargetGroupSpec, split_hostport


class Replicated(Protocol):
    """The replicated-store side of a ``replicated:`` group
    (:class:`~fivenines.runtime.replication.ReplicationManager`), as the rest of the runtime uses it."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def check(self, t: TargetRuntime) -> CheckResult:
        """One heartbeat of ``t``: the store's report of its role and position."""
        ...

    def reconcile(self) -> list[str]:
        """Health changed: feed it to the store's failover (instead of the N+M roles)."""
        ...

    async def switchover(self, to: str | None, timeout: float = 15.0) -> dict[str, Any]: ...

    def cut_off(self, target_id: str, seconds: float) -> None: ...

    def status(self) -> dict[str, Any]: ...

    def target_status(self, target_id: str) -> dict[str, Any]: ...


class InstanceSlot:
    """A supervised process slot: its lifecycle, its current process and its logs."""

    def __init__(self, target_id: str, port: int, argv: list[str] | str, env: dict[str, str], cwd: str | None,
                 shell: bool, stop_timeout: float, policy: RestartPolicy, log_dir: Path,
                 host: str = "127.0.0.1") -> None:
        self.target_id = target_id
        self.port = port
        self.host = host  # where it listens: loopback, or its cluster node's address
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.shell = shell
        self.stop_timeout = stop_timeout
        self.lifecycle = InstanceLifecycle(policy)
        self.process: Process | None = None
        self.stdout = log_dir / f"{target_id}.out.log"
        self.stderr = log_dir / f"{target_id}.err.log"
        self.restart_handle: asyncio.TimerHandle | None = None
        self.running = asyncio.Event()
        self.extra_args: Callable[[], list[str]] | None = None  # appended at each start (replicated groups)

    def __repr__(self) -> str:
        return f"<InstanceSlot {self.target_id} port {self.port} {self.lifecycle.state.value}>"

    def command(self) -> list[str]:
        def sub(s: str) -> str:
            return s.replace("{port}", str(self.port)).replace("{id}", self.target_id).replace("{host}", self.host)

        if isinstance(self.argv, str):
            return [sub(self.argv)]
        extra = self.extra_args() if self.extra_args is not None else []
        return resolve_argv([sub(a) for a in self.argv] + extra)


class TargetRuntime:
    def __init__(self, group: GroupRuntime, index: int, target_id: str, host: str, port: int,
                 role: Role, slot: InstanceSlot | None, now: float, weight: int = 1) -> None:
        self.group = group
        self.index = index
        self.id = target_id
        hc = group.spec.health_check
        self.judge = make_judge(hc, now)
        self.health = self.judge.health
        self.role = role
        self.role_since = now
        self.slot = slot
        self.backend = Backend(target_id, host, port, weight=weight)
        self.probe_task: asyncio.Task[None] | None = None
        self.agent_task: asyncio.Task[None] | None = None
        self.ejection = ""  # why passive detection ejected it (empty: not ejected)
        self.available_since = now  # when it last stopped being excluded
        self.first_healthy: float | None = None  # when it first became healthy: later recoveries are held
        self.agent: AgentReport | None = None
        self.agent_error = ""
        self.base_weight = weight  # the spec's weight; an agent's N% scales it
        if hc.agent is not None:
            self.backend.weight = weight * 100  # in percent, so that an agent's 75% is exact
        self.drain_started: float | None = None
        self.admin_state: AdminState | None = None  # what an operator asked (drain, maintenance)
        self.spec_weight = weight  # the spec's; base_weight differs when an operator set it
        self.fingerprint = fingerprint(group.name, group.spec, None if slot else self.backend.address)
        self.node: str | None = None  # in a cluster: the node it lives on
        # an instance on another cluster node: set while its node publishes its address (checks wait)
        self.reachable: asyncio.Event | None = None

    @property
    def excluded(self) -> str:
        """Why it serves nothing though maybe healthy: ejected, or drained by its agent."""
        if self.ejection:
            return f"ejected ({self.ejection})"
        if self.agent is not None and self.agent.drain:
            return "drained by its agent" + (f" ({self.agent.description})" if self.agent.description else "")
        return ""

    @property
    def running(self) -> bool:
        """Its process runs (always true of a target fivenines does not run; for an instance on
        another cluster node: while its node publishes it)."""
        if self.reachable is not None:
            return self.reachable.is_set()
        return self.slot is None or (self.slot.process is not None and self.slot.process.running)

    def member(self, now: float | None = None) -> Member:
        h = self.health
        ready_at = 0.0
        if now is not None:
            able = max(h.since, self.available_since)
            ready_at = pool.ready_at(able, self.group.failover.flaps.hold(self.id, now), self.first_healthy)
        return Member(self.id, self.role, h.state, h.since, self.index, h.reason, self.excluded, ready_at,
                      self.running)

    def __repr__(self) -> str:
        return f"<Target {self.id} {self.backend.address} {self.health.state.value} {self.role.value}>"

    def effective_weight(self) -> int:
        """The balancer's weight: ``base_weight``, scaled by an agent's percentage when one is set up."""
        if self.group.spec.health_check.agent is None:
            return self.base_weight
        r = self.agent
        return self.base_weight * (r.weight_percent if r is not None and r.weight_percent else 100)


class GroupRuntime:
    def __init__(self, name: str, spec: TargetGroupSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.spec = spec
        self.backends = BackendGroup.from_spec(name, spec, clock=clock)
        self.targets: list[TargetRuntime] = []
        self.active_count = spec.instances.count if spec.instances else len(spec.targets or [])
        self.matcher = spec.health_check.matcher_ranges
        size = spec.instances.total if spec.instances else len(spec.targets or [])
        self.failover = GroupFailover(spec, size, self.active_count)
        self.guard_outliers()
        self.replication: Replicated | None = None  # replicated: groups

    def __repr__(self) -> str:
        return f"<Group {self.name} {len(self.targets)} targets, serving {[b.id for b in self.backends.serving]}>"

    def guard_outliers(self) -> None:
        if self.failover.outliers is not None:
            # passive ejection never takes out the last member able to serve
            self.failover.outliers.may_eject = lambda i: pool.can_spare(
                [t.member() for t in self.targets], self.targets[i].id)

    def by_id(self, target_id: str) -> TargetRuntime | None:
        return next((t for t in self.targets if t.id == target_id), None)

    def add(self, t: TargetRuntime) -> None:
        self.targets.append(t)
        self.backends.add(t.backend)

    def remove(self, t: TargetRuntime) -> None:
        if t in self.targets:
            self.targets.remove(t)
        self.backends.remove(t.id)

    def refresh_balancer(self) -> None:
        """Publish the same serving set again: the balancer takes the targets' new weights."""
        self.backends.set_serving([b.id for b in self.backends.serving])


def restart_policy(tg: TargetGroupSpec) -> RestartPolicy:
    assert tg.instances is not None
    r = tg.instances.restart
    return RestartPolicy(r.initial_delay, r.max_delay, r.multiplier, r.jitter, r.stable_after, r.crash_loop_after)


def instance_target(g: GroupRuntime, index: int, tid: str, port: int, role: Role, now: float, *,
                    base_dir: Path, log_dir: Path, host: str = "127.0.0.1") -> TargetRuntime:
    """A target whose process fivenines runs (``instances:``), on ``host:port`` (loopback, or its
    cluster node's address: ``{host}`` in the command and ``FIVENINES_HOST`` say which)."""
    inst = g.spec.instances
    assert inst is not None
    env = dict(os.environ)
    env.update({k: v.replace("{port}", str(port)).replace("{id}", tid).replace("{host}", host)
                for k, v in inst.env.items()})
    env["FIVENINES_TARGET_ID"] = tid
    env["FIVENINES_PORT"] = str(port)
    env["FIVENINES_HOST"] = host
    cwd = inst.cwd or str(base_dir)
    slot = InstanceSlot(tid, port, inst.command, env, cwd, inst.shell, inst.stop_timeout, restart_policy(g.spec),
                        log_dir, host)
    return TargetRuntime(g, index, tid, host, port, role, slot, now)


def remote_target(g: GroupRuntime, index: int, tid: str, node: str, address: str | None, role: Role,
                  now: float) -> TargetRuntime:
    """An instance another cluster node runs: checked and balanced here, supervised there. With
    ``address`` None (not published yet) its checks wait until :attr:`TargetRuntime.reachable` is set."""
    host, port = split_hostport(address) if address else ("0.0.0.0", 0)
    t = TargetRuntime(g, index, tid, host, port, role, None, now)
    t.node = node
    t.fingerprint = fingerprint(g.name, g.spec, f"cluster node {node}")
    t.reachable = asyncio.Event()
    if address:
        t.reachable.set()
    return t


def static_target(g: GroupRuntime, index: int, tid: str, address: str, weight: int, now: float) -> TargetRuntime:
    """A target at a fixed address (``targets:``): fivenines checks it and sends it traffic."""
    host, port = split_hostport(address)
    return TargetRuntime(g, index, tid, host, port, Role.ACTIVE, None, now, weight)
