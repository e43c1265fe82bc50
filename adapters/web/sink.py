"""The dashboard as the runtime's sinks (``sigstream run --dashboard-port``): features, signals and sentiment
go to the page as they are made."""

from __future__ import annotations

from adapters.web.state import DashboardState
from engine.events import CompositeSignal, Features, SentimentScore
from engine.serialization import signal_record


class DashboardSink:
    """Implements :class:`engine.ports.SignalSink`, ``FeatureSink`` and ``SentimentSink`` (``publish``, ``flush``,
    ``close``) onto a :class:`DashboardState`."""

    def __init__(self, state: DashboardState) -> None:
        self.state = state
        self.count = 0

    async def publish(self, event: CompositeSignal | Features | SentimentScore) -> None:
        if isinstance(event, CompositeSignal):
            self.state.on_signal(signal_record(event))
        elif isinstance(event, Features):
            self.state.on_features(event)
        else:
            self.state.on_score(event)
        self.count += 1

    async def flush(self) -> None:
        return None  # the state is updated when publish returns

    async def close(self) -> None:
        return None  # the page stays up until its server is closed
