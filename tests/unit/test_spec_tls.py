"""https/tls listeners in the spec: structure, and the files checked at validate time."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from fivenines.certs import read_certificate, tls_file_problems
from fivenines.errors import SpecError
from fivenines.spec import load_spec, parse_spec
from tests.tls_helpers import issue, make_ca

PY = sys.executable


@pytest.fixture(scope="module")
def ca() -> Any:
    return make_ca()


def spec_with(listener: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "tls", "listeners": [{"port": 0, "default_target_group": "web", **listener}],
            "target_groups": {"web": {"targets": ["127.0.0.1:9"]}, "api": {"targets": ["127.0.0.1:10"]}}, **extra}


def errors_of(data: Any) -> list[str]:
    with pytest.raises(SpecError) as ei:
        parse_spec(data, "f.yaml")
    return [str(e) for e in ei.value.errors]


def load_errors(folder: Path, data: dict[str, Any]) -> list[str]:
    path = folder / "fivenines.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as ei:
        load_spec(path)
    assert ei.value.file == str(path)
    return [str(e) for e in ei.value.errors]


def write(folder: Path, data: dict[str, Any]) -> Path:
    path = folder / "fivenines.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# --------------------------------------------------------------------------- structure


def test_https_listener_needs_a_certificate() -> None:
    assert errors_of(spec_with({"protocol": "https"})) == [
        "listeners.0.certificates: a https listener needs at least one certificate: "
        "[{cert: site.pem, key: site.key}] (or passthrough: true on a tls listener)"]


def test_unknown_policy_lists_the_valid_ones() -> None:
    [msg] = errors_of(spec_with({"protocol": "https", "certificates": [{"cert": "a", "key": "b"}],
                                 "ssl_policy": "ELBSecurityPolicy-Bogus"}))
    assert msg.startswith("listeners.0.ssl_policy: 'ELBSecurityPolicy-Bogus' is not a security policy fivenines knows; "
                          "valid: ELBSecurityPolicy-TLS13-1-3-2021-06, ELBSecurityPolicy-TLS13-1-2-2021-06")


def test_tls_settings_on_plain_listeners_are_refused() -> None:
    msgs = errors_of(spec_with({"protocol": "http", "certificates": [{"cert": "a", "key": "b"}],
                                "ssl_policy": "ELBSecurityPolicy-2016-08", "passthrough": True}))
    assert msgs == [f"listeners.0.{f}: only for https and tls listeners (protocol is http)"
                    for f in ("certificates", "ssl_policy", "passthrough")]


def test_passthrough_only_on_tls_and_without_certificates() -> None:
    assert errors_of(spec_with({"protocol": "https", "passthrough": True})) == [
        "listeners.0.passthrough: only tls listeners pass TLS through; https terminates it"]
    [msg] = errors_of(spec_with({"protocol": "tls", "passthrough": True, "certificates": [{"cert": "a", "key": "b"}]}))
    assert msg.startswith("listeners.0.certificates: a passthrough listener does not terminate TLS")


def test_at_most_one_default_certificate() -> None:
    certs = [{"cert": "a", "key": "b", "default": True}, {"cert": "c", "key": "d", "default": True}]
    assert errors_of(spec_with({"protocol": "https", "certificates": certs})) == [
        "listeners.0.certificates.1.default: certificates.0 is already the default; at most one"]


def test_mutual_authentication_fields() -> None:
    base = {"protocol": "https", "certificates": [{"cert": "a", "key": "b"}]}
    assert errors_of(spec_with({**base, "mutual_authentication": {"mode": "verify"}})) == [
        "listeners.0.mutual_authentication.trust_store: mode verify needs trust_store: "
        "a PEM file of the CA certificates that vouch for clients"]
    assert errors_of(spec_with({**base, "mutual_authentication": {"mode": "passthrough", "trust_store": "ca.pem"}})) == [
        "listeners.0.mutual_authentication.trust_store: only used with mode verify (mode is passthrough)"]
    [msg] = errors_of(spec_with({**base, "mutual_authentication": {"mode": "maybe"}}))
    assert msg.startswith("listeners.0.mutual_authentication.mode: Input should be 'off', 'verify' or 'passthrough'")


def test_sni_rules_belong_to_tls_listeners() -> None:
    rule = {"match": {"sni": ["api.example.com"]}, "forward": "api"}
    assert errors_of(spec_with({"protocol": "http", "rules": [rule]})) == [
        "listeners.0.rules.0.match.sni: sni matches tls listeners (this one is http); match the Host header with host:"]
    ok = parse_spec(spec_with({"protocol": "tls", "passthrough": True, "rules": [rule]}))
    assert ok.listeners[0].rules[0].match.sni == ["api.example.com"]
    bad = {"match": {"sni": ["a"], "path": ["/x"]}, "redirect": {"url": "https://x/"}}
    assert errors_of(spec_with({"protocol": "tls", "passthrough": True, "rules": [bad]})) == [
        "listeners.0.rules.0.match.path: a tls listener routes connections, not requests: use sni or source_ip",
        "listeners.0.rules.0: a tls listener can only forward (redirect and fixed_response answer HTTP)"]


def test_ticket_rotation_bounds() -> None:
    base = {"protocol": "https", "certificates": [{"cert": "a", "key": "b"}]}
    [msg] = errors_of(spec_with({**base, "session_tickets": {"rotation": "10s"}}))
    assert msg.startswith("listeners.0.session_tickets.rotation: Input should be greater than or equal to 60")
    spec = parse_spec(spec_with({**base, "session_tickets": {"rotation": "2h"}, "timeouts": {"handshake": "5s"}}))
    lst = spec.listeners[0]
    assert (lst.session_tickets.rotation, lst.timeouts.handshake, lst.limits.max_handshakes) == (7200.0, 5.0, 1000)


# --------------------------------------------------------------------------- files


def test_valid_files_load(tmp_path: Path, ca: Any) -> None:
    issue(ca, ["example.com", "*.example.com"]).write(tmp_path, "site", chain=(ca,))
    spec = load_spec(write(tmp_path, spec_with({"protocol": "https", "certificates": [{"cert": "site.pem", "key": "site.key"}]})))
    assert spec.listeners[0].tls
    info = read_certificate(tmp_path / "site.pem", tmp_path / "site.key", time.time())
    assert info.names == ("example.com", "*.example.com") and info.key_type == "ECDSA P-256" and info.chain == 2
    assert 88 < info.days_left(time.time()) < 90


def test_missing_file_names_file_and_field(tmp_path: Path) -> None:
    msgs = load_errors(tmp_path, spec_with({"protocol": "https", "certificates": [{"cert": "nope.pem", "key": "nope.key"}]}))
    assert msgs == [f"listeners.0.certificates.0.cert: {tmp_path}/nope.pem: cannot read: No such file or directory"]


def test_key_of_another_certificate_is_refused(tmp_path: Path, ca: Any) -> None:
    issue(ca, ["a.example"]).write(tmp_path, "a")
    issue(ca, ["b.example"], kind="rsa").write(tmp_path, "b")
    msgs = load_errors(tmp_path, spec_with({"protocol": "https", "certificates": [{"cert": "a.pem", "key": "b.key"}]}))
    assert msgs == [f"listeners.0.certificates.0.key: {tmp_path}/b.key: this key does not belong to the certificate in "
                    f"{tmp_path}/a.pem (the certificate's key is ECDSA P-256, this one RSA 2048)"]


def test_expired_certificate_is_refused(tmp_path: Path, ca: Any) -> None:
    issue(ca, ["old.example"], days=-2, start_days=-30).write(tmp_path, "old")
    [msg] = load_errors(tmp_path, spec_with({"protocol": "https", "certificates": [{"cert": "old.pem", "key": "old.key"}]}))
    assert msg.startswith(f"listeners.0.certificates.0.cert: {tmp_path}/old.pem: expired on ") and msg.endswith("; renew it")


def test_garbage_and_weak_keys(tmp_path: Path, ca: Any) -> None:
    (tmp_path / "junk.pem").write_text("hello\n")
    issue(ca, ["w.example"], kind="rsa1024").write(tmp_path, "weak")
    certs = [{"cert": "junk.pem", "key": "weak.key"}, {"cert": "weak.pem", "key": "weak.key"}]
    msgs = load_errors(tmp_path, spec_with({"protocol": "tls", "certificates": certs}))
    assert msgs == [
        f"listeners.0.certificates.0.cert: {tmp_path}/junk.pem: not a PEM certificate (expected -----BEGIN CERTIFICATE-----)",
        f"listeners.0.certificates.1.cert: {tmp_path}/weak.pem: an RSA key of 1024 bits; use 2048 bits or more, or ECDSA P-256"]


def test_trust_store_and_ticket_secret_are_read(tmp_path: Path, ca: Any) -> None:
    issue(ca, ["s.example"]).write(tmp_path, "s")
    (tmp_path / "ca.pem").write_text("not a certificate")
    (tmp_path / "ticket.key").write_bytes(b"short")
    listener = {"protocol": "https", "certificates": [{"cert": "s.pem", "key": "s.key"}],
                "mutual_authentication": {"mode": "verify", "trust_store": "ca.pem"},
                "session_tickets": {"key_file": "ticket.key"}}
    assert load_errors(tmp_path, spec_with(listener)) == [
        f"listeners.0.mutual_authentication.trust_store: {tmp_path}/ca.pem: not a PEM certificate (expected -----BEGIN CERTIFICATE-----)",
        f"listeners.0.session_tickets.key_file: {tmp_path}/ticket.key: 5 bytes; a ticket secret needs at least 32 "
        "(make one: head -c 48 /dev/urandom > FILE; chmod 600 FILE)"]
    (tmp_path / "ca.pem").write_bytes(ca.pem())
    (tmp_path / "ticket.key").write_bytes(b"k" * 48)
    assert load_spec(tmp_path / "fivenines.yaml").listeners[0].mutual_authentication.mode == "verify"


def test_near_expiry_and_chain_order_are_warnings(tmp_path: Path, ca: Any) -> None:
    leaf = issue(ca, ["soon.example"], days=10)
    leaf.write(tmp_path, "soon", chain=(make_ca("another CA"),))
    spec = load_spec(write(tmp_path, spec_with({"protocol": "https", "certificates": [{"cert": "soon.pem", "key": "soon.key"}]})))
    warnings = [str(w) for w in tls_file_problems(spec, tmp_path, time.time()).warnings]
    assert len(warnings) == 2
    assert re.fullmatch(rf"listeners\.0\.certificates\.0\.cert: {tmp_path}/soon\.pem: expires in (9\.9|10\.0) days "
                        r"\(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\); renew it", warnings[0]), warnings[0]
    assert "the chain is out of order: CN=another CA did not issue CN=soon.example" in warnings[1]


def test_cli_validate_exit_2_and_warns(tmp_path: Path, ca: Any) -> None:
    issue(ca, ["soon.example"], days=5).write(tmp_path, "soon")
    ok = write(tmp_path, spec_with({"protocol": "https", "certificates": [{"cert": "soon.pem", "key": "soon.key"}]}))
    r = subprocess.run([PY, "-m", "fivenines", "validate", "--no-port-check", str(ok)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "listeners.0.certificates.0.cert" in r.stderr and re.search(r"expires in (4\.9|5\.0) days", r.stderr)
    bad = write(tmp_path, spec_with({"protocol": "https", "certificates": [{"cert": "soon.pem", "key": "gone.key"}]}))
    r = subprocess.run([PY, "-m", "fivenines", "validate", "--no-port-check", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert f"listeners.0.certificates.0.key: {tmp_path}/gone.key: cannot read" in r.stderr.replace("\n", "")
