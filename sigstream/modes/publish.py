"""Publishing onto Kafka's raw topics: recordings (``replay --to-kafka``) and live sources (``run --kafka``).

Both go through :class:`adapters.kafka.publisher.RecordingPublisher`, which stamps the ordering headers
that let ``sigstream worker`` decide exactly what in-process replay decides, and rides out broker outages
(up to ``max_outage_s``) without losing or duplicating a record.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

from adapters.kafka.client import ensure_topics
from adapters.kafka.config import KafkaSettings
from adapters.kafka.publisher import DEFAULT_MAX_OUTAGE_S, PublishReport, RecordingPublisher
from engine.events import DeadLetter, Received


async def publish_items(items: Iterable[Any] | AsyncIterator[Any], settings: KafkaSettings,
                        speed: float | None, *, max_outage_s: float | None = None,
                        resume: bool = False) -> PublishReport:
    """Create the topics if needed and publish ``items`` in order at ``speed`` x real time (None = max).

    ``max_outage_s``: how long the broker may stay away before the publish fails (FatalError); default:
    the ``max_outage_s`` Kafka setting where there is one, else 300 s. ``resume``: skip the items an
    interrupted publish of the same input already wrote (see :mod:`adapters.kafka.publisher`).
    """
    if max_outage_s is None:
        max_outage_s = float(getattr(settings, "max_outage_s", DEFAULT_MAX_OUTAGE_S))
    publisher = RecordingPublisher(None, settings, max_outage_s=max_outage_s, resume=resume)
    await publisher.through_outage(lambda: ensure_topics(settings))
    return await publisher.publish(items, speed)


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

    async def flush(self) -> None:
        return None  # the publisher drains the queue; its own flush waits for the broker

    async def close(self) -> None:
        return None


async def live_items(arrivals: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Live arrivals as the publisher takes them: each venue message's market events, news, dead letters."""
    async for arrival in arrivals:
        if isinstance(arrival, Received):
            for event in arrival.events:
                yield event
        else:
            yield arrival
