"""Local processes: start, watch, stop. The decisions (when to restart) are in core.lifecycle.

* Each instance runs in its own session (process group), so stopping it reaches
  the children it started too.
* Each child asks the kernel to SIGKILL it when fivenines dies
  (``PR_SET_PDEATHSIG``), so no instance outlives fivenines, even a fivenines killed
  with SIGKILL.
* Exits are noticed at once through a pidfd on the event loop (no polling, no
  SIGCHLD handler shared with other code).
* stdout and stderr go to per-instance log files; the tail of stderr is kept for
  status when an instance crashes.
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
    ) -> None:
        self.argv = list(argv)
        self._on_exit = on_exit
        stdout.parent.mkdir(parents=True, exist_ok=True)
        out = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        err = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
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
            raise ProviderError(f"cannot start {self.argv[0]!r}: {exc.strerror or exc}") from exc
        finally:
            os.close(out)
            os.close(err)
        self.pid = self.popen.pid
        self.returncode: int | None = None
        self._loop = asyncio.get_running_loop()
        self._exited = asyncio.Event()
        self._pidfd = os.pidfd_open(self.pid)
        self._loop.add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self.returncode = self.popen.wait()
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
