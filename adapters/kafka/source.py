"""Publishes a recording onto market.raw and news.raw at N x real time (or as fast as possible).

Records are stamped with the ordering headers of :mod:`adapters.kafka.ordering`, so a worker
consuming them decides exactly what in-process replay of the same recording decides. Each market
record goes to its symbol's partition (murmur2 of the key, as Kafka's default partitioner), and each
news item to every news.raw partition, so that every worker of a group receives it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from adapters.bybit.parsing import OrderBookUpdate
from adapters.kafka.client import AIOKafkaConsumer, AIOKafkaProducer
from adapters.kafka.config import KafkaSettings
from adapters.kafka.ordering import MARKET_HEADER, NEWS_HEADER, key_partition, market_header
from adapters.kafka.parsing import encode_frame, encode_watermark, frame_symbol
from engine.errors import InvalidInput
from engine.events import Bar, BookTop, DeadLetter, NewsItem, Ticker, Trade
from engine.serialization import encode_event


@dataclass(frozen=True, slots=True)
class RawFrame:
    """A raw venue frame with its receive time, published as-is for the worker to parse."""

    frame: dict[str, Any]
    ts_init: int


PublishItem = RawFrame | Trade | Bar | Ticker | BookTop | NewsItem | DeadLetter | OrderBookUpdate


@dataclass(slots=True)
class PublishReport:
    market: int = 0
    news: int = 0
    dead_letters: int = 0
    skipped: int = 0
    seconds: float = 0.0


class RecordingPublisher:
    """Produces recorded items in order; ``speed`` is a real-time multiple, ``None`` = as fast as possible."""

    def __init__(self, producer: AIOKafkaProducer, settings: KafkaSettings) -> None:
        self._producer = producer
        self._settings = settings
        self._market_next: dict[int, int] = {}
        self._news_next: dict[int, int] = {}
        self._pending: list[asyncio.Future[Any]] = []
        self.report = PublishReport()

    async def _start_offsets(self) -> None:
        topics = self._settings.topics
        consumer = AIOKafkaConsumer(bootstrap_servers=self._settings.bootstrap)
        await consumer.start()
        try:
            from aiokafka.structs import TopicPartition

            await consumer.topics()  # fetches cluster metadata, so partition counts are known
            market_parts = consumer.partitions_for_topic(topics.market_raw) or set()
            news_parts = consumer.partitions_for_topic(topics.news_raw) or set()
            if not market_parts:
                raise InvalidInput(f"topic {topics.market_raw} does not exist; run ensure_topics first")
            if news_parts != market_parts:
                raise InvalidInput(
                    f"{topics.news_raw} has {len(news_parts)} partitions and {topics.market_raw} {len(market_parts)}: "
                    "they must be equal (each worker reads the news partition of its market partition)"
                )
            tps = [TopicPartition(topics.market_raw, p) for p in sorted(market_parts)]
            news_tps = [TopicPartition(topics.news_raw, p) for p in sorted(news_parts)]
            ends = await consumer.end_offsets([*tps, *news_tps])
        finally:
            await consumer.stop()
        self._market_next = {tp.partition: ends[tp] for tp in tps}
        self._news_next = {tp.partition: ends[tp] for tp in news_tps}

    async def publish(
        self, items: Iterable[PublishItem] | AsyncIterable[PublishItem], speed: float | None = None
    ) -> PublishReport:
        await self._start_offsets()
        started = time.perf_counter()
        first_ts: int | None = None
        async for item in _aiter(items):
            ts = item.ts_init
            if speed is not None:
                first_ts = ts if first_ts is None else first_ts
                delay = (ts - first_ts) / 1000.0 / speed - (time.perf_counter() - started)
                if delay > 0:
                    await asyncio.sleep(delay)
            await self._publish_one(item)
        await self._finish()
        self.report.seconds = time.perf_counter() - started
        return self.report

    async def _publish_one(self, item: PublishItem) -> None:
        topics = self._settings.topics
        if isinstance(item, NewsItem):
            # The market offsets stamped on news must be acknowledged ones.
            await self._drain()
            value, key = encode_event(item), item.id.encode()
            copies = [
                await self._producer.send(
                    topics.news_raw,
                    value,
                    key=key,
                    partition=p,
                    headers=[(MARKET_HEADER, market_header({p: self._market_next[p]}))],
                )
                for p in sorted(self._news_next)
            ]
            for meta in await asyncio.gather(*copies):
                self._news_next[meta.partition] = meta.offset + 1
            self.report.news += 1
        elif isinstance(item, DeadLetter):
            await self._producer.send(topics.deadletter, encode_event(item), key=item.source.encode())
            self.report.dead_letters += 1
        elif isinstance(item, OrderBookUpdate):
            self.report.skipped += 1  # the live source applies books; a recording replays their tops
        else:
            symbol: str
            if isinstance(item, RawFrame):
                try:
                    symbol = frame_symbol(item.frame)
                except InvalidInput:
                    symbol = "unknown"
                value = encode_frame(item.frame, item.ts_init)
            else:
                symbol, value = item.symbol, encode_event(item)
            key = symbol.encode()
            partition = key_partition(key, len(self._market_next))
            headers = [(NEWS_HEADER, str(self._news_next[partition]).encode())]
            future = await self._producer.send(topics.market_raw, value, key=key, partition=partition, headers=headers)
            future.add_done_callback(self._market_acked)
            self._pending.append(future)
            self.report.market += 1
            if len(self._pending) >= 10_000:
                await self._drain()

    def _market_acked(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            meta = future.result()
            if meta.offset + 1 > self._market_next.get(meta.partition, 0):
                self._market_next[meta.partition] = meta.offset + 1

    async def _drain(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            await asyncio.gather(*pending)

    async def _finish(self) -> None:
        """Watermark every market partition so the worker releases the last news signals."""
        await self._drain()
        topics = self._settings.topics
        ts = time.time_ns() // 1_000_000
        for partition in sorted(self._market_next):
            headers = [(NEWS_HEADER, str(self._news_next[partition]).encode())]
            future = await self._producer.send(
                topics.market_raw, encode_watermark(ts), key=b"", partition=partition, headers=headers
            )
            self._pending.append(future)
        await self._drain()
        await self._producer.flush()


async def _aiter(items: Iterable[PublishItem] | AsyncIterable[PublishItem]) -> Any:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def news_item(**fields: Any) -> NewsItem:
    """A NewsItem from keyword fields with defaults (for tools and tests that publish news by hand)."""
    defaults: dict[str, Any] = {"source": "test", "body": "", "symbols": (), "tags": (), "url": ""}
    return msgspec.convert({**defaults, **fields}, NewsItem)
