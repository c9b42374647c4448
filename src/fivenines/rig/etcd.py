"""Real etcd members (Debian's etcd-server) inside rig hosts, tuned for second-scale leases.

etcd grants no lease shorter than 1.5 x its election timeout (rounded up to whole
seconds): with the default 1000 ms that is 2 s. The rig's members run with a 50 ms
heartbeat and a 500 ms election timeout, so a lease of 1 s is granted as asked and a
2 s lease is far from etcd's own limits. Data lives in the rig's scratch folder on
tmpfs when there is one (fsync is then free, as on a fast disk).
"""

from __future__ import annotations

import json
import math
import shutil
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from subprocess import Popen
from typing import Any

from fivenines.rig.netns import Rig, RigError

CLIENT_PORT, PEER_PORT = 2379, 2380


def min_lease_ttl(election_timeout_ms: int) -> int:
    """The shortest lease etcd grants with this election timeout.

    >>> min_lease_ttl(1000), min_lease_ttl(500)
    (2, 1)
    """
    return max(1, math.ceil(1.5 * election_timeout_ms / 1000))


class EtcdInRig:
    """One or three etcd members, one per rig host; ``endpoints`` are their client URLs."""

    def __init__(self, rig: Rig, hosts: Sequence[str], data_dir: Path, *, heartbeat_ms: int = 50,
                 election_ms: int = 500, binary: str | None = None) -> None:
        if len(hosts) not in (1, 3, 5):
            raise RigError(f"an etcd cluster has 1, 3 or 5 members, not {len(hosts)}")
        self.rig = rig
        self.binary = binary or shutil.which("etcd") or "/usr/bin/etcd"
        self.hosts = list(hosts)
        self.heartbeat_ms, self.election_ms = heartbeat_ms, election_ms
        self.data_dir = data_dir
        self.endpoints = [f"http://{rig.host(h).address}:{CLIENT_PORT}" for h in self.hosts]
        self.procs: dict[str, Popen[Any]] = {}
        cluster = ",".join(f"m-{h}=http://{rig.host(h).address}:{PEER_PORT}" for h in self.hosts)
        for h in self.hosts:
            self.start(h, cluster)
        self.wait_healthy()

    def __repr__(self) -> str:
        return f"<EtcdInRig {' '.join(self.endpoints)} election={self.election_ms}ms>"

    @property
    def min_ttl(self) -> int:
        return min_lease_ttl(self.election_ms)

    def start(self, host: str, cluster: str | None = None) -> None:
        addr = self.rig.host(host).address
        cluster = cluster or ",".join(f"m-{h}=http://{self.rig.host(h).address}:{PEER_PORT}" for h in self.hosts)
        data = self.data_dir / f"etcd-{host}"
        data.mkdir(parents=True, exist_ok=True)
        self.procs[host] = self.rig.popen(host, [
            self.binary, "--name", f"m-{host}", "--data-dir", str(data),
            "--listen-client-urls", f"http://{addr}:{CLIENT_PORT}",
            "--advertise-client-urls", f"http://{addr}:{CLIENT_PORT}",
            "--listen-peer-urls", f"http://{addr}:{PEER_PORT}",
            "--initial-advertise-peer-urls", f"http://{addr}:{PEER_PORT}",
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", self.rig.prefix,
            "--heartbeat-interval", str(self.heartbeat_ms), "--election-timeout", str(self.election_ms),
        ], log=self.data_dir / f"etcd-{host}.log")

    def healthy(self, host: str, via: str | None = None) -> bool:
        """Member ``host`` answers healthy, asked from its own namespace or from host ``via``."""
        url = f"http://{self.rig.host(host).address}:{CLIENT_PORT}/health"

        def get() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=0.5) as r:
                    return json.loads(r.read()).get("health") in ("true", True)
            except OSError:
                return False

        return self.rig.call_in(via or host, get)

    def wait_healthy(self, timeout: float = 20.0, *, via: Sequence[str] = ()) -> None:
        """Every member healthy, asked from its own namespace and from every host in ``via`` (the
        nodes about to start: their preflight needs etcd to answer from where they run)."""
        deadline = time.monotonic() + timeout
        while not all(self.healthy(h, v) for h in self.hosts for v in [None, *via]):
            for h, p in self.procs.items():
                if p.poll() is not None:
                    log = (self.data_dir / f"etcd-{h}.log").read_text(errors="replace")[-2000:]
                    raise RigError(f"etcd on {h} exited {p.returncode}:\n{log}")
            if time.monotonic() > deadline:
                failing = [f"{h} from {v or h}" for h in self.hosts for v in [None, *via] if not self.healthy(h, v)]
                raise RigError(f"etcd not healthy after {timeout:g}s: {self}: {', '.join(failing) or 'now healthy'}")
            time.sleep(0.05)
