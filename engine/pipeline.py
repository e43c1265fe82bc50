"""The signal engine: one object that live agents, replay and backtest all drive the same way."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from engine.aggregator import SignalAggregator, score_from_probs
from engine.bars import BarBuilder
from engine.config import EngineSettings
from engine.events import Bar, CompositeSignal, Features, NewsItem, SentimentScore, Trade
from engine.features import FeatureCalculator
from engine.symbols import SymbolMapper


@dataclass(slots=True)
class EngineStats:
    """Counters reported at the end of a run and exported as metrics."""

    bars: int = 0
    bars_not_used: int = 0
    trades: int = 0
    bars_other_interval: int = 0
    news: int = 0
    news_duplicate: int = 0
    news_unmapped: int = 0
    sentiment_scores: int = 0
    signals: int = 0
    warm_bars_skipped: int = 0
    bars_stale: int = 0  # a bar not newer than the symbol's last: a venue resend or an at-least-once redelivery


class SignalEngine:
    """Features per symbol, news-to-symbol mapping, and composite signals.

    The engine is synchronous and pure: callers feed it events in event-time order and publish
    what it returns. Scoring news is the one async step and belongs to the caller's
    :class:`engine.batcher.MicroBatcher`, so the engine itself never waits on a model.

    Signals are decided (a) at each closed bar, from news published strictly before the bar's
    close, and (b) when new sentiment for a symbol arrives, including that news.
    """

    def __init__(
        self, settings: EngineSettings | None = None, *, symbols: frozenset[str] | None = None
    ) -> None:
        self.settings = settings or EngineSettings()
        self.interval = self.settings.interval
        self.symbols = symbols
        self.mapper = SymbolMapper(self.settings.symbols)
        self.aggregator = SignalAggregator(self.settings.aggregator)
        self.stats = EngineStats()
        self._calculators: dict[str, FeatureCalculator] = {}
        self._builders: dict[str, BarBuilder] = {}
        self._latest: dict[str, Features] = {}
        self._seen_news: OrderedDict[str, None] = OrderedDict()
        self._seen_news_limit = 100_000
        self._bars_from_trades = self.settings.bars_from == "trades"
        self._building = False

    # -- market data -------------------------------------------------------------------------
    def wants(self, symbol: str) -> bool:
        return self.symbols is None or symbol in self.symbols

    def on_bar(self, bar: Bar) -> tuple[Features, CompositeSignal] | None:
        """A closed bar: update features, then decide. Bars of another interval are counted, not used.

        A bar not newer than the symbol's last one is counted in ``stats.bars_stale`` and skipped.

        Raises:
            InvalidInput: unusable prices; callers dead-letter it.
        """
        if bar.interval != self.interval:
            self.stats.bars_other_interval += 1
            return None
        if self._bars_from_trades and not self._building:
            # Venue klines while bars are built from trades: using both would count each bar twice.
            self.stats.bars_not_used += 1
            return None
        calculator = self._calculators.get(bar.symbol)
        if calculator is None:
            calculator = self._calculators[bar.symbol] = FeatureCalculator(bar.symbol, bar.interval)
        if calculator.last_start is not None and bar.start <= calculator.last_start:
            # Already decided (a resent kline, a record redelivered after a restart warmed from Redis):
            # counting it again would corrupt every window, and its signal was already emitted.
            self.stats.bars_stale += 1
            return None
        features = calculator.update(bar)  # InvalidInput (unusable prices): callers dead-letter it
        self.stats.bars += 1
        self._latest[bar.symbol] = features
        signal = self.aggregator.composite(bar.symbol, bar.ts_event, bar.ts_init, features)
        self.stats.signals += 1
        return features, signal

    def on_trade(self, trade: Trade) -> list[tuple[Features, CompositeSignal]]:
        """A trade: build bars; returns what any bar it closed produced."""
        self.stats.trades += 1
        if not self._bars_from_trades:
            return []
        builder = self._builders.get(trade.symbol)
        if builder is None:
            builder = self._builders[trade.symbol] = BarBuilder(trade.symbol, self.interval)
        bar = builder.on_trade(trade)
        if bar is None:
            return []
        out = self._on_built_bar(bar)
        return [out] if out else []

    def _on_built_bar(self, bar: Bar) -> tuple[Features, CompositeSignal] | None:
        self._building = True
        try:
            return self.on_bar(bar)
        finally:
            self._building = False

    def closes_bar(self, trade: Trade) -> bool:
        """Whether this trade would close the symbol's open bar (callers score pending news first)."""
        if not self._bars_from_trades:
            return False
        builder = self._builders.get(trade.symbol)
        end = builder.open_bar_end() if builder is not None else None
        return end is not None and trade.ts_event >= end

    def flush_bars(self, ts_init: int) -> list[tuple[Features, CompositeSignal]]:
        """Close every open trade-built bar (end of a replay)."""
        results = []
        for builder in self._builders.values():
            bar = builder.flush(ts_init)
            if bar is not None and (out := self._on_built_bar(bar)):
                results.append(out)
        return results

    def warm(self, symbol: str, bars: list[Bar]) -> None:
        """Restore a symbol's feature state from recent bars (feature store, REST backfill).

        Bars not newer than the state already holds are skipped (a REST backfill after a Redis warm-up
        overlaps it); a bar with unusable prices raises :class:`InvalidInput`.
        """
        calculator = self._calculators.setdefault(symbol, FeatureCalculator(symbol, self.interval))
        for bar in sorted(bars, key=lambda b: b.start):
            if calculator.last_start is not None and bar.start <= calculator.last_start:
                self.stats.warm_bars_skipped += 1
                continue
            self._latest[symbol] = calculator.update(bar)

    def latest_features(self, symbol: str) -> Features | None:
        return self._latest.get(symbol)

    # -- news --------------------------------------------------------------------------------
    def accept_news(self, item: NewsItem) -> NewsItem | None:
        """Map a news item to symbols and de-duplicate it by id.

        Returns the item (with its symbols filled in) when it should be scored, else ``None``;
        duplicates and items about no traded symbol are counted in :attr:`stats`.
        """
        self.stats.news += 1
        if item.id in self._seen_news:
            self.stats.news_duplicate += 1
            return None
        self._seen_news[item.id] = None
        if len(self._seen_news) > self._seen_news_limit:
            self._seen_news.popitem(last=False)
        symbols = self.mapper.symbols_for(item.text, item.tags + item.symbols)
        if self.symbols is not None:
            symbols = tuple(s for s in symbols if s in self.symbols)
        if not symbols:
            self.stats.news_unmapped += 1
            return None
        if symbols == item.symbols:
            return item
        return NewsItem(item.id, item.source, item.headline, item.body, symbols, item.tags, item.url,
                        item.ts_event, item.ts_init)

    def sentiment(self, item: NewsItem, probs: tuple[float, float, float], ts_init: int) -> SentimentScore:
        """The :class:`SentimentScore` for a scored news item."""
        return score_from_probs(item.id, item.symbols, probs, item.ts_event, ts_init)

    def on_sentiment(self, score: SentimentScore) -> list[CompositeSignal]:
        """Fold a score in; returns the refreshed signal of every symbol it mentions."""
        self.stats.sentiment_scores += 1
        self.aggregator.add(score)
        signals = []
        at = max(score.ts_event, score.ts_init)
        for symbol in score.symbols:
            signals.append(
                self.aggregator.composite(symbol, at, score.ts_init, self._latest.get(symbol), inclusive=True)
            )
        self.stats.signals += len(signals)
        return signals
