"""Certificate and key files: read, checked, described. The I/O edge of TLS configuration.

:func:`read_certificate` reads a listener's PEM certificate chain and key, checks
that they parse, that the key is the certificate's and that OpenSSL accepts the
pair, and returns a :class:`CertificateInfo` (subject, SANs, expiry, key type,
fingerprint): the read model ``fivenines status`` and ``/metrics`` show.
:func:`tls_file_problems` runs those checks over a spec at validate and reload
time; every problem names the file, the field path and what would be valid.

Parsing uses the ``cryptography`` package; the final word on a pair is OpenSSL's
own (``SSLContext.load_cert_chain``), the same call that will serve it.
"""

from __future__ import annotations

import hashlib
import itertools
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from fivenines.core.tls import (
    EXPIRY_WARNING_DAYS,
    CertificateMaterial,
    ClientCertificate,
    days_left,
)
from fivenines.errors import ConfigError, FieldError

# ``spec`` below is a fivenines.spec.Spec, typed Any: spec.py calls this module (load_spec checks
# the TLS files), so this module does not import it back (tests/unit/test_imports.py).
MIN_RSA_BITS = 2048
EC_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


class CertificateError(ConfigError):
    """A certificate, key or trust store file that cannot be served. ``file``: which one."""

    def __init__(self, file: str, message: str) -> None:
        self.file = file
        self.message = message
        super().__init__(f"{file}: {message}")


@dataclass(frozen=True)
class CertificateInfo:
    """What a served certificate is, for status and metrics (no key material)."""

    file: str
    subject: str
    issuer: str
    sans: tuple[str, ...]  # DNS names and IP addresses of the subject alternative names
    names: tuple[str, ...]  # what SNI matches against: the DNS SANs, else the common name
    not_before: float  # POSIX seconds
    not_after: float
    key_type: str  # "ECDSA P-256", "RSA 2048"
    fingerprint: str  # SHA-256 of the leaf, hex
    chain: int  # certificates in the file, the leaf included

    def days_left(self, now: float) -> float:
        return days_left(self.not_after, now)

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "file": self.file, "subject": self.subject, "issuer": self.issuer, "sans": list(self.sans),
            "not_before": _iso(self.not_before), "not_after": _iso(self.not_after),
            "days_left": round(self.days_left(now), 2), "key_type": self.key_type,
            "fingerprint_sha256": self.fingerprint, "chain": self.chain,
        }

    def __repr__(self) -> str:
        return f"<CertificateInfo {self.subject} {self.key_type} until {_iso(self.not_after)}>"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertificateError(str(path), f"cannot read: {exc.strerror or exc}") from None


def load_pem_chain(path: Path) -> list[x509.Certificate]:
    data = _read(path)
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateError(str(path), "not a PEM certificate (expected -----BEGIN CERTIFICATE-----)") from None
    if not chain:
        raise CertificateError(str(path), "no certificate in the file")
    return chain


def _names(cert: x509.Certificate) -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(ext.get_values_for_type(x509.DNSName))
        ips = tuple(str(a) for a in ext.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    names = dns or tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    return dns + ips, names


def _key_type(key: Any) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"ECDSA {EC_CURVES.get(key.curve.name, key.curve.name)}"
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"RSA {key.key_size}"
    return type(key).__name__


def _check_key_type(file: str, key: Any) -> None:
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise CertificateError(file, f"an RSA key of {key.key_size} bits; use {MIN_RSA_BITS} bits or more, or ECDSA P-256")
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in EC_CURVES:
        raise CertificateError(file, f"curve {key.curve.name}: use P-256, P-384 or P-521")
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise CertificateError(file, f"a {type(key).__name__} key: use RSA ({MIN_RSA_BITS}+ bits) or ECDSA (P-256, P-384, P-521)")


def read_certificate(cert_path: Path, key_path: Path, now: float) -> CertificateInfo:
    """The certificate in ``cert_path`` served with the key in ``key_path``, checked; raises
    :class:`CertificateError` naming the file when it cannot be served (expired included)."""
    chain = load_pem_chain(cert_path)
    leaf = chain[0]
    cert_file, key_file = str(cert_path), str(key_path)
    public = leaf.public_key()
    _check_key_type(cert_file, public)
    try:
        key = serialization.load_pem_private_key(_read(key_path), password=None)
    except TypeError:
        raise CertificateError(key_file, "the key is encrypted; fivenines needs it unencrypted "
                               "(openssl pkey -in KEY -out KEY.plain), readable by fivenines only") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError(key_file, "not a PEM private key (expected -----BEGIN PRIVATE KEY-----, "
                               "-----BEGIN EC PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)") from None
    pub_bytes = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_bytes = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if pub_bytes != key_bytes:
        raise CertificateError(key_file, f"this key does not belong to the certificate in {cert_file} "
                               f"(the certificate's key is {_key_type(public)}, this one {_key_type(key)})")
    not_after = leaf.not_valid_after_utc.timestamp()
    if not_after <= now:
        raise CertificateError(cert_file, f"expired on {_iso(not_after)}; renew it")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        raise CertificateError(cert_file, f"OpenSSL refuses the pair: {exc}") from None
    sans, names = _names(leaf)
    if not names:
        raise CertificateError(cert_file, "the certificate names no host (no DNS subject alternative name, no common name)")
    return CertificateInfo(
        file=cert_file,
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        sans=sans,
        names=names,
        not_before=leaf.not_valid_before_utc.timestamp(),
        not_after=not_after,
        key_type=_key_type(public),
        fingerprint=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
        chain=len(chain),
    )


def certificate_warnings(info: CertificateInfo, chain: list[x509.Certificate], now: float) -> list[str]:
    """Servable, but worth saying: near expiry, not valid yet, a chain out of order."""
    out = []
    left = info.days_left(now)
    if left < EXPIRY_WARNING_DAYS:
        out.append(f"expires in {left:.1f} days ({_iso(info.not_after)}); renew it")
    if info.not_before > now:
        out.append(f"not valid before {_iso(info.not_before)}; clients refuse it until then")
    for a, b in itertools.pairwise(chain):
        if a.issuer != b.subject:
            out.append(f"the chain is out of order: {b.subject.rfc4514_string()} did not issue "
                       f"{a.subject.rfc4514_string()} (leaf first, then each issuer)")
            break
    return out


def read_trust_store(path: Path) -> list[str]:
    """The subjects of the CA certificates in a trust store file; raises CertificateError."""
    chain = load_pem_chain(path)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=str(path))
    except (ssl.SSLError, OSError) as exc:
        raise CertificateError(str(path), f"OpenSSL refuses the trust store: {exc}") from None
    return [c.subject.rfc4514_string() for c in chain]


def client_certificate(der: bytes) -> ClientCertificate:
    """The forwarded fields of a client certificate (DER, as ``getpeercert(binary_form=True)`` gives)."""
    cert = x509.load_der_x509_certificate(der)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return ClientCertificate(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=f"{cert.serial_number:X}",
        not_before=cert.not_valid_before_utc.strftime(fmt),
        not_after=cert.not_valid_after_utc.strftime(fmt),
        pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
    )


# --------------------------------------------------------------------------- a spec's files


@dataclass
class Problems:
    errors: list[FieldError]
    warnings: list[FieldError]


def listener_files(lst: Any, base: Path) -> Iterable[tuple[str, Path, Path]]:
    """``(field path suffix, cert path, key path)`` of each certificate of a listener."""
    for j, c in enumerate(lst.certificates):
        yield f"certificates.{j}", base / c.cert, base / c.key


def tls_file_problems(spec: Any, base: Path, now: float) -> Problems:
    """Every TLS file of ``spec`` (paths relative to ``base``, the spec's folder) read and checked."""
    p = Problems([], [])
    for i, lst in enumerate(spec.listeners):
        if not lst.tls or lst.passthrough:
            continue
        path = f"listeners.{i}"
        for where, cert, key in listener_files(lst, base):
            try:
                info = read_certificate(cert, key, now)
            except CertificateError as exc:
                field = "key" if exc.file == str(key) else "cert"
                p.errors.append(FieldError(f"{path}.{where}.{field}", f"{exc.file}: {exc.message}"))
                continue
            for w in certificate_warnings(info, load_pem_chain(cert), now):
                p.warnings.append(FieldError(f"{path}.{where}.cert", f"{cert}: {w}"))
        mtls = lst.mutual_authentication
        if mtls.mode == "verify" and mtls.trust_store:
            try:
                read_trust_store(base / mtls.trust_store)
            except CertificateError as exc:
                p.errors.append(FieldError(f"{path}.mutual_authentication.trust_store", f"{exc.file}: {exc.message}"))
        kf = lst.session_tickets.key_file
        if lst.session_tickets.enabled and kf:
            try:
                read_ticket_secret(base / kf)
            except CertificateError as exc:
                p.errors.append(FieldError(f"{path}.session_tickets.key_file", f"{exc.file}: {exc.message}"))
    return p


MIN_TICKET_SECRET = 32


def read_ticket_secret(path: Path) -> bytes:
    """The shared ticket secret in ``path`` (at least 32 bytes; e.g. ``head -c 48 /dev/urandom``)."""
    data = _read(path)
    if len(data) < MIN_TICKET_SECRET:
        raise CertificateError(str(path), f"{len(data)} bytes; a ticket secret needs at least {MIN_TICKET_SECRET} "
                               "(make one: head -c 48 /dev/urandom > FILE; chmod 600 FILE)")
    return data


def read_materials(spec: Any, base: Path) -> dict[str, CertificateMaterial]:
    """The certificates of ``spec`` to import into ACM, by their ``cert`` path as written (files of
    entries with an ``arn`` are not read). A file that cannot be read is left out: the mapping
    reports it as a finding, and ``validate`` has already named it."""
    out: dict[str, CertificateMaterial] = {}
    for lst in spec.listeners:
        if not lst.tls or lst.passthrough:
            continue
        for c in lst.certificates:
            if c.arn or c.cert in out:
                continue
            try:
                chain = load_pem_chain(base / c.cert)
                key = _read(base / c.key)
            except CertificateError:
                continue
            pem = serialization.Encoding.PEM
            fingerprint, domain = certificate_facts(chain[0].public_bytes(pem))
            out[c.cert] = CertificateMaterial(
                fingerprint=fingerprint,
                domain=domain,
                certificate=chain[0].public_bytes(pem),
                chain=b"".join(x.public_bytes(pem) for x in chain[1:]),
                private_key=key,
            )
    return out


def certificate_facts(pem: bytes) -> tuple[str, str]:
    """``(SHA-256 fingerprint, first name)`` of a PEM certificate: how a certificate imported into
    ACM is recognised when read back (the same function on both sides, so nothing drifts)."""
    cert = x509.load_pem_x509_certificate(pem)
    _sans, names = _names(cert)
    fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return fingerprint, names[0] if names else cert.subject.rfc4514_string()
