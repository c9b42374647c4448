"""One cluster node's floating-address part alone: ``python -m fivenines.cluster_node SPEC --node NAME``.

Runs just the election runner and the VIP (``coordination: etcd``) or keepalived
(``coordination: vrrp``) for one node of the spec's ``cluster:``, with no balancer and
no instances: what the cluster tests (and the first half of ``make cluster-demo``)
need before ``fivenines up --node`` does it all. Writes its status as JSON to
``--status-file`` on every change; exits 2 on a bad spec or node; SIGTERM resigns
(drops the VIP, revokes the lease) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from fivenines.core.election import Settings
from fivenines.errors import FivenineError, SpecError
from fivenines.runtime.cluster import ElectionRunner, leader_key
from fivenines.runtime.keepalived import Keepalived, MasterFence, config_for, node_fence_timeout
from fivenines.runtime.lease import Etcd
from fivenines.runtime.vip import Vip
from fivenines.spec import ClusterSpec, load_spec, node_error

log = logging.getLogger("fivenines.cluster")


def write_status(path: Path | None, status: dict[str, Any]) -> None:
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(status))
    os.replace(tmp, path)


async def run(cluster: ClusterSpec, service: str, node: str, status_file: Path | None, workdir: Path) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if cluster.mode == "etcd":
        assert cluster.etcd
        ttl = int(cluster.lease_ttl)
        runner = ElectionRunner(
            Etcd(cluster.etcd, timeout=max(0.2, ttl / 6)), Settings(node, ttl),
            leader_key(cluster.key_prefix, service), Vip(cluster.vip, cluster.interface),
            on_change=lambda st: write_status(status_file, {"mode": "etcd", **st}))
        try:
            runner.start()
        except FivenineError as exc:
            print(f"cannot fence the VIP {cluster.vip} on {cluster.interface}: {exc}", file=sys.stderr)
            return 2
        write_status(status_file, {"mode": "etcd", **runner.status()})
        await stop.wait()
        await runner.stop()
        write_status(status_file, {"mode": "etcd", **runner.status()})
        return 0
    # keepalived moves the address; the fence keeps a dead or frozen master silent (runtime/keepalived.py)
    ka: Keepalived | None = None

    def on_state(state: str) -> None:
        if ka is not None:
            write_status(status_file, {"node": node, **ka.status()})

    fence = MasterFence(str(ipaddress.IPv4Interface(cluster.vip).ip), cluster.interface,
                        node_fence_timeout(cluster, node))
    ka = Keepalived(config_for(cluster, node, workdir), workdir, on_state=on_state, fence=fence)
    try:
        await ka.start()
    except FivenineError as exc:
        print(f"cannot fence the VIP {cluster.vip} on {cluster.interface}: {exc}", file=sys.stderr)
        return 2
    write_status(status_file, {"node": node, **ka.status()})
    await stop.wait()
    await ka.stop()
    write_status(status_file, {"node": node, **ka.status(), "state": "STOP", "holds_vip": False})
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fivenines.cluster_node", description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument("--node", required=True)
    ap.add_argument("--status-file", type=Path)
    ap.add_argument("--workdir", type=Path, help="keepalived's files (default: beside the status file)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    err = node_error(spec, args.node)
    if err is not None or spec.cluster is None:
        print(f"{args.spec}: {err}", file=sys.stderr)
        return 2
    workdir = args.workdir or (args.status_file.parent if args.status_file else Path.cwd()) / f"node-{args.node}"
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(spec.cluster, spec.name, args.node, args.status_file, workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
