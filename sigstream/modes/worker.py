"""The ``sigstream worker`` room: the faust app wired to one runtime per partition, Redis, snapshots, metrics."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adapters.kafka.config import KafkaSettings
from adapters.redis.config import RedisSettings
from engine.errors import FatalError
from sigstream.logs import log_format
from sigstream.modes.sentiment import load_model
from sigstream.settings import Settings

log = logging.getLogger(__name__)


def with_real_partition_count(kafka: KafkaSettings) -> KafkaSettings:
    """The worker maps a symbol to its market.raw partition: ``kafka`` with the topic's real count, not the
    setting's (which only sizes topics this project creates), as a new object."""
    from adapters.kafka.client import partition_counts

    counts = asyncio.run(partition_counts(kafka, [kafka.topics.market_raw, kafka.topics.news_raw]))
    real, news = counts[kafka.topics.market_raw], counts[kafka.topics.news_raw]
    if real is not None and news is not None and news != real:
        raise FatalError(
            f"{kafka.topics.news_raw} has {news} partition(s) and {kafka.topics.market_raw} {real}: they must be "
            f"equal, so that every worker gets the news of its symbols; add partitions to "
            f"{kafka.topics.news_raw} (kafka-topics.sh --alter --partitions {real})"
        )
    if real is None or real == kafka.partitions:
        return kafka
    log.info("%s has %d partitions (setting says %d); using %d", kafka.topics.market_raw, real, kafka.partitions, real)
    # A fact read from the broker, not a choice: not held to the limits of the setting that sizes new topics.
    return kafka.model_copy(update={"partitions": real})


def build_app(settings: Settings, model: Any) -> Any:
    """The faust app wired to the runtime, the micro-batcher and (optionally) Redis."""
    from adapters.kafka.app import StreamProcessor, create_app
    from adapters.model.gpu_serving import batcher_settings_for  # the device's max_batch / max_wait_ms defaults
    from adapters.prometheus.server import MetricsServer
    from engine.batcher import MicroBatcher

    redis_settings = settings.redis if settings.redis.url is not None else None
    warm: dict[str, list[Any]] = {}
    if redis_settings is not None:
        warm = asyncio.run(_warm_up(redis_settings))

    stores: list[Any] = []
    state = None
    if settings.kafka.snapshots:
        from adapters.kafka.store import KafkaStateStore

        state = KafkaStateStore(settings.kafka)

    observed: list[tuple[Any, Any]] = []  # (registry, WorkerMetrics), made with the processor

    def factory(send: Any, start_offset: Any) -> StreamProcessor:
        registry, metrics = worker_metrics(settings.kafka, lambda: processor, lambda: batcher)
        observed.append((registry, metrics))
        batcher = MicroBatcher(metrics.timed(model), batcher_settings_for(model, settings.engine.batcher))
        store = None
        if redis_settings is not None:
            from adapters.inprocess.store import InMemoryFeatureStore
            from adapters.redis.store import RedisFeatureStore, ResilientFeatureStore

            store = ResilientFeatureStore(RedisFeatureStore(redis_settings), InMemoryFeatureStore())
            stores.append(store)
        processor = StreamProcessor(
            settings.engine,
            batcher,
            send,
            settings.kafka,
            store=store,
            start_offset=start_offset,
            state=state,
            warm=warm,
        )
        processor.observe(metrics)
        return processor

    async def stopping(processor: StreamProcessor) -> None:
        for store in stores:
            await store.close()
        if state is not None:
            await state.close()
        if not await _broker_answers(settings.kafka.bootstrap):
            log.error(
                "stopping without the broker at %s: the final commit of %s and %s partitions %s cannot be made, "
                "so the offsets processed since the last commit are not committed; the next worker reads those "
                "records again and re-sends their signals with the same ids",
                settings.kafka.bootstrap, settings.kafka.topics.market_raw, settings.kafka.topics.news_raw,
                sorted(processor.owned_partitions()),
            )
        stats = processor.stats
        runtime = processor.runtime_stats()
        engine = runtime.engine
        log.info(
            "worker stopping: %d market records, %d news records, %d bars, %d news scored, %d signals, "
            "%d dead letters, %d bars of another interval than %s, %d stale bars, %d duplicate news, "
            "%d news about no owned symbol, %d records still waiting for their turn (re-read by the next worker), "
            "%d snapshots written, %d restored, %d re-delivered records already in a restored snapshot",
            stats.market_records, stats.news_records, engine.bars, engine.sentiment_scores, runtime.signals,
            stats.dead_letters, engine.bars_other_interval, settings.engine.interval.value, engine.bars_stale,
            engine.news_duplicate, engine.news_unmapped, processor.held, stats.snapshots, stats.snapshots_restored,
            stats.records_in_snapshot,
        )

    app = create_app(settings.kafka, factory, on_stopping=stopping)
    registry, metrics = observed[-1]
    server = None
    if settings.metrics.port:
        server = MetricsServer(settings.metrics, registry).start()
        log.info("metrics on http://%s:%d/metrics (probes: /healthz, /readyz)", settings.metrics.host, server.port)
    _observe(app, settings, app.sigstream_processor, metrics, server)
    return app


def worker_metrics(
    kafka: KafkaSettings, processor: Callable[[], Any], batcher: Callable[[], Any]
) -> tuple[Any, Any]:
    """The worker's Prometheus registry and its :class:`~adapters.prometheus.metrics.WorkerMetrics`: the worker's,
    its runtimes', the engines' and the batcher's counters (read at scrape time, ``sigstream_<group>_<field>``)
    and the named worker metrics. ``processor()`` and ``batcher()`` are read at scrape time."""
    from prometheus_client import CollectorRegistry

    from adapters.prometheus.metrics import WorkerMetrics
    from adapters.prometheus.server import StatsCollector

    registry = CollectorRegistry()
    registry.register(StatsCollector({
        "worker": lambda: processor().stats,
        "runtime": lambda: processor().runtime_stats(),
        "engine": lambda: processor().runtime_stats().engine,
        "batcher": lambda: batcher().stats,
    }))
    topics = kafka.topics

    def held() -> int:
        processor().runtime_stats()  # refreshes stats.held from the partitions
        return int(processor().stats.held)

    metrics = WorkerMetrics(
        registry,
        records_in=lambda: {topics.market_raw: processor().stats.market_records,
                            topics.news_raw: processor().stats.news_records},
        signals_out=lambda: processor().runtime_stats().signals,
        held=held,
    )
    return registry, metrics


@dataclass(frozen=True, slots=True)
class Totals:
    """Running totals at one moment, for the throughput line."""

    at: float  # monotonic seconds
    market: int
    news: int
    signals: int
    dead_letters: int


def totals(processor: Any, at: float) -> Totals:
    stats = processor.stats
    return Totals(at, stats.market_records, stats.news_records, processor.runtime_stats().signals, stats.dead_letters)


def throughput_line(before: Totals, now: Totals, kafka: KafkaSettings, lags: dict[tuple[str, int], int],
                    held: int) -> str:
    """One log line: rates since ``before``, the dead letters in that time, lag and held records now."""
    seconds = max(now.at - before.at, 1e-9)
    market, news = (now.market - before.market) / seconds, (now.news - before.news) / seconds
    signals = (now.signals - before.signals) / seconds
    lag = f"lag {sum(lags.values())} records over {len(lags)} partitions" if lags else "lag not known yet"
    return (f"throughput over {seconds:.0f} s: {market + news:.1f} records/s in ({kafka.topics.market_raw} "
            f"{market:.1f}/s, {kafka.topics.news_raw} {news:.1f}/s), {signals:.1f} signals/s out, "
            f"{now.dead_letters - before.dead_letters} dead letters, {lag}, {held} records held for their turn")


async def read_lags(app: Any, kafka: KafkaSettings, processor: Any) -> dict[tuple[str, int], int]:
    """Per owned input partition: the broker's end offset minus the offset after the last record the worker
    received (before its first record: the consumer's fetch position)."""
    inputs = (kafka.topics.market_raw, kafka.topics.news_raw)
    partitions = [tp for tp in app.consumer.assignment() if tp.topic in inputs]
    if not partitions:
        return {}
    ends = await app.consumer.highwaters(*partitions)
    lags: dict[tuple[str, int], int] = {}
    for tp in partitions:
        end = ends.get(tp)
        position = processor.consumed.get((tp.topic, tp.partition))
        if position is None:
            try:
                position = await asyncio.wait_for(app.consumer.position(tp), 1.0)
            except TimeoutError:
                position = None
        if end is not None and position is not None:
            lags[(tp.topic, tp.partition)] = max(0, int(end) - int(position))
    return lags


def _observe(app: Any, settings: Settings, processor: Any, metrics: Any, server: Any) -> None:
    """Timers on the worker's loop: consumer lag, the liveness beat and the throughput line; readiness once the
    worker joined its group."""
    interval = settings.metrics.lag_interval_s
    log_every = settings.metrics.log_interval_s
    state: dict[str, Any] = {"last": totals(processor, time.monotonic()), "lags": {}, "failing": False}

    @app.timer(interval, name="sigstream.observe")
    async def observe() -> None:
        if server is not None:
            server.beat()
        try:
            # Bounded: with the broker away, offset requests wait for their own long timeouts, and the liveness
            # beat above must keep coming (the worker rides out an outage; a restart would not help).
            state["lags"] = await asyncio.wait_for(read_lags(app, settings.kafka, processor), max(interval, 5.0))
        except Exception as exc:  # the broker is away or slow: lag is not known now, the worker goes on
            if not state["failing"]:
                log.warning("consumer lag not read (%s): %s", type(exc).__name__, exc)
            state["failing"] = True
        else:
            state["failing"] = False
            metrics.set_lags(state["lags"])
        now = totals(processor, time.monotonic())
        if log_every and now.at - state["last"].at >= log_every:
            log.info("%s", throughput_line(state["last"], now, settings.kafka, state["lags"], processor.held))
            state["last"] = now

    if server is not None:

        @app.on_partitions_assigned.connect
        async def _ready(sender: Any, assigned: Any, **kwargs: Any) -> None:
            server.beat()
            server.set_ready(True)

        @app.on_before_shutdown.connect
        async def _not_ready(sender: Any, **kwargs: Any) -> None:
            server.set_ready(False)


async def _broker_answers(bootstrap: str, timeout_s: float = 1.0) -> bool:
    """Whether any bootstrap broker accepts a TCP connection (a stop cannot commit without one)."""
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host or "127.0.0.1", int(port)), timeout_s)
        except (OSError, TimeoutError, ValueError):
            continue
        writer.close()
        return True
    return False


async def _warm_up(settings: RedisSettings) -> dict[str, list[Any]]:
    from adapters.inprocess.store import InMemoryFeatureStore
    from adapters.redis.store import RedisFeatureStore, ResilientFeatureStore

    store = ResilientFeatureStore(RedisFeatureStore(settings), InMemoryFeatureStore())
    try:
        bars = await store.warm_up()
    finally:
        await store.close()
    log.info("warmed %d symbols from redis", len(bars))
    return bars


def _bounded_stop_worker(worker_class: Any, kafka: KafkaSettings) -> Any:
    """faust's Worker, with a stop that cannot hang: with the broker gone, faust retries its last commit and
    the producer flush forever. After ``stop_timeout_s`` the worker says what it could not commit and exits 1;
    nothing is lost, because everything uncommitted is read again by the next worker."""

    class BoundedStopWorker(worker_class):  # type: ignore[misc,valid-type]  # faust is untyped
        def _schedule_shutdown(self, signal: Any) -> None:
            if not getattr(self, "_sigstream_watchdog", None):
                self._sigstream_watchdog = threading.Timer(kafka.stop_timeout_s, self._give_up, args=(signal,))
                self._sigstream_watchdog.daemon = True
                self._sigstream_watchdog.start()
            super()._schedule_shutdown(signal)

        def _give_up(self, signal: Any) -> None:
            processor = getattr(self.app, "sigstream_processor", None)
            owned = sorted(processor.owned_partitions()) if processor is not None else []
            log.error(
                "stop after %s did not finish within %.0f s (is the broker at %s reachable?): offsets processed "
                "since the last commit of %s and %s partitions %s could not be committed; the next worker reads "
                "those records again and re-sends their signals with the same ids",
                getattr(signal, "name", signal), kafka.stop_timeout_s, kafka.bootstrap, kafka.topics.market_raw,
                kafka.topics.news_raw, owned,
            )
            logging.shutdown()
            os._exit(1)

    return BoundedStopWorker


def _use_uvloop(settings: Settings) -> None:
    # faust pays several event-loop iterations per record; uvloop makes each one much cheaper.
    if settings.kafka.uses_tls() or settings.redis.uses_tls():
        # uvloop 0.22's TLS close waits up to 30 s for the peer's close_notify when a fetch is in flight, which
        # aiokafka's short-lived consumers (snapshot loads, start offsets) and every stop hit; asyncio's does not.
        log.info("TLS connections: using the asyncio event loop (uvloop's TLS close can stall 30 s)")
        return
    try:
        import uvloop  # noqa: F401 - only checks it is installed
    except ModuleNotFoundError:
        log.info("uvloop not installed; using the asyncio event loop")
        return
    import mode.loop

    mode.loop.use("uvloop")


def serve(settings: Settings, model_spec: str, *, create_topics: bool, loglevel: str) -> None:
    """Create the topics (if asked), size the worker to the real partitions, then run faust until stopped."""
    if settings.redis.url is None:
        log.info("no Redis URL (--redis or SIGSTREAM_REDIS__URL): features stay in process")
    if create_topics:
        from adapters.kafka.client import ensure_topics

        asyncio.run(ensure_topics(settings.kafka))
    settings = settings.model_copy(update={"kafka": with_real_partition_count(settings.kafka)})
    if settings.kafka.snapshots:
        from adapters.kafka.store import ensure_state_topic

        asyncio.run(ensure_state_topic(settings.kafka, settings.kafka.partitions))
    try:
        import faust
    except ModuleNotFoundError as exc:  # pragma: no cover - declared dependency
        raise FatalError("sigstream worker needs faust-streaming: pip install faust-streaming") from exc
    settings.kafka.data_dir.mkdir(parents=True, exist_ok=True)
    _use_uvloop(settings)
    faust_app = build_app(settings, load_model(model_spec, settings.model))
    # faust replaces the root log handlers with its own text ones; --log-format json keeps sigstream's JSON lines.
    keep_logs = log_format() == "json"
    worker = _bounded_stop_worker(faust.Worker, settings.kafka)(faust_app, loglevel=loglevel, quiet=True,
                                                                override_logging=not keep_logs)
    if keep_logs:
        worker.spinner = None  # its terminal escapes are not log lines; without it faust logs "Ready" instead
    worker.execute_from_commandline()
