"""Sinks that produce to Kafka: composite signals, features, sentiment and dead letters.

They write through a :class:`Send` callable, so the same classes serve the faust worker (faust topic
sends, inside its transactions when exactly_once is on) and plain aiokafka producers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from engine.events import CompositeSignal, DeadLetter, Features, SentimentScore
from engine.serialization import encode_event

Send = Callable[[str, bytes | None, bytes], Awaitable[None]]
"""``await send(topic, key, value)``: hand one record to a producer."""


def producer_send(producer: object) -> Send:
    """A :data:`Send` over an aiokafka producer (batched by the producer; ``flush`` waits for acks)."""

    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        await producer.send(topic, value=value, key=key)  # type: ignore[attr-defined]  # AIOKafkaProducer

    return send


class KafkaSignalSink:
    """Implements :class:`engine.ports.SignalSink` (and FeatureSink/SentimentSink's ``publish``)."""

    def __init__(self, send: Send, topic: str, flush: Callable[[], Awaitable[None]] | None = None) -> None:
        self._send = send
        self.topic = topic
        self._flush = flush
        self.count = 0

    async def publish(self, event: CompositeSignal | Features | SentimentScore) -> None:
        key = event.news_id if isinstance(event, SentimentScore) else event.symbol
        await self._send(self.topic, key.encode(), encode_event(event))
        self.count += 1

    async def flush(self) -> None:
        if self._flush is not None:
            await self._flush()


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
