"""A way in: a TCP port on this machine's loopback that leads to an address inside a rig host.

The rig's hosts are namespaces with no link to the machine's own network (nothing is
created there); to open a node's dashboard or the VIP from a browser on the machine,
:class:`Forward` listens on ``127.0.0.1:PORT`` here and, for every connection, opens one
from inside the rig host (its socket made in the host's namespace) to ``address:port``,
then copies bytes both ways. Threads, no event loop: usable from tests and scripts alike.
The far end sees a client inside its own host (``127.0.0.1`` for a node's admin API, which
then needs no token for reading).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

from fivenines.rig.netns import Rig


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


class Forward:
    """``127.0.0.1:port`` here -> ``address:port`` as seen from inside rig host ``host``."""

    def __init__(self, rig: Rig, host: str, address: str, port: int, *, listen: str = "127.0.0.1") -> None:
        self.rig, self.host, self.address, self.target_port = rig, host, address, port
        self.server = socket.create_server((listen, 0))
        self.listen = listen
        self.port: int = self.server.getsockname()[1]
        self.connections = 0
        self._closed = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name=f"forward {self.port}", daemon=True).start()

    def __repr__(self) -> str:
        return f"<Forward {self.listen}:{self.port} -> {self.host}:{self.address}:{self.target_port}>"

    def __enter__(self) -> Forward:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def url(self) -> str:
        return f"http://{self.listen}:{self.port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            far = self.rig.call_in(self.host, socket.create_connection, (self.address, self.target_port), 5.0)
        except OSError:
            client.close()
            return
        far.settimeout(None)
        with self._lock:
            self.connections += 1
            self._open |= {client, far}
        back = threading.Thread(target=_pump, args=(far, client), daemon=True)
        back.start()
        _pump(client, far)
        back.join()
        with self._lock:
            self._open -= {client, far}
        client.close()
        far.close()

    def close(self) -> None:
        self._closed.set()
        self.server.close()
        with self._lock:
            for s in list(self._open):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
