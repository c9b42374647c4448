"""Replicated groups in the spec, and the sans-IO pieces of the adapters (RESP, INFO, role lines);
the RESP client against a silent server on loopback."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fivenines.core.replication import StoreRole
from fivenines.errors import SpecError
from fivenines.runtime.redis import (
    ErrorReply,
    RedisClient,
    RespParser,
    RespProtocolError,
    encode_command,
    observation_from_info,
)
from fivenines.runtime.store import StoreError, StoreTimeout, parse_role_line
from fivenines.spec import parse_spec


def spec(**over: Any) -> dict[str, Any]:
    group: dict[str, Any] = {
        "instances": {"command": ["redis-server", "--port", "{port}"], "count": 1, "standby": 2},
        "replicated": {"kind": "redis"},
    }
    group.update(over)
    return {"name": "s", "listeners": [{"port": 0, "protocol": "tcp", "default_target_group": "db"}],
            "target_groups": {"db": group}}


def errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as ei:
        parse_spec(data, "f.yaml")
    return [str(e) for e in ei.value.errors]


def test_a_replicated_group_parses_with_its_defaults() -> None:
    s = parse_spec(spec(), "f.yaml")
    rep = s.target_groups["db"].replicated
    assert rep is not None
    assert (rep.kind, rep.durability, rep.max_lag_on_failover, rep.lease, rep.read_listener) == (
        "redis", "sync", 1048576, None, None)


@pytest.mark.parametrize(("over", "expected"), [
    ({"instances": {"command": ["redis-server"], "count": 2, "standby": 1}},
     "target_groups.db.instances.count: a replicated group has one primary: count must be 1 (got 2)"),
    ({"instances": {"command": ["redis-server"], "count": 1}},
     "target_groups.db.instances.standby: a replicated group needs at least one replica"),
    ({"instances": {"command": "redis-server", "shell": True, "count": 1, "standby": 1}},
     "target_groups.db.instances.command: kind redis needs an argv list"),
    ({"replicated": {"kind": "postgres"}}, "target_groups.db.replicated.kind: postgres is not built in yet"),
    ({"replicated": {"kind": "custom"}}, "target_groups.db.replicated.custom: give custom:"),
    ({"replicated": {"kind": "redis", "lease": {"etcd": ["http://127.0.0.1:2379"]}}},
     "target_groups.db.replicated.lease: several fivenines nodes must manage the same servers"),
    ({"replicated": {"kind": "redis", "durability": "eventual"}}, "target_groups.db.replicated.durability"),
    ({"replicated": {"kind": "redis", "lease": {"etcd": ["127.0.0.1:2379"]}}},
     "target_groups.db.replicated.lease.etcd: '127.0.0.1:2379' is not an etcd client URL"),
    ({"replicated": {"kind": "redis", "lease": {"etcd": ["http://e:2379"], "ttl": "1s"}}},
     "target_groups.db.replicated.lease.ttl: ttl must be at least 2s"),
])
def test_replicated_errors_name_the_field(over: dict[str, Any], expected: str) -> None:
    assert any(e.startswith(expected) for e in errors(spec(**over))), errors(spec(**over))


def test_replicated_groups_are_reached_over_tcp_only() -> None:
    data = spec()
    data["listeners"][0]["protocol"] = "http"
    assert "listeners.0.protocol: target group 'db' is a replicated redis store: use protocol: tcp" in errors(data)


def test_targets_groups_need_two_servers_and_may_share_a_lease() -> None:
    one = spec(instances=None, targets=["127.0.0.1:7000"])
    del one["target_groups"]["db"]["instances"]
    assert "target_groups.db.targets: a replicated group needs a primary and at least one replica" in errors(one)
    two = spec(targets=["127.0.0.1:7000", "127.0.0.1:7001"],
               replicated={"kind": "redis", "lease": {"etcd": ["http://127.0.0.1:2379"], "ttl": "3s"}})
    del two["target_groups"]["db"]["instances"]
    lease = parse_spec(two, "f.yaml").target_groups["db"].replicated.lease  # type: ignore[union-attr]
    assert lease is not None and lease.ttl == 3.0
    two["workers"] = 2
    assert any(e.startswith("target_groups.db.replicated.lease: a lease needs workers: 1") for e in errors(two))


def test_read_listener_port_must_not_clash() -> None:
    data = spec(replicated={"kind": "redis", "read_listener": {"port": 7000}})
    data["listeners"][0]["port"] = 7000
    assert "target_groups.db.replicated.read_listener.port: port 7000 already used by listeners.0" in errors(data)


# --------------------------------------------------------------------------- RESP


def resp_value() -> st.SearchStrategy[Any]:
    leaf = st.one_of(st.integers(-(2**40), 2**40), st.binary(max_size=40), st.none(),
                     st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]),
                             max_size=20))
    return st.recursive(leaf, lambda c: st.lists(c, max_size=4), max_leaves=12)


def encode(v: Any) -> bytes:
    if v is None:
        return b"$-1\r\n"
    if isinstance(v, int):
        return b":%d\r\n" % v
    if isinstance(v, bytes):
        return b"$%d\r\n%s\r\n" % (len(v), v)
    if isinstance(v, str):
        return b"+" + v.encode() + b"\r\n"
    return b"*%d\r\n" % len(v) + b"".join(encode(x) for x in v)


@given(st.lists(resp_value(), max_size=5), st.data())
def test_parser_gets_every_reply_whatever_the_chunking(values: list[Any], data: Any) -> None:
    wire = b"".join(encode(v) for v in values)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    p = RespParser()
    out: list[Any] = []
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        out.extend(p.feed(wire[a:b]))
    assert out == values


def test_errors_are_values_and_garbage_is_a_protocol_error() -> None:
    [e] = RespParser().feed(b"-NOREPLICAS Not enough good replicas to write.\r\n")
    assert isinstance(e, ErrorReply) and e.startswith("NOREPLICAS")
    with pytest.raises(RespProtocolError):
        RespParser().feed(b"?what\r\n")
    with pytest.raises(RespProtocolError):
        RespParser().feed(b"$3\r\nabcd\r\n")


def test_commands_round_trip_through_the_parser() -> None:
    assert RespParser().feed(encode_command("REPLICAOF", "127.0.0.1", 7001)) == [[b"REPLICAOF", b"127.0.0.1", b"7001"]]


def test_info_of_a_replica_with_its_link_down() -> None:
    o = observation_from_info({"role": "slave", "master_host": "127.0.0.1", "master_port": "7", "run_id": "x",
                               "master_link_status": "down", "slave_repl_offset": "5"})
    assert (o.role, o.position, o.following, o.link_up, o.incarnation) == (StoreRole.REPLICA, 5, "127.0.0.1:7",
                                                                          False, "x")
    with pytest.raises(StoreError):
        observation_from_info({"role": "sentinel"})


@pytest.mark.parametrize("bad", ["", "leader 5", "primary", "replica x", "primary 5x"])
def test_bad_role_lines_say_what_is_expected(bad: str) -> None:
    with pytest.raises(StoreError, match="expected 'primary POSITION'"):
        parse_role_line(bad)


def test_role_line_link_state() -> None:
    assert parse_role_line("replica 3 h:1 down").link_up is False
    assert parse_role_line("replica 3").following is None


def test_a_timed_out_pipeline_leaves_no_reply_to_fail_unseen_when_the_connection_ends() -> None:
    # the replies not awaited any more used to get the connection's end as an exception no one
    # read: "Future exception was never retrieved" in fivenines' log (a SIGKILLed replica)
    async def main() -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        seen: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
        accepted: list[asyncio.StreamWriter] = []
        server = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)  # never replies
        client = await RedisClient.connect("127.0.0.1", server.sockets[0].getsockname()[1], 1.0)
        try:
            await client.pipeline([["PING"], ["PING"], ["PING"]], timeout=0.05)
        except StoreTimeout:
            pass
        else:
            raise AssertionError("a silent server answered")
        deadline = time.monotonic() + 5
        while client.usable or client._proto.closed is None:  # connection_lost has run
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()
        gc.collect()
        await asyncio.sleep(0)
        return seen

    seen = asyncio.run(main())
    assert [c.get("message") for c in seen] == []
