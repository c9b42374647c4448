"""nftables from inside this process: libnftables (Debian's ``libnftables1``, part of ``nftables``) over ctypes.

The floating address's fence (:class:`fivenines.runtime.vip.Fence`) is refreshed on every
lease renewal, several times a second: one in-process call of about 0.1 ms, where
forking ``nft`` costs milliseconds and may be scheduled late on a loaded host. A
context talks to the network namespace of the thread that made it (its netlink socket
is opened then), so the rig can read a fence in any of its namespaces.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

from fivenines.errors import ProviderError

LIBRARY = "libnftables.so.1"


class NftError(ProviderError):
    """libnftables is missing, or refused a command."""


_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def library() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is None:
            try:
                lib = ctypes.CDLL(LIBRARY)
            except OSError:
                found = ctypes.util.find_library("nftables")  # runs ldconfig: only when the usual name fails
                try:
                    lib = ctypes.CDLL(found or LIBRARY)
                except OSError as exc:
                    raise NftError(f"cannot load {LIBRARY} (Debian package libnftables1, installed with "
                                   f"nftables): {exc}") from exc
            lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
            lib.nft_ctx_new.restype = ctypes.c_void_p
            lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_free.restype = None
            for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
                getattr(lib, name).argtypes = [ctypes.c_void_p]
                getattr(lib, name).restype = ctypes.c_int
            for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
                getattr(lib, name).argtypes = [ctypes.c_void_p]
                getattr(lib, name).restype = ctypes.c_char_p
            lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
            _lib = lib
        return _lib


class Nft:
    """One libnftables context, bound to the network namespace of the thread that made it."""

    def __init__(self) -> None:
        self._lib = library()
        ctx = self._lib.nft_ctx_new(0)
        if not ctx:
            raise NftError("nft_ctx_new failed")
        self._ctx: int | None = ctx
        self._lib.nft_ctx_buffer_output(ctx)
        self._lib.nft_ctx_buffer_error(ctx)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Nft {'closed' if self._ctx is None else 'open'}>"

    def run(self, commands: str) -> str:
        """Run ``commands`` (nft's syntax; several, one per line, are one atomic transaction); the output."""
        with self._lock:
            if self._ctx is None:
                raise NftError("nft context closed")
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
            out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode(errors="replace")
            err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode(errors="replace")
        if rc != 0:
            first = commands.strip().splitlines()[0] if commands.strip() else ""
            raise NftError(f"nft {first!r}{' ...' if commands.count(chr(10)) > 1 else ''}: {err.strip() or f'exit {rc}'}")
        return out

    def close(self) -> None:
        with self._lock:
            if self._ctx is not None:
                self._lib.nft_ctx_free(self._ctx)
                self._ctx = None
