"""Serving TLS on a listener: the accept gate, the handshake, passthrough.

An https listener is the HTTP :class:`~fivenines.proxy.listener.Listener` and a tls listener
the :class:`~fivenines.proxy.tcp.TcpListener`, each with a :class:`TlsServing` beside it, so
that what TLS adds stays here and the plain listeners pay nothing for it:

* https (:func:`serve_https`): the listener accepts on its own socket
  (:class:`~fivenines.proxy.tls_socket.TlsAccept`, its ``start_server`` hook) and each
  connection is a :class:`~fivenines.proxy.tls_socket.TlsConnection`: OpenSSL on the socket
  itself for the handshake and every record, then the ``ClientConnection``'s transport; the
  admission, deadline, counters, SNI and mutual TLS below are the same.
* :class:`TlsGate` (tls, the accept hook ``listener.accept``): at accept, before a byte of the handshake is read, the
  connection takes a place among the listener's handshakes in progress
  (``limits.max_handshakes``, per worker, :class:`~fivenines.core.limits.Admission`); over
  the cap it is closed at once, so a flood of handshakes costs no signature. Then
  the loop's SSL protocol runs the handshake (uvloop's TLS layer, in C) with the listener's
  front context (:class:`~fivenines.proxy.tls.ListenerTls`: SNI, policy, mTLS, tickets) and
  ``timeouts.handshake`` as its deadline; only a finished handshake makes the listener's own
  connection protocol (:class:`~fivenines.proxy.client.ClientConnection`,
  :class:`~fivenines.proxy.tcp.TcpClient`), which sees the TLS transport as any other.
  With mutual TLS the client's certificate becomes the connection's identity headers.
* :class:`PassthroughGate` (tls with ``passthrough: true``): reads the ClientHello without
  decrypting (:func:`fivenines.core.tls.parse_client_hello`: at most 16 KiB, within the
  handshake timeout, counted among the handshakes), routes by its server name with the
  listener's rules, then hands the connection to a :class:`~fivenines.proxy.tcp.TcpClient`
  with the bytes read so far, which go to the target first; then the stream is spliced.

:class:`TlsServing` also rotates the session ticket keys on schedule (every worker derives
the same keys from the shared secret, :func:`fivenines.core.tls.ticket_keys`), reloads the
certificates (:meth:`TlsServing.prepare` then :meth:`TlsServing.apply`, so a reload checks
every listener before it switches any) and is the read model of ``status`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fivenines.core.limits import Admission
from fivenines.core.tls import ClientHello, NeedMore, parse_client_hello
from fivenines.proxy.listener import Listener
from fivenines.proxy.tcp import TcpClient, TcpListener
from fivenines.proxy.tls import FRONT_FIELDS, ListenerTls, Prepared, server_name
from fivenines.proxy.tls_socket import TlsAccept, TlsConnection, listening_socket
from fivenines.spec import ListenerSpec

log = logging.getLogger("fivenines.tls")

_COUNTERS = ("handshakes", "resumed", "failed", "timed_out", "refused")


class TlsCounters:
    """Handshakes of one listener: done (of which ``resumed``), ``failed``, ``timed_out``, and
    ``refused`` at accept over ``limits.max_handshakes``."""

    __slots__ = _COUNTERS

    def __init__(self) -> None:
        self.handshakes = 0
        self.resumed = 0
        self.failed = 0
        self.timed_out = 0
        self.refused = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in _COUNTERS}

    def set_from(self, values: dict[str, int]) -> None:
        for k in _COUNTERS:
            setattr(self, k, values.get(k, 0))


class Identified(Protocol):
    """A connection protocol that forwards the client's identity (the HTTP ClientConnection)."""

    identity: tuple[bytes, list[tuple[bytes, bytes]]] | None


@dataclass(frozen=True)
class TlsReload:
    """One listener's reload, built (:meth:`TlsServing.prepare`) and not yet switched to."""

    prepared: Prepared | None  # certificates and policy: switched in place
    fresh: ListenerTls | None  # mutual TLS or tickets changed: a new front context


class TlsServing:
    """What an https/tls listener adds while it serves (see the module docstring).

    ``tls`` is None on a passthrough listener (it holds no certificate)."""

    def __init__(self, ls: ListenerSpec, base: Path, *, name: str = "", ticket_secret: bytes | None = None,
                 tls: ListenerTls | None = None, clock: Callable[[], float] = time.time) -> None:
        self.name = name or f"{ls.host}:{ls.port}"
        self.spec = ls
        self.clock = clock
        self.secret = ticket_secret
        if tls is None and not ls.passthrough:
            tls = ListenerTls(ls, base, name=self.name, ticket_secret=ticket_secret, clock=clock)
        self.tls = tls
        self.handshakes = Admission(ls.limits.max_handshakes, None)
        self.timeout = ls.timeouts.handshake
        self.counters = TlsCounters()
        self.passthrough = ls.passthrough
        self._rotation: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return (f"<TlsServing {self.name} handshakes={self.handshakes.total}/{self.handshakes.max_total} "
                f"{'passthrough' if self.tls is None else repr(self.tls)}>")

    # ------------------------------------------------------------------ lifecycle

    def start(self, loop: asyncio.AbstractEventLoop, address: tuple[str, int] | None = None) -> None:
        """The listener is bound (at ``address``): schedule the ticket key rotation (when keys
        are ours to rotate)."""
        if address is not None:
            self.name = f"{address[0]}:{address[1]}"
            if self.tls is not None:
                self.tls.name = self.name
        self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        tls = self.tls
        at = tls.rotate_tickets() if tls is not None else None
        if at is None:
            self._rotation = None
            return
        # a little after the epoch starts: every worker derives the same keys on its own clock
        self._rotation = loop.call_later(max(1.0, at - self.clock() + 0.5), self._schedule, loop)

    def stop(self) -> None:
        """Stop rotating (handshakes still in progress end by ``timeouts.handshake``)."""
        if self._rotation is not None:
            self._rotation.cancel()
            self._rotation = None

    # ------------------------------------------------------------------ reload

    def prepare(self, ls: ListenerSpec, base: Path, ticket_secret: bytes | None) -> TlsReload:
        """Read and build what ``ls`` serves, changing nothing; raises
        :class:`~fivenines.certs.CertificateError` naming the file."""
        if ls.passthrough or self.tls is None:
            return TlsReload(None, None)
        if any(getattr(ls, f) != getattr(self.spec, f) for f in FRONT_FIELDS) or ticket_secret != self.secret:
            return TlsReload(None, ListenerTls(ls, base, name=self.name, ticket_secret=ticket_secret, clock=self.clock))
        return TlsReload(self.tls.prepare(ls, base), None)

    def apply(self, ls: ListenerSpec, plan: TlsReload, ticket_secret: bytes | None) -> list[str]:
        """Switch to ``plan``: new handshakes get it; open connections keep what they have."""
        self.spec = ls
        self.handshakes.max_total = ls.limits.max_handshakes
        self.timeout = ls.timeouts.handshake
        if plan.fresh is not None and self.tls is not None:
            old, self.tls, self.secret = self.tls, plan.fresh, ticket_secret
            plan.fresh.reloads = old.reloads + 1
            plan.fresh.sni_misses = old.sni_misses
            loop = self._rotation_loop()
            if self._rotation is not None:
                self._rotation.cancel()
            if loop is not None:
                self._schedule(loop)
            was = {i.fingerprint for i in old.infos}
            return [f"tls {self.name}: mutual_authentication/session_tickets changed: new handshakes use new settings"] + [
                f"tls {self.name}: certificate {i.subject} ({i.file}) now served" for i in plan.fresh.infos
                if i.fingerprint not in was]
        if plan.prepared is not None and self.tls is not None:
            return self.tls.apply(plan.prepared)
        return []

    def _rotation_loop(self) -> asyncio.AbstractEventLoop | None:
        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            return None

    # ------------------------------------------------------------------ read model

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"passthrough": self.passthrough, "handshake_timeout_s": self.timeout,
                               "max_handshakes": self.handshakes.max_total,
                               "handshakes_in_progress": self.handshakes.total, **self.counters.as_dict()}
        if self.tls is not None:
            out.update(self.tls.status())
        else:
            out.update({"listener": self.name, "certificates": []})
        return out

    # ------------------------------------------------------------------ accepting

    def take_place(self) -> bool:
        """A place among the handshakes in progress for a new connection; False (counted as
        refused) over ``limits.max_handshakes``: the caller closes it at once."""
        if self.handshakes.admit(""):
            return True
        self.counters.refused += 1
        return False

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        """A new connection: a place among the handshakes in progress, or closed at once."""
        if self.take_place():
            return True
        transport.abort()  # type: ignore[attr-defined]
        return False



_SSL_PROTOCOLS: dict[type, Any] = {}  # loop class -> its SSL protocol (found once, not at each accept)


def ssl_protocol_class(loop: asyncio.AbstractEventLoop) -> Any:
    """The SSL protocol of ``loop``'s own TLS layer (uvloop's in C, else asyncio's): what
    ``create_server(ssl=...)`` and ``start_tls`` put between a socket and its protocol."""
    cls = _SSL_PROTOCOLS.get(type(loop))
    if cls is None:
        cls = _SSL_PROTOCOLS[type(loop)] = _ssl_protocol_class(loop)
    return cls


def _ssl_protocol_class(loop: asyncio.AbstractEventLoop) -> Any:
    try:
        import uvloop
        import uvloop.loop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        uvloop = None  # type: ignore[assignment]
    if uvloop is not None and isinstance(loop, uvloop.Loop):
        return uvloop.loop.SSLProtocol  # type: ignore[attr-defined]
    return asyncio.sslproto.SSLProtocol


class TlsGate(asyncio.Protocol):
    """The first protocol of an accepted connection on an https/tls listener: admission to the
    handshake, the handshake, then the listener's own protocol (``make()``).

    The loop's SSL protocol is put in place *within* ``connection_made`` (as
    ``create_server(ssl=...)`` does at accept): the socket is read only once it is there, so no
    byte of the ClientHello can reach anything else. (``loop.start_tls`` from a task would race
    the first read: uvloop starts reading as ``connection_made`` returns.)"""

    __slots__ = ("make", "serving", "set_peer", "started")

    def __init__(self, serving: TlsServing, make: Callable[[], asyncio.Protocol],
                 set_peer: Callable[[asyncio.Protocol, Any], None] | None = None) -> None:
        self.serving = serving
        self.make = make
        self.set_peer = set_peer  # gives the made protocol what the handshake learnt (identity, SNI)
        self.started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        serving = self.serving
        if not serving.admit(transport):
            return
        tls = serving.tls
        assert tls is not None
        loop = asyncio.get_running_loop()
        self.started = loop.time()
        waiter = loop.create_future()
        waiter.add_done_callback(self._handshake_over)
        sslp = ssl_protocol_class(loop)(loop, _Handshaken(self), tls.context, waiter, server_side=True,
                                        ssl_handshake_timeout=serving.timeout)
        transport.set_protocol(sslp)
        sslp.connection_made(transport)

    def _handshake_over(self, waiter: asyncio.Future[None]) -> None:
        """The handshake finished (:class:`_Handshaken` took the connection) or failed."""
        serving = self.serving
        serving.handshakes.release("")
        exc = None if waiter.cancelled() else waiter.exception()
        if waiter.cancelled() or exc is None:
            return
        if asyncio.get_running_loop().time() - self.started >= serving.timeout * 0.95:
            serving.counters.timed_out += 1
        else:
            serving.counters.failed += 1  # the client's problem (a refused version, a bad certificate) or it left
        log.debug("tls %s: handshake failed: %r", serving.name, exc)

    def connected(self, app: Any) -> None:
        """The handshake is done: the listener's own protocol takes the TLS transport."""
        serving = self.serving
        obj = app.get_extra_info("ssl_object")
        serving.counters.handshakes += 1
        if obj is not None and obj.session_reused:
            serving.counters.resumed += 1
        proto = self.make()
        if self.set_peer is not None:
            self.set_peer(proto, obj)
        app.set_protocol(proto)
        proto.connection_made(app)

    # (nothing reaches the gate itself: the SSL protocol is the socket's from connection_made on)
    def data_received(self, data: bytes) -> None:  # pragma: no cover - defensive
        pass

    def connection_lost(self, exc: Exception | None) -> None:  # pragma: no cover - defensive
        pass


class _Handshaken(asyncio.Protocol):
    """The SSL protocol's application protocol until the handshake is done: then hands over."""

    __slots__ = ("gate",)

    def __init__(self, gate: TlsGate) -> None:
        self.gate = gate

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.gate.connected(transport)

    def connection_lost(self, exc: Exception | None) -> None:  # (a handshake that failed)
        pass


class PassthroughGate(asyncio.Protocol):
    """The first protocol of a connection on a passthrough listener: reads the ClientHello,
    then hands the connection to ``make(server_name)`` with the bytes read so far."""

    __slots__ = ("_buf", "_done", "_timer", "_transport", "make", "serving")

    def __init__(self, serving: TlsServing, make: Callable[[bytes], asyncio.Protocol]) -> None:
        self.serving = serving
        self.make = make
        self._buf = b""
        self._done = True  # until admitted
        self._timer: asyncio.TimerHandle | None = None
        self._transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        serving = self.serving
        if not serving.admit(transport):
            return
        self._done = False
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(serving.timeout, self._timed_out)

    def _finish(self) -> None:
        """The ClientHello stage is over (read, refused, timed out or the client left)."""
        if self._done:
            return
        self._done = True
        self.serving.handshakes.release("")
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        if self._done:
            return
        self.serving.counters.timed_out += 1
        self._finish()
        self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._buf += data
        got = parse_client_hello(self._buf)
        if isinstance(got, NeedMore):
            return
        self._finish()
        serving = self.serving
        if not isinstance(got, ClientHello):
            serving.counters.failed += 1
            log.debug("tls %s: passthrough closed a connection: %s", serving.name, got)
            self._transport.abort()
            return
        serving.counters.handshakes += 1
        proto = self.make((got.server_name or "").encode())
        transport = self._transport
        transport.set_protocol(proto)
        proto.connection_made(transport)
        proto.data_received(self._buf)  # to the target first, once connected
        self._buf = b""

    def eof_received(self) -> bool:
        if not self._done:
            self.serving.counters.failed += 1
            self._finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()


def identity_setter(tls_of: Callable[[], ListenerTls | None]) -> Callable[[asyncio.Protocol, Any], None] | None:
    """For an https listener: a ``set_peer`` that gives each connection its client identity
    headers (mutual TLS on), read from ``tls_of()`` at each handshake (a reload may replace it)."""

    def set_identity(proto: asyncio.Protocol, obj: Any) -> None:
        tls = tls_of()
        if tls is None or obj is None:
            return
        mtls = tls.spec.mutual_authentication
        if mtls.mode == "off":
            return
        conn: Identified = proto  # type: ignore[assignment]
        conn.identity = (mtls.header_prefix.lower().encode(),
                         [(k.encode("latin-1"), v.encode("latin-1")) for k, v in tls.client_identity(obj)])

    return set_identity


def sni_setter() -> Callable[[asyncio.Protocol, Any], None]:
    """For a tls listener: a ``set_peer`` that gives each connection the server name its client sent."""

    def set_sni(proto: asyncio.Protocol, obj: Any) -> None:
        name = server_name(obj) if obj is not None else None
        if name:
            proto.sni = name.encode()  # type: ignore[attr-defined]

    return set_sni


def serve_https(listener: Listener, serving: TlsServing) -> None:
    """Put TLS in front of an HTTP listener: each connection is accepted on the listener's own
    socket and gets a :class:`~fivenines.proxy.tls_socket.TlsConnection` (OpenSSL on the socket:
    the handshake, then the ``ClientConnection``'s transport)."""
    make = listener.client
    if make is None:
        raise ValueError("serve_https needs an HTTP listener built with its client protocol")
    set_identity = identity_setter(lambda: serving.tls)

    def client() -> asyncio.Protocol:
        return make(listener)

    def start_server(loop: asyncio.AbstractEventLoop, host: str, port: int, reuse_port: bool, backlog: int,
                     sock: Any) -> TlsAccept:
        def accepted(conn: Any, peer: Any) -> None:
            TlsConnection(acceptor, conn, peer, serving, client, set_identity)

        acceptor = TlsAccept(loop, listening_socket(host, port, reuse_port=reuse_port, backlog=backlog, sock=sock),
                             accepted)
        return acceptor

    listener.start_server = start_server
    listener.tls = serving


def serve_tls(listener: TcpListener, serving: TlsServing) -> None:
    """Put TLS in front of a TCP listener: terminated (:class:`TlsGate`), or passed through by SNI
    (:class:`PassthroughGate`)."""
    if serving.passthrough:
        def routed(sni: bytes) -> asyncio.Protocol:
            client = TcpClient(listener)
            client.sni = sni
            return client

        listener.accept = lambda: PassthroughGate(serving, routed)
    else:
        set_sni = sni_setter()
        listener.accept = lambda: TlsGate(serving, lambda: TcpClient(listener), set_sni)
    listener.tls = serving
