"""``make cluster-demo``: a two-node fivenines cluster with a floating address, on this machine.

Builds the namespace rig (:mod:`fivenines.rig`: hosts ``etcd``, ``a``, ``b``, ``client`` on a
bridge of their own, nothing in the machine's own network), starts etcd and ``fivenines up
SPEC --node a`` / ``--node b`` (demo instances placed across both), and opens ports on this
machine's loopback into the rig (:class:`~fivenines.rig.forward.Forward`): the VIP, as the
client host sees it, and each node's dashboard. Then it follows who holds the VIP and takes
commands: ``k`` kills the holder (``kill -9`` of its fivenines and instances), ``s`` starts
the killed nodes again, ``q`` (or Ctrl-C) stops; everything it made is removed on the way out.
Needs root (network namespaces).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from fivenines.cli.admin_client import AdminClient, AdminError
from fivenines.errors import ProviderError
from fivenines.rig import Rig, unavailable
from fivenines.rig.etcd import EtcdInRig
from fivenines.rig.forward import Forward

NODES = ("a", "b")
PORT = 8080
VIP = "10.199.0.100"


def demo_spec(rig: Rig, etcd: EtcdInRig) -> dict[str, Any]:
    return {
        "name": "cluster-demo",
        "admin": {"listen": "127.0.0.1:9900"},  # in each node's namespace: one each
        "listeners": [{"port": PORT, "default_target_group": "web"}],
        "target_groups": {"web": {
            "instances": {"command": [sys.executable, "-m", "fivenines.demo", "--host", "{host}", "--port", "{port}"],
                          "count": 2, "standby": 1, "ports": "9101-9103", "stop_timeout": "2s"},
            "health_check": {"path": "/health", "interval": "500ms", "timeout": "300ms", "startup_grace": "3s"},
            "retries": {"attempts": 3},
        }},
        "cluster": {"nodes": [{"name": n, "address": rig.host(n).address} for n in NODES],
                    "vip": f"{VIP}/24", "interface": "eth0", "etcd": etcd.endpoints, "lease_ttl": "2s"},
    }


class NodeStartError(ProviderError):
    """``fivenines up SPEC --node NAME`` exited or was not ready in time (the message has its log's tail)."""


class Demo:
    """Every node of the cluster as ``fivenines up SPEC --node NAME`` in its rig host, and a way in to
    each one's admin API (also used by ``fivenines chaos`` on a cluster)."""

    def __init__(self, rig: Rig, spec_path: Path, *, startup_timeout: float = 30.0) -> None:
        self.rig, self.spec_path = rig, spec_path
        self.startup_timeout = startup_timeout
        self.procs: dict[str, subprocess.Popen[Any]] = {}
        self.admin: dict[str, Forward] = {}

    def log(self, node: str) -> Path:
        return self.rig.scratch / f"node-{node}.log"

    def start(self, node: str) -> None:
        """Start ``node`` and wait until it is ready (NodeStartError otherwise)."""
        ready = self.rig.scratch / f"ready-{node}.json"
        ready.unlink(missing_ok=True)
        # a spec's ``python`` (an instance's command) is this Python, as for `fivenines up` from this venv
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)])
        self.procs[node] = self.rig.popen(node, [sys.executable, "-m", "fivenines", "up", str(self.spec_path),
                                                 "--node", node, "--ready-file", str(ready)],
                                          log=self.log(node), env={**os.environ, "PATH": path})
        deadline = time.monotonic() + self.startup_timeout
        while not ready.exists():
            if self.procs[node].poll() is not None or time.monotonic() > deadline:
                log = self.log(node).read_text(errors="replace")[-3000:]
                raise NodeStartError(f"fivenines up --node {node} did not start:\n{log}")
            time.sleep(0.1)
        admin = json.loads(ready.read_text())["admin"]  # http://127.0.0.1:PORT inside the node's host
        port = int(str(admin).rsplit(":", 1)[1])
        if node in self.admin and self.admin[node].target_port != port:
            self.admin.pop(node).close()
        if node not in self.admin:
            self.admin[node] = Forward(self.rig, node, "127.0.0.1", port)

    def status(self, node: str) -> dict[str, Any] | None:
        if node not in self.admin or self.procs[node].poll() is not None:
            return None
        try:
            return AdminClient(self.admin[node].url, timeout=1.0).status()
        except AdminError:
            return None

    def holder(self) -> tuple[str | None, str]:
        for n in NODES:
            st = self.status(n)
            if st is not None and st.get("cluster", {}).get("holder"):
                c = st["cluster"]
                return c["holder"], f"fencing revision {c.get('fencing_revision')}"
        return None, ""


def run() -> int:
    why = unavailable()
    if why:
        print(f"make cluster-demo: {why}.\nIt builds network namespaces: run it as root (sudo make cluster-demo).",
              file=sys.stderr)
        return 2
    if shutil.which("etcd") is None and not os.path.exists("/usr/bin/etcd"):
        print("make cluster-demo: etcd is not installed (Debian package etcd-server; scripts/install-test-deps "
              "installs it).", file=sys.stderr)
        return 2
    stop = False

    def on_signal(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    with Rig(["etcd", *NODES, "client"]) as rig:
        print(f"building the rig {rig.prefix}: etcd, nodes {', '.join(NODES)}, a client …", flush=True)
        etcd = EtcdInRig(rig, ["etcd"], rig.scratch)
        spec_path = rig.scratch / "fivenines.yaml"
        spec_path.write_text(yaml.safe_dump(demo_spec(rig, etcd), sort_keys=False))
        demo = Demo(rig, spec_path)
        try:
            for n in NODES:
                demo.start(n)
        except NodeStartError as exc:
            print(f"make cluster-demo: {exc}", file=sys.stderr)
            return 1
        vip = Forward(rig, "client", VIP, PORT)
        ns = {h: rig.host(h).netns for h in rig.hosts}
        print(f"""
fivenines cluster demo: nodes {', '.join(f'{n} ({rig.host(n).address})' for n in NODES)}, VIP {VIP}, etcd \
{rig.host('etcd').address}, each in a network namespace of its own ({rig.prefix}-*).

  service via the VIP   {vip.url}/        (what the client host sees at http://{VIP}:{PORT}/)""")
        for n in NODES:
            print(f"  dashboard of {n}        {demo.admin[n].url}/")
        print(f"""  status                fivenines status --admin {demo.admin['a'].url}
  inside the rig        sudo ip netns exec {ns['client']} curl -s http://{VIP}:{PORT}/
                        sudo ip netns exec {ns['a']} ip addr show eth0     (the VIP is on the holder's eth0)
  the spec              {spec_path}
  logs                  {rig.scratch}/node-a.log, node-b.log, .fivenines/cluster-demo/node-*/logs/

  k + Enter: kill -9 the VIP holder (its fivenines and instances); s + Enter: start the killed nodes again;
  q + Enter or Ctrl-C: stop and remove everything.
""", flush=True)
        last: tuple[str | None, str] = (None, "")
        commands = True  # until stdin ends
        try:
            while not stop:
                now = demo.holder()
                if now[0] != last[0]:
                    print(f"{time.strftime('%H:%M:%S')} VIP held by {now[0] or 'nobody'} {now[1]}", flush=True)
                    last = now
                ready, _, _ = select.select([sys.stdin] if commands else [], [], [], 0.5)
                if not ready:
                    continue
                line = sys.stdin.readline()
                commands = line != ""
                cmd = line.strip().lower()
                if cmd == "q":
                    break
                if cmd == "k" and now[0]:
                    print(f"killing node {now[0]} (kill -9 of every process in {ns[now[0]]})", flush=True)
                    rig.kill(now[0])
                elif cmd == "s":
                    for n in NODES:
                        if demo.procs[n].poll() is not None:
                            print(f"starting node {n} again", flush=True)
                            try:
                                demo.start(n)
                            except NodeStartError as exc:
                                print(exc, flush=True)
        except KeyboardInterrupt:
            pass
        print("stopping: removing the rig's namespaces and processes", flush=True)
        vip.close()
        for f in demo.admin.values():
            f.close()
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
