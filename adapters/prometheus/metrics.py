"""The worker's own metrics, as Prometheus types: what an operator watches on a dashboard.

Totals that the worker already counts (records in, signals out, records held) are read at scrape time,
so the per-record path makes no metric call. What has no counter of its own is recorded here: dead letters
by reason, consumer lag per partition (set by a timer), model latency and batch sizes (histograms, around
each model call, which is per batch, not per record) and how long records waited for their turn.

Every name is built from :data:`PREFIX`; ``deploy/grafana/sigstream.json`` queries only names this module
(and :class:`adapters.prometheus.server.StatsCollector`) exports, and a unit test holds it to that.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from engine.events import DeadLetter
from engine.ports import SentimentModel

PREFIX = "sigstream"
# Model calls are per batch: from one text (a lone headline) to max_batch (64 by default) and a little above.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# CPU inference of a MiniLM batch is milliseconds to a few seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A record waits for the other topic from milliseconds (the next fetch) to minutes (a stalled publisher).
WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0)
MAX_REASONS = 50  # distinct dead-letter reason labels; later new ones count as "other" (bounded cardinality)

_NUMBER = re.compile(r"\d+(\.\d+)?")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_SYMBOL = re.compile(r"\b[A-Z0-9]{5,}\b")


def reason_label(reason: str) -> str:
    """A dead letter's reason as a bounded label: its first clause, with numbers, quoted values and symbols
    replaced (``"text of 9000 chars exceeds max_text_chars=8192"`` -> ``"text of N chars exceeds
    max_text_chars=N"``), so one kind of fault is one time series whatever record caused it."""
    head = reason.split(":", 1)[0]
    head = _QUOTED.sub("…", head)
    head = _SYMBOL.sub("SYMBOL", head)
    head = _NUMBER.sub("N", head)
    return " ".join(head.split())[:80] or "unknown"


class WorkerMetrics:
    """The worker's metrics in ``registry``; ``read_*`` callables are read at scrape time.

    Args:
        registry: Where the metrics are registered.
        records_in: ``() -> {topic: records consumed}``.
        signals_out: ``() -> composite signals published``.
        held: ``() -> records waiting for their turn now``.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        records_in: Callable[[], Mapping[str, int]],
        signals_out: Callable[[], int],
        held: Callable[[], int],
    ) -> None:
        self._lock = threading.Lock()
        self._reasons: set[str] = set()
        registry.register(_WorkerTotals(records_in, signals_out, held))
        self.dead_letters = Counter(
            f"{PREFIX}_dead_letters", "Records dead-lettered, by reason (numbers and symbols masked).",
            ["reason"], registry=registry,
        )
        self.consumer_lag = Gauge(
            f"{PREFIX}_consumer_lag", "Records on the broker after the last one the worker read, per partition.",
            ["topic", "partition"], registry=registry,
        )
        self.model_latency = Histogram(
            f"{PREFIX}_model_latency_seconds", "Wall time of one sentiment model call (one batch).",
            buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.model_batch_size = Histogram(
            f"{PREFIX}_model_batch_size", "Texts per sentiment model call.", buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.ordering_wait = Histogram(
            f"{PREFIX}_ordering_wait_seconds",
            "How long a record that could not be fed at once waited for the other topic to reach its turn.",
            ["topic"], buckets=WAIT_BUCKETS, registry=registry,
        )
        self._lagged: set[tuple[str, str]] = set()
        self._waits: dict[str, Histogram] = {}

    # -- hooks the worker calls ---------------------------------------------------------------------
    def dead_letter(self, record: DeadLetter) -> None:
        """One dead letter was published."""
        label = reason_label(record.reason)
        with self._lock:
            if label not in self._reasons:
                if len(self._reasons) >= MAX_REASONS:
                    label = "other"
                else:
                    self._reasons.add(label)
        self.dead_letters.labels(reason=label).inc()

    def ordering_wait_observed(self, topic: str, seconds: float) -> None:
        """A held record was fed after waiting ``seconds`` (per held record: the labelled child is looked up once)."""
        child = self._waits.get(topic)
        if child is None:
            child = self._waits[topic] = self.ordering_wait.labels(topic=topic)
        child.observe(seconds)

    def set_lags(self, lags: Mapping[tuple[str, int], int]) -> None:
        """The lag of every partition the worker owns now; partitions it no longer owns are dropped."""
        current = {(topic, str(partition)) for topic, partition in lags}
        for gone_topic, gone_partition in self._lagged - current:
            self.consumer_lag.remove(gone_topic, gone_partition)
        for (topic, partition), lag in lags.items():
            self.consumer_lag.labels(topic=topic, partition=str(partition)).set(lag)
        self._lagged = current

    def timed(self, model: SentimentModel) -> SentimentModel:
        """``model`` with each call's latency and batch size observed."""
        return TimedModel(model, self.model_latency, self.model_batch_size)


class TimedModel:
    """A :class:`engine.ports.SentimentModel` that observes each call's wall time and batch size; every other
    attribute is the wrapped model's."""

    def __init__(self, model: SentimentModel, latency: Histogram, batch_size: Histogram) -> None:
        self._model = model
        self._latency = latency
        self._batch_size = batch_size

    def predict_proba(self, texts: Sequence[str]) -> list[tuple[float, float, float]]:
        start = time.perf_counter()
        try:
            return self._model.predict_proba(texts)
        finally:
            self._latency.observe(time.perf_counter() - start)
            self._batch_size.observe(len(texts))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class _WorkerTotals(Collector):
    def __init__(
        self, records_in: Callable[[], Mapping[str, int]], signals_out: Callable[[], int], held: Callable[[], int]
    ) -> None:
        self._records_in = records_in
        self._signals_out = signals_out
        self._held = held

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        records = CounterMetricFamily(f"{PREFIX}_records_in", "Records consumed, by topic.", labels=["topic"])
        for topic, count in sorted(self._records_in().items()):
            records.add_metric([topic], count)
        yield records
        yield CounterMetricFamily(f"{PREFIX}_signals_out", "Composite signals published.", value=self._signals_out())
        yield GaugeMetricFamily(f"{PREFIX}_ordering_held", "Records waiting now for the other topic to reach "
                                "their turn.", value=self._held())
