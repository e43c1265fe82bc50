"""Sinks that publish onto the in-process bus, mirroring the Kafka topics."""

from __future__ import annotations

from adapters.inprocess.client import InProcessBus
from engine.events import CompositeSignal, DeadLetter


class BusSignalSink:
    """Publishes composite signals to a bus topic (``signals.composite`` by default)."""

    def __init__(self, bus: InProcessBus, topic: str = "signals.composite") -> None:
        self.bus = bus
        self.topic = topic

    async def publish(self, signal: CompositeSignal) -> None:
        await self.bus.publish(self.topic, signal)

    async def flush(self) -> None:
        return None


class BusDeadLetterSink:
    """Publishes dead letters to the bus (``deadletter``) and counts them."""

    def __init__(self, bus: InProcessBus, topic: str = "deadletter") -> None:
        self.bus = bus
        self.topic = topic
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    async def publish(self, record: DeadLetter) -> None:
        self._count += 1
        await self.bus.publish(self.topic, record)
