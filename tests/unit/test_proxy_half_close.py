"""A client that half-closes after its request gets the whole answer, however the answer and its
EOF fall into the loop's rounds (the race seen as an empty reply in test_proxy_http under load)."""

from __future__ import annotations

import asyncio

from tests.unit.test_proxy_express import Rig


def test_an_answer_deferred_to_the_end_of_the_round_is_written_before_the_eof_closes() -> None:
    """The target's answer and the client's EOF are handled in one loop round. The answer finishes
    the exchange and its bytes wait for the end of the round (``flush_soon``); the EOF then finds no
    exchange left, and the transport closes: the waiting bytes must be written first."""

    async def scenario() -> tuple[bytes, bool]:
        rig = Rig()
        rig.listener._loop = asyncio.get_running_loop()  # writes deferred to the round's end, as when serving
        rig.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", whole=True)
        rig.upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        if not rig.client.eof_received():
            rig.ct.close()  # what a transport does when eof_received returns a false value
        await asyncio.sleep(0)  # the end of the round: deferred writes go out
        return b"".join(rig.ct.out), rig.ct.closed

    out, closed = asyncio.run(scenario())
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\nok"), out
    assert closed
