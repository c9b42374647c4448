"""Test helpers: real processes on loopback, polling with deadlines (never sleep-as-sync)."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest
import yaml

from fivenines.accel import under_ci
from fivenines.runtime.supervisor import die_with_parent

T = TypeVar("T")
PY = sys.executable
IN_CI = under_ci()  # the one rule, shared with scripts/compile: CI set to 1, true or yes


def native_module(name: str, what: str) -> tuple[Any, Any]:
    """``fivenines.<name>``, a C module of the data plane (``accel.NATIVE``), and the
    ``pytestmark`` that skips a test module without it (from source, or where the build failed);
    under CI, where ``make test`` builds it, a missing build fails instead. ``what`` names it."""
    import importlib

    from fivenines import accel

    try:
        mod: Any = importlib.import_module(f"fivenines.{name}")
    except ImportError:
        mod = None
    if mod is None and IN_CI and not os.environ.get(accel.PURE_ENV):
        raise AssertionError(f"make test builds {what} (scripts/compile); not loaded: {accel.mode()}")
    return mod, pytest.mark.skipif(mod is None, reason=f"{what} is not loaded: {accel.mode()}")


def wait_until(pred: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Poll ``pred`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except Exception as exc:  # the thing polled may not be up yet
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}: last={last!r}")


def _missing(msg: str) -> NoReturn:
    """Something a test needs is not installed: fail under CI, skip elsewhere (at module level too)."""
    if IN_CI:
        pytest.fail(f"{msg} (required under CI)")
    pytest.skip(msg, allow_module_level=True)


def require_binary(name: str) -> str:
    """Path of a server binary the test needs. Missing: fail under CI, skip elsewhere."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None
    )
    if path is None:
        _missing(f"{name} is not installed (scripts/install-test-deps installs it)")
    return path


def require_module(name: str) -> Any:
    """A Python module the test needs (e.g. ``moto.server``), imported. Missing: fail under CI,
    skip elsewhere (at module level too)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        _missing(f"{name} cannot be imported ({exc}); make .venv/.installed-dev installs it")


def require_rig() -> None:
    """The namespace rig (root, Linux, ip, nft) can run here. Missing: fail under CI, skip elsewhere."""
    from fivenines.rig import unavailable

    require_binary("ip")
    require_binary("nft")
    why = unavailable()
    if why is not None:
        msg = f"{why}; run these tests as root (sudo .venv/bin/pytest ...)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Demo:
    """A demo backend process on a kernel-chosen port."""

    def __init__(self, instance_id: str = "demo", *args: str) -> None:
        self.proc = subprocess.Popen(
            [PY, "-m", "fivenines.demo", "--port", "0", "--id", instance_id, *args],
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent(os.getpid()),
        )
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        m = re.search(r"listening on ([\d.]+):(\d+)", line)
        if not m:
            self.proc.kill()
            raise AssertionError(f"demo did not start: {line!r}")
        self.host, self.port = m.group(1), int(m.group(2))
        self.address = f"{self.host}:{self.port}"
        self.id = instance_id

    def get(self, path: str) -> tuple[int, bytes]:
        return http_get(self.host, self.port, path)

    def stop(self) -> None:
        stop_process(self.proc)
        if self.proc.stderr:
            self.proc.stderr.close()


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Terminate ``proc`` (kill it if it takes over 5 s) and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def raw_exchange(host: str, port: int, data: bytes, timeout: float = 5.0, until_close: bool = True) -> bytes:
    """Send raw bytes; read until the server closes (or ``timeout``, or the first read unless ``until_close``)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
                if not until_close:
                    break
        except TimeoutError:
            pass
        return b"".join(chunks)


def http_get(host: str, port: int, path: str = "/", timeout: float = 5.0,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def https_get(host: str, port: int, ctx: ssl.SSLContext, path: str = "/", timeout: float = 5.0,
              headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    c = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
    try:
        c.request("GET", path, headers={"Host": "proxy.test", **(headers or {})})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def https_in_front(listener: Any, folder: Path, **listener_spec: Any) -> ssl.SSLContext:
    """Put TLS in front of an HTTP ``listener`` (not yet started), as ``fivenines up`` does for an
    https one, with a fresh certificate for proxy.test written to ``folder``; returns a client
    context that trusts it."""
    from fivenines.proxy.tls_serve import TlsServing, serve_https
    from fivenines.spec import ListenerSpec
    from tests.tls_helpers import issue, make_ca

    ca = make_ca()
    issue(ca, ["proxy.test", "127.0.0.1"]).write(folder, "proxy")
    ls = ListenerSpec.model_validate({"port": 0, "protocol": "https", "default_target_group": "web",
                                      "certificates": [{"cert": "proxy.pem", "key": "proxy.key"}], **listener_spec})
    serve_https(listener, TlsServing(ls, folder))
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cadata=ca.pem().decode())
    return ctx


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def demo_spec(name: str = "t", count: int = 2, standby: int = 1, interval: str = "200ms",
              timeout: str = "150ms", **group: Any) -> dict[str, Any]:
    """A spec of ``count`` + ``standby`` demo instances on free ports, everything on port 0."""
    tg: dict[str, Any] = {
        "algorithm": "round_robin",
        "instances": {
            "command": ["python", "-m", "fivenines.demo", "--port", "{port}"],
            "count": count,
            "standby": standby,
            "ports": "auto",
            "stop_timeout": "2s",
        },
        "health_check": {
            "path": "/health",
            "interval": interval,
            "timeout": timeout,
            "healthy_threshold": 2,
            "unhealthy_threshold": 2,
        },
    }
    tg.update(group)
    return {
        "name": name,
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": [{"port": 0, "protocol": "http", "default_target_group": "web"}],
        "target_groups": {"web": tg},
    }


def last_seq(f: Any) -> int:
    """The sequence number of the last event a running fivenines recorded (0: none yet): a test
    that judges what its own action caused looks only at the events after it, not at start-up's."""
    return int(get_json(f"{f.admin}/events?limit=0")["last_seq"])


class Fivenines:
    """``fivenines up`` as a real subprocess, with its admin and listener addresses."""

    def __init__(self, tmp: Path, spec: dict[str, Any], extra_args: list[str] | None = None) -> None:
        spec.setdefault("state_dir", str(tmp / "state"))
        self.spec_path = write_spec(tmp / "fivenines.yaml", spec)
        self.ready = tmp / "ready.json"
        self.log = tmp / "fivenines.log"
        self._logf = self.log.open("w")
        self.proc = subprocess.Popen(
            [PY, "-m", "fivenines", "up", str(self.spec_path), "--ready-file", str(self.ready), *(extra_args or [])],
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(os.getpid()),  # a killed test run leaves nothing behind
        )
        info = wait_until(self._read_ready, 15, what="fivenines ready file")
        self.admin: str = info["admin"]
        host, port = info["listeners"][0].rsplit(":", 1)
        self.host, self.port = host, int(port)

    def _read_ready(self) -> Any:
        if self.proc.poll() is not None:
            raise AssertionError(f"fivenines exited {self.proc.returncode}:\n{self.log.read_text()}")
        if self.ready.exists():
            return json.loads(self.ready.read_text())
        return None

    def status(self) -> Any:
        return get_json(f"{self.admin}/status")

    def targets(self, group: str = "web") -> list[dict[str, Any]]:
        return list(self.status()["target_groups"][group]["targets"])

    def target(self, tid: str, group: str = "web") -> dict[str, Any]:
        return next(t for t in self.targets(group) if t["id"] == tid)

    def wait_healthy(self, n: int | None = None, timeout: float = 15.0, group: str = "web") -> list[dict[str, Any]]:
        def ok() -> list[dict[str, Any]] | None:
            ts = self.targets(group)
            want = len(ts) if n is None else n
            return ts if sum(t["state"] == "healthy" for t in ts) >= want else None

        return wait_until(ok, timeout, 0.05, what="healthy targets")

    def get(self, path: str = "/", **kw: Any) -> tuple[int, bytes]:
        return http_get(self.host, self.port, path, **kw)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._logf.close()
        return int(self.proc.returncode)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class LoopThread:
    """An event loop (uvloop when available) running in a background thread, for in-process servers."""

    def __init__(self) -> None:
        import asyncio
        import threading

        from fivenines.proxy.aio import loop_factory

        factory = loop_factory()
        self.loop = factory() if factory else asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        import asyncio

        async def _cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        import threading

        try:
            self.call(_cancel_all(), timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        if self._thread.is_alive():
            return  # never close a loop still running (uvloop can block for ever): it dies with the process
        # Closing can block on a transport that never finished closing: bounded, so a failing
        # test reports its failure instead of hanging the run.
        closer = threading.Thread(target=self.loop.close, daemon=True)
        closer.start()
        closer.join(5)


class InProcess:
    """A :class:`~fivenines.runtime.controller.Controller` on a background loop (no admin API).

    ``prepare`` is called with the controller before it starts (e.g. to slow its tick loop)."""

    def __init__(self, tmp: Path, spec: dict[str, Any], prepare: Any = None) -> None:
        from fivenines.runtime.controller import Controller
        from fivenines.spec import parse_spec

        spec.setdefault("state_dir", str(tmp / "state"))
        self.lt = LoopThread()

        async def make() -> Controller:
            c = Controller(parse_spec(spec))
            if prepare is not None:
                prepare(c)
            await c.start()
            return c

        try:
            self.ctl = self.lt.call(make())
        except BaseException:
            self.lt.close()
            raise
        self.host, self.port = self.ctl.listeners[0][1].address

    def call(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on the controller's loop; returns its result."""
        async def run() -> Any:
            return fn(*args)

        return self.lt.call(run())

    def status(self) -> Any:
        return self.call(self.ctl.status)

    def target(self, tid: str, group: str = "web") -> dict[str, Any]:
        return next(t for t in self.status()["target_groups"][group]["targets"] if t["id"] == tid)

    def close(self) -> None:
        try:
            self.lt.call(self.ctl.stop(1.0))
        finally:
            self.lt.close()


class ProxyUnderTest:
    """A :class:`fivenines.proxy.listener.Listener` in a LoopThread, balancing over given addresses."""

    def __init__(self, addresses: list[str], tls_dir: Path | None = None, **settings: Any) -> None:
        from fivenines.proxy.backend import Backend, BackendGroup
        from fivenines.proxy.client import http_listener
        from fivenines.proxy.listener import ProxySettings

        self.lt = LoopThread()
        self.group = BackendGroup("web")
        for i, addr in enumerate(addresses):
            host, port = addr.rsplit(":", 1)
            self.group.add(Backend(f"web-{i + 1}", host, int(port)))
        self.group.set_serving(self.group.backends)
        if tls_dir is not None:
            settings.setdefault("proto", b"https")
        self.listener = http_listener(lambda: self.group, 0, ProxySettings(**settings))
        # https (``tls_dir``: a folder for a test certificate): TLS in front, as fivenines up serves it
        self.client_tls: ssl.SSLContext | None = None
        if tls_dir is not None:
            self.client_tls = https_in_front(self.listener, tls_dir)
        self.lt.call(self.listener.start("127.0.0.1", 0))
        self.host, self.port = self.listener.address

    def get(self, path: str = "/", **kw: Any) -> tuple[int, bytes]:
        if self.client_tls is not None:
            return https_get(self.host, self.port, self.client_tls, path, **kw)
        return http_get(self.host, self.port, path, **kw)

    def connect(self, timeout: float = 5.0, source: str | None = None) -> socket.socket:
        """A connection to the listener (over TLS, the handshake done, for an https one)."""
        s = socket.create_connection((self.host, self.port), timeout=timeout,
                                     source_address=(source, 0) if source else None)
        if self.client_tls is not None:
            return self.client_tls.wrap_socket(s, server_hostname="proxy.test")
        return s

    def raw(self, data: bytes, timeout: float = 5.0, until_close: bool = True) -> bytes:
        return raw_exchange(self.host, self.port, data, timeout, until_close)

    def close(self) -> None:
        self.lt.call(self.listener.drain(1.0))
        for b in self.group.backends.values():
            self.lt.loop.call_soon_threadsafe(b.close_idle)
        self.lt.close()
