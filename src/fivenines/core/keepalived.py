"""keepalived's configuration for ``coordination: vrrp``, rendered from the spec. Pure: text in, text out.

One VRRPv3 instance per node pair, unicast between the two nodes' own addresses (no
multicast needed on the network), ``nopreempt`` unless asked (a node that comes back
does not take the address back and cause a second blip), the address with its prefix
on the spec's interface, a **track file** that fivenines writes (``0`` healthy, ``1``
not: with weight 0 a non-zero value puts the instance in FAULT, so a node whose
balancer is unhealthy gives the address up), and a **notify FIFO** through which
keepalived tells fivenines every state change (``INSTANCE "fivenines" MASTER 150``).

A backup declares the master dead after ``3 x advert_int + skew``, with
``skew = (256 - priority) x advert_int / 256`` (RFC 5798), the bound docs/cluster.md
gives for this mode.

**The fence.** keepalived cannot remove its address when it is killed with SIGKILL, and a
frozen one (SIGSTOP) keeps it too: the node's kernel answers for the VIP while the other
node has taken it over. So fivenines keeps the same nftables fence as in etcd mode
(:mod:`fivenines.runtime.vip`) and opens it only while keepalived says MASTER, its process
runs and fivenines runs, for :func:`fence_timeout` at a time, renewed every
:func:`fence_refresh`: a master that dies or freezes goes silent on its own before the
backup's master-down timer runs out.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

INSTANCE = "fivenines"
TRACK = "fivenines_health"


@dataclass(frozen=True, slots=True)
class VrrpPeer:
    name: str
    address: str
    priority: int


def master_down_interval(advert_int: float, priority: int) -> float:
    """How long a backup waits without adverts before it takes over (RFC 5798 section 6.1).

    >>> round(master_down_interval(1.0, 100), 3), round(master_down_interval(0.1, 100), 4)
    (3.609, 0.3609)
    """
    return 3 * advert_int + (256 - priority) * advert_int / 256


FENCE_MARGIN = 0.02
"""Seconds kept between the fence's closing and the backup's earliest takeover: two kernel ticks
of the nftables timeout (8 ms at HZ=250) and the scheduling of the backup's timer."""


def fence_timeout(advert_int: float, peer_priority: int) -> float:
    """How long one opening of a master's fence lasts: it must close before the backup can take over.

    The backup (priority ``peer_priority``) takes over a master-down interval after the *last
    advert it received*; that advert left the master up to one ``advert_int`` before the
    master died, and the fence may have been renewed just before. So a fence opened for
    ``master_down_interval - advert_int - margin`` closes before the backup's timer ends,
    whenever the master stops (the margin is :data:`FENCE_MARGIN`, or a tenth of
    ``advert_int`` when larger: an advert sent a little late on a loaded host).

    >>> round(fence_timeout(1.0, 100), 3), round(fence_timeout(0.1, 100), 4), round(fence_timeout(0.05, 100), 4)
    (2.509, 0.2409, 0.1105)
    """
    if advert_int <= 0:
        raise ValueError(f"advert_int must be > 0, got {advert_int!r}")
    return master_down_interval(advert_int, peer_priority) - advert_int - max(FENCE_MARGIN, advert_int / 10)


def fence_refresh(timeout: float) -> float:
    """How often an open fence is renewed: four renewals per opening, so three may come late.

    >>> fence_refresh(0.2409)
    0.060225
    """
    return timeout / 4


def fence_may_open(state: str, keepalived_running: bool) -> bool:
    """May this node's fence be open: keepalived says MASTER and its process runs (not exited, not
    stopped). That fivenines runs is implied: it is fivenines that opens the fence.

    >>> fence_may_open("MASTER", True), fence_may_open("MASTER", False), fence_may_open("BACKUP", True)
    (True, False, False)
    """
    return state == "MASTER" and keepalived_running


def _seconds(value: float) -> str:
    """keepalived counts VRRPv3 adverts in centiseconds.

    >>> _seconds(1.0), _seconds(0.1), _seconds(0.25)
    ('1', '0.1', '0.25')
    """
    return f"{round(value, 2):g}"


def render(*, node: str, peers: list[VrrpPeer], vip: str, interface: str, advert_int: float,
           virtual_router_id: int, preempt: bool, track_file: str, notify_fifo: str) -> str:
    """The keepalived.conf of ``node`` (one of ``peers``).

    >>> print(render(node="a", peers=[VrrpPeer("a", "10.0.0.11", 150), VrrpPeer("b", "10.0.0.12", 100)],
    ...              vip="10.0.0.100/24", interface="eth0", advert_int=1.0, virtual_router_id=51,
    ...              preempt=False, track_file="/s/health", notify_fifo="/s/notify"))  # doctest: +ELLIPSIS
    # keepalived.conf of fivenines node a (generated: do not edit)
    global_defs {
        router_id fivenines-a
        vrrp_version 3
        notify_fifo /s/notify
    }
    vrrp_track_file fivenines_health {
        file /s/health
    }
    vrrp_instance fivenines {
        state BACKUP
        interface eth0
        virtual_router_id 51
        priority 150
        advert_int 1
        nopreempt
        unicast_src_ip 10.0.0.11
        unicast_peer {
            10.0.0.12
        }
        virtual_ipaddress {
            10.0.0.100/24 dev eth0
        }
        track_file {
            fivenines_health weight 0
        }
    }
    <BLANKLINE>
    """
    me = next((p for p in peers if p.name == node), None)
    if me is None:
        raise ValueError(f"node {node!r} is not one of {[p.name for p in peers]}")
    others = [p for p in peers if p.name != node]
    ipaddress.IPv4Interface(vip)
    lines = [
        f"# keepalived.conf of fivenines node {node} (generated: do not edit)",
        "global_defs {",
        f"    router_id fivenines-{node}",
        "    vrrp_version 3",
        f"    notify_fifo {notify_fifo}",
        "}",
        f"vrrp_track_file {TRACK} {{",
        f"    file {track_file}",
        "}",
        f"vrrp_instance {INSTANCE} {{",
        "    state BACKUP",
        f"    interface {interface}",
        f"    virtual_router_id {virtual_router_id}",
        f"    priority {me.priority}",
        f"    advert_int {_seconds(advert_int)}",
        *([] if preempt else ["    nopreempt"]),
        f"    unicast_src_ip {me.address}",
        "    unicast_peer {",
        *(f"        {p.address}" for p in others),
        "    }",
        "    virtual_ipaddress {",
        f"        {vip} dev {interface}",
        "    }",
        "    track_file {",
        f"        {TRACK} weight 0",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


STATES = frozenset({"MASTER", "BACKUP", "FAULT", "STOP", "DELETED"})
"""The states keepalived reports through the notify FIFO. It also writes events that are not
states, e.g. ``MASTER_RX_LOWER_PRI`` (a master heard a lower priority's advert: still MASTER)."""


def parse_notify(line: str) -> tuple[str, str, str] | None:
    """A notify FIFO line that reports a state: (kind, name, state), e.g. ``INSTANCE "fivenines" MASTER 150``;
    None for anything else (events that change no state among them).

    >>> parse_notify('INSTANCE "fivenines" MASTER 150'), parse_notify("junk")
    (('INSTANCE', 'fivenines', 'MASTER'), None)
    >>> parse_notify('INSTANCE "fivenines" MASTER_RX_LOWER_PRI 150') is None
    True
    """
    parts = line.strip().split()
    if len(parts) < 3 or parts[0] not in ("INSTANCE", "GROUP") or parts[2] not in STATES:
        return None
    return parts[0], parts[1].strip('"'), parts[2]
