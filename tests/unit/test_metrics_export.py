"""Prometheus export of the engine's counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from adapters.prometheus.server import StatsCollector
from engine.config import EngineSettings
from engine.events import Bar, Interval
from engine.pipeline import SignalEngine


def test_engine_counters_are_exported_as_prometheus_counters() -> None:
    engine = SignalEngine(EngineSettings(interval=Interval.M1))
    engine.on_bar(Bar("BTCUSDT", Interval.M1, 0, 1.0, 1.0, 1.0, 1.0, 1.0, 60_000, 60_000))
    registry = CollectorRegistry()
    registry.register(StatsCollector({"engine": lambda: engine.stats}))
    text = generate_latest(registry).decode()
    assert "sigstream_engine_bars_total 1.0" in text
    assert "sigstream_engine_signals_total 1.0" in text
