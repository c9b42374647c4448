"""The admin API's bearer token.

* Generated at first start (``secrets.token_urlsafe(32)``) into a file only its owner
  can read: ``admin.token_file``, else ``STATE_DIR/admin.token``. An existing file
  that others can read is refused, as ssh refuses such a key.
* Every mutating call needs ``Authorization: Bearer TOKEN``; read-only calls are
  open to loopback clients and need the token from anywhere else.
* Compared in constant time (:func:`hmac.compare_digest`); never logged, never in
  ``/status``.
* Binding the admin API to a non-loopback address without ``admin.token_file`` is
  refused when the spec is checked (see :func:`fivenines.spec.semantic_errors`).
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path

from fivenines.errors import ConfigError
from fivenines.runtime.paths import TOKEN_NAME, admin_token_path
from fivenines.spec import Spec, is_loopback

__all__ = ["TOKEN_NAME", "Auth", "is_loopback", "load_or_create_token", "read_token", "token_path"]


def token_path(spec: Spec, spec_dir: Path, state_dir: Path) -> Path:
    """Where the token lives: ``admin.token_file`` (relative to the spec's folder), else in state_dir."""
    return admin_token_path(spec, state_dir, spec_dir)


def load_or_create_token(path: Path) -> str:
    """Read the token at ``path``, or create it (mode 0600) when missing. Raises ConfigError."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        token = secrets.token_urlsafe(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # created meanwhile by another fivenines: use that one
            return load_or_create_token(path)
        except OSError as exc:
            raise ConfigError(f"cannot create admin token file {path}: {exc.strerror or exc}") from exc
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"admin token file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"admin token file {path} can be read by others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run: chmod 600 {path}")
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read admin token file {path}: {exc.strerror or exc}") from exc
    if len(token) < 16:
        raise ConfigError(f"admin token file {path} holds no token (at least 16 characters)")
    return token


def read_token(path: Path) -> str | None:
    """The token for a client (the CLI), or None when the file is missing/unreadable."""
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class Auth:
    """Checks requests against the token."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def __repr__(self) -> str:
        return "<Auth bearer token (hidden)>"

    def bearer_ok(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.strip().encode(), self._token)

    def allowed(self, authorization: str | None, client_host: str | None, mutating: bool) -> bool:
        if self.bearer_ok(authorization):
            return True
        return not mutating and client_host is not None and is_loopback(client_host)
