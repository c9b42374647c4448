"""TLS contexts of one listener: built from the spec, switched by SNI, reloaded without a drop.

A :class:`ListenerTls` owns the ``ssl.SSLContext`` objects of an https/tls listener:

* :attr:`~ListenerTls.context` is the **front** context, which each handshake starts on
  (the SSL protocol :mod:`fivenines.proxy.tls_serve` puts in place at accept, or ``create_server(ssl=...)``).
  A reload of certificates or policy keeps its identity; its SNI callback moves
  each new handshake to the context of the certificate :class:`~fivenines.core.tls.CertificateSelector`
  picks (certificates with the same names, e.g. an ECDSA and an RSA one, share a
  context, and OpenSSL serves each client the one it supports) and leaves the client's
  server name on the ``SSLObject`` (:func:`server_name`: tls listeners route by it);
* :meth:`~ListenerTls.reload` reads the files again and builds every context anew
  *before* swapping them in one assignment: new handshakes get the new certificates,
  established connections keep theirs (an ``SSLObject`` holds its own context); a
  bad or mismatched file raises :class:`~fivenines.certs.CertificateError` naming it,
  and the running contexts stay;
* protocol versions and ciphers come from the ELB policy
  (:data:`fivenines.core.tls.POLICIES`): ``minimum_version``/``maximum_version``,
  ``set_ciphers`` for TLS 1.2 and older, and the TLS 1.3 suites in AWS's order through
  :mod:`fivenines.proxy.openssl`; ALPN offers ``http/1.1`` on https;
* mutual TLS as ALB's: ``verify`` requires a client certificate the trust store vouches
  for, ``passthrough`` asks for any and forwards it; :meth:`~ListenerTls.client_identity`
  gives the headers for a connection;
* session tickets: keys from :func:`fivenines.core.tls.ticket_keys` (one secret shared
  by every worker, rotated by :meth:`~ListenerTls.rotate_tickets`), or resumption off.

:meth:`~ListenerTls.certificates` is the read model ``status`` and ``/metrics`` show.
"""

from __future__ import annotations

import logging
import os
import secrets
import ssl
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fivenines.certs import (
    CertificateError,
    CertificateInfo,
    client_certificate,
    read_certificate,
    read_ticket_secret,
    read_trust_store,
)
from fivenines.core.tls import (
    CertificateSelector,
    Policy,
    TicketKeys,
    client_identity_headers,
    policy,
    ticket_keys,
)
from fivenines.proxy import openssl
from fivenines.spec import ListenerSpec

log = logging.getLogger("fivenines.tls")

_VERSIONS = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1,
             "TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_NO_CHECK_TIME = 0x200000  # X509_V_FLAG_NO_CHECK_TIME: ALB's ignore_client_certificate_expiry
TICKET_SECRET_FILE = "tls-tickets.secret"
SNI_ATTRIBUTE = "fivenines_sni"
"""Where the SNI callback leaves the client's server name on its ``SSLObject`` (see :func:`server_name`)."""
FRONT_FIELDS = ("protocol", "mutual_authentication", "session_tickets")
"""Listener fields the front context is built from: a reload changing one builds a new :class:`ListenerTls`."""


class DirectSSLObject(ssl.SSLObject):
    """The ``SSLObject`` of every handshake on a listener's contexts (``sslobject_class``), with
    the calls made per record (``read``, ``write``, ``do_handshake``, ``pending``) bound straight
    to the C object under it: ``ssl.SSLObject``'s own are Python functions that only forward the
    same arguments to it, a Python frame per record read or written (and per want-read the
    loop's SSL protocol meets, an exception unwound through that frame). Same calls, same
    results, same exceptions; everything else is ``ssl.SSLObject``'s."""

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> DirectSSLObject:
        obj: DirectSSLObject = super()._create(*args, **kwargs)  # type: ignore[misc]
        c = obj._sslobj  # type: ignore[attr-defined]
        obj.__dict__.update(read=c.read, write=c.write, do_handshake=c.do_handshake, pending=c.pending)
        return obj


def server_name(obj: Any) -> str | None:
    """The server name (SNI) the client of this ``SSLObject`` sent, as the SNI callback saw it."""
    name = getattr(obj, SNI_ATTRIBUTE, None)
    return name if isinstance(name, str) else None


def ticket_secret(lst: ListenerSpec, base: Path, state_dir: Path) -> bytes:
    """The secret the ticket keys derive from: ``session_tickets.key_file`` (shared across nodes),
    else ``STATE_DIR/tls-tickets.secret``, made once (48 random bytes, mode 0600) and shared by
    every worker of this fivenines."""
    if lst.session_tickets.key_file:
        return read_ticket_secret(base / lst.session_tickets.key_file)
    path = state_dir / TICKET_SECRET_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(48))
        try:
            os.link(tmp, path)  # the first writer wins; everyone reads the same secret
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return read_ticket_secret(path)


@dataclass(frozen=True)
class _State:
    """Everything a reload replaces at once."""

    selector: CertificateSelector
    contexts: tuple[ssl.SSLContext, ...]  # one per certificate group
    group_of: tuple[int, ...]  # certificate index -> context index
    infos: tuple[CertificateInfo, ...]


@dataclass(frozen=True)
class Prepared:
    """A reload of one listener's TLS, read and built, not yet switched to (:meth:`ListenerTls.apply`)."""

    spec: ListenerSpec
    base: Path
    state: _State


class ListenerTls:
    """The TLS side of one https/tls listener (see the module docstring)."""

    def __init__(self, lst: ListenerSpec, base: Path, *, name: str = "", ticket_secret: bytes | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name or f"{lst.host}:{lst.port}"
        self.clock = clock
        self.spec = lst
        self.policy = policy(lst.ssl_policy)
        self._secret = ticket_secret
        now = clock()
        self._base = base
        self.keyring: openssl.TicketKeyring | None = None
        if lst.session_tickets.enabled and ticket_secret is not None and not openssl.unavailable():
            self.keyring = openssl.TicketKeyring(self._keys(now), on_error=self._ticket_error)
        self.context = self._new_context(lst, None)  # the front context
        self.context.sni_callback = self._sni
        self.reloads = 0
        self.sni_misses = 0
        self._state = self._build(lst, base, now)

    # ------------------------------------------------------------------ building

    def _keys(self, now: float) -> TicketKeys:
        assert self._secret is not None
        return ticket_keys(self._secret, now, self.spec.session_tickets.rotation)

    def _ticket_error(self, exc: BaseException) -> None:
        log.error("tls %s: session ticket callback failed: %r", self.name, exc)

    def _new_context(self, lst: ListenerSpec, chain: tuple[Path, Path] | None,
                     more: tuple[tuple[Path, Path], ...] = ()) -> ssl.SSLContext:
        """A server context with the listener's policy, ALPN, mTLS and tickets (and certificates)."""
        p = self.policy
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.sslobject_class = DirectSSLObject
        with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated in Python; some ELB policies allow them
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = _VERSIONS[p.min_version]
            ctx.maximum_version = _VERSIONS[p.max_version]
        _set_ciphers(ctx, p)
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
        if lst.protocol == "https":
            ctx.set_alpn_protocols(["http/1.1"])
        for cert, key in (chain, *more) if chain is not None else ():
            ctx.load_cert_chain(cert, key)
        self._mutual(ctx, lst)
        self._tickets(ctx, lst)
        return ctx

    def _mutual(self, ctx: ssl.SSLContext, lst: ListenerSpec) -> None:
        mtls = lst.mutual_authentication
        if mtls.mode == "verify":
            assert mtls.trust_store is not None
            path = self._base / mtls.trust_store
            read_trust_store(path)
            ctx.load_verify_locations(cafile=str(path))
            ctx.verify_mode = ssl.CERT_REQUIRED
            if mtls.ignore_client_certificate_expiry:
                ctx.verify_flags = ssl.VerifyFlags(int(ctx.verify_flags) | _NO_CHECK_TIME)
        elif mtls.mode == "passthrough":
            if openssl.unavailable():
                raise CertificateError(self.name, "mutual_authentication passthrough needs the OpenSSL binding, which is "
                                       f"unavailable here ({openssl.unavailable()}); use mode verify")
            ctx.verify_mode = ssl.CERT_OPTIONAL
            openssl.accept_any_client_certificate(ctx)

    def _tickets(self, ctx: ssl.SSLContext, lst: ListenerSpec) -> None:
        st = lst.session_tickets
        if not st.enabled:
            ctx.options |= ssl.OP_NO_TICKET
            ctx.num_tickets = 0
            if not openssl.unavailable():
                openssl.disable_session_cache(ctx)
            return
        if self.keyring is not None:
            openssl.set_session_timeout(ctx, int(st.rotation))
            self.keyring.install(ctx)

    def _build(self, lst: ListenerSpec, base: Path, now: float) -> _State:
        """Read every file and build every context; raises before anything is swapped."""
        self._base = base
        infos: list[CertificateInfo] = []
        paths: list[tuple[Path, Path]] = []
        for c in lst.certificates:
            cert, key = base / c.cert, base / c.key
            infos.append(read_certificate(cert, key, now))
            paths.append((cert, key))
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, info in enumerate(infos):
            groups.setdefault(tuple(sorted(n.lower() for n in info.names)), []).append(i)
        group_of = [0] * len(infos)
        contexts: list[ssl.SSLContext] = []
        for g, members in enumerate(groups.values()):
            for i in members:
                group_of[i] = g
            try:
                contexts.append(self._new_context(lst, paths[members[0]], tuple(paths[i] for i in members[1:])))
            except ssl.SSLError as exc:
                raise CertificateError(str(paths[members[0]][0]), f"OpenSSL refuses it: {exc}") from None
        default = next((i for i, c in enumerate(lst.certificates) if c.default), 0)
        selector = CertificateSelector([info.names for info in infos], default)
        return _State(selector, tuple(contexts), tuple(group_of), tuple(infos))

    # ------------------------------------------------------------------ serving

    def _sni(self, obj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _front: ssl.SSLContext) -> None:
        """OpenSSL's servername callback: move the handshake to the chosen certificate's context."""
        state = self._state
        chosen = state.selector.find(server_name)
        if chosen is None:
            chosen = state.selector.default
            self.sni_misses += server_name is not None
        obj.context = state.contexts[state.group_of[chosen]]
        if server_name is not None:
            setattr(obj, SNI_ATTRIBUTE, server_name)  # the server side has no call for it (server_name())

    def select(self, server_name: str | None) -> CertificateInfo:
        """The certificate a handshake naming ``server_name`` gets now."""
        state = self._state
        return state.infos[state.selector.select(server_name)]

    def client_identity(self, obj: ssl.SSLObject | ssl.SSLSocket) -> list[tuple[str, str]]:
        """The headers carrying the client's certificate (none without mTLS or a certificate)."""
        mtls = self.spec.mutual_authentication
        if mtls.mode == "off":
            return []
        der = obj.getpeercert(binary_form=True)
        return client_identity_headers(mtls.mode, client_certificate(der) if der else None, mtls.header_prefix)

    # ------------------------------------------------------------------ changes

    def reload(self, lst: ListenerSpec, base: Path) -> list[str]:
        """Re-read the certificates (and trust store) of ``lst`` and switch to them atomically:
        :meth:`prepare`, then :meth:`apply`. Raises :class:`CertificateError` (the file, what is
        wrong) and keeps the running contexts when anything cannot be served. Returns what
        changed, for the reload report."""
        return self.apply(self.prepare(lst, base))

    def prepare(self, lst: ListenerSpec, base: Path) -> Prepared:
        """Read every file of ``lst`` and build every context, changing nothing (a reload's first
        step: every listener is prepared before any is switched). Raises :class:`CertificateError`."""
        now = self.clock()
        old_policy, old_spec, old_base = self.policy, self.spec, self._base
        self.policy, self.spec = policy(lst.ssl_policy), lst  # (_build reads them)
        try:
            state = self._build(lst, base, now)
        finally:
            self.policy, self.spec, self._base = old_policy, old_spec, old_base
        return Prepared(lst, base, state)

    def apply(self, prep: Prepared) -> list[str]:
        """Switch to what :meth:`prepare` built, in one assignment: new handshakes get it, open
        connections keep theirs. The policy of new handshakes follows too (the front context is
        updated in place). Returns what changed."""
        now = self.clock()
        old_policy = self.policy
        before = {i.fingerprint: i for i in self._state.infos}
        after = {i.fingerprint: i for i in prep.state.infos}
        self.policy, self.spec, self._base = policy(prep.spec.ssl_policy), prep.spec, prep.base
        if self.policy is not old_policy:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self.context.minimum_version = _VERSIONS[self.policy.min_version]
                self.context.maximum_version = _VERSIONS[self.policy.max_version]
            _set_ciphers(self.context, self.policy)
        self._state = prep.state
        self.reloads += 1
        changes = [f"tls {self.name}: certificate {i.subject} ({i.file}) now served, until {i.to_json(now)['not_after']}"
                   for fp, i in after.items() if fp not in before]
        changes += [f"tls {self.name}: certificate {i.subject} ({i.file}) no longer served"
                    for fp, i in before.items() if fp not in after]
        if self.policy is not old_policy:
            changes.append(f"tls {self.name}: ssl_policy {old_policy.name} -> {self.policy.name}")
        return changes

    def rotate_tickets(self) -> float | None:
        """Install the ticket keys of now; returns when to call again (None: nothing to rotate)."""
        if self.keyring is None:
            return None
        keys = self._keys(self.clock())
        self.keyring.set(keys)
        return keys.next_rotation

    # ------------------------------------------------------------------ read model

    @property
    def infos(self) -> tuple[CertificateInfo, ...]:
        return self._state.infos

    @property
    def tickets(self) -> str:
        """How sessions resume: ``shared`` keys, ``per-process`` keys, or ``off``."""
        if not self.spec.session_tickets.enabled:
            return "off"
        return "shared" if self.keyring is not None else "per-process"

    def certificates(self) -> list[dict[str, Any]]:
        """Each served certificate (subject, SANs, expiry, days left, default or not), for status."""
        now = self.clock()
        default = self._state.selector.default
        return [{**info.to_json(now), "default": i == default} for i, info in enumerate(self._state.infos)]

    def status(self) -> dict[str, Any]:
        return {"listener": self.name, "ssl_policy": self.policy.name, "tickets": self.tickets,
                "mutual_authentication": self.spec.mutual_authentication.mode, "reloads": self.reloads,
                "certificates": self.certificates()}

    def __repr__(self) -> str:
        return (f"<ListenerTls {self.name} {self.policy.name} {len(self._state.infos)} certificates "
                f"in {len(self._state.contexts)} contexts, tickets {self.tickets}>")


def _set_ciphers(ctx: ssl.SSLContext, p: Policy) -> None:
    if p.tls12_ciphers:
        # TLS 1.0/1.1 sign with SHA-1/MD5, which OpenSSL 3 refuses at its default security level
        ctx.set_ciphers(p.openssl_cipher_string + (":@SECLEVEL=0" if p.min_version in ("TLSv1", "TLSv1.1") else ""))
    if p.tls13_suites and not openssl.unavailable():
        openssl.set_tls13_suites(ctx, p.tls13_suites)
