"""What fivenines needs from a replicated store, and the ``custom`` kind that runs commands for it.

A store adapter observes a server (role and replication position), promotes it,
makes it follow a primary, and (where the store can) pauses writes for a
switchover. The decisions are in :mod:`fivenines.core.replication`; adapters only
carry them out. The built-in ``redis`` adapter is :class:`fivenines.runtime.redis.RedisStore`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import Protocol

from fivenines.core.replication import Observation, StoreRole
from fivenines.errors import NetworkError, ProviderError, TimedOut
from fivenines.runtime.supervisor import resolve_argv
from fivenines.spec import CustomStoreSpec


class StoreError(ProviderError):
    """A store command failed: unreachable, timed out, or refused."""


class StoreUnreachable(StoreError, NetworkError):
    """No answer: connection refused, reset, or no reply in time."""


class StoreTimeout(StoreUnreachable, TimedOut):
    """No connection or no reply within the timeout."""


@dataclass(frozen=True, slots=True)
class StoreTarget:
    id: str
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class Store(Protocol):
    async def observe(self, t: StoreTarget, timeout: float) -> Observation: ...
    async def promote(self, t: StoreTarget, timeout: float) -> None: ...
    async def follow(self, t: StoreTarget, primary: StoreTarget, timeout: float) -> None: ...
    async def park(self, t: StoreTarget, timeout: float) -> None: ...
    async def pause_writes(self, t: StoreTarget, seconds: float, timeout: float) -> None: ...
    async def resume_writes(self, t: StoreTarget, timeout: float) -> None: ...
    def drop(self, t: StoreTarget) -> None: ...
    async def close(self) -> None: ...


def parse_role_line(line: str) -> Observation:
    """The ``role_command`` output: ``primary POSITION`` or ``replica POSITION [HOST:PORT [up|down]]``.

    >>> parse_role_line("replica 42 127.0.0.1:7001")
    Observation(role=<StoreRole.REPLICA: 'replica'>, position=42, following='127.0.0.1:7001', link_up=True, replicas=(), incarnation=None)
    >>> parse_role_line("primary 7").role.value
    'primary'
    """
    parts = line.split()
    if len(parts) < 2 or parts[0] not in ("primary", "replica") or not parts[1].lstrip("-").isdigit():
        raise StoreError(f"role_command printed {line[:80]!r}; expected 'primary POSITION' or "
                         "'replica POSITION [HOST:PORT [up|down]]'")
    if parts[0] == "primary":
        return Observation(StoreRole.PRIMARY, int(parts[1]))
    following = parts[2] if len(parts) > 2 else None
    link_up = following is not None and (len(parts) < 4 or parts[3] == "up")
    return Observation(StoreRole.REPLICA, int(parts[1]), following, link_up)


class CommandStore:
    """``kind: custom``: each operation runs a command; ``{host}``, ``{port}``, ``{id}``,
    ``{primary_host}`` and ``{primary_port}`` are substituted in every argument."""

    def __init__(self, spec: CustomStoreSpec, cwd: str | None = None, env: dict[str, str] | None = None) -> None:
        self.spec = spec
        self.cwd = cwd
        self.env = env or dict(os.environ)

    async def _run(self, argv: list[str], t: StoreTarget, timeout: float,
                   primary: StoreTarget | None = None) -> str:
        subs = {"{host}": t.host, "{port}": str(t.port), "{id}": t.id,
                "{primary_host}": primary.host if primary else "", "{primary_port}": str(primary.port) if primary else ""}

        def sub(a: str) -> str:
            for k, v in subs.items():
                a = a.replace(k, v)
            return a

        args = resolve_argv([sub(a) for a in argv])
        try:
            proc = await asyncio.create_subprocess_exec(
                *args, cwd=self.cwd, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise StoreError(f"cannot run {args[0]!r}: {exc.strerror or exc}") from None
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            await proc.wait()
            raise StoreTimeout(f"{args[0]} did not finish in {timeout:g}s") from None
        if proc.returncode != 0:
            tail = (err or out).decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise StoreUnreachable(f"{os.path.basename(args[0])} exited {proc.returncode}: {tail[0][:200]}")
        return out.decode("utf-8", "replace")

    async def observe(self, t: StoreTarget, timeout: float) -> Observation:
        out = await self._run(self.spec.role_command, t, timeout)
        return parse_role_line(out.strip().splitlines()[0] if out.strip() else "")

    async def promote(self, t: StoreTarget, timeout: float) -> None:
        await self._run(self.spec.promote_command, t, self.spec.command_timeout)

    async def follow(self, t: StoreTarget, primary: StoreTarget, timeout: float) -> None:
        await self._run(self.spec.follow_command, t, self.spec.command_timeout, primary)

    async def park(self, t: StoreTarget, timeout: float) -> None:
        """No command for it: a custom store's replicas keep following the lost primary until the
        one promoted is followed (docs/replication.md, limits)."""

    async def pause_writes(self, t: StoreTarget, seconds: float, timeout: float) -> None:
        """No command for it: fivenines has already stopped routing writes to the primary."""

    async def resume_writes(self, t: StoreTarget, timeout: float) -> None:
        """See :meth:`pause_writes`."""

    def drop(self, t: StoreTarget) -> None:
        pass

    async def close(self) -> None:
        pass
