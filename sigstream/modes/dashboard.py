"""The ``sigstream dashboard`` room: the live page fed from Kafka (signals, bars, scores and news headlines).

The page (:mod:`adapters.web.server`) starts from the recent past: each topic is read from its last
``dashboard.bars`` / ``dashboard.signals`` / ``dashboard.news`` records per partition, then live. It only reads:
nothing is committed (no consumer group) and nothing is produced. ``sigstream run --dashboard-port`` serves the
same page from the in-process runtime instead (:func:`start_page`, wired in :mod:`sigstream.modes.run`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from adapters.web.server import DashboardServer
from adapters.web.sink import DashboardSink
from adapters.web.state import DashboardState
from engine.errors import FatalError, InvalidInput
from engine.events import Features, NewsItem, SentimentScore
from sigstream.settings import Settings

log = logging.getLogger(__name__)
_TOPIC_WAIT_S = 2.0


async def start_page(settings: Settings) -> tuple[DashboardState, DashboardServer]:
    """The page's state and its server, started."""
    state = DashboardState(settings.dashboard)
    try:
        server = await DashboardServer(settings.dashboard, state).start()
    except OSError as exc:  # the port is taken, or no such interface
        raise InvalidInput(f"dashboard cannot listen on {settings.dashboard.host}:{settings.dashboard.port}: "
                           f"{exc.strerror or exc}") from None
    log.info("dashboard on %s", server.url)
    return state, server


@dataclass
class RunPage:
    """The page for ``sigstream run --dashboard-port``: ``sink`` goes to the runtime as its signal, feature and
    sentiment sink, and :meth:`tap` lets the news items through on their way to it (for the headlines)."""

    sink: DashboardSink
    server: DashboardServer

    async def tap(self, arrivals: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
        try:
            async for arrival in arrivals:
                if isinstance(arrival, NewsItem):
                    self.sink.state.on_news(arrival)
                yield arrival
        finally:
            await arrivals.aclose()  # the sources' own generator: its cleanup closes them

    async def close(self) -> None:
        await self.server.close()


async def page_for_run(settings: Settings) -> RunPage:
    """Start the page on ``settings.dashboard``; its URL goes to stderr (stdout carries run's signals)."""
    state, server = await start_page(settings)
    print(f"dashboard on {server.url}", file=sys.stderr, flush=True)
    return RunPage(DashboardSink(state), server)


async def serve_from_kafka(settings: Settings, duration: float | None = None) -> None:
    """Serve the page until SIGINT/SIGTERM (or ``duration`` seconds) from the Kafka topics."""
    state, server = await start_page(settings)
    print(server.url, flush=True)  # stdout's first line is the URL, as testserver's
    stop = _stop_event(duration)
    reader = asyncio.create_task(_feed(settings, state))
    try:
        await asyncio.wait({reader, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
        if reader.done():
            reader.result()  # the reader failed: say why
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await server.close()


async def _feed(settings: Settings, state: DashboardState) -> None:
    from adapters.kafka.parsing import decode_news
    from engine.serialization import decode_event, decode_signal

    topics = settings.kafka.topics
    history = {topics.signals: settings.dashboard.signals, topics.market_bars: settings.dashboard.bars,
               topics.sentiment: settings.dashboard.news, topics.news_raw: settings.dashboard.news}
    unreadable = 0
    async for record in _records(settings, history):
        try:
            if record.topic == topics.signals:
                state.on_signal(decode_signal(record.value))
            elif record.topic == topics.news_raw:
                state.on_news(decode_news(record.value))
            else:
                event = decode_event(record.value)
                if isinstance(event, Features):
                    state.on_features(event)
                elif isinstance(event, SentimentScore):
                    state.on_score(event)
                elif not isinstance(event, NewsItem):
                    raise InvalidInput(f"a {type(event).__name__} is not shown on the dashboard")
        except InvalidInput as exc:
            # The page only reads; the worker dead-letters bad input. Said here so that nothing vanishes unseen.
            unreadable += 1
            log.warning("%s[%d]@%d not shown (%d so far): %s", record.topic, record.partition, record.offset,
                        unreadable, exc.reason)


async def _records(settings: Settings, history: dict[str, int]) -> AsyncIterator[Any]:
    """Every record of ``history``'s topics from the last ``history[topic]`` of each partition on, then live;
    waits for topics that do not exist yet."""
    from aiokafka.errors import KafkaError
    from aiokafka.structs import TopicPartition

    from adapters.kafka.client import make_consumer

    consumer = make_consumer(settings.kafka, enable_auto_commit=False)
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise FatalError(f"dashboard cannot reach Kafka at {settings.kafka.bootstrap}: {exc}") from None
    try:
        partitions: list[TopicPartition] = []
        waiting_logged = False
        while True:
            # A fresh look at every topic (the consumer's own metadata only knows assigned ones).
            cluster = await consumer._client.fetch_all_metadata()
            missing = [t for t in history if not cluster.partitions_for_topic(t)]
            if not missing:
                break
            if not waiting_logged:
                log.info("waiting for topic(s) %s (a worker creates them)", ", ".join(missing))
                waiting_logged = True
            await asyncio.sleep(_TOPIC_WAIT_S)
        for topic in history:
            partitions += [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        begins = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, max(begins[tp], ends[tp] - history[tp.topic]))
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=2_000)
            for tp in sorted(batch, key=lambda tp: (tp.topic != settings.kafka.topics.news_raw, tp.topic)):
                for record in batch[tp]:  # headlines first, so a score in the same batch finds its headline
                    yield record
    finally:
        await consumer.stop()


def _stop_event(duration: float | None) -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if duration:
        loop.call_later(duration, stop.set)
    return stop


def main(settings: Settings, duration: float | None) -> None:
    try:
        asyncio.run(serve_from_kafka(settings, duration))
    finally:
        sys.stdout.flush()
