"""Building listeners from a spec, and ``workers: N`` data-plane processes.

:func:`make_listener` turns a spec's listeners into (unstarted) HTTP or TCP
listeners over given target groups; the controller uses it in-process
(``workers: 1``, the default) and every worker process uses it too.

With ``workers: N > 1`` the controller stays in the main process (health checks,
instances, admin, the one health view) and :class:`WorkerPool` runs N worker
processes (``python -m fivenines.proxy.workers``). Each worker binds every
listening port with ``SO_REUSEPORT``, so the kernel spreads new connections over
them. The main process reserves each port first (bound with ``SO_REUSEPORT``,
never listening, so it gets no connections) so that port 0 means the same free
port in every worker.

Main and worker talk over a Unix socket pair, one JSON object per line:

main → worker
    ``setup`` (spec, targets, serving sets, listener addresses, the spec's folder and
    the state directory, where the TLS files and ticket secret are) once; then
    ``serving`` (a group's serving ids), ``draining``, ``move`` (a restarted
    instance's new port), ``close_idle``, ``cut`` (a drained target's
    deadline), ``tls_reload`` (read a TLS listener's files again: a reload the main
    process checked first), ``stop`` (drain and exit). Each carries a version number.
worker → main
    ``ready``, then ``stats`` twice a second: listener counters (and TLS handshake
    counters), per-target requests/errors/in-flight, per-group counters, and the last
    version applied;
    ``eject`` when the worker's own passive detector ejected a target (it has
    already taken it out of its serving set; the main process decides for the
    group and publishes the serving set every worker follows).

Workers die with the main process (``PR_SET_PDEATHSIG``) and when the control
socket closes; a worker that dies is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fivenines.certs import CertificateError
from fivenines.core.detect import Ejection, OutcomeSink, OutlierDetector, outlier_policy
from fivenines.core.route import Router
from fivenines.proxy.backend import Backend, BackendGroup, FixedGroup
from fivenines.proxy.client import http_listener
from fivenines.proxy.listener import Counters, Listener, ProxySettings
from fivenines.proxy.tcp import TcpListener
from fivenines.proxy.tls import ticket_secret
from fivenines.proxy.tls_serve import TlsServing, serve_https, serve_tls
from fivenines.spec import ListenerSpec, Spec

log = logging.getLogger("fivenines.workers")

AnyListener = Listener | TcpListener
STATS_INTERVAL = 0.5


def make_listener(ls: ListenerSpec, groups: Mapping[str, BackendGroup],
                  settings: ProxySettings | None = None, *, tls: TlsServing | None = None) -> AnyListener:
    """An unstarted listener for ``ls`` over ``groups`` (rules compiled here, once). An https or
    tls listener needs ``tls``, the TLS it serves (:class:`~fivenines.proxy.tls_serve.TlsServing`)."""
    if ls.tls and tls is None:
        raise ValueError(f"{ls.protocol} listener {ls.host}:{ls.port} built without its TLS")
    group_for = FixedGroup(groups[ls.default_target_group])
    s = settings or ProxySettings.from_spec(ls.timeouts, ls.limits)
    router = Router(ls.rules, ls.default_target_group) if ls.rules else None
    if ls.protocol in ("tcp", "tls"):
        tcp = TcpListener(group_for, ls.port, s, router=router, groups=groups)
        if tls is not None:
            serve_tls(tcp, tls)
        return tcp
    if ls.protocol == "https":
        s = dataclasses.replace(s, proto=b"https")  # X-Forwarded-Proto, and #{protocol} in redirects
    http = http_listener(group_for, ls.port, s, router=router, groups=groups)
    if tls is not None:
        serve_https(http, tls)
    return http


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, non-listening SO_REUSEPORT socket holding ``host:port`` for the workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        s.bind((host, port))
    except OSError:
        s.close()
        raise
    return s


# --------------------------------------------------------------------------- main side


class RemoteListener:
    """The main process's view of one listener served by the workers (counters summed)."""

    def __init__(self, host: str, port: int, tls: TlsServing | None = None) -> None:
        self.host = host
        self.port = port
        self.counters = Counters()
        self.open = 0
        self.tls = tls  # an https/tls listener: this process's view (files checked, counters summed)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def clients(self) -> range:
        return range(self.open)  # only its length is read (connections_open)


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self.stats: dict[str, Any] = {}
        self.applied = 0
        self.ready = asyncio.Event()
        self.restarts = 0


class WorkerPool:
    """N worker processes serving the spec's listeners, following the main process's health view."""

    def __init__(self, spec: Spec, groups: Mapping[str, BackendGroup], count: int, log_dir: Path,
                 settings: ProxySettings | None = None, *, base_dir: Path | None = None,
                 state_dir: Path | None = None, tls: Mapping[int, TlsServing] | None = None) -> None:
        self.spec = spec
        self.base_dir = base_dir or Path.cwd()
        self.state_dir = state_dir or log_dir.parent
        self.tls: dict[int, TlsServing] = dict(tls or {})
        self.groups = groups
        self.count = count
        self.log_dir = log_dir
        self.settings = settings
        self.version = 0
        self.listeners: list[tuple[ListenerSpec, RemoteListener]] = []
        self._reserved: list[socket.socket] = []
        self._workers = [_Worker(i) for i in range(count)]
        self._stopping = False
        self._draining: dict[str, set[str]] = {}
        self.on_eject: Callable[[dict[str, Any]], None] | None = None  # a worker ejected a target
        for g in groups.values():
            g.observers.append(self._on_group_change)

    # -- lifecycle
    async def start(self, timeout: float = 20.0) -> None:
        for i, ls in enumerate(self.spec.listeners):
            s = reserve_port(ls.host, ls.port)
            self._reserved.append(s)
            host, port = s.getsockname()[:2]
            tls = self.tls.get(i)
            if tls is not None:
                tls.name = f"{host}:{port}"
                if tls.tls is not None:
                    tls.tls.name = tls.name
            self.listeners.append((ls, RemoteListener(host, port, tls)))
        for w in self._workers:
            await self._spawn(w)
        async with asyncio.timeout(timeout):
            for w in self._workers:
                await w.ready.wait()

    async def _spawn(self, w: _Worker) -> None:
        from fivenines.runtime.supervisor import die_with_parent

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        err = os.open(self.log_dir / f"worker-{w.index + 1}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            w.proc = subprocess.Popen(  # noqa: ASYNC220 - fork+exec, returns at once
                [sys.executable, "-m", "fivenines.proxy.workers", str(theirs.fileno()), str(w.index + 1)],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                preexec_fn=die_with_parent(os.getpid()),
            )
        finally:
            os.close(err)
            theirs.close()
        w.ready.clear()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        w.writer = writer
        self._send(w, self._setup_message())
        w.task = asyncio.get_running_loop().create_task(self._read(w, reader), name=f"worker {w.index + 1}")

    def _setup_message(self) -> dict[str, Any]:
        targets = {
            name: [{"id": b.id, "host": b.host, "port": b.port, "weight": b.weight} for b in g.backends.values()]
            for name, g in self.groups.items()
        }
        return {
            "op": "setup",
            "version": self.version,
            "spec": self.spec.model_dump(mode="json"),
            "targets": targets,
            "serving": {name: [b.id for b in g.serving] for name, g in self.groups.items()},
            "draining": {name: sorted(ids) for name, ids in self._draining.items()},
            "listeners": [[lst.host, lst.port] for _, lst in self.listeners],
            "settings": _settings_dict(self.settings),
            "base_dir": str(self.base_dir),
            "state_dir": str(self.state_dir),
        }

    async def _read(self, w: _Worker, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                msg = json.loads(line)
                op = msg.get("op")
                if op == "ready":
                    w.ready.set()
                elif op == "stats":
                    w.stats = msg
                    w.applied = msg.get("version", 0)
                    self._aggregate()
                elif op == "eject" and self.on_eject is not None:
                    self.on_eject(msg)
        except (ConnectionError, json.JSONDecodeError) as exc:
            log.warning("worker %d: control channel: %s", w.index + 1, exc)
        if w.proc is not None:
            code = await _wait(w.proc)
            w.ready.clear()
            if not self._stopping:
                log.error("worker %d exited (%s): starting it again", w.index + 1, code)
                w.restarts += 1
                w.stats = {}
                await asyncio.sleep(0.2)
                if not self._stopping:
                    await self._spawn(w)

    def _send(self, w: _Worker, msg: dict[str, Any]) -> None:
        if w.writer is not None and not w.writer.is_closing():
            w.writer.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")

    def _broadcast(self, msg: dict[str, Any]) -> None:
        self.version += 1
        msg["version"] = self.version
        for w in self._workers:
            self._send(w, msg)

    def _on_group_change(self, what: str, group: BackendGroup, data: Any) -> None:
        if what == "serving":
            self._broadcast({"op": "serving", "group": group.name, "ids": data})
        elif what == "draining":
            tid, on = data
            ids = self._draining.setdefault(group.name, set())
            (ids.add if on else ids.discard)(tid)
            self._broadcast({"op": "draining", "group": group.name, "id": tid, "on": on})
        elif what == "move":
            b: Backend = data
            self._broadcast({"op": "move", "group": group.name, "id": b.id, "host": b.host, "port": b.port})
        elif what == "close_idle":
            self._broadcast({"op": "close_idle", "group": group.name, "id": data})

    def cut(self, group: str, target_id: str) -> None:
        self._broadcast({"op": "cut", "group": group, "id": target_id})

    def reload_tls(self, index: int, ls: ListenerSpec) -> None:
        """Every worker reads listener ``index``'s TLS files again, as ``ls`` says (checked here first)."""
        self.spec.listeners[index] = ls
        self._broadcast({"op": "tls_reload", "index": index, "listener": ls.model_dump(mode="json")})

    def synced(self) -> bool:
        """Every worker has applied every update sent so far."""
        return all(w.applied >= self.version and w.ready.is_set() for w in self._workers)

    def _aggregate(self) -> None:
        """Sum the workers' counters into the main process's listener, target and group objects."""
        for i, (_, lst) in enumerate(self.listeners):
            total: dict[str, int] = {}
            tls: dict[str, int] = {}
            opened = handshaking = 0
            for w in self._workers:
                ls = w.stats.get("listeners", [])
                if i < len(ls):
                    for k, v in ls[i]["counters"].items():
                        total[k] = total.get(k, 0) + v
                    for k, v in ls[i].get("tls", {}).items():
                        tls[k] = tls.get(k, 0) + v
                    opened += ls[i]["open"]
                    handshaking += ls[i].get("handshaking", 0)
            for k, v in total.items():
                setattr(lst.counters, k, v)
            lst.open = opened
            if lst.tls is not None:
                lst.tls.counters.set_from(tls)
                lst.tls.handshakes.total = handshaking
        for gname, g in self.groups.items():
            for b in g.backends.values():
                vals: list[float] = [0] * len(b.stats_row())
                for w in self._workers:
                    row = w.stats.get("targets", {}).get(gname, {}).get(b.id)
                    if row and len(row) == len(vals):
                        vals = [a + x for a, x in zip(vals, row, strict=True)]
                b.set_stats_row(vals)
            gc: dict[str, int] = {}
            for w in self._workers:
                for k, v in w.stats.get("groups", {}).get(gname, {}).items():
                    gc[k] = gc.get(k, 0) + v
            for k, v in gc.items():
                setattr(g.counters, k, v)

    def status(self) -> list[dict[str, Any]]:
        out = []
        for w in self._workers:
            out.append({
                "worker": w.index + 1,
                "pid": w.proc.pid if w.proc else None,
                "ready": w.ready.is_set(),
                "restarts": w.restarts,
                "applied_version": w.applied,
                "connections": sum(ls["counters"]["connections"] for ls in w.stats.get("listeners", [])),
                "requests": sum(ls["counters"]["requests"] for ls in w.stats.get("listeners", [])),
            })
        return out

    async def stop(self, drain_timeout: float) -> int:
        """Workers stop accepting and drain; returns how many connections were cut (as reported)."""
        self._stopping = True
        for w in self._workers:
            self._send(w, {"op": "stop", "timeout": drain_timeout})
        for w in self._workers:
            if w.proc is None:
                continue
            try:
                await asyncio.wait_for(_wait(w.proc), drain_timeout + 3)
            except TimeoutError:
                w.proc.kill()
                await _wait(w.proc)
            if w.writer is not None:
                w.writer.close()
            if w.task is not None:
                w.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await w.task
        for s in self._reserved:
            s.close()
        return 0


async def _wait(proc: subprocess.Popen[bytes]) -> int:
    """Wait for a child's exit without a thread (a pidfd on the loop)."""
    if proc.returncode is not None:
        return proc.returncode
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    fd = os.pidfd_open(proc.pid)

    def exited() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, exited)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return proc.wait()


def _settings_dict(s: ProxySettings | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {k: getattr(s, k) for k in ("connect_timeout", "response_timeout", "idle_timeout", "header_timeout",
                                        "request_timeout", "tunnel_timeout", "upstream_idle_timeout", "replay_limit")}


# --------------------------------------------------------------------------- worker side


class WorkerState:
    """One worker process: its groups, listeners and control channel."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.groups: dict[str, BackendGroup] = {}
        self.listeners: list[AnyListener] = []
        self.version = 0
        self.stop = asyncio.Event()
        self.drain_timeout = 10.0
        self.send: Callable[[dict[str, Any]], None] = lambda msg: None
        self.detectors: dict[str, OutlierDetector] = {}
        self.spec: Spec | None = None
        self.base_dir = Path.cwd()
        self.state_dir = Path.cwd()

    async def setup(self, msg: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        spec = Spec.model_validate(msg["spec"])
        for name, tg in spec.target_groups.items():
            g = BackendGroup.from_spec(name, tg, clock=loop.time)
            for t in msg["targets"][name]:
                g.add(Backend(t["id"], t["host"], t["port"], weight=t["weight"]))
            self.groups[name] = g
        for name, ids in msg["draining"].items():
            for tid in ids:
                self.groups[name].backends[tid].draining = True
        for name, ids in msg["serving"].items():
            self.groups[name].set_serving(ids)
        for name, tg in spec.target_groups.items():
            policy = outlier_policy(tg)
            if policy is not None:
                self._watch_outcomes(name, OutlierDetector(len(self.groups[name].backends), policy))
        settings = ProxySettings(**msg["settings"]) if msg.get("settings") else None
        self.spec = spec
        self.base_dir = Path(msg.get("base_dir") or Path.cwd())
        self.state_dir = Path(msg.get("state_dir") or self.base_dir)
        for ls, (host, port) in zip(spec.listeners, msg["listeners"], strict=True):
            tls = self._tls(ls, f"{host}:{port}") if ls.tls else None
            lst = make_listener(ls, self.groups, settings, tls=tls)
            await lst.start(host, port, reuse_port=True)
            self.listeners.append(lst)
        self.version = msg["version"]

    def _secret(self, ls: ListenerSpec) -> bytes | None:
        if ls.passthrough or not ls.session_tickets.enabled:
            return None
        return ticket_secret(ls, self.base_dir, self.state_dir)  # the same secret as every worker's

    def _tls(self, ls: ListenerSpec, name: str) -> TlsServing:
        return TlsServing(ls, self.base_dir, name=name, ticket_secret=self._secret(ls))

    def reload_tls(self, index: int, data: dict[str, Any]) -> None:
        """Read listener ``index``'s TLS files again (the main process checked them); a failure
        here (a file changed again meanwhile) keeps what runs, and is logged."""
        ls = ListenerSpec.model_validate(data)
        tls = getattr(self.listeners[index], "tls", None)
        if not isinstance(tls, TlsServing):
            return
        try:
            secret = self._secret(ls)
            for change in tls.apply(ls, tls.prepare(ls, self.base_dir, secret), secret):
                log.info("worker %d: %s", self.index, change)
        except CertificateError as exc:
            log.error("worker %d: tls reload of listeners.%d refused, the running certificates stay: %s",
                      self.index, index, exc)

    def _watch_outcomes(self, name: str, det: OutlierDetector) -> None:
        """Passive detection in this worker: eject at once here, and tell the main process."""
        g = self.groups[name]
        self.detectors[name] = det
        det.may_eject = lambda i: any(b.index != i for b in g.serving)  # never the last one serving
        g.observe = OutcomeSink(det, functools.partial(self._ejected, name))

    def _ejected(self, name: str, e: Ejection) -> None:
        g = self.groups[name]
        b = next(b for b in g.backends.values() if b.index == e.index)
        g.set_serving([x.id for x in g.serving if x is not b])
        self.send({"op": "eject", "group": name, "id": b.id, "reason": e.reason, "cause": e.cause})
        if e.cause in ("timeout", "latency"):
            asyncio.get_running_loop().call_soon(self._rescue, b)

    def _rescue(self, b: Backend) -> None:
        for lst in self.listeners:
            lst.rescue(b)

    def sweep(self, now: float) -> None:
        """Latency outliers (judged on this worker's traffic) and the ends of local ejections."""
        for name, det in self.detectors.items():
            ejections, _ = det.sweep(now)
            for e in ejections:
                self._ejected(name, e)

    def apply(self, msg: dict[str, Any]) -> None:
        op = msg["op"]
        g = self.groups.get(msg.get("group", ""))
        if op == "serving" and g is not None:
            g.set_serving(msg["ids"])
            det = self.detectors.get(g.name)
            if det is not None:  # the main process decides: whoever it says serves is not ejected here
                for tid in msg["ids"]:
                    det.reinstate(g.backends[tid].index, asyncio.get_running_loop().time())
        elif op == "draining" and g is not None:
            g.set_draining(msg["id"], msg["on"])
        elif op == "move" and g is not None:
            g.backends[msg["id"]].move_to(msg["host"], msg["port"])
        elif op == "close_idle" and g is not None:
            g.backends[msg["id"]].close_idle()
        elif op == "cut" and g is not None:
            b = g.backends[msg["id"]]
            for lst in self.listeners:
                lst.cut(b)
        elif op == "tls_reload":
            self.reload_tls(int(msg["index"]), msg["listener"])
        elif op == "stop":
            self.drain_timeout = float(msg.get("timeout", 10.0))
            self.stop.set()
        self.version = max(self.version, msg.get("version", self.version))

    def stats(self) -> dict[str, Any]:
        return {
            "op": "stats",
            "version": self.version,
            "listeners": [_listener_stats(lst) for lst in self.listeners],
            "targets": {
                name: {b.id: b.stats_row() for b in g.backends.values()}
                for name, g in self.groups.items()
            },
            "groups": {
                name: g.counters.as_dict() for name, g in self.groups.items()
            },
        }


def _listener_stats(lst: AnyListener) -> dict[str, Any]:
    out: dict[str, Any] = {"counters": lst.counters.as_dict(), "open": len(lst.clients)}
    tls = lst.tls
    if isinstance(tls, TlsServing):
        out["tls"] = tls.counters.as_dict()
        out["handshaking"] = tls.handshakes.total
    return out


async def worker_main(fd: int, index: int, on_ready: Callable[[], None] | None = None) -> int:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    state = WorkerState(index)
    line = await reader.readline()
    if not line:
        return 1
    await state.setup(json.loads(line))

    def send(msg: dict[str, Any]) -> None:
        if not writer.is_closing():
            writer.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")

    state.send = send

    send({"op": "ready", "pid": os.getpid()})
    if on_ready:
        on_ready()

    async def control() -> None:
        while not state.stop.is_set():
            line = await reader.readline()
            if not line:
                state.stop.set()  # the main process is gone
                state.drain_timeout = 1.0
                return
            state.apply(json.loads(line))
            send(state.stats())  # acknowledges the version at once

    async def report() -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            send(state.stats())

    async def sweep() -> None:
        while state.detectors:
            await asyncio.sleep(0.05)
            state.sweep(asyncio.get_running_loop().time())

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, state.stop.set)
    tasks = [loop.create_task(control()), loop.create_task(report()), loop.create_task(sweep())]
    await state.stop.wait()
    await asyncio.gather(*(lst.drain(state.drain_timeout) for lst in state.listeners))
    send(state.stats())
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for g in state.groups.values():
        for b in g.backends.values():
            b.close_idle()
    with contextlib.suppress(Exception):
        await writer.drain()
    writer.close()
    return 0


def main(argv: list[str] | None = None) -> None:
    from fivenines.proxy import aio

    args = argv if argv is not None else sys.argv[1:]
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s worker %(levelname)s %(message)s")
    sys.exit(aio.run(worker_main(int(args[0]), int(args[1]) if len(args) > 1 else 1)))


if __name__ == "__main__":  # pragma: no cover - run as a process
    main()
