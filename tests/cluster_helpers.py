"""A small cluster in the namespace rig: etcd, node processes running the VIP part, demo servers, a client."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from fivenines.rig import Rig
from fivenines.runtime.vip import fence_rules
from tests.helpers import PY, wait_until, write_spec

VIP = "10.199.0.100"


def reset_host(rig: Rig, host: str) -> None:
    """Between tests on one rig: every fault undone, processes killed, neighbours, VIP and fence gone
    (:meth:`Rig.reset`: the next test's node got EHOSTUNREACH from etcd, or a silenced VIP, without)."""
    rig.reset(host, VIP)


def leave_closed_fence(rig: Rig, host: str) -> None:
    """What a node killed in etcd mode leaves on ``host``: the VIP's fence, closed."""
    rig.run(host, ["nft", "-f", "-"], input=fence_rules(VIP))


def has_address(rig: Rig, host: str) -> bool:
    """``host`` has the VIP on an interface (whether its fence lets anything through or not)."""
    sock = rig.route_socket(host)
    try:
        return any(a.address == VIP for a in sock.addresses())
    finally:
        sock.close()


def cluster_spec(rig: Rig, name: str, nodes: list[str], **cluster: Any) -> dict[str, Any]:
    return {
        "name": name,
        "listeners": [{"port": 0, "default_target_group": "web"}],
        "target_groups": {"web": {"targets": ["127.0.0.1:9"]}},
        "cluster": {
            "nodes": [{"name": n, "address": rig.hosts[n].address} for n in nodes],
            "vip": f"{VIP}/24",
            "interface": "eth0",
            **cluster,
        },
    }


def spec_in(workdir: Path, spec: dict[str, Any]) -> Path:
    """``spec`` written as ``workdir/fivenines.yaml`` (the folder made), for every node to read."""
    workdir.mkdir(parents=True, exist_ok=True)
    return write_spec(workdir / "fivenines.yaml", spec)


class RigProcess:
    """A process of the system under test in a rig host, logging to ``log``."""

    rig: Rig
    host: str
    log: Path
    tail_lines = 40

    def tail(self, n: int | None = None) -> str:
        """The last lines of its log (shown when a test failed)."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-(n or self.tail_lines):])
        except OSError:
            return ""


class Node(RigProcess):
    """``python -m fivenines.cluster_node`` inside a rig host."""

    def __init__(self, rig: Rig, host: str, spec_path: Path, workdir: Path) -> None:
        self.rig, self.host = rig, host
        self.status_file = workdir / f"status-{host}.json"
        self.log = workdir / f"node-{host}.log"
        self.proc: subprocess.Popen[Any] = rig.popen(
            host, [PY, "-m", "fivenines.cluster_node", str(spec_path), "--node", host,
                   "--status-file", str(self.status_file), "--workdir", str(workdir / f"work-{host}")],
            log=self.log)

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.status_file.read_text()))
        except (OSError, ValueError):
            return {}


def start_nodes(rig: Rig, spec: dict[str, Any], hosts: list[str], workdir: Path) -> dict[str, Node]:
    """``spec`` written to ``workdir``, a :class:`Node` started on each of ``hosts``."""
    path = spec_in(workdir, spec)
    return {h: Node(rig, h, path, workdir) for h in hosts}


def serve_id(rig: Rig, host: str, workdir: Path, port: int = 8080) -> int:
    """A demo server on every address of ``host`` (the VIP too, once it has it) answering its host name.

    The same port on every host (the namespaces are the test's own: nothing else binds there)."""
    log = workdir / f"demo-{host}.log"
    rig.popen(host, [PY, "-m", "fivenines.demo", "--host", "0.0.0.0", "--port", str(port), "--id", host], log=log)
    text = wait_until(lambda: "listening on" in (t := log.read_text()) and t, 10, what=f"demo on {host}")
    m = re.search(r"listening on [\d.]+:(\d+)", text)
    assert m
    return int(m.group(1))


def ask_vip(rig: Rig, port: int, timeout: float = 0.3) -> str | None:
    """The host answering on the VIP from the client, or None."""
    import http.client

    def get() -> str | None:
        c = http.client.HTTPConnection(VIP, port, timeout=timeout)
        try:
            c.request("GET", "/")
            body = c.getresponse().read()
        except OSError:
            return None
        finally:
            c.close()
        m = re.match(rb"instance ([a-z0-9]+) ", body)
        return m.group(1).decode() if m else None

    return rig.call_in("client", get)


# --------------------------------------------------------------------------- whole nodes: fivenines up --node


def node_spec(rig: Rig, name: str, nodes: list[str], web: dict[str, Any], port: int = 8080,
              **cluster: Any) -> dict[str, Any]:
    """A cluster spec whose ``web`` group (``web``: count, standby, placement, ports ...) runs demo
    instances on the nodes' addresses, behind a listener on the VIP's ``port``."""
    group = {
        "algorithm": "round_robin",
        "instances": {"command": [PY, "-m", "fivenines.demo", "--host", "{host}", "--port", "{port}"],
                      "stop_timeout": "2s", **web},
        "health_check": {"path": "/health", "interval": "200ms", "timeout": "150ms",
                         "healthy_threshold": 2, "unhealthy_threshold": 2, "startup_grace": "3s"},
        "retries": {"attempts": 3},
    }
    spec = cluster_spec(rig, name, nodes, **cluster)
    spec["admin"] = {"listen": "127.0.0.1:0"}
    spec["listeners"] = [{"port": port, "default_target_group": "web"}]
    spec["target_groups"] = {"web": group}
    return spec


class UpNode(RigProcess):
    """``fivenines up SPEC --node HOST`` inside a rig host; its admin API reached from inside it."""

    tail_lines = 60

    def __init__(self, rig: Rig, host: str, spec_path: Path, workdir: Path) -> None:
        self.rig, self.host = rig, host
        self.ready = workdir / f"ready-{host}.json"
        self.ready.unlink(missing_ok=True)
        self.log = workdir / f"up-{host}.log"
        self.proc: subprocess.Popen[Any] = rig.popen(
            host, [PY, "-m", "fivenines", "up", str(spec_path), "--node", host, "--ready-file", str(self.ready)],
            log=self.log)

    def admin(self) -> str:
        def ready() -> Any:
            if self.proc.poll() is not None:
                raise AssertionError(f"fivenines up on {self.host} exited {self.proc.returncode}:\n{self.tail()}")
            return json.loads(self.ready.read_text())

        try:
            info = json.loads(self.ready.read_text())
        except (OSError, ValueError):
            info = wait_until(ready, 20, 0.05, what=f"{self.host} ready")
        return str(info["admin"])

    def call(self, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
        import urllib.error
        import urllib.request

        url = self.admin() + path

        def do() -> tuple[int, Any]:
            data = json.dumps(body).encode() if body is not None else None
            req = urllib.request.Request(url, data=data, method=method)
            if token:
                req.add_header("Authorization", f"Bearer {token}")
            if data is not None:
                req.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read() or b"null")

        return self.rig.call_in(self.host, do)

    def status(self) -> dict[str, Any]:
        code, data = self.call("GET", "/status")
        assert code == 200, data
        return dict(data)

    def targets(self) -> dict[str, dict[str, Any]]:
        return {t["id"]: t for g in self.status()["target_groups"].values() for t in g["targets"]}


def start_up_nodes(rig: Rig, spec: dict[str, Any], hosts: list[str], workdir: Path) -> dict[str, UpNode]:
    """``spec`` written to ``workdir``, an :class:`UpNode` started on each of ``hosts``."""
    path = spec_in(workdir, spec)
    return {h: UpNode(rig, h, path, workdir) for h in hosts}


class Load:
    """A client in a rig host asking ``address:port`` for ``/`` over and over (a new connection each
    time), recording ``(monotonic time, status or error name, instance id)``."""

    def __init__(self, rig: Rig, host: str, address: str, port: int, *, timeout: float = 0.5,
                 pace: float = 0.01) -> None:
        self.rig, self.host, self.address, self.port = rig, host, address, port
        self.timeout, self.pace = timeout, pace
        self.results: list[tuple[float, int | str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: rig.call_in(host, self._run, timeout=300), daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        import http.client

        while not self._stop.is_set():
            at = time.monotonic()
            c = http.client.HTTPConnection(self.address, self.port, timeout=self.timeout)
            try:
                c.request("GET", "/")
                r = c.getresponse()
                body = r.read()
                m = re.match(rb"instance (\S+) ", body)
                self.results.append((at, r.status, m.group(1).decode() if m else ""))
            except OSError as exc:
                self.results.append((at, type(exc).__name__, ""))
            finally:
                c.close()
            self._stop.wait(self.pace)  # pacing between requests, not synchronisation

    def answered(self, since: float = 0.0) -> list[tuple[float, int | str, str]]:
        """The requests sent after ``since`` that got an HTTP answer."""
        return [r for r in list(self.results) if r[0] >= since and isinstance(r[1], int)]

    def served_by(self, since: float = 0.0) -> set[str]:
        return {r[2] for r in self.answered(since) if r[1] == 200}

    def gap(self, since: float) -> float:
        """The longest time without a 200 (between the sending of two requests answered 200) that
        ends after ``since``: the outage a fault at ``since`` caused."""
        ok = [r[0] for r in list(self.results) if r[1] == 200]
        gaps = [b - a for a, b in itertools.pairwise(ok) if b >= since]
        return max(gaps, default=float("inf"))
