"""The TLS context layer against real clients over loopback: Python's ssl, curl, openssl s_client, sslscan.

The server is tests/tls_server.py (an asyncio server on fivenines.proxy.tls, port 0);
the certificates are made per module with ``cryptography``.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fivenines.certs import CertificateError
from fivenines.core.tls import policy
from fivenines.proxy import openssl
from fivenines.proxy.tls import SNI_ATTRIBUTE, DirectSSLObject
from tests.helpers import require_binary, stop_process
from tests.tls_helpers import client_ctx, make_pki
from tests.tls_server import TlsTestServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_pki(tmp_path_factory.mktemp("pki"), [
        ("default", ["example.test"], "ec"), ("wild", ["*.example.test"], "ec"), ("api", ["api.example.test"], "rsa"),
        ("both-ec", ["both.test"], "ec"), ("both-rsa", ["both.test"], "rsa"), ("default2", ["example.test"], "ec")])


CERTS = [{"cert": "default.pem", "key": "default.key"}, {"cert": "wild.pem", "key": "wild.key"},
         {"cert": "api.pem", "key": "api.key"}]


def https(**extra: Any) -> dict[str, Any]:
    return {"protocol": "https", "certificates": CERTS, **extra}


@pytest.fixture
def server(pki: dict[str, Any]) -> Iterator[Any]:
    made: list[TlsTestServer] = []

    def make(spec: dict[str, Any], secret: bytes | None = None, **kw: Any) -> TlsTestServer:
        s = TlsTestServer(spec, pki["dir"], secret, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def get(port: int, ctx: ssl.SSLContext, name: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """One request over a new connection: (what the server saw, the server's certificate)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=name) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        return read_json(s), s.getpeercert() or {}


def read_json(s: ssl.SSLSocket) -> dict[str, Any]:
    def more() -> bytes:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        return chunk

    data = b""
    while b"\r\n\r\n" not in data:
        data += more()
    head, body = data.split(b"\r\n\r\n", 1)
    n = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < n:
        body += more()
    return json.loads(body)  # type: ignore[no-any-return]


def sans(cert: dict[str, Any]) -> list[str]:
    return [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]


def s_client(port: int, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    more = ["-ign_eof"] if stdin else []
    return subprocess.run([require_binary("openssl"), "s_client", "-connect", f"127.0.0.1:{port}", *more, *args],
                          input=stdin, capture_output=True, text=True, timeout=20)


def subject_cn(out: str) -> str:
    m = re.search(r"^subject=.*?CN ?= ?([^,\n]+)", out, re.M)
    return m.group(1).strip() if m else ""


# --------------------------------------------------------------------------- SNI, ALPN


def test_sni_picks_the_certificate(server: Any, pki: dict[str, Any]) -> None:
    srv = server(https())
    ctx = client_ctx(pki)
    for name, want in (("api.example.test", ["api.example.test"]), ("API.Example.Test", ["api.example.test"]),
                       ("www.example.test", ["*.example.test"]), ("example.test", ["example.test"])):
        seen, cert = get(srv.port, ctx, name)
        assert sans(cert) == want, name
        assert seen["alpn"] is None and seen["version"] == "TLSv1.3"
    assert srv.tls.sni_misses == 0
    # openssl s_client: a name no certificate has gets the default; no SNI at all, the default too
    assert subject_cn(s_client(srv.port, "-servername", "a.b.example.test").stdout) == "example.test"
    assert subject_cn(s_client(srv.port, "-noservername").stdout) == "example.test"
    assert subject_cn(s_client(srv.port, "-servername", "x.example.test").stdout) == "*.example.test"
    assert srv.tls.sni_misses == 1
    # curl checks the name itself: it only succeeds when the right certificate came
    for name in ("api.example.test", "shop.example.test", "example.test"):
        r = subprocess.run([require_binary("curl"), "-sS", "--cacert", str(pki["dir"] / "ca.pem"), "--resolve",
                            f"{name}:{srv.port}:127.0.0.1", f"https://{name}:{srv.port}/"],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, (name, r.stderr)
        assert json.loads(r.stdout)["alpn"] == "http/1.1"


def test_alpn_offers_http1_only(server: Any) -> None:
    srv = server(https())
    assert "ALPN protocol: http/1.1" in s_client(srv.port, "-alpn", "h2,http/1.1").stdout
    assert "No ALPN negotiated" in s_client(srv.port, "-alpn", "h2").stdout


def test_same_names_ecdsa_and_rsa_share_a_context(server: Any, pki: dict[str, Any]) -> None:
    srv = server({"protocol": "tls", "certificates": [{"cert": "both-ec.pem", "key": "both-ec.key"},
                                                      {"cert": "both-rsa.pem", "key": "both-rsa.key"}]})
    assert "2 certificates in 1 contexts" in repr(srv.tls)
    ec_out = s_client(srv.port, "-servername", "both.test", "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256").stdout
    rsa_out = s_client(srv.port, "-servername", "both.test", "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256").stdout
    assert "Cipher is ECDHE-ECDSA-AES128-GCM-SHA256" in ec_out and "Cipher is ECDHE-RSA-AES128-GCM-SHA256" in rsa_out
    assert "Peer signature type: ECDSA" in ec_out and "Peer signature type: RSA" in rsa_out


# --------------------------------------------------------------------------- policies


def test_disallowed_versions_are_refused(server: Any, pki: dict[str, Any]) -> None:
    default = server(https())  # TLS13-1-2: 1.2 and 1.3
    only13 = server(https(ssl_policy="ELBSecurityPolicy-TLS13-1-3-2021-06"))
    legacy = server(https(ssl_policy="ELBSecurityPolicy-2016-08"))
    with pytest.raises(ssl.SSLError):
        get(default.port, client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_1), "example.test")
    seen, _ = get(default.port, client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_2), "example.test")
    assert seen["version"] == "TLSv1.2"
    with pytest.raises(ssl.SSLError):
        get(only13.port, client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_2), "example.test")
    lowest = "-cipher", "DEFAULT:@SECLEVEL=0"  # so that any refusal is the server's
    assert "Cipher is (NONE)" in s_client(default.port, "-tls1_1", *lowest).stdout
    assert s_client(only13.port, "-tls1_2").returncode != 0
    # a TLS 1.3 suite is negotiated by TLS 1.3 only; s_client prints the session ("Protocol  :")
    # only when a ticket arrives before it exits, so read the handshake's own summary line
    assert re.search(r"^New, TLSv1\.3, Cipher is TLS_", s_client(only13.port, "-tls1_3").stdout, re.M)
    assert "Protocol  : TLSv1\n" in s_client(legacy.port, "-tls1", *lowest).stdout
    assert s_client(legacy.port, "-tls1_3").returncode != 0  # 2016-08 has no TLS 1.3
    r = subprocess.run([require_binary("curl"), "-sS", "-k", "--tls-max", "1.2", "--tlsv1.2",
                        f"https://127.0.0.1:{only13.port}/"], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0


def test_ciphers_follow_the_policy_and_its_order(server: Any, pki: dict[str, Any]) -> None:
    res = server(https(ssl_policy="ELBSecurityPolicy-FS-1-2-Res-2020-10"))
    assert s_client(res.port, "-tls1_2", "-cipher", "AES128-SHA:ECDHE-ECDSA-AES128-SHA256").returncode != 0
    ok = s_client(res.port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256")
    assert "Cipher is ECDHE-ECDSA-AES128-GCM-SHA256" in ok.stdout  # the server's (AWS's) order, not the client's
    assert s_client(res.port, "-tls1_3").returncode != 0  # FS-1-2-Res is TLS 1.2 only
    if openssl.unavailable():
        pytest.skip(f"TLS 1.3 suite order needs the OpenSSL binding: {openssl.unavailable()}")
    default = server(https())
    tls13 = s_client(default.port, "-tls1_3", "-ciphersuites",
                     "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256")
    assert "Cipher is TLS_AES_128_GCM_SHA256" in tls13.stdout  # AWS lists it first; OpenSSL's default order would not


def test_sslscan_sees_nothing_outside_the_policy(server: Any) -> None:
    binary = require_binary("sslscan")
    for name in ("ELBSecurityPolicy-TLS13-1-2-Res-2021-06", "ELBSecurityPolicy-TLS-1-2-2017-01"):
        srv = server({"protocol": "tls", "ssl_policy": name,
                      "certificates": [{"cert": "both-ec.pem", "key": "both-ec.key"},
                                       {"cert": "both-rsa.pem", "key": "both-rsa.key"}]})
        r = subprocess.run([binary, "--no-colour", "--no-heartbleed", "--no-check-certificate", "--no-groups",
                            "--sni-name=both.test", f"127.0.0.1:{srv.port}"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        enabled = set(re.findall(r"^(SSLv[23]|TLSv1\.[0-3]|TLSv1\.0)\s+enabled", r.stdout, re.M))
        accepted = set(re.findall(r"^(?:Preferred|Accepted)\s+(TLSv1\.[0-3]|SSLv3)\s+\d+ bits\s+(\S+)", r.stdout, re.M))
        p = policy(name)
        want_protocols = {v if v != "TLSv1" else "TLSv1.0" for v in p.protocols}
        assert enabled == want_protocols, (name, r.stdout)
        assert {c for _, c in accepted} == set(p.ciphers), (name, r.stdout)
        assert all(v in want_protocols for v, _ in accepted)


# --------------------------------------------------------------------------- reload


def test_reload_swaps_the_certificate_with_a_connection_open(server: Any, pki: dict[str, Any]) -> None:
    srv = server(https())
    ctx = client_ctx(pki)
    before = srv.tls.select("example.test").fingerprint
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="example.test") as kept:
        kept.sendall(b"GET / HTTP/1.1\r\n\r\n")
        read_json(kept)
        old_der = kept.getpeercert(binary_form=True)
        changes = srv.reload(https(certificates=[{"cert": "default2.pem", "key": "default2.key"}, *CERTS[1:]]))
        assert any("now served" in c for c in changes) and any("no longer served" in c for c in changes)
        new_conn_der = _peer_der(srv.port, ctx, "example.test")
        assert new_conn_der != old_der and srv.tls.select("example.test").fingerprint != before
        kept.sendall(b"GET / HTTP/1.1\r\n\r\n")  # the open connection goes on, on its old certificate
        assert read_json(kept)["version"] == "TLSv1.3"
        assert kept.getpeercert(binary_form=True) == old_der
    # a bad reload (a key that is not the certificate's) is refused, and the running certificate stays
    with pytest.raises(CertificateError, match="does not belong to the certificate"):
        srv.reload(https(certificates=[{"cert": "default.pem", "key": "api.key"}]))
    assert _peer_der(srv.port, ctx, "example.test") == new_conn_der
    assert srv.tls.reloads == 1
    # the policy follows a reload too
    srv.reload(https(ssl_policy="ELBSecurityPolicy-TLS13-1-3-2021-06"))
    with pytest.raises(ssl.SSLError):
        get(srv.port, client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_2), "example.test")


def _peer_der(port: int, ctx: ssl.SSLContext, name: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=name) as s:
        der = s.getpeercert(binary_form=True)
        assert der is not None
        return der


# --------------------------------------------------------------------------- mutual TLS


def test_mutual_tls_verify(server: Any, pki: dict[str, Any]) -> None:
    srv = server(https(mutual_authentication={"mode": "verify", "trust_store": "clients.pem"}))
    seen, _ = get(srv.port, client_ctx(pki, cert="alice"), "example.test")
    headers = dict(seen["identity"])
    assert headers["X-Amzn-Mtls-Clientcert-Subject"] == "CN=alice"
    assert headers["X-Amzn-Mtls-Clientcert-Issuer"] == "CN=client CA"
    assert headers["X-Amzn-Mtls-Clientcert-Leaf"].startswith("-----BEGIN%20CERTIFICATE-----")
    for who in (None, "mallory"):  # no certificate; a certificate no trusted CA signed
        with pytest.raises((ssl.SSLError, ConnectionError)):
            get(srv.port, client_ctx(pki, cert=who), "example.test")
    r = subprocess.run([require_binary("curl"), "-sS", "--cacert", str(pki["dir"] / "ca.pem"),
                        "--cert", str(pki["dir"] / "alice.pem"), "--key", str(pki["dir"] / "alice.key"),
                        "--resolve", f"example.test:{srv.port}:127.0.0.1", f"https://example.test:{srv.port}/"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and "CN=alice" in r.stdout


def test_mutual_tls_passthrough(server: Any, pki: dict[str, Any]) -> None:
    if openssl.unavailable():
        pytest.skip(openssl.unavailable())
    srv = server(https(mutual_authentication={"mode": "passthrough", "header_prefix": "X-Client-Cert"}))
    seen, _ = get(srv.port, client_ctx(pki, cert="mallory"), "example.test")  # unverified, forwarded
    [(name, value)] = seen["identity"]
    assert name == "X-Client-Cert" and value.startswith("-----BEGIN%20CERTIFICATE-----")
    seen, _ = get(srv.port, client_ctx(pki), "example.test")
    assert seen["identity"] == []


# --------------------------------------------------------------------------- session tickets


def _serve_process(pki: dict[str, Any], spec: dict[str, Any], secret: bytes) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.tls_server", "--spec", json.dumps(spec), "--base",
                             str(pki["dir"]), "--secret-hex", secret.hex()],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        stop_process(proc)
        proc.stdout.close()
        raise AssertionError("the TLS test server did not start")
    return proc, int(line)


REQUEST: dict[str, Any] = {"stdin": "GET / HTTP/1.1\r\nConnection: close\r\n\r\n"}  # read to the end: TLS 1.3 tickets come after the handshake


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_tickets_resume_across_processes_sharing_the_secret(pki: dict[str, Any], tmp_path: Path, version: str) -> None:
    if openssl.unavailable():
        pytest.skip(openssl.unavailable())
    shared = b"s" * 48
    procs = []
    try:
        a, port_a = _serve_process(pki, https(), shared)
        b, port_b = _serve_process(pki, https(), shared)
        c, port_c = _serve_process(pki, https(), b"t" * 48)
        d, port_d = _serve_process(pki, https(session_tickets={"enabled": False}), shared)
        procs = [a, b, c, d]
        sess = tmp_path / f"session{version}"
        first = s_client(port_a, version, "-servername", "example.test", "-sess_out", str(sess), **REQUEST)
        assert "New," in first.stdout and sess.exists(), first.stdout
        again = s_client(port_b, version, "-servername", "example.test", "-sess_in", str(sess), **REQUEST)
        assert "Reused," in again.stdout, again.stdout  # another process, the same keys
        stranger = s_client(port_c, version, "-servername", "example.test", "-sess_in", str(sess), **REQUEST)
        assert "New," in stranger.stdout  # another secret: a full handshake, no failure
        off = s_client(port_d, version, "-servername", "example.test", "-sess_out", str(sess), **REQUEST)
        assert "New," in off.stdout
        assert "Reused," not in s_client(port_d, version, "-sess_in", str(sess), **REQUEST).stdout
    finally:
        for p in procs:
            stop_process(p)
            if p.stdout is not None:
                p.stdout.close()


def test_ticket_rotation_keeps_the_previous_key(server: Any, pki: dict[str, Any]) -> None:
    if openssl.unavailable():
        pytest.skip(openssl.unavailable())
    now = [1_000_000.0]
    srv = server(https(session_tickets={"rotation": "1h"}), b"r" * 48)
    srv.call(lambda: setattr(srv.tls, "clock", lambda: now[0]))
    ctx = client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_2)

    def connect(session: Any = None) -> tuple[Any, bool]:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="example.test", session=session) as s:
            return s.session, s.session_reused

    assert srv.call(srv.tls.rotate_tickets) == 1_000_800.0
    first, reused = connect()
    assert not reused
    now[0] += 3600  # one rotation: the ticket's key is now the previous one
    srv.call(srv.tls.rotate_tickets)
    renewed, reused = connect(first)
    assert reused
    now[0] += 7200  # two more: its key is gone
    srv.call(srv.tls.rotate_tickets)
    assert connect(first)[1] is False
    assert srv.tls.keyring is not None and srv.tls.keyring.unknown >= 1
    assert srv.tls.tickets == "shared" and "issued=" in repr(srv.tls.keyring)
    _ = renewed


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_a_resumed_tls13_session_gets_a_fresh_ticket(server: Any, pki: dict[str, Any], version: ssl.TLSVersion) -> None:
    """As OpenSSL's own ticket keys do (and HAProxy): a client that resumes over TLS 1.3 gets a
    new ticket, so one that uses each ticket once (wrk) resumes every time; TLS 1.2 renews a
    ticket only when its key is no longer the current one."""
    if openssl.unavailable():
        pytest.skip(openssl.unavailable())
    srv = server(https(), b"f" * 48)
    ctx = client_ctx(pki, maximum_version=version)

    def get(session: Any = None) -> tuple[Any, bool]:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="example.test", session=session) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n")
            s.recv(65536)  # (a TLS 1.3 ticket arrives after the handshake, before the answer)
            return s.session, s.session_reused

    first, reused = get()
    assert not reused and first is not None and first.has_ticket
    keyring = srv.tls.keyring
    assert keyring is not None
    issued = keyring.issued
    again, reused = get(first)
    assert reused and keyring.resumed >= 1
    if version is ssl.TLSVersion.TLSv1_3:
        assert keyring.issued > issued and again.id != first.id  # a fresh ticket
        assert get(again)[1]  # which resumes in turn
    else:
        assert keyring.issued == issued  # the ticket stays good: no new one


def test_handshakes_read_and_write_through_the_c_methods(server: Any, pki: dict[str, Any]) -> None:
    """Each handshake's SSLObject is a DirectSSLObject: read, write, do_handshake and pending are
    the C methods themselves (no Python frame per record), with ssl.SSLObject's results and
    exceptions; the SNI callback still moves it to the certificate's context (memory BIOs)."""
    srv = server(https())
    front = srv.tls.context
    assert front.sslobject_class is DirectSSLObject
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx(pki).wrap_bio(c_in, c_out, server_hostname="example.test")
    obj = front.wrap_bio(s_in, s_out, server_side=True)
    assert isinstance(obj, DirectSSLObject)
    for name in ("read", "write", "do_handshake", "pending"):
        assert type(getattr(obj, name)).__name__ == "builtin_function_or_method", name

    def pump() -> None:
        s_in.write(c_out.read())
        c_in.write(s_out.read())

    done = [False, False]
    for _ in range(10):
        for i, side in enumerate((client, obj)):
            if not done[i]:
                try:
                    side.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
            pump()
    assert done == [True, True]
    assert getattr(obj, SNI_ATTRIBUTE) == "example.test" and obj.context is not front
    with pytest.raises(ssl.SSLWantReadError):
        obj.read(1024)
    client.write(b"ping")
    pump()
    assert obj.pending() == 0 and obj.read(1024) == b"ping"
    client.write(b"pong!")
    pump()
    buf = bytearray(16)
    assert obj.read(16, memoryview(buf)) == 5 and bytes(buf[:5]) == b"pong!"
    assert obj.write(b"answer") == 6
    pump()
    assert client.read(1024) == b"answer"


def test_status_read_model(server: Any) -> None:
    srv = server(https(certificates=[*CERTS[:2], {**CERTS[2], "default": True}]))
    status = srv.call(srv.tls.status)
    assert status["ssl_policy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06" and status["tickets"] in ("per-process", "shared")
    certs = status["certificates"]
    assert [c["sans"] for c in certs] == [["example.test"], ["*.example.test"], ["api.example.test"]]
    assert [c["default"] for c in certs] == [False, False, True]
    assert certs[2]["key_type"] == "RSA 2048" and 88 < certs[0]["days_left"] <= 90
    assert subject_cn(s_client(srv.port, "-noservername").stdout) == "api.example.test"





def test_prometheus_collector(server: Any) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from fivenines.admin.tls_metrics import TlsCollector

    srv = server(https())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TlsCollector(lambda: [("127.0.0.1:443", srv.tls.infos)], clock=lambda: srv.tls.infos[0].not_after - 86400 * 3))
    text = generate_latest(registry).decode()
    default = str(srv.tls.infos[0].file)
    assert f'fivenines_tls_certificate_expiry_days{{cert="{default}",listener="127.0.0.1:443"}} 3.0' in text
    assert text.count("fivenines_tls_certificate_expiry_days{") == 3
    assert "fivenines_tls_certificate_not_after_seconds{" in text


def test_under_uvloop(server: Any, pki: dict[str, Any]) -> None:
    """The data plane runs on uvloop, whose SSL layer is its own: SNI, reload and tickets work there too."""
    uvloop = pytest.importorskip("uvloop")
    srv = server(https(), b"u" * 48, loop_factory=uvloop.new_event_loop)
    ctx = client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
    seen, cert = get(srv.port, ctx, "shop.example.test")
    assert sans(cert) == ["*.example.test"] and seen["version"] == "TLSv1.2"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="example.test") as s:
        session = s.session
    srv.reload(https(certificates=[{"cert": "default2.pem", "key": "default2.key"}]))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="example.test", session=session) as s:
        assert s.session_reused == (not openssl.unavailable())  # the ticket outlives the reload
    new = ssl.PEM_cert_to_DER_cert((pki["dir"] / "default2.pem").read_text())
    assert _peer_der(srv.port, ctx, "example.test") == new
