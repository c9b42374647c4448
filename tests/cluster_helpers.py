"""A small cluster in the namespace rig: etcd, node processes running the VIP part, demo servers, a client."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from fivenines.rig import Rig
from tests.helpers import PY, wait_until, write_spec

VIP = "10.199.0.100"


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


class Node:
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

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def start_nodes(rig: Rig, spec: dict[str, Any], hosts: list[str], workdir: Path) -> dict[str, Node]:
    workdir.mkdir(parents=True, exist_ok=True)
    path = write_spec(workdir / "fivenines.yaml", spec)
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
