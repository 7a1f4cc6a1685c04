"""``/metrics``: the API's own metrics and the control plane's, as Prometheus text, through
prometheus-client (the library made for it: exposition format, escaping, histograms, and
the process and Python collectors).

Owns: ``ApiMetrics`` (one per app: request counts by route, method and code, latency
histograms by route, forwards by outcome, parked polls, connections, timeouts, in a
registry of their own with the process, platform and garbage-collector collectors) and the
collector that turns ``ControlPlane.metrics()`` (a name -> number dict; a name ending in
``_total`` is a counter, anything else a gauge, each prefixed ``raftdir_``) and the control
plane's own registry (``metrics_registry``, when it has one: the directory server's
histograms) into metric families at scrape time.

Called on the API's event loop only. Imports prometheus-client and nothing of raftdir.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST, CollectorRegistry, Counter, GCCollector, Histogram,
    PlatformCollector, ProcessCollector, generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["ApiMetrics", "CONTENT_TYPE", "LATENCY_BUCKETS", "metric_name"]

log = logging.getLogger("raftdir.api")

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_:]")


def metric_name(name: str) -> str:
    """A control-plane metric's exposed name: valid characters, prefixed ``raftdir_``."""
    name = _NAME_BAD.sub("_", name)
    if not name or name[0].isdigit():
        name = "_" + name
    return name if name.startswith("raftdir_") else f"raftdir_{name}"


class _ControlPlaneCollector(Collector):
    """The control plane's gauges and counters, read when scraped."""

    def __init__(self, read: Callable[[], dict[str, float]],
                 registry: Callable[[], Any]) -> None:
        self._read = read
        self._registry = registry

    def describe(self) -> Iterable[Metric]:
        return ()   # known only when scraped (the control plane may not run yet)

    def collect(self) -> Iterable[Metric]:
        try:
            values = dict(self._read())
        except Exception:  # noqa: BLE001 - the API's own metrics are still worth serving
            log.exception("ControlPlane.metrics() failed")
            values = {"metrics_errors_total": 1}
        for raw, value in sorted(values.items()):
            name = metric_name(raw)
            if name.endswith("_total"):
                yield CounterMetricFamily(name, f"{name} (control plane)", value=value)
            else:
                yield GaugeMetricFamily(name, f"{name} (control plane)", value=value)
        registry = self._registry()
        if registry is not None:
            yield from registry.collect()


class ApiMetrics:
    """The metrics of one API app. Counts the API's code reads (``parked``,
    ``connections``) are plain integers; the exposition reads them when scraped."""

    def __init__(self) -> None:
        self.parked = 0
        self.connections = 0            # open now (under start_api)
        self.connections_refused = 0    # over max_connections: answered 503
        self.polls_shed = 0             # polls answered 503 to keep room for reports
        self.request_timeouts = 0       # heads and bodies that did not arrive in time
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._requests = Counter(
            "raftdir_api_requests", "HTTP requests answered, by route, method and status code.",
            ["route", "method", "code"], registry=r)
        self._latency = Histogram(
            "raftdir_api_request_duration_seconds", "Time to answer a request, by route.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self._forwarded = Counter(
            "raftdir_api_forwarded", "Writes a follower proxied to the leader, by route and "
            "outcome.", ["route", "outcome"], registry=r)
        r.register(_Counts(self))
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self._cp: _ControlPlaneCollector | None = None

    def attach(self, read: Callable[[], dict[str, float]], cp_registry: Callable[[], Any]
               ) -> None:
        """Serve the control plane's metrics too (``ControlPlane.metrics`` and its
        ``metrics_registry``)."""
        self._cp = _ControlPlaneCollector(read, cp_registry)
        self.registry.register(self._cp)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self._requests.labels(route, method, str(status)).inc()
        self._latency.labels(route).observe(seconds)

    def forward(self, route: str, outcome: str) -> None:
        self._forwarded.labels(route, outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Counts(Collector):
    def __init__(self, m: ApiMetrics) -> None:
        self._m = m

    def collect(self) -> Iterable[Metric]:
        m = self._m
        yield GaugeMetricFamily("raftdir_api_parked_polls",
                                "Long-polls waiting inside this server now.", value=m.parked)
        yield GaugeMetricFamily("raftdir_api_connections", "HTTP connections open now.",
                                value=m.connections)
        yield CounterMetricFamily("raftdir_api_connections_refused",
                                  "Connections answered 503 overloaded at the connection cap.",
                                  value=m.connections_refused)
        yield CounterMetricFamily("raftdir_api_polls_shed",
                                  "Polls answered 503 overloaded because the server keeps "
                                  "its last connections for reports and writes.",
                                  value=m.polls_shed)
        yield CounterMetricFamily("raftdir_api_request_timeouts",
                                  "Requests whose head or body did not arrive in time (408).",
                                  value=m.request_timeouts)
