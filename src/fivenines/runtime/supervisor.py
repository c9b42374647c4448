"""Local processes: start, watch, stop. The decisions (when to restart) are in core.lifecycle.

* Each instance runs in its own session (process group), so stopping it reaches
  the children it started too.
* Each child asks the kernel to SIGKILL it when fivenines dies
  (``PR_SET_PDEATHSIG``), so no instance outlives fivenines, even a fivenines killed
  with SIGKILL.
* Exits are noticed at once through a pidfd on the event loop (no polling, no
  SIGCHLD handler shared with other code).
* stdout and stderr go through pipes to per-instance log files that are rotated
  by size (``ID.err.log`` → ``ID.err.log.1`` … ``.N``, as logrotate names them);
  the tail of stderr is kept for status when an instance crashes. Nothing is
  lost at rotation: fivenines owns the files, the instance only writes to a
  pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fivenines.errors import ProviderError

log = logging.getLogger("fivenines.supervisor")

_PR_SET_PDEATHSIG = 1
_libc: ctypes.CDLL | None = None


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: die with the parent. Runs in the child between fork and exec."""
    libc = _load_libc()

    def setup() -> None:
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return setup


def _load_libc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def resolve_argv(argv: Sequence[str]) -> list[str]:
    """``python``/``python3`` as the program means the Python running fivenines (its venv)."""
    out = list(argv)
    if out and out[0] in ("python", "python3"):
        out[0] = sys.executable
    return out


def tail_lines(path: Path, n: int = 20, max_bytes: int = 16384) -> list[str]:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-n:]


class RotatingLog:
    r"""An append-only log file rotated when it would grow past ``max_bytes``.

    Rotation renames ``path.(k-1)`` → ``path.k`` down to ``path`` → ``path.1`` and
    drops what falls beyond ``keep``. Files are cut at line ends; only a single line
    longer than ``max_bytes`` makes a file larger (it is not split).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> log = RotatingLog(d / "x.log", max_bytes=10, keep=2)
    >>> log.write(b"aaaa\nbbbb\ncccc\n" + b"d" * 12 + b"\ne\n")
    >>> log.close()
    >>> [(p.name, p.read_bytes()) for p in sorted(d.iterdir())]
    [('x.log', b'e\n'), ('x.log.1', b'dddddddddddd\n'), ('x.log.2', b'cccc\n')]
    """

    def __init__(self, path: Path, max_bytes: int = 10 * 1024 * 1024, keep: int = 3) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.size = os.fstat(self._fd).st_size
        self.rotations = 0

    def write(self, data: bytes) -> None:
        """Append ``data``, rotating at line ends so no file grows past ``max_bytes``."""
        while data and self._fd >= 0:
            room = self.max_bytes - self.size
            if len(data) <= room:
                self._put(data)
                return
            cut = data.rfind(b"\n", 0, room) + 1  # the whole lines that still fit
            if cut == 0 and self.size == 0:
                # a single line longer than a file may be: it goes whole into a file of its own
                cut = data.find(b"\n") + 1 or len(data)
            if cut:
                self._put(data[:cut])
                data = data[cut:]
            if data:
                self.rotate()

    def _put(self, data: bytes) -> None:
        os.write(self._fd, data)
        self.size += len(data)

    def rotate(self) -> None:
        os.close(self._fd)
        if self.keep == 0:
            os.unlink(self.path)
        else:
            for k in range(self.keep - 1, 0, -1):
                src = Path(f"{self.path}.{k}")
                if src.exists():
                    src.replace(f"{self.path}.{k + 1}")
            self.path.replace(f"{self.path}.1")
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.size = 0
        self.rotations += 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __repr__(self) -> str:
        return f"<RotatingLog {self.path} size={self.size} rotations={self.rotations}>"


class _PipeToLog:
    """Copies a child's pipe into a :class:`RotatingLog` from the event loop (no thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, log: RotatingLog) -> None:
        self._loop = loop
        self._fd = fd
        self._log = log
        self.closed = asyncio.Event()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        self._read_once()

    def _read_once(self) -> bool:
        """Copy one chunk; False when nothing more is available now."""
        if self._fd < 0:
            return False
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if data:
            self._log.write(data)
            return True
        self.close()
        return False

    def drain(self) -> None:
        """Copy everything the pipe holds now."""
        while self._read_once():
            pass

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
            self._log.close()
            self.closed.set()


class Process:
    """One running child process and its exit watch."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        cwd: str | None,
        stdout: Path,
        stderr: Path,
        shell: bool = False,
        on_exit: Callable[[int], None],
        log_max_bytes: int = 10 * 1024 * 1024,
        log_keep: int = 3,
    ) -> None:
        self.argv = list(argv)
        self._on_exit = on_exit
        self._loop = asyncio.get_running_loop()
        out_r, out = os.pipe()
        err_r, err = os.pipe()
        try:
            self.popen = subprocess.Popen(
                self.argv[0] if shell else self.argv,
                shell=shell,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=die_with_parent(os.getpid()),
                close_fds=True,
            )
        except OSError as exc:
            os.close(out_r)
            os.close(err_r)
            raise ProviderError(f"cannot start {self.argv[0]!r}: {exc.strerror or exc}") from exc
        finally:
            os.close(out)
            os.close(err)
        self.logs = (
            _PipeToLog(self._loop, out_r, RotatingLog(stdout, log_max_bytes, log_keep)),
            _PipeToLog(self._loop, err_r, RotatingLog(stderr, log_max_bytes, log_keep)),
        )
        self.pid = self.popen.pid
        self.returncode: int | None = None
        self._exited = asyncio.Event()
        self._pidfd = os.pidfd_open(self.pid)
        self._loop.add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self.returncode = self.popen.wait()
        # What the process wrote before exiting is in the pipes: copy it now, so the
        # stderr tail is complete when the exit is reported. (Pipes a grandchild still
        # holds open stay attached until it closes them.)
        for p in self.logs:
            p.drain()
        self._exited.set()
        self._on_exit(self.returncode)

    @property
    def running(self) -> bool:
        return self.returncode is None

    def signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    async def stop(self, timeout: float) -> int:
        """SIGTERM the process group, SIGKILL after ``timeout``."""
        if self.returncode is not None:
            return self.returncode
        self.signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                return await self.wait()
        except TimeoutError:
            log.warning("pid %d did not stop within %.1fs: SIGKILL", self.pid, timeout)
            self.signal(signal.SIGKILL)
            return await self.wait()

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else f"exited {self.returncode}"
        return f"<Process {self.pid} {state}>"
