"""An asyncio publish/subscribe bus: the in-process stand-in for Kafka topics."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator

from adapters.inprocess.config import InProcessSettings


class InProcessBus:
    """Topics fan out to every subscriber's bounded queue; a full queue applies back-pressure
    (publish waits) instead of dropping messages."""

    _CLOSED = object()

    def __init__(self, settings: InProcessSettings | None = None) -> None:
        self.settings = settings or InProcessSettings()
        self._subscribers: dict[str, list[asyncio.Queue[object]]] = defaultdict(list)
        self.published: dict[str, int] = defaultdict(int)

    def subscribe(self, topic: str) -> AsyncIterator[object]:
        queue: asyncio.Queue[object] = asyncio.Queue(self.settings.queue_size)
        self._subscribers[topic].append(queue)
        return self._drain(queue)

    async def publish(self, topic: str, message: object) -> None:
        self.published[topic] += 1
        for queue in self._subscribers.get(topic, ()):
            await queue.put(message)

    async def close(self) -> None:
        """End every subscription after what is already queued has been consumed."""
        for queues in self._subscribers.values():
            for queue in queues:
                await queue.put(self._CLOSED)

    async def _drain(self, queue: asyncio.Queue[object]) -> AsyncIterator[object]:
        while True:
            message = await queue.get()
            if message is self._CLOSED:
                return
            yield message
