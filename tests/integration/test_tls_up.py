"""``fivenines up`` serving https and tls listeners, against real clients: Python's ssl, curl,
``openssl s_client`` and sslscan (issue 19).

A demo backend answers behind the listener; certificates are made per module
(tests/tls_helpers.py). Each test starts its own fivenines (workers: 1, and 2 where the
workers change something: shared ticket keys, the reload told to every worker).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from fivenines.core.tls import policy
from tests.helpers import PY, Demo, Fivenines, require_binary, wait_until
from tests.tls_helpers import Issued, client_ctx, issue, make_pki
from tests.tls_server import TlsTestServer

pytestmark = pytest.mark.slow

FAST = {"interval": "100ms", "timeout": "80ms", "healthy_threshold": 2, "unhealthy_threshold": 2}
POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_pki(tmp_path_factory.mktemp("pki"), [("a", ["a.test"], "ec"), ("wild", ["*.b.test"], "ec")])


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    d = Demo("demo")
    yield d
    d.stop()


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Any]:
    made: list[Fivenines] = []

    def start(spec: dict[str, Any]) -> Fivenines:
        f = Fivenines(tmp_path, spec)
        made.append(f)
        f.wait_healthy(group=next(iter(spec["target_groups"])))
        return f

    yield start
    for f in made:
        f.stop()


def spec_of(listeners: list[dict[str, Any]], groups: dict[str, list[str]], workers: int = 1,
            health: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": "t", "workers": workers, "admin": {"listen": "127.0.0.1:0"}, "listeners": listeners,
            "target_groups": {g: {"targets": addrs, "health_check": {**FAST, **(health or {})}}
                              for g, addrs in groups.items()}}


def https(pki: dict[str, Any], certs: list[Path] | None = None, **extra: Any) -> dict[str, Any]:
    d = pki["dir"]
    files = certs or [d / "a.pem", d / "wild.pem"]
    return {"port": 0, "protocol": "https", "default_target_group": "web", "ssl_policy": POLICY,
            "certificates": [{"cert": str(c), "key": str(c.with_suffix(".key"))} for c in files], **extra}


class Conn:
    """One TLS connection, kept alive across requests."""

    def __init__(self, port: int, ctx: ssl.SSLContext, name: str, session: ssl.SSLSession | None = None) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            self.s = ctx.wrap_socket(raw, server_hostname=name, session=session)
        except BaseException:
            raw.close()  # (a refused handshake leaves no socket behind)
            raise
        self.name = name
        self.buf = b""

    def get(self, path: str = "/_echo", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.s.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.name}\r\n{extra}\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        hdrs = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        n = int(hdrs.get("content-length", "0"))
        while len(self.buf) < n:
            self.buf += self._recv()
        body, self.buf = self.buf[:n], self.buf[n:]
        return int(lines[0].split()[1]), hdrs, body

    def _recv(self) -> bytes:
        b = self.s.recv(65536)
        if not b:
            raise ConnectionError("closed by the server")
        return b

    def echo_headers(self, headers: dict[str, str] | None = None) -> dict[str, list[str]]:
        status, _, body = self.get("/_echo", headers)
        assert status == 200, body
        out: dict[str, list[str]] = {}
        for k, v in json.loads(body)["headers"]:
            out.setdefault(k.lower(), []).append(v)
        return out

    def peer_cn(self) -> str:
        cert = self.s.getpeercert()
        assert cert is not None
        return dict(x[0] for x in cert["subject"])["commonName"]

    def peer_der(self) -> bytes:
        der = self.s.getpeercert(binary_form=True)
        assert der is not None
        return der

    def close(self) -> None:
        self.s.close()


def s_client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    openssl = require_binary("openssl")
    return subprocess.run([openssl, "s_client", "-connect", f"127.0.0.1:{port}", *args], input="",
                          capture_output=True, text=True, timeout=10)


@pytest.mark.parametrize("workers", [1, 2])
def test_https_serves_by_sni_with_forwarded_headers_and_shared_tickets(
        up: Any, pki: dict[str, Any], demo: Demo, workers: int) -> None:
    f = up(spec_of([https(pki)], {"web": [demo.address]}, workers))
    ctx = client_ctx(pki)
    c = Conn(f.port, ctx, "a.test")
    assert c.peer_cn() == "a.test"
    h = c.echo_headers()
    assert h["x-forwarded-proto"] == ["https"] and h["x-forwarded-port"] == [str(f.port)]
    assert c.s.selected_alpn_protocol() in ("http/1.1", None)
    assert c.echo_headers()["x-forwarded-proto"] == ["https"]  # keep-alive over TLS
    c.close()
    w = Conn(f.port, ctx, "x.b.test")
    assert w.peer_cn() == "*.b.test"
    w.close()
    # openssl s_client: SNI and ALPN
    out = s_client(f.port, "-servername", "y.b.test", "-alpn", "http/1.1", "-CAfile", str(pki["dir"] / "ca.pem"))
    assert "CN = *.b.test" in out.stdout or "CN=*.b.test" in out.stdout, out.stdout[-2000:]
    assert "ALPN protocol: http/1.1" in out.stdout
    # curl
    curl = require_binary("curl")
    r = subprocess.run([curl, "-sS", "--cacert", str(pki["dir"] / "ca.pem"), "--resolve", f"a.test:{f.port}:127.0.0.1",
                        f"https://a.test:{f.port}/_echo"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert ["x-forwarded-proto", "https"] in json.loads(r.stdout)["headers"]
    # tickets: every connection after the first resumes, whichever worker it lands on
    ctx12 = client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
    first = Conn(f.port, ctx12, "a.test")
    first.get()
    session = first.s.session
    first.close()
    resumed = []
    for _ in range(8):
        again = Conn(f.port, ctx12, "a.test", session)
        again.get()
        resumed.append(again.s.session_reused)
        again.close()
    assert all(resumed), resumed
    tls = f.status()["listeners"][0]["tls"]
    assert tls["tickets"] == "shared"
    wait_until(lambda: f.status()["listeners"][0]["tls"]["resumed"] >= 8, 5, what="resumptions counted")
    # each certificate in status, fivenines status and /metrics (summed over the workers)
    certs = {c["subject"]: c for c in tls["certificates"]}
    assert certs["CN=a.test"]["sans"] == ["a.test"] and certs["CN=*.b.test"]["sans"] == ["*.b.test"]
    assert 89 < certs["CN=a.test"]["days_left"] <= 90 and certs["CN=a.test"]["default"]
    cli = subprocess.run([PY, "-m", "fivenines", "status", "--admin", f.admin], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert re.search(r"certificate CN=a\.test \(a\.test\) expires \S+, in (?:89|90)(?:\.\d+)? days \[default\]", cli), cli
    with urllib.request.urlopen(f"{f.admin}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    expiry = re.findall(r'^fivenines_tls_certificate_expiry_days\{(.*)\} (\S+)$', metrics, re.M)
    assert len(expiry) == 2 and all(f'listener="127.0.0.1:{f.port}"' in labels for labels, _ in expiry), metrics
    assert all(89 < float(v) <= 90 for _, v in expiry)
    done = re.search(rf'^fivenines_tls_handshakes_total\{{listener="127.0.0.1:{f.port}",outcome="resumed"\}} (\S+)$',
                     metrics, re.M)
    assert done and float(done.group(1)) >= 8, metrics


def test_disallowed_version_is_refused(up: Any, pki: dict[str, Any], demo: Demo) -> None:
    f = up(spec_of([https(pki)], {"web": [demo.address]}))
    with pytest.raises(ssl.SSLError):
        Conn(f.port, client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_1), "a.test")
    out = s_client(f.port, "-servername", "a.test", "-tls1_1")
    assert "Cipher is (NONE)" in out.stdout or out.returncode != 0
    ok = s_client(f.port, "-servername", "a.test", "-tls1_2")
    assert re.search(r"Protocol\s*:\s*TLSv1.2", ok.stdout) or "TLSv1.2" in ok.stdout, ok.stdout[-1500:]
    wait_until(lambda: f.status()["listeners"][0]["tls"]["failed"] >= 2, 5, what="failed handshakes counted")


def _reissue(pki: dict[str, Any], stem: str, name: str) -> Issued:
    leaf = issue(pki["ca"], [name])
    leaf.write(pki["dir"], stem)
    return leaf


def reload_cli(f: Fivenines) -> subprocess.CompletedProcess[str]:
    state = f.spec_path.parent / "state"
    return subprocess.run([PY, "-m", "fivenines", "reload", "--admin", f.admin, "--token-file",
                           str(state / "admin.token")], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("workers", [1, 2])
def test_reload_swaps_the_certificate_with_a_connection_open(
        up: Any, pki: dict[str, Any], demo: Demo, tmp_path: Path, workers: int) -> None:
    d = tmp_path / "certs"
    _reissue({**pki, "dir": d}, "site", "a.test")
    f = up(spec_of([https(pki, [d / "site.pem"])], {"web": [demo.address]}, workers))
    ctx = client_ctx(pki)
    held = Conn(f.port, ctx, "a.test")
    held.get()
    before = held.peer_der()

    def served() -> bytes:
        c = Conn(f.port, ctx, "a.test")
        try:
            return c.peer_der()
        finally:
            c.close()

    new = _reissue({**pki, "dir": d}, "site", "a.test")
    r = reload_cli(f)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "now served" in r.stdout, r.stdout
    new_der = new.cert.public_bytes(Encoding.DER)
    wait_until(lambda: all(served() == new_der for _ in range(4)), 10, what="the new certificate served")
    assert held.get()[0] == 200 and held.peer_der() == before  # the open connection kept its session
    # SIGHUP does the same
    newer = _reissue({**pki, "dir": d}, "site", "a.test")
    newer_der = newer.cert.public_bytes(Encoding.DER)
    f.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: all(served() == newer_der for _ in range(4)), 10, what="SIGHUP: the newer certificate served")
    assert held.get()[0] == 200
    # a key that is not the certificate's: refused, naming the file; the running certificate stays
    (d / "site.key").write_bytes(issue(pki["ca"], ["a.test"]).key_pem())
    r = reload_cli(f)
    assert r.returncode != 0
    assert "site.key: this key does not belong to the certificate" in r.stderr, r.stderr
    assert "reload rejected: the running configuration is unchanged" in r.stderr
    assert all(served() == newer_der for _ in range(4))
    assert held.get()[0] == 200
    held.close()


def test_mutual_tls_accepts_and_refuses_and_forwards_the_identity(up: Any, pki: dict[str, Any], demo: Demo) -> None:
    mtls = {"mode": "verify", "trust_store": str(pki["dir"] / "clients.pem")}
    f = up(spec_of([https(pki, mutual_authentication=mtls)], {"web": [demo.address]}))
    alice = Conn(f.port, client_ctx(pki, "alice"), "a.test")
    h = alice.echo_headers({"X-Amzn-Mtls-Clientcert-Subject": "CN=forged"})
    assert h["x-amzn-mtls-clientcert-subject"] == ["CN=alice"], h
    alice.close()
    for who in ("mallory", None):
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            refused(f.port, client_ctx(pki, who))
    wait_until(lambda: f.status()["listeners"][0]["tls"]["failed"] >= 2, 5, what="refused clients counted")


def refused(port: int, ctx: ssl.SSLContext) -> None:
    c = Conn(port, ctx, "a.test")
    try:
        c.get()  # (TLS 1.3: the refusal arrives after the client's finished)
    finally:
        c.close()


def test_passthrough_routes_by_sni_without_decrypting(up: Any, pki: dict[str, Any]) -> None:
    d = pki["dir"]
    a = TlsTestServer({"protocol": "https", "certificates": [{"cert": "a.pem", "key": "a.key"}]}, d)
    b = TlsTestServer({"protocol": "https", "certificates": [{"cert": "wild.pem", "key": "wild.key"}]}, d)
    try:
        lst = {"port": 0, "protocol": "tls", "passthrough": True, "default_target_group": "b",
               "rules": [{"match": {"sni": ["a.test"]}, "forward": "a"}]}
        f = up(spec_of([lst], {"a": [f"127.0.0.1:{a.port}"], "b": [f"127.0.0.1:{b.port}"]},
                       health={"protocol": "tcp"}))
        f.wait_healthy(group="b")
        ctx = client_ctx(pki)
        ca = Conn(f.port, ctx, "a.test")
        assert ca.peer_cn() == "a.test" and ca.get("/")[0] == 200  # the target's own TLS, end to end
        cb = Conn(f.port, ctx, "z.b.test")
        assert cb.peer_cn() == "*.b.test"
        ca.close()
        cb.close()
        tls = f.status()["listeners"][0]["tls"]
        assert tls["passthrough"] and tls["certificates"] == []
    finally:
        a.close()
        b.close()


def test_http_to_https_redirect_rule(up: Any, pki: dict[str, Any], demo: Demo) -> None:
    redirect = {"port": 0, "protocol": "http", "default_target_group": "web",
                "rules": [{"match": {"path": ["/*"]},
                           "redirect": {"url": "https://#{host}:443/#{path}?#{query}", "status": 301}}]}
    f = up(spec_of([redirect, https(pki)], {"web": [demo.address]}))
    s = socket.create_connection((f.host, f.port), timeout=5)
    s.sendall(b"GET /shop/cart?x=1 HTTP/1.1\r\nHost: a.test\r\n\r\n")
    head = s.recv(4096).decode()
    s.close()
    assert head.startswith("HTTP/1.1 301"), head
    assert "Location: https://a.test:443/shop/cart?x=1" in head, head


def test_sslscan_sees_nothing_outside_the_policy(up: Any, pki: dict[str, Any], demo: Demo) -> None:
    binary = require_binary("sslscan")
    f = up(spec_of([https(pki)], {"web": [demo.address]}))
    r = subprocess.run([binary, "--no-colour", "--no-heartbleed", "--no-check-certificate", "--no-groups",
                        "--sni-name=a.test", f"127.0.0.1:{f.port}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    enabled = set(re.findall(r"^(SSLv[23]|TLSv1\.[0-3]|TLSv1\.0)\s+enabled", r.stdout, re.M))
    accepted = set(re.findall(r"^(?:Preferred|Accepted)\s+(TLSv1\.[0-3]|SSLv3)\s+\d+ bits\s+(\S+)", r.stdout, re.M))
    p = policy(POLICY)
    want_protocols = {v if v != "TLSv1" else "TLSv1.0" for v in p.protocols}
    assert enabled == want_protocols, r.stdout
    assert accepted and {c for _, c in accepted} <= set(p.ciphers), r.stdout  # (an ECDSA certificate: its half)
    assert all(v in want_protocols for v, _ in accepted)


def test_stalled_handshakes_are_cut_at_the_timeout_and_a_flood_is_capped(up: Any, pki: dict[str, Any],
                                                                          demo: Demo) -> None:
    lst = https(pki, timeouts={"handshake": "1s"}, limits={"max_handshakes": 20})
    f = up(spec_of([lst], {"web": [demo.address]}))
    stalled = []
    for i in range(30):  # 20 take every place; 10 more are closed at once, before any handshake work
        s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
        if i % 2:
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello, then nothing
        stalled.append(s)
        if i == 19:  # (the gate has admitted all 20 before more come)
            wait_until(lambda: f.status()["listeners"][0]["tls"]["handshakes_in_progress"] == 20, 5,
                       what="20 handshakes in progress")
    try:
        wait_until(lambda: f.status()["listeners"][0]["tls"]["refused"] == 10, 5, what="10 refused over the cap")
        assert all(closed_by_server(s) for s in stalled[20:])  # aborted at accept
        # the stalled ones are cut at 1 s, and the listener serves handshakes again
        stalled_at = time.monotonic()
        assert all(closed_by_server(s) for s in stalled[:20])  # (recv timeout 5 s)
        cut_after = time.monotonic() - stalled_at
        assert cut_after < 3, cut_after
        c = Conn(f.port, client_ctx(pki), "a.test")
        assert c.get()[0] == 200
        c.close()
        tls = f.status()["listeners"][0]["tls"]
        assert tls["timed_out"] == 20 and tls["handshakes_in_progress"] == 0, tls
    finally:
        for s in stalled:
            s.close()


def closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(100) == b""
    except ConnectionResetError:
        return True


def test_tls_listener_terminates_and_routes_by_sni(up: Any, pki: dict[str, Any], demo: Demo) -> None:
    other = Demo("other")
    try:
        d = pki["dir"]
        lst = {"port": 0, "protocol": "tls", "default_target_group": "web", "ssl_policy": POLICY,
               "certificates": [{"cert": str(d / "a.pem"), "key": str(d / "a.key")},
                                {"cert": str(d / "wild.pem"), "key": str(d / "wild.key")}],
               "rules": [{"match": {"sni": ["*.b.test"]}, "forward": "b"}]}
        f = up(spec_of([lst], {"web": [demo.address], "b": [other.address]}))
        f.wait_healthy(group="b")
        ctx = client_ctx(pki)
        for name, instance in (("a.test", "demo"), ("x.b.test", "other"), ("a.test", "demo")):
            c = Conn(f.port, ctx, name)
            status, _, body = c.get()  # plain HTTP inside the TLS the listener terminated
            assert status == 200 and json.loads(body)["instance"] == instance, (name, body)
            sent = {k.lower() for k, _ in json.loads(body)["headers"]}
            assert "x-forwarded-for" not in sent  # (a byte stream: nothing added)
            c.close()
    finally:
        other.stop()


def test_https_on_asyncio_s_own_loop(demo: Demo, tmp_path: Path) -> None:
    """Where uvloop is missing fivenines runs on asyncio's loop: the gate uses its SSL protocol then."""
    import asyncio
    import threading

    from fivenines.proxy.backend import Backend, BackendGroup
    from fivenines.proxy.client import http_listener
    from fivenines.proxy.listener import ProxySettings
    from tests.helpers import https_get, https_in_front

    loop = asyncio.new_event_loop()
    assert type(loop).__module__.startswith("asyncio")
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    group = BackendGroup("web")
    group.add(Backend("web-1", demo.host, demo.port))
    group.set_serving(group.backends)
    listener = http_listener(lambda: group, 0, ProxySettings(proto=b"https"))
    ctx = https_in_front(listener, tmp_path)
    try:
        asyncio.run_coroutine_threadsafe(listener.start("127.0.0.1", 0), loop).result(10)
        port = listener.address[1]
        for _ in range(3):
            status, body = https_get("127.0.0.1", port, ctx, "/_echo")
            assert status == 200 and ["x-forwarded-proto", "https"] in json.loads(body)["headers"]
        assert listener.tls.counters.handshakes == 3
    finally:
        async def stop() -> None:
            await listener.drain(1.0)
            for b in group.backends.values():
                b.close_idle()
            for _ in range(5):  # (the closed transports' callbacks run)
                await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
