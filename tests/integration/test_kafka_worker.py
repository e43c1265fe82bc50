"""The faust worker (``sigstream worker``) on a real Kafka broker: order, dead letters, de-duplication,
restarts and faults. Every test compares against in-process replay of the same items."""

from __future__ import annotations

import asyncio
import signal

import orjson
import pytest

from adapters.kafka.client import ensure_topics, make_producer
from adapters.kafka.publisher import RecordingPublisher
from engine.batcher import MicroBatcher
from engine.events import DeadLetter, SentimentScore
from engine.pipeline import SignalEngine
from engine.runtime import Runtime, RuntimeSinks
from engine.serialization import signal_record
from tests.integration.streaming import (
    WorkerProcess,
    bars,
    decoded,
    news,
    read_topic,
    settings_for,
    signal_records,
)
from tests.support.lexicon_model import LexiconSentimentModel

pytestmark = pytest.mark.timeout(300)


class ListSink:
    def __init__(self) -> None:
        self.items: list = []
        self.count = 0

    async def publish(self, item) -> None:
        self.items.append(item)
        self.count += 1

    async def flush(self) -> None:
        return None


async def replay_signals(items) -> list[dict]:
    sink = ListSink()
    runtime = Runtime(SignalEngine(), MicroBatcher(LexiconSentimentModel()), RuntimeSinks(ListSink(), signals=[sink]))
    await runtime.run(items)
    return [signal_record(s) for s in sink.items]


def by_symbol(signals: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for s in signals:
        out.setdefault(s["symbol"], []).append(s)
    return out


def recording(n_bars: int = 30, start_index: int = 0) -> list:
    """Two symbols' bars interleaved in time, with news about one, the other, both, and neither."""
    items: list = []
    btc, eth = bars("BTCUSDT", n_bars, start_index=start_index), bars("ETHUSDT", n_bars, start_index=start_index)
    headlines = [
        "Bitcoin surges to record high",
        "Ethereum plunges after hack",
        "Bitcoin and ether rally",
        "Regulators meet on Tuesday",
        "Bitcoin drops as miners sell",
    ]
    for i, (b, e) in enumerate(zip(btc, eth, strict=True)):
        items += [b, e]
        if i % 3 == 1:
            k = start_index + i
            items.append(news(f"n{k}", headlines[k % len(headlines)], b.ts_init + 1))
    return items


@pytest.fixture
async def kafka_settings(kafka_bootstrap: str, unique: str):
    settings = settings_for(kafka_bootstrap, unique)
    await ensure_topics(settings)
    return settings


@pytest.fixture
def worker_factory(kafka_settings, tmp_path):
    started: list[WorkerProcess] = []

    def make(settings=None, **kwargs) -> WorkerProcess:
        w = WorkerProcess(settings or kafka_settings, tmp_path / "worker", **kwargs)
        w.start()
        started.append(w)
        return w

    yield make
    for w in started:
        if w.proc is not None and w.proc.poll() is None:
            w.stop()


async def publish(settings, items, speed=None):
    producer = make_producer(settings)
    await producer.start()
    try:
        return await RecordingPublisher(producer, settings).publish(items, speed=speed)
    finally:
        await producer.stop()


async def produce_raw(settings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def signals_of(settings, count: int, worker: WorkerProcess | None = None, timeout_s: float = 90) -> list:
    records = await read_topic(settings, settings.topics.signals, count=count, timeout_s=timeout_s)
    got = signal_records(records)
    if worker is not None:
        assert len(got) >= count, f"{len(got)} of {count} signals; worker log:\n{worker.log()}"
    return got


async def test_signals_match_in_process_replay_per_symbol_and_in_order(kafka_settings, worker_factory) -> None:
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    items = recording()
    expected = await replay_signals(items)
    worker = worker_factory(args=("--metrics-port", str(port)))
    await publish(kafka_settings, items)
    got = await signals_of(kafka_settings, len(expected), worker)
    worker.assert_alive()
    assert len(got) == len(expected)
    assert by_symbol(got) == by_symbol(expected)
    assert any(s["num_sources"] > 0 for s in got)  # news really took part

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()

    metrics = await asyncio.to_thread(scrape)
    assert f"sigstream_runtime_signals_total {float(len(expected))}" in metrics
    assert f"sigstream_engine_bars_total {float(sum(1 for s in expected if s['cause'] == 'bar'))}" in metrics
    assert "sigstream_worker_dead_letters_total 0.0" in metrics
    assert "sigstream_batcher_model_calls_total" in metrics


async def test_malformed_frames_and_news_are_dead_lettered_while_the_worker_keeps_going(
    kafka_settings, worker_factory
) -> None:
    worker = worker_factory()
    topics = kafka_settings.topics
    await produce_raw(
        kafka_settings,
        topics.market_raw,
        [
            (b"BTCUSDT", b"{not json"),
            (b"BTCUSDT", orjson.dumps({"v": 1, "type": "BybitFrame", "ts_init": 1, "frame": {"topic": "bogus.X"}})),
            (b"BTCUSDT", orjson.dumps({"v": 1, "type": "Bar", "symbol": "BTCUSDT"})),
        ],
    )
    await produce_raw(kafka_settings, topics.news_raw, [(b"x", b"[1, 2]"), (b"y", b'{"v": 7}')])
    items = recording(6)
    expected = await replay_signals(items)
    await publish(kafka_settings, items)
    got = await signals_of(kafka_settings, len(expected), worker)
    dead = decoded(await read_topic(kafka_settings, topics.deadletter, count=5))
    worker.assert_alive()
    assert all(isinstance(d, DeadLetter) for d in dead)
    reasons = sorted((d.source, d.reason.split(":")[0]) for d in dead)
    # topic[partition], with the offset in "line": enough to find the record again
    assert [source.rsplit("[", 1)[0] for source, _ in reasons] == [topics.market_raw] * 3 + [topics.news_raw] * 2
    assert all(source.endswith("]") and d.line is not None for (source, _), d in zip(reasons, dead, strict=True))
    assert any("malformed JSON" in d.reason for d in dead)
    assert any("schema version" in d.reason for d in dead)
    assert by_symbol(got) == by_symbol(expected)


async def test_duplicate_news_ids_are_scored_once(kafka_settings, worker_factory) -> None:
    items = recording(6)
    n = next(i for i in items if hasattr(i, "headline"))
    items.append(n)  # the same news id again, later
    items.append(n)
    expected = await replay_signals(items)
    worker = worker_factory()
    await publish(kafka_settings, items)
    await signals_of(kafka_settings, len(expected), worker)
    scores = decoded(await read_topic(kafka_settings, kafka_settings.topics.sentiment, idle_s=2))
    assert all(isinstance(s, SentimentScore) for s in scores)
    ids = [s.news_id for s in scores]
    assert len(ids) == len(set(ids)) == sum(1 for i in items if hasattr(i, "headline")) - 2


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
async def test_restarted_worker_continues_from_committed_offsets_without_loss_or_duplicates(
    kafka_settings, worker_factory, stop_signal
) -> None:
    first, second = recording(20), recording(20, start_index=20)
    expected = await replay_signals(first + second)
    worker = worker_factory()
    await publish(kafka_settings, first)
    await signals_of(kafka_settings, 1, worker)
    # Stop while the first half may still be in flight; the stop must flush and commit what it did.
    assert worker.stop(stop_signal) == 0, worker.log()
    await publish(kafka_settings, second)
    worker2 = worker_factory()
    got = await signals_of(kafka_settings, len(expected), worker2)
    await asyncio.sleep(2)  # anything extra (a duplicate) would show up now
    got = signal_records(await read_topic(kafka_settings, kafka_settings.topics.signals, idle_s=2))
    # Every decision replay makes is made exactly once. (Values may differ after the restart: without
    # Redis the new worker starts with empty features and no earlier news.)
    keys = [(s["symbol"], s["ts_event"], s["ts_init"]) for s in got]
    assert len(keys) == len(set(keys)) == len(expected), worker2.log()
    assert set(keys) == {(s["symbol"], s["ts_event"], s["ts_init"]) for s in expected}


async def test_broker_restart_mid_stream_loses_no_signal(kafka_settings, kafka_service, worker_factory) -> None:
    items = recording(40)
    expected = await replay_signals(items)
    worker = worker_factory()
    await publish(kafka_settings, items[: len(items) // 2])
    await signals_of(kafka_settings, 1, worker)
    await asyncio.to_thread(kafka_service.restart)
    await publish(kafka_settings, items[len(items) // 2 :])
    want = {(s["symbol"], s["ts_event"], s["ts_init"]) for s in expected}
    keys: set = set()
    for _ in range(30):  # at-least-once: a broker restart may re-deliver, so wait for the full set
        got = signal_records(await read_topic(kafka_settings, kafka_settings.topics.signals, idle_s=2))
        keys = {(s["symbol"], s["ts_event"], s["ts_init"]) for s in got}
        if keys >= want:
            break
        await asyncio.sleep(2)
    worker.assert_alive()
    assert keys == want, f"missing {sorted(want - keys)[:5]}; worker log:\n{worker.log()}"


async def test_exactly_once_guarantee_gives_the_same_signals(kafka_bootstrap, unique, worker_factory) -> None:
    settings = settings_for(kafka_bootstrap, unique + "eos", processing_guarantee="exactly_once")
    await ensure_topics(settings)
    items = recording(10)
    expected = await replay_signals(items)
    worker = worker_factory(settings)
    await publish(settings, items)
    got = await signals_of(settings, len(expected), worker)  # read_committed: only committed transactions
    worker.assert_alive()
    assert by_symbol(got) == by_symbol(expected)


def test_the_worker_maps_symbols_with_the_topics_real_partition_count(kafka_bootstrap: str, unique: str) -> None:
    # --partitions / SIGSTREAM_KAFKA__PARTITIONS only size topics this project creates; an existing
    # market.raw may have another count, and symbol -> partition must follow the topic, not the setting.
    from adapters.kafka.client import create_topics, partition_count
    from adapters.kafka.config import KafkaSettings, TopicNames
    from sigstream.modes.worker import with_real_partition_count as _with_real_partition_count

    topic = f"market.raw.{unique}"
    asyncio.run(create_topics(kafka_bootstrap, [topic], 3))
    assert asyncio.run(partition_count(kafka_bootstrap, topic)) == 3
    assert asyncio.run(partition_count(kafka_bootstrap, f"missing.{unique}")) is None
    settings = KafkaSettings(bootstrap=kafka_bootstrap, partitions=8, topics=TopicNames(market_raw=topic))
    assert _with_real_partition_count(settings).partitions == 3


async def test_two_workers_share_the_partitions_and_both_get_their_news(kafka_bootstrap, unique, tmp_path) -> None:
    # Scale-out: two workers in one group, each owning one market partition (BTCUSDT -> 0, ETHUSDT -> 1
    # with two partitions) and the news partition beside it. Together they must decide what replay does,
    # with news votes on both symbols.
    settings = settings_for(kafka_bootstrap, unique, partitions=2)
    await ensure_topics(settings)
    workers = [WorkerProcess(settings, tmp_path / f"worker{i}") for i in (1, 2)]
    try:
        for w in workers:
            w.start()
        async with asyncio.timeout(120):
            while not all("Ready" in w.log() for w in workers):  # faust logs "Ready" once it has its partitions
                for w in workers:
                    w.assert_alive()
                await asyncio.sleep(0.5)
        await asyncio.sleep(3)  # the second member's rebalance settles
        items = recording()
        expected = await replay_signals(items)
        await publish(settings, items)
        got = await signals_of(settings, len(expected), workers[0])
        for w in workers:
            w.assert_alive()
        assert by_symbol(got) == by_symbol(expected)
        assert {s["symbol"] for s in got if s["num_sources"] > 0} == {"BTCUSDT", "ETHUSDT"}
    finally:
        for w in workers:
            if w.proc is not None and w.proc.poll() is None:
                w.stop()
