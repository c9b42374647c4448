"""Helpers for replicated-store tests: a blocking RESP client, redis-server and etcd processes, specs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from fivenines.runtime.redis import ErrorReply, RespParser, encode_command
from fivenines.runtime.supervisor import die_with_parent
from tests.helpers import Fivenines, free_port, require_binary, stop_process, wait_until


class SyncRedis:
    """A blocking RESP client for tests (one connection)."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.parser = RespParser()
        self.pending: list[Any] = []

    def cmd(self, *args: Any) -> Any:
        self.sock.sendall(encode_command(*args))
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the server")
            self.pending.extend(self.parser.feed(data))
        reply = self.pending.pop(0)
        if isinstance(reply, ErrorReply):
            raise RuntimeError(str(reply))
        return reply

    def info(self, section: str = "replication") -> dict[str, str]:
        text = self.cmd("INFO", section).decode()
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SyncRedis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def redis(address: str, timeout: float = 5.0) -> SyncRedis:
    host, port = address.rsplit(":", 1)
    return SyncRedis(host, int(port), timeout)


def role_of(address: str) -> str:
    """``master`` / ``slave`` as the server says, or ``down``."""
    try:
        with redis(address, 1.0) as r:
            return r.info()["role"]
    except (OSError, RuntimeError):
        return "down"


def redis_spec(name: str = "r", standby: int = 2, durability: str = "sync", interval: str = "200ms",
               timeout: str = "150ms", **replicated: Any) -> dict[str, Any]:
    binary = require_binary("redis-server")
    return {
        "name": name,
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": [{"port": 0, "protocol": "tcp", "default_target_group": "cache"}],
        "target_groups": {
            "cache": {
                "instances": {
                    "command": [binary, "--port", "{port}", "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no"],
                    "count": 1,
                    "standby": standby,
                    "stop_timeout": "2s",
                    "restart": {"initial_delay": "300ms", "jitter": 0},
                },
                "health_check": {"interval": interval, "timeout": timeout, "healthy_threshold": 2,
                                 "unhealthy_threshold": 2},
                "replicated": {"kind": "redis", "durability": durability, **replicated},
            }
        },
    }


def group(f: Fivenines, name: str = "cache") -> dict[str, Any]:
    return dict(f.status()["target_groups"][name])


def published(f: Fivenines, name: str = "cache") -> dict[str, Any] | None:
    """The target fivenines routes writes to now (from status), or None."""
    g = group(f, name)
    if not g["serving"]:
        return None
    return next(t for t in g["targets"] if t["id"] == g["serving"][0])


def wait_settled(f: Fivenines, timeout: float = 15.0, name: str = "cache") -> dict[str, Any]:
    """Wait for: a published primary, every other target a healthy replica of it, link up, caught up."""

    def ok() -> dict[str, Any] | None:
        g = group(f, name)
        if not g["serving"]:
            return None
        p = next(t for t in g["targets"] if t["id"] == g["serving"][0])
        for t in g["targets"]:
            r = t["replication"]
            if t["id"] == p["id"]:
                continue
            if (t["state"] != "healthy" or r["reported_role"] != "replica" or r["following"] != p["address"]
                    or not r["link_up"]):
                return None
        with redis(p["address"], 2.0) as c:
            if c.cmd("WAIT", len(g["targets"]) - 1, 500) < len(g["targets"]) - 1:
                return None
        return p

    return wait_until(ok, timeout, 0.05, what="replicated group settled")


def events(f: Fivenines, kind: str | None = None) -> list[dict[str, Any]]:
    evs = json.loads(urllib.request.urlopen(f"{f.admin}/events?limit=1000", timeout=5).read())["events"]
    return [e for e in evs if kind is None or e["kind"] == kind]


def admin_post(f: Fivenines, path: str, token: str | None = None) -> tuple[int, Any]:
    import urllib.error

    if token is None:
        token = (Path(f.spec_path).parent / "state" / "admin.token").read_text().strip()
    req = urllib.request.Request(f"{f.admin}{path}", method="POST", data=b"",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class RedisServer:
    """A redis-server fivenines does not start (for ``targets:`` groups)."""

    def __init__(self, tmp: Path, *args: str) -> None:
        binary = require_binary("redis-server")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dir = tmp / f"redis-{self.port}"
        self.dir.mkdir(parents=True)
        self.args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                     "--dir", str(self.dir), "--repl-diskless-sync-delay", "0", *args]
        self.log = (self.dir / "log").open("a")
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT,
                                preexec_fn=die_with_parent(os.getpid()))
        wait_until(lambda: role_of(self.address) != "down", 10, what=f"redis on {self.port}")
        return proc

    def restart(self) -> None:
        self.stop()
        self.proc = self._start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.stop()
        self.log.close()


class EtcdServer:
    """A real etcd on loopback (Debian's etcd-server), data in a temporary folder."""

    def __init__(self, tmp: Path) -> None:
        binary = require_binary("etcd")
        self.client_port, peer = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.dir = tmp / "etcd"
        self.log = (tmp / "etcd.log").open("w")
        self.proc = subprocess.Popen(
            [binary, "--data-dir", str(self.dir), "--name", "t",
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"t=http://127.0.0.1:{peer}"],
            stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent(os.getpid()),
        )
        wait_until(self._healthy, 20, 0.05, what="etcd healthy")

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"etcd exited {self.proc.returncode}")
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                return bool(json.loads(r.read()).get("health") in ("true", True))
        except OSError:
            return False

    def close(self) -> None:
        stop_process(self.proc)
        self.log.close()


# --------------------------------------------------------------------------- backups (docs/backup.md)


def backup_spec(**backup: Any) -> dict[str, Any]:
    """A replicated redis group ``cache`` (1 primary, 2 replicas, sync) with ``backup:`` to ./backups."""
    spec = redis_spec(standby=2, durability="sync")
    inst = spec["target_groups"]["cache"]["instances"]
    inst["command"] += ["--repl-ping-replica-period", "3600"]  # offsets move only with writes (the drill test)
    spec["target_groups"]["cache"]["replicated"]["backup"] = {"to": "backups", "schedule": "1h", **backup}
    return spec


def write(address: str, keys: dict[str, str]) -> None:
    """Write and confirm each write with WAIT 1: acknowledged writes."""
    with redis(address) as c:
        for k, v in keys.items():
            c.cmd("SET", k, v)
        assert c.cmd("WAIT", 1, 2000) >= 1


def dump(address: str) -> dict[str, str]:
    """Every key and value of a server (small test datasets)."""
    with redis(address) as c:
        keys = c.cmd("KEYS", "*")
        if not keys:
            return {}
        values = c.cmd("MGET", *keys)
        return {k.decode(): v.decode() for k, v in zip(keys, values, strict=True)}
