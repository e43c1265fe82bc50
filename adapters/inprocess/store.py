"""In-memory FeatureStore: latest features and a bounded window of recent bars per symbol."""

from __future__ import annotations

from collections import deque

from adapters.inprocess.config import InProcessSettings
from engine.events import Bar, Features


class InMemoryFeatureStore:
    """Implements :class:`engine.ports.FeatureStore` (and FeatureSink's ``publish``)."""

    def __init__(self, settings: InProcessSettings | None = None) -> None:
        self.settings = settings or InProcessSettings()
        self._latest: dict[str, Features] = {}
        self._bars: dict[str, deque[Bar]] = {}

    async def save(self, bar: Bar, features: Features) -> None:
        window = self._bars.get(bar.symbol)
        if window is None:
            window = self._bars[bar.symbol] = deque(maxlen=self.settings.recent_bars)
        window.append(bar)
        self._latest[bar.symbol] = features

    async def publish(self, features: Features) -> None:
        self._latest[features.symbol] = features

    async def latest(self, symbol: str) -> Features | None:
        return self._latest.get(symbol)

    async def recent_bars(self, symbol: str, limit: int) -> list[Bar]:
        window = self._bars.get(symbol)
        return list(window)[-limit:] if window else []

    def symbols(self) -> list[str]:
        return sorted(self._latest)

    async def flush(self) -> None:
        return None  # saved in place: nothing is buffered

    async def close(self) -> None:
        return None  # holds no connection; the windows stay readable
