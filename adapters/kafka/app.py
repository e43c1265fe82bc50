"""The faust worker: a thin driver that feeds Kafka records to :class:`engine.runtime.Runtime`.

::

    market.raw[p] (key symbol) --+                                  +--> market.bars, signals.composite
                                 +-- merged in publish order --> Runtime of partition p
    news.raw[p]   (a copy each) -+   (the publisher's stamps)       +--> sentiment.scores, signals.composite
    anything malformed --------------------------------------------------> deadletter (with its reason)

Each market.raw partition p is an independent replay: the worker keeps one runtime per partition
it owns, trading the symbols that hash to p, and feeds it the records of market.raw[p] and of
news.raw[p] in the order the publisher wrote them (:mod:`adapters.kafka.ordering`). From there on
the runtime applies the same rules as in-process replay, so the worker's signals equal replay's.
A record whose turn has not come is held, unacked, until the other topic catches up; ordering
never waits on the wall clock.

:class:`StreamProcessor` holds everything between "a record arrived" and "records to produce", with
no faust in it, so it is tested and benchmarked directly; :func:`create_app` wires it into faust.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from adapters.kafka.config import KafkaSettings
from adapters.kafka.fast_delivery import fast_delivery_consumer
from adapters.kafka.ordering import MARKET_HEADER, NEWS_HEADER, key_partition, parse_market_header, parse_news_header
from adapters.kafka.parsing import decode_market, decode_news
from adapters.kafka.sink import KafkaDeadLetterSink, KafkaEventSink, KafkaSignalSink, Send
from engine.batcher import MicroBatcher
from engine.config import EngineSettings
from engine.errors import InvalidInput, TransientError
from engine.events import Bar, DeadLetter, SentimentScore, Trade
from engine.pipeline import SignalEngine
from engine.ports import DeadLetterSink, FeatureStore, Sink
from engine.runtime import Runtime, RuntimeSinks, RuntimeStats
from engine.state import engine_state, restore_engine_state

log = logging.getLogger(__name__)

Ack = Callable[[], Awaitable[object]]
StartOffset = Callable[[str, int], Awaitable[int]]
"""``await start_offset(topic, partition)``: where this consumer group starts reading ``topic[partition]``."""
_DEAD_LETTER_RAW_CHARS = 100_000


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
class _Held:
    record: RawRecord
    ack: Ack
    after: int | None  # the other topic's offset this record must wait for (its stamp); None: no wait
    since: float | None = None  # when it was found unable to be fed at once (monotonic); None: fed on arrival


class _SharedAck:
    """A news record's ack, run once every runtime it was fed to has applied it."""

    __slots__ = ("_ack", "_remaining")

    def __init__(self, ack: Ack, runtimes: int) -> None:
        self._ack = ack
        self._remaining = runtimes

    async def one_done(self) -> None:
        self._remaining -= 1
        if self._remaining == 0:
            await self._ack()


@dataclass(slots=True)
class _Partition:
    """One owned partition: its runtime, and the records of both topics waiting for their turn."""

    runtime: Runtime
    market: deque[_Held] = field(default_factory=deque)
    news: deque[_Held] = field(default_factory=deque)
    market_next: int | None = None  # every market.raw offset below this has been fed (None: not known yet)
    news_next: int | None = None
    # Acks of fed records, run once their effect is safe: applied (no news pending) and, with a state store,
    # in a snapshot the broker has acknowledged.
    unacked: list[_SharedAck] = field(default_factory=list)
    skip_market_below: int = 0  # records a restored snapshot already holds: acked, not fed again
    skip_news_below: int = 0
    dirty: bool = False  # fed since the last snapshot
    waiting_since: float | None = None
    waiting_logged: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A partition's engine state after every record below the two offsets was fed."""

    partition: int
    market_next: int
    news_next: int
    engine: bytes


class StateStore(Protocol):
    """Where snapshots of partition state live (a compacted topic). Required: ``load``, ``save``."""

    async def load(self, partition: int) -> Snapshot | None: ...

    async def save(self, snapshot: Snapshot) -> None:
        """Return once the snapshot is durable."""


@dataclass(slots=True)
class ProcessorStats:
    """What the worker did; ``runtime`` sums its partitions' runtimes."""

    market_records: int = 0
    news_records: int = 0
    dead_letters: int = 0
    held: int = 0  # records waiting for the other topic (a level)
    snapshots: int = 0
    snapshot_failures: int = 0
    snapshots_restored: int = 0
    records_in_snapshot: int = 0  # re-delivered after a restart, already in the restored state: not fed again
    runtime: RuntimeStats = field(default_factory=RuntimeStats)


class ProcessorObserver(Protocol):
    """What a worker reports beyond its counters (metrics). Required: both methods; they must not block."""

    def dead_letter(self, record: DeadLetter) -> None:
        """A dead letter was published."""

    def ordering_wait_observed(self, topic: str, seconds: float) -> None:
        """A record of ``topic`` that had to wait for the other topic was fed after ``seconds``."""


class _Unobserved:
    def dead_letter(self, record: DeadLetter) -> None:
        return None

    def ordering_wait_observed(self, topic: str, seconds: float) -> None:
        return None


WrappedSink = TypeVar("WrappedSink", bound=Sink)


class _Forwarding(Generic[WrappedSink]):
    """A sink that wraps another: its lifecycle is the wrapped sink's."""

    _sink: WrappedSink

    async def flush(self) -> None:
        await self._sink.flush()

    async def close(self) -> None:
        await self._sink.close()


class _CountingDeadLetters(_Forwarding[DeadLetterSink]):
    def __init__(self, sink: DeadLetterSink, stats: ProcessorStats) -> None:
        self._sink = sink
        self._stats = stats
        self.observer: ProcessorObserver = _Unobserved()

    @property
    def count(self) -> int:
        return self._sink.count

    async def publish(self, record: DeadLetter) -> None:
        self._stats.dead_letters += 1
        self.observer.dead_letter(record)
        await self._sink.publish(record)


class _NewsReportedElsewhere(_Forwarding[DeadLetterSink]):
    """Dead letters of a news copy that partition 0's copy reports: counted here, published there."""

    def __init__(self, sink: DeadLetterSink) -> None:
        self._sink = sink
        self.copies_not_reported = 0

    @property
    def count(self) -> int:
        return self._sink.count

    async def publish(self, record: DeadLetter) -> None:
        if record.source == "news":
            self.copies_not_reported += 1
            return
        await self._sink.publish(record)


class _ScoreReportedOnce(_Forwarding[KafkaEventSink]):
    """Publishes a score from the copy of the lowest partition among the symbols it is about."""

    def __init__(self, sink: KafkaEventSink, partition: int, partition_of: Callable[[str], int]) -> None:
        self._sink = sink
        self._partition = partition
        self._partition_of = partition_of

    async def publish(self, score: SentimentScore) -> None:
        if min(self._partition_of(s) for s in score.symbols) == self._partition:
            await self._sink.publish(score)


class StreamProcessor:
    """Feeds consumed records to one :class:`Runtime` per owned partition, in publish order."""

    def __init__(
        self,
        engine_settings: EngineSettings,
        batcher: MicroBatcher,
        send: Send,
        settings: KafkaSettings,
        *,
        store: FeatureStore | None = None,
        start_offset: StartOffset | None = None,
        state: StateStore | None = None,
        warm: Mapping[str, list[Bar]] | None = None,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        idle_log_s: float = 30.0,
    ) -> None:
        topics = settings.topics
        self.engine_settings = engine_settings
        self.batcher = batcher
        self.stats = ProcessorStats()
        self.dead_letters = _CountingDeadLetters(KafkaDeadLetterSink(send, topics.deadletter), self.stats)
        self._features = KafkaEventSink(send, topics.market_bars)
        self._signals = KafkaSignalSink(send, topics.signals)
        self._sentiment = KafkaEventSink(send, topics.sentiment)
        self._store = store
        self._news_topic = topics.news_raw
        self._market_topic = topics.market_raw
        self._partitions = settings.partitions
        self._start_offset = start_offset
        self._state = state
        self._warm = dict(warm or {})
        self._wall_ms = wall_ms
        self._idle_log_s = idle_log_s
        self._owned: dict[int, _Partition] = {}
        self._symbol_partitions: dict[str, int] = {}
        self._other_intervals: set[tuple[str, str]] = set()
        self._observer: ProcessorObserver = _Unobserved()
        # (topic, partition) -> the offset after the last record received: the consumer lag's reference point
        self.consumed: dict[tuple[str, int], int] = {}

    def observe(self, observer: ProcessorObserver) -> None:
        """Report dead letters and ordering waits to ``observer`` (the metrics) from now on."""
        self._observer = observer
        self.dead_letters.observer = observer

    # -- partitions ----------------------------------------------------------------------------
    def partition_of(self, symbol: str) -> int:
        """The partition the publisher writes ``symbol`` to (murmur2, as Kafka's default partitioner)."""
        partition = self._symbol_partitions.get(symbol)
        if partition is None:  # aiokafka's murmur2 is pure Python; it runs once per symbol
            partition = self._symbol_partitions[symbol] = key_partition(symbol.encode(), self._partitions)
        return partition

    def _owned_by(self, partition: int, symbol: str) -> bool:
        return self.partition_of(symbol) == partition

    async def _partition(self, partition: int) -> _Partition:
        owned = self._owned.get(partition)
        if owned is None:
            engine = SignalEngine(self.engine_settings, owns=functools.partial(self._owned_by, partition))
            snapshot = await self._state.load(partition) if self._state is not None else None
            if snapshot is not None:
                # Exact state as of the snapshot's offsets: records below them are already in it.
                restore_engine_state(engine, snapshot.engine)
                self.stats.snapshots_restored += 1
                log.info("partition %d: restored its state as of %s[%d]@%d and %s[%d]@%d", partition,
                         self._market_topic, partition, snapshot.market_next, self._news_topic, partition,
                         snapshot.news_next)
            else:
                for symbol, bars in self._warm.items():
                    if self.partition_of(symbol) == partition:
                        engine.warm(symbol, bars)
            # Each partition's copy of a news item is scored there. Its dead letter is reported by partition 0's
            # copy, its score by the copy of the lowest partition it is about, so a group reports each once.
            dead_letters = self.dead_letters if partition == 0 else _NewsReportedElsewhere(self.dead_letters)
            sentiment = _ScoreReportedOnce(self._sentiment, partition, self.partition_of)
            sinks = RuntimeSinks(dead_letters, features=[self._features], signals=[self._signals],
                                 sentiment=[sentiment], store=self._store)
            owned = self._owned[partition] = _Partition(Runtime(engine, self.batcher, sinks))
            if snapshot is not None:
                owned.market_next = owned.skip_market_below = snapshot.market_next
                owned.news_next = owned.skip_news_below = snapshot.news_next
        return owned

    def forget(self, partitions: set[int]) -> None:
        """Revoked partitions: their unacked records go to the next owner, which starts from the group's
        committed offsets; this worker's state for them is dropped."""
        for partition in partitions:
            self._owned.pop(partition, None)
        for key in [key for key in self.consumed if key[1] in partitions]:
            del self.consumed[key]

    def owned_partitions(self) -> set[int]:
        return set(self._owned)

    @property
    def held(self) -> int:
        """Records waiting for the other topic to reach their turn."""
        return sum(len(p.market) + len(p.news) for p in self._owned.values())

    @property
    def pending(self) -> int:
        """News fed to a runtime and not yet scored."""
        return sum(p.runtime.pending for p in self._owned.values())

    def runtime_stats(self) -> RuntimeStats:
        total = RuntimeStats()
        for owned in list(self._owned.values()):  # also read from the metrics thread
            total.add(owned.runtime.stats)
        self.stats.runtime = total
        self.stats.held = self.held
        return total

    # -- records -------------------------------------------------------------------------------
    async def on_record(self, record: RawRecord, ack: Ack, more_waiting: bool = False) -> None:
        """Any record of market.raw or news.raw; ``ack`` is awaited once it is fully processed.

        While more records are already waiting, news collects into one model batch; it is scored at
        the next bar, a full batch, or once nothing more is waiting.
        """
        owned = await self._partition(record.partition)
        self.consumed[(record.topic, record.partition)] = record.offset + 1
        is_news = record.topic == self._news_topic
        if record.offset < (owned.skip_news_below if is_news else owned.skip_market_below):
            self.stats.records_in_snapshot += 1
            await ack()
            return
        held = _Held(record, ack, None)
        if is_news:
            self.stats.news_records += 1
            held.after = await self._stamp(record, MARKET_HEADER)
            queue = owned.news
        else:
            self.stats.market_records += 1
            held.after = await self._stamp(record, NEWS_HEADER)
            queue = owned.market
        queue.append(held)
        await self._advance(record.partition, owned)
        if queue and queue[-1] is held:  # still waiting for its turn (feeding pops from the left)
            held.since = time.monotonic()
        if not more_waiting:
            await self.score_pending()

    async def _stamp(self, record: RawRecord, header: str) -> int | None:
        value = record.headers.get(header)
        if value is None:
            return None  # not from sigstream's publisher: processed in arrival order
        try:
            if header == MARKET_HEADER:
                return parse_market_header(value).get(record.partition, 0)
            return parse_news_header(value)
        except InvalidInput as exc:
            # Fed at once, for this partition's symbols. Every copy of a news item carries the same bad
            # stamp; partition 0's copy reports it.
            if header == NEWS_HEADER or record.partition == 0:
                await self._dead(exc, record, processed=True)
            return None

    async def _advance(self, partition: int, owned: _Partition) -> None:
        """Feed every held record whose turn has come, in publish order."""
        while True:
            if owned.market:
                head = owned.market[0]
                if head.after is None or head.after <= await self._news_known(partition, owned):
                    owned.market.popleft()
                    if head.since is not None:
                        self._observer.ordering_wait_observed(head.record.topic, time.monotonic() - head.since)
                    await self._feed_market(owned, head)
                    continue
            if owned.news:
                head = owned.news[0]
                if head.after is None or head.after <= await self._market_known(partition, owned):
                    owned.news.popleft()
                    if head.since is not None:
                        self._observer.ordering_wait_observed(head.record.topic, time.monotonic() - head.since)
                    await self._feed_news(partition, owned, head)
                    continue
            break
        await self._release_acks(owned)
        self._note_waiting(partition, owned)

    async def _news_known(self, partition: int, owned: _Partition) -> int:
        # Every news offset below the head of the held news has been fed (a consumer reads in order).
        if owned.news:
            return owned.news[0].record.offset
        if owned.news_next is None:
            owned.news_next = await self._first_offset(self._news_topic, partition)
        return owned.news_next

    async def _market_known(self, partition: int, owned: _Partition) -> int:
        if owned.market:
            return owned.market[0].record.offset
        if owned.market_next is None:
            owned.market_next = await self._first_offset(self._market_topic, partition)
        return owned.market_next

    async def _first_offset(self, topic: str, partition: int) -> int:
        return await self._start_offset(topic, partition) if self._start_offset is not None else 0

    async def _feed_market(self, owned: _Partition, held: _Held) -> None:
        record = held.record
        owned.market_next = record.offset + 1
        try:
            items = decode_market(record.value) or []  # a watermark carries no events
        except InvalidInput as exc:
            await self._dead(exc, record)
            items = []
        for item in items:
            if not isinstance(item, Bar | Trade):
                continue
            if isinstance(item, Bar) and item.interval != self.engine_settings.interval:
                self._note_other_interval(item)
            if self.partition_of(item.symbol) != record.partition:
                await self._dead(InvalidInput(
                    f"{item.symbol} hashes to partition {self.partition_of(item.symbol)} of {self._partitions} "
                    f"(murmur2, Kafka's default partitioner) but came on partition {record.partition}, where its "
                    "news is never applied; key market.raw by symbol with the murmur2 partitioner"), record)
                continue
            await owned.runtime.feed(item)
        owned.dirty = True
        owned.unacked.append(_SharedAck(held.ack, 1))

    def _note_other_interval(self, bar: Bar) -> None:
        # The engine counts every such bar (bars_other_interval); a person needs to hear of it once.
        key = (bar.symbol, bar.interval.value)
        if key not in self._other_intervals:
            self._other_intervals.add(key)
            log.warning("%s %s bars are not used: this worker decides on %s bars (--interval / "
                        "SIGSTREAM_ENGINE__INTERVAL); they are counted in bars_other_interval",
                        bar.symbol, bar.interval.value, self.engine_settings.interval.value)

    async def _feed_news(self, partition: int, owned: _Partition, held: _Held) -> None:
        record = held.record
        owned.news_next = record.offset + 1
        owned.dirty = True
        try:
            item = decode_news(record.value)
        except InvalidInput as exc:
            if record.partition == 0 or MARKET_HEADER not in record.headers:
                await self._dead(exc, record)  # one dead letter per item, not one per copy
            owned.unacked.append(_SharedAck(held.ack, 1))
            return
        if MARKET_HEADER in record.headers:
            targets = [owned]
        else:
            # A news record not written by sigstream's publisher has no copies: it serves every partition
            # this worker owns, at once.
            targets = list(self._owned.values())
        shared = _SharedAck(held.ack, len(targets))
        for target in targets:
            await target.runtime.feed(item)
            target.unacked.append(shared)
            target.dirty = True
        for target in targets:
            if target is not owned:
                await self._release_acks(target)

    async def _release_acks(self, owned: _Partition) -> None:
        """Without a state store, a fed record is acked once nothing it fed is pending; with one, only once a
        snapshot holds it (:meth:`snapshot`), so a crash never commits past state that is lost."""
        if owned.runtime.pending or not owned.unacked or self._state is not None:
            return
        await self._ack_all(owned)

    async def _ack_all(self, owned: _Partition) -> None:
        unacked, owned.unacked = owned.unacked, []
        for shared in unacked:
            await shared.one_done()

    async def snapshot(self) -> None:
        """Write the state of every partition fed since its last snapshot, then ack what it holds."""
        if self._state is None:
            return
        for partition, owned in list(self._owned.items()):
            if not owned.dirty:
                continue
            await owned.runtime.score_pending()  # a snapshot is taken with nothing pending
            market_next = owned.market_next if owned.market_next is not None else 0
            news_next = owned.news_next if owned.news_next is not None else 0
            try:
                await self._state.save(Snapshot(partition, market_next, news_next, engine_state(owned.runtime.engine)))
            except TransientError as exc:
                # Its records stay unacked, so nothing is committed past saved state; the next tick tries again.
                self.stats.snapshot_failures += 1
                log.warning("partition %d: %s; its offsets are not committed until a snapshot succeeds", partition, exc)
                continue
            self.stats.snapshots += 1
            owned.dirty = False
            await self._ack_all(owned)

    def _note_waiting(self, partition: int, owned: _Partition) -> None:
        if not (owned.market or owned.news):
            owned.waiting_since, owned.waiting_logged = None, False
            return
        now = time.monotonic()
        if owned.waiting_since is None:
            owned.waiting_since = now
        elif not owned.waiting_logged and now - owned.waiting_since >= self._idle_log_s:
            owned.waiting_logged = True
            waiting_for = self._news_topic if owned.market else self._market_topic
            log.warning(
                "partition %d: %d market and %d news record(s) have waited %.0f s for %s[%d] to reach their turn; "
                "records are never reordered, so the partition waits",
                partition, len(owned.market), len(owned.news), now - owned.waiting_since, waiting_for, partition,
            )

    async def score_pending(self) -> None:
        """Score every partition's pending news now (nothing more is waiting, or the timer fired)."""
        for owned in list(self._owned.values()):
            await owned.runtime.score_pending()
            await self._release_acks(owned)

    async def tick(self) -> None:
        """Periodic: score pending news (latency), snapshot, and say which partitions wait for the other topic."""
        await self.score_pending()
        await self.snapshot()
        for partition, owned in list(self._owned.items()):
            self._note_waiting(partition, owned)

    async def shutdown(self) -> None:
        """Graceful stop: apply the news already fed and snapshot it; held records stay unacked for the next
        worker, which reads them again."""
        for owned in self._owned.values():
            await owned.runtime.finish(close_open_bars=False)
            await self._release_acks(owned)
        await self.snapshot()

    async def _dead(self, exc: InvalidInput, record: RawRecord, *, processed: bool = False) -> None:
        """Dead-letter ``record``: ``source`` is ``topic[partition]`` and ``line`` its offset, so it can be found.

        ``processed`` marks a record that was still processed (only its ordering header was unusable).
        """
        text = record.value.decode("utf-8", "replace")
        reason = f"ordering header ignored, record processed: {exc.reason}" if processed else exc.reason
        if len(text) > _DEAD_LETTER_RAW_CHARS:
            # A dead letter must stay below the broker's message size; the full record stays on its topic.
            reason += f" (raw cut to {_DEAD_LETTER_RAW_CHARS} of {len(text)} chars)"
        source = f"{record.topic}[{record.partition}]"
        raw = text[:_DEAD_LETTER_RAW_CHARS]
        await self.dead_letters.publish(DeadLetter(reason, source, raw, record.offset, self._wall_ms()))


def record_from_message(message: Any) -> RawRecord:
    """A faust ``Message`` -> :class:`RawRecord`."""
    headers = message.headers or {}
    if not isinstance(headers, Mapping):
        headers = {k: v for k, v in headers}
    return RawRecord(message.topic, message.partition, message.offset, message.key, message.value, headers)


def start_offset_reader(settings: KafkaSettings) -> StartOffset:
    """``reader(topic, p)``: the worker group's committed offset of ``topic[p]``, else the log's first offset
    (a new group reads from the earliest record)."""

    async def start_offset(topic: str, partition: int) -> int:
        from aiokafka.structs import TopicPartition

        from adapters.kafka.client import make_admin, make_consumer

        tp = TopicPartition(topic, partition)
        admin = make_admin(settings)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(settings.app_id)
        finally:
            await admin.close()
        meta = offsets.get(tp)
        if meta is not None and meta.offset >= 0:
            return int(meta.offset)
        consumer = make_consumer(settings, isolation_level="read_uncommitted", enable_auto_commit=False)
        await consumer.start()
        try:
            return int((await consumer.beginning_offsets([tp]))[tp])
        finally:
            await consumer.stop()

    return start_offset


# -- faust ----------------------------------------------------------------------------------------
def broker_credentials(settings: KafkaSettings) -> Any:
    """faust's ``broker_credentials`` for the security settings (None: PLAINTEXT); faust hands them to every
    consumer and producer it builds (``credentials_to_aiokafka_auth``)."""
    import faust

    from adapters.kafka.client import security_options, ssl_context

    security_options(settings)  # InvalidInput, naming the variables, when the settings do not fit together
    context = ssl_context(settings) if settings.uses_tls() else None  # built by aiokafka's helper
    if settings.uses_sasl():
        assert settings.sasl_password is not None  # security_options checked it
        # With an ssl_context, SASLCredentials speaks SASL_SSL; without, SASL_PLAINTEXT.
        password = settings.sasl_password.get_secret_value()
        return faust.SASLCredentials(username=settings.sasl_username, password=password, ssl_context=context,
                                     mechanism=settings.sasl_mechanism)
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def create_app(
    settings: KafkaSettings,
    processor_factory: Callable[[Send, StartOffset], StreamProcessor],
    *,
    on_started: Callable[[StreamProcessor], Awaitable[None]] | None = None,
    on_stopping: Callable[[StreamProcessor], Awaitable[None]] | None = None,
) -> Any:
    """The faust App with the engine agent.

    ``processor_factory(send, start_offset)`` builds the :class:`StreamProcessor`; it gets a ``send``
    that produces through faust (inside its transaction when exactly_once is on).
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

    topics = settings.topics
    app = App(
        settings.app_id,
        broker=settings.broker_url(),
        broker_credentials=broker_credentials(settings),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        web_enabled=False,
        processing_guarantee=settings.processing_guarantee,
        producer_acks=-1,
        producer_linger_ms=settings.linger_ms,
        broker_commit_interval=settings.commit_interval_s,
        # faust's 60 s default leaves a killed worker's partitions idle for a minute; 10 s is Kafka's own default.
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        # A record held for its turn is unacked on purpose: at a rebalance or stop, faust must not wait for
        # it (it would wait forever); it is re-delivered from the committed offset to the next owner.
        stream_wait_empty=False,
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

    processor = processor_factory(send, start_offset_reader(settings))
    app.sigstream_processor = processor  # type: ignore[attr-defined]  # faust App allows attributes; kept for tests

    @app.agent(inputs, name="engine")
    async def engine_agent(stream: Any) -> None:
        manual = stream.noack()  # acked only once processed: held records are never committed early
        queue = manual.channel.queue
        async for event in manual.events():
            async with lock:
                await processor.on_record(
                    record_from_message(event.message), functools.partial(manual.ack, event), not queue.empty()
                )

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode's stubs omit async receivers it supports
    async def _revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        # A partition that comes back later must start again from the group's committed offsets, not from
        # this worker's stale state.
        partitions = {tp.partition for tp in revoked if tp.topic in (topics.market_raw, topics.news_raw)}
        async with lock:
            processor.forget(partitions)

    @app.timer(1.0)
    async def score_waiting_news() -> None:
        async with lock:
            await processor.tick()

    if on_started is not None:

        @app.task
        async def _started() -> None:
            await on_started(processor)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode's stubs omit async receivers it supports
    async def _stopping(sender: Any, **kwargs: Any) -> None:
        # Consumers are stopped here; the producer is flushed right after this returns.
        async with lock:
            await processor.shutdown()
        if on_stopping is not None:
            await on_stopping(processor)

    return app
