"""A Prometheus collector that reads the engine's own counters at scrape time.

Reading the counters on scrape keeps the hot paths free of metric calls: the engine and batcher
already count everything in plain dataclasses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import fields, is_dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from adapters.prometheus.config import MetricsSettings

log = logging.getLogger(__name__)

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
    MetricsServer(settings, registry, ready=True).start()
    return registry


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on one port, served from a daemon thread.

    ``/healthz`` (liveness) answers 200 while :meth:`beat` was called within ``settings.health_stale_s``: the
    owner beats from its event loop, so a wedged loop turns the probe red. ``/readyz`` answers 200 once
    :meth:`set_ready` said so (a worker: after it joined its consumer group) and the loop is alive.
    """

    def __init__(self, settings: MetricsSettings, registry: CollectorRegistry, *, ready: bool = False) -> None:
        self.settings = settings
        self.registry = registry
        self._ready = ready
        self._last_beat = time.monotonic()
        self._server: ThreadingHTTPServer | None = None

    def beat(self) -> None:
        """The owner's loop is alive."""
        self._last_beat = time.monotonic()

    def set_ready(self, ready: bool) -> None:
        self._ready = ready

    def health(self) -> tuple[bool, str]:
        quiet = time.monotonic() - self._last_beat
        if quiet > self.settings.health_stale_s:
            return False, f"event loop silent for {quiet:.0f} s (limit {self.settings.health_stale_s:.0f} s)"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        alive, why = self.health()
        if not alive:
            return False, why
        return (True, "ready") if self._ready else (False, "not ready: not yet serving")

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one the OS chose for port 0)."""
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                    self._reply(200, encoder(owner.registry), content_type)
                elif path in ("/healthz", "/readyz"):
                    ok, why = owner.health() if path == "/healthz" else owner.readiness()
                    self._reply(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
                else:
                    self._reply(404, b"not found: /metrics, /healthz, /readyz\n", "text/plain; charset=utf-8")

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics endpoint: " + format, *args)

        self._server = ThreadingHTTPServer((self.settings.host, self.settings.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True).start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
