"""What the page shows, kept bounded in memory: per symbol its recent bars and signals, and the recent news."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adapters.web.config import DashboardSettings
from adapters.web.parsing import bar_update, news_update
from engine.events import Features, NewsItem, SentimentScore

Update = tuple[str, dict[str, Any]]
"""``(kind, payload)``: ``kind`` is ``bar``, ``signal`` or ``news`` (:mod:`adapters.web.parsing`)."""
_HEADLINES_KEPT = 10_000  # news items seen and not yet scored: their headlines wait for the score


@dataclass
class _Symbol:
    bars: deque[dict[str, Any]]
    signals: deque[dict[str, Any]]
    features: dict[str, Any] | None = None


@dataclass
class DashboardState:
    """Applies updates and tells every listener; :meth:`snapshot` is what a newly opened page starts from."""

    settings: DashboardSettings = field(default_factory=DashboardSettings)
    symbols: dict[str, _Symbol] = field(default_factory=dict)
    news: deque[dict[str, Any]] = field(init=False)
    listeners: list[Callable[[Update], None]] = field(default_factory=list)
    _headlines: OrderedDict[str, NewsItem] = field(default_factory=OrderedDict)
    _news_ids: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.news = deque(maxlen=self.settings.news)

    def _symbol(self, name: str) -> _Symbol:
        entry = self.symbols.get(name)
        if entry is None:
            entry = self.symbols[name] = _Symbol(deque(maxlen=self.settings.bars), deque(maxlen=self.settings.signals))
        return entry

    def _tell(self, update: Update) -> None:
        for listener in list(self.listeners):
            listener(update)

    def on_features(self, features: Features) -> None:
        """A closed bar's features."""
        payload = bar_update(features)
        entry = self._symbol(features.symbol)
        if entry.bars and entry.bars[-1]["start"] == payload["start"]:
            entry.bars[-1] = payload  # the same bar again (a re-delivery): replaced, not drawn twice
        else:
            entry.bars.append(payload)
        entry.features = payload
        self._tell(("bar", payload))

    def on_signal(self, record: dict[str, Any]) -> None:
        """A v1 signal record."""
        entry = self._symbol(record["symbol"])
        if any(s["id"] == record["id"] for s in entry.signals):
            return  # a re-sent copy (same decision, same id)
        entry.signals.append(record)
        self._tell(("signal", record))

    def on_news(self, item: NewsItem) -> None:
        """A news item (its headline, for when its score arrives, or for its score if that came first)."""
        for shown in self.news:
            if shown["id"] == item.id:
                if shown["headline"] is None:
                    shown["headline"], shown["url"] = item.headline, item.url or None
                    self._tell(("news", shown))
                return
        self._headlines[item.id] = item
        while len(self._headlines) > _HEADLINES_KEPT:
            self._headlines.popitem(last=False)

    def on_score(self, score: SentimentScore) -> None:
        """A news item's sentiment; shown once per id."""
        if score.news_id in self._news_ids:
            return
        self._news_ids.add(score.news_id)
        if len(self._news_ids) > _HEADLINES_KEPT:
            self._news_ids = {n["id"] for n in self.news}
        payload = news_update(score, self._headlines.pop(score.news_id, None))
        self.news.append(payload)
        self._tell(("news", payload))

    def snapshot(self) -> dict[str, Any]:
        return {
            "symbols": {
                name: {"bars": list(entry.bars), "signals": list(entry.signals), "features": entry.features}
                for name, entry in sorted(self.symbols.items())
            },
            "news": list(self.news),
        }
