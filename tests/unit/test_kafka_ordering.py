"""StreamProcessor keeps publish order whatever order Kafka delivers the two topics in (no broker)."""

from __future__ import annotations

import random

import pytest

from adapters.kafka.app import RawRecord, StreamProcessor
from adapters.kafka.config import KafkaSettings
from adapters.kafka.ordering import MARKET_HEADER, NEWS_HEADER, market_header
from adapters.kafka.parsing import encode_watermark
from engine.batcher import MicroBatcher
from engine.config import EngineSettings
from engine.events import Bar, CompositeSignal, Interval, NewsItem
from engine.pipeline import SignalEngine
from engine.runtime import Runtime, RuntimeSinks
from engine.serialization import decode_event, decode_signal, encode_event, signal_record
from tests.support.lexicon_model import LexiconSentimentModel

PARTITION = {"BTCUSDT": 0, "ETHUSDT": 1}
HEADLINES = ["Bitcoin surges to record", "Ethereum plunges after hack", "Bitcoin and ether rally", "Markets wait"]


class ListSink:
    def __init__(self) -> None:
        self.items: list = []

    async def publish(self, item) -> None:
        self.items.append(item)

    async def flush(self) -> None:
        return None

    @property
    def count(self) -> int:
        return len(self.items)


def recording(n: int = 25) -> list:
    items: list = []
    for i in range(n):
        for symbol in PARTITION:
            start = 1_700_000_000_000 + i * 60_000
            price = 100.0 + (i * 7 % 13) + (symbol == "ETHUSDT")
            items.append(
                Bar(symbol, Interval.M1, start, price, price + 1, price - 1, price, 3.0, start + 60_000, start + 60_005)
            )
        if i % 2:
            ts = items[-1].ts_init + 1
            items.append(NewsItem(f"n{i}", "t", HEADLINES[i % 4], "", (), (), "", ts, ts))
    return items


def stamp(items: list, settings: KafkaSettings) -> tuple[dict[int, list[RawRecord]], dict[int, list[RawRecord]]]:
    """What RecordingPublisher writes: per-partition market records, and a copy of each news item on every
    news partition, with ordering headers."""
    market: dict[int, list[RawRecord]] = {0: [], 1: []}
    news: dict[int, list[RawRecord]] = {0: [], 1: []}
    for item in items:
        if isinstance(item, NewsItem):
            for p, copies in news.items():
                header = market_header({p: len(market[p])})
                copies.append(
                    RawRecord(
                        settings.topics.news_raw, p, len(copies), item.id.encode(), encode_event(item),
                        {MARKET_HEADER: header},
                    )
                )  # fmt: skip
        else:
            p = PARTITION[item.symbol]
            market[p].append(
                RawRecord(
                    settings.topics.market_raw,
                    p,
                    len(market[p]),
                    item.symbol.encode(),
                    encode_event(item),
                    {NEWS_HEADER: str(len(news[p])).encode()},
                )
            )
    for p, records in market.items():
        records.append(
            RawRecord(
                settings.topics.market_raw,
                p,
                len(records),
                b"",
                encode_watermark(0),
                {NEWS_HEADER: str(len(news[p])).encode()},
            )
        )
    return market, news


async def noop_ack() -> None:
    return None


async def committed_at_start(topic: str, partition: int) -> int:
    return 0  # a fresh consumer group


def new_processor(send, settings: KafkaSettings) -> StreamProcessor:
    return StreamProcessor(
        EngineSettings(), MicroBatcher(LexiconSentimentModel()), send, settings, start_offset=committed_at_start
    )


async def replay(items: list) -> list[CompositeSignal]:
    sink = ListSink()
    await Runtime(SignalEngine(), MicroBatcher(LexiconSentimentModel()), RuntimeSinks(ListSink(), signals=[sink])).run(
        items
    )
    return sink.items


def per_symbol(signals) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for s in signals:
        record = s if isinstance(s, dict) else signal_record(s)
        out.setdefault(record["symbol"], []).append(record)
    return out


@pytest.mark.parametrize("seed", range(8))
async def test_any_interleaving_of_partitions_gives_replays_signals(seed: int) -> None:
    settings = KafkaSettings(partitions=2)
    items = recording()
    market, news = stamp(items, settings)
    # Deliver the four partitions interleaved at random, each in its own order, as a consumer may.
    queues = [list(market[0]), list(market[1]), list(news[0]), list(news[1])]
    rng = random.Random(seed)
    out: list[tuple[str, bytes]] = []

    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        out.append((topic, value))

    processor = new_processor(send, settings)
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        await processor.on_record(queue.pop(0), noop_ack, more_waiting=rng.random() < 0.5)
    await processor.tick()
    assert processor.held == 0 and processor.pending == 0
    got = [decode_signal(v) for t, v in out if t == settings.topics.signals]
    assert per_symbol(got) == per_symbol(await replay(items))


async def test_market_record_waits_for_the_news_published_before_it() -> None:
    settings = KafkaSettings(partitions=2)
    items = recording(4)
    market, news = stamp(items, settings)
    out: list[tuple[str, bytes]] = []

    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        out.append((topic, value))

    acked: list[int] = []

    def ack_for(record: RawRecord):
        async def ack() -> None:
            acked.append(record.offset)

        return ack

    processor = new_processor(send, settings)
    for record in market[0]:
        await processor.on_record(record, ack_for(record))
    # Only records stamped before the first news could run; the rest are held and NOT acked.
    first_blocked = next(r for r in market[0] if int(r.headers[NEWS_HEADER]) > 0)
    assert acked == list(range(first_blocked.offset))
    assert processor.held == len(market[0]) - first_blocked.offset
    for record in news[0]:
        await processor.on_record(record, ack_for(record))
    assert processor.held == 0


@pytest.mark.parametrize("seed", range(4))
async def test_two_workers_each_owning_one_partition_together_give_replays_signals(seed: int) -> None:
    # faust co-assigns news.raw[p] with market.raw[p]: worker A gets partition 0 of both, worker B
    # partition 1. Each must get the news of its own symbols, and each news item is reported once.
    settings = KafkaSettings(partitions=2)
    items = recording()
    market, news = stamp(items, settings)
    rng = random.Random(seed)
    out: list[tuple[str, bytes]] = []

    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        out.append((topic, value))

    workers = {p: new_processor(send, settings) for p in (0, 1)}
    queues = [(workers[p], list(records)) for p in (0, 1) for records in (market[p], news[p])]
    while any(q for _, q in queues):
        worker, queue = rng.choice([(w, q) for w, q in queues if q])
        await worker.on_record(queue.pop(0), noop_ack, more_waiting=rng.random() < 0.5)
    for worker in workers.values():
        await worker.tick()
        assert worker.held == 0 and worker.pending == 0
    got = [decode_signal(v) for t, v in out if t == settings.topics.signals]
    assert per_symbol(got) == per_symbol(await replay(items))
    scored = [decode_event(v).news_id for t, v in out if t == settings.topics.sentiment]
    about_a_symbol = [i.id for i in items if isinstance(i, NewsItem) and i.headline != "Markets wait"]
    assert sorted(scored) == sorted(about_a_symbol)  # each once, though both workers scored it


async def test_a_news_record_is_acked_only_once_its_held_signal_is_applied() -> None:
    # Acked at once, faust would commit past a signal that exists only in memory: a hard crash would lose it.
    settings = KafkaSettings(partitions=2)
    items = recording(6)
    market, news = stamp(items, settings)
    acked: list[tuple[str, int]] = []

    def ack_for(record: RawRecord):
        async def ack() -> None:
            acked.append((record.topic, record.offset))

        return ack

    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        return None

    processor = new_processor(send, settings)
    for record in news[1]:  # news about ETHUSDT (partition 1) arrives before its bars
        await processor.on_record(record, ack_for(record))
    held = processor.held
    assert held > 0
    news_acked = [o for t, o in acked if t == settings.topics.news_raw]
    assert len(news_acked) < len(news[1])  # the copies that wait for their bars are not acked yet
    for record in market[1]:
        await processor.on_record(record, ack_for(record))
    assert processor.held == 0 and processor.pending == 0
    assert sorted(o for t, o in acked if t == settings.topics.news_raw) == [r.offset for r in news[1]]


async def test_copies_with_an_unusable_market_header_apply_once_and_dead_letter_once() -> None:
    settings = KafkaSettings(partitions=2)
    item = NewsItem("n1", "t", "Ethereum plunges after hack", "", (), (), "", 1, 1)
    out: list[tuple[str, bytes]] = []

    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        out.append((topic, value))

    processor = new_processor(send, settings)
    for p in (0, 1):
        record = RawRecord(settings.topics.news_raw, p, 0, b"n1", encode_event(item), {MARKET_HEADER: b"garbage"})
        await processor.on_record(record, noop_ack)
    signals = [decode_signal(v) for t, v in out if t == settings.topics.signals]
    dead = [decode_event(v) for t, v in out if t == settings.topics.deadletter]
    assert [s["symbol"] for s in signals] == ["ETHUSDT"]  # once, from partition 1's copy
    assert len(dead) == 1 and "record processed" in dead[0].reason
