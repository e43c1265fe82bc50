"""Publishing onto Kafka's raw topics: recordings (``replay --to-kafka``) and live sources (``run --kafka``).

Both go through :class:`adapters.kafka.source.RecordingPublisher`, which stamps the ordering headers
that let ``sigstream worker`` decide exactly what in-process replay decides.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from adapters.kafka.client import ensure_topics, make_producer
from adapters.kafka.config import KafkaSettings
from adapters.kafka.source import PublishReport, RecordingPublisher
from engine.events import DeadLetter
from engine.ports import NewsSource, TickSource

log = logging.getLogger(__name__)


async def publish_items(items: Iterable[Any] | AsyncIterator[Any], settings: KafkaSettings,
                        speed: float | None) -> PublishReport:
    """Create the topics if needed and publish ``items`` in order at ``speed`` x real time (None = max)."""
    await ensure_topics(settings)
    producer = make_producer(settings)
    await producer.start()
    try:
        return await RecordingPublisher(producer, settings).publish(items, speed)
    finally:
        await producer.stop()


class QueueDeadLetters:
    """A DeadLetterSink that hands dead letters to the publisher, which sends them to ``deadletter``."""

    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self._queue = queue
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    async def publish(self, record: DeadLetter) -> None:
        self._count += 1
        await self._queue.put(record)


async def merged_live_events(
    queue: asyncio.Queue[Any],
    ticks: Sequence[TickSource],
    news: Sequence[NewsSource],
    stop: asyncio.Event,
    failures: list[Exception] | None = None,
) -> AsyncIterator[Any]:
    """Interleave live sources in arrival order until ``stop``; sources are closed on the way out.

    A source that fails is appended to ``failures`` (the others keep running).
    """
    failures = [] if failures is None else failures
    done = object()

    async def pump(source: TickSource | NewsSource) -> None:
        # The end marker is only for a source that ends or fails by itself. A pump cancelled at stop must not
        # wait to put it: the queue may be full and nobody reads it any more.
        try:
            async for event in source.events():
                await queue.put(event)
        except Exception:
            await queue.put(done)
            raise
        await queue.put(done)

    pumps = [asyncio.create_task(pump(s)) for s in (*ticks, *news)]
    stopper = asyncio.create_task(stop.wait())
    running = len(pumps)
    try:
        while running:
            getter = asyncio.create_task(queue.get())
            await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper.done():
                # Stop wins even with a backlog (both can finish in one turn); what is queued is drained below.
                if not getter.done():
                    getter.cancel()
                elif (item := getter.result()) is not done:
                    yield item
                break
            item = getter.result()
            if item is done:
                running -= 1
                continue
            yield item
    finally:
        for source in (*ticks, *news):
            await source.close()
        for task in (*pumps, stopper):
            task.cancel()
        # A failed source re-raises when awaited; the drain below must still run, so its error is
        # logged here and the items it delivered before failing are published.
        for result in await asyncio.gather(*pumps, stopper, return_exceptions=True):
            if isinstance(result, Exception):
                failures.append(result)
                log.error("source stopped: %s", result)
        # What arrived before the sources closed is still published, not dropped.
        while not queue.empty():
            item = queue.get_nowait()
            if item is not done:
                yield item
