"""Sinks that publish onto the in-process bus, mirroring the Kafka topics."""

from __future__ import annotations

from adapters.inprocess.client import InProcessBus
from engine.events import CompositeSignal


class BusSignalSink:
    """Publishes composite signals to a bus topic (``signals.composite`` by default)."""

    def __init__(self, bus: InProcessBus, topic: str = "signals.composite") -> None:
        self.bus = bus
        self.topic = topic

    async def publish(self, signal: CompositeSignal) -> None:
        await self.bus.publish(self.topic, signal)

    async def flush(self) -> None:
        return None  # a bus publish is delivered when it returns

    async def close(self) -> None:
        return None  # the bus belongs to whoever made it; subscribers may still be reading

