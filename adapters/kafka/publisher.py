"""Publishes a recording onto market.raw and news.raw at N x real time (or as fast as possible).

Records are stamped with the ordering headers of :mod:`adapters.kafka.ordering`, so a worker
consuming them decides exactly what in-process replay of the same recording decides. Each market
record goes to its symbol's partition (murmur2 of the key, as Kafka's default partitioner), and each
news item to every news.raw partition, so that every worker of a group receives it.

Broker faults and ``--resume``
------------------------------
Every record also carries ``sigstream.seq``: the 0-based index of its item in the input stream (all
copies of a news item share it; the closing watermarks carry the number of items). The input is
deterministic (``merge_in_time_order``), so the same inputs give the same seqs.

Kafka keeps each partition in the order records were appended, and the publisher appends each
partition's records in input order, one idempotent producer (acks=all) at a time. So what a partition
holds is always a *prefix* of what was meant for it: item i meant for partition p is on p iff
i <= the last seq on p. Both recovery paths rest on that:

* **An outage.** The idempotent producer retries a batch itself, without duplicates (sequence
  numbers). When that is not enough (a send future fails, a send cannot be queued, or nothing is
  acknowledged for ``ack_timeout_s``), the publisher drops the producer without letting it send
  anything more, reads the last seq of every partition it was writing once the broker answers again,
  and re-sends, with a new producer, exactly the records of its unacknowledged window that are not
  there, in order. It retries with backoff and jitter (:func:`engine.retry.retry_transient`) and gives
  up with :class:`FatalError` once the broker has not acknowledged anything for ``max_outage_s``.
* **A crash** (``replay --resume``). The same reading, over the whole partition, tells which items a
  killed publisher had already written; they are skipped, the rest is published.

The ordering headers stay exact through both: they are computed when a record is (re)sent, from
offsets the broker acknowledged or holds, and the unacknowledged window never mixes news copies with
market records (news waits for every market record before it to be acknowledged, and later market
records wait for the news copies), so the values are the ones an uninterrupted publish writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from adapters.kafka.client import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    KafkaError,
    TopicPartition,
    abandon_producer,
    explain,
    make_consumer,
    start_producer,
    translate,
)
from adapters.kafka.config import KafkaSettings
from adapters.kafka.ordering import MARKET_HEADER, NEWS_HEADER, key_partition, market_header
from adapters.kafka.parsing import encode_watermark
from engine.errors import FatalError, InvalidInput, TransientError
from engine.events import Bar, BookTop, DeadLetter, NewsItem, Ticker, Trade
from engine.retry import Backoff, retry_transient
from engine.serialization import encode_event

log = logging.getLogger(__name__)

T = TypeVar("T")

SEQ_HEADER = "sigstream.seq"
DEFAULT_MAX_OUTAGE_S = 300.0
DEFAULT_ACK_TIMEOUT_S = 10.0
_WINDOW = 10_000  # market records sent before waiting for their acknowledgements...
_WINDOW_S = 1.0  # ...or seconds: an outage is noticed within about a second even at a slow --speed
_PROBE_S = 1.0  # unacknowledged records that long: is the broker's port still open?


PublishItem = Trade | Bar | Ticker | BookTop | NewsItem | DeadLetter


@dataclass(slots=True)
class PublishReport:
    """What a publish did. ``items`` = market + news + dead_letters + already_published."""

    items: int = 0  # items read from the input
    market: int = 0  # market records written (bars, trades, tickers, book tops, raw frames)
    news: int = 0  # news items written (at least one copy by this run)
    news_copies: int = 0  # news records written: one per news.raw partition
    dead_letters: int = 0
    watermarks: int = 0
    already_published: int = 0  # items --resume found on the topics and did not write again
    already_published_records: int = 0  # their records (and the copies of partly published news)
    outages: int = 0  # times the publisher recovered from a broker fault
    retries: int = 0  # attempts made while recovering
    outage_s: float = 0.0  # seconds spent without acknowledgement, summed over the outages
    seconds: float = 0.0

    def line(self) -> str:
        text = (f"{self.items:,} items read: {self.market:,} market records, {self.news:,} news "
                f"({self.news_copies:,} copies), {self.dead_letters:,} dead letters")
        if self.already_published or self.already_published_records:
            text += (f", {self.already_published:,} already published (--resume; "
                     f"{self.already_published_records:,} records skipped)")
        text += f"; {self.watermarks} watermarks; {self.outages} outage(s), {self.retries} retries"
        if self.outages:
            text += f", {self.outage_s:.1f} s without the broker"
        return text + f"; {self.seconds:.1f} s"


@dataclass(slots=True, eq=False)
class _Record:
    """One record to write; its ordering headers are computed when it is (re)sent."""

    seq: int
    kind: Literal["market", "news", "dead", "watermark"]
    tp: TopicPartition
    key: bytes
    value: bytes
    future: asyncio.Future[Any] | None = field(default=None)


class RecordingPublisher:
    """Produces recorded items in order; ``speed`` is a real-time multiple, ``None`` = as fast as possible.

    ``producer``: a started producer the caller owns, or None to let the publisher make its own
    (idempotent, acks=all). After a broker fault the publisher always continues on a producer of its own.
    ``max_outage_s``: give up (:class:`FatalError`) when the broker has acknowledged nothing for that long.
    ``resume``: skip the items already on the topics (see the module docstring).
    ``ack_timeout_s``: records unacknowledged that long mean the broker is gone (at most ``max_outage_s``).
    """

    def __init__(
        self,
        producer: AIOKafkaProducer | None,
        settings: KafkaSettings,
        *,
        max_outage_s: float = DEFAULT_MAX_OUTAGE_S,
        resume: bool = False,
        ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
        backoff: Backoff | None = None,
    ) -> None:
        if not max_outage_s > 0:
            raise InvalidInput(f"max_outage_s must be positive, not {max_outage_s!r}")
        self._producer = producer
        self._owned = producer is None  # whether self._producer is the publisher's to stop
        self._settings = settings
        self._max_outage_s = float(max_outage_s)
        self._ack_timeout_s = min(float(ack_timeout_s), self._max_outage_s)
        self._resume = resume
        self._backoff = backoff or Backoff(initial_s=0.2, maximum_s=5.0)
        self._market_next: dict[int, int] = {}
        self._news_next: dict[int, int] = {}
        self._dead_partitions = 0
        self._scan_from: dict[TopicPartition, int] = {}  # lowest offset whose seq counts when reading back
        self._done: dict[TopicPartition, int] = {}  # --resume: the last seq already on each partition
        self._window: list[_Record] = []  # records sent and not yet known to be acknowledged, in send order
        # The acknowledged offsets may be short of the broker's end offsets: a recovery happened, or an ack
        # came without a usable offset (DuplicateSequenceNumber); news is then stamped from the broker's word.
        self._offsets_unsure = False
        self._window_since = 0.0
        self._last_ack = 0.0
        self._outage_since: float | None = None
        self.report = PublishReport()

    # -- the publish loop -------------------------------------------------------------------------

    async def publish(
        self, items: Iterable[PublishItem] | AsyncIterable[PublishItem], speed: float | None = None
    ) -> PublishReport:
        started = time.perf_counter()
        clean = False
        quiet = _QuietRepeats()
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).addFilter(quiet)
        try:
            await self.through_outage(self._prepare)
            first: tuple[int, float] | None = None  # the first published item's ts_init and wall time
            seq = 0
            async for item in _aiter(items):
                self.report.items += 1
                records = self._plan(seq, item)
                if records:
                    if speed is not None:
                        # Paced from the first item published, so that --resume skips what is there at once.
                        first = first or (item.ts_init, time.perf_counter())
                        delay = (item.ts_init - first[0]) / 1000.0 / speed - (time.perf_counter() - first[1])
                        if delay > 0:
                            await asyncio.sleep(delay)
                    await self._publish_one(item, records)
                seq += 1
            await self._finish(seq)
            clean = True
        finally:
            self.report.seconds = time.perf_counter() - started
            await self._close(clean)
            for name in _NOISY_LOGGERS:
                logging.getLogger(name).removeFilter(quiet)
        return self.report

    def _plan(self, seq: int, item: PublishItem) -> list[_Record]:
        """The records of item ``seq`` still to write (none when all are already there)."""
        records = self._records_for(seq, item)
        fresh = [r for r in records if r.seq > self._done.get(r.tp, -1)]
        self.report.already_published_records += len(records) - len(fresh)
        if not fresh:
            self.report.already_published += 1
        return fresh

    async def _publish_one(self, item: PublishItem, records: list[_Record]) -> None:
        if isinstance(item, NewsItem):
            self.report.news += 1
            self.report.news_copies += len(records)
            # The market offsets stamped on news must be acknowledged ones, and the news offsets stamped on
            # later market records too: the window never holds news copies and market records together.
            await self._settle()
            await self._make_offsets_sure()
            for record in records:
                await self._put(record)
            await self._settle()
            await self._make_offsets_sure()  # the market records after it stamp the news offsets
            return
        if isinstance(item, DeadLetter):
            self.report.dead_letters += 1
        else:
            self.report.market += 1
        for record in records:
            await self._put(record)
        if len(self._window) >= _WINDOW or time.monotonic() - self._window_since >= _WINDOW_S:
            await self._settle()

    def _records_for(self, seq: int, item: PublishItem) -> list[_Record]:
        topics = self._settings.topics
        if isinstance(item, NewsItem):
            value, key = encode_event(item), item.id.encode()
            return [_Record(seq, "news", TopicPartition(topics.news_raw, p), key, value)
                    for p in sorted(self._news_next)]
        if isinstance(item, DeadLetter):
            key = item.source.encode()
            partition = key_partition(key, self._dead_partitions)  # where the default partitioner puts it
            return [_Record(seq, "dead", TopicPartition(topics.deadletter, partition), key, encode_event(item))]
        key = item.symbol.encode()
        value = encode_event(item)
        partition = key_partition(key, len(self._market_next))
        return [_Record(seq, "market", TopicPartition(topics.market_raw, partition), key, value)]

    async def _finish(self, items: int) -> None:
        """Watermark every market partition so the worker releases the last news signals."""
        await self._settle()
        ts = time.time_ns() // 1_000_000
        for partition in sorted(self._market_next):
            record = _Record(items, "watermark", TopicPartition(self._settings.topics.market_raw, partition), b"",
                             encode_watermark(ts))
            if record.seq > self._done.get(record.tp, -1):
                self.report.watermarks += 1
                await self._put(record)
        await self._settle()

    # -- sending and acknowledgements -------------------------------------------------------------

    async def _put(self, record: _Record) -> None:
        """Send ``record`` after everything before it; a failure is recovered before returning."""
        if not self._window:
            self._window_since = time.monotonic()
        self._window.append(record)  # first, so that a failed send is re-sent by the recovery
        try:
            await self._transmit(record)
        except TransientError as exc:
            await self._recover(exc)

    async def _settle(self) -> None:
        """Wait until every record sent so far is acknowledged (recovering from a fault on the way)."""
        if not self._window:
            return
        try:
            await self._await_window()
        except TransientError as exc:
            await self._recover(exc)

    async def _transmit(self, record: _Record) -> None:
        partition = record.tp.partition
        seq = (SEQ_HEADER, str(record.seq).encode())
        headers: list[tuple[str, bytes]]
        if record.kind == "news":
            headers = [(MARKET_HEADER, market_header({partition: self._market_next[partition]})), seq]
        elif record.kind == "dead":
            headers = [seq]
        else:
            headers = [(NEWS_HEADER, str(self._news_next[partition]).encode()), seq]
        assert self._producer is not None
        try:
            future = await self._producer.send(
                record.tp.topic, record.value, key=record.key, partition=partition, headers=headers
            )
        except KafkaError as exc:
            raise translate(exc, f"kafka at {self._settings.bootstrap}") from exc
        record.future = future
        future.add_done_callback(self._acked)

    def _acked(self, future: asyncio.Future[Any]) -> None:
        # Only the time: offsets are taken in _await_window, in send order. A done callback runs one loop step
        # after its future is done, so a window that is all done may still have callbacks to run: offsets read
        # from callbacks were once one short when news was stamped right after its market records' acks.
        if not future.cancelled() and future.exception() is None:
            self._last_ack = time.monotonic()

    def _take_offsets(self, futures: Sequence[asyncio.Future[Any]]) -> None:
        """Follow the offsets of acknowledged records, in send order (each partition's in offset order)."""
        topics = self._settings.topics
        next_offsets = {topics.market_raw: self._market_next, topics.news_raw: self._news_next}
        for future in futures:
            meta = future.result()
            following = next_offsets.get(meta.topic)
            if following is None:
                continue
            if meta.offset + 1 > following.get(meta.partition, 0):
                following[meta.partition] = meta.offset + 1
            else:
                # A partition's acks only move forward; one that does not is a duplicate's (aiokafka reports
                # DuplicateSequenceNumber as a success with base offset -1): the broker is asked before news.
                self._offsets_unsure = True

    async def _await_window(self) -> None:
        """Acknowledgements for the whole window, or TransientError when nothing comes for ack_timeout_s."""
        futures = [r.future for r in self._window]
        assert all(f is not None for f in futures), "a record of the window was never sent"
        pending = {f for f in futures if f is not None and not f.done()}
        progress = max(self._last_ack, self._window_since)
        while pending:
            done, pending = await asyncio.wait(pending, timeout=min(_PROBE_S, self._ack_timeout_s))
            now = time.monotonic()
            if done or not pending:
                progress = now
                continue
            # aiokafka's producer spins on metadata requests while its broker is away (thousands of log lines a
            # second), so a broker whose port is closed is treated as gone at once rather than after ack_timeout_s.
            if now - progress >= self._ack_timeout_s or not await _reachable(self._settings.bootstrap):
                raise TransientError(f"kafka at {self._settings.bootstrap}: {len(pending):,} records not "
                                     f"acknowledged in {now - progress:.1f} s")
        acked: list[asyncio.Future[Any]] = []
        for future in futures:
            assert future is not None
            exc = future.exception()
            if isinstance(exc, KafkaError):
                raise translate(exc, f"kafka at {self._settings.bootstrap}") from exc
            if exc is not None:
                raise exc
            acked.append(future)
        self._take_offsets(acked)
        self._window.clear()

    # -- faults -----------------------------------------------------------------------------------

    async def through_outage(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation``, retrying TransientError with backoff and jitter until ``max_outage_s`` is spent."""
        since = self._outage_since if self._outage_since is not None else time.monotonic()
        deadline = since + self._max_outage_s

        async def attempt() -> T:
            try:
                return await operation()
            except TransientError as exc:
                if time.monotonic() >= deadline:
                    raise self._give_up(exc, time.monotonic() - since) from exc
                raise

        def on_retry(number: int, exc: TransientError, delay: float) -> None:
            self.report.retries += 1
            log.warning("%s; retry %d in %.1f s", exc, number + 1, delay)

        async def sleep(delay: float) -> None:
            await asyncio.sleep(max(0.0, min(delay, deadline - time.monotonic())))

        return await retry_transient(attempt, attempts=None, backoff=self._backoff, on_retry=on_retry, sleep=sleep)

    def _give_up(self, exc: TransientError, waited: float) -> FatalError:
        waiting = len(self._window)
        reason = " ".join(str(exc).split()).removeprefix(f"kafka at {self._settings.bootstrap}: ")
        return FatalError(
            f"kafka at {self._settings.bootstrap} unreachable for {waited:.0f} s (max outage "
            f"{self._max_outage_s:.0f} s): {reason}; {waiting:,} records unacknowledged, "
            f"{self.report.items:,} items read (replay --resume continues where the broker stopped)"
        )

    async def _recover(self, cause: TransientError) -> None:
        """Drop the producer, then re-send what the broker does not hold, in order; retried through the outage.

        Why this neither loses nor duplicates a record. The window holds every record sent since the last
        time all were acknowledged, in send order. Per partition, the broker holds a prefix of what was
        sent to it: the producer sends one request per broker at a time and puts a failed batch back in
        front of the later ones, and its sequence numbers make the broker refuse a batch that would follow
        a gap (OutOfOrderSequenceNumber) and drop one it already has. But after a fault the producer is not
        to be trusted: a batch that expired (no leader for request_timeout_ms, as while the broker stops)
        was failed, maybe after it was written, and every later batch on its partition then fails too. So:

        1. the producer is abandoned: its sender task is stopped (after the requests already in flight have
           landed or not) and its connections closed, so nothing of it can land after step 2 (a retry
           landing later would be a duplicate); its undelivered records' futures are dropped;
        2. the last ``sigstream.seq`` on each partition of the window, and every partition's end offset,
           are read from the broker: records of the window with seq <= that are there, the others are not;
        3. a new producer re-sends the others in their original order, with headers computed from the end
           offsets read in step 2 (the window holds market records or news copies, never both, so these are
           the acknowledged offsets an uninterrupted publish stamps), and their acknowledgements are awaited.

        This is "re-send the failed record and everything after it on its partition, in order", with the
        partition's true state in place of the futures' word: a failed future does not mean the record is
        missing (it may have expired after it was written), and a pending one does not mean it is there.

        A fault during 1-3 starts again at 1, after a backoff; past ``max_outage_s`` the publisher gives up.
        """
        if self._outage_since is None:
            self._outage_since = max(self._last_ack, self._window_since) or time.monotonic()
        since = self._outage_since
        log.warning("%s: recovering %d unacknowledged records", cause, len(self._window))
        self.report.outages += 1
        self.report.retries += 1
        await self.through_outage(self._resend)
        self.report.outage_s += time.monotonic() - since
        self._outage_since = None
        log.warning("kafka at %s: recovered after %.1f s", self._settings.bootstrap, time.monotonic() - since)

    async def _resend(self) -> None:
        """One recovery attempt (steps 1-3 of :meth:`_recover`)."""
        self._offsets_unsure = True
        await self._drop_producer()
        ends, last = await self._read_broker(scan={r.tp for r in self._window})
        self._follow(ends)
        self._window = [r for r in self._window if r.seq > last.get(r.tp, -1)]
        self._producer = await start_producer(self._settings, self._ack_timeout_s, **self._producer_options())
        self._owned = True
        self._window_since = time.monotonic()
        for record in self._window:
            record.future = None
        for record in self._window:
            await self._transmit(record)
        await self._await_window()

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await abandon_producer(producer, self._ack_timeout_s)

    async def _close(self, clean: bool) -> None:
        if clean:
            producer, self._producer = self._producer, None
            if producer is not None and self._owned:
                await producer.stop()  # everything is acknowledged: returns at once
        else:
            await self._drop_producer()  # a stop() would wait for records the broker may never take

    def _producer_options(self) -> dict[str, object]:
        # Idempotence makes the prefix property hold; a short request timeout makes a full send buffer or an
        # unanswered request fail within ack_timeout_s instead of request_timeout_ms.
        timeout_ms = max(1000, int(self._ack_timeout_s * 1000))
        return {"enable_idempotence": True, "acks": "all",
                "request_timeout_ms": min(timeout_ms, self._settings.request_timeout_ms)}

    # -- reading the broker -----------------------------------------------------------------------

    async def _prepare(self) -> None:
        """Partitions and start offsets; with ``resume``, the last seq of every partition; the producer."""
        ends, last = await self._read_broker(scan=None if self._resume else set(), first=True)
        self._follow(ends)
        self._done = last
        if self._resume:
            log.info("resume: last seq per partition %s", {f"{tp.topic}[{tp.partition}]": s for tp, s in last.items()})
        if self._producer is None:
            self._producer = await start_producer(self._settings, self._ack_timeout_s, **self._producer_options())
            self._owned = True

    async def _make_offsets_sure(self) -> None:
        """With nothing unacknowledged, follow the broker's end offsets if the acknowledged ones may be short.

        After a recovery a record of the dropped producer may have landed after the broker was read, and a
        duplicate's ack carries no offset: stamps then come from the broker's word, never from a count that
        may be one short.
        """
        if self._offsets_unsure:
            self._follow(await self.through_outage(self._end_offsets))
            self._offsets_unsure = False

    async def _end_offsets(self) -> dict[TopicPartition, int]:
        return (await self._read_broker(scan=set()))[0]

    def _follow(self, ends: dict[TopicPartition, int]) -> None:
        topics = self._settings.topics
        for tp, offset in ends.items():
            if tp.topic == topics.market_raw:
                self._market_next[tp.partition] = offset
            elif tp.topic == topics.news_raw:
                self._news_next[tp.partition] = offset

    async def _read_broker(
        self, *, scan: set[TopicPartition] | None, first: bool = False
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """End offsets of every partition the publisher writes, and the last seq on each ``scan`` partition
        (None: all) at or after ``_scan_from``; ``first`` also learns the partitions and ``_scan_from``."""
        where = f"kafka at {self._settings.bootstrap}"
        timeout = self._ack_timeout_s
        consumer = make_consumer(self._settings)
        try:
            try:
                await asyncio.wait_for(consumer.start(), timeout)
                if first:
                    await asyncio.wait_for(consumer.topics(), timeout)  # cluster metadata: partition counts
                    self._learn_partitions(consumer)
                tps = self._partitions()
                ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout)
                if first:
                    self._scan_from = await asyncio.wait_for(consumer.beginning_offsets(tps), timeout) \
                        if self._resume else dict(ends)
                todo = tps if scan is None else sorted(scan, key=lambda tp: (tp.topic, tp.partition))
                bounds = {tp: (self._scan_from.get(tp, 0), ends[tp]) for tp in todo}
                last = await _last_seqs(consumer, bounds, timeout)
            except KafkaError as exc:
                raise await explain(exc, self._settings, where) from exc
            except TimeoutError as exc:
                raise TransientError(f"{where}: no answer in {timeout:.0f} s") from exc
        finally:
            try:
                await asyncio.wait_for(consumer.stop(), timeout)
            except (TimeoutError, KafkaError) as exc:
                log.debug("consumer stop: %r", exc)
        return ends, last

    def _learn_partitions(self, consumer: AIOKafkaConsumer) -> None:
        topics = self._settings.topics
        market_parts = consumer.partitions_for_topic(topics.market_raw) or set()
        news_parts = consumer.partitions_for_topic(topics.news_raw) or set()
        dead_parts = consumer.partitions_for_topic(topics.deadletter) or set()
        for name, parts in ((topics.market_raw, market_parts), (topics.deadletter, dead_parts)):
            if not parts:
                raise InvalidInput(f"topic {name} does not exist; run ensure_topics first")
        if news_parts != market_parts:
            raise InvalidInput(
                f"{topics.news_raw} has {len(news_parts)} partitions and {topics.market_raw} {len(market_parts)}: "
                "they must be equal (each worker reads the news partition of its market partition)"
            )
        self._market_next = dict.fromkeys(sorted(market_parts), 0)
        self._news_next = dict.fromkeys(sorted(news_parts), 0)
        self._dead_partitions = len(dead_parts)

    def _partitions(self) -> list[TopicPartition]:
        topics = self._settings.topics
        return [
            *(TopicPartition(topics.market_raw, p) for p in sorted(self._market_next)),
            *(TopicPartition(topics.news_raw, p) for p in sorted(self._news_next)),
            *(TopicPartition(topics.deadletter, p) for p in range(self._dead_partitions)),
        ]


async def _last_seqs(
    consumer: AIOKafkaConsumer, bounds: dict[TopicPartition, tuple[int, int]], stall_s: float
) -> dict[TopicPartition, int]:
    """The ``sigstream.seq`` of the last record carrying one in each partition's [low, end) range.

    Read backwards in growing windows from the end: normally the very last record has one (the publisher
    wrote it); records of other producers (a worker's dead letters) have none and are stepped over.
    Partitions without such a record are left out.
    """
    found: dict[TopicPartition, int] = {}
    todo = {tp: (low, end) for tp, (low, end) in bounds.items() if end > low}
    size = 64
    while todo:
        ranges = {tp: (max(low, end - size), end) for tp, (low, end) in todo.items()}
        seen = await _read_ranges(consumer, ranges, stall_s)
        for tp, (start, _) in ranges.items():
            low = todo[tp][0]
            if tp in seen:
                found[tp] = seen[tp]
                del todo[tp]
            elif start <= low:
                del todo[tp]
            else:
                todo[tp] = (low, start)
        size *= 8
    return found


async def _read_ranges(
    consumer: AIOKafkaConsumer, ranges: dict[TopicPartition, tuple[int, int]], stall_s: float
) -> dict[TopicPartition, int]:
    consumer.assign(list(ranges))
    for tp, (start, _) in ranges.items():
        consumer.seek(tp, start)
    last: dict[TopicPartition, int] = {}
    remaining = set(ranges)
    progress = time.monotonic()
    while remaining:
        batch = await consumer.getmany(*remaining, timeout_ms=200, max_records=10_000)
        for tp, records in batch.items():
            end = ranges[tp][1]
            for record in records:  # in offset order: the last one with a seq wins
                seq = _seq(record.headers) if record.offset < end else None
                if seq is not None:
                    last[tp] = seq
        for tp in list(remaining):
            if await consumer.position(tp) >= ranges[tp][1]:
                remaining.discard(tp)
        now = time.monotonic()
        if batch:
            progress = now
        elif remaining and now - progress > stall_s:
            raise TransientError(f"reading back {len(remaining)} partition(s): no records in {stall_s:.0f} s")
    return last


_NOISY_LOGGERS = ("aiokafka", "aiokafka.producer.sender", "aiokafka.conn", "aiokafka.consumer.fetcher")


class _QuietRepeats(logging.Filter):
    """Lets each aiokafka message through once per ``every_s``: with its broker away, aiokafka logs the same
    connection error thousands of times a second."""

    def __init__(self, every_s: float = 5.0) -> None:
        super().__init__()
        self._every_s = every_s
        self._last: dict[tuple[str, object], float] = {}
        self._suppressed: dict[tuple[str, object], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.msg)
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self._every_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        if suppressed := self._suppressed.pop(key, 0):
            log.warning("%d similar %s messages in the last %.0f s were not logged", suppressed, record.name,
                        self._every_s)
        return True


async def _reachable(bootstrap: str, timeout_s: float = 1.0) -> bool:
    """Whether any bootstrap broker accepts a TCP connection."""
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]") or "localhost", int(port)),
                                               timeout_s)
        except (OSError, TimeoutError, ValueError):
            continue
        writer.close()
        return True
    return False


def _seq(headers: Sequence[tuple[str, bytes]] | None) -> int | None:
    for name, value in headers or ():
        if name == SEQ_HEADER:
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _aiter(items: Iterable[PublishItem] | AsyncIterable[PublishItem]) -> Any:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
