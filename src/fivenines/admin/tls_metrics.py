"""Prometheus metrics of TLS listeners, for ``/metrics``: certificates (:class:`TlsCollector`) and
handshakes (:class:`TlsHandshakeCollector`).

``fivenines_tls_certificate_expiry_days{listener,cert}``: days until the certificate expires
(negative once expired; alert well before 0), ``cert`` being its file; and
``fivenines_tls_certificate_not_after_seconds`` (POSIX time) for absolute alerts. Read at
scrape time from each listener's :class:`~fivenines.proxy.tls.ListenerTls` read model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fivenines.certs import CertificateInfo

Source = Callable[[], Iterable[tuple[str, Iterable[CertificateInfo]]]]
"""What to report: (listener name, its certificates) pairs, read at each scrape."""


class TlsCollector(Collector):
    """Register with ``registry.register(TlsCollector(lambda: [(name, tls.infos) for ...]))``."""

    def __init__(self, source: Source, clock: Callable[[], float] = time.time) -> None:
        self.source = source
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        days = GaugeMetricFamily("fivenines_tls_certificate_expiry_days",
                                 "Days until the certificate expires (negative: expired).", labels=["listener", "cert"])
        until = GaugeMetricFamily("fivenines_tls_certificate_not_after_seconds",
                                  "When the certificate expires (POSIX time).", labels=["listener", "cert"])
        for listener, infos in self.source():
            for info in infos:
                days.add_metric([listener, info.file], round(info.days_left(now), 3))
                until.add_metric([listener, info.file], info.not_after)
        yield days
        yield until

    def __repr__(self) -> str:
        return "<TlsCollector>"


HandshakeSource = Callable[[], Iterable[tuple[str, dict[str, int], int]]]
"""(listener name, its handshake counters (TlsCounters.as_dict), handshakes in progress now)."""


class TlsHandshakeCollector(Collector):
    """``fivenines_tls_handshakes_total{listener,outcome}`` (``done``: completed, of which
    ``resumed`` is also counted on its own; ``failed``, ``timed_out``, ``refused`` over
    ``limits.max_handshakes``) and ``fivenines_tls_handshakes_in_progress{listener}``."""

    OUTCOMES = (("handshakes", "done"), ("resumed", "resumed"), ("failed", "failed"),
                ("timed_out", "timed_out"), ("refused", "refused"))

    def __init__(self, source: HandshakeSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        total = CounterMetricFamily("fivenines_tls_handshakes", "TLS handshakes by outcome (passthrough: "
                                    "ClientHellos read).", labels=["listener", "outcome"])
        now = GaugeMetricFamily("fivenines_tls_handshakes_in_progress", "TLS handshakes in progress now.",
                                labels=["listener"])
        for listener, counters, in_progress in self.source():
            for key, outcome in self.OUTCOMES:
                total.add_metric([listener, outcome], counters.get(key, 0))
            now.add_metric([listener], in_progress)
        yield total
        yield now

    def __repr__(self) -> str:
        return "<TlsHandshakeCollector>"
