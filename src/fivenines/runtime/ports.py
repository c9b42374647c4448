"""Instance ports: a spec's range (``20000-20100``) or ``auto`` (the kernel picks).

An ``auto`` port can be held (bound, not listening) until its instance starts, so that
no other port-0 bind of this process (the admin server, a listener) is handed the same
port meanwhile; the runtime releases the holds once its own servers are bound.
"""

from __future__ import annotations

import socket

from fivenines.errors import ConfigError
from fivenines.spec import parse_port_range, port_is_free


def allocate_ports(spec_ports: str, n: int, taken: set[int], hold: list[socket.socket] | None = None) -> list[int]:
    """Pick ``n`` free loopback ports from a range (or from the kernel for ``auto``).

    With ``hold``, an ``auto`` port stays bound by a socket appended there until the
    caller closes it (just before the instance starts): until then the kernel cannot
    hand the same port to another port-0 bind of this process (the admin server, a
    listener), which would leave the instance unable to bind its own port.
    """
    rng = parse_port_range(spec_ports)
    out: list[int] = []
    if rng is None:
        while len(out) < n:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", 0))
                p = s.getsockname()[1]
            except OSError:
                s.close()
                raise
            if p not in taken and p not in out:
                out.append(p)
                if hold is not None:
                    hold.append(s)
                    continue
            s.close()
        return out
    for p in range(rng[0], rng[1] + 1):
        if len(out) == n:
            break
        if p not in taken and port_is_free("127.0.0.1", p):
            out.append(p)
    if len(out) < n:
        raise ConfigError(f"not enough free ports in {spec_ports}: need {n}")
    return out


def release_ports(hold: list[socket.socket]) -> None:
    """Let go of ports :func:`allocate_ports` held: their instances may bind them now."""
    for s in hold:
        s.close()
    hold.clear()
