"""fivenines' own log (human-readable or JSON lines) and the optional access log.

* ``setup_logging(level, "text")``: ``HH:MM:SS LEVEL message`` on stderr (the default);
  ``"json"``: one JSON object per line (``time``, ``level``, ``logger``, ``message``,
  and ``event`` with the structured state change when the line is one).
* :class:`AccessLog`: one line per proxied request in Common Log Format, plus the
  target that answered and the time it took. Off by default; when off the data plane
  pays one ``is not None`` test per request. When on, the data plane only appends a
  tuple to a list; formatting and writing happen in batches on a timer, off the
  request path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fivenines.core.exchange import Exchange

_STD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record. Extra fields given with ``extra=`` are kept."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def setup_logging(level: str = "info", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Configure the root logger once: ``fmt`` is ``text`` or ``json``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def clf_time(wall: float) -> str:
    """Common Log Format time, in UTC.

    >>> clf_time(0.0)
    '01/Jan/1970:00:00:00 +0000'
    """
    t = time.gmtime(wall)
    return f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"


def request_line(head: bytes) -> str:
    """The request line of a request head the proxy built (``GET /x HTTP/1.1``).

    >>> request_line(b"GET /a?b=1 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    'GET /a?b=1 HTTP/1.1'
    """
    return head.split(b"\r\n", 1)[0].decode("latin-1").replace('"', "%22")


class AccessLog:
    """Buffered access log: ``record`` appends; a timer formats and writes every ``flush_every`` s."""

    def __init__(self, path: str | Path | None, flush_every: float = 0.25) -> None:
        self.path = None if path in (None, "-") else Path(str(path))
        self.flush_every = flush_every
        self._pending: list[tuple[bytes, float, bytes, int, str, float]] = []
        self._out: IO[str] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.written = 0

    def __repr__(self) -> str:
        return f"<AccessLog {self.path or 'stdout'} pending={len(self._pending)} written={self.written}>"

    def open(self) -> None:
        if self.path is None:
            self._out = sys.stdout
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._out = os.fdopen(fd, "a", encoding="utf-8")

    def record(self, peer_ip: bytes, ex: Exchange, target: str) -> None:
        loop = asyncio.get_running_loop()
        took = time.monotonic() - ex.sent_at if ex.sent_at else -1.0  # sent_at is time.monotonic()
        self._pending.append((peer_ip, time.time(), ex.head, ex.status, target, took))
        if self._timer is None:
            self._timer = loop.call_later(self.flush_every, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()  # harmless when the timer itself is calling
            self._timer = None
        pending, self._pending = self._pending, []
        if not pending or self._out is None:
            return
        lines = []
        for peer, wall, head, status, target, took in pending:
            dur = f"{took:.4f}" if took >= 0 else "-"
            lines.append(f'{peer.decode() or "-"} - - [{clf_time(wall)}] "{request_line(head)}" {status} - '
                         f'target={target} duration={dur}\n')
        try:
            self._out.write("".join(lines))
            self._out.flush()
            self.written += len(lines)
        except OSError as exc:
            logging.getLogger("fivenines").error("access log: %s; switched off", exc)
            self._out = None

    def close(self) -> None:
        self.flush()
        if self._out is not None and self._out is not sys.stdout:
            self._out.close()
        self._out = None
