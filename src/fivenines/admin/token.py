"""The admin bearer token: generated at first start, kept in a file only the owner can read."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path


def load_or_create(path: Path) -> str:
    """The token in ``path``; a new random one (written with mode 0600) when there is none."""
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def authorized(header: str | None, token: str) -> bool:
    """Constant-time check of an ``Authorization: Bearer TOKEN`` header.

    >>> authorized("Bearer abc", "abc"), authorized("Bearer abd", "abc"), authorized(None, "abc")
    (True, False, False)
    """
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())
