"""What Python's ``ssl`` module does not expose, through ctypes on the libssl ``_ssl`` itself uses.

Three things a load balancer needs and ``ssl.SSLContext`` cannot do (Python 3.11):

* **session ticket keys** chosen by us: the keys of :func:`fivenines.core.tls.ticket_keys`,
  derived from one shared secret, so that every worker process (and every node given the
  same secret) encrypts and decrypts the same tickets, and keys rotate with the previous
  one still accepted. OpenSSL's ``SSL_CTX_set_tlsext_ticket_key_cb`` takes a callback
  that picks the key by name; it is installed here as a ctypes callback;
* **the order of the TLS 1.3 cipher suites** (``SSL_CTX_set_ciphersuites``): ``set_ciphers``
  only reaches TLS 1.2 and older;
* **accepting any client certificate** without verifying it (ALB's mutual TLS
  ``passthrough``): a verify callback that says yes.

Why ctypes and not a C extension beside ``_express.c``: either way the ``SSL_CTX*`` has
to be read out of the ``SSLContext`` object (CPython keeps it as the first field after
the object header; there is no API for it), and a C extension would in addition need
OpenSSL's headers at build time and could be built against another libssl than the one
``_ssl`` loaded; ctypes resolves every symbol through ``_ssl``'s own handle, so it calls
exactly the library that made the context, and it works from source (FIVENINES_PURE).
The layout assumption is checked before anything is called: the pointer found must
answer ``SSL_CTX_get_options`` and the minimum protocol version with the values Python
reports for the same context; otherwise :func:`unavailable` says why and fivenines falls
back to OpenSSL's own per-process ticket keys (resumption then works only on the worker
that issued the ticket) and TLS 1.3 suites in OpenSSL's default order (the same three
suites every ELB policy lists). The callbacks run with the GIL (ctypes takes it), at most
once per handshake that issues or presents a ticket.
"""

from __future__ import annotations

import ctypes
import ssl
import sys
from collections.abc import Callable
from typing import Any

from fivenines.core.tls import TicketKeys

_SSL_CTRL_SET_SESS_CACHE_MODE = 44
_SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB = 72
_SSL_CTRL_GET_MIN_PROTO_VERSION = 130
_SSL_VERIFY_PEER = 0x01
_TLS13 = 0x0304
_VERSION_CODES = {ssl.TLSVersion.TLSv1: 0x0301, ssl.TLSVersion.TLSv1_1: 0x0302,
                  ssl.TLSVersion.TLSv1_2: 0x0303, ssl.TLSVersion.TLSv1_3: 0x0304}

TICKET_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                             ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
VERIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


class _Lib:
    """The functions used, bound once with their C signatures."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        vp, c_int, c_long = ctypes.c_void_p, ctypes.c_int, ctypes.c_long

        def fn(name: str, restype: Any, *argtypes: Any) -> Any:
            f = getattr(lib, name)
            f.restype, f.argtypes = restype, list(argtypes)
            return f

        self.get_options = fn("SSL_CTX_get_options", ctypes.c_uint64, vp)
        self.ctrl = fn("SSL_CTX_ctrl", c_long, vp, c_int, c_long, vp)
        self.callback_ctrl = fn("SSL_CTX_callback_ctrl", c_long, vp, c_int, vp)
        self.set_ciphersuites = fn("SSL_CTX_set_ciphersuites", c_int, vp, ctypes.c_char_p)
        self.set_timeout = fn("SSL_CTX_set_timeout", c_long, vp, c_long)
        self.set_verify = fn("SSL_CTX_set_verify", None, vp, c_int, VERIFY_CB)
        # the ticket cipher and digest, looked up once: OpenSSL 3 fetches them from its provider
        # (EVP_*_fetch, kept for the life of the process); the static EVP_aes_256_cbc()/EVP_sha256()
        # would make each HMAC_Init_ex and EncryptInit_ex fetch them again, at every ticket
        self.aes_256_cbc: int = _fetch(lib, "EVP_CIPHER_fetch", b"AES-256-CBC") or fn("EVP_aes_256_cbc", vp)()
        self.sha256: int = _fetch(lib, "EVP_MD_fetch", b"SHA256") or fn("EVP_sha256", vp)()
        self.ssl_version = fn("SSL_version", c_int, vp)
        self.encrypt_init = fn("EVP_EncryptInit_ex", c_int, vp, vp, vp, ctypes.c_char_p, vp)
        self.decrypt_init = fn("EVP_DecryptInit_ex", c_int, vp, vp, vp, ctypes.c_char_p, vp)
        self.hmac_init = fn("HMAC_Init_ex", c_int, vp, ctypes.c_char_p, c_int, vp, vp)
        self.rand_bytes = fn("RAND_bytes", c_int, vp, c_int)


def _fetch(lib: ctypes.CDLL, fetch: str, name: bytes) -> int | None:
    """An algorithm fetched from OpenSSL 3's default provider (None before OpenSSL 3)."""
    f = getattr(lib, fetch, None)
    if f is None:
        return None
    f.restype, f.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    got: int | None = f(None, name, None)
    return got


def _load() -> tuple[_Lib | None, str]:
    if sys.implementation.name != "cpython":
        return None, f"{sys.implementation.name} is not CPython"
    import _ssl

    path = getattr(_ssl, "__file__", None)
    try:
        lib = _Lib(ctypes.CDLL(path) if path else ctypes.CDLL(None))
    except (OSError, AttributeError) as exc:
        return None, f"libssl functions not found through _ssl: {exc}"
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    probe.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        ptr = _raw_pointer(probe)
    except ValueError as exc:
        return None, str(exc)
    if lib.get_options(ptr) != int(probe.options) or lib.ctrl(ptr, _SSL_CTRL_GET_MIN_PROTO_VERSION, 0, None) != 0x0304:
        return None, "the SSL_CTX inside ssl.SSLContext is not where CPython 3.11 keeps it"
    return lib, ""


def _raw_pointer(ctx: ssl.SSLContext) -> int:
    if ssl.SSLContext.__basicsize__ < object.__basicsize__ + ctypes.sizeof(ctypes.c_void_p):
        raise ValueError("ssl.SSLContext has no room for an SSL_CTX pointer")
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not ptr:
        raise ValueError("no SSL_CTX pointer in ssl.SSLContext")
    return int(ptr)


_LIB, _WHY = _load()


def unavailable() -> str:
    """Why the native layer cannot be used ("" when it can)."""
    return _WHY


def _pointer(ctx: ssl.SSLContext) -> tuple[_Lib, int]:
    if _LIB is None:
        raise RuntimeError(f"the OpenSSL binding is unavailable: {_WHY}")
    ptr = _raw_pointer(ctx)
    if _LIB.get_options(ptr) != int(ctx.options):  # the same check as at load, per context
        raise RuntimeError("the SSL_CTX pointer does not answer like its SSLContext")
    return _LIB, ptr


def _keep(ctx: ssl.SSLContext, ref: Any) -> None:
    """Keep a ctypes callback alive exactly as long as the context that calls it."""
    refs: list[Any] = ctx.__dict__.setdefault("_fivenines_native", [])
    refs.append(ref)


def set_tls13_suites(ctx: ssl.SSLContext, suites: tuple[str, ...]) -> None:
    """The TLS 1.3 cipher suites of ``ctx``, in this order of preference."""
    lib, ptr = _pointer(ctx)
    if lib.set_ciphersuites(ptr, ":".join(suites).encode()) != 1:
        raise ssl.SSLError(f"OpenSSL refuses the TLS 1.3 suites {suites}")


def set_session_timeout(ctx: ssl.SSLContext, seconds: int) -> None:
    """Lifetime of sessions and tickets issued by ``ctx`` (the ticket's lifetime hint)."""
    lib, ptr = _pointer(ctx)
    lib.set_timeout(ptr, seconds)


def disable_session_cache(ctx: ssl.SSLContext) -> None:
    """No server-side session cache: with tickets off, nothing resumes."""
    lib, ptr = _pointer(ctx)
    lib.ctrl(ptr, _SSL_CTRL_SET_SESS_CACHE_MODE, 0, None)


def accept_any_client_certificate(ctx: ssl.SSLContext) -> None:
    """Ask clients for a certificate and accept whatever they send, unverified (mTLS passthrough)."""
    lib, ptr = _pointer(ctx)

    def verify(_preverify_ok: int, _store: int) -> int:
        return 1

    cb = VERIFY_CB(verify)
    _keep(ctx, cb)
    lib.set_verify(ptr, _SSL_VERIFY_PEER, cb)


class TicketKeyring:
    """The session ticket keys one or more contexts use; :meth:`set` swaps them (rotation).

    OpenSSL asks the callback for a key to encrypt a new ticket (``enc=1``: the current
    key's name, a fresh IV, AES-256-CBC and HMAC-SHA256 set up with it) and to decrypt a
    presented one (``enc=0``: found by name among the accepted keys; 0 for an unknown name: a
    full handshake; 2, so that OpenSSL issues a fresh ticket, when it is not the current key
    and on every TLS 1.3 resumption, as OpenSSL does with its own keys: a TLS 1.3 client may
    use each ticket once (wrk, browsers), and without a new one its next connection would be a
    full handshake).
    """

    def __init__(self, keys: TicketKeys, on_error: Callable[[BaseException], None] | None = None) -> None:
        self.keys = keys
        self.on_error = on_error
        self.issued = 0
        self.resumed = 0
        self.unknown = 0
        self._cb = TICKET_CB(self._callback)

    def set(self, keys: TicketKeys) -> None:
        self.keys = keys

    def install(self, ctx: ssl.SSLContext) -> None:
        lib, ptr = _pointer(ctx)
        _keep(ctx, self._cb)
        _keep(ctx, self)
        if lib.callback_ctrl(ptr, _SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB, ctypes.cast(self._cb, ctypes.c_void_p)) != 1:
            raise ssl.SSLError("OpenSSL refused the session ticket callback")

    def _callback(self, _ssl: int, key_name: int, iv: int, cipher_ctx: int, hmac_ctx: int, enc: int) -> int:
        lib = _LIB
        assert lib is not None
        try:
            if enc:
                key = self.keys.current
                ctypes.memmove(key_name, key.name, 16)
                if lib.rand_bytes(iv, 16) != 1:
                    return -1
                ok = lib.encrypt_init(cipher_ctx, lib.aes_256_cbc, None, key.aes_key, iv)
                ok = ok and lib.hmac_init(hmac_ctx, key.hmac_key, 32, lib.sha256, None)
                self.issued += 1
                return 1 if ok else -1
            found = self.keys.find(ctypes.string_at(key_name, 16))
            if found is None:
                self.unknown += 1
                return 0
            ok = lib.hmac_init(hmac_ctx, found.hmac_key, 32, lib.sha256, None)
            ok = ok and lib.decrypt_init(cipher_ctx, lib.aes_256_cbc, None, found.aes_key, iv)
            if not ok:
                return -1
            self.resumed += 1
            if found.epoch != self.keys.current.epoch or lib.ssl_version(_ssl) == _TLS13:
                return 2
            return 1
        except BaseException as exc:  # never let an exception unwind through OpenSSL
            if self.on_error is not None:
                self.on_error(exc)
            return -1

    def __repr__(self) -> str:
        return (f"<TicketKeyring epoch={self.keys.current.epoch} issued={self.issued} resumed={self.resumed} "
                f"unknown={self.unknown}>")


def version_code(v: ssl.TLSVersion) -> int:
    return _VERSION_CODES[v]
