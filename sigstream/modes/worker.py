"""The ``sigstream worker`` room: the faust app wired to one runtime per partition, Redis, snapshots, metrics."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

from adapters.kafka.config import KafkaSettings
from adapters.prometheus.config import MetricsSettings
from adapters.redis.config import RedisSettings
from engine.errors import FatalError
from sigstream.modes.sentiment import load_model
from sigstream.settings import Settings

log = logging.getLogger(__name__)


def with_real_partition_count(kafka: KafkaSettings) -> KafkaSettings:
    """The worker maps a symbol to its market.raw partition: ``kafka`` with the topic's real count, not the
    setting's (which only sizes topics this project creates), as a new object."""
    from adapters.kafka.client import partition_counts

    counts = asyncio.run(partition_counts(kafka.bootstrap, [kafka.topics.market_raw, kafka.topics.news_raw]))
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

    def factory(send: Any, start_offset: Any) -> StreamProcessor:
        batcher = MicroBatcher(model, settings.engine.batcher)
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
        _serve_worker_metrics(settings.metrics, processor, batcher)
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

    return create_app(settings.kafka, factory, on_stopping=stopping)


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


def _serve_worker_metrics(settings: MetricsSettings, processor: Any, batcher: Any) -> None:
    """``/metrics`` on ``settings.port`` (when set): the worker's, its runtimes', the engines' and the batcher's
    counters, read at scrape time."""
    from adapters.prometheus.server import serve_metrics

    serve_metrics(settings, {
        "worker": lambda: processor.stats,
        "runtime": processor.runtime_stats,
        "engine": lambda: processor.runtime_stats().engine,
        "batcher": lambda: batcher.stats,
    })
    if settings.port:
        log.info("metrics on http://%s:%d/metrics", settings.host, settings.port)


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


def _use_uvloop() -> None:
    # faust pays several event-loop iterations per record; uvloop makes each one much cheaper.
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
    _use_uvloop()
    faust_app = build_app(settings, load_model(model_spec, settings.model))
    _bounded_stop_worker(faust.Worker, settings.kafka)(faust_app, loglevel=loglevel, quiet=True)\
        .execute_from_commandline()
