"""Test certificates made at test time with ``cryptography``: a CA, ECDSA P-256 and RSA leaves,
wildcards, expired ones, client certificates for mutual TLS. Nothing is checked in."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def new_key(kind: str = "ec") -> Any:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    bits = int(kind[3:]) if kind.startswith("rsa") and kind[3:] else 2048
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@dataclass
class Issued:
    cert: x509.Certificate
    key: Any

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def write(self, folder: Path, stem: str, chain: tuple[Issued, ...] = ()) -> tuple[Path, Path]:
        """``stem.pem`` (leaf, then ``chain``) and ``stem.key``; returns both paths."""
        folder.mkdir(parents=True, exist_ok=True)
        cert, key = folder / f"{stem}.pem", folder / f"{stem}.key"
        cert.write_bytes(self.pem() + b"".join(c.pem() for c in chain))
        key.write_bytes(self.key_pem())
        key.chmod(0o600)
        return cert, key


def make_ca(name: str = "fivenines test CA", kind: str = "ec") -> Issued:
    key = new_key(kind)
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue(ca: Issued, names: list[str], *, kind: str = "ec", days: float = 90, start_days: float = -1,
          client: bool = False, common_name: str | None = None) -> Issued:
    """A leaf for ``names`` (DNS names, or IP addresses) signed by ``ca``, valid ``days`` from now."""
    key = new_key(kind)
    now = dt.datetime.now(dt.UTC)
    cn = common_name or (names[0] if names else "client")
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=start_days)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
    )
    if names:
        alt: list[x509.GeneralName] = []
        for n in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def client_ctx(pki: dict[str, Any], cert: str | None = None, **versions: ssl.TLSVersion) -> ssl.SSLContext:
    """A client context trusting the test CA (``pki["dir"]/ca.pem``), with the client certificate
    ``cert`` (``NAME.pem``/``NAME.key`` there) and the protocol bounds given (``maximum_version=...``)."""
    ctx = ssl.create_default_context(cafile=str(pki["dir"] / "ca.pem"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if ssl.TLSVersion.TLSv1_1 in versions.values():  # so that a refusal is the server's, not ours
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        for k, v in versions.items():
            setattr(ctx, k, v)
    if cert:
        ctx.load_cert_chain(pki["dir"] / f"{cert}.pem", pki["dir"] / f"{cert}.key")
    return ctx


def make_pki(d: Path, servers: list[tuple[str, list[str], str]]) -> dict[str, Any]:
    """A test PKI in ``d``: ``ca.pem`` (the servers' CA), ``clients.pem`` (the client CA), a
    certificate and key per ``(file name, DNS names, "ec" or "rsa")`` of ``servers``, and two
    client certificates: ``alice`` (of the client CA) and ``mallory`` (of a stranger CA)."""
    ca, client_ca, other_ca = make_ca(), make_ca("client CA"), make_ca("stranger CA")
    (d / "ca.pem").write_bytes(ca.pem())
    (d / "clients.pem").write_bytes(client_ca.pem())
    for name, names, kind in servers:
        issue(ca, names, kind=kind).write(d, name)
    issue(client_ca, [], client=True, common_name="alice").write(d, "alice")
    issue(other_ca, [], client=True, common_name="mallory").write(d, "mallory")
    return {"dir": d, "ca": ca}
