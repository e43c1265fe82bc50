"""``sigstream worker``: the faust worker on real Kafka, with the Redis feature cache.

Flags win over the environment (``SIGSTREAM_KAFKA__BOOTSTRAP``, ``SIGSTREAM_REDIS__URL``, any
``SIGSTREAM_KAFKA__...`` / ``SIGSTREAM_REDIS__...`` / ``SIGSTREAM_ENGINE__...`` field).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import Any

import typer
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters.kafka.config import KafkaSettings
from adapters.model.config import ModelSettings
from adapters.redis.config import RedisSettings
from engine.config import EngineSettings
from engine.errors import FatalError, InvalidInput

log = logging.getLogger(__name__)

DEFAULT_MODEL = "adapters.model.source:load_sentiment_model"


class WorkerSettings(BaseSettings):
    """The worker's settings sections, read from ``SIGSTREAM_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="SIGSTREAM_", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings | None = Field(None, description="Feature cache; None keeps features in process.")
    engine: EngineSettings = Field(default_factory=EngineSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)


def _with_real_partition_count(kafka: KafkaSettings) -> KafkaSettings:
    """The worker maps a symbol to its market.raw partition: use the topic's real count, not the setting
    (which only sizes topics this project creates)."""
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
    return kafka.model_copy(update={"partitions": real})


def load_model(spec: str, model_settings: ModelSettings | None = None) -> Any:
    """``module:callable`` -> the sentiment model it returns (a class or a factory).

    The default factory gets ``model_settings`` (``SIGSTREAM_MODEL__*``); other specs are called bare.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InvalidInput(f"--model must look like module:callable, got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise InvalidInput(f"cannot load model {spec!r}: {exc}") from None
    if spec == DEFAULT_MODEL and model_settings is not None:
        return factory(model_settings)
    return factory()


def build_app(settings: WorkerSettings, model: Any) -> Any:
    """The faust app wired to the engine, the micro-batcher and (optionally) Redis."""
    from adapters.kafka.app import StreamProcessor, create_app
    from engine.batcher import MicroBatcher
    from engine.pipeline import SignalEngine

    redis_settings = settings.redis
    warm: dict[str, list[Any]] = {}
    if redis_settings is not None:
        warm = asyncio.run(_warm_up(redis_settings))

    stores: list[Any] = []

    def factory(send: Any, committed_news_offset: Any) -> StreamProcessor:
        store = None
        if redis_settings is not None:
            from adapters.redis.store import RedisFeatureStore, ResilientFeatureStore

            store = ResilientFeatureStore(RedisFeatureStore(redis_settings))
            stores.append(store)
        engine = SignalEngine(settings.engine)
        for symbol, bars in warm.items():
            engine.warm(symbol, bars)
        return StreamProcessor(
            engine,
            MicroBatcher(model, settings.engine.batcher),
            send,
            settings.kafka,
            store=store,
            committed_news_offset=committed_news_offset,
        )

    async def stopping(processor: StreamProcessor) -> None:
        for store in stores:
            await store.close()
        stats = processor.stats
        log.info(
            "worker stopping: %d market records, %d news, %d signals, %d dead letters, ordering %s",
            stats.market_records,
            stats.news_records,
            stats.signals,
            stats.dead_letters,
            processor.sequencer.stats,
        )

    return create_app(settings.kafka, factory, on_stopping=stopping)


async def _warm_up(settings: RedisSettings) -> dict[str, list[Any]]:
    from adapters.redis.store import RedisFeatureStore, ResilientFeatureStore

    store = ResilientFeatureStore(RedisFeatureStore(settings))
    try:
        bars = await store.warm_up()
    finally:
        await store.close()
    log.info("warmed %d symbols from redis", len(bars))
    return bars


def _use_uvloop() -> None:
    # faust pays several event-loop iterations per record; uvloop makes each one much cheaper.
    try:
        import uvloop  # noqa: F401 - only checks it is installed
    except ModuleNotFoundError:
        log.info("uvloop not installed; using the asyncio event loop")
        return
    import mode.loop

    mode.loop.use("uvloop")


def register(app: typer.Typer) -> None:
    @app.command()
    def worker(
        kafka: str | None = typer.Option(
            None, "--kafka", help="Kafka bootstrap host:port (SIGSTREAM_KAFKA__BOOTSTRAP)."
        ),
        redis: str | None = typer.Option(
            None, "--redis", help="Redis URL for the feature cache (SIGSTREAM_REDIS__URL)."
        ),
        model: str = typer.Option(DEFAULT_MODEL, "--model", help="Sentiment model as module:callable."),
        app_id: str | None = typer.Option(None, "--app-id", help="faust app id = consumer group."),
        guarantee: str | None = typer.Option(
            None, "--processing-guarantee", help="at_least_once or exactly_once (Kafka transactions)."
        ),
        partitions: int | None = typer.Option(None, "--partitions", help="Partitions of topics created."),
        create_topics: bool = typer.Option(True, help="Create missing topics before starting."),
        loglevel: str = typer.Option("info", "--loglevel", help="faust log level: crit|error|warn|info|debug."),
    ) -> None:
        """Run the faust worker: market.raw + news.raw -> signals.composite (and market.bars, sentiment.scores)."""
        settings = WorkerSettings()
        kafka_update: dict[str, Any] = {}
        if kafka:
            kafka_update["bootstrap"] = kafka.removeprefix("kafka://")
        if app_id:
            kafka_update["app_id"] = app_id
        if guarantee:
            if guarantee not in ("at_least_once", "exactly_once"):
                raise InvalidInput(f"--processing-guarantee must be at_least_once or exactly_once, not {guarantee!r}")
            kafka_update["processing_guarantee"] = guarantee
        if partitions:
            kafka_update["partitions"] = partitions
        settings.kafka = settings.kafka.model_copy(update=kafka_update)
        if redis:
            settings.redis = (settings.redis or RedisSettings()).model_copy(update={"url": redis})
        if create_topics:
            from adapters.kafka.client import ensure_topics

            asyncio.run(ensure_topics(settings.kafka))
        settings.kafka = _with_real_partition_count(settings.kafka)
        try:
            import faust
        except ModuleNotFoundError as exc:  # pragma: no cover - declared dependency
            raise FatalError("sigstream worker needs faust-streaming: pip install faust-streaming") from exc
        _use_uvloop()
        faust_app = build_app(settings, load_model(model, settings.model))
        faust.Worker(faust_app, loglevel=loglevel, quiet=True).execute_from_commandline()
