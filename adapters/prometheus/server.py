"""A Prometheus collector that reads the engine's own counters at scrape time.

Reading the counters on scrape keeps the hot paths free of metric calls: the engine and batcher
already count everything in plain dataclasses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import fields, is_dataclass
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from adapters.prometheus.config import MetricsSettings

# Stats fields that are levels, not running totals.
_GAUGES = frozenset({"news_in_flight", "pending"})


class StatsCollector(Collector):
    """Exports every int field of the given stats dataclasses as ``sigstream_<group>_<field>``."""

    def __init__(self, groups: dict[str, Callable[[], Any]]) -> None:
        self._groups = groups

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        for group, read in self._groups.items():
            stats = read()
            if not is_dataclass(stats):
                continue
            for field in fields(stats):
                value = getattr(stats, field.name)
                if not isinstance(value, int) or isinstance(value, bool):
                    continue
                name = f"sigstream_{group}_{field.name}"
                if field.name in _GAUGES:
                    yield GaugeMetricFamily(name, f"{group} {field.name}", value=value)
                else:
                    yield CounterMetricFamily(name, f"{group} {field.name} (total)", value=value)


def serve_metrics(settings: MetricsSettings, groups: dict[str, Callable[[], Any]]) -> CollectorRegistry | None:
    """Start the ``/metrics`` endpoint when a port is configured; returns its registry."""
    if not settings.port:
        return None
    registry = CollectorRegistry()
    registry.register(StatsCollector(groups))
    start_http_server(settings.port, addr=settings.host, registry=registry)
    return registry
