"""The faust topology: thin agents that decode, call the engine, and encode.

::

    market.raw (key symbol)  --+                 +-> SignalEngine.on_bar/on_trade ---> market.bars, signals.composite
                               +--engine agent---+
    news.raw   (key news id) --+                 +-> accept_news -> MicroBatcher.score (model off the loop)
                                                     -> sentiment/on_sentiment ---> sentiment.scores, signals.composite
    anything malformed ---------------------------------------------------------> deadletter (with its reason)

One agent reads both topics so that it can keep recording order (see :mod:`adapters.kafka.ordering`)
without ever blocking: a market record that must wait for news is parked, not awaited, and acked
only once processed, so a crash re-delivers it instead of losing it.

:class:`StreamProcessor` holds everything between "a record arrived" and "records to produce", with
no faust in it, so it is tested and benchmarked directly; :func:`create_app` wires it into faust.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters.kafka.config import KafkaSettings
from adapters.kafka.fast_delivery import fast_delivery_consumer
from adapters.kafka.ordering import (
    MARKET_HEADER,
    NEWS_HEADER,
    Sequencer,
    key_partition,
    parse_market_header,
    parse_news_header,
)
from adapters.kafka.parsing import decode_market, decode_news
from adapters.kafka.sink import KafkaDeadLetterSink, KafkaSignalSink, Send
from engine.batcher import MicroBatcher
from engine.errors import InvalidInput
from engine.events import Bar, CompositeSignal, DeadLetter, Features, NewsItem, SentimentScore, Trade
from engine.pipeline import SignalEngine
from engine.ports import FeatureStore

log = logging.getLogger(__name__)


Ack = Callable[[], Awaitable[object]]
_DEAD_LETTER_RAW_CHARS = 100_000
_NEWS_MEMORY = 100_000  # news ids remembered per worker, like the engine's de-duplication window


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One consumed Kafka record, independent of the client library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class ProcessorStats:
    market_records: int = 0
    news_records: int = 0
    news_batches: int = 0
    signals: int = 0
    dead_letters: int = 0


class StreamProcessor:
    """Feeds consumed records to a :class:`SignalEngine` in recording order and publishes the results."""

    def __init__(
        self,
        engine: SignalEngine,
        batcher: MicroBatcher,
        send: Send,
        settings: KafkaSettings,
        *,
        store: FeatureStore | None = None,
        committed_news_offset: Callable[[int], Awaitable[int]] | None = None,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        topics = settings.topics
        self.engine = engine
        self.batcher = batcher
        self.store = store
        self.signals = KafkaSignalSink(send, topics.signals)
        self.features = KafkaSignalSink(send, topics.market_bars)
        self.sentiment = KafkaSignalSink(send, topics.sentiment)
        self.dead_letters = KafkaDeadLetterSink(send, topics.deadletter)
        self.sequencer = Sequencer(self._apply_sentiment, committed_news_offset=committed_news_offset)
        self.stats = ProcessorStats()
        self._news_topic = topics.news_raw
        self._max_batch = settings.news_max_batch
        self._wait_timeout_s = settings.order_wait_timeout_s
        self._news_batch: list[tuple[RawRecord, Ack]] = []
        self._parked: dict[int, deque[tuple[RawRecord, Ack, int | None, float]]] = {}
        self._partitions = settings.partitions
        self._wall_ms = wall_ms
        # Per news id, its score on this worker (None: not scored); per (id, partition), the copy applied.
        self._news_scores: OrderedDict[str, SentimentScore | None] = OrderedDict()
        self._news_applied: OrderedDict[tuple[str, int], None] = OrderedDict()

    # -- both topics, in one agent ------------------------------------------------------------
    async def on_record(self, record: RawRecord, ack: Ack, more_waiting: bool = False) -> None:
        """Any record of market.raw or news.raw; ``ack`` is awaited once it is fully processed.

        News is collected into a micro-batch while more records are already waiting (up to
        ``news_max_batch``) and scored before any later market record is looked at.
        """
        if record.topic == self._news_topic:
            self._news_batch.append((record, ack))
            if len(self._news_batch) >= self._max_batch or not more_waiting:
                await self._flush_news()
            return
        await self._flush_news()
        news_before = None
        if NEWS_HEADER in record.headers:
            try:
                news_before = parse_news_header(record.headers[NEWS_HEADER])
            except InvalidInput as exc:
                await self._dead(exc, record, processed=True)
        parked = self._parked.setdefault(record.partition, deque())
        if not parked and (news_before is None or await self._news_ready(news_before, record.partition)):
            await self.on_market(record)
            await ack()
            return
        self.sequencer.stats.waited += 1
        parked.append((record, ack, news_before, time.monotonic()))

    async def _news_ready(self, news_before: int, partition: int) -> bool:
        if self.sequencer.news_done(partition) is None:
            await self.sequencer.news_start(partition)
        return self.sequencer.news_ready(news_before, partition)

    async def _flush_news(self) -> None:
        if not self._news_batch:
            return
        batch, self._news_batch = self._news_batch, []
        await self.on_news_batch([record for record, _ in batch])
        for record, ack in batch:
            if not self.sequencer.defer_ack(record.partition, record.offset, ack):
                await ack()
        await self._unpark()

    async def _unpark(self, expire_before: float | None = None) -> None:
        for partition, parked in self._parked.items():
            while parked:
                record, ack, news_before, since = parked[0]
                if not self.sequencer.news_ready(news_before, partition):
                    if expire_before is None or since >= expire_before:
                        break
                    self.sequencer.stats.expired += 1
                    log.warning(
                        "market record %s[%d]@%d waited %.1fs for news.raw offset %s (handled up to %s); "
                        "processing it anyway",
                        record.topic,
                        record.partition,
                        record.offset,
                        time.monotonic() - since,
                        news_before,
                        self.sequencer.news_done(partition),
                    )
                parked.popleft()
                await self.on_market(record)
                await ack()

    async def tick(self) -> None:
        """Periodic: records parked longer than ``order_wait_timeout_s`` are processed anyway."""
        await self._flush_news()
        await self._unpark(expire_before=time.monotonic() - self._wait_timeout_s)

    @property
    def parked(self) -> int:
        return sum(len(p) for p in self._parked.values())

    # -- market.raw ----------------------------------------------------------------------------
    async def on_market(self, record: RawRecord) -> None:
        """Process one market.raw record now (its news, if stamped, must already be handled)."""
        self.stats.market_records += 1
        await self.sequencer.before_market(record.partition, record.offset)
        try:
            items = decode_market(record.value)
        except InvalidInput as exc:
            await self._dead(exc, record)
            items = []
        for item in items or ():
            if isinstance(item, Bar | Trade):
                try:
                    await self._market_event(item)
                except InvalidInput as exc:
                    await self._dead(exc, record)
        await self.sequencer.after_market(record.partition, record.offset)

    async def _market_event(self, item: Bar | Trade) -> None:
        engine = self.engine
        if not engine.wants(item.symbol):
            return
        if isinstance(item, Bar):
            out = engine.on_bar(item)
            if out is None:
                return
            if self.store is not None:
                await self.store.save(item, out[0])
            await self._emit(*out)
        else:
            for features, signal in engine.on_trade(item):
                await self._emit(features, signal)

    async def _emit(self, features: Features, signal: CompositeSignal) -> None:
        await self.features.publish(features)
        await self._signal(signal)

    async def _signal(self, signal: CompositeSignal) -> None:
        self.stats.signals += 1
        await self.signals.publish(signal)

    # -- news.raw ------------------------------------------------------------------------------
    async def on_news_batch(self, records: Sequence[RawRecord]) -> None:
        """A batch taken from news.raw: per partition in offset order, one copy of each item per partition.

        An item is scored once per worker, whichever of its copies comes first; each stamped copy then
        serves the symbols of its own partition (:mod:`adapters.kafka.ordering`). The copy on partition 0
        (or an unstamped record) is the one that publishes the sentiment score or the dead letter, so a
        group of workers reports each item once.
        """
        if not records:
            return
        self.stats.news_records += len(records)
        self.stats.news_batches += 1
        to_score: list[NewsItem] = []
        usable: list[tuple[RawRecord, str, bool]] = []
        for record in records:
            news_id = await self._take_news_copy(record, to_score)
            if news_id is not None:
                usable.append((record, news_id, record.partition == 0 or MARKET_HEADER not in record.headers))
        if to_score:
            # The model runs in a worker thread (MicroBatcher); the event loop keeps consuming.
            probs = await self.batcher.score([item.text for item in to_score])
            for item, p in zip(to_score, probs, strict=True):
                self._news_scores[item.id] = self.engine.sentiment(item, p, item.ts_init)
        for record, news_id, primary in usable:
            score = self._news_scores.get(news_id)
            if score is None:
                continue  # about no traded symbol, or a duplicate the engine dropped
            if primary:
                await self.sentiment.publish(score)
            market = None
            if MARKET_HEADER in record.headers:
                try:
                    market = parse_market_header(record.headers[MARKET_HEADER])
                except InvalidInput as exc:
                    # Still a copy for this partition's symbols only (applied at once: its position is unknown).
                    market = {}
                    if primary:
                        await self._dead(exc, record, processed=True)
            await self.sequencer.add_score(
                score, record.offset if market is not None else None, market, self._partition_of, record.partition
            )
        last: dict[int, int] = {}
        for record in records:
            last[record.partition] = max(last.get(record.partition, -1), record.offset)
        for partition, offset in last.items():
            await self.sequencer.news_handled(partition, offset + 1)

    async def _take_news_copy(self, record: RawRecord, to_score: list[NewsItem]) -> str | None:
        """Decode one news record; queue its item for scoring if this worker has not yet. Returns its id,
        or None when the record is bad (dead-lettered by its primary copy) or a resent copy."""
        stamped = MARKET_HEADER in record.headers
        try:
            decoded = decode_news(record.value)
            seen = (decoded.id, record.partition if stamped else -1)
            if seen in self._news_applied:
                self.engine.stats.news_duplicate += 1  # a resent copy: never applied twice
                return None
            if decoded.id not in self._news_scores:
                self.batcher.validate(decoded.text)  # before accept_news marks the id as seen
                item = self.engine.accept_news(decoded)
                self._remember_score(decoded.id, None)
                if item is not None:
                    to_score.append(item)
        except InvalidInput as exc:
            if record.partition == 0 or not stamped:
                await self._dead(exc, record)
            return None
        self._remember_applied(seen)
        return decoded.id

    def _remember_score(self, news_id: str, score: SentimentScore | None) -> None:
        self._news_scores[news_id] = score
        if len(self._news_scores) > _NEWS_MEMORY:
            self._news_scores.popitem(last=False)

    def _remember_applied(self, key: tuple[str, int]) -> None:
        self._news_applied[key] = None
        if len(self._news_applied) > _NEWS_MEMORY:
            self._news_applied.popitem(last=False)

    async def _apply_sentiment(self, score: SentimentScore) -> None:
        for signal in self.engine.on_sentiment(score):
            await self._signal(signal)

    def _partition_of(self, symbol: str) -> int:
        # The publisher puts a symbol's records on exactly this partition (RecordingPublisher), and only
        # stamped news (from that publisher) asks: computing it keeps every copy's choice the same.
        return key_partition(symbol.encode(), self._partitions)

    # -- shared --------------------------------------------------------------------------------
    async def _dead(self, exc: InvalidInput, record: RawRecord, *, processed: bool = False) -> None:
        """Dead-letter ``record``: ``source`` is ``topic[partition]`` and ``line`` its offset, so it can be found.

        ``processed`` marks a record that was still processed (only its ordering header was unusable).
        """
        self.stats.dead_letters += 1
        text = record.value.decode("utf-8", "replace")
        reason = f"ordering header ignored, record processed: {exc.reason}" if processed else exc.reason
        if len(text) > _DEAD_LETTER_RAW_CHARS:
            # A dead letter must stay below the broker's message size; the full record stays on its topic.
            reason += f" (raw cut to {_DEAD_LETTER_RAW_CHARS} of {len(text)} chars)"
        source = f"{record.topic}[{record.partition}]"
        raw = text[:_DEAD_LETTER_RAW_CHARS]
        await self.dead_letters.publish(DeadLetter(reason, source, raw, record.offset, self._wall_ms()))

    async def warm_up(self, bars_by_symbol: Mapping[str, list[Bar]]) -> None:
        """Restore feature state from the feature store (a cold worker)."""
        for symbol, bars in bars_by_symbol.items():
            self.engine.warm(symbol, bars)

    async def drain(self) -> None:
        """Score the pending news batch and process every parked record (their news will not come now)."""
        await self._flush_news()
        await self._unpark(expire_before=float("inf"))

    async def shutdown(self) -> None:
        """Graceful stop: drain, then apply held news signals."""
        await self.drain()
        await self.sequencer.release_all()


def record_from_message(message: Any) -> RawRecord:
    """A faust ``Message`` -> :class:`RawRecord`."""
    headers = message.headers or {}
    if not isinstance(headers, Mapping):
        headers = {k: v for k, v in headers}
    return RawRecord(message.topic, message.partition, message.offset, message.key, message.value, headers)


def committed_offset_reader(settings: KafkaSettings) -> Callable[[int], Awaitable[int]]:
    """``reader(p)``: the worker group's committed offset of news.raw[p] (0 when none)."""

    async def committed_news_offset(partition: int) -> int:
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.structs import TopicPartition

        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(settings.app_id)
        finally:
            await admin.close()
        meta = offsets.get(TopicPartition(settings.topics.news_raw, partition))
        return meta.offset if meta is not None and meta.offset >= 0 else 0

    return committed_news_offset


# -- faust ----------------------------------------------------------------------------------------
def create_app(
    settings: KafkaSettings,
    processor_factory: Callable[[Send, Callable[[int], Awaitable[int]]], StreamProcessor],
    *,
    on_started: Callable[[StreamProcessor], Awaitable[None]] | None = None,
    on_stopping: Callable[[StreamProcessor], Awaitable[None]] | None = None,
) -> Any:
    """The faust App with the market and news agents.

    ``processor_factory(send, committed_news_offset)`` builds the :class:`StreamProcessor`; it gets
    a ``send`` that produces through faust (inside its transaction when exactly_once is on).
    """
    import faust
    from faust.transport.drivers import aiokafka as faust_aiokafka

    class IdempotentProducer(faust_aiokafka.Producer):  # type: ignore[misc]  # faust is untyped
        def _settings_extra(self) -> Mapping[str, Any]:
            extra = dict(super()._settings_extra())
            if settings.idempotent_producer:
                extra.update({"acks": "all", "enable_idempotence": True})
            return extra

    class Transport(faust_aiokafka.Transport):  # type: ignore[misc]
        Consumer = fast_delivery_consumer(faust_aiokafka.Consumer)
        Producer = IdempotentProducer

    class App(faust.App):  # type: ignore[misc]
        def _new_transport(self) -> Any:
            return Transport(self.conf.broker_consumer, self)

        def _new_producer_transport(self) -> Any:
            return Transport(self.conf.broker_producer, self)

        async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
            # Before a rebalance or a stop, faust suspends the flow and waits for every delivered record
            # to be acked. A parked record waits for news that the suspended flow cannot deliver, so
            # process it now: it is acked and committed before its partition moves or the worker stops.
            # Held news signals are applied too: their news records stay unacked until then.
            async with lock:
                await processor.drain()
                await processor.sequencer.release_all()
            await super()._consumer_wait_empty(consumer, logger)

    topics = settings.topics
    app = App(
        settings.app_id,
        broker=settings.broker_url(),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        web_enabled=False,
        processing_guarantee=settings.processing_guarantee,
        producer_acks=-1,
        producer_linger_ms=settings.linger_ms,
        broker_commit_interval=settings.commit_interval_s,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        # A deep buffer and big fetches: faust pauses a partition whenever its buffer fills, and
        # each resume costs a fetch round trip, which capped a backlog at ~5k records/s.
        stream_buffer_maxsize=settings.stream_buffer,
        consumer_max_fetch_size=16 * 1024 * 1024,
        datadir=settings.data_dir,
    )
    inputs = app.topic(topics.market_raw, topics.news_raw, value_type=bytes, key_type=bytes)
    out_topics = {name: app.topic(name, value_type=bytes, key_type=bytes) for name in topics.all()}
    lock = asyncio.Lock()  # the agent and the timer both drive the processor

    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        await out_topics[topic].send(key=key, value=value)

    committed_news_offset = committed_offset_reader(settings)

    processor = processor_factory(send, committed_news_offset)
    app.sigstream_processor = processor  # type: ignore[attr-defined]  # faust App allows attributes; kept for tests

    @app.agent(inputs, name="engine")
    async def engine_agent(stream: Any) -> None:
        manual = stream.noack()  # acked only once processed: parked records are never committed early
        queue = manual.channel.queue
        async for event in manual.events():
            async with lock:
                await processor.on_record(
                    record_from_message(event.message), functools.partial(manual.ack, event), not queue.empty()
                )

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode's stubs omit async receivers it supports
    async def _revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        # Runs after the drain in _consumer_wait_empty. A partition that comes back later must start again
        # from the group's committed offsets, not from this worker's stale positions.
        partitions = {tp.partition for tp in revoked if tp.topic in (topics.market_raw, topics.news_raw)}
        async with lock:
            processor.sequencer.forget(partitions)

    @app.timer(1.0)
    async def expire_parked() -> None:
        async with lock:
            await processor.tick()

    if on_started is not None:

        @app.task
        async def _started() -> None:
            await on_started(processor)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode's stubs omit async receivers it supports
    async def _stopping(sender: Any, **kwargs: Any) -> None:
        # Consumers are stopped and drained here; the producer is flushed right after this returns.
        await processor.shutdown()
        if on_stopping is not None:
            await on_stopping(processor)

    return app
