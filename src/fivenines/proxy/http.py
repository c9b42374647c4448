"""Where the HTTP proxy's classes lived before the split; kept so that older imports still work.

The proxy is now :mod:`fivenines.proxy.listener` (listener, settings, counters),
:mod:`fivenines.proxy.client` (the client side), :mod:`fivenines.proxy.upstream` (the target
side), with the life of an exchange in :mod:`fivenines.core.exchange` and head rewriting in
:mod:`fivenines.core.heads`. New code imports from those.
"""

from __future__ import annotations

from fivenines.core.heads import HOP_BY_HOP, strip_hop_by_hop
from fivenines.proxy.client import ClientConnection
from fivenines.proxy.listener import AccessLogSink, Counters, Listener, ProxySettings, wait_then_cut
from fivenines.proxy.upstream import HttpExchange as Exchange
from fivenines.proxy.upstream import UpstreamConnection

__all__ = ["HOP_BY_HOP", "AccessLogSink", "ClientConnection", "Counters", "Exchange", "Listener", "ProxySettings",
           "UpstreamConnection", "strip_hop_by_hop", "wait_then_cut"]
