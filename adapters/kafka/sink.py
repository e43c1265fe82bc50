"""Sinks that produce to Kafka: composite signals (the v1 signal record), features, sentiment and dead letters.

They write through a :class:`Send` callable, so the same classes serve the faust worker (faust topic
sends, inside its transactions when exactly_once is on) and plain aiokafka producers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson

from engine.events import CompositeSignal, DeadLetter, Features, SentimentScore
from engine.serialization import encode_event, signal_record

Send = Callable[[str, bytes | None, bytes], Awaitable[None]]
"""``await send(topic, key, value)``: hand one record to a producer."""


class _TopicSink:
    """One topic through the app's producer (``send``); ``flush`` waits for the producer when given one."""

    def __init__(self, send: Send, topic: str, flush: Callable[[], Awaitable[None]] | None = None) -> None:
        self._send = send
        self.topic = topic
        self._flush = flush
        self.count = 0

    async def flush(self) -> None:
        if self._flush is not None:
            await self._flush()

    async def close(self) -> None:
        await self.flush()  # the producer is the app's: closing a sink never stops it


class KafkaSignalSink(_TopicSink):
    """Implements :class:`engine.ports.SignalSink`: each composite signal on the signals topic, key = symbol,
    value = the v1 :func:`~engine.serialization.signal_record` (``schemas/signal.v1.schema.json``)."""

    async def publish(self, signal: CompositeSignal) -> None:
        await self._send(self.topic, signal.symbol.encode(), orjson.dumps(signal_record(signal)))
        self.count += 1


class KafkaEventSink(_TopicSink):
    """Implements FeatureSink/SentimentSink's ``publish``: features (key = symbol) and sentiment scores
    (key = news id) as versioned :func:`~engine.serialization.encode_event` payloads."""

    async def publish(self, event: Features | SentimentScore) -> None:
        key = event.news_id if isinstance(event, SentimentScore) else event.symbol
        await self._send(self.topic, key.encode(), encode_event(event))
        self.count += 1


class KafkaDeadLetterSink:
    """Implements :class:`engine.ports.DeadLetterSink`: every bad record lands on ``deadletter``, counted."""

    def __init__(self, send: Send, topic: str) -> None:
        self._send = send
        self.topic = topic
        self._count = 0

    async def publish(self, record: DeadLetter) -> None:
        await self._send(self.topic, record.source.encode(), encode_event(record))
        self._count += 1

    @property
    def count(self) -> int:
        return self._count

    async def flush(self) -> None:
        return None  # each dead letter is awaited onto the producer as it is published

    async def close(self) -> None:
        return None  # the producer is the app's: closing a sink never stops it
