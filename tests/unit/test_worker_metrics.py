"""The worker's Prometheus metrics and probes, on a real StreamProcessor fed records without a broker."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from adapters.kafka.app import RawRecord, StreamProcessor
from adapters.kafka.config import KafkaSettings
from adapters.prometheus.config import MetricsSettings
from adapters.prometheus.metrics import MAX_REASONS, WorkerMetrics, reason_label
from adapters.prometheus.server import MetricsServer
from engine.batcher import MicroBatcher
from engine.config import EngineSettings
from engine.events import DeadLetter
from engine.serialization import decode_signal
from sigstream.modes.worker import Totals, throughput_line, worker_metrics
from tests.support.lexicon_model import LexiconSentimentModel
from tests.unit.test_kafka_ordering import committed_at_start, noop_ack, recording, stamp


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_worker_metrics_count_records_signals_dead_letters_waits_and_model_calls() -> None:
    settings = KafkaSettings(partitions=2)
    market, news = stamp(recording(6), settings)
    out: list[tuple[str, bytes]] = []

    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        out.append((topic, value))

    registry, metrics = worker_metrics(settings, lambda: processor, lambda: batcher)
    batcher = MicroBatcher(metrics.timed(LexiconSentimentModel()))
    processor = StreamProcessor(EngineSettings(), batcher, send, settings, start_offset=committed_at_start)
    processor.observe(metrics)
    # Partition 1 (ETHUSDT, which the news is about). Market first: every record stamped after the first news
    # waits for it (an ordering wait), then the news.
    for record in market[1]:
        await processor.on_record(record, noop_ack)
    held = processor.held
    assert held > 0
    for record in news[1]:
        await processor.on_record(record, noop_ack)
    bad = RawRecord(settings.topics.market_raw, 0, 0, b"BTCUSDT", b"{not json")
    await processor.on_record(bad, noop_ack)
    await processor.tick()

    got = samples(registry)
    topics = settings.topics
    assert got[("sigstream_records_in_total", (("topic", topics.market_raw),))] == len(market[1]) + 1
    assert got[("sigstream_records_in_total", (("topic", topics.news_raw),))] == len(news[1])
    signals = [decode_signal(v) for t, v in out if t == topics.signals]
    assert signals and got[("sigstream_signals_out_total", ())] == len(signals)
    assert got[("sigstream_dead_letters_total", (("reason", "malformed JSON"),))] == 1
    assert got[("sigstream_ordering_wait_seconds_count", (("topic", topics.market_raw),))] == held
    assert got[("sigstream_ordering_held", ())] == 0
    assert got[("sigstream_model_batch_size_count", ())] == batcher.stats.model_calls > 0
    assert got[("sigstream_model_batch_size_sum", ())] == batcher.stats.model_texts
    assert got[("sigstream_model_latency_seconds_count", ())] == batcher.stats.model_calls
    # the scrape-time counters of the worker, its runtimes and the batcher are there too
    assert got[("sigstream_worker_dead_letters_total", ())] == 1
    assert got[("sigstream_batcher_model_calls_total", ())] == batcher.stats.model_calls


def test_dead_letter_reasons_are_bounded_labels() -> None:
    assert reason_label("text of 9000 chars exceeds max_text_chars=8192") == "text of N chars exceeds max_text_chars=N"
    assert reason_label("malformed JSON: unexpected character at line 1") == "malformed JSON"
    assert reason_label("unsupported schema version 7") == reason_label("unsupported schema version 12")
    assert reason_label("FOOUSDT hashes to partition 2 of 3") == "SYMBOL hashes to partition N of N"
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, records_in=dict, signals_out=lambda: 0, held=lambda: 0)
    for i in range(MAX_REASONS + 5):
        metrics.dead_letter(DeadLetter(f"reason kind {'x' * i}", "t[0]", "", 0, 0))
    got = samples(registry)
    reasons = {dict(labels)["reason"] for name, labels in got if name == "sigstream_dead_letters_total"}
    assert len(reasons) == MAX_REASONS + 1 and "other" in reasons
    assert got[("sigstream_dead_letters_total", (("reason", "other"),))] == 5


def test_lag_of_a_partition_no_longer_owned_is_dropped() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, records_in=dict, signals_out=lambda: 0, held=lambda: 0)
    metrics.set_lags({("market.raw", 0): 5, ("market.raw", 1): 7})
    metrics.set_lags({("market.raw", 1): 2})
    lags = {labels: v for (name, labels), v in samples(registry).items() if name == "sigstream_consumer_lag"}
    assert lags == {(("partition", "1"), ("topic", "market.raw")): 2}


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_probes_follow_readiness_and_the_event_loop_beat() -> None:
    registry = CollectorRegistry()
    WorkerMetrics(registry, records_in=lambda: {"market.raw": 3}, signals_out=lambda: 1, held=lambda: 0)
    server = MetricsServer(MetricsSettings(port=0, health_stale_s=30), registry).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert get(base + "/healthz")[0] == 200
        assert get(base + "/readyz")[0] == 503  # not yet in its consumer group
        server.set_ready(True)
        assert get(base + "/readyz")[0] == 200
        status, body = get(base + "/metrics")
        assert status == 200 and 'sigstream_records_in_total{topic="market.raw"} 3.0' in body
        server._last_beat -= 31  # the loop has not beaten for longer than the limit
        status, body = get(base + "/healthz")
        assert status == 503 and "silent" in body
        assert get(base + "/readyz")[0] == 503
        assert get(base + "/nope")[0] == 404
    finally:
        server.close()


def test_throughput_line_gives_rates_dead_letters_lag_and_held() -> None:
    settings = KafkaSettings()
    line = throughput_line(
        Totals(10.0, 100, 5, 20, 1), Totals(20.0, 600, 15, 120, 3), settings,
        {("market.raw", 0): 4, ("news.raw", 0): 1}, held=2,
    )
    assert line == (
        "throughput over 10 s: 51.0 records/s in (market.raw 50.0/s, news.raw 1.0/s), 10.0 signals/s out, "
        "2 dead letters, lag 5 records over 2 partitions, 2 records held for their turn"
    )
