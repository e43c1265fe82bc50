"""RecordingPublisher's ordering headers against a producer that acknowledges at once (no broker).

A future that is already done when the publisher gets it runs its done callbacks one loop step later; the
stamps must not depend on them having run. And an acknowledgement without a usable offset (aiokafka
reports DuplicateSequenceNumber as a success at base offset -1) must make the publisher ask the broker.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.kafka.client import TopicPartition
from adapters.kafka.config import KafkaSettings
from adapters.kafka.ordering import MARKET_HEADER, NEWS_HEADER, key_partition, parse_market_header
from adapters.kafka.publisher import SEQ_HEADER, RecordingPublisher
from engine.events import Bar, Interval, NewsItem

PARTITIONS = 2


@dataclass(frozen=True)
class Meta:
    topic: str
    partition: int
    offset: int


class InstantProducer:
    """Appends each record to its partition and hands back an already-resolved future.

    ``duplicate_every``: every n-th market record is acknowledged as a duplicate (offset -1) while it is
    still appended, as when the broker wrote a batch whose first answer was lost.
    """

    def __init__(self, duplicate_every: int = 0) -> None:
        self.log: dict[tuple[str, int], list[dict[str, bytes]]] = {}
        self._duplicate_every = duplicate_every
        self._sent = 0

    async def send(self, topic: str, value: bytes, *, key: bytes, partition: int,
                   headers: list[tuple[str, bytes]]) -> asyncio.Future[Any]:
        records = self.log.setdefault((topic, partition), [])
        records.append(dict(headers))
        self._sent += 1
        duplicate = self._duplicate_every and self._sent % self._duplicate_every == 0
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(Meta(topic, partition, -1 if duplicate else len(records) - 1))
        return future

    async def stop(self) -> None:
        return None

    def ends(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.log.get((tp.topic, tp.partition), [])) for tp in tps}


def _publisher(producer: InstantProducer, settings: KafkaSettings) -> tuple[RecordingPublisher, list[int]]:
    publisher = RecordingPublisher(producer, settings)  # type: ignore[arg-type]
    reads: list[int] = []

    async def read_broker(*, scan: set[TopicPartition] | None, first: bool = False) -> tuple[dict, dict]:
        if first:
            publisher._market_next = dict.fromkeys(range(PARTITIONS), 0)
            publisher._news_next = dict.fromkeys(range(PARTITIONS), 0)
            publisher._dead_partitions = 1
        else:
            reads.append(len(reads))
        return producer.ends(publisher._partitions()), {}

    publisher._read_broker = read_broker  # type: ignore[method-assign]
    return publisher, reads


def _items(minutes: int) -> list[Bar | NewsItem]:
    items: list[Bar | NewsItem] = []
    for i in range(minutes):
        for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
            start = 1_700_000_000_000 + i * 60_000
            items.append(Bar(symbol, Interval.M1, start, 100.0, 101.0, 99.0, 100.0, 3.0, start + 60_000,
                             start + 60_000 + i))
        if i % 3 == 1:
            ts = items[-1].ts_init + 1
            items.append(NewsItem(f"n{i}", "t", "Bitcoin rallies", "", (), (), "", ts, ts))
    return items


def _check_stamps(producer: InstantProducer, settings: KafkaSettings, items: list[Bar | NewsItem]) -> None:
    """Every news copy stamps the market records before it on its partition, and every market record the news
    copies before it: what an uninterrupted publish writes, computed here from the input alone."""
    market = {p: 0 for p in range(PARTITIONS)}
    news = {p: 0 for p in range(PARTITIONS)}
    expected: dict[tuple[str, int], list[dict[str, bytes]]] = {}
    for seq, item in enumerate(items):
        if isinstance(item, NewsItem):
            for p in range(PARTITIONS):
                expected.setdefault((settings.topics.news_raw, p), []).append(
                    {MARKET_HEADER: parse_market_header(b'{"%d": %d}' % (p, market[p])), SEQ_HEADER: seq})
                news[p] += 1
        else:
            p = key_partition(item.symbol.encode(), PARTITIONS)
            expected.setdefault((settings.topics.market_raw, p), []).append(
                {NEWS_HEADER: news[p], SEQ_HEADER: seq})
            market[p] += 1
    got = {
        tp: [
            {name: parse_market_header(value) if name == MARKET_HEADER else int(value) for name, value in h.items()}
            for h in records
            if int(h[SEQ_HEADER]) < len(items)  # the closing watermarks are not in the input
        ]
        for tp, records in producer.log.items()
    }
    assert got == expected


async def test_stamps_do_not_wait_for_done_callbacks() -> None:
    settings = KafkaSettings(partitions=PARTITIONS)
    producer = InstantProducer()
    items = _items(60)
    publisher, reads = _publisher(producer, settings)
    report = await publisher.publish(items)
    assert report.market == 180 and report.news == 20 and report.news_copies == 40
    _check_stamps(producer, settings, items)
    assert reads == [], "no fault, no duplicate: the broker need not be asked again"


@pytest.mark.parametrize("every", [5, 7])
async def test_a_duplicate_ack_makes_the_publisher_ask_the_broker(every: int) -> None:
    settings = KafkaSettings(partitions=PARTITIONS)
    producer = InstantProducer(duplicate_every=every)
    items = _items(60)
    publisher, reads = _publisher(producer, settings)
    await publisher.publish(items)
    _check_stamps(producer, settings, items)
    assert reads, "a duplicate's acknowledgement carries no offset: the end offsets must be read"
